"""Every Python example in docs/api.md and README.md runs as written: in a folder holding the
`photos/`, `incoming/` and `my-heads/` they name (dev images and a tiny-vit probe), and each prints
or collects what it says it does."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _examples() -> list[tuple[str, int, str]]:
    out = []
    for doc in (REPO / "docs" / "api.md", REPO / "README.md"):
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            out.append((doc.name, text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def test_the_examples_are_found():
    assert len(_examples()) >= 3


@pytest.mark.slow  # the second api.md example builds tiny-vit over the shared trained probe
@pytest.mark.parametrize("doc,line,code", [pytest.param(*e, id=f"{e[0]}:{e[1]}") for e in _examples()])
def test_an_example_runs_as_written(doc, line, code, tmp_path, monkeypatch, dev_dir, trained, capsys):
    from aiidetect.discover import IMAGE_EXTS

    images = sorted(p for p in (dev_dir / "formats").rglob("*") if p.suffix.lower() in IMAGE_EXTS)[:6]
    for name in ("photos", "incoming"):
        (tmp_path / name).mkdir()
        for p in images:
            shutil.copy(p, tmp_path / name / p.name)
    shutil.copytree(trained, tmp_path / "my-heads")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, f"{doc}:{line}", "exec"), scope)
    if "records" in scope:
        assert len(scope["records"]) == len(images)
    if "scanner" in scope and "print(scanner.stats" in code:
        assert scope["scanner"].stats["files"] == len(images)
        assert str(scope["scanner"].stats["verdicts"]) in capsys.readouterr().out
