"""The HTML report, parsed without a browser: one card per file, nothing loaded
from outside the file, every payload from a file kept as text; heat maps
through the served predict path of any pixel head."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import jsonl, run_cli, run_cli_in_process
from aiidetect.testing.htmlcheck import assert_self_contained, parse
from aiidetect.testing.report_corpus import PAYLOADS, hostile_records, make_report_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_report_corpus(tmp_path_factory.mktemp("report-corpus"))


def _no_raw_payload(html: str) -> None:
    """Markup payloads never appear unescaped; a javascript: URL is harmless as text and is
    kept out of every href and src by assert_self_contained."""
    for p in PAYLOADS:
        if "<" in p:
            assert p not in html, p
    for frag in ("<script>window", "<img src=x", "<svg onload", "</style><script"):
        assert frag.lower() not in html.lower(), frag


def test_saved_hostile_records_stay_text(tmp_path):
    recs = hostile_records()
    src = tmp_path / "run.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in recs) + "\nnot json <script>window.__pwned=9</script>\n[1, 2]\n",
                   encoding="utf-8")
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(src), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "line 5: not JSON" in r.stderr and "line 6: not a scan record" in r.stderr
    html = out.read_text(encoding="utf-8")
    _no_raw_payload(html)
    doc = assert_self_contained(html)
    assert len(doc.cards) == len(recs) + 2
    names = [c["name"] for c in doc.cards]
    assert names[:3] == [recs[0]["file"], recs[1]["file"], recs[2]["file"]]
    assert names[3] == "\ufffd" + recs[3]["file"][1:]  # an undecodable byte shows as U+FFFD
    text = "".join(doc.text)
    for p in PAYLOADS:  # each payload is shown, as text, somewhere
        assert p in text, p
    card0 = doc.cards[0]["text"]
    for field in ("claim_generator", "signer", "actions", "ingredients", "validation_state"):
        assert field in card0
    assert "decisive, points to AI" in card0 and card0.index("c2pa.ai-generated") < card0.index("exif.camera")
    assert "flagged" in doc.cards[0]["class"] and "flagged" not in doc.cards[2]["class"]
    rows = json.loads(next(body for a, body in doc.scripts if a.get("type") == "application/json"))
    assert [r[3] for r in rows[:3]] == [recs[0]["file"], recs[1]["file"], recs[2]["file"]]
    assert rows[3][2] is None  # "NaN" p_ai is no number


def test_scan_html_marker_and_hostile_files(corpus, tmp_path):
    out = tmp_path / "r.html"
    d = next(iter(corpus.values())).parent
    before = {p: p.read_bytes() for p in d.iterdir()}
    r = run_cli("scan", str(d), "--format", "html", "-o", str(out), "-d", "metadata", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert {p: p.read_bytes() for p in d.iterdir()} == before  # inputs never modified
    html = out.read_text(encoding="utf-8")
    _no_raw_payload(html)
    doc = assert_self_contained(html)
    assert sorted(c["name"] for c in doc.cards) == sorted(str(p) for p in corpus.values())
    by_name = {c["name"]: c for c in doc.cards}
    assert "generator.parameters" in by_name[str(corpus["a1111"])]["text"]
    assert "Generator text in the file" in by_name[str(corpus["a1111"])]["text"]
    assert "xmp.ai-source-type" in by_name[str(corpus["xmp"])]["text"]
    assert "exif.camera" in by_name[str(corpus["camera"])]["text"]
    # c2pa-python is in the base install: the signed case must be there, not skipped.
    c2 = by_name[str(corpus["c2pa"])]["text"]
    assert "c2pa.ai-generated" in c2 and "<script>window.__pwned='script'</script>" in c2
    assert "C2PA manifest (Content Credentials)" in c2 and "stateValid" in c2 and "signeraiidetect test" in c2
    # The prompt is shown in full (escaped), not cut at the first tag.
    assert "a lighthouse <script>window.__pwned='script'</script> at dusk" in by_name[str(corpus["a1111"])]["text"]
    assert "too-large" in by_name[str(corpus["bomb"])]["text"] and "empty-file" in by_name[str(corpus["empty"])]["text"]
    for k in ("a1111", "camera", "name0", "name3"):
        assert "no thumbnail" not in by_name[str(corpus[k])]["text"], k
    for k in ("bomb", "empty"):
        assert "no thumbnail" in by_name[str(corpus[k])]["text"], k
    for t, a in doc.tags:
        if t == "img":
            assert a["src"].startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))


@pytest.mark.slow
def test_dev_set_report_from_saved_run(dev_metadata_run, tmp_path):
    run = dev_metadata_run
    recs = jsonl(run.read_text(encoding="utf-8"))
    out = tmp_path / "dev.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    doc = assert_self_contained(out.read_text(encoding="utf-8"))
    assert [c["name"] for c in doc.cards] == [x["file"] for x in recs]
    assert len({c["id"] for c in doc.cards}) == len(recs) > 400
    counts = {v: sum(1 for x in recs if x["verdict"] == v) for v in ("ai-generated", "uncertain", "likely-real")}
    overview = "".join(doc.text)
    for v, n in counts.items():
        assert f"{n}" in overview


def test_heatmaps_only_with_html_and_known_verdicts(corpus):
    d = str(next(iter(corpus.values())).parent)
    assert run_cli_in_process("scan", d, "--heatmaps", "ai", "-d", "metadata").returncode == 2
    r = run_cli_in_process("scan", d, "--format", "html", "--heatmaps", "maybe", "-d", "metadata")
    assert r.returncode == 2 and "--heatmaps" in r.stderr


def test_report_cli_contract(corpus, tmp_path):
    r = run_cli_in_process("report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x.html"))
    assert r.returncode == 2 and "cannot read" in r.stderr and not (tmp_path / "x.html").exists()
    d = str(next(iter(corpus.values())).parent)
    # HTML on stdout like any other format; --fail-on still decides the exit code.
    r = run_cli("scan", d, "--format", "html", "-d", "metadata", "--fail-on", "ai", "-q")
    assert r.returncode == 1, r.stderr
    assert r.stdout.startswith("<!DOCTYPE html>") and r.stderr == ""
    assert len(assert_self_contained(r.stdout).cards) == len(corpus)
    r = run_cli("report", "-", input="\n".join(json.dumps(x) for x in hostile_records()) + "\n")
    assert r.returncode == 0 and len(parse(r.stdout).cards) == len(hostile_records())


# --------------------------------------------------------------------- occlusion
class _TextureQuadrant:
    """A pixel detector whose P(AI) is the fine texture of the top-left quadrant of
    its input: blurring a square there lowers it, anywhere else changes nothing."""

    family = "probe"
    name = "probe:quadrant"
    needs_pixels = True
    per_file = False
    spec = {"mode": "resize", "size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
            "interpolation": "bilinear"}

    def feature_requests(self):
        from aiidetect.detectors.base import FeatureRequest

        def encode(x, layers=()):
            q = x[:, :, :32, :32]
            tex = (q[:, :, 1:, :] - q[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
            return {"tex": tex[:, None]}

        return [FeatureRequest(encoder_key="quadrant", preprocess=self.spec, encode=encode)]

    def predict(self, samples, features):
        from aiidetect.detectors.base import feature_key
        from aiidetect.records import DetectorResult

        k = feature_key(self.feature_requests()[0])
        return [DetectorResult(status="ok", p_ai=float(np.tanh(f[k]["tex"][0])), score=float(f[k]["tex"][0]),
                               score_kind="texture") for f in features]

    def describe(self):
        return {"name": self.name, "family": self.family}

    def cache_identity(self):
        return None


def test_occlusion_finds_the_region_a_detector_reads(tmp_path):
    from PIL import Image

    from aiidetect.explain.occlusion import occlusion_maps
    from aiidetect.testing.images import noise_rgb

    p = tmp_path / "noise.png"
    Image.fromarray(np.asarray(noise_rgb(256, 256, seed=3))).save(p)
    (m,) = occlusion_maps(str(p), [_TextureQuadrant()], grid=8)
    deltas = np.asarray(m["deltas"])
    assert deltas.shape == (8, 8) and m["image"].startswith("data:image/jpeg;base64,")
    assert (deltas[:4, :4] > 0.005).all(), deltas  # every square of the quadrant it reads matters
    assert np.abs(deltas[4:, :]).max() < 1e-6 and np.abs(deltas[:, 4:]).max() < 1e-6  # nothing else does
    assert m["scale"] >= deltas.max()


def test_a_heat_map_is_only_of_the_bytes_the_record_describes(tmp_path):
    """The report draws a heat map after the scan, from the path: a file replaced there since put a
    map of another picture beside this verdict (thumbnails already checked the SHA-256)."""
    import hashlib

    from PIL import Image

    from aiidetect.explain.occlusion import occlusion_maps
    from aiidetect.report.html import HtmlWriter
    from aiidetect.testing.images import noise_rgb

    p = tmp_path / "noise.png"
    Image.fromarray(np.asarray(noise_rgb(64, 64, seed=3))).save(p)
    scanned = hashlib.sha256(p.read_bytes()).hexdigest()
    assert "deltas" in occlusion_maps(str(p), [_TextureQuadrant()], grid=4, sha256=scanned)[0]
    Image.fromarray(np.asarray(noise_rgb(64, 64, seed=4))).save(p)               # replaced since the scan
    (m,) = occlusion_maps(str(p), [_TextureQuadrant()], grid=4, sha256=scanned)
    assert "deltas" not in m and "changed since the scan" in m["error"]
    asked = []
    w = HtmlWriter(io.StringIO(), {}, thumbnails=False, heatmap_for=["ai-generated"],
                   heatmapper=lambda path, sha: asked.append((path, sha)) or [])
    w.add({"file": str(p), "sha256": scanned, "verdict": "ai-generated", "error": None})
    assert asked == [(str(p), scanned)]


@pytest.mark.slow
def test_heatmaps_through_a_trained_linear_probe(trained, dev_dir, tmp_path):
    files = [dev_dir / "ai/sd14" / sorted(p.name for p in (dev_dir / "ai/sd14").iterdir())[0],
             dev_dir / "real/ml72" / sorted(p.name for p in (dev_dir / "real/ml72").iterdir())[0]]
    out = tmp_path / "h.html"
    # in-process: the report's content is the question, and a subprocess paid a torch import
    r = run_cli_in_process("scan", *map(str, files), "--backbone-config", "tiny-vit", "-d", "linear", "--format",
                           "html", "-o", str(out), "--heatmaps", "all", "--no-cache",
                           env={"AIIDETECT_WEIGHTS": str(trained)})
    assert r.returncode == 0, r.stderr
    doc = assert_self_contained(out.read_text(encoding="utf-8"))
    assert [c["name"] for c in doc.cards] == list(map(str, files))
    maps = [a for t, a in doc.tags if t == "img" and "occlusion heat map" in a.get("alt", "")]
    assert len(maps) == 2 and all(a["src"].startswith("data:image/jpeg;base64,") for a in maps)
    assert "; made for 2 files</td>" in out.read_text(encoding="utf-8")
    assert "no pixel detector can run" not in r.stderr
    for c in doc.cards:
        assert "Where the detectors looked" in c["text"] and "8\u00d78 squares" in c["text"]
        # The map explains the scanned number: its unoccluded P(AI) is the detector's P(AI) in the same card.
        m = re.search(r"linear:cli-probeok\s*(?:bfloat16|float32|float16)?([0-9.]+)", c["text"])
        assert m, c["text"][:2000]
        assert f"linear:cli-probe: P(AI) {m.group(1)} on its view of the image" in c["text"]


# --------------------------------------------------------------------- fuzz
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=4), max_leaves=12)
_PAYLOAD = st.sampled_from(PAYLOADS)
_any = _json | _PAYLOAD


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries(
    {"file": st.text(max_size=30) | _PAYLOAD, "verdict": st.sampled_from(["ai-generated", "uncertain", "likely-real",
                                                                         "error"]) | _any},
    optional={"p_ai": _any, "size_bytes": _any, "format": _any, "sha256": _any, "width": _any, "reasons": _any,
              "error": _any, "image": _any,
              "fusion": _any | st.fixed_dictionaries({"kind": st.just("model")}, optional={
                  "name": _any, "path": _any, "sha256": _any}),
              "detectors": st.dictionaries(st.sampled_from(["metadata", "linear:x"]) | st.text(max_size=10) | _PAYLOAD,
                                           st.fixed_dictionaries(
                  {}, optional={"status": _any, "p_ai": _any, "score": _any, "score_kind": _any, "reason": _any,
                                "threshold": _any, "threshold_z": _any, "attribution": _any, "dtype": _any,
                                "facts": _any | st.dictionaries(st.sampled_from(["c2pa", "watermark", "exif"]), _any),
                                "evidence": st.lists(st.fixed_dictionaries({}, optional={
                                    "id": _any, "direction": _any, "strength": _any, "decisive": _any,
                                    "detail": _any, "source": _any, "data": _any}), max_size=3) | _any}) | _any,
                  max_size=3)}), max_size=4))
def test_any_saved_record_renders_self_contained(recs):
    """Whatever a saved run holds, the page renders, parses and keeps every payload inert."""
    import io

    from aiidetect.report.html import render_saved_run

    out = io.StringIO()
    src = io.StringIO("\n".join(json.dumps(r) for r in recs) + "\n")
    summary = render_saved_run(src, out, source="fuzz", thumbnails=False)
    assert summary["files"] == len(recs)
    html = out.getvalue()
    _no_raw_payload(html)
    doc = assert_self_contained(html)
    assert len(doc.cards) == len(recs)


def test_thumbnails_only_of_the_bytes_the_record_describes(tmp_path):
    """A saved run is read later, maybe elsewhere: a thumbnail must show the scanned picture or none.
    A file replaced at its path since the scan, a record without a checksum (hand-made JSONL) or with
    another file's checksum gets none, and the card says why; a name that is not UTF-8 still gets one."""
    import os

    from aiidetect.testing.images import noise_rgb, save

    d = tmp_path / "photos"
    d.mkdir()
    kept, replaced = save(noise_rgb(64, 48, 1), d / "kept.jpg"), save(noise_rgb(64, 48, 2), d / "replaced.jpg")
    odd = os.path.join(os.fsencode(d), b"odd\xff.jpg")
    with open(odd, "wb") as f:
        f.write(kept.read_bytes())
    run = tmp_path / "run.jsonl"
    r = run_cli_in_process("scan", str(d), "-d", "metadata", "-f", "jsonl", "-o", str(run), "-q", "--no-cache")
    assert r.returncode == 0, r.stderr
    recs = jsonl(run.read_text(encoding="utf-8"))
    assert len(recs) == 3 and all(x["sha256"] for x in recs)
    save(noise_rgb(64, 48, 3), replaced)  # another picture under the scanned name
    by = {Path(x["file"]).name: x for x in recs}
    hand = [{**by["kept.jpg"], "file": str(kept), "sha256": None},          # no checksum
            {**by["kept.jpg"], "file": str(replaced), "sha256": by["kept.jpg"]["sha256"]}]  # not this file's
    run.write_text("\n".join(json.dumps(x) for x in recs + hand) + "\n", encoding="utf-8")
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "2 thumbnails" in r.stderr  # kept.jpg and the non-UTF-8 name
    assert len(assert_self_contained(out.read_text(encoding="utf-8")).cards) == 5
    html = out.read_text(encoding="utf-8")
    assert html.count('src="data:image/jpeg;base64,') == 2
    # (each note is in the box's title and its text) replaced.jpg's own record, and the one with kept's checksum
    assert html.count("changed since the scan") == 2 * 2
    assert html.count("has no checksum") == 2


def test_a_saved_run_nested_too_deep_is_an_error_card_not_a_crash(tmp_path):
    """Python's JSON parser recurses on nesting: RecursionError is no ValueError and used to end the
    report with exit 2. Both readings of a saved run (one JSON array, JSON lines) meet it."""
    good = json.dumps({"file": "a.jpg", "verdict": "uncertain", "p_ai": 0.5})
    for name, text in (("array.json", "[" * 200_000), ("lines.jsonl", good + "\n" + '{"a": ' * 100_000 + "\n")):
        src = tmp_path / name
        src.write_text(text, encoding="utf-8")
        r = run_cli("report", str(src), "-o", str(tmp_path / f"{name}.html"), "--no-thumbnails")
        assert "not JSON (JSON nested too deeply)" in r.stderr and "[yellow]" not in r.stderr
        assert "Traceback" not in r.stderr
        if name == "array.json":  # nothing in it is a record: not a saved run (exit 2), nothing written
            assert r.returncode == 2 and not (tmp_path / f"{name}.html").exists(), r.stderr
            continue
        assert r.returncode == 0, r.stderr
        assert_self_contained((tmp_path / f"{name}.html").read_text(encoding="utf-8"))


def test_no_heat_map_or_thumbnail_for_a_card_the_page_has_no_room_left_for():
    # Two AI-generated files fill a two-card page; a likely-real file after them can never get a card,
    # so its heat map (a detector run per grid square) was computed and thrown away.
    from aiidetect.report.html import HtmlWriter

    asked = []
    w = HtmlWriter(io.StringIO(), {}, thumbnails=False, heatmap_for=["ai-generated", "likely-real"], max_cards=2,
                   heatmapper=lambda path, sha: asked.append(path) or [])
    for name, v in (("real1", "likely-real"), ("ai1", "ai-generated"), ("ai2", "ai-generated"),
                    ("real2", "likely-real")):
        w.add({"file": name, "verdict": v, "error": None})
    assert asked == ["real1", "ai1", "ai2"]     # real1 could still have had a card when it came
    assert [it["rec"]["file"] for it in w.items] == ["ai1", "ai2"] and len(w.rows) == 4


def test_a_likely_real_card_names_what_pointed_to_ai(tmp_path):
    # One confident probe outweighs soft evidence (capped at 2 nats): a signed C2PA "generative fill", an AI tool
    # in EXIF, or a second detector that flags the file. The card said "Nothing here indicates a generative model".
    def rec(name, evidence, **pixel):
        dets = {"metadata": {"status": "ok", "p_ai": 0.5, "score": 0.0, "score_kind": "llr", "evidence": evidence}}
        dets.update({k: {"status": "ok", "p_ai": p, "score": None, "score_kind": None} for k, p in pixel.items()})
        return {"schema": "1.2", "file": name, "verdict": "likely-real", "p_ai": 0.07, "error": None,
                "reasons": ["linear:univfd: p_ai=0.01 (-4.60 nats)"], "detectors": dets}

    def ev(eid, direction, strength):
        return {"id": eid, "direction": direction, "strength": strength, "detail": eid, "source": "x",
                "decisive": False, "data": {}}

    run = tmp_path / "run.jsonl"
    run.write_text("\n".join(json.dumps(r) for r in [
        rec("signed_fill.jpg", [ev("c2pa.ai-composite", "ai", 3.0), ev("metadata.no-camera", "ai", 0.1)],
            **{"linear:univfd": 0.01}),
        rec("two_probes.jpg", [], **{"linear:univfd": 0.001, "mpft": 0.97}),
        rec("camera.jpg", [ev("exif.camera", "real", 1.2), ev("structure.jpeg-tables", "ai", 0.1)],
            **{"linear:univfd": 0.01}),
    ]) + "\n")
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    explain = {m.group(1): m.group(2) for m in re.finditer(
        r'id="f\d+-name">([^<]+)</h3>.*?<p class="explain">([^<]*)</p>', page, re.S)}
    assert "c2pa.ai-composite (strong) points to a generative model" in explain["signed_fill.jpg"]
    assert "no-camera" not in explain["signed_fill.jpg"]    # a weak hint is no dissent worth the sentence
    assert "mpft (P(AI) 0.970) points to a generative model" in explain["two_probes.jpg"]
    for f in ("signed_fill.jpg", "two_probes.jpg"):
        assert "Nothing here indicates" not in explain[f] and "not proof of authenticity" in explain[f]
    assert explain["camera.jpg"].startswith("Nothing here indicates a generative model")


def test_the_report_counts_a_file_decided_despite_its_error_as_scan_did(tmp_path):
    # `scan` said "2 errors (...; 1 of them ai-generated by its metadata alone)" of this run; the report's
    # overview and its summary line said "1 error", while its "error" filter showed two rows.
    def rec(name, verdict, error=None):
        return {"schema": "1.2", "file": name, "verdict": verdict, "p_ai": 0.9999 if verdict != "error" else None,
                "error": error, "reasons": ["r"], "detectors": {}}

    run = tmp_path / "run.jsonl"
    run.write_text("\n".join(json.dumps(r) for r in [
        rec("broken_a1111.jpg", "ai-generated", {"code": "decode-error", "message": "truncated"}),
        rec("a1111.png", "ai-generated"),
        rec("notimage.jpg", "error", {"code": "unsupported-format", "message": "not an image"}),
    ]) + "\n")
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails")
    assert r.returncode == 0, r.stderr
    assert "(2 ai-generated (1 by its metadata alone: pixels not read), 1 error)" in r.stderr
    note = re.search(r'<p id="decided-errors">(.*?)</p>', out.read_text()).group(1)
    assert note.startswith("1 of the 2 AI-generated files above is AI-generated by its metadata alone")
    run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "--verdict", "error")
    note = re.search(r'<p id="decided-errors">(.*?)</p>', out.read_text()).group(1)
    assert note.startswith("The AI-generated file above is AI-generated by its metadata alone")

    run.write_text(json.dumps(rec("a1111.png", "ai-generated")) + "\n")
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails")
    assert "(1 ai-generated)" in r.stderr and 'id="decided-errors"' not in out.read_text()


def test_heat_maps_asked_for_without_a_pixel_detector_are_not_said_to_be_computed(tmp_path):
    # Without weights (or with -d metadata) no file can get a map; the overview still said "computed for files
    # judged ai-generated", and no card had one.
    png = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    Image.new("RGB", (32, 32), (90, 40, 200)).save(png, pnginfo=info)
    out = tmp_path / "h.html"
    r = run_cli_in_process("scan", str(png), "-d", "metadata", "--format", "html", "-o", str(out), "--heatmaps",
                           "ai", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert "note: --heatmaps: no pixel detector can run, so no file gets a heat map" in r.stderr
    page = out.read_text(encoding="utf-8")
    row = re.search(r'<th scope="row">heat maps</th><td>([^<]*)</td>', page).group(1)
    assert row == ("asked for files judged ai-generated; none made: no pixel detector ran, and a heat map shows "
                   "where one looked")
    assert "Where the detectors looked" not in page


def test_a_card_words_the_c2pa_status_and_the_watermark_check(tmp_path):
    # An intact manifest whose certificate has expired is weighed as unverified; the card showed only the raw
    # fields, "state Invalid" and "valid False", beside evidence that says the signature and hash check out.
    # A watermark check that ran and found nothing showed as bare numbers.
    c2pa = {"where": "JPEG APP11", "state": "Invalid", "signature_valid": True, "content_matches": True,
            "failures": ["signingCredential.expired"], "valid": False, "status": "unverified"}
    wm = {"checked": True, "results": [{"pattern": "SDXL", "agreement": 0.62, "threshold": 0.85, "order": "bgr"}]}
    rec = {"schema": "1.2", "file": "expired.jpg", "verdict": "uncertain", "p_ai": 0.43, "error": None,
           "reasons": ["r"], "detectors": {"metadata": {"status": "ok", "p_ai": 0.43, "evidence": [],
                                                        "facts": {"c2pa": c2pa, "watermark": wm}}}}
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps(rec) + "\n")
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    said = re.findall(r"<summary>([^<]*)</summary><p><b>([^<]*)</b></p>", out.read_text())
    assert said == [("C2PA manifest (Content Credentials)", "validation as weighed here: signature and content hash "
                     "check out, but signer NOT verified (signingCredential.expired)"),
                    ("Invisible watermark", "checked, none found (absence proves nothing): &#x27;SDXL&#x27; 62.0% of "
                     "bits agree (a match needs 85%)")]


def test_a_part_of_a_run_with_no_file_in_it_still_describes_the_run(tmp_path):
    # `report run.jsonl --verdict real` of a run with no likely-real file said "record schema: not given" and
    # "detectors: none recorded", though every record of the run names them.
    rec = {"schema": "1.2", "file": "a.png", "verdict": "uncertain", "p_ai": 0.6, "error": None, "reasons": ["r"],
           "fusion": {"kind": "rules"},
           "detectors": {"metadata": {"status": "ok", "p_ai": 0.6, "evidence": []},
                         "linear": {"status": "unavailable", "p_ai": None, "reason": "no weights"}}}
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps(rec) + "\n")
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "--verdict", "real", "-o", str(out), "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert '<th scope="row">record schema</th><td>1.2</td>' in page
    dets = re.search(r'<th scope="row">detectors</th><td>(.*?)</td>', page).group(1)
    assert "metadata" in dets and "no weights" in dets and "none recorded" not in dets
    assert "only those judged likely-real: 0 of the 1 records in the run" in page


def test_an_uncertain_card_says_why_it_is_uncertain(tmp_path):
    # "the evidence is weak or conflicting" was said of a file whose EXIF names an AI tool (strong, P(AI) 0.88)
    # and is uncertain because soft metadata never decides alone, and of a file no detector could judge at all.
    # fusion's own words, as this aiidetect writes them and as an older one did (a saved run rendered later)
    from aiidetect.fusion import NO_OPINION, NO_OPINION_WAS, NO_READING, SOFT_ONLY, SOFT_ONLY_WAS

    def rec(name, reasons):
        return {"schema": "1.2", "file": name, "verdict": "uncertain", "p_ai": 0.88, "error": None,
                "reasons": reasons, "detectors": {}}

    run = tmp_path / "run.jsonl"
    run.write_text("\n".join(json.dumps(r) for r in [
        rec("firefly.jpg", [SOFT_ONLY, "metadata:exif.software-generator: ... (+1.88 nats of its +3.00: ...)"]),
        rec("bare.png", [NO_OPINION + "; could not run: linear (unavailable: no weights)"]),
        rec("old_firefly.jpg", [SOFT_ONLY_WAS, "metadata:exif.software-generator: ... (+1.88 nats ...)"]),
        rec("old_bare.png", [NO_OPINION_WAS + "; unavailable: linear (unavailable: no weights)"]),
        rec("probe.jpg", ["linear:univfd: p_ai=0.60 (+0.41 nats)"]),
        rec("unread.png", [NO_READING + "; could not run: linear (unavailable: no weights)"]),
    ]) + "\n")
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    explain = {m.group(1): m.group(2) for m in re.finditer(
        r'id="f\d+-name">([^<]+)</h3>.*?<p class="explain">([^<]*)</p>', out.read_text(), re.S)}
    for soft, bare in (("firefly.jpg", "bare.png"), ("old_firefly.jpg", "old_bare.png")):
        assert "only the file&#x27;s metadata spoke, and none of it is decisive" in explain[soft]
        # Decisive metadata does decide alone (generator parameters, a signed AI declaration): the same page calls
        # a file "AI-generated by its metadata alone", so the card must not say metadata never decides.
        assert "metadata never decides alone" not in explain[soft]
        assert "no detector could give an opinion on this file" in explain[bare]
        assert not any("weak or conflicting" in explain[f] for f in (soft, bare))
    assert "the evidence is weak or conflicting" in explain["probe.jpg"]
    assert "no detector could give an opinion on this file" in explain["unread.png"]


def test_c2pa_and_watermark_facts_of_any_shape_are_worded_not_fatal(tmp_path):
    # A saved run is hostile input: a watermark `results` or C2PA `failures` that is a number, or a `status` that
    # is a list, stopped the whole report (exit 2) once the card words them; every other field renders as given.
    def rec(name, facts):
        return {"schema": "1.2", "file": name, "verdict": "uncertain", "p_ai": 0.5, "error": None, "reasons": ["r"],
                "detectors": {"metadata": {"status": "ok", "p_ai": 0.5, "evidence": [], "facts": facts}}}

    run = tmp_path / "run.jsonl"
    run.write_text("\n".join(json.dumps(r) for r in [
        rec("wm_int.png", {"watermark": {"checked": True, "results": 5}}),
        rec("wm_true.png", {"watermark": {"checked": True, "results": True}}),
        rec("fail_int.jpg", {"c2pa": {"status": "invalid", "failures": 7}}),
        rec("status_list.jpg", {"c2pa": {"status": ["<script>window.__pwned=1</script>"], "valid": False,
                                         "failures": ["<img src=x onerror=alert(1)>"]}}),
    ]) + "\n")
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    _no_raw_payload(page)
    said = re.findall(r"<summary>[^<]*</summary><p><b>([^<]*)</b></p>", page)
    assert said == ["checked, none found (absence proves nothing)"] * 2 + [
        "validation as weighed here: manifest INVALID",
        "validation as weighed here: manifest INVALID (&lt;img src=x onerror=alert(1)&gt;)"]


def test_a_likely_real_card_does_not_call_a_detector_the_fusion_model_ignored_outweighed(tmp_path):
    # A fitted model that calibrates only linear: mpft (weight 0) and a head added since (flow) flag the file, yet
    # had no say; the card said they "were outweighed", as if the verdict had weighed them.
    from aiidetect.fusion import fuse
    from aiidetect.records import DetectorResult

    model = {"detectors": {"linear": {"calibration": {"method": "none"}, "weight": 1.0},
                           "mpft": {"calibration": {"method": "none"}, "weight": 0.0}}}
    ps = {"linear": 0.02, "mpft": 0.97, "flow": 0.99}
    out = fuse({k: DetectorResult(status="ok", p_ai=p) for k, p in ps.items()}, model)
    assert out.verdict == "likely-real"
    run = tmp_path / "run.jsonl"
    with_probe = {**ps, "linear:b": 0.95}
    recs = [{"schema": "1.2", "file": f, "verdict": "likely-real", "p_ai": 0.02, "error": None,
             "reasons": out.reasons + (["linear:b: p_ai=0.95 (+1.47 nats)"] if f == "b.jpg" else []),
             "detectors": {k: {"status": "ok", "p_ai": p} for k, p in (ps if f == "a.jpg" else with_probe).items()}}
            for f in ("a.jpg", "b.jpg")]
    run.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    page = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(page), "--no-thumbnails", "-q").returncode == 0
    explain = {m.group(1): m.group(2) for m in re.finditer(
        r'id="f\d+-name">([^<]+)</h3>.*?<p class="explain">([^<]*)</p>', page.read_text(), re.S)}
    assert "outweighed" not in explain["a.jpg"]
    assert ("mpft (P(AI) 0.970), flow (P(AI) 0.990) point to a generative model but had no say in the fusion "
            "model that decided (see below)") in explain["a.jpg"]
    assert ("linear:b (P(AI) 0.950) points to a generative model and was outweighed; mpft (P(AI) 0.970), flow "
            "(P(AI) 0.990) point to a generative model but had no say") in explain["b.jpg"]


def test_a_likely_real_card_does_not_call_a_retrained_head_left_out_of_the_model_outweighed():
    # A head retrained since the model was fitted is left out of it (fusion.without_retrained): its note reads
    # "flow: its head changed since the fusion model was fitted, ignored", and the card said it "was outweighed".
    from aiidetect.fusion import LEFT_OUT, fuse
    from aiidetect.records import DetectorResult
    from aiidetect.report.html import _explain

    model = {"detectors": {"linear": {"calibration": {"method": "none"}, "weight": 1.0}}, LEFT_OUT: ["flow"]}
    ps = {"linear": 0.02, "flow": 0.99}
    out = fuse({k: DetectorResult(status="ok", p_ai=p) for k, p in ps.items()}, model)
    assert out.verdict == "likely-real"
    assert "flow: its head changed since the fusion model was fitted, ignored" in out.reasons
    said = _explain("likely-real", {k: {"status": "ok", "p_ai": p} for k, p in ps.items()}, out.reasons)
    assert "outweighed" not in said
    assert "flow (P(AI) 0.990) points to a generative model but had no say in the fusion model" in said


def test_flagged_thumbnails_load_with_the_page_only_up_to_the_card_cap(tmp_path, monkeypatch):
    """Flagged cards load their thumbnails with the page so that they print; with `--max-cards 0` on a large
    run that made the browser decode every flagged thumbnail at open. Past the default cap they load when
    scrolled to, as the other cards do."""
    from aiidetect import limits
    from aiidetect.testing.images import noise_rgb, save

    d = tmp_path / "photos"
    d.mkdir()
    for k in range(4):
        save(noise_rgb(64, 48, k), d / f"p{k}.jpg")
    run = tmp_path / "run.jsonl"
    r = run_cli_in_process("scan", str(d), "-d", "metadata", "-f", "jsonl", "-o", str(run), "-q", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert {x["verdict"] for x in jsonl(run.read_text(encoding="utf-8"))} == {"uncertain"}
    monkeypatch.setattr(limits, "REPORT_MAX_CARDS", 2)
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--max-cards", "0", "-q")
    assert r.returncode == 0, r.stderr
    imgs = re.findall(r'<img src="data:image/jpeg;base64,[^"]*"[^>]*>', out.read_text(encoding="utf-8"))
    assert len(imgs) == 4 and [('loading="lazy"' in x) for x in imgs] == [False, False, True, True]


def test_a_card_and_its_gauge_never_show_p_ai_across_the_band_from_the_verdict(tmp_path):
    # p_ai 0.899999 under the rules' 0.9 band is uncertain; the card read "P(AI) 0.900" beside its badge
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps({"schema": "1.2", "file": "u.jpg", "verdict": "uncertain", "p_ai": 0.899999,
                               "error": None, "reasons": ["x"], "detectors": {}}) + "\n")
    out = tmp_path / "r.html"
    r = run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q")
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    # the card, its gauge and the table's row (the page's script prints the digits the row carries)
    assert "<b>P(AI) 0.899</b>" in page and "P(AI) = 0.899;" in page and '"x",1,0,"0.899"]' in page


def test_a_row_keeps_the_band_a_set_aside_note_names_not_the_note():
    # a saved run's line may be 64 MB: the row kept the whole note for the table's digits, unlike its 500-char reason
    import io

    from aiidetect.fusion import ASIDE_FOR_FILE
    from aiidetect.report.html import HtmlWriter

    out = io.StringIO()
    w = HtmlWriter(out, {"fusion": {"ai_threshold": 0.8, "real_threshold": 0.2}}, thumbnails=False, max_cards=0)
    note = f"b: {ASIDE_FOR_FILE}, fitted with it, are set aside (bias 0, band 0.05 / 0.95, " + "x" * 200_000
    w.add({"schema": "1.2", "file": "u.jpg", "verdict": "uncertain", "p_ai": 0.949999, "error": None,
           "reasons": [note], "detectors": {}})
    assert sum(len(x) for x in w.rows[0] if isinstance(x, str)) < 2000
    w.close()
    assert '"0.949"]' in out.getvalue()   # under the note's 0.95, not the run's 0.8


def test_a_failed_files_card_says_its_size_is_the_headers():
    """A file whose pixels failed keeps the size its header states (docs/schema.md): its card printed it as
    `pixels` like a decoded file's, a crafted header's 2147483647 x 2147483648 read as measured."""
    from aiidetect.report.html import render_saved_run

    failed = {"file": "cut.png", "verdict": "error", "format": "PNG", "width": 2147483647, "height": 2147483648,
              "error": {"code": "too-large", "message": "over the limit"}}
    decoded = {"file": "ok.png", "verdict": "uncertain", "p_ai": 0.5, "format": "PNG", "width": 64, "height": 48,
               "error": None}
    out = io.StringIO()
    render_saved_run(io.StringIO("\n".join(json.dumps(r) for r in (failed, decoded))), out, source="t",
                     thumbnails=False)
    html = out.getvalue()
    assert "<dt>pixels, as its header states</dt><dd class=\"wrap\"><code>2147483647 \u00d7 2147483648" in html
    assert "<dt>pixels</dt><dd class=\"wrap\"><code>64 \u00d7 48" in html


def test_the_scan_time_says_which_cached_files_had_their_metadata_judged_again():
    """A signed file is served its models' results from the result cache and its metadata judged again:
    "from the result cache" alone said every result of it was the cache's."""
    from aiidetect.report.html import _overview

    band = {"ai_threshold": 0.8, "real_threshold": 0.2}
    page = _overview(3, {"likely-real": 3}, 3, {"summary": {"seconds": 1.0, "files": 3, "cache_hits": 2,
                                                            "cache_rerun": 1}}, band)
    assert "3 files (2 from the result cache, 1 of them with its metadata judged again)" in page
    page = _overview(3, {"likely-real": 3}, 3, {"summary": {"seconds": 1.0, "files": 3, "cache_hits": 2}}, band)
    assert "3 files (2 from the result cache)<" in page


def test_the_page_says_once_what_p_ai_and_a_reasons_nats_mean(tmp_path):
    """An editor read "P(AI) 0.83" as a bare number, a card's "(+0.40 nats)" as a term to look up, and
    "likely real" with nothing saying it is not proof."""
    rec = {"schema": "1.2", "file": "a.jpg", "verdict": "likely-real", "p_ai": 0.05, "error": None,
           "reasons": ["linear:x: p_ai=0.05 (-2.94 nats)"], "detectors": {}}
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "file": "b.jpg"}) + "\n")
    out = tmp_path / "r.html"
    assert run_cli_in_process("report", str(run), "-o", str(out), "--no-thumbnails", "-q").returncode == 0
    page = out.read_text()
    said = "<b>P(AI)</b> is aiidetect's estimate, from 0 to 1, that the image was made by a generative model."
    assert page.count(said) == 1 and page.count("Likely real is not proof") == 1
    assert page.count("is how far that item moved the estimate toward AI (+) or real (-), in log-odds") == 1
    # decisive items both ways leave a file uncertain (fusion rule 3): the line must not say one always settles it
    assert page.count("a [decisive] item settles the verdict on its own, unless another points the other way "
                      "(the file is then uncertain)") == 1


def test_the_pages_band_sentence_holds_for_every_file_as_the_tables_legend_does():
    """The overview said "AI-generated when the fused P(AI) is at least 0.80" over a file fused without the
    fitted model's bias and band (judged on a wider one: uncertain at 0.85), and over a file only its metadata
    spoke for (uncertain whatever its P(AI)). It now says what `scan`'s table legend says, from one helper."""
    from aiidetect.fusion import SOFT_ONLY, fuse
    from aiidetect.records import DetectorResult, Record
    from aiidetect.report.html import HtmlWriter

    dets = {n: {"weight": 1.0, "calibration": {"method": "none"}} for n in ("linear:a", "linear:b")}
    model = {"ai_threshold": 0.8, "real_threshold": 0.2, "bias": 2.0, "detectors": dets}
    res = {"linear:a": DetectorResult("ok", p_ai=0.85), "linear:b": DetectorResult("error", p_ai=0.5)}
    aside = fuse(res, model)
    assert aside.verdict == "uncertain" and aside.p_ai > 0.8

    def page(recs, band=(0.8, 0.2)):
        out = io.StringIO()
        w = HtmlWriter(out, {"fusion": {"ai_threshold": band[0], "real_threshold": band[1]}}, thumbnails=False)
        for r in recs:
            w.write(r)
        w.close()
        return re.sub(r"\s+", " ", out.getvalue())

    plain = Record("/a/p.jpg", verdict="ai-generated", p_ai=0.9, detectors={"linear:a": DetectorResult("ok")},
                   reasons=["linear:a: p_ai=0.90 (+2.20 nats)"])
    said = page([plain])
    assert "By its fused P(AI), a file is called <b>AI-generated</b> from 0.8, <b>likely real</b> at or below 0.2, " \
           "and <b>uncertain</b> in between" in said
    assert "set aside" not in said and "only its metadata" not in said
    said = page([plain, Record("/a/u.jpg", verdict=aside.verdict, p_ai=aside.p_ai, detectors=res,
                               reasons=aside.reasons)])
    assert "<b>likely real</b> at or below 0.2 (a file whose reason says the fusion model&#x27;s bias and band are " \
           "set aside: the band that reason names), and <b>uncertain</b>" in said, said
    said = page([plain, Record("/a/m.jpg", verdict="uncertain", p_ai=0.86, detectors={}, reasons=[SOFT_ONLY])])
    assert "stays uncertain whatever its P(AI)." in said
    # the band's limits, as the legend words them: P(AI) 0.5 is never AI-generated under an ai threshold of 0.5
    assert "<b>AI-generated</b> above 0.5," in page([plain], (0.5, 0.1))


def test_no_band_is_named_where_the_run_does_not_know_it_and_the_gauge_says_the_overviews_words():
    """A report over records of two fusions (or a model since moved) draws the default band and says it may not
    be the one that decided, yet its overview said "AI-generated from 0.9" over a file AI-generated at 0.85, and
    every gauge "AI-generated at or above 0.90"; at an ai threshold of 0.5 the gauge said "at or above 0.50" of a
    file fuse calls uncertain at 0.5."""
    from aiidetect.records import DetectorResult, Record
    from aiidetect.report.html import HtmlWriter

    def page(run):
        out = io.StringIO()
        w = HtmlWriter(out, run, thumbnails=False)
        w.write(Record("/a/p.jpg", verdict="ai-generated", p_ai=0.85, detectors={"linear:a": DetectorResult("ok")},
                       reasons=["linear:a: p_ai=0.85 (+1.70 nats)"]))
        w.close()
        return re.sub(r"\s+", " ", out.getvalue())

    said = page({"fusion_note": "the records were decided by different fusions: a; b. The band drawn is the "
                                "default one and may not be the one that decided each verdict."})
    assert "a file is called <b>AI-generated</b> or <b>likely real</b> past the thresholds of the scan that " \
           "judged the file, and <b>uncertain</b>" in said
    assert "from 0.9" not in said and "at or above" not in said
    assert "aria-label=\"P(AI) = 0.850; AI-generated or likely real past the thresholds of the scan" in said
    said = page({"fusion": {"ai_threshold": 0.5, "real_threshold": 0.1}})
    assert "aria-label=\"P(AI) = 0.850; AI-generated above 0.5, likely real at or below 0.1, uncertain between\"" \
        in said


def test_one_main_landmark_and_each_thumbnail_names_its_file_and_verdict(tmp_path):
    """A screen reader jumps to the main landmark and lists regions: the page had none (no <main>, an overview
    without a name), and every thumbnail was read as "thumbnail", never whose or judged how. A hostile name
    in the alt text stays text."""
    from aiidetect.report.html import VERDICT_WORDS
    from aiidetect.testing.images import noise_rgb, save

    d = tmp_path / "photos"
    d.mkdir()
    name = "<img src=x onerror=alert(1)>\"'.jpg"
    save(noise_rgb(64, 48, 1), d / name)
    run, out = tmp_path / "run.jsonl", tmp_path / "r.html"
    assert run_cli_in_process("scan", str(d), "-d", "metadata", "-f", "jsonl", "-o", str(run), "-q",
                              "--no-cache").returncode == 0
    assert run_cli_in_process("report", str(run), "-o", str(out), "-q").returncode == 0
    html = out.read_text(encoding="utf-8")
    doc = assert_self_contained(html)
    _no_raw_payload(html)
    assert [t for t, _ in doc.tags].count("main") == 1
    start, end = html.index("<main>"), html.index("</main>")
    assert all(start < html.index(f'id="{s}"') < end for s in ("overview", "files", "cards"))
    assert ("section", {"id": "overview", "aria-labelledby": "overview-h"}) in doc.tags
    assert ("h2", {"id": "overview-h"}) in doc.tags
    (rec,) = jsonl(run.read_text(encoding="utf-8"))
    alts = [a.get("alt") for t, a in doc.tags if t == "img"]
    assert alts == [f"thumbnail of {rec['file']}, judged {VERDICT_WORDS[rec['verdict']][1]}"]


def test_copies_of_one_file_are_decoded_once_for_their_thumbnails(tmp_path, monkeypatch):
    """Every copy of a photo (same checksum) decoded the whole image again for its thumbnail: a 10,000-file
    report of the dev set's files repeated took 76 s, 12 MP HEIFs at up to 1.3 s each. Each copy's file is still
    read and checked: a copy replaced since the scan gets no thumbnail."""
    import aiidetect.decode as decode
    from aiidetect.testing.images import noise_rgb, save

    d = tmp_path / "photos"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        save(noise_rgb(64, 48, 1), d / name)
    run, out = tmp_path / "run.jsonl", tmp_path / "r.html"
    assert run_cli_in_process("scan", str(d), "-d", "metadata", "-f", "jsonl", "-o", str(run), "-q",
                              "--no-cache").returncode == 0
    recs = jsonl(run.read_text(encoding="utf-8"))
    assert len({r["sha256"] for r in recs}) == 1
    save(noise_rgb(64, 48, 2), d / "c.png")  # another picture under a scanned name
    decoded = []
    real = decode.decode_bytes
    monkeypatch.setattr(decode, "decode_bytes",
                        lambda data, *a, **kw: decoded.append(len(data)) or real(data, *a, **kw))
    r = run_cli_in_process("report", str(run), "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    html = out.read_text(encoding="utf-8")
    assert len(decoded) == 1 and html.count('src="data:image/jpeg;base64,') == 2
    assert html.count("changed since the scan") == 2  # c.png's card: the box's title and its text


def test_a_heat_map_says_which_part_of_the_picture_it_covers(tmp_path):
    """A map is drawn on the detector's view (resized and/or centre-cropped) while the card's thumbnail is
    the whole picture: nothing said that a centre crop had dropped the edges, so a reader laid the squares
    over the wrong places."""
    from PIL import Image

    from aiidetect.explain.occlusion import occlusion_maps
    from aiidetect.report.html import _heatmaps
    from aiidetect.testing.images import noise_rgb

    class Cropping(_TextureQuadrant):
        spec = {**_TextureQuadrant.spec, "mode": "resize-center-crop"}

    p = tmp_path / "wide.png"
    Image.fromarray(np.asarray(noise_rgb(128, 64, seed=3))).save(p)
    (m,) = occlusion_maps(str(p), [Cropping()], grid=4)
    assert "covers x 32-96, y 0-64 of the 128x64 image" in m["view"]
    assert "covers x 32-96, y 0-64 of the 128x64 image" in _heatmaps([m])
    (m,) = occlusion_maps(str(p), [_TextureQuadrant()], grid=4)  # a plain resize sees it all, stretched
    assert "resize to 64x64, stretched to a square: it covers all of the 128x64 image" in m["view"]
