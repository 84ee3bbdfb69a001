"""Program names as real cameras, apps and generators write them, in each place `AI_TOOL` reads (EXIF Software, XMP
CreatorTool and history softwareAgent, PNG Software, IIM OriginatingProgram; a C2PA claim generator is read with the
same rule): a camera or editor whose name contains a generator's word is no AI tool, a generator's own spelling is
(docs/provenance.md, "Program names")."""
from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from aiidetect.provenance import AI_TOOL, MAX_TOOL_NAME_CHARS, analyze
from aiidetect.testing.hostile import iim_dataset, image_resource, with_jpeg_segments, xmp_creator_tool, xmp_history_tool

# Not generators: a name of another product that shares a generator's word, or an editor's version string.
NOT_GENERATORS = [
    "gemini-user 8.0.0 OPR1.170623.032 V10.2.1.0.OAAMIXM release-keys",  # Xiaomi Mi 5's build ("gemini")
    "Gemini11",                        # Trust PowerCam Zoom LCD 710's Model (dev set, real/camera)
    "Gemini Photos",                   # a photo-library app
    "Hawkeye Firefly X Lite",          # an action camera
    "FIREFLY 8SE",
    "FLIR Firefly S",                  # a machine-vision camera
    "Firefly-RK3399",                  # an ARM board's build
    "Flux 7", "Flux Pro", "Flux Dev",  # apps and plug-ins called Flux, or an app's build
    "Flux Developer 2.0", "flux-development",
    "Openaire",                        # not OpenAI
    "Ideogrammatic",
    "Adobe Photoshop 25.0 (Windows)",  # the Photoshop that has Generative Fill writes no "Firefly" here
    "Adobe Photoshop Lightroom Classic 13.3 (Windows)",
    "Capture One 23 Macintosh", "darktable 4.6.1", "Topaz Photo AI 3.0.0", "Imagenomic Portraiture 4",
]
# Generators, as their outputs and savers name themselves.
GENERATORS = [
    "Adobe Firefly", "Adobe_Firefly", "Firefly Image 3", "Google Gemini", "Gemini 2.5 Flash Image", "Nano Banana",
    "FLUX.1 [dev]", "flux1-dev.safetensors", "FLUX 1.1 [pro]", "FLUX.2 [pro]", "black-forest-labs/FLUX.1-schnell",
    "OpenAI-API", "Ideogram", "ideogram.ai", "Midjourney v6", "Stable Diffusion", "ComfyUI", "NovelAI", "InvokeAI 4.2",
    "Fooocus 2.5.0", "Draw Things", "Leonardo.Ai", "Bing Image Creator", "Microsoft Designer", "ChatGPT",
    "Google Imagen", "ImageFX", "diffusers",
    # Black Forest Labs' API endpoints and their proxies' keys, ComfyUI's FLUX.2 weights, Google's first image models:
    # the old rule read each of them (a bare "flux" word, "gemini" anywhere).
    "flux-pro-1.1", "flux-pro-1.1-ultra", "flux-kontext-max", "flux-2-pro", "flux-dev", "Flux Kontext",
    "black_forest_labs/flux-pro-1.1", "fal-ai/flux-pro/kontext", "flux2_dev_fp8mixed.safetensors",
    "gemini-2.0-flash-exp-image-generation", "gemini-2.0-flash-preview-image-generation",
]


def _plain() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 60)).save(buf, "JPEG")
    return buf.getvalue()


def _exif(name: str) -> bytes:
    ex = Image.Exif()
    ex[0x0131] = name
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 60)).save(buf, "JPEG", exif=ex.tobytes())
    return buf.getvalue()


def _png(name: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", name)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _iim(name: str) -> bytes:
    rec = iim_dataset(2, 65, name.encode("latin-1"))
    return with_jpeg_segments(_plain(), [(0xED, b"Photoshop 3.0\x00" + image_resource(0x0404, rec))])


PLACES = {
    "exif.software-generator": _exif,
    "xmp.generator-tool": lambda n: with_jpeg_segments(_plain(), [xmp_creator_tool(n)]),
    "xmp.generator-tool.history": lambda n: with_jpeg_segments(
        _plain(), [xmp_history_tool("Adobe Photoshop 25.0 (Windows)", n)]),
    "png.software-generator": _png,
    "iptc.program-generator": _iim,
}


def _ai_items(place: str, name: str) -> list[str]:
    data = PLACES[place](name)
    rep = analyze(data, "x.png" if place.startswith("png") else "x.jpg", options={"watermark": "never", "c2pa": False})
    assert not rep.errors, rep.errors
    return [e.id for e in rep.evidence if e.direction == "ai"]


@pytest.mark.parametrize("place", list(PLACES))
def test_names_that_only_share_a_generators_word_are_no_ai_tool(place):
    wrong = {n: items for n in NOT_GENERATORS if (items := _ai_items(place, n))}
    assert not wrong, wrong


@pytest.mark.parametrize("place", list(PLACES))
def test_generators_own_names_are_still_ai_tools(place):
    # A PNG `Software: NovelAI` is read as NovelAI's parameters (generator.parameters), not as a tool name.
    item = place.removesuffix(".history")
    missed = [n for n in GENERATORS if not {item, "generator.parameters"} & set(_ai_items(place, n))]
    assert not missed, missed


def test_claim_generator_strings():
    # The manifest's claim generator is read with the same rule: an editor's is no AI tool, a generator's is.
    assert not AI_TOOL.search("Adobe_Photoshop/25.0 adobe_c2pa/0.7.6 c2pa-rs/0.25.2")
    assert not AI_TOOL.search("Adobe_Lightroom/7.2 adobe_c2pa/0.7.6 c2pa-rs/0.25.2")
    assert AI_TOOL.search("Adobe_Firefly adobe_c2pa/0.7.6 c2pa-rs/0.25.2")


@pytest.mark.parametrize("place", list(PLACES))
def test_a_name_is_read_in_a_fields_head_only(place):
    # Software and OriginatingProgram reach the rule uncapped: megabytes of hostile padding were scanned whole, in every
    # such field, until the metadata stage ran out of time. A program names itself first; past the head is not a name.
    pad = "q" * MAX_TOOL_NAME_CHARS
    assert not _ai_items(place, pad + " Midjourney")
    assert _ai_items(place, "Midjourney " + pad)
