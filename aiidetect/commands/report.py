"""`aiidetect report RESULTS.jsonl -o report.html`: the newsroom HTML report
from a saved run, without scanning again."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..limits import REPORT_MAX_CARDS
from .common import EXIT_OK, QuietOpt, fail, stderr_console, verdict_list


class _Unread(Exception):
    """An OSError reading the saved run, kept apart from the report's writes: neither names a file, and the
    guard around -o's file took the read's I/O error for a failed write of the report."""


class _Reads:
    """The saved run's stream (what render_saved_run reads of it), its read errors raised as _Unread."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):   # fileno (the page's source date) and the rest: the stream's own
        return getattr(self._stream, name)

    def _call(self, name: str, *a):
        try:
            return getattr(self._stream, name)(*a)
        except OSError as exc:
            raise _Unread(exc.strerror or str(exc)) from exc

    def read(self, *a):
        return self._call("read", *a)

    def readline(self, *a):
        return self._call("readline", *a)


def _utf8_stdin():
    """stdin read as the saved run's UTF-8, as a file is: read in the locale's encoding, a latin-1
    locale turned every non-ASCII name into mojibake and an ASCII one (PYTHONIOENCODING=ascii) ended
    the report with an unexpected UnicodeDecodeError."""
    import io

    if sys.stdin is None:  # started with stdin closed (`<&-`): was an AttributeError, said as a bug
        fail("cannot read -: stdin is closed; pipe the saved run in or name its file")
    buf = getattr(sys.stdin, "buffer", None)
    if buf is None:  # a text stream put in its place (a library caller's): its text is already decoded
        return sys.stdin
    return io.TextIOWrapper(buf, encoding="utf-8", errors="replace")


def report_cmd(
    results: str = typer.Argument(..., help="JSONL (or JSON array) written by `aiidetect scan --format jsonl|json`; "
                                            "'-' reads stdin."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file to write (default: stdout)."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails",
                                    help="Embed a small thumbnail of each file that is still where the run found it, "
                                         "unchanged (its SHA-256 matches the record)."),
    max_cards: int = typer.Option(REPORT_MAX_CARDS, "--max-cards", min=0,
                                  help="Detailed cards for at most this many files (AI-generated first, then "
                                       "uncertain, errors, likely real); every file is still in the table. "
                                       "0: a card for every file."),
    verdict: Optional[List[str]] = typer.Option(None, "--verdict",
                                                help="Only the files with these verdicts: ai, uncertain, real, error "
                                                     "(or ai-generated, likely-real; comma-separated or repeated); error: every "
                                                     "record with an error."),
    quiet: bool = QuietOpt,
):
    """Render a self-contained HTML report (no network, printable) from a saved scan.

    Exit codes: 0 written; 2 the results file cannot be read, holds no scan record at all (not a saved
    run: a photo, a log), or the output cannot be written.

    Examples:
      aiidetect scan photos/ --format jsonl -o run.jsonl && aiidetect report run.jsonl -o report.html
      aiidetect report run.jsonl --verdict ai-generated --verdict uncertain -o flagged.html
    """
    import contextlib

    from ..report.html import NotASavedRun, render_saved_run
    from ..report.output import OutputError, atomic_output, check_output, utf8_stdout

    verdict = verdict_list(verdict)

    if output:
        try:
            # `report run.jsonl -o run.jsonl` truncated the saved run before reading it.
            check_output(output, [] if results == "-" else [results])
        except OutputError as exc:
            fail(str(exc))
    try:
        src = _utf8_stdin() if results == "-" else open(results, encoding="utf-8", errors="replace")
    except OSError as exc:
        fail(f"cannot read {results}: {exc.strerror or exc}")
    with contextlib.ExitStack() as stack:
        if results != "-":
            stack.callback(src.close)
        elif src is not sys.stdin:
            stack.callback(src.detach)  # our UTF-8 wrapper goes; sys.stdin's own buffer stays open
        try:
            # Written whole, then renamed into place, like every other report.
            out = stack.enter_context(atomic_output(output)) if output else utf8_stdout()
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
        try:
            # A full disk under stdout is the run's stdout guard's to name (report.output.StdoutWrites)
            summary = render_saved_run(_Reads(src), out, source=results, thumbnails=thumbnails,
                                       max_cards=max_cards, verdicts=verdict or ())
            out.flush()
        except _Unread as exc:   # -o's file is removed, stdout has what was written
            fail(f"cannot read {results}: {exc}")
        except NotASavedRun as exc:  # raised before a byte is written; -o keeps what it held
            # Not through printable() here: fail's console escapes it, and escaped twice, a zero-width space
            # read as a backslash and "u200b".
            fail(str(exc))
    if not quiet:
        err = stderr_console()
        from rich.text import Text

        from ..report.safe import printable

        for p in summary["problems"][:20]:
            # The problem quotes the file's text: shown as text, never read as markup.
            err.print(Text.assemble(("note:", "yellow"), printable(f" {results}: {p}")), highlight=False)
        if len(summary["problems"]) > 20:
            err.print(f"note: {len(summary['problems']) - 20} more notes about {results} (each line "
                      "that is not a record has an error card)", highlight=False, markup=False)
        v = summary["verdicts"]
        part = f" of {summary['records']} records" if verdict else ""
        cards = f", cards for {summary['cards']}" if summary["cards"] < summary["files"] else ""
        d = summary.get("decided_errors") or 0
        # `scan` counted these among its errors too: the same run must not read "2 errors" there and "1 error"
        # here without a word on the file in between.
        # In `scan`'s order and words ("2 uncertain, 1 likely-real, 2 errors"), and the page's tiles' order: the
        # same run read "2 error, 1 likely-real, 2 uncertain" here, sorted by name.
        order = ("ai-generated", "uncertain", "likely-real", "error")
        counts = ", ".join(f"{n} {k}" + ("s" if k == "error" and n != 1 else "")
                           + (f" ({d} by {'its' if d == 1 else 'their'} metadata alone: pixels not read)"
                              if k == "ai-generated" and d else "")
                           for k, n in sorted(v.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                                         else len(order), kv[0])))
        # an empty run read "0 files ()"
        err.print(f"report: {summary['files']} files{part}" + (f" ({counts})" if counts else "")
                  + f"{cards}, {summary['thumbnails']} "
                  "thumbnails" + (f" -> {output}" if output else ""), highlight=False, markup=False)
    raise typer.Exit(EXIT_OK)


def register(apps) -> None:
    apps["root"].command("report")(report_cmd)
