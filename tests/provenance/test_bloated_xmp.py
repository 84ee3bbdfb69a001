"""An XMP packet bloated by Photoshop's photoshop:DocumentAncestors (thousands of document IDs) is read
without that bag: refused whole over the parse cap, it took the AI declaration and the history with it."""
from __future__ import annotations

import io
import struct

from PIL import Image

from aiidetect.provenance import analyze, containers, xmp
from aiidetect.testing.hostile import jpeg_with_app1, png_chunk, png_with, with_jpeg_segments

AI = b"http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def _packet(ancestors: int, prefix: bytes = b"photoshop", uri: bytes = b"http://ns.adobe.com/photoshop/1.0/",
            bag: bytes | None = None) -> bytes:
    bag = bag if bag is not None else (b"<rdf:Bag>" + b"<rdf:li>xmp.did:0123456789abcdef0123456789abcdef</rdf:li>"
                                       * ancestors + b"</rdf:Bag>")
    return (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
            b'xmlns:' + prefix + b'="' + uri + b'" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            b'xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:CreatorTool>Adobe Photoshop 25.0</xmp:CreatorTool>'
            b'<' + prefix + b':DocumentAncestors>' + bag + b'</' + prefix + b':DocumentAncestors>'
            b'<Iptc4xmpExt:DigitalSourceType>' + AI + b'</Iptc4xmpExt:DigitalSourceType>'
            b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def _png(packet: bytes) -> bytes:
    return png_with([png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + packet)])


def _declared(data: bytes) -> tuple[list[str], list[dict], list[str]]:
    rep = analyze(data, "x", options={"watermark": "never"})
    return [e.id for e in rep.evidence], rep.facts.get("xmp", []), rep.errors


def test_a_photoshop_packet_of_megabytes_keeps_its_ai_declaration():
    packet = _packet(45_000)      # 2.5 MB, over the 2 MiB the parser is handed
    assert len(packet) > xmp.MAX_XMP_BYTES
    ids, facts, errors = _declared(_png(packet))
    assert "xmp.ai-source-type" in ids, (ids, errors)
    assert facts[0]["creator_tools"] == ["Adobe Photoshop 25.0"]
    assert facts[0]["skipped"] == {"photoshop:DocumentAncestors": 45_000 * 57 + len(b"<rdf:Bag></rdf:Bag>")}


def test_the_bag_is_found_by_its_namespace_not_its_prefix(monkeypatch):
    monkeypatch.setattr(xmp, "MAX_XMP_BYTES", 20_000)
    ids, facts, _ = _declared(_png(_packet(1_000, prefix=b"ps")))
    assert "xmp.ai-source-type" in ids and facts[0]["skipped"]
    # The same name bound to another namespace is no bulk of Photoshop's: the packet stays refused.
    ids, _, errors = _declared(_png(_packet(1_000, uri=b"http://example.com/not-photoshop/")))
    assert "xmp.ai-source-type" not in ids
    assert any("exceeds 20000" in e for e in errors), errors


def test_a_packet_under_the_cap_is_parsed_whole(monkeypatch):
    # Dropping is for packets the parser would refuse; one it takes is read as written.
    assert xmp.parse_xmp(_packet(10)).skipped == {}


def test_hostile_bags_leave_the_packet_refused_not_misread(monkeypatch):
    monkeypatch.setattr(xmp, "MAX_XMP_BYTES", 20_000)
    li = b"<rdf:li>x</rdf:li>" * 2_000
    nested = b"<photoshop:DocumentAncestors>" + li + b"</photoshop:DocumentAncestors>" + li
    for bag in (nested, li + b"<photoshop:DocumentAncestors/>"):
        ids, _, errors = _declared(_png(_packet(0, bag=bag)))
        assert "xmp.ai-source-type" not in ids and any("XMP" in e for e in errors), errors
    unclosed = _packet(2_000).replace(b"</photoshop:DocumentAncestors>", b"")
    ids, _, errors = _declared(_png(unclosed))
    assert "xmp.ai-source-type" not in ids and any("exceeds 20000" in e for e in errors), errors


def test_a_bloated_packet_in_jpeg_extended_xmp_or_a_webp_chunk_is_read_too(monkeypatch):
    monkeypatch.setattr(xmp, "MAX_XMP_BYTES", 20_000)
    packet = _packet(1_000)
    guid = b"0123456789ABCDEF0123456789ABCDEF"
    main = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="' + guid
            + b'"/></rdf:RDF></x:xmpmeta>')
    parts = [(0xE1, b"http://ns.adobe.com/xmp/extension/\x00" + guid + struct.pack(">II", len(packet), off)
              + packet[off:off + 60_000]) for off in range(0, len(packet), 60_000)]
    jpeg = with_jpeg_segments(jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + main), parts, at=2)
    ids, facts, errors = _declared(jpeg)
    assert "xmp.ai-source-type" in ids, errors
    assert any(f.get("where") == "JPEG APP1 extended XMP" and f.get("skipped") for f in facts), facts
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "WEBP", xmp=_packet(45_000))     # 2.5 MB: the walk refused it from its length
    ids, facts, errors = _declared(buf.getvalue())
    assert "xmp.ai-source-type" in ids, errors
    assert containers.MAX_XMP_READ_BYTES == xmp.MAX_XMP_READ_BYTES


def _sees_declaration(packet: bytes) -> bool:
    """What an XML parser reads from the packet as written (no cap): is the IPTC declaration there?"""
    from defusedxml import ElementTree as DET

    return any(str(e.tag).endswith("DigitalSourceType") for e in DET.fromstring(packet).iter())


def test_a_bag_name_in_a_comment_cdata_or_instruction_cannot_cut_what_the_parser_reads(monkeypatch):
    # A forger's packet: the bag's name written inside comments (CDATA sections, processing instructions) so
    # that a byte search cut from one to the next would hide the declaration every reader sees, or cut from the
    # real bag to a commented-out close and show one they all skip. The packet is read as written or refused.
    monkeypatch.setattr(xmp, "MAX_XMP_BYTES", 20_000)
    o, c = b"<photoshop:DocumentAncestors>", b"</photoshop:DocumentAncestors>"
    dst = b"<Iptc4xmpExt:DigitalSourceType>" + AI + b"</Iptc4xmpExt:DigitalSourceType>"
    bulk = b"<rdf:Bag>" + b"<rdf:li>xmp.did:0123456789abcdef</rdf:li>" * 1_000 + b"</rdf:Bag>"
    hidden = [(a + c + dst + o + z) for a, z in ((b"<!--", b"-->"), (b"<![CDATA[", b"]]>"), (b"<?pi ", b"?>"))]
    shown = [(a + o + z + dst + a + c + z) for a, z in ((b"<!--", b"-->"), (b"<?pi ", b"?>"))]
    for inside, after in [(bulk + h, b"") for h in hidden] + [(bulk, s) for s in shown]:
        full = _packet(0, bag=inside)
        full = full.replace(b"<Iptc4xmpExt:DigitalSourceType>" + AI + b"</Iptc4xmpExt:DigitalSourceType>", after)
        assert len(full) > xmp.MAX_XMP_BYTES
        if after:   # the real bag before them is still left out, and what every reader sees is read
            facts = xmp.parse_xmp(full)
            assert _sees_declaration(full) and facts.digital_source_types and facts.skipped, full[-400:]
            continue
        try:
            got = bool(xmp.parse_xmp(full).digital_source_types)
        except ValueError:
            continue    # refused, as a packet over the cap was before: nothing misread
        assert got == _sees_declaration(full), full[-400:]


def test_four_bindings_of_one_prefix_leave_room_for_another(monkeypatch):
    # Writers that give each namespace group its own rdf:Description bind "photoshop" in each; the prefixes
    # looked for are four distinct ones, not the first four bindings.
    monkeypatch.setattr(xmp, "MAX_XMP_BYTES", 20_000)
    again = b'<rdf:Description rdf:about="" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"/>' * 4
    packet = _packet(1_000, prefix=b"ps").replace(b"<rdf:Description ", again + b"<rdf:Description ", 1)
    facts = xmp.parse_xmp(packet)
    assert facts.digital_source_types and facts.skipped
