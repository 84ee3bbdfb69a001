"""The MPFT family's ONNX mapping: the adapted encoder pass and both heads as
one graph part (``exports``), and the one function that turns a binary logit
and attribution logits into a result (``results``, which the torch detector
calls too)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..records import DetectorResult

TOP_K = 3


def exports(head, backbone) -> list:
    """MPFT runs its own LoRA-adapted encoder pass (on the shared frozen
    weights) inside the graph: input "pixels", outputs binary + attribution."""
    from ..detectors.heads import head_meta
    from ..onnx_sidecar import HeadExport
    from .model import build_from_head

    model = build_from_head(head, backbone)
    m = head.manifest
    return [HeadExport(name=f"mpft:{head.name}", family="mpft", module=model, roles=("logit", "attribution"),
                       input="pixels", preprocessing=m.get("preprocessing"), meta=head_meta(head))]


def results(meta: Mapping[str, Any], outs: Mapping[str, np.ndarray], *, dtype: str | None = None
            ) -> list[DetectorResult]:
    """p_ai from the logit through the head's calibration (a temperature),
    the top attribution labels and, for heads that know several generators,
    the open-set generator. ``dtype`` (the torch path's) is recorded in extra
    right after the attribution, where torch records have always had it."""
    from ..probability import Calibrator

    cal = Calibrator.from_dict(meta.get("calibration"))
    logits = np.asarray(outs[meta["outputs"]["logit"]], dtype=np.float64).reshape(-1)
    attr = np.asarray(outs[meta["outputs"]["attribution"]], dtype=np.float64)
    labels = list(meta.get("labels") or [])
    reject_below = ((meta.get("manifest") or {}).get("attribution") or {}).get("reject_below")
    res = []
    for z, a in zip(logits, attr):
        if not np.isfinite(z):
            res.append(DetectorResult.failed("non-finite logit"))
            continue
        p = np.exp(a - a.max())
        p /= p.sum()
        top = np.argsort(-p)[:TOP_K]
        extra: dict[str, Any] = {"attribution": [{"label": labels[i] if i < len(labels) else str(i),
                                                  "p": round(float(p[i]), 4)} for i in top]}
        if dtype is not None:
            extra["dtype"] = dtype
        gen = generator_extra(a, labels, reject_below)
        if gen is not None:
            extra["generator"] = gen
        res.append(DetectorResult(status="ok", p_ai=cal.prob(float(z)), score=float(z), score_kind="logit",
                                  extra=extra))
    return res


def generator_extra(attr_logits, labels, reject_below) -> dict[str, Any] | None:
    """Open-set attribution for a record's extra: the likeliest generator if the
    head is sure enough (its calibrated reject_below), else "unknown-generator";
    None when the head knows one generator or its top answer is "real"."""
    from .trainer import open_set_label

    if len(labels) < 3 or int(np.argmax(attr_logits)) == 0:
        return None
    label, p = open_set_label(attr_logits, labels, reject_below)
    return {"label": label, "p_given_ai": round(p, 4), "reject_below": reject_below}
