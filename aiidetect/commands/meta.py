"""`aiidetect meta FILE|DIR...`: the provenance report, per file.

Reads metadata only (no model, no torch): EXIF, XMP, generator parameters,
C2PA, the SD watermark, structural hints, and what they weigh.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, fail

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".gif", ".bmp", ".jfif"}


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXT))
        else:
            out.append(p)
    return out


def _report_one(path: Path, watermark: str) -> dict:
    from ..decode import DecodeFailure, read_bytes
    from ..detectors.metadata import result_from_evidence
    from ..provenance import analyze

    try:
        data = read_bytes(path)
    except DecodeFailure as exc:
        return {"file": str(path), "error": {"code": exc.code, "message": exc.message}}
    rep = analyze(data, str(path), options={"watermark": watermark})
    res = result_from_evidence(rep.evidence)
    d = rep.to_dict()
    d["p_ai"] = None if res.p_ai is None else round(res.p_ai, 6)
    d["llr"] = None if res.score is None else round(res.score, 4)
    d["error"] = None
    return d


def _print_table(reports: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    for r in reports:
        con.rule(f"[bold]{r['file']}")
        if r.get("error"):
            con.print(f"[red]error[/] {r['error']['code']}: {r['error']['message']}", highlight=False)
            continue
        size = f"{r['width']}x{r['height']}" if r.get("width") else "?"
        p, llr = r.get("p_ai"), r.get("llr")
        opinion = "no opinion" if p is None else f"{p:.3f}  (sum of LLR {llr:+.2f} nats)"
        con.print(f"{r.get('format') or '?'} {size}   metadata p_ai: {opinion}", highlight=False)
        t = Table(show_header=True, header_style="bold", expand=True)
        t.add_column("evidence", no_wrap=True)
        t.add_column("dir", no_wrap=True)
        t.add_column("LLR", justify="right", no_wrap=True)
        t.add_column("detail")
        t.add_column("where")
        for e in r["evidence"]:
            sign = {"ai": "+", "real": "-"}.get(e["direction"], " ")
            style = {"ai": "red", "real": "green"}.get(e["direction"], "dim")
            t.add_row(e["id"] + (" [bold]*[/]" if e.get("decisive") else ""), f"[{style}]{e['direction']}[/]",
                      f"{sign}{e['strength']:.2f}", e["detail"], e.get("source", ""))
        if r["evidence"]:
            con.print(t)
        facts = r.get("facts") or {}
        ex = facts.get("exif")
        if ex:
            keys = ("make", "model", "lens", "capture_time", "exposure_time", "f_number", "iso", "focal_length",
                    "software", "has_makernote", "has_gps")
            con.print("EXIF: " + ", ".join(f"{k}={ex[k]}" for k in keys if ex.get(k) not in (None, "")),
                      highlight=False)
        for g in facts.get("generators", []):
            con.print(f"[bold]{g['generator']}[/] ({g['where']})", highlight=False)
            for k in ("model", "sampler", "seed", "steps", "prompt", "negative_prompt"):
                if g.get(k):
                    con.print(f"  {k}: {g[k]}", highlight=False, markup=False)
        if facts.get("c2pa"):
            c = facts["c2pa"]
            con.print(f"C2PA: generator={c.get('claim_generator')}, signer={c.get('signer')}, "
                      f"valid={c.get('valid')}, actions={c.get('actions')}, source types={c.get('source_types')}",
                      highlight=False, markup=False)
        if facts.get("watermark"):
            con.print(f"watermark: {facts['watermark']}", highlight=False, markup=False)
        for e in r.get("errors", []):
            con.print(f"[yellow]warning[/] {e}", highlight=False)


def meta(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (folders are searched recursively)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json"),
    watermark: str = typer.Option("auto", "--watermark",
                                  help="SD invisible watermark check: auto (SD-plausible sizes only) | always | never."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report here instead of stdout."),
):
    """Provenance report: EXIF, XMP, generator parameters, C2PA, watermark. Exit 1 if any file carries
    decisive AI evidence, 2 on errors only, 0 otherwise."""
    if fmt not in ("table", "json"):
        fail(f"--format must be table or json, not {fmt!r}")
    if watermark not in ("auto", "always", "never"):
        fail(f"--watermark must be auto, always or never, not {watermark!r}")
    missing = [str(p) for p in paths if not p.exists() and not p.is_symlink()]
    if missing:
        fail(f"no such file or directory: {', '.join(missing)}")
    files = _files(paths)
    reports = [_report_one(p, watermark) for p in files]
    if fmt == "json":
        text = json.dumps(reports, indent=2, ensure_ascii=False, default=str)
        if output:
            output.write_text(text + "\n", encoding="utf-8")
        else:
            typer.echo(text)
    else:
        if output:
            from contextlib import redirect_stdout

            with open(output, "w", encoding="utf-8") as fh, redirect_stdout(fh):
                _print_table(reports)
        else:
            _print_table(reports)
    decisive = any(e.get("decisive") and e["direction"] == "ai" for r in reports for e in r.get("evidence", []))
    if decisive:
        raise typer.Exit(EXIT_FINDINGS)
    if reports and all(r.get("error") for r in reports):
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_OK)


def register(apps) -> None:
    apps["root"].command("meta")(meta)
