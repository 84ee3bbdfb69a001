"""The `mpft` detector family: one detector per trained MPFT head.

Each head runs its own adapted encoder (LoRA deltas on the run's shared,
frozen backbone; never a copy), so its FeatureRequest carries its own
encoder key ``mpft:<head checksum>`` and an encode function that returns the
two heads' logits instead of features.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..probability import Calibrator
from ..records import DetectorResult
from .base import Detector, DetectorUnavailable, FeatureRequest, RunContext, feature_key, head_identity

TOP_K = 3


class MPFTDetector(Detector):
    family = "mpft"

    def __init__(self, head, model, backbone):
        name = head.name
        super().__init__(f"mpft:{name}")
        self.head = head
        self.model = model
        self.backbone = backbone
        m = head.manifest
        self.labels = list(m["labels"])
        self.calibrator = Calibrator.from_manifest(m)
        self.temperature = float(self.calibrator.params.get("T", 1.0))
        self.threshold = float(m.get("threshold") or 0.5)
        sha = (m.get("files") or {}).get("head.safetensors", "")[:16] or name
        self.request = FeatureRequest(encoder_key=f"mpft:{sha}", preprocess=m["preprocessing"], encode=self._encode,
                                      device=backbone.device, dtype=backbone.dtype)
        self.key = feature_key(self.request)

    def _encode(self, x, layers: Sequence[int] = ()) -> dict[str, Any]:
        import torch

        with torch.inference_mode():
            z, a = self.model(x)
        return {"binary": z.float().unsqueeze(-1), "attribution": a.float()}

    def feature_requests(self) -> list[FeatureRequest]:
        return [self.request]

    def predict(self, samples, features) -> list[DetectorResult]:
        out = []
        for s, f in zip(samples, features):
            got = f.get(self.key)
            if got is None:
                out.append(DetectorResult.failed("no MPFT output for this image"))
                continue
            z = float(np.asarray(got["binary"]).reshape(-1)[0])
            a = np.asarray(got["attribution"], dtype=np.float64).reshape(-1)
            p = np.exp(a - a.max())
            p /= p.sum()
            top = np.argsort(-p)[:TOP_K]
            extra = {"attribution": [{"label": self.labels[i], "p": round(float(p[i]), 4)} for i in top],
                     "dtype": self.backbone.dtype}
            gen = self._generator(a)
            if gen is not None:
                extra["generator"] = gen
            out.append(DetectorResult(status="ok", p_ai=self.calibrator.prob(z), score=z, score_kind="logit",
                                      extra=extra))
        return out

    def _generator(self, attr_logits) -> dict[str, Any] | None:
        return generator_extra(attr_logits, self.labels, (self.head.manifest.get("attribution") or {}).get("reject_below"))

    def cache_identity(self) -> dict[str, Any]:
        return head_identity(self, self.head, self.backbone)

    def describe(self) -> dict[str, Any]:
        m = self.head.manifest
        return {"name": self.name, "family": self.family, "head": str(self.head.path),
                "labels": self.labels, "temperature": self.temperature,
                "adapter": (m.get("params") or {}).get("adapter"), "preprocessing": m.get("preprocessing")}


def generator_extra(attr_logits, labels, reject_below) -> dict[str, Any] | None:
    """Open-set attribution for a record's extra: the likeliest generator if the
    head is sure enough (its calibrated reject_below), else "unknown-generator";
    None when the head knows one generator or its top answer is "real"."""
    from ..mpft.trainer import open_set_label

    if len(labels) < 3 or int(np.argmax(attr_logits)) == 0:
        return None
    label, p = open_set_label(attr_logits, labels, reject_below)
    return {"label": label, "p_given_ai": round(p, 4), "reject_below": reject_below}


def create(ctx: RunContext) -> list[Detector]:
    from ..weights import HeadError, HeadMismatch, find_heads, load_head

    found = find_heads(ctx.weights_dirs, "mpft")
    if not found:
        raise DetectorUnavailable("no trained mpft head found; train one with `aiidetect train mpft DATA...` "
                                  "or point --weights-dir at a folder holding one")
    backbone = ctx.backbone()
    from ..mpft.model import build_from_head

    dets: list[Detector] = []
    problems = []
    for path, manifest in found:
        try:
            head = load_head(path)
            model = build_from_head(head, backbone)
            dets.append(MPFTDetector(head, model, backbone))
        except (HeadMismatch, HeadError, ValueError, KeyError) as exc:
            problems.append(f"{manifest.get('name', path.name)}: {exc}")
    if not dets:
        raise DetectorUnavailable("; ".join(problems))
    if problems:
        from .base import UnavailableDetector

        dets += [UnavailableDetector(f"mpft:{p.split(':', 1)[0]}", p) for p in problems]
    return dets
