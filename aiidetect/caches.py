"""The on-disk caches as a whole (`aiidetect cache info|clear`): where they are,
what they hold, and emptying them. The caches themselves live in
result_cache.py (scan results) and feature_cache.py (backbone features)."""
from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

CACHES = ("results", "features")


def cache_paths() -> dict[str, Path | None]:
    from .feature_cache import default_cache_path
    from .result_cache import default_path

    return {"results": default_path(), "features": default_cache_path()}


def counts(p: Path, name: str) -> dict:
    """Row counts, read-only. A WAL database in a folder the user cannot write
    (a shared, read-only cache) cannot be opened with mode=ro, which needs the
    -shm file; immutable=1 reads it without locks (uncheckpointed WAL pages,
    if any, are then not counted, and the report says so)."""

    def count(uri: str) -> dict:
        db = sqlite3.connect(uri, uri=True)
        try:
            table = "results" if name == "results" else "features"
            out = {"rows": int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])}
            out["files"] = int(db.execute("SELECT COUNT(*) FROM files" if name == "results"
                                          else "SELECT COUNT(DISTINCT sha) FROM features").fetchone()[0])
            return out
        finally:
            db.close()

    from .store import sqlite_uri

    try:
        return count(sqlite_uri(p, "mode=ro"))
    except sqlite3.OperationalError:
        out = count(sqlite_uri(p, "immutable=1"))
        out["read_only"] = True
        return out


def _not_regular(p: Path) -> str | None:
    """Why the database at `p` (or its -wal/-shm) must not be opened, or None. SQLite's read-only open
    of a FIFO waits for a writer: `cache info` hung there, and no SIGTERM ended it."""
    for suffix in ("", "-wal", "-shm"):
        q = p.with_name(p.name + suffix)
        try:
            mode = q.stat().st_mode
        except OSError:
            continue  # not there (or a dangling link): nothing to read
        if not stat.S_ISREG(mode):
            return f"{q} is not a regular file; not read"
    return None


def cache_info() -> dict[str, dict]:
    """cache name -> {path, exists, bytes, rows, files[, read_only][, error]}."""
    out = {}
    for name, p in cache_paths().items():
        if p is None:
            from .userdirs import CACHES_OFF

            out[name] = {"path": None, "exists": False, "bytes": 0, "error": CACHES_OFF}
            continue
        row = {"path": str(p), "exists": p.exists(), "bytes": p.stat().st_size if p.exists() else 0}
        odd = _not_regular(p)
        if odd:
            row["error"] = odd
        elif p.exists():
            try:
                row.update(counts(p, name))
            except sqlite3.Error as exc:
                row["error"] = str(exc)
        out[name] = row
    return out


def clear_caches(what: str = "results") -> list[dict]:
    """Delete the results cache, the features cache or "all"; returns, for each cache named, what was
    removed: {name, path, files, bytes} (files 0: there was nothing to clear). ValueError for another
    name; OSError when a file cannot be removed (those removed before it stay removed)."""
    if what not in (*CACHES, "all"):
        raise ValueError("cache clear takes results, features or all")
    done = []
    for name, p in cache_paths().items():
        if what in (name, "all") and p is None:
            done.append({"name": name, "path": None, "files": 0, "bytes": 0})
        elif what in (name, "all"):
            row = {"name": name, "path": str(p), "files": 0, "bytes": 0}
            for suffix in ("", "-wal", "-shm"):
                q = p.with_name(p.name + suffix)
                if os.path.lexists(q):  # a dangling link is removed too (the link, never its target)
                    size = q.lstat().st_size
                    q.unlink()
                    row["files"] += 1
                    row["bytes"] += size
            done.append(row)
    return done
