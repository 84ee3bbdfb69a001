"""`aiidetect weights fetch|inspect|pack|install`: getting backbone weights onto a machine."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import (EXIT_OK, JsonFormat, QuietOpt, RecordFormat, RecordFormatOpt, SummaryFormatOpt, WeightsDirOpt,
                     fail, renamed_options)

FORMATS = ("table", "json", "jsonl", "csv")


def _emit(rows: list[dict], fmt: str, single: bool = False) -> None:
    if fmt not in FORMATS:
        fail(f"--format takes {', '.join(FORMATS)}")
    # Not json.dumps: a path that is not UTF-8 came out as lone-surrogate escapes (\udce9), which strict
    # parsers refuse and Python cannot write back out; safe.dumps shows it as U+FFFD, as scan and meta do.
    from ..report.safe import dumps

    if fmt == "json":
        typer.echo(dumps(rows[0] if single and len(rows) == 1 else rows, indent=2))
    elif fmt == "jsonl":
        for r in rows:
            typer.echo(dumps(r))
    elif fmt == "csv":
        from ..report.safe import CsvRows

        cols = list(rows[0]) if rows else []
        w = CsvRows(sys.stdout)
        w.writerow(cols)
        for r in rows:
            w.writerow([dumps(v) if isinstance(v, (dict, list)) else v for v in (r.get(k) for k in cols)])
    else:
        from ..report.safe import printable

        # printable: a checkpoint named with ESC or BEL (`x\x1b]0;...\x07.pt`) retitled or repainted the
        # terminal it was inspected on; shown as \uXXXX escapes, as in every other table
        for r in rows:
            typer.echo("  ".join(printable(f"{k}: {v}") for k, v in r.items() if not (k == "error" and v is None)))


def _note(message: str) -> None:
    from rich.markup import escape

    from .common import stderr_console

    stderr_console().print(f"note: {escape(message)}", highlight=False)


def fetch(
    spec: Optional[str] = typer.Argument(None, help="open_clip MODEL/TAG, e.g. ViT-L-14/openai."),
    url: Optional[str] = typer.Option(None, "--url", help="Any checkpoint URL (needs --sha256 unless the URL carries it)."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected SHA-256 of the file (64 hex digits)."),
    mirror: Optional[str] = typer.Option(None, "--mirror",
                                         help="Fetch https://HOST/PATH from PREFIX/HOST/PATH instead (newsroom proxy, "
                                              "internal mirror)."),
    hub: bool = typer.Option(False, "--hub", help="Take the Hugging Face copy when the tag has both a URL and a hub repo."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir",
                                             help="Where to put it (default: $AIIDETECT_CLIP_CACHE or ~/.cache/clip, "
                                                  "where scan looks)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be fetched from where; no network."),
    fmt: JsonFormat = SummaryFormatOpt,
    quiet: bool = QuietOpt,
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, max=3600.0,
                                  help="Seconds after which a silent connection, one whose headers have not all "
                                       "arrived, or one slower than 8 KiB/s over that long, is dropped and resumed "
                                       "(3 times, then exit 2)."),
):
    """Download backbone weights and verify them: the only command that uses the network.

    Examples:
      aiidetect weights fetch ViT-L-14/openai
      aiidetect weights fetch ViT-B-16/openai --mirror https://mirror.newsroom.example
      aiidetect weights fetch --url https://host/ckpt.safetensors --sha256 9f86d0...
    """
    from ..fetch import FetchError, download, plan_fetch, terminal_progress

    try:
        plan = plan_fetch(spec, url=url, sha256=sha256, mirror=mirror, cache_dir=cache_dir,
                          prefer="hub" if hub else "url")
    except FetchError as exc:
        fail(str(exc))
    if dry_run:
        _emit([plan.as_dict()], fmt, single=True)
        raise typer.Exit(EXIT_OK)
    prog, update = (None, None) if quiet else terminal_progress(f"fetching {plan.dest.name}")
    try:
        if prog:
            prog.start()
        try:
            res = download(plan, progress=update, on_wait=_note, timeout=timeout)
        finally:
            if prog:
                prog.stop()
    except FetchError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {plan.dest}: {exc}")
    out = {k: res[k] for k in ("path", "sha256", "bytes", "resumed", "verified")}
    if fmt == "json":
        from ..report.safe import dumps
        typer.echo(dumps(out))
    else:
        note = "" if res["verified"] != "none" else " (UNVERIFIED: the source publishes no checksum)"
        typer.echo(f"{out['path']}  {out['bytes']} bytes  sha256 {out['sha256']}"
                   f"{'  resumed' if out['resumed'] else ''}{note}")
    raise typer.Exit(EXIT_OK)


def inspect(
    paths: List[Path] = typer.Argument(..., help="Checkpoint files (.pt TorchScript or state dict, .bin, .safetensors)."),
    fmt: RecordFormat = RecordFormatOpt,
    quiet: bool = QuietOpt,  # accepted like everywhere: inspect prints only its rows, on stdout
):
    """Identify checkpoints by their tensors: the weights_id heads check.

    The same tensors give the same weights_id in every format (OpenAI's TorchScript archive,
    open_clip's safetensors, a converted state dict); one changed tensor gives another.

    Examples:
      aiidetect weights inspect ~/.cache/clip/ViT-L-14.pt
      aiidetect weights inspect model.safetensors --format json
    """
    from ..extras import require
    from ..weights_identity import WeightsFormatError, inspect as ident

    require("clip", "torch", "safetensors")
    rows = []
    bad = False
    for p in paths:
        try:
            info = ident(p)
            # every row has `error`: `-f csv` took its columns from the first row, so a good checkpoint
            # named first left the column, and the reason a later file was refused, out
            rows.append({"path": str(p), **{k: info[k] for k in ("weights_id", "architecture", "tensors", "bytes")},
                         "format": info.get("format"), "error": None})
        except (WeightsFormatError, OSError) as exc:
            bad = True
            rows.append({"path": str(p), "weights_id": None, "architecture": None, "tensors": None, "bytes": None,
                         "format": None, "error": str(exc)})
    # One file or many, -f json is an array of rows, like every command that prints rows (it was an
    # object for one path and an array for two: a script had to test which).
    _emit(rows, fmt)
    raise typer.Exit(2 if bad else EXIT_OK)


# --backbone names an open_clip model everywhere else; the checkpoint file is --backbone-weights.
@renamed_options(backbone="--backbone")
def pack(
    out: Path = typer.Argument(..., help="Bundle to write (a .tar)."),
    backbone: Optional[List[Path]] = typer.Option(None, "--backbone-weights",
                                                  help="Backbone checkpoint file to include (repeatable). Default: "
                                                       "every checkpoint in the CLIP cache folder."),
    head: Optional[List[str]] = typer.Option(None, "--head", help="Head name to include (repeatable). Default: all."),
    no_backbones: bool = typer.Option(False, "--no-backbones", help="Heads only."),
    weights_dir: Optional[List[Path]] = WeightsDirOpt,
    fmt: JsonFormat = SummaryFormatOpt,
    quiet: bool = QuietOpt,  # accepted like everywhere: its only output is the result, on stdout
):
    """Pack backbones and heads into one verified bundle for an air-gapped machine.

    Compare the printed SHA-256 on the other machine: `aiidetect weights install OUT.tar --sha256 HEX`.

    Examples:
      aiidetect weights pack weights-bundle.tar
      aiidetect weights pack heads-only.tar --no-backbones --head univfd
      aiidetect weights pack vit-l.tar --backbone-weights ~/.cache/clip/ViT-L-14.pt --head univfd
    """
    from ..backbone import default_cache_dirs
    from ..bundle import BundleError, cached_backbones, pack as do_pack
    from ..heads import find_heads
    from .common import checked_weights_dirs

    heads = find_heads(checked_weights_dirs(weights_dir))
    if head:
        unknown = sorted(set(head) - {m["name"] for _, m in heads})
        if unknown:
            fail(f"no head named {', '.join(unknown)}")
        heads = [(p, m) for p, m in heads if m["name"] in set(head)]
    files = [] if no_backbones else (list(backbone) if backbone else cached_backbones(default_cache_dirs()))
    try:
        res = do_pack(out, heads, files)
    except (BundleError, OSError) as exc:
        fail(str(exc))
    summary = {"path": res["path"], "sha256": res["sha256"], "bytes": res["bytes"],
               "backbones": [e["path"] for e in res["files"] if e["kind"] == "backbone"],
               "heads": sorted({e["head"] for e in res["files"] if e["kind"] == "head"})}
    if fmt == "json":
        from ..report.safe import dumps
        typer.echo(dumps(summary))
    else:
        typer.echo(f"{summary['path']}  {summary['bytes']} bytes  sha256 {summary['sha256']}")
        typer.echo(f"  backbones: {', '.join(summary['backbones']) or 'none'}")
        typer.echo(f"  heads: {', '.join(summary['heads']) or 'none'}")
    raise typer.Exit(EXIT_OK)


def install(
    bundle: Path = typer.Argument(..., help="Bundle written by `aiidetect weights pack`."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Refuse the bundle unless its SHA-256 is this."),
    force: bool = typer.Option(False, "--force", help="Replace files that exist with other content."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where backbones go (default: where scan looks)."),
    heads_dir: Optional[Path] = typer.Option(None, "--heads-dir",
                                             help="Where heads go (default: $AIIDETECT_WEIGHTS, else "
                                                  "$XDG_DATA_HOME/aiidetect/weights, else "
                                                  "~/.local/share/aiidetect/weights)."),
    fmt: JsonFormat = SummaryFormatOpt,
    quiet: bool = QuietOpt,  # accepted like everywhere: its only output is the result, on stdout
):
    """Install a weights bundle after verifying every file; a tampered bundle is refused (exit 2).

    Examples:
      aiidetect weights install weights-bundle.tar --sha256 3f1a...
    """
    from ..bundle import BundleError, install as do_install
    from ..fetch import clip_cache_dir
    from ..heads import HeadError, new_heads_dir

    try:
        if heads_dir is None:
            heads_dir = new_heads_dir()
        res = do_install(bundle, cache_dir or clip_cache_dir(), heads_dir, expect_sha256=sha256, force=force)
    except (BundleError, OSError, HeadError) as exc:
        fail(f"refused: {exc}")
    if fmt == "json":
        from ..report.safe import dumps
        typer.echo(dumps(res))
    else:
        for p in res["installed"]:
            typer.echo(f"installed {p}")
    raise typer.Exit(EXIT_OK)


def register(apps) -> None:
    apps["weights"].command("fetch")(fetch)
    apps["weights"].command("inspect")(inspect)
    apps["weights"].command("pack")(pack)
    apps["weights"].command("install")(install)
