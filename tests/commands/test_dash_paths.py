"""A file whose name starts with '-' (`-dash.png`, `-x.jpg`): click reads it as options, so the usage error
must say why, and `--` must reach it (docs/cli.md, "Paths that start with -")."""
import json

from PIL import Image

from tests.conftest import run_cli_in_process


def _hint(stderr: str, name: str) -> bool:
    said = " ".join(stderr.replace("│", " ").split())  # the usage panel folds and frames its message
    return (f"{name} is a file here, but a name that starts with '-' is read as options: put paths after `--`"
            in said and f"-- {name}`) or write ./{name})" in said)


def test_a_dashed_file_name_is_explained_and_reached_after_double_dash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("-dash.png", "-x.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    # `-dash.png` is `-d ash.png`: no path left ("Missing argument"), or with one, an unknown detector
    r = run_cli_in_process("scan", "-dash.png", "-q")
    assert r.returncode == 2 and _hint(r.stderr, "-dash.png"), r.stderr
    r = run_cli_in_process("scan", "./-x.png", "-dash.png", "-q", "--no-cache")
    assert r.returncode == 2 and "unknown detector(s) ash.png" in r.stderr and _hint(r.stderr, "-dash.png")
    r = run_cli_in_process("scan", "-x.png", "-q")  # "No such option: -x"
    assert r.returncode == 2 and _hint(r.stderr, "-x.png"), r.stderr
    r = run_cli_in_process("scan", "-d", "metadata", "-f", "jsonl", "-q", "--no-cache", "--", "-x.png", "-dash.png")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["file"] for x in r.stdout.splitlines()] == ["-x.png", "-dash.png"]


def test_no_hint_without_such_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli_in_process("scan", "-zz.png", "-q")
    assert r.returncode == 2 and "is a file here" not in r.stderr
