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
