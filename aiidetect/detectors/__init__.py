"""Detector registry: family name -> factory. One function creates them all,
like open_clip's create_model_and_transforms.

A factory takes (RunContext) and returns a list of Detector instances (a family
with several heads returns one per head) or raises DetectorUnavailable.
Families register here; the CLI never names a detector class.
"""
from __future__ import annotations

import importlib
from typing import Callable

from .base import Detector, DetectorUnavailable, FeatureRequest, RunContext, UnavailableDetector, feature_key

# family -> "module:function"; imported lazily so `--detectors metadata` never imports torch.
_FACTORIES: dict[str, str] = {
    "metadata": "aiidetect.detectors.metadata:create",
    "linear": "aiidetect.detectors.linear:create",
    "mpft": "aiidetect.detectors.mpft:create",
    "flow": "aiidetect.detectors.flow:create",
    # --runtime onnx: serves the pixel families above from an `aiidetect export onnx` folder
    "onnx": "aiidetect.detectors.onnx:create",
}
DEFAULT_DETECTORS = ("metadata", "linear", "mpft", "flow")


def register(family: str, target: str | Callable) -> None:
    _FACTORIES[family] = target  # type: ignore[assignment]


def list_families() -> list[str]:
    return list(_FACTORIES)


def _factory(family: str) -> Callable:
    target = _FACTORIES[family]
    if callable(target):
        return target
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def create_detectors(families, ctx: RunContext) -> list[Detector]:
    """Build the selected detector families. Families that cannot run here
    become UnavailableDetector rows with the reason, never an exception."""
    out: list[Detector] = []
    for fam in families:
        if fam not in _FACTORIES:
            raise KeyError(f"unknown detector {fam!r}; known: {', '.join(_FACTORIES)}")
        try:
            made = _factory(fam)(ctx)
        except DetectorUnavailable as exc:
            made = [UnavailableDetector(fam, str(exc))]
        except ImportError as exc:
            made = [UnavailableDetector(fam, f"not installed: {exc}")]
        out.extend(made)
    return out


__all__ = ["Detector", "DetectorUnavailable", "FeatureRequest", "RunContext", "UnavailableDetector",
           "create_detectors", "register", "list_families", "DEFAULT_DETECTORS", "feature_key"]
