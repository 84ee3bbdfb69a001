"""Record writers: table (rich, for people), json, jsonl, csv (for scripts)."""
from __future__ import annotations

__all__ = ["FORMATS", "make_writer"]


def __getattr__(name: str):
    # Imported when asked for: every command's start imports report.output (its stdout guard), which must
    # not bring the writers, the CSV module and the records with it.
    if name in __all__:
        from . import writers

        return getattr(writers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
