"""A parser bug costs its own stage only: the other stages' evidence stays.
And the C2PA summary reads any shape of manifest JSON (assertion data is
whatever CBOR the file carried)."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aiidetect import provenance
from aiidetect.provenance import c2pa, exif, generators, structural, xmp
from aiidetect.provenance.sourcetypes import short_source_type
from aiidetect.testing.hostile import _enc, _noise

XMP_AI = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
          b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
          b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
          b'</rdf:RDF></x:xmpmeta>')
A1111 = b"a cat\nSteps: 20, Sampler: Euler a, Seed: 42, Model: sd15"


def _segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def everything_jpeg() -> bytes:
    """One JPEG that gives evidence in every stage: camera EXIF (make, model), XMP
    declaring AI, A1111 parameters in a comment, libjpeg's standard tables."""
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Canon", "EOS 5D"
    base = _enc(_noise(), "JPEG", quality=85, exif=ex)
    return (base[:2] + _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP_AI) + _segment(0xFE, A1111) + base[2:])


STAGES = {  # what to break -> the evidence it alone gives
    "EXIF": (exif, "read_exif", {"exif.camera", "metadata.conflict"}),   # the clash of camera EXIF and AI claims
    "XMP": (xmp, "parse_xmp", {"xmp.ai-source-type"}),
    "generator parameters": (generators, "find_generators", {"generator.parameters"}),
    "structural hints": (structural, "jpeg_quality", {"structure.jpeg-tables"}),
}


def ids(data: bytes) -> tuple[set[str], list[str]]:
    rep = provenance.analyze(data, options={"watermark": "never"})
    return {e.id for e in rep.evidence}, rep.errors


def test_the_test_file_gives_evidence_in_every_stage():
    got, errors = ids(everything_jpeg())
    assert set().union(*(v[2] for v in STAGES.values())) <= got, errors
    assert not errors


@pytest.mark.parametrize("stage", STAGES)
def test_a_bug_in_one_stage_keeps_the_others_evidence(stage, monkeypatch):
    full, _ = ids(everything_jpeg())
    module, name, own = STAGES[stage]

    def broken(*a, **k):
        raise KeyError("parser bug")

    monkeypatch.setattr(module, name, broken)
    got, errors = ids(everything_jpeg())
    assert f"internal ({stage}): KeyError: 'parser bug'" in errors
    assert not own & got
    assert got >= full - own - {"metadata.no-camera"} and "metadata.malformed" in got


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["label", "data", "actions", "action", "parameters", "digitalSourceType", "code",
                         "success", "failure", "activeManifest", "title", "issuer", "common_name"]), c, max_size=4),
    max_leaves=16)


@settings(max_examples=300, deadline=None)
@given(json_value, json_value, json_value, json_value)
def test_c2pa_summary_reads_any_json_shape(assertions, signature, ingredient, results):
    store = {"active_manifest": "m", "validation_results": results,
             "manifests": {"m": {"assertions": assertions, "signature_info": signature}, "i": ingredient}}
    f = c2pa.summarize(store, "Valid")
    assert isinstance(f.to_dict(), dict) and all(isinstance(x, str) for x in f.failures + f.source_types)


def test_c2pa_summary_still_reads_the_real_layout():
    dst = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    store = {"active_manifest": "m", "manifests": {
        "m": {"claim_generator_info": [{"name": "gen", "version": "2"}], "signature_info": {"issuer": "CA"},
              "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [
                  {"action": "c2pa.created", "digitalSourceType": dst}]}}]},
        "i": {"assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.placed", "parameters": {}, "digitalSourceType": dst}]}}]}},
        "validation_results": {"activeManifest": {"success": [{"code": "claimSignature.validated"}],
                                                  "failure": [{"code": "signingCredential.untrusted"}]}}}
    f = c2pa.summarize(store, "Valid")
    assert (f.claim_generator, f.signer, f.actions) == ("gen 2", "CA", ["c2pa.created"])
    assert f.source_types == f.ingredient_source_types == ["trainedAlgorithmicMedia"] and f.valid


def test_c2pa_manifest_without_any_validation_result_is_not_called_valid():
    """A store that lists no problems because nothing was validated (no validation_results, no
    validation_status): before, the empty problem list read as "signature valid", and a declared
    capture counted 2.0 nats towards real, an AI declaration was decisive."""
    dst = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    store = {"active_manifest": "m", "manifests": {"m": {"signature_info": {"issuer": "Anyone"}, "assertions": [
        {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": dst}]}}]}}}
    for state in ("", "Invalid", None):
        f = c2pa.summarize(store, state or "")
        assert not f.valid and "NOT verified" in f.validity_text() and "signature valid" not in f.validity_text()
    assert c2pa.summarize(store, "Valid").valid   # the reader's own verdict, with no problem listed


def test_a_remote_c2pa_manifest_url_is_never_fetched():
    """A file whose XMP names a remote manifest (dcterms:provenance) made c2pa fetch it: a GET to a
    server of the sender's choosing on every scan. Nothing may be fetched; the record says why."""
    import http.server
    import io
    import threading

    pytest.importorskip("c2pa")
    hits = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_error(404)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/m.c2pa".encode()
        xmp = (b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
               b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
               b'xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="' + url + b'"/></rdf:RDF></x:xmpmeta>')
        jumbf = b"JP\x00\x01\x00\x00\x00\x01" + struct.pack(">I", 40) + b"jumb" + b"\x00" * 32
        buf = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buf, "JPEG")
        j = buf.getvalue()
        seg = lambda m, b: b"\xff" + bytes([m]) + struct.pack(">H", len(b) + 2) + b  # noqa: E731
        rep = provenance.analyze(j[:2] + seg(0xE1, xmp) + seg(0xEB, jumbf) + j[2:], "remote.jpg")
    finally:
        srv.shutdown()
        srv.server_close()
    assert hits == []
    ev = {e.id: e for e in rep.evidence}
    assert "not fetched" in ev["c2pa.unreadable"].detail and not any(e.decisive for e in rep.evidence)


def test_xmp_source_type_written_as_rdf_resource_is_read():
    """<Iptc4xmpExt:DigitalSourceType rdf:resource="..."/> is the same statement as the text form
    (RDF/XML allows both); it was read as nothing, so such an AI declaration slipped through."""
    packet = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
              b'<Iptc4xmpExt:DigitalSourceType rdf:resource="http://cv.iptc.org/newscodes/digitalsourcetype/'
              b'trainedAlgorithmicMedia"/></rdf:Description></rdf:RDF></x:xmpmeta>')
    f = xmp.parse_xmp(packet)
    assert [short_source_type(t) for t in f.digital_source_types] == ["trainedAlgorithmicMedia"]
