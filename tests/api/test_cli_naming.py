"""One naming scheme on the command line (docs/cli.md): --out-dir for folders,
--output for files, --batch-size, --format; the old spellings still work,
hidden from --help; fixed choices refuse other values with exit 2; shell
completion is on."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from aiidetect.cli import app
from conftest import cli_command

RENAMED = {  # command path -> (new, old)
    ("eval",): [("--out-dir", "--out")],
    ("calibrate",): [("--out-dir", "--out")],
    ("export", "onnx"): [("--out-dir", "--out")],
    ("proxies",): [("--out-dir", "--out")],
    ("train", "linear"): [("--out-dir", "--out")],
    ("train", "mpft"): [("--out-dir", "--out")],
    ("train", "flow"): [("--out-dir", "--out"), ("--batch-size", "--batch")],
    ("weights", "pack"): [("--backbone-weights", "--backbone")],
}


def _command(path):
    return cli_command(*path)


@pytest.mark.parametrize("path", sorted(RENAMED), ids=" ".join)
def test_old_spellings_are_hidden_aliases(path):
    params = {o: p for p in _command(path).params for o in p.opts}
    for new, old in RENAMED[path]:
        assert not getattr(params[new], "hidden", False), new
        assert params[old].hidden, old
        assert params[old].name != params[new].name


def test_no_folder_option_is_called_out_any_more():
    def walk(cmd, path=()):
        if isinstance(cmd, typer.core.TyperGroup) or hasattr(cmd, "commands"):
            for n, c in cmd.commands.items():
                yield from walk(c, path + (n,))
        else:
            yield path, cmd

    for path, cmd in walk(typer.main.get_command(app)):
        shown = [o for p in cmd.params if not getattr(p, "hidden", False) for o in p.opts]
        assert "--out" not in shown and "--batch" not in shown, path
        if "--format" in shown:
            fmt = next(p for p in cmd.params if "--format" in p.opts)
            assert "-f" in fmt.opts, path


def test_old_and_new_spelling_give_the_same_run(tmp_path, dev_dir):
    img = str(next(p for p in sorted((dev_dir / "real").rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")))
    runner = CliRunner()
    for spelling in ("--out", "--out-dir", "-o"):
        out = tmp_path / spelling.strip("-")
        r = runner.invoke(app, ["proxies", img, spelling, str(out), "--kinds", "hf_phase", "--size", "64"])
        assert r.exit_code == 0, r.output
        assert (out / "proxies.json").is_file()
    first = json.loads((tmp_path / "out" / "proxies.json").read_text())
    assert first == json.loads((tmp_path / "out-dir" / "proxies.json").read_text())
    r = runner.invoke(app, ["proxies", img, "--out", str(tmp_path / "a"), "--out-dir", str(tmp_path / "b")])
    assert r.exit_code == 2 and "old name of --out-dir" in r.output
    r = runner.invoke(app, ["proxies", img])
    assert r.exit_code == 2 and "--out-dir" in r.output


@pytest.mark.parametrize("args", [
    ["scan", "x.jpg", "--runtime", "tensorrt"],
    ["scan", "x.jpg", "--device", "tpu"],
    ["scan", "x.jpg", "--dtype", "int4"],
    ["scan", "x.jpg", "--watermark", "sometimes"],
    ["scan", "x.jpg", "--engine", "spark"],
    ["doctor", "--format", "xml"],
    ["cache", "info", "--format", "yaml"],
    ["bench", "--runtime", "tvm"],
    ["bench", "--dtype", "auto"],  # bench times the dtype asked for
    ["train", "linear", "x.csv", "--dtype", "auto"],  # training has no auto dtype
])
def test_fixed_choices_refuse_other_values(args):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert args[-2] in r.output


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o default -F"), ("zsh", "compdef"),
                                           ("fish", "complete --command")])
def test_shell_completion_is_on(shell, marker, monkeypatch):
    """`--show-completion` is a flag: the shell is the one found among the process's parents, never
    a word after it (`--show-completion bash` passed only when pytest ran under bash, and failed
    under sh or a runner with no shell above it). The detection is pinned here, as a user's shell."""
    import shellingham

    names = {o for p in typer.main.get_command(app).params for o in p.opts}
    assert {"--install-completion", "--show-completion"} <= names
    monkeypatch.delenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", raising=False)
    monkeypatch.setattr(shellingham, "detect_shell", lambda *a, **k: (shell, f"/bin/{shell}"))
    r = CliRunner().invoke(app, ["--show-completion"])
    assert r.exit_code == 0 and marker in r.output, r.output


def _all_commands():
    todo = [((), typer.main.get_command(app))]
    while todo:
        path, cmd = todo.pop()
        todo += [(path + (n,), sub) for n, sub in getattr(cmd, "commands", {}).items()]
        if path:
            yield path, cmd


def test_every_command_lists_with_a_one_line_summary():
    # `aiidetect --help` shows each command's first paragraph as it is written: a paragraph that
    # wraps in the source breaks the listing into ragged lines.
    long = {" ".join(p): (c.help or "").strip().split("\n\n")[0] for p, c in _all_commands()}
    assert len(long) > 20
    bad = {p: s for p, s in long.items() if not s or "\n" in s or len(s) > 100}
    assert not bad, bad


def test_format_and_quiet_come_from_the_shared_definitions():
    """Each command had its own copy of --format ("Output format.", "How to print it.", "table | json
    | jsonl | csv") and of --quiet: declared once in commands/common.py, they read the same everywhere.
    export onnx and explain-mpft alone default to json (they printed JSON before they had --format)."""
    from aiidetect.commands import common

    shared = {o.help: o.default for o in (common.SummaryFormatOpt, common.RecordFormatOpt, common.ReportFormatOpt,
                                          common.JsonFirstFormatOpt)}
    json_first = {("export", "onnx"), ("explain-mpft",)}
    seen = set()
    for path, cmd in _all_commands():
        for p in cmd.params:
            if "--format" in p.opts:
                want = "json" if path in json_first else "table"
                assert p.help in shared and p.default == shared[p.help] == want, (path, p.help)
                assert set(p.opts) == {"--format", "-f"}, path
                seen.add(path)
            if "--quiet" in p.opts:
                assert (p.help, set(p.opts)) == (common.QuietOpt.help, {"--quiet", "-q"}), (path, p.help)
    assert len(seen) > 20


def test_every_command_shows_an_example():
    """eval, calibrate, proxies, export onnx, the trainers and the explainers had none in --help."""
    leaves = {" ".join(p): c.help or "" for p, c in _all_commands() if not hasattr(c, "commands")}
    assert len(leaves) > 25
    missing = [p for p, h in leaves.items() if "example" not in h.lower() or f"aiidetect {p}" not in h]
    assert not missing, missing


SHORT = {"--out-dir": "-o", "--output": "-o", "--format": "-f", "--quiet": "-q", "--detectors": "-d"}


def test_short_forms_are_the_same_everywhere():
    """The trainers' --out-dir had no -o (docs/cli.md said every --out-dir has one), and export onnx's
    --detectors no -d."""
    for path, cmd in _all_commands():
        for p in cmd.params:
            for long in set(SHORT) & set(p.opts):
                assert SHORT[long] in p.opts, (path, p.opts)


def test_backbone_names_a_model_everywhere(tmp_path):
    """weights pack's --backbone took a checkpoint file, where every other command's --backbone is an
    open_clip model name: the file is --backbone-weights there too, and --backbone FILE still works."""
    from aiidetect.commands import common

    for path, cmd in _all_commands():
        for p in cmd.params:
            if not getattr(p, "hidden", False) and p.opts[0] in ("--backbone", "--backbone-weights"):
                want = common.BackboneOpt.help if p.opts[0] == "--backbone" else "checkpoint file"
                assert p.help == want or want in p.help, (path, p.opts[0], p.help)
    bb = tmp_path / "bb.pt"
    bb.write_bytes(b"x")
    (tmp_path / "none").mkdir()  # an empty weights folder: no heads to pack beside the backbone
    runner = CliRunner()
    for spelling in ("--backbone", "--backbone-weights"):
        r = runner.invoke(app, ["weights", "pack", str(tmp_path / f"{spelling}.tar"), spelling, str(bb),
                                "--weights-dir", str(tmp_path / "none"), "-f", "json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["backbones"] == ["backbones/bb.pt"]
    r = runner.invoke(app, ["weights", "pack", str(tmp_path / "x.tar"), "--backbone", str(bb), "--backbone-weights",
                            str(bb)])
    assert r.exit_code == 2 and "old name of --backbone-weights" in r.output


def test_quiet_silences_proxies_and_bench_but_not_errors(tmp_path, dev_dir):
    """proxies and bench had no --quiet: a line per file written, a line per step timed, always."""
    from conftest import run_cli

    img = str(next(p for p in sorted((dev_dir / "real").rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")))
    r = run_cli("proxies", img, "-o", str(tmp_path / "p"), "--kinds", "hf_phase", "--size", "64", "-q")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == f"{tmp_path / 'p'}\n"
    r = run_cli("bench", "--backbone-config", "tiny-vit", "--model-seconds", "0.05", "--peak-seconds", "0.02",
                "--images", "1", "-f", "json", "-q")
    assert r.returncode == 0 and r.stderr == "" and json.loads(r.stdout)["backbone"]
    r = run_cli("proxies", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "q"), "-q")
    assert r.returncode == 2 and r.stderr.startswith("error:")


def test_every_dtype_lists_its_values_in_help():
    """docs/cli.md: options with a fixed set of values list them in --help. bench's --dtype was a plain string
    (`<str>` in --help, its values only in the prose) checked by hand; its values are bench.DTYPES."""
    import enum

    from aiidetect.bench import DTYPES

    seen = 0
    for path, cmd in _all_commands():
        for p in cmd.params:
            if "--dtype" in p.opts:
                seen += 1
                ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
                assert isinstance(ann, type) and issubclass(ann, enum.Enum), (path, ann)
                if path == ("bench",):
                    assert tuple(e.value for e in ann) == DTYPES
    assert seen >= 5
    r = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert "float32|bfloat16|float16|int8" in r.output
