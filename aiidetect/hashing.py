"""SHA-256 of a file's bytes: the one helper every manifest, bundle, export
sidecar and weights identity uses, so a digest written by one is checked the
same way by the others. Also the one way those files are opened: only regular
files, since opening a FIFO for reading waits for a writer, forever."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20  # bounded memory whatever the file size


def open_regular(path: str | Path) -> BinaryIO:
    """The file opened for reading; OSError when it is not a regular file. O_NONBLOCK, then a check on
    the open descriptor: a FIFO in a head folder or in the optimize cache hung every scan in open()."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_at_most(f: BinaryIO, limit: int, size: int) -> bytes:
    """Up to `limit` bytes of `f` from where it stands, `size` the length fstat gave. A buffered read(n)
    allocates n bytes before it reads one: every photo of a scan, 3 KB or not, asked for the whole
    --max-bytes (512 MiB), and under `ulimit -v` or strict overcommit on a shared server a thumbnail
    came back `too-large`, "out of memory while reading". The size given is asked for (one byte more
    tells a file that grew since), what lies past it in bounded chunks up to the limit."""
    first = min(max(size, 0) + 1, limit)
    data = f.read(first)
    if len(data) < first:
        return data
    parts, n = [data], len(data)
    while n < limit:
        more = f.read(min(CHUNK, limit - n))
        if not more:
            break
        parts.append(more)
        n += len(more)
    return b"".join(parts)


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """A small file's bytes (a manifest, a sidecar, a decision); OSError when it is not a regular file
    or holds more than `max_bytes`."""
    with open_regular(path) as f:
        data = read_at_most(f, max_bytes + 1, os.fstat(f.fileno()).st_size)
    if len(data) > max_bytes:
        raise OSError(f"{path} holds more than {max_bytes} bytes")
    return data


def sha256_file(path: str | Path, max_bytes: int | None = None) -> str:
    """Hex digest of the file's bytes (OSError for what is not a regular file, or holds more than
    `max_bytes`: reading stops there, so a file grown past its size at stat time costs no more).
    The same digest a scan keys its records and result cache by (decode.read_sample)."""
    h = hashlib.sha256()
    n = 0
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            n += len(chunk)
            if max_bytes is not None and n > max_bytes:
                raise OSError(f"{path} holds more than {max_bytes} bytes")
            h.update(chunk)
    return h.hexdigest()
