"""CSV injection: file names (and anything else from the files) that a spreadsheet would run as a
formula reach every CSV aiidetect writes as text, while JSON keeps them exact."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import jsonl, run_cli, run_cli_in_process
from aiidetect.report.safe import CsvRows, clean_str, csv_cell, printable
from aiidetect.testing.images import noise_rgb, save

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
FORMULA_NAMES = ['=HYPERLINK("http:__example.com","x").jpg', "+1+2.jpg", "-2+3.jpg", "@SUM(1,1).jpg",
                 "\tTAB.jpg", "\rCR.jpg", "=cmd|calc.png"]


def _safe_cell(cell: str) -> bool:
    return not cell.startswith(TRIGGERS) or _is_number(cell)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return s.strip() == s and s.lower().lstrip("+-") not in ("inf", "infinity", "nan")
    except ValueError:
        return False


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30) | st.from_regex(r"[=+\-@\t\r][^\n]{0,20}", fullmatch=True)
       | st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_a_text_cell_never_starts_a_formula_and_loses_nothing(s):
    buf = io.StringIO()
    CsvRows(buf).writerow([s])
    (cell,) = _rows(buf.getvalue())[0] or [""]
    assert _safe_cell(cell)
    # nothing a terminal would act on: control characters (but newline and tab) are shown as \uXXXX
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", cell), repr(cell)
    # and apart from that, what was added is one apostrophe in front, nothing else changed
    shown = printable(s, keep="\n\t")
    assert cell == shown or (cell == "'" + shown and shown.startswith(TRIGGERS))


def test_numbers_and_plain_text_stay_as_they_are():
    assert [csv_cell(v) for v in (None, 0.5, -0.25, 3, True, float("nan"), "-0.5", "+3e-2", "a=b", "x.jpg")] \
        == ["", 0.5, -0.25, 3, True, "", "-0.5", "+3e-2", "a=b", "x.jpg"]
    assert [csv_cell(v) for v in ("=1+1", "-inf", "@x", "\t1", "-", "+")] \
        == ["'=1+1", "'-inf", "'@x", "'\t1", "'-", "'+"]
    assert csv_cell(np.float32(0.5)) == "0.5"


@pytest.fixture(scope="module")
def formula_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("formulas")
    photo = save(noise_rgb(64, 48, 3), d / "plain.jpg", quality=90)
    for n in FORMULA_NAMES:
        if n.endswith(".png"):
            (d / n).write_bytes(b"x")  # an error record: the name reaches the error rows too
        else:
            shutil.copy(photo, d / n)
    return d


def _names_in(rows: list[list[str]], column: str) -> list[str]:
    i = rows[0].index(column)
    return [r[i] for r in rows[1:]]


def _all_cells_safe(rows: list[list[str]]) -> None:
    bad = [c for r in rows for c in r if not _safe_cell(c)]
    assert not bad, bad


def test_scan_and_meta_csv_neutralise_formula_names(formula_dir, tmp_path):
    names = sorted(p.name for p in formula_dir.iterdir())
    # relative names, as `aiidetect scan *.jpg -f csv > out.csv` would pass them
    # (-o: a file read with newline="" keeps the CR in "\rCR.jpg"; text-mode stdout would not)
    out = tmp_path / "scan.csv"
    r = run_cli("scan", "-d", "metadata", "-f", "csv", "-q", "--no-cache", "-o", str(out), "--", *names,
                cwd=formula_dir)
    assert r.returncode == 0, r.stderr
    rows = _rows(out.read_bytes().decode("utf-8"))
    _all_cells_safe(rows)
    shown = _names_in(rows, "file")
    assert sorted(s[1:] if s.startswith("'") else s for s in shown) == sorted(printable(n, "\n\t") for n in names)
    # "\rCR.jpg" shows as "\u000dCR.jpg": no carriage return for a terminal, and so no formula either
    assert "\\u000dCR.jpg" in shown and sum(s.startswith("'") for s in shown) == len(FORMULA_NAMES) - 1
    # JSON is for scripts: the exact names
    r = run_cli("scan", "-d", "metadata", "-f", "jsonl", "-q", "--no-cache", "--", *names, cwd=formula_dir)
    assert sorted(x["file"] for x in jsonl(r.stdout)) == names
    r = run_cli("meta", "-f", "csv", "-o", str(out), "--", *names, cwd=formula_dir)
    assert r.returncode == 0, r.stderr
    rows = _rows(out.read_bytes().decode("utf-8"))
    _all_cells_safe(rows)
    assert sum(s.startswith("'") for s in _names_in(rows, "file")) == len(FORMULA_NAMES) - 1


def test_results_store_csv_neutralises_formula_names(formula_dir, tmp_path):
    db = tmp_path / "audit.sqlite"
    names = sorted(p.name for p in formula_dir.iterdir())
    r = run_cli("scan", "-d", "metadata", "-f", "jsonl", "-q", "--no-cache", "--db", str(db), "--", *names,
                cwd=formula_dir)
    assert r.returncode == 0, r.stderr
    # the results commands in-process: what they write is the point (the scan keeps its working folder)
    for args in (("export",), ("failed",), ("summary",)):
        r = run_cli_in_process("results", *args, "--db", str(db), "-f", "csv")
        assert r.returncode == 0, r.stderr
        rows = _rows(r.stdout)
        assert len(rows) > 1
        _all_cells_safe(rows)
    r = run_cli_in_process("results", "failed", "--db", str(db), "-f", "csv")
    assert _names_in(_rows(r.stdout), "file") == ["'=cmd|calc.png"]
    r = run_cli_in_process("results", "failed", "--db", str(db), "-f", "json")
    assert [x["file"] for x in json.loads(r.stdout)] == ["=cmd|calc.png"]


def test_eval_scores_csv_neutralises_formula_names(tmp_path: Path):
    from aiidetect.evaluate.report import write_scores

    cols = {"raw": {"p": {"metadata": np.array([0.2, np.nan])}, "path": ["=1+1.jpg", "ok.jpg"],
                    "y": np.array([0, 1]), "generator": ["", "@sd"], "verdict": ["uncertain", "uncertain"]}}
    write_scores(tmp_path / "scores.csv", cols)
    rows = _rows((tmp_path / "scores.csv").read_text())
    _all_cells_safe(rows)
    assert rows[1][:4] == ["raw", "'=1+1.jpg", "0", ""] and rows[2][3] == "'@sd" and rows[2][4] == ""
