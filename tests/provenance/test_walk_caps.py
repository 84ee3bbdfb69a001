"""The metadata walkers stop where the decoder's structure checks do (one cap in limits.py for both), and
the per-file time budget is asked inside a long walk, not only between stages."""
from __future__ import annotations

from aiidetect import limits, metastrip
from aiidetect.provenance import analyze, containers
from aiidetect.testing.hostile import jpeg_with_app1, png_chunk, png_with, with_jpeg_segments


def test_the_jpeg_metadata_walk_stops_at_the_decoders_segment_cap():
    # It walked up to 1,000,000 segments where the decoder refuses past 65,536: 999,000 empty APP5
    # segments (4 MB) took `meta` 2.2 s, and the walk had no reason to go on.
    data = with_jpeg_segments(jpeg_with_app1(b""), [(0xE5, b"")] * (limits.JPEG_MAX_SEGMENTS + 10))
    b = containers.walk(data)
    assert any(f"more than {limits.JPEG_MAX_SEGMENTS} segments" in e for e in b.errors), b.errors


def test_the_png_metadata_walk_and_the_strip_retry_stop_at_the_decoders_chunk_cap(monkeypatch):
    monkeypatch.setattr(containers, "PNG_MAX_CHUNKS", 50)
    monkeypatch.setattr(metastrip, "PNG_MAX_CHUNKS", 50)
    data = png_with([png_chunk(b"prIv", b"")] * 60)
    assert any("more than 50 chunks" in e for e in containers.walk(data).errors)
    # The retry without metadata walked 1,000,000 chunks of a file the decoder had refused for 100,000.
    assert metastrip.strip_metadata(data, "PNG") is None
    assert metastrip.strip_metadata(png_with([png_chunk(b"prIv", b"")] * 40), "PNG") is not None


def test_the_png_cap_is_the_decoders():
    assert containers.PNG_MAX_CHUNKS == limits.PNG_MAX_CHUNKS == metastrip.PNG_MAX_CHUNKS
    assert containers.JPEG_MAX_SEGMENTS == limits.JPEG_MAX_SEGMENTS
    assert containers.WEBP_MAX_CHUNKS == limits.WEBP_MAX_CHUNKS


def test_a_spent_budget_stops_a_walk_inside_it_and_says_so(monkeypatch):
    monkeypatch.setattr(containers, "WALK_BUDGET_EVERY", 8)
    asked = []

    def time_left():
        asked.append(1)
        return False

    b = containers.walk(png_with([png_chunk(b"prIv", b"")] * 40), time_left)
    assert asked and b.timed_out
    assert any("time budget ran out after 8 chunks" in e for e in b.errors), b.errors
    jpeg = with_jpeg_segments(jpeg_with_app1(b""), [(0xE5, b"")] * 40)
    assert any("time budget ran out after 8 segments" in e for e in containers.walk(jpeg, time_left).errors)
    # Through analyze: the record names the cut and carries the timeout note.
    rep = analyze(jpeg, "x", options={"budget_s": 0.0, "watermark": "never"})
    assert any("time budget ran out after 8 segments" in e for e in rep.errors), rep.errors
    assert "metadata-timeout" in {e.id for e in rep.evidence}
