"""The check a scan makes when it loads a head, without scanning: `weights verify`, `pack` and `install`
all refuse what a scan would refuse, through this one function. Its own module: it reads fusion models
(fusion.py) as well as heads (heads.py), and fusion.py already reads heads."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .heads import HeadError, load_head, pin_problem, read_manifest


def load_problem(head_dir: str | Path, manifest: dict[str, Any] | None = None) -> str | None:
    """Why a scan could not load this head though its checksums pass (tensors holding NaN or infinities,
    a tensors file safetensors cannot read, a bad preprocessing block), or None. Checked by `weights
    verify`, `pack` and `install` alike. A fusion model is checked as scan checks it (an infinite bias, NaN,
    an inverted band: scan leaves such a model out, and verify said ok). A head in a shipped folder that
    is not the shipped one is refused (heads.pin_problem), as scan refuses it. The rest needs torch: without it
    no CLIP head runs here, and None."""
    import importlib.util

    m = read_manifest(head_dir) if manifest is None else manifest
    if (pinned := pin_problem(head_dir, m)) is not None:  # with or without torch
        return pinned
    if m.get("detector") == "fusion":
        from .fusion import check_model

        try:
            check_model(m)
        except ValueError as exc:
            return f"fusion model {head_dir}: {exc}"
        return None
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        load_head(head_dir, verify=False, manifest=manifest)
    except HeadError as exc:
        return str(exc)
    return None
