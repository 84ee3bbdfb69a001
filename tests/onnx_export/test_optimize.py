"""`aiidetect optimize` and the verified fast path in `aiidetect scan`
(tiny-vit, a linear probe trained on dev images and a CLIP-Flow head)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import jsonl, run_cli, run_cli_in_process

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")

BB = ("--backbone-config", "tiny-vit")
N = 24


def _flow_head(weights: Path) -> None:
    """A CLIP-Flow head on embed + a CLS layer (random flow, valid calibration)."""
    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.flow.model import FeatureFlow, FlowConfig
    from aiidetect.preprocess import make_spec
    from aiidetect.heads import backbone_manifest, save_head

    tiny = create_backbone(BackboneSpec.from_options(config="tiny-vit"))
    torch.manual_seed(0)
    cfg = FlowConfig(dim=tiny.embed_dim + tiny.width, blocks=2, hidden=32)
    flow = FeatureFlow(cfg).eval()
    save_head(weights / "flowhead", {f"flow.{k}": v for k, v in flow.state_dict().items()},
              {"name": "flowhead", "detector": "flow", "backbone": backbone_manifest(tiny),
               "preprocessing": make_spec("resize-center-crop", 224), "labels": ["real"],
               "params": {"flow": cfg.to_dict(), "features": {"outputs": ["embed", "cls_1"], "layers": [1]}},
               "calibration": {"nll_mean": 100.0, "nll_std": 20.0, "threshold_z": 2.0, "slope": 1.5, "fpr": 0.01}})


@pytest.fixture(scope="module")
def setup(trained, tmp_path_factory, dev_dir):
    """Weights (cli-probe + flowhead), a private cache, and one optimize run over N dev images."""
    _flow_head(trained)
    cache = tmp_path_factory.mktemp("opt-cache")
    env = {"AIIDETECT_WEIGHTS": str(trained), "AIIDETECT_CACHE": str(cache)}
    # int8 only, and chosen whatever its speed (--min-speedup 0): on tiny-vit the model is too small for its
    # time to decide anything, so these tests check agreement, storage and use, never which runtime is faster.
    r = run_cli("optimize", "--images", str(dev_dir), "--limit", str(N), *BB, "--candidates", "int8", "--min-speedup", "0",
                "--format", "json", env=env, timeout=1200)  # an ONNX export and three pipeline runs: minutes on a loaded 2-core machine
    assert r.returncode == 0, r.stderr
    return {"env": env, "weights": trained, "cache": cache, "decision": json.loads(r.stdout), "stderr": r.stderr}


def _scan(env, dev_dir, *extra, as_user: bool = False):
    """Three dev photos scanned; in-process unless `as_user` (what the scan decides about the fast path
    does not need a new interpreter, which paid a torch import each time: seconds on 2 loaded cores)."""
    files = sorted(str(p) for p in (dev_dir / "real").rglob("*.jpg"))[:3]
    if as_user:
        r = run_cli("scan", *files, *BB, "-f", "jsonl", "--no-cache", *extra, env=env, timeout=600)
    else:
        r = run_cli_in_process("scan", *files, *BB, "-f", "jsonl", "--no-cache", *extra, env=env)
    assert r.returncode == 0, r.stderr
    return jsonl(r.stdout), r.stderr


@pytest.mark.slow
def test_optimize_verifies_int8_and_scan_uses_it(setup, dev_dir):
    d = setup["decision"]
    assert d["status"] == "verified", d.get("reason")
    assert d["chosen"]["runtime"] == "onnx" and d["chosen"]["dtype"] == "int8"
    int8 = next(c for c in d["candidates"] if c["candidate"] == "onnx-int8")
    assert set(int8["agreement"]["heads"]) == {"linear:cli-probe", "flow:flowhead"}
    assert int8["agreement"]["fused"]["files"] == d["files"] >= 20
    assert int8["worst_changed_share"] <= d["tolerance"]
    assert int8["max_abs_dp"] > 0  # int8 is not the float computation: the difference is measured, not zero
    from aiidetect import cpuinfo  # 7-bit weights where this CPU's fast int8 kernels could overflow on 8

    assert int8["int8"] == {"weight_bits": cpuinfo.int8_weight_bits(), "vnni": cpuinfo.int8_vnni(),
                            "exact_kernels_forced": cpuinfo.int8_pairs_saturate()}
    assert d["chosen"]["int8"] == int8["int8"]
    # every set of the families with heads, fused again from the same results: the full one as the records are
    sets = int8["agreement"]["sets"]
    assert set(sets) == set(d["chosen"]["detector_sets"]) == {
        "linear", "flow", "linear,flow", "metadata,linear", "metadata,flow", "metadata,linear,flow"}
    assert {k: sets["metadata,linear,flow"][k] for k in int8["agreement"]["fused"]} == int8["agreement"]["fused"]
    assert all((s["status"] == "verified") == (s["worst_changed_share"] <= d["tolerance"]) for s in sets.values())
    # the sets with metadata once more, as `scan --watermark never` fuses them (no watermark on dev photos)
    never = int8["agreement"]["sets_watermark_never"]
    assert set(never) == set(d["chosen"]["detector_sets_watermark_never"]) == {
        "metadata,linear", "metadata,flow", "metadata,linear,flow"}
    assert all(never[k]["verdict_changed"] == sets[k]["verdict_changed"] for k in never)
    recs, err = _scan(setup["env"], dev_dir, "--watermark", "never")
    assert f"on {d['files']} images with --watermark never: " in err, err
    recs, err = _scan(setup["env"], dev_dir, as_user=True)  # the fast path as a user's scan takes it
    assert f"runtime: onnx int8, verified by `aiidetect optimize` on {d['files']} images" in err
    for rec in recs:
        for name in ("linear:cli-probe", "flow:flowhead"):
            det = rec["detectors"][name]
            assert det["status"] == "ok"
            assert det["runtime"] == "onnx" and det["dtype"] == "int8", det


@pytest.mark.slow
def test_runtime_torch_forces_torch(setup, dev_dir):
    recs, err = _scan(setup["env"], dev_dir, "--runtime", "torch")
    assert "verified by" not in err
    for rec in recs:
        det = rec["detectors"]["linear:cli-probe"]
        assert det.get("runtime", "torch") == "torch" and det["dtype"] in ("float32", "bfloat16")  # --dtype auto


@pytest.mark.slow
def test_a_refused_detector_set_scans_on_torch(setup, dev_dir, tmp_path):
    """`scan -d flow` under a decision whose `flow` set was refused: torch, and the records say so."""
    cache = tmp_path / "cache"
    shutil.copytree(setup["cache"], cache, symlinks=True, copy_function=shutil.copy2)  # mtimes kept: still served
    dp = cache / Path(setup["decision"]["path"]).relative_to(setup["cache"])
    d = json.loads(dp.read_text())
    d["chosen"].setdefault("detector_sets", {}).setdefault("flow", {}).update(
        status="refused", reason="fused verdict changed 1/24 verdicts")
    dp.write_text(json.dumps(d))
    env = {**setup["env"], "AIIDETECT_CACHE": str(cache)}
    recs, err = _scan(env, dev_dir, "-d", "flow")
    assert ("runtime: torch (the fast path for the detectors flow was refused by `aiidetect optimize` on "
            f"{d['files']} images: fused verdict changed 1/24 verdicts)") in err.replace("\n", " "), err
    for rec in recs:
        det = rec["detectors"]["flow:flowhead"]
        assert det["status"] == "ok" and det.get("runtime", "torch") == "torch" and det["dtype"] != "int8", det


def _fusion_model(folder: Path, bias: float = 0.0) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"name": folder.name, "detector": "fusion", "params": {
        "detectors": {"linear:cli-probe": {"weight": 1.0}}, "bias": bias, "ai_threshold": 0.9,
        "real_threshold": 0.1}}))
    return folder


@pytest.mark.slow
def test_scan_under_another_fusion_takes_torch_and_says_why(setup, dev_dir, tmp_path):
    """The fused verdicts were verified under the weights folders' fusion (none here: the default rules);
    `scan --fusion PATH` took the int8 fast path all the same, its fused verdicts never verified."""
    other = _fusion_model(tmp_path / "other-fusion")
    recs, err = _scan(setup["env"], dev_dir, "--fusion", str(other))
    assert "verified by" not in err
    assert (f"runtime: torch (the fast path's fused verdicts were verified under the default rules, not the "
            f"fusion model {other} (--fusion)") in err, err
    for rec in recs:
        det = rec["detectors"]["linear:cli-probe"]
        assert det["status"] == "ok" and det.get("runtime", "torch") == "torch", det
        assert rec["fusion"]["kind"] == "model"
    assert setup["decision"]["fusion"] == {"kind": "rules"}
    recs, err = _scan(setup["env"], dev_dir, "--fusion", "none")  # the fusion it was verified under
    assert "runtime: onnx int8, verified by" in err
    assert all(rec["detectors"]["linear:cli-probe"]["runtime"] == "onnx" for rec in recs)


def _unloadable_copy(setup, tmp_path) -> dict:
    """The optimize cache copied, its graphs rewritten with an IR version no onnxruntime loads (as a newer
    export meets an older onnxruntime) and every checksum re-pinned: what the decision checks still holds."""
    import onnx

    from aiidetect import optimize as opt
    from aiidetect.hashing import sha256_file
    from aiidetect.onnx_sidecar import SIDECAR

    cache = tmp_path / "cache"
    shutil.copytree(setup["cache"], cache)
    folder = cache / Path(setup["decision"]["path"]).parent.relative_to(setup["cache"])
    onnx_dir = folder / opt.ONNX_SUBDIR
    side = json.loads((onnx_dir / SIDECAR).read_text())
    for g in side["graphs"]:
        m = onnx.load(str(onnx_dir / g["file"]))
        m.ir_version = 99
        onnx.save_model(m, str(onnx_dir / g["file"]))
        g["files"][g["file"]] = sha256_file(onnx_dir / g["file"])
    (onnx_dir / SIDECAR).write_text(json.dumps(side))
    d = json.loads((folder / opt.DECISION).read_text())
    d["onnx_files"] = {f.name: {**opt._file_stat(f), "sha256": sha256_file(f)} for f in onnx_dir.iterdir()}
    (folder / opt.DECISION).write_text(json.dumps(d))
    return {**setup["env"], "AIIDETECT_CACHE": str(cache)}


@pytest.mark.slow
def test_a_verified_graph_onnxruntime_cannot_load_falls_back_to_torch(setup, dev_dir, tmp_path):
    """A graph that passes its checksums but that ONNX Runtime will not load (another onnxruntime, no memory
    for the session) made every pixel head `unavailable` under --runtime auto, which never asked for ONNX:
    the scan runs torch and says why. An explicit --runtime onnx --onnx DIR is the user's choice and
    keeps its unavailable heads with the reason."""
    env = _unloadable_copy(setup, tmp_path)
    recs, err = _scan(env, dev_dir)
    assert "runtime: torch (the fast path verified by `aiidetect optimize` could not be served: " in err, err
    assert "if it persists, run `aiidetect optimize` again)" in err
    assert "Unsupported model IR version" in err and "verified by `aiidetect optimize` on" not in err
    for rec in recs:
        for name in ("linear:cli-probe", "flow:flowhead"):
            det = rec["detectors"][name]
            assert det["status"] == "ok" and det.get("runtime", "torch") == "torch", det
    onnx_dir = Path(env["AIIDETECT_CACHE"]) / Path(setup["decision"]["path"]).parent.relative_to(setup["cache"])
    recs, err = _scan(env, dev_dir, "--runtime", "onnx", "--onnx", str(onnx_dir / "onnx-int8"))
    assert recs[0]["detectors"]["linear:cli-probe"]["status"] == "unavailable"
    assert "detector linear:cli-probe unavailable: cannot load ONNX model" in err.replace("\n", " ")


@pytest.mark.slow
def test_flow_stays_float(setup):
    """The int8 graph keeps CLIP-Flow's MatMuls in float: none of the flow's nodes is quantized."""
    import onnx

    from aiidetect import optimize as opt

    folder = Path(setup["decision"]["path"]).parent / opt.ONNX_SUBDIR
    side = json.loads((folder / "aiidetect-onnx.json").read_text())
    # one graph per preprocessing: the probe (center crop) and the flow head (resize + crop) may be apart
    g = next(g for g in side["graphs"] if any(h["name"] == "flow:flowhead" for h in g["heads"]))
    flow_scope = f"heads.{[h['name'] for h in g['heads']].index('flow:flowhead')}"
    assert flow_scope in g["conversion"]["float_scopes"] and g["conversion"]["float_nodes"] > 0
    m = onnx.load(str(folder / g["file"]), load_external_data=False)
    ops = {n.op_type for n in m.graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear"}, "encoder not quantized"
    # a float MatMul remains (the flow's, kept by float_scopes)
    assert "MatMul" in ops or "Gemm" in ops


@pytest.mark.slow
def test_decision_of_another_cpu_or_head_set_is_ignored(setup, dev_dir, monkeypatch):
    from aiidetect import optimize as opt
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext

    from aiidetect.heads import weights_dirs

    monkeypatch.setenv("AIIDETECT_CACHE", str(setup["cache"]))
    monkeypatch.setenv("AIIDETECT_WEIGHTS", str(setup["weights"]))
    # the folders scan reads: $AIIDETECT_WEIGHTS and the shipped ones
    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), dtype="auto",
                     weights_dirs=weights_dirs([]))
    fast = opt.choose(ctx, ["metadata", "linear", "flow"])
    assert fast is not None and fast.use and fast.dtype == "int8"
    assert opt.choose(RunContext(backbone_spec=ctx.backbone_spec, dtype="float32", weights_dirs=ctx.weights_dirs),
                      ["linear"]) is None  # an explicit --dtype is the user's choice
    assert opt.choose(ctx, ["metadata"]) is None
    real = opt.cpu_identity()
    monkeypatch.setattr(opt, "cpu_identity", lambda: {**real, "flags_sha256": "another-cpu"})
    assert opt.choose(ctx, ["linear"]) is None
    monkeypatch.setattr(opt, "cpu_identity", lambda: real)
    # another head set: one more head in the weights folder
    other = setup["weights"].parent / (setup["weights"].name + "-more")
    shutil.copytree(setup["weights"], other)
    shutil.copytree(other / "cli-probe", other / "cli-probe-2")
    man = json.loads((other / "cli-probe-2" / "manifest.json").read_text())
    man["name"] = "cli-probe-2"
    (other / "cli-probe-2" / "manifest.json").write_text(json.dumps(man))
    monkeypatch.setenv("AIIDETECT_WEIGHTS", str(other))
    assert opt.choose(RunContext(backbone_spec=ctx.backbone_spec, dtype="auto", weights_dirs=weights_dirs([])),
                      ["linear"]) is None
    recs, err = _scan({**setup["env"], "AIIDETECT_WEIGHTS": str(other)}, dev_dir)
    assert "verified by" not in err and "runtime: onnx" not in err
    assert all(r["detectors"]["linear:cli-probe"].get("runtime", "torch") == "torch" for r in recs)


@pytest.mark.slow
def test_refused_when_outside_tolerance(setup, dev_dir, tmp_path):
    """Noise added to the int8 graph's float weights pushes verdicts outside tolerance:
    the decision is a refusal, and scan stays on torch and says why."""
    # The linear probe alone: the flow head cost a second int8 graph (a third of the run) and the refusal is
    # not about it; the noise changes 24 of 24 verdicts where the tolerance allows none, far from the limit.
    shutil.copytree(setup["weights"] / "cli-probe", tmp_path / "weights" / "cli-probe")
    env = {**setup["env"], "AIIDETECT_WEIGHTS": str(tmp_path / "weights"), "AIIDETECT_CACHE": str(tmp_path / "cache"),
           "AIIDETECT_OPTIMIZE_TEST_NOISE": "3.0"}
    # in-process: the `setup` fixture runs optimize as a user does; this one is about the decision
    r = run_cli_in_process("optimize", "--images", str(dev_dir), "--limit", str(N), *BB, "--candidates", "int8",
                           "--min-speedup", "0", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["status"] == "refused" and d["chosen"] is None
    assert "verdicts" in d["reason"] and "onnx-int8" in d["reason"], d["reason"]
    assert not (Path(d["path"]).parent / "onnx-int8").exists()  # a refused graph is not kept
    env.pop("AIIDETECT_OPTIMIZE_TEST_NOISE")
    recs, err = _scan(env, dev_dir)
    assert "runtime: torch (the fast path was refused by `aiidetect optimize`" in err
    assert "onnx-int8:" in err
    assert all(r["detectors"]["linear:cli-probe"].get("runtime", "torch") == "torch" for r in recs)
    shown = run_cli_in_process("optimize", "--show", *BB, "--format", "csv", env=env)
    assert shown.returncode == 0 and "refused" in shown.stdout


def test_optimize_usage_errors_exit_2(tmp_path, dev_dir, monkeypatch):
    """Each usage error is refused by its own check, in its own words. An empty weights folder made
    every case before "no trained head" end in exit 2 anyway, so asserting the exit code alone still
    passed with a check removed: each case asserts the message that names its fault."""
    import aiidetect.onnx_export as oe

    env = {"AIIDETECT_WEIGHTS": str(tmp_path / "empty"), "AIIDETECT_CACHE": str(tmp_path / "c")}
    (tmp_path / "empty").mkdir()
    walked = []
    real_image_paths = oe.image_paths
    # An option's value is refused before the images folder is walked (an auditor's archive can take
    # minutes to list); without the command's own --tolerance check the library's refused it only after.
    monkeypatch.setattr(oe, "image_paths", lambda *a, **k: walked.append(a) or real_image_paths(*a, **k))
    # --weights-dir replaces the default folders: the repository's shipped head is not there to be found
    images = ("--images", str(dev_dir), "--weights-dir", str(tmp_path / "empty"))
    for args, says, walks in (
            (("optimize", *BB), "optimize needs --images DIR", False),
            (("optimize", "--images", str(tmp_path / "nope"), *BB), "nope is not a folder", False),
            (("optimize", *images, "--tolerance", "2", *BB), "--tolerance is a share of files", False),
            (("optimize", *images, "--max-delta-p", "2", *BB), "--max-delta-p is a probability", False),
            (("optimize", *images, "--candidates", "fp8", *BB), "--candidates takes bfloat16 and/or int8", False),
            (("optimize", *images, *BB), "no trained linear, mpft, flow head in the weights folders", True),
            (("optimize", "--show", *BB), "no stored decision", False)):
        walked.clear()
        # the first as a user runs it; the rest are what the command decides, in-process (each new
        # interpreter paid a torch import: ~1.5 s on 2 loaded cores)
        r = (run_cli if args == ("optimize", *BB) else run_cli_in_process)(*args, env=env)
        assert r.returncode == 2, (args, r.stderr)
        assert "error:" in r.stderr and not r.stdout.strip()
        assert says in " ".join(r.stderr.split()), (args, r.stderr)
        assert bool(walked) == walks, (args, walked)


def test_no_decision_leaves_scan_alone(tmp_path, monkeypatch):
    """Without an optimize folder in the cache, choose() is None and reads no head."""
    from aiidetect import optimize as opt
    from aiidetect.detectors import RunContext

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path))
    monkeypatch.setattr(opt, "heads_identity", lambda dirs: pytest.fail("hashed heads without a decision"))
    assert opt.choose(RunContext(dtype="auto"), ["metadata", "linear"]) is None


def test_a_decision_nested_past_the_parser_is_no_decision(tmp_path, monkeypatch):
    """decision.json nested 200,000 deep raised RecursionError out of choose(), which no caller
    catches: every scan with that setup ended with exit 2. It is an unreadable decision: none."""
    from aiidetect import optimize as opt
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), dtype="auto",
                     weights_dirs=[tmp_path / "weights"])
    folder = opt.cache_root() / opt.key(opt.identity(ctx.backbone_spec, ctx.weights_dirs))
    folder.mkdir(parents=True)
    (folder / opt.DECISION).write_text("[" * 200_000)
    assert opt.choose(ctx, ["linear"]) is None


def _stored_onnx_decision(tmp_path, monkeypatch, head_names=("p",)):
    """A verified onnx decision for tiny-vit with no head, over a stand-in export (choose() never runs
    the graph, so its bytes need only match the checksums): (RunContext, export folder). Its key records
    linear heads of these names."""
    from aiidetect import optimize as opt
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext
    from aiidetect.hashing import sha256_file
    from aiidetect.onnx_sidecar import SIDECAR
    from aiidetect.preprocess import make_spec

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    # The key records one linear head, as a decision optimize stored always records a head; the fusion
    # models stay what the weights folder holds.
    real = opt.heads_identity
    mine = [{"family": "linear", "name": h, "files": {}} for h in head_names]
    monkeypatch.setattr(opt, "heads_identity", lambda dirs, families=opt.PIXEL_FAMILIES:
                        mine if families == opt.PIXEL_FAMILIES else real(dirs, families))
    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), dtype="auto",
                     weights_dirs=[tmp_path / "weights"])
    ident = opt.identity(ctx.backbone_spec, ctx.weights_dirs)
    onnx = opt.decision_dir(ident) / opt.ONNX_SUBDIR
    onnx.mkdir(parents=True)
    (onnx / "g.onnx").write_bytes(b"graph weights " * 64)
    heads = [{"name": "linear:p", "family": "linear", "threshold": 0.5, "calibration": {"method": "none"}}]
    (onnx / SIDECAR).write_text(json.dumps({"format": "aiidetect-onnx", "graphs": [
        {"file": "g.onnx", "files": {"g.onnx": sha256_file(onnx / "g.onnx")}, "heads": heads,
         "preprocessing": make_spec("center-crop", 224)}]}))
    files = {f.name: {**opt._file_stat(f), "sha256": sha256_file(f)} for f in onnx.iterdir()}
    decision = {"identity": json.loads(json.dumps(ident, default=str)), "status": "verified", "files": 24,
                "chosen": {"candidate": "onnx-int8", "runtime": "onnx", "dtype": "int8", "speedup": 2.0,
                           "scan_speedup": 1.5, "worst_changed_share": 0.0,
                           "detector_sets": {k: {"status": "verified", "reason": None, "files": 24,
                                                 "worst_changed_share": 0.0} for k in ("linear", "metadata,linear")}},
                "onnx_files": files}
    (onnx.parent / opt.DECISION).write_text(json.dumps(decision))
    assert opt.choose(ctx, ["linear"]).use  # as stored, the fast path is taken
    return ctx, onnx


def _rewrite_keeping_stat(p: Path, data: bytes) -> None:
    import os
    import time

    st = p.stat()
    assert len(data) == st.st_size
    time.sleep(0.05)  # past the file system's timestamp tick: the write changes st_ctime, as any later one would
    p.write_bytes(data)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_ctime_ns != st.st_ctime_ns


def test_a_graph_changed_in_place_is_not_served(tmp_path, monkeypatch):
    """A flipped byte in the optimized graph, at the same size and mtime, passed choose(): scan took the
    fast path, the ONNX detector then refused the graph, and the heads were unavailable (no pixel
    evidence at all) under a summary line saying "verified". It is torch, and the line says why."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    g = onnx / "g.onnx"
    data = bytearray(g.read_bytes())
    data[7] ^= 1
    _rewrite_keeping_stat(g, bytes(data))
    fast = opt.choose(ctx, ["linear"])
    assert not fast.use and fast.runtime == "torch"
    assert "fails its checks" in fast.line and "g.onnx differs from its checksum" in fast.line
    assert "run `aiidetect optimize` again" in fast.line


def test_a_sidecar_edited_in_place_is_not_served(tmp_path, monkeypatch):
    """The sidecar holds each head's calibration and threshold, and no checksum guarded it: one edited at
    the same size and mtime was served. The decision pins it by SHA-256."""
    from aiidetect import optimize as opt
    from aiidetect.onnx_sidecar import SIDECAR

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    side = onnx / SIDECAR
    _rewrite_keeping_stat(side, side.read_bytes().replace(b'"threshold": 0.5', b'"threshold": 0.1'))
    fast = opt.choose(ctx, ["linear"])
    assert not fast.use and f"{SIDECAR} differs from its checksum" in fast.line


def test_a_decision_without_checksums_is_not_served(tmp_path, monkeypatch):
    """A decision recorded without the export's checksums cannot say the export is the one verified."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    for st in d["onnx_files"].values():
        st.pop("sha256")
    dp.write_text(json.dumps(d))
    fast = opt.choose(ctx, ["linear"])
    assert not fast.use and "records no checksum" in fast.line


def _optimize_without_measuring(tmp_path, monkeypatch):
    """opt.optimize() as far as its cache folder, for one stand-in head; measuring fails the test."""
    from aiidetect import optimize as opt
    from aiidetect.backbone import BackboneSpec

    monkeypatch.setattr(opt, "heads_identity", lambda dirs, families=opt.PIXEL_FAMILIES:
                        [{"family": "linear", "name": "p", "files": {}}] if "linear" in families else [])
    monkeypatch.setattr(opt, "_measure", lambda *a, **k: pytest.fail("measured"))
    spec = BackboneSpec.from_options(config="tiny-vit")
    return lambda: opt.optimize(spec, [tmp_path / "weights"], [f"{i}.jpg" for i in range(opt.MIN_IMAGES)])


def test_a_second_optimize_of_one_setup_is_refused_while_the_first_runs(tmp_path, monkeypatch):
    """Two runs at once shared one folder: the second deleted the first's graph under it (the first
    failed with FileNotFoundError, and its cleanup deleted the second's folder). The second is refused."""
    import fcntl
    import os

    from aiidetect import optimize as opt
    from aiidetect.backbone import BackboneSpec

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    run = _optimize_without_measuring(tmp_path, monkeypatch)
    folder = opt.decision_dir(opt.identity(BackboneSpec.from_options(config="tiny-vit"), [tmp_path / "weights"]))
    (folder / opt.ONNX_SUBDIR).mkdir(parents=True)
    (folder / opt.ONNX_SUBDIR / "g.onnx").write_bytes(b"the first run's graph")
    lock = folder.with_name(folder.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # the first run, as it holds the lock
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(opt.OptimizeError, match="another `aiidetect optimize` .* is running"):
            run()
        assert (folder / opt.ONNX_SUBDIR / "g.onnx").exists()  # the first run's work is left alone
    finally:
        os.close(fd)
    with pytest.raises(pytest.fail.Exception, match="measured"):  # the lock is free again: it goes ahead
        run()


def test_optimize_into_a_cache_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch):
    from aiidetect import optimize as opt

    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(opt.OptimizeError, match="cannot write the optimize cache .*set AIIDETECT_CACHE"):
        _optimize_without_measuring(tmp_path, monkeypatch)()


def test_a_fusion_model_added_after_optimize_makes_the_decision_stale(tmp_path, monkeypatch):
    """The decision verifies the fused verdict under the fusion model of its weights folders; a fusion
    model added (or refitted) since was not part of its key, and scan kept the fast path unverified."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    fusion = tmp_path / "weights" / "fused"
    fusion.mkdir(parents=True)
    (fusion / "manifest.json").write_text(json.dumps({"name": "fused", "detector": "fusion"}))
    assert opt.choose(ctx, ["linear"]) is None


def test_the_fast_path_serves_only_the_fusion_it_verified(tmp_path, monkeypatch):
    """Per-head agreement holds under any fusion, the fused verdict's only under the one optimize ran:
    --fusion PATH or --fusion none kept the fast path whatever the decision had verified."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    model = _fusion_model(tmp_path / "elsewhere" / "fz")
    twin = tmp_path / "twin"
    shutil.copytree(model, twin)  # the same fitted parameters at another path: the same fusion
    for verified, fusion, use in [({"kind": "rules"}, None, True), ({"kind": "rules"}, "auto", True),
                                  ({"kind": "rules"}, "none", True), ({"kind": "rules"}, str(model), False),
                                  (opt.verified_fusion({**json.loads((model / "manifest.json").read_text()),
                                                        "path": str(model)}), twin, True),
                                  (opt.verified_fusion({"name": "fz", "path": str(model)}), "none", False),
                                  (None, "none", False), (None, None, True)]:
        if verified is None:
            d.pop("fusion", None)
        else:
            d["fusion"] = verified
        dp.write_text(json.dumps(d))
        fast = opt.choose(ctx, ["linear"], fusion)
        assert fast.use is use, (verified, fusion, fast.line)
        if not use:
            assert fast.runtime == "torch" and "fused verdicts were verified under" in fast.line
    line = opt.choose(ctx, ["linear"], "none").line  # the last decision stored records no fusion
    assert "verified under an unrecorded fusion (an older `aiidetect optimize`), not the default rules" in line


def test_a_verified_export_onnxruntime_cannot_load_runs_torch_under_auto(tmp_path, monkeypatch):
    """The stand-in graph passes every checksum, yet ONNX Runtime cannot load it (as a graph an older
    onnxruntime cannot read, or a session out of memory): --runtime auto made the verified head
    unavailable; it is torch, and the summary line says why. A head the decision never compared (not in the
    export, another backbone's) is unavailable on torch too and does not send the scan to torch."""
    from aiidetect import optimize as opt
    from aiidetect.api import ScanOptions, build_detectors

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    d["candidates"] = [{"candidate": "onnx-int8", "agreement": {"heads": {"linear:p": {}}, "fused": {}}}]
    dp.write_text(json.dumps(d))
    opts = ScanOptions(detectors=["linear"], backbone_spec=ctx.backbone_spec, weights_dirs=[tmp_path / "weights"])
    dets, got = build_detectors(opts)
    assert got.runtime == "torch" and got.onnx_dir is None and not got.fast_path.use
    assert got.fast_path.line.startswith("runtime: torch (the fast path verified by `aiidetect optimize` could not "
                                         "be served: linear:p: cannot load ONNX model ")
    assert all(x.describe().get("runtime", "torch") == "torch" for x in dets)
    d["candidates"][0]["agreement"]["heads"] = {"linear:other": {}}
    dp.write_text(json.dumps(d))
    dets, got = build_detectors(opts)
    assert got.runtime == "onnx" and got.fast_path.use  # as before: linear:p stays unavailable, with its reason
    assert [x.describe()["status"] for x in dets] == ["unavailable"]


@pytest.mark.parametrize("text", ["[1, 2]", "[" * 100_000, '{"candidates": 5}', '{"candidates": [5]}', "{"])
def test_show_of_a_damaged_decision_says_so(tmp_path, monkeypatch, text):
    """`optimize --show` of a decision.json that is not a decision ended on "error: TypeError: list indices
    must be integers..." or a RecursionError; scan ignores such a decision, and --show says it is damaged."""
    from aiidetect import optimize as opt
    from aiidetect.backbone import BackboneSpec
    from aiidetect.heads import weights_dirs

    (tmp_path / "w").mkdir()
    monkeypatch.setenv("AIIDETECT_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "c"))
    folder = opt.decision_dir(opt.identity(BackboneSpec.from_options(config="tiny-vit"), weights_dirs([])))
    folder.mkdir(parents=True)
    (folder / opt.DECISION).write_text(text)
    r = run_cli("optimize", "--show", *BB, "-f", "csv")
    assert r.returncode == 2 and not r.stdout, r.stdout
    assert "is damaged (scan does not use it)" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_optimized_graph_is_hashed_once_per_scan(tmp_path, monkeypatch):
    """choose() checks the graph before taking the fast path and the ONNX detector checks it again when
    it loads it: one SHA-256 of the unchanged file serves both (a ViT-L int8 graph: 300 MB, ~1 s)."""
    from aiidetect import hashing, optimize as opt
    from aiidetect.onnx_sidecar import graph_problems, read_sidecar

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    assert opt.choose(ctx, ["linear"]).use
    assert graph_problems(onnx, read_sidecar(onnx)["graphs"][0]) == []
    assert calls.count("g.onnx") == 0  # hashed when the decision was stored in this process, not again
    _rewrite_keeping_stat(onnx / "g.onnx", (onnx / "g.onnx").read_bytes())  # the same bytes, written again
    assert opt.choose(ctx, ["linear"]).use and calls.count("g.onnx") == 1
    assert graph_problems(onnx, read_sidecar(onnx)["graphs"][0]) == [] and calls.count("g.onnx") == 1


def test_a_graph_that_cannot_be_read_is_not_served_and_never_stops_a_scan(tmp_path, monkeypatch):
    """An optimized graph that cannot be read (permissions, an I/O error) raised its OSError out of
    choose(), which no caller catches: every scan of that setup ended with exit 2."""
    from aiidetect import hashing, optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    _rewrite_keeping_stat(onnx / "g.onnx", (onnx / "g.onnx").read_bytes())  # past the per-process digest

    def unreadable(p):
        if Path(p).name == "g.onnx":
            raise PermissionError(13, "Permission denied")
        return real(p)

    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", unreadable)
    fast = opt.choose(ctx, ["linear"])
    assert not fast.use and fast.runtime == "torch" and "g.onnx cannot be read (Permission denied)" in fast.line


def test_a_fifo_in_the_optimize_cache_or_a_head_folder_never_hangs_a_scan(tmp_path):
    """Opening a FIFO for reading waits for a writer: a FIFO as decision.json, as an export's sidecar or
    as a head's manifest.json hung every scan (and `weights list`) before its first file."""
    import os

    from PIL import Image

    Image.new("RGB", (64, 64), (90, 120, 30)).save(tmp_path / "a.png")
    weights = tmp_path / "w"
    shutil.copytree(Path(__file__).resolve().parents[2] / "weights" / "univfd", weights / "univfd")
    (weights / "stuck").mkdir()
    os.mkfifo(weights / "stuck" / "manifest.json")
    env = {"AIIDETECT_WEIGHTS": str(weights), "AIIDETECT_CACHE": str(tmp_path / "c")}
    shown = run_cli("optimize", "--show", *BB, env=env, timeout=60)  # the path of this setup's decision
    folder = Path(shown.stderr.split("(")[1].split(")")[0]).parent
    folder.mkdir(parents=True)
    os.mkfifo(folder / "decision.json")
    (tmp_path / "onnx").mkdir()
    os.mkfifo(tmp_path / "onnx" / "aiidetect-onnx.json")
    for extra in ((), ("--runtime", "onnx", "--onnx", str(tmp_path / "onnx"))):
        r = run_cli("scan", str(tmp_path / "a.png"), *BB, "-d", "metadata,linear", "-f", "jsonl", "--no-cache",
                    *extra, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert len(jsonl(r.stdout)) == 1
    assert "not a regular file" in r.stderr  # the sidecar's reason, on the unavailable head
    listed = run_cli("weights", "list", env=env, timeout=60)
    assert listed.returncode == 0 and "univfd" in listed.stdout


def test_a_backbone_checkpoint_rewritten_in_place_makes_the_decision_stale(tmp_path):
    """The key knew the checkpoint by path, size and mtime: other weights of the same size written over
    it, the mtime put back, kept the decision, and its int8 graph (the old weights) served the scan."""
    import os
    import time

    from aiidetect import optimize as opt
    from aiidetect.backbone import BackboneSpec

    ck = tmp_path / "ft.safetensors"
    ck.write_bytes(b"a" * 4096)
    spec = BackboneSpec.from_options(config="tiny-vit", weights=str(ck))
    before = opt.key(opt.backbone_identity(spec))
    st = ck.stat()
    time.sleep(0.05)  # past the file system's timestamp tick, as any later write is
    ck.write_bytes(b"b" * 4096)
    os.utime(ck, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert opt.key(opt.backbone_identity(spec)) != before


def test_the_same_backbone_checkpoint_restored_or_copied_keeps_the_decision(tmp_path, monkeypatch):
    """Keyed by inode and ctime, the decision was lost at every restore from backup (`cp -p`, rsync -a,
    a new inode at the same mtime), every chmod, and on every machine holding its own copy of the weights.
    The same bytes at the same path are the same backbone."""
    import os
    import shutil

    from aiidetect import optimize as opt
    from aiidetect.backbone import BackboneSpec

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    ck = tmp_path / "ft.safetensors"
    ck.write_bytes(b"a" * 4096)
    spec = BackboneSpec.from_options(config="tiny-vit", weights=str(ck))
    before = opt.key(opt.backbone_identity(spec))
    shutil.copy2(ck, tmp_path / "backup")
    os.replace(tmp_path / "backup", ck)  # restored: another inode and ctime, the same bytes and mtime
    os.chmod(ck, 0o600)
    assert opt.key(opt.backbone_identity(spec)) == before
    ck.unlink()
    assert opt.backbone_identity(spec)["weights"]["missing"]


@pytest.mark.parametrize("change", [{"chosen": [1]}, {"chosen": {"runtime": "onnx", "worst_changed_share": "x"}}])
def test_a_decision_of_the_wrong_shape_is_not_served_and_never_stops_a_scan(tmp_path, monkeypatch, change):
    """A decision.json whose identity matches but whose fields are of the wrong type (a damaged or hand-made
    file) raised AttributeError/TypeError out of choose(), which ended every scan of that setup."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    d.update(change)
    dp.write_text(json.dumps(d))
    fast = opt.choose(ctx, ["linear"])
    assert fast is not None and not fast.use and fast.runtime == "torch"
    assert "run `aiidetect optimize` again" in fast.line


def test_an_unchanged_head_is_not_hashed_again_at_every_scan_but_a_rewritten_one_is(tmp_path, monkeypatch):
    """Every scan with an optimize cache hashed every head file again: seconds before the first verdict with
    a few heads of hundreds of MB. A file rewritten in place with its mtime put back must still be read."""
    import os
    import time

    from aiidetect import hashing
    from aiidetect import optimize as opt

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w"
    shutil.copytree(Path(__file__).resolve().parents[2] / "weights" / "univfd", weights / "univfd")
    big = weights / "univfd" / "extra.bin"
    big.write_bytes(b"a" * ((1 << 20) + 1))
    read = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: read.append(Path(p).name) or real(p))

    first = opt.heads_identity([weights])
    assert read.count("extra.bin") == 1
    assert opt.heads_identity([weights]) == first
    assert read.count("extra.bin") == 1  # the second scan took the digest from weights_ids.sqlite

    st = big.stat()
    time.sleep(0.05)  # past the file system's timestamp tick, as any later write is
    big.write_bytes(b"b" * ((1 << 20) + 1))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = opt.heads_identity([weights])
    assert read.count("extra.bin") == 2
    assert changed != first and opt.key({"heads": changed}) != opt.key({"heads": first})


def test_the_torch_fallback_lets_the_onnx_detectors_go_before_building_torch(tmp_path, monkeypatch):
    """A session out of memory is one reason to fall back: the ONNX detectors (their sessions, their
    threads) were still held by the caller's list while torch built its backbone."""
    import gc
    import weakref

    from aiidetect import api
    from aiidetect.api import ScanOptions

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    ctx.fast_path = api.run_context(ScanOptions(detectors=["linear"], backbone_spec=ctx.backbone_spec,
                                                weights_dirs=[tmp_path / "weights"]))[1].fast_path
    ctx.fast_path.decision["candidates"] = [{"candidate": "onnx-int8", "agreement": {"heads": {"linear:p": {}}}}]

    class Held:  # an ONNX detector whose session could not be made
        def describe(self):
            return {"name": "linear:p", "status": "unavailable", "reason": "cannot load ONNX model"}

    dets = [Held()]
    ref = weakref.ref(dets[0])
    seen = []
    monkeypatch.setattr(api, "_create", lambda fams, c: seen.append(gc.collect() >= 0 and ref() is None) or [])
    opts = ScanOptions(detectors=["linear"], backbone_spec=ctx.backbone_spec, weights_dirs=[tmp_path / "weights"])
    fell = api._fast_path_fallback(opts, None, dets, ctx)
    assert fell is not None and fell[1].runtime == "torch" and seen == [True]


def _runs_where_flow_alone_flips(n: int = 40):
    """(reference Run, candidate Run): a linear probe at p 0.5 and a CLIP-Flow head at p 0.3 on every file,
    the same on both runtimes but for file 0, whose flow p_ai moves from 0.0995 to 0.1005 (across the fused
    likely-real threshold 0.1, far from the head's own 0.5), and a camera-EXIF hint toward real. Each
    record's verdict is the pipeline's fusion over all three, as a scan of every family makes it."""
    from aiidetect import optimize as opt
    from aiidetect.fusion import fuse
    from aiidetect.records import DetectorResult, Evidence, Record

    def run(name, flow0):
        recs = []
        for i in range(n):
            dets = {"metadata": DetectorResult("ok", evidence=[Evidence("exif-camera", "real", 0.5, "camera EXIF")]),
                    "linear:p": DetectorResult("ok", p_ai=0.5, extra={"threshold": 0.5}),
                    "flow:f": DetectorResult("ok", p_ai=flow0 if i == 0 else 0.3)}
            out = fuse(dets)
            recs.append(Record(f"{i}.jpg", verdict=out.verdict, p_ai=out.p_ai, detectors=dets))
        return opt.Run(name, "onnx", "int8", recs, 1.0, 1.0)

    return run("torch-float32", 0.0995), run("onnx-int8", 0.1005)


def test_each_detector_set_is_verified_on_its_own_fused_verdicts():
    """optimize compared each head and the fused verdict over every family, and scan served the fast path to
    `-d flow` all the same: fused alone, one head's small int8 shift crossed the fused threshold on a file
    where neither the head's own verdict nor the fusion of all heads moved. Each set is judged on its own."""
    from aiidetect import optimize as opt

    assert opt.detector_sets(["flow", "linear"]) == [
        ("linear",), ("flow",), ("linear", "flow"), ("metadata", "linear"), ("metadata", "flow"),
        ("metadata", "linear", "flow")]
    assert opt.set_key(["flow", "metadata", "linear", "flow"]) == "metadata,linear,flow"
    ref, cand = _runs_where_flow_alone_flips()
    agree = opt.compare(ref, cand, None, opt.detector_sets(["linear", "flow"]))
    assert opt.judge(agree, 0.005, None) is None  # every head and the fused verdict of all: within tolerance
    full = agree["sets"]["metadata,linear,flow"]
    assert {k: full[k] for k in agree["fused"]} == agree["fused"]  # fused again, the records' own verdicts
    opt.judge_sets(agree, 0.005, None)
    status = {k: d["status"] for k, d in agree["sets"].items()}
    assert status == {"linear": "verified", "flow": "refused", "linear,flow": "verified",
                      "metadata,linear": "verified", "metadata,flow": "verified",
                      "metadata,linear,flow": "verified"}
    flow = agree["sets"]["flow"]
    assert flow["verdict_changed"] == 1 and flow["files"] == 40 and flow["worst_changed_share"] == 0.025
    assert flow["reason"] == "fused verdict changed 1/40 verdicts (2.5% > 0.5%)"
    assert opt.compare(ref, cand)["fused"] == agree["fused"]  # without sets, as before


def test_scan_serves_the_fast_path_only_to_the_detector_sets_it_verified(tmp_path, monkeypatch):
    """`scan -d linear` took the int8 fast path of a decision that had compared only the fused verdict of
    every family. A set refused, or one the decision does not list, runs torch and the summary says why;
    a selected family without a head drops out (it is unavailable on either runtime)."""
    from aiidetect import optimize as opt
    from aiidetect.api import ScanOptions, run_context

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    d["chosen"]["detector_sets"]["linear"] = {"status": "refused", "files": 24, "worst_changed_share": 1 / 24,
                                              "reason": "fused verdict changed 1/24 verdicts (4.17% > 0.5%)"}
    dp.write_text(json.dumps(d))
    fast = opt.choose(ctx, ["linear"])
    assert not fast.use and fast.runtime == "torch"
    assert fast.line == ("runtime: torch (the fast path for the detectors linear was refused by `aiidetect optimize` "
                         "on 24 images: fused verdict changed 1/24 verdicts (4.17% > 0.5%))")
    opts = ScanOptions(backbone_spec=ctx.backbone_spec, weights_dirs=[tmp_path / "weights"])
    assert run_context(_with_detectors(opts, ["linear"]))[1].runtime == "torch"
    for fams in (["metadata", "linear"], ["linear", "metadata", "mpft", "flow"]):  # no mpft or flow head here
        fast = opt.choose(ctx, fams)
        assert fast.use and fast.line.startswith("runtime: onnx int8, verified by `aiidetect optimize` on 24 "
                                                 "images: 0.0% verdicts changed"), fast.line
        assert run_context(_with_detectors(opts, fams))[1].runtime == "onnx"
    d["chosen"]["detector_sets"]["linear"]["status"] = "verified"
    dp.write_text(json.dumps(d))
    assert opt.choose(ctx, ["linear"]).line.startswith(
        "runtime: onnx int8, verified by `aiidetect optimize` on 24 images for the detectors linear: ")
    del d["chosen"]["detector_sets"]["linear"]
    dp.write_text(json.dumps(d))
    fast = opt.choose(ctx, ["linear"])
    assert not fast.use and "the fast path for the detectors linear was not verified" in fast.line


def test_a_family_narrowed_to_some_of_its_heads_scans_on_torch(tmp_path, monkeypatch):
    """Each set was verified with every head of its families. A library scan narrowing linear to one of
    its two heads (ScanOptions.extra linear_heads) fuses that head alone, which optimize never compared,
    and was served the fast path of the set `linear`."""
    from aiidetect import optimize as opt

    ctx, _ = _stored_onnx_decision(tmp_path, monkeypatch, head_names=("p", "q"))
    ctx.options = {"linear_heads": ["p"]}
    fast = opt.choose(ctx, ["metadata", "linear"])
    assert not fast.use and fast.runtime == "torch"
    assert fast.line == ("runtime: torch (`aiidetect optimize` verified the fast path with every head of a family; "
                         "this scan runs linear (p of 2 heads))")
    ctx.options = {"linear_heads": ["q", "p"]}
    assert opt.choose(ctx, ["metadata", "linear"]).use
    ctx.options = {"linear_heads": ["nothing-by-that-name"]}  # linear unavailable on both runtimes
    assert opt.choose(ctx, ["metadata", "linear"]) is None
    ctx.options = {"flow_heads": ["p"]}  # another family's filter narrows nothing here
    assert opt.choose(ctx, ["metadata", "linear"]).use


def _with_detectors(opts, fams):
    from dataclasses import replace

    return replace(opts, detectors=list(fams))


def test_a_decision_from_before_detector_sets_serves_only_the_set_it_verified(tmp_path, monkeypatch):
    """A decision stored before optimize compared each detector set verified the fused verdict of every
    family it ran (metadata and the pixel families with heads): that set is still served, any other runs
    torch and asks for a new optimize run."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    del d["chosen"]["detector_sets"]
    dp.write_text(json.dumps(d))
    assert opt.choose(ctx, ["metadata", "linear", "mpft", "flow"]).use
    fast = opt.choose(ctx, ["linear"])
    assert not fast.use and fast.runtime == "torch"
    assert fast.line == ("runtime: torch (an older `aiidetect optimize` verified the fast path's fused verdicts for "
                         "the detectors metadata,linear only, not linear; run `aiidetect optimize` again to verify "
                         "every detector set)")


def test_optimize_table_shows_each_detector_set(capsys, monkeypatch):
    """The per-set agreement is what decides `scan -d ...`: optimize's table shows it beside the candidates."""
    from aiidetect import optimize as opt
    from aiidetect.commands.optimize import _print

    ref, cand = _runs_where_flow_alone_flips()
    agree = opt.compare(ref, cand, None, opt.detector_sets(["linear", "flow"]))
    opt.judge_sets(agree, 0.005, None)
    decision = {"status": "verified", "files": 40, "chosen": {"runtime": "onnx", "dtype": "int8"},
                "candidates": [{"candidate": "onnx-int8", "runtime": "onnx", "dtype": "int8", "status": "verified",
                                "agreement": agree}]}
    monkeypatch.setenv("COLUMNS", "250")
    _print(decision, "table")
    out = capsys.readouterr().out
    assert "fused verdict per detector set" in out
    flow = next(line for line in out.splitlines() if "│ flow " in line)
    assert "refused" in flow and "2.50%" in flow and "fused verdict changed 1/40 verdicts (2.5% > 0.5%)" in flow
    # the candidate, five sets, and the three with metadata as `--watermark never` fuses them
    assert sum("│ verified " in line for line in out.splitlines()) == 9
    assert sum("--watermark never" in line for line in out.splitlines()) == 3


def _runs_where_the_watermark_decides(n: int = 40):
    """(reference Run, candidate Run): a linear probe at p 0.5 on every file but file 0, an SD-size file with
    the Stable Diffusion watermark, where int8 moves the probe from 0.095 to 0.105: its own verdict stays
    (threshold 0.5), the fused one would cross the likely-real threshold (0.1), but the watermark match is
    decisive, so with the default check both runtimes call the file ai-generated."""
    from aiidetect import optimize as opt
    from aiidetect.fusion import fuse
    from aiidetect.metadata.detector import result_from_evidence
    from aiidetect.records import DetectorResult, Evidence, Record

    mark = Evidence("watermark.match", "ai", 5.0, "Stable Diffusion invisible watermark", decisive=True)

    def run(name, p0):
        recs = []
        for i in range(n):
            dets = {"metadata": result_from_evidence([mark] if i == 0 else []),
                    "linear:p": DetectorResult("ok", p_ai=p0 if i == 0 else 0.5, extra={"threshold": 0.5})}
            out = fuse(dets)
            recs.append(Record(f"{i}.png", verdict=out.verdict, p_ai=out.p_ai, detectors=dets))
        return opt.Run(name, "onnx", "int8", recs, 1.0, 1.0)

    return run("torch-float32", 0.095), run("onnx-int8", 0.105)


def test_the_fused_verdicts_are_verified_without_the_watermark_check_too():
    """optimize fused with the default watermark check, where a watermark match decides an SD-size file
    whatever the heads say; `scan --watermark never` fuses that file on the heads alone, where an int8
    shift crosses the fused threshold. The sets with metadata are judged once more as never fuses them."""
    from aiidetect import optimize as opt

    ref, cand = _runs_where_the_watermark_decides()
    assert ref.records[0].verdict == cand.records[0].verdict == "ai-generated"
    agree = opt.compare(ref, cand, None, opt.detector_sets(["linear"]))
    opt.judge_sets(agree, 0.005, None)
    assert agree["sets"]["metadata,linear"]["status"] == "verified"
    never = agree["sets_watermark_never"]
    assert set(never) == {"metadata,linear"}  # without metadata there is no watermark check to leave out
    assert never["metadata,linear"]["status"] == "refused"
    assert never["metadata,linear"]["reason"] == "fused verdict changed 1/40 verdicts (2.5% > 0.5%)"


def test_scan_with_another_watermark_setting_is_served_only_what_was_verified(tmp_path, monkeypatch):
    """A scan with --watermark never was served the fast path verified with the default check. It takes it
    only where the decision verified its set without the check; --watermark always (a match only adds
    decisive evidence, which makes a verdict the same on every runtime) where the default was verified,
    unless optimize also bounded p_ai shifts."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    ctx.options = {"watermark": "never"}
    fast = opt.choose(ctx, ["metadata", "linear"])  # a decision of an optimize that did not verify it
    assert not fast.use and fast.runtime == "torch"
    assert "with the default watermark check, not --watermark never" in fast.line
    assert opt.choose(ctx, ["linear"]).use  # no metadata detector: no watermark check to leave out
    d["chosen"]["detector_sets_watermark_never"] = {"metadata,linear": {
        "status": "refused", "files": 24, "worst_changed_share": 1 / 24,
        "reason": "fused verdict changed 1/24 verdicts (4.17% > 0.5%)"}}
    dp.write_text(json.dumps(d))
    fast = opt.choose(ctx, ["metadata", "linear"])
    assert not fast.use and fast.line == (
        "runtime: torch (the fast path for the detectors metadata,linear with --watermark never was refused by "
        "`aiidetect optimize` on 24 images: fused verdict changed 1/24 verdicts (4.17% > 0.5%))")
    d["chosen"]["detector_sets_watermark_never"]["metadata,linear"].update(status="verified", reason=None,
                                                                          worst_changed_share=0.0)
    dp.write_text(json.dumps(d))
    fast = opt.choose(ctx, ["metadata", "linear"])
    assert fast.use and fast.line.startswith("runtime: onnx int8, verified by `aiidetect optimize` on 24 images "
                                             "with --watermark never: 0.0% verdicts changed")
    ctx.options = {"watermark": "always"}
    assert opt.choose(ctx, ["metadata", "linear"]).use
    d["max_delta_p"] = 0.01
    dp.write_text(json.dumps(d))
    fast = opt.choose(ctx, ["metadata", "linear"])
    assert not fast.use and "not --watermark always" in fast.line
    ctx.options = {"watermark": "auto"}
    assert opt.choose(ctx, ["metadata", "linear"]).use


def test_a_verified_torch_candidate_is_not_said_verified_under_another_fusion(tmp_path, monkeypatch):
    """A decision that chose torch bfloat16 under a fusion model: a scan with --fusion none runs torch as
    always, and its summary said "runtime: torch bfloat16, verified by `aiidetect optimize`", though its
    fused verdicts were never compared under the default rules."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    d["chosen"].update(candidate="torch-bfloat16", runtime="torch", dtype="bfloat16")
    d["fusion"] = {"kind": "model", "name": "fz", "sha256": "0" * 64}
    dp.write_text(json.dumps(d))
    assert opt.choose(ctx, ["linear"]).line.startswith("runtime: torch bfloat16, verified by")  # its own fusion
    fast = opt.choose(ctx, ["linear"], "none")
    assert not fast.use and "verified by" not in fast.line
    assert fast.line.startswith("runtime: torch (not verified for this scan: `aiidetect optimize` verified the torch "
                                "bfloat16 fused verdicts under the fusion model fz, not the default rules (--fusion "
                                "none)")


def test_fused_without_the_watermark_is_what_watermark_never_gives():
    """optimize verifies `--watermark never` from the records of its default-check runs, dropping the
    watermark match: on an SD-size PNG with the Stable Diffusion watermark that must be the metadata
    detector's own `never` result, fused with a head, verdict and p_ai alike."""
    imwatermark = pytest.importorskip("imwatermark")
    cv2 = pytest.importorskip("cv2")
    import io
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from aiidetect import optimize as opt
    from aiidetect.fusion import fuse
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.records import DetectorResult

    a = (np.random.default_rng(0).random((512, 512, 3)) * 60 + 100).astype(np.uint8)
    enc = imwatermark.WatermarkEncoder()
    enc.set_watermark("bytes", b"StableDiffusionV1")
    buf = io.BytesIO()
    Image.fromarray(cv2.cvtColor(enc.encode(cv2.cvtColor(a, cv2.COLOR_RGB2BGR), "dwtDct"),
                                 cv2.COLOR_BGR2RGB)).save(buf, "PNG")
    sample = SimpleNamespace(data=buf.getvalue(), path="x.png", image=None, info={})
    auto, never = (MetadataDetector({"watermark": w}).predict_one(sample) for w in ("auto", "never"))
    assert "watermark.match" in {e.id for e in auto.evidence}
    for p in (0.05, 0.095, 0.3, 0.9):
        head = DetectorResult("ok", p_ai=p, extra={"threshold": 0.5})
        assert fuse({"metadata": auto, "linear:p": head}).verdict == "ai-generated"  # the match decides
        got = fuse(opt._without_watermark({"metadata": auto, "linear:p": head}))
        want = fuse({"metadata": never, "linear:p": head})
        assert (got.verdict, got.p_ai) == (want.verdict, want.p_ai), p


def test_scan_with_other_metadata_evidence_is_not_served_the_default_decision(tmp_path, monkeypatch):
    """optimize fuses with the metadata detector's defaults. The library's `extra={"c2pa": False}` drops
    the C2PA evidence, a signed AI declaration among it (decisive, like a watermark match): the heads then
    decide that file, int8 shifts and all, and no stored record can be re-fused into that (the XMP claims
    counted once with the manifest's come back). Such a scan runs torch and says why. A watermark value
    the check reads as `always` (anything but auto and never) is judged as `always`."""
    from aiidetect import optimize as opt

    ctx, onnx = _stored_onnx_decision(tmp_path, monkeypatch)
    ctx.options = {"watermark": "auto", "c2pa": False}
    fast = opt.choose(ctx, ["metadata", "linear"])
    assert not fast.use and fast.runtime == "torch"
    assert "without the C2PA check" in fast.line, fast.line
    assert opt.choose(ctx, ["linear"]).use  # no metadata detector: nothing of it to leave out
    ctx.options = {"watermark": "auto", "c2pa": True}
    assert opt.choose(ctx, ["metadata", "linear"]).use
    dp = onnx.parent / opt.DECISION
    d = json.loads(dp.read_text())
    d["max_delta_p"] = 0.01
    dp.write_text(json.dumps(d))
    ctx.options = {"watermark": "ALWAYS"}  # ScanOptions.extra passes it unchecked; the check runs on every size
    fast = opt.choose(ctx, ["metadata", "linear"])
    assert not fast.use and "not --watermark always" in fast.line


def test_the_verified_line_names_the_set_and_how_it_was_fused():
    from aiidetect import optimize as opt

    c = {"runtime": "onnx", "dtype": "int8", "worst_changed_share": 0.0, "scan_speedup": 2, "speedup": 3}
    assert " on 24 images: 0.0%" in opt._verified_line(c, 24)
    assert " on 24 images with --watermark never: " in opt._verified_line(c, 24, None, " with --watermark never")
    assert (" on 24 images for the detectors metadata,linear with --watermark never: "
            in opt._verified_line(c, 24, "metadata,linear", " with --watermark never"))


def test_a_decision_is_keyed_by_the_runtimes_this_process_runs(tmp_path, monkeypatch):
    """versions() read the installed metadata: a host that had imported onnxruntime before `pip install -U`
    measured with the old one, and a fresh scan on the new one was served that decision as its own. The
    loaded module's version keys it now; one that matches the metadata (every ordinary install) keeps the key
    earlier versions stored, so their decisions are still served."""
    import onnxruntime

    from aiidetect import optimize as opt
    from aiidetect.extras import installed_versions

    ctx, _ = _stored_onnx_decision(tmp_path, monkeypatch)
    stored = json.loads((opt.decision_dir(opt.identity(ctx.backbone_spec, ctx.weights_dirs)) / opt.DECISION)
                        .read_text())["identity"]["versions"]
    # What earlier versions recorded (the metadata) is what is recorded now: the stored decision above is theirs.
    assert stored == {"aiidetect": opt.versions()["aiidetect"], **installed_versions(("torch", "onnxruntime", "onnxruntime-gpu"))}
    assert opt.choose(ctx, ["linear"]).use
    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")  # this process runs another onnxruntime
    assert opt.versions()["onnxruntime"] == "0.0.1"
    assert opt.choose(ctx, ["linear"]) is None  # not the decision measured with the installed one


def test_both_onnxruntime_distributions_keep_their_installed_versions(monkeypatch):
    """onnxruntime and onnxruntime-gpu installed together share one module, which is neither's for sure:
    its version is not recorded for both (the key would change between an optimize, which imported it,
    and a scan, which had not yet)."""
    import onnxruntime

    from aiidetect import extras
    from aiidetect import optimize as opt

    have = {"onnxruntime": "1.30.0", "onnxruntime-gpu": "1.29.0", "torch": "2.0.0"}
    monkeypatch.setattr(extras, "installed_version", lambda dist: have.get(dist))
    monkeypatch.setattr(onnxruntime, "__version__", "1.30.0")
    v = opt.versions()
    assert (v["onnxruntime"], v["onnxruntime-gpu"]) == ("1.30.0", "1.29.0")
