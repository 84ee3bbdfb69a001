"""Raw file bytes in flight are bounded by --max-bytes, not by --workers or --batch-size:
the decode workers share a byte budget (pixels.ByteBudget), and a file's bytes are dropped
once the workers are done with it unless a detector run with the model reads them."""
from __future__ import annotations

import threading

from aiidetect.decode import DecodeLimits
from aiidetect.discover import Candidate
from aiidetect.limits import DECODE_BUDGET_IMAGES
from aiidetect.metadata.detector import MetadataDetector
from aiidetect.pipeline import Pipeline
from aiidetect.testing.images import noise_rgb, save


def _files(tmp_path, n: int, pad: int) -> list[str]:
    paths = []
    for i in range(n):
        p = tmp_path / f"f{i:02d}.png"
        save(noise_rgb(16, 16, seed=i), p)
        with open(p, "ab") as f:
            f.write(b"\0" * pad)   # trailing bytes: the file is large, its pixels are not
        paths.append(str(p))
    return paths


def test_scan_reads_at_most_the_byte_budget_at_once_with_many_workers(tmp_path):
    paths = _files(tmp_path, 24, 9000)
    size = max(len(open(p, "rb").read()) for p in paths)
    limits = DecodeLimits(max_bytes=size)
    pipe = Pipeline([MetadataDetector({"watermark": "never"})], batch_size=16, workers=16, limits=limits)
    reader = pipe.decoding.reader
    real, alive, most, lock = reader.decode, [0], [0], threading.Lock()

    def decode(s, admit=None, **kw):   # counts the files whose bytes are held while their job runs
        with lock:
            alive[0] += 1
            most[0] = max(most[0], alive[0])
        threading.Event().wait(0.02)
        out = real(s, admit, **kw)
        with lock:
            alive[0] -= 1
        return out

    reader.decode = decode
    recs = list(pipe.run([Candidate(p, explicit=True) for p in paths]))
    assert [r.file for r in recs] == paths and all(r.error is None for r in recs)
    assert recs[0].detectors["metadata"].status == "ok"       # the bytes were there for the parsers
    assert most[0] <= DECODE_BUDGET_IMAGES
    assert reader.byte_budget.peak <= DECODE_BUDGET_IMAGES * size and reader.byte_budget.in_use == 0


def test_bytes_are_not_held_until_the_batch_ends(tmp_path):
    # Before: every file of the batch the model works on, and of the next, kept its bytes.
    paths = _files(tmp_path, 6, 100)
    pipe = Pipeline([MetadataDetector({"watermark": "never"})], batch_size=4, workers=2)
    held = []
    real = pipe.complete

    def complete(samples, model_done=None):
        held.extend(s.data for s in samples)
        return real(samples, model_done)

    pipe.complete = complete
    recs = list(pipe.run([Candidate(p, explicit=True) for p in paths]))
    assert len(recs) == 6 and all(r.detectors["metadata"].status == "ok" for r in recs)
    assert held == [None] * 6


def test_a_model_side_detector_that_reads_bytes_still_gets_them(tmp_path):
    from aiidetect.detectors.base import Detector
    from aiidetect.records import DetectorResult

    class Sizer(Detector):     # not per-file: runs with the model, after the workers
        family = "sizer"
        needs_pixels = False
        reads_bytes = True

        def predict(self, samples, features):
            return [DetectorResult(status="ok", p_ai=None, score=float(len(s.data or b"")), score_kind="bytes")
                    for s in samples]

    paths = _files(tmp_path, 3, 100)
    recs = list(Pipeline([Sizer()], batch_size=2, workers=2).run([Candidate(p, explicit=True) for p in paths]))
    assert [r.detectors["sizer"].score for r in recs] == [float(len(open(p, "rb").read())) for p in paths]


def test_evaluations_perturbed_reads_share_one_byte_budget(tmp_path, monkeypatch):
    # Eval builds a reader per file for a perturbed condition: each had its own, empty budget.
    from types import SimpleNamespace

    from aiidetect import pixels
    from aiidetect.evaluate.runner import run

    paths = _files(tmp_path, 12, 100)
    real, alive, most, lock = pixels.PixelReader.decode, [0], [0], threading.Lock()

    def decode(self, s, admit=None, **kw):
        with lock:
            alive[0] += 1
            most[0] = max(most[0], alive[0])
        threading.Event().wait(0.02)
        out = real(self, s, admit, **kw)
        with lock:
            alive[0] -= 1
        return out

    monkeypatch.setattr(pixels.PixelReader, "decode", decode)
    monkeypatch.setattr(pixels.ByteBudget, "for_limits", classmethod(lambda cls, limits=None: cls(2)))
    items = [SimpleNamespace(path=p, label=0, generator="") for p in paths]
    scored = run(items, [MetadataDetector({"watermark": "never"})], transform=lambda img: img, workers=12)
    assert len(scored) == 12
    assert most[0] == 1      # a budget of 2 bytes: one file at a time (one alone always proceeds)
