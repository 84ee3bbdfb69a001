"""docs/api.md lists the keys of `Scanner.stats`: scripts read them."""
from __future__ import annotations

import re
from pathlib import Path

from aiidetect import Scanner


def test_the_stats_keys_are_the_documented_ones(tmp_path):
    """`decoded`, `model_seconds` and `duplicates_reused` were there for scripts to read but named nowhere."""
    from aiidetect.testing.images import noise_rgb

    noise_rgb().save(tmp_path / "a.png")
    with Scanner(detectors=["metadata"], cache=False) as s:
        list(s.scan([str(tmp_path / "a.png")]))
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    span = doc[doc.index("- `stats`: the last scan's"):]
    span = span[:span.index("; `discovery`")]
    assert set(re.findall(r"`(\w+)`", span)) - {"stats"} == set(s.stats)
