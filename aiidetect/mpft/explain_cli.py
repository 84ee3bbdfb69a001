"""`aiidetect explain-mask IMAGE -o mask.png`: show which patches Texture-Aware
Masking hides from the encoder during MPFT fine-tuning; `aiidetect
explain-mpft IMAGE -o occlusion.png`: which patches drive an MPFT head's
decision (occlusion on the ViT patch grid)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..choices import choices
from ..commands.common import (BackboneOptions, JsonFirstFormatOpt, JsonFormat, MaxBytesOpt, MaxPixelsOpt, Preprocess,
                               QuietOpt, backbone_options, fail, stderr_console)

MaskSelect = choices("MaskSelect", "topk", "sample", doc="--mask-select: which patches Texture-Aware Masking hides.")


def _check_output(image: Path, output: Path) -> None:
    """Refuse an output that is the image being explained (it would be replaced by its own map), and `-o -`
    at a terminal: the PNG's bytes were written to it as garbage after the whole computation."""
    import sys

    from ..report.output import OutputError, check_output, is_stdout
    from ..report.safe import is_terminal

    if is_stdout(output) and is_terminal(sys.stdout):
        fail("-o - writes the PNG to stdout, which is a terminal: redirect it (-o - > map.png), pipe it, "
             "or name a file (-o map.png)")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        check_output(output, [str(image)])
    except OutputError as exc:
        fail(str(exc))


def _decode(image: Path, max_pixels: int, max_bytes: int):
    """Decoded under scan's limits, taken from the same options: a file a scan with --max-pixels N judged can
    be explained, and a refusal's message names an option this command has."""
    from ..decode import DecodeFailure, DecodeLimits, load_rgb

    try:
        return load_rgb(image, DecodeLimits(max_pixels=max_pixels, max_bytes=max_bytes))
    except DecodeFailure as exc:
        fail(f"{image}: {exc.code}: {exc}")


def _load(image: Path, spec, max_pixels: int, max_bytes: int):
    from ..preprocess import to_uint8

    return to_uint8(_decode(image, max_pixels, max_bytes), spec)


def _image_box(region, w: int, h: int, size: int, box) -> Optional[list]:
    """A box of the model's view (x0, y0, x1, y1) in the image's own pixels, cut to the image; None when it
    lies wholly in center-crop's padding."""
    rx0, ry0, rx1, ry1 = region
    sx, sy = (rx1 - rx0) / size, (ry1 - ry0) / size
    x0, x1 = max(0, int(rx0 + box[0] * sx)), min(w, int(-(-(rx0 + box[2] * sx) // 1)))
    y0, y1 = max(0, int(ry0 + box[1] * sy)), min(h, int(-(-(ry0 + box[3] * sy) // 1)))
    return [x0, y0, x1, y1] if x0 < x1 and y0 < y1 else None


def explain_mask_cmd(
    image: Path = typer.Argument(..., help="Image file."),
    output: Path = typer.Option(..., "-o", "--output", help="PNG to write: the model's view with masked patches shaded."),
    ratio: float = typer.Option(0.3, "--mask-ratio", min=0.0, max=0.95, help="Share of patches masked."),
    select: MaskSelect = typer.Option("topk", "--mask-select", help="topk | sample (texture-proportional, uses --seed)."),
    seed: int = typer.Option(0, "--seed"),
    preprocess: Preprocess = typer.Option("center-crop", "--preprocess", help="How the image becomes the model's input."),
    size: int = typer.Option(224, "--size", help="Model input size."),
    patch: int = typer.Option(16, "--patch-size", min=1, help="ViT patch size."),
    head: Optional[Path] = typer.Option(None, "--head", help="Take preprocessing, patch size and mask settings from "
                                                             "this MPFT head folder instead."),
    max_pixels: int = MaxPixelsOpt,
    max_bytes: int = MaxBytesOpt,
    quiet: bool = QuietOpt,
):
    """Shade the patches Texture-Aware Masking would hide (the most textured ones).

    They are drawn on the image as the model sees it.

    Examples:
      aiidetect explain-mask photo.jpg -o mask.png --mask-ratio 0.5
      aiidetect explain-mask photo.jpg -o mask.png --head ~/.local/share/aiidetect/weights/newsroom-mpft"""
    import torch
    from PIL import Image

    from ..mpft.tam import MASK_MODES, shade_mask, tam_mask, texture_scores
    from ..preprocess import check_spec, make_spec, normalize

    select, preprocess = select.value, preprocess.value  # the library takes strings
    _check_output(image, output)
    try:
        spec = make_spec(preprocess, size)
    except ValueError as exc:
        fail(str(exc))
    if head is not None:
        from ..heads import HeadError, read_manifest

        try:
            m = read_manifest(head)
            # Checked like a scan checks it: a head's crop size is what gets allocated here.
            spec = check_spec(m.get("preprocessing"))
            vc = ((m.get("backbone") or {}).get("config") or {}).get("vision_cfg") or {}
            patch = int(vc.get("patch_size", patch))
            tr = (m.get("params") or {}).get("training") or {}
            ratio, select = float(tr.get("mask_ratio", ratio)), tr.get("mask_select", select)
        except (HeadError, ValueError, TypeError, AttributeError) as exc:
            fail(f"head {head}: {exc}")
        if patch < 1:
            fail(f"head {head}: patch size {patch} is not a positive number of pixels")
    if select not in MASK_MODES:  # a head's own setting, read from its manifest
        fail(f"head {head}: mask_select {select!r} is neither topk nor sample")
    if int(spec["size"]) % patch:
        fail(f"input size {spec['size']} is not a multiple of patch size {patch}")
    u8 = _load(image, spec, max_pixels, max_bytes)
    x = torch.from_numpy(normalize(u8, spec)).unsqueeze(0)
    mask = tam_mask(x, patch, ratio, select, seed=seed, mean=spec["mean"], std=spec["std"])[0]
    g = int(spec["size"]) // patch
    grid = mask.view(g, g).numpy()
    from ..explain.legend import with_legend
    from ..report.output import is_stdout, save_image

    legend = [f"Tinted squares: the {int(mask.sum())} of {mask.numel()} patches Texture-Aware Masking hides from "
              f"the encoder during MPFT training (the most textured ones, {select}).",
              "Drawn on the image as the model sees it (after its preprocessing)."]
    save_image(Image.fromarray(with_legend(shade_mask(u8, grid, patch), legend)), output)
    scores = texture_scores(x, patch, spec["mean"], spec["std"])[0]
    stderr_console(quiet).print(f"masked {int(mask.sum())}/{mask.numel()} patches ({select}, ratio {ratio}); "
                           f"texture score masked mean {float(scores[mask].mean()) if mask.any() else 0:.4g} vs kept "
                           f"{float(scores[~mask].mean()):.4g}", highlight=False)
    if not is_stdout(output):  # after `-o -` stdout holds the PNG: a line after it would end up inside the file
        typer.echo(str(output))


# The version of explain-mpft's JSON summary, as the scan record's `schema` versions the record (docs/schema.md):
# "MAJOR.MINOR", the first key, field names fixed within a version; a key removed, renamed or changed in meaning
# bumps it (docs/detectors/mpft.md, "The JSON summary"). A script kept from before it read no version at all.
EXPLAIN_MPFT_SCHEMA = "1.0"


@backbone_options(device=True, dtype="infer", weights_dir=True)
def explain_mpft_cmd(
    image: Path = typer.Argument(..., help="Image file."),
    output: Path = typer.Option(..., "-o", "--output", help="PNG heat map of patch importance."),
    head_name: Optional[str] = typer.Option(None, "--head", help="MPFT head name (default: the first found that "
                                                                 "runs on this backbone)."),
    backbone_opts: BackboneOptions = None,
    fmt: JsonFormat = JsonFirstFormatOpt,
    max_pixels: int = MaxPixelsOpt,
    max_bytes: int = MaxBytesOpt,
    quiet: bool = QuietOpt,  # accepted like everywhere: the result is on stdout, nothing else is printed
):
    """Occlusion map: how much the MPFT logit falls without each ViT patch.

    Each patch token is dropped in turn. Red = the patch pushed the decision towards AI, blue = towards
    real. Prints the head's logit, p_ai and the five patches that moved it most (each with its box in the
    image's pixels) as JSON on stdout, or lines for people with --format table (on stderr with `-o -`, where
    stdout holds the PNG).

    Examples:
      aiidetect explain-mpft photo.jpg -o occlusion.png --head newsroom-mpft
      aiidetect explain-mpft photo.jpg -o occlusion.png -f table --dtype float32"""
    import numpy as np
    import torch
    from PIL import Image

    from ..backbone import BackboneUnavailable, create_backbone, resolve_device, resolve_dtype
    from ..mpft.model import build_from_head
    from ..mpft.occlusion import color_scale, occlusion_map, render_heatmap
    from ..preprocess import normalize
    from ..heads import HeadError, HeadMismatch, find_heads, load_head, weights_dirs

    _check_output(image, output)
    # Decoded before any model is built: a file a scan would refuse costs no backbone (a ViT-L: seconds).
    img = _decode(image, max_pixels, max_bytes)
    found = find_heads(weights_dirs(backbone_opts.weights_dir or []), "mpft")
    if head_name:
        found = [(p, m) for p, m in found if m["name"] == head_name]
    if not found:
        fail("no mpft head found" + (f" named {head_name!r}" if head_name else ""))
    spec = backbone_opts.spec()
    try:
        # The device and dtype a scan resolves from the same options: in float32 the map explained a logit
        # the scan never reported (scan's `auto` runs bfloat16 on CPUs with native bf16).
        device = resolve_device(backbone_opts.device)
        bb = create_backbone(spec, device=device, dtype=resolve_dtype(backbone_opts.dtype or "auto", device))
    except (BackboneUnavailable, ValueError) as exc:
        fail(str(exc))
    first_error = None
    for path, _m in found:
        # Without --head: the first head this backbone can run, as a scan runs every head that fits; the first
        # found was taken even when it needed another backbone and the next one fitted.
        try:
            head = load_head(path)
            model = build_from_head(head, bb)
            break
        except HeadMismatch as exc:
            first_error = first_error or exc
        except (HeadError, ValueError) as exc:  # HeadError: a damaged head (checksum)
            fail(str(exc))
    else:
        fail(str(first_error))
    from ..preprocess import to_uint8, view_region

    pre = head.manifest["preprocessing"]
    u8 = to_uint8(img, pre)
    region = view_region(*img.size, pre)
    # Cast as the scan pipeline casts a batch (pipeline/stages.py).
    x = torch.from_numpy(normalize(u8, pre)).unsqueeze(0).to(bb.device).to(getattr(torch, bb.dtype))
    base, delta = occlusion_map(model, x, bb.patch_size)
    from ..explain.legend import view_note, with_legend
    from ..report.output import is_stdout, save_image

    scale = color_scale(delta)
    biggest = float(np.abs(delta).max())
    legend = ["Occlusion: each patch token dropped in turn; colour = change of the MPFT logit.",
              "Red: without this patch the logit falls (it pushed towards AI). Blue: it rises (pushed towards real).",
              "Shows where the head's answer comes from, not which pixels were generated.",
              view_note(region, *img.size, pre)]
    if biggest == 0:
        legend.append("No patch changed the logit: the map is empty because nothing moved, not because it is hidden.")
    elif biggest < scale:
        legend.append(f"The largest change is {biggest:.3g} logit, under the scale's floor of {scale:.3g}: "
                      "a faint map is a weak effect, not a hidden one.")
    save_image(Image.fromarray(with_legend(render_heatmap(u8, delta, bb.patch_size, scale=scale), legend, scale,
                                           " logit")), output)
    from ..probability import Calibrator

    # With `-o -` stdout holds the PNG, so the summary goes to stderr instead of into the picture's bytes.
    from ..report.safe import dumps  # strict JSON: a file name that is not UTF-8 as U+FFFD

    summary = {"schema": EXPLAIN_MPFT_SCHEMA, "output": str(output), "head": head.name, "dtype": bb.dtype,
               "logit": round(base, 4), "scale": round(scale, 4), "p_ai": round(Calibrator.from_manifest(head.manifest).prob(float(base)), 4),
               "top_patches": [_top_patch(int(i), delta, bb.patch_size, region, img.size, pre)
                               for i in np.argsort(-np.abs(delta).reshape(-1))[:5]]}
    err = is_stdout(output)
    if fmt == JsonFormat.json:
        typer.echo(dumps(summary), err=err)
        return
    typer.echo(f"{summary['output']}: head {summary['head']} ({summary['dtype']}), logit {summary['logit']}, "
               f"P(AI) {summary['p_ai']}; colour scale +-{summary['scale']} logit", err=err)
    typer.echo("patches that moved the logit most (row, col on the model's grid; box in the image's pixels):",
               err=err)
    for p in summary["top_patches"]:
        box = "outside the image" if p["box"] is None else "x {}-{}, y {}-{}".format(*p["box"][::2], *p["box"][1::2])
        typer.echo(f"  row {p['row']}, col {p['col']} ({box}): {p['delta']:+.4f}", err=err)


def _top_patch(i: int, delta, patch: int, region, wh, spec) -> dict:
    """row/col on the model's patch grid; box: where that patch lies on the picture as people see it (pixels,
    EXIF orientation applied), since the grid is laid over the resized and cropped view, not the file."""
    r, c = divmod(i, delta.shape[1])
    return {"row": r, "col": c, "delta": round(float(delta[r, c]), 4),
            "box": _image_box(region, *wh, int(spec["size"]), (c * patch, r * patch, (c + 1) * patch, (r + 1) * patch))}


def register(apps) -> None:
    apps["root"].command("explain-mask")(explain_mask_cmd)
    apps["root"].command("explain-mpft")(explain_mpft_cmd)
