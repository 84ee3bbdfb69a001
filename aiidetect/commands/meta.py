"""`aiidetect meta FILE|DIR...`: the provenance report, per file.

Reads metadata only (no model, no torch): EXIF, XMP, generator parameters,
C2PA, the SD watermark, structural hints, and what they weigh.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import (EXIT_FINDINGS, EXIT_OK, C2paTrustOpt, FollowLinksOpt, MaxBytesOpt, MaxPixelsOpt, OutputOpt, QuietOpt,
                     RecordFormat, RecordFormatOpt, Watermark, fail, library_errors)


def _print_table(reports: list[dict], stream=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from ..provenance.factwords import c2pa_line, watermark_words
    from ..report.safe import printable_for, table_width

    # Names, prompts, EXIF and C2PA strings come from the files: printed as Text or escaped, never markup,
    # and never with ":name:" codes turned into emoji. Piped, laid out as wide as scan's table (rich's 80 cut
    # the names).
    con = Console(file=stream, highlight=False, emoji=False, width=table_width(stream or sys.stdout))
    # At a terminal that is not UTF-8, what it cannot show is escaped before the layout (the rule, the table).
    printable = printable_for(con.encoding)
    for r in reports:
        name = Text(printable(r["file"]), style="bold")
        if name.cell_len + 4 <= con.width:
            con.rule(name)
        else:
            # a rule cuts its title with an ellipsis: the report would not say which file it is about
            con.print(name, soft_wrap=True)
        if r.get("error"):
            con.print(Text.assemble(("error", "red"), printable(f" {r['error']['code']}: {r['error']['message']}")))
            continue
        size = f"{r['width']}x{r['height']}" if r.get("width") else "?"
        p, llr = r.get("p_ai"), r.get("llr")
        summed = sum((e.get("strength") or 0) * {"ai": 1, "real": -1}.get(e.get("direction"), 0)
                     for e in r["evidence"])
        # "sum of LLR +6.00" under rows of +6.00 and +4.00 read as a miscalculation: claims count as the strongest.
        how = "" if abs(summed - (llr or 0)) < 1e-3 else ": unsigned claims count as the strongest, not summed"
        opinion = "no opinion" if p is None else f"{p:.3f}  ({'LLR' if how else 'sum of LLR'} {llr:+.2f} nats{how})"
        con.print(Text(f"{r.get('format') or '?'} {size}   metadata p_ai: {opinion}"))
        fp = r.get("fused_p_ai")
        if fp is not None and (p is None or f"{fp:.3f}" != f"{p:.3f}"):
            # scan's number for the same evidence follows fusion's rules; two unexplained numbers side by side
            # read as a bug to whoever compares `meta` with `scan -d metadata`.
            con.print(Text(f"  scan -d metadata P(AI): {fp:.3f}  (fusion's rules 3-4, docs/fusion.md: soft evidence "
                           f"counts at most 2 nats in all, a signature or watermark at least 9.2)"))
        t = Table(show_header=True, header_style="bold", expand=True)
        t.add_column("evidence", no_wrap=True)
        t.add_column("dir", no_wrap=True)
        t.add_column("LLR", justify="right", no_wrap=True)
        t.add_column("detail")
        t.add_column("where")
        for e in r["evidence"]:
            sign = {"ai": "+", "real": "-"}.get(e["direction"], " ")
            style = {"ai": "red", "real": "green"}.get(e["direction"], "dim")
            t.add_row(Text(e["id"]) + (Text(" *", style="bold") if e.get("decisive") else Text("")),
                      Text(e["direction"], style=style), Text(f"{sign}{e['strength']:.2f}"),
                      Text(printable(e["detail"])), Text(printable(e.get("source", ""))))
        if r["evidence"]:
            con.print(t)
        facts = r.get("facts") or {}
        ex = facts.get("exif")
        if ex:
            keys = ("make", "model", "lens", "capture_time", "exposure_time", "f_number", "iso", "focal_length",
                    "software", "has_makernote", "has_gps")
            con.print(printable("EXIF: " + ", ".join(f"{k}={ex[k]}{_cut(ex, k)}" for k in keys
                                                     if ex.get(k) not in (None, ""))), markup=False)
        for f in facts.get("iptc", []):
            keys = ("originating_program", "program_version", "by_line", "credit", "source", "copyright_notice",
                    "date_created", "time_created", "caption")
            con.print(printable(f"IPTC ({f.get('where')}): " + ", ".join(
                f"{k}={_items(f, k) if isinstance(f[k], list) else f'{f[k]}{_cut(f, k)}'}" for k in keys
                if f.get(k) not in (None, "", []))), markup=False)
        for g in facts.get("generators", []):
            con.print(f"[bold]{escape(printable(str(g['generator'])))}[/] ({escape(printable(str(g['where'])))})")
            for k in ("model", "sampler", "seed", "steps", "prompt", "negative_prompt"):
                if g.get(k):
                    con.print(printable(f"  {k}: {g[k]}{_cut(g, k)}"), markup=False)
        if facts.get("c2pa"):
            con.print(printable(c2pa_line(facts["c2pa"])), markup=False)
        if facts.get("watermark"):
            con.print(printable("watermark: " + watermark_words(facts["watermark"])), markup=False)
        for e in r.get("errors", []):
            con.print(Text.assemble(("warning", "yellow"), printable(f" {e}")))


def _cut(d: dict, k: str, shown: object = None) -> str:
    """What the record's `truncated` says about field k: the table must not pass a cut prompt off as whole."""
    full = (d.get("truncated") or {}).get(k)
    return (f"... (the first {len(str(d[k] if shown is None else shown))} of {full} characters)"
            if isinstance(full, int) else "")


def _items(d: dict, k: str) -> str:
    """A list field, each item with what `truncated` says of it (it names an item k[i])."""
    return "; ".join(f"{x}{_cut(d, f'{k}[{i}]', x)}" for i, x in enumerate(d[k]))


CSV_COLUMNS = ["schema", "file", "file_bytes", "format", "width", "height", "p_ai", "llr", "decisive", "evidence",
               "error_code", "error_message", "fused_p_ai"]


def _csv_row(r: dict) -> list:
    from ..records import SCHEMA_VERSION

    ev = r.get("evidence") or []
    err = r.get("error") or {}
    return [SCHEMA_VERSION, r["file"], r.get("file_bytes"), r.get("format"), r.get("width"), r.get("height"),
            r.get("p_ai"), r.get("llr"), " ".join(e["id"] for e in ev if e.get("decisive")),
            " ".join(e["id"] for e in ev), err.get("code"), err.get("message"), r.get("fused_p_ai")]


def meta(
    paths: list[str] = typer.Argument(..., help="Image files or folders (folders are searched recursively); '-' reads "
                                                "a list of paths from stdin (one a line, or NUL-separated)."),
    fmt: RecordFormat = RecordFormatOpt,
    watermark: Watermark = typer.Option("auto", "--watermark",
                                  help="SD invisible watermark check: auto (SD-plausible sizes only) | always | never."),
    output: Optional[Path] = OutputOpt,
    follow_links: bool = FollowLinksOpt,
    max_pixels: int = MaxPixelsOpt,  # scan's: pixels scan would refuse get no watermark check here either
    max_bytes: int = MaxBytesOpt,  # scan's: a file over it is `too-large` unread, whose message names this option
    quiet: bool = QuietOpt,  # accepted like everywhere else: meta prints nothing on stderr but errors
    c2pa_trust: Optional[list[Path]] = C2paTrustOpt,
):
    """Provenance report: EXIF, XMP, generator parameters, C2PA, watermark (no model).

    Exit 1 if any file carries decisive AI evidence, 2 on a usage or fatal error, 0 otherwise (files
    that cannot be read get a record with an error code).

    Examples: aiidetect meta photo.jpg; aiidetect meta --format jsonl folder/ | jq .p_ai;
    find . -name '*.png' -print0 | aiidetect meta -f csv -
    """
    from ..api import iter_meta_candidates, load_c2pa_trust, meta_report
    from ..report.output import OutputError, atomic_output
    from ..report.safe import CsvRows, dumps
    from ..report.writers import JsonArray
    from .errors import reader_left

    watermark = watermark.value  # the library takes a string
    with library_errors():
        # Read and checked once, before any file: a bad trust file is a usage error, not a report per file.
        trust = load_c2pa_trust(c2pa_trust or None)
        cands = iter_meta_candidates(paths, output=output, follow_links=follow_links)
    found = False

    def reports():
        # One file at a time, as discovery walks: a list of a million paths on stdin streams (json,
        # jsonl, csv); only the table, meant for a screen, holds its reports until the end.
        nonlocal found
        for c in cands:
            r = meta_report(c.path, watermark, c.error, c.ident, max_pixels, max_bytes, c2pa_trust=trust or ())
            found = found or any(e.get("decisive") and e["direction"] == "ai" for e in r.get("evidence", []))
            yield r

    def emit(fh) -> None:
        if fmt == RecordFormat.json:
            with JsonArray(fh, indent=2) as arr:  # json.dumps(list, indent=2), a report at a time
                for r in reports():
                    arr.add(r)
        elif fmt == RecordFormat.jsonl:
            for r in reports():
                fh.write(dumps(r) + "\n")
                fh.flush()
        elif fmt == RecordFormat.csv:
            w = CsvRows(fh)
            w.writerow(CSV_COLUMNS)
            for r in reports():
                w.writerow(_csv_row(r))
        else:
            _print_table(list(reports()), fh)

    try:
        if output:
            with atomic_output(output) as fh:
                emit(fh)
        else:
            # A full disk under stdout is the run's stdout guard's to name (report.output.StdoutWrites)
            emit(sys.stdout)
            sys.stdout.flush()
    except OutputError as exc:  # a file reached through a link or a stdin list is the output
        fail(str(exc))
    except BrokenPipeError:  # `meta ... | head`: the reader left; what was found still counts
        reader_left(EXIT_FINDINGS if found else EXIT_OK)
    raise typer.Exit(EXIT_FINDINGS if found else EXIT_OK)


def register(apps) -> None:
    apps["root"].command("meta")(meta)
