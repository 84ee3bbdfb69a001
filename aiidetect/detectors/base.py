"""The detector interface. A detector turns decoded samples (and, if it asks
for them, backbone features) into one DetectorResult per sample.

Pixel detectors declare FeatureRequests; the pipeline merges identical
requests so the backbone runs once per image and preprocessing, however many
heads read its output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..records import DetectorResult

if TYPE_CHECKING:  # pragma: no cover
    from ..backbone import Backbone, BackboneSpec
    from ..decode import Sample


class DetectorUnavailable(RuntimeError):
    """Raised while preparing a detector that cannot run here (missing weights,
    no head trained, wrong backbone). The message goes into every record."""


@dataclass
class FeatureRequest:
    """"Give me these encoder outputs for this preprocessing."

    encoder_key identifies the encoder (the frozen backbone's fingerprint, or a
    fine-tuned variant's own key); encode maps a float tensor batch (B,3,S,S) to
    a dict of tensors, and must accept ``layers=`` like Backbone.encode.
    """

    encoder_key: str
    preprocess: dict[str, Any]
    encode: Callable[..., dict[str, Any]]
    layers: tuple[int, ...] = ()
    device: str = "cpu"
    dtype: str = "float32"


@dataclass
class RunContext:
    """Options every detector may need; detectors build heavy things lazily
    through it so a backbone is created once per run."""

    backbone_spec: "BackboneSpec | None" = None
    device: str = "auto"
    dtype: str = "float32"          # or "auto" (backbone.resolve_dtype)
    weights_dirs: Sequence[Path] = ()
    runtime: str = "torch"          # torch | onnx
    onnx_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # With runtime "auto": what `aiidetect optimize` decided for this setup (optimize.FastPath), or None.
    fast_path: Any = None
    # What preparing the detectors found for the user to be told, once each (find_heads(..., notes=...)).
    notes: list[str] = field(default_factory=list)
    _backbone: Any = None
    _backbone_error: str | None = None

    @property
    def built_backbone(self) -> "Backbone | None":
        """The backbone if some detector built it (for reporting), else None."""
        return self._backbone

    def backbone(self) -> "Backbone":
        """The run's frozen backbone, built on first use. Raises
        DetectorUnavailable (with the remedy) when it cannot be built."""
        if self._backbone is not None:
            return self._backbone
        if self._backbone_error is not None:
            raise DetectorUnavailable(self._backbone_error)
        from ..backbone import (BackboneSpec, BackboneUnavailable, create_backbone, precheck, resolve_device,
                                resolve_dtype)

        try:
            spec = self.backbone_spec or BackboneSpec()
            precheck(spec)  # before torch is imported
            device = resolve_device(self.device)
            self._backbone = create_backbone(spec, device=device, dtype=resolve_dtype(self.dtype, device))
        except BackboneUnavailable as exc:
            self._backbone_error = str(exc)
            raise DetectorUnavailable(self._backbone_error) from exc
        return self._backbone


class Detector:
    """Base class. Subclasses set `family`, and `name` per instance (a family
    with several heads yields one detector per head, e.g. ``linear:univfd``)."""

    family: str = ""
    needs_pixels: bool = True
    # True when predict needs one file's sample and nothing else (no features,
    # no batch): the pipeline then runs it in the decode workers, beside the model.
    per_file: bool = False
    # True when predict reads the file's raw bytes (Sample.data). The scan drops a file's bytes
    # when the decode workers are done with it unless a detector run with the model reads them.
    reads_bytes: bool = False

    def __init__(self, name: str | None = None):
        self.name = name or self.family

    def feature_requests(self) -> list[FeatureRequest]:
        return []

    def predict(self, samples: Sequence["Sample"], features: Sequence[dict[str, Any]]) -> list[DetectorResult]:
        """features[i] maps ``"<encoder_key>|<preprocess key>"`` -> {output name: 1-D numpy array}
        for sample i. Must return exactly len(samples) results; raise nothing a
        single bad sample could cause (return DetectorResult.failed for it)."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """The one-time work of the first predict (lazy imports of parsers), done ahead: a per-file detector
        runs inside a file's read, and a read deadline (file_timeout) calls this before its first clock
        starts, so that the first file does not pay for it (Pipeline.warm_up)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family}

    def cache_identity(self) -> dict[str, Any] | None:
        """Everything this detector's results depend on besides the file's
        bytes (head checksums, backbone, device, dtype, runtime), or None when
        its results must not be reused across runs (result_cache.py)."""
        return None


class UnavailableDetector(Detector):
    """Stands in for a detector that could not be prepared: every record says
    why, and the scan goes on with the evidence it has."""

    needs_pixels = False

    def __init__(self, name: str, reason: str):
        super().__init__(name)
        self.family = name.split(":")[0]
        self.reason = reason

    def predict(self, samples, features):
        return [DetectorResult.unavailable(self.reason) for _ in samples]

    def describe(self):
        return {"name": self.name, "family": self.family, "status": "unavailable", "reason": self.reason}


class HeadDetector(Detector):
    """A detector serving one trained head (``self.head``) on the run's frozen
    backbone (``self.backbone``): its results are reusable across runs as long
    as the head's manifest, the backbone, device, dtype and torch are the same."""

    head: Any = None
    backbone: Any = None

    def cache_identity(self) -> dict[str, Any]:
        return head_identity(self, self.head, self.backbone)


def head_identity(detector: Detector, head, backbone) -> dict[str, Any]:
    """cache_identity of a torch head on the run's frozen backbone."""
    import hashlib
    import json

    import torch

    manifest = json.dumps(head.manifest, sort_keys=True, default=str)
    return {"family": detector.family, "name": detector.name, "runtime": "torch",
            "head": hashlib.sha256(manifest.encode()).hexdigest(), "backbone": backbone.fingerprint,
            "device": str(backbone.device), "dtype": str(backbone.dtype), "torch": torch.__version__}


def feature_key(req: FeatureRequest) -> str:
    from ..preprocess import spec_key

    return f"{req.encoder_key}|{spec_key(req.preprocess)}"
