"""`aiidetect train mpft DATA...`: fine-tune the CLIP ViT with Texture-Aware
Masking (LoRA by default) plus binary and attribution heads."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..choices import choices
from ..commands.common import (BackboneOptions, FollowLinksOpt, GenImageSplit, HeadOutDirOpt, JsonAliasOpt, JsonFormat,
                               Preprocess, QuietOpt, SummaryFormatOpt, backbone_options, fail, renamed_options,
                               stderr_console)
from .explain_cli import MaskSelect

P_DATA, P_SCHED, P_MASK, P_MODEL, P_AUG = "Data", "Schedule", "Texture-Aware Masking", "Model", "Augmentation"


RECIPES = {
    "project": "project defaults",
    "paper": "format guard off, augmentation = CNNSpot's Gaussian blur (sigma 0-3) and JPEG (q 30-100) at p 0.1 each "
             "(no crop/downscale)",
    "clip-finetune": "--adapter full --mask-ratio 0 --attr-weight 1 (every CLIP block trained, no TAM)",
}
Recipe = choices("Recipe", *RECIPES)
# The library's tuples (model.MASK_MODES, lora.ADAPTER_MODES) import torch: kept in step by a test.
MaskMode = choices("MaskMode", "drop", "token")
Adapter = choices("Adapter", "lora", "last_n", "full")
ShotsBy = choices("ShotsBy", "label", "generator")


@renamed_options(out="--out")
@backbone_options(device=True, dtype="train", weights_dir=True)
def train_mpft_cmd(
    data: List[Path] = typer.Argument(..., help="Labelled data: CSV manifest (file,label[,generator]), a folder with "
                                                "real/ and ai/<generator>/, GenImage or UniversalFakeDetect layout."),
    name: Optional[str] = typer.Option(None, "--name", help="Head name (the detector is mpft:<name>). Default: mpft."),
    recipe: Recipe = typer.Option("project", "--recipe",
                               help="project (defaults below) | paper (the benchmarks' training setting: no format guard, "
                                    "only CNNSpot's blur/JPEG augmentation) | clip-finetune (fine-tune every CLIP block, no "
                                    "masking, attribution weight 1, open-set 'unknown-generator'). A recipe sets the "
                                    "options it names and overrides them; see docs/detectors/mpft.md. "
                                    "E.g. aiidetect train mpft /data/GenImage/stable_diffusion_v_1_4 --recipe paper"),
    out: Optional[Path] = HeadOutDirOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue from <out>/checkpoint.pt if present."),
    follow_links: bool = FollowLinksOpt,
    shots: Optional[int] = typer.Option(None, "--shots", min=1, help="At most N images per class (few-shot).",
                                        rich_help_panel=P_DATA),
    shots_by: ShotsBy = typer.Option("label", "--shots-by", help="What --shots counts per.",
                                 rich_help_panel=P_DATA),
    split: GenImageSplit = typer.Option("train", "--split", help="GenImage split to read.", rich_help_panel=P_DATA),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.9,
                                       help="Held-out share (stratified by generator) for model selection, "
                                            "calibration and the reported metrics.", rich_help_panel=P_DATA),
    seed: int = typer.Option(0, "--seed", help="Seed for few-shot draw, split, init, batches, masks, augmentation.",
                             rich_help_panel=P_DATA),
    preprocess: Preprocess = typer.Option("center-crop", "--preprocess",
                                          help="center-crop (no resize) | resize-center-crop | resize",
                                          rich_help_panel=P_DATA),
    epochs: int = typer.Option(5, "--epochs", min=1, rich_help_panel=P_SCHED),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Total optimiser steps (overrides --epochs).",
                                        rich_help_panel=P_SCHED),
    batch_size: int = typer.Option(16, "--batch-size", min=1, rich_help_panel=P_SCHED),
    lr: float = typer.Option(5e-4, "--lr", min=0.0, help="Learning rate of the adapter and mask token.", rich_help_panel=P_SCHED),
    lr_head: float = typer.Option(1e-3, "--lr-head", min=0.0, help="Learning rate of the heads.", rich_help_panel=P_SCHED),
    weight_decay: float = typer.Option(0.01, "--weight-decay", min=0.0, rich_help_panel=P_SCHED),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", min=1, help="Validate every N steps (default: per epoch).",
                                             rich_help_panel=P_SCHED),
    mask_ratio: float = typer.Option(0.3, "--mask-ratio", min=0.0, max=0.95,
                                     help="Share of patches hidden during training (0 = plain fine-tuning).",
                                     rich_help_panel=P_MASK),
    mask_mode: MaskMode = typer.Option("drop", "--mask-mode", help="drop (remove the tokens) | token (learned mask token).",
                                  rich_help_panel=P_MASK),
    mask_select: MaskSelect = typer.Option("sample", "--mask-select",
                                    help="topk (most textured) | sample (probability proportional to texture).",
                                    rich_help_panel=P_MASK),
    mask_power: float = typer.Option(1.0, "--mask-power", min=0.0, help="sample: probability ~ texture ** power.",
                                     rich_help_panel=P_MASK),
    adapter: Adapter = typer.Option("lora", "--adapter", help="Which weights of the encoder train.", rich_help_panel=P_MODEL),
    rank: int = typer.Option(8, "--rank", min=1, help="LoRA rank.", rich_help_panel=P_MODEL),
    alpha: float = typer.Option(16.0, "--alpha", help="LoRA alpha (delta scale = alpha / rank).", rich_help_panel=P_MODEL),
    targets: str = typer.Option("attn_in,attn_out,mlp_fc,mlp_proj", "--targets",
                                help="LoRA targets: attn_in (q/k/v), attn_out, mlp_fc, mlp_proj.", rich_help_panel=P_MODEL),
    last_n: int = typer.Option(2, "--last-n", min=0, help="last_n: how many final blocks are trained.", rich_help_panel=P_MODEL),
    train_norms: bool = typer.Option(False, "--train-norms", help="Also train every block's LayerNorms.",
                                     rich_help_panel=P_MODEL),
    attr_weight: float = typer.Option(0.5, "--attr-weight", min=0.0, help="Weight of the attribution loss.", rich_help_panel=P_MODEL),
    no_augment: bool = typer.Option(False, "--no-augment", help="Disable crop/resize/blur/JPEG augmentation.",
                                    rich_help_panel=P_AUG),
    no_format_guard: bool = typer.Option(False, "--no-format-guard",
                                         help="Do not re-encode every training image as JPEG (format-bias guard).",
                                         rich_help_panel=P_AUG),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads for decoding and augmentation."),
    backbone_opts: BackboneOptions = None,
    fmt: JsonFormat = SummaryFormatOpt,
    json_out: bool = JsonAliasOpt,
    quiet: bool = QuietOpt,
):
    """Train an MPFT head: Texture-Aware Masking fine-tuning, binary and attribution heads.

    The head (adapter + heads only, never the backbone) lands in the weights directory; `scan` runs it as mpft:<name>.

    Examples:
      aiidetect train mpft train.csv --name newsroom-mpft --epochs 1
      aiidetect train mpft /data/GenImage/sd14 --recipe paper --name genimage-mpft -f json"""
    import time

    from ..backbone import BackboneUnavailable, create_backbone, resolve_device
    from ..mpft.augment import AugmentConfig
    from ..mpft.trainer import TrainConfig, train_mpft
    from ..train.data import LeftOut, load_items, require_both_classes
    from ..heads import HeadError, check_output_dir, default_output_dir, plain_name
    from ..commands.common import quiet_torch_threads

    err = stderr_console(quiet)
    # the library takes plain strings
    recipe, shots_by, split, preprocess, mask_mode, mask_select, adapter = (
        c.value for c in (recipe, shots_by, split, preprocess, mask_mode, mask_select, adapter))
    spec = backbone_opts.spec()
    try:
        links = LeftOut()
        items = load_items([str(d) for d in data], split=split, follow_links=follow_links, link_stats=links)
        require_both_classes(items, "MPFT")
    except (ValueError, OSError) as exc:
        fail(str(exc))
    try:
        name = plain_name(name or "mpft")
    except ValueError as exc:
        fail(str(exc))
    out_dir = out or default_output_dir(name, backbone_opts.weights_dir)
    try:
        check_output_dir(out_dir, name, "mpft")
    except HeadError as exc:
        fail(str(exc))
    aug = AugmentConfig.none() if no_augment else AugmentConfig()
    aug.guard = not no_format_guard
    if recipe == "paper":
        if not no_augment:
            aug = AugmentConfig.paper()
        aug.guard = False
    elif recipe == "clip-finetune":
        adapter, mask_ratio, attr_weight = "full", 0.0, 1.0
    if recipe != "project":
        err.print(f"recipe {recipe}: {RECIPES[recipe]}", highlight=False)
    cfg = TrainConfig(shots=shots, shots_by=shots_by, val_fraction=val_fraction, seed=seed, preprocess_mode=preprocess,
                      epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, lr_head=lr_head,
                      weight_decay=weight_decay, eval_every=eval_every, mask_ratio=mask_ratio, mask_mode=mask_mode,
                      mask_select=mask_select, mask_power=mask_power, adapter_mode=adapter, rank=rank, alpha=alpha,
                      targets=tuple(t.strip() for t in targets.split(",") if t.strip()), last_n=last_n,
                      train_norms=train_norms, attr_weight=attr_weight, augment=aug, workers=workers, recipe=recipe)
    quiet_torch_threads()
    t0 = time.time()
    try:
        bb = create_backbone(spec, device=resolve_device(backbone_opts.device), dtype=backbone_opts.dtype)
        err.print(f"backbone {spec.describe()} (fingerprint {bb.fingerprint}); {len(items)} labelled images"
                  + (f" ({note})" if (note := links.note()) else "") + "; "
                  f"head -> {out_dir}", highlight=False)
        res = train_mpft(bb, items, cfg, out_dir, name, sources=[str(d) for d in data], resume=resume,
                         show_progress=not quiet, log=lambda s: err.print(s, highlight=False))
    except BackboneUnavailable as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    m = res.manifest
    summary = {"head": str(res.head_dir), "name": m["name"], "detector": f"mpft:{m['name']}", "labels": m["labels"],
               "n_train": m["data"]["train"]["n"], "n_selection": m["data"]["selection"]["n"],
               "n_val": m["data"]["validation"]["n"],
               "trainable_parameters": m["params"]["trainable_parameters"], "calibration": m["calibration"],
               "metrics": {k: v for k, v in m["metrics"].items() if k != "history"},
               "seconds": round(time.time() - t0, 1)}
    if json_out or fmt == JsonFormat.json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"wrote {summary['head']} ({summary['detector']}, {summary['n_train']} train / {summary['n_selection']} selection "
                   f"/ {summary['n_val']} report images, {summary['trainable_parameters']} trained parameters, {summary['seconds']} s)")
        v = summary["metrics"].get("validation")
        if v:
            typer.echo("  validation: " + ", ".join(f"{k}={round(x, 4) if isinstance(x, float) else x}"
                                                    for k, x in v.items()))
        cal = summary["calibration"]
        typer.echo(f"  temperature: {cal['temperature']:.4g}"
                   + (f" (fitted on the {cal['fitted_on']})" if cal.get("fitted_on") else f" ({cal.get('not_fitted')})"))


def register(apps) -> None:
    apps["train"].command("mpft")(train_mpft_cmd)
