"""The backbone option group is declared once (commands/common.py) and every
command that takes it shows the same options, with the same defaults."""
import inspect
from pathlib import Path
from typing import List, Optional

import pytest
import typer
from typer.testing import CliRunner

from aiidetect.cli import app
from conftest import cli_command
from aiidetect.commands.common import BackboneOptions, backbone_options

CORE = ["--backbone", "--pretrained", "--backbone-config", "--backbone-weights", "--backbone-seed"]
# command path -> the group's options it shows, in order
EXPECTED = {
    ("scan",): CORE + ["--device", "--dtype", "--weights-dir"],
    ("eval",): CORE + ["--device", "--dtype", "--weights-dir"],
    ("calibrate",): CORE + ["--device", "--dtype", "--weights-dir"],
    ("train", "linear"): CORE + ["--device", "--dtype", "--weights-dir"],
    ("train", "mpft"): CORE + ["--device", "--dtype", "--weights-dir"],
    ("train", "flow"): CORE + ["--device", "--dtype", "--weights-dir"],
    ("doctor",): CORE + ["--device", "--weights-dir"],
    ("explain-mpft",): CORE + ["--weights-dir"],
    ("export", "onnx"): CORE + ["--weights-dir"],
    ("bench",): CORE,
}


def _command(path):
    return cli_command(*path)


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=" ".join)
def test_every_command_shows_the_group_in_order(path):
    opts = [p.opts[0] for p in _command(path).params if p.opts and p.opts[0] in set(EXPECTED[path])]
    # bench has its own --dtype/--device with other choices: only the core is the group there
    if path == ("bench",):
        opts = [o for o in opts if o in CORE]
    assert opts == EXPECTED[path]


def test_group_defaults_are_identical_everywhere():
    seen = {}
    for path in EXPECTED:
        for p in _command(path).params:
            if p.opts and p.opts[0] in CORE + ["--weights-dir"]:
                seen.setdefault(p.opts[0], set()).add((repr(p.default), p.help))
    assert {k: len(v) for k, v in seen.items()} == {k: 1 for k in CORE + ["--weights-dir"]}
    dtypes = {repr(p.default) for path in EXPECTED if path[0] in ("scan", "eval", "calibrate")
              for p in _command(path).params if p.opts and p.opts[0] == "--dtype"}
    assert dtypes == {"'auto'"}
    train = {repr(p.default) for path in EXPECTED if path[0] == "train"
             for p in _command(path).params if p.opts and p.opts[0] == "--dtype"}
    assert train == {"'float32'"}


def test_decorator_hands_one_value_and_keeps_other_parameters():
    got = {}

    @backbone_options(device=True, dtype="train", weights_dir=True)
    def cmd(name: str = typer.Argument(...), backbone_opts: BackboneOptions = None,
            flag: bool = typer.Option(False, "--flag")):
        got["name"], got["opts"], got["flag"] = name, backbone_opts, flag

    names = list(inspect.signature(cmd).parameters)
    assert names == ["name", "backbone", "pretrained", "backbone_config", "backbone_weights", "backbone_seed",
                     "device", "dtype", "weights_dir", "flag"]
    assert inspect.signature(cmd).parameters["weights_dir"].annotation == Optional[List[Path]]
    t = typer.Typer()
    t.command()(cmd)
    t.command("other")(lambda: None)  # a group, so the command is named
    res = CliRunner().invoke(t, ["cmd", "x", "--backbone-config", "tiny-vit", "--backbone-seed", "3",
                                 "--weights-dir", "a", "--weights-dir", "b", "--flag", "--dtype", "bfloat16"])
    assert res.exit_code == 0, res.output
    o = got["opts"]
    assert got["name"] == "x" and got["flag"] is True
    assert (o.backbone, o.backbone_config, o.backbone_seed, o.device, o.dtype) == (None, "tiny-vit", 3, "auto", "bfloat16")
    assert o.weights_dir == [Path("a"), Path("b")]
    assert o.spec().config_path  # tiny-vit resolves to a shipped config file


def test_decorator_refuses_a_command_without_the_parameter():
    with pytest.raises(TypeError, match="backbone_opts"):
        backbone_options()(lambda x=1: x)


@pytest.mark.parametrize("args", [[], ["scan"], ["train", "mpft"], ["weights", "list"]], ids=lambda a: " ".join(a) or "root")
def test_dash_h_is_help(args):
    import subprocess
    import sys

    long = subprocess.run([sys.executable, "-m", "aiidetect", *args, "--help"], capture_output=True, text=True)
    short = subprocess.run([sys.executable, "-m", "aiidetect", *args, "-h"], capture_output=True, text=True)
    assert short.returncode == long.returncode == 0, short.stderr
    assert short.stdout == long.stdout and "Usage" in short.stdout
