"""aiidetect scan against the reference loop (peer_reference.py), side by side.

Whole processes, alternated (peer, aiidetect, peer, aiidetect, ...), so that
both see the same machine state; wall time of each process from start to exit,
imports and model build included, as a user experiences them. Both use the
same random-init open_clip backbone and the same files. aiidetect needs a head
trained for that backbone to run its model at all, so a linear probe is trained
first on a few dev images (not timed).

    python benchmarks/peer_compare.py --backbone ViT-B-16 --runs 3 ../shared/data/dev/real/camera
    python benchmarks/peer_compare.py --backbone ViT-L-14 --runs 3 --scan-arg=--dtype=float32 DIR

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


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
    a = ap.parse_args(argv)

    from aiidetect.bench import machine_facts

    py = sys.executable
    with tempfile.TemporaryDirectory() as td:
        weights = Path(td) / "weights"
        bb = ["--backbone", a.backbone, "--pretrained", "none"]
        subprocess.run([py, "-m", "aiidetect", "train", "linear", a.train_data, *bb, "--shots", str(a.shots),
                        "--name", "peer-bench", "--out", str(weights / "peer-bench"), "--no-cache"],
                       check=True, stdout=subprocess.DEVNULL)
        scan = [py, "-m", "aiidetect", "scan", *a.paths, *bb, "-d", "linear", "--no-cache", "--weights-dir",
                str(weights), "--format", "jsonl", "-q", "--output", str(Path(td) / "scan.jsonl"), *a.scan_arg]
        peer = [py, str(ROOT / "benchmarks" / "peer_reference.py"), "--backbone", a.backbone, *a.paths]
        times: dict[str, list[float]] = {"peer": [], "aiidetect": []}
        for i in range(a.runs):
            times["peer"].append(timed(peer))
            times["aiidetect"].append(timed(scan))
            print(f"run {i + 1}: peer {times['peer'][-1]:.2f} s, aiidetect {times['aiidetect'][-1]:.2f} s",
                  file=sys.stderr)
        records = [json.loads(ln) for ln in (Path(td) / "scan.jsonl").read_text().splitlines() if ln.strip()]
    med = {k: statistics.median(v) for k, v in times.items()}
    ran = sorted({f"{d.get('runtime', 'torch')}/{d.get('dtype')}" for r in records
                  for d in [(r.get("detectors") or {}).get("linear:peer-bench") or {}] if d.get("status") == "ok"})
    res = {"backbone": a.backbone, "files": len(records), "runs": a.runs, "wall_s": times, "median_s": med,
           "speedup_vs_peer": round(med["peer"] / med["aiidetect"], 3), "scan_command": " ".join(scan[1:]),
           "peer_command": " ".join(peer[1:]), "scan_runtime": ran, "machine": machine_facts()}
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / (
        f"peer-{a.backbone}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("backbone", "files", "median_s", "speedup_vs_peer")}))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
