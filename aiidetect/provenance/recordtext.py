"""How much of one metadata text a record keeps.

A file's strings go into records, tables and reports. A 6 MB PNG whose EXIF Make was 3 MB made a
10 MB `meta` record and 60 MB of table on a terminal. Parsers keep the whole text (generator
parameters end with the settings line they need); records keep the first MAX_FIELD_CHARS of each
field and name every field cut, with its full length, so a quoted value is never taken for the whole.
"""
from __future__ import annotations

from typing import Any

MAX_FIELD_CHARS = 4000
MAX_DETAIL_CHARS = 200    # a value quoted inside an evidence detail line


def clip_fields(d: dict[str, Any], limit: int = MAX_FIELD_CHARS) -> dict[str, Any]:
    """A copy of `d` whose string values, and strings in list values, are at most `limit`
    characters; `truncated` maps each field that was cut to its full length (a list item as
    `k[i]`)."""
    out: dict[str, Any] = {}
    cut: dict[str, int] = {}
    for k, v in d.items():
        if isinstance(v, str) and len(v) > limit:
            cut[k] = len(v)
            v = v[:limit]
        elif isinstance(v, list):
            # A list of values read from the file (IPTC by-lines, every OriginatingProgram given)
            # is as long as its sender wants each item to be.
            cut.update({f"{k}[{i}]": len(x) for i, x in enumerate(v) if isinstance(x, str) and len(x) > limit})
            v = [x[:limit] if isinstance(x, str) else x for x in v]
        out[k] = v
    if cut:
        out["truncated"] = cut
    return out


def quote(s: str | None, limit: int = MAX_DETAIL_CHARS) -> str:
    """A value for a one-line detail: whole, or its first characters and how long it was."""
    s = s or ""
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s)} characters)"
