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

from ..decode import sniff_format
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
    sha256: str | None = None      # content key of the bytes scored (train_record); None when unread
    phash: int | None = None       # decode.phash_bytes of the bytes scored; None when none


def _perturbing(transform) -> Callable[[Any, Any], Any]:
    """A pixels.PixelReader transform applying an evaluation perturbation: the
    perturbed image replaces the decoded one, and its re-encoded bytes replace
    the file's, so the record describes (and the metadata detector reads) what
    the perturbation produced."""
    def perturb(img, s):
        img, data, fmt = transform(img, seed_key=s.path)
        rec = s.record
        s.data = data
        rec.size_bytes = len(data)
        rec.sha256 = hashlib.sha256(data).hexdigest()
        rec.format = fmt or sniff_format(data)
        rec.width, rec.height = img.size
        rec.image_info = {}
        s.info = {"format": rec.format, "width": img.size[0], "height": img.size[1], "mode": "RGB",
                  "perturbation": getattr(transform, "name", "custom")}
        return img

    return perturb


def run(items: Sequence[Any], detectors: Sequence[Any], transform=None, batch_size: int = 16,
        progress: Callable[[int], None] | None = None, workers: int = 2) -> list[Scored]:
    """items: train.data.Item-like (path, label, generator). Never raises for
    a bad file or a failing detector: they become statuses.

    Uses the scan pipeline (so "raw" numbers are what `aiidetect scan` would
    produce), with its decode step swapped for a perturbing one when a
    transform is given."""
    from ..discover import Candidate
    from ..pipeline import Pipeline
    from ..pixels import ByteBudget, PixelBudget, PixelReader

    hashes: dict[str, int | None] = {}

    def hashing(img, s):
        # Of the raw condition's bytes (a path's bytes are its own: a repeated path gives the same hash),
        # made by the scan's decode (decode.phash_decoded: the scan's draft when it is the hash's scale,
        # else one decode at that scale under the scan's pixel budget, never a whole one).
        hashes[s.path] = s.phash
        return img

    decoder = None
    if transform is not None:
        # (no hash: the overlap is of the raw condition's images)
        perturb = _perturbing(transform)
        # Full resolution (no JPEG draft): the perturbation acts on the pixels as stored.
        # One budget of each for all the workers, as in a scan (a reader per file had its own).
        budget, byte_budget = PixelBudget.for_limits(), ByteBudget.for_limits()
        decoder = lambda path, index, specs: PixelReader(specs, transform=perturb, budget=budget,  # noqa: E731
                                                         byte_budget=byte_budget)(path, index)
    pipe = Pipeline(detectors, None, batch_size=batch_size, workers=workers, decoder=decoder)
    if decoder is None:
        pipe.decoding.reader.phash = True
        pipe.decoding.reader.transform = hashing
    cb = (lambda rec: progress(1)) if progress else None
    # Each record is dropped once its Scored is made: a list of them held every record whole (its evidence,
    # reasons, EXIF) beside the Scored items until the last file was read.
    recs = pipe.run((Candidate(it.path, explicit=True) for it in items), on_record=cb)
    out = []
    for it, rec in zip(items, recs):
        s = Scored(it.path, int(it.label), it.generator, subset=getattr(it, "subset", "") or "", sha256=rec.sha256,
                   phash=hashes.get(it.path) if rec.error is None else None)
        if rec.error is not None:
            s.error = f"{rec.error.code}: {rec.error.message}"
        else:
            s.results = dict(rec.detectors)
        out.append(s)
    return out
