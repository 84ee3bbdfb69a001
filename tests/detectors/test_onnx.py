"""ONNX export + runtime on the tiny random-init backbone.

Tolerances (stated, checked): fp32 ONNX vs PyTorch fp32 within 1e-4 absolute
on every output; int8 agreement is measured and recorded in the sidecar
(its numbers are reported, only sanity-bounded here); fp16 runs on CUDA only
in practice, and is tested here when this CPU build of ONNX Runtime can run it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")

FP32_TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    from aiidetect.backbone import BackboneSpec, create_backbone

    return create_backbone(BackboneSpec.from_options(config="tiny-vit"))


@pytest.fixture(scope="module")
def linear_head_dir(tiny, tmp_path_factory):
    """A linear head on 'embed' with Platt calibration, saved like a trainer would."""
    from aiidetect.preprocess import make_spec
    from aiidetect.heads import backbone_manifest, save_head

    from aiidetect.testing.layouts import digests_of
    from aiidetect.train_record import record

    g = torch.Generator().manual_seed(1)
    d = tmp_path_factory.mktemp("weights")
    # trained on the first two of three images (the record export onnx carries)
    imgs = d.parent / "probe-images"
    imgs.mkdir()
    for k in range(3):
        (imgs / f"{k}.png").write_bytes(b"not decoded here " + bytes([k]))
    trained_on, keys_file = record(digests_of([str(imgs / "0.png"), str(imgs / "1.png")]), "test",
                                   phashes=[0x1234, None])
    save_head(d / "probe", {"weight": torch.randn(1, tiny.embed_dim, generator=g) * 0.5, "bias": torch.tensor([0.1])},
              {"name": "probe", "detector": "linear", "backbone": backbone_manifest(tiny),
               "preprocessing": make_spec("resize-center-crop", 224), "labels": ["real", "ai"],
               "params": {"feature": "embed"}, "calibration": {"method": "platt", "a": 0.8, "b": -0.2},
               "threshold": 0.5, "training_images": trained_on}, extra_files=keys_file)
    return d


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 3, 224, 224)).astype(np.float32)


@pytest.fixture(scope="module")
def export_fp32(tiny, linear_head_dir, pixels, tmp_path_factory):
    from aiidetect.onnx_export import collect_heads, export_onnx

    heads, skipped = collect_heads(tiny, [linear_head_dir])
    assert [h.name for h in heads] == ["linear:probe"], skipped
    out = tmp_path_factory.mktemp("onnx-fp32")
    side = export_onnx(tiny, out, heads, variant="fp32", agreement_pixels=pixels, skipped=skipped)
    return out, side, heads


def test_sidecar_contract(export_fp32, tiny):
    out, side, _ = export_fp32
    on_disk = json.loads((out / "aiidetect-onnx.json").read_text())
    assert on_disk["graphs"][0]["file"] == side["graphs"][0]["file"]
    assert side["backbone"]["fingerprint"] == tiny.fingerprint
    assert side["opset"] >= 17 and "dynamo" in side["exporter"]["name"]
    g = side["graphs"][0]
    assert g["input"]["shape"][0] == "batch"
    assert g["preprocessing"]["mode"] == "resize-center-crop"
    assert g["outputs"] == ["embed", "linear:probe/logit"]
    h = g["heads"][0]
    assert h["calibration"]["method"] == "platt" and h["labels"] == ["real", "ai"]
    for f, sha in g["files"].items():
        assert (out / f).is_file() and len(sha) == 64


def test_the_export_carries_the_heads_training_record(export_fp32, linear_head_dir):
    """A head served from its ONNX export tells its training images as on torch: the record is copied beside the
    graph, checksummed in the sidecar like the graph's files."""
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.evaluate.overlap import train_overlap
    from aiidetect.testing.layouts import digests_of

    out, side, _ = export_fp32
    g = side["graphs"][0]
    rec = g["heads"][0]["training_images"]
    assert rec["file"] == "linear-probe.train-keys.bin" and rec["count"] == 2 and rec["file"] in g["files"]
    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), device="cpu",
                     weights_dirs=[linear_head_dir], runtime="onnx", onnx_dir=out,
                     options={"onnx_families": ["linear"]})
    dets = create_detectors(["onnx"], ctx)
    imgs = sorted(str(p) for p in (linear_head_dir.parent / "probe-images").iterdir())
    report, _ = train_overlap(dets, digests_of(imgs))
    assert report["linear:probe"] == {"status": "checked", "n": 2, "of": 3, "excluded": True}
    # the perceptual hashes go with it: a copy with other bytes (3 bits off) is a near-duplicate on ONNX too
    assert rec["perceptual"]["file"] == "linear-probe.train-phash.bin" and rec["perceptual"]["file"] in g["files"]
    report, _ = train_overlap(dets, digests_of(imgs), phashes=[None, None, 0x1234 ^ 0b111])
    assert report["linear:probe"]["near"] == {"status": "checked", "n": 1, "threshold": 6, "without_hash": 2}


def test_fp32_matches_pytorch(export_fp32, tiny, pixels, linear_head_dir):
    from aiidetect.onnx_export import build_graph_module, torch_outputs
    from aiidetect.onnx_runtime import load_session

    out, side, heads = export_fp32
    sess = load_session(out / side["graphs"][0]["file"], device="cpu")
    assert sess.provider == "CPUExecutionProvider"
    ref = torch_outputs(build_graph_module(tiny.visual, heads), pixels)
    for bs in (1, 5):  # dynamic batch axis: sizes other than the traced one
        got = sess.run(pixels[:bs])
        for k in ref:
            assert np.abs(got[k] - ref[k][:bs]).max() < FP32_TOL, k
    # the linear output equals the torch detector's own arithmetic
    from aiidetect.linear import LinearHead
    from aiidetect.heads import load_head

    lh = LinearHead.from_head(load_head(linear_head_dir / "probe"))
    np.testing.assert_allclose(sess.run(pixels)["linear:probe/logit"], lh.logits(ref["embed"]), atol=FP32_TOL)
    a = side["graphs"][0]["agreement"]
    assert a["outputs"]["linear:probe/logit"]["max_abs_diff"] < FP32_TOL
    assert a["heads"]["linear:probe"]["verdict_changed"] == 0


def test_int8_agreement_is_measured(tiny, linear_head_dir, pixels, tmp_path):
    from aiidetect.onnx_export import collect_heads, export_onnx
    from aiidetect.onnx_runtime import load_session

    heads, _ = collect_heads(tiny, [linear_head_dir])
    side = export_onnx(tiny, tmp_path, heads, variant="int8", agreement_pixels=pixels)
    g = side["graphs"][0]
    assert "quantize_dynamic" in g["conversion"]["quantizer"]
    a = g["agreement"]
    assert a["files"] == len(pixels)
    d = a["outputs"]["linear:probe/logit"]["max_abs_diff"]
    assert 0 < d < 5.0  # measured, not zero (it is quantized), and not garbage
    assert a["embed_cosine_min"] > 0.9
    assert 0 <= a["heads"]["linear:probe"]["verdict_changed_share"] <= 1
    sess = load_session(tmp_path / g["file"], device="cpu")
    assert sess.run(pixels[:3])["embed"].shape == (3, tiny.embed_dim)


def test_int8_static_with_calibration(tiny, linear_head_dir, pixels, tmp_path):
    from aiidetect.onnx_export import collect_heads, export_onnx

    heads, _ = collect_heads(tiny, [linear_head_dir])
    side = export_onnx(tiny, tmp_path, heads, variant="int8", int8_mode="static", calibration_pixels=pixels[:4],
                       agreement_pixels=pixels)
    g = side["graphs"][0]
    assert g["conversion"]["calibration_images"] == 4
    assert np.isfinite(g["agreement"]["outputs"]["embed"]["max_abs_diff"])


def test_fp16_variant(tiny, linear_head_dir, pixels, tmp_path):
    from aiidetect.onnx_export import collect_heads, export_onnx

    heads, _ = collect_heads(tiny, [linear_head_dir])
    side = export_onnx(tiny, tmp_path, heads, variant="fp16", agreement_pixels=pixels[:2])
    g = side["graphs"][0]
    assert g["variant"] == "fp16" and g["input"]["dtype"] == "float32"
    # CPU ORT runs fp16 graphs (slowly, via casts); agreement must still be close
    assert g["agreement"]["outputs"]["linear:probe/logit"]["max_abs_diff"] < 0.05


def test_onnx_detectors_match_torch_detectors(export_fp32, tiny, linear_head_dir, dev_dir):
    """Same names, same result fields, same numbers (within tolerance) as the torch path."""
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.pipeline import run_detectors

    paths = sorted(str(p) for p in (dev_dir / "real").rglob("*.jpg"))[:3]
    assert paths
    spec = BackboneSpec.from_options(config="tiny-vit")
    t_ctx = RunContext(backbone_spec=spec, device="cpu", weights_dirs=[linear_head_dir])
    o_ctx = RunContext(backbone_spec=spec, device="cpu", weights_dirs=[linear_head_dir], runtime="onnx",
                       onnx_dir=export_fp32[0], options={"onnx_families": ["linear"]})
    t_recs = run_detectors(paths, create_detectors(["linear"], t_ctx), batch_size=2)
    o_recs = run_detectors(paths, create_detectors(["onnx"], o_ctx), batch_size=2)
    for t, o in zip(t_recs, o_recs):
        assert list(t.detectors) == list(o.detectors) == ["linear:probe"]
        td, od = t.detectors["linear:probe"].to_dict(), o.detectors["linear:probe"].to_dict()
        assert od["status"] == "ok" and od.pop("runtime") == "onnx" and od.pop("provider") == "CPUExecutionProvider"
        assert set(td) == set(od)
        assert td["dtype"] == od["dtype"] == "float32"
        assert abs(td["score"] - od["score"]) < FP32_TOL
        assert abs(td["p_ai"] - od["p_ai"]) < FP32_TOL
        assert t.verdict == o.verdict


def test_missing_export_is_unavailable(tmp_path):
    from aiidetect.detectors import RunContext, create_detectors

    dets = create_detectors(["onnx"], RunContext(runtime="onnx", onnx_dir=tmp_path))
    assert dets[0].describe()["status"] == "unavailable"
    assert "export onnx" in dets[0].describe()["reason"]


def test_installed_heads_the_export_lacks_are_listed_unavailable_as_on_torch(export_fp32, linear_head_dir, tmp_path):
    """A head trained after the export was silently not run, and a family with no head had no entry at all,
    where the torch runtime lists both as unavailable with the reason."""
    import shutil

    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors

    w = tmp_path / "w"
    shutil.copytree(linear_head_dir, w)
    shutil.copytree(w / "probe", w / "later")
    m = json.loads((w / "later" / "manifest.json").read_text())
    (w / "later" / "manifest.json").write_text(json.dumps({**m, "name": "later"}))
    spec = BackboneSpec.from_options(config="tiny-vit")
    fams = ["linear", "flow"]
    torch_rows = create_detectors(fams, RunContext(backbone_spec=spec, device="cpu", weights_dirs=[w]))
    ctx = RunContext(backbone_spec=spec, device="cpu", weights_dirs=[w], runtime="onnx", onnx_dir=export_fp32[0],
                     options={"onnx_families": fams})
    rows = {d.name: d.describe() for d in create_detectors(["onnx"], ctx)}
    assert sorted(rows) == sorted(d.name for d in torch_rows) == ["flow", "linear:later", "linear:probe"]
    assert rows["linear:probe"]["runtime"] == "onnx"
    assert rows["linear:later"]["status"] == "unavailable"
    assert rows["linear:later"]["reason"].startswith(f"not in the ONNX export {export_fp32[0]}; re-export it")
    flow = next(d for d in torch_rows if d.name == "flow").describe()
    assert rows["flow"] == flow and flow["status"] == "unavailable"
    # only the heads asked for (--linear-heads): the head left out is not listed
    ctx.options["linear_heads"] = ["probe"]
    assert sorted(d.name for d in create_detectors(["onnx"], ctx)) == ["flow", "linear:probe"]
    # ...and an exported head not asked for does not run (torch builds only those asked for)
    ctx.options["linear_heads"] = ["later"]
    torch_ctx = RunContext(backbone_spec=spec, device="cpu", weights_dirs=[w], options={"linear_heads": ["later"]})
    assert sorted(d.name for d in create_detectors(["onnx"], ctx)) == ["flow", "linear:later"] == sorted(
        d.name for d in create_detectors(fams, torch_ctx))


def test_a_copy_of_the_export_elsewhere_gives_the_same_identity(export_fp32, tmp_path):
    """A record's `identity` compares results across the machines of a cluster: it held the graph files'
    mtimes, so the same export copied to another machine (or folder) named every result otherwise."""
    import os
    import shutil

    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.result_cache import identity_key

    src = export_fp32[0]
    copy = tmp_path / "elsewhere"
    shutil.copytree(src, copy, copy_function=shutil.copyfile)   # new mtimes, as a plain copy gives
    for f in copy.iterdir():
        os.utime(f, ns=(1, 10**18))

    def identity(onnx_dir):
        (d,) = create_detectors(["onnx"], RunContext(runtime="onnx", onnx_dir=onnx_dir))
        return identity_key(d.cache_identity(), {})

    assert identity(copy) == identity(src)


def test_an_export_that_no_longer_matches_its_sidecar_is_unavailable(export_fp32, tmp_path):
    """ONNX Runtime loads a graph whose weights were changed after the export without complaint, and the
    scan scored with them; the sidecar's checksums were written, never read. Its preprocessing block was
    used unchecked too."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.onnx_sidecar import SIDECAR

    src, side, _ = export_fp32
    graph = side["graphs"][0]["file"]

    def detector(onnx_dir):
        (d,) = create_detectors(["onnx"], RunContext(runtime="onnx", onnx_dir=onnx_dir))
        return d.describe()

    assert detector(src).get("status") != "unavailable"
    changed = tmp_path / "changed"
    shutil.copytree(src, changed)
    m = onnx.load(str(changed / graph))
    t = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5, t.name))
    onnx.save(m, str(changed / graph))
    got = detector(changed)
    assert got.get("status") == "unavailable" and f"{graph} differs from its checksum in the sidecar" in got["reason"]

    for case, edit, why in (("no-files", lambda g: g.pop("files"), "no checksum"),
                            ("outside", lambda g: g.update(files={**g["files"], "../x.onnx_data": "0" * 64}),
                             "'../x.onnx_data' is outside the export's folder"),
                            ("huge-crop", lambda g: g["preprocessing"].update(size=100000), "not 100000")):
        d = tmp_path / case
        shutil.copytree(src, d)
        sc = json.loads((d / SIDECAR).read_text())
        edit(sc["graphs"][0])
        (d / SIDECAR).write_text(json.dumps(sc))
        got = detector(d)
        assert got.get("status") == "unavailable" and why in got["reason"], (case, got)
    for case, text in (("nested", "[" * 100_000 + "]" * 100_000), ("list", "[1]")):  # failed the whole scan
        d = tmp_path / case
        shutil.copytree(src, d)
        (d / SIDECAR).write_text(text)
        got = detector(d)
        assert got.get("status") == "unavailable" and SIDECAR in got["reason"], (case, got)


@pytest.fixture(scope="module")
def all_heads_dir(tiny, linear_head_dir, tmp_path_factory):
    """linear + CLIP-Flow (embed + a CLS layer) + MPFT (LoRA encoder pass) heads, random but valid."""
    import shutil

    from aiidetect.flow.model import FeatureFlow, FlowConfig
    from aiidetect.mpft.model import MPFTModel
    from aiidetect.preprocess import make_spec
    from aiidetect.heads import backbone_manifest, save_head

    d = tmp_path_factory.mktemp("allheads")
    shutil.copytree(linear_head_dir / "probe", d / "probe")
    bm = backbone_manifest(tiny)
    spec = make_spec("resize-center-crop", 224)
    torch.manual_seed(0)
    cfg = FlowConfig(dim=tiny.embed_dim + tiny.width, blocks=2, hidden=32)
    flow = FeatureFlow(cfg).eval()
    save_head(d / "flowhead", {f"flow.{k}": v for k, v in flow.state_dict().items()},
              {"name": "flowhead", "detector": "flow", "backbone": bm, "preprocessing": spec, "labels": ["real"],
               "params": {"flow": cfg.to_dict(), "features": {"outputs": ["embed", "cls_1"], "layers": [1]}},
               "calibration": {"nll_mean": 100.0, "nll_std": 20.0, "threshold_z": 2.0, "slope": 1.5, "fpr": 0.01}})
    mp = MPFTModel(tiny.visual, ["real", "sd", "mj"], adapter={"mode": "lora", "rank": 2})
    with torch.no_grad():
        for p in mp.adapter.parameters():
            p.normal_(0, 0.05)  # LoRA B starts at zero: make the adapter actually change the encoder
    save_head(d / "mpfthead", {k: v for k, v in mp.trainable_state().items()},
              {"name": "mpfthead", "detector": "mpft", "backbone": bm, "preprocessing": spec,
               "labels": ["real", "sd", "mj"], "params": mp.params(), "calibration": {"method": "temperature", "temperature": 1.5}})
    return d


@pytest.fixture(scope="module")
def export_all(tiny, all_heads_dir, pixels, tmp_path_factory):
    from aiidetect.onnx_export import collect_heads, export_onnx

    heads, skipped = collect_heads(tiny, [all_heads_dir])
    assert sorted(h.name for h in heads) == ["flow:flowhead", "linear:probe", "mpft:mpfthead"], skipped
    out = tmp_path_factory.mktemp("onnx-all")
    return out, export_onnx(tiny, out, heads, variant="fp32", agreement_pixels=pixels[:3]), heads


def test_every_head_exports_and_matches_pytorch(tiny, export_all, pixels):
    """One graph, all three head families; every output within FP32_TOL of PyTorch."""
    from aiidetect.onnx_export import build_graph_module, torch_outputs
    from aiidetect.onnx_runtime import load_session

    tmp_path, side, heads = export_all
    g = side["graphs"][0]
    assert len(side["graphs"]) == 1
    assert set(g["outputs"]) == {"embed", "linear:probe/logit", "flow:flowhead/loglik", "mpft:mpfthead/logit",
                                 "mpft:mpfthead/attribution"}
    sess = load_session(tmp_path / g["file"], device="cpu")
    ref = torch_outputs(build_graph_module(tiny.visual, heads), pixels[:4])
    got = sess.run(pixels[:4])
    for k, v in ref.items():
        scale = max(1.0, float(np.abs(v).max()))  # the flow's log-density is O(100): relative for it
        assert np.abs(got[k] - v).max() / scale < FP32_TOL, k
    # MPFT's adapted encoder really differs from the frozen one (a separate pass, not the shared embed)
    assert got["mpft:mpfthead/attribution"].shape == (4, 3)
    from aiidetect.detectors.onnx import head_results

    metas = {h["name"]: h for h in g["heads"]}
    fr = head_results(metas["flow:flowhead"], got)
    assert fr[0].score_kind == "flow-nll-z" and {"nll", "z", "threshold_z"} <= set(fr[0].extra)
    mr = head_results(metas["mpft:mpfthead"], got)
    assert mr[0].extra["attribution"][0]["label"] in ("real", "sd", "mj")


def test_onnx_scan_matches_torch_scan_for_every_family(export_all, all_heads_dir, dev_dir):
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.pipeline import run_detectors

    paths = sorted(str(p) for p in (dev_dir / "real").rglob("*.jpg"))[:2]
    spec = BackboneSpec.from_options(config="tiny-vit")
    fams = ["linear", "mpft", "flow"]
    t_recs = run_detectors(paths, create_detectors(fams, RunContext(backbone_spec=spec, device="cpu",
                                                                    weights_dirs=[all_heads_dir])))
    o_ctx = RunContext(backbone_spec=spec, device="cpu", weights_dirs=[all_heads_dir], runtime="onnx",
                       onnx_dir=export_all[0], options={"onnx_families": fams})
    o_recs = run_detectors(paths, create_detectors(["onnx"], o_ctx))
    for t, o in zip(t_recs, o_recs):
        assert sorted(t.detectors) == sorted(o.detectors) == ["flow:flowhead", "linear:probe", "mpft:mpfthead"]
        for name in t.detectors:
            td, od = t.detectors[name].to_dict(), o.detectors[name].to_dict()
            assert od.pop("runtime") == "onnx" and od.pop("provider")
            assert set(td) == set(od), (name, td)
            assert td["status"] == od["status"] == "ok", (td, od)
            assert abs(td["p_ai"] - od["p_ai"]) < 1e-3 and td["score_kind"] == od["score_kind"], name


def test_cli_export_then_scan_runtime_onnx(linear_head_dir, dev_dir, tmp_path):
    """`aiidetect export onnx` then `aiidetect scan --runtime onnx`: the detector, its fields and the provider."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import jsonl, run_cli

    out = tmp_path / "onnx"
    r = run_cli("export", "onnx", "-o", str(out), "--backbone-config", "tiny-vit", "--weights-dir", str(linear_head_dir),
                "--detectors", "linear")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["graphs"][0]["outputs"] == ["embed", "linear:probe/logit"]
    img = next((dev_dir / "real").rglob("*.jpg"))
    r = run_cli("scan", str(img), "--runtime", "onnx", "--onnx", str(out), "--backbone-config", "tiny-vit",
                "--weights-dir", str(linear_head_dir), "-d", "linear", "-f", "jsonl", "-q")
    assert r.returncode in (0, 1), r.stderr
    rec = jsonl(r.stdout)[0]
    d = rec["detectors"]["linear:probe"]
    assert d["status"] == "ok" and d["runtime"] == "onnx" and d["provider"] == "CPUExecutionProvider"
    assert d["score_kind"] == "logit"


def test_a_head_changed_since_the_fusion_model_is_left_out_on_onnx_as_on_torch(export_fp32, linear_head_dir):
    """A fusion model records each head's tensors (head_sha256); torch scans left out a head retrained since,
    but an ONNX scan (--runtime onnx, or the fast path `aiidetect optimize` chose) of an export made after
    the retraining ran the new head through the old calibration: its detectors had no head folder to read."""
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.fusion import without_retrained
    from aiidetect.heads import read_manifest

    out, side, _ = export_fp32
    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), device="cpu",
                     weights_dirs=[linear_head_dir], runtime="onnx", onnx_dir=out,
                     options={"onnx_families": ["linear"]})
    dets = create_detectors(["onnx"], ctx)
    digest = read_manifest(linear_head_dir / "probe")["files"]["head.safetensors"]

    def model(sha):
        return {"detector": "fusion", "name": "fz", "threshold": {"ai": 0.9, "real": 0.1},
                "params": {"detectors": {"linear:probe": {"weight": 1.0, "calibration": {"method": "none"},
                                                          "head_sha256": sha}}}}

    assert without_retrained(model(digest), dets) == (model(digest), None)  # the head it was fitted on: used
    kept, note = without_retrained(model("0" * 64), dets)
    assert kept is None and "linear:probe changed since" in note, note


def test_an_exported_head_under_the_shipped_name_is_said_unless_it_is_the_shipped_one(export_fp32, tmp_path):
    """The torch runtime says so of a user's head named linear:univfd that is not the pinned one; an ONNX export
    made from such a head (or from a univfd planted before the pin) ran from --onnx without a word, its results
    reading as the shipped head's."""
    import shutil

    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.detectors.heads import exported_manifest
    from aiidetect.heads import SHIPPED_HEADS

    copy = tmp_path / "export"
    shutil.copytree(export_fp32[0], copy)
    side = json.loads((copy / "aiidetect-onnx.json").read_text())
    [h] = side["graphs"][0]["heads"]
    h.update(name="linear:univfd", head="univfd")

    def notes(**meta) -> list[str]:
        (copy / "aiidetect-onnx.json").write_text(json.dumps({**side, "graphs": [
            {**side["graphs"][0], "heads": [{**h, **meta}]}]}))
        ctx = RunContext(runtime="onnx", onnx_dir=copy)
        create_detectors(["onnx"], ctx)
        return [n for n in ctx.notes if "aiidetect ships" in n]

    [said] = notes()  # the tiny probe's tensors
    assert said.startswith(f"head linear:univfd in the ONNX export {copy} is not the linear:univfd head")
    real = exported_manifest(json.loads((REPO / "weights" / "univfd" / "manifest.json").read_text()))
    pinned = SHIPPED_HEADS[("linear", "univfd")]["head.safetensors"]
    assert notes(head_sha256=pinned, manifest=real) == []
    assert len(notes(head_sha256=pinned, manifest={**real, "threshold": 0.01})) == 1
