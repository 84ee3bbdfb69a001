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


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """A small file's bytes (a manifest, a sidecar, a decision); OSError when it is not a regular file
    or holds more than `max_bytes`."""
    with open_regular(path) as f:
        data = f.read(max_bytes + 1)
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
