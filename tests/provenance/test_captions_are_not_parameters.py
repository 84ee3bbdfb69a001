"""Ordinary captions are not generator parameters: a decisive AI verdict on a real photo is the worst
mistake this tool can make, and caption fields (JPEG comments, EXIF UserComment, PNG Description,
XMP CreatorTool) hold whatever people type."""
from __future__ import annotations

import io
import json
import struct

import pytest
from PIL import Image, PngImagePlugin

from conftest import run_cli
from aiidetect.provenance import analyze

UUID = "0f3c2a9e-7b41-4c2d-9a55-3e1f0b6d8c72"


def _jpeg(comment: str | None = None, user_comment: str | None = None, xmp: bytes | None = None) -> bytes:
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Nikon", "D850"
    if user_comment:
        ex.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + user_comment.encode()
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 80, 70)).save(buf, "JPEG", exif=ex.tobytes())
    data = buf.getvalue()
    segs = b""
    if comment:
        segs += b"\xff\xfe" + struct.pack(">H", len(comment.encode()) + 2) + comment.encode()
    if xmp:
        body = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
        segs += b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return data[:2] + segs + data[2:]


def _png_text(key: str, text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(key, text)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _png_description(text: str) -> bytes:
    return _png_text("Description", text)


DRAW_THINGS_BARE = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                    b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="Draw Things"/>'
                    b'</rdf:RDF></x:xmpmeta>')

CAPTIONS = {
    "comment-steps": _jpeg(comment="Steps: 12 of the old church, photographed at dawn"),
    "comment-seed": _jpeg(comment="Harvest trial 2023, plot 4\nSeed: Pioneer P1197"),
    "comment-lot": _jpeg(comment="Lot 7 Seed: 42"),
    "usercomment-steps": _jpeg(user_comment="Hike to the falls\nSteps: 14000, Seed: sunflower"),
    "description-job": _png_description("Brochure cover, Job ID: 4711"),
    "creatortool-only": _jpeg(xmp=DRAW_THINGS_BARE),
    "json-note": _jpeg(comment='{"c": 3, "seed": 1, "note": "roll 12"}'),
}


@pytest.mark.parametrize("name", CAPTIONS)
def test_a_caption_is_not_decisive(name):
    rep = analyze(CAPTIONS[name], name, options={"watermark": "never"})
    assert not [e.id for e in rep.evidence if e.decisive], rep.evidence


@pytest.mark.parametrize("data", [
    _jpeg(comment="a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"),
    _jpeg(user_comment="a cat\nSteps: 30, Seed: -1"),
    _png_description(f"a lighthouse at dusk --ar 3:2 Job ID: {UUID}"),
    _jpeg(comment='{"c": "a robot", "uc": "blurry", "seed": 5, "steps": 20, "sampler": "Euler A"}'),
])
def test_real_generator_text_in_the_same_fields_still_is(data):
    rep = analyze(data, "gen", options={"watermark": "never"})
    assert [e.id for e in rep.evidence if e.decisive] == ["generator.parameters"]


def test_meta_exit_code_on_captioned_photos(tmp_path):
    for name, data in CAPTIONS.items():
        ext = "png" if data.startswith(b"\x89PNG") else "jpg"
        (tmp_path / f"{name}.{ext}").write_bytes(data)
    r = run_cli("meta", str(tmp_path), "-f", "json")
    assert r.returncode == 0, r.stdout[-2000:]     # 1 would mean decisive AI evidence in a file
    assert len(json.loads(r.stdout)) == len(CAPTIONS)


def test_a_long_draw_things_json_in_xmp_is_parsed_whole():
    # Draw Things' settings JSON in XMP exif:UserComment, past 4,000 characters (a long prompt), in a
    # file another tool re-saved (CreatorTool no longer names Draw Things): cut before parsing, it
    # was no JSON and the file had no generator item at all.
    dt = json.dumps({"c": "a robot, " * 600, "uc": "blurry", "seed": 5, "steps": 20, "sampler": "DPM++ 2M Karras"})
    esc = dt.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
              ' xmp:CreatorTool="Adobe Photoshop 25.0"><exif:UserComment><rdf:Alt><rdf:li xml:lang="x-default">'
              + esc + '</rdf:li></rdf:Alt></exif:UserComment></rdf:Description></rdf:RDF></x:xmpmeta>').encode()
    rep = analyze(_jpeg(xmp=packet), "dt", options={"watermark": "never"})
    gens = rep.facts.get("generators") or []
    assert [(g["generator"], g.get("seed")) for g in gens] == [("Draw Things", "5")], rep.evidence
    x = rep.facts["xmp"][0]
    assert len(x["user_comments"][0]) == 4000 and x["truncated"] == {"user_comments[0]": len(dt)}


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG"])
def test_comfyui_graphs_in_exif_make_and_model_are_generator_text(fmt):
    # ComfyUI's WebP/JPEG savers: Model = "prompt:{graph}", Make = "workflow:{graph}". They were
    # read as a camera make and model ("camera make/model in EXIF", towards real) and no generator.
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 20, "sampler_name": "euler"}},
              "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat"}}}
    img = Image.new("RGB", (64, 64), (1, 2, 3))
    ex = img.getexif()
    ex[0x0110] = "prompt:" + json.dumps(prompt)
    ex[0x010F] = "workflow:" + json.dumps({"nodes": [], "links": []})
    buf = io.BytesIO()
    img.save(buf, fmt, exif=ex)
    rep = analyze(buf.getvalue(), "comfy", options={"watermark": "never"})
    assert [e.id for e in rep.evidence if e.decisive] == ["generator.parameters"]
    assert not [e for e in rep.evidence if e.direction == "real"], rep.evidence
    assert rep.facts["generators"][0]["seed"] == "7" and "make" not in rep.facts.get("exif", {})


def test_the_detail_line_gives_a_long_prompts_length():
    # docs/provenance.md: a detail quotes at most 200 characters of a value and then gives its length.
    data = _jpeg(user_comment="a tree, " * 100 + "\nSteps: 30, Sampler: Euler a, Seed: 1")
    (e,) = [e for e in analyze(data, "g", options={"watermark": "never"}).evidence if e.decisive]
    assert e.detail.endswith('... (799 characters)"'), e.detail[-80:]


DYNAMIC_PROMPTS = ("a red cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, "
                   "Size: 512x512\nTemplate: a {red|blue}\ncat\nNegative Template: blurry")


def _png_parameters(text: str) -> bytes:
    return _png_text("parameters", text)


@pytest.mark.parametrize("make", [_png_parameters, lambda t: _jpeg(user_comment=t)], ids=["png", "jpeg-usercomment"])
def test_a1111_with_dynamic_prompts_template_lines_is_generator_text(make):
    # sd-dynamic-prompts appends "Template: ..." / "Negative Template: ..." after A1111's settings line;
    # the settings line was looked for on the last line only, and such a file had no generator item.
    blob = make(DYNAMIC_PROMPTS)
    rep = analyze(blob, "dp", options={"watermark": "never"})
    (g,) = rep.facts["generators"]
    assert (g["seed"], g["prompt"], g["negative_prompt"]) == ("5", "a red cat", "blurry")


def test_a_settings_like_line_inside_a_caption_is_still_not_parameters():
    rep = analyze(_jpeg(comment="Hike\nSteps: 12000, Seed: 42\nWhat a day"), "c", options={"watermark": "never"})
    assert not [e for e in rep.evidence if e.decisive]


def test_a_usercomment_with_a_bom_and_an_odd_byte_survives():
    # UTF-16 with a byte order mark and an odd length raised UnicodeDecodeError inside both EXIF readers:
    # the comment was lost, and so was everything each reader had left to read in that block.
    from aiidetect.provenance.exif import decode_user_comment

    assert decode_user_comment(b"UNICODE\x00\xff\xfea\x00b\x00\x00") == "ab\ufffd"
