#!/usr/bin/env python
"""Peak memory of a scan on hostile folders, against --workers and --batch-size.

    python benchmarks/decode_memory.py --work /tmp/decmem
    python benchmarks/decode_memory.py --work /tmp/decmem --src OLDER_CHECKOUT   # both, alternated
    python benchmarks/decode_memory.py --work /tmp/decmem --folders bytes        # those rows only

Folders made under --work (once):
  big    32 PNGs of 10000x10000 (100 MP, under the default --max-pixels), 1.4 MB each
  bytes  64 PNGs of 64x64 followed by 120 MiB of noise (scanned with --max-bytes 128 MiB)
  mix    63 small PNGs and one 100 MP PNG

Each row is `python -m aiidetect scan DIR -d metadata --no-cache -f jsonl -q -o FILE --workers W
--batch-size B` in a fresh process under `/usr/bin/time -v` (Maximum resident set size). With
--src, each row runs on that checkout first, then on this one. The bytes folder takes 7.6 GB of disk.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parents[1])
ROWS = [("big", 2, 16), ("big", 8, 16), ("big", 32, 16), ("big", 32, 4), ("big", 8, 64),
        ("bytes", 2, 16), ("bytes", 8, 16), ("bytes", 32, 16), ("mix", 32, 16)]


def make(work: Path) -> None:
    import numpy as np
    from PIL import Image

    if (work / ".made").exists():
        return
    for d in ("big", "bytes", "mix"):
        (work / d).mkdir(parents=True, exist_ok=True)
    a = np.zeros((10000, 10000, 3), np.uint8)
    a[::7, ::5] = 200
    Image.fromarray(a).save(work / "base.png", compress_level=1)
    base = (work / "base.png").read_bytes()
    for i in range(32):   # distinct bytes: nothing is reused between files
        (work / "big" / f"b{i:02d}.png").write_bytes(base + b"x%d" % i)
    (work / "mix" / "zz_giant.png").write_bytes(base)
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(work / "small.png")
    small = (work / "small.png").read_bytes()
    junk = os.urandom(1 << 20)
    for i in range(64):
        with open(work / "bytes" / f"f{i:02d}.png", "wb") as f:
            f.write(small + b"%d" % i)
            for _ in range(120):
                f.write(junk)
    for i in range(63):
        (work / "mix" / f"s{i:02d}.png").write_bytes(small + b"%d" % i)
    (work / ".made").write_text("")


def peak_mib(src: str, folder: Path, workers: int, batch: int, out: Path) -> tuple[int, str]:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "aiidetect", "scan", str(folder), "-d", "metadata",
           "--no-cache", "-f", "jsonl", "-q", "-o", str(out), "--workers", str(workers), "--batch-size", str(batch)]
    if folder.name == "bytes":
        cmd += ["--max-bytes", str(128 * 1024 * 1024)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src}, cwd=src)
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr).group(1)
    return kb // 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="where the folders are made (7.7 GB)")
    ap.add_argument("--src", help="another checkout to measure first, row by row")
    ap.add_argument("--folders", default="big,bytes,mix", help="the folders whose rows are run (comma-separated)")
    args = ap.parse_args()
    folders = set(args.folders.split(","))
    work = Path(args.work)
    make(work)
    srcs = ([("other", args.src)] if args.src else []) + [("this", HERE)]
    print(f"{'folder':6} {'workers':>7} {'batch':>5} " + " ".join(f"{n + ' MiB':>10} {'wall':>7}" for n, _ in srcs))
    for name, w, b in ROWS:
        if name not in folders:
            continue
        cells = []
        for label, src in srcs:
            mib, wall = peak_mib(src, work / name, w, b, work / f"out-{label}.jsonl")
            cells.append(f"{mib:>10} {wall:>7}")
        print(f"{name:6} {w:>7} {b:>5} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
