"""Property tests for the hostile-input defences: output that always parses,
parsers that never raise and keep their caps, names that round-trip."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiidetect.metastrip import strip_metadata
from aiidetect.provenance.generators import MAX_A1111_KEYS, _a1111_kv, parse_a1111
from aiidetect.provenance.tiffguard import check_tiff
from aiidetect.records import DetectorResult, Evidence, Record
from aiidetect.report import make_writer
from aiidetect.report.safe import csv_cell, display_path, dumps, path_bytes_b64, printable, strict_loads

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text as files deliver it: any code point, lone surrogates included.
hostile_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                              blacklist_categories=()), max_size=60) | \
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")) | \
    st.sampled_from(["[bold]x", "a[/b]c", "[/i]", "[link=file:///etc/passwd]x[/link]", "\x1b[31mred", "\u202e"])
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | hostile_text,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(hostile_text, kids, max_size=4), max_leaves=20)


@FUZZ
@given(values)
def test_dumps_is_always_strict_utf8_json(v):
    s = dumps(v)
    s.encode("utf-8")
    strict_loads(s)


@FUZZ
@given(st.binary(min_size=1, max_size=60).filter(lambda b: b"\x00" not in b))
def test_file_names_round_trip(raw):
    name = os.fsdecode(raw)
    shown = display_path(name)
    shown.encode("utf-8")
    b64 = path_bytes_b64(name)
    try:
        raw.decode("utf-8")
        assert b64 is None and shown == name
    except UnicodeDecodeError:
        assert base64.b64decode(b64) == raw


def _every_format(rec) -> dict[str, str]:
    outs = {}
    for fmt in ("jsonl", "json", "csv", "table"):
        buf = io.StringIO()
        w = make_writer(fmt, buf, ["metadata"], explain=True)
        w.write(rec)
        w.close({})
        outs[fmt] = buf.getvalue()
    return outs


@FUZZ
@given(hostile_text, st.lists(hostile_text, max_size=3),
       st.floats(0, 1) | st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_every_writer_parses_whatever_the_record_holds(name, reasons, x):
    rec = Record(file=name, verdict="uncertain", p_ai=x, reasons=reasons)
    rec.detectors["metadata"] = DetectorResult("ok", p_ai=x, score=x, score_kind="llr", evidence=[
        Evidence("exif.camera", "real", 1.0, "".join(reasons), source=name, data={"make": name, "v": x})],
        extra={"facts": {"exif": {"make": name, "iso": x}}})
    outs = _every_format(rec)
    for text in outs.values():
        text.encode("utf-8")
    one = strict_loads(outs["jsonl"])
    assert strict_loads(outs["json"]) == [one]
    assert one["file"] == display_path(name)
    row = list(csv.reader(io.StringIO(outs["csv"], newline="")))
    # (a name a spreadsheet would run as a formula gets an apostrophe in front: csv_cell)
    assert len(row) == 2 and row[1][0] == csv_cell(display_path(name))
    # the table shows the name literally (rich may fold long ones: compare without whitespace)
    flat = re.sub(r"[\s│┃]", "", outs["table"])
    assert re.sub(r"\s", "", printable(name))[:20] in flat


key = st.from_regex(r"[A-Za-z][A-Za-z0-9 ]{0,10}[A-Za-z0-9]", fullmatch=True)
val = st.from_regex(r"[A-Za-z0-9 ._+-]{0,12}", fullmatch=True).map(str.strip)


@FUZZ
@given(st.dictionaries(key, val, min_size=1, max_size=12))
def test_a1111_settings_line_round_trips(kv):
    line = ", ".join(f"{k}: {v}" for k, v in kv.items())
    assert _a1111_kv(line) == {k.strip(): v for k, v in kv.items()}


@FUZZ
@given(st.text(max_size=3000))
def test_a1111_parser_never_raises_and_keeps_its_caps(text):
    p = parse_a1111(text + "\nSteps: 1, " + text.replace("\n", " ").replace("\r", " "))
    assert p is not None and len(p["kv"]) <= MAX_A1111_KEYS
    assert all(re.fullmatch(r"\w[\w \-/+.]*", k) for k in p["kv"])


@FUZZ
@given(st.binary(max_size=600))
def test_tiff_guard_never_raises(data):
    for prefix in (b"", b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08"):
        r = check_tiff(prefix + data)
        assert r.ok in (True, False)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["PNG", "JPEG", None]))
def test_metadata_strip_never_raises(data, fmt):
    head = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8", None: b""}[fmt]
    out = strip_metadata(head + data, fmt)
    assert out is None or isinstance(out, bytes)


# A stored record as a damaged or foreign results store could hold it: the record's own keys with
# values of any JSON shape, sometimes right, sometimes not.
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                     max_size=3), max_leaves=12)
record_keys = st.sampled_from(["file", "verdict", "p_ai", "detectors", "reasons", "error", "image", "fusion",
                               "width", "file_bytes", "sha256"])
detector = st.fixed_dictionaries({"status": st.sampled_from(["ok", "error"]) | json_values},
                                 optional={"p_ai": json_values, "evidence": st.lists(
                                     st.dictionaries(st.sampled_from(["id", "direction", "strength", "detail"]),
                                                     json_values), max_size=2) | json_values,
                                           "attribution": json_values})
stored = st.fixed_dictionaries({"file": st.text(max_size=8) | json_values},
                               optional={"verdict": st.sampled_from(["uncertain", "error"]) | json_values,
                                         "detectors": st.dictionaries(st.text(max_size=4), detector | json_values,
                                                                      max_size=2) | json_values}) \
    .flatmap(lambda d: st.dictionaries(record_keys, json_values, max_size=3).map(lambda extra: {**extra, **d}))


@FUZZ
@given(stored | json_values)
def test_a_stored_record_of_any_shape_exports_in_every_format(doc):
    from aiidetect.store import stored_record

    outs = _every_format(stored_record({"record": json.dumps(doc), "file": "row.jpg"}))
    assert strict_loads(outs["json"]) == [strict_loads(outs["jsonl"])]
