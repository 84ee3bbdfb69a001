"""Score -> calibrated logit -> probability: the one home of ``logit``,
``sigmoid`` and the :class:`Calibrator` every head manifest and the fusion
model store.

A calibrator maps a detector's raw number x (its logit-like ``score``, or
logit(p_ai) when it gives no score) to a calibrated logit:

- temperature: z = x / T           (one parameter; keeps 0 at 0, fixes over-confidence)
- platt:       z = a * (x - x0) + b  (logistic regression on one feature; x0 = 0 unless set)
- isotonic:    p = f(x) monotone   (non-parametric; needs more data, clipped away from 0/1)
- none:        z = x

Imports nothing from aiidetect, so serving code (fusion, detectors) and
fitting code (calibration) can both use it.
"""
from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

METHODS = ("temperature", "platt", "isotonic")  # what `aiidetect calibrate` fits
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


# The one calibration format (docs/heads.md "Calibration"): the block a head
# manifest stores under "calibration" and the fusion model stores per detector.
#   {"method": "none"}
#   {"method": "temperature", "T": 1.7}                    z = x / T
#   {"method": "platt", "a": 1.2, "b": -0.3, "x0": 0.0}    z = a * (x - x0) + b
#   {"method": "isotonic", "x": [...], "p": [...]}         p = interp(x)
# plus any provenance keys (fitted_on, n, note, ...), which the reader ignores.
PARAMS = {"none": (), "temperature": ("T",), "platt": ("a", "b", "x0"), "isotonic": ("x", "p")}
# The isotonic blocks last read, by the lists' identity: (id(x), id(p)) -> (x, p, copies of them then, the
# Calibrator or why not). Holding the lists keeps their ids from being reused while an entry lives.
_ISOTONIC_SEEN: dict[tuple[int, int], tuple[list, list, list, list, "Calibrator | str"]] = {}
# What the cache may hold, in knots: each entry keeps a copy of its block's values.
_ISOTONIC_READ_KNOTS = 2_000_000
# Taken to add to the cache: counting its knots walks the dict, and another thread's insert or clear
# meanwhile raised "dictionary changed size during iteration" out of fuse.
_ISOTONIC_LOCK = threading.Lock()
# How blocks written before this format name the same maps.
FLOW_LEGACY = "fpr-quantile+logistic-slope"


@dataclass
class Calibrator:
    """A detector's raw number x -> calibrated logit -> p_ai. Every family and
    the fusion model read their manifest's calibration block through
    :meth:`from_dict`, so there is one place that knows the format."""

    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)

    def logit(self, x):
        """Array in, float64 array out; a Python float in, a float out. The
        expressions are the ones every family used before (x / T and
        a * (x - x0) + b with x0 = b = 0 when absent), so old heads give the
        same bits."""
        scalar = isinstance(x, (int, float))
        x = float(x) if scalar else np.asarray(x, dtype=np.float64)
        if self.method == "temperature":
            return x / float(self.params["T"])
        if self.method == "platt":
            p = self.params
            return float(p["a"]) * (x - float(p.get("x0", 0.0))) + float(p.get("b", 0.0))
        if self.method == "isotonic":
            kx, kp = self.params["x"], self.params["p"]
            knots = self.__dict__.get("_knots")
            if knots is None or knots[0] is not kx or knots[1] is not kp:
                knots = (kx, kp, np.asarray(kx, float), np.asarray(kp, float))
                # once per calibrator, not per file (a list of 500,000 knots took 20 ms to convert), but
                # only for knots that cannot change under it: a list a caller edits in place would be
                # served as it was
                if isinstance(kx, tuple) and isinstance(kp, tuple):
                    self.__dict__["_knots"] = knots
            xs, ps = knots[2], knots[3]
            z = logit(np.clip(np.interp(x, xs, ps), P_EPS, 1 - P_EPS))
            return float(z) if scalar else z
        return x

    def prob(self, x):
        """p_ai: one value per file goes through math (sigmoid_float), a batch
        through numpy (sigmoid), each path the same for the torch and the ONNX
        runtime of a family."""
        z = self.logit(x)
        return sigmoid_float(z) if isinstance(z, float) else sigmoid(z)

    def to_dict(self) -> dict[str, Any]:
        # isotonic knots read from a block are tuples (shared, so frozen); the format writes lists
        return {"method": self.method, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Calibrator":
        """Any calibration block aiidetect ever wrote: this format, MPFT's
        {"temperature": T}, CLIP-Flow's fpr-quantile+logistic-slope (slope
        and threshold_z on the standardised NLL), and "identity" for none.
        A block it cannot read (unknown method, missing or non-finite
        parameter, not a mapping) raises ValueError naming the problem, never
        a silent identity: manifests are files anyone can edit."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ValueError(f"a calibration block is a JSON object, not {type(d).__name__}")
        method = d.get("method") or "none"
        if not isinstance(method, str):
            raise ValueError(f"calibration method must be a name, not {method!r}")
        if not d.get("method") and ("temperature" in d or "T" in d):
            method = "temperature"  # MPFT blocks that only carried the temperature
        if method == "identity":
            method = "none"
        elif method == FLOW_LEGACY or (not d.get("method") and "slope" in d and "threshold_z" in d):
            # CLIP-Flow before this format: p = sigmoid(slope * (z - threshold_z)).
            return cls("platt", {"a": _finite(d, "slope"), "b": 0.0, "x0": _finite(d, "threshold_z")})
        if method == "temperature":
            # "temperature" is MPFT's key; a missing or zero T meant no scaling there.
            T = _finite({"T": d.get("T") or d.get("temperature") or 1.0}, "T")
            if T <= 0:
                raise ValueError(f"calibration temperature must be positive, not {T!r}")
            return cls(method, {"T": T})
        if method not in PARAMS:
            raise ValueError(f"unknown calibration method {method!r}; one of {', '.join(PARAMS)}")
        if method == "platt":
            if "a" not in d:
                raise ValueError("a platt calibration needs its slope 'a'")
            return cls(method, {k: _finite(d, k) for k in PARAMS[method] if k in d})
        if method == "isotonic":
            xs, ps = d.get("x"), d.get("p")
            if not isinstance(xs, list) or not isinstance(ps, list) or not xs or len(xs) != len(ps):
                raise ValueError("an isotonic calibration needs knots 'x' and 'p' of the same, non-zero length")
            # fuse reads a fusion model's blocks for every file: checking each knot again cost 11 ms a file
            # for 5,000 knots, nearly a second for 500,000. The same knots give the same calibrator, or
            # the same refusal (fuse drops an unreadable block per file: 200,000 knots with the last out
            # of order cost 0.25 s a file). The same lists as last time, still equal to their copies then
            # (0.2 ms for 200,000 knots), are the same knots: a caller who edits a model's list in place
            # puts another value there, and must get the edit. (Only one of another type with an equal
            # value, True for 1.0, passes; it is read as 1.0.)
            seen = _ISOTONIC_SEEN.get((id(xs), id(ps)))
            if seen is not None and seen[0] is xs and seen[1] is ps and seen[2] == xs and seen[3] == ps:
                hit = seen[4]
            else:
                try:
                    hit = cls._isotonic(xs, ps)
                except ValueError as exc:
                    hit = str(exc)
                if len(xs) <= _ISOTONIC_READ_KNOTS:
                    _remember(xs, ps, hit)
            if isinstance(hit, str):
                raise ValueError(hit)
            # what is remembered serves every later read of these lists (other threads too): each caller
            # gets its own params to change, over the same read-only knots
            own = cls(hit.method, dict(hit.params))
            own.__dict__["_knots"] = hit.__dict__["_knots"]
            return own
        return cls(method, {})

    @classmethod
    def _isotonic(cls, xs: list, ps: list) -> "Calibrator":
        x = [_finite({"x": v}, "x") for v in xs]
        p = [_finite({"p": v}, "p") for v in ps]
        # What an isotonic fit always writes; np.interp reads unsorted knots
        # as garbage, and falling or out-of-range p turns the detector around.
        if any(b < a for a, b in zip(x, x[1:])):
            raise ValueError("isotonic knots 'x' must be in increasing order")
        if any(b < a for a, b in zip(p, p[1:])) or min(p) < 0 or max(p) > 1:
            raise ValueError("isotonic 'p' must be non-decreasing probabilities in [0, 1]")
        # tuples and read-only arrays: shared by every later read of these lists, so nobody may edit them
        cal = cls("isotonic", {"x": tuple(x), "p": tuple(p)})
        arrays = np.asarray(x, float), np.asarray(p, float)
        for a in arrays:
            a.flags.writeable = False
        cal.__dict__["_knots"] = (cal.params["x"], cal.params["p"], *arrays)
        return cal

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "Calibrator":
        return cls.from_dict(manifest.get("calibration"))


def _remember(xs: list, ps: list, hit: "Calibrator | str") -> None:
    """Remember what these lists read as, emptying the cache first when it would exceed 64 entries or
    _ISOTONIC_READ_KNOTS knots. The copies are made before the lock: no caller's code runs under it."""
    entry = (xs, ps, list(xs), list(ps), hit)
    with _ISOTONIC_LOCK:
        if (len(_ISOTONIC_SEEN) >= 64
                or sum(len(v[2]) for v in _ISOTONIC_SEEN.values()) + len(xs) > _ISOTONIC_READ_KNOTS):
            _ISOTONIC_SEEN.clear()
        _ISOTONIC_SEEN[(id(xs), id(ps))] = entry


def is_finite_number(v: Any) -> bool:
    """A real number, not a bool, not NaN or infinite (numpy scalars included)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def platt_targets(y) -> np.ndarray:
    """Platt's smoothed targets, (N+ + 1)/(N+ + 2) for AI and 1/(N- + 2) for
    real: what n labelled images can support (Laplace's rule). On separable
    calibration scores hard 0/1 targets drive the fit to certainty -- the
    temperature to its 1e-3 bound, isotonic steps to 0 and 1 -- and the
    fusion's bias then lands anywhere in the gap, so an image scored between
    the two classes (a detector's 50/50) came out ai-generated at p 0.9+."""
    y = np.asarray(y, float)
    n_pos, n_neg = float((y > 0.5).sum()), float((y <= 0.5).sum())
    return np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))


def _finite(d: Mapping[str, Any], key: str) -> float:
    v = d.get(key)
    if not is_finite_number(v):
        raise ValueError(f"calibration parameter {key!r} must be a finite number, not {v!r}")
    return float(v)


def fit_temperature(x, y, bounds: tuple[float, float] = (1e-3, 1e3)) -> Calibrator:
    """T in `bounds` minimising the log loss of sigmoid(x / T), by
    golden-section search on log T. The loss is convex in 1/T (a logistic loss
    in one linear parameter), hence unimodal in log T, so the search finds the
    bounded optimum; the grid-plus-refinement MPFT used before reached ~0.25%
    of T and stepped outside its own range on near-separable data
    (benchmarks/calibration_fits.py: the same or lower log loss in every
    synthetic set where it stayed inside).

    The bounds are the caller's policy: the fusion model's calibration data
    may need strong rescaling, so it allows 1e-3..1e3; an MPFT head fits on
    its small selection split, where separable data would push T to the bound
    and make every later answer near-certain, so it passes (0.02, 50)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    f = lambda lt: _nll(x / math.exp(lt), y)  # noqa: E731
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
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
    t = platt_targets(y)
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
