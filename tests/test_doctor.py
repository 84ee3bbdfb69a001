"""`aiidetect doctor`: exit 1 with the remedy when no CLIP detector can run, 0 when one can."""
from __future__ import annotations

import json

import pytest

# in-process where a test is about what doctor finds (each new interpreter paid a torch import); a torch
# that fails to import needs a process of its own
from conftest import run_cli, run_cli_in_process


def _env(tmp_path):
    return {"AIIDETECT_CLIP_CACHE": str(tmp_path / "clip"), "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path),
            "AIIDETECT_CACHE": str(tmp_path / "cache")}


def test_no_clip_weights_exit_1_with_the_remedy(tmp_path):
    r = run_cli_in_process("doctor", env=_env(tmp_path))
    assert r.returncode == 1, r.stderr
    assert "aiidetect weights fetch ViT-L-14/openai" in r.stdout
    assert "univfd" in r.stdout and "ViT-L-14/openai" in r.stdout
    j = run_cli_in_process("doctor", "--format", "json", env=_env(tmp_path))
    assert j.returncode == 1
    rep = json.loads(j.stdout)
    assert rep["clip_ready"] is False
    assert any("aiidetect weights fetch ViT-L-14/openai" in x for x in rep["remedies"])
    assert {"torch", "onnxruntime", "cpu", "caches", "heads", "detectors", "packages"} <= set(rep)
    assert isinstance(rep["cpu"]["native_bf16"], bool)
    assert isinstance(rep["cpu"]["int8_vnni"], bool) and rep["cpu"]["int8_weight_bits"] in (7, 8)
    univfd = next(h for h in rep["heads"] if h["name"] == "univfd")
    assert univfd["needs_backbone"] == "ViT-L-14/openai" and univfd["ready"] is False


@pytest.mark.slow  # trains the session's tiny probe when run alone
def test_tiny_backbone_with_its_head_exit_0(trained, tmp_path):
    args = ("doctor", "--backbone-config", "tiny-vit", "--weights-dir", str(trained), "--device", "cpu")
    r = run_cli_in_process(*args, "--format", "json", env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["clip_ready"] is True
    probe = next(h for h in rep["heads"] if h["name"] == "cli-probe")
    assert probe["ready"] is True and probe["fingerprint"] == rep["backbone_built"]["fingerprint"]
    assert any(d["name"] == "linear:cli-probe" and d["status"] == "ready" for d in rep["detectors"])


def test_bad_format_is_usage_error(tmp_path):
    assert run_cli_in_process("doctor", "--format", "xml", env=_env(tmp_path)).returncode == 2


def test_table_prints_bracketed_names_as_they_are(tmp_path):
    """A head named "[/]h" (its manifest is a download's) ended the table with a MarkupError (exit 2),
    and "[bold]" in a heads folder's path was swallowed as a style instead of shown."""
    import numpy as np

    from aiidetect.heads import save_head

    w = tmp_path / "old [bold]x"
    save_head(w / "h", {"weight": np.ones((1, 4), np.float32)}, {"name": "[/]h", "detector": "linear"})
    r = run_cli_in_process("doctor", "--backbone-config", "tiny-vit", "--weights-dir", str(w), env=_env(tmp_path))
    assert r.returncode == 1 and "Error" not in r.stderr, r.stderr
    (line,) = [x for x in r.stdout.splitlines() if "(linear): needs" in x]
    assert line.strip().startswith("[/]h (linear)") and line.endswith(str(w / "h")), line


def test_a_file_where_a_cache_folder_should_be_is_not_writable(tmp_path):
    """AIIDETECT_CACHE under a regular file, or the CLIP cache set to a file: doctor said "writable yes"."""
    f = tmp_path / "afile"
    f.write_text("x")
    env = {**_env(tmp_path), "AIIDETECT_CACHE": str(f / "sub"), "AIIDETECT_CLIP_CACHE": str(f)}
    r = run_cli_in_process("doctor", "--backbone-config", "tiny-vit", "-f", "json", env=env)
    assert r.returncode in (0, 1), r.stderr
    caches = json.loads(r.stdout)["caches"]
    assert caches["aiidetect cache"]["path"] == str(f / "sub") and caches["aiidetect cache"]["writable"] is False
    assert caches["CLIP weights"]["path"] == str(f) and caches["CLIP weights"]["writable"] is False
    assert caches["user heads"]["writable"] is True


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_torch_that_does_not_load_is_reported_not_a_crash(tmp_path, fmt):
    """torch installed but broken (a missing shared library, a half-finished upgrade): doctor, the command
    run to find out why, ended with 'ImportError: ...' and the --debug hint, exit 2."""
    import os

    shim = tmp_path / "shim" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("libtorch_cpu.so: cannot open shared object file")\n')
    env = {**_env(tmp_path), "PYTHONPATH": os.pathsep.join(p for p in (str(shim.parent),
                                                                        os.environ.get("PYTHONPATH")) if p)}
    r = run_cli("doctor", "--backbone-config", "tiny-vit", "-f", fmt, env=env)
    assert r.returncode == 1 and "Error" not in r.stderr, r.stderr
    assert "libtorch_cpu.so" in r.stdout and "reinstall torch" in r.stdout
    if fmt == "json":
        rep = json.loads(r.stdout)
        assert rep["torch"]["installed"] is True and rep["torch"]["error"].startswith("ImportError")
        assert rep["clip_ready"] is False


def test_the_decoder_codec_and_parser_versions_are_shown_in_both_formats(tmp_path):
    """The versions that key the result cache and a --db run, and that the Ray engine compares between nodes,
    had no command to show them: an operator checking that two machines match could not."""
    from aiidetect.engines import ray as ray_engine
    from aiidetect.extras import decoder_versions

    j = run_cli_in_process("doctor", "-f", "json", env=_env(tmp_path))
    rep = json.loads(j.stdout)
    assert rep["decoders"] == decoder_versions() and set(rep["metadata_parsers"]) == {"exifread", "c2pa-python"}
    assert {**rep["decoders"], **rep["metadata_parsers"]} == ray_engine.node_versions()
    t = run_cli_in_process("doctor", env=_env(tmp_path))
    lines = t.stdout.splitlines()
    dec = next(x for x in lines if x.startswith("decoders "))
    assert f"pillow {rep['decoders']['pillow']};" in dec and f"numpy {rep['decoders']['numpy']}" in dec
    assert all(f"{k} " in dec for k in rep["decoders"])
    parsers = next(x for x in lines if x.startswith("metadata parsers "))
    assert f"exifread {rep['metadata_parsers']['exifread'] or 'none'}" in parsers


def test_the_versions_are_read_without_torch(tmp_path):
    """doctor's version part must work where torch does not load: it runs in a process of its own."""
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys, json; from aiidetect.doctor import reading_versions; v = reading_versions(); "
            "print(json.dumps(['torch' in sys.modules, v['decoders']['pillow']]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=60)
    assert r.returncode == 0, r.stderr[-800:]
    torch_loaded, pillow = json.loads(r.stdout)
    assert torch_loaded is False and pillow
