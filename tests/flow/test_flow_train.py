"""CLIP-Flow end to end on a random-init tiny ViT: train on a few small real
photos, check held-out proxies score above held-out reals, then run the head
through the detector registry, `scan`, and the `train flow` command."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aiidetect.backbone import BackboneSpec, create_backbone  # noqa: E402
from aiidetect.detectors import RunContext, UnavailableDetector, create_detectors, feature_key  # noqa: E402
from aiidetect.feature_cache import FeatureCache, encode_images  # noqa: E402
from aiidetect.flow.train import FitConfig, TrainFlowConfig, make_proxy_pixels, train_flow_head  # noqa: E402
from aiidetect.preprocess import to_uint8  # noqa: E402

from conftest import jsonl, run_cli_in_process  # noqa: E402

N_REAL = 60  # a flow needs photos >> what it can memorise; 60 small ones decode in seconds
# A random-init ViT averages its random patch filters over the image, so it mostly sees content
# that is periodic on its patch grid: the up-sampling checkerboard is the proxy kind it can
# separate (see docs/detectors/clip-flow.md). A pretrained CLIP sees the others too.
KINDS = ("periodic_peaks",)


@pytest.fixture(scope="module")
def small_reals(tmp_path_factory, dev_dir):
    """A few dev real photos, shrunk to ~256 px so the test decodes fast."""
    from aiidetect.decode import load_rgb

    out = tmp_path_factory.mktemp("reals")
    rows = [r for r in csv.DictReader(open(dev_dir / "manifest.csv")) if r["label"] == "real"][:N_REAL]
    for k, r in enumerate(rows):
        img = load_rgb(dev_dir / r["file"], draft=512)
        s = 256 / min(img.size)
        img.resize((max(224, round(img.width * s)), max(224, round(img.height * s)))).save(out / f"real_{k:02d}.png")
    return out


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(BackboneSpec.from_options(config="tiny-vit"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_reals, backbone):
    wdir = tmp_path_factory.mktemp("flow-weights")
    cfg = TrainFlowConfig(kinds=KINDS, layers=(0,), proxies_per_image=4, val_fraction=0.3, seed=0, blocks=4,
                          hidden=64, fit=FitConfig(steps=300, batch=16, noise=0.2, seed=0))
    cache = FeatureCache(tmp_path_factory.mktemp("cache") / "f.sqlite")
    manifest = train_flow_head(backbone, [str(small_reals)], wdir / "tiny-flow", "tiny-flow", cfg, cache=cache)
    return wdir, manifest


def test_training_separates_held_out_proxies(trained):
    _, m = trained
    met = m["metrics"]
    assert m["data"]["real"]["n_val"] >= 15 and m["data"]["proxies"]["n_val"] >= 60
    # 18 held-out reals vs 72 held-out proxies: chance is 0.5 +- 0.08
    assert met["auroc_real_vs_proxy_val"] >= 0.7, met
    assert met["nll_per_dim"]["proxy_val"] > met["nll_per_dim"]["real_val"]
    cal = m["calibration"]
    assert cal["achieved_fpr"] <= cal["fpr"] + 1e-9 and cal["nll_std"] > 0
    assert m["params"]["features"]["outputs"] == ["embed", "cls_0"]
    assert m["threshold"]["fpr_target"] == 0.01


def test_detector_scores_samples(trained, small_reals, backbone):
    wdir, m = trained
    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), device="cpu", weights_dirs=[wdir])
    dets = create_detectors(["flow"], ctx)
    assert [d.name for d in dets] == ["flow:tiny-flow"]
    det = dets[0]
    (req,) = det.feature_requests()
    assert req.encoder_key == backbone.fingerprint and req.layers == (0,)
    from aiidetect.decode import load_rgb

    reals = [to_uint8(load_rgb(p), req.preprocess) for p in sorted(small_reals.glob("*.png"))]
    proxies = [make_proxy_pixels(u8, KINDS, seed=7, copy=0)[0] for u8 in reals]
    imgs = reals + proxies
    feats = encode_images(backbone, imgs, req.preprocess, req.layers)
    key = feature_key(req)
    per_sample = [{key: {k: v[i] for k, v in feats.items()}} for i in range(len(imgs))]
    per_sample.append({})  # a sample the pipeline had no features for
    res = det.predict([None] * len(per_sample), per_sample)
    assert len(res) == len(per_sample)
    ok = res[:-1]
    assert all(r.status == "ok" and 0.0 <= r.p_ai <= 1.0 and r.score_kind == "flow-nll-z" for r in ok)
    assert all({"nll", "z", "nll_per_dim"} <= set(r.to_dict()) for r in ok)
    assert res[-1].status == "error" and "features" in res[-1].reason
    z_real = np.array([r.score for r in ok[: len(reals)]])
    z_proxy = np.array([r.score for r in ok[len(reals):]])
    assert z_proxy.mean() > z_real.mean()


def test_backbone_mismatch_and_missing_heads(trained, tmp_path):
    wdir, _ = trained
    other = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit", seed=1), device="cpu",
                       weights_dirs=[wdir])
    (d,) = create_detectors(["flow"], other)
    assert isinstance(d, UnavailableDetector) and "fingerprint" in d.reason
    empty = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), weights_dirs=[tmp_path])
    (d,) = create_detectors(["flow"], empty)
    assert isinstance(d, UnavailableDetector) and "train flow" in d.reason


def test_scan_uses_the_head(trained, small_reals):
    wdir, _ = trained
    img = sorted(small_reals.glob("*.png"))[0]
    # in-process: the flow head's fields are the question (a subprocess paid a torch import)
    res = run_cli_in_process("scan", str(img), "--detectors", "flow", "--backbone-config", "tiny-vit", "--weights-dir",
                             str(wdir), "--format", "jsonl", "--device", "cpu", "-q")
    assert res.returncode in (0, 1), res.stderr
    (rec,) = jsonl(res.stdout)
    flow = rec["detectors"]["flow:tiny-flow"]
    assert flow["status"] == "ok" and flow["score_kind"] == "flow-nll-z"
    assert isinstance(flow["nll"], float) and isinstance(flow["z"], float) and 0 <= flow["p_ai"] <= 1


def test_train_flow_command(small_reals, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from aiidetect.cli import app

    # what the command writes does not depend on how many photos: 12 encode in a fraction of the time of 60
    reals = tmp_path / "reals"
    reals.mkdir()
    for p in sorted(small_reals.glob("*.png"))[:12]:
        shutil.copy(p, reals)
    out = tmp_path / "h"
    res = CliRunner().invoke(app, ["train", "flow", "--real", str(reals), "--backbone-config", "tiny-vit",
                                   "--out", str(out), "--steps", "5", "--blocks", "1", "--hidden", "8",
                                   "--proxies-per-image", "1", "--proxy-kinds", "periodic_peaks,hf_phase",
                                   "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["detector"] == "flow" and m["params"]["proxies"]["kinds"] == ["periodic_peaks", "hf_phase"]
    assert (out / "head.safetensors").is_file()
    bad = CliRunner().invoke(app, ["train", "flow", "--real", str(reals), "--proxy-kinds", "nope",
                                   "--backbone-config", "tiny-vit"])
    assert bad.exit_code == 2


def test_only_real_rows_of_a_manifest_are_used(tmp_path):
    from aiidetect.flow.train import load_sources, select_reals

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text("file,label,generator\na.png,real,\nb.png,ai,sdxl\nc.png,unknown,\n")
    items = load_sources([str(tmp_path / "m.csv")])
    assert [(i.label, i.generator) for i in items] == [(0, "real"), (1, "sdxl")]
    assert [i.path for i in select_reals(items, None, 0)] == [str(tmp_path / "a.png")]
    plain = tmp_path / "archive"
    (plain / "2020").mkdir(parents=True)
    (plain / "2020" / "x.jpg").write_bytes(b"")
    assert [i.label for i in load_sources([str(plain)])] == [0]
    assert [i.label for i in load_sources([str(plain)], plain_label=1)] == [1]


def test_proxy_features_are_cached(small_reals, backbone, tmp_path):
    """Re-training must not run the backbone again: the second pass is served from the cache."""
    import dataclasses

    from aiidetect.flow.train import proxy_features
    from aiidetect.preprocess import make_spec

    paths = [str(p) for p in sorted(small_reals.glob("*.png"))[:3]]
    spec = make_spec("center-crop", backbone.image_size)
    cache = FeatureCache(tmp_path / "c.sqlite")
    kinds = ["periodic_peaks", "hf_phase"]
    f1, src1, k1, fail1 = proxy_features(backbone, paths, spec, (0,), kinds, 2, seed=5, cache=cache)

    def boom(*a, **k):
        raise AssertionError("backbone ran although every proxy feature was cached")

    offline = dataclasses.replace(backbone)
    offline.encode = boom
    f2, src2, k2, fail2 = proxy_features(offline, paths, spec, (0,), kinds, 2, seed=5, cache=cache)
    assert not fail1 and not fail2 and k1 == k2 and list(src1) == list(src2) == [0, 0, 1, 1, 2, 2]
    assert all(np.array_equal(f1[o], f2[o]) for o in ("embed", "cls_0"))


def test_occlusion_map_through_the_flow_detector(trained, small_reals):
    """The report's heat map works through a CLIP-Flow head: the unoccluded P(AI) is
    what the scan pipeline gives the same file."""
    from aiidetect.explain.occlusion import occlusion_maps
    from aiidetect.pipeline import run_detectors

    wdir, _ = trained
    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), device="cpu", weights_dirs=[wdir])
    dets = create_detectors(["flow"], ctx)
    img = str(sorted(small_reals.glob("*.png"))[1])
    (m,) = occlusion_maps(img, dets, grid=4)
    (rec,) = run_detectors([img], dets)
    assert m["detector"] == "flow:tiny-flow"
    assert abs(m["base_p"] - rec.detectors["flow:tiny-flow"].p_ai) < 1e-5
    d = np.asarray(m["deltas"])
    assert d.shape == (4, 4) and np.isfinite(d).all() and np.abs(d).max() > 0


def test_ai_validation_says_what_it_was_given(backbone, tmp_path):
    """--ai with files none of which decode (or with no AI rows) gave no report and no word about it,
    and the manifest's data.ai_validation said "n": 3 for three files never read. The files are named
    on the log, counted as failed, and a warning says there is no AI validation."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("real", "ai"):
        (tmp_path / part).mkdir()
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "real" / f"{k}.png")
    for k in range(3):
        (tmp_path / "ai" / f"{k}.png").write_bytes(b"not a png %d" % k)  # three files, not copies of one
    cfg = TrainFlowConfig(kinds=KINDS, val_fraction=0.3, blocks=1, hidden=8, fit=FitConfig(steps=2, batch=4))
    said = []
    m = train_flow_head(backbone, [str(tmp_path / "real")], tmp_path / "h", "h", cfg, ai_sources=[str(tmp_path / "ai")],
                        log=said.append)
    assert m["data"]["ai_validation"]["n"] == 0 and m["data"]["ai_validation"]["n_failed"] == 3
    assert "ai_validation" not in m["metrics"]
    assert any(w.startswith("--ai: no AI image to validate on (3 AI-labelled, 3 of them unreadable)")
               for w in m["warnings"]), m["warnings"]
    assert sum(s.startswith("skipped ") for s in said) == 3, said


def test_a_plain_archive_keeps_to_its_folder(tmp_path):
    """--real ARCHIVE with a link `evil -> /` inside took every image on the machine as a real photo."""
    from aiidetect.flow.train import load_sources
    from aiidetect.train.data import LeftOut

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "y.jpg").write_bytes(b"")
    plain = tmp_path / "archive"
    plain.mkdir()
    (plain / "x.jpg").write_bytes(b"")
    (plain / "evil").symlink_to(tmp_path / "out")
    (plain / "z.jpg").symlink_to(tmp_path / "out" / "y.jpg")
    stats = LeftOut()
    assert [i.path for i in load_sources([str(plain)], link_stats=stats)] == [str(plain / "x.jpg")]
    assert stats.outside == 2
    # followed, evil/y.jpg and z.jpg are one photo twice: used once, as train.data uses a copy
    stats = LeftOut()
    assert len(load_sources([str(plain)], follow_links=True, link_stats=stats)) == 2
    assert stats.copies == [(str(plain / "z.jpg"), str(plain / "evil" / "y.jpg"))]
    (plain / "z.jpg").unlink()
    assert len(load_sources([str(plain)], follow_links=True)) == 2


def test_one_photo_from_two_sources_is_used_once(tmp_path):
    """flow loaded its --real sources one at a time, so the check eval, calibrate, linear and mpft make
    (one image from two sources) never ran: a folder given with its subfolder, or a manifest beside the
    folder it lists, trained and calibrated the flow on doubled photos in silence. Each photo is one
    photo now, as in eval: used once and said. Empty files are never hashed: one file is found as one."""
    import os

    from aiidetect.flow.train import load_flow_data, load_sources
    from aiidetect.train.data import LeftOut

    reals = tmp_path / "reals"
    (reals / "sub").mkdir(parents=True)
    for i in range(3):
        (reals / f"a{i}.png").write_bytes(b"")
    (reals / "sub" / "b.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text("file,label\nreals/a0.png,real\n")
    stats = LeftOut()
    assert len(load_sources([str(tmp_path / "m.csv"), str(reals)], link_stats=stats)) == 4
    assert stats.copies == [(str(reals / "a0.png"), str(reals / "a0.png"))]
    assert len(load_sources([str(tmp_path / "m.csv"), str(reals / "sub")])) == 2
    data = load_flow_data([str(reals), str(reals / "sub")])
    assert sorted(os.path.basename(i.path) for i in data.reals) == ["a0.png", "a1.png", "a2.png", "b.png"]
    assert "b.png (given twice)" in data.real_links.note()


def _no_backbone(monkeypatch):
    import aiidetect.backbone

    def refuse(*a, **k):
        raise AssertionError("the backbone was built before the data sources were checked")

    monkeypatch.setattr(aiidetect.backbone, "create_backbone", refuse)


def _four_reals(tmp_path):
    """reals/ holding four files of distinct bytes, a0-a3.png, and an empty ais/."""
    reals, ais = tmp_path / "reals", tmp_path / "ais"
    reals.mkdir()
    ais.mkdir()
    for i in range(4):
        (reals / f"a{i}.png").write_bytes(b"real %d" % i)
    return reals, ais


def test_a_copy_of_a_real_photo_among_the_ai_images_is_refused(tmp_path, monkeypatch):
    """--real and --ai were compared by path only: a photo copied into the AI folder was a held-out
    "AI" image the validation report scored against itself as a real."""
    from aiidetect.flow.train import load_flow_data

    reals, ais = _four_reals(tmp_path)
    (ais / "g.png").write_bytes(b"ai")
    (ais / "dup.png").write_bytes(b"real 2")
    with pytest.raises(ValueError, match=r"dup\.png \(AI\) = .*a2\.png \(real\)"):
        load_flow_data([str(reals)], [str(ais)])
    _no_backbone(monkeypatch)
    r = run_cli_in_process("train", "flow", "--real", str(reals), "--ai", str(ais), "--backbone-config", "tiny-vit",
                           "--out", str(tmp_path / "h"), "--device", "cpu")
    assert r.returncode == 2 and "dup.png (AI) = " in r.stderr and "give each image once" in r.stderr, r.stderr


def test_a_copy_with_the_same_label_is_used_once_on_its_own_side(tmp_path):
    """A photo twice among the reals (or an AI image twice among --ai) stopped train flow; it is used once,
    counted in that side's summary. A copy of an --ai image among the --real manifest's AI rows (which
    flow ignores) leaves the --ai image in the validation set, and too few reals once copies are left out
    is the usual error."""
    from aiidetect.flow.train import load_flow_data

    reals, ais = _four_reals(tmp_path)
    (reals / "b.png").write_bytes(b"real 1")
    for name in ("g.png", "h.png"):
        (ais / name).write_bytes(b"ai")
    data = load_flow_data([str(reals)], [str(ais)])
    assert [i.path for i in data.reals] == [str(reals / f"a{i}.png") for i in range(4)]
    assert data.real_links.copies == [(str(reals / "b.png"), str(reals / "a1.png"))]
    assert [i.path for i in data.ai_items] == [str(ais / "g.png")]
    assert data.ai_links.copies == [(str(ais / "h.png"), str(ais / "g.png"))]
    # the --real manifest's own AI row, a copy of an --ai image: the --ai image stays
    (ais / "h.png").unlink()
    (tmp_path / "m.csv").write_text("file,label\n" + "".join(f"reals/a{i}.png,real\n" for i in range(4))
                                    + "x.png,ai\n")
    (tmp_path / "x.png").write_bytes(b"ai")
    data = load_flow_data([str(tmp_path / "m.csv")], [str(ais)])
    assert [i.path for i in data.ai_items] == [str(ais / "g.png")] and data.n_ai_rows_ignored == 1
    assert data.real_links.copies == [] and data.ai_links.copies == []
    (reals / "a3.png").write_bytes(b"real 0")
    with pytest.raises(ValueError, match="need at least 4 real photos, found 3 once each"):
        load_flow_data([str(tmp_path / "m.csv")])


def test_the_data_sources_are_checked_before_the_backbone_is_built(tmp_path, monkeypatch):
    """train flow built the CLIP backbone (minutes for ViT-L on a CPU) and only then read its sources, so a
    wrong one (a manifest with three photos, an image given twice) cost the model load first; the other
    trainers read their data first."""
    from conftest import run_cli_in_process

    _no_backbone(monkeypatch)
    reals = tmp_path / "reals"
    reals.mkdir()
    for i in range(3):
        (reals / f"a{i}.png").write_bytes(b"")
    r = run_cli_in_process("train", "flow", "--real", str(reals), "--backbone-config", "tiny-vit",
                           "--out", str(tmp_path / "h"), "--device", "cpu")
    assert r.returncode == 2 and "need at least 4 real photos, found 3" in r.stderr, r.stderr
    assert not (tmp_path / "h").exists()


def test_one_photo_given_as_real_and_as_ai_is_refused(tmp_path, monkeypatch):
    """Each class's sources were checked apart, so a photo given with --real and again with --ai (an AI
    folder inside the archive) went unnoticed: the validation report compared held-out reals with
    themselves. The same manifest for both stays fine (its real rows train, its AI rows validate)."""
    from aiidetect.flow.train import load_flow_data
    from conftest import run_cli_in_process

    reals = tmp_path / "reals"
    (reals / "gen").mkdir(parents=True)
    for i in range(4):
        (reals / f"a{i}.png").write_bytes(b"")
    (reals / "gen" / "g.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"gen[/\\]g\.png \(AI\) = .*gen[/\\]g\.png \(real\)"):
        load_flow_data([str(reals)], [str(reals / "gen")])
    m = tmp_path / "m.csv"
    m.write_text("file,label\n" + "".join(f"reals/a{i}.png,real\n" for i in range(4)) + "reals/gen/g.png,ai\n")
    data = load_flow_data([str(m)], [str(m)])
    assert len(data.reals) == 4 and [i.path for i in data.ai_items] == [str(reals / "gen" / "g.png")]
    assert data.n_ai_rows_ignored == 1
    _no_backbone(monkeypatch)
    r = run_cli_in_process("train", "flow", "--real", str(reals), "--ai", str(reals / "gen"),
                           "--backbone-config", "tiny-vit", "--out", str(tmp_path / "h"), "--device", "cpu")
    assert r.returncode == 2 and "g.png" in r.stderr and "give each image once" in r.stderr, r.stderr


def test_the_head_records_every_real_photo(trained, small_reals):
    """The flow is fitted on part of the reals and its threshold set on the rest: eval on either is not
    held out, so the record (train_record) holds them all."""
    from aiidetect.heads import read_manifest
    from aiidetect.testing.layouts import digests_of
    from aiidetect.train_record import load_keys, member_mask

    wdir, _ = trained
    m = read_manifest(wdir / "tiny-flow")
    keys = load_keys(wdir / "tiny-flow", m)
    n = m["data"]["real"]["n_train"] + m["data"]["real"]["n_val"]
    assert m["training_images"]["count"] == n == N_REAL
    from aiidetect.perceptual import KIND
    from aiidetect.train_record import load_phashes
    blk = m["training_images"]["perceptual"]
    hs = load_phashes(wdir / "tiny-flow", m)
    assert blk["kind"] == KIND and blk["count"] == len(hs) and 0 < blk["count"] + blk["without_hash"] <= n
    assert member_mask(keys, digests_of(map(str, sorted(small_reals.iterdir())))).all()
