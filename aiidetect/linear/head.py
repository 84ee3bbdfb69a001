"""A linear head as stored on disk, and how it is applied.

Tensors: ``weight`` (1, D) and ``bias`` (1,) — the layout of ``nn.Linear(D, 1)``
and of UnivFD's published ``fc_weights.pth``, so a head converts to a torch
module (ONNX export) without any renaming. The head reads one backbone output
(``params.feature``, default ``embed``: pooled, after projection, not
normalised) at the head's own preprocessing. p_ai = sigmoid of the calibrated
logit; the raw logit is the detector's score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..probability import Calibrator
from .probe import LinearProbe

FAMILY = "linear"


@dataclass
class LinearHead:
    name: str
    weight: np.ndarray        # (D,) float32
    bias: float
    feature: str = "embed"
    calibration: Mapping[str, Any] | None = None
    threshold: float = 0.5    # on p_ai
    preprocessing: Mapping[str, Any] | None = None

    @classmethod
    def from_head(cls, head) -> "LinearHead":
        """From a weights.Head (load_head). Validates the tensor shapes."""
        if head.detector != FAMILY:
            raise ValueError(f"head {head.name!r} is a {head.detector!r} head, not {FAMILY!r}")
        w = head.tensors.get("weight")
        b = head.tensors.get("bias")
        if w is None or b is None:
            raise ValueError(f"head {head.name!r} has no weight/bias tensors")
        w = w.detach().float().cpu().numpy()
        b = b.detach().float().cpu().numpy().reshape(-1)
        if w.ndim != 2 or w.shape[0] != 1 or b.shape != (1,):
            raise ValueError(f"head {head.name!r}: expected weight (1, D) and bias (1,), got {w.shape} and {b.shape}")
        m = head.manifest
        Calibrator.from_manifest(m)  # an unreadable calibration fails here, at load, not on every file
        params = m.get("params") or {}
        return cls(name=head.name, weight=w[0].copy(), bias=float(b[0]), feature=params.get("feature", "embed"),
                   calibration=m.get("calibration") or {"method": "none"},
                   threshold=float(m.get("threshold", 0.5) if m.get("threshold") is not None else 0.5),
                   preprocessing=m.get("preprocessing"))

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def layers(self, n_blocks: int) -> tuple[int, ...]:
        """Backbone blocks whose CLS token this head reads (none for ``embed``)."""
        if self.feature.startswith("cls_"):
            return (int(self.feature[4:]) % n_blocks,)
        return ()

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return X @ self.weight.astype(np.float64) + self.bias

    def p_ai(self, logits) -> np.ndarray:
        return Calibrator.from_dict(self.calibration).prob(logits)


def to_linear(head):
    """A weights.Head (or LinearHead) as ``torch.nn.Linear(D, 1)`` producing the raw
    logit. Calibration is not folded in: apply the manifest's calibration with
    ``probability.Calibrator.from_dict(...).prob(logit)``."""
    import torch

    lh = head if isinstance(head, LinearHead) else LinearHead.from_head(head)
    lin = torch.nn.Linear(lh.dim, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(lh.weight.astype(np.float32)).view(1, -1))
        lin.bias.fill_(lh.bias)
    lin.eval()
    for p in lin.parameters():
        p.requires_grad_(False)
    return lin


def probe_tensors(probe: LinearProbe) -> dict[str, Any]:
    import torch

    return {"weight": torch.from_numpy(np.asarray(probe.weight, dtype=np.float32)).view(1, -1).clone(),
            "bias": torch.tensor([probe.bias], dtype=torch.float32)}


def save_probe(out_dir: str | Path, probe: LinearProbe, *, name: str, backbone_block: Mapping[str, Any],
               preprocessing: Mapping[str, Any], feature: str = "embed", data: Mapping[str, Any] | None = None,
               metrics: Mapping[str, Any] | None = None, source: str = "", license: str = "",
               extra: Mapping[str, Any] | None = None, extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write a trained probe as a head folder (see weights.save_head)."""
    from ..heads import save_head

    manifest: dict[str, Any] = {
        "name": name,
        "detector": FAMILY,
        "version": "1",
        "backbone": dict(backbone_block),
        "preprocessing": dict(preprocessing),
        "labels": ["real", "ai"],
        "params": {"feature": feature, "dim": int(len(probe.weight)), "output": "logit",
                   "fit": {k: v for k, v in probe.info.items() if k != "cv_curve"}},
        "calibration": dict(probe.calibration),
        "threshold": 0.5,
        "metrics": dict(metrics or {}),
        "data": dict(data or {}),
        "source": source,
        "license": license,
    }
    manifest.update(extra or {})
    return save_head(out_dir, probe_tensors(probe), manifest, extra_files=extra_files)
