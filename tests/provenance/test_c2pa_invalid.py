"""An INVALID C2PA manifest vouches for nothing: a capture manifest that does not match the image
(edited after signing, or copied from a photo into a generated image) must not push the verdict
toward real; the record says the file carries one (docs/provenance.md, c2pa.capture)."""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from aiidetect.provenance import analyze
from aiidetect.testing import c2pa_signing
from conftest import run_cli


@pytest.fixture(scope="module")
def signer():
    pytest.importorskip("c2pa")
    return c2pa_signing.make_signer()


def _img(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (80, 96, 3), dtype=np.uint8))


def _app11_segments(jpeg: bytes) -> list[bytes]:
    out, i = [], 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF and jpeg[i + 1] != 0xDA:
        n = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if jpeg[i + 1] == 0xEB:
            out.append(jpeg[i:i + 2 + n])
        i += 2 + n
    return out


def test_tampered_capture_manifest_counts_nothing_toward_real_and_says_so(signer, tmp_path):
    data = bytearray(c2pa_signing.sign(signer, _img(0), "JPEG", "digitalCapture"))
    data[-40] ^= 0xFF   # a pixel byte: the manifest's data hash no longer matches
    f = tmp_path / "tampered.jpg"
    f.write_bytes(bytes(data))
    r = run_cli("scan", str(f), "-d", "metadata", "-f", "json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)[0]
    ev = {e["id"]: e for e in rec["detectors"]["metadata"]["evidence"]}
    assert not [e for e in ev.values() if e["direction"] == "real"], ev   # was c2pa.capture real 0.5 nats
    assert not any("c2pa.capture" in line for line in rec["reasons"])
    assert rec["p_ai"] > 0.5     # only the weak AI hints are left (no camera EXIF, standard tables)
    conflict = [line for line in rec["reasons"] if line.startswith("metadata:metadata.conflict")]
    assert conflict and "capture manifest that does not match this image" in conflict[0], rec["reasons"]
    assert "assertion.dataHash.mismatch" in ev["metadata.conflict"]["data"]["conflicts"][0]


def test_manifest_copied_from_a_photo_into_another_image_lends_it_nothing(signer):
    photo = c2pa_signing.sign(signer, _img(1), "JPEG", "digitalCapture")
    other = io.BytesIO()
    _img(2).save(other, "JPEG")
    o = other.getvalue()
    forged = o[:2] + b"".join(_app11_segments(photo)) + o[2:]
    rep = analyze(forged, "x")
    assert not [e for e in rep.evidence if e.direction == "real"]
    assert "does not match this image" in " ".join(rep.facts["conflicts"])


def test_capture_manifest_with_a_bad_signature_counts_nothing_and_is_not_called_a_content_mismatch(signer):
    data = bytearray(c2pa_signing.sign(signer, _img(3), "JPEG", "digitalCapture"))
    data[data.rfind(b"\x58\x40", data.find(b"c2pa.signature")) + 20] ^= 1   # inside the 64-byte ES256 signature
    rep = analyze(bytes(data), "x")
    assert rep.facts["c2pa"]["failures"] == ["claimSignature.mismatch"]
    assert not [e for e in rep.evidence if e.direction == "real"]
    (c,) = rep.facts["conflicts"]
    assert "signature does not verify" in c and "does not match this image" not in c
    # The pixels are the signed ones: only the signature is broken, and the detail says no more than that.
    assert "not the one that was signed" not in {e.id: e for e in rep.evidence}["c2pa.manifest"].detail


def test_valid_capture_manifest_still_counts(signer):
    rep = analyze(c2pa_signing.sign(signer, _img(4), "JPEG", "digitalCapture"), "x")
    cap = {e.id: e for e in rep.evidence}["c2pa.capture"]
    assert cap.direction == "real" and cap.strength == 2.0 and not cap.decisive
    assert "conflicts" not in rep.facts


def test_a_manifest_of_thousands_of_actions_keeps_the_record_small_and_still_counts_them_all():
    # 2,001 actions in a signed 200 KB JPEG made an 88 KB record (facts.c2pa listed every one); nothing
    # bounds a hand-made manifest. The record keeps 50 of each list and says how many there were.
    from aiidetect.provenance import _source_type_conflicts, c2pa as c2
    from aiidetect.provenance.xmp import XmpFacts

    acts = [{"action": "c2pa.edited" + "y" * 10_000, "digitalSourceType": f"http://x/{i}"} for i in range(2000)]
    acts.append({"action": "c2pa.created",
                 "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"})
    store = {"active_manifest": "m", "manifests": {"m": {"assertions": [
        {"label": "c2pa.actions", "data": {"actions": acts}}]}},
        "validation_results": {"activeManifest": {"success": [{"code": "claimSignature.validated"}]}}}
    f = c2.summarize(store, "Valid")
    d = f.to_dict()
    assert len(json.dumps(d)) < 20_000
    assert len(d["actions"]) == 50 and d["truncated"] == {"actions": 2001, "source_types": 2001}
    assert max(len(a) for a in d["actions"]) <= 200    # an action is a label ("c2pa.created")
    # what the evidence and the conflict check read is the whole list
    x = XmpFacts(digital_source_types=["trainedAlgorithmicMedia"], where="JPEG APP1")
    assert _source_type_conflicts([x], f) == ["DigitalSourceType: digitalCapture (C2PA (valid)) vs "
                                              "trainedAlgorithmicMedia (JPEG APP1)"]


def test_an_invalid_capture_manifest_is_described_by_the_failures_it_lists(monkeypatch):
    # A manifest whose signature verifies but one of whose assertions was altered was said to be "a capture
    # manifest whose signature does not verify".
    from aiidetect.provenance import c2pa as c2

    def fake(data, fmt, where="", chunks=0):
        store = {"active_manifest": "m", "manifests": {"m": {"assertions": [{"label": "c2pa.actions", "data": {
            "actions": [{"action": "c2pa.created",
                         "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"}]}}]}},
            "validation_results": {"activeManifest": {"success": [{"code": "claimSignature.validated"}],
                                                      "failure": [{"code": "assertion.hashedURI.mismatch"}]}}}
        return c2.summarize(store, "Invalid", where)

    monkeypatch.setattr(c2, "read_c2pa", fake)
    img = io.BytesIO()
    _img(5).save(img, "JPEG")
    b = img.getvalue()
    rep = analyze(b[:2] + b"\xff\xeb\x00\x0aJPjumbc2" + b[2:], "x")   # an APP11 segment: the walker sees JUMBF
    assert rep.facts["c2pa"]["failures"] == ["assertion.hashedURI.mismatch"], rep.facts
    assert not [e for e in rep.evidence if e.direction == "real"]
    (c,) = rep.facts["conflicts"]
    assert "fails validation" in c and "signature does not verify" not in c and "does not match this image" not in c
