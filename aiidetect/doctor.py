"""`aiidetect doctor`: what can run on this machine, and what to do when it cannot.

One report for a journalist's laptop and for fleet checks (``--format json``):
packages and their extras, torch build and CUDA, CPU features, ONNX Runtime
providers, the decoder, codec and metadata parser versions (what the result
cache, a --db run and the Ray engine's nodes are told apart by), backbone
checkpoints and their identities, heads and the backbone each needs, caches and
writable paths. ``clip_ready`` is what the exit code
says: can a default scan (with the same backbone options) run at least one
CLIP detector here.
"""
from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path
from typing import Any, Sequence

from .backbone import CLIP_EXTRA_REMEDY
from .extras import installed_version


def _dir_size(p: Path) -> int:
    total = 0
    if p.is_file():
        return p.stat().st_size
    for root, _, files in os.walk(p):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _writable(p: Path) -> bool:
    """Can this folder be used (created, then written into)? A regular file where the folder or one of
    its parents should be is "no": os.access alone said yes, and the first scan then failed to create it."""
    q = p
    while not q.exists():
        if q.parent == q:
            return False
        q = q.parent
    return q.is_dir() and os.access(q, os.W_OK)


def packages() -> dict[str, Any]:
    rows = {}
    for dist, module, extra in (("torch", "torch", "clip"), ("open_clip_torch", "open_clip", "clip"),
                                ("safetensors", "safetensors", "clip"), ("onnxruntime", "onnxruntime", "onnx"),
                                ("onnxruntime-gpu", None, "onnx"), ("scikit-learn", "sklearn", "eval"),
                                ("matplotlib", "matplotlib", "eval"), ("c2pa-python", "c2pa", None)):
        v = installed_version(dist)
        if v is None and dist == "onnxruntime-gpu":
            continue
        rows[dist] = {"version": v, "extra": extra,
                      "importable": bool(module and importlib.util.find_spec(module) is not None) if module else v is not None}
    return rows


def torch_info() -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        return {"installed": False, "remedy": CLIP_EXTRA_REMEDY}
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a torch that is there but will not load is the finding doctor is run for
        return {"installed": True, "error": f"{type(exc).__name__}: {exc}", "remedy": CLIP_EXTRA_REMEDY}

    from .backbone import native_bf16_cpu

    cuda = bool(torch.cuda.is_available())
    return {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
            "cuda_available": cuda, "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda else [], "threads": torch.get_num_threads(), "native_bf16": native_bf16_cpu()}


def onnx_info() -> dict[str, Any]:
    if importlib.util.find_spec("onnxruntime") is None:
        return {"installed": False, "remedy": 'pip install "aiidetect[onnx]"'}
    try:
        import onnxruntime as ort

        return {"installed": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}
    except Exception as exc:  # noqa: BLE001 - a broken onnxruntime is a finding, not a crash
        return {"installed": True, "error": f"{type(exc).__name__}: {exc}"}


def reading_versions() -> dict[str, dict[str, str | None]]:
    """The versions that decide what a file's bytes give: `decoders` (extras.decoder_versions: Pillow,
    pillow-heif, numpy and the codec libraries, which key the result cache and a --db run's identity) and
    `metadata_parsers` (the metadata detector's, extras.METADATA_PARSERS); together, what the Ray engine
    compares between nodes (engines/ray.py, node_versions). An operator checking two machines compares these.
    Imports Pillow and pillow-heif, never torch: a light install has them too."""
    from .extras import METADATA_PARSERS, decoder_versions, running_versions

    return {"decoders": decoder_versions(), "metadata_parsers": running_versions(METADATA_PARSERS)}


def cpu_info() -> dict[str, Any]:
    from . import cpuinfo

    flags = cpuinfo.flags()
    return {"model": cpuinfo.model(), "cores": os.cpu_count(),
            "avx2": "avx2" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "native_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
            # Without VNNI, int8 exports use 7-bit weights: ONNX Runtime's fast kernels could overflow on 8 bits.
            "int8_vnni": cpuinfo.int8_vnni(), "int8_weight_bits": cpuinfo.int8_weight_bits()}


def backbone_files(cache_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    from .bundle import cached_backbones

    rows = []
    have_torch = importlib.util.find_spec("torch") is not None
    for p in cached_backbones(cache_dirs):
        row: dict[str, Any] = {"path": str(p), "bytes": p.stat().st_size}
        if have_torch:
            from .weights_identity import WeightsFormatError, inspect

            try:
                info = inspect(p)
                row.update(weights_id=info["weights_id"], architecture=info["architecture"])
            except (WeightsFormatError, OSError) as exc:
                row["error"] = str(exc)
            except ImportError as exc:  # torch is there but does not load: said under "torch", not a crash
                row["error"] = f"cannot be identified: torch does not load ({exc})"
        rows.append(row)
    return rows


def caches() -> dict[str, Any]:
    from .backbone import default_cache_dirs
    from .feature_cache import default_cache_path
    from .heads import user_weights_dir

    feats = default_cache_path()
    clip = default_cache_dirs()
    out = {}
    for name, p, var in (("aiidetect cache", feats.parent if feats else None, "AIIDETECT_CACHE"),
                         ("CLIP weights", clip[0] if clip else None, "AIIDETECT_CLIP_CACHE"),
                         ("user heads", user_weights_dir(), "AIIDETECT_WEIGHTS or XDG_DATA_HOME")):
        if p is None:
            from .userdirs import NO_HOME

            out[name] = {"path": None, "exists": False, "bytes": 0, "writable": False,
                         "note": f"{NO_HOME}; set {var} to a folder of yours"}
            continue
        out[name] = {"path": str(p), "exists": p.exists(), "bytes": _dir_size(p) if p.exists() else 0,
                     "writable": _writable(p)}
    return out


def c2pa_trust_list(paths: Sequence[str | os.PathLike] | None = None) -> dict[str, Any]:
    """The C2PA trust list a scan here would judge signers by: `paths` (--c2pa-trust), else the files of
    $AIIDETECT_C2PA_TRUST, as scan reads them. `sha256` and `anchors` as a record's facts.c2pa.trust_list names the
    list; `source` None: no list, so no signer is ever Trusted. A list a scan would refuse (exit 2) is reported
    in `error`, not raised: doctor is where a newsroom checks its set-up before a run."""
    from .provenance.trust import ENV, load_trust_list, paths_from_env

    files = [os.fsdecode(p) for p in paths or []]
    source, label = ("--c2pa-trust", "--c2pa-trust") if files else (f"${ENV}", f"${ENV}:")
    files = files or paths_from_env()
    out: dict[str, Any] = {"source": source if files else None, "files": files, "anchors": 0, "sha256": None,
                           "error": None}
    if files:
        try:
            found = load_trust_list(files, label)
        except (ValueError, OSError) as exc:  # TrustListError is a ValueError
            out["error"] = str(exc)
        else:
            if found is not None:
                out.update(anchors=found.anchors, sha256=found.sha256)
    return out


def diagnose(spec, weights_dirs: Sequence[Path], device: str = "auto", families: Sequence[str] | None = None,
             c2pa_trust: Sequence[str | os.PathLike] | None = None) -> dict[str, Any]:
    """The full report. Builds the detectors exactly as scan would (with `spec`);
    `families` defaults to every family that runs trained heads; `c2pa_trust`: the --c2pa-trust files."""
    from .backbone import default_cache_dirs
    from .detectors import RunContext, create_detectors, onnx_families
    from .heads import find_heads

    cache_dirs = [Path(spec.cache_dir)] if getattr(spec, "cache_dir", None) else default_cache_dirs()
    report: dict[str, Any] = {"aiidetect": installed_version("aiidetect"), "python": platform.python_version(),
                              "packages": packages(), "cpu": cpu_info(), "torch": torch_info(),
                              "onnxruntime": onnx_info(), **reading_versions(), "backbone": spec.describe(),
                              "backbone_files": backbone_files(cache_dirs), "caches": caches(),
                              "c2pa_trust_list": c2pa_trust_list(c2pa_trust)}
    ctx = RunContext(backbone_spec=spec, device=device, dtype="float32", weights_dirs=list(weights_dirs))
    dets = create_detectors(list(families or onnx_families()), ctx)
    det_rows = []
    for d in dets:
        info = d.describe()
        det_rows.append({"name": d.name, "status": info.get("status", "ready"), "reason": info.get("reason")})
    bb = ctx.built_backbone
    report["backbone_built"] = ({"fingerprint": bb.fingerprint, "weights_id": bb.weights_id} if bb is not None
                                else None)
    heads = []
    for path, m in find_heads(list(weights_dirs)):
        b = m.get("backbone") or {}
        ready = next((r["status"] == "ready" for r in det_rows if r["name"] in (f"{m['detector']}:{m['name']}",)),
                     None)
        heads.append({"name": m["name"], "detector": m["detector"], "path": str(path),
                      "needs_backbone": b.get("name") or f"{b.get('model')}/{b.get('pretrained')}",
                      "fingerprint": b.get("fingerprint"), "weights_id": b.get("weights_id"), "ready": bool(ready)})
    report["heads"] = heads
    report["detectors"] = det_rows
    report["clip_ready"] = any(r["status"] == "ready" for r in det_rows)
    report["remedies"] = _remedies(report, det_rows)
    return report


def _remedies(report: dict[str, Any], det_rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    if (not report["torch"].get("installed") or report["torch"].get("error")) and not any(CLIP_EXTRA_REMEDY in (r.get("reason") or "") for r in det_rows):
        out.append("reinstall torch, which is installed but does not load: pip install --force-reinstall torch "
                   "(docs/install.md)" if report["torch"].get("error")
                   else f"install the CLIP detectors: {CLIP_EXTRA_REMEDY}")
    if not report["clip_ready"]:
        for r in det_rows:
            reason = r.get("reason") or ""
            if "Remedy:" in reason:
                out.append(reason.split("Remedy:", 1)[1].split(" (linear heads", 1)[0].strip())
    trust = report["c2pa_trust_list"]
    if trust["error"]:
        out.append(f"fix or replace the C2PA trust list (a scan here stops with exit 2): {trust['error']}")
    seen = set()
    return [x for x in out if not (x in seen or seen.add(x))]
