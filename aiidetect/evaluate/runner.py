"""Run detectors over labelled items, optionally through a perturbation.

Runs the scan pipeline itself (pipeline.Pipeline), with a decoder that
perturbs each image when a transform is given. Perturbations act on the decoded image before any
preprocessing, so every head sees the same perturbed pixels, and the metadata
detector sees the perturbed image's bytes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..records import DetectorResult


@dataclass
class Scored:
    """One labelled item after every detector has looked at it."""

    path: str
    label: int
    generator: str
    results: dict[str, DetectorResult] = field(default_factory=dict)
    error: str | None = None       # decode failure: excluded from metrics, counted
    subset: str = ""               # benchmark subset / real pool (protocol metrics)


def _decode(path: str, index: int, specs, transform) -> Any:
    from ..decode import DecodeFailure, Sample, decode_bytes, decode_path, read_bytes, sniff_format
    from ..preprocess import apply, spec_key
    from ..records import Record

    if transform is None:
        return decode_path(path, index=index, preprocess_specs=specs, keep_image=False)
    rec = Record(file=path)
    s = Sample(index=index, path=path, record=rec)
    try:
        img, _ = decode_bytes(read_bytes(path))
        img, data, fmt = transform(img, seed_key=path)
        s.data = data
        rec.size_bytes = len(data)
        rec.sha256 = hashlib.sha256(data).hexdigest()
        rec.format = fmt or sniff_format(data)
        rec.width, rec.height = img.size
        s.info = {"format": rec.format, "width": img.size[0], "height": img.size[1], "mode": "RGB",
                  "perturbation": getattr(transform, "name", "custom")}
        for spec in specs:
            s.pixels[spec_key(spec)] = apply(img, spec)
    except DecodeFailure as exc:
        rec.set_error(exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001
        rec.set_error("internal-error", f"{type(exc).__name__}: {exc}")
    return s


def run(items: Sequence[Any], detectors: Sequence[Any], transform=None, batch_size: int = 16,
        progress: Callable[[int], None] | None = None, workers: int = 2) -> list[Scored]:
    """items: train.data.Item-like (path, label, generator). Never raises for
    a bad file or a failing detector: they become statuses.

    Uses the scan pipeline (so "raw" numbers are what `aiidetect scan` would
    produce), with its decode step swapped for a perturbing one when a
    transform is given."""
    from ..discover import Candidate
    from ..pipeline import Pipeline

    decoder = None if transform is None else (lambda path, index, specs: _decode(path, index, specs, transform))
    pipe = Pipeline(detectors, None, batch_size=batch_size, workers=workers, decoder=decoder)
    cb = (lambda rec: progress(1)) if progress else None
    recs = list(pipe.run([Candidate(it.path, explicit=True) for it in items], on_record=cb))
    out = []
    for it, rec in zip(items, recs):
        s = Scored(it.path, int(it.label), it.generator, subset=getattr(it, "subset", "") or "")
        if rec.error is not None:
            s.error = f"{rec.error.code}: {rec.error.message}"
        else:
            s.results = dict(rec.detectors)
        out.append(s)
    return out
