"""`aiidetect bench`: decode, model and end-to-end images/s against the machine's limit."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..choices import choices
from .common import (BackboneOptions, Device, JsonFormat, QuietOpt, SummaryFormatOpt, WorkersOpt, backbone_options, fail,
                     stderr_console)

# bench times one runtime as asked; "auto" (scan's verified fast path) is not a runtime of its own.
BenchRuntime = choices("BenchRuntime", "torch", "onnx")
DecodeSchedule = choices("DecodeSchedule", "auto", "overlap", "turns", "adaptive")
# bench times the dtype asked for: no "auto"; int8 is the ONNX Runtime graph (bench.DTYPES, kept in step by a test)
BenchDtype = choices("BenchDtype", "float32", "bfloat16", "float16", "int8")
# bench decodes as a scan does: no "resize" (a training-only mode)
BenchPreprocess = choices("BenchPreprocess", "resize-center-crop", "center-crop")


def register(apps) -> None:
    apps["root"].command("bench")(bench_cmd)


@backbone_options()
def bench_cmd(
    folder: Optional[Path] = typer.Argument(None, help="Images to decode and scan (e.g. the dev photos). "
                                                       "Without it only the model is timed, on random pixels; "
                                                       "a folder with no image is refused."),
    backbone_opts: BackboneOptions = None,
    runtime: BenchRuntime = typer.Option("torch", "--runtime", help="onnx: exported on the fly unless --onnx."),
    dtype: BenchDtype = typer.Option("float32", "--dtype", help="bfloat16 on the torch runtime only, int8 on onnx only."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes",
                                              help="Comma-separated batch sizes to time the model at, e.g. "
                                                   "32,64,128,256 (overrides --batch-size; decode and end to "
                                                   "end use the last)."),
    preprocess: BenchPreprocess = typer.Option("resize-center-crop", "--preprocess",
                                   help="resize-center-crop | center-crop (no resize, as the shipped univfd "
                                        "head needs)."),
    workers: int = WorkersOpt,
    decode_schedule: DecodeSchedule = typer.Option(
        "auto", "--decode-schedule",
        help="End to end: decode workers beside the model (overlap), waiting while it runs (turns), or "
             "timing both and keeping the faster (adaptive); auto decides as a scan does (adaptive when a CPU "
             "model uses every core, else overlap)."),
    images: int = typer.Option(32, "--images", min=1, help="At most this many images from FOLDER."),
    device: Device = typer.Option("cpu", "--device", help="Where the model runs."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Use this export instead of exporting on the fly."),
    model_seconds: float = typer.Option(3.0, "--model-seconds", help="Time the model for at least this long."),
    peak_seconds: float = typer.Option(1.0, "--peak-seconds", help="Time each matmul-peak GEMM this long."),
    profile: bool = typer.Option(False, "--profile", help="Add the top operators of one batch (torch runtime)."),
    fmt: JsonFormat = SummaryFormatOpt,
    quiet: bool = QuietOpt,
):
    """Measure images/s (decode, model, end to end), peak memory and efficiency against the limit.

    Efficiency: the model's FLOPs per second against the machine's measured matmul peak.

    Random-init backbones are fine (`--backbone ViT-B-16 --pretrained none`):
    speed does not depend on weight values. On CUDA the model is also timed
    with the batch already on the GPU (CUDA events), and peak GPU memory is
    reported per batch size.

    Examples:
      aiidetect bench ../shared/data/dev/real --backbone ViT-B-16 --pretrained none --dtype bfloat16
      aiidetect bench --backbone ViT-L-14 --pretrained none --device cuda --dtype float16 --batch-sizes 32,64,128,256
    """
    # the library takes plain strings
    runtime, device, dtype, preprocess = runtime.value, device.value, dtype.value, preprocess.value
    sizes = [batch_size]
    if batch_sizes is not None:
        try:
            sizes = [int(x) for x in batch_sizes.split(",") if x.strip()]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 1:
            fail(f"--batch-sizes takes positive integers separated by commas, e.g. 32,64,128 (got {batch_sizes!r})")
    if folder is not None and not folder.is_dir():
        fail(f"{folder} is not a folder")
    err = stderr_console(quiet)
    spec = backbone_opts.spec()
    from ..backbone import BackboneUnavailable
    from ..bench import run_bench
    from .errors import missing_extra

    try:
        res = run_bench(spec, folder, runtime=runtime, dtype=dtype, batch_size=sizes if len(sizes) > 1 else sizes[0],
                        workers=workers, images=images, device=device, onnx_dir=onnx_dir, model_seconds=model_seconds,
                        peak_seconds=peak_seconds, profile=profile, preprocess=preprocess,
                        decode_schedule=decode_schedule.value, log=lambda s: err.print(f"[dim]{s}[/]", highlight=False))
    except (BackboneUnavailable, ValueError) as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. ORT missing, export failure: say what, exit 2
        # a missing extra gets the install line every other command prints, not the bare import error
        fail(missing_extra(exc) or f"{type(exc).__name__}: {exc}")
    if fmt == JsonFormat.json:
        from ..report.safe import dumps
        typer.echo(dumps(res, indent=2))
        return
    _table(res)


def _table(res) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    from ..report.safe import table_width

    # piped, as wide as scan's table: in rich's 80 columns the title (backbone, runtime, provider) broke
    # over two lines and an operator's name folded inside its cell
    console = Console(width=table_width(sys.stdout))

    def f(x, unit=""):
        return "-" if x is None else (f"{x:.1%}" if unit == "%" else f"{x:,.2f}{unit}")

    t = Table(title=f"aiidetect bench: {res['backbone']} · {res['runtime']} ({res.get('provider')}) · "
                    f"{res['dtype']} · batch {res['batch_size']}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    pk = res["peak_gflops"]
    rows = [
        ("matmul peak " + " / ".join(k.replace("float", "fp").replace("bfp", "bf") for k in pk),
         " / ".join(f"{v:,.0f}" for v in pk.values()) + " GFLOP/s"),
        ("model GFLOP per image", f(res["model_gflops_per_image"])),
        (f"limit ({res['limit_basis']})", f(res["limit_images_per_s"], " img/s")),
        ("decode", f(res["decode_images_per_s"], " img/s")),
        ("model", f(res["model_images_per_s"], " img/s")),
        ("model, batch already on the GPU", f(res.get("model_images_per_s_on_device"), " img/s")),
        ("end to end (scan pipeline)", f(res["end_to_end_images_per_s"], " img/s")),
        ("end to end / model", f(res["end_to_end_vs_model"], "%")),
        ("efficiency (end to end / limit)", f(res["efficiency"], "%")),
        ("model efficiency", f(res["model_efficiency"], "%")),
        ("peak memory (RSS)", f(res["peak_memory_mb"], " MB")),
        ("peak GPU memory (allocated)", f(res.get("peak_gpu_memory_mb"), " MB")),
    ]
    for k in ("bf16_cosine_min", "fp16_cosine_min"):
        if k in res:
            rows.append((k.replace("_", " "), f"{res[k]:.6f}"))
    m = res["machine"]
    rows.append(("load average (start / end)", f"{m.get('loadavg_1m')} / {m.get('loadavg_1m_end')} "
                                               f"on {m.get('cpu_count')} cores"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if res.get("sweep"):
        sw = Table(title="model at each batch size")
        for c in ("batch", "img/s", "efficiency", "img/s on GPU", "efficiency on GPU", "GPU MB"):
            sw.add_column(c, justify="right")
        for r in res["sweep"]:
            sw.add_row(str(r["batch_size"]), f(r["model_images_per_s"]), f(r["model_efficiency"], "%"),
                       f(r.get("model_images_per_s_on_device")), f(r.get("model_efficiency_on_device"), "%"),
                       f(r.get("peak_gpu_memory_mb")))
        console.print(sw)
    if res.get("profile"):
        p = Table(title="top operators, one batch (self CPU time)")
        for c in ("op", "self ms", "share", "calls"):
            p.add_column(c)
        for r in res["profile"]:
            p.add_row(r["op"], f"{r['self_ms']:.1f}", f"{r['share']:.1%}", str(r["calls"]))
        console.print(p)
