"""The MPFT network: frozen CLIP ViT + trained adapter + two heads.

``MPFTModel.forward(pixels) -> (binary_logit (B,), attribution_logits (B, L))``
is the inference graph (no masking), a plain traceable nn.Module: the ONNX
exporter calls :func:`build_from_head` and traces it.

The backbone's ``visual`` is held by reference, never copied; only the
adapter, the learned mask token, a feature LayerNorm and the two heads are
trained and saved (:meth:`MPFTModel.trainable_state`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ..backbone import rowwise_matmul, vit_forward
from .lora import EncoderAdapter

MASK_MODES = ("drop", "token")
FEATURES = ("embed", "pooled")


class MPFTModel(nn.Module):
    def __init__(self, visual, labels: Sequence[str], adapter: Mapping[str, Any] | None = None,
                 feature: str = "embed"):
        super().__init__()
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}")
        labels = list(labels)
        if not labels or labels[0] != "real":
            raise ValueError("attribution labels must start with 'real'")
        self.visual = visual  # frozen, shared; excluded from trainable_state
        self.labels = labels
        self.feature = feature
        self.adapter = EncoderAdapter.from_config(visual, dict(adapter or {}))
        width = int(visual.conv1.out_channels)
        dim = int(visual.proj.shape[1]) if (feature == "embed" and visual.proj is not None) else width
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.binary = nn.Linear(dim, 1)
        self.attribution = nn.Linear(dim, len(labels))

    # the frozen backbone must stay in eval mode whatever the trainer does
    def train(self, mode: bool = True):
        super().train(mode)
        self.visual.eval()
        return self

    def params(self) -> dict[str, Any]:
        """What build_from_head needs to rebuild this module (manifest ``params``)."""
        return {"adapter": self.adapter.config(), "feature": self.feature, "n_labels": len(self.labels)}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("visual.")}

    def load_trainable_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        own = set(self.trainable_state())
        got = set(tensors)
        if own != got:
            missing, extra = sorted(own - got), sorted(got - own)
            raise ValueError(f"MPFT tensors do not match the model (missing {missing[:5]}, unexpected {extra[:5]})")
        # torch's own refusal listed every tensor of the wrong shape, one line each, in every scan row
        mine = self.trainable_state()
        wrong = [f"{k} is {tuple(tensors[k].shape)} in the file, {tuple(mine[k].shape)} in the model"
                 for k in sorted(own) if tuple(tensors[k].shape) != tuple(mine[k].shape)]
        if wrong:
            more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
            raise ValueError(f"MPFT tensors do not match the model its manifest describes: {wrong[0]}{more}")
        self.load_state_dict(dict(tensors), strict=False)

    def encode(self, pixels: torch.Tensor, *, keep_index: torch.Tensor | None = None,
               replace_mask: torch.Tensor | None = None, layers: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        """vit_forward on the shared frozen visual, with the adapter's blocks."""
        return vit_forward(self.visual, pixels, keep_index=keep_index, replace_mask=replace_mask,
                           mask_token=self.mask_token if replace_mask is not None else None,
                           layers=layers, block_fn=self.adapter.block_fn)

    def heads(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.norm(feats.float())
        # row by row: a file's logits must not depend on the rest of its batch (backbone.rowwise_matmul)
        return (rowwise_matmul(z, self.binary.weight.T, self.binary.bias).squeeze(-1),
                rowwise_matmul(z, self.attribution.weight.T, self.attribution.bias))

    def forward_masked(self, pixels: torch.Tensor, mask: torch.Tensor | None, mask_mode: str = "drop"):
        """Training forward: mask (B, N) bool, True = hidden (TAM)."""
        if mask is None or not bool(mask.any()):
            out = self.encode(pixels)
        elif mask_mode == "drop":
            from .tam import keep_index

            out = self.encode(pixels, keep_index=keep_index(mask))
        elif mask_mode == "token":
            out = self.encode(pixels, replace_mask=mask)
        else:
            raise ValueError(f"mask mode must be one of {MASK_MODES}")
        return self.heads(out[self.feature])

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.encode(pixels)[self.feature])


def build_from_head(head, backbone) -> MPFTModel:
    """Rebuild the inference module from a saved head on `backbone` (frozen,
    shared). Raises weights.HeadMismatch when the head was trained on another
    backbone, ValueError when the artifact is not an MPFT head or is corrupt."""
    head.check_backbone(backbone.fingerprint, backbone.spec.describe())
    m = head.manifest
    if m.get("detector") != "mpft":
        raise ValueError(f"{head.path} is a {m.get('detector')!r} head, not mpft")
    p = m.get("params") or {}
    model = MPFTModel(backbone.visual, m["labels"], adapter=p.get("adapter"), feature=p.get("feature", "embed"))
    model.load_trainable_state(head.tensors)
    dev = next(backbone.visual.parameters()).device
    model.to(dev)
    # trained params stay float32; the frozen weights keep the backbone's dtype
    return model.eval()
