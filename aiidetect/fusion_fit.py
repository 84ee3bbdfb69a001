"""Fitting the fusion weights: an L2-regularised logistic regression with
bounds on the weights, solved as one bounded convex problem.

The weights obey two rules (see ``calibration.fit_fusion``): a detector's
weight is >= 0 (a detector that looks inverted on the calibration data is
dropped, not flipped) and the soft-evidence weight lies in [0, 1] (calibration
data may tell us to trust metadata less than its stated likelihood ratio,
never more). The objective is convex, so the bounded optimum is unique;
L-BFGS-B with the exact gradient finds it. An active-set loop that fixes
violating weights one round at a time and never releases them can stop at a
point that is not the optimum; :func:`kkt_violation` measures how far any
answer is from it.

Serving never imports this module (it needs scipy, from the ``eval`` extra).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .probability import sigmoid


def _objective(X: np.ndarray, y: np.ndarray, C: float):
    """f(theta) = sum log(1 + e^z) - y z + |w|^2 / (2C), z = X w + b (bias
    unpenalised: scikit-learn's objective divided by C), and its gradient."""
    A = np.hstack([X, np.ones((len(y), 1))])
    reg = np.r_[np.full(X.shape[1], 1.0 / C), 0.0]

    def f(theta):
        z = A @ theta
        p = sigmoid(z)
        val = float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(reg * theta * theta))
        return val, A.T @ (p - y) + reg * theta

    return f


def fusion_bounds(n_cols: int, used: Sequence[int]) -> list[tuple[float | None, float | None]]:
    """Bounds for (weights..., bias): the last column is the soft evidence
    ([0, 1]), the others detectors ([0, inf)); a column no row uses is fixed at 0."""
    k = n_cols - 1
    used = set(used)
    out: list[tuple[float | None, float | None]] = []
    for j in range(n_cols):
        if j not in used:
            out.append((0.0, 0.0))
        elif j == k:
            out.append((0.0, 1.0))
        else:
            out.append((0.0, None))
    return out + [(None, None)]


def constrained_logistic_fit(X, y, used: Sequence[int], C: float = 1.0) -> tuple[np.ndarray, float]:
    """The bounded optimum of the fusion objective: (weights, bias)."""
    from scipy.optimize import minimize

    X = np.asarray(X, float).reshape(len(y), -1)
    y = np.asarray(y, float)
    f = _objective(X, y, C)
    bounds = fusion_bounds(X.shape[1], used)
    x0 = np.zeros(X.shape[1] + 1)
    res = minimize(f, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    theta = np.array(res.x, float)
    # Clip what the line search leaves a hair outside a bound (and exact zeros for unused columns).
    for j, (lo, hi) in enumerate(bounds):
        if lo is not None:
            theta[j] = max(theta[j], lo)
        if hi is not None:
            theta[j] = min(theta[j], hi)
    return theta[:-1], float(theta[-1])


def kkt_violation(X, y, used: Sequence[int], C: float, w, b) -> float:
    """How far (w, b) is from the bounded optimum: the largest projected
    gradient (0 exactly at the optimum of this convex problem)."""
    X = np.asarray(X, float).reshape(len(y), -1)
    theta = np.r_[np.asarray(w, float), float(b)]
    _, g = _objective(X, np.asarray(y, float), C)(theta)
    worst = 0.0
    for j, (lo, hi) in enumerate(fusion_bounds(X.shape[1], used)):
        if lo is not None and hi is not None and lo == hi:
            continue
        gj = g[j]
        if lo is not None and theta[j] <= lo + 1e-12:
            gj = min(gj, 0.0)   # at a lower bound only a descent direction upwards counts
        if hi is not None and theta[j] >= hi - 1e-12:
            gj = max(gj, 0.0)
        worst = max(worst, abs(gj))
    return worst


def objective(X, y, C: float, w, b) -> float:
    X = np.asarray(X, float).reshape(len(y), -1)
    return _objective(X, np.asarray(y, float), C)(np.r_[np.asarray(w, float), float(b)])[0]
