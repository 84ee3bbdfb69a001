"""Camera EXIF beside an AI tool named as the program that wrote the file gets a metadata.conflict note, as camera
EXIF beside generator settings or an XMP AI declaration does (docs/provenance.md, `metadata.conflict`)."""
from __future__ import annotations

import io

from PIL import Image

from aiidetect.provenance import analyze
from aiidetect.testing.hostile import XMP_TRAINED, with_jpeg_segments, xmp_creator_tool, xmp_history_tool

XAP = b"http://ns.adobe.com/xap/1.0/\x00"


def _camera_jpeg(software: str | None = None) -> bytes:
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Canon", "Canon EOS 7D"
    if software is not None:
        ex[0x0131] = software
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (90, 120, 60)).save(buf, "JPEG", exif=ex.tobytes())
    return buf.getvalue()


def _items(data: bytes):
    rep = analyze(data, "x.jpg", options={"watermark": "never", "c2pa": False})
    return rep, {e.id: e for e in rep.evidence}


def test_exif_software_naming_an_ai_tool_beside_the_camera_in_the_same_block_is_a_conflict():
    rep, items = _items(_camera_jpeg("Midjourney"))
    # Each is still weighed as what it is; the reader is told the two clash.
    assert items["exif.software-generator"].strength == 3.0 and items["exif.camera"].strength == 0.7
    notes = items["metadata.conflict"].data["conflicts"]
    assert len(notes) == 1 and "in the same EXIF block" in notes[0] and "Midjourney" in notes[0], notes
    assert "Canon EOS 7D" in notes[0]
    # What is no AI tool name (a phone's own "AI" mode, Photoshop's version string) is no clash: no tool item either.
    for software in ("Galaxy AI", "Adobe Photoshop 25.0 (Windows)", "Master AI"):
        _, items = _items(_camera_jpeg(software))
        assert "exif.software-generator" not in items and "metadata.conflict" not in items, software
    # Beside a decisive declaration that clashes with the camera already, the camera gets that one note.
    _, items = _items(with_jpeg_segments(_camera_jpeg("Midjourney"), [(0xE1, XAP + XMP_TRAINED)], at=2))
    notes = items["metadata.conflict"].data["conflicts"]
    assert len(notes) == 1 and "declaration of AI generation" in notes[0], notes


def test_an_ai_tool_named_in_another_block_clashes_and_one_in_an_edit_history_does_not():
    _, items = _items(with_jpeg_segments(_camera_jpeg(), [xmp_creator_tool("Midjourney v6")], at=2))
    note = items["metadata.conflict"].data["conflicts"]
    assert len(note) == 1 and "xmp.generator-tool" in note[0] and "same EXIF block" not in note[0], note
    # A photo with one AI edit step (Photoshop's history naming Firefly) is a partial AI edit, no contradiction.
    history = xmp_history_tool("Adobe Photoshop 25.0 (Windows)", "Adobe Firefly")
    _, items = _items(with_jpeg_segments(_camera_jpeg(), [history], at=2))
    assert items["xmp.generator-tool"].strength == 2.5 and "metadata.conflict" not in items


def _history_only(agent: str) -> bytes:
    return XAP + (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
        'xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"><xmpMM:History><rdf:Seq>'
        f'<rdf:li stEvt:action="saved" stEvt:softwareAgent="{agent}"/></rdf:Seq></xmpMM:History>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def test_an_ai_tool_only_in_an_edit_history_without_creator_tool_is_no_clash_but_a_writer_beside_it_is():
    # No CreatorTool: the history's agent is still an edit step, not the program that wrote the file (the note
    # said "named as the program that wrote the file" of it).
    _, items = _items(with_jpeg_segments(_camera_jpeg(), [(0xE1, _history_only("Adobe Firefly"))], at=2))
    assert items["xmp.generator-tool"].strength == 3.0 and "metadata.conflict" not in items
    # Beside it, EXIF Software naming an AI tool in the camera's block is a clash, though the history item is the
    # one counted (the first of equal claims) and the Software item its folded copy.
    _, items = _items(with_jpeg_segments(_camera_jpeg("Midjourney"), [(0xE1, _history_only("Adobe Firefly"))], at=2))
    assert items["exif.software-generator"].data.get("corroborates") == "xmp.generator-tool"
    notes = items["metadata.conflict"].data["conflicts"]
    assert len(notes) == 1 and "Midjourney" in notes[0] and "in the same EXIF block" in notes[0], notes



def test_a_camera_clashing_with_a_declaration_counted_in_a_trusted_manifest_gets_one_note(tmp_path):
    # The XMP declaration is counted in the trusted manifest's (no longer decisive), so the tool's note was written
    # beside the declaration's: two notes for one camera, where any other declaration gets one.
    import pytest

    pytest.importorskip("c2pa")
    from aiidetect.provenance.trust import load_trust_list
    from aiidetect.testing import c2pa_signing

    signer, ca = c2pa_signing.make_signer_and_ca()
    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x0131] = "Canon", "Canon EOS 7D", "Midjourney"
    data = c2pa_signing.sign(signer, Image.new("RGB", (24, 16)), "JPEG", "trainedAlgorithmicMedia", thumbnail=False,
                             xmp=XMP_TRAINED, save={"exif": ex.tobytes()})
    (tmp_path / "ca.pem").write_bytes(ca)
    rep = analyze(data, "x.jpg", options={"watermark": "never",
                                          "c2pa_trust": load_trust_list([tmp_path / "ca.pem"]).option()})
    assert rep.facts["c2pa"]["state"] == "Trusted"
    notes = [n for n in rep.facts["conflicts"] if n.startswith("camera EXIF")]
    assert len(notes) == 1 and "declaration of AI generation (xmp.ai-source-type" in notes[0], notes
