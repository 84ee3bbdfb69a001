"""explain-mask / explain-mpft as a script runs them: `-o -`, hostile files, bounded work."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def mpft_weights(tmp_path_factory):
    """A random but valid MPFT head on tiny-vit, saved as training would (no training: seconds, not minutes)."""
    import torch

    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.heads import backbone_manifest, save_head
    from aiidetect.mpft.model import MPFTModel
    from aiidetect.preprocess import make_spec

    tiny = create_backbone(BackboneSpec.from_options(config="tiny-vit", seed=0))
    d = tmp_path_factory.mktemp("mpft-weights")
    torch.manual_seed(0)
    mp = MPFTModel(tiny.visual, ["real", "sd"], adapter={"mode": "lora", "rank": 2})
    save_head(d / "m", dict(mp.trainable_state()),
              {"name": "m", "detector": "mpft", "backbone": backbone_manifest(tiny),
               "preprocessing": make_spec("resize-center-crop", 224), "labels": ["real", "sd"],
               "params": mp.params(), "calibration": {"method": "temperature", "temperature": 1.0}})
    return d


@pytest.fixture
def photo(tmp_path):
    from aiidetect.testing.images import noise_rgb, save

    return save(noise_rgb(64, 48), tmp_path / "photo.jpg", quality=90)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "aiidetect", *args], capture_output=True, timeout=300)


def _whole_png(blob: bytes):
    """The bytes are one PNG and nothing after it (a decoder ignores trailing bytes; a script's file would not)."""
    from PIL import Image

    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    assert blob.endswith(b"IEND\xaeB`\x82"), blob[-40:]
    return Image.open(io.BytesIO(blob))


def test_explain_mask_to_stdout_is_the_png_alone(photo):
    """`explain-mask a.jpg -o - > map.png` wrote the PNG and then the line "-\\n" into it."""
    r = _run("explain-mask", str(photo), "-o", "-")
    assert r.returncode == 0, r.stderr
    assert _whole_png(r.stdout).size[0] >= 224


def test_explain_mpft_to_stdout_is_the_png_alone_and_the_summary_on_stderr(photo, mpft_weights):
    """`explain-mpft a.jpg -o -` wrote the PNG, then its JSON summary after it, into one stream."""
    r = _run("explain-mpft", str(photo), "-o", "-", "--backbone-config", "tiny-vit", "--weights-dir",
             str(mpft_weights))
    assert r.returncode == 0, r.stderr
    _whole_png(r.stdout)
    info = json.loads(r.stderr.decode().strip().splitlines()[-1])
    assert info["head"] == "m" and info["output"] == "-" and 0 <= info["p_ai"] <= 1


def test_explain_mpft_takes_the_first_head_this_backbone_runs(photo, mpft_weights, tmp_path):
    """Without --head it took the first MPFT head found, and stopped (exit 2, "trained on backbone ...")
    when that one needed another backbone, though the next one fitted: a scan runs every head that fits."""
    import shutil

    from aiidetect.heads import read_manifest, save_head

    w = tmp_path / "w"
    shutil.copytree(mpft_weights / "m", w / "m")
    m = read_manifest(w / "m")
    m["name"] = "a-other"
    m["backbone"] = {**m["backbone"], "fingerprint": "0" * 24, "name": "other-vit"}
    from safetensors.numpy import load_file as load_np

    save_head(w / "a-other", load_np(str(w / "m" / "head.safetensors")), m)
    from conftest import run_cli_in_process

    # in-process: which head is taken is the question (the tests above keep the subprocess runs)
    r = run_cli_in_process("explain-mpft", str(photo), "-o", str(tmp_path / "map.png"), "--backbone-config",
                           "tiny-vit", "--weights-dir", str(w))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["head"] == "m" and (tmp_path / "map.png").is_file()


def test_explain_mpft_explains_the_logit_scan_reports_in_its_dtype(photo, mpft_weights, tmp_path):
    """explain-mpft had no --dtype/--device and always ran float32, while scan's `auto` runs bfloat16 on CPUs
    with native bf16: the map's baseline logit was not the one in the record it was meant to explain."""
    from conftest import run_cli_in_process

    common = ("--backbone-config", "tiny-vit", "--weights-dir", str(mpft_weights), "--dtype", "bfloat16")
    r = run_cli_in_process("explain-mpft", str(photo), "-o", str(tmp_path / "map.png"), *common)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    s = run_cli_in_process("scan", str(photo), "-d", "mpft", "-f", "json", "--no-cache", *common)
    assert s.returncode == 0, s.stderr
    det = json.loads(s.stdout)[0]["detectors"]["mpft:m"]
    assert info["dtype"] == det["dtype"] == "bfloat16"
    assert info["logit"] == round(det["score"], 4)


@pytest.fixture(scope="module")
def explained(mpft_weights, tmp_path_factory):
    """One float32 explain-mpft run (a second of occlusion passes each), read by the tests below: an image
    stored 96 wide, 64 tall with EXIF orientation 6, so shown 64 wide, 96 tall. (image, map, JSON summary)."""
    from PIL import Image

    from conftest import run_cli_in_process

    d = tmp_path_factory.mktemp("explained")
    stored = Image.fromarray((np.random.RandomState(0).rand(64, 96, 3) * 255).astype(np.uint8))
    ex = Image.Exif()
    ex[274] = 6
    stored.save(d / "rot.jpg", exif=ex)
    r = run_cli_in_process("explain-mpft", str(d / "rot.jpg"), "-o", str(d / "map.png"), "-f", "json",
                           "--backbone-config", "tiny-vit", "--weights-dir", str(mpft_weights), "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    return d / "rot.jpg", d / "map.png", json.loads(r.stdout)


def test_explain_mpft_does_not_paint_a_tiny_effect_in_full_colour(explained, mpft_weights):
    """The colours were scaled to the map's own largest |delta|: a random head whose logit moved by a few
    thousandths per patch came out as a map of full red and blue squares. The scale has a floor, as the
    report's heat maps have, so the map over the model's view stays nearly clear."""
    from PIL import Image

    from aiidetect.decode import load_rgb
    from aiidetect.heads import read_manifest
    from aiidetect.preprocess import to_uint8

    image, out, info = explained
    assert abs(info["top_patches"][0]["delta"]) < 0.05  # the premise: this random head barely moves
    assert info["scale"] >= 0.2
    view = to_uint8(load_rgb(image), read_manifest(mpft_weights / "m")["preprocessing"])
    drawn = np.asarray(Image.open(out).convert("RGB"))[:view.shape[0], :view.shape[1]]
    assert int(np.abs(drawn.astype(int) - view.astype(int)).max()) <= 8


def test_explain_mpft_top_patches_say_where_they_are_on_the_picture(explained):
    """top_patches gave only row/col on the patch grid of the resized, centre-cropped view: nothing said
    where that is on the picture a reader sees (a rotated camera JPEG, a crop that drops the edges). Each now
    has a box in the image's own pixels, EXIF orientation applied."""
    # resize-center-crop 224: 64x96 -> 224x336, rows 56..280 kept = image rows 16..80; a 16-pixel patch is
    # 16/3.5 image pixels.
    step = 16 / 3.5
    for p in explained[2]["top_patches"]:
        x0, y0, x1, y1 = p["box"]
        assert (x0, y0) == (int(p["col"] * step), int(16 + p["row"] * step)), p
        assert x1 - x0 in (4, 5, 6) and y1 - y0 in (4, 5, 6) and x1 <= 64 and y1 <= 80, p


@pytest.mark.parametrize("cmd", ["explain-mask", "explain-mpft"])
def test_explain_to_stdout_at_a_terminal_is_refused(cmd, photo, mpft_weights, monkeypatch):
    """`-o -` with stdout a terminal wrote the PNG's bytes onto the screen (exit 0), after computing it all."""
    import aiidetect.report.safe as safe

    from conftest import run_cli_in_process

    monkeypatch.setattr(safe, "is_terminal", lambda stream: True)
    r = run_cli_in_process(cmd, str(photo), "-o", "-", "--backbone-config" if cmd == "explain-mpft" else "--seed",
                           "tiny-vit" if cmd == "explain-mpft" else "0", "--weights-dir" if cmd == "explain-mpft"
                           else "--mask-ratio", str(mpft_weights) if cmd == "explain-mpft" else "0.3")
    assert r.returncode == 2, r.stdout
    assert r.stdout == "" and "terminal" in r.stderr


def test_explain_mpft_takes_format_like_every_command_that_prints_a_summary(explained, mpft_weights, tmp_path):
    """explain-mpft printed its summary as JSON only, with no --format: the one command printing results
    outside the contract of docs/cli.md. json stays the default (scripts read it); table is for people."""
    from conftest import run_cli_in_process

    image, _, info = explained  # `-f json` there
    t = run_cli_in_process("explain-mpft", str(image), "-o", str(tmp_path / "m.png"), "-f", "table",
                           "--backbone-config", "tiny-vit", "--weights-dir", str(mpft_weights), "--dtype", "float32")
    assert t.returncode == 0, t.stderr
    lines = t.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'm.png'}: head m (float32), logit {info['logit']}, ") and len(lines) == 7
    p = info["top_patches"][0]
    assert lines[2] == "  row {}, col {} (x {}-{}, y {}-{}): {:+.4f}".format(p["row"], p["col"], *p["box"][::2],
                                                                         *p["box"][1::2], p["delta"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(t.stdout)


@pytest.mark.parametrize("cmd", ["explain-mask", "explain-mpft"])
def test_explain_decodes_under_the_limits_scan_takes(cmd, photo, mpft_weights, tmp_path):
    """The explainers had no --max-pixels/--max-bytes: a file a scan with a raised --max-pixels judged could
    not be explained, and the refusal said `(--max-pixels)`, an option the command did not take."""
    from conftest import run_cli_in_process

    model = ("--backbone-config", "tiny-vit", "--weights-dir", str(mpft_weights)) if cmd == "explain-mpft" else ()
    r = run_cli_in_process(cmd, str(photo), "-o", str(tmp_path / "m.png"), "--max-pixels", "100", *model)
    assert r.returncode == 2 and "too-large" in r.stderr and "--max-pixels" in r.stderr, r.stderr
    r = run_cli_in_process(cmd, str(photo), "-o", str(tmp_path / "m.png"), "--max-bytes", "10", *model)
    assert r.returncode == 2 and "too-large" in r.stderr, r.stderr
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_top_patch_box_lands_on_the_pixels_the_model_saw(orientation, tmp_path):
    """For every preprocessing and every EXIF orientation (the mirrored 2, 4, 5, 7 too): paint a patch's box
    on the picture as shown, store it turned the other way with that tag, and the model's view must hold
    the paint on that patch and nowhere far from it."""
    from PIL import Image

    from aiidetect.decode import load_rgb
    from aiidetect.mpft.explain_cli import _top_patch
    from aiidetect.preprocess import make_spec, to_uint8, view_region

    T = Image.Transpose
    undo = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90,
            7: T.TRANSVERSE, 8: T.ROTATE_270}.get(orientation)
    size, patch = 32, 8
    for mode in ("center-crop", "resize-center-crop", "resize"):
        spec = make_spec(mode, size)
        for (w, h), (r, c) in (((40, 56), (1, 2)), ((24, 20), (0, 0)), ((90, 33), (3, 1))):
            region = view_region(w, h, spec)
            delta = np.zeros((size // patch, size // patch))
            delta[r, c] = 1
            box = _top_patch(r * delta.shape[1] + c, delta, patch, region, (w, h), spec)["box"]
            shown = (np.random.RandomState(w).rand(h, w, 3) * 100).astype(np.uint8)
            shown[box[1]:box[3], box[0]:box[2]] = (255, 0, 255)
            stored = Image.fromarray(shown) if undo is None else Image.fromarray(shown).transpose(undo)
            ex = Image.Exif()
            ex[274] = orientation
            stored.save(tmp_path / "p.png", exif=ex)
            img = load_rgb(tmp_path / "p.png")
            assert np.array_equal(np.asarray(img), shown)  # decoded as shown
            v = to_uint8(img, spec).astype(int)
            paint = (v[..., 0] > 180) & (v[..., 1] < 60) & (v[..., 2] > 180)
            # The patch's view pixels that come from the image (not center-crop's padding) are all painted...
            u = np.arange(size) + 0.5
            cx = region[0] + u * (region[2] - region[0]) / size
            cy = region[1] + u * (region[3] - region[1]) / size
            seen = ((cy >= 0) & (cy < h))[:, None] & ((cx >= 0) & (cx < w))[None, :]
            cell = np.s_[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
            assert paint[cell][seen[cell]].all(), (mode, (w, h), box)
            # ...and paint elsewhere is only the box's rounding out to whole pixels and the filter's reach.
            mx = max(1, size / (region[2] - region[0])) + 1
            my = max(1, size / (region[3] - region[1])) + 1
            ys, xs = np.nonzero(paint)
            assert (xs >= c * patch - mx).all() and (xs < (c + 1) * patch + mx).all(), (mode, (w, h), box)
            assert (ys >= r * patch - my).all() and (ys < (r + 1) * patch + my).all(), (mode, (w, h), box)


def test_explain_mpft_refuses_a_file_before_it_builds_the_model(mpft_weights, tmp_path, monkeypatch):
    """A file a scan would refuse (not an image, too large) was decoded only after the backbone was built and
    the head loaded: seconds to a minute of a ViT-L for one line of refusal, on each file of a script's loop."""
    import aiidetect.backbone as backbone

    from conftest import run_cli_in_process

    def no_model(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(backbone, "create_backbone", no_model)
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    r = run_cli_in_process("explain-mpft", str(tmp_path / "x.jpg"), "-o", str(tmp_path / "m.png"),
                           "--backbone-config", "tiny-vit", "--weights-dir", str(mpft_weights))
    assert r.returncode == 2 and "x.jpg" in r.stderr and not (tmp_path / "m.png").exists(), r.stderr


def test_explain_mpft_json_carries_its_schema_version(explained):
    """The scan record says which schema it follows; explain-mpft's JSON said nothing, so a script could not
    tell a summary it knows from one whose keys changed. Versioned as the record is, and documented."""
    import re

    from aiidetect.mpft.explain_cli import EXPLAIN_MPFT_SCHEMA

    info = explained[2]
    assert list(info)[0] == "schema" and info["schema"] == EXPLAIN_MPFT_SCHEMA
    assert re.fullmatch(r"\d+\.\d+", EXPLAIN_MPFT_SCHEMA)
    doc = (Path(__file__).parents[2] / "docs" / "detectors" / "mpft.md").read_text(encoding="utf-8")
    assert f"`schema`, is `\"{EXPLAIN_MPFT_SCHEMA}\"`" in doc
    keys = re.search(r"Keys: (.*?) \(each", doc, re.S).group(1)
    assert re.findall(r"`(\w+)`", keys) == list(info)
