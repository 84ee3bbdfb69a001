"""Detector outputs + provenance evidence -> one p_ai, a verdict and reasons.

Contract used by the pipeline (keep the signature): ``fuse(results, model=None)``
returns a FusionOutcome. `results` maps detector name -> DetectorResult.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .records import DetectorResult

# Default uncertain band on p_ai; calibrated values come from the fusion model.
DEFAULT_AI_THRESHOLD = 0.9
DEFAULT_REAL_THRESHOLD = 0.1


@dataclass
class FusionOutcome:
    p_ai: float | None
    verdict: str
    reasons: list[str] = field(default_factory=list)


def _logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


def fuse(results: Mapping[str, DetectorResult], model: Mapping[str, Any] | None = None) -> FusionOutcome:
    """Minimal rule: sum detector logits (each detector's p_ai is already
    calibrated) and evidence log-likelihood ratios; no opinion -> uncertain."""
    total, n, reasons = 0.0, 0, []
    for name, r in results.items():
        if r.status != "ok":
            continue
        for e in r.evidence:
            if e.llr:
                total += e.llr
                n += 1
                reasons.append(f"{name}: {e.detail}")
        if r.p_ai is not None and not r.evidence:
            total += _logit(r.p_ai)
            n += 1
            reasons.append(f"{name}: p_ai={r.p_ai:.2f}")
    if n == 0:
        return FusionOutcome(None, "uncertain", ["no detector had an opinion"])
    p = 1 / (1 + math.exp(-max(min(total, 50), -50)))
    hi = (model or {}).get("ai_threshold", DEFAULT_AI_THRESHOLD)
    lo = (model or {}).get("real_threshold", DEFAULT_REAL_THRESHOLD)
    verdict = "ai-generated" if p >= hi else "likely-real" if p <= lo else "uncertain"
    return FusionOutcome(p, verdict, reasons)
