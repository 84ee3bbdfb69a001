"""`aiidetect cache info|clear` over every cache the tool keeps: the scan results, the backbone
features, the decisions of `aiidetect optimize` (folders with their int8 graphs) and weights_ids.sqlite.
The last two were neither listed nor cleared, and decisions for setups no scan can reach any more piled up."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli_in_process


def _decision(root, key: str, versions, size: int = 1000):
    from aiidetect import optimize as opt

    (root / key / opt.ONNX_SUBDIR).mkdir(parents=True)
    (root / key / opt.ONNX_SUBDIR / "model.onnx").write_bytes(b"x" * size)
    ident = {"format": opt.FORMAT, "format_version": opt.FORMAT_VERSION, "versions": versions}
    (root / key / opt.DECISION).write_text(json.dumps({"identity": ident, "status": "verified"}))
    (root / (key + ".lock")).write_bytes(b"")


def _cache(tmp_path, monkeypatch):
    from aiidetect import optimize as opt, weights_identity

    cache = tmp_path / "c"
    monkeypatch.setenv("AIIDETECT_CACHE", str(cache))
    root = cache / "optimize"
    _decision(root, "a" * 32, opt.versions())                                   # this installation's
    _decision(root, "b" * 32, {**opt.versions(), "aiidetect": "0.0.1"}, 5000)   # an older aiidetect's
    (root / ("c" * 32)).mkdir()                                                 # no decision.json
    (root / ("d" * 32 + ".lock")).write_bytes(b"")                              # a failed run's lock
    (root / "mine.sqlite").write_bytes(b"not the tool's")                       # not a decision: never touched
    (tmp_path / "w.bin").write_bytes(b"weights")
    weights_identity.file_sha256(tmp_path / "w.bin")
    return cache, root


def test_cache_info_lists_the_optimize_decisions_and_the_weights_identities(tmp_path, monkeypatch):
    cache, _ = _cache(tmp_path, monkeypatch)
    r = run_cli_in_process("cache", "info", "-f", "json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert list(got) == ["results", "features", "optimize", "weights-ids"]
    assert got["optimize"]["decisions"] == 3 and got["optimize"]["stale"] == 2
    assert got["optimize"]["bytes"] > 6000 and got["optimize"]["path"] == str(cache / "optimize")
    assert got["weights-ids"]["rows"] == 1 and got["weights-ids"]["aliases"] == 0 and got["weights-ids"]["bytes"] > 0
    table = run_cli_in_process("cache", "info").stdout
    assert "optimize    " in table and "3 decisions, 2 stale" in table and "1 rows, 0 aliases" in table


def test_cache_clear_removes_stale_decisions_then_every_cache_but_never_other_files(tmp_path, monkeypatch):
    cache, root = _cache(tmp_path, monkeypatch)
    r = run_cli_in_process("cache", "clear", "--stale")
    assert r.returncode == 0 and "cleared optimize (stale): 2 decisions" in r.stderr, r.stderr
    assert sorted(p.name for p in root.iterdir()) == sorted(["a" * 32, "a" * 32 + ".lock", "mine.sqlite"])
    assert run_cli_in_process("cache", "clear", "results", "--stale").returncode == 2
    r = run_cli_in_process("cache", "clear", "all")
    assert r.returncode == 0, r.stderr
    assert "cleared optimize: 1 decision" in r.stderr and "cleared weights-ids: 1 file" in r.stderr, r.stderr
    assert [p.name for p in root.iterdir()] == ["mine.sqlite"]
    assert sorted(p.name for p in cache.iterdir()) == ["optimize"] and (tmp_path / "w.bin").exists()


def test_a_decision_being_measured_is_left_and_learned_weights_identities_are_kept(tmp_path, monkeypatch):
    """An optimize holding its lock is measuring into its folder: clearing it would break that run. The
    aliases in weights_ids.sqlite (a tensor identity known to be the file a legacy head names) cannot be
    computed again without that file: clearing empties the digests and keeps them."""
    import fcntl
    import os

    from aiidetect import weights_identity

    cache, root = _cache(tmp_path, monkeypatch)
    weights_identity.remember_alias("tensors:x", "sha256:y")
    fd = os.open(root / ("a" * 32 + ".lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = run_cli_in_process("cache", "clear", "all")
    finally:
        os.close(fd)
    assert "1 left: an `aiidetect optimize` is measuring it" in r.stderr, r.stderr
    assert (root / ("a" * 32) / "decision.json").exists() and not (root / ("b" * 32)).exists()
    assert "cleared weights-ids: 1 rows" in r.stderr and "1 learned weights identities kept" in r.stderr
    assert weights_identity.known_aliases("tensors:x") == ["sha256:y"]
    info = json.loads(run_cli_in_process("cache", "info", "-f", "json").stdout)["weights-ids"]
    assert info["rows"] == 0 and info["aliases"] == 1


def test_links_and_odd_entries_in_the_decisions_folder_are_never_followed_nor_stop_a_clear(tmp_path, monkeypatch):
    """A decision folder that is a link to a folder outside the cache had its decision.json read (and
    counted current) by `cache info`; a folder or FIFO named like a lock file made `cache clear` fail
    half done (exit 2, "Is a directory"). Outside the cache nothing is read or removed."""
    import os

    from aiidetect import optimize as opt

    cache, root = _cache(tmp_path, monkeypatch)
    outside = tmp_path / "outside"
    _decision(outside, "e" * 32, opt.versions())                    # a current decision, elsewhere
    (root / ("e" * 32)).symlink_to(outside / ("e" * 32))
    (outside / "mine.json").write_text("{}")
    (root / ("a" * 32) / opt.DECISION).rename(outside / "current.json")
    (root / ("a" * 32) / opt.DECISION).symlink_to(outside / "current.json")
    (root / ("1" * 32 + ".lock")).mkdir()
    os.mkfifo(root / ("2" * 32 + ".lock"))
    reads = []
    real = opt.read_decision
    monkeypatch.setattr(opt, "read_decision", lambda p: reads.append(p) or real(p))
    info = json.loads(run_cli_in_process("cache", "info", "-f", "json").stdout)["optimize"]
    assert info["decisions"] == 4 and info["stale"] == 4, info
    assert not [p for p in reads if "outside" in str(p) or p.parent.is_symlink() or p.is_symlink()], reads
    r = run_cli_in_process("cache", "clear", "optimize")
    assert r.returncode == 0 and "cleared optimize: 4 decisions" in r.stderr, r.stderr
    assert [p.name for p in root.iterdir()] == ["mine.sqlite"]
    assert sorted(p.name for p in outside.rglob("*")) == sorted(
        ["e" * 32, "onnx-int8", "model.onnx", "decision.json", "mine.json", "current.json", "e" * 32 + ".lock"])


def test_an_optimize_taking_its_lock_as_a_clear_removes_it_holds_the_lock_file_there_now(tmp_path, monkeypatch):
    """`cache clear optimize` removes a decision's lock file while holding it. A run that had opened that
    file just before got the lock after the clear let go: on a file no longer there, so the next clear
    (or another run) took a new lock and removed the folder the run was measuring into."""
    import fcntl
    import os

    import pytest

    from aiidetect import optimize as opt

    folder = tmp_path / "optimize" / ("a" * 32)
    lock = folder.with_name(folder.name + ".lock")
    real = fcntl.flock
    calls = []

    def flock(fd, op):
        if not calls and op & fcntl.LOCK_EX:  # the clear removed the file between our open and our flock
            os.unlink(lock)
        calls.append(op)
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with opt._only_run(folder):
        monkeypatch.setattr(fcntl, "flock", real)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT)
        try:
            with pytest.raises(BlockingIOError):  # what the next clear or run finds: taken
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_a_decision_folder_nested_deeper_than_the_stack_is_counted_and_refused_with_a_reason(tmp_path, monkeypatch):
    """A folder a thousand levels deep in a decision (hostile contents) ended `cache info` in a
    RecursionError (exit 2); it is counted, and `cache clear` says what to remove."""
    import os

    cache, root = _cache(tmp_path, monkeypatch)
    deep = root / ("f" * 32)
    d = str(deep)
    os.mkdir(d)
    for _ in range(1100):  # os.makedirs recurses too
        d = os.path.join(d, "d")
        os.mkdir(d)
    (Path(d) / "x").write_bytes(b"12345")
    try:
        r = run_cli_in_process("cache", "info", "-f", "json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["optimize"]["decisions"] == 4
        r = run_cli_in_process("cache", "clear", "optimize")
        assert r.returncode == 2 and "is nested too deep to remove here; remove it by hand" in r.stderr, r.stderr
        assert "RecursionError" not in r.stderr
    finally:
        while d != str(deep.parent):  # from the bottom up: the test's own cleanup must not recurse either
            for name in os.listdir(d):
                os.unlink(os.path.join(d, name))
            os.rmdir(d)
            d = os.path.dirname(d)


def test_learned_weights_identities_survive_a_clear_on_a_full_disk(tmp_path, monkeypatch):
    """Emptying weights_ids.sqlite in place ends with VACUUM, which needs room for a copy of the file: on
    a full disk (when caches get cleared) its "database or disk is full" made clear remove the whole
    file, the learned aliases with it, which nothing can compute again."""
    import sqlite3
    from types import SimpleNamespace

    from aiidetect import caches, weights_identity

    _cache(tmp_path, monkeypatch)
    weights_identity.remember_alias("tensors:x", "sha256:y")

    class FullDisk:
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql.startswith("VACUUM"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def __enter__(self):
            return self.db.__enter__()

        def __exit__(self, *exc):
            return self.db.__exit__(*exc)

        def close(self):
            self.db.close()

    monkeypatch.setattr(caches, "sqlite3", SimpleNamespace(
        connect=lambda *a, **k: FullDisk(sqlite3.connect(*a, **k)), Error=sqlite3.Error,
        OperationalError=sqlite3.OperationalError))
    row = caches.clear_caches("weights-ids")[0]
    assert row["rows"] == 1 and row["aliases_kept"] == 1, row
    assert weights_identity.known_aliases("tensors:x") == ["sha256:y"]


def test_cache_clear_takes_one_of_its_fixed_values(tmp_path, monkeypatch):
    """`cache clear [what]` took free text: --help showed `<str>` and a typo reached the library. Its values are
    a choice like every other fixed-value option: listed in --help, a typo a usage error naming the valid ones."""
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "c"))
    r = run_cli_in_process("cache", "clear", "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0 and "<results|features|optimize|weights-ids|all>" in r.stdout, r.stdout
    r = run_cli_in_process("cache", "clear", "resluts")
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert "'resluts' is not one of 'results', 'features', 'optimize', 'weights-ids', 'all'" in " ".join(
        line.strip("│ ") for line in r.stderr.splitlines()), r.stderr
    assert not (tmp_path / "c").exists()
    assert run_cli_in_process("cache", "clear", "weights-ids").returncode == 0
