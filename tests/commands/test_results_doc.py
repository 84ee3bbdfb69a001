"""docs/scale.md names the keys of `results summary -f json` and the columns of `results summary` and
`results failed`: scripts read them. Checked against the commands' real output on a one-run store."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

SCALE = Path(__file__).resolve().parents[2] / "docs" / "scale.md"


def _doc_paragraph(starts: str) -> str:
    text = SCALE.read_text(encoding="utf-8")
    return text[text.index(starts):].split("\n\n")[0]


def _names(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from typer.testing import CliRunner

    from aiidetect.cli import app
    from aiidetect.testing.images import noise_rgb

    d = tmp_path_factory.mktemp("store")
    noise_rgb().save(d / "a.png")
    (d / "b.png").write_bytes(b"not an image")
    db = d / "audit.sqlite"
    r = CliRunner().invoke(app, ["scan", str(d / "a.png"), str(d / "b.png"), "-d", "metadata", "--db", str(db),
                                 "-f", "jsonl", "-q", "--no-cache"])
    assert r.exit_code == 0, r.output
    return db


def _run(*args) -> str:
    from typer.testing import CliRunner

    from aiidetect.cli import app

    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


def test_summary_json_keys_are_documented(store):
    s = json.loads(_run("results", "summary", "--db", str(store), "-f", "json"))
    para = _doc_paragraph("`summary -f json` is one object")
    top = para[para.index("one object:"):para.index("Its other formats")]
    nested_folders = _names(top[top.index("most flagged:"):top.index("; most")])
    nested_runs = _names(top[top.index("`run_details` ("):])[1:]
    doc_top = _names(re.sub(r"\([^)]*\)", "", top))
    assert sorted(s) == sorted(doc_top)
    assert list(s["folders"][0]) == nested_folders
    assert list(s["run_details"][0]) == nested_runs


def test_summary_and_failed_columns_are_documented(store):
    para = _doc_paragraph("`summary -f json` is one object")
    summary_cols = _names(para[para.index("under the columns"):para.index("(the CSV header")])
    header = next(csv.reader(io.StringIO(_run("results", "summary", "--db", str(store), "-f", "csv"))))
    assert header == summary_cols
    failed = json.loads(_run("results", "failed", "--db", str(store), "-f", "json"))
    assert [r["error_code"] for r in failed] == ["unsupported-format"]
    assert list(failed[0]) == _names(para[para.index("gives a row per failed file"):para.index("(not in")])


def test_merge_columns_are_documented(store, tmp_path):
    rows = json.loads(_run("results", "merge", "--db", str(tmp_path / "all.sqlite"), str(store), "-f", "json"))
    para = _doc_paragraph("`summary -f json` is one object")
    assert [r["added"] for r in rows] == [2]
    assert list(rows[0]) == _names(para[para.index("a row per source store"):para.index("A row whose stored")])


def _doc_sqlite_queries() -> list[str]:
    """The SQL of each `sqlite3 audit.sqlite "..."` line in docs/scale.md (a query may run over lines)."""
    text = SCALE.read_text(encoding="utf-8")
    return [" ".join(q.split()) for q in re.findall(r'sqlite3 audit\.sqlite "([^"]+)"', text)]


def test_the_plain_sqlite_queries_in_the_doc_run_on_a_store(store):
    """A reader pastes these into a shell: the evidence query said `SELECT path` beside `json_each`, which has a
    `path` column of its own, and sqlite3 refused it as ambiguous."""
    import sqlite3

    queries = _doc_sqlite_queries()
    assert len(queries) >= 6, queries
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        failed = []
        for q in queries:
            try:
                con.execute(q).fetchall()
            except sqlite3.Error as e:
                failed.append(f"{q}: {e}")
        assert not failed, failed
    finally:
        con.close()


def test_the_tables_section_names_every_table_and_column_of_a_store(store):
    """Scripts query the store with plain SQL (docs/scale.md "Tables"): the doc's table lists each table of a
    store and its columns. It left out the `meta` table, which tells the store's version and how paths are keyed."""
    import sqlite3

    text = SCALE.read_text(encoding="utf-8")
    section = text[text.index("### Tables"):].split("\n### ", 1)[0]
    doc = {}
    for line in section.splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) >= 3:
            # column names are the backticked words outside parentheses
            doc[_names(cells[0])[0]] = set(_names(re.sub(r"\([^()]*(\([^()]*\)[^()]*)*\)", "", cells[2])))
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        real = {t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")} for t in tables}
    finally:
        con.close()
    assert doc == real
