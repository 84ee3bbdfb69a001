"""The ONNX runtime: every detector family with an ONNX mapping, served from
a folder written by ``aiidetect export onnx``, through ONNX Runtime.

Detector names and result fields are those of the torch detectors
(``<family>:<head>``); each result also carries ``runtime`` ("onnx") and
``provider`` (the execution provider the session really got: ORT falls back
to CPU silently when CUDA cannot load).

One graph holds the encoder and every head on its features, so one
FeatureRequest per graph runs the session once per batch; each detector then
reads its own named outputs. Nothing here knows a family: how outputs become a
DetectorResult is each family's ``results`` function, found through the
registry (aiidetect.detectors) by the family named in the sidecar.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..records import DetectorResult
from .base import Detector, DetectorUnavailable, FeatureRequest, RunContext, UnavailableDetector, feature_key

FAMILY = "onnx"


def head_results(meta: Mapping[str, Any], outs: Mapping[str, np.ndarray]) -> list[DetectorResult]:
    """All rows of `outs` (output name -> (N, ...) array) -> N results for one
    head, by its family's ``results`` function (the registry's)."""
    from . import family_hook

    return family_hook(meta["family"], "results")(meta, outs)


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
    onnx_dir: Path | None = None  # the export it runs from (its head's training record lies there)
    onnx_files: dict = {}  # its graph's files and their checksums in the sidecar (the record is one of them)

    def __init__(self, meta: Mapping[str, Any], request: FeatureRequest, provider: str, graph_id: str = "",
                 dtype: str = "float32", int8: Mapping[str, Any] | None = None):
        super().__init__(meta["name"])
        self.family = meta["family"]
        self.meta = dict(meta)
        self.request = request
        self.provider = provider
        self.graph_id = graph_id
        self.dtype = dtype
        self.int8 = dict(int8 or {})  # weight bits, and whether ORT was told to use its exact kernels
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
                # int8 results from the saturating kernels (before the guard) must not be served again
                "onnxruntime": ort, **({"int8": self.int8} if self.int8 else {})}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "runtime": "onnx", "provider": self.provider,
                "model": str(self.request.encoder_key), "head": self.meta.get("head"), "dtype": self.dtype,
                **({"int8": self.int8} if self.int8 else {}), "preprocessing": self.request.preprocess}


def create(ctx: RunContext) -> list[Detector]:
    """Detectors for every head in ctx.onnx_dir whose family is selected
    (ctx.options["onnx_families"], default every family with an ONNX mapping)."""
    from ..onnx_runtime import RuntimeUnavailable, int8_setup, load_session
    from ..onnx_sidecar import ExportError, graph_problems, read_sidecar
    from ..preprocess import check_spec
    from . import onnx_families
    from .heads import not_shipped_export

    if ctx.onnx_dir is None:
        raise DetectorUnavailable("--runtime onnx needs --onnx DIR (made by `aiidetect export onnx`)")
    try:
        side = read_sidecar(ctx.onnx_dir)
    except ExportError as exc:
        raise DetectorUnavailable(str(exc)) from exc
    fams = set((ctx.options or {}).get("onnx_families") or onnx_families())
    device = ctx.device if ctx.device in ("cpu", "cuda") else "auto"
    out: list[Detector] = []

    def asked(name: str, fam: str) -> bool:
        # ctx.options["<family>_heads"] narrows a family to the heads named, as on torch (build_heads): the
        # export's other heads of it ran, and the record had other entries than torch's
        wanted = (ctx.options or {}).get(f"{fam}_heads")
        return not wanted or str(name).split(":", 1)[-1] in set(wanted)

    for g in side.get("graphs", []):
        metas = [h for h in g.get("heads", []) if h.get("family") in fams and asked(h.get("name"), h.get("family"))]
        if not metas:
            continue
        path = Path(ctx.onnx_dir) / g["file"]
        try:
            spec = check_spec(g.get("preprocessing"))
        except ValueError as exc:
            why = f"the ONNX export's sidecar for {g['file']}: {exc}"
            out.extend(UnavailableDetector(h["name"], why) for h in metas)
            continue
        bad = graph_problems(ctx.onnx_dir, g)
        if bad:
            why = f"the ONNX export in {ctx.onnx_dir} fails its checks: {'; '.join(bad)}; export it again"
            out.extend(UnavailableDetector(h["name"], why) for h in metas)
            continue
        try:
            sess = load_session(path, device=device, variant=g.get("variant", "fp32"))
        except RuntimeUnavailable as exc:
            out.extend(UnavailableDetector(h["name"], str(exc)) for h in metas)
            continue
        req = FeatureRequest(encoder_key=f"onnx:{g['file']}", preprocess=spec,
                             encode=OnnxEncoder(sess), layers=(),
                             device="cuda" if "CUDA" in sess.provider else "cpu", dtype="float32")
        gid = _graph_id(g)
        dtype = VARIANT_DTYPES.get(g.get("variant", "fp32"), str(g.get("variant")))
        for h in metas:
            if (note := not_shipped_export(h, ctx.onnx_dir)) and note not in ctx.notes:
                ctx.notes.append(note)
            det = OnnxHeadDetector(h, req, sess.provider, gid, dtype, int8_setup({"variant": "fp32", **g}, sess))
            det.onnx_dir = Path(ctx.onnx_dir)
            det.onnx_files = dict(g["files"])  # a dict: graph_problems checked it
            out.append(det)
    installed: dict[str, Mapping[str, Any]] | None = None
    for s in side.get("skipped_heads", []):
        fam = s["name"].split(":")[0] if ":" in s["name"] else ""
        if not fam or fam in fams and asked(s["name"], fam):
            why = f"not in the ONNX export: {s['reason']}"
            if str(s.get("reason", "")).startswith("trained on another backbone"):
                # which backbone, and what to do: "another backbone (fingerprint …)" named neither
                if installed is None:
                    installed = _installed_heads(ctx, fams)
                why = _skipped_reason(installed.get(s["name"]), side, ctx.onnx_dir, why)
            out.append(UnavailableDetector(s["name"] if ":" in s["name"] else f"onnx:{s['name']}", why))
    if (ctx.options or {}).get("onnx_families"):  # a scan's selection (api.run_context), not "whatever it holds"
        out += _not_exported(ctx, list(ctx.options["onnx_families"]), side, out)
    if not out:
        raise DetectorUnavailable(f"the ONNX export in {ctx.onnx_dir} holds no head of the selected families "
                                  f"({', '.join(sorted(fams))})")
    return out


def _not_exported(ctx: RunContext, families: Sequence[str], side: Mapping[str, Any],
                  made: Sequence[Detector]) -> list[Detector]:
    """Rows for what the torch runtime would list and the export cannot run: an installed head
    left out of the export (trained after it, or filtered) is `unavailable` saying to re-export,
    not silently missing; a family with no head anywhere gets the torch runtime's family-level
    row, so a record has the same entries on either runtime (docs/schema.md)."""
    from ..heads import find_heads
    from . import create_detectors, onnx_families
    from .heads import _name

    exported = {d.name for d in made} | {h.get("name") for g in side.get("graphs", []) for h in g.get("heads", [])}
    mapped = set(onnx_families())
    out: list[Detector] = []
    for fam in dict.fromkeys(families):
        if fam not in mapped:
            out.append(UnavailableDetector(fam, f"{fam} has no ONNX mapping: run it with --runtime torch"))
            continue
        found = find_heads(list(ctx.weights_dirs), fam)
        wanted = (ctx.options or {}).get(f"{fam}_heads")
        if wanted:
            found = [(p, m) for p, m in found if m.get("name") in set(wanted)]
        for p, m in found:
            n = f"{fam}:{_name(p, m)}"
            if n in exported:
                continue
            # a head of another backbone: re-exporting this backbone would leave it out again
            why = (_other_backbone(m, side) and other_backbone_reason(m, side, ctx.onnx_dir)
                   or f"not in the ONNX export {ctx.onnx_dir}; re-export it (`aiidetect export onnx`) to run this head")
            out.append(UnavailableDetector(n, why))
        names = [f"{fam}:{_name(p, m)}" for p, m in found]
        if not names and not any(n.startswith(fam + ":") for n in exported):
            # No head to build: the family's own create says so before it builds any backbone.
            out += create_detectors([fam], ctx)
    return out


def _installed_heads(ctx: RunContext, families) -> dict[str, Mapping[str, Any]]:
    """`family:name` -> manifest of every head in the weights folders (the first of a name, as a scan)."""
    from ..heads import find_heads
    from .heads import _name

    out: dict[str, Mapping[str, Any]] = {}
    for fam in families:
        for p, m in find_heads(list(ctx.weights_dirs), fam):
            out.setdefault(f"{fam}:{_name(p, m)}", m)
    return out


def _other_backbone(manifest: Mapping[str, Any], side: Mapping[str, Any]) -> bool:
    """The head names a backbone and it is not the export's. A head that records only its checkpoint
    file's SHA-256 (the UnivFD migration, docs/weights.md) may still be the export's backbone: not said."""
    from ..weights_identity import LEGACY_PREFIX

    b, e = manifest.get("backbone"), side.get("backbone")
    if not isinstance(b, Mapping) or not isinstance(e, Mapping) or not b.get("fingerprint"):
        return False
    if str(b.get("weights_id") or "").startswith(LEGACY_PREFIX):
        return False
    return b.get("fingerprint") != e.get("fingerprint")


def _skipped_reason(manifest: Mapping[str, Any] | None, side: Mapping[str, Any], onnx_dir, why: str) -> str:
    """A head the exporter left out for its backbone (its judgement, legacy identities included), as the
    weights folders hold it now."""
    b, e = (manifest or {}).get("backbone"), side.get("backbone")
    if isinstance(b, Mapping) and isinstance(e, Mapping) and b.get("fingerprint") not in (None, "", e.get("fingerprint")):
        return other_backbone_reason(manifest, side, onnx_dir) or why
    if isinstance(b, Mapping) and isinstance(e, Mapping) and b.get("fingerprint") == e.get("fingerprint"):
        # retrained on the export's backbone since: the export still holds none of it
        return (f"not in the ONNX export {onnx_dir} (trained on another backbone when it was made); re-export it "
                "(`aiidetect export onnx`) to run this head")
    if isinstance(e, Mapping):
        return f"{why}; the ONNX export {onnx_dir} is for backbone {_backbone_name(e)}"
    return why


def _backbone_name(b: Mapping[str, Any]) -> str:
    name = b.get("name") or "/".join(str(b[k]) for k in ("model", "pretrained") if b.get(k)) or "an unnamed backbone"
    return f"{name} (fingerprint {b.get('fingerprint') or 'unknown'})"


def other_backbone_reason(manifest: Mapping[str, Any] | None, side: Mapping[str, Any], onnx_dir) -> str | None:
    """Why a head trained on another backbone than the export's cannot run from it, naming both
    backbones and the two ways to run it; None when the manifest does not say its backbone."""
    b, e = (manifest or {}).get("backbone"), side.get("backbone")
    if not isinstance(b, Mapping) or not isinstance(e, Mapping):
        return None
    return (f"trained on backbone {_backbone_name(b)}, but the ONNX export {onnx_dir} is for backbone "
            f"{_backbone_name(e)}: export one for this head's backbone (`aiidetect export onnx -o NEW_DIR` with "
            f"--backbone/--pretrained or --backbone-config/--backbone-weights naming it) and scan with "
            f"--onnx NEW_DIR, or scan with --runtime torch and that backbone")


def _graph_id(graph: Mapping[str, Any]) -> str:
    """The sidecar's entry, which holds each file's checksum at export: `create` runs a graph only after
    graph_problems found its files still match them. Not the files' mtimes or paths: a copy of the same
    export on another machine of a cluster must give its results the same identity (docs/schema.md)."""
    blob = json.dumps({"graph": graph}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()

