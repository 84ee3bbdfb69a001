"""The self-contained HTML report: one file with inline CSS and JS, thumbnails
as data URIs, nothing fetched from anywhere.

Every string that comes from a scanned file (path, EXIF, XMP, prompts, C2PA
fields) goes through ``_e`` (HTML-escaped) or into the JSON island read with
``textContent``; a Content-Security-Policy meta tag forbids remote loads,
inline event handlers and any script or style without this report's nonce.
Cards are rendered here, in Python, so the report reads and prints without
JavaScript; the script only drives the sortable, filterable file table.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import secrets
import shlex
import sys
from importlib import resources
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Sequence

from .. import __version__
from ..fusion import DEFAULT_AI_THRESHOLD, DEFAULT_REAL_THRESHOLD, LEFT_OUT, normalize_model, set_aside, shown_p_text
from ..records import PIXEL_FAILURES, verdict_matches
from .writers import (SOFT_ONLY_WORDS, Writer, _band_of, _file_band, _note_band, band_words, error_reason,
                      fusion_label, headline, is_soft_only, record_band)

THUMB_SIDE = 192
# A hostile file can carry megabytes of "prompt"; the report shows it in full up
# to this many characters per value and says how much it left out.
MAX_TEXT = 200_000

VERDICT_WORDS = {
    "ai-generated": ("\u25B2", "AI-generated",
                     "The evidence points to an image made or substantially altered by a generative model."),
    "uncertain": ("?", "uncertain",
                  "aiidetect does not decide: the evidence is weak or conflicting. Treat this file as unverified "
                  "and look for other sources."),
    "likely-real": ("\u2713", "likely real",
                    "Nothing here indicates a generative model, and some evidence argues for a real photo. This is "
                    "not proof of authenticity: edits and fakes made to fool detectors can look like this."),
    "error": ("\u2715", "error", "aiidetect could not analyse this file (see the error below)."),
}
FLAGGED = ("ai-generated", "uncertain")
# What a <pre> block shows as it is: it keeps lines and tabs, where other elements fold them into spaces.
PRE = "\n\t"
# The record schemas this renderer knows (docs/schema.md "Changes").
KNOWN_SCHEMAS = ("1.0", "1.1", "1.2", "1.3")
DASH = "\u2014"


def _e(value: Any, keep: str = "") -> str:
    """Escape anything for HTML text or a quoted attribute, shown as it is (see _clean)."""
    return html.escape(_clean(value if isinstance(value, str) else str(value), keep), quote=True)


def _clean(s: str, keep: str = "") -> str:
    """Text from a file as the page shows it: lone surrogates from undecodable names become U+FFFD
    instead of breaking the UTF-8 output, and control, bidi and invisible characters (safe.printable)
    are shown as \\uXXXX, as in the table and CSV: U+202E would make "photo\\u202egpj.exe" read "photoexe.jpg", a
    NUL would vanish, and a newline in a name would show as a space (HTML folds it), so that
    "a\\nb.jpg" and "a b.jpg" looked the same. Only a <pre> block keeps its newlines and tabs
    (`keep`): prompts keep their lines."""
    from .safe import printable

    return printable(s, keep=keep)


def _clip(s: str) -> str:
    if len(s) <= MAX_TEXT:
        return s
    return s[:MAX_TEXT] + f"\n[... {len(s) - MAX_TEXT} more characters not shown]"


def _json_island(obj: Any) -> str:
    """JSON safe inside <script type=application/json>: no '<', '>' or '&' can end
    the element, and ensure_ascii keeps U+2028/2029 and lone surrogates as escapes."""
    s = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def thumbnail_data_uri(path: str, side: int = THUMB_SIDE, limits=None, sha256: str | None = None,
                       made: dict[str, tuple[str | None, str | None]] | None = None) -> tuple[str | None, str | None]:
    """(a small JPEG of the file as a data URI, None), or (None, why there is none).

    Only of the bytes the record describes (decode.read_recorded), those same bytes decoded.
    Decoding goes through the scan's limits, so a decompression bomb costs nothing here either.
    `made`: the thumbnails made so far, by checksum. The file at `path` is still read and checked, but bytes
    already decoded are not decoded again: an archive's copies of one photo (and the dev set's 429 records
    repeated to 10,000) decoded each copy at full size, 12 MP HEIFs at 0.5 to 1.3 s each."""
    from ..decode import DecodeFailure, DecodeLimits, read_recorded

    limits = limits or DecodeLimits()
    try:
        data = read_recorded(path, sha256, limits)
    except DecodeFailure as exc:
        return None, exc.message
    if made is not None and sha256 in made:
        return made[sha256]
    got = _thumbnail(data, side, limits)
    if made is not None and sha256:
        made[sha256] = got
    return got


def _thumbnail(data: bytes, side: int, limits) -> tuple[str | None, str | None]:
    from ..decode import decode_bytes

    try:
        img, _ = decode_bytes(data, limits, draft=side)
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=72, optimize=True)
    except Exception:  # noqa: BLE001 - a missing thumbnail never stops a report
        return None, "the file could not be decoded for a thumbnail"
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), None


def _file_path(d: Mapping[str, Any]) -> str | None:
    """The path to open for a record: its exact bytes when the name is not UTF-8 (`file_bytes`). None
    when `file_bytes` is not a name or not the name the card shows: a saved run whose `file_bytes`
    pointed elsewhere put that other file's picture beside this name and verdict."""
    from .safe import display_path, path_from_record

    try:
        path = path_from_record(d.get("file"), d.get("file_bytes"))
    except ValueError:
        return None
    if d.get("file_bytes") and display_path(os.fsencode(path)) != d.get("file"):
        return None
    return path


# --------------------------------------------------------------------- run facts
def run_info_from_scan(detectors: Sequence[Any], ctx: Any, fusion_model: Mapping[str, Any] | None,
                       argv: Sequence[str] | None = None) -> dict[str, Any]:
    dets = []
    for d in detectors:
        info = d.describe()
        dets.append({"name": d.name, "status": info.get("status", "ran"), "reason": info.get("reason"),
                     **_head_facts(d)})
    return {"version": __version__, "command": _command(argv), "detectors": dets,
            "fusion": _fusion_facts(fusion_model), "runtime": getattr(ctx, "runtime", "torch"),
            "requested_dtype": getattr(ctx, "dtype", None), "_ctx": ctx}


class RecordFacts:
    """What a saved run still says about itself, gathered one record at a time (a 100,000-record
    run is never held whole): which detectors answered, which were unavailable and why, the
    precision they ran at, the record schemas and the fusion that made the verdicts."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.dtypes: set[str] = set()
        self.runtimes: set[str] = set()
        self.schemas: set[str] = set()
        self.fusions: dict[str, Mapping[str, Any]] = {}

    def add(self, r: Mapping[str, Any]) -> None:
        for name, d in (r.get("detectors") or {}).items():
            if not isinstance(d, Mapping):
                continue
            cur = self.seen.setdefault(name, {"name": name, "status": "unavailable", "reason": None})
            if d.get("status") in ("ok", "error"):
                cur["status"] = "ran"
                cur["reason"] = None
            elif cur["status"] == "unavailable" and cur["reason"] is None:
                cur["reason"] = d.get("reason")
            if d.get("dtype"):
                self.dtypes.add(str(d["dtype"]))
            if d.get("runtime"):
                self.runtimes.add(f"{d['runtime']} ({d.get('provider') or '?'})")
        if r.get("schema"):
            self.schemas.add(str(r.get("schema")))
        f = r.get("fusion")
        if isinstance(f, Mapping) and len(self.fusions) < 20:
            self.fusions.setdefault(str(fusion_label(f) or "rules"), f)  # shown through _e, escaped there once

    def info(self) -> dict[str, Any]:
        out = {"detectors": list(self.seen.values()), "precision": ", ".join(sorted(self.dtypes)) or None,
               "runtime": ", ".join(sorted(self.runtimes)) or None, "schema": sorted(self.schemas)}
        out.update(_saved_fusion(self.fusions))
        return out


# A 1.3 record names the band that judged it (its card's gauge and digits follow it): "the band drawn is the default
# one" over a page of such records was untrue of every card.
OWN_BAND_DRAWN = ("each card draws the band its record names; for a record written before schema 1.3, which names "
                  "none, the band drawn is the default one, which may not be the one that decided its verdict")


def _saved_fusion(fusions: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The fusion band a saved run's verdicts were decided with, as far as its records say: the
    default rules' band, or a fitted model's, read from its manifest when that is still where the
    scan found it with the SHA-256 the records name. Otherwise the page says the band it draws is
    the default and may not be the one that decided."""
    if not fusions:
        return {}
    if len(fusions) > 1:
        return {"fusion_note": "the records were decided by different fusions: " + "; ".join(sorted(fusions))
                + ". " + OWN_BAND_DRAWN.capitalize() + "."}
    label, f = next(iter(fusions.items()))
    if f.get("kind") != "model":
        return {"fusion": _fusion_facts(None)}
    import hashlib
    from pathlib import Path

    from ..heads import MANIFEST
    from .safe import loads_foreign

    try:
        raw = (Path(str(f.get("path"))) / MANIFEST).read_bytes()
        if f.get("sha256") and hashlib.sha256(raw).hexdigest() == f.get("sha256"):
            model = {**loads_foreign(raw), "path": f.get("path")}
            gone = f.get(LEFT_OUT)
            if isinstance(gone, list) and gone:
                # The scan set the model's band aside for one no narrower than the rules' (without_retrained).
                model = {**normalize_model(model), **set_aside(model, [str(n) for n in gone])[1],
                         "path": f.get("path")}
            return {"fusion": _fusion_facts(model)}
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return {"fusion": {**_fusion_facts(None), "name": label},
            "fusion_note": "this fusion model's manifest is no longer where the scan found it, or has changed: "
                           f"its band is unknown here: {OWN_BAND_DRAWN}."}


def run_info_from_records(records: Iterable[Mapping[str, Any]], source: str,
                          argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The run facts of a saved run; pass no records and let HtmlWriter(record_facts=True) gather
    them as it reads (the same facts, without holding the run)."""
    facts = RecordFacts()
    for r in records:
        facts.add(r)
    return {"version": __version__, "command": _command(argv), "source": source, **facts.info()}


def _head_facts(detector: Any) -> dict[str, Any]:
    """Which trained head (its folder) and which exact parameters (the SHA-256 of its manifest, or of
    the ONNX graph) a detector served: the name alone does not say which of two heads called "dev" ran."""
    out: dict[str, Any] = {}
    path = getattr(getattr(detector, "head", None), "path", None)
    if path is not None:
        out["head_path"] = str(path)
    try:
        ident = detector.cache_identity() or {}
    except Exception:  # noqa: BLE001 - the page names what it can; a detector's identity is no reason to fail
        ident = {}
    for k in ("head", "graph"):
        if isinstance(ident.get(k), str):
            out["head_sha256"] = ident[k]
            break
    return out


def _command(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["aiidetect", *args])


def _fusion_facts(model: Mapping[str, Any] | None) -> dict[str, Any]:
    m = normalize_model(model)
    return {"name": (model or {}).get("name") or ("default rules" if not model else "fusion model"),
            "path": (model or {}).get("path"),
            "ai_threshold": float(m.get("ai_threshold") or DEFAULT_AI_THRESHOLD),
            "real_threshold": float(m.get("real_threshold") if m.get("real_threshold") is not None
                                    else DEFAULT_REAL_THRESHOLD)}


# --------------------------------------------------------------------- writer
# Which files get a card when a report has more files than cards: those a reader must look at first.
CARD_PRIORITY = ("ai-generated", "uncertain", "error", "likely-real")


class HtmlWriter(Writer):
    """Collects a row for every record, and the full card (with its thumbnail and, for the files
    asked for, the heat maps) for at most `max_cards` of them, and writes the page at close: the
    overview needs every count. Memory and page size grow with the table rows (a few hundred bytes a
    file), not with the cards."""

    def __init__(self, stream: IO[str], run: dict[str, Any], thumbnails: bool = True,
                 heatmap_for: Iterable[str] = (), heatmapper: Callable[[str, str | None], list[dict]] | None = None,
                 limits=None, max_cards: int | None = None, record_facts: bool = False):
        from ..limits import REPORT_MAX_CARDS

        super().__init__(stream)
        self.run = run
        self.thumbnails = thumbnails
        self.heatmap_for = set(heatmap_for)
        self.heatmapper = heatmapper
        self.limits = limits
        # 0 (or a negative number) lifts the cap.
        self.max_cards = REPORT_MAX_CARDS if max_cards is None else (max_cards if max_cards > 0 else None)
        self.rows: list[list[Any]] = []
        self.counts = {v: 0 for v in VERDICT_WORDS}
        # Per verdict, the first max_cards cards: enough to fill the page in CARD_PRIORITY order.
        self.cards: dict[str, list[tuple[int, dict[str, Any]]]] = {v: [] for v in VERDICT_WORDS}
        self.facts = RecordFacts() if record_facts else None
        self.thumbs = 0
        self.thumbs_made: dict[str, tuple[str | None, str | None]] = {}  # by checksum (thumbnail_data_uri)
        self.soft_only = False  # a file only soft metadata spoke for: uncertain whatever its P(AI) (the overview)

    @property
    def items(self) -> list[dict[str, Any]]:
        """The cards the page will show, in record order."""
        return [it for _, it in self._chosen()]

    def write(self, rec) -> None:
        d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
        self.add(d)

    def add(self, d: dict[str, Any], path: str | None = None) -> None:
        d = normalize_record(d)
        i, v = len(self.rows), d["verdict"]
        self.counts[v] += 1
        if self.facts is not None:
            self.facts.add(d)
        self.soft_only |= is_soft_only(d["reasons"])
        self.rows.append([i, v, _p(d.get("p_ai")), _s(d.get("file")), _s(d.get("format"), None),
                          d.get("size_bytes") if isinstance(d.get("size_bytes"), int) else None, _top_reason(d),
                          # the page's "error" filter takes a verdict beside an error too, as --verdict error does
                          1 if d.get("error") is not None else 0,
                          # what fuse's set-aside note says of the band that judged the file, for the table's
                          # digits: the numbers, not the note (a saved run's line may carry 64 MB of it)
                          _note_band(d.get("reasons")),
                          # the record's own band (schema 1.3), which the digits follow where it has one
                          record_band(d.get("band"))])
        if self.max_cards is not None and self._ahead(v) + len(self.cards[v]) >= self.max_cards:
            # The page's cards are already taken by files that come first (CARD_PRIORITY), and those only
            # grow: its row says what its card would lead with; no thumbnail, no heat map spent on it.
            return
        path = _file_path(d) if path is None else path
        item: dict[str, Any] = {"rec": d, "thumb": None, "thumb_note": None, "heatmaps": None}
        if self.thumbnails and d.get("error") is None and isinstance(path, str):
            sha = d.get("sha256")
            item["thumb"], item["thumb_note"] = thumbnail_data_uri(path, limits=self.limits,
                                                                   sha256=sha if isinstance(sha, str) else None,
                                                                   made=self.thumbs_made)
        elif self.thumbnails and d.get("error") is None:
            item["thumb_note"] = "the record's file_bytes do not name the file shown here"
        if self.heatmapper and v in self.heatmap_for and d.get("error") is None:
            try:
                sha = d.get("sha256")
                item["heatmaps"] = self.heatmapper(path, sha if isinstance(sha, str) else None)
            except Exception as exc:  # noqa: BLE001 - the card says the map failed; the report goes on
                item["heatmaps"] = [{"detector": "", "error": f"{type(exc).__name__}: {exc}"}]
        self.cards[v].append((i, item))

    def _ahead(self, v: str) -> int:
        """Cards held for verdicts that get theirs before v's."""
        return sum(len(self.cards[u]) for u in CARD_PRIORITY[:CARD_PRIORITY.index(v)])

    def _chosen(self) -> list[tuple[int, dict[str, Any]]]:
        left = self.max_cards
        chosen: list[tuple[int, dict[str, Any]]] = []
        for v in CARD_PRIORITY:
            take = self.cards[v] if left is None else self.cards[v][:left]
            chosen += take
            if left is not None:
                left -= len(take)
        return sorted(chosen, key=lambda c: c[0])

    def close(self, summary: dict[str, Any] | None = None) -> None:
        run = dict(self.run)
        ctx = run.pop("_ctx", None)
        bb = getattr(ctx, "built_backbone", None) if ctx is not None else None
        if bb is not None:
            run["backbone"] = {"name": bb.spec.describe(), "fingerprint": bb.fingerprint, "weights": bb.weights_id,
                               "device": str(bb.device), "precision": str(bb.dtype)}
        if self.facts is not None:
            run.update(self.facts.info())
        if summary:
            run["summary"] = summary
        run["heatmaps_for"] = sorted(self.heatmap_for)
        # what the overview's band sentence must add for the files of this page (a band of a file's own, soft
        # metadata alone): the words under `scan`'s table
        run["_legend"] = (any(r[8] is not False for r in self.rows), self.soft_only)
        run["max_cards"] = self.max_cards
        chosen = self._chosen()
        self.thumbs = sum(1 for _, it in chosen if it["thumb"])
        run["heatmaps_made"] = sum(1 for _, it in chosen
                                   if any(isinstance(m, Mapping) and m.get("image") for m in it["heatmaps"] or []))
        write_html(self.stream, self.rows, chosen, self.counts, run)
        self.stream.flush()

    def abort(self) -> None:
        """Ctrl-C or a fatal error hours into a scan: the cards made so far are still worth reading,
        on a page that says at the top it covers only part of what was asked."""
        self.run = {**self.run, "interrupted": True}
        self.close(None)


def normalize_record(r: Mapping[str, Any]) -> dict[str, Any]:
    """A saved run is input like any other: give the renderer the shapes it expects
    (lists where lists belong, mappings where mappings belong), keeping every value."""
    d = dict(r)
    reasons = d.get("reasons")
    d["reasons"] = ([str(x) for x in reasons] if isinstance(reasons, list)
                    else [] if reasons is None else [str(reasons)])
    err = d.get("error")
    if err is not None and not isinstance(err, Mapping):
        d["error"] = err = {"code": "bad-record", "message": str(err)}
    # A record with an error has verdict "error", or "ai-generated" when its pixels failed and its metadata
    # decided (docs/schema.md). A record that breaks that, or names no verdict aiidetect has, is shown as an
    # error saying what it holds: never as a verdict it does not support (a failed file as "likely real"),
    # never counted under one heading and filtered under another.
    v = d.get("verdict")
    # (a code that is not text is no pixel failure: a list or an object there made the page stop, exit 2)
    code = err.get("code") if err is not None else None
    pixels_failed = isinstance(code, str) and code in PIXEL_FAILURES
    if err is not None and v != "error" and not (v == "ai-generated" and pixels_failed):
        d["verdict"] = "error"
        d["error"] = {**err, "message": f"{err.get('message')} (the record's verdict was {v!r})"}
    elif not isinstance(v, str) or v not in VERDICT_WORDS:
        d["verdict"] = "error"
        d["error"] = {"code": "bad-record", "message": f"not a verdict aiidetect gives: {v!r}"[:500]}
    elif v == "error" and err is None:
        d["error"] = {"code": "bad-record", "message": "the record says error but gives no reason"}
    if not isinstance(d.get("image"), Mapping):
        d["image"] = {}
    dets = d.get("detectors")
    if not isinstance(dets, Mapping):
        dets = {}
    clean: dict[str, Any] = {}
    for name, det in dets.items():
        if not isinstance(det, Mapping):
            det = {"status": "error", "reason": f"not a detector result: {det!r}"[:500]}
        det = dict(det)
        for k in ("evidence", "attribution"):
            if k in det and not isinstance(det[k], list):
                det[k] = []
        det["evidence"] = [e for e in det.get("evidence") or [] if isinstance(e, Mapping)]
        det["attribution"] = [a for a in det.get("attribution") or [] if isinstance(a, Mapping)]
        clean[str(name)] = det
    d["detectors"] = clean
    return d


# --------------------------------------------------------------------- page
def _asset(name: str) -> str:
    return resources.files("aiidetect.report").joinpath("assets", name).read_text(encoding="utf-8")


def write_html(out: IO[str], rows: Sequence[list[Any]], cards: Sequence[tuple[int, Mapping[str, Any]]],
               counts: Mapping[str, int], run: Mapping[str, Any]) -> None:
    """The page, written piece by piece (a large report is never one string in memory): the
    overview over every record, the table's rows for every record, a card for each of `cards`."""
    nonce = secrets.token_urlsafe(18)
    csp = (f"default-src 'none'; img-src data:; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
           "base-uri 'none'; form-action 'none'; object-src 'none'")
    fusion = run.get("fusion") or _fusion_facts(None)
    if run.get("fusion_note"):
        # the band drawn is the default, perhaps not the one that decided (records of several fusions, a model
        # since moved): the words under the counts and each gauge's name no band as where a verdict begins
        fusion = {**fusion, "band_unknown": True}
    n = len(rows)
    with_card = {i for i, _ in cards}
    out.write("".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(csp)}\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<meta name=\"referrer\" content=\"no-referrer\">",
        f"<title>aiidetect report \u2014 {n} file{'s' if n != 1 else ''}"
        f"{' (interrupted)' if run.get('interrupted') else ''}</title>",
        f"<style nonce=\"{nonce}\">{_asset('report.css')}</style></head><body>",
        "<header><h1>aiidetect report</h1>",
        f"<p class=\"mute\">written {_e(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} by "
        f"aiidetect {_e(run.get('version', __version__))}</p></header>",
        # One main landmark holds the overview, the table and the cards: a screen reader's "skip to main
        # content" had nothing to go to, and the overview was no landmark at all.
        "<main>",
        _overview(n, counts, len(cards), run, fusion, decided_errors(rows)),
        _table_section(n, len(cards)),
    ]))
    # The table's data and script come before the cards, so the table sorts and
    # filters while a long report's cards are still being parsed.
    out.write("<script type=\"application/json\" id=\"aiidetect-rows\">")
    for k in range(0, n, 1000):
        # [i, verdict, p, file, format, size, reason, has a card, has an error, p as shown]
        part = _json_island([r[:7] + [1 if r[0] in with_card else 0, r[7], _shown_row_p(r, fusion)]
                             for r in rows[k:k + 1000]])
        out.write(("," if k else "[") + part[1:-1])
    out.write("]" if n else "[]")
    out.write(f"</script><script nonce=\"{nonce}\">{_asset('report.js')}</script>"
              f"<section id=\"cards\" aria-label=\"One card per file\"><h2>Files</h2>{_svg_defs(fusion)}")
    # Flagged cards load their thumbnails with the page so that they print, but only as many as the default
    # card cap: `--max-cards 0` on a large run would otherwise make the browser decode every one at open.
    from ..limits import REPORT_MAX_CARDS
    eager = REPORT_MAX_CARDS
    for i, it in cards:
        flagged = str(it["rec"].get("verdict")) in FLAGGED
        out.write(_card(i, it, fusion, eager=flagged and eager > 0))
        eager -= flagged
    out.write("</section></main></body></html>\n")


def _s(v: Any, default: Any = "") -> Any:
    return default if v is None else _clean(str(v))


def _p(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 6) if f == f and 0.0 <= f <= 1.0 else None


def _top_reason(r: Mapping[str, Any]) -> str:
    err = r.get("error")
    if isinstance(err, Mapping):
        return _s(error_reason(err.get("code"), err.get("message"), r.get("verdict"), r.get("reasons")))[:500]
    return _s(headline(r.get("reasons") or []))[:500]


def _verdict_badge(v: str) -> str:
    sym, word, _ = VERDICT_WORDS.get(v, ("", v, ""))
    # The symbol is for the eye (colour blindness, a black-and-white printout); a screen reader says the word
    # alone, not "black up-pointing triangle" before every verdict.
    return (f"<span class=\"badge v-{_e(v if v in VERDICT_WORDS else 'error')}\"><span aria-hidden=\"true\">{sym}</span>"
            f" {_e(word)}</span>")


def _shown_row_p(r: Sequence[Any], fusion: Mapping[str, Any]) -> str | None:
    """The table's P(AI) text, on the verdict's side of the band that judged the file (fusion.shown_p_text)."""
    if r[2] is None:
        return None
    lo, hi = r[9] or _band_of(fusion, r[8])
    return shown_p_text(r[2], (hi, lo))


def decided_errors(rows: Sequence[list[Any]]) -> int:
    """Files with an error and a verdict (pixels unread, metadata decisive): counted under their verdict,
    yet the "error" filter and `scan`'s summary ("2 errors (...; 1 of them ai-generated ...)") take them too."""
    return sum(1 for r in rows if r[7] and r[1] != "error")


def _overview(n: int, counts: Mapping[str, int], n_cards: int, run: Mapping[str, Any],
              fusion: Mapping[str, Any], decided: int = 0) -> str:
    o = ["<section id=\"overview\" aria-labelledby=\"overview-h\"><h2 id=\"overview-h\">Overview</h2>"]
    if run.get("interrupted"):
        o.append(f"<p class=\"interrupted\" role=\"alert\"><b>Interrupted.</b> The scan was stopped before it "
                 f"finished: this report holds only the {n} file{'s' if n != 1 else ''} scanned "
                 f"until then, not every file that was asked for.</p>")
    if n_cards < n:
        shown = ", ".join(f"{_e(VERDICT_WORDS[v][1])}" for v in CARD_PRIORITY)
        o.append(f"<p class=\"interrupted\" id=\"cards-capped\"><b>Cards for {n_cards} of {n} files.</b> Every "
                 f"file is in the table below with its verdict, P(AI) and top reason; a detailed card is shown for "
                 f"at most {run.get('max_cards')} files, so that the page opens quickly, chosen in this order: "
                 f"{shown}. To see every card, render the saved run (<code>--format jsonl</code>) with "
                 f"<code>aiidetect report RUN.jsonl --max-cards 0</code>, or a part of it with "
                 f"<code>--verdict</code>.</p>")
    dets = [d for d in run.get("detectors") or [] if isinstance(d, Mapping)]
    no_pixel = bool(dets) and all(str(d.get("name")).split(":")[0] == "metadata" for d in dets
                                  if d.get("status") == "ran")
    if n and no_pixel:
        # Easy to miss in the list below, and it changes what every verdict on the page means.
        o.append("<p class=\"interrupted\"><b>No pixel detector ran.</b> Every verdict here rests on what the "
                 "files' metadata says (the detectors below say why the others could not run); most images "
                 "shared online have lost their metadata, and a file without decisive metadata stays "
                 "uncertain.</p>")
    if run.get("repeats"):
        o.append(f"<p class=\"interrupted\"><b>Repeated records.</b> {_e(run['repeats'])}.</p>")
    schemas = [x for x in run.get("schema") or [] if x not in KNOWN_SCHEMAS]
    if schemas:
        o.append(f"<p class=\"interrupted\"><b>Unknown record schema {_e(', '.join(schemas))}.</b> This aiidetect "
                 f"reads schema {_e(', '.join(KNOWN_SCHEMAS))}: the records were written by another version, and "
                 f"fields it does not know are not shown.</p>")
    # (a space after each number: without it, "147files" is what a screen reader and a copy of the text got)
    # Each count is a way in to its files (the table, filtered to that verdict by the page's script; without
    # it, the table): the editor who reads "1 AI-generated" wants that photo next, and on a phone the table
    # began a screen or more below the counts.
    o += ["<ul class=\"counts\">", f"<li><a href=\"#files\" data-verdict=\"\"><b>{n}</b> files</a></li>"]
    for v, k in counts.items():
        o.append(f"<li><a href=\"#files\" data-verdict=\"{_e(v)}\"><b>{k}</b> {_verdict_badge(v)}</a></li>")
    o.append("</ul><p class=\"noprint find\"><a href=\"#files\" id=\"find-file\">Find a file by its name</a> "
             "or pick a count above to list those files.</p>")
    if decided:
        # The tiles add up to the files; without this line the "error" filter showed more rows than its tile
        # counted, and `scan` had said "2 errors" of the run this page calls "1 error".
        one = decided == 1
        n_ai = counts.get("ai-generated", 0)
        lead = (("The AI-generated file above is" if one else f"All {n_ai} AI-generated files above are")
                if decided == n_ai else
                f"{decided} of the {n_ai} AI-generated files above {'is' if one else 'are'}")
        o.append(f"<p id=\"decided-errors\">{lead} AI-generated by {'its' if one else 'their'} metadata alone: "
                 f"{'its' if one else 'their'} pixels could not be read. Counted under AI-generated, not under "
                 f"error; the table's \u201cerror\u201d filter shows {'it' if one else 'them'} with the errors, and "
                 f"<code>aiidetect scan</code>'s summary counts {'it' if one else 'them'} among its errors too.</p>")
    # What the numbers mean, said once for the whole page (the table under `scan` says it in the same words):
    # "P(AI) 0.83" read as a bare number, and a card's "(+0.40 nats)" as a term to look up. Where each verdict
    # begins is the table legend's own sentence (writers.band_words): "at least 0.80" stood over a file judged
    # on a wider band of its own, and over one only its metadata spoke for, both uncertain at 0.85.
    own_band, soft_only = run.get("_legend") or (False, False)
    band = _e(band_words(None if fusion.get("band_unknown") else fusion, own_band,
                         ("AI-generated", "likely real"))).replace(
        "AI-generated", "<b>AI-generated</b>", 1).replace("likely real", "<b>likely real</b>", 1)
    o.append(f"<p><b>P(AI)</b> is aiidetect's estimate, from 0 to 1, that the image was made by a generative "
             f"model. By its fused P(AI), a file is called {band}, and "
             f"<b>uncertain</b> in between or when strong evidence points both ways: aiidetect does not decide "
             f"then.{' ' + _e(SOFT_ONLY_WORDS) if soft_only else ''} Likely real is not proof: new generators and "
             f"fakes made to fool detectors can score low. "
             f"A printout lists every file in the table, then gives each flagged file (AI-generated, uncertain) "
             f"and each file that could not be analysed (error) a page of its own.</p><p class=\"mute\">On a "
             f"card, each line of <i>What moved the verdict</i> names what it rests on; a number such as "
             f"(+0.40 nats) is how far that item moved the estimate toward AI (+) or "
             f"real (-), in log-odds, and a [decisive] item settles the verdict on its own, unless another points "
             f"the other way (the file is then uncertain).</p>")
    facts: list[tuple[str, str]] = []
    if run.get("source"):
        # A saved run's records name their schema, detectors and fusion, not the aiidetect that wrote them.
        saved = run.get("source_mtime")
        when = (f" (last written {_e(_dt.datetime.fromtimestamp(saved, _dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}"
                ": the scan ended then or earlier)" if isinstance(saved, (int, float)) else "")
        facts.append(("rendered by", f"aiidetect {_e(run.get('version', __version__))} from "
                                     f"<code class=\"wrap\">{_e(run['source'])}</code>{when}; the records do not "
                                     "say which aiidetect version scanned them or when"))
        facts.append(("record schema", _e(", ".join(run.get("schema") or []) or "not given")))
    else:
        facts.append(("aiidetect version", _e(run.get("version", __version__))))
    if run.get("only"):
        facts.append(("files shown", f"only those judged {_e(', '.join(run['only']))}: {n} of the "
                                     f"{run.get('total_records')} records in the run"))
    facts.append(("command", f"<code class=\"wrap\">{_e(run.get('command', ''))}</code>"))
    det_lines = []
    for d in run.get("detectors") or []:
        st = d.get("status")
        line = f"<li><b>{_e(d.get('name'))}</b>: {_e(st)}"
        if d.get("head_path") or d.get("head_sha256"):
            line += (" <span class=\"mute\">head</span> "
                     + (f"<code>{_e(d['head_path'])}</code> " if d.get("head_path") else "")
                     + (f"<code>sha256:{_e(str(d['head_sha256'])[:16])}</code>" if d.get("head_sha256") else ""))
        if d.get("reason"):
            line += f" \u2014 <span class=\"wrap\">{_e(d['reason'])}</span>"
        det_lines.append(line + "</li>")
    facts.append(("detectors", "<ul>" + "".join(det_lines) + "</ul>" if det_lines else "none recorded"))
    bb = run.get("backbone")
    if bb:
        facts.append(("backbone", f"{_e(bb.get('name'))} <span class=\"mute\">fingerprint</span> "
                                  f"<code>{_e(bb.get('fingerprint'))}</code> <span class=\"mute\">weights</span> "
                                  f"<code class=\"wrap\">{_e(bb.get('weights'))}</code>"))
        facts.append(("runtime and precision", f"{_e(run.get('runtime') or 'torch')} on {_e(bb.get('device'))}, "
                                               f"{_e(bb.get('precision'))}"))
    elif run.get("runtime") or run.get("precision"):
        facts.append(("runtime and precision", _e(", ".join(x for x in (run.get("runtime"), run.get("precision"))
                                                            if x))))
    if "fusion" in run:
        facts.append(("fusion", f"{_e(fusion.get('name'))}" + (f" <code class=\"wrap\">{_e(fusion['path'])}</code>"
                                                               if fusion.get("path") else "")
                      + f"; band {fusion['real_threshold']:.2f}\u2013{fusion['ai_threshold']:.2f}"
                      + (f" <b>({_e(run['fusion_note'])})</b>" if run.get("fusion_note") else "")))
    elif run.get("fusion_note"):
        facts.append(("fusion", f"<b>{_e(run['fusion_note'])}</b>"))
    summ = run.get("summary") or {}
    if summ.get("seconds") is not None:
        from ..pipeline.stages import cache_rerun_note

        facts.append(("scan time", f"{float(summ['seconds']):.1f} s for {int(summ.get('files') or 0)} files"
                                   + (f" ({int(summ['cache_hits'])} from the result cache"
                                      + (f", {cache_rerun_note(summ)}" if summ.get("cache_rerun") else "") + ")"
                                      if summ.get("cache_hits") else "")))
    if run.get("heatmaps_for"):
        # What was asked is not what was made: without a pixel detector (no weights, -d metadata) no file gets
        # one, and the page said "computed for files judged ai-generated, uncertain" all the same.
        made = run.get("heatmaps_made")
        done = ("" if not isinstance(made, int) else
                f"; made for {made} file{'s' if made != 1 else ''}" if made else
                "; none made" + (": no pixel detector ran, and a heat map shows where one looked" if no_pixel
                                 else ""))
        facts.append(("heat maps", "asked for files judged " + _e(", ".join(run["heatmaps_for"])) + _e(done)))
    o.append("<table class=\"facts\"><tbody>")
    for k, v in facts:
        o.append(f"<tr><th scope=\"row\">{_e(k)}</th><td>{v}</td></tr>")
    o.append("</tbody></table></section>")
    return "".join(o)


def _table_section(n: int, n_cards: int | None = None) -> str:
    from .safe import hidden_js_class

    opts = "".join(f"<option value=\"{v}\">{_e(VERDICT_WORDS[v][1])}</option>" for v in VERDICT_WORDS)
    head = [("verdict", "verdict", ""), ("p", "P(AI)", "num"), ("file", "file", ""), ("format", "format", "opt"),
            ("size", "size", "num opt"), ("reason", "top reason", "opt")]
    ths = "".join(f"<th scope=\"col\" data-key=\"{k}\" class=\"{c}\"><button type=\"button\">{_e(t)}</button></th>"
                  for k, t, c in head)
    if n_cards is None or n_cards >= n:
        noscript = "<noscript><p>The sortable table needs JavaScript; every file has a card below.</p></noscript>"
    else:  # the rows past the card limit exist only as the table's data: say so where the table is missing
        noscript = (f"<noscript><p class=\"interrupted\"><b>Without JavaScript this page shows {n_cards} of its "
                    f"{n} files</b>, those with a card below; the other {n - n_cards} are only in this table, which "
                    "needs JavaScript. Render them with <code>aiidetect report RUN.jsonl --max-cards 0</code> (or a "
                    "part with <code>--verdict</code>).</p></noscript>")
    return ("<section id=\"files\" aria-label=\"File table\"><h2>All files</h2>" + noscript +
            "<div class=\"controls\">"
            # data-hidden: what the page shows as escapes, so that a name typed or pasted with its zero-width
            # joiner (Persian, emoji) finds the row that shows it as \u200c
            "<label>Search file names and reasons<input id=\"filter-text\" type=\"search\" autocomplete=\"off\" "
            f"data-hidden=\"{_e(hidden_js_class())}\"></label>"
            f"<label>Verdict<select id=\"filter-verdict\"><option value=\"\">all</option>{opts}</select></label>"
            "<label>Rows per page<select id=\"page-size\"><option>50</option><option selected>100</option>"
            "<option>500</option></select></label></div>"
            f"<p id=\"files-count\" role=\"status\" aria-live=\"polite\">{n} files</p>"
            "<div class=\"tablewrap\"><table id=\"files-table\"><caption class=\"mute\">Click a column header to "
            f"sort; the file name opens its card.</caption><thead><tr>{ths}</tr></thead><tbody></tbody></table></div>"
            "<div class=\"pager\"><button type=\"button\" id=\"page-prev\">\u2190 previous</button>"
            "<button type=\"button\" id=\"page-next\">next \u2192</button></div></section>")


# --------------------------------------------------------------------- card
GAUGE_W = 400


def _band_shapes(lo: float, hi: float) -> str:
    """The gauge's three zones and their labels, for a band."""
    W = GAUGE_W

    def x(v: float) -> float:
        return round(v * W, 1)

    return (f"<rect x=\"10\" y=\"16\" width=\"{x(lo)}\" height=\"18\" fill=\"#cfe8d5\"/>"
            f"<rect x=\"{10 + x(lo)}\" y=\"16\" width=\"{x(hi) - x(lo)}\" height=\"18\" fill=\"#f4e2b8\"/>"
            f"<rect x=\"{10 + x(hi)}\" y=\"16\" width=\"{W - x(hi)}\" height=\"18\" fill=\"#f2c4c0\"/>"
            f"<rect x=\"10\" y=\"16\" width=\"{W}\" height=\"18\" fill=\"none\" stroke=\"#777\"/>"
            f"<text x=\"{10 + x(lo) / 2}\" y=\"29\" font-size=\"10\" text-anchor=\"middle\">real</text>"
            f"<text x=\"{10 + (x(lo) + x(hi)) / 2}\" y=\"29\" font-size=\"10\" text-anchor=\"middle\">uncertain</text>"
            f"<text x=\"{10 + (x(hi) + W) / 2}\" y=\"29\" font-size=\"10\" text-anchor=\"middle\">AI</text>"
            f"<text x=\"10\" y=\"50\" font-size=\"10\" text-anchor=\"middle\">0</text>"
            f"<text x=\"{10 + x(lo)}\" y=\"50\" font-size=\"10\" text-anchor=\"middle\">{lo:.2f}</text>"
            f"<text x=\"{10 + x(hi)}\" y=\"50\" font-size=\"10\" text-anchor=\"middle\">{hi:.2f}</text>"
            f"<text x=\"{10 + W}\" y=\"50\" font-size=\"10\" text-anchor=\"middle\">1</text>")


def _svg_defs(fusion: Mapping[str, Any]) -> str:
    """Drawn once, used by every card (<use href="#...">): 10,000 cards stay light."""
    lo, hi = float(fusion["real_threshold"]), float(fusion["ai_threshold"])
    return (f"<svg class=\"defs\" width=\"0\" height=\"0\" aria-hidden=\"true\" focusable=\"false\"><defs>"
            "<linearGradient id=\"colorbar-gradient\"><stop offset=\"0\" stop-color=\"#0000ff\"/>"
            "<stop offset=\"0.5\" stop-color=\"#ffffff\"/><stop offset=\"1\" stop-color=\"#ff0000\"/>"
            f"</linearGradient></defs><symbol id=\"gauge-band\">{_band_shapes(lo, hi)}</symbol></svg>")


def _gauge(p: float | None, fusion: Mapping[str, Any], band: tuple[float, float] | None = None) -> str:
    run_band = (float(fusion["real_threshold"]), float(fusion["ai_threshold"]))
    lo, hi = band or run_band
    marker = ""
    if p is not None:
        m = round(10 + p * GAUGE_W, 1)
        marker = (f"<polygon points=\"{m - 6},2 {m + 6},2 {m},14\" fill=\"#000\"/>"
                  f"<line x1=\"{m}\" y1=\"12\" x2=\"{m}\" y2=\"38\" stroke=\"#000\" stroke-width=\"2\"/>")
    label = "P(AI) not available" if p is None else f"P(AI) = {shown_p_text(p, (hi, lo))}"
    # the words of the overview (writers.band_words): "AI-generated at or above 0.50" named a file at 0.5 that fuse
    # calls uncertain, and an edge of 1 that only decisive evidence passes, from 0.99
    words = band_words(None if fusion.get("band_unknown") else {"ai_threshold": hi, "real_threshold": lo},
                       names=("AI-generated", "likely real"))
    return (f"<svg class=\"gauge\" viewBox=\"0 0 {GAUGE_W + 20} 62\" role=\"img\" aria-label=\"{_e(label)}; "
            f"{_e(words)}, uncertain between\">"
            # a file judged on another band than the run's has its own zones drawn, not the shared ones
            + ("<use href=\"#gauge-band\"/>" if (lo, hi) == run_band else _band_shapes(lo, hi)) + f"{marker}</svg>")


def _strength(e: Mapping[str, Any]) -> float:
    """An evidence item's strength in nats; 0 when a saved record's is not a number."""
    try:
        return float(e.get("strength") or 0)
    except (TypeError, ValueError):
        return 0.0


def _strength_word(e: Mapping[str, Any]) -> str:
    if e.get("decisive"):
        return "decisive"
    s = _strength(e)
    if e.get("direction") == "neutral" or s == 0:
        return "informational"
    return "strong" if s >= 3 else "moderate" if s >= 1 else "weak"


def _value(v: Any, depth: int = 0) -> str:
    """Evidence data as nested lists; every leaf is escaped text."""
    if depth > 6:
        return f"<pre>{_e(_clip(json.dumps(v, ensure_ascii=False, default=str)), keep=PRE)}</pre>"
    if isinstance(v, Mapping):
        if not v:
            return "<span class=\"mute\">(empty)</span>"
        return ("<dl class=\"kv\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_value(x, depth + 1)}</dd>"
                                             for k, x in list(v.items())[:200]) + "</dl>")
    if isinstance(v, (list, tuple)):
        if not v:
            return "<span class=\"mute\">(none)</span>"
        more = f"<li class=\"mute\">\u2026 {len(v) - 200} more</li>" if len(v) > 200 else ""
        return "<ul>" + "".join(f"<li>{_value(x, depth + 1)}</li>" for x in v[:200]) + more + "</ul>"
    s = "" if v is None else str(v)
    if "\n" in s or len(s) > 120:
        return f"<pre>{_e(_clip(s), keep=PRE)}</pre>"
    return f"<span class=\"wrap\">{_e(s)}</span>"


def _evidence(dets: Mapping[str, Any]) -> str:
    items: list[Mapping[str, Any]] = []
    for d in dets.values():
        if isinstance(d, Mapping):
            items += [e for e in (d.get("evidence") or []) if isinstance(e, Mapping)]
    if not items:
        return "<p class=\"mute\">No provenance evidence found (no C2PA manifest, generator text, AI source type, " \
               "watermark or camera metadata). Most images shared online have their metadata stripped; absence " \
               "proves nothing.</p>"

    def key(e):
        return (not e.get("decisive"), -_strength(e))

    out = ["<ol class=\"evidence\">"]
    for e in sorted(items, key=key):
        direction = str(e.get("direction") or "neutral")
        d_word = {"ai": "points to AI", "real": "points to a real photo"}.get(direction, "neutral")
        try:
            st = f"{float(e.get('strength') or 0):.2f}"
        except (TypeError, ValueError):
            st = "?"
        out.append(f"<li><span class=\"dir-{_e(direction if direction in ('ai', 'real') else 'neutral')}\">"
                   f"{_e(_strength_word(e))}, {_e(d_word)}</span> <span class=\"mute\">({_e(e.get('source') or '')}"
                   f" \u00b7 {_e(e.get('id') or '')} \u00b7 strength {st} nats)</span>"
                   f"<div class=\"wrap\">{_e(_clip(str(e.get('detail') or '')))}</div>")
        if e.get("data"):
            out.append(f"<details><summary>details</summary>{_value(e['data'])}</details>")
        out.append("</li>")
    out.append("</ol>")
    return "".join(out)


FACT_TITLES = (("c2pa", "C2PA manifest (Content Credentials)"), ("generators", "Generator text in the file"),
               ("xmp", "XMP / IPTC"), ("iptc", "IPTC IIM (legacy block)"), ("exif", "Camera EXIF"),
               ("watermark", "Invisible watermark"))


def _facts(dets: Mapping[str, Any]) -> str:
    """What the metadata readers found, evidence or not: the C2PA manifest's fields and
    validation state, generator text with the prompt in full, XMP, EXIF, the watermark check."""
    facts = None
    for name, d in dets.items():
        if str(name).split(":")[0] == "metadata" and isinstance(d, Mapping) and isinstance(d.get("facts"), Mapping):
            facts = d["facts"]
    if not facts:
        return ""
    keys = [k for k, _ in FACT_TITLES if k in facts] + sorted(str(k) for k in facts if k not in dict(FACT_TITLES))
    out = ["<h4>What the metadata readers found</h4>"]
    for k in keys:
        v = facts.get(k)
        if v in (None, {}, []):
            continue
        title = dict(FACT_TITLES).get(k, k)
        if k == "watermark" and isinstance(v, Mapping) and v.get("checked") and not v.get("results"):
            body = "<p>checked: no known generator watermark found (absence proves nothing)</p>"
        elif k in ("watermark", "c2pa") and isinstance(v, Mapping):
            # In words first: the raw fields say "valid False" and c2pa-rs's "state Invalid" for an intact
            # manifest whose certificate has expired, which the evidence weighs as unverified, not invalid.
            from ..provenance.factwords import c2pa_status, watermark_words

            said = (f"validation as weighed here: {c2pa_status(v)}" if k == "c2pa" else watermark_words(v))
            body = f"<p><b>{_e(said)}</b></p>" + _value(v)
        else:
            body = _value(v)
        opened = " open" if k in ("c2pa", "generators") else ""
        out.append(f"<details class=\"facts-group\"{opened}><summary>{_e(title)}</summary>{body}</details>")
    return "".join(out) if len(out) > 1 else ""


def _detectors_table(dets: Mapping[str, Any]) -> str:
    rows = []
    absent = []
    for name, d in dets.items():
        if not isinstance(d, Mapping):
            continue
        if d.get("status") == "unavailable":
            # Same reason on every card (the overview lists it): folded away to keep cards short.
            absent.append(f"<li><b>{_e(name)}</b>: <span class=\"wrap\">{_e(d.get('reason') or '')}</span></li>")
            continue
        p = _p(d.get("p_ai"))
        score = d.get("score")
        score_s = "" if score is None else f"{_e(score)} <span class=\"mute\">{_e(d.get('score_kind') or '')}</span>"
        if d.get("threshold_z") is not None:
            thr = f"z \u2265 {_e(d['threshold_z'])}" + (f" (FPR {_e(d['fpr_target'])})" if d.get("fpr_target") else "")
        elif d.get("threshold") is not None:
            thr = f"P(AI) \u2265 {_e(d['threshold'])}"
        elif d.get("score_kind") == "llr" or str(name).split(":")[0] == "metadata":
            thr = "none: evidence, weighed in the fusion"
        elif p is not None:
            thr = "P(AI) \u2265 0.5"
        else:
            thr = ""
        status = str(d.get("status") or "")
        note = f"<div class=\"mute wrap\">{_e(d['reason'])}</div>" if d.get("reason") else ""
        extra = f" <span class=\"mute\">{_e(d['dtype'])}</span>" if d.get("dtype") else ""
        rows.append(f"<tr><th scope=\"row\" class=\"wrap\">{_e(name)}</th><td>{_e(status)}{extra}{note}</td>"
                    f"<td class=\"num\">{DASH if p is None else f'{p:.3f}'}</td><td>{score_s}</td>"
                    f"<td>{thr}</td></tr>")
    folded = (f"<details class=\"absent\"><summary>{len(absent)} detector{'s' if len(absent) != 1 else ''} could "
              f"not run</summary><ul>{''.join(absent)}</ul></details>" if absent else "")
    if not rows:
        return "<p class=\"mute\">No detector gave a result.</p>" + folded
    return ("<div class=\"tablewrap\"><table class=\"dets\"><thead><tr><th scope=\"col\">detector</th>"
            "<th scope=\"col\">status</th><th scope=\"col\">P(AI)</th><th scope=\"col\">raw score</th>"
            "<th scope=\"col\">its threshold</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
            + folded)


def _attribution(dets: Mapping[str, Any]) -> str:
    out = []
    for name, d in dets.items():
        if isinstance(d, Mapping) and d.get("attribution"):
            parts = []
            for a in list(d["attribution"])[:5]:
                if isinstance(a, Mapping):
                    p = _p(a.get("p"))
                    parts.append(f"<li>{_e(a.get('label'))}: {'?' if p is None else f'{p:.2f}'}</li>")
            out.append(f"<h5>{_e(name)}</h5><ol>{''.join(parts)}</ol>")
    if not out:
        return ""
    return ("<h4>Attribution</h4><p class=\"mute\">Which generator family the head finds closest, among those it "
            "was trained on; an unseen generator is still given one of these names.</p>" + "".join(out))


def colorbar_svg(scale: float) -> str:
    return ("<svg class=\"colorbar\" viewBox=\"0 0 300 34\" role=\"img\" aria-label=\"colour scale from blue "
            f"(hiding the area raises P(AI) by {scale:.2f}) through clear (no effect) to red (hiding it lowers P(AI) "
            f"by {scale:.2f})\"><rect x=\"0\" y=\"0\" width=\"300\" height=\"12\" fill=\"url(#colorbar-gradient)\" "
            f"stroke=\"#777\"/><text x=\"0\" y=\"28\" font-size=\"11\">\u2212{scale:.2f}</text>"
            "<text x=\"150\" y=\"28\" font-size=\"11\" text-anchor=\"middle\">0</text>"
            f"<text x=\"300\" y=\"28\" font-size=\"11\" text-anchor=\"end\">+{scale:.2f}</text></svg>")


HEATMAP_LEGEND = ("Occlusion map, drawn over the image as the detector sees it (resized and/or centre-cropped "
                  "exactly as in the scan): each square was blurred in turn and the detector run again. "
                  "Red: blurring that square lowered this detector's P(AI), so the square pushed it towards AI. "
                  "Blue: blurring it raised P(AI). Clear: little or no effect. The colour bar is in P(AI) points "
                  "(at least \u00b10.05, so tiny effects stay faint). A map shows where a detector's answer "
                  "comes from, not which pixels were generated or edited, and a detector that is wrong is "
                  "wrong about its map too.")


def _maxabs(deltas: Any) -> float:
    try:
        import numpy as np

        return float(np.nanmax(np.abs(np.asarray(deltas, dtype=float))))
    except (TypeError, ValueError):
        return 0.0


def _heatmaps(maps: Sequence[Mapping[str, Any]] | None) -> str:
    if not maps:
        return ""
    figs = []
    for m in maps:
        if m.get("error"):
            figs.append(f"<p class=\"mute wrap\">heat map {_e(m.get('detector') or '')} failed: {_e(m['error'])}</p>")
            continue
        img = m.get("image")
        if not (isinstance(img, str) and img.startswith("data:image/jpeg;base64,")):
            continue
        figs.append(f"<figure><img src=\"{_e(img)}\" alt=\"occlusion heat map for {_e(m.get('detector'))}\">"
                    f"{colorbar_svg(float(m.get('scale') or 0))}<figcaption><b>{_e(m.get('detector'))}</b>: P(AI) "
                    f"{float(m.get('base_p') or 0):.3f} on its view of the image; {_e(m.get('grid'))}\u00d7"
                    f"{_e(m.get('grid'))} squares; largest change {_maxabs(m.get('deltas')):.3f}"
                    + (f"<br>{_e(m['view'])}" if isinstance(m.get("view"), str) else "") + "</figcaption>"
                    "</figure>")
    return ("<h4>Where the detectors looked</h4><div class=\"heatmaps\">" + "".join(figs) + "</div>"
            f"<p class=\"mute\">{_e(HEATMAP_LEGEND)}</p>")


def _toward_ai(dets: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """What in a record points to a generator, at least as the card words "moderate" (1 nat) or as a pixel
    detector that flags it against its own threshold: a likely-real verdict can outweigh a signed C2PA
    "generative fill" or an AI tool in EXIF (soft evidence, capped at 2 nats) with one confident probe.
    (how the card names it, the pixel detector's name or None for an evidence item)"""
    out: list[tuple[str, str | None]] = []
    for name, d in dets.items():
        if not isinstance(d, Mapping) or d.get("status") != "ok":
            continue
        items = [e for e in (d.get("evidence") or []) if isinstance(e, Mapping)]
        for e in items:
            if e.get("direction") == "ai" and (e.get("decisive") or _strength(e) >= 1):
                out.append((f"{e.get('id')} ({_strength_word(e)})", None))
        p = _p(d.get("p_ai"))
        if items or str(name).split(":")[0] == "metadata" or p is None:
            continue
        thr = _p(d.get("threshold"))
        if (p >= thr) if thr is not None else p > 0.5:
            out.append((f"{name} (P(AI) {p:.3f})", str(name)))
    return list(dict.fromkeys(out))


def _unread_c2pa(dets: Mapping[str, Any]) -> list[str]:
    """Why each C2PA manifest store of the record could not be read (its `c2pa.unreadable` evidence)."""
    from ..fusion import C2PA_UNREAD_ID, c2pa_unread_why

    return list(dict.fromkeys(
        c2pa_unread_why(str(e.get("detail") or "")) for d in dets.values()
        if isinstance(d, Mapping) and d.get("status") == "ok"
        for e in (d.get("evidence") or []) if isinstance(e, Mapping) and e.get("id") == C2PA_UNREAD_ID))


def _unread_c2pa_words(why: str) -> str:
    from ..fusion import C2PA_UNREAD, C2PA_UNREAD_MAY

    return f"{C2PA_UNREAD[0].upper()}{C2PA_UNREAD[1:]} ({why}); {C2PA_UNREAD_MAY}. Check it with another C2PA reader."


def _no_say(reasons: Sequence[str]) -> set[str]:
    """The pixel detectors fusion's notes say a fitted model gave no say ("flow: not in the fusion model,
    ignored", "flow: its head changed since the fusion model was fitted, ignored", "a, b: weight 0 in the
    fusion model ..., no say in the verdict", an unreadable calibration, a logit that is not finite).
    By how those notes end: a detector's own line may name the fusion model too ("... of its 3.00: the
    fusion model weighs soft evidence 0.50")."""
    out: set[str] = set()
    for x in reasons:
        names, _, why = x.partition(": ")
        if " the fusion model" in why and why.endswith(("ignored", "no say in the verdict")):
            out.update(names.split(", "))
    return out


def _explain(v: str, dets: Mapping[str, Any], reasons: Any = ()) -> str:
    """The card's sentence under its verdict; it must hold for this file, not only for the typical one."""
    from ..fusion import NO_OPINION, NO_OPINION_WAS, NO_READING, SOFT_ONLY, SOFT_ONLY_WAS

    said = [x for x in reasons if isinstance(x, str)] if isinstance(reasons, list) else []
    if v == "uncertain" and (SOFT_ONLY in said or SOFT_ONLY_WAS in said):
        # "weak or conflicting" misread a file whose EXIF names an AI tool (strong evidence, P(AI) 0.88).
        # Not "metadata never decides": decisive metadata (generator parameters, a signed AI declaration) does.
        return ("aiidetect does not decide: only the file's metadata spoke, and none of it is decisive (such as "
                "generator parameters or a signed AI declaration); the rest never decides alone, however strong "
                "(it is stripped or written in seconds; no pixel detector had a say on this file). "
                "Treat this file as unverified and look for other sources.")
    if v == "uncertain" and any(x.startswith((NO_OPINION, NO_READING, NO_OPINION_WAS)) for x in said):
        return ("aiidetect does not decide: no detector could give an opinion on this file (see why below). "
                "Treat this file as unverified and look for other sources.")
    if v == "likely-real" and (dissent := _toward_ai(dets)):
        # A detector a fitted model ignored was not outweighed: the verdict never weighed it.
        unheard = _no_say(said)
        weighed = [w for w, n in dissent if n not in unheard]
        ignored = [w for w, n in dissent if n in unheard]
        parts = ([f"{', '.join(weighed)} {'points' if len(weighed) == 1 else 'point'} to a generative model and "
                  f"{'was' if len(weighed) == 1 else 'were'} outweighed"] if weighed else []) + \
                ([f"{', '.join(ignored)} {'points' if len(ignored) == 1 else 'point'} to a generative model but "
                  "had no say in the fusion model that decided"] if ignored else [])
        return (f"Taken together, the evidence points to a real photo, but not all of it: {'; '.join(parts)} "
                "(see below). This is not proof of authenticity: edits and fakes made to fool detectors can look "
                "like this.")
    return VERDICT_WORDS[v][2]


def _card(i: int, item: Mapping[str, Any], fusion: Mapping[str, Any], eager: bool = False) -> str:
    r = item["rec"]
    v = str(r.get("verdict") or "error")
    v = v if v in VERDICT_WORDS else "error"
    p = _p(r.get("p_ai"))
    band = _file_band(fusion, r.get("reasons"), r.get("band"))   # (real, ai): the one that judged this file
    dets = r.get("detectors") if isinstance(r.get("detectors"), Mapping) else {}
    # A file that could not be analysed is unverified too: it prints, with its reason, beside the flagged ones.
    cls = "card flagged" if v in FLAGGED else "card failed" if v == "error" else "card"
    thumb = item.get("thumb")
    # A flagged card prints, and a lazy image not yet scrolled to printed as nothing (Chromium's print to PDF
    # does not load it): those load with the page (`eager`). The others, on screen only, when scrolled to.
    lazy = "" if eager else " loading=\"lazy\""
    # The alt text names the file and its verdict: "thumbnail", said 2,000 times, told a screen-reader user
    # nothing a sighted reader gets from the picture beside its verdict.
    alt = f"thumbnail of {r.get('file')}, judged {VERDICT_WORDS[v][1]}"
    img = (f"<img src=\"{_e(thumb)}\" alt=\"{_e(alt)}\"{lazy} decoding=\"async\">"
           if isinstance(thumb, str) and thumb.startswith("data:image/jpeg;base64,")
           else f"<div class=\"noimg\" title=\"{_e(item.get('thumb_note') or '')}\">no thumbnail"
                + (f"<small>{_e(item['thumb_note'])}</small>" if item.get("thumb_note") else "") + "</div>")
    o = [f"<article class=\"{cls}\" id=\"f{i}\" aria-labelledby=\"f{i}-name\">",
         # The file's name is the card's heading, its sections one level down: a screen reader that moves by
         # headings heard "What moved the verdict" for every card and never which file it was.
         f"<div class=\"card-head\">{img}<div><h3 class=\"file-name wrap\" id=\"f{i}-name\">{_e(r.get('file'))}</h3>",
         f"<p>{_verdict_badge(v)} <b>P(AI) {'not available' if p is None else shown_p_text(p, band[::-1])}</b></p>",
         f"<p class=\"explain\">{_e(_explain(v, dets, r.get('reasons')))}</p>"]
    # Beside the verdict's own sentence, not below in the evidence list: a manifest that could not be read may
    # declare how the file was made, and a reader of the lead alone never learnt it was there.
    o += [f"<p class=\"explain\"><b>Content Credentials not read.</b> <span class=\"wrap\">{_e(_unread_c2pa_words(w))}"
          "</span></p>" for w in _unread_c2pa(dets)]
    err = r.get("error")
    if isinstance(err, Mapping):
        o.append(f"<p><b>{_e(err.get('code'))}</b>: <span class=\"wrap\">{_e(err.get('message'))}</span></p>")
    if not isinstance(err, Mapping) or v != "error":
        o.append(_gauge(p, fusion, band))
    o.append("</div></div>")
    reasons = r.get("reasons") or []
    if reasons:
        o.append("<h4>What moved the verdict</h4><ol>" + "".join(f"<li class=\"wrap\">{_e(x)}</li>" for x in reasons)
                 + "</ol>")
    if dets:
        o.append("<h4>Detectors side by side</h4>" + _detectors_table(dets))
        o.append(_attribution(dets))
    o.append(_heatmaps(item.get("heatmaps")))
    if err is None or v != "error":  # a verdict beside an error rests on this evidence
        o.append("<h4>Provenance evidence, strongest first</h4>" + _evidence(dets))
        o.append(_facts(dets))
    o.append("<h4>File</h4><dl class=\"kv\">")
    facts = [("SHA-256", r.get("sha256")), ("size", f"{r['size_bytes']} bytes" if r.get("size_bytes") is not None
                                            else None),
             ("format", r.get("format")),
             # a file with an error may have its size from its header alone (docs/schema.md "Fields"): a
             # crafted header's 2147483647 x 2147483648 must not read as measured
             ("pixels, as its header states" if isinstance(err, Mapping) else "pixels",
              f"{r.get('width')} \u00d7 {r.get('height')}" if r.get("width") else None)]
    image = r.get("image") if isinstance(r.get("image"), Mapping) else {}
    facts += [(k, image.get(k)) for k in ("mode", "frames", "orientation", "has_alpha") if image.get(k) is not None]
    for k, x in facts:
        if x is not None:
            o.append(f"<dt>{_e(k)}</dt><dd class=\"wrap\"><code>{_e(x)}</code></dd>")
    o.append("</dl><p class=\"noprint\"><a href=\"#files\">back to the table</a></p></article>")
    return "".join(o)


# --------------------------------------------------------------------- saved runs
def iter_saved(stream: IO[str], problems: list[str], max_line: int | None = None) -> Iterator[dict[str, Any]]:
    """Records from JSONL (or one JSON array), one at a time: a 100,000-line run is never held whole.
    A line that is not a record becomes an error record naming the line, and a problem string for
    stderr. Lines end at \\n only: JSONL may carry U+2028, U+0085 or \\x1c raw inside its strings
    (a file name may hold them; older `scan`s wrote U+2028 raw), which str.splitlines() would cut into pieces. A line longer
    than `max_line` characters is skipped unread."""
    from ..limits import REPORT_MAX_LINE_CHARS
    from .safe import loads_foreign

    cap = REPORT_MAX_LINE_CHARS if max_line is None else max_line
    n = 0
    first = True
    while True:
        line = stream.readline(cap + 1)
        n += 1
        if not line:
            return
        if len(line) > cap and not line.endswith("\n"):
            size = len(line)
            while True:  # the rest of the line, read and dropped a piece at a time
                more = stream.readline(cap + 1)
                size += len(more) - more.endswith("\n")
                if not more or more.endswith("\n"):
                    break
            why = f"longer than {cap:,} characters ({size:,}); not read"
            problems.append(f"line {n}: {why}")
            yield _bad(n, why)
            continue
        if line.startswith("\ufeff"):
            # A byte-order mark: the run was saved again by Notepad or PowerShell's `Out-File -Encoding utf8`.
            # Left in, the first record (or, for a JSON array, every record) became a "not JSON" error card;
            # runs so saved and then joined (`cat a.jsonl b.jsonl`) have one in front of each. No JSON text
            # starts with U+FEFF, so none is lost. Taken off only here, past the length check: the line read
            # was cut at the cap with the mark in it.
            line = line[1:]
        if not line.strip():
            continue
        if first and line.lstrip().startswith("["):
            # One JSON array (`scan --format json`): its text is read whole, its items parsed one at a
            # time (all of them at once took 820 MiB for a 160 MB array, five times the JSONL's peak).
            text = line + stream.read()
            for k, r in enumerate(_array_items(text, problems)):
                if isinstance(r, _Cut):
                    yield _bad(k + 1, r.why, "item")
                    continue
                if not _is_record(r):
                    problems.append(f"item {k + 1}: not a scan record")
                yield r if _is_record(r) else _bad(k + 1, "not a scan record", "item")
            return
        first = False
        try:
            r = loads_foreign(line)
        except ValueError as exc:
            cut = " (the last line is cut short: was the run stopped while writing it?)" \
                if not line.endswith("\n") else ""
            problems.append(f"line {n}: not JSON ({exc}){cut}")
            yield _bad(n, f"not JSON ({exc}){cut}")
            continue
        if not _is_record(r):
            problems.append(f"line {n}: not a scan record")
            yield _bad(n, "not a scan record")
            continue
        yield r


class _Cut:
    def __init__(self, why: str):
        self.why = why


def _array_items(text: str, problems: list[str]) -> Iterator[Any]:
    """The items of the JSON array that `text` starts with, one at a time, up to the first that does
    not parse (then a _Cut saying why, and nothing after it is read): an array cut short (`scan -f json
    > run.json` killed) keeps every item before the cut."""
    dec = json.JSONDecoder()
    pos, k, end = text.index("[") + 1, 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end:
            why = "the JSON array ends without its closing ]: the run was stopped while writing it?"
            problems.append(f"item {k + 1}: {why}")
            yield _Cut(why)
            return
        if text[pos] == "]":
            if text[pos + 1:].strip():
                problems.append("text after the JSON array's closing ] is not read")
            return
        try:
            obj, pos = dec.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            msg = "JSON nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            cut = "" if text.rstrip().endswith("]") else \
                " (the array is cut short: was the run stopped while writing it?)"
            why = f"not JSON ({msg}){cut}"
            problems.append(f"item {k + 1}: {why}")
            yield _Cut(why)
            return
        k += 1
        yield obj


def _is_record(r: Any) -> bool:
    return isinstance(r, dict) and isinstance(r.get("file"), str) and "verdict" in r


# Marks the stand-in records iter_saved makes for what is not a record (never a key a scan writes).
_BAD = "\x00aiidetect-not-a-record"


class NotASavedRun(ValueError):
    """Nothing in the input is a scan record: a usage error (exit 2), nothing written."""


def _bad(n: int, why: str, what: str = "line") -> dict[str, Any]:
    return {"file": f"(input {what} {n})", "verdict": "error", "p_ai": None, "detectors": {}, "reasons": [],
            "error": {"code": "bad-record", "message": why}, _BAD: True}


def render_saved_run(stream: IO[str], out: IO[str], source: str, thumbnails: bool = True,
                     argv: Sequence[str] | None = None, limits=None, max_cards: int | None = None,
                     verdicts: Iterable[str] = ()) -> dict[str, Any]:
    """`aiidetect report`: a saved JSONL run -> the HTML page, without re-scanning.
    Thumbnails are read from the files when they are still where the run found them.
    `verdicts` keeps only the records with those verdicts (the page says it is a part)."""
    only = set(verdicts)
    problems: list[str] = []
    run = run_info_from_records((), source, argv)
    try:
        run["source_mtime"] = os.fstat(stream.fileno()).st_mtime if source != "-" else None
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        pass  # a stream with no file behind it
    w = HtmlWriter(out, run, thumbnails=thumbnails, limits=limits, max_cards=max_cards, record_facts=True)
    total = good = 0
    # A run appended to twice (`>>`), or two runs concatenated, repeats records: each is shown and
    # counted as it is in the file, and the page and stderr say how many repeat an earlier one.
    seen: dict[tuple[Any, Any], int] = {}
    repeats: list[tuple[int, int]] = []
    for r in iter_saved(stream, problems):
        total += 1
        good += not r.get(_BAD)
        r = normalize_record(r)
        sha = r.get("sha256")
        if r.get("error") is None or sha:
            key = (str(r.get("file")), sha if isinstance(sha, str) else None)
            first = seen.setdefault(key, total)
            if first != total:
                repeats.append((total, first))
        if only and not verdict_matches(r["verdict"], r.get("error") is not None, only):
            if w.facts is not None:
                # The overview's schema, detectors and fusion are the run's: a part with no file in it said
                # "record schema: not given" and "detectors: none recorded" of a run that names them.
                w.facts.add(r)
            continue
        w.add(r)
    if total and not good:
        # `aiidetect report photo.jpg`: a page of 13,000 "files", each a line of JPEG bytes, is no report.
        raise NotASavedRun(f"{source} is not a saved run: none of its {total} line(s) is a scan record "
                           f"({problems[0] if problems else 'no record'})")
    if only:
        w.run = {**w.run, "only": sorted(only), "total_records": total}
    if repeats:
        note = (f"{len(repeats)} record{'s' if len(repeats) != 1 else ''} repeat an earlier one (same file and "
                f"SHA-256; record {repeats[0][0]} repeats record {repeats[0][1]}): each is shown and counted as "
                "it is in the file")
        problems.insert(0, note)  # one note about the whole run, before the per-line ones stderr may cut
        w.run = {**w.run, "repeats": note}
    w.close()
    return {"files": len(w.rows), "verdicts": {v: k for v, k in w.counts.items() if k}, "problems": problems,
            "decided_errors": decided_errors(w.rows),
            "thumbnails": w.thumbs, "cards": sum(1 for _ in w.items), "records": total}


def scan_writer(stream: IO[str], detectors: Sequence[Any], ctx: Any, fusion_model: Mapping[str, Any] | None,
                heatmap_verdicts: Iterable[str] = (), limits=None) -> HtmlWriter:
    """The writer `aiidetect scan --format html` uses; heat maps run through the
    scan's own detectors for the files whose verdict is in heatmap_verdicts."""
    wanted = list(heatmap_verdicts)
    mapper = None
    if wanted:
        from ..explain.occlusion import occlusion_maps

        def mapper(path: str, sha256: str | None) -> list[dict[str, Any]]:
            return occlusion_maps(path, detectors, limits=limits, sha256=sha256)
    return HtmlWriter(stream, run_info_from_scan(detectors, ctx, fusion_model), heatmap_for=wanted,
                      heatmapper=mapper, limits=limits)
