"""A file that ends the process (a native decoder's crash, the OOM killer, a hang ended by kill -9)
must not stop an audit with --db for good: read alone after one death, set aside after two."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from aiidetect.crashguard import CrashGuard, Seen, _ReadersWriter, recover, slot_files

_CRASH_ON_POISON = """
import ctypes, os, sys
from aiidetect import pixels
real = pixels.read_sample
def read_sample(path, *a, **k):
    if os.path.basename(path) == "poison.png":
        ctypes.string_at(0)                         # a real segfault, as a C decoder's on a crafted file
    return real(path, *a, **k)
pixels.read_sample = read_sample
sys.argv = ["aiidetect", *sys.argv[1:]]
from aiidetect.cli import main
main()
"""


def test_a_file_that_crashes_the_scan_is_read_alone_then_set_aside(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (i, 2 * i, 3)).save(src / f"a{i:02d}.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(src / "poison.png")
    db = tmp_path / "audit.sqlite"
    cmd = [sys.executable, "-c", _CRASH_ON_POISON, "scan", str(src), "-d", "metadata", "--no-cache", "--db", str(db),
           "-f", "jsonl", "--workers", "4"]
    runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=120) for _ in range(3)]
    # Before: every run died at the same file, and the audit could never finish.
    assert [r.returncode for r in runs[:2]] == [-signal.SIGSEGV, -signal.SIGSEGV]
    assert "ended while reading" in runs[1].stderr and "poison.png" in runs[1].stderr
    assert runs[2].returncode == 0, runs[2].stderr[-2000:]
    recs = {os.path.basename(d["file"]): d for d in map(json.loads, runs[2].stdout.splitlines())}
    assert len(recs) == 13
    assert recs["poison.png"]["error"]["code"] == "crashed" and recs["poison.png"]["verdict"] == "error"
    assert all(d["error"] is None for name, d in recs.items() if name != "poison.png")  # neighbours cleared
    with sqlite3.connect(db) as c:
        assert [s for (s,) in c.execute("SELECT status FROM sessions ORDER BY session_id")] == \
            ["died", "died", "complete"]
        # the neighbours of the first death were read alone to the end: their strikes are gone
        assert [os.path.basename(p) for (p,) in c.execute("SELECT path FROM crashes")] == ["poison.png"]
    assert slot_files(str(db)) == []
    (src / "poison.png").touch()                      # a new mtime: tried once more (and here it crashes again)
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == -signal.SIGSEGV


def _reading_in_a_thread(g: CrashGuard, path: str) -> tuple[threading.Thread, threading.Event]:
    """A thread inside g.watch(path) until the returned event is set (returned once it is inside)."""
    inside, release = threading.Event(), threading.Event()

    def reading():
        with g.watch(path):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=reading)
    t.start()
    inside.wait(5)
    return t, release


def test_slots_name_only_the_files_being_read_and_a_live_session_is_left_alone(tmp_path):
    store = str(tmp_path / "s.sqlite")
    seen = {"/x/a.png": Seen("/x/a.png", 10, 1), "/x/b.png": Seen("/x/b.png", 20, 2)}
    g = CrashGuard(store, 7, {"/x/b.png": (20, 2, 1)}, seen.get)
    with g.watch("/x/a.png"):
        pass                                        # done: its slot is cleared
    t, release = _reading_in_a_thread(g, "/x/b.png")
    assert recover(store) == ([], [])               # locked: its session is alive
    os.close(os.dup(g._fd))
    # what a dead session leaves: the slot file, no lock (read as another process would after a crash)
    dead = tmp_path / "s.sqlite-reading-3"
    dead.write_bytes(open(g.path, "rb").read())
    found, ids = recover(store)
    assert found == [Seen("/x/b.png", 20, 2)] and ids == [3] and not dead.exists()
    release.set()
    t.join()
    assert g.refused("/x/b.png") is None            # one strike: read (alone), not refused
    g.strikes["/x/b.png"] = (20, 2, 2)
    assert "touch" in g.refused("/x/b.png")
    g.strikes["/x/b.png"] = (20, 3, 2)              # another mtime: not the file that crashed
    assert g.refused("/x/b.png") is None
    g.close()
    assert not os.path.exists(g.path)


def test_a_file_with_a_strike_is_read_with_no_other_beside_it():
    lock, inside, most, mu = _ReadersWriter(), [0, 0], [0], threading.Lock()

    def job(alone: bool):
        with lock.alone() if alone else lock.shared():
            with mu:
                inside[alone] += 1
                if alone:
                    most[0] = max(most[0], inside[0] + inside[1])
            threading.Event().wait(0.005)
            with mu:
                inside[alone] -= 1

    ts = [threading.Thread(target=job, args=(i % 5 == 0,)) for i in range(40)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert most[0] == 1


def _dead_slots(tmp_path, sid: int, seen: Seen) -> str:
    """The slot file a session killed while reading `seen` leaves (unlocked)."""
    store = str(tmp_path / "s.sqlite")
    g = CrashGuard(store, 99, {}, lambda p: seen)
    with g.watch(seen.key):
        data = open(g.path, "rb").read()
    g.close()
    (tmp_path / f"s.sqlite-reading-{sid}").write_bytes(data)
    return store


def test_two_sessions_starting_together_count_a_death_once(tmp_path, monkeypatch):
    import fcntl

    store = _dead_slots(tmp_path, 3, Seen("/x/p.png", 5, 1))
    real, other = fcntl.flock, []

    def flock(fd, op):
        if not other:  # the other session opened the file too, then recovered and removed it first
            other.append(None)
            other[0] = recover(store)
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    mine = recover(store)
    # Before: both read the removed file's slots, and one crash was two strikes (the file set aside).
    assert other == [([Seen("/x/p.png", 5, 1)], [3])] and mine == ([], [])


def test_a_slot_file_that_cannot_be_removed_strikes_nothing(tmp_path, monkeypatch):
    store = _dead_slots(tmp_path, 3, Seen("/x/p.png", 5, 1))

    def unlink(path, *a, **k):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "unlink", unlink)
    # A read-only folder: counted at every session, one crash would refuse the file at the next run.
    assert recover(store) == ([], []) and recover(store) == ([], [])


def test_a_new_session_slot_file_is_never_seen_unlocked(tmp_path, monkeypatch):
    import fcntl

    store = str(tmp_path / "s.sqlite")
    real, seen_by_other = fcntl.flock, []

    def flock(fd, op):
        if not seen_by_other:  # another session starts and recovers between the file's creation and its lock
            seen_by_other.append(None)
            seen_by_other[0] = recover(store)
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    g = CrashGuard(store, 4, {}, lambda p: None)   # before: its flock failed (OSError), or locked a removed file
    monkeypatch.setattr(fcntl, "flock", real)
    assert seen_by_other == [([], [])] and recover(store) == ([], []) and slot_files(store) == [g.path]
    g.close()
    assert slot_files(store) == [] and os.listdir(tmp_path) == []


def test_closing_the_guard_while_a_file_is_being_read(tmp_path):
    g = CrashGuard(str(tmp_path / "s.sqlite"), 1, {}, lambda p: Seen(p, 1, 1))
    inside, release, errors = threading.Event(), threading.Event(), []

    def reading():
        try:
            with g.watch("/x/a.png"):
                inside.set()
                release.wait(5)
        except Exception as exc:  # noqa: BLE001 - what the decode thread would die of
            errors.append(exc)

    t = threading.Thread(target=reading)
    t.start()
    inside.wait(5)
    g.close()           # a scan stopped early: the session closes before the decode threads are joined
    fd = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)  # may take the slot file's descriptor number
    release.set()
    t.join()
    assert errors == [] and os.pread(fd, 16, 0) == b""
    os.close(fd)
    with g.watch("/x/b.png"):
        pass


def test_a_slot_holds_the_longest_path_a_file_can_have(tmp_path):
    from aiidetect.store import path_key

    # PATH_MAX bytes of a name that is not UTF-8: its key is the escaped display form plus base64, and JSON
    # escapes it once more (26 kB). Before, such a file's slot was not written: a crafted file named so
    # stopped the audit at every run, unguarded.
    name = "/" + "/".join([os.fsdecode(b"\x01\xff" * 127)] * 16)
    store = _dead_slots(tmp_path, 3, Seen(path_key(name), 5, 1))
    assert recover(store) == ([Seen(path_key(name), 5, 1)], [3])


def test_a_struck_file_read_to_the_end_is_cleared_and_a_foreign_hosts_slots_are_left(tmp_path):
    """A neighbour of the first death kept its strike for good: read alone in every later run, and set
    aside by one unrelated kill -9. A store on a share: another machine's live session holds a lock
    this machine cannot see; its slots must not be taken for a dead session's."""
    import pytest

    store = str(tmp_path / "s.sqlite")
    seen = {"/x/n.png": Seen("/x/n.png", 5, 1), "/x/p.png": Seen("/x/p.png", 6, 1)}
    cleared = []
    g = CrashGuard(store, 4, {"/x/n.png": (5, 1, 1), "/x/p.png": (6, 1, 1)}, seen.get, cleared=cleared.append)
    with g.watch("/x/n.png"):
        pass
    with pytest.raises(KeyboardInterrupt), g.watch("/x/p.png"):   # stopped while reading: nothing learnt
        raise KeyboardInterrupt
    assert cleared == ["/x/n.png"] and "/x/n.png" not in g.strikes and "/x/p.png" in g.strikes
    g.close()
    other = tmp_path / "s.sqlite-reading-9"
    other.write_bytes(b"00000018" + b'["/x/q.png", 1, 2]')
    assert recover(store, elsewhere=lambda sid: sid == 9) == ([], []) and other.exists()
    assert recover(store) == ([Seen("/x/q.png", 1, 2)], [9]) and not other.exists()


def _hang_on_hang_png(monkeypatch, release: threading.Event, stuck: threading.Event | None = None) -> None:
    """The decoder stuck on any file named hang.png (`stuck` set) until `release`: the test's own bound of 30 s,
    never reached when what the test checks works."""
    from aiidetect.pipeline.stages import DecodeStage

    real = DecodeStage.__call__

    def decode(self, path, index, expect=None):
        if path.endswith("hang.png"):
            if stuck is not None:
                stuck.set()
            release.wait(30)
        return real(self, path, index, expect)

    monkeypatch.setattr(DecodeStage, "__call__", decode)


def test_a_read_that_never_ends_ends_the_local_scan_naming_its_file(tmp_path, monkeypatch):
    """A decode thread stuck on a file (a decoder stuck on a crafted file, a filesystem that does not answer)
    hung the local scan for ever, and with --db every resume too: nothing struck the file. Past --file-timeout
    the process is now ended, as a crash would (its slot left in place for the next session to strike)."""
    from conftest import run_cli_in_process

    from aiidetect import crashguard

    for name in ("a", "hang", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    release = threading.Event()
    ended: list[str] = []

    def end(path, took):
        ended.append(path)
        release.set()

    _hang_on_hang_png(monkeypatch, release)
    monkeypatch.setattr(crashguard, "_end_process", end)
    r = run_cli_in_process("scan", str(tmp_path), "-d", "metadata", "--no-cache", "-f", "jsonl", "-q",
                           "--file-timeout", "0.2")
    assert ended == [str(tmp_path / "hang.png")], r.stderr


_IMPORTS_IN_READS = """
import atexit, os, sys
from aiidetect.pipeline.stages import DecodeStage
real, imported = DecodeStage.__call__, []
def decode(self, path, index, expect=None):
    before = set(sys.modules)
    try:
        return real(self, path, index, expect)
    finally:
        imported.extend(sorted(set(sys.modules) - before))
DecodeStage.__call__ = decode
atexit.register(lambda: print("imported in reads:", imported, file=sys.stderr, flush=True))
if sys.argv[1] == "library":
    from aiidetect import api
    print(len(list(api.scan(sys.argv[2], detectors="metadata", cache=False, workers=1, file_timeout=60))))
else:
    sys.argv = ["aiidetect", "scan", sys.argv[2], "-d", "metadata", "--no-cache", "-q", "-f", "jsonl",
                "--file-timeout", "60"]
    from aiidetect.cli import main
    main()
"""


@pytest.mark.parametrize("way", ["library", "cli"])
def test_the_first_read_under_a_deadline_pays_for_no_imports(tmp_path, way):
    """The first file's read imported Pillow's plugins, the HEIF opener and the metadata parsers (0.3 s on a
    loaded machine, 0.6 s more at a first HEIC): on that file's clock, so a short file_timeout gave a
    legitimate file up (`timeout`, kept by a resume with db) or ended the command line's scan. They are done
    before the deadline's first clock starts: no read imports a module. In a new interpreter: this one has
    them all by now."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg", exif=exif, xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    r = subprocess.run([sys.executable, "-c", _IMPORTS_IN_READS, way, str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "imported in reads: []" in r.stderr, r.stderr[-2000:]


def test_the_read_deadline_names_the_oldest_read_past_it_and_ends_with_2(monkeypatch, capsys):
    from aiidetect import crashguard

    now = [100.0]
    d = crashguard.ReadDeadline(10, expire=lambda p, t: None, clock=lambda: now[0])
    d._thread = object()  # no watcher thread: overdue() is asked directly
    with d.reading("/x/a.png"):
        now[0] += 5
        with d.reading("/x/b.png"):
            assert d.overdue() is None
            now[0] += 6
            assert d.overdue() == ("/x/a.png", 11.0)
        assert d.overdue() == ("/x/a.png", 11.0)
    assert d.overdue() is None

    def exit_(code):
        raise SystemExit(code)

    monkeypatch.setattr(crashguard.os, "_exit", exit_)
    with pytest.raises(SystemExit) as stop:
        crashguard._end_process("/x/a\x1b[2J.png", 61.2)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "reading /x/a" in err and "more than 61 s (--file-timeout)" in err
    assert "\x1b" not in err and "--db" in err


def test_the_library_ends_its_process_only_when_asked(tmp_path, monkeypatch):
    """The process-ending deadline (and its watchdog) ends the process it runs in; through the library that is
    the caller's (a service), so ScanOptions sets no local deadline unless a number is given, and one that
    gives up reads rather than the process unless end_process_on_timeout says otherwise (the command line's)."""
    from aiidetect import api, crashguard

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    made: list[tuple[str, float]] = []

    def spy(real):
        class Spy(real):
            def __init__(self, seconds, *a, **k):
                made.append((real.__name__, seconds))
                super().__init__(seconds, *a, **k)
        return Spy

    monkeypatch.setattr(crashguard, "ReadDeadline", spy(crashguard.ReadDeadline))
    monkeypatch.setattr(crashguard, "AbandoningDeadline", spy(crashguard.AbandoningDeadline))
    recs = list(api.scan(tmp_path, detectors="metadata", cache=False))
    assert len(recs) == 1 and made == []
    recs = list(api.scan(tmp_path, detectors="metadata", cache=False, file_timeout=30))
    assert len(recs) == 1 and made == [("AbandoningDeadline", 30)]
    recs = list(api.scan(tmp_path, detectors="metadata", cache=False, file_timeout=30, end_process_on_timeout=True))
    assert len(recs) == 1 and made[1:] == [("ReadDeadline", 30)]


def _children() -> list[int]:
    """This process's child processes (a watchdog), from /proc."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(b")", 1)[1].split()[1]) == os.getpid():
                kids.append(int(d))
    return kids


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="lists child processes in /proc")
def test_a_library_scan_gives_up_a_read_past_its_deadline_and_its_process_goes_on(tmp_path, monkeypatch):
    """A library scan with file_timeout ended its caller's process (exit 2: a web service with every request in
    flight) at a read that did not return, and ran a watchdog child process that could SIGKILL it. Now the read
    is abandoned past the deadline, the file's record is `timeout`, the scan goes on, and no process is started;
    none is left behind by a scan with end_process_on_timeout that its caller stops by raising."""
    from aiidetect import api, crashguard

    for name in ("a", "hang", "z"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    release = threading.Event()
    exits: list[int] = []

    def exit_(code):  # the old way: the process ended (the hang let go, so that the old code fails, not hangs)
        exits.append(code)
        release.set()

    _hang_on_hang_png(monkeypatch, release)
    monkeypatch.setattr(crashguard.os, "_exit", exit_)
    children = []
    try:
        recs = []
        for rec in api.scan(tmp_path, detectors="metadata", cache=False, workers=1, batch_size=1, file_timeout=0.3):
            recs.append(rec)
            children += _children()
    finally:
        release.set()
    assert exits == [] and children == []
    assert [(os.path.basename(r.file), r.error.code if r.error else None) for r in recs] == [
        ("a.png", None), ("hang.png", "timeout"), ("z.png", None)]
    took = float(recs[1].error.message.split("file_timeout (0.3 s; ", 1)[1].split(" s ", 1)[0])
    assert took >= 0.3  # not "0 s when given up" under a deadline of 0.3 s
    with pytest.raises(KeyError):
        for _ in api.scan(tmp_path, detectors="metadata", cache=False, workers=1, file_timeout=30,
                          end_process_on_timeout=True):
            raise KeyError("the caller's own error")
    assert _children() == []


def _hang_in_budget(monkeypatch, release: threading.Event | list) -> None:
    """The per-file detectors stuck on any file named hang*.png until `release` (the test's bound: 30 s), inside
    the decode budget its read holds (a metadata parser on a crafted file); a list holds the event in force
    (_resume_in_a_new_process)."""
    from aiidetect.pipeline.stages import DecodeStage

    real = DecodeStage._file_dets

    def file_dets(self, s):
        if os.path.basename(s.path).startswith("hang"):
            (release[0] if isinstance(release, list) else release).wait(30)
        return real(self, s)

    monkeypatch.setattr(DecodeStage, "_file_dets", file_dets)


def _resume_in_a_new_process(gate: list) -> None:
    """Between runs of a results store that model a resume in a new process: the reads the earlier runs gave up
    end (a new process has none of their threads; in this one they would count against the next run, which
    refuses to pile more up: crashguard.reads_given_up), and the files that hang hang again from now on."""
    from aiidetect import crashguard

    gate[0].set()
    for _ in range(1000):  # the test's bound: 10 s, when the reads let go end at once
        if not crashguard.reads_given_up():
            break
        time.sleep(0.01)
    assert crashguard.reads_given_up() == []
    gate[0] = threading.Event()


def test_reads_given_up_give_their_decode_budget_back(tmp_path, monkeypatch):
    """Two reads given up past file_timeout held the whole decode budget (two --max-pixels images) while their
    threads ran on, and every later file waited for it with its clock stopped: a library scan hung for ever
    on two crafted files. What a read given up holds is now given back; the scan goes on."""
    from aiidetect import api

    for name in ("a", "hang1", "hang2", "z"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    release = threading.Event()
    _hang_in_budget(monkeypatch, release)
    recs: list = []

    def scan():
        recs.extend(api.scan(tmp_path, detectors="metadata", cache=False, workers=2, batch_size=1, file_timeout=0.3,
                             max_pixels=64))  # a budget of two 8x8 images

    t = threading.Thread(target=scan, daemon=True)
    try:
        t.start()
        t.join(20)  # the test's bound: the scan ended at once when it works
        assert not t.is_alive(), "the scan waits for the budget that the reads given up hold"
    finally:
        release.set()
    assert [(os.path.basename(r.file), r.error.code if r.error else None) for r in recs] == [
        ("a.png", None), ("hang1.png", "timeout"), ("hang2.png", "timeout"), ("z.png", None)]


def test_a_library_read_given_up_is_a_strike_read_alone_next_time_and_set_aside_at_the_second(tmp_path, monkeypatch):
    """A library scan with db stored the `timeout` of a read given up once, and every resume kept it: a legitimate
    file slow once on a loaded server was set aside for good, where the command line sets a file aside only at
    its second strike, read alone. Now a read given up is a strike: the resume reads the file again, alone, and
    a second read given up sets it aside (its stored `timeout` kept, the file not read again)."""
    from aiidetect import api, crashguard
    from aiidetect.pipeline.stages import DecodeStage

    for name in ("a", "hang", "slow", "z"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    gate = [threading.Event()]
    real = DecodeStage.__call__
    reads: list[tuple[str, list[str]]] = []

    def decode(self, path, index, expect=None):
        name = os.path.basename(path)
        if name in ("hang.png", "slow.png"):
            reads.append((name, [os.path.basename(p) for p in crashguard.reads_in_flight()]))
            if name == "hang.png" or sum(n == name for n, _ in reads) == 1:  # slow.png: its first read only
                gate[0].wait(30)  # the test's bound, never reached when it works
        return real(self, path, index, expect)

    monkeypatch.setattr(DecodeStage, "__call__", decode)
    db = tmp_path / "runs.db"
    opts = dict(detectors="metadata", cache=False, workers=2, batch_size=1, file_timeout=0.5, db=db,
                include=["*.png"])
    runs = []
    try:
        for run in range(3):
            _resume_in_a_new_process(gate)
            for name in ("a.png", "z.png"):  # changed: read again beside the struck files, which must wait for them
                os.utime(tmp_path / name, ns=(10**18 + run, 10**18 + run))
            before = len(reads)
            recs = list(api.scan(tmp_path, **opts))
            with sqlite3.connect(db) as c:
                strikes = sorted((os.path.basename(p), n) for p, n in c.execute("SELECT path, strikes FROM crashes"))
            runs.append(([(os.path.basename(r.file), r.error.code if r.error else None) for r in recs], strikes,
                         sorted(reads[before:])))  # two decode workers: either struck file may be read first
            hang_said = recs[1].error.message
    finally:
        gate[0].set()
    files = ["a.png", "hang.png", "slow.png", "z.png"]
    assert runs[0][:2] == (list(zip(files, [None, "timeout", "timeout", None])), [("hang.png", 1), ("slow.png", 1)])
    # the resume reads both again, each alone (no other file's read beside it); slow.png is its own now
    assert runs[1] == (list(zip(files, [None, "timeout", None, None])), [("hang.png", 2)],
                       [("hang.png", ["hang.png"]), ("slow.png", ["slow.png"])])
    assert runs[2] == (runs[1][0], [("hang.png", 2)], [])  # set aside: its stored record, no read
    assert "set aside (two strikes)" in hang_said


def test_a_resume_with_no_file_timeout_keeps_a_timeout_with_one_strike(tmp_path, monkeypatch):
    """A stored `timeout` with one strike is read again only by a scan whose reads have a deadline: the store knows
    the file hung once, and a resume without file_timeout (the local library default) would hang on it for good,
    where it used to keep the record."""
    from aiidetect import api
    from aiidetect.pipeline.stages import DecodeStage

    for name in ("a", "hang"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    release = threading.Event()
    real = DecodeStage.__call__
    reads: list[str] = []

    def decode(self, path, index, expect=None):
        reads.append(os.path.basename(path))
        if os.path.basename(path) == "hang.png" and reads.count("hang.png") == 1:
            release.wait(30)  # the test's bound, never reached when it works
        return real(self, path, index, expect)

    monkeypatch.setattr(DecodeStage, "__call__", decode)
    opts = dict(detectors="metadata", cache=False, workers=1, batch_size=1, db=tmp_path / "runs.db",
                include=["*.png"])

    def codes(**more):
        return [(os.path.basename(r.file), r.error.code if r.error else None)
                for r in api.scan(tmp_path, **opts, **more)]
    try:
        assert codes(file_timeout=0.5) == [("a.png", None), ("hang.png", "timeout")]
    finally:
        release.set()
    del reads[:]
    kept = list(api.scan(tmp_path, **opts))[1].error.message
    assert "its next scan with a file_timeout (a resume) reads this file again, alone" in kept
    assert reads == []  # neither read: a.png resumed, hang.png's record kept
    assert codes() == [("a.png", None), ("hang.png", "timeout")]
    assert reads == []  # neither read: a.png resumed, hang.png's record kept
    assert codes(file_timeout=30) == [("a.png", None), ("hang.png", None)]  # with a deadline: read again, alone
    assert reads == ["hang.png"]


def test_a_scan_whose_reads_given_up_pile_up_stops_after_their_records(tmp_path, monkeypatch):
    """Each read given up leaves its thread and what it read behind: a share that does not answer would leave
    one per file. Past crashguard.GIVEN_UP_MAX still running the scan stops (ScanError), once the records of
    those files are out. With db each read given up is a strike: a resume reads each of those files once more,
    alone, stops there again when they all run out of time again (their second strike sets them aside), and
    the resume after it goes on past them rather than meeting them again."""
    from aiidetect import api, crashguard

    names = ["a"] + [f"hang{i}" for i in range(crashguard.GIVEN_UP_MAX + 1)] + ["z"]
    for name in names:
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    gate = [threading.Event()]
    _hang_in_budget(monkeypatch, gate)
    db = tmp_path / "runs.db"
    opts = dict(detectors="metadata", cache=False, workers=1, batch_size=1, file_timeout=0.5, db=db,
                include=["*.png"])
    hung = [(f"{n}.png", "timeout") for n in names[1:-1]]

    def strikes():
        with sqlite3.connect(db) as c:
            return sorted((os.path.basename(p), n) for p, n in c.execute("SELECT path, strikes FROM crashes"))

    runs: list = []
    try:
        for _ in range(2):
            _resume_in_a_new_process(gate)
            recs: list = []
            with pytest.raises(api.ScanError, match="the scan stops: 3 reads ran past file_timeout") as stop:
                for rec in api.scan(tmp_path, **opts):
                    recs.append((os.path.basename(rec.file), rec.error.code if rec.error else None))
            assert all(f"{n}.png" in str(stop.value) for n in names[1:-1])
            runs.append((recs, strikes()))
        _resume_in_a_new_process(gate)
        again = [(os.path.basename(r.file), r.error.code if r.error else None) for r in api.scan(tmp_path, **opts)]
    finally:
        gate[0].set()
    assert runs == [([("a.png", None)] + hung, [(n, 1) for n, _ in hung]),
                    ([("a.png", None)] + hung, [(n, 2) for n, _ in hung])]
    assert again == [("a.png", None)] + hung + [("z.png", None)]


def test_a_service_scanning_one_upload_per_call_does_not_pile_up_reads_given_up(tmp_path, monkeypatch):
    """A service scans each upload with its own scan() call on one Scanner. The cap on reads given up still
    running (GIVEN_UP_MAX) was counted per scan: each call had one, and the process kept a thread (and what it
    read) for every hostile upload, without end. Counted for the process now: once more than GIVEN_UP_MAX run,
    a scan with a file_timeout is refused (ScanError) before it reads anything, until they return."""
    from aiidetect import api, crashguard

    for name in ("hang1", "hang2", "hang3", "hang4", "ok"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    gate = [threading.Event()]
    _hang_in_budget(monkeypatch, gate)

    def readers():
        return sum(t.name == "aiidetect-read" for t in threading.enumerate())

    outcomes = []
    try:
        with api.Scanner(detectors="metadata", cache=False, workers=1, file_timeout=0.3) as service:
            for name in ("hang1", "hang2", "hang3", "hang4", "ok"):
                try:
                    outcomes.append([r.error.code if r.error else "ok" for r in service.scan(tmp_path / f"{name}.png")])
                except api.ScanError as exc:
                    outcomes.append(str(exc).split(":")[0])
            left_behind = readers()
            assert outcomes[:2] == [["timeout"], ["timeout"]]
            # the third still running ends its scan, after its record
            assert str(outcomes[2]).startswith("the scan stops")
            hung = sorted(str(tmp_path / f"hang{i}.png") for i in (1, 2, 3))
            refused = "3 reads given up past file_timeout by other scans are still running in this process"
            assert outcomes[3:] == [refused, refused]  # nothing more read, not even a good file
            assert (left_behind, crashguard.reads_given_up()) == (3, hung)
            _resume_in_a_new_process(gate)  # the reads return: the service serves again
            assert [r.error.code if r.error else "ok" for r in service.scan(tmp_path / "ok.png")] == ["ok"]
    finally:
        gate[0].set()


_LIBRARY_HOST_FREEZES_ON_HANG = """
import os, re, sys
from aiidetect import api, crashguard
from aiidetect.pipeline.stages import DecodeStage
crashguard.watchdog_stall = lambda seconds: seconds + 0.1  # a watchdog, had one started, kills after 0.4 s of silence
real = DecodeStage.__call__
def decode(self, path, index, expect=None):
    if path.endswith("hang.png"):
        re.match(r"(a+)+$", "a" * 24 + "!")      # C code that holds the GIL (2^24 steps: over half a second)
    return real(self, path, index, expect)
DecodeStage.__call__ = decode
recs = api.scan(sys.argv[1], detectors="metadata", cache=False, workers=1, batch_size=1, file_timeout=0.3)
print("served", *[os.path.basename(r.file) for r in recs], flush=True)
"""


def test_a_decoder_that_freezes_the_interpreter_does_not_kill_a_library_caller(tmp_path):
    """A library scan with file_timeout started the watchdog, which SIGKILLed the caller's whole process (a
    newsroom's upload service, a notebook's kernel) when a decoder held the GIL past the deadline. The caller's
    process now lives: the frozen read is waited for (nothing inside a process can end it), then the scan goes
    on. About a second: the interpreter must really freeze for longer than the old watchdog's stall."""
    for name in ("a", "hang"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    r = subprocess.run([sys.executable, "-c", _LIBRARY_HOST_FREEZES_ON_HANG, str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "served a.png hang.png\n"), r.stderr[-2000:]
    assert "no sign of life" not in r.stderr


def test_a_read_waiting_for_the_decode_budget_is_not_on_its_clock():
    """Eight workers on a folder of 100 MP images decode two at a time (pixels.Budget): the last in line
    waited for the others' decodes on its own --file-timeout clock, and a legitimate file ended the scan."""
    import time

    from aiidetect import crashguard
    from aiidetect.pixels import Budget

    now = [0.0]
    d = crashguard.ReadDeadline(10, expire=lambda p, t: None, clock=lambda: now[0])
    d._thread = object()  # no watcher thread: overdue() is asked directly
    budget = Budget(100)
    inside, finish = threading.Event(), threading.Event()

    def job():
        with d.reading("/x/b.png"), budget.hold() as take:
            take(60)
            inside.set()
            finish.wait(10)

    with budget.hold() as other:
        other(100)  # another file's job holds the whole budget
        t = threading.Thread(target=job)
        t.start()
        for _ in range(1000):  # until the job has begun its read and waits on the budget
            with d._cond:
                if d._next == 1 and not d._reading:
                    break
            time.sleep(0.002)
        now[0] += 100  # the other file's decode
        assert d.overdue() is None
    assert inside.wait(10)
    now[0] += 5
    assert d.overdue() is None
    now[0] += 6
    assert d.overdue() == ("/x/b.png", 11.0)
    finish.set()
    t.join(10)
    assert d.overdue() is None


def test_a_json_array_on_stdout_is_closed_before_the_read_deadline_ends_the_scan(tmp_path, monkeypatch):
    """The deadline ends the process from its watcher thread: `-f json` on stdout was left an open array
    (`[` and the records so far), which no script could parse. Now it is closed first, as Ctrl-C closes it."""
    from conftest import run_cli_in_process

    from aiidetect import crashguard

    for name in ("a", "b", "hang"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    release = threading.Event()
    seen: list[bytes] = []

    def exit_(code):  # what had reached stdout when the process would have ended
        sys.stdout.flush()
        seen.append(sys.stdout.buffer.getvalue())
        release.set()

    _hang_on_hang_png(monkeypatch, release)
    monkeypatch.setattr(crashguard.os, "_exit", exit_)
    r = run_cli_in_process("scan", str(tmp_path), "-d", "metadata", "--no-cache", "-f", "json", "-q",
                           "--batch-size", "1", "--workers", "1", "--file-timeout", "0.2")
    assert len(seen) == 1, r.stderr
    assert [rec["file"] for rec in json.loads(seen[0])] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


@pytest.mark.parametrize("given,engine,db,want", [(None, "local", None, None), (None, "local", "s.db", 120.0),
                                                  (None, "ray", "s.db", None), (5.0, "local", None, 5.0),
                                                  (0.0, "local", "s.db", 0.0)])
def test_the_command_lines_local_deadline_needs_a_store(given, engine, db, want):
    """Ending the process loses a run without a store (its table, its report) for a file that may only be
    slow; with --db a resume keeps every record. Ray's own default (None) is left to the engine."""
    from aiidetect.commands.common import Engine
    from aiidetect.commands.scan import _file_timeout

    assert _file_timeout(given, Engine(engine), db) == want


_STUCK_ON_HANG = """
import sys, threading
from aiidetect import crashguard
from aiidetect.pipeline.stages import DecodeStage
crashguard.STOP_GRACE = 0.2
real = DecodeStage.__call__
def decode(self, path, index, expect=None):
    if path.endswith("hang.png"):
        sys.stderr.write("stuck\\n"); sys.stderr.flush()
        threading.Event().wait(60)              # a read that does not return (the test's own bound: 60 s)
    return real(self, path, index, expect)
DecodeStage.__call__ = decode
sys.argv = ["aiidetect", *sys.argv[1:]]
from aiidetect.cli import main
main()
"""


def test_sigterm_ends_a_local_scan_whose_read_is_stuck(tmp_path):
    """`timeout 600 aiidetect scan ...` met a decode thread stuck in a read: SIGTERM (and Ctrl-C) waited for it,
    and the scan ran on until `kill -9`, its JSON array left open. Now the stop gives the read a grace
    (crashguard.STOP_GRACE), finishes the document, names the file and ends with the signal's code."""
    for name in ("a", "hang"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    p = subprocess.Popen([sys.executable, "-c", _STUCK_ON_HANG, "scan", str(tmp_path), "-d", "metadata", "--no-cache",
                          "-f", "json", "-q", "--workers", "1", "--batch-size", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr.readline() == "stuck\n"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    # The array is closed (a.png's record may or may not have been written when the signal came).
    assert [os.path.basename(d["file"]) for d in json.loads(out)] in ([], ["a.png"])
    assert "terminated (SIGTERM)" in err and "hang.png had not returned" in err


def test_a_stop_gives_up_on_a_stuck_read_and_the_command_line_ends_without_it(monkeypatch, capsys):
    from aiidetect import crashguard
    from aiidetect.commands import errors

    exits: list[int] = []
    monkeypatch.setattr(errors.os, "_exit", exits.append)
    monkeypatch.setattr(crashguard, "abandoned", 1)
    errors.abandon_stuck_reads(143)     # nothing being read: the exit is Python's own
    assert exits == []
    with crashguard.in_flight("/x/stuck\x1b[2J.png"):
        errors.abandon_stuck_reads(143)
    err = capsys.readouterr().err
    assert exits == [143] and "reading /x/stuck" in err and "\x1b" not in err


def test_a_read_still_stuck_when_its_session_closes_keeps_its_slot(tmp_path):
    """A stop is no crash: a session closed with its reads done leaves no slot. A read the stop abandoned
    (still in progress when the session closes) keeps its slot: the next session reads that file alone."""
    store = str(tmp_path / "s.sqlite")
    g = CrashGuard(store, 1, {}, lambda p: Seen(p, 1, 1))
    t, release = _reading_in_a_thread(g, "/x/stuck.png")
    with g.watch("/x/done.png"):
        pass
    g.close()
    release.set()
    t.join()
    found, dead = recover(store)
    assert [s.key for s in found] == ["/x/stuck.png"] and dead == [1]
    g = CrashGuard(store, 2, {}, lambda p: Seen(p, 1, 1))
    with g.watch("/x/a.png"):
        pass
    g.close()
    assert slot_files(store) == []


def test_closing_a_scanner_from_another_thread_while_a_read_is_stuck_returns(tmp_path, monkeypatch):
    """Scanner.close() joined the decode threads: a read that never returns held it for ever. Now the stuck
    thread is abandoned after crashguard.STOP_GRACE, and the caller's process goes on."""
    from aiidetect import api, crashguard

    for name in ("a", "hang"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    release, stuck = threading.Event(), threading.Event()
    _hang_on_hang_png(monkeypatch, release, stuck)
    monkeypatch.setattr(crashguard, "STOP_GRACE", 0.1, raising=False)
    monkeypatch.setattr(crashguard, "abandoned", 0, raising=False)
    scanner = api.Scanner(api.ScanOptions(detectors=["metadata"], cache=False, workers=1, batch_size=1))
    try:
        recs = scanner.scan([str(tmp_path)])
        assert os.path.basename(next(recs).file) == "a.png"
        assert stuck.wait(10)             # the next file's read has begun, and does not return
        closer = threading.Thread(target=scanner.close)
        closer.start()
        closer.join(10)
        assert not closer.is_alive() and not release.is_set()
        assert crashguard.abandoned == 1
    finally:
        release.set()


_FREEZES_ON_HANG = """
import re, sys, time
from aiidetect import crashguard
from aiidetect.pipeline.stages import DecodeStage
crashguard.watchdog_stall = lambda seconds: seconds + 0.5  # the test's time: 2 s of silence, not 3.5
real = DecodeStage.__call__
def decode(self, path, index, expect=None):
    if path.endswith("hang.png"):
        time.sleep(0.3)                          # the interpreter free a while: a.png's record is written
        sys.stderr.write("stuck\\n"); sys.stderr.flush()
        re.match(r"(a+)+$", "a" * 60 + "!")      # C code that never gives the GIL back (2^60 backtracking steps)
    return real(self, path, index, expect)
DecodeStage.__call__ = decode
sys.argv = ["aiidetect", *sys.argv[1:]]
from aiidetect.cli import main
main()
"""


def test_a_decoder_that_freezes_the_interpreter_is_ended_from_outside(tmp_path):
    """The read deadline's watcher is a Python thread: a decoder stuck in C code holding the GIL froze it too, and
    --file-timeout did nothing (nor SIGTERM: the scan ran until kill -9, its file never struck). The watchdog
    process kills the scan when the watcher's heartbeats stop: exit by SIGKILL (137 in a shell, never 1), a line
    naming the file, every record finished before on stdout, and the slot file left for the resume to strike."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "hang"):
        Image.new("RGB", (8, 8)).save(src / f"{name}.png")
    db = tmp_path / "audit.sqlite"
    r = subprocess.run([sys.executable, "-c", _FREEZES_ON_HANG, "scan", str(src), "-d", "metadata", "--no-cache",
                        "-f", "jsonl", "-q", "--workers", "1", "--batch-size", "1", "--db", str(db),
                        "--file-timeout", "1.5"], capture_output=True, text=True, timeout=30)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert "stuck\n" in r.stderr and "no sign of life" in r.stderr and f"{src / 'hang.png'}. The process" in r.stderr
    assert [os.path.basename(d["file"]) for d in map(json.loads, r.stdout.splitlines())] == ["a.png"]
    assert len(slot_files(str(db))) == 1
    assert [os.path.basename(s.key) for s in recover(str(db))[0]] == ["hang.png"]


def test_the_watchdog_ends_with_the_scan(tmp_path):
    """One watchdog per scan with a deadline, started with its first read, gone when the scan ends (the pipe
    closed): none left behind to kill a process that has moved on."""
    from aiidetect import crashguard

    d = crashguard.ReadDeadline(30)
    assert d._dog is None  # nothing started before a file is read
    with d.reading(str(tmp_path / "a.png")):
        dog = d._dog._proc
        assert dog.poll() is None
    d.close()
    assert dog.returncode is not None  # ended and reaped by close(): no zombie
    assert crashguard.watchdog_stall(120) == 180 and crashguard.watchdog_stall(0.5) == 2.5


def test_the_watchdog_ends_with_the_scan_when_a_forked_process_holds_its_pipe(tmp_path):
    """A process forked during the scan (a service's multiprocessing workers) holds a copy of the watchdog's pipe:
    its end never came, the watchdog outlived the scan, and with the heartbeats gone it killed the caller that had
    moved on (a library service, SIGKILL after the scan it ran had finished)."""
    from aiidetect import crashguard

    d = crashguard.ReadDeadline(30)
    with d.reading(str(tmp_path / "a.png")):
        dog = d._dog._proc
        held = os.dup(dog.stdin.fileno())  # the copy a fork would have inherited
    try:
        d.close()
        assert dog.returncode is not None
    finally:
        os.close(held)
        if dog.poll() is None:
            dog.kill()
            dog.wait()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the signal masks in /proc")
def test_the_watchdog_is_deaf_to_ctrl_c_from_its_start(tmp_path):
    """Its program's first line ignores SIGINT, but a Ctrl-C in the tens of milliseconds of the interpreter's
    start-up before it killed the watchdog (with a traceback): it is spawned with SIGINT blocked."""
    from aiidetect import crashguard

    d = crashguard.ReadDeadline(30)
    try:
        with d.reading(str(tmp_path / "a.png")):
            status = open(f"/proc/{d._dog._proc.pid}/status").read()
    finally:
        d.close()
    masks = dict(line.split(":\t") for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn")))
    assert (int(masks["SigBlk"], 16) | int(masks["SigIgn"], 16)) & (1 << (signal.SIGINT - 1)), masks


def test_time_the_scan_was_stopped_is_not_a_reads():
    """Ctrl-Z (or SIGSTOP) for longer than the deadline ended the scan at `fg` (exit 2), each file being read
    struck: the watcher's missed ticks with no CPU used are left out of the reads, not a spinning freeze's."""
    from aiidetect import crashguard

    now, cpu = [0.0], [0.0]
    d = crashguard.ReadDeadline(10, expire=lambda p, t: None, clock=lambda: now[0], cpu=lambda: cpu[0])
    d._thread = object()  # no watcher thread: overdue() is asked directly
    with d.reading("/x/a.png"):
        now[0] = 30.0  # stopped 29 s past the watcher's tick: no CPU used
        assert d.overdue() is None
        now[0], cpu[0] = 40.0, 10.0  # the process ran (a decoder spinning): counted
        assert d.overdue() == ("/x/a.png", 11.0)


def test_ctrl_c_in_a_terminal_is_the_scans_to_answer_not_the_watchdogs(tmp_path):
    """A terminal's Ctrl-C goes to its whole process group, the watchdog included: it printed a KeyboardInterrupt
    traceback on stderr beside the scan's own `interrupted`."""
    for name in ("a", "hang"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    p = subprocess.Popen([sys.executable, "-c", _STUCK_ON_HANG, "scan", str(tmp_path), "-d", "metadata", "--no-cache",
                          "-f", "json", "-q", "--workers", "1", "--file-timeout", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert p.stderr.readline() == "stuck\n"
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130 and "interrupted" in err, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_two_library_scans_giving_up_the_same_read_at_once_are_one_strike(tmp_path, monkeypatch):
    """Two library scans of one store (two threads of a service) that both gave up the same read were two strikes:
    the file was set aside by one slow moment, never read alone. Each knew of no strike when its read began: one
    incident, one strike, and the next scan reads the file again, alone."""
    from aiidetect import api
    from aiidetect.pipeline.stages import DecodeStage
    from aiidetect.store import ResultsStore

    for name in ("a", "hang"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    release, both = threading.Event(), threading.Barrier(2, timeout=20)
    real = DecodeStage.__call__

    def decode(self, path, index, expect=None):
        if path.endswith("hang.png"):
            both.wait()          # both scans inside the read, each knowing of no strike
            release.wait(30)     # the test's bound, never reached when it works
        return real(self, path, index, expect)

    monkeypatch.setattr(DecodeStage, "__call__", decode)
    db = tmp_path / "s.sqlite"
    # Strikes written one after the other (the order a lost update would otherwise decide): the count is the test.
    order = threading.Lock()
    add, load = ResultsStore.add_strikes, ResultsStore.crash_strikes
    loaded = threading.Barrier(2, timeout=20)

    def add_in_turn(self, *a, **k):
        with order:
            return add(self, *a, **k)

    def load_together(self):
        found = load(self)
        loaded.wait()  # both sessions know the strikes of the same moment, however late one of them starts
        return found

    monkeypatch.setattr(ResultsStore, "add_strikes", add_in_turn)
    monkeypatch.setattr(ResultsStore, "crash_strikes", load_together)
    codes: dict[int, list] = {}

    def scan(i: int) -> None:
        # Two runs (another max_pixels): neither resumes the other's `timeout` record instead of reading the file.
        codes[i] = [r.error.code if r.error else None for r in api.scan(
            tmp_path, detectors="metadata", cache=False, workers=1, batch_size=1, file_timeout=0.3, db=db,
            include=["*.png"], max_pixels=10**8 + i)]
    threads = [threading.Thread(target=scan, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        release.set()
    assert codes == {0: [None, "timeout"], 1: [None, "timeout"]}
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT strikes FROM crashes").fetchall() == [(1,)]


def test_a_strike_counts_from_the_strikes_its_reader_knew(tmp_path):
    """Two sessions that died in the same read at once (their slots both name it, each knowing of no strike) were
    two strikes at the next session: set aside, never read alone. A read that knew of one strike is the second."""
    from aiidetect.store import ResultsStore

    with ResultsStore(tmp_path / "s.sqlite") as st:
        for sid in (3, 4):  # what two dead sessions leave, read as the next session reads them
            g = CrashGuard(str(st.path), sid, {}, {"/x/a.png": Seen("/x/a.png", 10, 1)}.get)
            with g.watch("/x/a.png"):
                (tmp_path / f"s.sqlite-reading-{sid}.copy").write_bytes(open(g.path, "rb").read())
            g.close()
            os.rename(tmp_path / f"s.sqlite-reading-{sid}.copy", tmp_path / f"s.sqlite-reading-{sid}")
        found, dead = recover(str(st.path))
        assert [s.known for s in found] == [0, 0] and dead == [3, 4]
        st.add_strikes(found, dead)
        assert st.crash_strikes() == {"/x/a.png": (10, 1, 1)}
        st.add_strikes([Seen("/x/a.png", 10, 1, known=1)], [])   # read alone, knowing of it: the second
        st.add_strikes([Seen("/x/a.png", 10, 1, known=1)], [])   # another scan's read alone at once: the same
        assert st.crash_strikes() == {"/x/a.png": (10, 1, 2)}
        st.add_strikes([Seen("/x/a.png", 10, 2)], [])            # changed since: its first
        st.add_strikes([Seen("/x/a.png", 10, 2)], [])            # a slot of an older version: added, as before
        assert st.crash_strikes() == {"/x/a.png": (10, 2, 2)}


def test_a_slot_of_this_version_is_read_by_an_older_one_and_stale_bytes_are_no_count(tmp_path):
    """The strikes a reader knew were a fourth item of the slot's list: an older version, which unpacks three, lost
    the whole slot, and gave no strike for a file that ended the process. They follow in a section of their own,
    tied to the list by its CRC: what a longer payload left after a shorter one of an older version is no count."""
    from aiidetect.crashguard import SLOT_BYTES, _read_slots

    g = CrashGuard(str(tmp_path / "s.sqlite"), 5, {"/x/a.png": (10, 1, 1)}, {"/x/a.png": Seen("/x/a.png", 10, 1)}.get)
    with g.watch("/x/a.png"):
        raw = open(g.path, "rb").read(SLOT_BYTES)
    g.close()
    head = int(raw[:8])
    assert json.loads(raw[8:8 + head]) == ["/x/a.png", 10, 1]  # what an older version reads, whole
    fd = os.open(tmp_path / "slots", os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, raw[:8 + head + 40], 0)
        assert _read_slots(fd) == [Seen("/x/a.png", 10, 1)] and _read_slots(fd)[0].known == 1
        # An older version's slot: a short payload over a longer one's bytes, digits where a section would be.
        old = json.dumps(["/x/b.png", 1, 2]).encode()
        os.pwrite(fd, b"%08d" % len(old) + old + b"000000032 00000000" + b"\0" * 64, 0)
        assert [s.known for s in _read_slots(fd)] == [None]
        # Numbers SQLite cannot store (a slot written by hand): none, not an OverflowError at the next session.
        big = json.dumps(["/x/c.png", 2**64, -2**70]).encode()
        os.pwrite(fd, b"%08d" % len(big) + big + b"\0" * 64, 0)
        assert [(s.size, s.mtime_ns) for s in _read_slots(fd)] == [(None, None)]
    finally:
        os.close(fd)


def test_a_full_disk_under_the_slot_file_stops_the_scan_with_the_store_line(tmp_path, monkeypatch):
    """The slot of a file about to be read could not be written (a full disk: seen on a 600 KB tmpfs whose
    store filled it): `aiidetect: error: OSError: [Errno 28] No space left on device`, and the read counted
    as begun kept the slot file after the session ended, for the next one to take for a dead session's. It
    is the store's one line now, nothing left beside the store, and the same command then resumes."""
    import errno

    from conftest import run_cli_in_process

    root = tmp_path / "in"
    root.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / f"{i}.png")
    db = tmp_path / "a.sqlite"
    scan = ("scan", str(root), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    real = os.pwrite

    def full(fd, data, off):  # the slot file is the only file written with pwrite
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "pwrite", full)
    r = run_cli_in_process(*scan)
    line = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and line.startswith(f"error: cannot write to the results store {db} (No space left"), r.stderr
    assert line.endswith("; the store keeps the 0 rows of this run committed before (0 of them by this session), and "
                         "the same command resumes after them"), line  # as docs/scale.md says, the store's own line
    assert not slot_files(str(db))
    monkeypatch.setattr(os, "pwrite", real)
    r = run_cli_in_process(*scan)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT status FROM sessions ORDER BY session_id").fetchall() == [("interrupted",),
                                                                                         ("complete",)]
        assert c.execute("SELECT COUNT(*) FROM results").fetchone() == (2,)
    c.close()


def test_a_session_that_died_using_the_store_through_a_link_is_found_by_its_real_name(tmp_path):
    """Slots were kept beside the name the store was given, the -wal beside the file: a scan killed while
    using `link.sqlite` left `link.sqlite-reading-1`, and a resume of `real/a.sqlite` never saw it (the files
    being read got no strike, the session stayed `running`)."""
    from aiidetect.store import ResultsStore, StoreSession

    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "a.sqlite"
    link = tmp_path / "link.sqlite"
    link.symlink_to(real)
    img = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(img)
    st = ResultsStore(link)
    run = st.ensure_run({"k": 1}, {}, ["metadata"], "rules")
    first = StoreSession(st, run, "rules")
    g = first.guard_reads()
    assert first.prior(str(img)) is None
    reading = g.watch(str(img))  # held: collected, it would clear the slot
    reading.__enter__()
    os.close(g._fd)  # kill -9 mid-read: the lock goes with the process, the slot file stays
    g._fd = None
    st.close()
    st = ResultsStore(real)
    again = StoreSession(st, run, "rules")
    assert again.crashed == [str(img.resolve())]
    assert st.db.execute("SELECT status FROM sessions WHERE session_id=?", (first.session_id,)).fetchone() == ("died",)
    st.close()


def test_a_store_without_flock_scans_and_resumes(tmp_path, monkeypatch):
    """Windows has no fcntl: `import fcntl` in the crash guard ended every `scan --db` there at once (exit 2).
    Without flock a live session's slots cannot be told from a dead one's, so none is taken: the scan and its
    resume run, with no strikes."""
    from aiidetect.api import Scanner

    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "a.png")
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError, as on Windows
    db = str(tmp_path / "s.sqlite")
    for resumed in (0, 1):
        with Scanner(detectors=["metadata"], db=db, cache=False, file_timeout=30, on_note=lambda m: None) as s:
            (rec,) = s.scan(str(tmp_path / "in"))
            assert rec.error is None and s.stats["resumed"] == resumed
    assert recover(db) == ([], [])


@contextlib.contextmanager
def _service_with_two_reads_stuck(tmp_path, monkeypatch, stuck, others):
    """A service (one Scanner, file_timeout 0.3) whose scans of `stuck` each gave up a read still hanging; the reads
    return when the block ends, checked in a new process (_resume_in_a_new_process)."""
    from aiidetect import api

    for name in (*stuck, *others):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    gate = [threading.Event()]
    _hang_in_budget(monkeypatch, gate)
    try:
        with api.Scanner(detectors="metadata", cache=False, workers=1, file_timeout=0.3) as service:
            for name in stuck:
                assert [r.error.code for r in service.scan(tmp_path / f"{name}.png")] == ["timeout"]
            yield service
    finally:
        gate[0].set()
    _resume_in_a_new_process(gate)


def test_a_service_can_tell_reads_stuck_apart_and_names_only_the_callers_own_files(tmp_path, monkeypatch):
    """A service scans each user's upload with its own call. With reads given up still stuck, a scan that stops or
    is refused raised a plain ScanError (only its text told "restart the process" from a broken store), and its
    message listed every stuck file of the process: one user's error named other users' uploads. It is a
    ReadsStuckError now, with the count and this scan's own stuck files; the others are only counted."""
    from aiidetect import ReadsStuckError, ScanError

    with _service_with_two_reads_stuck(tmp_path, monkeypatch, ("hang-alice", "hang-bob"),
                                       ("hang-carol", "hang-dave")) as service:
        with pytest.raises(ReadsStuckError) as stop:  # carol's own read is the third given up
            list(service.scan(tmp_path / "hang-carol.png"))
        assert isinstance(stop.value, ScanError)
        assert not any(n in str(stop.value) for n in ("alice", "bob"))
        assert "hang-carol.png" in str(stop.value) and "2 of other scans" in str(stop.value)
        with pytest.raises(ReadsStuckError) as refused:  # dave's scan reads nothing
            service.scan(tmp_path / "hang-dave.png")
        assert not any(n in str(refused.value) for n in ("alice", "bob", "carol", "dave"))
        assert (stop.value.count, stop.value.files) == (3, [str(tmp_path / "hang-carol.png")])
        assert (refused.value.count, refused.value.files) == (3, [])


def test_scans_started_at_once_cannot_all_pass_the_check_on_reads_given_up(tmp_path, monkeypatch):
    """With GIVEN_UP_MAX reads given up still running, each of a service's concurrent requests passed the start
    check (it counted the reads alone), and each could leave one more thread behind: stuck threads were bounded by
    the service's concurrency, not by the cap. A scan that starts while reads are stuck now holds a reservation,
    checked and taken under one lock, until it ends: one more scan starts, not every request in flight."""
    from aiidetect import ReadsStuckError, crashguard

    with _service_with_two_reads_stuck(tmp_path, monkeypatch, ("hang1", "hang2"), ("ok",)) as service:
        first = service.scan(tmp_path / "ok.png")  # started, not yet iterated: a request in flight
        with pytest.raises(ReadsStuckError):
            service.scan(tmp_path / "ok.png")  # the second at once: refused
        assert [r.error for r in first] == [None]  # the first ends: its reservation is handed back
        assert [r.error for r in service.scan(tmp_path / "ok.png")] == [None]

        # The check and the reservation are one step: of requests that reach it at the same instant, one passes.
        barrier, admitted, refused = threading.Barrier(8), [], []

        def request():
            barrier.wait(10)
            try:
                admitted.append(crashguard.reserve_reads())
            except crashguard.ReadsStuck:
                refused.append(1)
        threads = [threading.Thread(target=request) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert (len(admitted), len(refused)) == (1, 7)
        admitted[0]()
        admitted[0]()  # twice: handed back once
        assert len(crashguard.reads_given_up()) == 2
        crashguard.reserve_reads()()  # free again


def test_a_scan_ended_by_a_garbage_collection_under_the_reads_lock_does_not_hang_the_process(monkeypatch):
    """A scan's iterator caught in a reference cycle (a request handler that keeps its loop's error: the error's
    traceback holds the frame that holds the error and the iterator) ends when a collection finds it, in whichever
    thread's allocation started that collection, which may hold the lock on the reads given up (reads_given_up,
    reserve_reads, a read being given up). Its reservation's release took that lock again there: the thread hung
    holding it, and with it every later scan, read given up and reads_given_up() of the process."""
    import gc

    from aiidetect import crashguard

    # A lock of the test's own: a hang here must not take the module's down with it.
    monkeypatch.setattr(crashguard, "_abandoned_lock", threading.Lock())
    monkeypatch.setattr(crashguard, "_abandoned", {object(): ("stuck.png", None)})  # a read still stuck
    monkeypatch.setattr(crashguard, "_reservations", set())
    release = crashguard.reserve_reads()  # a scan starting then holds a reservation

    def scan():
        try:
            yield
        finally:
            release()  # as api.Scanner's scan ends
    it = scan()
    next(it)
    cycle = [it]
    cycle.append(cycle)
    del it, cycle
    was = gc.isenabled()
    gc.disable()  # the cycle is collected below, under the lock, and not before

    def allocate_under_the_lock():
        with crashguard._abandoned_lock:
            gc.collect()
    try:
        t = threading.Thread(target=allocate_under_the_lock, daemon=True)
        t.start()
        t.join(5)
    finally:
        if was:
            gc.enable()
    assert not t.is_alive()
    # The reservation handed back: two more reads may be left behind beside the one stuck, not one.
    crashguard.reserve_reads()
    crashguard.reserve_reads()
    with pytest.raises(crashguard.ReadsStuck):
        crashguard.reserve_reads()


def test_reads_stuck_errors_cross_processes_whole():
    """A service may hand a scan's exception to another process (a process pool's worker raises it in its parent):
    ReadsStuck, and the ReadTimedOut that carries it, took its count and files as arguments that pickling does not
    pass, and did not load back (TypeError), nor copy. Each loads back with its fields."""
    import copy
    import pickle

    from aiidetect import ReadsStuckError, crashguard

    stuck = crashguard.ReadsStuck("the scan stops", 3, ["/up/a.png"])
    for e in (stuck, crashguard.ReadTimedOut("/up/a.png", 1.5, stuck), ReadsStuckError("refused", 3, ["/up/a.png"])):
        for back in (pickle.loads(pickle.dumps(e)), copy.copy(e)):
            assert (type(back), str(back)) == (type(e), str(e))
            got = back.stop if isinstance(back, crashguard.ReadTimedOut) else back
            assert (got.count, got.files) == (3, ["/up/a.png"])


_FROZEN_WITH_STDERR_GONE = """
import os, time
r, w = os.pipe()
os.close(r)
os.dup2(w, 2)  # `scan ... 2> >(grep -m1 ...)`, grep gone: every write to fd 2 fails with EPIPE
os.close(w)
from aiidetect.crashguard import Watchdog
dog = Watchdog.start(0.2)  # held: its pipe closed would end it
time.sleep(10)  # frozen: no heartbeat comes
"""


def test_the_watchdog_kills_a_frozen_scan_whose_stderr_reader_left():
    """The watchdog's line on stderr raised BrokenPipeError when stderr's reader had gone: the watchdog died before
    its kill, and the frozen scan never ended (neither 137 nor anything else)."""
    r = subprocess.run([sys.executable, "-c", _FROZEN_WITH_STDERR_GONE], timeout=30)
    assert r.returncode == -signal.SIGKILL


def test_a_stop_waits_for_the_reads_running_not_for_those_it_cancelled(monkeypatch):
    """A stop cancels the reads still queued: wait() never sees a cancelled future as done, so each early stop
    (`scan ... | head -1`, Ctrl-C) waited crashguard.STOP_GRACE in full and counted a read abandoned that was
    never begun (the scan's process lived 3 s past its reader)."""
    from concurrent.futures import ThreadPoolExecutor

    from aiidetect import crashguard, pixels

    monkeypatch.setattr(crashguard, "abandoned", 0, raising=False)
    pool = ThreadPoolExecutor(1)
    started, release = threading.Event(), threading.Event()

    def read(i):
        started.set()
        release.wait(10)

    jobs = [pool.submit(read, i) for i in range(4)]
    assert started.wait(10)  # the first read runs; the other three are queued behind it
    shutdown = pool.shutdown

    def cancel_then_release(*args, **kwargs):
        shutdown(*args, **kwargs)  # the queued three cancelled while the first still runs
        release.set()

    pool.shutdown = cancel_then_release
    pixels._shut(pool, jobs, finished=False)
    assert crashguard.abandoned == 0
    assert [j.cancelled() for j in jobs] == [False, True, True, True] and jobs[0].done()
