"""Export one ONNX graph per backbone: the image encoder plus every trained head
that reads its features, with a dynamic batch axis and a JSON sidecar.

The exporter is built around a list of :class:`HeadExport` - "(output names,
nn.Module over an encoder output)" - so every head family plugs in the same
way:

- a linear probe reads ``embed`` and returns one logit;
- CLIP-Flow reads ``embed`` and returns a log-likelihood;
- MPFT reads ``pixels``: it runs its own LoRA-adapted encoder pass inside the
  graph and returns (binary logit, attribution logits).

The graph input is ``pixels`` (B,3,S,S) float32, already normalised with the
sidecar's preprocessing (the same numpy preprocessing the torch path uses, so
both runtimes see identical inputs). Outputs: ``embed`` (B,D) always, then
``<head name>/<role>`` for every head. Variants: fp32, fp16 (for CUDA; inputs
and outputs stay float32) and int8 (ONNX Runtime dynamic quantization of the
weights, or static with a calibration set). Each variant's agreement with the
PyTorch fp32 path is measured, never assumed, and written into the sidecar.

Modules: ``graph`` (the nn.Module and torch.onnx.export), ``quantize`` (fp16,
int8), ``agreement`` (variant vs PyTorch fp32); the sidecar's format is in
``aiidetect.onnx_sidecar``. This package collects the heads and drives an
export; everything stays importable from ``aiidetect.onnx_export``.
"""
from __future__ import annotations

import datetime as _dt
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..hashing import sha256_file
# The sidecar's format and the exporter's head type live in onnx_sidecar, which
# the runtime detector reads without importing the exporter.
from ..onnx_sidecar import SIDECAR, SIDECAR_VERSION, ExportError, HeadExport, read_sidecar  # noqa: F401
from .agreement import _threshold, agreement, torch_outputs  # noqa: F401,E402
from .graph import (DEFAULT_OPSET, EXTERNAL_DATA_BYTES, _data_files, _inputs, _layers_needed,  # noqa: F401,E402
                    _param_bytes, _version, build_graph_module, export_graph)
from .quantize import _ArrayReader, _fits, _nodes_in_scopes, _save, to_fp16, to_int8  # noqa: F401,E402

VARIANTS = ("fp32", "fp16", "int8")


# --------------------------------------------------------------------------
# Collecting the trained heads of a backbone
# --------------------------------------------------------------------------
def collect_heads(backbone, dirs: Sequence[Path], families: Sequence[str] | None = None
                  ) -> tuple[list[HeadExport], list[tuple[str, str]]]:
    """Every trained head under `dirs` whose backbone fingerprint matches.
    Returns (exports, skipped[(head name, reason)]). How a head goes into the
    graph is its family's ``exports`` hook in the detector registry."""
    from ..detectors import family_hook, onnx_families
    from ..heads import Head, HeadError, find_heads, load_head
    from ..weights_identity import legacy_accepts

    exports: list[HeadExport] = []
    skipped: list[tuple[str, str]] = []
    for fam in (families or onnx_families()):
        for path, manifest in find_heads(dirs, detector=fam):
            name = manifest["name"]
            fp = Head(path, manifest).backbone_fingerprint
            if fp and fp != backbone.fingerprint and not legacy_accepts(manifest["backbone"], backbone.fingerprint):
                b = manifest["backbone"]
                skipped.append((f"{fam}:{name}", f"trained on another backbone, {b.get('name') or b.get('model')} "
                                                 f"(fingerprint {fp}), not {backbone.spec.describe()} "
                                                 f"(fingerprint {backbone.fingerprint})"))
                continue
            try:
                head = load_head(path)
                head.check_backbone(backbone.fingerprint, backbone.spec.describe())  # one that names none, too
                made = family_hook(fam, "exports")(head, backbone)
                _carry_training_record(head, made)
                exports.extend(made)
            except (HeadError, ExportError, NotImplementedError, ImportError, KeyError, ValueError) as exc:
                skipped.append((f"{fam}:{name}", f"{type(exc).__name__}: {exc}"))
    return exports, skipped



def _carry_training_record(head, exports: Sequence[HeadExport]) -> None:
    """The head's training record (train_record) goes with its export, beside the graph, named after
    the head. A head without a usable one is exported without: its overlap is then unknown on ONNX too.
    Its perceptual hashes (near-duplicates) go with it the same way, when it has usable ones."""
    from ..train_record import KEYS_FILE, PHASH_FILE, NoRecord, load_keys, load_phashes

    try:
        keys = load_keys(head.path, head.manifest)
    except NoRecord:
        return
    try:
        phashes = load_phashes(head.path, head.manifest)
    except NoRecord:
        phashes = None
    blob = keys.astype(">u8").tobytes()
    for h in exports:
        fname = f"{_slug(h.name)}.{KEYS_FILE}"
        block = {k: v for k, v in head.manifest["training_images"].items() if k != "perceptual"}
        h.meta["training_images"] = {**block, "file": fname}
        h.extra_files[fname] = blob
        if phashes is not None:
            pname = f"{_slug(h.name)}.{PHASH_FILE}"
            h.meta["training_images"]["perceptual"] = {**head.manifest["training_images"]["perceptual"],
                                                       "file": pname}
            h.extra_files[pname] = phashes.astype(">u8").tobytes()


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------
def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in s)


def graph_filename(backbone, variant: str, group: int = 0) -> str:
    return f"{_slug(backbone.spec.model)}-{backbone.fingerprint[:8]}{f'-p{group}' if group else ''}-{variant}.onnx"


def group_by_preprocessing(heads: Sequence[HeadExport], default_spec: Mapping[str, Any]
                           ) -> list[tuple[dict[str, Any], list[HeadExport]]]:
    """One graph per backbone and preprocessing: a head trained on center crops
    cannot share an input with one trained on resized images."""
    from ..preprocess import spec_key

    groups: dict[str, tuple[dict[str, Any], list[HeadExport]]] = {}
    for h in heads:
        spec = dict(h.preprocessing or default_spec)
        groups.setdefault(spec_key(spec), (spec, []))[1].append(h)
    if not groups:
        spec = dict(default_spec)
        groups[spec_key(spec)] = (spec, [])
    return list(groups.values())


def load_pixels(paths: Sequence[str], spec: Mapping[str, Any], limit: int | None = None,
                workers: int = 2) -> tuple[np.ndarray, list[str]]:
    """Decoded, preprocessed images for calibration/agreement (bad files skipped), decoded at full size as the
    scan decodes them (Plan.build: no JPEG draft)."""
    from ..pixels import iter_pixels, stack_pixels

    todo = list(paths)[: limit or None]
    return stack_pixels(iter_pixels(todo, [spec], workers), spec)


def image_paths(folder: str | Path, limit: int | None = None) -> list[str]:
    from ..discover import IMAGE_EXTS

    p = Path(folder)
    files = [str(f) for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_EXTS and f.is_file()] if p.is_dir() else []
    if limit:
        # spread the sample over the folder (real and AI sub-folders both)
        step = max(1, len(files) // limit)
        files = files[::step][:limit]
    return files


def export_onnx(backbone, out_dir: str | Path, heads: Sequence[HeadExport] = (), variant: str = "fp32",
                opset: int = DEFAULT_OPSET, calibration_pixels: np.ndarray | None = None,
                calibration_paths: Sequence[str] = (), int8_mode: str = "dynamic",
                agreement_pixels: np.ndarray | None = None, agreement_paths: Sequence[str] = (),
                skipped: Sequence[tuple[str, str]] = (), default_spec: Mapping[str, Any] | None = None,
                int8_weight_bits: int | None = None,
                log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Export `backbone` + `heads` into out_dir as `variant`; write the sidecar.

    calibration_* feed static int8 quantization; agreement_* are the images the
    variant is compared on against the PyTorch fp32 graph (if given as paths,
    they are decoded with each graph's preprocessing). int8_weight_bits: 8, or 7
    for x86 CPUs without VNNI; None chooses for this CPU (aiidetect.cpuinfo).
    Returns the sidecar dict.
    """
    from .. import __version__
    from ..preprocess import make_spec
    from ..heads import backbone_manifest

    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    if variant == "int8" and int8_weight_bits is None:
        from .. import cpuinfo

        int8_weight_bits = cpuinfo.int8_weight_bits()
    if backbone.dtype != "float32" or backbone.device != "cpu":
        backbone.to(device="cpu", dtype="float32")  # export traces the fp32 reference
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    default_spec = default_spec or make_spec("resize-center-crop", backbone.image_size)
    groups = group_by_preprocessing(heads, default_spec)
    graphs = []
    for gi, (spec, hs) in enumerate(groups):
        if int(spec["size"]) != backbone.image_size:
            raise ExportError(f"heads {[h.name for h in hs]} use input size {spec['size']}, the backbone "
                              f"{backbone.image_size}")
        graph = build_graph_module(backbone.visual, hs)
        fname = graph_filename(backbone, variant, gi)
        target = out / fname
        for old in out.glob(fname + "*"):
            old.unlink()
        log(f"exporting {fname} ({len(hs)} head(s))")
        with tempfile.TemporaryDirectory() as td:
            fp32_path = target if variant == "fp32" else Path(td) / "fp32.onnx"
            facts = export_graph(graph, fp32_path, backbone.image_size, opset=opset)
            conversion: dict[str, Any] = {}
            cal = calibration_pixels
            if variant == "int8" and int8_mode == "static" and cal is None and calibration_paths:
                cal, _ = load_pixels(calibration_paths, spec)
            if variant == "fp16":
                conversion = to_fp16(fp32_path, target)
            elif variant == "int8":
                conversion = to_int8(fp32_path, target, cal, int8_mode,
                                     keep_float_scopes=[f"heads.{i}" for i, h in enumerate(hs) if not h.quantize],
                                     weight_bits=int(int8_weight_bits or 8))
        files = _data_files(target)
        for h in hs:
            for extra, blob in h.extra_files.items():
                (out / extra).write_bytes(blob)
                files.append(extra)
        heads_meta = [{"name": h.name, "family": h.family, "input": h.input if isinstance(h.input, str) else list(h.input),
                       "outputs": dict(zip(h.roles, h.output_names())), **h.meta} for h in hs]
        entry = {"file": fname, "files": {f: sha256_file(out / f) for f in files}, "variant": variant,
                 "input": {"name": "pixels", "shape": ["batch", 3, backbone.image_size, backbone.image_size],
                           "dtype": "float32", "layout": "NCHW, RGB, normalised: (x/255 - mean)/std"},
                 "preprocessing": spec, "outputs": graph.output_names, "heads": heads_meta,
                 **facts, "conversion": conversion}
        agree_px = agreement_pixels
        if agree_px is None and agreement_paths:
            agree_px, _ = load_pixels(agreement_paths, spec)
        if agree_px is not None and len(agree_px):
            from ..onnx_runtime import load_session, run_batches

            log(f"measuring agreement with PyTorch fp32 on {len(agree_px)} images")
            ref = torch_outputs(graph, agree_px)
            sess = load_session(target, device="auto", variant=variant)
            got = run_batches(sess, agree_px, batch_size=8)
            entry["agreement"] = {"reference": "pytorch fp32 (same graph module)", "provider": sess.provider,
                                  **agreement(ref, got, heads_meta)}
        graphs.append(entry)
    bm = backbone_manifest(backbone)
    sidecar = {
        "format": "aiidetect-onnx", "format_version": SIDECAR_VERSION, "aiidetect": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "variant": variant, "opset": opset,
        "exporter": {"name": "torch.onnx.export(dynamo=True)", "torch": graphs[0]["torch"] if graphs else None,
                     "onnxscript": _version("onnxscript"), "onnx": _version("onnx")},
        "backbone": {**bm, "image_size": backbone.image_size, "patch_size": backbone.patch_size,
                     "embed_dim": backbone.embed_dim, "mean": list(backbone.mean), "std": list(backbone.std)},
        "graphs": graphs, "skipped_heads": [{"name": n, "reason": r} for n, r in skipped],
    }
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar

