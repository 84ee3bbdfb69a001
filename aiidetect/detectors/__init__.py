"""The detector registry: one small spec per family, as data. One function
creates them all, like open_clip's create_model_and_transforms.

Every target is a ``"module:function"`` string, imported only when used, so
``aiidetect --help``, ``aiidetect meta`` and ``scan -d metadata`` never import
torch. A family lives in its own package (``aiidetect/<family>/``) and is
added here with one `Family` entry; docs/families.md says what each field
points at.

A ``create`` target takes a RunContext and returns a list of Detector
instances (a family with several heads returns one per head) or raises
DetectorUnavailable.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from .base import Detector, DetectorUnavailable, FeatureRequest, RunContext, UnavailableDetector, feature_key


@dataclass(frozen=True)
class Family:
    """What the rest of aiidetect needs to know about one detector family."""

    name: str
    # (RunContext) -> list[Detector]; a callable is accepted for families registered at run time (tests, plugins).
    create: "str | Callable[[RunContext], list[Detector]]"
    # (weights.Head, backbone) -> list[onnx_sidecar.HeadExport]: how `aiidetect export onnx` puts its heads in a graph.
    exports: str | None = None
    # (meta, outputs, *, dtype=None) -> list[DetectorResult]: graph outputs -> results; the torch detector uses it too.
    results: str | None = None
    # Modules with ``register(apps)`` adding the family's commands (train, explain).
    cli: tuple[str, ...] = ()
    # Run when --detectors is not given.
    default: bool = True
    # A value of --detectors. False for the ONNX runtime's family, which `-d onnx` reached as a back door
    # (ONNX heads under --runtime torch, or nothing at all under --runtime onnx).
    selectable: bool = True


_FAMILIES: dict[str, Family] = {}


def register(family: "str | Family", target: "str | Callable | None" = None) -> None:
    """Add a family: a Family spec, or a name and its create target
    (``register("mine", "mypkg.detector:create")``)."""
    spec = family if isinstance(family, Family) else Family(name=family, create=target)  # type: ignore[arg-type]
    _FAMILIES[spec.name] = spec


for _spec in (
    Family("metadata", create="aiidetect.metadata.detector:create"),
    Family("linear", create="aiidetect.linear.detector:create", exports="aiidetect.linear.onnx:exports",
           results="aiidetect.linear.onnx:results", cli=("aiidetect.linear.cli",)),
    Family("mpft", create="aiidetect.mpft.detector:create", exports="aiidetect.mpft.onnx:exports",
           results="aiidetect.mpft.onnx:results", cli=("aiidetect.mpft.cli", "aiidetect.mpft.explain_cli")),
    Family("flow", create="aiidetect.flow.detector:create", exports="aiidetect.flow.onnx:exports",
           results="aiidetect.flow.onnx:results", cli=("aiidetect.flow.cli",)),
    # --runtime onnx: a runtime, not a family. It serves every family with an ONNX mapping from an
    # `aiidetect export onnx` folder, so it is never a default.
    Family("onnx", create="aiidetect.detectors.onnx:create", default=False, selectable=False),
):
    register(_spec)

DEFAULT_DETECTORS = tuple(f.name for f in _FAMILIES.values() if f.default)


def list_families() -> list[str]:
    return list(_FAMILIES)


def selectable_families() -> list[str]:
    """The families --detectors takes (the ONNX runtime's is chosen with --runtime onnx)."""
    return [f.name for f in _FAMILIES.values() if f.selectable]


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(_FAMILIES)}") from None


def onnx_families() -> list[str]:
    """Families whose heads can be exported to ONNX and served by the ONNX runtime."""
    return [f.name for f in _FAMILIES.values() if f.exports and f.results]



def cli_modules() -> list[str]:
    """Every family's command modules, in registry order."""
    return [m for f in _FAMILIES.values() for m in f.cli]


def resolve(target: "str | Callable") -> Callable:
    """``"module:function"`` -> the function (imported now); a callable is returned as is."""
    if callable(target):
        return target
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def family_hook(name: str, hook: str) -> Callable[..., Any]:
    """One of a family's targets (``"create"``, ``"exports"``, ``"results"``), imported.
    KeyError when the family is unknown or has no such hook."""
    target = getattr(get_family(name), hook)
    if target is None:
        raise KeyError(f"detector family {name!r} has no {hook!r}")
    return resolve(target)


def create_detectors(families, ctx: RunContext) -> list[Detector]:
    """Build the selected detector families. Families that cannot run here
    become UnavailableDetector rows with the reason, never an exception."""
    out: list[Detector] = []
    for fam in families:
        spec = get_family(fam)
        try:
            made = resolve(spec.create)(ctx)
        except DetectorUnavailable as exc:
            made = list(getattr(exc, "rows", None) or [UnavailableDetector(fam, str(exc))])
        except ImportError as exc:
            made = [UnavailableDetector(fam, f"not installed: {exc}")]
        out.extend(made)
    return out


__all__ = ["Detector", "DetectorUnavailable", "FeatureRequest", "Family", "RunContext", "UnavailableDetector",
           "cli_modules", "create_detectors", "family_hook", "get_family", "onnx_families", "selectable_families",
           "register", "list_families", "resolve", "DEFAULT_DETECTORS", "feature_key"]
