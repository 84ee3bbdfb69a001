"""aiidetect scan against the reference loop (peer_reference.py), side by side.

Whole processes, alternated (peer, aiidetect, peer, aiidetect, ...), so that
both see the same machine state; wall time of each process from start to exit,
imports and model build included, as a user experiences them. Both use the
same random-init open_clip backbone and the same files. aiidetect needs a head
trained for that backbone to run its model at all, so a linear probe is trained
first on a few dev images (not timed).

    python benchmarks/peer_compare.py --backbone ViT-B-16 --runs 3 ../shared/data/dev/real/camera
    python benchmarks/peer_compare.py --backbone ViT-L-14 --runs 3 --scan-arg=--dtype=float32 DIR

With --optimize DIR, `aiidetect optimize --images DIR` runs first (not timed,
in a private $AIIDETECT_CACHE), so the default scan takes whatever runtime it
verified; --variants adds forced-precision scans to the same alternation for
context (auto = the default scan; float32 / bfloat16 = --runtime torch --dtype X):

    python benchmarks/peer_compare.py --backbone ViT-B-16 --runs 3 --optimize ../shared/data/dev \
        --variants auto,float32,bfloat16 ../shared/data/dev/real/camera

Writes benchmarks/results/peer-<backbone>-<time>.json (or --out) with every
wall time, the medians, the ratio peer/aiidetect (> 1: aiidetect is faster)
and the CPU's model and flags.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str], env=None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    s = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="files or folders to scan (both sides get the same list)")
    ap.add_argument("--backbone", default="ViT-B-16")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--train-data", default=str(ROOT.parent / "shared/data/dev/manifest.csv"),
                    help="labelled data for the probe aiidetect needs (not timed)")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--scan-arg", action="append", default=[], help="extra argument for aiidetect scan (repeatable)")
    ap.add_argument("--out", help="result JSON (default benchmarks/results/peer-<backbone>-<time>.json)")
    ap.add_argument("--optimize", metavar="DIR", help="run `aiidetect optimize --images DIR` first (not timed)")
    ap.add_argument("--optimize-limit", type=int, default=256, help="images optimize verifies on")
    ap.add_argument("--variants", default="auto",
                    help="comma-separated scans to time: auto (default scan), float32, bfloat16 (forced torch)")
    a = ap.parse_args(argv)

    from aiidetect.bench import machine_facts

    import os

    py = sys.executable
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    forced = {"auto": [], "float32": ["--runtime", "torch", "--dtype", "float32"],
              "bfloat16": ["--runtime", "torch", "--dtype", "bfloat16"]}
    if any(v not in forced for v in variants):
        raise SystemExit(f"--variants takes {', '.join(forced)}")
    with tempfile.TemporaryDirectory() as td:
        weights = Path(td) / "weights"
        env = {**os.environ, "AIIDETECT_CACHE": str(Path(td) / "cache")}
        bb = ["--backbone", a.backbone, "--pretrained", "none"]
        subprocess.run([py, "-m", "aiidetect", "train", "linear", a.train_data, *bb, "--shots", str(a.shots),
                        "--name", "peer-bench", "--out", str(weights / "peer-bench"), "--no-cache"],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        decision = None
        if a.optimize:
            t = time.perf_counter()
            r = subprocess.run([py, "-m", "aiidetect", "optimize", "--images", a.optimize, "--limit",
                                str(a.optimize_limit), *bb, "--weights-dir", str(weights), "--format", "json", "-q"],
                               check=True, stdout=subprocess.PIPE, text=True, env=env)
            decision = json.loads(r.stdout)
            decision["optimize_wall_s"] = round(time.perf_counter() - t, 1)
            print(f"optimize: {decision['status']} {decision.get('chosen')} "
                  f"({decision['optimize_wall_s']} s)", file=sys.stderr)
        scans = {v: [py, "-m", "aiidetect", "scan", *a.paths, *bb, "-d", "linear", "--no-cache", "--weights-dir",
                     str(weights), "--format", "jsonl", "-q", "--output", str(Path(td) / f"scan-{v}.jsonl"),
                     *forced[v], *a.scan_arg] for v in variants}
        peer = [py, str(ROOT / "benchmarks" / "peer_reference.py"), "--backbone", a.backbone, *a.paths]
        times: dict[str, list[float]] = {"peer": [], **{v: [] for v in variants}}
        for i in range(a.runs):
            times["peer"].append(timed(peer, env))
            for v in variants:
                times[v].append(timed(scans[v], env))
            print(f"run {i + 1}: " + ", ".join(f"{k} {t[-1]:.2f} s" for k, t in times.items()), file=sys.stderr)
        ran = {}
        for v in variants:
            records = [json.loads(ln) for ln in (Path(td) / f"scan-{v}.jsonl").read_text().splitlines() if ln.strip()]
            ran[v] = sorted({f"{d.get('runtime', 'torch')}/{d.get('dtype')}" for r in records
                             for d in [(r.get("detectors") or {}).get("linear:peer-bench") or {}]
                             if d.get("status") == "ok"})
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"backbone": a.backbone, "files": len(records), "runs": a.runs, "wall_s": times, "median_s": med,
           "speedup_vs_peer": {v: round(med["peer"] / med[v], 3) for v in variants},
           "scan_commands": {v: " ".join(c[1:]) for v, c in scans.items()}, "peer_command": " ".join(peer[1:]),
           "scan_runtime": ran, "optimize": decision, "machine": machine_facts(), "load_at_end": os.getloadavg()}
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / (
        f"peer-{a.backbone}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("backbone", "files", "median_s", "speedup_vs_peer")}))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
