"""aiidetect.quiet: Pillow's warnings silenced while a metadata reader runs, the filters put back."""
from __future__ import annotations

import warnings

import pytest

from aiidetect import quiet


@pytest.mark.parametrize("per_context", [False, True])
def test_quiet_warnings_silences_inside_and_puts_the_filters_back(monkeypatch, per_context):
    # per_context is Python 3.14's context-aware warnings (free-threaded builds): there the shared window
    # left the first thread's context silenced for good when another thread was the last one out.
    monkeypatch.setattr(quiet, "_PER_CONTEXT", per_context)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        with quiet.quiet_warnings():
            with quiet.quiet_warnings():
                warnings.warn("inside")
            warnings.warn("still inside")
        assert warnings.filters == before
        warnings.warn("after")
    assert [str(w.message) for w in seen] == ["after"]
