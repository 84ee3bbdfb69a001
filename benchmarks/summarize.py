"""Print the benchmark JSONs in benchmarks/results as a markdown table."""
import glob
import json
import sys

KEYS = ["runtime", "dtype", "batch_size", "decode_images_per_s", "decode_images_per_s_no_draft", "model_images_per_s",
        "end_to_end_images_per_s", "limit_images_per_s", "efficiency", "model_efficiency", "end_to_end_vs_model"]
d = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results"
print("| backbone | " + " | ".join(KEYS) + " | peak fp32/bf16 GFLOP/s | cosine | RSS MB | load 1m |")
print("|" + "---|" * (len(KEYS) + 5))
for f in sorted(glob.glob(f"{d}/*.json")):
    try:
        r = json.load(open(f))
    except ValueError:
        continue
    cos = r.get("bf16_cosine_min", r.get("fp16_cosine_min", ""))
    pk = r["peak_gflops"]
    m = r["machine"]
    print(f"| {r['backbone'].split(' ')[0]} | " + " | ".join(str(r.get(k)) for k in KEYS)
          + f" | {pk['float32']:.0f}/{pk['bfloat16']:.0f} | {cos} | {r['peak_memory_mb']:.0f} | "
            f"{m.get('loadavg_1m')}-{m.get('loadavg_1m_end')} |")
