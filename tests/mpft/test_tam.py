"""Texture-Aware Masking: where it masks, how many, reproducibly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aiidetect.mpft.tam import keep_index, n_masked, select_mask, tam_mask, texture_scores

from conftest import run_cli

S, P, G = 224, 16, 14


def quadrant_image(seed: int = 0) -> torch.Tensor:
    """Flat grey, except a noisy top-left quadrant."""
    rng = np.random.default_rng(seed)
    img = np.full((3, S, S), 0.5, dtype=np.float32)
    img[:, : S // 2, : S // 2] = rng.uniform(0, 1, size=(3, S // 2, S // 2))
    return torch.from_numpy(img).unsqueeze(0)


def in_quadrant(mask_row: torch.Tensor) -> bool:
    idx = torch.nonzero(mask_row).flatten()
    r, c = idx // G, idx % G
    return bool(((r < G // 2) & (c < G // 2)).all())


@pytest.mark.parametrize("mode", ["topk", "sample"])
def test_textured_quadrant_is_masked(mode):
    x = quadrant_image()
    scores = texture_scores(x, P)
    assert scores.shape == (1, G * G)
    mask = tam_mask(x, P, 0.2, mode, seed=3)
    assert int(mask.sum()) == n_masked(G * G, 0.2) == 39
    assert in_quadrant(mask[0])


def test_normalised_input_gives_same_scores():
    x = quadrant_image()
    mean, std = (0.48, 0.45, 0.41), (0.27, 0.26, 0.28)
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(texture_scores(x, P), texture_scores(xn, P, mean, std), atol=1e-5)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 0.75])
@pytest.mark.parametrize("mode", ["topk", "sample"])
def test_ratio_respected(ratio, mode):
    x = torch.rand(4, 3, S, S)
    mask = tam_mask(x, P, ratio, mode, seed=1)
    assert mask.shape == (4, G * G)
    assert (mask.sum(1) == round(ratio * G * G)).all()
    kept = keep_index(mask)
    assert kept.shape == (4, G * G - round(ratio * G * G))
    for b in range(4):
        assert not mask[b, kept[b]].any()
        assert (kept[b][1:] > kept[b][:-1]).all()


def test_deterministic_under_seed():
    x = torch.rand(2, 3, S, S)
    a = tam_mask(x, P, 0.4, "sample", seed=7)
    b = tam_mask(x, P, 0.4, "sample", seed=7)
    c = tam_mask(x, P, 0.4, "sample", seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(tam_mask(x, P, 0.4, "topk"), tam_mask(x, P, 0.4, "topk"))


def test_bad_arguments():
    with pytest.raises(ValueError):
        select_mask(torch.rand(1, 4), 1.0)
    with pytest.raises(ValueError):
        select_mask(torch.rand(1, 4), 0.5, mode="random")


def test_explain_mask_cli(tmp_path):
    from PIL import Image

    x = quadrant_image()[0].permute(1, 2, 0).numpy()
    src = tmp_path / "quad.png"
    Image.fromarray((x * 255).astype(np.uint8)).save(src)
    out = tmp_path / "mask.png"
    r = run_cli("explain-mask", str(src), "-o", str(out), "--mask-ratio", "0.2")
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    orig = np.asarray(Image.open(src)).astype(int)
    full = np.asarray(Image.open(out)).astype(int)
    assert full.shape[0] > orig.shape[0]  # a legend strip under the image
    shaded = full[:orig.shape[0], :orig.shape[1]]
    # shaded patches are tinted red: only inside the textured quadrant
    diff = np.abs(shaded - orig).sum(-1)
    centres = diff[P // 2::P, P // 2::P]  # one pixel per patch, away from the grid lines
    tinted = centres > 60
    assert tinted.sum() >= 30  # a noisy pixel may already be close to the tint
    assert not tinted[G // 2:, :].any() and not tinted[:, G // 2:].any()


def test_explain_mask_checks_the_heads_preprocessing(tmp_path):
    """--head took the manifest's preprocessing unchecked: a one-number mean was used as is (and a
    hostile size is what gets allocated); a missing block was a KeyError."""
    import json

    from PIL import Image

    src = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (90, 90, 90)).save(src)
    spec = {"mode": "center-crop", "size": 224, "mean": [1], "std": [0.26, 0.26, 0.27], "interpolation": "bicubic"}
    for name, manifest, why in (("one-mean", {"preprocessing": spec}, "mean must be 3 finite numbers"),
                                ("none", {}, "preprocessing is NoneType")):
        head = tmp_path / name
        head.mkdir()
        (head / "manifest.json").write_text(json.dumps({"name": name, "detector": "mpft", **manifest}))
        r = run_cli("explain-mask", str(src), "-o", str(tmp_path / f"{name}.png"), "--head", str(head))
        assert r.returncode == 2 and why in r.stderr and "Error:" not in r.stderr, (name, r.stderr)
        assert not (tmp_path / f"{name}.png").exists()


def planted_patches() -> torch.Tensor:
    """Grey 64x64 image, one 16 px patch each: a straight hard edge, a curved
    hard edge (disk), a diagonal edge, a +-4/255 period-2 checkerboard, a
    +-4/255 period-4 checkerboard, fine noise; the rest flat."""
    x = torch.full((1, 3, 64, 64), 0.5)
    i, j = np.indices((16, 16))
    x[..., 0:16, 0:8], x[..., 0:16, 8:16] = 0.0, 1.0
    x[..., 0:16, 16:32] = torch.from_numpy(((i - 8) ** 2 + (j - 8) ** 2 <= 30).astype(np.float32))
    x[..., 0:16, 32:48] = torch.from_numpy((i > j).astype(np.float32))
    x[..., 16:32, 0:16] = 0.5 + torch.from_numpy(np.where((i + j) % 2 == 0, 4, -4).astype(np.float32) / 255)
    x[..., 16:32, 16:32] = 0.5 + torch.from_numpy(np.where((i // 2 + j // 2) % 2 == 0, 4, -4).astype(np.float32) / 255)
    x[..., 16:32, 32:48] = 0.5 + 0.03 * torch.from_numpy(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
    return x


def test_fine_texture_ranks_above_isolated_edges():
    s = texture_scores(planted_patches(), 16)[0].view(4, 4)
    edges = [float(s[0, 0]), float(s[0, 1]), float(s[0, 2])]
    textures = [float(s[1, 0]), float(s[1, 1]), float(s[1, 2])]
    assert min(textures) > max(edges), (textures, edges)
    assert max(edges) == 0.0 and float(s[3, 3]) == 0.0  # edges and flat areas are not texture
    # the masked patches are the three textured ones
    mask = select_mask(s.view(1, 16), 3 / 16, "topk")[0].view(4, 4)
    assert mask[1, :3].all() and int(mask.sum()) == 3


def test_laplacian_measure_ranks_edges_first():
    # the former measure, kept for comparison: it would mask the edges, not the texture
    s = texture_scores(planted_patches(), 16, measure="laplacian")[0].view(4, 4)
    assert float(s[0, 0]) > float(s[1, 0]) * 4
    with pytest.raises(ValueError, match="texture measure"):
        texture_scores(planted_patches(), 16, measure="sobel")
