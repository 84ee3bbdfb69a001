"""EXIF: camera make/model/lens, capture time, exposure, maker note, GPS,
software, and the text fields generator UIs abuse (UserComment, ImageDescription).

exifread is the primary reader. It is fed the bare TIFF structure the container
walker extracted, which sidesteps its two container bugs measured with 3.5.1
(no tags for a spec WebP EXIF chunk without the 'Exif\\0\\0' prefix; an
AssertionError in its HEIC `iloc` parser). Pillow's Exif reader fills any field
exifread could not produce, and is the whole answer when exifread raises.
"""
from __future__ import annotations

import io
import logging
import math
import unicodedata
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

MAX_EXIF_BYTES = 8 * 1024 * 1024

# Pillow tag ids
_MAKE, _MODEL, _SOFTWARE, _DATETIME, _DESC, _ARTIST = 0x010F, 0x0110, 0x0131, 0x0132, 0x010E, 0x013B
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_EXPOSURE, _FNUMBER, _ISO, _DTO, _FOCAL, _MAKERNOTE, _USERCOMMENT = 0x829A, 0x829D, 0x8827, 0x9003, 0x920A, 0x927C, 0x9286
_LENSMAKE, _LENSMODEL = 0xA433, 0xA434


# What a camera can record (inclusive bounds): exposure up to a day, f/0.5 to f/1024 (pinholes),
# ISO 1 to 10 million (the highest sold reach 3.3 million), focal length up to 20 m.
_PLAUSIBLE = {"exposure_time": (1e-7, 86400.0), "f_number": (0.5, 1024.0), "iso": (1, 10_000_000),
              "focal_length": (0.1, 20_000.0)}


@dataclass
class ExifFacts:
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    lens_make: str | None = None
    datetime_original: str | None = None
    datetime: str | None = None
    exposure_time: float | None = None
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None
    software: str | None = None
    artist: str | None = None
    description: str | None = None
    user_comment: str | None = None
    has_makernote: bool = False
    # Whether the note is plausibly the named maker's own (makernote.py); None when there is none.
    makernote: Any = None
    has_gps: bool = False
    reader: str = ""
    where: str = ""
    errors: list[str] = field(default_factory=list)
    # Left unread for a cap (its size, a TIFF structure over the walker's caps), not for being no TIFF structure:
    # a camera's tags may be in it, so "no camera metadata" is not claimed.
    refused: bool = False

    @property
    def capture_time(self) -> str | None:
        return self.datetime_original or self.datetime

    @property
    def camera_fields(self) -> list[str]:
        """Which photographic fields are present (what a camera writes and a generator does not). A
        setting counts only within what a camera can record: garbage numbers (a zero, negative or
        1e12 f-number from a corrupt or crafted block) raised make/model (0.7 nats) to "exposure
        settings" (1.2). The facts keep the values as read."""
        return [k for k in ("make", "model", "exposure_time", "f_number", "iso", "focal_length", "lens")
                if getattr(self, k) not in (None, "") and (k not in _PLAUSIBLE or
                                                          _PLAUSIBLE[k][0] <= getattr(self, k) <= _PLAUSIBLE[k][1])]

    def to_dict(self) -> dict[str, Any]:
        from .recordtext import clip_fields

        d = {k: v for k, v in self.__dict__.items() if k not in ("errors", "makernote", "refused") and v not in (None, "", False)}
        if self.makernote is not None:
            d["makernote"] = self.makernote.to_dict()
        d["capture_time"] = self.capture_time
        return clip_fields({k: v for k, v in d.items() if v is not None})


def _clean(s: Any) -> str | None:
    if not isinstance(s, (str, bytes)):
        # The value of a non-text type (BYTE, SHORT, UNDEFINED...) is numbers: their repr, "[1, 2, 3]"
        # from exifread or "7" from Pillow, was taken for the text (a camera Make and Model from any
        # two such entries).
        return None
    if isinstance(s, bytes):
        s = s.decode("utf-8", "replace")
    s = str(s).replace("\x00", "").strip()
    return s or None


def _name(s: Any, latin1: bool = False) -> str | None:
    """A camera or lens name (Make, Model, LensMake, LensModel): printable text with a letter or
    digit. Undecodable or control bytes there are a corrupt or crafted block, not a camera, and
    made camera evidence (0.7 nats toward real) and a record naming '\\x01\\x02...' as the make.
    latin1: `s` is Pillow's reading of an ASCII field, its bytes decoded as Latin-1."""
    if latin1 and isinstance(s, str) and s and "\x80" <= max(s) < "\u0100":
        # Bytes that are not UTF-8 text came out as 'ÿþý'. Only Pillow's text: exifread's is decoded
        # as UTF-8 already, and a BYTE entry's bytes by _clean, where 'Société' would not survive this.
        try:
            s = s.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            # Not UTF-8: older cameras wrote Latin-1 there (Olympus' 'µ770SW'), binary junk reads as
            # 'ÿþý'. A name is mostly ASCII with a letter or digit among it, and has no C1 controls.
            ascii_ = [c for c in s if c < "\x80"]
            if (any(c.isalnum() for c in ascii_) and 2 * len(ascii_) >= len(s)
                    and not any("\x80" <= c < "\xa0" for c in s)):
                return _name(s)
            return None
    s = _clean(s)
    # Line breaks pass: ComfyUI's graph JSON arrives in Make/Model ("workflow:{...}") and is taken
    # out of them later (provenance.analyze).
    if s is None or "\ufffd" in s or not any(c.isalnum() for c in s) or any(
            unicodedata.category(c) in ("Cc", "Cs", "Co") for c in s if c not in "\t\n\r"):
        return None
    return s


def _num(v: Any) -> float | None:
    try:
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if v is None:
            return None
        if hasattr(v, "numerator") and hasattr(v, "denominator"):
            if v.denominator == 0:
                return None
            return float(Fraction(int(v.numerator), int(v.denominator)))
        x = float(v)
        # EXIF DOUBLE fields can hold NaN/Infinity: not a measurement, and not valid JSON.
        return x if math.isfinite(x) else None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None


def decode_user_comment(raw: Any) -> str | None:
    """EXIF UserComment: 8-byte charset header then text. A1111 writes
    'UNICODE\\0' + UTF-16 (big-endian in practice; piexif writes BE)."""
    if raw is None:
        return None
    if isinstance(raw, (list, tuple)):
        try:
            raw = bytes(int(x) & 0xFF for x in raw)
        except (TypeError, ValueError):
            return _clean(str(raw))
    if isinstance(raw, str):
        return _clean(raw)
    raw = bytes(raw)
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        if len(body) >= 2 and body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return _clean(body.decode("utf-16", "replace"))
        # Guess the byte order: ASCII text has its zero bytes first in BE.
        be = body[0::2].count(0) >= body[1::2].count(0)
        return _clean(body.decode("utf-16-be" if be else "utf-16-le", "replace"))
    if head.startswith(b"ASCII") or head.startswith(b"\x00" * 8):
        return _clean(body.decode("utf-8", "replace"))
    if head.startswith(b"JIS"):
        return _clean(body.decode("shift_jis", "replace"))
    return _clean(raw.decode("utf-8", "replace"))


def _read_exifread(tiff: bytes, f: ExifFacts) -> None:
    import exifread

    logging.getLogger("exifread").setLevel(logging.CRITICAL)
    tags = exifread.process_file(io.BytesIO(tiff), details=False, extract_thumbnail=False)
    if not tags:
        raise ValueError("exifread found no tags")

    def val(name):
        t = tags.get(name)
        return None if t is None else t.values

    f.make = f.make or _name(val("Image Make"))
    f.model = f.model or _name(val("Image Model"))
    f.software = f.software or _clean(val("Image Software"))
    f.datetime = f.datetime or _clean(val("Image DateTime"))
    f.artist = f.artist or _clean(val("Image Artist"))
    f.description = f.description or _clean(val("Image ImageDescription"))
    f.datetime_original = f.datetime_original or _clean(val("EXIF DateTimeOriginal"))
    f.exposure_time = f.exposure_time if f.exposure_time is not None else _num(val("EXIF ExposureTime"))
    f.f_number = f.f_number if f.f_number is not None else _num(val("EXIF FNumber"))
    iso = _num(val("EXIF ISOSpeedRatings"))
    if f.iso is None and iso is not None:
        f.iso = int(iso)
    f.focal_length = f.focal_length if f.focal_length is not None else _num(val("EXIF FocalLength"))
    f.lens = f.lens or _name(val("EXIF LensModel"))
    f.lens_make = f.lens_make or _name(val("EXIF LensMake"))
    if f.user_comment is None and tags.get("EXIF UserComment") is not None:
        f.user_comment = decode_user_comment(val("EXIF UserComment"))
    # A position is a latitude and a longitude: any other GPS tag (a timestamp, a datum, a stray entry
    # of a corrupt block) said "GPS position in EXIF".
    f.has_gps = f.has_gps or ("GPS GPSLatitude" in tags and "GPS GPSLongitude" in tags)


def _read_pillow(tiff: bytes, f: ExifFacts) -> None:
    from PIL import Image

    from ..quiet import quiet_warnings

    ex = Image.Exif()
    with quiet_warnings():  # corrupt-EXIF warnings: the caller records failures itself
        # From a file object, as Exif.load reads its bytes, but without load's two copies of them ("Exif" +
        # the block, then its prefix cut off): a TIFF file's block is the whole file. `tiff` passed
        # check_tiff, so it starts with a TIFF header, never with a prefix load would cut.
        ex.load_from_fp(io.BytesIO(tiff))
        return _fill_pillow(ex, f)


def _fill_pillow(ex, f: ExifFacts) -> None:
    if not ex and not ex.get_ifd(_EXIF_IFD):
        raise ValueError("Pillow found no EXIF tags")
    sub = ex.get_ifd(_EXIF_IFD)
    f.make = f.make or _name(ex.get(_MAKE), latin1=True)
    f.model = f.model or _name(ex.get(_MODEL), latin1=True)
    f.software = f.software or _clean(ex.get(_SOFTWARE))
    f.datetime = f.datetime or _clean(ex.get(_DATETIME))
    f.artist = f.artist or _clean(ex.get(_ARTIST))
    f.description = f.description or _clean(ex.get(_DESC))
    f.datetime_original = f.datetime_original or _clean(sub.get(_DTO))
    if f.exposure_time is None:
        f.exposure_time = _num(sub.get(_EXPOSURE))
    if f.f_number is None:
        f.f_number = _num(sub.get(_FNUMBER))
    if f.iso is None and _num(sub.get(_ISO)) is not None:
        f.iso = int(_num(sub.get(_ISO)))
    if f.focal_length is None:
        f.focal_length = _num(sub.get(_FOCAL))
    f.lens = f.lens or _name(sub.get(_LENSMODEL), latin1=True)
    f.lens_make = f.lens_make or _name(sub.get(_LENSMAKE), latin1=True)
    if f.user_comment is None and sub.get(_USERCOMMENT) is not None:
        f.user_comment = decode_user_comment(sub.get(_USERCOMMENT))
    f.has_makernote = f.has_makernote or bool(sub.get(_MAKERNOTE))
    if not f.has_gps:
        gps = ex.get_ifd(_GPS_IFD)
        f.has_gps = 2 in gps and 4 in gps  # GPSLatitude, GPSLongitude


def read_exif(tiff: bytes, where: str = "", file: bytes | None = None) -> ExifFacts:
    """TIFF-structured EXIF bytes -> facts. Never raises; problems go to .errors. file: the whole
    file the block came from, read only for a JPEG's maker note kept after the image (Leica's
    trailer), and only when the note points past the block."""
    f = ExifFacts(where=where)
    if len(tiff) > MAX_EXIF_BYTES and not where.startswith("TIFF"):
        f.errors.append(f"EXIF block of {len(tiff)} bytes exceeds {MAX_EXIF_BYTES}; ignored")
        f.refused = True
        return f
    from .tiffguard import MAX_VALUES, bounded_for_readers, check_tiff, oversize_read

    # IFD0, IFD1 and their sub-IFDs only, in a TIFF file too: the readers get a copy cut after IFD1,
    # and the decoder walks a TIFF file's whole page chain itself (walking it here again cost 0.5 s
    # on a 92 KB chain of 3 million entries, docs/schema.md, for nothing the readers see).
    chk = check_tiff(tiff, pages=False, max_values=MAX_VALUES)
    if not chk.ok:
        # Hostile or broken structure: the third-party readers would take seconds to minutes on it.
        f.errors.append(f"EXIF structure not read: {chk.problem}")
        f.refused = chk.ifds > 0    # an IFD was reached: a TIFF structure over a cap, not junk
        return f
    # An entry over the readers' cap is left out of their copy (tiffguard.without_oversize; the container walk
    # says which): a camera's tag may be the one, so "no camera metadata" is not claimed.
    f.refused = bool(oversize_read(chk))
    raw, tiff = tiff, bounded_for_readers(tiff, chk)
    readers = []
    for name, fn in (("exifread", _read_exifread), ("pillow", _read_pillow)):
        try:
            fn(tiff, f)
            readers.append(name)
        except Exception as exc:  # noqa: BLE001 - third-party parsers raise anything on bad input
            f.errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
    f.reader = "+".join(readers)
    if readers:
        f.errors = [e for e in f.errors if "found no" not in e]
        from . import makernote

        order = "<" if tiff[:2] == b"II" else ">"
        note, trailer = makernote.find_note(tiff), None
        if note is None and file is not None and (where == "JPEG APP1" or where.startswith("JPEG APP1 #")):
            # Only a JPEG keeps a note after the image (Leica's trailer); a PNG's bytes after IEND
            # are not read.
            trailer = makernote.find_trailer_note(raw, file)
            note = trailer[0] if trailer else None
        if note:
            # A trailer note's values are in the trailer: the file, not the block, bounds them.
            f.makernote = makernote.classify(note, f.make, file if trailer else tiff, order)
            if trailer:
                f.makernote.size = trailer[1]
                f.makernote.format += " (trailer after the image)"
            f.has_makernote = True
    return f


# Fields whose disagreement between two EXIF blocks is worth telling a reader.
CONFLICT_FIELDS = ("make", "model", "lens", "software", "datetime_original", "datetime", "exposure_time", "f_number",
                   "iso", "focal_length", "has_makernote", "has_gps")


def merge(facts: list[ExifFacts]) -> tuple[ExifFacts | None, list[str]]:
    """Several EXIF blocks (a file has one; a second is an edit or a forgery): the first readable
    one is the EXIF, as for Pillow, exiftool and browsers. Fields are not mixed across blocks:
    that described a camera no block names (one block's make beside another's maker note and
    exposure). -> (the EXIF, "field: value (where) vs value (where)" for each field the others
    contradict)."""
    from .recordtext import quote

    good = [f for f in facts if f.reader]
    if not good:
        return None, []
    out, conflicts = good[0], []
    for other in good[1:]:
        for k in CONFLICT_FIELDS:
            a, b = getattr(out, k), getattr(other, k)
            if a == b or b in (None, "", False):
                continue
            if a in (None, "", False):
                conflicts.append(f"EXIF {k}: only in {other.where} ({quote(repr(b))}), not used")
            else:
                conflicts.append(f"EXIF {k}: {quote(repr(a))} ({out.where}) vs {quote(repr(b))} ({other.where})")
    return out, conflicts
