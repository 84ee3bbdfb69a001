"""A TIFF's BYTE, ASCII or UNDEFINED entry over limits.DECODE_MAX_METADATA_CHUNK is read by no reader: Pillow read
such an entry whole at open and held it two or three times (a 100 MB BYTE tag took `scan -d metadata` 580 MB, an
XMP tag 785 MB), though no reader here reads a block that large. The record says which entry was left out."""
from __future__ import annotations

import json
import struct

import numpy as np
from PIL import Image

from aiidetect import decode
from aiidetect.limits import DECODE_MAX_METADATA_CHUNK
from aiidetect.provenance import analyze, containers, exif, tiffguard
from aiidetect.testing.hostile import tiff_file, tiff_with_page
from tests.conftest import run_cli_in_process

BIG = DECODE_MAX_METADATA_CHUNK + 1


def _pillow_reads(monkeypatch) -> list[int]:
    """The sizes of the tag values Pillow's IFD reader reads out of the file."""
    from PIL import ImageFile

    seen: list[int] = []
    real = ImageFile._safe_read
    monkeypatch.setattr(ImageFile, "_safe_read", lambda fp, size: seen.append(size) or real(fp, size))
    return seen


def test_pillow_reads_no_tag_over_the_cap_when_a_tiff_is_opened(monkeypatch):
    seen = _pillow_reads(monkeypatch)
    data = tiff_file(8, 1, 1, extra=[(50000, 1, b"\x07" * BIG), (50001, 7, b"k" * 100)])
    with decode.open_image(data) as im:
        im.load()
        assert 50000 not in im.tag_v2 and im.tag_v2[50001] == b"k" * 100   # the small one is read as before
        assert im.size == (8, 6)
    assert seen and max(seen) < DECODE_MAX_METADATA_CHUNK, seen


def test_a_tag_at_the_cap_is_still_read():
    data = tiff_file(8, 1, 1, extra=[(700, 1, b" " * DECODE_MAX_METADATA_CHUNK)])
    assert not tiffguard.check_tiff(data).oversize
    with decode.open_image(data) as im:
        assert len(im.tag_v2[700]) == DECODE_MAX_METADATA_CHUNK


def test_the_copy_changes_only_the_type_of_the_entries_left_out():
    data = tiff_with_page(tiff_file(8, 1, 1, extra=[(700, 2, b"a" * BIG)]), extra=[(50000, 7, b"b" * BIG)])
    chk = tiffguard.check_tiff(data)
    assert [(t, n) for t, _, n, _ in chk.oversize] == [(700, BIG), (50000, BIG)]    # the second page's too
    lean = tiffguard.without_oversize(data, chk)
    assert len(lean) == len(data)
    diff = np.flatnonzero(np.frombuffer(data, np.uint8) != np.frombuffer(lean, np.uint8)).tolist()
    assert diff == [at for _, at, _, _ in chk.oversize]    # the low byte of each type field (little-endian)
    assert all(struct.unpack_from("<H", data, at)[0] in (2, 7) and lean[at:at + 2] == b"\x00\x00"
               for _, at, _, _ in chk.oversize)


def test_the_metadata_walk_and_the_exif_readers_say_what_they_left_out(monkeypatch):
    data = tiff_file(8, 1, 1, extra=[(700, 1, b" " * BIG), (0x010F, 2, b"Canon\x00")])
    b = containers.walk(data)
    assert not b.xmp, "the XMP tag is not sliced out of the file"
    assert any(f"not read: tag 700 of {BIG} bytes" in e for e in b.errors), b.errors
    seen = _pillow_reads(monkeypatch)
    f = exif.read_exif(data, "TIFF header", data)
    assert f.make == "Canon" and f.refused      # a camera's tag may be the one left out: "no camera" not claimed
    assert max(seen) < DECODE_MAX_METADATA_CHUNK, seen
    rep = analyze(data, "x", options={"watermark": "never"})
    assert any("tag 700" in e for e in rep.errors) and "metadata.no-camera" not in [e.id for e in rep.evidence]


def test_the_scan_record_says_the_pixels_were_read_without_the_tag(tmp_path):
    f = tmp_path / "big-tag.tif"
    f.write_bytes(tiff_file(8, 1, 1, extra=[(34675, 7, b"\x00" * BIG)]))
    r = run_cli_in_process("scan", str(f), "-d", "metadata", "--no-cache", "-f", "json")
    rec = json.loads(r.stdout)[0]
    assert rec["error"] is None and rec["width"] == 8
    assert f"tag 34675 of {BIG} bytes" in rec["image"]["pixels_without_metadata"]
    assert Image.open(f).size == (8, 6)     # the file on disk is untouched


def test_a_tag_no_metadata_reader_reads_is_no_gap_in_the_metadata():
    # An ICC profile or Photoshop's layers (37724, often over 8 MiB in a layered TIFF) are read by nothing here:
    # left out of Pillow's copy (the scan's record says so, above), but not "metadata could not be fully read".
    data = tiff_file(8, 1, 1, extra=[(37724, 7, b"\x00" * BIG)])
    with decode.open_image(data) as im:
        assert 37724 not in im.tag_v2
    b = containers.walk(data)
    assert not b.errors and b.width == 8
    assert not exif.read_exif(data, "TIFF header", data).refused


def test_jpeg_tables_over_the_cap_are_refused_not_withheld_the_decoder_needs_them():
    # Retyped like metadata, a JPEG-compressed page lost its tables: libtiff's "decoder error -2" on a file
    # viewers show. They are refused in words instead; the EXIF readers still read the file's metadata.
    import io

    import pytest
    from PIL import features

    if not features.check("libtiff"):
        pytest.skip("Pillow without libtiff writes no JPEG-compressed TIFF")
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 40)).save(buf, "TIFF", compression="jpeg")
    t = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", t, 4)[0]
    for i in range(struct.unpack_from("<H", t, ifd)[0]):
        e = ifd + 2 + 12 * i
        tag, _, count, off = struct.unpack_from("<HHII", t, e)
        if tag == 347:      # its tables, then comments past the cap: what a JPEG decoder reads
            com = b"\xff\xfe" + struct.pack(">H", 65002) + b"c" * 65000
            tables = t[off:off + count - 2] + com * (DECODE_MAX_METADATA_CHUNK // len(com) + 1) + b"\xff\xd9"
            struct.pack_into("<II", t, e + 4, len(tables), len(t))
            t += tables
    data = bytes(t)
    assert data.count(b"\xff\xfe") > 100
    with Image.open(io.BytesIO(data)) as im:
        assert im.convert("RGB").getpixel((0, 0))[0] > 150     # what a viewer shows
    with pytest.raises(decode.DecodeFailure, match=r"JPEG tables \(tag 347\) of \d+ bytes"):
        decode.decode_bytes(data)
    assert not exif.read_exif(data, "TIFF header", data).refused
