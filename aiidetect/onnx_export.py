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
"""
from __future__ import annotations

import datetime as _dt
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .hashing import sha256_file
# The sidecar's format and the exporter's head type live in onnx_sidecar, which
# the runtime detector reads without importing the exporter.
from .onnx_sidecar import SIDECAR, SIDECAR_VERSION, ExportError, HeadExport, read_sidecar  # noqa: F401

DEFAULT_OPSET = 18
VARIANTS = ("fp32", "fp16", "int8")
# Above this many parameter bytes the weights go to an external data file
# (protobuf's hard limit is 2 GiB; ViT-L-14 alone is 1.2 GB in fp32).
EXTERNAL_DATA_BYTES = 256 * 1024 * 1024


def _layers_needed(heads: Sequence[HeadExport], n_blocks: int) -> tuple[int, ...]:
    out = set()
    for h in heads:
        for name in _inputs(h.input):
            if name.startswith("cls_"):
                out.add(int(name[4:]) % n_blocks)
    return tuple(sorted(out))


def _inputs(inp: str | Sequence[str]) -> tuple[str, ...]:
    return (inp,) if isinstance(inp, str) else tuple(inp)


def build_graph_module(visual, heads: Sequence[HeadExport]):
    """The nn.Module that is exported: pixels -> (embed, head outputs...)."""
    import torch

    from .backbone import vit_forward

    layers = _layers_needed(heads, len(visual.transformer.resblocks))

    class ExportGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual
            self.heads = torch.nn.ModuleList([h.module for h in heads])
            self.plan = [(_inputs(h.input), len(h.roles)) for h in heads]
            self.output_names = ["embed"] + [n for h in heads for n in h.output_names()]

        def forward(self, pixels):
            feats = vit_forward(self.visual, pixels, layers=layers)
            outs = [feats["embed"].float()]
            for (inp, n_roles), mod in zip(self.plan, self.heads):
                if inp == ("pixels",):
                    x = pixels
                elif len(inp) == 1:
                    x = feats[inp[0]].to(pixels.dtype)
                else:
                    x = torch.cat([feats[k].float() for k in inp], dim=1)
                y = mod(x)
                ys = (y,) if n_roles == 1 and not isinstance(y, (tuple, list)) else tuple(y)
                if len(ys) != n_roles:
                    raise ExportError(f"head returned {len(ys)} outputs, expected {n_roles}")
                outs.extend(t.float() for t in ys)
            return tuple(outs)

    return ExportGraph().eval()


# --------------------------------------------------------------------------
# Collecting the trained heads of a backbone
# --------------------------------------------------------------------------
def collect_heads(backbone, dirs: Sequence[Path], families: Sequence[str] | None = None
                  ) -> tuple[list[HeadExport], list[tuple[str, str]]]:
    """Every trained head under `dirs` whose backbone fingerprint matches.
    Returns (exports, skipped[(head name, reason)]). How a head goes into the
    graph is its family's ``exports`` hook in the detector registry."""
    from .detectors import family_hook, onnx_families
    from .weights import HeadError, find_heads, load_head
    from .weights_identity import legacy_accepts

    exports: list[HeadExport] = []
    skipped: list[tuple[str, str]] = []
    for fam in (families or onnx_families()):
        for path, manifest in find_heads(dirs, detector=fam):
            name = manifest["name"]
            fp = manifest.get("backbone", {}).get("fingerprint", "")
            if fp and fp != backbone.fingerprint and not legacy_accepts(manifest.get("backbone") or {},
                                                                        backbone.fingerprint):
                skipped.append((f"{fam}:{name}", f"trained on another backbone (fingerprint {fp})"))
                continue
            try:
                head = load_head(path)
                exports.extend(family_hook(fam, "exports")(head, backbone))
            except (HeadError, ExportError, NotImplementedError, ImportError, KeyError, ValueError) as exc:
                skipped.append((f"{fam}:{name}", f"{type(exc).__name__}: {exc}"))
    return exports, skipped


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------
def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + \
        sum(b.numel() * b.element_size() for b in module.buffers())


def export_graph(graph, path: Path, image_size: int, opset: int = DEFAULT_OPSET,
                 external_data: bool | None = None) -> dict[str, Any]:
    """torch.onnx.export (the dynamo exporter; needs onnxscript) with a dynamic
    batch axis. Returns the exporter facts for the sidecar."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = _param_bytes(graph) > EXTERNAL_DATA_BYTES if external_data is None else external_data
    # batch 2 for tracing: with 1, the exporter may specialise the batch dimension.
    x = torch.zeros(2, 3, image_size, image_size, dtype=torch.float32)
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError("torch.onnx.export's default (dynamo) exporter needs onnxscript: "
                          "pip install onnxscript") from exc
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(graph, (x,), input_names=["pixels"], output_names=graph.output_names,
                                 dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}},
                                 opset_version=opset, dynamo=True, verbose=False)
        prog.save(str(path), external_data=big)
    return {"exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__,
            "onnxscript": _version("onnxscript"), "opset": opset, "external_data": bool(big)}


def _version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001
        return None


def _data_files(onnx_path: Path) -> list[str]:
    """The model file plus the external data files it references."""
    import onnx

    files = [onnx_path.name]
    m = onnx.load(str(onnx_path), load_external_data=False)
    for t in m.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location" and kv.value not in files:
                files.append(kv.value)
    return files


def to_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """fp32 graph -> fp16 weights and activations, float32 inputs/outputs (for CUDA).
    LayerNorm and Softmax stay fp32 where the converter's block list says so."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = onnx.load(str(src))
    m16 = convert_float_to_float16(m, keep_io_types=True, disable_shape_infer=False)
    big = m16.ByteSize() > EXTERNAL_DATA_BYTES if _fits(m16) else True
    _save(m16, dst, big)
    return {"converter": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)",
            "external_data": big}


def _fits(model) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # noqa: BLE001 - > 2 GiB raises
        return False


def _save(model, dst: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(dst))


class _ArrayReader:
    """onnxruntime.quantization CalibrationDataReader over a (N,3,S,S) array."""

    def __init__(self, pixels: np.ndarray, input_name: str = "pixels", batch: int = 4):
        self.batches = [pixels[i:i + batch] for i in range(0, len(pixels), batch)]
        self.input_name = input_name
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: np.ascontiguousarray(self.batches[self.i - 1], dtype=np.float32)}

    def rewind(self):
        self.i = 0


def _nodes_in_scopes(model_path: Path, scopes: Sequence[str], names: set[str] | None = None) -> list[str]:
    """MatMul/Gemm nodes belonging to these module scopes: tagged so by the
    dynamo exporter (metadata "pkg.torch.onnx.name_scopes"), reading a weight
    named ``<scope>.*``, or named in `names` (tags found before ORT's
    pre-processing, which keeps most node names but drops the metadata)."""
    import onnx

    if not scopes:
        return []
    m = onnx.load(str(model_path), load_external_data=False)
    tags = [f"'{s}'" for s in scopes]
    prefixes = tuple(f"{s}." for s in scopes)
    out = []
    for n in m.graph.node:
        if n.op_type not in ("MatMul", "Gemm"):
            continue
        sc = next((p.value for p in n.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if any(t in sc for t in tags) or any(i.startswith(prefixes) for i in n.input) or n.name in (names or ()):
            out.append(n.name)
    return out


def to_int8(src: Path, dst: Path, calibration: np.ndarray | None = None, mode: str = "dynamic",
            keep_float_scopes: Sequence[str] = ()) -> dict[str, Any]:
    """fp32 graph -> int8. dynamic: weights int8, activations quantized per batch
    at run time (no data needed; the usual choice for transformers on CPU).
    static: activation ranges from `calibration` pixels (QDQ format)."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic, quantize_static

    import onnx

    m = onnx.load(str(src))
    external = not _fits(m) or m.ByteSize() > EXTERNAL_DATA_BYTES
    with tempfile.TemporaryDirectory() as td:
        # The dynamo exporter's value_info holds a few shapes that ORT's
        # quantizer re-infers differently ("(64) vs (1)" on a bias): drop them,
        # shape inference recomputes what it needs.
        del m.graph.value_info[:]
        clean = Path(td) / "clean.onnx"
        _save(m, clean, external)
        del m
        pre = Path(td) / "pre.onnx"
        try:
            # shape inference + graph cleanups make more MatMuls quantizable
            quant_pre_process(str(clean), str(pre), skip_symbolic_shape=True, save_as_external_data=external)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation only
            pre = clean
        exclude = _nodes_in_scopes(pre, keep_float_scopes, set(_nodes_in_scopes(clean, keep_float_scopes)))
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=external,
                             nodes_to_exclude=exclude)
            how = {"quantizer": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                   "per_channel": True, "op_types": ["MatMul", "Gemm"]}
        elif mode == "static":
            if calibration is None or len(calibration) == 0:
                raise ExportError("static int8 quantization needs calibration images (--calibration-data)")
            quantize_static(str(pre), str(dst), _ArrayReader(calibration), per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=external,
                            nodes_to_exclude=exclude)
            how = {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                   "weight_type": "QInt8", "activation_type": "QUInt8", "per_channel": True,
                   "calibration_images": int(len(calibration)), "op_types": ["MatMul", "Gemm"]}
        else:
            raise ExportError(f"unknown int8 mode {mode!r} (dynamic | static)")
    how["float_scopes"] = list(keep_float_scopes)
    how["float_nodes"] = len(exclude)
    return how


# --------------------------------------------------------------------------
# Agreement with the PyTorch fp32 path
# --------------------------------------------------------------------------
def torch_outputs(graph, pixels: np.ndarray, batch_size: int = 8) -> dict[str, np.ndarray]:
    import torch

    parts: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for i in range(0, len(pixels), batch_size):
            outs = graph(torch.from_numpy(np.ascontiguousarray(pixels[i:i + batch_size])))
            for name, t in zip(graph.output_names, outs):
                parts.setdefault(name, []).append(t.float().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def agreement(reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
              heads_meta: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Max abs difference per output, embedding cosine, and per head the share
    of files whose verdict (p_ai >= threshold, as the runtime detector computes
    it) differs between the two runs."""
    from .detectors.onnx import head_results

    out: dict[str, Any] = {"files": int(len(next(iter(reference.values())))), "outputs": {}, "heads": {}}
    for k, ref in reference.items():
        if k not in got:
            continue
        d = np.abs(ref.astype(np.float64) - got[k].astype(np.float64))
        out["outputs"][k] = {"max_abs_diff": float(d.max()) if d.size else 0.0,
                             "mean_abs_diff": float(d.mean()) if d.size else 0.0}
    if "embed" in reference and "embed" in got:
        a, b = reference["embed"].astype(np.float64), got["embed"].astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        out["embed_cosine_min"] = float(cos.min()) if cos.size else 1.0
    for meta in heads_meta:
        r_ref = head_results(meta, reference)
        r_got = head_results(meta, got)
        changed = n = 0
        for x, y in zip(r_ref, r_got):
            if x.p_ai is None or y.p_ai is None:
                continue
            n += 1
            thr = _threshold(meta)
            changed += int((x.p_ai >= thr) != (y.p_ai >= thr))
        out["heads"][meta["name"]] = {"files": n, "verdict_changed": changed,
                                      "verdict_changed_share": (changed / n) if n else None}
    return out


def _threshold(meta: Mapping[str, Any]) -> float:
    """The head's decision threshold on p_ai: its manifest number, else 0.5
    (flow heads put their target-FPR threshold at p_ai = 0.5 by calibration)."""
    t = meta.get("threshold")
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.5


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
    from .preprocess import spec_key

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
    """Decoded, preprocessed images for calibration/agreement (bad files skipped)."""
    from .pixels import iter_pixels, stack_pixels
    from .preprocess import draft_size

    todo = list(paths)[: limit or None]
    return stack_pixels(iter_pixels(todo, [spec], workers, draft=draft_size(spec)), spec)


def image_paths(folder: str | Path, limit: int | None = None) -> list[str]:
    from .discover import IMAGE_EXTS

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
                log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Export `backbone` + `heads` into out_dir as `variant`; write the sidecar.

    calibration_* feed static int8 quantization; agreement_* are the images the
    variant is compared on against the PyTorch fp32 graph (if given as paths,
    they are decoded with each graph's preprocessing). Returns the sidecar dict.
    """
    from . import __version__
    from .preprocess import make_spec
    from .weights import backbone_manifest

    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
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
                                     keep_float_scopes=[f"heads.{i}" for i, h in enumerate(hs) if not h.quantize])
        files = _data_files(target)
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
            from .onnx_runtime import load_session, run_batches

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

