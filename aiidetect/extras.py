"""Which install extra provides which module, so a command that needs a missing
one says exactly what to install (exit 2, one line) instead of a traceback.
Profiles and sizes: docs/install.md."""
from __future__ import annotations

import importlib.util
from typing import Sequence

# top-level module -> extra that installs it
MODULE_EXTRA = {
    "torch": "clip", "torchvision": "clip", "open_clip": "clip", "safetensors": "clip", "huggingface_hub": "clip",
    "onnxruntime": "onnx", "onnx": "onnx", "onnxscript": "onnx",
    "sklearn": "eval", "scipy": "eval", "matplotlib": "eval",
    "imwatermark": "test", "pytest": "test", "hypothesis": "test",
}


class MissingExtra(RuntimeError):
    def __init__(self, module: str, extra: str | None = None):
        self.module = module
        self.extra = extra or MODULE_EXTRA.get(module.split(".")[0])
        super().__init__(message(self.module, self.extra))


def message(module: str, extra: str | None) -> str:
    if extra:
        return f'this command needs {module}, which this install lacks: pip install "aiidetect[{extra}]"'
    return f"this command needs the Python module {module}, which is not installed"


def for_missing_module(exc: ModuleNotFoundError) -> str | None:
    """The one-line remedy for an import that failed, or None when the module is not
    one an extra provides (then it is a bug, and the traceback is the right output)."""
    name = (exc.name or "").split(".")[0]
    if name in MODULE_EXTRA:
        return message(name, MODULE_EXTRA[name])
    return None


def require(extra: str, *modules: str) -> None:
    for m in modules:
        if importlib.util.find_spec(m) is None:
            raise MissingExtra(m, extra)


def installed_version(dist: str) -> str | None:
    """The installed version of the distribution `dist` (its pip name), None when it is not installed.
    One lookup for every place that records versions: doctor's report, the cache keys, run identities."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# The libraries between a file's bytes and a model's input: Pillow (and libjpeg-turbo, libpng, libwebp bundled
# with it) decodes and resizes, pillow-heif decodes HEIF/AVIF, numpy normalises. Another version can give other
# pixels for the same bytes (Pillow 12.3 and 13.0 resize 2 of the 421 dev images to
# other pixels: benchmarks/decoder_pixels.py), so what was computed from the pixels
# under one (scan results: result_cache.py; backbone features and perceptual hashes: feature_cache.py) is not
# served under the other; aiidetect's own source hash does not see them.
DECODERS = ("pillow", "pillow-heif", "numpy")


def installed_versions(dists: Sequence[str]) -> dict[str, str | None]:
    return {dist: installed_version(dist) for dist in dists}


_decoder_versions: dict[str, str | None] | None = None


def decoder_versions() -> dict[str, str | None]:
    """The installed version of each of DECODERS (None: not installed), read once a process: the result
    cache asks at every file's lookup, and the feature cache's keys and a head's training record must name
    the same versions."""
    global _decoder_versions
    if _decoder_versions is None:
        _decoder_versions = installed_versions(DECODERS)
    return dict(_decoder_versions)
