"""The container walkers only slice the file: whatever the segment lengths say,
the blobs they hand to the parsers never hold more bytes than the file."""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiidetect.provenance import containers


def blob_bytes(b: containers.Blobs) -> int:
    return (sum(len(x) for x, _ in b.exif) + sum(len(x) for x, _ in b.xmp)
            + sum(len(t) for _, t, _ in b.texts))


def test_zero_length_segments_do_not_reread_the_rest_of_the_file():
    # Found by coverage-guided fuzzing: a length below 2 was read as "overruns the file", the
    # rest of the file became the segment, and the walk went on 4 bytes later: 114 such comments
    # in a 218 KB file made 65 MB of text.
    tail = b"\xff\xfe\xff\xff" + b"x" * 50_000                      # a comment that overruns the file
    data = b"\xff\xd8" + b"\xff\xfe\x00\x00" * 200 + b"\xff\xfe\x00\x01" * 50 + tail
    b = containers.walk(data)
    assert blob_bytes(b) <= len(data)
    assert [t for _, t, _ in b.texts] == ["x" * 50_000]
    assert sum("invalid length" in e for e in b.errors) == 250
    assert any("overruns the file" in e for e in b.errors)


def test_a_valid_segment_after_a_bogus_length_is_still_read():
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    data = (b"\xff\xd8" + b"\xff\xe1\x00\x00" + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
            + b"\xff\xfe\x00\x07hello" + b"\xff\xd9")
    b = containers.walk(data)
    assert [x for x, _ in b.exif] == [exif[6:]]
    assert [t for _, t, _ in b.texts] == ["hello"]


segment = st.tuples(st.sampled_from([0xE0, 0xE1, 0xEB, 0xFE, 0xDB, 0xC0, 0xC4, 0x01, 0xD0]),
                    st.integers(0, 0xFFFF),
                    st.sampled_from([b"", b"Exif\x00\x00II*\x00", b"http://ns.adobe.com/xap/1.0/\x00<x/>",
                                     b"http://ns.adobe.com/xmp/extension/\x00" + b"g" * 32 + b"\x00" * 8, b"jumb"]),
                    st.integers(0, 300))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segment, max_size=40))
def test_jpeg_walk_never_yields_more_than_the_file(segs):
    out = bytearray(b"\xff\xd8")
    for marker, length, head, pad in segs:
        out += bytes([0xFF, marker]) + struct.pack(">H", length) + head + b"\x20" * pad
    data = bytes(out)
    b = containers.walk(data)
    assert blob_bytes(b) <= len(data)
    assert len(b.errors) <= containers.JPEG_MAX_SEGMENTS + 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"EXIF", b"XMP ", b"C2PA", b"VP8X", b"ICCP"]), st.integers(0, 2**32 - 1),
                          st.binary(max_size=200)), max_size=30))
def test_webp_walk_never_yields_more_than_the_file(chunks):
    body = b"WEBP" + b"".join(f + struct.pack("<I", size) + payload for f, size, payload in chunks)
    data = b"RIFF" + struct.pack("<I", len(body)) + body
    assert blob_bytes(containers.walk(data)) <= len(data)


def test_a_tiff_in_a_layout_pillow_does_not_decode_keeps_its_xmp_and_size():
    """Pillow refuses such a TIFF at open, which took its XMP (tag 700, read through Pillow) and
    reported a malformed file: 'cannot identify image file'."""
    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import tiff_file

    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
              'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/'
              'trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>').encode()
    for layout in ((16, 3, 8), (32, 3, 2, 3)):             # 16-bit Lab, 32-bit float RGB
        data = tiff_file(*layout, extra=[(700, 1, packet)], w=12, h=10)
        b = containers.walk(data)
        assert (b.width, b.height) == (12, 10) and b.errors == []
        assert [where for _, where in b.xmp] == ["TIFF XMP"]
        ids = {e.id for e in analyze(data, "x.tif", options={"watermark": "never"}).evidence}
        assert "xmp.ai-source-type" in ids and "metadata.malformed" not in ids, ids
    # a TIFF Pillow does open is read through Pillow as before
    b = containers.walk(tiff_file(8, 3, 2, extra=[(700, 1, packet)]))
    assert b.errors == [] and len(b.xmp) == 1


def test_extended_xmp_is_reassembled_under_a_few_guids_only():
    """Every extended-XMP GUID was kept, joined and handed on as a packet: 900,000 one-part GUIDs (104 MB)
    took `meta` 19 s and 600 MB. A file has one; past MAX_EXT_XMP_GUIDS the others are ignored, once said."""
    from aiidetect.testing.hostile import jpeg_with_app1, with_jpeg_segments

    def part(guid: bytes, offset: int, text: bytes) -> tuple[int, bytes]:
        return 0xE1, b"http://ns.adobe.com/xmp/extension/\x00" + guid + struct.pack(">II", 8, offset) + text

    cap = containers.MAX_EXT_XMP_GUIDS
    segs = [part(b"%032d" % i, 0, b"<%d/>" % i) for i in range(cap + 3)] + [part(b"%032d" % 0, 4, b"more")]
    main = b"http://ns.adobe.com/xap/1.0/\x00" + b" ".join(b'xmpNote:HasExtendedXMP="%032d"' % i
                                                            for i in range(cap + 3))   # names them all
    b = containers.walk(with_jpeg_segments(jpeg_with_app1(main), segs))
    assert [x for x, w in b.xmp if "extended" in w] == [b"<0/>more"] + [b"<%d/>" % i for i in range(1, cap)]
    assert b.errors == [f"JPEG: extended XMP under more than {cap} GUIDs; the others ignored"]


def test_meta_names_a_bmp_or_dib_and_its_size_as_scan_does():
    # `meta` said format null, no size, for both: the walker knew no BMP, and a DIB has no magic.
    import io

    from PIL import Image

    from aiidetect.provenance import analyze

    for fmt in ("BMP", "DIB"):
        buf = io.BytesIO()
        Image.new("RGB", (7, 5)).save(buf, fmt)
        rep = analyze(buf.getvalue(), "x", options={"watermark": "never"})
        assert (rep.format, rep.width, rep.height) == (fmt, 7, 5), (fmt, rep.errors)
    assert containers.sniff(b"(\x00\x00\x00" + b"\x00" * 8 + b"\x02\x00" + b"\x00" * 30) is None   # planes != 1


def test_extended_xmp_that_no_main_packet_names_is_not_read():
    """A DigitalSourceType in an extended XMP packet whose GUID no main packet names (HasExtendedXMP) decided
    a real photo's verdict (xmp.ai-source-type, decisive) while Adobe's SDK, Skia and exiftool leave it out."""
    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import XMP_TRAINED, jpeg_with_app1, with_jpeg_segments

    guid = b"0123456789ABCDEF0123456789ABCDEF"
    ext = [(0xE1, b"http://ns.adobe.com/xmp/extension/\x00" + guid + struct.pack(">II", len(XMP_TRAINED), 0)
            + XMP_TRAINED)]
    main = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="%s"/>'
            b'</rdf:RDF></x:xmpmeta>')
    element = main.replace(b'xmpNote:HasExtendedXMP="%s"/>', b'><xmpNote:HasExtendedXMP>%s</xmpNote:HasExtendedXMP>'
                                                              b'</rdf:Description>')
    # The GUID elsewhere in the main packet (a comment, another property) is not HasExtendedXMP: matched as a
    # substring, it had the hidden packet read and decide the verdict again.
    other = main.replace(b'xmpNote:HasExtendedXMP="%s"/>', b'xmpNote:HasExtendedXMP="FEDCBA9876543210FEDCBA9876543210"'
                         b' xmlns:dc="http://purl.org/dc/elements/1.1/" dc:identifier="' + guid + b'">'
                         b'<!-- xmpNote:HasExtendedXMP="%s" --></rdf:Description>')
    for packet, named, decided in ((main, b"FEDCBA9876543210FEDCBA9876543210", False), (main, guid, True),
                                   (element, guid, True), (other, guid, False)):
        data = with_jpeg_segments(jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + packet % named), ext, at=2)
        rep = analyze(data, "x.jpg", options={"watermark": "never"})
        assert any(e.id == "xmp.ai-source-type" for e in rep.evidence) is decided, rep.errors
        assert any("which no main XMP packet names" in e for e in rep.errors) is not decided


def test_decoy_extended_xmp_guids_first_do_not_push_out_the_named_one():
    """Only the first four extended-XMP GUIDs were kept, named or not: four decoy GUIDs placed before the
    packet HasExtendedXMP names left the named one unread, and its trainedAlgorithmicMedia with it."""
    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import XMP_TRAINED, jpeg_with_app1, with_jpeg_segments

    def part(guid: bytes, text: bytes) -> tuple[int, bytes]:
        return 0xE1, b"http://ns.adobe.com/xmp/extension/\x00" + guid + struct.pack(">II", len(text), 0) + text

    guid = b"0123456789ABCDEF0123456789ABCDEF"
    n = containers.MAX_EXT_XMP_GUIDS + 6
    decoys = [part(b"%032d" % i, b"<x/>") for i in range(n)]
    main = (b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="' + guid
            + b'"/></rdf:RDF></x:xmpmeta>')
    rep = analyze(with_jpeg_segments(jpeg_with_app1(main), decoys + [part(guid, XMP_TRAINED)], at=2), "x.jpg",
                  options={"watermark": "never"})
    assert any(e.id == "xmp.ai-source-type" for e in rep.evidence), rep.errors
    # the decoys are named as unread, without a line each
    unread = [e for e in rep.errors if "no main XMP packet names" in e]
    assert unread and len(unread) <= containers.MAX_EXT_XMP_GUIDS + 1 and str(n) in "".join(unread), unread
