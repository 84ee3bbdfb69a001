"""Help text that flows to the terminal's width.

Docstrings are wrapped at the source's line length, and the help renderer keeps every
newline of a paragraph after the first: `aiidetect report --help` at 80 columns broke a
sentence after "(not a saved", then went on. Each command's help is rejoined here, once
for the whole tree, so the renderer wraps prose at the terminal's width. Breaks a reader
is meant to see stay: indented lines, list items, and everything from an `Example:` or
`Examples:` on to the end of its paragraph (commands written one a line).
"""
from __future__ import annotations

import inspect
import re

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
