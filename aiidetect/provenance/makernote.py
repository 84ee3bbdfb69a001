"""Is an EXIF MakerNote plausibly the named maker's own?

A maker note is the camera firmware's private block inside EXIF. Its presence
used to earn camera evidence on its own, but MakerNote is an UNDEFINED field:
any tool can paste any bytes there, and a generator pipeline or a forger that
fills it with junk, or with a note lifted from another brand's photo, got the
same weight as a camera. Here the note has to look like what its maker writes:

- a known header (Nikon's "Nikon\\0" + TIFF header, "OLYMPUS\\0", "FUJIFILM",
  "Panasonic\\0", "SONY DSC ", "AOC\\0", "Apple iOS\\0", ...) naming the maker,
  with the IFD behind it parsing, and that maker the EXIF Make's (or one known to
  build that maker's cameras, such as Casio for some Pentax, Panasonic for Leica);
- a headerless IFD (Canon, most Nikon Coolpix, Minolta, Samsung, Sony ARW, DJI
  ...) that parses: at least MIN_ENTRIES entries, every entry of a TIFF type (null entries
  after the real ones are padding, counted toward nothing), and values that fit, together, in the
  block they must live in;
- for a Make whose formats are not all known here (Kodak, Ricoh's text notes,
  trail cameras, rebadged compacts...), a note that is neither blank nor looks
  like random bytes (printable text, or data that compresses as firmware records
  do): refusing those would take evidence from every photographer whose camera
  this table does not list. A Make that is listed must carry its own format.

A structurally valid IFD under a Make this module does not know counts as the
maker's own: most makers write IFDs, and the parse alone is what random bytes
essentially never pass (each entry's type is one of 13 values in 65,536).

The judgement is on structure, never on where value offsets point: makers count
them from the TIFF header, the note, the IFD or each entry (Leica alone uses three
of these, and its M Monochrom Typ 246 notes absolute file offsets), and an editor
that moves the note on a re-save (Photoshop, Lightroom) leaves them pointing at
the old place. Following them took the camera weight from honest notes, while a
forger's junk never needed offsets to pass. What stops junk is the entry count
(MIN_ENTRIES) and the types. What no structure check can catch is a whole
genuine note copied with the rest of a photo's EXIF; docs/provenance.md says so.

Parsing is flat and bounded: one IFD per note (never followed into sub-IFDs),
MAX_ENTRIES entries, two byte orders, and the text and compression tests read
at most COMPRESS_BYTES. Never raises on any bytes.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .tiffguard import TYPE_SIZE, ifd_entries, ifd_table

MAX_ENTRIES = 1000          # a note's IFD; camera notes hold ~10-300 entries
# Fewer entries than this is not a camera's note. The smallest genuine notes in the dev set hold 5
# (a Nikon E900's type 1 note, a Minolta DiMAGE 5's), every other one 7 to 73; exiftool's tag tables
# document real notes of three: JVC's IFD notes (a version, CPUVersions, Quality), Sony Ericsson
# phones' (a preview's start and length, a version), a Nintendo 3DS's JPEG (two binary records and
# CameraInfo). The one- and two-entry stubs a tool or forger pastes (one entry, 14 bytes) are refused.
MIN_ENTRIES = 3
COMPRESS_BYTES = 65536      # read by the randomness test
# The TIFF 6.0 types (BYTE ... IFD) are the only ones a maker note's entries hold. Kept after EXIF 3.0
# added UTF-8 (129) and BigTIFF LONG8/SLONG8/IFD8 (16-18): no maker note format exiftool documents
# uses them, and its own scan for a maker note's IFD refuses any type outside 1-13; 14 (Unicode) and
# 15 (complex) appear only in the DNG SDK. Each type let in is a chance more for random bytes to parse.
_LAST_TYPE = 13
MIN_OPAQUE = 4              # shorter opaque notes tell nothing
_LEICA_TRAILER = b"LEICA\x00"   # the header a Leica JPEG trailer note starts with
# What classify reads of a note with a header: the header and an IFD of MAX_ENTRIES entries.
TRAILER_READ = 32 + 2 + 12 * MAX_ENTRIES
# Where a trailer note's EXIF block is looked for: the file's first 16 MiB. A camera writes the block
# right after SOI; a crafted file that pushes its blocks deep behind junk segments would otherwise
# cost a scan of the whole file for each of them (0.3 s per 60 MB, four blocks, uninterruptible).
TRAILER_SEARCH = 16 << 20

# Lower-case substring of EXIF Make -> maker (first match; "konica minolta" is Minolta).
_MAKES = (
    ("nikon", "Nikon"), ("olympus", "Olympus"), ("om digital", "Olympus"), ("fujifilm", "Fujifilm"),
    ("fuji photo", "Fujifilm"), ("panasonic", "Panasonic"), ("leica", "Leica"), ("hasselblad", "Hasselblad"),
    ("sony", "Sony"), ("pentax", "Pentax"), ("asahi", "Pentax"), ("ricoh", "Ricoh"), ("apple", "Apple"),
    ("samsung", "Samsung"), ("canon", "Canon"), ("casio", "Casio"), ("minolta", "Minolta"), ("konica", "Konica"),
    ("kodak", "Kodak"), ("jk imaging", "Kodak"), ("epson", "Epson"), ("agfa", "Agfa"), ("sanyo", "Sanyo"),
    ("sigma", "Sigma"), ("foveon", "Sigma"), ("kyocera", "Kyocera"), ("reconyx", "Reconyx"), ("jvc", "JVC"),
    ("victor", "JVC"), ("motorola", "Motorola"), ("general imaging", "GE"), ("hewlett-packard", "HP"),
    ("concord", "Concord"), ("google", "Google"),
)
# Makers whose cameras carry another maker's note format (OEM builds, rebadges, successors).
_ALSO = {"Pentax": {"Casio", "Ricoh"}, "Ricoh": {"Pentax"}, "Samsung": {"Pentax"}, "Leica": {"Panasonic", "Fujifilm"},
         "Hasselblad": {"Sony"}, "Minolta": {"Konica", "Olympus"}, "Konica": {"Minolta"}, "GE": {"Fujifilm"},
         "Kodak": {"Pentax"}, "HP": {"Pentax"}, "Concord": {"Casio"}}
# Makers all of whose notes are one of the formats below: anything else under their Make is not theirs.
_STRICT = {"Nikon", "Olympus", "Fujifilm", "Panasonic", "Apple", "Canon", "Epson", "Agfa", "Sigma", "Casio",
           "Kyocera", "Sanyo", "Leica", "Sony", "Samsung", "Pentax", "Hasselblad"}
# Of those, the ones that always write a header: a bare IFD under their Make is not theirs.
_HEADER_ONLY = {"Olympus", "Fujifilm", "Panasonic", "Apple", "Epson", "Agfa", "Sigma", "Kyocera", "Sanyo"}

# (prefix, maker, format name, layout). Layouts: ("ifd", at, order_at) an IFD at `at` (byte order
# from two bytes at order_at, else the EXIF block's); ("tiff", at) a TIFF header at `at`; ("fuji",)
# little-endian, IFD offset at 8; ("blob",) a binary or text format known by its header alone.
_HEADERS = (
    (b"Nikon\x00\x02", "Nikon", "Nikon type 3", ("tiff", 10)),
    (b"Nikon\x00\x01", "Nikon", "Nikon type 1", ("ifd", 8, None)),
    (b"OLYMPUS\x00", "Olympus", "Olympus", ("ifd", 12, 8)),
    (b"OM SYSTEM\x00", "Olympus", "OM System", ("ifd", 16, 12)),
    (b"OLYMP\x00", "Olympus", "Olympus (old)", ("ifd", 8, None)),
    (b"EPSON\x00", "Epson", "Epson", ("ifd", 8, None)),
    (b"AGFA \x00", "Agfa", "Agfa", ("ifd", 8, None)),
    (b"MINOL\x00", "Minolta", "Minolta (MINOL)", ("ifd", 8, None)),
    (b"FUJIFILM", "Fujifilm", "Fujifilm", ("fuji",)),
    (b"GENERALE", "GE", "GE (Fujifilm format)", ("fuji",)),
    (b"Panasonic\x00", "Panasonic", "Panasonic", ("ifd", 12, None)),
    # Leica, in every header exiftool documents; the IFD's offsets differ between them (TIFF header,
    # note, IFD start, absolute file position) and are not followed (module docstring).
    (b"LEICA CAMERA AG\x00", "Leica", "Leica (D-Lux 7 type)", ("ifd", 18, None)),
    (b"LEICA\x00\x00\x00", "Leica", "Leica (Digilux/M8 type)", ("ifd", 8, None)),
    (b"LEICA\x00\x02\xff", "Leica", "Leica (S2/M Typ 240/246 type)", ("ifd", 8, None)),
    (b"LEICA\x00\x02\x00", "Leica", "Leica (M10/S type)", ("ifd", 8, None)),
    (b"LEICA0", "Leica", "Leica (M9 type)", ("ifd", 8, None)),
    (b"LEICA\x00", "Leica", "Leica (X/T/Q/SL/CL type)", ("ifd", 8, None)),
    (b"LEICA", "Leica", "Leica", ("ifd", 8, None)),
    (b"SONY DSC ", "Sony", "Sony", ("ifd", 12, None)),
    (b"SONY CAM ", "Sony", "Sony", ("ifd", 12, None)),
    (b"SONY MOBILE", "Sony", "Sony", ("ifd", 12, None)),
    (b"\x00\x00SONY PIC\x00", "Sony", "Sony", ("ifd", 12, None)),
    (b"SONY PIC\x00", "Sony", "Sony PIC", ("blob",)),
    (b"SONY PI\x00", "Sony", "Sony (Olympus format)", ("ifd", 12, None)),
    (b"PREMI\x00", "Sony", "Sony (Olympus format)", ("ifd", 8, None)),
    (b"SEMC MS\x00", "Sony", "Sony Ericsson", ("ifd", 20, 12)),
    (b"VHAB     \x00", "Hasselblad", "Hasselblad (Sony format)", ("ifd", 12, None)),
    (b"AOC\x00", "Pentax", "Pentax (AOC)", ("ifd", 6, 4)),
    (b"PENTAX \x00", "Pentax", "Pentax", ("ifd", 10, 8)),
    (b"RICOH\x00", "Ricoh", "Ricoh (Pentax format)", ("ifd", 8, 6)),
    (b"Ricoh", "Ricoh", "Ricoh", ("ifd", 8, None)),
    (b"RICOH", "Ricoh", "Ricoh", ("ifd", 8, None)),
    (b"QVC\x00", "Casio", "Casio type 2", ("ifd", 6, None)),
    (b"DCI\x00", "Concord", "Concord (Casio format)", ("ifd", 6, None)),
    (b"Apple iOS\x00", "Apple", "Apple", ("ifd", 14, 12)),
    (b"SANYO\x00", "Sanyo", "Sanyo", ("ifd", 8, None)),
    (b"SIGMA\x00", "Sigma", "Sigma", ("ifd", 10, None)),
    (b"FOVEON\x00", "Sigma", "Sigma (Foveon)", ("ifd", 10, None)),
    (b"KYOCERA", "Kyocera", "Kyocera", ("ifd", 22, None)),
    (b"JVC ", "JVC", "JVC", ("ifd", 4, None)),
    (b"MOT\x00", "Motorola", "Motorola", ("ifd", 8, None)),
    (b"KDK", "Kodak", "Kodak (KDK)", ("blob",)),
    (b"RECONYXUF\x00", "Reconyx", "Reconyx UltraFire", ("blob",)),
    (b"RECONYXH2\x00", "Reconyx", "Reconyx HyperFire 2", ("blob",)),
    (b"STMN", "Samsung", "Samsung STMN", ("blob",)),
    (b"Hewlett-Packard", "HP", "HP", ("blob",)),
    # Pixel phones: an encrypted, compressed record that reads as random bytes, known by its header only.
    (b"HDRP\x02", "Google", "Google HDR+", ("blob",)),
    (b"HDRP\x03", "Google", "Google HDR+", ("blob",)),
)
# Headers too short to tell a maker apart from chance: they confirm the Make's own note only.
_OWN_ONLY = (
    (b"VER:", "JVC", "JVC text"), (b"KC", "Konica", "Konica"), (b"MLY0", "Minolta", "Minolta (MLY0)"),
    (b"+M+M+M+M", "Minolta", "Minolta (+M+M)"), (b"Rv", "Ricoh", "Ricoh text"), (b"Rev", "Ricoh", "Ricoh text"),
    (b"\x01\xf1", "Reconyx", "Reconyx HyperFire"), (b"CAMER\x00", "Minolta", "Minolta (CAMER)"),
)

OWN, UNKNOWN_MAKER, OTHER_MAKER, UNRECOGNISED = "own", "unknown-maker", "other-maker", "unrecognised"


@dataclass
class MakerNote:
    size: int
    status: str                 # own | unknown-maker (both count) | other-maker | unrecognised
    format: str                 # what the bytes were recognised as ("Nikon type 3", "IFD", "text", ...)
    maker: str | None = None    # the maker the format belongs to, when the bytes name one
    reason: str = ""

    @property
    def counts(self) -> bool:
        return self.status in (OWN, UNKNOWN_MAKER)

    def to_dict(self) -> dict:
        d = {"status": self.status, "format": self.format, "bytes": self.size, "maker": self.maker,
             "reason": self.reason}
        return {k: v for k, v in d.items() if v not in (None, "")}


def maker_of(make: str | None) -> str | None:
    m = (make or "").lower()
    return next((name for key, name in _MAKES if key in m), None)


def find_note(tiff: bytes) -> bytes | None:
    """The note's bytes from IFD0 -> EXIF IFD -> 0x927C, or None (also for a note outside the block:
    find_trailer_note)."""
    where = _note_where(tiff)
    if where is None:
        return None
    off, size = where
    if off + size > len(tiff):
        return None     # not in the block: junk, or a Leica trailer (find_trailer_note)
    return tiff[off:off + size]


def find_trailer_note(block: bytes, file: bytes) -> tuple[bytes, int] | None:
    """A Leica S2, M (Typ 240) or S (Typ 006) JPEG keeps its maker note in a trailer after the image:
    the EXIF entry's offset, counted from the TIFF header as usual, points past the EXIF block to
    it. (the note's first TRAILER_READ bytes, its declared size) when the bytes there start
    with Leica's header as exiftool requires; None otherwise (anything else outside the block is no
    camera's note). block: the EXIF block as found in `file`, the JPEG it came from.

    The file's first TRAILER_SEARCH bytes are searched for the block only once its note is known to
    point past it, and of the note only what classify reads is copied: its declared size may be the
    whole file."""
    where = _note_where(block)
    if where is None or where[0] < len(block):
        return None
    off, size = where
    at = file.find(block, 0, TRAILER_SEARCH + len(block))
    if at < 0 or at + off + size > len(file) or not file.startswith(_LEICA_TRAILER, at + off):
        return None
    return bytes(file[at + off:at + off + min(size, TRAILER_READ)]), size


def _note_where(tiff: bytes) -> tuple[int, int] | None:
    """(offset of the note in the TIFF block's coordinates, its size), or None."""
    try:
        if tiff[:4] not in (b"II*\x00", b"MM\x00*"):
            return None
        e = "<" if tiff[:2] == b"II" else ">"
        exif = _entry(tiff, e, struct.unpack_from(e + "I", tiff, 4)[0], 0x8769)
        if exif is None:
            return None
        note = _entry(tiff, e, exif[2], 0x927C)
        if note is None:
            return None
        size, at = note[0], note[1]
        return (at, size) if size <= 4 else (struct.unpack_from(e + "I", tiff, at)[0], size)
    except struct.error:
        return None


def _entry(tiff: bytes, e: str, ifd: int, want: int) -> tuple[int, int, int] | None:
    """(byte size of the value, position of its value field, the value read as a LONG) of tag `want`."""
    return next(((size, at, struct.unpack_from(e + "I", tiff, at)[0])
                 for tag, size, at in ifd_entries(tiff, e, ifd) if tag == want), None)


def classify(note: bytes, make: str | None, block: bytes | None = None, order: str = "<") -> MakerNote:
    """note: the MakerNote bytes; make: EXIF Make; block: the TIFF block holding the note (None: the
    note alone; its size bounds what the note's values can hold), order: the block's byte order."""
    try:
        note = bytes(note)
        return _classify(note, make, len(note) if block is None else len(block), order)
    except (struct.error, ValueError, IndexError, OverflowError) as exc:   # belt and braces: bounded reads above
        return MakerNote(len(note), UNRECOGNISED, "unparsed", reason=f"{type(exc).__name__}")


def _classify(note: bytes, make: str | None, room: int, order: str) -> MakerNote:
    own = maker_of(make)
    allowed = {own} | _ALSO.get(own, set()) if own else set()
    n = len(note)
    for prefix, maker, name, layout in _HEADERS:
        if not note.startswith(prefix):
            continue
        entries = _layout_entries(note, layout, room, order)
        if entries == 0:
            return MakerNote(n, UNRECOGNISED, name, maker, f"{maker} header, but the structure behind it does not "
                             "parse")
        if entries < MIN_ENTRIES:
            return MakerNote(n, UNRECOGNISED, name, maker, _too_few(entries))
        if maker in allowed:
            return MakerNote(n, OWN, name, maker)
        return MakerNote(n, OTHER_MAKER, name, maker, f"{maker}'s format, not that of the Make")
    for prefix, maker, name in _OWN_ONLY:
        if note.startswith(prefix) and maker in allowed:
            return MakerNote(n, OWN, name, maker)
    tiff_at = 8 if note[:4] in (b"II*\x00", b"MM\x00*") else 0
    # Both byte orders for a bare IFD: a note keeps its camera's order when a tool rewrites the
    # EXIF around it in the other (a Canon note in little-endian inside a big-endian block).
    orders = (("<" if note[:2] == b"II" else ">"),) if tiff_at else (order, "<" if order == ">" else ">")
    entries = max(_ifd_entries(note, tiff_at, e, room) for e in orders)
    fmt = "TIFF-headed IFD" if tiff_at else "headerless IFD"
    if 0 < entries < MIN_ENTRIES:
        # Refused whatever the Make: left to the opaque-bytes test, a stub padded past 64 bytes would
        # pass as firmware records under a Make whose formats are not all known.
        return MakerNote(n, UNRECOGNISED, fmt, reason=_too_few(entries))
    if entries:
        if own in _HEADER_ONLY:
            return MakerNote(n, UNRECOGNISED, fmt, reason=f"{own} notes carry a {own} header; this one has none")
        return MakerNote(n, OWN if own else UNKNOWN_MAKER, fmt)
    if own in _STRICT:
        return MakerNote(n, UNRECOGNISED, "opaque", reason=f"not a {own} maker note format")
    kind = _opaque(note)
    if kind in ("text", "binary records"):
        return MakerNote(n, OWN if own else UNKNOWN_MAKER, kind)
    return MakerNote(n, UNRECOGNISED, kind, reason={
        "blank": "every byte the same", "random": "looks like random bytes (does not compress)",
        "short": "too short to tell from random bytes"}[kind])


def _too_few(entries: int) -> str:
    return (f"an IFD of {entries} entr{'y' if entries == 1 else 'ies'}; a camera's note holds at least "
            f"{MIN_ENTRIES}")


def _layout_entries(note: bytes, layout: tuple, room: int, order: str) -> int:
    """Entries of the IFD a header's layout puts behind it, 0 when it does not parse; a format not
    parsed here (blob) is known by its header alone and passes."""
    kind = layout[0]
    if kind == "blob":
        return MAX_ENTRIES
    if kind == "fuji":
        return _ifd_entries(note, struct.unpack_from("<I", note, 8)[0], "<", room) if len(note) >= 12 else 0
    if kind == "tiff":
        t = layout[1]
        head = note[t:t + 4]
        if head not in (b"II*\x00", b"MM\x00*"):
            return 0
        e = "<" if head[:2] == b"II" else ">"
        return _ifd_entries(note, t + struct.unpack_from(e + "I", note, t + 4)[0], e, room)
    start, order_at = layout[1], layout[2]
    if order_at is not None:
        mark = note[order_at:order_at + 2]
        order = {b"II": "<", b"MM": ">"}.get(mark, order)
    return max(_ifd_entries(note, start, order, room), _ifd_entries(note, start, "<" if order == ">" else ">", room))


def _ifd_entries(note: bytes, start: int, e: str, room: int) -> int:
    """How many real entries the IFD at note[start:] has when it parses, else 0: 1..MAX_ENTRIES
    entries, all inside the note, each of a TIFF type (1-13) except zero padding after the real
    ones (type 0, count 0, as exiftool accepts it), and the values too long for their entries no
    larger, together, than `room` (the TIFF block they must live in: a count no block could hold
    is junk).

    Where the value offsets point is not looked at (module docstring): an Olympus C-720 stores its
    note's values elsewhere in the block, Canon notes rewritten by editors declare a length shorter
    than their values (both in the dev set's real photos), Leica counts offsets from four different
    places, and a re-save that moves the note leaves them pointing at the old place."""
    if start < 0 or start + 2 > len(note):
        return 0
    n = struct.unpack_from(e + "H", note, start)[0]
    if not 1 <= n <= MAX_ENTRIES or start + 2 + 12 * n > len(note):
        return 0
    far = real = 0
    padded = False
    for _tag, typ, count, _at in ifd_table(note, e, start, MAX_ENTRIES):
        if typ == 0 and count == 0 and real:
            # Zero padding after the real entries: exiftool reads such notes ("some manufacturers
            # pad with null entries"), and refusing them took the camera weight from the photo.
            # Padding counts toward nothing, so it cannot help a stub past MIN_ENTRIES.
            padded = True
            continue
        if padded or not 1 <= typ <= _LAST_TYPE:
            return 0    # a real entry after padding, or no TIFF type: not an IFD a camera wrote
        size = count * TYPE_SIZE[typ]
        if size > 4:
            far += size
        real += 1
    return real if far <= room else 0


def _opaque(note: bytes) -> str:
    """What a note with no known structure looks like: blank, text, binary records, random or short.
    Text and records are judged on the first COMPRESS_BYTES: a TIFF file's note may be as large as
    the file, and a per-byte scan of all of it cost 6 s per 100 MB, which the time budget cannot stop."""
    if len(note) < MIN_OPAQUE:
        return "short"
    if note.count(note[:1]) == len(note):
        return "blank"
    head = note[:COMPRESS_BYTES]
    body = head.rstrip(b"\x00")
    if body and all(32 <= c < 127 or c in (9, 10, 13) for c in body):
        return "text"
    if len(note) < 64:
        return "short"
    # Firmware records (counters, tables, padding) compress; random or already-compressed bytes do not.
    return "binary records" if len(zlib.compress(head, 6)) <= 0.8 * len(head) else "random"
