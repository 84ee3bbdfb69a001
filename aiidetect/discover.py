"""Command-line arguments -> an ordered list of files to scan.

Rules (docs/schema.md): a file named explicitly always gets a record; inside
directories only image extensions are taken and the rest is counted as
skipped; symlink loops, unreadable directories and special files become error
rows, never a crash. Order is deterministic: arguments in the order given,
directory entries sorted by name.
"""
from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Iterable, Sequence

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif",
                        ".tiff", ".heic", ".heif", ".hif", ".avif"})


class DiscoveryError(Exception):
    """A usage error: the run cannot start (nonexistent argument)."""


@dataclass
class Candidate:
    path: str
    explicit: bool = False
    error: tuple[str, str] | None = None  # (code, message) found during discovery


@dataclass
class DiscoverySummary:
    skipped: int = 0                  # non-image files inside directories
    excluded: int = 0                 # filtered out by --include/--exclude
    duplicates: int = 0               # same file reached twice
    skipped_examples: list[str] = field(default_factory=list)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    name = os.path.basename(path)
    norm = path.replace(os.sep, "/")
    return any(fnmatch.fnmatch(norm, p) or fnmatch.fnmatch(name, p) or PurePath(norm).match(p) for p in patterns)


def _wanted(path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not _matches(path, include):
        return False
    return not (exclude and _matches(path, exclude))


def read_path_list(stream) -> list[str]:
    """Paths from stdin, one per line (NUL-separated also accepted, as from find -print0)."""
    # The raw bytes when there are any (sys.stdin.buffer): `find -print0` hands over names that are
    # not UTF-8, and a text-mode read would fail on the first one.
    data = getattr(stream, "buffer", stream).read()
    if isinstance(data, bytes):
        data = data.decode("utf-8", "surrogateescape")
    parts = data.split("\0") if "\0" in data else data.splitlines()
    return [p for p in (x.strip("\r\n") for x in parts) if p.strip()]


def discover(args: Iterable[str], recursive: bool = True, include: Sequence[str] = (), exclude: Sequence[str] = (),
             stdin=None, strict: bool = True) -> tuple[list[Candidate], DiscoverySummary]:
    """Expand arguments. With strict=True a nonexistent explicit argument raises
    DiscoveryError (a usage error); paths read from stdin never do: a missing
    one becomes an error row, since lists from scripts go stale."""
    out: list[Candidate] = []
    summ = DiscoverySummary()
    seen: set[tuple[int, int] | str] = set()

    def add(c: Candidate, key) -> None:
        if key is not None and key in seen:
            summ.duplicates += 1
            return
        if key is not None:
            seen.add(key)
        out.append(c)

    def file_key(p: str):
        try:
            st = os.stat(p)
            return (st.st_dev, st.st_ino)
        except OSError:
            return os.path.abspath(p)

    def walk(top: str, ancestors: frozenset) -> None:
        try:
            with os.scandir(top) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            add(Candidate(top, error=("unreadable", f"cannot list directory: {exc.strerror or exc}")), None)
            return
        for e in entries:
            p = e.path
            try:
                is_link = e.is_symlink()
                st = os.stat(p)  # follows links
            except OSError as exc:
                if getattr(exc, "errno", None) == 40 or is_link:
                    if os.path.splitext(p)[1].lower() in IMAGE_EXTS or _is_dir_link(p):
                        # Keyed by the link itself: a broken link reached through two folder links is one row.
                        add(Candidate(p, error=("symlink-loop" if getattr(exc, "errno", None) == 40 else "unreadable",
                                                f"broken or looping symbolic link: {exc.strerror or exc}")),
                            _link_key(p))
                    else:
                        summ.skipped += 1
                    continue
                add(Candidate(p, error=("unreadable", f"cannot stat: {exc.strerror or exc}")), None)
                continue
            if stat.S_ISDIR(st.st_mode):
                if not recursive:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    add(Candidate(p, error=("symlink-loop", "directory link points back to one of its parents")), None)
                    continue
                walk(p, ancestors | {key})
                continue
            if os.path.splitext(e.name)[1].lower() not in IMAGE_EXTS:
                summ.skipped += 1
                if len(summ.skipped_examples) < 5:
                    summ.skipped_examples.append(p)
                continue
            if not _wanted(p, include, exclude):
                summ.excluded += 1
                continue
            add(Candidate(p), (st.st_dev, st.st_ino))

    for a in args:
        if os.path.isdir(a):
            try:
                st = os.stat(a)
                walk(a, frozenset({(st.st_dev, st.st_ino)}))
            except OSError as exc:
                add(Candidate(a, explicit=True, error=("unreadable", str(exc.strerror or exc))), None)
        elif os.path.lexists(a):
            # Named explicitly: always a record, whatever the extension or file type.
            add(Candidate(a, explicit=True), file_key(a))
        elif strict:
            raise DiscoveryError(f"no such file or directory: {a}")
        else:
            add(Candidate(a, explicit=True, error=("unreadable", "no such file or directory")), None)
    if stdin is not None:
        more, sub = discover(read_path_list(stdin), recursive, include, exclude, None, strict=False)
        for c in more:
            add(c, file_key(c.path) if c.error is None else None)
        summ.skipped += sub.skipped
        summ.excluded += sub.excluded
    return out, summ


def _is_dir_link(p: str) -> bool:
    try:
        return os.path.islink(p) and not os.path.splitext(p)[1]
    except OSError:
        return False


def _link_key(p: str):
    try:
        st = os.lstat(p)
        return ("link", st.st_dev, st.st_ino)
    except OSError:
        return None
