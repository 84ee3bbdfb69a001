"""How a 10,000-file HTML report behaves in a headless browser.

    python benchmarks/report_10k.py [--files 1000,10000] [--max-cards 0] [--chromium /usr/bin/chromium] [--keep DIR]
    python benchmarks/report_10k.py --jsonl RUN.jsonl [--max-cards 2000]   # a saved run instead of synthetic records
    python benchmarks/report_10k.py --files 10000 --max-cards 1 --print   # also print it (docs/report.md)

Makes N synthetic scan records (three detectors, two or three evidence items
each, realistic verdict mix; no thumbnails: the files do not exist), renders
them with `aiidetect report`, opens the page in headless Chromium (Playwright)
and measures, inside the page:
  - load: navigation start to DOMContentLoaded, to the load event, and to the
    table being ready (the report's script sets data-ready);
  - filter: one verdict + text filter over all rows, rendered (median of 5);
  - sort: one click on the P(AI) header, rendered (median of 5);
  - jump: scroll to the last file's card and lay it out;
  - the longest main-thread task (the longest the page can ignore input);
  - memory: the page's JavaScript heap and DOM node count (DevTools Protocol metrics);
  - with --print (off by default, after the rest): the report's beforeprint handler listing every row for
    paper (the event dispatched in the page, timed until it returns, and the rows it listed), the layout of
    the page for paper after it (print media emulated), then the wall time of Playwright's page.pdf() and
    the PDF's page count (its "/Type /Page" objects counted in the bytes).
--jsonl renders the saved run as it is (its own number of records; it does not repeat them).
Prints one JSON object per size, side by side in one run (compare ratios:
absolute times depend on the machine and its load). Needs chromium (apt-get install chromium) and playwright.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

GENS = ["sd15-finetune", "sdxl", "midjourney", "dalle3", "real"]


def iter_records(n: int, seed: int = 0) -> Iterator[dict]:
    rng = random.Random(seed)
    for i in range(n):
        p = rng.betavariate(0.6, 0.6)
        verdict = "ai-generated" if p >= 0.9 else "likely-real" if p <= 0.1 else "uncertain"
        err = rng.random() < 0.01
        ev = [{"id": "exif.camera", "direction": "real", "strength": 1.5, "detail": f"camera Canon EOS R{i % 9}",
               "source": "EXIF", "decisive": False, "data": {"make": "Canon", "model": f"EOS R{i % 9}"}},
              {"id": "structure.jpeg-tables", "direction": "ai", "strength": 0.1, "detail": "libjpeg tables q75",
               "source": "JPEG DQT", "decisive": False, "data": {"quality": 75}}]
        if verdict == "ai-generated" and i % 3 == 0:
            ev.insert(0, {"id": "generator.parameters", "direction": "ai", "strength": 6.0, "decisive": True,
                          "detail": "AUTOMATIC1111 parameters", "source": "PNG tEXt",
                          "data": {"prompt": f"a photo of a street at night, number {i}", "seed": str(i)}})
        rec = {"schema": "1.0", "file": f"archive/{i // 1000:02d}/IMG_{i:05d}.jpg", "sha256": f"{i:064x}",
               "size_bytes": rng.randint(50_000, 8_000_000), "format": "JPEG", "width": 4032, "height": 3024,
               "verdict": verdict, "p_ai": round(p, 4),
               "detectors": {"metadata": {"status": "ok", "p_ai": 0.3, "score": -1.4, "score_kind": "llr",
                                          "reason": None, "evidence": ev},
                             "linear:univfd": {"status": "ok", "p_ai": round(p, 4), "score": 1.2, "score_kind": "logit",
                                               "reason": None, "threshold": 0.5, "dtype": "bfloat16"},
                             "mpft:dev": {"status": "ok", "p_ai": round(min(1, p * 1.1), 4), "score": 0.4,
                                          "score_kind": "logit", "reason": None,
                                          "attribution": [{"label": g, "p": round(rng.random(), 3)} for g in GENS[:3]]}},
               "reasons": [f"linear:univfd: p_ai={p:.2f}", "metadata: camera Canon EOS R5 (-1.50)"],
               "image": {"mode": "RGB", "frames": 1, "orientation": 1, "has_alpha": False}, "error": None}
        if err:
            rec.update(verdict="error", p_ai=None, detectors={}, reasons=[],
                       error={"code": "decode-error", "message": "truncated JPEG"})
        yield rec


MEASURE = """async () => {
  const med = a => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const nav = performance.getEntriesByType('navigation')[0];
  const sel = document.getElementById('filter-verdict'), q = document.getElementById('filter-text');
  const filt = [], sort = [];
  for (let k = 0; k < 5; k++) {
    let t = performance.now();
    q.value = 'IMG_0' + k; sel.value = 'uncertain'; sel.dispatchEvent(new Event('change'));
    document.body.offsetHeight; filt.push(performance.now() - t);
    q.value = ''; sel.value = ''; sel.dispatchEvent(new Event('change'));
    t = performance.now();
    document.querySelector("#files-table th[data-key='p'] button").click();
    document.body.offsetHeight; sort.push(performance.now() - t);
  }
  const shown = document.getElementById('files-count').textContent;
  let t = performance.now();
  const cards = document.querySelectorAll('article.card');
  cards[cards.length - 1].scrollIntoView(); document.body.offsetHeight;
  const jump = performance.now() - t;
  return {dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_event_ms: nav.loadEventEnd,
          ready_ms: window.__readyAt, longest_task_ms: Math.max(0, ...window.__long),
          long_tasks: window.__long.length, filter_ms_median: med(filt), sort_ms_median: med(sort),
          jump_to_last_card_ms: jump, cards: cards.length, count_text: shown};
}"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="1000,10000", help="Comma-separated report sizes.")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--keep", type=Path, help="Keep the JSONL and HTML here.")
    ap.add_argument("--jsonl", type=Path, help="Render this saved run (scan -f jsonl) instead of synthetic records.")
    ap.add_argument("--max-cards", type=int, default=0,
                    help="`aiidetect report --max-cards`: 0 (a card for every file, as the docs/report.md rows "
                         "were measured) or the default limit, 2000.")
    ap.add_argument("--print", dest="print_", action="store_true",
                    help="Also time the beforeprint handler, the layout for paper and page.pdf(), and count the "
                         "PDF's pages (keep --max-cards small: every card is printed too).")
    a = ap.parse_args()
    d = a.keep or Path(tempfile.mkdtemp(prefix="aiidetect-report-bench-"))
    d.mkdir(parents=True, exist_ok=True)
    runs = ([measure(0, d, a.chromium, a.max_cards, a.jsonl, a.print_)] if a.jsonl else
            [measure(int(n), d, a.chromium, a.max_cards, print_=a.print_) for n in a.files.split(",")])
    print(json.dumps({"runs": runs, "cpu": _cpu(), "load_average": [round(x, 2) for x in os.getloadavg()],
                      "python": platform.python_version()}, indent=1))
    return 0 if not any(r["page_errors"] for r in runs) else 1


def measure(n: int, d: Path, chromium: str, max_cards: int = 0, saved: Path | None = None,
            print_: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    if saved is not None:
        src, html = saved, d / f"report-{saved.stem}.html"
        with open(saved, "rb") as f:
            n = sum(1 for _ in f)
    else:
        src, html = d / f"run-{n}.jsonl", d / f"report-{n}.html"
        # Written as made: 100,000 records held here (~400 MiB) were counted as the report's own peak, since
        # the forked child's RSS before exec is part of its ru_maxrss.
        with open(src, "w", encoding="utf-8") as f:
            for r in iter_records(n):
                f.write(json.dumps(r) + "\n")
    t = time.perf_counter()
    # --max-cards -1: the option left out, for a checkout from before it (PYTHONPATH=OLDER_CHECKOUT)
    cap = ["--max-cards", str(max_cards)] if max_cards >= 0 else []
    proc = subprocess.Popen([sys.executable, "-m", "aiidetect", "report", str(src), "-o", str(html),
                             "--no-thumbnails", "-q", *cap])
    # This child's own peak (RUSAGE_CHILDREN is the largest of every child so far, over all sizes).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args)
    render_s = time.perf_counter() - t
    render_peak = usage.ru_maxrss // 1024  # KiB on Linux
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # Record when the table became ready, in the page's own clock.
        page.add_init_script("new MutationObserver((m, o) => { if (document.documentElement && "
                             "document.documentElement.dataset.ready) { window.__readyAt = performance.now(); "
                             "o.disconnect(); } }).observe(document, {attributes: true, subtree: true, "
                             "attributeFilter: ['data-ready']});"
                             # Long tasks block input: the longest one says how long the page can freeze.
                             "window.__long = []; new PerformanceObserver(l => l.getEntries().forEach(e => "
                             "window.__long.push(e.duration))).observe({type: 'longtask', buffered: true});")
        t = time.perf_counter()
        page.goto(html.as_uri(), wait_until="load", timeout=120_000)
        page.wait_for_selector("html[data-ready='1']", timeout=120_000)
        wall_s = time.perf_counter() - t
        res = page.evaluate(MEASURE)
        res.update(_browser_memory(page))
        if print_:
            res.update(_print(page))
        b.close()
    res = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in res.items()}
    return {"files": n, "max_cards": max_cards, "html_mib": round(html.stat().st_size / 2**20, 1), "render_s": round(render_s, 2),
            "render_peak_mib": render_peak,
            "browser_open_wall_s": round(wall_s, 2), **res, "page_errors": errors}


BEFOREPRINT = """() => {
  let t = performance.now();
  window.dispatchEvent(new Event('beforeprint'));
  const script = performance.now() - t;
  const rows = document.querySelectorAll('#files-table tbody.paper tr').length;
  t = performance.now();
  document.body.offsetHeight;
  const layout = performance.now() - t;
  window.dispatchEvent(new Event('afterprint'));
  return {beforeprint_ms: script, beforeprint_rows: rows, print_layout_ms: layout};
}"""


def _print(page) -> dict:
    """The cost of printing: the report's own beforeprint handler (every row listed for paper), the layout of
    that for paper, then a real print to PDF (which runs the handler again itself)."""
    page.emulate_media(media="print")
    res = page.evaluate(BEFOREPRINT)
    page.emulate_media(media="null")  # "screen" would stay in force for page.pdf() and print the screen's rows
    t = time.perf_counter()
    pdf = page.pdf()
    res.update(pdf_wall_s=round(time.perf_counter() - t, 2), pdf_pages=pdf_pages(pdf),
               pdf_mib=round(len(pdf) / 2**20, 1))
    return res


def pdf_pages(pdf: bytes) -> int:
    """Pages of a PDF, counted cheaply: its page objects ("/Type /Page", not the "/Type /Pages" tree nodes).
    Right for Chromium's PDFs, which keep their objects uncompressed; a PDF with object streams would read 0."""
    return len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", pdf))


def _browser_memory(page) -> dict:
    """What the open page costs the browser (Chrome DevTools Protocol metrics, after the measurements):
    the JavaScript heap in use, and the DOM nodes held (the rows of one table page plus every card)."""
    try:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        m = {x["name"]: x["value"] for x in cdp.send("Performance.getMetrics")["metrics"]}
    except Exception as exc:  # noqa: BLE001 - a browser without the protocol still gives the timings
        return {"browser_memory_error": str(exc)}
    return {"js_heap_used_mib": round(m.get("JSHeapUsedSize", 0) / 2**20, 1),
            "js_heap_total_mib": round(m.get("JSHeapTotalSize", 0) / 2**20, 1), "dom_nodes": int(m.get("Nodes", 0))}


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
