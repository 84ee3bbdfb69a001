"""scripts/report_screenshots.py runs aiidetect from its work folder: it must be this checkout's aiidetect."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from conftest import REPO


def test_the_screenshots_are_of_this_checkouts_aiidetect(tmp_path, monkeypatch):
    """The script runs `python -m aiidetect` from a folder under /tmp: a checkout that is not installed found no
    package, and a worktree sharing another checkout's editable install photographed that one's page."""
    spec = importlib.util.spec_from_file_location("report_screenshots", REPO / "scripts" / "report_screenshots.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    real, ran = subprocess.run, []

    def run(cmd, **kw):
        # the same interpreter, folder and environment, asked where `import aiidetect` comes from
        ran.append(real([sys.executable, "-c", "import aiidetect; print(aiidetect.__file__)"], cwd=kw["cwd"],
                        env=kw["env"], capture_output=True, text=True))

    monkeypatch.setattr(subprocess, "run", run)
    mod.cli("--version", env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=tmp_path)
    assert ran[0].stdout.strip() == str(REPO / "aiidetect" / "__init__.py"), (ran[0].stdout, ran[0].stderr[-500:])
