"""Time aiidetect on the hostile corpus (aiidetect/testing/hostile.py): one `scan` subprocess per
file, with a per-file timeout, then the whole corpus in one scan.

    python benchmarks/hostile_corpus.py [--timeout 30] [--only meta/] [--out DIR]

Run it from two checkouts (PYTHONPATH=/path/to/other/checkout python ...) to
compare builds on the same machine in one sitting; each line is
`seconds  exit-code  error-code  file`, and a timeout shows as `>T`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per file before giving up")
    ap.add_argument("--only", default="", help="only corpus paths starting with this (e.g. meta/)")
    ap.add_argument("--out", type=Path, default=None, help="corpus folder (default: a temporary one)")
    a = ap.parse_args()
    from aiidetect.testing.hostile import make_corpus

    root = a.out or Path(tempfile.mkdtemp(prefix="aiidetect-hostile-"))
    expect = make_corpus(root)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    total = 0.0
    for rel in sorted(expect):
        if not rel.decode("utf-8", "replace").startswith(a.only):
            continue
        path = os.path.join(os.fsencode(root), rel)
        t = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, "-m", "aiidetect", "scan", path, "-d", "metadata", "-f", "jsonl",
                                "-q", "--no-cache"], capture_output=True, timeout=a.timeout, env=env)
            dt = time.perf_counter() - t
            try:
                code = (json.loads(r.stdout.splitlines()[0]).get("error") or {}).get("code") or "-"
            except (ValueError, IndexError):
                code = "unparsable-output"
            shown = f"{dt:6.2f}"
            rc = r.returncode
        except subprocess.TimeoutExpired:
            dt, shown, rc, code = a.timeout, f">{a.timeout:.0f}".rjust(6), "-", "timeout"
        total += dt
        print(f"{shown}  {rc!s:>2}  {code:20s} {rel.decode('utf-8', 'backslashreplace')}", flush=True)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "aiidetect", "scan", str(root), "-d", "metadata", "-f", "jsonl", "-q",
                        "--no-cache"], capture_output=True, env=env, timeout=max(60.0, a.timeout * 4))
    print(f"whole corpus: {time.perf_counter() - t:.1f}s, exit {r.returncode}, "
          f"{len(r.stdout.splitlines())} records, {len(r.stderr)} bytes on stderr; per-file sum {total:.1f}s")


if __name__ == "__main__":
    main()
