"""docs/cli.md "Output for scripts": tables piped to a file or pager are laid out for 160 columns (or COLUMNS
where that is wider), not the 80 rich assumes off a terminal. `weights list` and `meta` used rich's 80: piped
to a file, `weights list` folded a head's source URL into 13-character slices over eight lines."""
from __future__ import annotations

import numpy as np
from conftest import run_cli_in_process


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_weights_list_piped_is_laid_out_for_160_columns(tmp_path, monkeypatch):
    from aiidetect.heads import save_head

    monkeypatch.chdir(tmp_path)
    url = "https://github.com/example-newsroom/a-rather-long-repository-name-for-probes @ 0123456789abcdef"
    save_head(tmp_path / "w" / "h", {"weight": np.ones((1, 4), np.float32)},
              {"name": "h", "detector": "linear", "source": url})
    r = run_cli_in_process("weights", "list", "--weights-dir", "w", env={"COLUMNS": None})
    assert r.returncode == 0, r.stderr
    assert url in r.stdout and 80 < _widest(r.stdout) <= 160


def test_meta_piped_is_laid_out_for_160_columns(tmp_path, monkeypatch):
    from aiidetect.testing.images import noise_rgb

    monkeypatch.chdir(tmp_path)
    name = "a-photo-from-the-wire-with-a-long-descriptive-file-name-as-agencies-send-them-0001.png"
    noise_rgb().save(tmp_path / name)
    r = run_cli_in_process("meta", name, "--watermark", "never", env={"COLUMNS": None})
    assert r.returncode == 0, r.stderr
    assert name in r.stdout and 80 < _widest(r.stdout) <= 160


def test_meta_never_cuts_a_file_name(tmp_path, monkeypatch):
    """The heading rule cut a name wider than the table with an ellipsis: the report no longer said which
    file it was about."""
    from aiidetect.testing.images import noise_rgb

    monkeypatch.chdir(tmp_path)
    name = "wire-" + "x" * 200 + ".png"
    noise_rgb().save(tmp_path / name)
    r = run_cli_in_process("meta", name, "--watermark", "never", env={"COLUMNS": None})
    assert r.returncode == 0, r.stderr
    assert name in r.stdout


def test_optimize_table_piped_keeps_its_column_names_whole(capsys, monkeypatch):
    """`optimize --show > file` laid eleven columns out in 80: `candidate` read `cand`/`idat`/`e` and every
    value was cut into slices of four characters."""
    from aiidetect.commands.optimize import _print

    monkeypatch.delenv("COLUMNS", raising=False)
    decision = {"status": "verified", "files": 60, "chosen": {"runtime": "onnx", "dtype": "int8"},
                "candidates": [{"candidate": "torch-bfloat16", "runtime": "torch", "dtype": "bfloat16",
                                "status": "verified", "worst_changed_share": 0.0, "max_abs_dp": 4.9e-05,
                                "model_seconds": 1.389, "speedup": 1.196, "scan_speedup": 1.174}]}
    _print(decision, "table")
    out = capsys.readouterr().out
    assert "candidate" in out and "torch-bfloat16" in out and 80 < _widest(out) <= 160


def test_bench_sweep_piped_keeps_its_column_names_whole(capsys, monkeypatch):
    """`bench --batch-sizes ... > file` on a GPU laid the sweep's six columns out in rich's 80: a header
    read `efficiency on` over `GPU`."""
    from aiidetect.commands.bench import _table

    monkeypatch.delenv("COLUMNS", raising=False)
    res = {"backbone": "ViT-L-14 (openai)", "runtime": "torch", "provider": "cuda", "dtype": "bfloat16",
           "batch_size": 256, "peak_gflops": {"float32": 51234.5, "bfloat16": 712345.6, "float16": 712345.6},
           "model_gflops_per_image": 161.2, "limit_basis": "bfloat16 matmul peak", "limit_images_per_s": 4419.0,
           "decode_images_per_s": 1234.5, "decode_images_per_s_no_draft": 456.7, "model_images_per_s": 10234.6,
           "model_images_per_s_on_device": 11234.6, "end_to_end_images_per_s": 1200.1, "end_to_end_vs_model": 0.12,
           "efficiency": 0.27, "model_efficiency": 0.68, "peak_memory_mb": 4567.8, "peak_gpu_memory_mb": 23456.7,
           "machine": {"loadavg_1m": 3.1, "loadavg_1m_end": 12.5, "cpu_count": 16},
           "sweep": [{"batch_size": b, "model_images_per_s": 10234.56, "model_efficiency": 0.681,
                      "model_images_per_s_on_device": 11234.56, "model_efficiency_on_device": 0.751,
                      "peak_gpu_memory_mb": 23456.78} for b in (32, 256)]}
    _table(res)
    out = capsys.readouterr().out
    assert "efficiency on GPU" in out and "23,456.78" in out and 80 < _widest(out) <= 160


def test_weights_list_at_a_stream_that_cannot_show_a_source_stays_aligned(tmp_path, monkeypatch):
    """A head whose manifest names a source outside ASCII, listed where stdout is ASCII (LC_ALL=C with
    PYTHONUTF8=0, or PYTHONIOENCODING=ascii at a terminal): escaped as it was written, after the layout, its
    row stood out of line with the rest."""
    import io
    import sys

    from aiidetect.commands.weights import list_heads
    from aiidetect.heads import save_head

    save_head(tmp_path / "w" / "h", {"weight": np.ones((1, 4), np.float32)},
              {"name": "h", "detector": "linear", "source": "M\u00fcnchen Bildarchiv \u65e5\u672c"})
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="backslashreplace", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("NO_COLOR", "1")
    list_heads(weights_dir=[tmp_path / "w"], fmt="table", quiet=True)
    text = out.buffer.getvalue().decode("ascii")
    rows = [x for x in text.splitlines() if x[:1] in "|+"]
    assert "M\\xfcnchen" in text and len({len(x) for x in rows}) == 1, text
