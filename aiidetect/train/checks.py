"""Checks on the frozen features a trainer is about to fit, shared by `train linear` and `train flow`.

A fit on features that carry nothing still "succeeds": identical or blank images gave a probe of zeros
that scored every file 0.5 with status ok, and a flow whose standardisation divided by zero ended in
sklearn's "Input contains NaN."; images far smaller than the model input (zero-padded to it) gave
features that differ by 4e-4 of their size, which a probe scaled by 2e5 and a bfloat16 scan then turned
into p_ai = 1.0 for its own real training images. Such data ends the run with one line instead.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# The features' largest per-dimension spread must exceed this share of their size (root mean square).
# Photos give far more (benchmarks/feature_spread.py; random weights, the OpenAI ones are not on the machine
# it ran on): 5 real + 5 AI dev-set images 0.85 on tiny-vit, 1.85 on ViT-L-14 (center-crop, embed); the
# lowest measured, the first block's cls_0 output under resize-center-crop, 0.23 and 0.36.
# bfloat16, the scan's default dtype on CPUs with native bf16, keeps about 2**-8 = 0.004 of a value,
# so differences below 0.01 of it are mostly rounding.
MIN_RELATIVE_SPREAD = 1e-2
_ROWS = 4096


def _blocks(X: np.ndarray):
    # float64 a block of rows at a time: a whole float64 copy, its squares and deviations of 50,000
    # photos' features (cls_ outputs concatenated) took gigabytes beside the features.
    return (np.asarray(X[i:i + _ROWS], dtype=np.float64) for i in range(0, len(X), _ROWS))


def relative_spread(X: np.ndarray) -> tuple[float, float]:
    """(largest per-dimension standard deviation between the rows, that as a share of the features'
    root mean square): what check_features compares with MIN_RELATIVE_SPREAD."""
    X = np.asarray(X)
    mean = sum(b.sum(axis=0) for b in _blocks(X)) / len(X)
    scale = float(np.sqrt(sum(float(np.square(b).sum()) for b in _blocks(X)) / X.size))
    spread = float(np.sqrt(sum(np.square(b - mean).sum(axis=0) for b in _blocks(X)) / len(X)).max())
    return spread, (spread / scale if scale else 0.0)


def check_features(X: np.ndarray, paths: Sequence[str], what: str = "training images") -> None:
    """ValueError (one line, for the user) when `X` (one row per path) holds a non-finite number or
    does not vary enough between images to learn anything from."""
    X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        return
    bad = np.concatenate([np.flatnonzero(~np.isfinite(b).all(axis=1)) + k * _ROWS for k, b in enumerate(_blocks(X))])
    if len(bad):
        raise ValueError(f"{len(bad)} of the {len(X)} {what} give non-finite features (first: {paths[bad[0]]}): "
                         f"a head fitted on them would score garbage; use --dtype float32 or leave those files out")
    if len(X) < 2:
        return
    spread, share = relative_spread(X)
    if share <= MIN_RELATIVE_SPREAD:
        raise ValueError(f"the {len(X)} {what} give (almost) the same features (largest spread {spread:.2g}, "
                         f"{share:.2g} of their size; at least {MIN_RELATIVE_SPREAD:g} is "
                         f"needed): identical or blank images, or images far smaller than the model input, which "
                         f"are zero-padded to it; a head fitted on them would score garbage")
