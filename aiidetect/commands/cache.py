"""`aiidetect cache info|clear`: the on-disk caches (scan results, backbone features)."""
from __future__ import annotations

import json

import typer

from .common import EXIT_OK, JsonFormat, QuietOpt, SummaryFormatOpt, fail, stderr_console


def info(fmt: JsonFormat = SummaryFormatOpt, quiet: bool = QuietOpt):  # -q: nothing on stderr to silence
    """Where the caches are and how much they hold.

    Example: aiidetect cache info -f json
    """
    from ..caches import cache_info

    out = cache_info()
    if fmt == JsonFormat.json:
        typer.echo(json.dumps(out, indent=2))
        return
    for name, row in out.items():
        if row["path"] is None:
            typer.echo(f"{name:9s} off  ({row['error']})")
            continue
        detail = (f"{row.get('files', 0)} files, {row.get('rows', 0)} rows, {row['bytes'] / 1e6:.1f} MB"
                  if row["exists"] else "empty")
        ro = "; read-only" if row.get("read_only") else ""
        typer.echo(f"{name:9s} {row['path']}  ({detail}{ro}{'; ' + row['error'] if 'error' in row else ''})")


def clear(what: str = typer.Argument("results", help="results | features | all"), quiet: bool = QuietOpt):
    """Delete cached scan results (default), backbone features, or both.

    Example: aiidetect cache clear all
    """
    from ..caches import clear_caches

    try:
        cleared = clear_caches(what)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:  # e.g. a folder where the database should be, or a read-only cache folder
        fail(f"cannot clear the cache: {exc}")
    err = stderr_console(quiet)
    for row in cleared:
        # What was removed, not just what was asked: "cleared" over an empty cache told nothing.
        n, size = row["files"], row["bytes"]
        amount = f"{size} bytes" if size < 1e6 else f"{size / 1e6:.1f} MB"
        done = f"cleared {row['name']}: {n} file{'s' if n != 1 else ''}, {amount}" if n \
            else f"{row['name']}: nothing to clear"
        where = row["path"] or "off: no home folder; set AIIDETECT_CACHE"
        err.print(f"{done} ({where})", highlight=False, markup=False)
    raise typer.Exit(EXIT_OK)


def register(apps) -> None:
    apps["cache"].command("info")(info)
    apps["cache"].command("clear")(clear)
