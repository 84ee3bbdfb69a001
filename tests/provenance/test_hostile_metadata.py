"""Provenance parsers read as a hostile sender writes: what the older fuzz tests
(test_provenance_fuzz.py, test_containers.py, test_exif_chain.py) do not cover."""
from __future__ import annotations

import io
import struct

from PIL import Image

from aiidetect.provenance import analyze

XAP = b"http://ns.adobe.com/xap/1.0/\x00"


def _jpeg(segs: list[tuple[int, bytes]]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 80), (120, 60, 30)).save(buf, "JPEG", quality=80)
    b = buf.getvalue()
    return b[:2] + b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(p) + 2) + p for m, p in segs) + b[2:]


def _packet(values: list[str], tools: list[str] = ()) -> bytes:
    dst = "".join(f"<e:DigitalSourceType>{v}</e:DigitalSourceType>" for v in values)
    ct = "".join(f"<xmp:CreatorTool>{t}</xmp:CreatorTool>" for t in tools)
    return XAP + ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                  '<rdf:Description xmlns:e="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
                  f'xmlns:xmp="http://ns.adobe.com/xap/1.0/">{dst}{ct}</rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def test_a_repeated_xmp_declaration_is_weighed_once():
    # One unsigned capture claim is 0.7 nats. Written under 50 URI spellings in 4 copies of the packet,
    # it was 200 items and 140 nats toward real (the metadata p_ai 0.0; fusion's whole soft cap).
    values = ["http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"] + [
        f"http://e{i}.example/digitalCapture" for i in range(49)]
    rep = analyze(_jpeg([(0xE1, _packet(values, ["Midjourney"] * 1))] * 4), "x")
    caps = [e for e in rep.evidence if e.id == "xmp.capture-source-type"]
    assert len(caps) == 1 and caps[0].strength == 0.7
    assert len([e for e in rep.evidence if e.id == "xmp.generator-tool"]) == 1
    assert abs(sum(e.llr for e in rep.evidence) - (-0.7 + 3.0)) < 1e-9   # no camera, standard tables: 0 each
    assert len(rep.facts["xmp"]) == 4     # every packet still reported


def test_different_declarations_in_different_packets_each_count_and_clash():
    rep = analyze(_jpeg([(0xE1, _packet(["digitalCapture"])), (0xE1, _packet(["trainedAlgorithmicMedia"]))]), "x")
    ids = [e.id for e in rep.evidence]
    assert ids.count("xmp.capture-source-type") == 1 and ids.count("xmp.ai-source-type") == 1
    assert "metadata.conflict" in ids


def _exif_many_values(n: int, count: int = 999) -> bytes:
    """IFD0 (Make, pointers to the EXIF and GPS IFDs), IFD1, EXIF IFD (pointer to Interop), GPS and
    Interop IFDs, each of n entries of `count` RATIONALs sharing one value area: ~60 n bytes."""
    size = 2 + 12 * n + 4
    o0 = 8
    o1, oe, og, oi = o0 + size, o0 + 2 * size, o0 + 3 * size, o0 + 4 * size
    od = o0 + 5 * size

    def ifd(ents, nxt=0):
        return struct.pack("<H", len(ents)) + b"".join(struct.pack("<HHII", *t) for t in ents) + struct.pack("<I", nxt)

    fill = [(0x9000 + i % 50, 5, count, od) for i in range(n)]
    make = (0x010F, 2, 4, struct.unpack("<I", b"Cnn\0")[0])
    return (b"II*\x00" + struct.pack("<I", o0) + ifd([make, (0x8769, 4, 1, oe), (0x8825, 4, 1, og)] + fill[3:], o1)
            + ifd(fill) + ifd([(0xA005, 4, 1, oi)] + fill[1:]) + ifd(fill) + ifd(fill) + b"\x01" * (8 * count))


def test_exif_entries_holding_a_million_values_are_refused_at_once():
    # exifread decodes every value of an entry under 1,000 values one by one in Python: 5,000 entries
    # of 999 RATIONALs (68 KB) took it 27 s in one call the per-file budget cannot interrupt; 1,000
    # entries (12 KB here) took 5 s.
    from aiidetect.testing.hostile import png_chunk, png_with

    rep = analyze(png_with([png_chunk(b"eXIf", _exif_many_values(200))]), "x", options={"watermark": "never"})
    assert any("more than 50000 values" in e for e in rep.errors), rep.errors
    assert "metadata-timeout" not in {e.id for e in rep.evidence}


def test_camera_blocks_stay_far_below_the_value_cap(dev_dir):
    from aiidetect.provenance.tiffguard import MAX_VALUES, check_tiff

    from aiidetect.provenance.containers import walk

    worst = max(check_tiff(b, pages=False).values for p in (dev_dir / "real/camera").iterdir()
                for b, _ in walk(p.read_bytes()).exif if b[:4] in (b"II*\x00", b"MM\x00*"))
    assert 100 < worst < MAX_VALUES // 50


def _ifd0(entries: list[tuple[int, int, int, bytes | int]], blob: bytes = b"") -> bytes:
    """A one-IFD TIFF structure; an int value is an offset into `blob`, bytes are the inline value."""
    data = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, typ, count, val in entries:
        out += struct.pack("<HHI", tag, typ, count) + (val if isinstance(val, bytes) else struct.pack("<I", data + val))
    return out + b"\0\0\0\0" + blob


MAKE, MODEL = 0x010F, 0x0110


def test_garbage_in_make_and_model_is_no_camera():
    # Each made exif.camera (0.7 nats toward real) with a make such as "[1, 2, 3, 4, 5, 6]" (exifread's
    # repr of a BYTE entry), "7" (Pillow's SHORT) or '\x01\x02\x03' / 'ÿþýüû' (binary in an ASCII entry).
    garbage = {
        "BYTE numbers": _ifd0([(MAKE, 1, 6, 0), (MODEL, 1, 6, 8)], b"\x01\x02\x03\x04\x05\x06\0\0\xff\xfe\xfd\xfc\xfb\xfa"),
        "SHORT": _ifd0([(MAKE, 3, 1, b"\x07\0\0\0"), (MODEL, 3, 1, b"\x09\0\0\0")]),
        "binary ASCII": _ifd0([(MAKE, 2, 4, b"\x01\x02\x03\0"), (MODEL, 2, 6, 0)], b"\xff\xfe\xfd\xfc\xfb\0"),
        "UNDEFINED": _ifd0([(MAKE, 7, 4, b"\xff\xff\xff\xff"), (MODEL, 7, 4, b"\x80\x81\x82\x83")]),
    }
    for name, tiff in garbage.items():
        rep = analyze(_jpeg([(0xE1, b"Exif\0\0" + tiff)]), "x")
        assert "exif.camera" not in {e.id for e in rep.evidence}, (name, rep.facts.get("exif"))
        assert not {"make", "model"} & set(rep.facts.get("exif", {})), (name, rep.facts["exif"])


def test_text_make_and_model_still_name_a_camera():
    text = {
        "ASCII": _ifd0([(MAKE, 2, 6, 0), (MODEL, 2, 6, 8)], b"Canon\0\0\0EOS R\0"),
        "text in a BYTE entry": _ifd0([(MAKE, 1, 6, 0), (MODEL, 1, 6, 8)], b"Canon\0\0\0EOS R\0"),
        "UTF-8": _ifd0([(MAKE, 2, 7, 0), (MODEL, 2, 6, 8)], "华为\0".encode() + b"\0" + b"P30 a\0"),
        # Only accented Latin letters: the Latin-1 round trip meant for Pillow's ASCII text was applied to
        # text already decoded as UTF-8 too, and refused it ('Société' -> b'Soci\xe9t\xe9', not UTF-8).
        "UTF-8 Latin letters in a BYTE entry": _ifd0([(MAKE, 1, 10, 0), (MODEL, 1, 8, 10)],
                                                      "Société\0".encode() + "Modèle\0".encode()),
        "UTF-8 Latin letters": _ifd0([(MAKE, 2, 10, 0), (MODEL, 2, 8, 10)], "Société\0".encode() + "Modèle\0".encode()),
        # Older cameras wrote Latin-1 in ASCII entries (Olympus' "µ770SW"): not UTF-8, yet a name.
        "Latin-1 model": _ifd0([(MAKE, 2, 8, 0), (MODEL, 2, 7, 8)], b"OLYMPUS\0\xb5770SW\0"),
    }
    for name, tiff in text.items():
        rep = analyze(_jpeg([(0xE1, b"Exif\0\0" + tiff)]), "x")
        assert "exif.camera" in {e.id for e in rep.evidence}, (name, rep.facts.get("exif"))
        assert "\ufffd" not in rep.facts["exif"]["make"] + rep.facts["exif"]["model"], (name, rep.facts["exif"])


def test_garbage_exposure_numbers_are_not_exposure_settings():
    # Two settings beside a make/model raise exif.camera from 0.7 to 1.2 nats; zero, negative and 1e12
    # are no setting a camera records (a corrupt or crafted block), and they did.
    def exif_ifd(entries, blob):
        return _ifd0([(MAKE, 2, 6, 0), (MODEL, 2, 6, 8), (0x8769, 4, 1, 16)],
                     b"Canon\0\0\0EOS R\0\0\0" + struct.pack("<H", len(entries))
                     + b"".join(struct.pack("<HHII", t, ty, 1, v) for t, ty, v in entries) + b"\0\0\0\0" + blob)

    base = 8 + 2 + 12 * 3 + 4 + 16 + 2 + 12 * 4 + 4   # where the rationals below start
    rats = struct.pack("<IIiiII", 0, 1, -28, 10, 10 ** 9, 1)   # ExposureTime 0, FNumber -2.8, FocalLength 1e9
    bad = exif_ifd([(0x829A, 5, base), (0x829D, 10, base + 8), (0x920A, 5, base + 16), (0x8827, 3, 0)], rats)
    ev = {e.id: e for e in analyze(_jpeg([(0xE1, b"Exif\0\0" + bad)]), "x").evidence}
    assert ev["exif.camera"].strength == 0.7, ev["exif.camera"].detail
    good = exif_ifd([(0x829A, 5, base), (0x829D, 5, base + 8), (0x920A, 5, base + 16), (0x8827, 3, 200)],
                    struct.pack("<IIIIII", 1, 250, 28, 10, 50, 1))
    ev = {e.id: e for e in analyze(_jpeg([(0xE1, b"Exif\0\0" + good)]), "x").evidence}
    assert ev["exif.camera"].strength == 1.2


def test_a_gps_ifd_without_a_position_is_no_gps_position():
    # "GPS position in EXIF" (0.2 nats toward real) was said for any GPS tag but the version: a lone
    # AltitudeRef or MapDatum, as a stray entry of a corrupt block reads.
    def with_gps(entries):
        gps_off = 8 + 2 + 12 * 3 + 4 + 16
        return _ifd0([(MAKE, 2, 6, 0), (MODEL, 2, 6, 8), (0x8825, 4, 1, 16)],
                     b"Canon\0\0\0EOS R\0\0\0" + struct.pack("<H", len(entries))
                     + b"".join(struct.pack("<HHI", t, ty, n) + v for t, ty, n, v in entries) + b"\0\0\0\0"
                     + struct.pack("<IIIIII", 52, 1, 30, 1, 0, 1)), gps_off + 2 + 12 * len(entries) + 4

    lone, _ = with_gps([(0x0005, 1, 1, b"\x01\0\0\0"), (0x0012, 2, 4, b"WGS\0")])   # AltitudeRef, MapDatum
    assert "exif.gps" not in {e.id for e in analyze(_jpeg([(0xE1, b"Exif\0\0" + lone)]), "x").evidence}
    _, at = with_gps([(2, 5, 3, b"\0\0\0\0"), (4, 5, 3, b"\0\0\0\0")])
    pos, _ = with_gps([(2, 5, 3, struct.pack("<I", at)), (4, 5, 3, struct.pack("<I", at))])
    assert "exif.gps" in {e.id for e in analyze(_jpeg([(0xE1, b"Exif\0\0" + pos)]), "x").evidence}


def test_the_c2pa_reader_is_not_handed_a_container_of_100k_boxes_or_huge_ifds():
    # c2pa-rs parses the whole container in native code the per-file budget cannot stop: its time
    # grows with the square of the BMFF box count (40,000 empty boxes: ~3 s; 100,000: 32.6 s) and
    # with TIFF entries (4 IFDs of 65,535: 8 s). The bytes "jumb" and "c2pa" anywhere were enough.
    ftyp = struct.pack(">I", 20) + b"ftypheic" + struct.pack(">I", 0) + b"mif1"
    heif = ftyp + (struct.pack(">I", 8) + b"free") * 40_000 + struct.pack(">I", 16) + b"uuidjumbc2pa"
    n = 65535
    tiff = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for j in range(4):
        nxt = 8 + (j + 1) * (6 + 12 * n) if j < 3 else 0
        tiff += struct.pack("<H", n) + struct.pack("<HHII", 0x9000, 1, 0xFFFFFFFF, 8) * n + struct.pack("<I", nxt)
    for data, why in ((heif, "more than 5000 boxes"), (bytes(tiff) + b"jumbc2pa", "65535 entries")):
        rep = analyze(data, "x", options={"watermark": "never"})
        assert any("C2PA manifest store not read" in e and why in e for e in rep.errors), rep.errors
        assert "c2pa.unreadable" in {e.id for e in rep.evidence}


def test_a_png_of_a_million_chunks_is_not_handed_to_the_c2pa_reader():
    # Linear in c2pa-rs, but 999,000 empty chunks in front of a caBX chunk (12 MB) held it 5 s, the
    # whole per-file budget, and the watermark check was skipped for it.
    import zlib

    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))

    # The walker itself stops at the decoder's cap (limits.PNG_MAX_CHUNKS), so the store is put in front.
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"caBX", b"jumbc2pa") + chunk(b"teXt", b"") * 200_000 + chunk(b"IEND", b""))
    rep = analyze(data, "x", options={"watermark": "never"})
    assert any("C2PA manifest store not read: 100001 chunks (over 100000)" in e for e in rep.errors), rep.errors


def test_a_manifest_store_over_its_cap_is_not_handed_to_the_c2pa_reader(monkeypatch):
    # c2pa-rs holds a store several times over while it reads it, in native code: a 100 MB JPEG whose store held a
    # 100 MB box beside a signed manifest took `scan -d metadata` 693 MB. The walk counts the store's APP11 bytes.
    from aiidetect.provenance import containers
    from aiidetect.testing.hostile import c2pa_store, heif_c2pa_store, jpeg_c2pa_store, tiff_file

    handed = _reader_handed(monkeypatch)
    monkeypatch.setattr(containers, "C2PA_MAX_STORE_BYTES", 100_000, raising=False)
    small, big = jpeg_c2pa_store(80_000), jpeg_c2pa_store(120_000)   # two and three APP11 segments
    rep = analyze(small, "x", options={"watermark": "never"})
    assert handed == [len(small)] and not any("not read" in e for e in rep.errors), rep.errors
    rep = analyze(big, "x", options={"watermark": "never"})
    assert handed == [len(small)], "the reader was handed the store over the cap"
    assert any("C2PA manifest store not read: a manifest store of" in e and "(over 100000)" in e
               for e in rep.errors), rep.errors
    assert "c2pa.unreadable" in {e.id for e in rep.evidence}
    # A HEIF's store is a top-level uuid box (100 MB after a HEIC: 626 MB), a TIFF's a tag (c2pa-rs alone: 526 MB).
    heif = struct.pack(">I", 20) + b"ftypheic" + bytes(4) + b"mif1"
    for data in (heif_c2pa_store(80_000, heif), tiff_file(8, 1, 1, extra=[(0xCD41, 7, c2pa_store(80_000))])):
        analyze(data, "x", options={"watermark": "never"})
    assert len(handed) == 3, "a store under the cap is read"
    for data in (heif_c2pa_store(120_000, heif), tiff_file(8, 1, 1, extra=[(0xCD41, 7, c2pa_store(120_000))])):
        rep = analyze(data, "x", options={"watermark": "never"})
        assert len(handed) == 3, "the reader was handed the store over the cap"
        assert any("C2PA manifest store not read: a manifest store of" in e for e in rep.errors), rep.errors


def _reader_handed(monkeypatch) -> list[int]:
    """c2pa's Reader replaced by one that notes the bytes it was handed (and reads nothing)."""
    import c2pa

    handed = []

    class Reader:
        def __init__(self, mime, stream, *a, **kw):
            handed.append(len(stream.getvalue()))
            raise ValueError("no manifest here")

    monkeypatch.setattr(c2pa, "Reader", Reader)
    return handed


def test_a_jpeg_store_past_the_walks_segment_cap_is_not_handed_to_the_c2pa_reader(monkeypatch):
    # The walk stops at limits.JPEG_MAX_SEGMENTS and counted the store's bytes up to there, while c2pa-rs reads every
    # APP11 segment before the scan: the store's first segment, 65,536 empty comments, then its other 1,530 segments
    # (100 MB) were counted as 64 KB, and c2pa-rs held the rest (`scan -d metadata` 560 MB; refused, 262 MB).
    from aiidetect.provenance import containers
    from aiidetect.testing.hostile import jpeg_c2pa_store

    handed = _reader_handed(monkeypatch)
    monkeypatch.setattr(containers, "C2PA_MAX_STORE_BYTES", 100_000)
    monkeypatch.setattr(containers, "JPEG_MAX_SEGMENTS", 50)
    data = jpeg_c2pa_store(120_000)            # three APP11 segments, right after SOI
    first = 4 + struct.unpack(">H", data[4:6])[0]
    data = data[:first] + b"\xff\xfe\x00\x02" * 50 + data[first:]
    rep = analyze(data, "x", options={"watermark": "never"})
    assert handed == [], "the reader was handed a store the walk did not see the end of"
    assert any("C2PA manifest store not read: the walk stopped before the JPEG's last segment" in e
               for e in rep.errors), rep.errors
    assert "c2pa.unreadable" in {e.id for e in rep.evidence}


def test_a_tiff_store_on_a_later_page_counts_toward_the_store_cap(monkeypatch):
    # c2pa-rs takes the C2PA tag (52545) from any page, not only IFD0: 100 MB on page 2 was counted as nothing, and
    # c2pa-rs held 300 MB more.
    from aiidetect.provenance import containers
    from aiidetect.testing.hostile import c2pa_store, tiff_file, tiff_with_page

    handed = _reader_handed(monkeypatch)
    monkeypatch.setattr(containers, "C2PA_MAX_STORE_BYTES", 100_000)
    analyze(tiff_with_page(tiff_file(8, 1, 1), [(0xCD41, 7, c2pa_store(80_000))]), "x", options={"watermark": "never"})
    assert len(handed) == 1, "a store under the cap is read"
    for first in (tiff_file(8, 1, 1), tiff_file(8, 1, 1, extra=[(0xCD41, 7, c2pa_store(100))])):
        rep = analyze(tiff_with_page(first, [(0xCD41, 7, c2pa_store(120_000))]), "x", options={"watermark": "never"})
        assert len(handed) == 1, "the reader was handed the store over the cap"
        assert any("C2PA manifest store not read: a manifest store of" in e for e in rep.errors), rep.errors


def test_many_c2pa_chunks_name_their_place_once():
    # Each caBX (or WebP C2PA) chunk added its place to the evidence's `where`: 50,000 empty ones, a 600 KB PNG,
    # made a 500 KB record (one c2pa.unreadable line), as JPEG's APP11 segments already did not.
    from aiidetect.testing.hostile import png_chunk, png_with, webp_chunk, webp_riff

    still = io.BytesIO()
    Image.new("RGB", (8, 8)).save(still, "WEBP", lossless=True)
    for data, where in ((png_with([png_chunk(b"caBX", b"")] * 1000), "PNG caBX"),
                        (webp_riff(still.getvalue()[12:] + webp_chunk(b"C2PA", b"") * 1000), "WebP C2PA chunk")):
        rep = analyze(data, "x", options={"watermark": "never"})
        assert [e.source for e in rep.evidence if e.id.startswith("c2pa.")] == [where], rep.evidence
