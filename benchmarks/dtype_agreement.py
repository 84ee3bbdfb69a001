"""Agreement of two scans of the same files (e.g. --dtype bfloat16 against float32).

    aiidetect scan DATA --format jsonl --no-cache --dtype float32  > a.jsonl
    aiidetect scan DATA --format jsonl --no-cache --dtype bfloat16 > b.jsonl
    python benchmarks/dtype_agreement.py a.jsonl b.jsonl --label torch-bf16 > result.json

Per detector: max and mean |score difference|, and the share of files whose
decision (p_ai >= 0.5) changes; for the fused result: the share of files whose
verdict changes and the max |p_ai difference|. Files that failed in either scan
are left out (and counted).
"""
from __future__ import annotations

import argparse
import json
import sys


def load(path: str) -> dict[str, dict]:
    with open(path, encoding="utf-8") as f:
        return {r["file"]: r for r in (json.loads(line) for line in f if line.strip())}


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict:
    files = [f for f in a if f in b and a[f]["verdict"] != "error" and b[f]["verdict"] != "error"]
    out: dict = {"files": len(files), "left_out": len(set(a) | set(b)) - len(files), "detectors": {}}
    names = sorted({n for f in files for n in a[f]["detectors"]})
    for n in names:
        diffs, changed, both = [], 0, 0
        for f in files:
            ra, rb = a[f]["detectors"].get(n, {}), b[f]["detectors"].get(n, {})
            if ra.get("status") != "ok" or rb.get("status") != "ok" or ra.get("p_ai") is None or rb.get("p_ai") is None:
                continue
            both += 1
            if ra.get("score") is not None and rb.get("score") is not None:
                diffs.append(abs(ra["score"] - rb["score"]))
            changed += (ra["p_ai"] >= 0.5) != (rb["p_ai"] >= 0.5)
        if both:
            out["detectors"][n] = {"files": both, "score_max_abs_diff": max(diffs) if diffs else None,
                                   "score_mean_abs_diff": sum(diffs) / len(diffs) if diffs else None,
                                   "decision_changed": changed, "decision_changed_share": changed / both}
    pa = [abs(a[f]["p_ai"] - b[f]["p_ai"]) for f in files if a[f]["p_ai"] is not None and b[f]["p_ai"] is not None]
    vchanged = sum(a[f]["verdict"] != b[f]["verdict"] for f in files)
    out["fused"] = {"p_ai_max_abs_diff": max(pa) if pa else None, "verdict_changed": vchanged,
                    "verdict_changed_share": vchanged / len(files) if files else None}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("variant")
    ap.add_argument("--label", default="variant")
    args = ap.parse_args(argv)
    res = compare(load(args.reference), load(args.variant))
    res["label"] = args.label
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
