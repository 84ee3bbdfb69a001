"""How often the SD invisible watermark survives what happens to an image after it is made.

Why: docs/provenance.md says what a watermark match means and what a missing one does not. Those words have to
match measured numbers, not the package's promises. Each image is cut to a generator's output size (centre square,
512x512 by default), marked with the reference encoder of the `invisible-watermark` package (a test dependency) as
the pipelines call it (SD 1.x scripts: b"StableDiffusionV1" on BGR; diffusers' SDXL: its 48 bits on RGB passed as
BGR), then put through each transform and read by aiidetect's decoder (`provenance.watermark.detect`, bit-exact
with the package's own decoder) at the match threshold. The same transforms of the unmarked image are the control.

    python benchmarks/watermark_robustness.py                      # the 20 dev images of docs/provenance.md
    python benchmarks/watermark_robustness.py --json benchmarks/results/watermark_robustness.json
    python benchmarks/watermark_robustness.py DIR:N ...              # N files of each folder instead

A transform that changes the size (resize, crop) is read as `--watermark always` reads it; `auto` does not check
sizes a pipeline does not write (not multiples of 8), so there a resized copy is not even looked at.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

DEV = Path("/work/shared/data/dev")
# folder: how many files, taken evenly spaced from its sorted list (AI first, then real photos)
DEFAULT = [("ai/sd14", 4), ("ai/sd15", 4), ("ai/ml72", 2), ("real/ml72", 4), ("real/camera", 4),
           ("real/inpainting_inputs", 2)]


def pick(folder: Path, n: int) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    step = max(1, len(files) // n)
    return files[::step][:n]


def square(path: Path, size: int) -> np.ndarray:
    im = Image.open(path)
    im.draft("RGB", (size * 2, size * 2))   # camera JPEGs: decode near the size needed
    im = im.convert("RGB")
    s = min(im.size)
    left, top = (im.width - s) // 2, (im.height - s) // 2
    return np.asarray(im.crop((left, top, left + s, top + s)).resize((size, size), Image.LANCZOS))


def embed(rgb: np.ndarray, pattern: str) -> np.ndarray:
    import cv2
    import imwatermark

    from aiidetect.provenance import watermark

    enc = imwatermark.WatermarkEncoder()
    if pattern == "StableDiffusionV1":   # the SD 1.x/2.x scripts: RGB -> BGR, encode, back
        enc.set_watermark("bytes", watermark.SD1_MESSAGE)
        return cv2.cvtColor(enc.encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct"), cv2.COLOR_BGR2RGB)
    enc.set_watermark("bits", [int(b) for b in watermark.SDXL_BITS])
    return enc.encode(rgb.copy(), "dwtDct")   # diffusers hands the encoder RGB as is


def jpeg(q: int, subsampling: int | None = None):
    def f(a: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=q, **({} if subsampling is None else {"subsampling": subsampling}))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return f


def resize(k: float):
    def f(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        return np.asarray(Image.fromarray(a).resize((round(w * k), round(h * k)), Image.BICUBIC))
    return f


def crop(k: float, centred: bool):
    def f(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        if not centred:   # the kindest crop: rows off the bottom only, the block grid and row length kept
            return a[: round(h * (1 - k))]
        dy, dx = round(h * k / 2), round(w * k / 2)
        return a[dy:h - dy, dx:w - dx]
    return f


TRANSFORMS = [
    ("encode only (lossless)", lambda a: a),
    ("PNG save and reload", lambda a: np.asarray(Image.open(io.BytesIO(_png(a))).convert("RGB"))),
    ("JPEG q95 (Pillow default 4:2:0)", jpeg(95)),
    ("JPEG q95 4:4:4", jpeg(95, 0)),
    ("JPEG q90", jpeg(90)),
    ("JPEG q75", jpeg(75)),
    ("resize 0.9 (bicubic)", resize(0.9)),
    ("resize 0.5 (bicubic)", resize(0.5)),
    ("crop 10% of the rows (bottom)", crop(0.10, False)),
    ("crop 10% (5% off each side)", crop(0.10, True)),
]


def _short(path: Path) -> str:
    return str(path.relative_to(DEV)) if path.is_relative_to(DEV) else str(path)


def _machine() -> str:
    import os

    from aiidetect import cpuinfo

    return f"{cpuinfo.model() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


def _versions() -> dict:
    import importlib.metadata as md

    import cv2
    import PIL

    return {"python": sys.version.split()[0], "pillow": PIL.__version__, "opencv": cv2.__version__,
            "invisible-watermark": md.version("invisible-watermark"), "numpy": np.__version__}


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def run(items: list[tuple[str, Path]], size: int) -> dict:
    from aiidetect.provenance import watermark

    patterns = list(watermark.PATTERNS)
    rows = {(t, p, kind): [] for t, _ in TRANSFORMS for p in patterns for kind in ("marked", "unmarked")}
    t0 = time.perf_counter()
    for label, path in items:
        base = square(path, size)
        for p in patterns:
            marked = embed(base, p)
            for name, tf in TRANSFORMS:
                for kind, img in (("marked", marked), ("unmarked", base)):
                    res = {r.pattern: r for r in watermark.detect(tf(img))}
                    r = res.get(p)
                    rows[(name, p, kind)].append({"file": _short(path), "label": label,
                                                   "agreement": None if r is None else round(r.agreement, 4),
                                                   "matched": bool(r and r.matched)})
    out = {"size": size, "images": len(items), "ai": sum(lab == "ai" for lab, _ in items),
           "seconds": round(time.perf_counter() - t0, 1), "machine": _machine(),
           "versions": _versions(), "rows": []}
    for name, _ in TRANSFORMS:
        for p in patterns:
            for kind in ("marked", "unmarked"):
                got = rows[(name, p, kind)]
                ag = [g["agreement"] for g in got if g["agreement"] is not None]
                out["rows"].append({"transform": name, "pattern": p, "kind": kind,
                                    "matched": sum(g["matched"] for g in got), "of": len(got),
                                    "matched_ai": sum(g["matched"] for g in got if g["label"] == "ai"),
                                    "matched_real": sum(g["matched"] for g in got if g["label"] == "real"),
                                    "agreement_min": min(ag) if ag else None,
                                    "agreement_median": float(np.median(ag)) if ag else None,
                                    "agreement_max": max(ag) if ag else None, "per_file": got})
    return out


def table(res: dict) -> str:
    lines = ["| transform | pattern | marked: matched (AI + real) | agreement min / median / max | unmarked: matched |",
             "|---|---|---|---|---|"]
    by = {(r["transform"], r["pattern"], r["kind"]): r for r in res["rows"]}
    for name, _ in TRANSFORMS:
        for p in ("StableDiffusionV1", "SDXL"):
            m, u = by[(name, p, "marked")], by[(name, p, "unmarked")]
            ag = " / ".join("-" if m[k] is None else f"{m[k]:.2f}"
                            for k in ("agreement_min", "agreement_median", "agreement_max"))
            lines.append(f"| {name} | {p} | {m['matched']}/{m['of']} ({m['matched_ai']} + {m['matched_real']}) | "
                         f"{ag} | {u['matched']}/{u['of']} |")
    return "\n".join(lines)


def dumps(res: dict) -> str:
    """`res` as JSON with each per-file row on one line: pretty-printed whole, each took six lines (a 5,375-line
    result file for the 20 dev images)."""
    def row(r: dict) -> str:
        summary = json.dumps({k: v for k, v in r.items() if k != "per_file"})
        files = ",\n".join("   " + json.dumps(g) for g in r["per_file"])
        return f'  {summary[:-1]}, "per_file": [\n{files}\n  ]}}'

    head = json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1)
    return head[:-2] + ',\n "rows": [\n' + ",\n".join(row(r) for r in res["rows"]) + "\n ]\n}\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="*", help="DIR:N (label ai or real from the path); default: the 20 dev images")
    ap.add_argument("--size", type=int, default=512, help="side of the square each image is cut to before marking")
    ap.add_argument("--json", help="write every per-file number here")
    a = ap.parse_args(argv)
    specs = [(str(DEV / d), n) for d, n in DEFAULT] if not a.folders else [
        (s.rsplit(":", 1)[0], int(s.rsplit(":", 1)[1])) for s in a.folders]
    items = [("ai" if "/ai/" in f"/{d}/" else "real", p) for d, n in specs for p in pick(Path(d), n)]
    res = run(items, a.size)
    if a.json:
        Path(a.json).write_text(dumps(res))
    print(f"{res['images']} images ({res['ai']} AI), {a.size}x{a.size}, {res['seconds']} s, {res['machine']}, "
          + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
