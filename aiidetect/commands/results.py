"""`aiidetect results summary|export|failed|merge`: answers from a results store
(`scan --db`) without scanning again."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import (EXIT_FINDINGS, EXIT_OK, QuietOpt, RecordFormat, RecordFormatOpt, ReportFormat, ReportFormatOpt, fail,
                     stderr_console, verdict_list)
from .errors import reader_left

results_app = typer.Typer(help="Query, export and merge results stores written by `aiidetect scan --db`.",
                          no_args_is_help=True)


Format, ExportFormat = RecordFormat, ReportFormat


DbOpt = typer.Option(..., "--db", help="Results store written by `aiidetect scan --db`.")
RunOpt = typer.Option(None, "--run", help="Only this run (an id or its prefix, see `results summary`). Default: all runs.")
FmtOpt = RecordFormatOpt


@contextlib.contextmanager
def _open(db: Path, check: bool | str = True):
    """The store, read-only. A damaged page met after the open (one its probe did not read) ends the
    command as a damaged store found at the open does: exit 2, one line, and the store's clean
    record gone, so the next open checks it whole (ResultsStore.__exit__)."""
    from ..store import ResultsStore, StoreError

    try:
        with ResultsStore(db, readonly=True, check=check) as store:
            yield store
    except StoreError as exc:
        fail(str(exc))


def _runs(store, run):
    from ..store import StoreError

    try:
        return store.resolve_run(run)
    except StoreError as exc:
        fail(str(exc))


def _rows_out(rows, columns: list[str], fmt: Format, title: str | None = None) -> None:
    """Flat rows to stdout in any format; table buffers its rows (it is meant
    for a screenful), the others stream."""
    from ..report.safe import CsvRows, dumps

    out = sys.stdout
    if fmt is Format.jsonl:
        for r in rows:
            out.write(dumps(r) + "\n")
    elif fmt is Format.json:
        from ..report.writers import JsonArray

        with JsonArray(out) as arr:  # closed on Ctrl-C too: the rows so far, as one array that parses
            for r in rows:
                arr.add(r)
    elif fmt is Format.csv:
        w = CsvRows(out)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c) for c in columns])
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from ..report.safe import printable_for, table_width

        console = Console(file=out, width=table_width(out))
        shown = printable_for(console.encoding)  # escaped before the layout, as scan's table (a non-UTF-8 terminal)
        t = Table(title=title, header_style="bold")
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            # Text, not markup: paths and messages come from the files (a name like "[red]x.jpg").
            t.add_row(*[Text("" if r.get(c) is None else shown(str(r.get(c)))) for c in columns])
        console.print(t)
    out.flush()


def _note(text: str, quiet: bool) -> None:
    if not quiet:
        typer.echo(f"note: {text}", err=True)


def _rekey_note(store, quiet: bool) -> None:
    """A store of an older version is re-keyed only when written to: read as it is, say what its
    counts may hold twice, and how to get a copy that does not."""
    if quiet:
        return
    n = store.folders_not_rekeyed()
    if n:
        _note(f"{store.path} was written by an older version, which kept a file's folder as spelled: {n} folder(s) "
              "of its rows lie behind a symbolic link here, and a file scanned by two spellings of its folder has a "
              "row for each, counted and exported twice. A `scan --db` into it keys them once; "
              f"`aiidetect results merge --db NEW.sqlite {store.path}` writes a copy keyed once", quiet)


def _shard_notes(db: Path, run_ids=None, quiet: bool = False) -> None:
    """A sharded run with a shard missing looks whole in every count: say so, on stderr."""
    if quiet:
        return
    with _open(db, check=False) as store:  # checked by the command a moment ago
        for note in store.shard_gaps(run_ids):
            _note(note, quiet)


def summary(db: Path = DbOpt, run: Optional[str] = RunOpt, fmt: Format = FmtOpt,
            folders: int = typer.Option(20, "--folders", min=0, help="How many folders to list (most flagged first)."),
            quiet: bool = QuietOpt):
    """Counts per verdict, per error code and per folder, and the runs in the store.

    Example: aiidetect results summary --db audit.sqlite --format json
    """
    with _open(db) as store:
        with store.snapshot():  # one moment of a store a scan is writing: its counts agree with each other
            ids = _runs(store, run)
            s = store.summary(ids, top_folders=folders)
            runs = [r for r in store.runs() if r["run_id"] in ids]
        _rekey_note(store, quiet)
    s["run_details"] = [{k: r[k] for k in ("run_id", "detectors", "fusion_model", "created_at", "files", "sessions")}
                        for r in runs]
    _shard_notes(db, ids, quiet)
    if s["distinct_files"] != s["files"]:
        _note(f"{len(ids)} runs scanned some of the same files: {s['files']} results of {s['distinct_files']} "
              "distinct files, each counted once per run (--run ID for one run)", quiet)
    if fmt is Format.json:
        from ..report.safe import dumps

        typer.echo(dumps(s, indent=2))
        raise typer.Exit(EXIT_OK)
    # Flat rows for jsonl/csv/table: one per (section, key).
    rows = [{"section": "verdict", "key": k, "files": v} for k, v in sorted(s["verdicts"].items())]
    rows += [{"section": "error", "key": k, "files": v} for k, v in s["errors"].items()]
    rows += [{"section": "folder", "key": f["folder"], "files": f["files"], "ai-generated": f["ai-generated"],
              "uncertain": f["uncertain"], "likely-real": f["likely-real"], "error": f["error"]} for f in s["folders"]]
    rows += [{"section": "run", "key": r["run_id"], "files": r["files"], "detectors": r["detectors"],
              "sessions": r["sessions"]} for r in s["run_details"]]
    cols = ["section", "key", "files", "ai-generated", "uncertain", "likely-real", "error", "detectors", "sessions"]
    _rows_out(rows, cols, fmt, title=(f"{s['files']} files in {db}" if s["distinct_files"] == s["files"] else
                                      f"{s['files']} results of {s['distinct_files']} files in {db}")
                                     + (f" ({s['folders_total']} folders, top {len(s['folders'])} shown)"
                                        if s["folders_total"] else ""))
    raise typer.Exit(EXIT_OK)


def export(db: Path = DbOpt, run: Optional[str] = RunOpt,
           fmt: ExportFormat = ReportFormatOpt,
           verdict: Optional[List[str]] = typer.Option(None, "--verdict",
                                                       help="Only these verdicts: ai, uncertain, real, error "
                                                            "(or ai-generated, likely-real; comma-separated or "
                                                            "repeated); error: every record with an error."),
           fail_on_any: bool = typer.Option(False, "--fail-on-any", help="Exit 1 when at least one record is exported."),
           quiet: bool = QuietOpt):
    """The stored records, exactly as `scan` printed them, or the HTML report of them.

    Formats: json, jsonl, csv, table, or html (docs/report.md; it holds every exported record until
    the end).

    Examples: aiidetect results export --db audit.sqlite --verdict ai,uncertain -f csv > flagged.csv
              aiidetect results export --db audit.sqlite -f jsonl | jq .
              aiidetect results export --db audit.sqlite --verdict ai,uncertain -f html > flagged.html
    """
    from ..report import make_writer
    from ..store import BAD_STORED_RECORD, ROW_CHECK, stored_record

    wanted = verdict_list(verdict)
    n = bad = 0
    # One moment of a store a scan may be writing: the records and the count of their files agree.
    with _open(db) as store, store.snapshot():
        ids = _runs(store, run)
        _rekey_note(store, quiet)
        names: list[str] = []
        for r in store.runs(counts=False):
            if r["run_id"] in ids:
                names += [x for x in r["detectors"].split(",") if x and x not in names]
        if fmt is ExportFormat.html:
            n, bad = _export_html(store, ids, wanted, str(db))
        else:
            writer = None
            try:
                writer = make_writer(fmt.value, sys.stdout, names)
                for row in store.iter_rows(ids, wanted, columns=("record", "file") + ROW_CHECK):
                    rec = stored_record(row)
                    bad += rec.error is not None and rec.error.code == BAD_STORED_RECORD
                    writer.write(rec)
                    n += 1
                writer.close(None)
            except BrokenPipeError:
                reader_left(EXIT_FINDINGS if fail_on_any and n else EXIT_OK)
            except BaseException:  # Ctrl-C, a fatal error: what reached stdout still parses
                if writer is not None:
                    with contextlib.suppress(Exception):
                        writer.abort()
                raise
        # A record does not say which run made it: a file of several runs (other detectors, heads, options)
        # came out once per run, with verdicts that may differ, and nothing said so. (Counting the distinct files
        # reads the runs' rows again: not for a note --quiet drops.)
        distinct = store.distinct_paths(ids, wanted) if len(ids) > 1 and n and not quiet else n
    if distinct != n:
        _note(f"{len(ids)} runs scanned some of the same files: {n} records of {distinct} distinct files, one per "
              "run that scanned it, and a record does not say its run (--run ID for one run; `results summary` "
              "lists the runs)", quiet)
    if bad:
        _note(f"{bad} stored record(s) could not be read; exported as error records ({BAD_STORED_RECORD}): "
              "scan those files again", quiet)
    raise typer.Exit(EXIT_FINDINGS if fail_on_any and n else EXIT_OK)


def _export_html(store, ids, wanted, source: str) -> tuple[int, int]:
    """The report page over stored records; thumbnails are read from the files that are still where
    the scan found them, unchanged (same SHA-256 as the record)."""
    from ..report.html import HtmlWriter, normalize_record, run_info_from_records
    from ..store import BAD_STORED_RECORD, ROW_CHECK, stored_record

    from ..report.output import utf8_stdout

    # One record at a time: the writer keeps a table row for each and a card for the first few thousand.
    w = HtmlWriter(utf8_stdout(), run_info_from_records((), source, sys.argv[1:]), record_facts=True)
    n = bad = 0
    try:
        for row in store.iter_rows(ids, wanted, columns=("record", "file") + ROW_CHECK):
            r = normalize_record(stored_record(row).to_dict())
            n += 1
            bad += (r.get("error") or {}).get("code") == BAD_STORED_RECORD
            w.add(r)
    except BrokenPipeError:
        raise
    except BaseException:  # Ctrl-C, SIGTERM, a fatal error: the page of the records so far, marked interrupted
        with contextlib.suppress(Exception):
            w.abort()
        raise
    w.close()
    return n, bad


def parquet(db: Path = DbOpt, out: Path = typer.Option(..., "--output", "-o", help="Parquet file to write."),
            run: Optional[str] = RunOpt, quiet: bool = QuietOpt):
    """The store's results table as Parquet, for pandas, Polars, DuckDB or Spark.

    One row per file and run; the full record as a JSON column. Needs pyarrow (installed with the
    ray extra).

    Example: aiidetect results parquet --db audit.sqlite -o audit.parquet
    """
    from ..report.output import OutputError, check_output
    from ..store import StoreError, write_parquet

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        fail("results parquet needs pyarrow: pip install pyarrow (or 'aiidetect[ray]')")
    try:
        check_output(out, [], store=db)
    except OutputError as exc:
        fail(str(exc))
    with _open(db) as store:
        try:
            n = write_parquet(store, _runs(store, run), out)
        except StoreError as exc:
            fail(str(exc))
    stderr_console(quiet).print(f"wrote {n} rows to {out}", highlight=False, markup=False)
    raise typer.Exit(EXIT_OK)


def failed(db: Path = DbOpt, run: Optional[str] = RunOpt, fmt: Format = FmtOpt, quiet: bool = QuietOpt):
    """The files with an error, and why (error code and message).

    Those that could not be scanned, and those whose pixels could not be read but whose metadata decided
    them ai-generated (docs/schema.md "Fields").

    `file_bytes` holds the exact name (base64) when it is not UTF-8, as in scan's records.

    Example: aiidetect results failed --db audit.sqlite -f csv > failed.csv
    """
    # file_bytes last (existing CSV column positions hold): the exact name when it is not UTF-8, so a
    # script can open the file to retry it (docs/schema.md, "File names").
    cols = ["file", "error_code", "error_message", "size", "scanned_at", "run_id", "file_bytes"]

    def rows(store, ids):
        from ..report.safe import loads_foreign

        for r in store.iter_rows(ids, ["error"], columns=tuple(cols[:-1]) + ("record",)):
            try:
                fb = loads_foreign(r.pop("record")).get("file_bytes")
            except (ValueError, AttributeError):
                fb = None
            yield {**r, "file_bytes": fb if isinstance(fb, str) else None}

    with _open(db) as store:
        ids = _runs(store, run)
        try:
            # (not in the table: base64 is for scripts, and a person reads `file`)
            _rows_out(rows(store, ids), cols[:-1] if fmt is Format.table else cols, fmt)
        except BrokenPipeError:
            reader_left(EXIT_OK)
    raise typer.Exit(EXIT_OK)


def merge(db: Path = typer.Option(..., "--db", help="The store to merge into (created if missing)."),
          sources: List[Path] = typer.Argument(..., help="Stores to copy in (e.g. one per shard)."),
          fmt: Format = FmtOpt, quiet: bool = QuietOpt):
    """Merge results stores (one per --shard, machine or session) into one.

    A file present in several keeps the row scanned last; shards of one run never overlap.
    Example: aiidetect results merge --db audit.sqlite shard1.sqlite shard2.sqlite shard3.sqlite
    """
    import sqlite3

    from ..report.output import same_file
    from ..store import MergeStopped, StoreError, merge_stores

    for s in sources:
        if not s.exists():
            fail(f"no results store at {s}")
        if same_file(s, db):  # a hard link too: two names, two -wal files, one database
            fail(f"{s} is the target store itself")
    try:
        rows = merge_stores(db, sources)
    except (StoreError, sqlite3.Error, OSError) as exc:
        fail(f"merge failed: {exc}" if isinstance(exc, MergeStopped)
             else f"merge failed (nothing of the failing source was kept): {exc}")
    _rows_out(rows, ["source", "rows", "added", "conflicts"], fmt)
    _shard_notes(db, quiet=quiet)
    raise typer.Exit(EXIT_OK)


def check(db: Path = DbOpt, fmt: Format = FmtOpt, quiet: bool = QuietOpt):
    """Run SQLite's full integrity check on a store, whatever its state.

    The other commands and `scan --db` run it only when the store is not as aiidetect last closed it,
    and a bounded probe otherwise. Reads every page: minutes for a store of tens of millions of rows. Damage is exit 2 and one line.
    Example: aiidetect results check --db audit.sqlite
    """
    with _open(db, check="full") as store:
        rows = store.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    _rows_out([{"store": str(db), "integrity": "ok", "rows": rows}], ["store", "integrity", "rows"], fmt)
    raise typer.Exit(EXIT_OK)


def register(apps) -> None:
    results_app.command("summary")(summary)
    results_app.command("export")(export)
    results_app.command("failed")(failed)
    results_app.command("merge")(merge)
    results_app.command("parquet")(parquet)
    results_app.command("check")(check)
    apps["root"].add_typer(results_app, name="results")
