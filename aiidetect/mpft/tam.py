"""Texture-Aware Masking (TAM): score every ViT patch by how textured it is and
pick the patches to hide from the encoder during fine-tuning.

Texture score (our choice): mean squared response of a 3x3 Laplacian on the
luminance of the image *as the model sees it* (after preprocessing, pixel
values back in [0, 1]), averaged over each patch.

Why the Laplacian energy:
- generator fingerprints (up-sampling grids, checkerboards, diffusion decoder
  noise) live in the highest spatial frequencies, and the Laplacian is the
  smallest isotropic high-pass filter: its energy is exactly "how much of this
  patch is high-frequency";
- local variance also counts smooth ramps and large edges (sky gradients,
  vignetting) as texture, although they carry no generator trace;
- first-derivative (Sobel) energy sits between the two; the Laplacian responds
  more strongly to the 2-pixel periodic patterns that transposed convolutions
  leave behind, which are the ones we want the encoder *not* to lean on.
Masking those patches forces the fine-tuned encoder to model how the rest of
the image deviates from real-image statistics instead of memorising one
generator's high-frequency signature (which is what fails to generalise).

Everything here works on torch tensors so it can run on the augmented batch
inside the training loop; `explain-mask` uses the same functions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

MASK_MODES = ("topk", "sample")
LUMA = (0.299, 0.587, 0.114)


def texture_scores(pixels: "torch.Tensor", patch_size: int, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> "torch.Tensor":
    """(B,3,S,S) pixels -> (B, N) texture score per patch, N = (S/patch)^2,
    in the ViT's row-major patch order.

    With mean/std the pixels are normalised model inputs and are mapped back to
    [0, 1] first, so scores do not depend on the normalisation constants.
    """
    import torch
    import torch.nn.functional as F

    x = pixels.detach().float()
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = x * s + m
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    y = (x * w).sum(1, keepdim=True)
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=x.dtype, device=x.device)
    # replicate padding: an image border is not an edge
    lap = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))
    energy = F.avg_pool2d(lap * lap, kernel_size=patch_size, stride=patch_size)
    return energy.flatten(1)


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
             power: float = 1.0) -> "torch.Tensor":
    """Convenience: pixels -> bool mask, seeded."""
    import torch

    g = None
    if seed is not None:
        g = torch.Generator().manual_seed(int(seed))
    return select_mask(texture_scores(pixels, patch_size, mean, std), ratio, mode, generator=g, power=power)


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
