"""Fusion follow-ups: a fitted model on a file one of its detectors did not answer."""
import math

import pytest

from aiidetect.fusion import DECISIVE_FLOOR, fuse
from aiidetect.probability import logit_float
from aiidetect.records import DetectorResult, Evidence


def ok(p):
    return DetectorResult("ok", p_ai=p)


def meta(*ev):
    return DetectorResult("ok", evidence=list(ev))


def claim(eid, s):
    return Evidence(eid, "ai", s, eid, decisive=True, data={"basis": "claim"})


PARAMS, XMP = claim("generator.parameters", 6.0), claim("xmp.ai-source-type", 4.0)
SIGNED = Evidence("c2pa.ai-generated", "ai", 7.0, "signed", decisive=True, data={"basis": "signed"})
CAMERA = Evidence("exif.camera", "real", 1.2, "camera")
TOOL = Evidence("exif.software-generator", "ai", 3.0, "AI tool in EXIF")
TOOL2 = Evidence("png.software-generator", "ai", 3.0, "AI tool in PNG")
# Two detectors with a say, a bias of +2 that offsets their usual negative logits, a band of 0.8 / 0.2.
MODEL = {"detectors": {"a": {"calibration": {"method": "none"}, "weight": 1.0},
                       "b": {"calibration": {"method": "none"}, "weight": 1.0}},
         "evidence_weight": 0.5, "bias": 2.0, "ai_threshold": 0.8, "real_threshold": 0.2}


@pytest.mark.parametrize("b", [DetectorResult.failed("boom"), DetectorResult.unavailable("no head"), ok(math.nan),
                               None])
def test_a_file_one_fitted_detector_did_not_answer_is_not_judged_on_the_bias_and_band_fitted_with_it(b):
    """Only a head left out for the whole run set the model's bias and band aside: a file on which `b`
    errored (or gave NaN, or did not run) got the bias fitted beside b's term, and `a`'s 0.6 alone read
    ai-generated at 0.917 under the 0.8 band fitted on both."""
    out = fuse({"a": ok(0.6), **({} if b is None else {"b": b})}, MODEL)
    assert out.p_ai == pytest.approx(0.6) and out.verdict == "uncertain"
    assert "bias" not in out.contributions
    assert any(r.startswith("b: no answer for this file") and "set aside" in r for r in out.reasons), out.reasons
    both = fuse({"a": ok(0.6), "b": ok(0.6)}, MODEL)   # both answered: the model as fitted
    assert both.contributions["bias"] == 2.0 and both.verdict == "ai-generated"
