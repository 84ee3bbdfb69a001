"""JPEG quantization-table hints: libjpeg's own tables read as standard, and
a camera's table gets the nearest libjpeg quality."""
from __future__ import annotations

import io

from hypothesis import given, settings, strategies as st
from PIL import Image

from aiidetect.provenance.containers import walk
from aiidetect.provenance.structural import _IJG, jpeg_quality


def _nearest_by_loop(luma: list[int]) -> int:
    """The rule written out: the quality whose luma table has the least summed
    absolute difference, the lowest quality among ties."""
    return min(_IJG, key=lambda q: sum(abs(a - b) for a, b in zip(luma, _IJG[q][0])))


@given(st.lists(st.integers(1, 65535), min_size=64, max_size=64))
@settings(max_examples=300, deadline=None)
def test_a_foreign_table_gets_the_nearest_libjpeg_quality(luma):
    got = jpeg_quality({0: luma})
    if got["standard"]:
        assert luma == _IJG[got["quality"]][0]
    else:
        assert got == {"standard": False, "quality": None, "estimated_quality": _nearest_by_loop(luma)}


@given(st.integers(1, 100), st.lists(st.integers(-3, 3), min_size=64, max_size=64))
@settings(max_examples=200, deadline=None)
def test_a_perturbed_libjpeg_table_is_near_its_quality(q, noise):
    luma = [max(1, v + d) for v, d in zip(_IJG[q][0], noise)]
    got = jpeg_quality({0: luma})
    assert got["estimated_quality"] == _nearest_by_loop(luma)
    if any(noise):
        assert abs(got["estimated_quality"] - q) <= 10 or got["standard"]


def test_pillow_jpegs_read_as_standard_at_their_quality():
    """Tables as the scan reads them: from the file's DQT segments (zigzag order)."""
    for q in (35, 75, 95):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (120, 30, 200)).save(buf, "JPEG", quality=q)
        assert jpeg_quality(walk(buf.getvalue()).dqt) == {"standard": True, "quality": q, "estimated_quality": q}


def test_no_luma_table_means_no_hint():
    assert jpeg_quality({}) == {} and jpeg_quality({0: [1] * 10}) == {}
