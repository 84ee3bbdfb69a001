"""The one calibration format (docs/heads.md): every block aiidetect ever
wrote into a head manifest reads through probability.Calibrator and gives the
p_ai its family computed before; the trainers write the new form."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aiidetect.evaluate.metrics import logit_metrics
from aiidetect.probability import Calibrator, fit_temperature, sigmoid, sigmoid_float

ROOT = Path(__file__).resolve().parents[1]
XS = np.linspace(-30.0, 30.0, 241)


# The expressions each family used before the Calibrator, kept here as the reference.
def _old_linear(z, cal):
    z = np.asarray(z, dtype=np.float64)
    if (cal or {}).get("method") == "platt":
        z = float(cal["a"]) * z + float(cal["b"])
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _old_mpft(z, cal):
    z = z / float((cal or {}).get("temperature") or 1.0)
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _old_flow(z, cal):
    a, t = float(cal["slope"]), float(cal["threshold_z"])
    return 1.0 / (1.0 + np.exp(-np.clip(a * (np.asarray(z, dtype=np.float64) - t), -60, 60)))


@pytest.mark.parametrize("block, expected", [
    (None, lambda x: x),
    ({}, lambda x: x),
    ({"method": "none", "note": "authors' sigmoid, uncalibrated on aiidetect data"}, lambda x: x),
    ({"method": "identity"}, lambda x: x),
    ({"method": "temperature", "temperature": 2.5, "fitted_on": "selection split", "n": 3}, lambda x: x / 2.5),
    ({"method": "temperature", "temperature": 1.0, "fitted_on": None, "not_fitted": "..."}, lambda x: x),
    ({"method": "temperature", "T": 2.5}, lambda x: x / 2.5),
    ({"method": "temperature", "T": 2.5, "temperature": 2.5}, lambda x: x / 2.5),
    ({"method": "platt", "a": 1.5, "b": -0.25, "fitted_on": "out-of-fold logits"}, lambda x: 1.5 * x - 0.25),
    ({"method": "fpr-quantile+logistic-slope", "fpr": 0.01, "nll_mean": -73.7, "nll_std": 5.2,
      "threshold_z": 0.98, "slope": 0.25}, lambda x: 0.25 * (x - 0.98)),
    ({"nll_mean": 100.0, "nll_std": 20.0, "threshold_z": 2.0, "slope": 1.5, "fpr": 0.01}, lambda x: 1.5 * (x - 2.0)),
    ({"method": "platt", "a": 1.5, "b": 0.0, "x0": 2.0, "threshold_z": 2.0, "slope": 1.5}, lambda x: 1.5 * (x - 2.0)),
])
def test_every_block_aiidetect_wrote_reads_as_the_same_map(block, expected):
    cal = Calibrator.from_dict(block)
    assert np.array_equal(cal.logit(XS), expected(XS))  # same expression, same bits
    for x in (-7.25, 0.0, 3.5):
        got = cal.logit(x)
        assert isinstance(got, float) and got == expected(x)


def test_old_heads_give_the_p_ai_their_family_gave():
    lin = {"method": "platt", "a": 0.8, "b": 0.3}
    mp = {"method": "temperature", "temperature": 52.5635548188012, "fitted_on": "selection split", "n": 3}
    fl = {"method": "fpr-quantile+logistic-slope", "threshold_z": 0.98, "slope": 0.25, "nll_mean": 0, "nll_std": 1}
    for x in XS:
        # tanh's form was only absolutely accurate (1 - tanh cancels for p << 1):
        # the two agree to its own error, far below the 6 digits a record keeps.
        for c in (lin, {"method": "none"}):
            assert Calibrator.from_dict(c).prob(float(x)) == pytest.approx(float(_old_linear(x, c)), rel=1e-14,
                                                                           abs=1e-16)
        assert Calibrator.from_dict(mp).prob(float(x)) == pytest.approx(_old_mpft(float(x), mp), rel=1e-14)
    np.testing.assert_allclose(Calibrator.from_dict(fl).prob(XS), _old_flow(XS, fl), rtol=1e-14)


def test_the_shipped_univfd_head_and_a_fresh_flow_calibration_load():
    from aiidetect.flow.train import calibrate

    m = json.loads((ROOT / "weights" / "univfd" / "manifest.json").read_text())
    cal = Calibrator.from_manifest(m)
    assert cal.method == "none" and cal.prob(1.25) == sigmoid_float(1.25)

    rng = np.random.default_rng(3)
    block = calibrate(rng.normal(0, 1, 200), rng.normal(3, 1, 200), fpr=0.05)
    cal = Calibrator.from_dict(block)
    assert block["method"] == "platt" and cal.params == {"a": block["slope"], "b": 0.0, "x0": block["threshold_z"]}
    assert cal.prob(block["threshold_z"]) == 0.5
    assert Calibrator.from_dict(cal.to_dict()) == cal


def test_one_value_and_a_batch_agree_and_keep_their_types():
    cal = Calibrator.from_dict({"method": "platt", "a": 1.2, "b": -0.4})
    batch = cal.prob(XS)
    assert isinstance(batch, np.ndarray) and batch.dtype == np.float64
    one = [cal.prob(float(x)) for x in XS]
    assert all(isinstance(p, float) for p in one)
    np.testing.assert_allclose(one, batch, rtol=1e-15)
    assert sigmoid(np.array([-1e9, 1e9])).tolist() == [sigmoid_float(-1e9), sigmoid_float(1e9)]
    assert 0.0 < sigmoid_float(-1e9)  # never exactly 0: its logit stays finite downstream


@pytest.mark.parametrize("block", [
    {"method": "bogus"}, {"method": "platt"}, {"method": "isotonic", "x": [0.0]}, [1, 2], "platt",
    {"method": ["platt"]}, {"method": "platt", "a": "2"}, {"method": "platt", "a": float("nan")},
    {"method": "platt", "a": 1.0, "b": None}, {"method": "temperature", "T": -2.0},
    {"method": "temperature", "temperature": float("inf")}, {"slope": {}, "threshold_z": 1.0},
    {"method": "isotonic", "x": [0.0, 1.0], "p": [0.1, None]},
    # what no isotonic fit writes: unsorted knots (np.interp reads garbage), falling or out-of-range p
    {"method": "isotonic", "x": [5.0, -5.0], "p": [0.01, 0.99]},
    {"method": "isotonic", "x": [-5.0, 5.0], "p": [0.99, 0.01]},
    {"method": "isotonic", "x": [-5.0, 5.0], "p": [-3.0, 7.0]},
])
def test_a_broken_block_is_a_value_error_not_a_silent_identity(block):
    with pytest.raises(ValueError):
        Calibrator.from_dict(block)


def _nll(x, y, t):
    s = x / t
    return float(np.mean(np.logaddexp(0, s) - y * s))


def _grid_temperature(x, y):
    """MPFT's fit before the merge: log grid on [0.02, 50], then +-5% refinement."""
    grid = np.exp(np.linspace(np.log(0.02), np.log(50.0), 200))
    best = min(grid, key=lambda t: _nll(x, y, t))
    return float(min(best * np.exp(np.linspace(-0.05, 0.05, 41)), key=lambda t: _nll(x, y, t)))


def test_one_fit_temperature_is_at_least_as_good_as_the_old_grid_within_its_bounds():
    rng = np.random.default_rng(0)
    for k in range(25):
        n = int(rng.integers(6, 200))
        y = rng.integers(0, 2, n).astype(float)
        x = (2 * y - 1) * rng.gamma(2.0, 1.0, n) * rng.choice([0.05, 1.0, 20.0]) + rng.normal(0, 1.0, n)
        t = fit_temperature(x, y, (0.02, 50.0)).params["T"]
        assert 0.02 <= t <= 50.0
        # the grid's +-5% refinement could step outside its own range; compare within it
        assert _nll(x, y, t) <= _nll(x, y, float(np.clip(_grid_temperature(x, y), 0.02, 50.0))) + 1e-12


def test_fit_temperature_stops_at_its_bounds_on_separable_data():
    x = np.array([-2.0, -1.0, 1.0, 2.0])
    y = np.array([0, 0, 1, 1])
    assert fit_temperature(x, y, (0.02, 50.0)).params["T"] == pytest.approx(0.02, rel=1e-6)
    # the loss is flat to the last bit below T ~ 2e-3 here, so the search stops somewhere in it
    assert fit_temperature(x, y).params["T"] < 2e-3


def test_logit_metrics_agree_with_scikit_learn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    z = (y - 0.5) * 2 + rng.normal(0, 1.5, 300)
    m = logit_metrics(y, z, temperature=2.0)
    pred = (z >= 0).astype(int)
    assert m["n"] == 300 and m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["real_accuracy"] == pytest.approx(np.mean(pred[y == 0] == 0))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, z))
    assert m["nll"] == pytest.approx(skm.log_loss(y, 1 / (1 + np.exp(-z / 2.0))))
    one = logit_metrics([1, 1], [0.5, -0.5], ndigits=4)
    assert "auc" not in one and one["real_accuracy"] is None and one["accuracy"] == 0.5


def test_a_fusion_model_with_an_unreadable_calibration_drops_that_detector_and_says_so():
    from aiidetect.fusion import fuse
    from aiidetect.records import DetectorResult

    model = {"detectors": {"linear": {"calibration": {"method": "temperature", "T": 2.0}, "weight": 1.0},
                           "mpft": {"calibration": {"method": "sharpen", "k": 3}, "weight": 1.0}},
             "evidence_weight": 1.0, "bias": 0.0}
    res = {"linear": DetectorResult("ok", p_ai=0.8, score=math.log(4), score_kind="logit"),
           "mpft": DetectorResult("ok", p_ai=0.99, score=4.6, score_kind="logit")}
    out = fuse(res, model)
    assert out.p_ai == pytest.approx(sigmoid_float(math.log(4) / 2))
    assert "mpft" not in out.contributions
    assert any("mpft: calibration in the fusion model unreadable" in r and "'sharpen'" in r for r in out.reasons)


def test_a_linear_head_with_an_unreadable_calibration_fails_at_load(tmp_path):
    torch = pytest.importorskip("torch")
    from aiidetect.linear import LinearHead
    from aiidetect.heads import load_head, save_head

    def head(tmp, cal):
        save_head(tmp, {"weight": torch.zeros(1, 4), "bias": torch.zeros(1)},
                  {"name": "h", "detector": "linear", "labels": ["real", "ai"], "calibration": cal})
        return load_head(tmp)

    ok = LinearHead.from_head(head(tmp_path / "ok", {"method": "platt", "a": 2.0, "b": 0.5}))
    assert ok.p_ai(0.25) == sigmoid_float(1.0)
    with pytest.raises(ValueError, match="slope 'a'"):
        LinearHead.from_head(head(tmp_path / "bad", {"method": "platt", "b": 0.5}))


def test_a_large_isotonic_block_is_read_once_not_per_file(monkeypatch):
    """fuse reads the fusion model's calibration blocks for every file: 200,000 isotonic knots (a
    large calibration set, or a hostile 5 MB manifest) cost a third of a second per file, checked
    and converted again each time. Counted here, not timed: the knots are read once per block."""
    from aiidetect.fusion import fuse
    from aiidetect.probability import Calibrator
    from aiidetect.records import DetectorResult

    reads = []
    real = Calibrator._isotonic.__func__
    monkeypatch.setattr(Calibrator, "_isotonic", classmethod(lambda cls, xs, ps: reads.append(1) or real(cls, xs, ps)))
    n = 2_000
    x = np.linspace(-8, 8, n).tolist()
    p = np.linspace(0.001, 0.999, n).tolist()
    model = {"detectors": {"a": {"weight": 1.0, "calibration": {"method": "isotonic", "x": x, "p": p}}},
             "ai_threshold": 0.9, "real_threshold": 0.1}
    first = fuse({"a": DetectorResult("ok", p_ai=0.7)}, model)
    for _ in range(50):
        again = fuse({"a": DetectorResult("ok", p_ai=0.7)}, model)
    assert len(reads) == 1 and again.p_ai == first.p_ai
    # an edited block (new lists) is read anew, not served from what was read before
    model["detectors"]["a"]["calibration"] = {"method": "isotonic", "x": x, "p": [0.5] * n}
    assert fuse({"a": DetectorResult("ok", p_ai=0.7)}, model).p_ai == pytest.approx(0.5)
    assert len(reads) == 2
    # so is one that cannot be read, which fuse drops per file with a note: the last knot out of order
    # was found again for every file (0.25 s each at 200,000 knots)
    model["detectors"]["a"]["calibration"] = {"method": "isotonic", "x": x[:-1] + [-100.0], "p": p}
    model["detectors"]["b"] = {"weight": 1.0, "calibration": {"method": "none"}}
    both = {"a": DetectorResult("ok", p_ai=0.7), "b": DetectorResult("ok", p_ai=0.7)}
    for _ in range(20):
        dropped = fuse(both, model)
    assert len(reads) == 3
    assert any("a: calibration in the fusion model unreadable (isotonic knots 'x' must be in increasing order)" in r
               for r in dropped.reasons), dropped.reasons


def test_an_isotonic_block_edited_in_place_is_read_anew():
    """The blocks read are remembered with copies of their knots, not by the lists' identity alone: a library
    user adjusting a fusion model in a notebook edits its lists in place, and was served the knots as
    they were (same list, same length) -- an unsorted edit even kept being used instead of refused."""
    from aiidetect.fusion import fuse
    from aiidetect.records import DetectorResult

    x, p = [-1.0, 0.0, 1.0], [0.1, 0.5, 0.9]
    model = {"detectors": {"a": {"weight": 1.0, "calibration": {"method": "isotonic", "x": x, "p": p}},
                           "b": {"weight": 1.0, "calibration": {"method": "none"}}},
             "ai_threshold": 0.9, "real_threshold": 0.1}
    both = {"a": DetectorResult("ok", p_ai=0.7), "b": DetectorResult("ok", p_ai=0.5)}
    assert fuse(both, model).p_ai > 0.75
    p[:] = [0.5, 0.5, 0.5]
    assert fuse(both, model).p_ai == pytest.approx(0.5)
    x[2] = -5.0
    assert any("a: calibration in the fusion model unreadable (isotonic knots 'x' must be in increasing order)"
               in r for r in fuse(both, model).reasons)
    # equal values of another type are other knots: True == 1, but a flag is no knot
    ok = {"method": "isotonic", "x": [0, 1], "p": [0.2, 0.8]}
    assert Calibrator.from_dict(ok).prob(0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="finite number, not True"):
        Calibrator.from_dict({"method": "isotonic", "x": [0, True], "p": [0.2, 0.8]})
    # a calibrator read from a block is shared by every block with those knots: nobody can edit it
    cal = Calibrator.from_dict(ok)
    with pytest.raises(TypeError):
        cal.params["x"][0] = 5.0
    assert cal.to_dict() == {"method": "isotonic", "x": [0.0, 1.0], "p": [0.2, 0.8]}


def test_a_calibrator_built_on_lists_reads_them_as_they_are_now():
    """A Calibrator a caller builds on their own lists (fit_isotonic's, or by hand) converted them to
    arrays once and kept those through any later edit of the lists."""
    x, p = [0.0, 1.0], [0.2, 0.8]
    cal = Calibrator("isotonic", {"x": x, "p": p})
    assert cal.prob(0.5) == pytest.approx(0.5)
    p[:] = [0.6, 0.6]
    assert cal.prob(0.5) == pytest.approx(0.6)


def test_a_block_read_while_another_thread_adds_one_is_no_crash(monkeypatch):
    """Counting the knots the remembered blocks hold walked the cache while another thread (a service
    fusing from several) added to it: "dictionary changed size during iteration" came out of fuse.
    Here the other thread reads a new block exactly while this one counts."""
    import threading

    from aiidetect import probability

    errors: list[BaseException] = []
    others: list[threading.Thread] = []

    def read(x0: float) -> None:
        try:
            Calibrator.from_dict({"method": "isotonic", "x": [x0, x0 + 1.0], "p": [0.2, 0.8]})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    class Seen(dict):
        armed = False

        def _walk(self, view):
            for n, item in enumerate(view):
                if n == 0 and Seen.armed:  # counted: another thread reads a new block now
                    Seen.armed = False
                    others.append(threading.Thread(target=read, args=(100.0,)))
                    others[0].start()
                    others[0].join(timeout=0.5)  # with the cache locked it waits for this count to end
                yield item

        def values(self):
            return self._walk(super().values())

        def items(self):
            return self._walk(super().items())

    monkeypatch.setattr(probability, "_ISOTONIC_SEEN", Seen())
    read(0.0)
    read(10.0)  # two entries, so the count goes on past the first
    Seen.armed = True
    read(20.0)
    others[0].join(timeout=5)
    assert not errors, errors
    assert len(probability._ISOTONIC_SEEN) == 4


def test_a_calibrator_one_caller_changes_is_not_what_another_block_reads():
    """from_dict remembers the calibrator of each block's knots and served that one object to every
    block with the same knots: a caller replacing its knots (adjusting a model in a notebook) changed
    the calibrator another fusion model, another thread, then read from fresh lists."""
    block = {"method": "isotonic", "x": [0.0, 1.0], "p": [0.2, 0.8]}
    a = Calibrator.from_dict(block)
    a.params["p"] = (0.9, 0.95)
    b = Calibrator.from_dict({"method": "isotonic", "x": [0.0, 1.0], "p": [0.2, 0.8]})
    assert b.prob(0.5) == pytest.approx(0.5) and b.to_dict() == block
    assert a.prob(0.5) == pytest.approx(0.925)  # the caller's own change still holds for its calibrator
    with pytest.raises(ValueError):  # the shared knots cannot be written through either
        b.__dict__["_knots"][2][0] = 5.0
