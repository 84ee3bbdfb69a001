"""docs/schema.md is what script authors code against: its field tables must name exactly the keys the
records carry. Each check builds the real thing in-process (a Record, each detector family's result,
the CSV header, a `meta` report) and compares key sets with the doc's table, both ways."""
from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "docs" / "schema.md"


def _section(title: str) -> str:
    text = SCHEMA.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    nxt = re.search(r"\n#{2,3} ", text[start + len(title) + 2:])
    return text[start:start + len(title) + 2 + (nxt.start() if nxt else len(text))]


def _table_names(section: str) -> set[str]:
    """The backticked names of each table row's first cell (`width`, `height` is two names)."""
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def _paragraph_names(section: str, starts: str) -> list[str]:
    para = section[section.index(starts):].split("\n\n")[0]
    return re.findall(r"`([^`]+)`", para)


def _camera_jpeg() -> bytes:
    from PIL import Image

    from aiidetect.testing.images import jpeg_bytes, noise_rgb

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"  # Make, Model
    return jpeg_bytes(noise_rgb(), exif=exif.tobytes())


def test_record_fields_are_the_documented_ones():
    from aiidetect.records import DetectorResult, ErrorInfo, Record

    rec = Record(file="x.jpg", detectors={"metadata": DetectorResult("ok")}, error=ErrorInfo("unreadable", "m"))
    assert set(rec.to_dict()) == _table_names(_section("## Fields"))


def _scanned_metadata_entry() -> dict:
    """The metadata entry of a whole scan's record of a camera JPEG (fields set around the results)."""
    import tempfile

    from aiidetect import ScanOptions, Scanner

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "camera.jpg"
        f.write_bytes(_camera_jpeg())
        with Scanner(ScanOptions(detectors=["metadata"], cache=False)) as scanner:
            (rec,) = list(scanner.scan([str(f)]))
    return rec.to_dict()["detectors"]["metadata"]


def _metadata_results() -> list:
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.testing.hostile import exif_many_entries, png_chunk, png_with

    det = MetadataDetector({"watermark": "never", "c2pa": False})
    # a camera JPEG (evidence, facts) and a PNG whose EXIF IFD is refused (errors)
    out = [det.predict_one(SimpleNamespace(data=data, path="f", image=None, info={}))
           for data in (_camera_jpeg(), png_with([png_chunk(b"eXIf", exif_many_entries())]))]
    assert [r.status for r in out] == ["ok", "ok"]
    return out


def test_per_detector_fields_are_the_documented_ones():
    from aiidetect.flow.onnx import results as flow_results
    from aiidetect.linear.onnx import results as linear_results
    from aiidetect.mpft.onnx import results as mpft_results

    results = _metadata_results()
    results += linear_results({"outputs": {"logit": "l"}, "head": "h"}, {"l": np.array([0.3])}, dtype="float32")
    # three labels and a generator on top: the open-set `generator` answer is given
    results += mpft_results({"outputs": {"logit": "l", "attribution": "a"}, "labels": ["real", "g1", "g2"]},
                            {"l": np.array([1.0]), "a": np.array([[0.0, 3.0, 1.0]])}, dtype="float32")
    cal = {"nll_mean": 0.0, "nll_std": 1.0, "threshold_z": 2.0, "fpr": 0.01, "method": "platt", "a": 1.0,
           "x0": 2.0, "b": 0.0}
    results += flow_results({"outputs": {"loglik": "ll"}, "calibration": cal, "dim": 4}, {"ll": np.array([-1.0])},
                            dtype="float32")
    keys = set().union(*(r.to_dict() for r in results))
    table = _section("### Per-detector object")
    # the values of score_kind a script may compare against are the ones the doc names (it said nll_z)
    kinds_row = next(line for line in table.splitlines() if line.startswith("| `score_kind`"))
    assert {r.score_kind for r in results} <= set(re.findall(r"`([^`]+)`", kinds_row.split("|")[3]))
    # Set by the ONNX runtime's detector around these same results (aiidetect/detectors/onnx.py); building an
    # ONNX session needs an exported graph, too slow for this check.
    onnx_only = {"runtime", "provider"}
    source = (REPO / "aiidetect" / "detectors" / "onnx.py").read_text()
    assert all(f'"{k}":' in source for k in onnx_only)
    # Set by finish() around every result that ran (Plan.result_identities): a whole scan, below.
    assert "identity" in _scanned_metadata_entry()
    assert keys | onnx_only | {"identity"} == _table_names(table)


def test_csv_columns_are_the_documented_ones():
    from aiidetect.report.writers import CsvWriter

    buf = io.StringIO()
    CsvWriter(buf, ["metadata"])
    header = buf.getvalue().strip().split(",")
    doc = _paragraph_names(_section("### CSV columns"), "`file`, `verdict`")
    doc = [c.replace("<detector>", "metadata") for c in doc if "…" not in c and ":" not in c]
    assert header == doc


def test_meta_report_fields_are_the_documented_ones(tmp_path):
    from aiidetect.api import meta_report
    from aiidetect.commands.meta import CSV_COLUMNS

    f = tmp_path / "camera.jpg"
    f.write_bytes(_camera_jpeg())
    ok = meta_report(str(f), "never")
    failed = meta_report(str(tmp_path / "gone.jpg"), "never", error=("unreadable", "gone"))
    section = _section("## The `meta` report")
    assert ok["error"] is None and failed["error"]["code"] == "unreadable"
    assert set(ok) == set(failed) == _table_names(section)
    assert CSV_COLUMNS == _paragraph_names(section, "`meta --format csv` columns")[1:]


def test_error_codes_are_the_documented_ones():
    from aiidetect.records import ERROR_CODES

    assert set(ERROR_CODES) == _table_names(_section("## Error codes"))


def test_the_verdict_rule_names_every_error_code():
    """docs/schema.md says which errors leave a file's verdict `error` and which may sit beside `ai-generated`: a
    code added to records.ERROR_CODES (`changed-while-read`) was left out of that list, and a script author could
    not tell what verdict its files get."""
    from aiidetect.records import ERROR_CODES, PIXEL_FAILURES

    para = _section("## Fields")
    para = para[para.index("`verdict` is `error` only when"):].split("\n\n")[0]
    named = set(re.findall(r"`([a-z-]+)`", para))
    assert PIXEL_FAILURES <= named
    assert not set(ERROR_CODES) - named, set(ERROR_CODES) - named


def test_the_example_record_parses_and_has_every_field():
    import json

    from aiidetect.records import Record

    block = SCHEMA.read_text(encoding="utf-8").split("```json\n", 1)[1].split("```", 1)[0]
    example = json.loads(block)
    assert list(example) == list(Record(file="x").to_dict())


_UNITS = {None: 1, "KiB": 1024, "MiB": 1024 ** 2, "Mi": 1024 ** 2, "M": 1_000_000, "s": 1}
_CONST_MODULES = {"limits": "aiidetect.limits", "tiffguard": "aiidetect.provenance.tiffguard",
                  "xmp": "aiidetect.provenance.xmp", "containers": "aiidetect.provenance.containers",
                  "preprocess": "aiidetect.preprocess", "decode": "aiidetect.decode"}


def test_limits_table_numbers_are_the_constants_they_name():
    """Each cell of the limits table that names a constant (`limits.PNG_MAX_CHUNKS`) gives its value just before
    the name: that number must be the constant's, so that a cap changed in code is not left documented at its
    old value."""
    import importlib

    section = _section("## Limits")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    ref = re.compile(r"`(" + "|".join(_CONST_MODULES) + r")\.([A-Z][A-Z0-9_]+)`")
    number = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(?:\s*(KiB|MiB|Mi|M|s)\b)?")
    checked, wrong = 0, []
    for row in rows:
        for cell in row.split(" | ")[1:2]:  # the value column
            prev = 0
            for m in ref.finditer(cell):
                nums = list(number.finditer(cell, prev, m.start()))
                prev = m.end()
                if not nums:
                    continue
                n = nums[-1]
                doc = float(n.group(1).replace(",", "")) * _UNITS[n.group(2)]
                value = getattr(importlib.import_module(_CONST_MODULES[m.group(1)]), m.group(2))
                checked += 1
                if doc != value:
                    wrong.append(f"{m.group(1)}.{m.group(2)}: the doc says {n.group(0)}, the code {value}")
    assert checked >= 15, checked
    assert not wrong, "\n".join(wrong)
