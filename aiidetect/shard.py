"""--shard I/N: split a sweep between N processes or machines by a stable hash
of each path, so every file is scanned by exactly one of them.

The hash is of the path as discovered (as the arguments spell it), never of
Python's per-process salted hash(): give every shard the same path arguments
(same mount point, or the same relative paths from the same folder).
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable, Iterator

from .discover import Candidate


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/3' -> (2, 3); raises ValueError with the rule when malformed."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes I/N with 1 <= I <= N (e.g. 2/3), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard takes I/N with 1 <= I <= N (e.g. 2/3), got {text!r}")
    return i, n


def shard_of(path: str, n: int) -> int:
    """1..n, the same on every machine and Python version."""
    raw = os.fsencode(path)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") % n + 1


def in_shard(cands: Iterable[Candidate], shard: tuple[int, int] | None) -> Iterator[Candidate]:
    if shard is None:
        yield from cands
        return
    i, n = shard
    for c in cands:
        if shard_of(c.path, n) == i:
            yield c
