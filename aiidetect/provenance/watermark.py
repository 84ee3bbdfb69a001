"""The DWT-DCT invisible watermark of Stable Diffusion's reference pipelines.

A vectorised re-implementation of the decoder in the `invisible-watermark`
package (imwatermark.maxDct, method 'dwtDct', scales [0, 36, 36]): the package
itself imports torch through its RivaGAN module, and its per-block Python loop
takes seconds on a photo; this one is numpy only and gives the same per-bit
votes (tests compare it with the package on embedded images).

Messages: SD 1.x/2.x scripts embed the 136 bits of b"StableDiffusionV1";
SDXL (Stability's sgm and diffusers) embeds a fixed 48-bit pattern. diffusers
hands the encoder RGB arrays where the package expects BGR, so both channel
orders are tried.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SD1_MESSAGE = b"StableDiffusionV1"
SDXL_MESSAGE = 0b101100111110110010010000011110111011000110011110
SD1_BITS = np.unpackbits(np.frombuffer(SD1_MESSAGE, dtype=np.uint8)).astype(np.uint8)
SDXL_BITS = np.array([int(b) for b in bin(SDXL_MESSAGE)[2:]], dtype=np.uint8)
PATTERNS = {"StableDiffusionV1": SD1_BITS, "SDXL": SDXL_BITS}

# Bit agreement needed to call a match. Chosen so unmarked photos essentially
# never reach it: on the 93 real dev photos the best agreement was 0.62
# (136-bit) and 0.69 (48-bit), none matched (docs/provenance.md has the
# command). For independent random bits the chance of reaching the threshold
# is P(Binomial(n, .5) >= t*n): ~1e-16 for 136 bits and ~3e-7 for 48 bits at
# 0.85. Lower would not buy recall: a 4:2:0 JPEG save at q90 or a resize leaves at most 0.77,
# and on 7 of 20 dev images (3 for SDXL) the reference encoder's own fresh mark reads
# 0.51-0.75 (docs/provenance.md "Watermark robustness").
THRESHOLDS = {"StableDiffusionV1": 0.85, "SDXL": 0.85}
SCALE = 36.0
BLOCK = 4
MIN_PIXELS = 256 * 256


@dataclass
class WatermarkResult:
    pattern: str
    agreement: float          # best over channel orders
    order: str                # "bgr" (reference scripts) or "rgb" (diffusers)
    matched: bool
    threshold: float


def _u_planes(rgb: np.ndarray, orders=("bgr", "rgb"), rows: int = 32) -> dict[str, np.ndarray]:
    """OpenCV's BGR2YUV U plane for 8-bit input, bit-exact, cropped to a multiple
    of 4: its fixed-point Y (14-bit coefficients, rounded) then
    U = 0.492 * (B - Y) + 128. "rgb" is the plane of an encoder that was given
    RGB as if it were BGR (diffusers). The plain formula, kept as the reference
    the tests hold _fast_votes to; in-place on slabs of `rows` rows."""
    h, w = rgb.shape[:2]
    H, W = h // 4 * 4, w // 4 * 4
    out = {o: np.empty((H, W), np.int32) for o in orders}
    for top in range(0, H, rows):
        r, g, b = np.moveaxis(rgb[top:min(top + rows, H), :W], -1, 0).astype(np.int32)
        g_term = g * 9617
        for order in orders:
            rr, bb = (r, b) if order == "bgr" else (b, r)
            y = rr * 4899
            y += g_term
            y += bb * 1868
            y += 1 << 13
            y >>= 14
            u = out[order][top:top + rows]
            np.subtract(bb, y, out=u)
            u *= 8061
            u += (128 << 14) + (1 << 13)
            u >>= 14
            np.clip(u, 0, 255, out=u)
    return out


def _u_channel(rgb: np.ndarray, order: str) -> np.ndarray:
    return _u_planes(rgb, (order,))[order]


def _votes_from_u(u: np.ndarray) -> np.ndarray:
    """The reference rule, as the package computes it (the scan uses _fast_votes,
    which tests hold bit-identical to this)."""
    u = u.astype(np.float64)
    # Haar DWT approximation band, with pywt's exact float operations: its
    # 1/sqrt(2) taps leave ties at 0.5*SCALE a hair above, which decides votes.
    h = 0.7071067811865476
    ca = (u[0::2, 0::2] * h + u[1::2, 0::2] * h) * h + (u[0::2, 1::2] * h + u[1::2, 1::2] * h) * h
    rb, cb = ca.shape[0] // BLOCK, ca.shape[1] // BLOCK
    blocks = ca[: rb * BLOCK, : cb * BLOCK].reshape(rb, BLOCK, cb, BLOCK).transpose(0, 2, 1, 3).reshape(rb * cb, BLOCK * BLOCK)
    # The coefficient with the largest magnitude, DC excluded (first max wins, as np.argmax in the package).
    pos = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1
    val = np.abs(blocks[np.arange(blocks.shape[0]), pos])
    return (np.mod(val, SCALE) > 0.5 * SCALE).astype(np.float64)


# U as a function of d = B - Y (in [-255, 255]), indexed by Y - B + 255: the
# second half of OpenCV's fixed-point formula as one table look-up.
_D = np.arange(-255, 256, dtype=np.int64)
_U_OF_D = np.clip((_D * 8061 + (128 << 14) + (1 << 13)) >> 14, 0, 255).astype(np.int16)[::-1].copy()
_H = 0.7071067811865476


def _exact_votes(u: np.ndarray, bi: np.ndarray, bj: np.ndarray, cb: int) -> np.ndarray:
    """The float64 rule of _votes_from_u for the blocks (bi, bj) of a slab of U
    rows: used where the integer shortcut cannot decide."""
    n = u.shape[0] // 8
    p = u.reshape(n, 8, cb, 8)[bi, :, bj, :].astype(np.float64)   # (k, 8, 8) pixels of each block
    ca = (p[:, 0::2, 0::2] * _H + p[:, 1::2, 0::2] * _H) * _H + (p[:, 0::2, 1::2] * _H + p[:, 1::2, 1::2] * _H) * _H
    flat = ca.reshape(-1, BLOCK * BLOCK)
    pos = np.argmax(np.abs(flat[:, 1:]), axis=1) + 1
    val = np.abs(flat[np.arange(flat.shape[0]), pos])
    return np.mod(val, SCALE) > 0.5 * SCALE


def _slab_votes(u: np.ndarray, cb: int) -> np.ndarray:
    """Votes of the blocks covered by `u` (8*n rows, 8*cb columns of integer U),
    equal to _votes_from_u's. Each Haar approximation coefficient is, in exact
    arithmetic, half the integer sum S of a 2x2 pixel quad; pywt's float taps
    move it by less than 1e-12. So the largest coefficient of a block (DC
    excluded) has the largest S, and its vote (value mod 36 > 18) is S mod 72 > 36,
    except where S/2 sits exactly on a multiple of 18: there the float rounding
    decides, and those blocks (a few percent) take the float64 path."""
    s = u[0::2] + u[1::2]
    s = s[:, 0::2] + s[:, 1::2]                                   # (4n, 4cb) quad sums, <= 1020
    rest = np.maximum(np.maximum(s[:, 1::4], s[:, 2::4]), s[:, 3::4])
    full = np.maximum(rest, s[:, 0::4])
    m = np.maximum(rest[0::4], full[1::4])                        # block max without its DC coefficient
    np.maximum(m, full[2::4], out=m)
    np.maximum(m, full[3::4], out=m)
    votes = (m % 72 > 36).astype(np.float64)
    bi, bj = np.nonzero((m % 36 == 0) & (m > 0))
    if bi.size:
        votes[bi, bj] = _exact_votes(u, bi, bj, cb)
    return votes


def _fast_votes(rgb: np.ndarray, orders=("bgr", "rgb"), rows: int = 128) -> dict[str, np.ndarray]:
    """{order: block votes}, bit-identical to _votes_from_u(_u_planes(rgb)[order])
    (tested), at about half its CPU time: integer U through a table, integer
    block maxima, and only the pixels the blocks cover, on cache-sized slabs of
    `rows` rows (a multiple of 8: one block row of the approximation band)."""
    h, w = rgb.shape[:2]
    rb, cb = (h // 4 * 4 // 2) // BLOCK, (w // 4 * 4 // 2) // BLOCK
    out = {o: np.empty((rb, cb), np.float64) for o in orders}
    rows = max(8, rows // 8 * 8)
    for top in range(0, rb * 8, rows):
        slab = rgb[top:min(top + rows, rb * 8), :cb * 8]
        r, g, b = slab[..., 0], slab[..., 1], slab[..., 2]   # uint8 views; products widen to int32
        g_term = np.multiply(g, 9617, dtype=np.int32)
        g_term += (1 << 13) + (255 << 14)
        for order in orders:
            rr, bb = (r, b) if order == "bgr" else (b, r)
            # floor((4899 R + 9617 G + 1868 B + 2^13) / 2^14) - B + 255 = Y - B + 255, exactly.
            x = np.multiply(rr, 4899, dtype=np.int32)
            x += g_term
            x -= np.multiply(bb, 16384 - 1868, dtype=np.int32)
            x >>= 14
            out[order][top // 8: top // 8 + x.shape[0] // 8] = _slab_votes(_U_OF_D.take(x), cb)
    return {o: a.reshape(-1) for o, a in out.items()}


def block_votes(rgb: np.ndarray, order: str = "bgr") -> np.ndarray:
    """One 0/1 vote per 4x4 block of the DWT approximation band, in the
    encoder's raster order; bit i of an n-bit message is voted by blocks i, i+n, ..."""
    return _fast_votes(rgb, (order,))[order]


def bits_from_votes(votes: np.ndarray, n_bits: int) -> np.ndarray:
    """Per-bit mean of the block votes (in [0, 1]); > 0.5 reads as bit 1."""
    idx = np.arange(votes.shape[0]) % n_bits
    sums = np.bincount(idx, weights=votes, minlength=n_bits)
    counts = np.bincount(idx, minlength=n_bits)
    return sums / np.maximum(counts, 1)


def bit_votes(rgb: np.ndarray, n_bits: int, order: str = "bgr") -> np.ndarray:
    return bits_from_votes(block_votes(rgb, order), n_bits)


def decode_bits(rgb: np.ndarray, n_bits: int, order: str = "bgr") -> np.ndarray:
    return (bit_votes(rgb, n_bits, order) * 255 > 127).astype(np.uint8)


def _agreement(votes: np.ndarray, bits: np.ndarray) -> float:
    return float(np.mean((bits_from_votes(votes, len(bits)) * 255 > 127) == bits))


def detect(rgb: np.ndarray) -> list[WatermarkResult]:
    """rgb: HxWx3 uint8, original resolution, no resizing. Empty when too small."""
    h, w = rgb.shape[:2]
    if h * w < MIN_PIXELS:
        return []
    # The block votes depend on the channel order only: compute them once per
    # order and read every message length from them.
    votes = _fast_votes(rgb)
    out = []
    for name, bits in PATTERNS.items():
        best = max(((_agreement(votes[o], bits), o) for o in ("bgr", "rgb")), key=lambda t: t[0])
        thr = THRESHOLDS[name]
        out.append(WatermarkResult(name, best[0], best[1], best[0] >= thr, thr))
    return out


def plausible_size(width: int, height: int) -> bool:
    """Sizes a Stable Diffusion pipeline writes: both sides multiples of 8
    (latent factor), at least 256x256 total, at most 2048 on a side. Larger or
    odd-sized images were resized or cropped since, which removed the mark in
    every case measured except rows cut off the bottom (docs/provenance.md
    "Watermark robustness"; `always` reads those)."""
    return (width % 8 == 0 and height % 8 == 0 and width * height >= MIN_PIXELS
            and max(width, height) <= 2048)
