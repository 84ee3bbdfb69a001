"""int8 on x86 CPUs without VNNI: ONNX Runtime's fast u8 x s8 kernels sum byte
pairs in 16 bits there and saturate on 8-bit weights. aiidetect exports 7-bit
weights for such CPUs and tells ORT to run wider ones on its exact kernels.

The probe graph (aiidetect.onnx_export.int8_probe) is built to saturate; the
guarded configurations must be exact on whatever CPU runs this suite."""
from __future__ import annotations

import json

import numpy as np
import pytest

from aiidetect import cpuinfo

NO_VNNI = "avx512_vnni,avx_vnni,amx_int8"

INTEL_AVX2 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma
"""
AMD_VNNI = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: avx2 avx512f avx512_bf16 avx512_vnni avx_vnni
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: avx2
"""
ARM = """processor\t: 0
Features\t: fp asimd asimddp
"""


def test_cpuinfo_parse_and_the_int8_rule():
    model, flags = cpuinfo.parse(INTEL_AVX2)
    assert model.startswith("Intel(R) Xeon(R) CPU E5-2680") and "avx2" in flags
    assert cpuinfo.int8_pairs_saturate(flags, "x86_64") and cpuinfo.int8_weight_bits(flags, "x86_64") == 7
    model, flags = cpuinfo.parse(AMD_VNNI)   # the first CPU's line, not the last
    assert model == "AMD EPYC 9R14" and "avx512_vnni" in flags
    assert not cpuinfo.int8_pairs_saturate(flags, "x86_64") and cpuinfo.int8_weight_bits(flags, "x86_64") == 8
    assert cpuinfo.int8_vnni(frozenset({"avx_vnni"})) and cpuinfo.int8_vnni(frozenset({"amx_int8"}))
    _, flags = cpuinfo.parse(ARM)
    assert "asimddp" in flags and not cpuinfo.int8_pairs_saturate(flags, "aarch64")
    assert cpuinfo.parse("") == ("", frozenset())


def test_without_proc_cpuinfo_numpy_says(monkeypatch):
    """Windows and macOS have no /proc/cpuinfo: numpy's runtime dispatch names the flags
    that matter, and on Linux it agrees with /proc/cpuinfo."""
    got = cpuinfo.numpy_flags()
    if cpuinfo.flags_known() and cpuinfo.is_x86():
        assert got <= cpuinfo._read()[1], got - cpuinfo._read()[1]

    def no_file(*a, **k):
        raise OSError("no /proc here")

    monkeypatch.setattr(cpuinfo, "open", no_file, raising=False)
    model, flags, known = cpuinfo._read.__wrapped__()
    assert flags == got and known == bool(got)


def test_cpu_without_masks_flags(monkeypatch):
    monkeypatch.setenv("AIIDETECT_CPU_WITHOUT", f" {NO_VNNI} ,avx2")
    assert not (cpuinfo.flags() & {"avx512_vnni", "avx_vnni", "amx_int8", "avx2"})
    assert cpuinfo.hardware_flags() >= cpuinfo.flags()
    from aiidetect.bench import machine_facts  # benchmarks report the hardware, and the mask beside it

    facts = machine_facts()
    assert facts["aiidetect_cpu_without"] == sorted(NO_VNNI.split(",") + ["avx2"])
    if "avx2" in cpuinfo.hardware_flags():
        assert "avx2" in facts["cpu_flags"]
    if cpuinfo.is_x86() and cpuinfo.flags_known():
        assert cpuinfo.int8_pairs_saturate() and cpuinfo.int8_weight_bits() == 7


def test_cpu_without_bf16_means_float32(monkeypatch):
    pytest.importorskip("torch")
    from aiidetect.backbone import resolve_dtype

    monkeypatch.setenv("AIIDETECT_CPU_WITHOUT", "avx512_bf16,amx_tile")
    assert resolve_dtype("auto", "cpu") == "float32"


def test_optimize_key_changes_with_the_flags(monkeypatch):
    """A decision made for a CPU with VNNI is never used as if for one without."""
    from aiidetect import optimize as opt

    if not cpuinfo.flags_known() or not cpuinfo.int8_vnni():
        pytest.skip("needs a CPU whose VNNI flag can be masked")
    before = opt.cpu_identity()
    monkeypatch.setenv("AIIDETECT_CPU_WITHOUT", NO_VNNI)
    assert opt.cpu_identity()["flags_sha256"] != before["flags_sha256"]


# --------------------------------------------------------------------------
# The probe: real ONNX Runtime kernels on this CPU
# --------------------------------------------------------------------------
ort = pytest.importorskip("onnxruntime")


def test_probe_is_built_to_saturate():
    """In numpy, a saturating pair-sum kernel gets the probe's top columns about half
    wrong with 8-bit weights and exactly right with 7-bit ones; where it does not
    saturate it agrees with ORT's own kernel (so the emulation is the real arithmetic)."""
    from aiidetect.onnx_export.int8_probe import emulate_saturating, probe

    e8, e7 = emulate_saturating(8), emulate_saturating(7)
    assert not e8["exact"] and e8["max_rel_error_top_weights"] > 0.4
    assert e7["exact"] and e7["max_rel_error_top_weights"] < 1e-6
    assert e7["max_rel_error_other"] == pytest.approx(probe(7)["max_rel_error_other"], abs=1e-5)


@pytest.mark.parametrize("bits,exact_kernels", [(7, False), (7, True), (8, True), (8, None), (7, None)])
def test_guarded_int8_is_exact_on_this_cpu(bits, exact_kernels):
    """7-bit weights, ORT's exact kernels, and whatever aiidetect's sessions do on
    this CPU (None) all compute the saturating columns exactly."""
    from aiidetect.onnx_export.int8_probe import probe

    got = probe(bits, exact_kernels)
    assert got["exact"], got
    assert got["max_rel_error_other"] < 0.05  # only quantization error on the other columns


def test_load_session_sets_exact_kernels_without_vnni(tmp_path, monkeypatch):
    from aiidetect.onnx_export.int8_probe import _graph
    from aiidetect.onnx_runtime import load_session

    p = tmp_path / "g.onnx"
    _graph(p)
    def entry(sess):
        try:
            return sess.session.get_session_options().get_session_config_entry("session.x64quantprecision")
        except RuntimeError:  # ORT: "does not have configuration with key"
            return None

    plain = load_session(p, device="cpu")
    if cpuinfo.is_x86() and cpuinfo.flags_known() and cpuinfo.int8_vnni():
        assert not plain.exact_int8 and entry(plain) is None
    monkeypatch.setenv("AIIDETECT_CPU_WITHOUT", NO_VNNI)
    guarded = load_session(p, device="cpu")
    if cpuinfo.is_x86():
        assert guarded.exact_int8 and entry(guarded) == "1"
        assert guarded.describe()["exact_int8_kernels"] is True


# --------------------------------------------------------------------------
# Exports: 7-bit weights where the CPU needs them
# --------------------------------------------------------------------------
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny():
    from aiidetect.backbone import BackboneSpec, create_backbone

    return create_backbone(BackboneSpec.from_options(config="tiny-vit"))


def _int8_weights(folder) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    side = json.loads((folder / "aiidetect-onnx.json").read_text())
    m = onnx.load(str(folder / side["graphs"][0]["file"]))
    arrs = [numpy_helper.to_array(t).ravel() for t in m.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert arrs, "no int8 weight in the int8 graph"
    return np.concatenate(arrs).astype(np.int32)


def test_export_weight_bits(tiny, tmp_path, monkeypatch):
    from aiidetect.onnx_export import ExportError, export_onnx

    rng = np.random.default_rng(0)
    px = rng.standard_normal((4, 3, 224, 224)).astype(np.float32)
    side7 = export_onnx(tiny, tmp_path / "b7", [], variant="int8", int8_weight_bits=7, agreement_pixels=px)
    assert side7["graphs"][0]["conversion"]["weight_bits"] == 7
    assert np.abs(_int8_weights(tmp_path / "b7")).max() <= 64
    assert side7["graphs"][0]["agreement"]["embed_cosine_min"] > 0.9
    side8 = export_onnx(tiny, tmp_path / "b8", [], variant="int8", int8_weight_bits=8)
    assert side8["graphs"][0]["conversion"]["weight_bits"] == 8
    assert np.abs(_int8_weights(tmp_path / "b8")).max() > 64
    # auto: what this CPU needs; a CPU without VNNI gets 7 bits
    monkeypatch.setenv("AIIDETECT_CPU_WITHOUT", NO_VNNI)
    auto = export_onnx(tiny, tmp_path / "auto", [], variant="int8")
    assert auto["graphs"][0]["conversion"]["weight_bits"] == (7 if cpuinfo.is_x86() else 8)
    with pytest.raises(ExportError):
        export_onnx(tiny, tmp_path / "b6", [], variant="int8", int8_weight_bits=6)


def test_cli_int8_weights(tmp_path):
    from conftest import run_cli, run_cli_in_process

    r = run_cli("export", "onnx", "-o", str(tmp_path / "o"), "--backbone-config", "tiny-vit", "--variant", "int8",
                "--int8-weights", "7", "--weights-dir", str(tmp_path / "none"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["graphs"][0]["weight_bits"] == 7
    # the refusal is the command's decision (a second interpreter only paid another torch import)
    bad = run_cli_in_process("export", "onnx", "-o", str(tmp_path / "x"), "--backbone-config", "tiny-vit",
                             "--variant", "int8", "--int8-weights", "4")
    assert bad.returncode == 2 and "--int8-weights" in bad.stderr


def test_scan_says_when_an_8bit_graph_runs_on_the_slow_exact_kernels(tmp_path, dev_dir, trained):
    """`scan --runtime onnx` with an 8-bit int8 export on a CPU without VNNI: correct, slower, and said;
    a 7-bit export runs without the note."""
    # in-process: what export writes and what scan says about it, not the process around them (each
    # subprocess paid a torch import; test_cli_int8_weights and the ONNX scan tests keep theirs)
    from conftest import jsonl, run_cli_in_process

    if not cpuinfo.is_x86():
        pytest.skip("the int8 overflow guard is x86-only")
    img = str(next((dev_dir / "real").rglob("*.jpg")))
    env = {"AIIDETECT_CPU_WITHOUT": NO_VNNI}
    for bits, noted in (("8", True), ("7", False)):
        out = tmp_path / f"o{bits}"
        r = run_cli_in_process("export", "onnx", "-o", str(out), "--backbone-config", "tiny-vit", "--variant",
                               "int8", "--int8-weights", bits, "--weights-dir", str(trained), "--detectors", "linear")
        assert r.returncode == 0, r.stderr
        r = run_cli_in_process("scan", img, "--runtime", "onnx", "--onnx", str(out), "--backbone-config", "tiny-vit",
                               "--weights-dir", str(trained), "-d", "linear", "-f", "jsonl", "--no-cache", env=env)
        assert r.returncode == 0, r.stderr
        assert ("has 8-bit int8 weights: this CPU has no VNNI" in r.stderr) is noted, r.stderr
        det = next(v for k, v in jsonl(r.stdout)[0]["detectors"].items() if k.startswith("linear:"))
        assert det["status"] == "ok" and det["dtype"] == "int8"
