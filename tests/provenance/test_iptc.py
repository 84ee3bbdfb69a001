"""IPTC IIM (JPEG APP13 'Photoshop 3.0', TIFF tags 33723/34377): what it says is read and shown, a
generator name in OriginatingProgram weighs what one in EXIF Software does, and hostile blocks cost
nothing but an error line. The files are built here, byte by byte."""
from __future__ import annotations

import io
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aiidetect.provenance import STRENGTH, analyze
from aiidetect.testing.hostile import iim_dataset as dataset
from aiidetect.testing.hostile import image_resource as resource
from aiidetect.testing.hostile import with_jpeg_segments
from aiidetect.testing.hostile import xmp_creator_tool as _xmp_tool

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIG = b"Photoshop 3.0\x00"


# --- builders ---------------------------------------------------------------------------------------

def iim(**fields: str | bytes) -> bytes:
    """iim(program="Midjourney", by_line="A. Person", ...) in record 2, after a record version."""
    ids = {"charset": (1, 90), "date": (2, 55), "time": (2, 60), "program": (2, 65), "version": (2, 70),
           "by_line": (2, 80), "credit": (2, 110), "copyright": (2, 116), "caption": (2, 120)}
    out = dataset(2, 0, b"\x00\x04")
    for k, v in fields.items():
        out += dataset(*ids[k], v.encode("utf-8") if isinstance(v, str) else v)
    return out


def jpeg(*segs: tuple[int, bytes]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 80), (120, 60, 30)).save(buf, "JPEG", quality=80)
    return with_jpeg_segments(buf.getvalue(), segs)


def app13(irb: bytes) -> tuple[int, bytes]:
    return 0xED, SIG + irb


def app13_split(irb: bytes, size: int = 65_000) -> list[tuple[int, bytes]]:
    """Image resources over one segment, split as Photoshop does: each part behind the signature."""
    return [app13(irb[i:i + size]) for i in range(0, len(irb), size)]


def with_iim(block: bytes) -> bytes:
    return jpeg(app13(resource(0x03ED, b"\x00" * 16) + resource(0x0404, block, name=b"IPTC")))


def _run(data: bytes):
    rep = analyze(data, "x", options={"watermark": "never"})
    assert not [e for e in rep.errors if e.startswith("internal")], rep.errors
    return rep


def _llr(rep) -> float:
    return sum(e.llr for e in rep.evidence)


# --- what it reads ----------------------------------------------------------------------------------

def test_a_generator_name_in_originating_program_weighs_as_in_exif_software():
    rep = _run(with_iim(iim(program="Midjourney", version="6.1")))
    ev = [e for e in rep.evidence if e.id == "iptc.program-generator"]
    assert len(ev) == 1 and ev[0].direction == "ai" and not ev[0].decisive
    assert ev[0].strength == STRENGTH["exif.software-generator"] == 3.0
    assert ev[0].source == "JPEG APP13" and "Midjourney" in ev[0].detail
    assert rep.facts["iptc"][0]["originating_program"] == "Midjourney"
    assert rep.facts["iptc"][0]["program_version"] == "6.1"
    # the same rule as EXIF Software: words, not fragments ("dall e" inside "Randall Editor")
    assert not any(e.id == "iptc.program-generator" for e in _run(with_iim(iim(program="Randall Editor"))).evidence)


def test_agency_fields_are_facts_with_no_weight():
    fields = dict(program="Photo Mechanic", version="6.0", by_line="Jane Doe", credit="Agency X / Reuters",
                  copyright="(c) 2024 Jane Doe", date="20240131", time="142233+0100",
                  caption="Protesters gather outside parliament.")
    rep = _run(with_iim(iim(**fields)))
    f = rep.facts["iptc"][0]
    assert f == {"originating_program": "Photo Mechanic", "program_version": "6.0", "by_line": ["Jane Doe"],
                 "credit": "Agency X / Reuters", "copyright_notice": "(c) 2024 Jane Doe", "date_created": "20240131",
                 "time_created": "142233+0100", "caption": "Protesters gather outside parliament.", "datasets": 9,
                 "where": "JPEG APP13"}
    bare = _run(jpeg())
    assert [e.id for e in rep.evidence] == [e.id for e in bare.evidence] and _llr(rep) == _llr(bare)


def test_the_meta_command_shows_the_iptc_fields(tmp_path):
    from tests.conftest import run_cli_in_process

    p = tmp_path / "agency.jpg"
    p.write_bytes(with_iim(iim(by_line="Jane Doe", credit="Agency X", program="Midjourney")
                           + dataset(2, 80, b"A. N. Other")))
    r = run_cli_in_process("meta", "--watermark", "never", str(p), env={"COLUMNS": "200"})
    line = "IPTC (JPEG APP13): originating_program=Midjourney, by_line=Jane Doe; A. N. Other, credit=Agency X"
    assert line in r.stdout
    assert "iptc.program-generator" in r.stdout


def test_character_sets():
    utf8 = _run(with_iim(iim(charset=b"\x1b%G", by_line="Zoë Ångström", caption=b"bad \xff utf-8")))
    f = utf8.facts["iptc"][0]
    assert f["by_line"] == ["Zoë Ångström"] and f["coded_character_set"] == "UTF-8"
    assert f["caption"] == "bad \ufffd utf-8"
    # no 1:90: ISO 8859-1, the IIM default (every byte maps: nothing to fail on); controls dropped
    latin = _run(with_iim(iim(by_line=b"Zo\xeb \x00\x07Str\xf6m")))
    assert latin.facts["iptc"][0]["by_line"] == ["Zoë Ström"]


def test_tiff_tags_33723_and_34377_read_once():
    bare = iim(by_line="Jane Doe", program="Stable Diffusion")
    block = bare + b"\x00" * (-len(bare) % 4)   # Photoshop pads to whole LONGs
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF", tiffinfo={33723: block, 34377: resource(0x0404, bare)})
    data = bytearray(buf.getvalue())
    # Photoshop types 33723 as LONG (Pillow then hands back numbers): the same bytes, read raw.
    ent = data.find(struct.pack("<HH", 33723, 7))
    assert ent > 0 and len(block) > len(bare)
    data[ent + 2:ent + 8] = struct.pack("<HI", 4, len(block) // 4)
    rep = _run(bytes(data))
    assert [f["where"] for f in rep.facts["iptc"]] == ["TIFF IPTC/NAA tag"]   # the 34377 copy is the same IIM
    assert rep.facts["iptc"][0]["by_line"] == ["Jane Doe"]
    assert [e.id for e in rep.evidence].count("iptc.program-generator") == 1


def test_resources_split_over_app13_segments_are_joined():
    irb = resource(0x040C, b"T" * 70_000) + resource(0x0404, iim(credit="Agency X"))
    rep = _run(jpeg(*app13_split(irb)))
    assert rep.facts["iptc"][0]["credit"] == "Agency X"
    assert rep.facts["iptc"][0]["where"] == "JPEG APP13 (2 segments)"


# --- one claim, one weight --------------------------------------------------------------------------

def test_a_tool_named_in_xmp_and_iim_counts_once():
    xmp_only = _run(jpeg(_xmp_tool("Midjourney")))
    both = _run(jpeg(_xmp_tool("Midjourney"), app13(resource(0x0404, iim(program="Midjourney")))))
    # the IIM copy is listed with no weight: the same ids with it added, the same sum
    assert [e.id for e in both.evidence if e.id != "iptc.program-generator"] == [e.id for e in xmp_only.evidence]
    assert [e.llr for e in both.evidence if e.id == "iptc.program-generator"] == [0.0]
    assert _llr(both) == _llr(xmp_only)
    assert both.facts["iptc"][0]["originating_program"] == "Midjourney"   # still shown


def test_a_tool_named_in_exif_software_and_iim_counts_once():
    ex = Image.Exif()
    ex[0x0131] = "Adobe Firefly"
    buf = io.BytesIO()
    Image.new("RGB", (96, 80)).save(buf, "JPEG", exif=ex)
    b = buf.getvalue()
    seg = b"\xff\xed" + struct.pack(">H", len(SIG) + 2 + len(resource(0x0404, iim(program="Adobe Firefly")))) + SIG + \
        resource(0x0404, iim(program="Adobe Firefly"))
    rep = _run(b[:2] + seg + b[2:])
    ev = {e.id: e for e in rep.evidence}
    assert ev["exif.software-generator"].llr == 3.0
    # listed where it was found, with no weight of its own (docs/provenance.md, "One claim counts once")
    assert ev["iptc.program-generator"].llr == 0.0 and ev["iptc.program-generator"].direction == "neutral"
    assert ev["iptc.program-generator"].data["corroborates"] == "exif.software-generator"
    assert rep.facts["iptc"][0]["originating_program"] == "Adobe Firefly"   # read, and shown


def test_the_same_iim_repeated_is_one_block_and_one_weight():
    block = resource(0x0404, iim(program="Midjourney"))
    rep = _run(jpeg(app13(block * 3), app13(block)))
    assert len(rep.facts["iptc"]) == 1
    assert [e.id for e in rep.evidence].count("iptc.program-generator") == 1


def test_a_second_originating_program_cannot_hide_a_generator_name():
    rep = _run(with_iim(iim(program="Adobe Photoshop") + dataset(2, 65, b"DALL-E 3")))
    assert rep.facts["iptc"][0]["originating_programs"] == ["Adobe Photoshop", "DALL-E 3"]
    assert any(e.id == "iptc.program-generator" for e in rep.evidence)


# --- hostile blocks ---------------------------------------------------------------------------------

def test_truncated_blocks():
    good = iim(by_line="Jane Doe", caption="x" * 300)
    for irb in (resource(0x0404, good)[:9],                            # cut inside the resource header
                resource(0x0404, good)[:-100],                         # resource overruns the block
                resource(0x0404, good[:-100])):                        # dataset overruns the resource
        rep = _run(jpeg(app13(irb)))
        assert any("IPTC" in e and ("truncated" in e or "overruns" in e) for e in rep.errors), rep.errors
    # what came before the cut is still read
    rep = _run(jpeg(app13(resource(0x0404, good[:-100]))))
    assert rep.facts["iptc"][0]["by_line"] == ["Jane Doe"] and "caption" not in rep.facts["iptc"][0]


def test_extended_lengths_beyond_reason_are_refused():
    for head in (b"\x1c\x02\x78\x80\x08" + b"\xff" * 8,               # an 8-byte length
                 b"\x1c\x02\x78\xff\xff",                              # a 32,767-byte length field
                 b"\x1c\x02\x78\x80\x04\xff\xff\xff\xff"):             # 4 GB of caption in a small block
        rep = _run(with_iim(iim(by_line="Jane Doe") + head + b"tail"))
        assert any("IPTC" in e and ("length" in e or "overruns" in e) for e in rep.errors), rep.errors
        assert rep.facts["iptc"][0]["by_line"] == ["Jane Doe"]
    ok = _run(with_iim(b"\x1c\x02\x78\x80\x02\x00\x05hello"))          # a legal extended dataset
    assert ok.facts["iptc"][0]["caption"] == "hello"


def test_a_hundred_thousand_datasets_stop_at_the_cap():
    from aiidetect.provenance.iptc import MAX_DATASETS

    flood = dataset(2, 80, b"x") * 100_000 + dataset(2, 65, b"Midjourney")
    rep = _run(jpeg(*app13_split(resource(0x0404, flood))))
    f = rep.facts["iptc"][0]
    assert f["datasets"] == MAX_DATASETS == 10_000
    assert any(f"more than {MAX_DATASETS} datasets" in e for e in rep.errors)
    assert f["by_line"] == ["x"]     # repeated values kept once


def test_a_flood_of_resources_stops_at_the_cap():
    from aiidetect.provenance.iptc import MAX_RESOURCES

    rep = _run(jpeg(app13(resource(0x0400, b"") * 5_000 + resource(0x0404, iim(credit="late")))))
    assert any(f"more than {MAX_RESOURCES} image resources" in e for e in rep.errors)
    assert "iptc" not in rep.facts


def test_odd_sizes_with_and_without_the_pad_byte():
    block = iim(credit="Agency X")
    for pad in (True, False):
        irb = resource(0x0401, b"abc", pad=pad) + resource(0x0404, block)
        rep = _run(jpeg(app13(irb)))
        assert rep.facts["iptc"][0]["credit"] == "Agency X", (pad, rep.errors)
    odd_name = resource(0x0401, b"ab", name=b"ab") + resource(0x0404, block, name=b"x")
    assert _run(jpeg(app13(odd_name))).facts["iptc"][0]["credit"] == "Agency X"


@FAST
@given(st.binary(max_size=800))
def test_the_parsers_never_raise_on_arbitrary_bytes(payload):
    from aiidetect.provenance import iptc

    for blob in (payload, SIG + payload, b"8BIM" + payload, b"\x1c" + payload):
        blocks, errors = iptc.iim_blocks(blob, "fuzz")
        assert all(isinstance(e, str) for e in errors)
        for data, where in blocks:
            f = iptc.parse_iim(data, where)
            assert f.datasets <= iptc.MAX_DATASETS
            f.to_dict()
    f = iptc.parse_iim(payload, "fuzz")
    assert f.datasets <= len(payload) // 5 + 1


_DATASET = st.tuples(st.sampled_from([1, 2, 8, 255]), st.sampled_from([0, 55, 65, 80, 90, 120, 200]),
                     st.binary(max_size=60), st.sampled_from(["ok", "lie", "ext", "ext-huge"]))


@FAST
@given(st.lists(_DATASET, max_size=12), st.booleans(), st.integers(0, 200))
def test_structured_blocks_never_break_analyze(datasets, pad, cut):
    raw = b""
    for rec, ds, val, kind in datasets:
        if kind == "ok":
            raw += dataset(rec, ds, val)
        elif kind == "lie":
            raw += b"\x1c" + bytes([rec, ds]) + struct.pack(">H", len(val) + 1000) + val
        elif kind == "ext":
            raw += b"\x1c" + bytes([rec, ds]) + b"\x80\x04" + struct.pack(">I", len(val)) + val
        else:
            raw += b"\x1c" + bytes([rec, ds]) + b"\x80\x04\xff\xff\xff\xff" + val
    irb = resource(0x0401, b"odd", pad=pad) + resource(0x0404, raw)
    rep = _run(jpeg(app13(irb[:len(irb) - cut] if cut < len(irb) else irb)))
    # read, or said why not (a cut that takes the whole IIM resource leaves nothing to say; one that
    # leaves less than its id is the image resource block's error: nothing there names IPTC)
    assert "iptc" in rep.facts or any("IPTC" in e for e in rep.errors) or cut >= len(raw) + 12 or any(
        e.startswith("Image resources (JPEG APP13): ") for e in rep.errors)


def test_the_dev_files_read_as_pillow_reads_them(dev_dir):
    """A peer check on real files: every dev JPEG/TIFF where Pillow's IptcImagePlugin finds IIM gives
    the same values here (Pillow's bytes decoded by the block's 1:90), and no verdict-bearing item."""
    from PIL import IptcImagePlugin

    from aiidetect.provenance.iptc import FIELDS

    seen = []
    for p in sorted([*dev_dir.glob("real/camera/*.jpg"), *dev_dir.glob("formats/tif/*.tif*")]):
        with Image.open(p) as im:
            peer = IptcImagePlugin.getiptcinfo(im)
        if not peer:
            continue
        rep = _run(p.read_bytes())
        ours = rep.facts["iptc"][0]
        utf8 = peer.get((1, 90)) == b"\x1b%G"
        for key, name in FIELDS.items():
            if key not in peer or name == "coded_character_set":
                continue
            vals = peer[key] if isinstance(peer[key], list) else [peer[key]]
            want = [v.decode("utf-8" if utf8 else "latin-1").strip() for v in vals]
            assert ours[name] == (want if name == "by_line" else want[0]), (p.name, name)
        assert not any(e.id.startswith("iptc.") for e in rep.evidence)
        seen.append(p.name)
    assert sorted(seen) == ["Canon_EOS_7D.jpg", "Issue_16.tif", "Issue_525.jpg", "Nikon_E995_(iptc).jpg",
                            "Nokia_Lumia_800.jpg"]


def test_a_byte_after_an_unpadded_resource_is_not_taken_for_its_pad():
    # hypothesis found it: an odd resource with no pad, then one stray byte, was read as a clean end
    rep = _run(jpeg(app13(resource(0x0401, b"odd", pad=False) + b"8")))
    assert any("no image resource at offset 15" in e for e in rep.errors), rep.errors


def test_repeated_tiff_iptc_tags_share_one_byte_cap(monkeypatch):
    # IFD0 may repeat tag 33723 up to the entry cap, every copy pointing at the same bytes: each was
    # sliced on its own (1,000 entries over one 8 MB block held 8 GB). All of them share the cap.
    from aiidetect.provenance import containers

    monkeypatch.setattr(containers, "MAX_IRB_BYTES", 1000)
    body = iim(program="Stable Diffusion").ljust(600, b"\x00")
    n = 50
    data_at = 8 + 2 + 12 * n + 4
    tiff = (b"II*\x00" + struct.pack("<IH", 8, n) + struct.pack("<HHII", 33723, 7, len(body), data_at) * n
            + b"\x00" * 4 + body)
    b = containers.walk(tiff)
    assert sum(len(blob) for blob, _ in b.iptc) <= 1000
    assert any("33723" in e and "1000 bytes" in e for e in b.errors)


def test_the_evidence_keeps_a_clipped_program_name():
    # The record keeps the first 4,000 characters of a text field, evidence `data` included
    # (docs/provenance.md): the program list in the evidence held all of a 30,000-character name.
    rep = _run(with_iim(iim(program="Midjourney " + "A" * 30_000)))
    item = next(e for e in rep.evidence if e.id == "iptc.program-generator")
    assert len(item.data["programs"][0]) == 4000
    assert item.data["truncated"] == {"programs[0]": 30_011}


def test_the_meta_table_shows_iim_text_as_written_and_says_what_was_cut(tmp_path):
    # A by-line cut at 4,000 characters was shown as if whole (its `truncated` key is by_line[0]),
    # and the terminal turned ":red_heart:" in a caption into an emoji: neither is what the file says.
    from tests.conftest import run_cli_in_process

    p = tmp_path / "agency.jpg"
    p.write_bytes(with_iim(iim(by_line="B" * 5000, caption="see :red_heart: here")))
    r = run_cli_in_process("meta", "--watermark", "never", str(p), env={"COLUMNS": "200"})
    assert "... (the first 4000 of 5000 characters)" in r.stdout
    assert "see :red_heart: here" in r.stdout


def test_zero_padding_at_the_end_of_one_segment_does_not_hide_the_next():
    # The segments are joined before the walk: zero padding after the last resource of one
    # segment (common, and harmless when it ends the data) stopped the walk before the next one.
    first = resource(0x0404, iim(by_line="Alpha")) + b"\x00\x00\x00"
    second = resource(0x0404, iim(program="Midjourney"))
    rep = _run(jpeg(app13(first), app13(second)))
    assert [f.get("by_line") for f in rep.facts["iptc"]] == [["Alpha"], None]
    assert "iptc.program-generator" in [e.id for e in rep.evidence]
    assert not [e for e in rep.errors if "IPTC" in e]


def test_windows_punctuation_reads_as_written_and_c1_controls_are_dropped():
    # Windows tools write their code page into IIM without 1:90: 0x93/0x94 quotes, 0x96 dash, 0x80
    # euro. Read as ISO 8859-1 they were C1 control characters (U+0093...), kept although "control
    # characters other than tab and line breaks are dropped" (docs/provenance.md).
    f = _run(with_iim(iim(caption=b"\x93Quoted\x94 \x96 \x80 5 \x81\x9d end"))).facts["iptc"][0]
    assert f["caption"] == "\u201cQuoted\u201d \u2013 \u20ac 5  end"
    g = _run(with_iim(iim(charset=b"\x1b%G", caption="a\u009b31mb\x7fc"))).facts["iptc"][0]
    assert g["caption"] == "a31mbc"


def test_a_resource_walk_error_names_the_block_it_concerns():
    # A PSD's broken EXIF or XMP resource was reported as "IPTC (PSD): ...".
    from aiidetect.provenance.containers import walk
    from aiidetect.testing.hostile import psd

    exif = resource(0x0422, b"II*\x00" + bytes(200))
    assert walk(psd(exif[:-100])).errors == ["EXIF (PSD): resource 0x0422 of 204 bytes overruns the block (104 left)"]
    xmp = resource(0x0424, b"<x:xmpmeta/>" * 20)
    assert walk(psd(xmp[:-40])).errors == ["XMP (PSD): resource 0x0424 of 240 bytes overruns the block (200 left)"]
    iim = resource(0x0404, dataset(2, 80, b"Jane Doe"))
    assert walk(psd(iim[:-4])).errors == ["IPTC (PSD): resource 0x0404 of 13 bytes overruns the block (10 left)"]
    # the walk itself, and resources no reader takes, are the image resource block's
    assert walk(psd(xmp + b"JUNK")).errors == [f"Image resources (PSD): no image resource at offset {len(xmp)}; "
                                               "the rest not read"]
    assert walk(psd(resource(0x03ED, bytes(16))[:-8])).errors == [
        "Image resources (PSD): resource 0x03ED of 16 bytes overruns the block (8 left)"]
