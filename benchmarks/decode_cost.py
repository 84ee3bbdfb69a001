"""What a scan's decode workers take from the model's cores, per file.

Runs the decode worker's job exactly as `aiidetect scan` does it (read + hash,
decode, preprocessing for the head, then the per-file metadata detector with
its invisible-watermark check) one file at a time on one thread, and reports
the thread's CPU time (time.thread_time: what the worker costs in core time,
much less sensitive to other load on the machine than wall time). Configs:
the two preprocessings (resize-center-crop, center-crop; both decode at full
size, as the scan does) x metadata detector with --watermark auto / never / absent.

On 2 cores with the model on both, each core-ms here is a core-ms the model
does not get: the end-to-end/model ceiling is model_core_ms / (model_core_ms +
worker_core_ms), model_core_ms = 2000 / (model-only images/s from
`aiidetect bench`).

    python benchmarks/decode_cost.py /work/shared/data/dev/real --rounds 3 --format table
    python benchmarks/decode_cost.py DIR --json benchmarks/results/decode_cost.json
    python benchmarks/decode_cost.py DIR --watermark-split   # the check alone: decode vs votes vs reference votes
    python benchmarks/decode_cost.py DIR --watermark-split --rows 64   # votes on 64-row slabs (default 128)
    python benchmarks/decode_cost.py DIR --workers-wall      # wall ms/file of the whole job on 1 and 2 workers
    python benchmarks/decode_cost.py DIR --by-format --rounds 3   # `scan -d metadata`'s job, CPU ms/file by format

Uses whichever aiidetect is importable (PYTHONPATH=OTHER_CHECKOUT to measure
another version with the same script).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def files(folder: str, limit: int) -> list[str]:
    out = sorted(str(p) for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    return out[:limit] if limit else out


def one_round(paths: list[str], preprocess: str, watermark: str | None) -> list[float]:
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.discover import Candidate
    from aiidetect.pipeline import Pipeline, Plan
    from aiidetect.preprocess import make_spec

    dets = [] if watermark is None else [MetadataDetector({"watermark": watermark, "c2pa": True})]
    spec = make_spec(preprocess, 224)
    # What the scan plans for a head with this preprocessing (Plan.build from its feature requests).
    plan = Plan.build(dets)
    plan.specs = [spec]
    pipe = Pipeline(dets, plan=plan)
    costs = []
    for i, p in enumerate(paths):
        t = time.thread_time()
        s = pipe._decode(Candidate(p, explicit=True), i)
        costs.append(time.thread_time() - t)
        s.data = s.image = None
        s.pixels.clear()
    return costs


def workers_wall(paths: list[str], rounds: int, watermark: str = "auto") -> dict:
    """Wall ms per file of the decode workers' whole job (resize-center-crop, the
    metadata detector) with 1 and 2 workers and nothing else running: what a scan
    waits for when the workers take turns with the model."""
    from aiidetect.discover import Candidate
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.pipeline import Pipeline, Plan
    from aiidetect.pixels import ordered
    from aiidetect.preprocess import make_spec

    out = {}
    for wm in (watermark, "never") if watermark != "never" else ("never",):
        dets = [MetadataDetector({"watermark": wm, "c2pa": True})]
        spec = make_spec("resize-center-crop", 224)
        plan = Plan.build(dets)
        plan.specs = [spec]
        pipe = Pipeline(dets, plan=plan)
        cands = [Candidate(p, explicit=True) for p in paths]
        walls: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for w in (1, 2):  # alternated, so drifting load hits both alike
                t = time.perf_counter()
                for _s in ordered(pipe._decode, cands, workers=w):
                    pass
                walls[w].append((time.perf_counter() - t) * 1000 / len(paths))
        med = {w: statistics.median(v) for w, v in walls.items()}
        out[f"watermark {wm}"] = {"wall_ms_per_file": {str(w): round(m, 2) for w, m in med.items()},
                                  "speedup_2_workers": round(med[1] / med[2], 2)}
    return out


def watermark_split(paths: list[str], rows: int = 128) -> dict:
    """CPU ms per checked file of the watermark check's parts: the full-size decode
    it does when it cannot reuse the worker's image, the block votes as the scan
    computes them, and the float64 reference rule they must equal (files where
    they differ are counted)."""
    from aiidetect.decode import DecodeFailure, decode_bytes, read_bytes
    from aiidetect.provenance import _pixels, watermark as wm

    t = {"decode": 0.0, "votes": 0.0, "reference_votes": 0.0}
    n = differ = 0
    for p in paths:
        try:
            data = read_bytes(p)
            img, _ = decode_bytes(data)
        except DecodeFailure:
            continue
        if not wm.plausible_size(*img.size):
            continue
        n += 1
        t0 = time.thread_time()
        rgb = _pixels(data, None, {}, *img.size)
        t1 = time.thread_time()
        fast = wm._fast_votes(rgb, rows=rows)
        t2 = time.thread_time()
        ref = {o: wm._votes_from_u(u) for o, u in wm._u_planes(rgb).items()}
        t3 = time.thread_time()
        differ += any(not (fast[o] == ref[o]).all() for o in ref)
        t["decode"] += t1 - t0
        t["votes"] += t2 - t1
        t["reference_votes"] += t3 - t2
    return {"checked_files": n, "votes_differ_from_reference": differ, "ms_per_checked_file": {k: round(v * 1000 / max(n, 1), 2) for k, v in t.items()}}


def by_format(paths: list[str], rounds: int, watermark: str = "auto") -> dict:
    """The worker's job as `aiidetect scan DIR -d metadata` runs it (no head: a full-size decode, then the
    metadata detector with its watermark check), CPU ms per file grouped by the format the record gives
    (files that are no image under "none"); the median of `rounds` passes over all files."""
    from aiidetect.discover import Candidate
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.pipeline import Pipeline, Plan

    dets = [MetadataDetector({"watermark": watermark, "c2pa": True})]
    pipe = Pipeline(dets, plan=Plan.build(dets))
    cost: dict[str, list[float]] = {}
    count: dict[str, int] = {}
    for r in range(rounds + 1):   # the first pass warms up (imports, parser tables) and is not counted
        per: dict[str, float] = {}
        for i, p in enumerate(paths):
            t = time.thread_time()
            s = pipe._decode(Candidate(p, explicit=True), i)
            dt = time.thread_time() - t
            fmt = s.record.format or "none"
            per[fmt] = per.get(fmt, 0.0) + dt
            if r == 0:
                count[fmt] = count.get(fmt, 0) + 1
            s.data = s.image = None
            s.pixels.clear()
        if r:
            for fmt, v in per.items():
                cost.setdefault(fmt, []).append(v)
    rows = {fmt: {"files": count[fmt], "ms_per_file": round(statistics.median(v) * 1000 / count[fmt], 3),
                  "rounds_ms_per_file": [round(x * 1000 / count[fmt], 3) for x in v]}
            for fmt, v in sorted(cost.items(), key=lambda kv: -sum(kv[1]))}
    total = [sum(v[k] for v in cost.values()) for k in range(rounds)]
    return {"watermark": watermark, "all": {"files": len(paths), "ms_per_file": round(
        statistics.median(total) * 1000 / len(paths), 3)}, "by_format": rows}


def machine() -> dict:
    flags = []
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "")
        fl = next((ln.split(":", 1)[1].split() for ln in cpu.splitlines() if ln.startswith("Flags")), [])
        flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in fl]
    except OSError:
        model = platform.processor()
    return {"cpu": model, "flags": flags, "cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]}


def save(res: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(res, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--limit", type=int, default=0, help="first N files (0 = all)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per config; the median round is reported")
    ap.add_argument("--preprocess", default="resize-center-crop,center-crop")
    ap.add_argument("--format", choices=["table", "json"], default="table")
    ap.add_argument("--json", help="also write the JSON here")
    ap.add_argument("--watermark-split", action="store_true", help="only time the watermark check's parts")
    ap.add_argument("--rows", type=int, default=128, help="--watermark-split: slab height of the votes")
    ap.add_argument("--workers-wall", action="store_true",
                    help="only the whole job's wall time per file on 1 and 2 workers")
    ap.add_argument("--by-format", action="store_true",
                    help="only `scan -d metadata`'s job (full-size decode, metadata detector), CPU ms/file by format")
    a = ap.parse_args()
    import aiidetect

    paths = files(a.folder, a.limit)
    if a.watermark_split:
        print(json.dumps({"files": len(paths), "rows": a.rows, **watermark_split(paths, a.rows),
                          "machine": machine()}, indent=1))
        return 0
    if a.by_format:
        m = machine()   # the load before the passes, as the other modes give it
        res = {"aiidetect": str(Path(aiidetect.__file__).parent), "files": len(paths), "rounds": a.rounds,
               **by_format(paths, a.rounds), "machine": m}
        res["machine"]["load_1m_end"] = os.getloadavg()[0]
        save(res, a.json)
        print(json.dumps(res, indent=1))
        return 0
    if a.workers_wall:
        print(json.dumps({"files": len(paths), "rounds": a.rounds, **workers_wall(paths, a.rounds),
                          "machine": machine()}, indent=1))
        return 0
    res = {"aiidetect": str(Path(aiidetect.__file__).parent), "files": len(paths), "rounds": a.rounds,
           "machine": machine(), "rows": []}
    configs = [(pp, wm) for pp in a.preprocess.split(",") for wm in (None, "never", "auto")]
    rounds: dict[tuple, list[float]] = {c: [] for c in configs}
    for c in configs:  # warm-up: imports, parser tables, first-use allocations
        one_round(paths[:3], *c)
    for _ in range(a.rounds):
        for c in configs:  # configs alternate within each round, so drifting load hits them alike
            rounds[c].append(sum(one_round(paths, *c)))
    for (pp, wm), totals in rounds.items():
        res["rows"].append({"preprocess": pp, "metadata": "absent" if wm is None else f"watermark {wm}",
                            "ms_per_file": round(statistics.median(totals) * 1000 / len(paths), 2),
                            "rounds_ms_per_file": [round(t * 1000 / len(paths), 2) for t in totals]})
    res["machine"]["load_1m_end"] = os.getloadavg()[0]
    save(res, a.json)
    if a.format == "json":
        print(json.dumps(res, indent=1))
    else:
        m = res["machine"]
        print(f"{res['files']} files, {a.rounds} rounds, {res['aiidetect']}; {m['cpu']} {','.join(m['flags'])}, "
              f"load {m['load_1m']:.1f}-{m['load_1m_end']:.1f}")
        print("| preprocessing | metadata detector | worker CPU ms/file (median round) | rounds |")
        print("|---|---|---:|---|")
        for r in res["rows"]:
            print(f"| {r['preprocess']} | {r['metadata']} | {r['ms_per_file']} | "
                  f"{' / '.join(map(str, r['rounds_ms_per_file']))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
