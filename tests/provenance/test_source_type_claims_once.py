"""A source-type declaration an exporter writes into XMP and into a C2PA manifest nothing verifies is
one claim: it weighs once, at the strongest copy, and the other stays listed as a neutral item that
says which one it corroborates. A valid signed declaration keeps its weight and the unsigned XMP
beside it is counted there. A PNG `Software` text chunk naming an AI tool is one more tool-name
claim (docs/provenance.md, "How evidence is weighed"). The files are built here."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiidetect.provenance import analyze
from aiidetect.records import Evidence
from aiidetect.testing import c2pa_signing
from aiidetect.testing.hostile import with_jpeg_segments

XAP = b"http://ns.adobe.com/xap/1.0/\x00"
EXPIRED = Path(__file__).parent / "data" / "c2pa_expired_signer_capture.jpg"
# no-camera and standard JPEG tables come with every test JPEG here, and weigh nothing (they were 0.1 each)
HINTS = 0.0


def _packet(source_type: str | None = None, tool: str | None = None) -> bytes:
    body = (f"<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/{source_type}"
            "</Iptc4xmpExt:DigitalSourceType>" if source_type else "")
    body += f"<xmp:CreatorTool>{tool}</xmp:CreatorTool>" if tool else ""
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
            + body + "</rdf:Description></rdf:RDF></x:xmpmeta>").encode()


def _with_xmp(jpeg: bytes, *packets: bytes) -> bytes:
    """XMP segments put in front after signing: the manifest's data hash no longer matches (INVALID)."""
    return with_jpeg_segments(jpeg, [(0xE1, XAP + p) for p in packets])


@pytest.fixture(scope="module")
def signer():
    pytest.importorskip("c2pa")
    return c2pa_signing.make_signer()


def _img() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))


def _run(data: bytes):
    rep = analyze(data, "x", options={"watermark": "never"})
    assert not [e for e in rep.errors if e.startswith("internal")], rep.errors
    return rep, {e.id: e for e in rep.evidence}


def _llr(rep) -> float:
    return round(sum(e.llr for e in rep.evidence), 6)


def test_xmp_ai_declaration_and_an_invalid_manifest_declaring_it_weigh_once(signer, tmp_path):
    # `aiidetect meta -f json` said llr 7.2 (XMP 4.0 + invalid manifest 3.0 + hints): the weight of a
    # valid signature, from two copies of one unverified statement.
    from tests.conftest import run_cli_in_process

    p = tmp_path / "ai.jpg"
    p.write_bytes(_with_xmp(c2pa_signing.sign(signer, _img(), "JPEG", "trainedAlgorithmicMedia", thumbnail=False),
                            _packet("trainedAlgorithmicMedia")))
    rec = json.loads(run_cli_in_process("meta", "-f", "json", "--watermark", "never", str(p)).stdout)[0]
    assert abs(rec["llr"] - (4.0 + HINTS)) < 1e-9, rec["evidence"]
    ev = {e["id"]: e for e in rec["evidence"]}
    assert ev["xmp.ai-source-type"]["strength"] == 4.0 and ev["xmp.ai-source-type"]["decisive"]
    copy = ev["c2pa.ai-generated"]
    assert copy["direction"] == "neutral" and copy["strength"] == 0.0 and not copy["decisive"]
    assert copy["data"]["corroborates"] == "xmp.ai-source-type" and copy["data"]["valid"] is False
    assert "manifest INVALID" in copy["detail"] and "the same claim as xmp.ai-source-type" in copy["detail"]


def test_composite_declarations_weigh_once(signer):
    data = _with_xmp(c2pa_signing.sign(signer, _img(), "JPEG", "compositeWithTrainedAlgorithmicMedia", thumbnail=False),
                     _packet("compositeWithTrainedAlgorithmicMedia"))
    rep, ev = _run(data)
    assert _llr(rep) == 2.5 + HINTS       # was 4.2: 2.5 + the invalid manifest's 1.5
    assert ev["c2pa.ai-composite"].data["corroborates"] == "xmp.ai-composite"


def test_unsigned_xmp_beside_a_valid_signed_declaration_is_counted_in_it(signer):
    # XMP written before signing: the manifest is valid. Was 11.2 (7.0 signed + 4.0 unsigned).
    rep, ev = _run(c2pa_signing.sign(signer, _img(), "JPEG", "trainedAlgorithmicMedia", thumbnail=False,
                                     xmp=_packet("trainedAlgorithmicMedia")))
    assert rep.facts["c2pa"]["status"] == "valid"
    signed, xmp = ev["c2pa.ai-generated"], ev["xmp.ai-source-type"]
    # Valid but, offline, vouched for by no trust list: decisive as the file's own claim, not as signed evidence.
    assert signed.llr == 7.0 and signed.decisive and signed.data["basis"] == "claim"
    assert xmp.llr == 0.0 and not xmp.decisive and xmp.data["corroborates"] == "c2pa.ai-generated"
    assert "the same claim as c2pa.ai-generated (JPEG APP11): an exporter writes its one source-type" in xmp.detail
    assert _llr(rep) == 7.0 + HINTS


def test_a_signed_declaration_is_never_the_one_folded():
    from aiidetect.provenance import _count_claims_once

    def items(c2pa_id, strength, xmp_id, xmp_strength, valid=True):
        return [Evidence(c2pa_id, "ai", strength, "C2PA", "APP11", data={"valid": valid, "trusted": valid}),
                Evidence(xmp_id, "ai", xmp_strength, "XMP", "APP1")]

    same = items("c2pa.ai-generated", 7.0, "xmp.ai-source-type", 4.0)
    _count_claims_once(same)
    assert [e.llr for e in same] == [7.0, 0.0]
    # an unsigned claim that says more than the signed one (fully AI vs a signed composite) is not
    # implied by it: both keep their weight, as before
    more = items("c2pa.ai-composite", 3.0, "xmp.ai-source-type", 4.0)
    _count_claims_once(more)
    assert [e.llr for e in more] == [3.0, 4.0]
    weaker = items("c2pa.ai-composite", 3.0, "xmp.algorithmic", 2.0)
    _count_claims_once(weaker)
    assert [e.llr for e in weaker] == [3.0, 0.0]


def test_capture_declarations_weigh_once_and_a_signed_capture_keeps_its_weight(signer, monkeypatch):
    from aiidetect.provenance import c2pa as c2

    # An unverified capture manifest (intact, its certificate expired) beside XMP digitalCapture: was
    # 1.2 toward real (0.7 + 0.5), one claim. The reader is handed the intact file's manifest.
    orig, expired = c2.read_c2pa, EXPIRED.read_bytes()
    monkeypatch.setattr(c2, "read_c2pa", lambda data, fmt, where="", chunks=0: orig(expired, fmt, where, chunks=chunks))
    rep, ev = _run(_with_xmp(expired, _packet("digitalCapture")))
    assert rep.facts["c2pa"]["status"] == "unverified"
    assert ev["xmp.capture-source-type"].llr == -0.7
    assert ev["c2pa.capture"].llr == 0.0 and ev["c2pa.capture"].data["corroborates"] == "xmp.capture-source-type"
    monkeypatch.undo()
    # valid, but no trust list vouches for the signer (offline, every one): one claim with XMP's, as unverified
    signed = c2pa_signing.sign(signer, _img(), "JPEG", "digitalCapture", thumbnail=False, xmp=_packet("digitalCapture"))
    rep, ev = _run(signed)
    assert rep.facts["c2pa"]["status"] == "valid"
    assert ev["xmp.capture-source-type"].llr == -0.7 and ev["c2pa.capture"].llr == 0.0
    # trusted: the signed 2.0 is kept, the XMP copy beside it counted there (was 2.7 toward real)
    monkeypatch.setattr(c2.C2paFacts, "trusted", property(lambda self: self.valid))
    rep, ev = _run(signed)
    assert ev["c2pa.capture"].llr == -2.0 and ev["xmp.capture-source-type"].llr == 0.0
    assert ev["xmp.capture-source-type"].data["corroborates"] == "c2pa.capture"


def test_an_ai_and_a_capture_declaration_stay_apart_and_are_a_conflict(signer):
    # XMP says captured, the invalid manifest and a second XMP packet say generated: the AI copies
    # fold into one (was 3.0 + 4.0), the capture claim keeps its weight, and the note is raised.
    data = _with_xmp(c2pa_signing.sign(signer, _img(), "JPEG", "trainedAlgorithmicMedia", thumbnail=False),
                     _packet("digitalCapture"), _packet("trainedAlgorithmicMedia"))
    rep, ev = _run(data)
    assert ev["xmp.capture-source-type"].llr == -0.7 and ev["xmp.ai-source-type"].llr == 4.0
    assert ev["c2pa.ai-generated"].llr == 0.0 and ev["c2pa.ai-generated"].data["corroborates"] == "xmp.ai-source-type"
    assert "corroborates" not in ev["xmp.capture-source-type"].data
    assert _llr(rep) == round(4.0 - 0.7 + HINTS, 6)
    assert any("digitalCapture" in c and "trainedAlgorithmicMedia" in c for c in rep.facts["conflicts"])


def _png(*chunks: tuple[bytes, bytes]) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (48, 40), (10, 20, 30)).save(b, "PNG")
    d = b.getvalue()
    extra = b"".join(struct.pack(">I", len(c)) + t + c + struct.pack(">I", zlib.crc32(t + c)) for t, c in chunks)
    return d[:33] + extra + d[33:]   # after IHDR


def test_png_software_chunk_naming_an_ai_tool_is_a_tool_name_claim(tmp_path):
    from tests.conftest import run_cli_in_process

    p = tmp_path / "mj.png"
    p.write_bytes(_png((b"tEXt", b"Software\x00Midjourney")))   # was: no evidence at all, llr null
    rec = json.loads(run_cli_in_process("meta", "-f", "json", str(p)).stdout)[0]
    assert rec["llr"] == 3.0
    (item,) = rec["evidence"]
    assert item["id"] == "png.software-generator" and item["direction"] == "ai" and item["strength"] == 3.0
    assert item["source"] == "PNG tEXt 'Software'" and item["data"] == {"software": "Midjourney"}
    # an ordinary program there says nothing
    _, ev = _run(_png((b"tEXt", b"Software\x00GIMP 2.10")))
    assert not ev


def test_png_software_is_counted_once_with_xmp_and_left_out_beside_generator_parameters():
    xmp = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + _packet(tool="Midjourney")
    rep, ev = _run(_png((b"tEXt", b"Software\x00Midjourney"), (b"iTXt", xmp)))
    assert ev["xmp.generator-tool"].llr == 3.0 and _llr(rep) == 3.0
    assert ev["png.software-generator"].llr == 0.0
    assert ev["png.software-generator"].data["corroborates"] == "xmp.generator-tool"
    params = b"parameters\x00a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 48x40"
    rep, ev = _run(_png((b"tEXt", b"Software\x00Stable Diffusion"), (b"tEXt", params)))
    assert set(ev) == {"generator.parameters"}
