"""Pixels without the metadata: a second chance for a decoder that choked on a
metadata quirk.

Pillow parses some metadata while opening an image (PNG text and ICC chunks,
JPEG APP segments) and gives up on the whole file when that part is odd: a
compressed PNG text chunk over `PngImagePlugin.MAX_TEXT_CHUNK` (1 MB) makes a
valid image undecodable. Metadata is aiidetect's own parsers' job
(aiidetect/provenance), so when a decode fails the decoder retries once on the
same bytes with those segments left out. The file itself is never modified.
"""
from __future__ import annotations

import struct

from .limits import JPEG_MAX_SEGMENTS, PNG_MAX_CHUNKS

# PNG chunks the pixels need (plus APNG frame control); everything else is metadata.
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"acTL", b"fcTL", b"fdAT", b"sBIT", b"gAMA", b"cHRM",
             b"sRGB"}


def strip_metadata(data: bytes, fmt: str | None) -> bytes | None:
    """-> a copy without metadata segments, or None when there is nothing to strip
    (or the container is too broken to walk)."""
    try:
        if fmt == "PNG":
            return _strip_png(data)
        if fmt == "JPEG":
            return _strip_jpeg(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _strip_png(data: bytes) -> bytes | None:
    out, pos, n, dropped = [data[:8]], 8, len(data), False
    for _ in range(PNG_MAX_CHUNKS):
        if pos + 12 > n:
            break
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if ctype in _PNG_KEEP:
            out.append(data[pos:min(end, n)])
        else:
            dropped = True
        pos = end
        if ctype == b"IEND":
            break
    else:   # the decoder refused the file for these (limits.PNG_MAX_CHUNKS); stripped, it must not pass
        return None
    return b"".join(out) if dropped else None


def _strip_jpeg(data: bytes) -> bytes | None:
    # APP0 (JFIF) and APP14 (Adobe colour transform) change how pixels decode; keep them.
    out, pos, n, dropped, segments = [data[:2]], 2, len(data), False, 0
    while pos + 4 <= n:
        segments += 1
        if segments > JPEG_MAX_SEGMENTS:  # the decoder refused the file for these; a walk of all is slow
            return None
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is entropy-coded pixels
            out.append(data[pos:])
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        seg = data[pos:pos + 2 + length]
        if (0xE1 <= marker <= 0xEF and marker != 0xEE) or marker == 0xFE:
            dropped = True
        else:
            out.append(seg)
        pos += 2 + length
    return b"".join(out) if dropped else None
