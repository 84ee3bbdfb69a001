"""Writing a head folder: whole, then renamed into place; never over something that is not a head of the
same name and family (the training images, a file, another head)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


def _head(out: Path, name: str = "h", family: str = "linear", value: float = 1.0) -> Path:
    from aiidetect.heads import save_head

    return save_head(out, {"weight": np.full((1, 4), value, np.float32)}, {"name": name, "detector": family})


def test_an_interrupted_save_leaves_the_head_that_was_there(tmp_path, monkeypatch):
    """Ctrl-C (or a full disk) after the new tensors were written used to leave them beside the old
    manifest: the head that was there failed its checksum from then on. Now the old head stays whole and
    loadable, and nothing half written is left or found."""
    from aiidetect import heads

    w = tmp_path / "weights"
    _head(w / "h", value=1.0)
    before = {p.name: p.read_bytes() for p in (w / "h").iterdir()}

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(heads, "sha256_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _head(w / "h", value=2.0)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (w / "h").iterdir()} == before
    assert heads.load_head(w / "h").tensors["weight"].flatten().tolist() == [1.0] * 4
    assert sorted(p.name for p in w.iterdir()) == ["h"]

    _head(w / "h", value=3.0)  # retraining the same head replaces it
    assert heads.load_head(w / "h").tensors["weight"].flatten().tolist() == [3.0] * 4
    assert sorted(p.name for p in w.iterdir()) == ["h"]


def test_every_file_of_a_head_gets_the_umasks_mode(tmp_path):
    """head.safetensors came out 0600 (safetensors' own mode) beside a 0644 manifest: another user of a
    shared weights folder saw the head and could not load it."""
    import os
    import stat

    umask = os.umask(0o022)
    try:
        d = _head(tmp_path / "h")
    finally:
        os.umask(umask)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()} == {"head.safetensors": 0o644,
                                                                           "manifest.json": 0o644}


def test_a_folder_a_killed_save_left_is_never_found_and_the_next_save_removes_it(tmp_path):
    """kill -9 cannot be cleaned up after: the unfinished folder is hidden, and find_heads skips it. The
    next save of that head removes it, but not the folder of a save still running (it holds a lock)."""
    import fcntl
    import os

    from aiidetect.heads import find_heads

    w = tmp_path / "weights"
    _head(w / "h", value=1.0)
    killed, live = w / ".h.partial-123-abcd", w / ".h.partial-456-ef01"
    for d in (killed, live):
        shutil.copytree(w / "h", d)
        (d / "head.safetensors").write_bytes(b"half")
        os.utime(d, (1e9, 1e9))
    assert [p for p, _ in find_heads([w])] == [w / "h"]
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _head(w / "h", value=2.0)
    finally:
        os.close(fd)
    assert sorted(p.name for p in w.iterdir()) == [live.name, "h"]


def test_save_head_refuses_a_folder_that_is_not_this_heads(tmp_path):
    from aiidetect.heads import HeadOutputError

    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "real" / "a.jpg").write_bytes(b"a photo")
    (tmp_path / "file").write_text("x")
    _head(tmp_path / "other", name="other", family="mpft")
    for out, why in ((data, "not a head's (real)"), (tmp_path / "file", "is a file"),
                     (tmp_path / "other", "another head (mpft:other)"), (tmp_path / ".h", "is hidden")):
        with pytest.raises(HeadOutputError, match=why.replace("(", r"\(").replace(")", r"\)")):
            _head(out)
    assert (data / "real" / "a.jpg").read_bytes() == b"a photo" and sorted(p.name for p in data.iterdir()) == ["real"]
    assert json.loads((tmp_path / "other" / "manifest.json").read_text())["name"] == "other"
    (tmp_path / "empty").mkdir()
    _head(tmp_path / "empty")  # an empty folder takes a head
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_train_linear_refuses_an_out_dir_it_would_replace_before_training(dev_dir, tmp_path):
    """`--out-dir` the training folder wrote the head among the images (an input modified); a file failed
    after the features were extracted, as an unexpected FileExistsError; another head was replaced."""
    from typer.testing import CliRunner

    from aiidetect.cli import app

    src = tmp_path / "data"
    for label, rel in (("real", "real/ml72"), ("ai", "ai/sd14")):
        (src / label).mkdir(parents=True)
        for p in sorted((dev_dir / rel).iterdir())[:2]:
            shutil.copy(p, src / label / p.name)
    files_before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    (tmp_path / "afile").write_text("x")
    _head(tmp_path / "other", name="other", family="mpft")
    env = {"AIIDETECT_WEIGHTS": str(tmp_path / "weights")}
    for out, why in ((src, "holds files that are not a head's (ai, real)"), (tmp_path / "afile", "is a file"),
                     (tmp_path / "afile" / "sub", "cannot be made: "),
                     (tmp_path / "other", "holds another head (mpft:other)")):
        r = CliRunner().invoke(app, ["train", "linear", str(src), "--backbone-config", "tiny-vit", "--name", "p",
                                     "--out-dir", str(out)], env=env, catch_exceptions=False)
        assert r.exit_code == 2 and why in r.stderr, (out, r.stderr)
        assert "extracting features" not in r.stderr and "Error" not in r.stderr and r.stdout == ""
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == files_before
    assert json.loads((tmp_path / "other" / "manifest.json").read_text())["detector"] == "mpft"


def test_a_head_holding_nan_is_never_written_and_never_loaded(tmp_path):
    """A training run whose loss went NaN wrote its head and said "wrote"; a scan loaded it, made every
    file's result an error blamed on "the features", and `weights verify` said ok. Now save_head refuses
    such tensors (nothing written, the old head kept) and load_head says what is wrong with the head."""
    import hashlib

    from safetensors.numpy import load_file, save_file

    from aiidetect import heads

    w = tmp_path / "weights"
    _head(w / "h", value=1.0)
    for bad in (np.nan, np.inf):
        with pytest.raises(heads.HeadError, match="NaN or infinite"):
            _head(w / "h", value=bad)
        assert heads.load_head(w / "h").tensors["weight"].flatten().tolist() == [1.0] * 4
    assert sorted(p.name for p in w.iterdir()) == ["h"]

    # one made elsewhere, its checksum right
    t = load_file(str(w / "h" / heads.TENSORS))
    t["weight"][0, 2] = np.nan
    save_file(t, str(w / "h" / heads.TENSORS))
    m = json.loads((w / "h" / heads.MANIFEST).read_text())
    m["files"][heads.TENSORS] = hashlib.sha256((w / "h" / heads.TENSORS).read_bytes()).hexdigest()
    (w / "h" / heads.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(heads.HeadError, match="NaN or infinite numbers in weight"):
        heads.load_head(w / "h")
    # and `weights verify` fails it, as every scan would (its checksums are right)
    from aiidetect.api import verify_heads

    [(name, _, problems)] = verify_heads([w])
    assert name == "h" and any("NaN or infinite numbers in weight" in p for p in problems), problems


def test_a_tensors_file_that_is_not_safetensors_fails_verify_and_names_the_head(tmp_path):
    """A head made elsewhere whose head.safetensors is not one, its checksum right: `weights verify`
    (which now loads each head) ended on "error: SafetensorError: ...", naming no head and checking
    none after it. It is that head's problem, as in a scan, where the head is unavailable."""
    import hashlib

    from aiidetect import heads
    from aiidetect.api import verify_heads

    w = tmp_path / "weights"
    _head(w / "a", name="a")
    _head(w / "b", name="b")
    (w / "a" / heads.TENSORS).write_bytes(b"\x08" + b"\x00" * 7 + b'{"x": 1}')
    m = json.loads((w / "a" / heads.MANIFEST).read_text())
    m["files"][heads.TENSORS] = hashlib.sha256((w / "a" / heads.TENSORS).read_bytes()).hexdigest()
    (w / "a" / heads.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(heads.HeadError, match="head.safetensors cannot be read: SafetensorError"):
        heads.load_head(w / "a")
    rows = {name: problems for name, _, problems in verify_heads([w])}
    assert rows["b"] == [] and any("cannot be read" in p for p in rows["a"]), rows


def test_weights_dir_help_says_where_heads_are_looked_for(tmp_path, monkeypatch):
    """`--weights-dir`'s help said "Default: $AIIDETECT_WEIGHTS, ~/.local/share/aiidetect/weights, and the
    repo's weights/": the user folder is searched only when $AIIDETECT_WEIGHTS is unset, and a given
    folder is the only one searched (the shipped univfd head too is left out)."""
    from aiidetect.commands.common import WeightsDirOpt
    from aiidetect.heads import shipped_weights_dirs, user_weights_dir, weights_dirs

    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.delenv("AIIDETECT_WEIGHTS", raising=False)
    assert weights_dirs() == [user_weights_dir(), *shipped_weights_dirs()]
    monkeypatch.setenv("AIIDETECT_WEIGHTS", f"{a}:{b}")
    assert weights_dirs() == [a, b, *shipped_weights_dirs()]
    assert weights_dirs([b]) == [b]
    text = " ".join(WeightsDirOpt.help.split())
    assert "given, only these are searched" in text
    assert ("$AIIDETECT_WEIGHTS (':'-separated), otherwise $XDG_DATA_HOME/aiidetect/weights, else "
            "~/.local/share/aiidetect/weights; then the shipped") in text


@pytest.mark.parametrize("env, first", [(":{x}", "{x}"), (":", None), ("{x}:{y}", "{x}")])
def test_a_new_head_goes_to_the_first_folder_scan_searches(tmp_path, monkeypatch, env, first):
    """`AIIDETECT_WEIGHTS=:/x` (an empty first entry, as `$A:/x` with A unset gives) had trainers and `weights
    install` write heads into the current folder, which scan never searches; empty entries are skipped,
    as the search skips them."""
    from aiidetect.heads import default_output_dir, new_heads_dir, user_weights_dir, weights_dirs

    x, y = tmp_path / "x", tmp_path / "y"
    monkeypatch.setenv("AIIDETECT_WEIGHTS", env.format(x=x, y=y))
    want = Path(first.format(x=x)) if first else user_weights_dir()
    assert new_heads_dir() == want == weights_dirs()[0]
    assert default_output_dir("h") == want / "h"


def test_a_head_file_that_cannot_be_read_is_a_problem_of_that_head(tmp_path, monkeypatch):
    """An unreadable head file (permissions, an I/O error) raised OSError out of verify_files, which
    load_head, `weights verify`, pack and install call: one head's file ended the whole command."""
    import numpy as np

    from aiidetect import heads

    heads.save_head(tmp_path / "h", {"weight": np.ones((1, 4), np.float32)}, {"name": "h", "detector": "linear"})
    m = heads.read_manifest(tmp_path / "h")

    def unreadable(p):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(heads, "sha256_file", unreadable)
    assert heads.verify_files(tmp_path / "h", m) == ["head.safetensors cannot be read (Permission denied)"]


def test_a_head_gets_its_files_mode_without_the_process_umask_being_set(tmp_path, monkeypatch):
    """The head's files' mode was worked out by setting the umask to 0 and back: a trainer called from a host's
    thread gave the host's other threads, creating files in that instant, mode bits they did not ask for."""
    import os
    import stat

    was = os.umask(0o027)
    try:
        def no_umask(mask):
            raise AssertionError(f"os.umask({mask:o}) called while saving a head")

        monkeypatch.setattr(os, "umask", no_umask)
        d = _head(tmp_path / "h")
    finally:
        monkeypatch.undo()
        os.umask(was)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()} == {"head.safetensors": 0o640,
                                                                           "manifest.json": 0o640}
