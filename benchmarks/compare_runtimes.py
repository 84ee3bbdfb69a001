"""Model-only images/s of several runtimes/dtypes, interleaved in ONE process
on the same batch, so that load from other processes hits all of them alike
(ratios from this script are more trustworthy than absolute numbers on a
shared machine).

    python benchmarks/compare_runtimes.py --backbone ViT-B-16 --batch-size 8 --rounds 3 [--autocast]

Prints one JSON object: per runner the median seconds per batch and images/s,
plus the bf16-vs-fp32 embedding cosine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="ViT-B-16")
    ap.add_argument("--config", default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--autocast", action="store_true", help="also time torch.autocast(bfloat16) on the fp32 model")
    ap.add_argument("--no-onnx", action="store_true")
    a = ap.parse_args()

    import torch

    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.bench import machine_facts, vit_gflops
    from aiidetect.onnx_export import export_onnx, read_sidecar
    from aiidetect.onnx_runtime import load_session

    torch.set_num_threads(torch.get_num_threads())
    spec = BackboneSpec.from_options(model=a.backbone, pretrained="none", config=a.config)
    fp32 = create_backbone(spec)
    bf16 = create_backbone(spec, dtype="bfloat16")
    x = torch.randn(a.batch_size, 3, fp32.image_size, fp32.image_size)
    runners = {}

    def torch_runner(bb, dt, autocast=False):
        def run():
            with torch.inference_mode():
                if autocast:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return bb.encode(x)["embed"].float()
                return bb.encode(x.to(getattr(torch, dt)))["embed"].float()
        return run

    runners["torch-float32"] = torch_runner(fp32, "float32")
    runners["torch-bfloat16"] = torch_runner(bf16, "bfloat16")
    if a.autocast:
        runners["torch-autocast-bf16"] = torch_runner(fp32, "float32", autocast=True)
    td = tempfile.mkdtemp(prefix="cmp-onnx-")
    export_s = {}
    if not a.no_onnx:
        for variant in ("fp32", "int8"):
            t = time.perf_counter()
            export_onnx(fp32, Path(td) / variant, [], variant=variant)
            export_s[variant] = round(time.perf_counter() - t, 1)
            g = read_sidecar(Path(td) / variant)["graphs"][0]
            sess = load_session(Path(td) / variant / g["file"], device="cpu")
            xn = x.numpy()
            runners[f"onnx-{variant}"] = (lambda s=sess: torch.from_numpy(s.run(xn)["embed"]))
    ref = runners["torch-float32"]()
    out = {"backbone": spec.describe(), "batch_size": a.batch_size, "threads": torch.get_num_threads(),
           "model_gflops_per_image": round(vit_gflops(fp32.model_cfg), 2), "export_seconds": export_s,
           "machine": machine_facts(), "runners": {}}
    times = {k: [] for k in runners}
    cos = {}
    for k, fn in runners.items():  # warm-up + agreement
        e = fn()
        cos[k] = float(torch.nn.functional.cosine_similarity(ref.double(), e.double(), dim=1).min())
    for _ in range(a.rounds):
        for k, fn in runners.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    for k, ts in times.items():
        med = float(np.median(ts))
        out["runners"][k] = {"seconds_per_batch": round(med, 3), "images_per_s": round(a.batch_size / med, 3),
                             "embed_cosine_min_vs_fp32": round(cos[k], 6)}
    out["machine"]["loadavg_1m_end"] = machine_facts().get("loadavg_1m")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
