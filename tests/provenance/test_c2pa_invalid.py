"""An INVALID C2PA manifest vouches for nothing: a capture manifest that does not match the image
(edited after signing, or copied from a photo into a generated image) must not push the verdict
toward real; the record says the file carries one (docs/provenance.md, c2pa.capture)."""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

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
    # nothing left that counts (no camera EXIF and standard tables are named and weigh nothing): no opinion
    assert rec["p_ai"] is None and rec["verdict"] == "uncertain"
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


def test_valid_capture_manifest_still_counts(signer, monkeypatch):
    from aiidetect.provenance import c2pa as c2

    data = c2pa_signing.sign(signer, _img(4), "JPEG", "digitalCapture")
    rep = analyze(data, "x")
    cap = {e.id: e for e in rep.evidence}["c2pa.capture"]
    # Offline no trust list vouches for the signer: a launderer's self-made certificate signs a generated image
    # as validly, and counted as signed it moved all of soft evidence's 2 nats toward real.
    assert cap.direction == "real" and cap.strength == 0.5 and not cap.decisive
    assert "counted as a claim: no trust list vouches for the signer" in cap.detail
    assert "conflicts" not in rep.facts
    # A signer a trust list vouches for (c2pa's state Trusted) keeps the signed weight.
    monkeypatch.setattr(c2.C2paFacts, "trusted", property(lambda self: self.valid))
    cap = {e.id: e for e in analyze(data, "x").evidence}["c2pa.capture"]
    assert cap.strength == 2.0 and "counted as a claim" not in cap.detail
    assert "signer vouched for by a trust list" in cap.detail and "not checked against a trust list" not in cap.detail


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


# A capture manifest signed with a certificate that has expired since (aiidetect.testing.c2pa_signing
# `expired`: the library refuses to sign with one already expired, so it was made to end seconds after
# signing). Every hash matches: an older genuine photo looks like this.
EXPIRED = Path(__file__).parent / "data" / "c2pa_expired_signer_capture.jpg"


@pytest.fixture(scope="module")
def expired_store():
    """The manifest store as c2pa-python returns it for EXPIRED: the structure whose codes the tests vary."""
    lib = pytest.importorskip("c2pa")
    with lib.Reader("image/jpeg", io.BytesIO(EXPIRED.read_bytes())) as r:
        return json.loads(r.json())


def test_the_expired_certificate_file_is_what_it_claims(expired_store):
    res = expired_store["validation_results"]["activeManifest"]
    assert {"claimSignature.validated", "assertion.dataHash.match"} <= {c["code"] for c in res["success"]}
    assert {c["code"] for c in res["failure"]} == {"signingCredential.untrusted", "signingCredential.expired"}


def test_an_expired_certificate_on_an_intact_capture_manifest_is_unverified_not_invalid(expired_store):
    # Before: counted 0 toward real with a conflict note "a capture manifest whose signature does not
    # verify", like a tampered file.
    rep = analyze(EXPIRED.read_bytes(), "x")
    ev = {e.id: e for e in rep.evidence}
    cap = ev["c2pa.capture"]
    assert cap.direction == "real" and cap.strength == 0.5 and not cap.decisive
    assert "the signing certificate has expired (signingCredential.expired)" in cap.detail
    assert "signature and content hash check out" in cap.detail and "only a claim" in cap.detail
    assert "conflicts" not in rep.facts
    assert rep.facts["c2pa"]["status"] == "unverified" and rep.facts["c2pa"]["failures"] == ["signingCredential.expired"]
    assert cap.data["status"] == "unverified"


def test_an_expired_certificate_on_a_tampered_file_is_still_invalid(expired_store):
    data = bytearray(EXPIRED.read_bytes())
    data[-40] ^= 0xFF   # a pixel byte: the data hash no longer matches
    rep = analyze(bytes(data), "x")
    assert set(rep.facts["c2pa"]["failures"]) == {"signingCredential.expired", "assertion.dataHash.mismatch"}
    assert rep.facts["c2pa"]["status"] == "invalid"
    assert not [e for e in rep.evidence if e.direction == "real"]
    (c,) = rep.facts["conflicts"]
    assert "does not match this image" in c


CREDENTIAL_ONLY = ["signingCredential.expired", "signingCredential.invalid",
                   "signingCredential.ocsp.inaccessible",
                   "signingCredential.ocsp.unknown", "claimSignature.outsideValidity",
                   "timeStamp.outsideValidity", "timeStamp.malformed"]
# A revoked key may have signed anything; a time stamp that does not match its signature means the
# signature block was altered: these are not lapses of time.
INTEGRITY = ["signingCredential.revoked", "signingCredential.ocsp.revoked", "timeStamp.mismatch",
             "assertion.dataHash.mismatch", "assertion.bmffHash.mismatch", "assertion.hashedURI.mismatch",
             "claimSignature.mismatch", "claimSignature.missing", "assertion.missing", "claim.missing",
             "some.codeNotKnownHere"]


def _analyze_with_codes(monkeypatch, store: dict, codes: list[str]):
    """`store` as the library returned it, its failures replaced by `codes` (the untrusted signer
    kept, as offline reading always lists it); a broken claim signature is no longer `validated`."""
    import copy

    from aiidetect.provenance import c2pa as c2

    s = copy.deepcopy(store)
    res = s["validation_results"]["activeManifest"]
    url = res["failure"][0]["url"]
    res["failure"] = [{"code": "signingCredential.untrusted", "url": url}] + [
        {"code": c, "url": url, "explanation": "test"} for c in codes]
    if any(c.startswith("claimSignature.m") for c in codes):
        res["success"] = [x for x in res["success"] if x["code"] != "claimSignature.validated"]
    monkeypatch.setattr(c2, "read_c2pa", lambda data, fmt, where="", chunks=0: c2.summarize(s, "Invalid", where))
    img = io.BytesIO()
    _img(6).save(img, "JPEG")
    b = img.getvalue()
    return analyze(b[:2] + b"\xff\xeb\x00\x0aJPjumbc2" + b[2:], "x")   # an APP11 segment: the walker sees JUMBF


@pytest.mark.parametrize("code", CREDENTIAL_ONLY)
def test_credential_and_time_problems_alone_make_an_unverified_claim(monkeypatch, expired_store, code):
    rep = _analyze_with_codes(monkeypatch, expired_store, [code])
    cap = {e.id: e for e in rep.evidence}["c2pa.capture"]
    assert cap.strength == 0.5 and code in cap.detail and "signer NOT verified" in cap.detail
    assert "conflicts" not in rep.facts


@pytest.mark.parametrize("code", INTEGRITY)
def test_any_mismatch_or_unknown_failure_makes_the_manifest_invalid(monkeypatch, expired_store, code):
    for codes in ([code], ["signingCredential.expired", code]):
        rep = _analyze_with_codes(monkeypatch, expired_store, codes)
        assert rep.facts["c2pa"]["status"] == "invalid"
        assert not [e for e in rep.evidence if e.direction == "real"]
        (c,) = rep.facts["conflicts"]
        assert "INVALID" in c and code in c


def test_truncated_names_only_list_items_the_record_keeps():
    # Strings in list fields are clipped at 4,000 characters and named `k[i]`; of a manifest's list
    # the record keeps the first 50, so an item past those is counted in `k`, never named alone.
    from aiidetect.provenance import c2pa as c2

    f = c2.C2paFacts(source_types=["x" * 5000] + ["y"] * 58 + ["z" * 6000])
    d = f.to_dict()
    assert d["truncated"] == {"source_types[0]": 5000, "source_types": 60}
    assert len(d["source_types"]) == 50 and len(d["source_types"][0]) == 4000


# --- two manifest stores in one file ---------------------------------------------------
# A file carries one C2PA manifest store; c2pa-rs reads the first of a JPEG's (or WebP's) and says nothing of a
# second. A camera's store pasted in front of a generator's (or the reverse) decided what the record showed,
# and the other was silently gone.

def _two_stores(signer, first: str, second: str) -> tuple[bytes, bytes]:
    """-> (a JPEG whose `second` manifest is signed over it, with the APP11 store of another image's `first`
    manifest pasted in front; that other signed image)."""
    other = c2pa_signing.sign(signer, _img(7), "JPEG", first, thumbnail=False)
    own = c2pa_signing.sign(signer, _img(8), "JPEG", second, thumbnail=False)
    return own[:2] + b"".join(_app11_segments(other)) + own[2:], own


def test_a_second_manifest_store_is_named_in_the_record_not_silently_dropped(signer):
    forged, _ = _two_stores(signer, "digitalCapture", "trainedAlgorithmicMedia")
    rep = analyze(forged, "x")
    assert rep.facts["c2pa"]["stores"] == 2 and rep.facts["c2pa"]["status"] == "invalid"
    assert not [e for e in rep.evidence if e.direction == "real" or e.decisive]
    notes = " ".join(rep.facts["conflicts"])
    assert "2 C2PA manifest stores" in notes and "declaring digitalCapture" in notes, notes
    assert "what the other store declares is not known" in notes, notes   # it read "the other 1 declare"
    assert "only the first was read" in {e.id: e for e in rep.evidence}["c2pa.manifest"].detail


def test_one_store_over_many_app11_segments_is_one_store_and_two_such_stores_are_two(signer):
    # A store past 64 KB (a camera's or an editor's thumbnail) is split over APP11 packets that each repeat the
    # JUMBF box header; only the first (sequence 1) opens it. Counted per packet, every such genuine file read as
    # a paste, its manifest INVALID and a conflict note on it.
    big = Image.fromarray(np.random.default_rng(5).integers(0, 255, (400, 600, 3), dtype=np.uint8))
    one = c2pa_signing.sign(signer, big, "JPEG", "digitalCapture")
    assert len(_app11_segments(one)) > 3
    rep = analyze(one, "x")
    assert rep.facts["c2pa"]["status"] == "valid" and "stores" not in rep.facts["c2pa"]
    assert "conflicts" not in rep.facts
    other = c2pa_signing.sign(signer, big.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG",
                              "trainedAlgorithmicMedia")
    two = analyze(one[:2] + b"".join(_app11_segments(other)) + one[2:], "x")
    assert two.facts["c2pa"]["stores"] == 2 and two.facts["c2pa"]["status"] == "invalid"


def test_a_second_store_under_another_jpeg_instance_number_is_refused_by_the_reader(signer):
    # docs/provenance.md "Two manifest stores": c2pa-rs reads the first of two stores only where they share its
    # one instance number; under two it refuses the file, which then says so rather than show either.
    other = c2pa_signing.sign(signer, _img(7), "JPEG", "digitalCapture", thumbnail=False)
    own = c2pa_signing.sign(signer, _img(8), "JPEG", "trainedAlgorithmicMedia", thumbnail=False)
    pasted = b"".join(s[:6] + b"\x00\x07" + s[8:] for s in _app11_segments(other))   # FF EB, length, "JP", instance
    rep = analyze(own[:2] + pasted + own[2:], "x")
    assert "c2pa" not in rep.facts
    assert "more than one manifest store" in {e.id: e for e in rep.evidence}["c2pa.unreadable"].detail


def test_a_valid_manifest_beside_another_store_is_not_signed_evidence(signer, monkeypatch):
    # However the first store reads (here as valid as c2pa-rs reads the signed file alone), a second store
    # means something was added after signing: the declaration is a claim, never decisive.
    from aiidetect.provenance import c2pa as c2

    forged, own = _two_stores(signer, "trainedAlgorithmicMedia", "trainedAlgorithmicMedia")
    alone = c2.read_c2pa(own, "JPEG", "JPEG APP11")
    assert alone.valid
    monkeypatch.setattr(c2, "read_c2pa", lambda data, fmt, where="", chunks=0: c2.C2paFacts(**alone.__dict__))
    ev = {e.id: e for e in analyze(forged, "x").evidence}
    assert not ev["c2pa.ai-generated"].decisive and ev["c2pa.ai-generated"].strength == 3.0
    assert ev["c2pa.ai-generated"].data["basis"] == "claim"
    one = {e.id: e for e in analyze(own, "x").evidence}   # the same manifest alone in its file still decides
    assert one["c2pa.ai-generated"].decisive and "stores" not in analyze(own, "x").facts["c2pa"]



def test_a_tiff_s_second_store_on_another_page_is_counted(signer):
    # c2pa-rs takes a TIFF's C2PA tag from any page and, of two, reads the last page's and says nothing of the
    # other: a generator's manifest on page 1 and a camera's store on page 2 read as one capture manifest.
    from aiidetect.testing.hostile import tiff_with_page

    own = c2pa_signing.sign(signer, _img(8), "TIFF", "trainedAlgorithmicMedia", thumbnail=False)
    other = c2pa_signing.sign(signer, _img(7), "TIFF", "digitalCapture", thumbnail=False)
    assert "stores" not in analyze(own, "x").facts["c2pa"]
    rep = analyze(tiff_with_page(own, [(0xCD41, 7, Image.open(io.BytesIO(other)).tag_v2[0xCD41])]), "x")
    assert rep.facts["c2pa"]["source_types"] == ["digitalCapture"]      # the reader's pick: page 2's store
    assert rep.facts["c2pa"]["stores"] == 2 and rep.facts["c2pa"]["status"] == "invalid"
    assert not [e for e in rep.evidence if e.direction == "real" or e.decisive]
    notes = " ".join(rep.facts["conflicts"])
    assert "2 C2PA manifest stores (TIFF C2PA tag)" in notes, notes    # a tag, not a box
    assert "only the last page's was read, declaring digitalCapture" in notes


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_two_heif_stores_are_counted_and_the_reader_refuses_them(signer, fmt):
    # A HEIF/AVIF carries its store in a top-level C2PA `uuid` box; with two, c2pa-rs refuses the file (no store is
    # read as the file's account), and the walk counts them as in every other container.
    pytest.importorskip("pillow_heif").register_heif_opener()
    from aiidetect.provenance.containers import C2PA_BMFF_UUID, bmff_boxes, walk

    own = c2pa_signing.sign(signer, _img(8), fmt, "trainedAlgorithmicMedia", thumbnail=False)
    other = c2pa_signing.sign(signer, _img(7), fmt, "digitalCapture", thumbnail=False)
    start, stop = next((a, b) for k, a, b in bmff_boxes(other, 0, len(other))
                       if k == b"uuid" and other[a:a + 16] == C2PA_BMFF_UUID)
    at = next(a for k, a, b in bmff_boxes(own, 0, len(own)) if k == b"uuid") - 8
    two = own[:at] + other[start - 8:stop] + own[at:]
    assert walk(own).c2pa_stores == 1 and walk(two).c2pa_stores == 2
    rep = analyze(two, "x")
    assert "c2pa" not in rep.facts
    assert "more than one manifest store" in {e.id: e for e in rep.evidence}["c2pa.unreadable"].detail

def test_the_same_tiff_store_copied_onto_a_second_page_counts_as_two(signer):
    # c2pa-rs signs a TIFF's store into page 0 only, so no signing tool repeats it per page; a byte-identical copy
    # on page 2 is something added after signing (c2pa-rs itself fails the copy's data hash), and it is counted
    # as a second store, not folded into the first for saying the same thing.
    from aiidetect.testing.hostile import tiff_with_page

    own = c2pa_signing.sign(signer, _img(8), "TIFF", "digitalCapture", thumbnail=False)
    same = tiff_with_page(own, [(0xCD41, 7, Image.open(io.BytesIO(own)).tag_v2[0xCD41])])
    rep = analyze(same, "x", options={"watermark": "never"})
    assert rep.facts["c2pa"]["stores"] == 2 and rep.facts["c2pa"]["status"] == "invalid"
    assert not [e for e in rep.evidence if e.direction == "real"]


def test_a_c2pa_tag_in_a_tiff_s_exif_ifd_is_counted_as_a_store():
    # No tool writes a store there (c2pa-rs reads the pages' tags): one found there was added, and is counted.
    from aiidetect.provenance.containers import walk
    from aiidetect.testing.hostile import tiff_file

    store = b"\x00\x00\x00\x10jumb\x00\x00\x00\x08c2pa"
    base = bytearray(tiff_file(8, 1, 1, extra=[(0xCD41, 7, store), (34665, 4, b"\xef\xbe\xad\xde")]))
    at = base.find(struct.pack("<HHI", 34665, 4, 1)) + 8
    base += b"\x00" * (len(base) & 1)
    struct.pack_into("<I", base, at, len(base))
    base += struct.pack("<HHHII", 1, 0xCD41, 7, len(store), len(base) + 18) + bytes(4) + store
    assert walk(tiff_file(8, 1, 1, extra=[(0xCD41, 7, store)])).c2pa_stores == 1
    assert walk(bytes(base)).c2pa_stores == 2


def test_a_heif_store_nested_in_meta_is_neither_read_nor_counted(signer):
    # c2pa-rs takes a HEIF's store from a top-level C2PA `uuid` box only: one nested in `meta` is not read, so it
    # is not counted either; the top-level store is the one read (its hash now fails: bytes were added).
    pytest.importorskip("pillow_heif").register_heif_opener()
    from aiidetect.provenance.containers import C2PA_BMFF_UUID, bmff_boxes, walk

    own = c2pa_signing.sign(signer, _img(8), "HEIF", "trainedAlgorithmicMedia", thumbnail=False)
    other = c2pa_signing.sign(signer, _img(7), "HEIF", "digitalCapture", thumbnail=False)
    start, stop = next((a, b) for k, a, b in bmff_boxes(other, 0, len(other))
                       if k == b"uuid" and other[a:a + 16] == C2PA_BMFF_UUID)
    box = other[start - 8:stop]
    meta, end = next((a - 8, b) for k, a, b in bmff_boxes(own, 0, len(own)) if k == b"meta")
    nested = bytearray(own[:end] + box + own[end:])
    struct.pack_into(">I", nested, meta, struct.unpack_from(">I", own, meta)[0] + len(box))
    assert walk(bytes(nested)).c2pa_stores == 1
    rep = analyze(bytes(nested), "x", options={"watermark": "never"})
    assert rep.facts["c2pa"]["source_types"] == ["trainedAlgorithmicMedia"] and "stores" not in rep.facts["c2pa"]


# --- a valid signature from a signer nothing vouches for ------------------------------------

def test_a_self_signed_ai_manifest_counts_as_a_claim_against_the_pixels(signer):
    # The framer's move: a real photo signed with a certificate made for the purpose, declaring
    # trainedAlgorithmicMedia. Offline no trust list is configured, so the signature says the manifest is
    # intact, not who made it; counted at the signed floor it was ai-generated at P(AI) 0.99 against a pixel
    # detector sure the photo was real, and the reason called it "a valid signature".
    from aiidetect.fusion import DECISIVE_P_LEAST, fuse
    from aiidetect.metadata.detector import result_from_evidence
    from aiidetect.records import DetectorResult

    rep = analyze(c2pa_signing.sign(signer, _img(9), "JPEG", "trainedAlgorithmicMedia", thumbnail=False), "x")
    assert rep.facts["c2pa"]["status"] == "valid"
    out = fuse({"metadata": result_from_evidence(rep.evidence, {"facts": rep.facts}),
                "linear:x": DetectorResult(status="ok", p_ai=0.01, score_kind="prob")})
    assert out.verdict == "ai-generated" and out.p_ai < DECISIVE_P_LEAST, out.p_ai
    assert "anyone can sign with a self-made certificate" in out.reasons[0]
    assert "counts as the file's own claim" in out.reasons[0], out.reasons[0]


def test_trust_is_the_reader_s_own_state_never_a_field_the_file_writes():
    # Every other test stands `trusted` in by a patch; this is the decision itself. Only c2pa-rs's state "Trusted"
    # (a trust list vouched for the chain) makes a manifest signed evidence: not a signer or issuer name that
    # claims a camera maker, not a valid signature alone (what every offline read gives), and not with a failure.
    from aiidetect.provenance.c2pa import summarize

    def store(failures=("signingCredential.untrusted",)):
        return {"active_manifest": "m", "manifests": {"m": {
            "claim_generator": "Leica Camera AG", "signature_info": {"common_name": "Leica Camera AG",
                                                                     "issuer": "C2PA Trust List Root (trusted)"}}},
            "validation_results": {"activeManifest": {
                "success": [{"code": "claimSignature.validated"}, {"code": "assertion.dataHash.match"}],
                "failure": [{"code": c} for c in failures]}}}

    assert summarize(store(), "Valid").valid and not summarize(store(), "Valid").trusted
    assert summarize(store(()), "Trusted").trusted and summarize(store(()), "trusted").trusted
    assert not summarize(store(("assertion.dataHash.mismatch",)), "Trusted").trusted
    f = summarize(store(()), "Trusted")
    f.stores = 2   # a second store pasted beside a vouched-for one: invalid, so not trusted either
    assert not f.trusted and f.to_dict().get("trusted") is None
