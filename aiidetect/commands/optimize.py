"""`aiidetect optimize`: find and verify the fastest safe runtime for this CPU,
backbone and heads; `aiidetect scan` then uses it by itself."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import (EXIT_OK, BackboneOptions, QuietOpt, RecordFormat, RecordFormatOpt, WorkersOpt, backbone_options,
                     fail, stderr_console)

COLUMNS = ("candidate", "runtime", "dtype", "status", "files", "verdicts_changed", "max_abs_dp", "model_seconds",
           "speedup", "scan_speedup", "reason")


def register(apps) -> None:
    apps["root"].command("optimize")(optimize_cmd)


@backbone_options(weights_dir=True)
def optimize_cmd(
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of images like those you will scan; the "
                                          "candidates are compared with torch float32 on them."),
    limit: int = typer.Option(512, "--limit", min=1, help="Images taken from --images (spread over the folder)."),
    tolerance: float = typer.Option(0.005, "--tolerance", help="Largest share of files whose verdict may change, per "
                                    "head and for the fused verdict (0.005 = 0.5%)."),
    min_speedup: float = typer.Option(1.0, "--min-speedup", min=0.0,
                                      help="Choose a verified candidate only when its model time beats torch float32 "
                                           "by more than this factor (1.0: faster at all; 0: whatever agrees, e.g. "
                                           "to test the fast path on a model too small to time)."),
    max_delta_p: Optional[float] = typer.Option(None, "--max-delta-p", help="Also refuse a candidate that moves any "
                                                "p_ai by more than this (default: no limit)."),
    candidates: str = typer.Option("bfloat16,int8", "--candidates",
                                   help="Candidates to try: bfloat16 (torch; only on CPUs with native bf16), int8 "
                                        "(ONNX Runtime, CLIP-Flow kept in float)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per model batch (as in scan)."),
    workers: int = WorkersOpt,
    show: bool = typer.Option(False, "--show", help="Print the stored decision for these options; measure nothing."),
    fmt: RecordFormat = RecordFormatOpt,
    quiet: bool = QuietOpt,
    backbone_opts: BackboneOptions = None,
):
    """Prepare and verify the fastest runtime that keeps verdicts within tolerance.

    Compares torch float32 with torch bfloat16 (CPUs with native bf16) and ONNX Runtime int8 on
    your images, per head and for the fused verdict, and stores the fastest verified one (or the
    refusal and its reason) in $AIIDETECT_CACHE/optimize. The fused verdict is also compared for
    each detector set `scan -d` can ask for, those with metadata also without the watermark check
    (`scan --watermark never`). A later `aiidetect scan` with the same backbone and
    heads on this machine uses it for the verified sets and says so; `scan --runtime torch` opts out.

    Exit codes: 0 measured and stored (verified or refused) / --show found a decision; 2 usage
    or fatal error (no images, no trained head, nothing stored for --show).

    Examples: aiidetect optimize --images /data/dev --backbone ViT-B-16;
    aiidetect optimize --images /data/dev --backbone-config tiny-vit --format json;
    aiidetect optimize --show --backbone ViT-B-16
    """
    from .. import optimize as opt

    if fmt not in ("table", "json", "jsonl", "csv"):
        fail("--format takes table, json, jsonl or csv")
    cands = [c.strip() for c in candidates.split(",") if c.strip()]
    if not cands or any(c not in ("bfloat16", "int8") for c in cands):
        fail("--candidates takes bfloat16 and/or int8 (comma-separated)")
    if not 0.0 <= tolerance < 1.0:
        fail("--tolerance is a share of files between 0 and 1 (0.005 = 0.5%)")
    if max_delta_p is not None and not 0.0 <= max_delta_p <= 1.0:
        fail("--max-delta-p is a probability difference between 0 and 1")
    spec = backbone_opts.spec()
    dirs = list(backbone_opts.weights_dirs())
    err = stderr_console()
    if show:
        ident = opt.identity(spec, dirs)
        path = opt.decision_dir(ident) / opt.DECISION
        from ..report.safe import loads_foreign

        try:
            decision = loads_foreign(opt.read_decision(path))
        except OSError:
            fail(f"no stored decision for this CPU, backbone, head set and versions ({path}); run "
                 "`aiidetect optimize --images DIR` with the same options")
        except ValueError as exc:
            decision = exc
        # A damaged decision (a scan ignores it) is said as such, not as a TypeError from the printer.
        if not isinstance(decision, dict) or not isinstance(decision.get("candidates", []), list) \
                or not all(isinstance(c, dict) for c in decision.get("candidates", [])):
            fail(f"the stored decision {path} is damaged (scan does not use it); run "
                 "`aiidetect optimize --images DIR` with the same options again")
        decision["path"] = str(path)
        _print(decision, fmt)
        raise typer.Exit(EXIT_OK)
    if images is None:
        fail("optimize needs --images DIR: images like those you will scan, to verify the fast runtime on")
    if not images.is_dir():
        fail(f"{images} is not a folder")
    from ..onnx_export import image_paths

    paths = image_paths(images, limit)
    try:
        decision = opt.optimize(spec, dirs, paths, tolerance=tolerance, max_delta_p=max_delta_p,
                                batch_size=batch_size, workers=workers, candidates=cands, min_speedup=min_speedup,
                                log=(lambda s: None) if quiet else (lambda s: err.print(s, highlight=False)))
    except opt.OptimizeError as exc:
        fail(str(exc))
    _print(decision, fmt)
    if not quiet:
        err.print(opt._fast_path(decision, Path(decision["path"]).parent).line, highlight=False)
        chosen = decision.get("chosen") or {}
        torch_sets = [f"-d {k}{how}" for field, how in (("detector_sets", ""),
                                                         ("detector_sets_watermark_never", " --watermark never"))
                      for k, v in (chosen.get(field) or {}).items() if v.get("status") != "verified"]
        if torch_sets:
            err.print("scan stays on torch for " + ", ".join(torch_sets) + " (their fused "
                      "verdicts were not verified within tolerance)", highlight=False)
        err.print(f"stored in {decision['path']}", highlight=False)
    raise typer.Exit(EXIT_OK)


def _rows(decision) -> list[dict]:
    """One row per candidate, values as measured: verdicts_changed is a share of files (0.005 = 0.5%),
    a value not measured is None (null in jsonl, an empty csv cell)."""
    out = []
    for r in decision.get("candidates", []):
        agree = r.get("agreement") or {}
        fused = agree.get("fused") or {}
        out.append({"candidate": r.get("candidate"), "runtime": r.get("runtime"), "dtype": r.get("dtype"),
                    "status": r.get("status"), "files": fused.get("files", decision.get("files")),
                    "verdicts_changed": r.get("worst_changed_share"), "max_abs_dp": r.get("max_abs_dp"),
                    "model_seconds": r.get("model_seconds"), "speedup": r.get("speedup"),
                    "scan_speedup": r.get("scan_speedup"), "reason": r.get("reason")})
    return out


def _cell(column: str, value) -> str:
    if value is None:
        return ""
    return f"{100 * value:.2f}%" if column in ("verdicts_changed", "worst_changed") else str(value)


def _print(decision, fmt: str) -> None:
    from ..report.safe import dumps  # strict JSON: paths that are not UTF-8 as U+FFFD, no NaN

    if fmt == "json":
        typer.echo(dumps(decision, indent=1))
        return
    rows = _rows(decision)
    if fmt == "jsonl":
        for r in rows:
            typer.echo(dumps(r))
        return
    if fmt == "csv":
        from ..report.safe import CsvRows

        w = CsvRows(sys.stdout)
        w.writerow(COLUMNS)
        w.writerows([r.get(c) for c in COLUMNS] for r in rows)
        return
    from rich.console import Console
    from rich.table import Table

    from ..report.safe import table_width

    # piped, as wide as scan's table: in rich's 80 columns eleven columns read `cand`/`idat`/`e`
    width = table_width(sys.stdout)
    t = Table(title=f"aiidetect optimize: {decision.get('status')}"
              + (f" -> {decision['chosen']['runtime']} {decision['chosen']['dtype']}" if decision.get("chosen") else ""))
    for c in COLUMNS:
        t.add_column(c.replace("_", " "), overflow="fold")
    for r in rows:
        t.add_row(*[_cell(c, r[c]) for c in COLUMNS])
    Console(soft_wrap=False, width=width).print(t)
    sets = _set_rows(decision)
    if sets:
        t = Table(title="fused verdict per detector set (what `scan -d ...` runs; a set is served the fast path only "
                        "when verified)")
        for c in SET_COLUMNS:
            t.add_column(c.replace("_", " "), overflow="fold")
        for r in sets:
            t.add_row(*[_cell(c, r[c]) for c in SET_COLUMNS])
        Console(soft_wrap=False, width=width).print(t)


SET_COLUMNS = ("candidate", "detectors", "status", "files", "verdicts_changed", "worst_changed", "max_abs_dp",
               "reason")


def _set_rows(decision) -> list[dict]:
    """One row per measured candidate and detector set: the set's fused verdicts changed, the worst share
    of it and its heads, and whether it is verified (decisions of an older optimize have none); the sets
    with metadata once more as `scan --watermark never` fuses them."""
    out = []
    for r in decision.get("candidates", []):
        agree = r.get("agreement") or {}
        sets, never = agree.get("sets"), agree.get("sets_watermark_never")
        rows = [*(sets.items() if isinstance(sets, dict) else ()),
                *((f"{k} --watermark never", d) for k, d in (never.items() if isinstance(never, dict) else ()))]
        for key, d in rows:
            if isinstance(d, dict):
                out.append({"candidate": r.get("candidate"), "detectors": key, "status": d.get("status"),
                            "files": d.get("files"), "verdicts_changed": d.get("verdict_changed_share"),
                            "worst_changed": d.get("worst_changed_share"), "max_abs_dp": d.get("max_abs_dp"),
                            "reason": d.get("reason")})
    return out
