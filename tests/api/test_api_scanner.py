"""The library API (aiidetect.api) used from Python, without the command line:
the same records as `aiidetect scan -f json`, usage errors as exceptions,
no torch for a metadata-only scan, nothing on stdout, the cache closed on exit."""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from aiidetect.api import Device, Runtime, ScanError, ScanOptions, Scanner, UsageError
from aiidetect.report.safe import dumps

from conftest import run_cli


def _as_json(records) -> list[dict]:
    # Through the writers' own serializer: what a script reading the JSON report would see.
    return [json.loads(dumps(r.to_dict())) for r in records]


@pytest.fixture(scope="module")
def few(dev_dir):
    from aiidetect.discover import IMAGE_EXTS

    return sorted(str(p) for p in (dev_dir / "formats").rglob("*") if p.suffix.lower() in IMAGE_EXTS)[:12]


def test_three_lines_scan_a_folder(dev_dir):
    from aiidetect import ScanOptions, Scanner

    with Scanner(ScanOptions(detectors=["metadata"], cache=False)) as scanner:
        records = list(scanner.scan([dev_dir / "formats"]))
    assert len(records) == scanner.stats["files"] > 10
    assert {r.verdict for r in records} <= {"ai-generated", "uncertain", "likely-real", "error"}
    assert all(r.fusion == {"kind": "rules"} for r in records)


def test_metadata_records_equal_the_cli_json(few):
    with Scanner(ScanOptions(detectors=["metadata"], cache=False, fusion="none")) as scanner:
        lib = _as_json(scanner.scan(few))
    r = run_cli("scan", *few, "-d", "metadata", "--no-cache", "--fusion", "none", "-f", "json", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert lib == json.loads(r.stdout)


@pytest.mark.slow  # trains a tiny probe once per session (shared fixture) and builds tiny-vit twice
def test_pixel_records_equal_the_cli_json(few, trained):
    opts = ScanOptions(detectors=["metadata", "linear"], backbone_config="tiny-vit", weights_dirs=[trained],
                       dtype="float32", cache=False, batch_size=4)
    with Scanner(opts) as scanner:
        lib = _as_json(scanner.scan(few))
        assert [d.name for d in scanner.detectors] == ["metadata", "linear:cli-probe"]
    r = run_cli("scan", *few, "-d", "metadata,linear", "--backbone-config", "tiny-vit", "--weights-dir", str(trained),
                "--dtype", "float32", "--no-cache", "--batch-size", "4", "-f", "json", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    cli = json.loads(r.stdout)
    assert lib == cli
    assert all(rec["detectors"]["linear:cli-probe"]["status"] == "ok" for rec in cli if rec["verdict"] != "error")


@pytest.mark.parametrize("kw, words", [
    ({"detectors": ["metadata", "nosuch"]}, "unknown detector"),
    ({"detectors": "metadata,nosuch"}, "nosuch"),
    ({"runtime": "tensorrt"}, "--runtime"),
    ({"runtime": "onnx"}, "--onnx DIR"),
    ({"device": "tpu"}, "--device"),
    ({"dtype": "int4"}, "--dtype"),
    ({"watermark": "sometimes"}, "--watermark"),
    ({"engine": "spark"}, "--engine"),
    ({"address": "auto"}, "--engine ray"),
    ({"shard": "4/3"}, "shard"),
    ({"batch_size": 0}, "--batch-size"),
    ({"workers": -1}, "--workers"),
    ({"backbone_config": "no-such-config"}, "no-such-config"),
    ({"detectors": 5}, "detectors"),  # was a TypeError from inside split_list
    ({"shard": 3}, "--shard"),  # was an AttributeError from inside parse_shard
    ({"include": [3]}, "include"),
    ({"db": 3}, "db"),  # these were TypeErrors from inside the store, the ONNX loader, the fusion reader
    ({"onnx_dir": 3, "runtime": "onnx"}, "onnx_dir"),
    ({"fusion": 3}, "fusion"),
    ({"extra": None}, "extra"),
    ({"follow_links": "no"}, "follow_links"),  # a str silently meant True
    ({"recursive": "no"}, "recursive"),
    ({"batch_size": True}, "--batch-size"),
    ({"backbone_seed": "x"}, "--backbone-seed"),
    ({"file_timeout": -1}, "--file-timeout"),
    ({"file_timeout": float("nan")}, "--file-timeout"),
    ({"file_timeout": "60"}, "--file-timeout"),
    ({"end_process_on_timeout": "no"}, "end_process_on_timeout"),  # a str meant True: the caller's process ended
])
def test_bad_options_raise_usage_error(kw, words):
    with pytest.raises(UsageError, match=words or None) as exc:
        Scanner(ScanOptions(cache=False, **kw))
    assert isinstance(exc.value, ScanError) and isinstance(exc.value, ValueError)


def test_enum_members_and_strings_are_the_same_option(tmp_path):
    s = Scanner(ScanOptions(detectors=["metadata"], device=Device.cpu, runtime=Runtime.torch, cache=False))
    assert s.options.device == "cpu" and type(s.options.device) is str and s.context.device == "cpu"
    given = ScanOptions(detectors="metadata", cache=False)
    Scanner(given)
    assert given.detectors == "metadata"  # the caller's options are not rewritten


def test_path_and_fusion_errors_are_usage_errors(tmp_path, few):
    s = Scanner(ScanOptions(detectors=["metadata"], cache=False))
    with pytest.raises(UsageError, match="no such file"):
        s.scan([tmp_path / "missing.jpg"])
    (tmp_path / "head").mkdir()
    with pytest.raises(UsageError):
        Scanner(ScanOptions(detectors=["metadata"], cache=False, fusion=tmp_path / "head")).scan(few)
    # writing the report over an input is refused before anything is read
    with pytest.raises(UsageError):
        s.scan(few, output=few[0])


def test_library_prints_nothing_to_stdout_and_notes_go_to_the_callback(few, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("AIIDETECT_CACHE", str(blocker))  # the result cache cannot open here
    notes = []
    with Scanner(ScanOptions(detectors=["metadata"]), on_note=notes.append) as s:
        n = sum(1 for _ in s.scan(few))
    assert n == len(few)
    assert any("result cache unavailable" in m for m in notes), notes
    assert capsys.readouterr().out == ""


def test_context_manager_closes_the_cache(few):
    with Scanner(ScanOptions(detectors=["metadata"])) as s:
        list(s.scan(few))
        cache = s._cache
        assert cache is not None and s.stats["files"] == len(few)
    with pytest.raises(sqlite3.ProgrammingError):
        cache._db.execute("SELECT 1")
    # a second pass reuses what the first stored (errors are never stored)
    with Scanner(ScanOptions(detectors=["metadata"])) as s:
        recs = list(s.scan(few))
        assert s.stats.get("cache_hits") == sum(r.verdict != "error" for r in recs) > 0


def test_results_store_session_complete_or_interrupted(few, tmp_path):
    db = tmp_path / "audit.sqlite"
    with Scanner(ScanOptions(detectors=["metadata"], cache=False, db=db)) as s:
        it = s.scan(few, argv=["test"])
        for _ in range(3):
            next(it)
        it.close()  # the caller stopped early, after asking for the third record
        list(s.scan(few, argv=["test"]))
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT status FROM sessions ORDER BY session_id").fetchall()
    assert [r[0] for r in rows] == ["interrupted", "complete"]
    # A record is stored once the caller comes back for the next one: two were, the third is scanned again.
    assert s.stats.get("resumed") == 2


def test_metadata_scanner_never_imports_torch(dev_dir):
    code = ("import sys; from aiidetect import Scanner, ScanOptions; "
            f"recs = list(Scanner(detectors=['metadata'], cache=False).scan([{str(dev_dir / 'formats')!r}])); "
            "Scanner(cache=False); "  # the CLIP families too, until a detector is built (docs/api.md)
            "assert recs; print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


def test_one_call_form(few):
    from aiidetect.api import scan

    recs = list(scan(few, detectors=["metadata"], cache=False, fusion="none"))
    assert [r.file for r in recs] == few


def test_ray_engine_missing_is_a_scan_error(few, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    s = Scanner(ScanOptions(detectors=["metadata"], cache=False, engine="ray"))
    with pytest.raises(ScanError):
        s.scan(few)


def _statuses(db) -> list[str]:
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT status FROM sessions ORDER BY session_id")]


def test_a_scan_closed_or_dropped_before_its_first_record_is_interrupted(few, tmp_path):
    import gc

    db = tmp_path / "audit.sqlite"
    with Scanner(ScanOptions(detectors=["metadata"], cache=False, db=db)) as s:
        s.scan(few, argv=["test"]).close()
        it = s.scan(few, argv=["test"])
        del it
        gc.collect()
        # Both sessions were opened by scan(); neither may stay 'running' with its connection open.
        assert _statuses(db) == ["interrupted", "interrupted"]
        assert len(list(s.scan(few, argv=["test"]))) == len(few)
    assert _statuses(db) == ["interrupted", "interrupted", "complete"]


def test_closing_the_scanner_stops_the_scans_still_being_iterated(few, tmp_path):
    import threading

    db = tmp_path / "audit.sqlite"
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="caller"):
        with Scanner(ScanOptions(detectors=["metadata"], db=db, workers=2, batch_size=2)) as s:
            it = s.scan(few, argv=["test"])  # kept by the caller past the with block
            next(it)
            cache = s._cache
            raise RuntimeError("caller")
    # The with block ended the scan it held: no decode thread left, the session said so, and the
    # cache closed under a scan that could still write to it would have been a use after close.
    assert set(threading.enumerate()) - before == set()
    assert _statuses(db) == ["interrupted"]
    with pytest.raises(sqlite3.ProgrammingError):
        cache._db.execute("SELECT 1")
    assert list(it) == []
    s.close()  # twice is fine


def test_one_path_is_one_path_not_its_letters(tmp_path, few):
    from pathlib import Path

    from aiidetect import api

    folder = str(Path(few[0]).parent)
    with Scanner(ScanOptions(detectors=["metadata"], cache=False)) as s:
        want = [r.file for r in s.scan([folder])]
        assert [r.file for r in s.scan(folder)] == want  # was: "no such file or directory: /"
        assert [r.file for r in s.scan(Path(folder))] == want  # was: TypeError, not iterable
        for bad in (None, 3, [few[0], 3]):
            with pytest.raises(UsageError, match="path"):
                s.scan(bad)
    assert [r["file"] for r in api.meta_reports(folder)] == want
    with pytest.raises(UsageError, match="unknown layout"):
        api.load_labelled(str(tmp_path))


def test_one_glob_or_weights_folder_given_as_a_str_is_one(dev_dir, tmp_path):
    import shutil
    from pathlib import Path

    folder = tmp_path / "in"
    folder.mkdir()
    for i, kind in enumerate(("gif", "png")):
        shutil.copy(sorted((dev_dir / "formats" / kind).glob(f"*.{kind}"))[0], folder / f"{i}.{kind}")
    first, second = "0.gif", "1.png"
    names = {}
    for opt in ("include", "exclude"):
        with Scanner(ScanOptions(detectors=["metadata"], cache=False, **{opt: "*" + Path(first).suffix})) as s:
            names[opt] = [Path(r.file).name for r in s.scan(folder)]
    # As letters, "*" took every file for include and left none for exclude.
    assert names == {"include": [first], "exclude": [second]}
    s = Scanner(ScanOptions(detectors=["metadata"], cache=False, weights_dirs=str(tmp_path)))
    assert s.options.weights_dirs == [str(tmp_path)] and tmp_path in s.context.weights_dirs


def test_one_call_form_dropped_before_its_first_record_closes_the_cache(few, monkeypatch):
    from aiidetect import api
    from aiidetect.result_cache import ResultCache

    closed = []
    real = ResultCache.close
    monkeypatch.setattr(ResultCache, "close", lambda self: (closed.append(self), real(self)))
    api.scan(few, detectors=["metadata"]).close()
    assert len(closed) == 1
    assert len(list(api.scan(few, detectors=["metadata"]))) == len(few) and len(closed) == 2


def test_build_detectors_checks_the_options_it_is_given():
    from aiidetect.api import build_detectors

    given = ScanOptions(detectors="metadata")
    dets, _ = build_detectors(given)  # was: ScanError "KeyError: unknown detector 'm'"
    assert [d.name for d in dets] == ["metadata"] and given.detectors == "metadata"
    with pytest.raises(UsageError, match="--device"):
        build_detectors(ScanOptions(detectors=["metadata"], device="tpu"))
    from aiidetect.api import run_context

    assert run_context(given)[0] == ["metadata"]  # was: ['m', 'e', 't', 'a', ...]


def test_the_options_table_in_the_docs_names_every_field_and_its_string_default():
    import dataclasses
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    table = doc.split("## ScanOptions", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cols = line.split(" | ")
        if line.startswith("| `") and len(cols) >= 3:
            for name in re.findall(r"`(\w+)`", cols[0]):
                rows[name] = cols[1]
    missing = [f.name for f in dataclasses.fields(ScanOptions) if f.name not in rows]
    # A string default is quoted as it is ("runtime" was documented as "torch" after it became "auto").
    wrong = [f"{f.name}: {f.default!r} not in {rows[f.name]!r}" for f in dataclasses.fields(ScanOptions)
             if f.name in rows and isinstance(f.default, str) and f'"{f.default}"' not in rows[f.name]]
    assert (missing, wrong) == ([], [])


def test_a_scanner_scans_again_after_close_with_its_cache(few):
    from aiidetect.result_cache import ResultCache

    with Scanner(ScanOptions(detectors=["metadata"])) as s:
        first = _as_json(s.scan(few))
    # A closed Scanner used again: the same records, from its cache reopened (it scanned without one).
    assert _as_json(s.scan(few)) == first and s.stats["cache_hits"] > 0
    s.close()
    mine = ResultCache()
    try:
        with Scanner(ScanOptions(detectors=["metadata"]), cache=mine) as s:
            list(s.scan(few))
        assert _as_json(s.scan(few)) == first and s.stats["cache_hits"] > 0  # a cache passed in is kept
        mine._db.execute("SELECT 1")  # and left open
    finally:
        mine.close()


def test_every_exported_name_exists_and_is_documented():
    import re
    from pathlib import Path

    import aiidetect
    import aiidetect.api as api

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    names = [("aiidetect", n, aiidetect) for n in aiidetect.__all__] + [("aiidetect.api", n, api) for n in api.__all__]
    assert [f"{m}.{n}" for m, n, mod in names if not hasattr(mod, n)] == []
    assert [f"{m}.{n}" for m, n, _ in names if not re.search(rf"`[\w.]*\b{re.escape(n)}\b", doc)] == []


def test_a_dict_for_options_says_what_to_pass():
    with pytest.raises(TypeError, match=r"Scanner\(\*\*d\)"):
        Scanner({"detectors": ["metadata"]})


def test_heads_functions_take_one_folder_as_one(tmp_path):
    import numpy as np

    from aiidetect.api import head_rows, verify_heads
    from aiidetect.heads import save_head

    save_head(tmp_path / "h", {"weight": np.ones((1, 4), np.float32)}, {"name": "h", "detector": "linear"})
    # As letters, one folder was looked for in '/', 't', 'm', 'p'... and no head was found.
    assert [r["name"] for r in head_rows(str(tmp_path))] == [r["name"] for r in head_rows([tmp_path])] == ["h"]
    assert [(n, problems) for n, _, problems in verify_heads(tmp_path)] == [("h", [])]


@pytest.mark.parametrize("limit", [-1, 0, "5", 2.5])
def test_load_labelled_refuses_a_limit_that_is_not_a_count(dev_manifest, limit):
    from aiidetect.api import load_labelled

    with pytest.raises(UsageError, match="limit"):
        load_labelled([dev_manifest], limit=limit)


def test_cache_as_a_keyword_option_is_the_option(few):
    with Scanner(detectors=["metadata"], cache=True) as s:
        list(s.scan(few))
        assert s.options.cache is True and s._own_cache
        list(s.scan(few))
        assert s.stats["cache_hits"] > 0 and s.cache_error is None  # was: "AttributeError: 'bool' ... 'get'"
    with Scanner(detectors=["metadata"], cache=False) as s:
        list(s.scan(few))
        assert s.options.cache is False and s.stats["cache_hits"] == 0 and s.cache_error is None
    with pytest.raises(TypeError, match="ScanOptions"):
        Scanner(ScanOptions(detectors=["metadata"]), cache=False)


def test_stdin_that_is_not_a_stream_is_a_usage_error(few):
    import io

    from aiidetect.api import meta_candidates

    s = Scanner(ScanOptions(detectors=["metadata"], cache=False))
    with pytest.raises(UsageError, match="stdin takes a text stream"):
        s.scan("-", stdin=few[0])  # was: AttributeError 'str' object has no attribute 'read'
    with pytest.raises(UsageError, match="stdin takes a text stream"):
        meta_candidates(["-"], stdin=few)
    assert [r.file for r in s.scan("-", stdin=io.StringIO(few[0] + "\n"))] == [few[0]]


def test_meta_report_and_resolve_fusion_refuse_what_is_not_a_path(few, tmp_path):
    from pathlib import Path

    from aiidetect.api import meta_report, resolve_fusion

    for bad in (None, 3):
        with pytest.raises(UsageError, match="path"):
            meta_report(bad)  # was: TypeError from inside display_path
    assert meta_report(Path(few[0]))["file"] == few[0]
    with pytest.raises(UsageError, match="fusion takes"):
        resolve_fusion(3)
    # One weights folder as a str is one (as letters it looked in '/', 't', ...).
    assert resolve_fusion("auto", str(tmp_path)) == (None, "rules only (no fusion model found)")


def test_a_session_that_fails_before_its_records_is_closed(few, tmp_path):
    """Whatever stops records() after the store session began (here an on_note that raises, as
    Ctrl-C could there) closes it: not left `running` with a slot file the next run calls dead."""
    from aiidetect.crashguard import CrashGuard, Seen, slot_files

    db = tmp_path / "s.sqlite"
    g = CrashGuard(str(db), 50, {}, lambda p: Seen(p, 1, 1))
    with g.watch("/gone/x.png"):                       # a session killed while reading leaves this
        dead = open(g.path, "rb").read()
    g.close()
    open(str(db) + "-reading-50", "wb").write(dead)

    def note(msg):
        if "ended while reading" in msg:
            raise RuntimeError("the caller's callback failed")

    s = Scanner(ScanOptions(detectors=["metadata"], cache=False, db=str(db)), on_note=note)
    with pytest.raises(RuntimeError):
        s.records(s.candidates(few[:1]))
    s.close()
    with sqlite3.connect(db) as c:
        assert [st for (st,) in c.execute("SELECT status FROM sessions")] == ["interrupted"]
    assert slot_files(str(db)) == []


def test_the_crash_note_says_what_this_run_does_without_a_guard(few, tmp_path, monkeypatch):
    from aiidetect import crashguard

    db = tmp_path / "s.sqlite"
    g = crashguard.CrashGuard(str(db), 50, {}, lambda p: crashguard.Seen(p, 1, 1))
    with g.watch("/gone/x.png"):
        dead = open(g.path, "rb").read()
    g.close()
    open(str(db) + "-reading-50", "wb").write(dead)

    def no_file_here(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(crashguard.CrashGuard, "__init__", no_file_here)  # a folder that takes no new file
    notes = []
    with Scanner(ScanOptions(detectors=["metadata"], cache=False, db=str(db)), on_note=notes.append) as s:
        assert len(list(s.scan(few[:1]))) == 1
    # Before: "each is read alone this time, and not again if this run ends there too", which it was not.
    assert [n for n in notes if "ended while reading" in n and "read as any other" in n], notes


def test_one_scanner_s_pixel_limit_is_not_another_s_nor_the_caller_s(dev_dir):
    """Decoding set Pillow's process-wide MAX_IMAGE_PIXELS from the scan's --max-pixels: a Scanner with a
    small limit (in another thread, or earlier) made the next scan's metadata walkers fail on an iPhone
    HEIC (camera EXIF lost: p_ai 0.17 became 0.52), and the caller's own Image.open raised."""
    from PIL import Image

    from aiidetect.api import meta_report

    heic = str(dev_dir / "formats" / "heic" / "IMG_2927.HEIC")
    small = str(dev_dir / "formats" / "png" / sorted(p.name for p in (dev_dir / "formats" / "png").iterdir())[0])
    want_meta = meta_report(heic)
    with Scanner(detectors=["metadata"], cache=False) as s:
        want = _as_json(s.scan(heic))
    assert want_meta["facts"]["exif"]["make"] == "Apple"
    before = Image.MAX_IMAGE_PIXELS
    with Scanner(detectors=["metadata"], cache=False, max_pixels=20_000) as s:
        list(s.scan(small))
    assert Image.MAX_IMAGE_PIXELS == before
    assert meta_report(heic) == want_meta
    with Scanner(detectors=["metadata"], cache=False) as s:
        assert _as_json(s.scan(heic)) == want


def test_threads_reading_metadata_leave_the_warning_filters_as_they_were(dev_dir):
    """The metadata readers silenced Pillow with warnings.catch_warnings, which is not thread-safe: three
    threads calling meta_report (or one scan's decode workers) left "ignore every warning" in the
    process's filters for good, so the embedding program never saw a warning again."""
    import threading
    import warnings

    from aiidetect.api import meta_report

    files = sorted(str(p) for p in (dev_dir / "formats").glob("*/*"))[:40]  # HEIC, GIF: Pillow's readers
    meta_report(files[0])  # the readers' own imports add their filters once
    before = list(warnings.filters)

    def job():
        for f in files * 2:
            meta_report(f)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == before


def test_building_a_clip_detector_leaves_the_embedding_program_s_logging_alone():
    """Importing open_clip raised the root logger to ERROR for good: a web service that built a CLIP
    Scanner never logged another warning, from any of its loggers. Only open_clip's own chatter, which
    it logs through the root logger, is dropped."""
    import logging

    from aiidetect.clip_env import import_open_clip

    root = logging.getLogger()
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.name, record.getMessage()))

    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        open_clip = import_open_clip()
        assert root.level == logging.INFO
        logging.getLogger("svc").warning("the service's own warning")
        logging.warning("logged on the root logger")
        root.handle(root.makeRecord("root", logging.WARNING, open_clip.factory.__file__, 1, "random init", (), None))
        root.handle(root.makeRecord("root", logging.ERROR, open_clip.factory.__file__, 1, "open_clip failed", (), None))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert seen == [("svc", "the service's own warning"), ("root", "logged on the root logger"),
                    ("root", "open_clip failed")]


def test_bytes_paths_open_files_and_globs(tmp_path, few):
    """A bytes path (what os.listdir(b".") gives for a name that is not UTF-8) was scanned byte by byte
    ("got int 47"); an open file was iterated as its lines ("got bytes b'...'"); a glob, which the docs
    said scan() took, was "no such file" without saying why."""
    import io
    import os
    import shutil

    from aiidetect import api

    odd = os.path.join(os.fsencode(tmp_path), b"\xff-photo" + os.path.splitext(os.fsencode(few[0]))[1])
    shutil.copyfile(few[0], odd)
    with Scanner(ScanOptions(detectors=["metadata"], cache=False)) as s:
        (rec,) = s.scan(odd)
        assert rec.file == os.fsdecode(odd) and rec.error is None
        assert [r.file for r in s.scan([os.fsencode(few[0]), few[1]])] == few[:2]
        with pytest.raises(UsageError, match="not an open file"):
            s.scan(io.BytesIO(b"x\ny\n"))
        with pytest.raises(UsageError, match=r"glob is not expanded.*glob\.glob"):
            s.scan(str(tmp_path / "*.png"))
    assert api.meta_report(odd)["error"] is None
    db = os.path.join(os.fsencode(tmp_path), b"\xfe-audit.sqlite")
    with Scanner(ScanOptions(detectors=["metadata"], cache=False, db=db)) as s:
        assert len(list(s.scan(few[:2], argv=["test"]))) == 2
    assert os.path.exists(db)


def test_output_given_as_bytes_is_a_path_and_anything_else_a_usage_error(tmp_path, few):
    import os

    from aiidetect import api

    with Scanner(ScanOptions(detectors=["metadata"], cache=False)) as s:
        # was: TypeError "a bytes-like object is required, not 'str'" from inside the output guard
        assert len(list(s.scan(few[:2], output=os.fsencode(tmp_path / "report.json")))) == 2
        with pytest.raises(UsageError, match="output"):
            s.scan(few[:2], output=os.fsencode(few[0]))  # the report would overwrite an input
        with pytest.raises(UsageError, match="output"):
            s.scan(few[:2], output=3)
    with pytest.raises(UsageError, match="output"):
        api.iter_meta_candidates(few[:2], output=3)


def test_close_from_another_thread_stops_the_scan_running_there(few, tmp_path, monkeypatch):
    """A service stopping a scan from another thread: close() raised "generator already executing" (the
    scan is running in the consumer's thread), the scan went on to the end and the store stayed open."""
    import threading

    db = tmp_path / "audit.sqlite"
    inside, closed = threading.Event(), threading.Event()
    real_engine = Scanner._engine

    def engine(self, pipe, cands):
        for i, rec in enumerate(real_engine(self, pipe, cands)):
            if i == 3:  # the consumer's thread is computing this record when close() comes
                inside.set()
                assert closed.wait(10)
            yield rec

    monkeypatch.setattr(Scanner, "_engine", engine)
    s = Scanner(ScanOptions(detectors=["metadata"], db=db, workers=2, batch_size=2))
    before = set(threading.enumerate())
    got, errors = [], []

    def consume():
        try:
            got.extend(s.scan(few, argv=["test"]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    assert inside.wait(10)
    try:
        s.close()
    finally:
        closed.set()
    t.join(10)
    assert not t.is_alive() and errors == []
    assert len(got) == 3  # the record being computed when close() came is not handed out
    assert set(threading.enumerate()) - before == set()
    assert _statuses(db) == ["interrupted"]
    assert s._store is None and s._cache is None  # closed by the scan when it ended


def test_close_from_another_thread_while_a_scan_starts_stops_that_scan(few, tmp_path, monkeypatch):
    """close() from another thread while a scan was being set up (its store session open, not yet counted
    as running) closed the store and the cache under it: the scan ran to the end anyway, its last rows
    failed on the closed store (ScanError) and its session stayed `running`."""
    import threading

    db = tmp_path / "audit.sqlite"
    real_engine = Scanner._engine

    def engine(self, pipe, cands):
        t = threading.Thread(target=self.close)
        t.start()
        t.join(10)
        return real_engine(self, pipe, cands)

    monkeypatch.setattr(Scanner, "_engine", engine)
    s = Scanner(ScanOptions(detectors=["metadata"], db=db, cache=False))
    assert list(s.scan(few, argv=["test"])) == []  # stopped before its first record
    assert _statuses(db) == ["interrupted"]
    assert s._store is None  # closed by the scan when it ended


def test_a_scan_started_while_close_releases_opens_its_own_store(few, tmp_path, monkeypatch):
    """close() decided nothing was running, then closed the store and the cache: a scan another thread
    started meanwhile opened its session on that store, and failed on it (ScanError) once closed."""
    import threading

    from aiidetect.store import ResultsStore

    db = tmp_path / "audit.sqlite"
    s = Scanner(ScanOptions(detectors=["metadata"], db=db, cache=False))
    assert len(list(s.scan(few, argv=["first"]))) == len(few)
    real_close, got, errors = ResultsStore.close, [], []

    def consume():
        try:
            got.extend(s.scan(few, argv=["second"]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def close_store(store):
        if not got and not errors and not hasattr(close_store, "t"):
            close_store.t = threading.Thread(target=consume)  # starts while this close() releases
            close_store.t.start()
            for _ in range(200):
                if s._running:
                    break
                threading.Event().wait(0.01)
        real_close(store)

    monkeypatch.setattr(ResultsStore, "close", close_store)
    s.close()
    close_store.t.join(10)
    assert errors == [] and len(got) == len(few)
    s.close()
    assert _statuses(db) == ["complete", "complete"]


def test_stats_are_the_last_scan_s_even_when_an_older_one_ends_later(few):
    """A notebook keeps an iterator from an earlier cell: when it was closed or collected after a newer
    scan ended, `stats` became the older scan's (files: 1 after a scan of 2)."""
    with Scanner(ScanOptions(detectors=["metadata"], cache=False)) as s:
        older = s.scan(few)
        next(older)
        assert len(list(s.scan(few[:2]))) == 2
        older.close()
        assert s.stats["files"] == 2


@pytest.fixture
def torch_one_thread(monkeypatch):
    """torch set to one thread, as a service running one worker per process does; put back after."""
    import os

    torch = pytest.importorskip("torch")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: every count is the same")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


def test_a_clip_scanner_puts_torch_s_thread_count_back_when_closed(torch_one_thread, tmp_path):
    """use_all_cores() set torch to every core for good: a service that had chosen its own count (one
    thread per worker process) ran oversubscribed after its first scan."""
    import os

    torch = torch_one_thread
    opts = dict(detectors=["metadata", "linear"], backbone_config="tiny-vit", weights_dirs=[tmp_path], cache=False)
    with Scanner(**opts) as a:
        a.detectors
        assert torch.get_num_threads() == os.cpu_count()  # the scan's own choice, while it is open
        with Scanner(**opts) as b:
            b.detectors
        assert torch.get_num_threads() == os.cpu_count()  # another Scanner still holds every core
        a.close()
        assert torch.get_num_threads() == 1
        list(a.scan(tmp_path))  # scanning again after close() holds them again
        assert torch.get_num_threads() == os.cpu_count()
    assert torch.get_num_threads() == 1


def test_a_clip_scanner_that_fails_to_assemble_lets_the_cores_go(torch_one_thread, tmp_path):
    """A fusion folder that cannot be read is a UsageError on first use, after the cores were taken: the
    Scanner, which can run nothing, held every core until closed, and a caller that reported the error
    and moved on never closed it."""
    torch = torch_one_thread
    s = Scanner(detectors=["metadata", "linear"], backbone_config="tiny-vit", weights_dirs=[tmp_path],
                cache=False, fusion=tmp_path / "no-fusion")
    with pytest.raises(UsageError):
        s.detectors
    assert torch.get_num_threads() == 1


def test_a_store_that_cannot_be_written_mid_scan_is_a_scan_error(few, tmp_path, monkeypatch):
    """A full disk under `db` raised aiidetect.store.StoreError out of the iterator, which a caller catching
    the documented ScanError missed; a failure to store the last rows also left the scan counted as
    running, so close() never closed the store or the cache."""
    import sqlite3

    from aiidetect.store import ResultsStore

    def full(self, rows):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ResultsStore, "write_rows", full)
    s = Scanner(ScanOptions(detectors=["metadata"], db=tmp_path / "audit.sqlite"))
    with pytest.raises(ScanError, match="cannot write to the results store"):
        list(s.scan(few, argv=["test"]))
    s.close()
    assert s._store is None and s._cache is None


def test_a_store_that_cannot_be_read_mid_scan_is_a_scan_error(few, tmp_path):
    """A resume lookup failing (a disk error, a lock held past the timeout) raised sqlite3.OperationalError
    out of the records iterator, which a caller catching the documented ScanError missed."""
    import sqlite3

    db = tmp_path / "audit.sqlite"
    with Scanner(ScanOptions(detectors=["metadata"], db=db, cache=False)) as s:
        assert len(list(s.scan(few, argv=["first"]))) == len(few)
        it = s.scan(few, argv=["again"])
        real = s._store._db

        class Failing:
            def __getattr__(self, name):
                return getattr(real, name)

            def execute(self, sql, *args):
                if "WHERE run_id=? AND path=?" in sql:
                    raise sqlite3.OperationalError("disk I/O error")
                return real.execute(sql, *args)

        s._store._db = Failing()
        try:
            with pytest.raises(ScanError, match="cannot read the results store .*disk I/O error"):
                list(it)
        finally:
            s._store._db = real


def test_two_threads_building_a_seeded_backbone_do_not_draw_from_each_other(monkeypatch):
    """A random-init backbone (tiny-vit, a config without weights) is torch's global generator seeded
    with `backbone_seed`: two threads' Scanners building at once interleaved their draws, and about one
    build in twelve got other weights than its seed names. The builds now take turns."""
    import threading
    import time

    pytest.importorskip("torch")
    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.clip_env import import_open_clip

    import_open_clip()  # torchvision on a CPU-only torch needs its shim first
    import open_clip.model

    real, inside, overlaps = open_clip.model.CLIP, [], []

    def slow_clip(**kw):
        inside.append(threading.get_ident())
        if len(inside) > 1:
            overlaps.append(len(inside))
        time.sleep(0.1)  # widens the window another build could draw in
        try:
            return real(**kw)
        finally:
            inside.remove(threading.get_ident())

    monkeypatch.setattr(open_clip.model, "CLIP", slow_clip)
    spec = BackboneSpec.from_options(config="tiny-vit")
    threads = [threading.Thread(target=create_backbone, args=(spec,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []


def test_two_threads_first_using_one_scanner_assemble_it_once(monkeypatch):
    """Two threads starting the first scans of one Scanner each built its detectors (a backbone each: memory
    twice over) and opened a result cache, one of them never closed."""
    import threading
    import time

    from aiidetect import api

    real, built = api._create, []

    def slow_create(families, ctx):
        built.append(1)
        time.sleep(0.2)
        return real(families, ctx)

    monkeypatch.setattr(api, "_create", slow_create)
    with Scanner(ScanOptions(detectors=["metadata"])) as s:
        seen = []
        threads = [threading.Thread(target=lambda: seen.append((id(s.detectors), id(s._cache)))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(built) == 1 and len(set(seen)) == 1


def test_a_damage_note_the_store_cannot_remove_is_a_note_not_a_line_on_stderr(tmp_path, few, capsys):
    """The library's notes for a person go to on_note (docs/api.md): a `-damaged` folder beside the store
    (which every open then checks whole) was said straight on the process's stderr instead."""
    from pathlib import Path

    from aiidetect.store import ResultsStore

    db = tmp_path / "s.sqlite"
    ResultsStore(db).close()
    Path(f"{db}-damaged").mkdir()
    notes = []
    with Scanner(ScanOptions(detectors=["metadata"], cache=False, db=str(db)), on_note=notes.append) as s:
        assert len(list(s.scan(few[:1]))) == 1
    assert [n for n in notes if "-damaged could not be removed" in n] and capsys.readouterr().err == "", notes


def test_a_stdin_list_closed_before_the_records_are_read_says_so(few, tmp_path):
    # the list is read as the records are iterated: one closed by its `with` block before that (it was read
    # at scan() once) ended the run with "ValueError: read of closed file" from deep inside discovery
    lst = tmp_path / "list.txt"
    lst.write_text(few[0] + "\n")
    s = Scanner(ScanOptions(detectors=["metadata"], cache=False))
    with open(lst) as f:
        records = s.scan("-", stdin=f)
    with pytest.raises(ValueError, match="keep it open"):
        list(records)
    s.close()


def test_a_damaged_result_cache_names_the_command_that_mends_it(few, tmp_path, monkeypatch):
    """A results.sqlite cut short or overwritten stays so: each scan said only that it ran without the
    cache, never how to get it back."""
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "results.sqlite").write_bytes(b"not a database " * 300)
    notes = []
    with Scanner(ScanOptions(detectors=["metadata"]), on_note=notes.append) as s:
        assert sum(1 for _ in s.scan(few)) == len(few)  # every file still gets its record
    assert any("result cache unavailable" in m and "aiidetect cache clear results" in m for m in notes), notes


def test_a_stdin_list_still_open_gives_the_records_of_the_files_named_so_far(tmp_path):
    # `(echo a.png; sleep 30) | aiidetect scan -`: no record until the list ended (its kind waited for 4,096
    # bytes, then the pipeline for a chunk or two more names); a pipe this test writes and holds open
    import os
    import threading

    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r, w = os.pipe()
    os.write(w, f"{tmp_path / 'a.png'}\n".encode())
    got = []
    with open(r) as stdin, Scanner(ScanOptions(detectors=["metadata"], cache=False)) as s:
        records = s.scan("-", stdin=stdin)
        first = threading.Thread(target=lambda: got.append(next(records)), daemon=True)
        first.start()
        first.join(60)  # a bound for a failing run, not a timing: the list stays open throughout
        alive = first.is_alive()
        os.close(w)
        first.join()
        assert not alive and got[0].file == str(tmp_path / "a.png") and got[0].error is None
        assert list(records) == []



@pytest.fixture
def six_pngs(tmp_path):
    from PIL import Image

    for i in range(6):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{i}.png")
    return tmp_path


@pytest.fixture
def chunk_sizes(monkeypatch):
    """The size of each chunk the pipeline hands the model (a batch), in order."""
    from aiidetect import pixels

    sizes: list[int] = []
    submit = pixels.OrderedChunks._submit

    def counted(self, *a, **k):
        got = submit(self, *a, **k)
        if got:
            sizes.append(len(got))
        return got

    monkeypatch.setattr(pixels.OrderedChunks, "_submit", counted)
    return sizes


def test_records_of_a_folder_are_not_cut_short_by_another_list_still_open(six_pngs, chunk_sizes):
    # whether the next name would wait was the last candidates()'s list: records(c) for a folder's candidates made
    # before a quiet list on stdin handed its records over one file a chunk (a model batch of one)
    import os

    r, w = os.pipe()  # a list whose writer says nothing yet
    with open(r) as stdin, Scanner(ScanOptions(detectors=["metadata"], cache=False, batch_size=8)) as s:
        folder = s.candidates([str(six_pngs)])
        s.candidates("-", stdin=stdin)
        try:
            assert len(list(s.records(folder))) == 6
        finally:
            os.close(w)
    assert chunk_sizes == [6]


def test_a_folder_named_beside_a_quiet_list_is_scanned_in_whole_batches(six_pngs, chunk_sizes):
    # `aiidetect scan inbox -` while the list's writer is quiet: the folder's files need none of the list, but
    # every next one was taken for one that would wait on the writer, so the whole folder went a file a batch
    import os
    import threading

    r, w = os.pipe()  # a list whose writer says nothing yet
    got = []
    with open(r) as stdin, Scanner(ScanOptions(detectors=["metadata"], cache=False, batch_size=8)) as s:
        records = s.scan([str(six_pngs), "-"], stdin=stdin)
        first = threading.Thread(target=lambda: got.extend(next(records) for _ in range(6)), daemon=True)
        first.start()
        first.join(60)  # a bound for a failing run, not a timing: the list stays open throughout
        alive = first.is_alive()
        os.close(w)
        first.join()
        assert not alive and len(got) == 6 and list(records) == []
    assert chunk_sizes == [6]  # the folder's six files in one batch, as with no list at all


def test_a_list_whose_names_are_all_there_goes_in_whole_batches(six_pngs, chunk_sizes):
    # `find DIR | aiidetect scan -` with find ahead of the scan: the names already read are taken without asking
    # the writer, so batches stay whole; only the last, before the writer's next name, is cut short
    import os
    import threading

    r, w = os.pipe()
    os.write(w, "".join(f"{six_pngs / f'{i}.png'}\n" for i in range(6)).encode())
    got = []
    with open(r) as stdin, Scanner(ScanOptions(detectors=["metadata"], cache=False, batch_size=4)) as s:
        records = s.scan("-", stdin=stdin)
        first = threading.Thread(target=lambda: got.extend(next(records) for _ in range(6)), daemon=True)
        first.start()
        first.join(60)  # a bound for a failing run, not a timing: all six come before the list ends
        alive = first.is_alive()
        os.close(w)
        first.join()
        assert not alive and len(got) == 6 and list(records) == []
    assert chunk_sizes == [4, 2]


def test_threads_sharing_a_scanner_each_read_their_own_scan_s_stats(six_pngs):
    """A service's request threads sharing one Scanner read `stats` after their own scans and got another
    caller's: one attribute for the whole Scanner held the last scan started anywhere (measured: 77 reads in 80
    wrong, most a scan still running, files 0). Each thread now reads its own last scan's stats and discovery;
    a thread that ran none reads the last one started (a caller that scans in an executor and reads in its loop)."""
    import threading

    from aiidetect import Scanner

    pngs = sorted(str(p) for p in six_pngs.glob("*.png"))
    first_out, other_done = threading.Event(), threading.Event()
    seen: dict = {}

    def long_request():
        it = scanner.scan(pngs[:4])
        records = [next(it)]
        first_out.set()
        other_done.wait(20)  # the test's bound: the other request is a few milliseconds
        records += list(it)
        seen["long"] = (len(records), scanner.stats["files"], scanner.discovery.duplicates)

    def short_request():
        first_out.wait(20)
        records = list(scanner.scan([pngs[5], pngs[5]]))  # named twice: one record, one duplicate
        seen["short"] = (len(records), scanner.stats["files"], scanner.discovery.duplicates)
        other_done.set()

    with Scanner(detectors="metadata", cache=False, batch_size=1, workers=1) as scanner:
        threads = [threading.Thread(target=f) for f in (long_request, short_request)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert seen == {"long": (4, 4, 0), "short": (1, 1, 1)}
        assert scanner.stats["files"] == 1  # here, a thread that scanned nothing: the last scan started


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts descriptors through /proc/self/fd")
def test_scanners_never_closed_do_not_hold_a_descriptor_each(six_pngs, tmp_path, monkeypatch):
    """A service that built a Scanner per request and never closed it kept the result cache's and the results
    store's SQLite files open, four descriptors a request (93 open after 600 requests with the collector on),
    until a full collection of cycles, which a large heap makes rare: the connections' statement caches, and a
    store session's crash guard, are cycles. They are closed when the Scanner goes now. Counted with the
    collector off, as a large heap keeps it."""
    import gc

    from aiidetect import Scanner

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    png = str(next(six_pngs.glob("*.png")))

    def open_sqlite():
        names = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                names.append(os.readlink(f"/proc/self/fd/{fd}"))
        return sum(n.startswith(str(tmp_path)) for n in names)

    was = gc.isenabled()
    gc.disable()
    try:
        counts = []
        for _ in range(30):
            scanner = Scanner(detectors="metadata", db=tmp_path / "runs.db")  # the request's, never closed
            assert [r.error for r in scanner.scan(png)] == [None]
            counts.append(open_sqlite())
        del scanner
        left = open_sqlite()
    finally:
        if was:
            gc.enable()
    assert max(counts) <= 8 and left == 0, (counts[:3], counts[-3:], left)  # one Scanner's files at most


def test_a_scan_started_in_one_thread_and_iterated_in_another_is_the_iterating_thread_s(six_pngs):
    """A service starts a request's scan in its handler's thread and iterates it in an executor's (a streaming
    response). `stats` read there after the last record were the executor thread's earlier scan's (2 files), not
    those of the scan it had just consumed (1): per-thread stats followed the thread that called scan() only."""
    from concurrent.futures import ThreadPoolExecutor

    from aiidetect import Scanner

    pngs = sorted(str(p) for p in six_pngs.glob("*.png"))
    with Scanner(detectors="metadata", cache=False, workers=1) as scanner, ThreadPoolExecutor(1) as executor:
        earlier = executor.submit(lambda: (len(list(scanner.scan(pngs[:2]))), scanner.stats["files"])).result(30)
        it = scanner.scan([pngs[2], pngs[2]])  # named twice: one record, one duplicate
        streamed = executor.submit(
            lambda: (len(list(it)), scanner.stats["files"], scanner.discovery.duplicates)).result(30)
    assert (earlier, streamed) == ((2, 2), (1, 1, 1))


def test_a_script_ending_inside_a_scan_with_db_still_stores_what_it_handled(six_pngs, tmp_path):
    """A script whose loop over a scan with db ends the interpreter (Ctrl-C, a `break`, the end of the script)
    with the iterator still referenced: the store's connection, closed when its Scanner goes, was closed by that
    finalizer at the interpreter's exit before the scan was, and the records already handled were lost, the
    session left `running` (docs/scale.md: `interrupted`)."""
    db = tmp_path / "runs.db"
    code = ("import sys; from aiidetect import Scanner; "
            f"it = Scanner(detectors='metadata', db={str(db)!r}, cache=False, workers=1, batch_size=1)"
            f".scan(sorted({[str(p) for p in six_pngs.glob('*.png')]!r})); "
            "handled = [next(it), next(it)]")  # the second asked for: the first one handled
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    with contextlib.closing(sqlite3.connect(db)) as c:
        got = (c.execute("SELECT status, files_written FROM sessions").fetchall(),
               c.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    assert got == ([("interrupted", 1)], 1)
