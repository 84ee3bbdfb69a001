"""A GIF's XMP (an application extension "XMP DataXMP" holding the packet's bytes, then the XMP specification's
258-byte magic trailer) is read: it went unread and unsaid, so a GIF whose XMP named its AI tool had no metadata
evidence. A packet over the XMP reader's cap is refused from its length, never sliced out, and the record says so."""
from __future__ import annotations

import io

from PIL import Image

from aiidetect.limits import GIF_MAX_BLOCKS
from aiidetect.provenance import analyze, containers
from aiidetect.provenance.xmp import MAX_XMP_READ_BYTES

TRAILER = b"\x01" + bytes(range(255, -1, -1)) + b"\x00"
PACKET = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
          b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:CreatorTool>Midjourney</xmp:CreatorTool>'
          b'</rdf:Description></rdf:RDF></x:xmpmeta>')


def _xmp_ext(packet: bytes) -> bytes:
    return b"\x21\xff\x0bXMP DataXMP" + packet + TRAILER


def _gif(*before: bytes, after: bytes = b"") -> bytes:
    buf = io.BytesIO()
    Image.new("P", (4, 4)).save(buf, "GIF")
    g = buf.getvalue()
    at = 13 + (3 << ((g[10] & 7) + 1) if g[10] & 0x80 else 0)   # after the header and the global palette
    return g[:at] + b"".join(before) + g[at:-1] + after + g[-1:]


def test_a_gif_xmp_packet_is_read_whole_without_its_trailer():
    for data in (_gif(_xmp_ext(PACKET)), _gif(after=_xmp_ext(PACKET))):    # before the image, or after it
        b = containers.walk(data)
        assert b.xmp == [(PACKET, "GIF XMP application extension")], b.xmp
        rep = analyze(data, "x", options={"watermark": "never"})
        assert "xmp.generator-tool" in [e.id for e in rep.evidence], rep.evidence


def test_a_gif_xmp_packet_over_the_cap_is_refused_from_its_length(monkeypatch):
    monkeypatch.setattr(containers, "MAX_XMP_READ_BYTES", 100)
    b = containers.walk(_gif(_xmp_ext(PACKET)))
    assert not b.xmp
    assert any(f"an XMP packet of {len(PACKET)} bytes, over the 100 read" in e for e in b.errors), b.errors
    assert MAX_XMP_READ_BYTES > len(PACKET)


def test_the_gif_walk_for_xmp_stops_at_the_sub_block_cap_and_says_so(monkeypatch):
    monkeypatch.setattr(containers, "GIF_MAX_BLOCKS", 50)
    data = _gif(b"\x21\xfe" + b"\x01c" * 60 + b"\x00", _xmp_ext(PACKET))    # 60 comment sub-blocks first
    b = containers.walk(data)
    assert not b.xmp and any("rest was not searched for XMP" in e for e in b.errors), b.errors
    assert GIF_MAX_BLOCKS == 1 << 21


def test_no_more_gif_xmp_packets_than_analyze_reads_are_sliced():
    b = containers.walk(_gif(*[_xmp_ext(PACKET)] * 6))
    assert len(b.xmp) == 4 and sum("more than 4 XMP application extensions" in e for e in b.errors) == 1
