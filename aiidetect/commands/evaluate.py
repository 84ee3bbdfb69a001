"""`aiidetect eval DATA...`: measure the detectors and the fused verdict on labelled data."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..choices import choices
from .common import (BackboneOptions, C2paTrustOpt, DetectorsOpt, FollowLinksOpt, GenImageSplit, JsonFormat, QuietOpt, SummaryFormatOpt,
                     backbone_options, fail, library_errors, print_detector_setup, renamed_options, split_list,
                     stderr_console)

# evaluate.protocol.PROTOCOLS, which imports numpy: kept in step by a test.
Protocol = choices("Protocol", "genimage", "ufd")


@renamed_options(out="--out")
@backbone_options(device=True, dtype="infer", weights_dir=True)
def evaluate_cmd(
    data: List[str] = typer.Argument(..., help="Labelled data: real/+ai/<generator>/ folder, GenImage, "
                                               "UniversalFakeDetect/CNNSpot folder, or a CSV manifest (file,label[,generator])."),
    detectors: Optional[List[str]] = DetectorsOpt,
    perturb: Optional[List[str]] = typer.Option(None, "--perturb", "-p",
                                                help="Robustness conditions, repeatable: jpeg:95,75,50 resize:0.5,0.25 "
                                                     "blur:1,2 crop:0.5 webp:80 noise:5, or a chain resize:0.5+jpeg:75."),
    normalize: Optional[str] = typer.Option(None, "--normalize",
                                            help="Format-bias control: re-encode every image identically (e.g. jpeg:96) "
                                                 "and report it beside the raw numbers."),
    out: Optional[Path] = typer.Option(None, "--out-dir", "-o", help="Write metrics.json, summary.md, scores.csv and plots here."),
    fusion: Optional[str] = typer.Option(None, "--fusion",
                                         help="Fusion model folder, 'none' for the rules alone; default: the first "
                                              "fusion model in the weights folders."),
    split: GenImageSplit = typer.Option("val", "--split", help="GenImage split to read."),
    protocol: Optional[Protocol] = typer.Option(None, "--protocol",
                                           help="Also report a benchmark's own numbers: genimage (per-subset accuracy "
                                                "over the subset's reals and fakes, mean over subsets) or ufd (the same "
                                                "plus AP per subset). E.g. aiidetect eval /data/GenImage --protocol genimage"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N images per class (seeded sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --limit sampling."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="PNG plots under --out-dir."),
    allow_train_overlap: bool = typer.Option(False, "--allow-train-overlap",
                                             help="Keep the images a head was trained on in its metrics (default: "
                                                  "left out and counted; the output says which were kept)."),
    follow_links: bool = FollowLinksOpt,
    c2pa_trust: Optional[List[Path]] = C2paTrustOpt,
    quiet: bool = QuietOpt,
    fmt: JsonFormat = SummaryFormatOpt,
    backbone_opts: BackboneOptions = None,
):
    """Evaluate detectors and the fused verdict on a labelled manifest.

    Accuracy on real/AI, AP, AUC, TPR at 1%/5% FPR, ECE, uncertain share, per-generator tables,
    robustness sweeps and a format-bias control. --format json prints what --out-dir writes to
    metrics.json; on an error nothing reaches stdout (the reason is on stderr, exit 2).

    Images a head was trained on (its record of their content keys) are left out of that head's
    metrics and the fused verdict's, the fusion model's calibration images out of the fused
    verdict's, and counted on stderr and in run.train_overlap.

    Examples:
      aiidetect eval /data/test --out-dir results/ -p jpeg:95,75
      aiidetect eval manifest.csv -d metadata -f json | jq '.conditions[0].fused'
    """
    from rich.console import Console

    from ..api import ScanOptions, build_detectors, load_labelled, resolve_fusion
    from ..evaluate import evaluate, parse, parse_all
    from ..evaluate.overlap import say_overlap
    from ..evaluate.report import check_out_dir, print_tables, write_outputs
    from ..train.data import LeftOut

    err = stderr_console()
    split, protocol = split.value, protocol.value if protocol is not None else None  # the library takes strings
    try:
        perts = parse_all(perturb)
        norm = None
        if normalize:
            ps = parse(normalize)
            if len(ps) != 1:
                fail("--normalize takes one condition, e.g. jpeg:96")
            norm = ps[0]
        if out is not None:
            check_out_dir(out, data)
    except ValueError as exc:
        fail(str(exc))
    with library_errors():
        links = LeftOut()
        items = load_labelled(data, split, limit, seed, follow_links=follow_links, link_stats=links)
        model, fusion_desc = resolve_fusion(fusion, backbone_opts.weights_dir or [])
        # build_detectors checks the options (UsageError), on a copy
        dets, ctx = build_detectors(ScanOptions(detectors=split_list(detectors), **backbone_opts.scan_options(),
                                                c2pa_trust=c2pa_trust or None))
    from ..fusion import left_out, without_retrained

    model, retrained = without_retrained(model, dets)
    if retrained is not None:
        gone = left_out(model)
        fusion_desc = ("rules (the fusion model's heads changed)" if model is None else
                       f"{fusion_desc}, without {', '.join(gone)} (head changed since it was fitted)")
        if not quiet:
            err.print(f"note: {retrained}", highlight=False, markup=False)
    n_cond = 1 + (norm is not None) + len(perts)
    if not quiet:
        print_detector_setup(err, ctx, dets, f"{len(items)} labelled images ({sum(i.label == 0 for i in items)} real, "
                                             f"{sum(i.label == 1 for i in items)} AI), {len(dets)} detector(s), "
                                             f"{n_cond} condition(s); fusion: {fusion_desc}"
                                             + (f"; {note}" if (note := links.note()) else ""))
        from ..fusion import unmodelled_note

        if (note := unmodelled_note(model, dets)) is not None:
            err.print(f"note: {note}", highlight=False, markup=False)
    progress_state = {"cond": None, "done": 0}

    def progress(cond: str, k: int):
        if quiet:
            return
        if progress_state["cond"] != cond:
            progress_state.update(cond=cond, done=0)
        progress_state["done"] += k
        if progress_state["done"] % 50 == 0 or progress_state["done"] == len(items):
            err.print(f"  {cond}: {progress_state['done']}/{len(items)}", highlight=False)

    info = {"command": "aiidetect " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "data": [str(d) for d in data], "left_out": links.counts(), "fusion": fusion_desc,
            "detector_details": [d.describe() for d in dets]}
    result, columns = evaluate(items, dets, model=model, perturbations=perts, normalize=norm,
                               batch_size=batch_size, progress=progress, run_info=info,
                               protocol=protocol, allow_train_overlap=allow_train_overlap,
                               on_overlap=lambda report: say_overlap(err, report, quiet))
    raw = result["conditions"][0]
    if not raw.get("n_scored"):
        # Metrics of nothing would read as an evaluation that ran (a CI job would pass on exit 0).
        bad = raw.get("unreadable") or []
        first = f"; first: {bad[0]['file']}: {bad[0]['error']}" if bad else ""
        fail(f"none of the {raw.get('n_items', len(items))} labelled images could be scored "
             f"({raw.get('n_decode_errors', 0)} unreadable{first}); nothing was evaluated")
    if out:
        # Before the tables: a run whose files could not be written fails with nothing on stdout.
        from ..report.output import OutputWriteFailed

        try:
            files = write_outputs(out, result, columns, make_plots=plots)
        except OSError as exc:
            # A failed write arrives already worded for one file (report.output.OutputWriteFailed): the
            # line names the folder once, with the system's reason, not that message inside this one.
            why = os.strerror(exc.errno) if isinstance(exc, OutputWriteFailed) and exc.errno else exc.strerror or exc
            fail(f"cannot write the outputs to {out}: {why}"
                 + (f" ({exc.filename})" if getattr(exc, "filename", None) else ""))
        if not quiet:
            err.print(f"wrote {', '.join(files)} to {out}", highlight=False)
    if fmt == JsonFormat.table:
        from ..report.safe import table_width

        # Wide tables when piped: the numbers matter more than an 80-column layout.
        print_tables(result, Console(width=table_width(sys.stdout, default=200)))
    if fmt == JsonFormat.json:
        from ..report.safe import dumps

        # After the files: the same document as metrics.json, its plot list included.
        typer.echo(dumps(result, indent=2))


def register(apps) -> None:
    apps["root"].command("eval")(evaluate_cmd)
