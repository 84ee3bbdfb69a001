"""Command-line arguments -> an ordered list of files to scan.

Rules (docs/schema.md): a file named explicitly always gets a record; inside
directories only image extensions are taken and the rest is counted as
skipped; symlink loops, unreadable directories and special files become error
rows, never a crash. A symbolic link met inside a folder is followed only when
it stays inside the folders being scanned (`follow_links` lifts that): a link
in a received archive may point anywhere on this machine. Order is
deterministic: arguments in the order given, directory entries sorted by name.
"""
from __future__ import annotations

import fnmatch
import hashlib
import itertools
import os
import re
import select
import stat
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Callable, Iterable, Iterator, Sequence

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif",
                        ".tiff", ".heic", ".heif", ".hif", ".avif"})


class DiscoveryError(Exception):
    """A usage error: the run cannot start (nonexistent argument)."""


@dataclass
class Candidate:
    path: str
    explicit: bool = False
    error: tuple[str, str] | None = None  # (code, message) found during discovery
    # (st_dev, st_ino) of the file discovery found at this path (links followed): the reader refuses
    # whatever else stands there by the time it opens it (decode.read_bytes `expect`).
    ident: tuple[int, int] | None = None


@dataclass
class DiscoverySummary:
    skipped: int = 0                  # non-image files inside directories
    excluded: int = 0                 # filtered out by --include/--exclude
    duplicates: int = 0               # same file reached twice
    outside_links: int = 0            # links inside a folder that lead out of the scanned folders: not followed
    skipped_examples: list[str] = field(default_factory=list)
    outside_examples: list[str] = field(default_factory=list)
    # A list on stdin: whether its next name would wait on the writer now (Pipeline.run's `waiting`).
    waiting: Callable[[], bool] | None = field(default=None, repr=False, compare=False)
    list_state: "ListState | None" = field(default=None, repr=False, compare=False)


class LinkFence:
    """The rule for a symbolic link met inside a folder (docs/schema.md, "Discovery"): it is
    followed only when it resolves inside one of the folders given (a folder the user names is
    their choice, wherever it lies; a link inside it, from a received archive, may point anywhere
    on this machine). `follow` lifts the rule. Scan's discovery and the training/eval data loader
    (train/data.py) share it, so a folder reaches the same files in both."""

    def __init__(self, folders: Iterable[str], follow: bool = False):
        self.folders = [str(f) for f in folders]
        self.roots = [os.path.realpath(f).rstrip(os.sep) + os.sep for f in self.folders]
        self.follow = follow

    def holding(self, real: str) -> list[tuple[str, str]]:
        """The folders (resolved, as given) that hold this resolved path."""
        return [(r, f) for r, f in zip(self.roots, self.folders) if (real + os.sep).startswith(r)]

    def add(self, folder: str) -> None:
        """One more folder given (a folder named on stdin, met as the list is read)."""
        self.folders.append(str(folder))
        self.roots.append(os.path.realpath(folder).rstrip(os.sep) + os.sep)

    def allows(self, real: str) -> bool:
        """Whether a link resolving to `real` is followed."""
        return self.follow or bool(self.holding(real))


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
    return list(iter_path_list(stream))


# Linux's PATH_MAX, the NUL included: a `find -print0` list holds a NUL within its first 4,096 bytes, so
# a list without one there is read by lines, known from its first block (find writes 4,096 at a time),
# unless its first path ends with a NUL before any newline (a path past PATH_MAX, deep in a tree).
_SNIFF = 4096
_CHUNK = 65536


class ListState:
    """Where the reading of a path list stands, for the pipeline to tell whether its next file would wait
    on the list's writer (a script naming files as it finds them): then it writes the records so far."""

    def __init__(self, stream=None):
        self.ended = False    # the list's end was read
        self.names = 0        # names read, split and not taken yet (blank lines not counted)
        # The next candidate is at hand, read one ahead: it needs none of the list (the files of a folder it
        # named, or those of the arguments, which come before the list).
        self.walking = False
        try:
            self.fd = getattr(stream, "buffer", stream).fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None    # io.StringIO and the like: all there, never waits

    def waiting(self) -> bool:
        if self.ended or self.names or self.walking or self.fd is None:
            return False
        try:
            if hasattr(select, "poll"):
                # poll, not select: select refuses a descriptor of 1024 or more (a library host with many
                # files open), which had silently turned the early hand-over off.
                p = select.poll()
                p.register(self.fd, select.POLLIN)
                return not p.poll(0)
            readable, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):  # a closed list, or a platform whose select takes no pipes
            return False
        return not readable


def iter_path_list(stream, state: ListState | None = None) -> Iterator[str]:
    """Paths from stdin as they arrive: one per line, or NUL-separated (`find -print0`). Read a piece at
    a time, so `find /archive | aiidetect scan -` scans the first file while find is still walking, and
    memory holds a piece, not the list (before, the list was read to its end first: no record until the
    walk of a slow share was over, and every path held)."""
    # The raw bytes when there are any (sys.stdin.buffer): `find -print0` hands over names that are
    # not UTF-8, and a text-mode read would fail on the first one.
    src = getattr(stream, "buffer", stream)
    read_now = getattr(src, "read1", None) or src.read  # read1: what the pipe holds now, without waiting for more

    state = state or ListState()

    def read(n: int):
        try:
            data = read_now(n)
            state.ended = state.ended or not data
            return data
        except ValueError:
            # From Python, `with open(list) as f: records = scanner.scan("-", stdin=f)` closed the list before
            # the first record asked for it: "read of closed file" from deep inside discovery said nothing.
            if getattr(src, "closed", False) or getattr(stream, "closed", False):
                raise ValueError("the stream listing paths (stdin) was closed before it was read: it is read as "
                                 "the records are iterated, so keep it open until they are done") from None
            raise

    got: list = []
    size = 0
    while True:
        data = read(_CHUNK)
        if not data:
            break
        nul, nl, cr = ("\0", "\n", "\r") if isinstance(data, str) else (b"\0", b"\n", b"\r")
        got.append(data)
        if size < _SNIFF and nul in data[:_SNIFF - size]:
            break
        size += len(data)
        # Past _SNIFF with no separator yet (a first path longer than PATH_MAX, from `find -mindepth` deep in
        # a tree, or no list at all): the first separator to come tells the list's kind, as it told from the
        # whole list; waiting for it here held all that came before it.
        if size >= _SNIFF:
            break
        # No NUL yet and the writer stopped at a line's end: a line list written a line at a time (a script
        # naming files as it finds them, `(echo a.jpg; sleep 30) |`). Waiting for 4,096 bytes gave it no
        # record until then or the list's end. A -print0 list comes in find's 4,096-byte blocks, a NUL in
        # the first unless its first name is longer; one written in pieces that stops right after a newline
        # inside its first name is read by lines.
        if data.endswith(nl):
            break
    if not got:
        return
    head = got[0][:0].join(got)
    pieces = iter(lambda: read(_CHUNK), head[:0])  # until a read returns b"" (or "") at the end
    if isinstance(head, bytes) and head.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Windows PowerShell's `>` and Out-File write UTF-16: read as UTF-8 its NUL bytes split every
        # character into a path of its own, and a lone "/" among them walked the whole disk. It is decoded a
        # piece at a time (read whole, 100 MB of it took 540 MB); a byte pair that is no character becomes
        # U+FFFD, a name that then names no file (a lone surrogate would reach os.stat and end the scan).
        # Unless its first name, read as bytes, is a file: a name may start with those two bytes.
        from .report.safe import path_from_bytes

        if not _names_a_file(_split_list(path_from_bytes(head))[:1]):
            import codecs

            dec = codecs.getincrementaldecoder("utf-16")("replace")  # the mark says the byte order, and is dropped
            yield from _named(_split_pieces(dec.decode(head), _decoded(dec, pieces), state))
            return
    yield from _named(_split_pieces(head, pieces, state))


def _decoded(dec, pieces: Iterator[bytes]) -> Iterator[str]:
    for p in pieces:
        yield dec.decode(p)
    yield dec.decode(b"", True)


def _named(parts: Iterator[str]) -> Iterator[str]:
    first = next(parts, None)
    if first is None:
        return
    # A list saved by Notepad (or PowerShell's Out-File -Encoding utf8) starts with a byte-order mark, which
    # made its first path a missing file. U+FEFF is legal in a name too: one that exists keeps it.
    # A name past PATH_MAX keeps it (its record tells its length, with the mark, and why it opens nowhere).
    if first.startswith("\ufeff") and not isinstance(first, LongPath) and not _names_a_file([first]):
        first = first[1:]
    yield from (p for p in itertools.chain([first], parts) if p.strip())


def _kind(data, early: bool):
    """The separator `data` (bytes or str) tells, or None when it holds none. `early`: it is the list's
    start, where a NUL within _SNIFF characters makes a NUL list."""
    nul, nl, cr = ("\0", "\n", "\r") if isinstance(data, str) else (b"\0", b"\n", b"\r")
    first_nul = data.find(nul)
    ends = [i for i in (data.find(nl), data.find(cr)) if i >= 0]
    if first_nul < 0 and not ends:
        return None
    if first_nul >= 0 and ((early and first_nul < _SNIFF) or not ends or first_nul < min(ends)):
        return nul
    return nl if (nl in data or cr not in data) else cr


class LongPath(str):
    """A name on stdin of PATH_MAX bytes or more: no path this system opens (ENAMETOOLONG), so only its
    start is kept, with its length and a digest that tells two such names apart (a list with no line
    ends at all, a binary file piped in by mistake, must not be held whole: a 300 MB one took 1.2 GB)."""

    size: int
    digest: str

    @classmethod
    def of(cls, start: str, size: int, digest: str) -> "LongPath":
        p = cls(f"{start}\u2026({size:,} bytes, blake2b {digest})")
        p.size, p.digest = size, digest
        return p


# Files of a folder's listing whose ctime was not older than its mtime, remembered a folder (_walk_all's `note`).
_NOTED = 4

_PATH_MAX = 4096   # Linux's, its NUL included: a name of 4,096 bytes or more is refused by every call
_SHOWN = 200       # characters of an over-long name's start kept for its record


def _start(name):
    """An over-long name's first _SHOWN characters (bytes: not cut inside a UTF-8 character)."""
    start = name[:_SHOWN]
    if isinstance(name, bytes):
        for _ in range(3):
            if len(name) <= len(start) or name[len(start)] & 0xC0 != 0x80:
                break
            start = start[:-1]
    return start


def _split_pieces(head, pieces: Iterator, state: ListState | None = None) -> Iterator[str]:
    """_split_list a piece at a time. `head` (bytes or str) holds a NUL within _SNIFF characters, or
    _SNIFF characters, or the whole list: enough to tell the separator as _split_list tells it from the
    whole, or else the list's first name is longer than PATH_MAX and the first separator to come tells it.
    A name of PATH_MAX bytes or more comes as a LongPath, its bytes not held past that."""
    text = isinstance(head, str)
    nul, nl, cr = ("\0", "\n", "\r") if text else (b"\0", b"\n", b"\r")
    sep = _kind(head, early=True)
    # A name's bytes as this system's str for them: in a latin-1 or ASCII locale (PYTHONUTF8=0), decoded as UTF-8
    # `Grüße.jpg` was looked for under other bytes, or none, and every non-ASCII name on the list was missing.
    # A text list (UTF-16, a library's StringIO) holds the names' text: opened by its UTF-8 bytes, as records are.
    from .report.safe import path_from_bytes, path_from_text

    decode = path_from_text if text else path_from_bytes
    raw = (lambda t: t.encode("utf-8", "surrogateescape")) if text else (lambda b: b)

    # The pieces of the path not ended yet: each piece is searched once, and joined when the path's
    # end comes (re-split whole at each piece, a 64 MB list with no newline took 30 s, not 0.2). Past
    # PATH_MAX only its start, length and digest are kept (`long`).
    rest: list = []
    held = 0
    long: list | None = None   # [start, bytes so far, blake2b, a "\r" held back: a CRLF line's end?]

    def hold(piece) -> None:
        nonlocal held, long
        if long is not None:
            piece = long[3] + piece
            long[3] = piece[-1:] if piece.endswith(cr) else piece[:0]
            piece = piece[:len(piece) - len(long[3])]
            long[1] += len(raw(piece))
            long[2].update(raw(piece))
            return
        rest.append(piece)
        held += len(piece)
        if held >= _PATH_MAX:  # characters: a str's bytes are at least as many
            whole = head[:0].join(rest)
            long = [_start(whole), 0, hashlib.blake2b(digest_size=8), whole[:0]]
            hold(whole)
            rest.clear()

    def ended(last, crlf: bool = True):
        """The name held so far, ended by `last`, as it is yielded (a CRLF line's "\\r" dropped)."""
        nonlocal held, long
        if long is not None:
            hold(last)
            if not (crlf and sep == nl):
                long[1] += len(raw(long[3]))
                long[2].update(raw(long[3]))
            start, size, digest, _ = long
            long, held = None, 0
            return LongPath.of(decode(start), size, digest.hexdigest())
        part = head[:0].join(rest) + last if rest else last
        rest.clear()
        held = 0
        if crlf and sep == nl and part.endswith(cr):
            part = part[:-1]
        size = len(raw(part)) if not text or len(part) * 4 >= _PATH_MAX else 0
        if size >= _PATH_MAX:
            return LongPath.of(decode(_start(part)), size, hashlib.blake2b(raw(part), digest_size=8).hexdigest())
        return decode(part)

    for data in itertools.chain([head], pieces):
        if sep is None:
            sep = _kind(data, early=False)
            if sep is None:
                hold(data)
                continue
        if sep != nul:
            # No name holds a NUL: in a line list one ends a path too (a -print0 list whose first 4,096
            # bytes held a newline and no NUL, or a corrupt list). Kept, it reached os.stat and realpath
            # as "embedded null byte": a ValueError that ended the whole scan under --db or --shard.
            data = data.replace(nul, sep)
        if sep not in data:
            hold(data)
            continue
        *done, last = data.split(sep)
        names = [ended(part) for part in done]  # a piece's worth (64 KB): `state` counts those not taken
        hold(last)
        left = sum(1 for n in names if n.strip())
        for name in names:
            if state is not None:
                left -= bool(name.strip())
                state.names = left
            yield name
    if long is None:
        buf = head[:0].join(rest)
        if sep == nul:
            buf = buf.rstrip(cr + nl)  # a NUL list closed by a newline (`printf '%s\0' ...; echo`)
        elif sep == nl and buf.endswith(cr):
            buf = buf[:-1]
        rest.clear()
        yield ended(buf, crlf=False)
    else:
        yield ended(head[:0])


def _split_list(data: str) -> list[str]:
    # One per line means split at "\n" alone: str.splitlines also splits at form feeds, U+2028, U+0085 and
    # \x1c-\x1e, all legal in a file name, and `find | aiidetect scan -` got two missing files for each such name.
    # A CRLF list (written on Windows) drops its "\r"; names holding "\n" or ending in "\r" need -print0,
    # whose names are taken exactly as they come.
    if "\0" in data:
        parts = data.split("\0")
        parts[-1] = parts[-1].rstrip("\r\n")  # a NUL list closed by a newline (`printf '%s\0' ...; echo`)
        return parts
    if "\n" not in data and "\r" in data:
        return data.split("\r")  # lines ended by "\r" alone (a "Macintosh" text export) read as before
    return [x[:-1] if x.endswith("\r") else x for x in data.split("\n")]


def _names_a_file(parts: list[str]) -> bool:
    return bool(parts) and parts[0] != "" and os.path.lexists(parts[0])


def discover(args: Iterable[str], recursive: bool = True, include: Sequence[str] = (), exclude: Sequence[str] = (),
             stdin=None, strict: bool = True, follow_links: bool = False) -> tuple[list[Candidate], DiscoverySummary]:
    """Expand arguments. With strict=True a nonexistent explicit argument raises
    DiscoveryError (a usage error); paths read from stdin never do: a missing
    one becomes an error row, since lists from scripts go stale."""
    it, summ = iter_discover(args, recursive, include, exclude, stdin, strict, follow_links)
    return list(it), summ


def _why_missing(a: str) -> str | None:
    """The system's reason a path names nothing where it is not that nothing is there (a name past the file
    system's 255 bytes, a folder on the way that cannot be entered), which "no such file or directory"
    misstated; None when it is that."""
    import errno

    try:
        os.lstat(a)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and exc.strerror:
            return exc.strerror
    except ValueError:  # a NUL in it (from the library): no file has such a name
        pass
    return None


def _missing(a: str) -> str:
    """The usage error for a path argument that names nothing."""
    why = _why_missing(a)
    return f"cannot read {a}: {why}" if why else f"no such file or directory: {a}" + _missing_hint(a)


def _missing_hint(a: str) -> str:
    """Why a path typed on a command line names nothing, when its spelling says: what the shell does and
    this tool does not (a name may hold `~`, `*` or `\\`, so nothing is expanded or rewritten)."""
    if any(c in a for c in "*?["):
        return (" (a glob is not expanded here: the shell expands it on the command line; from Python, pass "
                "glob.glob(pattern))")
    if a.startswith("~") and os.path.expanduser(a) != a:
        # `aiidetect scan '~/photos'`: quoted, or from a script or a config file, no shell expands it
        return (f" (~ is expanded by the shell, and not inside quotes: {os.path.expanduser(a)} is "
                f"what ~ there stands for)")
    if os.sep == "/" and (re.match(r"[A-Za-z]:[\\/]", a) or "\\" in a and "/" not in a):
        # C:\photos\a.jpg copied from a Windows machine: on this system a backslash is part of a name
        return (" (a Windows path? Here folders are separated by /, and a drive is a mounted folder: "
                "/mnt/c/... under WSL, /Volumes/NAME/... on macOS)")
    return ""


def iter_discover(args: Iterable[str], recursive: bool = True, include: Sequence[str] = (),
                  exclude: Sequence[str] = (), stdin=None, strict: bool = True,
                  follow_links: bool = False) -> tuple[Iterator[Candidate], DiscoverySummary]:
    """Like discover, but the folders are walked as the iterator is consumed,
    so a sweep of millions of files never holds the list (the summary fills
    in as it goes). Usage errors still raise here, before anything is scanned.

    Memory stays bounded by the folders, not the files: to recognise a file
    reached twice it remembers the directories it entered and only those files
    that can be reached by a second path (symbolic links, hard links, files
    named explicitly or on stdin); a plain file in a folder entered once can
    only be reached once."""
    args = list(args)
    for a in args:
        if strict and not os.path.isdir(a) and not os.path.lexists(a):
            raise DiscoveryError(_missing(a))
    # Read as the walk goes (docs/scale.md, "Bounded memory"): the first file is scanned while the list
    # is still being written, and only a piece of it is held.
    summ = DiscoverySummary()
    if stdin is not None:
        summ.list_state = ListState(stdin)
        summ.waiting = summ.list_state.waiting
    listed = iter_path_list(stdin, summ.list_state) if stdin is not None else iter(())
    return _walk_all(args, listed, recursive, include, exclude, summ, follow_links), summ


def _packed(key):
    """(st_dev, st_ino) -> one int; other keys (a link's, a path) as they are."""
    return (key[0] << 64) | key[1] if isinstance(key, tuple) and len(key) == 2 else key


def _file_key(p: str):
    try:
        st = os.stat(p)
        return (st.st_dev, st.st_ino)
    except OSError:
        return os.path.abspath(p)


def _walk_all(args: list[str], listed: Iterable[str], recursive: bool, include: Sequence[str],
              exclude: Sequence[str], summ: DiscoverySummary, follow_links: bool = False) -> Iterator[Candidate]:
    # Every file named on stdin is remembered, to give a file named twice (overlapping lists, a hard link)
    # one record: as one int, (st_dev, st_ino) costs about 70 bytes a file in the set, a tuple 120.
    seen: set = set()
    entered: set[tuple[int, int]] = set()
    # Folders whose entries the walk went through: the path they were walked by when --include or --exclude
    # is given (the filters judged their files by that spelling, not the one a list names them by), and
    # their mtime as stat'ed before the listing, to tell a name added since (a file made after the walk), and
    # the files of that listing whose ctime was not older than it (`note`).
    walked: dict[tuple[int, int], list] = {}
    filtered = bool(include or exclude)
    # Files named as arguments may also lie inside a folder walked before them: remember them on both
    # paths. A file named on stdin is not known before it comes (the list is read as the walk goes):
    # walk_gave tells whether a folder walked before it gave it a record.
    named = {_file_key(p) for p in args if not os.path.isdir(p) and os.path.lexists(p)}
    # The folders being scanned, resolved: a link found inside them is followed only to a place inside
    # one of them (a folder named on the command line or on stdin is the user's choice, wherever it is;
    # one named on stdin counts from where the list names it).
    fence = LinkFence([p for p in args if os.path.isdir(p)], follow_links)
    holding = fence.holding

    def walk_reaches(real: str) -> bool:
        """Whether the walk gives this link's target file a record of its own (it lies in a scanned
        folder, within reach, and passes the filters): then the link is the second path to it.
        Remembering every plain file to catch that would cost memory per file."""
        for r, arg in holding(real):
            rel = real[len(r):]
            if (recursive or os.sep not in rel) and os.path.splitext(rel)[1].lower() in IMAGE_EXTS \
                    and _wanted(os.path.join(arg, rel), include, exclude):
                return True
        return False

    def walk_gave(p: str, st) -> bool:
        """Whether a folder walked before gave the file named `p` a record: its folder was walked, the name
        was in its listing, and the walk takes such a file (the rules of walk() below, for a file met there).
        `st`: os.stat(p), None when it fails (a broken link)."""
        # Cheapest first: a `find -type f` list names no folder, and its millions of files cost the three
        # stats of from_args alone (three more each here, on a network share, before anything was asked).
        if not walked or st is None:  # no folder walked yet; p does not stat (a broken link)
            return False
        name = os.path.basename(p)
        if os.path.splitext(name)[1].lower() not in IMAGE_EXTS:
            return False
        try:
            folder = os.stat(os.path.dirname(p) or ".")
        except OSError:
            return False
        fk = (folder.st_dev, folder.st_ino)
        if fk not in walked:
            return False
        spelled, listed_at, noted = walked[fk]
        # A folder whose mtime moved since its listing gained or lost names: this one was in the listing only
        # if the file's ctime (moved by its creation, a link or rename to here) is older than that listing's
        # mtime, both the filesystem's clock, or the walk noted it. Otherwise it may be new: a file made after
        # the walk and then named was dropped as the walk's, with no record at all. (A file also written since
        # is given a record of its own here: at worst a second one, never none.)
        if folder.st_mtime_ns != listed_at and st.st_ctime_ns >= listed_at \
                and _packed((st.st_dev, st.st_ino)) not in noted:
            return False
        if filtered and not _wanted(os.path.join(spelled, name), include, exclude):
            return False
        # A link the walk followed is in `seen` already. One it counted as reaching a scanned file left
        # the record to that file; one leading out of the folders scanned then gave none, even if the
        # folder it leads into was named on stdin since (the fence as it stands now would say "followed").
        return not os.path.islink(p) or walk_reaches(os.path.realpath(p))

    def new(key) -> bool:
        key = _packed(key)
        if key in seen:
            summ.duplicates += 1
            return False
        seen.add(key)
        return True

    def listing(top: str) -> Iterator[tuple[str, str, bool]] | OSError:
        """A folder's entries in name order, as (path, name, is a symbolic link). Held whole while the folder is
        walked (for the order), so kept as its names only, the links among them apart: the DirEntry objects
        took about 220 bytes an entry, the names about 70 (a folder of 1,000,000 files: 220 MB against 70)."""
        names: list[str] = []
        links: set[str] = set()
        try:
            with os.scandir(top) as it:
                for e in it:
                    names.append(e.name)
                    try:
                        if e.is_symlink():  # the listing's file type: no system call where the file system gives one
                            links.add(e.name)
                    except OSError:
                        pass  # its stat below fails too, and says why
        except OSError as exc:
            return exc
        names.sort()
        return ((os.path.join(top, n), n, n in links) for n in names)

    def note(first: list, key) -> None:
        """A file of a folder's first listing whose ctime is not older than the folder's mtime then: a file
        written after its folder's last change (a copy's data lands after its name; `cp -a`, tar and rsync set a
        folder's mtime back) looks made after the walk to walk_gave and to a second walk once the folder changes,
        and got a second record. The first _NOTED of a folder only (the last copy to land there, not every file
        of a copied archive: a walk keeps nothing per file); a later one may still get a second record."""
        if len(first[2]) < _NOTED:
            first[2] += (_packed(key),)

    def moved_since(again: bool, first: list, mtime: int) -> int | None:
        """`fresh` for a folder listed now with this mtime: when it is listed again and its mtime moved since
        its first listing, that listing's mtime (a file whose ctime is not older may have come since:
        walk_gave's rule), else None."""
        return first[1] if again and first[1] != mtime else None

    def walk(top: str, ancestors: frozenset, again: bool = False, mtime: int = 0) -> Iterator[Candidate]:
        # Depth first, each folder's entries in name order, with an explicit stack: recursion (one
        # Python frame per level) ended the whole scan with RecursionError on a tree 1,000 folders deep.
        entries = listing(top)
        if isinstance(entries, OSError):
            if not again:
                yield Candidate(top, error=("unreadable", f"cannot list directory: {entries.strerror or entries}"))
            return
        fresh = None
        for k in ancestors:  # the top folder (its one ancestor so far), listed
            again = again and k in walked  # not listed before (unreadable then): its files are new here
            first = walked.setdefault(k, [top if filtered else None, mtime, ()])
            fresh = moved_since(again, first, mtime)
        # The folders from the top down to the one being walked (a link back to one of them is a loop): one set,
        # each folder added as it is entered and taken out when it is done. A copy of it per level, as before,
        # made a tree 2,100 folders deep hold 2.2 million keys at its bottom (85 MB; the walk reaches that deep
        # before a path passes PATH_MAX).
        inside = set(ancestors)
        stack = [(entries, None, again, fresh, first)]
        while stack:
            it, entered_as, again, fresh, first = stack[-1]
            e = next(it, None)
            if e is None:
                stack.pop()
                inside.discard(entered_as)
                continue
            p, name, is_link = e
            try:
                st = os.stat(p)  # follows links
            except OSError as exc:
                if getattr(exc, "errno", None) == 40 or is_link:
                    if os.path.splitext(p)[1].lower() in IMAGE_EXTS or _is_dir_link(p):
                        # Keyed by the link itself: a broken link reached through two folder links is one row.
                        lk = _link_key(p)
                        if again:
                            summ.duplicates += 1
                        elif lk is None or new(lk):
                            yield Candidate(p, error=("symlink-loop" if getattr(exc, "errno", None) == 40
                                                      else "unreadable",
                                                      f"broken or looping symbolic link: {exc.strerror or exc}"))
                    elif not again:
                        summ.skipped += 1
                    continue
                if not again:  # a folder reached a second time already gave this row
                    yield Candidate(p, error=("unreadable", f"cannot stat: {exc.strerror or exc}"))
                continue
            is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTS
            real = os.path.realpath(p) if is_link else None
            if is_link and (recursive if stat.S_ISDIR(st.st_mode) else is_image) and not fence.allows(real):
                if not again:
                    summ.outside_links += 1
                    if len(summ.outside_examples) < 5:
                        summ.outside_examples.append(p)
                continue
            if stat.S_ISDIR(st.st_mode):
                if not recursive:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in inside:
                    if not again:
                        yield Candidate(p, error=("symlink-loop", "directory link points back to one of its parents"))
                    continue
                twice = again or key in entered
                entered.add(key)
                sub = listing(p)
                if isinstance(sub, OSError):
                    if not twice:
                        yield Candidate(p, error=("unreadable", f"cannot list directory: {sub.strerror or sub}"))
                    continue
                if key not in walked:
                    twice = False  # never listed before (made since, or unreadable then): its files are new here
                sub_first = walked.setdefault(key, [p if filtered else None, st.st_mtime_ns, ()])
                inside.add(key)
                stack.append((sub, key, twice, moved_since(twice, sub_first, st.st_mtime_ns),
                              sub_first))
                continue
            if not is_image:
                if not again:
                    summ.skipped += 1
                    if len(summ.skipped_examples) < 5:
                        summ.skipped_examples.append(p)
                continue
            if not _wanted(p, include, exclude):
                if not again:
                    summ.excluded += 1
                continue
            key = (st.st_dev, st.st_ino)
            packed = _packed(key)
            if again and (fresh is None or st.st_ctime_ns < fresh or packed in first[2]):
                # A folder reached a second time (named again, through a link): the files of its first
                # listing were counted already; one made there since (its ctime not older) was not.
                summ.duplicates += 1
                continue
            if not again and st.st_ctime_ns >= first[1]:
                note(first, key)
            if packed in seen or (is_link and walk_reaches(real)):
                summ.duplicates += 1
                continue
            if is_link or st.st_nlink > 1 or key in named or again:
                seen.add(packed)
            yield Candidate(p, ident=key)

    def from_args(items: Iterable[str], strict_missing: bool, on_stdin: bool = False) -> Iterator[Candidate]:
        for a in items:
            if isinstance(a, LongPath):
                yield Candidate(a, explicit=True, error=("unreadable", (
                    f"a name of {a.size:,} bytes on stdin, PATH_MAX ({_PATH_MAX:,}) or more: no path this system "
                    "opens, so only its start is kept (a list with no line ends, or not a list of paths?)")))
                continue
            if os.path.isdir(a):
                if on_stdin:
                    fence.add(a)
                try:
                    st = os.stat(a)
                    key = (st.st_dev, st.st_ino)
                except OSError as exc:
                    yield Candidate(a, explicit=True, error=("unreadable", str(exc.strerror or exc)))
                    continue
                twice = key in entered
                entered.add(key)
                files = walk(a, frozenset({key}), twice, st.st_mtime_ns)
                yield from (one_ahead(files) if on_stdin else files)
            elif os.path.lexists(a):
                # Named explicitly: always a record, whatever the extension or file type.
                try:
                    st = os.stat(a)
                    key = (st.st_dev, st.st_ino)
                except OSError:
                    st, key = None, os.path.abspath(a)
                if on_stdin and _packed(key) not in seen and walk_gave(a, st):
                    summ.duplicates += 1
                    continue
                if new(key):
                    yield Candidate(a, explicit=True, ident=key if isinstance(key, tuple) else None)
            elif not strict_missing:
                yield Candidate(a, explicit=True, error=("unreadable", _why_missing(a) or "no such file or directory"))

    def one_ahead(items: Iterator[Candidate]) -> Iterator[Candidate]:
        """`items`, one read ahead when a list is read: while the next is at hand, the records so far need not be
        written for want of the list's next name (a folder's walk in batches of one file while its writer is quiet)."""
        state = summ.list_state
        if state is None:
            yield from items
            return
        state.walking = True
        cur = next(items, None)
        while cur is not None:
            nxt = next(items, None)
            state.walking = nxt is not None
            yield cur
            cur = nxt
        state.walking = False

    yield from one_ahead(from_args(args, False))
    yield from from_args(listed, False, on_stdin=True)


def machine_id() -> str:
    """This machine's kernel, as far as (st_dev, st_ino) mean the same file: its boot id (shared by
    the containers on one host), else its host name. A Candidate's `ident` is checked only here:
    another node of a cluster numbers its mounts of the same share differently."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        import socket

        return socket.gethostname()


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


# Resolved folders remembered by one scan (one realpath per folder, not per file): enough for the
# folders in flight at once; cleared, not grown, beyond that.
_FOLDER_CACHE = 4096


def canonical_path(path: str, folders: dict[str, str] | None = None) -> str:
    """The file's path with its folder resolved: absolute, every symbolic link and `..` in the folder
    followed the way the kernel follows them (`link/..` is the link target's parent, not the folder
    the link lies in), its own name kept. `./a.jpg`, `/abs/a.jpg`, `x/../a.jpg`, a root given with a
    trailing slash, from another working folder or through a symlinked folder: one path.

    The name itself is not resolved: a symbolic link to a file, like a hard link, is a name of its
    own (docs/scale.md, "One file, one row"). `folders` caches the resolved folders of one scan; its
    keys are folders as spelled, so it must not outlive a change of working folder."""
    head, name = os.path.split(path)
    if name in ("", os.curdir, os.pardir):
        return os.path.realpath(path)  # a folder itself: a discovery error row
    head = head or os.curdir
    if folders is None:
        return os.path.join(os.path.realpath(head), name)
    real = folders.get(head)
    if real is None:
        if len(folders) >= _FOLDER_CACHE:
            folders.clear()
        real = folders[head] = os.path.realpath(head)
    return os.path.join(real, name)
