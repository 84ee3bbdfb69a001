"""Paths in the output of the commands that are not scans (docs/schema.md "Output guarantees").

Every command's JSON is strict Unicode whatever the paths it names:
a path that is not UTF-8 is shown with U+FFFD, as in `scan` and `meta`. `cache info`, `doctor`, `weights
list/verify/inspect/pack` wrote such a name as lone-surrogate escapes (`"c\\udce9ache"`), which strict parsers
refuse and which a Python script cannot even print back out once parsed. And no table carries a
control sequence from a name to the terminal."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest

from conftest import REPO, run_cli_in_process

NAME = os.fsdecode(b"d\xe9r")  # Latin-1 "dér": a legal POSIX name, not UTF-8
# inspect requires these installed; a file that is no checkpoint is refused without importing them
# (pytest.importorskip would: seconds of torch import for a test of the output)
needs_torch = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "safetensors")),
                                 reason="weights inspect needs torch and safetensors")


def _strict(text: str, fmt: str) -> list:
    docs = [json.loads(line) for line in text.splitlines() if line.strip()] if fmt == "jsonl" else [json.loads(text)]
    for d in docs:  # what a strict consumer does with what it parsed: write it out as UTF-8
        json.dumps(d, ensure_ascii=False).encode("utf-8")
    return docs


@pytest.fixture
def odd(tmp_path):
    d = tmp_path / NAME
    d.mkdir()
    # heads stay under a UTF-8 name: a head's files must be (weights pack refuses one that is not)
    shutil.copytree(REPO / "weights" / "univfd", tmp_path / "heads" / "univfd")
    (d / "not-a-checkpoint.pt").write_bytes(b"not a checkpoint")
    return d


@pytest.mark.parametrize("line, rc", [
    ("cache info -f json", 0),
    ("weights list --weights-dir {d} -f json", 0),
    ("weights verify --weights-dir {d} -f json", 2),  # no head in it: nothing verified is exit 2
    ("weights pack {d}/b.tar --no-backbones --weights-dir {h} -f json", 0),
])
def test_summary_json_shows_a_path_that_is_not_utf8_as_replacement(odd, tmp_path, monkeypatch, line, rc):
    # what is under test is the writer, not the head: pack's load check would import torch (seconds, alone)
    monkeypatch.setattr("aiidetect.head_checks.load_problem", lambda *a, **k: None)
    r = run_cli_in_process(*[a.format(d=odd, h=tmp_path / "heads") for a in line.split()], env={"AIIDETECT_CACHE": str(odd / "cache")})
    assert r.returncode == rc, (r.stdout, r.stderr)
    assert "d\ufffdr" in r.stdout, r.stdout
    _strict(r.stdout, "json")


@needs_torch
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_weights_inspect_rows_show_a_path_that_is_not_utf8_as_replacement(odd, fmt):
    r = run_cli_in_process("weights", "inspect", str(odd / "not-a-checkpoint.pt"), "-f", fmt)
    assert r.returncode == 2, (r.stdout, r.stderr)  # not a checkpoint: a row that says so
    (rows,) = _strict(r.stdout, fmt) if fmt == "json" else [_strict(r.stdout, fmt)]
    assert rows[0]["path"].endswith("d\ufffdr/not-a-checkpoint.pt") and rows[0]["error"], rows


@needs_torch
def test_weights_inspect_table_shows_control_characters_of_a_name_as_escapes(tmp_path):
    # a checkpoint named with an OSC sequence retitled the terminal `weights inspect` ran in
    bad = tmp_path / "x\x1b]0;PWNED\x07.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run_cli_in_process("weights", "inspect", str(bad), "-f", "table")
    assert r.returncode == 2, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout, r.stdout
    assert "x\\u001b]0;PWNED\\u0007.pt" in r.stdout, r.stdout


def test_weights_list_and_verify_tables_show_control_characters_as_escapes(tmp_path, monkeypatch):
    # a received head's folder name and manifest text (its licence) drove the terminal the table was on
    monkeypatch.setattr("aiidetect.head_checks.load_problem", lambda *a, **k: None)  # verify's torch load: seconds
    head = tmp_path / "heads" / "uni\x1b]0;PWNED\x07fd"
    shutil.copytree(REPO / "weights" / "univfd", head)
    manifest = json.loads((head / "manifest.json").read_text(encoding="utf-8"))
    manifest["license"] = "MIT\x1b[2J [bold]not markup[/bold]"
    (head / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    for line in (("weights", "list"), ("weights", "verify")):
        r = run_cli_in_process(*line, "--weights-dir", str(head.parent), "-f", "table", env={"COLUMNS": "400"})
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout, (line, r.stdout)
        assert "uni\\u001b]0;PWNED\\u0007fd" in r.stdout, (line, r.stdout)
    assert "MIT\\u001b[2J [bold]not markup[/bold]" in run_cli_in_process(
        "weights", "list", "--weights-dir", str(head.parent), env={"COLUMNS": "400"}).stdout
