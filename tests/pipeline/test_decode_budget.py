"""The scan's decode memory is bounded by --max-pixels, not by --workers: the
decode workers share one budget of decoded pixels (pixels.PixelBudget)."""
from __future__ import annotations

import pickle
import threading

from aiidetect.decode import DecodeLimits
from aiidetect.discover import Candidate
from aiidetect.limits import DECODE_BUDGET_IMAGES
from aiidetect.pipeline import Pipeline
from aiidetect.pixels import PixelBudget, ordered

from aiidetect.testing.images import noise_rgb, save



def _held_at_once(real, sample_at: int):
    """A decode that counts the images held at once: decoded, and held from there to the job's end
    (a short wait stands for the rest of the job). -> (decode, [the most seen at once])."""
    alive, most, lock = [0], [0], threading.Lock()

    def decode(*args, **kw):
        real(*args, **kw)
        with lock:
            alive[0] += 1
            most[0] = max(most[0], alive[0])
        threading.Event().wait(0.02)
        with lock:
            alive[0] -= 1
        return args[sample_at]

    return decode, most

def test_budget_holds_in_flight_pixels_under_its_limit_whatever_the_workers():
    budget = PixelBudget(250)
    sizes = [100, 100, 100, 60, 250, 900, 40, 100] * 6   # 900: over the limit, let through alone
    alive, seen, lock = [0], [], threading.Lock()

    def job(n, i):
        with budget.hold() as admit:
            admit(n)
            if i % 5 == 0:
                admit(n)                 # a retried decode asks again: not counted twice
            with lock:
                alive[0] += n
                seen.append(alive[0])
            threading.Event().wait(0.002)
            with lock:
                alive[0] -= n
        return i

    assert list(ordered(job, sizes, workers=32)) == list(range(len(sizes)))
    assert budget.in_use == 0
    assert max(seen) <= 900 and all(x <= 250 for x in seen if x != 900)
    assert budget.peak <= 900
    assert pickle.loads(pickle.dumps(budget)).limit == 250   # an engine's CPU tasks get their own, empty


def test_scan_decodes_at_most_the_budget_at_once_with_many_workers(tmp_path):
    # 24 images of exactly --max-pixels each, 16 workers: before the budget all 16 held one.
    paths = []
    for i in range(24):
        p = tmp_path / f"im{i:02d}.png"
        save(noise_rgb(100, 100, seed=i), p)
        paths.append(str(p))
    pipe = Pipeline([], batch_size=16, workers=16, limits=DecodeLimits(max_pixels=100 * 100))
    reader = pipe.decoding.reader
    reader.decode, most = _held_at_once(reader.decode, sample_at=0)
    recs = list(pipe.run([Candidate(p, explicit=True) for p in paths]))
    assert [r.file for r in recs] == paths and all(r.error is None for r in recs)
    assert most[0] <= DECODE_BUDGET_IMAGES


def test_decoded_images_are_allocated_above_glibcs_largest_mmap_threshold(tmp_path):
    # Pillow's 16 MiB blocks came from per-thread malloc arenas that keep freed memory: every
    # decode thread kept a large image's worth after the image was gone, whatever the budget.
    from PIL import Image

    from aiidetect.decode import decode_bytes

    p = tmp_path / "a.png"
    save(noise_rgb(8, 8, seed=0), p)
    decode_bytes(p.read_bytes())
    assert Image.core.get_block_size() > 32 * 1024 * 1024


def test_iter_pixels_shares_the_budget_across_its_workers(tmp_path, monkeypatch):
    from aiidetect import pixels

    paths = []
    for i in range(12):
        p = tmp_path / f"im{i:02d}.png"
        save(noise_rgb(100, 100, seed=i), p)
        paths.append(str(p))
    decode, most = _held_at_once(pixels.PixelReader.decode, sample_at=1)   # unbound: (self, sample, ...)
    monkeypatch.setattr(pixels.PixelReader, "decode", decode)
    out = list(pixels.iter_pixels(paths, workers=12, limits=DecodeLimits(max_pixels=100 * 100)))
    assert [s.path for s in out] == paths and all(s.ok for s in out)
    assert most[0] <= DECODE_BUDGET_IMAGES
