"""A WebP's decode holds libwebp's two RGBA canvases beside Pillow's frame and image: its pixels count
limits.WEBP_PIXEL_COST times, and one whose cost alone passes the decode budget is refused before loading.
A 186-byte animation declaring a 10000x10000 canvas took a scan 1.63 GB (a 100 MP PNG: 457 MB)."""
from __future__ import annotations

import io

import pytest
from PIL import Image, WebPImagePlugin

from aiidetect.decode import DecodeFailure, DecodeLimits, decode_bytes
from aiidetect.limits import DECODE_BUDGET_IMAGES, WEBP_PIXEL_COST


def _animated_webp(w: int = 8, h: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, "WEBP", save_all=True, append_images=[Image.new("RGB", (w, h), "red")],
                                  duration=100)
    return buf.getvalue()


def test_a_webp_whose_canvases_pass_the_decode_budget_is_refused_before_its_pixels(monkeypatch):
    def never(self):
        raise AssertionError("the WebP was decoded")

    data = _animated_webp()
    # 64 pixels pass --max-pixels, but their cost (4 x 64) passes two --max-pixels images' worth.
    limits = DecodeLimits(max_pixels=64 * WEBP_PIXEL_COST // DECODE_BUDGET_IMAGES - 1)
    with monkeypatch.context() as m:
        m.setattr(WebPImagePlugin.WebPImageFile, "load", never)
        with pytest.raises(DecodeFailure) as exc:
            decode_bytes(data, limits)
    assert exc.value.code == "too-large"
    assert "WebP limit" in exc.value.message and "8x8" in exc.value.message
    # What to do about it, as a user reads the record: the --max-pixels that takes this file.
    assert f"--max-pixels {64 * WEBP_PIXEL_COST // DECODE_BUDGET_IMAGES} or more scans it" in exc.value.message


def test_a_webp_within_it_decodes_and_is_charged_its_cost():
    data = _animated_webp()
    asked = []
    img, info = decode_bytes(data, DecodeLimits(max_pixels=64 * WEBP_PIXEL_COST // DECODE_BUDGET_IMAGES),
                             admit=asked.append)
    assert img.size == (8, 8) and info["frames"] == 2
    assert asked == [64 * WEBP_PIXEL_COST]
