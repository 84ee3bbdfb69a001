"""`aiidetect cache info|clear`: the on-disk caches (scan results, backbone features)."""
from __future__ import annotations

import json

import typer

from .common import EXIT_OK, fail


def _paths():
    from ..features import default_cache_path
    from ..result_cache import default_path

    return {"results": default_path(), "features": default_cache_path()}


def info(fmt: str = typer.Option("table", "--format", "-f", help="table | json")):
    """Where the caches are and how much they hold."""
    import sqlite3

    out = {}
    for name, p in _paths().items():
        row = {"path": str(p), "exists": p.exists(), "bytes": p.stat().st_size if p.exists() else 0}
        if p.exists():
            try:
                row.update(_counts(p, name))
            except sqlite3.Error as exc:
                row["error"] = str(exc)
        out[name] = row
    if fmt == "json":
        typer.echo(json.dumps(out, indent=2))
        return
    for name, row in out.items():
        detail = (f"{row.get('files', 0)} files, {row.get('rows', 0)} rows, {row['bytes'] / 1e6:.1f} MB"
                  if row["exists"] else "empty")
        ro = "; read-only" if row.get("read_only") else ""
        typer.echo(f"{name:9s} {row['path']}  ({detail}{ro}{'; ' + row['error'] if 'error' in row else ''})")


def _counts(p, name: str) -> dict:
    """Row counts, read-only. A WAL database in a folder the user cannot write
    (a shared, read-only cache) cannot be opened with mode=ro, which needs the
    -shm file; immutable=1 reads it without locks (uncheckpointed WAL pages,
    if any, are then not counted, and the report says so)."""
    import sqlite3
    from urllib.parse import quote

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

    base = f"file:{quote(str(p))}"
    try:
        return count(base + "?mode=ro")
    except sqlite3.OperationalError:
        out = count(base + "?immutable=1")
        out["read_only"] = True
        return out


def clear(what: str = typer.Argument("results", help="results | features | all")):
    """Delete cached scan results (default), backbone features, or both."""
    if what not in ("results", "features", "all"):
        fail("cache clear takes results, features or all")
    for name, p in _paths().items():
        if what in (name, "all"):
            for suffix in ("", "-wal", "-shm"):
                q = p.with_name(p.name + suffix)
                if q.exists():
                    q.unlink()
            typer.echo(f"cleared {name} ({p})", err=True)
    raise typer.Exit(EXIT_OK)


def register(apps) -> None:
    apps["cache"].command("info")(info)
    apps["cache"].command("clear")(clear)
