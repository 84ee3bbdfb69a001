"""Markdown tables for docs/performance.md from benchmarks/results/*.json."""
import glob
import json
import sys

D = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results"


def load(f):
    try:
        return json.load(open(f))
    except (OSError, ValueError):
        return None


def series():
    rows = ["| backbone | runtime | dtype | decode img/s (draft / full) | model img/s | end-to-end img/s | e2e/model | "
            "peak fp32/bf16 GFLOP/s | limit img/s | efficiency (e2e/limit) | bf16 cosine | RSS MB | load 1m start-end |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(glob.glob(f"{D}/ViT-*.json")):
        r = load(f)
        if not r:
            continue
        pk, m = r["peak_gflops"], r["machine"]
        rows.append(f"| {r['backbone'].split(' ')[0]} | {r['runtime']} | {r['dtype']} | {r['decode_images_per_s']} / "
                    f"{r['decode_images_per_s_no_draft']} | {r['model_images_per_s']} | {r['end_to_end_images_per_s']} | "
                    f"{r['end_to_end_vs_model']} | {pk['float32']:.0f} / {pk['bfloat16']:.0f} | {r['limit_images_per_s']} | "
                    f"{r['efficiency']:.0%} | {r.get('bf16_cosine_min', '')} | {r['peak_memory_mb']:.0f} | "
                    f"{m.get('loadavg_1m')}–{m.get('loadavg_1m_end')} |")
    return "\n".join(rows)


def compare():
    out = []
    for f in sorted(glob.glob(f"{D}/compare-*.json")):
        r = load(f)
        if not r:
            continue
        base = r["runners"]["torch-float32"]["images_per_s"]
        out.append(f"{r['backbone']}, batch {r['batch_size']}, {r['threads']} threads, load "
                   f"{r['machine'].get('loadavg_1m')}–{r['machine'].get('loadavg_1m_end')}; ONNX export took "
                   f"{r['export_seconds']} s.\n")
        out.append("| runner | s/batch (median) | img/s | × torch fp32 | embed cosine min vs fp32 |")
        out.append("|---|---|---|---|---|")
        for k, v in r["runners"].items():
            out.append(f"| {k} | {v['seconds_per_batch']} | {v['images_per_s']} | {v['images_per_s'] / base:.2f} | "
                       f"{v['embed_cosine_min_vs_fp32']} |")
    return "\n".join(out)


def agreement():
    rows = ["| variant | provider | output | max abs diff | mean abs diff | verdict changed (files) |",
            "|---|---|---|---|---|---|"]
    for f in sorted(glob.glob(f"{D}/agreement-*.json")):
        r = load(f)
        if not r:
            continue
        tag = f.rsplit("agreement-", 1)[1][:-5]
        if "detectors" in r:  # two scans compared by benchmarks/dtype_agreement.py
            for name, v in r["detectors"].items():
                if v["score_max_abs_diff"] is None or name == "metadata":
                    continue
                rows.append(f"| {tag} | torch cpu | {name}/score | {v['score_max_abs_diff']:.3g} | "
                            f"{v['score_mean_abs_diff']:.3g} | {v['decision_changed_share']:.2%} "
                            f"({v['decision_changed']}/{v['files']}) |")
            fu = r["fused"]
            rows.append(f"| {tag} | torch cpu | fused p_ai / verdict | {fu['p_ai_max_abs_diff']:.3g} | | "
                        f"{fu['verdict_changed_share']:.2%} ({fu['verdict_changed']}/{r['files']}) |")
            continue
        for g in r["graphs"]:
            a = g.get("agreement") or {}
            heads = a.get("heads", {})
            for o, v in a.get("outputs", {}).items():
                h = o.split("/")[0]
                ch = heads.get(h)
                vc = f"{ch['verdict_changed_share']:.2%} ({ch['verdict_changed']}/{ch['files']})" \
                    if ch and o.endswith(("logit", "loglik")) else ""
                rows.append(f"| {tag} | {a.get('provider', '')} | {o} | {v['max_abs_diff']:.3g} | "
                            f"{v['mean_abs_diff']:.3g} | {vc} |")
            rows.append(f"| {tag} | | embed cosine min | {a.get('embed_cosine_min', float('nan')):.6f} | | |")
    return "\n".join(rows)


if __name__ == "__main__":
    print("## SERIES\n" + series() + "\n\n## COMPARE\n" + compare() + "\n\n## AGREEMENT\n" + agreement())
