"""Linear probes: the fit, the folded standardisation, few-shot training on a
random-init tiny backbone, train -> save -> load -> scan with identical outputs,
and the `aiidetect train linear` command."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, run_cli_in_process

TILE = np.random.default_rng(0).choice([-1, 1], size=(8, 8)) * 24


def _plant(a: np.ndarray) -> np.ndarray:
    """A periodic 8 px pattern (a stand-in for upsampling traces). On 256 px
    squares the 224 center crop starts at 16, so the pattern lines up with the
    16 px patch grid and even a random-init ViT sees it."""
    return np.clip(a.astype(np.int16) + np.tile(TILE, (32, 32))[..., None], 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted(dev_dir, tmp_path_factory):
    """Dev photos, 256 px squares: train/ and test/ folders with real/ and
    ai/planted/ (different photos in each of the four groups)."""
    from PIL import Image

    rows = [r for r in csv.DictReader(open(dev_dir / "manifest.csv", encoding="utf-8"))
            if r["label"] == "real" and r["file"].lower().endswith((".jpg", ".jpeg"))]
    rows = sorted(rows, key=lambda r: (dev_dir / r["file"]).stat().st_size)[:48]
    if len(rows) < 48:
        pytest.skip("not enough dev photos")
    root = tmp_path_factory.mktemp("planted")
    for i, r in enumerate(rows):
        im = Image.open(dev_dir / r["file"])
        im.draft("RGB", (320, 320))
        im = im.convert("RGB")
        s = 256 / min(im.size)
        im = im.resize((max(256, round(im.size[0] * s)), max(256, round(im.size[1] * s))), Image.BICUBIC)
        left, top = (im.size[0] - 256) // 2, (im.size[1] - 256) // 2
        a = np.asarray(im.crop((left, top, left + 256, top + 256)))
        split = "train" if i % 4 < 2 else "test"
        fake = i % 2 == 1
        d = root / split / ("ai/planted" if fake else "real")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_plant(a) if fake else a).save(d / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def tiny():
    from aiidetect.backbone import BackboneSpec, create_backbone

    spec = BackboneSpec.from_options(config="tiny-vit")
    return spec, create_backbone(spec)


# ------------------------------------------------------------------ the fit
def test_standardisation_is_folded_into_raw_weights():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from aiidetect.linear import fit_probe

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 16)) * np.r_[100.0, np.ones(15)] + 5.0  # one huge dimension, like CLIP's
    y = (X[:, 3] + 0.5 * rng.normal(size=40) > 5).astype(int)
    X[:, 7] = 3.0  # a constant dimension must not produce NaNs
    p = fit_probe(X, y, seed=0)
    assert np.isfinite(p.weight).all() and np.isfinite(p.bias)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=p.info["C"], solver="liblinear", intercept_scaling=10.0,
                                                             class_weight="balanced", max_iter=1000)).fit(X, y)
    Xt = rng.normal(size=(10, 16)) * np.r_[100.0, np.ones(15)] + 5.0
    Xt[:, 7] = 3.0
    assert np.allclose(p.logits(Xt), ref.decision_function(Xt), atol=1e-6)
    assert p.info["cv_folds"] == 5 and p.info["cv_metrics"]["auc"] > 0.8


def test_tiny_sets_and_bad_labels():
    from aiidetect.linear import fit_probe

    X = np.random.default_rng(0).normal(size=(3, 8))
    p = fit_probe(X, [0, 1, 1])  # one real image: no cross-validation possible
    assert p.info["cv_folds"] == 0 and "too few" in p.info["selection"]
    with pytest.raises(ValueError, match="both classes"):
        fit_probe(X, [1, 1, 1])


# ------------------------------------------------------------------ end to end on a tiny random backbone
def test_probe_separates_held_out_planted_images_and_scan_reproduces_it(planted, tiny, tmp_path):
    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.feature_cache import extract_features
    from aiidetect.evaluate.metrics import logit_metrics
    from aiidetect.linear.train import train_linear
    from aiidetect.pipeline import run_detectors
    from aiidetect.train.data import load_items
    from aiidetect.heads import load_head

    spec, bb = tiny
    res = train_linear([planted / "train"], spec, name="planted", out=tmp_path / "w" / "planted", backbone=bb,
                       cache=False)
    assert res.n_train == 24
    m = load_head(res.out_dir).manifest
    assert m["backbone"]["fingerprint"] == bb.fingerprint and m["preprocessing"]["mode"] == "center-crop"
    assert m["data"]["n_real"] == 12 and m["data"]["generators"] == {"planted": 12, "real": 12}

    test = load_items([planted / "test"])
    y = np.array([i.label for i in test])
    feats, fails = extract_features(bb, [i.path for i in test], m["preprocessing"], cache=None)
    assert not fails
    logits = res.probe.logits(feats["embed"])
    got = logit_metrics(y, logits)
    assert got["auc"] >= 0.95 and got["accuracy"] >= 0.9, got

    # load the saved head through the detector registry and run the scan pipeline
    ctx = RunContext(backbone_spec=spec, device="cpu", weights_dirs=[tmp_path / "w"])
    ctx._backbone = bb  # same frozen backbone object; create() must accept it by fingerprint
    (det,) = create_detectors(["linear"], ctx)
    assert det.name == "linear:planted"
    recs = run_detectors([i.path for i in test], [det], batch_size=8, workers=1)
    scores = np.array([r.detectors["linear:planted"].score for r in recs])
    p_ai = np.array([r.detectors["linear:planted"].p_ai for r in recs])
    assert all(r.detectors["linear:planted"].status == "ok" for r in recs)
    assert np.allclose(scores, logits, atol=1e-4)
    assert np.allclose(p_ai, res.probe.p_ai(feats["embed"]), atol=1e-6)
    assert ((p_ai > 0.5) == (y == 1)).mean() >= 0.9


def test_five_shots_per_class_train_in_seconds(planted, tiny, tmp_path):
    from aiidetect.feature_cache import FeatureCache
    from aiidetect.linear.train import train_linear

    spec, bb = tiny
    t = time.perf_counter()
    res = train_linear([planted / "train"], spec, shots=5, out=tmp_path / "five", backbone=bb,
                       cache=FeatureCache(tmp_path / "f.sqlite"))
    took = time.perf_counter() - t
    assert res.n_train == 10 and res.probe.info["cv_folds"] == 5
    assert took < 30, f"5-shot training took {took:.1f} s"
    # second run reads the feature cache and gives the same head
    res2 = train_linear([planted / "train"], spec, shots=5, out=tmp_path / "five2", backbone=bb,
                        cache=FeatureCache(tmp_path / "f.sqlite"))
    assert np.array_equal(res.probe.weight, res2.probe.weight) and res.probe.bias == res2.probe.bias


def test_generator_filter(dev_manifest):
    from aiidetect.linear.train import default_name, select_items

    items = select_items([dev_manifest], shots=4, generators=["stylegan2"], seed=0)
    assert {i.generator for i in items} == {"real", "stylegan2"} and len(items) == 8
    assert default_name([dev_manifest], ["stylegan2"]) == "probe-stylegan2"
    assert default_name([dev_manifest], None) == "probe-dev"
    with pytest.raises(ValueError, match="no AI images of generator"):
        select_items([dev_manifest], generators=["nope"])


# ------------------------------------------------------------------ the command
def test_cli_train_linear_on_dev_manifest(dev_manifest, weights_dir):
    # in-process: the session's `_tiny_probe` fixture trains a probe as a user's subprocess already
    r = run_cli_in_process("train", "linear", str(dev_manifest), "--backbone-config", "tiny-vit", "--shots", "10",
                           "--generators", "stylegan2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["name"] == "probe-stylegan2" and out["n_train"] == 20
    head = Path(out["head"])
    assert head.parent == weights_dir and (head / "head.safetensors").is_file()
    m = json.loads((head / "manifest.json").read_text())
    assert m["detector"] == "linear" and m["data"]["shots_per_class"] == 10

    bad = run_cli("train", "linear", str(dev_manifest), "--backbone-config", "tiny-vit", "--generators", "nope")
    assert bad.returncode == 2 and "no AI images of generator" in bad.stderr


def test_cli_train_linear_format_json_is_the_json_flag(dev_manifest, weights_dir):
    """`--format json` (the naming every command shares) prints the same summary as the older `--json`.
    In this process (three subprocesses took 11 s, most of it importing torch three times)."""
    from typer.testing import CliRunner

    from aiidetect.cli import app

    args = ["train", "linear", str(dev_manifest), "--backbone-config", "tiny-vit", "--shots", "2"]
    a = CliRunner().invoke(app, [*args, "--name", "fmt-a", "--format", "json"], catch_exceptions=False)
    b = CliRunner().invoke(app, [*args, "--name", "fmt-b", "--json"], catch_exceptions=False)
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert set(ja) == set(jb) and ja["name"] == "fmt-a" and ja["n_train"] == jb["n_train"]
    table = CliRunner().invoke(app, [*args, "--name", "fmt-c"], catch_exceptions=False)
    assert table.exit_code == 0 and table.stdout.strip() and not table.stdout.lstrip().startswith("{")


def test_cli_train_linear_does_not_follow_links_out_of_the_data_unless_asked(dev_manifest, tmp_path):
    """A folder of links into another disk is refused with the reason (the links were not
    followed) and --follow-links reads it: the same rule as scan's."""
    from aiidetect.linear.train import select_items
    from aiidetect.train.data import load_items

    data = tmp_path / "links"
    for it in load_items([dev_manifest]):
        d = data / ("real" if it.label == 0 else f"ai/{it.generator}")
        d.mkdir(parents=True, exist_ok=True)
        if not (d / Path(it.path).name).exists():
            (d / Path(it.path).name).symlink_to(it.path)
    r = run_cli("train", "linear", str(data), "--backbone-config", "tiny-vit", "--out", str(tmp_path / "h"))
    assert r.returncode == 2 and "no labelled images found" in r.stderr
    assert "symbolic link(s) leading out of the data folders not followed (--follow-links)" in r.stderr
    assert not (tmp_path / "h").exists()
    assert len(select_items([data], follow_links=True)) > 20


def test_the_probe_records_the_images_it_was_fitted_on_not_the_held_out(planted, tiny, tmp_path, monkeypatch):
    """The record eval and calibrate match training images by (train_record): the fitted images, by
    content; the --val-fraction hold-out is not in it. Their digests are the ones taken when the
    features were read: no second read of every training image (a million of them, over a network)."""
    import sys

    import aiidetect.hashing
    import aiidetect.heads  # noqa: F401  (imported here, not first under the patch below)
    import aiidetect.train.data  # noqa: F401

    original = aiidetect.hashing.sha256_file
    images = {str(p.resolve()) for p in (planted / "train").rglob("*.png")}

    def read_again(path, *a, **k):
        # Only the training images: save_head hashes the files it writes, as it should.
        if str(Path(path).resolve()) in images:
            raise AssertionError(f"a training image hashed a second time: {path}")
        return original(path, *a, **k)
    from aiidetect.feature_cache import FeatureCache
    from aiidetect.linear.train import train_linear
    from aiidetect.testing.layouts import digests_of
    from aiidetect.train_record import load_keys, member_mask

    spec, bb = tiny
    with monkeypatch.context() as mp:
        # Wherever it is called from: a module that imported it by name before this test holds its own
        # reference (patching aiidetect.hashing alone guarded nothing there, and a module first imported
        # under the patch kept the guard for the tests after this one).
        for mod in [m for k, m in sys.modules.items() if k.split(".")[0] == "aiidetect"]:
            if getattr(mod, "sha256_file", None) is original:
                mp.setattr(mod, "sha256_file", read_again)
        res = train_linear([planted / "train"], spec, shots=4, val_fraction=0.25, out=tmp_path / "p", backbone=bb,
                           cache=FeatureCache(tmp_path / "f.sqlite"))
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    keys = load_keys(tmp_path / "p", m)
    assert res.n_val > 0 and m["training_images"]["count"] == res.n_train == len(keys)
    from aiidetect.perceptual import KIND
    from aiidetect.train_record import load_phashes
    blk = m["training_images"]["perceptual"]
    hs = load_phashes(tmp_path / "p", m)
    assert blk["kind"] == KIND and blk["count"] == len(hs) and 0 < blk["count"] + blk["without_hash"] <= res.n_train
    imgs = sorted(str(p) for p in (planted / "train").rglob("*.png"))
    assert int(member_mask(keys, digests_of(imgs)).sum()) == res.n_train


def test_training_names_the_images_lost_when_one_class_cannot_be_decoded(dev_dir, tiny, tmp_path):
    """Every AI image of a manifest unreadable: training ended on "a probe needs both classes; got 2 real
    and 0 ai", though the manifest lists both, without a word of the files it could not read."""
    import shutil

    from aiidetect.linear.train import train_linear

    for k, src in enumerate(sorted((dev_dir / "real" / "camera").glob("*.jpg"))[:2]):
        shutil.copy(src, tmp_path / f"r{k}.jpg")
    (tmp_path / "a0.jpg").write_text("not an image")
    (tmp_path / "m.csv").write_text("file,label\nr0.jpg,real\nr1.jpg,real\na0.jpg,ai\n")
    spec, bb = tiny
    with pytest.raises(ValueError, match=r"only real training images could be decoded \(2\); 1 could not, "
                                         r"e\.g\. .*a0\.jpg.*replace or remove"):
        train_linear([tmp_path / "m.csv"], spec, name="lost", out=tmp_path / "w" / "lost", backbone=bb, cache=False)
