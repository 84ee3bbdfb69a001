"""The JSON Schema shipped for the scan record and the `meta` report (aiidetect/schemas, docs/schema.md "Validating
records"): it must be a valid draft 2020-12 schema of this version, name the fields docs/schema.md names, and accept
what the tool really writes (good, hostile, cached, stored and exported files, every detector kind) while refusing
what the doc rules out. A schema that drifted from the records would have consumers reject good output."""
from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, _process_state_kept, jsonl, run_cli_in_process
from typer.testing import CliRunner
from test_schema_doc import _camera_jpeg, _section, _table_names

jsonschema = pytest.importorskip("jsonschema")


def _validator(kind: str = "record"):
    from aiidetect.records import json_schema

    return jsonschema.Draft202012Validator(json_schema(kind))


def _problems(validator, inst) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:160]}" for e in validator.iter_errors(inst)]


def test_the_shipped_schemas_are_valid_versioned_and_packaged():
    from aiidetect.decode import PILLOW_FORMATS
    from aiidetect.records import ERROR_CODES, SCHEMA_KINDS, SCHEMA_VERSION, VERDICTS, json_schema

    for kind in SCHEMA_KINDS:
        s = json_schema(kind)
        jsonschema.Draft202012Validator.check_schema(s)
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert s["$id"] == f"urn:aiidetect:schema:{kind}:{SCHEMA_VERSION}"
        assert s["$defs"]["error"]["properties"]["code"]["enum"] == list(ERROR_CODES)
        assert set(s["properties"]["format"]["enum"]) == {*PILLOW_FORMATS, None}
    assert json_schema()["properties"]["verdict"]["enum"] == list(VERDICTS)
    with pytest.raises(ValueError):
        json_schema("summary")
    # the wheel and the source archive carry them: setuptools' package data names each file
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["aiidetect"]
    shipped = sorted(p.relative_to(REPO / "aiidetect").as_posix() for p in (REPO / "aiidetect" / "schemas").iterdir())
    assert shipped == sorted(f"schemas/{k}-{SCHEMA_VERSION}.schema.json" for k in SCHEMA_KINDS)
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in shipped)


def test_the_schema_and_the_doc_name_the_same_fields():
    from aiidetect.records import json_schema

    rec, meta = json_schema("record"), json_schema("meta")
    assert set(rec["properties"]) == set(rec["required"]) == _table_names(_section("## Fields"))
    assert set(rec["$defs"]["detector"]["properties"]) == _table_names(_section("### Per-detector object"))
    assert set(meta["properties"]) == set(meta["required"]) == _table_names(_section("## The `meta` report"))
    # the additionalProperties policy the doc states is the schema's
    doc = _section("## Validating records")
    assert rec["additionalProperties"] is False and meta["additionalProperties"] is False
    assert "additionalProperties" not in rec["$defs"]["detector"] and "additionalProperties" not in rec["properties"]["image"]
    assert "top level is closed" in doc and "open" in doc


_JSON_TYPES = {"string": "string", "int": "integer", "number": "number", "object": "object", "array": "array",
               "null": "null", "bool": "boolean"}


def _types(schema: dict, node: dict) -> set[str]:
    """The JSON types a (sub)schema admits, through its type, enum, const, oneOf and local $ref."""
    if "$ref" in node:
        return _types(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[1]])
    if "oneOf" in node and "type" not in node:
        return set().union(*(_types(schema, n) for n in node["oneOf"]))
    if "enum" in node or "const" in node:
        vals = node.get("enum", [node.get("const")])
        return {"null" if v is None else "string" if isinstance(v, str) else "number" for v in vals}
    t = node["type"]
    return {t} if isinstance(t, str) else set(t)


def test_the_schema_and_the_doc_give_each_field_the_same_type():
    """The Fields table's type column (`int or null`, `object`, ...) is the schema's: `fusion` was `object` in the
    doc while `results export` wrote null for some records."""
    from aiidetect.records import json_schema

    schema = json_schema()
    for line in _section("## Fields").splitlines():
        if not line.startswith("| `"):
            continue
        cells = line.split("|")
        words = re.findall(r"[a-z]+", cells[2].split(" of ")[0])
        doc = {_JSON_TYPES[w] for w in words if w in _JSON_TYPES}
        for name in re.findall(r"`([^`]+)`", cells[1]):
            assert _types(schema, schema["properties"][name]) == doc, (name, cells[2])


def _files(d: Path) -> list[str]:
    from PIL import Image

    from aiidetect.testing import hostile as h
    from aiidetect.testing.images import noise_rgb

    made = {"camera.jpg": _camera_jpeg(), "a1111.png": h.a1111_png(), "xmp-ai.jpg": h.xmp_ai_source_type(),
            "cut.png": h.truncated_png_with_parameters(), "eps.jpg": h.eps_named_jpeg(), "empty.png": b"",
            "sof.jpg": h.jpeg_huge_sof(), "loop.jpg": h.jpeg_with_app1(h.exif_loop()),
            "nan.jpg": h.jpeg_with_app1(h.exif_nonfinite()), "midjourney.png": h.tool_name_in_every_block()}
    for name, data in made.items():
        (d / name).write_bytes(data)
    b = io.BytesIO()
    noise_rgb().save(b, "MPO", save_all=True, append_images=[noise_rgb().rotate(90)])
    (d / "mpo.jpg").write_bytes(b.getvalue())
    Image.new("RGBA", (8, 8)).save(d / "alpha.webp")
    return sorted(str(p) for p in d.iterdir()) + [str(d / "gone.jpg")]


def test_scanned_cached_stored_and_exported_records_obey_the_schema(tmp_path):
    from aiidetect.cli import app

    files, db = _files(tmp_path), tmp_path / "runs.sqlite"
    v = _validator()
    outs = []
    for extra in ((), ("--db", str(db))):  # the second reads every file from the result cache
        with _process_state_kept():  # run_cli_in_process with a list on stdin: one missing file among them
            res = CliRunner().invoke(app, ["scan", "-", "-d", "metadata", "-f", "jsonl", *extra],
                                     input="\n".join(files))
        assert res.exit_code == 0, res.stderr
        assert ("from the result cache" in res.stderr) == bool(extra), res.stderr
        outs.append(jsonl(res.stdout))
    exported = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl")
    assert exported.returncode == 0, exported.stderr
    outs.append(jsonl(exported.stdout))
    for recs in outs:
        assert len(recs) == len(files)
        bad = {r["file"]: _problems(v, r) for r in recs}
        assert not any(bad.values()), bad
    first = outs[0]
    kinds = {(r["verdict"], (r["error"] or {}).get("code")) for r in first}
    # what the inputs are for: a verdict beside an error, errors of several kinds, evidence and facts
    assert {("ai-generated", "decode-error"), ("error", "unsupported-format"), ("error", "empty-file"),
            ("error", "too-large"), ("error", "unreadable"), ("ai-generated", None)} <= kinds
    assert any(r["detectors"].get("metadata", {}).get("errors") for r in first)


def test_csv_rows_map_back_onto_the_schema(tmp_path):
    """CSV flattens the record: each column that carries a record field holds a value that field's schema takes,
    and `ai_threshold`/`real_threshold` are the record's `band`."""
    from aiidetect.records import json_schema

    files = _files(tmp_path)[:-1]
    res = run_cli_in_process("scan", *files, "-d", "metadata", "-f", "csv", "-q")
    assert res.returncode == 0, res.stderr
    rec_schema = json_schema()
    props = rec_schema["properties"]

    def value(field, cell):
        if cell == "":
            return None
        if field in ("p_ai",):
            return float(cell)
        if field in ("width", "height"):
            return int(cell)
        return cell

    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == len(files)
    for row in rows:
        rec = {f: value(f, row[f]) for f in ("file", "verdict", "p_ai", "sha256", "format", "width", "height",
                                              "file_bytes", "schema")}
        rec["error"] = None if not row["error_code"] else {"code": row["error_code"], "message": row["error_message"]}
        rec["band"] = (None if row["ai_threshold"] == "" else
                       {"ai": float(row["ai_threshold"]), "real": float(row["real_threshold"])})
        for f, x in rec.items():
            sub = {"$defs": rec_schema["$defs"], **props[f]}
            assert not _problems(jsonschema.Draft202012Validator(sub), x), (row["file"], f, x)


def test_meta_reports_obey_their_schema(tmp_path):
    files = _files(tmp_path)
    res = run_cli_in_process("meta", *files[:-1], "-f", "jsonl")
    assert res.returncode in (0, 1), res.stderr
    reps = jsonl(res.stdout)
    v = _validator("meta")
    assert len(reps) == len(files) - 1
    assert not {r["file"]: _problems(v, r) for r in reps if _problems(v, r)}


def test_every_detector_kind_obeys_the_schema():
    """Entries of the model detectors (unavailable, and each family's answer) and the metadata detector's, as the
    docs' field check builds them, without a model."""
    from aiidetect.flow.onnx import results as flow_results
    from aiidetect.linear.onnx import results as linear_results
    from aiidetect.mpft.onnx import results as mpft_results
    from types import SimpleNamespace

    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.records import DetectorResult, json_schema
    from aiidetect.testing.hostile import tool_name_in_every_block

    v = jsonschema.Draft202012Validator({"$defs": json_schema()["$defs"], "$ref": "#/$defs/detector"})
    det = MetadataDetector({"watermark": "never", "c2pa": False})
    results = [det.predict_one(SimpleNamespace(data=data, path="f", image=None, info={}))
               for data in (_camera_jpeg(), tool_name_in_every_block())]
    assert all(r.evidence for r in results) and any("errors" in r.to_dict() for r in results)
    results += [DetectorResult.unavailable("no trained mpft head found"),
                                     DetectorResult.failed("RuntimeError: out of memory")]
    results += linear_results({"outputs": {"logit": "l"}, "head": "h"}, {"l": np.array([0.3])}, dtype="float32")
    results += mpft_results({"outputs": {"logit": "l", "attribution": "a"}, "labels": ["real", "g1", "g2"]},
                            {"l": np.array([1.0]), "a": np.array([[0.0, 3.0, 1.0]])}, dtype="float32")
    cal = {"nll_mean": 0.0, "nll_std": 1.0, "threshold_z": 2.0, "fpr": 0.01, "method": "platt", "a": 1.0,
           "x0": 2.0, "b": 0.0}
    results += flow_results({"outputs": {"loglik": "ll"}, "calibration": cal, "dim": 4}, {"ll": np.array([-1.0])},
                            dtype="float32")
    assert any("generator" in r.to_dict() for r in results) and any("z" in r.to_dict() for r in results)
    for r in results:
        d = json.loads(json.dumps(r.to_dict()))
        assert not _problems(v, d), (d, _problems(v, d))


def _good() -> dict:
    from aiidetect.records import DetectorResult, Record

    return json.loads(json.dumps(Record(file="x.jpg", verdict="uncertain", p_ai=0.5, fusion={"kind": "rules"},
                                        band=(0.9, 0.1), detectors={"metadata": DetectorResult("ok", 0.5, 0.0, "llr")})
                                 .to_dict()))


@pytest.mark.parametrize("change", [
    {"p_ai": 1.5}, {"verdict": "maybe"}, {"band": {"ai": 0.9}}, {"band": {"ai": 0.9, "real": 0.1, "x": 1}},
    {"extra_field": 1}, {"error": {"code": "oops", "message": "m"}, "verdict": "error", "p_ai": None, "band": None},
    {"verdict": "error"}, {"error": {"code": "unreadable", "message": "m"}},
    {"error": {"code": "decode-error", "message": "m"}, "verdict": "likely-real"},
    {"detectors": {"linear": {"status": "unavailable", "p_ai": 0.2, "score": None, "score_kind": None,
                              "reason": "x"}}},
    {"detectors": {"metadata": {"status": "ok", "p_ai": 0.5, "score": 0.0, "score_kind": "nll_z", "reason": None}}},
    {"sha256": "ABC"}, {"fusion": {"kind": "magic"}},
], ids=lambda c: ",".join(c))
def test_the_schema_refuses_what_the_doc_rules_out(change):
    v = _validator()
    assert not _problems(v, _good())
    assert _problems(v, {**_good(), **change})


def test_the_schema_is_open_where_keys_may_come_within_a_version():
    v = _validator()
    rec = _good()
    rec["detectors"]["metadata"]["new_key"] = 1
    rec["image"]["new_fact"] = "x"
    assert not _problems(v, rec)



def test_an_export_of_edited_damaged_and_old_rows_obeys_the_schema(tmp_path):
    """`results export` passed an edited row's unknown error code, detector status or evidence direction through as
    aiidetect's word, and wrote `fusion` null (a type docs/schema.md did not give it) for a row it could not read
    and for one stored before schema 1.1. Now the edited rows are `bad-stored-record`s, and the doc and the
    schema say where `fusion` is null."""
    import sqlite3

    from aiidetect.records import ERROR_CODES

    files = _files(tmp_path)
    db = tmp_path / "runs.sqlite"
    res = run_cli_in_process("scan", *files[:-1], "-d", "metadata", "-q", "--db", str(db), "-f", "jsonl")
    assert res.returncode == 0, res.stderr
    con = sqlite3.connect(db)
    rows = {Path(f).name: (rowid, json.loads(rec)) for rowid, f, rec in con.execute("SELECT rowid, file, record FROM results")}

    def put(name, rec):
        con.execute("UPDATE results SET record=? WHERE rowid=?", (rec if isinstance(rec, str) else json.dumps(rec),
                                                                 rows[name][0]))
    put("empty.png", {**rows["empty.png"][1], "error": {"code": "new-code", "message": "m"}})
    camera = rows["camera.jpg"][1]
    put("camera.jpg", {**camera, "detectors": {"metadata": {**camera["detectors"]["metadata"], "status": "skipped"}}})
    meta = rows["a1111.png"][1]["detectors"]["metadata"]
    put("a1111.png", {**rows["a1111.png"][1], "detectors": {"metadata": {
        **meta, "evidence": [{**meta["evidence"][0], "direction": "sideways"}]}}})
    put("loop.jpg", "{damaged")
    old = {k: v for k, v in rows["nan.jpg"][1].items() if k not in ("fusion", "file_bytes", "band")}
    put("nan.jpg", {**old, "schema": "1.0"})
    con.commit()
    con.close()
    out = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl")
    assert out.returncode == 0, out.stderr
    recs = {Path(r["file"]).name: r for r in jsonl(out.stdout)}
    v = _validator()
    assert not {n: _problems(v, r) for n, r in recs.items() if _problems(v, r)}
    for name in ("empty.png", "camera.jpg", "a1111.png", "loop.jpg"):
        assert recs[name]["error"]["code"] == "bad-stored-record" and recs[name]["fusion"] is None, name
    assert recs["nan.jpg"]["schema"] == "1.0" and recs["nan.jpg"]["fusion"] is None
    assert recs["eps.jpg"]["error"]["code"] in ERROR_CODES and recs["eps.jpg"]["fusion"] == {"kind": "rules"}


def test_aiidetect_schema_prints_the_shipped_schema():
    from aiidetect.commands.schema import SchemaKind
    from aiidetect.records import SCHEMA_KINDS, json_schema

    assert tuple(k.value for k in SchemaKind) == SCHEMA_KINDS
    for args, kind in ((("schema",), "record"), (("schema", "meta"), "meta")):
        r = run_cli_in_process(*args)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert json.loads(r.stdout) == json_schema(kind)
    r = run_cli_in_process("schema", "summary")
    assert r.returncode == 2 and r.stdout == ""


def test_the_doc_example_record_obeys_the_schema():
    """docs/schema.md's example is what script authors copy; only its SHA-256 is elided ("9f2c…")."""
    from test_schema_doc import SCHEMA

    example = json.loads(SCHEMA.read_text(encoding="utf-8").split("```json\n", 1)[1].split("```", 1)[0])
    assert example["sha256"].endswith("…")
    example["sha256"] = example["sha256"][:-1].ljust(64, "0")
    assert not _problems(_validator(), example)
