"""MPFT end to end on a task built here: real dev photos versus the same
photos with a planted periodic up-sampling (checkerboard) artifact, two
"generators" with different periods. A random-init tiny-vit must learn it
through TAM masking, LoRA and both heads; the head must round-trip."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aiidetect.backbone import BackboneSpec, create_backbone
from aiidetect.train.data import Item

from conftest import DEV

GENS = (("upsample-x2", 2), ("upsample-x4", 4))


def pattern(h: int, w: int, period: int) -> np.ndarray:
    """The +-1 checkerboard a stride-(period/2) transposed convolution leaves behind."""
    i = np.arange(h)[:, None] // (period // 2)
    j = np.arange(w)[None, :] // (period // 2)
    return np.where((i + j) % 2 == 0, 1.0, -1.0)


def build_easy_task(root: Path, n_src: int = 5, amp: float = 16.0) -> list[Item]:
    from PIL import Image

    srcs = sorted(glob.glob(str(DEV / "real" / "inpainting_inputs" / "*.png")))[:n_src]
    if len(srcs) < n_src:
        pytest.skip("dev photos not present")
    root.mkdir(parents=True, exist_ok=True)
    items, k = [], 0
    for s in srcs:
        im = np.asarray(Image.open(s).convert("RGB").resize((256, 256)), dtype=np.float32)
        for flip in (False, True):
            base = im[:, ::-1] if flip else im
            for gname, period in GENS:
                crop = base[16:240, 16:240]
                fake = np.clip(crop + amp * pattern(224, 224, period)[..., None], 0, 255).round()
                rp, fp = root / f"real_{k}.png", root / f"fake_{k}.png"
                Image.fromarray(crop.astype(np.uint8)).save(rp)
                Image.fromarray(fake.astype(np.uint8)).save(fp)
                items += [Item(str(rp), 0, "real"), Item(str(fp), 1, gname)]
                k += 1
    return items


@pytest.fixture(scope="module")
def backbone():
    torch.set_num_threads(2)
    return create_backbone(BackboneSpec.from_options(config="tiny-vit", seed=0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, backbone):
    from aiidetect.mpft.augment import AugmentConfig
    from aiidetect.mpft.trainer import TrainConfig, train_mpft

    root = tmp_path_factory.mktemp("mpft")
    items = build_easy_task(root / "data")
    aug = AugmentConfig.none()
    aug.guard = True  # both classes re-encoded as JPEG q90-100: the artifact must survive it
    cfg = TrainConfig(steps=24, batch_size=8, val_fraction=0.4, seed=0, mask_ratio=0.3, mask_mode="drop",
                      mask_select="sample", eval_every=8, lr=5e-3, lr_head=5e-3, augment=aug)
    res = train_mpft(backbone, items, cfg, root / "weights" / "easy", "easy", show_progress=False)
    return res, items, root


def test_learns_easy_task(trained):
    res, items, _ = trained
    v = res.manifest["metrics"]["validation"]
    assert v["n"] == 8  # report split: half of 40 % held out, stratified per generator
    assert res.manifest["metrics"]["selection"]["n"] == 8
    assert res.manifest["calibration"]["fitted_on"] == "selection split"
    assert v["accuracy"] >= 0.9, res.history
    assert v["auc"] >= 0.95
    # attribution separates the two planted periods from real
    assert v["attribution_accuracy"] >= 0.7, res.history
    lora_b = [p for k, p in res.model.named_parameters() if "lora_B" in k]
    assert lora_b and all(float(p.detach().abs().sum()) > 0 for p in lora_b)  # LoRA moved away from the backbone


def test_gradients_reach_every_trained_part(backbone):
    from aiidetect.mpft.model import MPFTModel
    from aiidetect.mpft.tam import tam_mask

    torch.manual_seed(0)
    m = MPFTModel(backbone.visual, ["real", "a", "b"])
    with torch.no_grad():
        for k, p in m.adapter.lora_B.items():
            p.normal_(0, 0.01)  # B starts at zero, which blocks A's gradient on the first step
    x = torch.randn(2, 3, 224, 224)
    mask = tam_mask(x, 16, 0.3, "sample", seed=0)
    for mode in ("drop", "token"):
        m.zero_grad()
        z, a = m.forward_masked(x, mask, mode)
        (z.sum() + a.logsumexp(1).sum()).backward()
        for k, p in m.named_parameters():
            if k.startswith("visual."):
                assert p.grad is None
            elif k == "mask_token":
                assert (p.grad is not None and float(p.grad.abs().sum()) > 0) == (mode == "token")
            else:
                assert p.grad is not None and float(p.grad.abs().sum()) > 0, (mode, k)


def test_manifest_and_artifact(trained, backbone):
    res, _, _ = trained
    d = res.head_dir
    m = json.loads((d / "manifest.json").read_text())
    assert m["detector"] == "mpft" and m["labels"] == ["real", "upsample-x2", "upsample-x4"]
    assert m["backbone"]["fingerprint"] == backbone.fingerprint
    assert m["calibration"]["method"] == "temperature" and m["calibration"]["temperature"] > 0
    assert m["data"]["train"]["n"] == 24 and m["preprocessing"]["mode"] == "center-crop"
    assert m["params"]["adapter"]["mode"] == "lora"
    assert not (d / "checkpoint.pt").exists()
    from safetensors.torch import load_file

    names = load_file(str(d / "head.safetensors"))
    assert not any(k.startswith("visual.") for k in names)
    n_backbone = sum(p.numel() for p in backbone.visual.parameters())
    assert sum(v.numel() for v in names.values()) < n_backbone


def test_save_load_identical_outputs(trained, backbone):
    from aiidetect.mpft.model import build_from_head
    from aiidetect.heads import load_head

    res, _, _ = trained
    x = torch.randn(3, 3, 224, 224)
    res.model.eval()
    with torch.no_grad():
        z0, a0 = res.model(x)
        z1, a1 = build_from_head(load_head(res.head_dir), backbone)(x)
    assert torch.equal(z0, z1) and torch.equal(a0, a1)


def test_other_backbone_fails_clearly(trained):
    from aiidetect.detectors.base import RunContext
    from aiidetect.mpft.detector import create
    from aiidetect.detectors import DetectorUnavailable
    from aiidetect.mpft.model import build_from_head
    from aiidetect.heads import HeadMismatch, load_head

    res, _, _ = trained
    other = create_backbone(BackboneSpec.from_options(config="tiny-vit", seed=1))
    with pytest.raises(HeadMismatch, match="fingerprint"):
        build_from_head(load_head(res.head_dir), other)
    ctx = RunContext(weights_dirs=[res.head_dir.parent])
    ctx._backbone = other
    with pytest.raises(DetectorUnavailable, match="trained on backbone"):
        create(ctx)


def test_detector_predicts(trained, backbone):
    from aiidetect.decode import decode_path
    from aiidetect.detectors import feature_key
    from aiidetect.detectors.base import RunContext
    from aiidetect.mpft.detector import create
    from aiidetect.preprocess import spec_key

    res, items, _ = trained
    ctx = RunContext(weights_dirs=[res.head_dir.parent])
    ctx._backbone = backbone
    (det,) = create(ctx)
    assert det.name == "mpft:easy"
    (req,) = det.feature_requests()
    assert req.encoder_key.startswith("mpft:") and req.encoder_key != backbone.fingerprint
    samples = [decode_path(it.path, i, preprocess_specs=[req.preprocess]) for i, it in enumerate(items[:4])]
    x = torch.from_numpy(np.stack([s.pixels[spec_key(req.preprocess)] for s in samples]))
    out = req.encode(x, layers=())
    feats = [{feature_key(req): {k: v[i].numpy() for k, v in out.items()}} for i in range(len(samples))]
    results = det.predict(samples, feats)
    for r, it in zip(results, items[:4]):
        assert r.status == "ok" and 0 <= r.p_ai <= 1 and r.score_kind == "logit"
        att = r.extra["attribution"]
        assert len(att) == 3 and abs(sum(a["p"] for a in att) - 1) < 1e-3
        assert {a["label"] for a in att} == {"real", "upsample-x2", "upsample-x4"}
        g = r.extra.get("generator")  # open-set answer, absent when the top label is "real"
        assert (g is None) == (att[0]["label"] == "real"), (g, att)
        if g is not None:
            assert g["label"] in ("upsample-x2", "upsample-x4", "unknown-generator") and g["reject_below"] > 0


def test_traceable_for_onnx(trained, backbone):
    from aiidetect.mpft.model import build_from_head
    from aiidetect.heads import load_head

    res, _, _ = trained
    m = build_from_head(load_head(res.head_dir), backbone)
    x = torch.randn(1, 3, 224, 224)
    traced = torch.jit.trace(m, x, check_trace=False)
    with torch.no_grad():
        for a, b in zip(traced(x), m(x)):
            assert torch.allclose(a, b, atol=1e-5)


def test_resume_continues_the_same_run(tmp_path, backbone):
    from aiidetect.mpft.augment import AugmentConfig
    from aiidetect.mpft.trainer import MPFTTrainer, TrainConfig

    items = build_easy_task(tmp_path / "data", n_src=1)
    cfg = TrainConfig(steps=4, batch_size=4, val_fraction=0.25, eval_every=2, augment=AugmentConfig(), workers=1)
    full = MPFTTrainer(backbone, items, cfg, tmp_path / "a", "a", show_progress=False)
    full.fit()
    part = MPFTTrainer(backbone, items, cfg, tmp_path / "b", "b", show_progress=False)
    part._train_step()
    part._train_step()  # "interrupted" after step 2
    part.save_checkpoint()
    resumed = MPFTTrainer(backbone, items, cfg, tmp_path / "b", "b", show_progress=False)
    assert resumed.load_checkpoint() and resumed.step == 2
    resumed.fit()
    a, b = full.model.trainable_state(), resumed.model.trainable_state()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_occlusion_map_through_the_mpft_detector(trained, backbone):
    """The report's heat map runs through MPFT's served predict path: its unoccluded
    P(AI) is the detector's own answer for the file."""
    from aiidetect.decode import decode_path
    from aiidetect.detectors import feature_key
    from aiidetect.detectors.base import RunContext
    from aiidetect.mpft.detector import create
    from aiidetect.explain.occlusion import occlusion_maps
    from aiidetect.preprocess import spec_key

    res, items, _ = trained
    ctx = RunContext(weights_dirs=[res.head_dir.parent])
    ctx._backbone = backbone
    (det,) = create(ctx)
    fake = next(it for it in items if it.label == 1)
    (m,) = occlusion_maps(fake.path, [det], grid=4)
    (req,) = det.feature_requests()
    s = decode_path(fake.path, 0, preprocess_specs=[req.preprocess])
    x = torch.from_numpy(s.pixels[spec_key(req.preprocess)][None])
    out = req.encode(x, layers=())
    (r,) = det.predict([s], [{feature_key(req): {k: v[0].numpy() for k, v in out.items()}}])
    assert abs(m["base_p"] - r.p_ai) < 1e-4
    d = np.asarray(m["deltas"])
    assert d.shape == (4, 4) and np.isfinite(d).all() and m["image"].startswith("data:image/jpeg;base64,")


@pytest.mark.slow
def test_explain_mpft_cli_has_legend_and_colour_bar(trained, tmp_path):
    from PIL import Image

    from conftest import run_cli_in_process

    res, items, _ = trained
    fake = next(it for it in items if it.label == 1)
    out = tmp_path / "heat.png"
    # in-process: the picture is the question (test_explain_cli runs explain-mpft as a subprocess)
    r = run_cli_in_process("explain-mpft", fake.path, "-o", str(out), "--backbone-config", "tiny-vit",
                           "--weights-dir", str(res.head_dir.parent))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["head"] == "easy" and 0 <= info["p_ai"] <= 1
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] > 224 + 40  # the map, then the colour bar and legend
    strip = img[224:]
    bar_row = strip[8 + 6]  # the middle of the bar
    assert bar_row[10, 2] > 200 and bar_row[10, 0] < 60  # blue end
    assert bar_row[-10, 0] > 200 and bar_row[-10, 2] < 60  # red end


def test_explain_mpft_with_a_damaged_head_is_a_one_line_error(trained, tmp_path):
    """A head failing its checksum was an unexpected error ('HeadError: ...', the --debug hint)."""
    import shutil

    from conftest import run_cli

    res, items, _ = trained
    w = tmp_path / "weights"
    shutil.copytree(res.head_dir, w / "easy")
    t = w / "easy" / "head.safetensors"
    blob = bytearray(t.read_bytes()); blob[-1] ^= 0xFF; t.write_bytes(bytes(blob))
    out = tmp_path / "heat.png"
    r = run_cli("explain-mpft", items[0].path, "-o", str(out), "--backbone-config", "tiny-vit", "--weights-dir", str(w))
    assert r.returncode == 2 and "failed its checksum" in r.stderr, r.stderr
    assert "HeadError" not in r.stderr and "--debug" not in r.stderr and not out.exists()


def test_selection_and_report_splits_are_disjoint(tmp_path, backbone):
    from aiidetect.mpft.augment import AugmentConfig
    from aiidetect.mpft.trainer import MPFTTrainer, TrainConfig

    items = build_easy_task(tmp_path / "d", n_src=3)
    tr = MPFTTrainer(backbone, items, TrainConfig(steps=1, val_fraction=0.5, augment=AugmentConfig.none()),
                     tmp_path / "h", "s", show_progress=False)
    parts = [{i.path for i in x} for x in (tr.train_items, tr.val_items, tr.report_items)]
    assert all(parts) and sum(map(len, parts)) == len(items) == len(set.union(*parts))
    for part in (tr.val_items, tr.report_items):  # stratified: every class in both held-out parts
        assert {i.generator for i in part} == {"real", "upsample-x2", "upsample-x4"}
    tr._pool.shutdown(wait=False)


def test_one_class_selection_split_is_recorded_not_fitted(tmp_path, backbone):
    from aiidetect.mpft.augment import AugmentConfig
    from aiidetect.mpft.trainer import TrainConfig, train_mpft
    from aiidetect.train.data import Item

    items = build_easy_task(tmp_path / "d", n_src=3)
    reals = [i for i in items if i.label == 0]
    fakes = [i for i in items if i.label == 1][:2]  # too few AI images to hold any out
    res = train_mpft(backbone, reals + [Item(f.path, 1, "gen") for f in fakes],
                     TrainConfig(steps=1, batch_size=4, val_fraction=0.2, augment=AugmentConfig.none()),
                     tmp_path / "h", "one", show_progress=False)
    cal = res.manifest["calibration"]
    assert cal["fitted_on"] is None and cal["temperature"] == 1.0
    assert "only real images" in cal["not_fitted"]


def test_open_set_rejection_threshold():
    from aiidetect.mpft.trainer import UNKNOWN_GENERATOR, fit_rejection, open_set_label

    labels = ["real", "a", "b"]
    rng = np.random.default_rng(0)
    sure = np.c_[np.zeros(100), rng.normal(4, 0.5, 100), np.zeros(100)]  # known generator "a", confident
    t = fit_rejection(sure, labels, accept=0.95)
    kept = [open_set_label(row, labels, t)[0] for row in sure]
    assert kept.count("a") >= 95 and set(kept) <= {"a", UNKNOWN_GENERATOR}
    # an image the head cannot place between the generators: unknown, not the nearest known one
    label, p = open_set_label(np.array([0.0, 1.0, 1.0]), labels, t)
    assert label == UNKNOWN_GENERATOR and p == pytest.approx(0.5)
    assert open_set_label(np.array([0.0, 1.0, 1.0]), labels, None)[0] in ("a", "b")  # no threshold: closed set


def test_trained_head_has_a_calibrated_open_set_threshold(trained, backbone):
    res, _, _ = trained
    att = res.manifest["attribution"]
    assert att["fitted_on"] == "selection split" and 0 < att["reject_below"] <= 1
    assert "open_set" in res.manifest["metrics"]["validation"]


def test_recipes_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from aiidetect.testing import layouts as L
    from aiidetect.cli import app

    data = L.genimage_nested(tmp_path / "gi")
    # paper: CNNSpot's blur (sigma ~ U(0, 3)) and JPEG (q 30..100) at p 0.1; the blur range was our [0.1, 2]
    for recipe, check in (("paper", lambda t: t["augment"]["guard"] is False and t["augment"]["p_crop"] == 0
                           and t["augment"]["p_jpeg"] == 0.1 and t["augment"]["jpeg_min"] == 30
                           and t["augment"]["p_blur"] == 0.1
                           and (t["augment"].get("blur_min"), t["augment"]["blur_max"]) == (0.0, 3.0)),
                          ("clip-finetune", lambda t: t["adapter_mode"] == "full" and t["mask_ratio"] == 0.0)):
        out = tmp_path / recipe
        r = CliRunner().invoke(app, ["train", "mpft", str(data), "--recipe", recipe, "--backbone-config", "tiny-vit",
                                     "--out", str(out), "--steps", "1", "--batch-size", "4", "--workers", "1"])
        assert r.exit_code == 0, r.output
        t = json.loads((out / "manifest.json").read_text())["params"]["training"]
        assert t["recipe"] == recipe and check(t), t
    bad = CliRunner().invoke(app, ["train", "mpft", str(data), "--recipe", "nope", "--backbone-config", "tiny-vit"])
    assert bad.exit_code == 2


def test_augmentation_of_images_under_eight_pixels():
    """The random crop asked for at least 8 pixels of an image of fewer, and training ended in
    "error: empty range for randrange() (0, -6, -6)". It keeps what the image has."""
    import random

    from PIL import Image

    from aiidetect.mpft.augment import AugmentConfig, augment

    cfg = AugmentConfig(p_crop=1.0, p_resize=0.0)
    for size in ((1, 1), (3, 7), (7, 30)):
        out = augment(Image.new("RGB", size, (1, 2, 3)), cfg, random.Random(0))
        assert all(min(n, 8) <= got <= n for got, n in zip(out.size, size)), (out.size, size)


def test_the_head_records_its_train_and_selection_splits(trained):
    """eval and calibrate match a head's training images by this record (train_record): the train split's
    and the selection split's (it chose the state kept, the temperature and the open-set cut-off: numbers
    on it flatter the head), not the report split (on that, eval measures what training did not see)."""
    from aiidetect.heads import read_manifest
    from aiidetect.testing.layouts import digests_of
    from aiidetect.train_record import load_keys, member_mask

    res, items, _ = trained
    m = read_manifest(res.head_dir)
    keys = load_keys(res.head_dir, m)
    assert m["training_images"]["count"] == len(keys) > 0 and m["data"]["selection"]["n"] > 0
    from aiidetect.perceptual import KIND
    from aiidetect.train_record import load_phashes
    blk = m["training_images"]["perceptual"]
    hs = load_phashes(res.head_dir, m)
    assert blk["kind"] == KIND and blk["count"] == len(hs) and 0 < blk["count"] + blk["without_hash"] <= len(items)
    # (each real crop is written once per generator, byte for byte: by content, only the AI images are
    # one per file)
    fakes = [i.path for i in items if i.label == 1]
    recorded = int(member_mask(keys, digests_of(fakes)).sum())
    assert m["data"]["selection"]["n_ai"] > 0 and m["data"]["validation"]["n_ai"] > 0
    assert recorded == m["data"]["train"]["n_ai"] + m["data"]["selection"]["n_ai"] < len(fakes)


def test_resume_refuses_a_checkpoint_it_cannot_continue(tmp_path, backbone):
    """A checkpoint cut short, not a checkpoint, or made with another --rank is a ValueError that says
    what to do (torch's own error advised loading the file with weights_only=False, i.e. running it)."""
    import dataclasses

    from aiidetect.mpft.augment import AugmentConfig
    from aiidetect.mpft.trainer import MPFTTrainer, TrainConfig

    items = build_easy_task(tmp_path / "data", n_src=1)
    cfg = TrainConfig(steps=2, batch_size=4, val_fraction=0.25, augment=AugmentConfig.none(), workers=1)
    t = MPFTTrainer(backbone, items, cfg, tmp_path / "run", "run", show_progress=False)
    t.save_checkpoint()
    ck = tmp_path / "run" / "checkpoint.pt"
    good = ck.read_bytes()
    other = MPFTTrainer(backbone, items, dataclasses.replace(cfg, rank=cfg.rank * 2), tmp_path / "run", "run",
                        show_progress=False)
    with pytest.raises(ValueError, match=r"--rank 8 then, 16 now.*without --resume"):
        other.load_checkpoint()
    for damaged, says in ((good[: len(good) // 2], "cannot be read"), (b"not a checkpoint", "cannot be read")):
        ck.write_bytes(damaged)
        with pytest.raises(ValueError, match=says) as exc:
            t.load_checkpoint()
        assert "weights_only" not in str(exc.value) and "delete" in str(exc.value)
    torch.save([1, 2], ck)
    with pytest.raises(ValueError, match="not an MPFT training checkpoint"):
        t.load_checkpoint()


def test_resume_with_other_training_options_says_so_and_records_them(tmp_path, backbone):
    """A `--recipe paper` run checkpointed before its blur became CNNSpot's U(0, 3) resumed without a word
    on the new range: the head's manifest gave U(0, 3) for steps drawn from [0.1, 2]. A checkpoint of an
    earlier release lacks `blur_min` (its blur drew from 0.1): it resumes, and the change is told and kept."""
    from aiidetect.mpft.augment import AugmentConfig
    from aiidetect.mpft.trainer import MPFTTrainer, TrainConfig

    items = build_easy_task(tmp_path / "data", n_src=1)
    old = TrainConfig(steps=2, batch_size=4, val_fraction=0.25, workers=1, recipe="paper",
                      augment=AugmentConfig(p_crop=0.0, p_resize=0.0, guard=False))
    t = MPFTTrainer(backbone, items, old, tmp_path / "run", "run", show_progress=False)
    t._train_step()
    t.save_checkpoint()
    ck = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ck, weights_only=True)
    del state["config"]["augment"]["blur_min"]  # as an earlier release wrote it
    torch.save(state, ck)
    said: list[str] = []
    now = TrainConfig(steps=2, batch_size=4, val_fraction=0.25, workers=2, recipe="paper", augment=AugmentConfig.paper(),
                      lr=old.lr * 2)  # the optimiser's state keeps the checkpoint's: said, and what the head records
    resumed = MPFTTrainer(backbone, items, now, tmp_path / "run", "run", show_progress=False, log=said.append)
    assert resumed.load_checkpoint() and resumed.step == 1
    note = " ".join(m for m in said if "checkpoint" in m)
    assert "augment.blur_min 0.1 then, 0.0 now" in note and "augment.blur_max 2.0 then, 3.0 now" in note, said
    assert "workers" not in note, note  # threads change no draw
    assert f"keeps the checkpoint's lr {old.lr} (this run asked {old.lr * 2})" in " ".join(said), said
    assert resumed.cfg.lr == old.lr and resumed.opt.param_groups[0]["initial_lr"] == old.lr
    resumed.save_checkpoint()  # resumed again with the same options: nothing to tell, the first change kept
    said.clear()
    assert resumed.load_checkpoint() and not said
    m = resumed.finish().manifest
    assert m["params"]["resumed"] == [{"at_step": 1, "options_then": {"augment.blur_min": 0.1, "augment.blur_max": 2.0}},
                                      {"at_step": 1, "options_then": {}}]
    assert m["params"]["training"]["augment"]["blur_max"] == 3.0 and m["params"]["training"]["lr"] == old.lr
    state["config"].update(lr=torch.ones(2), mask_ratio=torch.ones(3), augment=[1])  # not what this writes
    torch.save(state, ck)
    assert resumed.load_checkpoint() and resumed.cfg.lr == old.lr  # compared only where comparable


def test_resume_refuses_a_checkpoint_of_another_backbone(tmp_path, backbone):
    """The same shapes on another backbone (tiny-vit seed 1) resumed without a word: the head written at
    the end named the second backbone, with an adapter partly trained on the first one's features."""
    from aiidetect.mpft.augment import AugmentConfig
    from aiidetect.mpft.trainer import MPFTTrainer, TrainConfig

    items = build_easy_task(tmp_path / "data", n_src=1)
    cfg = TrainConfig(steps=2, batch_size=4, val_fraction=0.25, augment=AugmentConfig.none(), workers=1)
    MPFTTrainer(backbone, items, cfg, tmp_path / "run", "run", show_progress=False).save_checkpoint()
    other_bb = create_backbone(BackboneSpec.from_options(config="tiny-vit", seed=1))
    assert other_bb.fingerprint != backbone.fingerprint
    resumed = MPFTTrainer(other_bb, items, cfg, tmp_path / "run", "run", show_progress=False)
    with pytest.raises(ValueError, match=f"another backbone.*{backbone.fingerprint}"):
        resumed.load_checkpoint()
    assert resumed.step == 0
    same = MPFTTrainer(backbone, items, cfg, tmp_path / "run", "run", show_progress=False)
    assert same.load_checkpoint()


def test_verify_with_a_backbone_builds_each_head_as_a_scan_does(tmp_path, backbone):
    """`weights verify --check-backbone` said "ok" for heads every scan on that backbone found unavailable:
    an MPFT head whose manifest names another LoRA rank than its tensors hold, a linear head of another
    width. With a backbone, verify now builds each head's detector as the scan does, and says why not."""
    from aiidetect.api import verify_heads
    from aiidetect.heads import backbone_manifest, save_head
    from aiidetect.mpft.model import MPFTModel
    from aiidetect.preprocess import make_spec

    spec, bb = BackboneSpec.from_options(config="tiny-vit", seed=0), backbone
    w = tmp_path / "weights"
    common = {"backbone": backbone_manifest(bb), "preprocessing": make_spec("center-crop", 224)}
    for name, dim in (("fits", bb.embed_dim), ("narrow", bb.embed_dim // 2)):
        save_head(w / name, {"weight": torch.zeros(1, dim), "bias": torch.zeros(1)},
                  {"name": name, "detector": "linear", "labels": ["real", "ai"], "params": {"feature": "embed"},
                   **common})
    adapter = {"mode": "lora", "rank": 4, "alpha": 8.0, "targets": ["attn_in"], "last_n": 1, "train_norms": False}
    model = MPFTModel(bb.visual, ["real", "gen"], adapter=adapter)
    save_head(w / "mp", {k: v.contiguous() for k, v in model.trainable_state().items()},
              {"name": "mp", "detector": "mpft", "labels": ["real", "gen"],
               "params": {"adapter": {**adapter, "rank": 2}, "feature": "embed"}, **common})
    from aiidetect.calibration import save_fusion

    # a fusion model names no backbone (it reads the detectors' answers): every one failed --check-backbone
    save_fusion(w / "fz", {"params": {"method": "platt", "evidence_weight": 1.0, "bias": 0.0, "detectors": {
        "linear:fits": {"weight": 1.0, "calibration": {"method": "none"}}}}, "threshold": {"ai": 0.9, "real": 0.1},
        "metrics": {}}, {}, name="fz")
    rows = {name: problems for name, _, problems in verify_heads([w], spec)}
    assert rows["fits"] == [] and rows["fz"] == [], rows
    assert any(f"expects {bb.embed_dim // 2}-d embed features" in p for p in rows["narrow"]), rows
    assert any("do not match the model" in p and "lora_A" in p and "(4, " in p for p in rows["mp"]), rows
    assert all("\n" not in p for p in rows["mp"]), rows  # one line, not torch's one per tensor
    # without a backbone only the files are checked, as before
    assert {name: problems for name, _, problems in verify_heads([w])} == {"fits": [], "narrow": [], "mp": [], "fz": []}


def test_training_names_the_images_lost_when_one_class_cannot_be_decoded(tmp_path, backbone):
    """The AI images all unreadable: "training needs both real and AI images", of data that lists both,
    said nothing of the files it could not read (-q hides the log line that did)."""
    from aiidetect.mpft.augment import AugmentConfig
    from aiidetect.mpft.trainer import MPFTTrainer, TrainConfig

    reals = [Item(str(p), 0, "real") for p in sorted((DEV / "real" / "camera").glob("*.jpg"))[:2]]
    (tmp_path / "a0.jpg").write_text("not an image")
    cfg = TrainConfig(steps=1, batch_size=4, augment=AugmentConfig.none(), workers=1)
    with pytest.raises(ValueError, match=r"all real; 1 could not be decoded, e\.g\. .*a0\.jpg.*replace or remove"):
        MPFTTrainer(backbone, reals + [Item(str(tmp_path / "a0.jpg"), 1, "gen")], cfg, tmp_path / "run", "run",
                    show_progress=False)


def test_occlusion_map_keeps_its_patch_indices_on_the_model_device():
    """explain-mpft runs on scan's device (a GPU under --device auto), but the kept-token indices were made on
    the CPU: torch.gather refuses an index on another device than the tokens, so every map on a GPU failed.
    A stand-in model on torch's `meta` device says which device each index reached."""
    from aiidetect.mpft.occlusion import occlusion_map

    seen = []

    class Model:
        feature = "f"

        def eval(self):
            pass

        def __call__(self, x):
            return (torch.zeros(1, 1),)

        def encode(self, x, keep_index):
            seen.append(keep_index.device)
            return {"f": torch.zeros(x.shape[0], 1)}

        def heads(self, out):
            return (out[:, 0],)

    base, delta = occlusion_map(Model(), torch.zeros(1, 3, 32, 32, device="meta"), 16)
    assert delta.shape == (2, 2) and seen and all(d.type == "meta" for d in seen), seen


def test_the_colour_floor_only_sets_the_smallest_span():
    """explain-mpft's scale floor (0.2 logit, the report's 0.05 P(AI) at the boundary) keeps a weak map faint;
    a strong effect must still widen the scale and be drawn in full colour."""
    from aiidetect.explain.occlusion import MIN_SCALE
    from aiidetect.mpft.occlusion import MIN_LOGIT_SCALE, color_scale, render_heatmap

    assert MIN_LOGIT_SCALE == 4 * MIN_SCALE == 0.2
    u8 = np.full((4, 4, 3), 128, np.uint8)
    weak, strong = np.array([[0.002, 0], [0, 0]]), np.array([[3.0, 0], [0, -1.5]])
    assert color_scale(weak) == 0.2 and color_scale(strong) == 3.0
    assert np.abs(render_heatmap(u8, weak, 2).astype(int) - 128).max() <= 1
    hot = render_heatmap(u8, strong, 2)
    assert tuple(hot[0, 0]) == (191, 64, 64) and hot[3, 3, 2] > hot[3, 3, 0]  # full red at alpha 0.5; blue
