#!/usr/bin/env python
"""What a walk costs where an archive's layout is extreme: every file in one folder, and a tree thousands of
folders deep.

    python benchmarks/walk_scale.py --files 10000,100000 --work /tmp/walk-scale [--src OLDER_CHECKOUT]

For each size N: N distinct 4x4 PNGs in ONE folder (benchmarks/scale_memory.py spreads them over 100), scanned by
`python -m aiidetect scan -d metadata --no-cache -q -f jsonl DIR --db STORE` in a fresh process under
`/usr/bin/time -f %M`: peak RSS, seconds to the first record on stdout (the walk streams: it comes long before
the walk ends), total seconds and milliseconds per file. Then a tree `--depth` folders deep (default 2,100: past
Linux's PATH_MAX of 4,096 bytes at about 2,040) holding a file every 500 levels, with a symbolic link loop 10
levels down: its records and error codes (the part past PATH_MAX is one `unreadable` record). `--src` runs the
aiidetect of another checkout instead (PYTHONPATH), for a before/after. Results: a table on stdout, JSON with
--out.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path


# What each size runs, in a fresh process (after `python`, before its folder and `--db STORE`).
SCAN = ["-m", "aiidetect", "scan", "-d", "metadata", "--no-cache", "-q", "-f", "jsonl"]


def make_flat(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    marker = root / f".made-{n}"
    if marker.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        b = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(b, "PNG")
        (root / f"f{i:07d}.png").write_bytes(b.getvalue())
    marker.write_text("ok")


def make_deep(root: Path, depth: int) -> None:
    import numpy as np
    from PIL import Image

    marker = root / f".made-{depth}"
    if marker.exists():
        return
    b = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(b, "PNG")
    png = b.getvalue()
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:  # relative to a folder descriptor: the path itself passes PATH_MAX
        for i in range(depth):
            if i == 10:
                os.symlink("..", "up", dir_fd=fd)  # a loop: one `symlink-loop` record
            if i % 500 == 0:
                f = os.open(f"x{i}.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(f, png)
                os.close(f)
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    marker.write_text("ok")


def scan(folder: Path, store: Path, src: str) -> dict:
    for p in store.parent.glob(store.name + "*"):
        p.unlink()
    env = dict(os.environ, PYTHONPATH=src, AIIDETECT_CACHE=str(store.parent / "cache"))
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, *SCAN, str(folder), "--db", str(store)]
    t0 = time.monotonic()
    # Run from the work folder: `python -m` puts the working folder first on sys.path, ahead of PYTHONPATH, so run
    # from a checkout it measured that checkout whatever --src said.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=store.parent)
    first, n, codes = None, 0, {}
    for line in p.stdout:
        if first is None:
            first = time.monotonic() - t0
        n += 1
        err = json.loads(line).get("error")
        if err:
            codes[err["code"]] = codes.get(err["code"], 0) + 1
    stderr = p.stderr.read().decode()
    p.wait()
    total = time.monotonic() - t0
    return {"rc": p.returncode, "records": n, "errors": codes, "first_record_s": round(first or 0, 2),
            "total_s": round(total, 1), "ms_per_file": round(1000 * total / max(n, 1), 3),
            "peak_rss_mb": round(int(stderr.strip().splitlines()[-1]) / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="10000,100000")
    ap.add_argument("--depth", type=int, default=2100)
    ap.add_argument("--work", type=Path, default=Path("/tmp/walk-scale"))
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = {}
    for n in [int(x) for x in a.files.split(",")]:
        make_flat(a.work / f"flat{n}", n)
        rows[f"one folder, {n:,} files"] = scan(a.work / f"flat{n}", a.work / f"flat{n}.sqlite", a.src)
    make_deep(a.work / "deep", a.depth)
    rows[f"{a.depth:,} folders deep"] = scan(a.work / "deep", a.work / "deep.sqlite", a.src)
    print(f"{'tree':<28} {'peak RSS MB':>11} {'first rec s':>11} {'total s':>8} {'ms/file':>8}  records, errors")
    for k, r in rows.items():
        print(f"{k:<28} {r['peak_rss_mb']:>11} {r['first_record_s']:>11} {r['total_s']:>8} {r['ms_per_file']:>8}  "
              f"{r['records']}, {r['errors']} rc={r['rc']}")
    if a.out:
        # The machine and the command with the numbers: a file of timings that names neither cannot be rerun or
        # compared (this one was measured on a shared machine, its load beside it).
        sys.path.insert(0, a.src)
        from aiidetect.bench import machine_facts

        a.out.write_text(json.dumps({"src": a.src, "command": " ".join(["python", *sys.argv]),
                                     "scan": " ".join(["python", *SCAN, "FOLDER", "--db", "STORE"]),
                                     "machine": machine_facts(), "load": os.getloadavg(), "rows": rows}, indent=1))
    return 0 if all(r["rc"] == 0 for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
