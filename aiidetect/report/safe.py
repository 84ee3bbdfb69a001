"""Output that scripts can always parse, whatever the input files contain.

Four hazards come from the outside world and are neutralised here, once, for
every writer (json, jsonl, csv, table, meta's report):

* File names are bytes on POSIX. Python turns undecodable bytes into lone
  surrogates (PEP 383), which no UTF-8 encoder accepts. `display_path` renders
  them as U+FFFD; `path_bytes_b64` keeps the exact name (base64 of the raw
  bytes) so a script can still open the file.
* Floats parsed from files can be NaN or +-Infinity, which Python's json writes
  as bare `NaN`/`Infinity` (invalid JSON: JavaScript's JSON.parse rejects it).
  `clean` turns them into null.
* Strings from inside files (prompts, EXIF Make, XMP) may also carry lone
  surrogates or control characters; `clean` makes every string valid UTF-8.
* A CSV cell that starts with `=`, `+`, `-`, `@`, tab or CR is a formula to a
  spreadsheet (CSV injection): `=HYPERLINK(...).jpg` is a legal file name in an
  archive an auditor opens in Excel. `csv_cell` prefixes such text with an
  apostrophe; `CsvRows` is the csv.writer every CSV output goes through.
* A name holding ESC sequences drives the terminal it is printed on (retitles,
  repaints, hides lines), and one holding a bidi override or a zero-width
  character passes for another name. `printable` shows such characters as
  \\uXXXX in tables, CSV cells, the HTML report and every log line on stderr;
  `dumps` writes them as JSON escapes (the same string to a parser).
"""
from __future__ import annotations

import base64
import csv
import json
import math
import os
import re
from typing import Any


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def clean_str(s: str) -> str:
    """Any str -> one that encodes as UTF-8 (lone surrogates become U+FFFD)."""
    if not _has_surrogates(s):
        return s
    # surrogateescape'd bytes go back to bytes first, so b'\xff' shows as one U+FFFD, not garbage.
    return s.encode("utf-8", "surrogateescape" if _only_escapes(s) else "surrogatepass").decode("utf-8", "replace")


def _only_escapes(s: str) -> bool:
    # PEP 383 escapes are U+DC80..U+DCFF; other lone surrogates cannot round-trip through surrogateescape.
    return all(not (0xD800 <= ord(c) <= 0xDFFF) or 0xDC80 <= ord(c) <= 0xDCFF for c in s)


def display_path(p: Any) -> str:
    """The path as text for humans and JSON: exact when the name is valid UTF-8,
    otherwise with each undecodable byte shown as U+FFFD. Read from the name's bytes, whatever the
    file system encoding: in a latin-1 locale (or an ASCII one with PYTHONUTF8=0) Python's str for the
    UTF-8 name `Grüße.jpg` is not `Grüße.jpg`, and the record must say what a UTF-8 machine says."""
    if isinstance(p, bytes):
        return p.decode("utf-8", "replace")
    s = os.fspath(p) if not isinstance(p, str) else p
    if isinstance(s, str):
        try:
            return os.fsencode(s).decode("utf-8", "replace")
        except UnicodeEncodeError:  # a lone surrogate no file system produced, or no name this system has
            pass
    return clean_str(s)


def path_from_bytes(raw: bytes) -> str:
    """os.fsdecode, which on Windows (file name errors `surrogatepass`) raises on bytes that are not UTF-8:
    there such bytes name no file, and read so they say so (U+FFFD) rather than end the run."""
    try:
        return os.fsdecode(raw)
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def path_from_text(text: str) -> str:
    """The path to open for a name as records and the results store hold it (UTF-8 text of the name's bytes):
    the name itself where the file system encoding is UTF-8 (macOS, Windows, Linux in a UTF-8 or C locale);
    in a latin-1 or ASCII one, the str Python maps to those same bytes. Opened as given, `Grüße.jpg` was looked
    for under other bytes (latin-1), or raised UnicodeEncodeError (ASCII) and ended a `report` or a `--db`
    scan. Text with lone surrogates (a hand-made JSON) is returned as it is."""
    try:
        return os.fsdecode(text.encode("utf-8"))
    except UnicodeEncodeError:
        return text


def path_bytes_b64(p: Any) -> str | None:
    """base64 of the exact file-name bytes when the name is not valid UTF-8; None otherwise."""
    if isinstance(p, bytes):
        raw = p
    else:
        s = p if isinstance(p, str) else os.fspath(p)
        try:
            raw = os.fsencode(s)
        except UnicodeEncodeError:  # a lone surrogate no file system produced: keep it, as its code point
            raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s)
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")


def path_from_record(file: Any, file_bytes: Any) -> str:
    """The inverse of display_path/path_bytes_b64: the path to open for a record's `file` and
    `file_bytes` (exact bytes when the name is not UTF-8). ValueError when `file_bytes` is not
    strict base64 of a non-empty name, or `file` is not text."""
    if file_bytes:
        import binascii

        try:
            raw = base64.b64decode(file_bytes, validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ValueError("file_bytes is not base64") from exc
        if not raw:
            raise ValueError("file_bytes is empty")
        return os.fsdecode(raw)
    if not isinstance(file, str):
        raise ValueError("file is not text")
    return path_from_text(file)


def clean(obj: Any) -> Any:
    """Recursively: non-finite floats -> None, strings -> valid UTF-8, tuples -> lists,
    numpy scalars/arrays -> Python values. Anything else unknown -> str."""
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return clean_str(obj)
    if isinstance(obj, dict):
        return {clean_str(str(k)): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [clean(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return clean(tolist())
    if hasattr(obj, "__fspath__"):
        return display_path(obj)
    return clean_str(str(obj))


# C0/C1 controls (a name holding ESC, or U+009B, the one-character CSI, can drive the terminal), the
# bidirectional controls (U+202E makes "gpj.exe" read as "exe.jpg"), the line and paragraph separators
# (a name breaks onto two lines, as a newline would) and every character Unicode draws as nothing
# (Default_Ignorable_Code_Point: zero-width space and joiners, word joiner, byte-order mark, soft hyphen,
# variation selectors, Hangul fillers, tag characters): "photo\u200b.jpg" and "photo.jpg" are two files
# that looked the same, so a verdict could be read for the wrong one. Shown as escapes, never interpreted.
_HIDDEN_RANGES = ((0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x34F, 0x34F), (0x61C, 0x61C), (0x115F, 0x1160),
                  (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x206F),
                  (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
                  (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))


def _char_class(ranges: Any) -> str:
    return "[" + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges) + "]"


_UNSAFE = re.compile(_char_class(_HIDDEN_RANGES))
# The same, less C0 (json.dumps escapes those in strings itself; outside them, `indent` lays out with "\n").
_JSON_UNSAFE = re.compile(_char_class(r for r in _HIDDEN_RANGES if r[0] > 0x1F))
# ... and a backslash that would read as one of those escapes: a file named "photo\\u200b.jpg" (a backslash,
# then "u200b") was shown exactly as "photo\u200b.jpg", a zero-width space, is. It is shown as \u005c, so
# every \u in what `printable` gives is an escape. A backslash before anything else is left alone
# (C:\Users\...).
_SHOWN = re.compile(_UNSAFE.pattern + r"|\\(?=[uU][0-9a-fA-F]{4})")


def hidden_js_class() -> str:
    """The characters `printable` escapes, as a JavaScript RegExp character class (for the "u" flag): the
    report's search box escapes a typed name as the page shows it."""
    return "[" + "".join(f"\\u{{{a:x}}}" + (f"-\\u{{{b:x}}}" if b > a else "") for a, b in _HIDDEN_RANGES) + "]"


def _escape(c: str) -> str:
    o = ord(c)
    return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


def printable(s: str, keep: str = "") -> str:
    """For terminals and tables: valid UTF-8 with control, bidi and invisible characters escaped
    (\\uXXXX, or \\UXXXXXXXX past the BMP), but those in `keep` (a log line may hold its own newlines),
    and a backslash that would pass for such an escape shown as \\u005c."""
    return _SHOWN.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), clean_str(s))


def _json_escape(m: re.Match) -> str:
    o = ord(m.group())
    if o <= 0xFFFF:
        return f"\\u{o:04x}"
    o -= 0x10000
    return f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"


# A backslash that would read as one of backslashreplace's \xNN escapes (those of \u are `printable`'s).
_X_LOOKALIKE = re.compile(r"\\(?=x[0-9a-fA-F]{2})")


def printable_for(encoding: str | None):
    """A cell's text as the table's stream can print it: `printable`, and on a terminal whose encoding is not
    UTF-8 (LC_ALL=C, a latin-1 locale) every character it lacks as its backslash escape before the table is laid
    out. Escaped only when written (commands.errors.utf8_output), `Grüße.jpg` took 5 cells in the layout and 9
    on the screen, and every border after it was pushed out of line; the missing-value dash (a whole cell) is `-`
    there. A backslash that would pass for such an escape is one itself (\\x5c), as `printable` does for \\u: the
    file `Gr\\xfc.png` (ASCII) and `Grü.png` were shown alike, and `a—b.png` as `a-b.png`."""
    import codecs

    try:
        enc = codecs.lookup(encoding or "utf-8").name
    except LookupError:
        enc = "utf-8"
    if enc.startswith("utf"):
        return printable

    def shown(text: str) -> str:
        if text == "—":
            return "-"
        return _X_LOOKALIKE.sub(r"\\x5c", printable(text)).encode(enc, "backslashreplace").decode(enc)
    return shown


def is_terminal(stream: Any) -> bool:
    """Whether `stream` is a terminal (a closed or odd stream is not)."""
    try:
        return bool(getattr(stream, "isatty", lambda: False)())
    except (OSError, ValueError):
        return False


def table_width(stream: Any, default: int = 160) -> int | None:
    """The width a results table is laid out for: None at a terminal (rich asks it). Off one rich
    would assume 80 columns, too narrow for paths and reasons piped to a file or pager, so `default`,
    or COLUMNS where that is wider. Only wider: many environments export COLUMNS=80 whatever the reader
    of a file will use (test runners, CI shells), and a table cut to it folds every path."""
    if is_terminal(stream):
        return None
    cols = columns_setting(os.environ.get("COLUMNS"))
    return max(default, cols) if cols else default


# The widest a width setting is taken to be. No terminal is wider, and rich pads help panels, usage errors and
# `doctor`'s report out to the width: COLUMNS=100000000 made `aiidetect scan -h | less` write 7 GB with a 9 GB
# peak for ten minutes.
MAX_COLUMNS = 1000


def columns_setting(value: str | None) -> int | None:
    """A width setting (COLUMNS, LINES, TERMINAL_WIDTH) as a positive number at most MAX_COLUMNS, or None when it
    is none. ASCII digits only: str.isdigit() also passes `²`, on which int() raises, which ended every command at
    start-up."""
    if value is None or not value.isascii() or not value.strip().isdigit():
        return None
    return min(int(value), MAX_COLUMNS) or None


def dumps(obj: Any, **kw: Any) -> str:
    """json.dumps that can only produce strict, UTF-8-encodable JSON, safe to print on a terminal: the
    characters `printable` escapes are written as JSON escapes, which parse to the same string (json.dumps
    escapes C0 controls, but wrote U+009B, U+202E and U+200B raw: `scan -f jsonl` on a terminal obeyed
    them). They can only be inside strings: JSON's own syntax is ASCII."""
    kw.setdefault("ensure_ascii", False)
    return _JSON_UNSAFE.sub(_json_escape, json.dumps(clean(obj), allow_nan=False, **kw))


def loads_foreign(text: str | bytes) -> Any:
    """json.loads for text someone else wrote (a saved run, a store row, a bundle manifest): Python's
    parser recurses on nesting, so `[[[[...` 100,000 deep raises RecursionError, which is not a
    ValueError and would escape every `except ValueError` of its callers. Here it is one."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def strict_loads(text: str) -> Any:
    """The parser the tests hold every output to: rejects NaN/Infinity."""
    def _reject(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=_reject)


# OWASP's list of the characters that make a spreadsheet read a cell as a formula. A plain
# number ("-0.5", "+3e-2") is read as a number, never run, so it keeps its sign and its column type.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def csv_cell(v: Any) -> Any:
    """One CSV cell: None -> "", text -> valid UTF-8 that no spreadsheet runs as a formula
    (such text gets a leading apostrophe, so it shows as text) and no terminal runs as a
    control sequence (`-f csv` prints to the screen: ESC, BEL, CR... are shown as \\uXXXX;
    newline and tab stay, inside a quoted cell); numbers as they are."""
    if v is None:
        return ""
    if isinstance(v, bool) or isinstance(v, (int, float)):
        return v if not isinstance(v, float) or math.isfinite(v) else ""
    s = printable(v if isinstance(v, str) else str(v), keep="\n\t")
    if s.startswith(_FORMULA_START) and not _NUMBER.match(s):
        return "'" + s
    return s


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}\Z")


class CsvRows:
    """csv.writer for every CSV aiidetect writes: each cell through `csv_cell`, except the base64 of a
    `file_bytes` column (named in the first row, the header): an apostrophe in front of one that starts
    with `+` or `/` broke `base64 -d` and strict decoders, and base64's alphabet (letters, digits, `+ / =`)
    has no parenthesis, so a spreadsheet cannot call a function with it."""

    def __init__(self, stream: Any):
        self._w = csv.writer(stream)
        self._raw: set[int] | None = None

    def writerow(self, row: Any) -> None:
        row = list(row)
        if self._raw is None:
            self._raw = {k for k, v in enumerate(row) if v == "file_bytes"}
        self._w.writerow([v if k in self._raw and isinstance(v, str) and _BASE64.match(v) else csv_cell(v)
                          for k, v in enumerate(row)])

    def writerows(self, rows: Any) -> None:
        for r in rows:
            self.writerow(r)
