"""Preprocessing stays bounded for hostile shapes and gives the same pixels.

A 1x65535 PNG is 341 bytes; resized so its short side is 224 it would be a
224 x 14.7-million-pixel image. Above preprocess.WINDOW_PIXELS the crop window
is computed from the source rows and columns it needs instead; below it the
whole image is resized, as open_clip's Resize + CenterCrop do."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from aiidetect import preprocess
from aiidetect.preprocess import center_crop, make_spec, to_uint8


def _reference_center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Pad to at least size x size (image centered), then crop the center: torchvision's rule, written plainly."""
    h, w = arr.shape[:2]
    if h < size or w < size:
        out = np.zeros((max(h, size), max(w, size), 3), dtype=arr.dtype)
        top, left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
        out[top:top + h, left:left + w] = arr
        arr, h, w = out, out.shape[0], out.shape[1]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return arr[top:top + size, left:left + size]


def _reference_resize_crop(img: Image.Image, size: int, interpolation: str) -> np.ndarray:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), preprocess._resample(interpolation))
    return _reference_center_crop(np.asarray(img), size)


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _rows_then_columns(img: Image.Image, nw: int, nh: int, size: int, interpolation: str) -> np.ndarray:
    r = preprocess._resample(interpolation)
    w, h = img.size
    if nw != w:
        img = img.resize((nw, h), r)
    if nh != h:
        img = img.resize((nw, nh), r)
    return _reference_center_crop(np.asarray(img), size)


@given(st.integers(1, 160), st.integers(1, 1200), st.booleans(), st.sampled_from([8, 16, 24, 33]),
       st.sampled_from(["bicubic", "bilinear", "lanczos", "nearest"]), st.integers(0, 2 ** 16))
@settings(max_examples=250, deadline=None)
def test_the_crop_window_is_the_resampled_window(short, long, wide, size, interpolation, seed):
    """The window path against Pillow's own resampling of the whole image, rows then columns:
    within 2 levels (single-precision box corners). Against a one-call resize, which may run the
    passes the other way round: no further from it on average than Pillow's own rows-then-columns
    result is, plus a quarter level. (A fixed bound of 1 level failed on Pillow's pass order alone:
    an 8 x 8 lanczos crop of noise differs by 1.4 levels between the two orders.)"""
    w, h = (long, short) if wide else (short, long)
    img = _image(w, h, seed)
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    got = preprocess._resize_window(img, nw, nh, size, interpolation).astype(int)
    assert got.shape == (size, size, 3)
    if interpolation == "nearest":
        return   # Pillow's nearest is a transform: the window may take the neighbouring pixel
    rows_then_columns = _rows_then_columns(img, nw, nh, size, interpolation).astype(int)
    assert np.abs(got - rows_then_columns).max() <= 2
    one_call = _reference_resize_crop(img, size, interpolation).astype(int)
    assert np.abs(got - one_call).mean() <= np.abs(rows_then_columns - one_call).mean() + 0.25


def test_below_the_pixel_budget_the_whole_image_is_resized(monkeypatch):
    """Bit for bit the reference for every shape up to WINDOW_PIXELS (1:334 at 224)."""
    called = []
    monkeypatch.setattr(preprocess, "_resize_window", lambda *a: called.append(a))
    spec = make_spec("resize-center-crop", 224)
    for w, h in [(4032, 3024), (640, 480), (300, 3000), (224, 224 * 300), (20000, 70)]:
        img = _image(w, h, 0) if w * h < 5_000_000 else Image.new("RGB", (w, h), (9, 80, 200))
        assert np.array_equal(to_uint8(img, spec), _reference_resize_crop(img, 224, "bicubic"))
    assert called == []
    to_uint8(Image.new("RGB", (2, 400)), make_spec("resize-center-crop", 224))   # 224 x 44800: 10 M, whole
    assert called == []
    to_uint8(Image.new("RGB", (1, 400)), make_spec("resize-center-crop", 224))   # 224 x 89600: 20 M, window
    assert len(called) == 1


@given(st.integers(1, 90), st.integers(1, 90), st.sampled_from([16, 32, 41]), st.integers(0, 2 ** 16))
@settings(max_examples=200, deadline=None)
def test_center_crop_pads_and_crops_like_the_plain_rule(w, h, size, seed):
    img = _image(w, h, seed)
    want = _reference_center_crop(np.asarray(img), size)
    assert np.array_equal(center_crop(np.asarray(img), size), want)
    assert np.array_equal(center_crop(img, size), want)
    assert np.array_equal(to_uint8(img, make_spec("center-crop", size)), want)


@pytest.mark.parametrize("shape,mode", [((1, 65535), "resize-center-crop"), ((65535, 1), "resize-center-crop"),
                                        ((3, 2_000_000), "resize-center-crop"), ((1, 3_000_000), "center-crop")])
def test_a_needle_shaped_image_preprocesses_in_bounded_memory(shape, mode, tmp_path):
    """In a child process under a 1.5 GiB address-space cap (a whole resized 1x65535 image alone is 9.8 GB)."""
    code = f"""
import resource, numpy as np
from PIL import Image
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
from aiidetect.preprocess import apply, make_spec
img = Image.new("RGB", {shape!r}, (200, 30, 90))
x = apply(img, make_spec({mode!r}, 224))
assert x.shape == (3, 224, 224) and np.isfinite(x).all()
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_scan_gives_needle_shaped_files_a_verdict_in_bounded_memory(trained, tmp_path):
    """As a user runs it: small files whose padded or resized image would take gigabytes are
    scanned by a CLIP head (the test probe: center-crop at 224) under a 3 GiB address-space
    cap; padding a 1 x 6 million column to 224 wide took 4 GB before the window was cut first."""
    from conftest import jsonl

    files = []
    for name, size in [("column.png", (1, 6_000_000)), ("row.png", (6_000_000, 1)), ("photo.png", (96, 64))]:
        p = tmp_path / name
        Image.new("RGB", size, (30, 140, 220)).save(p)
        files.append(str(p))
    code = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "sys.argv = ['aiidetect'] + sys.argv[1:]; runpy.run_module('aiidetect', run_name='__main__')")
    env = dict(os.environ, AIIDETECT_WEIGHTS=str(trained))
    r = subprocess.run([sys.executable, "-c", code, "scan", *files, "--backbone-config", "tiny-vit", "-d", "linear",
                        "-f", "jsonl", "--no-cache"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = {Path(x["file"]).name: x for x in jsonl(r.stdout)}
    assert set(recs) == {"column.png", "row.png", "photo.png"}
    for rec in recs.values():
        assert rec["error"] is None and rec["detectors"]["linear:cli-probe"]["status"] == "ok", rec
        assert 0.0 <= rec["detectors"]["linear:cli-probe"]["p_ai"] <= 1.0


def test_a_spec_is_checked_and_takes_a_backbones_numpy_numbers():
    """make_spec takes what a backbone gives (numpy sizes, float32 means in a tuple or array) as it always
    did; check_spec refuses what a head's manifest could hold and no crop can use."""
    from aiidetect.preprocess import check_spec

    spec = make_spec("center-crop", np.int64(224), np.array([0.5, 0.5, 0.5], np.float32), (np.float32(0.25),) * 3)
    assert spec["size"] == 224 and type(spec["size"]) is int and spec["mean"] == [0.5] * 3 and spec["std"] == [0.25] * 3
    assert check_spec({"size": 224.0})["size"] == 224
    for bad in ({"size": 224.5}, {"size": 0}, {"size": 100000}, {"size": True}, {"size": "224"},
                {"mean": [1]}, {"mean": [0, 0, float("nan")]}, {"std": [1, 1, 0]}, {"mean": "abc"},
                {"mode": "bogus"}, {"interpolation": "bogus"}, None, [1]):
        with pytest.raises(ValueError):
            check_spec(bad)


@pytest.mark.parametrize("mode", ["resize", "resize-center-crop", "center-crop"])
@pytest.mark.parametrize("w,h", [(64, 48), (300, 100), (100, 500)])
def test_view_region_is_where_the_view_comes_from(mode, w, h):
    """preprocess.view_region: explanations drawn on the model's view place their boxes on the picture with
    it, so it must name the image pixels each view pixel was made from. A gradient image reads them back."""
    from PIL import Image

    from aiidetect.preprocess import make_spec, to_uint8, view_region

    xs, ys = np.linspace(0, 250, w), np.linspace(0, 250, h)
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0], a[..., 1] = xs[None, :].round(), ys[:, None].round()
    spec = make_spec(mode, 224)
    v = to_uint8(Image.fromarray(a), spec)
    x0, y0, x1, y1 = view_region(w, h, spec)
    u = np.arange(224) + 0.5
    cx, cy = x0 + u * (x1 - x0) / 224, y0 + u * (y1 - y0) / 224
    inx, iny = (cx >= 0.5) & (cx <= w - 1.5), (cy >= 0.5) & (cy <= h - 1.5)
    assert inx.any() and iny.any()
    assert np.abs(v[112, inx, 0] - np.interp(cx[inx] - 0.5, np.arange(w), xs)).max() < 1.5
    assert np.abs(v[iny, 112, 1] - np.interp(cy[iny] - 0.5, np.arange(h), ys)).max() < 1.5
