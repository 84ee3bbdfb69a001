"""files -> pixels: the one way aiidetect turns image files into model input.

Scan, feature extraction, ONNX export calibration, MPFT training, the decode
benchmark and evaluation all read files through here:

- `PixelReader` is the per-file job: read each file once (read-only, size
  checked, hashed), decode it safely, optionally transform the decoded image
  (evaluation's perturbations, a trainer's shrink), and preprocess it for every
  head's spec. Every failure stays inside its Sample's record; it never raises.
- `ordered` / `ordered_chunks` run any per-item job in worker threads (Pillow
  and numpy release the GIL) and hand results back in input order, with a
  bounded look-ahead so memory does not grow with the number of files.

    for s in iter_pixels(paths, [spec]):
        if s.ok:
            use(s.pixels[spec_key(spec)])
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from .crashguard import in_flight, on_give_up, waiting
from .decode import DecodeLimits, Sample, decode_sample, read_sample
from .limits import DECODE_BUDGET_IMAGES
from .preprocess import spec_key

T = TypeVar("T")
R = TypeVar("R")

# (decoded PIL RGB image, its Sample) -> the image to preprocess. The hook may
# also update the Sample (evaluation's perturbations replace its bytes).
Transform = Callable[[Any, Sample], Any]


@dataclass
class PixelReader:
    """How one file becomes pixels. `read` + `decode` are the two halves (a
    result-cache lookup fits between them, needing only the hash); calling the
    reader does both."""

    specs: Sequence[Mapping[str, Any]] = ()
    limits: DecodeLimits | None = None
    draft: int | None = None
    keep_image: bool = False
    keep_bytes: bool = True
    transform: Transform | None = None
    # Shared by every job of this reader: decoded pixels and raw bytes in flight bounded by
    # --max-pixels and --max-bytes, not by the number of workers.
    budget: "PixelBudget | None" = None
    byte_budget: "ByteBudget | None" = None
    # s.phash of each file (decode.phash_decoded: its extra decode, when one, under `budget`)
    phash: bool = False
    # s.layout (decode_sample's keep_layout): only for a caller whose per-file detectors read the bytes next
    # and drop it after (the scan's DecodeStage), as its tables can be MBs for a 100-byte file
    keep_layout: bool = False

    def __post_init__(self) -> None:
        if self.budget is None:
            self.budget = PixelBudget.for_limits(self.limits)
        if self.byte_budget is None:
            self.byte_budget = ByteBudget.for_limits(self.limits)

    def read(self, path: str, index: int = 0, admit: Callable[[int], None] | None = None,
             expect: tuple[int, int] | None = None) -> Sample:
        """Read and hash one file. Never raises. `admit(size)` (this reader's
        byte budget, held by the caller for as long as the bytes are worked on)
        is called once the size is known, before the bytes are read; `expect`
        as for decode.read_bytes."""
        return read_sample(path, index, self.limits, admit=admit, expect=expect)

    def decode(self, s: Sample, admit: Callable[[int], None] | None = None, preprocess: bool = True) -> Sample:
        """Decode the bytes `read` kept, transform, preprocess (not with `preprocess` False: no model will
        see this file). Never raises. `admit` as for decode.decode_bytes; without one, this reader's budget
        is held here."""
        if admit is None:
            with self.budget.hold() as admit:
                return self.decode(s, admit, preprocess)
        if s.ok:
            decode_sample(s, self.limits, self.specs if preprocess else (), keep_image=self.keep_image,
                          draft=self.draft, transform=self.transform, admit=admit, phash=self.phash,
                          keep_layout=self.keep_layout)
            if s.header_pixels and s.record.width is None and s.data:
                from .provenance.containers import stated_size

                # refused from its header: the size `meta` gives the file, where the decoder counted the same
                # pixels (docs/schema.md `width`, `height`)
                s.record.width, s.record.height = stated_size(s.data, s.header_pixels) or (None, None)
        if not self.keep_bytes:
            s.data = s.layout = None
        return s

    def __call__(self, path: str, index: int = 0) -> Sample:
        with self.byte_budget.hold() as take_bytes:
            s = self.read(path, index, take_bytes)
            with self.budget.hold() as admit:
                return self.decode(s, admit)


class Budget:
    """Units (decoded pixels, raw bytes) alive at once across the decode
    workers, whatever their number.

    A job holds what it asked for from the moment it knows the amount (before
    it decodes the pixels or reads the bytes) until the job ends; a job whose
    amount would take the total past `limit` waits for others to finish. One
    job alone is always let through (the per-file --max-pixels / --max-bytes
    refuse larger ones), so the budget never deadlocks: a job waits only while
    others hold some, and those never wait on it. A job that holds both budgets
    takes bytes first, then pixels: it waits on bytes holding nothing, on pixels
    holding bytes only, and once it holds pixels it waits on neither, so no two
    jobs wait on each other.

        with budget.hold() as admit:      # admit(n) may wait
            reader.decode(sample, admit)
    """

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.in_use = 0
        self.peak = 0          # the most held at once: what the tests check
        self._cond = threading.Condition()
        # What each thread's hold has now (one hold per thread at a time: a decode job's), and the threads
        # whose read was given up past file_timeout (`drop`): theirs no longer counts, nor what they ask.
        self._held: dict[int, int] = {}
        self._dropped: set[int] = set()

    def __getstate__(self):    # shipped to an engine's CPU tasks: a fresh, empty budget there
        return {"limit": self.limit}

    def __setstate__(self, state):
        self.__init__(state["limit"])

    def _take(self, me: int, n: int) -> None:
        fits = lambda: me in self._dropped or self.in_use == 0 or self.in_use + n <= self.limit  # noqa: E731
        with self._cond:
            if not fits():
                with waiting():  # the other jobs' time, not this file's (--file-timeout)
                    self._cond.wait_for(fits)
            if me in self._dropped:
                return
            self.in_use += n
            self._held[me] = n
            self.peak = max(self.peak, self.in_use)

    def _give(self, me: int) -> None:
        with self._cond:
            n = self._held.pop(me, 0)
            if n:
                self.in_use -= n
                self._cond.notify_all()

    def drop(self, thread: int) -> None:
        """`thread`'s read was given up (crashguard.AbandoningDeadline) and may never return: what it holds is
        given back to the other jobs, which waited for it for ever (two abandoned reads of large images held
        the whole budget, and every later file waited, its clock stopped), and what it asks later is not
        counted. The memory it keeps is bounded by the number of such reads (crashguard.GIVEN_UP_MAX)."""
        with self._cond:
            self._dropped.add(thread)
            self.in_use -= self._held.pop(thread, 0)
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self) -> Iterator[Callable[[int], None]]:
        me = threading.get_ident()

        def admit(amount: int) -> None:
            n = max(0, int(amount))
            with self._cond:
                if n <= self._held.get(me, 0):
                    return
            # A retried decode (metadata stripped) may ask again: what the first attempt held is
            # given back before waiting, so no job waits while holding part of this budget.
            self._give(me)
            self._take(me, n)

        try:
            with on_give_up(lambda: self.drop(me)):
                yield admit
        finally:
            self._give(me)
            with self._cond:
                self._dropped.discard(me)  # the thread's id may be another's once it ends


class PixelBudget(Budget):
    """Decoded pixels in flight. Without it, every worker could hold a
    --max-pixels image at once: 32 workers on 100 MP PNGs peaked at 10 GiB
    (docs/performance.md)."""

    @classmethod
    def for_limits(cls, limits: DecodeLimits | None = None) -> "PixelBudget":
        """DECODE_BUDGET_IMAGES images of --max-pixels."""
        return cls(DECODE_BUDGET_IMAGES * (limits or DecodeLimits()).max_pixels)


class ByteBudget(Budget):
    """Raw file bytes being read and parsed in the decode workers. Without it,
    every worker could hold a --max-bytes file at once (32 workers × 512 MiB)."""

    @classmethod
    def for_limits(cls, limits: DecodeLimits | None = None) -> "ByteBudget":
        """DECODE_BUDGET_IMAGES files of --max-bytes."""
        return cls(DECODE_BUDGET_IMAGES * (limits or DecodeLimits()).max_bytes)


# How long the caller's thread sleeps at most in one wait for a job: a Ctrl-C whose signal landed as it was about
# to sleep (delivered while it ran, or to a decode thread) is seen only when Python code runs again in it, and a
# wait with no end there held the scan for as long as the read (a read that never returns: for ever).
SIGNAL_POLL = 0.25


def result(f: Future[R]) -> R:
    """f.result(), waited for in slices of SIGNAL_POLL so that a stop signal is answered whatever the job does.
    Through f.result's own timeout, not `wait`, which costs ten times as much (a waiter set up and taken down on
    every call): `ordered` hands back every image of a training through here."""
    while True:
        try:
            return f.result(timeout=SIGNAL_POLL)
        except TimeoutError:
            if f.done():             # the job's own TimeoutError (a share's socket), or done just now
                return f.result()


class DecodePool(ThreadPoolExecutor):
    """The decode workers, as many as the system lets start. A thread that cannot start (RLIMIT_NPROC,
    `ulimit -u`, counts every thread of the user's processes on a shared server) ended the whole scan
    with "RuntimeError: can't start new thread", exit 2, no record written. The job was queued before
    the thread was asked for, so the workers already running take it: the pool goes on with them.
    With none running there is no one to take it, and the error stands."""

    def _adjust_thread_count(self) -> None:
        try:
            super()._adjust_thread_count()
        except RuntimeError:
            if not self._threads:
                raise
            self._max_workers = len(self._threads)


def ordered(job: Callable[[T, int], R], items: Iterable[T], workers: int = 2, ahead: int | None = None,
            pool: ThreadPoolExecutor | None = None) -> Iterator[R]:
    """job(item, index) over items in worker threads, results in input order.
    At most `ahead` jobs (default 4 per worker) are started beyond the one being
    handed back, so a lazy `items` is consumed only that far ahead. An item that
    is a path is a read in progress while its job runs (crashguard.in_flight):
    a stop names it, and ends the process without it, if it never returns."""
    workers = max(1, int(workers))
    ahead = max(1, int(ahead or 4 * workers))
    numbered = enumerate(items)
    own = pool is None
    ex = pool or DecodePool(max_workers=workers, thread_name_prefix="decode")
    run = _reading(job)
    window: deque[Future] = deque()
    finished = False
    try:
        window.extend(ex.submit(run, it, i) for i, it in itertools.islice(numbered, ahead))
        while window:
            for i, it in itertools.islice(numbered, 1):
                window.append(ex.submit(run, it, i))
            r = result(window[0])  # left in the window until it is done: a stop gives it the grace
            window.popleft()
            yield r
        finished = True
    finally:
        if own:
            _shut(ex, list(window), finished)


def _reading(job: Callable[[T, int], R]) -> Callable[[T, int], R]:
    """The job, counted as a read of its item while it runs when the item is a path (the scan's
    Pipeline._decode counts its own reads)."""
    def run(item: T, index: int) -> R:
        if not isinstance(item, (str, os.PathLike)):
            return job(item, index)
        with in_flight(os.fspath(item)):
            return job(item, index)

    return run


def _shut(pool: ThreadPoolExecutor, jobs: Sequence[Future], finished: bool) -> None:
    """The end of `ordered`'s and `OrderedChunks`'s pool. Stopped early (Ctrl-C, SIGTERM, the caller gone): the
    jobs queued behind the running ones are dropped, not decoded before the pool's exit lets the process end,
    and the running ones get crashguard.STOP_GRACE to end; one that has not (a read that never returns: a
    decoder stuck on a crafted file, a share that does not answer) is abandoned, its thread left behind, since
    Python cannot stop it: waiting for it held Ctrl-C and SIGTERM for ever."""
    running = [f for f in jobs if not f.done()]
    pool.shutdown(wait=finished, cancel_futures=True)
    # A job the shutdown cancelled stays CANCELLED, never "done" to wait(), which no worker will now tell: counted
    # as running, every early stop (`scan ... | head`, Ctrl-C) waited the whole grace and called a read abandoned.
    running = [f for f in running if not f.cancelled()]
    if not finished and running:
        from . import crashguard

        if wait(running, timeout=crashguard.STOP_GRACE).not_done:
            crashguard.abandoned += 1


class TurnPolicy:
    """Whether the decode workers take turns with the caller, chosen by measurement.

    Decoding beside a CPU model costs the model what the workers take from its
    cores, and more when a preempted model thread stalls the others at their next
    barrier; taking turns costs the decode's wall time instead. Which is cheaper
    depends on the model: on 2 cores, turns won for ViT-B-16 bf16 (small, fast
    operators) and lost for ViT-L-14 bf16, whose threads leave gaps the workers
    fill for free (docs/performance.md). So both are timed on the scan itself:
    after the first interval (model warm-up, not counted), `probe` chunks of each,
    alternating (neighbouring chunks hold similar files: a folder of large photos
    after one of small PNGs must not decide), then the one with fewer seconds per
    item over the last `window` chunks of each; every `every` chunks the other is
    timed again on `probe` chunks, alternating with the chosen one, so that a
    change in the machine's load or in the files is noticed.

    The first `patience` chunks after the warm-up take turns without timing
    overlap: probing costs what the slower mode loses, which a short scan cannot
    win back (93 photos in 6 batches of 16 spent 2 of them overlapping: 0.89 of
    model-only against 0.91 taking turns throughout), and taking turns is the
    smaller risk beside a CPU model (measured worst case 4.5 % slower than
    overlap, against 8.6 % the other way; docs/performance.md).
    """

    def __init__(self, probe: int = 2, every: int = 16, window: int = 4, patience: int = 8):
        self.probe, self.every = max(1, int(probe)), max(2 * int(probe), int(every))
        self.patience = max(0, int(patience))
        self.seconds: dict[bool, deque] = {True: deque(maxlen=window), False: deque(maxlen=window)}
        self.decisions = 0
        self.observed = 0

    def __call__(self) -> bool:
        """The mode for the next chunk: True = take turns."""
        k, self.decisions = self.decisions - 1 - self.patience, self.decisions + 1
        if k < 0:
            return True                      # warm-up, then patience: take turns, timing only that
        if k < 2 * self.probe:
            return k % 2 == 0                # probe: turns, overlap, turns, ...
        best = self.best()
        phase = (k - 2 * self.probe) % self.every - (self.every - 2 * self.probe)
        return (not best) if phase >= 0 and phase % 2 == 0 else best

    def observe(self, turns: bool, seconds: float, items: int) -> None:
        """The caller held a chunk of `items` and got the next one `seconds` later."""
        self.observed += 1
        if self.observed > 1 and items > 0:  # the first (warm-up) interval says nothing about the modes
            self.seconds[turns].append(seconds / items)

    def per_item(self, turns: bool) -> float | None:
        xs = self.seconds[turns]
        return sum(xs) / len(xs) if xs else None

    def best(self) -> bool:
        t, o = self.per_item(True), self.per_item(False)
        if t is None or o is None:
            return t is not None
        return t < o

    def summary(self) -> dict[str, Any]:
        t, o = self.per_item(True), self.per_item(False)
        return {"schedule": "adaptive", "chose": "turns" if self.best() else "overlap",
                "turns_s_per_item": None if t is None else round(t, 5),
                "overlap_s_per_item": None if o is None else round(o, 5)}


class OrderedChunks:
    """Like `ordered`, a chunk at a time: chunk k+1 is being worked on while the
    caller handles chunk k (the scan's model runs while the next batch decodes).

    take_turns=True: chunk k+1 is started only when the caller calls
    `release()` or asks for it, so the workers never run while the caller's
    core-heavy part does (for a caller that itself keeps every core busy). The
    scan releases right after its model pass: its single-threaded rest of the
    chunk (fusion, records, writing them) leaves a core the workers can use. A
    TurnPolicy decides chunk by chunk and is told how long the caller took with
    each chunk until the next was ready."""

    def __init__(self, job: Callable[[T, int], R], items: Iterable[T], size: int, workers: int = 2,
                 take_turns: "bool | TurnPolicy" = False, waiting: Callable[[], bool] | None = None):
        self.job, self.size, self.workers = job, max(1, int(size)), max(1, int(workers))
        self.numbered = enumerate(items)
        self.take_turns = take_turns
        # Whether the next item would wait on a writer (a path list on stdin that is still open and says
        # nothing now): then a chunk is cut short and the next one is not started ahead, so the records of
        # the files named so far come now, not once a chunk or two more are named.
        self.waiting = waiting
        self._ended = False
        self._pool: ThreadPoolExecutor | None = None
        self._next: list[Future] | None = None   # the chunk after the caller's, once submitted

    def _submit(self, block: bool = True) -> list[Future] | None:
        """The next chunk's jobs: `size` of them, or fewer where the items end or the next would wait
        (`waiting`). Unless `block`: None where there is no first one, or it would wait."""
        jobs: list[Future] = []
        while len(jobs) < self.size and not self._ended:
            if (jobs or not block) and self.waiting is not None and self.waiting():
                break
            item = next(self.numbered, None)
            if item is None:
                self._ended = True
                break
            jobs.append(self._pool.submit(self.job, item[1], item[0]))
        return jobs if jobs or block else None

    def release(self) -> None:
        """The caller is done with the cores: start the next chunk now (no-op when it already runs, or
        when its first item would wait on a writer: it is asked for once the caller's chunk is done)."""
        if self._pool is not None and self._next is None and not self._ended:
            self._next = self._submit(block=False)

    def __iter__(self) -> Iterator[list[R]]:
        policy = self.take_turns if callable(self.take_turns) else None
        pool = DecodePool(max_workers=self.workers, thread_name_prefix="decode")
        self._pool = pool
        pending: list[Future] = []
        finished = False
        try:
            pending = self._submit()
            last: tuple[bool, float, int] | None = None   # mode, hand-over time and size of the caller's last chunk
            while pending:
                turns = policy() if policy is not None else bool(self.take_turns)
                self._next = None if turns or self._ended else self._submit(block=False)
                done = [result(f) for f in pending]
                now = time.perf_counter()
                if policy is not None and last is not None:
                    policy.observe(last[0], now - last[1], last[2])
                last = (turns, now, len(done))
                yield done
                self.release()
                pending, self._next = self._next or [], None
                if not pending and not self._ended:
                    pending = self._submit()
            finished = True
        finally:
            jobs = pending + (self._next or [])
            self._pool, self._next = None, None
            _shut(pool, jobs, finished)


def ordered_chunks(job: Callable[[T, int], R], items: Iterable[T], size: int, workers: int = 2,
                   take_turns: "bool | TurnPolicy" = False, waiting: Callable[[], bool] | None = None) -> OrderedChunks:
    return OrderedChunks(job, items, size, workers, take_turns, waiting)


def iter_pixels(paths: Iterable[str], specs: Sequence[Mapping[str, Any]] = (), workers: int = 2,
                limits: DecodeLimits | None = None, draft: int | None = None, keep_image: bool = False,
                keep_bytes: bool = False, transform: Transform | None = None,
                ahead: int | None = None, phash: bool = False) -> Iterator[Sample]:
    """One Sample per path, in order: `s.pixels[spec_key(spec)]` (3xSxS float32)
    for each spec when `s.ok`, else `s.record.error` says why (`s.phash` with `phash`)."""
    reader = PixelReader(specs, limits, draft, keep_image, keep_bytes, transform, phash=phash)
    return ordered(reader, paths, workers, ahead)


def failure(s: Sample) -> str | None:
    """Why a sample has no pixels, as trainers log it: "code: message" (a bug
    shows as its exception alone)."""
    err = s.record.error
    if err is None:
        return None
    return err.message if err.code == "internal-error" else f"{err.code}: {err.message}"


def stack_pixels(samples: Iterable[Sample], spec: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The decoded samples' pixels for one spec as (N,3,S,S) float32, and their
    paths; failed samples are left out."""
    key = spec_key(spec)
    ok = [s for s in samples if s.ok]
    if not ok:
        size = int(spec["size"])
        return np.zeros((0, 3, size, size), np.float32), []
    return np.stack([s.pixels[key] for s in ok]), [s.path for s in ok]
