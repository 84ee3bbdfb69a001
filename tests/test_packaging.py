"""What the package declares about itself holds: the interpreters and versions it admits run it, its source
archive carries what its docs run, and an installed copy finds the data files it ships."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
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


def test_the_readme_in_the_source_archive_says_where_its_tests_run():
    """README.md ships in the sdist and said "Run the tests" there, where tests/ and scripts/ are left out (they
    read ../shared/data/dev, beside a checkout): each folder MANIFEST.in prunes is named as left out, next to
    the test command."""
    pruned = [line.split()[1] for line in (REPO / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
              if line.startswith("prune ")]
    assert {"tests", "scripts"} <= set(pruned)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tests_part = readme[readme.index("Run the tests"):].split("```")[0]
    assert "source archive" in tests_part and all(f"`{d}/`" in tests_part for d in pruned)


def _installed_copy(tmp_path: Path, record_data: str, scheme: str = "posix_prefix") -> tuple[Path, Path]:
    """An installed aiidetect as pip lays it out under the prefix tmp_path/local: (its package folder, the
    share/aiidetect/weights folder), its RECORD naming the UnivFD manifest as `record_data`/... ."""
    import os
    import sysconfig

    prefix = tmp_path / "local"
    site = Path(sysconfig.get_paths(scheme if os.name == "posix" else "nt", vars={"base": str(prefix),
                                                                              "platbase": str(prefix)})["purelib"])
    (site / "aiidetect").mkdir(parents=True)
    (site / "aiidetect" / "__init__.py").write_text("", encoding="utf-8")
    info = site / "aiidetect-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aiidetect\nVersion: 0.1.0\n", encoding="utf-8")
    (info / "RECORD").write_text(f"aiidetect/__init__.py,,\n{record_data}/univfd/manifest.json,,\n", encoding="utf-8")
    return site / "aiidetect", prefix / "share" / "aiidetect" / "weights"


def _as_installed(monkeypatch, tmp_path, package: Path) -> None:
    """This process's aiidetect.heads seen as the copy in `package`, read afresh; no checkout, no sys.prefix copy."""
    from aiidetect import heads

    monkeypatch.syspath_prepend(str(package.parent))  # where importlib.metadata finds its RECORD too
    monkeypatch.setattr(heads, "__file__", str(package / "heads.py"))
    monkeypatch.setattr(heads, "REPO_WEIGHTS", tmp_path / "no-checkout")
    monkeypatch.setattr(heads.sys, "prefix", str(tmp_path / "usr"))  # holds no share/aiidetect
    monkeypatch.setattr(heads, "_installed", [])  # a new process


def _shipped_head(weights: Path) -> None:
    (weights / "univfd").mkdir(parents=True)
    (weights / "univfd" / "manifest.json").write_text("{}", encoding="utf-8")


def test_shipped_heads_are_found_where_pip_put_them_not_only_under_sys_prefix(monkeypatch, tmp_path):
    """Debian's and Ubuntu's system Python install a wheel's data files under /usr/local while sys.prefix is
    /usr (`pip install --prefix` elsewhere too): the UnivFD head the wheel carries was looked for only under
    <sys.prefix>/share, so no scan found it. Its place comes from the installation's RECORD."""
    from aiidetect import heads

    package, shipped = _installed_copy(tmp_path, "../../../share/aiidetect/weights")
    _shipped_head(shipped)
    _as_installed(monkeypatch, tmp_path, package)
    assert [d.resolve() for d in heads.shipped_weights_dirs()] == [shipped.resolve()]


@pytest.mark.parametrize("linked", ["univfd", "weights"])
def test_a_linked_shipped_folder_is_still_found(monkeypatch, tmp_path, linked):
    """The folder is the one RECORD names: a head folder linked elsewhere (univfd -> /opt/heads/univfd) made
    the link target's parent the shipped folder, and the heads beside the link went unsearched; a linked
    weights folder (-> /opt/heads) made the prefix the link target's grandparent, which pairs with no
    install scheme (or, with fewer than three folders above it, an IndexError ended every command)."""
    import os

    from aiidetect import heads

    package, shipped = _installed_copy(tmp_path, "../../../share/aiidetect/weights")
    _shipped_head(tmp_path / "opt" / "heads")
    link, to = ((shipped / "univfd", tmp_path / "opt" / "heads" / "univfd") if linked == "univfd"
                else (shipped, tmp_path / "opt" / "heads"))
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(to, link, target_is_directory=True)
    except OSError:
        pytest.skip("no symbolic links here")
    _as_installed(monkeypatch, tmp_path, package)
    assert [d.resolve() for d in heads.shipped_weights_dirs()] == [shipped.resolve()]


def test_a_record_csv_cannot_read_leaves_the_other_places_searched(monkeypatch, tmp_path):
    """A damaged RECORD (here a line longer than csv's field limit) ended every command with
    `aiidetect: error: Error: field larger than field limit (131072)`."""
    from aiidetect import heads

    package, _ = _installed_copy(tmp_path, "../../../share/aiidetect/weights")
    record = package.parent / "aiidetect-0.1.0.dist-info" / "RECORD"
    record.write_text(record.read_text(encoding="utf-8") + "x" * 200_000 + ",,\n", encoding="utf-8")
    _as_installed(monkeypatch, tmp_path, package)
    assert heads.shipped_weights_dirs() == []


def test_a_zipped_install_scans_without_its_shipped_heads(monkeypatch, tmp_path):
    """An aiidetect run from a zip holding its dist-info (a zipapp of a `pip install --target` folder) ended
    every scan, `-d metadata` too, with `aiidetect: error: TypeError: expected str, bytes or os.PathLike
    object, not Path`: importlib.metadata names the zip's files as zipfile.Path. Heads inside a zip cannot
    be loaded; the other places are searched."""
    import zipfile

    from aiidetect import heads

    app = tmp_path / "app.zip"
    with zipfile.ZipFile(app, "w") as z:
        z.writestr("aiidetect/__init__.py", "")
        z.writestr("aiidetect-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: aiidetect\nVersion: 0.1.0\n")
        z.writestr("aiidetect-0.1.0.dist-info/RECORD",
                   "aiidetect/__init__.py,,\n../../share/aiidetect/weights/univfd/manifest.json,,\n")
    _as_installed(monkeypatch, tmp_path, app / "aiidetect")
    assert heads.shipped_weights_dirs() == []


def test_a_target_install_runs_no_heads_from_two_folders_above_it(monkeypatch, tmp_path):
    """`pip install --target DIR` writes RECORD relative to the temporary folder it installed into, so the
    shipped heads' lines name DIR/../../share: for --target /tmp/x/deps every scan ran the heads and the
    fusion model anyone had put in /tmp/share/aiidetect/weights (`fusion: planted ...`)."""
    from aiidetect import heads

    target = tmp_path / "x" / "deps"
    (target / "aiidetect").mkdir(parents=True)
    (target / "aiidetect" / "__init__.py").write_text("", encoding="utf-8")
    info = target / "aiidetect-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aiidetect\nVersion: 0.1.0\n", encoding="utf-8")
    (info / "RECORD").write_text("aiidetect/__init__.py,,\n../../share/aiidetect/weights/univfd/manifest.json,,\n",
                                 encoding="utf-8")
    _shipped_head(tmp_path / "share" / "aiidetect" / "weights")  # where RECORD points: someone else's
    _as_installed(monkeypatch, tmp_path, target / "aiidetect")
    assert heads.shipped_weights_dirs() == []
