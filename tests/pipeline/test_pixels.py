"""The one files->pixels reader (aiidetect.pixels) and its users: order,
failures inside their items, bounded look-ahead, the transform hook, and the
same pixels as decoding each file by hand."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from aiidetect.decode import DecodeLimits, decode_bytes, read_bytes
from aiidetect.pixels import PixelReader, TurnPolicy, failure, iter_pixels, ordered, ordered_chunks, stack_pixels
from aiidetect.preprocess import apply, draft_size, make_spec, spec_key

from aiidetect.testing.images import jpeg_bytes, noise_rgb, save

SPEC = make_spec("resize-center-crop", 32)
CROP = make_spec("center-crop", 32)


@pytest.fixture
def zoo(tmp_path):
    """Good files of several sizes and formats between hostile ones, in a fixed order."""
    paths, good = [], []
    for i in range(6):
        p = tmp_path / f"ok{i}.{'jpg' if i % 2 else 'png'}"
        save(noise_rgb(40 + 7 * i, 30 + 5 * i, seed=i), p)
        paths.append(str(p))
        good.append(True)
        bad = tmp_path / f"bad{i}"
        if i == 0:
            bad.write_bytes(b"")                          # empty
        elif i == 1:
            bad.mkdir()                                   # not a file
        elif i == 2:
            bad.write_bytes(jpeg_bytes()[:40])            # truncated JPEG
        elif i == 3:
            bad.write_bytes(b"not an image at all")
        elif i == 4:
            bad = tmp_path / "missing.png"                # does not exist
        else:
            bad.write_bytes(b"x" * 5000)                  # over the byte limit below
        paths.append(str(bad))
        good.append(False)
    return paths, good


def _by_hand(path, spec, draft=None):
    img, _ = decode_bytes(read_bytes(path), draft=draft)
    return apply(img, spec)


def test_order_failures_inside_items_and_pixels_as_decoded_by_hand(zoo):
    paths, good = zoo
    out = list(iter_pixels(paths, [SPEC, CROP], workers=3))
    assert [s.path for s in out] == paths and [s.index for s in out] == list(range(len(paths)))
    for s, ok in zip(out, good):
        if ok:
            assert s.ok and s.data is None and s.record.sha256
            for spec in (SPEC, CROP):
                assert np.array_equal(s.pixels[spec_key(spec)], _by_hand(s.path, spec))
        else:
            assert not s.ok and s.record.error.code and failure(s) and not s.pixels
    codes = [s.record.error.code for s, ok in zip(out, good) if not ok]
    assert codes[:2] == ["empty-file", "not-a-file"]


def test_byte_limit_and_jpeg_draft_match_the_decoder(zoo):
    paths, good = zoo
    out = list(iter_pixels(paths, [SPEC], workers=2, limits=DecodeLimits(max_bytes=4000),
                           draft=draft_size(SPEC)))
    assert out[-1].record.error.code == "too-large"
    for s, ok in zip(out, good):
        if ok and s.ok:
            assert np.array_equal(s.pixels[spec_key(SPEC)], _by_hand(s.path, SPEC, draft=draft_size(SPEC)))
    px, kept = stack_pixels(out, SPEC)
    assert px.shape == (len(kept), 3, 32, 32) and kept == [s.path for s in out if s.ok]


def test_load_pixels_and_time_decode_use_the_reader(zoo):
    from aiidetect.bench import time_decode
    from aiidetect.onnx_export import load_pixels

    paths, good = zoo
    px, kept = load_pixels(paths, SPEC, workers=2)
    assert kept == [p for p, ok in zip(paths, good) if ok]
    assert np.array_equal(px, np.stack([_by_hand(p, SPEC, draft=draft_size(SPEC)) for p in kept]))
    px0, kept0 = load_pixels(paths[1:2], SPEC)
    assert px0.shape == (0, 3, 32, 32) and kept0 == []
    assert time_decode(paths, SPEC, workers=2, draft=True)["ok"] == sum(good)


def test_transform_acts_between_decode_and_preprocessing_and_its_failures_stay_inside(zoo):
    paths, good = zoo
    flip = lambda img, s: img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # noqa: E731
    out = list(iter_pixels(paths[:1], [CROP], transform=flip, keep_image=True))
    img, _ = decode_bytes(read_bytes(paths[0]))
    want = apply(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), CROP)
    assert np.array_equal(out[0].pixels[spec_key(CROP)], want) and out[0].image.size == img.size

    def boom(img, s):
        raise ValueError("transform broke")

    s = PixelReader([CROP], transform=boom)(paths[0])
    assert s.record.error.code == "internal-error" and "transform broke" in s.record.error.message


def test_ordered_consumes_a_lazy_input_only_a_bounded_way_ahead():
    taken = []

    def items():
        for i in range(1000):
            taken.append(i)
            yield i

    it = ordered(lambda x, i: (x, i, threading.current_thread().name), items(), workers=2, ahead=5)
    first = [next(it) for _ in range(3)]
    assert [(x, i) for x, i, _ in first] == [(0, 0), (1, 1), (2, 2)]
    assert len(taken) <= 3 + 5
    rest = list(it)
    assert [x for x, _, _ in rest] == list(range(3, 1000))
    assert any(name.startswith("decode") for _, _, name in first + rest)


@pytest.mark.parametrize("take_turns", [False, True])
def test_ordered_chunks_keep_order_and_size(take_turns):
    chunks = list(ordered_chunks(lambda x, i: x * 10 + (i - x), range(23), 5, workers=3, take_turns=take_turns))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    assert sum(chunks, []) == [x * 10 for x in range(23)]


@pytest.mark.parametrize("take_turns", [False, True])
def test_ordered_chunks_take_turns_keeps_workers_idle_while_the_caller_works(take_turns):
    """Overlap: the next chunk is worked on while the caller holds this one.
    Turns: no job runs until the caller asks for the next chunk."""
    import threading

    busy = threading.Event()      # the caller is handling a chunk
    ran_while_busy = threading.Event()

    def job(x, i):
        if busy.is_set():
            ran_while_busy.set()
        return x

    seen = []
    for chunk in ordered_chunks(job, range(12), 3, workers=2, take_turns=take_turns):
        busy.set()
        # Overlap starts the next chunk before handing this one over: its jobs run during this wait.
        ran_while_busy.wait(0.5 if not take_turns and chunk[0] == 0 else 0.05)
        seen += chunk
        busy.clear()
    assert seen == list(range(12))
    assert ran_while_busy.is_set() is (not take_turns)


def test_taking_turns_the_caller_can_release_the_workers_before_it_asks_for_the_next_chunk():
    """release(): the caller's core-heavy part is done, so the next chunk starts while
    it finishes this one; released twice or in overlap mode, nothing is submitted twice."""
    started: list[int] = []
    ran = threading.Condition()

    def job(x, i):
        with ran:
            started.append(x)
            ran.notify_all()
        return x

    chunks = ordered_chunks(job, range(9), 3, workers=2, take_turns=True)
    seen = []
    for chunk in chunks:
        with ran:
            assert sorted(started) == list(range(chunk[-1] + 1))     # taking turns: nothing ahead yet
        chunks.release()
        chunks.release()
        following = set(range(chunk[-1] + 1, min(chunk[-1] + 4, 9)))
        with ran:   # the next chunk runs while the caller still holds this one
            assert ran.wait_for(lambda: following <= set(started), timeout=5)
        seen += chunk
    assert seen == list(range(9)) and sorted(started) == list(range(9))   # each job once

    overlap = ordered_chunks(lambda x, i: x, range(7), 2, workers=2, take_turns=False)
    out = []
    for chunk in overlap:
        overlap.release()
        out += chunk
    assert out == list(range(7))


def test_the_scan_releases_the_decode_workers_after_its_model_pass(monkeypatch):
    """Pipeline.complete calls model_done once the model detectors ran, before fusion and records."""
    from aiidetect.decode import Sample
    from aiidetect.pipeline import Pipeline, loop
    from aiidetect.records import Record

    order = []
    run_model, finish = loop.run_model, loop.finish
    monkeypatch.setattr(loop, "run_model", lambda *a: (order.append("model"), run_model(*a))[1])
    monkeypatch.setattr(loop, "finish", lambda *a: (order.append("finish"), finish(*a))[1])
    pipe = Pipeline([], batch_size=2, workers=1, schedule="turns")
    recs = pipe.complete([Sample(index=0, path="x.png", record=Record(file="x.png"))], lambda: order.append("released"))
    assert order == ["model", "released", "finish"] and len(recs) == 1


def test_turn_policy_probes_both_modes_then_keeps_the_faster_and_looks_again():
    pol = TurnPolicy(probe=2, every=8, window=4, patience=0)
    cost = {True: 1.0, False: 2.0}          # seconds per item: taking turns is faster here

    def run(n):
        modes = []
        for _ in range(n):
            m = pol()
            modes.append(m)
            pol.observe(m, cost[m] * 4, 4)
        return modes

    modes = run(5)
    assert modes == [True, True, False, True, False]   # warm-up (not counted), then turns and overlap alternating
    assert pol.per_item(True) == 1.0 and pol.per_item(False) == 2.0 and pol.best() is True
    modes = run(16)
    # the other mode re-timed on 2 of every 8 chunks, alternating with the chosen one
    assert modes[:8] == [True, True, True, True, False, True, False, True] and modes.count(False) == 4
    cost[True] = 3.0                                                  # the machine changes: turns got slower
    modes = run(24)
    assert modes[-16:].count(False) == 12 and pol.best() is False       # overlap now, turns re-timed 2 of 8
    assert pol.summary()["chose"] == "overlap"


def test_turn_policy_is_patient_before_it_probes_overlap():
    """A short scan takes turns throughout; a long one still probes and can switch."""
    pol = TurnPolicy(probe=2, every=8, window=4, patience=3)
    cost = {True: 2.0, False: 1.0}          # overlap is the faster one here
    modes = []
    for _ in range(12):
        m = pol()
        modes.append(m)
        pol.observe(m, cost[m] * 4, 4)
    assert modes[:4] == [True] * 4                      # warm-up + 3 patient chunks: no overlap yet
    assert modes[4:8] == [True, False, True, False]     # then the probes, alternating
    assert modes[8:] == [False] * 4 and pol.summary()["chose"] == "overlap"
    assert TurnPolicy().patience == 8                   # the scan's default


def test_turn_policy_in_ordered_chunks_is_told_the_callers_time_per_chunk():
    import time

    pol = TurnPolicy(probe=1, every=4, patience=0)
    chunks = []
    for chunk in ordered_chunks(lambda x, i: x, range(10), 2, workers=2, take_turns=pol):
        chunks.append(chunk)
        time.sleep(0.01)
    assert sum(chunks, []) == list(range(10))
    assert pol.decisions == 5 and pol.observed == 4      # the last chunk has no next one to wait for
    assert all(x >= 0.004 for xs in pol.seconds.values() for x in xs)   # >= 10 ms per chunk of 2


class _MeanBackbone:
    """Stands in for a frozen encoder: each output is a fixed function of the pixels,
    so equal features mean equal pixels."""

    layers = 2
    fingerprint = "mean-test"
    device = "cpu"
    dtype = "float32"

    def encode(self, x, layers=()):
        out = {"embed": x.mean(dim=(2, 3))}
        for i in layers:
            out[f"cls_{i}"] = x.amax(dim=(2, 3)) * (i + 1)
        return out


def test_extract_features_gives_the_features_of_the_hand_decoded_pixels(zoo, tmp_path):
    pytest.importorskip("torch")
    from aiidetect.feature_cache import FeatureCache, extract_features

    paths, good = zoo
    bb = _MeanBackbone()
    shrink = lambda img: img.resize((max(1, img.size[0] // 2), max(1, img.size[1] // 2)))  # noqa: E731
    seen = []
    cache = FeatureCache(tmp_path / "f.sqlite")
    got, fails = extract_features(bb, paths, SPEC, layers=(1,), batch_size=4, workers=2, cache=cache,
                                  transform=shrink, transform_key="half", progress=seen.append)
    ok = [p for p, g in zip(paths, good) if g]
    want = np.stack([_by_hand_transformed(p, shrink) for p in ok])
    assert np.allclose(got["embed"], want.mean(axis=(2, 3)), atol=1e-6)
    assert np.allclose(got["cls_1"], want.max(axis=(2, 3)) * 2, atol=1e-6)
    assert [p for p, _ in fails] == [p for p, g in zip(paths, good) if not g]
    assert fails[0][1].startswith("empty-file: ") and seen == list(range(1, len(paths) + 1))
    again, fails2 = extract_features(bb, paths, SPEC, layers=(1,), cache=cache, transform=shrink,
                                     transform_key="half")
    assert all(np.array_equal(again[k], got[k]) for k in got) and fails2 == fails
    cache.close()


def _by_hand_transformed(path, transform):
    img, _ = decode_bytes(read_bytes(path))
    return apply(transform(img), SPEC)


def test_mpft_load_images_keeps_order_and_reports_skips(zoo):
    pytest.importorskip("torch")
    from aiidetect.mpft.augment import shrink_for_cache
    from aiidetect.mpft.trainer import load_images
    from aiidetect.train.data import Item

    paths, good = zoo
    items = [Item(p, int(i % 2), "g") for i, p in enumerate(paths)]
    logged = []
    kept, imgs, skipped = load_images(items, CROP, workers=2, log=logged.append)
    assert [it.path for it in kept] == [p for p, g in zip(paths, good) if g]
    for it, im in zip(kept, imgs):
        img, _ = decode_bytes(read_bytes(it.path))
        assert np.array_equal(np.asarray(im), np.asarray(shrink_for_cache(img, CROP)))
    assert len(skipped) == len(paths) - len(kept) and skipped[0].startswith(paths[1] + ": empty-file: ")
    assert logged and "skipped" in logged[0]


def test_chunks_stopped_early_leave_the_queued_jobs_undone():
    import time

    started = []

    def job(x, i):
        started.append(i)
        time.sleep(0.02)
        return x

    it = iter(ordered_chunks(job, range(100), size=20, workers=1))
    next(it)                      # chunk 0 handed back, chunk 1 queued behind the one worker
    it.close()                    # Ctrl-C / SIGTERM in the consumer
    # Before: the 20 jobs of chunk 1 all ran (0.4 s here, minutes on large files) before the process could end.
    assert len(started) <= 22


def _asleep_waiting_for_a_job(ident: int) -> bool:
    """The thread `ident` is in the call that sleeps in a lock wait (threading.Condition.wait's acquire), waiting
    for a job's future (not, say, for a worker thread to start): it holds no GIL there and runs no Python code
    until the lock or a signal on itself wakes it."""
    import concurrent.futures._base as futures_base
    import linecache
    import sys

    frame = sys._current_frames().get(ident)
    if frame is None or frame.f_code is not threading.Condition.wait.__code__:
        return False
    if "waiter.acquire(" not in linecache.getline(frame.f_code.co_filename, frame.f_lineno):
        return False
    while frame is not None:
        if frame.f_code.co_filename == futures_base.__file__:
            return True
        frame = frame.f_back
    return False


def _stuck_read_that_interrupts_the_sleeper(main, release, returned, asleep):
    """A job that sends SIGINT to its own (decode) thread once the main thread is seen asleep waiting for a
    job, then does not return until `release` (5 s at most: the test's own bound)."""
    import signal

    def job(x, i):
        for _ in range(5000):         # bounded: a Python whose Condition.wait reads otherwise fails, not hangs
            if _asleep_waiting_for_a_job(main):
                asleep.set()
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                break
            release.wait(0.001)
        release.wait(5)               # the stuck read
        returned.set()
        return x
    return job


def test_a_stop_signal_that_lands_while_the_caller_falls_asleep_is_answered(monkeypatch):
    """A terminal's Ctrl-C whose signal lands just as the scan's thread goes to sleep waiting for a read (the
    kernel gave it to a decode thread, or it arrived between Python's last check and the sleep): the handler has
    run, but Python acts on it only when code runs again in the main thread. That waited for the read, and a
    read that does not return (a stuck decoder, a share that does not answer) held the scan for ever: its
    JSON array left open on stdout, nothing on stderr. Here the signal is sent to the decode thread once the
    main thread sleeps, which is that moment made certain."""
    from aiidetect import crashguard

    monkeypatch.setattr(crashguard, "STOP_GRACE", 0.05)  # the stop's grace for the stuck read: not this test's point
    main = threading.main_thread().ident
    release, returned, asleep = threading.Event(), threading.Event(), threading.Event()

    job = _stuck_read_that_interrupts_the_sleeper(main, release, returned, asleep)

    try:
        with pytest.raises(KeyboardInterrupt):
            list(ordered_chunks(job, range(1), size=1, workers=1))
        assert asleep.is_set(), "the main thread was never seen asleep waiting for the job"
        # Before: the interrupt surfaced only once the read had returned.
        assert not returned.is_set()
    finally:
        release.set()


def test_a_stop_while_training_waits_for_a_stuck_read_is_answered_and_names_it(monkeypatch):
    """Training, feature extraction and export's calibration read through `ordered`, which waited for each read
    with no end: Ctrl-C or SIGTERM during `train linear` over a folder with a read that did not return (a stuck
    decoder, a share that does not answer) held the command until the read returned, for ever, then waited for
    the thread again in the pool's clean-up. Now the stop is answered as the scan's is: the read gets the stop's
    grace, is abandoned, and stays named as in flight, so the command line ends the process without it."""
    from aiidetect import crashguard

    monkeypatch.setattr(crashguard, "STOP_GRACE", 0.05)
    monkeypatch.setattr(crashguard, "abandoned", 0)
    main = threading.main_thread().ident
    release, returned, asleep = threading.Event(), threading.Event(), threading.Event()

    job = _stuck_read_that_interrupts_the_sleeper(main, release, returned, asleep)

    try:
        with pytest.raises(KeyboardInterrupt):
            list(ordered(job, ["/x/hang.png", "/x/b.png"], workers=1))
        assert asleep.is_set(), "the main thread was never seen asleep waiting for the job"
        assert not returned.is_set()  # before: the interrupt surfaced only once the read had returned
        assert crashguard.abandoned == 1
        assert crashguard.reads_in_flight() == ["/x/hang.png"]  # what errors.abandon_stuck_reads names and ends
    finally:
        release.set()


def test_mpft_load_images_stopped_in_its_loop_drops_the_queued_decodes(monkeypatch):
    """load_images keeps its decode generator in a local: a Ctrl-C raised in the loop's body left it open for
    as long as the traceback lived (through the command line's stop message and its wait for the reads in
    flight), and its workers went on decoding the queued images, each a new read in flight, so the stop could
    name a healthy file as stuck. Now the generator is closed as the stop leaves the loop."""
    pytest.importorskip("torch")
    from types import SimpleNamespace

    from aiidetect import crashguard, pixels
    from aiidetect.mpft.trainer import load_images
    from aiidetect.train.data import Item

    monkeypatch.setattr(crashguard, "STOP_GRACE", 0.05)
    monkeypatch.setattr(crashguard, "abandoned", 0)
    release = threading.Event()

    def job(path, i):
        if i >= 2:
            release.wait(5)           # a decode still running when the stop comes (the test's own bound)
        return SimpleNamespace(ok=True, image=None, phash=None, record=SimpleNamespace(sha256=path))

    class StopAtSecond(dict):
        def __setitem__(self, k, v):
            super().__setitem__(k, v)
            if len(self) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(pixels, "iter_pixels", lambda paths, **kw: ordered(job, paths, workers=1))
    items = [Item(f"/x/{i}.png", 0, "g") for i in range(8)]
    seen = None
    try:
        load_images(items, CROP, workers=1, digests=StopAtSecond())
    except KeyboardInterrupt:
        seen = crashguard.abandoned   # where the command line's stop runs, the traceback still alive
    finally:
        release.set()
    assert seen == 1                  # the clean-up ran as the stop left load_images (before: 0)


def test_a_job_is_handed_back_without_concurrent_futures_wait(monkeypatch):
    """`ordered` hands back every image of a training or a feature extraction through pixels.result; each
    concurrent.futures.wait there set up and took down a waiter, 1.4 to 1.8 times `ordered`'s cost per item
    before its waits were cut into slices. A job's own TimeoutError (a share's socket) is its result, not a
    slice that ended."""
    from concurrent.futures import Future

    from aiidetect import pixels

    def no_wait(*a, **k):
        raise AssertionError("concurrent.futures.wait")

    monkeypatch.setattr(pixels, "SIGNAL_POLL", 0.01)
    monkeypatch.setattr(pixels, "wait", no_wait)
    f = Future()
    f.set_result(7)
    assert pixels.result(f) == 7
    late = Future()
    threading.Timer(0.05, late.set_exception, (TimeoutError("the share"),)).start()
    with pytest.raises(TimeoutError, match="the share"):
        pixels.result(late)


class _Writer:
    """A path list on stdin: two names written, then the writer is waited on for three more and the end."""

    def __init__(self):
        self.written, self.pulled, self.waited = 2, 0, 0

    def waiting(self) -> bool:
        return self.pulled == self.written and self.written < 5

    def __iter__(self):
        while self.pulled < 5:
            if self.pulled == self.written:
                self.waited += 1  # a real list would block here until its writer names more
                self.written = 5
            self.pulled += 1
            yield self.pulled - 1


@pytest.mark.parametrize("take_turns", [False, True])
def test_ordered_chunks_hand_over_what_came_when_the_next_item_would_wait(take_turns):
    # a list written a file at a time: each chunk took `size` items, and the next chunk was asked for before
    # the caller got this one, so the files named so far waited for a chunk or two more names, or the end
    src = _Writer()
    got = []
    for chunk in ordered_chunks(lambda x, i: x, iter(src), 16, workers=2, take_turns=take_turns, waiting=src.waiting):
        got.append((chunk, src.waited))
    assert got == [([0, 1], 0), ([2, 3, 4], 1)]  # the first two handed over before the writer was waited on
