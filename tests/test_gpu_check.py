"""benchmarks/gpu: the GPU check's helpers, and the whole check in its CPU smoke mode
(so that its first run on a GPU is not its first run)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
import gpucheck  # noqa: E402

CHECK = REPO / "benchmarks" / "gpu" / "check.sh"


def _sample(dev_dir, dest, per_folder: int) -> None:
    rc = gpucheck.main(["sample", str(dev_dir), str(dest), "--per-folder", str(per_folder)])
    assert rc == 0


def test_sample_has_both_labels_several_formats_and_leaves_the_dev_set_alone(dev_dir, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (dev_dir / "ai" / "sd15").iterdir()}
    _sample(dev_dir, tmp_path / "s", 2)
    rows = (tmp_path / "s" / "manifest.csv").read_text().splitlines()[1:]
    labels = {r.split(",")[1] for r in rows}
    exts = {os.path.splitext(r.split(",")[0])[1].lower() for r in rows}
    assert {"ai", "real"} <= labels
    assert {".jpg", ".png", ".webp", ".heic"} <= exts
    assert all((tmp_path / "s" / r.split(",")[0]).is_file() for r in rows)
    assert before == {p: p.stat().st_mtime_ns for p in (dev_dir / "ai" / "sd15").iterdir()}


def test_sample_refuses_more_than_it_may_carry(dev_dir, tmp_path):
    assert gpucheck.main(["sample", str(dev_dir), str(tmp_path / "s"), "--max-mb", "1"]) == 1


def test_repeated_copies_have_bytes_of_their_own_and_still_decode(dev_dir, tmp_path):
    from PIL import Image

    _sample(dev_dir, tmp_path / "s", 1)
    n_orig = len([p for p in (tmp_path / "s").rglob("*") if p.suffix.lower() in gpucheck.IMAGE_EXT])
    assert gpucheck.main(["repeat", str(tmp_path / "s"), str(tmp_path / "r"), "--files", str(2 * n_orig + 1)]) == 0
    files = sorted(p for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert len(files) == 2 * n_orig + 1
    blobs = [p.read_bytes() for p in files]
    assert len(set(blobs)) == len(blobs)  # the scan would otherwise reuse results by content hash
    for p, b in zip(files, blobs):
        if p.suffix.lower() in (".jpg", ".png", ".webp"):
            Image.open(io.BytesIO(b)).load()


def test_scan_summary_line_is_parsed(tmp_path):
    f = tmp_path / "scan.err"
    f.write_text("note: x\nscanned 3000 files in 12.5s (240.0 files/s): 3000 uncertain\nbackbone: y\n")
    assert gpucheck.parse_scan_log(f) == {"files": 3000, "seconds": 12.5, "files_per_s": 240.0}
    f.write_text("error: cannot prepare detectors\n")
    assert gpucheck.parse_scan_log(f) is None


def test_summary_of_a_cuda_shaped_run(tmp_path):
    """The fields only a CUDA run writes (on-device rates, GPU memory, median peaks) render."""
    (tmp_path / "facts.json").write_text(json.dumps({"gpu": {"name": "GPU-X"}, "packages": {"torch": "9"},
                                                     "cpu_count": 16, "cpu": "cpu-y"}))
    (tmp_path / "peak.json").write_text(json.dumps({"device": "cuda", "gflops": {"bfloat16": 700000.0},
                                                    "gflops_median": {"bfloat16": 690000.0},
                                                    "copy_gb_per_s_read_plus_write": 4000.0}))
    row = {"batch_size": 64, "model_images_per_s": 2000.0, "model_efficiency": 0.46,
           "model_images_per_s_on_device": 2600.0, "model_efficiency_on_device": 0.6, "peak_gpu_memory_mb": 3000.0}
    bench = {"backbone": "ViT-L-14 (random init, seed 0)", "dtype": "bfloat16", "device": "cuda", "batch_size": 64,
             "sweep": [row], "limit_images_per_s": 4300.0, "limit_basis": "bfloat16 matmul peak",
             "model_gflops_per_image": 161.7, "bf16_cosine_min": 0.9999}
    (tmp_path / "bench-model-ViT-L-14-bfloat16.json").write_text(json.dumps(bench))
    e2e = dict(bench, workers=16, preprocessing="center-crop", decode_images_per_s=500.0,
               model_images_per_s=2000.0, model_images_per_s_on_device=2600.0, end_to_end_images_per_s=450.0,
               efficiency=0.105, peak_gpu_memory_mb=2500.0,
               end_to_end={"files": 3000, "draft": None, "model_seconds": 1.5, "seconds": 6.7})
    (tmp_path / "bench-e2e-ViT-L-14-bfloat16-center-crop.json").write_text(json.dumps(e2e))
    (tmp_path / "steps.tsv").write_text("peak\t0\t9.5\nscan-e2e\t124\t180.0\nlate\tskipped\t0\n")
    assert gpucheck.main(["summary", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    (e,) = res["end_to_end"]
    assert e["decode_over_needed"] == 0.25 and e["model_busy_share"] == 0.224
    assert res["peak_gpu_memory_mb"] == 3000.0
    text = (tmp_path / "summary.txt").read_text()
    assert "GPU-X" in text and "median 690,000" in text and "DECODE IS THE BOTTLENECK" in text
    assert "2,600" in text and "60.0%" in text
    assert "FAILED OR SKIPPED: scan-e2e, late" in text


def test_decode_verdict_says_which_side_limits():
    assert "BOTTLENECK" in gpucheck._decode_verdict(0.25) and "4.0x short" in gpucheck._decode_verdict(0.25)
    assert "keeps up" in gpucheck._decode_verdict(1.5)


def test_bench_batch_size_sweep():
    from aiidetect.backbone import BackboneSpec
    from aiidetect.bench import run_bench

    res = run_bench(BackboneSpec.from_options(config="tiny-vit"), None, dtype="bfloat16", batch_size=[1, 3],
                    peak_seconds=0.05, model_seconds=0.05, check_cosine=False)
    assert [r["batch_size"] for r in res["sweep"]] == [1, 3]
    assert all(r["model_images_per_s"] > 0 and r["model_efficiency"] > 0 for r in res["sweep"])
    assert res["batch_size"] == 3 and res["model_images_per_s"] == res["sweep"][-1]["model_images_per_s"]
    with pytest.raises(ValueError):
        run_bench(BackboneSpec.from_options(config="tiny-vit"), None, batch_size=[], peak_seconds=0.05)


@pytest.mark.slow
def test_check_sh_smoke_mode_runs_every_step(dev_dir, tmp_path):
    """The whole check on the CPU with tiny-vit and a dozen images: every step must
    succeed and land in results.json, so that the GPU run is not the script's first."""
    _sample(dev_dir, tmp_path / "sample", 1)
    n = len([p for p in (tmp_path / "sample").rglob("*") if p.suffix.lower() in gpucheck.IMAGE_EXT])
    env = dict(os.environ, SMOKE="1", PYTHON=sys.executable, SAMPLE=str(tmp_path / "sample"), DTYPES="bfloat16",
               REPEAT_TO="12", INSTALL="0", TMPDIR=str(tmp_path))
    out = tmp_path / "out"
    p = subprocess.run(["bash", str(CHECK), str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    steps = {s["step"]: s["rc"] for s in res["steps"]}
    assert steps and all(rc == 0 for rc in steps.values()), steps
    for name in ("facts", "peak", "bench-model-tiny-vit-bfloat16", "repeat",
                 "bench-e2e-tiny-vit-bfloat16-resize-center-crop", "train-head", "scan-cpu-float32",
                 "scan-cpu-bfloat16", "agree", "embed-agree", "scan-e2e-tiny-vit-bfloat16", "decode-scaling"):
        assert name in steps, name
    assert res["peak"]["gflops"]["bfloat16"] > 0
    assert [r["batch_size"] for r in res["model"]] == [2, 4] and all(r["img_s"] > 0 for r in res["model"])
    (e2e,) = res["end_to_end"]
    assert e2e["files"] == 12 and e2e["e2e_img_s"] > 0 and e2e["decode_img_s"] > 0 and e2e["decode_over_needed"] > 0
    assert res["scan"] and res["scan"][0]["files"] == 12
    v = res["agreement"]["variants"]["cpu-bfloat16"]
    assert v["files"] == n and "linear:gpu-check" in v["detectors"]
    assert v["margins"]["detectors"]["linear:gpu-check"]["ref_logit_std"] > 0
    ea = res["embed_agreement"]["variants"]["cpu-bfloat16"]
    assert ea["finite"] and ea["cosine_min"] > 0.99
    rows = res["decode_scaling"]["rows"]
    assert [r["workers"] for r in rows] == [1, 2, 1, 2] and all(r["ok"] == 12 and r["files_per_s"] > 0 for r in rows)
    summary = (out / "summary.txt").read_text()
    assert "agreement with CPU float32" in summary and "random-init" in summary
    assert "check.log" in {f.name for f in out.iterdir()}
    with tarfile.open(out / "raw.tar.gz") as t:
        assert "./bench-model-tiny-vit-bfloat16.json" in t.getnames()
