"""aiidetect bench (tiny backbone, few images) and start-up without torch."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli, run_cli_in_process

_PROBE = """
import sys, runpy
sys.argv = ['aiidetect'] + {args!r}
try:
    runpy.run_module('aiidetect', run_name='__main__')
except SystemExit:
    pass
print('HEAVY=' + ','.join(m for m in ('torch', 'open_clip', 'onnxruntime', 'torchvision') if m in sys.modules))
"""


def _heavy_imports(args: list[str]) -> tuple[list[str], float]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _PROBE.format(args=args)], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    wall = time.perf_counter() - t
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line, p.stdout + p.stderr
    return [m for m in line[-1][6:].split(",") if m], wall


def test_help_does_not_import_torch():
    heavy, _ = _heavy_imports(["--help"])
    assert heavy == []


def test_meta_does_not_import_torch(dev_dir):
    if not (REPO / "aiidetect" / "commands" / "meta.py").is_file():
        pytest.skip("meta command not built yet")
    f = next((dev_dir / "real").rglob("*.jpg"))
    heavy, _ = _heavy_imports(["meta", str(f)])
    assert heavy == []


def test_vit_flops_match_the_issue_and_torch_counter():
    from aiidetect.backbone import BackboneSpec, create_backbone, import_open_clip
    from aiidetect.bench import vit_gflops

    oc = import_open_clip()
    assert vit_gflops(oc.get_model_config("ViT-L-14")) == pytest.approx(162, rel=0.01)
    assert vit_gflops(oc.get_model_config("ViT-B-16")) == pytest.approx(35, rel=0.01)
    # cross-check the formula against torch's own FLOP counter on the tiny model
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    bb = create_backbone(BackboneSpec.from_options(config="tiny-vit"))
    for blk in bb.visual.transformer.resblocks:
        blk.attn.train()  # off nn.MultiheadAttention's fused inference path, which the counter does not see
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        bb.encode(torch.zeros(1, 3, 224, 224))
    # torch's counter does not see the CPU attention kernel (QK^T and AV: 4 T^2 W per block): add it back
    v, t = bb.model_cfg["vision_cfg"], (224 // 16) ** 2 + 1
    attn = v["layers"] * 4 * t * t * v["width"] / 1e9
    assert (fc.get_total_flops() / 1e9 + attn) == pytest.approx(vit_gflops(bb.model_cfg), rel=0.02)


def test_bench_json_fields(dev_dir):
    r = run_cli("bench", str(dev_dir / "real"), "--backbone-config", "tiny-vit", "--images", "6", "--batch-size", "3",
                "--dtype", "bfloat16", "--model-seconds", "0.3", "--peak-seconds", "0.2", "--format", "json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for k in ("decode_images_per_s", "model_images_per_s", "end_to_end_images_per_s", "peak_gflops",
              "model_gflops_per_image", "efficiency", "runtime", "dtype", "batch_size", "backbone",
              "peak_memory_mb"):
        assert k in res, k
    assert res["runtime"] == "torch" and res["dtype"] == "bfloat16" and res["batch_size"] == 3
    assert res["peak_gflops"]["float32"] > 0 and res["peak_gflops"]["bfloat16"] > 0
    assert res["decode_images_per_s"] > 0 and res["model_images_per_s"] > 0 and res["end_to_end_images_per_s"] > 0
    assert 0 < res["efficiency"] < 1
    assert res["bf16_cosine_min"] > 0.99
    assert res["end_to_end"]["files"] == 6
    # a CPU model on every core: the scan's rule times both schedules and keeps the faster
    assert res["end_to_end"]["decode_schedule"]["schedule"] == "adaptive"


def test_bench_decode_schedule_can_be_forced(dev_dir):
    # in-process: the schedule taken is the question (test_bench_json_fields runs bench as a subprocess)
    r = run_cli_in_process("bench", str(dev_dir / "real"), "--backbone-config", "tiny-vit", "--images", "4",
                           "--batch-size", "2", "--model-seconds", "0.2", "--peak-seconds", "0.1",
                           "--decode-schedule", "overlap", "--format", "json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["end_to_end"]["decode_schedule"] == {"schedule": "overlap"} and res["end_to_end"]["files"] == 4
    r = run_cli_in_process("bench", "--backbone-config", "tiny-vit", "--decode-schedule", "sometimes")
    assert r.returncode == 2


def test_bench_onnx_int8_runs():
    from aiidetect.backbone import BackboneSpec
    from aiidetect.bench import run_bench

    pytest.importorskip("onnxruntime")
    res = run_bench(BackboneSpec.from_options(config="tiny-vit"), None, runtime="onnx", dtype="int8",
                    batch_size=2, peak_seconds=0.2, model_seconds=0.2)
    assert res["provider"] == "CPUExecutionProvider"
    assert res["model_images_per_s"] > 0 and res["end_to_end_images_per_s"] is None
    from aiidetect import cpuinfo  # the int8 setup is reported: 7-bit weights + exact kernels without VNNI

    assert res["int8"] == {"weight_bits": cpuinfo.int8_weight_bits(), "exact_kernels": cpuinfo.int8_pairs_saturate()}


def test_bench_rejects_bad_combinations():
    # the command's decision, in-process: bench's exit 2 as a process is test_bench_cli_refuses_a_batch_that_cannot_fit
    r = run_cli_in_process("bench", "--backbone-config", "tiny-vit", "--dtype", "int8")
    assert r.returncode == 2 and "onnx" in r.stderr


def test_a_batch_that_cannot_fit_is_a_usage_error_before_any_work(monkeypatch):
    """`bench --batch-size 100000` drew 112 GiB of random pixels after timing the matmul peak: a MemoryError
    at best; a batch just under the machine's memory was the OOM killer. It is refused before the peak."""
    import aiidetect.bench as bench
    from aiidetect.backbone import BackboneSpec

    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda *a, **k: pytest.fail("measured before refusing"))
    with pytest.raises(ValueError, match="a batch of 1000000 images needs at least .* GiB"):
        bench.run_bench(BackboneSpec.from_options(config="tiny-vit"), None, batch_size=[2, 10 ** 6])
    # the bound is only a lower bound: the batch sizes people time still pass it
    host, model = bench.batch_bytes({"vision_cfg": {"image_size": 224, "patch_size": 14, "width": 1024,
                                                    "head_width": 64, "layers": 24}}, 256)
    assert host + model < 4 * 2 ** 30
    # on CUDA the activations are weighed against the GPU's free memory, the pixels against the host's
    free = {"cpu": 64 * 2 ** 30, "cuda": 2 ** 30}
    monkeypatch.setattr(bench, "available_bytes", lambda device="cpu": free[device])
    cfg = {"vision_cfg": {"image_size": 224, "patch_size": 14, "width": 1024, "head_width": 64}}
    bench.check_batch_fits(cfg, 256, "cpu")
    with pytest.raises(ValueError, match="GPU memory"):
        bench.check_batch_fits(cfg, 256, "cuda")
    # a bound, not an estimate: a ViT-L/14 bf16 batch of 1024 holds at least its residual stream and MLP
    # hidden layer (2.5 GiB in bf16) and fits 8 GiB; counting the attention matrix and QKV beside the MLP,
    # in float32, asked for 11 GiB and refused it
    free["cuda"] = 8 * 2 ** 30
    bench.check_batch_fits(cfg, 1024, "cuda", "bfloat16")
    with pytest.raises(ValueError, match="GPU memory"):
        bench.check_batch_fits(cfg, 4096, "cuda", "bfloat16")


def test_a_folder_where_nothing_decodes_says_so(tmp_path):
    """A folder of empty or truncated files ended bench with 'RuntimeError: cannot reshape tensor of 0
    elements' (the model was handed an empty batch)."""
    import aiidetect.bench as bench
    from aiidetect.backbone import BackboneSpec

    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ValueError, match="none of the first 2 images in .* could be decoded"):
        bench.run_bench(BackboneSpec.from_options(config="tiny-vit"), tmp_path, batch_size=2, peak_seconds=0.01,
                        model_seconds=0.01)


def test_a_folder_with_no_image_is_a_usage_error(tmp_path):
    """`bench /mnt/photos -f json` with the share not mounted timed the model on random pixels and exited 0,
    decode and end to end null: a script recorded it as a measurement of those photos."""
    (tmp_path / "notes.txt").write_text("not an image")
    r = run_cli_in_process("bench", str(tmp_path), "--backbone-config", "tiny-vit", "-f", "json",
                           "--peak-seconds", "0.01", "--model-seconds", "0.01")
    assert (r.returncode, r.stdout) == (2, "")
    assert f"no images in {tmp_path}" in r.stderr


def test_bench_cli_refuses_a_batch_that_cannot_fit():
    r = run_cli("bench", "--backbone-config", "tiny-vit", "--batch-size", "100000000", "-f", "json")
    assert r.returncode == 2 and r.stdout == "" and "--batch-size" in r.stderr, r.stderr
    assert "MemoryError" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_auto_dtype_is_bf16_only_on_cpus_with_native_bf16(monkeypatch):
    import aiidetect.backbone as bb

    monkeypatch.setattr(bb, "native_bf16_cpu", lambda: True)
    assert bb.resolve_dtype("auto", "cpu") == "bfloat16"
    assert bb.resolve_dtype("auto", "cuda") == "float32"   # not measured on a GPU yet: stay exact
    assert bb.resolve_dtype("float32", "cpu") == "float32"
    monkeypatch.setattr(bb, "native_bf16_cpu", lambda: False)
    assert bb.resolve_dtype("auto", "cpu") == "float32"    # emulated bf16 is slower than fp32
    assert bb.resolve_dtype("bfloat16", "cpu") == "bfloat16"


def test_native_bf16_probe_matches_cpu_flags():
    import platform

    import aiidetect.backbone as bb

    flags = ""
    if platform.system() == "Linux":
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    else:
        pytest.skip("flag check needs /proc/cpuinfo")
    assert bb.native_bf16_cpu() == (" avx512_bf16" in flags or " amx_bf16" in flags)


def test_bench_skips_the_bf16_peak_without_native_bf16(monkeypatch):
    """On CPUs that only emulate bf16 the bench measures no bf16 peak (minutes spent for a
    number nobody can use) and rates bf16 and int8 against the float32 peak."""
    from aiidetect import backbone
    from aiidetect.backbone import BackboneSpec
    from aiidetect.bench import run_bench

    monkeypatch.setattr(backbone, "native_bf16_cpu", lambda: False)
    res = run_bench(BackboneSpec.from_options(config="tiny-vit"), None, dtype="bfloat16", batch_size=2,
                    model_seconds=0.1, peak_seconds=0.1, check_cosine=False)
    assert list(res["peak_gflops"]) == ["float32"] and res["native_bf16"] is False
    assert res["limit_basis"] == "float32 matmul peak" and res["limit_images_per_s"] > 0
    monkeypatch.setattr(backbone, "native_bf16_cpu", lambda: True)
    res = run_bench(BackboneSpec.from_options(config="tiny-vit"), None, dtype="bfloat16", batch_size=2,
                    model_seconds=0.1, peak_seconds=0.1, check_cosine=False)
    assert set(res["peak_gflops"]) == {"float32", "bfloat16"} and res["limit_basis"] == "bfloat16 matmul peak"


def test_decode_schedule_benchmark_runs(dev_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_schedule.py"
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(script), str(dev_dir / "real"), "--backbone-config", "tiny-vit",
                        "--dtype", "float32", "--images", "6", "--batch-size", "2", "--rounds", "1",
                        "--model-seconds", "0.2", "--schedules", "overlap,turns,adaptive,overlap-nice19",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    row = res["rounds"][0]
    assert row["overlap"]["decode_schedule"] == {"schedule": "overlap"}
    assert row["turns"]["decode_schedule"] == {"schedule": "turns"}
    assert row["adaptive"]["decode_schedule"]["schedule"] == "adaptive"
    assert row["overlap-nice19"]["decode_schedule"] == {"schedule": "overlap"}   # overlap, low-priority threads
    assert all(row[s]["images_per_s"] > 0 for s in ("overlap", "turns", "adaptive"))
    assert res["machine"]["cpus"] >= 1
