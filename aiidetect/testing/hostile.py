"""A hostile corpus: the files an attacker or a messy archive hands aiidetect.

`make_corpus(d)` writes every case into `d` (small files, built in memory; the one
600 MB file is sparse, a hole on disk) and returns {relative path bytes: Expect}. Each Expect says what the record
must carry: an error code (or None for "decodes"), whether decisive AI
evidence must be found (the evasion cases: a metadata quirk must not hide it),
at most how many nats the metadata may sum (one claim repeated in every block
must not add up), and notes for the reader. Cases are grouped by class (issue "Trust under
hostile input"): broken files in every format, decompression bombs, metadata
bombs (quadratic A1111 text, nested XMP, huge/looping EXIF IFDs, zTXt bombs,
oversized compressed chunks), huge frame counts, structure bombs the decoders
walk in Python or pass over per scan (progressive JPEG scans, PNG chunks, TIFF
strip tables, BigTIFF, GIF frames, RLE BMP rows), formats Pillow knows but aiidetect does not
take (EPS, which Pillow renders with Ghostscript; QOI), special files, symlink loops,
odd and non-UTF-8 names, rich markup in names and metadata, NaN/Inf EXIF,
a tool name in EXIF, XMP and a broken IPTC IIM block at once.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ANY_ERROR = "any-error"


@dataclass
class Expect:
    error: str | None          # error code, None (must decode), or ANY_ERROR
    decisive_ai: bool | None = None   # None: not asserted
    note: str = ""
    # The metadata detector's summed LLR (nats) must not exceed this (None: not asserted): one claim
    # repeated across blocks must not add up to more than it says once.
    max_llr: float | None = None


def _noise(w=64, h=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_with(chunks: list[bytes], img: Image.Image | None = None) -> bytes:
    """A valid PNG with extra chunks inserted right after IHDR."""
    base = _enc(img or _noise(), "PNG")
    ihdr_end = 8 + 12 + 13
    return base[:ihdr_end] + b"".join(chunks) + base[ihdr_end:]


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    """One JPEG marker segment: 0xFF, the marker, a big-endian length that counts itself, the payload."""
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def with_jpeg_segments(jpeg: bytes, segs, at: int = 2) -> bytes:
    """`jpeg` with (marker, payload) segments inserted at byte `at` (by default right after SOI)."""
    return jpeg[:at] + b"".join(jpeg_segment(m, p) for m, p in segs) + jpeg[at:]


def jpeg_with_app1(payload: bytes, img: Image.Image | None = None) -> bytes:
    return with_jpeg_segments(_enc(img or _noise(), "JPEG", quality=85), [(0xE1, payload)])


def xmp_creator_tool(tool: str) -> tuple[int, bytes]:
    """An APP1 (marker, payload) whose XMP packet names `tool` in xmp:CreatorTool."""
    return 0xE1, (b"http://ns.adobe.com/xap/1.0/\x00" + (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-'
        'rdf-syntax-ns#"><rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        f'<xmp:CreatorTool>{tool}</xmp:CreatorTool></rdf:Description></rdf:RDF></x:xmpmeta>').encode())


def xmp_history_tool(creator: str, agent: str) -> tuple[int, bytes]:
    """An APP1 (marker, payload) whose XMP packet names `creator` in xmp:CreatorTool and one saved step of the
    edit history by `agent` (Photoshop writing a file one generative-fill step of which was Adobe Firefly)."""
    return 0xE1, (b"http://ns.adobe.com/xap/1.0/\x00" + (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
        'xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#">'
        f'<xmp:CreatorTool>{creator}</xmp:CreatorTool><xmpMM:History><rdf:Seq>'
        f'<rdf:li stEvt:action="saved" stEvt:softwareAgent="{agent}"/></rdf:Seq></xmpMM:History>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>').encode())


def iim_dataset(rec: int, ds: int, value: bytes) -> bytes:
    """One IPTC IIM dataset with a standard 2-byte length."""
    return b"\x1c" + bytes([rec, ds]) + struct.pack(">H", len(value)) + value


def image_resource(rid: int, data: bytes, name: bytes = b"", pad: bool = True) -> bytes:
    """One Photoshop 8BIM image resource: Pascal name padded to even, then the data padded to even
    (pad=False: an odd size left unpadded, as some writers do)."""
    head = bytes([len(name)]) + name
    head += b"\x00" * (len(head) & 1)
    return b"8BIM" + struct.pack(">H", rid) + head + struct.pack(">I", len(data)) + data + (
        b"\x00" if pad and len(data) & 1 else b"")


def raw_profile_text(name: str, blob: bytes, declared: int | None = None) -> str:
    """An ImageMagick 'Raw profile type' text: newline, name, newline, the length right-aligned in 8
    characters, newline, lowercase hex in lines of 72 digits (png.c's layout)."""
    digits = blob.hex()
    lines = "\n".join(digits[i:i + 72] for i in range(0, len(digits), 72))
    return f"\n{name}\n{len(blob) if declared is None else declared:8d}\n{lines}\n"


def raw_profile_chunk(name: str, blob: bytes | None = None, text: str | None = None,
                      ctype: bytes = b"zTXt") -> bytes:
    """A PNG text chunk keyed 'Raw profile type <name>' (zTXt, as ImageMagick writes it, or tEXt/iTXt)."""
    body = (text if text is not None else raw_profile_text(name, blob or b"")).encode("latin-1")
    key = f"Raw profile type {name}".encode()
    if ctype == b"zTXt":
        return png_chunk(ctype, key + b"\x00\x00" + zlib.compress(body))
    if ctype == b"iTXt":
        return png_chunk(ctype, key + b"\x00\x00\x00\x00\x00" + body)
    return png_chunk(ctype, key + b"\x00" + body)


def psd(resources: bytes, w: int = 8, h: int = 8, bits: int = 8, mode: int = 3, channels: int = 3) -> bytes:
    """A minimal Photoshop file with these image resources: 8-bit RGB by default (Pillow decodes it);
    bits/mode/channels for the layouts Photoshop writes and Pillow does not decode (16-bit RGB: 16, 3, 3)."""
    head = b"8BPS" + struct.pack(">H", 1) + b"\x00" * 6 + struct.pack(">HIIHH", channels, h, w, bits, mode)
    return (head + struct.pack(">I", 0) + struct.pack(">I", len(resources)) + resources + struct.pack(">I", 0)
            + struct.pack(">H", 0) + bytes(channels * w * h * max(bits, 8) // 8))


def tiff_file(bits: int, samples: int, photometric: int, sample_format: int = 1, compression: int = 1,
              extra: list[tuple[int, int, bytes]] = (), w: int = 8, h: int = 6) -> bytes:
    """A one-strip little-endian TIFF in any layout, Pillow's or not (16-bit Lab: 16, 3, 8; float
    RGB: 32, 3, 2, 3), zero pixels; extra: (tag, type, value bytes) entries such as XMP (700, 1, packet)."""
    data = bytes(w * h * samples * max(bits, 8) // 8)
    per_sample = lambda v: struct.pack(f"<{samples}H", *[v] * samples)   # noqa: E731
    tags = [(256, 3, struct.pack("<H", w)), (257, 3, struct.pack("<H", h)), (258, 3, per_sample(bits)),
            (259, 3, struct.pack("<H", compression)), (262, 3, struct.pack("<H", photometric)),
            (273, 4, b"DATA"), (277, 3, struct.pack("<H", samples)), (278, 3, struct.pack("<H", h)),
            (279, 4, struct.pack("<I", len(data))), (339, 3, per_sample(sample_format)), *extra]
    tags.sort(key=lambda t: t[0])
    size = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1}
    tail_at = 8 + 2 + 12 * len(tags) + 4
    ifd, tail = struct.pack("<H", len(tags)), b""
    values_len = sum(len(v) + (len(v) & 1) for _, _, v in tags if len(v) > 4)
    for tag, typ, value in tags:
        if value == b"DATA":
            value = struct.pack("<I", tail_at + values_len)
        count = len(value) // size[typ]
        if len(value) > 4:
            field, tail = struct.pack("<I", tail_at + len(tail)), tail + value + b"\x00" * (len(value) & 1)
        else:
            field = value.ljust(4, b"\x00")
        ifd += struct.pack("<HHI", tag, typ, count) + field
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + tail + data


def tiff_with_page(tiff: bytes, extra: list[tuple[int, int, bytes]] = ()) -> bytes:
    """`tiff` (a one-page little-endian TIFF, tiff_file's) with a second page after it: tiff_file(8, 1, 1, extra)
    moved there. c2pa-rs takes a C2PA tag (52545) from any page, not only the first."""
    page = bytearray(tiff_file(8, 1, 1, extra=extra))
    at = len(tiff) + (len(tiff) & 1)
    size = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1}
    for i in range(struct.unpack_from("<H", page, 8)[0]):
        p = 10 + 12 * i
        tag, typ, count, field = struct.unpack_from("<HHII", page, p)
        if tag == 273 or count * size[typ] > 4:     # an offset into the page: where it lands in the file
            struct.pack_into("<I", page, p + 8, field + at - 8)
    out = bytearray(tiff + b"\x00" * (len(tiff) & 1) + page[8:])
    ifd = struct.unpack_from("<I", out, 4)[0]
    struct.pack_into("<I", out, ifd + 2 + 12 * struct.unpack_from("<H", out, ifd)[0], at)
    return bytes(out)


def tiff_decoded_values(tag: int = 282, typ: int = 5, count: int = 2_000_000) -> bytes:
    """An 8x6 greyscale TIFF (a palette one for ColorMap, tag 320) whose entry `tag` holds `count` values of type
    `typ` (3 SHORT, 4 LONG, 5 RATIONAL, 6 SBYTE, each 1): Pillow's open decodes each into a Python object. The default,
    XResolution of 2 M RATIONALs (16 MB), took `scan -d metadata` 12.5 s (docs/schema.md); over
    limits.TIFF_MAX_DECODED_VALUES it is refused."""
    one = {3: struct.pack("<H", 1), 4: struct.pack("<I", 1), 5: struct.pack("<II", 1, 1), 6: b"\x01"}[typ]
    return tiff_file(8, 1, 3 if tag == 320 else 1, extra=[(tag, typ, one * count)])


def tiff_palette_pages(n: int = 10_000, colors: int = 256) -> bytes:
    """A TIFF of n 1x1 8-bit palette pages, each with a ColorMap of 3 x `colors` SHORTs: Pillow decodes every
    page's ColorMap when it counts the pages. With the defaults the most palette values the TIFF cap lets
    through (tiffguard.PALETTE_VALUES a page, MAX_PAGES pages: 7.68 M, a 15 MB file)."""
    cmap = struct.pack(f"<{3 * colors}H", *range(3 * colors))
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for i in range(n):
        at = len(out)
        tail_at = at + 2 + 12 * 10 + 4
        tags = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 3),
                (273, 4, 1, tail_at + len(cmap)), (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, 1, 1),
                (320, 3, 3 * colors, tail_at)]
        out += struct.pack("<H", len(tags))
        for tag, typ, count, value in tags:
            out += struct.pack("<HHI", tag, typ, count) + struct.pack("<H" if typ == 3 and count == 1 else "<I",
                                                                      value).ljust(4, b"\x00")
        nxt = tail_at + len(cmap) + 2 if i + 1 < n else 0
        out += struct.pack("<I", nxt) + cmap + b"\x07\x00"
    return bytes(out)


def tiff_numeric_xmp(typ: int = 3, count: int = 10) -> bytes:
    """An 8x6 greyscale TIFF whose XMP tag (700) is typed as numbers (3 SHORT, 4 LONG), `count` of them, or as
    ASCII (2): Pillow keeps it as a tuple or a str and its load() searches that with a bytes pattern for an
    orientation, a TypeError that cost the file its pixels (decode.loadable drops it first)."""
    one = {2: b"<", 3: struct.pack("<H", 60), 4: struct.pack("<I", 60)}[typ]
    return tiff_file(8, 1, 1, extra=[(700, typ, one * count)])


def exif_rotated_with_values(n: int = 950_000, orientation: int = 6) -> bytes:
    """A 64x48 PNG whose eXIf holds Orientation `orientation` and a private tag (0xC000) of `n` RATIONALs (by
    default 7.6 MB, under the decoder's 8 MiB chunk cap): ImageOps.exif_transpose wrote the EXIF again after the
    rotation, decoding every value (15.6 s and 370 MB to scan)."""
    data_at = 8 + 2 + 12 * 2 + 4
    tiff = (b"II*\x00" + struct.pack("<IH", 8, 2) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
            + struct.pack("<HHII", 0xC000, 5, n, data_at) + bytes(4) + struct.pack("<II", 1, 1) * n)
    return png_with([png_chunk(b"eXIf", tiff)])


def tiff_exif_ifd_values(n: int = 1_000_000) -> bytes:
    """An 8x6 greyscale TIFF whose EXIF sub-IFD holds one private tag (0xC000) of `n` RATIONALs (by default 8 MB):
    Pillow's load() makes a dict of the whole sub-IFD, each value an IFDRational (3.4 s for the decode alone)."""
    base = tiff_file(8, 1, 1, extra=[(34665, 4, struct.pack("<I", 0xDEADBEEF))])
    at = len(base)
    sub = struct.pack("<HHHII", 1, 0xC000, 5, n, at + 18) + bytes(4) + struct.pack("<II", 1, 1) * n
    return base.replace(struct.pack("<I", 0xDEADBEEF), struct.pack("<I", at)) + sub


def bomb_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(b"\x00" * (width + 1)) for _ in range(16)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], e: str = "<", next_ifd: int = 0, ifd_off: int = 8) -> bytes:
    """One IFD with inline values (<= 4 bytes): (tag, type, count, value4)."""
    out = struct.pack(e + "H", len(entries))
    for tag, typ, count, val in entries:
        out += struct.pack(e + "HHI", tag, typ, count) + val.ljust(4, b"\x00")[:4]
    return out + struct.pack(e + "I", next_ifd)


def exif_many_entries(n: int = 65535) -> bytes:
    """TIFF-structured EXIF whose IFD0 claims n entries (all junk tags)."""
    head = b"II*\x00" + struct.pack("<I", 8)
    body = struct.pack("<H", n) + b"".join(struct.pack("<HHII", 0x9000 + (i % 4000), 7, 1000, 0xFFFFFF00)
                                          for i in range(n)) + b"\x00\x00\x00\x00"
    return head + body


def exif_loop() -> bytes:
    """IFD0's next-IFD pointer points back at IFD0; its EXIF sub-IFD points at itself."""
    ifd = tiff_ifd([(0x010F, 2, 4, b"Cam\x00"), (0x8769, 4, 1, struct.pack("<I", 8))], next_ifd=8)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def ifd_chain(n: int) -> bytes:
    """n one-entry IFDs, each pointing at the next: deep chains (EXIF IFD1...IFDn, or TIFF pages)."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for i in range(n):
        off = 8 + 18 * i
        nxt = off + 18 if i + 1 < n else 0
        out += struct.pack("<H", 1) + struct.pack("<HHI", 0x010F, 2, 4) + b"Cam\x00" + struct.pack("<I", nxt)
    return bytes(out)


def exif_chain_bomb(k: int = 400, n: int = 65535) -> bytes:
    """TIFF-structured EXIF: a tidy IFD0 and IFD1, then k IFDs of n entries each
    laid 4 bytes apart (they overlap), chained by next-IFD pointers. exifread
    walks the whole chain: k * n entries from ~8k + 12n bytes."""
    ifd1_off, o = 8 + 18, 8 + 36
    ifd = lambda nxt: struct.pack("<HHHI", 1, 0x0131, 2, 4) + b"abc\x00" + struct.pack("<I", nxt)  # noqa: E731
    size = 8 * k + 12 * n + 16
    region = bytearray(struct.pack("<HH", n, 0x9286) * (size // 4 + 1))   # every 4th byte pair reads n
    for i in range(k):
        struct.pack_into("<I", region, 4 * i + 2 + 12 * n, o + 4 * (i + 1) if i + 1 < k else 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd(ifd1_off) + ifd(o) + bytes(region)


def exif_nonfinite() -> bytes:
    """Make/Model plus DOUBLE (type 12) FNumber=NaN, ExposureTime=+Inf, FocalLength=-Inf in the EXIF IFD."""
    e = "<"
    make, model = b"Canon\x00", b"[/i]EOS [bold]R5\x00"
    # layout: header(8) IFD0 at 8 with 3 entries -> 2+36+4 = 42 bytes -> data at 50
    ifd0_n = 3
    ifd0_size = 2 + 12 * ifd0_n + 4
    data_off = 8 + ifd0_size
    make_off, model_off = data_off, data_off + len(make)
    exif_off = model_off + len(model)
    exif_n = 3
    exif_size = 2 + 12 * exif_n + 4
    dbl_off = exif_off + exif_size
    nan, inf, ninf = struct.pack(e + "d", float("nan")), struct.pack(e + "d", float("inf")), struct.pack(e + "d", float("-inf"))
    ifd0 = struct.pack(e + "H", ifd0_n)
    ifd0 += struct.pack(e + "HHII", 0x010F, 2, len(make), make_off)
    ifd0 += struct.pack(e + "HHII", 0x0110, 2, len(model), model_off)
    ifd0 += struct.pack(e + "HHII", 0x8769, 4, 1, exif_off)
    ifd0 += struct.pack(e + "I", 0)
    exif = struct.pack(e + "H", exif_n)
    exif += struct.pack(e + "HHII", 0x829A, 12, 1, dbl_off)        # ExposureTime
    exif += struct.pack(e + "HHII", 0x829D, 12, 1, dbl_off + 8)    # FNumber
    exif += struct.pack(e + "HHII", 0x920A, 12, 1, dbl_off + 16)   # FocalLength
    exif += struct.pack(e + "I", 0)
    return b"II*\x00" + struct.pack(e + "I", 8) + ifd0 + make + model + exif + inf + nan + ninf


def tiff_file_many_entries(n: int = 65535) -> bytes:
    return exif_many_entries(n)


def tiff_file_loop() -> bytes:
    img = _enc(_noise(16, 16), "TIFF")
    # Point the last IFD's next pointer back at the first IFD.
    e = "<" if img[:2] == b"II" else ">"
    (first,) = struct.unpack_from(e + "I", img, 4)
    (n,) = struct.unpack_from(e + "H", img, first)
    nxt = first + 2 + 12 * n
    return img[:nxt] + struct.pack(e + "I", first) + img[nxt + 4:]


def gif_many_frames(n: int = 3000) -> bytes:
    frames = [Image.new("P", (2, 2), i % 256) for i in range(n)]
    return _enc(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)


def apng_claims_frames() -> bytes:
    """An APNG whose acTL claims 2**31-1 frames while holding one."""
    base = _enc(_noise(), "PNG")
    actl = png_chunk(b"acTL", struct.pack(">II", 2 ** 31 - 1, 0))
    return base[:33] + actl + base[33:]


def a1111_quadratic() -> bytes:
    text = "a cat\nSteps: 20, " + "a" * 80_000 + "!"
    return png_with([png_chunk(b"tEXt", b"parameters\x00" + text.encode("latin-1"))])


def comfy_workflow_big_ztxt() -> bytes:
    """A ComfyUI prompt graph padded past Pillow's 1 MB MAX_TEXT_CHUNK, in a zTXt chunk."""
    graph = {"3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 20, "sampler_name": "euler"}},
             "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse"}},
             "pad": {"class_type": "Note", "inputs": {"text": "x" * 1_500_000}}}
    body = b"prompt\x00\x00" + zlib.compress(json.dumps(graph).encode(), 9)
    return png_with([png_chunk(b"zTXt", body)])


def comfy_workflow_big_itxt() -> bytes:
    graph = {"3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 20, "sampler_name": "euler"}},
             "pad": {"class_type": "Note", "inputs": {"text": "y" * 1_500_000}}}
    body = b"prompt\x00\x01\x00\x00\x00" + zlib.compress(json.dumps(graph).encode(), 9)
    return png_with([png_chunk(b"iTXt", body)])


def comfy_over_text_cap() -> bytes:
    """The graph padded past aiidetect's own 4 MiB per-chunk cap: read truncated, still found."""
    graph = {"3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 20, "sampler_name": "euler"}},
             "pad": {"class_type": "Note", "inputs": {"text": "z" * 6_000_000}}}
    return png_with([png_chunk(b"zTXt", b"prompt\x00\x00" + zlib.compress(json.dumps(graph).encode(), 9))])


def parameters_after_junk() -> bytes:
    """17 MB of junk text chunks first, then the A1111 parameters: the total cap must not push them out."""
    junk = [png_chunk(b"tEXt", b"junk\x00" + b"j" * (1024 * 1024)) for _ in range(17)]
    params = png_chunk(b"tEXt", b"parameters\x00a cat\nSteps: 20, Sampler: Euler a, Seed: 1")
    return png_with(junk + [params])


def ztxt_zip_bomb() -> bytes:
    body = b"Comment\x00\x00" + zlib.compress(b"\x00" * (64 * 1024 * 1024), 9)
    return png_with([png_chunk(b"zTXt", body)])


def png_ztxt_bombs(n: int, size: int = 4 * 1024 * 1024) -> bytes:
    """A valid PNG with `n` zTXt chunks keyed 'junk', each about 4 KB of zlib that inflates to `size` bytes (by
    default the metadata walk's cap on one chunk's text): the walk inflated every one before dropping it over its
    16 MiB total, 5,000 (20 MB) in 78 s. Past limits.PNG_MAX_TEXT_WORK_BYTES of text the rest are not read."""
    co = zlib.compressobj(9)
    chunk = png_chunk(b"zTXt", b"junk\x00\x00" + co.compress(b"a" * size) + co.flush())
    return png_with([chunk] * n)


def many_text_chunks() -> bytes:
    blob = b"Comment\x00" + b"z" * (1024 * 1024)
    return png_with([png_chunk(b"tEXt", blob) for _ in range(20)])


def xmp_nested(n: int = 70_000, tag: bytes = b"rdf:Description") -> bytes:
    pk = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
          + (b"<" + tag + b">") * n + b"x" + (b"</" + tag + b">") * n + b"</x:xmpmeta>")
    return png_with([png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + pk)])


def xmp_billion_laughs() -> bytes:
    pk = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
          b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;&b;&b;</x:xmpmeta>')
    return jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + pk)


def xmp_ai_source_type() -> bytes:
    return jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + XMP_TRAINED)


XMP_TRAINED = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
          b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
          b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
          b'</rdf:RDF></x:xmpmeta>')


def raw_profile_cases() -> dict[str, tuple[bytes, Expect]]:
    """ImageMagick's hex 'Raw profile type' PNG chunks, with a hostile length, bad hex, a zTXt bomb, and one
    tool name in the EXIF, XMP and IIM profiles at once."""
    tool = b"Midjourney"
    ex = Image.Exif()
    ex[0x0131] = tool.decode()
    xmp_tool = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="' + tool + b'"/>'
                b'</rdf:RDF></x:xmpmeta>')
    iim = iim_dataset(2, 65, tool)
    bomb = zlib.compress(b"\nxmp\n" + b"%8d\n" % 10**9 + b"0" * (5 * 1024 * 1024), 9)
    return {
        "meta/raw-profile-huge-length.png": (
            png_with([raw_profile_chunk("xmp", text=raw_profile_text("xmp", XMP_TRAINED, declared=10**12 - 1))]),
            Expect(None, True, "the length field is compared, never sized from: the hex present is read")),
        "meta/raw-profile-non-hex.png": (
            png_with([raw_profile_chunk("xmp", text=raw_profile_text("xmp", XMP_TRAINED).replace("3c", "<g", 1))]),
            Expect(None, False, "refused with a line")),
        "meta/raw-profile-ztxt-bomb.png": (
            png_with([png_chunk(b"zTXt", b"Raw profile type xmp\x00\x00" + bomb)]), Expect(None, False)),
        "meta/raw-profile-tool-in-every-block.png": (
            png_with([raw_profile_chunk("exif", ex.tobytes()), raw_profile_chunk("xmp", xmp_tool),
                      raw_profile_chunk("8bim", image_resource(0x0404, iim)), raw_profile_chunk("iptc", iim)]),
            Expect(None, False, "EXIF + XMP + IIM x2 in raw profiles named one tool: one claim", max_llr=3.5)),
    }


def a1111_png(prompt: str = "a cat in a hat") -> bytes:
    text = f"{prompt}\nNegative prompt: [/i]ugly\nSteps: 20, Sampler: Euler a, Seed: 42, Model: [bold]sd15"
    return png_with([png_chunk(b"tEXt", b"parameters\x00" + text.encode("latin-1"))])


def truncated_png_with_parameters() -> bytes:
    data = a1111_png()
    return data[:len(data) - 200]


def corrupt_crc_text_chunk() -> bytes:
    """A tEXt chunk with a wrong CRC: Pillow refuses the file; the pixels are fine."""
    good = png_chunk(b"tEXt", b"parameters\x00a dog\nSteps: 30, Seed: 9")
    bad = good[:-4] + b"\x00\x00\x00\x00"
    return png_with([bad])


def jpeg_huge_sof(w: int = 65000, h: int = 65000) -> bytes:
    base = bytearray(_enc(_noise(16, 16), "JPEG"))
    i = base.find(b"\xff\xc0")
    struct.pack_into(">HH", base, i + 5, h, w)
    return bytes(base)


def gif_huge_screen() -> bytes:
    base = bytearray(_enc(Image.new("P", (4, 4), 1), "GIF"))
    struct.pack_into("<HH", base, 6, 65535, 65535)
    # the image descriptor too (after the global color table)
    i = base.find(b"\x2c")
    struct.pack_into("<HHHH", base, i + 1, 0, 0, 65535, 65535)
    return bytes(base)


def tool_name_in_every_block(tool: bytes = b"Midjourney") -> bytes:
    """One AI tool's name in EXIF Software, two XMP packets and an IPTC IIM block (APP13, the name given
    three times in OriginatingProgram, then a dataset whose 4-byte extended length claims 4 GB): every
    block repeats one unverified claim, which must weigh what it weighs once."""
    ex = Image.Exif()
    ex[0x0131] = tool.decode()
    base = _enc(_noise(), "JPEG", quality=85, exif=ex)
    xmp = (b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF xmlns:rdf=\"http://"
           b"www.w3.org/1999/02/22-rdf-syntax-ns#\"><rdf:Description xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\" "
           b"xmp:CreatorTool=\"" + tool + b"\"/></rdf:RDF></x:xmpmeta>")
    prog = iim_dataset(2, 65, tool)
    iim = iim_dataset(2, 0, b"\x00\x04") + prog * 3 + b"\x1c\x02\x78\x80\x04\xff\xff\xff\xff" + b"x" * 8
    segs = [(0xE1, xmp), (0xE1, xmp), (0xED, b"Photoshop 3.0\x00" + image_resource(0x0404, iim))]
    i = base.find(b"\xff\xe1")   # after Pillow's EXIF segment, where the other writers put theirs
    return with_jpeg_segments(base, segs, at=i + 2 + struct.unpack(">H", base[i + 2:i + 4])[0])


def jpeg_scan_bomb(w: int = 1024, h: int = 1024, extra: int = 1000) -> bytes:
    """A flat greyscale progressive JPEG whose last scan (an AC refinement, a few bytes: one run of
    empty blocks) is repeated `extra` times: each repeat is a pass over every block, so a small file
    costs passes over a large image. The default 1,000 repeats are far over limits.JPEG_MAX_COVERAGE,
    which refuses the file (decode-error) before Pillow decodes it; the measured cost is beside that limit."""
    data = _enc(Image.new("L", (w, h), 128), "JPEG", progressive=True, quality=90)
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * extra + data[-2:]


def jpeg_exif_segments(n: int, size: int = 65533, orientation: int = 6) -> bytes:
    """A 64x48 JPEG of `n` Exif APP1 segments of `size` bytes each (by default the most a segment holds), the
    first a real EXIF block (its Orientation `orientation`), the others zeros after the Exif signature. Pillow's
    open joins them one copy at a time: 800 full segments (52 MB) took it 16 s, 1,600 (105 MB) a scan 105 s.
    Past limits.JPEG_MAX_EXIF_SEGMENTS the rest are not handed to Pillow (metastrip.strip_oversize)."""
    ex = Image.Exif()
    ex[0x0112] = orientation
    first = ex.tobytes()
    return with_jpeg_segments(_enc(_noise(), "JPEG"), [(0xE1, first + bytes(size - len(first)))]
                              + [(0xE1, b"Exif\x00\x00" + bytes(size - 6))] * (n - 1))


def jpeg_dqt_tables(n: int, tables: int = 1008) -> bytes:
    """A 64x48 JPEG with `n` DQT segments of `tables` 8-bit quantization tables each (by default a full segment)
    after SOI: Pillow's open reads each table in Python, the metadata walk each for its evidence. 1,600 full
    segments (100 MB) took a scan 18.3 s. Past limits.JPEG_MAX_DQT_BYTES the file is refused."""
    return with_jpeg_segments(_enc(_noise(), "JPEG"), [(0xDB, (b"\x00" + bytes(range(1, 65))) * tables)] * n)


def png_icc_chunks(n: int, size: int = 1 << 20) -> bytes:
    """A valid PNG with `n` iCCP chunks after IHDR, each about 1 KB of zlib that inflates to `size` zero bytes (by
    default Pillow's MAX_TEXT_CHUNK, the most it inflates without refusing the file). Pillow's open inflates
    every one and keeps the last, with no total: 5,000 (5.3 MB) took a scan 34 s. Past limits.PNG_MAX_ICC_CHUNKS
    the rest are not handed to Pillow (metastrip.strip_oversize)."""
    co = zlib.compressobj(9)
    chunk = png_chunk(b"iCCP", b"icc\x00\x00" + co.compress(bytes(size)) + co.flush())
    return png_with([chunk] * n)


def png_many_idat(n: int = 100_000) -> bytes:
    """A valid PNG whose pixels follow `n` empty IDAT chunks: Pillow reads each chunk in Python, so the
    count of chunks, not their bytes, is the cost. The default `n` puts the file just over
    limits.PNG_MAX_CHUNKS, which refuses it (decode-error); the measured cost is beside that limit."""
    base = _enc(_noise(), "PNG")
    i = base.index(b"IDAT") - 4
    return base[:i] + png_chunk(b"IDAT", b"") * n + base[i:]


def gif_tiny_frames(n: int = 12_000, w: int = 2, h: int = 2) -> bytes:
    """A GIF of `n` one-pixel frames, 23 bytes each, written directly (Pillow's writer is slow at this):
    Pillow counts frames by parsing each in Python. The default `n` is over limits.MAX_FRAMES_COUNTED, so
    the record's frame count stops there while the first frame still decodes."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    frame = b"\x21\xf9\x04\x00\x01\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return bytes(out) + frame * n + b"\x3b"


def gif_extension_blocks(n: int, label: int = 0xFE, size: int = 1) -> bytes:
    """A one-pixel GIF whose first image follows one extension (`label`: 0xFE comment, 0xFF application)
    of `n` sub-blocks of `size` bytes: Pillow's open reads each in Python and keeps a comment's (50 M
    one-byte comment sub-blocks, 100 MB, took 75 s and 4.6 GB to scan)."""
    head = b"\x0bNETSCAPE2.0" if label == 0xFF else b""
    return gif_frames_with(b"\x21" + bytes([label]) + head + (bytes([size]) + b"x" * size) * n + b"\x00")


def gif_frames_with(before: bytes = b"", first_blocks: int = 0, frames: int = 1) -> bytes:
    """A GIF of `frames` one-pixel frames with `before` ahead of the first; its first frame's image data
    split into `first_blocks` more one-byte sub-blocks (empty code runs the decoder ignores): Pillow
    walked them in Python to count frames (50 M, 100 MB: 22 s to scan)."""
    out = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff" + before
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02"
    first = image + b"\x01\x44\x01\x01" + b"\x01\x00" * first_blocks + b"\x00"
    return out + first + (image + b"\x02\x44\x01\x00") * (frames - 1) + b"\x3b"


def c2pa_store(size: int, manifest: bytes = b"") -> bytes:
    """A C2PA manifest store (a JUMBF superbox labelled `c2pa`) of about `size` bytes: `manifest` (the boxes of a
    real store, or nothing) beside a JSON box of spaces. c2pa-rs holds a store several times over while it reads
    it: one of 100 MB in a JPEG took `scan -d metadata` 693 MB; over limits.C2PA_MAX_STORE_BYTES it is not read."""
    c2pa_uuid = bytes.fromhex("6332706100110010800000aa00389b71")
    json_uuid = bytes.fromhex("6a736f6e00110010800000aa00389b71")
    pad = bmff_box(b"jumb", bmff_box(b"jumd", json_uuid + b"\x03pad\x00") + bmff_box(b"json", b" " * size))
    return bmff_box(b"jumb", bmff_box(b"jumd", c2pa_uuid + b"\x03c2pa\x00") + manifest + pad)


def jpeg_c2pa_store(size: int, manifest: bytes = b"") -> bytes:
    """A JPEG whose APP11 segments hold c2pa_store(size, manifest), each segment after the first repeating the
    superbox's header, as JPEG's JUMBF embedding asks."""
    store = c2pa_store(size, manifest)
    head, body = store[:8], store[8:]
    room = 65533 - 8 - 8     # a segment's payload after its JP header and the repeated superbox header
    segs = [(0xEB, b"JP" + struct.pack(">HI", 0x0211, k + 1) + head + body[i:i + room])
            for k, i in enumerate(range(0, len(body), room))]
    return with_jpeg_segments(_enc(_noise(), "JPEG", quality=85), segs)


def heif_c2pa_store(size: int, heif: bytes, manifest: bytes = b"") -> bytes:
    """`heif` (a HEIF or AVIF file) with c2pa_store(size, manifest) in a top-level C2PA `uuid` box after it, where
    c2pa-rs reads it (100 MB after a 1.4 MB HEIC: `scan -d metadata` 626 MB, c2pa-rs alone 527 MB)."""
    from aiidetect.provenance.containers import C2PA_BMFF_UUID

    payload = C2PA_BMFF_UUID + bytes(4) + b"manifest\x00" + bytes(8) + c2pa_store(size, manifest)
    return heif + bmff_box(b"uuid", payload)


def webp_chunk(fourcc: bytes, payload: bytes) -> bytes:
    """One RIFF chunk of a WebP: its FourCC, a little-endian size, the payload, a pad byte to an even size."""
    return fourcc + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def webp_riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def webp_vp8x(w: int, h: int, flags: int = 0x02) -> bytes:
    """The extended header: flags (0x02 animation, 0x04 XMP, 0x08 EXIF, 0x10 alpha, 0x20 ICC), the canvas size."""
    return webp_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little"))


def webp_frame(w: int = 1, h: int = 1, x: int = 0, y: int = 0) -> bytes:
    """An ANMF chunk: a w x h lossless frame at (x, y) (even offsets), shown 100 ms."""
    still = _enc(Image.new("RGB", (w, h), (10, 20, 30)), "WEBP", lossless=True)
    return webp_chunk(b"ANMF", (x // 2).to_bytes(3, "little") + (y // 2).to_bytes(3, "little")
                      + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little") + (100).to_bytes(3, "little")
                      + b"\x00" + still[12:])


def webp_frames(n: int, w: int = 1, h: int = 1) -> bytes:
    """An animated WebP of `n` one-pixel frames on a w x h canvas, 50 bytes a frame: libwebp's demuxer keeps a
    record of every frame at open (4 M frames, 200 MB, took `scan -d metadata` 1 GB). Over
    limits.WEBP_MAX_CHUNKS chunks (VP8X, ANIM and one ANMF a frame) it is refused before any reader opens it."""
    return webp_riff(webp_vp8x(w, h) + webp_chunk(b"ANIM", bytes(6)) + webp_frame() * n)


def psd_rows(rows: int, layers: int = 0) -> bytes:
    """A 1-pixel-wide greyscale packbits PSD of `rows` rows (layers: an 8x8 RGB one with that many
    one-channel layers of `rows` rows): Pillow reads a row table a row at a time in Python, at open for
    the composite (50 M rows, 200 MB: 21 s to scan), to count the layers for a layer's (100 MB: 19 s)."""
    if not layers:
        head = b"8BPS" + struct.pack(">H", 1) + b"\x00" * 6 + struct.pack(">HIIHH", 1, rows, 1, 8, 1)
        return head + struct.pack(">IIIH", 0, 0, 0, 1) + struct.pack(">H", 2) * rows + b"\x00\x80" * rows
    rec = (struct.pack(">iiiiH", 0, 0, rows, 1, 1) + struct.pack(">HI", 0, 0) + b"8BIMnorm\xff\x00\x00\x00"
           + struct.pack(">I", 0))
    info = struct.pack(">h", layers) + rec * layers + (struct.pack(">H", 1) + b"\x00\x00" * rows) * layers
    section = struct.pack(">I", len(info)) + info
    head = b"8BPS" + struct.pack(">H", 1) + b"\x00" * 6 + struct.pack(">HIIHH", 3, 8, 8, 8, 3)
    return head + struct.pack(">III", 0, 0, len(section)) + section + struct.pack(">H", 0) + bytes(3 * 64)


def bmp_rle(w: int, h: int, body: bytes, rle4: bool = False) -> bytes:
    """A palette BMP (BITMAPINFOHEADER) of w x h pixels whose pixel data is `body`, RLE8 (RLE4 with rle4)."""
    bits, compression = (4, 2) if rle4 else (8, 1)
    palette = bytes(4 << bits)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bits, compression, len(body), 2835, 2835, 0, 0)
    at = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", at + len(body), 0, 0, at) + info + palette + body


def bmp_rle_row_ends(w: int, h: int) -> bytes:
    """An RLE8 BMP of one pixel and an end-of-line a row (4 bytes a row): Pillow's RLE decoder (Python) pads
    each row a byte at a time (4000x1000, 5 KB: 2.0 s to load; 10000x12000, 48 KB: a minute)."""
    return bmp_rle(w, h, b"\x01\x05\x00\x00" * h + b"\x00\x01")


def tiff_pages_of_entries(pages: int = 251, entries: int = 1000) -> bytes:
    """A TIFF page chain whose every IFD holds `entries` (junk SHORT) entries, under the per-IFD cap: the
    cost is in the pages together. The default 251 pages of 1,000 are just over
    provenance.tiffguard.MAX_FILE_ENTRIES (250,000 entries across a file's pages), which refuses the file."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    table = b"".join(struct.pack("<HHII", 0x9000 + i, 3, 1, 0) for i in range(entries))
    for p in range(pages):
        nxt = len(out) + 2 + 12 * entries + 4 if p + 1 < pages else 0
        out += struct.pack("<H", entries) + table + struct.pack("<I", nxt)
    return bytes(out)


def tiff_many_strips(n: int = 100_001, big: bool = False) -> bytes:
    """A 1-pixel-wide greyscale TIFF of `n` one-row strips, all pointing at one byte (BigTIFF with big):
    Pillow makes a Python tile of each at open. The default `n` is one over provenance.tiffguard.MAX_STRIPS,
    which refuses the file (decode-error); `big` checks that a BigTIFF meets the same check (it once
    bypassed it)."""
    e, off_f, cnt_f, head, entry = ("<", "Q", "Q", 16, 20) if big else ("<", "I", "H", 8, 12)
    short = lambda v: struct.pack(e + "H", v).ljust(struct.calcsize(off_f), b"\x00")  # noqa: E731
    long_ = lambda v: struct.pack(e + "I", v).ljust(struct.calcsize(off_f), b"\x00")  # noqa: E731
    ents = [(256, 4, 1, long_(1)), (257, 4, 1, long_(n)), (258, 3, 1, short(8)), (259, 3, 1, short(1)),
            (262, 3, 1, short(1)), (273, 16 if big else 4, n, None), (277, 3, 1, short(1)), (278, 4, 1, long_(1)),
            (279, 3, n, None)]
    ifd_len = struct.calcsize(cnt_f) + entry * len(ents) + struct.calcsize(off_f)
    offsets_at = head + ifd_len
    counts_at = offsets_at + struct.calcsize(off_f) * n
    pixel_at = counts_at + 2 * n
    ifd = struct.pack(e + cnt_f, len(ents))
    for tag, typ, count, val in ents:
        val = val if val is not None else struct.pack(e + off_f, offsets_at if tag == 273 else counts_at)
        ifd += struct.pack(e + "HH" + off_f, tag, typ, count) + val
    ifd += struct.pack(e + off_f, 0)
    hdr = b"II+\x00" + struct.pack(e + "HHQ", 8, 0, head) if big else b"II*\x00" + struct.pack(e + "I", head)
    return hdr + ifd + struct.pack(e + off_f, pixel_at) * n + struct.pack(e + "H", 1) * n + b"\x80"


def eps_named_jpeg() -> bytes:
    """Encapsulated PostScript: Pillow's EPS plugin renders it with Ghostscript, a PostScript
    interpreter, wherever one is installed."""
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\n%%EndComments\n"
            b"newpath 0 0 moveto 64 48 lineto stroke\nshowpage\n%%EOF\n")


def qoi_run_bomb(w: int = 4000, h: int = 4000) -> bytes:
    """A QOI image of one colour, 62 pixels to a byte (16 MP from about 260 KB by default): Pillow decodes
    QOI in pure Python, and aiidetect takes no QOI (decode.PILLOW_FORMATS), so it must be refused
    (unsupported-format) before any pixel is decoded."""
    n = w * h - 1
    body = b"\xfe\x80\x80\x80" + bytes([0xC0 | 61]) * (n // 62) + (bytes([0xC0 | (n % 62 - 1)]) if n % 62 else b"")
    return b"qoif" + struct.pack(">IIBB", w, h, 3, 0) + body + b"\x00" * 7 + b"\x01"


def bmff_box(kind: bytes, payload: bytes = b"", full: tuple[int, int] | None = None) -> bytes:
    """An ISO BMFF box; `full`: (version, flags) of a FullBox."""
    head = b"" if full is None else struct.pack(">I", (full[0] << 24) | full[1])
    return struct.pack(">I4s", 8 + len(head) + len(payload), kind) + head + payload


def heif_ispe(w: int, h: int) -> bytes:
    return bmff_box(b"ispe", struct.pack(">II", w, h), (0, 0))


def heif_file(items, props, assoc, refs=(), mdat: bytes = b"", idat: bytes | None = None, primary: int = 1,
              brand: bytes = b"heic", content_types: dict[int, bytes] | None = None) -> bytes:
    """A HEIF from its item tables. items: [(id, type, [(offset, length)], construction method)], offsets into
    `mdat` (method 0) or `idat` (1); props: property boxes; assoc: {item: [1-based property index]}; refs:
    [(type, from, [to])]; content_types: {item: MIME type} of `mime` items (an XMP packet's
    b"application/rdf+xml"). Items a `dimg` reference points at are hidden (not top-level images), as tiles are."""
    ftyp = bmff_box(b"ftyp", brand + b"\0\0\0\0mif1" + brand)
    hdlr = bmff_box(b"hdlr", b"\0" * 4 + b"pict" + b"\0" * 13, (0, 0))
    pitm = bmff_box(b"pitm", struct.pack(">H", primary), (0, 0))
    hidden = {x for t, _, to in refs if t == b"dimg" for x in to}
    iinf = bmff_box(b"iinf", struct.pack(">H", len(items)) + b"".join(
        bmff_box(b"infe", struct.pack(">HH4s", i, 0, t) + b"\0" + ((content_types or {}).get(i, b"") + b"\0"
                                                                   if t == b"mime" else b""), (2, int(i in hidden)))
        for i, t, _, _ in items), (0, 0))
    iref = bmff_box(b"iref", b"".join(bmff_box(t, struct.pack(">HH", f, len(to)) + struct.pack(f">{len(to)}H", *to))
                                      for t, f, to in refs), (0, 0)) if refs else b""
    ipma = struct.pack(">I", len(assoc)) + b"".join(struct.pack(">HB", i, len(x)) + bytes(x) for i, x in assoc.items())
    iprp = bmff_box(b"iprp", bmff_box(b"ipco", b"".join(props)) + bmff_box(b"ipma", ipma, (0, 0)))
    tail = bmff_box(b"idat", idat) if idat is not None else b""

    def meta(base: int) -> bytes:
        entries = b"".join(struct.pack(">HHHH", i, m, 0, len(ext)) + b"".join(
            struct.pack(">II", off + (base if m == 0 else 0), n) for off, n in ext) for i, _, ext, m in items)
        iloc = bmff_box(b"iloc", b"\x44\x00" + struct.pack(">H", len(items)) + entries, (1, 0))
        return bmff_box(b"meta", hdlr + pitm + iloc + iinf + iref + iprp + tail, (0, 0))

    base = len(ftyp) + len(meta(0)) + 8
    return ftyp + meta(base) + bmff_box(b"mdat", mdat)


def heif_grid(rows: int, cols: int, tw: int, th: int, ow: int | None = None, oh: int | None = None,
              ispe: tuple[int, int] | None = None, tile: tuple[bytes, bytes] | None = None) -> bytes:
    """A HEIF whose primary image is a `grid` of rows x cols references to one coded tile of tw x th, ow x oh
    (default: the tiles' extent), its `ispe` `ispe` (default: the grid's size). tile: (hvcC box, coded data),
    e.g. heif_tile(); without one, placeholder bytes (the decoder's checks refuse before any tile is read)."""
    ow, oh = ow or cols * tw, oh or rows * th
    hvcc, coded = tile or (bmff_box(b"hvcC", bytes(23)), bytes(16))
    big = ow > 0xFFFF or oh > 0xFFFF
    g = bytes([0, int(big), rows - 1, cols - 1]) + struct.pack(">II" if big else ">HH", ow, oh)
    items = [(1000, b"grid", [(0, len(g))], 1), (1, b"hvc1", [(0, len(coded))], 0)]
    return heif_file(items, [hvcc, heif_ispe(tw, th), heif_ispe(*(ispe or (ow, oh)))], {1000: [3], 1: [1, 2]},
                     refs=[(b"dimg", 1000, [1] * (rows * cols))], mdat=coded, idat=g, primary=1000)


def heif_tile(w: int = 64, h: int = 64, seed: int = 0, flat: bool = False) -> tuple[bytes, bytes]:
    """(hvcC box, coded data) of a w x h HEVC image of noise (flat: one colour, a few hundred bytes at any size),
    encoded by pillow-heif (its encoder must be present)."""
    import pillow_heif

    heif = pillow_heif.from_pillow(Image.new("RGB", (w, h), (90, 120, 200)) if flat else _noise(w, h, seed))
    b = io.BytesIO()
    heif.save(b, quality=30)
    d = b.getvalue()
    at = d.index(b"hvcC") - 4
    hvcc = d[at:at + struct.unpack_from(">I", d, at)[0]]
    from aiidetect.structures import heif_layout

    lay = heif_layout(d)
    _, extents = lay.extents[lay.primary]
    return hvcc, b"".join(d[off:off + n] for off, n in extents)


def heif_cropped(w: int, h: int, crop: int = 64, tile: tuple[bytes, bytes] | None = None) -> bytes:
    """A HEIF of one w x h coded image whose clean aperture (`clap`) crops it to crop x crop at its centre: readers
    give the cropped size, the decoder decodes all of it. tile: as heif_grid's."""
    hvcc, coded = tile or (bmff_box(b"hvcC", bytes(23)), bytes(16))
    clap = bmff_box(b"clap", struct.pack(">IIIIiIiI", crop, 1, crop, 1, 0, 1, 0, 1))
    return heif_file([(1, b"hvc1", [(0, len(coded))], 0)], [hvcc, heif_ispe(w, h), clap], {1: [1, 2, 3]}, mdat=coded)


def heif_with_exif(size: int, tile: tuple[bytes, bytes] | None = None) -> bytes:
    """A HEIF of one 64x64 image described by an Exif item of `size` bytes (a TIFF header, then zeros). tile: as
    heif_grid's."""
    hvcc, coded = tile or (bmff_box(b"hvcC", bytes(23)), bytes(16))
    exif = b"\0\0\0\0MM\0*\0\0\0\x08\0\0" + bytes(max(0, size - 14))
    items = [(1, b"hvc1", [(0, len(coded))], 0), (2, b"Exif", [(len(coded), len(exif))], 0)]
    return heif_file(items, [hvcc, heif_ispe(64, 64)], {1: [1, 2]}, refs=[(b"cdsc", 2, [1])], mdat=coded + exif)


def heif_alpha_grid(rows: int, cols: int, tw: int, th: int, size: int = 64,
                    tile: tuple[bytes, bytes] | None = None, alpha_tile: tuple[bytes, bytes] | None = None) -> bytes:
    """A HEIF of one size x size image whose alpha (an `auxl` image) is a `grid` of rows x cols references to one
    coded tile of tw x th, size x size: libheif decodes the alpha with the image. tile, alpha_tile: as heif_grid's
    (the image's, the alpha's tile)."""
    hvcc, coded = tile or (bmff_box(b"hvcC", bytes(23)), bytes(16))
    ahvcc, acoded = alpha_tile or (bmff_box(b"hvcC", bytes(23)), bytes(16))
    g = bytes([0, 0, rows - 1, cols - 1]) + struct.pack(">HH", size, size)
    auxc = bmff_box(b"auxC", b"urn:mpeg:hevc:2015:auxid:1\0", (0, 0))
    items = [(1, b"hvc1", [(0, len(coded))], 0), (2, b"hvc1", [(len(coded), len(acoded))], 0),
             (1000, b"grid", [(0, len(g))], 1)]
    props = [hvcc, heif_ispe(size, size), ahvcc, heif_ispe(tw, th), heif_ispe(size, size), auxc]
    return heif_file(items, props, {1: [1, 2], 2: [3, 4], 1000: [5, 6]},
                     refs=[(b"dimg", 1000, [2] * (rows * cols)), (b"auxl", 1000, [1])], mdat=coded + acoded, idat=g)


def heif_two_images(first: tuple[int, int] = (64, 64), primary: tuple[int, int] = (128, 96)) -> bytes:
    """A HEIF of two top-level coded images whose primary is the second."""
    h1, d1 = heif_tile(*first)
    h2, d2 = heif_tile(*primary, seed=1)
    items = [(1, b"hvc1", [(0, len(d1))], 0), (2, b"hvc1", [(len(d1), len(d2))], 0)]
    return heif_file(items, [h1, heif_ispe(*first), h2, heif_ispe(*primary)], {1: [1, 2], 2: [3, 4]},
                     mdat=d1 + d2, primary=2)


def heif_tables(*boxes: bytes, brand: bytes = b"heic") -> bytes:
    """A HEIF (AVIF with brand b"avif") whose `meta` box holds `boxes` after its handler: item tables, no picture."""
    ftyp = bmff_box(b"ftyp", brand + b"\0\0\0\0mif1" + brand)
    hdlr = bmff_box(b"hdlr", b"\0" * 4 + b"pict" + b"\0" * 13, (0, 0))
    return ftyp + bmff_box(b"meta", hdlr + b"".join(boxes), (0, 0))


def heif_iloc_zero_fields(items: int = 2, extents: int = 0xFFFF) -> bytes:
    """A HEIF whose `iloc` (version 1) gives its offsets, lengths, base offsets and indexes 0 bytes each (a
    size the format allows): `items` entries of `extents` extents, each extent taking no byte of the file."""
    entries = b"".join(struct.pack(">HHHH", i + 1, 0, 0, extents) for i in range(items))
    return heif_tables(bmff_box(b"iloc", b"\0\0" + struct.pack(">H", items) + entries, (1, 0)))


def heif_ipma_many(items: int = 300, per_item: int = 255) -> bytes:
    """A HEIF whose `ipma` associates `per_item` properties (the most its one-byte count holds) with each of
    `items` items."""
    ipma = struct.pack(">I", items) + b"".join(struct.pack(">HB", i + 1, per_item) + b"\x81\x00" * per_item
                                               for i in range(items))
    return heif_tables(bmff_box(b"iprp", bmff_box(b"ipco", b"") + bmff_box(b"ipma", ipma, (0, 1))))


def heif_iref_many(boxes: int = 2, refs: int = 0xFFFF) -> bytes:
    """A HEIF whose primary item 1 is a `dimg` derived image of `boxes` reference boxes of `refs` references
    each (the most a box's 16-bit count holds), to items 2 upwards."""
    ids = [2 + i % 0xFFF0 for i in range(refs)]
    one = bmff_box(b"dimg", struct.pack(">HH", 1, refs) + struct.pack(f">{refs}H", *ids))
    return heif_tables(bmff_box(b"pitm", struct.pack(">H", 1), (0, 0)), bmff_box(b"iref", one * boxes, (0, 0)))


def avif_grid_items(rows: int, cols: int, tw: int = 64, th: int = 64,
                    tile: tuple[bytes, bytes, bytes] | None = None) -> bytes:
    """An AVIF whose primary image is a `grid` of rows x cols tiles, each its own item (libavif refuses a
    grid that references one item twice), all reading the same coded bytes. tile: (av1C box, pixi box, coded
    data), e.g. avif_tile(); without one, placeholders (the decoder's checks refuse before any tile is read)."""
    av1c, pixi, coded = tile or (bmff_box(b"av1C", bytes(4)), bmff_box(b"pixi", b"\x03\x08\x08\x08", (0, 0)),
                                 bytes(16))
    ow, oh, n = cols * tw, rows * th, rows * cols
    big = ow > 0xFFFF or oh > 0xFFFF
    g = bytes([0, int(big), rows - 1, cols - 1]) + struct.pack(">II" if big else ">HH", ow, oh)
    grid = 0xFFFF
    items = [(grid, b"grid", [(0, len(g))], 1)] + [(i + 1, b"av01", [(0, len(coded))], 0) for i in range(n)]
    assoc = {i + 1: [1, 2, 4] for i in range(n)}
    assoc[grid] = [3, 4]
    return heif_file(items, [av1c, heif_ispe(tw, th), heif_ispe(ow, oh), pixi], assoc,
                     refs=[(b"dimg", grid, list(range(1, n + 1)))], mdat=coded, idat=g, primary=grid, brand=b"avif")


def av1_sequence_header(w: int, h: int) -> bytes:
    """An AV1 sequence header OBU (reduced still-picture header) for frames of up to w x h: the start of an `av01`
    item's data, as dav1d reads it whatever the item's `ispe` says."""
    bits = "000" "1" "1" "01000" "1111" "1111" + format(w - 1, "016b") + format(h - 1, "016b")
    bits += "0" * (-len(bits) % 8)
    payload = int(bits, 2).to_bytes(len(bits) // 8, "big") + bytes(4)
    return bytes([0x0A, len(payload)]) + payload


def avif_tile(w: int = 64, h: int = 64) -> tuple[bytes, bytes, bytes]:
    """(av1C box, pixi box, coded data) of a w x h AV1 image of one colour, encoded by Pillow (its AVIF encoder
    must be present)."""
    b = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 200)).save(b, "AVIF", quality=30)
    d = b.getvalue()

    def box(kind: bytes) -> bytes:
        at = d.index(kind) - 4
        return d[at:at + struct.unpack_from(">I", d, at)[0]]

    from aiidetect.structures import heif_layout

    lay = heif_layout(d)
    _, extents = lay.extents[lay.primary]
    return box(b"av1C"), box(b"pixi"), b"".join(d[off:off + n] for off, n in extents)


def avis(frames: int = 3, w: int = 64, h: int = 48, first: bytes | None = None, claimed: int | None = None) -> bytes:
    """An AVIF image sequence (`avis`) of `frames` w x h frames, encoded by Pillow (its AVIF encoder must be present):
    a `meta` item (the first frame, as Pillow writes it) and a track of the frames, the track being what libavif
    decodes. first: other bytes for the track's first sample (e.g. av1_sequence_header(8192, 8192) ahead of
    coded data), moved with the other samples to a new `mdat` at the end, the item left on the frame it had;
    claimed: the sample count its `stsz` declares, each sample the first's size (zeros after the frames)."""
    b = io.BytesIO()
    shots = [Image.new("RGB", (w, h), (40 * i % 256, 120, 200)) for i in range(frames)]
    shots[0].save(b, "AVIF", save_all=True, append_images=shots[1:], duration=100, quality=30)
    d = bytearray(b.getvalue())

    def box(kind: bytes) -> int:                # payload start of the first such box
        return d.index(kind, d.index(b"moov")) + 4

    stsz, stco = box(b"stsz"), box(b"stco")
    size, count = struct.unpack_from(">II", d, stsz + 4)
    sizes = [size] * count if size else list(struct.unpack_from(f">{count}I", d, stsz + 12))
    chunk = struct.unpack_from(">I", d, stco + 8)[0]
    if first is not None:
        rest = bytes(d[chunk + sizes[0]:chunk + sum(sizes)])
        struct.pack_into(">I", d, stsz + 12 if not size else stsz + 4, len(first))
        if size:                                # constant sizes cannot hold another first sample
            raise ValueError("a sample table of constant sizes")
        struct.pack_into(">I", d, stco + 8, len(d) + 8)
        d += bmff_box(b"mdat", first + rest)
    if claimed is not None:                     # every sample the first's size, all in the one chunk, the file
        one = len(first) if first is not None else sizes[0]     # grown to hold them (libavif checks that)
        struct.pack_into(">II", d, stsz + 4, one, claimed)
        struct.pack_into(">I", d, box(b"stts") + 8, claimed)    # one entry: every sample one duration
        struct.pack_into(">I", d, box(b"stsc") + 12, claimed)
        mdat = d.rindex(b"mdat") - 4            # the last box
        d += bytes(max(0, struct.unpack_from(">I", d, stco + 8)[0] + one * claimed - len(d)))
        struct.pack_into(">I", d, mdat, len(d) - mdat)
    return bytes(d)


# The boxes avis_moved opens: the path from `moov` down to a track's sample table, and a track's references.
_MOOV_CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"tref")


def _bmff_tree(buf: bytes) -> list:
    nodes, pos = [], 0
    while pos + 8 <= len(buf):
        size, kind = struct.unpack_from(">I4s", buf, pos)
        body = buf[pos + 8:pos + size]
        nodes.append([kind, _bmff_tree(body) if kind in _MOOV_CONTAINERS else body])
        pos += size
    return nodes


def _bmff_bytes(nodes: list) -> bytes:
    return b"".join(bmff_box(k, _bmff_bytes(b) if isinstance(b, list) else b) for k, b in nodes)


def avis_moved(d: bytes, edit, sample: bytes | None = None, track: int = 0) -> bytes:
    """An `avis` (from avis() or Pillow) whose `moov` box, edited by edit(tree) (each box a [type, payload] list,
    containers a list of boxes), is moved to the end of the file, the old one renamed `free` (so the `mdat` offsets
    hold). sample: new bytes for the first sample of the track-th track, in an `mdat` after the new `moov`."""
    d = bytearray(d)
    at = d.index(b"moov") - 4
    tree = _bmff_tree(bytes(d[at + 8:at + struct.unpack_from(">I", d, at)[0]]))
    d[at + 4:at + 8] = b"free"
    edit(tree)
    if sample is None:
        return bytes(d) + bmff_box(b"moov", _bmff_bytes(tree))
    stbl = [b for k, b in tree if k == b"trak"][track]
    for kind in (b"mdia", b"minf", b"stbl"):
        stbl = next(b for k, b in stbl if k == kind)
    stsz = next(box for box in stbl if box[0] == b"stsz")
    stco = next(box for box in stbl if box[0] == b"stco")
    stsz[1] = stsz[1][:12] + struct.pack(">I", len(sample)) + stsz[1][16:]        # a table of sizes (Pillow's)
    length = len(bmff_box(b"moov", _bmff_bytes(tree)))      # the offset written below does not change it
    stco[1] = stco[1][:8] + struct.pack(">I", len(d) + length + 8) + stco[1][12:]
    moov = bmff_box(b"moov", _bmff_bytes(tree))
    return bytes(d) + moov + bmff_box(b"mdat", sample)


def avis_chunks(n: int, runs: int | None = None) -> bytes:
    """An `avis` of 8x8 frames whose track's table declares n chunks of one sample each (all the first sample's
    bytes), described by `runs` `stsc` entries (n by default: chunk 1, 2, ... each a run of its own), every
    sample the first's size: libavif reads the `stsc` table back from its end for each chunk."""
    runs = n if runs is None else runs

    def edit(tree):
        stbl = [b for k, b in tree if k == b"trak"][0]
        for kind in (b"mdia", b"minf", b"stbl"):
            stbl = next(b for k, b in stbl if k == kind)
        for box in stbl:
            kind, body = box
            if kind == b"stsz":
                size = struct.unpack_from(">I", body, 4)[0] or struct.unpack_from(">I", body, 12)[0]
                box[1] = bytes(4) + struct.pack(">II", size, n)
            elif kind == b"stco":
                box[1] = bytes(4) + struct.pack(">I", n) + body[8:12] * n
            elif kind == b"stsc":
                box[1] = bytes(4) + struct.pack(">I", runs) + b"".join(struct.pack(">III", i + 1, 1, 1)
                                                                       for i in range(runs))
            elif kind == b"stts":
                box[1] = bytes(4) + struct.pack(">III", 1, n, 1)

    return avis_moved(avis(2, 8, 8), edit)


def mpo_index(n: int, offset: int = 0, jpeg: bytes | None = None) -> bytes:
    """A JPEG with a multi-picture (MPO) index of n entries, the first its own image, the others at `offset`
    from the MP header (0: the header itself, no picture)."""
    jpeg = jpeg or _enc(_noise(), "JPEG")
    entries = b"".join(struct.pack(">IIIHH", 0x20030000 if i == 0 else 0x00020002, len(jpeg), 0 if i == 0 else offset,
                                   0, 0) for i in range(n))
    ifd = struct.pack(">H", 3) + struct.pack(">HHI4s", 0xB000, 7, 4, b"0100") + struct.pack(">HHII", 0xB001, 4, 1, n)
    ifd += struct.pack(">HHII", 0xB002, 7, len(entries), 8 + 2 + 3 * 12 + 4) + bytes(4)
    return jpeg[:2] + jpeg_segment(0xE2, b"MPF\0MM\0*" + struct.pack(">I", 8) + ifd + entries) + jpeg[2:]


FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif", "HEIF": "heic",
           "AVIF": "avif"}


def _heif_ok() -> bool:
    try:
        import pillow_heif  # noqa: F401
        return True
    except ImportError:
        return False


def make_corpus(d: Path) -> dict[bytes, Expect]:
    """Write the corpus under d; return {path relative to d, as bytes: Expect}."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[bytes, Expect] = {}

    def put(rel: str | bytes, data: bytes, exp: Expect) -> None:
        rb = rel if isinstance(rel, bytes) else rel.encode()
        p = os.path.join(os.fsencode(d), rb)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        out[rb] = exp

    from aiidetect.decode import _register_openers

    _register_openers()
    img = _noise(64, 48)
    # --- every format: valid, truncated, empty, random, header-only
    for fmt, ext in FORMATS.items():
        if fmt in ("HEIF", "AVIF") and not _heif_ok():
            continue
        try:
            good = _enc(img, fmt)
        except (OSError, KeyError, ValueError):
            continue  # no encoder here (AVIF on some builds)
        put(f"formats/ok.{ext}", good, Expect(None))
        put(f"formats/truncated.{ext}", good[:max(16, len(good) // 3)], Expect(ANY_ERROR))
        put(f"formats/empty.{ext}", b"", Expect("empty-file"))
        put(f"formats/random.{ext}", np.random.default_rng(1).bytes(4096), Expect("unsupported-format"))
        put(f"formats/header-only.{ext}", good[:32], Expect(ANY_ERROR))
    # --- formats Pillow knows but aiidetect does not take, named as one it does
    put("formats/eps-named.jpg", eps_named_jpeg(), Expect("unsupported-format", note="never given to Ghostscript"))
    put("formats/qoi-16MP.jpg", qoi_run_bomb(), Expect("unsupported-format", note="was decoded in pure Python"))
    # --- decompression bombs (pixel limit) and a sparse file over the byte limit
    put("bombs/png-30000x30000.png", bomb_png(30000, 30000), Expect("too-large"))
    put("bombs/jpeg-65000x65000.jpg", jpeg_huge_sof(), Expect("too-large"))
    put("bombs/png-100000-idat.png", png_many_idat(), Expect("decode-error", note="each chunk read in Python"))
    put("bombs/jpeg-1000-scans.jpg", jpeg_scan_bomb(), Expect("decode-error", note="each scan a pass over the image"))
    put("bombs/gif-65535x65535.gif", gif_huge_screen(), Expect(ANY_ERROR))
    put("bombs/bmp-rle8-row-ends-120MP.bmp", bmp_rle_row_ends(10000, 12000),
        Expect("decode-error", note="48 KB: a minute in Pillow's Python RLE decoder"))
    sparse = os.path.join(os.fsencode(d), b"bombs/sparse-600MB.jpg")
    with open(sparse, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(600 * 1024 * 1024)
    out[b"bombs/sparse-600MB.jpg"] = Expect("too-large")
    # --- metadata bombs
    put("meta/a1111-quadratic.png", a1111_quadratic(), Expect(None, True, "quadratic regex backtracking, once"))
    put("meta/comfy-big-ztxt.png", comfy_workflow_big_ztxt(), Expect(None, True, "was decode-error (MAX_TEXT_CHUNK)"))
    put("meta/comfy-big-itxt.png", comfy_workflow_big_itxt(), Expect(None, True))
    put("meta/comfy-over-text-cap.png", comfy_over_text_cap(), Expect(None, True, "past aiidetect's 4 MiB cap"))
    put("meta/parameters-after-junk.png", parameters_after_junk(), Expect(None, True, "after 17 MB of junk"))
    put("meta/ztxt-zip-bomb.png", ztxt_zip_bomb(), Expect(None, False))
    put("meta/many-text-chunks.png", many_text_chunks(), Expect(None, False))
    put("meta/xmp-nested-70000.png", xmp_nested(), Expect(None, False))
    put("meta/xmp-nested-desc.png", xmp_nested(30_000, b"dc:description"), Expect(None, False))
    put("meta/xmp-billion-laughs.jpg", xmp_billion_laughs(), Expect(None, False))
    put("meta/exif-65535-entries.png", png_with([png_chunk(b"eXIf", exif_many_entries())]), Expect(None, False))
    put("meta/exif-65535-entries.jpg", jpeg_with_app1(b"Exif\x00\x00" + exif_many_entries(5000)), Expect(None, False))
    put("meta/exif-loop.jpg", jpeg_with_app1(b"Exif\x00\x00" + exif_loop()), Expect(None, False))
    put("meta/exif-nan-inf.jpg", jpeg_with_app1(b"Exif\x00\x00" + exif_nonfinite()), Expect(None, False))
    put("meta/tiff-65535-entries.tif", tiff_file_many_entries(), Expect(ANY_ERROR))
    put("meta/exif-deep-chain.jpg", jpeg_with_app1(b"Exif\x00\x00" + ifd_chain(3000)), Expect(None, False))
    put("meta/tiff-20000-page-chain.tif", ifd_chain(20_000), Expect(ANY_ERROR))
    put("meta/tiff-100001-strips.tif", tiff_many_strips(), Expect("decode-error", note="a Python tile each"))
    put("meta/bigtiff-100001-strips.tif", tiff_many_strips(big=True), Expect("decode-error", note="BigTIFF is checked"))
    put("meta/tiff-ifd-loop.tif", tiff_file_loop(), Expect(None, None, "page chain loops back: read once"))
    put("meta/gif-3000-frames.gif", gif_many_frames(), Expect(None))
    put("meta/gif-12000-tiny-frames.gif", gif_tiny_frames(), Expect(None, note="frames counted up to 10,000"))
    put("meta/apng-claims-2e31-frames.png", apng_claims_frames(), Expect(None))
    put("meta/bad-crc-text.png", corrupt_crc_text_chunk(), Expect(None, None, "Pillow rejects the chunk CRC"))
    put("meta/tool-name-in-every-block.jpg", tool_name_in_every_block(),
        Expect(None, False, "EXIF + XMP x2 + IIM x3 named one tool: 6.2 nats before, one claim is 3", max_llr=3.5))
    for rel, (data, exp) in raw_profile_cases().items():
        put(rel, data, exp)
    # --- evidence that must survive broken pixels; markers
    put("markers/a1111.png", a1111_png(), Expect(None, True))
    put("markers/xmp-trained-algorithmic.jpg", xmp_ai_source_type(), Expect(None, True))
    put("markers/truncated-a1111.png", truncated_png_with_parameters(), Expect(ANY_ERROR, True))
    # --- names
    put(b"names/bad\xff\xfename.jpg", _enc(img, "JPEG"), Expect(None))
    put("names/a[/b]/c.jpg", _enc(img, "JPEG"), Expect(None))
    put("names/[bold]x[/bold].jpg", _enc(img, "JPEG"), Expect(None))
    put("names/new\nline.jpg", _enc(img, "JPEG"), Expect(None))
    put("names/tab\tand \"quote\",comma.jpg", _enc(img, "JPEG"), Expect(None))
    put("names/\u202eright-to-left.jpg", _enc(img, "JPEG"), Expect(None))
    put("names/" + "l" * 240 + ".jpg", _enc(img, "JPEG"), Expect(None))
    put(b"names/latin1-\xe9t\xe9.png", _enc(img, "PNG"), Expect(None))
    # --- special files
    nd = os.fsencode(d)
    os.makedirs(os.path.join(nd, b"special"), exist_ok=True)
    fifo = os.path.join(nd, b"special/fifo.jpg")
    os.mkfifo(fifo)
    out[b"special/fifo.jpg"] = Expect("not-a-file")
    os.symlink("loop-b.jpg", os.path.join(nd, b"special/loop-a.jpg"))
    os.symlink("loop-a.jpg", os.path.join(nd, b"special/loop-b.jpg"))
    out[b"special/loop-a.jpg"] = Expect("symlink-loop")
    out[b"special/loop-b.jpg"] = Expect("symlink-loop")
    os.symlink("does-not-exist.jpg", os.path.join(nd, b"special/broken.jpg"))
    out[b"special/broken.jpg"] = Expect("unreadable")
    os.symlink(".", os.path.join(nd, b"special/self"))  # a folder link to itself
    out[b"special/self"] = Expect("symlink-loop")
    unreadable = os.path.join(nd, b"special/no-permission.jpg")
    with open(unreadable, "wb") as f:
        f.write(_enc(img, "JPEG"))
    os.chmod(unreadable, 0)
    # root reads anything: then it is an ordinary file
    out[b"special/no-permission.jpg"] = Expect("unreadable" if os.geteuid() != 0 else None)
    os.makedirs(os.path.join(nd, b"special/folder.jpg"), exist_ok=True)  # a folder with an image name: walked
    return out
