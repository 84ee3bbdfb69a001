"""Detection metrics on (label, probability) pairs, in plain numpy.

Conventions match scikit-learn (tested against it): label 1 = AI, higher
score = more AI. Every function tolerates one-class inputs and returns None
for a number that is undefined there (AUC with no real images, ...), so a
per-generator table never crashes on a small folder.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def _arrays(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    return y, s


def _no_nan(s: np.ndarray) -> None:
    """A NaN (or None) score is a file with no opinion: sorted, it ranked below every real photo and the
    AUC, AP and ECE came out as numbers (0.25 where sklearn refuses), so a script passing a detector's
    whole column got wrong metrics without a word. sklearn's answer: refuse."""
    if np.isnan(s).any():
        raise ValueError(f"{int(np.isnan(s).sum())} score(s) are NaN or None (no opinion): leave those files "
                         f"out, as `aiidetect eval` does (its `cover`)")


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, like sklearn.metrics.roc_curve
    with drop_intermediate=False; the first point is (0, 0) at threshold +inf.
    ValueError on a NaN score, as sklearn."""
    y, s = _arrays(y, s)
    _no_nan(s)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[idx].astype(np.float64)
    fps = (idx + 1 - tps).astype(np.float64)
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thr = np.r_[np.inf, s[idx]]
    P, N = tps[-1], fps[-1]
    tpr = tps / P if P > 0 else np.full_like(tps, np.nan)
    fpr = fps / N if N > 0 else np.full_like(fps, np.nan)
    return fpr, tpr, thr


def roc_auc(y, s) -> float | None:
    y, s = _arrays(y, s)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def auc_interval(auc: float | None, n_pos: int, n_neg: int, z: float = 1.959963984540054
                 ) -> tuple[float, float] | None:
    """95% interval for a ROC AUC over n_pos AI and n_neg real images: Newcombe's score interval for the
    Mann-Whitney statistic (Stat Med 2006;25:559-573, method 5), the AUCs t with
    (auc - t)^2 <= z^2 V(t), V(t) = t (1 - t) / (n_pos n_neg) [1 + (N - 1) ((1 - t) / (2 - t) + t / (1 + t))],
    N = (n_pos + n_neg) / 2. No resampling (no seed to state: the same data give the same interval), and,
    unlike a bootstrap or DeLong's variance, which are both 0 there, not [1, 1] for an AUC of 1 on 3 and 3
    images: it is [0.50, 1]. None when the AUC is."""
    if auc is None or n_pos < 1 or n_neg < 1:
        return None
    big_n = (n_pos + n_neg) / 2.0

    def gap(t: float) -> float:   # <= 0 inside the interval
        v = t * (1 - t) / (n_pos * n_neg) * (1 + (big_n - 1) * ((1 - t) / (2 - t) + t / (1 + t)))
        return (auc - t) ** 2 - z * z * v

    def root(inside: float, outside: float) -> float:
        if gap(outside) <= 0:
            return outside
        for _ in range(100):
            mid = (inside + outside) / 2
            if gap(mid) <= 0:
                inside = mid
            else:
                outside = mid
        return inside

    return root(auc, 0.0), root(auc, 1.0)


def average_precision(y, s) -> float | None:
    """Step-wise AP = sum_n (R_n - R_{n-1}) P_n, as sklearn.average_precision_score.
    None without both classes: with no real images every ranking has AP 1
    (sklearn's answer), which printed "AP 100.0" beside "acc AI 0.0"."""
    y, s = _arrays(y, s)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    P = y.sum()
    N = y.size - P
    tps = tpr * P
    fps = (fpr * N) if N > 0 else np.zeros_like(tps)
    prec = np.divide(tps, tps + fps, out=np.ones_like(tps), where=(tps + fps) > 0)
    rec = tps / P
    return float(np.sum(np.diff(rec) * prec[1:]))


def tpr_at_fpr(y, s, max_fpr: float) -> float | None:
    """Largest TPR reachable with FPR <= max_fpr (no interpolation: an
    operating point you can actually pick)."""
    y, s = _arrays(y, s)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max())


def accuracies(y, s, threshold: float) -> dict[str, float | None]:
    """Accuracy on real, on AI, their mean, and overall; AI when s >= threshold."""
    y, s = _arrays(y, s)
    pred = s >= threshold
    real, ai = y == 0, y == 1
    acc_real = float(np.mean(~pred[real])) if real.any() else None
    acc_ai = float(np.mean(pred[ai])) if ai.any() else None
    parts = [a for a in (acc_real, acc_ai) if a is not None]
    return {"acc_real": acc_real, "acc_ai": acc_ai,
            "acc_mean": float(np.mean(parts)) if len(parts) == 2 else None,
            "acc": float(np.mean(pred == (y == 1))) if y.size else None}


def best_threshold(y, s) -> tuple[float | None, float | None]:
    """Threshold maximising the mean of real and AI accuracy (balanced
    accuracy) on this very data: an optimistic reference, never a shipped value."""
    y, s = _arrays(y, s)
    if y.size == 0 or y.min() == y.max():
        return None, None
    fpr, tpr, thr = roc_curve(y, s)
    bal = (tpr + (1 - fpr)) / 2
    i = int(np.argmax(bal))
    t = float(thr[i]) if np.isfinite(thr[i]) else float(s.max()) + 1e-9
    return t, float(bal[i])


def ece(y, p, n_bins: int = 15) -> float | None:
    """Expected calibration error of P(AI): equal-width bins over [0, 1],
    |mean label - mean p| weighted by bin share."""
    y, p = _arrays(y, p)
    if y.size == 0:
        return None
    bins = reliability_bins(y, p, n_bins)
    return float(sum(b["n"] * abs(b["frac_ai"] - b["mean_p"]) for b in bins) / y.size)


def reliability_bins(y, p, n_bins: int = 15) -> list[dict[str, float]]:
    y, p = _arrays(y, p)
    _no_nan(p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = which == b
        if m.any():
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                        "mean_p": float(p[m].mean()), "frac_ai": float(y[m].mean())})
    return out


def rate_upper_bound(k: int, n: int, confidence: float = 0.95) -> float | None:
    """Clopper-Pearson one-sided upper confidence bound on a rate seen k times
    in n: the u with P(Binomial(n, u) <= k) = 1 - confidence (1 - 0.05^(1/n)
    for k = 0: 0 of 10 real photos called AI still allows a true rate of 26%).
    None for n = 0. Bisection on the binomial CDF in log space, so evaluation
    needs no scipy."""
    if n <= 0:
        return None
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    logc = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]

    def cdf(u: float) -> float:
        lu, l1u = math.log(u), math.log1p(-u)
        terms = [c + i * lu + (n - i) * l1u for i, c in enumerate(logc)]
        top = max(terms)
        return math.exp(top) * sum(math.exp(t - top) for t in terms)

    lo, hi = k / n, 1.0   # the CDF falls from >= 1/2 at k/n towards 0 at 1
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def confusion_matrix(true: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Rows = true class, columns = predicted class, counts."""
    if labels is None:
        labels = sorted(set(true) | set(pred))
    index = {l: i for i, l in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, q in zip(true, pred):
        if t in index and q in index:
            m[index[t], index[q]] += 1
    return {"labels": list(labels), "matrix": m.tolist()}


def binary_metrics(y, p, threshold: float = 0.5) -> dict[str, Any]:
    """Every summary number for one score column. p is P(AI) in [0, 1]
    (ECE needs a probability; the ranking metrics would accept any score)."""
    y, p = _arrays(y, p)
    _no_nan(p)   # before the accuracies, where a NaN fails ">= threshold" and counts as a right call on a real photo
    out: dict[str, Any] = {"n": int(y.size), "n_real": int((y == 0).sum()), "n_ai": int((y == 1).sum()),
                           "threshold": float(threshold)}
    out.update(accuracies(y, p, threshold))
    t, _ = best_threshold(y, p)
    out["best_threshold"] = t
    best = accuracies(y, p, t) if t is not None else {}
    out["best_acc_real"] = best.get("acc_real")
    out["best_acc_ai"] = best.get("acc_ai")
    out["best_acc_mean"] = best.get("acc_mean")
    out["ap"] = average_precision(y, p)
    out["auc"] = roc_auc(y, p)
    out["auc_ci95"] = auc_interval(out["auc"], out["n_ai"], out["n_real"])
    out["tpr_at_fpr_1"] = tpr_at_fpr(y, p, 0.01)
    out["tpr_at_fpr_5"] = tpr_at_fpr(y, p, 0.05)
    out["ece"] = ece(y, p)
    return out


def logit_metrics(y, logits, temperature: float = 1.0, ndigits: int | None = None) -> dict[str, Any]:
    """The summary a trainer stores in a head manifest for one split of a
    logit-scored head (linear probe, MPFT): n, accuracy, real_accuracy,
    ai_accuracy, balanced_accuracy (AI when logit / T >= 0, i.e. p_ai >= 0.5),
    nll of sigmoid(logit / T), and auc when both classes are present.
    `ndigits` rounds the floats for display. Built on the functions above, so
    a head's numbers and ``aiidetect eval``'s agree by construction."""
    y, z = _arrays(y, logits)
    z = z / float(temperature)
    acc = accuracies(y, z, 0.0)
    out: dict[str, Any] = {"n": int(y.size), "accuracy": acc["acc"], "real_accuracy": acc["acc_real"],
                           "ai_accuracy": acc["acc_ai"], "balanced_accuracy": acc["acc_mean"]}
    if y.size:
        out["nll"] = float(np.mean(np.logaddexp(0.0, z) - y * z))
    # (a diverged head's NaN logits: no AUC rather than a refusal in the middle of training)
    auc = roc_auc(y, z) if not np.isnan(z).any() else None
    if auc is not None:
        out["auc"] = auc
    if ndigits is not None:
        out = {k: round(v, ndigits) if isinstance(v, float) else v for k, v in out.items()}
    return out


def clean(x: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively, for JSON."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return clean(x.tolist())
    return x
