#!/usr/bin/env python
"""Memory and resume cost of a large sweep: N generated small files, `-d metadata`.

    python benchmarks/scale_memory.py --files 100000 --work /tmp/scale --out benchmarks/results/scale_memory.json

Phases (each a real `python -m aiidetect scan` subprocess):
  fresh      scan --db (jsonl report to a file): peak RSS (VmHWM) when 10%, 50% and 100% of the
             files are in the store, files/s
  nodb       the same scan without --db: peak RSS at the same points, counted from the jsonl report
  killed     a fresh store, the scan killed with SIGKILL once 40% of the files are in it
  resume     the same command again after the kill: seconds, files scanned vs. resumed
  noop       the same command once more, everything done: seconds (stat + one lookup per file)
  stdin      `scan -` without --db, the files' paths written to its stdin (as `find DIR -type f | aiidetect
             scan -`), the last one held back until a record comes or 20 s have passed: peak RSS at the
             same points, `first_record_s` and `list_ended_s` (a first record after the list ended: the
             list was read whole first)

The files are tiny distinct PNGs (8x8 noise) spread over 100 folders, so the numbers measure the
tool's own bookkeeping, not image decoding. Results go to --out as JSON and a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


SRC: str | None = None


def make_files(root: Path, n: int, folders: int = 100) -> None:
    import numpy as np
    from PIL import Image

    marker = root / f".made-{n}"
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"d{i % folders:03d}"
        if i < folders:
            d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"f{i:07d}.png")
    marker.write_text("ok")


def rss_kb(pid: int) -> tuple[int, int]:
    """(current VmRSS, peak VmHWM) in kB."""
    cur = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return cur, hwm


def db_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return int(c.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


class LineCounter:
    """Lines in a growing file, read incrementally."""

    def __init__(self, path: Path):
        self.path, self.pos, self.n = path, 0, 0

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except OSError:
            return self.n
        cut = chunk.rfind(b"\n") + 1
        self.n += chunk[:cut].count(b"\n")
        self.pos += cut
        return self.n


def scan(args: list[str], count, marks: list[int], kill_at: int | None = None, stdin_list: list[str] | None = None,
         stdout: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "aiidetect", "scan", *args]
    t0 = time.perf_counter()
    env = dict(os.environ)
    if SRC:
        env["PYTHONPATH"] = SRC  # measure another checkout's code with the same interpreter
    # cwd outside any checkout: `python -m` puts the working folder first on sys.path.
    # stdout: the records as they come (an -o report appears only when complete, renamed into place)
    sink = open(stdout, "wb") if stdout else subprocess.DEVNULL
    p = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.PIPE, text=True, env=env, cwd="/",
                         stdin=subprocess.PIPE if stdin_list is not None else None)
    first: dict = {}
    if stdin_list is not None:
        import threading

        def feed():
            # All but the last path, then the list held open until a record comes (or 20 s): a scan that reads
            # the whole list first prints nothing meanwhile.
            try:
                p.stdin.write("".join(x + "\n" for x in stdin_list[:-1]))
                p.stdin.flush()
                while "first_record_s" not in first and time.perf_counter() - t0 < 20 and p.poll() is None:
                    time.sleep(0.02)
                first["list_ended_s"] = round(time.perf_counter() - t0, 2)
                p.stdin.write(stdin_list[-1] + "\n")
                p.stdin.close()
            except (BrokenPipeError, ValueError):
                pass

        threading.Thread(target=feed, daemon=True).start()
    at: dict[int, dict] = {}
    peak = 0
    killed = False
    while p.poll() is None:
        n = count()
        if stdin_list is not None and n and "first_record_s" not in first:
            first["first_record_s"] = round(time.perf_counter() - t0, 2)
        cur, hwm = rss_kb(p.pid)
        peak = max(peak, hwm)
        for m in marks:
            if m not in at and n >= m:
                at[m] = {"files": n, "rss_mb": round(cur / 1024, 1), "peak_rss_mb": round(hwm / 1024, 1),
                         "seconds": round(time.perf_counter() - t0, 2)}
        if kill_at is not None and n >= kill_at:
            p.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    err = p.stderr.read()
    p.wait()
    if stdout:
        sink.close()
    secs = time.perf_counter() - t0
    n = count()
    for m in marks:  # marks reached between the last poll and the exit: only the final peak is known
        if m not in at and n >= m:
            at[m] = {"files": n, "rss_mb": None, "peak_rss_mb": round(peak / 1024, 1), "seconds": round(secs, 2),
                     "note": "reached after the last sample"}
    return {**first, "cmd": " ".join(cmd[1:]), "seconds": round(secs, 2), "files": n, "killed": killed,
            "rc": p.returncode, "peak_rss_mb": round(peak / 1024, 1), "at": at,
            "stderr_tail": err.strip().splitlines()[-1:] if err else []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/aiidetect-scale"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--phases", default="fresh,nodb,killed,resume,noop")
    ap.add_argument("--src", help="Run the aiidetect found in this source folder (e.g. an older checkout, "
                                  "with --phases nodb) instead of the installed one.")
    a = ap.parse_args()
    global SRC
    SRC = a.src
    n = a.files
    data = a.work / "files"
    data.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    make_files(data, n)
    print(f"{n} files ready in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    marks = sorted({max(1, n // 10), n // 2, n})
    base = [str(data), "-d", "metadata", "--no-cache", "--quiet", "-f", "jsonl"]
    phases = a.phases.split(",")
    out: dict = {"files": n, "src": a.src, "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                                          "load_before": os.getloadavg()}, "phases": {}}
    if "fresh" in phases:
        db = a.work / "fresh.sqlite"
        _rm(db)
        out["phases"]["fresh"] = scan(base + ["--db", str(db), "-o", str(a.work / "fresh.jsonl")],
                                      lambda: db_count(db), marks)
        print(json.dumps(out["phases"]["fresh"]), file=sys.stderr)
    if "nodb" in phases:
        rep = a.work / "nodb.jsonl"
        _rm(rep)
        out["phases"]["nodb"] = scan(base + ["-o", str(rep)], LineCounter(rep), marks)
        print(json.dumps(out["phases"]["nodb"]), file=sys.stderr)
    if "stdin" in phases:
        rep = a.work / "stdin.jsonl"
        _rm(rep)
        listed = sorted(str(f) for f in data.rglob("*.png"))
        out["phases"]["stdin"] = scan(["-"] + base[1:], LineCounter(rep), marks, stdin_list=listed, stdout=rep)
        print(json.dumps(out["phases"]["stdin"]), file=sys.stderr)
    db = a.work / "resume.sqlite"
    args = base + ["--db", str(db), "-o", str(a.work / "resume.jsonl")]
    if "killed" in phases:
        _rm(db)
        out["phases"]["killed"] = scan(args, lambda: db_count(db), [], kill_at=int(n * 0.4))
        out["phases"]["killed"]["rows_kept"] = db_count(db)
        print(json.dumps(out["phases"]["killed"]), file=sys.stderr)
    if "resume" in phases:
        out["phases"]["resume"] = scan(args, lambda: db_count(db), [])
        out["phases"]["resume"]["sessions"] = _sessions(db)
        print(json.dumps(out["phases"]["resume"]), file=sys.stderr)
    if "noop" in phases:
        out["phases"]["noop"] = scan(args, lambda: db_count(db), [])
        out["phases"]["noop"]["sessions"] = _sessions(db)[-1:]
        print(json.dumps(out["phases"]["noop"]), file=sys.stderr)
    out["machine"]["load_after"] = os.getloadavg()
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=2))
    _table(out)


def _sessions(db: Path) -> list:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute("SELECT session_id, status, files_written, files_resumed FROM sessions").fetchall()


def _rm(p: Path) -> None:
    for s in ("", "-wal", "-shm"):
        q = Path(str(p) + s)
        if q.exists():
            q.unlink()


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _table(out: dict) -> None:
    print(f"| phase | files | seconds | files/s | peak RSS MB at " +
          " / ".join(str(m) for m in sorted({int(k) for ph in out['phases'].values() for k in ph['at']})) + " |")
    print("|---|---|---|---|---|")
    for name, ph in out["phases"].items():
        at = " / ".join(str(ph["at"][k]["peak_rss_mb"]) for k in sorted(ph["at"], key=int)) if ph["at"] else ""
        rate = round(ph["files"] / ph["seconds"], 1) if ph["seconds"] else ""
        print(f"| {name} | {ph['files']} | {ph['seconds']} | {rate} | {at} (overall {ph['peak_rss_mb']}) |")


if __name__ == "__main__":
    main()
