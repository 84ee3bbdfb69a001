"""Near-duplicates of training images (perceptual, train_record.load_phashes, evaluate.overlap): a
JPEG-recompressed or resized copy of a training image has other bytes, so the exact record misses it;
the perceptual hash of its pixels does not."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from aiidetect.perceptual import THRESHOLD, BandIndex, hamming, hash_thumb, phash, popcount64
from aiidetect.testing.layouts import digests_of
from aiidetect.train_record import PHASH_FILE, NoRecord, load_phashes, record

from conftest import count_decodes, run_cli_in_process
from test_train_overlap import HEAD


BIG = (256, 256)


def _picture(seed: int, size=(96, 80)) -> Image.Image:
    """A smooth random picture (low frequencies dominate, as in photos)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _jpeg(img, q):
    b = io.BytesIO()
    img.save(b, "JPEG", quality=q)
    return Image.open(io.BytesIO(b.getvalue())).convert("RGB")


def test_the_hash_survives_recompression_and_resizing_but_not_another_picture():
    for seed in range(8):
        img = _picture(seed)
        h = phash(img)
        assert hamming(h, phash(_jpeg(img, 50))) <= THRESHOLD
        assert hamming(h, phash(img.resize((48, 40), Image.Resampling.BICUBIC))) <= THRESHOLD
        assert hamming(h, phash(_picture(seed + 100))) > THRESHOLD


def test_the_hash_bits_are_the_dct_signs_about_the_median():
    # A left-bright, right-dark picture: the first horizontal frequency is the one large coefficient.
    t = np.zeros((32, 32))
    t[:, :16] = 200.0
    h = hash_thumb(t)
    bits = [(h >> (63 - i)) & 1 for i in range(64)]
    assert bits[0] == 1 and bits[1] == 1  # DC and (0, 1) above the median of the AC terms
    assert sum(bits) <= 33  # a median split of 63 AC terms (ties fall below)
    assert hash_thumb(np.full((32, 32), 7.0)) is None  # flat: no hash
    assert phash(Image.new("RGB", (20, 200), (1, 2, 3))) is None  # too small a side to hash


def test_popcount_is_the_bit_count():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2 ** 63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    assert popcount64(x).tolist() == [bin(int(v)).count("1") for v in x]


@pytest.mark.parametrize("threshold", [0, 3, 6, 9, 12])
def test_band_index_finds_what_brute_force_finds(threshold):
    rng = np.random.default_rng(threshold)
    train = rng.integers(0, 2 ** 63, 300, dtype=np.uint64) << np.uint64(1)
    queries = []
    for i in range(400):  # copies with 0..15 bits flipped, and unrelated hashes
        if i % 2:
            h = int(train[i % 300])
            for b in rng.choice(64, i % 16, replace=False):
                h ^= 1 << int(b)
        else:
            h = int(rng.integers(0, 2 ** 63)) << 1
        queries.append(h)
    queries.append(None)
    dist, which = BandIndex(train, threshold).nearest(queries, chunk=64)
    for q, d, w in zip(queries, dist, which):
        if q is None:
            assert d == -1
            continue
        all_d = popcount64(train ^ np.uint64(q))
        want = int(all_d.min()) if all_d.min() <= threshold else -1
        assert d == want
        if d >= 0:
            assert hamming(int(w), q) == d


def _head_with_phashes(folder, trained):
    folder.mkdir(parents=True, exist_ok=True)
    from aiidetect.decode import phash_bytes

    block, blobs = record(digests_of(map(str, trained)), "test", phashes=[phash_bytes(p.read_bytes()) for p in trained])
    m = {"name": "fakehead", "detector": "fakehead", "files": {}, "training_images": block}
    for f, b in blobs.items():
        (folder / f).write_bytes(b)
        m["files"][f] = "not checked here"
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder, m


def test_the_record_is_read_back_and_an_older_head_has_none(tmp_path):
    imgs = []
    for i in range(3):
        imgs.append(tmp_path / f"{i}.png")
        _picture(i).save(imgs[-1])
    head, m = _head_with_phashes(tmp_path / "h", imgs)
    hs = load_phashes(head, m)
    assert m["training_images"]["perceptual"]["count"] == len(hs) == 3 and list(hs) == sorted(hs)
    with pytest.raises(NoRecord, match="no perceptual hashes"):
        load_phashes(head, {**m, "training_images": {k: v for k, v in m["training_images"].items()
                                                      if k != "perceptual"}})
    (head / PHASH_FILE).write_bytes(b"\0" * 8)
    with pytest.raises(NoRecord, match="holds 8 bytes"):
        load_phashes(head, m)


def test_eval_reports_a_reencoded_copy_of_a_training_image(tmp_path):
    """The copy's bytes differ (JPEG q70 of a PNG training image, and a half-size copy): not an exact
    match, reported per head as a near-duplicate, listed in near-duplicates.csv and said on stderr.
    (256 x 256.)"""
    train, ev = tmp_path / "train", tmp_path / "eval"
    trained = []
    for lab, off in (("real", 0), ("ai/gen", 50)):
        (train / lab).mkdir(parents=True)
        (ev / lab).mkdir(parents=True)
        for i in range(3):
            img = _picture(off + i, BIG)
            img.save(train / lab / f"t{i}.png")
            trained.append(train / lab / f"t{i}.png")
            _picture(off + 20 + i, BIG).save(ev / lab / f"other{i}.png")
    _picture(0, BIG).save(ev / "real" / "copy.jpg", quality=70)
    _picture(51, BIG).resize((128, 128), Image.Resampling.BICUBIC).save(ev / "ai" / "gen" / "half.png")
    HEAD["dir"], _ = _head_with_phashes(tmp_path / "weights" / "fakehead", trained)
    out = tmp_path / "o"
    r = run_cli_in_process("eval", str(ev), "-d", "fakehead", "--fusion", "none", "-f", "json", "-q",
                           "--out-dir", str(out), "--no-plots")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    rep = m["run"]["train_overlap"]["fakehead"]
    assert rep["n"] == 0  # no exact match: the bytes differ
    assert rep["near"]["status"] == "checked" and rep["near"]["n"] == 2
    assert sorted(d["file"].rsplit("/", 1)[1] for d in m["near_duplicates"]) == ["copy.jpg", "half.png"]
    assert all(d["head"] == "fakehead" and 0 <= d["distance"] <= THRESHOLD for d in m["near_duplicates"])
    assert "near-duplicates of training images" in r.stderr and "fakehead 2" in r.stderr
    rows = (out / "near-duplicates.csv").read_text().splitlines()
    assert rows[0] == "file,head,distance" and len(rows) == 3
    assert "near-duplicates of training images" in (out / "summary.md").read_text()
    assert m["conditions"][0]["detectors"]["fakehead"]["overall"]["n"] == 8  # reported, kept in the metrics


def test_calibrate_counts_and_lists_near_duplicates_and_keeps_them(tmp_path):
    """calibrate's report (without_training_images) gets the near-duplicates as eval's does: counted,
    listed, kept in the fit."""
    from aiidetect.evaluate.overlap import near_line, without_training_images
    from aiidetect.evaluate.runner import Scored
    from test_train_overlap import FakeHead

    imgs = []
    for i in range(2):
        imgs.append(tmp_path / f"{i}.png")
        _picture(i).save(imgs[-1])
    HEAD["dir"], _ = _head_with_phashes(tmp_path / "fakehead", imgs)
    det = FakeHead(HEAD["dir"])
    scored = [Scored("copy.jpg", 0, "real", phash=phash(_jpeg(_picture(1), 60))),
              Scored("other.png", 1, "g", phash=phash(_picture(9))), Scored("tiny.png", 1, "g")]
    near: list = []
    kept, rep = without_training_images(scored, [det], near_out=near)
    assert len(kept) == 3 and rep["fakehead"]["near"]["n"] == 1
    assert [(d["file"], d["head"]) for d in near] == [("copy.jpg", "fakehead")]
    assert "KEPT in the fit" in near_line(rep, fit=True)


@pytest.mark.parametrize("size", [(1024, 768), (300, 200), (200, 1100)])
def test_the_same_bytes_hash_alike_on_train_and_eval_paths_and_eval_decodes_them_whole_once(
        tmp_path, monkeypatch, size):
    """One definition (decode.phash_bytes): a JPEG's hash is of its draft to the smallest DCT scale
    whose short side is still >= SOURCE_SIDE. The scan decodes a 1024 x 768 JPEG whole for the fake head
    (no JPEG draft for the heads: Plan.build); eval once decoded it whole a second time for its hash,
    outside the decode budget. Now that is a 512 x 384 decode; trainers (whole decodes) and eval give the
    same hash of the same bytes, whichever decode each had."""
    from types import SimpleNamespace

    from aiidetect.evaluate.runner import run
    from aiidetect.feature_cache import extract_features
    from aiidetect.mpft.trainer import load_images
    from aiidetect.decode import phash_bytes
    from aiidetect.perceptual import source_size
    from aiidetect.preprocess import make_spec
    from test_train_overlap import FakeHead

    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"{seed}.jpg")
        _picture(seed, size).save(paths[-1], quality=90)
    want = [phash_bytes(p.read_bytes()) for p in paths]
    assert None not in want
    head, _ = _head_with_phashes(tmp_path / "fakehead", paths[:1])
    items = [SimpleNamespace(path=str(p), label=0, generator="real") for p in paths]
    sizes = count_decodes(monkeypatch)
    assert [s.phash for s in run(items, [FakeHead(head)])] == want
    # one whole decode per file (the scan's), and the hash's own smaller one where its scale is not the whole
    small = source_size(*size)
    assert sorted(sizes) == sorted([size] * len(paths) + ([small] * len(paths) if small != size else [])), sizes

    class bb:  # features of the pixels, without a model to build
        layers, fingerprint, device, dtype = 1, "mean-test", "cpu", "float32"
        encode = staticmethod(lambda x, layers=(): {"embed": x.mean(dim=(2, 3))})
    got: dict = {}
    extract_features(bb, list(map(str, paths)), make_spec("center-crop", 32), phashes=got)
    assert [got[str(p)] for p in paths] == want
    got = {}
    load_images(items, make_spec("resize", 32), phashes=got)
    assert [got[str(p)] for p in paths] == want


def test_the_hash_decode_is_asked_of_the_budget_beside_the_decode_it_adds_to(tmp_path):
    """A JPEG the scan drafts below the hash's scale: its second, small decode is asked of the pixel
    budget on top of the scan's pixels (both alive), with them, before either is decoded; one already at
    the hash's scale is not decoded again."""
    from aiidetect.decode import decode_sample, phash_bytes, read_sample

    p = tmp_path / "big.jpg"
    _picture(3, (1024, 768)).save(p, quality=90)
    for draft, admitted in ((16, [128 * 96 + 512 * 384] * 2), (300, [512 * 384]),
                             (None, [1024 * 768 + 512 * 384] * 2)):
        asked: list = []
        s = decode_sample(read_sample(str(p)), draft=draft, admit=asked.append, phash=True)
        assert s.ok and s.phash == phash_bytes(p.read_bytes())
        assert asked == admitted, (draft, asked)


@pytest.mark.parametrize("size", [(4000, 3000), (300, 200), (511, 600), (512, 512), (2047, 4096), (257, 9000), (767, 1100)])
def test_the_hash_source_size_is_pillows_draft(size):
    """perceptual.is_source reuses a decode only at the size Pillow's draft gives the hash's decode."""
    from aiidetect.perceptual import SOURCE_SIDE, source_size

    b = io.BytesIO()
    Image.new("RGB", size).save(b, "JPEG")
    im = Image.open(io.BytesIO(b.getvalue()))
    im.draft("RGB", (SOURCE_SIDE, SOURCE_SIDE))
    assert im.size == source_size(*size)


def test_band_index_memory_is_bounded_when_every_hash_shares_a_band(monkeypatch):
    """A crafted record (its checksum is its own) can give every training hash one band value; every
    query near it then had all of them as candidates at once, ~100 bytes each: with 64 M hashes, a
    crash. Now they are compared in slices, with the same answers as brute force."""
    import tracemalloc

    import aiidetect.perceptual as perceptual

    rng = np.random.default_rng(5)
    train = np.unique((rng.integers(0, 2 ** 47, 20000, dtype=np.uint64)) | np.uint64(0xABCD << 48))
    queries = [int(train[i]) ^ (1 << int(b)) for i, b in zip(range(0, 200, 2), rng.integers(0, 64, 100))]
    queries += [(0xABCC << 48) | int(x) for x in rng.integers(0, 2 ** 47, 100, dtype=np.uint64)]  # 1 bit off the band
    monkeypatch.setattr(perceptual, "CANDIDATES_AT_ONCE", 1 << 14)
    tracemalloc.start()
    try:
        dist, _ = BandIndex(train).nearest(queries)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, peak  # all 200 x 20,000 candidates at once: about 400 MB
    want = [int(popcount64(train ^ np.uint64(q)).min()) for q in queries]
    assert dist.tolist() == [w if w <= THRESHOLD else -1 for w in want]


@pytest.mark.parametrize("damage, why", [
    (lambda d, m: (d / PHASH_FILE).write_bytes((d / PHASH_FILE).read_bytes()[:-3]), "holds 13 bytes"),
    (lambda d, m: (d / PHASH_FILE).write_bytes((d / PHASH_FILE).read_bytes() + b"\0" * 8), "holds more than"),
    (lambda d, m: (d / PHASH_FILE).write_bytes((d / PHASH_FILE).read_bytes()[8:] + (d / PHASH_FILE).read_bytes()[:8]),
     "not sorted"),
    (lambda d, m: m["training_images"]["perceptual"].update(count=1 << 40), "not a number of images"),
    (lambda d, m: m["training_images"]["perceptual"].update(count=(64 << 20)), "not 67108864 hashes"),
    (lambda d, m: m["training_images"]["perceptual"].update(file="../" + PHASH_FILE), "not one this version"),
    (lambda d, m: m["training_images"]["perceptual"].update(kind="dct-phash-64-v0"), "not one this version"),
    (lambda d, m: m["training_images"].update(perceptual=[PHASH_FILE]), "not one this version"),
    (lambda d, m: m["files"].pop(PHASH_FILE), "not listed"),
    (lambda d, m: ((d / PHASH_FILE).unlink(), (d / PHASH_FILE).mkdir()), "not a regular file"),
])
def test_a_damaged_hash_record_makes_near_duplicates_unknown_never_a_crash(tmp_path, damage, why):
    """A truncated, grown, reordered or misdescribed train-phash.bin: the head's near-duplicates are
    unknown with the reason, its exact matches still checked; never a crash, never an allocation of a
    count the file does not hold."""
    from aiidetect.evaluate.overlap import train_overlap
    from test_train_overlap import FakeHead

    imgs = []
    for i in range(2):
        imgs.append(tmp_path / f"{i}.png")
        _picture(i).save(imgs[-1])
    head, m = _head_with_phashes(tmp_path / "h", imgs)
    damage(head, m)
    (head / "manifest.json").write_text(json.dumps(m))
    report, _ = train_overlap([FakeHead(head)], digests_of(map(str, imgs)), phashes=[phash(_picture(0)), None])
    assert report["fakehead"]["n"] == 2 and report["fakehead"]["status"] == "checked"
    near = report["fakehead"]["near"]
    assert near["status"] == "unknown" and near["n"] is None and why in near["why"], near


def test_a_job_waiting_for_the_hash_decode_holds_no_decoded_pixels_outside_the_budget(tmp_path, monkeypatch):
    """The hash's extra decode was asked for after the scan's decode, by giving its pixels back and
    waiting for both: while it waited its decoded image was alive but counted nowhere, and the freed
    budget let another whole image in (32 workers could each hold one). Its pixels are asked for with
    the first decode's, before any are decoded."""
    import threading

    from aiidetect.decode import decode_sample, phash_bytes, read_sample
    from aiidetect.pixels import PixelBudget

    p = tmp_path / "big.jpg"
    _picture(3, (1024, 768)).save(p, quality=90)
    sizes = count_decodes(monkeypatch)
    budget = PixelBudget(128 * 96 + 512 * 384)
    waits = threading.Event()
    real_wait = budget._cond.wait_for

    def wait_for(pred, timeout=None):
        waits.set()
        return real_wait(pred, timeout)
    monkeypatch.setattr(budget._cond, "wait_for", wait_for)
    out: list = []
    with budget.hold() as blocker:
        blocker(1)

        def job():
            with budget.hold() as admit:
                out.append(decode_sample(read_sample(str(p)), draft=16, admit=admit, phash=True))
        t = threading.Thread(target=job)
        t.start()
        assert waits.wait(10)
        assert sizes == []  # waiting with nothing decoded
    t.join(10)
    assert out[0].ok and out[0].phash == phash_bytes(p.read_bytes())
    assert budget.peak == 128 * 96 + 512 * 384


def test_a_head_with_v1_hashes_says_which_kind_it_has_and_what_to_do(tmp_path):
    """A head trained before dct-phash-64-v2 (hashes of whichever decode the trainer had): its
    near-duplicates are unknown, and the reason names the kind it holds, the kind this version
    computes, and the way to get them (the exact matches are still checked)."""
    from aiidetect.evaluate.overlap import train_overlap
    from test_train_overlap import FakeHead

    imgs = [tmp_path / "0.png"]
    _picture(0).save(imgs[0])
    head, m = _head_with_phashes(tmp_path / "h", imgs)
    m["training_images"]["perceptual"]["kind"] = "dct-phash-64-v1"
    (head / "manifest.json").write_text(json.dumps(m))
    report, _ = train_overlap([FakeHead(head)], digests_of(map(str, imgs)), phashes=[phash(_picture(0))])
    assert report["fakehead"]["status"] == "checked"
    near = report["fakehead"]["near"]
    assert near["status"] == "unknown", near
    assert "dct-phash-64-v1" in near["why"] and "dct-phash-64-v2" in near["why"] and "retrain" in near["why"], near
