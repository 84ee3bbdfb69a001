"""A linear, capped pre-check of a TIFF/EXIF structure before third-party readers see it.

exifread and Pillow read every IFD entry, follow every IFD pointer and warn once
per bad entry: an IFD with 65,535 entries took 23 s and printed 115,000 warnings;
IFD chains that nest deeply cost as much. This walker touches each IFD's entry
table once (struct.unpack_from on the raw bytes, no values decoded), with hard
caps, and says whether the structure is sane enough to hand over. A loop is
noted and not followed rather than refused: real camera files contain them
(a Kodak ProBack JPEG points back at IFD0) and the readers stop at a revisit.
It also reads the Orientation tag, so the pixel decoder never needs Pillow's
EXIF parser for a file that fails the check.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..limits import DECODE_MAX_METADATA_CHUNK, TIFF_MAX_DECODED_VALUES

MAX_ENTRIES = 1000        # per IFD; camera IFDs hold ~10-300 (maker notes are not walked)
MAX_IFDS = 32             # in an EXIF block: IFD0, IFD1, EXIF, GPS, Interop
MAX_PAGES = 10_000        # a TIFF file's page chain (multi-page scans run to hundreds)
# Values exifread decodes one by one in Python (~12 us each for a RATIONAL): it does so for every
# non-ASCII entry of fewer than 1,000 values, apart from the tags it skips without details (XMP,
# MakerNote, UserComment). 5,000 entries of 999 RATIONALs, a 68 KB EXIF block, kept it busy for 27 s
# in one uninterruptible call, past the per-file budget. Camera blocks in the dev set hold at most
# 592 such values; a TIFF file's IFD0 (strip tables, a TransferFunction) a few thousand.
MAX_VALUES = 50_000
# Strips or tiles of one page. Pillow makes a Python tile of each uncompressed one and loads them one
# by one: a 24 MB 1x4,000,000 TIFF of one-row strips took 30.7 s and 1.5 GB to scan (at --max-bytes,
# 85 M strips: many minutes). 100,000 leaves room for one-row strips of a 65,000-row page and 32x32
# tiles of a 100 MP one; writers use 8 KiB strips and 256x256 tiles.
MAX_STRIPS = 100_000
_STRIP_TAGS = (273, 324)  # StripOffsets, TileOffsets
# IFD entries of a whole TIFF file, all pages together, walked before its pixels are decoded: 10,000 pages
# of 1,000 entries (120 MB) kept this walk alone busy for 3.6 s, and Pillow parses them all again to count
# the pages. Real writers put 9 to 20 on a page (Pillow 9, ImageJ and scanners 13 to 16), so 25 for each of
# MAX_PAGES: at 100,000 an 8,000-page stack of 13 was refused. 250 pages of 1,000 decode in 0.9 s.
MAX_FILE_ENTRIES = 250_000
BIGTIFF_MAGIC = (b"II+\x00", b"MM\x00+")
# Tags whose every value Pillow decodes into a Python object (an int, an IFDRational) when it opens a TIFF file
# (TiffImagePlugin._setup and _seek: size, layout, resolution, palette, XMP, ICC profile; each page it counts) or
# when provenance.exif asks it for a camera's tags. Every entry of an EXIF, GPS or Interoperability sub-IFD is
# decoded too (a TIFF's load() and the EXIF reader's get_ifd make a dict of the whole sub-IFD). Their values
# together are capped (limits.TIFF_MAX_DECODED_VALUES).
PILLOW_DECODED = frozenset({
    256, 257, 258, 259, 262, 266, 274, 277, 278, 282, 283, 284, 296, 320, 322, 323, 338, 339, 530, 700, 34675, 0xBC01,
    0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x829A, 0x829D, 0x8827, 0x9003, 0x920A, 0x927C, 0x9286,
    0xA433, 0xA434})
# Field types Pillow decodes value by value (numbers, rationals, IFD offsets; BigTIFF's 8-byte ones; SBYTE, one
# int a byte: 64 M of them in a 64 MB file took a scan 1.3 GB). BYTE and UNDEFINED data and text it hands back
# whole, one slice; a type it does not know it skips.
_VALUE_TYPES = frozenset({3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16, 17, 18})
# Field types Pillow and exifread read whole, one slice (BYTE, ASCII, UNDEFINED): an entry of these over
# limits.DECODE_MAX_METADATA_CHUNK is left out of the copy the readers get (without_oversize).
_SLICE_TYPES = frozenset({1, 2, 7})
# A page's ColorMap (320) of at most this many values is not counted toward TIFF_MAX_DECODED_VALUES: the
# largest palette Pillow reads as one (modes P and PA: 1 to 8 bits, 3 x 256 SHORTs; a 16-bit palette it does not
# open). Counted, 342 pages of a palette TIFF Pillow wrote were refused. Pages are capped (MAX_PAGES), so these
# add at most 7.68 M values over a file; a larger ColorMap counts whole.
PALETTE_VALUES = 3 << 8
_COLORMAP = 320
_EXIFREAD_SKIPS = (700, 0x927C, 0x9286)
_SUB_IFD_TAGS = (0x8769, 0x8825, 0xA005)  # EXIF, GPS, Interoperability
_ORIENTATION = 0x0112
_JPEG_TABLES = 347         # JPEGTables: the quantization and Huffman tables of a JPEG-compressed page
C2PA_TAG = 0xCD41         # a manifest store, on any page (c2pa-rs reads it there)
# Bytes per value of TIFF field types 1-13 (BYTE ... IFD); index 0 is no type.
TYPE_SIZE = (0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4)


@dataclass
class TiffCheck:
    ok: bool = True
    problem: str | None = None
    orientation: int | None = None
    ifds: int = 0
    entries: int = 0
    values: int = 0     # what exifread would decode one by one (MAX_VALUES)
    decoded: int = 0    # what Pillow would decode one by one (PILLOW_DECODED)
    c2pa_bytes: int = 0  # bytes of the C2PA tags of the IFDs walked (limits.C2PA_MAX_STORE_BYTES)
    c2pa_tags: int = 0   # how many there are: each is a manifest store (a file carries one)
    # (tag, position of its type field, bytes, whether in a sub-IFD) of each BYTE, ASCII or UNDEFINED entry of the
    # IFDs walked over limits.DECODE_MAX_METADATA_CHUNK: what without_oversize leaves out.
    oversize: list[tuple[int, int, int, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Byte offset of IFD1's next-IFD pointer (IFD0's when there is no IFD1): where
    # bounded_for_readers cuts the chain.
    chain_cut: int | None = None


def check_tiff(tiff: bytes, max_entries: int = MAX_ENTRIES, max_ifds: int | None = None,
               pages: bool = True, max_values: int | None = None, max_total_entries: int | None = None) -> TiffCheck:
    """tiff: bytes starting with II*\\0 or MM\\0* (or BigTIFF's II+\\0, MM\\0+). pages=False stops after IFD0's
    sub-IFDs and IFD1 (EXIF blocks); True follows the next-IFD chain (TIFF files).
    max_values: refuse a structure whose entries hold more values than exifread
    should decode (its cost, see MAX_VALUES); max_total_entries: refuse one of
    more entries in all (stopping there); None for no cap."""
    r = TiffCheck()
    if max_ifds is None:
        max_ifds = MAX_PAGES if pages else MAX_IFDS
    big = tiff[:4] in BIGTIFF_MAGIC  # 8-byte offsets and counts, 20-byte entries
    if len(tiff) < (16 if big else 8) or tiff[:4] not in (b"II*\x00", b"MM\x00*") + BIGTIFF_MAGIC:
        return _bad(r, "not a TIFF structure")
    e = "<" if tiff[:2] == b"II" else ">"
    off_f, cnt_f, entry = ("Q", "Q", 20) if big else ("I", "H", 12)
    (first,) = struct.unpack_from(e + off_f, tiff, 8 if big else 4)
    todo: list[tuple[int, bool]] = [(first, True)]
    seen: set[int] = set()
    chain = 0
    while todo:
        off, in_chain = todo.pop()
        if off == 0:
            continue
        if off in seen:
            # Real camera files point back at IFD0 (Kodak ProBack); readers stop there, and so does this walk.
            r.notes.append(f"IFD at offset {off} is reached twice (a loop); not followed")
            continue
        if off + struct.calcsize(cnt_f) > len(tiff):
            r.notes.append(f"IFD offset {off} beyond the data")
            continue
        seen.add(off)
        r.ifds += 1
        if r.ifds > max_ifds:
            return _bad(r, f"more than {max_ifds} IFDs")
        (n,) = struct.unpack_from(e + cnt_f, tiff, off)
        if n > max_entries:
            return _bad(r, f"IFD at offset {off} has {n} entries (over {max_entries})")
        r.entries += n
        if max_total_entries is not None and r.entries > max_total_entries:
            return _bad(r, f"more than {max_total_entries} IFD entries")
        head = struct.calcsize(cnt_f)
        end = off + head + entry * n
        if end > len(tiff):
            r.notes.append(f"IFD at offset {off} is truncated")
            n = max(0, (len(tiff) - off - head) // entry)
            end = off + head + entry * n
        for tag, typ, count, at in ifd_table(tiff, e, off, n, big=big):
            if typ != 2 and count < 1000 and tag not in _EXIFREAD_SKIPS:
                r.values += count
            if ((tag in PILLOW_DECODED or not in_chain) and typ in _VALUE_TYPES
                    and not (tag == _COLORMAP and in_chain and count <= PALETTE_VALUES)):
                r.decoded += count
                if r.decoded > TIFF_MAX_DECODED_VALUES:
                    return _bad(r, f"IFD at offset {off}: tag {tag} brings the values Pillow decodes one by one "
                                   f"over {TIFF_MAX_DECODED_VALUES}")
            if tag in _STRIP_TAGS and count > MAX_STRIPS:
                return _bad(r, f"IFD at offset {off} has {count} {'strips' if tag == 273 else 'tiles'} "
                               f"(over {MAX_STRIPS})")
            if typ in _SLICE_TYPES and count > DECODE_MAX_METADATA_CHUNK:
                if tag == _JPEG_TABLES and pages:
                    # The decoder needs them (a JPEG-compressed page's tables), so they cannot be left out as the
                    # metadata is: retyped, they left libtiff no tables, and a file viewers show failed with
                    # "decoder error -2"; refused here, the record says why.
                    return _bad(r, f"IFD at offset {off} has JPEG tables (tag 347) of {count} bytes (over "
                                   f"{DECODE_MAX_METADATA_CHUNK}; a JPEG's tables take a few KB)")
                r.oversize.append((tag, at - (10 if big else 6), count, not in_chain))
            if tag == C2PA_TAG:
                r.c2pa_tags += 1
                r.c2pa_bytes += count * (TYPE_SIZE[typ] if 1 <= typ <= 13 else 1)
            if tag == _ORIENTATION and r.orientation is None and typ == 3 and count >= 1:
                r.orientation = struct.unpack_from(e + "H", tiff, at)[0]
            elif tag in _SUB_IFD_TAGS and count >= 1 and (typ in (4, 13) or big and typ in (16, 18)):
                todo.append((struct.unpack_from(e + ("I" if typ in (4, 13) else "Q"), tiff, at)[0], False))
        if max_values is not None and r.values > max_values:
            return _bad(r, f"IFD entries hold more than {max_values} values")
        if in_chain and end + struct.calcsize(off_f) <= len(tiff):
            if chain <= 1 and not big:  # bounded_for_readers cuts 4-byte pointers (EXIF is classic TIFF)
                r.chain_cut = end
            chain += 1
            if pages or chain <= 1:
                (nxt,) = struct.unpack_from(e + off_f, tiff, end)
                todo.append((nxt, True))
    return r


def ifd_table(tiff: bytes, e: str, ifd: int, max_entries: int = MAX_ENTRIES, big: bool = False):
    """(tag, type, count, position of the value field) of each entry of the IFD at `ifd`: at most
    max_entries, and only entries whole inside `tiff`. Reads the entry table only, types as they
    stand (a reader decides what a type outside 1-13 means); never raises. The one entry loop that
    check_tiff, ifd_entries and the maker-note check share. big: BigTIFF's layout (8-byte entry
    count, 20-byte entries with 8-byte counts)."""
    cnt_f, entry, cnt_v = ("Q", 20, "Q") if big else ("H", 12, "I")
    head = struct.calcsize(cnt_f)
    if ifd < 0 or ifd + head > len(tiff):
        return
    n = min(struct.unpack_from(e + cnt_f, tiff, ifd)[0], max_entries, (len(tiff) - ifd - head) // entry)
    for i in range(n):
        p = ifd + head + entry * i
        tag, typ, count = struct.unpack_from(e + "HH" + cnt_v, tiff, p)
        yield tag, typ, count, p + 4 + struct.calcsize(cnt_v)


def ifd_entries(tiff: bytes, e: str, ifd: int, max_entries: int = MAX_ENTRIES):
    """(tag, byte size of the value, position of the value field) of each entry of the IFD at
    `ifd` (ifd_table). A type outside 1-13 is taken as one byte a value."""
    for tag, typ, count, at in ifd_table(tiff, e, ifd, max_entries):
        yield tag, count * (TYPE_SIZE[typ] if 1 <= typ <= 13 else 1), at


def bounded_for_readers(tiff: bytes, chk: TiffCheck) -> bytes:
    """A copy of the structure whose IFD chain ends after IFD1, for exifread, and without the entries
    without_oversize leaves out.

    exifread follows the whole next-IFD chain ("IFD 2", "IFD 3", ...), which
    the check above only walks for TIFF files and then up to 10,000 pages:
    IFDs of 65,535 entries laid 4 bytes apart behind a tidy IFD0 and IFD1
    kept it busy for 15.6 s on a 0.8 MB PNG (docs/schema.md), and the time grows with the
    product of both, past any budget (it cannot be interrupted). aiidetect
    reads IFD0, IFD1 and their EXIF/GPS sub-IFDs only, so nothing it uses is
    lost. The file itself is never modified."""
    p = chk.chain_cut
    cut = {} if p is None or tiff[p:p + 4] == b"\x00\x00\x00\x00" else {p: b"\x00\x00\x00\x00"}
    return without_oversize(tiff, chk, cut)


def without_oversize(tiff: bytes, chk: TiffCheck, patches: dict[int, bytes] | None = None) -> bytes:
    """`tiff`, or one copy of it whose BYTE, ASCII and UNDEFINED entries over limits.DECODE_MAX_METADATA_CHUNK
    (chk.oversize) have type 0, which Pillow and exifread skip unread, and with `patches` ({offset: bytes})
    written in. Pillow read such an entry whole at open and held it two or three times over (a 100 MB BYTE tag
    took `scan -d metadata` 580 MB, an XMP tag of that size 785 MB, though the readers read no XMP packet or
    EXIF block that large: xmp.MAX_XMP_READ_BYTES, exif.MAX_EXIF_BYTES); Pillow's EXIF reader copied it again.
    Two bytes an entry: every offset stands, and the copy is as long as the file. The file itself is never
    modified."""
    patches = dict(patches or {})
    for _, at, _, _ in chk.oversize:
        patches[at] = b"\x00\x00"
    if not patches:
        return tiff
    view, parts, last = memoryview(tiff), [], 0
    for pos in sorted(patches):
        if pos < last:      # overlapping IFDs of a crafted file: the first patch there stands
            continue
        parts += [view[last:pos], patches[pos]]
        last = pos + len(patches[pos])
    parts.append(view[last:])
    return b"".join(parts)


# Tags of a TIFF file's IFDs that a metadata reader here reads through Pillow or exifread: XMP, and the text and
# camera tags of IFD0 the EXIF readers take (provenance.exif); every entry of an EXIF, GPS or Interoperability
# sub-IFD is theirs too. IPTC (33723), Photoshop's resources (34377) and a C2PA store are read from the file
# itself, and nothing here reads an ICC profile or Photoshop's layers (37724, often over 8 MiB).
READ_TAGS = frozenset({700, 0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B})


def oversize_read(chk: TiffCheck) -> list[tuple[int, int]]:
    """(tag, bytes) of the entries without_oversize leaves out that a metadata reader here would have read."""
    return [(tag, n) for tag, _, n, sub in chk.oversize if sub or tag in READ_TAGS]


def oversize_said(chk: TiffCheck, read_only: bool = False) -> str | None:
    """What without_oversize leaves out, in words, or None. read_only: only the entries a metadata reader here
    would have read (oversize_read)."""
    left = oversize_read(chk) if read_only else [(tag, n) for tag, _, n, _ in chk.oversize]
    if not left:
        return None
    names = ", ".join(f"tag {tag} of {n} bytes" for tag, n in left[:3])
    more = f" and {len(left) - 3} more" if len(left) > 3 else ""
    return f"TIFF metadata tags over {DECODE_MAX_METADATA_CHUNK} bytes not handed to the decoder: {names}{more}"


def _bad(r: TiffCheck, problem: str) -> TiffCheck:
    r.ok = False
    r.problem = problem
    return r
