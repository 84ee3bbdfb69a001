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
    assert abs(sum(e.llr for e in rep.evidence) - (-0.7 + 3.0 + 0.1 + 0.1)) < 1e-9
    assert len(rep.facts["xmp"]) == 4     # every packet still reported


def test_different_declarations_in_different_packets_each_count_and_clash():
    rep = analyze(_jpeg([(0xE1, _packet(["digitalCapture"])), (0xE1, _packet(["trainedAlgorithmicMedia"]))]), "x")
    ids = [e.id for e in rep.evidence]
    assert ids.count("xmp.capture-source-type") == 1 and ids.count("xmp.ai-source-type") == 1
    assert "metadata.conflict" in ids
