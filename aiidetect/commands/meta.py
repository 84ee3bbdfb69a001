"""`aiidetect meta FILE|DIR...`: the provenance report, per file.

Reads metadata only (no model, no torch): EXIF, XMP, generator parameters,
C2PA, the SD watermark, structural hints, and what they weigh.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import EXIT_FINDINGS, EXIT_OK, fail

def _report_one(path: str, watermark: str, error: tuple[str, str] | None = None) -> dict:
    from ..decode import DecodeFailure, read_bytes
    from ..metadata.detector import result_from_evidence
    from ..provenance import analyze
    from ..report.safe import display_path, path_bytes_b64

    head = {"file": display_path(path), "file_bytes": path_bytes_b64(path)}
    if error is not None:
        return {**head, "error": {"code": error[0], "message": error[1]}}
    try:
        data = read_bytes(path)
    except DecodeFailure as exc:
        return {**head, "error": {"code": exc.code, "message": exc.message}}
    rep = analyze(data, path, options={"watermark": watermark})
    res = result_from_evidence(rep.evidence)
    d = {**head, **{k: v for k, v in rep.to_dict().items() if k != "file"}}
    d["p_ai"] = None if res.p_ai is None else round(res.p_ai, 6)
    d["llr"] = None if res.score is None else round(res.score, 4)
    d["error"] = None
    return d


def _print_table(reports: list[dict], stream=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from ..report.safe import printable

    # Names, prompts, EXIF and C2PA strings come from the files: printed as Text or escaped, never markup.
    con = Console(file=stream, highlight=False)
    for r in reports:
        con.rule(Text(printable(r["file"]), style="bold"))
        if r.get("error"):
            con.print(Text.assemble(("error", "red"), printable(f" {r['error']['code']}: {r['error']['message']}")))
            continue
        size = f"{r['width']}x{r['height']}" if r.get("width") else "?"
        p, llr = r.get("p_ai"), r.get("llr")
        opinion = "no opinion" if p is None else f"{p:.3f}  (sum of LLR {llr:+.2f} nats)"
        con.print(Text(f"{r.get('format') or '?'} {size}   metadata p_ai: {opinion}"))
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
            con.print(printable("EXIF: " + ", ".join(f"{k}={ex[k]}" for k in keys if ex.get(k) not in (None, ""))),
                      markup=False)
        for g in facts.get("generators", []):
            con.print(f"[bold]{escape(printable(str(g['generator'])))}[/] ({escape(printable(str(g['where'])))})")
            for k in ("model", "sampler", "seed", "steps", "prompt", "negative_prompt"):
                if g.get(k):
                    con.print(printable(f"  {k}: {g[k]}"), markup=False)
        if facts.get("c2pa"):
            c = facts["c2pa"]
            con.print(printable(f"C2PA: generator={c.get('claim_generator')}, signer={c.get('signer')}, "
                                f"valid={c.get('valid')}, actions={c.get('actions')}, "
                                f"source types={c.get('source_types')}"), markup=False)
        if facts.get("watermark"):
            con.print(printable(f"watermark: {facts['watermark']}"), markup=False)
        for e in r.get("errors", []):
            con.print(Text.assemble(("warning", "yellow"), printable(f" {e}")))


CSV_COLUMNS = ["schema", "file", "file_bytes", "format", "width", "height", "p_ai", "llr", "decisive", "evidence",
               "error_code", "error_message"]


def _csv_row(r: dict) -> list:
    from ..records import SCHEMA_VERSION

    ev = r.get("evidence") or []
    err = r.get("error") or {}
    return [SCHEMA_VERSION, r["file"], r.get("file_bytes"), r.get("format"), r.get("width"), r.get("height"),
            r.get("p_ai"), r.get("llr"), " ".join(e["id"] for e in ev if e.get("decisive")),
            " ".join(e["id"] for e in ev), err.get("code"), err.get("message")]


def meta_reports(paths: list[str], watermark: str = "auto", recursive: bool = True) -> list[dict]:
    """Library entry point: the same file discovery as scan (one record per file,
    broken links and special files included), then the provenance report of each."""
    from ..discover import discover

    cands, _ = discover(paths, recursive=recursive)
    return [_report_one(c.path, watermark, c.error) for c in cands]


def meta(
    paths: list[str] = typer.Argument(..., help="Image files or folders (folders are searched recursively)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json | jsonl | csv"),
    watermark: str = typer.Option("auto", "--watermark",
                                  help="SD invisible watermark check: auto (SD-plausible sizes only) | always | never."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report here instead of stdout "
                                                                      "(written whole, then renamed into place)."),
):
    """Provenance report: EXIF, XMP, generator parameters, C2PA, watermark. Exit 1 if any file carries
    decisive AI evidence, 2 on a usage or fatal error, 0 otherwise (files that cannot be read get a
    record with an error code).

    Examples: aiidetect meta photo.jpg; aiidetect meta --format jsonl folder/ | jq .p_ai
    """
    from ..discover import DiscoveryError
    from ..report.output import OutputError, atomic_output, check_output
    from ..report.safe import clean, dumps

    if fmt not in ("table", "json", "jsonl", "csv"):
        fail(f"--format must be table, json, jsonl or csv, not {fmt!r}")
    if watermark not in ("auto", "always", "never"):
        fail(f"--watermark must be auto, always or never, not {watermark!r}")
    try:
        from ..discover import discover

        cands, _ = discover(paths)
    except DiscoveryError as exc:
        fail(str(exc))
    if output is not None:
        try:
            check_output(output, paths, [c.path for c in cands if c.error is None])
        except OutputError as exc:
            fail(str(exc))
    reports = [_report_one(c.path, watermark, c.error) for c in cands]

    def emit(fh) -> None:
        if fmt == "json":
            fh.write(dumps(reports, indent=2) + "\n")
        elif fmt == "jsonl":
            for r in reports:
                fh.write(dumps(r) + "\n")
        elif fmt == "csv":
            import csv

            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for r in reports:
                w.writerow(["" if v is None else v for v in clean(_csv_row(r))])
        else:
            _print_table(reports, fh)

    if output:
        with atomic_output(output) as fh:
            emit(fh)
    else:
        emit(sys.stdout)
        sys.stdout.flush()
    decisive = any(e.get("decisive") and e["direction"] == "ai" for r in reports for e in r.get("evidence", []))
    raise typer.Exit(EXIT_FINDINGS if decisive else EXIT_OK)


def register(apps) -> None:
    apps["root"].command("meta")(meta)
