"""How fast is a scan here, and how close is that to what the machine can do?

Measures, for one backbone / runtime / dtype / batch size:

- the machine's matmul peak (fp32 and bf16 GFLOP/s, square GEMMs in torch);
- the model's FLOPs per image, counted by torch (``torch.utils.flop_counter``,
  2 FLOPs per multiply-add; ViT-L-14 @224 = 161.7 GFLOP, ViT-B-16 = 34.9), with
  the count from the ViT config beside it as a cross-check;
- decode images/s (read + decode + preprocess, as the scan's workers do it:
  full size, no JPEG draft);
- model images/s (pre-decoded batches through the encoder + a linear head);
- end-to-end images/s through the real scan Pipeline (decode workers
  overlapped with the model, heads, fusion, records);
- peak memory, and the embedding cosine of bf16 against fp32.

efficiency = end-to-end images/s / (peak GFLOP/s of the dtype / model GFLOP per image).
Speed does not depend on weight values, so random-init backbones are fine.
"""
from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

DTYPES = ("float32", "bfloat16", "float16", "int8")
RUNTIMES = ("torch", "onnx")


# --------------------------------------------------------------------------
# The machine and the model
# --------------------------------------------------------------------------
def vit_gflops(model_cfg: Mapping[str, Any]) -> float:
    """Forward GFLOP per image of an open_clip ViT image tower (multiply-add = 2).

    Counts the patch embedding, per block QKV/attention/output projection/MLP,
    and the final projection; LayerNorm, softmax, GELU and adds are < 1 % and
    left out (they are memory-bound, not what a matmul peak measures).
    """
    v = model_cfg["vision_cfg"]
    size = v.get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    p = v.get("patch_size", 16)
    p = p if isinstance(p, int) else p[0]
    w, layers = int(v["width"]), int(v["layers"])
    hidden = int(round(w * float(v.get("mlp_ratio", 4.0))))
    n = (size // p) ** 2
    t = n + 1
    patch = 2 * n * (3 * p * p) * w
    block = 2 * t * w * 3 * w + 2 * t * t * w * 2 + 2 * t * w * w + 2 * t * w * hidden * 2
    proj = 2 * w * int(model_cfg.get("embed_dim", w))
    return (patch + layers * block + proj) / 1e9


def batch_bytes(model_cfg: Mapping[str, Any], batch: int, dtype: str = "float32") -> tuple[int, int]:
    """(host bytes, model bytes) a batch needs at least: its float32 pixels, and per image what one block
    cannot do without at once, the residual stream beside the larger of QKV and the MLP's hidden layer, in
    the model's dtype. A lower bound: a batch over it cannot run, one under it still may not. The attention
    matrix is left out (fused attention never holds it) and QKV and the MLP are not added up (they are never
    alive together): counting them, with float32 whatever the dtype, refused bf16 batches that fit in a
    quarter of the GPU memory the message asked for."""
    v = model_cfg["vision_cfg"]
    size = v.get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    p = v.get("patch_size", 16)
    p = p if isinstance(p, int) else p[0]
    w = int(v["width"])
    t = (size // p) ** 2 + 1
    elem = 2 if dtype in ("bfloat16", "float16") else 4
    per_image = t * w * (1 + max(3.0, float(v.get("mlp_ratio", 4.0)))) * elem
    return batch * 3 * size * size * 4, int(batch * per_image)


def available_bytes(device: str = "cpu") -> int | None:
    """Memory free for a new allocation now (Linux MemAvailable, or the GPU's free memory); None: unknown."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(model_cfg: Mapping[str, Any], batch: int, device: str, dtype: str = "float32") -> None:
    """Refuse a batch size that cannot fit before anything is allocated: `--batch-size 100000` tried to
    fill 112 GiB with random pixels (a MemoryError after the warm-up at best, the OOM killer taking the
    machine at worst)."""
    host, model = batch_bytes(model_cfg, batch, dtype)
    if device != "cuda":
        host, model = host + model, 0
    for need, where in ((host, "cpu"), (model, "cuda")):
        have = available_bytes(where) if need else None
        if have is not None and need > have:
            raise ValueError(f"a batch of {batch} images needs at least {need / 2 ** 30:.1f} GiB "
                             f"({'memory' if where == 'cpu' else 'GPU memory'}), {have / 2 ** 30:.1f} GiB is "
                             f"free: use a smaller --batch-size / --batch-sizes")


def torch_gflops(backbone, batch: int = 1) -> dict[str, Any]:
    """Forward GFLOP per image of the encoder as torch counts it
    (``torch.utils.flop_counter.FlopCounterMode``, multiply-add = 2), one batch
    of zeros through ``Backbone.encode``.

    Two things the counter would miss are put back in view of it, not added by
    formula: nn.MultiheadAttention's fused inference kernel is one opaque op, so
    the attention modules run their unfused path for the count (dropout is 0 in
    CLIP: same arithmetic); and the CPU flash-attention op has no FLOP formula
    in torch, so it gets torch's own SDPA formula. Returns {"gflops_per_image",
    "by_op"} with GFLOP per image for each counted op.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            custom[op] = cpu_sdpa
    attn = [m for m in backbone.visual.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    modes = [m.training for m in attn]
    dt = next(backbone.visual.parameters()).dtype
    x = torch.zeros(batch, 3, backbone.image_size, backbone.image_size, dtype=dt, device=backbone.device)
    try:
        for m in attn:
            m.train()
        with FlopCounterMode(display=False, custom_mapping=custom) as fc, torch.no_grad():
            backbone.encode(x)
    finally:
        for m, was in zip(attn, modes):
            m.train(was)
    by_op = {str(k): v / batch / 1e9 for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return {"gflops_per_image": fc.get_total_flops() / batch / 1e9, "by_op": by_op}


def matmul_peak_gflops(dtype: str = "float32", n: int | None = None, seconds: float = 1.0, device: str = "cpu"
                       ) -> float:
    """Best GFLOP/s of an n x n x n GEMM over ~`seconds` (torch, all threads).

    On CUDA the GEMM runs asynchronously, so each timed product is bracketed by
    CUDA events after warm-ups; n defaults to 8192 there, because a 2048 GEMM
    takes tens of microseconds on a data-centre GPU and would measure launch
    overhead instead of the tensor cores. Inputs are random: zeros run faster
    than real data on some GPUs.
    """
    import torch

    if device == "cuda":
        return _cuda_matmul_peak(dtype, n or 8192, seconds)
    n = n or 2048
    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    torch.mm(a, b)  # warm-up: thread pool, packing buffers, AMX/AVX512 tile config
    best = 0.0
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        torch.mm(a, b)
        dt_s = time.perf_counter() - t
        best = max(best, 2 * n ** 3 / dt_s / 1e9)
        if time.perf_counter() > end:
            break
    return best


def _cuda_matmul_peak(dtype: str, n: int, seconds: float) -> float:
    return cuda_matmul_stats(dtype, n, seconds)["best"]


def cuda_event_seconds(fn: Callable[[], Any]) -> float:
    """Seconds the GPU spent on fn(), between two CUDA events: host-side Python
    and launch latency around it are not counted."""
    import torch

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1e3


def cuda_matmul_stats(dtype: str, n: int = 8192, seconds: float = 1.0) -> dict[str, float]:
    """GFLOP/s of n x n x n GEMMs on the GPU, each timed with CUDA events after
    warm-ups: best and median over at most 200 products or `seconds`."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device="cuda", dtype=dt)
    b = torch.randn(n, n, device="cuda", dtype=dt)
    c = torch.empty(n, n, device="cuda", dtype=dt)
    for _ in range(3):  # cuBLAS handle, heuristics, clocks up
        torch.mm(a, b, out=c)
    torch.cuda.synchronize()
    rates = []
    end = time.perf_counter() + seconds
    reps = 0
    while reps < 5 or (time.perf_counter() < end and reps < 200):
        reps += 1
        sec = cuda_event_seconds(lambda: torch.mm(a, b, out=c))
        if sec > 0:
            rates.append(2 * n ** 3 / sec / 1e9)
    del a, b, c
    torch.cuda.empty_cache()
    if not rates:
        raise RuntimeError(f"CUDA events timed no {dtype} product")
    return {"best": max(rates), "median": float(np.median(rates)), "products": len(rates)}


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if platform.system() != "Darwin" else r / (1024.0 * 1024.0)


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        facts["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    from . import cpuinfo

    if cpuinfo.flags_known():
        facts["cpu"] = cpuinfo.model()
        facts["cpu_flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni",
                                          "avx_vnni") if f in cpuinfo.hardware_flags()]
    if cpuinfo.masked():  # aiidetect chose as for a CPU without these; the hardware still ran them
        facts["aiidetect_cpu_without"] = sorted(cpuinfo.masked())
    return facts


# --------------------------------------------------------------------------
# Runners: (B,3,S,S) float32 numpy -> {"embed": ..., "logit": ...}
# --------------------------------------------------------------------------
class TorchRunner:
    """The backbone cast to `dtype` (not autocast: autocast collapses in
    nn.MultiheadAttention's CPU path) plus a linear head on `embed`."""

    runtime = "torch"

    def __init__(self, backbone, dtype: str = "float32"):
        import torch

        self.backbone = backbone
        if dtype != backbone.dtype:
            backbone.to(dtype=dtype)
        self.dtype = dtype
        g = torch.Generator().manual_seed(0)
        self.head_w = torch.randn(backbone.embed_dim, 1, generator=g)
        self.provider = backbone.device

    def encode(self, x, layers=()):
        """FeatureRequest.encode: torch tensor in, tensors out."""
        import torch

        with torch.inference_mode():
            out = self.backbone.encode(x.to(self.backbone.device, getattr(torch, self.dtype)), layers=layers)
        return {"embed": out["embed"].float()}

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        e = self.encode(torch.from_numpy(pixels))["embed"]
        if self.backbone.device == "cuda":
            torch.cuda.synchronize()
        return {"embed": e.cpu().numpy(), "logit": (e.cpu() @ self.head_w).numpy()[:, 0]}


class OnnxRunner:
    runtime = "onnx"

    def __init__(self, session, dtype: str, int8: dict[str, Any] | None = None):
        self.session = session
        self.dtype = dtype
        self.provider = session.provider
        self.int8 = int8  # weight bits and whether ORT's exact kernels were asked for (x86 without VNNI)

    def encode(self, x, layers=()):
        import torch

        arr = x.detach().float().cpu().numpy()
        return {k: torch.from_numpy(v) for k, v in self.session.run(arr).items()}

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self.session.run(pixels)


def make_onnx_runner(backbone, dtype: str, onnx_dir: Path | None, device: str, workdir: Path,
                     log: Callable[[str], None]) -> OnnxRunner:
    from .onnx_export import export_onnx, read_sidecar
    from .onnx_runtime import int8_setup, load_session

    variant = {"float32": "fp32", "float16": "fp16", "int8": "int8"}.get(dtype)
    if variant is None:
        raise ValueError(f"ONNX runtime takes --dtype float32, float16 or int8 (not {dtype})")
    if onnx_dir is None:
        onnx_dir = workdir / f"onnx-{variant}"
        log(f"exporting {backbone.spec.model} to ONNX ({variant}) in {onnx_dir}")
        export_onnx(backbone, onnx_dir, [], variant=variant)
    side = read_sidecar(onnx_dir)
    g = side["graphs"][0]
    sess = load_session(Path(onnx_dir) / g["file"], device=device, variant=g.get("variant", variant))
    return OnnxRunner(sess, dtype, int8_setup({"variant": variant, **g}, sess))


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------
def time_model(runner, pixels: np.ndarray, batch_size: int, min_batches: int = 2, min_seconds: float = 3.0
               ) -> dict[str, Any]:
    """Images/s of the model on pre-decoded batches (one warm-up batch first)."""
    b = np.ascontiguousarray(pixels[:batch_size])
    if len(b) < batch_size:  # tile to a full batch
        b = np.ascontiguousarray(np.concatenate([b] * (batch_size // max(1, len(b)) + 1))[:batch_size])
    runner(b)
    times = []
    start = time.perf_counter()
    while len(times) < min_batches or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        runner(b)
        times.append(time.perf_counter() - t)
        if len(times) >= 50:
            break
    best, med = min(times), float(np.median(times))
    return {"images_per_s": batch_size / med, "images_per_s_best": batch_size / best, "batches": len(times),
            "seconds_per_batch_median": med}


def time_model_on_device(backbone, pixels: np.ndarray, batch_size: int, dtype: str, min_batches: int = 5,
                         min_seconds: float = 2.0) -> dict[str, Any]:
    """Images/s of the encoder alone on a CUDA device: the batch is already on
    the GPU in `dtype` and each forward is timed with CUDA events, so host
    copies and Python around it are left out. The gap to `time_model` (numpy
    in, numpy out, as the scan feeds it) is the cost of moving pixels and
    features across PCIe."""
    import torch

    b = pixels[:batch_size]
    if len(b) < batch_size:
        b = np.concatenate([b] * (batch_size // max(1, len(b)) + 1))[:batch_size]
    x = torch.from_numpy(np.ascontiguousarray(b)).to("cuda", getattr(torch, dtype))
    times = []
    with torch.inference_mode():
        for _ in range(2):
            backbone.encode(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        while len(times) < min_batches or time.perf_counter() - start < min_seconds:
            times.append(cuda_event_seconds(lambda: backbone.encode(x)))
            if len(times) >= 200:
                break
    med = float(np.median(times))
    return {"images_per_s": batch_size / med, "images_per_s_best": batch_size / min(times), "batches": len(times),
            "seconds_per_batch_median": med}


def time_decode(paths: Sequence[str], spec: Mapping[str, Any], workers: int, draft: bool) -> dict[str, Any]:
    from .pixels import iter_pixels
    from .preprocess import draft_size

    d = draft_size(spec) if draft else None
    t = time.perf_counter()
    ok = sum(1 for x in iter_pixels(paths, [spec], workers, draft=d) if x.ok)
    s = time.perf_counter() - t
    return {"images_per_s": len(paths) / s if s > 0 else None, "ok": ok, "seconds": s, "draft": d}


def decoded_pixels(paths: Sequence[str], spec: Mapping[str, Any], n: int) -> np.ndarray:
    from .onnx_export import load_pixels

    px, _ = load_pixels(list(paths)[:n], spec)
    return px


# --decode-schedule -> Pipeline(schedule=...); auto = as a scan decides (Plan.decode_schedule)
SCHEDULES = {"auto": None, "overlap": "overlap", "turns": "turns", "adaptive": "adaptive"}


def time_end_to_end(paths: Sequence[str], runner, spec: Mapping[str, Any], batch_size: int, workers: int,
                    schedule: str | None = None, watermark: str = "auto") -> dict[str, Any]:
    """The scan Pipeline as `aiidetect scan` runs it (decode workers with the
    metadata detector, beside the model or taking turns with it as the scan
    would decide unless `schedule` says, a linear head, fusion, records),
    minus report writing. watermark: the metadata detector's --watermark."""
    from .detectors.base import Detector, FeatureRequest, feature_key
    from .metadata.detector import MetadataDetector
    from .discover import Candidate
    from .pipeline import Pipeline
    from .records import DetectorResult

    class BenchHead(Detector):
        family = "bench"

        def __init__(self):
            super().__init__("bench:linear")
            dt = "float32" if runner.runtime == "onnx" else runner.dtype
            self.req = FeatureRequest(encoder_key=f"bench:{runner.runtime}", preprocess=dict(spec),
                                      encode=runner.encode, device=getattr(runner, "provider", "cpu")
                                      if runner.runtime == "torch" else "cpu", dtype=dt)
            self.key = feature_key(self.req)
            self.w = None

        def feature_requests(self):
            return [self.req]

        def predict(self, samples, features):
            out = []
            for f in features:
                e = np.asarray(f[self.key]["embed"], np.float64)
                if self.w is None:
                    self.w = np.random.default_rng(0).standard_normal(e.shape[0]) / np.sqrt(e.shape[0])
                z = float(e @ self.w)
                out.append(DetectorResult(status="ok", p_ai=1 / (1 + np.exp(-np.clip(z, -50, 50))), score=z,
                                          score_kind="logit"))
            return out

    pipe = Pipeline([MetadataDetector({"watermark": watermark}), BenchHead()], batch_size=batch_size, workers=workers,
                    schedule=schedule)
    cands = [Candidate(p, explicit=True) for p in paths]
    t = time.perf_counter()
    recs = list(pipe.run(cands))
    s = time.perf_counter() - t
    st = pipe.stats
    return {"images_per_s": len(recs) / s if s > 0 else None, "seconds": s, "files": len(recs),
            "decoded": st.decoded, "model_seconds": st.model_seconds, "decode_seconds_sum": st.decode_seconds,
            "draft": pipe.draft, "detectors": [d.name for d in pipe.detectors],
            "decode_schedule": pipe.turn_policy.summary() if pipe.turn_policy else {"schedule": pipe.schedule}}


def embed_cosine(backbone, pixels: np.ndarray, dtype: str) -> float:
    """min over images of cos(embed in `dtype`, embed in fp32): backbone is
    left in `dtype`."""
    import torch

    backbone.to(dtype="float32")
    x = torch.from_numpy(pixels).to(backbone.device)
    with torch.inference_mode():
        ref = backbone.encode(x)["embed"].double()
        backbone.to(dtype=dtype)
        got = backbone.encode(x.to(getattr(torch, dtype)))["embed"].double()
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1)
    return float(cos.min())


def torch_profile(runner, pixels: np.ndarray, top: int = 12) -> list[dict[str, Any]]:
    """Self CPU time per operator for one batch: what the time goes into."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner(pixels)
    rows = []
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]:
        rows.append({"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 2),
                     "share": round(e.self_cpu_time_total / total, 4), "calls": e.count})
    return rows


def image_files(folder: str | Path | None, limit: int) -> list[str]:
    if not folder:
        return []
    from .onnx_export import image_paths

    return image_paths(folder, limit)


def run_bench(backbone_spec, folder: str | Path | None = None, runtime: str = "torch", dtype: str = "float32",
              batch_size: int | Sequence[int] = 8, workers: int = 2, images: int = 32, device: str = "cpu",
              onnx_dir: Path | None = None, peak_seconds: float = 1.0, model_seconds: float = 3.0,
              profile: bool = False, check_cosine: bool = True, preprocess: str = "resize-center-crop",
              decode_schedule: str = "auto", log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """One bench run. `batch_size` may be a list: the model is then timed at
    each size (`sweep`), and the top-level fields, decode and end to end
    belong to the last one. `decode_schedule` (auto | overlap | turns | adaptive): how the
    end-to-end run's decode workers share the CPU with the model (auto: as a
    scan decides, Plan.decode_schedule)."""
    from .backbone import create_backbone, resolve_device
    from .preprocess import make_spec

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    if decode_schedule not in SCHEDULES:
        raise ValueError(f"decode schedule must be one of {', '.join(SCHEDULES)}")
    if runtime == "torch" and dtype == "int8":
        raise ValueError("int8 runs through ONNX Runtime: use --runtime onnx --dtype int8")
    if runtime == "onnx" and dtype == "bfloat16":
        raise ValueError("ONNX Runtime's CPU provider has no bf16 kernels: use --dtype float32/int8 (CPU) or "
                         "float16 (CUDA) with --runtime onnx")
    sizes = [int(batch_size)] if isinstance(batch_size, int) else [int(b) for b in batch_size]
    if not sizes or min(sizes) < 1:
        raise ValueError("batch sizes must be positive integers")
    batch_size = sizes[-1]
    paths = image_files(folder, images)
    if folder and not paths:
        # A FOLDER with no image in it (an unmounted share, a wrong path) was timed as no FOLDER at all: the
        # model on random pixels, decode and end to end null, exit 0, which a script read as a measurement.
        raise ValueError(f"no images in {folder}: bench times decode and end to end on the images of FOLDER; "
                         "leave FOLDER out to time the model alone, on random pixels")
    dev = resolve_device(device)
    res: dict[str, Any] = {"backbone": backbone_spec.describe(), "runtime": runtime, "dtype": dtype,
                           "batch_size": batch_size, "workers": workers, "device": dev, "machine": machine_facts()}
    import torch

    from .commands.common import quiet_torch_threads

    quiet_torch_threads()
    res["threads"] = torch.get_num_threads()
    if dev == "cuda":
        res["machine"]["gpu"] = torch.cuda.get_device_name(0)
        res["machine"]["torch"] = torch.__version__
        res["machine"]["cuda"] = torch.version.cuda
    t = time.perf_counter()
    bb = create_backbone(backbone_spec, device=dev, dtype="float32")
    res["backbone_build_s"] = round(time.perf_counter() - t, 2)
    # before the peak is measured: a batch that cannot fit is a usage error, not seconds later
    check_batch_fits(bb.model_cfg, max(sizes), dev, dtype)
    log("measuring matmul peak")
    from . import backbone as _backbone

    # Without native bf16 the CPU emulates it at a fraction of a GFLOP/s: measuring that takes minutes and
    # says nothing a user can act on, so the bf16 peak is only measured where bf16 is real.
    res["native_bf16"] = dev == "cuda" or _backbone.native_bf16_cpu()
    if dev == "cuda":
        peak_dtypes = ("float32", "bfloat16", "float16")
    else:
        peak_dtypes = ("float32", "bfloat16") if res["native_bf16"] else ("float32",)
    res["peak_gflops"] = {dt: round(matmul_peak_gflops(dt, seconds=peak_seconds, device=dev), 1)
                          for dt in peak_dtypes}
    res["fingerprint"] = bb.fingerprint
    # torch's own count is the number used; the ViT formula stays as a cross-check
    counted = torch_gflops(bb)
    gf = counted["gflops_per_image"]
    res["model_gflops_per_image"] = round(gf, 3)
    res["model_gflops_source"] = "torch.utils.flop_counter"
    res["model_gflops_analytic"] = round(vit_gflops(bb.model_cfg), 3)
    res["model_gflops_by_op"] = {k: round(v, 4) for k, v in counted["by_op"].items()}
    spec = make_spec(preprocess, bb.image_size, bb.mean, bb.std)
    res["preprocessing"] = spec["mode"]

    res["images"] = len(paths)
    if paths:
        log(f"decoding {len(paths)} images")
        # The scan's decode: full size for every preprocessing (Plan.build drafts no JPEG). The no_draft and
        # decode_draft keys stay for readers of older results, where decode_images_per_s was the draft decode.
        dec = time_decode(paths, spec, workers, draft=False)
        res["decode_images_per_s"] = res["decode_images_per_s_no_draft"] = _r(dec["images_per_s"])
        res["decode_draft"] = None
        px = decoded_pixels(paths, spec, min(len(paths), max(max(sizes), 4)))
        if not len(px):
            # An empty batch reached the model as "cannot reshape tensor of 0 elements" (exit 2, no reason).
            raise ValueError(f"none of the first {min(len(paths), max(max(sizes), 4))} images in {folder} could "
                             "be decoded; bench times the model on decoded photos: give a folder of images")
    else:
        res["decode_images_per_s"] = res["decode_images_per_s_no_draft"] = None
        # float32 as drawn: drawing float64 and casting held three times the batch at once
        px = np.random.default_rng(0).standard_normal((max(sizes), 3, bb.image_size, bb.image_size),
                                                      dtype=np.float32)
    if check_cosine and runtime == "torch" and dtype in ("bfloat16", "float16"):
        log(f"embedding cosine {dtype} vs float32")
        res[f"{'bf16' if dtype == 'bfloat16' else 'fp16'}_cosine_min"] = round(embed_cosine(bb, px[:4], dtype), 6)

    basis = {"float32": "float32", "bfloat16": "bfloat16", "float16": "bfloat16", "int8": "bfloat16"}[dtype]
    if dtype == "float16" and "float16" in res["peak_gflops"]:
        basis = "float16"
    if basis not in res["peak_gflops"]:  # emulated bf16 cannot beat the float32 rate: that is the limit
        basis = "float32"
    peak = res["peak_gflops"][basis]
    limit = peak / gf if gf else None
    with tempfile.TemporaryDirectory() as td:
        if runtime == "torch":
            runner = TorchRunner(bb, dtype)
        else:
            runner = make_onnx_runner(bb, dtype, onnx_dir, device, Path(td), log)
        res["provider"] = runner.provider
        if getattr(runner, "int8", None):
            res["int8"] = runner.int8
        sweep = []
        for bs in sizes:
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            log(f"timing the model ({runtime}, {dtype}, batch {bs})")
            m = time_model(runner, px, bs, min_seconds=model_seconds)
            row = {"batch_size": bs, "model_images_per_s": _r(m["images_per_s"]),
                   "model_images_per_s_best": _r(m["images_per_s_best"]), "model_batches": m["batches"],
                   "model_efficiency": _r(m["images_per_s"] / limit, 4) if limit else None}
            if dev == "cuda" and runtime == "torch":
                d = time_model_on_device(bb, px, bs, dtype, min_seconds=min(model_seconds, 2.0))
                row["model_images_per_s_on_device"] = _r(d["images_per_s"])
                row["model_efficiency_on_device"] = _r(d["images_per_s"] / limit, 4) if limit else None
                row["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
            sweep.append(row)
        last = sweep[-1]
        res["model_images_per_s"] = last["model_images_per_s"]
        res["model_images_per_s_best"] = last["model_images_per_s_best"]
        res["model_batches"] = last["model_batches"]
        for k in ("model_images_per_s_on_device", "model_efficiency_on_device"):
            if k in last:
                res[k] = last[k]
        if len(sizes) > 1:
            res["sweep"] = sweep
        if profile and runtime == "torch":
            res["profile"] = torch_profile(runner, np.ascontiguousarray(px[:batch_size]))
        if paths:
            log("end to end through the scan pipeline")
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            e = time_end_to_end(paths, runner, spec, batch_size, workers, SCHEDULES[decode_schedule])
            res["end_to_end_images_per_s"] = _r(e["images_per_s"])
            res["end_to_end"] = {k: _r(v) if isinstance(v, float) else v for k, v in e.items()}
        else:
            res["end_to_end_images_per_s"] = None
    res["limit_basis"] = f"{basis} matmul peak"
    res["limit_images_per_s"] = _r(limit)
    e2e = res.get("end_to_end_images_per_s")
    res["efficiency"] = _r(e2e / limit, 4) if e2e and limit else None
    res["model_efficiency"] = _r(res["model_images_per_s"] / limit, 4) if limit else None
    res["end_to_end_vs_model"] = _r(e2e / res["model_images_per_s"], 4) if e2e else None
    res["peak_memory_mb"] = round(peak_rss_mb(), 1)
    if dev == "cuda":
        # the largest over the whole run (the sweep rows hold each batch size's own)
        res["peak_gpu_memory_mb"] = max([r.get("peak_gpu_memory_mb") or 0.0 for r in sweep]
                                        + [round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)])
    res["machine"]["loadavg_1m_end"] = machine_facts().get("loadavg_1m")
    return res


def _r(x, nd: int = 3):
    return None if x is None else round(float(x), nd)
