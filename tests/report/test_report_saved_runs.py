"""`aiidetect report` over large, broken and contradictory saved runs: every record gets a table row,
the cards are capped, a line is a line (not whatever str.splitlines() cuts at), and the page never
shows a failed or unreadable record under a verdict it does not hold."""
from __future__ import annotations

import io
import json
import re

# In-process: these tests are about the page a saved run gives (a new interpreter each was ~1 s); the ones
# about the process (the working folder, stdin, the locale's encoding) keep run_cli.
from conftest import run_cli, run_cli_in_process
from aiidetect.testing.htmlcheck import assert_self_contained

VERDICTS = ("ai-generated", "uncertain", "likely-real", "error")


def _rec(k: int, verdict: str, **kw) -> dict:
    r = {"schema": "1.1", "file": f"run/{k:03d}.jpg", "file_bytes": None, "sha256": None, "size_bytes": 100 + k,
         "format": "JPEG", "verdict": verdict, "p_ai": None if verdict == "error" else 0.5,
         "detectors": {}, "reasons": [f"reason {k}"], "error": None, "fusion": {"kind": "rules"}}
    if verdict == "error":
        r["error"] = {"code": "decode-error", "message": f"broken {k}"}
        r["reasons"] = []
    r.update(kw)
    return r


def _rows(html: str) -> list[list]:
    doc = assert_self_contained(html)
    return json.loads(next(body for a, body in doc.scripts if a.get("type") == "application/json"))


def _write(path, recs, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs) + tail, encoding="utf-8")


def test_a_large_run_keeps_every_row_and_caps_the_cards(tmp_path):
    """100,000 cards made a 418 MB page that Chromium took minutes to load: the page holds a row for
    every record and a card for at most --max-cards, flagged files first, and says so."""
    mix = ["likely-real"] * 20 + ["uncertain"] * 10 + ["error"] * 4 + ["ai-generated"] * 3
    recs = [_rec(k, v) for k, v in enumerate(mix)]
    run = tmp_path / "run.jsonl"
    _write(run, recs)
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--max-cards", "6", "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    assert "37 files" in r.stderr and "cards for 6" in r.stderr
    html = out.read_text(encoding="utf-8")
    doc = assert_self_contained(html)
    rows = _rows(html)
    assert [x[3] for x in rows] == [x["file"] for x in recs]  # every record, in order
    carded = [x[3] for x in rows if x[7]]
    # the 3 AI-generated, then the first 3 uncertain; in record order
    assert carded == [x["file"] for x in recs if x["verdict"] == "uncertain"][:3] + [
        x["file"] for x in recs if x["verdict"] == "ai-generated"]
    assert [c["name"] for c in doc.cards] == carded
    assert {c["id"] for c in doc.cards} == {f"f{x[0]}" for x in rows if x[7]}  # links land on cards
    text = "".join(doc.text)
    assert "Cards for 6 of 37 files." in text and "--max-cards 0" in text
    # The counts are those of every record, not of the cards.
    for v, n in (("\u2713 likely real", 20), ("? uncertain", 10), ("\u2715 error", 4), ("\u25b2 AI-generated", 3)):
        assert f"{n} {v}" in text
    # --max-cards 0: every card; --verdict: a part, which the page names.
    r = run_cli_in_process("report", str(run), "-o", str(out), "--max-cards", "0", "--no-thumbnails", "-q")
    assert r.returncode == 0 and len(assert_self_contained(out.read_text(encoding="utf-8")).cards) == 37
    r = run_cli_in_process("report", str(run), "-o", str(out), "--verdict", "error", "--verdict", "ai-generated",
                           "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    assert "7 files of 37 records" in r.stderr
    html = out.read_text(encoding="utf-8")
    assert {x[1] for x in _rows(html)} == {"error", "ai-generated"} and len(_rows(html)) == 7
    assert "only those judged ai-generated, error: 7 of the 37 records in the run" in "".join(
        assert_self_contained(html).text)
    r = run_cli_in_process("report", str(run), "-o", str(tmp_path / "x.html"), "--verdict", "fake")
    assert r.returncode == 2 and "got 'fake'" in r.stderr and not (tmp_path / "x.html").exists()


def test_max_cards_spends_no_thumbnail_on_a_file_the_page_has_no_room_for(tmp_path, monkeypatch):
    """Flagged files first in the run: once they fill --max-cards, a later file can never get a card, so
    no thumbnail (a decode per file) may be spent on it. The test above reads no thumbnails and puts the
    flagged files last, so the cap on work (cards already held for verdicts shown first) went unchecked."""
    from aiidetect.report import html as report_html

    mix = ["ai-generated"] * 3 + ["uncertain"] * 10 + ["error"] * 4 + ["likely-real"] * 20
    recs = [_rec(k, v) for k, v in enumerate(mix)]
    run = tmp_path / "run.jsonl"
    _write(run, recs)
    asked = []
    monkeypatch.setattr(report_html, "thumbnail_data_uri", lambda path, **kw: asked.append(path) or (None, "none"))
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--max-cards", "6", "-q")
    assert r.returncode == 0, r.stderr
    carded = [x[3] for x in _rows(out.read_text(encoding="utf-8")) if x[7]]
    # the 3 AI-generated and the first 3 uncertain: a thumbnail for each card, none for anything else
    assert carded == [x["file"] for x in recs[:6]]
    assert asked == carded


def test_a_line_ends_at_newline_only(tmp_path):
    """A saved run may hold U+2028, U+0085 and \\x1c raw inside strings (a file name may hold them; `scan`
    wrote the first two raw until it escaped them): str.splitlines() cut such a record into three 'not JSON'
    error cards."""
    name = "news/a\u2028b\x85c\x1cd.jpg"
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain", file=name), _rec(1, "likely-real")])
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails")
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
    assert "2 files (1 uncertain, 1 likely-real)" in r.stderr
    doc = assert_self_contained(out.read_text(encoding="utf-8"))
    # control characters and line separators are shown as escapes, as in the table and CSV
    assert [c["name"] for c in doc.cards] == ["news/a\\u2028b\\u0085c\\u001cd.jpg", "run/001.jpg"]


def test_a_run_saved_again_with_a_byte_order_mark_keeps_every_record(tmp_path):
    """Notepad and PowerShell's `Out-File -Encoding utf8` put a BOM in front of a run they save: the
    first record of a JSONL (every record of a JSON array) was a 'not JSON' error card, exit 0."""
    recs = [_rec(0, "ai-generated"), _rec(1, "likely-real")]
    for name, text in (("run.jsonl", "".join(json.dumps(r) + "\n" for r in recs)),
                       ("run.json", json.dumps(recs, indent=2) + "\n")):
        run = tmp_path / name
        run.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
        r = run_cli_in_process("report", str(run), "-o", str(tmp_path / "r.html"), "--no-thumbnails")
        assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
        assert "2 files (1 ai-generated, 1 likely-real)" in r.stderr, r.stderr


def test_a_run_on_stdin_is_read_as_utf8_whatever_the_locale(tmp_path):
    """`report -` read stdin in the locale's encoding: under latin-1 a name became mojibake on the page,
    under ascii the report ended with an unexpected UnicodeDecodeError (exit 2). A file was always UTF-8."""
    name = "news/caf\u00e9\u2014\U0001f600.jpg"
    text = json.dumps(_rec(0, "uncertain", file=name), ensure_ascii=False) + "\n"
    for enc in ("latin-1",):  # ascii is the same misreading, and a second interpreter start
        out = tmp_path / f"{enc}.html"
        r = run_cli("report", "-", "-o", str(out), "--no-thumbnails", input=text, env={"PYTHONIOENCODING": enc})
        assert r.returncode == 0 and "note:" not in r.stderr, (enc, r.stderr[-500:])
        assert [c["name"] for c in assert_self_contained(out.read_text(encoding="utf-8")).cards] == [name], enc


def test_an_overlong_line_is_skipped_unread():
    """A 2 GB line must not be read into memory: past the cap it is read and dropped a piece at a time."""
    from aiidetect.report.html import iter_saved

    good = json.dumps(_rec(0, "uncertain"))
    src = io.StringIO(good + "\n" + '{"file": "' + "x" * 5000 + '"}\n' + good + "\n")
    problems: list[str] = []
    recs = list(iter_saved(src, problems, max_line=len(good) + 10))
    assert [r["file"] for r in recs] == ["run/000.jpg", "(input line 2)", "run/000.jpg"]
    assert recs[1]["error"]["message"] == f"longer than {len(good) + 10:,} characters (5,012); not read"
    assert problems == [f"line 2: {recs[1]['error']['message']}"]


def test_an_overlong_first_line_behind_a_byte_order_mark_is_still_skipped_whole():
    """The mark is counted with the line it stands in front of: taken off first, a first line one
    character over the cap was parsed cut short and its tail read as a second line (two error cards)."""
    from aiidetect.report.html import iter_saved

    good = json.dumps(_rec(0, "uncertain"))
    long = '{"file": "' + "x" * 500 + '"}'
    problems: list[str] = []
    recs = list(iter_saved(io.StringIO("\ufeff" + long + "\n" + good + "\n"), problems, max_line=len(long) - 1))
    assert [r["file"] for r in recs] == ["(input line 1)", "run/000.jpg"], problems
    assert problems == [f"line 1: longer than {len(long) - 1:,} characters ({len(long) + 1:,}); not read"]


def test_runs_saved_with_a_byte_order_mark_and_joined_keep_every_record():
    """`cat a.jsonl b.jsonl` of two runs saved again by Notepad has a mark in front of b's first record too."""
    from aiidetect.report.html import iter_saved

    a, b = json.dumps(_rec(0, "uncertain")), json.dumps(_rec(1, "likely-real"))
    problems: list[str] = []
    recs = list(iter_saved(io.StringIO("\ufeff" + a + "\n\ufeff" + b + "\n"), problems))
    assert [r["file"] for r in recs] == ["run/000.jpg", "run/001.jpg"] and problems == [], problems


def test_a_record_is_never_shown_under_a_verdict_it_does_not_hold(tmp_path):
    """A saved run is input: a record that failed but says likely-real, a verdict aiidetect never gives,
    or 'error' without a reason are counted, filtered and shown as errors saying what they hold."""
    recs = [_rec(0, "likely-real", error={"code": "decode-error", "message": "truncated"}),
            _rec(1, "probably-fine"), _rec(2, "error", error=None), _rec(3, "likely-real")]
    run = tmp_path / "run.jsonl"
    _write(run, recs, tail='{"schema": "1.1", "file": "run/004.jpg", "verd')  # a killed run's last line
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    assert "5 files (1 likely-real, 4 errors)" in r.stderr
    assert "line 5: not JSON" in r.stderr and "the last line is cut short" in r.stderr
    html = out.read_text(encoding="utf-8")
    rows = _rows(html)
    assert [x[1] for x in rows] == ["error", "error", "error", "likely-real", "error"]
    doc = assert_self_contained(html)
    assert "truncated (the record's verdict was 'likely-real')" in doc.cards[0]["text"]
    assert "not a verdict aiidetect gives: 'probably-fine'" in doc.cards[1]["text"]
    assert "the record says error but gives no reason" in doc.cards[2]["text"]
    assert all("likely real" not in c["text"] for c in doc.cards[:3])


def test_the_page_says_what_the_records_say_about_their_run(tmp_path):
    """Rendered later, the page must not pass the renderer's version off as the scanner's, must name a
    record schema it does not know, and must not draw the default band as the band of a fitted fusion
    model it cannot read."""
    model = {"kind": "model", "name": "desk", "path": str(tmp_path / "gone"), "sha256": "ab" * 32}
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain", fusion=model), _rec(1, "ai-generated", fusion=model, schema="2.0")])
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    text = " ".join(assert_self_contained(out.read_text(encoding="utf-8")).text)
    assert "the records do not say which aiidetect version scanned them" in text
    assert "Unknown record schema 2.0." in text
    assert "desk sha256:abababababab" in text and "its band is unknown here" in text


def test_bidi_overrides_and_controls_are_shown_not_obeyed(tmp_path):
    """U+202E makes 'photo\\u202egpj.exe' read 'photoexe.jpg' in a browser; a NUL vanishes. The page shows
    them as \\uXXXX, in the card and in the table's data, as the terminal table and CSV do."""
    name = "photo\u202egpj.exe\x00\x1b[2J"
    prompt = "line one\nline\ttwo\u202e"
    meta = {"metadata": {"status": "ok", "evidence": [{"id": "generator.parameters", "direction": "ai",
                                                       "strength": 6, "data": {"prompt": prompt}}]}}
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain", file=name, reasons=["because\u2066 \u202e"], detectors=meta),
                 _rec(1, "uncertain", file="a\nb.jpg"), _rec(2, "uncertain", file="a b.jpg")])
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    html = out.read_text(encoding="utf-8")
    for c in ("\u202e", "\u2066", "\x00", "\x1b"):
        assert c not in html
    shown = "photo\\u202egpj.exe\\u0000\\u001b[2J"
    assert assert_self_contained(html).cards[0]["name"] == shown
    assert _rows(html)[0][3] == shown and _rows(html)[0][6] == "because\\u2066 \\u202e"
    # HTML folds a newline into a space: "a\nb.jpg" and "a b.jpg" must not look the same
    doc = assert_self_contained(html)
    assert [c["name"] for c in doc.cards[1:]] == ["a\\u000ab.jpg", "a b.jpg"]
    assert [x[3] for x in _rows(html)[1:]] == ["a\\u000ab.jpg", "a b.jpg"]
    assert "<pre>line one\nline\ttwo\\u202e</pre>" in html  # a prompt keeps its lines


def test_repeated_records_are_shown_as_they_are_and_said(tmp_path):
    """A run appended to twice: every record is shown and counted as it is in the file (the page shows
    what the file holds), and stderr and the page say how many repeat an earlier one."""
    recs = [_rec(k, "uncertain", sha256=f"{k:064x}") for k in range(3)]
    run = tmp_path / "run.jsonl"
    _write(run, recs + recs[:2])
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    note = "2 records repeat an earlier one (same file and SHA-256; record 4 repeats record 1)"
    assert note in r.stderr and "5 files (5 uncertain)" in r.stderr
    html = out.read_text(encoding="utf-8")
    assert len(_rows(html)) == 5 and note in " ".join(assert_self_contained(html).text)


def test_a_scan_page_names_each_head_it_served():
    """Two heads can share a name ("linear:dev"): the page names the folder and the manifest hash."""
    from pathlib import Path
    from types import SimpleNamespace

    from aiidetect.report.html import HtmlWriter, run_info_from_scan

    class Det:
        name = "linear:dev"
        head = SimpleNamespace(path=Path("/heads/linear-dev"))

        def describe(self):
            return {"name": self.name}

        def cache_identity(self):
            return {"head": "c0ffee" * 10 + "abcd"}

    class Broken(Det):
        name = "mpft:x"
        head = None

        def cache_identity(self):
            raise RuntimeError("no identity")

    out = io.StringIO()
    w = HtmlWriter(out, run_info_from_scan([Det(), Broken()], None, None, argv=["scan", "x"]), thumbnails=False)
    w.add(_rec(0, "uncertain"))
    w.close()
    text = "".join(assert_self_contained(out.getvalue()).text)
    assert "linear:dev: ran head /heads/linear-dev sha256:c0ffeec0ffeec0ff" in text
    assert "mpft:x: ran" in text


def test_a_json_array_cut_short_keeps_its_records(tmp_path):
    """`scan -f json > run.json` killed mid-run leaves an array without its ]: read as lines, every
    record ('{...},') was 'not JSON' and the page held nothing but error cards."""
    recs = [_rec(k, ("uncertain", "likely-real")[k % 2]) for k in range(4)]
    text = "[\n" + ",\n".join("  " + json.dumps(r) for r in recs) + "\n]\n"
    run = tmp_path / "run.json"
    run.write_text(text[: text.index(json.dumps(recs[3])) + 30], encoding="utf-8")
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    assert "4 files (2 uncertain, 1 likely-real, 1 error)" in r.stderr
    assert "item 4: not JSON" in r.stderr and "the array is cut short" in r.stderr
    assert [x[3] for x in _rows(out.read_text(encoding="utf-8"))] == [x["file"] for x in recs[:3]] + ["(input item 4)"]


def test_the_page_says_when(tmp_path):
    """'When' for a newsroom: the page is dated as written, and a saved run's page gives the time the
    run's file was last written (the scan ended then or earlier), not only the time it was rendered."""
    import os

    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain")])
    os.utime(run, (1_700_000_000, 1_700_000_000))
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    text = "".join(assert_self_contained(out.read_text(encoding="utf-8")).text)
    assert "(last written 2023-11-14 22:13 UTC: the scan ended then or earlier)" in text
    assert "written 20" in text.split("Overview")[0] and " by aiidetect " in text.split("Overview")[0]


def test_a_fusion_field_of_any_shape_is_shown_not_trusted(tmp_path):
    """The records' `fusion` is read for the page's band: a number where the hash belongs, a mapping
    where the path belongs, markup in the name are shown as text; the report is written (exit 0)."""
    bad = {"kind": "model", "name": "<script>window.x=1</script>", "path": {"a": 1}, "sha256": 5}
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain", fusion=bad)])
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    html = out.read_text(encoding="utf-8")
    assert "<script>window.x=1" not in html
    text = "".join(assert_self_contained(html).text)
    assert "<script>window.x=1</script> sha256:5 ({'a': 1})" in text and "its band is unknown here" in text


def test_a_saved_run_shows_its_fitted_fusion_band(tmp_path):
    """When the fusion model the records name is still there, unchanged, its band is drawn."""
    import hashlib

    head = tmp_path / "fusion-desk"
    head.mkdir()
    manifest = json.dumps({"detector": "fusion", "name": "desk", "params": {"ai_threshold": 0.8,
                                                                           "real_threshold": 0.2}}).encode()
    (head / "manifest.json").write_bytes(manifest)
    model = {"kind": "model", "name": "desk", "path": str(head), "sha256": hashlib.sha256(manifest).hexdigest()}
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain", fusion=model)])
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    text = "".join(assert_self_contained(out.read_text(encoding="utf-8")).text)
    assert "band 0.20\u20130.80" in text and "unknown here" not in text
    assert "likely real at or below 0.2," in text


def test_a_file_with_no_record_is_not_a_saved_run(tmp_path):
    """`aiidetect report photo.jpg` (a slip of the shell) wrote, with exit 0, a page of 13,438 'files',
    one per line of JPEG bytes. A file in which no line is a record is a usage error: exit 2, one line
    on stderr, and -o keeps what it held. An empty run is still an empty report."""
    from aiidetect.testing.images import jpeg_bytes, noise_rgb

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(noise_rgb(256, 256, 1), quality=95))
    out = tmp_path / "r.html"
    out.write_text("previous report", encoding="utf-8")
    r = run_cli_in_process("report", str(photo), "-o", str(out))
    assert r.returncode == 2 and out.read_text(encoding="utf-8") == "previous report"
    assert r.stderr.startswith(f"error: {photo} is not a saved run: none of its ") and r.stderr.count("\n") == 1
    r = run_cli("report", "-", input="")
    assert r.returncode == 0 and "0 files" in r.stderr and len(assert_self_contained(r.stdout).cards) == 0


def test_dash_output_is_stdout(tmp_path):
    """`-o -` wrote a file named "-" in the working folder and left stdout empty (exit 0) for a script
    that piped it on; `-` is already stdin for `report -`."""
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain")])
    r = run_cli("report", str(run), "-o", "-", "--no-thumbnails", "-q", cwd=tmp_path)
    assert r.returncode == 0 and len(assert_self_contained(r.stdout).cards) == 1
    from aiidetect.testing.images import jpeg_bytes, noise_rgb

    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(noise_rgb(32, 32, 1)))
    r = run_cli("scan", str(tmp_path / "p.jpg"), "-d", "metadata", "--no-cache", "-q", "-f", "jsonl", "-o", "-",
                cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["file"].endswith("p.jpg")
    assert not (tmp_path / "-").exists()
    # a file named "-" among the inputs is scanned, not mistaken for the output
    (tmp_path / "-").write_bytes((tmp_path / "p.jpg").read_bytes())
    r = run_cli("scan", "./-", "-d", "metadata", "--no-cache", "-q", "-f", "jsonl", "-o", "-", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["file"] == "./-"


def test_the_page_says_what_ran_and_what_it_cannot_show(tmp_path):
    """Two facts a reader could miss: when no pixel detector ran, every verdict rests on metadata; and
    with the cards capped, a browser without JavaScript shows only the files that have a card."""
    unavailable = {"status": "unavailable", "reason": "no weights"}
    dets = {"metadata": {"status": "ok", "p_ai": 0.5}, "linear:univfd": unavailable}
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(k, "uncertain", detectors=dets) for k in range(5)])
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q", "--max-cards",
                              "2").returncode == 0
    html = out.read_text(encoding="utf-8")
    text = "".join(assert_self_contained(html).text)
    assert "No pixel detector ran." in text
    assert "Without JavaScript this page shows 2 of its 5 files" in text
    assert "every file has a card below" not in text
    dets["linear:univfd"] = {"status": "ok", "p_ai": 0.4}
    _write(run, [_rec(k, "uncertain", detectors=dets) for k in range(5)])
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    text = "".join(assert_self_contained(out.read_text(encoding="utf-8")).text)
    assert "No pixel detector ran." not in text and "every file has a card below" in text


def test_a_json_array_is_parsed_an_item_at_a_time(tmp_path):
    """All items of a 160 MB array at once took 820 MiB (five times the JSONL's peak); one at a time, the
    first record comes before a broken later item is even looked at. The page is the JSONL's page."""
    from aiidetect.report.html import iter_saved

    recs = [_rec(k, "uncertain") for k in range(3)]
    text = "[\n" + ",\n".join(json.dumps(r) for r in recs) + ',\n{"broken": \n'
    problems: list[str] = []
    it = iter_saved(io.StringIO(text), problems)
    assert next(it)["file"] == "run/000.jpg" and problems == []
    assert [r["file"] for r in it] == ["run/001.jpg", "run/002.jpg", "(input item 4)"] and len(problems) == 1
    problems = []
    assert len(list(iter_saved(io.StringIO(json.dumps(recs) + "\n{}\n"), problems))) == 3
    assert problems == ["text after the JSON array's closing ] is not read"]
    a, b = tmp_path / "run.json", tmp_path / "run.jsonl"
    a.write_text(json.dumps(recs, indent=2), encoding="utf-8")
    _write(b, recs)
    pages = []
    for src in (a, b):
        assert run_cli_in_process("report", str(src), "-o", str(tmp_path / "r.html"), "--no-thumbnails",
                                  "-q").returncode == 0
        pages.append(_rows((tmp_path / "r.html").read_text(encoding="utf-8")))
    assert pages[0] == pages[1] and len(pages[0]) == 3


def test_a_thumbnail_is_of_the_file_the_card_names(tmp_path):
    """`file_bytes` holds the exact bytes of `file` when the name is not UTF-8. A record whose
    `file_bytes` named another file (with that file's checksum) put that picture beside this name."""
    import base64
    import os

    from aiidetect.testing.images import jpeg_bytes, noise_rgb

    photo = tmp_path / "elsewhere.jpg"
    photo.write_bytes(jpeg_bytes(noise_rgb(64, 48, 1)))
    run = tmp_path / "run.jsonl"
    r = run_cli_in_process("scan", str(photo), "-d", "metadata", "-f", "jsonl", "-o", str(run), "-q", "--no-cache")
    assert r.returncode == 0, r.stderr
    rec = json.loads(run.read_text(encoding="utf-8"))
    forged = {**rec, "file": "innocent.jpg", "file_bytes": base64.b64encode(os.fsencode(photo)).decode()}
    _write(run, [rec, forged])
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out))
    assert r.returncode == 0 and "1 thumbnails" in r.stderr, r.stderr
    cards = assert_self_contained(out.read_text(encoding="utf-8")).cards
    assert "no thumbnail" not in cards[0]["text"]
    assert "the record's file_bytes do not name the file shown here" in cards[1]["text"]


def test_a_record_naming_no_possible_file_costs_its_thumbnail_not_the_page(tmp_path):
    """A hand-made or hostile run whose `file` holds a NUL: os.stat raised ValueError (not OSError) and the
    whole report ended, exit 2. It is a name no file has: that card has no thumbnail, the others are drawn."""
    from aiidetect.testing.images import jpeg_bytes, noise_rgb

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(noise_rgb(32, 24, 1)))
    run = tmp_path / "run.jsonl"
    r = run_cli_in_process("scan", str(photo), "-d", "metadata", "-f", "jsonl", "-o", str(run), "-q", "--no-cache")
    assert r.returncode == 0, r.stderr
    rec = json.loads(run.read_text(encoding="utf-8"))
    _write(run, [{**rec, "file": str(tmp_path / "a\0b.jpg")}, rec])
    r = run_cli_in_process("report", str(run), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 0 and "2 files" in r.stderr and "1 thumbnails" in r.stderr, r.stderr
    cards = assert_self_contained((tmp_path / "r.html").read_text(encoding="utf-8")).cards
    assert "NUL" in cards[0]["text"], cards[0]["text"]


def test_documents_on_stdout_are_utf8_whatever_the_locale(tmp_path):
    """Under a stdout encoding that is not UTF-8 (a latin-1 locale, PYTHONIOENCODING=ascii), the first
    non-ASCII file name ended every format with a UnicodeEncodeError (exit 2) and half a document.
    JSON, JSONL, CSV and the page are UTF-8 by contract; the table escapes what the terminal cannot show."""
    from aiidetect.testing.images import jpeg_bytes, noise_rgb

    d = tmp_path / "in"
    d.mkdir()
    (d / "caf\u00e9\u2014x.jpg").write_bytes(jpeg_bytes(noise_rgb(32, 32, 1)))
    env = {"PYTHONIOENCODING": "ascii"}
    base = ("scan", str(d), "-d", "metadata", "--no-cache", "-q")
    r = run_cli(*base, "-f", "jsonl", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["file"].endswith("caf\u00e9\u2014x.jpg"), r.stderr
    r = run_cli(*base, "-f", "html", env=env)
    assert r.returncode == 0 and assert_self_contained(r.stdout).cards[0]["name"].endswith("\u00e9\u2014x.jpg")
    r = run_cli(*base, "-f", "table", env=env)   # not a terminal: UTF-8 too (commands.errors.utf8_output)
    assert r.returncode == 0 and "caf\u00e9\u2014x.jpg" in r.stdout, r.stderr
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain", file="caf\u00e9.jpg")])
    r = run_cli("report", str(run), "--no-thumbnails", "-q", env=env)
    assert r.returncode == 0 and assert_self_contained(r.stdout).cards[0]["name"] == "caf\u00e9.jpg"


def test_the_repeat_note_is_not_lost_among_bad_lines(tmp_path):
    """stderr shows the first 20 notes: the one about the whole run (repeated records) comes first."""
    recs = [_rec(k, "uncertain", sha256=f"{k:064x}") for k in range(2)]
    run = tmp_path / "run.jsonl"
    _write(run, recs + recs, tail="not json\n" * 25)
    r = run_cli_in_process("report", str(run), "-o", str(tmp_path / "r.html"), "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    notes = [x for x in r.stderr.splitlines() if x.startswith("note:")]
    assert "2 records repeat an earlier one" in notes[0] and len(notes) == 21
    assert notes[-1].startswith("note: 6 more notes about ")


def test_verdict_takes_the_short_names_results_export_takes(tmp_path):
    """`report --verdict ai` (and `ai,uncertain`) was refused, exit 2, while `results export --verdict
    ai,uncertain`, the command beside it in docs/scale.md, takes them: one parser serves both now."""
    from typer.testing import CliRunner

    from aiidetect.cli import app

    run, out = tmp_path / "run.jsonl", tmp_path / "r.html"
    _write(run, [_rec(k, v) for k, v in enumerate(VERDICTS)])
    r = CliRunner().invoke(app, ["report", str(run), "-o", str(out), "--verdict", "ai,real", "--no-thumbnails", "-q"])
    assert r.exit_code == 0, r.output
    assert {x[1] for x in _rows(out.read_text(encoding="utf-8"))} == {"ai-generated", "likely-real"}


def test_the_summary_line_of_an_empty_run_has_no_empty_brackets(tmp_path):
    """An empty saved run (a scan of an empty folder) is an empty report; its stderr line read
    `report: 0 files (), 0 thumbnails -> r.html`."""
    (tmp_path / "run.jsonl").write_text("", encoding="utf-8")
    r = run_cli_in_process("report", str(tmp_path / "run.jsonl"), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 0 and r.stderr == f"report: 0 files, 0 thumbnails -> {tmp_path / 'r.html'}\n", r.stderr


def test_an_error_beside_ai_generated_is_kept_only_for_a_pixel_failure(tmp_path):
    """The one verdict an error may have beside it is ai-generated, on a decode-error or too-large file
    (schema 1.2). Any other error beside it, or an error code that is not text (a list made the
    renderer stop with exit 2), is shown as an error saying what the record held."""
    recs = [_rec(0, "ai-generated", schema="1.2", error={"code": "decode-error", "message": "truncated"}),
            _rec(1, "ai-generated", schema="1.2", error={"code": "unreadable", "message": "denied"}),
            _rec(2, "ai-generated", schema="1.2", error={"code": ["decode-error"], "message": "odd"}),
            _rec(3, "ai-generated", schema="1.2", error={"code": {"c": 1}, "message": "odder"})]
    run = tmp_path / "run.jsonl"
    _write(run, recs)
    out = tmp_path / "r.html"
    r = run_cli("report", str(run), "-o", str(out), "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    assert [x[1] for x in _rows(out.read_text(encoding="utf-8"))] == ["ai-generated", "error", "error", "error"]


def test_a_saved_run_whose_model_left_out_a_head_shows_the_band_that_decided(tmp_path):
    """A head retrained since the model was fitted is left out, and the model's band set aside for one no
    narrower than the rules' (fusion.without_retrained): the page drew the manifest's 0.20-0.80 beside
    verdicts decided under 0.10-0.90, a file at 0.85 "uncertain" under a gauge calling 0.80 AI-generated."""
    import hashlib

    head = tmp_path / "fusion-desk"
    head.mkdir()
    dets = {"linear:a": {"weight": 1.0, "calibration": {"method": "none"}},
            "linear:b": {"weight": 1.0, "calibration": {"method": "none"}}}
    manifest = json.dumps({"detector": "fusion", "name": "desk", "params": {"ai_threshold": 0.8, "bias": 2.0,
                                                                           "real_threshold": 0.2,
                                                                           "detectors": dets}}).encode()
    (head / "manifest.json").write_bytes(manifest)
    model = {"kind": "model", "name": "desk", "path": str(head), "sha256": hashlib.sha256(manifest).hexdigest(),
             "left_out": ["linear:b"]}
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain", fusion=model, p_ai=0.85)])
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    text = "".join(assert_self_contained(out.read_text(encoding="utf-8")).text)
    assert "band 0.10\u20130.90" in text and "likely real at or below 0.1," in text


def test_invisible_characters_cannot_make_two_names_look_alike(tmp_path):
    """"photo\\u200b.jpg" (a zero-width space) and "photo.jpg" are two files that the page drew alike, so a
    reader could take one's verdict for the other's; U+2028 broke a name onto two lines, as a newline would.
    Every character Unicode draws as nothing is shown as an escape, in the card and in the table's data."""
    names = ["photo.jpg", "photo\u200b.jpg", "photo\u2060\ufeff.jpg", "photo\u00ad.jpg", "photo\U000e0041.jpg",
             "a\u2028b.jpg", "photo\u200d\ufe0f.jpg"]
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(k, "uncertain", file=n, reasons=[f"why\u200b {k}"]) for k, n in enumerate(names)])
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    html = out.read_text(encoding="utf-8")
    for c in "\u200b\u2060\ufeff\u00ad\U000e0041\u2028\u200d\ufe0f":
        assert c not in html, hex(ord(c))
    shown = ["photo.jpg", "photo\\u200b.jpg", "photo\\u2060\\ufeff.jpg", "photo\\u00ad.jpg", "photo\\U000e0041.jpg",
             "a\\u2028b.jpg", "photo\\u200d\\ufe0f.jpg"]
    assert [c["name"] for c in assert_self_contained(html).cards] == shown
    assert [x[3] for x in _rows(html)] == shown and _rows(html)[1][6] == "why\\u200b 1"


def test_a_card_fused_without_the_models_band_draws_the_band_that_judged_it(tmp_path):
    """A file one of the model's detectors did not answer is fused under a band no narrower than the rules'
    (fusion.fuse, per file): its card drew the run's 0.20-0.80 gauge, its 0.85 in the AI zone beside an
    "uncertain" badge. The other cards keep the run's band."""
    import hashlib

    from aiidetect.fusion import fuse, normalize_model
    from aiidetect.records import DetectorResult

    head = tmp_path / "fusion-desk"
    head.mkdir()
    params = {"ai_threshold": 0.8, "real_threshold": 0.2, "bias": 2.0,
              "detectors": {"a": {"weight": 1.0, "calibration": {"method": "none"}},
                            "b": {"weight": 1.0, "calibration": {"method": "none"}}}}
    manifest = json.dumps({"detector": "fusion", "name": "desk", "params": params}).encode()
    (head / "manifest.json").write_bytes(manifest)
    model = {"kind": "model", "name": "desk", "path": str(head), "sha256": hashlib.sha256(manifest).hexdigest()}
    out = fuse({"a": DetectorResult("ok", p_ai=0.85), "b": DetectorResult.failed("boom")}, normalize_model(params))
    assert out.verdict == "uncertain"
    run = tmp_path / "run.jsonl"
    _write(run, [_rec(0, "uncertain", fusion=model, p_ai=round(out.p_ai, 6), reasons=out.reasons),
                 _rec(1, "uncertain", fusion=model, p_ai=0.5)])
    page = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(page), "--no-thumbnails", "-q").returncode == 0
    html = page.read_text(encoding="utf-8")
    assert "band 0.20\u20130.80" in "".join(assert_self_contained(html).text)   # the run's band, as before
    first, second = html.split('id="f1"')[0].split('id="f0"')[1], html.split('id="f1"')[1]
    # the real side widened past the rules' 0.10 to where the model with its +2 bias would decide (0.0327)
    assert re.search(r"P\(AI\) = 0\.850; AI-generated from 0\.9, likely real at or below 0\.0327\d*, uncertain", first)
    assert ">0.90</text>" in first and "#gauge-band" not in first
    assert "AI-generated from 0.8, likely real at or below 0.2, uncertain" in second and "#gauge-band" in second


def test_a_card_says_its_content_credentials_could_not_be_read(tmp_path):
    """A refused or unreadable C2PA store may declare how the file was made: the card's lead said nothing of it,
    only the evidence list below (and not every reader opens it)."""
    ev = {"id": "c2pa.unreadable", "direction": "neutral", "strength": 0.0, "decisive": False,
          "detail": "C2PA data present but C2PA manifest store not read: 40000000 bytes (over 33554432)"}
    recs = [_rec(0, "likely-real", detectors={"metadata": {"status": "ok", "p_ai": None, "evidence": [ev]}}),
            _rec(1, "likely-real")]
    run, page = tmp_path / "run.jsonl", tmp_path / "r.html"
    _write(run, recs)
    assert run_cli_in_process("report", str(run), "-o", str(page), "--no-thumbnails", "-q").returncode == 0
    html = page.read_text(encoding="utf-8")
    first, second = html.split('id="f1"')[0].split('id="f0"')[1], html.split('id="f1"')[1]
    lead = first.split("What moved")[0] if "What moved" in first else first
    assert ("Content Credentials not read.</b> <span class=\"wrap\">This file carries Content Credentials (a C2PA "
            "manifest) that could not be read (C2PA manifest store not read: 40000000 bytes (over 33554432)); they "
            "may declare how it was made") in lead
    assert "Content Credentials not read" not in second


def test_a_files_own_metadata_cannot_set_the_band_its_gauge_draws():
    """The gauge read its band from any reason line holding the set-aside note's words: an EXIF Software text
    "Midjourney x: no answer for this file, ... (bias 0, band 0.6 / 0.61, ..." drew an uncertain file at 0.88
    in the AI zone of a 0.60-0.61 gauge. Only fuse's own note, from its start, names the band."""
    from aiidetect.fusion import ASIDE_FOR_FILE, fuse
    from aiidetect.records import DetectorResult, Evidence
    from aiidetect.report.html import _file_band

    said = f"Midjourney x: {ASIDE_FOR_FILE}, fitted with it, are set aside (bias 0, band 0.6 / 0.61, zz"
    ev = Evidence("png.software-generator", "ai", 3.0, f"PNG Software text names an AI image tool: {said}")
    out = fuse({"metadata": DetectorResult("ok", evidence=[ev])})
    assert any(said in r for r in out.reasons), out.reasons
    assert _file_band({"real_threshold": 0.1, "ai_threshold": 0.9}, out.reasons) == (0.1, 0.9)
    # fuse's own note still names the band, for one detector or several (names with a family prefix too)
    for names in ("b", "linear:b", "a, linear:b"):
        note = f"{names}: {ASIDE_FOR_FILE}, fitted with it, are set aside (bias 0, band 0.0327266 / 0.9: no narrower"
        assert _file_band({"real_threshold": 0.2, "ai_threshold": 0.8}, ["a: p_ai=0.05", note]) == (0.0327266, 0.9)
