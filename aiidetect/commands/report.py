"""`aiidetect report RESULTS.jsonl -o report.html`: the newsroom HTML report
from a saved run, without scanning again."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import EXIT_OK, fail, stderr_console


def report_cmd(
    results: str = typer.Argument(..., help="JSONL (or JSON array) written by `aiidetect scan --format jsonl|json`; "
                                            "'-' reads stdin."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file to write (default: stdout)."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails",
                                    help="Embed a small thumbnail of each file that is still where the run found it, "
                                         "unchanged (its SHA-256 matches the record)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary on stderr."),
):
    """Render a self-contained HTML report (no network, printable) from a saved scan.

    Example: aiidetect scan photos/ --format jsonl -o run.jsonl && aiidetect report run.jsonl -o report.html

    Exit codes: 0 written; 2 the results file cannot be read or the output cannot be written.
    """
    from ..report.html import render_saved_run

    try:
        src = sys.stdin if results == "-" else open(results, encoding="utf-8", errors="replace")
    except OSError as exc:
        fail(f"cannot read {results}: {exc.strerror or exc}")
    try:
        out = open(output, "w", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    try:
        summary = render_saved_run(src, out, source=results, thumbnails=thumbnails)
    finally:
        if src is not sys.stdin:
            src.close()
        if output:
            out.close()
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
