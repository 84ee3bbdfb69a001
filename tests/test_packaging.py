"""What the package declares about itself holds: the interpreters and versions it admits run it, its source
archive carries what its docs run, and an installed copy finds the data files it ships."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

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


def test_shipped_heads_are_found_where_pip_put_them_not_only_under_sys_prefix(monkeypatch, tmp_path):
    """Debian's and Ubuntu's system Python install a wheel's data files under /usr/local while sys.prefix is
    /usr (`pip install --prefix` elsewhere too): the UnivFD head the wheel carries was looked for only under
    <sys.prefix>/share, so no scan found it. Its place comes from the installation's RECORD."""
    import os
    from importlib import metadata

    from aiidetect import heads

    site = tmp_path / "local" / "lib" / "site-packages"
    info = site / "aiidetect-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aiidetect\nVersion: 0.1.0\n", encoding="utf-8")
    shipped = tmp_path / "local" / "share" / "aiidetect" / "weights"
    (shipped / "univfd").mkdir(parents=True)
    (shipped / "univfd" / "manifest.json").write_text("{}", encoding="utf-8")
    own = os.path.relpath(Path(heads.__file__).resolve().parent / "__init__.py", site)
    (info / "RECORD").write_text(f"{own},,\n../../share/aiidetect/weights/univfd/manifest.json,,\n", encoding="utf-8")
    monkeypatch.setattr(metadata, "distributions", lambda **kw: [metadata.PathDistribution(info)])
    monkeypatch.setattr(heads, "REPO_WEIGHTS", tmp_path / "no-checkout")
    monkeypatch.setattr(heads.sys, "prefix", str(tmp_path / "usr"))  # holds no share/aiidetect
    monkeypatch.setattr(heads, "_installed", [], raising=False)  # a new process
    assert shipped.resolve() in [d.resolve() for d in heads.shipped_weights_dirs()]
