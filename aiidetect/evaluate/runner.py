"""Run detectors over labelled items, optionally through a perturbation.

This is the evaluation twin of the scan pipeline: decode, (perturb), preprocess
for every head's spec, compute each distinct feature request once per batch,
and ask every detector. Perturbations act on the decoded image before any
preprocessing, so every head sees the same perturbed pixels, and the metadata
detector sees the perturbed image's bytes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..records import DetectorResult


@dataclass
class Scored:
    """One labelled item after every detector has looked at it."""

    path: str
    label: int
    generator: str
    results: dict[str, DetectorResult] = field(default_factory=dict)
    error: str | None = None       # decode failure: excluded from metrics, counted


def _merge_requests(detectors) -> dict[str, Any]:
    """feature_key -> (request, union of layers). Identical requests from
    several heads are computed once."""
    from ..detectors.base import feature_key

    merged: dict[str, Any] = {}
    for det in detectors:
        try:
            reqs = det.feature_requests() if det.needs_pixels else []
        except Exception:  # noqa: BLE001 - the detector reports its own failure in predict
            reqs = []
        for r in reqs:
            k = feature_key(r)
            if k in merged:
                merged[k] = (merged[k][0], tuple(sorted(set(merged[k][1]) | set(r.layers))))
            else:
                merged[k] = (r, tuple(r.layers))
    return merged


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


def _features(samples, merged) -> list[dict[str, Any]]:
    import torch

    from ..preprocess import spec_key

    feats: list[dict[str, Any]] = [{} for _ in samples]
    for key, (req, layers) in merged.items():
        sk = spec_key(req.preprocess)
        x = torch.from_numpy(np.stack([s.pixels[sk] for s in samples]))
        x = x.to(req.device).to(getattr(torch, req.dtype, torch.float32))
        with torch.inference_mode():
            out = req.encode(x, layers=layers)
        arrays = {k: v.float().cpu().numpy() for k, v in out.items() if hasattr(v, "float")}
        for i in range(len(samples)):
            feats[i][key] = {k: a[i] for k, a in arrays.items()}
    return feats


def run(items: Sequence[Any], detectors: Sequence[Any], transform=None, batch_size: int = 16,
        progress: Callable[[int], None] | None = None, workers: int = 2) -> list[Scored]:
    """items: train.data.Item-like (path, label, generator). Never raises for
    a bad file or a failing detector: they become statuses.

    Uses the scan pipeline (so "raw" numbers are what `aiidetect scan` would
    produce), with its decode step swapped for a perturbing one when a
    transform is given; falls back to a local loop if the pipeline is absent."""
    try:
        from ..discover import Candidate
        from ..pipeline import Pipeline
    except ImportError:
        return _run_local(items, detectors, transform, batch_size, progress)

    class _Perturbed(Pipeline):
        def _decode(self, c, index):  # same worker-side job, plus the perturbation
            return _decode(c.path, index, self.specs, transform)

    cls = Pipeline if transform is None else _Perturbed
    pipe = cls(detectors, None, batch_size=batch_size, workers=workers)
    cb = (lambda rec: progress(1)) if progress else None
    recs = list(pipe.run([Candidate(it.path, explicit=True) for it in items], on_record=cb))
    out = []
    for it, rec in zip(items, recs):
        s = Scored(it.path, int(it.label), it.generator)
        if rec.error is not None:
            s.error = f"{rec.error.code}: {rec.error.message}"
        else:
            s.results = dict(rec.detectors)
        out.append(s)
    return out


def _run_local(items, detectors, transform=None, batch_size: int = 16, progress=None) -> list[Scored]:
    merged = _merge_requests(detectors)
    specs, seen = [], set()
    from ..preprocess import spec_key

    for req, _ in merged.values():
        if spec_key(req.preprocess) not in seen:
            seen.add(spec_key(req.preprocess))
            specs.append(req.preprocess)
    out: list[Scored] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        samples = [_decode(it.path, start + j, specs, transform) for j, it in enumerate(chunk)]
        scored = [Scored(it.path, int(it.label), it.generator) for it in chunk]
        ok = [j for j, s in enumerate(samples) if s.ok]
        for j, s in enumerate(samples):
            if not s.ok:
                scored[j].error = f"{s.record.error.code}: {s.record.error.message}"
        ok_samples = [samples[j] for j in ok]
        feats: list[dict[str, Any]] = [{} for _ in ok_samples]
        feat_error = None
        if ok_samples and merged:
            try:
                feats = _features(ok_samples, merged)
            except Exception as exc:  # noqa: BLE001 - pixel detectors then report the failure
                feat_error = f"feature extraction failed: {type(exc).__name__}: {exc}"
        for det in detectors:
            if not ok_samples:
                break
            if feat_error and det.needs_pixels and merged:
                res = [DetectorResult.failed(feat_error) for _ in ok_samples]
            else:
                try:
                    res = list(det.predict(ok_samples, feats))
                    if len(res) != len(ok_samples):
                        raise RuntimeError(f"returned {len(res)} results for {len(ok_samples)} images")
                except Exception as exc:  # noqa: BLE001
                    res = [DetectorResult.failed(f"{type(exc).__name__}: {exc}") for _ in ok_samples]
            for j, r in zip(ok, res):
                scored[j].results[det.name] = r
        out += scored
        if progress:
            progress(len(chunk))
    return out
