"""A JPEG's APPn and COM segments past limits.JPEG_MAX_APP_BYTES in all are left out of the copy Pillow opens, which
kept every one whole (a 520 MB JPEG of 8,000 comments: the decode alone 1.06 GB), and the metadata walk copies no
more EXIF or XMP blocks than analyze parses (a 512 MB JPEG of 8,000 Exif segments: `scan -d metadata` 1.07 GB)."""
from __future__ import annotations

import io

import numpy as np

from aiidetect import decode, metastrip
from aiidetect.limits import JPEG_MAX_APP_BYTES
from aiidetect.provenance import analyze, containers
from aiidetect.testing.hostile import _enc, _noise, jpeg_with_app1, with_jpeg_segments


def _comments(n: int, size: int = 40_000) -> bytes:
    # Pillow writes its JFIF APP0 right after SOI: the comments go in front of it
    return with_jpeg_segments(_enc(_noise(), "JPEG", quality=85), [(0xFE, b"c" * size)] * n)


def test_pillow_is_handed_no_more_app_and_com_bytes_than_the_cap(monkeypatch):
    monkeypatch.setattr(metastrip, "JPEG_MAX_APP_BYTES", 100_000)
    data = _comments(10)
    img, info = decode.decode_bytes(data)
    assert "JPEG APP and COM segments past 100000 bytes in all not handed to the decoder: 8 of them" \
        in info["metadata_withheld"]
    with decode.open_image(data) as im:     # every caller of open_image: meta's header look, the watermark check
        assert sum(len(s) for _, s in im.applist) <= 100_000 + 16   # two comments and the JFIF APP0
        assert im.info.get("jfif")          # the (last) JFIF APP0 is handed on past the cap: libjpeg reads it
    ref, _ = decode.decode_bytes(_enc(_noise(), "JPEG", quality=85))
    assert np.array_equal(np.asarray(img), np.asarray(ref))     # the file's own pixels


def test_a_jpeg_within_the_cap_is_opened_as_it_is():
    assert JPEG_MAX_APP_BYTES == 16 * 1024 * 1024
    lean, said = metastrip.strip_oversize(_comments(10), "JPEG")
    assert lean is None and said is None


def test_the_walk_copies_no_more_exif_or_xmp_blocks_than_are_parsed():
    data = with_jpeg_segments(jpeg_with_app1(b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00\x00\x00"),
                              [(0xE1, b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + b"\x00" * 1000)] * 5
                              + [(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>" + b" " * 1000)] * 6)
    b = containers.walk(data)
    assert len(b.exif) == 6 and len(b.xmp) == 6             # counted, for the record
    assert all(blob == b"" for blob, _ in b.exif[4:] + b.xmp[4:]) and all(blob for blob, _ in b.exif[:4])
    errors = analyze(data, "x", options={"watermark": "never"}).errors
    assert "6 EXIF blocks; only the first 4 read" in errors and "6 XMP packets; only the first 4 read" in errors


def test_the_walk_copies_no_more_webp_exif_or_xmp_chunks_than_are_parsed():
    import io

    from PIL import Image

    from aiidetect.testing.hostile import webp_chunk, webp_riff, webp_vp8x

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "WEBP", lossless=True)
    exif = b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00" + b"\x00" * 1000
    data = webp_riff(webp_vp8x(4, 4, 0x0C) + buf.getvalue()[12:] + webp_chunk(b"EXIF", exif) * 6
                     + webp_chunk(b"XMP ", b"<x:xmpmeta/>" + b" " * 1000) * 5)
    b = containers.walk(data)
    assert len(b.exif) == 6 and len(b.xmp) == 5
    assert all(blob == b"" for blob, _ in b.exif[4:] + b.xmp[4:]) and all(blob for blob, _ in b.exif[:4])


def test_pillow_is_handed_no_more_webp_metadata_bytes_than_the_cap_but_the_first_exif(monkeypatch):
    import io
    import struct

    from PIL import Image

    from aiidetect.testing.hostile import webp_chunk, webp_riff, webp_vp8x

    monkeypatch.setattr(metastrip, "WEBP_MAX_METADATA_BYTES", 3000)
    buf = io.BytesIO()
    Image.new("RGB", (4, 2), (9, 8, 7)).save(buf, "WEBP", lossless=True)
    rotated = (b"MM\x00*\x00\x00\x00\x08\x00\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\x00" * 4
               + b"\x00" * 1000)
    data = webp_riff(webp_vp8x(4, 2, 0x08) + buf.getvalue()[12:] + webp_chunk(b"JUNK", b"j" * 2500)
                     + webp_chunk(b"EXIF", rotated) + webp_chunk(b"JUNK", b"k" * 2000) * 3)
    img, info = decode.decode_bytes(data)
    assert img.size == (2, 4)       # the first EXIF chunk, past the cap, still gives the orientation
    assert ("WebP metadata and unknown chunks past 3000 bytes in all not handed to the decoder: 3 of them, 6000 bytes"
            == info["metadata_withheld"])
    lean, _ = metastrip.strip_oversize(data, "WEBP")
    assert len(lean) == len(data) - 6000 and lean.count(b"JUNK") == 4      # empty chunks of their kind in place


def test_past_the_cap_the_last_adobe_segment_is_handed_on_as_libjpeg_takes_the_last(monkeypatch):
    import struct

    from PIL import Image

    monkeypatch.setattr(metastrip, "JPEG_MAX_APP_BYTES", 100_000)
    j = _enc(_noise(), "JPEG", quality=85)
    no_jfif = j[:2] + j[4 + struct.unpack(">H", j[4:6])[0]:]     # the colour space is then the Adobe transform's
    adobe = [(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00" + bytes([t])) for t in (0, 1)]     # RGB, then YCbCr
    data = with_jpeg_segments(no_jfif, [adobe[0]] + [(0xFE, b"c" * 60_000)] * 2 + [adobe[1]])
    img, info = decode.decode_bytes(data)
    assert "1 of them" in info["metadata_withheld"]     # a comment, not the Adobe segment libjpeg reads last
    with Image.open(io.BytesIO(data)) as im:            # what a viewer shows: the transform of the last, YCbCr
        assert np.array_equal(np.asarray(img), np.asarray(im.convert("RGB")))


def test_every_reader_that_opens_a_webp_gets_the_copy_without_the_chunks_past_the_cap(monkeypatch):
    # meta's header look and the watermark check's own decode open the file through open_image, not decode_bytes:
    # Pillow's WebP reader copies all it is handed (a 201 MB WebP of 24 EXIF chunks of 8 MiB: `meta` 661 MB)
    from PIL import Image

    from aiidetect.testing.hostile import webp_chunk, webp_riff, webp_vp8x

    monkeypatch.setattr(metastrip, "WEBP_MAX_METADATA_BYTES", 3000)
    buf = io.BytesIO()
    Image.new("RGB", (4, 2), (9, 8, 7)).save(buf, "WEBP", lossless=True)
    data = webp_riff(webp_vp8x(4, 2, 0) + buf.getvalue()[12:] + webp_chunk(b"JUNK", b"k" * 2000) * 4)
    handed, real = [], Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: handed.append(len(fp.getbuffer())) or real(fp, *a, **k))
    with decode.open_image(data) as im:
        assert im.size == (4, 2)
    assert handed == [len(data) - 6000]
