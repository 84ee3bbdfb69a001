"""Container layouts the decoder's structure checks (decode.py) and the metadata walkers (metastrip,
provenance.containers) must read alike: one definition each, so the walks cannot drift apart.

JPEG: where the next marker segment starts, for every walk that counts segments against
limits.JPEG_MAX_SEGMENTS. libjpeg and Pillow skip a run of 0xFF fill bytes, and any bytes between segments, to
the next marker; a walk that counted each of those bytes as a segment refused a file its decoder reads (70 KB of
fill bytes passed the cap), and one that gave up on a stray byte let the rest of the file past it."""
from __future__ import annotations

import re
import struct
from typing import Iterator

# 0xFF and a byte that starts a segment: not a stuffed zero, not a restart marker, not another fill byte.
NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_FILL = re.compile(rb"\xff+")


def next_marker(data: bytes, pos: int) -> int | None:
    """Offset of the marker the decoder reads next from `pos` (pos itself when a marker is there), or None
    when none follows. A fill run is crossed in one step, stray bytes in one search: linear in the bytes
    crossed, and none of them counts as a segment."""
    n = len(data)
    while pos + 1 < n:
        if data[pos] == 0xFF:
            nxt = data[pos + 1]
            if nxt == 0xFF:
                pos = _FILL.match(data, pos).end() - 1
                continue
            if nxt != 0x00:
                return pos
        found = NEXT_MARKER.search(data, pos + 1)
        if found is None:
            return None
        pos = found.start()
    return None


# BMP/DIB info header sizes Pillow's BMP and DIB readers accept (a DIB is a BMP without its 14-byte file
# header). OS/2 1.x's 12 has 16-bit sizes and no compression field (so it is never RLE: decode.bmp_rle_header).
DIB_HEADERS = (12, 40, 52, 56, 64, 108, 124)


def png_chunks(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(offset, length, type) of each PNG chunk header after the signature, in order, IEND the last, until the
    bytes hold no further header. Headers only (a chunk's data is never copied), and no cap: each walk counts
    what it is given against limits.PNG_MAX_CHUNKS itself, so the decoder's check, the frame count and the
    metadata-stripping copies follow the same chunks."""
    pos, n = 8, len(data)
    while pos + 12 <= n:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        yield pos, length, ctype
        if ctype == b"IEND":
            return
        pos += 12 + length
