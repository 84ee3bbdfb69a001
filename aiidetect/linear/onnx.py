"""The linear family's ONNX mapping: how a probe goes into an exported graph
(``exports``) and how its logit becomes a result (``results``, which the torch
detector calls too)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..records import DetectorResult


def exports(head, backbone) -> list:
    from ..detectors.heads import head_meta
    from ..onnx_sidecar import HeadExport
    from .head import LinearHead, to_linear

    lh = LinearHead.from_head(head)

    class _Logit(__import__("torch").nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x)[:, 0]

    return [HeadExport(name=f"linear:{head.name}", family="linear", module=_Logit(to_linear(lh)), roles=("logit",),
                       input=lh.feature, preprocessing=dict(lh.preprocessing) if lh.preprocessing else None,
                       meta=head_meta(head))]


def results(meta: Mapping[str, Any], outs: Mapping[str, np.ndarray], *, dtype: str | None = None
            ) -> list[DetectorResult]:
    """One result per row of the ``logit`` output: p_ai from the head's
    calibration. ``dtype`` (the torch path's) is recorded in extra when given."""
    from ..probability import Calibrator

    logits = np.asarray(outs[meta["outputs"]["logit"]], dtype=np.float64).reshape(-1)
    thr = float(meta.get("threshold") if meta.get("threshold") is not None else 0.5)
    cal = Calibrator.from_dict(meta.get("calibration"))
    res = []
    for z in logits:
        if not np.isfinite(z):
            res.append(DetectorResult.failed("non-finite logit (numerical problem in the features)"))
            continue
        p = cal.prob(float(z))
        extra = {"head": meta.get("head"), "threshold": thr}
        if dtype is not None:
            extra["dtype"] = dtype
        res.append(DetectorResult(status="ok", p_ai=p, score=float(z), score_kind="logit", extra=extra))
    return res
