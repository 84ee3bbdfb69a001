"""The detector registry, the shared head builder and each family's one
results function (docs/families.md). Fast: no backbone is built; the head
builder runs on stand-in heads and a stand-in backbone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

import aiidetect.detectors as registry
from aiidetect.detectors import (DEFAULT_DETECTORS, Detector, DetectorUnavailable, Family, RunContext,
                                 UnavailableDetector, create_detectors)
from aiidetect.detectors.heads import HeadsUnavailable, build_heads
from aiidetect.records import DetectorResult


def test_registry_lists_the_families_and_every_target_resolves():
    assert DEFAULT_DETECTORS == ("metadata", "linear", "mpft", "flow")
    assert registry.onnx_families() == ["linear", "mpft", "flow"]
    assert "onnx" in registry.list_families() and "onnx" not in DEFAULT_DETECTORS
    for name in registry.list_families():
        fam = registry.get_family(name)
        assert callable(registry.resolve(fam.create)), name
        for hook in ("exports", "results"):
            if getattr(fam, hook):
                assert callable(registry.family_hook(name, hook)), (name, hook)
        for mod in fam.cli:
            assert callable(__import__(mod, fromlist=["register"]).register), mod
    with pytest.raises(KeyError, match="no 'results'"):
        registry.family_hook("metadata", "results")
    with pytest.raises(KeyError, match="unknown detector"):
        create_detectors(["nosuch"], RunContext())


def test_registry_and_family_commands_import_no_torch():
    code = ("import sys, importlib, aiidetect.detectors as r, aiidetect.metadata.detector\n"
            "[importlib.import_module(m) for m in r.cli_modules()]\n"
            "[importlib.import_module(r.get_family(f).create.split(':')[0]) for f in r.list_families()]\n"
            "print([m for m in ('torch', 'open_clip', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_generic_modules_name_no_family():
    # The ONNX runtime and the head builder read families from the registry; naming one would mean a
    # new family has to edit them.
    for rel in ("aiidetect/detectors/onnx.py", "aiidetect/detectors/heads.py", "aiidetect/detectors/base.py"):
        src = (REPO / rel).read_text()
        for fam in ("linear", "mpft", "flow", "metadata"):
            assert f'"{fam}"' not in src and f"'{fam}'" not in src, (rel, fam)


# ---------------------------------------------------------------------------
# A fourth family, added the way docs/families.md says: one spec, one results function.
# ---------------------------------------------------------------------------
def toy_results(meta, outs, *, dtype=None):
    z = np.asarray(outs[meta["outputs"]["logit"]], dtype=np.float64).reshape(-1)
    return [DetectorResult(status="ok", p_ai=float(1 / (1 + np.exp(-v))), score=float(v), score_kind="logit",
                           extra={"head": meta["head"], **({"dtype": dtype} if dtype else {})}) for v in z]


class ToyDetector(Detector):
    family = "toy"

    def __init__(self, head, backbone):
        if head.manifest.get("broken"):
            raise KeyError("weight")
        super().__init__(f"toy:{head.name}")


class _Head:
    def __init__(self, path: Path, manifest):
        self.path, self.manifest, self.name = path, manifest, manifest["name"]

    def check_backbone(self, fingerprint, description=""):
        from aiidetect.heads import HeadMismatch

        if self.manifest["fp"] != fingerprint:
            raise HeadMismatch(f"head {self.name!r} was trained on backbone {self.manifest['fp']}")


class _Backbone:
    fingerprint = "fp-run"

    class spec:  # noqa: N801 - stands in for BackboneSpec
        @staticmethod
        def describe():
            return "stand-in"


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """Registers family "toy" whose heads are manifests in `heads` (a list the test fills)."""
    import aiidetect.heads as weights

    heads: list[dict] = []
    monkeypatch.setattr(weights, "find_heads", lambda dirs, det=None, **_: [(tmp_path / h["name"], h) for h in heads
                                                                            if det in (None, h["detector"])])
    monkeypatch.setattr(weights, "load_head", lambda p, **_: _Head(Path(p), next(h for h in heads
                                                                                  if h["name"] == Path(p).name)))

    def create(ctx):
        return build_heads(ctx, "toy", ToyDetector, none_found="no toy head in {where}; train one")

    monkeypatch.setitem(registry._FAMILIES, "toy", Family("toy", create=create, results=toy_results))
    ctx = RunContext(weights_dirs=[tmp_path])
    ctx._backbone = _Backbone()
    return heads, ctx


def test_a_new_family_is_one_spec(toy):
    from aiidetect.detectors.onnx import head_results

    heads, ctx = toy
    heads.append({"name": "a", "detector": "toy", "fp": "fp-run"})
    (d,) = create_detectors(["toy"], ctx)
    assert isinstance(d, ToyDetector) and d.name == "toy:a"
    (r,) = head_results({"family": "toy", "head": "a", "outputs": {"logit": "out0"}}, {"out0": np.array([0.0])})
    assert r.p_ai == 0.5 and r.extra == {"head": "a"}


def test_head_builder_failure_policy(toy):
    heads, ctx = toy
    # No head at all: one family row with the remedy and the folders searched.
    (d,) = create_detectors(["toy"], ctx)
    assert isinstance(d, UnavailableDetector) and d.name == "toy" and "train one" in d.reason
    assert str(ctx.weights_dirs[0]) in d.reason

    # Some heads fail: one row per head, in the order found, the others run.
    heads += [{"name": "other", "detector": "toy", "fp": "fp-else"},
              {"name": "ok", "detector": "toy", "fp": "fp-run"},
              {"name": "bad", "detector": "toy", "fp": "fp-run", "broken": True}]
    dets = create_detectors(["toy"], ctx)
    assert [d.name for d in dets] == ["toy:other", "toy:ok", "toy:bad"]
    assert isinstance(dets[0], UnavailableDetector) and "trained on backbone fp-else" in dets[0].reason
    assert isinstance(dets[1], ToyDetector)
    assert "cannot load head" in dets[2].reason and "KeyError" in dets[2].reason

    # No head can be made: create raises (one message), create_detectors still reports each head.
    heads.remove(heads[1])
    with pytest.raises(HeadsUnavailable, match="trained on backbone fp-else") as exc:
        registry.resolve(registry.get_family("toy").create)(ctx)
    assert [d.name for d in exc.value.rows] == ["toy:other", "toy:bad"]
    assert [d.name for d in create_detectors(["toy"], ctx)] == ["toy:other", "toy:bad"]

    # A name filter from the run's options.
    ctx.options["toy_heads"] = ["bad"]
    assert [d.name for d in create_detectors(["toy"], ctx)] == ["toy:bad"]


def test_backbone_failure_is_one_row_naming_the_heads(toy):
    heads, ctx = toy
    heads += [{"name": "a", "detector": "toy", "fp": "fp-run"}, {"name": "b", "detector": "toy", "fp": "fp-run"}]
    ctx._backbone = None
    ctx._backbone_error = "the CLIP weights are not on this machine"
    (d,) = create_detectors(["toy"], ctx)
    assert d.name == "toy" and "not on this machine" in d.reason and "toy heads not run: a, b" in d.reason
    with pytest.raises(DetectorUnavailable):
        registry.resolve(registry.get_family("toy").create)(ctx)


# ---------------------------------------------------------------------------
# Each family's results(): what the torch path (dtype given) and the ONNX path write, key order included,
# since records are compared byte for byte.
# ---------------------------------------------------------------------------
def test_mpft_results_key_order_per_path():
    from aiidetect.mpft.onnx import results

    meta = {"family": "mpft", "outputs": {"logit": "z", "attribution": "a"}, "labels": ["real", "sd", "mj"],
            "calibration": {"temperature": 2.0}, "manifest": {"attribution": {"reject_below": 0.1}}}
    outs = {"z": np.array([1.0, np.nan]), "a": np.array([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]])}
    torch_r, bad = results(meta, outs, dtype="float32")
    assert list(torch_r.extra) == ["attribution", "dtype", "generator"]
    assert torch_r.p_ai == pytest.approx(1 / (1 + np.exp(-0.5))) and torch_r.score == 1.0
    assert torch_r.extra["attribution"][0]["label"] == "sd" and torch_r.extra["generator"]["label"] == "sd"
    assert bad.status == "error" and "non-finite" in bad.reason
    (onnx_r, _) = results(meta, outs)
    assert list(onnx_r.extra) == ["attribution", "generator"]


def test_linear_and_flow_results_put_dtype_last():
    from aiidetect.flow.onnx import SCORE_KIND
    from aiidetect.flow.onnx import results as flow_results
    from aiidetect.linear.onnx import results as linear_results

    lin = {"outputs": {"logit": "l"}, "head": "p", "threshold": None, "calibration": {"method": "platt", "a": 2.0,
                                                                                     "b": 0.0}}
    (r,) = linear_results(lin, {"l": np.array([0.5])}, dtype="bfloat16")
    assert list(r.extra) == ["head", "threshold", "dtype"] and r.extra["threshold"] == 0.5
    assert r.p_ai == pytest.approx(1 / (1 + np.exp(-1.0)))
    cal = {"nll_mean": 10.0, "nll_std": 2.0, "threshold_z": 1.0, "fpr": 0.05, "slope": 3.0}
    fl = {"outputs": {"loglik": "ll"}, "calibration": cal, "dim": 4}
    (r,) = flow_results(fl, {"ll": np.array([-14.0])}, dtype="float32")
    assert r.score_kind == SCORE_KIND and r.score == 2.0 and r.extra["nll"] == 14.0 and r.extra["nll_per_dim"] == 3.5
    assert r.p_ai == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert list(r.extra)[-1] == "dtype"
    (r,) = flow_results(fl, {"ll": np.array([-14.0])})
    assert "dtype" not in r.extra


def test_sidecar_meta_round_trip_gives_the_same_results():
    """The runtime reads meta back from JSON; a torch detector builds it in memory. Same answer."""
    from aiidetect.mpft.onnx import results

    meta = {"family": "mpft", "outputs": {"logit": "z", "attribution": "a"}, "labels": ["real", "ai"],
            "calibration": {"temperature": 1.7}, "manifest": {}}
    outs = {"z": np.array([0.3]), "a": np.array([[0.1, 0.2]])}
    a = results(meta, outs)[0]
    b = results(json.loads(json.dumps(meta)), outs)[0]
    assert (a.p_ai, a.score, a.extra) == (b.p_ai, b.score, b.extra)
