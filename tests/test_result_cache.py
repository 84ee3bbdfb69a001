"""The scan-result cache: exact round trips, identity keys, and a second scan
that reuses results without running detectors (library and CLI)."""
from __future__ import annotations

import re
import shutil

import pytest
from PIL import Image

from aiidetect.detectors.base import Detector, UnavailableDetector
from aiidetect.discover import Candidate
from aiidetect.pipeline import Pipeline
from aiidetect.records import DetectorResult, Evidence
from aiidetect.result_cache import ResultCache, identity_key, result_from_json, result_to_json
from aiidetect.testing.images import noise_pngs

from conftest import jsonl, run_cli, run_cli_in_process


def _result(**kw) -> DetectorResult:
    base = dict(status="ok", p_ai=0.123456789012, score=-1.0 / 3.0, score_kind="logit", reason=None,
                evidence=[Evidence("exif.camera", "real", 1.25, "camera X", "EXIF", False, {"make": "X", "n": [1, 2]})],
                extra={"attribution": [{"label": "sd15", "p": 0.9}], "threshold": 0.5})
    base.update(kw)
    return DetectorResult(**base)


def test_result_json_round_trip_is_exact():
    r = _result()
    back = result_from_json(result_to_json(r))
    assert back == r
    assert back.to_dict() == r.to_dict()
    assert back.evidence[0].llr == r.evidence[0].llr


def test_non_finite_results_are_not_stored(tmp_path):
    cache = ResultCache(tmp_path / "r.sqlite")
    stored = cache.put_many([("a" * 64, {"format": "PNG"}, {"d": ("k1", _result(score=float("nan")))}),
                             ("b" * 64, {"format": "PNG"}, {"d": ("k1", DetectorResult.failed("boom"))}),
                             ("c" * 64, {"format": "PNG"}, {"d": ("k1", _result())})])
    assert stored == 1
    assert cache.get("a" * 64, {"d": "k1"}) is None
    assert cache.get("b" * 64, {"d": "k1"}) is None
    info, res = cache.get("c" * 64, {"d": "k1"})
    assert info == {"format": "PNG"} and res["d"] == _result()
    # every identity must be present: one missing detector means a miss
    assert cache.get("c" * 64, {"d": "k1", "e": "k2"}) is None
    assert cache.stats() == {"files": 3, "results": 1}


def test_identity_key_depends_on_detector_and_run():
    a = identity_key({"head": "h1", "dtype": "float32"}, {"draft": 224})
    assert a == identity_key({"dtype": "float32", "head": "h1"}, {"draft": 224})
    assert a != identity_key({"head": "h2", "dtype": "float32"}, {"draft": 224})
    assert a != identity_key({"head": "h1", "dtype": "bfloat16"}, {"draft": 224})
    assert a != identity_key({"head": "h1", "dtype": "float32"}, {"draft": None})


class Counting(Detector):
    """A pixel-free detector whose result depends on the file bytes only."""

    family = "counting"
    needs_pixels = False

    def __init__(self, version="1", identity=True):
        super().__init__("counting")
        self.calls = 0
        self.version = version
        self.identity = identity

    def predict(self, samples, features):
        self.calls += len(samples)
        return [DetectorResult(status="ok", p_ai=(int(s.record.sha256[:4], 16) % 1000) / 1000.0, score=1.0,
                               score_kind="logit") for s in samples]

    def cache_identity(self):
        return {"family": self.family, "version": self.version} if self.identity else None


@pytest.fixture
def pngs(tmp_path):
    return noise_pngs(tmp_path, 5)


def _scan(dets, paths, cache):
    pipe = Pipeline(dets, batch_size=2, workers=2, cache=cache)
    return pipe, [r.to_dict() for r in pipe.run([Candidate(p, explicit=True) for p in paths])]


def test_second_scan_runs_no_detector_and_gives_identical_records(tmp_path, pngs):
    cache = ResultCache(tmp_path / "r.sqlite")
    d1 = Counting()
    p1, first = _scan([d1, UnavailableDetector("linear", "no head")], pngs, cache)
    assert d1.calls == 5 and p1.stats.cache_hits == 0
    d2 = Counting()
    p2, second = _scan([d2, UnavailableDetector("linear", "no head")], pngs, cache)
    assert d2.calls == 0 and p2.stats.cache_hits == 5
    assert second == first
    assert all(r["width"] == 48 and r["height"] == 40 and r["format"] == "PNG" for r in second)


def test_changed_detector_or_bytes_miss_the_cache(tmp_path, pngs):
    cache = ResultCache(tmp_path / "r.sqlite")
    _scan([Counting()], pngs, cache)
    d = Counting(version="2")               # e.g. a retrained head: new identity
    _scan([d], pngs, cache)
    assert d.calls == 5
    Image.open(pngs[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(pngs[0])  # new bytes, same path
    d = Counting(version="2")
    pipe, _ = _scan([d], pngs, cache)
    assert d.calls == 1 and pipe.stats.cache_hits == 4


def test_a_detector_without_identity_disables_the_cache(tmp_path, pngs):
    cache = ResultCache(tmp_path / "r.sqlite")
    _scan([Counting(identity=False)], pngs, cache)
    d = Counting(identity=False)
    pipe, _ = _scan([d], pngs, cache)
    assert d.calls == 5 and pipe.stats.cache_hits == 0 and pipe.cache is None
    assert cache.stats()["files"] == 0


def _hits(stderr: str) -> int:
    m = re.search(r"(\d+) from the result cache", stderr)
    return int(m.group(1)) if m else 0


def test_cli_rescan_reuses_results_and_no_cache_recomputes_the_same(trained, dev_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    # a few photos are enough to tell hits from misses; each scan below decodes every one of them
    for src in sorted((dev_dir / "real" / "ml72").iterdir())[:3]:
        shutil.copy(src, folder)
    shutil.copy(dev_dir / "ai" / "sd14" / "000002025_0.png", folder)
    env = {"AIIDETECT_WEIGHTS": str(trained), "AIIDETECT_CACHE": str(tmp_path / "cache")}
    args = ("scan", str(folder), "--backbone-config", "tiny-vit", "-d", "metadata,linear", "--format", "jsonl",
            "--dtype", "float32")
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    recs = jsonl(first.stdout)
    ok = [r for r in recs if r["verdict"] != "error"]
    assert ok and _hits(first.stderr) == 0
    assert all(r["detectors"]["linear:cli-probe"]["status"] == "ok" for r in ok)
    assert all(r["detectors"]["linear:cli-probe"]["dtype"] == "float32" for r in ok)

    # The first scan is the user's process; the rescans ask what the cache decides, not what a new
    # interpreter does (each subprocess paid a torch import), so they run in-process.
    second = run_cli_in_process(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert _hits(second.stderr) == len(ok)
    assert jsonl(second.stdout) == recs

    fresh = run_cli_in_process(*args, "--no-cache", env=env)
    assert _hits(fresh.stderr) == 0
    assert jsonl(fresh.stdout) == recs

    # another dtype is another computation: not served from the fp32 rows
    bf16 = run_cli_in_process(*args[:-1], "bfloat16", env=env)
    assert bf16.returncode == 0, bf16.stderr
    assert _hits(bf16.stderr) == 0
    assert {r["detectors"]["linear:cli-probe"]["dtype"] for r in jsonl(bf16.stdout) if r["verdict"] != "error"} \
        == {"bfloat16"}

    info = run_cli_in_process("cache", "info", "--format", "json", env=env)
    assert info.returncode == 0, info.stderr
    import json

    got = json.loads(info.stdout)
    assert got["results"]["files"] >= len(ok) and got["results"]["rows"] >= 2 * len(ok)
    assert run_cli_in_process("cache", "clear", env=env).returncode == 0
    again = run_cli_in_process(*args, env=env)
    assert _hits(again.stderr) == 0 and jsonl(again.stdout) == recs


def test_a_damaged_cache_costs_speed_not_files(tmp_path, pngs):
    cache = ResultCache(tmp_path / "r.sqlite")
    _scan([Counting()], pngs, cache)
    cache._db.execute("DROP TABLE results")   # e.g. a cache written by something else
    cache._db.commit()
    d = Counting()
    pipe, recs = _scan([d], pngs, cache)
    assert d.calls == 5 and all(r["verdict"] != "error" for r in recs)
    assert pipe.cache_error and "results" in pipe.cache_error


def test_a_flipped_byte_in_a_row_is_a_miss_not_a_served_value(tmp_path, pngs):
    cache = ResultCache(tmp_path / "r.sqlite")
    _, first = _scan([Counting()], pngs, cache)
    row = cache._db.execute("SELECT rowid, result FROM results LIMIT 1").fetchone()
    text = row[1]
    i = text.index('"p_ai": ') + len('"p_ai": ')
    flipped = text[:i] + ("9" if text[i] != "9" else "8") + text[i + 1:]   # one digit of a stored p_ai
    cache._db.execute("UPDATE results SET result=? WHERE rowid=?", (flipped, row[0]))
    cache._db.commit()
    d = Counting()
    pipe, again = _scan([d], pngs, cache)
    assert d.calls == 1, "the damaged row must be recomputed, the others served"
    assert again == first
    assert pipe.cache_error and "checksum" in pipe.cache_error


def test_cache_info_reads_a_read_only_cache(tmp_path, pngs, monkeypatch):
    """mode=ro needs to create the -shm file beside a WAL database; in a read-only
    folder that fails, and `cache info` must still count the rows."""
    import sqlite3

    from aiidetect import caches

    cache = ResultCache(tmp_path / "results.sqlite")
    _scan([Counting()], pngs, cache)
    cache.close()
    real_connect = sqlite3.connect

    def refusing(database, *a, **kw):  # what a folder without write permission does to mode=ro
        if "mode=ro" in str(database):
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(database, *a, **kw)

    monkeypatch.setattr(sqlite3, "connect", refusing)
    got = caches.counts(tmp_path / "results.sqlite", "results")
    assert got == {"rows": 5, "files": 5, "read_only": True}


def test_decode_facts_are_kept_per_build(tmp_path, monkeypatch):
    """One cache, two installed versions (an upgrade, a pinned CI copy beside a development one):
    each build's records must be its own. The decode facts were keyed by the file alone, so a build
    was served the other's format, size and image info beside its own detector results."""
    from aiidetect import result_cache

    cache = ResultCache(tmp_path / "r.sqlite")
    sha = "d" * 64
    facts = {"A": {"format": "PNG", "width": 8, "height": 8, "image_info": {"mode": "RGB"}},
             "B": {"format": "PNG", "width": 8, "height": 8,
                   "image_info": {"mode": "RGB", "pixels_without_metadata": "decoder said so"}}}
    idents = {}
    for build in ("A", "B"):
        monkeypatch.setattr(result_cache, "_source_hash", build * 64)
        idents[build] = {"d": identity_key({"head": "h"}, {})}
        cache.put_many([(sha, facts[build], {"d": (idents[build]["d"], _result())})])
    for build in ("A", "B"):
        monkeypatch.setattr(result_cache, "_source_hash", build * 64)
        info, res = cache.get(sha, idents[build])
        assert info == facts[build] and res["d"] == _result(), build


def test_cache_info_in_a_folder_whose_name_is_not_utf8(tmp_path, pngs):
    """$AIIDETECT_CACHE under a name that is not UTF-8: `cache info` ended with UnicodeEncodeError."""
    import os

    from aiidetect import caches

    folder = tmp_path / os.fsdecode(b"cache-\xff")
    cache = ResultCache(folder / "results.sqlite")
    _scan([Counting()], pngs, cache)
    cache.close()
    assert caches.counts(folder / "results.sqlite", "results") == {"rows": 5, "files": 5}


def test_cache_clear_says_what_it_removed(tmp_path):
    """`cache clear` printed "cleared results (...)" whether or not there was a cache: a user could not
    tell an emptied cache from a wrong AIIDETECT_CACHE. A folder in the database's place is one error."""
    env = {"AIIDETECT_CACHE": str(tmp_path / "c")}
    empty = run_cli("cache", "clear", "all", env=env)
    assert empty.returncode == 0 and "cleared" not in empty.stderr
    assert "results: nothing to clear" in empty.stderr and "features: nothing to clear" in empty.stderr
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.sqlite").write_bytes(b"x" * 1000)
    (tmp_path / "c" / "results.sqlite-wal").write_bytes(b"y" * 234)
    r = run_cli("cache", "clear", env=env)
    assert r.returncode == 0 and "cleared results: 2 files, 1234 bytes" in r.stderr, r.stderr
    assert "features" not in r.stderr and not list((tmp_path / "c").iterdir())
    (tmp_path / "c" / "results.sqlite").mkdir()
    bad = run_cli("cache", "clear", env=env)
    assert bad.returncode == 2 and "cannot clear the cache" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cache_info_never_opens_a_fifo(tmp_path):
    """A FIFO where results.sqlite (or its -wal) belongs: SQLite's read-only open waited for a writer,
    and `cache info` hung (SIGTERM did not end it). It is reported, not read."""
    import json
    import os

    cache = tmp_path / "c"
    cache.mkdir()
    os.mkfifo(cache / "results.sqlite")
    os.mkfifo(cache / "features.sqlite-wal")
    (cache / "features.sqlite").write_bytes(b"")
    r = run_cli("cache", "info", "-f", "json", env={"AIIDETECT_CACHE": str(cache)}, timeout=30)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert "results.sqlite is not a regular file" in got["results"]["error"]
    assert "features.sqlite-wal is not a regular file" in got["features"]["error"]


def test_a_cache_of_another_layout_is_recomputed_and_the_note_says_how_to_reset_it(tmp_path):
    """A results.sqlite of another layout fails every lookup and every store, run after run: the scan is
    right (recomputed), and the note now says how to start the cache afresh."""
    import sqlite3

    (tmp_path / "c").mkdir()
    db = sqlite3.connect(tmp_path / "c" / "results.sqlite")
    db.execute("CREATE TABLE files (sha TEXT PRIMARY KEY)")
    db.execute("CREATE TABLE results (sha TEXT, ident TEXT, result TEXT, PRIMARY KEY (sha, ident))")
    db.commit()
    db.close()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "a.png")
    env = {"AIIDETECT_CACHE": str(tmp_path / "c")}
    r = run_cli("scan", str(tmp_path / "a.png"), "-d", "metadata", "-f", "jsonl", env=env)
    fresh = run_cli("scan", str(tmp_path / "a.png"), "-d", "metadata", "-f", "jsonl", "--no-cache")
    assert r.returncode == 0 and jsonl(r.stdout)[0]["p_ai"] == jsonl(fresh.stdout)[0]["p_ai"]
    assert "no such column: info" in r.stderr and "`aiidetect cache clear` starts the cache afresh" in r.stderr


def test_another_decoder_version_is_a_miss_and_another_run(tmp_path, pngs, monkeypatch):
    """Pillow 12 and 13 give other pixels for a dev-set PNG: a result computed under one was served under
    the other, and a --db resume printed it as this scan's."""
    import PIL

    from aiidetect import extras
    from aiidetect.store import run_identity

    cache = ResultCache(tmp_path / "r.sqlite")
    pipe, first = _scan([Counting()], pngs, cache)
    run = run_identity(pipe)
    monkeypatch.setattr(PIL, "__version__", "0.0.1")
    monkeypatch.setattr(extras, "_decoder_versions", None)  # a new process, another Pillow
    d = Counting()
    pipe, again = _scan([d], pngs, cache)
    assert d.calls == 5 and pipe.stats.cache_hits == 0
    assert run_identity(pipe) != run
    # the same (patched) pixels: only the key moved, and the identity each record names with it
    ids = [[e.pop("identity") for e in r["detectors"].values()] for r in first + again]
    assert again == first and ids[:len(first)] != ids[len(first):]


def test_a_c2pa_result_is_judged_at_each_scan_not_served_from_the_cache(tmp_path, pngs):
    """The C2PA reader judges the signing certificate against the clock of the scan: a manifest signed
    with a certificate that expired between two scans was served as "signature valid" (capture claim
    2.0, p_ai 0.14) from the cache, while a fresh scan said expired (0.5, p_ai 0.43)."""
    pytest.importorskip("c2pa")
    from aiidetect.metadata.detector import MetadataDetector

    cache = ResultCache(tmp_path / "r.sqlite")
    paths = [_signed(tmp_path), pngs[0]]
    _, first = _scan([MetadataDetector({"watermark": "never"})], paths, cache)
    assert "c2pa" in first[0]["detectors"]["metadata"]["facts"]
    pipe, again = _scan([MetadataDetector({"watermark": "never"})], paths, cache)
    assert pipe.stats.cache_hits == 1, "the signed file is judged again; the plain PNG still comes from the cache"
    assert again == first


def _signed(tmp_path, size=(16, 16)):
    from aiidetect.testing import c2pa_signing

    signed = tmp_path / "signed.jpg"
    signed.write_bytes(c2pa_signing.sign(c2pa_signing.make_signer(), Image.new("RGB", size, (120, 90, 60)),
                                         "JPEG", "digitalCapture", thumbnail=False))
    return str(signed)


def _spend_the_metadata_budget_at_c2pa(monkeypatch):
    """The metadata budget runs out as the C2PA stage starts, as on a loaded machine; returns the undo."""
    from aiidetect import provenance

    left = provenance._Budget.left

    def spent_at_c2pa(self, stage):
        if stage == "C2PA" and self.stage is None:
            self.stage = stage
        return left(self, stage)

    monkeypatch.setattr(provenance._Budget, "left", spent_at_c2pa)
    return lambda: monkeypatch.setattr(provenance._Budget, "left", left)


def test_a_result_the_time_budget_cut_short_is_not_served_from_the_cache(tmp_path, pngs, monkeypatch):
    """The metadata budget is wall-clock time: a loaded machine spent it before the C2PA stage of a signed
    capture, that result (no manifest read, p_ai 0.55) was cached, and every later scan was served it
    instead of reading the manifest (p_ai 0.14)."""
    pytest.importorskip("c2pa")
    from aiidetect.metadata.detector import MetadataDetector

    signed = _signed(tmp_path)
    cache = ResultCache(tmp_path / "r.sqlite")
    undo = _spend_the_metadata_budget_at_c2pa(monkeypatch)
    _, first = _scan([MetadataDetector({"watermark": "never"})], [signed], cache)
    assert "c2pa" not in first[0]["detectors"]["metadata"].get("facts", {})
    undo()
    pipe, again = _scan([MetadataDetector({"watermark": "never"})], [signed], cache)
    assert pipe.stats.cache_hits == 0 and "c2pa" in again[0]["detectors"]["metadata"]["facts"]


@pytest.mark.parametrize("watermark", ["never", "always"])
def test_a_signed_file_is_served_its_model_results_and_only_its_metadata_is_judged_again(tmp_path, pngs, watermark):
    """A file whose C2PA manifest was read missed the cache whole: every model ran again at every scan, and an
    archive of signed photos gained nothing from the cache. Only its metadata depends on the clock."""
    pytest.importorskip("c2pa")
    from aiidetect.metadata.detector import MetadataDetector

    # 256x256: the watermark check reads the decoded image (`always`), which a hit must decode as a scan does
    paths = [_signed(tmp_path, (256, 256)), pngs[0]]
    cache = ResultCache(tmp_path / "r.sqlite")
    model = Counting()
    _, first = _scan([MetadataDetector({"watermark": watermark}), model], paths, cache)
    assert model.calls == 2 and "c2pa" in first[0]["detectors"]["metadata"]["facts"]
    if watermark == "always":
        assert first[0]["detectors"]["metadata"]["facts"]["watermark"]["checked"] is True
    model = Counting()
    pipe, again = _scan([MetadataDetector({"watermark": watermark}), model], paths, cache)
    assert model.calls == 0, "the model's results of the signed file come from the cache"
    assert (pipe.stats.cache_hits, pipe.stats.cache_rerun) == (2, 1)
    assert again == first
    assert cache.stats()["results"] == 3  # the signed file's metadata result is still never stored


def test_a_metadata_result_cut_short_is_judged_again_beside_cached_model_results(tmp_path, monkeypatch):
    pytest.importorskip("c2pa")
    from aiidetect.metadata.detector import MetadataDetector

    signed = _signed(tmp_path)
    cache = ResultCache(tmp_path / "r.sqlite")
    undo = _spend_the_metadata_budget_at_c2pa(monkeypatch)
    _scan([MetadataDetector({"watermark": "never"}), Counting()], [signed], cache)
    undo()
    model = Counting()
    pipe, again = _scan([MetadataDetector({"watermark": "never"}), model], [signed], cache)
    assert model.calls == 0 and (pipe.stats.cache_hits, pipe.stats.cache_rerun) == (1, 1)
    assert "c2pa" in again[0]["detectors"]["metadata"]["facts"]
    assert not any(e["id"] == "metadata-timeout" for e in again[0]["detectors"]["metadata"]["evidence"])


def test_cli_a_signed_file_runs_no_model_on_a_rescan_and_the_summary_says_what_was_judged_again(
        trained, tmp_path, monkeypatch):
    """The scan command (a library Scanner), into a new --db store: the model is not run for a signed file
    whose features' results are cached; a resume of the first store reprints its record, reading nothing."""
    pytest.importorskip("c2pa")
    from aiidetect.pipeline import stages

    signed = _signed(tmp_path)
    env = {"AIIDETECT_WEIGHTS": str(trained), "AIIDETECT_CACHE": str(tmp_path / "cache")}
    args = ("scan", signed, "--backbone-config", "tiny-vit", "-d", "metadata,linear", "--format", "jsonl",
            "--dtype", "float32")
    passes = []
    encode = stages.encode
    monkeypatch.setattr(stages, "encode", lambda groups, samples: passes.append(len(samples)) or encode(groups, samples))
    first = run_cli_in_process(*args, "--db", str(tmp_path / "a.sqlite"), env=env)
    assert first.returncode == 0, first.stderr
    assert passes == [1] and "c2pa" in jsonl(first.stdout)[0]["detectors"]["metadata"]["facts"]
    second = run_cli_in_process(*args, "--db", str(tmp_path / "b.sqlite"), env=env)
    assert second.returncode == 0, second.stderr
    assert passes == [1], "no model pass for the signed file"
    assert "1 from the result cache (1 of them with its metadata judged again)" in second.stderr
    assert jsonl(second.stdout) == jsonl(first.stdout)
    resumed = run_cli_in_process(*args, "--db", str(tmp_path / "a.sqlite"), env=env)
    assert passes == [1] and "1 unchanged since an earlier run" in resumed.stderr
    assert "from the result cache" not in resumed.stderr


def test_a_metadata_result_judged_again_on_a_hit_is_stored_and_served_next_time(tmp_path, pngs, monkeypatch):
    """A hit whose metadata row is missing (here: an unsigned file whose budget ran out on a loaded machine)
    runs metadata again; that result, cacheable now, is stored beside the models' rows, so the next scan is a
    whole hit rather than a decode for metadata at every scan. The record is a fresh scan's throughout."""
    from aiidetect import provenance
    from aiidetect.metadata.detector import MetadataDetector

    left = provenance._Budget.left

    def spent_at_once(self, stage):
        if self.stage is None:
            self.stage = stage
        return left(self, stage)

    cache = ResultCache(tmp_path / "r.sqlite")
    dets = lambda: [MetadataDetector({"watermark": "never"}), Counting()]  # noqa: E731
    monkeypatch.setattr(provenance._Budget, "left", spent_at_once)
    _, cut = _scan(dets(), [pngs[0]], cache)
    assert any(e["id"] == "metadata-timeout" for e in cut[0]["detectors"]["metadata"]["evidence"])
    monkeypatch.setattr(provenance._Budget, "left", left)
    _, fresh = _scan(dets(), [pngs[0]], None)
    pipe, again = _scan(dets(), [pngs[0]], cache)
    assert (pipe.stats.cache_hits, pipe.stats.cache_rerun) == (1, 1) and again == fresh
    pipe, third = _scan(dets(), [pngs[0]], cache)
    assert (pipe.stats.cache_hits, pipe.stats.cache_rerun) == (1, 0), "the result judged again was stored"
    assert third == fresh
