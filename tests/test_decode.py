import hashlib
import io
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from aiidetect.decode import DecodeLimits, Sample, decode_bytes, decode_path, read_bytes, DecodeFailure
from aiidetect.records import Record
from aiidetect.preprocess import apply, center_crop, make_spec

from aiidetect.testing.images import jpeg_bytes, make_zoo, noise_rgb


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.mark.parametrize("name,fmt", [("jpeg", "JPEG"), ("cmyk", "JPEG"), ("png16", "PNG"), ("gif", "GIF"),
                                      ("palette", "PNG"), ("rgba", "PNG"), ("gray", "TIFF"), ("bmp", "BMP"),
                                      ("webp", "WEBP"), ("heic", "HEIF"), ("avif", "AVIF"), ("misnamed", "PNG")])
def test_good_files_decode_to_rgb(zoo, name, fmt):
    s = decode_path(str(zoo[name]), keep_image=True)
    assert s.record.error is None, s.record.error
    assert s.record.format == fmt
    assert s.image.mode == "RGB"
    assert s.record.sha256 == hashlib.sha256(zoo[name].read_bytes()).hexdigest()


@pytest.mark.parametrize("name,code", [("truncated", "decode-error"), ("empty", "empty-file"),
                                       ("random", "unsupported-format"), ("bomb", "too-large")])
def test_bad_files_get_error_codes(zoo, name, code):
    s = decode_path(str(zoo[name]))
    assert s.record.error is not None and s.record.error.code == code, s.record.error
    assert s.record.verdict == "error"


def test_sixteen_bit_is_scaled_not_clipped(zoo):
    img, info = decode_bytes(zoo["png16"].read_bytes())
    a = np.asarray(img)[..., 0]
    assert info["mode"].startswith("I")
    assert a.min() == 0 and a.max() == 255  # full range kept; clipping would saturate at 255 early
    assert len(np.unique(a)) > 200


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_converted_a_band_at_a_time(monkeypatch, mode):
    """Whole-image float64 copies made a 233 KB 10000x12000 16-bit PNG cost 3.0 GB and 9 s. Now the
    working copies are of a band of rows (BAND_PIXELS): memory tracked by numpy stays near the 8-bit
    result's size, and the pixels are the whole-image formula's, extremes found across all bands."""
    import tracemalloc

    from PIL import Image

    import aiidetect.decode as dec

    monkeypatch.setattr(dec, "BAND_PIXELS", 1 << 14, raising=False)
    rng = np.random.default_rng(3)
    h, w = 1000, 800
    if mode == "I;16":
        a = rng.integers(0, 65536, (h, w)).astype(np.uint16)
        img = Image.new("I;16", (w, h))
        img.frombytes(a.astype("<u2").tobytes())
        want = np.rint(a / 257.0)
    else:
        a = (rng.normal(size=(h, w)) * 1000).astype(np.int32 if mode == "I" else np.float32)
        if mode == "F":
            a[:h // 2] = np.nan  # whole bands of NaN: the extremes come from the others
        img = Image.fromarray(a)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        want = np.rint(np.nan_to_num((a.astype(np.float64) - lo) / (hi - lo) * 255.0))
    tracemalloc.start()
    try:
        rgb = dec._to_rgb(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    got = np.asarray(rgb)
    assert np.array_equal(got, np.repeat(np.clip(want, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
    assert peak < 4 * h * w, f"{peak / (h * w):.1f} bytes a pixel"  # whole-image float64: 16 and more


def test_animated_gif_first_frame(zoo):
    img, info = decode_bytes(zoo["gif"].read_bytes())
    assert info["frames"] == 4
    assert img.size == (32, 32)


def test_gif_frames_counted_up_to_the_limit(monkeypatch):
    """Pillow counts a GIF's frames by parsing every one in Python (2 M one-pixel frames, 46 MB, took
    4 s): the count stops at MAX_FRAMES_COUNTED, and a GIF under it keeps its exact count."""
    from PIL import GifImagePlugin

    from aiidetect.limits import MAX_FRAMES_COUNTED
    from aiidetect.testing.hostile import gif_tiny_frames

    parsed = []
    real = GifImagePlugin.GifImageFile._seek

    def counting(self, frame, *a, **k):
        parsed.append(frame)
        return real(self, frame, *a, **k)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek", counting)
    img, info = decode_bytes(gif_tiny_frames(MAX_FRAMES_COUNTED + 2000))
    assert info["frames"] == MAX_FRAMES_COUNTED and img.size == (2, 2)
    assert len(parsed) < MAX_FRAMES_COUNTED + 10
    assert decode_bytes(gif_tiny_frames(37))[1]["frames"] == 37


def test_exif_orientation_applied(zoo):
    img, info = decode_bytes(zoo["rotated"].read_bytes())
    assert info["orientation"] == 6
    assert img.size == (48, 64)


def test_pixel_limit_configurable(zoo):
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(zoo["jpeg"].read_bytes(), DecodeLimits(max_pixels=100))
    assert e.value.code == "too-large"


@pytest.mark.parametrize("max_pixels", [None, 50_000_000])
def test_bomb_refusal_names_our_limit_not_pillows(zoo, monkeypatch, max_pixels):
    """Pillow refuses first above twice its own setting; its message named 178956970 pixels, a limit
    no aiidetect option moves, instead of --max-pixels."""
    from PIL import Image

    from aiidetect.limits import DEFAULT_MAX_PIXELS

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # Pillow's default; process-wide
    limits = DecodeLimits(max_pixels=max_pixels) if max_pixels else DecodeLimits()
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(zoo["bomb"].read_bytes(), limits)
    assert e.value.code == "too-large"
    assert e.value.message == f"900000000 pixels, over the {max_pixels or DEFAULT_MAX_PIXELS}-pixel limit (--max-pixels)"


def test_only_the_formats_discovery_takes_reach_pillow(monkeypatch):
    """Pillow tries all its plugins on any bytes: an EPS named .jpg went to Ghostscript (on a machine
    that has it: a PostScript interpreter run on a received file), a QOI was decoded in pure Python.
    Neither the decoder nor the metadata reader (its watermark decode, as `meta` runs it) opens them."""
    from PIL import EpsImagePlugin

    from aiidetect.decode import identify
    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import eps_named_jpeg, qoi_run_bomb

    ran = []

    def ghostscript(*a, **k):
        ran.append(a)
        raise OSError("Ghostscript was run")

    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    for data in (eps_named_jpeg(), qoi_run_bomb(512, 512)):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(data)
        assert e.value.code == "unsupported-format", e.value.message
        with pytest.raises(DecodeFailure):
            identify(data)
        analyze(data, options={"watermark": "always"})
    assert ran == []


@pytest.mark.parametrize("missing", ["HEIF", "AVIF"])
def test_bytes_of_no_format_are_unsupported_where_a_listed_plugin_is_missing(monkeypatch, missing):
    """Pillow looks each named format up in its plugin table and raises KeyError for one it lacks: HEIF
    without pillow-heif, AVIF before Pillow 11.2 (pyproject allows 10.1). Bytes no earlier plugin took
    were a 'corrupt header: KeyError' decode-error, and `meta` took them for an image."""
    from PIL import Image

    import aiidetect.decode as dec

    dec._register_openers()
    Image.init()
    monkeypatch.delitem(Image.OPEN, missing, raising=False)
    junk = np.random.default_rng(1).bytes(4096)
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(junk)
    assert e.value.code == "unsupported-format", e.value.message
    with pytest.raises(DecodeFailure) as e:
        dec.identify(junk)
    assert e.value.code == "unsupported-format"
    assert decode_bytes(jpeg_bytes())[1]["format"] == "JPEG"


def test_progressive_jpeg_scan_bomb_refused_before_any_reader_decodes_it():
    """Each progressive scan is a pass over the image however few bytes it holds: 1,000 repeats of a
    few-byte scan took 41 s to scan (8192x8192) and Pillow sets no limit. Refused by its structure, by
    the decoder and by the watermark check's own decode alike; standard progressive files and the
    limit itself still decode."""
    from PIL import Image

    from aiidetect.decode import JPEG_MAX_COVERAGE, JPEG_MAX_SEGMENTS
    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import jpeg_scan_bomb, with_jpeg_segments

    bomb = jpeg_scan_bomb(512, 512, 1000)
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(bomb)
    assert e.value.code == "decode-error" and "scans pass over the image" in e.value.message
    rep = analyze(bomb, options={"watermark": "always"})
    assert rep.facts["watermark"]["checked"] is False
    # greyscale progressive: 6 passes; 10 more repeats of its last scan reach the limit, 11 pass it
    assert decode_bytes(jpeg_scan_bomb(64, 64, JPEG_MAX_COVERAGE - 6))[1]["format"] == "JPEG"
    with pytest.raises(DecodeFailure):
        decode_bytes(jpeg_scan_bomb(64, 64, JPEG_MAX_COVERAGE - 5))
    for mode, kw in (("RGB", {}), ("RGB", {"subsampling": 0}), ("CMYK", {})):
        b = io.BytesIO()
        Image.new(mode, (64, 48)).save(b, "JPEG", progressive=True, **kw)
        assert decode_bytes(b.getvalue())[1]["width"] == 64
    # the walk itself is bounded: a file of tiny segments is not followed to its end
    many = with_jpeg_segments(jpeg_bytes(), [(0xFE, b"")] * (JPEG_MAX_SEGMENTS + 1))
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(many)
    assert "marker segments" in e.value.message


@pytest.mark.parametrize("stray", [b"\x00", b"\xff\x00", b"\xff\xe1\x00\x00", b"\xfe" * 3, b"\xff\xfe\x00\x01"],
                         ids=["byte", "stuffed-zero", "APP1-length-0", "bytes", "COM-length-1"])
def test_stray_bytes_between_segments_do_not_carry_a_scan_bomb_past_the_check(stray):
    """libjpeg and Pillow skip stray bytes between marker segments (and an APPn or COM of length 0 or 1):
    the structure walk gave up on them, and one such byte let 1,000 scans through (4.8 s at 2048x2048,
    41 s at 8192x8192). A real file with them still decodes."""
    from PIL import Image

    from aiidetect.decode import jpeg_scan_problem
    from aiidetect.testing.hostile import jpeg_scan_bomb

    def insert(data: bytes, before: bytes) -> bytes:
        i = data.index(before)
        return data[:i] + stray + data[i:]

    bomb = jpeg_scan_bomb(64, 64, 1000)
    for before in (b"\xff\xdb", b"\xff\xda"):   # ahead of the tables, ahead of the first scan
        assert "scans pass over the image" in (jpeg_scan_problem(insert(bomb, before)) or "")
    b = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(b, "JPEG", progressive=True)
    assert decode_bytes(insert(b.getvalue(), b"\xff\xdb"))[1]["width"] == 64


def test_jpeg_exif_segments_past_the_cap_are_not_handed_to_pillow():
    """Pillow's open joins every Exif APP1 segment to the EXIF so far, a new copy each: 1,600 full segments
    (105 MB, jpeg_exif_segments(1600)) took `scan -d metadata` 105 s and `meta` over 120 s. The segments after
    the first JPEG_MAX_EXIF_SEGMENTS are left out of what Pillow opens, for every caller of open_image (meta's
    header look, the watermark check's decode) and the decoder, whose record says so; the first segment's
    orientation stands, and a file at the cap is handed whole."""
    from aiidetect.decode import open_image
    from aiidetect.limits import JPEG_MAX_EXIF_SEGMENTS
    from aiidetect.testing.hostile import jpeg_exif_segments

    over = jpeg_exif_segments(JPEG_MAX_EXIF_SEGMENTS + 5, size=1000)
    with open_image(over) as im:
        assert len(im.info["exif"]) <= JPEG_MAX_EXIF_SEGMENTS * 1000
    img, info = decode_bytes(over)
    assert img.size == (48, 64) and info["orientation"] == 6
    assert f"after the first {JPEG_MAX_EXIF_SEGMENTS} not handed to the decoder: 5 of them" in info["metadata_withheld"]
    at_cap = jpeg_exif_segments(JPEG_MAX_EXIF_SEGMENTS, size=1000)
    with open_image(at_cap) as im:
        assert len(im.info["exif"]) > (JPEG_MAX_EXIF_SEGMENTS - 1) * 994
    assert "metadata_withheld" not in decode_bytes(at_cap)[1]


def test_a_decode_walks_a_jpeg_or_png_for_oversized_metadata_once_where_nothing_is_left_out(monkeypatch):
    """decode_bytes looks for metadata to leave out of what Pillow opens (metastrip.strip_oversize), and its
    open_image looked again at the same bytes: a second walk of every JPEG's segments and PNG's chunks for the
    same answer. Where the first found nothing it is not repeated; where it left something out, its copy is
    still walked (a file past the cap gives the same pixels and the same record as before)."""
    from aiidetect import metastrip
    from aiidetect.limits import JPEG_MAX_EXIF_SEGMENTS, PNG_MAX_ICC_CHUNKS
    from PIL import Image

    from aiidetect.testing.hostile import jpeg_exif_segments, png_icc_chunks

    walks = []
    real = metastrip.strip_oversize
    monkeypatch.setattr(metastrip, "strip_oversize", lambda data, fmt, *a: walks.append(fmt) or real(data, fmt, *a))
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(png, "PNG")
    for data, fmt in ((jpeg_exif_segments(2, size=100), "JPEG"), (png.getvalue(), "PNG"),
                      (png_icc_chunks(1, size=100), "PNG")):
        walks.clear()
        img, info = decode_bytes(data)
        assert walks == [fmt] and "metadata_withheld" not in info
    walks.clear()
    img, info = decode_bytes(jpeg_exif_segments(JPEG_MAX_EXIF_SEGMENTS + 2, size=100))
    assert walks == ["JPEG", "JPEG"] and info["orientation"] == 6 and "2 of them" in info["metadata_withheld"]
    walks.clear()
    img, info = decode_bytes(png_icc_chunks(PNG_MAX_ICC_CHUNKS + 2, size=100))
    assert walks == ["PNG", "PNG"] and img.size == (64, 48) and "2 of them" in info["metadata_withheld"]


def test_jpeg_quantization_tables_past_the_cap_are_refused_before_pillow_reads_them():
    """Pillow's open reads each DQT table in Python, and the metadata walk read each for its evidence: 1,600 full
    DQT segments (100 MB, jpeg_dqt_tables(1600)) took `scan -d metadata` 18.3 s and `meta` 12 s. Over
    JPEG_MAX_DQT_BYTES before the first scan the decoder refuses the file and the walk reads no table evidence;
    one full segment (1,008 tables) still decodes and is read."""
    from aiidetect.limits import JPEG_MAX_DQT_BYTES
    from aiidetect.provenance import containers
    from aiidetect.testing.hostile import jpeg_dqt_tables

    over = jpeg_dqt_tables(JPEG_MAX_DQT_BYTES // 65520 + 1)
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(over)
    assert e.value.code == "decode-error" and "quantization tables" in e.value.message
    b = containers.walk(over)
    assert b.dqt == {} and any("quantization tables; not read" in err for err in b.errors)
    one = jpeg_dqt_tables(1)
    assert decode_bytes(one)[1]["format"] == "JPEG" and containers.walk(one).dqt


def test_png_icc_chunks_after_the_first_are_not_inflated_by_pillow(monkeypatch):
    """Pillow's open inflates every iCCP chunk (up to 1 MiB each, from about 1 KB) and keeps the last, with no
    total as its text chunks have: 5,000 of them (5.3 MB, png_icc_chunks(5000)) took `scan -d metadata` 34 s
    and `meta` 38 s. The chunks after the first PNG_MAX_ICC_CHUNKS are left out of what Pillow opens, for every
    caller of open_image and the decoder, whose record says so; one iCCP chunk is handed as before."""
    from PIL import PngImagePlugin

    from aiidetect.decode import open_image
    from aiidetect.limits import PNG_MAX_ICC_CHUNKS
    from aiidetect.testing.hostile import png_icc_chunks

    inflated = []
    real = PngImagePlugin._safe_zlib_decompress
    monkeypatch.setattr(PngImagePlugin, "_safe_zlib_decompress", lambda s: inflated.append(1) or real(s))
    over = png_icc_chunks(PNG_MAX_ICC_CHUNKS + 3, size=1000)
    with open_image(over) as im:
        im.load()
    assert len(inflated) == PNG_MAX_ICC_CHUNKS
    inflated.clear()
    img, info = decode_bytes(over)
    assert img.size == (64, 48) and len(inflated) == PNG_MAX_ICC_CHUNKS
    assert f"iCCP chunks after the first {PNG_MAX_ICC_CHUNKS} not handed to the decoder: 3 of them" in \
        info["metadata_withheld"]
    one = png_icc_chunks(1, size=1000)
    with open_image(one) as im:
        assert im.info["icc_profile"] == bytes(1000)
    assert "metadata_withheld" not in decode_bytes(one)[1]


def test_png_of_too_many_chunks_refused_before_pillow_walks_them():
    """Pillow reads every PNG chunk in Python: 8 M empty IDAT chunks (96 MB) took 6 s to scan, 8 M empty
    private chunks 20 s and 1.07 GB. Counted from the chunk headers first; the limit itself decodes."""
    from aiidetect.limits import PNG_MAX_CHUNKS
    from aiidetect.testing.hostile import png_many_idat

    # IHDR, the image's own IDAT and IEND, plus the empty ones
    assert decode_bytes(png_many_idat(PNG_MAX_CHUNKS - 3))[1]["format"] == "PNG"
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(png_many_idat(PNG_MAX_CHUNKS - 2))
    assert e.value.code == "decode-error" and "chunks" in e.value.message


def test_webp_of_too_many_chunks_refused_before_libwebp_lists_them(monkeypatch):
    """libwebp's demuxer keeps a record of every frame (one ANMF chunk each) when Pillow opens a WebP, whose
    pixels are one frame's: 4 M one-pixel frames (200 MB) took `scan -d metadata` 1 GB and `meta` as much.
    Counted from the chunk headers first, as the metadata walk counts them; the cap itself decodes."""
    from PIL import WebPImagePlugin

    from aiidetect import decode
    from aiidetect.decode import open_image
    from aiidetect.testing.hostile import webp_frames

    monkeypatch.setattr(decode, "WEBP_MAX_CHUNKS", 10, raising=False)
    img, info = decode_bytes(webp_frames(8))      # VP8X, ANIM and 8 frames
    assert info["format"] == "WEBP" and info["frames"] == 8
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "_open", _never("Pillow's WebP reader"))
    for read in (decode_bytes, open_image):
        with pytest.raises(DecodeFailure) as e:
            read(webp_frames(9))
        assert e.value.code == "decode-error" and "more than 10 chunks" in e.value.message


def test_a_needle_webp_row_is_handed_to_pillows_decoder_once_not_a_block_at_a_time(monkeypatch):
    """Pillow's load() reads in 64 KiB blocks and joins each to what its raw decoder left, which consumes whole
    rows: a 512-byte animation on a 16777216x1 canvas took load() 17.7 s and `scan -d metadata` 47 s, every block
    copying the row so far again. decode.loadable lets a block hold a row: the bytes handed over stay linear."""
    from PIL import Image

    from aiidetect.testing.hostile import webp_frames

    handed = []
    real = Image._getdecoder

    class Counting:
        def __init__(self, dec):
            self._dec = dec

        def __getattr__(self, name):
            return getattr(self._dec, name)

        def decode(self, b):
            handed.append(len(b))
            return self._dec.decode(b)

    monkeypatch.setattr(Image, "_getdecoder", lambda *a, **k: Counting(real(*a, **k)))
    w = 1 << 20
    img, info = decode_bytes(webp_frames(2, w, 1))
    assert img.size == (w, 1)
    assert handed, "Pillow's decoder was never handed the row: the test checks nothing"
    assert sum(handed) <= 2 * 4 * w, f"{len(handed)} calls handed {sum(handed)} bytes for a {4 * w}-byte row"


def test_a_psd_named_on_the_command_line_is_decoded_and_its_declared_size_checked():
    """PSD is among the formats Pillow may open (decode.PILLOW_FORMATS): its composite is the picture. A
    PSD claiming 30000x30000 is `too-large` from its header, before any pixel is read."""
    from aiidetect.testing.hostile import psd

    w, h = 6, 4
    data = psd(b"", w, h)
    planes = bytes(range(w * h)) + bytes(200 - i for i in range(w * h)) + bytes([7]) * (w * h)  # R, G, B
    img, info = decode_bytes(data[:-3 * w * h] + planes)
    assert (info["format"], img.size) == ("PSD", (w, h))
    assert np.asarray(img)[1, 2].tolist() == [8, 192, 7]
    huge = data[:14] + struct.pack(">II", 30000, 30000) + data[22:]
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(huge)
    assert e.value.code == "too-large"


@pytest.mark.parametrize("e", ["<", ">"])
@pytest.mark.parametrize("ptr_type", [4, 13, 16, 18])   # LONG, IFD, LONG8, IFD8
def test_bigtiff_entries_read_at_their_own_value_field(e, ptr_type):
    """A BigTIFF entry is tag, type, an 8-byte count and an 8-byte value field (classic: 4 and 4): the
    check reads an inline SHORT and a sub-IFD pointer (4 or 8 bytes, by type) from byte 12 of the entry.
    Here the EXIF sub-IFD is over the entry cap, so the check refuses only if it found it."""
    from aiidetect.provenance.tiffguard import MAX_ENTRIES, check_tiff

    def entry(tag, typ, value, size):
        return struct.pack(e + "HHQ", tag, typ, 1) + struct.pack(e + {2: "H", 4: "I", 8: "Q"}[size], value).ljust(8, b"\0")

    sub_at = 16 + 8 + 20 * 2 + 8
    ifd0 = (struct.pack(e + "Q", 2) + entry(0x0112, 3, 3, 2)
            + entry(0x8769, ptr_type, sub_at, 8 if ptr_type in (16, 18) else 4) + struct.pack(e + "Q", 0))
    head = (b"II+\x00" if e == "<" else b"MM\x00+") + struct.pack(e + "HHQ", 8, 0, 16)
    sub = struct.pack(e + "Q", MAX_ENTRIES + 1) + entry(0x9000, 7, 0, 4) * (MAX_ENTRIES + 1) + struct.pack(e + "Q", 0)
    chk = check_tiff(head + ifd0 + sub)
    assert chk.orientation == 3
    assert not chk.ok and f"{MAX_ENTRIES + 1} entries" in chk.problem
    fine = check_tiff(head + ifd0 + struct.pack(e + "Q", 1) + entry(0x9000, 7, 0, 4) + struct.pack(e + "Q", 0))
    assert fine.ok and fine.ifds == 2 and fine.orientation == 3


def test_tiff_entries_pillow_decodes_value_by_value_are_capped_before_it_opens_the_file(monkeypatch):
    """Pillow decodes each value of a TIFF's size, layout, resolution and palette tags into a Python object when
    it opens the file: an XResolution of 2 M RATIONALs (16 MB, tiff_decoded_values()) took `scan -d metadata`
    12.5 s and `meta` 15.5 s, a ColorMap of 8 M SHORTs 3.4 s. Their values together, over all pages, are capped
    (TIFF_MAX_DECODED_VALUES) before any reader opens the file; a 16-bit palette's ColorMap passes."""
    from PIL import TiffImagePlugin

    from aiidetect.limits import TIFF_MAX_DECODED_VALUES
    from aiidetect.metadata.detector import file_provenance
    from aiidetect.provenance import analyze
    from aiidetect.provenance.tiffguard import check_tiff
    from aiidetect.testing.hostile import tiff_decoded_values, tiff_exif_ifd_values

    assert decode_bytes(tiff_decoded_values(320, 3, 3 << 8))[1]["width"] == 8     # an 8-bit palette
    assert check_tiff(tiff_decoded_values(320, 3, 3 << 16)).ok                    # a 16-bit one's ColorMap passes
    opened = []
    real = TiffImagePlugin.TiffImageFile._open
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_open", lambda self: opened.append(1) or real(self))
    cases = [(tag, tiff_decoded_values(tag, typ, TIFF_MAX_DECODED_VALUES + 1)) for tag, typ in ((282, 5), (320, 3), (258, 3), (283, 6))]
    # any entry of an EXIF sub-IFD: Pillow's load() makes a dict of it all
    cases.append((0xC000, tiff_exif_ifd_values(TIFF_MAX_DECODED_VALUES + 1)))
    for tag, data in cases:
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(data)
        assert e.value.code == "decode-error" and f"tag {tag} brings the values" in e.value.message
        assert any("TIFF structure refused" in err for err in analyze(data).errors)
        file_provenance(data, "t.tif", {"watermark": "always"})
    assert opened == []


def test_a_many_page_palette_tiff_decodes_while_larger_colormaps_still_count():
    """Pillow decodes every page's ColorMap when it counts a TIFF's pages; counted toward TIFF_MAX_DECODED_VALUES,
    a 400-page 8-bit palette TIFF it wrote (3 x 256 values a page) was `decode-error`. A ColorMap no larger than a
    palette Pillow reads (tiffguard.PALETTE_VALUES) is left out of the count; one value more a page counts whole."""
    from PIL import Image

    from aiidetect.limits import TIFF_MAX_DECODED_VALUES
    from aiidetect.provenance.tiffguard import PALETTE_VALUES
    from aiidetect.testing.hostile import tiff_palette_pages

    frames = [Image.new("P", (2, 2), i % 256) for i in range(400)]
    for im in frames:
        im.putpalette(list(range(256)) * 3)
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    img, info = decode_bytes(buf.getvalue())
    assert info["frames"] == 400 and img.size == (2, 2)
    assert 400 * PALETTE_VALUES > TIFF_MAX_DECODED_VALUES
    over = 1 + TIFF_MAX_DECODED_VALUES // (PALETTE_VALUES + 3)
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(tiff_palette_pages(over, PALETTE_VALUES // 3 + 1))
    assert "tag 320 brings the values" in e.value.message


@pytest.mark.parametrize("typ", [2, 3, 4])
def test_a_tiff_whose_xmp_tag_is_typed_as_numbers_keeps_its_pixels(typ):
    """Pillow keeps a TIFF's XMP tag typed SHORT or LONG as a tuple (ASCII as a str), and its load() searches it
    with a bytes pattern for an orientation: TypeError, so one 30-byte entry cost any TIFF its pixels
    (`decode-error` instead of a verdict), for the scan's decoder and the watermark check's own decode alike.
    Dropped before the load."""
    import numpy as np

    from aiidetect.provenance import _pixels
    from aiidetect.testing.hostile import tiff_numeric_xmp

    data = tiff_numeric_xmp(typ)
    img, info = decode_bytes(data)
    assert img.size == (8, 6) and info["format"] == "TIFF"
    assert np.asarray(_pixels(data, None, {}, 8, 6)).shape == (6, 8, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_rotation_gives_pillows_pixels_without_writing_the_exif_again(monkeypatch, orientation):
    """ImageOps.exif_transpose wrote the image's EXIF again after rotating it (Exif.tobytes: every entry of IFD0
    decoded and encoded), which nothing here reads: a 7.6 MB PNG whose eXIf held Orientation 6 and 950,000
    RATIONALs in a private tag (exif_rotated_with_values()) took `scan -d metadata` 15.6 s and 370 MB. The
    decoder transposes the pixels itself, the same pixels for every orientation."""
    from PIL import Image, ImageOps

    from aiidetect.testing.hostile import exif_rotated_with_values

    data = exif_rotated_with_values(10, orientation)
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    written = []
    monkeypatch.setattr(Image.Exif, "tobytes", lambda self, *a: written.append(1) or b"")
    img, info = decode_bytes(data)
    assert info["orientation"] == orientation and written == []
    assert np.array_equal(np.asarray(img), want)


@pytest.mark.parametrize("typ, value", [(2, b"6\x00\x00\x00"), (11, struct.pack("<f", 6.5)), (4, struct.pack("<I", 6))])
def test_exif_rotation_of_an_orientation_typed_oddly_is_pillows_too(typ, value):
    """An Orientation typed as text ("6") or as a FLOAT (6.5) reads as 6 for the record, but Pillow's
    exif_transpose turned nothing for it: the decoder's own transpose turned such a file 90 degrees."""
    from PIL import Image, ImageOps

    from aiidetect.testing.hostile import png_chunk, png_with

    tiff = b"II*\x00" + struct.pack("<IHHHI", 8, 1, 0x0112, typ, 2 if typ == 2 else 1) + value + bytes(4)
    data = png_with([png_chunk(b"eXIf", tiff)])
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    img, info = decode_bytes(data)
    assert info["orientation"] == 6 and np.array_equal(np.asarray(img), want)


def test_tiff_strip_tables_and_bigtiff_checked_before_pillow(monkeypatch):
    """Pillow makes a Python tile of each uncompressed strip when it opens a TIFF: 4 M one-row strips
    (24 MB) took 30.7 s and 1.5 GB to scan, through the decoder and the metadata reader alike; and a
    BigTIFF skipped the IFD check altogether. Refused by the decoder; the metadata reader does not
    hand such a file to Pillow. A small BigTIFF still decodes."""
    from PIL import TiffImagePlugin

    from aiidetect.decode import identify
    from aiidetect.provenance import analyze
    from aiidetect.provenance.tiffguard import MAX_FILE_ENTRIES, MAX_STRIPS
    from aiidetect.testing.hostile import tiff_many_strips, tiff_pages_of_entries

    assert decode_bytes(tiff_many_strips(1000, big=True))[1]["height"] == 1000
    opened = []
    real = TiffImagePlugin.TiffImageFile._open
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_open", lambda self: opened.append(1) or real(self))
    for data in (tiff_many_strips(MAX_STRIPS + 1), tiff_many_strips(MAX_STRIPS + 1, big=True)):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(data)
        assert e.value.code == "decode-error" and "strips (over" in e.value.message
        analyze(data)
    assert opened == []
    identify(tiff_many_strips(MAX_STRIPS + 1, big=True))   # `meta`: a BigTIFF is a TIFF, not opened to find so
    assert opened == []
    # `meta` looks at the header for the watermark check's size: the same check first (1 M strips took it 2 s)
    from aiidetect.metadata.detector import file_provenance

    for data in (tiff_many_strips(MAX_STRIPS + 1), tiff_many_strips(MAX_STRIPS + 1, big=True)):
        file_provenance(data, "t.tif", {"watermark": "always"})
    assert opened == []
    bigtiff_entries = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 65535) + bytes(20 * 65535 + 8)
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(bigtiff_entries)
    assert "65535 entries" in e.value.message
    # the walk of all pages is bounded as a whole, not only per page
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(tiff_pages_of_entries(MAX_FILE_ENTRIES // 1000 + 1))
    assert f"more than {MAX_FILE_ENTRIES} IFD entries" in e.value.message
    # ... at a size real stacks stay under: every page a writer's 9 to 20 entries (an 8,000-page stack of
    # 13 decoded in 2 s, and was refused at a cap of 100,000)
    from aiidetect.provenance.tiffguard import MAX_PAGES, check_tiff

    assert check_tiff(tiff_pages_of_entries(MAX_PAGES, 25), max_total_entries=MAX_FILE_ENTRIES).ok


def test_byte_limit(zoo):
    with pytest.raises(DecodeFailure) as e:
        read_bytes(zoo["jpeg"], DecodeLimits(max_bytes=10))
    assert e.value.code == "too-large"


def test_special_files_and_missing(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert decode_path(str(fifo)).record.error.code == "not-a-file"
    assert decode_path(str(tmp_path)).record.error.code == "not-a-file"
    assert decode_path(str(tmp_path / "nope.jpg")).record.error.code == "unreadable"
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    assert decode_path(str(loop)).record.error.code == "symlink-loop"


def test_permission_error_is_unreadable(tmp_path, monkeypatch):
    p = tmp_path / "x.jpg"
    p.write_bytes(jpeg_bytes())

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("os.open", deny)  # read_bytes opens with os.open (O_NONBLOCK, then fstat)
    s = decode_path(str(p))
    assert s.record.error.code == "unreadable" and "Permission denied" in s.record.error.message


def test_draft_mode_shrinks_big_jpeg():
    data = jpeg_bytes(noise_rgb(2000, 1600), quality=90)
    img, info = decode_bytes(data, draft=224)
    assert info["width"] == 2000 and img.size[0] < 2000 and min(img.size) >= 224


def test_center_crop_pads_small_images():
    a = np.full((100, 50, 3), 7, np.uint8)
    c = center_crop(a, 224)
    assert c.shape == (224, 224, 3)
    assert c[112, 112, 0] == 7 and c[0, 0, 0] == 0


@pytest.mark.parametrize("mode", ["center-crop", "resize-center-crop", "resize"])
def test_preprocess_shapes(mode):
    x = apply(noise_rgb(300, 200), make_spec(mode, 224))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32


# ---- fuzz: the decoder never raises anything but DecodeFailure, on any bytes
@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=2048))
def test_fuzz_random_bytes(data):
    try:
        decode_bytes(data, DecodeLimits(max_pixels=4_000_000))
    except DecodeFailure as e:
        assert e.code in ("decode-error", "unsupported-format", "too-large")


_SEED_FILES = [jpeg_bytes(noise_rgb(32, 32)), ]
_b = io.BytesIO(); noise_rgb(32, 32).save(_b, "PNG"); _SEED_FILES.append(_b.getvalue())
_b = io.BytesIO(); noise_rgb(32, 32).save(_b, "WEBP"); _SEED_FILES.append(_b.getvalue())
_b = io.BytesIO(); noise_rgb(32, 32).save(_b, "GIF"); _SEED_FILES.append(_b.getvalue())
_b = io.BytesIO(); noise_rgb(32, 32).save(_b, "TIFF"); _SEED_FILES.append(_b.getvalue())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_SEED_FILES), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
       st.integers(0, 10_000))
def test_fuzz_mutated_real_files(seed, flips, cut):
    data = bytearray(seed)
    for pos, val in flips:
        data[pos % len(data)] = val
    data = bytes(data[: max(1, cut % (len(data) + 1))])
    try:
        img, info = decode_bytes(data, DecodeLimits(max_pixels=4_000_000))
        assert img.mode == "RGB"
    except DecodeFailure as e:
        assert e.code in ("decode-error", "unsupported-format", "too-large")


def test_corrupt_later_tiff_frame_found_by_fuzzing():
    """Regression: n_frames on a damaged TIFF raised TypeError outside the decode guard."""
    data = bytearray(_SEED_FILES[4])
    data[130] = 1
    try:
        decode_bytes(bytes(data[:140]))
    except DecodeFailure as e:
        assert e.code == "decode-error"


# --- A layout Pillow has no decoder for is not a corrupt file (docs/schema.md "Error codes")

def _refusal(data: bytes) -> str:
    with pytest.raises(DecodeFailure) as exc:
        decode_bytes(data)
    assert exc.value.code == "decode-error"
    msg = exc.value.message
    assert "corrupt" not in msg and "cannot be parsed" not in msg, msg
    return msg


def test_valid_files_in_layouts_pillow_does_not_decode_are_not_called_corrupt():
    from PIL import Image

    from aiidetect.testing.hostile import psd, tiff_file

    # Photoshop's 16- and 32-bit documents: Pillow's PSD reader has no mode for them
    for bits, mode, channels, words in ((16, 3, 3, "16-bit RGB PSD"), (32, 3, 3, "32-bit RGB PSD"),
                                        (16, 4, 4, "16-bit CMYK PSD"), (16, 9, 3, "16-bit Lab PSD")):
        msg = _refusal(psd(b"", bits=bits, mode=mode, channels=channels))
        assert msg.startswith(f"Pillow does not decode the pixels of this {words} (") and "metadata is read" in msg
    for mode, channels in ((4, 4), (9, 3)):      # 8-bit CMYK and Lab it does decode
        assert decode_bytes(psd(b"", mode=mode, channels=channels))[1]["format"] == "PSD"
    # TIFF layouts outside Pillow's table, one mechanism with the PSD's
    assert "16-bit Lab TIFF (unknown pixel mode" in _refusal(tiff_file(16, 3, 8))
    assert "32-bit float RGB TIFF (unknown pixel mode" in _refusal(tiff_file(32, 3, 2, sample_format=3))
    assert "(compression 34712) (its reader has no entry for 34712)" in _refusal(tiff_file(8, 3, 2, compression=34712))
    # a 12-bit JPEG (Pillow's JPEG reader takes 8-bit samples only; 12-bit ones are extended, SOF1,
    # never baseline) and a BMP compression it lacks
    j = bytearray(jpeg_bytes(noise_rgb(16, 16)))
    sof = j.index(b"\xff\xc0")
    j[sof + 1], j[sof + 4] = 0xC1, 12
    assert "this JPEG (cannot handle 12-bit layers)" in _refusal(bytes(j))
    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, "BMP")
    bmp = bytearray(buf.getvalue())
    struct.pack_into("<I", bmp, 30, 4)
    assert "this BMP (Unsupported BMP compression (4))" in _refusal(bytes(bmp))
    # and a damaged file is still called so
    with pytest.raises(DecodeFailure) as exc:
        decode_bytes(psd(b"")[:30])
    assert exc.value.message == "PSD header present but the file cannot be parsed"
    # as is one whose header declares what its format does not define: Pillow's refusal is the same
    # words, but no writer made it (a broken file must not read as a valid one in an unusual layout)
    for broken, words in ((psd(b"", bits=0), "0-bit RGB PSD"), (psd(b"", mode=255), "8-bit colour mode 255 PSD"),
                          (tiff_file(8, 3, 99), "8-bit photometric 99 TIFF"),
                          (tiff_file(8, 3, 2, sample_format=77), "8-bit sample format 77 RGB TIFF")):
        with pytest.raises(DecodeFailure) as exc:
            decode_bytes(broken)
        assert exc.value.message.startswith("corrupt header: ") and f"does not define: {words} (" in exc.value.message
    for sof_byte, value, says in ((4, 200, "200-bit layers"), (9, 0, "0-layer images")):
        k = bytearray(jpeg_bytes(noise_rgb(16, 16)))
        k[k.index(b"\xff\xc0") + sof_byte] = value
        with pytest.raises(DecodeFailure) as exc:
            decode_bytes(bytes(k))
        assert exc.value.message.startswith("corrupt header: the JPEG declares") and says in exc.value.message
    for at, value in ((30, 99), (28, 7)):         # compression 99, 7 bits a pixel
        broken = bytearray(bmp)
        struct.pack_into("<I" if at == 30 else "<H", broken, at, value)
        with pytest.raises(DecodeFailure) as exc:
            decode_bytes(bytes(broken))
        assert exc.value.message.startswith("corrupt header: the BMP declares"), exc.value.message
    data = bytearray(psd(b""))
    struct.pack_into(">H", data, 12, 1)           # one channel where RGB needs three
    with pytest.raises(DecodeFailure) as exc:
        decode_bytes(bytes(data))
    assert "Pillow does not decode" not in exc.value.message


def test_the_refusal_is_asked_of_a_header_not_of_a_hostile_file_again():
    """Only the plugins whose refusal can name a layout are asked again, and a PSD's reader only its
    header: a second reading of a GIF's million comment sub-blocks or a PSD's million image resources
    (a Python loop each) doubled what such a file cost."""
    from aiidetect.decode import _plugin_error
    from aiidetect.testing.hostile import psd

    empty = b"8BIM" + struct.pack(">H", 0x0400) + bytes(2) + struct.pack(">I", 0)
    for bits, refused in ((8, False), (16, True)):
        data = psd(empty * 1000, bits=bits)
        broken = data[:26 + 4 + 4 + 12 * 1000 - 5]           # cut inside the last resource
        assert isinstance(_plugin_error(broken, "PSD"), SyntaxError) is refused
    assert "16-bit RGB PSD" in _refusal(psd(empty * 1000, bits=16)[:-40])
    gif = b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0, 0, 0) + b"\x21\xfe" + b"\x01X" * 1000 + b"\x00\x99"
    assert _plugin_error(gif, "GIF") is None and _plugin_error(b"\x89PNG\r\n\x1a\n" + bytes(20), "PNG") is None
    with pytest.raises(DecodeFailure) as exc:
        decode_bytes(gif)
    assert exc.value.message == "GIF header present but the file cannot be parsed"


def test_pillows_refusal_is_quoted_at_bounded_length():
    # its key holds a TIFF's ExtraSamples as they stand: 200,000 of them were a 600 KB message
    from aiidetect.decode import MAX_REFUSAL_CHARS
    from aiidetect.testing.hostile import tiff_file

    with pytest.raises(DecodeFailure) as exc:     # (200,000 extra samples on 3: damage, and called so)
        decode_bytes(tiff_file(16, 3, 8, extra=[(338, 3, bytes(2 * 200_000))]))
    msg = exc.value.message
    assert msg.startswith("corrupt header: the TIFF declares a layout its format does not define: 16-bit Lab TIFF "
                          "(unknown pixel mode (b'II', 8")
    assert len(msg) < MAX_REFUSAL_CHARS + 200 and msg.endswith("…)")


def test_a_tiff_is_judged_by_what_pillow_read_of_it():
    from aiidetect.testing.hostile import tiff_file

    # a missing ImageWidth fails Pillow's tags[256] as a JPEG 2000 TIFF fails its compression table:
    # a KeyError, but no layout's
    data = bytearray(tiff_file(8, 3, 2))
    assert struct.unpack_from("<H", data, 10)[0] == 256
    struct.pack_into("<H", data, 10, 255)
    with pytest.raises(DecodeFailure) as exc:
        decode_bytes(bytes(data))
    assert exc.value.message == "TIFF header present but the file cannot be parsed"
    # three greyscale samples and no ExtraSamples, or an RGB page of one sample: whatever the first
    # BitsPerSample says, no writer's layout
    for broken in (tiff_file(8, 3, 1), tiff_file(16, 1, 2)):
        with pytest.raises(DecodeFailure) as exc:
            decode_bytes(broken)
        assert exc.value.message.startswith("corrupt header: the TIFF declares a layout its format does not define"), \
            exc.value.message
    # CIELab of L* alone is one
    assert "this 16-bit Lab TIFF (unknown pixel mode" in _refusal(tiff_file(16, 1, 8))


def _never(what):
    def fail(*a, **k):
        raise AssertionError(f"{what} ran on a structure the pre-check refuses")
    return fail


def test_gif_sub_blocks_before_the_first_image_refused_before_pillow_opens_it(monkeypatch):
    """Pillow's open reads every extension sub-block before a GIF's first image in Python and keeps a
    comment's (50 M one-byte comment sub-blocks, 100 MB: 75 s and 4.6 GB to scan): walked and counted
    first, stray bytes between blocks too (Pillow reads those one at a time); the cap itself decodes."""
    from PIL import GifImagePlugin

    from aiidetect import decode
    from aiidetect.testing.hostile import gif_extension_blocks, gif_frames_with

    monkeypatch.setattr(decode, "GIF_MAX_BLOCKS", 100)
    comment = gif_extension_blocks(99)          # and the empty one ending it
    img, info = decode_bytes(comment)
    assert info["format"] == "GIF" and img.size == (1, 1)
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_open", _never("Pillow's GIF reader"))
    for bomb in (gif_extension_blocks(100), gif_extension_blocks(100, label=0xFF),
                 gif_frames_with(b"\x00" * 101)):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(bomb)
        assert e.value.code == "decode-error" and "sub-blocks or stray bytes before its first image" in e.value.message


def test_gif_frames_counted_without_pillow_walking_the_image_data(monkeypatch):
    """Pillow counted a GIF's frames by walking each frame's image data in Python, a sub-block at a time
    (a first frame in 50 M one-byte sub-blocks, 100 MB: 22 s to scan): the count is read from the bytes,
    and stops at GIF_MAX_BLOCKS sub-blocks as at MAX_FRAMES_COUNTED frames."""
    from PIL import GifImagePlugin

    from aiidetect import decode
    from aiidetect.testing.hostile import gif_frames_with

    seeks = []
    real = GifImagePlugin.GifImageFile._seek
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek",
                        lambda self, frame, *a, **k: (seeks.append(frame), real(self, frame, *a, **k))[1])
    monkeypatch.setattr(decode, "GIF_MAX_BLOCKS", 100)
    img, info = decode_bytes(gif_frames_with(first_blocks=90, frames=3))
    assert info["frames"] == 3 and img.size == (1, 1)
    assert seeks == [0]
    assert decode_bytes(gif_frames_with(first_blocks=200, frames=3))[1]["frames"] == 1


def test_a_gif_is_walked_past_its_first_image_once(monkeypatch):
    """open_image's check of the sub-blocks before the first image walked every frame of the file (up to
    GIF_MAX_BLOCKS sub-blocks), then the frame count walked them all again: two passes of a large GIF per
    decode, and one more for every other open (meta's header look, the comment reader). The check stops at
    the first image now; the count is the one walk of the frames, with the same answers."""
    from aiidetect import decode
    from aiidetect.testing.hostile import gif_frames_with

    real, walked = decode.gif_walk, []
    monkeypatch.setattr(decode, "gif_walk", lambda data, *a, **k: walked.append(real(data, *a, **k)) or walked[-1])
    img, info = decode_bytes(gif_frames_with(first_blocks=50, frames=40))
    assert info["frames"] == 40 and img.size == (1, 1)
    assert sorted(frames for _, frames in walked) == [0, 40]   # the check counted none, the count all 40


def test_psd_of_too_many_image_resources_or_rows_refused_before_pillow_opens_it(monkeypatch):
    """Pillow's open reads every image resource of a PSD in Python and keeps them all (10 M empty ones,
    120 MB: 28 s and 1.3 GB to scan), and a packbits composite's row table a row at a time, before any
    pixel limit (50 M rows, 200 MB: 21 s). Counted from the lengths first; the caps themselves decode."""
    from PIL import PsdImagePlugin

    from aiidetect.limits import PSD_MAX_RESOURCES, PSD_MAX_ROWS
    from aiidetect.testing.hostile import image_resource, psd, psd_rows

    at_cap = psd(image_resource(1000, b"") * (PSD_MAX_RESOURCES - 1) + image_resource(1039, b"\x01", b"odd"))
    assert decode_bytes(at_cap)[1]["format"] == "PSD"
    assert decode_bytes(psd_rows(PSD_MAX_ROWS))[1]["height"] == PSD_MAX_ROWS
    monkeypatch.setattr(PsdImagePlugin.PsdImageFile, "_open", _never("Pillow's PSD reader"))
    for bomb, said in ((psd(image_resource(1000, b"") * (PSD_MAX_RESOURCES + 1)), "image resources"),
                       (psd_rows(PSD_MAX_ROWS + 1), "rows, over the")):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(bomb)
        assert e.value.code == "decode-error" and said in e.value.message


def test_psd_layers_counted_from_the_layer_section_header(monkeypatch):
    """Pillow's n_frames of a PSD walks every layer's row tables in Python (one layer of 50 M rows, 100 MB:
    19 s to scan): `image.frames` is the layer count the section's header declares."""
    import struct

    from PIL import Image, PsdImagePlugin

    from aiidetect.testing.hostile import psd_rows

    three = psd_rows(40, layers=3)
    assert Image.open(io.BytesIO(three)).n_frames == 3
    walked = []
    monkeypatch.setattr(PsdImagePlugin, "_layerinfo", lambda *a: walked.append(a) or [])
    assert decode_bytes(three)[1]["frames"] == 3
    # the layer info's length (after the header, empty colour data and resources, the section's length):
    # too short for 3 layers, where Pillow finds none
    short = three[:38] + struct.pack(">I", 59) + three[42:]
    assert decode_bytes(short)[1]["frames"] == 1
    assert walked == []


def test_rle_bmp_over_the_pixel_cap_refused_before_pillow_decodes_it(monkeypatch):
    """Pillow decodes RLE BMPs in Python, a byte at a time where a row ends early: one pixel and an
    end-of-line a row, 10000x12000 in 48 KB, kept a scan busy for a minute. A BMP and a DIB (no file header)
    over BMP_RLE_MAX_PIXELS are refused from the info header; the cap itself decodes."""
    from PIL import BmpImagePlugin

    from aiidetect import decode
    from aiidetect.testing.hostile import bmp_rle_row_ends

    monkeypatch.setattr(decode, "BMP_RLE_MAX_PIXELS", 64 * 32)
    img, info = decode_bytes(bmp_rle_row_ends(64, 32))
    assert info["format"] == "BMP" and img.size == (64, 32)
    monkeypatch.setattr(BmpImagePlugin.BmpRleDecoder, "decode", _never("Pillow's RLE decoder"))
    for bomb, fmt in ((bmp_rle_row_ends(64, 33), "BMP"), (bmp_rle_row_ends(64, 33)[14:], "DIB")):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(bomb)
        assert e.value.code == "decode-error"
        assert e.value.message.startswith(f"{fmt} structure refused: RLE8-compressed 64x33, over the 2048 pixels")


def test_apng_frames_are_the_frames_it_holds_not_its_acTL_claim():
    """Pillow's n_frames of an APNG is the count its acTL chunk claims: a one-frame file claiming 2**31-1
    said `frames: 2147483648`. Counted from the frame controls instead, as Pillow counts real APNGs."""
    from PIL import Image

    from aiidetect.testing.hostile import apng_claims_frames

    assert decode_bytes(apng_claims_frames())[1]["frames"] == 1
    frames = [Image.new("RGB", (8, 8), (50 * i, 0, 0)) for i in range(4)]
    for default_image in (False, True):     # the first image a frame of the animation, or only the default
        b = io.BytesIO()
        frames[0].save(b, "PNG", save_all=True, append_images=frames[1:], default_image=default_image)
        assert Image.open(io.BytesIO(b.getvalue())).n_frames == 4
        assert decode_bytes(b.getvalue())[1]["frames"] == 4


def test_psd_layers_with_a_mask_are_counted():
    """Pillow's n_frames leaves out a layer of more than 4 channels (colour, transparency and a mask: any
    Photoshop layer with a mask), so a PSD of a masked and a plain layer said `frames: 1`."""
    import struct

    from PIL import Image

    rows = 4

    def record(channels):
        table = b"".join(struct.pack(">hI", c, 2 + 2 * rows) for c in channels)
        return (struct.pack(">iiiiH", 0, 0, rows, 1, len(channels)) + table + b"8BIMnorm\xff\x00\x00\x00"
                + struct.pack(">I", 0))

    masked, plain = [-1, 0, 1, 2, -2], [0]
    info = (struct.pack(">h", 2) + record(masked) + record(plain)
            + (struct.pack(">H", 1) + b"\x00\x00" * rows) * (len(masked) + len(plain)))
    section = struct.pack(">I", len(info)) + info
    head = b"8BPS" + struct.pack(">H", 1) + b"\x00" * 6 + struct.pack(">HIIHH", 3, 8, 8, 8, 3)
    data = head + struct.pack(">III", 0, 0, len(section)) + section + struct.pack(">H", 0) + bytes(3 * 64)
    assert Image.open(io.BytesIO(data)).n_frames == 1     # Pillow's count, the masked layer left out
    assert decode_bytes(data)[1]["frames"] == 2


def test_an_rle_bmp_over_the_pixel_limit_is_too_large_not_a_decode_error():
    """`too-large` is the refusal of a file over --max-pixels (docs/schema.md), the RLE cap's `decode-error`
    is for one under it: every RLE BMP over the default limit said `decode-error`, and --max-pixels no longer
    moved the refusal."""
    from aiidetect.testing.hostile import bmp_rle

    for w, h, limits in ((12000, 12000, None), (3000, 3000, DecodeLimits(max_pixels=4_000_000))):
        for data in (bmp_rle(w, h, b"\x00\x01"), bmp_rle(w, h, b"\x00\x01", rle4=True)[14:]):
            with pytest.raises(DecodeFailure) as e:
                decode_bytes(data, limits)
            assert e.value.code == "too-large" and f"{w}x{h} = {w * h} pixels" in e.value.message
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(bmp_rle(4000, 4000, b"\x00\x01"))
    assert e.value.code == "decode-error" and "RLE8-compressed 4000x4000" in e.value.message


def _heif_encoder():
    pytest.importorskip("pillow_heif")
    from aiidetect.testing.hostile import heif_tile

    try:
        return heif_tile(64, 64)
    except Exception as exc:  # noqa: BLE001 - a pillow-heif built without its HEVC encoder
        pytest.skip(f"no HEVC encoder: {exc}")


def test_heif_grid_at_odds_with_its_size_refused_before_libheif_decodes_it(monkeypatch):
    """libheif decodes a grid tile by tile, each to its own ispe, whatever the image's size: a 3.5 KB HEIF
    whose 64x64 image was a grid of 992 references to one 2048x2048 tile took 28 s to scan, and one whose
    ispe said 64x64 over a 16384x15872 grid passed --max-pixels, then took 24 s and 400 MB before libheif
    refused the size it had decoded. A real grid (a part of a tile past its edge) still decodes."""
    from aiidetect.provenance.containers import walk
    from aiidetect.testing.hostile import heif_grid

    tile = _heif_encoder()
    img, info = decode_bytes(heif_grid(2, 2, 64, 64, 120, 100, tile=tile))
    assert img.size == (120, 100) and (info["width"], info["height"]) == (120, 100)
    pillow_heif = pytest.importorskip("pillow_heif.as_plugin")
    monkeypatch.setattr(pillow_heif.HeifImageFile, "_open", _never("pillow-heif"))
    for bomb, said in ((heif_grid(31, 32, 2048, 2048, 64, 64), "tiles outside the image"),
                       (heif_grid(31, 32, 512, 512, ispe=(64, 64)), "but its ispe says 64x64")):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(bomb)
        assert e.value.code == "decode-error" and "HEIF structure refused" in e.value.message, e.value.message
        assert said in e.value.message
        assert any(said in err for err in walk(bomb).errors)    # `meta` opens no such file either


def test_heif_grid_tiles_count_against_the_pixel_limit(monkeypatch):
    """A 1x1 grid crops one tile to the image: a 64x64 image of a 1000x1000 tile costs the tile's pixels.
    Over DECODE_BUDGET_IMAGES x --max-pixels of them: too-large, naming the --max-pixels that takes it."""
    pillow_heif = pytest.importorskip("pillow_heif.as_plugin")
    from aiidetect.testing.hostile import heif_grid

    monkeypatch.setattr(pillow_heif.HeifImageFile, "_open", _never("pillow-heif"))
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(heif_grid(1, 1, 1000, 1000, 64, 64), DecodeLimits(max_pixels=400_000))
    assert e.value.code == "too-large" and "1000000 pixels of coded images" in e.value.message
    assert "--max-pixels 500000 or more" in e.value.message


def test_heif_tables_over_the_cap_refused(monkeypatch):
    """The item tables are walked in Python: a meta box of more entries than any real file holds is refused
    unwalked (libheif refuses more than 1,000 references itself)."""
    import aiidetect.structures as structures
    from aiidetect.testing.hostile import heif_grid

    bomb = heif_grid(2, 2, 64, 64)
    monkeypatch.setattr(structures, "HEIF_MAX_ENTRIES", 4)
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(bomb)
    assert e.value.code == "decode-error" and "more than 4 table entries in its meta box" in e.value.message


def test_heif_primary_image_is_the_one_decoded():
    """A HEIF opens on its primary image, which need not be its first: counting the frames sought back to
    frame 0, so the record gave the primary's size and the detectors judged the other picture."""
    _heif_encoder()
    from aiidetect.testing.hostile import heif_two_images

    img, info = decode_bytes(heif_two_images((64, 64), (128, 96)))
    assert info["frames"] == 2 and (info["width"], info["height"]) == (128, 96)
    assert img.size == (128, 96)


def test_mpo_frames_are_the_pictures_its_index_points_at():
    """Pillow's n_frames is the count a multi-picture JPEG's MP index declares: a 66 KB file of one picture
    said 4,000 frames. Counted: the entries whose offset starts a JPEG in the file, each place once."""
    from PIL import Image

    from aiidetect.testing.hostile import _noise, mpo_index

    assert Image.open(io.BytesIO(mpo_index(4000))).n_frames == 4000
    assert decode_bytes(mpo_index(4000))[1]["frames"] == 1
    b = io.BytesIO()
    _noise().save(b, "MPO", save_all=True, append_images=[_noise(seed=1), _noise(seed=2)])
    img, info = decode_bytes(b.getvalue())
    assert info["format"] == "JPEG" and info["frames"] == 3


def test_a_jpeg_with_a_gain_map_is_decoded_and_hashed_as_the_jpeg_it_is():
    """An iPhone HDR photo is a JPEG whose multi-picture index points at its gain map, appended after it: Pillow
    opens it as MPO. Named MPO, the record said a format `meta` and docs/schema.md did not, and the JPEG draft
    was never taken: the perceptual hash decoded it whole and hashed it up to 6 bits away from the same picture
    without its gain map (its copy after a messenger). Its first picture is decoded, as a JPEG."""
    from PIL import Image

    from aiidetect.decode import phash_bytes
    from aiidetect.testing.phone import exif_block, gain_map_jpeg, jpeg

    x = np.linspace(0, 255, 1024)[None, :, None] * np.ones((768, 1, 3))  # a ramp with grain: whole and drafted
    y = np.linspace(0, 255, 768)[:, None, None]                            # decodes hash apart
    grain = np.random.default_rng(0).normal(0, 20, x.shape)
    primary = jpeg(Image.fromarray((x * 0.6 + y * 0.4 + grain).clip(0, 255).astype(np.uint8)),
                   exif_block("Apple", "iPhone 15 Pro"))
    hdr = gain_map_jpeg("apple", primary=primary)
    assert Image.open(io.BytesIO(hdr)).format == "MPO"
    img, info = decode_bytes(hdr, draft=256)
    plain_img, plain = decode_bytes(primary, draft=256)
    assert info["format"] == "JPEG" and info["frames"] == 2
    assert info["draft"] == plain["draft"] == [512, 384]
    assert np.array_equal(np.asarray(img), np.asarray(plain_img))
    assert phash_bytes(hdr) == phash_bytes(primary)


def test_a_multi_picture_jpeg_is_format_jpeg_as_meta_and_the_doc_say(tmp_path):
    """Pillow opens a phone's multi-picture JPEG as "MPO": the scan record said `format` MPO, a value
    docs/schema.md does not list, while `meta` said JPEG for the same file; a script
    selecting JPEGs lost those photos."""
    from aiidetect import ScanOptions, Scanner
    from aiidetect.api import meta_report
    from aiidetect.testing.images import noise_rgb

    f = tmp_path / "portrait.jpg"
    noise_rgb().save(f, "MPO", save_all=True, append_images=[noise_rgb().rotate(90)])
    with Scanner(ScanOptions(detectors=["metadata"], cache=False)) as scanner:
        (rec,) = [r.to_dict() for r in scanner.scan([str(f)])]
    assert rec["format"] == meta_report(str(f), "never")["format"] == "JPEG"
    assert rec["image"]["frames"] == 2


def test_heif_cropped_by_its_clean_aperture_is_judged_by_its_coded_size(monkeypatch):
    """Readers give a HEIF's size after its clean-aperture crop; libheif decodes the whole coded image first: a
    15 KB 8192x8192 image cropped to 64x64 took 250 MB to decode under any --max-pixels. Its ispe is what
    --max-pixels is held to."""
    pillow_heif = pytest.importorskip("pillow_heif.as_plugin")
    from aiidetect.testing.hostile import heif_cropped

    monkeypatch.setattr(pillow_heif.HeifImageFile, "_open", _never("pillow-heif"))
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(heif_cropped(20000, 20000, 64))
    assert e.value.code == "too-large" and "20000x20000" in e.value.message


def test_heif_exif_item_over_the_cap_is_not_handed_to_pillow_heif():
    """pillow-heif copies a HEIF's Exif item at open, three times over (a 100 MB one: `meta` peaked at 677 MB,
    `scan -d metadata` at 580 MB, against 370 MB for a file of that size without): over the readers' cap
    (DECODE_MAX_METADATA_CHUNK) it is unlinked from the image first, and the record says so; under it, read."""
    pytest.importorskip("pillow_heif")
    from PIL import Image

    from aiidetect.decode import open_image
    from aiidetect.limits import DECODE_MAX_METADATA_CHUNK
    from aiidetect.provenance.containers import walk
    from aiidetect.testing.hostile import heif_with_exif

    small = heif_with_exif(1000)
    assert open_image(small).info.get("exif")
    assert [src for _, src in walk(small).exif] == ["HEIF Exif item"]
    big = heif_with_exif(DECODE_MAX_METADATA_CHUNK + 1)
    assert Image.open(io.BytesIO(big)).info.get("exif")           # what pillow-heif would have copied
    assert not open_image(big).info.get("exif")
    b = walk(big)
    assert not b.exif and any("'Exif item' of" in e and "not read" in e for e in b.errors), b.errors


def test_heif_idat_exif_item_of_length_0_is_measured_to_the_end_of_idat():
    """An item stored in `idat` (construction method 1) whose extent has length 0 runs to the end of `idat`, as
    its data is read (HeifLayout.item_span): a 50-byte Exif item there was measured to the end of the file and
    unlinked from its image as over the cap, its Exif withheld, in a file larger than the cap."""
    from aiidetect.metastrip import strip_oversize
    from aiidetect.testing.hostile import bmff_box, heif_file, heif_ispe

    coded, exif = bytes(16), b"\0\0\0\0MM\0*\0\0\0\x08" + bytes(36)
    items = [(1, b"hvc1", [(0, len(coded))], 0), (2, b"Exif", [(0, 0)], 1)]
    data = heif_file(items, [bmff_box(b"hvcC", bytes(23)), heif_ispe(64, 64)], {1: [1, 2]},
                     refs=[(b"cdsc", 2, [1])], mdat=coded + bytes(500), idat=exif)
    assert len(data) > 100
    assert strip_oversize(data, "HEIF", limit=100) == (None, None)
    lean, said = strip_oversize(data, "HEIF", limit=len(exif) - 1)
    assert lean is not None and f"'Exif item' of {len(exif)} bytes" in said, said


def test_heif_reference_type_offset_of_a_box_with_a_64_bit_size():
    """Each `iref` entry's type is found where its box puts it (HeifLayout.refs: the four bytes the Exif strip
    renames). A box with a 64-bit size whose last four bytes spelled its own type was taken for an 8-byte
    header: the strip would have renamed its size, its `cdsc` link left in place."""
    from aiidetect.structures import heif_layout
    from aiidetect.testing.hostile import bmff_box, heif_tables

    plain = bmff_box(b"cdsc", struct.pack(">HHH", 2, 1, 1))
    large_size = int.from_bytes(b"cdsc", "big")                  # larger than the file: the last box of its list
    large = struct.pack(">I4sQ", 1, b"cdsc", large_size) + struct.pack(">HHH", 3, 1, 1)
    data = heif_tables(bmff_box(b"iref", plain + large, (0, 0)))
    iref = data.index(b"iref") + 8
    expected = [(b"cdsc", iref + 4, 2), (b"cdsc", iref + len(plain) + 4, 3)]
    assert heif_layout(data).refs == expected


def test_heif_item_tables_are_walked_within_one_budget(monkeypatch):
    """The item tables are walked in Python, and a table's entries can take no bytes of the file (an iloc of
    0-byte offsets and lengths, as the format allows) or many tables can share one kind: a 245-byte HEIF of 20
    such iloc items of 65,535 extents took 9 s to walk, 13 MB of dimg references 17 s and 238 MB, 1 MB of
    property associations 6 s. HEIF_MAX_ENTRIES bounds the tables' entries all together, before any
    reader opens the file."""
    pillow_heif = pytest.importorskip("pillow_heif.as_plugin")
    from aiidetect.provenance.containers import walk
    from aiidetect.testing.hostile import heif_iloc_zero_fields, heif_ipma_many, heif_iref_many

    monkeypatch.setattr(pillow_heif.HeifImageFile, "_open", _never("pillow-heif"))
    for bomb in (heif_iloc_zero_fields(2, 0xFFFF), heif_ipma_many(300, 255), heif_iref_many(2, 0xFFFF)):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(bomb)
        assert e.value.code == "decode-error" and "HEIF structure refused" in e.value.message, e.value.message
        assert "more than 65536 table entries" in e.value.message
        assert any("more than 65536 table entries" in err for err in walk(bomb).errors)


def test_avif_grid_of_many_tiles_refused_before_libavif_opens_it(monkeypatch):
    """libavif's work grows faster than its tiles: a 1.8 MB AVIF grid of 200x200 8x8 tiles (a 1600x1600 image)
    took it 8 s before it refused the grid, 170x170 tiles of 64x64 (118 MP, under --max-pixels) 7 s and
    1 GB. Each tile is an item of its own, with its entries in the item tables: the tables' budget refuses
    such a grid before libavif reads it; a real grid (tens to hundreds of tiles) decodes."""
    from PIL import AvifImagePlugin, features

    from aiidetect.testing.hostile import avif_grid_items, avif_tile

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    img, info = decode_bytes(avif_grid_items(4, 6, tile=avif_tile(64, 64)))
    assert info["format"] == "AVIF" and img.size == (384, 256)
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", _never("libavif"))
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(avif_grid_items(100, 100, 8, 8))
    assert e.value.code == "decode-error" and "AVIF structure refused" in e.value.message, e.value.message


def test_avif_image_counts_the_frame_its_av1_data_codes_not_its_ispe(monkeypatch):
    """libavif decodes an AV1 image's whole frame whatever its `ispe` says (libheif refuses an HEVC one larger
    than its ispe): a 12.6 KB AVIF grid of 16x16 tiles whose ispe said 64x64 over 8192x8192 frames took 63 s to
    decode to a 1024x1024 image. Its coded pixels are the larger of the two, from the sequence header."""
    from PIL import AvifImagePlugin, features

    from aiidetect.testing.hostile import av1_sequence_header, avif_grid_items, bmff_box, heif_file, heif_ispe

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", _never("libavif"))
    av1c, pixi = bmff_box(b"av1C", bytes(4)), bmff_box(b"pixi", b"\x03\x08\x08\x08", (0, 0))
    coded = av1_sequence_header(8192, 8192) + bytes(32)
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(avif_grid_items(4, 4, 64, 64, tile=(av1c, pixi, coded)))
    assert e.value.code == "too-large" and f"{16 * 8192 * 8192} pixels of coded images" in e.value.message
    one = heif_file([(1, b"av01", [(0, len(coded))], 0)], [av1c, heif_ispe(64, 64), pixi], {1: [1, 2, 3]},
                    mdat=coded, brand=b"avif")
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(one, DecodeLimits(max_pixels=10_000_000))
    assert e.value.code == "too-large" and f"{8192 * 8192} pixels of coded images" in e.value.message


def test_heif_alpha_image_is_checked_with_the_image(monkeypatch):
    """libheif decodes an image's alpha (an auxiliary image) with it: the grid bomb moved into the alpha of a 64x64
    image (a 31x32 grid of one flat 2048x2048 tile, 5.3 KB) took 24 s to decode. Its grid is checked and its
    coded pixels counted with the image's; a real alpha still decodes."""
    pillow_heif = pytest.importorskip("pillow_heif.as_plugin")
    from aiidetect.testing.hostile import heif_alpha_grid

    tile = _heif_encoder()
    img, info = decode_bytes(heif_alpha_grid(1, 1, 64, 64, tile=tile, alpha_tile=tile))
    assert img.size == (64, 64) and info["has_alpha"]
    monkeypatch.setattr(pillow_heif.HeifImageFile, "_open", _never("pillow-heif"))
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(heif_alpha_grid(31, 32, 2048, 2048))
    assert e.value.code == "decode-error" and "tiles outside the image" in e.value.message, e.value.message
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(heif_alpha_grid(1, 1, 1000, 1000), DecodeLimits(max_pixels=400_000))
    assert e.value.code == "too-large" and f"{64 * 64 + 1000 * 1000} pixels of coded images" in e.value.message


def test_avif_sequence_header_hidden_behind_padding_is_refused(monkeypatch):
    """dav1d reads past any number of padding OBUs to the sequence header: one the pixel count cannot find in
    the OBUs it looks through (writers put it first) would let the `ispe` alone speak for the frame."""
    from PIL import AvifImagePlugin, features

    from aiidetect.structures import AV1_MAX_OBUS
    from aiidetect.testing.hostile import av1_sequence_header, bmff_box, heif_file, heif_ispe

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", _never("libavif"))
    av1c, pixi = bmff_box(b"av1C", bytes(4)), bmff_box(b"pixi", b"\x03\x08\x08\x08", (0, 0))
    coded = b"\x7a\x00" * AV1_MAX_OBUS + av1_sequence_header(8192, 8192) + bytes(32)     # padding OBUs first
    one = heif_file([(1, b"av01", [(0, len(coded))], 0)], [av1c, heif_ispe(64, 64), pixi], {1: [1, 2, 3]},
                    mdat=coded, brand=b"avif")
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(one)
    assert e.value.code == "decode-error" and f"no AV1 sequence header in its first {AV1_MAX_OBUS}" in e.value.message


def test_avif_sequence_header_split_into_a_later_extent_is_refused(monkeypatch):
    """libavif joins an item's extents before dav1d reads them: a first extent of padding alone, the sequence
    header in the next, would let the `ispe` alone speak for the frame."""
    from PIL import AvifImagePlugin, features

    from aiidetect.testing.hostile import av1_sequence_header, bmff_box, heif_file, heif_ispe

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", _never("libavif"))
    av1c, pixi = bmff_box(b"av1C", bytes(4)), bmff_box(b"pixi", b"\x03\x08\x08\x08", (0, 0))
    rest = av1_sequence_header(8192, 8192) + bytes(32)
    one = heif_file([(1, b"av01", [(0, 2), (2, len(rest))], 0)], [av1c, heif_ispe(64, 64), pixi], {1: [1, 2, 3]},
                    mdat=b"\x7a\x00" + rest, brand=b"avif")
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(one)
    assert e.value.code == "decode-error" and "no AV1 sequence header in its first data extent" in e.value.message


def _avif_sequences():
    """A still, an alpha still, a sequence and an alpha sequence (colour and alpha tracks), encoded by Pillow."""
    from PIL import Image

    def enc(frames, mode):
        shots = [Image.new(mode, (48, 32), (40 * i, 120, 200, 128)[:len(mode)]) for i in range(frames)]
        b = io.BytesIO()
        shots[0].save(b, "AVIF", save_all=frames > 1, append_images=shots[1:], quality=30)
        return b.getvalue()

    return {"still": (enc(1, "RGB"), 1), "alpha": (enc(1, "RGBA"), 1), "seq": (enc(3, "RGB"), 3),
            "seq_alpha": (enc(2, "RGBA"), 2)}


def test_avif_sequence_counts_the_frame_its_track_codes(monkeypatch):
    """libavif decodes an AVIF image sequence (`avis`) from its track, not its item: a 1.9 KB `avis` whose item
    and track said 64x64 over a first sample of an 8192x8192 frame passed --max-pixels and took 210 MB to
    scan (a 64x64 one: 69 MB). Its track's first frame counts, the larger of the sizes its tables declare and
    the frame its sequence header gives, as an item's does; stills, alpha and sequences still decode."""
    from PIL import AvifImagePlugin, features

    from aiidetect.structures import AV1_MAX_OBUS
    from aiidetect.testing.hostile import av1_sequence_header, avis

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    for name, (data, frames) in _avif_sequences().items():
        img, info = decode_bytes(data, DecodeLimits(max_pixels=48 * 32))
        assert img.size == (48, 32) and info["frames"] == frames, name
        assert info["has_alpha"] == ("alpha" in name), name
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", _never("libavif"))
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(avis(2, 64, 64, first=av1_sequence_header(8192, 8192) + bytes(32)),
                     DecodeLimits(max_pixels=10_000_000))
    assert e.value.code == "too-large" and f"{8192 * 8192} pixels of coded images" in e.value.message
    with pytest.raises(DecodeFailure) as e:        # libavif's own ceiling, 268 MP: over 2 x the default limit
        decode_bytes(avis(2, 64, 64, first=av1_sequence_header(16384, 16384) + bytes(32)))
    assert e.value.code == "too-large" and f"{16384 * 16384} pixels of coded images" in e.value.message
    with pytest.raises(DecodeFailure) as e:        # dav1d reads past padding OBUs to the sequence header
        decode_bytes(avis(2, 64, 64, first=b"\x7a\x00" * AV1_MAX_OBUS + av1_sequence_header(8192, 8192)))
    assert e.value.code == "decode-error" and "track 1's first sample: no AV1 sequence header" in e.value.message


def test_avif_sequence_frames_counted_up_to_the_cap():
    """libavif counts the samples an `avis` track's table declares, up to 2,592,000 (one chunk of them, each the
    first's size, in 88 MB): image.frames says at most limits.MAX_FRAMES_COUNTED, as for a GIF."""
    from PIL import features

    from aiidetect.limits import MAX_FRAMES_COUNTED
    from aiidetect.testing.hostile import avis

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    img, info = decode_bytes(avis(2, 8, 8, claimed=MAX_FRAMES_COUNTED + 1))
    assert img.size == (8, 8) and info["frames"] == MAX_FRAMES_COUNTED
    assert decode_bytes(avis(2, 8, 8, claimed=MAX_FRAMES_COUNTED - 1))[1]["frames"] == MAX_FRAMES_COUNTED - 1


def test_avif_sequence_track_boxes_are_capped(monkeypatch):
    """The walk of an `avis` track's boxes counts them against limits.HEIF_MAX_ENTRIES, as the `meta` box's
    tables do: a track of 70,000 empty boxes is refused before libavif reads it."""
    from PIL import AvifImagePlugin, features

    from aiidetect.testing.hostile import avis, bmff_box

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    d = avis(2, 8, 8)
    at = d.index(b"moov") - 4
    moov = bmff_box(b"moov", bmff_box(b"trak", bmff_box(b"free") * 70_000))
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", _never("libavif"))
    with pytest.raises(DecodeFailure) as e:
        decode_bytes(d[:at] + moov)
    assert e.value.code == "decode-error" and "more than 65536 table entries in its moov box" in e.value.message


def test_avif_sequence_tables_read_as_libavif_reads_them(monkeypatch):
    """A second `auxl` reference or `stco` box must not hide the frame libavif decodes: it keeps a track's last
    `auxl` (the alpha track below, whose first sample is 8192x8192, was not counted behind a first `auxl` to a track
    that is not there: 64x64 samples said, 1.4 GB and 5 s in libavif) and the first `stco` box's first chunk."""
    from PIL import AvifImagePlugin, Image, features

    from aiidetect.testing.hostile import av1_sequence_header, avis_moved

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    b = io.BytesIO()
    shots = [Image.new("RGBA", (64, 64), (40 * i, 120, 200, 128)) for i in range(2)]
    shots[0].save(b, "AVIF", save_all=True, append_images=shots[1:], quality=30)
    rgba = b.getvalue()
    big = av1_sequence_header(8192, 8192) + bytes(32)

    def tracks(tree):
        return [box for kind, box in tree if kind == b"trak"]

    def decoy_auxl(tree):
        next(box for kind, box in tracks(tree)[1] if kind == b"tref").insert(0, [b"auxl", struct.pack(">I", 99)])

    def decoy_stco(tree):
        stbl = tracks(tree)[0]
        for kind in (b"mdia", b"minf", b"stbl"):
            stbl = next(box for k, box in stbl if k == kind)
        stco = next(box for box in stbl if box[0] == b"stco")
        stbl.insert(stbl.index(stco), [b"stco", stco[1]])   # the first: moved to the big sample below

    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", _never("libavif"))
    for edit, track in ((decoy_auxl, 1), (decoy_stco, 0)):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(avis_moved(rgba, edit, big, track), DecodeLimits(max_pixels=10_000_000))
        assert e.value.code == "too-large" and f"{8192 * 8192 + 64 * 64} pixels" in e.value.message, edit.__name__


def test_avif_sequence_sample_tables_capped_before_libavif(monkeypatch):
    """libavif lists every sample an `avis` track declares (up to 2,592,000) and finds each chunk's samples by
    reading the `stsc` table back from its end: 120,000 chunks and as many entries (1.9 MB) took 15 s to open,
    growing with their square. limits.AVIF_MAX_SAMPLES and AVIF_MAX_CHUNK_LOOKUPS hold them; a table within
    both still decodes."""
    from PIL import AvifImagePlugin, features

    from aiidetect.limits import AVIF_MAX_CHUNK_LOOKUPS, AVIF_MAX_SAMPLES
    from aiidetect.testing.hostile import avis, avis_chunks

    if not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    n = int(AVIF_MAX_CHUNK_LOOKUPS ** 0.5)
    assert decode_bytes(avis_chunks(n))[1]["frames"] == n
    real = AvifImagePlugin.AvifImageFile._open
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", _never("libavif"))
    for data, says in ((avis_chunks(n + 1), f"{n + 1} chunks and {n + 1} stsc entries"),
                       (avis_chunks(n + 1, runs=AVIF_MAX_SAMPLES + 1), f"{AVIF_MAX_SAMPLES + 1} stsc entries"),
                       (avis_chunks(AVIF_MAX_SAMPLES + 1, runs=1), f"{AVIF_MAX_SAMPLES + 1} entries"),
                       (avis(2, 8, 8, claimed=AVIF_MAX_SAMPLES + 1), f"{AVIF_MAX_SAMPLES + 1} samples")):
        with pytest.raises(DecodeFailure) as e:
            decode_bytes(data)
        assert e.value.code == "decode-error" and says in e.value.message
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "_open", real)
    assert decode_bytes(avis(2, 8, 8, claimed=AVIF_MAX_SAMPLES))[1]["frames"] == 10_000


def test_avif_sequence_stsc_runs_of_all_tracks_share_one_budget():
    """The `stsc` runs the walk keeps count against the `moov` box's entries (limits.HEIF_MAX_ENTRIES), all the
    tracks together: 50 tracks of 65,536 runs each (39 MB), each under AVIF_MAX_SAMPLES, took the walk 2.7 s and
    400 MB."""
    from aiidetect.limits import HEIF_MAX_ENTRIES
    from aiidetect.structures import HeifLayoutError, bmff_tracks
    from aiidetect.testing.hostile import bmff_box

    runs = b"".join(struct.pack(">III", i + 1, 1, 1) for i in range(HEIF_MAX_ENTRIES // 2))
    stsc = bmff_box(b"stsc", bytes(4) + struct.pack(">I", HEIF_MAX_ENTRIES // 2) + runs)
    trak = bmff_box(b"trak", bmff_box(b"mdia", bmff_box(b"minf", bmff_box(b"stbl", stsc))))
    assert len(bmff_tracks(bmff_box(b"moov", trak))) == 1
    with pytest.raises(HeifLayoutError, match="table entries"):
        bmff_tracks(bmff_box(b"moov", trak * 2))


def test_heif_item_tables_are_read_once_a_decode_and_once_a_metadata_walk(monkeypatch):
    """A HEIF's item tables (structures.heif_layout) and an AVIF sequence's tracks (bmff_tracks) cost 11-27 ms a
    read near their entry cap: the decoder read them 2 times a file (its pixel checks, then open_image's), 4 over
    DECODE_MAX_METADATA_CHUNK (decode_bytes' strip and open_image's too), the metadata walk 1 and 3. Each is
    read once now and handed down (structures.heif_layout_read)."""
    import aiidetect.metastrip as metastrip
    import aiidetect.structures as structures
    from aiidetect.limits import DECODE_MAX_METADATA_CHUNK
    from aiidetect.provenance.containers import walk
    from aiidetect.testing.hostile import avis, heif_iloc_zero_fields, heif_with_exif

    reads = {"heif_layout": 0, "bmff_tracks": 0}

    def counted(name):
        real = getattr(structures, name)

        def read(*args, **kwargs):
            reads[name] += 1
            return real(*args, **kwargs)
        return read

    for name in reads:
        read = counted(name)
        monkeypatch.setattr(structures, name, read)
        monkeypatch.setattr(metastrip, name, read, raising=False)   # where a module took its own name for it
    files = {"small": (heif_with_exif(1000), 1), "over the cap": (heif_with_exif(DECODE_MAX_METADATA_CHUNK + 1), 1),
             "sequence": (avis(2, 8, 8), 1), "tables refused": (heif_iloc_zero_fields(2, 0xFFFF), 0)}
    for what, (data, tracks) in files.items():
        for doing, read in (("decode", decode_bytes), ("walk", walk)):
            reads.update(heif_layout=0, bmff_tracks=0)
            try:
                read(data)
            except DecodeFailure:
                pass
            assert reads == {"heif_layout": 1, "bmff_tracks": tracks}, (what, doing, reads)


def test_a_scan_reads_a_heifs_item_tables_once_for_the_decode_and_the_metadata_walk(monkeypatch, tmp_path):
    """The scan's worker decoded a HEIF/AVIF (one read of its item tables) and then the metadata detector walked
    the same bytes (a second read). The decode's read is handed to the walk now, in `scan` and in `meta`
    (file_provenance); the walk's result is the one a read of its own gives."""
    import aiidetect.structures as structures
    from aiidetect.limits import DECODE_MAX_METADATA_CHUNK
    from aiidetect.metadata.detector import MetadataDetector, file_provenance
    from aiidetect.pipeline import run_detectors
    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import avis, heif_iloc_zero_fields, heif_with_exif

    reads = []
    real = structures.heif_layout
    monkeypatch.setattr(structures, "heif_layout", lambda data: reads.append(len(data)) or real(data))
    files = {"small": heif_with_exif(1000), "over the cap": heif_with_exif(DECODE_MAX_METADATA_CHUNK + 1),
             "sequence": avis(2, 8, 8), "tables refused": heif_iloc_zero_fields(2, 0xFFFF)}
    for what, data in files.items():
        path = tmp_path / f"{what.replace(' ', '_')}.heic"
        path.write_bytes(data)
        reads.clear()
        got = run_detectors([str(path)], [MetadataDetector({"watermark": "always"})])[0].detectors["metadata"]
        assert len(reads) == 1, (what, reads)
        reads.clear()
        meta = file_provenance(data, str(path), {"watermark": "always"})
        assert len(reads) == 1, (what, "meta", reads)
        ref = analyze(data, str(path), options={"watermark": "always"})    # the walk on a read of its own
        assert [e.id for e in got.evidence] == [e.id for e in ref.evidence] == [e.id for e in meta.evidence], what
        assert got.extra.get("errors", []) == ref.errors == meta.errors, what
        assert {k: v for k, v in got.extra["facts"].items() if k != "watermark"} == \
            {k: v for k, v in ref.facts.items() if k != "watermark"}, what


def test_a_sample_handed_back_to_a_caller_holds_no_heif_read(tmp_path):
    """The decode's read of a HEIF's item tables is kept on the sample only for the scan's per-file detectors,
    which drop it after (DecodeStage): its tables can be MBs for a file of 100 bytes (65,000 zero-byte `iloc`
    extents: 4 MB), and decode_path, a PixelReader or iter_pixels keeping the bytes held it for every sample
    they handed back (20 samples of that file: 82 MB)."""
    from aiidetect.decode import decode_sample, read_sample
    from aiidetect.pixels import PixelReader, iter_pixels
    from aiidetect.testing.hostile import heif_iloc_zero_fields

    path = tmp_path / "tables.heic"
    path.write_bytes(heif_iloc_zero_fields(1, 65000))
    handed = [decode_path(str(path)), PixelReader()(str(path)),
              *iter_pixels([str(path)], keep_bytes=True, workers=1)]
    assert all(s.data is not None and s.layout is None for s in handed)
    s = decode_sample(read_sample(str(path)), keep_layout=True)     # the scan's reader asks for it
    assert s.layout is not None and s.layout.data is s.data and len(s.layout.layout.extents[1][1]) == 65000


def test_a_transform_that_replaces_a_heifs_bytes_drops_the_decodes_read_of_them():
    """Evaluation's perturbations hand the detectors re-encoded bytes (s.data) after the decode: the decode's read
    of the file's own (Sample.layout) stands for none of them and held the file's bytes beside the new ones
    through the per-file detectors."""
    from aiidetect.decode import Sample, decode_sample
    from aiidetect.records import Record
    from aiidetect.testing.hostile import avis

    def reencode(img, s):
        out = io.BytesIO()
        img.save(out, "PNG")
        s.data = out.getvalue()
        return img

    for transform, kept in ((None, True), (reencode, False)):
        data = avis(2, 8, 8)
        s = Sample(index=0, path="a.avif", record=Record(file="a.avif"), data=data)
        decode_sample(s, transform=transform, keep_layout=True)
        assert s.ok, s.record.error
        assert (s.layout is not None and s.layout.data is data) == kept


def test_a_heif_layout_read_of_other_bytes_checks_nothing_of_these(monkeypatch):
    """A layout handed down (structures.heif_layout_read) stands for the bytes it was read from and no other: a
    caller handing open_image or decode_bytes the read of another file (a stale one, a benign one beside a
    hostile one) passed a grid bomb to libheif unchecked."""
    from aiidetect.decode import open_image
    from aiidetect.structures import heif_layout_read
    from aiidetect.testing.hostile import heif_grid

    pillow_heif = pytest.importorskip("pillow_heif.as_plugin")
    monkeypatch.setattr(pillow_heif.HeifImageFile, "_open", _never("pillow-heif"))
    benign, bomb = heif_grid(2, 2, 64, 64), heif_grid(31, 32, 2048, 2048, 64, 64)
    for opening in (lambda: open_image(bomb, layout=heif_layout_read(benign)),
                    lambda: decode_bytes(bomb, layout=heif_layout_read(benign))):
        with pytest.raises(DecodeFailure, match="tiles outside the image"):
            opening()


def test_the_heif_metadata_strips_copy_gets_the_read_a_read_of_it_gives(monkeypatch):
    """The copy without links to an Exif item over the cap is checked and opened with a read of its own (the
    original's, its renamed references as the copy has them, marked lean): what reading the copy gives."""
    import aiidetect.metastrip as metastrip
    from aiidetect.structures import heif_layout, heif_layout_read
    from aiidetect.testing.hostile import heif_with_exif

    data = heif_with_exif(1000)
    monkeypatch.setattr(metastrip, "DECODE_MAX_METADATA_CHUNK", 100)
    read = heif_layout_read(data)
    lean, said, lean_read = metastrip.strip_oversize_heif(data, "HEIF", read)
    assert lean != data and "Exif item" in said and lean_read.data is lean and lean_read.lean and not read.lean
    assert vars(lean_read.layout) == vars(heif_layout(lean))
    assert [kind for kind, _, _ in lean_read.layout.refs] == [b"skip"]
    assert metastrip.strip_oversize_heif(lean, "HEIF", lean_read) == (lean, None, lean_read)


def test_a_file_whose_pixels_fail_keeps_the_size_its_header_states(tmp_path):
    """docs/schema.md: `width` and `height` are null only when no header gave them. A PNG cut short after its
    IHDR (a download that stopped) and one over --max-pixels had null beside `meta`'s 64x48 for the same file."""
    import io

    b = io.BytesIO()
    noise_rgb(64, 48).save(b, "PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(b.getvalue()[:-60])
    s = decode_path(str(cut))
    assert s.record.error.code == "decode-error"
    assert (s.record.format, s.record.width, s.record.height) == ("PNG", 64, 48)
    big = tmp_path / "big.png"
    big.write_bytes(b.getvalue())
    s = decode_path(str(big), limits=DecodeLimits(max_pixels=1000))
    assert s.record.error.code == "too-large"
    assert (s.record.width, s.record.height) == (64, 48)
    signature_only = tmp_path / "sig.png"
    signature_only.write_bytes(b.getvalue()[:8])  # no header: nothing to state
    s = decode_path(str(signature_only))
    assert s.record.error is not None and (s.record.width, s.record.height) == (None, None)


def test_a_heif_over_the_pixel_limit_keeps_no_size_its_ispe_states(tmp_path):
    """A HEIF's `ispe` is before its crop (and rotation): a 64x64 `clap` over a 2^31 x 2^31 `ispe` decodes, and is
    in `meta`, as 64x64. Refused on that `ispe`, the record said 2147483648x2147483648 as the image's size."""
    from aiidetect.testing.hostile import heif_cropped

    for side, limits in ((256, DecodeLimits(max_pixels=10_000)), (2 ** 31, None)):
        (tmp_path / "c.heic").write_bytes(heif_cropped(side, side, crop=64))
        s = decode_path(str(tmp_path / "c.heic"), limits=limits)
        assert s.record.error.code == "too-large" and str(side) in s.record.error.message
        assert (s.record.format, s.record.width, s.record.height) == ("HEIF", None, None)


def _png_ihdr(w: int, h: int) -> bytes:
    """A PNG whose IHDR states w x h (any 32-bit values) over a token IDAT."""
    import zlib

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


def test_a_file_refused_from_its_header_keeps_the_size_meta_gives_it():
    """docs/schema.md `width`, `height`: a JPEG whose SOF says 65000x65000 (Pillow refuses it as a decompression
    bomb as it opens it) and an RLE BMP over the RLE cap were null in `scan` beside 65000x65000 and 5000x5000 in
    `meta`. Their size is the one meta's header walk reads, kept only where the decoder counted the same pixels:
    a header's zero side is never a size, a negative BMP side is its magnitude (as meta gives it)."""
    from aiidetect.pixels import PixelReader
    from aiidetect.provenance.containers import walk
    from aiidetect.testing.hostile import bmp_rle, jpeg_huge_sof

    cases = [(jpeg_huge_sof(), "too-large", (65000, 65000)),
             (_png_ihdr(2 ** 31, 2), "too-large", (2 ** 31, 2)),
             (_png_ihdr(2 ** 32 - 1, 65535), "too-large", (2 ** 32 - 1, 65535)),
             (bmp_rle(5000, 5000, b"\x00\x01"), "decode-error", (5000, 5000)),
             (bmp_rle(5000, 5000, b"\x00\x01", rle4=True)[14:], "decode-error", (5000, 5000)),  # a DIB
             (bmp_rle(-5000, -5000, b"\x00\x01"), "decode-error", (5000, 5000)),
             (_png_ihdr(0, 2 ** 31 - 1), "decode-error", (None, None)),
             (bmp_rle(0, 5000, b"\x00\x01"), "decode-error", (None, None))]
    reader = PixelReader()
    for data, code, size in cases:
        s = reader.decode(Sample(0, "x", Record(file="x"), data=data))
        assert (s.record.error.code, (s.record.width, s.record.height)) == (code, size), (data[:24], s.record.error)
        if size[0]:
            assert (walk(data).width, walk(data).height) == size    # what `meta` gives the same bytes


def test_scan_and_meta_give_a_file_refused_from_its_header_the_same_size(tmp_path):
    from conftest import run_cli_in_process

    from aiidetect.testing.hostile import bmp_rle, jpeg_huge_sof

    (tmp_path / "bomb.jpg").write_bytes(jpeg_huge_sof())
    (tmp_path / "rle.bmp").write_bytes(bmp_rle(5000, 5000, b"\x00\x01"))
    scan = run_cli_in_process("scan", str(tmp_path), "-d", "metadata", "-f", "json", "-q", "--no-cache")
    meta = run_cli_in_process("meta", str(tmp_path / "bomb.jpg"), str(tmp_path / "rle.bmp"), "-f", "json")
    sizes = {r["file"]: (r["format"], r["width"], r["height"]) for r in json.loads(scan.stdout)}
    assert sizes == {r["file"]: (r["format"], r["width"], r["height"]) for r in json.loads(meta.stdout)}
    assert sorted(sizes.values()) == [("BMP", 5000, 5000), ("JPEG", 65000, 65000)]


def test_a_refused_file_s_size_is_read_from_its_header_only(monkeypatch):
    """A PNG refused from its IHDR (2^31 x 2) with 90,000 text chunks and 40 4 MB iTXt after its IDAT: the size
    lookup walked them all, inflating each (a second or more a file, on top of the metadata stage's own walk, and
    all of it for a scan without the metadata detector). The IHDR is the first chunk: nothing after it is read."""
    import zlib

    from aiidetect.pixels import PixelReader
    from aiidetect.provenance import containers

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    base = _png_ihdr(2 ** 31, 2)
    texts = chunk(b"iTXt", b"Comment\0\1\0\0\0" + zlib.compress(b"a" * 4_000_000, 9)) + chunk(b"tEXt", b"k\0v") * 9000
    data = base[:-12] + texts + base[-12:]
    read = []
    real = containers._text_body
    monkeypatch.setattr(containers, "_text_body", lambda *a, **k: read.append(1) or real(*a, **k))
    s = PixelReader().decode(Sample(0, "x", Record(file="x"), data=data))
    assert (s.record.error.code, s.record.width, s.record.height) == ("too-large", 2 ** 31, 2)
    assert not read
    # Pillow takes the last IHDR before the IDAT, as meta's walk does: so does the lookup, not the first
    twice = base[:8] + _png_ihdr(100, 100)[8:33] + base[8:]
    s = PixelReader().decode(Sample(0, "x", Record(file="x"), data=twice))
    assert (s.record.error.code, s.record.width, s.record.height) == ("too-large", 2 ** 31, 2)
