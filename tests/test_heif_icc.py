"""A HEIF/AVIF ICC profile (a `colr` property) over limits.DECODE_MAX_METADATA_CHUNK is renamed `free` in the copy
handed to pillow-heif, which libheif passes over: pillow-heif and Pillow held a 100 MB one six times over (`scan -d
metadata` 785 MB, `meta` 883 MB). Nothing here reads a profile, so the scan's record says it (pixels_without_metadata)
and the metadata has no gap."""
from __future__ import annotations

import numpy as np
import pytest

from aiidetect import decode
from aiidetect.limits import DECODE_MAX_METADATA_CHUNK
from aiidetect.metastrip import strip_oversize_heif
from aiidetect.provenance import containers
from aiidetect.testing.hostile import bmff_box, heif_file, heif_ispe

pytest.importorskip("pillow_heif")


@pytest.fixture(scope="module")
def tile():
    from aiidetect.testing.hostile import heif_tile

    try:
        return heif_tile(64, 64)
    except Exception as exc:  # noqa: BLE001 - a pillow-heif built without its HEVC encoder
        pytest.skip(f"no HEVC encoder: {exc}")


def _heif(tile, profile: bytes | None) -> bytes:
    hvcc, coded = tile
    props = [hvcc, heif_ispe(64, 64)] + ([bmff_box(b"colr", b"prof" + profile)] if profile is not None else [])
    return heif_file([(1, b"hvc1", [(0, len(coded))], 0)], props, {1: list(range(1, len(props) + 1))}, mdat=coded)


def test_an_icc_profile_over_the_cap_is_not_handed_to_pillow_heif(tile):
    big = bytes(DECODE_MAX_METADATA_CHUNK)      # with its 'prof' type, 4 bytes over the cap
    data = _heif(tile, big)
    lean, said, _ = strip_oversize_heif(data, "HEIF")
    assert len(lean) == len(data) and lean.count(b"colr") == data.count(b"colr") - 1 and b"free" in lean
    assert said == f"HEIF ICC profiles (colr) over {DECODE_MAX_METADATA_CHUNK} bytes not handed to the decoder: " \
                   f"{len(big) + 4} bytes"
    with decode.open_image(data) as im:     # every caller of open_image
        assert "icc_profile" not in im.info
        got = np.asarray(im.convert("RGB"))
    with decode.open_image(_heif(tile, None)) as im:
        assert np.array_equal(got, np.asarray(im.convert("RGB")))    # the file's own pixels
    img, info = decode.decode_bytes(data)
    assert "ICC profiles (colr)" in info["metadata_withheld"]
    assert not containers.walk(data).errors     # nothing here reads a profile: no gap in the metadata
    with decode.open_image(_heif(tile, b"p" * 1000)) as im:     # one under the cap is handed on, as before
        assert len(im.info["icc_profile"]) == 1000


def test_an_nclx_colour_box_over_the_cap_is_handed_on_it_gives_the_pixels(tile):
    import struct

    import pillow_heif

    # matrix 0 (identity: the samples are G, B, R), padded past the cap; libheif decodes by it
    nclx = bmff_box(b"colr", b"nclx" + struct.pack(">HHHB", 1, 13, 0, 0x80) + bytes(DECODE_MAX_METADATA_CHUNK))
    hvcc, coded = tile
    props = [hvcc, heif_ispe(64, 64), nclx]
    data = heif_file([(1, b"hvc1", [(0, len(coded))], 0)], props, {1: [1, 2, 3]}, mdat=coded)
    lean, said, _ = strip_oversize_heif(data, "HEIF")
    assert lean is data and said is None
    with decode.open_image(data) as im:
        got = np.asarray(im.convert("RGB"))
    assert np.array_equal(got, np.asarray(pillow_heif.open_heif(data, convert_hdr_to_8bit=True)[0]))
