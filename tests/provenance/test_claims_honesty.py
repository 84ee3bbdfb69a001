"""What a verdict rests on: a forged declaration decides like a genuine one (docs/fusion.md rule 3),
so the record must say when only the file's own, unverified word stands behind it."""
from __future__ import annotations

import io
import json
import struct

from PIL import Image

from conftest import run_cli

A1111 = ("a photo of a cat\nNegative prompt: blurry\n"
         "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512, Model: sd15")


def _camera_jpeg_with_forged_parameters() -> bytes:
    """A photo as a camera writes it (make, model, exposure, maker note), plus A1111 text pasted in."""
    from PIL.TiffImagePlugin import IFDRational

    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Canon", "Canon EOS R5"
    sub = ex.get_ifd(0x8769)
    sub[0x829A], sub[0x829D], sub[0x8827] = IFDRational(1, 250), IFDRational(28, 10), 200
    sub[0x927C] = b"\x00" * 64
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 20, 30)).save(buf, "JPEG", exif=ex.tobytes())
    data = buf.getvalue()
    com = b"\xff\xfe" + struct.pack(">H", len(A1111) + 2) + A1111.encode()
    return data[:2] + com + data[2:]


def test_forged_generator_parameters_say_the_verdict_rests_on_an_unverified_claim(tmp_path):
    f = tmp_path / "photo.jpg"
    f.write_bytes(_camera_jpeg_with_forged_parameters())
    r = run_cli("scan", str(f), "-d", "metadata", "-f", "json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)[0]
    assert rec["verdict"] == "ai-generated"       # the documented policy (rule 3) is unchanged
    first = rec["reasons"][0]
    assert first.startswith("decisive provenance evidence decides the verdict")
    assert "generator.parameters" in first and "unsigned" in first and "not verified" in first
    ev = {e["id"]: e for e in rec["detectors"]["metadata"]["evidence"]}
    assert ev["generator.parameters"]["data"]["basis"] == "claim"
    assert "unsigned text in the file" in ev["generator.parameters"]["detail"]   # meta's table shows this line
    # the camera EXIF beside it is still reported, as what it is, and the clash between the two is named
    assert "can be copied" in ev["exif.camera"]["detail"]
    clash = ev["metadata.conflict"]["data"]["conflicts"]
    assert rec["reasons"][1].startswith("metadata:metadata.conflict: ")   # read with the verdict, not only deep in
    # ... and in the one-line views too: the table's and CSV's reason (only the rule line before)
    import csv as _csv

    r = run_cli("scan", str(f), "-d", "metadata", "-f", "csv")
    (row,) = list(_csv.DictReader(io.StringIO(r.stdout)))
    assert row["reason"].startswith("decisive provenance") and "; metadata:metadata.conflict: " in row["reason"]
    assert "camera EXIF (Canon, Canon EOS R5" in row["reason"]
    r = run_cli("scan", str(f), "-d", "metadata")
    assert "metadata.conflict" in r.stdout
    assert len(clash) == 1 and clash[0].startswith("camera EXIF (Canon, Canon EOS R5; JPEG APP1) beside a "
                                                   "declaration of AI generation (generator.parameters; JPEG COM)")


def _app(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def _jpeg_with(*segments: bytes) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buf, "JPEG")
    data = buf.getvalue()
    return data[:2] + b"".join(segments) + data[2:]


def _exif(make: str, model: str, software: str | None = None, exposure: bool = False, comment: bytes | None = None):
    from PIL.TiffImagePlugin import IFDRational

    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = make, model
    if software:
        ex[0x0131] = software
    sub = ex.get_ifd(0x8769)
    if exposure:
        sub[0x829A], sub[0x829D], sub[0x927C] = IFDRational(1, 250), IFDRational(28, 10), b"\x00" * 64
    if comment:
        sub[0x9286] = comment
    return ex.tobytes()   # starts with Exif\0\0, as an APP1 body does


def _meta(tmp_path, data: bytes, name: str) -> dict:
    f = tmp_path / name
    f.write_bytes(data)
    r = run_cli("meta", str(f), "-f", "json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)[0]


def test_two_exif_blocks_are_not_mixed_into_one_camera_and_the_record_says_they_disagree(tmp_path):
    # Before: each field came from the first block that had it, so this file reported a "Nikon D850
    # with maker note" and exposure settings, a camera neither block describes, and no conflict.
    canon = _exif("Canon", "Canon EOS R5", exposure=True)
    nikon = _exif("Nikon", "D850", software="Stable Diffusion")
    rec = _meta(tmp_path, _jpeg_with(_app(0xE1, nikon), _app(0xE1, canon)), "two.jpg")
    ev = {e["id"]: e for e in rec["evidence"]}
    assert ev["exif.camera"]["detail"].startswith("camera make/model in EXIF (Nikon, D850), no exposure")
    assert "can be copied" in ev["exif.camera"]["detail"]   # every camera item says it, not only the stronger two
    assert rec["facts"]["exif"]["make"] == "Nikon" and "has_makernote" not in rec["facts"]["exif"]
    assert rec["facts"]["exif_other_blocks"][0]["where"] == "JPEG APP1 #2"
    conflicts = ev["metadata.conflict"]["data"]["conflicts"]
    assert "EXIF make: 'Nikon' (JPEG APP1) vs 'Canon' (JPEG APP1 #2)" in conflicts
    assert ev["metadata.conflict"]["direction"] == "neutral"


def test_generator_text_in_a_second_exif_block_still_counts(tmp_path):
    comment = b"UNICODE\x00" + A1111.encode("utf-16-be")
    data = _jpeg_with(_app(0xE1, _exif("Canon", "EOS")), _app(0xE1, _exif("x", "y", comment=comment)))
    rec = _meta(tmp_path, data, "gen.jpg")
    gen = [e for e in rec["evidence"] if e["id"] == "generator.parameters"]
    assert gen and gen[0]["source"] == "EXIF UserComment (JPEG APP1 #2)"


def _xmp(dst: str) -> bytes:
    return (b"http://ns.adobe.com/xap/1.0/\x00" + (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/{dst}"/>'
        '</rdf:RDF></x:xmpmeta>').encode())


def test_xmp_packets_declaring_capture_and_ai_are_named_as_a_conflict(tmp_path):
    rec = _meta(tmp_path, _jpeg_with(_app(0xE1, _xmp("digitalCapture")), _app(0xE1, _xmp("trainedAlgorithmicMedia"))),
                "xmp2.jpg")
    ev = {e["id"]: e for e in rec["evidence"]}
    assert ev["xmp.capture-source-type"]["source"] == "JPEG APP1"
    assert ev["xmp.ai-source-type"]["source"] == "JPEG APP1 #2"     # which packet said what
    assert ev["metadata.conflict"]["data"]["conflicts"] == [
        "DigitalSourceType: digitalCapture (JPEG APP1) vs trainedAlgorithmicMedia (JPEG APP1 #2)"]


def test_a_prompt_cut_for_the_record_says_so(tmp_path):
    from PIL import PngImagePlugin

    prompt = "a cat, " * 800 + "END"      # 5,603 characters, over the 4,000 a record keeps
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{prompt}\nSteps: 20, Sampler: Euler a, Seed: 1")
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "PNG", pnginfo=info)
    rec = _meta(tmp_path, buf.getvalue(), "long.png")
    g = rec["facts"]["generators"][0]
    assert prompt.startswith(g["prompt"]) and len(g["prompt"]) == 4000
    assert g["truncated"] == {"prompt": len(prompt)}   # before: cut silently, quoted as if whole
    short = _meta(tmp_path, _camera_jpeg_with_forged_parameters(), "short.jpg")["facts"]["generators"][0]
    assert short["prompt"] == "a photo of a cat" and "truncated" not in short


def test_megabyte_metadata_strings_do_not_flood_records(tmp_path):
    """A 6 MB PNG with a 3 MB EXIF Make made a 10 MB meta record, a 14 MB scan record and 60 MB of
    table. Records keep 4,000 characters a field and say what they cut; details quote 200."""
    import zlib

    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x0131] = "M" * 3_000_000, "X" * 1_000_000, "Stable Diffusion " * 100_000
    tiff = ex.tobytes()[6:]
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "PNG")
    png = buf.getvalue()
    i = png.rfind(b"IEND") - 4
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    f = tmp_path / "long.png"
    f.write_bytes(png[:i] + chunk + png[i:])
    out = {}
    for fmt in ("json", "table"):
        r = run_cli("meta", str(f), "-f", fmt)
        assert r.returncode == 0 and len(r.stdout) < 100_000, (fmt, len(r.stdout))
        out[fmt] = r.stdout
    rec = json.loads(out["json"])[0]
    # (the trailing space of the last repetition is stripped, as from every EXIF string)
    assert rec["facts"]["exif"]["truncated"] == {"make": 3_000_000, "model": 1_000_000, "software": 1_699_999}
    assert len(rec["facts"]["exif"]["make"]) == 4000
    ev = {e["id"]: e for e in rec["evidence"]}
    assert "(3000000 characters)" in ev["exif.camera"]["detail"]
    assert ev["exif.software-generator"]["data"]["truncated"] == {"software": 1_699_999}



def test_capture_and_composite_declarations_are_no_conflict(tmp_path):
    # A captured photo edited with generative fill declares both; that is its honest history.
    rec = _meta(tmp_path, _jpeg_with(_app(0xE1, _xmp("digitalCapture")),
                                     _app(0xE1, _xmp("compositeWithTrainedAlgorithmicMedia"))), "fill.jpg")
    assert "metadata.conflict" not in {e["id"] for e in rec["evidence"]}



def test_packets_past_the_fourth_are_said_to_be_unread(tmp_path):
    packets = [_app(0xE1, _xmp("digitalCapture")) for _ in range(4)] + [_app(0xE1, _xmp("trainedAlgorithmicMedia"))]
    rec = _meta(tmp_path, _jpeg_with(*packets), "five.jpg")
    assert "5 XMP packets; only the first 4 read" in rec["errors"]   # before: the fifth vanished silently


def test_a_capture_declaration_beside_generator_settings_is_named_as_a_conflict():
    # A manifest signed over a PNG that carries A1111 settings, declaring digitalCapture: the signature is valid
    # (it covers the settings chunk), the verdict followed the settings, and the record never said the file
    # declares both "captured by a camera" and "made by Stable Diffusion".
    import pytest
    from PIL import PngImagePlugin

    from aiidetect.provenance import analyze
    from aiidetect.testing.c2pa_signing import make_signer, sign

    pytest.importorskip("c2pa")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    data = sign(make_signer(), Image.new("RGB", (64, 48), (100, 120, 140)), "PNG", "digitalCapture",
                thumbnail=False, save={"pnginfo": info})
    ev = {e.id: e for e in analyze(data, "x.png", options={"watermark": "never"}).evidence}
    assert ev["c2pa.capture"].data["valid"] and ev["generator.parameters"].decisive
    (clash,) = ev["metadata.conflict"].data["conflicts"]
    assert clash.startswith("a declaration of camera capture (c2pa.capture; PNG caBX) beside generator settings "
                            "(PNG tEXt 'parameters'): one of the two is untrue; the valid signature covers")
    # unsigned, in XMP, the same clash
    from aiidetect.testing.hostile import XMP_TRAINED, png_chunk, png_with

    xmp = XMP_TRAINED.replace(b"trainedAlgorithmicMedia", b"digitalCapture")
    data = png_with([png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp),
                     png_chunk(b"tEXt", b"parameters\x00" + A1111.encode())])
    ev = {e.id: e for e in analyze(data, "x.png", options={"watermark": "never"}).evidence}
    (clash,) = ev["metadata.conflict"].data["conflicts"]
    assert clash.startswith("a declaration of camera capture (xmp.capture-source-type; PNG iTXt")
    assert "signature" not in clash


def test_two_settings_blocks_of_one_generator_naming_other_models_are_a_conflict():
    # Two `parameters` chunks, sd15 / seed 1234 and sdxl / seed 99: merged into one item that named only the first,
    # while Pillow (and a UI's PNG Info) show the second; the record never said the file holds both.
    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import png_chunk, png_with

    other = A1111.replace("Seed: 1234", "Seed: 99").replace("Model: sd15", "Model: sdxl")
    rep = analyze(png_with([png_chunk(b"tEXt", b"parameters\x00" + A1111.encode()),
                            png_chunk(b"iTXt", b"parameters\x00\x00\x00\x00\x00" + other.encode())]),
                  "x.png", options={"watermark": "never"})
    ev = {e.id: e for e in rep.evidence}
    assert ev["generator.parameters"].data["model"] == "sd15" and ev["generator.parameters"].strength == 6.0
    assert ev["metadata.conflict"].data["conflicts"] == [
        "AUTOMATIC1111 Stable Diffusion WebUI (or compatible) model: 'sd15' (PNG tEXt 'parameters') vs 'sdxl' "
        "(PNG iTXt 'parameters')",
        "AUTOMATIC1111 Stable Diffusion WebUI (or compatible) seed: '1234' (PNG tEXt 'parameters') vs '99' (PNG iTXt "
        "'parameters')"]
    # the same block twice is no conflict
    rep = analyze(png_with([png_chunk(b"tEXt", b"parameters\x00" + A1111.encode())] * 2), "x.png",
                  options={"watermark": "never"})
    assert "metadata.conflict" not in {e.id for e in rep.evidence}


def test_settings_blocks_that_disagree_a_thousand_times_make_a_small_record():
    # A first `parameters` chunk naming a 60 KB model, then 900 naming others: each conflict quoted the whole
    # model, every one was kept in the generator's `extra` (facts and the item's data): a 120 MB record from a
    # 137 KB file.
    import json

    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import png_chunk, png_with

    first = A1111.replace("Model: sd15", "Model: " + "M" * 60_000)
    chunks = [png_chunk(b"tEXt", b"parameters\x00" + first.encode())] + [
        png_chunk(b"tEXt", b"parameters\x00" + A1111.replace("Model: sd15", f"Model: m{i}").encode())
        for i in range(900)]
    rep = analyze(png_with(chunks), "x.png", options={"watermark": "never"})
    assert len(json.dumps(rep.to_dict())) < 100_000
    (g,) = rep.facts["generators"]
    assert len(g["extra"]["conflicts"]) == 5 and g["extra"]["conflicts_left_out"] == 895
    assert "(60002 characters)" in g["extra"]["conflicts"][0]   # the repr, quotes included


def test_a_settings_line_naming_its_own_conflicts_key_is_no_conflict():
    # A1111 settings keep their other keys in the generator's `extra`, where the conflicts between two blocks are
    # listed too: a settings line "conflicts: hello" became a metadata.conflict of five letters, and beside a
    # second block naming another seed the real conflict was lost.
    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import png_chunk, png_with

    own = A1111 + ", conflicts: hi"
    rep = analyze(png_with([png_chunk(b"tEXt", b"parameters\x00" + own.encode())]), "x.png",
                  options={"watermark": "never"})
    assert "metadata.conflict" not in {e.id for e in rep.evidence}
    other = own.replace("Seed: 1234", "Seed: 99")
    rep = analyze(png_with([png_chunk(b"tEXt", b"parameters\x00" + own.encode()),
                            png_chunk(b"iTXt", b"parameters\x00\x00\x00\x00\x00" + other.encode())]),
                  "x.png", options={"watermark": "never"})
    ev = {e.id: e for e in rep.evidence}
    assert ev["metadata.conflict"].data["conflicts"] == [
        "AUTOMATIC1111 Stable Diffusion WebUI (or compatible) seed: '1234' (PNG tEXt 'parameters') vs '99' (PNG iTXt "
        "'parameters')"]
