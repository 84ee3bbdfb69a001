"""Fixed choices of options (--runtime, --dtype, --format, ...) as str enums:
the library validates against them and the command line shows them as the
option's values. One helper makes them all, so a choice is declared in one line."""
from __future__ import annotations

import sys
from enum import Enum


def choices(name: str, *values: str, doc: str | None = None) -> type[Enum]:
    """A str Enum whose members are named and valued after `values`
    (``choices("Engine", "local", "ray").ray == "ray"``)."""
    caller = sys._getframe(1).f_globals.get("__name__", __name__)  # so members pickle (the Ray engine ships options)
    enum = Enum(name, [(v.replace("-", "_"), v) for v in values], type=str, module=caller)
    if doc:
        enum.__doc__ = doc
    return enum
