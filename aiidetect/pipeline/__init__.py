"""discover -> decode (worker pool) -> batch -> encoder features -> detectors -> fusion -> records.

`plan` works out once what a scan does (encoder passes, preprocessing,
which detectors run in the decode workers, cache identities);
`stages` holds the steps a file goes through; `loop` runs them over many
files in order (`Pipeline.run`), or in halves for a distributed engine
(`decode_many` / `decoder_half` on CPU workers, `complete` with the model).
"""
from __future__ import annotations

from .loop import Pipeline, run_detectors
from .plan import FeatureGroup, Plan
from .stages import ScanStats

__all__ = ["FeatureGroup", "Pipeline", "Plan", "ScanStats", "run_detectors"]
