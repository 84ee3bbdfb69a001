"""Score -> calibrated probability, and the operating band.

A calibrator maps a detector's raw number x (its logit-like ``score``, or
logit(p_ai) when it gives no score) to a calibrated logit:

- temperature: z = x / T           (one parameter; keeps 0 at 0, fixes over-confidence)
- platt:       z = a * x + b       (logistic regression on one feature)
- isotonic:    p = f(x) monotone   (non-parametric; needs more data, clipped away from 0/1)

Calibrators serialise to small dicts (stored in a head manifest) and back.
``choose_band`` picks the uncertain band from labelled calibration scores so
that real photos are called ai-generated at most at a target rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .evaluate.metrics import rate_upper_bound
from .fusion import DEFAULT_AI_THRESHOLD, DEFAULT_REAL_THRESHOLD
# The score -> probability maps live in probability, which fusion also uses at
# serving time; re-exported here because fitting is this module's business.
from .probability import (METHODS, P_EPS, Calibrator, _nll, fit, fit_isotonic, fit_platt, platt_targets,  # noqa: F401
                          fit_temperature, logit, sigmoid)


@dataclass
class Band:
    """Verdict thresholds on the fused P(AI): >= ai -> ai-generated,
    <= real -> likely-real, between -> uncertain."""

    ai: float
    real: float
    fpr: float | None = None      # share of calibration real photos called ai-generated
    fnr: float | None = None      # share of calibration AI images called likely-real
    n_real: int = 0
    n_ai: int = 0
    notes: list[str] = field(default_factory=list)  # what the data could not support, and what was done

    @property
    def fpr_upper(self) -> float | None:
        """95% one-sided upper confidence bound on the rate behind `fpr`."""
        return None if self.fpr is None else rate_upper_bound(round(self.fpr * self.n_real), self.n_real)

    @property
    def fnr_upper(self) -> float | None:
        return None if self.fnr is None else rate_upper_bound(round(self.fnr * self.n_ai), self.n_ai)

    def to_dict(self) -> dict[str, Any]:
        return {"ai": self.ai, "real": self.real, "fpr_at_band": self.fpr, "fnr_at_band": self.fnr,
                "fpr_upper_95": self.fpr_upper, "fnr_upper_95": self.fnr_upper,
                "n_real": self.n_real, "n_ai": self.n_ai, "notes": list(self.notes)}


def _upper_threshold(neg: np.ndarray, rate: float) -> float:
    """Smallest threshold t with mean(neg >= t) <= rate: strictly above the
    k-th largest negative, k = floor(rate * n) allowed errors."""
    k = int(math.floor(rate * neg.size + 1e-9))
    s = np.sort(neg)[::-1]
    if k >= s.size:
        return float(s.min())
    return float(np.nextafter(s[k], np.inf))


RULES_BAND = (DEFAULT_AI_THRESHOLD, DEFAULT_REAL_THRESHOLD)


def _needed(rate: float) -> str:
    return f"at least {math.ceil(1 / rate - 1e-9)} needed" if rate > 0 else "no finite number of images can"


def choose_band(p, y, max_fpr: float = 0.01, max_fnr: float = 0.05,
                floor: tuple[float, float] = (0.5, 0.5), unsupported: tuple[float, float] = RULES_BAND) -> Band:
    """The widest-confidence band meeting both targets on this data.

    ai threshold: real photos reach it at most at `max_fpr` (finite-sample:
    at most floor(max_fpr * n_real) of them). real threshold: AI images fall to
    it at most at `max_fnr`. Thresholds never cross 0.5 (`floor`), so the band
    always contains 0.5 and a coin flip is never a firm verdict.

    A side whose class has fewer than 1 / target images (under 100 real photos
    for a 1% target) cannot show the target at all: the smallest rate it can
    observe, 1 / n, is already above it, and "above every real photo seen" on
    ten photos says next to nothing about the eleventh. Such a side is never
    narrower than the default rules' band (`unsupported`), and `notes` says so.
    """
    p, y = np.asarray(p, float).ravel(), np.asarray(y, int).ravel()
    neg, pos = p[y == 0], p[y == 1]
    if neg.size == 0 or pos.size == 0:
        raise ValueError("choosing the band needs both real and AI calibration images")
    notes = []
    # Strictly either side of the floor: fuse calls p >= ai ai-generated, and
    # a band of exactly 0.5 / 0.5 called p = 0.5 (no information) so.
    hi = max(_upper_threshold(neg, max_fpr), float(np.nextafter(floor[0], np.inf)))
    if neg.size * max_fpr < 1 - 1e-9:
        notes.append(f"{neg.size} real images cannot show a {100 * max_fpr:g}% false-positive rate "
                     f"({_needed(max_fpr)}): the ai-generated threshold is kept at or above the default rules' "
                     f"{unsupported[0]:g}")
        hi = max(hi, unsupported[0])
    hi = min(hi, 1.0)
    lo = -_upper_threshold(-pos, max_fnr)
    lo = min(lo, float(np.nextafter(floor[1], -np.inf)))
    if pos.size * max_fnr < 1 - 1e-9:
        notes.append(f"{pos.size} AI images cannot show a {100 * max_fnr:g}% false-negative rate "
                     f"({_needed(max_fnr)}): the likely-real threshold is kept at or below the default rules' "
                     f"{unsupported[1]:g}")
        lo = min(lo, unsupported[1])
    lo = max(lo, 0.0)
    k_fp, k_fn = int(np.sum(neg >= hi)), int(np.sum(pos <= lo))
    # At the ends of the range no threshold is left to move: real photos at a saturated P(AI) of 1.0
    # are called ai-generated under any band (and AI images at 0.0 likely-real). The band came out
    # 1.0 / 0.0, its rates above the targets, and nothing said the targets were not met.
    if k_fp > math.floor(max_fpr * neg.size + 1e-9):
        notes.append(f"the {100 * max_fpr:g}% false-positive target is not met: {k_fp} of {neg.size} real images "
                     f"reach P(AI) {hi:g}, which no threshold can leave out (the detectors are certain and wrong "
                     f"on them)")
    if k_fn > math.floor(max_fnr * pos.size + 1e-9):
        notes.append(f"the {100 * max_fnr:g}% false-negative target is not met: {k_fn} of {pos.size} AI images "
                     f"fall to P(AI) {lo:g}, which no threshold can leave out (the detectors are certain and wrong "
                     f"on them)")
    return Band(ai=float(hi), real=float(lo), fpr=k_fp / neg.size, fnr=k_fn / pos.size,
                n_real=int(neg.size), n_ai=int(pos.size), notes=notes)


# --- the fusion model -------------------------------------------------------

def _fusion_features(results, names: Sequence[str], cals: Mapping[str, Calibrator], cap: float):
    """One row: each detector's calibrated logit (0 = no opinion) and the capped soft-evidence sum,
    and the detectors of `names` that gave no answer. None when decisive evidence decides."""
    from .fusion import detector_input, split_results

    pixel, soft, decisive = split_results(results)
    if decisive:
        return None
    row, silent = [], []
    for n in names:
        r = pixel.get(n)
        x = detector_input(r) if r is not None else None
        row.append(0.0 if x is None else float(cals[n].logit(x)))
        if x is None:
            silent.append(n)
    s = sum(e.llr for _, e in soft)
    row.append(max(-cap, min(cap, s)))
    return row, silent


def _answered_by_all(silent: Sequence[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """Which rows every detector of `names` answered: the files a scan judges with the model's bias and band."""
    need = set(names)
    return np.array([not (need & set(s)) for s in silent], dtype=bool)


def _no_answer(silent: Sequence[Sequence[str]], full: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """How many rows were left out of the fit for want of an answer, and by which detector."""
    out = [s for s, f in zip(silent, full) if not f]
    by = {n: sum(n in s for s in out) for n in names}
    return {"n": len(out), "by": {n: k for n, k in by.items() if k}}


def _said_no_answer(no_answer: Mapping[str, Any]) -> str:
    by = ", ".join(f"{n} {k}" for n, k in no_answer["by"].items())
    return f"{no_answer['n']} left out: a calibrated detector gave them no answer ({by})"


def logistic_regression(X, y, offset=None, C: float = 1.0, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (scikit-learn's objective: 0.5|w|^2 +
    C * sum log-loss, bias unpenalised) with a fixed per-row offset, by Newton."""
    X = np.asarray(X, float).reshape(len(y), -1)
    y = np.asarray(y, float)
    off = np.zeros(len(y)) if offset is None else np.asarray(offset, float)
    A = np.hstack([X, np.ones((len(y), 1))])
    reg = np.r_[np.full(X.shape[1], 1.0 / C), 0.0]
    theta = np.zeros(A.shape[1])
    for _ in range(max_iter):
        p = sigmoid(A @ theta + off)
        grad = A.T @ (p - y) + reg * theta
        H = A.T @ (A * (p * (1 - p))[:, None]) + np.diag(reg) + 1e-9 * np.eye(A.shape[1])
        step = np.linalg.solve(H, grad)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return theta[:-1], float(theta[-1])


# Fewer images of a class than this cannot support a fit.
MIN_PER_CLASS = 5
# A detector whose fitted contribution moves the log-odds by less than this across all its calibration
# answers carries no information the verdict can use (e^0.001: a 0.1% change in the odds).
NO_SAY_NATS = 1e-3


def check_enough(n_real: int, n_ai: int, min_per_class: int = MIN_PER_CLASS, what: str = "that decode") -> None:
    """ValueError when there are too few images of a class to fit on."""
    if n_real < min_per_class or n_ai < min_per_class:
        raise ValueError(f"calibration needs at least {min_per_class} real and {min_per_class} AI images "
                         f"{what} (got {n_real} real, {n_ai} AI)")


def fit_fusion(scored, method: str = "temperature", max_fpr: float = 0.01, max_fnr: float = 0.05,
               C: float = 1.0, min_per_class: int = MIN_PER_CLASS) -> dict[str, Any]:
    """Fit per-detector calibration, a logistic-regression fusion over the
    calibrated logits and the soft-evidence sum, and the uncertain band.

    scored: evaluate.runner.Scored items (label + {detector: DetectorResult}).
    Returns {"params", "threshold", "metrics", "report"} for the manifest.
    Raises ValueError when the data cannot support a fit.
    """
    from .fusion import SOFT_EVIDENCE_CAP, _answered, detector_input, fuse

    items = [s for s in scored if not s.error]
    y_all = np.array([s.label for s in items], dtype=int)
    check_enough(int((y_all == 0).sum()), int((y_all == 1).sum()), min_per_class)
    # Every pixel detector that answered, finite or not, so one that only gave NaN is reported as skipped.
    names = sorted({n for s in items for n, r in s.results.items() if _answered(r)})
    cals: dict[str, Calibrator] = {}
    det_report: dict[str, Any] = {}
    for n in names:
        xs, ys, broken = [], [], 0
        for s in items:
            r = s.results.get(n)
            if not _answered(r):
                continue
            # NaN or an infinite score: one of them pulled T to its bound and the weight to 0
            x = detector_input(r)
            if x is None:
                broken += 1
                continue
            xs.append(x)
            ys.append(s.label)
        xs_a, ys_a = np.array(xs, float), np.array(ys, int)
        if len(set(ys)) < 2 or min((ys_a == 0).sum(), (ys_a == 1).sum()) < min_per_class:
            det_report[n] = {"skipped": f"too few scored images per class ({(ys_a == 0).sum()} real, {(ys_a == 1).sum()} AI)"
                                        + (f"; {broken} non-finite outputs left out" if broken else "")}
            continue
        if xs_a.min() == xs_a.max():
            det_report[n] = {"skipped": f"the same raw score ({xs_a[0]:.4g}) for every calibration image"}
            continue
        # Separable scores have no maximum-likelihood fit (certainty is always
        # better); Platt's targets give the finite one. Otherwise the MLE.
        separable = xs_a[ys_a == 0].max() < xs_a[ys_a == 1].min() or xs_a[ys_a == 1].max() < xs_a[ys_a == 0].min()
        cal = fit(xs_a, platt_targets(ys_a) if separable and method != "platt" else ys_a, method)
        if cal.method == "platt" and cal.params["a"] <= 0:
            # Platt's slope can go negative where the weight cannot: a detector
            # inverted on this data would come out flipped, against the rule.
            a = cal.params["a"]
            det_report[n] = {"skipped": f"looks inverted on the calibration data (platt slope {a:.3g}): "
                                        f"dropped, not flipped" if a < 0 else
                                        "no information on the calibration data (platt slope 0)"}
            continue
        cals[n] = cal
        det_report[n] = {"n": len(xs), "nll_before": _nll(xs_a, ys_a), "nll_after": _nll(cal.logit(xs_a), ys_a)}
        if broken:
            det_report[n]["non_finite"] = broken
    answered, names = names, [n for n in names if n in cals]
    cap = SOFT_EVIDENCE_CAP
    rows, ys, silent, keys = [], [], [], []
    for i, s in enumerate(items):
        got = _fusion_features(s.results, names, cals, cap)
        if got is not None:
            rows.append(got[0])
            silent.append(got[1])
            ys.append(s.label)
            keys.append(i)
    X_all, Y_all = np.array(rows, float).reshape(len(rows), len(names) + 1), np.array(ys, int)
    decided = len(items) - len(rows)
    # Serving and fitting must see the same sum. A file on which a detector with a say gave no answer (an
    # error, NaN, not run) is fused by `fuse` without the model's bias and under a band no narrower than the
    # rules' (docs/fusion.md); fitted here with that detector's term as 0, it taught the bias to stand in for
    # the missing term (b failing on half the AI images gave a bias of +0.76 where the files both answered
    # call for -0.72: tests/test_calibration.py), and its P(AI), judged on another band at scan time, helped
    # choose this one. The weights, bias and band are fitted on the files every detector with a say answered
    # (every calibrated one to start with; the loop after the fit lets go of those weighed 0); the rest are counted.
    full = _answered_by_all(silent, names)
    X, Y = X_all[full], Y_all[full]
    if decided:
        # The check above counted these; a fit of the weights and the band on 2 AI images (the other
        # 18 carried generator parameters) went ahead, and with none it was "train a head first".
        # (counted before the files a detector did not answer are taken out: the next check names those)
        try:
            check_enough(int((Y_all == 0).sum()), int((Y_all == 1).sum()), min_per_class,
                         what=f"that decisive evidence does not decide ({decided} left out: rule 3 decides them, "
                              f"so they say nothing about the weights or the band)")
        except ValueError as exc:
            raise ValueError(f"{exc}; calibrate on images without that metadata, such as copies stripped of it") from None
    no_answer = _no_answer(silent, full, names)
    if no_answer["n"] and len(set(Y_all.tolist())) > 1:
        try:
            check_enough(int((Y == 0).sum()), int((Y == 1).sum()), min_per_class,
                         what=f"that every calibrated detector answered ({_said_no_answer(no_answer)})")
        except ValueError as exc:
            raise ValueError(f"{exc}; scans judge a file a detector did not answer without the fitted bias and "
                             f"band, so such files cannot fit them: calibrate on images every detector answers, "
                             f"or leave the detector out with -d") from None
    used = [j for j in range(X.shape[1]) if np.any(X[:, j] != 0)] if len(rows) else []
    if not used or len(set(Y.tolist())) < 2:
        skipped = "".join(f"; {n} skipped: {r['skipped']}" for n, r in det_report.items() if "skipped" in r)
        raise ValueError("no detector or evidence gave an opinion on both classes: nothing to fuse"
                         f"{skipped}; train a head first, or check the detectors' status in `aiidetect eval`")
    from .fusion_fit import constrained_logistic_fit

    w, bias = constrained_logistic_fit(X, Y, used, C)
    # A detector whose weighted logit varies by less than NO_SAY_NATS over the calibration images has
    # no say, whatever its weight: a random-init probe came out T = 1000, weight 1.1e-4 (3e-6 nats
    # between its extremes), counted as an opinion, and soft evidence alone gave firm verdicts. Its
    # column is fixed at 0 and the rest refitted, so it is weighed 0 and `fuse` gives it no say.
    mute = []
    for j in range(len(names)):
        col = X[X[:, j] != 0, j]
        if w[j] > 0 and (col.size == 0 or w[j] * float(col.max() - col.min()) < NO_SAY_NATS):
            mute.append(j)
    if mute:
        used = [j for j in used if j not in mute]
        for j in mute:
            det_report[names[j]]["note"] = (f"its weighted logit varied by less than {NO_SAY_NATS:g} nats over the "
                                            f"calibration images (weight {w[j]:.3g}): weighed 0, no say")
    # A detector weighed 0 (muted above, or at its bound) has no say, and `fuse` keeps the bias and band for a
    # file only it did not answer: those files count again, its column stays 0, and the rest is refitted, until
    # the detectors with a say, and so the files fitted on, stay the same (each round only adds files).
    while True:
        no_say = {j for j in range(len(names)) if j not in used or w[j] <= 0}
        wider = _answered_by_all(silent, [n for j, n in enumerate(names) if j not in no_say])
        if not mute and np.array_equal(wider, full):
            break
        mute = []
        full = wider
        X, Y = X_all[full], Y_all[full]
        used = [j for j in used if j not in no_say]
        w, bias = constrained_logistic_fit(X, Y, used, C) if used else (np.zeros(X.shape[1]), bias)
    no_answer = _no_answer(silent, full, names)
    if answered and not any(w[j] > 0 for j in range(len(names))):
        # Every detector that answered was dropped or fitted to weight 0 (inverted or uninformative on
        # this data: temperature and isotonic cannot flip one, so they flatten it). Such a model says
        # "uncertain" for every file that decisive evidence does not decide, and scans would load it
        # without a word.
        why = [f"{n}: weight 0 (log loss {det_report[n]['nll_before']:.3f} before calibration, "
               f"{det_report[n]['nll_after']:.3f} after" + (f"; {det_report[n]['note']}" if "note" in det_report[n]
                                                             else "") + ")" for n in names]
        why += [f"{n} skipped: {r['skipped']}" for n, r in det_report.items() if "skipped" in r]
        raise ValueError(f"no detector carries information on this data, so the fused verdict could never be firm "
                         f"({'; '.join(why)}); a detector that tells nothing apart here, or whose scores run the "
                         f"wrong way (dropped, not flipped), has no say: check its head and the labels")
    params: dict[str, Any] = {
        "method": method,
        "detectors": {n: {"calibration": cals[n].to_dict(), "weight": float(w[j]), **det_report[n]}
                      for j, n in enumerate(names)},
        "evidence_weight": float(w[-1]),
        "bias": float(bias),
        "soft_evidence_cap": cap,
        "skipped_detectors": {n: r["skipped"] for n, r in det_report.items() if "skipped" in r},
        # rows of the weights' and the band's fit, and those left out because a calibrated detector gave no answer
        "fit_rows": {"n": int(full.sum()), "no_answer": no_answer["n"], "no_answer_by_detector": no_answer["by"]},
    }
    # The band, chosen on the fused P(AI) of images the band actually governs
    # (decisive evidence decides the others by rule).
    ps, yb = [], []
    for k in np.flatnonzero(full):
        s = items[keys[k]]
        f = fuse(s.results, {**params, "ai_threshold": 0.5, "real_threshold": 0.5})
        if f.p_ai is not None:
            ps.append(f.p_ai)
            yb.append(s.label)
    band = choose_band(ps, yb, max_fpr=max_fpr, max_fnr=max_fnr)
    if not names:
        # Without a calibrated pixel detector fuse averages the detectors by the rules, and this band,
        # chosen on P(AI) of soft evidence alone (which never decides, rule 4), would judge that
        # average: a metadata-only fit gave ai >= 0.5000001, and every later scan called a p_ai of
        # 0.6 ai-generated.
        band.ai, band.real = RULES_BAND
        band.fpr = float(np.mean(np.asarray(ps)[np.asarray(yb) == 0] >= band.ai))
        band.fnr = float(np.mean(np.asarray(ps)[np.asarray(yb) == 1] <= band.real))
        band.notes = [f"no pixel detector was calibrated, so the band stays the default rules' "
                      f"{RULES_BAND[0]:g} / {RULES_BAND[1]:g}: soft evidence alone never decides a verdict, and "
                      f"scans fuse by the rules (evidence weight 1, no bias)"]
        # What fuse applies to a model without detectors; the fitted numbers were printed and stored as if used.
        params["evidence_weight"], params["bias"] = 1.0, 0.0
    params["ai_threshold"], params["real_threshold"] = band.ai, band.real
    threshold = {**band.to_dict(), "max_fpr": max_fpr, "max_fnr": max_fnr}
    from .evaluate.metrics import binary_metrics, clean

    fused = [fuse(s.results, params) for s in items]
    have = [i for i, f in enumerate(fused) if f.p_ai is not None]
    metrics = binary_metrics(y_all[have], [fused[i].p_ai for i in have], 0.5)
    verdicts = [f.verdict for f in fused]
    metrics["uncertain_share"] = float(np.mean([v == "uncertain" for v in verdicts]))
    metrics["real_called_ai"] = float(np.mean([v == "ai-generated" for v, yy in zip(verdicts, y_all) if yy == 0]))
    metrics["ai_called_real"] = float(np.mean([v == "likely-real" for v, yy in zip(verdicts, y_all) if yy == 1]))
    metrics["note"] = "in-sample: measured on the calibration data itself; run `aiidetect eval` on held-out data"
    return clean({"params": params, "threshold": threshold, "metrics": metrics})


CV_FOLDS = 5


def cross_validate(scored, method: str = "temperature", max_fpr: float = 0.01, max_fnr: float = 0.05,
                   C: float = 1.0, folds: int = CV_FOLDS, seed: int = 0) -> dict[str, Any]:
    """The fitted verdict's error rates on images its fit did not see: each of `folds` stratified folds
    (seeded: the same data give the same numbers) is judged, as a scan judges it, by the whole fit
    (calibration, weights, bias and band) redone on the other folds. `fit_fusion`'s own rates are measured
    on the images that chose the band, which puts it at the target on them: on 100 real and 100 AI images
    and a 5% target the band showed 5.0% every time, and fresh images of the same kind met 3.4-8.9%.
    {"folds", "seed", "skipped": why} when a fold's fit is refused (too few images)."""
    from .fusion import fuse

    items = [s for s in scored if not s.error]
    y = np.array([s.label for s in items], dtype=int)
    fold = np.zeros(len(items), dtype=int)
    rng = np.random.default_rng(seed)
    for lab in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == lab))
        fold[idx] = np.arange(idx.size) % folds
    out: dict[str, Any] = {"folds": folds, "seed": seed}
    verdicts = np.empty(len(items), dtype=object)
    for f in range(folds):
        try:
            fitted = fit_fusion([items[i] for i in np.flatnonzero(fold != f)], method=method, max_fpr=max_fpr,
                                max_fnr=max_fnr, C=C)
        except ValueError as exc:
            return {**out, "skipped": f"the fit without fold {f + 1} of {folds} was refused: {exc}"}
        for i in np.flatnonzero(fold == f):
            verdicts[i] = fuse(items[i].results, fitted["params"]).verdict
    for key, lab, wrong in (("real_called_ai", 0, "ai-generated"), ("ai_called_real", 1, "likely-real")):
        k, n = int(np.sum(verdicts[y == lab] == wrong)), int(np.sum(y == lab))
        out[key], out[f"{key}_count"], out[f"{key}_upper_95"] = k / n, [k, n], rate_upper_bound(k, n)
    out["uncertain_share"] = float(np.mean(verdicts == "uncertain"))
    return out


def save_fusion(out_dir, fitted: Mapping[str, Any], data: Mapping[str, Any], name: str = "fusion",
                source: str = "", fitted_on: Iterable[str] | None = None,
                fitted_on_phashes: Iterable[int | None] | None = None) -> Path:
    """Write the fusion artifact: a head folder (detector "fusion") whose
    manifest holds every fitted number and the data it was fitted on. `fitted_on`: the SHA-256 of
    each image fitted on, recorded as a head records its training images (train_record), so `eval`
    of the fused verdict on calibration images is told, as of a head on its training images;
    `fitted_on_phashes` their perceptual hashes (near-duplicates, evaluate.overlap)."""
    from .heads import save_head
    from .report.safe import clean

    p = fitted["params"]
    names = list(p["detectors"])
    w = [p["detectors"][n]["weight"] for n in names] + [p["evidence_weight"]]
    manifest = {"name": name, "detector": "fusion", "version": "1", "labels": ["real", "ai"],
                "params": p, "threshold": fitted["threshold"],
                "calibration": {"method": p["method"], "inputs": names + ["soft_evidence"],
                                "fitted_on": dict(data)},
                "metrics": fitted["metrics"], "data": dict(data), "source": source or "aiidetect calibrate",
                "license": "same as the data it was fitted on"}
    # Folder names and the command line need not be UTF-8: json.dumps wrote their bytes as lone
    # surrogate escapes ("\udcff"), which strict parsers refuse, and `calibrate -f json` printed U+FFFD.
    extra_files = None
    if fitted_on is not None:
        from .train_record import record

        manifest["training_images"], extra_files = record(
            fitted_on, "images the fusion model was fitted on (its calibration data)", phashes=fitted_on_phashes)
    return save_head(out_dir, {"weights": np.asarray(w, dtype=np.float32),
                               "bias": np.asarray([p["bias"]], dtype=np.float32)}, clean(manifest),
                     extra_files=extra_files)
