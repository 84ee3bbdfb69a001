"""The scan loop: candidates in, records out, in order.

Decoding of chunk k+1 runs in worker threads while the model works on chunk k
(Pillow and numpy release the GIL) when the model leaves cores to spare (a GPU);
beside a model on the CPU that uses every core, the workers either do that or
wait while it runs, whichever the scan measures to be faster (Plan.decode_schedule,
pixels.TurnPolicy). Records come out in input order, and every
failure stays inside its record. With a ResultCache, a file whose bytes (and
detectors) were seen in an earlier run is read and hashed but neither decoded
nor given to a model; one whose metadata result was not stored (a C2PA
manifest, judged at each scan) is decoded for its metadata detector alone.
"""
from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ..crashguard import STRIKES_TO_REFUSE, ReadsStuck, ReadTimedOut, in_flight
from ..decode import DecodeLimits, Sample
from ..detectors.base import Detector
from ..discover import Candidate
from ..fusion import fusion_identity
from ..pixels import PixelReader, TurnPolicy, ordered_chunks
from ..records import DetectorResult, Record
from .plan import Plan
from .stages import DecodeStage, ResultCacheStage, ScanStats, finish, from_cache, run_model


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
                 prior: Callable[[str], Record | None] | None = None, plan: Plan | None = None,
                 schedule: str | None = None):
        self.plan = plan or Plan.build(detectors)
        self.detectors = list(detectors)
        self.decoder = decoder
        self.prior = prior
        # crashguard.CrashGuard of a results-store session: files a dead session was reading are read alone,
        # or not at all after a second death.
        self.guard = None
        # The read deadline of a local scan (file_timeout): crashguard.ReadDeadline (the command line's) ends the
        # process past it; crashguard.AbandoningDeadline (a library scan's) gives the file a `timeout` record.
        self.deadline = None
        # (index, why) of each file whose read was one too many given up (crashguard.GIVEN_UP_MAX): the scan ends
        # with the first one's chunk, its record and those before it out (and stored): a resume goes past it.
        self._stops: list[tuple[int, ReadsStuck]] = []
        self._resumed: set[int] = set()
        # sha256 -> detector results of the last files finished, least recently used dropped first.
        self._recent: OrderedDict[str, dict[str, DetectorResult]] = OrderedDict()
        self.fusion_model = fusion_model
        self.fusion_info = fusion_identity(fusion_model)
        self.batch_size = max(1, int(batch_size))
        self.workers = max(1, int(workers))
        self.limits = limits or DecodeLimits()
        # overlap | turns | adaptive; None: the plan's rule (Plan.decode_schedule).
        self.schedule = schedule or self.plan.decode_schedule(self.workers)
        if self.schedule not in ("overlap", "turns", "adaptive"):
            raise ValueError(f"decode schedule must be overlap, turns or adaptive, not {self.schedule!r}")
        self.turn_policy: TurnPolicy | None = None
        self.stats = ScanStats()
        self.final_stats: dict[str, Any] | None = None  # stats.as_dict() when the scan ended (Scanner.stats)
        self._cache: ResultCacheStage | None = None
        # What each detector's results were computed by, written in every record's entry for it (docs/schema.md);
        # not for a caller's own decoder (eval's perturbations), which it does not describe.
        self.result_identities = self.plan.result_identities(self.limits) if decoder is None else {}
        if cache is not None and decoder is None:
            idents = self.plan.identities(self.limits)
            self._cache = ResultCacheStage(cache, idents, [d.name for d in self.plan.worker_dets]) if idents else None
        plan = self.plan
        reader = PixelReader(plan.specs, self.limits, plan.draft, plan.keep_image or plan.image_for_file_dets,
                             keep_layout=True)
        self.decoding = DecodeStage(reader, plan.worker_dets, self._cache, decoder,
                                    drop_image=plan.image_for_file_dets and not plan.keep_image,
                                    drop_bytes=not plan.bytes_for_model)

    # What the plan decided, under the names the engines, the results store and callers use.
    groups = property(lambda self: self.plan.groups)
    det_keys = property(lambda self: self.plan.det_keys)
    specs = property(lambda self: self.plan.specs)
    draft = property(lambda self: self.plan.draft)
    keep_image = property(lambda self: self.plan.keep_image)
    image_for_file_dets = property(lambda self: self.plan.image_for_file_dets)
    worker_dets = property(lambda self: self.plan.worker_dets)
    main_dets = property(lambda self: self.plan.main_dets)
    cache = property(lambda self: self._cache.cache if self._cache else None)
    idents = property(lambda self: self._cache.idents if self._cache else {})
    cache_error = property(lambda self: self._cache.error if self._cache else None)

    def _decode(self, c: Candidate, index: int) -> Sample:
        if c.error is not None:
            rec = Record(file=c.path).set_error(*c.error)
            return Sample(index=index, path=c.path, record=rec)
        if self.prior is not None:
            done = self.prior(c.path)
            if done is not None:
                self._resumed.add(index)
                return Sample(index=index, path=c.path, record=done)
        guard = self.guard
        if guard is not None:
            refused = guard.refused(c.path)
            if refused is not None:
                return Sample(index=index, path=c.path, record=Record(file=c.path).set_error("crashed", refused))
        t = time.perf_counter()
        deadline = self.deadline
        with guard.watch(c.path) if guard is not None else contextlib.nullcontext(), in_flight(c.path):
            if deadline is None:
                s = self.decoding(c.path, index, c.ident)
            else:
                try:
                    s = deadline.run(c.path, lambda: self.decoding(c.path, index, c.ident))
                except ReadTimedOut as late:
                    # A strike, as the command line's deadline gives one (by ending the process): one slow read
                    # on a loaded machine must not set a legitimate file aside for good.
                    struck = guard.timed_out(c.path) if guard is not None else None
                    rec = Record(file=c.path).set_error("timeout", timeout_message(deadline.seconds, late.took, struck))
                    s = Sample(index=index, path=c.path, record=rec)
                    if late.stop is not None:
                        self._stops.append((index, late.stop))  # from a decode thread: one append, no lock
        self.stats.decode_seconds += time.perf_counter() - t
        return s

    def warm_up(self) -> None:
        """The imports and plugin set-up of the first read, done before it (decode.warm_up, Detector.warm_up):
        under a read deadline, the first file paid for them on its own clock. A failure here costs nothing
        but that: the read that meets it again reports it in its record."""
        from ..decode import warm_up

        for step in [warm_up] + [d.warm_up for d in self.worker_dets]:
            with contextlib.suppress(Exception):
                step()

    def run(self, candidates: Iterable[Candidate], on_record: Callable[[Record], None] | None = None,
            waiting: Callable[[], bool] | None = None) -> Iterator[Record]:
        """Yield one record per candidate, in order, as each chunk finishes.
        `candidates` may be a lazy iterator: it is consumed one chunk ahead, unless `waiting()` says its
        next item would wait on a writer (discover's `DiscoverySummary.waiting`, for a list on stdin)."""
        if self.deadline is not None:
            self.warm_up()
        self._resumed = set()
        self._stops = []
        self._recent = OrderedDict()  # reuse stays within one run (evaluation re-runs files perturbed)
        turns: bool | TurnPolicy = self.schedule == "turns"
        if self.schedule == "adaptive":
            turns = self.turn_policy = TurnPolicy()
        chunks = ordered_chunks(self._decode, candidates, self.batch_size, self.workers, turns, waiting)
        batches = iter(chunks)
        try:
            for samples in batches:
                for rec in self.complete(samples, chunks.release):
                    if on_record:
                        on_record(rec)
                    yield rec
                stop = min(self._stops, key=lambda st: st[0], default=None)  # by index: a ReadsStuck has no order
                if stop is not None and samples and stop[0] <= samples[-1].index:
                    raise stop[1]
        finally:
            # Stopped in the model (Ctrl-C there): the decode threads are joined (or a stuck one abandoned)
            # now, not when the traceback that holds this frame is dropped, after the results store closed.
            batches.close()

    def decode_many(self, candidates: Sequence[Candidate], indices: Sequence[int]) -> list[Sample]:
        """The CPU half for one batch: read, hash, decode, preprocess, per-file
        detectors (a distributed engine runs this in CPU tasks)."""
        return [self._decode(c, int(i)) for c, i in zip(candidates, indices)]

    def decoder_half(self) -> "Pipeline":
        """A pipeline with this one's decode settings and per-file detectors
        only, without the model: picklable, for an engine's CPU tasks."""
        return Pipeline(self.worker_dets, None, self.batch_size, self.workers, self.limits,
                        plan=self.plan.decode_half())

    def complete(self, samples: list[Sample], model_done: Callable[[], None] | None = None) -> list[Record]:
        """The model half for one batch of decoded samples, in order: result
        cache, reuse of identical bytes seen recently, model detectors, fusion.
        `model_done()` is called once the model detectors have run: the rest is
        single-threaded and may share the cores with the next batch's decode."""
        recent = self._recent
        reuse: dict[int, dict[str, DetectorResult]] = {}
        fresh: list[Sample] = []
        rerun: list[Sample] = []   # cache hits whose per-file detectors ran again (DecodeStage.rerun)
        for s in samples:
            if s.index in self._resumed:
                continue
            if s.ok and s.cached is not None:
                if self.decoding.rerun(s):
                    rerun.append(s)
                    self.stats.cache_rerun += 1
                from_cache(s, self.detectors)
                self.stats.cache_hits += 1
            elif s.ok and s.record.sha256 in recent:
                reuse[id(s)] = recent[s.record.sha256]
                recent.move_to_end(s.record.sha256)
            elif s.ok:
                fresh.append(s)
        if fresh:
            run_model(self.plan, fresh, self.stats)
        if model_done is not None:
            model_done()
        if self._cache is not None and (fresh or rerun):
            # A partial hit's per-file results too: one not stored before (an error then) may be now.
            self._cache.put(fresh + rerun)
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
                rec = finish(s, self.detectors, self.fusion_model, self.fusion_info, self.result_identities)
                if rec.error is None and rec.sha256 and rec.sha256 not in recent:
                    recent[rec.sha256] = rec.detectors
                    if len(recent) > self.reuse_window:
                        recent.popitem(last=False)
            s.data = s.layout = None
            s.image = None
            s.pixels.clear()
            self.count(rec)
            out.append(rec)
        return out

    def count(self, rec: Record) -> None:
        self.stats.count(rec)


def timeout_message(seconds: float, took: float, strikes: int | None) -> str:
    """The `timeout` record of a read given up past file_timeout; `strikes`: the file's in the results store now
    (None without one)."""
    why = (f"its read and decode ran past file_timeout ({seconds:g} s; {took:.1f} s when given up): a decoder stuck "
           "on it, a filesystem that does not answer, or a machine too loaded to read it in time; the read was "
           "abandoned and the scan went on (its thread runs until the read returns)")
    if strikes is None:
        return why
    if strikes < STRIKES_TO_REFUSE:
        return (f"{why}. The results store counts it (a strike): its next scan with a file_timeout (a resume) "
                "reads this file again, alone, and sets it aside if that read runs past the deadline too")
    return (f"{why}. It was read alone, an earlier run of the results store having given it up (or ended) while "
            "reading it too: set aside (two strikes), the store does not read it again until it changes or is "
            "`touch`ed")


def run_detectors(paths: Iterable[str], detectors: Sequence[Detector], batch_size: int = 16, workers: int = 2,
                  fusion_model: Mapping[str, Any] | None = None) -> list[Record]:
    """Library entry point (eval, calibrate, tests): paths -> records, in order."""
    cands = [Candidate(p, explicit=True) for p in paths]
    return list(Pipeline(detectors, fusion_model, batch_size, workers).run(cands))
