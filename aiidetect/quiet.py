"""Warnings silenced around third-party parsers that warn once per corrupt tag (Pillow's EXIF and
container readers), safe under threads.

``warnings.catch_warnings`` swaps the process-wide filter list on entry and puts back the list it saw
on exit: two threads inside at once (a scan's decode workers, a web service's requests) left one's
"ignore every warning" in place for good, and the embedding program never saw a warning again. Here
the threads inside share one silenced window: the first in saves the filters, the last out restores
them. Imports nothing from aiidetect."""
from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from typing import Iterator

_lock = threading.Lock()
_inside = 0
_saved: warnings.catch_warnings | None = None
# Python 3.14's context-aware warnings (the default in free-threaded builds) keep the filters per thread
# and context, and catch_warnings is safe in each thread there. The shared window would be wrong: its
# "ignore" is only the first thread's, and the last thread out restores the saved filters into its own
# context, leaving the first thread's warnings silenced for good.
_PER_CONTEXT = bool(getattr(sys.flags, "context_aware_warnings", False))


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    global _inside, _saved
    if _PER_CONTEXT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
        return
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
