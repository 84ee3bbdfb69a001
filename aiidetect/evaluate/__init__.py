"""Evaluation: run detectors over labelled data under several conditions
(raw, perturbations, a format-normalising re-encode) and measure them and the
fused verdict the way the literature does.

    result, columns = evaluate(items, detectors, perturbations=parse_all(["jpeg:75"]))
"""
from __future__ import annotations

import datetime as _dt
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

from .core import FUSED, condition_metrics
from .metrics import binary_metrics
from .perturb import Perturbation, parse, parse_all
from .runner import Scored, run


def evaluate(items: Sequence[Any], detectors: Sequence[Any], model: Mapping[str, Any] | None = None,
             perturbations: Sequence[Perturbation] = (), normalize: Perturbation | None = None,
             batch_size: int = 16, progress: Callable[[str, int], None] | None = None,
             run_info: Mapping[str, Any] | None = None,
             protocol: str | None = None, allow_train_overlap: bool = False,
             on_overlap: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (result dict for metrics.json, {condition: per-item columns}).
    Conditions: raw, then normalized:<spec> (when asked), then each perturbation.
    protocol "genimage" | "ufd": each condition also gets the paper's per-subset
    block (evaluate.protocol) under "protocol".

    Items a head was trained on (train_record, matched by the raw files' content) are left out of
    that head's metrics, and out of the fused verdict's, in every condition, as are the items the
    fusion model was calibrated on (out of the fused verdict's); allow_train_overlap
    keeps them. run["train_overlap"] says how many, per head (evaluate.overlap); `on_overlap` gets
    it as soon as the raw condition is scored."""
    pairs = None
    if protocol is not None:
        from ..train.data import protocol_pairs
        from .protocol import PROTOCOLS

        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
        pairs = protocol_pairs(items)
    conds: list[tuple[str, Any]] = [("raw", None)]
    if normalize is not None:
        conds.append((f"normalized:{normalize.name}", normalize))
    conds += [(p.name, p) for p in perturbations]
    blocks, columns = [], {}
    overlap, masks, near_dups = None, {}, []
    for name, tf in conds:
        cb = (lambda k, _n=name: progress(_n, k)) if progress else None
        scored = run(items, detectors, transform=tf, batch_size=batch_size, progress=cb)
        if overlap is None:
            # By the raw files' keys: a perturbed condition scores other bytes of the same images.
            from .overlap import train_overlap

            near: list = []
            overlap, masks = train_overlap(detectors, [s.sha256 for s in scored], exclude=not allow_train_overlap,
                                           model=model, phashes=[s.phash for s in scored], near_out=near)
            near_dups = [{"file": scored[i].path, "head": h, "distance": d} for i, h, d in near]
            if on_overlap is not None:
                on_overlap(overlap)
        block, cols = condition_metrics(scored, detectors, model, name, left_out=masks)
        if pairs is not None:
            from .protocol import protocol_block

            block["protocol"] = protocol_block(scored, cols, detectors, protocol, pairs)
        blocks.append(block)
        columns[name] = cols
    gens = Counter(getattr(i, "generator", "?") for i in items)
    from .. import __version__

    info = {"n_items": len(items), "n_real": sum(1 for i in items if i.label == 0),
            "n_ai": sum(1 for i in items if i.label == 1), "generators": dict(sorted(gens.items())),
            "detectors": [d.name for d in detectors], "version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "perturbations": [p.name for p in perturbations],
            "normalize": normalize.name if normalize else None, "protocol": protocol,
            "train_overlap": overlap or {}}
    info.update(run_info or {})
    # Re-encoded or resized copies of training images, kept in the metrics: listed for the user to act on.
    return {"run": info, "conditions": blocks, "near_duplicates": near_dups}, columns


__all__ = ["evaluate", "run", "Scored", "condition_metrics", "binary_metrics", "parse", "parse_all",
           "Perturbation", "FUSED"]
