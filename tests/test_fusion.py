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


def test_decisive_reason_names_what_the_evidence_rests_on():
    def first(basis, **data):
        e = Evidence("x.decl", "ai", 6.0, "declared", decisive=True, data={"basis": basis, **data})
        return fuse({"linear": ok(0.02), "metadata": meta(e, CAMERA)}).reasons[0]

    assert "x.decl, the file's own unsigned metadata (not verified" in first("claim")
    assert "valid signature" in first("signed") and "a trust list vouches for" in first("signed")
    # A valid C2PA signature no trust list vouches for (every one offline) is a claim, and the reason says why.
    assert "self-made certificate" in first("claim", status="valid") and "own claim" in first("claim", status="valid")
    assert "measured in the pixels" in first("pixels") and "any image" in first("pixels")
    assert first(None) == "decisive provenance evidence decides the verdict"   # no basis given: no guess


def test_a_self_signed_manifest_among_the_claims_is_not_called_unsigned():
    # A valid C2PA declaration no trust list vouches for counts with the file's other claims as one; the line
    # of the claim counted in it said "the file's own unsigned claims", of a manifest whose signature checks out.
    c2pa = Evidence("c2pa.ai-generated", "ai", 7.0, "C2PA declares ...; signature valid", decisive=True,
                    data={"basis": "claim", "status": "valid"})
    params = Evidence("generator.parameters", "ai", 6.0, "A1111 settings", decisive=True, data={"basis": "claim"})
    reasons = fuse({"linear": ok(0.01), "metadata": meta(c2pa, params)}).reasons
    line = next(r for r in reasons if r.startswith("metadata:generator.parameters:"))
    assert "counted in metadata:c2pa.ai-generated: the file's own claims count as the strongest" in line, line
    assert not any("unsigned claims" in r for r in reasons), reasons


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


def test_an_undecided_files_lead_reason_says_so_and_what_would_settle_it():
    """The table's reason is read by people who do not know the detectors: "no detector had an opinion" and
    "only soft metadata evidence: it shifts the odds but cannot decide alone" did not say that aiidetect left
    the file undecided, that metadata is easily forged, nor what would settle it."""
    for out in (fuse({"metadata": meta(CAMERA)}), fuse({"linear": DetectorResult.unavailable("no head")}),
                fuse({"metadata": DetectorResult("ok")})):
        lead = out.reasons[0]
        assert out.verdict == "uncertain" and lead.startswith("aiidetect does not decide: "), lead
        assert "to settle it, scan it with a pixel detector or check it with other sources" in lead, lead
        assert not any(w in lead for w in ("opinion", "soft", "odds", "nats")), lead
    assert "easily stripped or forged" in fuse({"metadata": meta(CAMERA)}).reasons[0]
    assert fuse({"linear": DetectorResult.unavailable("no head")}).reasons[0].endswith(
        "; could not run: linear (unavailable: no head)")


def test_an_undecided_file_whose_metadata_was_not_read_is_not_told_it_holds_nothing():
    """`-d linear` with its weights missing read "its metadata holds nothing that counts" on every file: the
    metadata had not been read, and an editor took the file for checked."""
    from aiidetect.fusion import NO_OPINION, NO_READING

    for res in ({"linear": DetectorResult.unavailable("no head")},
                {"linear": DetectorResult.unavailable("no head"), "metadata": DetectorResult.unavailable("x")}):
        lead = fuse(res).reasons[0]
        assert lead.startswith(NO_READING) and "metadata" not in lead.split("; could not run")[0], lead
    for res in ({"metadata": DetectorResult("ok")}, {"metadata": DetectorResult("ok"),
                                                     "linear": DetectorResult.unavailable("no head")}):
        assert fuse(res).reasons[0].startswith(NO_OPINION), res


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


VALID = {"name": "fz", "detector": "fusion", "threshold": {"ai": 0.93, "real": 0.2},
         "params": {"detectors": {"linear": {"calibration": {"method": "temperature", "T": 2.0}, "weight": 0.7}},
                    "evidence_weight": 0.5, "bias": -0.3, "soft_evidence_cap": 2.0,
                    "ai_threshold": 0.93, "real_threshold": 0.2}}


def _edit(path: str, value):
    import copy

    m = copy.deepcopy(VALID)
    *parents, key = path.split(".")
    d = m
    for p in parents:
        d = d[p]
    if value is KeyError:
        del d[key]
    else:
        d[key] = value
    return m


@pytest.mark.parametrize("path, value, says", [
    ("params.ai_threshold", math.nan, "ai_threshold must be a finite number"),
    ("params.real_threshold", math.nan, "real_threshold must be a finite number"),
    ("params.ai_threshold", math.inf, "ai_threshold must be a finite number"),
    ("params.ai_threshold", "0.95", "ai_threshold must be a finite number, not '0.95'"),
    ("params.ai_threshold", True, "ai_threshold must be a finite number"),
    ("params.ai_threshold", 0.2, "ai_threshold must lie in [0.5, 1.0]"),      # inverted band
    ("params.ai_threshold", 0.0, "ai_threshold must lie in [0.5, 1.0]"),      # fuse read 0 as "default"
    ("params.real_threshold", 0.8, "real_threshold must lie in [0.0, 0.5]"),
    ("params.real_threshold", -1.0, "real_threshold must lie in [0.0, 0.5]"),
    ("params.bias", math.inf, "bias must be a finite number"),
    ("params.bias", "x", "bias must be a finite number"),
    ("params.bias", None, "bias must be a finite number, not None"),          # fuse: float(None), per file
    ("params.evidence_weight", None, "evidence_weight must be a finite number"),
    ("params.detectors.linear.weight", None, "detector 'linear': weight must be a finite number"),
    ("params.evidence_weight", 1e300, "evidence_weight must lie in [0.0, 1.0]"),
    ("params.soft_evidence_cap", math.nan, "soft_evidence_cap must be a finite number"),
    ("params.soft_evidence_cap", -2.0, "soft_evidence_cap must lie in"),
    ("params.soft_evidence_cap", 1e300, "soft_evidence_cap must lie in [0.0, 2.0]"),   # rule 4's cap, lifted
    ("params.detectors.linear.weight", -5.0, "detector 'linear': weight must lie in [0.0, inf]"),
    ("params.detectors.linear.weight", math.nan, "detector 'linear': weight must be a finite number"),
    ("params.detectors.linear.weight", "heavy", "detector 'linear': weight must be a finite number"),
    ("params.detectors.linear", "x", "detector 'linear': its entry must be a JSON object"),
    ("params.detectors.linear.calibration", {"method": "platt", "a": -1.8, "b": 0.0}, "negative slope"),
    ("params.detectors.linear.calibration", {"method": "platt", "a": 0.0, "b": 3.0}, "has slope 0, so its answer"),
    ("params.detectors", [1, 2], "'detectors' must map detector names"),
    ("params", "x", "'params' must be a JSON object"),
    ("params", KeyError, "'params' must be a JSON object"),
    ("threshold", "x", "'threshold' must be a JSON object"),
    ("params.detectors.linear.weight", 0.0, "every detector in it has weight 0 (linear), so no verdict could"),
    ("format_version", 2, "its format_version 2 is not one this aiidetect reads (1 to 1)"),   # a later format
    ("format_version", "1", "its format_version '1' is not one this aiidetect reads"),
    ("format_version", True, "its format_version True is not one"),
])
def test_a_hostile_fusion_model_is_refused_naming_the_number(path, value, says):
    """Each of these, read by fuse as it was, gave nonsense or a crash per file:
    an infinite bias called every photo ai-generated, a negative weight turned
    the detector upside down, NaN or an inverted band made a side unreachable,
    a string raised in the middle of a scan."""
    from aiidetect.fusion import check_model

    with pytest.raises(ValueError) as exc:
        check_model(_edit(path, value))
    assert says in str(exc.value)


def test_the_band_from_the_threshold_block_is_checked_too():
    from aiidetect.fusion import check_model

    m = _edit("params.ai_threshold", KeyError)
    m["threshold"]["ai"] = 0.3
    with pytest.raises(ValueError, match="ai_threshold must lie"):
        check_model(m)


def test_valid_models_and_plain_bands_pass_the_check():
    """...and fuse reads each of them without raising."""
    from aiidetect.fusion import check_model

    for m in (None, {}, VALID, {"ai_threshold": 0.75, "real_threshold": 0.2}, {"ai_threshold": 0.5, "real_threshold": 0.5},
              _edit("params.detectors.linear.calibration", {"method": "sharpen"}),  # fuse drops it per file, with a note
              _edit("params.bias", KeyError), _edit("threshold", KeyError),
              _edit("params.ai_threshold", None), _edit("params.real_threshold", None)):
        check_model(m)
        fuse({"linear": ok(0.7, score=0.8), "metadata": meta(CAMERA)}, m)


def test_a_non_finite_detector_output_drops_out_and_says_so():
    """Rule 1 for a detector that answers "ok" with NaN or an infinite logit: it
    made the whole p_ai NaN beside a confident detector, and in a fitted model an
    infinite logit called the file ai-generated at p 1.0 over a detector at 0.01."""
    nan, inf = float("nan"), float("inf")
    out = fuse({"a": ok(nan), "b": ok(0.999)})
    assert out.p_ai == pytest.approx(0.999) and out.verdict == "ai-generated" and "a" not in out.contributions
    assert "a: non-finite output (p_ai=nan, score=None), ignored" in out.reasons
    model = {"detectors": {"a": {"calibration": {"method": "temperature", "T": 2.0}, "weight": 1.0},
                           "b": {"calibration": {"method": "none"}, "weight": 1.0}},
             "ai_threshold": 0.9, "real_threshold": 0.1}
    for score in (inf, -inf, nan):
        out = fuse({"a": ok(0.5, score=score), "b": ok(0.01)}, model)
        assert out.verdict == "likely-real" and out.p_ai == pytest.approx(0.01), score
        assert any(r.startswith("a: non-finite output") for r in out.reasons)
    alone = fuse({"a": ok(nan)})
    assert alone.p_ai is None and alone.verdict == "uncertain"


def test_a_fusion_model_without_detectors_may_not_narrow_the_rules_band():
    """What calibrate wrote on metadata alone: no detector calibrated, a band chosen on soft
    evidence (0.5000001 / 0.4999999); fuse then averaged the pixel detectors by the rules and judged
    them by that band, so p_ai 0.6 was ai-generated. A plain band dict still sets the band."""
    from aiidetect.fusion import check_model

    stale = {"name": "f", "detector": "fusion", "params": {"detectors": {}, "evidence_weight": 1.0, "bias": -0.4,
                                                           "ai_threshold": 0.5000001, "real_threshold": 0.4999999}}
    with pytest.raises(ValueError, match=r"calibrates no pixel detector, yet its band .* is narrower than"):
        check_model(stale)
    stale["params"].update(ai_threshold=0.95, real_threshold=0.05)
    check_model(stale)
    check_model({"ai_threshold": 0.6, "real_threshold": 0.4})


def test_a_coin_flip_is_uncertain_under_any_band():
    """check_model lets a band touch 0.5 (a plain {0.5, 0.5} band decides everything else); p_ai 0.5
    itself was called ai-generated under it."""
    for band in ({"ai_threshold": 0.5, "real_threshold": 0.5},
                 {"name": "x", "detector": "fusion", "params": {"ai_threshold": 0.5, "real_threshold": 0.3}}):
        assert fuse({"a": ok(0.5)}, band).verdict == "uncertain"
        assert fuse({"a": ok(0.51)}, band).verdict == "ai-generated"
    assert fuse({"a": ok(0.49)}, {"ai_threshold": 0.5, "real_threshold": 0.5}).verdict == "likely-real"


def test_a_detector_the_model_weighs_at_zero_is_no_opinion():
    """calibrate gives an inverted or uninformative detector weight 0; it still counted as a pixel
    opinion, so soft metadata evidence alone decided: the same p_ai was ai-generated beside it and
    uncertain without it (rule 4)."""
    model = {"detectors": {"lin": {"calibration": {"method": "temperature", "T": 1000.0}, "weight": 0.0}},
             "evidence_weight": 1.0, "bias": 1.5, "ai_threshold": 0.6, "real_threshold": 0.4}
    soft = meta(Evidence("exif.none", "ai", 1.5, "no EXIF"))
    out = fuse({"lin": ok(0.9), "metadata": soft}, model)
    assert out.verdict == "uncertain" and out.p_ai == pytest.approx(fuse({"metadata": soft}, model).p_ai)
    assert any("lin: weight 0 in the fusion model" in r for r in out.reasons)
    alone = fuse({"lin": ok(0.9)}, model)
    assert alone.p_ai is None and alone.verdict == "uncertain"
    model["detectors"]["lin"]["weight"] = 0.5
    assert fuse({"lin": ok(0.9), "metadata": soft}, model).verdict == "ai-generated"


def test_a_model_whose_numbers_overflow_drops_the_detector_not_the_verdict():
    """Finite but huge numbers pass the load check; weight 1e308 (or T = 1e-320) made the weighted
    logits +inf and -inf, p_ai NaN, and the record said p_ai null, uncertain, as if nobody had an
    opinion, with "+inf nats" among the reasons."""
    huge = {"calibration": {"method": "none"}, "weight": 1e308}
    tiny_t = {"calibration": {"method": "temperature", "T": 1e-320}, "weight": 1.0}
    sane = {"calibration": {"method": "none"}, "weight": 1.0}
    for bad in (huge, tiny_t):
        model = {"detectors": {"a": bad, "b": bad, "c": sane}, "ai_threshold": 0.9, "real_threshold": 0.1}
        out = fuse({"a": ok(0.9), "b": ok(0.1), "c": ok(0.02)}, model)
        assert out.p_ai == pytest.approx(0.02) and out.verdict == "likely-real"
        assert set(out.contributions) == {"c"} and all(math.isfinite(v) for v in out.contributions.values())
        assert any(r.startswith("a: its weighted logit in the fusion model is not finite") for r in out.reasons)


def test_a_numpy_number_is_an_answer_like_a_float():
    """The non-finite check took only int and float: a detector's np.float32 0.95 was 'non-finite
    output, ignored' and the file uncertain, while eval counted the same answer."""
    import numpy as np

    from aiidetect.fusion import fuse

    for v in (np.float32(0.95), np.float64(0.95), 0.95):
        f = fuse({"x": DetectorResult("ok", p_ai=v)})
        assert f.verdict == "ai-generated" and not any("non-finite" in r for r in f.reasons), v


def test_a_file_whose_pixels_failed_is_decided_only_by_decisive_evidence_for_ai():
    """fusion.without_pixels: rule 3 on the metadata alone, and only toward AI; a pixel detector's answer
    (there is none on such a file, but a caller may pass one) has no say."""
    from aiidetect.fusion import without_pixels

    def md(*ev):
        return DetectorResult("ok", p_ai=0.5, score=0.0, score_kind="llr", evidence=list(ev))

    gen = Evidence("generator.parameters", "ai", 6.0, "A1111 parameters", decisive=True)
    capture = Evidence("c2pa.capture", "real", 6.0, "signed capture", decisive=True)
    camera = Evidence("exif.camera", "real", 1.2, "camera EXIF")
    tool = Evidence("xmp.generator-tool", "ai", 3.0, "an AI tool's name")
    out = without_pixels({"metadata": md(gen, camera), "linear:x": DetectorResult("ok", p_ai=0.01)}, None,
                         "decode-error")
    assert out is not None and out.verdict == "ai-generated" and out.p_ai > 0.99
    assert out.reasons[0] == "the pixels could not be read (decode-error); the metadata alone decides"
    assert "linear:x" not in out.contributions
    assert out.p_ai == fuse({"metadata": md(gen, camera)}).p_ai
    for ev in ((capture,), (gen, capture), (camera,), (tool,), (tool, camera)):
        assert without_pixels({"metadata": md(*ev)}) is None, ev
    assert without_pixels({}) is None


def test_a_capped_soft_item_says_what_it_moved_of_its_own_strength():
    # `meta`, the report's evidence list and the JSON give an AI tool in EXIF 3.00 nats; the reasons said
    # "+1.88 nats" for the same item without a word on the cap that scaled it.
    tool = Evidence("exif.software-generator", "ai", 3.0, "EXIF Software names an AI image tool: Adobe Firefly")
    hint = Evidence("metadata.no-camera", "ai", 0.1, "no camera metadata")
    out = fuse({"linear": ok(0.3), "metadata": meta(tool, hint)})
    line = next(r for r in out.reasons if r.startswith("metadata:exif.software-generator"))
    assert line.endswith("(+1.94 nats of its +3.00: soft evidence counts at most 2 nats in all, and it summed +3.10)")
    assert next(r for r in out.reasons if r.startswith("metadata:metadata.no-camera")).endswith(
        "(+0.06 nats of its +0.10, scaled as above)")
    assert out.contributions["metadata:exif.software-generator"] == pytest.approx(3.0 * 2 / 3.1)
    # Under the cap an item moves its own strength, and its line says only that.
    out = fuse({"linear": ok(0.3), "metadata": meta(CAMERA)})
    assert next(r for r in out.reasons if r.startswith("metadata:exif.camera")).endswith("(-1.50 nats)")


def test_an_averaged_pixel_detector_says_what_it_moved_of_its_own_logit():
    # "linear:univfd: p_ai=0.01 (-2.30 nats)": logit(0.01) is -4.60; the average of two detectors halved it.
    out = fuse({"linear:univfd": ok(0.01), "mpft": ok(0.2)})
    assert out.reasons[0] == ("linear:univfd: p_ai=0.01 (-2.30 nats of its -4.60: the 2 pixel detectors' logits "
                              "are averaged, not summed)")
    assert out.reasons[1] == "mpft: p_ai=0.20 (-0.69 nats of its -1.39, averaged as above)"
    assert fuse({"linear:univfd": ok(0.01)}).reasons == ["linear:univfd: p_ai=0.01 (-4.60 nats)"]


def test_soft_items_that_cancel_each_move_their_own_strength():
    # Summing to exactly 0, the items are under the cap, yet each was scaled by 0: "(+0.00 nats)" for an AI tool
    # in EXIF beside camera EXIF of the same strength, with no word on why.
    tool = Evidence("exif.software-generator", "ai", 1.5, "EXIF Software names an AI image tool")
    out = fuse({"linear": ok(0.3), "metadata": meta(tool, CAMERA)})
    assert out.contributions["metadata:exif.software-generator"] == pytest.approx(1.5)
    assert out.contributions["metadata:exif.camera"] == pytest.approx(-1.5)
    assert any(r.startswith("metadata:exif.software-generator") and r.endswith("(+1.50 nats)") for r in out.reasons)
    assert out.p_ai == pytest.approx(0.3)


def test_a_later_line_says_which_scaling_above_it_shares():
    # With averaged detectors and capped soft evidence both, "mpft: ... scaled as above" came right under the
    # cap's line, as if the soft-evidence cap had scaled a pixel detector.
    tool = Evidence("exif.software-generator", "ai", 3.0, "EXIF Software names an AI image tool: Adobe Firefly")
    hint = Evidence("metadata.no-camera", "ai", 0.1, "no camera metadata")
    out = fuse({"linear:univfd": ok(0.01), "mpft": ok(0.2), "metadata": meta(tool, hint)})
    assert [r.rsplit("(", 1)[-1] for r in out.reasons] == [
        "-2.30 nats of its -4.60: the 2 pixel detectors' logits are averaged, not summed)",
        "+1.94 nats of its +3.00: soft evidence counts at most 2 nats in all, and it summed +3.10)",
        "-0.69 nats of its -1.39, averaged as above)",
        "+0.06 nats of its +0.10, scaled as above)"]


def test_a_model_left_with_only_weight_0_detectors_gives_way_to_the_rules():
    """The one informative head retrained, the model kept only a detector it had fitted weight 0: every file
    came out "uncertain" (p_ai None, "no detector had an opinion"), from a model check_model refuses
    when loaded ("every detector in it has weight 0"). With no detector of the model left to have a say,
    the default rules decide, as when none is left at all."""
    from types import SimpleNamespace as NS

    from aiidetect.fusion import without_retrained

    def det(name, sha):
        return NS(name=name, needs_pixels=True, head=NS(manifest={"files": {"head.safetensors": sha}}))

    model = {"detector": "fusion", "name": "fz", "threshold": {"ai": 0.8, "real": 0.2},
             "params": {"evidence_weight": 1.0, "bias": 0.0, "detectors": {
                 "linear:a": {"weight": 1.5, "calibration": {"method": "none"}, "head_sha256": "a" * 64},
                 "linear:b": {"weight": 0.0, "calibration": {"method": "none"}, "head_sha256": "b" * 64}}}}
    kept, note = without_retrained(model, [det("linear:a", "c" * 64), det("linear:b", "b" * 64)])
    assert kept is None and "default rules decide" in note, (kept, note)
    res = {"linear:a": DetectorResult("ok", p_ai=0.999, score=7.0, score_kind="logit"),
           "linear:b": DetectorResult("ok", p_ai=0.99, score=5.0, score_kind="logit")}
    assert fuse(res, kept).verdict == "ai-generated"


def test_an_unsigned_decisive_claim_counts_its_own_weight_not_the_floor():
    # A real photo's camera EXIF plus a pasted XMP trainedAlgorithmicMedia: the metadata detector said 0.943
    # (4.0 - 1.2 nats) and the fused P(AI) 0.9997 (the 9.2-nat floor), shown as 1.000 for a claim anyone writes.
    from aiidetect.metadata.detector import result_from_evidence

    claim = Evidence("xmp.ai-source-type", "ai", 4.0, "declared, unsigned", decisive=True, data={"basis": "claim"})
    cam = Evidence("exif.camera", "real", 1.2, "camera EXIF")
    m = result_from_evidence([claim, cam])
    out = fuse({"metadata": m})
    assert out.verdict == "ai-generated" and out.p_ai == pytest.approx(m.p_ai) == pytest.approx(1 / (1 + math.exp(-2.8)))
    assert "unsigned" in out.reasons[0]
    # pixels saying "real" pull it down, never off the verdict's side of the band (default or fitted)
    out = fuse({"linear": ok(0.001), "metadata": m})
    assert out.verdict == "ai-generated" and out.p_ai == pytest.approx(DEFAULT_AI_THRESHOLD)
    out = fuse({"linear": ok(0.001), "metadata": m}, {"ai_threshold": 0.97, "real_threshold": 0.05})
    assert out.verdict == "ai-generated" and out.p_ai == pytest.approx(0.97)
    out = fuse({"linear": ok(0.5), "metadata": m}, {"ai_threshold": 0.99, "real_threshold": 0.05})
    assert out.verdict == "ai-generated" and out.p_ai == pytest.approx(0.99)   # a band above the claim's own 0.98
    assert fuse({"linear": ok(0.999), "metadata": m}).p_ai == pytest.approx(1 / (1 + math.exp(-6.0)))  # +half, as before
    for hi in (0.8816381690845423, 0.9, 0.93, 0.97):   # at the band's edge, never one float under it
        assert fuse({"linear": ok(0.001), "metadata": m}, {"ai_threshold": hi, "real_threshold": 0.05}).p_ai >= hi
    assert fuse({"linear": ok(0.001), "metadata": m}, {"ai_threshold": 1.0}).p_ai < 0.9999   # the floor, not 1
    # a signature or the pixels behind it keep the floor
    for basis in ("signed", "pixels"):
        e = Evidence("x.decl", "ai", 4.0, "declared", decisive=True, data={"basis": basis})
        assert fuse({"metadata": meta(e, cam)}).p_ai == pytest.approx(1 / (1 + math.exp(-(9.2 - 1.2))))
    both = Evidence("c2pa.ai-generated", "ai", 7.0, "signed", decisive=True, data={"basis": "signed"})
    assert fuse({"metadata": meta(claim, both, cam)}).p_ai == pytest.approx(1 / (1 + math.exp(-(11.0 - 1.2))))


def test_a_model_that_lost_a_detector_with_a_say_sets_its_bias_and_band_aside():
    """The bias and band were fitted on the sum with the retrained head's term in it: a bias of +2 that offset
    that head's usual -2 made a file the remaining head called 0.6 "ai-generated" at 0.917 under a 0.8 band."""
    from types import SimpleNamespace as NS

    from aiidetect.fusion import without_retrained

    def det(name, sha):
        return NS(name=name, needs_pixels=True, head=NS(manifest={"files": {"head.safetensors": sha}}))

    def model(wb):
        return {"detector": "fusion", "name": "fz", "threshold": {"ai": 0.8, "real": 0.2},
                "params": {"evidence_weight": 1.0, "bias": 2.0, "detectors": {
                    "linear:a": {"weight": 1.0, "calibration": {"method": "none"}, "head_sha256": "a" * 64},
                    "linear:b": {"weight": wb, "calibration": {"method": "none"}, "head_sha256": "b" * 64}}}}

    res = {"linear:a": DetectorResult("ok", p_ai=0.6, score=0.4, score_kind="logit"),
           "linear:b": DetectorResult("ok", p_ai=0.1, score=-2.2, score_kind="logit")}
    heads = [det("linear:a", "a" * 64), det("linear:b", "c" * 64)]
    kept, note = without_retrained(model(1.0), heads)
    out = fuse(res, kept)
    assert out.verdict == "uncertain" and out.p_ai == pytest.approx(1 / (1 + math.exp(-0.4))) and "bias" not in out.contributions
    assert "bias and band, fitted with it, are set aside (bias 0, band 0.1 / 0.9" in note
    assert fuse({"linear:a": DetectorResult("ok", p_ai=0.85, score=1.7, score_kind="logit")}, kept).verdict == "uncertain"
    # a head the model weighed 0 had no part in them: the model is used as fitted
    kept, note = without_retrained(model(0.0), heads)
    assert fuse(res, kept).verdict == "ai-generated" and "set aside" not in note


def test_a_fitted_bias_needs_a_pixel_detector_that_answered():
    # `scan -d metadata` under a fitted model (found in the weights folders) whose bias is +2: a file with only
    # camera EXIF (toward real) was reported at P(AI) 0.69, the bias standing in for heads that did not run.
    m = {"detectors": {"linear:a": {"weight": 1.0, "calibration": {"method": "none"}}}, "bias": 2.0,
         "ai_threshold": 0.8, "real_threshold": 0.2}
    out = fuse({"metadata": meta(Evidence("exif.camera", "real", 1.2, "cam"))}, m)
    assert out.verdict == "uncertain" and out.p_ai == pytest.approx(1 / (1 + math.exp(1.2))) and "bias" not in out.contributions
    out = fuse({"linear:a": ok(0.5, score=0.0), "metadata": meta(Evidence("exif.camera", "real", 1.2, "cam"))}, m)
    assert out.contributions["bias"] == 2.0     # with the head answering, the model applies as fitted


def test_a_conflict_note_is_shown_when_nothing_else_counts():
    # A stripped copy whose only items weigh nothing (no camera metadata, software's JPEG tables) beside a capture
    # manifest that does not match the image: "nothing that counts" came alone, the conflict note left out.
    conflict = Evidence("metadata.conflict", "neutral", 0.0, "metadata blocks in this file disagree (1): a capture "
                        "manifest that does not match this image")
    hint = Evidence("metadata.no-camera", "neutral", 0.0, "no camera metadata")
    out = fuse({"metadata": meta(hint, conflict)})
    assert out.p_ai is None and out.verdict == "uncertain"
    assert out.reasons[1:] == [f"metadata:metadata.conflict: {conflict.detail}"]
