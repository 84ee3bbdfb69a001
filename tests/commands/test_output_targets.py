"""Where `--output` goes: a report is written whole and renamed into place, except where a
rename would do harm (a device or a FIFO someone reads), and never over the state an audit
keeps (the results store) or the file being read."""
from __future__ import annotations

import json
import os
import stat

import pytest
from PIL import Image

# in-process where a test is about what a command refuses or writes (a new interpreter each was ~1 s);
# the FIFO, link-and-mode and killed-run tests keep their own process
from conftest import jsonl, run_cli, run_cli_in_process


@pytest.fixture()
def img(tmp_path):
    p = tmp_path / "in" / "a.png"
    p.parent.mkdir()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(p)
    return p


def test_output_into_a_fifo_writes_to_its_reader(img, tmp_path):
    """`-o pipe` for another process (and, the same way, `-o /dev/null`, which a rename made a
    regular file when run as root): the report goes into the FIFO, which stays a FIFO."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    # Open for reading first (non-blocking), so the scan's open for writing does not wait and the
    # test cannot hang whatever the code under test does.
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = run_cli("scan", str(img), "-d", "metadata", "--no-cache", "-f", "jsonl", "-q", "-o", str(fifo))
        assert r.returncode == 0, r.stderr
        assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a regular file"
        try:
            got = os.read(rfd, 1 << 16).decode()
        except BlockingIOError:
            got = ""
    finally:
        os.close(rfd)
    assert [rec["file"] for rec in jsonl(got)] == [str(img)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.fifo"], "temporary file left behind"


def test_output_through_a_link_replaces_the_file_and_keeps_link_and_mode(img, tmp_path):
    real = tmp_path / "reports" / "run.json"
    real.parent.mkdir()
    real.write_text("[]\n")
    real.chmod(0o600)  # a private report stays private when it is written again
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    r = run_cli("scan", str(img), "-d", "metadata", "--no-cache", "-f", "json", "-q", "-o", str(link))
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert [rec["file"] for rec in json.loads(real.read_text())] == [str(img)]
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sorted(p.name for p in real.parent.iterdir()) == ["run.json"], "temporary file left behind"


def _one_line_error(r, *words):
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and lines and lines[-1].startswith("error:"), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and all(w in lines[-1] for w in words), r.stderr[-2000:]


def _store_files(db) -> int:
    s = run_cli("results", "summary", "--db", str(db), "-f", "json")
    assert s.returncode == 0, s.stderr
    return json.loads(s.stdout)["files"]


def test_output_never_replaces_the_results_store(img, tmp_path):
    """`-o audit.sqlite` for `--db audit.sqlite` (a slip of the keyboard) renamed the report over the
    store: the audit's durable copy gone, exit 0."""
    db = tmp_path / "audit.sqlite"
    base = ("scan", str(img), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    assert run_cli_in_process(*base).returncode == 0
    for out in (db, tmp_path / "audit.sqlite-wal", tmp_path / "." / "audit.sqlite"):
        _one_line_error(run_cli_in_process(*base, "-o", str(out)), "results store")
    assert _store_files(db) == 1
    pytest.importorskip("pyarrow")
    _one_line_error(run_cli_in_process("results", "parquet", "--db", str(db), "-o", str(db)), "results store")
    assert _store_files(db) == 1


def test_db_is_never_one_of_the_inputs(tmp_path):
    """SQLite takes an empty file for an empty database: `scan x.jpg --db x.jpg` made the input a store."""
    empty = tmp_path / "x.jpg"
    empty.write_bytes(b"")
    _one_line_error(run_cli_in_process("scan", str(empty), "-d", "metadata", "--no-cache", "--db", str(empty), "-q"),
                    "--db")
    assert empty.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg"]


def test_parquet_output_is_checked_and_never_left_half_written(img, tmp_path):
    pytest.importorskip("pyarrow")
    db = tmp_path / "audit.sqlite"
    assert run_cli_in_process("scan", str(img), "-d", "metadata", "--no-cache", "--db", str(db), "-q").returncode == 0
    names = lambda: sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm")))  # noqa: E731
    before = names()
    _one_line_error(run_cli_in_process("results", "parquet", "--db", str(db), "-o", str(tmp_path / "no" / "x.parquet")),
                    "does not exist")
    _one_line_error(run_cli_in_process("results", "parquet", "--db", str(db), "-o", str(tmp_path / "in")), "folder")
    assert names() == before, "a refused export left a file behind"
    r = run_cli_in_process("results", "parquet", "--db", str(db), "-o", str(tmp_path / "a.parquet"))
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "a.parquet").num_rows == 1
    assert names() == sorted(before + ["a.parquet"])


def test_report_output_over_the_saved_run_is_refused(img, tmp_path):
    """`report run.jsonl -o run.jsonl` opened the output first and truncated the run it was to read."""
    run = tmp_path / "run.jsonl"
    r = run_cli_in_process("scan", str(img), "-d", "metadata", "--no-cache", "-f", "jsonl", "-q", "-o", str(run))
    assert r.returncode == 0, r.stderr
    saved = run.read_bytes()
    _one_line_error(run_cli_in_process("report", str(run), "-o", str(run), "-q"), "input")
    assert run.read_bytes() == saved
    r = run_cli_in_process("report", str(run), "-o", str(tmp_path / "r.html"), "-q")
    assert r.returncode == 0 and (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>"), r.stderr


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_scan(img, tmp_path, monkeypatch):
    """A read-only or foreign folder was found only when the report was opened, after the model was
    loaded and the --db session opened (left 'running'), as an unexpected OSError naming the temporary
    file."""
    from pathlib import Path

    from aiidetect.api import Scanner, ScanOptions, UsageError
    from aiidetect.report.output import check_output

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    # what a read-only mount, or a folder of another user, answers (root passes a mode check)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro and mode & os.W_OK
                        else real_access(p, mode, **kw))
    with pytest.raises(UsageError, match="cannot be written"):
        Scanner(ScanOptions(detectors=["metadata"], cache=False)).candidates([str(img)], output=ro / "out.jsonl")
    check_output("/dev/null", [str(img)])  # a device is written into, not beside: its folder does not matter


def test_temporary_reports_of_killed_runs_are_removed(img, tmp_path):
    """kill -9 during `scan -o audit.jsonl` leaves `.audit.jsonl.<random>.tmp`, a hidden partial copy of
    the report; every stop and resume of a sweep added one. The next run into the same file removes
    those whose run is gone, never the file of a run still writing (it holds a lock)."""
    import fcntl
    import time

    out = tmp_path / "audit.jsonl"
    old = time.time() - 3600
    other = tmp_path / ".audit.jsonl.x.abcdefgh.tmp"  # another report's (audit.jsonl.x)
    dead = tmp_path / ".audit.jsonl.k1lled_9.tmp"
    live = tmp_path / ".audit.jsonl.st1llon8.tmp"
    for p in (dead, live, other):
        p.write_text('{"partial": ')
        os.utime(p, (old, old))
    fresh = tmp_path / ".audit.jsonl.jus7m4de.tmp"  # created a moment ago, its run not yet holding the lock
    fresh.write_text("")
    with open(live) as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run still writing it (html writes only at the end)
        r = run_cli("scan", str(img), "-d", "metadata", "--no-cache", "-f", "jsonl", "-q", "-o", str(out))
        assert r.returncode == 0, r.stderr
    assert [x["file"] for x in jsonl(out.read_text())] == [str(img)]
    assert not dead.exists(), "a killed run's temporary report was left behind"
    assert live.exists() and other.exists() and fresh.exists()


def test_a_report_gets_its_mode_without_the_process_umask_being_set(tmp_path, monkeypatch):
    """A new report's mode was worked out by setting the umask to 0 and back: in a host's other threads, a file
    created in that instant got mode bits it did not ask for (the umask is the process's). The temporary report
    is created with a plain open()'s mode instead; an existing report still keeps its own."""
    from aiidetect.report.output import atomic_output

    was = os.umask(0o027)
    try:
        def no_umask(mask):
            raise AssertionError(f"os.umask({mask:o}) called while writing a report")

        monkeypatch.setattr(os, "umask", no_umask)
        new, private = tmp_path / "new.json", tmp_path / "private.json"
        private.write_text("[]\n")
        private.chmod(0o600)
        for target in (new, private):
            with atomic_output(target) as fh:
                fh.write("[1]\n")
    finally:
        monkeypatch.undo()
        os.umask(was)
    assert {p.name: (stat.S_IMODE(p.stat().st_mode), p.read_text()) for p in tmp_path.iterdir()} == {
        "new.json": (0o640, "[1]\n"), "private.json": (0o600, "[1]\n")}


def test_a_dangling_link_as_output_names_the_folder_it_leads_to(tmp_path):
    """`-o report.json`, a link left pointing into a folder since removed: the refusal said `--output folder
    <the link's own folder> does not exist`, a folder the user could see was there."""
    from aiidetect.report.output import OutputError, check_output

    link = tmp_path / "report.json"
    link.symlink_to(tmp_path / "gone" / "report.json")
    with pytest.raises(OutputError) as e:
        check_output(link, [])
    gone = os.path.realpath(tmp_path / "gone")
    assert str(e.value) == f"--output folder {gone} (where the link {link} leads) does not exist"
