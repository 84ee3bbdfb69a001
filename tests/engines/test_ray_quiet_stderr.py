"""`scan --engine ray -q`: the line Ray's C++ core worker writes on this process's stderr for every model pool actor
is dropped there; every other line comes through, in order. No Ray needed: the filter is plain file descriptors."""
from __future__ import annotations

import os
import sys


def test_a_quiet_ray_scan_drops_the_pool_actor_notice_and_keeps_every_other_stderr_line(capfd, monkeypatch):
    """Under -q a model scan printed `E ... core_worker.cc:2465: Actor with class name:
    'MapWorker(MapBatches(_ModelStage))' ... has constructor arguments in the object store and max_restarts > 0`
    once per pool actor: Ray Data passes every pool actor its context by object reference, and C++ writes the
    line straight to fd 2, where no Python logging setting reaches."""
    from aiidetect.engines import ray as ray_engine

    # The process's own stderr, line-buffered, as the command line has it.
    monkeypatch.setattr(sys, "stderr", open(2, "w", buffering=1, closefd=False))
    notice = (b"[2026-12-02 10:05:30,981 E 18168 18168] core_worker.cc:2465: Actor with class name: "
              b"'MapWorker(MapBatches(_ModelStage))' and ID: '05738d915edb363ecae2f99f01000000' has constructor "
              b"arguments in the object store and max_restarts > 0. If the arguments in the object store go out of "
              b"scope or are lost, the actor restart will fail. See https://github.com/ray-project/ray/issues/53727 "
              b"for more details.\n")

    def records():
        os.write(2, b"before\n" + notice)
        yield 1
        print("a line of this process", file=sys.stderr)
        os.write(2, b"(raylet) a worker died\n" + notice.replace(b"_ModelStage", b"OtherStage") + b"last, unended")
        yield 2

    assert list(ray_engine._without_pool_notice(records())) == [1, 2]
    os.write(2, b"\nafter\n")
    other = notice.replace(b"_ModelStage", b"OtherStage").decode()  # not this scan's pool: kept
    want = f"before\na line of this process\n(raylet) a worker died\n{other}last, unended\nafter\n"
    assert capfd.readouterr().err == want


def test_a_line_of_ours_quoting_the_notice_is_kept(capfd, monkeypatch):
    """The notice was matched anywhere in a line: a message of ours naming a file called after it (a sender's
    choice) was dropped. Only Ray's own log line (its `[date time,ms E pid tid]` prefix) is."""
    from aiidetect.engines import ray as ray_engine

    monkeypatch.setattr(sys, "stderr", open(2, "w", buffering=1, closefd=False))
    quoted = ("note: reading /in/core_worker.cc:1: Actor with class name: 'MapWorker(MapBatches(_ModelStage))' and "
              "ID: 'ab' has constructor arguments in the object store and max_restarts > 0. .jpg failed\n")

    def records():
        os.write(2, quoted.encode())
        yield 1

    assert list(ray_engine._without_pool_notice(records())) == [1]
    assert capfd.readouterr().err == quoted


def test_the_last_words_of_a_scan_that_crashes_under_the_filter_reach_stderr(tmp_path):
    """The filter was a thread of the scan: a crash (Ray's C++ `Check failed` and its stack, then abort(); a
    faulthandler dump; os._exit after a last message) left what was written last in the pipe, unread, and stderr
    said nothing of why the scan died."""
    import subprocess

    script = tmp_path / "crash.py"
    script.write_text(
        "import os\n"
        "from aiidetect.engines import ray as ray_engine\n"
        "def records():\n"
        "    yield 1\n"
        "    os.write(2, b'[2026-12-02 10:05:31,001 C 1 1] core_worker.cc:9: Check failed: fatal\\n')\n"
        "    os.abort()\n"
        "    yield 2\n"
        "list(ray_engine._without_pool_notice(records()))\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode != 0
    assert b"Check failed: fatal\n" in r.stderr


def test_a_library_hosts_stderr_is_never_filtered(tmp_path, monkeypatch):
    """`Scanner(ScanOptions(engine="ray", quiet=True))` read the host's own fd 2 through a pipe while the model ran:
    every thread of a service, and its crash, went through the scan. Only the command line's process, the scan's
    own, is filtered."""
    from PIL import Image

    from aiidetect import api
    from aiidetect.engines import ray as ray_engine
    from conftest import run_cli_in_process

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    seen = []
    monkeypatch.setattr(ray_engine, "_import_ray", lambda: None)
    monkeypatch.setattr(ray_engine, "_connect", lambda *a, **k: None)
    monkeypatch.setattr(ray_engine, "connect", lambda *a, **k: None)

    def records(*a, **k):
        seen.append(k["drop_pool_notice"])
        yield from ()

    monkeypatch.setattr(ray_engine, "_records", records)
    opts = api.ScanOptions(detectors=["metadata"], engine="ray", quiet=True, cache=False, file_timeout=0)
    assert list(api.Scanner(opts).scan([str(tmp_path / "a.png")])) == []
    r = run_cli_in_process("scan", str(tmp_path / "a.png"), "-d", "metadata", "--engine", "ray", "-q", "-f", "jsonl",
                           "--no-cache", "--file-timeout", "0")
    assert r.returncode == 0, r.stderr
    assert seen == [False, True]
