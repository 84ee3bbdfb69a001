"""scripts/coverage_fuzz.py: seeds are written, kept inputs replay, and a short
libFuzzer run executes inputs through every target and reports its stats."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO

from aiidetect.testing.images import jpeg_bytes, noise_rgb

SCRIPT = str(REPO / "scripts" / "coverage_fuzz.py")


def run(*args, timeout=240):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("cov")
    src = d / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(jpeg_bytes(noise_rgb(64, 48)))
    (src / "notes.txt").write_text("not an image")
    r = run("seeds", d / "seeds", "--from", src)
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "seeds"


def test_seeds_hold_the_hostile_corpus_and_cut_real_files(seeds):
    names = sorted(p.name for p in seeds.iterdir())
    assert sum(n.startswith("hostile-") for n in names) > 30 and sum(n.startswith("c2pa-") for n in names) == 6
    from aiidetect.testing.report_corpus import hostile_records

    assert sum(n.startswith("run-") and n.endswith(".jsonl") for n in names) == len(hostile_records()) + 1
    assert [n for n in names if n.startswith("dev-")] == ["dev-%04d.jpg" % (len(names) - 1)]   # not the .txt
    assert all(p.is_file() and not p.is_symlink() and p.stat().st_size <= 1 << 20 for p in seeds.iterdir())


@pytest.mark.parametrize("target", ["provenance", "decode", "report"])
def test_replay_runs_each_input_once(seeds, tmp_path, target):
    files = sorted(seeds.iterdir())
    r = run(target, "--replay", *files)
    assert r.returncode == 0, r.stdout[-3000:]
    assert r.stdout.count("ok: ") == len(files)


def test_replay_reports_an_input_that_fails(tmp_path, monkeypatch):
    # A parser bug stands in for a finding: the provenance target runs the parsers without the catch-all.
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import coverage_fuzz
    finally:
        sys.path.pop(0)
    from aiidetect.provenance import exif

    def broken(tiff, where=""):
        raise KeyError("boom")

    monkeypatch.setattr(exif, "read_exif", broken)
    bad = tmp_path / "exif.jpg"
    from aiidetect.testing.hostile import exif_loop, jpeg_with_app1

    bad.write_bytes(jpeg_with_app1(b"Exif\x00\x00" + exif_loop()))
    assert coverage_fuzz.main(["provenance", "--replay", str(bad)]) == 1


@pytest.mark.parametrize("target", ["provenance", "decode", "report"])
def test_a_short_libfuzzer_run_executes_inputs(seeds, tmp_path, target):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in [p for p in sorted(seeds.iterdir()) if target != "report" or p.suffix == ".jsonl"][:20]:
        (corpus / p.name).write_bytes(p.read_bytes())
    # 1 s of fuzzing (libFuzzer's clock starts after the ~5 s of instrumenting imports; the run ends ~2 s
    # later) is over a hundred inputs past the seeds even for the slowest target (report, 5 seeds: 164
    # executed on 2 loaded cores); the run's start-up, not its length, is what this smoke test is about
    r = run(target, corpus, "--seconds", 1, "--out", tmp_path / "out")
    runs = re.search(r"stat::number_of_executed_units: (\d+)", r.stderr)
    assert r.returncode == 0 and runs, r.stderr[-3000:]
    assert int(runs.group(1)) > 20
    # Nothing found in these seconds. A "slow-unit" file only says the machine stalled
    # past 10 s (the per-input timeout is 5 s); crashes, timeouts and OOMs are findings.
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("slow-unit-")] == []


def test_report_replay_flags_an_html_escape_that_is_gone(seeds, monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import coverage_fuzz
    finally:
        sys.path.pop(0)
    from aiidetect.report import html

    runs = sorted(str(p) for p in seeds.iterdir() if p.suffix == ".jsonl")
    assert coverage_fuzz.main(["report", "--replay", *runs]) == 0
    monkeypatch.setattr(html, "_e", lambda v: "" if v is None else str(v))  # a renderer that trusts the file
    assert coverage_fuzz.main(["report", "--replay", *runs]) == 1
