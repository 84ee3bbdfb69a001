"""What a `results summary` of a store no aiidetect closed costs as it grows: such an open runs SQLite's
full integrity check, which reads the whole store (docs/scale.md, "When the whole store is checked";
benchmarks/store_scale.py times the opens of a store closed cleanly too, in one process).

    python benchmarks/store_open.py /work/shared/data/dev/real --rows 50000,200000 --work /tmp/store-open

Scans FOLDER once into a store with `-d metadata`, then copies its rows under new paths up to each row
count (the records are real ones; only the paths repeat), and times, on the same file, the plain SQLite
check (`PRAGMA integrity_check(1)`) and `aiidetect results summary` (open + check + summary) as a whole
process. Prints one JSON object per row count.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def grow(db: Path, rows: int, keep_wal: bool = True) -> None:
    """Copy the store's rows under new paths until it holds `rows` (store_scale.py shares this).
    keep_wal=False writes outside the WAL: one 2 GB transaction there is checkpointed by the first
    open a benchmark times."""
    c = sqlite3.connect(db)
    if not keep_wal:
        c.execute("PRAGMA journal_mode=DELETE")
    with c:
        have = c.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        base = c.execute("SELECT MIN(rowid), MAX(rowid) FROM results").fetchone()
        n = 0
        while have < rows:
            n += 1
            take = min(base[1] - base[0] + 1, rows - have)
            c.execute(f"INSERT INTO results SELECT run_id, path || '#copy{n}', file, folder, size, mtime_ns, sha256, "
                      f"verdict, p_ai, error_code, error_message, fusion_model, session_id, scanned_at, record "
                      f"FROM results WHERE rowid BETWEEN ? AND ?", (base[0], base[0] + take - 1))
            have += take
    c.close()


def seed_store(folder: str, seed: Path) -> None:
    """A real store to grow: `scan --db` of `folder`, metadata only."""
    subprocess.run([sys.executable, "-m", "aiidetect", "scan", folder, "-d", "metadata", "--no-cache", "-q",
                    "-f", "jsonl", "-o", os.devnull, "--db", str(seed)], check=True)
    c = sqlite3.connect(seed)
    cols = [r[1] for r in c.execute("PRAGMA table_info(results)")]
    c.close()
    if cols[-1] != "record" or len(cols) != 15:
        raise SystemExit(f"the results table changed ({cols}); update grow")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--rows", default="50000,200000")
    ap.add_argument("--work", default="/tmp/store-open")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seed = work / "seed.sqlite"
    seed_store(a.folder, seed)
    for rows in (int(x) for x in a.rows.split(",")):
        db = work / f"s{rows}.sqlite"
        shutil.copy(seed, db)
        grow(db, rows)
        check, summary = [], []
        for _ in range(a.rounds):
            t = time.perf_counter()
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                c.execute("PRAGMA integrity_check(1)").fetchone()
            check.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "aiidetect", "results", "summary", "--db", str(db), "-q", "-f",
                            "json"], check=True, stdout=subprocess.DEVNULL)
            summary.append(time.perf_counter() - t)
        print(json.dumps({"rows": rows, "bytes": db.stat().st_size, "integrity_check_s": sorted(check),
                          "results_summary_s": sorted(summary)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
