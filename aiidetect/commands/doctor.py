"""`aiidetect doctor`: what can run here, and the remedy for what cannot."""
from __future__ import annotations

import sys

import typer

from pathlib import Path
from typing import List, Optional

from .common import (EXIT_FINDINGS, EXIT_OK, BackboneOptions, C2paTrustOpt, JsonFormat, QuietOpt, SummaryFormatOpt,
                     backbone_options)
from .errors import reader_may_leave


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@backbone_options(device=True, weights_dir=True)
def doctor(
    fmt: JsonFormat = SummaryFormatOpt,
    backbone_opts: BackboneOptions = None,
    c2pa_trust: Optional[List[Path]] = C2paTrustOpt,
    quiet: bool = QuietOpt,  # accepted like everywhere else: the report is on stdout, nothing else is printed
):
    """Say what can run on this machine and why not, with the exact remedy.

    Exit 0 when a scan with these backbone options can use a CLIP detector, 1 when it cannot or when the C2PA
    trust list in effect (--c2pa-trust, else $AIIDETECT_C2PA_TRUST) is one a scan would refuse.

    Examples:
      aiidetect doctor
      aiidetect doctor --format json        # fleet checks
      aiidetect doctor --backbone-config tiny-vit --weights-dir ./heads
    """
    from ..doctor import diagnose
    from ..heads import weights_dirs

    spec = backbone_opts.spec()
    rep = diagnose(spec, weights_dirs(backbone_opts.weights_dir or []), device=backbone_opts.device,
                   c2pa_trust=c2pa_trust)
    code = EXIT_OK if rep["clip_ready"] and not rep["c2pa_trust_list"]["error"] else EXIT_FINDINGS
    with reader_may_leave(code):
        if fmt == "json":
            from ..report.safe import dumps
            typer.echo(dumps(rep, indent=2))
        else:
            _table(rep)
        sys.stdout.flush()
    raise typer.Exit(code)


def _table(rep) -> None:
    from rich.console import Console
    from rich.markup import escape as _escape

    from ..report.safe import printable

    def escape(x) -> str:
        # Folder names, head names and manifests are the user's or a download's: "[/]" in one was a
        # MarkupError instead of the report, "[bold]" was eaten; control characters are shown, not obeyed.
        return _escape(printable(str(x)))

    con = Console(soft_wrap=True, highlight=False)
    ok = "[green]yes[/]"
    no = "[red]no[/]"
    con.print(f"[bold]aiidetect {rep['aiidetect']}[/] on Python {rep['python']}")
    con.print(f"CLIP detectors usable by a default scan: {ok if rep['clip_ready'] else no}")
    con.print("\n[bold]packages[/]")
    for name, p in rep["packages"].items():
        extra = escape(f' (pip install "aiidetect[{p["extra"]}]")') if p["extra"] else ""
        con.print(f"  {name}: {p['version'] or 'not installed'}{extra if not p['version'] else ''}")
    t = rep["torch"]
    con.print("\n[bold]torch[/]")
    if t.get("error"):
        con.print(f"  installed but does not load: {escape(t['error'])}")
    elif t.get("installed"):
        con.print(f"  {t['version']}, CUDA build {t['cuda_build'] or 'none'}, CUDA available "
                  f"{ok if t['cuda_available'] else no} {escape(', '.join(t['cuda_devices']))}; {t['threads']} threads")
    else:
        con.print(f"  not installed: {escape(t['remedy'])}")
    c = rep["cpu"]
    con.print(f"\n[bold]CPU[/]  {escape(c['model'])}, {c['cores']} logical cores; avx2 {c['avx2']}, avx512_bf16 "
              f"{c['avx512_bf16']}, amx_bf16 {c['amx_bf16']} -> native bf16 {ok if c['native_bf16'] else no}; "
              f"int8 VNNI {ok if c['int8_vnni'] else no} -> int8 exports with {c['int8_weight_bits']}-bit weights")
    o = rep["onnxruntime"]
    con.print("\n[bold]ONNX Runtime[/]  " + (f"{o.get('version')}, providers {', '.join(o.get('providers') or [])}"
                                             if o.get("installed") and not o.get("error")
                                             else escape(o.get("error") or f"not installed: {o.get('remedy')}")))
    # One line each, `name version` pairs: what an operator compares between two machines (docs/scale.md).
    for title, key in (("decoders", "decoders"), ("metadata parsers", "metadata_parsers")):
        con.print(f"\n[bold]{title}[/]  " + escape("; ".join(f"{k} {v or 'none'}" for k, v in rep[key].items())))
    trust = rep["c2pa_trust_list"]
    if trust["error"]:
        said = f"{no}, unusable ({trust['source']}): {escape(trust['error'])}"
    elif trust["sha256"]:
        from ..provenance.trust import anchors_text

        said = (f"{anchors_text(trust['anchors'])}, sha256 {trust['sha256']} ({trust['source']}: "
                f"{escape(', '.join(trust['files']))})")
    else:
        said = ("none: signers are never Trusted (give --c2pa-trust PEMFILE or set $AIIDETECT_C2PA_TRUST; "
                "docs/provenance.md)")
    con.print(f"\n[bold]C2PA trust list[/]  {said}")
    con.print(f"\n[bold]backbone[/]  {escape(rep['backbone'])}")
    if rep["backbone_built"]:
        con.print(f"  built: fingerprint {rep['backbone_built']['fingerprint']}, "
                  f"weights_id {rep['backbone_built']['weights_id']}")
    for f in rep["backbone_files"]:
        con.print(f"  file {escape(f['path'])} ({_mb(f['bytes'])}): {escape(f.get('weights_id') or f.get('error') or '')}"
                  f"{'  ' + escape(f['architecture']) if f.get('architecture') else ''}")
    if not rep["backbone_files"]:
        con.print("  no checkpoint files in the CLIP cache folder")
    con.print("\n[bold]heads[/]")
    for h in rep["heads"]:
        con.print(f"  {escape(h['name'])} ({escape(h['detector'])}): needs {escape(h['needs_backbone'])} -> "
                  f"{ok if h['ready'] else no}  [dim]{escape(h['path'])}[/]")
    con.print("\n[bold]detectors[/]")
    for d in rep["detectors"]:
        con.print(f"  {escape(d['name'])}: {escape(d['status'])}" + (f" - {escape(d['reason'])}" if d["reason"] else ""))
    con.print("\n[bold]caches and paths[/]")
    for name, cch in rep["caches"].items():
        if cch["path"] is None:
            con.print(f"  {name}: off - {escape(cch['note'])}")
            continue
        con.print(f"  {name}: {escape(cch['path'])} ({_mb(cch['bytes']) if cch['exists'] else 'absent'}), writable "
                  f"{ok if cch['writable'] else no}")
    if rep["remedies"]:
        con.print("\n[bold]to do[/]")
        for r in rep["remedies"]:
            con.print(f"  - {escape(r)}")


def register(apps) -> None:
    apps["root"].command("doctor")(doctor)
