"""The lowest layer under the encoder: importing open_clip, where CLIP
checkpoints are cached, and an encoder's identity.

Kept apart from ``backbone`` because the registry, the fetcher and the weights
identity code need these and are themselves needed by ``backbone``; living
here, nothing imports in a circle. Imports nothing from aiidetect.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------
# torchvision on a CPU-only torch
# --------------------------------------------------------------------------
_TV_SHIM_LIB = None  # keeps the operator schemas registered for the process lifetime


def import_open_clip():
    """Import open_clip, working around a CUDA-only torchvision wheel.

    PyPI's torchvision wheels link their C++ ops against CUDA torch. Next to the
    CPU torch build, loading those ops fails and ``import torchvision`` then dies
    registering a fake kernel for ``torchvision::nms`` (pytorch/vision#9085).
    open_clip only needs torchvision's Python transforms, so when (and only
    when) that import fails we declare the two operator schemas torchvision
    expects and import again. The ops themselves stay unusable; nothing in
    aiidetect calls them. With a matching CUDA torch the first import works
    and this path is never taken. See docs/install.md.
    """
    global _TV_SHIM_LIB
    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        if _TV_SHIM_LIB is None:
            lib = torch.library.Library("torchvision", "FRAGMENT")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TV_SHIM_LIB = lib
        import torchvision  # noqa: F401
    _quiet_open_clip()
    import open_clip

    return open_clip



class _OpenClipChatter:
    """Drops what open_clip logs below ERROR. It logs through the root logger itself
    (`logging.warning`: a warning for every random init, which tests and demos make on purpose),
    so no logger of its own can be quieted. Raising the root logger's level instead silenced every
    warning of a program that embeds aiidetect, from the moment a CLIP detector was built."""

    def __init__(self, package_dir: str):
        self.package_dir = package_dir

    def filter(self, record) -> bool:
        return record.levelno >= 40 or not record.pathname.startswith(self.package_dir)


def _quiet_open_clip() -> None:
    import importlib.util
    import logging

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return
    root = logging.getLogger()
    if not any(isinstance(f, _OpenClipChatter) for f in root.filters):
        # A logger's filters see only what is logged on it, so this one sees open_clip's
        # root-logged records and nothing the embedding program logs through its own loggers.
        root.addFilter(_OpenClipChatter(os.path.join(list(spec.submodule_search_locations)[0], "")))


def default_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("AIIDETECT_CLIP_CACHE"):
        dirs.append(Path(os.environ["AIIDETECT_CLIP_CACHE"]))
    from .userdirs import clip_download_dir

    own = clip_download_dir()  # None without a home folder: never a relative "~" folder
    if own:
        dirs.append(own)
    return dirs


def fingerprint(model_cfg: dict[str, Any], weights_id: str) -> str:
    """Identity of an encoder: its architecture and its weights. Heads store it and
    refuse to load against anything else."""
    vision = {"embed_dim": model_cfg.get("embed_dim"), "vision_cfg": model_cfg.get("vision_cfg"),
              "quick_gelu": bool(model_cfg.get("quick_gelu", False))}
    blob = json.dumps({"arch": vision, "weights": weights_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
