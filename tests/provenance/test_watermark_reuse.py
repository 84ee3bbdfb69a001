"""The scan hands the watermark check the image its decode worker already made
(no second full-resolution decode) only where those are the very pixels a fresh
decode gives; records are the same either way."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aiidetect import provenance
from aiidetect.metadata.detector import MetadataDetector
from aiidetect.discover import Candidate
from aiidetect.pipeline import Pipeline, run_detectors
from aiidetect.provenance import analyze


@pytest.fixture(scope="module")
def photo(dev_dir) -> Image.Image:
    im = Image.open(dev_dir / "real/ml72/city_9.jpg")
    im.draft("RGB", (800, 800))
    return im.convert("RGB").crop((0, 0, 512, 512))


def _marked(photo: Image.Image) -> Image.Image:
    imwatermark = pytest.importorskip("imwatermark")
    cv2 = pytest.importorskip("cv2")
    enc = imwatermark.WatermarkEncoder()
    enc.set_watermark("bytes", b"StableDiffusionV1")
    a = cv2.cvtColor(np.asarray(photo), cv2.COLOR_RGB2BGR)
    return Image.fromarray(cv2.cvtColor(enc.encode(a, "dwtDct"), cv2.COLOR_BGR2RGB))


def _save(img: Image.Image, path, fmt: str, **kw) -> str:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    path.write_bytes(buf.getvalue())
    return str(path)


def _rotated_jpeg(img: Image.Image, path) -> str:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, path, "JPEG", quality=95, exif=exif.tobytes())


def test_scan_reuses_decoded_image_only_when_identical(photo, tmp_path, monkeypatch):
    marked = _marked(photo)
    a16 = (np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    files = {
        "marked.png": (_save(marked, tmp_path / "marked.png", "PNG"), True),
        "gray.png": (_save(photo.convert("L"), tmp_path / "gray.png", "PNG"), True),
        "deep.png": (_save(Image.fromarray(a16), tmp_path / "deep.png", "PNG"), False),   # 16-bit: scaled on decode
        "palette.png": (_save(photo.convert("P"), tmp_path / "palette.png", "PNG"), False),
        "rotated.jpg": (_rotated_jpeg(marked, tmp_path / "rotated.jpg"), False),                   # stored grid != shown
        "plain.jpg": (_save(marked, tmp_path / "plain.jpg", "JPEG", quality=95), True),
    }
    real = provenance.reusable_image

    def spy(image, info, w, h):
        ok = real(image, info, w, h)
        calls.append((image is not None, ok))
        return ok

    calls: list[tuple[bool, bool]] = []
    monkeypatch.setattr(provenance, "reusable_image", spy)
    for name, (path, reused) in files.items():
        calls.clear()
        rec = run_detectors([path], [MetadataDetector({"watermark": "auto"})])[0]
        assert rec.error is None, name
        assert calls == [(True, reused)], (name, calls)
        got = rec.detectors["metadata"]
        with open(path, "rb") as f:
            ref = analyze(f.read(), path)   # what `aiidetect meta` computes: always a fresh decode
        assert got.extra["facts"]["watermark"] == ref.facts["watermark"], name
        assert [e.id for e in got.evidence] == [e.id for e in ref.evidence], name
    rec = run_detectors([files["marked.png"][0]], [MetadataDetector()])[0]
    assert any(e.id == "watermark.match" for e in rec.detectors["metadata"].evidence)


def test_worker_drops_the_image_after_the_per_file_detectors(photo, tmp_path):
    path = _save(photo, tmp_path / "p.png", "PNG")
    pipe = Pipeline([MetadataDetector()])
    assert pipe.image_for_file_dets and not pipe.keep_image
    s = pipe._decode(Candidate(path, explicit=True), 0)
    assert s.ok and s.image is None
    assert not Pipeline([MetadataDetector({"watermark": "never"})]).image_for_file_dets


def test_decode_cost_benchmark_runs(dev_dir):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_cost.py"
    out = subprocess.run([sys.executable, str(script), str(dev_dir / "real" / "ml72"), "--limit", "2", "--rounds", "1",
                          "--format", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["files"] == 2 and len(res["rows"]) == 6
    assert all(r["ms_per_file"] > 0 for r in res["rows"])


def test_watermark_check_copies_the_pixel_grid_once(photo, monkeypatch):
    """The check reads the whole grid as an array: through Image.tobytes (Pillow's array interface) it was
    copied out in 64 KB pieces and joined into a second copy. Same votes, same facts, from one copy."""
    marked = _marked(photo)
    data = io.BytesIO()
    marked.save(data, "PNG")
    ref = analyze(data.getvalue(), "m.png")      # pixels through the check's own decode
    info = {"mode": "RGB", "orientation": 1}
    pieces = []
    tobytes = Image.Image.tobytes
    monkeypatch.setattr(Image.Image, "tobytes", lambda self, *a, **k: pieces.append(self.size) or tobytes(self, *a, **k))
    reused = analyze(data.getvalue(), "m.png", image=marked, info=info)   # the scan's decoded image
    assert pieces == []
    assert reused.facts["watermark"] == ref.facts["watermark"] and ref.facts["watermark"]["checked"]
    assert any(e.id == "watermark.match" for e in reused.evidence)
    monkeypatch.undo()
    from aiidetect.decode import rgb_array

    a = rgb_array(marked)
    assert a.shape == (512, 512, 3) and (a == np.asarray(marked)).all() and not a.flags.writeable
    assert rgb_array(marked.convert("L")).shape == (512, 512)     # other modes: np.asarray's answer


def test_decode_cost_benchmark_by_format_runs(dev_dir):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_cost.py"
    out = subprocess.run([sys.executable, str(script), str(dev_dir / "real" / "ml72"), "--limit", "2", "--rounds", "1",
                          "--by-format"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["all"]["files"] == 2 and sum(r["files"] for r in res["by_format"].values()) == 2
    assert all(r["ms_per_file"] > 0 for r in res["by_format"].values())
