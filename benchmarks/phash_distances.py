"""The evidence behind perceptual.THRESHOLD (near-duplicates of training images, docs/evaluation.md):
Hamming distances of the DCT hash between each image of a labelled set and its re-encoded or resized
copies (what re-sharing does), and between distinct images of the set (the false-match risk); and the
band lookup's time against a brute-force scan. Every hash is decode.phash_bytes of a file's bytes (the
one definition trainers and eval use): the copies are written as files' bytes (JPEG, or PNG for a
resize) and hashed as such. Also: how far the hash of a whole decode (the definition before
dct-phash-64-v2) sits from it, for the JPEGs whose hash decode is drafted.

Usage:  python benchmarks/phash_distances.py /work/shared/data/dev [--scale 100000]
CPU only; about half a minute for the 430-image dev set.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import time

import numpy as np
from PIL import Image

from aiidetect.decode import DecodeFailure, decode_bytes, phash_bytes, phash_decoded
from aiidetect.perceptual import THRESHOLD, BandIndex, hamming, is_source, phash, popcount64

COPIES = {
    "jpeg-q75": lambda im: _encode(im, "JPEG", quality=75),
    "jpeg-q50": lambda im: _encode(im, "JPEG", quality=50),
    "resize-0.5": lambda im: _encode(_half(im), "PNG"),
    "resize-0.5+jpeg-q75": lambda im: _encode(_half(im), "JPEG", quality=75),
}


def _encode(im, fmt, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def _half(im):
    return im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.BICUBIC)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", help="a folder with manifest.csv (file,label,...)")
    ap.add_argument("--scale", type=int, default=100_000, help="training and query hashes for the lookup timing")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(f"{a.root}/manifest.csv", newline="")))
    files, hashes, unread, nohash = [], [], 0, 0
    dist: dict[str, list[int]] = {k: [] for k in COPIES}
    copy_nohash = dict.fromkeys(COPIES, 0)
    small: dict[str, list[bool]] = {k: [] for k in COPIES}  # the original has a side under 128 px
    drafted: list[int] = []  # JPEGs hashed from a draft: distance to the hash of their whole decode
    for r in rows:
        try:
            data = open(f"{a.root}/{r['file']}", "rb").read()
            img, info = decode_bytes(data)
            h = phash_decoded(data, img, info)  # the whole decode when it is the hash's own, as a trainer's
        except DecodeFailure:
            unread += 1
            continue
        if h is None:
            nohash += 1
            continue
        if not is_source(info):
            whole = phash(img)
            if whole is not None:
                drafted.append(hamming(h, whole))
        files.append(r["file"])
        hashes.append(h)
        for k, f in COPIES.items():
            h2 = phash_bytes(f(img))
            if h2 is None:
                copy_nohash[k] += 1
            else:
                dist[k].append(hamming(h, h2))
                small[k].append(min(img.size) < 128)
    print(f"{len(rows)} listed, {unread} not decodable, {nohash} without a hash (a side under 32 px, or flat), "
          f"{len(hashes)} hashed; threshold {THRESHOLD}")
    print("copy                  n    max  p99  p95  mean  > threshold  copy without hash")
    for k, v in dist.items():
        v = np.array(v)
        print(f"{k:20s} {v.size:4d} {v.max():5d} {np.percentile(v, 99):4.0f} {np.percentile(v, 95):4.0f} "
              f"{v.mean():5.2f} {int((v > THRESHOLD).sum()):8d} {copy_nohash[k]:12d}")
    big = [np.array(dist[k])[~np.array(small[k])] for k in COPIES]
    print(f"originals with both sides >= 128 px ({big[0].size}): max distance "
          + ", ".join(f"{k} {int(v.max())}" for k, v in zip(COPIES, big))
          + "; copies over the threshold of a smaller original: "
          + ", ".join(f"{k} {int(((np.array(dist[k]) > THRESHOLD) & np.array(small[k])).sum())}"
                      f"/{int((np.array(dist[k]) > THRESHOLD).sum())}" for k in COPIES))
    if drafted:
        v = np.array(drafted)
        print(f"JPEGs hashed from a draft: {v.size}; distance to the hash of their whole decode: max {v.max()}, "
              f"mean {v.mean():.2f}, over 0: {int((v > 0).sum())}")
    print("originals >= 128 px, copies over 4/5/6/7/8 bits: "
          + ", ".join(f"{k} " + "/".join(str(int((v > t).sum())) for t in (4, 5, 6, 7, 8)) for k, v in zip(COPIES, big)))
    h = np.array(hashes, dtype=np.uint64)
    d = popcount64(h[:, None] ^ h[None, :])
    i, j = np.triu_indices(len(h), 1)
    pd = d[i, j]
    print(f"distinct files: {pd.size} pairs, mean distance {pd.mean():.1f}, 0.1st percentile "
          f"{np.percentile(pd, 0.1):.0f}; pairs at <= 4/6/8/10/12: "
          + "/".join(str(int((pd <= t).sum())) for t in (4, 6, 8, 10, 12)))
    for k in np.flatnonzero(pd <= 12):
        print(f"  {pd[k]:2d}  {files[i[k]]}  {files[j[k]]}")
    rng = np.random.default_rng(0)
    train = rng.integers(0, 2 ** 63, a.scale, dtype=np.uint64) << np.uint64(1)
    queries = [int(x) for x in rng.integers(0, 2 ** 63, a.scale, dtype=np.uint64) << np.uint64(1)]
    t = time.perf_counter()
    BandIndex(train).nearest(queries)
    took = time.perf_counter() - t
    t = time.perf_counter()
    for q in queries[:200]:
        popcount64(train ^ np.uint64(q)).min()
    brute = (time.perf_counter() - t) / 200 * len(queries)
    print(f"lookup {a.scale} x {a.scale} (uniform random hashes): band index {took:.1f} s, brute force "
          f"~{brute:.0f} s (extrapolated from 200 queries)", file=sys.stdout)


if __name__ == "__main__":
    main()
