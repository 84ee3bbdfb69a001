"""The band a file's verdict was judged on is a record field (schema 1.3): a file fused without a fitted model's
bias and band (one of its detectors gave no answer) was judged on another band than the run's, which a script
could only read from the words of a reason line."""
import csv
import io
import json
import math
from types import SimpleNamespace

import pytest

from aiidetect.pipeline.stages import finish
from aiidetect.records import DetectorResult, ErrorInfo, Record
from aiidetect.report.writers import CsvWriter
from aiidetect.store import parse_stored, record_json

MODEL = {"detectors": {"a": {"calibration": {"method": "none"}, "weight": 1.0},
                       "b": {"calibration": {"method": "none"}, "weight": 1.0}},
         "evidence_weight": 0.5, "bias": 2.0, "ai_threshold": 0.8, "real_threshold": 0.2}


def _finished(results, model=None) -> Record:
    rec = Record("x.png", verdict="uncertain", detectors=dict(results))
    dets = [SimpleNamespace(name=n) for n in results]
    return finish(SimpleNamespace(record=rec), dets, model, {"kind": "model" if model else "rules"})


def ok(p):
    return DetectorResult("ok", p_ai=p)


def test_the_band_that_judged_the_file_is_in_the_record():
    assert _finished({"a": ok(0.3)}).to_dict()["band"] == {"ai": 0.9, "real": 0.1}
    both = _finished({"a": ok(0.6), "b": ok(0.6)}, MODEL).to_dict()
    assert both["band"] == {"ai": 0.8, "real": 0.2} and both["verdict"] == "ai-generated"
    # b failed: judged without the bias, on the rules' ai side and a real side no narrower than the model's
    aside = _finished({"a": ok(0.6), "b": DetectorResult.failed("boom")}, MODEL).to_dict()
    lo = 1 / (1 + math.exp(-(math.log(0.2 / 0.8) - 2.0)))
    assert aside["band"] == {"ai": 0.9, "real": pytest.approx(lo)} and aside["verdict"] == "uncertain"
    assert aside["band"]["real"] < aside["p_ai"] < aside["band"]["ai"]


def test_no_band_where_nothing_judged_the_file():
    rec = Record("x.png", error=ErrorInfo("unreadable", "denied"))
    assert finish(SimpleNamespace(record=rec), [], None, {"kind": "rules"}).to_dict()["band"] is None


def test_csv_ends_with_the_band_and_the_store_keeps_it():
    rec = _finished({"a": ok(0.6), "b": DetectorResult.failed("boom")}, MODEL)
    failed = Record("y.png", error=ErrorInfo("unreadable", "denied"))
    buf = io.StringIO()
    w = CsvWriter(buf, ["a", "b"])
    w.write(rec)
    w.write(failed)
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows[0][-2:] == ["ai_threshold", "real_threshold"]
    assert [float(x) for x in rows[1][-2:]] == [0.9, pytest.approx(rec.band[1])] and rows[2][-2:] == ["", ""]
    assert parse_stored(record_json(rec)).band == rec.band
    # a record stored before 1.3 reads back without one; a band that is no pair of thresholds is refused
    old = json.loads(record_json(rec))
    del old["band"]
    assert parse_stored(json.dumps(old)).band is None
    with pytest.raises(ValueError, match="band"):
        parse_stored(json.dumps({**old, "band": {"ai": 2.0, "real": 0.1}}))


def _table_p(rec: Record, fusion=None) -> str:
    from aiidetect.report.writers import TableWriter

    w = TableWriter(io.StringIO(), [], fusion=fusion)
    w.write(rec)
    return w.rows[0][2]


def test_the_table_prints_p_ai_on_the_side_of_the_records_own_band():
    # `results export -f table` (no run band): 0.899999 beside "uncertain" read 0.900, to nearest
    rec = Record("x.png", verdict="uncertain", p_ai=0.899999, band=(0.9, 0.1))
    assert _table_p(rec) == "0.899"
    # a record judged on another band than the run's: its own band, not the run's, keeps the digits
    rec = Record("y.png", verdict="uncertain", p_ai=0.799999, band=(0.8, 0.2))
    assert _table_p(rec, {"ai_threshold": 0.9, "real_threshold": 0.1}) == "0.799"
    # a record written before 1.3 has no band: the old path (to nearest without a run band)
    assert _table_p(Record("z.png", verdict="uncertain", p_ai=0.899999)) == "0.900"


def test_the_report_page_follows_the_records_band_and_not_a_forged_one(tmp_path):
    from conftest import run_cli_in_process
    from aiidetect.testing.htmlcheck import assert_self_contained

    recs = [Record(f"{k}.png", verdict="uncertain", p_ai=0.799999, reasons=["r"], fusion={"kind": "rules"},
                   band=(0.8, 0.2)).to_dict() for k in range(3)]
    recs[1]["band"] = {"ai": "0.8", "real": 0.2}        # hand-edited: not a band, the run's is used
    del recs[2]["band"]                                 # a 1.2 record
    run, page = tmp_path / "run.jsonl", tmp_path / "r.html"
    run.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    assert run_cli_in_process("report", str(run), "-o", str(page), "--no-thumbnails", "-q").returncode == 0
    html = page.read_text(encoding="utf-8")
    doc = assert_self_contained(html)
    rows = json.loads(next(body for a, body in doc.scripts if a.get("type") == "application/json"))
    assert [r[-1] for r in rows] == ["0.799", "0.800", "0.800"]
    first = html.split('id="f1"')[0].split('id="f0"')[1]
    assert "P(AI) 0.799" in first and '<use href="#gauge-band"/>' not in first   # its own zones, 0.8 / 0.2


def test_where_the_band_does_not_give_the_verdict_the_schema_says_so():
    # p_ai past band.ai beside "uncertain": decisive evidence both ways under the rules, and metadata alone under
    # a fitted band of 0.8 (soft evidence is capped at 2 nats, P(AI) 0.88). A script reading only the band's
    # row called both AI.
    from pathlib import Path

    from aiidetect.metadata.detector import result_from_evidence
    from aiidetect.records import Evidence

    both = result_from_evidence([Evidence("generator.parameters", "ai", 6.0, "p", decisive=True,
                                          data={"basis": "claim"}),
                                 Evidence("c2pa.capture", "real", 4.0, "c", decisive=True, data={"basis": "claim"})])
    d = _finished({"linear": ok(0.95), "metadata": both}).to_dict()
    assert d["verdict"] == "uncertain" and d["p_ai"] >= d["band"]["ai"]
    soft = result_from_evidence([Evidence("xmp.generator-tool", "ai", 3.0, "t")])
    fitted = {**MODEL, "evidence_weight": 1.0}
    d = _finished({"metadata": soft}, fitted).to_dict()
    assert d["verdict"] == "uncertain" and d["p_ai"] >= d["band"]["ai"] == 0.8
    row = next(line for line in (Path(__file__).parents[1] / "docs" / "schema.md").read_text().splitlines()
               if line.startswith("| `band` |"))
    assert "decisive evidence both ways" in row and "only its metadata spoke for" in row, row


def test_a_stored_record_of_an_earlier_schema_keeps_its_schema_on_export():
    # A 1.2 record in a --db store, exported by this version, said "1.3" beside a null band on a verdict: a reader
    # of the schema's change log took the null for "no fusion judged it".
    old = json.loads(record_json(Record("x.png", verdict="uncertain", p_ai=0.58, reasons=["r"])))
    old["schema"] = "1.2"
    del old["band"]
    d = parse_stored(json.dumps(old)).to_dict()
    assert d["schema"] == "1.2" and d["band"] is None and d["verdict"] == "uncertain"
    assert parse_stored(json.dumps({**old, "schema": "x" * 100})).to_dict()["schema"] == "1.3"
    assert Record("y.png").to_dict()["schema"] == "1.3"


def test_a_page_of_several_fusions_says_each_card_draws_its_records_band():
    from aiidetect.report.html import _saved_fusion

    note = _saved_fusion({"rules": {"kind": "rules"}, "m": {"kind": "model", "path": "/nowhere"}})["fusion_note"]
    assert "Each card draws the band its record names" in note and "written before schema 1.3" in note
    gone = _saved_fusion({"m": {"kind": "model", "path": "/nowhere", "sha256": "0" * 64}})["fusion_note"]
    assert "its band is unknown here: each card draws the band its record names" in gone
