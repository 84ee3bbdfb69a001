"""`aiidetect train linear DATA...`: a few-shot logistic probe on frozen backbone features."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..commands.common import (BackboneOptions, FollowLinksOpt, HeadOutDirOpt, JsonAliasOpt, JsonFormat, Preprocess,
                               QuietOpt, SummaryFormatOpt, backbone_options, fail, renamed_options, stderr_console)


@renamed_options(out="--out")
@backbone_options(device=True, dtype="train", weights_dir=True)
def train_linear_cmd(
    data: List[Path] = typer.Argument(..., help="Labelled data: CSV manifest (file,label[,generator]), a folder with "
                                                "real/ and ai/<generator>/, GenImage or UniversalFakeDetect layout."),
    shots: Optional[int] = typer.Option(None, "--shots", min=1, help="Use at most N images per class (few-shot)."),
    generators: Optional[str] = typer.Option(None, "--generators",
                                             help="Comma-separated AI generators to keep (real images are always kept): "
                                                  "one probe per generator family."),
    name: Optional[str] = typer.Option(None, "--name", help="Head name (the detector is linear:<name>). "
                                                            "Default: probe-<data or generators>."),
    out: Optional[Path] = HeadOutDirOpt,
    preprocess: Preprocess = typer.Option("center-crop", "--preprocess",
                                   help="center-crop (no resize, keeps pixel-level traces) | resize-center-crop | resize"),
    size: Optional[int] = typer.Option(None, "--size", min=1, help="Crop size (default: the backbone's input size)."),
    feature: str = typer.Option("embed", "--feature", help="embed (after projection) or cls_<block>."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", min=0.0, max=0.9,
                                       help="Hold out this fraction to report held-out metrics."),
    seed: int = typer.Option(0, "--seed", help="Seed for the few-shot draw and cross-validation folds."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    follow_links: bool = FollowLinksOpt,
    backbone_opts: BackboneOptions = None,
    fmt: JsonFormat = SummaryFormatOpt,
    json_out: bool = JsonAliasOpt,
    quiet: bool = QuietOpt,
):
    """Train a linear probe (logistic regression, cross-validated C) on frozen backbone features.

    Works from about 5 images per class; `scan` then runs it as linear:<name>.

    Examples:
      aiidetect train linear train.csv --shots 16 --name newsroom-probe
      aiidetect train linear /data/GenImage/sd14 --backbone ViT-L-14 --name genimage-sd14 -f json"""
    from ..backbone import BackboneUnavailable, resolve_device
    from ..linear.train import select_items, train_linear
    from ..commands.common import quiet_torch_threads

    err = stderr_console(quiet)
    spec = backbone_opts.spec()
    gens = [g.strip() for g in generators.split(",") if g.strip()] if generators else None
    try:  # cheap checks of the data before torch is even imported
        select_items([str(d) for d in data], shots, gens, seed, follow_links)
    except ValueError as exc:
        fail(str(exc))
    quiet_torch_threads()
    try:
        res = train_linear([str(d) for d in data], spec, name=name, out=out, shots=shots, generators=gens,
                           preprocess=preprocess.value, size=size, feature=feature, val_fraction=val_fraction, seed=seed,
                           device=resolve_device(backbone_opts.device), dtype=backbone_opts.dtype, cache=False if no_cache else None,
                           weights_dirs=backbone_opts.weights_dir, progress=lambda s: err.print(s, highlight=False),
                           follow_links=follow_links)
    except BackboneUnavailable as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    for p, why in res.failures:
        err.print(f"skipped {p}: {why}", highlight=False)
    summary = {"head": str(res.out_dir), "name": json.loads((res.out_dir / "manifest.json").read_text())["name"],
               "n_train": res.n_train, "n_held_out": res.n_val, "C": res.probe.info.get("C"),
               "calibration": res.probe.calibration.get("method"), "metrics": res.metrics,
               "seconds": round(res.seconds, 2)}
    if json_out or fmt == JsonFormat.json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"wrote {summary['head']} (detector linear:{summary['name']}, {res.n_train} images, "
                   f"C={summary['C']}, {summary['seconds']} s)")
        for k, m in res.metrics.items():
            typer.echo(f"  {k}: " + ", ".join(f"{a}={b}" for a, b in m.items() if a != "note"))


def register(apps) -> None:
    apps["train"].command("linear")(train_linear_cmd)
