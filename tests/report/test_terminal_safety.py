"""What `scan` prints when a file's name or metadata carries characters a terminal obeys or draws as
nothing: every format shows them as escapes (JSON as JSON escapes, which parse back to the exact name),
so `scan -f jsonl` on a terminal cannot be driven by the file, nor two names pass for one."""
from __future__ import annotations

import json

from PIL import Image, PngImagePlugin

from conftest import run_cli_in_process

# U+009B is CSI in one character (terminals that take C1 controls run "\x9b2J" as "clear the screen");
# U+202E reverses what follows; U+200B, U+2060, U+FEFF and tag characters are drawn as nothing.
HIDDEN = "\u009b\u202e\u200b\u2060\ufeff\u2028\U000e0041"


def test_json_and_table_escape_what_a_terminal_would_obey_or_hide(tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    name = "cam\u009b2J\u202egpj.exe\u200b\u2028\U000e0041.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\u009b2J\u202e\ufeff\u2060\nSteps: 20, Sampler: Euler, Seed: 1, Model: m")
    Image.new("RGB", (8, 8)).save(d / name, pnginfo=info)
    for fmt in ("jsonl", "json"):
        r = run_cli_in_process("scan", str(d), "-d", "metadata", "--no-cache", "-q", "-f", fmt)
        assert r.returncode == 0, r.stderr
        assert not set(HIDDEN) & set(r.stdout), (fmt, sorted(hex(ord(c)) for c in set(HIDDEN) & set(r.stdout)))
        rec = json.loads(r.stdout) if fmt == "jsonl" else json.loads(r.stdout)[0]
        assert rec["file"] == str(d / name)  # the same string, written with escapes
        assert "a cat\u009b2J\u202e\ufeff\u2060" in json.dumps(rec["detectors"]["metadata"], ensure_ascii=False)
    for fmt in ("table", "csv"):
        r = run_cli_in_process("scan", str(d), "-d", "metadata", "--no-cache", "-q", "-f", fmt)
        assert r.returncode == 0, r.stderr
        assert not set(HIDDEN) & set(r.stdout), fmt
        assert "\\u202egpj" in r.stdout.replace("\n", "").replace("│", "").replace(" ", ""), fmt


def test_a_backslash_that_reads_as_an_escape_is_shown_as_one():
    """A file named "photo\\u200b.jpg" with a real backslash, and one with a zero-width space, were shown
    alike, as the escape: two files passed for one again. Only a backslash that could read as an escape
    is escaped (\\u005c), so a Windows path keeps its backslashes."""
    from aiidetect.report.safe import printable

    literal, hidden = "photo\\u200b.jpg", "photo\u200b.jpg"
    assert printable(hidden) == "photo\\u200b.jpg"
    assert printable(literal) == "photo\\u005cu200b.jpg" != printable(hidden)
    assert printable("tag\\U000e0041") == "tag\\u005cU000e0041" != printable("tag\U000e0041")
    assert printable("a\\\u200b") == "a\\\\u200b" != printable("a\\\\u200b") == "a\\\\u005cu200b"
    assert printable(r"C:\Users\ana\x.jpg") == r"C:\Users\ana\x.jpg"


def test_a_name_is_escaped_once_on_stderr_and_in_the_page(tmp_path):
    """`printable` shows a real backslash before "u200b" as \\u005c, so text escaped twice (once where it
    was built, once by the console or page that shows it) read as a name holding a backslash."""
    import json as _json

    from aiidetect.testing.htmlcheck import assert_self_contained

    z = "\u200b"
    bad = tmp_path / f"notrun{z}.jsonl"
    bad.write_text("hello\n", encoding="utf-8")
    r = run_cli_in_process("report", str(bad), "-o", str(tmp_path / "x.html"))
    assert r.returncode == 2 and "notrun\\u200b.jsonl is not a saved run" in r.stderr and "005c" not in r.stderr
    run, out = tmp_path / "run.jsonl", tmp_path / f"r{z}.html"
    recs = [{"schema": "1.2", "file": f"f{k}.png", "verdict": "uncertain", "p_ai": 0.5, "detectors": {}, "reasons": [],
             "error": None, "fusion": {"kind": "model", "name": f"fus{z}{k}", "path": f"/gone{z}", "sha256": "0"}}
            for k in range(2)]
    run.write_text("".join(_json.dumps(x) + "\n" for x in recs), encoding="utf-8")
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails")
    assert r.returncode == 0 and f"-> {str(out)[:-len(z + '.html')]}\\u200b.html" in r.stderr, r.stderr
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "fus\\u200b0" in page and "005c" not in page and "005c" not in r.stderr


def test_a_csv_file_bytes_cell_is_exact_base64_even_where_it_starts_like_a_formula(tmp_path, monkeypatch):
    """The spreadsheet guard put an apostrophe before a `file_bytes` value starting with `+` or `/`, which
    `base64 -d` and strict decoders refuse: a script could not find the file the CSV names. Base64 holds no
    parenthesis, so it cannot call a function; the file name column keeps its guard."""
    import base64
    import csv
    import io
    import os

    monkeypatch.chdir(tmp_path)
    name = b"\xf8+x.jpg"  # not UTF-8; its base64 starts with "+"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(os.fsdecode(name), "JPEG")
    r = run_cli_in_process("scan", os.fsdecode(name), "-d", "metadata", "-f", "csv", "-q", "--no-cache")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert rows[0]["file_bytes"].startswith("+")
    assert base64.b64decode(rows[0]["file_bytes"], validate=True) == name
