"""The steps one file goes through in a scan, each failure kept inside its record.

decode (read, hash, result-cache lookup, decode, preprocess, per-file
detectors; runs in the decode workers) -> features (one encoder pass per
group) -> model detectors -> result cache -> finish (fusion, the record).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..decode import Sample
from ..detectors.base import Detector
from ..fusion import fuse, shown_p, without_pixels
from ..pixels import PixelReader
from ..preprocess import spec_key
from ..records import PIXEL_FAILURES, DetectorResult, Record
from .plan import FeatureGroup, Plan


@dataclass
class ScanStats:
    started: float = field(default_factory=time.perf_counter)
    files: int = 0
    decoded: int = 0
    verdicts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    # Errors whose record has a verdict all the same (pixels failed, metadata decided): in both counts.
    errors_decided: int = 0
    model_seconds: float = 0.0
    decode_seconds: float = 0.0
    duplicates_reused: int = 0
    cache_hits: int = 0
    # Of cache_hits, the files whose per-file detectors ran again, the cache holding no result of them for these
    # options (never stored: metadata that read a C2PA manifest, or ran out of its time budget; or judged under
    # another --watermark, or not at all); their models' results came from the cache.
    cache_rerun: int = 0
    resumed: int = 0
    # Files decoded by a Ray node whose decoder versions are not this process's (engines/ray.py, _DecoderCheck).
    other_decoders: int = 0

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def as_dict(self) -> dict[str, Any]:
        s = self.seconds
        return {"files": self.files, "decoded": self.decoded, "verdicts": dict(self.verdicts),
                "errors": dict(self.errors), "errors_decided": self.errors_decided, "seconds": round(s, 3),
                "images_per_s": round(self.files / s, 3) if s > 0 else None,
                "model_seconds": round(self.model_seconds, 3), "duplicates_reused": self.duplicates_reused,
                "cache_hits": self.cache_hits, "cache_rerun": self.cache_rerun, "resumed": self.resumed,
                "other_decoders": self.other_decoders}

    def count(self, rec: Record) -> None:
        self.files += 1
        self.decoded += int(rec.error is None)
        self.verdicts[rec.verdict] += 1
        if rec.error is not None:
            self.errors[rec.error.code] += 1
            self.errors_decided += rec.verdict != "error"


def cache_rerun_note(stats: Mapping[str, Any]) -> str:
    """What the summary adds to "N from the result cache" when some of those files had their metadata judged
    again: "from the result cache" alone said their every result was the cache's."""
    n = int(stats.get("cache_rerun") or 0)
    return f"{n} of them with {'its' if n == 1 else 'their'} metadata judged again" if n else ""


def predict(d: Detector, samples: list[Sample], feats: list[dict]) -> list[DetectorResult]:
    """The only way a scan asks a detector for results: whatever it raises or
    miscounts becomes a failed result on those files, never a failed scan."""
    try:
        results = d.predict(samples, feats)
        if len(results) != len(samples):
            raise RuntimeError(f"returned {len(results)} results for {len(samples)} images")
        return list(results)
    except Exception as exc:  # noqa: BLE001 - a detector failure marks its results, never the scan
        return [DetectorResult.failed(f"{type(exc).__name__}: {exc}") for _ in samples]


class ResultCacheStage:
    """The result cache seen from a scan: a damaged or full cache costs speed,
    never a file (the first problem is kept in `error` for the summary)."""

    def __init__(self, cache: Any, idents: dict[str, str], rerun: Sequence[str] = ()):
        self.cache, self.idents = cache, idents
        # The per-file detectors (metadata), run again on a hit that lacks their rows (ResultCache.get).
        self.rerun = frozenset(n for n in rerun if n in idents)
        self.error: str | None = None

    def _note(self, exc: Exception) -> None:
        self.error = self.error or f"{type(exc).__name__}: {exc}"

    def get(self, sha: str):
        try:
            return self.cache.get(sha, self.idents, self.rerun)
        except Exception as exc:  # noqa: BLE001 - a damaged cache means recomputing, never a failed file
            self._note(exc)
            return None

    def put(self, samples: Sequence[Sample]) -> None:
        # Imported here: a --no-cache scan never loads the cache code (or sqlite3).
        from ..result_cache import FILE_FIELDS

        entries = []
        for s in samples:
            rec = s.record
            if rec.error is None and rec.sha256:
                info = {f: getattr(rec, f) for f in FILE_FIELDS}
                served = s.cached or {}   # a partial hit stores what it ran again, not what it was served
                entries.append((rec.sha256, info, {n: (k, rec.detectors[n]) for n, k in self.idents.items()
                                                   if n in rec.detectors and n not in served}))
        try:
            self.cache.put_many(entries)
        except Exception as exc:  # noqa: BLE001 - a full disk or locked cache costs speed next time, not this scan
            self._note(exc)


def from_cache(s: Sample, detectors: Sequence[Detector]) -> None:
    """A result-cache hit's results; a detector the entry lacks (an
    UnavailableDetector, which is never cached) answers through the same
    guarded path as for a fresh file."""
    cached = s.cached or {}
    for d in detectors:
        if d.name in cached:
            s.record.detectors[d.name] = cached[d.name]
        elif d.name not in s.record.detectors:   # else run again in the decode workers (DecodeStage.rerun)
            s.record.detectors[d.name] = predict(d, [s], [{}])[0]


class DecodeStage:
    """The decode workers' job for one file: read and hash it, look it up in
    the result cache, decode and preprocess it, run the per-file detectors.
    Holds nothing unpicklable, so an engine can ship it to CPU tasks."""

    def __init__(self, reader: PixelReader, worker_dets: Sequence[Detector],
                 cache: ResultCacheStage | None = None,
                 decoder: Callable[[str, int, list], Sample] | None = None, drop_image: bool = False,
                 drop_bytes: bool = False):
        self.reader, self.worker_dets, self.cache, self.decoder = reader, list(worker_dets), cache, decoder
        # The full-size image was kept only for the per-file detectors (watermark check): not held past them.
        self.drop_image = drop_image
        # Likewise the raw bytes, when no detector run with the model reads them: held to the end of
        # the batch, two batches of --max-bytes files were 16 GiB at the defaults.
        self.drop_bytes = drop_bytes

    def __call__(self, path: str, index: int, expect: tuple[int, int] | None = None) -> Sample:
        if self.decoder is not None:
            s = self.decoder(path, index, list(self.reader.specs))
            self._file_dets(s)
            return self._done(s)
        # The reader's budgets, held to the end of the job (the metadata detector parses the bytes,
        # the watermark check reads the full-size image).
        with self.reader.byte_budget.hold() as take_bytes:
            s = self.reader.read(path, index, take_bytes, expect)
            hit = self.cache.get(s.record.sha256) if s.ok and self.cache is not None else None
            if hit is not None:
                info, s.cached = hit
                if not self.rerun(s):
                    rec = s.record
                    rec.format, rec.width, rec.height = info.get("format"), info.get("width"), info.get("height")
                    rec.image_info = dict(info.get("image_info") or {})
                    s.data = None
                    return self._done(s)
                # A per-file detector whose result was not stored (metadata that read a C2PA manifest, judged
                # against today's clock) runs again on what a fresh scan hands it: these bytes and their decode
                # (the watermark check reads the image, the parsers its facts), but no model input is made; the
                # models' results are the cache's.
            with self.reader.budget.hold() as admit:
                self.reader.decode(s, admit, preprocess=s.cached is None)
                self._file_dets(s)
                return self._done(s)

    def rerun(self, s: Sample) -> list[Detector]:
        """The per-file detectors a result-cache hit holds no result of."""
        return [d for d in self.worker_dets if d.name not in (s.cached or {})] if s.cached is not None else []

    def _file_dets(self, s: Sample) -> None:
        # Metadata does not need the pixels: a file whose pixels fail still gets its evidence
        # (scan and meta agree on every file), which alone may decide its verdict (finish).
        if s.data:
            for d in self.worker_dets if s.cached is None else self.rerun(s):
                s.record.detectors[d.name] = predict(d, [s], [{}])[0]

    def _done(self, s: Sample) -> Sample:
        if self.drop_image:
            s.image = None
        # Only the per-file detectors read it, and it holds the file's bytes.
        s.layout = None
        if self.drop_bytes:
            s.data = None
        if not s.ok:
            s.data, s.image = None, None  # a failed file's bytes are not held until its batch ends
            s.pixels.clear()
        return s


def encode(groups: Mapping[str, FeatureGroup], samples: list[Sample]) -> list[dict[str, dict[str, np.ndarray]]]:
    """One encoder pass per group over a batch -> per sample {group key: {output: vector}}."""
    feats: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in samples]
    if not groups or not samples:
        return feats
    if all(getattr(g.request.encode, "numpy_io", False) for g in groups.values()):
        return _encode_numpy(groups, samples, feats)
    import torch

    with torch.inference_mode():
        for g in groups.values():
            pk = spec_key(g.request.preprocess)
            x = torch.from_numpy(np.stack([s.pixels[pk] for s in samples]))
            x = x.to(g.request.device).to(getattr(torch, g.request.dtype))
            out = g.request.encode(x, layers=tuple(sorted(g.layers)))
            arrays = {k: v.float().cpu().numpy() for k, v in out.items()}
            for i in range(len(samples)):
                feats[i][g.key] = {k: a[i] for k, a in arrays.items()}
    return feats


def _encode_numpy(groups: Mapping[str, FeatureGroup], samples: list[Sample], feats: list[dict]) -> list[dict]:
    """Encoders that take and return numpy (ONNX Runtime graphs): no torch, so the
    [onnx] install scans without it."""
    for g in groups.values():
        pk = spec_key(g.request.preprocess)
        x = np.stack([s.pixels[pk] for s in samples]).astype(np.float32, copy=False)
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in g.request.encode(x, layers=()).items()}
        for i in range(len(samples)):
            feats[i][g.key] = {k: a[i] for k, a in arrays.items()}
    return feats


def run_model(plan: Plan, samples: list[Sample], stats: ScanStats) -> None:
    """Features for the batch, then every detector that runs with the model; a
    failed encoder pass fails the results of the detectors that needed it."""
    feats: list[dict] | None = None
    t = time.perf_counter()
    try:
        feats = encode(plan.groups, samples)
    except Exception as exc:  # noqa: BLE001 - a model failure marks the batch, the scan goes on
        feat_error = f"feature extraction failed: {type(exc).__name__}: {exc}"
    else:
        if plan.groups and samples:
            stats.model_seconds += time.perf_counter() - t
    for d in plan.main_dets:
        if plan.det_keys[d.name] and feats is None:
            results = [DetectorResult.failed(feat_error) for _ in samples]
        else:
            results = predict(d, samples, feats or [{} for _ in samples])
        for s, r in zip(samples, results):
            s.record.detectors[d.name] = r


def finish(s: Sample, detectors: Sequence[Detector], fusion_model: Mapping[str, Any] | None,
           fusion_info: Mapping[str, Any], identities: Mapping[str, str] | None = None) -> Record:
    """Detector results in the run's order, then fusion into P(AI), verdict and reasons; each result
    that ran gets its detector's `identity` (Plan.result_identities)."""
    rec = s.record
    rec.fusion = dict(fusion_info)
    for name, r in rec.detectors.items():
        if r.status == "ok" and identities and name in identities:
            # a new dict: the result object may be shared with a duplicate's record or the result cache's batch
            r.extra = {**r.extra, "identity": identities[name]}
    if rec.error is None:
        rec.detectors = {d.name: rec.detectors[d.name] for d in detectors if d.name in rec.detectors}
        out = fuse(rec.detectors, fusion_model)
        rec.p_ai, rec.verdict, rec.reasons = shown_p(out.p_ai, out.band), out.verdict, out.reasons
        rec.band = out.band
    elif rec.error.code in PIXEL_FAILURES:
        # A truncated download of a generator's PNG was "error", so `--fail-on ai` and a filter on the verdict
        # missed what its own metadata declares; the error stays beside the verdict.
        out = without_pixels(rec.detectors, fusion_model, rec.error.code)
        if out is not None:
            rec.p_ai, rec.verdict, rec.reasons = shown_p(out.p_ai, out.band), out.verdict, out.reasons
            rec.band = out.band
    return rec
