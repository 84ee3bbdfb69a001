"""Where reports go: never over an input, never half-written.

`check_output` refuses a report path that is one of the files about to be read
or lies inside a folder being scanned (unless --exclude leaves it out), before
anything is opened for writing. `atomic_output` writes to a temporary file in
the destination folder and renames it over the target only when the report is
complete, so Ctrl-C, a crash or a full disk leaves the previous file intact.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence


class OutputError(Exception):
    """The output path is unusable; a usage error (exit 2), nothing was written."""


class OutputWriteFailed(OSError):
    """Writing the report failed part-way (a full disk, a quota, an I/O error): a fatal error (exit 2)
    said in one line that names where, not the "--debug shows the traceback" line of a bug."""


# What a failing write says. A write has no file name in its OSError; anything else in the body that
# fails with one of these and a name (a cache, a lock file) is not the report's failure.
_WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def write_failure(exc: BaseException, where: str, kept: str = "") -> OutputWriteFailed | None:
    """`exc` as a failed write of the report to `where`, or None when it is something else."""
    if (not isinstance(exc, OSError) or isinstance(exc, OutputWriteFailed) or exc.errno not in _WRITE_FAILURES
            or exc.filename is not None):
        return None
    return OutputWriteFailed(exc.errno, f"cannot write the report to {where}: {exc.strerror or exc}{kept}")


@contextlib.contextmanager
def report_writes(where: str, kept: str = "") -> Iterator[None]:
    """Turn a failed write of the report into OutputWriteFailed naming `where`."""
    try:
        yield
    except OSError as exc:
        failed = write_failure(exc, where, kept)
        if failed is None:
            raise
        raise failed from exc


class StdoutWrites:
    """sys.stdout (and its binary buffer) for the whole run (commands.errors.run_guarded): a write that
    fails for want of room is OutputWriteFailed naming standard output, at the point of the write, for
    every command and however it prints (print, click, rich). A write's OSError names no file, so the
    boundary could not tell a full stdout from a bug: `doctor > out.txt` on a full disk read
    `aiidetect: error: OSError: [Errno 28] No space left on device (aiidetect --debug ... shows the
    traceback)`. Anything but write and flush is the stream's own."""

    def __init__(self, stream):
        self._stream = stream
        self._buffer = None

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def write(self, s):
        with report_writes("standard output"):
            return self._stream.write(s)

    def writelines(self, lines) -> None:
        with report_writes("standard output"):
            self._stream.writelines(lines)

    def flush(self) -> None:
        with report_writes("standard output"):
            self._stream.flush()

    @property
    def buffer(self):
        raw = self._stream.buffer  # AttributeError where there is none: hasattr() says so, as before
        if self._buffer is None or self._buffer._stream is not raw:
            self._buffer = StdoutWrites(raw)
        return self._buffer


def _real(p: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(p)))


def cannot_make_under(target: Path) -> str | None:
    """'cannot be made: ...' or 'cannot be written: ...' when `target` (a folder or file still to be made)
    cannot be: the nearest folder above it that exists is a file, or cannot be written; None when it can.
    Asked before hours of work, not after."""
    above = target
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        return f"cannot be made: {above} is a file"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"cannot be written: no permission to write in {above}"
    return None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """The same file, or (when one does not exist yet) the same real path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return _real(a) == _real(b)


# The files SQLite keeps beside a database: writing over one of them corrupts the store.
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def check_output(output: str | os.PathLike, inputs: Sequence[str], candidates: Iterable[str] = (),
                 excluded: "callable | None" = None, store: str | os.PathLike | None = None) -> None:
    """Raise OutputError when writing `output` could touch an input.

    inputs: the path arguments (files or folders); candidates: the files
    discovery chose (the report must not be one of them); excluded(path) says
    whether --include/--exclude leave a path out of a folder scan; store: the
    results store (`--db`) the run reads or writes, never to be overwritten.
    """
    out = os.fspath(output)
    if is_stdout(out):
        return  # stdout touches no file
    real_out = _real(out)
    parent = os.path.dirname(real_out)
    if os.path.isdir(out):
        raise OutputError(f"--output {out} is a folder; give a file name")
    # A link is written through (its target replaced): the folder that matters is the target's. Naming the
    # link's own folder said "--output folder /tmp does not exist" of a dangling link in /tmp.
    folder = f"{parent} (where the link {out} leads)" if os.path.islink(out) else os.path.dirname(out) or "."
    if not os.path.isdir(parent):
        raise OutputError(f"--output folder {folder} does not exist")
    if not _direct(out) and not os.access(parent, os.W_OK):
        # Said now, before a model is loaded or a store session opened, not after the scan.
        raise OutputError(f"--output folder {folder} cannot be written (read-only or no "
                          "permission; the report is written beside FILE, then renamed onto it)")
    if store is not None:
        db = os.fspath(store)
        if any(same_file(db + suffix, out) for suffix in _SQLITE_COMPANIONS):
            # The report would be renamed over the audit's durable copy (or its write-ahead log).
            raise OutputError(f"--output {out} is the results store {db} (--db); write the report elsewhere")
    for c in candidates:
        if same_file(c, out):
            raise OutputError(f"--output {out} is one of the files being scanned; refusing to overwrite an input")
    for a in inputs:
        if a == "-":
            continue
        if os.path.isdir(a):
            root = _real(a)
            inside = real_out == root or real_out.startswith(root.rstrip(os.sep) + os.sep)
            if inside and not (excluded is not None and excluded(out)):
                raise OutputError(f"--output {out} lies inside the scanned folder {a}; write the report elsewhere "
                                  "or leave it out with --exclude")
        elif same_file(a, out):
            raise OutputError(f"--output {out} is one of the inputs; refusing to overwrite it")


def is_stdout(path: str | os.PathLike) -> bool:
    """`-o -` is standard output, as `-` is standard input for `report -`: it wrote a file named "-"
    in the working folder and left stdout empty, with exit 0, to a script that piped it on."""
    return os.fspath(path) == "-"


def utf8_stdout() -> IO[str]:
    """stdout for a document that is UTF-8 by contract (JSON, JSONL, CSV, the HTML page that declares
    `charset=utf-8`), on a terminal too: under a locale or PYTHONIOENCODING that is not UTF-8 (latin-1,
    ascii), the first non-ASCII file name ended the run with a UnicodeEncodeError (exit 2) and half a
    document. (A file or a pipe is UTF-8 for every command already: commands.errors.utf8_output.)"""
    enc = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if enc != "utf8" and hasattr(sys.stdout, "reconfigure"):
        with contextlib.suppress(ValueError, OSError):
            sys.stdout.reconfigure(encoding="utf-8")
    return sys.stdout


def guard_candidates(cands: Iterable, output: str | os.PathLike) -> Iterator:
    """Pass discovery's candidates through, raising OutputError when one of
    them is the output file (lazy discovery cannot list them in advance)."""
    try:
        # `-o -` writes no file, whatever a file named "-" in the working folder is
        st = None if is_stdout(output) else os.stat(output)
        target = (st.st_dev, st.st_ino) if st is not None else None
    except OSError:
        target = None  # nothing there yet: no input can be it
    for c in cands:
        if target is not None and getattr(c, "error", None) is None:
            try:
                cs = os.stat(c.path)
                if (cs.st_dev, cs.st_ino) == target:
                    raise OutputError(f"--output {os.fspath(output)} is one of the files being scanned; "
                                      "refusing to overwrite an input")
            except OSError:
                pass
        yield c


def _direct(path: str | os.PathLike) -> bool:
    """Is `path` something to write into rather than replace? A device (`-o /dev/null`), a FIFO
    another process reads, a /dev/fd or /proc handle: renaming a file over one of those would put a
    regular file where the device or pipe was (as root, /dev/null itself), and the reader would
    never get the report."""
    absolute = os.path.abspath(os.fspath(path))
    # A descriptor's name: /dev/stdout leads to whatever the shell opened, a regular file included.
    if absolute.startswith(("/proc/", "/dev/fd/")) or absolute in ("/dev/stdout", "/dev/stderr"):
        return True
    try:
        return not stat.S_ISREG(os.stat(absolute).st_mode)
    except OSError:
        return False  # nothing there yet (or a dangling link): a new regular file


# A temporary report older than this and not locked is left over from a killed run (the age covers only
# the instant between its creation (_temporary_beside) and flock of a run starting now).
STALE_SECONDS = 10


def _remove_stale_temporaries(target: Path, mine: str) -> None:
    """Remove the temporary reports that runs killed (kill -9, a power cut, OOM) left beside `target`:
    a sweep stopped and resumed many times otherwise fills the disk with hidden, partial copies of a
    report that may run to gigabytes. A live run holds a lock on its own (even one that writes
    nothing until the end, as html does); a file created a moment ago is not yet locked, hence the age."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing can tell a live run's file from a dead one's
        return
    prefix = f".{target.name}."
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(target.parent) as entries:
        for e in entries:
            name = e.name
            # exactly _temporary_beside's name for this target (not `.report.json.x.<random>.tmp` of another one)
            if not (name.startswith(prefix) and name.endswith(".tmp") and len(name) == len(prefix) + 12
                    and name[len(prefix):-4].replace("_", "").isalnum()) or e.path == mine:
                continue
            try:
                st = e.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_SECONDS:
                    continue
                fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused while its writer lives
                    os.unlink(e.path)
                finally:
                    os.close(fd)
            except OSError:
                continue  # in use, gone already, or locks unsupported here: leave it


_TMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _temporary_beside(target: Path, mode: int) -> tuple[int, str]:
    """(descriptor, path) of a new file `.NAME.XXXXXXXX.tmp` beside `target` (mkstemp's name, which
    _remove_stale_temporaries knows), created with `mode` less the umask. Not mkstemp, which makes 0600, and
    not a umask read to work out a plain open()'s mode: reading it means setting it, and a thread of a host
    creating a file in that instant got mode bits it did not ask for (the umask is the process's)."""
    import secrets

    flags = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_BINARY", 0))
    for _ in range(tempfile.TMP_MAX):
        name = os.path.join(str(target.parent),
                            f".{target.name}.{''.join(secrets.choice(_TMP_CHARS) for _ in range(8))}.tmp")
        try:
            return os.open(name, flags, mode), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(target.parent))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path`; on success fsync and rename it over
    `path`; on any exception (KeyboardInterrupt included) remove it and leave
    `path` as it was. `-` is standard output. A device or FIFO is written into, as a shell's `>` would;
    a symbolic link keeps pointing where it did (the file it leads to is replaced)."""
    kw = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    if is_stdout(path):
        # A full stdout is said by the run's own guard (StdoutWrites, around every write of every command);
        # one here too wrapped the whole body, and named stdout for an I/O error reading something else.
        out = sys.stdout.buffer if "b" in mode else utf8_stdout()
        yield out
        out.flush()
        return
    if _direct(path):
        with report_writes(os.fspath(path)), open(path, mode, **kw) as fh:
            yield fh
        return
    target = Path(os.path.realpath(os.fspath(path)))
    try:
        # An existing report keeps its permissions (a private 0600 report stays private), as with `>`.
        keep: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        keep = None  # a new report gets what a plain open() gives: created so (_temporary_beside)
    fd, tmp = _temporary_beside(target, 0o600 if keep is not None else 0o666)
    ok = False
    fh = None
    try:
        fh = os.fdopen(fd, mode, **kw)
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            # "Being written": held until the file is renamed into place (released when it is closed).
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _remove_stale_temporaries(target, tmp)
        # The temporary file is removed below: nothing that looks complete is left, and a report that
        # stood at the path is kept.
        with report_writes(os.fspath(path), "; nothing was written there"
                           + (" (the file already there is kept)" if os.path.lexists(target) else "")):
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if keep is not None:
            with contextlib.suppress(OSError):
                os.chmod(tmp, keep)
        os.replace(tmp, target)
        ok = True
    finally:
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        else:
            os.close(fd)
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def save_image(img, path: str | os.PathLike) -> None:
    """Save a PIL image through `atomic_output`, in the format its extension names (PNG when the
    extension names none): a half-written picture never replaces a previous one."""
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    with atomic_output(path, "wb") as fh:
        img.save(fh, format=fmt)
