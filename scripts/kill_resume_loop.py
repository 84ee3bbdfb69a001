"""Kill a `scan --db` with SIGKILL at random moments, resume it, and check the store.

    PYTHONPATH=. python scripts/kill_resume_loop.py --files 3000 --rounds 30

Builds a folder of tiny PNGs, then repeats: start `aiidetect scan FOLDER -d metadata --db STORE`,
SIGKILL it after a random delay. Every few rounds it also changes, adds and removes files between
runs. After each kill it checks that the store opens and that no path has two rows in one run; at the
end one run to completion must leave exactly one row per file present, every record printed once.
Exit 1 with the failing check on stderr. Not part of the test suite (it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time


def make_files(root: str, n: int, start: int = 0) -> None:
    from PIL import Image

    for i in range(start, start + n):
        d = os.path.join(root, f"d{i % 23}")
        os.makedirs(d, exist_ok=True)
        Image.new("RGB", (8, 8), (i % 256, (i // 256) % 256, 7)).save(os.path.join(d, f"f{i}.png"))


def scan(root: str, db: str, out: str, env: dict) -> subprocess.Popen:
    # stderr to a file, not a pipe: a run that says more than the pipe holds would block before it could end.
    with open(out, "wb") as stdout, open(f"{out}.err", "w+b") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "aiidetect", "scan", root, "-d", "metadata", "--db", db, "-f", "jsonl", "-q"],
            stdout=stdout, stderr=stderr, env=env)


def said(out: str) -> str:
    with open(f"{out}.err", "rb") as fh:
        return fh.read().decode(errors="replace")


def present(root: str) -> set[str]:
    return {os.path.realpath(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs}


def check_store(db: str) -> list[tuple]:
    if not os.path.exists(db):
        return []  # killed before the store was created
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        try:
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != 776:  # SQLITE_READONLY_ROLLBACK
                raise
            # Killed as it created the store (rollback-journal mode, before WAL): a hot -journal that only a
            # writer rolls back. The next round's scan must do so and go on (its exit code is checked).
            return []
        dup = con.execute("SELECT run_id, path, COUNT(*) FROM results GROUP BY run_id, path HAVING COUNT(*) > 1").fetchall()
        if dup:
            raise AssertionError(f"duplicate rows: {dup[:5]}")
        return con.execute("SELECT path, size, mtime_ns, error_code FROM results").fetchall()
    finally:
        con.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--max-delay", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = a.work or tempfile.mkdtemp(prefix="kill-resume-")
    root, db, out = os.path.join(work, "archive"), os.path.join(work, "audit.sqlite"), os.path.join(work, "out.jsonl")
    make_files(root, a.files)
    nxt = a.files
    env = dict(os.environ, AIIDETECT_CACHE=os.path.join(work, "cache"))
    for r in range(a.rounds):
        if r % 5 == 4:  # the archive moves between runs: a file changed, one added, one removed
            files = sorted(present(root))
            victim = rng.choice(files)
            os.remove(victim)
            with open(rng.choice([f for f in files if f != victim]), "ab") as fh:
                fh.write(b"\0")
            make_files(root, 1, nxt)
            nxt += 1
        p = scan(root, db, out, env)
        time.sleep(rng.uniform(0.05, a.max_delay))
        p.send_signal(signal.SIGKILL)
        p.wait()
        err = said(out)
        if p.returncode not in (-9, 0, 1):
            print(f"round {r}: exit {p.returncode}: {err}", file=sys.stderr)
            return 1
        rows = check_store(db)
        print(f"round {r}: exit {p.returncode}, {len(rows)} rows", file=sys.stderr)
    p = scan(root, db, out, env)
    p.wait()
    err = said(out)
    if p.returncode != 0:
        print(f"final run: exit {p.returncode}: {err}", file=sys.stderr)
        return 1
    files = present(root)
    with open(out, encoding="utf-8") as fh:
        printed = [json.loads(line)["file"] for line in fh]
    printed_real = [os.path.realpath(f) for f in printed]
    if sorted(printed_real) != sorted(files):
        print(f"report: {len(printed)} records for {len(files)} files; "
              f"missing {sorted(files - set(printed_real))[:5]}", file=sys.stderr)
        return 1
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    last_run = con.execute("SELECT run_id FROM sessions ORDER BY started_at DESC LIMIT 1").fetchone()[0]
    stored = {row[0]: row for row in con.execute(
        "SELECT path, size, mtime_ns, error_code FROM results WHERE run_id = ?", (last_run,))}
    con.close()
    check_store(db)
    missing = files - set(stored)
    if missing:
        print(f"store lacks {len(missing)} files: {sorted(missing)[:5]}", file=sys.stderr)
        return 1
    for path in files:
        st = os.stat(path)
        _, size, mtime_ns, code = stored[path]
        if (size, mtime_ns) != (st.st_size, st.st_mtime_ns) or code is not None:
            print(f"stale or failed row for {path}: {stored[path]}", file=sys.stderr)
            return 1
    print(f"ok: {len(files)} files, {len(stored)} rows in the run ({len(stored) - len(files)} of deleted files), "
          f"{a.rounds} kills; work folder {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
