"""ONNX Runtime sessions: pick the execution provider, say which one ran.

`onnxruntime` (CPU) and `onnxruntime-gpu` (CUDA) install into the same module
folder; only one may be installed (docs/install.md). This module works with
either: it asks the installed build which providers it has, and always
reports the provider the session actually got, because ONNX Runtime silently
falls back to CPU when the CUDA libraries cannot be loaded.

Imported lazily: nothing here runs at `aiidetect --help`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np


class RuntimeUnavailable(RuntimeError):
    pass


def import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeUnavailable(
            "onnxruntime is not installed; install `pip install onnxruntime` (CPU) or `onnxruntime-gpu` (CUDA), "
            "never both (docs/install.md)") from exc
    return ort


def available_providers() -> list[str]:
    return list(import_ort().get_available_providers())


def choose_providers(device: str = "auto") -> list[str]:
    """auto: CUDA when this onnxruntime build has it, else CPU. cuda: CUDA or an
    error. cpu: CPU only."""
    have = available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeUnavailable(
            "--device cuda asked for ONNX Runtime's CUDA provider, but the installed onnxruntime has only "
            f"{', '.join(have)}; uninstall onnxruntime and install onnxruntime-gpu (docs/install.md)")
    return ["CPUExecutionProvider"]


@dataclass
class Session:
    """An InferenceSession plus what was asked for and what was obtained."""

    path: Path
    session: Any
    provider: str                         # the provider the session actually runs on
    requested: list[str] = field(default_factory=list)
    input_name: str = "pixels"
    input_type: str = "tensor(float)"
    output_names: list[str] = field(default_factory=list)
    exact_int8: bool = False              # session.x64quantprecision set (x86 without VNNI)
    # Run one image at a time (batch_dependent): the graph quantizes activations on the fly
    # (DynamicQuantizeLinear), with one scale per tensor taken from the min and max of the whole batch, so a
    # file's numbers depended on the other files of its batch (tiny-vit int8: p_ai moved by up to 0.013).
    per_image: bool = False

    def run(self, pixels, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(pixels, dtype=np.float16 if self.input_type == "tensor(float16)" else np.float32)
        names = list(outputs) if outputs else self.output_names
        if self.per_image and len(x) > 1:
            parts = [self.session.run(names, {self.input_name: x[i:i + 1]}) for i in range(len(x))]
            got = [np.concatenate(col) for col in zip(*parts)]
        else:
            got = self.session.run(names, {self.input_name: x})
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, got)}

    def describe(self) -> dict[str, Any]:
        return {"runtime": "onnx", "provider": self.provider, "requested_providers": self.requested,
                "model": str(self.path), "exact_int8_kernels": self.exact_int8}


def load_session(path: str | Path, device: str = "auto", threads: int | None = None,
                 optimization: str = "all", variant: str = "fp32") -> Session:
    """Open one .onnx file (external data files next to it are found by ORT).

    variant "fp16" on the CPU provider caps graph optimisation at "extended":
    onnxruntime 1.31.1 segfaults while building the session of an fp16 ViT
    graph with ORT_ENABLE_ALL (the CPU layout transforms); CUDA is unaffected.
    """
    ort = import_ort()
    p = Path(path)
    if not p.is_file():
        raise RuntimeUnavailable(f"ONNX model {p} does not exist; run `aiidetect export onnx -o {p.parent}` first")
    providers = choose_providers(device)
    if variant == "fp16" and providers[0] == "CPUExecutionProvider" and optimization == "all":
        optimization = "extended"
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    n = threads or _default_threads()
    if n:
        so.intra_op_num_threads = n
    so.log_severity_level = 3  # ORT warns about every CPU-assigned shape op on CUDA; noise for users
    exact_int8 = _guard_int8(so)
    graph = check_external_data(p, ort)
    # from the graph the check parsed (one read of a file that can be hundreds of MB), let go before the session
    per_image = variant == "int8" and _quantizes_per_batch(graph)
    del graph
    try:
        sess = ort.InferenceSession(str(p), sess_options=so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise RuntimeUnavailable(f"cannot load ONNX model {p}: {exc}") from exc
    got = sess.get_providers()
    inp = sess.get_inputs()[0]
    return Session(path=p, session=sess, provider=got[0] if got else "unknown", requested=providers,
                   input_name=inp.name, input_type=inp.type, output_names=[o.name for o in sess.get_outputs()],
                   exact_int8=exact_int8, per_image=per_image)


def _quantizes_per_batch(model: Any) -> bool:
    """Whether the graph computes activation scales from its input batch (dynamic int8). Without the onnx
    package to read the graph (model None), an int8 graph is taken to (the safe side: only slower)."""
    if model is None:
        return True
    return any(n.op_type in ("DynamicQuantizeLinear", "DynamicQuantizeMatMul") for n in model.graph.node)


# The first onnxruntime that refuses an external data location outside the model's folder (dense
# initializers); it has no Python 3.10 build, and it still read a sparse initializer's from anywhere.
_ORT_CHECKS_PATHS = (1, 24, 1)


def check_external_data(path: Path, ort: Any = None) -> Any:
    """Refuse a model whose tensors take their data from a file outside its folder (``../``, an absolute
    path, a link leading out) or from anything but a regular file there. A model from a shared drive
    otherwise had onnxruntime (before 1.24, every release for Python 3.10; sparse initializers later
    still) read any file the user can, /dev/zero or a FIFO included, as its weights. Read with ``onnx``
    (the [onnx] extra) without the data; without it, left to an onnxruntime that checks dense ones.
    Returns the model read (without its external data), or None without ``onnx``."""
    try:
        import onnx
    except ImportError:
        version = tuple(int(x) for x in re.findall(r"\d+", getattr(ort or import_ort(), "__version__", "0"))[:3])
        if version >= _ORT_CHECKS_PATHS:
            return None
        raise RuntimeUnavailable(
            f"cannot check where ONNX model {path} reads its data from: install `onnx` (the [onnx] extra), or "
            f"onnxruntime {'.'.join(map(str, _ORT_CHECKS_PATHS))} or later, which checks it itself") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises protobuf's own errors
        raise RuntimeUnavailable(f"cannot load ONNX model {path}: {exc}") from exc
    base = path.parent.resolve()
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL and not len(tensor.external_data):
            continue
        where = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / where).resolve() if where and not Path(where).is_absolute() else None
        if target is None or not target.is_relative_to(base) or not target.is_file():
            raise RuntimeUnavailable(
                f"ONNX model {path}: tensor {tensor.name!r} takes its data from {where!r}, which is not a file in "
                "the model's folder; refused (a model may read only its own data files)")
    return model


def _all_tensors(model) -> Iterator[Any]:
    """Every TensorProto of a model that can hold external data: initializers, sparse ones' values and
    indices, node attributes (Constant), in subgraphs (If, Loop), functions and training graphs."""
    graphs = [model.graph] + [g for t in model.training_info for g in (t.initialization, t.algorithm)]
    nodes = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            g = graphs.pop()
            yield from g.initializer
            for sp in g.sparse_initializer:
                yield from (sp.values, sp.indices)
            nodes.extend(g.node)
            continue
        for a in nodes.pop().attribute:
            yield from ([a.t] if a.HasField("t") else [])
            yield from a.tensors
            for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                yield from (sp.values, sp.indices)
            graphs.extend(([a.g] if a.HasField("g") else []) + list(a.graphs))


def int8_setup(graph: dict[str, Any], session: Session) -> dict[str, Any] | None:
    """For an int8 graph of a sidecar and its session: the weight bits it was exported with and whether ORT
    was told to use its exact kernels (what results depend on); None for float graphs."""
    if graph.get("variant") != "int8":
        return None
    return {"weight_bits": (graph.get("conversion") or {}).get("weight_bits", 8), "exact_kernels": session.exact_int8}


def _guard_int8(so) -> bool:
    """On x86 CPUs without VNNI, ONNX Runtime's fast u8 x s8 kernels sum byte
    pairs in 16 bits and saturate on 8-bit weights (aiidetect.cpuinfo): this
    option makes it run such weights on its exact u8 x u8 kernels instead. Weights
    of at most 7 bits (the int8 exports made for these CPUs) stay on the fast
    kernels, which cannot overflow on them. Not set on VNNI CPUs: there ORT
    would convert all the same and run 1.6x slower for identical results
    (docs/performance.md)."""
    from . import cpuinfo

    if not cpuinfo.int8_pairs_saturate():
        return False
    so.add_session_config_entry("session.x64quantprecision", "1")
    return True


def _default_threads() -> int | None:
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return None  # ORT's default: one thread per physical core


def run_batches(session: Session, pixels: np.ndarray, batch_size: int = 16,
                outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run a large array through a session in batches (the graph has a dynamic batch axis)."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(pixels), max(1, batch_size)):
        for k, v in session.run(pixels[i:i + batch_size], outputs).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}
