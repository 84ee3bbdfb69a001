"""A metadata block over its reader's cap is refused from its length, before it is copied out of the file, and
the decoder is handed a PNG or WebP without such chunks: 100 MB EXIF, XMP or ICC chunks took `meta` 257-462 MB
and `scan -d metadata` 476-680 MB (copies in the walkers and in Pillow's readers)."""
from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from aiidetect import decode, metastrip
from aiidetect.provenance import analyze, containers


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _png(*chunks: bytes, side: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (9, 8, 7)).save(buf, "PNG")
    p = buf.getvalue()
    return p[:33] + b"".join(chunks) + p[33:]


def _webp(**kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 8, 7)).save(buf, "WEBP", **kw)
    return buf.getvalue()


def test_an_exif_or_xmp_block_over_its_readers_cap_is_refused_before_it_is_copied(monkeypatch):
    monkeypatch.setattr(containers, "MAX_EXIF_BYTES", 100, raising=False)
    monkeypatch.setattr(containers, "MAX_XMP_READ_BYTES", 100)
    tiff = b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 300
    for data, said in ((_webp(exif=tiff), "WebP EXIF chunk: an EXIF block of 308 bytes, over the 100 read"),
                       (_webp(xmp=b"<x:xmpmeta" + b" " * 300), "WebP XMP chunk: an XMP packet of 310 bytes"),
                       (_png(_chunk(b"eXIf", tiff)), "PNG eXIf: an EXIF block of 308 bytes, over the 100 read")):
        b = containers.walk(data)
        assert not b.exif and not b.xmp        # never sliced out, never handed to a reader
        assert any(said in e for e in b.errors), b.errors
        assert any(said in e for e in analyze(data, "x", options={"watermark": "never"}).errors)


def test_an_uncompressed_text_chunk_is_copied_only_as_far_as_it_is_read(monkeypatch):
    monkeypatch.setattr(containers, "MAX_TEXT_BYTES", 100)
    monkeypatch.setattr(containers, "TEXT_HEAD_BYTES", 30, raising=False)   # room for the keywords
    seen = []
    real = containers._png_text
    monkeypatch.setattr(containers, "_png_text", lambda ctype, body: seen.append(len(body)) or real(ctype, body))
    b = containers.walk(_png(_chunk(b"tEXt", b"parameters\x00" + b"a" * 10_000),
                             _chunk(b"iTXt", b"Comment\x00\x00\x00\x00\x00" + b"b" * 10_000)))
    assert seen and max(seen) <= 130, seen     # not 10,000
    assert [len(t) for _, t, _ in b.texts] == [100, 100]
    assert sum("the first 100 read" in e for e in b.errors) == 2, b.errors


def test_the_decoder_is_not_handed_a_metadata_chunk_over_the_cap(monkeypatch):
    monkeypatch.setattr(metastrip, "DECODE_MAX_METADATA_CHUNK", 100, raising=False)
    handed = []
    real = decode.open_image
    monkeypatch.setattr(decode, "open_image", lambda data, **kw: handed.append(data) or real(data, **kw))
    for data, tag in ((_png(_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + b" " * 300)), b"iTXt"),
                      (_webp(icc_profile=b"\x00" * 300), b"ICCP"), (_webp(exif=b"MM\x00*" + b"\x00" * 300), b"EXIF")):
        handed.clear()
        img, info = decode.decode_bytes(data)
        assert img.size == (4, 4)
        assert handed and all(len(h) <= len(data) - 300 for h in handed)   # a WebP's keeps an empty chunk
        said = info["metadata_withheld"]
        assert tag.decode() in said and "over 100 bytes" in said
    # Small chunks are the decoder's as before.
    handed.clear()
    small = _webp(exif=b"MM\x00*" + b"\x00" * 20)
    assert "metadata_withheld" not in decode.decode_bytes(small)[1] and b"EXIF" in handed[0]


def _riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"".join(c + struct.pack("<I", len(p)) + p + b"\x00" * (len(p) & 1) for c, p in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def test_a_webp_copy_without_a_big_chunk_changes_no_other_byte():
    """The copy clears the left-out chunk's flag in the VP8X chunk libwebp reads, the first one, whole. Any
    other "VP8X" was taken for it: one of 0 bytes had the next chunk's first byte cleared ('ICCP' became
    'ACCP'), one after the chunk left out had a bit cleared at the offset the cut moved: in the image data
    (pixels that are not the file's, decoded and judged), or past the copy's end (the copy given up). The
    copy is the file less that chunk's payload, and nothing else."""
    from aiidetect.metastrip import strip_oversize

    big, icc, frame = (b"EXIF", b"MM\x00*" + b"\x00" * 300), (b"ICCP", b"I" * 20), (b"VP8L", b"\x2f" + b"\xff" * 19)
    vp8x = (b"VP8X", bytes([0x28]) + b"\x00" * 3 + b"\x03\x00\x00" * 2)   # ICC and EXIF flags, 4x4
    image = (b"VP8L", b"\x2f" + b"\xff" * 399)
    for chunks in ([(b"VP8X", b""), big, icc, frame], [icc, big, vp8x, image], [big, (b"VP8X", b"\x08" * 10), icc, frame]):
        lean, said = strip_oversize(_riff(*chunks), "WEBP", limit=100)
        assert said and "EXIF" in said
        assert lean == _riff(*[(b"EXIF", b"") if c is big else c for c in chunks]), chunks
    # The first chunk's flags, whole: the EXIF flag cleared, ICC's kept, and no later "VP8X" touched.
    cleared = (b"VP8X", bytes([0x20]) + vp8x[1][1:])
    empty = (b"EXIF", b"")
    assert strip_oversize(_riff(vp8x, icc, big, frame), "WEBP", limit=100)[0] == _riff(cleared, icc, empty, frame)
    assert (strip_oversize(_riff(vp8x, frame, (b"VP8X", b"\x08"), big), "WEBP", limit=100)[0]
            == _riff(cleared, frame, (b"VP8X", b"\x08"), empty))


def test_the_watermark_check_reuses_pixels_decoded_without_a_huge_chunk(monkeypatch):
    # They are the file's own pixels; the check decoded the file again, with the chunk (copied again, or
    # refused by Pillow: a 100 MB iTXt gave `cannot decode pixels: ValueError` and no check at all).
    from aiidetect.provenance import reusable_image

    monkeypatch.setattr(metastrip, "DECODE_MAX_METADATA_CHUNK", 100, raising=False)
    # 256x256: the smallest image the check measures (a smaller one is recorded as not checked)
    data = _png(_chunk(b"iTXt", b"Comment\x00\x00\x00\x00\x00" + b" " * 300), side=256)
    img, info = decode.decode_bytes(data)
    assert reusable_image(img, info, 256, 256), info

    def refuse(data, **vetted):
        raise ValueError("decoded again")

    monkeypatch.setattr(decode, "open_image", refuse)
    rep = analyze(data, "x", image=img, info=info, options={"watermark": "always"})
    assert rep.facts["watermark"]["checked"], rep.facts["watermark"]


def test_a_webp_copy_without_a_big_chunk_is_refused_or_read_as_the_file_is(monkeypatch):
    """Whether the decoder reads a WebP must not hang on its metadata chunk being over 8 MiB. The copy cut the
    chunk out and set the RIFF size to the copy's length: a file whose first chunk is that metadata (no WebP
    reader opens it: the first chunk must be VP8X, VP8 or VP8L) or cut short within it (a download ended
    early) became a readable one, pixels judged from a file that shows nothing anywhere; a valid file with
    bytes after its RIFF had them taken into it, and was refused (`corrupt header`)."""
    import pytest

    monkeypatch.setattr(metastrip, "DECODE_MAX_METADATA_CHUNK", 100, raising=False)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 8, 7)).save(buf, "WEBP", lossless=True, icc_profile=b"\x00" * 30)
    whole = buf.getvalue()
    (vp8x, icc, image) = [(whole[p:p + 4], whole[p + 8:p + 8 + n]) for p, n in
                          ((12, 10), (30, 30), (68, len(whole) - 76))]
    assert icc[0] == b"ICCP" and image[0] == b"VP8L", (icc[0], image[0])
    for size in (50, 300):      # under the cap: handed to the decoder as it is; over it: the copy
        icc_n, exif_n = (b"ICCP", b"\x00" * size), (b"EXIF", b"MM\x00*" + b"\x00" * size)
        for i, refused in enumerate((_riff(icc_n, vp8x, image), _riff(exif_n, image), _riff(vp8x, image, exif_n)[:-20])):
            with pytest.raises(decode.DecodeFailure):
                decode.decode_bytes(refused)
                pytest.fail(f"read: {size}-byte chunk, case {i}")
        img, info = decode.decode_bytes(_riff(vp8x, icc_n, image) + b"JUNK" + b"\xff" * 20)
        assert img.size == (4, 4) and ("metadata_withheld" in info) == (size > 100)
