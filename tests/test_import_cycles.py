"""No two aiidetect modules import each other, directly or in a ring, counting
imports inside functions (scripts/import_cycles.py reads the source)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_cycles"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_no_import_cycles_in_aiidetect():
    tool = _tool()
    graph = tool.build_graph(ROOT)
    assert len(graph) > 50  # the walk really saw the package
    assert tool.find_cycles(graph) == []


def test_finder_sees_function_level_and_relative_imports(tmp_path):
    tool = _tool()
    pkg = tmp_path / "aiidetect"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import thing\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import other\n    return other\n")
    (pkg / "c.py").write_text("import aiidetect.a\n")
    graph = tool.build_graph(tmp_path)
    assert graph["aiidetect.sub.b"] == {"aiidetect.a"}
    assert tool.find_cycles(graph) == [["aiidetect.a", "aiidetect.sub.b"]]
    assert tool.main(["--root", str(tmp_path)]) == 1
