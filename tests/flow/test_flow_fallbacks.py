"""CLIP-Flow never falls back silently: every fallback is a recorded warning
in the head manifest and in the training summary, and a head that would point
the wrong way is not written."""
from __future__ import annotations

import json

import numpy as np
import pytest

from aiidetect.flow.train import MeaninglessHead, calibrate

from aiidetect.testing import layouts as L


def test_proxies_more_likely_than_reals_fail_clearly():
    rng = np.random.default_rng(0)
    reals = rng.normal(10, 1, 200)
    with pytest.raises(MeaninglessHead, match="more likely than held-out real photos"):
        calibrate(reals, rng.normal(8, 1, 200))  # proxies: lower NLL = more likely


def test_slope_not_fitted_is_said():
    reals = np.random.default_rng(0).normal(10, 1, 50)
    cal = calibrate(reals, None)
    assert "not fitted" in cal["slope_note"] and cal["slope"] == 2.0
    good = calibrate(reals, np.random.default_rng(1).normal(11, 1, 50))
    assert "slope_note" not in good and 0.25 <= good["slope"] <= 20


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow-photos")
    L.fill(root, 12, False, 7)
    return root


def test_every_proxy_failing_is_a_recorded_warning(photos, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import aiidetect.flow.train as T
    from aiidetect.cli import app

    def broken(*a, **k):
        raise RuntimeError("proxy maker broken on purpose")

    monkeypatch.setattr(T, "make_proxy_pixels", broken)
    out = tmp_path / "h"
    r = CliRunner().invoke(app, ["train", "flow", "--real", str(photos), "--backbone-config", "tiny-vit",
                                 "--out", str(out), "--steps", "3", "--blocks", "1", "--hidden", "8",
                                 "--proxies-per-image", "1", "--proxy-kinds", "periodic_peaks", "--no-cache"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert any("maximum likelihood on real photos alone" in w for w in m["warnings"]), m["warnings"]
    assert any("slope not fitted" in w for w in m["warnings"]), m["warnings"]
    assert "warning: no proxy could be made" in r.output  # the summary says it too


def test_paper_recipe_is_unpaired_and_recorded(photos, tmp_path):
    from typer.testing import CliRunner

    from aiidetect.cli import app

    out = tmp_path / "h"
    r = CliRunner().invoke(app, ["train", "flow", "--real", str(photos), "--backbone-config", "tiny-vit",
                                 "--recipe", "paper", "--out", str(out), "--steps", "3", "--blocks", "1",
                                 "--hidden", "8", "--proxies-per-image", "1", "--proxy-kinds", "periodic_peaks",
                                 "--no-cache"])
    m = json.loads((out / "manifest.json").read_text()) if r.exit_code == 0 else None
    # a head pointing the wrong way after 3 steps is refused (exit 2) rather than written: both are honest
    assert r.exit_code == 0 or (r.exit_code == 2 and "more likely" in r.output), r.output
    if m is not None:
        assert m["params"]["fit"]["paired"] is False and "mean u(batch reals)" in m["params"]["objective"]
