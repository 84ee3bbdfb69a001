"""Fusion rules: missing detectors, decisive evidence, soft evidence, bands."""
import math

import pytest

from aiidetect.fusion import DEFAULT_AI_THRESHOLD, FusionOutcome, fuse, normalize_model
from aiidetect.records import DetectorResult, Evidence


def ok(p, score=None):
    return DetectorResult("ok", p_ai=p, score=score, score_kind="logit" if score is not None else None)


def meta(*ev):
    return DetectorResult("ok", evidence=list(ev))


AI_DECL = Evidence("c2pa.ai", "ai", 12.0, "signed C2PA manifest declares trainedAlgorithmicMedia", decisive=True)
CAMERA = Evidence("exif.camera", "real", 1.5, "camera make/model in EXIF")
SOFTWARE = Evidence("exif.software", "real", 1.2, "Lightroom in EXIF")


def test_no_information_is_uncertain_never_real():
    out = fuse({})
    assert out == FusionOutcome(None, "uncertain", out.reasons) and out.p_ai is None
    out = fuse({"linear": DetectorResult.unavailable("no head"), "mpft": DetectorResult.failed("boom"),
                "metadata": DetectorResult("ok")})
    assert out.p_ai is None and out.verdict == "uncertain"
    assert any("no head" in r for r in out.reasons)


def test_unavailable_detectors_drop_out():
    alone = fuse({"linear": ok(0.97)})
    with_missing = fuse({"linear": ok(0.97), "mpft": DetectorResult.unavailable("no weights"),
                         "flow": DetectorResult.failed("nan")})
    assert with_missing.p_ai == pytest.approx(alone.p_ai) and with_missing.verdict == alone.verdict == "ai-generated"


def test_pixel_detectors_are_averaged_not_summed():
    out = fuse({"a": ok(0.8), "b": ok(0.8)})
    assert out.p_ai == pytest.approx(0.8)          # two correlated views are not 2x the evidence
    assert out.verdict == "uncertain"               # 0.8 is inside the default band


def test_decisive_ai_evidence_dominates_pixel_detectors():
    out = fuse({"linear": ok(0.01), "metadata": meta(AI_DECL, CAMERA)})
    assert out.verdict == "ai-generated" and out.p_ai > DEFAULT_AI_THRESHOLD
    assert "decisive" in out.reasons[0]
    assert any("[decisive]" in r and "c2pa.ai" in r for r in out.reasons)


def test_decisive_real_evidence_and_conflicts():
    signed_capture = Evidence("c2pa.capture", "real", 10.0, "signed camera capture", decisive=True)
    assert fuse({"linear": ok(0.99), "metadata": meta(signed_capture)}).verdict == "likely-real"
    both = fuse({"metadata": meta(signed_capture, AI_DECL)})
    assert both.verdict == "uncertain" and any("both ways" in r for r in both.reasons)


def test_soft_evidence_only_shifts_the_odds():
    alone = fuse({"metadata": meta(CAMERA, SOFTWARE, Evidence("exif.lens", "real", 3.0, "lens"))})
    assert alone.verdict == "uncertain"             # metadata alone never decides
    assert alone.p_ai == pytest.approx(1 / (1 + math.exp(2.0)))  # capped at 2 nats
    shifted = fuse({"linear": ok(0.5), "metadata": meta(CAMERA)})
    assert shifted.p_ai == pytest.approx(1 / (1 + math.exp(1.5)))
    # camera EXIF cannot overturn a confident pixel detector
    assert fuse({"linear": ok(0.9999), "metadata": meta(CAMERA, SOFTWARE)}).verdict == "ai-generated"


def test_metadata_p_ai_is_not_double_counted():
    r = DetectorResult("ok", p_ai=0.2, evidence=[CAMERA])
    assert fuse({"metadata": r}).p_ai == pytest.approx(1 / (1 + math.exp(1.5)))


def test_model_band_and_manifest_forms():
    res = {"linear": ok(0.8, score=math.log(4))}
    assert fuse(res, {"ai_threshold": 0.75, "real_threshold": 0.2}).verdict == "ai-generated"
    manifest = {"name": "fusion", "detector": "fusion", "threshold": {"ai": 0.95, "real": 0.05},
                "params": {"detectors": {"linear": {"calibration": {"method": "temperature", "T": 2.0}, "weight": 1.0}},
                           "evidence_weight": 1.0, "bias": 0.0}}
    out = fuse(res, manifest)
    assert out.p_ai == pytest.approx(1 / (1 + math.exp(-math.log(4) / 2)))   # T=2 on the logit score
    assert out.verdict == "uncertain"
    assert normalize_model(manifest)["ai_threshold"] == 0.95
    # family fallback: "linear:univfd" uses the "linear" entry; detectors unknown to the model are ignored
    out2 = fuse({"linear:univfd": ok(0.8, score=math.log(4)), "other": ok(0.99)}, manifest)
    assert out2.p_ai == pytest.approx(out.p_ai)
    assert any("not in the fusion model" in r for r in out2.reasons)


def test_reasons_rank_what_moved_the_verdict():
    out = fuse({"linear": ok(0.99), "metadata": meta(CAMERA)})
    assert out.reasons[0].startswith("linear:")
    assert "nats" in out.reasons[0]
    assert out.contributions["linear"] > 0 > out.contributions["metadata:exif.camera"]
