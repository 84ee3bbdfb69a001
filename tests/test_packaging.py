"""What the package declares about itself holds: the interpreters it admits run it."""
from __future__ import annotations

import re
import tomllib

from conftest import REPO


def _floor() -> tuple[int, int]:
    spec = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    m = re.fullmatch(r"\s*>=\s*(\d+)\.(\d+)\s*", spec)
    assert m, f"requires-python {spec!r}: expected a plain '>=X.Y' floor"
    return int(m[1]), int(m[2])


def test_requires_python_admits_no_interpreter_the_code_breaks_on():
    """pyproject said >=3.10, but on 3.10 `concurrent.futures.TimeoutError` is not the builtin `TimeoutError`
    that pixels.result catches (a scan of the dev folder stopped with `error: TimeoutError`), and csv refuses a
    NUL in a field (eval/train stopped on the dev manifest). Both hold from 3.11 on."""
    assert _floor() >= (3, 11)
    install = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    assert f"aiidetect needs Python ≥ {'.'.join(map(str, _floor()))}" in install


def _floors() -> dict[str, tuple[int, ...]]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    out = {}
    for d in deps:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([\d.]+)\s*", d)
        if m:
            out[m[1].lower()] = tuple(int(x) for x in m[2].split("."))
    return out


def test_exifread_floor_has_the_keywords_aiidetect_passes():
    """provenance/exif.py calls process_file(..., extract_thumbnail=False), which exifread 3.1 added: with 3.0.0,
    which pyproject allowed, 73 of the dev files' EXIF blocks read as `exifread: TypeError` and the camera
    evidence of others was lost (a Trust PowerCam photo's p_ai rose from 0.198 to 0.475)."""
    import inspect

    import exifread

    assert "extract_thumbnail" in inspect.signature(exifread.process_file).parameters
    assert _floors()["exifread"] >= (3, 1)


def test_the_source_archive_carries_what_install_md_runs_from_its_folder():
    """The sdist lacked constraints-cpu.txt, which every torch install line of docs/install.md passes with -c
    from the unpacked folder, and held 46 stray tests/test_*.py without conftest.py (none can run there)."""
    manifest = (REPO / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    assert "include constraints-cpu.txt" in manifest
    assert "graft docs" in manifest and "prune tests" in manifest
    install = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    assert "-c constraints-cpu.txt" in install  # what the archive must carry it for
