"""train.checks.check_features: the rule every trainer applies to the features it is about to fit."""
from __future__ import annotations

import numpy as np
import pytest

from aiidetect.train import checks


@pytest.mark.parametrize("rows", [4096, 3])
def test_block_by_block_is_the_whole_array_rule(monkeypatch, rows):
    """Worked out a block of rows at a time (a float64 copy of a whole large set took gigabytes): the
    same decision, and the same first bad row, as on the whole array."""
    monkeypatch.setattr(checks, "_ROWS", rows)
    rng = np.random.default_rng(0)
    paths = [f"{k}.png" for k in range(10)]
    checks.check_features(rng.normal(3, 1, (10, 16)).astype(np.float32), paths)
    flat = (np.ones((10, 16)) + rng.normal(0, 1e-3, (10, 16))).astype(np.float32)
    whole = np.asarray(flat, np.float64)
    share = whole.std(axis=0).max() / np.sqrt(np.mean(whole ** 2))  # what the whole array gives
    with pytest.raises(ValueError, match=rf"\(almost\) the same features \(largest spread \S+, {share:.2g} of"):
        checks.check_features(flat, paths)
    X = rng.normal(0, 1, (10, 16))
    X[7, 3], X[8, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"^2 of the 10 training images give non-finite features \(first: 7.png\)"):
        checks.check_features(X, paths)
