"""Malformed metadata never crashes: broken EXIF, truncated JUMBF, invalid XML,
oversized / deeply nested text chunks, zlib bombs. Each gives evidence or an
error entry, within bounded time and memory."""
from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aiidetect.metadata.detector import MetadataDetector
from aiidetect.provenance import analyze

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _jpeg(app_segments: list[tuple[int, bytes]] = ()) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (120, 60, 30)).save(buf, "JPEG", quality=80)
    base = buf.getvalue()
    segs = b"".join(b"\xff" + bytes([m]) + struct.pack(">H", min(len(p) + 2, 0xFFFF)) + p[:0xFFFD]
                    for m, p in app_segments)
    return base[:2] + segs + base[2:]


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "PNG")
    data = buf.getvalue()
    iend = data.rfind(b"IEND") - 4
    return data[:iend] + b"".join(_png_chunk(t, b) for t, b in chunks) + data[iend:]


def _run(data: bytes, budget_s: float = 10.0, **opts):
    t = time.perf_counter()
    rep = analyze(data, "fuzz", options=opts or None)
    assert time.perf_counter() - t < budget_s
    # the detector wraps the same call: it must produce a result too
    class S:
        path, image, info = "fuzz", None, {}
    S.data = data
    res = MetadataDetector(opts).predict([S()], [{}])[0]
    assert res.status == "ok"
    return rep


@FAST
@given(st.binary(min_size=0, max_size=600))
def test_random_exif_payloads(payload):
    for head in (b"Exif\x00\x00II*\x00", b"Exif\x00\x00MM\x00*", b"Exif\x00\x00"):
        _run(_jpeg([(0xE1, head + payload)]))
    _run(_png([(b"eXIf", b"II*\x00" + payload)]))


@FAST
@given(st.data())
def test_mutated_real_exif(data):
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Canon", "EOS"
    ex.get_ifd(0x8769)[0x829D] = 2.8
    blob = bytearray(ex.tobytes())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(6, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(blob)))
    _run(_jpeg([(0xE1, bytes(blob[:cut]))]))


@FAST
@given(st.text(max_size=400))
def test_invalid_xml(text):
    packet = ("http://ns.adobe.com/xap/1.0/\x00" + text).encode("utf-8")
    rep = _run(_jpeg([(0xE1, packet)]))
    assert rep.evidence or rep.errors or not text.strip()


def test_xml_bombs_and_depth():
    laughs = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
              '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&c;</x:xmpmeta>')
    rep = _run(_jpeg([(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + laughs.encode())]))
    assert any("XMP" in e for e in rep.errors)
    deep = "<a>" * 60000 + "</a>" * 60000
    rep = _run(_png([(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + deep.encode())]))
    assert rep.errors or rep.evidence is not None
    big = b"<x>" + b"y" * (3 * 1024 * 1024) + b"</x>"
    rep = _run(_png([(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + big)]))
    assert any("exceeds" in e for e in rep.errors)


def test_deeply_nested_and_oversized_text_chunks():
    nested = "[" * 200_000 + "]" * 200_000
    rep = _run(_png([(b"tEXt", b"prompt\x00" + nested.encode()), (b"tEXt", b"workflow\x00" + b"{" * 100_000)]))
    assert any("generator" in e for e in rep.errors)
    assert not any(e.id == "generator.parameters" for e in rep.evidence)
    huge = b"parameters\x00" + b"x, " * (3 * 1024 * 1024) + b"\nSteps: 20, Seed: 1"
    many = [(b"tEXt", b"k%d\x00" % i + b"z" * 1_000_000) for i in range(20)]
    tracemalloc.start()
    rep = _run(_png([(b"tEXt", huge)] + many))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 400 * 1024 * 1024
    assert any("exceed" in e for e in rep.errors)


def test_zlib_bombs_are_capped():
    comp = zlib.compressobj(9)
    bomb = b"".join(comp.compress(b"\x00" * (1 << 20)) for _ in range(512)) + comp.flush()  # 512 MiB of zeros
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    rep = _run(_png([(b"zTXt", b"parameters\x00\x00" + bomb),
                     (b"iTXt", b"prompt\x00\x01\x00\x00\x00" + bomb)]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024 * 1024
    # read up to the cap (a padded generator chunk must not vanish), and said so
    assert sum("bytes; the first" in e for e in rep.errors) == 2
    assert any(e.id == "metadata.malformed" for e in rep.evidence)


@FAST
@given(st.binary(max_size=300), st.integers(0, 3))
def test_truncated_and_garbled_jumbf(payload, variant):
    box = struct.pack(">I", 8 + len(payload) + 17) + b"jumb" + struct.pack(">I", 25) + b"jumdc2pa" + payload
    if variant == 0:
        data = _jpeg([(0xEB, b"JP\x00\x00\x00\x00\x00\x01" + box)])
    elif variant == 1:
        data = _png([(b"caBX", box)])
    elif variant == 2:
        data = _jpeg([(0xEB, b"JP" + payload)]) + b"jumbc2pa"
    else:
        data = _png([(b"caBX", box[: len(box) // 2])])
    rep = _run(data)
    assert not any(e.decisive for e in rep.evidence)


@FAST
@given(st.binary(min_size=0, max_size=2000))
def test_random_bytes_any_container(tail):
    for head in (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x10\x00\x00\x00WEBP", b"II*\x00",
                 b"\x00\x00\x00\x18ftypheic"):
        _run(head + tail)


A1111 = "a cat\nSteps: 20, Sampler: Euler a, Seed: 1, Model: sd15"


def test_many_chunks_in_front_do_not_hide_generator_parameters():
    # 10,001 empty private chunks stopped the walk (then capped at 10,000) silently: Pillow and every
    # viewer still showed the 'parameters' behind them, the record had nothing and no error.
    junk = [(b"prIv", b"")] * 10_001
    rep = _run(_png(junk + [(b"tEXt", b"parameters\x00" + A1111.encode())]))
    assert any(e.id == "generator.parameters" for e in rep.evidence), rep.errors


def test_the_chunk_cap_is_said(monkeypatch):
    from aiidetect.provenance import containers

    monkeypatch.setattr(containers, "PNG_MAX_CHUNKS", 50)
    rep = _run(_png([(b"prIv", b"")] * 60))
    assert any("more than 50 chunks" in e for e in rep.errors)


def test_a_flood_of_text_chunks_is_bounded_and_said():
    flood = [(b"tEXt", b"parameters\x00Steps: 1")] * 100_000 + [(b"tEXt", b"prompt\x00{}")]
    rep = _run(_png(flood), budget_s=3.0)
    assert any("more than 1000 text chunks" in e for e in rep.errors)
    broken = _run(_png([(b"tEXt", b"no keyword")] * 5_000))
    assert 1 <= len(broken.errors) <= 101     # before: one line per chunk in the record


def test_text_after_iend_is_not_read_but_said():
    data = _png([]) + _png_chunk(b"tEXt", b"parameters\x00" + A1111.encode())
    rep = _run(data)
    assert not any(e.id == "generator.parameters" for e in rep.evidence)   # not part of the image, as in viewers
    assert any("after IEND" in e for e in rep.errors)


# Gaps the byte-level test above leaves: its WebP header declares a 16-byte RIFF, so the chunk walk
# never ran on what follows; extended XMP parts (GUID, total, offset) were never fuzzed.
_WEBP_CHUNKS = st.sampled_from([b"VP8X", b"VP8 ", b"VP8L", b"EXIF", b"XMP ", b"C2PA", b"ANMF", b"ICCP"])


@FAST
@given(st.lists(st.tuples(_WEBP_CHUNKS, st.binary(max_size=120), st.booleans()), max_size=6))
def test_webp_chunk_walk(chunks):
    body = b"WEBP"
    for fourcc, payload, lie in chunks:
        size = len(payload) + (1000 if lie else 0)   # a size past the end
        body += fourcc + struct.pack("<I", size) + payload + (b"\x00" if len(payload) & 1 else b"")
    _run(b"RIFF" + struct.pack("<I", len(body)) + body)


@FAST
@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1),
                          st.binary(max_size=80)), max_size=6))
def test_extended_xmp_parts(parts):
    segs = []
    for guid, total, off, payload in parts:
        segs.append((0xE1, b"http://ns.adobe.com/xmp/extension/\x00" + guid.ljust(32, b"0")[:32]
                     + struct.pack(">II", total, off) + payload))
    _run(_jpeg(segs))


def test_a_huge_gif_comment_is_read_up_to_the_text_cap():
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF")
    g = buf.getvalue()
    i = 13 + 3 * 2 ** ((g[10] & 7) + 1) if g[10] & 0x80 else 13
    blocks = (b"\xff" + b"A" * 255) * 20_000   # a 5 MB comment: decoded and parsed whole before
    rep = _run(g[:i] + b"\x21\xfe" + blocks + b"\x00" + g[i:])
    assert any("GIF comment of 5100000 bytes; the first 4194304 read" in e for e in rep.errors)


def test_a_gif_of_too_many_comment_sub_blocks_is_not_opened_by_pillow(monkeypatch):
    """`meta` reads a GIF's comment and XMP through Pillow, whose open reads every sub-block before the first
    image in Python and keeps a comment's (50 M one-byte ones, 100 MB: 30 s and 4.5 GB for `meta`): over
    decode.GIF_MAX_BLOCKS the file is not opened, and the record says why."""
    from PIL import GifImagePlugin

    from aiidetect import decode
    from aiidetect.testing.hostile import gif_extension_blocks

    monkeypatch.setattr(decode, "GIF_MAX_BLOCKS", 100)
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_open",
                        lambda self: (_ for _ in ()).throw(AssertionError("Pillow opened the GIF")))
    rep = _run(gif_extension_blocks(100))
    assert rep.format == "GIF"
    assert rep.errors == ["GIF structure refused: more than 100 sub-blocks or stray bytes before its first image "
                          "(Pillow reads each in Python when it opens the file)"]
