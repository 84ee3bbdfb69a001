"""discover -> decode (worker pool) -> batch -> encoder features -> detectors -> fusion -> records.

Decoding of chunk k+1 runs in worker threads while the model works on chunk k
(Pillow and numpy release the GIL), records come out in input order, and every
failure stays inside its record. With a ResultCache, a file whose bytes (and
detectors) were seen in an earlier run is read and hashed but neither decoded
nor given to a model.
"""
from __future__ import annotations

import itertools
import time
from collections import Counter, OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .decode import DecodeLimits, Sample, decode_sample, read_sample
from .detectors.base import Detector, FeatureRequest, UnavailableDetector, feature_key
from .discover import Candidate
from .fusion import fuse, fusion_identity
from .preprocess import draft_size, spec_key
from .records import DetectorResult, Record


@dataclass
class ScanStats:
    started: float = field(default_factory=time.perf_counter)
    files: int = 0
    decoded: int = 0
    verdicts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    model_seconds: float = 0.0
    decode_seconds: float = 0.0
    duplicates_reused: int = 0
    cache_hits: int = 0
    resumed: int = 0

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def as_dict(self) -> dict[str, Any]:
        s = self.seconds
        return {"files": self.files, "decoded": self.decoded, "verdicts": dict(self.verdicts),
                "errors": dict(self.errors), "seconds": round(s, 3),
                "images_per_s": round(self.files / s, 3) if s > 0 else None,
                "model_seconds": round(self.model_seconds, 3), "duplicates_reused": self.duplicates_reused,
                "cache_hits": self.cache_hits, "resumed": self.resumed}


@dataclass
class _Group:
    """One encoder pass shared by every request with the same encoder and preprocessing."""

    key: str
    request: FeatureRequest
    layers: set[int]


class Pipeline:
    """`decoder(path, index, specs) -> Sample` replaces the read/decode step
    (evaluation uses it to perturb images); `cache` reuses results across runs;
    `prior(path) -> Record | None` hands back a finished record of an unchanged
    file before it is opened (the results store's resume, store.py)."""

    # Identical bytes seen recently reuse their detector results; bounded so a
    # sweep's memory does not grow with the number of files (the result cache or
    # the results store remember beyond this window).
    reuse_window = 4096

    def __init__(self, detectors: Sequence[Detector], fusion_model: Mapping[str, Any] | None = None,
                 batch_size: int = 16, workers: int = 2, limits: DecodeLimits | None = None,
                 cache: Any = None, decoder: Callable[[str, int, list], Sample] | None = None,
                 prior: Callable[[str], Record | None] | None = None):
        self.detectors = list(detectors)
        self.decoder = decoder
        self.prior = prior
        self._resumed: set[int] = set()
        # sha256 -> detector results of the last files finished, least recently used dropped first.
        self._recent: OrderedDict[str, dict[str, DetectorResult]] = OrderedDict()
        self.fusion_model = fusion_model
        self.fusion_info = fusion_identity(fusion_model)
        self.batch_size = max(1, int(batch_size))
        self.workers = max(1, int(workers))
        self.limits = limits or DecodeLimits()
        self.groups: dict[str, _Group] = {}
        self.det_keys: dict[str, list[str]] = {}
        for d in self.detectors:
            keys = []
            for req in d.feature_requests():
                k = feature_key(req)
                g = self.groups.setdefault(k, _Group(k, req, set()))
                g.layers.update(req.layers)
                keys.append(k)
            self.det_keys[d.name] = keys
        specs = {spec_key(g.request.preprocess): g.request.preprocess for g in self.groups.values()}
        self.specs = list(specs.values())
        drafts = [draft_size(s) for s in self.specs]
        # JPEG draft (DCT downscale) only when every head resizes; never below what any head needs.
        self.draft = max(drafts) if drafts and all(d is not None for d in drafts) else None
        self.keep_image = any(getattr(d, "needs_image", False) for d in self.detectors)
        # Per-file detectors (metadata: parsers, watermark) run in the decode workers, beside the model.
        self.worker_dets = [d for d in self.detectors if d.per_file and not self.det_keys[d.name]]
        self.main_dets = [d for d in self.detectors if d not in self.worker_dets]
        # A per-file detector that reads full-resolution pixels (the watermark check) is handed the
        # image the worker just decoded instead of decoding the file again; dropped right after.
        self.image_for_file_dets = any(getattr(d, "reads_image", False) for d in self.worker_dets)
        self.stats = ScanStats()
        self.cache, self.idents = None, {}
        self.cache_error: str | None = None
        if cache is not None and decoder is None:
            self.idents = self._identities()
            self.cache = cache if self.idents else None

    def _identities(self) -> dict[str, str]:
        """detector name -> cache identity key; empty (no caching) when any
        working detector cannot say what its results depend on."""
        from dataclasses import asdict

        from .result_cache import identity_key

        run = {"draft": self.draft, "keep_image": self.keep_image, "limits": asdict(self.limits)}
        out = {}
        for d in self.detectors:
            ident = d.cache_identity()
            if ident is None:
                if isinstance(d, UnavailableDetector):
                    continue  # says the same thing for every file; recomputed for free
                return {}
            out[d.name] = identity_key(ident, run)
        return out

    # ---------------------------------------------------------------- decode
    def _decode(self, c: Candidate, index: int) -> Sample:
        if c.error is not None:
            rec = Record(file=c.path).set_error(*c.error)
            return Sample(index=index, path=c.path, record=rec)
        if self.prior is not None:
            done = self.prior(c.path)
            if done is not None:
                s = Sample(index=index, path=c.path, record=done)
                self._resumed.add(index)
                return s
        t = time.perf_counter()
        if self.decoder is not None:
            s = self.decoder(c.path, index, self.specs)
        else:
            s = read_sample(c.path, index, self.limits)
            hit = self._cache_get(s.record.sha256) if s.ok and self.cache is not None else None
            if hit is not None:
                info, s.cached = hit
                rec = s.record
                rec.format, rec.width, rec.height = info.get("format"), info.get("width"), info.get("height")
                rec.image_info = dict(info.get("image_info") or {})
                s.data = None
            elif s.ok:
                decode_sample(s, self.limits, self.specs, keep_image=self.keep_image or self.image_for_file_dets,
                              draft=self.draft)
        # Metadata does not need the pixels: a file whose pixels fail still gets its evidence
        # (scan and meta agree on every file), and its verdict stays "error".
        if s.data and s.cached is None:
            for d in self.worker_dets:
                s.record.detectors[d.name] = _predict(d, [s], [{}])[0]
        if self.image_for_file_dets and not self.keep_image:
            s.image = None
        if not s.ok:
            s.data, s.image = None, None  # a failed file's bytes are not held until its batch ends
            s.pixels.clear()
        self.stats.decode_seconds += time.perf_counter() - t
        return s

    # ---------------------------------------------------------------- model
    def _features(self, samples: list[Sample]) -> list[dict[str, dict[str, np.ndarray]]]:
        feats: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in samples]
        if not self.groups or not samples:
            return feats
        if all(getattr(g.request.encode, "numpy_io", False) for g in self.groups.values()):
            return self._numpy_features(samples, feats)
        import torch

        t = time.perf_counter()
        with torch.inference_mode():
            for g in self.groups.values():
                pk = spec_key(g.request.preprocess)
                x = torch.from_numpy(np.stack([s.pixels[pk] for s in samples]))
                x = x.to(g.request.device).to(getattr(torch, g.request.dtype))
                out = g.request.encode(x, layers=tuple(sorted(g.layers)))
                arrays = {k: v.float().cpu().numpy() for k, v in out.items()}
                for i in range(len(samples)):
                    feats[i][g.key] = {k: a[i] for k, a in arrays.items()}
        self.stats.model_seconds += time.perf_counter() - t
        return feats

    def _numpy_features(self, samples: list[Sample], feats: list[dict]) -> list[dict]:
        """Encoders that take and return numpy (ONNX Runtime graphs): no torch, so the
        [onnx] install scans without it."""
        t = time.perf_counter()
        for g in self.groups.values():
            pk = spec_key(g.request.preprocess)
            x = np.stack([s.pixels[pk] for s in samples]).astype(np.float32, copy=False)
            arrays = {k: np.asarray(v, dtype=np.float32) for k, v in g.request.encode(x, layers=()).items()}
            for i in range(len(samples)):
                feats[i][g.key] = {k: a[i] for k, a in arrays.items()}
        self.stats.model_seconds += time.perf_counter() - t
        return feats

    def _run_detectors(self, samples: list[Sample]) -> None:
        feats: list[dict] | None = None
        try:
            feats = self._features(samples)
        except Exception as exc:  # noqa: BLE001 - a model failure marks the batch, the scan goes on
            feat_error = f"feature extraction failed: {type(exc).__name__}: {exc}"
        for d in self.main_dets:
            if self.det_keys[d.name] and feats is None:
                results = [DetectorResult.failed(feat_error) for _ in samples]
            else:
                results = _predict(d, samples, feats or [{} for _ in samples])
            for s, r in zip(samples, results):
                s.record.detectors[d.name] = r

    def _cache_get(self, sha: str):
        try:
            return self.cache.get(sha, self.idents)
        except Exception as exc:  # noqa: BLE001 - a damaged cache means recomputing, never a failed file
            self.cache_error = self.cache_error or f"{type(exc).__name__}: {exc}"
            return None

    def _from_cache(self, s: Sample) -> None:
        cached = s.cached or {}
        for d in self.detectors:
            s.record.detectors[d.name] = cached[d.name] if d.name in cached else d.predict([s], [{}])[0]
        self.stats.cache_hits += 1

    def _store(self, samples: list[Sample]) -> None:
        from .result_cache import FILE_FIELDS

        entries = []
        for s in samples:
            rec = s.record
            if rec.error is None and rec.sha256:
                info = {f: getattr(rec, f) for f in FILE_FIELDS}
                entries.append((rec.sha256, info, {n: (k, rec.detectors[n]) for n, k in self.idents.items()
                                                   if n in rec.detectors}))
        try:
            self.cache.put_many(entries)
        except Exception as exc:  # noqa: BLE001 - a full disk or locked cache costs speed next time, not this scan
            self.cache_error = self.cache_error or f"{type(exc).__name__}: {exc}"

    def _finish(self, s: Sample) -> Record:
        rec = s.record
        rec.fusion = dict(self.fusion_info)
        if rec.error is None:
            rec.detectors = {d.name: rec.detectors[d.name] for d in self.detectors if d.name in rec.detectors}
            out = fuse(rec.detectors, self.fusion_model)
            rec.p_ai, rec.verdict, rec.reasons = out.p_ai, out.verdict, out.reasons
        return rec

    # ---------------------------------------------------------------- driver
    def run(self, candidates: Iterable[Candidate], on_record: Callable[[Record], None] | None = None) -> Iterator[Record]:
        """Yield one record per candidate, in order, as each chunk finishes.
        `candidates` may be a lazy iterator: it is consumed one chunk ahead."""
        chunk = self.batch_size
        self._resumed = set()
        self._recent = OrderedDict()  # reuse stays within one run (evaluation re-runs files perturbed)
        numbered = enumerate(candidates)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:
            def submit() -> list[Future]:
                return [pool.submit(self._decode, c, i) for i, c in itertools.islice(numbered, chunk)]

            pending = submit()
            while pending:
                nxt = submit()  # prefetch while the model runs
                for rec in self.complete([f.result() for f in pending]):
                    if on_record:
                        on_record(rec)
                    yield rec
                pending = nxt

    def decode_many(self, candidates: Sequence[Candidate], indices: Sequence[int]) -> list[Sample]:
        """The CPU half for one batch: read, hash, decode, preprocess, per-file
        detectors (a distributed engine runs this in CPU tasks)."""
        return [self._decode(c, int(i)) for c, i in zip(candidates, indices)]

    def decoder_half(self) -> "Pipeline":
        """A pipeline with this one's decode settings and per-file detectors
        only, without the model: picklable, for an engine's CPU tasks."""
        half = Pipeline(self.worker_dets, None, self.batch_size, self.workers, self.limits)
        half.specs, half.draft, half.keep_image = self.specs, self.draft, self.keep_image
        return half

    def complete(self, samples: list[Sample]) -> list[Record]:
        """The model half for one batch of decoded samples, in order: result
        cache, reuse of identical bytes seen recently, model detectors, fusion."""
        recent = self._recent
        reuse: dict[int, dict[str, DetectorResult]] = {}
        fresh: list[Sample] = []
        for s in samples:
            if s.index in self._resumed:
                continue
            if s.ok and s.cached is not None:
                self._from_cache(s)
            elif s.ok and s.record.sha256 in recent:
                reuse[id(s)] = recent[s.record.sha256]
                recent.move_to_end(s.record.sha256)
            elif s.ok:
                fresh.append(s)
        if fresh:
            self._run_detectors(fresh)
            if self.cache is not None:
                self._store(fresh)
        out = []
        for s in samples:
            if s.index in self._resumed:
                self._resumed.discard(s.index)
                rec = s.record  # finished in an earlier run: printed as stored, never refused
                self.stats.resumed += 1
            else:
                if id(s) in reuse:
                    s.record.detectors = dict(reuse[id(s)])
                    self.stats.duplicates_reused += 1
                rec = self._finish(s)
                if rec.error is None and rec.sha256 and rec.sha256 not in recent:
                    recent[rec.sha256] = rec.detectors
                    if len(recent) > self.reuse_window:
                        recent.popitem(last=False)
            s.data = None
            s.image = None
            s.pixels.clear()
            self.count(rec)
            out.append(rec)
        return out

    def count(self, rec: Record) -> None:
        self.stats.files += 1
        self.stats.decoded += int(rec.error is None)
        self.stats.verdicts[rec.verdict] += 1
        if rec.error is not None:
            self.stats.errors[rec.error.code] += 1


def _predict(d: Detector, samples: list[Sample], feats: list[dict]) -> list[DetectorResult]:
    try:
        results = d.predict(samples, feats)
        if len(results) != len(samples):
            raise RuntimeError(f"returned {len(results)} results for {len(samples)} images")
        return list(results)
    except Exception as exc:  # noqa: BLE001 - a detector failure marks its results, never the scan
        return [DetectorResult.failed(f"{type(exc).__name__}: {exc}") for _ in samples]


def run_detectors(paths: Iterable[str], detectors: Sequence[Detector], batch_size: int = 16, workers: int = 2,
                  fusion_model: Mapping[str, Any] | None = None) -> list[Record]:
    """Library entry point (eval, calibrate, tests): paths -> records, in order."""
    cands = [Candidate(p, explicit=True) for p in paths]
    return list(Pipeline(detectors, fusion_model, batch_size, workers).run(cands))
