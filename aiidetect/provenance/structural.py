"""Weak structural hints: image size, JPEG quantization tables.

These are clues, not proof: every hint here is cheap to produce by accident
(a photo cropped to 1024x1024, a camera JPEG re-saved by a web service) and
carries a small strength on purpose.
"""
from __future__ import annotations

import math

import numpy as np

# IJG (libjpeg) Annex K tables in natural (row-major) order.
_STD_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
             14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_STD_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
               47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32
_ZIGZAG = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
           21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53,
           60, 61, 54, 47, 55, 62, 63]

# Output sizes of popular generators (width, height); either orientation.
GENERATOR_SIZES = {
    (512, 512), (768, 768), (1024, 1024), (512, 768), (640, 640), (576, 1024), (2048, 2048),
    (1152, 896), (1216, 832), (1344, 768), (1536, 640),            # SDXL buckets
    (1792, 1024),                                                   # DALL-E 3
    (1456, 816), (1232, 928), (1344, 896), (1664, 928), (1536, 1024),  # Midjourney, gpt-image
}


def _scaled(table: list[int], q: int) -> list[int]:
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return [min(max((v * scale + 50) // 100, 1), 255) for v in table]


def _zigzag(natural: list[int]) -> list[int]:
    return [natural[i] for i in _ZIGZAG]


_IJG = {q: (_zigzag(_scaled(_STD_LUMA, q)), _zigzag(_scaled(_STD_CHROMA, q))) for q in range(1, 101)}
# The luma tables as rows in quality order: the nearest one for a camera's own table is one
# array operation: 2.3 us against 231 us for a Python loop over 100 x 64 values, which held the GIL
# in a decode worker beside the model (docs/performance.md has the timeit command).
_IJG_Q = np.array(list(_IJG), dtype=np.int64)
_IJG_LUMA = np.array([luma for luma, _ in _IJG.values()], dtype=np.int64)


def jpeg_quality(dqt: dict[int, list[int]]) -> dict:
    """-> {"standard": bool, "quality": int | None, "estimated_quality": int}.

    "standard" means the tables are exactly libjpeg's scaled Annex K tables
    (what PIL, OpenCV, browsers and most web tools write); camera firmware and
    Photoshop use their own tables. estimated_quality is the IJG quality whose
    luminance table is closest.
    """
    luma = dqt.get(0)
    if not luma or len(luma) != 64:
        return {}
    chroma = dqt.get(1)
    for q, (l, c) in _IJG.items():
        if luma == l and (chroma is None or chroma == c):
            return {"standard": True, "quality": q, "estimated_quality": q}
    distance = np.abs(_IJG_LUMA - np.asarray(luma, dtype=np.int64)).sum(axis=1)
    best = int(_IJG_Q[int(np.argmin(distance))])   # argmin: the lowest quality among equally near ones
    return {"standard": False, "quality": None, "estimated_quality": best}


# Aspect ratios of cameras and screens, either way round. At the round sizes cameras, resizers and screenshots
# use (a long side of 1024, 1280, 1536 or 2048) both sides of these are multiples of 64 by arithmetic, so there
# that says nothing of a latent-diffusion model: on the dev set the multiple-of-64 hint fired on 21 of 93 real
# photos, every one at these ratios (camera sizes 1024x768, 1280x960, 2048x1536, 640x512, ...), and on none of
# the 272 AI images at them (108 got it at 1:1, StyleGAN2's 256x256).
PHOTO_ASPECTS = {(4, 3), (3, 2), (5, 4), (16, 9)}


def size_hint(width: int | None, height: int | None) -> str | None:
    """'exact' for a known generator size, 'multiple-of-64' for latent-friendly sizes (not at a camera's or
    screen's aspect ratio), else None."""
    if not width or not height:
        return None
    if (width, height) in GENERATOR_SIZES or (height, width) in GENERATOR_SIZES:
        return "exact"
    if width % 64 == 0 and height % 64 == 0 and 256 <= min(width, height) and max(width, height) <= 2048:
        g = math.gcd(width, height)
        long, short = max(width, height) // g, min(width, height) // g
        return None if (long, short) in PHOTO_ASPECTS else "multiple-of-64"
    return None
