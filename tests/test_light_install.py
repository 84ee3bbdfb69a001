"""The base install is the provenance tool: a default scan on a machine without CLIP weights
imports no torch, and without the clip extra every command says which extra it needs.

The light install is simulated in a driver process by making the extras' modules
unimportable (``sys.modules[name] = None``, which is what Python reports for a
missing package); tests/... cannot uninstall torch from the test venv."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

EXTRAS = ("torch", "torchvision", "open_clip", "safetensors", "sklearn", "scipy", "matplotlib", "onnxruntime", "onnx",
          "huggingface_hub")

DRIVER = r"""
import json, sys
block = json.loads(sys.argv[1])
for name in block:
    sys.modules[name] = None
sys.argv = ["aiidetect"] + json.loads(sys.argv[2])
code = 0
try:
    from aiidetect.cli import main
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
finally:
    loaded = sorted(m for m in ("torch", "open_clip", "sklearn", "matplotlib", "onnxruntime", "huggingface_hub")
                    if sys.modules.get(m) is not None)
    sys.stderr.write("\nDRIVER " + json.dumps({"loaded": loaded}) + "\n")
sys.exit(code)
"""


def drive(args, tmp_path, block=()):
    env = {"AIIDETECT_CLIP_CACHE": str(tmp_path / "no-clip"), "HF_HOME": str(tmp_path / "hf"),
           "AIIDETECT_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    import os

    e = dict(os.environ)
    e.update(env)
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(block)), json.dumps(list(args))],
                       capture_output=True, text=True, env=e, cwd=str(REPO), timeout=300)
    err, _, tail = r.stderr.rpartition("\nDRIVER ")
    return r.returncode, r.stdout, err, json.loads(tail)["loaded"]


@pytest.fixture
def photo(dev_dir):
    return str(next((dev_dir / "real" / "camera").iterdir()))


def test_default_scan_without_clip_weights_imports_no_torch(photo, tmp_path):
    code, out, err, loaded = drive(["scan", photo, "--format", "jsonl", "--no-cache"], tmp_path)
    assert code == 0, err
    assert "torch" not in loaded and "open_clip" not in loaded, loaded
    rec = json.loads(out.splitlines()[0])
    lin = rec["detectors"]["linear"]
    assert lin["status"] == "unavailable" and "aiidetect weights fetch ViT-L-14/openai" in lin["reason"]


def test_light_install_scan_names_the_extra(photo, tmp_path):
    code, out, err, loaded = drive(["scan", photo, "--format", "jsonl", "--no-cache"], tmp_path, EXTRAS)
    assert code == 0, err
    rec = json.loads(out.splitlines()[0])
    assert rec["detectors"]["metadata"]["status"] == "ok"
    for fam in ("linear",):
        reason = rec["detectors"][fam]["reason"]
        assert 'pip install "aiidetect[clip]"' in reason and "aiidetect weights fetch ViT-L-14/openai" in reason
    code, out, err, _ = drive(["meta", photo], tmp_path, EXTRAS)
    assert code == 0 and out.strip(), err
    code, out, err, _ = drive(["scan", photo, "-d", "metadata", "--format", "json", "--no-cache"], tmp_path, EXTRAS)
    assert code == 0 and json.loads(out)[0]["verdict"], err


@pytest.mark.parametrize("args, extra", [
    (["weights", "inspect", "x.pt"], "clip"),
    (["train", "linear", "{manifest}", "--backbone-config", "tiny-vit", "--out", "{tmp}/h"], "clip"),
    (["export", "onnx", "-o", "out", "--backbone-config", "tiny-vit"], "clip"),
])
def test_commands_needing_a_missing_extra_say_which(args, extra, tmp_path, dev_manifest):
    args = [a.format(manifest=dev_manifest, tmp=tmp_path) for a in args]
    code, out, err, _ = drive(args, tmp_path, EXTRAS)
    assert code == 2, (out, err)
    assert f'pip install "aiidetect[{extra}]"' in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_bench_names_the_extra_a_missing_module_comes_from(monkeypatch, tmp_path):
    """bench's catch-all printed `error: ModuleNotFoundError: No module named 'torch'` on a base install,
    naming no extra (in process: what the command decides, with the import failing where torch is imported)."""
    from conftest import run_cli_in_process

    import aiidetect.bench

    def no_torch(*a, **k):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(aiidetect.bench, "run_bench", no_torch)
    r = run_cli_in_process("bench", str(tmp_path), "--backbone-config", "tiny-vit")
    assert r.returncode == 2
    assert r.stderr == 'error: this command needs torch, which this install lacks: pip install "aiidetect[clip]"\n'


def test_a_missing_extra_is_the_error_line_docs_install_quotes(tmp_path):
    """docs/install.md quotes `error: this command needs torch, ...`, the line every usage problem prints;
    it came as `aiidetect: error: ...`, the form kept for unexpected exceptions (docs/schema.md)."""
    code, out, err, _ = drive(["weights", "inspect", "x.pt"], tmp_path, EXTRAS)
    assert (code, out) == (2, "")
    assert err == 'error: this command needs torch, which this install lacks: pip install "aiidetect[clip]"\n'
    install = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    assert f"`{err.strip()}`" in install


def test_doctor_on_a_light_install(tmp_path):
    code, out, err, _ = drive(["doctor", "--format", "json"], tmp_path, EXTRAS)
    assert code == 1, err
    rep = json.loads(out)
    assert rep["clip_ready"] is False and rep["torch"]["installed"] is False
    assert any('pip install "aiidetect[clip]"' in r for r in rep["remedies"])
    code, out, err, _ = drive(["doctor"], tmp_path, EXTRAS)
    assert code == 1 and 'pip install "aiidetect[clip]"' in out, out  # rich markup must not eat [clip]


def test_scan_note_keeps_the_extra_name(photo, tmp_path):
    code, out, err, _ = drive(["scan", photo, "--no-cache"], tmp_path, EXTRAS)
    assert code == 0 and 'pip install "aiidetect[clip]"' in err, err


@pytest.mark.slow  # exports a graph, scans twice
def test_onnx_install_scans_without_torch(trained, dev_dir, tmp_path):
    """[onnx] without [clip]: an exported graph scans with ONNX Runtime alone."""
    from conftest import run_cli

    out = tmp_path / "onnx"
    r = run_cli("export", "onnx", "-o", str(out), "--backbone-config", "tiny-vit", "--weights-dir", str(trained),
                "--detectors", "linear")
    assert r.returncode == 0, r.stderr
    img = str(next((dev_dir / "real").rglob("*.jpg")))
    args = ["scan", img, "--runtime", "onnx", "--onnx", str(out), "--backbone-config", "tiny-vit", "--weights-dir",
            str(trained), "-d", "metadata,linear", "-f", "jsonl", "-q", "--no-cache"]
    block = [m for m in EXTRAS if m not in ("onnxruntime", "onnx")]
    code, stdout, err, loaded = drive(args, tmp_path, block)
    assert code == 0, err
    assert "torch" not in loaded and "onnxruntime" in loaded
    d = json.loads(stdout.splitlines()[0])["detectors"]["linear:cli-probe"]
    assert d["status"] == "ok" and d["runtime"] == "onnx", d
    with_torch = run_cli(*args)
    assert with_torch.returncode == 0, with_torch.stderr
    t = json.loads(with_torch.stdout.splitlines()[0])["detectors"]["linear:cli-probe"]
    assert t["p_ai"] == pytest.approx(d["p_ai"], abs=1e-6)
