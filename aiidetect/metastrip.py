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

import copy
import itertools
import struct

from .limits import (DECODE_MAX_METADATA_CHUNK, JPEG_MAX_APP_BYTES, JPEG_MAX_EXIF_SEGMENTS, JPEG_MAX_SEGMENTS,
                     PNG_MAX_CHUNKS, PNG_MAX_ICC_CHUNKS, WEBP_MAX_CHUNKS, WEBP_MAX_METADATA_BYTES)
from .structures import HeifRead, heif_layout_read, heif_read_of, next_marker, png_chunks, webp_chunks

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
    out, n, dropped = [data[:8]], len(data), False
    for i, (pos, length, ctype) in enumerate(png_chunks(data)):
        if i == PNG_MAX_CHUNKS:  # the decoder refused the file for these (limits.PNG_MAX_CHUNKS): no copy passes
            return None
        if ctype in _PNG_KEEP:
            out.append(data[pos:min(pos + 12 + length, n)])
        else:
            dropped = True
    return b"".join(out) if dropped else None


def _strip_jpeg(data: bytes) -> bytes | None:
    # APP0 (JFIF) and APP14 (Adobe colour transform) change how pixels decode; keep them. Segments are found
    # and counted as the decoder's pre-check does (structures.next_marker): fill and stray bytes between them
    # are left out and count for nothing (each fill byte counted, 70 KB of them refused the retry a file the
    # check passed).
    out, pos, n, dropped, segments = [data[:2]], 2, len(data), False, 0
    while True:
        pos = next_marker(data, pos)
        if pos is None or pos + 4 > n:
            break
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append(data[pos:])
            break
        segments += 1   # the start of scan too, as the pre-check counts it
        if segments > JPEG_MAX_SEGMENTS:  # the decoder refused the file for these; a walk of all is slow
            return None
        if marker == 0xDA:  # start of scan: the rest is entropy-coded pixels
            out.append(data[pos:])
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:    # no length field
            out.append(data[pos:pos + 2])
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        length = max(length, 2)     # libjpeg reads a length of 0 or 1 as 2, as the pre-check does
        seg = data[pos:pos + 2 + length]
        if (0xE1 <= marker <= 0xEF and marker != 0xEE) or marker == 0xFE:
            dropped = True
        else:
            out.append(seg)
        pos += 2 + length
    return b"".join(out) if dropped else None


# Segments libjpeg or Pillow read for the pixels or the frames (JFIF and Adobe: the colour space and transform;
# MPF: a multi-picture file's pictures), as (marker, signature, the shortest payload they read): past
# limits.JPEG_MAX_APP_BYTES the last of each kind is still handed on. Both take the last of each (libjpeg's
# examine_app14 sets the transform again at each Adobe segment, Pillow's info at each), so one handed on in
# place of it gave other pixels than a viewer shows: an Adobe transform 0 (RGB) first and 1 (YCbCr) last.
_JPEG_PIXEL_SEGMENTS = ((0xE0, b"JFIF\x00", 14), (0xEE, b"Adobe", 12), (0xE2, b"MPF\x00", 4))


def jpeg_exif_over(data: bytes, cap: int = JPEG_MAX_EXIF_SEGMENTS,
                   app_bytes: int | None = None) -> tuple[bytes | None, str | None]:
    """-> (a copy of a JPEG without its Exif APP1 segments after the first `cap`, and without its other APPn and
    COM segments once their payloads pass `app_bytes` (limits.JPEG_MAX_APP_BYTES) in all; what was left out) or
    (None, None) when there are none. Pillow's open joins every Exif segment to the EXIF so far, a new copy
    each time (limits.JPEG_MAX_EXIF_SEGMENTS): 1,600 full ones took a scan 105 s; and it keeps every other APPn
    and COM segment whole (limits.JPEG_MAX_APP_BYTES). Past that total the last JFIF APP0, Adobe APP14 and MPF
    APP2 segment are still handed on (_JPEG_PIXEL_SEGMENTS). Segments are found as Pillow and the decoder's
    pre-check find them (structures.next_marker), up to the first scan, and an Exif one is what Pillow takes for
    one: APP1 whose payload starts with Exif and two NULs."""
    app_bytes = JPEG_MAX_APP_BYTES if app_bytes is None else app_bytes
    cut, pos, n, exif, segments, other, last_of = [], 2, len(data), 0, 0, 0, {}
    while segments <= JPEG_MAX_SEGMENTS:   # over it the pre-check refuses the file
        pos = next_marker(data, pos)
        if pos is None or pos + 4 > n or data[pos + 1] in (0xD9, 0xDA):
            break
        segments += 1
        marker = data[pos + 1]
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:    # no length field
            pos += 2
            continue
        end = pos + 2 + max(struct.unpack_from(">H", data, pos + 2)[0], 2)
        if marker == 0xE1 and end - pos >= 10 and data.startswith(b"Exif\x00\x00", pos + 4):
            exif += 1
            if exif > cap:
                cut.append((pos, end, True))
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:
            other += end - pos - 4
            if other > app_bytes:
                for kind in _JPEG_PIXEL_SEGMENTS:
                    if marker == kind[0] and end - pos - 4 >= kind[2] and data.startswith(kind[1], pos + 4):
                        last_of[kind] = len(cut)
                cut.append((pos, end, False))
        pos = end
    keep = set(last_of.values())
    cut = [c for i, c in enumerate(cut) if i not in keep]
    if not cut:
        return None, None
    lean = _spliced(data, ((start, end, b"") for start, end, _ in cut))
    cut_exif = sum(1 for c in cut if c[2])
    cut_other = len(cut) - cut_exif
    cut_bytes = sum(min(end, n) - start for start, end, is_exif in cut if not is_exif)
    said = []
    if cut_exif:
        said.append(f"JPEG Exif segments after the first {cap} not handed to the decoder: {cut_exif} of them")
    if cut_other:
        said.append(f"JPEG APP and COM segments past {app_bytes} bytes in all not handed to the decoder: "
                    f"{cut_other} of them, {cut_bytes} bytes")
    return lean, "; ".join(said)


def _spliced(data: bytes, edits) -> bytes:
    """`data` with each (start, end, replacement) of `edits`, in order and not overlapping, in place of
    data[start:end]: one copy, its pieces not copied before they are joined."""
    view, parts, last = memoryview(data), [], 0
    for start, end, new in edits:
        parts += [view[last:start], new]
        last = end
    parts.append(view[last:])
    return b"".join(parts)


# VP8X flags of the chunks strip_oversize may leave out: ICC profile, EXIF, XMP.
_WEBP_FLAGS = {b"ICCP": 0x20, b"EXIF": 0x08, b"XMP ": 0x04}


def strip_oversize(data: bytes, fmt: str | None, limit: int | None = None) -> tuple[bytes | None, str | None]:
    """-> (a copy of a PNG or WebP without its metadata chunks longer than `limit`
    (limits.DECODE_MAX_METADATA_CHUNK), a PNG's iCCP chunks after the first limits.PNG_MAX_ICC_CHUNKS and a
    WebP's metadata chunks past limits.WEBP_MAX_METADATA_BYTES in all, of a HEIF or AVIF with such Exif and XMP
    items unlinked and such ICC profiles renamed, of a JPEG without its Exif segments after the first
    limits.JPEG_MAX_EXIF_SEGMENTS and its other APP and COM segments past limits.JPEG_MAX_APP_BYTES, of a TIFF
    whose BYTE, ASCII and UNDEFINED entries over the limit are retyped so that no reader reads them
    (tiffguard.without_oversize); what was left out) or (None, None) when there are none. The metadata
    readers read such chunks (capped) from the file itself; Pillow copied each two or three times, joined a
    JPEG's Exif segments one copy at a time and inflated every iCCP chunk."""
    if fmt == "JPEG":
        try:
            return jpeg_exif_over(data)
        except (struct.error, IndexError, ValueError):
            return None, None
    if fmt == "TIFF" or data[:4] in (b"II+\x00", b"MM\x00+"):    # BigTIFF too (tiffguard.BIGTIFF_MAGIC)
        return _oversize_tiff(data)
    limit = DECODE_MAX_METADATA_CHUNK if limit is None else limit
    if fmt not in ("PNG", "WEBP", "HEIF", "AVIF"):
        return None, None
    # No chunk can be longer than its file; a second iCCP chunk needs a second 'iCCP' in the bytes (a C count).
    # (nor can a WebP's chunks pass their total in fewer bytes than that)
    floor = min(limit, WEBP_MAX_METADATA_BYTES) if fmt == "WEBP" else limit
    if len(data) <= floor and not (fmt == "PNG" and data.count(b"iCCP") > PNG_MAX_ICC_CHUNKS):
        return None, None
    try:
        if fmt in ("HEIF", "AVIF"):
            return _oversize_heif(data, fmt, limit, heif_layout_read(data))[:2]
        return (_oversize_png if fmt == "PNG" else _oversize_webp)(data, limit)
    except (struct.error, IndexError, ValueError):
        return None, None


def _oversize_tiff(data: bytes) -> tuple[bytes | None, str | None]:
    """The TIFF file's copy without_oversize makes, over the pages and sub-IFDs the decoder's check walks
    (decode.open_image); a structure that check refuses is not copied (no reader opens it)."""
    from .provenance.tiffguard import MAX_FILE_ENTRIES, check_tiff, oversize_said, without_oversize

    if len(data) <= DECODE_MAX_METADATA_CHUNK:
        return None, None
    chk = check_tiff(data, pages=True, max_total_entries=MAX_FILE_ENTRIES)
    if not chk.ok or not chk.oversize:
        return None, None
    return without_oversize(data, chk), oversize_said(chk)


# How the withheld-ICC part of strip_oversize_heif's note begins: the metadata walk leaves that part out of its
# errors (no reader here reads a profile), by this one spelling.
HEIF_ICC_WITHHELD = "ICC profiles (colr)"


def strip_oversize_heif(data: bytes, fmt: str, read: HeifRead | None = None) -> tuple[bytes, str | None, HeifRead]:
    """strip_oversize of a HEIF/AVIF with its item tables read once: (`data`, or its copy without links to Exif
    and XMP items over DECODE_MAX_METADATA_CHUNK; what was left out, or None; the read of the bytes returned,
    marked lean, which decode.open_image strips no further). `read`: structures.heif_layout_read(data), where
    the caller has it (a read of other bytes is not used: structures.heif_read_of)."""
    read = heif_read_of(data, read)
    if len(data) > DECODE_MAX_METADATA_CHUNK:
        try:
            lean, said, lean_read = _oversize_heif(data, fmt, DECODE_MAX_METADATA_CHUNK, read)
        except (struct.error, IndexError, ValueError):
            lean = None
        if lean is not None:
            lean_read.lean = True
            return lean, said, lean_read
    read.lean = True
    return data, None, read


def _said(fmt: str, left: list[tuple[bytes, int]], limit: int, what: str = "chunks") -> str:
    names = ", ".join(f"{t.decode('latin-1')!r} of {n} bytes" for t, n in left[:3])
    more = f" and {len(left) - 3} more" if len(left) > 3 else ""
    return f"{fmt} metadata {what} over {limit} bytes not handed to the decoder: {names}{more}"


def _oversize_heif(data: bytes, fmt: str, limit: int, read: HeifRead):
    """A HEIF/AVIF whose Exif or XMP (`mime`) items over `limit` are unlinked from the images they describe: their
    `cdsc` references renamed (`skip`, a type no reader follows), four bytes each, so libheif and pillow-heif
    read no such item (they copied a 100 MB Exif item three times). -> (the copy, what was left out, the copy's
    read) or (None, None, None). The copy's read is `read` with those references' types as the copy has them:
    the four bytes are an `iref` entry's box type, which nothing else in heif_layout reads, and the copy is
    as long as the file, so every offset, extent and size stands."""
    lay = read.layout
    if lay is None or read.error is not None:
        return None, None, None
    big = {i: n for i, t in lay.types.items() if t in (b"Exif", b"mime") and (n := lay.item_length(data, i)) > limit}
    at = {pos: b"skip" for kind, pos, src in lay.refs if kind == b"cdsc" and src in big}
    # An ICC profile (a `colr` property) over the limit: its box renamed `free`, which libheif passes over, four
    # bytes too (its type's, 4 or 12 bytes before its payload). pillow-heif and Pillow held a 100 MB one six times
    # over (`scan -d metadata` 785 MB against 171 MB for a 100 MB HEIF without one); nothing here reads a profile.
    # Only a profile (`prof`, `rICC`): an `nclx` one gives libheif the matrix it converts the samples to RGB with,
    # and one padded past the limit, renamed, had other pixels decoded than the file shows.
    icc = [(p, e) for kind, p, e in lay.props
           if kind == b"colr" and e - p > limit and data[p:p + 4] in (b"prof", b"rICC")]
    for p, _ in icc:
        at[p - 4 if data[p - 4:p] == b"colr" else p - 12] = b"free"
    if not at:
        return None, None, None
    lean = _spliced(data, ((pos, pos + 4, at[pos]) for pos in sorted(at)))
    left = [(lay.types[i] + b" item", n) for i, n in sorted(big.items())]
    renamed = copy.copy(lay)
    renamed.refs = [(b"skip" if pos in at else kind, pos, src) for kind, pos, src in lay.refs]
    renamed.props = [(b"free" if (p, e) in icc else kind, p, e) for kind, p, e in lay.props]
    said = [_said(fmt, left, limit, "items")] if left else []
    if icc:
        said.append(f"{fmt} {HEIF_ICC_WITHHELD} over {limit} bytes not handed to the decoder: "
                    + ", ".join(f"{e - p} bytes" for p, e in icc[:3]))
    return lean, "; ".join(said), HeifRead(lean, renamed, None)


def _oversize_png(data: bytes, limit: int):
    out, left, icc, last = [], [], 0, 0
    for pos, length, ctype in itertools.islice(png_chunks(data), PNG_MAX_CHUNKS):
        icc += ctype == b"iCCP"
        if (length > limit and ctype not in _PNG_KEEP) or (ctype == b"iCCP" and icc > PNG_MAX_ICC_CHUNKS):
            out.append(data[last:pos])
            last = min(pos + 12 + length, len(data))
            left.append((ctype, length))
    if not left:
        return None, None
    out.append(data[last:])
    big = [(t, n) for t, n in left if n > limit]
    said = [_said("PNG", big, limit)] if big else []
    if icc > PNG_MAX_ICC_CHUNKS:
        said.append(f"PNG iCCP chunks after the first {PNG_MAX_ICC_CHUNKS} not handed to the decoder: "
                    f"{icc - PNG_MAX_ICC_CHUNKS} of them")
    return b"".join(out), "; ".join(said)


# The chunks libwebp decodes pixels or frames from; every other chunk is metadata or unknown to it.
_WEBP_IMAGE = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF"})


def _oversize_webp(data: bytes, limit: int):
    out, left, last, cut, total, kept = [], [], 0, 0, 0, set()
    riff = struct.unpack_from("<I", data, 4)[0]
    end = min(len(data), 8 + riff)
    vp8x = None
    for _, (pos, size, fourcc) in zip(range(WEBP_MAX_CHUNKS), webp_chunks(data)):
        nxt = pos + 8 + size + (size & 1)
        if fourcc == b"VP8X" and pos == 12 and size >= 10:
            # The flags libwebp reads: the first chunk's, whole. Any other VP8X (too short, later, a second)
            # libwebp refuses, and its "flags" were the next chunk's bytes or at an offset the cut moved.
            vp8x = pos + 8
        if fourcc in _WEBP_IMAGE:
            continue
        total += size
        # Past the total, the first ICC, EXIF and XMP chunk (each under `limit`) is still handed on: Pillow takes
        # the orientation from the first EXIF chunk, libwebp the flags from VP8X.
        first = fourcc in _WEBP_FLAGS and fourcc not in kept and size <= limit
        if size > limit and fourcc in _WEBP_FLAGS or total > WEBP_MAX_METADATA_BYTES and not first:
            # Its payload only: an empty chunk of its kind stays in its place, and the RIFF size shrinks by what
            # was cut, so the copy is refused where the file is (a metadata chunk first, which no reader opens;
            # a file cut short) and bytes after the RIFF stay outside it. One that ran past the RIFF's end
            # keeps its size and still does.
            stop = min(nxt, end)
            out += [data[last:pos], fourcc + struct.pack("<I", 0 if nxt <= end else size)]
            cut += stop - pos - 8
            last = stop
            left.append((fourcc, size))
        else:
            kept.add(fourcc)
    if not left:
        return None, None
    out.append(data[last:])
    lean = bytearray(b"".join(out))
    lean[4:8] = struct.pack("<I", riff - cut)
    if vp8x is not None:   # the first chunk, before every chunk cut: at the same offset in the copy
        for fourcc, _ in left:
            if fourcc not in kept:      # no chunk of its kind is left
                lean[vp8x] &= ~_WEBP_FLAGS.get(fourcc, 0) & 0xFF
    big = [(t, n) for t, n in left if n > limit and t in _WEBP_FLAGS]
    said = [_said("WebP", big, limit)] if big else []
    if len(big) < len(left):
        said.append(f"WebP metadata and unknown chunks past {WEBP_MAX_METADATA_BYTES} bytes in all not handed to "
                    f"the decoder: {len(left) - len(big)} of them, {sum(n for t, n in left) - sum(n for t, n in big)} "
                    "bytes")
    return bytes(lean), "; ".join(said)
