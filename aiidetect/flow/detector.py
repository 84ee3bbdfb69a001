"""The `flow` detector family: CLIP-Flow heads (docs/detectors/clip-flow.md).

One detector per head found in the weights directories. Each reads the frozen
backbone's features with its head's preprocessing and layers, and reports the
flow's NLL, the NLL standardised on held-out real photos (the score), and a
p_ai calibrated so that the head's target false-positive rate on real photos
sits at p_ai = 0.5.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..detectors.base import Detector, FeatureRequest, HeadDetector, RunContext, feature_key
from ..detectors.heads import build_heads, head_meta
from ..probability import Calibrator
from ..records import DetectorResult
from .onnx import results

FAMILY = "flow"


class FlowDetector(HeadDetector):
    family = FAMILY

    def __init__(self, head, backbone):
        from .model import flow_from_head

        super().__init__(f"{FAMILY}:{head.name}")
        self.head = head
        self.backbone = backbone
        m = head.manifest
        self.outputs: list[str] = list(m["params"]["features"]["outputs"])
        self.layers: tuple[int, ...] = tuple(int(i) for i in m["params"]["features"].get("layers", []))
        self.preprocess: dict[str, Any] = m["preprocessing"]
        self.calibration: dict[str, Any] = m["calibration"]
        Calibrator.from_manifest(m)  # read once at load: an unreadable calibration makes the head unavailable
        self.model = flow_from_head(head)
        self.dim = int(m["params"]["flow"]["dim"])
        self._req = FeatureRequest(encoder_key=backbone.fingerprint, preprocess=self.preprocess,
                                   encode=backbone.encode, layers=self.layers, device=backbone.device,
                                   dtype=backbone.dtype)
        self._key = feature_key(self._req)
        self.meta = {"name": self.name, "family": FAMILY, "outputs": {"loglik": "loglik"}, "dim": self.dim,
                     **head_meta(head)}

    def feature_requests(self) -> list[FeatureRequest]:
        return [self._req]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "head": str(self.head.path),
                "backbone": self.head.backbone_fingerprint, "outputs": self.outputs,
                "fpr_target": self.calibration.get("fpr")}

    def _vector(self, feats: dict[str, Any] | None) -> np.ndarray:
        if not feats or self._key not in feats:
            raise KeyError("no backbone features for this sample")
        f = feats[self._key]
        missing = [o for o in self.outputs if o not in f]
        if missing:
            raise KeyError(f"backbone features lack {', '.join(missing)}")
        v = np.concatenate([np.asarray(f[o], dtype=np.float32).reshape(-1) for o in self.outputs])
        if v.shape[0] != self.dim:
            raise ValueError(f"feature vector has {v.shape[0]} values, head expects {self.dim}")
        return v

    def loglik(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) log-densities under the flow."""
        import torch

        from ..backbone import rowwise

        # The whole flow one row at a time: its float32 matmuls round a row otherwise among more rows
        # (backbone.rowwise_matmul), so a file's score would depend on the rest of its batch. Here, not in
        # the module: training and the ONNX export run it on whole batches.
        with torch.no_grad():
            return rowwise(self.model, torch.as_tensor(x, dtype=torch.float32)).double().numpy()

    def predict(self, samples: Sequence[Any], features: Sequence[dict[str, Any]]) -> list[DetectorResult]:
        results_: list[DetectorResult | None] = [None] * len(samples)
        rows, idx = [], []
        for i in range(len(samples)):
            try:
                rows.append(self._vector(features[i] if i < len(features) else None))
                idx.append(i)
            except (KeyError, ValueError) as exc:
                results_[i] = DetectorResult.failed(str(exc).strip("'\""))
        if rows:
            try:
                scored = results(self.meta, {"loglik": self.loglik(np.stack(rows))}, dtype=self.backbone.dtype)
            except Exception as exc:  # noqa: BLE001 - a broken head must not stop the scan
                scored = [DetectorResult.failed(f"flow failed: {type(exc).__name__}: {exc}") for _ in idx]
            for i, r in zip(idx, scored):
                results_[i] = r
        return [r if r is not None else DetectorResult.failed("internal: no result") for r in results_]


def create(ctx: RunContext) -> list[Detector]:
    return build_heads(ctx, FAMILY, FlowDetector,
                       none_found="no CLIP-Flow head found in {where}; train one on your own photos with "
                                  "`aiidetect train flow --real DIR` (docs/detectors/clip-flow.md)")
