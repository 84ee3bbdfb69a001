"""The metadata walkers stop where the decoder's structure checks do (one cap in limits.py for both), and
the per-file time budget is asked inside a long walk, not only between stages."""
from __future__ import annotations

import pytest

from aiidetect import limits, metastrip
from aiidetect.provenance import analyze, containers
from aiidetect.testing.hostile import jpeg_segment, jpeg_with_app1, png_chunk, png_with, with_jpeg_segments


def test_the_jpeg_metadata_walk_stops_at_the_decoders_segment_cap():
    # It walked up to 1,000,000 segments where the decoder refuses past 65,536: 999,000 empty APP5
    # segments (4 MB) took `meta` 2.2 s, and the walk had no reason to go on.
    data = with_jpeg_segments(jpeg_with_app1(b""), [(0xE5, b"")] * (limits.JPEG_MAX_SEGMENTS + 10))
    b = containers.walk(data)
    assert any(f"more than {limits.JPEG_MAX_SEGMENTS} segments" in e for e in b.errors), b.errors


def test_the_png_metadata_walk_and_the_strip_retry_stop_at_the_decoders_chunk_cap(monkeypatch):
    monkeypatch.setattr(containers, "PNG_MAX_CHUNKS", 50)
    monkeypatch.setattr(metastrip, "PNG_MAX_CHUNKS", 50)
    data = png_with([png_chunk(b"prIv", b"")] * 60)
    assert any("more than 50 chunks" in e for e in containers.walk(data).errors)
    # The retry without metadata walked 1,000,000 chunks of a file the decoder had refused for 100,000.
    assert metastrip.strip_metadata(data, "PNG") is None
    assert metastrip.strip_metadata(png_with([png_chunk(b"prIv", b"")] * 40), "PNG") is not None


def test_at_the_cap_the_walks_and_the_decoders_check_agree():
    # The same file, at the real caps: the decoder's pre-check, the metadata walk and the strip retry take
    # a file of exactly the cap whole and all refuse (or cut) one more. (It compared imported names.)
    from aiidetect.decode import structure_problem

    base = png_with([])
    n = containers.walk(base).chunks      # IHDR, the image's chunks, IEND
    for extra, over in ((0, False), (1, True)):
        data = png_with([png_chunk(b"prIv", b"")] * (limits.PNG_MAX_CHUNKS - n + extra))
        walked = containers.walk(data)
        assert (structure_problem(data, "PNG") is not None) is over
        assert any("more than" in e for e in walked.errors) is over, walked.errors[:3]
        assert (metastrip.strip_metadata(data, "PNG") is None) is over
    # A JPEG's pre-check counts its start of scan as a segment, and so does the strip retry.
    jpeg, pos, n = jpeg_with_app1(b""), 2, 0
    while jpeg[pos + 1] != 0xDA:     # a clean file: segment after segment up to its scan
        pos, n = pos + 2 + int.from_bytes(jpeg[pos + 2:pos + 4], "big"), n + 1
    for extra, over in ((0, False), (1, True)):
        data = with_jpeg_segments(jpeg, [(0xE5, b"")] * (limits.JPEG_MAX_SEGMENTS - n - 1 + extra))
        assert (structure_problem(data, "JPEG") is not None) is over
        assert (metastrip.strip_metadata(data, "JPEG") is None) is over


def test_a_spent_budget_stops_a_walk_inside_it_and_says_so(monkeypatch):
    monkeypatch.setattr(containers, "WALK_BUDGET_EVERY", 8)
    asked = []

    def time_left():
        asked.append(1)
        return False

    b = containers.walk(png_with([png_chunk(b"prIv", b"")] * 40), time_left)
    assert asked and b.timed_out
    assert any("time budget ran out after 8 chunks" in e for e in b.errors), b.errors
    jpeg = with_jpeg_segments(jpeg_with_app1(b""), [(0xE5, b"")] * 40)
    assert any("time budget ran out after 8 segments" in e for e in containers.walk(jpeg, time_left).errors)
    # Through analyze: the record names the cut and carries the timeout note.
    rep = analyze(jpeg, "x", options={"budget_s": 0.0, "watermark": "never"})
    assert any("time budget ran out after 8 segments" in e for e in rep.errors), rep.errors
    assert "metadata-timeout" in {e.id for e in rep.evidence}


def _camera_jpeg_with_before_dqt(filler: bytes) -> bytes:
    """A camera JPEG (standard tables) with `filler` put between its APP segments and its DQT."""
    import io

    from PIL import Image

    from aiidetect.testing.hostile import _noise

    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Canon", "Canon EOS R5"
    buf = io.BytesIO()
    _noise().save(buf, "JPEG", quality=85, exif=ex.tobytes())
    j = buf.getvalue()
    at = j.index(b"\xff\xdb")
    return j[:at] + filler + j[at:]


def test_fill_and_stray_bytes_do_not_count_as_segments_nor_hide_the_tables():
    # The decoder skips a run of 0xFF fill bytes, or bytes between segments, as libjpeg does, and counts
    # neither: the walk counted each as a segment (70 KB of 0xFF hid the DQT behind the segment cap, while
    # the file decoded), and gave up on 64 KB of junk. A forger kept the camera EXIF and hid the tables.
    from aiidetect.decode import decode_bytes, structure_problem

    segs = (b"\x00" + jpeg_segment(0xE5, b"")) * 40_000
    for filler in (b"\xff" * 70_000, b"\x00" * 70_000, segs):
        data = _camera_jpeg_with_before_dqt(filler)
        assert structure_problem(data, "JPEG") is None and decode_bytes(data)[0].size == (64, 48)
        b = containers.walk(data)
        assert b.dqt and not b.cut and not b.errors, b.errors
        ids = {e.id for e in analyze(data, "x", options={"watermark": "never"}).evidence}
        assert {"exif.camera", "structure.jpeg-tables"} <= ids, ids


def test_no_camera_is_not_said_of_exif_left_unread(monkeypatch):
    # "No camera metadata" (toward AI) is untrue of a file whose EXIF was not read: a walk cut short by
    # its cap or the time budget, an EXIF block refused for its length. The record says why in errors.
    import io

    from PIL import Image

    def ids(data, **opts):
        return {e.id for e in analyze(data, "x", options={"watermark": "never", **opts}).evidence}

    jpeg = with_jpeg_segments(jpeg_with_app1(b""), [(0xE5, b"")] * 40)
    assert "metadata.no-camera" in ids(jpeg)                       # read through: none there
    monkeypatch.setattr(containers, "WALK_BUDGET_EVERY", 8)
    assert "metadata.no-camera" not in ids(jpeg, budget_s=0.0)    # cut by the time budget
    monkeypatch.setattr(containers, "JPEG_MAX_SEGMENTS", 20)
    assert "metadata.no-camera" not in ids(jpeg)                  # cut by the segment cap
    monkeypatch.setattr(containers, "MAX_EXIF_BYTES", 100)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "WEBP", exif=b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 300)
    assert "metadata.no-camera" not in ids(buf.getvalue())        # EXIF refused from its length


def test_no_camera_is_not_said_when_exif_blocks_past_the_read_ones_were_skipped():
    # 17 EXIF blocks, only the first MAX_BLOCKS read: "no camera metadata" (toward AI) was claimed beside
    # "only the first 4 read", of a file whose fifth block named the camera.
    import io

    from PIL import Image

    from aiidetect.provenance import MAX_BLOCKS

    bare, cam = Image.Exif(), Image.Exif()
    bare[0x0131] = "Editor 1.0"
    cam[0x010F], cam[0x0110] = "Canon", "Canon EOS 5D"
    cam.get_ifd(0x8769).update({0x829A: (1, 125), 0x829D: (28, 10), 0x8827: 200})
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")

    def evidence(blocks):
        data = with_jpeg_segments(buf.getvalue(), [(0xE1, b.tobytes()) for b in blocks])
        return {e.id: e for e in analyze(data, "x", options={"watermark": "never"}).evidence}

    assert "metadata.no-camera" in evidence([bare] * MAX_BLOCKS)             # every block read: none there
    got = evidence([bare] * MAX_BLOCKS + [cam] + [bare] * 12)
    assert "metadata.no-camera" not in got
    assert f"17 EXIF blocks; only the first {MAX_BLOCKS} read" in got["metadata.malformed"].detail


def test_no_camera_is_not_said_of_an_exif_block_refused_for_a_cap():
    # A block whose IFD0 is over the walker's entry cap is not read (its camera tags may be there); it got
    # "no camera metadata" beside "EXIF structure not read". A block that is no TIFF structure holds none.
    from aiidetect.provenance.tiffguard import MAX_ENTRIES
    from aiidetect.testing.hostile import exif_many_entries

    def evidence(payload):
        return {e.id for e in analyze(jpeg_with_app1(b"Exif\x00\x00" + payload), "x",
                                      options={"watermark": "never"}).evidence}

    assert "metadata.no-camera" not in evidence(exif_many_entries(MAX_ENTRIES + 1))
    assert "metadata.no-camera" in evidence(exif_many_entries(3))
    assert "metadata.no-camera" in evidence(b"junk" * 10)


def test_a_webp_of_exactly_the_cap_is_walked_whole_and_one_over_it_is_said(monkeypatch):
    # The walk said "more than N chunks" of a WebP of exactly N (and its C2PA store went unread). Past the cap
    # the decoder refuses the file too (decode.webp_chunk_problem: libwebp's demuxer keeps every frame's record).
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "WEBP", exif=b"MM\x00*\x00\x00\x00\x08\x00\x00")
    data = buf.getvalue()
    n = containers.walk(data).chunks
    monkeypatch.setattr(containers, "WEBP_MAX_CHUNKS", n)
    b = containers.walk(data)
    assert (b.chunks, b.errors, b.cut) == (n, [], False)
    monkeypatch.setattr(containers, "WEBP_MAX_CHUNKS", n - 1)
    b = containers.walk(data)
    assert b.cut and b.errors == [f"WebP: more than {n - 1} chunks (the decoder's cap too); the metadata after "
                                  "them was not read"]


def test_the_strip_retry_counts_segments_as_the_decoder_does(monkeypatch):
    # The retry without metadata counted each 0xFF fill byte as a segment and gave up on a stray byte, so a
    # file the decoder's pre-check passed, whose pixels Pillow refused over a metadata quirk, got no retry:
    # 70 KB of fill bytes (or 64 KB of junk) in front of the tables cost it its pixels.
    from aiidetect import decode

    real = decode._decode_bytes

    def quirky(data, *a, **kw):     # Pillow tripping over the EXIF, as it may over any APP segment
        if b"Exif\x00" in data:
            raise decode.DecodeFailure("decode-error", "a metadata quirk")
        return real(data, *a, **kw)

    monkeypatch.setattr(decode, "_decode_bytes", quirky)
    for filler in (b"\xff" * 70_000, b"\x00" * 70_000):
        data = _camera_jpeg_with_before_dqt(filler)
        assert decode.structure_problem(data, "JPEG") is None
        img, info = decode.decode_bytes(data)
        assert img.size == (64, 48) and info["metadata_skipped_for_pixels"] == "a metadata quirk"
    # Counted alike, the cap still holds: a file the pre-check refuses for its segments gets no stripped copy.
    many = with_jpeg_segments(jpeg_with_app1(b""), [(0xE5, b"")] * (limits.JPEG_MAX_SEGMENTS + 10))
    assert decode.structure_problem(many, "JPEG") and metastrip.strip_metadata(many, "JPEG") is None


def test_a_stuffed_zero_between_segments_does_not_hide_the_next_one():
    # 0xFF 0x00 between segments is junk to libjpeg, skipped to the next marker; the metadata walk read it as
    # a segment whose length was the next marker's bytes (0xFFDB: 65 KB), and so never saw the tables.
    data = _camera_jpeg_with_before_dqt(b"\xff\x00")
    from aiidetect.decode import decode_bytes

    assert decode_bytes(data)[0].size == (64, 48)
    b = containers.walk(data)
    assert b.dqt and not b.errors, b.errors


def test_megabytes_of_fill_or_stray_bytes_before_the_scan_are_refused_not_looped_over(monkeypatch):
    # Pillow's open steps over each fill or stray byte in Python before libjpeg sees the file (50 MB of 0xFF:
    # 37 s to scan one file), and the check counted none of them. Past the cap it refuses; after the first
    # scan (libjpeg's own, in C) they cost nothing and are not counted.
    import io

    import pytest
    from PIL import Image

    from aiidetect import decode

    monkeypatch.setattr(decode, "JPEG_MAX_GAP_BYTES", 10_000)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG", progressive=True)
    j = buf.getvalue()
    for junk in (b"\xff", b"\x00"):
        assert decode.structure_problem(j[:2] + junk * 10_000 + j[2:], "JPEG") is None
        for data in (j[:2] + junk * 10_001 + j[2:], j[:2] + junk * 10_001):    # a marker after the run, or none
            assert "fill or stray bytes" in decode.structure_problem(data, "JPEG")
        sos = j.index(b"\xff\xda")
        after_scan = j[:sos + 2] + j[sos + 2:-2].replace(b"\xff\xc4", junk * 20_000 + b"\xff\xc4", 1) + j[-2:]
        assert decode.structure_problem(after_scan, "JPEG") is None
    with pytest.raises(decode.DecodeFailure) as exc:
        decode.decode_bytes(j[:2] + b"\xff" * 10_001 + j[2:])
    assert exc.value.code == "decode-error" and "fill or stray bytes" in exc.value.message


def test_text_chunks_dropped_over_the_total_are_not_inflated_past_the_work_cap(monkeypatch):
    """The PNG walk kept 16 MiB of text but inflated every compressed chunk (up to 4 MiB each) before dropping
    it over that total: 5,000 zTXt chunks of a 4 KB zlib bomb each (20 MB, png_ztxt_bombs(5000)) took `scan -d
    metadata` 78 s, the time budget being asked every 4,096 chunks. Past PNG_MAX_TEXT_WORK_BYTES of text made,
    a chunk is not read (and the record says so), but a generator's first key after them still is."""
    from aiidetect.testing.hostile import a1111_png, png_ztxt_bombs

    monkeypatch.setattr(containers, "PNG_MAX_TEXT_WORK_BYTES", 1 << 20, raising=False)
    made = []
    real = containers._png_text
    monkeypatch.setattr(containers, "_png_text", lambda ctype, body: made.append(1) or real(ctype, body))
    bombs = png_ztxt_bombs(20, size=1 << 18)
    params = a1111_png()
    at = params.index(b"tEXtparameters") - 4
    data = bombs[:-12] + params[at:params.index(b"IEND") - 4] + bombs[-12:]
    b = containers.walk(data)
    assert len(made) == 4 + 1     # 1 MiB of text in 256 KiB chunks, then the parameters
    assert any("the rest not read" in e for e in b.errors), b.errors
    assert any(k == "parameters" for k, _, _ in b.texts)


@pytest.mark.parametrize("key", [b"junk", b"parameters"])
def test_broken_compressed_text_chunks_count_toward_the_work_cap(monkeypatch, key):
    """A zTXt whose zlib stream breaks after megabytes of text raised before its text was counted, and a
    generator's key that failed was never marked read: 500 such chunks (2 MB) took the walk 5 s, whatever the
    cap, keyed 'junk' or 'parameters'. Each broken chunk now costs the most one chunk makes."""
    import zlib

    from aiidetect.testing.hostile import png_chunk, png_with

    monkeypatch.setattr(containers, "PNG_MAX_TEXT_WORK_BYTES", 1 << 20, raising=False)
    inflated = []
    real = containers._inflate
    monkeypatch.setattr(containers, "_inflate", lambda payload: inflated.append(1) or real(payload))
    co = zlib.compressobj(9)
    broken = key + b"\x00\x00" + co.compress(b"a" * (1 << 16)) + co.flush(zlib.Z_FULL_FLUSH) + b"\xff" * 16
    b = containers.walk(png_with([png_chunk(b"zTXt", broken)] * 50))
    # a generator's key: its first chunk and the last one the caps left (a decoy must not hide it), no more
    assert len(inflated) == (2 if key == b"parameters" else 1), len(inflated)
    assert any("the rest not read" in e for e in b.errors), b.errors


def test_a_decoy_generator_chunk_and_64_mib_of_junk_do_not_hide_the_settings_after_them(monkeypatch):
    """Only the first chunk of a generator's key was read past the caps: a `parameters` chunk holding a
    caption, then 64 MiB of junk text, hid the A1111 settings after them (no generator, no decisive item),
    the ones Pillow (the last of a key wins) and a UI's PNG Info show. The last of each key is read too."""
    from aiidetect.testing.hostile import png_ztxt_bombs

    settings = b"a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 64x48"
    monkeypatch.setattr(containers, "PNG_MAX_TEXT_WORK_BYTES", 8 << 20, raising=False)   # 64 MiB, scaled down
    bombs = png_ztxt_bombs(3)   # 12 MiB of text from 12 KB
    junk = bombs[33:bombs.index(b"IDAT") - 4]
    for ctype, body in ((b"tEXt", b"parameters\x00" + settings), (b"iTXt", b"parameters\x00\x00\x00\x00\x00" + settings)):
        data = png_with([png_chunk(b"tEXt", b"parameters\x00just a caption"), junk, png_chunk(ctype, body),
                         png_chunk(b"tEXt", b"Comment\x00after it")])
        rep = analyze(data, "x.png", options={"watermark": "never"})
        assert any("the rest not read" in e for e in rep.errors), rep.errors
        (gen,) = [e for e in rep.evidence if e.id == "generator.parameters"]
        assert gen.decisive and gen.data["seed"] == "1234" and "read past the text caps" in gen.source


def test_no_camera_is_not_said_when_a_later_exif_block_names_one():
    # An AI tool's EXIF first, a camera's pasted in a second APP1: the conflict note said "EXIF make: only in
    # JPEG APP1 #2 ('Canon'), not used" and, beside it, "no camera metadata (make, model, exposure)".
    import io

    from PIL import Image

    first, cam = Image.Exif(), Image.Exif()
    first[0x0131] = "Midjourney v6"
    cam[0x010F], cam[0x0110] = "Canon", "Canon EOS 5D"
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")
    data = with_jpeg_segments(buf.getvalue(), [(0xE1, first.tobytes()), (0xE1, cam.tobytes())])
    ev = {e.id: e for e in analyze(data, "x", options={"watermark": "never"}).evidence}
    assert "metadata.no-camera" not in ev and "exif.camera" not in ev      # the first block is the EXIF, as before
    assert "only in JPEG APP1 #2 ('Canon')" in ev["metadata.conflict"].detail
    assert ev["exif.software-generator"].strength == 3.0
