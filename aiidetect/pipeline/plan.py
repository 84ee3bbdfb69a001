"""What a scan will do, worked out once from its detectors before any file is read.

Which encoder passes run (one per encoder x preprocessing, shared by every head
that asks for it), which preprocessing specs the decode workers produce, which
detectors run in the decode workers and which with the model, and what each detector's cached results depend on.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from ..decode import DecodeLimits
from ..detectors.base import Detector, FeatureRequest, UnavailableDetector, feature_key
from ..preprocess import spec_key


@dataclass
class FeatureGroup:
    """One encoder pass shared by every request with the same encoder and preprocessing."""

    key: str
    request: FeatureRequest
    layers: set[int]


@dataclass
class Plan:
    detectors: list[Detector]
    groups: dict[str, FeatureGroup] = field(default_factory=dict)
    det_keys: dict[str, list[str]] = field(default_factory=dict)   # detector name -> its group keys
    specs: list[Mapping[str, Any]] = field(default_factory=list)
    draft: int | None = None   # JPEG draft side; None in every scan (build), still in the run's settings and identity
    keep_image: bool = False
    worker_dets: list[Detector] = field(default_factory=list)
    main_dets: list[Detector] = field(default_factory=list)
    # A per-file detector that reads full-resolution pixels (the watermark check) is handed the
    # image the worker just decoded instead of decoding the file again; dropped right after.
    image_for_file_dets: bool = False
    # Whether a detector run with the model reads the raw bytes: otherwise they are dropped as
    # soon as the decode workers are done with the file, not held until its batch ends.
    bytes_for_model: bool = False

    @classmethod
    def build(cls, detectors: Sequence[Detector]) -> "Plan":
        plan = cls(list(detectors))
        for d in plan.detectors:
            keys = []
            for req in d.feature_requests():
                k = feature_key(req)
                g = plan.groups.setdefault(k, FeatureGroup(k, req, set()))
                g.layers.update(req.layers)
                keys.append(k)
            plan.det_keys[d.name] = keys
        specs = {spec_key(g.request.preprocess): g.request.preprocess for g in plan.groups.values()}
        plan.specs = list(specs.values())
        # No JPEG draft (DCT downscale) for the heads: drafting only when every head of the run resized made a
        # resizing head's score depend on which other heads were installed, and heads are trained and calibrated
        # on full-size decodes (feature_cache). What it saved is small beside a ViT (docs/performance.md).
        plan.draft = None
        plan.keep_image = any(getattr(d, "needs_image", False) for d in plan.detectors)
        # Per-file detectors (metadata: parsers, watermark) run in the decode workers, beside the model.
        plan.worker_dets = [d for d in plan.detectors if d.per_file and not plan.det_keys[d.name]]
        plan.main_dets = [d for d in plan.detectors if d not in plan.worker_dets]
        plan.image_for_file_dets = any(getattr(d, "reads_image", False) for d in plan.worker_dets)
        plan.bytes_for_model = any(getattr(d, "reads_bytes", False) for d in plan.main_dets)
        return plan

    def model_on_cpu(self) -> bool:
        """Whether an encoder pass of this plan runs on this machine's CPU."""
        return any(str(g.request.device).split(":")[0] == "cpu" for g in self.groups.values())

    def decode_schedule(self, workers: int, env: Mapping[str, str] | None = None) -> str:
        """How the decode workers share the machine with the model: "overlap" (the
        next batch decodes while the model runs), "turns" (they wait while it runs)
        or "adaptive" (pixels.TurnPolicy times both on the scan and keeps the faster).

        Overlap when the model leaves cores to spare: on a GPU, or torch told to use
        fewer threads than the cores minus the workers. A model on the CPU using
        every core (the default on a CPU-only machine) is adaptive: beside it the
        workers preempt its threads, which cost ViT-B-16 bf16 on 2 cores more than
        taking turns, while ViT-L-14 lost nothing from them (docs/performance.md).
        AIIDETECT_DECODE_SCHEDULE=overlap|turns|adaptive overrides the rule."""
        env = os.environ if env is None else env
        forced = env.get("AIIDETECT_DECODE_SCHEDULE", "").strip().lower()
        if not self.groups:
            return "overlap"  # no model step to take turns with
        if forced in ("overlap", "turns", "adaptive"):
            return forced
        if not self.model_on_cpu():
            return "overlap"
        cores = usable_cores()
        omp = env.get("OMP_NUM_THREADS", "")
        threads = int(omp) if omp.isdigit() and int(omp) > 0 else _torch_threads() or cores
        return "adaptive" if threads + max(1, int(workers)) > cores else "overlap"

    def decode_half(self) -> "Plan":
        """This plan's decode side alone: the same pixels and per-file detectors, no model."""
        return Plan(list(self.worker_dets), {}, {d.name: [] for d in self.worker_dets}, list(self.specs),
                    self.draft, self.keep_image, list(self.worker_dets), [], self.image_for_file_dets)

    def identities(self, limits: DecodeLimits) -> dict[str, str]:
        """detector name -> cache identity key; empty (no caching) when any
        working detector cannot say what its results depend on."""
        out = self.result_identities(limits)
        if any(d.name not in out and not isinstance(d, UnavailableDetector) for d in self.detectors):
            return {}   # an UnavailableDetector says the same thing for every file; recomputed for free
        return out

    def result_identities(self, limits: DecodeLimits) -> dict[str, str]:
        """detector name -> the key of everything its results depend on besides the file's bytes (its
        cache_identity, this run's decode settings, the aiidetect source and decoders: result_cache.identity_key),
        for each detector that can say so. The result cache is keyed by it, and each record carries it
        (`identity` in a detector's entry, docs/schema.md)."""
        from ..result_cache import identity_key

        run = {"draft": self.draft, "keep_image": self.keep_image, "limits": asdict(limits)}
        out = {}
        for d in self.detectors:
            ident = d.cache_identity()
            if ident is not None:
                out[d.name] = identity_key(ident, run)
        return out


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _torch_threads() -> int | None:
    # Only when torch is already loaded: importing it here would cost seconds for nothing.
    torch = sys.modules.get("torch")
    try:
        return int(torch.get_num_threads()) if torch is not None else None
    except Exception:  # noqa: BLE001 - a half-imported torch must not break planning
        return None
