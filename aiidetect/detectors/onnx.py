"""The ``onnx`` family: the pixel detectors (linear, mpft, flow) served from a
folder written by ``aiidetect export onnx``, through ONNX Runtime.

Detector names and result fields are those of the torch detectors
(``linear:<head>``, ``mpft:<head>``, ``flow:<head>``); each result also
carries ``runtime`` ("onnx") and ``provider`` (the execution provider the
session really got: ORT falls back to CPU silently when CUDA cannot load).

One graph holds the encoder and every head on its features, so one
FeatureRequest per graph runs the session once per batch; each detector then
reads its own named outputs. The family-specific parts (how a head becomes a
torch module for export, how outputs become a DetectorResult) are the
functions ``*_exports`` and ``*_results`` below, keyed by family.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..probability import Calibrator
from ..records import DetectorResult
from .base import Detector, DetectorUnavailable, FeatureRequest, RunContext, UnavailableDetector, feature_key

FAMILY = "onnx"


# --------------------------------------------------------------------------
# Export side: weights.Head -> HeadExport (torch module over encoder outputs)
# --------------------------------------------------------------------------
def _head_meta(head) -> dict[str, Any]:
    m = head.manifest
    keep = ("labels", "calibration", "threshold", "params", "version", "source", "license", "metrics", "attribution")
    return {"manifest": {k: m[k] for k in keep if k in m}, "labels": m.get("labels"),
            "calibration": m.get("calibration"), "threshold": m.get("threshold"),
            "head": head.name, "backbone_fingerprint": head.backbone_fingerprint}


def linear_exports(head, backbone) -> list:
    from ..linear import LinearHead, to_linear
    from ..onnx_sidecar import HeadExport

    lh = LinearHead.from_head(head)

    class _Logit(__import__("torch").nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x)[:, 0]

    return [HeadExport(name=f"linear:{head.name}", family="linear", module=_Logit(to_linear(lh)), roles=("logit",),
                       input=lh.feature, preprocessing=dict(lh.preprocessing) if lh.preprocessing else None,
                       meta=_head_meta(head))]


def mpft_exports(head, backbone) -> list:
    """MPFT runs its own LoRA-adapted encoder pass (on the shared frozen
    weights) inside the graph: input "pixels", outputs binary + attribution."""
    from ..mpft.model import build_from_head
    from ..onnx_sidecar import HeadExport

    model = build_from_head(head, backbone)
    m = head.manifest
    return [HeadExport(name=f"mpft:{head.name}", family="mpft", module=model, roles=("logit", "attribution"),
                       input="pixels", preprocessing=m.get("preprocessing"), meta=_head_meta(head))]


def flow_exports(head, backbone) -> list:
    """CLIP-Flow: the flow's log-density of the (concatenated) feature vector."""
    from ..flow.model import flow_from_head
    from ..onnx_sidecar import HeadExport

    m = head.manifest
    feats = m["params"]["features"]
    n = backbone.layers
    outputs = tuple(o if not o.startswith("cls_") else f"cls_{int(o[4:]) % n}" for o in feats["outputs"])
    return [HeadExport(name=f"flow:{head.name}", family="flow", module=flow_from_head(head), roles=("loglik",),
                       input=outputs if len(outputs) > 1 else outputs[0], preprocessing=m.get("preprocessing"),
                       meta={**_head_meta(head), "dim": int(m["params"]["flow"]["dim"])}, quantize=False)]


# --------------------------------------------------------------------------
# Runtime side: graph outputs -> DetectorResult (same fields as torch)
# --------------------------------------------------------------------------
def linear_results(meta: Mapping[str, Any], outs: Mapping[str, np.ndarray]) -> list[DetectorResult]:
    logits = np.asarray(outs[meta["outputs"]["logit"]], dtype=np.float64).reshape(-1)
    thr = float(meta.get("threshold") if meta.get("threshold") is not None else 0.5)
    cal = Calibrator.from_dict(meta.get("calibration"))
    res = []
    for z in logits:
        if not np.isfinite(z):
            res.append(DetectorResult.failed("non-finite logit (numerical problem in the features)"))
            continue
        p = cal.prob(float(z))
        res.append(DetectorResult(status="ok", p_ai=p, score=float(z), score_kind="logit",
                                  extra={"head": meta.get("head"), "threshold": thr}))
    return res


def flow_results(meta: Mapping[str, Any], outs: Mapping[str, np.ndarray]) -> list[DetectorResult]:
    """The fields of detectors.flow.FlowDetector.predict, from the graph's log-density."""
    import math

    from .flow import SCORE_KIND

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
        res.append(DetectorResult(
            status="ok", p_ai=float(p[k]), score=float(z[k]), score_kind=SCORE_KIND,
            extra={"nll": round(float(nll[k]), 4), "nll_per_dim": round(float(nll[k]) / dim, 5),
                   "z": round(float(z[k]), 4), "threshold_z": round(t, 4), "fpr_target": cal.get("fpr")}))
    return res


def mpft_results(meta: Mapping[str, Any], outs: Mapping[str, np.ndarray]) -> list[DetectorResult]:
    """The fields of detectors.mpft.MPFTDetector.predict: p_ai from the logit
    through the manifest's calibration, and the top attribution labels."""
    from .mpft import TOP_K, generator_extra

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
        extra = {"attribution": [{"label": labels[i] if i < len(labels) else str(i), "p": round(float(p[i]), 4)}
                                 for i in top]}
        gen = generator_extra(a, labels, reject_below)
        if gen is not None:
            extra["generator"] = gen
        res.append(DetectorResult(status="ok", p_ai=cal.prob(float(z)), score=float(z), score_kind="logit",
                                  extra=extra))
    return res


RESULTS: dict[str, Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], list[DetectorResult]]] = {
    "linear": linear_results,
    "mpft": mpft_results,
    "flow": flow_results,
}


def head_results(meta: Mapping[str, Any], outs: Mapping[str, np.ndarray]) -> list[DetectorResult]:
    """All rows of `outs` (output name -> (N, ...) array) -> N results for one head."""
    return RESULTS[meta["family"]](meta, outs)


# --------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------
VARIANT_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "int8"}


class OnnxEncoder:
    """The FeatureRequest.encode of one exported graph: pixels -> every output."""

    numpy_io = True  # the pipeline may pass numpy and get numpy back (no torch needed)

    def __init__(self, session):
        self.session = session

    def __call__(self, x, layers=()):
        if isinstance(x, np.ndarray):
            return self.session.run(np.asarray(x, np.float32))
        import torch

        arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
        return {k: torch.from_numpy(v) for k, v in self.session.run(arr).items()}


class OnnxHeadDetector(Detector):
    def __init__(self, meta: Mapping[str, Any], request: FeatureRequest, provider: str, graph_id: str = "",
                 dtype: str = "float32"):
        super().__init__(meta["name"])
        self.family = meta["family"]
        self.meta = dict(meta)
        self.request = request
        self.provider = provider
        self.graph_id = graph_id
        self.dtype = dtype
        self._key = feature_key(request)

    def feature_requests(self) -> list[FeatureRequest]:
        return [self.request]

    def predict(self, samples, features: Sequence[dict[str, Any]]) -> list[DetectorResult]:
        names = list(self.meta["outputs"].values())
        rows: list[int] = []
        cols: dict[str, list[np.ndarray]] = {n: [] for n in names}
        out: list[DetectorResult | None] = [None] * len(samples)
        for i in range(len(samples)):
            got = (features[i] or {}).get(self._key, {}) if i < len(features) else {}
            if not all(n in got for n in names):
                out[i] = DetectorResult.failed("no ONNX outputs for this file")
                continue
            rows.append(i)
            for n in names:
                cols[n].append(np.asarray(got[n]))
        if rows:
            try:
                res = head_results(self.meta, {n: np.stack(v) for n, v in cols.items()})
            except Exception as exc:  # noqa: BLE001 - a broken head marks its results, not the scan
                res = [DetectorResult.failed(f"{type(exc).__name__}: {exc}") for _ in rows]
            for i, r in zip(rows, res):
                r.extra = {**r.extra, "runtime": "onnx", "provider": self.provider, "dtype": self.dtype}
                out[i] = r
        return [r for r in out]  # type: ignore[misc]

    def cache_identity(self) -> dict[str, Any] | None:
        if not self.graph_id:
            return None
        import onnxruntime  # already loaded: this detector holds a session

        ort = onnxruntime.__version__
        return {"family": self.family, "name": self.name, "runtime": "onnx", "graph": self.graph_id,
                "head": json.dumps(self.meta, sort_keys=True, default=str), "provider": self.provider,
                "onnxruntime": ort}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "runtime": "onnx", "provider": self.provider,
                "model": str(self.request.encoder_key), "head": self.meta.get("head"),
                "preprocessing": self.request.preprocess}


def create(ctx: RunContext) -> list[Detector]:
    """Detectors for every head in ctx.onnx_dir whose family is selected
    (ctx.options["onnx_families"], default all pixel families)."""
    from ..onnx_sidecar import ExportError, read_sidecar
    from ..onnx_runtime import RuntimeUnavailable, load_session

    if ctx.onnx_dir is None:
        raise DetectorUnavailable("--runtime onnx needs --onnx DIR (made by `aiidetect export onnx`)")
    try:
        side = read_sidecar(ctx.onnx_dir)
    except ExportError as exc:
        raise DetectorUnavailable(str(exc)) from exc
    fams = set((ctx.options or {}).get("onnx_families") or ("linear", "mpft", "flow"))
    device = ctx.device if ctx.device in ("cpu", "cuda") else "auto"
    out: list[Detector] = []
    for g in side.get("graphs", []):
        metas = [h for h in g.get("heads", []) if h.get("family") in fams]
        if not metas:
            continue
        path = Path(ctx.onnx_dir) / g["file"]
        try:
            sess = load_session(path, device=device, variant=g.get("variant", "fp32"))
        except RuntimeUnavailable as exc:
            out.extend(UnavailableDetector(h["name"], str(exc)) for h in metas)
            continue
        req = FeatureRequest(encoder_key=f"onnx:{g['file']}", preprocess=dict(g["preprocessing"]),
                             encode=OnnxEncoder(sess), layers=(), device="cpu", dtype="float32")
        gid = _graph_id(Path(ctx.onnx_dir), g)
        dtype = VARIANT_DTYPES.get(g.get("variant", "fp32"), str(g.get("variant")))
        for h in metas:
            out.append(OnnxHeadDetector(h, req, sess.provider, gid, dtype))
    for s in side.get("skipped_heads", []):
        fam = s["name"].split(":")[0] if ":" in s["name"] else ""
        if not fam or fam in fams:
            out.append(UnavailableDetector(s["name"] if ":" in s["name"] else f"onnx:{s['name']}",
                                           f"not in the ONNX export: {s['reason']}"))
    if not out:
        raise DetectorUnavailable(f"the ONNX export in {ctx.onnx_dir} holds no head of the selected families "
                                  f"({', '.join(sorted(fams))})")
    return out


def _graph_id(onnx_dir: Path, graph: Mapping[str, Any]) -> str:
    """The sidecar's entry (file checksums at export) plus each file's size and
    mtime now, so a graph replaced after export is never mistaken for the old one."""
    stats = {}
    for f in graph.get("files", {}):
        try:
            st = (onnx_dir / f).stat()
            stats[f] = [st.st_size, st.st_mtime_ns]
        except OSError:
            stats[f] = None
    blob = json.dumps({"graph": graph, "stat": stats}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()

