"""`aiidetect weights list|verify`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .common import EXIT_ERROR, EXIT_OK, JsonFormat, WeightsDirOpt


def _rows(dirs):
    from ..weights import find_heads

    return find_heads(dirs)


def list_heads(weights_dir: Optional[List[Path]] = WeightsDirOpt,
               fmt: JsonFormat = typer.Option("table", "--format", "-f", help="How to print the list.")):
    """List trained heads with their detector, backbone, source and licence."""
    from ..weights import weights_dirs

    dirs = weights_dirs(weights_dir or [])
    rows = []
    for path, m in _rows(dirs):
        b = m.get("backbone", {})
        rows.append({"name": m["name"], "detector": m["detector"], "version": m.get("version"),
                     "backbone": b.get("name") or f"{b.get('model')}/{b.get('pretrained')}",
                     "fingerprint": b.get("fingerprint"), "labels": m.get("labels"),
                     "source": (m.get("source") or {}).get("repository") if isinstance(m.get("source"), dict) else m.get("source"),
                     "license": (m.get("license") or {}).get("spdx") if isinstance(m.get("license"), dict) else m.get("license"),
                     "path": str(path)})
    if fmt == "json":
        typer.echo(json.dumps({"weights_dirs": [str(d) for d in dirs], "heads": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="heads in " + ", ".join(str(d) for d in dirs), header_style="bold")
    for col in ("name", "detector", "backbone", "source", "license", "path"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*(str(r[c] or "") for c in ("name", "detector", "backbone", "source", "license", "path")))
    Console().print(t)
    if not rows:
        Console(stderr=True).print("no heads found; train one with `aiidetect train linear|mpft|flow`")


def verify(weights_dir: Optional[List[Path]] = WeightsDirOpt,
           backbone: Optional[str] = typer.Option(None, "--backbone"),
           pretrained: Optional[str] = typer.Option(None, "--pretrained"),
           backbone_config: Optional[str] = typer.Option(None, "--backbone-config"),
           backbone_weights: Optional[str] = typer.Option(None, "--backbone-weights"),
           check_backbone: bool = typer.Option(False, "--check-backbone",
                                               help="Also build the backbone and check every head's fingerprint against it.")):
    """Check every head's files against its manifest checksums (and, optionally, its backbone)."""
    from rich.console import Console

    from ..weights import HeadMismatch, verify_files, weights_dirs

    con = Console()
    bb = None
    if check_backbone:
        from ..backbone import BackboneUnavailable, create_backbone
        from .common import backbone_spec

        try:
            bb = create_backbone(backbone_spec(backbone, pretrained, backbone_config, backbone_weights))
        except BackboneUnavailable as exc:
            con.print(f"[yellow]backbone unavailable[/]: {exc}")
    bad = 0
    for path, m in _rows(weights_dirs(weights_dir or [])):
        problems = verify_files(path, m)
        if bb is not None:
            from ..weights import Head

            try:
                Head(path, m).check_backbone(bb.fingerprint, bb.spec.describe())
            except HeadMismatch as exc:
                problems.append(str(exc))
        if problems:
            bad += 1
            con.print(f"[red]FAIL[/] {m['name']} ({path}): " + "; ".join(problems), highlight=False)
        else:
            con.print(f"[green]ok[/]   {m['name']} ({path})", highlight=False)
    raise typer.Exit(EXIT_ERROR if bad else EXIT_OK)


def register(apps) -> None:
    apps["weights"].command("list")(list_heads)
    apps["weights"].command("verify")(verify)
