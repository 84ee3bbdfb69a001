"""benchmarks/watermark_robustness.py writes its per-file rows one to a line: the same data as before, in a
result file a sixth the lines."""
from __future__ import annotations

import json

from conftest import REPO, load_script

RESULT = REPO / "benchmarks" / "results" / "watermark_robustness.json"


def _bench():
    return load_script("benchmarks/watermark_robustness.py")


def test_the_result_file_is_what_dumps_writes_and_reads_back_the_same():
    bench = _bench()
    text = RESULT.read_text(encoding="utf-8")
    res = json.loads(text)
    assert bench.dumps(res) == text
    assert json.loads(bench.dumps(res)) == res
    assert len(text.splitlines()) < 1000   # 40 rows of 20 files, one line each, plus the summaries


def test_dumps_keeps_every_field_and_an_empty_row():
    res = {"size": 64, "versions": {"numpy": "x"}, "rows": [
        {"transform": "t", "of": 0, "per_file": []},
        {"transform": "u", "of": 1, "per_file": [{"file": "a\nb", "agreement": None, "matched": False}]}]}
    out = _bench().dumps(res)
    assert json.loads(out) == res
    assert out.count('"file"') == 1 and '{"file": "a\\nb", "agreement": null, "matched": false}' in out
