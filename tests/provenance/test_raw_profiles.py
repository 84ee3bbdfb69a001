"""ImageMagick's 'Raw profile type' PNG text chunks (a JPEG's or TIFF's EXIF, XMP, IPTC and 8BIM
profiles kept as hex when it converts to PNG) and Photoshop files' image resources: read by the same
readers as the JPEG copies, named by their chunk, and counted once with any other copy."""
from __future__ import annotations

import zlib
from pathlib import Path

from PIL import Image

from aiidetect.provenance import analyze
from aiidetect.provenance.containers import MAX_PROFILE_CHUNKS, MAX_TEXT_BYTES, MAX_TEXTS, walk
from aiidetect.testing.hostile import (iim_dataset, image_resource, png_chunk, png_with, psd, raw_profile_chunk,
                                       raw_profile_text)

DATA = Path(__file__).parent / "data"
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def camera_exif() -> bytes:
    """An APP1 EXIF payload ('Exif\\0\\0' + TIFF), as ImageMagick keeps a JPEG's exif profile."""
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Canon", "Canon EOS 7D"
    ex.get_ifd(0x8769).update({0x829A: 1 / 125, 0x829D: 11.0})
    return ex.tobytes()


def xmp(body: str) -> bytes:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            f'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" {body}/></rdf:RDF></x:xmpmeta>').encode()


def _run(data: bytes):
    rep = analyze(data, "x", options={"watermark": "never"})
    assert not [e for e in rep.errors if e.startswith("internal")], rep.errors
    return rep


def _ids(rep) -> dict[str, object]:
    return {e.id: e for e in rep.evidence}


def test_camera_exif_in_a_raw_profile_is_camera_evidence():
    for name, ctype in (("exif", b"zTXt"), ("APP1", b"tEXt"), ("exif", b"iTXt")):
        rep = _run(png_with([raw_profile_chunk(name, camera_exif(), ctype=ctype)]))
        cam = _ids(rep)["exif.camera"]
        assert cam.direction == "real" and cam.strength == 1.2, cam
        assert cam.source == f"PNG {ctype.decode()} 'Raw profile type {name}'"
        assert rep.facts["exif"]["make"] == "Canon"
        assert not rep.errors


def test_an_ai_declaration_in_a_raw_xmp_profile_decides():
    pk = xmp(f'Iptc4xmpExt:DigitalSourceType="{TRAINED}"')
    for name, blob in (("xmp", pk), ("APP1", b"http://ns.adobe.com/xap/1.0/\x00" + pk)):
        rep = _run(png_with([raw_profile_chunk(name, blob)]))
        e = _ids(rep)["xmp.ai-source-type"]
        assert e.decisive and e.source == f"PNG zTXt 'Raw profile type {name}'"


def test_iim_in_raw_iptc_and_8bim_profiles_is_read_once_and_counted_once_with_xmp():
    block = iim_dataset(2, 0, b"\x00\x04") + iim_dataset(2, 65, b"Midjourney") + iim_dataset(2, 80, b"A. Person")
    data = png_with([raw_profile_chunk("8bim", image_resource(0x0404, block)),
                     raw_profile_chunk("iptc", block),
                     raw_profile_chunk("xmp", xmp('xmp:CreatorTool="Midjourney"'))])
    rep = _run(data)
    assert [f["where"] for f in rep.facts["iptc"]] == ["PNG zTXt 'Raw profile type 8bim' resource 0x0404"]
    assert rep.facts["iptc"][0]["by_line"] == ["A. Person"]
    ev = _ids(rep)
    weighed = [e for e in rep.evidence if e.strength > 0]
    assert [e.id for e in weighed] == ["xmp.generator-tool"] and weighed[0].strength == 3.0
    assert ev["iptc.program-generator"].strength == 0 and ev["iptc.program-generator"].data["corroborates"] == \
        "xmp.generator-tool"


def test_the_8bim_profile_hands_its_exif_and_xmp_resources_on():
    irb = (image_resource(0x0422, camera_exif()[6:]) +
           image_resource(0x0424, xmp(f'Iptc4xmpExt:DigitalSourceType="{TRAINED}"')))
    rep = _run(png_with([raw_profile_chunk("8bim", b"Photoshop 3.0\x00" + irb)]))
    ev = _ids(rep)
    assert ev["exif.camera"].source == "PNG zTXt 'Raw profile type 8bim' resource 0x0422"
    assert ev["xmp.ai-source-type"].source == "PNG zTXt 'Raw profile type 8bim' resource 0x0424"


def test_a_hostile_length_field_sizes_nothing_and_the_hex_present_is_read():
    text = raw_profile_text("exif", camera_exif(), declared=999_999_999_999)
    rep = _run(png_with([raw_profile_chunk("exif", text=text)]))
    assert "exif.camera" in _ids(rep)
    assert any("declares 999999999999 bytes but holds" in e for e in rep.errors), rep.errors
    # A length of thousands of digits is no raw profile (Python refuses to parse such an int anyway).
    rep = _run(png_with([raw_profile_chunk("exif", text="\nexif\n" + "9" * 5000 + "\n00\n")]))
    assert any("not a raw profile" in e for e in rep.errors) and "exif" not in rep.facts


def test_invalid_or_odd_hex_is_refused_with_a_line():
    good = raw_profile_text("exif", camera_exif())
    for text, why in ((good[:-20] + "zz" + good[-18:], "'z' at hex digit"),
                      (good.rstrip("\n") + "a\n", "odd number of hex digits"),
                      ("exif\n  10\n" + "00" * 10, "not a raw profile")):
        rep = _run(png_with([raw_profile_chunk("exif", text=text)]))
        assert "exif" not in rep.facts and "exif.camera" not in _ids(rep)
        assert any(why in e and "'Raw profile type exif'" in e for e in rep.errors), (why, rep.errors)


def test_a_raw_profile_in_a_ztxt_bomb_costs_a_line():
    head = b"\nxmp\n" + b"%8d\n" % 10**9
    bomb = zlib.compress(head + b"0" * (MAX_TEXT_BYTES + 1024), 9)
    data = png_with([png_chunk(b"zTXt", b"Raw profile type xmp\x00\x00" + bomb)])
    b = walk(data)
    assert not b.xmp and any(f"over {MAX_TEXT_BYTES} bytes of hex" in e for e in b.errors), b.errors


def test_raw_profiles_are_capped_but_not_pushed_out_by_junk_text():
    junk = [png_chunk(b"tEXt", b"junk\x00j") for _ in range(MAX_TEXTS + 5)]
    data = png_with(junk + [raw_profile_chunk("exif", camera_exif())])
    assert [w for _, w in walk(data).exif] == ["PNG zTXt 'Raw profile type exif'"]
    many = [raw_profile_chunk("xmp", xmp('xmp:CreatorTool="x"'), ctype=b"tEXt")] * (MAX_PROFILE_CHUNKS + 3)
    b = walk(png_with(many))
    assert len(b.xmp) == MAX_PROFILE_CHUNKS
    assert any(f"more than {MAX_PROFILE_CHUNKS} XMP and raw profile chunks" in e for e in b.errors)


def test_xmp_chunks_that_inflate_to_megabytes_are_capped_before_inflating():
    """A 4 KB zlib bomb per XMP iTXt chunk, 100 times: each inflated to 4 MB and was kept (400 MB)."""
    bomb = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(b" " * MAX_TEXT_BYTES, 9))
    b = walk(png_with([bomb] * (MAX_PROFILE_CHUNKS + 20)))
    assert len(b.xmp) == MAX_PROFILE_CHUNKS
    assert any(f"more than {MAX_PROFILE_CHUNKS} XMP and raw profile chunks" in e for e in b.errors)


def test_an_imagemagick_converted_camera_photo_keeps_its_iptc_and_xmp():
    """`convert Canon_EOS_7D.jpg -resize 24x24 out.png` (ImageMagick 6.9.11-60, dev set photo): EXIF goes
    to an eXIf chunk, the 8BIM, IPTC and XMP profiles to zTXt raw profiles."""
    rep = _run((DATA / "imagemagick_canon_eos_7d.png").read_bytes())
    assert not rep.errors
    assert [f["where"] for f in rep.facts["iptc"]] == ["PNG zTXt 'Raw profile type 8bim' resource 0x0404"]
    assert rep.facts["iptc"][0]["by_line"] == ["Peter Bemmann"]
    assert rep.facts["iptc"][0]["caption"] == "mit blauem Kleid"
    (x,) = rep.facts["xmp"]
    assert x["where"] == "PNG zTXt 'Raw profile type xmp'" and x["creator_tools"] == ["Adobe Photoshop Lightroom"]
    assert _ids(rep)["exif.camera"].source == "PNG eXIf"


def test_dev_pngs_with_raw_profiles_read_as_metadata_extractor_shows(dev_dir):
    rep = _run((dev_dir / "formats/png/Issue_204_(dotnet).png").read_bytes())
    assert rep.facts["xmp"][0]["creator_tools"] == ["https://validoo.se"]
    rep = _run((dev_dir / "formats/png/Issue_280_(dotnet).png").read_bytes())
    assert [f["where"] for f in rep.facts["iptc"]] == ["PNG zTXt 'Raw profile type iptc'"]


def test_psd_image_resources_are_read():
    block = iim_dataset(2, 65, b"Stable Diffusion")
    irb = (image_resource(0x0404, block) + image_resource(0x0422, camera_exif()[6:])
           + image_resource(0x0424, xmp(f'Iptc4xmpExt:DigitalSourceType="{TRAINED}"')))
    rep = _run(psd(irb))
    assert (rep.format, rep.width, rep.height) == ("PSD", 8, 8)
    ev = _ids(rep)
    assert ev["xmp.ai-source-type"].decisive and ev["xmp.ai-source-type"].source == "PSD resource 0x0424"
    assert ev["iptc.program-generator"].source == "PSD resource 0x0404"
    assert ev["exif.camera"].source == "PSD resource 0x0422"


def test_empty_resources_are_no_broken_blocks():
    for data in (psd(image_resource(0x0404, b"") + image_resource(0x0424, b"\x00" * 4)),
                 png_with([raw_profile_chunk("8bim", image_resource(0x0404, b""))])):
        assert not _run(data).errors


def test_a_broken_psd_costs_a_line():
    whole = psd(image_resource(0x0404, iim_dataset(2, 65, b"Midjourney")))
    for data, why in ((whole[:20], "truncated header"), (whole[:26] + b"\xff" * 4, "colour mode data"),
                      (whole[:34] + b"8BIM\x04\x04", "overrun the file")):
        rep = _run(data)
        assert rep.format == "PSD" and any(why in e for e in rep.errors), (why, rep.errors)


def test_hex_split_in_tiny_words_is_decoded_without_an_object_per_word():
    """'00 00 00 ...': whitespace was dropped by splitting into words, one string per two digits: a 75 KB PNG of
    16 such 4 MB zTXt profiles took 1.5 s and 130 MB in the walker (0.3 s for ImageMagick's 72-digit lines)."""
    import tracemalloc

    from aiidetect.provenance.containers import raw_profile_bytes

    text = "\nexif\n1\n" + "00 " * 300_000
    tracemalloc.start()
    try:
        declared, blob = raw_profile_bytes(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (declared, blob) == (1, bytes(300_000))
    assert peak < 3 * len(text), peak


def test_a_broken_psd_or_a_psb_is_a_photoshop_file_not_an_unknown_format():
    """`meta` read nothing of them and `scan` said 'not an image format aiidetect decodes' beside the metadata
    it had read (an AI declaration in a PSB's XMP was a verdict `error`): a known format with bad pixels keeps
    its metadata, as a truncated JPEG does."""
    import pytest

    from aiidetect.decode import DecodeFailure, decode_bytes, identify

    whole = psd(image_resource(0x0424, xmp(f'Iptc4xmpExt:DigitalSourceType="{TRAINED}"')))
    psb = whole[:4] + b"\x00\x02" + whole[6:]
    for data, why in ((whole[:60], "PSD header present"), (psb, "PSB")):
        identify(data)      # no unsupported-format: meta goes on to read the metadata
        with pytest.raises(DecodeFailure) as exc:
            decode_bytes(data)
        assert exc.value.code == "decode-error" and why in exc.value.message, exc.value.message
    assert _ids(_run(psb))["xmp.ai-source-type"].decisive


def test_a_raw_profile_exif_before_the_png_exif_chunk_is_not_taken_for_the_files_exif():
    # A camera's EXIF pasted as a raw profile ahead of a generator's eXIf chunk (Software: Midjourney): the first
    # block was the EXIF, so the file counted a camera (-1.2) where Pillow and browsers show Midjourney.
    from PIL import Image

    from aiidetect.provenance import analyze
    from aiidetect.testing.hostile import png_chunk, png_with, raw_profile_chunk

    mj, cam = Image.Exif(), Image.Exif()
    mj[0x0131] = "Midjourney"
    cam[0x010F], cam[0x0110] = "Canon", "Canon EOS 5D"
    cam.get_ifd(0x8769).update({0x829A: (1, 125), 0x829D: (28, 10), 0x8827: 200})
    chunks = [raw_profile_chunk("exif", cam.tobytes()[6:]), png_chunk(b"eXIf", mj.tobytes()[6:])]
    for order in (chunks, chunks[::-1]):
        rep = analyze(png_with(order), "x.png", options={"watermark": "never"})
        ev = {e.id: e for e in rep.evidence}
        assert rep.facts["exif"]["where"] == "PNG eXIf" and "exif.camera" not in ev
        assert ev["exif.software-generator"].strength == 3.0
        assert "EXIF make: only in PNG zTXt 'Raw profile type exif'" in ev["metadata.conflict"].detail
