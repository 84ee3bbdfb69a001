"""XMP packets: IPTC DigitalSourceType, CreatorTool, edit history.

Parsed with defusedxml (no entities, no DTDs, no external references) after a
size cap. Elements and attributes are matched by local name, whatever prefix
the writer chose, because real files use many prefixes for the same namespace.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_XMP_BYTES = 2 * 1024 * 1024
MAX_ELEMENTS = 50_000
MAX_DEPTH = 100          # real packets nest ~10 deep
IPTC_DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"
MAX_VALUE_CHARS = 4000


@dataclass
class XmpFacts:
    digital_source_types: list[str] = field(default_factory=list)
    creator_tools: list[str] = field(default_factory=list)
    software_agents: list[str] = field(default_factory=list)   # xmpMM:History stEvt:softwareAgent
    user_comments: list[str] = field(default_factory=list)     # exif:UserComment (Draw Things stores JSON here)
    descriptions: list[str] = field(default_factory=list)
    where: str = ""

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


def short_source_type(uri: str) -> str:
    u = uri.strip()
    if u.startswith(IPTC_DST):
        return u[len(IPTC_DST):]
    return u.rsplit("/", 1)[-1]


def parse_xmp(packet: bytes, where: str = "") -> XmpFacts:
    """Raises ValueError on oversized or malformed XML (the caller records it)."""
    from defusedxml import ElementTree as DET

    if len(packet) > MAX_XMP_BYTES:
        raise ValueError(f"XMP packet of {len(packet)} bytes exceeds {MAX_XMP_BYTES}")
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
    f = XmpFacts(where=where)
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
