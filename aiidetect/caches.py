"""The on-disk caches as a whole (`aiidetect cache info|clear`): where they are,
what they hold, and emptying them. The caches themselves live in
result_cache.py (scan results), feature_cache.py (backbone features),
optimize.py (the decisions of `aiidetect optimize` and their int8 graphs) and
weights_identity.py (weights_ids.sqlite: checkpoint and head file digests)."""
from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from .choices import choices

CACHES = ("results", "features", "optimize", "weights-ids")
# `cache clear`'s argument: the command line lists these in --help and refuses a typo as a usage error.
CacheName = choices("CacheName", *CACHES, "all", doc="What `cache clear` removes: one cache, or all.")
# The caches that are one SQLite database (and its -wal/-shm); optimize is a folder.
_SQLITE = ("results", "features", "weights-ids")


def cache_paths() -> dict[str, Path | None]:
    from .feature_cache import default_cache_path
    from .optimize import cache_root
    from .result_cache import default_path
    from .weights_identity import cache_path

    return {"results": default_path(), "features": default_cache_path(), "optimize": cache_root(),
            "weights-ids": cache_path()}


def counts(p: Path, name: str) -> dict:
    """Row counts, read-only. A WAL database in a folder the user cannot write
    (a shared, read-only cache) cannot be opened with mode=ro, which needs the
    -shm file; immutable=1 reads it without locks (uncheckpointed WAL pages,
    if any, are then not counted, and the report says so)."""

    def count(uri: str) -> dict:
        db = sqlite3.connect(uri, uri=True)
        try:
            if name == "weights-ids":  # digests remembered, and weights identities learned (docs/weights.md)
                return {"rows": int(db.execute("SELECT COUNT(*) FROM file_ids").fetchone()[0]),
                        "aliases": int(db.execute("SELECT COUNT(*) FROM aliases").fetchone()[0])}
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
    """cache name -> {path, exists, bytes, ...}: rows and files for results and features, rows and
    aliases for weights-ids ([read_only]), decisions and stale for optimize; [error] when unreadable."""
    out = {}
    for name, p in cache_paths().items():
        if p is None:
            from .userdirs import CACHES_OFF

            out[name] = {"path": None, "exists": False, "bytes": 0, "error": CACHES_OFF}
            continue
        if name == "optimize":
            from .optimize import decisions_info

            row = {"path": str(p), "exists": p.exists(), "bytes": 0, "decisions": 0, "stale": 0}
            try:
                row.update(decisions_info())
            except OSError as exc:
                row["error"] = str(exc)
            out[name] = row
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


def clear_caches(what: str = "results", stale: bool = False) -> list[dict]:
    """Delete one cache of CACHES or "all"; returns, for each cache named, what was removed:
    {name, path, files, bytes} (files 0: there was nothing to clear), plus decisions and in_use for
    optimize, rows and aliases_kept for weights-ids. `stale` (optimize only) removes just the decisions
    no scan of this installation can use (optimize.stale_reason). ValueError for another name; OSError
    when a file cannot be removed (those removed before it stay removed). Never anything but the cache
    files: user heads and results stores live elsewhere, and a link is removed as a link."""
    if what not in (*CACHES, "all"):
        raise ValueError(f"cache clear takes {', '.join(CACHES)} or all")
    if stale and what != "optimize":
        raise ValueError("--stale applies to the optimize decisions only: cache clear optimize --stale")
    done = []
    for name, p in cache_paths().items():
        if what not in (name, "all"):
            continue
        row = {"name": name, "path": None if p is None else str(p), "files": 0, "bytes": 0}
        if p is None:
            pass
        elif name == "optimize":
            from .optimize import clear_decisions

            row.update(clear_decisions(stale_only=stale))
        elif name == "weights-ids" and _keeps_aliases(p, row):
            pass
        else:
            _remove_database(p, row)
        done.append(row)
    return done


def _remove_database(p: Path, row: dict) -> None:
    for suffix in ("", "-wal", "-shm"):
        q = p.with_name(p.name + suffix)
        if os.path.lexists(q):  # a dangling link is removed too (the link, never its target)
            size = q.lstat().st_size
            q.unlink()
            row["files"] += 1
            row["bytes"] += size


def _keeps_aliases(p: Path, row: dict) -> bool:
    """Empty weights_ids.sqlite's digests in place when it holds learned aliases (a tensor identity known
    to be the file a legacy head names, docs/weights.md): those cannot be computed again without that
    file, and losing them makes such a head unavailable. True when done so; False to remove the files."""
    if not os.path.lexists(p) or _not_regular(p) or p.is_symlink():
        return False
    try:
        db = sqlite3.connect(str(p), timeout=30)
        try:
            aliases = int(db.execute("SELECT COUNT(*) FROM aliases").fetchone()[0])
            if not aliases:
                return False
            before = sum(_size(p.with_name(p.name + s)) for s in ("", "-wal"))
            # From here on a failure keeps the file: "database or disk is full" (VACUUM needs room for a
            # copy, and a full disk is when caches get cleared) or a lock held too long fell through to
            # removing it, aliases and all.
            try:
                with db:
                    row["rows"] = db.execute("DELETE FROM file_ids").rowcount
            except sqlite3.Error as exc:
                raise OSError(f"cannot empty {p} ({exc}); it is kept, with its {aliases} learned weights "
                              "identities") from exc
            try:
                db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # the digests are gone; the file just does not shrink yet
        finally:
            db.close()
    except sqlite3.Error:
        return False  # not a database of ours (damaged): nothing in it can be read, so nothing is lost
    row["bytes"] = max(0, before - sum(_size(p.with_name(p.name + s)) for s in ("", "-wal")))
    row["aliases_kept"] = aliases
    return True


def _size(q: Path) -> int:
    return q.lstat().st_size if os.path.lexists(q) else 0
