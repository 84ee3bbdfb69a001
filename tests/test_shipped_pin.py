"""The shipped head is the one aiidetect shipped: a head consistent with its own manifest, planted in a shipped
heads' folder (under the shipped name, in front of the real one, or under a name of its own), ran and decided
verdicts; a user's head under the shipped name read as the shipped one in `weights list`."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO

SHIPPED = REPO / "weights" / "univfd"


def _fake(dst: Path, name: str = "univfd") -> Path:
    """The shipped manifest over tiny tensors of another head, its checksum redone: consistent with itself."""
    import numpy as np
    from safetensors.numpy import save_file  # (not torch's: its import alone took seconds)

    dst.mkdir(parents=True)
    save_file({"weight": -np.ones((1, 4), np.float32), "bias": np.zeros(1, np.float32)}, str(dst / "head.safetensors"))
    shutil.copy(SHIPPED / "LICENSE", dst / "LICENSE")
    m = json.loads((SHIPPED / "manifest.json").read_text(encoding="utf-8"))
    m["name"] = name
    m["files"]["head.safetensors"] = hashlib.sha256((dst / "head.safetensors").read_bytes()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
    return dst


@pytest.fixture
def shipped_dir(tmp_path, monkeypatch) -> Path:
    """A shipped heads' folder of this process's own (the checkout's weights/ moved to tmp)."""
    from aiidetect import heads

    d = tmp_path / "checkout" / "weights"
    d.mkdir(parents=True)
    monkeypatch.setattr(heads, "REPO_WEIGHTS", d)
    monkeypatch.setattr(heads, "_installed", [None])
    monkeypatch.setattr(heads.sys, "prefix", str(tmp_path / "usr"))
    return d


def test_the_pin_is_the_head_in_weights_univfd():
    """The pin names the files that ship: a change to weights/univfd must change it in the same commit."""
    from aiidetect.heads import SHIPPED_HEADS, in_shipped_folder, pin_problem, read_manifest, verify_files

    manifest = read_manifest(SHIPPED)
    assert SHIPPED_HEADS[("linear", "univfd")] == {
        "manifest.json": hashlib.sha256((SHIPPED / "manifest.json").read_bytes()).hexdigest(),
        "head.safetensors": manifest["files"]["head.safetensors"]}
    # it is found in a shipped folder here, and passes its pin (loading it, torch and all: tests/linear)
    assert in_shipped_folder(SHIPPED) and pin_problem(SHIPPED, manifest) is None and verify_files(SHIPPED, manifest) == []


@pytest.mark.parametrize("name", ["univfd", "extra"])
def test_a_planted_head_in_a_shipped_folder_is_refused(shipped_dir, name):
    from aiidetect.api import head_rows, verify_heads
    from aiidetect.detectors import family_hook
    from aiidetect.detectors.base import RunContext, UnavailableDetector
    from aiidetect.detectors.heads import HeadsUnavailable
    from aiidetect.heads import HeadError, load_head

    fake = _fake(shipped_dir / name, name)
    with pytest.raises(HeadError, match="aiidetect ships") as exc:
        load_head(fake)
    assert str(fake) in str(exc.value)
    if name == "univfd":
        assert "SHA-256" in str(exc.value)
    [(_, path, problems)] = verify_heads([shipped_dir])
    assert path == str(fake) and "aiidetect ships" in problems[0]
    assert [r["origin"] for r in head_rows([shipped_dir])] == ["refused"]
    # a scan: the head is unavailable with that reason (it fails before the backbone is used)
    ctx = RunContext(weights_dirs=[shipped_dir])
    ctx._backbone = SimpleNamespace(fingerprint="x", spec=SimpleNamespace(describe=lambda: "x"))
    with pytest.raises(HeadsUnavailable) as unavailable:
        family_hook("linear", "create")(ctx)
    [row] = unavailable.value.rows
    assert isinstance(row, UnavailableDetector) and row.name == f"linear:{name}"
    assert str(fake) in row.reason and "aiidetect ships" in row.reason


def test_a_planted_fusion_model_in_a_shipped_folder_is_refused(shipped_dir):
    from aiidetect.fusion import load_fusion_model

    (shipped_dir / "fz").mkdir()
    (shipped_dir / "fz" / "manifest.json").write_text(json.dumps({"name": "fz", "detector": "fusion"}), "utf-8")
    with pytest.raises(ValueError, match="aiidetect ships"):
        load_fusion_model([shipped_dir])


def test_a_user_head_under_the_shipped_name_runs_and_is_said(shipped_dir, tmp_path):
    from aiidetect.api import head_rows, verify_heads
    from aiidetect.heads import find_heads, load_head

    shutil.copytree(SHIPPED, shipped_dir / "univfd")
    user = tmp_path / "user"
    fake = _fake(user / "univfd")
    notes: list[str] = []
    [(path, _)] = find_heads([user, shipped_dir], "linear", notes=notes)
    assert path == fake and load_head(fake).name == "univfd"  # not pinned: the user's own
    assert any(n.startswith(f"head linear:univfd in {fake} is not the linear:univfd head aiidetect ships")
               for n in notes)
    assert [r["origin"] for r in head_rows([user, shipped_dir])] == ["user"]
    assert verify_heads([user, shipped_dir])[0][2] == []
    # the shipped head copied elsewhere (a bundle installed into the user folder) is still the shipped head
    shutil.rmtree(fake)
    shutil.copytree(SHIPPED, fake)
    notes.clear()
    find_heads([user], "linear", notes=notes)
    assert notes == [] and [r["origin"] for r in head_rows([user])] == ["shipped"]


def _weights_seen_by(package_parent: Path) -> str:
    shutil.copytree(REPO / "aiidetect", package_parent / "aiidetect",
                    ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-c", "import aiidetect.heads as h; print(h.REPO_WEIGHTS)"],
                       capture_output=True, text=True, cwd=package_parent.parent, timeout=60,
                       env={"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_only_a_source_checkout_searches_the_weights_folder_above_the_package(tmp_path):
    """Installed, the folder above the package is site-packages: its weights/ is any package's, and was searched.
    A checkout (its pyproject.toml names aiidetect) still searches its weights/."""
    site = tmp_path / "site-packages"
    _fake(site / "weights" / "other")
    assert _weights_seen_by(site) == "None"
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / "pyproject.toml", checkout)
    assert _weights_seen_by(checkout) == str(checkout / "weights")


def test_a_pyproject_planted_beside_installed_packages_does_not_make_a_checkout(tmp_path):
    """A pyproject.toml naming aiidetect is a file anyone who can write in site-packages (or a --target folder)
    may put there: it searched that folder's weights/ for heads again."""
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", site)
    assert _weights_seen_by(site) == "None"
    target = tmp_path / "deps"  # pip install --target: pip's record of aiidetect sits beside it
    (target / "aiidetect-0.1.0.dist-info").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", target)
    assert _weights_seen_by(target) == "None"


def test_the_pinned_bytes_are_the_manifest_used(shipped_dir):
    """The pin hashed manifest.json as it was on disk when checked, while the head ran with the manifest
    find_heads had read before: a planted manifest (its threshold moved) swapped for the real one in between
    passed the pin and decided the verdicts."""
    from aiidetect.heads import HeadError, find_heads, load_head

    head = shipped_dir / "univfd"
    shutil.copytree(SHIPPED, head)
    real = (head / "manifest.json").read_bytes()
    planted = json.loads(real)
    planted["threshold"] = -1e9
    (head / "manifest.json").write_text(json.dumps(planted), encoding="utf-8")
    [(path, m)] = find_heads([shipped_dir], "linear")
    (head / "manifest.json").write_bytes(real)  # in place again when the pin is checked
    with pytest.raises(HeadError, match="aiidetect ships .*changed while it was read"):
        load_head(path, manifest=m)


def test_the_tensors_checked_are_the_tensors_loaded(tmp_path, monkeypatch):
    """verify_files hashed head.safetensors and safetensors read the file again: tensors replaced in between
    (after the pin and the checksum passed) ran as the head's."""
    from aiidetect import heads

    head = tmp_path / "univfd"
    shutil.copytree(SHIPPED, head)
    checked = heads.verify_files

    def then_replaced(d, m):
        problems = checked(d, m)
        _fake(tmp_path / "other")
        shutil.copy(tmp_path / "other" / "head.safetensors", head / "head.safetensors")
        return problems

    monkeypatch.setattr(heads, "verify_files", then_replaced)
    with pytest.raises(heads.HeadError, match="checksum differs"):
        heads.load_head(head)


def test_a_fast_path_decision_stored_with_a_planted_head_is_stale(shipped_dir, tmp_path):
    """`aiidetect optimize` keys its decision on the heads' files: one stored while a planted univfd sat in a
    shipped folder (before the pin; the files unchanged since) kept serving its ONNX export under the default
    --runtime auto, where torch now refuses that head. The key of a refused head is another."""
    from aiidetect.optimize import heads_identity

    fake = _fake(shipped_dir / "univfd")
    [now] = heads_identity([shipped_dir])
    user = tmp_path / "user"
    shutil.copytree(fake, user / "univfd")
    [as_before] = heads_identity([user])  # the same files where nothing pins them: the entry a decision held
    assert now != as_before and now["files"] == as_before["files"]


def test_git_checks_the_shipped_heads_out_byte_for_byte():
    """With core.autocrlf (Git for Windows' default) a checkout's weights/univfd had CRLF line ends in its
    manifest and LICENSE: their digests differed from the pin and the manifest's, and the head was refused."""
    files = [str(p.relative_to(REPO)) for p in sorted(SHIPPED.iterdir())]
    r = subprocess.run(["git", "check-attr", "text", "--", *files], cwd=REPO, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout: {r.stderr.strip()}")
    assert r.stdout.splitlines() == [f"{f}: text: unset" for f in files]


def test_a_copy_of_the_shipped_manifest_over_other_tensors_is_not_listed_as_shipped(tmp_path):
    from aiidetect.api import head_rows

    shutil.copytree(SHIPPED, tmp_path / "univfd")
    with open(tmp_path / "univfd" / "head.safetensors", "ab") as f:
        f.write(b"x")
    assert [r["origin"] for r in head_rows([tmp_path])] == ["user"]


def test_the_tensors_read_whole_ask_for_no_more_memory_than_they_hold():
    """Read as one bounded read, a head of kilobytes asked for the bound (gigabytes) at once: refused where
    memory is not overcommitted (here: an address-space limit)."""
    pytest.importorskip("resource")   # the child limits its memory with it (POSIX only)
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); from pathlib import Path; "
            "from aiidetect.heads import _tensor_bytes; print(len(_tensor_bytes(Path(r'%s'))))" % SHIPPED)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and int(r.stdout) == (SHIPPED / "head.safetensors").stat().st_size, r.stderr[-500:]
