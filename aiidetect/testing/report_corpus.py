"""Files for the HTML report tests: provenance marker files (generator text,
XMP source type, camera EXIF, signed C2PA) whose metadata carries script
payloads, files whose names are payloads, and broken files.

Every payload, if it ever ran in a browser, would set ``window.__pwned``."""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from aiidetect.testing.images import bomb_png, jpeg_bytes, noise_rgb

P_SCRIPT = "<script>window.__pwned='script'</script>"
P_IMG = "<img src=x onerror=\"window.__pwned='img'\">"
P_JS = "javascript:window.__pwned='js'"
P_STYLE = "</style><script>window.__pwned='style'</script><style>"
P_SVG = "<svg onload=\"window.__pwned='svg'\"></svg>"
PAYLOADS = (P_SCRIPT, P_IMG, P_JS, P_STYLE, P_SVG)

# File names cannot hold "/", so the closing-tag payloads travel in metadata.
NAME_PAYLOADS = ("<img src=x onerror=window.__pwned=1>.png", "javascript:window.__pwned=2.png",
                 "<script>window.__pwned=3<.script>.jpg", "\"'><svg onload=window.__pwned=4>.jpg")


def _png(img: Image.Image, texts=None, itxt=None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (texts or {}).items():
        info.add_text(k, v)
    for k, v in (itxt or {}).items():
        info.add_itxt(k, v, zip=True)
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _xmp(source_type: str, tool: str) -> str:
    esc = tool.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
            'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="{esc}">'
            f'<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/{source_type}'
            '</Iptc4xmpExt:DigitalSourceType></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def _c2pa(img: Image.Image) -> bytes | None:
    """A signed C2PA manifest (test CA made here) whose title and generator name are payloads;
    None when c2pa-python or cryptography is not installed."""
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return None
    from .c2pa_signing import make_signer

    c2pa, signer = make_signer()
    manifest = {"claim_generator_info": [{"name": P_SCRIPT, "version": P_STYLE}], "title": P_IMG,
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "softwareAgent": P_JS,
                     "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"}]}}]}
    src, out = io.BytesIO(), io.BytesIO()
    img.save(src, "JPEG")
    src.seek(0)
    with c2pa.Builder(manifest) as b:
        b.sign(signer, "image/jpeg", src, out)
    return out.getvalue()


def make_report_corpus(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    z: dict[str, Path] = {}
    img = noise_rgb(96, 80, seed=5)
    a1111 = (f"a lighthouse {P_SCRIPT} at dusk {P_STYLE}\nNegative prompt: {P_IMG}\n"
             f"Steps: 28, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 96x80, Model: {P_SVG}, Version: {P_JS}")
    z["a1111"] = d / "a1111.png"
    z["a1111"].write_bytes(_png(img, {"parameters": a1111}))
    comfy = {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 8, "sampler_name": "euler",
                                                        "model": ["4", 0]}},
             "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": P_STYLE}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": P_SCRIPT + " " + P_IMG}}}
    z["comfyui"] = d / "comfyui.png"
    z["comfyui"].write_bytes(_png(img, {"prompt": json.dumps(comfy)}))
    z["xmp"] = d / "xmp-ai.png"
    z["xmp"].write_bytes(_png(img, itxt={"XML:com.adobe.xmp": _xmp("trainedAlgorithmicMedia", P_STYLE + P_JS)}))
    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x0131] = P_SCRIPT, P_IMG, P_STYLE
    z["camera"] = d / "camera.jpg"
    z["camera"].write_bytes(jpeg_bytes(img, exif=ex.tobytes()))
    c2 = _c2pa(img)
    if c2 is not None:
        z["c2pa"] = d / "c2pa-ai.jpg"
        z["c2pa"].write_bytes(c2)
    for k, name in enumerate(NAME_PAYLOADS):
        p = d / name
        if name.endswith(".png"):
            p.write_bytes(_png(noise_rgb(64, 48, seed=20 + k), {"parameters": P_SCRIPT}))
        else:
            p.write_bytes(jpeg_bytes(noise_rgb(64, 48, seed=20 + k)))
        z[f"name{k}"] = p
    full = jpeg_bytes(noise_rgb(256, 256, 1), quality=95)
    z["truncated"] = d / f"truncated {P_SVG[:12]}.jpg"
    z["truncated"].write_bytes(full[: len(full) // 2])
    z["empty"] = d / "empty.jpg"
    z["empty"].write_bytes(b"")
    z["bomb"] = d / "bomb.png"
    z["bomb"].write_bytes(bomb_png())
    return z


def hostile_records() -> list[dict]:
    """Saved-run records (as `aiidetect report` reads them) with payloads in every
    field a renderer might trust: path, reasons, evidence detail and data, C2PA
    fields, detector names and reasons, attribution labels, error messages."""
    ev = [{"id": "c2pa.ai-generated", "direction": "ai", "strength": 7.0, "decisive": True, "source": P_STYLE,
           "detail": f"signed by {P_SCRIPT}", "data": {"claim_generator": P_SCRIPT, "signer": P_IMG,
                                                       "actions": [{"action": P_JS, "softwareAgent": P_SVG}],
                                                       "ingredients": [{"title": P_STYLE}],
                                                       "validation_state": P_IMG}},
          {"id": "generator.parameters", "direction": "ai", "strength": 6.0, "decisive": True, "source": "PNG",
           "detail": P_IMG, "data": {"prompt": (P_SCRIPT + "\n") * 3, "model": P_JS}},
          {"id": "exif.camera", "direction": "real", "strength": 1.5, "decisive": False, "source": "EXIF",
           "detail": P_STYLE, "data": {P_SCRIPT: P_IMG}}]
    dets = {"metadata": {"status": "ok", "p_ai": 0.99, "score": 11.5, "score_kind": "llr", "reason": None,
                         "evidence": ev},
            f"mpft:{P_SCRIPT}": {"status": "ok", "p_ai": 0.8, "score": 1.4, "score_kind": "logit", "reason": None,
                                 "attribution": [{"label": P_IMG, "p": 0.7}, {"label": P_JS, "p": 0.2}]},
            "flow:x": {"status": "unavailable", "p_ai": None, "score": None, "score_kind": None, "reason": P_STYLE}}
    base = {"schema": "1.0", "sha256": "0" * 64, "size_bytes": 123, "format": P_SVG, "width": 10, "height": 10,
            "image": {"mode": P_JS}}
    return [
        {**base, "file": f"{P_STYLE}/{P_SCRIPT}.png", "verdict": "ai-generated", "p_ai": 0.99, "detectors": dets,
         "reasons": [P_SCRIPT, P_IMG], "error": None},
        {**base, "file": P_JS, "verdict": "uncertain", "p_ai": 0.5, "detectors": dets, "reasons": [P_STYLE],
         "error": None},
        {**base, "file": P_IMG, "verdict": "error", "p_ai": None, "detectors": {}, "reasons": [],
         "error": {"code": P_SVG, "message": P_SCRIPT}},
        {**base, "file": "\udcff" + P_SVG, "verdict": P_SCRIPT, "p_ai": "NaN", "detectors": {"m": P_STYLE},
         "reasons": [], "error": None},
    ]
