"""`aiidetect report RESULTS.jsonl -o report.html`: the newsroom HTML report
from a saved run, without scanning again."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import EXIT_OK, QuietOpt, fail, stderr_console


def report_cmd(
    results: str = typer.Argument(..., help="JSONL (or JSON array) written by `aiidetect scan --format jsonl|json`; "
                                            "'-' reads stdin."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file to write (default: stdout)."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails",
                                    help="Embed a small thumbnail of each file that is still where the run found it, "
                                         "unchanged (its SHA-256 matches the record)."),
    quiet: bool = QuietOpt,
):
    """Render a self-contained HTML report (no network, printable) from a saved scan.

    Example: aiidetect scan photos/ --format jsonl -o run.jsonl && aiidetect report run.jsonl -o report.html

    Exit codes: 0 written; 2 the results file cannot be read or the output cannot be written.
    """
    import contextlib

    from ..report.html import render_saved_run
    from ..report.output import OutputError, atomic_output, check_output

    if output:
        try:
            # `report run.jsonl -o run.jsonl` truncated the saved run before reading it.
            check_output(output, [] if results == "-" else [results])
        except OutputError as exc:
            fail(str(exc))
    try:
        src = sys.stdin if results == "-" else open(results, encoding="utf-8", errors="replace")
    except OSError as exc:
        fail(f"cannot read {results}: {exc.strerror or exc}")
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: src is sys.stdin or src.close())
        try:
            # Written whole, then renamed into place, like every other report.
            out = stack.enter_context(atomic_output(output)) if output else sys.stdout
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
        summary = render_saved_run(src, out, source=results, thumbnails=thumbnails)
    if not quiet:
        err = stderr_console()
        from rich.text import Text

        from ..report.safe import printable

        for p in summary["problems"][:20]:
            # The problem quotes the file's text: shown as text, never read as markup.
            err.print(Text.assemble(("note:", "yellow"), printable(f" {results}: {p}")), highlight=False)
        v = summary["verdicts"]
        err.print(f"report: {summary['files']} files ("
                  + ", ".join(f"{n} {k}" for k, n in sorted(v.items())) + f"), {summary['thumbnails']} thumbnails"
                  + (f" -> {output}" if output else ""), highlight=False)
    raise typer.Exit(EXIT_OK)


def register(apps) -> None:
    apps["root"].command("report")(report_cmd)
