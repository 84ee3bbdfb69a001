"""The results store: every record of an audit in one plain SQLite file.

`aiidetect scan PATH... --db audit.sqlite` writes one row per file and run,
committed in batches, so `kill -9` loses at most the rows of the batch in
flight. Re-running the same command resumes: a file whose path, size and
mtime already have a row for an *equivalent run* (same detector identities,
decode settings and fusion head, see `run_identity`) gets its stored record
back without being opened; a changed file is scanned again and its row
replaced. The results table is keyed by (run, path), so a file is in a run
exactly once however often the scan is interrupted.

Tables (docs/scale.md shows queries):

- ``runs``: one row per distinct run identity; ``identity`` and ``options`` as JSON.
- ``sessions``: one row per invocation that wrote into a run (host, pid, shard, engine,
  start/end, files written and resumed): the audit trail of who scanned what when.
- ``results``: (run_id, path) -> size, mtime_ns, sha256, verdict, p_ai, error code and
  message, fusion model, folder, the session that wrote it, and the full record as JSON.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import re
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, get_args

from .discover import canonical_path
from .records import (ERROR_CODES, SCHEMA_VERSION, VERDICTS, DetectorResult, Direction, ErrorInfo, Evidence, Record,
                      Status)

STORE_VERSION = "1"
# Failures whose cause can go away without the file changing: scanned again on every resume.
RETRY_CODES = frozenset({"unreadable", "changed-while-read", "internal-error"})
_RESULT_KEYS = ("status", "p_ai", "score", "score_kind", "reason", "evidence")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    options TEXT NOT NULL,
    detectors TEXT NOT NULL,
    fusion_model TEXT,
    aiidetect_version TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    host TEXT, pid INTEGER, shard TEXT, engine TEXT, argv TEXT,
    started_at TEXT NOT NULL, finished_at TEXT,
    files_written INTEGER DEFAULT 0, files_resumed INTEGER DEFAULT 0,
    status TEXT DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS crashes (
    path TEXT PRIMARY KEY,
    size INTEGER, mtime_ns INTEGER,
    strikes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    file TEXT NOT NULL,
    folder TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    verdict TEXT NOT NULL,
    p_ai REAL,
    error_code TEXT,
    error_message TEXT,
    fusion_model TEXT,
    session_id INTEGER,
    scanned_at TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (run_id, path)
);
CREATE INDEX IF NOT EXISTS results_verdict ON results (run_id, verdict);
CREATE INDEX IF NOT EXISTS results_sha ON results (sha256);
"""

_RESULT_COLS = ("run_id", "path", "file", "folder", "size", "mtime_ns", "sha256", "verdict", "p_ai", "error_code",
                "error_message", "fusion_model", "session_id", "scanned_at", "record")
_SESSION_AT = _RESULT_COLS.index("session_id")
_SESSION_COLS = ("session_id", "run_id", "host", "pid", "shard", "engine", "argv", "started_at", "finished_at",
                 "files_written", "files_resumed", "status")
# What `results summary/export/failed` and the shard notes read (parquet reads every results column).
_READ_COLS = {"results": ("run_id", "path", "file", "folder", "size", "sha256", "verdict", "p_ai", "error_code",
                          "error_message", "scanned_at", "record"),
              "runs": ("run_id", "detectors", "fusion_model", "created_at", "options"),
              "sessions": ("run_id", "shard", "status")}
_RUN_COLS = ("run_id", "identity", "options", "detectors", "fusion_model", "aiidetect_version", "created_at")


class StoreError(Exception):
    """The store cannot be opened or is not an aiidetect results store."""


class MergeStopped(StoreError):
    """A merge stopped at one source (its target's disk full): the message names it, the target and the sources
    merged and kept before it. A type, not the message's first words: a source's own error (damage met in it)
    begins with its name, which can be anything."""


def sqlite_uri(path: str | Path, query: str) -> str:
    """The SQLite URI of the file at `path` with `query` (`mode=ro`, `immutable=1`, ...)."""
    # Quoted: `audit#2.sqlite` or `50%.sqlite` is a file name, not a URI fragment or escape (unquoted, `#`
    # cut the name short and SQLite opened, read-write, a new empty file of the shorter name).
    from urllib.parse import quote

    return f"file:{quote(os.fsencode(os.path.abspath(os.fspath(path))))}?{query}"  # bytes: any name


def readonly_uri(path: str | Path) -> str:
    """The URI that reads a store without writing anything. mode=ro needs to create the -shm file
    beside a WAL database, which a read-only folder (evidence mounted read-only, a colleague's share,
    a DVD) refuses; a store closed cleanly has no -wal and is then read as immutable. A store with
    an unfinished -wal cannot be read whole there: StoreError says what to do."""
    probe = None
    try:
        probe = sqlite3.connect(sqlite_uri(path, "mode=ro"), uri=True)
        probe.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return sqlite_uri(path, "mode=ro")
    except sqlite3.OperationalError as exc:
        if _hot_journal(exc):
            raise  # never read as immutable, the half-made write in the file taken for the store: the caller says
        # A full disk is a read-only folder to SQLite: the -shm is made but cannot grow (SQLITE_IOERR_SHMSIZE), or
        # is not made (SQLITE_FULL). A finished store on a disk filled since was `cannot be read (disk I/O error)`
        # by every `results` command, though nothing needs writing to read it.
        full = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (10, 13)  # SQLITE_IOERR, SQLITE_FULL
        if not full and os.access(os.path.dirname(os.path.abspath(os.fspath(path))), os.W_OK):
            raise  # not the read-only folder: the caller says what it is
        wal = Path(f"{os.fspath(path)}-wal")
        if not wal.exists() or wal.stat().st_size == 0:
            return sqlite_uri(path, "immutable=1")
        raise StoreError(f"{path} cannot be opened read-only ({exc}): its folder cannot be written (read-only, or its "
                         f"disk full), and its write-ahead log {wal.name} holds rows not yet in the file; copy both "
                         "files to a writable folder and read the copy") from None
    except sqlite3.DatabaseError:
        return sqlite_uri(path, "mode=ro")  # not a database: the caller's query says so
    finally:
        if probe is not None:
            probe.close()


def _hot_journal(exc: sqlite3.Error) -> bool:
    """SQLITE_READONLY_ROLLBACK: a -journal beside the file holds a write a process was killed in (a store is in
    rollback-journal mode only as it is created, before WAL mode), which only a connection that may write rolls back."""
    return getattr(exc, "sqlite_errorcode", None) == 776


def _unfinished(path: Path) -> StoreError:
    return StoreError(f"{path} cannot be read as it is: {path.name}-journal beside it holds a write a process was "
                      "killed in (a `scan --db` killed as it created the store, which then holds no rows); the next "
                      f"`aiidetect scan --db {path}` rolls it back, and the results commands never write a store")


def _store_version(db: sqlite3.Connection) -> tuple[Any] | None:
    """The store's meta row of its version, None where it has none. Its first 20 characters only: the file's own
    words, a crafted one of any length costs no memory and no message."""
    return db.execute("SELECT substr(value, 1, 20) FROM meta WHERE key='store_version'").fetchone()


def _other_version(path: Path, ver: Any) -> str:
    """Why a store of another version is refused. A newer aiidetect's store is the likely case (the store copied to,
    or shared with, a machine not yet upgraded): say so, and what to do."""
    from . import __version__

    # The file's own text, shown as letters, digits and `.+-` only: a newline in it wrote a second `error:` line
    # of the sender's choosing (escaped here, a terminal's escapes were escaped twice by the line's printer).
    found = (re.sub(r"[^\w.+-]", "?", str(ver[0]), flags=re.ASCII) or "''") if ver else "?"
    try:
        newer = int(found) > int(STORE_VERSION)
    except (TypeError, ValueError):
        newer = False
    if newer:
        return (f"{path} is a results store of version {found}, written by a newer aiidetect; this one "
                f"({__version__}) knows version {STORE_VERSION} only and has written nothing to it: open it with "
                "the aiidetect that wrote it or a later one (upgrade this one)")
    return f"{path}: results store version {found} is not {STORE_VERSION}"


def _cannot_write(path: Path, exc: sqlite3.Error) -> StoreError:
    folder = path.parent if str(path.parent) else Path(".")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return StoreError(f"{path} cannot be written ({exc}): the store or its folder is read-only (SQLite keeps "
                          f"{path.name}-wal and {path.name}-shm beside it while writing); `aiidetect results` "
                          "reads a read-only store")
    return StoreError(f"{path} cannot be opened for writing ({exc})")


class _Damaged(str):
    """Stored text whose bytes are not UTF-8 (a damaged page, a hand edit): shown with U+FFFD, and
    never parsed as a record."""


def _text(raw: bytes) -> str:
    # sqlite3's default text_factory raised OperationalError for the whole query: one damaged row
    # stopped `results export` and every resume of the store, where it should cost that row.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _Damaged(raw.decode("utf-8", "replace"))


def _regular(path: Path) -> None:
    # Opening a FIFO to read blocks until someone writes to it: `results summary --db pipe` hung for
    # good (SIGTERM too: Python retries the interrupted open).
    if not path.is_file():
        raise StoreError(f"{path} is not a regular file (a pipe, socket or device), not a results store")


def _damaged(path: Path, what: str) -> str:
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size:
        what += f"; if {wal.name} beside it was copied from another store, move that away and try again"
    # .dump reads the tables, not their indexes (.recover failed outright in the sqlite3 3.40 shell).
    return (f"{path} is damaged ({what}): its counts and its resume cannot be trusted; copy its readable rows "
            f"into a new store (sqlite3 {path} .dump | sqlite3 rebuilt.sqlite) and use that, or start a new store")


# Beside the store, the state of its file (device, inode, size, mtime, ctime) when aiidetect last closed
# it cleanly; removed when a writer opens it. SQLite's full integrity check reads every page (13-18 s
# at 1M rows, docs/scale.md): it runs when the file is not as aiidetect left it, a bounded probe otherwise.
CLEAN_SUFFIX = "-clean"
# Beside the store too: damage met by any command, reader or writer. A writer open at that moment did not see it,
# and its clean close recorded the damaged file as clean (the next open ran the probe only, which may not read the
# damaged page). While it lies there no clean state counts, nor is one written; a full check that finds the store
# sound (a rebuilt store moved in under the name) removes it.
DAMAGED_SUFFIX = "-damaged"
_NOTE_MAX = 65536
_CLEAN_FORMAT = 1
# Rows the bounded probe looks up through the (run, path) index, spread over the table.
PROBE_ROWS = 256
# File timestamps come from the kernel's coarse clock (one tick: up to 10 ms behind): a change made
# within the tick of the store's last write could keep its mtime and ctime. The clean state is written
# only once that tick has passed.
_TICK_NS = 20_000_000


def _file_state(path: Path) -> dict[str, int]:
    st = os.stat(path)
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def _wal_pending(path: Path) -> bool:
    """A -wal with frames: a writer is open, or was killed, or it was copied from elsewhere."""
    try:
        return os.stat(f"{path}-wal").st_size > 0
    except OSError:
        return False


def _read_small(path: str, limit: int = 4096) -> bytes | None:
    # Not open() + read(): a FIFO named like the clean file would block the open for good.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        import stat

        return os.read(fd, limit) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def closed_cleanly(path: str | Path) -> bool:
    """Whether the store's file is exactly as aiidetect last closed it (the -clean file beside it says
    so, and no -wal holds frames): no process has written it since, not even SQLite."""
    path = Path(path)
    raw = _read_small(f"{path}{CLEAN_SUFFIX}")
    if raw is None or _wal_pending(path) or _damage_noted(path) is not None:
        return False
    try:
        recorded = json.loads(raw)
        return recorded == {"format": _CLEAN_FORMAT, **_file_state(path)}
    except (ValueError, OSError, RecursionError):  # RecursionError: a crafted file of nested brackets
        return False


def _settled_state(path: Path) -> dict[str, int]:
    """The file's state once no change could keep it (the kernel's tick since its last change has passed)."""
    st = os.stat(path)
    wait = max(st.st_mtime_ns, st.st_ctime_ns) + _TICK_NS - time.time_ns()
    if 0 < wait <= _TICK_NS:
        time.sleep(wait / 1e9)
    return _file_state(path)


def _record_clean(path: Path, checked: dict[str, int] | None = None) -> None:
    """Write the -clean file of a store just closed: its file's state, once no later change could keep it.
    Nothing is written when another connection still holds a -wal, or the file changed meanwhile.
    `checked`: the state a reader took (_settled_state) before a full check found the file sound; recorded
    only if the file is still in it (a writer that wrote meanwhile moved it: the check may have read either)."""
    tmp = f"{path}{CLEAN_SUFFIX}.{os.getpid()}.tmp"
    try:
        if _wal_pending(path) or _damage_noted(path) is not None:
            return
        state = checked or _settled_state(path)  # a change since `checked` is caught below, as any other
        with open(tmp, "x") as fh:
            fh.write(json.dumps({"format": _CLEAN_FORMAT, **state}))
        if _file_state(path) != state or _wal_pending(path):
            os.unlink(tmp)
            return
        os.replace(tmp, f"{path}{CLEAN_SUFFIX}")
        if _damage_noted(path) is not None:
            _forget_clean(path)  # damage met by another command while this one recorded: it wins
    except OSError:
        # No record: the next open runs the full check. A full disk, a read-only folder or an odd file in the
        # way costs time only.
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _forget_clean(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(f"{path}{CLEAN_SUFFIX}")


def _damage_noted(path: Path) -> tuple[int, int, int] | None:
    """The DAMAGED_SUFFIX file's (inode, mtime, size) when one lies beside the store (never opened: stat only)."""
    try:
        st = os.lstat(f"{path}{DAMAGED_SUFFIX}")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _note_damage(path: Path, what: str) -> None:
    """Damage met: no clean state now, nor from a writer that closes later (DAMAGED_SUFFIX). Added to a note
    there already: a full check under way then (which read the page before it went bad) must not remove it."""
    import stat

    _forget_clean(path)
    try:
        # O_NONBLOCK: a FIFO in its place would hold the open for good; O_NOFOLLOW: a link is never written through
        fd = os.open(f"{path}{DAMAGED_SUFFIX}", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK |
                     getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        return  # a read-only folder (where no writer records a clean state either), or something odd in the way
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size < _NOTE_MAX:
            os.write(fd, f"{_now()} {what[:500]}\n".encode("utf-8", "replace"))
        elif stat.S_ISREG(st.st_mode):
            os.utime(fd)  # a damaged store a script opens every minute: its note grows no more, its time does
    except OSError:
        pass
    finally:
        os.close(fd)


def _forget_damage(path: Path, noted: tuple[int, int, int] | None, say: Callable[[str], None]) -> None:
    """A full check found the store sound: the damage noted before it began is gone (a rebuilt store moved in).
    A note written or added to meanwhile is kept: that damage may be newer than the check's read. `say`: where
    a note that stays is told (the store's on_note)."""
    if noted is not None and _damage_noted(path) == noted:
        note = f"{path}{DAMAGED_SUFFIX}"
        try:
            os.unlink(note)  # a link or a FIFO planted there goes as a name: nothing is followed or opened
        except FileNotFoundError:
            pass
        except OSError as exc:
            # A folder of that name, another user's note in a sticky shared folder, a read-only folder: it
            # stays, and every open checks the whole store again. Silent, that looked like a slow disk.
            why = "it is a folder, not a note aiidetect wrote" if os.path.isdir(note) else exc.strerror or str(exc)
            say(f"{note} could not be removed ({why}): this full check found {path} sound, but while that "
                 "name lies there no clean state counts and every open checks the whole store (13-18 s at "
                 "1M rows, docs/scale.md); remove it (its owner, or someone who can write the folder) to "
                 "have later opens trust the store again")


def _say(line: str) -> None:
    """One line on stderr, for what costs time without failing: every full check pays it, so each
    command that pays it says so once (each store is checked whole at most once per command)."""
    import sys

    from .report.safe import printable

    with contextlib.suppress(Exception):  # a closed or full stderr never turns a sound store into an error
        sys.stderr.write(f"note: {printable(line)}\n")
        sys.stderr.flush()


def is_damage(exc: BaseException) -> bool:
    """Whether SQLite said the file is damaged (SQLITE_CORRUPT: "database disk image is malformed"), not
    that it could not read or lock it (an I/O error, a lock held past the timeout)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (code & 0xFF) == 11  # SQLITE_CORRUPT (the module's constant is 3.11+ too)
    return "malformed" in str(exc)


def _full_check(db: sqlite3.Connection) -> str:
    """'ok', or the first fault SQLite's integrity check finds. The full check, not quick_check: that
    one does not compare the indexes with the table, and a damaged index is what turns a resume into
    duplicate rows. It reads every page: its cost grows with the store (docs/scale.md)."""
    # one line: the check's report of a damaged page spans several
    return " ".join(str(db.execute("PRAGMA integrity_check(1)").fetchone()[0]).split())


def _probe(db: sqlite3.Connection, path: Path) -> str:
    """'ok', or a fault found by bounded reads, for a store whose file is as aiidetect left it: the
    header's page count against the file's size, and PROBE_ROWS rows spread over the results table
    (its first and last pages included) each found again through the (run, path) index resume reads.
    A few hundred page reads whatever the size: it catches a store cut short or grown, and only by
    chance one damaged page among millions (that is what the full check is for)."""
    size = os.stat(path).st_size
    pages, page_size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    if size != pages * page_size:
        return f"the file is {size} bytes, its header says {pages} pages of {page_size}"
    # Each end on its own: MIN and MAX in one query scan a whole index (0.15 s at 1M rows).
    ends = [db.execute(f"SELECT rowid FROM results ORDER BY rowid {o} LIMIT 1").fetchone() for o in ("ASC", "DESC")]
    if ends[0] is None:
        return "ok"
    lo, hi = ends[0][0], ends[1][0]
    step = max(1, (hi - lo) // PROBE_ROWS)
    # The row's key is looked up inside SQLite, never through Python: a path whose bytes are not UTF-8 (a
    # hand edit the full check let through) raised a decoding error that refused a writer's open.
    for target in [*range(lo, hi, step), hi]:
        row = db.execute("SELECT r.rowid, (SELECT group_concat(m.rowid) FROM results m WHERE m.run_id=r.run_id "
                         "AND m.path=r.path) FROM results r WHERE r.rowid >= ? ORDER BY r.rowid LIMIT 1",
                         (target,)).fetchone()
        if row is None:
            return f"row {target} of results is missing"
        if row[1] != str(row[0]):
            return f"row {row[0]} of results is not found through its (run, path) index"
    return "ok"


def _busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return (code & 0xFF) == 5 if code is not None else "locked" in str(exc)  # SQLITE_BUSY


def _to_wal(db: sqlite3.Connection, seconds: float = 60.0) -> None:
    """WAL mode, waiting for another process switching a new store at the same moment. Two `scan --db` started at
    once on a new store: each read the header and asked for the exclusive lock, and SQLite answers the second
    SQLITE_BUSY at once, without the busy timeout (waiting would deadlock on the other's read lock): one of them
    stopped with `database is locked` (3 to 6 of 90 opens, three processes at once). Asked again once the other one
    is through, the store is in WAL mode already."""
    end, delay = time.monotonic() + seconds, 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= end:
                raise
        _busy_wait(delay)
        delay = min(delay * 2, 0.25)


def _busy_wait(seconds: float) -> None:
    time.sleep(seconds)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# The meta row that says every results key is a path_key of this form (folders resolved). A store
# without it was written by a version that kept the folder as spelled: its rows are re-keyed once,
# when it is first opened for writing (ResultsStore._rekey).
PATH_KEYS = ("path_keys", "real-folder")


def _keys_resolved(db: sqlite3.Connection, schema: str = "main") -> bool:
    """Whether the store (`schema`: an attached one) has the PATH_KEYS mark: its keys are path_keys."""
    return db.execute(f"SELECT 1 FROM {schema}.meta WHERE key=?", (PATH_KEYS[0],)).fetchone() is not None


def path_key(path: str, folders: dict[str, str] | None = None) -> str:
    """The stored key of a file: canonical_path, so every spelling of one file's path resumes the
    others, and shards (shard.shard_of hashes the same path) never write one file twice. SQLite text
    is UTF-8, so a name that is not (docs/schema.md, file_bytes) is kept as its display form plus the
    base64 of its exact bytes: unique, stable, and still readable in a query. A UTF-8 name is its UTF-8 text
    whatever the locale: kept as Python's str, in an ASCII locale (PYTHONUTF8=0) it held surrogates that SQLite
    refused, and the first non-ASCII name ended the scan."""
    key = canonical_path(path, folders)
    from .report.safe import display_path, path_bytes_b64

    raw = path_bytes_b64(key)
    return display_path(key) if raw is None else f"{display_path(key)}#b64:{raw}"


def _resolves_elsewhere(folder: str) -> bool:
    """A stored folder that resolves to another path on this machine (a symbolic link or `..` in it).
    A store is input: a folder no file system has (a NUL in it) resolves nowhere."""
    try:
        return os.path.realpath(folder) != folder
    except (ValueError, OSError):
        return False


def _key_now(key: str, folders: dict[str, str]) -> str:
    """path_key of the path a stored key stands for; the key itself when it names no path."""
    try:
        return path_key(key_path(key), folders)
    except (ValueError, OSError):
        return key


def _same_file(st: os.stat_result, path: str) -> bool:
    """Whether `path` names the file `st` was taken of."""
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def key_path(key: str) -> str:
    """The path a stored key stands for (path_key's inverse: exact bytes for a '#b64:' key)."""
    head, sep, raw = key.rpartition("#b64:")
    if sep:
        import base64
        import binascii

        from .report.safe import display_path, path_bytes_b64

        with contextlib.suppress(binascii.Error, ValueError):
            decoded = base64.b64decode(raw, validate=True)
            # Only path_key's own form: a UTF-8 name that merely contains '#b64:' is kept as it is.
            if display_path(decoded) == head and path_bytes_b64(decoded) is not None:
                return os.fsdecode(decoded)
    from .report.safe import path_from_text

    return path_from_text(key)


# ---------------------------------------------------------------- records <-> JSON
def record_from_dict(d: Mapping[str, Any]) -> Record:
    """Inverse of Record.to_dict (the store keeps to_dict's output, so a resumed
    record prints exactly as it did when it was scanned)."""
    dets = {}
    for name, r in (d.get("detectors") or {}).items():
        dets[name] = DetectorResult(status=r["status"], p_ai=r.get("p_ai"), score=r.get("score"),
                                    score_kind=r.get("score_kind"), reason=r.get("reason"),
                                    evidence=[Evidence(**e) for e in r.get("evidence") or []],
                                    extra={k: v for k, v in r.items() if k not in _RESULT_KEYS})
    from .report.safe import path_from_record

    err = d.get("error")
    # a name that is not UTF-8 comes back as its exact bytes, so the record prints as it did
    file = path_from_record(d["file"], d.get("file_bytes"))
    return Record(file=file, sha256=d.get("sha256"), size_bytes=d.get("size_bytes"), format=d.get("format"),
                  width=d.get("width"), height=d.get("height"), verdict=d.get("verdict", "error"), p_ai=d.get("p_ai"),
                  detectors=dets, reasons=list(d.get("reasons") or []),
                  error=None if err is None else ErrorInfo(err["code"], err["message"]),
                  image_info=dict(d.get("image") or {}), fusion=d.get("fusion"),
                  band=None if d.get("band") is None else (d["band"]["ai"], d["band"]["real"]),
                  schema=_stored_schema(d.get("schema")))


def _stored_schema(v: Any) -> str:
    """A stored record's own schema ("1.2"), kept on export; this version's where it names none a version writes
    (absent, or not a version number: a merged store's hand edit)."""
    return v if isinstance(v, str) and re.fullmatch(r"\d{1,3}\.\d{1,3}", v) else SCHEMA_VERSION


_STATUSES, _DIRECTIONS = get_args(Status), get_args(Direction)
# A stored row whose record this version cannot read: exported as an error record of that file.
BAD_STORED_RECORD = "bad-stored-record"
_NUM = (int, float)


def _check_shape(d: Any) -> Mapping[str, Any]:
    """The field types record_from_dict and every writer rely on (a row comes from disk, or from
    another machine's store through `results merge`); ValueError naming the first that is wrong."""
    def want(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(what)

    def opt(v: Any, types: Any) -> bool:
        return v is None or (isinstance(v, types) and not isinstance(v, bool) if types is _NUM
                             else isinstance(v, types))

    def prob(v: Any) -> bool:
        return v is None or 0 <= v <= 1

    want(isinstance(d, dict), "not a JSON object")
    want(isinstance(d.get("file"), str), "file is not text")
    want(d.get("verdict", "error") in VERDICTS, "unknown verdict")
    for k, t in (("p_ai", _NUM), ("width", int), ("height", int), ("size_bytes", int), ("sha256", str),
                 ("format", str), ("file_bytes", str), ("image", dict), ("fusion", dict), ("reasons", list)):
        want(opt(d.get(k), t), f"{k} has the wrong type")
    want(prob(d.get("p_ai")), "p_ai is outside [0, 1]")
    band = d.get("band")   # absent before schema 1.3
    want(band is None or (isinstance(band, dict) and all(opt(band.get(k), _NUM) and band.get(k) is not None
                                                         and prob(band[k]) for k in ("ai", "real"))),
         "band is not {ai, real} thresholds in [0, 1]")
    want(all(isinstance(x, str) for x in d.get("reasons") or []), "reasons are not text")
    err = d.get("error")
    want(err is None or (isinstance(err, dict) and isinstance(err.get("code"), str)
                         and isinstance(err.get("message"), str)), "error is not {code, message}")
    # Codes, statuses and directions are closed lists as verdicts are (docs/schema.md; the record's JSON Schema
    # enumerates them): no version this one reads wrote another, and an edited row exported its own word as
    # if aiidetect had said it.
    want(err is None or err["code"] in ERROR_CODES, "unknown error code")
    dets = d.get("detectors")
    want(opt(dets, dict), "detectors is not an object")
    for r in (dets or {}).values():
        want(isinstance(r, dict) and isinstance(r.get("status"), str), "a detector result has no status")
        want(r["status"] in _STATUSES, "a detector's status is unknown")
        want(opt(r.get("p_ai"), _NUM) and opt(r.get("score"), _NUM), "a detector's p_ai or score is not a number")
        want(prob(r.get("p_ai")), "a detector's p_ai is outside [0, 1]")
        want(opt(r.get("evidence"), list) and all(isinstance(e, dict) for e in r.get("evidence") or []),
             "a detector's evidence is not a list of objects")
        want(all(e.get("direction") in _DIRECTIONS for e in r.get("evidence") or []),
             "an evidence item's direction is unknown")
        want(opt(r.get("attribution"), list), "a detector's attribution is not a list")
    return d


def _key_names(key: str) -> set[bytes]:
    """The file names (last component, exact bytes) a stored path key can stand for: the name after
    a '#b64:' suffix (path_key's form for a name that is not UTF-8), and the key's own last component
    (a file may be named 'x#b64:abc.jpg' itself; read only as base64, its every row was at odds)."""
    from .report.safe import path_from_text

    names = {os.path.basename(os.fsencode(path_from_text(key)))}
    head, sep, raw = key.rpartition("#b64:")
    if sep:
        import base64
        import binascii

        with contextlib.suppress(binascii.Error, ValueError):
            names.add(os.path.basename(base64.b64decode(raw, validate=True)))
    return names


# The row's columns a stored record must agree with (a query, a --verdict filter and the summary
# read the columns; export and resume read the record).
ROW_CHECK = ("path", "verdict", "p_ai", "sha256")


def _check_row(d: Mapping[str, Any], row: Mapping[str, Any]) -> None:
    """A record that disagrees with its own row: half of a hand edit, a damaged page, or a row
    moved under another file's path. (Anyone who can write the store can forge a row that agrees:
    this catches damage and careless edits, not a forger.)"""
    from .report.safe import path_from_record

    if "verdict" in row and row["verdict"] != d.get("verdict", "error"):
        raise ValueError(f"the row says {row['verdict']!r} and its record {d.get('verdict')!r}")
    if "p_ai" in row:
        a, b = row["p_ai"], d.get("p_ai")
        # The column holds the fused p_ai as computed, the record the 6 decimals to_dict rounds it to.
        if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-6):
            raise ValueError("the row's p_ai is not its record's")
    if "sha256" in row and row["sha256"] != d.get("sha256"):
        raise ValueError("the row's sha256 is not its record's")
    if "path" in row and os.path.basename(os.fsencode(os.path.normpath(
            path_from_record(d["file"], d.get("file_bytes"))))) not in _key_names(str(row["path"])):
        raise ValueError("the record is of another file than the row's path")


def parse_stored(text: Any, row: Mapping[str, Any] | None = None) -> Record:
    """A stored record, checked (and against the columns of its `row` in ROW_CHECK, where given);
    ValueError when it is not one this version reads."""
    from .report.safe import loads_foreign

    if isinstance(text, _Damaged):
        raise ValueError("its bytes are not UTF-8 text: the store is damaged there")
    try:
        d = _check_shape(loads_foreign(text))
        if row is not None:
            _check_row(d, row)
        return record_from_dict(d)
    except (KeyError, TypeError, AttributeError) as exc:  # Evidence(**e) with keys it lacks or does not know
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def stored_record(row: Mapping[str, Any]) -> Record:
    """The record of a results row for export; never raises: a row that cannot be read becomes an
    error record of its file, so one damaged row costs one record, not the whole export."""
    try:
        return parse_stored(row["record"], row)
    except ValueError as exc:  # json's decode errors are ValueErrors too
        return Record(file=row.get("file") or "?", verdict="error", error=ErrorInfo(
            BAD_STORED_RECORD, f"the stored record cannot be read ({str(exc)[:200]}); scan the file again"))


def record_json(rec: Record) -> str:
    # allow_nan=False: the store must hold JSON every reader parses; Record.to_dict already maps NaN to null.
    return json.dumps(rec.to_dict(), ensure_ascii=False, allow_nan=False, default=str)


# ---------------------------------------------------------------- identity
def run_identity(pipeline, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What makes two scans equivalent: every detector's cache identity (head
    checksums, backbone fingerprint, device, dtype, library versions), the
    decode settings, the fusion head, aiidetect's own source hash and the
    versions of its decoders (result_cache.build_identity). A
    detector that cannot state its identity (cache_identity() is None) is
    described instead, with the source hash guarding against stale code."""
    from dataclasses import asdict

    from .result_cache import build_identity

    dets = {}
    for d in pipeline.detectors:
        ident = d.cache_identity()
        dets[d.name] = ident if ident is not None else {"describe": d.describe()}
    fm = pipeline.fusion_model
    return {"detectors": dets,
            "decode": {"draft": pipeline.draft, "keep_image": pipeline.keep_image, "limits": asdict(pipeline.limits)},
            "fusion": None if fm is None else hashlib.sha256(
                json.dumps({k: v for k, v in fm.items() if k != "path"}, sort_keys=True, default=str).encode()
            ).hexdigest(),
            **build_identity(), **dict(extra or {})}


def fusion_name(pipeline) -> str:
    fm = pipeline.fusion_model
    return "rules" if fm is None else str(fm.get("name") or fm.get("path") or "fusion")


def _rows_where(run_ids: Sequence[str], verdicts: Sequence[str] = ()) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) of the rows of these runs with these verdicts."""
    where = [f"run_id IN ({','.join('?' * len(run_ids))})"]
    args: list[Any] = list(run_ids)
    if verdicts:
        # "error" is every row with an error (records.verdict_matches): a file whose pixels failed has its
        # metadata's verdict in `verdict` and its error code beside it.
        where.append(f"(verdict IN ({','.join('?' * len(verdicts))})"
                     + (" OR error_code IS NOT NULL)" if "error" in verdicts else ")"))
        args += list(verdicts)
    return " AND ".join(where), args


# ---------------------------------------------------------------- the store
class ResultsStore:
    """One SQLite file. Thread-safe (one connection behind a lock): the resume
    lookup runs in decode worker threads, the writes in the scan's thread."""

    def __init__(self, path: str | Path, readonly: bool = False, check: bool | str = True,
                 on_note: Callable[[str], None] | None = None):
        """check: True runs SQLite's full integrity check unless the file is exactly as aiidetect last
        closed it (closed_cleanly), where a bounded probe runs instead; "full" always runs the full
        check; False none (a store this process checked a moment ago). on_note: what costs time without
        failing (a damage note that cannot be removed), for a person; default one `note:` line on stderr
        (the `results` commands), a Scanner passes its own (docs/api.md)."""
        self.path = Path(path)
        # The clean state's file, whatever the working folder at close, and beside the file SQLite opens:
        # SQLite resolves a symbolic link and keeps the -wal beside its target, so a store named through a
        # link (or two spellings) has one clean state, and the -wal looked for is the one SQLite reads.
        self._abs = Path(os.path.realpath(path))
        self.readonly = readonly
        self._on_note = on_note or _say
        self._lock = threading.Lock()
        # A write or read that failed (a full disk, an I/O error, a damaged page met): no clean close
        # is recorded, so the next open checks the whole store.
        self._faulted = False
        self._closed = False
        self.checked = None  # "full", "probe" or None: what this open checked
        # A reader's full check that found the file sound: the state it read, recorded once the open has
        # found an aiidetect store there (never beside another program's database, an empty file).
        self._sound: dict[str, int] | None = None
        from .result_cache import close_when_gone

        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"no results store at {self.path}")
                if self.path.is_dir():
                    raise StoreError(f"{self.path} is a folder, not a results store")
                _regular(self.path)
                trusted = check is True and closed_cleanly(self._abs)
                self._db = sqlite3.connect(readonly_uri(self.path), uri=True, check_same_thread=False)
                close_when_gone(self, self._db)
                self._db.text_factory = _text
                self._refuse_other_version(self._db)
                damage = self._check(self._db, trusted) if check else "ok"
            else:
                if self.path.parent and not self.path.parent.exists():
                    raise StoreError(f"folder {self.path.parent} does not exist")
                if self.path.is_dir():
                    raise StoreError(f"{self.path} is a folder")
                if self.path.exists():
                    _regular(self.path)
                # Checked through a read-only connection, before one that writes: closing a writer
                # checkpoints the -wal into the file, and a -wal of another store (copied beside it)
                # then damaged the store for good even when the scan was refused.
                damage = self._integrity_ro(check) if check and self.path.exists() and self.path.stat().st_size else "ok"
                if damage != "ok":
                    raise self._found_damaged(f"SQLite integrity check: {damage}")
                # uri=True so that `merge` can attach its sources read-only.
                self._db = sqlite3.connect(sqlite_uri(self.path, "mode=rwc"), uri=True, check_same_thread=False,
                                           timeout=60)
                # Closed when this object goes (a Scanner with db never closed), not when the cyclic collector
                # meets the connection (its statement cache is a cycle): result_cache.ResultCache.
                close_when_gone(self, self._db)
                self._db.text_factory = _text
                tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if tables and "meta" not in tables:
                    # Someone else's database: never add tables to it.
                    self._db.close()
                    raise StoreError(f"{self.path} is an SQLite database, but not an aiidetect results store")
                # Before anything is written (read again: checked or not, it may have changed since): this
                # version's schema script, its WAL switch and the clean record's removal all changed a newer
                # version's store (an index it had dropped made again, its journal mode changed) that was then
                # refused anyway.
                self._refuse_other_version(self._db)
                # From here on the file is this writer's: the clean state recorded no longer says how it is
                # (a writer killed, or another one beside this one, leaves the next open the full check).
                _forget_clean(self._abs)
                _to_wal(self._db)
                # NORMAL in WAL mode: a committed batch survives a killed process (not a power cut).
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('store_version', ?)", (STORE_VERSION,))
                self._db.commit()
            ver = _store_version(self._db)
        except sqlite3.OperationalError as exc:  # could not open, read or write it: not a verdict on its content
            with contextlib.suppress(Exception):
                self._db.close()
            if str(exc).startswith("no such table"):
                raise StoreError(f"{self.path} is not an aiidetect results store ({exc})") from exc
            if readonly:
                if _hot_journal(exc):
                    raise _unfinished(self.path) from exc
                raise StoreError(f"{self.path} cannot be read ({exc})") from exc
            raise _cannot_write(self.path, exc) from exc
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            if is_damage(exc):
                raise self._found_damaged(str(exc)) from exc
            raise StoreError(f"{self.path} is not an aiidetect results store ({exc})") from exc
        problem = None
        if damage != "ok":
            # A damaged index answered resume's lookup with "no row": the file was scanned again and a
            # second row of the same (run, path) written beside the first, counted twice everywhere.
            problem = str(self._found_damaged(f"SQLite integrity check: {damage}"))
        elif ver is None or ver[0] != STORE_VERSION:
            problem = _other_version(self.path, ver)
        elif not readonly:
            # A table changed by hand (or by another tool) failed only at the first batch, after the scan.
            problem = self.missing_columns("this version cannot write into it")
        else:
            # Only what the results commands read: a store that lacks a column none of them needs is read.
            problem = self.missing_columns("this version cannot read it", _READ_COLS)
        if not problem and not readonly:
            try:
                if not _keys_resolved(self._db):
                    self._rekey()
            except sqlite3.Error as exc:
                problem = str(_cannot_write(self.path, exc))
        if problem:
            self._db.close()
            raise StoreError(problem)
        if self._sound is not None:
            _record_clean(self._abs, checked=self._sound)

    @contextlib.contextmanager
    def _using(self):
        """The connection's lock, for a scan's reads and writes: damage met under it is the store's error
        (_found_damaged), as at the open. A bare sqlite3 error from a page the probe did not read left the
        writer unfaulted, and its close wrote the clean record back."""
        with self._lock:
            try:
                yield
            except sqlite3.DatabaseError as exc:
                if is_damage(exc):
                    raise self._found_damaged(str(exc)) from exc
                raise

    @contextlib.contextmanager
    def _writing(self):
        """_using, for a write and its commit: a failed one (a full disk, a file size limit) faults the store and
        rolls back. The run's and session's rows wrote without it: a session that could not be
        started on a full disk (`cannot open the results store ...: disk I/O error`) or finished (its last UPDATE)
        left the store unfaulted, SQLite had rolled back, and the close recorded it clean."""
        with self._using():
            try:
                yield
            except sqlite3.Error:
                self._faulted = True
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                raise

    def _found_damaged(self, what: str) -> StoreError:
        """The error for damage met, at open or in any read or write after it. The clean record goes
        too, reader or writer: it let every later open trust the store and run only the probe, which
        reads a few hundred pages and may miss the damaged one again."""
        self._faulted = True
        _note_damage(self._abs, what)
        return StoreError(_damaged(self.path, what))

    def folders_not_rekeyed(self) -> int:
        """A store of an older version read as it is (read-only: `results` commands): how many folders
        of its rows resolve elsewhere on this machine, where a file scanned through two spellings has
        a row for each, counted twice. 0 for a store re-keyed or of this version."""
        with self._lock:
            if _keys_resolved(self._db):
                return 0
            return sum(_resolves_elsewhere(f) for (f,) in self._db.execute("SELECT DISTINCT folder FROM results"))

    def _rekey(self, once: bool = True) -> int:
        """Rows of a version that kept a file's folder as spelled, moved under path_key: the same
        file reached through a symlinked folder (or `link/..`) had a row per spelling, counted twice
        by every summary and scanned again by every resume under the other spelling. Of two rows that
        become one, the one scanned last is kept (as `merge` keeps it). Marks the store, in the same
        transaction, so it runs once; `once=False` (a merge of an older shard, inside the merge's
        transaction) re-keys a store already marked. Returns the rows moved or dropped."""
        from .report.safe import display_path

        db, folders, changed = self._db, {}, 0
        try:
            if not db.in_transaction:
                # The write lock before anything is read: of two processes opening an old store at
                # once, the second waits here and finds it marked. Reading first, it moved rows the
                # first had moved already onto themselves, and deleted them as duplicates.
                db.execute("BEGIN IMMEDIATE")
            if once and _keys_resolved(db):
                db.commit()
                return 0
            # The rows to move, listed in one pass (no index on folder: a pass per folder made a store
            # of many linked folders take hours), kept on disk, not in memory. A folder that is not
            # UTF-8 is stored as its display form: its rows say their bytes, so they are all read.
            db.execute("CREATE TEMP TABLE rekey_folders (folder TEXT PRIMARY KEY)")
            distinct = db.execute("SELECT DISTINCT folder FROM results")
            while batch := distinct.fetchmany(10_000):
                db.executemany("INSERT INTO rekey_folders VALUES (?)",
                               [(f,) for (f,) in batch if "\ufffd" in f or _resolves_elsewhere(f)])
            db.execute("CREATE TEMP TABLE rekey_rows AS SELECT rowid AS id, run_id, path, scanned_at "
                       "FROM results WHERE folder IN (SELECT folder FROM rekey_folders)")
            cur = db.execute("SELECT id, run_id, path, scanned_at FROM rekey_rows")
            while batch := cur.fetchmany(10_000):
                for rowid, run_id, key, scanned in batch:
                    new = _key_now(key, folders)
                    if new == key:
                        continue
                    changed += 1
                    other = db.execute("SELECT rowid, scanned_at FROM results WHERE run_id=? AND path=?",
                                       (run_id, new)).fetchone()
                    if other is not None and (other[1] or "") >= (scanned or ""):
                        db.execute("DELETE FROM results WHERE rowid=?", (rowid,))
                        continue
                    if other is not None:
                        db.execute("DELETE FROM results WHERE rowid=?", (other[0],))
                    db.execute("UPDATE results SET path=?, folder=? WHERE rowid=?",
                               (new, display_path(os.path.dirname(key_path(new))), rowid))
            db.execute("DROP TABLE rekey_rows")
            db.execute("DROP TABLE rekey_folders")
            # The crash strikes are keyed the same way: a file that ended a process stays set aside.
            crashes = db.execute("SELECT path, size, mtime_ns, strikes FROM crashes").fetchall()
            for key, size, mtime_ns, strikes in crashes:
                new = _key_now(key, folders)
                if new != key:
                    db.execute("DELETE FROM crashes WHERE path=?", (key,))
                    db.execute("INSERT OR REPLACE INTO crashes VALUES (?,?,?,?)", (new, size, mtime_ns, strikes))
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", PATH_KEYS)
            db.commit()
        except sqlite3.Error:
            self._faulted = True
            with contextlib.suppress(sqlite3.Error):
                db.rollback()
            raise
        return changed

    def _refuse_other_version(self, db: sqlite3.Connection) -> None:
        """StoreError (`db` closed) for a store whose meta names another version, before the integrity check: the
        full check reads every page (13-18 s at 1M rows, more for a crafted file), and then the version refused
        it anyway. A store with no version row goes on: a new file, or another program's database (said next)."""
        try:
            ver = _store_version(db)
        except sqlite3.OperationalError as exc:
            if str(exc).startswith("no such table"):
                return
            raise
        if ver is not None and ver[0] != STORE_VERSION:
            db.close()
            raise StoreError(_other_version(self.path, ver))

    def _integrity_ro(self, check: bool | str) -> str:
        trusted = check is True and closed_cleanly(self._abs)
        for attempt in (1, 2):
            db = sqlite3.connect(sqlite_uri(self.path, "mode=ro"), uri=True, timeout=60)
            try:
                db.text_factory = _text
                self._refuse_other_version(db)
                return self._check(db, trusted)
            except sqlite3.OperationalError as exc:
                # A scan killed as it created the store left a hot -journal: this read-only connection cannot roll
                # it back, and every later scan of the store stopped here (`attempt to write a readonly database`).
                # SQLite rolls it back at any open that may write, as the writer's own open would. Not beside a -wal
                # with frames: the writer's close would checkpoint it, which this check runs first to keep from.
                if attempt == 2 or not _hot_journal(exc) or _wal_pending(self._abs):
                    raise
            finally:
                db.close()
            rollback = sqlite3.connect(sqlite_uri(self.path, "mode=rw"), uri=True, timeout=60)
            try:
                rollback.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            finally:
                rollback.close()
        raise AssertionError("unreachable")

    def _check(self, db: sqlite3.Connection, trusted: bool) -> str:
        """The bounded probe for a file as aiidetect left it, else the full check."""
        self.checked = "probe" if trusted else "full"
        if trusted:
            db.execute("BEGIN")  # one snapshot: rows a writer replaces meanwhile are not taken for damage
            try:
                found = _probe(db, self._abs)
            except sqlite3.OperationalError as exc:
                if not str(exc).startswith("no such table"):
                    raise
                found = "ok"  # not a results store: the open says so next
            finally:
                db.rollback()
            if found == "ok":
                return found
            # What the probe finds, the full check confirms, and its word is final: a writer that opened the
            # store after it was found clean (its -wal outgrows the file) is no damage.
            self.checked = "full"
        noted = _damage_noted(self._abs)
        # A reader records what its full check found too (beside the store, never in it): a store copied or
        # moved (another inode) and only ever read afterwards was checked whole at every read. Recorded at the end
        # of the open (self._sound), once the file is known to be a results store. A writer records at its
        # close instead, after its own writes.
        before = _settled_state(self._abs) if self.readonly and not _wal_pending(self._abs) else None
        found = _full_check(db)
        if found == "ok":
            _forget_damage(self._abs, noted, self._on_note)
            self._sound = before
        return found

    def missing_columns(self, consequence: str, need: Mapping[str, Sequence[str]] | None = None) -> str | None:
        """What a table changed by hand (or by another tool) lacks of `need` (default: every column), or None."""
        need = need or {"results": _RESULT_COLS, "sessions": _SESSION_COLS, "runs": _RUN_COLS}
        for table, cols in need.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if not have:
                return f"{self.path} has no {table} table (changed by hand or by another tool); {consequence}"
            missing = [c for c in cols if c not in have]
            if missing:
                return (f"{self.path}: its {table} table lacks {', '.join(missing)} (changed by hand or by another "
                        f"tool); {consequence}")
        return None

    @property
    def db(self) -> sqlite3.Connection:
        return self._db

    def close(self) -> None:
        """Close; a writer that met no error and left no transaction open records the file's state
        (closed_cleanly), which spares the next open the full check."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clean = not self.readonly and not self._faulted and not self._db.in_transaction
            if clean:
                # SQLite empties the -wal when its last connection closes: a reader open then (a `results`
                # command, a dashboard holding the file open) kept the frames there, no clean state was recorded,
                # and every later open read the store whole until the next scan. The log is copied into the file
                # and emptied now, unless a read is under way (no wait: busy_timeout 0; nothing recorded then).
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA busy_timeout=0")
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._db.close()
        if clean:
            _record_clean(self._abs)
        elif not self.readonly:
            # Removed again, not only at open: a writer that closed a moment before this one opened could
            # put its record back after this one removed it, and then it would describe a store this one
            # met an error in.
            _forget_clean(self._abs)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Damage met by a read inside `with` (a page the open's probe did not read): the store's own
        # error, and no clean record left to trust at the next open.
        damaged = self._found_damaged(str(exc)) if is_damage(exc) else None
        self.close()
        if damaged is not None:
            raise damaged from exc

    # ---- writing
    def ensure_run(self, identity: Mapping[str, Any], options: Mapping[str, Any], detectors: Sequence[str],
                   fusion_model: str) -> str:
        from . import __version__

        blob = json.dumps(identity, sort_keys=True, default=str)
        run_id = hashlib.sha256(blob.encode()).hexdigest()[:16]
        with self._writing():
            self._db.execute("INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?)",
                             (run_id, blob, json.dumps(dict(options), sort_keys=True, default=str),
                              ",".join(detectors), fusion_model, __version__, _now()))
            self._db.commit()
        return run_id

    def start_session(self, run_id: str, shard: str | None, engine: str, argv: Sequence[str] | None) -> int:
        with self._writing():
            cur = self._db.execute(
                "INSERT INTO sessions (run_id, host, pid, shard, engine, argv, started_at) VALUES (?,?,?,?,?,?,?)",
                (run_id, socket.gethostname(), os.getpid(), shard, engine,
                 json.dumps(list(argv or [])), _now()))
            self._db.commit()
            return int(cur.lastrowid)

    def finish_session(self, session_id: int, written: int, resumed: int, status: str) -> None:
        with self._writing():
            self._db.execute("UPDATE sessions SET finished_at=?, files_written=?, files_resumed=?, status=? "
                             "WHERE session_id=?", (_now(), written, resumed, status, session_id))
            self._db.commit()

    def write_rows(self, rows: Sequence[tuple]) -> None:
        """One batch, and the count of each session that wrote it (the rows' session_id) in the same commit: a
        session killed (or its machine lost) never reaches finish_session, and its `files_written` stayed 0
        beside the rows it had committed."""
        if not rows:
            return
        # A failed batch is rolled back (_writing): the session's closing commit must not commit part of it.
        with self._writing():
            self._db.executemany(f"INSERT OR REPLACE INTO results ({','.join(_RESULT_COLS)}) "
                                 f"VALUES ({','.join('?' * len(_RESULT_COLS))})", rows)
            per_session = collections.Counter(r[_SESSION_AT] for r in rows)
            self._db.executemany("UPDATE sessions SET files_written=files_written+? WHERE session_id IS ?",
                                 [(n, sid) for sid, n in per_session.items()])
            self._db.commit()

    def crash_strikes(self) -> dict[str, tuple[int | None, int | None, int]]:
        """path key -> (size, mtime_ns, strikes): the files sessions died reading (crashguard)."""
        with self._using():
            return {r[0]: (r[1], r[2], int(r[3]))
                    for r in self._db.execute("SELECT path, size, mtime_ns, strikes FROM crashes")}

    def add_strikes(self, found: Sequence[Any], dead: Sequence[int], each: int = 1) -> None:
        """`each` strikes for each file a dead session (or process) was reading (crashguard.Seen): added
        to the strikes its reader knew of (`known`) when it is unchanged and still struck, else its first (a
        strike cleared meanwhile: another scan read the file to the end). Those sessions say
        `died`. Two scans that met the same read at once (both gave it up, or both died in it) knew of the
        same strikes: one incident, counted once. With `known` None (a slot of an older version), added to
        the strikes stored. One statement per file: read and written under one write lock, so a strike
        another scan gives at the same moment is never lost (a read, then a write, lost one)."""
        with self._using():
            try:
                for s in found:
                    known = getattr(s, "known", None)
                    self._db.execute(
                        "INSERT INTO crashes VALUES (?1,?2,?3,?4) ON CONFLICT(path) DO UPDATE SET strikes=CASE "
                        "WHEN crashes.size IS ?2 AND crashes.mtime_ns IS ?3 THEN "
                        "(CASE WHEN ?5 IS NULL THEN crashes.strikes + ?4 ELSE MAX(crashes.strikes, ?5 + ?4) END) "
                        "ELSE ?4 END, size=?2, mtime_ns=?3",
                        (s.key, s.size, s.mtime_ns, each, known))
                for sid in dead:
                    self._db.execute("UPDATE sessions SET status='died' WHERE session_id=? AND status='running'",
                                     (int(sid),))
                self._db.commit()
            except sqlite3.Error:
                self._faulted = True
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                raise

    def clear_strikes(self, key: str) -> None:
        """A file with a strike was read to the end (crashguard): not a file that ends the process."""
        with self._lock:
            try:
                self._db.execute("DELETE FROM crashes WHERE path=?", (key,))
                self._db.commit()
            except sqlite3.Error as exc:  # a full disk: the strike stays, and the file is read alone once more
                self._faulted = True
                if is_damage(exc):
                    self._found_damaged(str(exc))  # the next write or read stops the scan; none is recorded clean
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()

    def session_host(self, session_id: int) -> str | None:
        with self._using():
            row = self._db.execute("SELECT host FROM sessions WHERE session_id=?", (int(session_id),)).fetchone()
        return None if row is None else row[0]

    def run_is_empty(self, run_id: str) -> bool:
        with self._using():
            return self._db.execute("SELECT 1 FROM results WHERE run_id=? LIMIT 1", (run_id,)).fetchone() is None

    def run_rows(self, run_id: str) -> int | None:
        """The run's rows in the store, for the line that stops a scan whose write failed; None when the
        store cannot be read either (a read is not what failed, but it may be)."""
        try:
            with self._using():
                return int(self._db.execute("SELECT COUNT(*) FROM results WHERE run_id=?", (run_id,)).fetchone()[0])
        except (sqlite3.Error, StoreError):
            return None

    def lookup(self, run_id: str, key: str) -> dict[str, Any] | None:
        cols = ("size", "mtime_ns", "record") + ROW_CHECK
        try:
            with self._lock:
                row = self._db.execute(f"SELECT {','.join(cols)} FROM results WHERE run_id=? AND path=?",
                                       (run_id, key)).fetchone()
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise self._found_damaged(str(exc)) from exc
            self._faulted = True
            # A disk error or a lock held past the timeout, in a decode thread: the scan's StoreError (ScanError
            # from the library), not a sqlite3 error out of the records iterator.
            raise StoreError(f"cannot read the results store {self.path} ({exc}); the rows committed are kept, "
                             "and the same command resumes after them") from exc
        return None if row is None else dict(zip(cols, row))

    # ---- reading (results command)
    @contextlib.contextmanager
    def snapshot(self):
        """The reads inside see the store at one moment: a scan writing meanwhile commits its batches between
        separate statements, and `summary`'s counts, each read alone, disagreed (3 files of 6 distinct in one
        run). A read transaction of the connection (in WAL mode the writer is not held up); inside one already
        (a writer's pending rows), nothing more."""
        with self._lock:
            outer = self._db.in_transaction
            if not outer:
                self._db.execute("BEGIN")
        try:
            yield self
        finally:
            if not outer:
                with self._lock, contextlib.suppress(sqlite3.Error):
                    self._db.rollback()

    def runs(self, counts: bool = True) -> list[dict[str, Any]]:
        """The runs, oldest first; `files` and `sessions` (None unless `counts`: counting a run's files
        reads its every index entry, 0.1-0.2 s per million rows, which only `summary` shows)."""
        count = ("(SELECT COUNT(*) FROM results x WHERE x.run_id=r.run_id), "
                 "(SELECT COUNT(*) FROM sessions s WHERE s.run_id=r.run_id)") if counts else "NULL, NULL"
        with self._lock:
            rows = self._db.execute(
                f"SELECT r.run_id, r.detectors, r.fusion_model, r.created_at, r.options, {count} "
                "FROM runs r ORDER BY r.created_at").fetchall()
        from .report.safe import loads_foreign

        def options(text: Any) -> Any:
            # Informational only: one damaged value ended every results command with a JSONDecodeError.
            try:
                return loads_foreign(text)
            except (ValueError, TypeError):
                return None
        return [{"run_id": r[0], "detectors": r[1] or "", "fusion_model": r[2], "created_at": r[3],
                 "options": options(r[4]), "files": r[5], "sessions": r[6]} for r in rows]

    def resolve_run(self, run: str | None) -> list[str]:
        """--run PREFIX -> matching run ids; None -> every run."""
        ids = [r["run_id"] for r in self.runs(counts=False)]
        if not run:
            return ids
        found = [i for i in ids if i.startswith(run)]
        if not found:
            raise StoreError(f"no run {run!r} in {self.path}; runs: {', '.join(ids) or 'none'}")
        return found

    def iter_rows(self, run_ids: Sequence[str], verdicts: Sequence[str] = (), columns: Sequence[str] = _RESULT_COLS,
                  chunk: int = 1000) -> Iterator[dict[str, Any]]:
        """Stream rows (ordered by run, path) without loading the table."""
        where, args = _rows_where(run_ids, verdicts)
        sql = f"SELECT {','.join(columns)} FROM results WHERE {where} ORDER BY run_id, path"
        # A private cursor per call; fetchmany keeps memory at one chunk.
        with self._lock:
            cur = self._db.cursor()
            cur.execute(sql, args)
        while True:
            with self._lock:
                batch = cur.fetchmany(chunk)
            if not batch:
                break
            for r in batch:
                yield dict(zip(columns, r))

    def distinct_paths(self, run_ids: Sequence[str], verdicts: Sequence[str] = ()) -> int:
        """How many files the rows iter_rows(run_ids, verdicts) gives are of: fewer than the rows when
        several runs scanned the same file."""
        where, args = _rows_where(run_ids, verdicts)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(DISTINCT path) FROM results WHERE {where}", args).fetchone()[0])

    def summary(self, run_ids: Sequence[str], top_folders: int = 20) -> dict[str, Any]:
        q = f"run_id IN ({','.join('?' * len(run_ids))})"
        with self.snapshot(), self._lock:
            verdicts = dict(self._db.execute(f"SELECT verdict, COUNT(*) FROM results WHERE {q} GROUP BY verdict",
                                             run_ids).fetchall())
            errors = dict(self._db.execute(f"SELECT error_code, COUNT(*) FROM results WHERE {q} AND error_code "
                                           "IS NOT NULL GROUP BY error_code ORDER BY 2 DESC", run_ids).fetchall())
            # A folder's `error` counts the records with an error, as `--verdict error` and `failed` select them:
            # a file whose metadata decided it beside a decode error is under its verdict and under error.
            folders = self._db.execute(
                f"SELECT folder, COUNT(*), SUM(verdict='ai-generated'), SUM(verdict='uncertain'), "
                f"SUM(verdict='likely-real'), SUM(verdict='error' OR error_code IS NOT NULL) FROM results "
                f"WHERE {q} GROUP BY folder "
                f"ORDER BY SUM(verdict='ai-generated') DESC, COUNT(*) DESC, folder LIMIT ?",
                (*run_ids, top_folders)).fetchall()
            n_folders = self._db.execute(f"SELECT COUNT(DISTINCT folder) FROM results WHERE {q}", run_ids).fetchone()[0]
            # A file is in a run once, but in every run that scanned it: with several runs, `files` counts results.
            n_paths = self._db.execute(f"SELECT COUNT(DISTINCT path) FROM results WHERE {q}", run_ids).fetchone()[0]
        return {"store": str(self.path), "runs": list(run_ids), "files": sum(verdicts.values()),
                "distinct_files": n_paths,
                "verdicts": verdicts, "errors": errors, "folders_total": n_folders,
                "folders": [{"folder": f[0], "files": f[1], "ai-generated": f[2], "uncertain": f[3],
                             "likely-real": f[4], "error": f[5]} for f in folders]}

    def shard_gaps(self, run_ids: Sequence[str] | None = None) -> list[str]:
        """What the sessions say is missing from a sharded run: a shard I/N of no session here (not
        merged yet, or scanned with other detectors, weights, aiidetect version or decoder versions, which
        made it another run), or shards of one run split N ways in two ways (which overlap). A run that
        also has an unsharded session is whole by that session and not checked. And a shard (or an
        unsharded run) none of whose sessions ran to the end: killed, stopped, or still running."""
        from .shard import parse_shard

        with self._lock:
            rows = self._db.execute("SELECT run_id, shard, status FROM sessions").fetchall()
        per: dict[str, set] = {}
        finished: dict[tuple, bool] = {}
        for run_id, shard, status in rows:
            if run_ids is not None and run_id not in run_ids:
                continue
            try:
                part = parse_shard(shard)
            except ValueError:  # a spelling an older version accepted: not a gap we can judge
                part = None
            per.setdefault(run_id, set()).add(part)
            finished[run_id, part] = finished.get((run_id, part), False) or status == "complete"
        notes = []
        for (run_id, part), done in sorted(finished.items(), key=lambda x: (x[0][0], x[0][1] or (0, 0))):
            if not done:
                what = f"shard {part[0]}/{part[1]} of run {run_id}" if part else f"run {run_id}"
                notes.append(f"{what} never ran to the end (its sessions were stopped or killed, or one is still "
                             "running): files may have no row; the same scan command resumes it")
        for run_id, shards in sorted(per.items()):
            if None in shards:
                continue
            ns = sorted({n for _, n in shards})
            if len(ns) > 1:
                notes.append(f"run {run_id} has shards of {' and of '.join(f'/{n}' for n in ns)}: split in two ways, "
                             "they overlap and leave files out; scan it again with one N")
                continue
            n = ns[0]
            missing = [f"{i}/{n}" for i in range(1, n + 1) if (i, n) not in shards]
            if missing:
                shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                notes.append(f"run {run_id} lacks shard{'s' if len(missing) > 1 else ''} {shown}: its files are in no "
                             "row of this run (not merged yet, or scanned with other detectors, weights, aiidetect "
                             "version or Pillow, pillow-heif or numpy version or their codec libraries: another run)")
        return notes

    # ---- merging
    def merge_from(self, other: str | Path) -> dict[str, Any]:
        """Copy another store's runs, sessions and results into this one. A
        (run, path) present in both keeps the row scanned last; shards of one
        run never overlap, so their merge reports no conflicts. Merging a store
        again (a shard merged every night while it runs) adds what is new: a
        session already here is the same session, brought up to date, and an
        identical row is not a conflict."""
        other = Path(other)
        from .report.output import same_file

        if same_file(other, self.path):
            raise StoreError(f"{other} is the target store itself")
        src = ResultsStore(other, readonly=True, check=False)  # validates the version (merge_stores checked the rest)
        src.close()
        damaged = None
        with self._lock:
            db = self._db
            # Read-only: a source is an input (a shard on a read-only share; a killed shard's -wal is
            # read, never checkpointed into its file).
            db.execute("ATTACH DATABASE ? AS src", (readonly_uri(other),))
            try:
                # A shard of an older version keyed its files by the folder as spelled: its rows join
                # the others' keys here (on this machine's view of the folders), which may join rows, so
                # the target is counted. Otherwise the rows added are the source's rows not here, counted
                # through the index, not by counting the target whole (a second per million rows, twice).
                legacy = not _keys_resolved(db, "src")
                if legacy:
                    before = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                else:
                    added = db.execute("SELECT COUNT(*) FROM src.results s WHERE NOT EXISTS (SELECT 1 FROM results m "
                                       "WHERE m.run_id=s.run_id AND m.path=s.path)").fetchone()[0]
                incoming = db.execute("SELECT COUNT(*) FROM src.results").fetchone()[0]
                # A row in both that differs; the same row merged again is not a conflict.
                conflicts = db.execute(
                    "SELECT COUNT(*) FROM src.results s JOIN results m ON m.run_id=s.run_id AND m.path=s.path "
                    "WHERE m.scanned_at IS NOT s.scanned_at OR m.record IS NOT s.record").fetchone()[0]
                offset = db.execute("SELECT COALESCE(MAX(session_id), 0) FROM sessions").fetchone()[0]
                # By name: a source whose columns are in another order must not shift values between them.
                db.execute(f"INSERT OR IGNORE INTO runs ({','.join(_RUN_COLS)}) SELECT {','.join(_RUN_COLS)} "
                           "FROM src.runs")
                # Source session -> session here: the same invocation (run, host, pid, start, argv, shard,
                # engine) if it was merged before, else a new id above every id here. The shard and engine
                # count too: shard scans run from one process (the library, a service's loop) share the pid,
                # the argv and, when fast, the start second, and were taken for one session.
                db.execute("CREATE TEMP TABLE IF NOT EXISTS merge_sessions "
                           "(src_id INTEGER PRIMARY KEY, dst_id INTEGER)")
                db.execute("DELETE FROM merge_sessions")
                db.execute("INSERT INTO merge_sessions SELECT s.session_id, COALESCE((SELECT MIN(m.session_id) "
                           "FROM sessions m WHERE m.run_id=s.run_id AND m.host IS s.host AND m.pid IS s.pid AND "
                           "m.started_at=s.started_at AND m.argv IS s.argv AND m.shard IS s.shard AND m.engine IS s.engine), "
                           "s.session_id + ?) FROM src.sessions s",
                           (offset,))
                db.execute("INSERT INTO sessions SELECT x.dst_id, run_id, host, pid, shard, engine, argv, started_at, "
                           "finished_at, files_written, files_resumed, status FROM src.sessions s "
                           "JOIN merge_sessions x ON x.src_id=s.session_id WHERE x.dst_id > ?", (offset,))
                # A session merged while it was still running: the later copy says how it ended, or, not ended yet
                # (or killed, found `died` by the shard's next session), how far it got: its count grows per batch.
                db.execute("UPDATE sessions SET finished_at=s.finished_at, files_written=s.files_written, "
                           "files_resumed=s.files_resumed, status=s.status FROM src.sessions s "
                           "JOIN merge_sessions x ON x.src_id=s.session_id WHERE sessions.session_id=x.dst_id "
                           "AND x.dst_id <= ? AND (COALESCE(s.finished_at, '') > COALESCE(sessions.finished_at, '') "
                           "OR (s.finished_at IS NULL AND sessions.finished_at IS NULL AND "
                           "(s.files_written > sessions.files_written OR "
                           "(sessions.status = 'running' AND s.status <> 'running'))))",
                           (offset,))
                cols = ",".join(_RESULT_COLS)
                sel = ",".join("(SELECT dst_id FROM merge_sessions WHERE src_id=src.results.session_id)"
                               if c == "session_id" else c for c in _RESULT_COLS)
                upd = ",".join(f"{c}=excluded.{c}" for c in _RESULT_COLS if c not in ("run_id", "path"))
                db.execute(f"INSERT INTO results ({cols}) SELECT {sel} FROM src.results WHERE true "
                           f"ON CONFLICT(run_id, path) DO UPDATE SET {upd} "
                           f"WHERE excluded.scanned_at > results.scanned_at")
                if legacy:
                    self._rekey(once=False)  # commits with the rows
                    added = db.execute("SELECT COUNT(*) FROM results").fetchone()[0] - before
                else:
                    db.commit()
            except Exception as exc:
                self._faulted = True
                db.rollback()
                if not is_damage(exc):
                    raise
                damaged = exc
            finally:
                db.execute("DETACH DATABASE src")
        if damaged is not None:
            raise self._damage_in_merge(other, damaged) from damaged
        return {"source": str(other), "rows": incoming, "added": added, "conflicts": conflicts}

    def _damage_in_merge(self, other: Path, exc: BaseException) -> StoreError:
        """SQLite does not say which of the two files holds the damaged page it met: the source's full
        check does. The damaged one loses its clean record, and the error names it."""
        try:
            c = sqlite3.connect(readonly_uri(other), uri=True)
            try:
                found = _full_check(c)
            finally:
                c.close()
        except sqlite3.DatabaseError as e:
            found = str(e)
        if found == "ok":
            return self._found_damaged(str(exc))
        _note_damage(Path(os.path.realpath(other)), f"SQLite integrity check: {found}")
        return StoreError(_damaged(other, f"SQLite integrity check: {found}"))


# ---------------------------------------------------------------- one scan writing into the store
@dataclass
class _Pending:
    key: str
    size: int | None
    mtime_ns: int | None


class StoreSession:
    """The bridge between a scan and the store: `prior(candidate)` answers the
    resume question before the file is opened (called by Pipeline in decode
    threads), `add(record)` queues the finished record and commits every
    `batch` records or `interval` seconds."""

    def __init__(self, store: ResultsStore, run_id: str, fusion_model: str, shard: str | None = None,
                 engine: str = "local", argv: Sequence[str] | None = None, batch: int = 200,
                 interval: float = 2.0, resume: bool = True):
        self.store = store
        self.run_id = run_id
        self.fusion_model = fusion_model
        self.batch = max(1, int(batch))
        self.interval = interval
        self.resume = resume
        from .crashguard import recover

        # The files sessions of this store died reading, before this one starts its own slots.
        here = socket.gethostname()
        # Beside the file itself, as SQLite keeps its -wal: a session that died using the store through a link
        # (or a linked folder) left its slots beside the link, and one using another name never struck its files.
        found, dead = recover(str(store._abs), lambda sid: store.session_host(sid) not in (None, here))
        if found or dead:
            store.add_strikes(found, dead)
        self.crashed = sorted({s.key for s in found})
        self.session_id = store.start_session(run_id, shard, engine, argv)
        self.guard = None  # set by guard_reads() for an engine that reads here
        # Do this session's reads have a deadline (a file_timeout)? Only then is a stored `timeout` with one strike
        # read again (_struck_once): read with no limit, the file that hung would hang this scan for good.
        self.reads_timed = False
        # A run with no rows yet has nothing to resume: skip one lookup per file.
        self._nothing_stored = store.run_is_empty(run_id)
        self._stat: dict[str, _Pending] = {}      # path -> stat taken before reading: in-flight files only
        self._folders: dict[str, str] = {}        # folder as spelled -> resolved (path_key), bounded
        self._resumed: set[int] = set()           # id() of records handed back by prior(): in flight only
        self._rows: list[tuple] = []
        self._last = time.monotonic()
        self.written = 0
        self.resumed = 0

    def guard_reads(self):
        """The crashguard.CrashGuard for this session's reads (the local engine's, and the files an engine
        reading elsewhere hands out: crashguard.CrashGuard.died); None where the store's folder takes no
        lock (the scan then goes on without it)."""
        from .crashguard import CrashGuard, Seen

        def seen(path: str):
            p = self._stat.get(path)
            return None if p is None else Seen(p.key, p.size, p.mtime_ns)
        try:
            self.guard = CrashGuard(str(self.store._abs), self.session_id, self.store.crash_strikes(), seen,
                                    cleared=self.store.clear_strikes, struck=self._struck)
        except OSError:
            self.guard = None
        return self.guard

    def _struck(self, seen, times: int) -> None:
        try:
            self.store.add_strikes([seen], [], each=times)
        # a full disk: its `crashed` row, if stored, still keeps a resume from reading it (StoreError: damage,
        # which the store has noted; the scan's next read or write of it stops the run)
        except (sqlite3.Error, StoreError):
            pass

    def _struck_once(self, key: str, st: os.stat_result) -> bool:
        """Has this unchanged file fewer strikes than set it aside, and one at least (crashguard)? A `timeout`
        record with no strike (its store's folder took no lock, or an older version stored it) stays as it is:
        with no strike to add, a file that hangs would be read, and given up, on every resume. So does one met by a
        session whose reads have no deadline (reads_timed): nothing would give that read up."""
        from .crashguard import STRIKES_TO_REFUSE, Seen

        if self.guard is None or not self.reads_timed:
            return False
        return 0 < self.guard.count(Seen(key, st.st_size, st.st_mtime_ns)) < STRIKES_TO_REFUSE

    def prior(self, path: str) -> Record | None:
        """The stored record of an unchanged file (path, size and mtime as
        stored), or None when the file must be scanned. Only stats the file."""
        try:
            st = os.stat(path)
        except OSError:
            return None  # let the reader report why
        key = path_key(path, self._folders)
        if not _same_file(st, key_path(key)):
            # A folder's link changed since its realpath was remembered (a `current` link moved to
            # the next release during the scan): the key named a file other than the one read.
            self._folders.clear()
            key = path_key(path, self._folders)
        if self.resume and not self._nothing_stored:
            row = self.store.lookup(self.run_id, key)
            if row is not None and row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns:
                try:
                    rec = parse_stored(row["record"], row)
                except ValueError:
                    rec = None  # an unreadable row, or one at odds with itself: scan again and replace it
                if rec is not None and rec.size_bytes not in (None, st.st_size):
                    rec = None  # the record is of other bytes than the row says
                if rec is not None and rec.error is not None and rec.error.code in RETRY_CODES:
                    rec = None  # a permission fixed or a bug fixed changes no mtime: always try again
                if rec is not None and rec.error is not None and rec.error.code == "timeout" and \
                        self._struck_once(key, st):
                    rec = None  # one read given up (a strike): read again, alone; a second sets it aside
                if rec is not None:
                    rec.file = path
                    self._resumed.add(id(rec))
                    return rec
        self._stat[path] = _Pending(key, st.st_size, st.st_mtime_ns)
        return None

    def add(self, rec: Record) -> None:
        if id(rec) in self._resumed:
            self._resumed.discard(id(rec))
            self.resumed += 1
            return
        p = self._stat.pop(rec.file, None)
        if p is None:
            # Not stat-ed before reading (a discovery error row): key it now; size/mtime stay unknown, so it is
            # retried on resume (its cause may have been fixed).
            p = _Pending(path_key(rec.file, self._folders), None, None)
        err = rec.error
        from .report.safe import display_path

        # The folder of the key, not of the spelling: a summary's folders are the same whichever
        # spelling scanned a file last.
        self._rows.append((self.run_id, p.key, display_path(rec.file), display_path(os.path.dirname(
            key_path(p.key))), p.size, p.mtime_ns, rec.sha256,
                           rec.verdict, rec.p_ai, err.code if err else None, err.message if err else None,
                           self.fusion_model, self.session_id, _now(), record_json(rec)))
        if len(self._rows) >= self.batch or time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        try:
            self.store.write_rows(rows)
        except sqlite3.Error as exc:  # a full disk, a file size limit, a store locked past the timeout
            raise self.cannot_write(str(exc)) from exc
        self.written += len(rows)
        self._last = time.monotonic()

    def cannot_write(self, why: str) -> StoreError:
        """The one line of a scan stopped by a write into the store (or beside it: its slots) that failed."""
        # The run's rows, not only this session's: a resume that stopped on the same full disk said "the 800
        # rows committed before are kept" of a store holding 1,600, as if the earlier sessions' were lost.
        kept = self.store.run_rows(self.run_id)
        held = (f"the store keeps the {kept:,} rows of this run committed before ({self.written:,} of them by "
                "this session)" if kept is not None else
                f"the {self.written:,} rows this session committed before are kept")
        return StoreError(f"cannot write to the results store {self.store.path} ({why}); {held}, and the same "
                          "command resumes after them")

    def close(self, status: str = "complete") -> None:
        if self.guard is not None:
            self.guard.close()  # stopped or finished, not dead: nothing this session was reading is suspect
            # The guard's callbacks hold this session, and so the store: a cycle that kept the store's file open
            # until a full collection when its Scanner was dropped without close() (ResultsStore's finalizer).
            self.guard = None
        self.flush()
        try:
            self.store.finish_session(self.session_id, self.written, self.resumed, status)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the results store {self.store.path} ({exc})") from exc


def open_session(db: str | Path | ResultsStore, pipeline, options: Mapping[str, Any], shard: str | None = None,
                 engine: str = "local", argv: Sequence[str] | None = None,
                 batch: int = 200) -> StoreSession:
    """Open (or create) the store, or take one already open, and the run equivalent to this pipeline."""
    store = db if isinstance(db, ResultsStore) else ResultsStore(db)
    run_id = store.ensure_run(run_identity(pipeline), options, [d.name for d in pipeline.detectors],
                              fusion_name(pipeline))
    return StoreSession(store, run_id, fusion_name(pipeline), shard=shard, engine=engine, argv=argv, batch=batch)


def merge_stores(target: str | Path, sources: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every source is checked before any is merged: a damaged third shard used to stop the merge after
    the first two were committed, with nothing on stdout to say so."""
    sources = list(sources)
    for src in sources:
        try:
            with ResultsStore(src, readonly=True) as st:
                try:
                    problem = st.missing_columns("it cannot be merged")
                    st.db.execute("SELECT COUNT(*) FROM results").fetchone()
                except sqlite3.DatabaseError as exc:
                    problem = str(st._found_damaged(str(exc))) if is_damage(exc) else f"{src} cannot be read ({exc})"
        except StoreError as exc:
            problem = str(exc)
        if problem:
            raise StoreError(f"{problem}; no store was merged")
    with ResultsStore(target) as st:
        done: list[dict[str, Any]] = []
        for src in sources:
            try:
                done.append(st.merge_from(src))
            except (sqlite3.Error, OSError) as exc:
                # A full disk under the target stopped the merge with only SQLite's words ("database or disk is
                # full"): not which store, nor that the sources before it were merged and kept.
                before = (f"; {', '.join(str(d['source']) for d in done)} merged before it and kept" if done else "")
                raise MergeStopped(f"cannot merge {src} into {target} ({exc}): nothing of {src} was kept{before}; "
                                   "the same command merges what is missing") from exc
        return done


def write_parquet(store: ResultsStore, run_ids: Sequence[str], out: str | Path, chunk: int = 10_000) -> int:
    """Stream the results rows into a Parquet file, one row group per chunk
    (memory stays at one chunk). Written like every report (report/output.py:
    a temporary sibling renamed into place), so an interrupted export never
    leaves a truncated file under the real name, nor a partial one beside it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .report.output import atomic_output

    problem = store.missing_columns("its results cannot be written as Parquet", {"results": _RESULT_COLS})
    if problem:
        raise StoreError(problem)
    schema = pa.schema([("run_id", pa.string()), ("path", pa.string()), ("file", pa.string()),
                        ("folder", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                        ("sha256", pa.string()), ("verdict", pa.string()), ("p_ai", pa.float64()),
                        ("error_code", pa.string()), ("error_message", pa.string()),
                        ("fusion_model", pa.string()), ("session_id", pa.int64()), ("scanned_at", pa.string()),
                        ("record", pa.string())])
    n = 0
    with atomic_output(out, "wb") as fh, pq.ParquetWriter(fh, schema) as w:
        buf: list[dict[str, Any]] = []
        for row in store.iter_rows(run_ids):
            buf.append(row)
            if len(buf) >= chunk:
                w.write_table(pa.Table.from_pylist(buf, schema=schema))
                n += len(buf)
                buf = []
        if buf:
            w.write_table(pa.Table.from_pylist(buf, schema=schema))
            n += len(buf)
    return n
