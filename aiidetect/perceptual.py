"""A 64-bit perceptual hash of an image's pixels, and a lookup of near-duplicates by Hamming distance.

Exact training records (train_record) match an evaluation image only when its bytes are a training
image's bytes; benchmarks are often re-shared through services that re-encode or resize, and a copy
with other bytes would be scored as held out. The hash here sees the picture, not the bytes:

    gray (ITU-R 601 luma) -> 32x32 box resize -> 2-D DCT-II -> the 8x8 lowest frequencies ->
    one bit per coefficient: above the median of the 63 non-DC ones

(the DCT pHash of Zauner 2010, in numpy). The low frequencies survive JPEG recompression and resizing;
the bit pattern changes when the picture does.

The hash is of a file's bytes, through one decode made for it (decode.phash_bytes): decode.decode_bytes with a
JPEG draft of SOURCE_SIDE, i.e. a JPEG shrunk in its DCT to the smallest scale (1/1, 1/2, 1/4, 1/8) whose
short side is still >= SOURCE_SIDE px, then EXIF orientation; every other format decoded whole, as
always. Trainers (full decodes) and eval (a draft for the heads' input) hash the same bytes alike by
construction: a decode already made at that scale is reused (is_source), any other costs one more
decode at that scale (decode.phash_decoded), a fraction of a full one, counted in the caller's pixel budget.
Hashed from whichever decode each side had, the same bytes moved up to 8 bits (the dev set's drafted
JPEGs). Distances measured on the dev set are in docs/evaluation.md ("Near-duplicates of training
images"), with the command that measured them.

Near-duplicate lookup (BandIndex): a pigeonhole over 4 bands of 16 bits, so N training and M query
hashes cost O((N + M) log N) plus the candidates that share a nearly equal band, not N x M.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import combinations
from typing import Any, Sequence

import numpy as np

# The hash's definition: a change to it is a new kind (old records say unknown). v1 hashed whichever decode
# the caller had (a trainer's whole image, eval's draft); v2 the decode of SOURCE_SIDE (decode.phash_bytes).
KIND = "dct-phash-64-v2"
# A JPEG is hashed from its draft to the smallest DCT scale whose short side stays >= this: each of the
# thumbnail's 32x32 cells still averages 8x8 or more decoded pixels.
SOURCE_SIDE = 256
SIDE = 32                  # the gray thumbnail hashed: 1024 pixels, a 32x32 matrix product each way
LOW = 8                    # 8x8 low-frequency coefficients -> 64 bits
# Near-duplicate when the Hamming distance is at most this (measured: docs/evaluation.md).
THRESHOLD = 6
BANDS = 4                  # the lookup's bands of 16 bits (BandIndex)
HASH_BYTES = 8
# Candidates compared at once (BandIndex): memory stays near 100 bytes each however many training hashes
# share a band value (a crafted record may give them all one).
CANDIDATES_AT_ONCE = 1 << 18
# Below this spread of the 63 AC coefficients (0..255 gray, orthonormal DCT) the picture is flat.
MIN_AC_STD = 2.0


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """The orthonormal DCT-II basis (SIDE x SIDE); only its first LOW rows are used."""
    n = np.arange(SIDE)
    k = n[:, None]
    m = np.cos(np.pi * (2 * n[None, :] + 1) * k / (2 * SIDE)) * np.sqrt(2.0 / SIDE)
    m[0] /= np.sqrt(2.0)
    return m[:LOW]


def gray_thumb(img: Any) -> np.ndarray:
    """A PIL image -> its SIDE x SIDE gray thumbnail as float64. Box filter: every source pixel counts,
    so a shrunken copy and its original average to the same thumbnail."""
    from PIL import Image

    g = img.convert("L") if img.mode != "L" else img
    if g.size != (SIDE, SIDE):
        # reducing_gap: large images are shrunk by whole blocks first (cheap, still an average)
        g = g.resize((SIDE, SIDE), Image.Resampling.BOX, reducing_gap=2.0)
    return np.asarray(g, dtype=np.float64)


def hash_thumb(thumb: np.ndarray) -> int | None:
    """The 64-bit hash of a SIDE x SIDE gray array (bit 63 = coefficient (0,0), row-major); None for a
    flat picture, whose bits would be rounding noise (measured: a flat 256x256 PNG moved 20 bits
    under JPEG q50)."""
    d = _dct_matrix()
    coef = (d @ np.asarray(thumb, dtype=np.float64) @ d.T).ravel()
    if float(np.std(coef[1:])) < MIN_AC_STD:
        return None
    # The DC term (mean brightness) only sets the median's level: left out of it, as in pHash.
    med = np.median(coef[1:])
    bits = coef > med
    return int(np.packbits(bits).view(">u8")[0])


def phash(img: Any) -> int | None:
    """The 64-bit perceptual hash of a decoded PIL image; None for one too small or too flat to tell
    apart from others (an 8x12 icon, a blank page): its hash would match unrelated images and move
    under re-encoding (measured: up to 34 bits for the dev set's 8x12 images under JPEG q50)."""
    if min(img.size) < SIDE:
        return None
    return hash_thumb(gray_thumb(img))


def source_size(width: int, height: int) -> tuple[int, int]:
    """The size of the hash's decode of a width x height JPEG: Pillow's draft choice for a
    SOURCE_SIDE x SOURCE_SIDE request (the largest of 8, 4, 2, 1 not over either side's ratio, sides
    rounded up); tests pin it to Pillow's own."""
    ratio = min(width // SOURCE_SIDE, height // SOURCE_SIDE)
    s = next(k for k in (8, 4, 2, 1) if ratio >= k or k == 1)
    return (width + s - 1) // s, (height + s - 1) // s


def is_source(info: dict) -> bool:
    """Whether a decode_bytes result (its `info`) holds the pixels the hash's own decode would: any
    format but JPEG (draft is JPEG's alone), or a JPEG decoded at the hash's scale."""
    if info.get("format") != "JPEG":
        return True
    w, h = int(info["width"]), int(info["height"])
    return tuple(info.get("draft") or (w, h)) == source_size(w, h)


def hash_decode_pixels(info: dict) -> int:
    """The pixels of the decode decode.phash_decoded adds to one whose `info` this is (0 when it reuses it):
    asked of the budget with that decode's own (decode.decode_bytes `reserve`)."""
    if is_source(info):
        return 0
    w, h = source_size(int(info["width"]), int(info["height"]))
    return w * h


def hamming(a: int, b: int) -> int:
    return int(a ^ b).bit_count()


def popcount64(x: np.ndarray) -> np.ndarray:
    """Bits set in each uint64."""
    x = np.asarray(x, dtype=np.uint64)
    b = x.view(np.uint8).reshape(x.shape + (8,))
    return np.unpackbits(b, axis=-1).sum(axis=-1).astype(np.int64)


def pack(hashes: Sequence[int]) -> bytes:
    """Sorted unique hashes as big-endian 8-byte words (a training record's file)."""
    u = np.unique(np.asarray([int(h) for h in hashes], dtype=np.uint64))
    return u.astype(">u8").tobytes()


class BandIndex:
    """Hashes (training images') to look near-duplicates up in: Hamming distance <= `threshold`.

    Multi-index hashing: the 64 bits in BANDS bands of 16. Two hashes within `threshold` bits have some
    band within r = threshold // BANDS bits of the other's (were every band r + 1 or more apart, the
    whole would be BANDS * (r + 1) > threshold apart). So each query looks up, in one sorted table per
    band, its band value and every value within r bits of it, and only those candidates are compared
    in full: no N x M scan."""

    def __init__(self, hashes, threshold: int = THRESHOLD):
        if not 0 <= threshold < 16:
            raise ValueError("threshold must be 0..15")
        self.threshold = threshold
        self.radius = threshold // BANDS
        self.hashes = np.unique(np.asarray(hashes, dtype=np.uint64))
        self.bands = []
        for b in range(BANDS):
            shift = np.uint64(16 * (BANDS - 1 - b))
            vals = ((self.hashes >> shift) & np.uint64(0xFFFF)).astype(np.int64)
            order = np.argsort(vals, kind="stable")
            self.bands.append((shift, vals[order], order))
        masks = [0]
        for r in range(1, self.radius + 1):
            masks += [sum(1 << i for i in c) for c in combinations(range(16), r)]
        self.flips = np.array(masks, dtype=np.int64)

    def nearest(self, queries, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """For each query: (the smallest distance to an indexed hash when it is <= threshold, else -1;
        that hash, 0 when none). None queries (images without a hash) get -1."""
        m = len(queries)
        dist = np.full(m, -1, dtype=np.int64)
        which = np.zeros(m, dtype=np.uint64)
        for start in range(0, m, chunk):
            part = queries[start:start + chunk]
            d, w = self._nearest(part)
            dist[start:start + len(part)], which[start:start + len(part)] = d, w
        return dist, which

    def _nearest(self, queries):
        m = len(queries)
        have = np.array([q is not None for q in queries], dtype=bool)
        q = np.array([int(x) if x is not None else 0 for x in queries], dtype=np.uint64)
        best = np.full(m, 65, dtype=np.int64)
        which = np.zeros(m, dtype=np.uint64)
        if self.hashes.size == 0 or m == 0:
            return np.full(m, -1, dtype=np.int64), which
        owner = np.repeat(np.arange(m), self.flips.size)  # the query of each probe, in every band
        for shift, sorted_vals, order in self.bands:
            qv = ((q >> shift) & np.uint64(0xFFFF)).astype(np.int64)
            probe = (qv[:, None] ^ self.flips[None, :]).ravel()
            lo = np.searchsorted(sorted_vals, probe, side="left")
            hi = np.searchsorted(sorted_vals, probe, side="right")
            cnt = hi - lo
            ends = np.cumsum(cnt)
            total = int(ends[-1]) if ends.size else 0
            # positions lo..hi-1 of every probe, flattened, taken CANDIDATES_AT_ONCE at a time
            for start in range(0, total, CANDIDATES_AT_ONCE):
                flat = np.arange(start, min(total, start + CANDIDATES_AT_ONCE))
                j = np.searchsorted(ends, flat, side="right")   # the probe each position belongs to
                pos = lo[j] + flat - (ends[j] - cnt[j])
                qi = owner[j]
                cand = self.hashes[order[pos]]
                d = popcount64(cand ^ q[qi])
                o = np.lexsort((d, qi))  # the smallest distance of each query first
                qi, d, cand = qi[o], d[o], cand[o]
                first = np.ones(qi.size, dtype=bool)
                first[1:] = qi[1:] != qi[:-1]
                qi, d, cand = qi[first], d[first], cand[first]
                better = d < best[qi]
                best[qi[better]], which[qi[better]] = d[better], cand[better]
        found = have & (best <= self.threshold)
        return np.where(found, best, -1), np.where(found, which, np.uint64(0))
