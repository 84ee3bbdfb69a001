"""Decode workers beside the model, or taking turns with it: end-to-end against model-only.

One process, one backbone; each round times the model alone on pre-decoded
batches (as `aiidetect bench` does), then the scan pipeline end to end (decode
workers with the metadata detector and its watermark check, a linear head,
fusion, records) once per schedule, in turn, so drifting machine load hits every
schedule alike. Reports each schedule's images/s, the model's share of its time
(model_s), and end-to-end/model with the model-only rate of the same round.

    python benchmarks/decode_schedule.py /work/shared/data/dev/real --backbone ViT-B-16 --rounds 5
    python benchmarks/decode_schedule.py DIR --runtime onnx --dtype int8 --rounds 5
    python benchmarks/decode_schedule.py DIR --json benchmarks/results/decode_schedule-B16.json
    python benchmarks/decode_schedule.py DIR --schedules turns --watermark auto,never   # what the watermark check costs

turns-late: taking turns as the scan did before it released the workers right
after the model pass (the next batch then started only once fusion and records
of this one were done), to measure what the early release gains.

Two schedules that aiidetect does not use, for comparison (Linux): overlap-idle
and overlap-nice19 overlap with the decode threads at SCHED_IDLE or nice 19.
Faster than turns on 2 cores, but a lowest-priority worker starves whenever
another process keeps the cores busy.

overlap: the next batch decodes while the model runs (what a model on a GPU
wants); turns: the workers wait while the model runs; adaptive: both are timed
on the scan and the faster kept (pixels.TurnPolicy: what `aiidetect scan` does
when a CPU model uses every core, Plan.decode_schedule).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path


def machine() -> dict:
    from aiidetect import cpuinfo  # the hardware's flags, not those AIIDETECT_CPU_WITHOUT hides

    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")
             if f in cpuinfo.hardware_flags()]
    return {"cpu": cpuinfo.model(), "flags": shown, "cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)}


def _low_priority(kind: str) -> None:
    """Thread initializer: this decode thread at the lowest priority (Linux: per thread)."""
    import threading

    if kind == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def low_priority_pool(kind: str):
    """pixels.ThreadPoolExecutor whose threads start at low priority."""
    import functools
    from concurrent.futures import ThreadPoolExecutor

    class Pool(ThreadPoolExecutor):
        def __init__(self, *args, **kw):
            super().__init__(*args, initializer=functools.partial(_low_priority, kind), **kw)

    return Pool


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--backbone", default="ViT-B-16")
    ap.add_argument("--backbone-config", help="a model config instead (a path, or a shipped one such as tiny-vit)")
    ap.add_argument("--model-seconds", type=float, default=3.0, help="time the model alone this long per round")
    ap.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    ap.add_argument("--dtype", default="bfloat16", help="torch: float32 | bfloat16; onnx: float32 | int8")
    ap.add_argument("--images", type=int, default=93)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--schedules", default="overlap,turns,adaptive")
    ap.add_argument("--watermark", default="auto", help="the metadata detector's --watermark, comma-separated to "
                                                        "time several (auto,never: what the check costs)")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args(argv)
    base = [s.strip() for s in a.schedules.split(",") if s.strip()]
    for sch in base:
        if sch not in ("overlap", "turns", "adaptive", "turns-late", "overlap-idle", "overlap-nice19"):
            ap.error(f"unknown schedule {sch!r}")
    marks = [w.strip() for w in a.watermark.split(",") if w.strip()]
    if any(w not in ("auto", "always", "never") for w in marks):
        ap.error("--watermark takes auto, always, never")
    # "turns" with the default watermark setting; "turns/wm-never" etc. for the others
    schedules = [sch if w == marks[0] else f"{sch}/wm-{w}" for w in marks for sch in base]

    from aiidetect import bench, pixels
    from aiidetect.api import use_all_cores
    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.pipeline import Pipeline
    from aiidetect.preprocess import make_spec

    use_all_cores()
    bb = create_backbone(BackboneSpec.from_options(a.backbone, "none", config=a.backbone_config), dtype="float32")
    spec = make_spec("resize-center-crop", bb.image_size, bb.mean, bb.std)
    paths = bench.image_files(a.folder, a.images)
    px = bench.decoded_pixels(paths, spec, a.batch_size)
    plain_pool = pixels.ThreadPoolExecutor
    complete = Pipeline.complete
    with tempfile.TemporaryDirectory() as td:
        if a.runtime == "torch":
            runner = bench.TorchRunner(bb, a.dtype)
        else:
            runner = bench.make_onnx_runner(bb, a.dtype, None, "cpu", Path(td), lambda s: None)
        rows = []
        for r in range(a.rounds):
            m = bench.time_model(runner, px, a.batch_size, min_seconds=a.model_seconds)
            row = {"round": r, "model_images_per_s": round(m["images_per_s"], 3)}
            for sch in schedules:
                kind, _, wm = sch.partition("/wm-")
                low = kind.split("-", 1)[1] if kind.startswith("overlap-") else None
                pixels.ThreadPoolExecutor = low_priority_pool(low) if low else plain_pool
                if kind == "turns-late":   # the scan's complete() without its early release
                    Pipeline.complete = lambda self, samples, model_done=None: complete(self, samples)
                try:
                    e = bench.time_end_to_end(paths, runner, spec, a.batch_size, a.workers,
                                              bench.SCHEDULES["overlap" if low else kind.split("-")[0]],
                                              wm or marks[0])
                finally:
                    pixels.ThreadPoolExecutor = plain_pool
                    Pipeline.complete = complete
                row[sch] = {"images_per_s": round(e["images_per_s"], 3), "seconds": round(e["seconds"], 3),
                            "model_s": round(e["model_seconds"], 3),
                            "vs_model": round(e["images_per_s"] / m["images_per_s"], 4),
                            "decode_schedule": e["decode_schedule"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    res = {"backbone": a.backbone_config or a.backbone, "runtime": a.runtime, "dtype": a.dtype, "images": len(paths),
           "watermark": marks[0],
           "batch_size": a.batch_size, "workers": a.workers, "rounds": rows, "machine": machine(),
           "median": {"model_images_per_s": statistics.median(r["model_images_per_s"] for r in rows)}}
    for sch in schedules:
        res["median"][sch] = {"images_per_s": statistics.median(r[sch]["images_per_s"] for r in rows),
                              "vs_model": statistics.median(r[sch]["vs_model"] for r in rows)}
    res["machine"]["load_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"median": res["median"], "machine": res["machine"]}, indent=1))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
