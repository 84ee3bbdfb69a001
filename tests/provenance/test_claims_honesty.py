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
    # the camera EXIF beside it is still reported, as what it is
    assert "can be copied" in ev["exif.camera"]["detail"]
