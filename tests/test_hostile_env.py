"""A hostile environment rather than hostile files: files written to while the scan reads them, disks
that fill up under the outputs. Each change lands at a chosen step through a hook, never a race."""
from __future__ import annotations

import io
import os

from PIL import Image

from tests.conftest import jsonl, run_cli_in_process


def _bmp(colour) -> bytes:
    # Uncompressed: any mix of two versions still decodes, so only the read itself can catch it.
    b = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(b, "BMP")
    return b.getvalue()


def _rewritten_mid_read(monkeypatch, path, new: bytes) -> None:
    """The reader of `path` gets its first bytes, then the file is written over in place (same inode,
    as an editor saving or `cp` onto it does), then the reader gets the rest."""
    real = os.fdopen

    class Torn:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def read(self, n=-1):
            head = self.f.read(1000)
            with open(path, "r+b") as w:
                w.write(new)
            return head + self.f.read()

    def fdopen(fd, *a, **k):
        f = real(fd, *a, **k)
        try:
            here = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return f
        return Torn(f) if here == str(path) else f

    monkeypatch.setattr(os, "fdopen", fdopen)


def test_a_file_written_to_while_being_read_is_not_judged(tmp_path, monkeypatch):
    old, new = _bmp((255, 0, 0)), _bmp((0, 0, 255))
    p = tmp_path / "photo.bmp"
    p.write_bytes(old)
    os.utime(p, (1e9, 1e9))  # at rest for years: the write moves its mtime whatever the clock's resolution
    _rewritten_mid_read(monkeypatch, p, new)
    r = run_cli_in_process("scan", str(p), "-d", "metadata", "--no-cache", "--format", "jsonl")
    rec = jsonl(r.stdout)[0]
    # Before: `uncertain`, a verdict on the red picture's first bytes and the blue one's rest, under a
    # SHA-256 of neither.
    assert r.returncode == 0 and rec["verdict"] == "error" and rec["error"]["code"] == "changed-while-read"
    assert rec["sha256"] is None and p.read_bytes() == new
