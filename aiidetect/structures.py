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

from .limits import AVIF_MAX_CHUNK_LOOKUPS, AVIF_MAX_SAMPLES, HEIF_MAX_ENTRIES

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


def webp_chunks(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(offset, size, fourcc) of each top-level chunk of a WebP's RIFF, in order, as libwebp's demuxer walks
    them: from byte 12 to the end its RIFF size gives (or the file's, if that is sooner), each chunk padded to
    an even size. Headers only, and no cap: each walk counts what it is given against limits.WEBP_MAX_CHUNKS."""
    if len(data) < 12:
        return
    pos, end = 12, min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    while pos + 8 <= end:
        fourcc, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        yield pos, size, fourcc
        pos += 8 + size + (size & 1)


# HEIF and AVIF (ISO BMFF, ISO/IEC 23008-12): the item structure of the top-level `meta` box, as libheif and
# libavif read it before decoding, for the decoder's check of a derived image (a `grid` of tiles) against what
# it costs (decode.heif_problem).


class HeifLayoutError(ValueError):
    """Item tables of more than HEIF_MAX_ENTRIES entries in all."""


class _Entries:
    """The entries walked in one `meta` box, all its tables together. A cap per table bounded nothing: an
    `iloc` whose offsets and lengths take 0 bytes (as the format allows) lists 65,535 extents an item in no
    bytes of the file, and a `meta` box holds as many `iref` or `iinf` boxes as its bytes allow."""

    def __init__(self) -> None:
        self.left = HEIF_MAX_ENTRIES

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise HeifLayoutError(f"more than {HEIF_MAX_ENTRIES} table entries")

    def boxes(self, data: bytes, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        for box in bmff_boxes(data, pos, end):
            self.spend(1)
            yield box


def bmff_boxes(data: bytes, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in data[pos:end], up to HEIF_MAX_ENTRIES; a box whose size
    field is broken ends the list (the readers stop there too). Sizes only: no payload is copied."""
    end = min(end, len(data))
    for _ in range(HEIF_MAX_ENTRIES):
        if pos + 8 > end:
            return
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            if pos + 16 > end:
                return
            size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head:
            return
        yield kind, pos + head, min(end, pos + size)
        pos += size
    raise HeifLayoutError(f"more than {HEIF_MAX_ENTRIES} boxes in one list")


class HeifLayout:
    """What a HEIF's `meta` box says of its items: the primary item, each item's type, data extents
    (construction method 0: file offsets; 1: offsets into `idat`), `dimg` references (a derived image's
    inputs, repeats kept, in order) and image spatial extents (`ispe`: the size each coded image declares,
    which libheif holds its decoder to)."""

    def __init__(self) -> None:
        self.primary: int | None = None
        self.types: dict[int, bytes] = {}
        self.extents: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        self.dimg: dict[int, list[int]] = {}
        self.sizes: dict[int, tuple[int, int]] = {}
        # auxiliary images (`auxl` references: the item, to the images it belongs to) and their `auxC` types
        self.auxl: dict[int, list[int]] = {}
        self.aux_types: dict[int, bytes] = {}
        self.idat: tuple[int, int] | None = None
        # (reference type, offset of that type's four bytes in the file, from item) of each `iref` entry
        self.refs: list[tuple[bytes, int, int]] = []
        # (type, payload start, end) of each property box in `ipco`, in order (`ipma` numbers them from 1)
        self.props: list[tuple[bytes, int, int]] = []

    def item_length(self, data: bytes, item: int) -> int:
        """The bytes an item's data extents hold (a length of 0: to the end of the file, or of `idat`)."""
        method, extents = self.extents.get(item, (None, []))
        total = 0
        for start, length in extents:
            span = None if length else self._span(data, method, start, 0)
            total += max(0, span[1] - span[0]) if span else length
        return total

    def item_span(self, data: bytes, item: int) -> tuple[int, int] | None:
        """(start, end) in the file of an item's first data extent, or None where it cannot be found."""
        method, extents = self.extents.get(item, (None, []))
        return self._span(data, method, *extents[0]) if extents else None

    def _span(self, data: bytes, method: int | None, start: int, length: int) -> tuple[int, int] | None:
        end = len(data)                         # a length of 0: to the end of the file, or of `idat`
        if method == 1:
            if self.idat is None:
                return None
            start, end = start + self.idat[0], self.idat[1]
        elif method != 0:
            return None
        return start, min(end, start + length) if length else end

    def item_data(self, data: bytes, item: int, limit: int = 64) -> bytes | None:
        """The first `limit` bytes of an item's data (a grid's header), or None where they cannot be found."""
        span = self.item_span(data, item)
        return None if span is None else data[span[0]:min(span[1], span[0] + limit)]


def _top_box(data: bytes, kind: bytes) -> tuple[int, int] | None:
    """(payload start, end) of the file's first top-level box of type `kind`, or None."""
    return next(((start, end) for k, start, end in bmff_boxes(data, 0, len(data)) if k == kind), None)


def _uint(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(data[pos:pos + size], "big") if size else 0


def heif_layout(data: bytes) -> HeifLayout | None:
    """The item structure of a HEIF/AVIF file's top-level `meta` box, or None without one. Raises
    struct.error or IndexError on a truncated table, HeifLayoutError on one over HEIF_MAX_ENTRIES."""
    box = _top_box(data, b"meta")
    if box is None:
        return None
    start, end = box
    lay = HeifLayout()
    entries = _Entries()
    props: list[tuple[bytes, int, int]] = []
    assoc: dict[int, list[int]] = {}
    for kind, p, e in entries.boxes(data, start + 4, end):
        version = data[p] if p < e else 0
        if kind == b"pitm":
            lay.primary = struct.unpack_from(">H" if version == 0 else ">I", data, p + 4)[0]
        elif kind == b"iinf":
            for ikind, ip, _ in entries.boxes(data, p + (6 if version == 0 else 8), e):
                iv = data[ip]
                if ikind == b"infe" and iv >= 2:
                    item, at = (struct.unpack_from(">H", data, ip + 4)[0], ip + 8) if iv == 2 else \
                        (struct.unpack_from(">I", data, ip + 4)[0], ip + 10)
                    lay.types[item] = data[at:at + 4]
        elif kind == b"iloc":
            off_size, len_size = data[p + 4] >> 4, data[p + 4] & 15
            base_size, idx_size = data[p + 5] >> 4, (data[p + 5] & 15) if version in (1, 2) else 0
            wide = version == 2
            count = struct.unpack_from(">I" if wide else ">H", data, p + 6)[0]
            pos = p + 6 + (4 if wide else 2)
            entries.spend(count)
            for _ in range(count):
                item = _uint(data, pos, 4 if wide else 2)
                pos += 4 if wide else 2
                method = 0
                if version in (1, 2):
                    method = data[pos + 1] & 15
                    pos += 2
                pos += 2                                    # data reference index
                base = _uint(data, pos, base_size)
                pos += base_size
                n = struct.unpack_from(">H", data, pos)[0]
                pos += 2
                entries.spend(n)
                extents = []
                for _ in range(n):
                    pos += idx_size
                    off = _uint(data, pos, off_size)
                    length = _uint(data, pos + off_size, len_size)
                    pos += off_size + len_size
                    extents.append((base + off, length))
                if pos > e:
                    raise IndexError("iloc past its box")
                lay.extents[item] = (method, extents)
        elif kind == b"iref":
            wide = version != 0
            box = p + 4                                 # each entry's box: its type four bytes in
            for rkind, rp, re_ in entries.boxes(data, p + 4, e):
                size = 4 if wide else 2
                src = _uint(data, rp, size)
                count = struct.unpack_from(">H", data, rp + size)[0]
                entries.spend(count)
                if rp + size + 2 + count * size > re_:
                    raise IndexError("iref past its box")
                lay.refs.append((rkind, box + 4, src))
                box = re_                               # the next box, where one follows within the list
                if rkind in (b"dimg", b"auxl"):
                    at = rp + size + 2
                    (lay.dimg if rkind == b"dimg" else lay.auxl).setdefault(src, []).extend(
                        _uint(data, at + i * size, size) for i in range(count))
        elif kind == b"iprp":
            for pkind, pp, pe in entries.boxes(data, p, e):
                if pkind == b"ipco":
                    props.extend(entries.boxes(data, pp, pe))
                elif pkind == b"ipma":
                    pv, flags = data[pp], data[pp + 3]
                    count = struct.unpack_from(">I", data, pp + 4)[0]
                    entries.spend(count)
                    pos = pp + 8
                    for _ in range(count):
                        item = _uint(data, pos, 2 if pv < 1 else 4)
                        pos += 2 if pv < 1 else 4
                        n = data[pos]
                        pos += 1
                        entries.spend(n)
                        idx = []
                        for _ in range(n):
                            if flags & 1:
                                idx.append(struct.unpack_from(">H", data, pos)[0] & 0x7FFF)
                                pos += 2
                            else:
                                idx.append(data[pos] & 0x7F)
                                pos += 1
                        if pos > pe:
                            raise IndexError("ipma past its box")
                        assoc[item] = idx
        elif kind == b"idat":
            lay.idat = (p, e)
    for item, idx in assoc.items():
        for i in idx:
            if not 1 <= i <= len(props):
                continue
            kind, p, e = props[i - 1]
            if kind == b"ispe" and p + 12 <= e and item not in lay.sizes:
                lay.sizes[item] = struct.unpack_from(">II", data, p + 4)
            elif kind == b"auxC" and item not in lay.aux_types:
                lay.aux_types[item] = data[p + 4:min(e, p + 132)].split(b"\0", 1)[0]
    lay.props = props
    return lay


class HeifRead:
    """One read of a HEIF/AVIF's item tables (heif_layout), bound to the bytes it was read from: a read is
    parsed once and handed to each check of those bytes (decode.heif_problem, metastrip.strip_oversize_heif,
    decode.open_image), where parsed once per check a hostile file at the entry cap cost its 11-27 ms two to
    four times a decode. heif_read_of never lets it stand for other bytes (a stale or a neighbour's read passed
    a grid bomb unchecked). `lean`: these bytes hold no Exif or XMP item over the readers' cap (set only by
    metastrip.strip_oversize_heif); `problem`: decode.heif_problem's answer, once worked out."""

    __slots__ = ("data", "layout", "error", "lean", "problem")

    def __init__(self, data: bytes, layout: HeifLayout | None, error: Exception | None) -> None:
        self.data, self.layout, self.error = data, layout, error
        self.lean = False
        self.problem: tuple | None = None


def heif_layout_read(data: bytes) -> HeifRead:
    """heif_layout's answer kept as a value: the layout, or the HeifLayoutError, struct.error or IndexError it
    raised."""
    try:
        return HeifRead(data, heif_layout(data), None)
    except (HeifLayoutError, struct.error, IndexError) as exc:
        return HeifRead(data, None, exc)


def heif_read_of(data: bytes, read: HeifRead | None) -> HeifRead:
    """`read` where it was read from these very bytes (the same object), else a read of them."""
    return read if read is not None and read.data is data else heif_layout_read(data)


class BmffTrack:
    """What a track of an AVIF image sequence (`avis`) says of itself, as libavif reads it: its id and the
    size its header declares (`tkhd`: the size Pillow gives), the track it is auxiliary to (a `tref`/`auxl`:
    an alpha track), the size its first `av01` sample entry declares, and where its first sample lies (the first
    chunk's offset, `stco`/`co64`, and the first sample size, `stsz`: libavif refuses a chunk of no samples, so
    the first chunk holds it), the frame libavif hands dav1d first whatever the sizes say."""

    def __init__(self) -> None:
        self.id = 0
        self.size: tuple[int, int] = (0, 0)
        self.aux_for: int | None = None
        self.entry: tuple[int, int] | None = None
        self.chunk: int | None = None
        self.constant: int | None = None        # `stsz`: every sample's size, or
        self.first_size: int | None = None      # the first sample's, from its table
        self.chunks = 0                         # entries of its tables, all its boxes of each together
        self.sizes = 0
        self.runs: list[tuple[int, int]] = []   # `stsc`: (first chunk, samples per chunk)

    def table_problem(self) -> str | None:
        """Why libavif must not list this track's samples (limits.AVIF_MAX_SAMPLES, AVIF_MAX_CHUNK_LOOKUPS),
        or None. Its samples are counted as libavif lists them: each chunk the samples of the last run starting
        at or before it."""
        if max(self.chunks, self.sizes) > AVIF_MAX_SAMPLES:
            return f"a sample table of {max(self.chunks, self.sizes)} entries, over {AVIF_MAX_SAMPLES}"
        if self.chunks * len(self.runs) > AVIF_MAX_CHUNK_LOOKUPS:
            return (f"{self.chunks} chunks and {len(self.runs)} stsc entries, over {AVIF_MAX_CHUNK_LOOKUPS} "
                    f"lookups")
        samples = 0
        for i, (first, per) in enumerate(self.runs):
            upto = self.runs[i + 1][0] if i + 1 < len(self.runs) else self.chunks + 1
            samples += per * max(0, min(upto, self.chunks + 1) - max(first, 1))
        if samples > AVIF_MAX_SAMPLES:
            return f"{samples} samples, over {AVIF_MAX_SAMPLES}"
        return None

    @property
    def first_sample(self) -> tuple[int, int] | None:
        """(start, end) in the file of the first sample, or None where the tables do not say."""
        size = self.constant or self.first_size
        if self.chunk is None or size is None:
            return None
        return self.chunk, self.chunk + size


def bmff_tracks(data: bytes) -> list[BmffTrack]:
    """The tracks of a HEIF/AVIF file's top-level `moov` box ([] without one), each read as far as its tables
    go. Boxes walked count against HEIF_MAX_ENTRIES, as in the `meta` box (HeifLayoutError over it); of the sample
    tables only the first entries are read, and the `stsc` runs (counted as entries): a track whose tables
    declare more than libavif should list (BmffTrack.table_problem) is a HeifLayoutError too. A track whose box is
    cut short is kept as far as it was read."""
    box = _top_box(data, b"moov")
    if box is None:
        return []
    start, end = box
    entries = _Entries()
    tracks: list[BmffTrack] = []
    for kind, p, e in entries.boxes(data, start, end):
        if kind == b"trak":
            track = BmffTrack()
            tracks.append(track)
            try:
                _read_track(data, p, e, track, entries)
            except (struct.error, IndexError):
                pass                            # a box cut short: the track as far as it was read
            problem = track.table_problem()
            if problem:
                raise HeifLayoutError(f"track {track.id}: {problem}")
    return tracks


# The boxes from a track down to its sample table, in order: only these are entered (a box nested in itself
# again and again is not followed down).
_TRACK_CONTAINERS = (b"mdia", b"minf", b"stbl")


def _read_track(data: bytes, pos: int, end: int, track: BmffTrack, entries: _Entries, depth: int = 0) -> None:
    for kind, p, e in entries.boxes(data, pos, end):
        version = data[p] if p < e else 0
        if depth < len(_TRACK_CONTAINERS) and kind == _TRACK_CONTAINERS[depth]:
            _read_track(data, p, e, track, entries, depth + 1)
        elif kind == b"tkhd":
            track.id = struct.unpack_from(">I", data, p + (20 if version == 1 else 12))[0]
            w, h = struct.unpack_from(">II", data, e - 8)           # 16.16 fixed point, the box's last fields
            track.size = (w >> 16, h >> 16)
        elif kind == b"tref":
            for rkind, rp, re_ in entries.boxes(data, p, e):
                if rkind == b"auxl" and rp + 4 <= re_:
                    # libavif keeps the last `auxl`'s first id, 0 being none: a decoy first must not hide it
                    track.aux_for = struct.unpack_from(">I", data, rp)[0] or None
        elif kind == b"stsd":
            for skind, sp, se in entries.boxes(data, p + 8, e):
                if skind == b"av01" and track.entry is None and sp + 28 <= se:
                    track.entry = struct.unpack_from(">HH", data, sp + 24)     # VisualSampleEntry width, height
        elif kind == b"stsz":
            # libavif appends the tables of a second box to the first's, and the last constant size wins over them
            size, count = struct.unpack_from(">II", data, p + 4)
            if size:
                track.constant = size
            else:
                track.sizes += count
                if count and track.first_size is None:
                    track.first_size = struct.unpack_from(">I", data, p + 12)[0]
        elif kind in (b"stco", b"co64"):
            count = struct.unpack_from(">I", data, p + 4)[0]
            track.chunks += count
            if count and track.chunk is None:
                track.chunk = struct.unpack_from(">I" if kind == b"stco" else ">Q", data, p + 8)[0]
        elif kind == b"stsc":
            count = struct.unpack_from(">I", data, p + 4)[0]
            if len(track.runs) + count > AVIF_MAX_SAMPLES:
                raise HeifLayoutError(f"track {track.id}: {len(track.runs) + count} stsc entries, over "
                                      f"{AVIF_MAX_SAMPLES}")
            entries.spend(count)                # the runs kept, of all the tracks together
            n = max(0, min(count, (e - p - 8) // 12))
            track.runs += [(first, per) for first, per, _ in struct.iter_unpack(">III", data[p + 8:p + 8 + 12 * n])]


# OBUs looked through for an AV1 image's sequence header: writers put it first.
AV1_MAX_OBUS = 64


class _Bits:
    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.bit, self.end = data, pos * 8, end * 8

    def read(self, n: int) -> int:
        if self.bit + n > self.end:
            raise IndexError("AV1 sequence header past its OBU")
        v = 0
        for _ in range(n):
            v = (v << 1) | ((self.data[self.bit >> 3] >> (7 - (self.bit & 7))) & 1)
            self.bit += 1
        return v

    def uvlc(self) -> int:
        zeros = 0
        while not self.read(1):
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return self.read(zeros) + (1 << zeros) - 1


def _leb128(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= end:
            raise IndexError("OBU size past its data")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            break
    return value, pos


def av1_frame_size(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(max frame width, max frame height) of the AV1 sequence header among the first AV1_MAX_OBUS OBUs of
    data[pos:end] (an `av01` item's data: what dav1d decodes, whatever its `ispe` says), or None without one
    there (IndexError where the OBUs run past `end`; HeifLayoutError where more OBUs come before it: dav1d would
    read on to it). AV1 spec 5.3 and 5.5."""
    for _ in range(AV1_MAX_OBUS):
        if pos >= end:
            return None
        head = data[pos]
        kind, ext, has_size = (head >> 3) & 15, (head >> 2) & 1, (head >> 1) & 1
        pos += 1 + ext
        size, pos = _leb128(data, pos, end) if has_size else (end - pos, pos)
        if kind == 1:
            return _sequence_header_size(_Bits(data, pos, min(end, pos + size)))
        pos += size
    if pos < end:
        raise HeifLayoutError(f"no AV1 sequence header in its first {AV1_MAX_OBUS} OBUs")
    return None


def _sequence_header_size(b: _Bits) -> tuple[int, int]:
    b.read(3)                                           # seq_profile
    b.read(1)                                           # still_picture
    if b.read(1):                                       # reduced_still_picture_header
        b.read(5)
    else:
        decoder_model, delay_bits = 0, 0
        if b.read(1):                                   # timing_info_present_flag
            b.read(32)
            b.read(32)
            if b.read(1):                               # equal_picture_interval
                b.uvlc()
            decoder_model = b.read(1)
            if decoder_model:
                delay_bits = b.read(5) + 1
                b.read(32)
                b.read(10)
        display_delay = b.read(1)
        for _ in range(b.read(5) + 1):                  # operating points
            b.read(12)
            if b.read(5) > 7:
                b.read(1)
            if decoder_model and b.read(1):
                b.read(2 * delay_bits + 1)
            if display_delay and b.read(1):
                b.read(4)
    wbits, hbits = b.read(4) + 1, b.read(4) + 1
    return b.read(wbits) + 1, b.read(hbits) + 1
