"""The maker-note weight (exif.camera 1.6 nats) needs a note that is plausibly the named maker's own:
any bytes can be pasted into MakerNote, so random bytes, a blank block or another maker's note under
this Make earn nothing (docs/provenance.md, "The readers", Maker notes)."""
from __future__ import annotations

import io
import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from aiidetect.provenance import analyze, makernote
from aiidetect.testing.hostile import tiff_ifd

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ifd(entries: list[tuple[int, int, int, bytes]], e: str, data_at: int) -> bytes:
    """An IFD of (tag, type, count, value bytes); values over 4 bytes are laid after it, their
    offsets counted from data_at (where the IFD's first byte lands in the offsets' frame)."""
    head = struct.pack(e + "H", len(entries))
    tail_at = data_at + 2 + 12 * len(entries) + 4
    body, tail = b"", b""
    for tag, typ, count, value in entries:
        if len(value) > 4:
            body += struct.pack(e + "HHII", tag, typ, count, tail_at + len(tail))
            tail += value
        else:
            body += struct.pack(e + "HHI", tag, typ, count) + value.ljust(4, b"\x00")
    return head + body + b"\x00\x00\x00\x00" + tail


def nikon_type3() -> bytes:
    inner = b"MM\x00*" + struct.pack(">I", 8)
    ifd = _ifd([(0x0001, 7, 4, b"0210"), (0x0002, 3, 2, b"\x00\x00\x00\x64"), (0x0004, 2, 8, b"FINE   \x00"),
                (0x0084, 5, 4, bytes(range(32)))], ">", data_at=8)
    return b"Nikon\x00\x02\x10\x00\x00" + inner + ifd


def headerless_ifd() -> bytes:
    # Offsets counted from the note's first byte: one of the bases makers use.
    return _ifd([(0x0001, 3, 4, b"\x01\x00\x02\x00\x03\x00\x04\x00"), (0x0006, 2, 12, b"Canon EOS R\x00"),
                 (0x0007, 2, 8, b"1.0.0.0\x00"), (0x0010, 4, 1, b"\x00\x00\x00\x80")], "<", data_at=0)


# Four inline SHORT entries: a note of a few entries (makernote.MIN_ENTRIES is 3).
FOUR_SHORTS = [(0x0001, 3, 1, b"\x00\x01"), (0x0002, 3, 1, b"\x00\x02"), (0x0003, 3, 1, b"\x00\x03"),
               (0x0004, 3, 1, b"\x00\x04")]


def random_bytes(n: int = 512, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def _jpeg(make: str, note: bytes | None, model: str = "X100") -> bytes:
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = make, model
    sub = ex.get_ifd(0x8769)
    sub[0x829A], sub[0x829D] = IFDRational(1, 250), IFDRational(28, 10)
    if note is not None:
        sub[0x927C] = note
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (90, 60, 30)).save(buf, "JPEG", exif=ex.tobytes())
    return buf.getvalue()


def _camera(make: str, note: bytes | None):
    rep = analyze(_jpeg(make, note), "t.jpg", options={"watermark": "never"})
    cam = [e for e in rep.evidence if e.id == "exif.camera"]
    assert len(cam) == 1
    return cam[0], rep


def test_a_nikon_type3_note_under_nikon_earns_the_maker_note_weight():
    cam, rep = _camera("NIKON CORPORATION", nikon_type3())
    assert cam.strength == 1.6 and "with maker note" in cam.detail
    assert rep.facts["exif"]["makernote"] == {"status": "own", "format": "Nikon type 3", "bytes": len(nikon_type3()),
                                              "maker": "Nikon"}


def test_a_headerless_ifd_under_canon_earns_the_maker_note_weight():
    cam, rep = _camera("Canon", headerless_ifd())
    assert cam.strength == 1.6
    assert rep.facts["exif"]["makernote"]["format"] == "headerless IFD"


def test_random_bytes_in_maker_note_earn_nothing_more_than_the_exposure_settings():
    cam, rep = _camera("Canon", random_bytes())
    assert cam.strength == 1.2 and cam.data["fields"]
    assert "maker note is not counted" in cam.detail
    assert rep.facts["exif"]["makernote"]["status"] == "unrecognised"
    assert not any(e.id == "metadata.conflict" for e in rep.evidence)


def test_another_makers_note_earns_nothing_and_is_a_conflict():
    cam, rep = _camera("Canon", nikon_type3())
    assert cam.strength == 1.2 and "maker note is not counted" in cam.detail
    note = rep.facts["exif"]["makernote"]
    assert note["status"] == "other-maker" and note["maker"] == "Nikon"
    (conflict,) = [e for e in rep.evidence if e.id == "metadata.conflict"]
    assert conflict.direction == "neutral"
    assert "EXIF Make 'Canon'" not in conflict.detail   # quoted as the other conflicts are, no repr
    assert "EXIF Make Canon (JPEG APP1) but its maker note is in Nikon's format (Nikon type 3)" in conflict.detail


def test_a_header_whose_structure_does_not_parse_earns_nothing():
    cam, rep = _camera("OLYMPUS IMAGING CORP.", b"OLYMPUS\x00II\x03\x00" + random_bytes(300))
    assert cam.strength == 1.2
    assert rep.facts["exif"]["makernote"]["status"] == "unrecognised"


def test_a_bare_ifd_under_a_maker_that_always_writes_a_header_earns_nothing():
    cam, _ = _camera("FUJIFILM", headerless_ifd())
    assert cam.strength == 1.2


def test_unknown_maker_ifd_counts_and_blank_or_random_notes_do_not():
    # A maker this table does not list: a parsing IFD counts (most makers write one); blank or random
    # bytes never do, whatever the Make.
    assert _camera("Acme Optical", headerless_ifd())[0].strength == 1.6
    assert _camera("Acme Optical", bytes(264))[0].strength == 1.2
    assert _camera("Acme Optical", random_bytes())[0].strength == 1.2


def test_classify_formats_directly():
    c = makernote.classify
    assert c(nikon_type3(), "NIKON").status == "own"
    assert c(nikon_type3(), "Sony").status == "other-maker"
    # a rebadge/OEM pair is not a conflict: Casio's "QVC" notes in Pentax Optio photos
    qvc = b"QVC\x00\x00\x00" + tiff_ifd(FOUR_SHORTS, ">")
    assert c(qvc, "PENTAX Corporation", order=">").status == "own"
    assert c(qvc, "CASIO COMPUTER CO.,LTD.", order=">").status == "own"
    assert c(qvc, "NIKON", order=">").status == "other-maker"
    fuji = b"FUJIFILM" + struct.pack("<I", 12) + tiff_ifd([(0x0000, 7, 4, b"0130")] + FOUR_SHORTS[1:])
    assert c(fuji, "FUJIFILM").status == "own"
    assert c(b"Apple iOS\x00\x00\x01MM" + random_bytes(64), "Apple").status == "unrecognised"
    # text and firmware records are accepted only where the Make's formats are not all known here
    assert c(b"Rv0207;Sf6C84;Rg76;Bg60", "RICOH").status == "own"
    assert c(b"Rv0207;Sf6C84;Rg76;Bg60", "Canon").status == "unrecognised"


@FAST
@given(st.binary(max_size=2048), st.sampled_from([None, "", "Canon", "NIKON", "FUJIFILM", "Acme", "PENTAX"]),
       st.sampled_from(["<", ">"]))
def test_classify_never_raises_on_any_bytes(note, make, order):
    m = makernote.classify(note, make, note + note, order)
    assert m.status in ("own", "unknown-maker", "other-maker", "unrecognised")


@FAST
@given(st.sampled_from([b"Nikon\x00\x02", b"Nikon\x00\x01", b"OLYMPUS\x00II", b"FUJIFILM", b"AOC\x00MM",
                        b"Apple iOS\x00\x00\x01MM", b"PENTAX \x00II", b"MM\x00*", b"II*\x00", b""]),
       st.binary(max_size=600))
def test_classify_never_raises_behind_a_known_header(prefix, rest):
    for make in ("NIKON", "Acme"):
        makernote.classify(prefix + rest, make)


@FAST
@given(st.binary(max_size=400))
def test_find_note_never_raises_on_any_exif_block(body):
    for head in (b"II*\x00", b"MM\x00*"):
        makernote.find_note(head + body)


def test_an_opaque_note_is_judged_on_its_first_bytes_only():
    # A TIFF file's note may be as large as the file (512 MB): a per-byte text scan of the whole of
    # it took 6 s per 100 MB, in a stage the per-file time budget cannot stop. Text, records and
    # randomness are judged on the first COMPRESS_BYTES, as the compression test always was.
    long_text = b"Rv0207;Sf6C84;" * (makernote.COMPRESS_BYTES // 14 + 10) + b"\x01\x02"
    assert makernote._opaque(long_text) == "text"
    assert makernote._opaque(bytes(makernote.COMPRESS_BYTES + 100)) == "blank"
    assert makernote._opaque(bytes(makernote.COMPRESS_BYTES) + b"\x07") == "binary records"


def test_a_google_pixel_hdr_plus_note_is_the_makes_own():
    # Pixel phones write "HDRP" + version + an encrypted, compressed record: it reads as random bytes,
    # so by its looks alone a genuine Pixel note counted nothing. Its header names the maker.
    pixel = b"HDRP\x03" + random_bytes(3000)
    assert makernote.classify(pixel, "Google").status == "own"
    assert _camera("Google", pixel)[0].strength == 1.6
    assert makernote.classify(pixel, "Canon").status == "other-maker"


def test_a_known_note_under_an_unlisted_make_names_the_rebadge_too():
    # A Make the OEM table does not list (a Contax built by Kyocera, a store brand built by Sanyo)
    # under a listed maker's header earns nothing, but the conflict must not tell the reader the
    # note was copied or the Make edited as if nothing else could explain it.
    cam, rep = _camera("Acme Optical", nikon_type3())
    assert cam.strength == 1.2
    (conflict,) = [e for e in rep.evidence if e.id == "metadata.conflict"]
    assert "a camera built by Nikon and sold under this name" in conflict.detail
    _, rep = _camera("Canon", nikon_type3())
    (conflict,) = [e for e in rep.evidence if e.id == "metadata.conflict"]
    assert "sold under this name" not in conflict.detail


# --- Structure, not offsets: genuine layouts whose offsets point elsewhere, and junk that is too small

LEICA_ENTRIES = [(0x0300, 3, 1, b"\x01\x00"), (0x0303, 2, 24, b"Summilux-M 1:1.4/50".ljust(24, b"\x00")),
                 (0x0304, 4, 1, b"\x05\x00\x00\x00"), (0x0305, 5, 1, bytes(8)), (0x0308, 5, 2, bytes(16))]
LEICA_HEADERS = {   # header -> the format name it is reported as (exiftool's documented Leica notes)
    b"LEICA\x00\x00\x00": "Leica (Digilux/M8 type)", b"LEICA0\x03\x00": "Leica (M9 type)",
    b"LEICA\x00\x02\xff": "Leica (S2/M Typ 240/246 type)", b"LEICA\x00\x02\x00": "Leica (M10/S type)",
    b"LEICA\x00\x05\x00": "Leica (X/T/Q/SL/CL type)", b"LEICA\x00\x09\x00": "Leica (X/T/Q/SL/CL type)",
    b"LEICA CAMERA AG\x00II": "Leica (D-Lux 7 type)"}


def test_every_leica_layout_is_leicas_own_wherever_its_offsets_point():
    # Leica counts value offsets from the TIFF header, the note, the IFD or (S2/M Typ 246) the file's
    # start; a note judged by where they point lost its camera weight whenever they left the block.
    for head, name in LEICA_HEADERS.items():
        for far_at in (0, len(head), 40_000, 1_000_000):
            note = head + _ifd(LEICA_ENTRIES, "<", data_at=far_at)
            for make in ("Leica Camera AG", "LEICA"):
                m = makernote.classify(note, make, note + bytes(2000))
                assert (m.status, m.format) == ("own", name), (head, far_at, make, m)
    assert makernote.classify(b"LEICA0\x03\x00" + _ifd(LEICA_ENTRIES, "<", 40_000), "Canon").status == "other-maker"


def test_a_leica_m9_note_moved_by_a_resave_keeps_the_camera_weight():
    # The values' offsets, counted from the TIFF header, point past the end of the (smaller) block
    # a re-save wrote: the note's entries still parse.
    cam, rep = _camera("Leica Camera AG", b"LEICA0\x03\x00" + _ifd(LEICA_ENTRIES, "<", data_at=40_000))
    assert cam.strength == 1.6, cam.detail
    assert rep.facts["exif"]["makernote"]["format"] == "Leica (M9 type)"


def test_a_canon_note_whose_offsets_an_editor_broke_keeps_the_camera_weight():
    note = _ifd([(0x0001, 3, 4, b"\x01\x00\x02\x00\x03\x00\x04\x00"), (0x0006, 2, 12, b"Canon EOS R\x00"),
                 (0x0007, 2, 8, b"1.0.0.0\x00"), (0x0010, 4, 1, b"\x00\x00\x00\x80")], "<", data_at=70_000)
    cam, rep = _camera("Canon", note)
    assert cam.strength == 1.6, cam.detail
    assert rep.facts["exif"]["makernote"] == {"status": "own", "format": "headerless IFD", "bytes": len(note)}


def test_a_one_entry_stub_under_canon_is_not_camera_evidence():
    stub = tiff_ifd(FOUR_SHORTS[:1])[:-4]      # 14 bytes: an entry count and one entry
    assert len(stub) == 14
    cam, rep = _camera("Canon", stub)
    assert cam.strength == 1.2
    assert rep.facts["exif"]["makernote"]["reason"] == "an IFD of 1 entry; a camera's note holds at least 3"
    assert "maker note is not counted (headerless IFD: an IFD of 1 entry" in cam.detail


def test_an_ifd_below_the_minimum_counts_nothing_behind_a_header_or_padded():
    two = FOUR_SHORTS[:2]
    assert makernote.classify(tiff_ifd(two), "Canon").status == "unrecognised"
    assert makernote.classify(tiff_ifd(FOUR_SHORTS[:3]), "Canon").status == "own"
    nikon = b"Nikon\x00\x02\x10\x00\x00MM\x00*" + struct.pack(">I", 8) + tiff_ifd(two, ">")
    assert makernote.classify(nikon, "NIKON").status == "unrecognised"
    olympus = b"OLYMPUS\x00II\x03\x00" + tiff_ifd(two)
    assert makernote.classify(olympus, "OLYMPUS IMAGING CORP.").status == "unrecognised"
    # Under a Make whose formats are not all known, padding the stub to look like firmware records
    # (zeros compress) must not get it through the opaque-bytes test.
    padded = tiff_ifd(two) + bytes(200)
    for make in ("EASTMAN KODAK COMPANY", "Acme Optical"):
        m = makernote.classify(padded, make)
        assert m.status == "unrecognised" and "an IFD of 2 entries" in m.reason, (make, m)


def test_values_that_no_block_could_hold_together_are_junk():
    # Each value fits the block on its own, but not all of them at once: the counts are invented.
    block_size = 3000
    entries = FOUR_SHORTS + [(0x0010 + i, 7, 1800, bytes(4)) for i in range(2)]
    note = tiff_ifd(entries)
    assert makernote.classify(note, "Canon", bytes(block_size)).status == "unrecognised"
    assert makernote.classify(note, "Canon", bytes(2 * 1800)).status == "own"


def _leica_trailer_jpeg(model: str, note: bytes, at_offset_shift: int = 0) -> bytes:
    """A JPEG as a Leica S2/M (Typ 240) writes it: the EXIF MakerNote entry's offset, counted from
    the TIFF header, points past the EXIF block to `note`, kept in a trailer after the image."""
    from aiidetect.provenance.tiffguard import ifd_entries
    from aiidetect.testing.hostile import with_jpeg_segments

    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Leica Camera AG", model
    sub = ex.get_ifd(0x8769)
    sub[0x829A], sub[0x829D] = IFDRational(1, 250), IFDRational(28, 10)
    sub[0x927C] = bytes(len(note))      # a placeholder of the note's size; its offset is moved below
    app1 = bytearray(ex.tobytes())
    tiff = memoryview(app1)[6:]
    e = "<" if bytes(tiff[:2]) == b"II" else ">"
    (exif_ifd,) = [struct.unpack_from(e + "I", tiff, at)[0] for tag, _, at in ifd_entries(bytes(tiff), e, 8)
                   if tag == 0x8769]
    (value_at,) = [at for tag, _, at in ifd_entries(bytes(tiff), e, exif_ifd) if tag == 0x927C]
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (90, 60, 30)).save(buf, "JPEG")
    body = with_jpeg_segments(buf.getvalue(), [(0xE1, bytes(app1))])
    tiff_at = 2 + 4 + 6                  # SOI, the APP1 marker and length, "Exif\0\0"
    struct.pack_into(e + "I", app1, 6 + value_at, len(body) - tiff_at + at_offset_shift)
    return with_jpeg_segments(buf.getvalue(), [(0xE1, bytes(app1))]) + note


def test_a_leica_note_in_a_jpeg_trailer_is_read_and_nothing_else_there_is():
    # exiftool's Leica6 layout: the note is outside the EXIF block, after the image's end.
    note = b"LEICA\x00\x02\xff" + _ifd(LEICA_ENTRIES, "<", data_at=300) + bytes(282)
    rep = analyze(_leica_trailer_jpeg("LEICA M (Typ 240)", note), "t.jpg", options={"watermark": "never"})
    (cam,) = [e for e in rep.evidence if e.id == "exif.camera"]
    assert cam.strength == 1.6, cam.detail
    assert rep.facts["exif"]["makernote"] == {
        "status": "own", "format": "Leica (S2/M Typ 240/246 type) (trailer after the image)", "bytes": len(note),
        "maker": "Leica"}
    # Only Leica's note is looked for there: anything else an entry points at past the block is no
    # camera's note.
    junk = tiff_ifd(FOUR_SHORTS) + bytes(100)
    rep = analyze(_leica_trailer_jpeg("LEICA M (Typ 240)", junk), "t.jpg", options={"watermark": "never"})
    assert [e.strength for e in rep.evidence if e.id == "exif.camera"] == [1.2]
    # The header must be where the offset points, as exiftool requires.
    note = b"LEICA\x00\x02\xff" + _ifd(LEICA_ENTRIES, "<", data_at=300)
    rep = analyze(_leica_trailer_jpeg("S2", note, at_offset_shift=1), "t.jpg", options={"watermark": "never"})
    assert [e.strength for e in rep.evidence if e.id == "exif.camera"] == [1.2]


# --- The trailer lookup: only for a JPEG's note that points past its block, and never a copy of the tail


class _Watched(bytes):
    """A file that records what is read of it: scans (find) and the longest slice taken."""

    def __new__(cls, data: bytes):
        self = super().__new__(cls, data)
        self.scans, self.longest = 0, 0
        return self

    def find(self, *args, **kwargs):
        self.scans += 1
        return super().find(*args, **kwargs)

    def __getitem__(self, key):
        out = super().__getitem__(key)
        if isinstance(key, slice):
            self.longest = max(self.longest, len(out))
        return out


def _exif_block(note: bytes | None) -> bytes:
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Leica Camera AG", "LEICA M (Typ 240)"
    sub = ex.get_ifd(0x8769)
    sub[0x829A] = IFDRational(1, 250)
    if note is not None:
        sub[0x927C] = note
    return ex.tobytes()[6:]


def _trailer_jpeg(note: bytes) -> tuple[bytes, bytes]:
    """(a JPEG whose EXIF note entry points past the block at `note`, appended after the image; the
    TIFF block), the entry's count and offset patched in as a Leica S2 or M (Typ 240) writes them."""
    from aiidetect.provenance.tiffguard import ifd_entries
    from aiidetect.testing.hostile import with_jpeg_segments

    tiff = bytearray(_exif_block(bytes(8)))
    e = "<" if tiff[:2] == b"II" else ">"
    (exif_ifd,) = [struct.unpack_from(e + "I", tiff, at)[0] for tag, _, at in ifd_entries(bytes(tiff), e, 8)
                   if tag == 0x8769]
    (value_at,) = [at for tag, _, at in ifd_entries(bytes(tiff), e, exif_ifd) if tag == 0x927C]
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (90, 60, 30)).save(buf, "JPEG")
    body_len = len(buf.getvalue()) + 4 + 6 + len(tiff)
    struct.pack_into(e + "II", tiff, value_at - 4, len(note), body_len - 12)
    return with_jpeg_segments(buf.getvalue(), [(0xE1, b"Exif\x00\x00" + bytes(tiff))]) + note, bytes(tiff)


def test_a_block_without_a_note_pointing_past_it_never_scans_the_file():
    from aiidetect.provenance.exif import read_exif

    for note in (None, b"LEICA\x00\x02\xff" + _ifd(LEICA_ENTRIES, "<", data_at=300)):
        tiff = _exif_block(note)
        file = _Watched(b"\xff\xd8" + bytes(1000) + tiff + bytes(1000))
        f = read_exif(tiff, "JPEG APP1", file)
        assert file.scans == 0 and (f.makernote is None) == (note is None), note


def test_a_trailer_note_is_read_from_a_jpeg_only_and_never_copied_whole():
    from aiidetect.provenance.exif import read_exif

    size = 2_000_000
    note = b"LEICA\x00\x02\xff" + _ifd(LEICA_ENTRIES, "<", data_at=300)
    data, tiff = _trailer_jpeg(note + bytes(size - len(note)))
    jpeg = _Watched(data)
    f = read_exif(tiff, "JPEG APP1", jpeg)
    assert (f.makernote.status, f.makernote.size) == ("own", size)
    assert jpeg.longest < 100_000, jpeg.longest      # the IFD is read, not the 2 MB behind it
    # A PNG's bytes after IEND are not read (docs/provenance.md): the same block in an eXIf chunk,
    # its note pointing past the chunk to a Leica note appended to the file, counts nothing there.
    png = _Watched(b"\x89PNG" + data[4:])
    f = read_exif(tiff, "PNG eXIf", png)
    assert f.makernote is None and png.scans == 0


# --- One entry loop: the maker-note check reads IFDs through the same bounded reader as the guard


def test_the_shared_ifd_reader_gives_each_entrys_type_as_it_stands():
    from aiidetect.provenance.tiffguard import ifd_entries, ifd_table

    ifd = tiff_ifd([(0x0001, 3, 1, b"\x00\x01"), (0x0002, 16, 1, bytes(4)), (0x0003, 7, 9, bytes(4))])
    assert list(ifd_table(ifd, "<", 0)) == [(1, 3, 1, 10), (2, 16, 1, 22), (3, 7, 9, 34)]
    assert [size for _, size, _ in ifd_entries(ifd, "<", 0)] == [2, 1, 9]   # type 16: one byte a value
    assert list(ifd_table(ifd, "<", 0, max_entries=1)) == [(1, 3, 1, 10)]
    assert list(ifd_table(ifd[:30], "<", 0)) == [(1, 3, 1, 10), (2, 16, 1, 22)]   # whole entries only
    assert list(ifd_table(ifd, "<", -2)) == [] and list(ifd_table(ifd, "<", len(ifd))) == []
    # the maker-note check refuses what the reader hands it with a type outside 1-13
    assert makernote.classify(tiff_ifd(FOUR_SHORTS), "Canon").status == "own"
    assert makernote.classify(tiff_ifd(FOUR_SHORTS[:3] + [(0x0009, 16, 1, bytes(4))]), "Canon").status == "unrecognised"


@FAST
@given(st.binary(max_size=400), st.integers(min_value=-8, max_value=500), st.sampled_from(["<", ">"]))
def test_the_shared_ifd_reader_never_raises(data, ifd, e):
    from aiidetect.provenance.tiffguard import ifd_table

    for _tag, typ, count, at in ifd_table(data, e, ifd):
        assert 0 <= typ < 65536 and at + 4 <= len(data)


# --- Real notes of three entries (exiftool's tag tables): the minimum must not take their weight

THREE_ENTRY_NOTES = {   # (Make, note) -> the status it must get
    # JVC's IFD notes: 0x0001 (a version, "almost always 2"), CPUVersions, Quality
    ("JVC", "own"): b"JVC " + _ifd([(0x0001, 3, 1, b"\x02\x00"), (0x0002, 2, 12, b"0001 0002\x00\x00\x00"),
                                    (0x0003, 3, 1, b"\x02\x00")], "<", data_at=4),
    # Sony Ericsson phones: PreviewImageStart, PreviewImageLength, MakerNoteVersion
    ("Sony Ericsson", "own"): b"SEMC MS\x00\x00\x00\x00\x00MM\x00*" + struct.pack(">I", 8) + _ifd(
        [(0x0201, 4, 1, b"\x00\x00\x10\x00"), (0x0202, 4, 1, b"\x00\x00\x20\x00"), (0x2000, 7, 4, b"\x01\x00\x00\x00")],
        ">", data_at=8),
    # a Nintendo 3DS JPEG: 0x1000 and 0x1001 (binary), CameraInfo
    ("Nintendo", "unknown-maker"): _ifd([(0x1000, 7, 28, bytes(28)), (0x1001, 7, 8, bytes(8)),
                                         (0x1101, 7, 52, b"3DS1" + bytes(48))], "<", data_at=0),
}


def test_real_notes_of_three_entries_keep_the_camera_weight():
    for (make, status), note in THREE_ENTRY_NOTES.items():
        m = makernote.classify(note, make, note + bytes(1000))
        assert m.status == status, (make, m)
        cam, _ = _camera(make, note)
        assert cam.strength == 1.6, (make, cam.detail)


def test_the_exif_block_of_a_trailer_note_is_sought_near_the_files_start_only(monkeypatch):
    # A crafted JPEG can push its EXIF blocks hundreds of MB into the file behind junk segments;
    # each block whose note points past it would cost a scan of all of that (four blocks, 10 s
    # at 512 MB). A camera writes the block right after SOI.
    from aiidetect.provenance.exif import read_exif
    from aiidetect.testing.hostile import jpeg_segment

    monkeypatch.setattr(makernote, "TRAILER_SEARCH", 4096)
    note = b"LEICA\x00\x02\xff" + _ifd(LEICA_ENTRIES, "<", data_at=300)
    data, tiff = _trailer_jpeg(note)
    for junk, status in ((1000, "own"), (5000, None)):
        pad = jpeg_segment(0xE5, bytes(junk))
        # the entry's offset counts from the TIFF header, which the padding moves too
        f = read_exif(tiff, "JPEG APP1", data[:2] + pad + data[2:])
        assert (f.makernote.status if f.makernote else None) == status, junk


# --- Zero padding after the real entries (exiftool: "some manufacturers pad with null entries")

PAD = (0x0000, 0, 0, b"")


def test_a_note_padded_with_null_entries_after_its_real_ones_keeps_the_camera_weight():
    note = tiff_ifd(FOUR_SHORTS + [PAD] * 3)
    cam, rep = _camera("Canon", note)
    assert cam.strength == 1.6, cam.detail
    assert rep.facts["exif"]["makernote"] == {"status": "own", "format": "headerless IFD", "bytes": len(note)}
    nikon = b"Nikon\x00\x02\x10\x00\x00MM\x00*" + struct.pack(">I", 8) + tiff_ifd(FOUR_SHORTS[:3] + [PAD], ">")
    assert makernote.classify(nikon, "NIKON").status == "own"


def test_padding_is_no_entry_and_never_sits_among_real_ones():
    c = makernote.classify
    # padding does not count toward the minimum: two real entries stay a stub
    m = c(tiff_ifd(FOUR_SHORTS[:2] + [PAD] * 4), "Canon")
    assert m.status == "unrecognised" and "an IFD of 2 entries" in m.reason, m
    # a type-0 entry between real entries, or a note of padding only, is no camera's IFD
    assert c(tiff_ifd(FOUR_SHORTS[:2] + [PAD] + FOUR_SHORTS[2:]), "Canon").status == "unrecognised"
    assert c(tiff_ifd([PAD] * 4), "Canon").status == "unrecognised"
    # type 0 with a count, or a type EXIF 3.0 / BigTIFF / the DNG SDK added, is not padding either
    for typ, count in ((0, 1), (14, 1), (15, 1), (16, 1), (17, 1), (18, 1), (129, 4)):
        m = c(tiff_ifd(FOUR_SHORTS + [(0x0009, typ, count, bytes(4))]), "Canon")
        assert m.status == "unrecognised", (typ, m)
