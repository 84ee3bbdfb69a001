"""`aiidetect proxies IMAGE -o DIR`: write CLIP-Flow proxy images to look at."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import QuietOpt, fail, renamed_options, stderr_console


@renamed_options(out="--out")
def proxies_cmd(
    image: Path = typer.Argument(..., help="A real photo."),
    out: Path = typer.Option(..., "--out-dir", "-o", help="Folder to write the proxies into (created if missing)."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated kinds (default: all)."),
    copies: int = typer.Option(1, "--copies", min=1, max=50, help="Random draws per kind."),
    size: int = typer.Option(512, "--size", min=0,
                             help="Center-crop (no resize) to this size first, as training does at the model's "
                                  "input size (at most 2048); 0 = whole image (up to 2048x2048 pixels)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random parameters."),
    quiet: bool = QuietOpt,
):
    """Write the spectral proxies CLIP-Flow trains against, one PNG per kind.

    The original and one file per proxy kind (PNG, lossless: JPEG would blur what the proxy changed),
    plus proxies.json with the parameters drawn. Kinds: hf_amp_scale, hf_amp_replace, periodic_peaks,
    lowpass_resharpen, hf_phase, resample_chain (docs/detectors/clip-flow.md).

    Prints the folder on stdout once every file is written.

    Example: aiidetect proxies photo.jpg -o proxies/ --kinds hf_phase,periodic_peaks --copies 3"""
    import numpy as np
    from PIL import Image

    from ..decode import DecodeFailure, load_rgb
    from ..preprocess import MAX_SIZE, center_crop
    from ..proxies import KINDS, apply_proxy, parse_kinds, proxy_rng

    try:
        names = parse_kinds(kinds)
    except ValueError as exc:
        fail(str(exc))
    if size > MAX_SIZE:
        fail(f"--size takes 0 to {MAX_SIZE} (the largest model input), not {size}")
    try:
        img = load_rgb(image)
    except DecodeFailure as exc:
        fail(f"{image}: {exc.code}: {exc.message}")
    if not size and img.width * img.height > MAX_SIZE * MAX_SIZE:
        # The proxies work in float64 Fourier space, ~270 bytes a pixel: a whole 12 MP photo took 3.3 GB and
        # 40 s a kind, a 100 MP one would take tens of GB; the model never sees more than MAX_SIZE anyway.
        fail(f"{image} is {img.width}x{img.height}: --size 0 (the whole image) takes images up to "
             f"{MAX_SIZE * MAX_SIZE} pixels; crop with --size N (at most {MAX_SIZE})")
    arr = np.asarray(img, dtype=np.uint8)
    if size:
        arr = center_crop(arr, size)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create {out}: {exc}")
    from ..report.output import OutputError, atomic_output, check_output, save_image

    stem = image.stem

    def proxy_name(kind: str, c: int) -> str:
        return f"{stem}_{kind}" + (f"_{c}" if copies > 1 else "") + ".png"

    names_out = [f"{stem}_original.png", "proxies.json"] + [proxy_name(k, c) for k in names for c in range(copies)]
    try:
        # All checked before the first is written: `-o` the photo's own folder, with a link named like an
        # output that leads to the photo, replaced the photo with its 512-pixel crop.
        for n in names_out:
            check_output(out / n, [str(image)])
    except OutputError as exc:
        fail(str(exc))
    save_image(Image.fromarray(arr), out / f"{stem}_original.png")
    log = {"image": str(image), "size": list(arr.shape[:2]), "seed": seed, "proxies": []}
    err = stderr_console(quiet)
    for ki, kind in enumerate(names):
        for c in range(copies):
            rng = proxy_rng(seed, ki, c)
            prox, params = apply_proxy(arr, kind, rng)
            fname = proxy_name(kind, c)
            save_image(Image.fromarray(prox), out / fname)
            diff = prox.astype(np.float64) - arr.astype(np.float64)
            log["proxies"].append({"file": fname, "imitates": KINDS[kind].imitates, "params": params,
                                   "rms_change": round(float(np.sqrt((diff ** 2).mean())), 3)})
            err.print(f"{fname}: {KINDS[kind].imitates}", highlight=False)
    with atomic_output(out / "proxies.json") as fh:
        fh.write(json.dumps(log, indent=2) + "\n")
    typer.echo(str(out))


def register(apps) -> None:
    apps["root"].command("proxies")(proxies_cmd)
