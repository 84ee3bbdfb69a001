"""`aiidetect weights fetch`: the only code in aiidetect that uses the network,
and only when the user runs that command.

A fetch is planned first (`plan_fetch`: which URL, which expected SHA-256,
which file name, where it goes) without any network access, so the
resolution can be shown and tested offline. `download` then streams the file
into ``<dest>.partial``, resumes it with an HTTP Range request when the
connection drops (in the same run or the next one), verifies the SHA-256 and
only then renames it into place, so scan never sees half a checkpoint.

Where checksums come from: OpenAI's URLs carry the file's SHA-256 as a path
segment; open_clip's GitHub release file names end in its first 8 hex digits
(checked as a prefix, as open_clip does); the Hugging Face hub publishes the
SHA-256 of large files in the ``X-Linked-Etag`` header; ``--sha256`` gives it
for any URL. A mismatch deletes the download (exit 2).
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

try:
    import fcntl
except ImportError:  # not POSIX: fetch unguarded, as before the lock
    fcntl = None  # type: ignore[assignment]

HF_ENDPOINT = "https://huggingface.co"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
# Without a Content-Length nothing else bounds a hostile server; no CLIP checkpoint is this big.
MAX_BYTES = 64 << 30
# Slower than this for a whole `timeout` window is a stalled connection: dropped, then resumed.
# At this floor the largest open_clip checkpoint (about 20 GB) would still end in under a month;
# the default one (890 MB) in 30 hours.
MIN_RATE = 8 << 10
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


class FetchError(RuntimeError):
    """A fetch that cannot be done or was refused; the message says why."""


def hub_filenames() -> tuple[str, ...]:
    """The files open_clip reads from a hub repo, preferred first (open_clip.constants)."""
    return ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def hub_local_name(repo: str, filename: str) -> str:
    """Where `weights fetch` keeps a hub file inside the CLIP cache folder."""
    return repo.strip("/").replace("/", "--") + "--" + filename


def clip_cache_dir() -> Path:
    from .clip_env import default_cache_dirs

    dirs = default_cache_dirs()
    if not dirs:
        from .userdirs import NO_HOME

        raise OSError(f"no folder for downloaded backbones: {NO_HOME}; set AIIDETECT_CLIP_CACHE to a folder of yours")
    return dirs[0]


@dataclass
class FetchPlan:
    url: str
    dest: Path
    sha256: str | None = None         # full expected SHA-256, when published
    sha256_prefix: str | None = None  # open_clip release files: first hex digits only
    hub: bool = False                 # take the SHA-256 from the hub's X-Linked-Etag header
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "dest": str(self.dest), "sha256": self.sha256, "sha256_prefix": self.sha256_prefix,
                "hub": self.hub, "source": self.source}


def mirrored(url: str, mirror: str | None) -> str:
    """A mirror serves https://HOST/PATH at MIRROR/HOST/PATH (one prefix for every source)."""
    if not mirror:
        return url
    u = urllib.parse.urlsplit(url)
    return mirror.rstrip("/") + "/" + u.netloc + u.path + (("?" + u.query) if u.query else "")


def _safe_name(name: str) -> str:
    name = urllib.parse.unquote(name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise FetchError(f"cannot use {name!r} as a file name; pass a URL ending in a file name")
    return name


def published_sha256(url: str) -> tuple[str | None, str | None]:
    """(full sha256, prefix) the URL itself publishes, as open_clip reads them."""
    parts = urllib.parse.urlsplit(url).path.split("/")
    if len(parts) >= 2 and _HEX64.match(parts[-2].lower()):
        return parts[-2].lower(), None
    if "mlfoundations" in url:
        stem = os.path.splitext(parts[-1])[0]
        tail = stem.rsplit("-", 1)[-1].lower()
        if len(tail) == 8 and all(c in "0123456789abcdef" for c in tail):
            return None, tail
    return None, None


def plan_fetch(spec: str | None = None, url: str | None = None, sha256: str | None = None,
               mirror: str | None = None, cache_dir: str | Path | None = None,
               prefer: str = "url") -> FetchPlan:
    """Resolve what `weights fetch` would download, without touching the network.

    spec is an open_clip "MODEL/TAG" (also "MODEL:TAG"); url + sha256 name any
    checkpoint. prefer="hub" takes the Hugging Face file when the tag has both.
    """
    try:
        dest_dir = Path(cache_dir) if cache_dir else clip_cache_dir()
    except OSError as exc:
        raise FetchError(f"{exc} (or pass --cache-dir)") from exc
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not _HEX64.match(sha256):
            raise FetchError("--sha256 takes 64 hexadecimal digits")
    if url:
        if spec:
            raise FetchError("give either a MODEL/TAG or --url, not both")
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise FetchError(f"--url must be http(s); got {url!r}")
        pub, prefix = published_sha256(url)
        if sha256 is None and pub is None:
            raise FetchError("--url needs --sha256 HEX (the URL publishes no checksum; aiidetect installs no "
                             "unverified weights)")
        if sha256 and pub and sha256 != pub:
            raise FetchError(f"--sha256 {sha256} differs from the SHA-256 in the URL ({pub})")
        name = _safe_name(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        return FetchPlan(url=mirrored(url, mirror), dest=dest_dir / name, sha256=sha256 or pub,
                         sha256_prefix=prefix, source="url")
    if not spec:
        raise FetchError("give a MODEL/TAG (e.g. ViT-L-14/openai) or --url URL --sha256 HEX")
    model, sep, tag = spec.replace(":", "/").partition("/")
    if not sep or not model or not tag:
        raise FetchError(f"{spec!r} is not MODEL/TAG (e.g. ViT-L-14/openai)")
    from .clip_registry import lookup_with_import

    try:
        entry = lookup_with_import(model, tag)
    except ImportError as exc:
        raise FetchError(f"cannot read open_clip's model registry ({exc}); install the clip extra: "
                         'pip install "aiidetect[clip]", or use --url URL --sha256 HEX') from exc
    if not entry:
        raise FetchError(f"open_clip knows no pretrained weights {model}/{tag}")
    reg_url, hub = entry.get("url") or "", (entry.get("hf_hub") or "").strip("/")
    if reg_url and not (prefer == "hub" and hub):
        pub, prefix = published_sha256(reg_url)
        if sha256 and pub and sha256 != pub:
            raise FetchError(f"--sha256 {sha256} differs from the registry's ({pub})")
        return FetchPlan(url=mirrored(reg_url, mirror), dest=dest_dir / _safe_name(reg_url.rsplit("/", 1)[-1]),
                         sha256=sha256 or pub, sha256_prefix=prefix, source=f"open_clip {model}/{tag}")
    if hub:
        fname = hub_filenames()[0]
        endpoint = os.environ.get("HF_ENDPOINT") or HF_ENDPOINT
        hub_url = f"{endpoint.rstrip('/')}/{hub}/resolve/main/{fname}"
        return FetchPlan(url=mirrored(hub_url, mirror), dest=dest_dir / hub_local_name(hub, fname),
                         sha256=sha256, hub=True, source=f"open_clip {model}/{tag} (Hugging Face {hub})")
    raise FetchError(f"open_clip lists no download for {model}/{tag}")


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def _hash_file(path: Path, h) -> int:
    n = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            n += len(chunk)
    return n


def _hash_fd(fd: int, h) -> int:
    n = 0
    while True:
        chunk = os.pread(fd, _CHUNK, n)
        if not chunk:
            return n
        h.update(chunk)
        n += len(chunk)


def _etag_sha256(headers) -> str | None:
    for key in ("X-Linked-Etag", "ETag"):
        v = (headers.get(key) or "").strip().strip('"').lower()
        if v.startswith("w/"):
            continue
        if _HEX64.match(v):
            return v
    return None


class _HeaderDeadline:
    """The status line and headers must all arrive within the connection's timeout. The socket timeout
    only catches silence, and the body's rate check starts after the headers: a server that sent a
    header byte every few seconds (a line may be 64 KiB, and there may be 100) held the fetch for days
    whatever --timeout said. When the time is up the socket is shut down, the read fails, and the
    try counts as a dropped connection."""

    expired = False

    def getresponse(self):
        import threading

        timer = threading.Timer(self.timeout, self._expire) if _finite_timeout(self.timeout) else None
        if timer:
            timer.daemon = True
            timer.start()
        why = f"the server's headers did not arrive within {self.timeout:g} s"
        try:
            resp = super().getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if self.expired:
                raise TimeoutError(why) from exc
            raise
        finally:
            if timer:
                timer.cancel()
        if self.expired:  # the shutdown ended the headers early: what was read is not the answer
            resp.close()
            raise TimeoutError(why)
        resp.aiidetect_sock = self.sock  # for _ReadWatch: urllib drops the connection's reference next
        return resp

    def _expire(self) -> None:
        self.expired = True
        sock = self.sock
        if sock is not None:
            try:
                import socket

                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the fd itself, under any TLS layer
            except OSError:
                pass


class _ReadWatch:
    """Shuts the socket down when one read of the body has waited longer than `timeout`. read1 returns
    what has arrived, so the rate check below sees a slow body, except where http.client reads a whole
    line first: a chunked body whose chunk-size line came a byte at a time held the fetch for days."""

    def __init__(self, sock, timeout: float):
        import threading

        self.sock, self.timeout = sock, timeout
        self.since: float | None = None  # when the pending read began; None between reads
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import socket

        while not self._stop.wait(min(self.timeout / 4, 1.0)):
            since = self.since
            if since is not None and time.monotonic() - since > self.timeout:
                self.fired = True
                try:
                    socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
                except OSError:
                    pass
                return

    def stop(self) -> None:
        self._stop.set()


def _finite_timeout(t) -> bool:
    return isinstance(t, (int, float)) and 0 < t < float("inf")


class _DeadlineHTTPConnection(_HeaderDeadline, http.client.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_HeaderDeadline, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_DeadlineHTTPConnection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        kw = {"context": self._context}
        if getattr(self, "_check_hostname", None) is not None:  # Python 3.11's handler still passes it on
            kw["check_hostname"] = self._check_hostname
        return self.do_open(_DeadlineHTTPSConnection, req, **kw)


def _opener(*handlers):
    return urllib.request.build_opener(_DeadlineHTTPHandler, _DeadlineHTTPSHandler, *handlers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """urllib follows a redirect to ftp:// too: a server could send the fetch to any FTP
    host (an internal one, or a port that never answers). Only http(s) is followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise FetchError(f"{req.full_url}: the server redirects to {newurl!r}; only http(s) redirects are "
                             "followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a 206's Content-Range ("bytes 1000-1999/2000"); None when absent or unreadable."""
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", content_range or "")
    return int(m.group(1)) if m else None


def _one_line(x) -> str:
    """A server's reason phrase or an exception text, on one line (stderr says one line per error)."""
    return " ".join(str(x).split())


def _kept(part: Path) -> str:
    if part.is_file() and part.stat().st_size:
        return f" (partial download kept in {part}; run the same command again to resume)"
    return ""


def _hub_sha256(url: str, timeout: float) -> str | None:
    """The hub answers a file URL with a redirect to its CDN whose headers carry the
    file's SHA-256 (X-Linked-Etag, as huggingface_hub reads it); the CDN's own response
    does not. Ask without following the redirect."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "aiidetect-weights-fetch"})
    try:
        resp = _opener(_NoRedirect).open(req, timeout=timeout)
        headers = resp.headers
        resp.close()
    except urllib.error.HTTPError as exc:
        headers = exc.headers
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None  # the GET that follows says what is wrong with this server
    return _etag_sha256(headers) if headers is not None else None


def _already_present(plan: FetchPlan, failed: set | None = None) -> dict[str, Any] | None:
    """The result for a file in place with the expected SHA-256, or None. `failed` holds the identities
    (inode, size, mtime) of files that did not match: the same file is not read again (a wrong
    checkpoint of gigabytes was hashed twice, before and after taking the lock, then downloaded)."""
    if plan.sha256 and plan.dest.is_file():
        st = plan.dest.stat()
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if failed is not None and key in failed:
            return None
        h = hashlib.sha256()
        n = _hash_file(plan.dest, h)
        if h.hexdigest() == plan.sha256:
            return {"path": str(plan.dest), "sha256": plan.sha256, "bytes": n, "resumed": False,
                    "verified": "sha256", "already_present": True}
        if failed is not None:
            failed.add(key)
    return None


def _lock_partial(part: Path, on_wait: Callable[[str], None] | None) -> int | None:
    """Open <dest>.partial for this process alone: an fd holding an exclusive lock on the file
    the path names, or None when another fetch renamed or deleted it while this one waited.

    Two fetches of the same file wrote one partial at once (one appending, one truncating) and
    both failed, or one truncated a file the other had just renamed into place. A symbolic link
    at the partial's path is removed, never written through: it wrote the download over the
    file it pointed to, outside the cache."""
    while True:
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_BINARY", 0), 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            part.unlink()
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FetchError(f"{part} is not a regular file; remove it and run the command again")
            if fcntl is None:
                return fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait(f"another fetch is writing {part}; waiting for it to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in _NO_LOCKS:
                    raise
                return fd  # a file system without locks (some network mounts): fetch as before, unguarded
            try:
                if os.path.samestat(os.fstat(fd), os.lstat(part)):
                    return fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None


def download(plan: FetchPlan, progress: Callable[[int, int | None], None] | None = None,
             retries: int = 3, timeout: float = 60.0, opener=None,
             on_wait: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fetch plan.url to plan.dest: resume, verify, rename. Returns {path, sha256, bytes,
    resumed, verified}. Raises FetchError (nothing usable left behind) on any refusal.
    timeout: seconds of silence, or of less than MIN_RATE bytes a second, after which a
    connection is dropped and resumed (retries times, then FetchError). A second fetch of the
    same file waits for the first (on_wait says so), then finds it."""
    plan.dest.parent.mkdir(parents=True, exist_ok=True)
    if plan.dest.exists() and not plan.dest.is_file():
        # Found only at the final rename: the whole download was wasted, and every later run
        # downloaded it again.
        raise FetchError(f"{plan.dest} exists and is not a file; move it away and run the command again")
    part = partial_path(plan.dest)
    failed: set = set()
    while True:
        res = _already_present(plan, failed)
        if res:
            return res
        fd = _lock_partial(part, on_wait)
        if fd is not None:
            break
    try:
        # The first fetch may have finished while this one opened the partial.
        return _already_present(plan, failed) or _download_locked(plan, fd, part, progress, retries, timeout, opener)
    except BaseException:
        try:
            if os.fstat(fd).st_size == 0 and os.path.samestat(os.fstat(fd), os.lstat(part)):
                part.unlink()  # nothing to resume: leave no empty partial behind
        except OSError:
            pass
        raise
    finally:
        os.close(fd)


def _download_locked(plan: FetchPlan, fd: int, part: Path, progress, retries: int, timeout: float,
                     opener) -> dict[str, Any]:
    dest = plan.dest
    opener = opener or _opener(_HttpRedirectsOnly)
    expected = plan.sha256
    hub_sha = _hub_sha256(plan.url, timeout) if plan.hub and expected is None else None
    resumed = False
    attempt = 0
    content_type = ""
    while True:
        have = os.fstat(fd).st_size
        req = urllib.request.Request(plan.url, headers={"User-Agent": "aiidetect-weights-fetch"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            resp = opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                os.ftruncate(fd, 0)  # the partial is not a prefix of this file; start over
                attempt += 1
                if attempt > retries:
                    raise FetchError(f"{plan.url}: server refused the resume (HTTP 416)") from exc
                continue
            raise FetchError(f"{plan.url}: HTTP {exc.code} {_one_line(exc.reason)}") from exc
        except (http.client.HTTPException, ValueError) as exc:
            # Not HTTP (a garbage status line, endless headers) or a redirect to a URL that
            # cannot be parsed: no retry makes that a checkpoint.
            raise FetchError(f"{plan.url}: the server's answer is not usable HTTP ({type(exc).__name__}: "
                             f"{_one_line(exc)})") from exc
        except (urllib.error.URLError, OSError) as exc:
            attempt += 1
            if attempt > retries:
                raise FetchError(f"{plan.url}: {_one_line(getattr(exc, 'reason', exc))}{_kept(part)}") from exc
            time.sleep(min(2.0 * attempt, 10.0))
            continue
        with resp:
            status = getattr(resp, "status", 200)
            if have and status == 206:
                # The part sent may start elsewhere than asked (a cache that rounds ranges, one
                # that sends the whole file as 206): appended blindly it spoiled the file.
                start = _range_start(resp.headers.get("Content-Range"))
                if start is not None and start > have:  # a gap this partial cannot fill: start over
                    os.ftruncate(fd, 0)
                    attempt += 1
                    if attempt > retries:
                        raise FetchError(f"{plan.url}: the server answers a resume with bytes from {start}, "
                                         f"not {have}")
                    continue
                have = have if start is None else start
                resumed = have > 0
            else:
                have = 0
            os.ftruncate(fd, have)
            os.lseek(fd, have, os.SEEK_SET)
            if plan.hub and expected is None:
                expected = hub_sha or _etag_sha256(resp.headers)
            content_type = _one_line(resp.headers.get("Content-Type") or "")[:100]
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_BYTES:
                raise FetchError(f"{plan.url}: {total} bytes is more than any checkpoint aiidetect reads")
            got = have
            dropped, why = False, "connection dropped"
            window_start, window_bytes = time.monotonic(), 0
            sock = getattr(resp, "aiidetect_sock", None)
            watch = _ReadWatch(sock, timeout) if sock is not None and _finite_timeout(timeout) else None
            try:
                with open(fd, "wb", closefd=False) as out:
                    if progress:
                        progress(got, total)
                    while True:
                        try:
                            # read1: what has arrived, so a slow server is seen being slow
                            # (read(n) waits for n bytes however long they take).
                            if watch:
                                watch.since = time.monotonic()
                            chunk = resp.read1(_CHUNK)
                            if watch:
                                watch.since = None
                        except (OSError, http.client.HTTPException):
                            dropped = True  # the connection went away mid-body: resume below
                            break
                        if not chunk:
                            break
                        out.write(chunk)
                        got += len(chunk)
                        if got > MAX_BYTES or (total is not None and got > total):
                            raise FetchError(f"{plan.url}: the server sent more bytes than it announced")
                        if progress:
                            progress(got, total)
                        # The socket timeout only catches silence: a server that drips a byte
                        # now and then would hold the fetch forever. Each `timeout` seconds must
                        # bring MIN_RATE bytes a second, or the connection is dropped and resumed.
                        window_bytes += len(chunk)
                        now = time.monotonic()
                        if now - window_start >= timeout:
                            if window_bytes < MIN_RATE * timeout:
                                dropped = True
                                why = f"the server sent less than {MIN_RATE // 1024} KiB/s for {timeout:g} s"
                                break
                            window_start, window_bytes = now, 0
                    out.flush()
                    os.fsync(fd)
            except FetchError:
                part.unlink(missing_ok=True)
                raise
            except OSError as exc:
                if exc.errno not in _DISK_FULL:
                    raise
                # Kept, the partial would hold the disk full after the exit (a body without
                # Content-Length grows until the disk is full), failing whatever runs next.
                part.unlink(missing_ok=True)
                raise FetchError(f"cannot write {part}: {exc.strerror} after {got} bytes; the partial download was "
                                 "deleted to free the space") from exc
            finally:
                if watch:
                    watch.stop()
            if watch and watch.fired:
                # the shutdown ends the body as if complete (a chunked one without its last chunk)
                dropped, why = True, f"a read of the body waited more than {timeout:g} s"
        if dropped or (total is not None and got < total):
            attempt += 1
            if attempt > retries:
                raise FetchError(f"{plan.url}: {why}, {retries + 1} times{_kept(part)}")
            continue
        break
    h = hashlib.sha256()
    size = _hash_fd(fd, h)
    digest = h.hexdigest()
    if expected and digest != expected:
        part.unlink(missing_ok=True)
        raise FetchError(f"{plan.url}: SHA-256 {digest} does not match the published {expected}; "
                         "the download was deleted")
    if plan.sha256_prefix and not digest.startswith(plan.sha256_prefix):
        part.unlink(missing_ok=True)
        raise FetchError(f"{plan.url}: SHA-256 {digest} does not start with the published {plan.sha256_prefix}; "
                         "the download was deleted")
    if not expected and not plan.sha256_prefix:
        # Nothing vouches for these bytes: a mirror or proxy that drops the hub's X-Linked-Etag and answers
        # with a sign-in page (HTTP 200) had it installed as the checkpoint, exit 0.
        problem = _not_a_checkpoint(part)
        if problem:
            part.unlink(missing_ok=True)
            sent = f" ({content_type})" if content_type else ""
            raise FetchError(f"{plan.url}: the server sent{sent} {problem}, and no checksum to verify it; "
                             "the download was deleted")
    os.replace(part, dest)
    verified = "sha256" if expected else ("sha256-prefix" if plan.sha256_prefix else "none")
    return {"path": str(dest), "sha256": digest, "bytes": size, "resumed": resumed, "verified": verified}


def _not_a_checkpoint(path: Path) -> str | None:
    """What the file is instead of a whole checkpoint, or None: its format (weights_identity.detect_format,
    as every loader reads it first), a safetensors file whose header does not cover the file exactly (cut
    short), a zip whose directory cannot be read. Without torch or safetensors: fetch stays light."""
    import json
    import struct
    import zipfile

    from .weights_identity import WeightsFormatError, detect_format

    try:
        fmt = detect_format(path)
        if fmt == "safetensors":
            size = path.stat().st_size
            with open(path, "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                if n > size - 8:
                    return "a safetensors file cut short (its header runs past the end)"
                header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + n + end != size:
                return f"a safetensors file of {size} bytes whose header describes {8 + n + end}"
        elif fmt in ("torch", "torchscript") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                z.namelist()
        elif fmt == "torch":
            return _legacy_torch_problem(path)
    except WeightsFormatError:
        return "a file that is not a checkpoint (not safetensors, torch or TorchScript)"
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, zipfile.BadZipFile,
            struct.error) as exc:
        return f"a damaged checkpoint ({type(exc).__name__}: {_one_line(exc)})"
    return None


# torch.save(..., _use_new_zipfile_serialization=False): five pickles (this magic number, the protocol version,
# the writer's sys_info, the object whose tensors name their storages by key, the keys in the order written),
# then each storage as its element count (8 bytes, little-endian) and its bytes. Bytes per element by the
# storage class the object's persistent ids name (torch/storage.py).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_LEGACY_ITEM_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
                      "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
                      "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8, "QUInt8Storage": 1,
                      "QInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1,
                      "UntypedStorage": 1}
# The pickles are read by a Python unpickler that builds nothing but placeholders; past this many bytes of them
# (a state dict's are tens of KB, a whole pickled model's a few MB) the layout is not checked, rather than
# letting an unverified file build an unbounded structure.
_LEGACY_PICKLE_CAP = 32 << 20
# Each opcode can leave an object of 50 to 1,000 bytes for one byte of the file (an empty dict, a MARK's list, a
# class per distinct name): 32 MB of them held 2 to 8 GB for a minute. A state dict's pickles take some 20 per
# tensor, a whole pickled model's a few hundred thousand; past this many the layout is not checked either.
_LEGACY_OPCODES = 4_000_000


class _Stub:
    """Whatever a legacy pickle names (a storage class, _rebuild_tensor_v2, OrderedDict, a module class) or
    builds: a placeholder, so reading the layout runs no code of the file's. It takes, and drops, the items a
    pickle gives the containers it builds (SETITEMS, APPENDS, ADDITEMS): a state dict is an OrderedDict, and
    model.state_dict()'s, refused as damaged, is the commonest checkpoint there is."""
    name = ""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


# One placeholder class per storage kind the check sizes (their names are what it reads); every other name a
# pickle gives, one shared placeholder: a class made per name let a file make millions.
_STORAGE_STUBS = {n: type(n, (_Stub,), {"name": n}) for n in _LEGACY_ITEM_BYTES}


class _CappedReader:
    def __init__(self, f, cap: int):
        self.f, self.left = f, cap

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise _TooBig
        return data

    def read(self, n: int = -1) -> bytes:
        # never more than the cap at once: a hostile length field must not allocate the whole file
        return self._take(self.f.read(min(n, self.left + 1) if n is not None and n >= 0 else self.left + 1))

    def readline(self) -> bytes:
        return self._take(self.f.readline(self.left + 1))


class _TooBig(Exception):
    pass


def _legacy_torch_problem(path: Path) -> str | None:
    """What is wrong with a legacy (non-zip) torch pickle, or None: it must hold its five pickles whole (a
    cut-short one lacks the STOP of the last it reaches) and then every storage its object names, each of the
    size that object declares, ending at the file's last byte. A file cut short between or inside the storages'
    bytes passed the check as any pickle did, and was installed, unverified, as the checkpoint."""
    import pickle

    size = path.stat().st_size
    numel: dict[str, int] = {}
    item: dict[str, int | None] = {}
    opcodes = [_LEGACY_OPCODES]

    class _Counted(dict):
        """The unpickler's dispatch table, counting the opcodes it hands out (all five pickles together)."""
        def __getitem__(self, op: int) -> Any:
            opcodes[0] -= 1
            if opcodes[0] < 0:
                raise _TooBig
            return dict.__getitem__(self, op)

    class Unpickler(pickle._Unpickler):  # noqa: SLF001 - the Python one: every global goes through find_class
        # Nothing is called, built or given state: a call (REDUCE, NEWOBJ, INST, OBJ) leaves a placeholder
        # (what a module's pickle calls need not be a class: copyreg._reconstructor's), BUILD drops the state.
        dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

        def load_reduce(self) -> None:
            self.stack.pop()
            self.stack[-1] = _Stub()

        def load_newobj(self) -> None:
            del self.stack[-2:]
            self.append(_Stub())

        def load_newobj_ex(self) -> None:
            del self.stack[-3:]
            self.append(_Stub())

        def load_build(self) -> None:
            self.stack.pop()

        def _instantiate(self, klass: Any, args: Any) -> None:
            self.append(_Stub())

        for _op, _fn in ((pickle.REDUCE, load_reduce), (pickle.NEWOBJ, load_newobj),
                         (pickle.NEWOBJ_EX, load_newobj_ex), (pickle.BUILD, load_build)):
            dispatch[_op[0]] = _fn

        def find_class(self, module: str, name: str) -> Any:
            return _STORAGE_STUBS.get(name, _Stub)

        def load_bytearray8(self) -> None:
            # pickle's own allocates the declared length before reading a byte of it: 3 GB for a 60-byte file
            n = int.from_bytes(self.read(8), "little")
            if n > _LEGACY_PICKLE_CAP:
                raise _TooBig
            data = self.read(n)
            if len(data) < n:
                raise pickle.UnpicklingError("pickle data was truncated")
            self.append(bytearray(data))

        dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
        dispatch = _Counted(dispatch)

        def persistent_load(self, pid: Any) -> Any:
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[2], str):
                kind = getattr(pid[1], "name", None)
                if isinstance(pid[4], int) and not isinstance(pid[4], bool):
                    numel.setdefault(pid[2], pid[4])
                item.setdefault(pid[2], _LEGACY_ITEM_BYTES.get(kind) if isinstance(kind, str) else None)
            return _Stub()

    try:
        with open(path, "rb") as raw:
            f = _CappedReader(raw, _LEGACY_PICKLE_CAP)
            if Unpickler(f).load() != _LEGACY_MAGIC:
                return "a pickle that is not a torch checkpoint (no torch magic number)"
            if Unpickler(f).load() != _LEGACY_PROTOCOL:
                return "a torch pickle of a protocol version torch does not read"
            Unpickler(f).load()   # sys_info
            Unpickler(f).load()   # the object
            keys = Unpickler(f).load()
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                return "a damaged torch checkpoint (its storage keys are not a list of names)"
            at = raw.tell()
            for k in keys:
                if item.get(k) is None or k not in numel:
                    return None   # a storage of a kind this check does not know: its size cannot be told
                raw.seek(at)
                head = raw.read(8)
                if len(head) < 8:
                    return (f"a torch checkpoint cut short ({size} bytes, ending before its storage {k!r}; "
                            f"{len(keys)} storages)")
                n = int.from_bytes(head, "little")
                if n != numel[k]:
                    return (f"a damaged torch checkpoint (storage {k!r} holds {n} elements where its tensor says "
                            f"{numel[k]})")
                at += 8 + n * item[k]
                if at > size:
                    return f"a torch checkpoint cut short ({size} bytes, where its storages end at byte {at} or later)"
    except _TooBig:
        return None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged or hostile pickle raises is a refusal
        return f"a torch checkpoint cut short or damaged ({type(exc).__name__}: {_one_line(exc)})"
    if at != size:
        return f"a torch checkpoint of {size} bytes whose storages end at byte {at}"
    return None


def terminal_progress(label: str):
    """A rich progress bar on stderr when it is a terminal; (None, None), i.e. silence, otherwise."""
    if not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    prog = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                    transient=True, console=Console(stderr=True))
    task = prog.add_task("fetch", total=None)

    def update(done: int, total: int | None) -> None:
        prog.update(task, completed=done, total=total)

    return prog, update
