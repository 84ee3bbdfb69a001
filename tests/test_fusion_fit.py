"""The fusion weights are the bounded optimum of a convex problem."""
import numpy as np
import pytest

from aiidetect import calibration as C
from aiidetect.fusion_fit import constrained_logistic_fit, fusion_bounds, kkt_violation, objective


def _case(seed: int, n: int = 120, d: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = rng.choice([-1.0, 1.0], d)            # some detectors look inverted
    X = rng.normal(0, 1, (n, d)) + np.outer(2 * y - 1, sign * rng.uniform(0.2, 2.0, d))
    ev = (2 * y - 1) * rng.uniform(0.0, 6.0) + rng.normal(0, 1, n)   # soft evidence, often "too strong"
    X = np.c_[X, ev]
    used = list(range(X.shape[1]))
    return X, y, used


@pytest.mark.parametrize("seed", range(40))
def test_kkt_holds_at_the_answer(seed):
    X, y, used = _case(seed)
    w, b = constrained_logistic_fit(X, y, used, C=1.0)
    assert (w[:-1] >= 0).all() and 0.0 <= w[-1] <= 1.0
    assert kkt_violation(X, y, used, 1.0, w, b) < 1e-4


def test_interior_optimum_equals_unconstrained_regression():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    X = np.c_[rng.normal(0, 1, 300) + 1.5 * (2 * y - 1), 0.3 * (2 * y - 1) + rng.normal(0, 1, 300)]
    w_u, b_u = C.logistic_regression(X, y, C=0.5)
    assert w_u[0] > 0 and 0 < w_u[1] < 1          # the bounds are not active here
    w, b = constrained_logistic_fit(X, y, [0, 1], C=0.5)
    assert np.allclose(w, w_u, atol=1e-5) and abs(b - b_u) < 1e-5


def test_never_worse_than_any_feasible_point():
    X, y, used = _case(7)
    w, b = constrained_logistic_fit(X, y, used, C=1.0)
    best = objective(X, y, 1.0, w, b)
    rng = np.random.default_rng(0)
    for _ in range(300):
        w2 = np.abs(w + rng.normal(0, 0.3, w.size))
        w2[-1] = min(w2[-1], 1.0)
        assert objective(X, y, 1.0, w2, b + rng.normal(0, 0.3)) >= best - 1e-9


def test_unused_columns_stay_zero_and_the_evidence_cap_binds():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    X = np.c_[np.zeros(200), 4.0 * (2 * y - 1) + rng.normal(0, 0.5, 200)]   # evidence alone, very reliable
    w, b = constrained_logistic_fit(X, y, [1], C=10.0)
    assert w[0] == 0.0 and w[1] == pytest.approx(1.0)   # would exceed 1 without the bound
    assert fusion_bounds(2, [1]) == [(0.0, 0.0), (0.0, 1.0), (None, None)]
    assert kkt_violation(X, y, [1], 10.0, w, b) < 1e-4
