"""int8 on this CPU: are ONNX Runtime's kernels exact, and what do 7-bit weights
and the exact-kernel option cost?

1. The probe (aiidetect.onnx_export.int8_probe): a one-MatMul graph whose byte
   pairs saturate a kernel that sums them in 16 bits (x86 without VNNI). Run for
   real with 8-bit weights (plain and with session.x64quantprecision) and 7-bit
   weights, and emulated in numpy as a saturating kernel would compute it.
2. The encoder (random init unless given weights): exported once to ONNX fp32,
   quantized to int8 with 8-bit and with 7-bit weights, each run with and
   without session.x64quantprecision on the same pixels, configurations
   alternated within each round; images/s (median round) and the embedding's
   relative error against the fp32 graph.

    python benchmarks/int8_kernels.py /work/shared/data/dev/real --backbone ViT-B-16 --limit 32 --rounds 3 \\
        --json benchmarks/results/int8_kernels-ViT-B-16.json
    AIIDETECT_CPU_WITHOUT=avx512_vnni,avx_vnni,amx_int8 python benchmarks/int8_kernels.py ...   # the choices made
                                                                     # for a CPU without VNNI (kernels unchanged)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="images for the encoder part")
    ap.add_argument("--backbone", default="ViT-B-16")
    ap.add_argument("--backbone-config", default=None, help="a shipped config (tiny-vit) instead of --backbone")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--probe-only", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    import onnxruntime as ort

    from aiidetect import cpuinfo
    from aiidetect.bench import machine_facts
    from aiidetect.onnx_export.int8_probe import emulate_saturating, probe

    # machine_facts lists an AIIDETECT_CPU_WITHOUT mask itself (aiidetect_cpu_without)
    res: dict = {"machine": {**machine_facts(), "int8_vnni": cpuinfo.int8_vnni(),
                             "int8_pairs_saturate": cpuinfo.int8_pairs_saturate()},
                 "onnxruntime": ort.__version__,
                 "probe": [probe(8, False), probe(8, True), probe(7, False), emulate_saturating(8),
                           emulate_saturating(7)]}
    for p in res["probe"]:
        how = p.get("emulated") or ("exact kernels" if p["exact_kernels"] else "default kernels")
        print(f"probe {p['weight_bits']}-bit, {how}: worst relative error {p['max_rel_error_top_weights']:.4f} "
              f"({'exact' if p['exact'] else 'WRONG'})", file=sys.stderr)
    if not a.probe_only:
        res["encoder"] = encoder(a)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0


def encoder(a) -> dict:
    import onnxruntime as ort

    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.onnx_export import export_onnx, image_paths, load_pixels
    from aiidetect.onnx_export.quantize import to_int8
    from aiidetect.preprocess import make_spec

    spec = BackboneSpec.from_options(model=a.backbone, pretrained="none", config=a.backbone_config)
    bb = create_backbone(spec, device="cpu", dtype="float32")
    px, _ = load_pixels(image_paths(a.folder, a.limit), make_spec("resize-center-crop", bb.image_size))
    with tempfile.TemporaryDirectory() as td:
        side = export_onnx(bb, Path(td) / "fp32", [], variant="fp32")
        fp32 = Path(td) / "fp32" / side["graphs"][0]["file"]
        graphs = {"fp32": fp32}
        for bits in (8, 7):
            graphs[f"int8-{bits}bit"] = Path(td) / f"int8-{bits}.onnx"
            to_int8(fp32, graphs[f"int8-{bits}bit"], weight_bits=bits)
        configs = {"fp32": (graphs["fp32"], False)}
        for bits in (8, 7):
            configs[f"int8 {bits}-bit"] = (graphs[f"int8-{bits}bit"], False)
            configs[f"int8 {bits}-bit + exact kernels"] = (graphs[f"int8-{bits}bit"], True)
        sessions = {}
        for name, (path, exact) in configs.items():
            so = ort.SessionOptions()
            so.log_severity_level = 3
            if exact:
                so.add_session_config_entry("session.x64quantprecision", "1")
            sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        seconds = {k: [] for k in sessions}
        emb = {}
        for _ in range(a.rounds):
            for name, s in sessions.items():
                t = time.perf_counter()
                out = [s.run(["embed"], {"pixels": px[i:i + a.batch_size]})[0] for i in range(0, len(px), a.batch_size)]
                seconds[name].append(time.perf_counter() - t)
                emb[name] = np.concatenate(out)
    ref = emb["fp32"]
    rows = []
    for name in sessions:
        e = emb[name]
        cos = (e * ref).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(ref, axis=1)
        med = statistics.median(seconds[name])
        rows.append({"config": name, "images_per_s": round(len(px) / med, 2), "rounds_s": [round(x, 3) for x in seconds[name]],
                     "embed_rel_error": round(float(np.linalg.norm(e - ref) / np.linalg.norm(ref)), 5),
                     "embed_cosine_min": round(float(cos.min()), 6)})
        print(f"{name:32s} {rows[-1]['images_per_s']:7.2f} img/s  rel err {rows[-1]['embed_rel_error']:.4f}  "
              f"min cos {rows[-1]['embed_cosine_min']:.5f}", file=sys.stderr)
    return {"backbone": spec.describe(), "images": len(px), "batch_size": a.batch_size, "rounds": a.rounds,
            "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
