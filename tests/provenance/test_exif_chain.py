"""exifread follows the whole next-IFD chain; aiidetect hands it a copy that
ends after IFD1 (all it reads), so a long chain of huge overlapping IFDs
behind a tidy IFD0/IFD1 costs nothing (15.6 s on a 0.8 MB PNG before, docs/schema.md)."""
from __future__ import annotations

import io
import struct
import time

import exifread
from exifread.core.exif_header import ExifHeader
from PIL import Image

from aiidetect.provenance import analyze
from aiidetect.provenance.exif import read_exif
from aiidetect.provenance.tiffguard import bounded_for_readers, check_tiff
from aiidetect.testing.hostile import exif_chain_bomb, png_chunk, png_with


def ifd_chain(tiff: bytes) -> list[int]:
    return ExifHeader(io.BytesIO(tiff), "I", 0, 0, False).list_ifd()


def test_the_readers_see_the_chain_end_after_ifd1():
    tiff = exif_chain_bomb(k=30, n=2000)
    chk = check_tiff(tiff, pages=False)
    assert chk.ok and chk.ifds == 2
    assert len(ifd_chain(tiff)) == 32   # what exifread walks, entry by entry
    cut = bounded_for_readers(tiff, chk)
    assert len(cut) == len(tiff) and struct.unpack_from("<I", cut, chk.chain_cut) == (0,)
    assert len(ifd_chain(cut)) == 2
    tags = exifread.process_file(io.BytesIO(cut), details=False)
    assert set(tags) == {"Image Software", "Thumbnail Software"}
    assert read_exif(tiff, "PNG eXIf").software == "abc"


def test_a_camera_exif_block_is_handed_over_unchanged():
    ex = Image.Exif()
    ex[0x010F], ex[0x0110] = "Canon", "EOS 5D"
    tiff = ex.tobytes()[6:] if ex.tobytes().startswith(b"Exif") else ex.tobytes()
    chk = check_tiff(tiff, pages=False)
    assert bounded_for_readers(tiff, chk) is tiff


def test_a_chain_bomb_costs_no_time():
    data = png_with([png_chunk(b"eXIf", exif_chain_bomb())])
    t = time.perf_counter()
    rep = analyze(data, options={"watermark": "never"})
    # Before the cut: 15.6 s (docs/schema.md), and the per-file budget cannot interrupt a reader.
    assert time.perf_counter() - t < 3.0
    assert rep.facts["exif"]["software"] == "abc" and "metadata-timeout" not in {e.id for e in rep.evidence}


def test_a_tiff_files_page_chain_is_walked_once_by_the_decoder_not_again_for_exif(monkeypatch):
    """The readers see IFD0 and IFD1 only, so the EXIF check of a TIFF file stops there too; the
    decoder's own check walks (and caps) the pages. A 92 KB chain of 3,004 IFDs (3 million entries)
    cost the EXIF stage 0.50 s before (docs/schema.md)."""
    from aiidetect.decode import DecodeFailure, decode_bytes
    from aiidetect.provenance import tiffguard

    walked = []

    def spy(*a, **k):
        r = check_tiff(*a, **k)
        walked.append(r.ifds)
        return r

    monkeypatch.setattr(tiffguard, "check_tiff", spy)
    tiff = exif_chain_bomb(k=9990, n=1000)   # a TIFF file: it starts with the TIFF header
    assert read_exif(tiff, "TIFF header").software == "abc"
    assert walked == [2]
    walked.clear()
    try:
        decode_bytes(tiff)
    except DecodeFailure:
        pass
    # the decoder's check walks the pages, up to the file's entry cap (MAX_FILE_ENTRIES // 1000 IFDs of 1,000)
    assert walked and walked[0] > tiffguard.MAX_FILE_ENTRIES // 1000
