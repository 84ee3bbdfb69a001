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

import itertools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from .decode import DecodeLimits, Sample, decode_sample, read_sample
from .preprocess import draft_size, spec_key

T = TypeVar("T")
R = TypeVar("R")

# (decoded PIL RGB image, its Sample) -> the image to preprocess. The hook may
# also update the Sample (evaluation's perturbations replace its bytes).
Transform = Callable[[Any, Sample], Any]


def common_draft(specs: Sequence[Mapping[str, Any]]) -> int | None:
    """JPEG draft (DCT downscale) size when every spec resizes; never below what
    any of them needs. None = decode at full resolution."""
    drafts = [draft_size(s) for s in specs]
    return max(drafts) if drafts and all(d is not None for d in drafts) else None


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

    def read(self, path: str, index: int = 0) -> Sample:
        """Read and hash one file. Never raises."""
        return read_sample(path, index, self.limits)

    def decode(self, s: Sample) -> Sample:
        """Decode the bytes `read` kept, transform, preprocess. Never raises."""
        if s.ok:
            decode_sample(s, self.limits, self.specs, keep_image=self.keep_image, draft=self.draft,
                          transform=self.transform)
        if not self.keep_bytes:
            s.data = None
        return s

    def __call__(self, path: str, index: int = 0) -> Sample:
        return self.decode(self.read(path, index))


def ordered(job: Callable[[T, int], R], items: Iterable[T], workers: int = 2, ahead: int | None = None,
            pool: ThreadPoolExecutor | None = None) -> Iterator[R]:
    """job(item, index) over items in worker threads, results in input order.
    At most `ahead` jobs (default 4 per worker) are started beyond the one being
    handed back, so a lazy `items` is consumed only that far ahead."""
    workers = max(1, int(workers))
    ahead = max(1, int(ahead or 4 * workers))
    numbered = enumerate(items)
    own = pool is None
    ex = pool or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    try:
        window: deque[Future] = deque(ex.submit(job, it, i) for i, it in itertools.islice(numbered, ahead))
        while window:
            f = window.popleft()
            for i, it in itertools.islice(numbered, 1):
                window.append(ex.submit(job, it, i))
            yield f.result()
    finally:
        if own:
            ex.shutdown(wait=True, cancel_futures=True)


def ordered_chunks(job: Callable[[T, int], R], items: Iterable[T], size: int, workers: int = 2
                   ) -> Iterator[list[R]]:
    """Like `ordered`, a chunk at a time: chunk k+1 is being worked on while the
    caller handles chunk k (the scan's model runs while the next batch decodes)."""
    size = max(1, int(size))
    numbered = enumerate(items)
    with ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="decode") as pool:
        def submit() -> list[Future]:
            return [pool.submit(job, it, i) for i, it in itertools.islice(numbered, size)]

        pending = submit()
        while pending:
            nxt = submit()
            yield [f.result() for f in pending]
            pending = nxt


def iter_pixels(paths: Iterable[str], specs: Sequence[Mapping[str, Any]] = (), workers: int = 2,
                limits: DecodeLimits | None = None, draft: int | None = None, keep_image: bool = False,
                keep_bytes: bool = False, transform: Transform | None = None,
                ahead: int | None = None) -> Iterator[Sample]:
    """One Sample per path, in order: `s.pixels[spec_key(spec)]` (3xSxS float32)
    for each spec when `s.ok`, else `s.record.error` says why."""
    reader = PixelReader(specs, limits, draft, keep_image, keep_bytes, transform)
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
