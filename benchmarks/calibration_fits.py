"""The evidence behind the calibration fits in aiidetect/probability.py.

1. Platt for linear probes: probability.fit_platt (Platt's target smoothing,
   no penalty) against the L2-penalised logistic regression at C=1 that
   linear probes used before, by held-out log loss on synthetic out-of-fold
   logits at several logit scales.
2. Temperature for MPFT: probability.fit_temperature (golden section on log T)
   against MPFT's earlier log grid on [0.02, 50] plus a +-5% refinement, by the
   log loss each reaches on the data it is fitted to.

Usage:  python benchmarks/calibration_fits.py [--cases 300] [--seed 0]
Needs scikit-learn (the ``eval`` extra). CPU only, a few seconds.
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from aiidetect.probability import fit_platt, fit_temperature


def nll(z, y) -> float:
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def platt_cases(rng, cases: int):
    from sklearn.linear_model import LogisticRegression

    rows = []
    for _ in range(cases):
        n = int(rng.integers(20, 120))
        sep, scale = rng.uniform(0.5, 4.0), float(rng.choice([0.3, 1.0, 5.0, 20.0]))

        def draw(m):
            y = rng.integers(0, 2, m)
            return scale * (rng.normal(0, 1, m) + sep * (y - 0.5)), y

        x, y = draw(2 * n)
        xt, yt = draw(20000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lr = LogisticRegression(C=1.0, max_iter=1000).fit(x.reshape(-1, 1), y)
        c = fit_platt(x, y).params
        rows.append((scale, nll(lr.coef_[0, 0] * xt + lr.intercept_[0], yt), nll(c["a"] * xt + c["b"], yt)))
    return np.array(rows)


def grid_temperature(x, y) -> float:
    def f(t):
        return nll(x / t, y)

    grid = np.exp(np.linspace(np.log(0.02), np.log(50.0), 200))
    best = min(grid, key=f)
    return float(min(best * np.exp(np.linspace(-0.05, 0.05, 41)), key=f))


def temperature_cases(rng, cases: int):
    rows = []
    for _ in range(cases):
        n = int(rng.integers(6, 200))
        y = rng.integers(0, 2, n).astype(float)
        x = (2 * y - 1) * rng.gamma(2.0, 1.0, n) * rng.choice([0.05, 1.0, 20.0]) + rng.normal(0, 1.0, n)
        t_old, t_new = grid_temperature(x, y), fit_temperature(x, y, (0.02, 50.0)).params["T"]
        rows.append((nll(x / t_old, y), nll(x / t_new, y), not 0.02 <= t_old <= 50.0))
    return np.array(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)

    r = platt_cases(rng, a.cases)
    print(f"Platt, held-out log loss over {a.cases} synthetic sets (lower is better)")
    print(f"  {'logit scale':>11}  {'L2 C=1':>8}  {'fit_platt':>9}")
    for s in sorted(set(r[:, 0])):
        m = r[:, 0] == s
        print(f"  {s:>11g}  {r[m, 1].mean():8.5f}  {r[m, 2].mean():9.5f}")
    print(f"  {'all':>11}  {r[:, 1].mean():8.5f}  {r[:, 2].mean():9.5f}   fit_platt lower in "
          f"{100 * np.mean(r[:, 2] < r[:, 1]):.0f}% of sets")

    t = temperature_cases(rng, a.cases)
    inside = t[:, 2] == 0
    print(f"\nTemperature, in-sample log loss over {a.cases} synthetic sets, T in [0.02, 50]")
    print(f"  grid+refine {t[inside, 0].mean():.6f}  golden section {t[inside, 1].mean():.6f}  "
          f"(golden <= grid + 1e-12 in {100 * np.mean(t[inside, 1] <= t[inside, 0] + 1e-12):.0f}% of "
          f"{int(inside.sum())} sets; the grid's refinement stepped outside [0.02, 50] in {int((~inside).sum())})")


if __name__ == "__main__":
    main()
