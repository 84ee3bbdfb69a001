"""Does ONNX Runtime's int8 matrix multiply on this CPU compute what it should?

A one-MatMul graph built so that every byte pair of the u8 x s8 dot product is
as large as it gets: activations quantize to 255, the weights of half the
output columns to the top of their range. Exact integer arithmetic gives those
columns their float value back (up to float rounding); a kernel that sums byte
pairs in 16 bits with saturation (``vpmaddubsw``: x86 without VNNI) returns
about half of it with 8-bit weights (255 x 127 x 2 = 64,770 > 32,767), and the
exact value with 7-bit ones (255 x 64 x 2 = 32,640).

Used by the tests (the guarded configurations must be exact on every CPU) and by
``benchmarks/int8_kernels.py`` (which also shows whether the unguarded kernel
saturates on the machine it runs on).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

K, N, M = 64, 8, 4


def _graph(path: Path) -> np.ndarray:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (K, N)).astype(np.float32)
    w[:, 0::2] = 1.0                     # columns whose every weight quantizes to the top of the range
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    g = helper.make_graph([node], "int8_probe", [x], [y], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return w


def _quantize(src: Path, dst: Path, weight_bits: int) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process: nothing to gain on one MatMul
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=weight_bits == 7, op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)


def _errors(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-6)
    return {"max_rel_error_top_weights": float(rel[:, 0::2].max()), "max_rel_error_other": float(rel[:, 1::2].max()),
            "exact": bool(rel[:, 0::2].max() < 1e-3)}


def probe(weight_bits: int = 8, exact_kernels: bool | None = None) -> dict[str, Any]:
    """Quantize the probe graph with `weight_bits`, run it with ONNX Runtime
    (exact_kernels: set session.x64quantprecision; None = as aiidetect's sessions
    do on this CPU) and return the worst relative error on the saturating columns
    and on the others, with what ran."""
    import onnxruntime as ort

    from .. import cpuinfo

    if exact_kernels is None:
        exact_kernels = cpuinfo.int8_pairs_saturate()
    with tempfile.TemporaryDirectory() as td:
        src, dst = Path(td) / "probe.onnx", Path(td) / "probe-int8.onnx"
        w = _graph(src)
        _quantize(src, dst, weight_bits)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if exact_kernels:
            so.add_session_config_entry("session.x64quantprecision", "1")
        sess = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
        x = np.ones((M, K), np.float32)   # quantizes to 255 (range [0, 1], zero point 0)
        got = sess.run(None, {"x": x})[0]
    return {"weight_bits": weight_bits, "exact_kernels": bool(exact_kernels), **_errors(got, x @ w)}


def emulate_saturating(weight_bits: int = 8) -> dict[str, Any]:
    """What a kernel summing byte pairs in 16 bits with saturation returns on the
    probe, computed in numpy from the quantized graph's own weights and scales:
    the failure the probe is built to show, on any CPU."""
    import onnx
    from onnx import numpy_helper

    with tempfile.TemporaryDirectory() as td:
        src, dst = Path(td) / "probe.onnx", Path(td) / "probe-int8.onnx"
        w = _graph(src)
        _quantize(src, dst, weight_bits)
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer}
    wq = next(v for v in inits.values() if v.dtype == np.int8 and v.shape == (K, N)).astype(np.int32)
    w_scale = next(v for k, v in inits.items() if v.dtype == np.float32 and v.shape == (N,) and "scale" in k)
    xq = np.full((M, K), 255, np.int32)   # DynamicQuantizeLinear of ones: scale 1/255, zero point 0
    pairs = np.clip(xq[:, 0::2, None] * wq[None, 0::2] + xq[:, 1::2, None] * wq[None, 1::2], -32768, 32767)
    got = pairs.sum(axis=1) * (1 / 255) * w_scale[None, :]
    return {"weight_bits": weight_bits, "emulated": "u8 x s8 byte pairs summed in 16 bits, saturating",
            **_errors(got.astype(np.float32), np.ones((M, K), np.float32) @ w)}
