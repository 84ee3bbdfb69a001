"""Metric functions against scikit-learn and hand-computed cases."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from aiidetect.evaluate import metrics as M

RNG = np.random.default_rng(7)
Y = np.array([0, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1])
# ties on purpose (0.4 x3, 0.7 x2)
S = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.7, 0.4, 0.7, 0.9, 0.2, 0.6, 0.95])
CASES = [(Y, S), (RNG.integers(0, 2, 200), RNG.random(200)), (RNG.integers(0, 2, 50), RNG.integers(0, 5, 50) / 4)]


@pytest.mark.parametrize("y,s", CASES)
def test_auc_ap_roc_match_sklearn(y, s):
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = M.roc_curve(y, s)
    f2, t2, th2 = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])


@pytest.mark.parametrize("y,s", CASES)
def test_accuracies_match_sklearn(y, s):
    a = M.accuracies(y, s, 0.5)
    pred = (s >= 0.5).astype(int)
    assert a["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert a["acc_mean"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert a["acc_real"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert a["acc_ai"] == pytest.approx(skm.recall_score(y, pred, pos_label=1))


def test_tpr_at_fpr_hand_computed():
    y = np.array([0] * 100 + [1] * 10)
    s = np.r_[np.arange(100) / 100.0, [0.995, 0.985, 0.975, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0]]
    # one real above 0.98 (0.99) -> FPR 1% allows thresholds down to 0.985 -> 2/10 AI caught
    assert M.tpr_at_fpr(y, s, 0.01) == pytest.approx(0.2)
    # 5 reals allowed: thresholds down to 0.955 -> 3/10
    assert M.tpr_at_fpr(y, s, 0.05) == pytest.approx(0.3)
    assert M.tpr_at_fpr(y, s, 0.0) == pytest.approx(0.1)


def test_best_threshold_is_optimal_balanced_accuracy():
    y, s = CASES[1]
    t, bal = M.best_threshold(y, s)
    grid = max(skm.balanced_accuracy_score(y, (s >= u).astype(int)) for u in np.unique(s))
    assert bal == pytest.approx(grid)
    assert skm.balanced_accuracy_score(y, (s >= t).astype(int)) == pytest.approx(bal)


def test_ece_hand_computed():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    # bin [0.067,0.133]: mean p 0.1, frac 0.5 -> |0.4| * 2/4; bin [0.867,0.933]: 0.9 vs 1.0 -> 0.1 * 2/4
    assert M.ece(y, p) == pytest.approx(0.25)
    assert M.ece([1, 0], [1.0, 0.0]) == pytest.approx(0.0)


def test_one_class_and_empty_inputs_give_none():
    assert M.roc_auc([1, 1], [0.2, 0.3]) is None
    assert M.tpr_at_fpr([0, 0], [0.2, 0.3], 0.01) is None
    assert M.average_precision([0, 0], [0.2, 0.3]) is None
    # no real images: every ranking scores AP 1 (sklearn), so it is undefined here, not 100%
    assert M.average_precision([1, 1, 1], [0.1, 0.2, 0.3]) is None and M.binary_metrics([1, 1], [0.1, 0.2])["ap"] is None
    b = M.binary_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert b["acc_ai"] == pytest.approx(2 / 3) and b["acc_real"] is None and b["auc"] is None
    assert M.binary_metrics([], [])["n"] == 0


def _newcombe_by_quartic(auc, m, n, z=1.959963984540054):
    """Newcombe's method-5 limits as the roots in (0, 1) of its quartic (the published closed form), apart
    from the bisection metrics.auc_interval uses."""
    ns = (m + n) / 2 - 1
    a, b, c = -1 - 2 * ns, 1 + 2 * ns, 2 + ns
    d, e, f, g = 1 + 2 * auc, 2 - 2 * auc - auc ** 2, auc ** 2 - 4 * auc, 2 * auc ** 2
    z2, mn = z * z, m * n
    coeffs = [-mn + z2 * a, mn * d - z2 * (a - b), mn * e - z2 * (b - c), mn * f - z2 * c, mn * g]
    r = sorted(x.real for x in np.roots(coeffs) if abs(x.imag) < 1e-9 and 0 < x.real < 1)
    return r[0], (r[1] if len(r) > 1 else 1.0)


def test_the_auc_comes_with_an_interval_that_stays_wide_on_few_images():
    """"AUC 100.0" on 3 real and 3 AI images was printed like one on thousands: no interval went with it,
    and a bootstrap (or DeLong's variance) would have said [1, 1] there."""
    for auc, m, n in ((0.9, 100, 100), (0.75, 12, 30), (0.861, 40, 40), (0.6, 7, 500)):
        lo, hi = M.auc_interval(auc, m, n)
        assert (lo, hi) == pytest.approx(_newcombe_by_quartic(auc, m, n), abs=1e-6)
        assert lo < auc < hi
    lo, hi = M.auc_interval(1.0, 3, 3)
    assert hi == 1.0 and 0.45 < lo < 0.55
    assert M.auc_interval(1.0, 1000, 1000)[0] > 0.99
    b = M.binary_metrics([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert b["auc"] == 1.0 and b["auc_ci95"] == pytest.approx(M.auc_interval(1.0, 3, 3))
    assert M.binary_metrics([1, 1], [0.2, 0.3])["auc_ci95"] is None
    from aiidetect.evaluate.report import summary_rows

    row = summary_rows({"detectors": {}, "fused": {"coverage": 1.0, "overall": b}})[0]
    assert "100.0 (50-100)" in row
    # and per generator, where a folder of 5 images is common
    from aiidetect.evaluate.core import condition_metrics
    from aiidetect.evaluate.report import per_generator_rows
    from aiidetect.evaluate.runner import Scored
    from aiidetect.records import DetectorResult

    class Det:
        name, threshold = "pix", 0.5

    items = [Scored(f"{i}", int(i >= 3), "g" if i >= 3 else "real", {"pix": DetectorResult("ok", p_ai=0.1 + 0.15 * i)})
             for i in range(6)]
    block, _ = condition_metrics(items, [Det()], None)
    assert dict((r[0], r[4]) for r in per_generator_rows(block, "pix"))["g"] == "100.0 (50-100)"


def test_confusion_matrix_matches_sklearn():
    t = ["sd", "sd", "mj", "gan", "mj"]
    p = ["sd", "mj", "mj", "sd", "mj"]
    cm = M.confusion_matrix(t, p)
    np.testing.assert_array_equal(np.array(cm["matrix"]), skm.confusion_matrix(t, p, labels=cm["labels"]))


def test_clean_makes_json_safe():
    assert M.clean({"a": np.float32(np.nan), "b": [np.int64(3), float("inf")]}) == {"a": None, "b": [3, None]}


def test_eval_counts_a_non_finite_p_ai_as_no_answer():
    """A NaN p_ai fails p >= threshold, so it counted as a correct call on a real photo."""
    from aiidetect.evaluate.core import condition_metrics
    from aiidetect.evaluate.runner import Scored
    from aiidetect.records import DetectorResult

    class Det:
        name, threshold = "pix", 0.5

    items = [Scored(f"f{i}", y, "real" if y == 0 else "g", {"pix": DetectorResult("ok", p_ai=p)})
             for i, (y, p) in enumerate([(0, float("nan")), (0, 0.9), (1, 0.8), (1, 0.7)])]
    block, cols = condition_metrics(items, [Det()], None)
    b = block["detectors"]["pix"]
    assert b["non_finite"] == 1 and b["coverage"] == 0.75
    assert b["overall"]["n_real"] == 1 and b["overall"]["acc_real"] == 0.0
    assert np.isnan(cols["p"]["pix"][0])


_SCORE = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.25, 1e-9, 1 - 1e-9, 0.3, 0.3 + 1e-12]), st.floats(0.0, 1.0))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), _SCORE), min_size=1, max_size=40))
def test_ranking_metrics_match_sklearn_on_ties_extremes_and_tiny_sets(pairs):
    """Heavy ties, scores at exactly 0 and 1, one or two items: every number
    equals scikit-learn's, and one class gives None (never 0.5, never a crash)."""
    import warnings

    y = np.array([a for a, _ in pairs])
    s = np.array([b for _, b in pairs])
    if y.min() == y.max():
        assert M.roc_auc(y, s) is None and M.tpr_at_fpr(y, s, 0.01) is None and M.best_threshold(y, s) == (None, None)
        assert M.average_precision(y, s) is None
        return
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    for f in (0.0, 0.01, 0.05, 0.5):
        assert M.tpr_at_fpr(y, s, f) == tpr[fpr <= f + 1e-12].max()
    t, bal = M.best_threshold(y, s)
    assert bal == pytest.approx(max(skm.balanced_accuracy_score(y, (s >= u).astype(int))
                                    for u in [*np.unique(s), np.inf]), abs=1e-12)
    assert skm.balanced_accuracy_score(y, (s >= t).astype(int)) == pytest.approx(bal, abs=1e-12)
    e = M.ece(y, s)
    assert 0.0 <= e <= 1.0
    if np.unique(s).size == 1:  # one bin: |share of AI - the score|
        assert e == pytest.approx(abs(y.mean() - s[0]))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.integers(1, 400), st.sampled_from([0.9, 0.95, 0.99]))
def test_rate_upper_bound_is_clopper_pearson(k, n, conf):
    from scipy.stats import beta

    k = min(k, n)
    want = 1.0 if k == n else float(beta.ppf(conf, k + 1, n - k))
    assert M.rate_upper_bound(k, n, conf) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert M.rate_upper_bound(0, 0) is None


def test_eval_error_rates_carry_their_count_and_upper_bound():
    """Three real photos, none called AI, printed as "0.0%": the same as three
    thousand would. The rate now goes with "0 of 3" and its 95% upper bound."""
    import io

    from rich.console import Console

    from aiidetect.evaluate.core import condition_metrics
    from aiidetect.evaluate.report import print_tables, summary_markdown
    from aiidetect.evaluate.runner import Scored
    from aiidetect.records import DetectorResult

    class Det:
        name, threshold = "pix", 0.5

    items = [Scored(f"r{i}", 0, "real", {"pix": DetectorResult("ok", p_ai=0.2)}) for i in range(3)]
    block, _ = condition_metrics(items, [Det()], None)
    f = block["fused"]
    assert f["real_called_ai"] == 0.0 and f["real_called_ai_count"] == [0, 3]
    assert f["real_called_ai_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 3))
    assert f["ai_called_real"] is None and f["ai_called_real_upper_95"] is None
    result = {"run": {}, "conditions": [block]}
    buf = io.StringIO()
    print_tables(result, Console(file=buf, width=400))
    for text in (buf.getvalue(), summary_markdown(result)):
        assert "real photos called ai-generated: 0.0% (0 of 3; 95% upper bound 63.2%)" in text.replace(
            "ai-generated 0.0%", "ai-generated: 0.0%")
        assert "likely-real: - (no images of that class)" in text.replace("likely-real -", "likely-real: -")


def _one_detector_block(gen_a: str, gen_b: str) -> dict:
    """One condition's metrics for one pixel detector on a real image and AI images of two generators."""
    from aiidetect.evaluate.core import condition_metrics
    from aiidetect.evaluate.runner import Scored
    from aiidetect.records import DetectorResult

    class Det:
        name, threshold = "pix", 0.5

    items = [Scored("r", 0, "real", {"pix": DetectorResult("ok", p_ai=0.2)}),
             Scored("a", 1, gen_a, {"pix": DetectorResult("ok", p_ai=0.8)}),
             Scored("b", 1, gen_b, {"pix": DetectorResult("ok", p_ai=0.7)})]
    return condition_metrics(items, [Det()], None)[0]


def test_summary_markdown_tables_keep_their_columns_with_hostile_generator_names():
    """A generator named by a CSV cell ("sd|xl", "gen<newline>x"): the pipe
    split its row into an extra column and the newline ended the table."""
    import re

    from aiidetect.evaluate.report import summary_markdown

    block = _one_detector_block("sd|xl", "gen\nx")
    md = summary_markdown({"run": {}, "conditions": [block]})
    table = [l for l in md.splitlines() if l.startswith("| ") and "generator" not in l and "detector" not in l]
    assert any("sd\\|xl" in l for l in table) and any("gen\\u000ax" in l for l in table)
    for l in md.splitlines():
        if l.startswith("|"):
            assert len(re.findall(r"(?<!\\)\|", l)) in (8, 14), l  # 7 generator columns, 13 summary columns


def test_an_error_rate_over_no_image_of_a_class_says_why():
    """A fused error rate over no image of a class says whether the data held none, or all of them were left out
    as training images (`eval --fusion M` on the images M was calibrated on: "no images of that class" over 93
    real photos), or unreadable; and a class the data lacks is not blamed on the training images of the other."""
    import io

    import numpy as np
    from rich.console import Console

    from aiidetect.evaluate.core import FUSED, condition_metrics
    from aiidetect.evaluate.report import print_tables, summary_markdown
    from aiidetect.evaluate.runner import Scored
    from aiidetect.records import DetectorResult

    class Det:
        name, threshold = "pix", 0.5

    def texts(items, left_out=None):
        block, _ = condition_metrics(items, [Det()], None, left_out=left_out)
        result = {"run": {}, "conditions": [block]}
        buf = io.StringIO()
        print_tables(result, Console(file=buf, width=400))
        return block["fused"], (buf.getvalue(), summary_markdown(result))

    def real(i, **kw):
        return Scored(f"r{i}", 0, "real", {"pix": DetectorResult("ok", p_ai=0.2)}, **kw)

    def ai(i):
        return Scored(f"a{i}", 1, "gen", {"pix": DetectorResult("ok", p_ai=0.95)})

    # every real photo left out as a training image
    f, out = texts([real(i) for i in range(3)] + [ai(0)], {FUSED: np.array([True, True, True, False])})
    assert f["real_called_ai"] is None and f["unscored_by_class"]["real"] == {"train_left_out": 3, "unreadable": 0}
    for text in out:
        assert "(none scored: 3 left out as training images)" in text and "no images of that class" not in text
    # no real photo in the data, one AI image left out: the real class is not said to be emptied by training images
    f, out = texts([ai(i) for i in range(3)], {FUSED: np.array([True, False, False])})
    for text in out:
        assert "- (no images of that class)" in text and "training" not in text
    # every real photo unreadable: the data held them
    f, out = texts([real(i, error="decode-error: truncated") for i in range(2)] + [ai(0)])
    for text in out:
        assert "(none scored: 2 unreadable)" in text and "no images of that class" not in text


def test_a_files_own_metadata_cannot_count_it_as_judged_without_the_models_band():
    """eval counted a file as set aside when any reason line held the set-aside note's words: a PNG Software
    text quoting them (an evidence line carries the file's own text) put every file of a run without any
    fusion model under "judged without the model's bias". Only fuse's own set-aside counts."""
    from aiidetect.evaluate.core import condition_metrics
    from aiidetect.evaluate.runner import Scored
    from aiidetect.fusion import ASIDE_FOR_FILE
    from aiidetect.records import DetectorResult, Evidence

    class Det:
        name, threshold = "pix", 0.5

    said = f"Midjourney x: {ASIDE_FOR_FILE}, fitted with it, are set aside"
    ev = Evidence("png.software-generator", "ai", 1.0, f"PNG Software text names an AI image tool: {said}")
    items = [Scored(f"{i}", int(i >= 3), "g" if i >= 3 else "real",
                    {"pix": DetectorResult("ok", p_ai=0.1 + 0.15 * i), "meta": DetectorResult("ok", evidence=[ev])})
             for i in range(6)]
    block, _ = condition_metrics(items, [Det()], None)
    assert block["fused"]["band"]["set_aside"] == 0
    # a fitted model's own set-aside still counts: "pix" has a say, and one file has no answer from it
    from aiidetect.probability import Calibrator

    cal = Calibrator("temperature", {"T": 1.0}).to_dict()
    model = {"detectors": {n: {"calibration": cal, "weight": 1.0} for n in ("pix", "pix2")}, "bias": 0.5,
             "ai_threshold": 0.8, "real_threshold": 0.2}
    for s in items:
        s.results["pix2"] = DetectorResult("ok", p_ai=0.3 + 0.05 * s.label)
    items[4].results["pix"] = DetectorResult.failed("crashed")
    block, _ = condition_metrics(items, [Det()], model)
    assert block["fused"]["band"]["set_aside"] == 1


def test_the_printed_auc_interval_holds_the_printed_auc():
    """Rounded to nearest, an AUC of 99.6 over 100,000 real and AI images each (interval 99.57-99.63) read
    "99.6 (100-100)", and 0.4 read "0.4 (0-0)": an interval that leaves out its own AUC. Its limits are rounded
    outward."""
    from aiidetect.evaluate.report import _auc

    for auc, n in ((0.996, 100_000), (0.004, 100_000), (0.9949, 20_000), (0.5, 1), (1.0, 3), (0.0, 3), (0.29, 40)):
        ci = M.auc_interval(auc, n, n)
        text = _auc(auc, ci)
        shown = float(text.split()[0])
        lo, hi = (float(x) for x in text.split("(")[1].rstrip(")").split("-"))
        assert lo <= shown <= hi and lo <= 100 * ci[0] and 100 * ci[1] <= hi, (auc, n, text)
    assert _auc(0.996, M.auc_interval(0.996, 100_000, 100_000)) == "99.6 (99-100)"
    assert _auc(1.0, M.auc_interval(1.0, 3, 3)) == "100.0 (50-100)"


def test_eval_tables_at_a_terminal_that_cannot_show_a_generator_name_stay_aligned():
    """A generator named by a folder (`Würstchen`, `即梦`) at an ASCII terminal (LC_ALL=C, PYTHONUTF8=0): the
    stream escaped the name as it was written, after the layout, and its row stood out of line with the rest."""
    import io

    from rich.console import Console

    from aiidetect.evaluate.report import print_tables

    block = _one_detector_block("W\u00fcrstchen", "\u5373\u68a6")
    buf = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="backslashreplace", write_through=True)
    print_tables({"run": {}, "conditions": [block]}, Console(file=buf, width=150, color_system=None))
    text = buf.buffer.getvalue().decode("ascii")
    assert "W\\xfcrstchen" in text and "\\u5373\\u68a6" in text, text
    gen = [l for l in text.split("per generator")[1].splitlines() if l[:1] in "|+"]
    assert len({len(l) for l in gen}) == 1, gen


def test_per_generator_lists_a_generator_without_opinions():
    """A generator the detector never answered on kept no row, and the fused table lost its verdicts
    (108 stylegan2 images under -d metadata were in no row)."""
    from aiidetect.evaluate.core import condition_metrics
    from aiidetect.evaluate.report import per_generator_rows
    from aiidetect.evaluate.runner import Scored
    from aiidetect.records import DetectorResult

    class Det:
        name, threshold = "pix", 0.5

    gens = ["real"] * 3 + ["seen"] * 3 + ["unseen"] * 2
    items = [Scored(f"{i}", int(g != "real"), g,
                    {"pix": DetectorResult("ok", p_ai=None if g == "unseen" else 0.1 + 0.15 * i)})
             for i, g in enumerate(gens)]
    block, _ = condition_metrics(items, [Det()], None)
    for name in ("pix", "fused"):
        b = block["fused"] if name == "fused" else block["detectors"][name]
        assert b["per_generator"]["unseen"]["n"] == 0 and b["per_generator"]["unseen"]["auc"] is None
        rows = {r[0]: r for r in per_generator_rows(block, name)}
        assert rows["unseen"][1:6] == ["0", "-", "-", "-", "-"]
    assert sum(block["fused"]["per_generator"]["unseen"]["verdicts"].values()) == 2
    assert sum(sum(r["verdicts"].values()) for g, r in block["fused"]["per_generator"].items()) == len(items)


@pytest.mark.parametrize("fn", [M.roc_auc, M.average_precision, M.ece, M.binary_metrics,
                                lambda y, s: M.tpr_at_fpr(y, s, 0.05)])
@pytest.mark.parametrize("missing", [float("nan"), None])
def test_a_score_with_no_opinion_is_refused_as_sklearn_refuses_it(fn, missing):
    """A NaN ranked below every real photo: AUC 0.25 here, where sklearn raises."""
    y, s = [0, 0, 1, 1], [0.1, 0.9, missing, 0.8]
    with pytest.raises(ValueError):
        skm.roc_auc_score(y, np.asarray(s, dtype=float))
    with pytest.raises(ValueError, match="no opinion"):
        fn(y, s)
    assert M.logit_metrics(y, [-2.0, 2.0, float("nan"), 1.0]).get("auc") is None
