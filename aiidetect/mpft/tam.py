"""Texture-Aware Masking (TAM): score every ViT patch by how textured it is and
pick the patches to hide from the encoder during fine-tuning.

What counts as texture: fine, dense, repetitive high-frequency structure
(up-sampling checkerboards, diffusion decoder noise, grass, fabric), which is
where a generator's trace sits and what TAM hides so the encoder cannot lean
on one generator's signature. An isolated object edge is not texture: it is
content, and hiding it teaches nothing about generators.

Texture score (``measure="median-residual"``, the default): on the luminance of
the image as the model sees it (after preprocessing, values back in [0, 1]),

1. smooth with a 5-point cross median (the pixel and its 4 neighbours at
   distance d), d = 1 and d = 2. A cross median keeps straight and diagonal
   step edges and ramps exactly (3 of the 5 samples lie on the pixel's side),
   but replaces the pixel of a period-2d pattern by its neighbours' value;
2. take the residual (luma - smoothed), square it;
3. per patch, take the *median* of the squared residual over the patch's
   pixels, averaged over d = 1, 2.

The median makes the score dense-texture-only: the few pixels where a curved
or jagged edge leaves a residual cannot lift it, while a pattern covering the
patch lifts every pixel. Measured on planted 16 px patches (tests/mpft/test_tam.py):
a +-4/255 period-2 checkerboard scores about 5e-4, one hard black/white edge,
straight or curved, 0.

``measure="laplacian"`` is the former measure (mean squared 3x3 Laplacian),
kept for comparison: it scores that edge patch about 0.12 and the checkerboard
0.015, i.e. it masks edges before texture.

Everything here works on torch tensors so it can run on the augmented batch
inside the training loop; `explain-mask` uses the same functions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

MASK_MODES = ("topk", "sample")
LUMA = (0.299, 0.587, 0.114)


MEASURES = ("median-residual", "laplacian")


def _luma01(pixels, mean, std):
    import torch

    x = pixels.detach().float()
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = x * s + m
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _cross_median_residual(y: "torch.Tensor", d: int) -> "torch.Tensor":
    import torch
    import torch.nn.functional as F

    # replicate padding: an image border is not an edge
    yp = F.pad(y, (d, d, d, d), mode="replicate")
    h, w = y.shape[-2:]
    stack = torch.stack([yp[..., d:d + h, d:d + w], yp[..., 0:h, d:d + w], yp[..., 2 * d:2 * d + h, d:d + w],
                         yp[..., d:d + h, 0:w], yp[..., d:d + h, 2 * d:2 * d + w]], dim=0)
    return y - stack.median(dim=0).values


def texture_scores(pixels: "torch.Tensor", patch_size: int, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, measure: str = "median-residual") -> "torch.Tensor":
    """(B,3,S,S) pixels -> (B, N) texture score per patch, N = (S/patch)^2,
    in the ViT's row-major patch order.

    With mean/std the pixels are normalised model inputs and are mapped back to
    [0, 1] first, so scores do not depend on the normalisation constants.
    """
    import torch
    import torch.nn.functional as F

    if measure not in MEASURES:
        raise ValueError(f"unknown texture measure {measure!r}; one of {MEASURES}")
    y = _luma01(pixels, mean, std)
    if measure == "laplacian":
        k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=y.dtype, device=y.device)
        lap = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))
        return F.avg_pool2d(lap * lap, kernel_size=patch_size, stride=patch_size).flatten(1)
    b = y.shape[0]
    score = None
    for d in (1, 2):
        r2 = _cross_median_residual(y, d) ** 2
        # (B, 1, S, S) -> (B, N, patch*patch): pixels of each patch, row-major patch order
        cols = F.unfold(r2, kernel_size=patch_size, stride=patch_size).view(b, patch_size * patch_size, -1)
        med = cols.median(dim=1).values
        score = med if score is None else score + med
    return score / 2


def n_masked(n_patches: int, ratio: float) -> int:
    """How many patches a ratio hides; never all of them (the encoder needs
    something to look at)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    return min(n_patches - 1, int(round(ratio * n_patches)))


def select_mask(scores: "torch.Tensor", ratio: float, mode: str = "topk", generator: "torch.Generator | None" = None,
                power: float = 1.0) -> "torch.Tensor":
    """(B, N) scores -> (B, N) bool, True = masked; exactly n_masked(N, ratio) per row.

    - ``topk``: the most textured patches (deterministic; ties broken by index);
    - ``sample``: sampled without replacement with probability proportional to
      ``score ** power`` (Gumbel top-k), so textured patches are masked most
      often but the encoder still sees some of them across epochs. Reproducible
      with a seeded ``generator``.
    """
    import torch

    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; one of {MASK_MODES}")
    b, n = scores.shape
    k = n_masked(n, ratio)
    mask = torch.zeros(b, n, dtype=torch.bool, device=scores.device)
    if k == 0:
        return mask
    s = scores.detach().float()
    if mode == "topk":
        # stable sort on -score: equal scores keep index order, so flat images are deterministic
        idx = torch.sort(-s, dim=1, stable=True).indices[:, :k]
    else:
        p = s.clamp_min(0) ** power
        p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
        # a floor keeps zero-texture patches possible (flat images still get masked)
        logp = torch.log(p + 1e-8)
        u = torch.rand(b, n, generator=generator, device="cpu").to(s.device).clamp(1e-9, 1 - 1e-9)
        gumbel = -torch.log(-torch.log(u))
        idx = torch.topk(logp + gumbel, k, dim=1).indices
    mask.scatter_(1, idx, True)
    return mask


def keep_index(mask: "torch.Tensor") -> "torch.Tensor":
    """(B, N) bool mask with the same count per row -> (B, N-k) long indices of
    the kept patches, ascending (what Backbone.encode(keep_index=...) takes)."""
    import torch

    b, n = mask.shape
    kept = (~mask).sum(1)
    if not bool((kept == kept[0]).all()):
        raise ValueError("token dropping needs the same number of masked patches in every row")
    order = torch.sort((mask.long() * n) + torch.arange(n, device=mask.device).view(1, n), dim=1).indices
    return order[:, : int(kept[0])]


def tam_mask(pixels: "torch.Tensor", patch_size: int, ratio: float, mode: str = "topk", seed: int | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             power: float = 1.0, measure: str = "median-residual") -> "torch.Tensor":
    """Convenience: pixels -> bool mask, seeded."""
    import torch

    g = None
    if seed is not None:
        g = torch.Generator().manual_seed(int(seed))
    return select_mask(texture_scores(pixels, patch_size, mean, std, measure), ratio, mode, generator=g, power=power)


def shade_mask(u8, mask_grid, patch_size: int, alpha: float = 0.6, color=(255, 0, 64)):
    """HxWx3 uint8 image + (g, g) bool grid -> uint8 image with masked patches
    tinted and a thin grid drawn, for `aiidetect explain-mask`."""
    import numpy as np

    out = u8.astype(np.float32).copy()
    g = mask_grid.shape[0]
    c = np.asarray(color, dtype=np.float32)
    for r in range(g):
        for q in range(g):
            if mask_grid[r, q]:
                sl = out[r * patch_size:(r + 1) * patch_size, q * patch_size:(q + 1) * patch_size]
                sl[:] = (1 - alpha) * sl + alpha * c
    out[::patch_size, :, :] = out[::patch_size, :, :] * 0.5
    out[:, ::patch_size, :] = out[:, ::patch_size, :] * 0.5
    return np.clip(out, 0, 255).astype(np.uint8)
