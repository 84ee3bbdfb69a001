"""A hostile environment rather than hostile files: files written to while the scan reads them, disks
that fill up under the outputs. Each change lands at a chosen step through a hook, never a race."""
from __future__ import annotations

import errno
import hashlib
import io
import os

from PIL import Image

from conftest import jsonl, run_cli_in_process


def _bmp(colour) -> bytes:
    # Uncompressed: any mix of two versions still decodes, so only the read itself can catch it.
    b = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(b, "BMP")
    return b.getvalue()


def _during_reads(monkeypatch, path, act, times=None) -> None:
    """The reader of `path` gets its first bytes, then `act()` runs, then the reader gets the rest; at
    each read of it, or at the first `times` only."""
    real = os.fdopen
    done = []

    class Torn:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def read(self, n=-1):
            head = self.f.read(1000)
            if times is None or len(done) < times:
                done.append(act())
            return head + self.f.read()

    def fdopen(fd, *a, **k):
        f = real(fd, *a, **k)
        try:
            here = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return f
        return Torn(f) if here == str(path) else f

    monkeypatch.setattr(os, "fdopen", fdopen)


def _rewritten_mid_read(monkeypatch, path, new: bytes, times=None) -> None:
    """The file is written over in place (same inode, as an editor saving or `cp` onto it does) in the
    middle of each read: a writer still at work."""

    def write():
        with open(path, "r+b") as w:
            w.write(new)

    _during_reads(monkeypatch, path, write, times)


def test_a_file_written_to_while_being_read_is_not_judged(tmp_path, monkeypatch):
    old, new = _bmp((255, 0, 0)), _bmp((0, 0, 255))
    p = tmp_path / "photo.bmp"
    p.write_bytes(old)
    os.utime(p, (1e9, 1e9))  # at rest for years: the write moves its mtime whatever the clock's resolution
    _rewritten_mid_read(monkeypatch, p, new)
    r = run_cli_in_process("scan", str(p), "-d", "metadata", "--no-cache", "--format", "jsonl")
    rec = jsonl(r.stdout)[0]
    # Before: `uncertain`, a verdict on the red picture's first bytes and the blue one's rest, under a
    # SHA-256 of neither.
    assert r.returncode == 0 and rec["verdict"] == "error" and rec["error"]["code"] == "changed-while-read"
    assert rec["sha256"] is None and p.read_bytes() == new


def _guarded(monkeypatch, *args: str) -> int:
    """The CLI in this process through its real boundary (run_guarded), which turns what a command
    raises into the one line on stderr and the exit code."""
    import pytest

    from aiidetect.cli import app
    from aiidetect.commands import errors
    from conftest import _process_state_kept

    monkeypatch.setattr("sys.argv", ["aiidetect", *args])
    monkeypatch.setattr(errors, "DEBUG", False)
    with _process_state_kept(), pytest.raises(SystemExit) as e:
        errors.run_guarded(app)
    return e.value.code


def _disk_full(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_under_the_report_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    img = tmp_path / "in" / "photo.bmp"
    img.parent.mkdir()
    img.write_bytes(_bmp((0, 128, 0)))
    out = tmp_path / "out" / "run.jsonl"
    out.parent.mkdir()
    out.write_text("the last complete run\n")
    # Where a full disk (or a quota, NFS) often first says so: the report is written, not yet on disk.
    monkeypatch.setattr(os, "fsync", _disk_full)
    code = _guarded(monkeypatch, "scan", str(img), "-d", "metadata", "--no-cache", "-q", "-f", "jsonl", "-o", str(out))
    err = capsys.readouterr().err
    # Before: `aiidetect: error: OSError: [Errno 28] No space left on device (aiidetect --debug ... shows
    # the traceback)`, as for a bug, and no word of which file.
    assert code == 2 and err == (f"error: cannot write the report to {out}: No space left on device; nothing was "
                                 "written there (the file already there is kept)\n")
    assert os.listdir(out.parent) == ["run.jsonl"] and out.read_text() == "the last complete run\n"


class _FullStdout(io.TextIOBase):
    """stdout redirected to a file on a full disk (`scan ... > run.jsonl`)."""

    def writable(self) -> bool:
        return True

    write = flush = _disk_full


def test_a_full_disk_under_stdout_is_one_line(tmp_path, monkeypatch, capsys):
    img = tmp_path / "photo.bmp"
    img.write_bytes(_bmp((0, 128, 0)))
    db = tmp_path / "audit.sqlite"
    r = run_cli_in_process("scan", str(img), "-d", "metadata", "--no-cache", "-q", "-f", "jsonl", "--db", str(db))
    assert r.returncode == 0
    saved = tmp_path / "run.jsonl"
    saved.write_text(r.stdout)
    capsys.readouterr()
    for args in (("scan", str(img), "-d", "metadata", "--no-cache", "-q", "-f", "jsonl"), ("meta", str(img)),
                 ("results", "export", "--db", str(db), "-f", "jsonl"), ("report", str(saved), "-q")):
        monkeypatch.setattr("sys.stdout", _FullStdout())
        code = _guarded(monkeypatch, *args)
        assert (code, capsys.readouterr().err) == (2, "error: cannot write the report to standard output: No space "
                                                      "left on device\n"), args


def test_a_full_disk_under_a_new_head_is_one_line_naming_its_folder(tmp_path, monkeypatch):
    """What the trainers' commands print for a ValueError is one line; the OSError a full disk raised in
    the middle of a save was the bug-worded `OSError: [Errno 28] ...`, after the whole training."""
    import numpy as np
    import pytest

    from aiidetect import heads

    out = tmp_path / "weights" / "h"
    monkeypatch.setattr(heads, "_fsync", _disk_full)
    with pytest.raises(ValueError) as e:
        heads.save_head(out, {"weight": np.ones((1, 4), np.float32)}, {"name": "h", "detector": "linear"})
    assert str(e.value) == f"head h not written to {out}: No space left on device; the folder is as it was before"
    assert os.listdir(out.parent) == []  # nor a hidden half-written one


def test_a_file_caught_being_written_is_read_again_by_the_next_resume(tmp_path, monkeypatch):
    """The store keys a row by the size and mtime seen before the read. A writer that puts the date back
    when done (`cp -p`, `rsync -a --inplace`) leaves those as they were: the row of the mixed bytes then
    matched the file at rest, and every resume served it."""
    old, new = _bmp((255, 0, 0)), _bmp((0, 0, 255))
    p = tmp_path / "photo.bmp"
    p.write_bytes(old)
    os.utime(p, (1e9, 1e9))
    db = str(tmp_path / "audit.sqlite")
    args = ("scan", str(p), "-d", "metadata", "--no-cache", "--format", "jsonl", "--db", db)
    with monkeypatch.context() as m:
        _rewritten_mid_read(m, p, new)
        assert jsonl(run_cli_in_process(*args).stdout)[0]["error"]["code"] == "changed-while-read"
    p.write_bytes(old)
    os.utime(p, (1e9, 1e9))  # the writer done: the first version back, its date too
    rec = jsonl(run_cli_in_process(*args).stdout)[0]
    assert rec["error"] is None and rec["sha256"] == hashlib.sha256(old).hexdigest()


def test_a_full_disk_under_the_report_of_a_sweep_into_a_store_says_where_its_records_are(tmp_path, monkeypatch,
                                                                                        capsys):
    img = tmp_path / "in" / "photo.bmp"
    img.parent.mkdir()
    img.write_bytes(_bmp((0, 128, 0)))
    out, db = tmp_path / "run.jsonl", tmp_path / "audit.sqlite"
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _disk_full)
        code = _guarded(m, "scan", str(img), "-d", "metadata", "--no-cache", "-q", "-f", "jsonl", "-o", str(out),
                        "--db", str(db))
    assert code == 2 and capsys.readouterr().err.endswith(
        f"; the records scanned are in the results store {db}: `aiidetect results export --db {db}` writes them, "
        "and the same command resumes after them\n")
    r = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl")
    assert [x["file"] for x in jsonl(r.stdout)] == [str(img)] and not out.exists()


def test_a_full_disk_under_stdout_of_a_sweep_into_a_store_says_where_its_records_are(tmp_path, monkeypatch,
                                                                                       capsys):
    """`scan --db audit.sqlite > run.jsonl` said only that stdout was full, where `-o run.jsonl` named the store."""
    img = tmp_path / "photo.bmp"
    img.write_bytes(_bmp((0, 128, 0)))
    db = tmp_path / "audit.sqlite"
    monkeypatch.setattr("sys.stdout", _FullStdout())
    code = _guarded(monkeypatch, "scan", str(img), "-d", "metadata", "--no-cache", "-q", "-f", "jsonl", "--db", str(db))
    assert (code, capsys.readouterr().err) == (2, (
        f"error: cannot write the report to standard output: No space left on device; the records scanned are in "
        f"the results store {db}: `aiidetect results export --db {db}` writes them, and the same command resumes "
        "after them\n"))
    # the record whose write failed is not stored as done: the same command, to a stdout with room, gives it
    r = run_cli_in_process("scan", str(img), "-d", "metadata", "--no-cache", "-q", "-f", "jsonl", "--db", str(db))
    assert [x["file"] for x in jsonl(r.stdout)] == [str(img)]


class _FlushFails(io.StringIO):
    """stdout into a file on a disk that is full by the time its buffer is written out."""

    def flush(self):
        _disk_full()


def test_a_full_disk_under_any_command_s_stdout_is_one_line(tmp_path, monkeypatch, capsys):
    """Every command, however it prints (click's echo here), not only the report writers: `cache info >
    x.txt` on a full disk read `aiidetect: error: OSError: [Errno 28] ...`, as for a bug, naming nothing."""
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    for stdout in (_FullStdout(), _FlushFails()):
        monkeypatch.setattr("sys.stdout", stdout)
        code = _guarded(monkeypatch, "cache", "info")
        # _FlushFails: what was still buffered at the end is written inside the guard (the interpreter's
        # last flush would say "Exception ignored ..." and exit 120, or the run looked done with exit 0).
        assert (code, capsys.readouterr().err) == (2, "error: cannot write the report to standard output: No space "
                                                      "left on device\n"), stdout



def test_a_file_size_limit_under_a_head_s_tensors_is_the_same_one_line(tmp_path):
    """A real limit met by the tensors file, the head's bulk (where a disk usually fills): safetensors'
    own writer said it as SafetensorError, which no OSError handler knew, so the bug-worded line."""
    import resource
    import signal

    import numpy as np
    import pytest

    from aiidetect import heads

    out = tmp_path / "weights" / "h"
    tensors = {"weight": np.ones((1, 8192), np.float32)}  # 32 KiB, over the limit below
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, limit[1]))
        with pytest.raises(ValueError) as e:
            heads.save_head(out, tensors, {"name": "h", "detector": "linear"})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, xfsz)
    assert str(e.value) == f"head h not written to {out}: File too large; the folder is as it was before"
    assert os.listdir(out.parent) == []


def test_a_change_of_a_file_s_metadata_alone_during_the_read_is_judged(tmp_path, monkeypatch):
    """A hard link made (a dedup pass, `cp -al`), a chmod, a tag in an extended attribute: the ctime moves,
    the bytes do not. The second read finds the file at rest."""
    data = _bmp((0, 128, 0))
    p = tmp_path / "photo.bmp"
    p.write_bytes(data)
    _during_reads(monkeypatch, p, lambda: os.link(p, tmp_path / "linked.bmp"), times=1)
    rec = jsonl(run_cli_in_process("scan", str(p), "-d", "metadata", "--no-cache", "--format", "jsonl").stdout)[0]
    assert rec["error"] is None and rec["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_writer_done_during_the_first_read_gives_its_version_whole(tmp_path, monkeypatch):
    old, new = _bmp((255, 0, 0)), _bmp((0, 0, 255))
    p = tmp_path / "photo.bmp"
    p.write_bytes(old)
    os.utime(p, (1e9, 1e9))
    _rewritten_mid_read(monkeypatch, p, new, times=1)
    rec = jsonl(run_cli_in_process("scan", str(p), "-d", "metadata", "--no-cache", "--format", "jsonl").stdout)[0]
    assert rec["error"] is None and rec["sha256"] == hashlib.sha256(new).hexdigest()


def test_a_file_whose_size_is_not_its_length_is_read(tmp_path):
    """/sys files say 4096 bytes and hold a few: two alike reads, nothing moved, are one version (it was
    `changed-while-read`, scanned again on every resume for ever)."""
    import pytest

    from pathlib import Path

    from aiidetect.decode import read_bytes

    sys_file = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not sys_file.is_file() or sys_file.stat().st_size == len(sys_file.read_bytes()):
        pytest.skip("no /sys file whose size is not its length here")
    assert read_bytes(sys_file) == sys_file.read_bytes()


def test_a_stream_set_over_stdout_during_the_run_is_left_in_place(monkeypatch):
    """--engine ray sets its own over stdout for the messages Ray prints at exit (after the boundary
    returns): putting the original back at the boundary sent those into the records."""
    import sys

    import pytest

    from aiidetect.commands import errors

    monkeypatch.setattr("sys.stdout", io.StringIO())
    ray_s = io.StringIO()

    def app():
        sys.stdout = ray_s
        sys.exit(0)

    with pytest.raises(SystemExit):
        errors.run_guarded(app)
    assert sys.stdout is ray_s


class _UnreadableStdin(io.TextIOBase):
    """A saved run piped from a disk that fails under it."""

    def readable(self) -> bool:
        return True

    def read(self, *a):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    readline = read


def test_a_saved_run_that_cannot_be_read_is_not_called_a_failed_write(tmp_path, monkeypatch, capsys):
    """`report` took an I/O error reading the saved run for one writing the report (neither has a file name):
    `cannot write the report to report.html: Input/output error`, the user sent to the wrong disk."""
    out = tmp_path / "report.html"
    for args in (("report", "-"), ("report", "-", "-o", str(out))):
        monkeypatch.setattr("sys.stdin", _UnreadableStdin())
        code = _guarded(monkeypatch, *args)
        assert (code, capsys.readouterr().err) == (2, "error: cannot read -: Input/output error\n"), args
    assert os.listdir(tmp_path) == []


def test_a_saved_run_on_a_closed_stdin_is_said_plainly(tmp_path, monkeypatch, capsys):
    """`report - <&-` (stdin closed, as under some schedulers) ended with an AttributeError said as a bug."""
    monkeypatch.setattr("sys.stdin", None)
    code = _guarded(monkeypatch, "report", "-", "-o", str(tmp_path / "r.html"))
    assert (code, capsys.readouterr().err) == (2, "error: cannot read -: stdin is closed; pipe the saved run in or "
                                                  "name its file\n")
    assert os.listdir(tmp_path) == []


class _FullRaw(io.RawIOBase):
    """The bytes under stdout, on a full disk (`results parquet -o - > x.parquet`)."""

    def writable(self) -> bool:
        return True

    def write(self, b):
        _disk_full()


def test_a_full_disk_under_dash_o_dash_is_said_by_the_run_s_stdout_guard(tmp_path, monkeypatch, capsys):
    """`-o -` (atomic_output("-")) had a full-disk guard of its own around the whole report, besides the run's
    guard around every write to stdout (StdoutWrites): it is gone, and the line is the same, text or bytes."""
    img = tmp_path / "photo.bmp"
    img.write_bytes(_bmp((0, 128, 0)))
    line = "error: cannot write the report to standard output: No space left on device\n"
    for stdout in (_FullStdout(), _FlushFails()):
        monkeypatch.setattr("sys.stdout", stdout)
        code = _guarded(monkeypatch, "scan", str(img), "-d", "metadata", "--no-cache", "-q", "-f", "jsonl", "-o", "-")
        assert (code, capsys.readouterr().err) == (2, line), stdout
    import pytest

    pytest.importorskip("pyarrow")
    db = tmp_path / "audit.sqlite"
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert _guarded(monkeypatch, "scan", str(img), "-d", "metadata", "--no-cache", "-q", "--db", str(db)) == 0
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(_FullRaw()))
    code = _guarded(monkeypatch, "results", "parquet", "--db", str(db), "-o", "-")
    assert (code, capsys.readouterr().err) == (2, line)


def test_a_small_file_is_read_under_a_tight_address_space(tmp_path):
    """`ulimit -v` on a shared server (or strict overcommit): every read asked for the whole --max-bytes
    (512 MiB) before reading a byte, so a 3 KB photo scanned beside others came back `too-large`, "out of
    memory while reading", with a verdict of `error` a resumed --db run keeps. A real process: the limit
    is the point, and not one to set on the test runner."""
    import subprocess
    import sys

    import pytest

    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc here to size the address space by")
    small = tmp_path / "small.png"
    Image.new("RGB", (32, 32), (9, 99, 199)).save(small)
    code = (
        "import resource, sys\n"
        "from aiidetect.decode import DecodeLimits, read_bytes\n"
        "from aiidetect.hashing import read_regular\n"
        "vm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize:')][0] * 1024\n"
        "room = vm + (128 << 20)\n"  # far under the 512 MiB a read asked for, far over what it needs
        "resource.setrlimit(resource.RLIMIT_AS, (room, resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
        "data = read_bytes(sys.argv[1], DecodeLimits())\n"
        "assert len(data) == len(read_regular(sys.argv[1], 1 << 30)) > 0\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(small)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-1500:]


def test_a_file_longer_than_its_size_is_read_to_the_limit():
    """The size fstat gave is only where the read starts: a file that grew (or a /sys file that says 4096)
    is read on, in chunks, up to the limit and one byte past it, which tells the caller it is over."""
    from aiidetect.hashing import CHUNK, read_at_most

    body = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    assert read_at_most(io.BytesIO(body), len(body) + 10, 100) == body
    assert read_at_most(io.BytesIO(body), 2 * CHUNK + 1, 100) == body[:2 * CHUNK + 1]
    assert read_at_most(io.BytesIO(body[:50]), 1 << 40, 4096) == body[:50]
    assert read_at_most(io.BytesIO(b""), 10, 0) == b""


def test_a_decode_thread_that_cannot_start_leaves_the_scan_to_the_others(tmp_path, monkeypatch):
    """`ulimit -u` on a shared server counts every thread of the user's processes: the second decode
    worker failing to start ("can't start new thread") ended the scan, exit 2, not one record written.
    The workers already running take the queued files."""
    import threading

    for i in range(6):
        Image.new("RGB", (16, 16), (i, 40, 80)).save(tmp_path / f"{i}.png")
    real, started = threading.Thread.start, []

    def start(self):
        if self.name.startswith("decode"):
            started.append(self.name)
            if len(started) > 1:
                raise RuntimeError("can't start new thread")
        return real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    r = run_cli_in_process("scan", str(tmp_path), "-d", "metadata", "-f", "jsonl", "--workers", "4",
                           "--no-cache", "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(os.path.basename(x["file"]) for x in jsonl(r.stdout)) == [f"{i}.png" for i in range(6)]
