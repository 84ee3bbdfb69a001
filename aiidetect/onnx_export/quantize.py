"""Precision conversions of an exported fp32 graph: fp16 (for CUDA) and int8
(ONNX Runtime dynamic or static quantization), with chosen module scopes kept
in float (CLIP-Flow's MatMuls: a density model amplifies quantization error)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..onnx_sidecar import ExportError
from .graph import EXTERNAL_DATA_BYTES, share_like_graph


def to_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """fp32 graph -> fp16 weights and activations, float32 inputs/outputs (for CUDA).
    LayerNorm and Softmax stay fp32 where the converter's block list says so."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = onnx.load(str(src))
    m16 = convert_float_to_float16(m, keep_io_types=True, disable_shape_infer=False)
    big = m16.ByteSize() > EXTERNAL_DATA_BYTES if _fits(m16) else True
    _save(m16, dst, big)
    if big:
        share_like_graph(dst)
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
            keep_float_scopes: Sequence[str] = (), weight_bits: int = 8) -> dict[str, Any]:
    """fp32 graph -> int8. dynamic: weights int8, activations quantized per batch
    at run time (no data needed; the usual choice for transformers on CPU).
    static: activation ranges from `calibration` pixels (QDQ format).

    weight_bits 7 (ORT's reduce_range: weights in [-64, 64]) is for x86 CPUs
    without VNNI, whose fast u8 x s8 kernels overflow on 8-bit weights
    (aiidetect.cpuinfo); it costs one bit of weight precision."""
    if weight_bits not in (7, 8):
        raise ExportError(f"int8 weights take 7 or 8 bits, not {weight_bits}")
    reduce = weight_bits == 7
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
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce,
                             op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=external,
                             nodes_to_exclude=exclude)
            how = {"quantizer": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                   "per_channel": True, "op_types": ["MatMul", "Gemm"]}
        elif mode == "static":
            if calibration is None or len(calibration) == 0:
                raise ExportError("static int8 quantization needs calibration images (--calibration-data)")
            quantize_static(str(pre), str(dst), _ArrayReader(calibration), per_channel=True, reduce_range=reduce,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=external,
                            nodes_to_exclude=exclude)
            how = {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                   "weight_type": "QInt8", "activation_type": "QUInt8", "per_channel": True,
                   "calibration_images": int(len(calibration)), "op_types": ["MatMul", "Gemm"]}
        else:
            raise ExportError(f"unknown int8 mode {mode!r} (dynamic | static)")
    if external:
        share_like_graph(dst)
    how["weight_bits"] = weight_bits
    how["float_scopes"] = list(keep_float_scopes)
    how["float_nodes"] = len(exclude)
    return how
