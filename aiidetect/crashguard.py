"""Files that end the process, found and set aside across the runs of a results store.

A crash in a native decoder on a crafted file (a C library's segfault), the kernel's
OOM killer, or a hang someone ends with `kill -9` stops a scan with no record for the
file being read. With `--db` the same command resumes after the records kept, and
meets the same file again: one such file would stop an audit for good.

So each session of a store keeps, beside the store, a small file of slots
(`STORE-reading-<session>`), one per decode thread: the file the thread is reading,
written before it starts and cleared when it is done (no fsync: a crash of the
process leaves the kernel's copy, which is all this needs). The live session holds
a lock on it and removes it when it ends, Ctrl-C included. The next session reads the
slot files that dead sessions left: each file still in a slot gets a strike, keyed
by its path, size and modification time. A file with one strike is read alone, with
no other file being read beside it, so a second death while reading it is its own;
with two it is not read again, and its record is the error `crashed`. A new
modification time (`touch`) or a changed file clears the strikes.

With `--engine ray` the files are read by the cluster's tasks, on other machines, in
worker processes whose death costs the driver nothing: the driver asks `refused` before it
hands a file out, and a file whose worker died each time it was tried alone gets those
deaths as strikes (`died`), so it is set aside as the local engine's would be.

A read that never ends (a decoder stuck on a crafted file, a network filesystem that does
not answer) is no death: nothing would strike its file. Python cannot stop a thread, so
the local engine's `ReadDeadline` ends the process when a file's read has run past
`--file-timeout`: its slot stays in place, as after a crash, and the next session strikes
the file. A decoder stuck in C code that holds the GIL stops that watcher too: the one
`Watchdog` process of the scan, fed its heartbeats, kills the process (SIGKILL) when they stop,
with the same effect on the slots. That is the command line's: a library scan's process is its caller's (a
service), which it ends only when asked (ScanOptions.end_process_on_timeout); otherwise `AbandoningDeadline`
gives a read past the deadline up (record `timeout`), and a GIL-frozen decoder is waited for. With a store
that read given up is a strike too (`CrashGuard.timed_out`): the next session reads the file alone, and a
second read given up sets it aside, as the command line's two process ends would. A Ray task
past its deadline is cancelled instead (engines/ray.py): its worker is killed, and a file that runs out of
time alone gets the strikes that set it aside; so is a model actor whose batch runs past its deadline.

A stop (Ctrl-C, SIGTERM, Scanner.close) waits `STOP_GRACE` seconds for the reads in progress, then
abandons those still stuck (`in_flight` names them): the scan ends as any stopped scan does, but a stuck
read's slot stays in place (`CrashGuard.close`), so the next session reads that file alone. A stop is no
crash, but a read that did not return within the grace after one is a hang: one strike, not two, and a
file read alone to the end loses it.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import signal
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Mapping, Sequence

STRIKES_TO_REFUSE = 2
# One slot: a file's key (store.path_key), JSON-escaped, with its size and mtime, then the strikes its reader knew
# (_known_section). A PATH_MAX path of bytes that are not UTF-8 nor printable makes a key of about 30 kB (escaped
# display form + base64, escaped again by JSON); a key longer than a slot is not written, and its file would go
# unguarded. The file stays sparse: a slot costs only what is written in it.
SLOT_BYTES = 65536
_LEN = 8                     # the slot's header: the payload's length in ASCII digits; 0 = empty
SUFFIX = "-reading-"


@dataclass(frozen=True)
class Seen:
    """How a file stood when its session stat-ed it (store.path_key, size, mtime), and the strikes its reader
    knew of when the read began (`known`; None: not known, a slot of an older version). Two scans of one store
    that give up, or die in, the same read at once are one incident: each knew of the same strikes, and the
    store counts the file `known + strikes given`, not the sum of both (one slow moment set it aside)."""
    key: str
    size: int | None
    mtime_ns: int | None
    known: int | None = field(default=None, compare=False)  # what the reader knew, not how the file stood


def slot_files(store_path: str) -> list[str]:
    return sorted(glob.glob(glob.escape(str(store_path)) + SUFFIX + "*"))


def _flock():
    """The fcntl module, or None where there is none (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


def recover(store_path: str, elsewhere: Callable[[int], bool] = lambda session_id: False
            ) -> tuple[list[Seen], list[int]]:
    """The files in the slots of sessions that died, and those sessions' ids; their slot
    files are removed. A slot file still locked belongs to a live session: left alone. So is
    one of a session `elsewhere` says ran on another machine (a store on a share: its lock
    is not seen from here, and a live session there would look dead).
    Without flock (Windows) a live session's slots cannot be told from a dead one's: none is taken, and a
    crash there strikes nothing (before, every `scan --db` there ended at once on `import fcntl`)."""
    fcntl = _flock()
    if fcntl is None:
        return [], []

    found: list[Seen] = []
    dead: list[int] = []
    for path in slot_files(store_path):
        with contextlib.suppress(ValueError):
            if elsewhere(int(path.rsplit(SUFFIX, 1)[1])):
                continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its session is still running
            try:
                if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                    continue
            except OSError:
                continue  # another session starting beside this one took it (and counts it) first
            try:
                os.unlink(path)
            except OSError:
                # Left in place (a read-only folder): counted now, it would strike its files again at
                # every later session, and two sessions would refuse a file that crashed once.
                continue
            found.extend(_read_slots(fd))
            with contextlib.suppress(ValueError):
                dead.append(int(path.rsplit(SUFFIX, 1)[1]))
        finally:
            os.close(fd)
    return found, dead


def _read_slots(fd: int) -> list[Seen]:
    out = []
    size = os.fstat(fd).st_size
    for off in range(0, min(size, 4096 * SLOT_BYTES), SLOT_BYTES):
        raw = os.pread(fd, SLOT_BYTES, off)
        head = raw[:_LEN]
        if not head.isdigit() or int(head) == 0 or int(head) > SLOT_BYTES - _LEN:
            continue
        end = _LEN + int(head)
        try:
            key, size_, mtime, *_ = json.loads(raw[_LEN:end].decode("utf-8"))  # *_: a later version's fields
        except (ValueError, UnicodeDecodeError, TypeError):
            continue  # torn by the crash: nothing to learn from it
        if isinstance(key, str):
            out.append(Seen(key, _int64(size_), _int64(mtime), _known(raw, end)))
    return out


def _known_section(payload: bytes, n: int) -> bytes:
    """The strikes a read knew of, after its slot's first section: an older version reads that one alone (a list
    of four there lost it the whole slot). Tied to the payload by its CRC: the bytes after an older version's
    shorter payload are what a longer one left there, and may look like a section."""
    sec = b"%d %08x" % (n, zlib.crc32(payload))
    return b"%08d" % len(sec) + sec


def _known(raw: bytes, end: int) -> int | None:
    head = raw[end:end + _LEN]
    if not head.isdigit() or not 0 < int(head) <= 28:
        return None
    n, _, crc = raw[end + _LEN:end + _LEN + int(head)].partition(b" ")
    ok = n.isdigit() and len(n) <= 18 and crc == b"%08x" % zlib.crc32(raw[_LEN:end])
    return int(n) if ok else None


def _int64(v: object) -> int | None:
    """An integer SQLite can store, else None: a slot written by hand with a larger one stopped the next
    session's start (OverflowError binding it)."""
    return v if type(v) is int and -2**63 <= v < 2**63 else None


class _ReadersWriter:
    """Many readers, or one writer alone; a waiting writer goes before new readers (so a file
    that must be read alone is not starved by the steady stream of the others)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and not self._waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._writer and not self._readers)
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class SlotsUnwritable(Exception):
    """A slot could not be written (a full disk): the scan stops as for the store's own failed write, with its line
    (api: StoreSession.cannot_write, as a ScanError; not store.StoreError, which would make this module import the
    store's). Its message is the why of that line."""


class CrashGuard:
    """One session's slots, and the strikes its store holds. `seen(path)` says how the
    session stat-ed the file (StoreSession.prior) before it is read."""

    def __init__(self, store_path: str, session_id: int, strikes: Mapping[str, tuple[int | None, int | None, int]],
                 seen: Callable[[str], Seen | None], cleared: Callable[[str], None] | None = None,
                 struck: Callable[[Seen, int], None] | None = None):
        fcntl = _flock()
        self.path = f"{store_path}{SUFFIX}{int(session_id)}"
        self.strikes = dict(strikes)
        self._seen = seen
        # Told when a file with a strike was read to the end: the neighbours of the first death, read
        # alone, are cleared (else each kept its strike, and one unrelated kill -9 would set it aside).
        self._cleared = cleared
        # Told when another process died reading a file (died): the store keeps the strikes.
        self._struck = struck
        # Made and locked under another name, then renamed into place: a session starting beside this
        # one (recover) must never find it at its slot name unlocked, take it for a dead session's and
        # remove it.
        folder, base = os.path.split(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=f".{base}-", dir=folder)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.close(fd)
            raise
        self._fd: int | None = fd
        # The slots are written by the decode threads; close() may come from the consumer while
        # some are still reading (a scan stopped early): never a write to a closed (or reused) fd.
        self._io = threading.Lock()
        self._lock = _ReadersWriter()
        self._slots = threading.local()
        self._count = 0
        self._count_lock = threading.Lock()
        self._active = 0  # reads between their slot's write and its clearing (under _io)

    def _strikes(self, path: str) -> tuple[int, Seen | None]:
        s = self._seen(path)
        if s is None:
            return 0, None
        return self.count(s), s

    def count(self, seen: Seen) -> int:
        """The strikes of the file as `seen` (none once it changed or was `touch`ed)."""
        size, mtime, n = self.strikes.get(seen.key, (None, None, 0))
        return n if (size, mtime) == (seen.size, seen.mtime_ns) else 0

    def refused(self, path: str) -> str | None:
        """Why this file is not read again (two earlier sessions died reading it), or None."""
        n, _ = self._strikes(path)
        if n < STRIKES_TO_REFUSE:
            return None
        return (f"the process ended (or the read ran past --file-timeout, or was still stuck when the scan was "
                f"stopped) while reading this file {n} times in earlier "
                "runs of this results store, the last time with no other file being read in it (a crash in an image "
                "decoder, the out-of-memory killer, a decoder or filesystem that hangs); not read again. `touch` the "
                "file to try it once more")

    @contextlib.contextmanager
    def watch(self, path: str) -> Iterator[None]:
        """Around one file's whole read: its slot names it meanwhile; a file with a strike is read alone."""
        n, seen = self._strikes(path)
        with (self._lock.alone() if n else self._lock.shared()):
            off = self._slot()
            slot = b""
            if seen is not None:
                # With the strikes known now: a second session dying in the same read at once is the same incident.
                payload = json.dumps([seen.key, seen.size, seen.mtime_ns]).encode("utf-8")
                slot = b"%08d" % len(payload) + payload + _known_section(payload, n)
                if len(slot) > SLOT_BYTES:
                    slot = b""
            self._write(slot, off, 1)
            try:
                yield
            finally:
                self._write(b"0" * _LEN, off, -1)
        # Read alone, to the end, and the process lives: not the culprit. Not so a read given up past the deadline
        # (timed_out: a strike more meanwhile), whose new strike this would clear.
        if n and seen is not None and self._strikes(path)[0] == n:
            self.survived(path)

    def survived(self, path: str) -> None:
        """This file was read to the end by a process that lived: any strike it had is cleared."""
        n, seen = self._strikes(path)
        if n and seen is not None:
            self.strikes.pop(seen.key, None)
            if self._cleared is not None:
                self._cleared(seen.key)

    def died(self, path: str, times: int) -> bool:
        """Another process (a Ray worker) died `times` times reading this file alone: as many strikes, kept
        in the store, so that no later run of it reads the file again until it changes. False when the
        session did not stat the file (nothing to key the strikes by)."""
        return self._strike(path, times) is not None

    def timed_out(self, path: str) -> int | None:
        """This file's read was given up past the deadline (AbandoningDeadline, a library scan's): one strike,
        kept in the store, as the command line's deadline gives it by ending the process (its slot left for the
        next session). So the next session reads the file alone, and a second strike sets it aside; one slow
        read on a loaded machine no longer does. Its strikes now, or None when the session did not stat it."""
        return self._strike(path, 1)

    def _strike(self, path: str, times: int) -> int | None:
        """The one way a strike is given while the session runs: kept here and in the store."""
        n, seen = self._strikes(path)
        if seen is None:
            return None
        self.strikes[seen.key] = (seen.size, seen.mtime_ns, n + times)
        if self._struck is not None:
            self._struck(replace(seen, known=n), times)
        return n + times

    def _write(self, data: bytes, off: int, active: int) -> None:
        """The slot at `off` written (nothing written for empty `data`), and the reads in progress counted
        (`active`: 1 as one begins, -1 as it ends) under the same lock, so that close() sees both or neither."""
        with self._io:
            if data and self._fd is not None:
                try:
                    os.pwrite(self._fd, data, off)
                except OSError as exc:
                    # A clearing (active < 0) that needed a new block (the slot was a hole): the hole reads as no
                    # file, so it is done all the same.
                    if active >= 0:
                        # A full disk (or a file size limit) under the store's folder: an unexpected OSError
                        # ended the scan, and with `_active` counted for a read that never began, the session's
                        # close kept its slot file, and the next session took it for a dead one. It stops the
                        # scan as the store's own failed write does, before the file is read unguarded.
                        raise SlotsUnwritable(f"{exc.strerror or exc}: its note of the files being read, "
                                              f"{self.path}") from exc
            self._active += active

    def _slot(self) -> int:
        off = getattr(self._slots, "off", None)
        if off is None:
            with self._count_lock:
                off = self._slots.off = self._count * SLOT_BYTES
                self._count += 1
        return off

    def close(self) -> None:
        """A session that ends (finished or stopped) leaves no slots: nothing it read is suspect. Unless a
        read is still in progress: a stop abandons a read stuck past STOP_GRACE (pixels.OrderedChunks), and
        its slot stays, unlocked, for the next session to strike (the stop was the user's, the hang the file's)."""
        with self._io:
            if self._fd is not None:
                if not self._active:
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                os.close(self._fd)
                self._fd = None


# Seconds a stop (Ctrl-C, SIGTERM, Scanner.close) waits for the reads in progress before it abandons them: a
# decode of a large file ends within it, a read that never returns would hold the stop for ever.
STOP_GRACE = 3.0

# Every read in progress in this process, deadline or not (Pipeline._decode): what a stop names when a read is
# abandoned, and what tells the command line to end the process rather than wait for the thread at exit.
_in_flight: dict[int, tuple[str, float]] = {}
_in_flight_lock = threading.Lock()
_in_flight_ids = itertools.count()


@contextlib.contextmanager
def in_flight(path: str) -> Iterator[None]:
    token = next(_in_flight_ids)
    with _in_flight_lock:
        _in_flight[token] = (path, time.monotonic())
    try:
        yield
    finally:
        with _in_flight_lock:
            _in_flight.pop(token, None)


# Reads a stop gave up waiting for (pixels.OrderedChunks): their grace is over, none more is given at exit.
abandoned = 0


def reads_in_flight(wait: float = 0.0) -> list[str]:
    """The files being read now, the oldest read first; with `wait`, once none is or after that many seconds."""
    end = time.monotonic() + wait
    while True:
        with _in_flight_lock:
            reads = [p for p, _ in sorted(_in_flight.values(), key=lambda r: r[1])]
        if not reads or time.monotonic() >= end:
            return reads
        time.sleep(0.05)


# Said before the read deadline ends the process (`last_words`): the scan's stdout document finished.
_last_words: list[Callable[[], None]] = []


@contextlib.contextmanager
def last_words(fn: Callable[[], None]) -> Iterator[None]:
    """While inside, `fn` runs (in the watcher thread, errors ignored) before the read deadline ends the
    process: the scan closes its JSON array on stdout there, so what a script already read still parses."""
    _last_words.append(fn)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _last_words.remove(fn)


# The read this thread is in (ReadDeadline.reading, AbandoningDeadline.run), for `waiting`.
_current = threading.local()


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Around a wait for other files' jobs (the decode budgets of pixels.Budget): the time is not counted
    against this thread's read. Eight workers on a folder of 100 MP images take turns two at a time, and
    the last in line waited for the others' decodes on its own clock: a legitimate file ended the scan."""
    entry = getattr(_current, "read", None)
    if entry is None:
        yield
        return
    deadline, token = entry
    with deadline._paused(token):
        yield


# Per thread, what its read holds that other reads wait for (pixels.Budget.hold): handed back if the read is
# given up (AbandoningDeadline), whose thread may never return it.
_on_give_up: dict[int, list[Callable[[], None]]] = {}
_on_give_up_lock = threading.Lock()


@contextlib.contextmanager
def on_give_up(fn: Callable[[], None]) -> Iterator[None]:
    """While inside, `fn()` runs (in the thread that gives up) when this thread's read is given up."""
    me = threading.get_ident()
    with _on_give_up_lock:
        _on_give_up.setdefault(me, []).append(fn)
    try:
        yield
    finally:
        with _on_give_up_lock:
            fns = _on_give_up.get(me, [])
            if fn in fns:
                fns.remove(fn)
            if not fns:
                _on_give_up.pop(me, None)


def _give_up(thread: int | None) -> None:
    with _on_give_up_lock:
        fns = list(_on_give_up.get(thread, ()))
    for fn in fns:
        fn()


# Seconds a file's read and decode may take (--file-timeout): locally, the process ends past it (ReadDeadline),
# or a library scan's read is given up (AbandoningDeadline); with Ray, a task of N files is cancelled past its
# start-up plus N times this (engines/ray.py).
FILE_TIMEOUT = 60.0
# The local engine's default, and only with --db: ending the process is recoverable there (a resume strikes
# the file and keeps every record), whereas without a store it loses the whole run's table or report, for a
# file that may only be slow (a 500 MB TIFF on a 5 MB/s share). Without --db a hang is ended by the user.
LOCAL_DB_FILE_TIMEOUT = 120.0


class _Clocked:
    """The reads in progress of one scan with a deadline, each on its own clock, stopped while it waits for
    other files' jobs (`waiting`)."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None):
        self.seconds = float(seconds)
        self._clock = clock or time.monotonic
        self._reading: dict[int, tuple[str, float]] = {}
        self._cond = threading.Condition()
        self._next = 0

    @contextlib.contextmanager
    def _paused(self, token: int) -> Iterator[None]:
        with self._cond:
            entry = self._reading.pop(token, None)
            stopped = self._clock()
        try:
            yield
        finally:
            if entry is not None:
                with self._cond:
                    self._reading[token] = (entry[0], entry[1] + self._clock() - stopped)

    def _names(self) -> list[str]:
        """The files being read, the oldest read first (under _cond)."""
        return [p for p, _ in sorted(self._reading.values(), key=lambda r: r[1])]


class ReadTimedOut(Exception):
    """A read given up past its deadline (AbandoningDeadline): the file's record is the error `timeout`. `stop`:
    why the scan ends once that record is out (more reads given up still running than GIVEN_UP_MAX), or None."""

    def __init__(self, path: str, took: float, stop: "ReadsStuck | None" = None):
        super().__init__(path, took)
        self.path, self.took, self.stop = path, took, stop


class ReadsStuck(Exception):
    """More reads given up past the deadline than GIVEN_UP_MAX are still running: the scan stops (api.ReadsStuckError)
    after the record of the one too many (Pipeline.run), so that a resume with db goes on past them; or a scan with a
    file_timeout does not start (reserve_reads). `count`: the reads given up still running in the process; `files`:
    those of them that this scan gave up. Only this scan's files are named: in a service scanning each user's upload
    with its own call, the others are other users' uploads."""

    def __init__(self, message: str, count: int = 0, files: Sequence[str] = ()):
        # Defaults: pickle and copy call the class with the message alone, then set the fields back.
        super().__init__(message)
        self.count, self.files = count, list(files)


# Reads given up by library scans (AbandoningDeadline) that may still run at once in one process, each holding
# what it had read and decoded (up to a --max-bytes file and a --max-pixels image) outside the decode budget,
# which gives it back to the other files (pixels.Budget.drop): as many as the budget's images, so that they hold
# at most the budget's memory again. One more ends the scan, and a library scan with a file_timeout does not
# start while more are still running (reserve_reads): a share that does not answer, or a folder of crafted
# files, would otherwise leave a thread and its memory behind for each file. Counted for the process, not per
# scan: a service scanning one upload per call gave each call's hang a count of its own, one, and kept a
# thread for every hostile upload, for weeks.
GIVEN_UP_MAX = 2

# Every read given up (AbandoningDeadline.run) whose thread still runs, whichever scan gave it up -> (its file,
# the deadline of the scan that gave it up: whose files a message may name).
_abandoned: dict[object, tuple[str, object]] = {}
# Scans with a file_timeout that started while reads given up were still running, and have not ended
# (reserve_reads): each counts as the one read it may leave behind before it stops. Added to under
# _abandoned_lock, discarded without it: a scan's end may run inside a garbage collection started by an
# allocation in a thread that holds that lock (a scan's iterator in a reference cycle), and took it again there.
_reservations: set[object] = set()
_abandoned_lock = threading.Lock()


def reads_given_up() -> list[str]:
    """The files whose reads a library scan gave up past file_timeout and that are still running, in this
    process (their threads cannot be stopped: each ends when its read returns). Every scan's: for the process's
    operator, not for a message to one scan's caller."""
    with _abandoned_lock:
        return sorted(p for p, _ in _abandoned.values())


def reserve_reads() -> Callable[[], None]:
    """Admits a library scan that gives reads up (file_timeout, the process kept), or raises ReadsStuck before it
    reads anything; returns what to call once the scan has ended. While reads given up still run, each scan that
    starts holds a reservation until it ends, counted with them: a scan starts only while they and the
    reservations are at most GIVEN_UP_MAX. Checked and reserved under one lock: concurrent requests each passed a
    check of the reads alone, and each could leave one more thread behind, as many as the service ran at once.
    With no read given up running, scans start freely (a healthy service's requests are not counted), so the
    reads in flight at the first hangs are bounded by the scans then running, not by this."""
    with _abandoned_lock:
        stuck = len(_abandoned)
        waiting = len(_reservations) if stuck else 0
        if stuck + waiting > GIVEN_UP_MAX:
            raise ReadsStuck(
                f"{stuck} reads given up past file_timeout by other scans are still running in this process"
                + (f", and {waiting} scan(s) started since are still running" if waiting else "")
                + f": a filesystem that does not answer, or decoders stuck on crafted files. Their threads cannot be "
                f"stopped; no scan with a file_timeout starts here until at most {GIVEN_UP_MAX} are left "
                "(aiidetect.crashguard.reads_given_up() lists them, for the process's operator), or in a new "
                "process", stuck, [])
        if not stuck:
            return _nothing
        token = object()
        _reservations.add(token)

    def release() -> None:
        # No lock (_reservations): once or more, from any thread, a garbage collection's included.
        _reservations.discard(token)
    return release


def _nothing() -> None:
    """What a scan admitted with no read given up running hands back (reserve_reads): nothing."""


class AbandoningDeadline(_Clocked):
    """The read deadline of a library scan (ScanOptions.file_timeout without end_process_on_timeout): the process
    is the caller's (a web service, a notebook, a task queue's worker), and it lives whatever a file does. Each
    file is read in a thread of its own while the decode worker waits for it: a read still running `seconds`
    after it began is abandoned (its thread left behind, running until it returns: Python cannot stop a thread),
    `run` raises ReadTimedOut, and the scan goes on (the decode budget it held handed back: `on_give_up`; past
    GIVEN_UP_MAX such threads still running in the process, this scan's or an earlier one's, the scan stops). No
    watcher thread, no watchdog process, nothing to end or to kill: a decoder stuck in C code that holds the
    interpreter lock (GIL) freezes every thread of the caller until it returns, this one included; nothing inside
    a process can end that, only the process's end (the command line's ReadDeadline, or
    end_process_on_timeout=True)."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None):
        super().__init__(seconds, clock)

    def run(self, path: str, read: Callable[[], object]) -> object:
        """read(), or ReadTimedOut when it has not returned `seconds` after it began. A read that returns late
        (a freeze that ended) keeps its result: it is given up only while it is still running."""
        with self._cond:
            token = self._next
            self._next += 1
            self._reading[token] = (path, self._clock())
        done = threading.Event()
        box: list = []
        key = object()  # this read in the process's list of reads given up (_abandoned)

        def reader() -> None:
            _current.read = (self, token)  # `waiting` (a decode budget) stops this read's clock
            try:
                box.append((True, read()))
            except BaseException as exc:  # handed to the waiting worker, which raises it as a read in it would
                box.append((False, exc))
            finally:
                with self._cond:  # with the check below: a read given up is one that had not returned
                    with _abandoned_lock:
                        _abandoned.pop(key, None)
                    done.set()

        try:
            # A daemon thread: an abandoned read must not hold the caller's interpreter at its exit.
            thread = threading.Thread(target=reader, name="aiidetect-read", daemon=True)
            thread.start()
            while True:
                with self._cond:
                    entry = self._reading.get(token)
                left = self.seconds if entry is None else entry[1] + self.seconds - self._clock()
                if done.wait(max(0.01, left)):
                    break
                with self._cond:
                    entry = self._reading.get(token)
                    took = None if entry is None else self._clock() - entry[1]
                    if took is None or took <= self.seconds or done.is_set():
                        continue
                    with _abandoned_lock:
                        _abandoned[key] = (path, self)
                        stuck = len(_abandoned)
                        mine = sorted(p for p, owner in _abandoned.values() if owner is self)
                # Given back even past GIVEN_UP_MAX: the files still to finish before the scan stops would wait
                # for it for ever (their clocks stopped while they wait for the budget).
                _give_up(thread.ident)
                raise ReadTimedOut(path, took, None if stuck <= GIVEN_UP_MAX else self._stop(stuck, mine))
        finally:
            with self._cond:
                self._reading.pop(token, None)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _stop(self, stuck: int, mine: list[str]) -> ReadsStuck:
        """Why the scan stops at one read given up too many. Names this scan's files only, the others by their
        count: in a service, other scans' files are other users' uploads."""
        others = stuck - len(mine)
        return ReadsStuck(
            f"the scan stops: {stuck} reads ran past file_timeout ({self.seconds:g} s) and have not returned in this "
            f"process ({len(mine)} of this scan's: {', '.join(mine)}"
            + (f"; {others} of other scans" if others else "") + "): a filesystem that does not answer, or decoders "
            f"stuck on crafted files. Their threads cannot be stopped and keep what they read; past {GIVEN_UP_MAX}, "
            "scans would leave one behind for each file, and no scan with a file_timeout starts here until they "
            "return (a new process starts without them). Each of this scan's has its record (`timeout`): with db "
            "each has a strike, and a resume reads each once more, alone, and goes on past those that run out of time "
            "again (set aside); without, leave them out (exclude)", stuck, mine)

    def close(self) -> None:
        """Nothing to stop: a read abandoned runs until it returns."""


class ReadDeadline(_Clocked):
    """Watches the reads of one local scan: a file still being read `seconds` after its read began ends the
    process (`expire`), with its crash-guard slot left in place. One watcher thread, started with the first
    read and stopped by close(); its check is `overdue`, apart, so that it can be tested without a clock.
    The command line's (its process is the scan's); a library scan gets AbandoningDeadline unless its caller
    asks for this one (ScanOptions.end_process_on_timeout)."""

    def __init__(self, seconds: float, expire: Callable[[str, float], None] | None = None,
                 clock: Callable[[], float] | None = None, cpu: Callable[[], float] | None = None):
        super().__init__(seconds, clock)
        self._expire = expire or _end_process
        # The process's CPU time, to tell a process that was stopped from one that ran (see overdue).
        self._cpu = cpu or (time.process_time if clock is None else None)
        self._last: tuple[float, float] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dog: Watchdog | None = None

    def run(self, path: str, read: Callable[[], object]) -> object:
        with self.reading(path):
            return read()

    @contextlib.contextmanager
    def reading(self, path: str) -> Iterator[None]:
        with self._cond:
            token = self._next
            self._next += 1
            if self._thread is None and not self._closed:
                self._dog = Watchdog.start(watchdog_stall(self.seconds))
                self._thread = threading.Thread(target=self._watch, name="aiidetect-read-deadline", daemon=True)
                self._thread.start()
            # After the watchdog's start (a process spawned: tens of ms on a loaded machine), not on this file's clock.
            self._reading[token] = (path, self._clock())
            if self._last is None and self._cpu is not None:
                self._last = (self._reading[token][1], self._cpu())  # overdue's first check measures from here
            reads = self._names()
        if self._dog is not None:
            # Said as the read begins, not at the watcher's next tick: a decoder that freezes the interpreter at
            # once would leave the watchdog naming the reads before it.
            self._dog.beat(reads)
        outer = getattr(_current, "read", None)
        _current.read = (self, token)
        try:
            yield
        finally:
            _current.read = outer
            with self._cond:
                self._reading.pop(token, None)

    def _tick(self) -> float:
        """Seconds between the watcher's checks."""
        return min(1.0, max(0.01, self.seconds / 4))

    def overdue(self) -> tuple[str, float] | None:
        """(path, seconds) of the read that began first, when it has run past the deadline.

        Time in which the process did not run is not a read's: a scan stopped (Ctrl-Z, SIGSTOP) for longer
        than the deadline ended at `fg`, its reads overdue, a false strike on each file. Told apart by the CPU
        clock: since the last check, the watcher missed its ticks by more than a second while the process used
        under a quarter of that time (a decoder that freezes the interpreter spins: it is not forgiven, and the
        watchdog ends it meanwhile)."""
        with self._cond:
            now = self._clock()
            if self._cpu is not None:
                cpu = self._cpu()
                if self._last is not None:
                    gap, ran = now - self._last[0] - self._tick(), cpu - self._last[1]
                    if gap > 1.0 and ran < gap / 4:
                        self._reading = {k: (p, began + gap) for k, (p, began) in self._reading.items()}
                self._last = (now, cpu)
            if not self._reading:
                return None
            path, began = min(self._reading.values(), key=lambda r: r[1])
        took = now - began
        return (path, took) if took > self.seconds else None

    def close(self) -> None:
        """The scan is over (or stopped): the watcher ends, and is waited for (no thread left behind)."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _watch(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._closed:  # a close() before this thread first waited: its notify is gone
                        self._cond.wait(self._tick())
                    if self._closed:
                        return
                    reads = self._names()
                if self._dog is not None:
                    self._dog.beat(reads)
                late = self.overdue()
                if late is not None:
                    if self._dog is not None:
                        # The watcher acts: the watchdog's silence from here on is no freeze (finishing the
                        # document on stdout may wait for a slow reader), and the process's end its own: exit 2.
                        self._dog.close()
                    self._expire(*late)
                    return
        finally:
            # The watcher is done (the scan over, or its deadline said): so is the watchdog, which would take
            # the silence for a frozen process.
            if self._dog is not None:
                self._dog.close()


def watchdog_stall(seconds: float) -> float:
    """Seconds without a heartbeat from the read watcher before the watchdog ends the process: the deadline
    itself (the watcher would have ended a stuck read by then, were it able to run), and half again (at least
    2 s) for a watcher slowed by a busy machine."""
    return seconds + max(2.0, seconds / 2)


# The watchdog's program: another interpreter, which runs while this one is frozen. argv: this process's id and
# the stall; stdin: the heartbeats, one line each (the oldest read's name for the stderr line, or nothing). Its
# end of the pipe closed (the scan done, or this process ended another way): it exits.
_WATCHDOG = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the terminal's whole process group: the scan's to answer
parent, stall = int(sys.argv[1]), float(sys.argv[2])
last, said, buf = time.monotonic(), b"", b""
while True:
    left = stall - (time.monotonic() - last)
    if left <= 0:
        break
    if select.select([0], [], [], left)[0]:
        chunk = os.read(0, 65536)
        if not chunk:
            sys.exit(0)
        last = time.monotonic()
        *lines, buf = (buf + chunk).split(b"\n")
        if lines:
            said = lines[-1]
if os.getppid() != parent:
    sys.exit(0)
what = (b"being read at its last sign of life: " + said) if said else b"no file was being read"
try:
    os.write(2, b"error: the scan has shown no sign of life for %d s, more than --file-timeout: native code that "
             b"holds the Python interpreter (a decoder stuck on a crafted file) froze it, and the deadline could not "
             b"end it from inside; %s. The process is killed (SIGKILL: exit status 137). With --db the same command "
             b"resumes, reads the file that was being read alone, and sets it aside (`crashed`) if it hangs again; "
             b"without --db, leave it out (--exclude) or raise --file-timeout\n" % (int(stall), what))
except OSError:
    pass  # stderr's reader gone (`2> >(grep -m1 ...)`): the line is lost, the kill must still come
os.kill(parent, signal.SIGKILL)
"""


class Watchdog:
    """One per local scan with a read deadline, started with its first read: a child process that kills this
    one when the read watcher's heartbeats stop for `stall` seconds. The watcher is a Python thread: a decoder
    stuck in C code that never releases the interpreter lock (GIL) stops it too, and --file-timeout did nothing
    (even SIGTERM: Python's handlers need the GIL). Nothing in this process can run then, nor choose its exit
    code: the child kills it with SIGKILL (137 in a shell: a fatal end, never taken for 1, findings). As after a
    crash, the results store's slot file still names the files being read, so a resume strikes them."""

    def __init__(self, proc):
        self._proc = proc
        self._lock = threading.Lock()

    @classmethod
    def start(cls, stall: float) -> Watchdog | None:
        """The watchdog, or None when no interpreter can be started (the scan goes on without it)."""
        import subprocess
        import sys

        if not sys.executable or os.name != "posix":  # its program selects on a pipe: POSIX only
            return None
        # SIGINT blocked in this thread while the watchdog is spawned, so blocked in it from its first instruction
        # (a signal mask is inherited across fork and exec) until its program ignores it: a Ctrl-C in the tens of
        # milliseconds before that line killed it, with a KeyboardInterrupt traceback beside the scan's own stop.
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            # -I -S: no site, no user environment: a start-up of milliseconds. close_fds (the default): it must
            # not hold the slot file's lock, nor stdout (a reader waiting for its end).
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), repr(stall)],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        except (OSError, ValueError):
            return None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)
        os.set_blocking(proc.stdin.fileno(), False)  # a watchdog slow to read never holds the watcher
        return cls(proc)

    def beat(self, reading: list[str]) -> None:
        """A sign of life, naming the files being read (for the watchdog's stderr line)."""
        line = ", ".join(shown_path(p) for p in reading).encode("utf-8", "backslashreplace")[:4000] + b"\n"
        with self._lock:
            if self._proc.stdin is not None and not self._proc.stdin.closed:
                with contextlib.suppress(OSError):
                    os.write(self._proc.stdin.fileno(), line)

    def close(self) -> None:
        """Ends the watchdog now, and reaps it. Killed, not left to see its pipe's end: a process forked meanwhile
        (a service's multiprocessing workers) holds a copy of the pipe, so no end came, the heartbeats stopped,
        and the watchdog killed the caller that had moved on. Our own child, not yet reaped: its PID is not
        reused, so the signal cannot reach another process."""
        with self._lock:
            if self._proc.stdin is not None and not self._proc.stdin.closed:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
            with contextlib.suppress(OSError):
                self._proc.kill()
            with contextlib.suppress(Exception):
                self._proc.wait()


def _end_process(path: str, took: float) -> None:
    """The decode thread cannot be stopped: the process is, as a crash would (no cleanup, so the results
    store session's slot file still names the file and the next session strikes it). Exit code 2."""
    import sys

    for fn in list(_last_words):
        with contextlib.suppress(Exception):
            fn()
    with contextlib.suppress(Exception):
        sys.stdout.flush()  # the records already written stay whole
    shown = shown_path(path)
    with contextlib.suppress(Exception):
        sys.stderr.write(f"error: reading {shown} has taken more than {took:.0f} s (--file-timeout): a "
                         "decoder stuck on it or a filesystem that does not answer; the scan stops here. With "
                         "--db the same command resumes, reads this file alone, and sets it aside (`crashed`) "
                         "if it hangs again; without --db, leave it out (--exclude) or raise --file-timeout\n")
        sys.stderr.flush()
    os._exit(2)


def shown_path(path: str) -> str:
    """A file's name for a stderr line: a crafted name must not drive the terminal (control characters escaped)."""
    from .report.safe import clean_str

    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in clean_str(path))
