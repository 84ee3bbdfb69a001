"""The ``linear`` family: one detector per linear head found in the weights
folders (``linear:univfd``, ``linear:<your probe>``), each a logistic head on
frozen backbone features at the head's own preprocessing.

A head trained on another backbone than the run's becomes an unavailable
detector that names the backbone it needs. When the run's backbone cannot be
built (e.g. the ViT-L-14 weights are not in the local cache) the family says so
once, with the remedy, as a single ``linear`` row. The scan always goes on.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..detectors.base import Detector, DetectorUnavailable, FeatureRequest, HeadDetector, RunContext, feature_key
from ..detectors.heads import build_heads, head_meta
from ..records import DetectorResult
from .head import FAMILY, LinearHead
from .onnx import results


class LinearDetector(HeadDetector):
    family = FAMILY

    def __init__(self, head, backbone):
        from ..preprocess import make_spec

        super().__init__(f"{FAMILY}:{head.name}")
        self.head = head
        self.linear = LinearHead.from_head(head)
        self.backbone = backbone
        if self.linear.dim != self._feature_dim(backbone):
            raise DetectorUnavailable(f"head {head.name!r} expects {self.linear.dim}-d {self.linear.feature} "
                                      f"features; the backbone gives {self._feature_dim(backbone)}")
        spec = head.manifest.get("preprocessing") or {}
        self.preprocess = make_spec(spec.get("mode", "center-crop"), int(spec.get("size", backbone.image_size)),
                                    spec.get("mean", backbone.mean), spec.get("std", backbone.std),
                                    spec.get("interpolation", "bicubic"))
        self.request = FeatureRequest(encoder_key=backbone.fingerprint, preprocess=self.preprocess,
                                      encode=backbone.encode, layers=self.linear.layers(backbone.layers),
                                      device=backbone.device, dtype=backbone.dtype)
        self._key = feature_key(self.request)
        self._output = (f"cls_{self.linear.layers(backbone.layers)[0]}" if self.linear.feature.startswith("cls_")
                        else self.linear.feature)
        self.meta = {"name": self.name, "family": FAMILY, "outputs": {"logit": "logit"}, **head_meta(head)}

    def _feature_dim(self, backbone) -> int:
        return backbone.width if self.linear.feature.startswith("cls_") else backbone.embed_dim

    def feature_requests(self) -> list[FeatureRequest]:
        return [self.request]

    def predict(self, samples, features: Sequence[dict[str, Any]]) -> list[DetectorResult]:
        out: list[DetectorResult] = []
        for i, _ in enumerate(samples):
            try:
                vec = (features[i] or {}).get(self._key, {}).get(self._output) if i < len(features) else None
                if vec is None:
                    out.append(DetectorResult.failed("no backbone features for this file"))
                    continue
                # One row at a time, as always: a batched matmul may round differently.
                logit = self.linear.logits(np.asarray(vec, dtype=np.float32).reshape(1, -1))[:1]
                out.extend(results(self.meta, {"logit": logit}, dtype=self.backbone.dtype))
            except Exception as exc:  # noqa: BLE001 - one bad vector must not stop the scan
                out.append(DetectorResult.failed(f"{type(exc).__name__}: {exc}"))
        return out

    def describe(self) -> dict[str, Any]:
        m = self.head.manifest
        return {"name": self.name, "family": self.family, "head": str(self.head.path),
                "backbone": (m.get("backbone") or {}).get("name"), "preprocessing": self.preprocess,
                "feature": self.linear.feature, "source": m.get("source"), "license": m.get("license")}


def create(ctx: RunContext) -> list[Detector]:
    return build_heads(ctx, FAMILY, LinearDetector,
                       none_found="no linear heads found (looked in {where}); "
                                  "train one with `aiidetect train linear DATA...`")
