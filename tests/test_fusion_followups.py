"""Fusion follow-ups: a fitted model on a file one of its detectors did not answer, claims that add up,
reason lines that add up to p_ai, and a written p_ai on the verdict's side of the band."""
import math
import re
from types import SimpleNamespace

import pytest

from aiidetect.fusion import ASIDE_FOR_FILE, DECISIVE_FLOOR, fuse
from aiidetect.probability import logit_float
from aiidetect.records import DetectorResult, Evidence, Record


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
    # the rules' 0.9 on the ai side; the real side where the model with its +2 bias would decide too
    assert "bias" not in out.contributions and out.band == (0.9, pytest.approx(1 / (1 + math.exp(
        -(logit_float(0.2) - 2.0)))))
    assert any(r.startswith("b: no answer for this file") and "set aside" in r for r in out.reasons), out.reasons
    both = fuse({"a": ok(0.6), "b": ok(0.6)}, MODEL)   # both answered: the model as fitted
    assert both.contributions["bias"] == 2.0 and both.band == (0.8, 0.2) and both.verdict == "ai-generated"


def test_unsigned_claims_together_never_read_more_certain_than_a_signature():
    """parameters (6.0) + XMP trainedAlgorithmicMedia (4.0), both the file's own unsigned word, summed to
    10 nats: more certain than a valid signed C2PA declaration at the 9.2 floor."""
    claims = fuse({"metadata": meta(PARAMS, XMP)})
    signed = fuse({"metadata": meta(SIGNED)})
    assert claims.verdict == signed.verdict == "ai-generated"
    assert claims.p_ai == pytest.approx(1 / (1 + math.exp(-6.0)))   # the strongest claim, not the sum
    assert claims.p_ai < signed.p_ai == pytest.approx(1 / (1 + math.exp(-DECISIVE_FLOOR)))
    assert any("strongest of them, not their sum" in r for r in claims.reasons), claims.reasons
    # one claim alone: its own strength, as before
    assert fuse({"metadata": meta(XMP)}).p_ai == pytest.approx(1 / (1 + math.exp(-4.0)))


_NATS = re.compile(r"\(([+-]?\d+\.\d\d) nats")


@pytest.mark.parametrize("results,model", [
    ({"a": ok(0.001), "metadata": meta(SIGNED)}, None),                      # floor, the rest clipped
    ({"a": ok(0.999), "metadata": meta(SIGNED, TOOL)}, None),                # clipped toward its side
    ({"metadata": meta(XMP, CAMERA)}, {"ai_threshold": 0.99}),               # raised to the band's edge
    ({"a": ok(0.01), "metadata": meta(PARAMS, XMP, CAMERA)}, None),          # claims, rest clipped
    ({"a": ok(0.3), "b": ok(0.4), "metadata": meta(TOOL, TOOL2)}, MODEL),    # bias, evidence weight, cap
    ({"a": ok(0.3), "b": ok(0.2)}, None),                                    # averaged
])
def test_reason_lines_add_up_to_the_p_ai_they_explain(results, model):
    """--explain, the JSON's reasons and the report card showed a decisive item's own +4.00 or +7.00 though
    the floor or the band's edge was used, the clipped rest at its full size, and no line for a fitted
    bias: the lines did not add up to the record's p_ai."""
    out = fuse(results, model)
    moved = [float(x) for r in out.reasons for x in _NATS.findall(r)]
    assert sum(moved) == pytest.approx(logit_float(out.p_ai), abs=0.006 * len(moved) + 1e-6), out.reasons
    assert sum(out.contributions.values()) == pytest.approx(logit_float(out.p_ai), abs=1e-6)


def _record(p_results, model):
    from aiidetect.pipeline.stages import finish

    rec = Record("x.png", verdict="uncertain", detectors=p_results)
    dets = [SimpleNamespace(name=n) for n in p_results]
    return finish(SimpleNamespace(record=rec), dets, model, {"kind": "model"}).to_dict()


@pytest.mark.parametrize("hi,p", [(0.9, 0.8999996), (0.9, 0.9000001), (0.9345671, 0.9345672),
                                  (0.934567891, 0.93456785)])
def test_a_written_p_ai_is_on_the_side_of_the_band_its_verdict_is(hi, p):
    """Records round p_ai to 6 digits: a fused 0.8999996 under a 0.9 band was written 0.9 beside
    "uncertain", and a p at or above a fitted 0.934567891 could be written under it beside "ai-generated"."""
    band = {"detectors": {"a": {"calibration": {"method": "none"}, "weight": 1.0}}, "bias": 0.0,
            "ai_threshold": hi, "real_threshold": 0.1}
    d = _record({"a": ok(p)}, band)
    assert d["verdict"] == ("ai-generated" if p >= hi else "uncertain")
    assert (d["p_ai"] >= hi) == (d["verdict"] == "ai-generated"), d
    assert d["p_ai"] == pytest.approx(p, abs=1e-6) and round(d["p_ai"], 6) == d["p_ai"]


def _random_case(rnd):
    """Random detector answers, evidence (soft, claims, signed, pixel marks, both ways) and models."""
    def ev():
        basis, d = rnd.choice(["soft", "claim", "signed", "pixels"]), rnd.choice(["ai", "real"])
        s = rnd.choice([0.2, 1.2, 3.0, 4.0, 6.0, 9.2, 12.0, rnd.uniform(0.1, 15)])
        eid = rnd.choice("abcd") + "." + basis
        return Evidence(eid, d, s, eid) if basis == "soft" else Evidence(eid, d, s, eid, decisive=True,
                                                                          data={"basis": basis})
    res = {rnd.choice(["a", "b", "c", "linear:x"]): rnd.choice(
        [ok(rnd.choice([rnd.random(), 1e-9, 1 - 1e-9, 0.5])), DetectorResult.failed("x"), ok(math.nan)])
        for _ in range(rnd.choice([0, 1, 2, 3]))}
    if rnd.random() < 0.8:
        res["metadata"] = meta(*[ev() for _ in range(rnd.choice([0, 1, 2, 3, 4]))])
    model = None
    if rnd.random() < 0.5:
        dets = {k: {"calibration": {"method": "none"}, "weight": rnd.choice([0.0, 0.5, 1.0, 2.0])}
                for k in rnd.sample(["a", "b", "c", "linear"], rnd.choice([1, 2, 3]))}
        next(iter(dets.values()))["weight"] = 1.0
        model = {"detectors": dets, "evidence_weight": rnd.choice([0.3, 1.0]), "bias": rnd.choice([0.0, 2.0, -1.5]),
                 "ai_threshold": rnd.choice([0.51, 0.8, 0.9, 0.99, 0.9999]),
                 "real_threshold": rnd.choice([0.49, 0.2, 0.1, 0.01])}
    elif rnd.random() < 0.3:
        model = {"ai_threshold": rnd.choice([0.9, 0.99, 0.995]), "real_threshold": rnd.choice([0.1, 0.01])}
    return res, model


def _set_aside_case(rnd):
    # Answers at the ends and at 0.5, no bias or one either way, the band's edges at 0, 0.5 and 1 (what
    # check_model lets through), and a claim that decides beside the set-aside model.
    # (0.9 and 0.1: the rules' edges, whose logit comes back through the sigmoid one float inside them)
    res = {"a": ok(rnd.choice([rnd.random(), rnd.random(), 1e-9, 1 - 1e-9, 0.5, 1e-6, 1 - 1e-6, 0.9, 0.1])),
           "b": rnd.choice([DetectorResult.failed("x"), ok(math.nan)])}
    if rnd.random() < 0.5:
        res["metadata"] = meta(*rnd.sample([CAMERA, TOOL, TOOL2, PARAMS], rnd.choice([1, 2])))
    # and at the extremes a hand edit reaches: a bias of +-100, a weight of 5 on answers of 1e-6, where the
    # logits pass the +-37 nats past which p and a band's edge saturate to one double
    model = {**MODEL, "bias": rnd.choice([2.0, -2.0, 0.5, 4.0, 0.0, -8.0, 8.0, 100.0, -100.0, 40.0, -35.0]),
             "detectors": {**MODEL["detectors"], "a": {"calibration": {"method": "none"},
                                                       "weight": rnd.choice([1.0, 5.0])}},
             "ai_threshold": rnd.choice([0.6, 0.8, 0.95, 0.5, 1.0]),
             "real_threshold": rnd.choice([0.4, 0.2, 0.05, 0.5, 0.0])}
    return res, model


def test_reason_lines_add_up_and_the_written_p_ai_agrees_with_the_verdict_on_random_evidence():
    """Every path at once (decisive signed or claims only, both ways, soft cap, averaged pixels, a fitted model
    with weights and bias, set aside for a file, no detectors): one line per contribution, the lines add up to
    logit(p_ai) to their rounding, and the p_ai a record writes is on the verdict's side of the band and 0.5."""
    import random

    from aiidetect.fusion import SOFT_ONLY, shown_p
    from aiidetect.report.html import _file_band

    rnd = random.Random(2126)
    for i in range(1900):
        # the last 400: a fitted model one of whose detectors gave this file no answer, with a sizeable bias
        res, model = _random_case(rnd) if i < 1500 else _set_aside_case(rnd)
        out = fuse(res, model)
        if out.p_ai is None:
            assert out.verdict == "uncertain" and not out.contributions
            continue
        z = sum(out.contributions.values())
        assert 1 / (1 + math.exp(-z)) == pytest.approx(out.p_ai, rel=1e-9, abs=1e-15), (res, model, out)
        moved = [float(x) for r in out.reasons for x in _NATS.findall(r)]
        assert len(moved) == len(out.contributions), out.reasons
        assert sum(moved) == pytest.approx(z, abs=0.005 * len(moved) + 1e-9), out.reasons
        # read plainly: no sign on nothing, no "0.00 nats of its 0.00"
        assert not any(re.search(r"[+-]0\.00 nats|of its [+-]?0\.00\b", r) for r in out.reasons), out.reasons
        assert not any((m := re.search(r"\(([+-]?[\d.]+) nats of its ([+-]?[\d.]+)", r)) and m[1] == m[2]
                       for r in out.reasons), out.reasons
        hi, lo = out.band
        if any(ASIDE_FOR_FILE in r for r in out.reasons):
            # the report's gauge draws the band that judged the file from the note (a saved run has nothing else)
            assert _file_band({"real_threshold": 0.3, "ai_threshold": 0.7}, out.reasons) == (
                pytest.approx(lo, rel=1e-5, abs=1e-12), pytest.approx(hi, rel=1e-5)), out.reasons
        p = shown_p(out.p_ai, out.band)
        assert p == round(p, 6) and p == pytest.approx(out.p_ai, abs=1e-6)
        if out.verdict != "uncertain":
            assert (p > 0.5) == (out.verdict == "ai-generated"), (res, model, out)
        if not any(r.startswith(("decisive", SOFT_ONLY)) for r in out.reasons):   # the band judged it
            want = "ai-generated" if p >= hi else "likely-real" if p <= lo else "uncertain"
            assert out.verdict == want, (res, model, out, p)
            if any(ASIDE_FOR_FILE in r for r in out.reasons):
                # set aside for this file: never firmer than the model with its bias on the same answers
                # in logit space: past ~37 nats every probability reads 1.0 and the comparison says nothing
                zm = z + model["bias"]
                m_hi, m_lo = model["ai_threshold"], model["real_threshold"]
                zm_hi = math.log(m_hi / (1 - m_hi)) if m_hi < 1 else math.inf
                zm_lo = math.log(m_lo / (1 - m_lo)) if m_lo > 0 else -math.inf
                vm = "ai-generated" if zm >= zm_hi and zm > 0 else "likely-real" if zm <= zm_lo and zm < 0 \
                    else "uncertain"
                near = min(abs(zm - zm_hi), abs(zm - zm_lo)) < 1e-9
                assert out.verdict in ("uncertain", vm) or near, (res, model, out, zm)


def test_a_row_leads_with_what_decided_not_with_the_set_aside_band():
    """The table's, CSV's and page rows' one-line reason is the first reason: with one of the model's heads
    not run (or failed) on a file a pasted XMP declaration decided, every row read "b: no answer for this
    file, ..." and not that the verdict rests on the file's own unverified word."""
    from aiidetect.report.writers import headline

    out = fuse({"a": ok(0.3), "metadata": meta(XMP)}, MODEL)
    assert out.verdict == "ai-generated"
    assert headline(out.reasons).startswith("decisive provenance evidence decides the verdict"), out.reasons
    assert "not verified" in headline(out.reasons)
    assert any(r.startswith("b: no answer for this file") for r in out.reasons)


def test_the_metadata_detectors_own_p_ai_counts_claims_as_fusion_does():
    """`meta`, the detectors table and `detectors.metadata` still summed unsigned claims: parameters (6.0) +
    XMP trainedAlgorithmicMedia (4.0) read 0.999955 (10 nats) beside a fused 0.9975 for the same file."""
    from aiidetect.metadata.detector import result_from_evidence

    for ev in ([PARAMS, XMP], [PARAMS, XMP, CAMERA], [claim("x.claim", 12.0)], [SIGNED, XMP], [PARAMS, TOOL]):
        r = result_from_evidence(ev)
        fused = fuse({"metadata": r})
        # claims alone decide, and the soft items are under rule 4's cap (the detector does not cap): the same number
        if {e.data.get("basis") for e in ev if e.decisive} == {"claim"} and abs(sum(e.llr for e in ev
                                                                                   if not e.decisive)) <= 2:
            assert r.p_ai == pytest.approx(fused.p_ai, rel=1e-12), (ev, r.p_ai, fused.p_ai)
        assert r.score == pytest.approx(sum(e.llr for e in ev if not e.decisive)
                                        + fusion_decisive_llr([e for e in ev if e.decisive]))
    assert result_from_evidence([PARAMS, XMP]).score == 6.0
    assert result_from_evidence([SIGNED, CAMERA]).score == pytest.approx(5.8)   # signed items: summed, as before


def fusion_decisive_llr(items):
    from aiidetect.fusion import decisive_llr

    return decisive_llr(items)


def test_shared_claims_and_nothing_read_plainly():
    """"+3.60 nats of its +6.00" for generator parameters beside XMP's "+2.40 of its +4.00" read as if each claim
    had been discounted, when the claims count as the strongest one; and a detector at 0.4999 read "-0.00 nats"."""
    out = fuse({"metadata": meta(PARAMS, XMP)})
    top, other = (next(r for r in out.reasons if r.startswith(f"metadata:{i}:"))
                  for i in ("generator.parameters", "xmp.ai-source-type"))
    assert top.endswith("(+6.00 nats) [decisive]"), top
    assert "(0.00 nats of its +4.00: counted in metadata:generator.parameters: the file's own claims count as the strongest" in other, other
    big = fuse({"metadata": meta(claim("generator.parameters", 12.0), XMP)}).reasons
    assert any("(+9.20 nats of its +12.00: unsigned claims count at most" in r for r in big), big
    assert fuse({"a": ok(0.4999)}).reasons == ["a: p_ai=0.50 (0.00 nats)"]


def test_a_model_set_aside_for_a_file_never_makes_its_verdict_firmer():
    """Bias +2, band 0.8 / 0.2, a at 0.05 with b failed: set aside, the rules' 0.1 called it likely-real, where the
    model with its bias put the same answer at 0.28, uncertain. Missing evidence must not make the tool surer."""
    from aiidetect.report.html import _file_band

    fusion = {"real_threshold": 0.2, "ai_threshold": 0.8}
    out = fuse({"a": ok(0.05), "b": DetectorResult.failed("boom")}, MODEL)
    assert out.verdict == "uncertain" and out.p_ai == pytest.approx(0.05) and "bias" not in out.contributions
    lo = 1 / (1 + math.exp(-(logit_float(0.2) - 2.0)))   # where the model with its bias would say likely-real
    assert out.band == (0.9, pytest.approx(lo))
    note = next(r for r in out.reasons if ASIDE_FOR_FILE in r)
    assert "P(AI) 0.280, uncertain under 0.2 / 0.8" in note and "never makes a verdict firmer" in note, note
    assert _file_band(fusion, out.reasons) == (pytest.approx(lo, abs=1e-6), 0.9)   # the card draws that band
    d = _record({"a": ok(0.05), "b": DetectorResult.failed("boom")}, MODEL)
    assert d["verdict"] == "uncertain" and lo < d["p_ai"] < 0.9
    # where both agree the verdict stays firm: 0.02 is 0.13 with the bias, likely-real under 0.2
    assert fuse({"a": ok(0.02), "b": DetectorResult.failed("boom")}, MODEL).verdict == "likely-real"
    # a negative bias widens the ai side: 0.93 is 0.76 with a bias of -1.5, uncertain under 0.8
    neg = {**MODEL, "bias": -1.5}
    assert fuse({"a": ok(0.93), "b": DetectorResult.failed("boom")}, neg).verdict == "uncertain"
    assert fuse({"a": ok(0.93), "b": ok(0.93)}, neg).band == (0.8, 0.2)   # both answered: the model as fitted


@pytest.mark.parametrize("bias, a, model_says", [(100.0, 1e-6, "ai-generated"), (-100.0, 1 - 1e-6, "likely-real")])
def test_a_set_aside_model_with_a_huge_bias_never_makes_the_verdict_firmer_or_flips_it(bias, a, model_says):
    """Bias +100, weight 5, a at 1e-6 with b failed: the file read likely-real while the set-aside note said the
    model reads it ai-generated. The band's real edge (-98.6 nats) and a's term (-69) both clipped to -50 before
    the sigmoid, so p equalled the edge; the mirror case, bias -100, read ai-generated at p 1.0 against an ai edge
    saturated to 1.0. The verdict is judged on the logits, and p_ai stays inside the band that judged it."""
    model = {**MODEL, "bias": bias, "detectors": {**MODEL["detectors"],
                                                  "a": {"calibration": {"method": "none"}, "weight": 5.0}}}
    res = {"a": ok(a), "b": DetectorResult.failed("boom")}
    out = fuse(res, model)
    note = next(r for r in out.reasons if ASIDE_FOR_FILE in r)
    assert model_says in note and out.verdict == "uncertain", (out.verdict, note)
    hi, lo = out.band
    assert lo < out.p_ai < hi
    d = _record(res, model)
    assert d["verdict"] == "uncertain" and lo < d["p_ai"] < hi, d


UNREAD = Evidence("c2pa.unreadable", "neutral", 0.0, "C2PA data present but unreadable: C2PA manifest store "
                  "unreadable: Verify: unexpected end of file")


def test_a_manifest_store_that_could_not_be_read_is_told_after_the_lead_and_weighs_nothing():
    """An unreadable or refused C2PA store (which may hold a valid AI declaration) showed only in the evidence and
    errors: `reasons`, the table's reason and --explain said nothing of it."""
    from aiidetect.report.writers import headline

    for res, lead in (({"a": ok(0.2), "metadata": meta(UNREAD, CAMERA)}, "a: p_ai=0.20"),
                      ({"metadata": meta(UNREAD)}, "aiidetect does not decide: no pixel detector judged the image"),
                      ({"metadata": meta(UNREAD, PARAMS)}, "decisive provenance evidence decides")):
        out = fuse(res)
        assert out.reasons[0].startswith(lead), out.reasons
        line = ("metadata:c2pa.unreadable: this file carries Content Credentials (a C2PA manifest) that could not "
                "be read (C2PA manifest store unreadable: Verify: unexpected end of file); they may declare how it "
                "was made; the verdict does not weigh them")
        assert out.reasons[1] == line and out.reasons.count(line) == 1, out.reasons
        assert headline(out.reasons) == f"{out.reasons[0]}; {line}"
        without = fuse({k: meta(*[e for e in v.evidence if e is not UNREAD]) if v.evidence else v
                        for k, v in res.items()})
        assert (out.p_ai, out.verdict, out.contributions) == (without.p_ai, without.verdict, without.contributions)


def test_a_files_own_text_does_not_ride_along_into_the_one_line_reason():
    """The one-line views took every line holding ":c2pa.unreadable: " or ":metadata.conflict: " anywhere: a PNG
    Software text "Midjourney :c2pa.unreadable: this photo was verified ..." rode along into the table's reason."""
    from aiidetect.report.writers import headline

    for eid in ("c2pa.unreadable", "metadata.conflict"):
        said = f"Midjourney :{eid}: this photo was verified as authentic by the newsroom"
        tool = Evidence("png.software-generator", "ai", 3.0, f"PNG Software text names an AI image tool: {said}")
        out = fuse({"metadata": meta(tool)})
        assert any(said in r for r in out.reasons), out.reasons
        assert headline(out.reasons) == out.reasons[0], headline(out.reasons)
    conflict = Evidence("metadata.conflict", "neutral", 0.0, "camera EXIF beside generator parameters")
    out = fuse({"metadata": meta(UNREAD, conflict, CAMERA)})   # the real lines still ride along, once each
    assert headline(out.reasons).count("metadata:c2pa.unreadable: ") == 1, out.reasons
    assert headline(out.reasons).count("metadata:metadata.conflict: ") == 1, out.reasons
