"""XMP packets: IPTC DigitalSourceType, CreatorTool, edit history.

Parsed with defusedxml (no entities, no DTDs, no external references) after a
size cap. Elements and attributes are matched by local name, whatever prefix
the writer chose, because real files use many prefixes for the same namespace.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import re
from typing import Any

# What the XML parser is handed: its cost is the cap's reason (2 MB of rdf:li items parse in 0.08 s; each
# element is a Python object the walk below visits).
MAX_XMP_BYTES = 2 * 1024 * 1024
# A packet read at all, before its bulk-only elements are dropped (drop_bulk): Photoshop's
# photoshop:DocumentAncestors (the IDs of every document ever placed or pasted in) bloats real packets to
# many MB, and refused whole they took the IPTC DigitalSourceType and the edit history with them. Dropping
# is forward byte searches (an 8 MB bag: 35 ms, its span searched for comments too; 8 MB of look-alike tags:
# 0.2 s at most), so the read cap can sit above the parse cap; it is the EXIF reader's (exif.MAX_EXIF_BYTES).
# A PNG's XMP is a text chunk, read up to its 4 MiB (containers.MAX_TEXT_BYTES).
MAX_XMP_READ_BYTES = 8 * 1024 * 1024
PHOTOSHOP_NS = b"http://ns.adobe.com/photoshop/1.0/"
# Elements that only ever hold bulk no reader here looks at, by namespace and local name.
BULK_ELEMENTS = ((PHOTOSHOP_NS, b"DocumentAncestors"),)
# Prefixes bound to one such namespace that are looked for: a writer binds one.
MAX_BULK_PREFIXES = 4
MAX_ELEMENTS = 50_000
MAX_DEPTH = 100          # real packets nest ~10 deep
MAX_VALUE_CHARS = 4000


@dataclass
class XmpFacts:
    digital_source_types: list[str] = field(default_factory=list)
    creator_tools: list[str] = field(default_factory=list)
    software_agents: list[str] = field(default_factory=list)   # xmpMM:History stEvt:softwareAgent
    user_comments: list[str] = field(default_factory=list)     # exif:UserComment (Draw Things stores JSON here)
    descriptions: list[str] = field(default_factory=list)
    where: str = ""
    # bytes of each bulk-only element's content dropped before parsing ("photoshop:DocumentAncestors": N)
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from .recordtext import MAX_FIELD_CHARS

        out: dict[str, Any] = {}
        cut: dict[str, int] = {}
        for k, v in self.__dict__.items():
            if not v:
                continue
            if isinstance(v, list):
                for i, x in enumerate(v):
                    if len(x) > MAX_FIELD_CHARS:
                        cut[f"{k}[{i}]"] = len(x)
                v = [x[:MAX_FIELD_CHARS] for x in v]
            out[k] = v
        if cut:
            out["truncated"] = cut
        return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _texts(el, depth: int = 3, cap: int = 50) -> list[str]:
    """An element's value: its text, or the rdf:li items under it (rdf:Alt/Seq/Bag
    then rdf:li: two levels, three with a nested rdf:Description). Bounded:
    itertext over the whole subtree made nested <description> elements quadratic."""
    out: list[str] = []
    stack = [(el, 0)]
    while stack and len(out) < cap:
        e, d = stack.pop()
        if isinstance(e.text, str) and e.text.strip():
            out.append(e.text.strip())
        if d < depth:
            kids = list(e)[:cap]
            stack.extend((c, d + 1) for c in reversed(kids))
    return out


def _walk(root, max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS):
    """Depth-first elements with explicit depth and count caps."""
    stack = [(root, 0)]
    n = 0
    while stack:
        el, d = stack.pop()
        n += 1
        if n > max_elements:
            raise ValueError(f"XMP has more than {max_elements} elements")
        if d > max_depth:
            raise ValueError(f"XMP nests deeper than {max_depth} levels")
        yield el
        stack.extend((c, d + 1) for c in reversed(list(el)))


# xmlns:prefix="uri" (or the default xmlns="uri"); bounded repeats, no nesting: linear.
_NS_BINDING = re.compile(rb"""xmlns(?::([A-Za-z_][A-Za-z0-9_.-]{0,63}))?[ \t\r\n]*=[ \t\r\n]*"""
                         rb"""["']([^"'<>]{0,256})["']""")


def drop_bulk(packet: bytes) -> tuple[bytes, dict[str, int]]:
    """-> (the packet with the content of each BULK_ELEMENTS element left out, bytes left out by element).
    Linear: one pass for the namespace bindings, then byte searches that only move forward. The element is
    found by the prefixes bound to its namespace anywhere in the packet (a prefix bound to two namespaces in
    different scopes counts as both). An unclosed element, one nested in itself, or one whose span holds a
    comment, CDATA section or processing instruction (_MARKUP), and all after it, are left as they are: the
    packet stays over the parse cap, or fails to parse, as before."""
    prefixes: dict[bytes, list[bytes]] = {}
    for m in _NS_BINDING.finditer(packet):
        for ns, _local in BULK_ELEMENTS:
            # distinct prefixes: one rdf:Description per namespace each binding "photoshop" again used
            # up the four with one name, and a bag under a fifth binding's other prefix stayed in
            if m.group(2) == ns and len(prefixes.setdefault(ns, [])) < MAX_BULK_PREFIXES:
                if (m.group(1) or b"") not in prefixes[ns]:
                    prefixes[ns].append(m.group(1) or b"")
    skipped: dict[str, int] = {}
    for ns, local in BULK_ELEMENTS:
        for prefix in prefixes.get(ns, []):
            name = prefix + b":" + local if prefix else local
            packet, n = _drop_element(packet, name)
            if n:
                label = f"photoshop:{local.decode()}"     # by its namespace, whatever prefix was bound
                skipped[label] = skipped.get(label, 0) + n
    return packet, skipped


# What the parser reads otherwise than as tags. A tag name inside a comment, a CDATA section or a processing
# instruction is text to it: a cut from a commented-out "<photoshop:DocumentAncestors>" to a commented-out close
# hid an IPTC DigitalSourceType every XML reader sees between them, and one from the real element to a close
# inside a comment showed one they all skip. A span free of these delimiters lies wholly inside one such
# construct (a cut there changes only its text) or wholly outside all of them (its first close is its own).
# "--": a comment's end, or text a comment may not hold. One search a span (five finds doubled the time of 8 MB
# of tiny bags).
_MARKUP = re.compile(rb"<[!?]|--|\]\]>|\?>")


def _drop_element(packet: bytes, name: bytes) -> tuple[bytes, int]:
    opener, closer = b"<" + name, b"</" + name
    out, last, pos, dropped = [], 0, 0, 0
    while True:
        i = packet.find(opener, pos)
        if i < 0:
            break
        after = packet[i + len(opener):i + len(opener) + 1]
        if after not in (b">", b"/", b" ", b"\t", b"\r", b"\n"):     # a longer name that starts the same
            pos = i + 1
            continue
        gt = packet.find(b">", i)
        if gt < 0:
            break
        if packet[gt - 1:gt] == b"/":     # <photoshop:DocumentAncestors/>: nothing inside
            pos = gt + 1
            continue
        end = packet.find(closer, gt)
        if end < 0:
            break
        if packet.find(opener, gt, end) >= 0 or _MARKUP.search(packet, i + 1, end):
            # Nested in itself (the first close is not its own), or a comment, CDATA section or processing
            # instruction begins or ends in the span: leave the rest whole (see _MARKUP)
            break
        out.append(packet[last:gt + 1])
        dropped += end - gt - 1
        last = pos = end
    if not dropped:
        return packet, 0
    out.append(packet[last:])
    return b"".join(out), dropped


def parse_xmp(packet: bytes, where: str = "") -> XmpFacts:
    """Raises ValueError on oversized or malformed XML (the caller records it)."""
    from defusedxml import ElementTree as DET

    if len(packet) > MAX_XMP_READ_BYTES:
        raise ValueError(f"XMP packet of {len(packet)} bytes exceeds the {MAX_XMP_READ_BYTES} read")
    skipped: dict[str, int] = {}
    if len(packet) > MAX_XMP_BYTES:
        # Only a packet over the parse cap loses its bulk: one under it parses whole, as it always did.
        packet, skipped = drop_bulk(packet)
        if len(packet) > MAX_XMP_BYTES:
            cut = f" ({sum(skipped.values())} bytes of bulk left out)" if skipped else ""
            raise ValueError(f"XMP packet of {len(packet)} bytes{cut} exceeds {MAX_XMP_BYTES}")
    text = packet.strip(b"\x00 \r\n\t")
    # The <?xpacket?> wrapper and trailing padding are legal; anything before '<' is not XML.
    start = text.find(b"<")
    if start < 0:
        raise ValueError("XMP packet has no XML")
    text = text[start:]
    end = text.rfind(b">")
    text = text[:end + 1]
    try:
        root = DET.fromstring(text)
    except Exception as exc:  # noqa: BLE001 - ParseError, EntitiesForbidden, DTDForbidden, ...
        # Some writers leave junk after the packet (seen in the wild: a partial
        # second copy); the first complete <x:xmpmeta> is what readers use.
        cut = text.find(b"</x:xmpmeta>")
        root = None
        if cut > 0 and cut + 12 < len(text):
            try:
                root = DET.fromstring(text[text.find(b"<x:xmpmeta"):cut + 12])
            except Exception:  # noqa: BLE001
                root = None
        if root is None:
            raise ValueError(f"invalid XMP XML: {type(exc).__name__}: {str(exc)[:160]}") from exc
    f = XmpFacts(where=where, skipped=skipped)
    for el in _walk(root):
        name = _local(el.tag) if isinstance(el.tag, str) else ""
        _take(f, name, _texts(el) if name in _WANTED else [])
        for k, v in el.attrib.items():
            # RDF also writes a URI value as <DigitalSourceType rdf:resource="..."/>: the value is the element's.
            _take(f, name if _local(k) == "resource" and name in _WANTED else _local(k), [v])
    for lst in (f.digital_source_types, f.creator_tools, f.software_agents, f.user_comments, f.descriptions):
        # UserComment whole (the packet bounds it): Draw Things' JSON cut here no longer parsed, and
        # to_dict cuts it for the record. The others are only matched and quoted (evidence lists).
        cap = None if lst is f.user_comments else MAX_VALUE_CHARS
        seen = list(dict.fromkeys(x[:cap] for x in lst if x))
        lst[:] = seen[:50]
    return f


_WANTED = {"DigitalSourceType", "digitalsourcetype", "CreatorTool", "softwareAgent", "UserComment", "description"}


def _take(f: XmpFacts, name: str, vals: list[str]) -> None:
    if not vals:
        return
    if name.lower() == "digitalsourcetype":
        f.digital_source_types.extend(vals)
    elif name == "CreatorTool":
        f.creator_tools.extend(vals)
    elif name == "softwareAgent":
        f.software_agents.extend(vals)
    elif name == "UserComment":
        f.user_comments.extend(vals)
    elif name == "description":
        f.descriptions.extend(vals)
