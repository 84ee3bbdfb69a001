"""Wall time of the default scan on a machine without CLIP weights against `scan -d metadata`,
one file, as a user runs them (a fresh `aiidetect` process each), alternating the two so
load from other processes hits both alike.

    python benchmarks/light_scan.py FILE [--rounds 10]

Both runs use an empty CLIP weights folder and --no-cache. Prints one JSON object:
per command the median and min seconds, the ratio of medians, and whether torch was
imported by the default scan (checked once with -X importtime).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="aiidetect-light-")
    env = dict(os.environ, AIIDETECT_CLIP_CACHE=os.path.join(tmp, "clip"), HF_HOME=os.path.join(tmp, "hf"),
               AIIDETECT_CACHE=os.path.join(tmp, "cache"))
    base = [sys.executable, "-m", "aiidetect", "scan", a.file, "--no-cache", "-q", "--format", "jsonl"]
    cmds = {"default": base, "metadata": base + ["-d", "metadata"]}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(a.rounds):
        for name, cmd in cmds.items():
            t = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            times[name].append(time.perf_counter() - t)
            if r.returncode != 0:
                raise SystemExit(f"{name} failed: {r.stderr}")
    imp = subprocess.run([sys.executable, "-X", "importtime", *base[1:]], env=env, capture_output=True, text=True)
    torch_imported = any(line.rstrip().endswith("| torch") for line in imp.stderr.splitlines())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"rounds": a.rounds, "median_s": med, "min_s": {k: min(v) for k, v in times.items()},
                      "ratio_default_over_metadata": med["default"] / med["metadata"],
                      "default_scan_imported_torch": torch_imported}, indent=2))


if __name__ == "__main__":
    main()
