"""IPTC IIM: the legacy binary IPTC block newsroom tools still write.

It sits in a Photoshop image resource block (JPEG APP13 "Photoshop 3.0\\0",
TIFF tag 34377; resource 0x0404) or bare in TIFF tag 33723 (IPTC/NAA). Agency
pipelines fill By-line, Credit, Copyright and Caption; some generator and
export pipelines write their name into OriginatingProgram (2:65).

Our own reader, not Pillow's: PIL.IptcImagePlugin.getiptcinfo raises on a
malformed dataset (SyntaxError, OSError) and reads datasets until the data ends,
and Pillow's APP13 reader handles one segment at a time, so a resource split
over two segments is lost. Here every length is checked against what is left
before anything is sliced, and every count is capped; nothing raises.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# A real IIM block is a few KB (a caption is at most 2,000 bytes by the spec); the resource block around it
# holds a thumbnail of tens of KB. Past these sizes the first part is read and `errors` says so.
MAX_IRB_BYTES = 8 * 1024 * 1024
MAX_IIM_BYTES = 1024 * 1024
MAX_RESOURCES = 1000     # Photoshop writes 20-40 resources
MAX_DATASETS = 10_000    # real blocks hold tens
MAX_VALUES = 50          # kept per dataset (keywords and by-lines repeat; nothing else should)
# An extended dataset (length's high bit set) gives its length in the next N bytes; IIM allows it for
# record 8's object data, up to 4 bytes. Anything wider is no length a file can hold.
MAX_LENGTH_BYTES = 4

IRB_SIGNATURE = b"Photoshop 3.0\x00"
_TYPES = (b"8BIM", b"MeSa", b"PHUT", b"AgHg", b"DCSR")   # resource types writers use; only 8BIM holds IIM
IIM_RESOURCE = 0x0404
# Photoshop keeps the file's EXIF (a TIFF structure, "EXIF data 1") and its XMP packet in image resources
# too: in a PSD file, and in the 8BIM profile ImageMagick copies into a PNG.
EXIF_RESOURCE, XMP_RESOURCE = 0x0422, 0x0424
_NONZERO = re.compile(rb"[^\x00]")
UTF8_ESCAPE = b"\x1b%G"

# (record, dataset) -> facts field
FIELDS = {(1, 90): "coded_character_set", (2, 55): "date_created", (2, 60): "time_created",
          (2, 65): "originating_program", (2, 70): "program_version", (2, 80): "by_line", (2, 110): "credit",
          (2, 115): "source", (2, 116): "copyright_notice", (2, 120): "caption"}
REPEATABLE = {"by_line"}


@dataclass
class IptcFacts:
    originating_program: str | None = None
    program_version: str | None = None
    by_line: list[str] = field(default_factory=list)
    credit: str | None = None
    source: str | None = None
    copyright_notice: str | None = None
    date_created: str | None = None
    time_created: str | None = None
    caption: str | None = None
    coded_character_set: str | None = None
    datasets: int = 0
    where: str = ""
    # Every OriginatingProgram value, for the evidence: a second 2:65 (not repeatable) must not hide a
    # generator name behind an innocent first one.
    programs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from .recordtext import clip_fields

        d = {k: v for k, v in self.__dict__.items() if k not in ("errors", "programs") and v not in (None, "", [])}
        if len(self.programs) > 1:
            d["originating_programs"] = self.programs
        return clip_fields(d)


def iim_blocks(blob: bytes, where: str) -> tuple[list[tuple[bytes, str]], list[str]]:
    """The IIM data in one blob -> ([(iim, where)], errors). A blob is a Photoshop image resource
    block (with or without the 'Photoshop 3.0\\0' signature) or bare IIM (TIFF tag 33723)."""
    if blob.startswith(IRB_SIGNATURE):
        blob = blob[len(IRB_SIGNATURE):]
    if blob[:1] == b"\x1c":
        return [(blob, where)], []
    if blob[:4] in _TYPES:
        return resources(blob, where)
    return [], [f"IPTC ({where}): neither an image resource block nor IIM data"]


def resources(irb: bytes, where: str) -> tuple[list[tuple[bytes, str]], list[str]]:
    """The data of each IIM resource (0x0404) in an image resource block."""
    found, errors = resource_data(irb, where, (IIM_RESOURCE,))
    return [(data, where) for _rid, data in found], errors


# What the resources the readers take hold: a walk's error about one of them names it, one about the
# walk names the image resource block. All used to start "IPTC", also for a PSD's broken EXIF or XMP.
_HOLDS = {IIM_RESOURCE: "IPTC", EXIF_RESOURCE: "EXIF", XMP_RESOURCE: "XMP"}


def _block(where: str, rtype: bytes = b"", rid: int | None = None) -> str:
    return f"{_HOLDS.get(rid, 'Image resources') if rtype == b'8BIM' else 'Image resources'} ({where})"


def resource_data(irb: bytes, where: str, ids) -> tuple[list[tuple[int, bytes]], list[str]]:
    """Walk 8BIM resources (type 4, id 2, Pascal name padded to even, size 4, data padded to even)
    and return (id, data) of each resource whose id is in `ids`."""
    errors: list[str] = []
    if len(irb) > MAX_IRB_BYTES:
        errors.append(f"{_block(where)}: image resources of {len(irb)} bytes; the first {MAX_IRB_BYTES} read")
        irb = irb[:MAX_IRB_BYTES]
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(irb)
    for _ in range(MAX_RESOURCES):
        if pos >= n:
            return out, errors
        if irb[pos] == 0:
            # Zero padding after the last resource is common; APP13 segments are joined before this
            # walk, so padding that ends one segment may be followed by the next segment's resources.
            nonzero = _NONZERO.search(irb, pos)
            if nonzero and irb[nonzero.start():nonzero.start() + 4] in _TYPES:
                pos = nonzero.start()
        if irb[pos:pos + 4] in _TYPES and pos + 7 > n:
            if pos + 6 <= n:    # its id is there: the error is that resource's
                rid = int.from_bytes(irb[pos + 4:pos + 6], "big")
                errors.append(f"{_block(where, irb[pos:pos + 4], rid)}: resource 0x{rid:04X} truncated in its "
                              f"header at offset {pos}")
            else:
                errors.append(f"{_block(where)}: image resource truncated in its header at offset {pos}")
            return out, errors
        if irb[pos:pos + 4] not in _TYPES:
            # Trailing zero padding is common; anything else is a broken block.
            if irb[pos:].strip(b"\x00"):
                errors.append(f"{_block(where)}: no image resource at offset {pos}; the rest not read")
            return out, errors
        rtype = irb[pos:pos + 4]
        rid = int.from_bytes(irb[pos + 4:pos + 6], "big")
        name_len = irb[pos + 6]
        head = 6 + 1 + name_len
        head += head & 1
        if pos + head + 4 > n:
            errors.append(f"{_block(where, irb[pos:pos + 4], rid)}: resource 0x{rid:04X} truncated in its header")
            return out, errors
        size = int.from_bytes(irb[pos + head:pos + head + 4], "big")
        start = pos + head + 4
        end = start + size
        if end > n:
            errors.append(f"{_block(where, rtype, rid)}: resource 0x{rid:04X} of {size} bytes overruns the block "
                          f"({n - start} left)")
            end = n
        if rtype == b"8BIM" and rid in ids:
            out.append((rid, irb[start:end]))
        pos = end
        # Data is padded to even; some writers leave the pad out. The pad is a zero byte or one before the
        # next resource; any other byte is junk the next round reports, not a pad to swallow in silence.
        if size & 1 and (irb[pos:pos + 1] == b"\x00" or irb[pos + 1:pos + 5] in _TYPES):
            pos += 1
    if pos < n:
        errors.append(f"{_block(where)}: more than {MAX_RESOURCES} image resources; the rest not read")
    return out, errors


def parse_iim(iim: bytes, where: str = "") -> IptcFacts:
    """Datasets: 0x1C, record, dataset, then a 2-byte length, or (high bit set) the number of the
    length bytes that follow. Never raises; problems go to `errors`."""
    f = IptcFacts(where=where)
    if len(iim) > MAX_IIM_BYTES:
        f.errors.append(f"IPTC ({where}): IIM data of {len(iim)} bytes; the first {MAX_IIM_BYTES} read")
        iim = iim[:MAX_IIM_BYTES]
    raw: dict[str, list[bytes]] = {}
    pos, n = 0, len(iim)
    count = 0
    while pos < n:
        if count >= MAX_DATASETS:
            f.errors.append(f"IPTC ({where}): more than {MAX_DATASETS} datasets; the rest not read")
            break
        if iim[pos] != 0x1C:
            if iim[pos:].strip(b"\x00"):
                f.errors.append(f"IPTC ({where}): no dataset marker at offset {pos}; the rest not read")
            break
        if pos + 5 > n:
            f.errors.append(f"IPTC ({where}): dataset header truncated at offset {pos}")
            break
        rec, ds = iim[pos + 1], iim[pos + 2]
        length = int.from_bytes(iim[pos + 3:pos + 5], "big")
        pos += 5
        if length & 0x8000:
            nbytes = length & 0x7FFF
            if nbytes == 0 or nbytes > MAX_LENGTH_BYTES or pos + nbytes > n:
                f.errors.append(f"IPTC ({where}): dataset {rec}:{ds} gives a {nbytes}-byte length; the rest not read")
                break
            length = int.from_bytes(iim[pos:pos + nbytes], "big")
            pos += nbytes
        if length > n - pos:
            f.errors.append(f"IPTC ({where}): dataset {rec}:{ds} of {length} bytes overruns the block "
                            f"({n - pos} left); the rest not read")
            break
        count += 1
        name = FIELDS.get((rec, ds))
        if name is not None:
            vals = raw.setdefault(name, [])
            if len(vals) < MAX_VALUES:
                vals.append(iim[pos:pos + length])
        pos += length
    f.datasets = count
    charset = (raw.get("coded_character_set") or [b""])[0]
    utf8 = charset == UTF8_ESCAPE
    f.coded_character_set = "UTF-8" if utf8 else (charset.hex(" ") if charset else None)
    for name, vals in raw.items():
        if name == "coded_character_set":
            continue
        texts = list(dict.fromkeys(t for t in (_text(v, utf8) for v in vals) if t))
        if not texts:
            continue
        if name == "originating_program":
            f.programs = texts
        if name in REPEATABLE:
            setattr(f, name, texts)
        else:
            setattr(f, name, texts[0])
            if len(texts) > 1 and name != "originating_program":
                f.errors.append(f"IPTC ({where}): {name} given {len(texts)} different values; the first is shown")
    return f


# Without 1:90 = ESC % G the IIM default is ISO 8859-1, but Windows tools write their code page there
# (exiftool reads it as cp1252 too): its 0x80-0x9F are quotes, dashes and the euro sign, not the C1
# controls Latin-1 makes of them. The five bytes cp1252 leaves undefined stay controls, and are dropped.
_CP1252 = {i: bytes([i]).decode("cp1252") for i in range(0x80, 0xA0) if i not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}


def _text(v: bytes, utf8: bool) -> str:
    # Latin-1 maps every byte, so decoding never fails. Controls (C0 but line breaks and tabs, DEL, C1)
    # are dropped: a caption is shown in terminals and reports.
    s = v.decode("utf-8", "replace") if utf8 else v.decode("latin-1").translate(_CP1252)
    return "".join(c for c in s if (c >= " " or c in "\t\r\n") and not "\x7f" <= c <= "\x9f").strip()
