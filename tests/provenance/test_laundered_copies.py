"""A photo's shared copy (a messenger's or web tool's JPEG: libjpeg's standard tables, EXIF stripped, the long side
scaled to 1024/1280/1600) must not read as more AI than its original. Before, such a copy got `metadata.no-camera`
(0.1), standard tables (0.1) and, at 4:3 or 16:9, a generator size (1280x960: 0.15; 1024x576: 0.4) toward AI:
a real photo's WhatsApp-like copy scanned at P(AI) 0.64 beside a tiny head at 0.49, above the generator's own
512x512 PNG (0.59)."""
import io

import pytest
from PIL import Image

from aiidetect.fusion import fuse
from aiidetect.metadata.detector import result_from_evidence
from aiidetect.provenance import analyze
from aiidetect.records import DetectorResult
from aiidetect.report.writers import headline


def _copy(size, fmt="JPEG", **save) -> bytes:
    buf = io.BytesIO()
    # Flat pixels: the metadata readers look at the container, and a flat image encodes in microseconds.
    Image.new("RGB", size, (120, 130, 140)).save(buf, fmt, **save)
    return buf.getvalue()


def _weighed(data):
    return {e.id: (e.direction, e.strength) for e in analyze(data, options={"watermark": "never"}).evidence
            if e.strength}


@pytest.mark.parametrize("size", [(1024, 576), (1280, 960), (1600, 1200), (768, 1024), (512, 512)])
def test_a_software_reencode_without_exif_weighs_nothing_toward_ai(size):
    data = _copy(size, quality=75)
    assert _weighed(data) == {}
    rep = analyze(data, options={"watermark": "never"})
    ids = {e.id: e for e in rep.evidence}
    # Still named, so a reader sees what was found: no camera metadata, and software's tables.
    assert ids["metadata.no-camera"].direction == "neutral"
    tables = ids["structure.jpeg-tables"]
    assert tables.direction == "neutral" and "quality 75" in tables.detail and "copy" in tables.detail
    assert rep.facts["jpeg"] == {"standard": True, "quality": 75, "estimated_quality": 75}


def test_the_size_note_says_why_it_is_not_read():
    tables = next(e for e in analyze(_copy((1024, 576), quality=80), options={"watermark": "never"}).evidence
                  if e.id == "structure.jpeg-tables")
    assert "1024x576, is not read as a generator's" in tables.detail
    other = next(e for e in analyze(_copy((1000, 700), quality=80), options={"watermark": "never"}).evidence
                 if e.id == "structure.jpeg-tables")
    assert "generator" not in other.detail        # no size hint there to set aside


def test_a_generator_sized_png_keeps_its_size_hint():
    # A PNG is not a software re-encode the tables can tell: its size is still read as before.
    assert _weighed(_copy((512, 512), "PNG")) == {"structure.generator-size": ("ai", 0.4)}


def test_the_verdict_says_the_pixels_judged_are_a_copy_after_what_moved_it():
    data = _copy((1280, 960), quality=75)
    md = result_from_evidence(analyze(data, options={"watermark": "never"}).evidence)
    out = fuse({"linear": DetectorResult("ok", p_ai=0.3), "metadata": md})
    assert out.p_ai == pytest.approx(0.3)                   # the copy moved nothing
    assert out.reasons[0].startswith("linear: p_ai=0.30")
    assert out.reasons[-1].startswith("metadata:structure.jpeg-tables: standard libjpeg quantization tables at "
                                      "quality 75: saved by software")
    assert headline(out.reasons) == out.reasons[0]          # the one-line views still lead with the detector


@pytest.mark.parametrize("size", [(1024, 768), (1280, 960), (2048, 1536), (1536, 2048), (640, 512), (2048, 1152)])
def test_a_camera_or_screen_aspect_at_a_round_size_is_no_latent_size(size):
    # A camera's own 2048x1536, or a 2x screenshot of a photo shown at 1024x768, saved as PNG: both sides are
    # multiples of 64 by arithmetic, and read 0.15 nats toward AI (21 of the 93 real dev photos, no AI image).
    from aiidetect.provenance.structural import size_hint

    assert size_hint(*size) is None
    assert size_hint(896, 640) == "multiple-of-64"      # 7:5, no camera's or screen's: still read
    assert size_hint(1152, 896) == "exact"


def test_a_screenshot_png_of_a_photo_weighs_nothing():
    assert _weighed(_copy((1024, 768), "PNG")) == {}
