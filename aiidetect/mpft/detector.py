"""The `mpft` detector family: one detector per trained MPFT head.

Each head runs its own adapted encoder (LoRA deltas on the run's shared,
frozen backbone; never a copy), so its FeatureRequest carries its own
encoder key ``mpft:<head checksum>`` and an encode function that returns the
two heads' logits instead of features.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..detectors.base import Detector, FeatureRequest, HeadDetector, RunContext, feature_key
from ..detectors.heads import build_heads, head_meta
from ..probability import Calibrator
from ..records import DetectorResult
from .onnx import results

FAMILY = "mpft"


class MPFTDetector(HeadDetector):
    family = FAMILY

    def __init__(self, head, model, backbone):
        name = head.name
        super().__init__(f"{FAMILY}:{name}")
        self.head = head
        self.model = model
        self.backbone = backbone
        m = head.manifest
        self.labels = list(m["labels"])
        # Read once at load: a head whose calibration cannot be read is unavailable, not failed per file.
        self.temperature = float(Calibrator.from_manifest(m).params.get("T", 1.0))
        self.threshold = float(m.get("threshold") or 0.5)
        sha = (m.get("files") or {}).get("head.safetensors", "")[:16] or name
        self.request = FeatureRequest(encoder_key=f"mpft:{sha}", preprocess=m["preprocessing"], encode=self._encode,
                                      device=backbone.device, dtype=backbone.dtype)
        self.key = feature_key(self.request)
        self.meta = {"name": self.name, "family": FAMILY, "outputs": {"logit": "binary", "attribution": "attribution"},
                     **head_meta(head)}

    def _encode(self, x, layers: Sequence[int] = ()) -> dict[str, Any]:
        import torch

        with torch.inference_mode():
            z, a = self.model(x)
        return {"binary": z.float().unsqueeze(-1), "attribution": a.float()}

    def feature_requests(self) -> list[FeatureRequest]:
        return [self.request]

    def predict(self, samples, features) -> list[DetectorResult]:
        out = []
        for _, f in zip(samples, features):
            got = f.get(self.key)
            if got is None:
                out.append(DetectorResult.failed("no MPFT output for this image"))
                continue
            outs = {"binary": np.asarray(got["binary"]).reshape(-1)[:1],
                    "attribution": np.asarray(got["attribution"], dtype=np.float64).reshape(1, -1)}
            out.extend(results(self.meta, outs, dtype=self.backbone.dtype))
        return out

    def describe(self) -> dict[str, Any]:
        m = self.head.manifest
        return {"name": self.name, "family": self.family, "head": str(self.head.path),
                "labels": self.labels, "temperature": self.temperature,
                "adapter": (m.get("params") or {}).get("adapter"), "preprocessing": m.get("preprocessing")}


def create(ctx: RunContext) -> list[Detector]:
    def make(head, backbone) -> Detector:
        from .model import build_from_head

        return MPFTDetector(head, build_from_head(head, backbone), backbone)

    return build_heads(ctx, FAMILY, make,
                       none_found="no trained mpft head found; train one with `aiidetect train mpft DATA...` "
                                  "or point --weights-dir at a folder holding one")
