"""Make the two screenshots in docs/report.md.

    python scripts/report_screenshots.py [--dev ../shared/data/dev] [--out docs/img]

Builds a small demo folder (dev-set images, one with AUTOMATIC1111 generation
parameters written into it, one with an IPTC "trainedAlgorithmicMedia" XMP
packet), trains a linear probe on a random-init tiny-vit backbone (the real
CLIP weights are not needed for a screenshot; its scores mean nothing), scans
with heat maps for the flagged files, and photographs the page in headless
Chromium at desktop (1280 px) and phone (390 px) width.

Run it again after any change to what the page or the reasons say: the images
in docs/ are otherwise the only copy of the old wording. The run is the same
each time (same files, same folder, names relative to it, seeded models), so
only the date, the scan time and the probe's manifest hash (the manifest records
when it was trained) change on the page, and a few pixels elsewhere with the
256-colour palette fitted to each image. The PNGs are reduced to 256 colours:
they live in git.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, PngImagePlugin

A1111 = ("a rainy street market at night, neon signs, 35mm photo, high detail\nNegative prompt: blurry, lowres\n"
         "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3141592, Size: 512x512, "
         "Model: v1-5-pruned-emaonly, Version: v1.7.0")
XMP = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
       'xmp:CreatorTool="Example Image Generator 2.1"><Iptc4xmpExt:DigitalSourceType>'
       'http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia</Iptc4xmpExt:DigitalSourceType>'
       '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict, cwd: Path) -> None:
    # This checkout's aiidetect first: run from the work folder, `-m aiidetect` found no package in a checkout
    # that is not installed, and in one sharing another's editable install, photographed that one's pages.
    path = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    subprocess.run([sys.executable, "-m", "aiidetect", *args], check=True, env=dict(env, PYTHONPATH=path), cwd=cwd)


def settle(page) -> None:
    """Cards paint lazily (content-visibility) and thumbnails load lazily: a shot taken at once after a
    scroll was a blank page. Wait for every image in view to load, then for two frames to be painted."""
    for img in page.locator("img").all():
        if img.is_visible():
            img.evaluate("i => i.complete || new Promise(r => { i.onload = i.onerror = r; })")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def small_png(path: Path) -> None:
    """256 colours, no dithering (which would defeat the compression): a third of the size or less, and a
    page of text and flat colour looks the same."""
    im = Image.open(path).convert("RGB")
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = REPO
    ap.add_argument("--dev", type=Path, default=repo.parent / "shared" / "data" / "dev")
    ap.add_argument("--out", type=Path, default=repo / "docs" / "img")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    a = ap.parse_args()
    # One fixed folder, not a fresh temporary name: the page shows the command and the head's folder, and
    # a random name made every regenerated image differ from the last for nothing.
    work = Path(tempfile.gettempdir()) / "aiidetect-screenshots"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    env = dict(os.environ, AIIDETECT_WEIGHTS=str(work / "weights"), AIIDETECT_CACHE=str(work / "cache"))
    demo = work / "story-photos"
    demo.mkdir()
    sd = sorted((a.dev / "ai" / "sd14").iterdir())
    cams = sorted((a.dev / "real" / "camera").iterdir())
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    Image.open(sd[0]).convert("RGB").save(demo / "market_night.png", pnginfo=info)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP, zip=True)
    Image.open(sd[1]).convert("RGB").save(demo / "protest_crowd.png", pnginfo=info)
    for p in sd[2:5] + cams[:5]:
        shutil.copy(p, demo / p.name)
    (demo / "broken_upload.jpg").write_bytes((demo / cams[0].name).read_bytes()[:2000])
    cli("train", "linear", str(a.dev.resolve() / "manifest.csv"), "--backbone-config", "tiny-vit", "--shots", "8",
        "--name", "demo-probe", "--out", str(work / "weights" / "demo-probe"), env=env, cwd=work)
    html = work / "report.html"
    # Scanned from inside the folder: the page names "story-photos/market_night.png", as an editor's run would.
    cli("scan", "story-photos", "--backbone-config", "tiny-vit", "-d", "metadata,linear", "--format", "html",
        "-o", "report.html", "--heatmaps", "ai,uncertain", "-q", env=env, cwd=work)
    from playwright.sync_api import sync_playwright

    a.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=a.chromium, args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1280, "height": 1280})
        page.goto(html.as_uri())
        page.wait_for_selector("html[data-ready='1']")
        page.click("#files-table th[data-key='p'] button")
        settle(page)
        page.screenshot(path=str(a.out / "report-desktop.png"))
        page = b.new_page(viewport={"width": 390, "height": 1300})
        page.goto(html.as_uri())
        page.wait_for_selector("html[data-ready='1']")
        card = page.locator("article.card", has_text="market_night.png")
        card.evaluate("el => el.scrollIntoView({block: 'start'})")
        settle(page)
        page.screenshot(path=str(a.out / "report-phone.png"))
        b.close()
    for name in ("report-desktop.png", "report-phone.png"):
        small_png(a.out / name)
    print(f"wrote {a.out / 'report-desktop.png'} and {a.out / 'report-phone.png'} (report: {html})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
