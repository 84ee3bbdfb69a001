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
# The C libraries a decode goes through, whose version is not the package's: two Pillow wheels of one version
# can link another libjpeg(-turbo), whose IDCT and chroma up-sampling may differ in the last bit, and a distro's
# Pillow links the system's libraries, updated underneath it. Those whose output a newer version may change:
# libjpeg (the standard fixes a JPEG's pixels only within a tolerance), libtiff (its JPEG-in-TIFF and YCbCr
# paths), libwebp and libavif (their YUV to RGB conversion), libheif and its HEVC decoder (pillow-heif's). Left
# out: zlib, the only library of PNG and of TIFF's deflate (inflate is exact by its specification: no version
# changes a pixel), and those of formats or steps the scan does not use (JPEG 2000, Little CMS: no colour
# profile is applied). GIF, BMP and PSD are decoded by Pillow's own code (its version).
CODECS = ("libjpeg", "libjpeg-turbo", "libtiff", "libwebp", "libavif", "libheif", "libheif-decoders")
_HEIF = ("pillow-heif", "libheif", "libheif-decoders")
# Which of CODECS (and pillow-heif) a file's pixels go through, by its sniffed format (decode.sniff_format);
# Pillow and numpy are every file's (pillow-heif registers a HEIF opener, no other format's). A Ray node with
# another libwebp, or without the optional pillow-heif, gives a JPEG the same pixels: told apart by every
# version, its files were other decoders' and a --db scan of JPEGs stopped (engines/ray.py, _DecoderCheck). A
# TIFF's JPEG and WebP compressions go through libjpeg and libwebp; an AVIF through pillow-heif where Pillow has
# no AVIF plugin (before 11.2). A format not sniffed (None: not in this table) may still be opened by a plugin
# (pillow-heif knows more HEIF brands than the sniffer): every version counts.
FORMAT_CODECS = {"JPEG": ("libjpeg", "libjpeg-turbo"), "TIFF": ("libtiff", "libjpeg", "libjpeg-turbo", "libwebp"),
                 "WEBP": ("libwebp",), "AVIF": ("libavif", *_HEIF), "HEIF": _HEIF, "PNG": (), "GIF": (), "BMP": (),
                 "PSD": ()}


def decoders_of(fmt: str | None) -> tuple[str, ...] | None:
    """The keys of decoder_versions that decide the pixels of a file of format `fmt`; None: all of them."""
    codecs = FORMAT_CODECS.get(fmt) if fmt else None
    return None if codecs is None else ("pillow", "numpy", *codecs)


def installed_versions(dists: Sequence[str]) -> dict[str, str | None]:
    return {dist: installed_version(dist) for dist in dists}


def loaded_version(dist: str, module: str) -> str | None:
    """The version of `dist` this process runs: its module's __version__ once imported, else the installed
    metadata (what an import would load). The metadata alone named a package upgraded under a long-lived host
    (`pip install -U pillow` under a service that had imported the old one), which still decodes with the old."""
    import sys

    version = getattr(sys.modules.get(module), "__version__", None)
    return version if isinstance(version, str) else installed_version(dist)


# The metadata detector's parsers (its cache identity's `libs`, with the decoders): a newer exifread or c2pa may
# read more, and a node without c2pa-python finds no C2PA manifest, the most decisive evidence there is.
METADATA_PARSERS = ("exifread", "c2pa-python")

# Distributions whose module is not their name with "_" for "-" (loaded_version: its __version__ is the code this
# process runs); the rest, pillow-heif, numpy and exifread among them, import as that name.
MODULE_OF = {"pillow": "PIL", "c2pa-python": "c2pa"}


def running_versions(dists: Sequence[str]) -> dict[str, str | None]:
    """loaded_version of each of `dists`: what a cache key or run identity names, without importing anything."""
    return {dist: loaded_version(dist, MODULE_OF.get(dist, dist.replace("-", "_"))) for dist in dists}


def codec_versions() -> dict[str, str | None]:
    """The version of each of CODECS as the loaded Pillow and pillow-heif report them (None: not there, or a
    Pillow that cannot say). Imports Pillow and pillow-heif, which every scan's decode imports anyway."""
    out: dict[str, str | None] = dict.fromkeys(CODECS)
    try:
        from PIL import features
    except ImportError:
        return out

    def ask(read, name: str) -> str | None:
        try:
            return read(name)
        except Exception:  # noqa: BLE001 - a feature this Pillow does not know (avif before 11.2): none
            return None

    out["libjpeg"] = ask(features.version_codec, "jpg")
    out["libjpeg-turbo"] = ask(features.version_feature, "libjpeg_turbo")
    out["libtiff"] = ask(features.version_codec, "libtiff")
    out["libwebp"] = ask(features.version_module, "webp")
    out["libavif"] = ask(features.version_module, "avif")
    try:
        import pillow_heif

        info = pillow_heif.libheif_info()
        out["libheif"] = info.get("libheif")
        out["libheif-decoders"] = ", ".join(sorted(str(v) for v in (info.get("decoders") or {}).values())) or None
    except Exception:  # noqa: BLE001 - not installed, or a build that cannot say: HEIF is then not decoded by it
        pass
    return out


_decoder_versions: dict[str, str | None] | None = None


def decoder_versions() -> dict[str, str | None]:
    """The version of each of DECODERS this process runs (loaded_version; None: not installed) and of the C
    libraries they decode with (codec_versions), read once a process: the result cache asks at every file's
    lookup, and the feature cache's keys and a head's training record must name the same versions."""
    global _decoder_versions
    if _decoder_versions is None:
        codecs = codec_versions()  # first: it imports Pillow and pillow-heif, whose loaded versions follow
        _decoder_versions = {**running_versions(DECODERS), **codecs}
    return dict(_decoder_versions)
