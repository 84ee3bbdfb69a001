"""Score -> calibrated logit -> probability: the one home of ``logit``,
``sigmoid`` and the :class:`Calibrator` every head manifest and the fusion
model store.

A calibrator maps a detector's raw number x (its logit-like ``score``, or
logit(p_ai) when it gives no score) to a calibrated logit:

- temperature: z = x / T           (one parameter; keeps 0 at 0, fixes over-confidence)
- platt:       z = a * x + b       (logistic regression on one feature)
- isotonic:    p = f(x) monotone   (non-parametric; needs more data, clipped away from 0/1)

Imports nothing from aiidetect, so serving code (fusion, detectors) and
fitting code (calibration) can both use it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

METHODS = ("temperature", "platt", "isotonic")
P_EPS = 1e-4  # isotonic output never claims certainty


def logit(p, eps: float = 1e-6):
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def sigmoid(z):
    z = np.clip(np.asarray(z, dtype=np.float64), -50, 50)
    return 1.0 / (1.0 + np.exp(-z))



# Scalar forms for per-file arithmetic (fusion): plain floats through math, so
# a record's numbers do not depend on numpy's vectorised log/exp, which may
# differ from libm in the last bit.
def logit_float(p: float, eps: float = 1e-6) -> float:
    p = min(max(float(p), eps), 1 - eps)
    return math.log(p / (1 - p))


def sigmoid_float(z: float) -> float:
    z = max(min(z, 50.0), -50.0)
    return 1.0 / (1.0 + math.exp(-z))

def _nll(z: np.ndarray, y: np.ndarray) -> float:
    # log(1 + e^z) - y z, numerically stable
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


@dataclass
class Calibrator:
    method: str = "identity"
    params: dict[str, Any] = field(default_factory=dict)

    def logit(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.method == "temperature":
            return x / float(self.params["T"])
        if self.method == "platt":
            return float(self.params["a"]) * x + float(self.params["b"])
        if self.method == "isotonic":
            xs, ps = np.asarray(self.params["x"], float), np.asarray(self.params["p"], float)
            return logit(np.clip(np.interp(x, xs, ps), P_EPS, 1 - P_EPS))
        return x

    def prob(self, x) -> np.ndarray:
        return sigmoid(self.logit(x))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **self.params}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Calibrator":
        if not d:
            return cls()
        d = dict(d)
        method = d.pop("method", "identity")
        for k in ("fitted_on", "n", "nll_before", "nll_after"):
            d.pop(k, None)
        return cls(method, d)


def fit_temperature(x, y) -> Calibrator:
    """T > 0 minimising the log loss of sigmoid(x / T); golden-section search
    on log T (the loss is unimodal in T for a fixed sign of x*y)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    f = lambda lt: _nll(x / math.exp(lt), y)  # noqa: E731
    lo, hi = math.log(1e-3), math.log(1e3)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(100):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    return Calibrator("temperature", {"T": float(math.exp((lo + hi) / 2))})


def fit_platt(x, y, max_iter: int = 100) -> Calibrator:
    """Newton's method on the logistic log loss, with Platt's target smoothing
    (t+ = (N+ + 1)/(N+ + 2), t- = 1/(N- + 2)) so separable data stays finite."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n_pos, n_neg = y.sum(), (1 - y).sum()
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.stack([x, np.ones_like(x)], 1)
    w = np.zeros(2)
    for _ in range(max_iter):
        p = sigmoid(X @ w)
        grad = X.T @ (p - t)
        H = X.T @ (X * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(H, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return Calibrator("platt", {"a": float(w[0]), "b": float(w[1])})


def fit_isotonic(x, y) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression

    x, y = np.asarray(x, float), np.asarray(y, float)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
    return Calibrator("isotonic", {"x": [float(v) for v in iso.X_thresholds_],
                                   "p": [float(v) for v in iso.y_thresholds_]})


def fit(x, y, method: str = "temperature") -> Calibrator:
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; one of {', '.join(METHODS)}")
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.size == 0 or y.min() == y.max():
        raise ValueError("calibration needs labelled scores from both classes")
    return {"temperature": fit_temperature, "platt": fit_platt, "isotonic": fit_isotonic}[method](x, y)
