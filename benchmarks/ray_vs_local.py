#!/usr/bin/env python
"""The same scan with --engine local and --engine ray, interleaved, side by side.

    python benchmarks/ray_vs_local.py /work/shared/data/dev --rounds 2 -- -d metadata,linear --backbone-config tiny-vit

Everything after `--` is passed to both scans (add --weights-dir for heads). Each round runs local then
ray as separate `python -m aiidetect scan ... -f jsonl --no-cache` processes (wall clock, start-up
included), checks that both printed the same records, and reports files/s and the ray/local ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def run(paths, extra, engine):
    cmd = [sys.executable, "-m", "aiidetect", "scan", *paths, "-f", "jsonl", "--no-cache", "--engine", engine, *extra]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if p.returncode not in (0, 1):
        raise SystemExit(f"{engine} failed ({p.returncode}): {p.stderr[-2000:]}")
    recs = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
    return secs, recs


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    rows = []
    for r in range(a.rounds):
        ls, lrec = run(a.paths, extra, "local")
        rs, rrec = run(a.paths, extra, "ray")
        same = lrec == rrec
        rows.append({"round": r + 1, "files": len(lrec), "local_s": round(ls, 2), "ray_s": round(rs, 2),
                     "local_files_s": round(len(lrec) / ls, 2), "ray_files_s": round(len(rrec) / rs, 2),
                     "ray_over_local": round(rs / ls, 2), "identical_records": same})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    print("| round | files | local s | ray s | local files/s | ray files/s | ray/local time | identical |")
    print("|---|---|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['round']} | {x['files']} | {x['local_s']} | {x['ray_s']} | {x['local_files_s']} | "
              f"{x['ray_files_s']} | {x['ray_over_local']} | {x['identical_records']} |")


if __name__ == "__main__":
    main()
