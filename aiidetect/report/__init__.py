"""Record writers: table (rich, for people), json, jsonl, csv (for scripts)."""
from .writers import FORMATS, make_writer

__all__ = ["FORMATS", "make_writer"]
