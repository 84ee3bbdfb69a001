"""`aiidetect export onnx`: encoder + trained heads -> one ONNX graph per backbone."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..choices import choices
from .common import (BackboneOptions, JsonFirstFormatOpt, JsonFormat, QuietOpt, backbone_options, fail,
                     renamed_options, stderr_console, weights_dirs)

# onnx_export.VARIANTS, which imports numpy: kept in step by a test.
OnnxVariant = choices("OnnxVariant", "fp32", "fp16", "int8")
Int8Mode = choices("Int8Mode", "dynamic", "static")
Int8Weights = choices("Int8Weights", "auto", "8", "7")


def register(apps) -> None:
    apps["export"].command("onnx")(export_onnx_cmd)


@renamed_options(out="--out")
@backbone_options(weights_dir=True)
def export_onnx_cmd(
    out: Path = typer.Option(..., "--out-dir", "-o", help="Output folder (graph(s) + aiidetect-onnx.json)."),
    variant: OnnxVariant = typer.Option("fp32", "--variant", help="fp32 | fp16 (for CUDA) | int8 (for CPU)."),
    int8_mode: Int8Mode = typer.Option("dynamic", "--int8-mode",
                                       help="dynamic (weights only) | static (needs --calibration-data)."),
    int8_weights: Int8Weights = typer.Option("auto", "--int8-weights",
                                             help="Weight bits: 7-bit weights keep ONNX Runtime's fast int8 kernels "
                                                  "exact on x86 CPUs without VNNI (AVX2); auto: 7 on such a CPU, "
                                                  "else 8."),
    calibration_data: Optional[Path] = typer.Option(None, "--calibration-data",
                                                    help="Image folder for static int8 calibration (e.g. the dev set)."),
    # min=1: the library reads 0 as "every image in the folder" and -3 as "all but the last three".
    calibration_limit: int = typer.Option(32, "--calibration-limit", min=1, help="Images used for calibration."),
    agreement_data: Optional[Path] = typer.Option(None, "--agreement-data",
                                                  help="Image folder to measure agreement with PyTorch fp32 on."),
    agreement_limit: int = typer.Option(64, "--agreement-limit", min=1,
                                      help="Images used for the agreement check."),
    detectors: str = typer.Option("", "--detectors", "-d", help="Head families to include, comma-separated "
                                                            "(default: every family with an ONNX mapping)."),
    # min=18: below it torch keeps opset 18 after a failed down-conversion (a traceback on stderr) while
    # the summary and the sidecar claimed the opset asked for.
    opset: int = typer.Option(18, "--opset", min=18, help="ONNX opset (>= 18 for the dynamo exporter)."),
    fmt: JsonFormat = JsonFirstFormatOpt,
    quiet: bool = QuietOpt,
    backbone_opts: BackboneOptions = None,
):
    """Export the backbone and every trained head on its features to ONNX.

    Prints the sidecar's summary (files, outputs, measured agreement) as JSON on stdout, or lines for
    people with --format table; on an error nothing reaches stdout (the reason is on stderr, exit 2).

    Examples:
      aiidetect export onnx -o onnx/ --backbone ViT-L-14 --variant int8 --agreement-data /data/dev
      aiidetect export onnx -o onnx-tiny/ --backbone-config tiny-vit -f table
    """
    variant, int8_mode, int8_weights = variant.value, int8_mode.value, int8_weights.value  # the library takes strings
    if variant == "int8" and int8_mode == "static" and calibration_data is None:
        fail("--int8-mode static needs --calibration-data DIR")
    for p in (calibration_data, agreement_data):
        if p is not None and not p.is_dir():
            fail(f"{p} is not a folder")
    from ..onnx_export import image_paths

    static = variant == "int8" and int8_mode == "static"  # the only export that reads --calibration-data
    calibration = image_paths(calibration_data, calibration_limit) if calibration_data and static else []
    agreement = image_paths(agreement_data, agreement_limit) if agreement_data else []
    for p, found in ((calibration_data if static else None, calibration), (agreement_data, agreement)):
        if p is not None and not found:
            # Said before the backbone is built and exported (seconds to minutes), not after.
            fail(f"{p} holds no image files to measure on")
    if out.exists() and not out.is_dir():
        fail(f"--out-dir {out} is a file, not a folder; give a folder to write the graphs into")
    err = stderr_console(quiet)
    spec = backbone_opts.spec()

    from ..backbone import BackboneUnavailable, create_backbone
    from ..onnx_export import ExportError, collect_heads, export_onnx

    try:
        bb = create_backbone(spec, device="cpu", dtype="float32")
    except BackboneUnavailable as exc:
        fail(str(exc))
    fams = [f.strip() for f in detectors.split(",") if f.strip()]
    heads, skipped = collect_heads(bb, weights_dirs(backbone_opts.weights_dir), fams)
    for name, why in skipped:
        err.print(f"[yellow]note:[/] head {name} not exported: {why}", highlight=False)
    if not heads:
        err.print("[yellow]note:[/] no trained head matches this backbone; exporting the encoder alone "
                  "(output `embed`)", highlight=False)
    try:
        side = export_onnx(
            bb, out, heads, variant=variant, opset=opset, int8_mode=int8_mode,
            calibration_paths=calibration, agreement_paths=agreement,
            skipped=skipped, int8_weight_bits=None if int8_weights == "auto" else int(int8_weights),
            log=lambda s: err.print(s, highlight=False))
    except ExportError as exc:
        fail(str(exc))
    summary = {"out": str(out), "variant": side["variant"], "opset": side["opset"],
               "backbone": side["backbone"]["name"], "fingerprint": side["backbone"]["fingerprint"],
               "graphs": [{"file": g["file"], "outputs": g["outputs"], "files": list(g["files"]),
                           **({"weight_bits": g["conversion"]["weight_bits"]}
                              if "weight_bits" in (g.get("conversion") or {}) else {}),
                           "agreement": g.get("agreement")} for g in side["graphs"]],
               "skipped_heads": side["skipped_heads"]}
    from ..report.safe import dumps  # strict JSON: a folder name that is not UTF-8 as U+FFFD, no NaN

    if fmt == JsonFormat.json:
        typer.echo(dumps(summary, indent=2))
        return
    typer.echo(f"wrote {summary['out']} ({summary['variant']}, opset {summary['opset']}) for backbone "
               f"{summary['backbone']} (fingerprint {summary['fingerprint']})")
    for g in summary["graphs"]:
        typer.echo(f"  {g['file']}: outputs {', '.join(g['outputs'])}"
                   + (f"; agreement {dumps(g['agreement'])}" if g.get("agreement") else ""))
    for h in summary["skipped_heads"]:
        typer.echo(f"  skipped {h['name']}: {h['reason']}")
