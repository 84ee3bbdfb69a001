"""The HTML report in a real headless Chromium (Debian's package, driven by
Playwright): it loads without script errors or blocked loads, no injected
payload runs, the table sorts and filters (also from the keyboard), and the
page fits a phone. Screenshots at desktop and phone width go to the test's tmp
dir (AIIDETECT_SCREENSHOTS=DIR keeps a copy).

In CI (CI set) a missing browser fails the test; on a developer machine
without chromium it is skipped."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli, run_cli_in_process
from aiidetect.testing.report_corpus import hostile_records, make_report_corpus


def _need(what: str, why: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI: {why}")
    pytest.skip(f"{what} not available: {why}")


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = os.environ.get("AIIDETECT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        _need("chromium", "apt-get install -y chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _need("playwright", "pip install -e '.[test]'")
    return exe


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A scan of marker, hostile-name and broken files plus saved hostile records, as one report."""
    d = tmp_path_factory.mktemp("browser-corpus")
    make_report_corpus(d / "files")
    run = d / "run.jsonl"
    r = run_cli("scan", str(d / "files"), "--format", "jsonl", "-o", str(run), "-d", "metadata", "--no-cache", "-q")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in run.read_text(encoding="utf-8").splitlines()]
    recs += hostile_records()
    # pixels unread, metadata decisive: AI-generated with its error beside it (docs/schema.md "Fields")
    recs.append({"schema": "1.2", "file": "broken/sd.png", "verdict": "ai-generated", "p_ai": 0.9999,
                 "detectors": {}, "reasons": ["the pixels could not be read (decode-error); the metadata alone decides"],
                 "error": {"code": "decode-error", "message": "OSError: image file is truncated"}})
    for k in range(130):  # enough rows for a second page
        recs.append({"schema": "1.0", "file": f"bulk/{k:03d}.jpg", "verdict": ("likely-real", "uncertain")[k % 2],
                     "p_ai": round(0.05 + 0.9 * ((k * 37) % 100) / 100, 3), "size_bytes": 1000 + k,
                     "format": "JPEG", "detectors": {}, "reasons": [f"bulk reason {k}"], "error": None})
    run.write_text("\n".join(json.dumps(x) for x in recs) + "\n", encoding="utf-8")
    out = d / "report.html"
    r = run_cli("report", str(run), "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out, recs


def _open(browser, path: Path, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector("html[data-ready='1']", timeout=30_000)
    return page, problems, requests


def expect(locator):
    # Polls from Python: the report's CSP (rightly) forbids the eval that wait_for_function(str) needs.
    from playwright.sync_api import expect as _expect

    return _expect(locator)


def _two_frames(page) -> None:
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _rows(page) -> list[list[str]]:
    return page.eval_on_selector_all("#files-table tbody tr",
                                     "trs => trs.map(tr => Array.from(tr.cells).map(td => td.textContent))")


def test_loads_clean_and_payloads_stay_inert(browser, report, tmp_path):
    path, recs = report
    page, problems, requests = _open(browser, path, 1280, 900)
    page.mouse.wheel(0, 200000)  # scroll every card (and its images) through the viewport
    page.wait_for_timeout(300)
    page.evaluate("window.scrollTo(0, 0)")
    _two_frames(page)
    assert problems == []  # no script error, no CSP violation (an injected handler or script would log one)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert [u for u in requests if not u.startswith("data:")] == [path.as_uri()]
    srcs = page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src'))")
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    names = page.eval_on_selector_all("article.card .file-name", "els => els.map(e => e.textContent)")
    assert len(names) == len(recs)
    expected = [r["file"].replace("\udcff", "\ufffd") for r in recs]
    assert names == expected
    # A screen reader moves by headings: each card's first one is its file's name (the sections under it,
    # "What moved the verdict"..., one level down), and no level is skipped. Before, the cards' headings were
    # only their sections', the same for every file.
    heads = page.eval_on_selector_all("article.card", "as => as.map(a => { const h = a.querySelector("
                                      "'h1,h2,h3,h4,h5,h6'); return [h.tagName, h.textContent]; })")
    assert heads == [["H3", n] for n in expected]
    levels = page.eval_on_selector_all("h1,h2,h3,h4,h5,h6", "hs => hs.map(h => +h.tagName[1])")
    assert levels[0] == 1 and all(b <= a + 1 for a, b in zip(levels, levels[1:])), levels
    assert page.eval_on_selector_all("article.card h4", "hs => hs.length") > len(recs)
    # A verdict's symbol is for the eye (colour blindness, a black-and-white printout): a screen reader says
    # its word alone, not "black up-pointing triangle" before every verdict in the counts, table and cards.
    said = "\n".join(page.locator(sel).aria_snapshot()
                     for sel in ("#overview .counts", "#files-table tbody:not(.paper)", "#cards"))
    assert "AI-generated" in said and "uncertain" in said and f"{len(recs)} files" in said
    assert not set("\u25b2\u2713\u2715") & set(said) and "? uncertain" not in said
    assert "\u25b2 AI-generated" in page.locator("#files-table tbody:not(.paper)").inner_text()  # still seen
    assert page.locator("#files-count").text_content().startswith(f"Showing 1\u2013100 of {len(recs)} files")
    shots = Path(os.environ.get("AIIDETECT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "report-desktop.png"))
    assert (shots / "report-desktop.png").stat().st_size > 10_000
    page.close()


def test_sort_filter_and_keyboard(browser, report):
    path, recs = report
    page, problems, _ = _open(browser, path, 1280, 900)
    # Sort by P(AI): first click puts the highest first, the second reverses; blanks stay last.
    page.click("#files-table th[data-key='p'] button")
    ps = [r[1] for r in _rows(page)]
    nums = [float(x) for x in ps if x != "\u2014"]
    assert nums == sorted(nums, reverse=True) and len(nums) > 50
    assert page.get_attribute("#files-table th[data-key='p']", "aria-sort") == "descending"
    page.click("#files-table th[data-key='p'] button")
    nums = [float(x) for x in (r[1] for r in _rows(page)) if x != "\u2014"]
    assert nums == sorted(nums)
    # Sorting from the keyboard: focus a header button and press Enter.
    page.focus("#files-table th[data-key='file'] button")
    page.keyboard.press("Enter")
    files = [r[2] for r in _rows(page)]
    assert len(files) == 100 and files != [r["file"] for r in recs[:100]]
    assert page.evaluate("fs => fs.every((f, i) => i === 0 || fs[i - 1].localeCompare(f) <= 0)", files)
    assert page.get_attribute("#files-table th[data-key='file']", "aria-sort") == "ascending"
    # Filter by verdict.
    page.select_option("#filter-verdict", "error")
    rows = _rows(page)
    # A record whose verdict aiidetect never gives is counted, filtered and shown as an error.
    # So is every record with an error, also one whose metadata decided it AI-generated (its badge says so).
    n_err = sum(1 for r in recs if r["verdict"] not in ("ai-generated", "uncertain", "likely-real") or r.get("error"))
    assert len(rows) == n_err > 0 and all("error" in r[0] or r[5].startswith("decode-error: ") for r in rows)
    assert [r[2] for r in rows if "AI-generated" in r[0]] == ["broken/sd.png"]
    assert f"of {n_err} files (filtered from {len(recs)})" in page.locator("#files-count").text_content()
    # Filter by text (debounced): a payload typed in the box is a search string, nothing more.
    page.select_option("#filter-verdict", "")
    page.fill("#filter-text", "onerror")
    expect(page.locator("#files-count")).to_contain_text("filtered")
    rows = _rows(page)
    want = [r for r in recs if "onerror" in (r["file"] + " " + ((r.get("reasons") or [""])[0] if not r.get("error")
                                                                else f"{r['error']['code']}: {r['error']['message']}")
                                             + " " + str(r.get("format") or "")).lower()]
    assert len(rows) == len(want) > 0
    page.fill("#filter-text", "BULK/012")
    expect(page.locator("#files-count")).to_contain_text("of 1 file (filtered")
    assert [r[2] for r in _rows(page)] == ["bulk/012.jpg"]
    # Pagination and arrow keys between row links.
    page.fill("#filter-text", "")
    expect(page.locator("#files-count")).to_contain_text(f"of {len(recs)} files")
    page.click("#page-next")
    assert page.locator("#files-count").text_content().startswith("Showing 101\u2013")
    page.focus("#files-table tbody a")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.textContent") == _rows(page)[1][2]
    page.keyboard.press("Enter")  # follows the link to the file's card
    assert page.evaluate("location.hash").startswith("#f")
    assert problems == [] and page.evaluate("typeof window.__pwned") == "undefined"
    page.close()


def _shown_rows(page) -> list[list[str]]:
    """The rows the current media shows (the screen's page, or every file's on paper)."""
    return page.eval_on_selector_all("#files-table tbody tr", "trs => trs.filter(tr => tr.getClientRects().length)"
                                     ".map(tr => Array.from(tr.cells).map(td => td.textContent))")


def test_phone_width(browser, report, tmp_path):
    path, recs = report
    page, problems, _ = _open(browser, path, 390, 844)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 390, overflow  # nothing forces sideways scrolling
    assert page.is_visible("#files-table th[data-key='verdict']") and not page.is_visible(
        "#files-table th[data-key='size']")
    shots = Path(os.environ.get("AIIDETECT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.locator("article.card.flagged").first.scroll_into_view_if_needed()
    _two_frames(page)  # cards render lazily (content-visibility): let the scrolled-to one paint
    page.screenshot(path=str(shots / "report-phone.png"))
    assert (shots / "report-phone.png").stat().st_size > 10_000
    # Printing keeps the flagged cards and the failed files' (unverified too, each with its reason), one per page.
    page.emulate_media(media="print")
    shown = page.eval_on_selector_all("article.card", "els => els.filter(e => getComputedStyle(e).display !== 'none')"
                                                      ".map(e => e.className)")
    assert shown and all("flagged" in c or "failed" in c for c in shown)
    n_unverified = sum(1 for r in recs if r["verdict"] != "likely-real")
    assert len(shown) == n_unverified and any("failed" in c for c in shown)
    # ... with their thumbnails: loaded lazily, a card never scrolled to printed without one (Chromium's PDF).
    thumbs = page.eval_on_selector_all("article.card.flagged img", "is => is.map(i => i.complete && i.naturalWidth > 0)")
    assert len(thumbs) > 3 and all(thumbs), thumbs
    # ... after the table, with a row for every file (a likely real file was in no printout), whatever page and
    # filter the screen showed, no row cut by a page break, and none of the controls that do nothing on paper.
    page.emulate_media(media="screen")
    page.select_option("#filter-verdict", "uncertain")
    page.select_option("#page-size", "50")
    page.click("#page-next")
    page.focus("#files-table tbody tr:nth-child(3) a")
    focused = page.evaluate("document.activeElement.textContent")
    open_before = page.eval_on_selector_all("details[open]", "ds => ds.length")
    page.evaluate("window.dispatchEvent(new Event('beforeprint'))")  # what the browser fires, page.pdf() too
    assert page.eval_on_selector_all("details[open]", "ds => ds.length") > open_before
    # The screen as it was, even before afterprint (headless Chromium's window.print() never fires it): the focus
    # on the row's link (lost to the page's top when the rows were swapped), the page of the filter, its rows.
    assert page.evaluate("document.activeElement.textContent") == focused
    page.emulate_media(media="print")
    assert page.is_visible("#files-table")
    printed = [r[2] for r in _shown_rows(page)]
    assert printed == [r["file"].replace("\udcff", "\ufffd") for r in recs] and len(printed) > 100
    assert not any(page.is_visible(s) for s in ("#files .controls", "#files .pager", "#find-file",
                                                "#files-table caption", "#files-count"))
    assert set(page.eval_on_selector_all("#files-table tr", "trs => trs.map(t => getComputedStyle(t).breakInside)")) \
        == {"avoid"}
    # Chromium repeats the column names on every printed page only when the header holds no form control
    assert set(page.eval_on_selector_all("#files-table th button", "bs => bs.map(b => getComputedStyle(b).display)")) \
        == {"contents"}
    page.emulate_media(media="screen")
    assert page.locator("#files-count").text_content().startswith("Showing 51\u2013")
    shown = _shown_rows(page)
    assert 0 < len(shown) <= 50 and {r[0].strip() for r in shown} == {"? uncertain"}
    page.click("#page-prev")
    assert page.locator("#files-count").text_content().startswith("Showing 1\u2013")
    page.evaluate("window.dispatchEvent(new Event('afterprint'))")
    assert page.eval_on_selector_all("#files-table tbody tr", "trs => trs.length") == len(_shown_rows(page))
    assert page.eval_on_selector_all("details[open]", "ds => ds.length") == open_before  # closed as they were
    # Between phone and desktop (a 1440 px laptop at 200% zoom is 720 CSS px) the top reason kept a column:
    # the file's fixed 42% left it 7 px, one letter a line.
    page.emulate_media(media="screen")
    page.set_viewport_size({"width": 720, "height": 844})
    widths = page.eval_on_selector_all("#files-table thead th", "ths => ths.map(t => t.getBoundingClientRect().width)")
    assert min(widths) >= 60 and widths[5] >= 120, widths
    assert page.evaluate("document.documentElement.scrollWidth") <= 720
    assert problems == []
    page.close()


def test_capped_page_lists_every_file_and_shows_controls(browser, tmp_path):
    """Over the card limit every file keeps its row; a row without a card says so instead of linking
    nowhere; a bidi override in a name is shown as an escape, never obeyed."""
    recs = [{"schema": "1.1", "file": f"cap/{k:02d}.jpg", "verdict": ("likely-real", "uncertain")[k % 2],
             "p_ai": 0.5, "detectors": {}, "reasons": [f"r{k}"], "error": None} for k in range(12)]
    recs[1]["file"] = "photo\u202egpj.exe"
    from aiidetect.testing.report_corpus import P_IMG, P_SCRIPT, P_SVG

    # Payloads where the page now quotes the records about their run: schema, fusion, a repeat.
    recs[2].update(schema=P_SCRIPT, fusion={"kind": "model", "name": P_IMG, "path": P_SVG, "sha256": P_SCRIPT})
    recs.append(dict(recs[2]))
    run = tmp_path / "run.jsonl"
    run.write_text("\n".join(json.dumps(x) for x in recs) + "\n", encoding="utf-8")
    out = tmp_path / "r.html"
    r = run_cli("report", str(run), "-o", str(out), "--max-cards", "3", "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    page, problems, _ = _open(browser, out, 1280, 900)
    assert page.locator("#files-count").text_content() == "Showing 1\u201313 of 13 files"
    assert page.locator("article.card").count() == 3
    links = page.eval_on_selector_all("#files-table tbody a", "as => as.map(a => [a.textContent, a.hash])")
    assert links == [["photo\\u202egpj.exe", "#f1"], ["cap/03.jpg", "#f3"], ["cap/05.jpg", "#f5"]]
    assert page.locator("#files-table tbody .nocard").count() == 10
    body = page.evaluate("document.body.innerText")
    assert "\u202e" not in body and P_SCRIPT in body and P_IMG in body and "Repeated records." in body
    assert problems == [] and page.evaluate("typeof window.__pwned") == "undefined"
    page.close()


def test_without_javascript_a_printout_holds_the_cards_alone(browser, tmp_path):
    """Without JavaScript the table has no rows: on paper it printed an empty header under "every file has a card
    below", while only the flagged cards print (docs/report.md: such a printout holds the cards only)."""
    recs = [{"schema": "1.1", "file": f"nojs/{k}.jpg", "verdict": ("likely-real", "uncertain")[k % 2], "p_ai": 0.5,
             "detectors": {}, "reasons": [f"r{k}"], "error": None} for k in range(4)]
    run, out = tmp_path / "run.jsonl", tmp_path / "r.html"
    run.write_text("\n".join(json.dumps(x) for x in recs) + "\n", encoding="utf-8")
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    ctx = browser.new_context(java_script_enabled=False)
    page = ctx.new_page()
    page.goto(out.as_uri())
    assert page.is_visible("#files")  # on screen, where the table would be, its note says why there is none
    page.emulate_media(media="print")
    assert not page.is_visible("#files")
    assert page.eval_on_selector_all("article.card", "cs => cs.filter(c => c.getClientRects().length).length") == 2
    ctx.close()


def test_long_unbroken_text_wraps_inside_its_card_and_row(browser, tmp_path):
    """A card is painted with containment (content-visibility): text that overflowed it was cut off
    unseen (a 3,000-character evidence id hid its source and strength). A 5,000-character name made its
    table row several screens tall, pushing every other file out of sight."""
    x = "y" * 3000
    rec = {"schema": "1.1", "file": "n" * 5000, "verdict": "uncertain", "p_ai": 0.5, "reasons": ["r" * 9000],
           "error": None, "detectors": {x: {"status": "ok", "p_ai": 0.5, "attribution": [{"label": x, "p": 0.3}]},
                                        "metadata": {"status": "ok", "evidence": [{"id": x, "source": x,
                                                                                   "strength": 1, "detail": x}]}}}
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "file": "short.jpg", "reasons": ["short"]}) + "\n",
                   encoding="utf-8")
    out = tmp_path / "r.html"
    assert run_cli("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    for width in (1280, 390):
        page, problems, _ = _open(browser, out, width, 900)
        page.locator("article.card").first.scroll_into_view_if_needed()
        _two_frames(page)
        spill = page.evaluate("""() => { const c = document.querySelector('article.card'), w = c.getBoundingClientRect();
            return Array.from(c.querySelectorAll('*')).filter(e => e.getBoundingClientRect().right > w.right + 1)
              .map(e => e.tagName + '.' + e.className); }""")
        assert spill == [] and page.evaluate("document.documentElement.scrollWidth") <= width
        heights = page.eval_on_selector_all("#files-table tbody tr", "trs => trs.map(t => t.getBoundingClientRect().height)")
        assert len(heights) == 2 and heights[0] < 250, heights
        if width > 700:  # the reason is shown (a phone has it on the card): its scrolling cell takes the focus
            assert page.eval_on_selector_all("#files-table td.opt .clip", "ds => ds.map(d => d.tabIndex)") == [0, -1]
        assert problems == []
        page.close()


def test_a_name_typed_with_its_joiner_finds_its_row(browser, tmp_path):
    """The page shows a zero-width non-joiner, joiner or variation selector in a name as \\u200c...: a
    Persian name typed as its keyboard writes it (with U+200C), or an emoji pasted with U+FE0F, found no
    row. The box takes the name either way, raw or as the page shows it."""
    names = ["fa/\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.jpg", "e/\u2764\ufe0f.jpg", "zw/photo\u200b.jpg",
             "bs/photo\\u200b.jpg", "tag/x\U000e0041.jpg", "plain/photo.jpg"]
    recs = [{"schema": "1.1", "file": n, "verdict": "uncertain", "p_ai": 0.5, "detectors": {}, "reasons": ["r"],
             "error": None} for n in names]
    run = tmp_path / "run.jsonl"
    run.write_text("\n".join(json.dumps(x) for x in recs) + "\n", encoding="utf-8")
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    page, problems, _ = _open(browser, out, 1280, 900)
    for query, want in (("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "fa/"), ("\u2764\ufe0f", "e/"),
                        ("photo\u200b", "zw/"), ("photo\\u005cu200b", "bs/"),
                        ("X\U000E0041", "tag/")):  # each finds another row than the one before
        page.fill("#filter-text", query)
        expect(page.locator("#files-table tbody td:nth-child(3)").first).to_contain_text(want)
        expect(page.locator("#files-count")).to_contain_text("of 1 file (filtered")
    assert problems == []
    page.close()


def test_the_detectors_table_keeps_words_and_numbers_whole_at_phone_width(browser, tmp_path):
    """The card breaks text anywhere (so a hostile name cannot spill), and at 390 px the table's automatic
    layout then squeezed its columns: an editor read P(AI) "0.99 / 8", "metadat / a" and "stat / us"."""
    rec = {"schema": "1.2", "file": "market_night.png", "verdict": "ai-generated", "p_ai": 0.998, "error": None,
           "reasons": ["r"], "detectors": {
               "metadata": {"status": "ok", "p_ai": 0.998, "score": 6.4, "score_kind": "llr", "evidence": []},
               "linear:demo-probe": {"status": "ok", "p_ai": 0.5, "score": 0.000534, "score_kind": "logit",
                                     "dtype": "bfloat16", "threshold": 0.5}}}
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    page, problems, _ = _open(browser, out, 390, 900)
    page.locator("table.dets").first.scroll_into_view_if_needed()
    _two_frames(page)
    # One line box per word: a Range over a word has one client rect unless the word was broken.
    # (A head's name longer than its column, "linear:demo-probe", may break at its punctuation.)
    lines = page.evaluate("""() => Array.from(document.querySelectorAll(
            'table.dets thead th, table.dets tbody th, table.dets td')).filter(c => !c.textContent.includes(':'))
        .map(c => {
        const r = document.createRange(); r.selectNodeContents(c);
        return [c.textContent, new Set(Array.from(r.getClientRects()).map(x => Math.round(x.top))).size]; })""")
    assert [t for t, n in lines if n > 1 and " " not in t] == [], lines
    assert {"metadata", "status", "0.998", "P(AI)"} <= {t for t, n in lines}, lines
    assert problems == []
    page.close()


def test_the_counts_lead_to_their_files_and_find_a_file_puts_the_cursor_in_the_search(browser, tmp_path):
    """The first screen an editor sees is the counts; on a phone the table began a screen or more below them,
    and nothing led from "1 AI-generated" to that photo."""
    recs = [{"schema": "1.2", "file": f"desk/{k:02d}.jpg", "verdict": v, "p_ai": p, "detectors": {},
             "reasons": [f"r{k}"], "error": None}
            for k, (v, p) in enumerate([("likely-real", 0.02)] * 5 + [("ai-generated", 0.97), ("uncertain", 0.5)])]
    run = tmp_path / "run.jsonl"
    run.write_text("\n".join(json.dumps(x) for x in recs) + "\n", encoding="utf-8")
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    page, problems, _ = _open(browser, out, 390, 844)
    assert page.locator("#find-file").is_visible()      # on the first screen, beside the counts
    page.click(".counts a[data-verdict='ai-generated']")
    assert [r[2] for r in _rows(page)] == ["desk/05.jpg"]
    page.click(".counts a[data-verdict='']")
    assert len(_rows(page)) == 7
    page.fill("#filter-text", "desk/03")     # a search typed earlier: a count still lists all of its files
    expect(page.locator("#files-count")).to_contain_text("of 1 file (filtered")
    page.focus(".counts a[data-verdict='']")
    page.keyboard.press("Enter")             # a count is a link: the keyboard reaches it and opens it
    assert len(_rows(page)) == 7 and page.input_value("#filter-text") == ""
    page.click("#find-file")
    assert page.evaluate("document.activeElement.id") == "filter-text"
    assert problems == []
    page.close()
