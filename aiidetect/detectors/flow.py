"""The `flow` detector family: CLIP-Flow heads (docs/detectors/clip-flow.md).

One detector per head found in the weights directories. Each reads the frozen
backbone's features with its head's preprocessing and layers, and reports the
flow's NLL, the NLL standardised on held-out real photos (the score), and a
p_ai calibrated so that the head's target false-positive rate on real photos
sits at p_ai = 0.5.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..probability import Calibrator
from ..records import DetectorResult
from .base import Detector, DetectorUnavailable, FeatureRequest, RunContext, feature_key, head_identity

SCORE_KIND = "flow-nll-z"


class FlowDetector(Detector):
    family = "flow"

    def __init__(self, head, backbone):
        from ..flow.model import flow_from_head

        super().__init__(f"flow:{head.name}")
        self.head = head
        self.backbone = backbone
        m = head.manifest
        self.outputs: list[str] = list(m["params"]["features"]["outputs"])
        self.layers: tuple[int, ...] = tuple(int(i) for i in m["params"]["features"].get("layers", []))
        self.preprocess: dict[str, Any] = m["preprocessing"]
        self.calibration: dict[str, Any] = m["calibration"]
        self.calibrator = Calibrator.from_dict(self.calibration)
        self.model = flow_from_head(head)
        self.dim = int(m["params"]["flow"]["dim"])
        self._req = FeatureRequest(encoder_key=backbone.fingerprint, preprocess=self.preprocess,
                                   encode=backbone.encode, layers=self.layers, device=backbone.device,
                                   dtype=backbone.dtype)
        self._key = feature_key(self._req)

    def feature_requests(self) -> list[FeatureRequest]:
        return [self._req]

    def cache_identity(self) -> dict[str, Any]:
        return head_identity(self, self.head, self.backbone)

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

    def score_vectors(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, D) features -> (nll, z, p_ai). Used by predict and by evaluation code."""
        import torch

        with torch.no_grad():
            nll = -self.model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
        z = (nll - float(self.calibration["nll_mean"])) / float(self.calibration["nll_std"])
        return nll, z, self.calibrator.prob(z)

    def predict(self, samples: Sequence[Any], features: Sequence[dict[str, Any]]) -> list[DetectorResult]:
        results: list[DetectorResult | None] = [None] * len(samples)
        rows, idx = [], []
        for i in range(len(samples)):
            try:
                rows.append(self._vector(features[i] if i < len(features) else None))
                idx.append(i)
            except (KeyError, ValueError) as exc:
                results[i] = DetectorResult.failed(str(exc).strip("'\""))
        if rows:
            try:
                nll, z, p = self.score_vectors(np.stack(rows))
            except Exception as exc:  # noqa: BLE001 - a broken head must not stop the scan
                for i in idx:
                    results[i] = DetectorResult.failed(f"flow failed: {type(exc).__name__}: {exc}")
            else:
                t = float(self.calibration["threshold_z"])
                for k, i in enumerate(idx):
                    if not (math.isfinite(nll[k]) and math.isfinite(z[k])):
                        results[i] = DetectorResult.failed("flow produced a non-finite likelihood")
                        continue
                    results[i] = DetectorResult(
                        status="ok", p_ai=float(p[k]), score=float(z[k]), score_kind=SCORE_KIND,
                        extra={"nll": round(float(nll[k]), 4), "nll_per_dim": round(float(nll[k]) / self.dim, 5),
                               "z": round(float(z[k]), 4), "threshold_z": round(t, 4),
                               "fpr_target": self.calibration.get("fpr"), "dtype": self.backbone.dtype})
        return [r if r is not None else DetectorResult.failed("internal: no result") for r in results]


def create(ctx: RunContext) -> list[Detector]:
    from ..weights import HeadError, HeadMismatch, find_heads, load_head
    from .base import UnavailableDetector

    dirs = list(ctx.weights_dirs)
    found = find_heads(dirs, "flow")
    if not found:
        where = ", ".join(str(d) for d in dirs) or "(no weights directory)"
        raise DetectorUnavailable(f"no CLIP-Flow head found in {where}; train one on your own photos with "
                                  "`aiidetect train flow --real DIR` (docs/detectors/clip-flow.md)")
    backbone = ctx.backbone()  # raises DetectorUnavailable with the remedy
    made: list[Detector] = []
    problems: list[tuple[str, str]] = []
    for path, manifest in found:
        name = f"flow:{manifest['name']}"
        try:
            head = load_head(path)
            head.check_backbone(backbone.fingerprint, backbone.spec.describe())
            made.append(FlowDetector(head, backbone))
        except (HeadMismatch, HeadError) as exc:
            problems.append((name, str(exc)))
        except (KeyError, ValueError, RuntimeError) as exc:
            problems.append((name, f"head {path} is not a valid flow head: {type(exc).__name__}: {exc}"))
    if not made:
        raise DetectorUnavailable("; ".join(msg for _, msg in problems))
    return made + [UnavailableDetector(n, msg) for n, msg in problems]
