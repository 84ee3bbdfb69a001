"""The command-line contract, command by command, through real subprocesses (docs/cli.md,
docs/schema.md "Exit codes"): the exit code each case documents, and with a format for
machines, stdout that parses whole (a JSON document saying what failed, or nothing at all
with the error on stderr): never a note, a progress line or half a document on stdout."""
from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from PIL import Image, PngImagePlugin

from conftest import REPO, run_cli


@pytest.fixture(scope="module")
def work(tmp_path_factory, dev_dir):
    d = tmp_path_factory.mktemp("contract")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, Seed: 42")
    for label, src in (("real", dev_dir / "real" / "ml72"), ("ai/sd", dev_dir / "ai" / "ml72")):
        (d / "data" / label).mkdir(parents=True)
        for p in sorted(src.glob("*.jpg"))[:5]:  # calibrate needs 5 of each class
            shutil.copy(p, d / "data" / label / p.name)
    files = d / "files"
    files.mkdir()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(files / "gen.png", pnginfo=info)
    Image.new("RGB", (64, 48), (200, 10, 30)).save(files / "plain.jpg", quality=90)
    (files / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (d / "small" / "real").mkdir(parents=True)
    (d / "small" / "ai" / "sd").mkdir(parents=True)
    shutil.copy(files / "plain.jpg", d / "small" / "real" / "0.jpg")
    shutil.copy(files / "gen.png", d / "small" / "ai" / "sd" / "0.png")
    shutil.copytree(REPO / "weights" / "univfd", d / "heads" / "univfd")
    shutil.copytree(d / "heads", d / "damaged-heads")
    (d / "damaged-heads" / "broken").mkdir()
    (d / "damaged-heads" / "broken" / "manifest.json").write_text('{"name": "x", "detector": "li')
    (d / "damaged.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x07" * 2000)
    r = run_cli("scan", str(files), "-d", "metadata", "--db", str(d / "store.sqlite"), "-f", "jsonl", "-q",
                "--no-cache")
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def _parses(kind: str, out: str) -> None:
    if kind == "json":
        json.loads(out)
    elif kind == "jsonl":
        assert out.strip(), "no rows"
        for line in out.splitlines():
            json.loads(line)
    elif kind == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows and len({len(r) for r in rows}) == 1, rows
    elif kind == "empty":
        assert out == "", out[-2000:]


def _check(r, rc: int, stdout: str) -> None:
    assert r.returncode == rc, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    _parses(stdout, r.stdout)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    if rc == 2 and stdout == "empty":
        assert "error" in r.stderr.lower(), r.stderr[-2000:]


def test_eval_format_json_is_metrics_json(work, tmp_path):
    """eval printed rich tables only: a script had to ask for --out-dir and read metrics.json back.
    -f json prints that document on stdout, the same one the folder gets; tables are not printed."""
    r = run_cli("eval", str(work / "data"), "-d", "metadata", "-f", "json", "--no-plots", "-o", str(tmp_path / "e"))
    _check(r, 0, "json")
    doc = json.loads(r.stdout)
    assert doc == json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert doc["run"]["n_real"] == 5 and doc["conditions"][0]["fused"]
    r = run_cli("eval", str(work / "data"), "-d", "nosuch", "-f", "json")
    _check(r, 2, "empty")


def test_calibrate_format_json_is_the_fitted_model(work, tmp_path):
    """calibrate printed its fit as prose: -f json prints the fitted model (what its manifest holds)."""
    out = tmp_path / "fusion"
    r = run_cli("calibrate", str(work / "data"), "-d", "metadata", "-f", "json", "-q", "-o", str(out))
    _check(r, 0, "json")
    doc = json.loads(r.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    assert doc["path"] == str(out) and doc["threshold"] == manifest["threshold"]
    assert doc["params"] == manifest["params"] and doc["metrics"] == manifest["metrics"]
    # too few images to fit: nothing on stdout, the reason on stderr
    r = run_cli("calibrate", str(work / "small"), "-d", "metadata", "-f", "json", "-o", str(tmp_path / "x"))
    _check(r, 2, "empty")
    assert "at least 5 real" in r.stderr and not (tmp_path / "x").exists()
