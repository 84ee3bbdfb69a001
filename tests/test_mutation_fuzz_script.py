"""scripts/mutation_fuzz.py runs (a few seconds on small files) and reports what it found."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

from aiidetect.testing.images import jpeg_bytes, noise_rgb


def test_the_mutation_fuzzer_runs_cases_and_reports_them(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(jpeg_bytes(noise_rgb(64, 48)))
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 200, 30)).save(src / "b.png")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "mutation_fuzz.py"), str(src), "--seconds", "3",
                        "--seed", "1", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["cases"] > 20 and summary["seed"] == 1
    assert r.returncode == (1 if summary["crashes"] or summary["slow"] else 0), r.stderr[-2000:]
    assert summary["crashes"] == 0, summary["found"]
    assert not list((tmp_path / "out").glob("case-*"))   # the scratch case is removed


def test_a_caught_parser_exception_counts_as_a_crash(tmp_path, monkeypatch, capsys):
    # analyze() keeps the file when a parser raises, but loses that stage's evidence: a finding.
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import mutation_fuzz
    finally:
        sys.path.pop(0)
    from aiidetect.provenance import xmp

    def broken(*a, **k):
        raise KeyError("parser bug")

    monkeypatch.setattr(xmp, "parse_xmp", broken)
    src = tmp_path / "in"
    src.mkdir()
    from aiidetect.testing.hostile import xmp_ai_source_type

    (src / "x.jpg").write_bytes(xmp_ai_source_type())
    assert mutation_fuzz.main([str(src), "--seconds", "2", "--seed", "3", "--out", str(tmp_path / "out")]) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["crashes"] > 0 and "internal (XMP): KeyError" in summary["found"][0]["why"]
