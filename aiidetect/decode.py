"""bytes -> RGB pixels + image facts, safely.

Never raises for a bad file: every failure becomes an error code on the
record (see records.ERROR_CODES). Never writes: files are opened read-only
and the bytes are read once, then shared with the metadata parsers.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import re
import stat
import struct
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .hashing import read_at_most
from .records import Record

from .limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS  # noqa: F401 - re-exported
from .limits import (BMP_RLE_MAX_PIXELS, DECODE_BUDGET_IMAGES, GIF_MAX_BLOCKS, JPEG_MAX_COVERAGE, JPEG_MAX_DQT_BYTES,
                     JPEG_MAX_GAP_BYTES, JPEG_MAX_SEGMENTS, MAX_FRAMES_COUNTED, PNG_MAX_CHUNKS, PSD_MAX_RESOURCES,
                     PSD_MAX_ROWS, WEBP_MAX_CHUNKS, WEBP_PIXEL_COST)
from .structures import HeifRead, heif_layout_read, heif_read_of, webp_chunks

# Leading bytes of the formats we decode, so "corrupt PNG" and "not an image"
# get different codes.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"), (b"\x89PNG\r\n\x1a\n", 0, "PNG"), (b"GIF87a", 0, "GIF"), (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"), (b"II*\x00", 0, "TIFF"), (b"MM\x00*", 0, "TIFF"), (b"WEBP", 8, "WEBP"),
    (b"ftypheic", 4, "HEIF"), (b"ftypheix", 4, "HEIF"), (b"ftypmif1", 4, "HEIF"), (b"ftypmsf1", 4, "HEIF"),
    (b"ftyphevc", 4, "HEIF"), (b"ftypavif", 4, "AVIF"), (b"ftypavis", 4, "AVIF"),
    # Photoshop (PSB: version 2), whose image resources the metadata walker reads.
    (b"8BPS\x00\x01", 0, "PSD"), (b"8BPS\x00\x02", 0, "PSD"),
)


class DecodeFailure(Exception):
    def __init__(self, code: str, message: str, size: tuple[int, int] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        # (width, height) as the file's header states them, when it was read before the failure: the record
        # keeps them (docs/schema.md), as `meta` reports them for the same file
        self.size = size

        # A refusal made from the header without a size of its own (Pillow's decompression-bomb refusal at open,
        # the RLE cap): the pixels it counted, against which the reader behind `meta` is asked for the size
        # (pixels.PixelReader; that reader imports this module, so it is asked there)
        self.header_pixels: int | None = None

    def sized(self, width: int, height: int) -> "DecodeFailure":
        self.size = self.size or (width, height)
        return self

    def counted(self, pixels: int) -> "DecodeFailure":
        if self.size is None:
            self.header_pixels = pixels
        return self


@dataclass
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass
class Sample:
    """A file on its way through the pipeline."""

    index: int
    path: str
    record: Record
    data: bytes | None = None
    image: Any = None                      # PIL RGB image, orientation applied (maybe draft-reduced)
    pixels: dict[str, np.ndarray] = field(default_factory=dict)  # preprocess key -> 3xSxS float32
    info: dict[str, Any] = field(default_factory=dict)
    cached: dict[str, Any] | None = None   # detector name -> DetectorResult from the result cache
    phash: int | None = None               # phash_bytes of the bytes, when a trainer or eval asks
    header_pixels: int | None = None       # DecodeFailure.header_pixels of its failed decode
    # A HEIF/AVIF's structures.heif_layout_read(data), made for the decode and handed to the metadata walk
    # (its item tables read once a file), where the caller asks (decode_sample's keep_layout): it holds the
    # bytes, and its tables can be MBs for a 100-byte file (65,536 zero-byte `iloc` extents), so no sample
    # handed back to a caller holds it.
    layout: HeifRead | None = None

    @property
    def ok(self) -> bool:
        return self.record.error is None


_opener_ready = False


def _register_openers() -> None:
    global _opener_ready
    if _opener_ready:
        return
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:  # HEIC then reports unsupported-format with the remedy
        pass
    _large_blocks()
    _opener_ready = True


def warm_up() -> None:
    """The one-time work of the process's first read, done now: Pillow's ~45 plugins (Image.init), the
    HEIF opener and the metadata-chunk stripper. A read deadline calls it before its first clock starts
    (Pipeline.warm_up): on a loaded machine they took 0.3 s inside the first file's read, which a short
    file_timeout gave up (a `timeout` record on a legitimate file) or, from the command line, ended the scan
    for."""
    import importlib

    from PIL import Image

    importlib.import_module(f"{__package__}.metastrip")  # every PNG and WebP read asks it for oversized chunks
    _register_openers()
    Image.init()


# Pillow allocates an image in 16 MiB blocks, under glibc's largest mmap threshold (32 MiB): once
# one is freed, later blocks come from per-thread malloc arenas, which keep freed memory. Each
# decode thread then kept a --max-pixels image's worth after its image was gone (32 workers,
# 100 MP PNGs, a pixel detector: 6 GiB peak with two images decoding at once, against 1.2 GiB
# with this; docs/performance.md). Blocks above the threshold are mapped and unmapped whole.
PIXEL_BLOCK_BYTES = 64 * 1024 * 1024


def _large_blocks() -> None:
    from PIL import Image

    if os.environ.get("PILLOW_BLOCK_SIZE"):
        return  # the user's own setting
    try:
        if Image.core.get_block_size() < PIXEL_BLOCK_BYTES:
            Image.core.set_block_size(PIXEL_BLOCK_BYTES)
    except (AttributeError, ValueError):  # a Pillow without the block allocator's knobs
        pass


# The Pillow plugins aiidetect lets near a file: the formats discovery takes (docs/schema.md "Discovery";
# the JPEG plugin also opens a camera's multi-picture JPEG, as MPO; DIB is a BMP without its file header),
# and PSD, which walks skip (layered working files) but a newsroom names on the command line: its composite
# is the picture, and its image resources carry IIM/XMP/EXIF (provenance/containers.py). Pillow
# otherwise tries each of its ~45 plugins on any bytes, whatever the extension: an EPS named `.jpg`
# was handed to Ghostscript (a PostScript interpreter, where one is installed), a 1.6 MB QOI decoded
# 100 MP in pure Python, and JPEG 2000, FITS and the rest opened parsers no scan needs.
PILLOW_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "HEIF", "AVIF", "PSD")


def open_image(data: bytes, *, layout: HeifRead | None = None, oversize_checked: bool = False):
    """Image.open of hostile bytes, restricted to PILLOW_FORMATS (anything else is
    UnidentifiedImageError, as for bytes no plugin knows). A structure Pillow would spend more than the
    caps in limits.py on (structure_problem: a JPEG's scans or segments, a PNG's or WebP's chunks, a GIF's
    sub-blocks before its first image, a PSD's image resources or rows, an RLE BMP's pixels) is refused here
    (DecodeFailure), before any reader can load it.

    `layout`: a HEIF/AVIF's structures.heif_layout_read(data), where the caller has it (its item tables near
    their cap cost 11-27 ms a walk), with what was worked out of it (its check, its strip); a read of other
    bytes is not used. `oversize_checked`: a JPEG's or PNG's bytes metastrip.strip_oversize has just found
    nothing to leave out of (decode_bytes): the same walk of the same bytes is not repeated here. Where it did leave
    something out, its copy is walked again (a chunk past its walk's cap may come within it)."""
    import io

    from PIL import Image

    from .provenance.tiffguard import BIGTIFF_MAGIC, MAX_FILE_ENTRIES, check_tiff, without_oversize

    _register_openers()
    fmt = sniff_format(data)
    if fmt == "TIFF" or data[:4] in BIGTIFF_MAGIC:
        # Pillow reads the whole IFD and makes a Python tile per strip at open: a 65,535-entry or looping
        # IFD, or 4 M strips, cost seconds and gigabytes before any pixel. The capped walker vets it first,
        # for every caller (the decoder, meta's header look for the watermark check, the check's own decode).
        chk = check_tiff(data, pages=True, max_total_entries=MAX_FILE_ENTRIES)
        if not chk.ok:
            raise DecodeFailure("decode-error", f"TIFF structure refused: {chk.problem}")
        # Pillow reads every BYTE, ASCII or UNDEFINED entry whole at open and holds it two or three times over (a
        # 100 MB tag: 580 MB): over limits.DECODE_MAX_METADATA_CHUNK it gets a copy that skips them (decode_bytes
        # and the metadata walk have made it already, to say so, and hand this one with none left).
        data = without_oversize(data, chk)
    if fmt in ("HEIF", "AVIF"):
        layout = heif_read_of(data, layout)
    problem = structure_problem(data, fmt, layout)
    if problem:
        raise DecodeFailure("decode-error", f"{fmt or 'DIB'} structure refused: {problem}")
    if fmt in ("HEIF", "AVIF") and not layout.lean:
        from .metastrip import strip_oversize_heif

        # pillow-heif copies every Exif and XMP item at open (a 100 MB one three times), whatever the caller
        # reads: over the readers' cap they are unlinked first (the decoder and the metadata walk do it
        # themselves, to say so, and hand this a file with none left and its read marked so).
        data, _, _ = strip_oversize_heif(data, fmt, layout)
    if fmt in ("JPEG", "PNG", "WEBP") and not oversize_checked:
        from .metastrip import strip_oversize

        # Pillow's open joins every Exif segment of a JPEG to the EXIF so far, one copy each, inflates every
        # iCCP chunk of a PNG and copies a whole WebP, for any caller (meta's header look, the watermark check's
        # own decode): past limits.JPEG_MAX_EXIF_SEGMENTS, limits.JPEG_MAX_APP_BYTES, limits.PNG_MAX_ICC_CHUNKS and
        # limits.WEBP_MAX_METADATA_BYTES the rest are left out (with a PNG's or WebP's chunks over
        # limits.DECODE_MAX_METADATA_CHUNK). decode_bytes has done so already, to say so in the record.
        lean, _ = strip_oversize(data, fmt)
        data = data if lean is None else lean
    # Only the plugins this Pillow has: it raises KeyError for a named format it lacks (HEIF without
    # pillow-heif, AVIF before Pillow 11.2), where bytes no plugin knows must be UnidentifiedImageError.
    Image.init()
    return Image.open(io.BytesIO(data), formats=[f for f in PILLOW_FORMATS if f in Image.OPEN])


# How Pillow says it has no decoder for a layout it can name, in each plugin aiidetect uses: a lookup in
# one of its mode or compression tables failing (a KeyError, which ImageFile documents as "unsupported
# mode": a 16-bit PSD, a 16-bit Lab or float RGB TIFF, a TIFF compressed with JPEG 2000), or a refusal
# in words (a 12-bit JPEG's "cannot handle 12-bit layers", a BMP's "Unsupported BMP compression (4)",
# a missing codec's "decoder ... not available").
_UNDECODED_WORDS = ("unsupported", "not supported", "cannot handle", "unknown pixel mode", "not available")


def undecoded_layout(exc: BaseException | None) -> str | None:
    """What Pillow said when `exc` (a plugin's error, or its cause) is its refusal of a layout it has
    no decoder for; None for any other failure (a truncated or corrupt file). A file Pillow cannot
    decode is not therefore corrupt: calling it so ("corrupt header", "cannot be parsed") told a user
    a valid 16-bit PSD was damaged."""
    seen = 0
    while exc is not None and seen < 4:
        if isinstance(exc, KeyError) and exc.args:
            return _clip(f"its reader has no entry for {exc.args[0]!r}")
        text = str(exc)
        if any(w in text.lower() for w in _UNDECODED_WORDS):
            cause = exc.__cause__
            key = cause.args[0] if isinstance(cause, KeyError) and cause.args else None
            return _clip(text if key is None or repr(key) in text else f"{text} {key!r}")
        exc, seen = exc.__cause__, seen + 1
    return None


# Pillow's key quotes header values as they stand: a TIFF's ExtraSamples of 200,000 values made a
# 600 KB error message in every record, CSV row and results store of that file.
MAX_REFUSAL_CHARS = 300


def _clip(said: str) -> str:
    return said if len(said) <= MAX_REFUSAL_CHARS else said[:MAX_REFUSAL_CHARS - 1] + "…"


# The plugins whose refusal can name a layout (their headers' tables, their words above). PNG, GIF and
# WebP readers have none: asking them again only read a hostile file twice (a GIF's million comment
# sub-blocks, a second each). A PSD's header alone is asked: its reader looks its mode up in the first
# 26 bytes, then walks the image resources in Python (a million empty ones, 12 MB: 1.4 s), which a
# second reading must not repeat; empty sections stand in for the rest.
_HEADER_PLUGINS = ("JPEG", "BMP", "TIFF", "PSD")
_PSD_HEADER, _PSD_EMPTY_SECTIONS = 26, bytes(4 + 4 + 4 + 2)


def _plugin_error(data: bytes, fmt: str) -> BaseException | None:
    """The error the sniffed format's own Pillow plugin raises on `data`, which Image.open swallows
    into 'cannot identify image file' (it tries the next plugin): the header is read again, never
    the pixels. None when the plugin opens it or is not one whose refusal can name a layout
    (_HEADER_PLUGINS; HEIF and AVIF are parsed by libheif and libavif: not twice)."""
    import io

    from PIL import Image

    if fmt not in _HEADER_PLUGINS:
        return None
    if fmt == "PSD":
        data = data[:_PSD_HEADER] + _PSD_EMPTY_SECTIONS
    Image.init()
    opener = Image.OPEN.get(fmt)
    if opener is None:
        return None
    try:
        opener[0](io.BytesIO(data), "").close()
    except Exception as exc:  # noqa: BLE001 - any plugin error is the answer
        return exc
    return None


def refused_layout(data: bytes, fmt: str | None, exc: BaseException) -> str | None:
    """undecoded_layout of an error opening `data`: when Image.open said only 'cannot identify image
    file', the sniffed format's plugin is asked what it objected to."""
    return _pillow_refusal(data, fmt, exc)[0]


def _pillow_refusal(data: bytes, fmt: str | None, exc: BaseException | None) -> tuple[str | None, Any]:
    """refused_layout, and the key of the table lookup Pillow failed (None when it failed none): what
    its reader made of the header, values as it read them."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        exc = _plugin_error(data, fmt) if fmt else None
    said = undecoded_layout(exc)
    for _ in range(4):
        if exc is None or isinstance(exc, KeyError):
            break
        exc = exc.__cause__
    return said, (exc.args[0] if said and isinstance(exc, KeyError) and exc.args else None)


_PSD_MODES = {0: "bitmap", 1: "greyscale", 2: "indexed", 3: "RGB", 4: "CMYK", 7: "multichannel", 8: "duotone",
              9: "Lab"}
_PSD_BITS = (1, 8, 16, 32)
_TIFF_PHOTOMETRIC = {0: "greyscale", 1: "greyscale", 2: "RGB", 3: "palette", 4: "mask", 5: "CMYK", 6: "YCbCr",
                     8: "Lab", 9: "ICC Lab", 10: "ITU Lab", 32803: "CFA (raw sensor)", 32844: "LogL", 32845: "LogLuv",
                     34892: "linear raw", 51177: "depth", 52527: "semantic mask"}
_TIFF_SAMPLES = {1: "", 2: "signed ", 3: "float ", 4: "untyped ", 5: "complex integer ", 6: "complex float "}

# The refusals that quote a header value, and the values the format defines there that Pillow does not
# decode: JPEG precision (2-16 in lossless JPEG; Pillow reads 8) and component count (1-255; it reads
# 1, 3, 4); BMP compression (JPEG, PNG, alpha bitfields, CMYK and its RLEs), depth (0 with JPEG or PNG
# inside, 2, 64) and header size (OS/2 2.x headers are 16 to 64 bytes). Any other value there, like a
# PSD or TIFF header's values outside their format's tables, is damage and is called so: a broken file
# must not read as a valid one in a layout Pillow lacks.
_DEFINED_VALUES = (
    (r"cannot handle (\d+)-bit layers", range(2, 17)),
    (r"cannot handle (\d+)-layer images", range(1, 256)),
    (r"Unsupported BMP compression \((\d+)\)", (4, 5, 6, 11, 12, 13)),
    (r"Unsupported BMP pixel depth \((\d+)\)", (0, 2, 64)),
    (r"Unsupported BMP header type \((\d+)\)", range(16, 65)),
    (r"Unsupported BMP Palette size \((\d+)\)", ()),   # more colours than BMP allows
)


def _layout_words(fmt: str, data: bytes, refusal: str, key: Any = None) -> tuple[str, bool] | None:
    """('16-bit RGB PSD', True), ('32-bit float RGB TIFF', True): the layout as its format's header states
    it, since Pillow names it by a key of its own tables ((3, 16), (b'II', 2, (3,), 1, (32, 32, 32), ())),
    and whether the format defines it (False: a 0-bit PSD, colour mode 255, a 200-bit JPEG). Only what
    the header says; the format's name alone when it says nothing readable. None when the refusal is
    not of a layout after all: a KeyError that is not the lookup of the header's layout (a TIFF
    without its ImageWidth tag fails `tags[256]` the way one compressed with JPEG 2000 fails its
    compression table). `key`: that lookup's key, which for a TIFF's pixel mode holds what Pillow read
    (_tiff_mode_words)."""
    for pattern, defined in _DEFINED_VALUES:
        m = re.search(pattern, refusal)
        if m:
            return fmt, int(m.group(1)) in defined
    no_entry = None if key is None else repr(key)
    try:
        if fmt == "PSD" and len(data) >= 26:
            bits, mode = struct.unpack_from(">HH", data, 22)
            if no_entry is not None and no_entry != repr((mode, bits)):
                return None
            return (f"{bits}-bit {_PSD_MODES.get(mode, f'colour mode {mode}')} PSD",
                    bits in _PSD_BITS and mode in _PSD_MODES)
        if fmt == "TIFF" and data[:4] in (b"II*\x00", b"MM\x00*"):
            from .provenance.tiffguard import ifd_table

            e = "<" if data[:2] == b"II" else ">"
            first = {}
            for tag, typ, count, at in ifd_table(data, e, struct.unpack_from(e + "I", data, 4)[0]):
                if tag in (258, 259, 262, 339) and count >= 1 and tag not in first:
                    try:
                        if typ == 3:
                            at = at if count <= 2 else struct.unpack_from(e + "I", data, at)[0]
                            first[tag] = struct.unpack_from(e + "H", data, at)[0]
                        elif typ == 4 and count == 1:
                            first[tag] = struct.unpack_from(e + "I", data, at)[0]
                    except struct.error:    # values past the file: Pillow skips the tag too
                        pass
            packing = f" (compression {first[259]})" if first.get(259, 1) != 1 else ""
            if isinstance(key, tuple) and len(key) == 6:
                return _tiff_mode_words(key, packing)
            if no_entry is not None and no_entry != repr(first.get(259, 1)):
                return None
            if 262 not in first:    # TIFF 6.0 requires it (BitsPerSample defaults to 1): no layout declared
                return None
            bits, photometric, samples = first.get(258, 1), first[262], first.get(339, 1)
            kind = _TIFF_SAMPLES.get(samples, f"sample format {samples} ")
            return (f"{bits}-bit {kind}{_TIFF_PHOTOMETRIC.get(photometric, f'photometric {photometric}')} "
                    f"TIFF{packing}",
                    1 <= bits <= 64 and photometric in _TIFF_PHOTOMETRIC and samples in _TIFF_SAMPLES)
    except struct.error:
        pass
    return None if no_entry is not None else (fmt, True)


# The samples a pixel of each photometric interpretation has besides its ExtraSamples (TIFF 6.0; CIELab
# may be L* alone; a separated page has as many as its inks, the others any).
_TIFF_CHANNELS = {0: (1,), 1: (1,), 2: (3,), 3: (1,), 6: (3,), 8: (1, 3), 9: (1, 3), 10: (1, 3)}


def _tiff_mode_words(key: tuple, packing: str) -> tuple[str, bool] | None:
    """A TIFF's layout as Pillow read it, from the key its pixel-mode table lacks ((b'II', photometric,
    sample formats, fill order, bits per sample, extra samples)), and whether TIFF defines it: a
    photometric, sample format and fill order of its tables, 1-64 bits, as many samples as the
    photometric has (an RGB page of one sample, or a greyscale one of three without ExtraSamples, is
    damage, whatever its first BitsPerSample says)."""
    try:
        _, photometric, formats, fill, bps, extra = key
        bits = str(bps[0]) if len(set(bps)) == 1 else "/".join(map(str, bps))
        kinds = {_TIFF_SAMPLES.get(f, f"sample format {f} ") for f in formats}
        kind = kinds.pop() if len(kinds) == 1 else "mixed-sample "
        name = _TIFF_PHOTOMETRIC.get(photometric, f"photometric {photometric}")
        defined = (photometric in _TIFF_PHOTOMETRIC and all(f in _TIFF_SAMPLES for f in formats)
                   and fill in (1, 2) and all(1 <= b <= 64 for b in bps)
                   and len(bps) - len(extra) in _TIFF_CHANNELS.get(photometric, range(1, len(bps) + 1))
                   and all(x in (0, 1, 2) for x in extra))
        return f"{bits}-bit {kind}{name} TIFF{packing}", defined
    except (TypeError, ValueError, IndexError):
        return None


def _undecoded(data: bytes, fmt: str | None, exc: BaseException, name: str | None = None) -> DecodeFailure | None:
    """The decode-error for Pillow's refusal (`exc`, opening or loading `data` as `fmt`) of the layout
    the header declares; None when it was no layout's refusal after all (undecoded_layout,
    _layout_words): the caller's corrupt-file message stands. name: the format as the message names
    it (default `fmt`)."""
    layout, key = _pillow_refusal(data, fmt, exc)
    if not layout:
        return None
    fmt = name or fmt
    said = _layout_words(fmt, data, layout, key)
    if said is None:
        return None
    words, defined = said
    if not defined:
        named = f": {words}" if words != fmt else ""
        return DecodeFailure("decode-error", f"corrupt header: the {fmt} declares a layout its format does not "
                                             f"define{named} ({layout})")
    return DecodeFailure("decode-error", f"Pillow does not decode the pixels of this {words} ({layout}); "
                                         f"its metadata is read")


def sniff_format(data: bytes) -> str | None:
    for magic, off, name in _MAGIC:
        if data[off:off + len(magic)] == magic:
            return name
    return None


NOT_AN_IMAGE = "not an image format aiidetect decodes"


def identify(data: bytes) -> None:
    """Raise `unsupported-format` for bytes that are no image format at all, reading headers only
    (as decoding would find; `meta`, which decodes no pixels, asks this). A known format with a
    broken header passes: its metadata can still be read."""
    from .provenance.tiffguard import BIGTIFF_MAGIC

    # A BigTIFF is a TIFF: Pillow's open of one sets up a Python tile per strip before any check
    # (4 M strips, 40 MB: 32 s and 1.5 GB for `meta`), and the decoder vets its IFDs itself.
    if sniff_format(data) is not None or data[:4] in BIGTIFF_MAGIC:
        return
    from PIL import UnidentifiedImageError

    try:
        open_image(data).close()
    except UnidentifiedImageError as exc:
        raise DecodeFailure("unsupported-format", NOT_AN_IMAGE) from exc
    except Exception:  # noqa: BLE001 - a plugin's error on a broken header of a format it knows
        pass


def read_bytes(path: str | Path, limits: DecodeLimits | None = None,
               admit: Callable[[int], None] | None = None, expect: tuple[int, int] | None = None) -> bytes:
    """Read a whole file, read-only, refusing what is not a regular file.
    `admit(size)` is called with the open file's size before it is read (it may
    wait: pixels.ByteBudget). `expect`: the (st_dev, st_ino) discovery saw at
    this path; another file opened there is refused unread."""
    limits = limits or DecodeLimits()
    p = str(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        if getattr(exc, "errno", None) == 40:  # ELOOP
            raise DecodeFailure("symlink-loop", f"symbolic link loop: {exc.strerror}") from exc
        raise DecodeFailure("unreadable", f"cannot stat: {exc.strerror or exc}") from exc
    except ValueError as exc:
        # A name no file can have, from a hand-made or hostile JSONL (a NUL in it), or one this system's file
        # name encoding cannot write (UnicodeEncodeError): it ended a whole `report`, exit 2.
        what = "holds a NUL byte" if "\0" in p else "cannot be written in this system's file name encoding"
        raise DecodeFailure("unreadable", f"cannot stat: the name {what}") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file (device, fifo or socket)"
        raise DecodeFailure("not-a-file", f"not a regular file: {kind}")
    if st.st_size == 0:
        raise DecodeFailure("empty-file", "file is empty (0 bytes)")
    if st.st_size > limits.max_bytes:
        raise DecodeFailure("too-large", f"file is {st.st_size} bytes, over the {limits.max_bytes}-byte limit "
                                         f"(--max-bytes)")
    try:
        # O_NONBLOCK and a second check on the open descriptor: a file swapped for a FIFO between
        # stat and open must not block the worker forever.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DecodeFailure("unreadable", f"cannot open: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            raise DecodeFailure("not-a-file", "not a regular file (changed while being opened)")
        if expect is not None and (fst.st_dev, fst.st_ino) != tuple(expect):
            # Swapped after the folder was listed: a link put there now could lead anywhere on this
            # machine (past the rule that links out of the scanned folders are not followed).
            raise DecodeFailure("unreadable", "replaced by another file or a link after the folder was listed; "
                                              "not read")
        if admit is not None:
            # Held at its size when opened: a file that grows while being read is refused
            # after the read if it passes --max-bytes.
            admit(min(fst.st_size, limits.max_bytes))
        try:
            # After admit, which may wait for other files' bytes: a file rewritten in that wait is read whole.
            start = os.fstat(fd) if admit is not None else fst
            data = read_at_most(f, limits.max_bytes + 1, start.st_size)
            end = os.fstat(fd)
            whole = len(data) == start.st_size and _version(end) == _version(start)
            if not whole and len(data) <= limits.max_bytes:
                # Once more from the start before saying so. Its ctime also moves for a hard link made
                # (a dedup pass, `cp -al`), a chmod or an extended attribute set during the read, the
                # bytes untouched; and a writer that was finishing is done now. Only the first read's
                # digest is kept meanwhile, not a second copy of its bytes.
                first = hashlib.sha256(data).digest()
                data = b""
                f.seek(0)
                start = os.fstat(fd)
                data = read_at_most(f, limits.max_bytes + 1, start.st_size)
                end = os.fstat(fd)
                # Two reads alike with nothing moved: one version, of a file whose size is not its length
                # (/sys files say 4096).
                whole = _version(end) == _version(start) and (
                    len(data) == start.st_size or hashlib.sha256(data).digest() == first)
        except OSError as exc:
            raise DecodeFailure("unreadable", f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > limits.max_bytes:  # grew after the size check
        raise DecodeFailure("too-large", f"file is over the {limits.max_bytes}-byte limit (--max-bytes)")
    if not whole:
        # Written to while being read (in place: a copy still arriving, an editor saving over it): the
        # bytes may be the start of one version and the end of another, a picture that was never on
        # disk, and a verdict on it would be filed under this path as if it were the file.
        raise DecodeFailure(FILE_CHANGED, "the file changed while it was being read (written to in place); "
                                          "its bytes are not one version of it and were not judged: scan it "
                                          "again once it is no longer being written")
    return data


FILE_CHANGED = "changed-while-read"


def _version(st: os.stat_result) -> tuple[int, int, int]:
    # ctime too: an in-place edit that puts the old mtime back (touch -r, a tool keeping the date) moves it.
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


# Rows converted at once from a high-bit-depth image: the float64 working copies are of a band, not of
# the image. Whole, a 233 KB 10000x12000 16-bit PNG took 3.0 GB and 9 s (a 16-bit or float TIFF of that
# size 3.3 GB, 19 s): four float64 copies of 120 M pixels.
BAND_PIXELS = 1 << 20


def rgb_array(img) -> np.ndarray:
    """HxWx3 uint8 array of a loaded PIL RGB image, the values np.asarray(img) gives, copied once. Pillow's
    array interface goes through Image.tobytes, which copies the pixels out in 64 KB pieces and joins them
    into one more full-size copy (the watermark check reads the whole grid: 0.9 against 0.6 ms CPU for the
    array of an SD-size dev photo, 1.4 MP on average). Any other mode, or a Pillow whose raw encoder answers
    otherwise, goes through np.asarray as before."""
    w, h = img.size
    if img.mode != "RGB" or w <= 0 or h <= 0:
        return np.asarray(img)
    from PIL import Image

    img.load()     # a public call: its errors are the caller's, as np.asarray(img) would raise them
    try:
        enc = Image._getencoder("RGB", "raw", "RGB")
        enc.setimage(img.im, (0, 0, w, h))
        try:
            _, done, buf = enc.encode(w * h * 3)
        finally:
            enc.cleanup()
    except Exception:  # noqa: BLE001 - an internal Pillow interface: anything odd takes the public path
        return np.asarray(img)
    if done != 1 or len(buf) != w * h * 3:
        return np.asarray(img)
    # read-only, as np.asarray(img) is: the bytes object is not writable
    return np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)


def _to_rgb(img):
    """Any Pillow mode -> 8-bit RGB, scaling high bit depths instead of clipping."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        w, h = img.size
        rows = max(1, BAND_PIXELS // max(1, w))
        bands = [(y, min(h, y + rows)) for y in range(0, h, rows)]
        band = lambda y0, y1: np.asarray(img.crop((0, y0, w, y1)))  # noqa: E731
        scale = None  # None: /257 (16-bit); (lo, hi): stretched to 0..255; 1: as is
        if not mode.startswith("I;16"):
            # NaN-ignoring extremes over all bands: np.fmin/fmax skip NaN without nanmin's warning
            lo = hi = float("nan")
            for y0, y1 in bands:
                b = band(y0, y1)
                lo, hi = float(np.fmin(lo, np.fmin.reduce(b, axis=None))), float(np.fmax(hi, np.fmax.reduce(b, axis=None)))
            if mode == "I" and lo >= 0 and hi <= 65535 and hi > 255:
                scale = None
            elif mode == "F" or lo < 0 or hi > 255:
                scale = (lo, hi)
            else:
                scale = 1
        out = np.empty((h, w), np.uint8)
        for y0, y1 in bands:
            if scale is None:
                # rint(v / 257) in integers: v / 257 is never halfway between two (checked for all 65,536)
                out[y0:y1] = ((band(y0, y1).astype(np.uint32) + 128) // 257).astype(np.uint8)
                continue
            a = band(y0, y1).astype(np.float64)
            if scale != 1:
                lo, hi = scale
                a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
            out[y0:y1] = np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8)
        return Image.fromarray(out, "L").convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    if mode == "CMYK":
        return img.convert("RGB")
    # RGBA/LA: drop alpha rather than composite, to keep pixel values as generated.
    return img.convert("RGB")


def _frame_count(img, data: bytes) -> int:
    """n_frames walks every frame of a TIFF; a corrupt later frame must not sink a readable first one.
    A GIF's frames and a PSD's layers are counted from `data` (gif_walk, psd_layers), not by Pillow,
    which parses each frame's sub-blocks and each layer's row tables in Python to count them; an APNG's
    are the frames it holds, not the count its acTL chunk claims (png_frame_chunks); an AVIF sequence's, the
    samples its track's table declares (libavif's count; over limits.AVIF_MAX_SAMPLES refused before), up to
    MAX_FRAMES_COUNTED. The
    image is left on the frame it was opened on: a HEIF opens on its primary image, which need not be its first
    (seeking back to frame 0 decoded another picture than the one whose size the record gives)."""
    try:
        start = img.tell()
    except Exception:  # noqa: BLE001
        start = 0
    try:
        if img.format == "GIF":
            return max(1, gif_walk(data)[1])
        if img.format == "PSD":
            return max(1, psd_layers(data))
        frames = int(getattr(img, "n_frames", 1) or 1)
        if img.format == "MPO" and frames > 1:
            return mpo_frames(img, data)
        if img.format == "PNG" and frames > 1:
            return max(1, min(frames, png_frame_chunks(data)))
        if img.format == "AVIF":
            return min(frames, MAX_FRAMES_COUNTED)
        return frames
    except Exception:  # noqa: BLE001
        return 1
    finally:
        try:
            img.seek(start)
        except Exception:  # noqa: BLE001
            pass


def mpo_frames(img, data: bytes) -> int:
    """The pictures a multi-picture JPEG holds: its first, and each other MP index entry's offset (as Pillow
    reads it) where a JPEG starts in the file, counted once. Pillow's n_frames is the count the index
    declares: 4,000 in a 66 KB file of one picture, whose entries pointed nowhere or all at one place."""
    offsets = getattr(img, "_MpoImageFile__mpoffsets", None)    # Pillow's own reading of the index
    if not isinstance(offsets, list):
        return int(getattr(img, "n_frames", 1) or 1)
    return 1 + len({o for o in offsets[1:] if isinstance(o, int) and 0 < o and data[o:o + 3] == b"\xff\xd8\xff"})


def decode_bytes(data: bytes, limits: DecodeLimits | None = None, draft: int | None = None,
                 admit: Callable[[int], None] | None = None, layout: HeifRead | None = None,
                 reserve: Callable[[dict], int] | None = None):
    """-> (PIL RGB image, info). Raises DecodeFailure.

    `admit(pixels)` is called once the size is known and accepted, before the
    pixels are decoded: it may wait (pixels.PixelBudget, the decode workers'
    shared budget). `reserve(info)` (the info known then: format, size, draft) adds the
    pixels of a later decode the caller will make while this one is alive: asked for
    afterwards, the wait would hold these pixels outside the budget.

    A decode that fails is retried once without the metadata segments
    (aiidetect.metastrip): a metadata quirk Pillow trips over must not take the
    pixels down with it; the metadata parsers read those segments themselves.
    A PNG or WebP is handed to Pillow without its metadata chunks over
    limits.DECODE_MAX_METADATA_CHUNK (and its iCCP chunks after the first limits.PNG_MAX_ICC_CHUNKS), a HEIF
    or AVIF without links to such Exif and XMP items, a JPEG without its Exif segments after the first
    limits.JPEG_MAX_EXIF_SEGMENTS (metastrip.strip_oversize), which its readers copied whole (Pillow's JPEG
    reader joins the Exif segments, a copy each; its PNG reader inflates every iCCP chunk).

    `layout`: a HEIF/AVIF's structures.heif_layout_read(data), where the caller has read it (its item
    tables are read once a decode either way)."""
    limits = limits or DecodeLimits()
    from .metastrip import strip_oversize, strip_oversize_heif

    fmt = sniff_format(data)
    checked = False
    if fmt in ("HEIF", "AVIF"):     # its item tables read once, for the strip, the pixel checks and the open
        data, withheld, layout = strip_oversize_heif(data, fmt, layout)
    else:
        lean, withheld = strip_oversize(data, fmt)
        checked = lean is None
        data = data if checked else lean
    try:
        img, info = _decode_bytes(data, limits, draft, admit, layout=layout, reserve=reserve,
                                  oversize_checked=checked)
        if withheld:   # apart from the retry's key: these pixels are the file's own (provenance.reusable_image)
            info["metadata_withheld"] = withheld[:200]
        return img, info
    except DecodeFailure as first:
        if first.code != "decode-error":
            raise
        from .metastrip import strip_metadata

        bare = strip_metadata(data, sniff_format(data))
        if bare is None:
            raise
        try:
            img, info = _decode_bytes(bare, limits, draft, admit, reserve=reserve)
        except DecodeFailure:
            raise first from None
        info["metadata_skipped_for_pixels"] = first.message[:200]
        return img, info


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}   # DHT, JPG and DAC share the range
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}        # RSTn, TEM: no length field


def jpeg_scan_problem(data: bytes) -> str | None:
    """Why a JPEG's scans would cost more than JPEG_MAX_COVERAGE passes over its image, or None.
    Walks the first image's marker segments (lengths, not bytes; entropy-coded data and stray bytes
    between segments skipped with one regular-expression search each, as the decoders skip them);
    anything it cannot follow is left for the decoder to refuse."""
    from .structures import NEXT_MARKER, next_marker

    weight: dict[int, int] = {}
    # in units of 1/total of a pass: integers, so the limit is exact
    total, passed, scans, segments, pos, n, gap, dqt = 0, 0, 0, 0, 2, len(data), 0, 0
    while True:
        # Fill and stray bytes between segments: skipped to the next marker as libjpeg and Pillow skip them
        # (giving up here let one stray byte carry a scan bomb past this walk), and never counted as segments;
        # before the first scan Pillow's open loops over each of them in Python, so their total is capped.
        at, pos = pos, next_marker(data, pos)
        if not scans:
            gap += (n if pos is None else pos) - at
            if gap > JPEG_MAX_GAP_BYTES:
                return (f"more than {JPEG_MAX_GAP_BYTES} fill or stray bytes between its header segments "
                        "(Pillow reads each one in Python)")
        if pos is None or pos + 4 > n:
            return None
        m = data[pos + 1]
        if m == 0xD9:
            return None
        segments += 1
        if segments > JPEG_MAX_SEGMENTS:
            return f"more than {JPEG_MAX_SEGMENTS} marker segments"
        if m in _JPEG_STANDALONE:
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            # libjpeg skips an APPn or COM of length 0 or 1 as one of 2 (Pillow too); elsewhere it stops
            pos += 4
            continue
        if m == 0xDB and not scans:
            dqt += length - 2
            if dqt > JPEG_MAX_DQT_BYTES:
                return (f"more than {JPEG_MAX_DQT_BYTES} bytes of quantization tables before its first scan "
                        "(Pillow reads each table in Python; a JPEG defines at most four)")
        if m in _JPEG_SOF:
            body = data[pos + 4:pos + 2 + length]
            # each component's share of the blocks: its horizontal times vertical sampling factor
            weight = {body[6 + 3 * i]: (body[7 + 3 * i] >> 4) * (body[7 + 3 * i] & 15)
                      for i in range(body[5] if len(body) > 5 else 0) if 8 + 3 * i <= len(body)}
            total = sum(weight.values())
        elif m == 0xDA:
            body = data[pos + 4:pos + 2 + length]
            scans += 1
            passed += sum(weight.get(body[1 + 2 * i], 0) for i in range(body[0] if body else 0) if 1 + 2 * i < len(body))
            if total and passed > JPEG_MAX_COVERAGE * total:
                return (f"{scans} scans pass over the image more than {JPEG_MAX_COVERAGE} times "
                        f"(a progressive JPEG's standard scans: about 6)")
            found = NEXT_MARKER.search(data, pos + 2 + length)
            if found is None:
                return None
            pos = found.start()
            continue
        pos += 2 + length


def structure_problem(data: bytes, fmt: str | None, layout: HeifRead | None = None) -> str | None:
    """Why Pillow must not open `data` (sniffed as `fmt`): the structures its plugins walk in Python at
    open, or its decoders pass over, past the caps in limits.py. None when nothing is over them. `layout`:
    as heif_problem's."""
    if fmt == "JPEG":
        return jpeg_scan_problem(data)
    if fmt == "PNG":
        return png_chunk_problem(data)
    if fmt == "GIF":
        return gif_walk(data, count=False)[0]
    if fmt == "WEBP":
        return webp_chunk_problem(data)
    if fmt == "PSD":
        return psd_problem(data)
    if fmt == "BMP" or fmt is None:     # a DIB (a BMP without its file header) sniffs as nothing
        return bmp_problem(data)
    if fmt in ("HEIF", "AVIF"):
        return heif_problem(data, layout)[0]
    return None


# Derived images nested deeper than this (a grid of grids of ...) are refused; real files nest one level (a grid
# of coded tiles).
_HEIF_MAX_DEPTH = 8


def heif_problem(data: bytes, layout: HeifRead | None = None) -> tuple[str | None, int, tuple[int, int] | None]:
    """(why libheif or libavif must not decode this HEIF/AVIF's image, or None; the coded pixels it is made
    of; its primary item's ispe, before any crop). The primary item's pixels (heif_items_problem), or an AVIF
    image sequence's first frame's (avif_track_pixels), whichever is more: libavif decodes the track of an
    `avis`, not its item, and which it takes depends on its version (the major brand, or any track at all).
    `layout`: structures.heif_layout_read(data), where the caller has it (its answer kept there); read here
    without it."""
    read = heif_read_of(data, layout)
    if read.problem is None:
        read.problem = _heif_problem(data, read)
    return read.problem


def _heif_problem(data: bytes, read: HeifRead) -> tuple[str | None, int, tuple[int, int] | None]:
    problem, coded, size = heif_items_problem(data, read)
    if problem:
        return problem, coded, size
    try:
        return None, max(coded, avif_track_pixels(data)), size
    except _HeifRefusal as exc:
        return str(exc), 0, size


def avif_track_pixels(data: bytes) -> int:
    """The coded pixels libavif decodes first from an AVIF image sequence's tracks (0 without one): its colour
    track's (the first `av01` track auxiliary to none) and its alpha track's (the first `av01` track auxiliary to
    that one), each the largest of the size its header declares (the size Pillow gives), the size its sample
    entry declares and the frame its first sample's AV1 sequence header gives: dav1d decodes that frame whatever
    the tables say (a 1.9 KB `avis` whose track said 64x64 over an 8192x8192 frame took 210 MB, a 64x64 one 69 MB).
    Raises _HeifRefusal over limits.HEIF_MAX_ENTRIES boxes in its `moov` box, or where the first sample holds no
    sequence header among its first OBUs (structures.AV1_MAX_OBUS) but more OBUs."""
    from .structures import HeifLayoutError, bmff_tracks

    try:
        tracks = bmff_tracks(data)
    except HeifLayoutError as exc:
        raise _HeifRefusal(f"{exc} in its moov box") from None
    av1 = [t for t in tracks if t.id and t.entry and t.first_sample]      # as libavif picks its tracks
    color = next((t for t in av1 if t.aux_for is None), None)
    if color is None:
        return 0
    alpha = next((t for t in av1 if t.aux_for == color.id), None)
    total = 0
    for track in (color, alpha) if alpha else (color,):
        pixels = max(track.size[0] * track.size[1], track.entry[0] * track.entry[1])
        frame = _av1_frame(data, track.first_sample, f"track {track.id}'s first sample")
        if frame:
            pixels = max(pixels, frame[0] * frame[1])
        total += pixels
    return total


def heif_items_problem(data: bytes, layout: HeifRead | None = None) -> tuple[str | None, int, tuple[int, int] | None]:
    """(why libheif or libavif must not decode this HEIF/AVIF's primary image, or None; the coded pixels
    it is made of; its ispe, before any crop). A derived image is decoded input by input, each to its own
    `ispe`: a grid of tiles, or of grids, costs its tiles' pixels (repeats counted), not its own size. An AV1
    image costs the larger of its `ispe` and the frame its sequence header gives: libavif decodes the whole
    frame whatever the `ispe` says (libheif refuses an HEVC image larger than its `ispe`). The image's alpha
    (an auxiliary image), decoded with it, is counted and checked as the image is. Refused: a grid whose size is
    not its `ispe` (the size every reader and the pixel limit go by: libheif refused it only after decoding
    all of it), one with a whole row or column of tiles outside its image (as libavif refuses it), derived
    images nested deeper than _HEIF_MAX_DEPTH or in a loop, and item tables of over limits.HEIF_MAX_ENTRIES
    entries in all. Layouts it cannot follow are left to the decoder."""
    from .structures import HeifLayoutError

    read = heif_read_of(data, layout)
    lay, error = read.layout, read.error
    if isinstance(error, HeifLayoutError):
        return f"{error} in its meta box", 0, None
    if error is not None:       # a truncated table: left to the decoder
        return None, 0, None
    if lay is None or lay.primary is None:
        return None, 0, None
    done: dict[int, int] = {}

    def coded(item: int, depth: int) -> int:
        if item in done:
            if done[item] < 0:
                raise _HeifRefusal(f"item {item} is derived from itself")
            return done[item]
        inputs = lay.dimg.get(item)
        if not inputs:
            w, h = lay.sizes.get(item, (0, 0))
            pixels = w * h
            span = lay.item_span(data, item) if lay.types.get(item) == b"av01" else None
            if span is not None:
                frame = _av1_frame(data, span, f"item {item}")
                if frame is None and len(lay.extents[item][1]) > 1:    # libavif joins the extents for dav1d
                    raise _HeifRefusal(f"item {item}: no AV1 sequence header in its first data extent")
                if frame:
                    pixels = max(pixels, frame[0] * frame[1])
                done[item] = pixels         # a tile repeated is read once
            return pixels
        if depth >= _HEIF_MAX_DEPTH:
            raise _HeifRefusal(f"derived images nested more than {_HEIF_MAX_DEPTH} deep")
        done[item] = -1
        if lay.types.get(item) == b"grid":
            _heif_grid_check(data, lay, item, inputs)
        total = 0
        for x in inputs:
            total += coded(x, depth + 1)
        done[item] = total
        return total

    size = lay.sizes.get(lay.primary)
    alpha = [a for a, of in lay.auxl.items() if lay.primary in of and lay.aux_types.get(a) in _HEIF_ALPHA]
    try:
        return None, coded(lay.primary, 0) + sum(coded(a, 0) for a in alpha), size
    except _HeifRefusal as exc:
        return str(exc), 0, size


# The auxiliary image types of an alpha plane (HEVC's, MPEG-B's), which libheif and libavif decode with the image.
_HEIF_ALPHA = (b"urn:mpeg:hevc:2015:auxid:1", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha")


class _HeifRefusal(Exception):
    pass


def _av1_frame(data: bytes, span: tuple[int, int], what: str) -> tuple[int, int] | None:
    """structures.av1_frame_size of data[span] for an item or a track's first sample (`what`, in the refusal):
    None where its OBUs run past the span (left to the decoder), _HeifRefusal where dav1d would read on past
    AV1_MAX_OBUS of them."""
    from .structures import HeifLayoutError, av1_frame_size

    try:
        return av1_frame_size(data, *span)
    except IndexError:
        return None
    except HeifLayoutError as exc:
        raise _HeifRefusal(f"{what}: {exc}") from None


def _heif_grid_check(data: bytes, lay, item: int, inputs: list[int]) -> None:
    head = lay.item_data(data, item, 12)
    if head is None or len(head) < 8:
        return
    rows, cols = head[2] + 1, head[3] + 1
    if head[1] & 1:
        if len(head) < 12:
            return
        w, h = struct.unpack_from(">II", head, 4)
    else:
        w, h = struct.unpack_from(">HH", head, 4)
    declared = lay.sizes.get(item)
    if declared is not None and tuple(declared) != (w, h):
        raise _HeifRefusal(f"its grid image is {w}x{h}, but its ispe says {declared[0]}x{declared[1]}")
    tile = lay.sizes.get(inputs[0])
    if tile and ((cols - 1) * tile[0] >= w or (rows - 1) * tile[1] >= h):
        raise _HeifRefusal(f"its {w}x{h} grid of {rows}x{cols} tiles of {tile[0]}x{tile[1]} has tiles outside "
                           f"the image")


def bmp_rle_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, 8 or 4) of an RLE8- or RLE4-compressed BMP or DIB, read from its info header as
    Pillow's BMP and DIB readers find it; None for any other."""
    from .structures import DIB_HEADERS

    at = 14 if data[:2] == b"BM" else 0
    if len(data) < at + 20:
        return None
    size, width, height, _, _, compression = struct.unpack_from("<IiiHHI", data, at)
    # OS/2 1.x's 12-byte header has no compression field (nor 32-bit sizes): never RLE
    if size not in DIB_HEADERS or size == 12 or compression not in (1, 2):     # BI_RLE8, BI_RLE4
        return None
    return abs(width), abs(height), 8 if compression == 1 else 4


def bmp_problem(data: bytes) -> str | None:
    """Why an RLE-compressed BMP or DIB holds more pixels than BMP_RLE_MAX_PIXELS (Pillow's RLE decoder is
    Python), or None."""
    rle = bmp_rle_header(data)
    if rle and rle[0] * rle[1] > BMP_RLE_MAX_PIXELS:
        return (f"RLE{rle[2]}-compressed {rle[0]}x{rle[1]}, over the {BMP_RLE_MAX_PIXELS} pixels Pillow's RLE "
                f"decoder (Python) is given")
    return None


# What may start a GIF block: an extension, an image, the trailer. Pillow skips any other byte alone.
_GIF_BLOCK_START = re.compile(rb"[\x21\x2c\x3b]")


def gif_walk(data: bytes, count: bool = True) -> tuple[str | None, int]:
    """(why the GIF's extensions before its first image hold more than GIF_MAX_BLOCKS sub-blocks, or None;
    its frames, counted up to MAX_FRAMES_COUNTED). Follows Pillow's reader: extensions and images are
    chains of length-prefixed sub-blocks, any other byte between blocks is skipped alone, the trailer
    or the end of the data ends it. Stray bytes count as sub-blocks (Pillow reads them one at a time).
    The count stops once GIF_MAX_BLOCKS sub-blocks are walked, as at MAX_FRAMES_COUNTED.
    `count=False`: the check alone, which stops at the first image (what follows it cannot change the
    answer; no frames are counted, 0), so open_image's check and the decoder's frame count are not two walks
    of the whole file."""
    n = len(data)
    if n < 13:
        return None, 0
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    steps, frames = 0, 0
    while pos < n and frames < MAX_FRAMES_COUNTED:
        b = data[pos]
        if b == 0x2C and not count:
            return None, 0
        if b == 0x21 or b == 0x2C:
            if b == 0x21:
                pos += 2                            # introducer, label
            else:
                if pos + 10 > n:
                    break
                frames += 1
                local = data[pos + 9]
                pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1   # descriptor, palette, LZW size
            while pos < n:                          # the sub-blocks, to the empty one
                size = data[pos]
                pos += 1 + size
                steps += 1
                if size == 0 or steps > GIF_MAX_BLOCKS:
                    break
        elif b == 0x3B:
            break
        else:
            found = _GIF_BLOCK_START.search(data, pos + 1)
            end = n if found is None else found.start()
            steps += end - pos
            pos = end
        if steps > GIF_MAX_BLOCKS:
            if frames == 0:
                return (f"more than {GIF_MAX_BLOCKS} sub-blocks or stray bytes before its first image "
                        f"(Pillow reads each in Python when it opens the file)"), 0
            break
    return None, frames


def psd_problem(data: bytes) -> str | None:
    """Why Pillow's open of a PSD would walk more than PSD_MAX_RESOURCES image resources or a row table of
    more than PSD_MAX_ROWS rows, or None. Follows Pillow's reader over the header and the image resources
    (lengths, not bytes); anything it cannot follow is left for Pillow to refuse."""
    n = len(data)
    if n < 34 or data[4:6] != b"\x00\x01":       # Pillow opens version 1 only
        return None
    (rows,) = struct.unpack_from(">I", data, 14)
    if rows > PSD_MAX_ROWS:
        return f"{rows} rows, over the {PSD_MAX_ROWS} the PSD format allows"
    (mode_len,) = struct.unpack_from(">I", data, 26)
    at = 30 + mode_len
    if at + 4 > n:
        return None
    (size,) = struct.unpack_from(">I", data, at)
    pos, end, count = at + 4, at + 4 + size, 0
    while pos < end and pos + 7 <= n:
        count += 1
        if count > PSD_MAX_RESOURCES:
            return f"more than {PSD_MAX_RESOURCES} image resources"
        name_len = data[pos + 6]
        pos += 7 + name_len + (0 if name_len & 1 else 1)     # signature, id, Pascal name padded to even
        if pos + 4 > n:
            break
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4 + length + (length & 1)
    return None


def psd_layers(data: bytes) -> int:
    """The layer count a PSD's layer section declares (0 without one, or when Pillow would refuse the count as
    too many for the section), without Pillow's walk of every layer's row tables (_frame_count). Pillow's
    n_frames leaves out a layer of more than 4 channels, as every layer with a mask is: counted here."""
    try:
        (mode_len,) = struct.unpack_from(">I", data, 26)
        at = 30 + mode_len
        (res,) = struct.unpack_from(">I", data, at)
        at += 4 + res
        section, info_len, count = struct.unpack_from(">IIh", data, at)
    except struct.error:
        return 0
    if not section or not info_len or info_len < abs(count) * 20:    # Pillow: no layers, or a refusal
        return 0
    return abs(count)


def png_frame_chunks(data: bytes) -> int:
    """The frames an APNG holds, counted as Pillow counts them but from its chunk headers (up to IEND or
    PNG_MAX_CHUNKS): a frame control (fcTL) each, and the default image when its IDAT comes before the
    first (it is then no frame of the animation). Pillow's n_frames is what the acTL chunk claims, 2**31
    in a file of one frame."""
    from .structures import png_chunks

    frames = default = 0
    for _, _, ctype in itertools.islice(png_chunks(data), PNG_MAX_CHUNKS):
        if ctype == b"fcTL":
            frames += 1
        elif ctype == b"IDAT" and not frames:
            default = 1
    return frames + default


def png_chunk_problem(data: bytes) -> str | None:
    """Why a PNG holds more chunks than PNG_MAX_CHUNKS, or None. Reads chunk headers only, up to IEND;
    anything it cannot follow is left for the decoder to refuse."""
    from .structures import png_chunks

    for i, _ in enumerate(png_chunks(data)):
        if i == PNG_MAX_CHUNKS:
            return f"more than {PNG_MAX_CHUNKS} chunks"
    return None


def webp_chunk_problem(data: bytes) -> str | None:
    """Why a WebP holds more chunks than WEBP_MAX_CHUNKS (an animation's frames, one ANMF chunk each), or None.
    Reads chunk headers only, as libwebp's demuxer walks them (structures.webp_chunks)."""
    for i, _ in enumerate(webp_chunks(data)):
        if i == WEBP_MAX_CHUNKS:
            return f"more than {WEBP_MAX_CHUNKS} chunks (an animation's frames are one chunk each)"
    return None


def _admit_in_pillow(Image, max_pixels: int) -> None:
    """Pillow's MAX_IMAGE_PIXELS is one setting for the whole process: only ever raised, to let our
    limit through (Pillow raises above twice its setting, and only warns between). Set to each scan's
    limit, a small one (another thread's Scanner, an earlier scan) refused files under this scan's limit
    in the metadata readers too, and the caller's own Image.open. Our check after opening refuses at
    this scan's limit, with the explained too-large error."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and 2 * current < max_pixels:
        Image.MAX_IMAGE_PIXELS = (max_pixels + 1) // 2


def _too_large(exc: Exception, max_pixels: int, counted: bool = False) -> DecodeFailure:
    """Pillow's own refusal names Pillow's limit (178956970 pixels), which no aiidetect option moves;
    the user's lever is --max-pixels. `counted`: the failure keeps the pixels Pillow counted
    (DecodeFailure.counted), where they are the header's size that `meta` gives."""
    m = re.search(r"\((\d+) pixels\)", str(exc))
    if m and int(m.group(1)) <= max_pixels:  # not our limit that was crossed: say what Pillow said
        failure = DecodeFailure("too-large", f"Pillow refused it as a decompression bomb: {exc}")
    else:
        size = f"{m.group(1)} pixels, " if m else ""
        failure = DecodeFailure("too-large", f"{size}over the {max_pixels}-pixel limit (--max-pixels)")
    return failure.counted(int(m.group(1))) if m and counted else failure


def _over_pixel_limit(width: int, height: int, max_pixels: int, stated: bool = True) -> DecodeFailure:
    """`stated`: False where (width, height) is not the size a decoder gives the image, so the record must not
    keep it: a HEIF's `ispe` is before its crop and rotation (a 64x64 `clap` over a 2^31 x 2^31 `ispe`)."""
    return DecodeFailure("too-large", f"{width}x{height} = {width * height} pixels, over the {max_pixels}-pixel "
                                      f"limit (--max-pixels)", size=(width, height) if stated else None)


def _decode_bytes(data: bytes, limits: DecodeLimits, draft: int | None = None,
                  admit: Callable[[int], None] | None = None, layout: HeifRead | None = None,
                  reserve: Callable[[dict], int] | None = None, oversize_checked: bool = False):
    """decode_bytes' decode of bytes it has stripped (metastrip.strip_oversize); `layout`: a HEIF's
    structures.heif_layout_read of them, where it has it; `oversize_checked`: as for open_image."""
    from PIL import Image, UnidentifiedImageError

    sniffed = sniff_format(data)
    rle = bmp_rle_header(data) if sniffed in ("BMP", None) else None
    if rle and rle[0] * rle[1] > limits.max_pixels:
        # over --max-pixels is `too-large` (the user's lever), before the RLE cap's `decode-error` in open_image
        raise _over_pixel_limit(rle[0], rle[1], limits.max_pixels)
    if sniffed in ("HEIF", "AVIF"):
        # its verdict kept in the read handed to open_image, which refuses it after the size checks here
        layout = heif_read_of(data, layout)
        _, coded, size = heif_problem(data, layout)
        if size and size[0] * size[1] > limits.max_pixels:
            raise _over_pixel_limit(size[0], size[1], limits.max_pixels, stated=False)  # said as its header says it
        if coded > DECODE_BUDGET_IMAGES * limits.max_pixels:
            # a grid's tiles decoded one by one (limits.HEIF_MAX_ENTRIES); its own size is checked below
            raise DecodeFailure("too-large", f"its image is made of {coded} pixels of coded images (tiles, frames), "
                                             f"over {DECODE_BUDGET_IMAGES} x the {limits.max_pixels}-pixel limit "
                                             f"(--max-pixels {-(-coded // DECODE_BUDGET_IMAGES)} or more scans it)")
    _admit_in_pillow(Image, limits.max_pixels)
    # No warnings.catch_warnings here: it swaps process-wide state and decoding runs in threads.
    with contextlib.nullcontext():
        try:
            img = open_image(data, layout=layout, oversize_checked=oversize_checked)
        except DecodeFailure as exc:
            # an RLE BMP over the RLE cap: refused from the info header it states its size in
            raise exc.counted(rle[0] * rle[1]) if rle else exc
        except UnidentifiedImageError as exc:
            if sniffed == "PSD" and data[4:6] == b"\x00\x02":
                raise DecodeFailure("decode-error", "a PSB (Photoshop large document): Pillow decodes no PSB pixels; "
                                                    "its metadata is read") from exc
            if sniffed:
                failure = _undecoded(data, sniffed, exc)
                if failure:
                    raise failure from exc
                raise DecodeFailure("decode-error", f"{sniffed} header present but the file cannot be parsed") from exc
            raise DecodeFailure("unsupported-format", NOT_AN_IMAGE) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow read the header and refused its size: the record keeps that size, as `meta` gives it (not a
            # HEIF's or AVIF's: `meta` gives none before crop and rotation, containers.stated_size)
            raise _too_large(exc, limits.max_pixels, counted=sniffed not in ("HEIF", "AVIF")) from exc
        except Exception as exc:  # noqa: BLE001 - plugins raise many types on corrupt headers
            failure = _undecoded(data, sniffed, exc, sniffed or "file")
            if failure:
                raise failure from exc
            raise DecodeFailure("decode-error", f"corrupt header: {type(exc).__name__}: {exc}") from exc
        fmt = (img.format or sniffed or "unknown").upper()
        if fmt == "MPO":
            # Pillow opens a JPEG with a multi-picture index as MPO: an iPhone's HDR photo (its gain map is the
            # second picture), a portrait's depth matte, a camera's large preview. The picture decoded is the
            # first, a plain JPEG's: named MPO, it was no JPEG to the record (`meta` said JPEG), to the JPEG draft
            # or to the perceptual hash, which decoded it whole (16x the pixels) and hashed it up to 6 bits away
            # from the same picture without its gain map. `image.frames` still counts its pictures.
            fmt = "JPEG"
        width, height = img.size
        info: dict[str, Any] = {"format": fmt, "width": width, "height": height, "mode": img.mode,
                                "frames": _frame_count(img, data)}
        if width <= 0 or height <= 0:
            raise DecodeFailure("decode-error", f"invalid dimensions {width}x{height}")
        if width * height > limits.max_pixels:
            raise _over_pixel_limit(width, height, limits.max_pixels)
        cost = WEBP_PIXEL_COST if fmt == "WEBP" else 1   # libwebp's RGBA canvases (limits.WEBP_PIXEL_COST)
        if width * height * cost > DECODE_BUDGET_IMAGES * limits.max_pixels:
            raise DecodeFailure("too-large", f"{width}x{height} = {width * height} pixels of WebP, over the "
                                             f"{DECODE_BUDGET_IMAGES * limits.max_pixels // cost}-pixel WebP limit "
                                             f"({DECODE_BUDGET_IMAGES}/{cost} of --max-pixels: its decoder holds "
                                             f"{cost} times a PNG's memory a pixel; --max-pixels "
                                             f"{-(-width * height * cost // DECODE_BUDGET_IMAGES)} or more scans it)",
                                (width, height))
        try:
            if draft and fmt == "JPEG":
                # DCT-domain downscale: 2-8x less work; asked when every head resizes anyway, and by the perceptual hash.
                img.draft("RGB", (draft, draft))
                info["draft"] = list(img.size)
            if admit is not None:
                admit(img.size[0] * img.size[1] * cost + (reserve(info) if reserve is not None else 0))
            loadable(img)
            img.load()
            exif_orientation = _orientation(img, info)
            info["orientation"] = exif_orientation
            if exif_orientation != 1:
                try:
                    img = _exif_transpose(img)
                except Exception:  # noqa: BLE001
                    info["orientation_error"] = True
            info["has_alpha"] = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            rgb = _to_rgb(img)
        # The header was read: the record keeps the size it states (a download cut short is 64x48 in `meta` too).
        except DecodeFailure as exc:
            raise exc.sized(width, height)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(exc, limits.max_pixels).sized(width, height) from exc
        except MemoryError as exc:
            raise DecodeFailure("too-large", "out of memory while decoding", (width, height)) from exc
        except Exception as exc:  # noqa: BLE001
            failure = _undecoded(data, fmt, exc)
            if failure:
                raise failure.sized(width, height) from exc
            raise DecodeFailure("decode-error", f"{type(exc).__name__}: {exc}", (width, height)) from exc
    return rgb, info


def _exif_transpose(img):
    """The pixels ImageOps.exif_transpose gives, without what it does beside them: it writes the image's EXIF again
    without the tag (Exif.tobytes, every entry of IFD0 decoded and encoded), which nothing here reads. A 7.6 MB PNG
    whose eXIf held Orientation 6 and 950,000 RATIONALs in a private tag (testing.hostile.exif_rotated_with_values(
    950_000)) took `scan -d metadata` 15.6 s and 370 MB for it. The tag's value is looked up as Pillow looks it up,
    not as _orientation reads it: an Orientation typed as text ("6") or as a FLOAT (6.5) turns nothing there."""
    from PIL import Image

    T = Image.Transpose
    method = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_270,
              7: T.TRANSVERSE, 8: T.ROTATE_90}.get(img.getexif().get(0x0112, 1))
    return img if method is None else img.transpose(method)


# The most bytes a pixel takes in the data Pillow's load() hands a raw decoder (16-bit RGBA).
ROW_BYTES_PER_PIXEL = 8


def loadable(img) -> None:
    """Drop what Pillow's own load() would trip over in an image it opened. A TIFF's XMP tag typed as numbers
    (SHORT, LONG: a malformed file, 30 bytes) is kept as a tuple in info["xmp"], typed ASCII as a str, which
    load() then searches with a bytes pattern for an orientation: TypeError, and the pixels of any TIFF were lost
    to one such entry (a `decode-error` instead of a verdict). The metadata readers read the tag from the file
    themselves. Call it after the last seek (a seek sets info["xmp"] again).

    Pillow's load() also reads an image's data in blocks of `decodermaxblock` (64 KiB) and joins each to what
    its decoder has not consumed yet (`b = b + s`): a raw decoder consumes whole rows only, so a row longer than
    a block was copied again for every block, its cost the square of its length. Pillow hands a WebP's decoded
    frame to such a decoder: a 512-byte animation on a 16777216x1 canvas (16.8 MP, under the WebP pixel limit)
    took load() 17.7 s and `scan -d metadata` 47 s, a 16000000x1 uncompressed TIFF (48 MB) 12.2 s, a BMP 10.0 s.
    A block holds a whole row of up to 8 bytes a pixel here."""
    xmp = img.info.get("xmp") if isinstance(getattr(img, "info", None), dict) else None
    if xmp is not None and not isinstance(xmp, bytes):
        del img.info["xmp"]
    try:
        img.decodermaxblock = max(int(img.decodermaxblock), ROW_BYTES_PER_PIXEL * int(img.size[0]))
    except (AttributeError, TypeError, ValueError):
        pass


def _orientation(img, info: dict) -> int:
    """EXIF Orientation, without letting Pillow's EXIF parser loose on a hostile
    block (65,535-entry IFDs, loops): the capped walker vets it first."""
    raw = img.info.get("exif") if isinstance(img.info, dict) else None
    if raw:
        from .provenance.tiffguard import check_tiff

        tiff = bytes(raw)
        tiff = tiff[6:] if tiff.startswith(b"Exif\x00\x00") else tiff
        chk = check_tiff(tiff, pages=False)
        if not chk.ok:
            info["exif_refused"] = chk.problem
            return 1
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not block the pixels
        return 1


def decode_path(path: str, index: int = 0, limits: DecodeLimits | None = None,
                preprocess_specs: Sequence[Mapping[str, Any]] = (), keep_image: bool = False,
                keep_bytes: bool = True, draft: int | None = None) -> Sample:
    """The worker-side job for one file: read, hash, decode, preprocess for every
    head's spec. Never raises."""
    s = read_sample(path, index, limits)
    if s.ok:
        decode_sample(s, limits, preprocess_specs, keep_image=keep_image, draft=draft)
    if not keep_bytes:
        s.data = None
    return s


def read_sample(path: str, index: int = 0, limits: DecodeLimits | None = None,
                admit: Callable[[int], None] | None = None, expect: tuple[int, int] | None = None) -> Sample:
    """Read and hash one file (the part a result-cache hit still needs). Never raises."""
    rec = Record(file=path)
    s = Sample(index=index, path=path, record=rec)
    with failures_into(rec, "reading"):
        data = read_bytes(path, limits, admit, expect)
        rec.size_bytes = len(data)
        rec.sha256 = hashlib.sha256(data).hexdigest()
        s.data = data
        sniffed = sniff_format(data)
        if sniffed:
            rec.format = sniffed
    return s


@contextlib.contextmanager
def failures_into(rec: Record, doing: str, sample: Sample | None = None) -> Iterator[None]:
    """Every failure inside the block becomes the record's error code, never an exception. `sample` gets
    the failure's header_pixels."""
    try:
        yield
    except DecodeFailure as exc:
        rec.set_error(exc.code, exc.message)
        if exc.size is not None:
            rec.width, rec.height = exc.size
        if sample is not None:
            sample.header_pixels = exc.header_pixels
    except MemoryError:
        rec.set_error("too-large", f"out of memory while {doing}")
    except Exception as exc:  # noqa: BLE001 - a bug, but one file must not end the scan
        rec.set_error("internal-error", f"{type(exc).__name__}: {exc}")


def phash_bytes(data: bytes, limits: Any = None, admit: Any = None) -> int | None:
    """The hash of a file's bytes (the one definition: the perceptual module's docstring). Raises DecodeFailure.
    `admit` as for decode_bytes: the draft's pixels are asked of the caller's budget."""
    from .perceptual import SOURCE_SIDE, phash

    return phash(decode_bytes(data, limits, draft=SOURCE_SIDE, admit=admit)[0])


def phash_decoded(data: bytes, img: Any, info: dict, limits: Any = None, admit: Any = None) -> int | None:
    """phash_bytes(data), given decode_bytes(data)'s (img, info) at whatever draft: that decode when it
    is the hash's own, else one more decode at perceptual.SOURCE_SIDE, asked of `admit` on top of `img`'s
    pixels (both are alive). Raises DecodeFailure. Give `img`'s decode reserve=perceptual.hash_decode_pixels:
    the ask is then already held, and never waits with `img` alive and counted nowhere (admit gives back
    what it holds before it waits)."""
    from .perceptual import is_source, phash

    if is_source(info):
        return phash(img)
    held = img.size[0] * img.size[1]
    return phash_bytes(data, limits, None if admit is None else (lambda n: admit(held + n)))


def decode_sample(s: Sample, limits: DecodeLimits | None = None, preprocess_specs: Sequence[Mapping[str, Any]] = (),
                  keep_image: bool = False, draft: int | None = None,
                  transform: Callable[[Any, Sample], Any] | None = None,
                  admit: Callable[[int], None] | None = None, phash: bool = False,
                  keep_layout: bool = False) -> Sample:
    """Decode the bytes read by read_sample and preprocess for every head's spec;
    `transform(image, sample) -> image` acts between the two. Never raises.
    `admit` as for decode_bytes. `phash`: s.phash gets phash_decoded of the bytes
    (before the transform; None when its own decode fails, the file's pixels still count).
    `keep_layout`: a HEIF/AVIF's read of its item tables is kept as s.layout, for per-file detectors
    that read these bytes next and drop it after (pipeline.stages.DecodeStage)."""
    from .preprocess import apply, spec_key

    rec = s.record
    with failures_into(rec, "decoding", s):
        if phash:  # imported only when asked: a scan's first read under a deadline would pay for it
            from .perceptual import hash_decode_pixels
        data = s.data or b""
        # read here, not inside decode_bytes, so the metadata detector's walk of these bytes can have it too
        layout = heif_layout_read(data) if sniff_format(data) in ("HEIF", "AVIF") else None
        if keep_layout:
            s.layout = layout
        img, info = decode_bytes(data, limits, draft=draft, admit=admit, layout=layout,
                                 reserve=hash_decode_pixels if phash else None)
        rec.format, rec.width, rec.height = info["format"], info["width"], info["height"]
        rec.image_info = {k: info[k] for k in ("mode", "frames", "orientation", "has_alpha") if k in info}
        without = info.get("metadata_skipped_for_pixels") or info.get("metadata_withheld")
        if without:
            # Honest about the retry (Pillow refused the file with its metadata, decoded it without), or
            # about the metadata chunks over limits.DECODE_MAX_METADATA_CHUNK never handed to Pillow.
            rec.image_info["pixels_without_metadata"] = without
        s.info = info
        if phash:
            try:
                s.phash = phash_decoded(s.data or b"", img, info, limits, admit)
            except DecodeFailure:
                s.phash = None
        if transform is not None:
            img = transform(img, s)
            if s.layout is not None and s.layout.data is not s.data:
                # it replaced the bytes (evaluation's perturbations): a read of the file's stands for none the
                # detectors see (heif_read_of) and would hold the file's bytes beside the new ones until _done
                s.layout = None
        for spec in preprocess_specs:
            s.pixels[spec_key(spec)] = apply(img, spec)
        if keep_image:
            s.image = img
    return s


def read_recorded(path: str | Path, sha256: str | None, limits: DecodeLimits | None = None) -> bytes:
    """The bytes at `path` only if they are the bytes a record describes (its SHA-256); raises
    DecodeFailure saying why not. What a report draws beside a verdict (a thumbnail, a heat map)
    must be of that file: one replaced at the same path since the scan (or named by a hand-made or
    foreign JSONL) must not put another picture there."""
    if not sha256:
        raise DecodeFailure("unreadable", "the record has no checksum to match the file against")
    try:
        data = read_bytes(path, limits)
    except DecodeFailure as exc:
        raise DecodeFailure(exc.code, f"the file cannot be read now ({exc.message})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DecodeFailure("unreadable", "the file at this path has changed since the scan")
    return data


def load_rgb(path: str | Path, limits: DecodeLimits | None = None, draft: int | None = None):
    """For trainers and tools: path -> PIL RGB image (raises DecodeFailure)."""
    img, _ = decode_bytes(read_bytes(path, limits), limits, draft=draft)
    return img
