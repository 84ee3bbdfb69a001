"""What a results store costs per open and per session as it grows to millions of rows (docs/scale.md,
"When the whole store is checked").

    PYTHONPATH=. python benchmarks/store_scale.py /work/shared/data/dev/real/camera --rows 1000000 --work /tmp/store-scale

Scans FOLDER once into a seed store with `-d metadata` (real records), then copies its rows under new
paths up to each row count with plain SQL, and times, in this process (the file in the page cache):
SQLite's full and quick checks, the library's opens (`ResultsStore`: the first open of the grown store,
which no aiidetect closed, then re-opens after a clean close, for writing and read-only), what a scan
session and the results commands do besides (StoreSession start, 1,000 resume lookups, runs(),
resolve_run, summary, shard_gaps) and merging a 60-row shard into the big store. Prints one JSON object
per row count. Run it with PYTHONPATH at another checkout to time that version on the same files.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import sqlite3
import sys
import time
from pathlib import Path

from store_open import grow, seed_store  # the same seed and growth as store_open.py


def _t(fn, rounds: int = 1) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(round(time.perf_counter() - t, 4))
    return sorted(out)


def _open(db: Path, **kw) -> None:
    from aiidetect.store import ResultsStore

    ResultsStore(db, **kw).close()


def _pragma(db: Path, what: str) -> None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        c.execute(f"PRAGMA {what}(1)").fetchone()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--rows", default="1000000")
    ap.add_argument("--work", default="/tmp/store-scale")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    import aiidetect
    from aiidetect.store import ResultsStore, StoreSession, merge_stores

    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seed, shard = work / "seed.sqlite", work / "shard.sqlite"
    seed_store(a.folder, seed)
    shutil.copy(seed, shard)
    with contextlib.closing(sqlite3.connect(shard)) as c, c:  # a shard of new files for the merge
        c.execute("UPDATE results SET path = path || '#shard'")
    for rows in (int(x) for x in a.rows.split(",")):
        db = work / f"s{rows}.sqlite"
        shutil.copy(seed, db)
        t = time.perf_counter()
        grow(db, rows, keep_wal=False)
        grow_s = time.perf_counter() - t
        out = {"rows": rows, "bytes": db.stat().st_size, "grow_s": round(grow_s, 1), "aiidetect": aiidetect.__file__,
               "sqlite": sqlite3.sqlite_version, "python": platform.python_version()}
        out["integrity_check_s"] = _t(lambda: _pragma(db, "integrity_check"))
        out["quick_check_s"] = _t(lambda: _pragma(db, "quick_check"))
        out["first_open_s"] = _t(lambda: _open(db))  # grown by plain SQL: no clean close recorded
        out["reopen_write_s"] = _t(lambda: _open(db), a.rounds)
        out["reopen_read_s"] = _t(lambda: _open(db, readonly=True), a.rounds)
        with ResultsStore(db) as st:
            run_id = st.db.execute("SELECT run_id FROM runs").fetchone()[0]
            keys = [k for (k,) in st.db.execute("SELECT path FROM results WHERE rowid % ? = 0 LIMIT 1000",
                                                (max(1, rows // 1000),))]
            sessions = []
            out["session_start_s"] = _t(lambda: sessions.append(StoreSession(st, run_id, "rules")))
            out["lookups_1000_s"] = _t(lambda: [st.lookup(run_id, k) for k in keys])
            for s in sessions:
                s.close()
            out["runs_s"] = _t(st.runs)
            out["resolve_run_s"] = _t(lambda: st.resolve_run(None))
            out["summary_s"] = _t(lambda: st.summary([run_id]))
            out["shard_gaps_s"] = _t(lambda: st.shard_gaps([run_id]))
        out["merge_60_rows_s"] = _t(lambda: merge_stores(db, [shard]))
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
