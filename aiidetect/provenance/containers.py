"""Walk image containers and pull out the raw metadata blobs, with hard limits.

Each walker only slices bytes: no pixel decoding, no decompression beyond the
caps below, so a hostile file costs at most a few megabytes and milliseconds.
Parsers (exif, xmp, generators, c2pa) then read the blobs.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field

from ..structures import DIB_HEADERS, bmff_boxes, next_marker, webp_chunks
from ..limits import (C2PA_MAX_STORE_BYTES, GIF_MAX_BLOCKS, JPEG_MAX_DQT_BYTES, JPEG_MAX_SEGMENTS, PNG_MAX_CHUNKS,
                      PNG_MAX_TEXT_WORK_BYTES, WEBP_MAX_CHUNKS)
from .exif import MAX_EXIF_BYTES
from .iptc import EXIF_RESOURCE, IIM_RESOURCE, IRB_SIGNATURE, MAX_IRB_BYTES, XMP_RESOURCE, resource_data
from .xmp import MAX_XMP_READ_BYTES

MAX_TEXT_BYTES = 4 * 1024 * 1024       # one decompressed text chunk (ComfyUI workflows reach ~1 MB)
# EXIF blocks and XMP packets parsed per file (provenance.analyze; a file has one of each; each parse is capped).
# A JPEG's, PNG's or WebP's blocks after these are counted, for the record, but not copied out of the file: every
# Exif APP1 segment of a 512 MB JPEG of 8,000 of them was (`scan -d metadata` 1.07 GB; the decoder opens a copy
# without them, limits.JPEG_MAX_EXIF_SEGMENTS).
MAX_BLOCKS = 4
MAX_TOTAL_TEXT_BYTES = 16 * 1024 * 1024
# Text chunks / comments kept per file (real files hold a handful). Each is parsed for generator
# parameters later: a million one-line 'parameters' chunks took 16 s there, past the per-file budget.
MAX_TEXTS = 1000
# JPEG segments, PNG and WebP chunks walked before giving up: the decoder's own caps (limits.py), so the
# metadata walk of a file stops where its decode is refused. At 1,000,000 here (10 times the PNG decode cap,
# 15 times the JPEG one), 999,000 empty APP5 segments (4 MB) took `meta` 2.2 s and 999,000 private PNG
# chunks `scan -d metadata` 3.4 s of a 5 s budget; at 10,000, 10,001 empty private chunks in front of a PNG's
# 'parameters' hid it with no word in the record. Past the cap the record says the rest was not read.
# The per-file time budget is asked every WALK_BUDGET_EVERY items inside a walk too (not only between
# stages): a walk it stops says so in the record's errors, and the record gets the metadata-timeout note.
WALK_BUDGET_EVERY = 4096
# ImageMagick and GraphicsMagick keep a JPEG's or TIFF's profiles, converted to PNG, in text chunks keyed
# 'Raw profile type <name>', as hex.
RAW_PROFILE = "Raw profile type "
RAW_PROFILE_KINDS = ("exif", "app1", "xmp", "iptc", "8bim")
PNG_XMP_KEY = "XML:com.adobe.xmp"
# Profile chunks (XMP and raw profiles) decoded per PNG; a converted photo has three or four. Each may inflate
# to 4 MB and was kept whole: 100 XMP chunks of a 4 KB zlib bomb each (a 420 KB file) held 400 MB and 4.6 s.
MAX_PROFILE_CHUNKS = 16
XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\x00"
# JPEG extended XMP (Adobe's split of an XMP packet over 64 KB) is reassembled per GUID; a file has one, named by its
# main packet. Each GUID was kept, joined and handed on: 900,000 one-part GUIDs (104 MB) took `aiidetect meta` 19 s
# and 600 MB. The readers parse four XMP packets in all (provenance.MAX_BLOCKS).
MAX_EXT_XMP_GUIDS = 4
# PNG and WebP chunks are sliced out of the file only when read, and then no more of them than is read: every
# chunk was copied whole, a 100 MB ICC profile too (never read here), and an EXIF or XMP chunk over its
# reader's cap (exif.MAX_EXIF_BYTES, xmp.MAX_XMP_READ_BYTES) was copied twice before the reader refused it:
# `meta` of a 100 MB file peaked at 257 MB (462 MB for an uncompressed XMP iTXt chunk, split three times).
# Such a block is refused from its length now. An uncompressed text chunk is read as its first
# MAX_TEXT_BYTES (and this much for its keywords): the rest is not copied.
TEXT_HEAD_BYTES = 64 * 1024


@dataclass
class Blobs:
    """Raw metadata found in one file. `where` strings name the container spot
    (e.g. "JPEG APP1", "PNG iTXt 'parameters'") so the report can say it."""

    format: str | None = None
    width: int | None = None
    height: int | None = None
    exif: list[tuple[bytes, str]] = field(default_factory=list)      # TIFF-structured EXIF (starts II*/MM*)
    xmp: list[tuple[bytes, str]] = field(default_factory=list)
    texts: list[tuple[str, str, str]] = field(default_factory=list)   # (key, value, where)
    jumbf: list[str] = field(default_factory=list)                    # where a C2PA/JUMBF store was seen
    # bytes of the JPEG APP11, PNG caBX and WebP C2PA segments and chunks, HEIF/AVIF C2PA boxes and TIFF C2PA tags
    jumbf_bytes: int = 0
    # How many C2PA manifest stores the container holds (JPEG APP11 first packets of a `c2pa` superbox, PNG caBX and
    # WebP C2PA chunks, HEIF/AVIF top-level C2PA uuid boxes, TIFF C2PA tags on any page). A file carries one; the
    # reader reads one (a JPEG's or WebP's first, a TIFF's last) and says nothing of the others, so a second store
    # pasted in decided what the record showed.
    c2pa_stores: int = 0
    iptc: list[tuple[bytes, str]] = field(default_factory=list)       # Photoshop image resources or bare IIM
    dqt: dict[int, list[int]] = field(default_factory=dict)           # JPEG table id -> 64 values (zigzag order)
    chunks: int = 0                                                   # PNG/WebP chunks walked
    timed_out: bool = False                                           # the time budget stopped the walk
    # The walk stopped before the metadata ended (a cap, the time budget), or an EXIF block was refused for
    # its length: a camera's EXIF may be in the file unread, so its absence is no evidence (metadata.no-camera).
    cut: bool = False
    exif_refused: bool = False
    errors: list[str] = field(default_factory=list)


def sniff(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "AVIF" if brand in (b"avif", b"avis") else "HEIF"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"8BPS" and data[4:6] in (b"\x00\x01", b"\x00\x02"):   # PSD, PSB
        return "PSD"
    if data[:2] == b"BM":
        return "BMP"
    if _dib_size(data) is not None:
        return "DIB"
    return None


def _dib_size(data: bytes, at: int = 0) -> tuple[int, int] | None:
    """(width, height) from a BMP/DIB info header at `at`, or None when there is none Pillow would read:
    `meta` said `format: null` (no size) for the BMPs and DIBs `scan` names."""
    if len(data) < at + 16:
        return None
    (size,) = struct.unpack_from("<I", data, at)
    if size not in DIB_HEADERS:
        return None
    if size == 12:   # OS/2 1.x: 16-bit sizes
        w, h, planes = struct.unpack_from("<HHH", data, at + 4)
    else:
        if len(data) < at + 18:
            return None
        w, h, planes = struct.unpack_from("<iiH", data, at + 4)
    return (abs(w), abs(h)) if planes == 1 else None


# Seconds stated_size's walk may take: it reads segment lengths, not pixels
STATED_SIZE_BUDGET_S = 2.0


def stated_size(data: bytes, pixels: int) -> tuple[int, int] | None:
    """The (width, height) `meta` gives a file the decoder refused from its header (decode.DecodeFailure.
    header_pixels: `pixels` it counted), read by this walk, the one reader of both commands; None where it
    gives none the decoder agrees with. Both sides above zero and their product `pixels`, so a crafted header
    this walk reads otherwise than the decoder (a side of 0, a size the decoder did not count) is never
    recorded. Never a HEIF or AVIF: its size here would be the `ispe`, before crop and rotation."""
    import time

    if sniff(data) in ("HEIF", "AVIF"):   # not walked at all: a HEIF's item tables can be MBs for a small file
        return None
    deadline = time.monotonic() + STATED_SIZE_BUDGET_S
    try:
        # up to the size only: the text chunks, comments and frames after it were inflated and read for
        # nothing, a second or more for a crafted file the decoder had refused at once
        b = walk(data, lambda: time.monotonic() < deadline, size_only=True)
    except Exception:  # noqa: BLE001 - no size is what the record says without one; never a new failure
        return None
    w, h = b.width, b.height
    if not (isinstance(w, int) and isinstance(h, int)):
        return None
    return (w, h) if w > 0 and h > 0 and w * h == pixels else None


def bounded_inflate(payload: bytes, limit: int = MAX_TEXT_BYTES) -> bytes:
    """zlib-decompress at most `limit` bytes; raise ValueError past it (zip bombs)."""
    d = zlib.decompressobj()
    out = d.decompress(payload, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError(f"compressed text expands beyond {limit} bytes")
    return out


def inflate_prefix(payload: bytes, limit: int = MAX_TEXT_BYTES) -> tuple[bytes, bool]:
    """zlib-decompress at most `limit` bytes -> (bytes, truncated). A zip bomb or an
    oversized chunk yields its first `limit` bytes instead of nothing: padding a
    generator's chunk past a cap must not hide it."""
    d = zlib.decompressobj()
    out = d.decompress(payload, limit)
    return out, bool(d.unconsumed_tail) or (len(out) >= limit and not d.eof)


# Text keys generator UIs write: kept (first occurrence of each) even past the per-file text
# total, so that megabytes of junk chunks in front cannot push the real one out.
GENERATOR_KEYS = frozenset({"parameters", "prompt", "workflow", "invokeai_metadata", "sd-metadata", "invokeai_graph",
                            "Dream", "Software", "Source", "Description", "Comment", "fooocus_scheme"})


def _tiff_start(blob: bytes) -> bytes:
    """Strip the APP1-style 'Exif\\0\\0' prefix if present; keep raw TIFF otherwise."""
    if blob.startswith(b"Exif\x00\x00"):
        return blob[6:]
    if blob.startswith(b"Exif\x00"):
        return blob[5:]
    return blob


class WalkTimeout(Exception):
    """The per-file time budget ran out inside a container walk."""


def _ticker(fmt: str, what: str, time_left, every: int | None = None):
    """-> tick(i): raises WalkTimeout when the budget is spent, asked every `every` items (WALK_BUDGET_EVERY)."""
    every = every or WALK_BUDGET_EVERY

    def tick(i: int) -> None:
        if time_left is not None and i % every == every - 1 and not time_left():
            raise WalkTimeout(f"{fmt}: the per-file time budget ran out after {i + 1} {what}; the metadata after "
                              "them was not read")
    return tick


def walk(data: bytes, time_left=None, layout=None, size_only: bool = False) -> Blobs:
    """time_left() -> False once the per-file budget is spent (provenance._Budget); asked inside long walks.
    `layout`: a HEIF/AVIF's structures.heif_layout_read(data), where the caller has it (a read of other bytes
    is not used). `size_only` (stated_size): only what states the size, as Pillow reads it: a PNG's IHDRs up to
    its first IDAT, a WebP's chunks up to the first that states a size; the rest of the blobs left unread (a
    JPEG's walk ends at its SOS, as Pillow's header read does, keeping its last SOF, as Pillow does)."""
    fmt = sniff(data)
    b = Blobs(format=fmt)
    # a WebP's first size chunk is its size: nothing after it is asked
    webp_left = (lambda: b.width is None and (time_left is None or time_left())) if size_only else time_left
    every = 1 if size_only else WALK_BUDGET_EVERY
    try:
        if fmt == "JPEG":
            _walk_jpeg(data, b, _ticker("JPEG", "segments", time_left))
        elif fmt == "PNG":
            _walk_png(data, b, _ticker("PNG", "chunks", time_left), size_only)
        elif fmt == "WEBP":
            _walk_webp(data, b, _ticker("WebP", "chunks", webp_left, every))
        elif fmt == "TIFF":
            b.exif.append((data, "TIFF header"))
            _tiff_iptc(data, b)
            from .tiffguard import check_tiff

            # Pillow sets up the first page at open, a Python tile for each of its strips: not for a
            # page of millions (the EXIF readers get their own check).
            chk = check_tiff(data, pages=False)
            if chk.ok:
                _walk_tiff_lean(data, b)
            else:
                b.errors.append(f"TIFF structure refused: {chk.problem}")
        elif fmt in ("HEIF", "AVIF"):
            _walk_heif(data, b, layout)
        elif fmt == "GIF":
            _walk_with_pillow(data, b)
            # a structure the decoder's check refused (its message in errors) is not walked again
            if not any(e.startswith("GIF structure refused") for e in b.errors):
                _gif_xmp(data, b)
        elif fmt == "PSD":
            _walk_psd(data, b)
        elif fmt in ("BMP", "DIB"):   # no metadata blocks: the format and size, as `scan` gives them
            size = _dib_size(data, 14 if fmt == "BMP" else 0)
            if size is None:
                b.errors.append(f"{fmt}: no info header Pillow reads")
            else:
                b.width, b.height = size
    except WalkTimeout as exc:
        b.errors.append(str(exc))
        b.timed_out = b.cut = True
    except Exception as exc:  # noqa: BLE001 - a walker bug must not hide other evidence
        b.errors.append(f"{fmt} container: {type(exc).__name__}: {exc}")
    if fmt in ("HEIF", "AVIF", "TIFF") and b"jumb" in data and b"c2pa" in data:
        b.jumbf.append("TIFF C2PA tag" if fmt == "TIFF" else f"{fmt} box")   # a TIFF's store is a tag (52545)
        size, stores = _c2pa_stores(data, fmt)
        b.jumbf_bytes += size
        b.c2pa_stores += stores
    b.exif, b.xmp = _numbered(b.exif), _numbered(b.xmp)
    return b


# Where c2pa-rs reads a HEIF/AVIF's manifest store (a top-level `uuid` box of this UUID; a TIFF's: tiffguard.C2PA_TAG).
C2PA_BMFF_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")


def _c2pa_stores(data: bytes, fmt: str) -> tuple[int, int]:
    """(bytes, count) of a HEIF/AVIF's top-level C2PA `uuid` boxes, or of the C2PA tags of a TIFF's IFDs, from their
    headers: what c2pa-rs would read as the manifest store (limits.C2PA_MAX_STORE_BYTES). c2pa-rs takes a TIFF's
    tag from any page (100 MB on page 2 was counted as nothing when only IFD0 was); a structure over the caps
    the walk stops at is refused whole (c2pa_structure_problem, the same check). Each box or tag is a store: of
    two TIFF tags c2pa-rs 0.91.3 reads the last page's and says nothing of the other (two HEIF/AVIF boxes it
    refuses), so the count is what tells the record that one store was added after signing."""
    try:
        if fmt == "TIFF":
            from .tiffguard import check_tiff

            chk = check_tiff(data, pages=True, max_total_entries=C2PA_MAX_TIFF_ENTRIES)
            return chk.c2pa_bytes, chk.c2pa_tags
        boxes = [stop - start for kind, start, stop in bmff_boxes(data, 0, len(data))
                 if kind == b"uuid" and data[start:start + 16] == C2PA_BMFF_UUID]
        return sum(boxes), len(boxes)
    except (struct.error, ValueError):
        return 0, 0


def _numbered(blobs: list[tuple[bytes, str]]) -> list[tuple[bytes, str]]:
    """Two EXIF or XMP blocks in the same spot (two APP1 segments) are told apart in the record:
    'JPEG APP1', 'JPEG APP1 #2'. When they disagree, the report must say which one said what."""
    seen: dict[str, int] = {}
    out = []
    for blob, where in blobs:
        seen[where] = seen.get(where, 0) + 1
        out.append((blob, where if seen[where] == 1 else f"{where} #{seen[where]}"))
    return out


# --- JPEG -------------------------------------------------------------------

# xmpNote:HasExtendedXMP, as an attribute or an element, under any prefix; the GUID anywhere else in the packet (a
# comment, a DocumentID) is not the property, and matched as a substring it had a hidden packet read again.
_HAS_EXTENDED_XMP = re.compile(rb"""HasExtendedXMP\s*(?:=\s*["']|>)\s*([0-9A-Fa-f]{32})""")


def _without_comments(x: bytes) -> bytes:
    """`x` less its XML comments, in one pass: a lazy regex would rescan the tail from every unclosed `<!--`."""
    out, pos = [], 0
    while (i := x.find(b"<!--", pos)) >= 0:
        out.append(x[pos:i])
        j = x.find(b"-->", i + 4)
        if j < 0:
            return b"".join(out)
        pos = j + 3
    out.append(x[pos:])
    return b"".join(out)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _walk_jpeg(data: bytes, b: Blobs, tick=lambda i: None) -> None:
    pos, n = 2, len(data)
    # GUID -> part offset -> where its bytes lie in `data`: kept for every GUID (the segment cap bounds them) and
    # read only for the GUIDs a main packet names. Keeping the first four GUIDs' bytes let four decoys placed
    # first push out the packet HasExtendedXMP names, and its trainedAlgorithmicMedia with it.
    ext_xmp: dict[bytes, dict[int, tuple[int, int]]] = {}
    total_text, over_text = 0, False
    app13: list[bytes] = []
    app13_bytes = 0
    segments = dqt = 0
    # Only marker segments count toward the cap, as in the decoder's count (decode.jpeg_scan_problem): fill
    # bytes and stray bytes between segments are skipped in one step each. Counting each fill byte, 70 KB of
    # 0xFF in front of the DQT hid its tables (and any later APP segment) from this walk while the file decoded.
    while True:
        if pos + 4 > n:
            b.errors.append("JPEG: truncated before end of headers")
            break
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
            # A wrong segment length (seen in camera files), bytes between segments, or a run of fill bytes:
            # on to the next marker as libjpeg and Pillow go, however far (a window of 64 KB hid what followed
            # 70 KB of junk), by the decoder's own rule (structures.next_marker).
            nxt = next_marker(data, pos)
            if nxt is None:
                b.errors.append(f"JPEG: bad marker at offset {pos}")
                break
            pos = nxt
            continue
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # EOI / start of scan: metadata is over
            break
        if segments == JPEG_MAX_SEGMENTS:
            b.errors.append(_over_cap("JPEG", "segments", JPEG_MAX_SEGMENTS))
            b.cut = True
            break
        tick(segments)
        segments += 1
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2:
            # The length counts its own two bytes. Taking "the rest of the file" here, as for an
            # overrun, let every such 4-byte segment re-read the whole tail: quadratic text.
            b.errors.append(f"JPEG: segment 0x{marker:02X} has an invalid length {length}")
            pos += 2
            continue
        seg = data[pos + 4:pos + 2 + length]
        if pos + 2 + length > n:
            b.errors.append(f"JPEG: segment 0x{marker:02X} overruns the file")
            seg = data[pos + 4:n]
        where = f"JPEG APP{marker - 0xE0}" if 0xE0 <= marker <= 0xEF else f"JPEG 0x{marker:02X}"
        if marker == 0xE1 and seg.startswith(b"Exif\x00"):
            b.exif.append((_tiff_start(seg) if len(b.exif) < MAX_BLOCKS else b"", where))
        elif marker == 0xE1 and seg.startswith(XMP_APP1):
            b.xmp.append((seg[len(XMP_APP1):] if len(b.xmp) < MAX_BLOCKS else b"", where))
        elif marker == 0xE1 and seg.startswith(b"http://ns.adobe.com/xmp/extension/\x00"):
            body = seg[35:]
            if len(body) >= 40:
                guid, _total, off = body[:32], *struct.unpack(">II", body[32:40])
                parts = ext_xmp.setdefault(guid, {})
                if len(parts) < 256:
                    parts[off] = (pos + 4 + 35 + 40, min(pos + 2 + length, n))
        elif marker == 0xED and seg.startswith(IRB_SIGNATURE):
            # Photoshop splits image resources over 64 KB across consecutive APP13 segments, each with the
            # signature: joined, a resource cut at a segment boundary reads whole (the 8BIM blocks delimit
            # themselves, so segments that each hold whole resources join just as well).
            body = seg[len(IRB_SIGNATURE):]
            if app13_bytes + len(body) <= MAX_IRB_BYTES:
                app13.append(body)
                app13_bytes += len(body)
            elif app13_bytes <= MAX_IRB_BYTES:
                b.errors.append(f"JPEG: APP13 image resources over {MAX_IRB_BYTES} bytes; the rest ignored")
                app13_bytes = MAX_IRB_BYTES + 1
        elif marker == 0xEB and (b"jumb" in seg[:64] or seg[:2] == b"JP"):
            b.jumbf_bytes += len(seg)
            # JPEG XT box packets: "JP", instance (2), sequence number (4), then the box header, repeated in each
            # packet; sequence 1 of a superbox whose description box is the C2PA store's (UUID "c2pa"...) starts
            # a store. c2pa-rs gives every store it writes the same instance number, so it cannot tell two apart.
            if seg[:2] == b"JP" and seg[4:8] == b"\0\0\0\1" and seg[12:16] == b"jumb" and seg[20:28] == b"jumdc2pa":
                b.c2pa_stores += 1
            if "JPEG APP11" not in b.jumbf:
                b.jumbf.append("JPEG APP11")
        elif marker == 0xFE:
            if total_text + len(seg) <= MAX_TOTAL_TEXT_BYTES and len(b.texts) < MAX_TEXTS:
                total_text += len(seg)
                b.texts.append(("Comment", seg.decode("utf-8", "replace"), "JPEG COM"))
            elif not over_text:
                b.errors.append(f"JPEG: comments over {MAX_TEXTS} segments or {MAX_TOTAL_TEXT_BYTES} bytes; "
                                "the rest ignored")
                over_text = True
        elif marker == 0xDB and dqt <= JPEG_MAX_DQT_BYTES:
            dqt += len(seg)
            if dqt <= JPEG_MAX_DQT_BYTES:
                _read_dqt(seg, b)
            else:   # the decoder refuses the file (limits.JPEG_MAX_DQT_BYTES): no table evidence from part of them
                b.dqt.clear()
                b.errors.append(f"JPEG: more than {JPEG_MAX_DQT_BYTES} bytes of quantization tables; not read")
        elif marker in _SOF and len(seg) >= 5:
            b.height, b.width = struct.unpack(">HH", seg[1:5])
        pos += 2 + length
    # The XMP spec (part 3, 1.1.3.1) has a reader take the extended packet whose GUID the main packet names
    # (xmpNote:HasExtendedXMP), as Adobe's SDK and Skia do; exiftool by default too. One no main packet
    # names is no part of the file's XMP: a DigitalSourceType there decided the verdict while no viewer showed it.
    named = {m.group(1) for x, _ in b.xmp for m in _HAS_EXTENDED_XMP.finditer(_without_comments(x))} if ext_xmp \
        else set()
    unnamed = [guid for guid in ext_xmp if guid not in named]
    for guid in unnamed[:MAX_EXT_XMP_GUIDS]:
        b.errors.append(f"JPEG: extended XMP under GUID {guid.decode('latin-1')!r}, which no main XMP packet "
                        "names (HasExtendedXMP); not read, as XMP readers leave it")
    if len(unnamed) > MAX_EXT_XMP_GUIDS:   # a line each made thousands of decoys thousands of lines
        b.errors.append(f"JPEG: extended XMP under {len(unnamed) - MAX_EXT_XMP_GUIDS} more GUIDs ({len(unnamed)} in "
                        "all) that no main XMP packet names; not read")
    read = [guid for guid in ext_xmp if guid in named]
    if len(read) > MAX_EXT_XMP_GUIDS:
        b.errors.append(f"JPEG: extended XMP under more than {MAX_EXT_XMP_GUIDS} GUIDs; the others ignored")
    for guid in read[:MAX_EXT_XMP_GUIDS]:
        parts = ext_xmp[guid]
        blob = b"".join(data[i:j] for i, j in (parts[k] for k in sorted(parts)))
        b.xmp.append((blob, "JPEG APP1 extended XMP"))
    if app13:
        b.iptc.append((b"".join(app13), "JPEG APP13" if len(app13) == 1 else f"JPEG APP13 ({len(app13)} segments)"))


_TIFF_IPTC_TAGS = {33723: "TIFF IPTC/NAA tag", 34377: "TIFF Photoshop tag"}


def _tiff_iptc(data: bytes, b: Blobs) -> None:
    """IIM in a TIFF file: bare in tag 33723 (IPTC/NAA; Photoshop types it LONG, so Pillow hands
    back numbers) and inside the image resources of tag 34377. IFD0 only, as every writer puts them."""
    from .tiffguard import ifd_entries

    if len(data) < 8:
        return
    e = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", data[4:8])
    # One byte budget for all the copies: IFD0 may repeat a tag up to the entry cap, each copy
    # pointing at the same 8 MB, and each was sliced on its own (8 GB for an 8 MB file).
    taken = 0
    for tag, size, at in ifd_entries(data, e, ifd):
        if tag not in _TIFF_IPTC_TAGS:
            continue
        off = at if size <= 4 else struct.unpack(e + "I", data[at:at + 4])[0]
        if off + size > len(data) or taken + size > MAX_IRB_BYTES:
            b.errors.append(f"TIFF: tag {tag} of {size} bytes at offset {off} is past the file or over the "
                            f"{MAX_IRB_BYTES} bytes read of these tags; not read")
            continue
        taken += size
        b.iptc.append((data[off:off + size], _TIFF_IPTC_TAGS[tag]))




def _read_dqt(seg: bytes, b: Blobs) -> None:
    i = 0
    while i < len(seg):
        pq, tq = seg[i] >> 4, seg[i] & 15
        size = 128 if pq else 64
        body = seg[i + 1:i + 1 + size]
        if len(body) < size:
            b.errors.append("JPEG: truncated quantization table")
            return
        vals = list(struct.unpack(">64H", body)) if pq else list(body)
        b.dqt[tq] = vals
        i += 1 + size


# --- PNG --------------------------------------------------------------------

def _walk_png(data: bytes, b: Blobs, tick=lambda i: None, header_only: bool = False) -> None:
    pos, n, total_text, profiles, work = 8, len(data), 0, 0, 0
    priority_seen: set[str] = set()
    # The last chunk of each generator key that a cap left unread (start, length, type), read once the walk
    # is done: the first one alone could be a decoy (`parameters` holding a caption) that, followed by 64 MiB
    # of junk text, hid the real settings after it, the ones Pillow (last wins) and a UI's PNG Info show.
    last_skipped: dict[str, tuple[int, int, bytes]] = {}
    over_total = over_count = over_profiles = over_work = False
    for i in range(PNG_MAX_CHUNKS):
        tick(i)
        b.chunks += 1
        if pos + 8 > n:
            b.errors.append("PNG: truncated (no IEND)")
            break
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        start = pos + 8
        if start + length > n:
            b.errors.append(f"PNG: chunk {ctype!r} overruns the file")
        name = ctype.decode("latin-1")
        if header_only and ctype != b"IHDR":   # the chunks Pillow reads for the size: up to the first IDAT
            if ctype in (b"IDAT", b"IEND"):
                break
            pos += 12 + length
            continue
        if ctype == b"IHDR" and length >= 8 and start + 8 <= n:
            b.width, b.height = struct.unpack(">II", data[start:start + 8])
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            body, cut = _text_body(data, start, length, ctype)
            profile = _profile_key(body)
            if profile and profiles >= MAX_PROFILE_CHUNKS:
                if not over_profiles:   # said before inflating: the cap is on the work, not on what is kept
                    b.errors.append(f"PNG: more than {MAX_PROFILE_CHUNKS} XMP and raw profile chunks; the rest "
                                    "not read")
                    over_profiles = True
                pos += 12 + length
                continue
            profiles += profile
            # A profile has its own cap: junk text chunks in front must not push a converted photo's
            # EXIF (or a generator's XMP) out, as they may not push out a generator's parameters.
            if len(b.texts) >= MAX_TEXTS and not profile and not _unseen_generator_key(body, priority_seen):
                if not over_count:
                    b.errors.append(f"PNG: more than {MAX_TEXTS} text chunks; the rest ignored")
                    over_count = True
                _note_skipped(body, start, length, ctype, last_skipped)
                pos += 12 + length
                continue
            # The text made so far, kept or not: a chunk dropped over the total was inflated all the same (limits.py).
            if work >= PNG_MAX_TEXT_WORK_BYTES and not profile and not _unseen_generator_key(body, priority_seen):
                if not over_work:
                    b.errors.append(f"PNG: text chunks made {PNG_MAX_TEXT_WORK_BYTES} bytes of text; the rest not read")
                    over_work = True
                _note_skipped(body, start, length, ctype, last_skipped)
                pos += 12 + length
                continue
            try:
                key, text, truncated = _png_text(ctype, body)
                work += len(text)
                truncated = truncated or cut
                where = f"PNG {name} '{key}'"
                kind = key[len(RAW_PROFILE):].lower() if key.startswith(RAW_PROFILE) else None
                if truncated and kind not in RAW_PROFILE_KINDS:
                    b.errors.append(f"{where}: text over {MAX_TEXT_BYTES} bytes; the first {MAX_TEXT_BYTES} read")
                if key == PNG_XMP_KEY:
                    b.xmp.append((text.encode("utf-8"), where))
                elif kind in RAW_PROFILE_KINDS:
                    if truncated:
                        b.errors.append(f"{where}: over {MAX_TEXT_BYTES} bytes of hex (a profile of over "
                                        f"{MAX_TEXT_BYTES // 2} bytes); not read")
                    else:
                        _raw_profile(kind, text, where, b)
                elif total_text + len(text) > MAX_TOTAL_TEXT_BYTES and not (key in GENERATOR_KEYS
                                                                              and key not in priority_seen):
                    if not over_total:
                        b.errors.append(f"PNG: text chunks exceed {MAX_TOTAL_TEXT_BYTES} bytes; rest ignored")
                        over_total = True
                    _note_skipped(body, start, length, ctype, last_skipped)
                else:
                    if key in GENERATOR_KEYS:
                        priority_seen.add(key)
                        last_skipped.pop(key, None)
                    total_text += len(text)
                    b.texts.append((key, text, where))
            except ValueError as exc:
                # A broken chunk costs what a whole one does (a zlib stream may fail after 4 MiB of text), and a
                # generator's key tried once is not tried again: else thousands of such chunks, each keyed
                # 'parameters', were inflated one by one past both caps.
                work += MAX_TEXT_BYTES
                priority_seen.add(body[:80].partition(b"\x00")[0][:79].decode("latin-1"))
                if len(b.errors) < 100:  # a million broken chunks are not a million lines of record
                    b.errors.append(f"PNG {name}: {exc}")
        elif ctype == b"eXIf":
            if length > MAX_EXIF_BYTES + 6:
                b.errors.append(f"PNG eXIf: an EXIF block of {length} bytes, over the {MAX_EXIF_BYTES} read; not read")
                b.exif_refused = True
            else:
                b.exif.append((_tiff_start(data[start:start + length]) if len(b.exif) < MAX_BLOCKS else b"",
                               "PNG eXIf"))
        elif ctype == b"caBX":
            b.c2pa_stores += 1
            if "PNG caBX" not in b.jumbf:     # once, however many: the place is the evidence's `where`
                b.jumbf.append("PNG caBX")
            b.jumbf_bytes += length
        elif ctype == b"IEND":
            tail = data[pos + 12:pos + 12 + MAX_TEXT_BYTES]
            if any(t in tail for t in (b"tEXt", b"zTXt", b"iTXt", b"eXIf")):
                # Not read, as by Pillow and viewers; but text hidden past the end is worth a line.
                b.errors.append(f"PNG: metadata chunks after IEND ({len(data) - pos - 12} bytes), not read")
            break
        pos += 12 + length
    else:
        b.errors.append(_over_cap("PNG", "chunks", PNG_MAX_CHUNKS))
        b.cut = True
        b.chunks += 1   # "more than the cap": the C2PA reader is not handed what was not walked
    # The PNG's own eXIf chunk is its EXIF, what Pillow and browsers show; a raw profile is ImageMagick's text copy.
    # A camera's EXIF pasted as a raw profile in front of a generator's eXIf (Software: Midjourney) was read as
    # the file's EXIF (camera, toward real) and the generator's as another block. Stable: each kind keeps its order.
    b.exif.sort(key=lambda blob_where: blob_where[1] != "PNG eXIf")
    # At most one chunk per generator key (a few keys), each under the one-chunk cap: bounded work.
    for key, (start, length, ctype) in sorted(last_skipped.items(), key=lambda kv: kv[1][0]):
        where = f"PNG {ctype.decode('latin-1')} '{key}'"
        try:
            _, text, truncated = _png_text(ctype, _text_body(data, start, length, ctype)[0])
        except ValueError as exc:
            b.errors.append(f"{where}: {exc}")
            continue
        b.texts.append((key, text, where + " (the last of its key, read past the text caps)"))


_RAW_HEAD = re.compile(r"\n([^\n]{0,200})\n[ \t]*(\d{1,12})[ \t]*\n")
_NOT_HEX = re.compile(r"[^0-9a-fA-F]")
# Deleted in one pass, not split into words: "00 00 00 ..." made one string per two digits (130 MB and 1.5 s in
# the walker for a 75 KB PNG of 16 such profiles).
_DROP_SPACE = dict.fromkeys(map(ord, " \t\n\r\x0b\x0c"))


def raw_profile_bytes(text: str) -> tuple[int, bytes]:
    """-> (declared length, bytes) of an ImageMagick raw profile: a newline, the profile's name, a newline,
    its length in decimal, a newline, then hex digits in lines. Raises ValueError for anything else. The
    length is only compared: nothing is sized from it (a hostile file declares terabytes), and hex that
    disagrees with it is still read, as exiftool does, so an edited length cannot hide a profile."""
    m = _RAW_HEAD.match(text)
    if not m:
        raise ValueError("not a raw profile (newline, name, newline, length, newline, hex digits)")
    digits = text[m.end():].translate(_DROP_SPACE)
    bad = _NOT_HEX.search(digits)
    if bad:
        raise ValueError(f"{bad.group()!r} at hex digit {bad.start()} is no hex digit; not read")
    if len(digits) & 1:
        raise ValueError(f"an odd number of hex digits ({len(digits)}); not read")
    return int(m.group(2)), bytes.fromhex(digits)


def _raw_profile(kind: str, text: str, where: str, b: Blobs) -> None:
    """Hand an ImageMagick raw profile to the reader of the same block in a JPEG or TIFF."""
    try:
        declared, blob = raw_profile_bytes(text)
    except ValueError as exc:
        b.errors.append(f"{where}: {exc}")
        return
    if declared != len(blob):
        b.errors.append(f"{where}: declares {declared} bytes but holds {len(blob)}; the {len(blob)} read")
    if kind == "exif" or (kind == "app1" and blob.startswith(b"Exif\x00")):
        b.exif.append((_tiff_start(blob), where))
    elif kind == "xmp":
        b.xmp.append((blob, where))
    elif kind == "app1" and blob.startswith(XMP_APP1):
        b.xmp.append((blob[len(XMP_APP1):], where))
    elif kind == "iptc":
        b.iptc.append((blob, where))      # bare IIM, or image resources holding it (iptc.iim_blocks)
    elif kind == "8bim":
        _image_resources(blob[len(IRB_SIGNATURE):] if blob.startswith(IRB_SIGNATURE) else blob, where, b)
    else:
        b.errors.append(f"{where}: an APP1 profile that is neither EXIF nor XMP; not read")


def _image_resources(irb: bytes, where: str, b: Blobs) -> None:
    """Photoshop image resources (a PSD file's, ImageMagick's 8BIM profile): the IIM, EXIF and XMP in
    them go to the readers of those blocks."""
    found, errors = resource_data(irb, where, (IIM_RESOURCE, EXIF_RESOURCE, XMP_RESOURCE))
    b.errors.extend(errors)
    for rid, blob in found:
        spot = f"{where} resource 0x{rid:04X}"
        if not blob.strip(b"\x00"):
            continue   # an empty resource is no broken block: Photoshop keeps the slot when the data is gone
        if rid == IIM_RESOURCE:
            b.iptc.append((blob, spot))
        elif rid == EXIF_RESOURCE:
            b.exif.append((_tiff_start(blob), spot))
        else:
            b.xmp.append((blob, spot))


def _profile_key(body: bytes) -> bool:
    """Whether a text chunk's keyword is XMP's or a raw profile's this walker decodes."""
    key = body[:80].partition(b"\x00")[0].decode("latin-1")
    return key == PNG_XMP_KEY or (key.startswith(RAW_PROFILE) and key[len(RAW_PROFILE):].lower() in RAW_PROFILE_KINDS)


def _note_skipped(body: bytes, start: int, length: int, ctype: bytes, last: dict) -> None:
    key = body[:80].partition(b"\x00")[0][:79].decode("latin-1")
    if key in GENERATOR_KEYS:
        last[key] = (start, length, ctype)


def _unseen_generator_key(body: bytes, seen: set[str]) -> bool:
    """A text chunk past the count cap is still read when it is the first of a generator's keys:
    thousands of junk chunks in front must not push the real one out."""
    key = body[:80].partition(b"\x00")[0][:79].decode("latin-1")
    return key in GENERATOR_KEYS and key not in seen


def _text_body(data: bytes, start: int, length: int, ctype: bytes) -> tuple[bytes, bool]:
    """-> (the bytes of a text chunk to read, whether its tail was left out). An uncompressed chunk is read as
    its first MAX_TEXT_BYTES after its keywords, so no more is copied; a compressed one is inflated whole."""
    head = data[start:start + min(length, 82)]   # keyword (79 at most), NUL, iTXt's compression flag
    key, sep, rest = head.partition(b"\x00")
    compressed = ctype == b"zTXt" or (ctype == b"iTXt" and sep and rest[:1] == b"\x01")
    take = length if compressed else min(length, MAX_TEXT_BYTES + TEXT_HEAD_BYTES)
    return data[start:start + take], take < length


def _png_text(ctype: bytes, body: bytes) -> tuple[str, str, bool]:
    """-> (keyword, text, truncated)."""
    key, sep, rest = body.partition(b"\x00")
    if not sep:
        raise ValueError("keyword not terminated")
    k = key[:79].decode("latin-1")
    if ctype == b"tEXt":
        return k, rest[:MAX_TEXT_BYTES].decode("latin-1"), len(rest) > MAX_TEXT_BYTES
    if ctype == b"zTXt":
        if not rest:
            raise ValueError("empty zTXt")
        raw, cut = _inflate(rest[1:])
        return k, raw.decode("latin-1"), cut
    # iTXt: flag, method, language\0, translated keyword\0, text
    if len(rest) < 2:
        raise ValueError("short iTXt")
    flag = rest[0]
    rest = rest[2:]
    _lang, _, rest = rest.partition(b"\x00")
    _tk, _, rest = rest.partition(b"\x00")
    raw, cut = _inflate(rest) if flag else (rest[:MAX_TEXT_BYTES], len(rest) > MAX_TEXT_BYTES)
    return k, raw.decode("utf-8", "replace"), cut


def _inflate(payload: bytes) -> tuple[bytes, bool]:
    try:
        return inflate_prefix(payload)
    except zlib.error as exc:
        raise ValueError(f"corrupt compressed text: {exc}") from exc


# --- WebP -------------------------------------------------------------------

def _walk_webp(data: bytes, b: Blobs, tick=lambda i: None) -> None:
    for i, (pos, size, fourcc) in enumerate(webp_chunks(data)):    # the chunks the decoder counts
        if i == WEBP_MAX_CHUNKS:   # a chunk past the cap, not a file of exactly that many
            b.errors.append(_over_cap("WebP", "chunks", WEBP_MAX_CHUNKS))
            b.cut = True
            b.chunks += 1
            break
        tick(i)
        b.chunks += 1
        start = pos + 8
        if start + size > len(data):
            b.errors.append(f"WebP: chunk {fourcc!r} overruns the file")
        # Only what is read is sliced (TEXT_HEAD_BYTES): the size fields below sit in a chunk's first bytes.
        body = data[start:start + min(size, 16)]
        if fourcc == b"EXIF":
            if size > MAX_EXIF_BYTES + 6:
                b.errors.append(f"WebP EXIF chunk: an EXIF block of {size} bytes, over the {MAX_EXIF_BYTES} read; "
                                "not read")
                b.exif_refused = True
            else:
                b.exif.append((_tiff_start(data[start:start + size]) if len(b.exif) < MAX_BLOCKS else b"",
                               "WebP EXIF chunk"))
        elif fourcc == b"XMP ":
            if size > MAX_XMP_READ_BYTES:
                b.errors.append(f"WebP XMP chunk: an XMP packet of {size} bytes, over the {MAX_XMP_READ_BYTES} read; "
                                "not read")
            else:
                b.xmp.append((data[start:start + size] if len(b.xmp) < MAX_BLOCKS else b"", "WebP XMP chunk"))
        elif fourcc == b"C2PA":
            b.c2pa_stores += 1
            if "WebP C2PA chunk" not in b.jumbf:     # once, however many: the place is the evidence's `where`
                b.jumbf.append("WebP C2PA chunk")
            b.jumbf_bytes += size
        elif fourcc == b"VP8X" and len(body) >= 10:
            b.width = 1 + int.from_bytes(body[4:7], "little")
            b.height = 1 + int.from_bytes(body[7:10], "little")
        elif fourcc == b"VP8 " and len(body) >= 10 and b.width is None:
            w, h = struct.unpack("<HH", body[6:10])
            b.width, b.height = w & 0x3FFF, h & 0x3FFF
        elif fourcc == b"VP8L" and len(body) >= 5 and b.width is None:
            bits = int.from_bytes(body[1:5], "little")
            b.width, b.height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


def _over_cap(fmt: str, what: str, cap: int) -> str:
    return f"{fmt}: more than {cap} {what} (the decoder's cap too); the metadata after them was not read"


# --- PSD -------------------------------------------------------------------

def _walk_psd(data: bytes, b: Blobs) -> None:
    """Photoshop's own format (PSB too: the same sections up to the layers): a 26-byte header, the
    colour mode data and the image resources, each behind a 4-byte length. Pillow decodes the pixels
    but keeps only the ICC profile of the resources; the IIM, EXIF and XMP are read here."""
    if len(data) < 30:
        b.errors.append("PSD: truncated header")
        return
    b.height, b.width = struct.unpack(">II", data[14:22])
    (mode_len,) = struct.unpack(">I", data[26:30])
    at = 30 + mode_len
    if at + 4 > len(data):
        b.errors.append(f"PSD: colour mode data of {mode_len} bytes overruns the file")
        return
    (size,) = struct.unpack(">I", data[at:at + 4])
    irb = data[at + 4:at + 4 + size]
    if len(irb) < size:
        b.errors.append(f"PSD: image resources of {size} bytes overrun the file ({len(irb)} left)")
    _image_resources(irb, "PSD", b)


# --- HEIF / AVIF / TIFF / GIF through Pillow ---------------------------------

def _walk_with_pillow(data: bytes, b: Blobs, layout=None) -> None:
    """`layout`: a HEIF's item tables, as decode.open_image takes them."""
    from ..decode import DecodeFailure, open_image
    from ..quiet import quiet_warnings

    with quiet_warnings():  # corrupt-tag warnings; other failures are recorded by the caller
        try:
            im = open_image(data, layout=layout)
        except DecodeFailure as exc:    # a structure Pillow must not walk: said as the decoder says it
            b.errors.append(exc.message)
            return
        _pillow_info(im, b)


def _walk_heif(data: bytes, b: Blobs, read=None) -> None:
    """Pillow's view of a HEIF/AVIF without its Exif and XMP items over the readers' cap (8 MiB each), which
    pillow-heif copied three times (a 100 MB Exif item: `meta` peaked at 677 MB): such an item is not read, as
    a PNG's or WebP's EXIF chunk over it is not."""
    from ..metastrip import HEIF_ICC_WITHHELD, strip_oversize_heif

    # its item tables read once, for the strip and open_image's check
    data, withheld, read = strip_oversize_heif(data, b.format, read)
    for said in (withheld or "").split("; "):
        # an ICC profile left out is no gap in the metadata: nothing here reads one (the scan's record says it)
        if said and HEIF_ICC_WITHHELD not in said:
            b.errors.append(said.replace("not handed to the decoder", "not read"))
    _walk_with_pillow(data, b, layout=read)


def _walk_tiff_lean(data: bytes, b: Blobs) -> None:
    """Pillow's view of a TIFF without its BYTE, ASCII and UNDEFINED entries over the readers' cap (8 MiB
    each), which Pillow read whole and held two or three times over (a 100 MB XMP tag: `scan -d metadata`
    785 MB): such an entry is not read, as a PNG's or WebP's chunk over it is not, and the record says so
    where a reader here would have read it."""
    from ..limits import DECODE_MAX_METADATA_CHUNK
    from .tiffguard import MAX_FILE_ENTRIES, check_tiff, oversize_said, without_oversize

    if len(data) > DECODE_MAX_METADATA_CHUNK:   # else no entry can be over it
        chk = check_tiff(data, pages=True, max_total_entries=MAX_FILE_ENTRIES)   # the walk open_image makes
        if chk.ok:
            # Only what a reader here would have read is a gap in the metadata (a Photoshop file's layers,
            # tag 37724, often pass 8 MiB, and nothing here reads them); the scan's record names every tag
            # left out of the decoder's copy (image.pixels_without_metadata).
            withheld = oversize_said(chk, read_only=True)
            if withheld:
                b.errors.append(withheld.replace("not handed to the decoder", "not read"))
            data = without_oversize(data, chk)
    _walk_tiff_with_pillow(data, b)


def _walk_tiff_with_pillow(data: bytes, b: Blobs) -> None:
    """A TIFF whose pixel layout Pillow has no decoder for (16-bit Lab, float RGB, JPEG 2000 inside)
    is refused at open, and its XMP and size with it: they are read from IFD0 here instead, and the
    refusal is not a malformed file."""
    from ..decode import refused_layout

    try:
        _walk_with_pillow(data, b)
    except Exception as exc:  # noqa: BLE001 - the same as walk's, unless Pillow refused the layout
        if refused_layout(data, "TIFF", exc) is None:
            raise
        _tiff_ifd0(data, b)


def _tiff_ifd0(data: bytes, b: Blobs) -> None:
    """Size (256, 257) and XMP (700) of a TIFF's IFD0, read from its entries as _tiff_iptc reads IIM."""
    from .tiffguard import ifd_table

    if len(data) < 8:
        return
    e = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", data[4:8])
    size: dict[int, int] = {}
    for tag, typ, count, at in ifd_table(data, e, ifd):
        if tag in (256, 257) and count == 1 and typ in (3, 4) and tag not in size:
            size[tag] = struct.unpack_from(e + ("H" if typ == 3 else "I"), data, at)[0]
        elif tag == 700 and typ in (1, 7) and not b.xmp:
            off = at if count <= 4 else struct.unpack_from(e + "I", data, at)[0]
            if off + count > len(data):     # (the XMP reader caps what it parses)
                b.errors.append(f"TIFF: XMP tag of {count} bytes at offset {off} is past the file; not read")
                continue
            b.xmp.append((data[off:off + count], "TIFF XMP"))
    if 256 in size and 257 in size:
        b.width, b.height = size[256], size[257]


# An XMP packet in a GIF: an application extension named "XMP DataXMP" whose data is the packet's bytes as they
# are (not cut into sub-blocks: the reader's walk hops through them), then a 258-byte "magic trailer" (0x01,
# 0xFF down to 0x00, the terminator) that lands the walk on the terminator wherever it enters (XMP specification
# part 3, 1.1.2). Pillow reads no application extension but NETSCAPE's loop count.
_GIF_XMP_ID = b"XMP DataXMP"
_GIF_XMP_TRAILER = b"\x01" + bytes(range(255, -1, -1)) + b"\x00"


def _gif_xmp(data: bytes, b: Blobs) -> None:
    """The XMP application extensions of a GIF, found by walking its blocks as decode.gif_walk does (the decoder's
    check, which open_image ran): sub-block lengths, not bytes, at most limits.GIF_MAX_BLOCKS sub-blocks or stray
    bytes in all, past which the record says the rest was not searched. A packet is sliced out only when it is
    within the XMP reader's cap (xmp.MAX_XMP_READ_BYTES). They went unread, and unsaid: a GIF whose XMP named
    its AI tool was a file with no metadata."""
    from ..decode import _GIF_BLOCK_START

    n = len(data)
    if n < 13:
        return
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    steps, over = 0, False
    while pos < n:
        kind = data[pos]
        if kind == 0x3B:
            return
        if kind not in (0x21, 0x2C):
            found = _GIF_BLOCK_START.search(data, pos + 1)
            end = n if found is None else found.start()
            steps += end - pos
            pos = end
        else:
            xmp_at = None
            if kind == 0x21:
                if data[pos + 1:pos + 2] == b"\xff" and data[pos + 2:pos + 3] == b"\x0b" \
                        and data[pos + 3:pos + 14] == _GIF_XMP_ID:
                    xmp_at = pos + 14
                pos += 2
            else:
                if pos + 10 > n:
                    return
                local = data[pos + 9]
                pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            while pos < n and steps <= GIF_MAX_BLOCKS:      # the sub-blocks, to the empty one
                size = data[pos]
                pos += 1 + size
                steps += 1
                if size == 0:
                    break
            if xmp_at is not None:
                end = min(pos, n)
                if data[end - len(_GIF_XMP_TRAILER):end] == _GIF_XMP_TRAILER:
                    end -= len(_GIF_XMP_TRAILER)
                if end - xmp_at > MAX_XMP_READ_BYTES:
                    b.errors.append(f"GIF XMP application extension: an XMP packet of {end - xmp_at} bytes, over "
                                    f"the {MAX_XMP_READ_BYTES} read; not read")
                elif len(b.xmp) < MAX_BLOCKS:
                    b.xmp.append((data[xmp_at:end], "GIF XMP application extension"))
                elif not over:
                    over = True
                    b.errors.append(f"GIF: more than {MAX_BLOCKS} XMP application extensions; the rest not read")
        if steps > GIF_MAX_BLOCKS:
            b.errors.append(f"GIF: more than {GIF_MAX_BLOCKS} sub-blocks or stray bytes; the rest was not searched "
                            "for XMP")
            return


def _pillow_info(im, b: Blobs) -> None:
    with im:
        b.width, b.height = im.size
        info = im.info
        ex = info.get("exif")
        if ex and b.format != "TIFF":
            b.exif.append((_tiff_start(bytes(ex)), f"{b.format} Exif item"))
        xmp = info.get("xmp")
        if b.format == "TIFF" and not xmp:
            xmp = im.tag_v2.get(700) if hasattr(im, "tag_v2") else None
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8")
        if xmp:
            b.xmp.append((bytes(xmp), f"{b.format} XMP"))
        if b.format == "GIF" and info.get("comment"):
            c = info["comment"]
            if len(c) > MAX_TEXT_BYTES:  # the same cap as a PNG text chunk; it was decoded and parsed whole
                b.errors.append(f"GIF comment of {len(c)} bytes; the first {MAX_TEXT_BYTES} read")
                c = c[:MAX_TEXT_BYTES]
            b.texts.append(("Comment", c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c), "GIF comment"))


# --- what c2pa-rs would walk --------------------------------------------------------------

# c2pa-rs parses the whole container before it looks for the manifest, in native code the per-file
# budget cannot stop: on BMFF (HEIF/AVIF) its time grows with the square of the box count (an
# 800 KB file of 100,000 empty 'free' boxes: 32.6 s; 10,000: 0.3 s), on TIFF with the IFD entries
# (16 IFDs of 65,535 entries, 12.6 MB: 17 s). So it is handed only a structure of a size a real
# file has. Real HEIF/AVIF files hold tens to a few hundred boxes, TIFF files a few hundred entries.
C2PA_MAX_BOXES = 5_000
# PNG/WebP: linear there, but 1,000,000 chunks in front of a caBX chunk held it 5 s, past the whole
# per-file budget. A WebP animation holds one top-level chunk a frame (the frame's image is inside its
# ANMF): 100,000 is one of almost 100,000 frames. The walker stops at the same count
# (limits.PNG_MAX_CHUNKS, WEBP_MAX_CHUNKS) and then counts one more.
C2PA_MAX_CHUNKS = 100_000
C2PA_MAX_TIFF_ENTRIES = 20_000
# Boxes whose payload is a list of boxes (after a FullBox header of 4 bytes where given).
_BMFF_CONTAINERS = {b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0, b"stbl": 0, b"dinf": 0, b"edts": 0,
                    b"udta": 0, b"mvex": 0, b"moof": 0, b"traf": 0, b"mfra": 0, b"iprp": 0, b"ipco": 0,
                    b"grpl": 0, b"meta": 4, b"iref": 4}


def c2pa_store_problem(store_bytes: int, fmt: str | None = None, cut: bool = False) -> str | None:
    """Why a manifest store of `store_bytes` (its segments, chunks, boxes or tags: Blobs.jumbf_bytes) is too big
    to hand to c2pa-rs (limits.C2PA_MAX_STORE_BYTES), or None. cut: the walk stopped before the end (Blobs.cut)."""
    if fmt == "JPEG" and cut:
        # c2pa-rs joins every APP11 segment before the scan: past the walk's segment cap a store went on unseen
        # (its first segment, 65,536 empty comments, then 100 MB more: counted as 64 KB, held by c2pa-rs).
        # A PNG's or WebP's walk cut is c2pa_structure_problem's (its chunk count).
        return "the walk stopped before the JPEG's last segment, so the store's size is not known"
    if store_bytes > C2PA_MAX_STORE_BYTES:
        return f"a manifest store of {store_bytes} bytes (over {C2PA_MAX_STORE_BYTES})"
    return None


def c2pa_structure_problem(data: bytes, fmt: str | None, chunks: int = 0) -> str | None:
    """Why this file's structure is too big to hand to c2pa-rs, or None. chunks: how many
    PNG/WebP chunks the walker saw (Blobs.chunks)."""
    if fmt in ("PNG", "WEBP") and chunks > C2PA_MAX_CHUNKS:
        return f"{chunks} chunks (over {C2PA_MAX_CHUNKS})"
    if fmt in ("HEIF", "AVIF"):
        n = _bmff_boxes(data, 0, len(data), C2PA_MAX_BOXES + 1, 0)
        if n > C2PA_MAX_BOXES:
            return f"more than {C2PA_MAX_BOXES} boxes"
    elif fmt == "TIFF":
        from .tiffguard import check_tiff

        chk = check_tiff(data, pages=True, max_total_entries=C2PA_MAX_TIFF_ENTRIES)
        if not chk.ok:
            return f"TIFF structure refused: {chk.problem}"
    return None


def _bmff_boxes(data: bytes, pos: int, end: int, budget: int, depth: int) -> int:
    """Boxes in data[pos:end] and inside its container boxes, counted up to `budget` (at most
    limits.HEIF_MAX_ENTRIES). A broken box ends a list: c2pa-rs stops there too."""
    n = 0
    for kind, start, stop in bmff_boxes(data, pos, end):
        if n >= budget:
            break
        n += 1
        skip = _BMFF_CONTAINERS.get(kind)
        if skip is not None and depth < 16:
            n += _bmff_boxes(data, start + skip, stop, budget - n, depth + 1)
    return n
