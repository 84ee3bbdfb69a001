"""What the training/eval loaders' check for copies (train.data.drop_copies) adds to reading a data folder.

    python benchmarks/copies_check.py --files 20000 --work /tmp/copies-check

Writes a real/ + ai/g/ folder of FILES distinct files of random bytes (sizes drawn between 1 KiB and
--max-kib, the way photos' sizes differ, or all one size with --same-size, the worst case: every file shares its size with
another, so every file is hashed), then times load_items with and without the check after one warm-up
listing (the page cache holds the folder and the files for both; a cold disk reads the hashed files once).
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path


def _build(work: Path, files: int, same_size: bool, max_kib: int) -> int:
    rng = random.Random(0)
    total = 0
    for k in range(files):
        d = work / ("real" if k % 2 else "ai/g")
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{k:07d}.jpg"
        if not p.exists():
            n = max_kib * 1024 if same_size else rng.randint(1024, max_kib * 1024)
            p.write_bytes(os.urandom(n))
        total += p.stat().st_size
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--work", default="/tmp/copies-check")
    ap.add_argument("--same-size", action="store_true")
    ap.add_argument("--max-kib", type=int, default=8, help="largest file (every file with --same-size)")
    a = ap.parse_args()
    from aiidetect.train.data import load_items

    work = Path(a.work) / ("same" if a.same_size else "mixed")
    total = _build(work, a.files, a.same_size, a.max_kib)
    load_items([work], check_copies=False)  # warm the folder listing
    out = {"files": a.files, "bytes": total, "same_size": a.same_size}
    for check in (False, True):
        t = time.perf_counter()
        n = len(load_items([work], check_copies=check))
        out["with_check_s" if check else "without_check_s"] = round(time.perf_counter() - t, 3)
        assert n == a.files
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
