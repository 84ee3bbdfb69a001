"""`aiidetect scan`: the main job."""
from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer

from rich.markup import escape

from ..crashguard import FILE_TIMEOUT, LOCAL_DB_FILE_TIMEOUT, last_words as last_words_said
from .common import (EXIT_FINDINGS, EXIT_OK, BackboneOptions, C2paTrustOpt, CacheOpt, DetectorsOpt, Engine, FollowLinksOpt,
                     MaxBytesOpt, MaxPixelsOpt, OutputOpt, QuietOpt, ReportFormat, ReportFormatOpt, Runtime, Watermark,
                     VERDICT_ALIASES, WorkersOpt, backbone_options, fail, named_list, split_list, stderr_console, verdict_list)


Format = ReportFormat

FAIL_ON = VERDICT_ALIASES


@backbone_options(device=True, dtype="infer", weights_dir=True)
def scan(
    paths: List[str] = typer.Argument(..., help="Files and folders to scan; '-' reads a list of paths from stdin."),
    fmt: Format = ReportFormatOpt,
    output: Optional[Path] = OutputOpt,
    detectors: Optional[List[str]] = DetectorsOpt,
    fail_on: Optional[List[str]] = typer.Option(None, "--fail-on",
                                                help="Exit 1 when any file gets one of these verdicts: ai, uncertain, error, real (comma-separated; real: likely-real; the full names ai-generated, likely-real too). error: any file with an error, also one whose metadata decided it ai-generated when its pixels could not be read."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into folders."),
    follow_links: bool = FollowLinksOpt,
    include: Optional[List[str]] = typer.Option(None, "--include", help="Glob of files to take inside folders (repeatable)."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Glob of files to leave out inside folders (repeatable)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per model batch."),
    workers: int = WorkersOpt,
    max_pixels: int = MaxPixelsOpt,
    max_bytes: int = MaxBytesOpt,
    explain: bool = typer.Option(False, "--explain", help="Table: show every reason that moved the verdict."),
    heatmaps: Optional[List[str]] = typer.Option(
        None, "--heatmaps", help="HTML report: occlusion heat maps for files with these verdicts (ai, uncertain, "
                                 "real, all; comma-separated). Costs about 65 model passes per file and head. "
                                 "Example: --format html -o report.html --heatmaps ai,uncertain"),
    runtime: Runtime = typer.Option("auto", "--runtime", help="auto (the runtime `aiidetect optimize` verified for "
                                    "this CPU, backbone, heads and -d set, else torch) | torch | onnx (with --onnx DIR)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Folder written by `aiidetect export onnx` (with --runtime onnx)."),
    watermark: Watermark = typer.Option("auto", "--watermark",
                                  help="Invisible-watermark check: auto (image sizes Stable Diffusion writes), always, never."),
    c2pa_trust: Optional[List[Path]] = C2paTrustOpt,
    quiet: bool = QuietOpt,
    fusion: Optional[str] = typer.Option(None, "--fusion", help="Fusion model folder, or 'none' for the default rules. "
                                         "Default: the fusion model in the weights folders, if any (every record "
                                         "and the summary name the one used)."),
    use_cache: bool = CacheOpt,
    backbone_opts: BackboneOptions = None,
    db: Optional[Path] = typer.Option(None, "--db", rich_help_panel="Large audits",
                                      help="Write every record into this SQLite results store; re-running the same "
                                           "command resumes (unchanged files are not read again). "
                                           "Example: aiidetect scan /archive --db audit.sqlite -f jsonl -o audit.jsonl"),
    shard: Optional[str] = typer.Option(None, "--shard", rich_help_panel="Large audits",
                                        help="Scan only shard I of N (stable hash of each path). Example: --shard 2/3 "
                                             "on the second of three machines, then `aiidetect results merge`."),
    engine: Engine = typer.Option("local", "--engine", rich_help_panel="Large audits",
                                  help="ray: Ray Data (needs pip install 'aiidetect\\[ray]', see docs/scale.md)."),
    address: Optional[str] = typer.Option(None, "--address", rich_help_panel="Large audits",
                                          help="With --engine ray: a cluster (auto, ray://HOST:10001); "
                                               "default: a Ray instance on this machine."),
    file_timeout: Optional[float] = typer.Option(
        None, "--file-timeout", min=0, rich_help_panel="Large audits", show_default=False,
        help=f"Seconds a file's read and decode may take (0: no limit). Past it, --engine ray cancels the task "
             f"(a task of N files gets N times this, plus its start-up) and tries its files alone; the local "
             f"engine stops with exit code 2 (137, killed, if a decoder froze the interpreter; with --db, a resume "
             f"reads the file alone, then sets it aside if it hangs again). Default: {FILE_TIMEOUT:g} with "
             f"--engine ray; locally {LOCAL_DB_FILE_TIMEOUT:g} with --db, none without. See docs/scale.md."),
):
    """Scan images and say, per file, whether it was made by a generative model.

    Example: aiidetect scan photos/ --format html -o report.html --heatmaps ai,uncertain

    Exit codes: 0 scan done; 1 a --fail-on verdict matched; 2 usage or fatal error; 130, 143, 129 stopped by
    Ctrl-C, SIGTERM, SIGHUP; 137 killed by the --file-timeout watchdog when a decoder froze the interpreter.

    Examples: aiidetect scan photos/ -f jsonl -o report.jsonl; aiidetect scan a.jpg --fusion none --fail-on ai
    """
    from ..api import ScanError, ScanOptions, Scanner
    from ..report import make_writer
    from ..report.output import is_stdout

    if output is not None and is_stdout(output):
        # `-o -` is stdout, handled as without -o: Ctrl-C or SIGTERM must close the document there
        # (as a file, the temporary was dropped and the JSON array on stdout left open).
        output = None

    maps = named_list(heatmaps, "--heatmaps", "verdict", "ai, uncertain, real, all")
    if "all" in maps:
        maps = ["ai", "uncertain", "real"]
    err = stderr_console()
    scanner = None
    try:
        opts = ScanOptions(
            detectors=split_list(detectors), **backbone_opts.scan_options(), runtime=runtime.value, onnx_dir=onnx_dir,
            fusion=fusion, batch_size=batch_size, workers=workers, max_pixels=max_pixels, max_bytes=max_bytes,
            cache=use_cache, watermark=watermark.value, c2pa_trust=c2pa_trust or None, recursive=recursive,
            follow_links=follow_links,
            include=include or (),
            exclude=exclude or (), shard=shard, engine=engine.value, address=address, db=db,
            file_timeout=_file_timeout(file_timeout, engine, db),
            # The command line's process is the scan's: a read past the deadline ends it (exit 2, or 137 from the
            # watchdog when a decoder froze the interpreter), and with --db a resume sets the file aside.
            end_process_on_timeout=True,
            quiet=quiet)
        # The shared parser: `--fail-on ai-generated` was refused while `report --verdict ai-generated` worked.
        wanted = set(verdict_list(fail_on, "--fail-on"))
        if any(m not in ("ai", "uncertain", "real") for m in maps):
            fail(f"--heatmaps takes ai, uncertain, real or all; got {', '.join(maps)}")
        if maps and fmt != Format.html:
            fail("--heatmaps needs --format html")
        scanner = Scanner(opts, on_note=lambda msg: err.print(f"[yellow]note:[/] {escape(msg)}", highlight=False))
        scanner._owns_stderr = True  # this process is the scan's (see Scanner._owns_stderr)
        # Paths and the output are checked before any model is built.
        cands = scanner.candidates(paths, output=output)
        dets, ctx = scanner.detectors, scanner.context
        if not quiet:
            for d in dets:
                info = d.describe()
                if info.get("status") == "unavailable":
                    err.print(f"[yellow]note:[/] detector [bold]{escape(d.name)}[/] unavailable: "
                              f"{escape(str(info.get('reason')))}", highlight=False)
            from ..explain.occlusion import pixel_detectors

            if maps and not pixel_detectors(dets):
                # Asked for and silently absent: a heat map shows where a pixel detector looked (the maps are
                # made through these very detectors, so the note and the maps cannot disagree).
                err.print("[yellow]note:[/] --heatmaps: no pixel detector can run, so no file gets a heat map",
                          highlight=False)
        records = scanner.records(cands)
    except ScanError as exc:
        if scanner is not None:
            scanner.close()
        fail(str(exc))
    summ, fusion_model, pipe = scanner.discovery, scanner.fusion, scanner.pipeline
    from contextlib import nullcontext

    from ..records import verdict_matches
    from ..report.output import OutputError, atomic_output, utf8_stdout

    # The report is written whole, then renamed over --output: Ctrl-C or a crash never leaves half a file.
    # The table is for the terminal, in its own encoding (errors.utf8_output); every other format is a UTF-8
    # document, on a terminal too.
    out_ctx = atomic_output(output) if output else nullcontext(sys.stdout if fmt == Format.table else utf8_stdout())
    try:
        stream = out_ctx.__enter__()
    except OSError as exc:  # checked before the scan, yet gone since (no inode or quota left, removed)
        scanner.close()  # also ends `records` (Scanner._live): its store session is marked interrupted
        fail(f"cannot write --output {output}: {exc.strerror or exc}")
    exit_code = EXIT_OK
    writer = None

    def records_kept(failed) -> None:
        """A sweep's records are not lost with its report (-o FILE, or stdout `> FILE`): say where they
        are, once the store has the last. Returns only without --db."""
        from ..store import StoreError

        if db is None:
            return
        try:
            scanner.close()
        except StoreError as exc:
            fail(f"{failed.strerror}; {exc}")
        fail(f"{failed.strerror}; the records scanned are in the results store {db}: `aiidetect results "
             f"export --db {db}` writes them, and the same command resumes after them")

    def close_output(*exc_info) -> None:
        from ..report.output import OutputWriteFailed

        try:
            out_ctx.__exit__(*exc_info)
        except OutputWriteFailed as failed:
            records_kept(failed)
            raise

    try:
        if fmt == Format.html:
            from ..report.html import scan_writer

            writer = scan_writer(stream, dets, ctx, fusion_model, [FAIL_ON[m] for m in maps], pipe.limits)
        else:
            fusion = None
            if fmt == Format.table:   # the HTML module (tens of ms to import) only where its facts are used
                from ..report.html import _fusion_facts

                # the run's band, so the table's 3 digits keep each verdict's side of it (fusion.shown_p_text)
                fusion = _fusion_facts(fusion_model)
            writer = make_writer(fmt.value, stream, [d.name for d in dets], explain=explain, fusion=fusion)
        progress = None
        if not quiet and err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=err, transient=True)
            task = progress.add_task("scan", total=None)  # the walk is lazy: the total is not known ahead
            progress.start()
        # Past --file-timeout the local engine ends the process from its watcher thread: it first finishes the
        # document on stdout as Ctrl-C would (a JSON array closed), between two records, and no record follows.
        writing, ended = threading.Lock(), threading.Event()

        def last_words() -> None:
            if writing.acquire(timeout=10):
                try:
                    ended.set()
                    if progress:
                        progress.stop()
                    if not output:
                        writer.abort()
                finally:
                    writing.release()

        # A local read deadline may see the process killed from outside (crashguard.Watchdog: a decoder that
        # froze the interpreter), with no last words: each record is flushed as it is written, so stdout keeps
        # every record finished before then (buffered, the last few kilobytes were lost with the process).
        flush = not output and pipe.deadline is not None
        try:
            with last_words_said(last_words):
                for rec in records:
                    # Counted before it is written: a reader that leaves at this record still gets its finding.
                    if verdict_matches(rec.verdict, rec.error is not None, wanted):
                        exit_code = EXIT_FINDINGS
                    with writing:
                        if not ended.is_set():
                            writer.write(rec)
                            if flush:
                                stream.flush()
                    if progress:
                        progress.advance(task)
        finally:
            if progress:
                progress.stop()
        stats = pipe.stats.as_dict()
        writer.close(stats)
        if not output:  # what is still buffered fails here, where the store is still named, not at exit
            stream.flush()
    except BrokenPipeError:
        # `aiidetect scan ... | head`: the reader left; that is not our error.
        from .errors import reader_left

        reader_left(exit_code)
    except OutputError as exc:  # an input turned out to be the output: drop the temporary report
        if output:
            out_ctx.__exit__(*sys.exc_info())
            output = None
        fail(str(exc))
    except BaseException as exc:
        if output:
            output = None
            close_output(*sys.exc_info())
        elif writer is not None:
            # On stdout (Ctrl-C, a fatal error): a script still gets a document that parses, holding
            # the records so far; the exit code (130, 2) says the run did not finish.
            with contextlib.suppress(Exception):
                writer.abort()
        from ..report.output import OutputWriteFailed
        from ..store import StoreError

        if isinstance(exc, OutputWriteFailed):  # stdout on a full disk (`scan --db ... > FILE`)
            records_kept(exc)
        # A full disk under --db, a failing Ray cluster: what happened and what is kept, in one line.
        if isinstance(exc, (StoreError, ScanError)):
            fail(str(exc))
        raise
    finally:
        if output:
            close_output(None, None, None)
        # Also closes an unfinished record stream (Scanner._live): its results store session is marked interrupted.
        scanner.close()
    if not quiet:
        _print_summary(err, stats, summ, dets)
        from ..report.writers import fusion_label

        err.print(f"fusion: {escape(fusion_label(pipe.fusion_info))}", highlight=False)
        trust = (ctx.options or {}).get("c2pa_trust")
        if isinstance(trust, dict) and any(d.family == "metadata" for d in dets):
            # The list decided which signers count: the run says which one (each record that read a manifest
            # names it too, facts.c2pa.trust_list).
            from ..provenance.trust import anchors_text

            err.print(f"C2PA trust list: {anchors_text(trust.get('anchors'))}, sha256 {trust.get('sha256')}",
                      highlight=False)
        bb = ctx.built_backbone
        if bb is not None:
            err.print(f"backbone: {bb.spec.describe()} on {bb.device}, {bb.dtype}", highlight=False)
        if ctx.fast_path is not None:  # what `aiidetect optimize` decided for this setup, and why
            err.print(escape(ctx.fast_path.line), highlight=False)
        if pipe.cache_error:
            # A cache of another layout fails the same way on every run: say how to start it afresh.
            err.print(f"[yellow]note:[/] result cache problem (results recomputed or not saved): {escape(pipe.cache_error)}"
                      "; if it persists, `aiidetect cache clear` starts the cache afresh", highlight=False)
    raise typer.Exit(exit_code)


def _file_timeout(given: Optional[float], engine: Engine, db) -> Optional[float]:
    """--file-timeout as given, else the command line's default: the local deadline ends the process, which
    only a results store makes recoverable (crashguard.LOCAL_DB_FILE_TIMEOUT); None leaves Ray its own."""
    if given is not None:
        return given
    return LOCAL_DB_FILE_TIMEOUT if engine == Engine.local and db else None


def _print_summary(err, stats, summ, dets) -> None:
    v = stats["verdicts"]
    parts = [f"{v.get(k, 0)} {k}" for k in ("ai-generated", "uncertain", "likely-real") if v.get(k)]
    n_err = sum(stats["errors"].values())
    if n_err:
        decided = stats.get("errors_decided") or 0
        # Such a file is counted twice, under its verdict and its error: the line says so, or the counts
        # would add up to more files than were scanned without a word.
        parts.append(f"{n_err} error" + ("s" if n_err != 1 else "") + " (" +
                     ", ".join(f"{c} {k}" for k, c in sorted(stats["errors"].items()))
                     + (f"; {decided} of them ai-generated by {'its' if decided == 1 else 'their'} metadata alone"
                        if decided else "") + ")")
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
        from ..pipeline.stages import cache_rerun_note

        rerun = cache_rerun_note(stats)
        line += f"; {stats['cache_hits']} from the result cache" + (f" ({rerun})" if rerun else "")
    if stats.get("other_decoders"):
        n = stats["other_decoders"]
        line += (f"; {n} file{'s' if n != 1 else ''} read on Ray nodes with other decoder or metadata parser versions "
                 "than this machine (see the note above)")
    if summ.duplicates:
        line += f"; {summ.duplicates} path{'s' if summ.duplicates != 1 else ''} reached twice"
    if summ.outside_links:
        line += (f"; {summ.outside_links} symbolic link{'s' if summ.outside_links != 1 else ''} out of the scanned "
                 f"folders not followed (--follow-links)")
    err.print(line, highlight=False)
    ran = [d.name.split(":")[0] for d in dets if d.describe().get("status", "ran") != "unavailable"]
    if stats["files"] and ran and all(f == "metadata" for f in ran):
        # The HTML report says this in a box at its top; a reader of the table and this summary (`-d metadata`,
        # or every model missing) was left to infer it from a column of "uncertain".
        err.print("[yellow]note:[/] no pixel detector ran: every verdict rests on what the files' metadata says "
                  "(easily stripped, and forged unless signed); a file without decisive metadata stays uncertain",
                  highlight=False)
    provider = [d.describe().get("provider") for d in dets if d.describe().get("provider")]
    if provider:
        err.print(f"runtime provider: {', '.join(sorted(set(provider)))}", highlight=False)


def register(apps) -> None:
    apps["root"].command("scan")(scan)
