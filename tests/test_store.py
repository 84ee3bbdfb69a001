"""The results store (`scan --db`): exact round trips, resume after kill -9
without reading finished files, sharding over N=3 and merging, and the
`results` commands."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiidetect.discover import Candidate, iter_discover
from aiidetect.records import DetectorResult, ErrorInfo, Evidence, Record
from aiidetect.shard import in_shard, parse_shard, shard_of
from aiidetect.store import ResultsStore, StoreError, merge_stores, record_from_dict, record_json

from conftest import jsonl, run_cli, run_cli_in_process


def _tiny_images(root: Path, n: int, folders: int = 10) -> list[Path]:
    """n distinct 8x8 PNGs spread over `folders` sub-folders."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        d = root / f"f{i % folders:02d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"img{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute("SELECT path, session_id, sha256, verdict FROM results ORDER BY path").fetchall()


def test_record_round_trip_is_exact():
    rec = Record(file="a/b.jpg", sha256="ab" * 32, size_bytes=12, format="JPEG", width=3, height=4,
                 verdict="uncertain", p_ai=0.5, reasons=["x (+0.10)"], image_info={"mode": "RGB", "frames": 1},
                 detectors={"metadata": DetectorResult("ok", 0.25, -1.1, "llr", None,
                                                       [Evidence("exif.camera", "real", 1.1, "cam", "EXIF", False,
                                                                 {"make": "X"})], {"facts": {"k": [1, 2]}}),
                            "mpft:dev": DetectorResult("ok", 0.9, 2.2, "logit", None, [],
                                                       {"attribution": [{"label": "sd15", "p": 0.8}],
                                                        "dtype": "bfloat16"}),
                            "flow:x": DetectorResult.unavailable("no head")})
    back = record_from_dict(json.loads(record_json(rec)))
    assert back.to_dict() == rec.to_dict()
    err = Record(file="c.png").set_error("decode-error", "truncated")
    assert record_from_dict(json.loads(record_json(err))).to_dict() == err.to_dict()
    assert record_from_dict(json.loads(record_json(err))).error == ErrorInfo("decode-error", "truncated")


def test_store_round_trip_through_cli(tmp_path):
    imgs = _tiny_images(tmp_path / "in", 30, folders=3)
    (tmp_path / "in" / "f00" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    db = tmp_path / "audit.sqlite"
    r = run_cli("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl")
    assert r.returncode == 0, r.stderr
    scanned = jsonl(r.stdout)
    assert len(scanned) == len(imgs) + 1
    # export gives back exactly what scan printed (the results commands' reading in-process: each
    # subprocess paid an interpreter start; the refusals below stay subprocesses)
    e = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl")
    assert e.returncode == 0, e.stderr
    key = lambda d: d["file"]  # noqa: E731
    assert sorted(jsonl(e.stdout), key=key) == sorted(scanned, key=key)
    # summary answers without scanning
    s = run_cli_in_process("results", "summary", "--db", str(db), "-f", "json")
    assert s.returncode == 0, s.stderr
    summ = json.loads(s.stdout)
    assert summ["files"] == 31 and summ["verdicts"].get("error") == 1 and summ["errors"] == {"decode-error": 1}
    assert summ["folders_total"] == 3 and sum(f["files"] for f in summ["folders"]) == 31
    f = run_cli_in_process("results", "failed", "--db", str(db), "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(f.stdout)))
    assert [(Path(x["file"]).name, x["error_code"]) for x in rows] == [("broken.png", "decode-error")]
    for fmt in ("table", "jsonl", "csv"):
        assert run_cli_in_process("results", "summary", "--db", str(db), "-f", fmt).returncode == 0
    assert run_cli("results", "export", "--db", str(db), "--verdict", "nonsense").returncode == 2
    assert run_cli("results", "summary", "--db", str(tmp_path / "missing.sqlite")).returncode == 2
    # the database is plain SQLite
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM results WHERE verdict='error'").fetchone()[0] == 1
        assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


# Scans of one store and the results commands run in-process where a test is about what they decide (each
# new interpreter is ~1 s); scans of stores later merged together stay processes of their own: merge tells
# invocations apart by pid, argv and start second.
def test_changed_options_make_a_new_run_and_changed_files_are_rescanned(tmp_path):
    imgs = _tiny_images(tmp_path / "in", 6, folders=1)
    db = tmp_path / "a.sqlite"
    base = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl")
    assert run_cli_in_process(*base).returncode == 0
    # a changed file (new bytes, new mtime) is scanned again; the others are not
    Image.new("RGB", (9, 9), (1, 2, 3)).save(imgs[0])
    r = run_cli_in_process(*base)
    assert "5 unchanged since an earlier run" in r.stderr, r.stderr
    rows = _rows(db)
    assert len(rows) == 6 and sorted(s for _, s, _, _ in rows) == [1, 1, 1, 1, 1, 2]
    # other decode limits -> another run: nothing is resumed across runs that are not equivalent
    r = run_cli_in_process(*base, "--max-pixels", "1000000")
    assert r.returncode == 0 and "unchanged" not in r.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2


def test_export_over_several_runs_says_a_file_comes_out_once_per_run(tmp_path):
    """Two runs (other options) of one folder: `results export` gave each file twice, possibly with two
    verdicts, no record saying its run and nothing on stderr, while `summary` said so."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    db = tmp_path / "a.sqlite"
    base = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    assert run_cli_in_process(*base).returncode == 0
    assert run_cli_in_process(*base, "--watermark", "never").returncode == 0
    r = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl")
    assert r.returncode == 0 and len(jsonl(r.stdout)) == 6
    assert "2 runs scanned some of the same files: 6 records of 3 distinct files" in r.stderr, r.stderr
    one = json.loads(run_cli_in_process("results", "summary", "--db", str(db), "-f", "json").stdout)["runs"][0]
    r = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl", "--run", one)
    assert len(jsonl(r.stdout)) == 3 and "runs scanned" not in r.stderr
    r = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl", "-q")
    assert r.stderr == ""


def test_the_export_note_counts_the_files_it_exported_while_a_scan_writes(tmp_path, monkeypatch):
    """A scan writing into the store while `results export` streams it: the distinct files were counted
    after the last record, the rows written meanwhile with them, and an export of 3 files twice over said
    nothing (6 records, 6 distinct files counted)."""
    from aiidetect.store import ResultsStore

    _tiny_images(tmp_path / "in", 3, folders=1)
    db = tmp_path / "a.sqlite"
    base = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    assert run_cli_in_process(*base).returncode == 0
    assert run_cli_in_process(*base, "--watermark", "never").returncode == 0
    rows = ResultsStore.iter_rows

    def then_a_scan_writes(self, *a, **kw):
        yield from rows(self, *a, **kw)
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as c, c:  # another process's new files
            c.execute("INSERT INTO results SELECT run_id, path || '.new', file || '.new', folder, size, mtime_ns, "
                      "sha256, verdict, p_ai, error_code, error_message, fusion_model, session_id, scanned_at, "
                      "record FROM results")

    monkeypatch.setattr(ResultsStore, "iter_rows", then_a_scan_writes)
    r = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl")
    assert r.returncode == 0 and len(jsonl(r.stdout)) == 6
    assert "6 records of 3 distinct files" in r.stderr, r.stderr


def test_resume_after_kill_reads_only_unfinished_files(tmp_path):
    n = 3000
    imgs = _tiny_images(tmp_path / "in", n)
    db = tmp_path / "audit.sqlite"
    cmd = [sys.executable, "-m", "aiidetect", "scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache",
           "--db", str(db), "-f", "jsonl", "-o", str(tmp_path / "first.jsonl"), "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = 0
    deadline = time.time() + 120
    try:
        while time.time() < deadline and p.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
                        done = c.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                except sqlite3.Error:
                    done = 0
            if done > 0:
                break
            time.sleep(0.01)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    first = _rows(db)
    k = len(first)
    assert 0 < k < n, f"kill came too late or too early: {k} of {n} rows"
    assert {s for _, s, _, _ in first} == {1}

    # A finished file whose bytes change while size and mtime stay the same: if the re-run read it,
    # its sha256 would change. It must not be read (the contract: path, size and mtime decide).
    victim = Path(first[0][0])
    st = victim.stat()
    victim.write_bytes(victim.read_bytes()[:-1] + bytes([victim.read_bytes()[-1] ^ 0xFF]))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

    r = run_cli("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl")
    assert r.returncode == 0, r.stderr
    out = jsonl(r.stdout)
    assert len(out) == n and len({d["file"] for d in out}) == n  # the report is complete again
    assert f"{k} unchanged since an earlier run" in r.stderr, r.stderr
    rows = _rows(db)
    assert len(rows) == n and len({p for p, *_ in rows}) == n  # every file exactly once
    assert {p for p, *_ in rows} == {os.path.abspath(p) for p in imgs}
    by_path = {p: (s, sha) for p, s, sha, _ in rows}
    # rows of the killed session are kept as they were; only the rest was scanned by the second session
    assert all(by_path[p] == (1, sha) for p, _, sha, _ in first)
    assert sum(1 for s, _ in by_path.values() if s == 2) == n - k
    assert by_path[str(victim)][1] == first[0][2]  # not re-read
    with sqlite3.connect(db) as c:
        sessions = c.execute("SELECT session_id, status, files_written, files_resumed FROM sessions "
                             "ORDER BY session_id").fetchall()
    assert sessions[0][1] == "died"  # the killed one never finished; the next one found its reading slots
    assert sessions[0][2] == k  # what it committed before the kill (it said 0: counted only at its end)
    assert sessions[1] == (2, "complete", n - k, k)


def test_shard_is_stable_and_validated():
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "1/0", "a/b", "3"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    # fixed value: the hash must not depend on the process (PYTHONHASHSEED) or the machine
    assert shard_of("photos/IMG_0001.jpg", 3) == shard_of("photos/IMG_0001.jpg", 3)
    code = "from aiidetect.shard import shard_of; print([shard_of(f'p/{i}.jpg', 7) for i in range(50)])"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)}
    assert len(outs) == 1 and json.loads(outs.pop()) == [shard_of(f"p/{i}.jpg", 7) for i in range(50)]


def test_three_shards_cover_every_file_once_and_merge(tmp_path):
    imgs = _tiny_images(tmp_path / "in", 90, folders=3)
    stores = []
    for i in (1, 2, 3):
        db = tmp_path / f"shard{i}.sqlite"
        # subprocesses: in-process runs share pid, argv and start second, which merge reads as one invocation
        r = run_cli("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db),
                    "--shard", f"{i}/3", "-f", "jsonl", "--quiet")
        assert r.returncode == 0, r.stderr
        assert all(shard_of(d["file"], 3) == i for d in jsonl(r.stdout))
        stores.append(db)
    per = [{p for p, *_ in _rows(db)} for db in stores]
    assert all(per), "a shard got no file: the split is not spread"
    assert sum(len(s) for s in per) == len(imgs) and set().union(*per) == {os.path.abspath(p) for p in imgs}
    m = run_cli_in_process("results", "merge", "--db", str(tmp_path / "all.sqlite"), *map(str, stores), "-f",
                           "json")
    assert m.returncode == 0, m.stderr
    assert [x["conflicts"] for x in json.loads(m.stdout)] == [0, 0, 0]
    merged = _rows(tmp_path / "all.sqlite")
    assert len(merged) == len(imgs) and len({p for p, *_ in merged}) == len(imgs)
    with sqlite3.connect(tmp_path / "all.sqlite") as c:
        assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1  # same identity: one run
        assert sorted(r[0] for r in c.execute("SELECT shard FROM sessions")) == ["1/3", "2/3", "3/3"]
    # merging again changes nothing and reports every row as a conflict kept once
    again = run_cli_in_process("results", "merge", "--db", str(tmp_path / "all.sqlite"), str(stores[0]), "-f",
                               "json")
    assert json.loads(again.stdout)[0]["added"] == 0 and len(_rows(tmp_path / "all.sqlite")) == len(imgs)
    assert run_cli("scan", str(tmp_path / "in"), "--shard", "4/3").returncode == 2


def test_lazy_discovery_dedups_without_listing(tmp_path):
    imgs = _tiny_images(tmp_path / "in", 12, folders=2)
    os.symlink(tmp_path / "in" / "f00", tmp_path / "in" / "zlink")       # a folder reached twice
    os.link(imgs[1], tmp_path / "in" / "f00" / "hard.png")             # a file with two names
    it, summ = iter_discover([str(imgs[0]), str(tmp_path / "in")])
    first = next(it)
    assert first.path == str(imgs[0]) and summ.skipped == 0  # nothing walked yet beyond what was asked
    rest = list(it)
    names = [c.path for c in [first] + rest]
    assert len(names) == 12 and len(set(names)) == 12  # a hard link is the same file: one record
    assert summ.duplicates == 2 + 7  # the named file and the hard link; every image behind the folder link


def test_store_rejects_foreign_sqlite(tmp_path):
    p = tmp_path / "other.sqlite"
    with sqlite3.connect(p) as c:
        c.execute("CREATE TABLE t (x)")
    # refusals the commands decide, in-process (scan's and results' exit 2 as processes: test_exit_codes,
    # test_store_round_trip_through_cli)
    r = run_cli_in_process("scan", str(tmp_path), "-d", "metadata", "--db", str(p))
    assert r.returncode == 2 and "results store" in r.stderr
    r = run_cli_in_process("results", "summary", "--db", str(p))
    assert r.returncode == 2 and "not an aiidetect results store" in r.stderr
    with pytest.raises(Exception):
        ResultsStore(tmp_path / "nofolder" / "x.sqlite")
    assert list(in_shard([Candidate("a")], None))[0].path == "a"


def test_a_newer_store_is_refused_before_anything_is_written(tmp_path):
    # A store written by a newer aiidetect (copied to a machine not yet upgraded): refused, as before, but the
    # refusing writer first ran its own schema script and WAL switch over it (an index the newer schema
    # dropped was made again, the journal mode changed), and said only "version 2 is not 1".
    (tmp_path / "s").mkdir()
    db = tmp_path / "s" / "audit.sqlite"
    ResultsStore(db).close()
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("UPDATE meta SET value='2' WHERE key='store_version'")
        c.execute("DROP INDEX results_sha")
        c.commit()
        c.execute("PRAGMA journal_mode=DELETE").fetchall()
    for extra in db.parent.glob("audit.sqlite-*"):  # the clean record: its removal is a write too
        extra.unlink()
    before = db.read_bytes()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="version 2, written by a newer aiidetect.*written nothing"):
            ResultsStore(db, readonly=readonly)
    _tiny_images(tmp_path / "in", 1, folders=1)
    r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--db", str(db))
    assert r.returncode == 2 and "newer aiidetect" in r.stderr and not r.stdout
    assert db.read_bytes() == before
    assert sorted(x.name for x in db.parent.iterdir()) == ["audit.sqlite"]


def _store_of_version(db: Path, version) -> None:
    """A store whose meta says `version`, with no clean record beside it (its next open runs the full check)."""
    ResultsStore(db).close()
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("UPDATE meta SET value=? WHERE key='store_version'", (version,))
        c.commit()
    for extra in db.parent.glob(db.name + "-*"):
        extra.unlink()


def test_a_newer_store_is_refused_before_its_integrity_check(tmp_path, monkeypatch):
    # The full check reads every page (13-18 s at 1M rows, more for a crafted file) and only then was the
    # version read that refuses the store anyway: `results summary`, `scan --db` and `merge` paid it first.
    import aiidetect.store as store

    db = tmp_path / "audit.sqlite"
    _store_of_version(db, "2")
    checked = []
    monkeypatch.setattr(store, "_full_check", lambda c: checked.append(1) or "ok")
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer aiidetect"):
            ResultsStore(db, readonly=readonly)
    with pytest.raises(StoreError, match="newer aiidetect"):
        store.merge_stores(tmp_path / "merged.sqlite", [db])
    assert checked == []
    ResultsStore(tmp_path / "mine.sqlite").close()  # a store of this version is still checked
    for extra in tmp_path.glob("mine.sqlite-*"):
        extra.unlink()
    ResultsStore(tmp_path / "mine.sqlite", readonly=True).close()
    assert checked == [1]


def test_a_crafted_store_version_is_one_short_line(tmp_path):
    # The version is the file's to say: a newline in it wrote a second `error:` line of the sender's choosing,
    # and a megabyte of it a megabyte of message.
    db = tmp_path / "audit.sqlite"
    _store_of_version(db, "2\nerror: the scan found no AI images" + "9" * 1_000_000)
    for readonly in (False, True):
        with pytest.raises(StoreError) as got:
            ResultsStore(db, readonly=readonly)
        assert "\n" not in str(got.value) and len(str(got.value)) < 400, str(got.value)[:500]
        assert "version 2?error??the?scan?fo is not 1" in str(got.value)  # no escape to be escaped again


def test_engine_options_are_validated(tmp_path):
    _tiny_images(tmp_path, 1, folders=1)
    r = run_cli_in_process("scan", str(tmp_path), "-d", "metadata", "--engine", "spark")
    assert r.returncode == 2 and "--engine" in r.stderr
    r = run_cli_in_process("scan", str(tmp_path), "-d", "metadata", "--address", "auto")
    assert r.returncode == 2 and "--engine ray" in r.stderr


def test_unreadable_rows_are_retried_on_resume(tmp_path):
    from aiidetect.store import StoreSession

    st = ResultsStore(tmp_path / "s.sqlite")
    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    for code, retried in (("unreadable", True), ("decode-error", False)):
        run = st.ensure_run({"k": code}, {}, ["metadata"], "rules")
        s1 = StoreSession(st, run, "rules")
        assert s1.prior(str(f)) is None
        s1.add(Record(file=str(f), size_bytes=1).set_error(code, "x"))
        s1.close()
        s2 = StoreSession(st, run, "rules")
        back = s2.prior(str(f))
        assert (back is None) == retried, code
        if back is not None:
            assert back.error.code == code
    st.close()


def test_parquet_export(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    _tiny_images(tmp_path / "in", 12, folders=2)
    db = tmp_path / "a.sqlite"
    assert run_cli("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-q").returncode == 0
    r = run_cli_in_process("results", "parquet", "--db", str(db), "-o", str(tmp_path / "a.parquet"))
    assert r.returncode == 0, r.stderr
    t = pq.read_table(tmp_path / "a.parquet").to_pylist()
    assert len(t) == 12 and {x["verdict"] for x in t} <= {"uncertain", "likely-real", "ai-generated"}
    assert all(json.loads(x["record"])["sha256"] == x["sha256"] for x in t)
    assert not (tmp_path / "a.parquet.partial").exists()


def test_error_messages_keep_brackets(tmp_path):
    # Paths and pip extras contain [brackets]; the one-line error must print them, not eat them as markup.
    r = run_cli_in_process("scan", str(tmp_path / "[x]" / "a.jpg"))
    assert r.returncode == 2 and "[x]" in r.stderr, r.stderr


def test_store_keeps_hostile_names(tmp_path):
    """A name that is not UTF-8, or that holds markup, is stored, resumed and
    exported exactly as scan printed it, and shown literally in tables."""
    root = tmp_path / "in"
    imgs = _tiny_images(root, 2, folders=1)
    os.rename(imgs[0], os.path.join(os.fsencode(root / "f00"), b"bad\xff\xfe.png"))
    os.rename(imgs[1], root / "f00" / "[red]x.png")
    (root / "f00" / "[bold]broken.png").write_bytes(b"\x89PNG\r\n\x1a\nno")
    db = tmp_path / "a.sqlite"
    r = run_cli("scan", str(root), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl")
    assert r.returncode == 0, r.stderr
    scanned = jsonl(r.stdout)
    assert len(scanned) == 3 and sum(1 for d in scanned if d["file_bytes"]) == 1
    e = run_cli("results", "export", "--db", str(db), "-f", "jsonl")
    assert e.returncode == 0, e.stderr
    assert sorted(jsonl(e.stdout), key=lambda d: d["file"]) == sorted(scanned, key=lambda d: d["file"])
    again = run_cli("scan", str(root), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl")
    assert again.returncode == 0, again.stderr
    assert sorted(jsonl(again.stdout), key=lambda d: d["file"]) == sorted(scanned, key=lambda d: d["file"])
    assert len(_rows(db)) == 3
    # wide enough that no path is folded, however long the temporary folder's name is
    t = run_cli("results", "failed", "--db", str(db), env={"COLUMNS": "1000"})
    assert t.returncode == 0 and "[bold]broken.png" in t.stdout, t.stdout
    # a failed file whose name is not UTF-8 can still be found again from `results failed`
    bad = os.path.join(os.fsencode(root / "f00"), b"gone\xff.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nno")
    assert run_cli("scan", str(root), "-d", "metadata", "--no-cache", "--db", str(db), "-q").returncode == 0
    rows = {os.path.basename(d["file"]): d for d in jsonl(run_cli("results", "failed", "--db", str(db),
                                                                   "-f", "jsonl").stdout)}
    assert rows["[bold]broken.png"]["file_bytes"] is None
    assert base64.b64decode(rows["gone\ufffd.png"]["file_bytes"]) == bad


def test_results_export_html_report(tmp_path):
    """The store renders as the same self-contained report a scan writes, one card per
    exported record, names kept as text."""
    from aiidetect.testing.htmlcheck import assert_self_contained

    root = tmp_path / "in"
    _tiny_images(root, 3, folders=1)
    (root / "f00" / "<img src=x onerror=alert(1)>.png").write_bytes(b"\x89PNG\r\n\x1a\nno")
    db = tmp_path / "a.sqlite"
    assert run_cli("scan", str(root), "-d", "metadata", "--no-cache", "--db", str(db), "-q").returncode == 0
    r = run_cli_in_process("results", "export", "--db", str(db), "-f", "html")
    assert r.returncode == 0, r.stderr
    doc = assert_self_contained(r.stdout)
    assert len(doc.cards) == 4
    assert any(c["name"].endswith("<img src=x onerror=alert(1)>.png") for c in doc.cards)
    only_errors = run_cli_in_process("results", "export", "--db", str(db), "-f", "html", "--verdict", "error")
    assert len(assert_self_contained(only_errors.stdout).cards) == 1


# Rows a damaged disk, a hand edit or a foreign store could hold; the writers must never see them.
DAMAGED = ["not json", "[1, 2]", '{"file": 3}', '{"file": "x", "verdict": "ai-generated", "detectors": {"m": 5}}',
           '{"file": "y", "verdict": 7}', '{"file": "y", "p_ai": "0.9"}', '{"file": "y", "reasons": [1]}',
           '{"file": "z", "detectors": {"metadata": {"status": "ok", "evidence": [{"id": 1}]}}}',
           '{"file": "z", "error": "boom"}', '{"file": "z", "file_bytes": "!!"}',
           '{"file": "z", "detectors": {"metadata": {"status": "ok", "p_ai": [0.5]}}}',
           '{"file": "z", "image": ' + "[" * 100_000 + "]" * 100_000 + "}"]   # RecursionError in json


def test_one_damaged_row_costs_one_record_not_the_export(tmp_path):
    from aiidetect.store import BAD_STORED_RECORD

    _tiny_images(tmp_path / "imgs", len(DAMAGED) + 3, folders=1)
    db = tmp_path / "s.sqlite"
    r = run_cli("scan", str(tmp_path / "imgs"), "-d", "metadata", "--db", str(db), "-f", "jsonl", "-q", "--no-cache")
    assert r.returncode == 0, r.stderr
    good = {x["file"]: x for x in jsonl(r.stdout)}
    with sqlite3.connect(db) as c:
        rowids = [x[0] for x in c.execute("SELECT rowid FROM results ORDER BY path")]
        for rid, bad in zip(rowids, DAMAGED):
            c.execute("UPDATE results SET record=? WHERE rowid=?", (bad, rid))
        damaged = {x[0] for x in c.execute(f"SELECT file FROM results WHERE rowid IN "
                                            f"({','.join(map(str, rowids[:len(DAMAGED)]))})")}
    outs = {}
    for fmt in ("jsonl", "json", "csv", "table", "html"):
        r = run_cli("results", "export", "--db", str(db), "-f", fmt)
        assert r.returncode == 0, (fmt, r.stderr)
        assert f"{len(DAMAGED)} stored record(s) could not be read" in r.stderr, fmt
        outs[fmt] = r.stdout
    recs = jsonl(outs["jsonl"])
    assert json.loads(outs["json"]) == recs and len(recs) == len(good)
    for x in recs:
        if x["file"] in damaged:
            assert x["verdict"] == "error" and x["error"]["code"] == BAD_STORED_RECORD
        else:
            assert x == good[x["file"]]  # the readable rows exactly as the scan printed them
    assert len(list(csv.reader(io.StringIO(outs["csv"])))) == len(good) + 1
    assert outs["html"].count(BAD_STORED_RECORD) >= len(DAMAGED)
    # a resumed scan scans the damaged files again and replaces their rows
    r = run_cli("scan", str(tmp_path / "imgs"), "-d", "metadata", "--db", str(db), "-f", "jsonl", "-q", "--no-cache")
    assert {x["file"]: x["verdict"] for x in jsonl(r.stdout)} == {f: x["verdict"] for f, x in good.items()}
    r = run_cli("results", "export", "--db", str(db), "-f", "jsonl")
    assert r.returncode == 0 and "could not be read" not in r.stderr
    assert {x["file"]: x for x in jsonl(r.stdout)} == good


def _read_only_folder(monkeypatch, folder: Path) -> None:
    """What a read-only folder (evidence mounted read-only, a share, a DVD) does to SQLite: mode=ro
    cannot create the -shm file a WAL database needs; nothing there can be written."""
    real_connect, real_access = sqlite3.connect, os.access

    def connect(database, *a, **kw):
        if "mode=ro" in str(database) and str(folder) in str(database) \
                and not Path(f"{str(database).split('?')[0][5:]}-shm").exists():
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(database, *a, **kw)

    monkeypatch.setattr(sqlite3, "connect", connect)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK
                        else real_access(p, mode, **kw))


def test_a_store_on_a_full_disk_is_read(tmp_path):
    """A finished store (no -wal, no -shm) on a disk that filled since: every `results` command said
    `cannot be read (disk I/O error)`, as SQLite could not grow the -shm it makes to read a WAL store;
    nothing needs writing to read it, as in a read-only folder. A file size limit stands in for the full
    disk (seen on a full tmpfs too)."""
    import resource

    db = tmp_path / "a.sqlite"
    ResultsStore(db).close()
    assert not Path(f"{db}-shm").exists()

    def full():  # the store is read, never grown; the 32 KB -shm cannot be
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
    r = subprocess.run([sys.executable, "-m", "aiidetect", "results", "summary", "--db", str(db), "-f", "json"],
                       capture_output=True, text=True, preexec_fn=full, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == 0


def test_a_merge_stopped_by_a_full_target_says_which_store_and_what_was_kept(tmp_path, monkeypatch):
    """A target that filled up during the second of two sources (seen on an 11 MB tmpfs) said only
    `merge failed (nothing of the failing source was kept): database or disk is full`: not which source
    failed, into which store, nor that the first source's rows were merged and kept."""
    shards = [tmp_path / "s1.sqlite", tmp_path / "s2.sqlite"]
    for s in shards:
        ResultsStore(s).close()
    target = tmp_path / "t.sqlite"
    real = ResultsStore.merge_from

    def filling(self, other):  # the first source fits, the second fills the disk
        if Path(other) == shards[1]:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, other)
    monkeypatch.setattr(ResultsStore, "merge_from", filling)
    r = run_cli_in_process("results", "merge", "--db", str(target), *map(str, shards))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == (f"error: merge failed: cannot merge {shards[1]} into {target} (database or disk is full): "
                                f"nothing of {shards[1]} was kept; {shards[0]} merged before it and kept; the same "
                                "command merges what is missing"), r.stderr


def test_a_store_in_a_read_only_folder_is_read(tmp_path, monkeypatch):
    """A finished audit handed over on read-only media: summary, export and merge read it (they said
    'not an aiidetect results store' and read nothing); a store whose -wal still holds rows is refused
    with what to do, never read without them."""
    from aiidetect.store import StoreError, merge_stores

    _tiny_images(tmp_path / "in", 4, folders=1)
    ro = tmp_path / "ro"
    ro.mkdir()
    r = run_cli("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(ro / "a.sqlite"), "-q")
    # beside it only the state of its file as aiidetect closed it (docs/scale.md)
    assert r.returncode == 0 and sorted(p.name for p in ro.iterdir()) == ["a.sqlite", "a.sqlite-clean"], r.stderr
    _read_only_folder(monkeypatch, ro)
    with ResultsStore(ro / "a.sqlite", readonly=True) as st:
        assert st.summary(st.resolve_run(None))["files"] == 4
    assert merge_stores(tmp_path / "m.sqlite", [ro / "a.sqlite"])[0]["added"] == 4
    assert sorted(p.name for p in ro.iterdir()) == ["a.sqlite", "a.sqlite-clean"]
    # a killed writer's -wal without its -shm: the rows in the log would be missing
    (ro / "a.sqlite-wal").write_bytes(b"\0" * 32)
    with pytest.raises(StoreError, match="write-ahead log"):
        ResultsStore(ro / "a.sqlite", readonly=True)


def test_store_names_are_file_names_not_uris(tmp_path):
    """`results summary --db 'audit#2.sqlite'` read 'audit' (a URI fragment), created it empty, and said
    the store was not one; '%20' was taken as an escape."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    for name in ("audit#2.sqlite", "a%20b?.sqlite", os.fsdecode(b"\xff-not-utf8.sqlite")):
        db = tmp_path / name
        r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-q")
        assert r.returncode == 0, r.stderr
        s = run_cli_in_process("results", "summary", "--db", str(db), "-f", "json")
        assert s.returncode == 0 and json.loads(s.stdout)["files"] == 2, s.stderr
    assert not (tmp_path / "audit").exists() and not (tmp_path / "a%20b").exists()
    r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(tmp_path / "in"),
                           "-q")
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_merge_reads_its_sources_without_writing_them(tmp_path):
    """A shard killed mid-scan leaves its last batches in its -wal; merging it checkpointed them into
    the shard's file and deleted the log: the source, an input, was rewritten."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    shard = tmp_path / "shard.sqlite"
    r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(shard), "-q")
    assert r.returncode == 0, r.stderr
    # a writer that commits and dies without closing (kill -9): its rows are only in the -wal
    subprocess.run([sys.executable, "-c", "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                    "c.execute(\"UPDATE sessions SET status='running'\"); c.commit(); os._exit(0)", str(shard)],
                   check=True)
    wal = Path(f"{shard}-wal")
    before = (shard.read_bytes(), wal.read_bytes())
    assert before[1], "the test needs a -wal with rows in it"
    r = run_cli_in_process("results", "merge", "--db", str(tmp_path / "all.sqlite"), str(shard), "-f", "jsonl")
    assert r.returncode == 0 and jsonl(r.stdout)[0]["added"] == 3, r.stderr
    assert (shard.read_bytes(), wal.read_bytes()) == before
    with sqlite3.connect(tmp_path / "all.sqlite") as c:  # the rows in the log were merged too
        assert c.execute("SELECT status FROM sessions").fetchall() == [("running",)]


def test_merging_a_store_again_adds_only_what_is_new(tmp_path):
    """A shard merged every night while it runs: each merge added every session once more (the audit
    trail said the shard was scanned N times) and counted every row already merged as a conflict."""
    imgs = _tiny_images(tmp_path / "in", 3, folders=1)
    shard, merged = tmp_path / "shard.sqlite", tmp_path / "all.sqlite"
    scan = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(shard), "-q")
    merge = ("results", "merge", "--db", str(merged), str(shard), "-f", "jsonl")
    assert run_cli(*scan).returncode == 0
    with sqlite3.connect(shard) as c:  # merged while the scan still ran
        c.execute("UPDATE sessions SET status='running', finished_at=NULL")
    assert jsonl(run_cli_in_process(*merge).stdout) == [{"source": str(shard), "rows": 3, "added": 3,
                                                          "conflicts": 0}]
    with sqlite3.connect(shard) as c:  # ... which then finished
        c.execute("UPDATE sessions SET status='complete', finished_at='2099-01-01T00:00:00Z'")
    assert jsonl(run_cli_in_process(*merge).stdout) == [{"source": str(shard), "rows": 3, "added": 0,
                                                          "conflicts": 0}]
    Image.new("RGB", (9, 9), (1, 2, 3)).save(imgs[0].parent / "new.png")
    assert run_cli(*scan).returncode == 0  # resumes: a second session, one new file
    assert jsonl(run_cli_in_process(*merge).stdout) == [{"source": str(shard), "rows": 4, "added": 1,
                                                          "conflicts": 0}]

    def trail(db):
        with sqlite3.connect(db) as c:
            sessions = c.execute("SELECT pid, started_at, status, files_written FROM sessions "
                                 "ORDER BY session_id").fetchall()
            rows = c.execute("SELECT r.path, s.pid, s.started_at FROM results r JOIN sessions s "
                             "ON s.session_id=r.session_id ORDER BY r.path").fetchall()
        return sessions, rows

    assert trail(merged) == trail(shard)
    assert [s[2] for s in trail(merged)[0]] == ["complete", "complete"]
    # the same file under a second name is the target itself
    os.link(merged, tmp_path / "again.sqlite")
    r = run_cli_in_process("results", "merge", "--db", str(merged), str(tmp_path / "again.sqlite"))
    assert r.returncode == 2 and "target store itself" in r.stderr


def test_a_store_that_cannot_be_written_stops_the_scan_with_one_line(tmp_path):
    """A full disk (here a file size limit: EFBIG) under --db ended the scan as an unexpected
    'OperationalError: disk I/O error'; it is a fatal error that says which store and what is kept,
    and the same command then resumes: every file once."""
    import resource

    _tiny_images(tmp_path / "in", 300, folders=3)
    db = tmp_path / "audit.sqlite"
    cmd = [sys.executable, "-m", "aiidetect", "scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache",
           "--db", str(db), "-f", "jsonl", "-q"]
    limit = 192 * 1024  # the store's first batch of 200 rows does not fit

    def small_files():  # SIGXFSZ is ignored by Python: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_files, timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and lines[-1].startswith("error: cannot write to the results store"), r.stderr
    assert "Traceback" not in r.stderr and str(db) in lines[-1]
    jsonl(r.stdout)  # what reached stdout parses, line by line
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM results").fetchone() == (300, 300)
        assert [s for (s,) in c.execute("SELECT status FROM sessions ORDER BY session_id")] == ["interrupted",
                                                                                               "complete"]


def test_a_write_that_fails_on_resume_counts_the_rows_the_store_keeps(tmp_path, monkeypatch):
    """A resume stopped by a full disk said "the 0 rows committed before are kept" (this session's
    count) of a store holding every row of the earlier sessions: it reads as if they were lost."""
    _tiny_images(tmp_path / "in", 4, folders=1)
    db = tmp_path / "a.sqlite"
    scan = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    assert run_cli_in_process(*scan).returncode == 0
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "in" / "f00" / "new.png")

    def full(self, rows):  # what a full disk does to the batch's commit
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(ResultsStore, "write_rows", full)
    r = run_cli_in_process(*scan)
    line = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and line.startswith("error: cannot write to the results store"), r.stderr
    assert "keeps the 4 rows of this run committed before (0 of them by this session)" in line, line


@pytest.mark.parametrize("fails", ["INSERT", "UPDATE"])
def test_a_session_that_cannot_be_started_or_finished_leaves_no_clean_record(tmp_path, fails):
    """A full disk at the session's own row (its start: `cannot open the results store ...: disk I/O
    error`; its end) faulted nothing: SQLite had rolled the write back, and the close recorded the store
    clean, though a writer met an error in it. A trigger stands in for the full disk (seen with ulimit -f)."""
    from aiidetect.store import closed_cleanly

    _tiny_images(tmp_path / "in", 1, folders=1)
    db = tmp_path / "a.sqlite"
    scan = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    assert run_cli_in_process(*scan).returncode == 0 and closed_cleanly(db)
    with sqlite3.connect(db) as c:
        c.execute(f"CREATE TRIGGER full BEFORE {fails} ON sessions BEGIN SELECT RAISE(ROLLBACK, 'disk I/O error'); END")
    c.close()
    r = run_cli_in_process(*scan)
    assert r.returncode == 2 and "disk I/O error" in r.stderr, r.stderr
    assert not closed_cleanly(db)


def test_a_store_whose_tables_were_changed_is_refused_before_the_scan(tmp_path):
    """A column dropped by hand (or by another tool) failed only at the first batch: the files before
    it scanned for nothing, then an unexpected OperationalError."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    db = tmp_path / "a.sqlite"
    scan = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    assert run_cli(*scan).returncode == 0
    with sqlite3.connect(db) as c:
        c.execute("ALTER TABLE results DROP COLUMN fusion_model")
    r = run_cli(*scan)
    assert r.returncode == 2 and r.stdout == "" and "lacks fusion_model" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert len(jsonl(run_cli("results", "export", "--db", str(db), "-f", "jsonl").stdout)) == 3  # still read


def test_a_store_that_cannot_open_stops_the_scan_before_any_model_is_built(tmp_path, monkeypatch):
    """The store was opened after the detectors were built: a read-only or foreign store (a typo'd
    --db naming a colleague's file) cost the minutes a ViT-L backbone takes to load before exit 2."""
    import aiidetect.api as api
    from aiidetect.api import ScanError, Scanner

    _tiny_images(tmp_path / "in", 2, folders=1)
    bad = tmp_path / "notes.sqlite"
    bad.write_text("not a database, a page of notes\n" * 200)

    def no_models(*a, **k):
        raise AssertionError("detectors built before the results store was opened")

    monkeypatch.setattr(api, "_create", no_models)
    s = Scanner(detectors=["linear"], db=str(bad), cache=False)
    with pytest.raises(ScanError, match="cannot open the results store"):
        list(s.scan([str(tmp_path / "in")]))
    assert bad.read_text().startswith("not a database")  # never written


def test_a_scanner_keeps_one_store_open_and_closes_it(tmp_path):
    """Two scans of one Scanner write into the store it opened; close() releases it (no -wal left)."""
    from aiidetect.api import Scanner

    _tiny_images(tmp_path / "in", 3, folders=1)
    db = tmp_path / "a.sqlite"
    with Scanner(detectors=["metadata"], db=str(db), cache=False) as s:
        assert len(list(s.scan([str(tmp_path / "in")]))) == 3
        assert len(list(s.scan([str(tmp_path / "in")]))) == 3
        assert s.stats["resumed"] == 3
    assert not Path(f"{db}-wal").exists()
    with sqlite3.connect(db) as c:
        assert [r for (r,) in c.execute("SELECT status FROM sessions ORDER BY session_id")] == ["complete"] * 2


def test_shards_partition_a_folder_given_in_different_spellings(tmp_path):
    """The hash was of the path as spelled: shard 1/2 given `in` and shard 2/2 given `./in/` (two
    scripts, two habits) split the folder two different ways, so some files were in both shards and
    others in neither, silently. The hash is now of the absolute, normalised path."""
    imgs = _tiny_images(tmp_path / "in", 40, folders=2)
    seen = []
    for i, spelling in ((1, "in"), (2, "./in/"), (3, str(tmp_path / "in") + "//")):
        r = run_cli("scan", spelling, "-d", "metadata", "--no-cache", "--shard", f"{i}/3", "-f", "jsonl", "-q",
                    cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        seen += [os.path.abspath(tmp_path / d["file"]) for d in jsonl(r.stdout)]
    assert sorted(seen) == sorted(str(p) for p in imgs)  # every file once


def test_shard_values_are_strict():
    for bad in ("1_0/20", "1/ 2", " 1/2", "+1/2", "\u0661/\u0662", "1/99999999999999999999999", "1/1000001",
                "1/2.5", "-1/2", "0/0", "1/2/3", ""):
        with pytest.raises(ValueError, match="--shard takes I/N"):
            parse_shard(bad)
    assert parse_shard("1000000/1000000") == (1000000, 1000000) and parse_shard("01/02") == (1, 2)


def test_merge_and_summary_say_which_shards_a_run_lacks(tmp_path):
    """A shard not merged yet, or scanned on a machine with other weights (another run), left a run
    that every count showed as whole: 2 of 3 shards merged read as a finished audit."""
    _tiny_images(tmp_path / "in", 12, folders=1)
    shards = []
    for i in (1, 3):
        db = tmp_path / f"s{i}.sqlite"
        r = run_cli("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "--shard",
                    f"{i}/3", "-q", "-f", "jsonl")
        assert r.returncode == 0, r.stderr
        shards.append(str(db))
    m = run_cli_in_process("results", "merge", "--db", str(tmp_path / "all.sqlite"), *shards, "-f", "json")
    assert m.returncode == 0 and len(json.loads(m.stdout)) == 2
    assert "lacks shard 2/3" in m.stderr, m.stderr
    s = run_cli_in_process("results", "summary", "--db", str(tmp_path / "all.sqlite"), "-f", "json")
    assert s.returncode == 0 and json.loads(s.stdout)["files"] > 0 and "lacks shard 2/3" in s.stderr


def test_a_shard_scanned_under_another_pillow_is_named_as_a_cause(tmp_path, monkeypatch):
    """The decoder versions are in a run's identity: a shard scanned on a machine with another Pillow is
    another run, and the note on the run that lacks it named other detectors, weights or aiidetect
    version, none of which differed."""
    from aiidetect import extras

    _tiny_images(tmp_path / "in", 6, folders=1)
    shards = []
    for i, pillow in ((1, None), (2, "0.0.1")):
        if pillow:  # the second machine
            monkeypatch.setattr(extras, "_decoder_versions", {**extras.decoder_versions(), "pillow": pillow})
        db = tmp_path / f"s{i}.sqlite"
        r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db),
                               "--shard", f"{i}/2", "-q", "-f", "jsonl")
        assert r.returncode == 0, r.stderr
        shards.append(str(db))
    m = run_cli_in_process("results", "merge", "--db", str(tmp_path / "all.sqlite"), *shards, "-f", "json")
    assert m.returncode == 0 and "lacks shard 2/2" in m.stderr, m.stderr
    assert "Pillow, pillow-heif or numpy" in m.stderr, m.stderr


def test_shard_gaps_of_runs_split_two_ways_or_whole(tmp_path):
    st = ResultsStore(tmp_path / "a.sqlite")
    def ran(run, shard):
        st.finish_session(st.start_session(run, shard, "local", []), 1, 0, "complete")

    for run, shard in (("a", "1/2"), ("a", "2/3"), ("b", "1/2"), ("b", "2/2"), ("c", "1/4"), ("c", None)):
        ran(run, shard)
    notes = st.shard_gaps()
    assert len(notes) == 1 and notes[0].startswith("run a has shards of /2 and of /3")
    ran("d", "2/5")
    assert st.shard_gaps(["d"]) == [st.shard_gaps()[1]] and "lacks shards 1/5, 3/5, 4/5, 5/5" in st.shard_gaps(["d"])[0]


def test_summary_of_two_runs_over_one_folder_says_how_many_files(tmp_path):
    """Two runs of one folder (other options, a new version) summed to twice the files, under the
    title "N files": an audit of 6 files read as 12."""
    _tiny_images(tmp_path / "in", 6, folders=1)
    db = tmp_path / "a.sqlite"
    for extra in ((), ("--max-pixels", "1000000")):
        r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-q",
                               "-f", "jsonl", *extra)
        assert r.returncode == 0, r.stderr
    s = run_cli_in_process("results", "summary", "--db", str(db), "-f", "json")
    summ = json.loads(s.stdout)
    assert summ["files"] == 12 and summ["distinct_files"] == 6
    assert "12 results of 6 distinct files" in s.stderr
    one = json.loads(run_cli_in_process("results", "summary", "--db", str(db), "-f", "json", "--run",
                                        summ["runs"][0]).stdout)
    assert one["files"] == one["distinct_files"] == 6


def test_merge_checks_every_source_before_merging_any(tmp_path):
    """A damaged third shard stopped the merge after the first ones were committed, with exit 2 and
    nothing on stdout: a store half merged that the user believed untouched."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    good = tmp_path / "good.sqlite"
    assert run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(good), "-q",
                              "-f", "jsonl").returncode == 0
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(good.read_bytes()[:5000])  # a shard copied off a full disk
    target = tmp_path / "all.sqlite"
    m = run_cli_in_process("results", "merge", "--db", str(target), str(good), str(bad))
    assert m.returncode == 2 and m.stdout == "" and "no store was merged" in m.stderr, m.stderr
    assert not target.exists() or sqlite3.connect(target).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


def _store_of_two(tmp_path, name: str):
    """A store holding one metadata scan of two tiny images (tmp_path/in)."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / name
    assert run_cli("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-q",
                   "-f", "jsonl").returncode == 0
    return db


def test_merge_copies_runs_by_column_name(tmp_path):
    """`INSERT INTO runs SELECT *` copied a source's runs by position: a store rebuilt by another tool
    with the columns in another order had its identity stored as its options, silently."""
    src = _store_of_two(tmp_path, "src.sqlite")
    with sqlite3.connect(src) as c:
        want = c.execute("SELECT run_id, identity, options FROM runs").fetchone()
        c.executescript("CREATE TABLE r2 AS SELECT options, identity, run_id, detectors, fusion_model, "
                        "aiidetect_version, created_at FROM runs; DROP TABLE runs; ALTER TABLE r2 RENAME TO runs;")
    m = run_cli("results", "merge", "--db", str(tmp_path / "all.sqlite"), str(src))
    assert m.returncode == 0, m.stderr
    with sqlite3.connect(tmp_path / "all.sqlite") as c:
        assert c.execute("SELECT run_id, identity, options FROM runs").fetchone() == want


def test_summary_says_a_shard_never_ran_to_the_end(tmp_path):
    """A shard whose machine was killed, merged and never resumed, left a store whose counts looked
    whole: its files simply had no row."""
    st = ResultsStore(tmp_path / "a.sqlite")
    done = st.start_session("r", "1/2", "local", [])
    st.finish_session(done, 3, 0, "complete")
    st.start_session("r", "2/2", "local", [])  # killed: stays 'running'
    killed = st.start_session("r", "2/2", "local", [])
    st.finish_session(killed, 1, 0, "interrupted")
    st.finish_session(st.start_session("u", None, "local", []), 1, 0, "interrupted")
    notes = st.shard_gaps()
    assert len(notes) == 2 and notes[0].startswith("shard 2/2 of run r never ran to the end")
    assert notes[1].startswith("run u never ran to the end")
    st.finish_session(st.start_session("r", "2/2", "local", []), 1, 0, "complete")  # resumed to the end
    assert st.shard_gaps(["r"]) == []
    st.close()


def test_a_record_whose_bytes_are_not_utf8_costs_that_row(tmp_path):
    """A damaged page inside a record's text (bytes that are not UTF-8) made sqlite3 raise
    OperationalError for the whole query: `results export` and every resume of the store ended with
    exit 2 over one row. The row is a bad-stored-record in export and is scanned again on resume."""
    from aiidetect.store import BAD_STORED_RECORD

    _tiny_images(tmp_path / "in", 4, folders=1)
    db = tmp_path / "s.sqlite"
    scan = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    r = run_cli(*scan)
    assert r.returncode == 0, r.stderr
    good = {x["file"]: x for x in jsonl(r.stdout)}
    with sqlite3.connect(db) as c:
        rid, text, file = c.execute("SELECT rowid, record, file FROM results ORDER BY path LIMIT 1").fetchone()
        raw = text.encode()
        c.execute("UPDATE results SET record=CAST(? AS TEXT) WHERE rowid=?", (raw[:60] + b"\xff\xfe" + raw[62:], rid))
    e = run_cli("results", "export", "--db", str(db), "-f", "jsonl")
    assert e.returncode == 0, e.stderr
    out = {x["file"]: x for x in jsonl(e.stdout)}
    assert out[file]["error"]["code"] == BAD_STORED_RECORD and "1 stored record(s)" in e.stderr
    assert {f: x for f, x in out.items() if f != file} == {f: x for f, x in good.items() if f != file}
    r = run_cli(*scan)
    assert r.returncode == 0, r.stderr
    assert {x["file"]: x for x in jsonl(r.stdout)} == good
    with sqlite3.connect(db) as c:
        assert [n for (n,) in c.execute("SELECT files_written FROM sessions ORDER BY session_id")] == [4, 1]


def _damage_path_index(db: Path, name: bytes) -> None:
    """Change one file name inside the (run, path) index, not in the table: what a damaged page does."""
    with sqlite3.connect(db) as c:
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name='sqlite_autoindex_results_1'").fetchone()[0]
        ps = c.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    at = data.find(name, (root - 1) * ps, root * ps)
    assert at > 0
    data[at] ^= 0x01
    db.write_bytes(bytes(data))


def test_a_damaged_store_is_refused_before_it_double_counts(tmp_path):
    """A damaged index answered the resume lookup with 'no row': the file was scanned again and a
    second row of the same (run, path) written beside the first (5 rows for 4 files, counted twice
    by summary and export). A store that fails SQLite's integrity check is refused by scan and by
    the results commands: exit 2, one line saying what to do, nothing written."""
    imgs = _tiny_images(tmp_path / "in", 4, folders=1)
    db = tmp_path / "s.sqlite"
    scan = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    assert run_cli(*scan).returncode == 0
    _damage_path_index(db, imgs[1].name.encode())
    before = db.read_bytes()
    for args in (scan, ("results", "export", "--db", str(db))):
        r = run_cli(*args)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and r.stdout == "", (args, r.stderr)
        assert len(lines) == 1 and "is damaged (SQLite integrity check" in lines[0] and ".dump" in lines[0], r.stderr
    assert db.read_bytes() == before
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4


def test_a_store_with_a_damaged_page_is_refused_in_one_line(tmp_path):
    """SQLite's report of a damaged page spans lines ('*** in database main ***' then the page): the
    error must still be one line."""
    db = _store_of_two(tmp_path, "s.sqlite")
    with sqlite3.connect(db) as c:
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name='results'").fetchone()[0]
        ps = c.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    data[(root - 1) * ps] = 0  # not a b-tree page type
    db.write_bytes(bytes(data))
    r = run_cli("results", "summary", "--db", str(db))
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "damaged" in lines[0], r.stderr


def test_a_record_at_odds_with_its_row_is_neither_exported_nor_resumed(tmp_path):
    """A hand edit or a damaged page: a p_ai of 7.5 with the verdict ai-generated, a verdict column
    that says likely-real while the record says otherwise (summary and --verdict read the column,
    export the record), a row moved under another file's path. Export passed each through as stored,
    and resume printed them as that file's verdict; now each is a bad-stored-record in export and is
    scanned again on resume."""
    from aiidetect.store import BAD_STORED_RECORD

    imgs = _tiny_images(tmp_path / "in", 4, folders=1)
    db = tmp_path / "s.sqlite"
    scan = ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl", "-q")
    r = run_cli(*scan)
    assert r.returncode == 0, r.stderr
    good = {x["file"]: x for x in jsonl(r.stdout)}
    keys = [str(p) for p in imgs]
    with sqlite3.connect(db) as c:
        c.execute("UPDATE results SET record=json_set(record, '$.p_ai', 7.5, '$.verdict', 'ai-generated'), "
                  "verdict='ai-generated', p_ai=7.5 WHERE path=?", (keys[0],))
        c.execute("UPDATE results SET verdict='likely-real' WHERE path=?", (keys[1],))
        # the row of file 3 moved under file 2's path, with file 2's size and mtime
        c.execute("DELETE FROM results WHERE path=?", (keys[2],))
        st = imgs[2].stat()
        c.execute("UPDATE results SET path=?, size=?, mtime_ns=? WHERE path=?",
                  (keys[2], st.st_size, st.st_mtime_ns, keys[3]))
    e = run_cli("results", "export", "--db", str(db), "-f", "jsonl")
    assert e.returncode == 0, e.stderr
    codes = sorted((x.get("error") or {}).get("code") or "" for x in jsonl(e.stdout))
    assert codes == [BAD_STORED_RECORD] * 3, e.stdout  # the 3 rows left, each at odds with itself
    r = run_cli(*scan)
    assert r.returncode == 0, r.stderr
    assert {x["file"]: x for x in jsonl(r.stdout)} == good


def test_a_wal_of_another_store_is_refused_without_damaging_the_store(tmp_path):
    """A -wal copied beside the store from another one: the refused scan's connection checkpointed it
    into the store on close, damaging it for good. The check runs through a read-only connection, the
    line names the -wal, and once it is moved away the store is whole."""
    _tiny_images(tmp_path / "a", 2, folders=1)
    _tiny_images(tmp_path / "b", 30, folders=1)
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    for src, db in ((tmp_path / "a", a), (tmp_path / "b", b)):
        assert run_cli("scan", str(src), "-d", "metadata", "--no-cache", "--db", str(db), "-q",
                       "-f", "jsonl").returncode == 0
    # b's writer ends without a checkpoint (killed): its last transaction is only in b.sqlite-wal
    code = ("import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_autocheckpoint=0'); "
            "c.execute(\"UPDATE results SET verdict='ai-generated'\"); c.commit(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(b)], check=True)
    Path(f"{a}-wal").write_bytes(Path(f"{b}-wal").read_bytes())
    before = a.read_bytes()
    r = run_cli("scan", str(tmp_path / "a"), "-d", "metadata", "--no-cache", "--db", str(a), "-f", "jsonl")
    assert r.returncode == 2 and "a.sqlite-wal" in r.stderr and "damaged" in r.stderr, r.stderr
    assert a.read_bytes() == before
    Path(f"{a}-wal").unlink()
    e = run_cli("results", "export", "--db", str(a), "-f", "jsonl")
    assert e.returncode == 0 and len(jsonl(e.stdout)) == 2, e.stderr


def test_results_commands_refuse_a_store_lacking_what_they_read_in_one_line(tmp_path):
    """A column renamed or a table dropped by hand: `results export` wrote the start of its output,
    then ended with an unexpected 'OperationalError: no such column'; parquet the same. Each says what
    the store lacks (a column no command reads still does not matter: see the test above)."""
    pytest.importorskip("pyarrow")
    db = _store_of_two(tmp_path, "a.sqlite")
    with sqlite3.connect(db) as c:
        c.execute("ALTER TABLE results RENAME COLUMN verdict TO verdict_old")
    out = tmp_path / "a.parquet"
    for args in (("export", "-f", "table"), ("parquet", "-o", str(out))):
        r = run_cli("results", *args[:1], "--db", str(db), *args[1:])
        lines = r.stderr.splitlines()
        assert r.returncode == 2 and r.stdout == "" and len(lines) == 1, (args, r.stdout, r.stderr)
        assert lines[0].startswith("error: ") and "lacks verdict" in lines[0], r.stderr
    assert not out.exists()


def test_a_damaged_run_description_does_not_stop_the_results_commands(tmp_path):
    """runs.options is a description nothing reads back; one damaged value ended summary, export and
    failed with an unexpected JSONDecodeError."""
    db = _store_of_two(tmp_path, "a.sqlite")
    with sqlite3.connect(db) as c:
        c.execute("UPDATE runs SET options='{not json'")
    e = run_cli("results", "export", "--db", str(db), "-f", "jsonl")
    assert e.returncode == 0 and len(jsonl(e.stdout)) == 2, e.stderr


def test_a_pipe_given_as_the_store_is_refused_not_waited_on(tmp_path):
    """`results summary --db fifo` blocked in open() until someone wrote to the pipe, for good (SIGTERM
    did not end it); scan said 'disk I/O error'. Both say what it is."""
    fifo = tmp_path / "audit.sqlite"
    os.mkfifo(fifo)
    _tiny_images(tmp_path / "in", 1, folders=1)
    for args in (("results", "summary", "--db", str(fifo)),
                 ("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(fifo), "-f", "jsonl")):
        try:
            r = run_cli(*args, timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{args[0]} waited on the pipe")
        assert r.returncode == 2 and "not a regular file" in r.stderr and r.stdout == "", r.stderr


def test_a_record_agreeing_with_its_row_is_read_back_whatever_its_p_ai_or_name(tmp_path):
    """The row holds p_ai as fusion computed it, the record the 6 decimals to_dict keeps: every record
    with a p_ai (any verdict but an error or 'no opinion') was a bad-stored-record in export and was
    scanned again by every resume. A file named 'x#b64:QUJD.jpg' had its name read as base64: the same."""
    from aiidetect.store import StoreSession, stored_record

    names = ["plain.jpg", "x#b64:QUJD.jpg", "y#b64:abc.jpg", os.fsdecode(b"lat\xe9.jpg")]
    for n in names:
        (tmp_path / n).write_bytes(b"x" * 10)
    store = ResultsStore(tmp_path / "s.sqlite")
    run = store.ensure_run({"t": 1}, {}, ["metadata"], "rules")
    session = StoreSession(store, run, "rules")
    for i, n in enumerate(names):
        path = str(tmp_path / n)
        assert session.prior(path) is None
        session.add(Record(file=path, sha256="ab" * 32, size_bytes=10, verdict="ai-generated",
                           p_ai=0.999898970806092 - i / 7))
    session.close()
    got = [stored_record(r) for r in store.iter_rows([run])]
    assert [r.error for r in got] == [None] * len(names)
    assert sorted(os.path.basename(r.file) for r in got) == sorted(names)
    again = StoreSession(store, run, "rules")
    assert all(again.prior(str(tmp_path / n)) is not None for n in names)  # resumed, not scanned again
    again.close()
    store.close()


def test_merge_keeps_shard_sessions_of_one_process_apart(tmp_path):
    """Shard scans run by one process (the library in a service's loop) share its pid and argv and, when
    fast, the start second: merge took them for one invocation and kept one session of three."""
    dbs = []
    for i in (1, 2, 3):
        st = ResultsStore(tmp_path / f"s{i}.sqlite")
        st.finish_session(st.start_session("run", f"{i}/3", "local", ["scan"]), 1, 0, "complete")
        st.close()
        dbs.append(tmp_path / f"s{i}.sqlite")
    with sqlite3.connect(dbs[0]) as a:   # the start second, made the same whatever the clock did
        when = a.execute("SELECT started_at FROM sessions").fetchone()[0]
    for db in dbs[1:]:
        with sqlite3.connect(db) as c:
            c.execute("UPDATE sessions SET started_at=?", (when,))
    merge_stores(tmp_path / "all.sqlite", dbs)
    with sqlite3.connect(tmp_path / "all.sqlite") as c:
        shards = sorted(r[0] for r in c.execute("SELECT shard FROM sessions"))
    assert shards == ["1/3", "2/3", "3/3"]
    assert ResultsStore(tmp_path / "all.sqlite").shard_gaps() == []


def _scan_in(tmp_path, db, *paths):
    r = run_cli_in_process("scan", *paths, "-d", "metadata", "--no-cache", "--db", str(db), "-f", "jsonl")
    assert r.returncode == 0, r.stderr
    return jsonl(r.stdout), r.stderr


def _linked_tree(tmp_path, n=4):
    """tmp/in/f0x/img*.png, `link` -> in (a symlinked folder) and `lk` -> in/f00 (so `lk/..` is `in`)."""
    imgs = _tiny_images(tmp_path / "in", n, folders=2)
    (tmp_path / "link").symlink_to("in")
    (tmp_path / "lk").symlink_to(Path("in") / "f00")
    return imgs


def test_one_file_is_one_row_whatever_the_spelling(tmp_path, monkeypatch):
    """The key was the path as spelled (`.` and `..` removed lexically): the same folder reached
    through a symlinked folder, or as `lk/..` where lk is a link, was scanned again with rows of its
    own, and counted twice by `results summary`. Each record still shows the path as it was given."""
    imgs = _linked_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "s.sqlite"
    _scan_in(tmp_path, db, "in")
    for spelling in (str(tmp_path / "link") + "/", "lk/..", "link/f00/img00000.png"):
        recs, err = _scan_in(tmp_path, db, spelling)
        assert all(d["file"].startswith(spelling.rstrip("/")) for d in recs), recs  # as given
        assert f"{len(recs)} unchanged" in err, (spelling, err)  # resumed, not read again
    assert len(_rows(db)) == len(imgs)
    assert sorted(r[0] for r in _rows(db)) == sorted(str(p.resolve()) for p in imgs)
    s = json.loads(run_cli_in_process("results", "summary", "--db", str(db), "-f", "json").stdout)
    assert s["files"] == len(imgs)


def test_a_link_then_dotdot_is_not_the_row_of_another_file(tmp_path, monkeypatch):
    """`lk/../a.png` (lk a link to in/f00) is in/a.png, but its key was ./a.png, another file: one
    with the same size and mtime had its stored record printed as this file's verdict and hash."""
    _linked_tree(tmp_path, 1)
    good = tmp_path / "in" / "a.png"
    good.write_bytes((tmp_path / "in" / "f00" / "img00000.png").read_bytes())
    other = tmp_path / "a.png"
    other.write_bytes(os.urandom(good.stat().st_size))
    os.utime(other, ns=(good.stat().st_atime_ns, good.stat().st_mtime_ns))
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "s.sqlite"
    _scan_in(tmp_path, db, "a.png")
    (rec,), _ = _scan_in(tmp_path, db, "lk/../a.png")
    assert rec["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert rec["verdict"] != "error"


def test_a_store_of_an_older_version_is_rekeyed_once(tmp_path, monkeypatch):
    """A store written before (keys as spelled: a row per spelling) is re-keyed when first opened
    for writing, keeping the row scanned last of two that become one; a shard of that version is
    re-keyed when merged. A read-only open reads it as it is."""
    import aiidetect.store as store

    imgs = _linked_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    old_key = lambda p, folders=None: os.path.normpath(os.path.abspath(p))  # noqa: E731 - the old key

    def old_store(db, *spellings):
        with monkeypatch.context() as m:
            m.setattr(store, "path_key", old_key)
            for sp in spellings:
                _scan_in(tmp_path, db, sp)
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM meta WHERE key='path_keys'")
            # the later scan is the one kept, whichever second each ran in
            c.execute("UPDATE results SET scanned_at='2001-01-01T00:00:00Z' WHERE path LIKE ?",
                      (f"{tmp_path}/in/%",))
        return db

    db = old_store(tmp_path / "old.sqlite", "in", "link")
    assert len(_rows(db)) == 2 * len(imgs)  # what the old version left
    with sqlite3.connect(db) as c:  # and a file set aside under the old key stays set aside
        c.execute("INSERT INTO crashes VALUES (?, 1, 2, 2)", (f"{tmp_path}/link/f00/img00000.png",))
    with ResultsStore(db) as st:
        assert st.crash_strikes() == {str(imgs[0].resolve()): (1, 2, 2)}
    rows = _rows(db)
    assert sorted(r[0] for r in rows) == sorted(str(p.resolve()) for p in imgs)
    with sqlite3.connect(db) as c:
        assert {f.split("/")[0] for (f,) in c.execute("SELECT file FROM results")} == {"link"}
    recs, err = _scan_in(tmp_path, db, "in")
    assert f"{len(imgs)} unchanged" in err and len(_rows(db)) == len(imgs)
    # a shard written by the old version, merged into a store of this one
    shard = old_store(tmp_path / "shard.sqlite", "link")
    assert merge_stores(db, [shard])[0]["added"] == 0  # every row joined one here once re-keyed
    assert len(_rows(db)) == len(imgs)
    # into an empty store, every row of the old shard is added
    assert merge_stores(tmp_path / "new.sqlite", [shard])[0]["added"] == len(imgs)


def test_shards_agree_with_the_store_through_a_symlinked_folder(tmp_path):
    """A shard given the folder through a link hashed another path than one given the folder: the
    two split it differently (files in both shards or in neither) and wrote two rows of a file."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    names = [f"IMG_{i:04d}.jpg" for i in range(40)]
    assert [shard_of(str(tmp_path / "link" / n), 7) for n in names] == \
        [shard_of(str(tmp_path / "real" / n), 7) for n in names]


def _legacy_store(tmp_path, n=5, folder="link") -> Path:
    """A store of an older version: rows keyed through the symlinked folder `link` -> in."""
    (tmp_path / "in").mkdir(exist_ok=True)
    if not (tmp_path / "link").exists():
        (tmp_path / "link").symlink_to("in")
    db = tmp_path / "old.sqlite"
    ResultsStore(db).close()
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM meta WHERE key='path_keys'")
        c.execute("INSERT INTO runs VALUES ('r', '{}', '{}', 'metadata', NULL, NULL, '2026-01-01T00:00:00Z')")
        c.executemany("INSERT INTO results (run_id, path, file, folder, verdict, scanned_at, record) "
                      "VALUES ('r', ?, ?, ?, 'likely-real', '2026-01-01T00:00:00Z', '{}')",
                      [(f"{tmp_path}/{folder}/{i}.png", f"{folder}/{i}.png", f"{tmp_path}/{folder}") for i in range(n)])
    return db


def test_two_processes_opening_an_old_store_at_once_lose_no_row(tmp_path, monkeypatch):
    """The re-key read the rows before taking the write lock: when another process re-keyed the
    store in between, each row it had moved was found as its own duplicate and deleted."""
    import threading

    import aiidetect.store as store

    db = _legacy_store(tmp_path)
    real, other = store.path_key, []

    def path_key(path, folders=None):
        if not other:  # a second process opens the store in the middle of this one's re-key
            other.append(threading.Thread(target=lambda: ResultsStore(db, check=False).close()))
            other[0].start()
            other[0].join(0.5)  # it finishes first when nothing holds it back
        return real(path, folders)

    monkeypatch.setattr(store, "path_key", path_key)
    ResultsStore(db, check=False).close()
    other[0].join()
    assert sorted(r[0] for r in _rows(db)) == [f"{tmp_path}/in/{i}.png" for i in range(5)]


def test_the_rekey_reads_the_table_once_however_many_folders(tmp_path):
    """With no index on `folder`, a query per linked folder read the whole table each time: a store
    of 10,000 linked folders and a million rows took hours, holding the write lock."""
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to("in")
    db = tmp_path / "s.sqlite"
    with ResultsStore(db) as st:
        st.db.execute("DELETE FROM meta WHERE key='path_keys'")
        st.db.executemany("INSERT INTO results (run_id, path, file, folder, verdict, scanned_at, record) "
                          "VALUES ('r', ?, 'x', ?, 'likely-real', '2026-01-01T00:00:00Z', '{}')",
                          [(f"{tmp_path}/link/f{i}/a.png", f"{tmp_path}/link/f{i}") for i in range(30)])
        st.db.commit()
        reads: list[str] = []
        st.db.set_trace_callback(lambda sql: reads.append(sql) if "FROM results WHERE folder" in sql else None)
        st._rekey()
        st.db.set_trace_callback(None)
    assert len(reads) <= 1, reads
    assert sorted(r[0] for r in _rows(db)) == sorted(f"{tmp_path}/in/f{i}/a.png" for i in range(30))


def test_an_old_store_read_as_it_is_says_its_counts_may_be_doubled(tmp_path):
    """`results summary` opens a store read-only, so an old store is never re-keyed by it: the same
    file under two spellings of its folder was counted twice, with nothing to say so."""
    db = _legacy_store(tmp_path, n=2)
    with sqlite3.connect(db) as c:  # the same two files scanned again through the real folder
        c.executemany("INSERT INTO results (run_id, path, file, folder, verdict, scanned_at, record) "
                      "VALUES ('r', ?, 'x', ?, 'likely-real', '2026-01-02T00:00:00Z', '{}')",
                      [(f"{tmp_path}/in/{i}.png", f"{tmp_path}/in") for i in range(2)])
    os.chmod(db, 0o444)
    r = run_cli_in_process("results", "summary", "--db", str(db), "-f", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == 4  # read as it is
    assert "older version" in r.stderr and "1 folder(s)" in r.stderr and "counted and exported twice" in r.stderr
    assert "older version" not in run_cli_in_process("results", "summary", "--db", str(db), "-q").stderr
    merge_stores(tmp_path / "new.sqlite", [db])  # the copy the note offers
    s = run_cli_in_process("results", "summary", "--db", str(tmp_path / "new.sqlite"), "-f", "json")
    assert json.loads(s.stdout)["files"] == 2 and "older version" not in s.stderr


def test_a_folder_link_changed_during_the_scan_keys_the_file_read(tmp_path):
    """The folder's realpath was remembered for the whole scan: `current` moved from v1 to v2 during
    it, the files read from v2 were stored under v1's paths, and a later scan of v1 was handed the
    record (verdict and hash) of v2's file when size and mtime matched."""
    from aiidetect.store import StoreSession

    for v, data in (("v1", b"a" * 10), ("v2", b"b" * 10)):
        (tmp_path / v).mkdir()
        for name in ("a.png", "b.png"):
            (tmp_path / v / name).write_bytes(data)
            os.utime(tmp_path / v / name, ns=(10**18, 10**18))
    cur = tmp_path / "current"
    cur.symlink_to("v1")
    store = ResultsStore(tmp_path / "s.sqlite")
    run = store.ensure_run({"t": 1}, {}, ["metadata"], "rules")
    session = StoreSession(store, run, "rules")
    for name in ("a.png", "b.png"):
        if name == "b.png":  # a release switched while the scan runs
            cur.unlink()
            cur.symlink_to("v2")
        path = str(cur / name)
        assert session.prior(path) is None
        data = Path(path).read_bytes()
        session.add(Record(file=path, sha256=hashlib.sha256(data).hexdigest(), size_bytes=10, verdict="likely-real"))
    session.close()
    again = StoreSession(store, run, "rules")
    assert again.prior(str(tmp_path / "v1" / "b.png")) is None  # v2's record is not v1's
    back = again.prior(str(tmp_path / "v2" / "b.png"))
    assert back is not None and back.sha256 == hashlib.sha256(b"b" * 10).hexdigest()
    again.close()
    store.close()


def test_an_old_store_with_a_folder_no_file_system_has_is_read_and_merged(tmp_path):
    """A store is input: a crafted old shard whose folder held a NUL ended `results merge` (and any
    `scan --db` into it, and `results summary`) with a ValueError traceback from realpath."""
    db = _legacy_store(tmp_path, n=2)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE results SET folder=?, path=? WHERE path LIKE '%/0.png'", ("/x/a\x00b", "/x/a\x00b/0.png"))
    s = run_cli_in_process("results", "summary", "--db", str(db), "-f", "json")
    assert s.returncode == 0 and json.loads(s.stdout)["files"] == 2, s.stderr
    m = run_cli_in_process("results", "merge", "--db", str(tmp_path / "all.sqlite"), str(db))
    assert m.returncode == 0, m.stderr
    assert sorted(r[0] for r in _rows(tmp_path / "all.sqlite")) == sorted(["/x/a\x00b/0.png", f"{tmp_path}/in/1.png"])


@pytest.fixture
def integrity_checks(monkeypatch):
    """The full integrity checks run (PRAGMA integrity_check statements), counted on every SQLite
    connection opened meanwhile: what a check costs is a count here, never a timing."""
    real, seen = sqlite3.connect, []

    def connect(*a, **kw):
        c = real(*a, **kw)
        c.set_trace_callback(lambda sql: seen.append(sql) if "integrity_check" in sql.lower() else None)
        return c
    monkeypatch.setattr(sqlite3, "connect", connect)
    return seen


def _scan_into(src: Path, db: Path):
    return run_cli_in_process("scan", str(src), "-d", "metadata", "--no-cache", "--db", str(db), "-q", "-f", "jsonl")


def test_a_store_aiidetect_closed_cleanly_is_opened_without_reading_it_whole(tmp_path, integrity_checks):
    """Every open ran SQLite's full integrity check, which reads every page (13-18 s at 1M rows,
    docs/scale.md): each resume, shard session, `results` command and merge paid for the whole archive.
    A store whose file is as aiidetect closed it gets a bounded probe; `results check` runs the full
    check on demand; and a damaged index the probe meets (here all 3 rows are probed) is confirmed by the
    full check and refused."""
    imgs = _tiny_images(tmp_path / "in", 3, folders=1)
    db, other = tmp_path / "s.sqlite", tmp_path / "m.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    for args in (("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db), "-q", "-f", "jsonl"),
                 ("results", "summary", "--db", str(db), "-q"),
                 ("results", "merge", "--db", str(other), str(db), "-q")):
        r = run_cli_in_process(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert integrity_checks == [], args
    assert Path(f"{db}-clean").is_file()
    r = run_cli_in_process("results", "check", "--db", str(db), "-f", "json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["rows"] == 3 and len(integrity_checks) == 1, r.stderr
    # Damage that leaves the file's state as recorded (a disk's own fault): only the probe sees it.
    recorded = Path(f"{db}-clean").read_text()
    _damage_path_index(db, imgs[1].name.encode())
    state = json.loads(recorded)
    st = db.stat()
    state.update(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, ino=st.st_ino, dev=st.st_dev)
    Path(f"{db}-clean").write_text(json.dumps(state))
    before, checks = db.read_bytes(), len(integrity_checks)
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"is damaged \(SQLite integrity check"):
            ResultsStore(db, readonly=readonly)
    assert len(integrity_checks) == checks + 2 and db.read_bytes() == before


def _damage_a_page_the_probe_skips(db: Path, name: str) -> Path:
    """Overwrite the root page of table or index `name` under the file system's view (a disk's own fault:
    the file's state stays as recorded, so the next open runs only the probe). Returns the -clean file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        page = c.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (name,)).fetchone()[0]
        ps = c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    data = bytearray(db.read_bytes())
    data[(page - 1) * ps:page * ps] = b"\xa5" * ps
    db.write_bytes(bytes(data))
    st = db.stat()
    clean = Path(f"{db}-clean")
    clean.write_text(json.dumps({**json.loads(clean.read_text()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                 "ctime_ns": st.st_ctime_ns, "dev": st.st_dev, "ino": st.st_ino}))
    return clean


def test_damage_met_after_the_open_is_refused_and_forgets_the_clean_record(tmp_path, integrity_checks):
    """A damaged page the open's probe does not read (here the verdict index, which only `summary` reads)
    ended `results summary` with "DatabaseError: database disk image is malformed" and left the clean
    record: every later open trusted the store again and ran only the probe. Now the documented one line,
    exit 2, and the record is gone, so the next open checks the store whole and refuses it."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    db2 = tmp_path / "t.sqlite"
    for suffix in ("", "-clean"):
        (tmp_path / f"t.sqlite{suffix}").write_bytes((tmp_path / f"s.sqlite{suffix}").read_bytes())
    clean = _damage_a_page_the_probe_skips(db, "results_verdict")
    r = run_cli_in_process("results", "summary", "--db", str(db), "-f", "json")
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and r.stdout == "" and len(lines) == 1, (r.returncode, r.stderr)
    assert lines[0].startswith("error: ") and "is damaged (database disk image is malformed)" in lines[0], r.stderr
    assert ".dump" in lines[0] and integrity_checks == [] and not clean.exists()
    r = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl")
    assert r.returncode == 2 and "is damaged (SQLite integrity check" in r.stderr and len(integrity_checks) == 1, r.stderr
    # merge: SQLite does not say which file the damaged page is in; the source's own check does
    clean = _damage_a_page_the_probe_skips(db2, "sessions")
    r = run_cli_in_process("results", "merge", "--db", str(tmp_path / "m.sqlite"), str(db2))
    assert r.returncode == 2 and f"{db2} is damaged (SQLite integrity check" in r.stderr, r.stderr
    assert not clean.exists()


def test_a_store_not_as_aiidetect_left_it_gets_the_full_check(tmp_path, integrity_checks):
    """The reasons for the full check: a writer's -wal left beside it (killed, or copied from elsewhere),
    a change by another program, a copy (another inode), a clean file that is not aiidetect's, or none."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    clean = Path(f"{db}-clean")

    def opens_with_full_check(path=db, **kw) -> bool:
        n = len(integrity_checks)
        ResultsStore(path, **kw).close()
        return len(integrity_checks) == n + 1

    assert not opens_with_full_check() and not opens_with_full_check(readonly=True)
    # a writer killed with its last batch in the -wal
    code = ("import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_autocheckpoint=0'); "
            "c.execute(\"UPDATE sessions SET status='died'\"); c.commit(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(db)], check=True)
    assert opens_with_full_check(readonly=True) and opens_with_full_check()
    assert not opens_with_full_check()  # closed cleanly again by that writer
    with sqlite3.connect(db) as c:  # another program's write
        c.execute("UPDATE runs SET options='{}'")
    c.close()
    # a reader's full check that finds it sound records that too: the next open, reader or writer, probes
    assert opens_with_full_check(readonly=True) and not opens_with_full_check(readonly=True)
    assert not opens_with_full_check()
    copy = tmp_path / "copy.sqlite"
    import shutil

    shutil.copy2(db, copy)
    shutil.copy2(clean, f"{copy}-clean")
    assert opens_with_full_check(copy, readonly=True)
    clean.write_text("{}")
    assert opens_with_full_check(readonly=True)
    clean.unlink()
    assert opens_with_full_check(readonly=True)
    clean.unlink()  # recorded by that reader
    os.mkfifo(clean)  # never waited on
    assert opens_with_full_check(readonly=True) and opens_with_full_check(check="full")


def test_a_writer_open_forgets_the_clean_state_until_it_closes(tmp_path, integrity_checks):
    """While a writer has the store open, its file is not as last recorded: a second writer or a reader
    then (or after the first was killed) checks it whole. A writer that met a write error records nothing."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    clean = Path(f"{db}-clean")
    first = ResultsStore(db)
    assert integrity_checks == [] and not clean.exists()
    second = ResultsStore(db)
    assert len(integrity_checks) == 1
    second.close()
    first.close()
    ResultsStore(db, readonly=True).close()
    assert clean.exists() and len(integrity_checks) == 1
    st = ResultsStore(db)
    with pytest.raises(sqlite3.Error):
        st.write_rows([("x",) * 3])  # a batch SQLite refuses
    st.close()
    assert not clean.exists()


def test_export_and_merge_do_not_count_the_whole_store(tmp_path, monkeypatch):
    """`results export` (and failed, parquet: resolve_run) counted every run's rows only to list the run
    ids, and `merge` counted the target's rows before and after to say how many it added: each count reads
    every index entry (0.1-0.2 s per million rows). The rows added are the source's rows not in the target."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    db, target = tmp_path / "s.sqlite", tmp_path / "t.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    real, seen = sqlite3.connect, []

    def connect(where, *a, **kw):
        c = real(where, *a, **kw)
        c.set_trace_callback(lambda q: seen.append((os.fspath(where), q)))
        return c
    monkeypatch.setattr(sqlite3, "connect", connect)
    # merge reads each source whole anyway (its check counts the source's rows): the target is what grows
    counts = lambda: [q for w, q in seen if "COUNT(*) FROM results" in q and "s.sqlite" not in w]  # noqa: E731
    e = run_cli_in_process("results", "export", "--db", str(db), "-f", "jsonl")
    assert e.returncode == 0 and len(jsonl(e.stdout)) == 3, e.stderr
    assert [q for _, q in seen if "COUNT(*) FROM results" in q] == []
    assert merge_stores(target, [db])[0]["added"] == 3 and counts() == []
    assert merge_stores(target, [db])[0]["added"] == 0
    with sqlite3.connect(db) as c:
        c.execute("UPDATE results SET path = path || '-new' WHERE rowid = 1")
    c.close()
    assert merge_stores(target, [db])[0] == {"source": str(db), "rows": 3, "added": 1, "conflicts": 0}
    assert counts() == []


def test_a_crafted_clean_file_never_crashes_the_open(tmp_path, integrity_checks):
    """The clean file is read as JSON: 4 KB of nested brackets made the decoder raise RecursionError,
    which no caller catches; such a file says nothing, and the store gets the full check."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    Path(f"{db}-clean").write_text("[" * 4000)
    with ResultsStore(db, readonly=True) as st:
        assert st.checked == "full" and len(integrity_checks) == 1
    r = run_cli_in_process("results", "summary", "--db", str(db), "-q", "-f", "json")
    assert r.returncode == 0, r.stderr


def test_a_store_named_through_a_link_has_one_clean_state_beside_its_file(tmp_path, integrity_checks):
    """SQLite keeps the -wal beside the link's target: a store closed through a link recorded its clean
    state beside the link and looked for a -wal there, so a writer through the real name (its rows still in
    the -wal beside the file) left the link's record standing, and an open through the link took the
    store for as it was left: the probe, not the full check, with another connection's log in play."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    (tmp_path / "real").mkdir()
    real, link = tmp_path / "real" / "s.sqlite", tmp_path / "s.sqlite"
    link.symlink_to(real)
    assert _scan_into(tmp_path / "in", link).returncode == 0
    assert sorted(p.name for p in tmp_path.glob("s.sqlite*")) == ["s.sqlite"]  # nothing beside the link
    with ResultsStore(link, readonly=True) as st:
        assert st.checked == "probe"
    writer = sqlite3.connect(real)  # another program writing through the real name, its rows in the -wal
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE sessions SET status='died'")
    writer.commit()
    try:
        with ResultsStore(link, readonly=True) as st:
            assert st.checked == "full"
    finally:
        writer.close()


def test_a_row_whose_path_is_not_utf8_does_not_refuse_a_resume_of_a_clean_store(tmp_path, integrity_checks):
    """A hand edit left a path that is not UTF-8 (the full check does not look at text): the scan after it
    ran and closed the store cleanly, and the next one was refused, 'cannot be opened for writing (Could
    not decode to UTF-8 ...)': the probe read the key into Python to look it up again."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    with sqlite3.connect(db) as c:
        c.execute("UPDATE results SET path = CAST(x'2f78ff' AS TEXT) WHERE rowid = 1")
    c.close()
    for _ in range(2):
        r = _scan_into(tmp_path / "in", db)
        assert r.returncode == 0, r.stderr
    with ResultsStore(db) as st:
        assert st.checked == "probe"


def test_a_writer_that_met_an_error_leaves_no_clean_state_even_one_written_after_it_opened(tmp_path, integrity_checks):
    """A writer that closed cleanly the moment another opened could put its record back after the other
    removed it (the file unchanged by then, so the record is still true of it). When that other writer then
    met an error (a damaged page read, a write refused), its close left the record standing, and the next
    open took the store for as it was left: the probe, not the full check."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    clean = Path(f"{db}-clean")
    record = clean.read_bytes()
    st = ResultsStore(db)
    assert not clean.exists()
    clean.write_bytes(record)  # the other writer's record, landing after this one's open
    with pytest.raises(sqlite3.Error):
        st.write_rows([("x",) * 3])
    st.close()
    assert not clean.exists()
    with ResultsStore(db, readonly=True) as ro:
        assert ro.checked == "full"


def test_damage_a_scan_meets_after_the_open_stops_it_and_forgets_the_clean_record(tmp_path):
    """A damaged page the writer's probe does not read (the verdict index, which the question "has this run
    any rows yet?" reads) stopped `scan --db` with SQLite's bare "database disk image is malformed", and the
    store's close then wrote its clean record back: every later open trusted the store again and ran only
    the probe. Now the documented line, exit 2, and no record left."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    clean = _damage_a_page_the_probe_skips(db, "results_verdict")
    r = _scan_into(tmp_path / "in", db)
    assert r.returncode == 2 and r.stdout == "" and "is damaged (database disk image is malformed" in r.stderr, r.stderr
    assert not clean.exists()


def test_damage_merge_meets_in_a_source_while_checking_it_is_the_damaged_line(tmp_path):
    """merge counts each source's rows before it merges any (the smallest index, here the SHA-256 one, which
    the probe does not read): damage met there said "cannot be read (database disk image is malformed)"
    and left the source's clean record, so every later open trusted it again."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    clean = _damage_a_page_the_probe_skips(db, "results_sha")
    r = run_cli_in_process("results", "merge", "--db", str(tmp_path / "m.sqlite"), str(db))
    assert r.returncode == 2 and f"{db} is damaged (database disk image is malformed" in r.stderr, r.stderr
    assert "no store was merged" in r.stderr and not clean.exists()


def test_damage_a_reader_met_is_not_hidden_by_a_writer_that_closes_after_it(tmp_path, integrity_checks):
    """A writer open while a reader met damage (a page gone bad under a long scan) closed cleanly afterwards and
    recorded the damaged file as clean: the next open ran only the probe, which does not read that page, and
    accepted the store. The damage met is noted beside the store: no clean state counts or is written while the
    note is there, and a full check that finds the store sound (a rebuilt store moved in) removes it."""
    _tiny_images(tmp_path / "in", 3, folders=1)
    db, sound = tmp_path / "s.sqlite", tmp_path / "sound.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    sound.write_bytes(db.read_bytes())
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        page = c.execute("SELECT rootpage FROM sqlite_master WHERE name='results_sha'").fetchone()[0]
        ps = c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    writer = ResultsStore(db)
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * ps)
        fh.write(b"\xa5" * ps)
    with pytest.raises(StoreError, match="is damaged"):
        ResultsStore(db, readonly=True)
    writer.close()
    assert not Path(f"{db}-clean").exists() and Path(f"{db}-damaged").exists()
    checks = len(integrity_checks)
    for readonly in (True, False):
        with pytest.raises(StoreError, match="is damaged"):
            ResultsStore(db, readonly=readonly)
    assert len(integrity_checks) == checks + 2  # checked whole, not probed
    os.replace(sound, db)  # the rebuilt store moved in: sound, the note goes, and its next close is clean again
    ResultsStore(db).close()
    assert not Path(f"{db}-damaged").exists() and Path(f"{db}-clean").exists()
    assert ResultsStore(db, readonly=True).checked == "probe"


def test_a_store_restored_in_place_with_its_size_and_mtime_is_checked_whole(tmp_path, integrity_checks):
    """A backup restored over the store in place (`cp -p`: the same inode, and here the same size and
    modification time) is not as aiidetect closed it: its change time says so, and the open checks it whole."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    st = db.stat()
    bad = bytearray(db.read_bytes())
    bad[-64:] = b"\xa5" * 64  # the last page: a results row the backup's copy lost
    with open(db, "r+b") as fh:  # in place: the inode kept
        fh.write(bad)
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (db.stat().st_ino, db.stat().st_size, db.stat().st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    from aiidetect.store import closed_cleanly

    assert Path(f"{db}-clean").exists() and not closed_cleanly(db)
    n = len(integrity_checks)
    try:
        ResultsStore(db, readonly=True).close()
    except StoreError:
        pass  # what the check finds in the bytes changed is not this test's point: that it ran
    assert len(integrity_checks) == n + 1


def test_results_summary_while_a_scan_writes_counts_one_moment_of_the_store(tmp_path, monkeypatch):
    """`results summary` read its counts in separate statements, each seeing the store as it was then: a batch a
    running scan committed between them gave `files` 3 and `distinct_files` 6 of one run, and a stderr note that
    "runs scanned some of the same files". Its counts now come from one read snapshot."""
    from conftest import run_cli_in_process

    _tiny_images(tmp_path / "in", 3, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    real = sqlite3.connect
    scan = real(db)  # the running scan's connection

    def commit_a_batch() -> None:
        scan.execute("INSERT INTO results SELECT run_id, path || '.more', file || '.more', folder, size, mtime_ns, "
                     "sha256, verdict, p_ai, error_code, error_message, fusion_model, session_id, scanned_at, record "
                     "FROM results")
        scan.commit()

    class Between(sqlite3.Connection):
        def execute(self, sql, *a):
            if "COUNT(DISTINCT path)" in sql and not scan.in_transaction and \
                    real(db).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3:
                commit_a_batch()  # after the verdict counts were read, before the distinct files
            return super().execute(sql, *a)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, **{**k, "factory": Between}))
    r = run_cli_in_process("results", "summary", "--db", str(db), "-f", "json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert real(db).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 6  # the batch was committed meanwhile
    assert (s["files"], s["distinct_files"], sum(f["files"] for f in s["folders"]),
            s["run_details"][0]["files"]) == (3, 3, 3, 3), s
    assert "scanned some of the same files" not in r.stderr


def test_a_new_store_opened_by_two_scans_at_once_is_not_locked_for_either(tmp_path, monkeypatch):
    """Two `scan --db` started at once on a new store both switch it to WAL mode: SQLite answers the second
    SQLITE_BUSY at once, without the busy timeout (waiting would deadlock on the first's read lock), and that scan
    stopped with `database is locked` (3 to 6 of 90 opens, three processes at once). Here the second's first ask
    is answered so; asked again once the first is through, it opens."""
    from aiidetect import store as store_mod

    real, busy = sqlite3.connect, []

    class FirstAskBusy(sqlite3.Connection):
        def execute(self, sql, *a):
            if sql == "PRAGMA journal_mode=WAL" and not busy:
                busy.append(sql)
                exc = sqlite3.OperationalError("database is locked")
                exc.sqlite_errorcode = 5  # SQLITE_BUSY
                raise exc
            return super().execute(sql, *a)

    waited: list[float] = []
    monkeypatch.setattr(store_mod, "_busy_wait", waited.append, raising=False)
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, **{**k, "factory": FirstAskBusy}))
    with ResultsStore(tmp_path / "s.sqlite") as st:
        assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert busy and len(waited) == 1
    # what is not a lock (a read-only file system, a disk error) is not waited for
    monkeypatch.setattr(sqlite3, "connect", real)
    calls = []

    class Broken(sqlite3.Connection):
        def execute(self, sql, *a):
            if sql == "PRAGMA journal_mode=WAL":
                calls.append(sql)
                raise sqlite3.OperationalError("disk I/O error")
            return super().execute(sql, *a)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, **{**k, "factory": Broken}))
    with pytest.raises(StoreError, match="disk I/O error"):
        ResultsStore(tmp_path / "t.sqlite")
    assert calls == ["PRAGMA journal_mode=WAL"] and len(waited) == 1


def test_a_writer_closing_while_a_reader_is_open_still_records_the_clean_state(tmp_path, integrity_checks):
    """SQLite empties the -wal only when its last connection closes: a scan that ended while a `results` command
    (or a dashboard holding the file) was open left its frames there, recorded no clean state, and every later
    open read the whole store (13-18 s at 1M rows) until the next scan. The writer now empties the log as it
    closes; a read under way at that moment is not waited for, and then nothing is recorded."""
    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / "s.sqlite"
    assert _scan_into(tmp_path / "in", db).returncode == 0
    for reading in (False, True):
        writer = ResultsStore(db)
        writer.ensure_run({"other": reading}, {}, ["metadata"], "rules")
        reader = ResultsStore(db, readonly=True)
        rows = reader.iter_rows(reader.resolve_run(None), chunk=1)
        if reading:
            next(rows)  # a read under way: its snapshot holds the log
        writer.close()
        assert Path(f"{db}-clean").exists() is not reading
        rows.close()
        reader.close()
    n = len(integrity_checks)
    ResultsStore(db).close()  # the read under way left the frames: checked whole, then recorded
    assert len(integrity_checks) == n + 1 and ResultsStore(db, readonly=True).checked == "probe"


def test_two_library_scans_of_overlapping_folders_into_one_store_at_once(tmp_path):
    """Two scans (a thread each, as a service runs them) of overlapping folders into one store: both finish, every
    file is one row, and each scan gives every file of its own paths one record."""
    import threading

    from aiidetect import api

    imgs = _tiny_images(tmp_path / "in", 12, folders=2)
    db = tmp_path / "s.sqlite"
    both = threading.Barrier(2, timeout=20)
    out: dict[int, list] = {}

    def scan(i: int, paths: list[str]) -> None:
        both.wait()  # their stores opened at the same moment: a new store, both switching it to WAL mode
        out[i] = [(r.file, r.error) for r in api.scan(paths, detectors="metadata", cache=False, db=db, batch_size=2)]
    f0, f1 = str(tmp_path / "in" / "f00"), str(tmp_path / "in" / "f01")
    threads = [threading.Thread(target=scan, args=(0, [f0, f1])), threading.Thread(target=scan, args=(1, [f1, f0]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [sorted(f for f, _ in out[i]) for i in (0, 1)] == [sorted(map(str, imgs))] * 2
    assert all(err is None for i in (0, 1) for _, err in out[i])
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM results").fetchone() == (12, 12)
        assert sorted(c.execute("SELECT status FROM sessions")) == [("complete",), ("complete",)]


def test_damage_met_again_during_a_check_that_finds_the_store_sound_keeps_the_note(tmp_path, monkeypatch):
    """A note already there was not written again (O_EXCL): damage another command met while a full check ran
    (one that read the page before it went bad) left the note as it was, and that check, finding the store sound,
    removed it: a writer open meanwhile then recorded the damaged file as clean. Each damage met is added to
    the note, and a check removes only the note it saw before it began."""
    from aiidetect import store as store_mod

    db = tmp_path / "s.sqlite"
    ResultsStore(db).close()
    store_mod._note_damage(db.resolve(), "met by a reader")
    real = store_mod._full_check

    def meanwhile(conn):
        store_mod._note_damage(db.resolve(), "met again by another command meanwhile")
        return real(conn)

    monkeypatch.setattr(store_mod, "_full_check", meanwhile)
    ResultsStore(db, readonly=True).close()
    note = Path(f"{db}-damaged")
    assert note.exists() and "met again" in note.read_text()
    monkeypatch.setattr(store_mod, "_full_check", real)
    ResultsStore(db, readonly=True).close()  # nothing met meanwhile: sound, the note goes
    assert not note.exists()


def test_the_damage_note_of_a_store_opened_again_and_again_stops_growing(tmp_path, monkeypatch):
    """Each damage met adds a line to the note: a damaged store a script opens every minute made it grow without
    end. Past a bound it grows no more, and its time still says that damage was met again."""
    from aiidetect import store as store_mod

    db = tmp_path / "s.sqlite"
    monkeypatch.setattr(store_mod, "_NOTE_MAX", 1000)
    for _ in range(10):
        store_mod._note_damage(db, "database disk image is malformed " + "x" * 200)
    note = Path(f"{db}-damaged")
    size = note.stat().st_size
    assert 1000 <= size < 1300
    os.utime(note, ns=(0, 0))
    store_mod._note_damage(db, "again")
    assert note.stat().st_size == size and note.stat().st_mtime_ns > 0


def test_a_damage_note_that_cannot_be_removed_is_said_once_per_command(tmp_path, monkeypatch, integrity_checks):
    """A note no check can remove (a folder of that name, another user's note in a sticky shared folder, a
    read-only folder) made every open check the whole store, silently: it looked like a slow disk. Each
    command that pays the full check for it says so on stderr, once, with what to do."""
    db = tmp_path / "s.sqlite"
    ResultsStore(db).close()
    Path(f"{db}-damaged").mkdir()
    r = run_cli_in_process("results", "check", "--db", str(db), "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["integrity"] == "ok", r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "-damaged could not be removed" in ln]
    assert len(lines) == 1 and "it is a folder" in lines[0] and "remove it" in lines[0], r.stderr
    assert Path(f"{db}-damaged").is_dir()  # never removed as a folder: it may hold someone's files

    # A regular note the folder will not let go of (read-only, or sticky and another user's): said too.
    Path(f"{db}-damaged").rmdir()
    from aiidetect import store as store_mod

    store_mod._note_damage(db.resolve(), "met by another user's command")
    real_unlink = os.unlink

    def refused(p, *a, **kw):
        if str(p).endswith("-damaged"):
            raise PermissionError(1, "Operation not permitted", str(p))
        return real_unlink(p, *a, **kw)

    monkeypatch.setattr(os, "unlink", refused)
    checks = len(integrity_checks)
    r = run_cli_in_process("results", "summary", "--db", str(db), "--format", "json")
    assert r.returncode == 0 and len(integrity_checks) == checks + 1, r.stderr
    assert r.stderr.count("-damaged could not be removed (Operation not permitted)") == 1, r.stderr


@pytest.mark.parametrize("kind", ["folder", "symlink", "fifo"])
def test_a_planted_damage_note_is_never_followed_opened_or_waited_on(tmp_path, kind):
    """Something else in the note's place (a folder, a link to a file of the user's, a FIFO nobody reads):
    damage met is not written through the link nor blocks on the FIFO, the store is checked whole while the
    name is there, and a check that finds the store sound removes the link or FIFO (the name only) and
    says why a folder stays."""
    from aiidetect import store as store_mod

    db = tmp_path / "s.sqlite"
    ResultsStore(db).close()
    note, target = Path(f"{db}-damaged"), tmp_path / "precious.txt"
    target.write_text("mine")
    if kind == "folder":
        note.mkdir()
    elif kind == "symlink":
        note.symlink_to(target)
    else:
        os.mkfifo(note)
    store_mod._note_damage(db.resolve(), "database disk image is malformed")  # returns: no hang, no write
    assert target.read_text() == "mine" and not Path(f"{db}-clean").exists()
    with ResultsStore(db, readonly=True) as st:
        assert st.checked == "full"  # the name counts as a note
    r = run_cli_in_process("results", "check", "--db", str(db), "--format", "json")
    assert r.returncode == 0 and target.read_text() == "mine", r.stderr
    said = "-damaged could not be removed" in r.stderr
    assert (note.is_dir(), said) == ((True, True) if kind == "folder" else (False, False)), r.stderr
    assert os.path.lexists(note) == (kind == "folder")


def test_a_store_only_ever_read_is_checked_whole_once_not_at_every_read(tmp_path, monkeypatch, integrity_checks):
    """A store copied or moved (another inode: `cp -p`, an archive) and afterwards only read by `results`
    commands: no writer recorded its state, so every read ran the full check (13-18 s at 1M rows). A reader
    whose full check finds it sound records that beside it (the store itself is not written), unless the file
    changed while the check read it."""
    import shutil

    from aiidetect import store as store_mod

    src, db = tmp_path / "s.sqlite", tmp_path / "copy.sqlite"
    ResultsStore(src).close()
    shutil.copy2(src, db)
    data = db.read_bytes()
    for _ in range(2):
        r = run_cli_in_process("results", "summary", "--db", str(db), "--format", "json")
        assert r.returncode == 0, r.stderr
    assert integrity_checks.count("PRAGMA integrity_check(1)") == 1 and db.read_bytes() == data
    assert Path(f"{db}-clean").exists()

    # The file changed during the check (a writer that wrote and closed meanwhile): the check may have read
    # either, so nothing is recorded and the next open checks it whole again.
    Path(f"{db}-clean").unlink()
    real = store_mod._full_check

    def meanwhile(conn):
        found = real(conn)
        os.utime(db)  # a change through the file system: its change time moves
        return found

    monkeypatch.setattr(store_mod, "_full_check", meanwhile)
    with ResultsStore(db, readonly=True) as st:
        assert st.checked == "full"
    assert not Path(f"{db}-clean").exists()


@pytest.mark.parametrize("what", ["foreign", "empty"])
def test_a_reader_leaves_no_record_beside_a_file_that_is_no_results_store(tmp_path, what):
    """`results summary --db` pointed at the wrong file (another program's SQLite database, an empty file):
    the full check finds it sound and the open then refuses it. The reader's clean record was written in
    between, leaving `places.sqlite-clean` beside a file aiidetect must not touch."""
    db = tmp_path / "places.sqlite"
    if what == "foreign":
        c = sqlite3.connect(db)
        c.execute("CREATE TABLE moz_places (id INTEGER, url TEXT)")
        c.commit()
        c.close()
    else:
        db.write_bytes(b"")
    r = run_cli_in_process("results", "summary", "--db", str(db), "--format", "json")
    assert r.returncode == 2 and "not an aiidetect results store" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["places.sqlite"]


def _killed_while_created(db: Path) -> None:
    """A store's file as a process killed while it created it leaves it (between its first pages and WAL mode,
    in SQLite's rollback-journal mode): pages written, and the hot `-journal` that undoes them."""
    code = ("import os, signal, sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('PRAGMA cache_size=2')\n"  # the transaction's pages spill into the file before its commit
            "c.execute('BEGIN')\n"
            "c.execute('CREATE TABLE t (x)')\n"
            "c.executemany('INSERT INTO t VALUES (?)', [(os.urandom(500),) for _ in range(100)])\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code, str(db)], timeout=60)
    assert db.stat().st_size and Path(f"{db}-journal").stat().st_size


def test_a_store_killed_while_it_was_created_is_scanned_again(tmp_path):
    """A scan killed in the store's first milliseconds (seen in the SIGKILL loop) left a hot -journal, which only a
    connection that may write rolls back: the read-only check a scan runs first said `attempt to write a readonly
    database`, and every later scan of that store stopped with `cannot be opened for writing` for good. The
    results commands, which never write, say what it is and what rolls it back, not SQLite's words alone."""
    from conftest import run_cli_in_process

    _tiny_images(tmp_path / "in", 2, folders=1)
    db = tmp_path / "a.sqlite"
    _killed_while_created(db)
    r = run_cli_in_process("results", "summary", "--db", str(db))
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert f"{db.name}-journal" in r.stderr and "scan --db" in r.stderr, r.stderr
    assert Path(f"{db}-journal").stat().st_size  # a reader rolls nothing back
    r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--no-cache", "--db", str(db),
                           "-f", "jsonl", "-q")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    r = run_cli_in_process("results", "summary", "--db", str(db), "-f", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["files"] == 2, r.stderr


def test_a_shard_merged_while_its_session_runs_brings_its_count_up_to_date(tmp_path):
    """A session counts its rows with each batch now, and a shard is merged every night while it runs: the
    merged copy of a session still running kept the count of its first merge (a session was brought up to date
    only once it had finished), though the shard's copy went on counting, and a killed one never finishes."""
    from aiidetect.store import _RESULT_COLS

    shard, target = tmp_path / "s.sqlite", tmp_path / "t.sqlite"
    st = ResultsStore(shard)
    run = st.ensure_run({"k": 1}, {}, ["metadata"], "rules")
    sid = st.start_session(run, "1/2", "local", [])

    def batch(first: int) -> None:
        row = dict.fromkeys(_RESULT_COLS)
        row.update(run_id=run, folder="/a", size=1, mtime_ns=1, verdict="real", session_id=sid, scanned_at="t",
                   record="{}")
        st.write_rows([tuple({**row, "path": f"/a/{i}", "file": f"/a/{i}"}[c] for c in _RESULT_COLS)
                       for i in range(first, first + 3)])
    batch(0)
    merge_stores(target, [shard])
    batch(3)  # then killed: no finish_session
    st.db.execute("UPDATE sessions SET status='died'")  # as the shard's next session finds it
    st.db.commit()
    st.close()
    merge_stores(target, [shard])
    with sqlite3.connect(target) as c:
        assert c.execute("SELECT files_written, status FROM sessions").fetchall() == [(6, "died")]
        assert c.execute("SELECT COUNT(*) FROM results").fetchone() == (6,)
    c.close()


def test_a_merge_failure_is_told_by_its_type_not_its_first_words(tmp_path, monkeypatch):
    """The merge's own stop (`cannot merge S into T ...`) was told from a source's error by its first words:
    damage met in a source named `cannot merge.sqlite` (its error begins with its name) lost the line's
    `nothing of the failing source was kept`."""
    from aiidetect.store import _damaged

    src = tmp_path / "cannot merge.sqlite"
    ResultsStore(src).close()
    monkeypatch.chdir(tmp_path)

    def damaged(self, other):
        raise StoreError(_damaged(Path(other), "SQLite integrity check: page 7"))
    monkeypatch.setattr(ResultsStore, "merge_from", damaged)
    r = run_cli_in_process("results", "merge", "--db", "t.sqlite", "cannot merge.sqlite")
    assert r.returncode == 2
    assert r.stderr.startswith("error: merge failed (nothing of the failing source was kept): cannot merge.sqlite is "
                               "damaged"), r.stderr
