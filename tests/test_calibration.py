"""Calibration on synthetic scores with known answers."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from aiidetect import calibration as C
from aiidetect.records import DetectorResult, Evidence


def _synthetic(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, n)                       # true log-odds
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return z, y


def test_temperature_recovers_known_T():
    z, y = _synthetic()
    cal = C.fit(3.0 * z, y, "temperature")         # over-confident by 3x
    assert cal.params["T"] == pytest.approx(3.0, rel=0.06)


def test_platt_recovers_known_slope_and_offset():
    z, y = _synthetic(seed=1)
    x = (z + 1.0) / 0.5                             # true z = 0.5 x - 1
    cal = C.fit(x, y, "platt")
    assert cal.params["a"] == pytest.approx(0.5, rel=0.06)
    assert cal.params["b"] == pytest.approx(-1.0, abs=0.08)


def test_isotonic_is_monotone_and_bounded():
    z, y = _synthetic(4000, seed=2)
    cal = C.fit(z, y, "isotonic")
    grid = np.linspace(-10, 10, 101)
    p = cal.prob(grid)
    assert np.all(np.diff(p) >= -1e-12)
    assert p.min() >= C.P_EPS - 1e-12 and p.max() <= 1 - C.P_EPS + 1e-12
    assert abs(float(cal.prob(0.0)) - 0.5) < 0.1


@pytest.mark.parametrize("method", C.METHODS)
def test_calibration_roundtrips_through_a_dict(method):
    z, y = _synthetic(2000, seed=3)
    cal = C.fit(2 * z, y, method)
    again = C.Calibrator.from_dict(cal.to_dict())
    np.testing.assert_allclose(cal.logit([-3.0, 0.1, 4.0]), again.logit([-3.0, 0.1, 4.0]))


def test_fit_refuses_one_class():
    with pytest.raises(ValueError):
        C.fit([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        C.fit([0.1], [0], "magic")


def test_band_meets_the_false_positive_target_exactly():
    real = np.arange(1, 201) / 201.0                # 200 reals, evenly spread
    ai = np.r_[np.full(95, 0.999), np.full(5, 0.01)]
    p, y = np.r_[real, ai], np.r_[np.zeros(200), np.ones(100)]
    b = C.choose_band(p, y, max_fpr=0.01, max_fnr=0.05)
    assert np.mean(real >= b.ai) <= 0.01
    # two reals allowed above: the threshold sits just above the third largest
    assert real[-3] < b.ai <= real[-2]
    assert b.fpr == pytest.approx(0.01)
    assert np.mean(ai <= b.real) <= 0.05 and b.real <= 0.5


def test_band_never_crosses_one_half():
    p = np.r_[np.full(50, 0.2), np.full(50, 0.3)]   # AI scores low, reals even lower
    y = np.r_[np.zeros(50), np.ones(50)]
    b = C.choose_band(p, y)
    assert b.ai >= 0.5 and b.real <= 0.5


def test_band_on_too_few_images_is_never_narrower_than_the_rules():
    """Ten real photos, all below 0.6: "above every real seen" put the ai
    threshold at 0.6, and a random-init probe calibrated so called 87 of the
    dev set's 93 real photos ai-generated. Ten photos cannot show a 1% rate
    (0 of 10 still allows 26%), so the rules' band stays, and the band says why."""
    rng = np.random.default_rng(8)
    p = np.r_[rng.uniform(0.3, 0.6, 10), rng.uniform(0.7, 0.99, 10)]
    y = np.r_[np.zeros(10), np.ones(10)]
    b = C.choose_band(p, y, max_fpr=0.01, max_fnr=0.05)
    assert (b.ai, b.real) == (0.9, 0.1)
    assert b.fpr == 0.0 and b.fpr_upper == pytest.approx(1 - 0.05 ** (1 / 10))
    assert len(b.notes) == 2 and "10 real images cannot show a 1% false-positive rate" in b.notes[0]
    assert b.to_dict()["notes"] == b.notes and b.to_dict()["fpr_upper_95"] == b.fpr_upper
    # enough images for the target: the data decides, nothing to note
    many = C.choose_band(np.r_[rng.uniform(0.3, 0.6, 100), rng.uniform(0.7, 0.99, 20)],
                         np.r_[np.zeros(100), np.ones(20)], max_fpr=0.01, max_fnr=0.05)
    assert many.ai < 0.9 and many.real == pytest.approx(0.5) and many.notes == []


def test_a_coin_flip_is_never_a_firm_verdict_at_the_floor():
    """Reals all below 0.5 and AI all above put both thresholds on the 0.5
    floor, and fuse (p >= ai) called p_ai = 0.5 ai-generated."""
    from aiidetect.fusion import fuse

    p = np.r_[np.linspace(0.05, 0.45, 200), np.linspace(0.55, 0.95, 40)]
    b = C.choose_band(p, np.r_[np.zeros(200), np.ones(40)])
    assert 0.5 < b.ai < 0.5 + 1e-12 and 0.5 - 1e-12 < b.real < 0.5
    band = {"ai_threshold": b.ai, "real_threshold": b.real}
    assert fuse({"a": DetectorResult("ok", p_ai=0.5)}, band).verdict == "uncertain"
    assert fuse({"a": DetectorResult("ok", p_ai=0.51)}, band).verdict == "ai-generated"


def test_a_target_no_threshold_can_meet_is_said_not_met():
    """Real photos at a saturated fused P(AI) of 1.0 are ai-generated under any band: the band came out
    1.0 / 0.0 with 2.5% of real photos above it against a 1% target, and no note."""
    rng = np.random.default_rng(0)
    neg = list(rng.uniform(0, 0.4, 195)) + [1.0] * 5
    pos = list(rng.uniform(0.6, 1, 100)) + [0.0] * 10
    b = C.choose_band(neg + pos, [0] * 200 + [1] * 110)
    assert (b.ai, b.real, b.fpr) == (1.0, 0.0, 0.025)
    assert any(n.startswith("the 1% false-positive target is not met: 5 of 200 real images") for n in b.notes)
    assert any(n.startswith("the 5% false-negative target is not met: 10 of 110 AI images") for n in b.notes)
    assert not C.choose_band(neg[:-5] + pos[:-10], [0] * 195 + [1] * 100).notes


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
       st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.5]), st.sampled_from([0.0, 0.05, 0.3]))
def test_band_properties(real, ai, max_fpr, max_fnr):
    real, ai = np.array(real), np.array(ai)
    b = C.choose_band(np.r_[real, ai], np.r_[np.zeros(real.size), np.ones(ai.size)], max_fpr, max_fnr)
    assert 0.0 <= b.real < 0.5 < b.ai <= 1.0
    # in-sample target met, or (at the ceiling 1.0 / the floor 0.0) said not to be
    missed = " ".join(b.notes)
    assert np.mean(real >= b.ai) <= max_fpr + 1e-12 or (b.ai == 1.0 and "false-positive target is not met" in missed)
    assert np.mean(ai <= b.real) <= max_fnr + 1e-12 or (b.real == 0.0 and "false-negative target is not met" in missed)
    assert (b.ai >= 0.9) if real.size * max_fpr < 1 else True
    assert (b.real <= 0.1) if ai.size * max_fnr < 1 else True
    assert b.fpr <= b.fpr_upper <= 1.0 and b.fnr <= b.fnr_upper <= 1.0


class _S:  # Scored-like
    def __init__(self, label, results):
        self.label, self.results, self.error, self.generator, self.path = label, results, None, "g", "x"


def _logit_items(n: int, centre: float, spread: float, seed: int) -> list:
    """n calibration items alternating real/AI, one detector "pix" whose logit is normal around
    -centre (real) or +centre (AI)."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        y = i % 2
        z = float(rng.normal(centre if y else -centre, spread))
        items.append(_S(y, {"pix": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-z))), score=z, score_kind="logit")}))
    return items


def test_fit_fusion_learns_weights_band_and_saves(tmp_path, monkeypatch):
    from aiidetect.fusion import fuse, load_fusion_model

    rng = np.random.default_rng(4)
    items = []
    for i in range(300):
        y = i % 2
        z = rng.normal(2.5 if y else -2.5, 1.5)
        res = {"pix": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-3 * z))), score=3 * z, score_kind="logit"),
               "noise": DetectorResult("ok", p_ai=float(rng.random()), score=None),
               "gone": DetectorResult.unavailable("no head")}
        if i % 7 == 0:
            res["meta"] = DetectorResult("ok", evidence=[Evidence("exif.camera", "real", 1.0, "camera EXIF")])
        items.append(_S(y, res))
    fitted = C.fit_fusion(items, method="temperature", max_fpr=0.02)
    p = fitted["params"]
    assert set(p["detectors"]) == {"pix", "noise"}
    # true log-odds of N(+-2.5, 1.5^2) classes are 2.22 z; scores are 3 z -> T ~ 1.35
    assert 1.1 < p["detectors"]["pix"]["calibration"]["T"] < 1.7
    assert p["detectors"]["pix"]["weight"] > 5 * abs(p["detectors"]["noise"]["weight"])
    real_ai = np.mean([fuse(s.results, p).verdict == "ai-generated" for s in items if s.label == 0])
    assert real_ai <= 0.02 + 1e-9
    d = C.save_fusion(tmp_path / "w" / "fusion", fitted, {"n": 300}, name="fusion")
    m = load_fusion_model([tmp_path / "w"])
    assert m is not None and m["detector"] == "fusion" and m["calibration"]["fitted_on"] == {"n": 300}
    assert (d / "head.safetensors").is_file()
    # the loaded manifest fuses exactly like the params
    assert fuse(items[1].results, m).p_ai == pytest.approx(fuse(items[1].results, p).p_ai)


def test_fit_fusion_refuses_without_opinions():
    items = [_S(i % 2, {"gone": DetectorResult.unavailable("x")}) for i in range(20)]
    with pytest.raises(ValueError):
        C.fit_fusion(items)


def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 3))
    y = (rng.random(400) < 1 / (1 + np.exp(-(X @ [1.5, -0.5, 0.0] + 0.3)))).astype(int)
    w, b = C.logistic_regression(X, y, C=0.7)
    ref = LogisticRegression(C=0.7, tol=1e-10, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-5)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_fusion_never_amplifies_soft_evidence_nor_flips_a_detector():
    rng = np.random.default_rng(6)
    items = []
    for i in range(200):
        y = i % 2
        inverted = rng.normal(-1.0 if y else 1.0, 1.0)        # a detector that is wrong way round here
        weak = rng.normal(0.3 if y else -0.3, 1.0)            # one that is right, barely
        ev = Evidence("exif", "ai" if y else "real", 0.3, "weak hint")  # perfectly predictive, stated weak
        items.append(_S(y, {"inv": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-inverted)))),
                            "weak": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-weak)))),
                            "meta": DetectorResult("ok", evidence=[ev])}))
    p = C.fit_fusion(items)["params"]
    assert p["evidence_weight"] == pytest.approx(1.0)
    assert p["detectors"]["inv"]["weight"] == 0.0 and p["detectors"]["weak"]["weight"] > 0
    # the inverted detector alone: no model, rather than one where metadata alone decides
    for it in items:
        del it.results["weak"]
    with pytest.raises(ValueError, match="no detector carries information"):
        C.fit_fusion(items)


def test_fit_fusion_leaves_non_finite_scores_out_and_counts_them():
    """One NaN and one infinite logit among 60 scores pulled the temperature to
    its bound (T = 1000), the weight to 0 and the band to None."""
    items = _logit_items(60, centre=1.0, spread=1.5, seed=9)
    clean = C.fit_fusion(items)["params"]
    items[0].results["pix"] = DetectorResult("ok", p_ai=float("nan"), score=float("nan"), score_kind="logit")
    items[1].results["pix"] = DetectorResult("ok", p_ai=1.0, score=float("inf"), score_kind="logit")
    p = C.fit_fusion(items)["params"]
    d = p["detectors"]["pix"]
    assert d["non_finite"] == 2 and d["n"] == 58
    assert 0.3 < d["calibration"]["T"] < 3 and d["weight"] > 0.3
    assert d["calibration"]["T"] == pytest.approx(clean["detectors"]["pix"]["calibration"]["T"], rel=0.5)
    assert 0.5 <= p["ai_threshold"] <= 1 and 0 <= p["real_threshold"] <= 0.5



def test_platt_does_not_flip_an_inverted_detector():
    """The weights are >= 0 so that a detector inverted on the calibration data
    is dropped, not flipped; with --method platt the slope went negative
    instead (a = -2.2, weight +1.0) and the inverted detector decided."""
    from aiidetect.fusion import fuse

    rng = np.random.default_rng(6)
    items = []
    for i in range(400):
        y = i % 2
        inv, good = rng.normal(-1.0 if y else 1.0, 1.0), rng.normal(0.5 if y else -0.5, 1.0)
        items.append(_S(y, {"inv": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-inv)))),
                            "good": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-good))))}))
    p = C.fit_fusion(items, method="platt")["params"]
    assert list(p["detectors"]) == ["good"] and p["detectors"]["good"]["calibration"]["a"] > 0
    assert "dropped, not flipped" in p["skipped_detectors"]["inv"]
    out = fuse({"inv": DetectorResult("ok", p_ai=0.001), "good": DetectorResult("ok", p_ai=0.5)}, p)
    assert "inv" not in out.contributions
    for it in items:
        it.results["inv"] = DetectorResult("ok", p_ai=0.3)   # a constant is not "inverted" by a rounding error
    assert "the same raw score" in C.fit_fusion(items, method="platt")["params"]["skipped_detectors"]["inv"]
    # the only detector skipped: the refusal says why, not only "nothing to fuse"
    for it in items:
        del it.results["good"]
    with pytest.raises(ValueError, match=r"nothing to fuse; inv skipped: the same raw score \(-0.8473\) for every"):
        C.fit_fusion(items)


def test_a_fit_without_a_pixel_detector_keeps_the_rules_band():
    """Metadata alone (or `-d metadata,linear` with the head unavailable): the band was chosen on
    P(AI) of soft evidence, here ai >= 0.5000001, and a model without detectors leaves fuse averaging
    the pixel detectors by the rules, so every later scan called a p_ai of 0.6 ai-generated."""
    from aiidetect.fusion import check_model, fuse

    cam = Evidence("exif.camera", "real", 1.5, "camera")
    bare = Evidence("exif.none", "ai", 0.5, "no EXIF")
    items = ([_S(0, {"metadata": DetectorResult("ok", evidence=[cam])}) for _ in range(120)]
             + [_S(1, {"metadata": DetectorResult("ok", evidence=[bare])}) for _ in range(30)])
    fitted = C.fit_fusion(items)
    p, t = fitted["params"], fitted["threshold"]
    assert (p["ai_threshold"], p["real_threshold"]) == (t["ai"], t["real"]) == C.RULES_BAND
    assert [n for n in t["notes"] if "no pixel detector was calibrated" in n] == t["notes"]
    assert (p["evidence_weight"], p["bias"]) == (1.0, 0.0)   # what fuse applies without detectors
    check_model({"name": "f", "detector": "fusion", "params": p, "threshold": t})
    assert fuse({"linear": DetectorResult("ok", p_ai=0.6)}, p).verdict == "uncertain"


def test_too_few_images_left_once_decisive_evidence_decides_the_rest_is_refused():
    """Images with decisive evidence are left out of the fit (rule 3 decides them). 20 AI images,
    18 with generator parameters, passed the 5-per-class check and the weights were fitted on 2 AI
    images; with all 20 it said "train a head first"."""
    rng = np.random.default_rng(0)
    dec = Evidence("png.parameters", "ai", 9.2, "generator parameters", decisive=True)
    for n_decided in (18, 20):
        items = ([_S(0, {"lin": DetectorResult("ok", p_ai=float(rng.uniform(0, .6)))}) for _ in range(20)]
                 + [_S(1, {"lin": DetectorResult("ok", p_ai=float(rng.uniform(.4, 1))),
                           "metadata": DetectorResult("ok", evidence=[dec] if i < n_decided else [])})
                    for i in range(20)])
        with pytest.raises(ValueError, match=rf"5 real and 5 AI images that decisive evidence does not decide "
                                             rf"\({n_decided} left out.*\(got 20 real, {20 - n_decided} AI\)"):
            C.fit_fusion(items)


def test_a_detector_whose_fitted_say_is_negligible_is_weighed_zero():
    """A random-init probe beside metadata on the dev set: T ran to 1000 and the weight came out 1.1e-4
    (3e-6 nats between the probe's extremes), above 0, so it counted as an opinion and soft evidence
    alone gave firm verdicts; calibrate wrote the model. (The same here: T 1000, weight 3.2e-5.)"""
    rng = np.random.default_rng(11)
    items = []
    for i in range(100):
        y = i % 2
        ev = [Evidence("exif", "ai" if y else "real", 1.0, "hint")] if rng.random() < 0.7 else []
        items.append(_S(y, {"probe": DetectorResult("ok", p_ai=float(0.5 + 0.01 * rng.normal())),
                            "meta": DetectorResult("ok", evidence=ev)}))
    with pytest.raises(ValueError, match=r"probe: weight 0 .*varied by less than 0.001 nats .*weight 3.16e-05"):
        C.fit_fusion(items)
    good = np.random.default_rng(1)
    for i, it in enumerate(items):   # beside a detector that does tell them apart: kept, weighed 0
        it.results["good"] = DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-good.normal(1.0 if i % 2 else -1.0)))))
    p = C.fit_fusion(items)["params"]["detectors"]
    assert p["probe"]["weight"] == 0.0 and "no say" in p["probe"]["note"] and p["good"]["weight"] > 0.1


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_a_fit_where_no_detector_carries_information_is_refused(method):
    """Temperature and isotonic cannot flip a detector that runs the wrong way on the calibration
    data: they flattened it (T = 1000, weight 0) and calibrate wrote a model under which every
    later scan was uncertain, "in-sample uncertain 100%" its only sign."""
    rng = np.random.default_rng(3)
    items = []
    for i in range(200):
        y = i % 2
        z = rng.normal(-1.5 if y else 1.5, 1.0)
        items.append(_S(y, {"inv": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-z))))}))
    with pytest.raises(ValueError, match=r"no detector carries information on this data.*inv: weight 0"):
        C.fit_fusion(items, method=method)


def test_the_fusion_manifest_is_strict_utf8_json_when_names_are_not(tmp_path):
    """A calibration folder named in bytes that are not UTF-8: the manifest held "\\udcff" escapes
    (serde_json and other strict parsers refuse a lone surrogate) while `calibrate -f json` printed
    U+FFFD for the same name."""
    import json

    from aiidetect.report.safe import dumps

    fitted = C.fit_fusion(_logit_items(40, centre=1.0, spread=1.5, seed=2))
    data = {"sources": ["calib/\udcff\udcfe"], "generators": {"g\udcff": 20, "real": 20}}
    path = C.save_fusion(tmp_path / "fusion", fitted, data, source="aiidetect calibrate calib/\udcff")
    text = (path / "manifest.json").read_text(encoding="utf-8")
    assert "\\ud" not in text
    m = json.loads(text)
    assert m["data"] == json.loads(dumps({"data": data}))["data"] and "\ufffd" in m["source"]


@pytest.mark.parametrize("method", C.METHODS)
def test_every_fitted_model_passes_the_load_check(method, tmp_path):
    """check_model's bounds are the fitter's: what calibrate writes, scan loads
    (separable, noisy, inverted, metadata-only and tiny sets alike)."""
    from aiidetect.fusion import check_model, load_fusion_model

    rng = np.random.default_rng(11)
    for k, (n, sep) in enumerate([(12, 9.0), (60, 1.0), (300, -0.5), (40, 0.0)]):
        items = []
        for i in range(n):
            y = i % 2
            z = float(rng.normal(sep * (y - 0.5), 1.0))
            res = {"pix": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-z))), score=z, score_kind="logit")}
            if i % 3:
                res["meta"] = DetectorResult("ok", evidence=[Evidence("exif", "real" if y == 0 else "ai", 0.5, "hint")])
            items.append(_S(y, res))
        try:
            fitted = C.fit_fusion(items, method=method)
        except ValueError as exc:  # inverted or uninformative: refused, not written
            assert sep <= 0 and "no detector carries information" in str(exc), (sep, exc)
            continue
        check_model(fitted["params"])
        C.save_fusion(tmp_path / str(k) / "fusion", fitted, {"n": n})
        assert load_fusion_model([tmp_path / str(k)])["detector"] == "fusion"


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_separable_calibration_scores_give_a_finite_fit_not_certainty(method):
    """Ten real and ten AI scores that do not overlap have no maximum-likelihood
    temperature (certainty always fits better): T went to its 1e-3 bound and a
    detector's own 57% (logit 0.3) came out ai-generated at p 0.92. Platt's
    smoothed targets, as --method platt already used, give the finite fit."""
    from aiidetect.fusion import fuse

    items = _logit_items(20, centre=2.0, spread=0.5, seed=0)
    p = C.fit_fusion(items, method=method)["params"]
    if method == "temperature":
        assert 0.3 < p["detectors"]["pix"]["calibration"]["T"] < 3
    else:
        assert min(p["detectors"]["pix"]["calibration"]["p"]) == pytest.approx(1 / 12)
    at = lambda x: fuse({"pix": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-x))), score=x, score_kind="logit")}, p)  # noqa: E731
    assert at(0.3).verdict == "uncertain" and 0.3 < at(0.0).p_ai < 0.7
    assert at(3.0).verdict == "ai-generated" and at(-3.0).verdict == "likely-real"


def _two_detectors(n: int, seed: int, b_fails_on_ai: float) -> list:
    """a and b tell real from AI; b fails (an error) on a share of the AI images, as a head that crashes
    on a format generators favour does."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        y = i % 2
        za, zb = rng.normal(1.0 if y else -1.0, 1.5), rng.normal(2.0 if y else -2.0, 1.5)
        res = {"a": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-za))), score=za, score_kind="logit"),
               "b": DetectorResult.failed("crashed") if y and rng.random() < b_fails_on_ai else
               DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-zb))), score=zb, score_kind="logit")}
        items.append(_S(y, res))
    return items


def test_the_bias_and_band_are_fitted_on_the_files_scans_judge_with_them():
    """A file one of the model's detectors did not answer is fused without the bias, under a band no
    narrower than the rules' (fusion.fuse). calibrate fitted it with that detector's logit as 0, so the
    bias learnt to stand in for the missing term: b failing on half the AI images gave +0.76 where the
    files both answered (200 real, 106 AI) call for -0.72, and those files came out over-confident toward
    AI (their P(AI) summed to 130.6 for 106 AI images)."""
    from aiidetect.fusion import fuse

    items = _two_detectors(400, 1, b_fails_on_ai=0.5)
    fitted = C.fit_fusion(items)
    p = fitted["params"]
    both = [s for s in items if s.results["b"].status == "ok"]
    # An unpenalised bias at its optimum makes the fitted P(AI) sum to the AI count over the rows it was fitted
    # on: here, exactly the files a scan judges with that bias.
    ps = [fuse(s.results, p).p_ai for s in both]
    assert sum(ps) == pytest.approx(sum(s.label for s in both), abs=1e-3)
    assert p["fit_rows"] == {"n": len(both), "no_answer": 400 - len(both), "no_answer_by_detector": {"b": 400 - len(both)}}
    # the band too: its counts are of those files (all 200 real photos, the AI images b answered)
    assert (fitted["threshold"]["n_real"], fitted["threshold"]["n_ai"]) == (200, len(both) - 200)


def test_too_few_files_every_detector_answered_is_refused_with_the_count():
    """Each detector answers 8 of the 20 AI images (enough for its own calibration), both only 4 of them:
    the weights, bias and band cannot be fitted on 4 AI images."""
    items = _two_detectors(40, 2, b_fails_on_ai=0.0)
    for k, s in enumerate(s for s in items if s.label == 1):
        for name, answers in (("a", range(0, 8)), ("b", range(4, 12))):
            if k not in answers:
                s.results[name] = DetectorResult.failed("crashed")
    with pytest.raises(ValueError, match=r"5 real and 5 AI images that every calibrated detector answered \(16 left "
                                         r"out: a calibrated detector gave them no answer \(a 12, b 12\)\) \(got 20 "
                                         r"real, 4 AI\); scans judge a file .* or leave the detector out with -d"):
        C.fit_fusion(items)


def test_a_detector_weighed_0_is_not_waited_for():
    """A file only a detector of weight 0 missed keeps the model's bias and band at scan time (fuse sets
    them aside only for a detector with a say), so it is fitted on again once that detector is weighed 0
    (here at its bound: a probe at 0.5 +- 0.01 that tells nothing apart)."""
    rng = np.random.default_rng(11)
    items = []
    for i in range(100):
        y = i % 2
        items.append(_S(y, {"probe": DetectorResult.failed("crashed") if i < 10 else
                            DetectorResult("ok", p_ai=float(0.5 + 0.01 * rng.normal())),
                            "good": DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-rng.normal(1.0 if y else -1.0)))))}))
    p = C.fit_fusion(items)["params"]
    assert p["detectors"]["probe"]["weight"] == 0.0 and p["detectors"]["good"]["weight"] > 0.1
    assert p["fit_rows"] == {"n": 100, "no_answer": 0, "no_answer_by_detector": {}}


def test_a_refusal_names_the_files_a_detector_did_not_answer_beside_those_decisive_evidence_decides():
    """20 AI images: 12 decided by generator parameters, and of the other 8, b failed on 4. The check for
    decisive evidence counted what was left after both, and said "(12 left out: rule 3 decides them) (got 20
    real, 4 AI); calibrate on images without that metadata" with no word of b: stripped of it, the 4 still fail.
    The decisive check counts the files decisive evidence leaves; the next one names b."""
    rng = np.random.default_rng(0)
    dec = Evidence("png.parameters", "ai", 9.2, "generator parameters", decisive=True)
    items = [_S(0, {"a": DetectorResult("ok", p_ai=float(rng.uniform(0, .6))),
                    "b": DetectorResult("ok", p_ai=float(rng.uniform(0, .6)))}) for _ in range(20)]
    items += [_S(1, {"a": DetectorResult("ok", p_ai=float(rng.uniform(.4, 1))),
                     "b": DetectorResult.failed("crashed") if 12 <= i < 16 else
                     DetectorResult("ok", p_ai=float(rng.uniform(.4, 1))),
                     "metadata": DetectorResult("ok", evidence=[dec] if i < 12 else [])}) for i in range(20)]
    with pytest.raises(ValueError, match=r"5 real and 5 AI images that every calibrated detector answered \(4 left "
                                         r"out: a calibrated detector gave them no answer \(b 4\)\) \(got 20 real, "
                                         r"4 AI\)"):
        C.fit_fusion(items)


def _scored(n_per_class, seed=0):
    from aiidetect.evaluate.runner import Scored
    from aiidetect.probability import sigmoid

    rng = np.random.default_rng(seed)
    return [Scored(f"{lab}-{i}", lab, "g" if lab else "real",
                   {"a": DetectorResult("ok", p_ai=float(sigmoid(rng.normal(2.0 * lab, 1.0))))})
            for lab in (0, 1) for i in range(n_per_class)]


def test_cross_validation_judges_each_image_by_a_fit_without_it():
    """fit_fusion's rates are measured on the images that chose the band; cross_validate's on images
    the fit did not see, every image once, the same folds for the same data."""
    items = _scored(30)
    cv = C.cross_validate(items, max_fpr=0.05, max_fnr=0.05)
    assert cv == C.cross_validate(items, max_fpr=0.05, max_fnr=0.05)
    assert cv["real_called_ai_count"][1] == 30 and cv["ai_called_real_count"][1] == 30
    k, n = cv["real_called_ai_count"]
    assert cv["real_called_ai"] == k / n and cv["real_called_ai_upper_95"] == C.rate_upper_bound(k, n)
    # too few for a fold's fit: a reason, not a number
    small = C.cross_validate(_scored(6), max_fpr=0.05, max_fnr=0.05)
    assert "real_called_ai" not in small and "refused" in small["skipped"] and "got 4 real" in small["skipped"]
