"""`aiidetect scan`: the main job."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from rich.markup import escape

from ..limits import DEFAULT_MAX_PIXELS
from .common import EXIT_FINDINGS, EXIT_OK, BackboneOptions, backbone_options, fail, stderr_console


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    html = "html"


FAIL_ON = {"ai": "ai-generated", "uncertain": "uncertain", "error": "error", "real": "likely-real"}


def _parse_list(values: Optional[List[str]]) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


@backbone_options(device=True, dtype="infer", weights_dir=True)
def scan(
    paths: List[str] = typer.Argument(..., help="Files and folders to scan; '-' reads a list of paths from stdin."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report to this file instead of stdout."),
    detectors: Optional[List[str]] = typer.Option(None, "--detectors", "-d",
                                                  help="Comma-separated detector families: metadata, linear, mpft, flow. Default: all."),
    fail_on: Optional[List[str]] = typer.Option(None, "--fail-on",
                                                help="Exit 1 when any file gets one of these verdicts: ai, uncertain, error (comma-separated)."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into folders."),
    include: Optional[List[str]] = typer.Option(None, "--include", help="Glob of files to take inside folders (repeatable)."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Glob of files to leave out inside folders (repeatable)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per model batch."),
    workers: int = typer.Option(2, "--workers", min=1, help="Decode threads running beside the model."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1,
                                   help="Refuse images with more pixels (decompression bombs); also Pillow's limit."),
    max_bytes: int = typer.Option(512 * 1024 * 1024, "--max-bytes", min=1, help="Refuse files larger than this."),
    explain: bool = typer.Option(False, "--explain", help="Table: show every reason that moved the verdict."),
    heatmaps: Optional[List[str]] = typer.Option(
        None, "--heatmaps", help="HTML report: occlusion heat maps for files with these verdicts (ai, uncertain, "
                                 "real, all; comma-separated). Costs about 65 model passes per file and head. "
                                 "Example: --format html -o report.html --heatmaps ai,uncertain"),
    runtime: str = typer.Option("auto", "--runtime", help="auto (the runtime `aiidetect optimize` verified for this "
                                "CPU, backbone and heads, else torch) | torch | onnx (with --onnx DIR)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Folder written by `aiidetect export onnx` (with --runtime onnx)."),
    watermark: str = typer.Option("auto", "--watermark",
                                  help="Invisible-watermark check: auto (image sizes Stable Diffusion writes), always, never."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary on stderr."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="Fusion model folder, or 'none' for the default rules. "
                                         "Default: the fusion model in the weights folders, if any (every record "
                                         "and the summary name the one used)."),
    use_cache: bool = typer.Option(True, "--cache/--no-cache",
                                   help="Reuse results of files already scanned with the same detectors "
                                        "($AIIDETECT_CACHE/results.sqlite, keyed by content hash)."),
    backbone_opts: BackboneOptions = None,
    db: Optional[Path] = typer.Option(None, "--db", rich_help_panel="Large audits",
                                      help="Write every record into this SQLite results store; re-running the same "
                                           "command resumes (unchanged files are not read again). "
                                           "Example: aiidetect scan /archive --db audit.sqlite -f jsonl -o audit.jsonl"),
    shard: Optional[str] = typer.Option(None, "--shard", rich_help_panel="Large audits",
                                        help="Scan only shard I of N (stable hash of each path). Example: --shard 2/3 "
                                             "on the second of three machines, then `aiidetect results merge`."),
    engine: str = typer.Option("local", "--engine", rich_help_panel="Large audits",
                               help="local | ray (Ray Data; needs pip install 'aiidetect\\[ray]', see docs/scale.md)."),
    address: Optional[str] = typer.Option(None, "--address", rich_help_panel="Large audits",
                                          help="With --engine ray: a cluster (auto, ray://HOST:10001); "
                                               "default: a Ray instance on this machine."),
):
    """Scan images and say, per file, whether it was made by a generative model.

    Example: aiidetect scan photos/ --format html -o report.html --heatmaps ai,uncertain

    Exit codes: 0 scan done; 1 a --fail-on verdict matched; 2 usage or fatal error.

    Examples: aiidetect scan photos/ -f jsonl -o report.jsonl; aiidetect scan a.jpg --fusion none --fail-on ai
    """
    from ..decode import DecodeLimits
    from ..detectors import DEFAULT_DETECTORS, RunContext, create_detectors, list_families
    from ..discover import DiscoveryError, iter_discover
    from ..report import make_writer
    from ..weights import weights_dirs

    fams = _parse_list(detectors) or list(DEFAULT_DETECTORS)
    unknown = [f for f in fams if f not in list_families()]
    if unknown:
        fail(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(list_families())}")
    fails = _parse_list(fail_on)
    bad = [f for f in fails if f not in FAIL_ON]
    if bad:
        fail(f"--fail-on takes {', '.join(FAIL_ON)}; got {', '.join(bad)}")
    maps = _parse_list(heatmaps)
    if "all" in maps:
        maps = ["ai", "uncertain", "real"]
    if any(m not in ("ai", "uncertain", "real") for m in maps):
        fail(f"--heatmaps takes ai, uncertain, real or all; got {', '.join(maps)}")
    if maps and fmt != Format.html:
        fail("--heatmaps needs --format html")
    if runtime not in ("auto", "torch", "onnx"):
        fail("--runtime takes auto, torch or onnx")
    if runtime == "onnx":
        if onnx_dir is None:
            fail("--runtime onnx needs --onnx DIR (made by `aiidetect export onnx`)")
        if "onnx" not in list_families():
            fail("the ONNX runtime is not available in this build")
    if watermark not in ("auto", "always", "never"):
        fail("--watermark takes auto, always or never")
    if backbone_opts.dtype not in ("auto", "float32", "bfloat16", "float16"):
        fail("--dtype takes auto, float32, bfloat16 or float16")
    if backbone_opts.device not in ("auto", "cpu", "cuda"):
        fail("--device takes auto, cpu or cuda")
    from ..shard import in_shard, parse_shard

    try:
        shard_ij = parse_shard(shard)
    except ValueError as exc:
        fail(str(exc))
    if engine not in ("local", "ray"):
        fail("--engine takes local or ray")
    if address and engine != "ray":
        fail("--address goes with --engine ray")

    use_stdin = "-" in paths
    args = [p for p in paths if p != "-"]
    try:
        # Walked lazily: a sweep of millions of files never holds the list.
        cands, summ = iter_discover(args, recursive=recursive, include=include or (), exclude=exclude or (),
                                    stdin=sys.stdin if use_stdin else None)
    except DiscoveryError as exc:
        fail(str(exc))
    if output is not None:
        from ..report.output import OutputError, check_output, guard_candidates

        try:
            check_output(output, args, excluded=lambda p: not _wanted(p, include or (), exclude or ()))
        except OutputError as exc:
            fail(str(exc))
        # Files named on stdin or reached through links are only known as the walk goes: each is
        # checked as it comes, and the report (still a temporary file) is dropped if one is the output.
        cands = guard_candidates(cands, output)
    cands = in_shard(cands, shard_ij)

    err = stderr_console()
    spec = backbone_opts.spec()
    ctx = RunContext(backbone_spec=spec, device=backbone_opts.device, dtype=backbone_opts.dtype,
                     weights_dirs=weights_dirs(backbone_opts.weights_dir),
                     runtime=runtime, onnx_dir=onnx_dir, options={"watermark": watermark})
    fast = None
    if runtime == "auto":
        from ..optimize import choose

        fast = choose(ctx, fams)  # None unless `aiidetect optimize` stored a decision for exactly this setup
        runtime = ctx.runtime = "onnx" if fast and fast.use else "torch"
        ctx.onnx_dir = fast.onnx_dir if fast and fast.use else onnx_dir
    if runtime == "onnx":
        pixel = [f for f in fams if f != "metadata"]
        ctx.options["onnx_families"] = pixel
        fams = [f for f in fams if f == "metadata"] + (["onnx"] if pixel else [])
    if any(f != "metadata" for f in fams):
        from .common import quiet_torch_threads

        quiet_torch_threads()
    try:
        dets = create_detectors(fams, ctx)
    except Exception as exc:  # noqa: BLE001 - a broken head folder is a fatal, explained error
        fail(f"cannot prepare detectors: {type(exc).__name__}: {exc}")
    fusion_model = _load_fusion(ctx) if fusion in (None, "", "auto") else _resolve_fusion(fusion, weight_dirs=backbone_opts.weights_dir)
    if not quiet:
        from rich.markup import escape

        for d in dets:
            info = d.describe()
            if info.get("status") == "unavailable":
                err.print(f"[yellow]note:[/] detector [bold]{escape(d.name)}[/] unavailable: {escape(str(info.get('reason')))}",
                          highlight=False)

    from ..pipeline import Pipeline

    cache = _open_cache(err) if use_cache else None
    pipe = Pipeline(dets, fusion_model, batch_size=batch_size, workers=workers,
                    limits=DecodeLimits(max_pixels=max_pixels, max_bytes=max_bytes), cache=cache)
    session = _open_store(db, pipe, fams, shard, engine) if db else None
    records = _records(pipe, cands, session, engine, address, fams, ctx)
    from contextlib import nullcontext

    from ..report.output import OutputError, atomic_output

    # The report is written whole, then renamed over --output: Ctrl-C or a crash never leaves half a file.
    out_ctx = atomic_output(output) if output else nullcontext(sys.stdout)
    stream = out_ctx.__enter__()
    exit_code = EXIT_OK
    wanted = {FAIL_ON[f] for f in fails}
    try:
        if fmt == Format.html:
            from ..report.html import scan_writer

            writer = scan_writer(stream, dets, ctx, fusion_model, [FAIL_ON[m] for m in maps], pipe.limits)
        else:
            writer = make_writer(fmt.value, stream, [d.name for d in dets], explain=explain)
        progress = None
        if not quiet and err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=err, transient=True)
            task = progress.add_task("scan", total=None)  # the walk is lazy: the total is not known ahead
            progress.start()
        try:
            for rec in records:
                writer.write(rec)
                if session is not None:
                    session.add(rec)
                if rec.verdict in wanted:
                    exit_code = EXIT_FINDINGS
                if progress:
                    progress.advance(task)
        finally:
            if progress:
                progress.stop()
        stats = pipe.stats.as_dict()
        writer.close(stats)
        if session is not None:
            session.close("complete")
            session = None
    except BrokenPipeError:
        # `aiidetect scan ... | head`: the reader left; that is not our error.
        sys.stderr.close()
        raise typer.Exit(exit_code)
    except OutputError as exc:  # an input turned out to be the output: drop the temporary report
        if output:
            out_ctx.__exit__(*sys.exc_info())
            output = None
        fail(str(exc))
    except BaseException:
        if output:
            out_ctx.__exit__(*sys.exc_info())
            output = None
        raise
    finally:
        if output:
            out_ctx.__exit__(None, None, None)
        if cache is not None:
            cache.close()
        if session is not None:  # stopped early: keep what was finished, say so in the sessions table
            session.close("interrupted")
    if not quiet:
        _print_summary(err, stats, summ, dets)
        from ..report.writers import fusion_label

        err.print(f"fusion: {escape(fusion_label(pipe.fusion_info))}", highlight=False)
        bb = ctx.built_backbone
        if bb is not None:
            err.print(f"backbone: {bb.spec.describe()} on {bb.device}, {bb.dtype}", highlight=False)
        if fast is not None:
            err.print(escape(fast.line), highlight=False)
        if pipe.cache_error:
            err.print(f"[yellow]note:[/] result cache problem (results recomputed or not saved): {escape(pipe.cache_error)}",
                      highlight=False)
    raise typer.Exit(exit_code)


def _wanted(path: str, include, exclude) -> bool:
    """Would a folder scan read this path? (A report named .jsonl inside the folder is never read.)"""
    import os

    from ..discover import IMAGE_EXTS, _wanted as wanted

    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTS and wanted(str(path), include, exclude)


def _resolve_fusion(fusion: str, weight_dirs):
    from .evaluate import resolve_fusion

    return resolve_fusion(fusion, weight_dirs)[0]


def _open_store(db, pipe, fams, shard, engine):
    import sqlite3

    from ..store import StoreError, open_session

    try:
        return open_session(db, pipe, {"detectors": fams, "batch_size": pipe.batch_size}, shard=shard,
                            engine=engine, argv=sys.argv[1:])
    except (StoreError, OSError, sqlite3.Error) as exc:
        fail(f"cannot open the results store {db}: {exc}")


def _records(pipe, cands, session, engine, address, fams, ctx):
    if session is not None:
        pipe.prior = session.prior
    if engine == "ray":
        from ..engines import ray as ray_engine

        try:
            return ray_engine.run(pipe, cands, fams, ctx, address=address)
        except ray_engine.RayUnavailable as exc:
            fail(str(exc))
    return pipe.run(cands)


def _open_cache(err):
    from ..result_cache import ResultCache

    try:
        return ResultCache()
    except Exception as exc:  # noqa: BLE001 - no cache means slower re-runs, never a failed scan
        err.print(f"[yellow]note:[/] result cache unavailable ({exc}); scanning without it", highlight=False)
        return None


def _load_fusion(ctx):
    from .. import fusion

    try:
        return fusion.load_fusion_model(ctx.weights_dirs)
    except Exception as exc:  # noqa: BLE001
        stderr_console().print(f"[yellow]note:[/] fusion model not loaded ({escape(str(exc))}); using the default rules")
        return None


def _print_summary(err, stats, summ, dets) -> None:
    v = stats["verdicts"]
    parts = [f"{v.get(k, 0)} {k}" for k in ("ai-generated", "uncertain", "likely-real") if v.get(k)]
    n_err = sum(stats["errors"].values())
    if n_err:
        parts.append(f"{n_err} error" + ("s" if n_err != 1 else "") + " (" +
                     ", ".join(f"{c} {k}" for k, c in sorted(stats["errors"].items())) + ")")
    line = (f"scanned {stats['files']} file{'s' if stats['files'] != 1 else ''} in {stats['seconds']:.1f}s"
            + (f" ({stats['images_per_s']:.1f} files/s)" if stats["images_per_s"] else "")
            + (": " + ", ".join(parts) if parts else ""))
    if summ.skipped:
        line += f"; skipped {summ.skipped} non-image file{'s' if summ.skipped != 1 else ''}"
    if summ.excluded:
        line += f"; {summ.excluded} excluded by --include/--exclude"
    if stats.get("resumed"):
        line += f"; {stats['resumed']} unchanged since an earlier run (from --db, not read)"
    if stats.get("cache_hits"):
        line += f"; {stats['cache_hits']} from the result cache"
    if summ.duplicates:
        line += f"; {summ.duplicates} path{'s' if summ.duplicates != 1 else ''} reached twice"
    err.print(line, highlight=False)
    provider = [d.describe().get("provider") for d in dets if d.describe().get("provider")]
    if provider:
        err.print(f"runtime provider: {', '.join(sorted(set(provider)))}", highlight=False)


def register(apps) -> None:
    apps["root"].command("scan")(scan)
