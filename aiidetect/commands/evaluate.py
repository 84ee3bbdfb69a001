"""`aiidetect eval DATA...`: measure the detectors and the fused verdict on labelled data."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from .common import BackboneOptions, backbone_options, fail, stderr_console


def parse_list(values: Optional[List[str]]) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def load_labelled(data: List[str], split: str, limit: Optional[int], seed: int):
    """DATA... -> items, or exit 2 with the reason."""
    from ..train.data import few_shot, load_items

    for d in data:
        if not Path(d).exists():
            fail(f"{d}: no such file or folder")
    try:
        items = load_items(data, split=split)
    except ValueError as exc:
        fail(str(exc))
    if limit:
        items = few_shot(items, limit, seed=seed, by="label")
    return items


def build_detectors(families: list[str], backbone_opts: BackboneOptions):
    """The same detectors `aiidetect scan` would run with these options."""
    from ..detectors import DEFAULT_DETECTORS, RunContext, create_detectors, list_families
    from ..weights import weights_dirs

    fams = families or list(DEFAULT_DETECTORS)
    unknown = [f for f in fams if f not in list_families()]
    if unknown:
        fail(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(list_families())}")
    ctx = RunContext(backbone_spec=backbone_opts.spec(), device=backbone_opts.device, dtype=backbone_opts.dtype,
                     weights_dirs=weights_dirs(backbone_opts.weights_dir or []))
    return create_detectors(fams, ctx), ctx


def resolve_fusion(fusion: Optional[str], weights_dir) -> tuple[Any, str]:
    """--fusion PATH|none|auto -> (model or None, description)."""
    from ..fusion import load_fusion_model
    from ..weights import HeadError, read_manifest, weights_dirs

    if fusion in (None, "", "auto"):
        m = load_fusion_model(weights_dirs(weights_dir or []))
        return (m, f"fusion model {m['name']} ({m['path']})") if m else (None, "rules only (no fusion model found)")
    if fusion == "none":
        return None, "rules only (--fusion none)"
    try:
        m = read_manifest(fusion)
    except HeadError as exc:
        fail(str(exc))
    if m.get("detector") != "fusion":
        fail(f"{fusion} is a {m.get('detector')!r} head, not a fusion model")
    return {**m, "path": str(fusion)}, f"fusion model {m['name']} ({fusion})"


@backbone_options(device=True, dtype="infer", weights_dir=True)
def evaluate_cmd(
    data: List[str] = typer.Argument(..., help="Labelled data: real/+ai/<generator>/ folder, GenImage, "
                                               "UniversalFakeDetect/CNNSpot folder, or a CSV manifest (file,label[,generator])."),
    detectors: Optional[List[str]] = typer.Option(None, "--detectors", "-d",
                                                  help="Comma-separated detector families (default: all)."),
    perturb: Optional[List[str]] = typer.Option(None, "--perturb", "-p",
                                                help="Robustness conditions, repeatable: jpeg:95,75,50 resize:0.5,0.25 "
                                                     "blur:1,2 crop:0.5 webp:80 noise:5, or a chain resize:0.5+jpeg:75."),
    normalize: Optional[str] = typer.Option(None, "--normalize",
                                            help="Format-bias control: re-encode every image identically (e.g. jpeg:96) "
                                                 "and report it beside the raw numbers."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write metrics.json, summary.md, scores.csv and plots here."),
    fusion: Optional[str] = typer.Option(None, "--fusion",
                                         help="Fusion model folder, 'none' for the rules alone; default: the first "
                                              "fusion model in the weights folders."),
    split: str = typer.Option("val", "--split", help="GenImage split to read (train | val)."),
    protocol: Optional[str] = typer.Option(None, "--protocol",
                                           help="Also report a benchmark's own numbers: genimage (per-subset accuracy "
                                                "over the subset's reals and fakes, mean over subsets) or ufd (the same "
                                                "plus AP per subset). E.g. aiidetect eval /data/GenImage --protocol genimage"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N images per class (seeded sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --limit sampling."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="PNG plots under --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    backbone_opts: BackboneOptions = None,
):
    """Evaluate detectors and the fused verdict: accuracy on real/AI, AP, AUC, TPR at 1%/5% FPR, ECE,
    uncertain share, per-generator tables, robustness sweeps and a format-bias control."""
    from rich.console import Console

    from ..evaluate import evaluate, parse, parse_all
    from ..evaluate.report import print_tables, write_outputs

    err = stderr_console()
    from ..evaluate.protocol import PROTOCOLS

    if protocol is not None and protocol not in PROTOCOLS:
        fail(f"--protocol must be one of {', '.join(PROTOCOLS)} (got {protocol!r})")
    try:
        perts = parse_all(perturb)
        norm = None
        if normalize:
            ps = parse(normalize)
            if len(ps) != 1:
                fail("--normalize takes one condition, e.g. jpeg:96")
            norm = ps[0]
    except ValueError as exc:
        fail(str(exc))
    items = load_labelled(data, split, limit, seed)
    model, fusion_desc = resolve_fusion(fusion, backbone_opts.weights_dir)
    dets, _ = build_detectors(parse_list(detectors), backbone_opts)
    n_cond = 1 + (norm is not None) + len(perts)
    if not quiet:
        err.print(f"{len(items)} labelled images ({sum(i.label == 0 for i in items)} real, "
                  f"{sum(i.label == 1 for i in items)} AI), {len(dets)} detector(s), {n_cond} condition(s); "
                  f"fusion: {fusion_desc}", highlight=False)
        for d in dets:
            st = d.describe()
            if st.get("status") == "unavailable":
                err.print(f"  {d.name}: unavailable: {st.get('reason')}", style="yellow", highlight=False)
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
            "data": [str(d) for d in data], "fusion": fusion_desc,
            "detector_details": [d.describe() for d in dets]}
    result, columns = evaluate(items, dets, model=model, perturbations=perts, normalize=norm,
                               batch_size=batch_size, progress=progress, run_info=info,
                               protocol=protocol)
    # Wide tables when piped: the numbers matter more than an 80-column layout.
    print_tables(result, Console() if sys.stdout.isatty() else Console(width=200))
    if out:
        files = write_outputs(out, result, columns, make_plots=plots)
        if not quiet:
            err.print(f"wrote {', '.join(files)} to {out}", highlight=False)


def register(apps) -> None:
    apps["root"].command("eval")(evaluate_cmd)
