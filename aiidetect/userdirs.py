"""The user's own folders (caches, user heads, downloaded backbones), decided in one place.

A container run under an arbitrary uid (`docker run -u 12345`) has no HOME and no password-database
entry: `Path.home()` raises there, and `os.path.expanduser("~")` returns "~" unchanged, which would make
a folder named "~" in the current directory and use it. Without a home, and with no variable naming a
folder, there is no user folder: these return None and the caller turns the feature off. Never a shared
/tmp folder instead: another user could plant heads or poisoned cache entries there.
"""
from __future__ import annotations

import os
from pathlib import Path

NO_HOME = "no home folder (HOME unset, no password entry for this user)"
CACHES_OFF = ("no home folder (HOME unset, no password entry for this user): the result, feature and "
              "weights-identity caches are off and no user heads folder is searched; set AIIDETECT_CACHE "
              "(caches) or AIIDETECT_WEIGHTS / XDG_DATA_HOME (heads) to a folder of yours to turn them on")


class NoUserFolder(RuntimeError):
    """A command needs a user folder that does not exist here: a setup matter with a remedy (which variable
    to set), said as a usage error, not a crash."""


def home() -> Path | None:
    """The user's home folder, or None when none can be determined (or it is not an absolute path)."""
    try:
        h = Path.home()
    except (RuntimeError, KeyError, OSError):
        return None
    return h if h.is_absolute() else None


def _xdg(name: str) -> Path | None:
    # The XDG spec: a relative value is invalid and ignored.
    v = os.environ.get(name)
    return Path(v) if v and os.path.isabs(v) else None


def cache_base() -> Path | None:
    """aiidetect's cache folder: $AIIDETECT_CACHE, else $XDG_CACHE_HOME/aiidetect, else ~/.cache/aiidetect."""
    explicit = os.environ.get("AIIDETECT_CACHE")
    if explicit:
        return Path(explicit)
    xdg = _xdg("XDG_CACHE_HOME")
    if xdg:
        return xdg / "aiidetect"
    h = home()
    return h / ".cache" / "aiidetect" if h else None


def data_base() -> Path | None:
    """$XDG_DATA_HOME, else ~/.local/share."""
    xdg = _xdg("XDG_DATA_HOME")
    if xdg:
        return xdg
    h = home()
    return h / ".local" / "share" if h else None


def clip_download_dir() -> Path | None:
    """open_clip's own URL download cache (it always uses ~/.cache/clip)."""
    h = home()
    return h / ".cache" / "clip" if h else None


def hf_hub_cache() -> Path | None:
    """The Hugging Face hub cache, found the way huggingface_hub finds it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = _xdg("XDG_CACHE_HOME")
    if xdg:
        return xdg / "huggingface" / "hub"
    h = home()
    return h / ".cache" / "huggingface" / "hub" if h else None
