"""`aiidetect weights list|verify`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import (EXIT_ERROR, EXIT_OK, BackboneOptions, JsonFormat, QuietOpt, SummaryFormatOpt, WeightsDirOpt,
                     backbone_options)


def list_heads(weights_dir: Optional[List[Path]] = WeightsDirOpt,
               fmt: JsonFormat = SummaryFormatOpt, quiet: bool = QuietOpt):
    """List trained heads: detector, origin (shipped, user, refused), backbone, source and licence.

    Example: aiidetect weights list -f json
    """
    from rich.markup import escape

    from ..api import head_rows
    from ..heads import unreadable_heads
    from .common import checked_weights_dirs, stderr_console

    dirs = checked_weights_dirs(weights_dir)
    rows = head_rows(dirs)
    for path, why in unreadable_heads(dirs):  # listed nowhere else: say so (`weights verify` fails them)
        stderr_console(quiet).print(f"skipped {escape(str(path))}: damaged head ({escape(why)})", highlight=False)
    if fmt == "json":
        from ..report.safe import dumps
        typer.echo(dumps({"weights_dirs": [str(d) for d in dirs], "heads": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..report.safe import printable_for, table_width

    console = Console(width=table_width(sys.stdout))
    printable = printable_for(console.encoding)  # a non-UTF-8 terminal: escaped before the layout, as scan's table
    # Cells as Text, through printable: a manifest's source or licence and a folder's name are the head's
    # sender's text, and ESC sequences in them drove the terminal the table was printed on.
    t = Table(title=Text(printable("heads in " + ", ".join(str(d) for d in dirs))), header_style="bold")
    # origin: shipped (pinned, verified), refused (in a shipped folder, not shipped) or user; source is only
    # what a manifest claims, and a user's copy claimed the shipped head's
    cols = ("name", "detector", "origin", "backbone", "source", "license", "path")
    for col in cols:
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*(Text(printable(str(r[c] or ""))) for c in cols))
    # piped, as wide as scan's table: rich's 80 folded a source URL into 13-character slices
    console.print(t)
    if not rows:
        from ..detectors import onnx_families  # the families that serve trained heads

        stderr_console(quiet).print(f"no heads found; train one with `aiidetect train {'|'.join(onnx_families())}`")


@backbone_options()
def verify(weights_dir: Optional[List[Path]] = WeightsDirOpt,
           backbone_opts: BackboneOptions = None,
           check_backbone: bool = typer.Option(False, "--check-backbone",
                                               help="Also build the backbone, check every head's fingerprint against "
                                                    "it and build each head on it as a scan does."),
           fmt: JsonFormat = SummaryFormatOpt,
           quiet: bool = QuietOpt):  # accepted like everywhere: verify prints only its result and errors
    """Check every head's files against its manifest checksums (and, optionally, its backbone).

    Exit 2 when a head fails, when --check-backbone cannot build the backbone, or when no head is
    found (nothing verified is not a pass); with --format json the document still comes, saying what
    failed and why ("ok": false).

    Examples:
      aiidetect weights verify --check-backbone --backbone ViT-L-14 --pretrained openai
      aiidetect weights verify -f json | jq -e .ok     # fleet checks
    """
    from rich.console import Console
    from rich.markup import escape

    from ..api import verify_heads
    from .common import checked_weights_dirs, stderr_console

    con = Console()
    spec = backbone_opts.spec() if check_backbone else None
    errors: list[str] = []   # each one fails the run (exit 2, "ok": false)

    def note(msg: str) -> None:
        # The check asked for did not happen: an error (stderr, exit 2), not a note a fleet check
        # reads past (a damaged backbone in the cache printed this and exited 0).
        errors.append(msg)
        stderr_console().print(f"[bold red]error:[/] backbone unavailable, fingerprints not checked: {escape(msg)}",
                               highlight=False, soft_wrap=True)

    dirs = checked_weights_dirs(weights_dir)
    passed_over: list[str] = []
    checked = verify_heads(dirs, spec, on_note=note, passed_over=passed_over)
    for line in passed_over:
        stderr_console(quiet).print(f"note: {escape(line)}", highlight=False, soft_wrap=True)
    if not checked:
        from ..detectors import onnx_families

        # Nothing verified is not a pass: an empty or unmounted folder, or a head folder given for its
        # parent, exited 0 with "ok": true, and `verify -f json | jq -e .ok` vouched for heads that were
        # never looked at (a mistyped path is already exit 2 for the same reason).
        msg = (f"no heads found, nothing verified (looked in {', '.join(str(d) for d in dirs)}); train one "
               f"with `aiidetect train {'|'.join(onnx_families())}`")
        errors.append(msg)
        stderr_console().print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    failed = bool(errors) or any(p for _, _, p in checked)
    if fmt == JsonFormat.json:
        # A fleet check parses this instead of the ok/FAIL lines: what failed is in the document too.
        from ..report.safe import dumps
        typer.echo(dumps({"ok": not failed, "weights_dirs": [str(d) for d in dirs],
                          # no head, no fingerprint compared: "true" there vouched for a check that never ran
                          # (with heads, every error is the backbone's)
                          "backbone_checked": check_backbone and bool(checked) and not errors,
                          "errors": errors,
                          "heads": [{"name": name, "path": path, "ok": not problems, "problems": problems}
                                    for name, path, problems in checked]}, indent=2))
        raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)
    from ..report.safe import printable

    for name, path, problems in checked:
        # names and reasons come from manifests and folder names: never markup, never a control sequence
        name, path, problems = printable(name), printable(str(path)), [printable(str(p)) for p in problems]
        if problems:
            con.print(f"[red]FAIL[/] {escape(name)} ({escape(path)}): " + escape("; ".join(problems)), highlight=False,
                      soft_wrap=True)
        else:
            con.print(f"[green]ok[/]   {escape(name)} ({escape(path)})", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)


def register(apps) -> None:
    apps["weights"].command("list")(list_heads)
    apps["weights"].command("verify")(verify)
