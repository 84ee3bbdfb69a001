"""Which patches drive an MPFT decision: occlusion on the ViT patch grid.

Each patch token is dropped in turn (the same token dropping TAM trains
with, so the encoder has seen incomplete sequences) and the change of the
binary logit is recorded: delta = logit(full) - logit(without patch).
Positive = the patch pushed towards AI. One forward per patch, batched.
"""
from __future__ import annotations

import numpy as np
import torch

from ..explain.occlusion import MIN_SCALE


@torch.no_grad()
def occlusion_map(model, x: torch.Tensor, patch_size: int, batch: int = 32) -> tuple[float, np.ndarray]:
    model.eval()
    n = (x.shape[-1] // patch_size) ** 2
    base = float(model(x)[0][0])
    deltas = np.zeros(n, dtype=np.float32)
    idx_all = torch.arange(n)
    for s in range(0, n, batch):
        rows = list(range(s, min(n, s + batch)))
        # On the model's device: torch.gather takes no index from another device (a GPU run failed).
        keep = torch.stack([idx_all[idx_all != r] for r in rows]).to(x.device)
        out = model.encode(x.expand(len(rows), -1, -1, -1), keep_index=keep)[model.feature]
        z = model.heads(out)[0]
        deltas[rows] = base - z.float().cpu().numpy()
    g = int(round(n ** 0.5))
    return base, deltas.reshape(g, g)


# The colour scale never goes below this many logits: scaled to its own maximum, a head whose answer barely
# moves (a few thousandths of a logit, bfloat16's rounding) was painted in full red and blue. A display
# choice (the deltas are not changed): the report's P(AI) floor at the decision boundary, where
# dP/dlogit = 1/4, so the two kinds of map stay equally faint for one effect (0.05 P(AI) = 0.2 logit).
MIN_LOGIT_SCALE = 4 * MIN_SCALE


def color_scale(delta: np.ndarray) -> float:
    """The +- range the colours span: the largest |delta|, never less than MIN_LOGIT_SCALE."""
    return max(MIN_LOGIT_SCALE, float(np.abs(delta).max()))


def render_heatmap(u8: np.ndarray, delta: np.ndarray, patch_size: int, alpha: float = 0.5,
                   scale: float | None = None) -> np.ndarray:
    """Red where delta > 0, blue where < 0; opacity grows with |delta| / scale (color_scale when not given),
    so a weak effect stays faint."""
    m = scale or color_scale(delta)
    d = np.kron(delta / m, np.ones((patch_size, patch_size), dtype=np.float32))
    color = np.zeros(u8.shape, dtype=np.float32)
    color[..., 0] = np.clip(d, 0, 1) * 255
    color[..., 2] = np.clip(-d, 0, 1) * 255
    a = alpha * np.abs(d)[..., None]
    return np.clip((1 - a) * u8.astype(np.float32) + a * color, 0, 255).astype(np.uint8)
