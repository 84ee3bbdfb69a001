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
    ifd = _ifd([(0x0001, 7, 4, b"0210"), (0x0004, 2, 8, b"FINE   \x00"), (0x0084, 5, 4, bytes(range(32)))],
               ">", data_at=8)
    return b"Nikon\x00\x02\x10\x00\x00" + inner + ifd


def headerless_ifd() -> bytes:
    # Offsets counted from the note's first byte: one of the bases makers use.
    return _ifd([(0x0001, 3, 4, b"\x01\x00\x02\x00\x03\x00\x04\x00"), (0x0006, 2, 12, b"Canon EOS R\x00"),
                 (0x0010, 4, 1, b"\x00\x00\x00\x80")], "<", data_at=0)


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
    qvc = b"QVC\x00\x00\x00" + _ifd([(0x0001, 3, 1, b"\x00\x01")], ">", data_at=6)
    assert c(qvc, "PENTAX Corporation", order=">").status == "own"
    assert c(qvc, "CASIO COMPUTER CO.,LTD.", order=">").status == "own"
    assert c(qvc, "NIKON", order=">").status == "other-maker"
    fuji = b"FUJIFILM" + struct.pack("<I", 12) + _ifd([(0x0000, 7, 4, b"0130")], "<", data_at=12)
    assert c(fuji, "FUJIFILM").status == "own"
    assert c(b"Apple iOS\x00\x00\x01MM" + random_bytes(64), "Apple").status == "unrecognised"
    # text and firmware records are accepted only where the Make's formats are not all known here
    assert c(b"Rv0207;Sf6C84;Rg76;Bg60", "RICOH").status == "own"
    assert c(b"Rv0207;Sf6C84;Rg76;Bg60", "Canon").status == "unrecognised"


@FAST
@given(st.binary(max_size=2048), st.sampled_from([None, "", "Canon", "NIKON", "FUJIFILM", "Acme", "PENTAX"]),
       st.integers(min_value=-10, max_value=10_000), st.sampled_from(["<", ">"]))
def test_classify_never_raises_on_any_bytes(note, make, at, order):
    m = makernote.classify(note, make, note + note, at, order)
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
