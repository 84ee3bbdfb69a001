"""Helpers of the GPU check (benchmarks/gpu/check.sh, prepare.sh).

    python benchmarks/gpu/gpucheck.py sample DEV_DIR DEST [--max-mb 30] [--per-folder N]
    python benchmarks/gpu/gpucheck.py facts RUN_DIR
    python benchmarks/gpu/gpucheck.py peak RUN_DIR [--device cuda] [--n 8192] [--seconds 3]
    python benchmarks/gpu/gpucheck.py repeat SAMPLE DEST --files 3000
    python benchmarks/gpu/gpucheck.py agree RUN_DIR REF.jsonl LABEL=VARIANT.jsonl...
    python benchmarks/gpu/gpucheck.py embed-agree RUN_DIR SAMPLE --backbone ViT-L-14 [--device cuda]
    python benchmarks/gpu/gpucheck.py decode-scaling RUN_DIR FOLDER [--files 1000] [--workers 4,8,16,32]
    python benchmarks/gpu/gpucheck.py summary RUN_DIR

Only `facts`, `peak` and `embed-agree` import torch; the others run in a bare Python.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# (folder of the dev set, how many files, sorted by name): both labels, JPEG/PNG/WebP from
# several generators and cameras, plus HEIC, TIFF, GIF and BMP from the unlabelled formats/
# folder so that every decoder the scan uses runs once before the GPU run.
SAMPLE_PLAN = [
    ("ai/ml72", 25), ("ai/sd15", 40), ("ai/stylegan2", 40), ("ai/sd14", 8),
    ("real/camera", 14), ("real/ml72", 6), ("real/inpainting_inputs", 4),
    ("formats/heic", 2), ("formats/tif", 1), ("formats/gif", 1), ("formats/bmp", 1),
]
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff", ".gif", ".bmp"}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    dev, dest = Path(args.dev), Path(args.dest)
    rows = {}
    with open(dev / "manifest.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows[r["file"]] = r
    if dest.exists():
        shutil.rmtree(dest)
    picked = []
    for folder, n in SAMPLE_PLAN:
        n = min(n, args.per_folder) if args.per_folder else n
        files = sorted((p for p in (dev / folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT),
                       key=lambda p: p.name.lower())[:n]
        picked += [p.relative_to(dev).as_posix() for p in files]
    total = 0
    out_rows = []
    for rel in picked:
        src, dst = dev / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)  # the dev set is only read
        total += dst.stat().st_size
        r = rows.get(rel, {"file": rel, "label": "unknown"})
        out_rows.append({"file": rel, "label": r.get("label", "unknown"), "generator": r.get("generator", ""),
                         "source": r.get("source", ""), "license": r.get("license", "")})
    with open(dest / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "generator", "source", "license"])
        w.writeheader()
        w.writerows(out_rows)
    labels: dict[str, int] = {}
    exts: dict[str, int] = {}
    for r in out_rows:
        labels[r["label"]] = labels.get(r["label"], 0) + 1
        e = Path(r["file"]).suffix.lower().lstrip(".")
        exts[e] = exts.get(e, 0) + 1
    mb = total / 1e6
    print(f"sample: {len(out_rows)} files, {mb:.1f} MB in {dest}; labels {labels}; formats {exts}")
    if mb > args.max_mb:
        print(f"error: the sample is {mb:.1f} MB, over the {args.max_mb} MB it may take", file=sys.stderr)
        return 1
    if not all(labels.get(k) for k in ("ai", "real")):
        print("error: the sample lacks one of the labels ai/real", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- repeat
def cmd_repeat(args) -> int:
    """Copies of the sample until there are --files files, each with bytes of
    its own: the scan reuses results for identical bytes (content hash), so
    plain copies would run the model once per original. The extra bytes go
    after the image data, where every decoder stops reading."""
    src, dest = Path(args.sample), Path(args.dest)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXT)
    if not files:
        print(f"error: no images under {src}", file=sys.stderr)
        return 1
    if dest.exists():
        shutil.rmtree(dest)
    data = [(p.relative_to(src), p.read_bytes()) for p in files]
    total = 0
    for i in range(args.files):
        rel, b = data[i % len(data)]
        out = dest / f"r{i // len(data):04d}" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        tail = f"\0aiidetect-copy-{i:08d}".encode()
        out.write_bytes(b + tail)
        total += len(b) + len(tail)
    print(f"repeat: {args.files} files ({total / 1e6:.0f} MB) from {len(data)} originals in {dest}")
    return 0


# ---------------------------------------------------------------- facts and peak (torch)
def _versions(names) -> dict[str, str | None]:
    import importlib.metadata as md

    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def cmd_facts(args) -> int:
    run = Path(args.run)
    facts: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        facts["cpu"] = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                            if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    facts["packages"] = _versions(["torch", "torchvision", "open_clip_torch", "timm", "numpy", "pillow",
                                   "pillow_heif", "ExifRead", "defusedxml", "c2pa-python", "ftfy", "wcwidth",
                                   "scikit-learn", "safetensors", "typer", "rich", "onnxruntime",
                                   "huggingface_hub"])
    imports = {}
    for mod in ("open_clip", "pillow_heif", "exifread", "defusedxml", "c2pa"):
        try:
            if mod == "open_clip":
                sys.path.insert(0, str(REPO))
                from aiidetect.backbone import import_open_clip

                import_open_clip()
            else:
                __import__(mod)
            imports[mod] = "ok"
        except Exception as exc:  # noqa: BLE001 - a fact to report, not a failure of the check
            imports[mod] = f"{type(exc).__name__}: {exc}"[:200]
    facts["imports"] = imports
    import torch

    facts["torch_cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2 ** 30, 1),
                        "multiprocessors": p.multi_processor_count, "capability": f"{p.major}.{p.minor}",
                        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                              "power.limit,temperature.gpu", "--format=csv"], capture_output=True, text=True,
                             timeout=20)
        facts["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        facts["nvidia_smi"] = f"not available: {exc}"
    _write_json(run / "facts.json", facts)
    print(json.dumps({k: facts.get(k) for k in ("python", "cpu_count", "gpu", "imports")}, default=str))
    return 0


def cmd_peak(args) -> int:
    """Matmul peaks (the ceiling efficiency is measured against) and, on CUDA,
    a device-to-device copy (the memory ceiling)."""
    sys.path.insert(0, str(REPO))
    import torch

    from aiidetect.bench import cuda_event_seconds, matmul_peak_gflops

    dev = args.device
    res: dict = {"device": dev, "n": args.n, "seconds_each": args.seconds, "gflops": {}}
    if dev == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    for dt in ("bfloat16", "float16", "float32"):
        if dev == "cuda":
            from aiidetect.bench import cuda_matmul_stats

            st = cuda_matmul_stats(dt, n=args.n or 8192, seconds=args.seconds)
            res["gflops"][dt] = round(st["best"], 1)
            res.setdefault("gflops_median", {})[dt] = round(st["median"], 1)
            res.setdefault("products", {})[dt] = st["products"]
        else:
            res["gflops"][dt] = round(matmul_peak_gflops(dt, n=args.n, seconds=args.seconds, device=dev), 1)
    if dev == "cuda":
        n = 1 << 30  # 1 GiB each way
        a = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
        b = torch.empty_like(a)
        for _ in range(3):
            b.copy_(a)
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            times.append(cuda_event_seconds(lambda: b.copy_(a)))
        times.sort()
        res["copy_gb_per_s_read_plus_write"] = round(2 * n / times[len(times) // 2] / 1e9, 1)
        del a, b
    _write_json(Path(args.run) / "peak.json", res)
    print(json.dumps(res))
    return 0


# ---------------------------------------------------------------- agreement
def _margins(ref: dict, var: dict) -> dict:
    """What "decisions changed" can mean on these scans: the spread of the
    reference logits, the largest difference relative to it, and how many files
    sit closer to the decision threshold than the largest p_ai difference (only
    those could have flipped)."""
    import statistics

    out = {}
    files = [f for f in ref if f in var and ref[f]["verdict"] != "error" and var[f]["verdict"] != "error"]
    names = sorted({n for f in files for n in ref[f]["detectors"] if n != "metadata"})
    for n in names:
        pairs = [(ref[f]["detectors"].get(n) or {}, var[f]["detectors"].get(n) or {}) for f in files]
        pairs = [(a, b) for a, b in pairs if a.get("status") == "ok" and b.get("status") == "ok"
                 and a.get("score") is not None and b.get("score") is not None]
        if len(pairs) < 2:
            continue
        s = [a["score"] for a, _ in pairs]
        dmax = max(abs(a["score"] - b["score"]) for a, b in pairs)
        pmax = max(abs(a["p_ai"] - b["p_ai"]) for a, b in pairs)
        thr = [a.get("threshold", 0.5) or 0.5 for a, _ in pairs]
        spread = statistics.pstdev(s)
        out[n] = {"ref_logit_min": min(s), "ref_logit_max": max(s), "ref_logit_std": spread,
                  "max_diff_over_std": dmax / spread if spread > 0 else None, "p_ai_max_abs_diff": pmax,
                  "files_within_p_diff_of_threshold": sum(abs(a["p_ai"] - t) <= pmax for (a, _), t in zip(pairs, thr)),
                  "ref_decisions_ai": sum(a["p_ai"] >= t for (a, _), t in zip(pairs, thr)), "files": len(pairs)}
    verdicts: dict[str, int] = {}
    for f in files:
        verdicts[ref[f]["verdict"]] = verdicts.get(ref[f]["verdict"], 0) + 1
    return {"detectors": out, "ref_verdicts": verdicts}


def cmd_agree(args) -> int:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from dtype_agreement import compare, load

    ref = load(args.reference)
    out = {"reference": args.reference, "variants": {}}
    for spec in args.variants:
        label, _, path = spec.partition("=")
        if not Path(path).is_file():
            out["variants"][label] = {"error": f"{path} missing (that scan failed)"}
            continue
        var = load(path)
        out["variants"][label] = compare(ref, var)
        out["variants"][label]["margins"] = _margins(ref, var)
    _write_json(Path(args.run) / "agreement.json", out)
    print(json.dumps(out)[:2000])
    return 0


def cmd_embed_agree(args) -> int:
    """Head-free agreement: the backbone's embedding of every sample image in
    float32 on the CPU against `dtype` on `device` (same random-init weights,
    center-crop as the shipped head): cosine and relative L2 error."""
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch

    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.onnx_export import image_paths, load_pixels
    from aiidetect.preprocess import make_spec

    if args.backbone in ("tiny-vit", "small-vit") or args.backbone.endswith(".json"):
        spec = BackboneSpec.from_options(config=args.backbone)
    else:
        spec = BackboneSpec.from_options(model=args.backbone, pretrained="none")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    bb = create_backbone(spec, device="cpu", dtype="float32")
    px, kept = load_pixels(image_paths(args.sample), make_spec("center-crop", bb.image_size, bb.mean, bb.std),
                           workers=os.cpu_count() or 2)

    def embed(device: str, dtype: str) -> np.ndarray:
        bb.to(device=device, dtype=dtype)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(px), args.batch_size):
                x = torch.from_numpy(px[i:i + args.batch_size]).to(device, getattr(torch, dtype))
                outs.append(bb.encode(x)["embed"].double().cpu().numpy())
        return np.concatenate(outs)

    t = time.perf_counter()
    ref = embed("cpu", "float32")
    res: dict = {"backbone": spec.describe(), "images": len(kept), "reference": "cpu float32",
                 "reference_seconds": round(time.perf_counter() - t, 2), "variants": {}}
    for dt in args.dtypes.split(","):
        got = embed(args.device, dt)
        cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        rel = np.linalg.norm(ref - got, axis=1) / np.linalg.norm(ref, axis=1)
        res["variants"][f"{args.device}-{dt}"] = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                                                  "rel_l2_max": float(rel.max()), "rel_l2_mean": float(rel.mean()),
                                                  "finite": bool(np.isfinite(got).all())}
    _write_json(Path(args.run) / "embed-agreement.json", res)
    print(json.dumps(res))
    return 0


def cmd_decode_scaling(args) -> int:
    """Files/s of the scan's decode stage alone (read + hash + decode +
    preprocess + the metadata detector, what each decode worker does) at
    several worker counts: how many workers the GPU needs, and whether more
    threads still help on this machine."""
    sys.path.insert(0, str(REPO))
    from concurrent.futures import ThreadPoolExecutor

    from aiidetect.decode import DecodeLimits, decode_sample, read_sample
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.onnx_export import image_paths
    from aiidetect.preprocess import CLIP_MEAN, CLIP_STD, make_spec

    paths = image_paths(args.folder, args.files)
    limits = DecodeLimits()
    md = MetadataDetector({"watermark": "auto"})
    res: dict = {"files": len(paths), "cpu_count": os.cpu_count(), "rows": []}
    for mode in args.preprocess.split(","):
        spec = make_spec(mode, 224, CLIP_MEAN, CLIP_STD)
        draft = None   # as the scan decodes (Plan.build: no JPEG draft for any preprocessing)

        def work(ip):
            s = read_sample(ip[1], ip[0], limits)
            if s.ok:
                decode_sample(s, limits, [spec], draft=draft)
                md.predict([s], [{}])
            return s.ok

        for w in [int(x) for x in args.workers.split(",")]:
            t = time.perf_counter()
            with ThreadPoolExecutor(w) as pool:
                ok = sum(pool.map(work, enumerate(paths)))
            s = time.perf_counter() - t
            row = {"preprocessing": mode, "draft": draft, "workers": w, "files_per_s": round(len(paths) / s, 1),
                   "ok": ok, "seconds": round(s, 2)}
            res["rows"].append(row)
            print(json.dumps(row), file=sys.stderr)
            _write_json(Path(args.run) / "decode-scaling.json", res)  # a step stopped early keeps its rows
    return 0


# ---------------------------------------------------------------- summary
_SCAN_LINE = re.compile(r"scanned (\d+) files? in ([\d.]+)s(?: \(([\d.]+) files/s\))?")


def parse_scan_log(path: Path) -> dict | None:
    """The scan's own summary line on stderr: files, seconds and files/s of the
    pipeline (after the model is built)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = None
    for m in _SCAN_LINE.finditer(text):
        pass
    if m is None:
        return None
    return {"files": int(m.group(1)), "seconds": float(m.group(2)),
            "files_per_s": float(m.group(3)) if m.group(3) else None}


def _steps(run: Path) -> list[dict]:
    out = []
    try:
        for ln in (run / "steps.tsv").read_text().splitlines():
            name, rc, secs = (ln.split("\t") + ["", ""])[:3]
            out.append({"step": name, "rc": int(rc) if rc.lstrip("-").isdigit() else rc,
                        "seconds": float(secs) if secs else None})
    except OSError:
        pass
    return out


def summarize(run: Path) -> dict:
    facts = _read_json(run / "facts.json") or {}
    peak = _read_json(run / "peak.json") or {}
    res: dict = {"facts": facts, "peak": peak, "steps": _steps(run), "model": [], "end_to_end": [],
                 "scan": [], "agreement": None}
    res["weights_note"] = ("All backbones are random-init (--pretrained none; no CLIP weights on this machine). "
                           "Speed and memory do not depend on weight values. Agreement is measured on a linear "
                           "probe trained in this run on the random backbone's features of the sample: it shows "
                           "how far bf16/fp16 arithmetic moves logits and decisions, not how the shipped heads "
                           "on trained CLIP weights would move (trained CLIP activations have larger outliers).")
    for f in sorted(run.glob("bench-model-*.json")):
        b = _read_json(f)
        if not b:
            continue
        for row in b.get("sweep") or [dict(b, batch_size=b.get("batch_size"))]:
            res["model"].append({"backbone": b["backbone"], "dtype": b["dtype"], "device": b["device"],
                                 "batch_size": row["batch_size"], "img_s": row.get("model_images_per_s"),
                                 "img_s_on_device": row.get("model_images_per_s_on_device"),
                                 "eff": row.get("model_efficiency"), "eff_on_device": row.get("model_efficiency_on_device"),
                                 "gpu_mb": row.get("peak_gpu_memory_mb"), "limit_img_s": b.get("limit_images_per_s"),
                                 "limit_basis": b.get("limit_basis"), "gflop_per_image": b.get("model_gflops_per_image"),
                                 "cosine_vs_fp32": b.get("bf16_cosine_min", b.get("fp16_cosine_min"))})
    for f in sorted(run.glob("bench-e2e-*.json")):
        b = _read_json(f)
        if not b:
            continue
        e = b.get("end_to_end") or {}
        # what the pipeline's main thread can consume: the model fed from numpy, as the scan feeds it
        model = b.get("model_images_per_s")
        dec = b.get("decode_images_per_s")
        e2e = b.get("end_to_end_images_per_s")
        row = {"backbone": b["backbone"], "dtype": b["dtype"], "device": b["device"], "batch_size": b["batch_size"],
               "workers": b["workers"], "files": e.get("files"), "preprocessing": b.get("preprocessing"),
               "draft": e.get("draft"), "decode_img_s": dec, "decode_img_s_no_draft": b.get("decode_images_per_s_no_draft"),
               "model_img_s": b.get("model_images_per_s"), "model_img_s_on_device": b.get("model_images_per_s_on_device"),
               "e2e_img_s": e2e, "limit_img_s": b.get("limit_images_per_s"), "e2e_eff": b.get("efficiency"),
               "model_seconds": e.get("model_seconds"), "seconds": e.get("seconds"),
               "decode_seconds_sum": e.get("decode_seconds_sum"), "gpu_mb": b.get("peak_gpu_memory_mb")}
        # Decode must deliver what the model consumes: below that the GPU waits.
        row["decode_needed_img_s"] = model
        row["decode_over_needed"] = round(dec / model, 3) if model and dec else None
        if e.get("seconds") and e.get("model_seconds") is not None:
            row["model_busy_share"] = round(e["model_seconds"] / e["seconds"], 3)
        res["end_to_end"].append(row)
    for f in sorted(run.glob("scan-e2e-*.err")):
        s = parse_scan_log(f)
        if s:
            s["run"] = f.stem
            res["scan"].append(s)
    res["agreement"] = _read_json(run / "agreement.json")
    res["embed_agreement"] = _read_json(run / "embed-agreement.json")
    res["decode_scaling"] = _read_json(run / "decode-scaling.json")
    mems = [r["gpu_mb"] for r in res["model"] + res["end_to_end"] if r.get("gpu_mb")]
    res["peak_gpu_memory_mb"] = max(mems) if mems else None
    return res


def _fmt(x, spec=",.0f", unit=""):
    return "-" if x is None else f"{x:{spec}}{unit}"


def _decode_verdict(ratio) -> str:
    if ratio is None:
        return "not measured"
    if ratio >= 1:
        return f"decode keeps up ({ratio:.2f}x what the model needs)"
    return f"DECODE IS THE BOTTLENECK: it delivers {ratio:.0%} of what the model needs ({1 / ratio:.1f}x short)"


def render(res: dict) -> str:
    lines = []
    f = res["facts"]
    gpu = (f.get("gpu") or {}).get("name") or "no CUDA device"
    pk = (res["peak"] or {}).get("gflops") or {}
    lines.append(f"== aiidetect GPU check: {gpu} on {res['peak'].get('device', '?')}; torch "
                 f"{(f.get('packages') or {}).get('torch')}, {f.get('cpu_count')} CPU cores ({f.get('cpu')})")
    med = (res["peak"] or {}).get("gflops_median") or {}
    lines.append("matmul peak, best (GFLOP/s): " + ", ".join(f"{k} {_fmt(v)}" + (f" (median {_fmt(med[k])})"
                                                                               if k in med else "")
                                                          for k, v in pk.items())
                 + (f"; device copy {res['peak']['copy_gb_per_s_read_plus_write']} GB/s"
                    if res["peak"].get("copy_gb_per_s_read_plus_write") else ""))
    lines.append(res["weights_note"])
    if res["model"]:
        lines.append("")
        lines.append("model only (aiidetect bench): img/s numpy-in/numpy-out | on device | eff. on device vs "
                     "matmul peak | GPU MB")
        for r in res["model"]:
            lines.append(f"  {r['backbone'].split(' (')[0]:12s} {r['dtype']:9s} b{r['batch_size']:<4d} {_fmt(r['img_s']):>9s} "
                         f"| {_fmt(r['img_s_on_device']):>9s} | {_fmt(r['eff_on_device'] or r['eff'], '.1%'):>7s} "
                         f"| {_fmt(r['gpu_mb'])}")
    if res["end_to_end"]:
        lines.append("")
        lines.append("end to end (bench through the scan pipeline, metadata detector on):")
        for r in res["end_to_end"]:
            lines.append(f"  {r['backbone'].split(' (')[0]} {r['dtype']} b{r['batch_size']} w{r['workers']} "
                         f"{r['preprocessing']} ({r['files']} files): e2e {_fmt(r['e2e_img_s'])} img/s = "
                         f"{_fmt(r['e2e_eff'], '.1%')} of the peak's limit {_fmt(r['limit_img_s'])}; decode "
                         f"{_fmt(r['decode_img_s'])} img/s with {r['workers']} workers (no metadata) vs {_fmt(r['decode_needed_img_s'])} "
                         f"the model consumes: {_decode_verdict(r.get('decode_over_needed'))}; model busy "
                         f"{_fmt(r.get('model_busy_share'), '.0%')} of the wall time")
    ds = res.get("decode_scaling")
    if ds and ds.get("rows"):
        lines.append(f"decode stage alone (read, hash, decode, preprocess, metadata; {ds['files']} files, "
                     f"{ds['cpu_count']} cores): " + "; ".join(f"{r['preprocessing']} w{r['workers']} "
                                                               f"{r['files_per_s']:,.0f}/s" for r in ds["rows"]))
    for s in res["scan"]:
        lines.append(f"  aiidetect scan ({s['run']}): {s['files']} files in {s['seconds']} s = "
                     f"{_fmt(s['files_per_s'], ',.1f')} files/s")
    ag = res.get("agreement")
    if ag:
        lines.append("")
        lines.append("agreement with CPU float32 on the sample (trained-here linear probe logit; fused verdict):")
        for label, v in ag["variants"].items():
            if "error" in v:
                lines.append(f"  {label}: {v['error']}")
                continue
            mg = v.get("margins") or {}
            for name, d in v["detectors"].items():
                if name == "metadata" or d.get("score_max_abs_diff") is None:
                    continue
                m = (mg.get("detectors") or {}).get(name) or {}
                lines.append(f"  {label} {name}: max |logit diff| {d['score_max_abs_diff']:.4g} "
                             f"(= {_fmt(m.get('max_diff_over_std'), '.3g')} x the logits' std "
                             f"{_fmt(m.get('ref_logit_std'), '.3g')}), decisions changed "
                             f"{d['decision_changed']}/{d['files']}; files near enough to the threshold to flip: "
                             f"{m.get('files_within_p_diff_of_threshold', '-')}; reference says ai for "
                             f"{m.get('ref_decisions_ai', '-')}")
            fu = v["fused"]
            lines.append(f"  {label} fused: verdicts changed {fu['verdict_changed']}/{v['files']}, max |p_ai diff| "
                         f"{_fmt(fu['p_ai_max_abs_diff'], '.4g')}; reference verdicts {mg.get('ref_verdicts')}")
    ea = res.get("embed_agreement")
    if ea:
        lines.append(f"embeddings vs CPU float32 ({ea['images']} sample images, {ea['backbone']}):")
        for label, v in ea["variants"].items():
            lines.append(f"  {label}: cosine min {v['cosine_min']:.6f} (mean {v['cosine_mean']:.6f}), relative L2 "
                         f"error max {v['rel_l2_max']:.4g} (mean {v['rel_l2_mean']:.3g}), finite {v['finite']}")
    lines.append("")
    lines.append(f"peak GPU memory (max_memory_allocated): {_fmt(res['peak_gpu_memory_mb'], ',.0f', ' MB')}")
    bad = [s for s in res["steps"] if s["rc"] != 0]
    lines.append("steps: " + ", ".join(f"{s['step']} {'ok' if s['rc'] == 0 else 'rc=' + str(s['rc'])}"
                                       f" {_fmt(s['seconds'], '.0f', 's')}" for s in res["steps"]))
    if bad:
        lines.append(f"FAILED OR SKIPPED: {', '.join(s['step'] for s in bad)} (see check.log)")
    return "\n".join(lines)


def cmd_summary(args) -> int:
    run = Path(args.run)
    res = summarize(run)
    _write_json(run / "results.json", res)
    try:
        text = render(res)
    except Exception as exc:  # noqa: BLE001 - results.json is written; the text view must not hide it
        text = f"(summary text failed: {type(exc).__name__}: {exc}; the numbers are in results.json)"
    (run / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sample")
    p.add_argument("dev")
    p.add_argument("dest")
    p.add_argument("--max-mb", type=float, default=30.0)
    p.add_argument("--per-folder", type=int, default=None, help="at most this many files per dev folder")
    p = sub.add_parser("repeat")
    p.add_argument("sample")
    p.add_argument("dest")
    p.add_argument("--files", type=int, default=3000)
    p = sub.add_parser("facts")
    p.add_argument("run")
    p = sub.add_parser("peak")
    p.add_argument("run")
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--seconds", type=float, default=3.0)
    p = sub.add_parser("agree")
    p.add_argument("run")
    p.add_argument("reference")
    p.add_argument("variants", nargs="+", help="LABEL=FILE.jsonl")
    p = sub.add_parser("embed-agree")
    p.add_argument("run")
    p.add_argument("sample")
    p.add_argument("--backbone", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtypes", default="bfloat16,float16")
    p.add_argument("--batch-size", type=int, default=32)
    p = sub.add_parser("decode-scaling")
    p.add_argument("run")
    p.add_argument("folder")
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--workers", default="4,8,16,32")
    p.add_argument("--preprocess", default="center-crop,resize-center-crop")
    p = sub.add_parser("summary")
    p.add_argument("run")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    rc = {"sample": cmd_sample, "repeat": cmd_repeat, "facts": cmd_facts, "peak": cmd_peak, "agree": cmd_agree,
          "embed-agree": cmd_embed_agree,
          "decode-scaling": cmd_decode_scaling, "summary": cmd_summary}[args.cmd](args)
    if args.cmd not in ("summary",):
        print(f"({args.cmd}: {time.perf_counter() - t:.1f} s)", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
