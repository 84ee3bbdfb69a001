"""Warnings silenced around third-party parsers that warn once per corrupt tag (Pillow's EXIF and
container readers), safe under threads.

``warnings.catch_warnings`` swaps the process-wide filter list on entry and puts back the list it saw
on exit: two threads inside at once (a scan's decode workers, a web service's requests) left one's
"ignore every warning" in place for good, and the embedding program never saw a warning again. Here
the threads inside share one silenced window: the first in saves the filters, the last out restores
them. Imports nothing from aiidetect."""
from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Iterator

_lock = threading.Lock()
_inside = 0
_saved: warnings.catch_warnings | None = None


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    global _inside, _saved
    with _lock:
        if _inside == 0:
            _saved = warnings.catch_warnings()
            _saved.__enter__()
            warnings.simplefilter("ignore")
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0 and _saved is not None:
                _saved.__exit__(None, None, None)
                _saved = None
