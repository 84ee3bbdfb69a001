"""One program's name, written by one export step into EXIF Software, XMP CreatorTool and IIM
OriginatingProgram, is one claim: it weighs once (the strongest copy), and every other copy stays in
the record as a neutral, zero-weight item that says which item it corroborates (docs/provenance.md,
"One claim counts once"). The files are built here, byte by byte."""
from __future__ import annotations

import io
import json

from PIL import Image

from aiidetect.provenance import STRENGTH, analyze
from aiidetect.records import Evidence
from aiidetect.testing.hostile import iim_dataset, image_resource, with_jpeg_segments
from aiidetect.testing.hostile import xmp_creator_tool as _xmp

SIG = b"Photoshop 3.0\x00"


def _iim(program: str) -> tuple[int, bytes]:
    ds = iim_dataset(2, 0, b"\x00\x04") + iim_dataset(2, 65, program.encode())
    return 0xED, SIG + image_resource(0x0404, ds)


def _jpeg(software: str | None, *segs: tuple[int, bytes], make: str | None = None) -> bytes:
    ex = Image.Exif()
    if software:
        ex[0x0131] = software
    if make:
        ex[0x010F], ex[0x0110] = make, "X100"
    buf = io.BytesIO()
    Image.new("RGB", (96, 80), (120, 60, 30)).save(buf, "JPEG", quality=80, exif=ex)
    return with_jpeg_segments(buf.getvalue(), segs)


def _run(data: bytes):
    rep = analyze(data, "x", options={"watermark": "never"})
    assert not [e for e in rep.errors if e.startswith("internal")], rep.errors
    return rep


def _weighed(rep) -> dict[str, float]:
    return {e.id: e.llr for e in rep.evidence if e.llr}


# no-camera and standard JPEG tables come with every test JPEG here, and weigh nothing (they were 0.1 each)
HINTS = 0.0


def test_exif_software_and_xmp_creator_tool_naming_one_tool_weigh_once(tmp_path):
    # `aiidetect meta -f json` said llr 6.2 (3 + 3 + hints) for one claim made in two blocks.
    from tests.conftest import run_cli_in_process

    p = tmp_path / "firefly.jpg"
    p.write_bytes(_jpeg("Adobe Firefly", _xmp("Adobe Firefly")))
    r = run_cli_in_process("meta", "-f", "json", "--watermark", "never", str(p))
    rec = json.loads(r.stdout)[0]
    assert abs(rec["llr"] - (3.0 + HINTS)) < 1e-9, rec["evidence"]
    ev = {e["id"]: e for e in rec["evidence"]}
    assert ev["xmp.generator-tool"]["direction"] == "ai" and ev["xmp.generator-tool"]["strength"] == 3.0
    # still listed, so the reader sees both places the name was found
    copy = ev["exif.software-generator"]
    assert copy["direction"] == "neutral" and copy["strength"] == 0.0
    assert copy["data"] == {"software": "Adobe Firefly", "corroborates": "xmp.generator-tool"}
    assert "Adobe Firefly" in copy["detail"] and "the same claim as xmp.generator-tool" in copy["detail"]


def test_three_blocks_one_weight_and_each_block_listed():
    rep = _run(_jpeg("Midjourney", _xmp("Midjourney"), _iim("Midjourney")))
    items = {e.id: e for e in rep.evidence}
    assert {"xmp.generator-tool", "exif.software-generator", "iptc.program-generator"} <= set(items)
    assert _weighed(rep) == {"xmp.generator-tool": 3.0}
    assert items["iptc.program-generator"].data["corroborates"] == "xmp.generator-tool"
    # each of them alone still weighs what it did
    for data, eid in ((_jpeg("DALL-E 3"), "exif.software-generator"),
                      (_jpeg(None, _xmp("DALL-E 3")), "xmp.generator-tool"),
                      (_jpeg(None, _iim("DALL-E 3")), "iptc.program-generator")):
        assert _weighed(_run(data))[eid] == STRENGTH[eid] == 3.0


def test_camera_evidence_is_not_a_tool_name_and_is_not_folded():
    # A camera make beside a tool name: both stay weighed (they are not the same claim), and the
    # camera is one item (only the first EXIF block names a camera; XMP tiff:Model is not read).
    rep = _run(_jpeg("Stable Diffusion", _xmp("Stable Diffusion"), make="Fujifilm"))
    w = _weighed(rep)
    assert w["exif.camera"] == -0.7 and w["xmp.generator-tool"] == 3.0 and "exif.software-generator" not in w
    assert [e.id for e in rep.evidence].count("exif.camera") == 1


def test_a_signed_claim_generator_keeps_the_weight_an_invalid_one_is_a_copy():
    from aiidetect.fusion import split_results
    from aiidetect.metadata.detector import result_from_evidence
    from aiidetect.provenance import _count_claims_once

    def ev(valid: bool):
        return [Evidence("c2pa.generator-tool", "ai", 3.0 if valid else 1.5, "claim generator", "C2PA",
                         data={"valid": valid, "trusted": valid}),
                Evidence("xmp.generator-tool", "ai", 3.0, "XMP", "JPEG APP1", data={"tools": ["Firefly"]})]

    signed = ev(True)
    _count_claims_once(signed)
    # the unsigned XMP name says nothing the signature does not vouch for: counted once, on the signed item
    assert [e.llr for e in signed] == [3.0, 0.0]
    assert signed[1].data["corroborates"] == "c2pa.generator-tool" and "signed" in signed[1].detail
    signed_last = ev(True)[::-1]
    _count_claims_once(signed_last)
    assert [e.llr for e in signed_last] == [0.0, 3.0]
    unsigned = ev(False)
    _count_claims_once(unsigned)
    assert [e.llr for e in unsigned] == [0.0, 3.0]
    assert unsigned[0].data["corroborates"] == "xmp.generator-tool" and unsigned[0].direction == "neutral"
    # the zero-weight copy is no opinion for the detector nor for fusion
    res = result_from_evidence(unsigned)
    assert res.score == 3.0
    _, soft, decisive = split_results({"metadata": res})
    assert [e.id for _, e in soft + decisive] == ["xmp.generator-tool"]


def test_two_generators_settings_blocks_weigh_once_and_the_verdict_line_quotes_the_weighed_one():
    # A1111 `parameters` beside NovelAI's Software + Comment chunks: two decisive items summed 12 nats, and the
    # verdict's reason quoted NovelAI's detail with both weights ("NovelAI parameters ... (+12.00 nats)").
    from aiidetect.fusion import fuse
    from aiidetect.metadata.detector import result_from_evidence
    from aiidetect.testing.hostile import png_chunk, png_with

    a1111 = b"a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 64x48, Model: sd15"
    nai = json.dumps({"prompt": "a dog", "steps": 28, "sampler": "k_euler", "seed": 1, "scale": 5, "uc": "x"})
    rep = _run(png_with([png_chunk(b"tEXt", b"parameters\x00" + a1111), png_chunk(b"tEXt", b"Software\x00NovelAI"),
                         png_chunk(b"tEXt", b"Comment\x00" + nai.encode())]))
    gens = [e for e in rep.evidence if e.id == "generator.parameters"]
    assert [(e.direction, e.strength, e.decisive) for e in gens] == [("ai", 6.0, True), ("neutral", 0.0, False)]
    assert "NovelAI" in gens[1].detail and gens[1].data["corroborates"] == "generator.parameters"
    assert "the same claim as generator.parameters (PNG tEXt 'parameters')" in gens[1].detail
    out = fuse({"metadata": result_from_evidence(rep.evidence)})
    line = next(x for x in out.reasons if x.startswith("metadata:generator.parameters:"))
    assert "AUTOMATIC1111" in line and "NovelAI" not in line and "(+6.00 nats) [decisive]" in line
    assert out.contributions["metadata:generator.parameters"] == 6.0
