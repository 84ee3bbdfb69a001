"""`aiidetect cache info|clear`: the on-disk caches (scan results, backbone features, optimize decisions,
weights identities)."""
from __future__ import annotations

from typing import Optional

import typer

from ..caches import CacheName
from .common import EXIT_OK, JsonFormat, QuietOpt, SummaryFormatOpt, fail, stderr_console


def info(fmt: JsonFormat = SummaryFormatOpt, quiet: bool = QuietOpt):  # -q: nothing on stderr to silence
    """Where the caches are and how much they hold.

    Scan results, backbone features, the decisions of `aiidetect optimize` (and their int8 graphs),
    remembered weights identities.

    Example: aiidetect cache info -f json
    """
    from ..caches import cache_info

    out = cache_info()
    if fmt == JsonFormat.json:
        from ..report.safe import dumps
        typer.echo(dumps(out, indent=2))
        return
    for name, row in out.items():
        if row["path"] is None:
            typer.echo(f"{name:11s} off  ({row['error']})")
            continue
        if not row["exists"]:
            detail = "empty"
        elif name == "optimize":
            detail = (f"{row['decisions']} decision{'s' if row['decisions'] != 1 else ''}, {row['stale']} stale, "
                      f"{row['bytes'] / 1e6:.1f} MB")
        elif name == "weights-ids":
            detail = f"{row.get('rows', 0)} rows, {row.get('aliases', 0)} aliases, {row['bytes'] / 1e6:.1f} MB"
        else:
            detail = f"{row.get('files', 0)} files, {row.get('rows', 0)} rows, {row['bytes'] / 1e6:.1f} MB"
        ro = "; read-only" if row.get("read_only") else ""
        typer.echo(f"{name:11s} {row['path']}  ({detail}{ro}{'; ' + row['error'] if 'error' in row else ''})")


def clear(what: Optional[CacheName] = typer.Argument(None, help="Which cache: results (the default; optimize with "
                                                                  "--stale), features, optimize, weights-ids, or all."),
          stale: bool = typer.Option(False, "--stale", help="With optimize (the default then): only the decisions no "
                                                            "scan of this installation can use (another aiidetect, "
                                                            "torch or onnxruntime version, damaged, or a link)."),
          quiet: bool = QuietOpt):
    """Delete cached scan results (default), features, optimize decisions, weights identities, or all.

    Never a user's heads or a results store: only the cache files. Examples:
      aiidetect cache clear all
      aiidetect cache clear optimize --stale
    """
    from ..caches import clear_caches

    try:
        cleared = clear_caches(what.value if what else ("optimize" if stale else "results"), stale=stale)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:  # e.g. a folder where the database should be, or a read-only cache folder
        fail(f"cannot clear the cache: {exc}")
    err = stderr_console(quiet)
    for row in cleared:
        # What was removed, not just what was asked: "cleared" over an empty cache told nothing.
        n, size = row["files"], row["bytes"]
        amount = f"{size} bytes" if size < 1e6 else f"{size / 1e6:.1f} MB"
        if "rows" in row:  # weights-ids emptied in place: its learned aliases stay
            done = (f"cleared {row['name']}: {row['rows']} rows, {amount}; {row['aliases_kept']} learned weights "
                    "identities kept (docs/weights.md)")
        elif n:
            what_went = (f"{row['decisions']} decision{'s' if row['decisions'] != 1 else ''} ({n} file{'s' if n != 1 else ''})"
                         if "decisions" in row else f"{n} file{'s' if n != 1 else ''}")
            done = f"cleared {row['name']}{' (stale)' if stale else ''}: {what_went}, {amount}"
        else:
            done = f"{row['name']}: nothing{' stale' if stale else ''} to clear"
        if row.get("in_use"):
            done += f"; {row['in_use']} left: an `aiidetect optimize` is measuring it"
        where = row["path"] or "off: no home folder; set AIIDETECT_CACHE"
        err.print(f"{done} ({where})", highlight=False, markup=False)
    raise typer.Exit(EXIT_OK)


def register(apps) -> None:
    apps["cache"].command("info")(info)
    apps["cache"].command("clear")(clear)
