"""Help text that flows to the terminal's width.

Docstrings are wrapped at the source's line length, and the help renderer keeps every
newline of a paragraph after the first: `aiidetect report --help` at 80 columns broke a
sentence after "(not a saved", then went on. Each command's help is rejoined here, once
for the whole tree, so the renderer wraps prose at the terminal's width. Breaks a reader
is meant to see stay: indented lines, list items, and everything from an `Example:` or
`Examples:` on to the end of its paragraph (commands written one a line).

Piped to a file or a pager, help is laid out as wide as a piped table (160 columns, or COLUMNS
where that is wider) instead of the 80 rich assumes off a terminal: at 80 the examples were split
(`... | jq` over `.threshold`) and a copied one no longer ran.
"""
from __future__ import annotations

import inspect
import re
import sys

# A line that starts a block of its own rather than continuing the sentence above it.
_BLOCK = re.compile(r"(\s|[-*•] |\d+[.)] )")
_EXAMPLES = re.compile(r"Examples?:")


def reflow(text: str) -> str:
    """The help with each prose paragraph on one line; blank lines, indented lines, list items
    and Examples blocks as written. A paragraph marked with click's ``\\b`` stays verbatim."""
    return "\n\n".join(_paragraph(p) for p in inspect.cleandoc(text).split("\n\n"))


def _paragraph(par: str) -> str:
    if par.startswith("\b"):
        return par
    lines = par.split("\n")
    out = [lines[0]]
    verbatim = bool(_EXAMPLES.match(lines[0]))
    for line in lines[1:]:
        verbatim = verbatim or bool(_EXAMPLES.match(line))
        if verbatim or _BLOCK.match(line) or not line.strip():
            out.append(line)
        else:
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
    return "\n".join(out)


def reflow_tree(command) -> None:
    """Reflow the help of a click command and of every command below it."""
    if command.help:
        command.help = reflow(command.help)
    _wide_when_piped(command)
    for sub in getattr(command, "commands", {}).values():
        reflow_tree(sub)


def reflowing(group_class):
    """The root group's class, reflowing the whole command tree's help as it is built (typer
    builds the tree anew for each run, the subcommands before the group that holds them)."""

    class ReflowingGroup(group_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            reflow_tree(self)

    ReflowingGroup.__name__ = ReflowingGroup.__qualname__ = group_class.__name__
    return ReflowingGroup


def _wide_when_piped(command) -> None:
    """Lay the command's help out for table_width of the stream it is printed on (typer's printer
    writes to sys.stdout, which the no-command usage error points at stderr): None at a terminal,
    which leaves rich to ask it. Only for the help: typer's error panels share the width setting, and
    one on a terminal while stdout is piped must keep the terminal's width."""
    own = command.format_help
    if getattr(own, "wide_when_piped", False):
        return

    def format_help(ctx, formatter):
        from typer import rich_utils

        from ..report.safe import table_width

        kept = rich_utils.MAX_WIDTH
        if kept is None:  # TERMINAL_WIDTH, typer's own setting, is the user's choice and stands
            rich_utils.MAX_WIDTH = table_width(sys.stdout)
        try:
            return own(ctx, formatter)
        finally:
            rich_utils.MAX_WIDTH = kept

    format_help.wide_when_piped = True
    command.format_help = format_help
