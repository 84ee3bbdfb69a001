"""`aiidetect train flow --real DIR|MANIFEST`: a CLIP-Flow head from real photos only."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..choices import choices
from ..commands.common import (BackboneOptions, FollowLinksOpt, HeadOutDirOpt, JsonAliasOpt, JsonFormat, Preprocess,
                               QuietOpt, SummaryFormatOpt, backbone_options, fail, renamed_options, stderr_console)

FlowRecipe = choices("FlowRecipe", "project", "paper")
FlowLinear = choices("FlowLinear", "lu", "perm")


def _int_list(text: Optional[str], what: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        fail(f"{what} must be comma-separated integers, got {text!r}")
        return []


@renamed_options(out="--out", batch="--batch")
@backbone_options(device=True, dtype="train", weights_dir=True)
def train_flow_cmd(
    real: List[Path] = typer.Option(..., "--real", help="Real photos: a folder (all images below it, or its real/ "
                                                        "part), or a CSV manifest; only real-labelled rows are used. "
                                                        "Repeatable."),
    proxy_kinds: Optional[str] = typer.Option(None, "--proxy-kinds",
                                              help="Comma-separated proxy kinds (default: all). See `aiidetect proxies --help`."),
    ai: Optional[List[Path]] = typer.Option(None, "--ai", help="AI images for a validation report only (never trained on). "
                                                               "Folder or manifest; repeatable."),
    name: Optional[str] = typer.Option(None, "--name", help="Head name (the detector is flow:<name>). Default: "
                                                            "clipflow-<backbone>."),
    out: Optional[Path] = HeadOutDirOpt,
    layers: Optional[str] = typer.Option(None, "--layers", help="Also use the CLS token of these blocks "
                                                                "(comma-separated, negative = from the end), e.g. -4,-8."),
    preprocess: Preprocess = typer.Option("center-crop", "--preprocess",
                                   help="center-crop (no resize: generator traces keep their pixel scale) | "
                                        "resize-center-crop | resize"),
    size: Optional[int] = typer.Option(None, "--size", min=1, help="Crop size (default: the backbone's input size)."),
    proxies_per_image: int = typer.Option(4, "--proxies-per-image", min=1, help="Proxies made from each photo."),
    steps: int = typer.Option(1500, "--steps", min=1, help="Optimiser steps."),
    batch: int = typer.Option(64, "--batch-size", min=2, help="Real photos per step (each with one of its proxies)."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0),
    blocks: int = typer.Option(6, "--blocks", min=1, help="Flow blocks (ActNorm + linear + coupling)."),
    hidden: int = typer.Option(256, "--hidden", min=4, help="Hidden width of the coupling networks."),
    linear: FlowLinear = typer.Option("lu", "--linear", help="lu (learned invertible linear) | perm (fixed permutation)."),
    recipe: FlowRecipe = typer.Option("project", "--recipe",
                               help="project (paired hinge: each proxy against its own source photo, shared noise) "
                                    "| paper (unpaired: each proxy against the batch of real photos, independent "
                                    "noise; see docs/detectors/clip-flow.md). "
                                    "E.g. aiidetect train flow --real /data/photos --recipe paper"),
    margin: float = typer.Option(0.5, "--margin", min=0.0, help="Proxy hinge margin, nats per feature dimension."),
    real_weight: float = typer.Option(1.0, "--real-weight", min=0.0, help="Weight of the real-photo likelihood term "
                                                                          "(0 = proxy hinge only)."),
    proxy_weight: float = typer.Option(1.0, "--proxy-weight", min=0.0, help="Weight of the proxy hinge term."),
    noise: float = typer.Option(0.2, "--noise", min=0.0, help="Input noise std (standardised units) while training."),
    fpr: float = typer.Option(0.01, "--fpr", min=0.0, max=0.5, help="Target false-positive rate on held-out real "
                                                                       "photos: p_ai = 0.5 there."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.05, max=0.9,
                                       help="Real photos held out for standardisation, calibration and metrics."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=4, help="Use at most N real photos."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, proxies and training."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    follow_links: bool = FollowLinksOpt,
    backbone_opts: BackboneOptions = None,
    fmt: JsonFormat = SummaryFormatOpt,
    json_out: bool = JsonAliasOpt,
    quiet: bool = QuietOpt,
):
    """Train a CLIP-Flow head on real photos only (no AI image needed).

    A normalizing flow on frozen CLIP features of real photos that gives low likelihood to spectrally
    modified proxies of them; `scan` runs it as flow:<name>.

    Examples:
      aiidetect train flow --real /data/newsroom-photos --name newsroom-flow
      aiidetect train flow --real real/ --ai ai/ --name checked-flow -f json"""
    from ..proxies import parse_kinds

    err = stderr_console(quiet)
    spec = backbone_opts.spec()
    try:
        kinds = parse_kinds(proxy_kinds)
    except ValueError as exc:
        fail(str(exc))
    preprocess, linear, recipe = preprocess.value, linear.value, recipe.value  # the library takes strings
    layer_list = _int_list(layers, "--layers")
    for p in list(real) + list(ai or []):
        if not p.exists():
            fail(f"{p} does not exist")

    from ..backbone import BackboneUnavailable, create_backbone, resolve_device
    from ..feature_cache import FeatureCache
    from ..flow.train import FitConfig, TrainFlowConfig, load_flow_data, train_flow_head
    from ..preprocess import make_spec
    from ..heads import HeadError, check_output_dir, default_output_dir, plain_name
    from ..commands.common import quiet_torch_threads

    quiet_torch_threads()
    t0 = time.time()
    head_name = name or "clipflow-" + re.sub(r"[^A-Za-z0-9._-]+", "-", spec.describe()).strip("-").lower()
    try:
        plain_name(head_name)
    except ValueError as exc:
        fail(str(exc))
    out_dir = out or default_output_dir(head_name, backbone_opts.weights_dir)
    try:
        check_output_dir(out_dir, head_name, "flow")
    except HeadError as exc:
        fail(str(exc))
    # the data first, as the other trainers: a wrong source must not cost the backbone's load
    try:
        data = load_flow_data([str(p) for p in real], [str(p) for p in (ai or [])], max_images, seed, follow_links)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    try:
        bb = create_backbone(spec, device=resolve_device(backbone_opts.device), dtype=backbone_opts.dtype)
    except BackboneUnavailable as exc:
        fail(str(exc))
    try:
        prep = make_spec(preprocess, size or bb.image_size)
    except ValueError as exc:
        fail(str(exc))
    cfg = TrainFlowConfig(kinds=kinds, layers=layer_list, proxies_per_image=proxies_per_image,
                          val_fraction=val_fraction, fpr=fpr, max_images=max_images, seed=seed, preprocess=prep,
                          blocks=blocks, hidden=hidden, linear=linear,
                          fit=FitConfig(steps=steps, batch=batch, lr=lr, real_weight=real_weight,
                                        proxy_weight=proxy_weight, margin=margin, noise=noise, seed=seed,
                                        paired=recipe == "project"))

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as bar:
        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            manifest = train_flow_head(bb, [str(p) for p in real], out_dir, head_name, cfg,
                                       ai_sources=[str(p) for p in (ai or [])],
                                       cache=None if no_cache else FeatureCache(), progress=progress,
                                       follow_links=follow_links, data=data,
                                       log=lambda s: err.print(s, highlight=False))
        except ValueError as exc:
            fail(str(exc))
    m = manifest["metrics"]
    cal = manifest["calibration"]
    summary = {"head": str(out_dir), "name": head_name, "data": manifest["data"], "metrics": m,
               "calibration": cal, "warnings": manifest.get("warnings", []), "seconds": round(time.time() - t0, 1)}
    for w in summary["warnings"]:  # -q keeps these: the head may not do what was asked
        stderr_console().print(f"warning: {w}", style="yellow", highlight=False)
    if json_out or fmt == JsonFormat.json:
        typer.echo(json.dumps(summary, indent=2))
        return
    d = manifest["data"]["real"]
    typer.echo(f"wrote {out_dir} (detector flow:{head_name}; {d['n_train']} real photos for training, "
               f"{d['n_val']} held out; {d['n_ai_rows_ignored']} AI-labelled rows ignored; {summary['seconds']} s)")
    npd = m["nll_per_dim"]
    typer.echo(f"  NLL/dim: real train {_f(npd['real_train'])}, real held-out {_f(npd['real_val'])}, "
               f"proxy train {_f(npd['proxy_train'])}, proxy held-out {_f(npd['proxy_val'])}")
    typer.echo(f"  AUROC real vs proxy: train {_f(m['auroc_real_vs_proxy_train'])}, "
               f"held-out {_f(m['auroc_real_vs_proxy_val'])}; held-out proxies flagged at the threshold: "
               f"{_f(m['proxy_val_flagged_at_threshold'])}")
    if m.get("per_kind_auroc_val"):
        typer.echo("  held-out AUROC per proxy kind: " + ", ".join(f"{k}={_f(v)}" for k, v in m["per_kind_auroc_val"].items()))
    typer.echo(f"  calibration: threshold z={cal['threshold_z']:.3f} for FPR {cal['fpr']} on {cal['n_real']} held-out "
               f"reals (achieved {cal['achieved_fpr']:.3f}), slope {cal['slope']:.3f}")
    for w in summary["warnings"]:
        typer.echo(f"  warning: {w}")
    if "ai_validation" in m:
        a = m["ai_validation"]
        typer.echo(f"  AI validation ({a['n']} images, not trained on): AUROC {_f(a['auroc_real_val_vs_ai'])}, "
                   f"flagged at threshold {_f(a['ai_flagged_at_threshold'])}")


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def register(apps) -> None:
    apps["train"].command("flow")(train_flow_cmd)
