"""--shard I/N: split a sweep between N processes or machines by a stable hash
of each path, so every file is scanned by exactly one of them.

The hash is of the results store's key of the file (discover.canonical_path: absolute, its folder
resolved), never of Python's per-process salted hash(): `arch`, `./arch/`, `/data/arch` from /data
and a symlinked folder leading to it split the same way, so shards given the folder in different
spellings still partition it, and no two shards write a row for the same file. The files must be at
the same resolved path on every machine (the same mount point).
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Iterable, Iterator

from .discover import Candidate, canonical_path


# More shards than this is a typo: a 64-bit hash mod N is no longer even, and each shard would hold
# next to nothing.
MAX_SHARDS = 1_000_000


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/3' -> (2, 3); raises ValueError with the rule when malformed."""
    if text is None:
        return None
    rule = f"--shard takes I/N with 1 <= I <= N <= {MAX_SHARDS:,} (e.g. 2/3), got {text!r}"
    # ASCII digits only: int() also reads '1_0', ' 2' and other scripts' digits, which the sessions
    # table would then keep in a spelling no other shard shares.
    m = re.fullmatch(r"([0-9]+)/([0-9]+)", text)
    if m is None or len(m[2]) > 7:
        raise ValueError(rule)
    i, n = int(m[1]), int(m[2])
    if not 1 <= i <= n <= MAX_SHARDS:
        raise ValueError(rule)
    return i, n


def shard_of(path: str, n: int, folders: dict[str, str] | None = None) -> int:
    """1..n, the same on every machine and Python version, and for every spelling of the path
    (`folders`: discover.canonical_path's cache of resolved folders)."""

    raw = os.fsencode(canonical_path(path, folders))
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") % n + 1


def in_shard(cands: Iterable[Candidate], shard: tuple[int, int] | None) -> Iterator[Candidate]:
    if shard is None:
        yield from cands
        return
    i, n = shard
    folders: dict[str, str] = {}  # one realpath per folder, not per file
    for c in cands:
        if shard_of(c.path, n, folders) == i:
            yield c
