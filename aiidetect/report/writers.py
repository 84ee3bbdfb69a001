"""Writers receive records one at a time (streaming) and close at the end.

json writes one array incrementally, so a 100k-file scan never holds every
record in memory; jsonl flushes each line as its file finishes.
"""
from __future__ import annotations

import contextlib
import re
import textwrap
from typing import IO, Any, Mapping, Sequence

from ..fusion import (ASIDE_FOR_FILE, C2PA_UNREAD_ID, DECISIVE_P_LEAST, DEFAULT_AI_THRESHOLD, DEFAULT_REAL_THRESHOLD,
                      SOFT_ONLY, SOFT_ONLY_WAS, shown_p_text)
from ..records import PIXELS_UNREAD, Record
from .safe import CsvRows, clean, dumps

FORMATS = ("table", "json", "jsonl", "csv")


class Writer:
    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, rec: Record) -> None:
        raise NotImplementedError

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self.stream.flush()

    def abort(self) -> None:
        """The run stops early (Ctrl-C, a fatal error): leave what was written parseable."""
        self.stream.flush()


class JsonlWriter(Writer):
    def write(self, rec: Record) -> None:
        self.stream.write(dumps(rec.to_dict()) + "\n")
        self.stream.flush()


class JsonArray:
    """One JSON array written an item at a time (memory stays at one item), in json.dumps's own
    layout: one item a line, or `indent` as json.dumps(list, indent=...) would lay it out. Used as
    a context manager it is closed on the way out whatever happens (Ctrl-C included), so what
    reached the stream always parses."""

    def __init__(self, stream: IO[str], indent: int | None = None):
        self.stream, self.indent, self.n = stream, indent, 0
        self.stream.write("[")

    def add(self, obj: Any) -> None:
        pad = " " * (self.indent or 2)
        text = dumps(obj, indent=self.indent).replace("\n", "\n" + pad) if self.indent else dumps(obj)
        self.stream.write(("," if self.n else "") + "\n" + pad + text)
        self.n += 1

    def close(self) -> None:
        self.stream.write("\n]\n" if self.n else "]\n")

    def __enter__(self) -> "JsonArray":
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):  # a reader that left: nothing more can be said
            self.close()


class JsonWriter(Writer):
    def __init__(self, stream):
        super().__init__(stream)
        self.array = JsonArray(stream)

    def write(self, rec: Record) -> None:
        self.array.add(rec.to_dict())

    def close(self, summary=None) -> None:
        self.array.close()
        self.stream.flush()

    def abort(self) -> None:
        self.close()  # the records so far, as one complete array


def top_attribution(rec: Record) -> tuple[str, float] | None:
    best = None
    for r in rec.detectors.values():
        for a in (r.extra.get("attribution") or [])[:1]:
            if best is None or a.get("p", 0) > best[1]:
                best = (a.get("label"), float(a.get("p", 0)))
    return best


def fusion_label(f: dict | None) -> str:
    """One short text for the fusion that made a verdict: 'rules' or 'NAME sha256:abcd1234... (PATH)'.
    Any value of each field is text here: a saved run's fusion field is anybody's (an integer sha256)."""
    if not f:
        return ""
    if f.get("kind") != "model":
        return "rules"
    gone = f.get("left_out")
    without = (f" without {', '.join(map(str, gone))} (head changed since it was fitted)"
               if isinstance(gone, list) and gone else "")
    return f"{f.get('name') or 'fusion'} sha256:{str(f.get('sha256') or '')[:12]} ({f.get('path')}){without}"


# The line's own id, at its start: an evidence line quotes the file's metadata, and a PNG Software text holding
# ":c2pa.unreadable: this photo was verified ..." rode along into the table's one-line reason.
_RIDES_ALONG = re.compile(rf"[^\s:]+:(?:metadata\.conflict|{re.escape(C2PA_UNREAD_ID)}): ")


def headline(reasons) -> str:
    """The reason a one-line view (the table, CSV, the page's rows) leads with. A metadata conflict note
    rides along with it: docs/fusion.md, a verdict must not be read without it (a forged generator text
    beside camera EXIF showed only "decisive provenance evidence decides the verdict")."""
    reasons = [str(r) for r in reasons or []]
    if not reasons:
        return ""
    # So does a manifest store that could not be read: it may declare how the file was made.
    return "; ".join([reasons[0], *(r for r in reasons[1:] if _RIDES_ALONG.match(r))])


def error_reason(code, message, verdict, reasons) -> str:
    """The one-line reason of a record with an error: the error, and, when the metadata decided the verdict
    of a file whose pixels failed, what decided it (its first reason only repeats that they failed)."""
    line = f"{code}: {message}"
    if verdict != "error" and reasons:
        line += "; " + headline([r for r in reasons if not str(r).startswith(PIXELS_UNREAD)] or reasons)
    return line


def main_reason(rec: Record) -> str:
    if rec.error is not None:
        return error_reason(rec.error.code, rec.error.message, rec.verdict, rec.reasons)
    return headline(rec.reasons)


CSV_BASE = ["file", "verdict", "p_ai", "sha256", "format", "width", "height", "top_generator", "top_generator_p",
            "reason", "error_code", "error_message"]
# Added in schema 1.1, after the per-detector columns so that existing column positions hold.
CSV_TAIL = ["file_bytes", "fusion", "schema"]
# Added in schema 1.3, last: the band this row's verdict was judged on (empty where none judged it).
CSV_BAND = ["ai_threshold", "real_threshold"]


class CsvWriter(Writer):
    """Flat columns: the base ones, then <detector>_status/_p_ai/_score per detector
    in the order detectors ran (fixed at the first record)."""

    def __init__(self, stream, detector_names: Sequence[str]):
        super().__init__(stream)
        self.names = list(detector_names)
        cols = CSV_BASE + [f"{n}_{k}" for n in self.names for k in ("status", "p_ai", "score")] + CSV_TAIL + CSV_BAND
        self.w = CsvRows(stream)
        self.w.writerow(cols)

    def write(self, rec: Record) -> None:
        d = clean(rec.to_dict())
        top = top_attribution(rec)
        row = [d["file"], d["verdict"], d["p_ai"], d["sha256"], d["format"], d["width"], d["height"],
               top[0] if top else "", round(top[1], 4) if top else "", main_reason(rec),
               rec.error.code if rec.error else "", rec.error.message if rec.error else ""]
        for n in self.names:
            r = d["detectors"].get(n)
            row += [r["status"], r["p_ai"], r["score"]] if r else ["", "", ""]
        row += [d["file_bytes"], fusion_label(rec.fusion), d["schema"]]
        row += [d["band"]["ai"], d["band"]["real"]] if d["band"] else ["", ""]
        self.w.writerow(row)
        self.stream.flush()


_VERDICT_STYLE = {"ai-generated": "bold red", "likely-real": "green", "uncertain": "yellow", "error": "magenta"}


class TableWriter(Writer):
    """Rows are kept and printed as one rich table at the end (people read tables
    of tens or hundreds of rows; use jsonl for sweeps). Each row is kept as its cells'
    text, not as its record: a record holds its evidence, reasons and EXIF, several
    kilobytes a file that `results export -f table` over a store held to the end."""

    def __init__(self, stream, detector_names: Sequence[str], explain: bool = False,
                 fusion: dict | None = None):
        super().__init__(stream)
        # {"ai_threshold", "real_threshold"} of the run's fusion: its 3 digits keep each verdict's side of the
        # band that judged it (a file's own where the model was set aside for it). None (a store's records,
        # of runs that may differ): to nearest, as before.
        self.fusion = fusion
        self.names = list(detector_names)
        self.rows: list[tuple] = []
        self.shown: set[str] = set()   # detectors that ran somewhere (not unavailable everywhere)
        self.explain = explain
        self.own_band = False   # a row judged on a band of its own (fuse's set-aside note): the legend says so
        self.soft_only = False  # a row only soft metadata spoke for: uncertain whatever its P(AI)

    def write(self, rec: Record) -> None:
        dets = []
        for n in self.names:
            r = rec.detectors.get(n)
            if r is None:
                dets.append(("", ""))
            elif r.status != "ok":
                dets.append((r.status, "dim"))
            else:
                dets.append(("—" if r.p_ai is None else f"{r.p_ai:.3f}", ""))
            if r is not None and r.status != "unavailable":
                self.shown.add(n)
        self.soft_only |= is_soft_only(rec.reasons)
        top = top_attribution(rec)
        reason = ("; ".join(([f"{rec.error.code}: {rec.error.message}"] if rec.error else []) + rec.reasons)
                  if self.explain else main_reason(rec))
        own = record_band(rec.band)
        if rec.p_ai is None:
            p = "—"
        elif self.fusion is None and own is None:
            p = f"{rec.p_ai:.3f}"   # a store's record written before schema 1.3: its run's band is unknown here
        else:
            lo, hi = own or _file_band(self.fusion, rec.reasons)
            p = shown_p_text(rec.p_ai, (hi, lo))
            self.own_band |= self.fusion is not None and _note_band(rec.reasons) is not False
        self.rows.append((rec.file, rec.verdict, p, tuple(dets),
                          f"{top[0]} ({top[1]:.2f})" if top else "", reason))

    def abort(self) -> None:
        self.close()  # Ctrl-C at a terminal: the rows scanned so far, rather than nothing

    def close(self, summary=None) -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from .safe import is_terminal, printable_for, table_width

        console = Console(file=self.stream, soft_wrap=False, width=table_width(self.stream))
        # Detectors that ran nowhere (unavailable everywhere) only waste columns: the
        # stderr notes and the JSON say why.
        keep = [i for i, n in enumerate(self.names) if n in self.shown]
        shown = printable_for(console.encoding)
        if console.width < _TABLE_NEEDS + sum(max(len(self.names[i]), 5) + 3 for i in keep):
            self._stacked(console, keep, shown)
            return
        t = Table(show_lines=False, header_style="bold")
        t.add_column("file", overflow="fold", ratio=3)
        t.add_column("verdict", no_wrap=True)
        t.add_column("P(AI)", justify="right", no_wrap=True)
        for i in keep:
            t.add_column(self.names[i], justify="right", overflow="fold")
        t.add_column("generator")
        t.add_column("reason", overflow="fold", ratio=4)
        # Every cell is a Text, never markup: names, reasons, prompts and EXIF come from
        # the files, and "[/b]" in a file name must print as itself, not crash or vanish.
        for file, verdict, p, dets, gen, reason in self.rows:
            cells = [Text(shown(file)), Text(verdict, style=_VERDICT_STYLE.get(verdict, "")), Text(shown(p))]
            cells += [Text(shown(dets[i][0]), style=dets[i][1]) for i in keep]
            cells += [Text(shown(gen) if gen else ""), Text(shown(reason))]
            t.add_row(*cells)
        console.print(t, highlight=False)
        if self.rows and is_terminal(self.stream):
            self._print_legend(console, bool(keep), min(console.measure(t).maximum, console.width))
        self.stream.flush()

    def _print_legend(self, console, detector_columns: bool, width: int) -> None:
        """The legend, at a terminal only, folded to `width` with no trailing spaces. It names every verdict:
        under a pipe (`scan DIR | grep -c likely-real`) or in a file its lines were counted as rows, and a
        script's view of the table had been the rows alone. rich's caption padded each line to the table's
        width."""
        from rich.text import Text

        for line in textwrap.wrap(self._legend(detector_columns), max(width, 20), break_on_hyphens=False):
            console.print(Text(line), highlight=False, overflow="ignore", crop=False)

    def _legend(self, detector_columns: bool) -> str:
        """What the numbers mean, under the table: an editor read "P(AI) 0.475" without knowing of what, or where
        a verdict begins, and --explain's "(+0.40 nats)" with no word on its scale."""
        # A store's rows (fusion None) may come from several runs, each with its own band: none is named.
        band = band_words(self.fusion, self.own_band)
        out = (f"P(AI): aiidetect's estimate, from 0 to 1, that the image was made by a generative model; {band}"
               ", uncertain between (aiidetect does not decide). likely-real is not proof: new generators "
               "and fakes made to fool detectors can score low.")
        if self.soft_only:
            out += " " + SOFT_ONLY_WORDS
        if detector_columns:
            out += " A detector's column is that detector's own estimate."
        if self.explain:
            out += (" In a reason, (+0.40 nats) is how far that item moved the estimate toward AI (+) or real (-), "
                    "in log-odds; a [decisive] item settles the verdict on its own, unless another points the "
                    "other way (the file is then uncertain).")
        return out

    def _stacked(self, console, keep: list[int], shown) -> None:
        """A terminal too narrow for the table's columns (a split pane, COLUMNS=40): a block per file, its name
        on a line of its own, then the verdict and scores, then the reason, each folded to the width. The
        table there gave the name one character a line and the detector columns none."""
        from rich.padding import Padding
        from rich.text import Text

        from .safe import is_terminal

        room = max(console.width - 2, 10)
        for file, verdict, p, dets, gen, reason in self.rows:
            console.print(Text(shown(file), style="bold"), overflow="fold", highlight=False)
            # "metadata 0.354" is never cut between the name and its score: a line breaks between such pairs
            chunks = [Text(verdict, style=_VERDICT_STYLE.get(verdict, "")), Text(f"P(AI) {shown(p)}")]
            chunks += [Text.assemble(f"{self.names[i]} ", (shown(dets[i][0]) or "-", dets[i][1])) for i in keep]
            chunks += [Text(f"generator {shown(gen)}")] if gen else []
            lines = [chunks[0]]
            for c in chunks[1:]:
                if len(lines[-1]) + 2 + len(c) <= room:
                    lines[-1] = Text.assemble(lines[-1], "  ", c)
                else:
                    lines.append(c)
            for part in (*lines, Text(shown(reason))):
                console.print(Padding(part, (0, 0, 0, 2), expand=False), overflow="fold", highlight=False)
        if self.rows and is_terminal(self.stream):   # the same legend as under the table: a narrow terminal's
            self._print_legend(console, bool(keep), console.width)   # reader needs it no less
        self.stream.flush()


# Soft metadata never decides alone (fusion rule 4): under a fitted model's 0.8, a file it alone put at 0.85 read
# "uncertain" beside "AI-generated from 0.8". Said under the table and on the report page alike.
SOFT_ONLY_WORDS = "A file whose reason says only its metadata was weighed stays uncertain whatever its P(AI)."


def is_soft_only(reasons: Any) -> bool:
    """Whether fuse left this file uncertain as one only soft metadata spoke for (its first reason says so)."""
    return isinstance(reasons, list) and any(x in (SOFT_ONLY, SOFT_ONLY_WAS) for x in reasons if isinstance(x, str))


def band_words(fusion: Mapping[str, Any] | None, own_band: bool = False,
               names: tuple[str, str] = ("AI-generated", "likely-real")) -> str:
    """Where each firm verdict begins, as fusion.fuse judges it under `fusion`'s band: "AI-generated from 0.85,
    likely-real at or below 0.2". The legend under `scan`'s table and the report page's overview both say it
    here, so they say it alike. At a band's limits the edge alone is not where a verdict begins: P(AI) 0.5 is
    uncertain under an ai threshold of 0.5 (a coin flip is never firm), an edge of 1 or 0 is never reached by
    the detectors, and decisive evidence decides from DECISIVE_P_LEAST (0.990 with a pixel detector sure of the
    contrary), under a hand-edited or fitted ai threshold above it too. `own_band`: some file was judged on a
    band of its own (fuse set the fusion model's bias and band aside for it). `fusion` None: the files may have
    been judged on different bands (a store's rows, a report over several runs), so none is named."""
    ai, real = names
    if not fusion:
        return f"{ai} or {real} past the thresholds of the scan that judged the file"
    hi, lo = float(fusion["ai_threshold"]), float(fusion["real_threshold"])
    decides = "where the file's reason says decisive provenance evidence decides the verdict"
    least_ai, most_real = f"{DECISIVE_P_LEAST:.2f}", f"{1 - DECISIVE_P_LEAST:.2f}"   # 0.99 and 0.01: bounds
    if hi >= 1:
        said_ai = f"{ai} only {decides}, from {least_ai} (the band's ai threshold of 1 is never reached)"
    elif hi > DECISIVE_P_LEAST:
        said_ai = f"{ai} from {hi:g} (from {least_ai} {decides})"
    elif hi <= 0.5:
        said_ai = f"{ai} above 0.5"
    else:
        said_ai = f"{ai} from {hi:g}"
    if lo <= 0:
        said_real = f"{real} only {decides}, at or below {most_real} (the band's real threshold of 0 is never reached)"
    elif lo < 1 - DECISIVE_P_LEAST:
        said_real = f"{real} at or below {lo:g} (at or below {most_real} {decides})"
    elif lo >= 0.5:
        said_real = f"{real} below 0.5"
    else:
        said_real = f"{real} at or below {lo:g}"
    # A file fused without the model's bias and band was judged on a wider one: "AI-generated from 0.8" stood over
    # a row at 0.850 called uncertain.
    own = (" (a file whose reason says the fusion model's bias and band are set aside: the band that reason names)"
           if own_band else "")
    return f"{said_ai}, {said_real}{own}"


# The narrowest the table's fixed columns and borders take (file 12, verdict 12, P(AI) 5, generator 9, reason 12,
# each with its 3 of border and padding, and the closing border), before the detectors' columns: narrower, a file
# gets a block of lines rather than a row (TableWriter._stacked).
_TABLE_NEEDS = 12 + 12 + 5 + 9 + 12 + 5 * 3 + 1


# The band that judged a file, for the table here and the HTML report's table, card and gauge.
# fusion.fuse's note on a file one of the fitted model's detectors did not answer: "a, b: no answer for this
# file, ... are set aside (bias 0, band 0.1 / 0.9, ...". The names are the model's detector keys (no spaces).
_ASIDE_NOTE = re.compile(r"[^\s,]+(?:, [^\s,]+)*: " + re.escape(ASIDE_FOR_FILE))
_ASIDE_BAND = re.compile(_ASIDE_NOTE.pattern + r", fitted with (?:it|them), are set aside "
                         r"\(bias 0, band ([0-9.e+-]+) / ([0-9.e+-]+)[,:]")


def _file_band(fusion: Mapping[str, Any], reasons: Any, band: Any = None) -> tuple[float, float]:
    """(real, ai) thresholds that judged this file: the record's `band` (schema 1.3) where it holds one; for an
    older record, the run's, or, where a detector with a say in the fitted model gave this file no answer (its
    reasons say so), the band fuse used instead (fusion.set_aside): the run's 0.80 gauge put a file fused under
    0.90 at 0.85 in its AI zone beside an "uncertain" badge."""
    return record_band(band) or _band_of(fusion, _note_band(reasons))


def record_band(band: Any) -> tuple[float, float] | None:
    """(real, ai) of a record's `band`: a Record's (ai, real) pair or a saved record's {"ai", "real"}; None where
    it holds none, or none this reads (a saved run is input like any other: a hand-edited "0.9", a bool or NaN
    there must not decide a row's digits). The note's words round a fitted edge to 6 digits; the field does not."""
    if isinstance(band, Mapping):
        band = (band.get("ai"), band.get("real"))
    if not isinstance(band, (tuple, list)) or len(band) != 2:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in band):
        return None
    return float(band[1]), float(band[0])


def _note_band(reasons: Any) -> tuple[float, float] | bool:
    """What fuse's set-aside note among `reasons` says of the file's band: (real, ai) as it names them, True
    for a note without a readable band, False for no note."""
    # Fuse's own note only, from its start: an evidence line quotes the file's metadata, and an EXIF Software
    # text carrying the note's words and "band 0.6 / 0.61" drew an uncertain file at 0.88 in its AI zone.
    notes = [x for x in reasons if isinstance(x, str) and _ASIDE_NOTE.match(x)] if isinstance(reasons, list) \
        else []
    if not notes:
        return False
    # The note names the band: widened past the rules' where the model with its bias would not have decided
    # (fuse), a file at 0.05 was drawn in the likely-real zone of a 0.1 gauge beside "uncertain".
    said = _ASIDE_BAND.match(notes[0])
    try:
        return (float(said[1]), float(said[2])) if said else True
    except ValueError:   # a hand-edited record: the rules' band, as before the note named it
        return True


def _band_of(fusion: Mapping[str, Any], said: tuple[float, float] | bool) -> tuple[float, float]:
    lo, hi = float(fusion["real_threshold"]), float(fusion["ai_threshold"])
    if said is False:
        return lo, hi
    return said if isinstance(said, tuple) else (min(lo, DEFAULT_REAL_THRESHOLD), max(hi, DEFAULT_AI_THRESHOLD))


def make_writer(fmt: str, stream, detector_names: Sequence[str], explain: bool = False,
                fusion: dict | None = None) -> Writer:
    if fmt == "jsonl":
        return JsonlWriter(stream)
    if fmt == "json":
        return JsonWriter(stream)
    if fmt == "csv":
        return CsvWriter(stream, detector_names)
    if fmt == "table":
        return TableWriter(stream, detector_names, explain, fusion)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
