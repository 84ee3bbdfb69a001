"""`aiidetect meta`: table and JSON output, exit codes, no torch."""
from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from aiidetect.cli import app


def _marked(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat in a hat\nSteps: 20, Sampler: Euler a, Seed: 42, Model: sd15")
    p = tmp_path / "gen.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(p, pnginfo=info)
    q = tmp_path / "plain.jpg"
    Image.new("RGB", (64, 48), (200, 10, 30)).save(q, quality=90)
    return p, q


def test_meta_json_and_exit_code(tmp_path):
    p, q = _marked(tmp_path)
    r = CliRunner().invoke(app, ["meta", "--format", "json", str(tmp_path)])
    assert r.exit_code == 1, r.output
    reports = {d["file"].rsplit("/", 1)[-1]: d for d in json.loads(r.stdout)}
    gen = reports["gen.png"]
    assert gen["p_ai"] > 0.99 and any(e["id"] == "generator.parameters" for e in gen["evidence"])
    assert gen["facts"]["generators"][0]["prompt"] == "a cat in a hat"
    assert not any(e["decisive"] for e in reports["plain.jpg"]["evidence"])
    r = CliRunner().invoke(app, ["meta", "--format", "json", str(q)])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["format"] == "JPEG"


def test_meta_table_shows_prompt(tmp_path):
    p, _ = _marked(tmp_path)
    r = CliRunner().invoke(app, ["meta", str(p)])
    assert r.exit_code == 1
    assert "generator.parameters" in r.stdout and "a cat in a hat" in r.stdout and "seed: 42" in r.stdout


def test_meta_table_says_a_long_prompt_is_cut(tmp_path):
    # The record keeps 4,000 characters and names the cut in `truncated`; the table printed those
    # 4,000 as if they were the whole prompt.
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "x" * 5000 + "\nSteps: 20, Sampler: Euler a, Seed: 42")
    p = tmp_path / "long.png"
    Image.new("RGB", (8, 8)).save(p, pnginfo=info)
    r = CliRunner().invoke(app, ["meta", str(p)])
    assert r.exit_code == 1
    assert "(the first 4000 of 5000 characters)" in r.stdout.replace("\n", "")


def test_meta_errors(tmp_path):
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    r = CliRunner().invoke(app, ["meta", "--format", "json", str(bad)])
    # A file that cannot be read is a record with an error code, not a fatal error: exit 0 (1 is findings only).
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["error"]["code"] == "empty-file"
    r = CliRunner().invoke(app, ["meta", str(tmp_path / "missing.png")])
    assert r.exit_code == 2
    r = CliRunner().invoke(app, ["meta", "--format", "xml", str(bad)])
    assert r.exit_code == 2


def test_meta_says_when_bytes_are_no_image_at_all(tmp_path):
    """As scan does: a text file named .jpg is `unsupported-format`, not an image without metadata;
    its report has every key a good one has."""
    (tmp_path / "notes.jpg").write_text("minutes of the meeting\n")
    (tmp_path / "stub.bmp").write_bytes(b"BM" + bytes(40))   # an image format, broken: its (no) metadata is read
    r = CliRunner().invoke(app, ["meta", "--format", "jsonl", str(tmp_path / "notes.jpg"), str(tmp_path / "stub.bmp")])
    assert r.exit_code == 0, r.stdout
    by = {Path(x["file"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    assert by["notes.jpg"]["error"] == {"code": "unsupported-format", "message": "not an image format aiidetect decodes"}
    assert by["stub.bmp"]["error"] is None
    # one shape for every report, so `jq '.evidence[]'` and r["facts"] work on the file that failed too
    assert list(by["notes.jpg"]) == list(by["stub.bmp"]) and by["notes.jpg"]["evidence"] == []


def test_meta_reads_a_path_list_from_stdin(tmp_path):
    """As scan does: `find ... -print0 | aiidetect meta -` (one a line also works); a listed path that is
    missing is a record, not a fatal error."""
    p, q = _marked(tmp_path)
    for sep in ("\0", "\n"):
        r = CliRunner().invoke(app, ["meta", "-f", "jsonl", "-"], input=sep.join([str(q), str(p), str(tmp_path / "gone.jpg")]))
        assert r.exit_code == 1, r.output   # gen.png carries decisive evidence
        reps = [json.loads(x) for x in r.stdout.splitlines()]
        assert [Path(x["file"]).name for x in reps] == ["plain.jpg", "gen.png", "gone.jpg"]
        assert reps[2]["error"]["code"] == "unreadable"


def test_meta_does_not_import_torch(tmp_path):
    p, _ = _marked(tmp_path)
    code = ("import sys; from typer.testing import CliRunner; from aiidetect.cli import app; "
            f"r = CliRunner().invoke(app, ['meta', '--watermark', 'always', {str(p)!r}]); "
            "print(r.exit_code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["1", "False"], out.stderr[-2000:]


def test_meta_streams_and_ctrl_c_leaves_json_parseable(tmp_path, monkeypatch):
    """Reports are written as files are read (json, jsonl, csv): stopped after one, stdout holds
    that one, as a document that parses."""
    from aiidetect import api

    p, q = _marked(tmp_path)
    real, calls = api.meta_report, []

    def meta_report(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(api, "meta_report", meta_report)
    for fmt, parse in (("json", json.loads), ("jsonl", lambda s: [json.loads(x) for x in s.splitlines()])):
        calls.clear()
        r = CliRunner().invoke(app, ["meta", "-f", fmt, str(p), str(q)])
        assert r.exit_code == 130, r.output
        assert [Path(x["file"]).name for x in parse(r.stdout)] == ["gen.png"]


def test_meta_refuses_an_output_named_on_stdin_and_leaves_it_alone(tmp_path):
    p, _ = _marked(tmp_path)
    out = tmp_path / "report.jsonl"
    out.write_text("previous report\n")
    r = CliRunner().invoke(app, ["meta", "-f", "jsonl", "-o", str(out), "-"], input=f"{p}\n{out}\n")
    assert r.exit_code == 2 and "refusing to overwrite an input" in r.output
    assert out.read_text() == "previous report\n"


def test_meta_takes_scan_s_max_bytes(tmp_path):
    """A file over the byte limit was `too-large` in meta with a message naming `--max-bytes`, an option meta did
    not take: the limit could not be moved. Now meta takes it as scan does (the same default and record), and
    the library's meta_report too."""
    from aiidetect import api
    from aiidetect.limits import DEFAULT_MAX_BYTES

    p, _ = _marked(tmp_path)
    size = p.stat().st_size
    r = CliRunner().invoke(app, ["meta", "-f", "jsonl", "--max-bytes", str(size - 1), str(p)])
    assert r.exit_code == 0, r.output   # nothing read: no finding
    rec = json.loads(r.stdout)
    assert rec["error"]["code"] == "too-large" and "--max-bytes" in rec["error"]["message"] and rec["evidence"] == []
    r = CliRunner().invoke(app, ["meta", "-f", "jsonl", "--max-bytes", str(size), str(p)])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"] is None   # at the limit: read, decisive
    assert api.meta_report(str(p), max_bytes=size - 1)["error"]["code"] == "too-large"
    # With no --max-bytes, scan's default (512 MiB) holds
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.write(p.read_bytes())
        f.truncate(DEFAULT_MAX_BYTES + 1)   # sparse: no disk used
    r = CliRunner().invoke(app, ["meta", "-f", "jsonl", str(big)])
    assert json.loads(r.stdout)["error"]["code"] == "too-large"


def test_meta_table_words_c2pa_status_and_the_watermark_check(tmp_path):
    # The table printed "valid=False" for an intact manifest whose certificate has expired (the evidence
    # above it says "signature and content hash check out"), and the watermark check as a Python dict.
    expired = Path(__file__).parents[1] / "provenance" / "data" / "c2pa_expired_signer_capture.jpg"
    big = tmp_path / "sd_size.png"
    Image.new("RGB", (512, 512), (120, 130, 140)).save(big)
    r = CliRunner().invoke(app, ["meta", str(expired), str(big)], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    c2pa = [x for x in lines if x.startswith("C2PA: ")]
    assert len(c2pa) == 1 and "valid=" not in c2pa[0]
    assert "signature and content hash check out, but signer NOT verified (signingCredential.expired)" in c2pa[0]
    assert "source types digitalCapture" in c2pa[0]
    wm = [x for x in lines if x.startswith("watermark: ")]
    assert wm[0] == "watermark: not checked (16x16 is not a Stable Diffusion output size)"
    assert wm[1].startswith("watermark: checked, none found (absence proves nothing): 'StableDiffusionV1' ")
    assert "{" not in "".join(wm)


def test_meta_counts_two_unsigned_claims_as_the_strongest_and_says_so(tmp_path):
    """parameters (6.0) + XMP trainedAlgorithmicMedia (4.0) read P(AI) 0.999955 (10 nats) in `meta` beside a
    fused 0.9975: the detector now counts claims as fusion does, and its line says why it is not the sum."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, Seed: 1, Model: sd15")
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/'
                  '1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/'
                  '2008-02-29/" Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/'
                  'trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>')
    p = tmp_path / "claims.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(p, pnginfo=info)
    d = json.loads(CliRunner().invoke(app, ["meta", "--format", "json", str(p)]).stdout)[0]
    assert {e["id"] for e in d["evidence"]} >= {"generator.parameters", "xmp.ai-source-type"}
    assert d["llr"] == 6.0 and d["p_ai"] == round(1 / (1 + 2.718281828459045 ** -6.0), 6)
    out = " ".join(CliRunner().invoke(app, ["meta", str(p)]).stdout.split())
    assert "(LLR +6.00 nats: unsigned claims count as the strongest, not summed)" in out


def test_meta_shows_the_number_scan_records_for_the_same_evidence(tmp_path, monkeypatch):
    """A PNG whose only opinion is `Software: Midjourney` (3 nats, soft) read P(AI) 0.953 in `meta` and 0.881 in
    `scan -d metadata` (rule 4 caps soft evidence at 2 nats) with nothing saying why: `meta` now carries the
    scan's number, computed by fusion itself, and its table prints it when the two differ."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "Midjourney")
    p = tmp_path / "soft.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(p, pnginfo=info)
    d = json.loads(CliRunner().invoke(app, ["meta", "--format", "json", str(p)]).stdout)[0]
    assert d["llr"] == 3.0 and d["p_ai"] == 0.952574
    from conftest import run_cli_in_process

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    rec = json.loads(run_cli_in_process("scan", str(p), "-d", "metadata", "--no-cache", "-f", "jsonl").stdout)
    assert d["fused_p_ai"] == rec["p_ai"] == 0.880797
    out = " ".join(CliRunner().invoke(app, ["meta", str(p)]).stdout.split())
    assert "metadata p_ai: 0.953" in out and "scan -d metadata P(AI): 0.881 (fusion's rules 3-4" in out
    csv = CliRunner().invoke(app, ["meta", "--format", "csv", str(p)]).stdout.splitlines()
    assert csv[0].endswith(",fused_p_ai") and csv[1].endswith(",0.880797")
