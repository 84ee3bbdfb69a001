"""The CLIP-Flow family's ONNX mapping: the flow's log-density as a graph
part (``exports``, kept in float: a density model turns small weight errors
into large log-likelihood errors), and the one function that turns
log-densities into results (``results``, which the torch detector calls too)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..records import DetectorResult

SCORE_KIND = "flow-nll-z"


def exports(head, backbone) -> list:
    """CLIP-Flow: the flow's log-density of the (concatenated) feature vector."""
    from ..detectors.heads import head_meta
    from ..onnx_sidecar import HeadExport
    from .model import flow_from_head

    m = head.manifest
    feats = m["params"]["features"]
    n = backbone.layers
    outputs = tuple(o if not o.startswith("cls_") else f"cls_{int(o[4:]) % n}" for o in feats["outputs"])
    return [HeadExport(name=f"flow:{head.name}", family="flow", module=flow_from_head(head), roles=("loglik",),
                       input=outputs if len(outputs) > 1 else outputs[0], preprocessing=m.get("preprocessing"),
                       meta={**head_meta(head), "dim": int(m["params"]["flow"]["dim"])}, quantize=False)]


def results(meta: Mapping[str, Any], outs: Mapping[str, np.ndarray], *, dtype: str | None = None
            ) -> list[DetectorResult]:
    """From each row's log-density: the NLL, the NLL standardised on held-out
    real photos (the score) and the calibrated p_ai. ``dtype`` (the torch
    path's) is recorded in extra when given."""
    from ..probability import Calibrator

    cal = meta["calibration"]
    nll = -np.asarray(outs[meta["outputs"]["loglik"]], dtype=np.float64).reshape(-1)
    z = (nll - float(cal["nll_mean"])) / float(cal["nll_std"])
    p = Calibrator.from_dict(cal).prob(z)
    t = float(cal["threshold_z"])
    dim = int(meta.get("dim") or 1)
    res = []
    for k in range(len(nll)):
        if not (math.isfinite(nll[k]) and math.isfinite(z[k])):
            res.append(DetectorResult.failed("flow produced a non-finite likelihood"))
            continue
        extra = {"nll": round(float(nll[k]), 4), "nll_per_dim": round(float(nll[k]) / dim, 5),
                 "z": round(float(z[k]), 4), "threshold_z": round(t, 4), "fpr_target": cal.get("fpr")}
        if dtype is not None:
            extra["dtype"] = dtype
        res.append(DetectorResult(status="ok", p_ai=float(p[k]), score=float(z[k]), score_kind=SCORE_KIND,
                                  extra=extra))
    return res
