"""`aiidetect weights fetch` against a local HTTP server on 127.0.0.1 (never the internet),
and the resolution of open_clip registry tags (URL, SHA-256, file name) without network."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "test"

    def log_message(self, *a):  # keep pytest output clean
        pass

    def do_HEAD(self):  # noqa: N802
        # Like the hub: a redirect whose headers carry the file's SHA-256.
        srv = self.server
        srv.heads.append(self.path)
        if self.path in srv.raw:
            self.wfile.write(srv.raw[self.path])
            return
        if srv.etag is None or self.path not in srv.files:
            self.send_error(404)
            return
        self.send_response(302)
        self.send_header("Location", self.path)
        self.send_header("X-Linked-Etag", f'"{srv.etag}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path in srv.raw:  # not HTTP at all
            self.wfile.write(srv.raw[self.path])
            return
        if self.path in srv.drip:  # announces the whole file, then a byte every 50 ms
            blob = srv.drip[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            try:
                for i in range(len(blob)):
                    self.wfile.write(blob[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client gave up
                pass
            return
        if self.path in srv.redirects:
            self.send_response(302)
            self.send_header("Location", srv.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        blob = srv.files.get(self.path)
        if blob is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.split("=")[1].split("-")[0]) if srv.ranges is True else srv.ranges(len(blob))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        else:
            self.send_response(200)
        body = blob[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drop_first and len(srv.requests) == 1:
            # Announce the whole file, send half, hang up.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if srv.hold is not None and len(srv.requests) == 1:
            # Half the file, then wait until the test lets the rest go.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            srv.hold.wait(60)
            body = body[len(body) // 2:]
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.ranges, srv.drop_first, srv.etag, srv.heads = {}, [], True, False, None, []
    srv.redirects, srv.raw, srv.hold, srv.drip = {}, {}, None, {}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> bytes:
    """A real (tiny) checkpoint: a safetensors file of a few tensors made here."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    p = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({"visual.conv1.weight": torch.randn(8, 3, 4, 4, generator=g),
               "visual.proj": torch.randn(8, 4, generator=g), "blob": torch.randn(40_000, generator=g)}, str(p))
    return p.read_bytes()


def _fetch(server, cache, *args):
    return run_cli("weights", "fetch", *args, "--cache-dir", str(cache), env={"NO_PROXY": "*", "no_proxy": "*"})


def test_fetch_verifies_and_places_atomically(server, checkpoint, tmp_path):
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha, "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"path", "sha256", "bytes", "resumed"}
    assert out["sha256"] == sha and out["bytes"] == len(checkpoint) and out["resumed"] is False
    assert Path(out["path"]) == tmp_path / "tiny.safetensors"
    assert (tmp_path / "tiny.safetensors").read_bytes() == checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]  # no partial left
    assert r.stderr == ""  # not a terminal: no progress bar, nothing on stderr
    assert [q["range"] for q in server.requests] == [None]


def test_wrong_sha256_is_refused_and_nothing_usable_left(server, checkpoint, tmp_path):
    server.files["/w/tiny.safetensors"] = checkpoint
    r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", "0" * 64)
    assert r.returncode == 2
    assert "does not match" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "tiny.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".partial")] == []


def test_resume_after_the_connection_drops(server, checkpoint, tmp_path):
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    server.drop_first = True
    r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha, "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["resumed"] is True and out["sha256"] == sha
    assert len(server.requests) == 2
    assert server.requests[0]["range"] is None
    half = len(checkpoint) // 2
    assert server.requests[1]["range"] == f"bytes={half}-"
    assert (tmp_path / "tiny.safetensors").read_bytes() == checkpoint


def test_partial_from_an_earlier_run_is_resumed(server, checkpoint, tmp_path):
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    (tmp_path / "tiny.safetensors.partial").write_bytes(checkpoint[:1000])
    r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resumed"] is True
    assert server.requests == [{"path": "/w/tiny.safetensors", "range": "bytes=1000-"}]


@pytest.mark.parametrize("where", ["whole file", "earlier", "later"])
def test_a_resume_answered_from_another_offset(server, checkpoint, tmp_path, where):
    """A 206 whose Content-Range starts elsewhere than asked (a cache rounding ranges, one sending the
    whole file as 206) was appended as if it started where asked: a spoiled file, refused and deleted."""
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    server.ranges = {"whole file": lambda n: 0, "earlier": lambda n: 4096, "later": lambda n: 9000}[where]
    (tmp_path / "tiny.safetensors.partial").write_bytes(checkpoint[:8192])
    r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resumed"] is (where == "earlier")
    assert (tmp_path / "tiny.safetensors").read_bytes() == checkpoint
    assert [q["range"] for q in server.requests] == ["bytes=8192-"] + ([None] if where == "later" else [])


def test_server_without_range_support_restarts_cleanly(server, checkpoint, tmp_path):
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    server.ranges = False
    (tmp_path / "tiny.safetensors.partial").write_bytes(b"garbage that is not a prefix")
    r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resumed"] is False
    assert (tmp_path / "tiny.safetensors").read_bytes() == checkpoint


def test_mirror_prefix_serves_the_original_url(server, checkpoint, tmp_path):
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/models.example.org/clip/tiny.safetensors"] = checkpoint
    r = _fetch(server, tmp_path, "--url", "https://models.example.org/clip/tiny.safetensors", "--sha256", sha,
               "--mirror", server.base + "/", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sha256"] == sha
    assert server.requests[0]["path"] == "/models.example.org/clip/tiny.safetensors"


def test_table_output_and_url_without_checksum_refused(server, checkpoint, tmp_path):
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha)
    assert r.returncode == 0 and sha in r.stdout and r.stderr == ""
    r = _fetch(server, tmp_path, "--url", server.base + "/w/other.safetensors")
    assert r.returncode == 2 and "--sha256" in r.stderr and server.requests[-1]["path"] != "/w/other.safetensors"


def test_hub_etag_is_checked(server, checkpoint, tmp_path):
    from aiidetect.fetch import FetchError, FetchPlan, download

    server.files["/repo/resolve/main/open_clip_model.safetensors"] = checkpoint
    server.etag = "1" * 64  # the hub publishes a SHA-256 that this file does not have
    plan = FetchPlan(url=server.base + "/repo/resolve/main/open_clip_model.safetensors",
                     dest=tmp_path / "x.safetensors", hub=True)
    with pytest.raises(FetchError, match="does not match"):
        download(plan)
    assert not plan.dest.exists()
    server.etag = hashlib.sha256(checkpoint).hexdigest()
    res = download(plan)
    assert res["verified"] == "sha256" and plan.dest.read_bytes() == checkpoint
    assert server.heads == [plan.url[len(server.base):]] * 2  # asked the redirect, not the CDN


def _one_error_line(r, *words):
    assert r.returncode == 2, r.stdout
    assert r.stdout == "" and "Traceback" not in r.stderr and "--debug" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def test_a_hub_that_does_not_speak_http(server, tmp_path):
    """The hub's HEAD (for the SHA-256) reached the crash handler on a garbage answer."""
    from aiidetect.fetch import FetchError, FetchPlan, download

    server.raw["/repo/resolve/main/open_clip_model.safetensors"] = b"garbage\r\n\r\n"
    plan = FetchPlan(url=server.base + "/repo/resolve/main/open_clip_model.safetensors",
                     dest=tmp_path / "x.safetensors", hub=True)
    with pytest.raises(FetchError, match="not usable HTTP"):
        download(plan)
    assert server.heads and list(tmp_path.iterdir()) == []


def test_redirects_are_followed_over_http_only(server, checkpoint, tmp_path):
    """urllib follows a redirect to ftp:// by default: a hostile server could send the fetch to any
    FTP host (here a port that accepts and never answers, which hung the fetch for minutes)."""
    import socket

    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    server.redirects["/moved/tiny.safetensors"] = "/w/tiny.safetensors"
    r = _fetch(server, tmp_path, "--url", server.base + "/moved/tiny.safetensors", "--sha256", sha, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sha256"] == sha and (tmp_path / "tiny.safetensors").read_bytes() == checkpoint

    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(1)
        trap.setblocking(False)
        server.redirects["/ftp/x.pt"] = f"ftp://127.0.0.1:{trap.getsockname()[1]}/x.pt"
        r = _fetch(server, tmp_path / "c2", "--url", server.base + "/ftp/x.pt", "--sha256", sha)
        _one_error_line(r, "only http(s) redirects", "ftp://127.0.0.1")
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody came
    for loc in ("file:///etc/passwd", "/loop/x.pt"):
        server.redirects["/loop/x.pt"] = loc
        _one_error_line(_fetch(server, tmp_path / "c3", "--url", server.base + "/loop/x.pt", "--sha256", sha),
                        server.base + "/loop/x.pt")
    assert not (tmp_path / "c2").exists() or list((tmp_path / "c2").iterdir()) == []


def test_a_server_that_does_not_speak_http(server, tmp_path):
    """A garbage status line, endless headers, a redirect to an unparsable URL: one line naming the
    URL (they reached the crash handler, which names no URL and suggests a bug)."""
    server.raw["/garbage.pt"] = b"garbage\r\n\r\n"
    server.raw["/headers.pt"] = b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 200 + b"\r\n"
    server.redirects["/v6.pt"] = "http://[::1/x.pt"
    for path, word in (("/garbage.pt", "BadStatusLine"), ("/headers.pt", "headers"), ("/v6.pt", "IPv6")):
        r = _fetch(server, tmp_path, "--url", server.base + path, "--sha256", "0" * 64, "--format", "json")
        _one_error_line(r, server.base + path, "not usable HTTP", word)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_ends_the_fetch_and_frees_the_space(server, checkpoint, tmp_path):
    """Out of space (here a file size limit, which Python gets as EFBIG): one line, exit 2, and the
    partial deleted; kept, it held the disk full after the exit (a body without Content-Length grows
    until the disk is full)."""
    import os
    import subprocess
    import sys

    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    assert len(checkpoint) > 64 * 1024
    cmd = [sys.executable, "-m", "aiidetect", "weights", "fetch", "--url", server.base + "/w/tiny.safetensors",
           "--sha256", sha, "--cache-dir", str(tmp_path)]
    r = subprocess.run(["bash", "-c", 'ulimit -f 64 && exec "$@"', "bash", *cmd], capture_output=True, text=True,
                       env=dict(os.environ, NO_PROXY="*", no_proxy="*"), timeout=120)
    _one_error_line(r, "File too large", "deleted to free the space")
    assert list(tmp_path.iterdir()) == []
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, NO_PROXY="*", no_proxy="*"),
                       timeout=120)
    assert r.returncode == 0 and (tmp_path / "tiny.safetensors").read_bytes() == checkpoint, r.stderr


def test_a_folder_where_the_file_goes_is_refused_before_downloading(server, checkpoint, tmp_path):
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    (tmp_path / "tiny.safetensors").mkdir()
    r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha)
    _one_error_line(r, "exists and is not a file")
    assert server.requests == [] and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


def test_a_file_system_without_locks_still_fetches(server, checkpoint, tmp_path, monkeypatch):
    import errno
    import fcntl

    from aiidetect.fetch import FetchPlan, download

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    server.files["/w/tiny.safetensors"] = checkpoint
    sha = hashlib.sha256(checkpoint).hexdigest()
    res = download(FetchPlan(url=server.base + "/w/tiny.safetensors", dest=tmp_path / "tiny.safetensors", sha256=sha))
    assert res["sha256"] == sha and (tmp_path / "tiny.safetensors").read_bytes() == checkpoint


def test_a_partial_that_is_a_symlink_is_not_written_through(server, checkpoint, tmp_path):
    """<dest>.partial planted as a link to a file outside the cache: the fetch appended the
    download to that file (or truncated it), then renamed the link into place as the weights."""
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"a reporter's notes")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny.safetensors.partial").symlink_to(notes)
    r = _fetch(server, cache, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert notes.read_bytes() == b"a reporter's notes"
    dest = cache / "tiny.safetensors"
    assert not dest.is_symlink() and dest.read_bytes() == checkpoint
    assert json.loads(r.stdout)["resumed"] is False and [q["range"] for q in server.requests] == [None]
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.safetensors"]


def test_two_fetches_of_one_file_at_once(server, checkpoint, tmp_path):
    """The second fetch waits for the first (saying so on stderr), then finds the file: one download,
    one intact file. Both wrote one partial at once (one truncating or appending under the other) and
    both failed, or one truncated the file the other had just renamed into place."""
    import os
    import subprocess
    import sys
    import threading
    import time

    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    server.hold = threading.Event()
    cmd = [sys.executable, "-m", "aiidetect", "weights", "fetch", "--url", server.base + "/w/tiny.safetensors",
           "--sha256", sha, "--cache-dir", str(tmp_path), "--format", "json"]
    env = dict(os.environ, NO_PROXY="*", no_proxy="*")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    second = None
    try:
        part = tmp_path / "tiny.safetensors.partial"
        deadline = time.monotonic() + 60
        while not (server.requests and part.exists()):  # the first is in the middle of the file
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = second.stderr.readline()  # printed before it blocks; on EOF it did not wait
        server.hold.set()
        assert "another fetch is writing" in line and "waiting" in line, line
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    finally:
        server.hold.set()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert json.loads(out1)["sha256"] == sha and json.loads(out2)["sha256"] == sha
    assert len(server.requests) == 1  # the second did not download again
    assert (tmp_path / "tiny.safetensors").read_bytes() == checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


def test_a_server_that_drips_is_dropped(server, checkpoint, tmp_path):
    """A byte every 50 ms never trips a socket timeout: the fetch waited on it forever (this file
    would take hours). Slower than 8 KiB/s for --timeout seconds is a stalled connection: resumed
    three times, then one line and exit 2, the bytes so far kept for a later run."""
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.drip["/w/tiny.safetensors"] = checkpoint
    r = run_cli("weights", "fetch", "--url", server.base + "/w/tiny.safetensors", "--sha256", sha,
                "--cache-dir", str(tmp_path), "--timeout", "1", env={"NO_PROXY": "*", "no_proxy": "*"}, timeout=60)
    _one_error_line(r, "less than 8 KiB/s for 1 s, 4 times", "partial download kept")
    assert len(server.requests) == 4
    assert not (tmp_path / "tiny.safetensors").exists()
    assert 0 < (tmp_path / "tiny.safetensors.partial").stat().st_size < len(checkpoint)
    for bad in ("0", "inf", "nan"):  # inf reached the crash handler (a socket timeout past time_t)
        r = _fetch(server, tmp_path, "--url", server.base + "/w/tiny.safetensors", "--sha256", sha, "--timeout", bad)
        assert r.returncode == 2 and "--timeout" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(server.requests) == 4


# --------------------------------------------------------------------------
# Registry resolution (no network)
# --------------------------------------------------------------------------
def test_openai_tag_resolves_to_the_url_with_its_sha(tmp_path):
    from aiidetect.fetch import plan_fetch

    p = plan_fetch("ViT-L-14/openai", cache_dir=tmp_path)
    assert p.url == ("https://openaipublic.azureedge.net/clip/models/"
                     "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt")
    assert p.sha256 == "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
    assert p.dest == tmp_path / "ViT-L-14.pt"  # the name scan looks for
    m = plan_fetch("ViT-B-16/openai", cache_dir=tmp_path, mirror="http://mirror.local/clip")
    assert m.url.startswith("http://mirror.local/clip/openaipublic.azureedge.net/clip/models/5806e77c")
    assert m.sha256.startswith("5806e77c") and m.dest.name == "ViT-B-16.pt"


def test_hub_tags_resolve_to_the_hub_file(tmp_path, monkeypatch):
    from aiidetect.fetch import plan_fetch

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    p = plan_fetch("ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)
    assert p.url == ("https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/"
                     "open_clip_model.safetensors")
    assert p.hub and p.sha256 is None  # taken from the hub's X-Linked-Etag at download time
    assert p.dest == tmp_path / "laion--CLIP-ViT-B-32-laion2B-s34B-b79K--open_clip_model.safetensors"
    h = plan_fetch("ViT-L-14/openai", cache_dir=tmp_path, prefer="hub", mirror="http://m.local")
    assert h.url == ("http://m.local/huggingface.co/timm/vit_large_patch14_clip_224.openai/resolve/main/"
                     "open_clip_model.safetensors")
    r = plan_fetch("ViT-B-32/laion400m_e32", cache_dir=tmp_path)
    assert r.url.startswith("https://github.com/mlfoundations/") and r.sha256_prefix and len(r.sha256_prefix) == 8


def test_registry_read_without_importing_open_clip_matches_open_clip():
    from aiidetect.backbone import import_open_clip
    from aiidetect.clip_registry import lookup

    oc = import_open_clip()
    for model, tag in oc.list_pretrained():
        cfg = oc.get_pretrained_cfg(model, tag)
        got = lookup(model, tag)
        assert got is not None, (model, tag)
        assert (got["url"], got["hf_hub"], got["quick_gelu"]) == (cfg.get("url") or "", cfg.get("hf_hub") or "",
                                                                  bool(cfg.get("quick_gelu"))), (model, tag)


def test_bad_specs_are_usage_errors(tmp_path):
    from aiidetect.fetch import FetchError, plan_fetch

    for spec, kw in (("NoSuchModel/openai", {}), ("ViT-L-14/no-such-tag", {}), ("ViT-L-14", {}), (None, {}),
                     (None, {"url": "file:///etc/passwd", "sha256": "0" * 64}),
                     (None, {"url": "http://127.0.0.1:9/x.pt", "sha256": "xyz"}),
                     (None, {"url": "http://127.0.0.1:9/", "sha256": "0" * 64}),
                     ("ViT-L-14/openai", {"sha256": "1" * 64})):
        with pytest.raises(FetchError):
            plan_fetch(spec, cache_dir=tmp_path, **kw)
    for args in (["ViT-L-14"], ["--url", "file:///etc/passwd", "--sha256", "0" * 64]):
        r = run_cli("weights", "fetch", *args, "--cache-dir", str(tmp_path))
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_verified_file_already_in_place_is_not_downloaded_again(server, checkpoint, tmp_path):
    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    args = ("--url", server.base + "/w/tiny.safetensors", "--sha256", sha, "--format", "json")
    assert _fetch(server, tmp_path, *args).returncode == 0
    r = _fetch(server, tmp_path, *args)
    assert r.returncode == 0 and json.loads(r.stdout)["sha256"] == sha
    assert len(server.requests) == 1


def test_scan_finds_what_fetch_stores(checkpoint, tmp_path):
    """The file name fetch writes for a hub entry is one scan's lookup finds, and without it
    the precheck says "unavailable" with the fetch command (before importing torch)."""
    from aiidetect.backbone import BackboneSpec, BackboneUnavailable, precheck, pretrained_candidates
    from aiidetect.clip_registry import lookup
    from aiidetect.fetch import plan_fetch

    spec = BackboneSpec(model="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path))
    with pytest.raises(BackboneUnavailable, match="aiidetect weights fetch ViT-B-32/laion2b_s34b_b79k"):
        precheck(spec)
    plan = plan_fetch("ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)
    plan.dest.write_bytes(checkpoint)
    precheck(spec)
    got = pretrained_candidates("ViT-B-32", "laion2b_s34b_b79k", lookup("ViT-B-32", "laion2b_s34b_b79k"), [tmp_path],
                                hub_cache=False)
    assert got == [plan.dest]
    plan = plan_fetch("ViT-L-14/openai", cache_dir=tmp_path)
    assert pretrained_candidates("ViT-L-14", "openai", lookup("ViT-L-14", "openai"), [tmp_path], hub_cache=False) == []


def test_progress_bar_on_a_terminal(server, checkpoint, tmp_path):
    """stderr on a terminal: a progress bar (and still only the result on stdout)."""
    import os
    import pty
    import subprocess
    import sys

    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    master, slave = pty.openpty()
    env = dict(os.environ, NO_PROXY="*", no_proxy="*", COLUMNS="100")
    p = subprocess.Popen([sys.executable, "-m", "aiidetect", "weights", "fetch", "--url",
                          server.base + "/w/tiny.safetensors", "--sha256", sha, "--cache-dir", str(tmp_path),
                          "--format", "json"], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    out = p.communicate(timeout=120)[0]
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert p.returncode == 0, seen.decode(errors="replace")
    assert json.loads(out)["sha256"] == sha
    assert b"fetching tiny.safetensors" in seen


def test_a_wrong_file_in_place_is_hashed_once_then_replaced(server, checkpoint, tmp_path, monkeypatch):
    """A checkpoint in place with the wrong SHA-256 was read whole twice (before and after taking the
    partial's lock) before the download began: minutes for a multi-gigabyte file. Once now; a file put
    in place by another fetch meanwhile (another inode) is still checked."""
    from aiidetect import fetch

    sha = hashlib.sha256(checkpoint).hexdigest()
    server.files["/w/tiny.safetensors"] = checkpoint
    (tmp_path / "tiny.safetensors").write_bytes(b"not the checkpoint")
    hashed = []
    real = fetch._hash_file
    monkeypatch.setattr(fetch, "_hash_file", lambda path, h: hashed.append(path) or real(path, h))
    res = fetch.download(fetch.FetchPlan(url=server.base + "/w/tiny.safetensors", dest=tmp_path / "tiny.safetensors",
                                         sha256=sha))
    assert res["sha256"] == sha and (tmp_path / "tiny.safetensors").read_bytes() == checkpoint
    assert hashed == [tmp_path / "tiny.safetensors"]
    assert len(server.requests) == 1


def _fetch_from_a_dripping_socket(tmp_path, first: bytes, drip: bytes):
    """download() with one try and a 0.3 s timeout from a server that sends `first`, then `drip` every
    50 ms for ever: the FetchError, or None when the fetch was still waiting after 5 s."""
    import socket

    from aiidetect.fetch import FetchError, FetchPlan, download

    lsock = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        conn, _ = lsock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(first)
            try:
                while not stop.wait(0.05):
                    conn.sendall(drip)
            except OSError:
                pass  # the client hung up: what the fix does

    threading.Thread(target=serve, daemon=True).start()
    plan = FetchPlan(url=f"http://127.0.0.1:{lsock.getsockname()[1]}/w/x.safetensors", dest=tmp_path / "x.safetensors",
                     sha256="0" * 64)
    outcome: list = []

    def run():
        try:
            outcome.append(download(plan, retries=0, timeout=0.3))
        except FetchError as exc:
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    stop.set()
    lsock.close()
    assert not plan.dest.exists()
    return outcome[0] if outcome else None


def test_a_server_that_drips_its_headers_is_dropped(tmp_path):
    """The body's rate check starts after the headers, and the socket timeout only catches silence: a
    server that sent one header byte at a time held the fetch for days whatever --timeout said. The
    headers must arrive within the timeout."""
    err = _fetch_from_a_dripping_socket(tmp_path, b"HTTP/1.1 200 OK\r\n", b"X")  # a header line never ending
    assert err is not None, "the fetch was still waiting for the headers after 5 s with --timeout 0.3"
    assert "headers did not arrive within 0.3 s" in str(err)


def test_a_chunked_body_that_drips_its_chunk_size_is_dropped(tmp_path):
    """read1 returns what has arrived, except where http.client reads a whole line first: a chunk-size
    line sent a byte at a time kept read1 from returning, so the rate check never ran."""
    err = _fetch_from_a_dripping_socket(tmp_path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"0")
    assert err is not None, "the fetch was still waiting on the chunk-size line after 5 s with --timeout 0.3"
    assert "a read of the body waited more than 0.3 s" in str(err)


def test_an_unverifiable_download_that_is_no_checkpoint_is_refused(server, checkpoint, tmp_path):
    """A hub file whose server (a mirror, a proxy's sign-in page) sends no X-Linked-Etag has nothing to be
    checked against: an HTML page answered with 200, or a checkpoint cut short, was installed as the
    backbone with exit 0. A whole checkpoint without a checksum is still installed, marked unverified."""
    from aiidetect.fetch import FetchError, FetchPlan, download

    path = "/repo/resolve/main/open_clip_model.safetensors"
    plan = FetchPlan(url=server.base + path, dest=tmp_path / "x.safetensors", hub=True)
    for body, why in ((b"<html><body>Sign in to continue</body></html>", "not a checkpoint"),
                      (checkpoint[: len(checkpoint) - 1000], "whose header describes")):
        server.files[path] = body
        with pytest.raises(FetchError, match=why):
            download(plan, retries=0)
        assert not plan.dest.exists() and not (tmp_path / "x.safetensors.partial").exists()
    server.files[path] = checkpoint
    res = download(plan, retries=0)
    assert res["verified"] == "none" and plan.dest.read_bytes() == checkpoint


@pytest.mark.parametrize("chunked", [False, True])
def test_a_slow_but_alive_download_is_not_dropped(tmp_path, chunked):
    """The per-read and header deadlines must not fail a download that keeps coming: 1 MB in 8 KiB
    pieces, with pauses shorter than --timeout, over a body with and without Content-Length, completes in
    one try (as 900 MB on a slow link does with the default 60 s)."""
    import socket

    from aiidetect.fetch import FetchPlan, download

    body = bytes(range(256)) * 4096
    lsock = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = lsock.accept()
        with conn:
            conn.recv(65536)
            framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\nConnection: close\r\n\r\n")
            for i in range(0, len(body), 8192):
                piece = body[i:i + 8192]
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                time.sleep(0.25 if i % (256 << 10) == 0 else 0.002)
            if chunked:
                conn.sendall(b"0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    plan = FetchPlan(url=f"http://127.0.0.1:{lsock.getsockname()[1]}/w/x.safetensors", dest=tmp_path / "x.bin",
                     sha256=hashlib.sha256(body).hexdigest())
    try:
        res = download(plan, retries=0, timeout=0.4)
    finally:
        lsock.close()
    assert res["bytes"] == len(body) and not res["resumed"] and plan.dest.read_bytes() == body


# torch.save({"visual.proj": torch.randn(2, 3), "h": torch.randn(3).half(), "n": torch.arange(2)}, f,
# _use_new_zipfile_serialization=False) (torch 2.13): five pickles, then the storages n (int64 x2), h (half x3) and
# visual.proj (float32 x6), each an 8-byte element count and its bytes. Written out so the test needs no torch.
_LEGACY_TORCH = (
    "gAKKCmz8nEb5IGqoUBkugAJN6QMugAJ9cQAoWBAAAABwcm90b2NvbF92ZXJzaW9ucQFN6QNYDQAAAGxpdHRsZV9lbmRpYW5xAohYCgAAAHR5"
    "cGVfc2l6ZXNxA31xBChYBQAAAHNob3J0cQVLAlgDAAAAaW50cQZLBFgEAAAAbG9uZ3EHSwR1dS6AAn1xAChYCwAAAHZpc3VhbC5wcm9qcQFj"
    "dG9yY2guX3V0aWxzCl9yZWJ1aWxkX3RlbnNvcl92MgpxAigoWAcAAABzdG9yYWdlcQNjdG9yY2gKRmxvYXRTdG9yYWdlCnEEWA4AAAA5NDgx"
    "MTA1ODA3MDM4NHEFWAMAAABjcHVxBksGTnRxB1FLAEsCSwOGcQhLA0sBhnEJiWNjb2xsZWN0aW9ucwpPcmRlcmVkRGljdApxCilScQt0cQxS"
    "cQ1YAQAAAGhxDmgCKChoA2N0b3JjaApIYWxmU3RvcmFnZQpxD1gOAAAAOTQ4MTEwNTc0ODI5MjhxEGgGSwNOdHERUUsASwOFcRJLAYVxE4lo"
    "CilScRR0cRVScRZYAQAAAG5xF2gCKChoA2N0b3JjaApMb25nU3RvcmFnZQpxGFgOAAAAOTQ4MTEwNTc0ODI0ODBxGWgGSwJOdHEaUUsASwKF"
    "cRtLAYVxHIloCilScR10cR5ScR91LoACXXEAKFgOAAAAOTQ4MTEwNTc0ODI0ODBxAVgOAAAAOTQ4MTEwNTc0ODI5MjhxAlgOAAAAOTQ4MTEw"
    "NTgwNzAzODRxA2UuAgAAAAAAAAAAAAAAAAAAAAEAAAAAAAAAAwAAAAAAAAB0NrQ6wbkGAAAAAAAAAFw/xT9QPJa+SXELwLaEET+h0Yq/LQWz"
    "vw==")


def test_an_unverifiable_legacy_torch_pickle_cut_short_is_refused(server, tmp_path):
    """A legacy (non-zip) torch.save file is pickles and then the storages' bytes: cut short anywhere, it still
    began with a pickle's first byte, and with no checksum to check it was installed as the checkpoint, exit 0.
    Its pickles must be whole and its storages as long as its tensors declare, ending at the file's end."""
    import base64

    from aiidetect.fetch import FetchError, FetchPlan, download

    whole = base64.b64decode(_LEGACY_TORCH)
    path = "/repo/resolve/main/open_clip_pytorch_model.bin"
    plan = FetchPlan(url=server.base + path, dest=tmp_path / "x.bin", hub=True)
    # inside the last storage, the last storage's count with none of its bytes, inside the object's pickle,
    # a byte too many
    for body in (whole[:-7], whole[:-24], whole[:200], whole + b"\0"):
        server.files[path] = body
        with pytest.raises(FetchError, match="torch checkpoint"):
            download(plan, retries=0)
        assert not plan.dest.exists() and not (tmp_path / "x.bin.partial").exists()
    server.files[path] = whole
    res = download(plan, retries=0)
    assert res["verified"] == "none" and plan.dest.read_bytes() == whole


def test_legacy_torch_pickles_of_every_layout_pass_the_check_and_cut_short_fail(tmp_path):
    """model.state_dict() is an OrderedDict: its pickle fills one by SETITEMS, and the placeholder the check
    built for it took no items, so the commonest checkpoint there is was refused as damaged and deleted."""
    torch = pytest.importorskip("torch")
    import collections

    from aiidetect.fetch import _legacy_torch_problem

    base = torch.arange(12, dtype=torch.float32)
    layouts = {
        "state_dict": torch.nn.Linear(3, 2).state_dict(),
        "ordered": collections.OrderedDict(a=torch.randn(2), b=torch.randn(2, 2)),
        "defaultdict": collections.defaultdict(list, a=[torch.ones(2)]),
        "nested": {"model": {"w": torch.randn(2, 2)}, "l": [torch.ones(3), (torch.ones(1),)], "epoch": 3},
        "shared_and_views": {"a": base, "b": base.view(3, 4), "c": base[2:7], "d": base[5:].t()},
        "dtypes": {"h": torch.randn(3).half(), "bf": torch.randn(3).bfloat16(), "i8": torch.ones(2, dtype=torch.int8),
                   "b": torch.tensor([True, False, True]), "c": torch.randn(2, dtype=torch.complex64)},
        "empty": {"e": torch.empty(0), "z": torch.zeros(0, 5), "past_end": torch.randn(4)[4:]},
        "module": torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()),
    }
    for name, obj in layouts.items():
        for proto in (2, 4):
            p = tmp_path / f"{name}{proto}.pt"
            with open(p, "wb") as f:
                torch.save(obj, f, _use_new_zipfile_serialization=False, pickle_protocol=proto)
            assert _legacy_torch_problem(p) is None, (name, proto, _legacy_torch_problem(p))
            p.write_bytes(p.read_bytes()[:-1])
            assert "torch checkpoint" in (_legacy_torch_problem(p) or ""), (name, proto)


def test_a_hostile_legacy_pickle_is_read_in_bounded_memory(tmp_path, monkeypatch):
    """Under the 32 MB cap on its pickles, a 'legacy torch' file still held 3 GB: a BYTEARRAY8 opcode's declared
    length was allocated before a byte was read (a 60-byte file), a class was made for each distinct global name
    (8 GB, a minute, for 32 MB of them), and any one-byte opcode that pushes a dict or opens a MARK left 64 bytes
    or more (2 GB)."""
    import pickle
    import struct
    import tracemalloc

    import aiidetect.fetch as fetch

    head = b"".join(pickle.dumps(x, 2) for x in (0x1950A86A20F9469CFC6C, 1001, {}))
    names = b"".join(b"ca\n%x\n" % i for i in range(80_000))
    bodies = {"bytearray8": b"\x80\x05\x96" + struct.pack("<Q", 200 << 20) + b"x.",
              "a class per name": b"\x80\x02" + names + b".",
              "dicts": b"\x80\x02" + b"}" * 1_000_000 + b"."}
    for what, body in bodies.items():
        p = tmp_path / "x.pt"
        p.write_bytes(head + body + pickle.dumps([], 2))
        with monkeypatch.context() as m:
            if what == "dicts":   # the opcode budget, scaled to the file
                m.setattr(fetch, "_LEGACY_OPCODES", 50_000, raising=False)
            tracemalloc.start()
            try:
                fetch._legacy_torch_problem(p)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert peak < 16 << 20, (what, peak)
