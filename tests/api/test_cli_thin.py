"""The command modules are thin: none imports another command module (only the
shared `common` and `errors`), and `scan`, `eval`, `calibrate` assemble their
run through aiidetect.api, not through each other."""
from __future__ import annotations

import ast
from pathlib import Path

import aiidetect.commands as commands

SHARED = {"common", "errors"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1:  # from .x import ... / from . import x
                yield from ([mod.split(".")[0]] if mod else [a.name for a in node.names])
            elif node.level == 0 and mod.startswith("aiidetect.commands."):
                yield mod.split(".")[2]


def test_no_command_module_imports_another():
    folder = Path(commands.__file__).parent
    found = {p.stem: sorted(set(_imports(p)) - SHARED) for p in folder.glob("*.py") if p.stem != "__init__"}
    assert {k: v for k, v in found.items() if v} == {}


def test_run_assembly_comes_from_the_library():
    folder = Path(commands.__file__).parent
    for name in ("scan", "evaluate", "calibrate"):
        src = (folder / f"{name}.py").read_text()
        assert "from ..api import" in src, name
        assert "create_detectors" not in src and "RunContext" not in src, name
