"""Whether a file's backbone embedding depends on its batch, and what keeping it independent costs.

Why: a photo scanned alone (or in a scan's last short batch, or with --batch-size 1) must get the
p_ai it gets among 16 others (docs/performance.md "Same bytes, same numbers"). The projection after
the pool runs one row at a time (backbone.rowwise_matmul); this times the encoder with that and with
the one batched product it replaced, and says how far each moves an embedding from its batch-1 value.

    python benchmarks/batch_invariance.py --config tiny-vit --batch-size 16 --rounds 5
    python benchmarks/batch_invariance.py --model ViT-B-16 --batch-size 16 --dtype bfloat16
    python benchmarks/batch_invariance.py --onnx EXPORT/backbone.int8.onnx --threads 2   # an exported graph:
        # batched against one image at a time, as onnx_runtime.Session runs a dynamic int8 graph (per_image)
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="a shipped random-init config (tiny-vit, small-vit)")
    ap.add_argument("--model", default="ViT-B-16", help="an open_clip model, random init (without --config)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch / ONNX Runtime threads (0: their default)")
    ap.add_argument("--onnx", help="an exported graph (.onnx) to time batched and one image at a time instead")
    a = ap.parse_args()
    if a.onnx:
        print(json.dumps(onnx_graph(a.onnx, a.batch_size, a.rounds, a.threads), indent=1))
        return

    import numpy as np
    import torch

    import aiidetect.backbone as bbm

    if a.threads:
        torch.set_num_threads(a.threads)
    spec = (bbm.BackboneSpec.from_options(config=a.config) if a.config
            else bbm.BackboneSpec.from_options(model=a.model, pretrained="none"))
    bb = bbm.create_backbone(spec, "cpu", a.dtype)
    s = bb.image_size
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((a.batch_size, 3, s, s)).astype(np.float32))
    x = x.to(getattr(torch, a.dtype))
    real_tracing = bbm._tracing
    out = {"backbone": spec.describe(), "dtype": a.dtype, "batch_size": a.batch_size, "threads": torch.get_num_threads()}
    ways = {"rowwise": real_tracing, "batched": lambda: True}   # the batched product is what an exporter gets
    times: dict[str, list[float]] = {n: [] for n in ways}
    with torch.inference_mode():
        for name, switch in ways.items():
            bbm._tracing = switch
            alone = torch.cat([bb.encode(x[i:i + 1])["embed"].float() for i in range(a.batch_size)])
            batched = bb.encode(x)["embed"].float()   # also the warm-up
            out[name] = {"max_abs_diff_vs_alone": float((batched - alone).abs().max()),
                         "identical_to_alone": bool(torch.equal(batched, alone))}
        for _ in range(a.rounds):   # interleaved: a shared machine's load drifts between rounds
            for name, switch in ways.items():
                bbm._tracing = switch
                t = time.perf_counter()
                bb.encode(x)
                times[name].append(time.perf_counter() - t)
        # the projection alone, the only product that changed: the encoder's own noise hides it
        pooled = torch.randn(a.batch_size, bb.width).to(x.dtype)
        proj = bb.visual.proj
        for name, switch in ways.items():
            bbm._tracing = switch
            t = time.perf_counter()
            for _ in range(200):
                bbm.rowwise_matmul(pooled, proj)
            out[name]["projection_ms_per_batch"] = round((time.perf_counter() - t) / 200 * 1e3, 4)
    bbm._tracing = real_tracing
    for name in ways:
        out[name]["encoder_median_s_per_batch"] = round(sorted(times[name])[len(times[name]) // 2], 4)
    out["projection_cost_share_of_encoder"] = round(
        (out["rowwise"]["projection_ms_per_batch"] - out["batched"]["projection_ms_per_batch"]) / 1e3
        / out["batched"]["encoder_median_s_per_batch"], 6)
    print(json.dumps(out, indent=1))


def onnx_graph(path: str, batch_size: int, rounds: int, threads: int) -> dict:
    """A dynamic int8 graph takes each activation's scale from its whole input, so the scan runs it one image at
    a time (onnx_runtime.Session, per_image): how far batching moves a row, and what running alone costs."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    side = inp.shape[-1] if isinstance(inp.shape[-1], int) else 224
    x = np.random.default_rng(0).standard_normal((batch_size, 3, side, side)).astype(np.float32)
    ways = {"batched": lambda: sess.run(None, {inp.name: x})[0],
            "one_at_a_time": lambda: np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0]
                                                     for i in range(batch_size)])}
    got = {n: f() for n, f in ways.items()}   # also the warm-up
    times: dict[str, list[float]] = {n: [] for n in ways}
    for _ in range(rounds):   # interleaved: a shared machine's load drifts between rounds
        for n, f in ways.items():
            t = time.perf_counter()
            f()
            times[n].append(time.perf_counter() - t)
    a, b = got["batched"].astype(np.float64), got["one_at_a_time"].astype(np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return {"graph": path, "batch_size": batch_size, "threads": threads or None,
            "identical": bool(np.array_equal(a, b)), "max_abs_diff": float(np.abs(a - b).max()),
            "min_cosine": float(cos.min()),
            **{f"{n}_median_s_per_batch": round(sorted(v)[len(v) // 2], 4) for n, v in times.items()}}


if __name__ == "__main__":
    main()
