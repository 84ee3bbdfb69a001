"""--engine ray runs the library Pipeline on Ray Data and must give the records
the local engine gives (records carry no timing fields, so they compare whole)."""
from __future__ import annotations

import json

import pytest

from aiidetect.discover import Candidate
from conftest import run_cli_in_process

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'aiidetect[ray]')")


@pytest.mark.slow
def test_ray_engine_gives_the_local_records(trained, dev_dir, tmp_path):
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors
    from aiidetect.engines import ray as ray_engine
    from aiidetect.pipeline import Pipeline
    from aiidetect.heads import weights_dirs

    files = [p for p in sorted(dev_dir.rglob("*")) if p.is_file() and p.suffix.lower() in (".jpg", ".png", ".bmp")]
    # 30 photos spread over the dev set (jpg, png, bmp) and two broken files: 32 candidates
    picked = files[::max(1, len(files) // 30)][:30]
    bad = tmp_path / "truncated.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    cands = [Candidate(str(p), explicit=True) for p in picked + [bad]] + [
        Candidate(str(tmp_path / "gone.jpg"), explicit=True, error=("unreadable", "no such file or directory"))]

    def make(fams=("metadata", "linear"), dtype="float32"):
        ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), device="cpu", dtype=dtype,
                         weights_dirs=weights_dirs([trained]))
        fams = list(fams)
        return Pipeline(create_detectors(fams, ctx), None, batch_size=8, workers=2), fams, ctx

    pipe, _, _ = make()
    assert any(d.name.startswith("linear:") and d.describe().get("status") != "unavailable" for d in pipe.detectors)
    local = [r.to_dict() for r in pipe.run(cands)]

    from aiidetect.backbone import native_bf16_cpu

    auto_local = [r.to_dict() for r in make(dtype="auto")[0].run(cands)]
    # The workers as on nodes whose CPU has no native bfloat16: under --dtype auto each actor chose float32
    # for itself while the driver (and the results store's run identity) said bfloat16.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"AIIDETECT_CPU_WITHOUT": "avx512_bf16,amx_tile"}})
    try:
        pipe4, fams4, ctx4 = make(dtype="auto")
        auto_remote = [r.to_dict() for r in ray_engine.run(pipe4, cands, fams4, ctx4)]
        # A pool the 2 CPUs cannot hold: Ray waited for its actors for ever (no record, no exit).
        for sizing in ({"actors": 3}, {"actor_cpus": 64}):
            with pytest.raises(ray_engine.RayUnavailable, match="do not fit on this Ray cluster"):
                next(iter(ray_engine.run(pipe4, cands, fams4, ctx4, **sizing)))
        pipe2, fams, ctx = make()
        # A small window: two dataset executions (32 files), so ordering across windows is exercised too;
        # each window starts its actors again (~7 s each on 2 loaded cores), so no more than two. No deadline:
        # the pool's actors run the model themselves (--file-timeout 0), not in a model actor of their own
        # started per window (~1.5 s each); the run above went through that model actor.
        assert len(cands) == 32
        remote = [r.to_dict() for r in ray_engine.run(pipe2, cands, fams, ctx, window=16, file_timeout=None)]
        # No model to run (flow has no head here): the CPU tasks run the whole pipeline, and the
        # unavailable detector must still be in every record.
        pipe3, fams3, ctx3 = make(("metadata", "flow"))
        light_local = [r.to_dict() for r in make(("metadata", "flow"))[0].run(cands)]
        light_remote = [r.to_dict() for r in ray_engine.run(pipe3, cands, fams3, ctx3)]
    finally:
        ray.shutdown()
    assert len(remote) == len(cands)
    assert remote == local
    assert light_remote == light_local
    assert light_local[0]["detectors"]["flow"]["status"] == "unavailable"
    assert auto_remote == auto_local
    if native_bf16_cpu():  # else both sides chose float32, and the records could not differ
        assert auto_local != local
    assert pipe2.stats.files == len(cands) and pipe2.stats.errors == pipe.stats.errors
    lin = [r["detectors"] for r in local if r["error"] is None]
    assert all(next(v for k, v in d.items() if k.startswith("linear:"))["status"] == "ok" for d in lin)


def test_ray_missing_is_an_explained_error(monkeypatch):
    import builtins

    from aiidetect.engines import ray as ray_engine

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ray_engine.RayUnavailable, match=r"aiidetect\[ray\]"):
        ray_engine._import_ray()


def test_ray_cpu_tasks_check_the_listed_file_only_on_the_machine_that_listed_it(tmp_path, monkeypatch):
    """(st_dev, st_ino) from the driver's listing mean the same file only on the driver's machine:
    another node mounts the share under its own device number. There the check is left out; on
    the driver's machine a swapped file is refused, as in a local scan. No cluster needed."""
    import pickle

    from PIL import Image

    from aiidetect.discover import discover
    from aiidetect.engines import ray as engine
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.pipeline import Pipeline

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (c,), _ = discover([str(tmp_path)])
    c.ident = (c.ident[0] + 1, c.ident[1])          # how another node numbers the same share
    batch = {"i": [0], "cand": [pickle.dumps(c)]}
    half = Pipeline([MetadataDetector({"watermark": "never"})], None, 16, 1)

    def code(fn):
        return pickle.loads(fn(dict(batch))["record"][0]).error

    here = engine.node_versions()
    assert code(engine._decode_stage(half, True, here)).code == "unreadable"     # listed here, read here
    fn = engine._decode_stage(half, True, here)
    monkeypatch.setattr(engine, "machine_id", lambda: "another-node")
    assert code(fn) is None                                                       # read on another node


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_an_address_nothing_answers_on_is_one_line_not_a_hang(tmp_path):
    """ray.init retried HOST:PORT with nothing listening for minutes (its log lines on stderr, no
    output, no exit): a typo'd --address looked like a hung scan. It is exit 2 and one line, at once."""
    import subprocess
    import sys
    import time

    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "aiidetect", "scan", str(tmp_path), "-d", "metadata", "-q",
                        "--engine", "ray", "--address", f"127.0.0.1:{_closed_port()}", "-f", "jsonl"],
                       capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t < 30
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and r.stdout == "" and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: cannot reach Ray at 127.0.0.1:")


def test_address_forms_probed(tmp_path, monkeypatch):
    from aiidetect.engines import ray as ray_engine

    assert ray_engine._host_port("auto") is None and ray_engine._host_port("ray://h:10001") == ("h", 10001)
    with pytest.raises(ray_engine.RayUnavailable, match="nothing accepts a connection"):
        ray_engine._probe(f"ray://127.0.0.1:{_closed_port()}")
    assert ray_engine._host_port("head.example:6379") == ("head.example", 6379)
    assert ray_engine._host_port("[::1]:6379") == ("::1", 6379)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    ray_engine._probe("auto")  # no address file: left to ray.init, which says there is no cluster
    # `auto` goes where $RAY_ADDRESS or the address file of the last `ray start` says: a head gone since
    # made the scan wait as long as a wrong port did.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}\n")
    with pytest.raises(ray_engine.RayUnavailable, match=r"cannot reach Ray at auto \(127\.0\.0\.1:"):
        ray_engine._probe("auto")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_closed_port()}")
    with pytest.raises(ray_engine.RayUnavailable, match="cannot reach Ray at auto"):
        ray_engine._probe("auto")
    with pytest.raises(ray_engine.RayUnavailable, match="cannot reach Ray"):
        ray_engine._probe(f"127.0.0.1:{_closed_port()}")


_CRASHING_DRIVER = '''
import os, pickle, sys
from aiidetect.engines import ray as ray_engine
real = ray_engine._decode_stage

def crashing(half, finish, here):
    fn = real(half, finish, here)
    def stage(batch):
        paths = [pickle.loads(b).path for b in batch["cand"]]
        # A file that kills the worker reading it, as a decoder crash or an out-of-memory kill would.
        if any(p.endswith("boom.png") for p in paths):
            os._exit(1)
        # A file whose read never ends, as a decoder stuck on a crafted file or a stopped worker.
        if any(p.endswith("hang.png") for p in paths):
            import time
            time.sleep(10 ** 6)
        return fn(batch)
    return stage

ray_engine._decode_stage = crashing
from aiidetect.cli import main
sys.argv = ["aiidetect", "scan", *sys.argv[1:]]
main()
'''


@pytest.mark.slow
def test_a_file_that_kills_its_worker_costs_its_record_only(tmp_path):
    """Ray retries a task whose worker died forever: one file that crashed a decoder hung the scan
    (no record, no exit), and a task that raised ended the whole job with every other file's record
    lost. Now that file is a `crashed` record, every other file's record is the local engine's, the
    store has all of them, and stdout parses (Ray prints its worker-crash messages to stdout). A resume
    reads none of them again (the crashed file was retried, killing workers, on every resume). A file whose
    read never ends hung the whole scan for ever, and its resumes too: its task is cancelled past its
    deadline (--file-timeout), its blockmates are read alone, and it is a `timeout` record, set aside."""
    import re
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from conftest import jsonl, run_cli_in_process

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / f"img{i}.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / "boom.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / "hang.png")
    driver = tmp_path / "driver.py"
    driver.write_text(_CRASHING_DRIVER)
    db = tmp_path / "ray.sqlite"
    common = [str(src), "-d", "metadata", "--no-cache", "-f", "jsonl", "-q", "--batch-size", "2"]
    # A task of N files gets 5 + 3 N seconds: the hanging file costs one task of 2 files, then one alone.
    on_ray = ["--engine", "ray", "--db", str(db), "--file-timeout", "3"]
    env = {**__import__("os").environ, "AIIDETECT_RAY_TASK_START": "5"}
    r = subprocess.run([sys.executable, str(driver), *common, *on_ray], capture_output=True, text=True, timeout=150,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    # -q: Ray's own INFO and WARNING lines (~13: its start, the token set-up, each dataset's plan and
    # progress) are gone; its errors (the raylet's "worker died") are not.
    chatter = [x for x in r.stderr.splitlines() if re.search(r"\s(INFO|WARNING)\s", x)]
    assert chatter == [] and "worker died" in r.stderr, chatter
    remote = {d["file"]: d for d in jsonl(r.stdout)}  # every stdout line is a record
    # the local engine's records to compare with: in-process (a third interpreter only paid its start-up)
    local = {d["file"]: d for d in jsonl(run_cli_in_process("scan", *common).stdout)}
    boom, hang = str(src / "boom.png"), str(src / "hang.png")
    assert sorted(remote) == sorted(local) and len(remote) == 7
    assert remote[boom]["error"]["code"] == "crashed" and "worker process" in remote[boom]["error"]["message"]
    assert remote[hang]["error"]["code"] == "timeout" and "more than 8 s" in remote[hang]["error"]["message"]
    assert {k: v for k, v in remote.items() if k not in (boom, hang)} == \
        {k: v for k, v in local.items() if k not in (boom, hang)}
    assert remote[boom]["verdict"] == remote[hang]["verdict"] == "error"
    import sqlite3

    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*), SUM(error_code='crashed'), SUM(error_code='timeout') FROM results"
                         ).fetchone() == (7, 1, 1)
        assert sorted(c.execute("SELECT path LIKE '%boom.png', strikes FROM crashes")) == [(0, 2), (1, 3)]
    again = subprocess.run([sys.executable, str(driver), *common, *on_ray], capture_output=True, text=True,
                           timeout=150, env=env)
    assert again.returncode == 0 and {d["file"]: d for d in jsonl(again.stdout)} == remote, again.stderr[-3000:]
    assert again.stderr == ""  # -q, and nothing went wrong
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT files_resumed, files_written FROM sessions ORDER BY session_id DESC").fetchone() \
            == (7, 0)


def test_ray_prints_go_to_stderr_other_writes_to_stdout():
    """Ray's driver threads print the raylet's messages to sys.stdout; only theirs are moved."""
    import io
    import threading

    from aiidetect.engines.ray import _RayPrintsToStderr

    out, err = io.StringIO(), io.StringIO()
    proxy = _RayPrintsToStderr(out, err)
    t = threading.Thread(target=lambda: print("(raylet) A worker died", file=proxy), name="ray_listen_error_messages")
    t.start()
    t.join()
    print('{"file": "a.jpg"}', file=proxy)
    proxy.closing = True
    print("(raylet) held back until shutdown", file=proxy)
    assert out.getvalue() == '{"file": "a.jpg"}\n'
    assert err.getvalue() == "(raylet) A worker died\n(raylet) held back until shutdown\n"
    assert proxy.getvalue() == out.getvalue()  # anything else is the real stdout's


class _FakeDataset:
    """Ray Data as the engine uses it, in this process: blocks run the stages in order; a block whose
    stage raises is dropped, as max_errored_blocks=-1 does."""

    def __init__(self, items, blocks, stages=()):
        self.items, self.blocks, self.stages = items, blocks, list(stages)

    def map_batches(self, fn, batch_size, batch_format, **kw):
        return _FakeDataset(self.items, self.blocks, self.stages + [(fn, batch_size)])

    def iter_rows(self):
        import numpy as np

        size = -(-len(self.items) // self.blocks)
        for b in range(0, len(self.items), size):
            block = self.items[b:b + size]
            batch = {k: np.array([it[k] for it in block], dtype=object) for k in block[0]}
            try:
                for fn, _ in self.stages:
                    batch = fn(batch)
            except Exception:  # noqa: BLE001 - a failed block is left out
                continue
            for k in range(len(batch["i"])):
                yield {key: batch[key][k] for key in batch}


def _fake_ray():
    from types import SimpleNamespace

    ctx = SimpleNamespace(execution_options=SimpleNamespace(preserve_order=False), max_errored_blocks=0)
    data = SimpleNamespace(DataContext=SimpleNamespace(get_current=lambda: ctx), ActorPoolStrategy=None,
                           from_items=lambda items, override_num_blocks: _FakeDataset(items, override_num_blocks))
    return SimpleNamespace(data=data, cluster_resources=lambda: {"CPU": 2.0}, nodes=lambda: [])


def _ctx():
    from types import SimpleNamespace

    return SimpleNamespace(backbone_spec=None, device="cpu", dtype="float32", weights_dirs=[], runtime="torch",
                           onnx_dir=None, options={})


def _failing_on(monkeypatch, ray_engine, bad):
    import pickle

    real = ray_engine._decode_stage

    def stage(half, finish, here):
        fn = real(half, finish, here)

        def run(batch):
            if any(bad(pickle.loads(b).path) for b in batch["cand"]):
                raise RuntimeError("worker died")
            return fn(batch)
        return run

    monkeypatch.setattr(ray_engine, "_decode_stage", stage)


def test_failed_blocks_are_retried_file_by_file_or_stop_the_scan(monkeypatch):
    from aiidetect.engines import ray as ray_engine
    from aiidetect.pipeline import Pipeline

    cands = [Candidate(f"/nowhere/{i}.jpg", explicit=True, error=("unreadable", "gone")) for i in range(100)]
    _failing_on(monkeypatch, ray_engine, lambda p: p.endswith("/7.jpg"))
    pipe = Pipeline([], None, batch_size=8, workers=1)
    recs = list(ray_engine._records(_fake_ray(), pipe, cands, [], _ctx(), None, None, None, 40))
    assert sorted(r.file for r in recs) == sorted(c.path for c in cands)  # every file once
    lost = [r for r in recs if r.error.code == "crashed"]
    assert [r.file for r in lost] == ["/nowhere/7.jpg"] and pipe.stats.files == 100
    assert "worker process reading this file died" in lost[0].error.message
    # The blockmates of 7.jpg come back after the rest of their window, the next window after them.
    assert [r.file for r in recs].index("/nowhere/7.jpg") < [r.file for r in recs].index("/nowhere/40.jpg")

    _failing_on(monkeypatch, ray_engine, lambda p: True)
    it = ray_engine._records(_fake_ray(), Pipeline([], None, batch_size=8, workers=1), cands, [], _ctx(), None,
                             None, None, 100)
    with pytest.raises(ray_engine.RayJobFailed, match="100 of the 100 files.*with --db a second run would resume"):
        list(it)


def test_a_file_whose_worker_died_is_set_aside_in_the_store_as_the_local_engine_does(tmp_path, monkeypatch):
    """With --db, a file that killed its Ray worker was an internal-error record: retried (and killing
    workers 3 times) on every resume. It is `crashed`, its deaths are strikes in the store, so no later
    run reads it, with either engine, until it changes; a task that raises is not taken for a death."""
    import pickle

    from PIL import Image

    from aiidetect.discover import discover
    from aiidetect.engines import ray as ray_engine
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.pipeline import Pipeline
    from aiidetect.store import ResultsStore, StoreSession, open_session

    for name in ("a", "boom", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    cands, _ = discover([str(tmp_path)])
    sent: list[str] = []
    real = ray_engine._decode_stage

    def stage(half, finish, here):
        fn = real(half, finish, here)

        def run(batch):
            paths = [pickle.loads(b).path for b in batch["cand"]]
            sent.extend(paths)
            if any(p.endswith("boom.png") for p in paths):
                raise RuntimeError("worker died")  # the fake drops the block, as Ray does a dead worker's
            return fn(batch)
        return run

    monkeypatch.setattr(ray_engine, "_decode_stage", stage)
    store = ResultsStore(tmp_path / "s.sqlite")

    def scan(session):
        pipe = Pipeline([MetadataDetector({"watermark": "never"})], None, batch_size=8, workers=1)
        pipe.prior, pipe.guard = session.prior, session.guard_reads()
        recs = []
        for r in ray_engine._records(_fake_ray(), pipe, cands, ["metadata"], _ctx(), None, None, None, 10):
            session.add(r)
            recs.append(r)
        session.close()
        return {r.file.rsplit("/", 1)[1]: r for r in recs}

    pipe = Pipeline([MetadataDetector({"watermark": "never"})], None)
    from aiidetect.crashguard import Seen
    from aiidetect.store import path_key

    st = (tmp_path / "a.png").stat()
    store.add_strikes([Seen(path_key(str(tmp_path / "a.png")), st.st_size, st.st_mtime_ns)], [])  # a local death
    first = scan(open_session(store, pipe, {}, engine="ray"))
    assert first["boom.png"].error.code == "crashed" and first["a.png"].error is None
    assert "touch" in first["boom.png"].error.message
    # a.png was read to the end by a worker that lived: its strike is gone, as a local read alone clears it
    assert [(p.rsplit("/", 1)[1], n) for p, n in store.db.execute("SELECT path, strikes FROM crashes")] == \
        [("boom.png", 3)]
    sent.clear()
    again = scan(open_session(store, pipe, {}, engine="ray"))      # resume: read nothing
    assert sent == [] and again["boom.png"].error.code == "crashed"
    run_id = store.db.execute("SELECT run_id FROM runs").fetchone()[0]
    other = scan(StoreSession(store, run_id, "none", resume=False))  # another run of the store: refused there too
    assert "boom.png" not in " ".join(sent) and len(sent) == 2
    assert other["boom.png"].error.code == "crashed" and "3 times in earlier runs" in other["boom.png"].error.message

    half = Pipeline([MetadataDetector({"watermark": "never"})], None, 16, 1)
    batch = {"i": [0, 1], "cand": [pickle.dumps(c) for c in cands[:2]]}
    monkeypatch.setattr(half, "complete", lambda samples: 1 / 0)  # a bug in the task: its files' records say so
    here = ray_engine.node_versions()
    assert [pickle.loads(r).error.code for r in real(half, True, here)(dict(batch))["record"]] == ["internal-error"] * 2
    monkeypatch.setattr(half, "decode_many", lambda c, i: 1 / 0)
    assert [pickle.loads(r).error.code for r in real(half, True, here)(dict(batch))["record"]] == ["internal-error"] * 2


def _serve_once(reply: bytes) -> int:
    """A listener on 127.0.0.1 that answers its first connection with `reply`, then closes it."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer():
        conn, _ = srv.accept()
        conn.recv(64)
        conn.sendall(reply)
        conn.close()
        srv.close()

    threading.Thread(target=answer, daemon=True).start()
    return srv.getsockname()[1]


def test_a_port_that_is_not_a_ray_head_is_refused_at_once():
    """--address naming the dashboard's port (or any web server) made ray.init retry for minutes, as
    for a port nothing listens on; a Ray head's GCS answers the HTTP/2 preface, anything else is refused."""
    import time

    from aiidetect.engines import ray as ray_engine

    t = time.monotonic()
    with pytest.raises(ray_engine.RayUnavailable, match="not a Ray head"):
        ray_engine._probe(f"127.0.0.1:{_serve_once(b'HTTP/1.0 400 Bad request')}")
    assert time.monotonic() - t < 10
    ray_engine._probe(f"127.0.0.1:{_serve_once(bytes([0, 0, 0x18, 4, 0, 0, 0, 0, 0]))}")  # a gRPC server's SETTINGS


def test_a_failing_cluster_mid_scan_is_one_line_and_exit_2(tmp_path, monkeypatch):
    """RayJobFailed escaped the scan as an unexpected exception ("aiidetect: error: RayJobFailed: ...
    (aiidetect --debug shows the traceback)"), as if aiidetect had a bug; it is an explained fatal error."""
    import json

    from typer.testing import CliRunner

    from aiidetect.cli import app
    from aiidetect.engines import ray as ray_engine

    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n")

    def run(pipe, cands, *a, **k):
        def records():
            from aiidetect.records import Record

            yield Record(file=str(tmp_path / "0.png")).set_error("decode-error", "x")
            raise ray_engine.RayJobFailed("Ray tasks failed for 2 of the 2 files of this window")
        return records()

    monkeypatch.setattr(ray_engine, "connect", lambda address, quiet=False: None)
    monkeypatch.setattr(ray_engine, "run", run)
    r = CliRunner().invoke(app, ["scan", str(tmp_path), "-d", "metadata", "--engine", "ray", "-f", "json", "-q",
                                 "--no-cache"])
    assert r.exit_code == 2, (r.output, r.exception)
    assert "error: Ray tasks failed for 2 of the 2 files" in r.stderr and "RayJobFailed" not in r.stderr
    assert len(json.loads(r.stdout)) == 1  # the records so far, as a document that parses


def test_ray_sizing_settings_are_checked_before_the_scan(tmp_path, monkeypatch):
    """AIIDETECT_RAY_WINDOW=0 scanned no file at all ('scanned 0 files', exit 0: an audit silently
    empty); 'abc' or -5 were unexplained ValueErrors. Each is exit 2 and one line, before Ray starts.
    One bad value goes through a real process (the one line is all of stderr, Ray's start-up lines
    included); the other eleven are in-process, with Ray's import made to fail the test, so a check
    moved past Ray's start is still caught (each subprocess paid an interpreter's start-up)."""
    import os
    import subprocess
    import sys

    from conftest import run_cli_in_process

    from aiidetect.engines import ray as ray_engine

    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    args = ["scan", str(tmp_path), "-d", "metadata", "-q", "--engine", "ray", "-f", "jsonl"]
    r = subprocess.run([sys.executable, "-m", "aiidetect", *args], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "AIIDETECT_RAY_WINDOW": "0"})
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and r.stdout == "" and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("error: AIIDETECT_RAY_WINDOW=") and "number >= 1" in lines[0]

    def ray_started():
        raise AssertionError("Ray was imported before the sizing settings were checked")

    monkeypatch.setattr(ray_engine, "_import_ray", ray_started)
    for name in ("AIIDETECT_RAY_WINDOW", "AIIDETECT_RAY_ACTORS", "AIIDETECT_RAY_ACTOR_CPUS"):
        for bad in ("0", "-5", "abc", "nan"):
            r = run_cli_in_process(*args, env={name: bad})
            lines = [x for x in r.stderr.splitlines() if x.strip()]
            assert r.returncode == 2 and r.stdout == "" and len(lines) == 1, (name, bad, r.stderr[-2000:])
            assert lines[0].startswith(f"error: {name}=") and "number >= 1" in lines[0]


def test_connecting_keeps_the_commands_sigterm_handler(monkeypatch):
    """ray.init sets sys.exit(15) as the driver's SIGTERM handler: `timeout` stopping a Ray scan exited 15
    instead of 143, without the stop Ctrl-C gets (stdout closed, store session interrupted)."""
    import signal
    from types import SimpleNamespace

    from aiidetect.engines import ray as ray_engine

    def init(**kw):
        signal.signal(signal.SIGTERM, lambda signum, frame: exit(signum))  # what ray.init does (sys.exit)

    def ours(signum, frame):
        pass

    monkeypatch.setattr(ray_engine, "_route_ray_prints", lambda ray: None)
    before = signal.signal(signal.SIGTERM, ours)
    try:
        ray_engine._connect(SimpleNamespace(is_initialized=lambda: False, init=init), None)
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, before)


def test_address_auto_with_no_cluster_says_so_not_token(monkeypatch):
    """`--address auto` with no cluster running printed Ray's advice about its own CLI's `--address` flag
    and a hint that a token was missing: neither was what was wrong."""
    from types import SimpleNamespace

    from aiidetect.engines import ray as ray_engine

    def init(**kw):  # what ray.init("auto") raises when no head runs here (ray._private.services)
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(ray_engine, "_probe", lambda address: None)
    with pytest.raises(ray_engine.RayUnavailable) as got:
        ray_engine._connect(SimpleNamespace(is_initialized=lambda: False, init=init), "auto")
    msg = str(got.value)
    assert "no Ray cluster is running" in msg and "ray start --head" in msg and "leave out --address" in msg
    assert "token" not in msg and "`--address` flag" not in msg
    import inspect

    import ray._private.services as services  # the text matched is Ray's own

    assert "Could not find any running Ray instance" in inspect.getsource(services)


def test_a_sigterm_while_ray_starts_is_the_commands_stop(monkeypatch):
    """ray.init takes seconds, with its own SIGTERM handler (sys.exit(15)) set: `timeout` stopping the scan
    then exited 15 with no word, where the command's handler gives 143 and "terminated (SIGTERM)"."""
    import os
    import signal
    import sys
    from types import SimpleNamespace

    from aiidetect.commands.errors import Terminated, stop_on_signals
    from aiidetect.engines import ray as ray_engine

    def init(**kw):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # what ray.init does
        os.kill(os.getpid(), signal.SIGTERM)                                    # the stop arrives meanwhile

    monkeypatch.setattr(ray_engine, "_probe", lambda address: None)
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        stop_on_signals()
        with pytest.raises(Terminated) as got:
            ray_engine._connect(SimpleNamespace(is_initialized=lambda: False, init=init), None)
        assert got.value.code == 143
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_actor_pool_must_fit_on_the_nodes_not_only_in_the_total():
    from aiidetect.engines import ray as ray_engine

    nodes = [{"Alive": True, "Resources": {"CPU": 3.0}}, {"Alive": True, "Resources": {"CPU": 3.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0}}]
    ray_engine._check_pool(nodes, 2, 2.0, 0.0)                  # one per node
    with pytest.raises(ray_engine.RayUnavailable, match=r"room for 2"):
        ray_engine._check_pool(nodes, 3, 2.0, 0.0)              # 6 CPUs in all, but 2 + 1 + 1 left over
    ray_engine._check_pool(nodes, 1, 1.0, 1.0)
    with pytest.raises(ray_engine.RayUnavailable, match=r"room for 1"):
        ray_engine._check_pool(nodes, 2, 1.0, 1.0)              # one GPU in the cluster
    ray_engine._check_pool([], 9, 64.0, 0.0)                    # nothing known: Ray decides


def _fake_ray_module(monkeypatch, **functions) -> None:
    """`ray` as the deadline code imports it, in this process: `functions`, on the driver's node "node-1"
    (NodeAffinitySchedulingStrategy gives (node, soft)); the remote functions made from the fake are forgotten."""
    import sys
    from types import SimpleNamespace

    from aiidetect.engines import ray as ray_engine

    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(
        get_runtime_context=lambda: SimpleNamespace(get_node_id=lambda: "node-1"), **functions))
    monkeypatch.setitem(sys.modules, "ray.util.scheduling_strategies",
                        SimpleNamespace(NodeAffinitySchedulingStrategy=lambda node, soft: (node, soft)))
    monkeypatch.setattr(ray_engine, "_REMOTE_CALL", None)
    monkeypatch.setattr(ray_engine, "_REMOTE_MODEL", None)


def test_a_task_past_its_deadline_is_cancelled_and_its_files_marked(monkeypatch):
    """Ray has no task deadline: a task whose read never ended was waited for for ever. The task body now
    runs in a task of its own, waited for until its start-up plus its files' allowance, then force-cancelled
    (its worker killed), its files coming back as `timeout` markers in the columns the next stage reads."""
    import pickle
    from types import SimpleNamespace

    from aiidetect.engines import ray as ray_engine

    calls = []

    class Ref:
        def __init__(self, batch):
            self.batch = batch

    def wait(refs, timeout):
        calls.append(("wait", timeout))
        hung = any(pickle.loads(b).path.endswith("hang.png") for b in refs[0].batch["cand"])
        return ([] if hung else refs), (refs if hung else [])

    def options(**kw):
        # No CPU of its own, on the waiting task's node: an actor waiting keeps its CPUs (starved otherwise).
        assert kw["num_cpus"] == 0 and kw["scheduling_strategy"] == ("node-1", True)
        return SimpleNamespace(remote=lambda fn, batch: Ref(batch))

    _fake_ray_module(monkeypatch, remote=lambda f: SimpleNamespace(options=options), put=lambda x: x, wait=wait,
                     get=lambda ref: {"i": ref.batch["i"], "record": ["done"] * len(ref.batch["i"])},
                     cancel=lambda ref, force: calls.append(("cancel", force)))

    def batch(*names):
        return {"i": list(range(len(names))), "cand": [pickle.dumps(Candidate(f"/x/{n}")) for n in names]}

    for finish in (True, False):
        calls.clear()
        run = ray_engine._with_deadline(lambda b: 1 / 0, finish, 3.0, 10.0)
        assert run(batch("a.png", "b.png")) == {"i": [0, 1], "record": ["done", "done"]}
        out = run(batch("a.png", "hang.png", "c.png"))
        assert calls == [("wait", 16.0), ("wait", 19.0), ("cancel", True)]
        col = out["record" if finish else "sample"]
        recs = [pickle.loads(r) if finish else pickle.loads(r).record for r in col]
        assert [r.file for r in recs] == ["/x/a.png", "/x/hang.png", "/x/c.png"] and out["i"] == [0, 1, 2]
        assert all(ray_engine._is_timeout(r) for r in recs)
    assert ray_engine.task_deadline(16, 60.0) == 60.0 + 16 * 60.0


def test_a_file_that_runs_out_of_time_alone_is_a_timeout_record_and_set_aside(monkeypatch):
    """The files of a task cancelled past its deadline are read again alone: the others get their records,
    the file that runs out of time alone gets one `timeout` record (not two, not none) and the strikes that
    keep a results store from waiting for it again."""
    import pickle

    from aiidetect.crashguard import STRIKES_TO_REFUSE
    from aiidetect.engines import ray as ray_engine
    from aiidetect.pipeline import Pipeline

    def with_deadline(fn, finish, file_timeout, start):
        assert (file_timeout, start) == (5.0, ray_engine.TASK_START)

        def run(batch):
            if any(pickle.loads(b).path.endswith("/7.jpg") for b in batch["cand"]):
                return ray_engine._timed_out(batch, finish)  # what a cancelled task returns (test above)
            return fn(batch)
        return run

    monkeypatch.setattr(ray_engine, "_with_deadline", with_deadline)
    struck = []
    guard = SimpleGuard(struck)
    cands = [Candidate(f"/nowhere/{i}.jpg", explicit=True, error=("unreadable", "gone")) for i in range(20)]
    pipe = Pipeline([], None, batch_size=8, workers=1)
    pipe.guard = guard
    recs = list(ray_engine._records(_fake_ray(), pipe, cands, [], _ctx(), None, None, None, 40, 5.0))
    assert sorted(r.file for r in recs) == sorted(c.path for c in cands) and pipe.stats.files == 20
    late = [r for r in recs if r.error.code == "timeout"]
    assert [r.file for r in late] == ["/nowhere/7.jpg"] and late[0].verdict == "error"
    assert "more than 65 s" in late[0].error.message and "--file-timeout" in late[0].error.message
    assert all(r.error.code == "unreadable" for r in recs if r.file != "/nowhere/7.jpg")  # blockmates: their own
    assert struck == [("/nowhere/7.jpg", STRIKES_TO_REFUSE)]


class SimpleGuard:
    def __init__(self, struck):
        self.struck = struck

    def refused(self, path):
        return None

    def survived(self, path):
        pass

    def died(self, path, times):
        self.struck.append((path, times))
        return True


def test_a_ray_scan_through_a_symlinked_folder_resumes_the_rows_of_the_folder(tmp_path):
    """The engine's resume and keys are the driver's store session, as a local scan's: the folder
    given through a link was another set of rows, every file sent to the cluster again and counted
    twice in the store."""
    import pickle

    from PIL import Image

    from aiidetect.discover import discover
    from aiidetect.engines import ray as ray_engine
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.pipeline import Pipeline
    from aiidetect.store import ResultsStore, open_session

    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / "in" / f"{name}.png")
    (tmp_path / "link").symlink_to("in")
    store = ResultsStore(tmp_path / "s.sqlite")
    pipe = Pipeline([MetadataDetector({"watermark": "never"})], None, batch_size=8, workers=1)
    sent: list[str] = []
    real = ray_engine._decode_stage

    def stage(half, finish, here):
        fn = real(half, finish, here)

        def run(batch):
            sent.extend(pickle.loads(b).path for b in batch["cand"])
            return fn(batch)
        return run

    for folder in ("in", "link"):
        session = open_session(store, pipe, {}, engine="ray")
        pipe.prior = session.prior
        cands, _ = discover([str(tmp_path / folder)])
        with pytest.MonkeyPatch.context() as m:
            m.setattr(ray_engine, "_decode_stage", stage)
            for r in ray_engine._records(_fake_ray(), pipe, cands, ["metadata"], _ctx(), None, None, None, 10):
                session.add(r)
        session.close()
    assert len(sent) == 2  # the first scan's
    assert store.db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2


def test_a_model_batch_past_its_deadline_kills_its_actor_and_marks_its_files(monkeypatch):
    """The model actors' batches had no deadline: a call that never returned (a backbone stuck in native code,
    a stopped worker, a GPU hang) blocked the driver for ever. With --file-timeout, each actor of the pool hands
    its batch to a model actor of its own, waits start-up plus the files' allowance, then kills it (ray.kill),
    gives the batch's files `timeout` markers and starts a new model actor for the next batch."""
    import pickle
    from types import SimpleNamespace

    from aiidetect.decode import Sample
    from aiidetect.engines import ray as ray_engine

    calls = []

    class Ref:
        def __init__(self, kind, batch=None):
            self.kind, self.batch = kind, batch

    class Actor:
        def __init__(self, n):
            self.n = n
            self.ready = SimpleNamespace(remote=lambda: Ref("ready"))
            self.complete = SimpleNamespace(remote=lambda batch: Ref("batch", batch))

    def wait(refs, timeout):
        ref = refs[0]
        calls.append(("wait", ref.kind, timeout))
        hung = ref.kind == "batch" and any(pickle.loads(b).path.endswith("hang.png") for b in ref.batch["sample"])
        return ([] if hung else refs), (refs if hung else [])

    made = []

    def options(**kw):
        # Nothing asked for: the pool's actor holds the CPUs and the GPU; its model sees that GPU only.
        assert kw["num_cpus"] == 0 and kw["num_gpus"] == 0 and kw["max_restarts"] == 0
        assert kw["runtime_env"] == {"env_vars": ray_engine._model_env([3])}
        assert kw["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == "3"

        def remote(spec, threads):
            made.append(Actor(len(made)))
            return made[-1]
        return SimpleNamespace(remote=remote)

    _fake_ray_module(monkeypatch, remote=lambda cls: SimpleNamespace(options=options), wait=wait,
                     get_gpu_ids=lambda: [3],
                     get=lambda ref: {"i": ref.batch["i"], "record": ["done"] * len(ref.batch["i"])}
                     if ref.kind == "batch" else True,
                     kill=lambda actor, no_restart: calls.append(("kill", actor.n, no_restart)),
                     exceptions=SimpleNamespace(RayActorError=type("RayActorError", (Exception,), {})))

    def batch(*names):
        return {"i": list(range(len(names))),
                "sample": [pickle.dumps(Sample(index=k, path=f"/x/{n}", record=None)) for k, n in enumerate(names)]}

    stage = ray_engine._ModelStage(None, 1, 3.0, 10.0, 500.0)
    assert calls == [("wait", "ready", 500.0)] and len(made) == 1  # the model is built before the first batch
    assert stage(batch("a.png", "b.png")) == {"i": [0, 1], "record": ["done", "done"], "decoders": ["", ""]}
    out = stage(batch("a.png", "hang.png", "c.png"))
    assert calls[1:] == [("wait", "batch", 16.0), ("wait", "batch", 19.0), ("kill", 0, True)]
    recs = [pickle.loads(r) for r in out["record"]]
    assert [r.file for r in recs] == ["/x/a.png", "/x/hang.png", "/x/c.png"] and out["i"] == [0, 1, 2]
    assert all(ray_engine._is_timeout(r) and r.error.message == ray_engine.MODEL_LATE for r in recs)
    # The next batch goes to a new model actor, given its start-up again.
    assert stage(batch("d.png")) == {"i": [0], "record": ["done"], "decoders": [""]}
    assert len(made) == 2 and calls[4:] == [("wait", "ready", 500.0), ("wait", "batch", 13.0)]
    monkeypatch.setenv("AIIDETECT_RAY_ACTOR_START", "0")  # checked before the scan, as the other sizing settings
    with pytest.raises(ray_engine.RayUnavailable, match="AIIDETECT_RAY_ACTOR_START='0'"):
        ray_engine._settings()


def test_a_file_whose_model_batch_runs_out_of_time_alone_is_a_timeout_record_and_set_aside(monkeypatch):
    """The files of a model batch past its deadline are tried again alone, as a late decode task's are; the one
    still late alone gets one `timeout` record saying it was the model's batch, and the strikes."""
    import pickle

    from aiidetect.crashguard import STRIKES_TO_REFUSE
    from aiidetect.engines import ray as ray_engine
    from aiidetect.pipeline import Pipeline

    def with_deadline(fn, finish, file_timeout, start):
        def run(batch):
            paths = [pickle.loads(b).path for b in batch["cand"]]
            if any(p.endswith("/3.jpg") for p in paths):
                return {"i": batch["i"], "record": [ray_engine._dump(ray_engine.Record(file=p).set_error(
                    ray_engine.TIMEOUT, ray_engine.MODEL_LATE)) for p in paths]}
            return fn(batch)
        return run

    monkeypatch.setattr(ray_engine, "_with_deadline", with_deadline)
    struck = []
    pipe = Pipeline([], None, batch_size=8, workers=1)
    pipe.guard = SimpleGuard(struck)
    cands = [Candidate(f"/nowhere/{i}.jpg", explicit=True, error=("unreadable", "gone")) for i in range(10)]
    recs = list(ray_engine._records(_fake_ray(), pipe, cands, [], _ctx(), None, None, None, 40, 5.0))
    assert sorted(r.file for r in recs) == sorted(c.path for c in cands)
    late = [r for r in recs if r.error.code == "timeout"]
    assert [r.file for r in late] == ["/nowhere/3.jpg"] and "model actor was killed" in late[0].error.message
    assert struck == [("/nowhere/3.jpg", STRIKES_TO_REFUSE)]


def test_the_model_actors_gpu_survives_a_cluster_that_blanks_the_devices_of_actors_asking_for_none(monkeypatch):
    """The model actor asks for no GPU (its pool actor holds it) and is shown that GPU through its environment.
    A cluster with RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO set has Ray blank CUDA_VISIBLE_DEVICES for an actor with no
    GPU as it starts: the model ran on the CPU, every batch past its deadline. Ray's own start-up step, run here
    on the environment the model actor is given, keeps the pool actor's GPU."""
    import os
    from types import SimpleNamespace

    ray = pytest.importorskip("ray")
    utils = pytest.importorskip("ray._private.utils")
    if not hasattr(utils, "set_visible_accelerator_ids"):
        pytest.skip("this Ray sets the visible devices another way")
    from aiidetect.engines import ray as ray_engine

    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")  # the cluster's
    for k, v in ray_engine._model_env([3]).items():  # the runtime_env's, set in the model actor's worker
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_accelerator_ids=lambda: {"GPU": []}))
    utils.set_visible_accelerator_ids()  # as Ray runs it when the actor, with no GPU of its own, starts
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_a_fully_resumed_ray_scan_starts_no_ray(tmp_path, monkeypatch):
    """`scan --engine ray --db` connected when the scanner opened (with no address: a local Ray instance,
    tens of seconds and a few hundred MB of processes) even when every file was resumed from the store and
    nothing went to the cluster. Ray is reached when a file must be sent; a changed file still sends it."""
    from PIL import Image

    from aiidetect.engines import ray as ray_engine

    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    fake = _fake_ray()
    fake.is_initialized = lambda: False
    monkeypatch.setattr(ray_engine, "_import_ray", lambda: fake)
    connects = []
    monkeypatch.setattr(ray_engine, "_connect", lambda ray, address, quiet=False: connects.append(address))
    monkeypatch.setattr(ray_engine, "connect", lambda *a, **k: pytest.fail("connected before knowing what to send"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("a real Ray instance started"))

    def scan():
        r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--engine", "ray", "--db",
                               str(tmp_path / "s.sqlite"), "-f", "jsonl", "-q", "--no-cache",
                               "--file-timeout", "0")  # no deadline: its remote calls would start a real Ray
        assert r.returncode == 0, r.stderr
        return sorted(json.loads(line)["file"].rsplit("/", 1)[1] for line in r.stdout.split("\n") if line.strip())

    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        (tmp_path / f"{name}.png").rename(tmp_path / "in" / f"{name}.png")
    assert scan() == ["a.png", "b.png"] and len(connects) == 1       # files to send: Ray reached once
    assert scan() == ["a.png", "b.png"] and len(connects) == 1       # all resumed: Ray never started
    Image.new("RGB", (9, 9)).save(tmp_path / "in" / "c.png")
    assert scan() == ["a.png", "b.png", "c.png"] and len(connects) == 2  # one new file: reached for it


def test_a_scan_without_a_store_reaches_ray_once(monkeypatch):
    """Without a results store `run` connects before returning (a missing Ray is an error before any output),
    and the first file sent connected again: two `_connect`s per scan, the second doing nothing but repeat
    `_quiet`. It is reached once now; with a store, still only when a file must be sent
    (test_a_fully_resumed_ray_scan_starts_no_ray)."""
    from aiidetect.engines import ray as ray_engine
    from aiidetect.pipeline import Pipeline

    connects = []
    monkeypatch.setattr(ray_engine, "_import_ray", _fake_ray)
    monkeypatch.setattr(ray_engine, "_connect", lambda ray, address, quiet=False: connects.append(address))
    cands = [Candidate(f"/nowhere/{i}.jpg", explicit=True, error=("unreadable", "gone")) for i in range(3)]
    records = ray_engine.run(Pipeline([], None, batch_size=8, workers=1), cands, [], _ctx(), file_timeout=None)
    assert connects == [None]                 # before any record
    assert [r.error.code for r in records] == ["unreadable"] * 3
    assert connects == [None]


def test_a_ray_store_holds_the_p_ai_a_local_store_does(tmp_path, monkeypatch):
    """A Ray store's rows (what `results summary`, `--verdict`, SQL and `merge` read) are a local store's: records
    came back from the workers as JSON, and a Ray store held 0.475021 where a local one held 0.47502081252106
    (before records carried p_ai at 6 digits). The driver now gets the records themselves."""
    import sqlite3

    from PIL import Image

    from aiidetect.engines import ray as ray_engine

    (tmp_path / "in").mkdir()
    for k in range(3):
        Image.new("RGB", (8, 8), (k, 2, 3)).save(tmp_path / "in" / f"{k}.jpg")  # a rule fires on a JPEG
    fake = _fake_ray()
    fake.is_initialized = lambda: False
    monkeypatch.setattr(ray_engine, "_import_ray", lambda: fake)
    monkeypatch.setattr(ray_engine, "_connect", lambda ray, address, quiet=False: None)

    def column(*engine):
        db = tmp_path / f"{len(engine)}.sqlite"
        r = run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", *engine, "--db", str(db),
                               "-f", "jsonl", "-q", "--no-cache", "--file-timeout", "0")
        assert r.returncode == 0, r.stderr
        with sqlite3.connect(db) as c:
            return sorted(c.execute("SELECT path, p_ai, verdict FROM results"))

    local = column()
    assert len(local) == 3
    assert column("--engine", "ray") == local


def test_a_model_actor_that_dies_while_building_is_started_again(monkeypatch):
    """A model actor killed while it loaded the backbone (kill -9; the out-of-memory killer, whose peak that
    load is) failed the pool actor's constructor, and Ray Data waited for that pool for ever: the scan printed
    nothing more and never exited. A new model actor is started, as for a batch whose model actor died; one
    whose creation failed is not started again, its batches' files get records saying so; one dead three
    times fails its first batch instead."""
    from types import SimpleNamespace

    from aiidetect.engines import ray as ray_engine

    class ActorDied(Exception):
        def __init__(self, init_failed):
            self.actor_init_failed = init_failed

    deaths: list = []
    made = []

    def remote(spec, threads):
        made.append(len(made))
        return SimpleNamespace(ready=SimpleNamespace(remote=lambda: len(made) - 1))

    def get(ref):
        if deaths:
            raise deaths.pop(0)
        return True

    _fake_ray_module(monkeypatch, remote=lambda cls: SimpleNamespace(options=lambda **kw: SimpleNamespace(
        remote=remote)), wait=lambda refs, timeout: (refs, []), get=get, get_gpu_ids=lambda: [],
        exceptions=SimpleNamespace(RayActorError=ActorDied))
    deaths[:] = [ActorDied(False)]
    assert ray_engine._ModelStage(None, 1, 3.0, 10.0, 500.0)._model is not None and len(made) == 2
    made.clear()
    deaths[:] = [ActorDied(True)]  # its creation failed: not retried, and not raised (Ray Data fails or waits)
    spec = SimpleNamespace(fusion_model=None)
    unbuilt = ray_engine._ModelStage(spec, 1, 3.0, 10.0, 500.0)
    assert len(made) == 1 and unbuilt._model is None
    import pickle

    from aiidetect.decode import Sample
    from aiidetect.records import Record

    sample = pickle.dumps(Sample(index=4, path="/x/a.jpg", record=Record(file="/x/a.jpg")))
    out = unbuilt({"i": [4], "sample": [sample]})
    assert out["i"] == [4] and pickle.loads(out["record"][0]).error.code == "internal-error" and len(made) == 1
    made.clear()
    # Dead each time: not raised from the constructor (the same endless wait), but from the batch, whose files
    # the driver then tries alone.
    deaths[:] = [ActorDied(False)] * 3
    stage = ray_engine._ModelStage(None, 1, 3.0, 10.0, 500.0)
    assert len(made) == 3 and stage._model is None
    deaths[:] = [ActorDied(False)] * 3
    with pytest.raises(ActorDied):
        stage({"i": [0], "sample": []})
    assert len(made) == 6


def test_a_model_that_cannot_be_built_on_a_worker_gives_each_file_a_record_saying_why():
    """A model whose build raised on a worker (a head damaged after the driver checked it, a backbone that node
    cannot load, memory raised as an error) raised from Ray Data's actor constructor: on a local head the scan
    ended with exit 2, a ~200-line traceback and no record (other Ray versions retry the pool for ever). The
    error is kept and every file of the actor's batches gets a record saying why; a file's own error stays."""
    import pickle
    from types import SimpleNamespace

    from aiidetect.decode import Sample
    from aiidetect.engines import ray as ray_engine
    from aiidetect.records import Record

    def build():
        raise ValueError("head.safetensors: header is not valid JSON")

    spec = SimpleNamespace(build=build, fusion_model=None)
    stage = ray_engine._ModelStage(spec, 1, None)  # --file-timeout 0: the pool actor builds the model itself
    gone = Record(file="/x/gone.jpg").set_error("unreadable", "no such file or directory")
    batch = {"i": [0, 1], "sample": [pickle.dumps(Sample(index=0, path="/x/a.jpg", record=Record(file="/x/a.jpg"))),
                                     pickle.dumps(Sample(index=1, path="/x/gone.jpg", record=gone))]}
    out = stage(batch)
    a, g = (pickle.loads(r) for r in out["record"])
    assert out["i"] == [0, 1] and [a.file, g.file] == ["/x/a.jpg", "/x/gone.jpg"]
    assert a.verdict == "error" and a.error.code == "internal-error"
    assert "could not be built" in a.error.message and "header is not valid JSON" in a.error.message
    assert g.error.code == "unreadable"
    # With a deadline the model actor builds it, and says why it could not from ready(), its batches the same.
    model = ray_engine._Model(spec, 1)
    assert "header is not valid JSON" in model.ready() and model.complete(batch)["i"] == [0, 1]


def test_the_records_of_an_unbuilt_model_name_the_runs_fusion():
    """They said `"fusion": {}`, which is neither of the schema's kinds (rules, model)."""
    import pickle
    from types import SimpleNamespace

    from aiidetect.decode import Sample
    from aiidetect.engines import ray as ray_engine
    from aiidetect.records import Record

    def build():
        raise RuntimeError("CUDA out of memory")

    stage = ray_engine._ModelStage(SimpleNamespace(build=build, fusion_model=None), 1, None)
    out = stage({"i": [0], "sample": [pickle.dumps(Sample(index=0, path="/x/a.jpg", record=Record(file="/x/a.jpg")))]})
    (rec,) = (pickle.loads(r) for r in out["record"])
    assert rec.error.code == "internal-error" and rec.to_dict()["fusion"] == {"kind": "rules"}


def test_why_a_model_could_not_be_built_keeps_the_error_at_the_end_of_a_traceback():
    """Ray's error for a creation task that raised is the traceback, coloured, the error on its last line: cut at
    600 characters from the head, the record's message lost it."""
    from aiidetect.engines import ray as ray_engine

    frames = "".join(f'\n  File "/torch/_lib{i}.py", line {i}, in <module>\n    load()' for i in range(20))
    exc = RuntimeError("The actor died because of an error raised in its creation task, \x1b[36mray::_Model.__init__()"
                       f"\x1b[39m (pid=7){frames}\nOSError: libcudart.so.12: cannot open shared object file")
    why = ray_engine._why(exc)
    assert len(why) < 620 and why.startswith("RuntimeError: The actor died")
    assert why.endswith("OSError: libcudart.so.12: cannot open shared object file") and "\x1b" not in why


def test_a_worker_that_cannot_make_a_detector_the_driver_made_gives_its_files_internal_error(tmp_path):
    """A node without the heads (or the backbone's weights, or a GPU for --device cuda) built the model with that
    detector unavailable and judged the files on their metadata alone, no error, kept as final by the store."""
    import pickle

    from aiidetect.decode import Sample
    from aiidetect.engines import ray as ray_engine
    from aiidetect.records import Record

    ctx = {"backbone_spec": None, "device": "cpu", "dtype": "auto", "weights_dirs": [str(tmp_path)],
           "runtime": "torch", "onnx_dir": None, "options": {}}
    # Without the driver's list (as before) the worker's pipeline is built, linear unavailable in it.
    assert ray_engine.ModelSpec(["metadata", "linear"], ctx, None, 4, None).build() is not None
    spec = ray_engine.ModelSpec(["metadata", "linear"], ctx, None, 4, None,
                                (("metadata", None), ("linear:univfd", None)))
    model = ray_engine._Model(spec, 1)
    assert "linear:univfd unavailable on this node" in model.ready() and "no linear heads found" in model.ready()
    out = model.complete({"i": [0], "sample": [pickle.dumps(Sample(index=0, path="/x/a.jpg",
                                                                   record=Record(file="/x/a.jpg")))]})
    (rec,) = (pickle.loads(r) for r in out["record"])
    assert rec.verdict == "error" and rec.error.code == "internal-error" and "univfd" in rec.error.message


def test_a_file_whose_metadata_decides_gets_the_local_record_where_a_worker_cannot_build_the_model(tmp_path):
    """A worker that could not build the model gave every file of its batches `internal-error`, verdict "error":
    also a PNG with SD `parameters`, which the local engine with the same head unavailable judges ai-generated on
    its metadata (decisive evidence decides whatever the model says). Such a file now gets the local record; a
    file the model could have swayed stays `internal-error` (its verdict needs the model the driver promised)."""
    import pickle
    from types import SimpleNamespace

    from PIL.PngImagePlugin import PngInfo

    from aiidetect.detectors import RunContext, UnavailableDetector, create_detectors
    from aiidetect.engines import ray as ray_engine
    from aiidetect.pipeline import Pipeline
    from aiidetect.testing.images import noise_rgb

    info = PngInfo()
    info.add_text("parameters", "a lighthouse\nNegative prompt: blurry\nSteps: 30, Sampler: Euler a, Seed: 1234")
    noise_rgb().save(tmp_path / "sd.png", pnginfo=info)
    noise_rgb().save(tmp_path / "plain.png")
    cands = [Candidate(str(tmp_path / n), explicit=True) for n in ("sd.png", "plain.png")]
    why = "cannot load head /w/x: head.safetensors checksum differs from manifest"
    dets = create_detectors(["metadata"], RunContext()) + [UnavailableDetector("linear:x", why)]
    pipe = Pipeline(dets, None, batch_size=4, workers=1)
    samples = pipe.decode_many(cands, [0, 1])  # what the CPU tasks hand the model actors
    batch = {"i": [0, 1], "sample": [pickle.dumps(s) for s in samples]}
    local = [r.to_dict() for r in pipe.complete(samples)]
    assert local[0]["verdict"] == "ai-generated" and local[0]["error"] is None

    def build():
        exc = ray_engine.DetectorsUnavailableHere(f"linear:x unavailable on this node ({why})")
        exc.reasons = {"linear:x": why}
        raise exc

    # The driver's identities travel in the spec (ray.ModelSpec.identities): the metadata entry carries its own
    assert "identity" in local[0]["detectors"]["metadata"]
    spec = SimpleNamespace(build=build, fusion_model=None, order=(("metadata", None), ("linear:x", None)),
                           identities=dict(pipe.result_identities))
    for stage in (ray_engine._ModelStage(spec, 1, None), ray_engine._Model(spec, 1).complete):  # without, with deadline
        sd, plain = (pickle.loads(r).to_dict() for r in stage(batch)["record"])
        assert sd == local[0]
        assert plain["verdict"] == "error" and plain["error"]["code"] == "internal-error"


def test_a_model_actor_that_does_not_start_in_time_gives_its_files_records(monkeypatch):
    """A model actor not started within AIIDETECT_RAY_ACTOR_START raised from the pool actor's constructor: Ray Data
    failed the dataset, and the scan ended with exit 2, a traceback and no record for the rest. Raised when a batch
    started a new one (after a deadline or a death), its files were tried alone, each waiting for the allowance
    again. Each file now gets an `internal-error` record saying why; the late actor is killed, not started again."""
    import pickle
    from types import SimpleNamespace

    from aiidetect.decode import Sample
    from aiidetect.engines import ray as ray_engine
    from aiidetect.records import Record

    made, killed, late = [], [], [True]
    _fake_ray_module(monkeypatch, remote=lambda cls: SimpleNamespace(options=lambda **kw: SimpleNamespace(
        remote=lambda spec, threads: made.append(1) or SimpleNamespace(ready=SimpleNamespace(remote=lambda: "r")))),
        wait=lambda refs, timeout: ([], refs) if late[0] else (refs, []), get=lambda ref: None,
        kill=lambda actor, no_restart: killed.append(actor), get_gpu_ids=lambda: [],
        exceptions=SimpleNamespace(RayActorError=type("ActorDied", (Exception,), {})))
    spec = SimpleNamespace(fusion_model=None, order=())
    batch = {"i": [3], "sample": [pickle.dumps(Sample(index=3, path="/x/a.jpg", record=Record(file="/x/a.jpg")))]}

    def check(stage):
        (rec,) = (pickle.loads(r) for r in stage(batch)["record"])
        assert rec.error.code == "internal-error" and "did not start within 500 s" in rec.error.message

    stage = ray_engine._ModelStage(spec, 1, 3.0, 10.0, 500.0)  # raised here before
    assert len(made) == len(killed) == 1
    check(stage)
    check(stage)
    assert len(made) == 1  # not started again by each batch
    late[0] = False
    stage = ray_engine._ModelStage(spec, 1, 3.0, 10.0, 500.0)
    stage._model, late[0] = None, True  # its model actor killed past a batch's deadline: the next one is late
    check(stage)
    assert len(made) == 3 and len(killed) == 2


def _nodes_decode_with(monkeypatch, ray_engine, **versions):
    """Every row decoded by a worker whose decoder versions differ from this process's by `versions` (the whole
    set sent, as workers did before they sent only what differs: the driver takes both)."""
    from aiidetect.extras import decoder_versions

    real = ray_engine._decode_stage

    def stage(half, finish, here):
        fn = real(half, finish, here)

        def run(batch):
            out = fn(batch)
            there = json.dumps({**decoder_versions(), **versions}, sort_keys=True)
            out["decoders"] = [there] * len(out["i"])
            return out
        return run

    monkeypatch.setattr(ray_engine, "_decode_stage", stage)


def _fake_ray_scan(tmp_path, monkeypatch, *args):
    from PIL import Image

    from aiidetect.engines import ray as ray_engine

    (tmp_path / "in").mkdir(exist_ok=True)
    for k in range(3):
        Image.new("RGB", (8, 8), (k, 2, 3)).save(tmp_path / "in" / f"{k}.png")
    fake = _fake_ray()
    fake.is_initialized = lambda: False
    monkeypatch.setattr(ray_engine, "_import_ray", lambda: fake)
    monkeypatch.setattr(ray_engine, "_connect", lambda ray, address, quiet=False: None)
    return run_cli_in_process("scan", str(tmp_path / "in"), "-d", "metadata", "--engine", "ray", "-f", "jsonl",
                              "--no-cache", "--file-timeout", "0", *args)


def test_a_node_with_another_pillow_is_said_and_counted(tmp_path, monkeypatch):
    """A cluster whose workers ran another Pillow gave records decoded by it, keyed and identified by the
    driver's versions, and nothing said so: nothing compared the nodes' decoders with the driver's."""
    from aiidetect.engines import ray as ray_engine

    _nodes_decode_with(monkeypatch, ray_engine, pillow="0.0.1", **{"libjpeg-turbo": "2.0.0"})
    r = _fake_ray_scan(tmp_path, monkeypatch)
    assert r.returncode == 0, r.stderr
    assert len([json.loads(line) for line in r.stdout.splitlines()]) == 3  # the records are still given
    import PIL

    err = " ".join(r.stderr.split())
    assert err.count("a Ray node decodes with other decoder versions") == 1, err  # once per version set
    assert f"pillow 0.0.1 there, {PIL.__version__} here" in err, err
    assert "libjpeg-turbo" not in err, err  # no PNG goes through it (extras.decoders_of)
    assert "3 files read on Ray nodes with other decoder or metadata parser versions than this machine" in err, err


def test_a_node_with_another_pillow_stops_a_db_run_before_its_records_are_stored(tmp_path, monkeypatch):
    """With --db its records were stored under the driver's run identity (versions the node did not decode
    with), and a later resume served them as that run's."""
    import sqlite3

    from aiidetect.engines import ray as ray_engine

    db = tmp_path / "s.sqlite"
    with monkeypatch.context() as mp:
        _nodes_decode_with(mp, ray_engine, pillow="0.0.1")
        r = _fake_ray_scan(tmp_path, mp, "--db", str(db))
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert "no record decoded there is stored under it" in " ".join(r.stderr.split()), r.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
    again = _fake_ray_scan(tmp_path, monkeypatch, "--db", str(db))  # the nodes match now: the same command
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 3, again.stderr
    assert "other decoder versions" not in again.stderr


def test_the_model_stage_hands_on_the_decoding_nodes_versions():
    """The model actors run no decoder: the versions the driver compares are those of the node that decoded
    the row, carried through the model stage (Ray Data keeps only the columns a stage returns)."""
    from aiidetect.engines import ray as ray_engine

    stage = object.__new__(ray_engine._ModelStage)
    stage._deadline, stage._run = None, lambda batch: {"i": batch["i"], "record": [b"r"] * len(batch["i"])}
    out = stage({"i": [0, 1], "sample": [b"", b""], "decoders": ["x", "y"]})
    assert list(out["decoders"]) == ["x", "y"] and list(out["i"]) == [0, 1]


def test_a_node_without_pillow_heif_is_no_other_decoder_for_files_it_decodes_without_it(tmp_path, monkeypatch):
    """A node lacking the optional pillow-heif (or with another libwebp) decodes a PNG with the same Pillow as
    this machine: the files were counted as decoded by other decoders, and a --db audit of PNGs stopped with
    exit 2 for a library none of its files goes through."""
    from aiidetect.engines import ray as ray_engine

    _nodes_decode_with(monkeypatch, ray_engine, libwebp="0.0.1",
                       **{"pillow-heif": None, "libheif": None, "libheif-decoders": None})
    r = _fake_ray_scan(tmp_path, monkeypatch, "--db", str(tmp_path / "s.sqlite"))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3, r.stderr
    assert "other decoder versions" not in r.stderr, r.stderr


def test_a_file_a_nodes_missing_pillow_heif_decodes_differently_is_still_counted():
    """Only the versions a file's format goes through are compared: a HEIF (or a file of no sniffed format,
    which pillow-heif may still open) decoded on a node without pillow-heif is another decoder's."""
    from types import SimpleNamespace

    from aiidetect.engines import ray as ray_engine
    from aiidetect.extras import decoder_versions

    pipe = SimpleNamespace(prior=None, stats=SimpleNamespace(other_decoders=0))
    said: list[str] = []
    check = ray_engine._DecoderCheck(pipe, said.append)
    there = json.dumps({**decoder_versions(), "pillow-heif": None, "libheif": None}, sort_keys=True)
    for fmt in ("PNG", "JPEG", "WEBP", "HEIF", None, "AVIF"):
        check(there, SimpleNamespace(format=fmt, sha256="ab"))
    check(there, SimpleNamespace(format=None, sha256=None))  # not read there (no such path on that node)
    assert pipe.stats.other_decoders == 3 and len(said) == 1 and "pillow-heif None there" in said[0], said


def test_a_tiff_decoded_with_another_libwebp_is_counted():
    """libtiff decodes a WebP-compressed TIFF with libwebp: such a TIFF from a node with another libwebp is
    another decoder's, a PNG from it is not."""
    from types import SimpleNamespace

    from aiidetect.engines import ray as ray_engine
    from aiidetect.extras import decoder_versions

    pipe = SimpleNamespace(prior=None, stats=SimpleNamespace(other_decoders=0))
    check = ray_engine._DecoderCheck(pipe, lambda why: None)
    there = json.dumps({**decoder_versions(), "libwebp": "0.0.1"}, sort_keys=True)
    for fmt in ("PNG", "TIFF"):
        check(there, SimpleNamespace(format=fmt, sha256="ab"))
    assert pipe.stats.other_decoders == 1


def test_a_node_with_another_metadata_parser_is_said_and_counted(tmp_path, monkeypatch):
    """The metadata detector runs on the nodes, beside the decode, but only the decoders were compared: a node with
    another exifread (or without c2pa-python, which finds no C2PA manifest, the most decisive evidence) gave its
    records unsaid and uncounted. Its parsers are compared too, for every format."""
    from aiidetect.engines import ray as ray_engine

    _nodes_decode_with(monkeypatch, ray_engine, exifread="0.0.1")
    r = _fake_ray_scan(tmp_path, monkeypatch)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3, r.stderr
    err = " ".join(r.stderr.split())
    assert err.count("a Ray node reads metadata with other parser versions than this process (exifread 0.0.1 there,") \
        == 1, err
    assert "other decoder versions than this process" not in err, err  # its decoders are the driver's
    assert "3 files read on Ray nodes with other decoder or metadata parser versions" in err, err


def test_a_node_without_c2pa_stops_a_db_run_before_its_records_are_stored(tmp_path, monkeypatch):
    """With --db, a record whose metadata was read without C2PA support was stored under the driver's run, whose
    identity names the driver's c2pa-python: a resume served it as that run's."""
    import sqlite3

    from aiidetect.engines import ray as ray_engine

    db = tmp_path / "s.sqlite"
    _nodes_decode_with(monkeypatch, ray_engine, **{"c2pa-python": None})
    r = _fake_ray_scan(tmp_path, monkeypatch, "--db", str(db))
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert "c2pa-python None there" in r.stderr and "no record decoded there is stored under it" in \
        " ".join(r.stderr.split()), r.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


def test_parsers_count_only_when_the_scan_reads_metadata_with_them():
    """exifread and c2pa-python change the metadata detector's results only: a scan without it, or with C2PA off,
    is not told that its nodes differ in them."""
    from types import SimpleNamespace

    from aiidetect.engines import ray as ray_engine
    from aiidetect.metadata.detector import MetadataDetector

    there = json.dumps({"exifread": "0.0.1", "c2pa-python": None})
    counts = []
    for dets in ([], [MetadataDetector({"c2pa": False})], [MetadataDetector({"c2pa": True})]):
        pipe = SimpleNamespace(prior=None, stats=SimpleNamespace(other_decoders=0), worker_dets=dets)
        said: list[str] = []
        ray_engine._DecoderCheck(pipe, said.append)(there, SimpleNamespace(format="JPEG", sha256="ab"))
        counts.append((pipe.stats.other_decoders, "c2pa-python" in " ".join(said), "exifread" in " ".join(said)))
    assert counts == [(0, False, False), (1, False, True), (1, True, True)]


def test_a_worker_like_the_driver_sends_no_versions_with_its_rows(tmp_path):
    """Every row carried the worker's whole set of decoder versions (~250 bytes of JSON), the parsers' would add
    more: a worker now sends only the versions that differ from the driver's, nothing when none do."""
    import pickle

    from PIL import Image

    from aiidetect.engines import ray as ray_engine
    from aiidetect.pipeline import Pipeline

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    fn = ray_engine._decode_stage(Pipeline([], None, 1, 1), True, ray_engine.node_versions())
    out = fn({"i": [0], "cand": [pickle.dumps(Candidate(path=str(tmp_path / "a.png")))]})
    assert out["decoders"] == [""]
    here = ray_engine.node_versions()
    assert json.loads(ray_engine.versions_unlike({**here, "pillow": "0.0.1", "gone": "1"})) == {
        "pillow": here["pillow"], "gone": None}
