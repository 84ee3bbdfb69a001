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
# True whether or not $AIIDETECT_WEIGHTS / $XDG_DATA_HOME name a heads folder: the note cannot assume either.
CACHES_OFF = (f"{NO_HOME}: the result, feature, weights-identity and optimize caches are off, and so is the "
              "user heads folder unless AIIDETECT_WEIGHTS or XDG_DATA_HOME names one; set AIIDETECT_CACHE to a "
              "folder of yours to turn the caches on")


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
    """aiidetect's cache folder: $AIIDETECT_CACHE, else ~/.cache/aiidetect.

    $XDG_CACHE_HOME is not consulted: aiidetect never did, and following it now would move every such
    user's result, feature and optimize caches (a huge archive re-scanned from nothing, the old folder
    left behind where `cache clear` no longer looks)."""
    explicit = os.environ.get("AIIDETECT_CACHE")
    if explicit:
        return Path(explicit)
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
    """The Hugging Face hub cache, found by huggingface_hub's own rules (its constants.py): $HF_HUB_CACHE,
    else the legacy $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub (a
    relative value too: huggingface_hub takes it as is), else ~/.cache/huggingface/hub; "~" and "$VAR"
    expanded. Two departures, both where huggingface_hub would read a folder relative to the current one:
    an empty variable counts as unset, and a path still starting with "~" (no home to expand it) is None."""
    env = {k: v for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")
           if (v := os.environ.get(k))}
    hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not hub:
        hf_home = env.get("HF_HOME")
        if not hf_home:
            h = home()
            cache = env.get("XDG_CACHE_HOME") or (str(h / ".cache") if h else None)
            if cache is None:
                return None
            hf_home = os.path.join(cache, "huggingface")
        hub = os.path.join(os.path.expandvars(os.path.expanduser(hf_home)), "hub")
    hub = os.path.expandvars(os.path.expanduser(hub))
    return None if hub.startswith("~") else Path(hub)
