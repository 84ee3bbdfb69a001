"""What `--help`, shell completion and a wrong value show a user (docs/cli.md, "Fixed choices"):
options with a fixed set of values are click choices, and help prose wraps at the terminal's
width instead of at the source's line breaks."""
from __future__ import annotations

import ast
import enum
import importlib.util
import inspect
import re

import pytest
import typer
from typer.testing import CliRunner

from aiidetect.cli import app
from conftest import cli_command

# Options that were plain strings checked by hand ("--variant takes fp32, fp16, int8"): `<str>` in
# --help, nothing for shell completion, and an `error:` line instead of the usage message.
CONVERTED = [
    (("export", "onnx"), "--variant", ("fp32", "fp16", "int8"), ["-o", "out"]),
    (("export", "onnx"), "--int8-mode", ("dynamic", "static"), ["-o", "out"]),
    (("export", "onnx"), "--int8-weights", ("auto", "8", "7"), ["-o", "out"]),
    (("bench",), "--preprocess", ("resize-center-crop", "center-crop"), []),
    (("train", "linear"), "--preprocess", ("center-crop", "resize-center-crop", "resize"), ["x.csv"]),
    (("train", "mpft"), "--preprocess", ("center-crop", "resize-center-crop", "resize"), ["x.csv"]),
    (("train", "flow"), "--preprocess", ("center-crop", "resize-center-crop", "resize"), ["--real", "x"]),
    (("explain-mask",), "--preprocess", ("center-crop", "resize-center-crop", "resize"), ["x.jpg", "-o", "m.png"]),
    (("explain-mask",), "--mask-select", ("topk", "sample"), ["x.jpg", "-o", "m.png"]),
    (("train", "mpft"), "--recipe", ("project", "paper", "clip-finetune"), ["x.csv"]),
    (("train", "mpft"), "--shots-by", ("label", "generator"), ["x.csv"]),
    (("train", "mpft"), "--split", ("train", "val"), ["x.csv"]),
    (("train", "mpft"), "--mask-mode", ("drop", "token"), ["x.csv"]),
    (("train", "mpft"), "--mask-select", ("topk", "sample"), ["x.csv"]),
    (("train", "mpft"), "--adapter", ("lora", "last_n", "full"), ["x.csv"]),
    (("train", "flow"), "--recipe", ("project", "paper"), ["--real", "x"]),
    (("train", "flow"), "--linear", ("lu", "perm"), ["--real", "x"]),
    (("calibrate",), "--method", ("temperature", "platt", "isotonic"), ["x"]),
    (("calibrate",), "--split", ("train", "val"), ["x"]),
    (("eval",), "--split", ("train", "val"), ["x"]),
    (("eval",), "--protocol", ("genimage", "ufd"), ["x"]),
    (("meta",), "--watermark", ("auto", "always", "never"), ["x.jpg"]),
]


@pytest.mark.parametrize("path, option, allowed, rest", CONVERTED, ids=[" ".join((*c[0], c[1])) for c in CONVERTED])
def test_fixed_values_are_choices_and_a_wrong_one_is_a_usage_error(path, option, allowed, rest):
    cmd = cli_command(*path)
    param = next(p for p in cmd.params if option in p.opts)
    ann = param.type_descriptor.annotation
    ann = next((a for a in getattr(ann, "__args__", ()) if a is not type(None)), ann)  # Optional[...]
    assert isinstance(ann, type) and issubclass(ann, enum.Enum), (path, option, ann)
    assert [c.value for c in param.shell_complete(typer.Context(cmd), "")] == list(allowed)
    runner = CliRunner()
    assert "|".join(allowed) in runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"}).output
    r = runner.invoke(app, [*path, *rest, option, "bogus"], env={"COLUMNS": "200"})
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Usage:") and f"Invalid value for '{option}'" in r.output, r.output
    assert all(f"'{v}'" in r.output for v in allowed), r.output


def _constant(module: str, name: str):
    """A module's tuple constant, read without importing it (mpft's modules import torch)."""
    tree = ast.parse(open(importlib.util.find_spec(module).origin, encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{module}.{name}")


def test_the_choices_match_what_the_library_accepts():
    """The commands declare their values without importing the library modules that hold them
    (numpy or torch, which `aiidetect --help` does not load); a value added there must appear here."""
    from aiidetect.commands import bench, calibrate, common, evaluate, export
    from aiidetect.mpft import cli as mpft_cli, explain_cli

    def values(enum):
        return tuple(e.value for e in enum)

    assert values(export.OnnxVariant) == _constant("aiidetect.onnx_export", "VARIANTS")
    assert values(common.Preprocess) == _constant("aiidetect.preprocess", "MODES")
    assert set(values(bench.BenchPreprocess)) <= set(_constant("aiidetect.preprocess", "MODES"))  # a subset
    assert values(common.GenImageSplit) == _constant("aiidetect.train.data", "GENIMAGE_SPLITS")
    assert values(calibrate.Method) == _constant("aiidetect.probability", "METHODS")
    assert values(evaluate.Protocol) == _constant("aiidetect.evaluate.protocol", "PROTOCOLS")
    assert values(mpft_cli.MaskMode) == _constant("aiidetect.mpft.model", "MASK_MODES")
    assert values(explain_cli.MaskSelect) == _constant("aiidetect.mpft.tam", "MASK_MODES")
    assert values(mpft_cli.Adapter) == _constant("aiidetect.mpft.lora", "ADAPTER_MODES")


def _paths():
    todo, out = [((), typer.main.get_command(app))], []
    while todo:
        path, cmd = todo.pop()
        todo += [(path + (n,), sub) for n, sub in getattr(cmd, "commands", {}).items()]
        out.append(path)
    return sorted(out)


def _prose(help_out: str) -> list[str]:
    """The help's text above the option panels, one entry per line, without the lines of Examples
    blocks (from `Example:`/`Examples:` to the next blank line: commands written one a line)."""
    lines, in_examples = [], False
    for line in help_out.split("\n"):
        if line.startswith(("╭", "│", "╰")):
            break
        text = line.strip()
        if not text:
            in_examples = False
        elif re.search(r"\bExamples?:", text):
            in_examples = True
        lines.append("" if in_examples else text)
    return lines


@pytest.mark.parametrize("path", _paths(), ids=lambda p: " ".join(p) or "aiidetect")
def test_help_prose_wraps_at_the_terminal_not_at_the_source(path, monkeypatch):
    """At 80 columns `aiidetect report --help` broke a sentence after "(not a saved" and went on
    on the next line: each source line of a paragraph stayed a line. A line less than half the
    width followed by one that starts with a lowercase word is such a break. Examples keep their
    lines (one command a line)."""
    from typer import rich_utils

    # an 80-column terminal: piped (as here) help is laid out for 160, where no sentence would reach the break
    runner = CliRunner()
    with monkeypatch.context() as m:
        m.setattr(rich_utils, "MAX_WIDTH", 80)
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}).output
    prose = _prose(out)
    broken = [(a, b) for a, b in zip(prose, prose[1:]) if a and 0 < len(a) < 40 and re.match(r"[a-z]", b)]
    assert not broken, (path, broken, out)
    # the intentional breaks stay: every example written on a line of its own is one in --help
    cmd = cli_command(*path) if path else typer.main.get_command(app)
    source = inspect.cleandoc(getattr(cmd.callback, "__doc__", None) or "")
    examples = [x.strip() for x in source.split("\n") if x.startswith("  aiidetect ")]
    wide = [x.strip() for x in runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"}).output.split("\n")]
    assert all(x in wide for x in examples), (path, examples, wide)


def _example_lines(help_text: str) -> list[str]:
    """Each line of the help's examples as written: from `Example:`/`Examples:` (what follows it on its line
    included) to the end of its paragraph."""
    out = []
    for par in help_text.split("\n\n"):
        lines = par.split("\n")
        at = next((i for i, line in enumerate(lines) if re.search(r"\bExamples?:", line)), None)
        if at is not None:
            first = lines[at][re.search(r"\bExamples?:", lines[at]).start():]
            out += [x.strip() for x in [first, *lines[at + 1:]] if x.strip()]
    return out


@pytest.mark.parametrize("path", [p for p in _paths() if _example_lines(cli_command(*p).help or "")], ids=" ".join)
def test_piped_help_keeps_every_example_line_whole(path, monkeypatch):
    """docs/cli.md "Output for scripts": `aiidetect calibrate --help | cat` was laid out for rich's 80 columns
    and split `... -f json | jq .threshold` after `jq`: the example copied from a saved help page no longer
    ran. Piped, help is laid out as wide as a piped table, and every example line comes out on one line."""
    from typer import rich_utils

    # as typer reads it without TERMINAL_WIDTH: a developer's own TERMINAL_WIDTH=80 failed 17 of these
    monkeypatch.setattr(rich_utils, "MAX_WIDTH", None)
    piped = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": None}).output
    out = [line.strip() for line in piped.split("\n")]
    cut = [x for x in _example_lines(cli_command(*path).help) if not any(x in line for line in out)]
    assert not cut, (path, cut, out)


def test_reflow_joins_prose_and_keeps_blocks():
    from aiidetect.commands.helptext import reflow

    text = """Summary line.

    A sentence the source
    wrapped, and its end.
    Example: aiidetect a
    aiidetect b

    Examples:
      aiidetect c
      aiidetect d

    - one item
    - another, said
      on two lines
    1. first
    2) second

    \bkept
    as written"""
    assert reflow(text).split("\n") == [
        "Summary line.", "",
        "A sentence the source wrapped, and its end.", "Example: aiidetect a", "aiidetect b", "",
        "Examples:", "  aiidetect c", "  aiidetect d", "",
        "- one item", "- another, said", "  on two lines", "1. first", "2) second", "",
        "\bkept", "as written"]


def test_docs_list_every_converted_choice():
    """docs/cli.md "Fixed choices" names each of these options with its values as --help shows them
    (inline, `--opt a|b`, or in its table, where the pipes are escaped)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    section = doc.split("## Fixed choices", 1)[1].split("\n## ", 1)[0]
    missing = [(option, allowed) for _, option, allowed, _ in CONVERTED
               if f"`{option} {'|'.join(allowed)}`" not in section
               and not (f"`{option}`" in section and "`" + "\\|".join(allowed) + "`" in section)]
    assert not missing, missing


@pytest.mark.parametrize("path", [p for p in _paths() if p and not getattr(cli_command(*p), "commands", None)],
                         ids=" ".join)
def test_every_command_help_ends_with_an_example(path):
    """docs/cli.md: every command's help ends with at least one example. `eval` and `calibrate` put a paragraph
    on training overlap after theirs, `report` its exit codes: the last thing a reader saw was not a command."""
    paras = [p for p in re.split(r"\n\s*\n", inspect.cleandoc(cli_command(*path).callback.__doc__ or "")) if p.strip()]
    # an Example(s) block runs to the end of its paragraph (docs/cli.md "Help text"): the last one holds it
    assert paras and re.search(r"\bExamples?:", paras[-1]), (path, paras[-1:] or None)
