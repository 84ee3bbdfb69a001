"""Where `--output` goes: a report is written whole and renamed into place, except where a
rename would do harm (a device or a FIFO someone reads), and never over the state an audit
keeps (the results store) or the file being read."""
from __future__ import annotations

import json
import os
import stat

import pytest
from PIL import Image

from conftest import jsonl, run_cli


@pytest.fixture()
def img(tmp_path):
    p = tmp_path / "in" / "a.png"
    p.parent.mkdir()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(p)
    return p


def test_output_into_a_fifo_writes_to_its_reader(img, tmp_path):
    """`-o pipe` for another process (and, the same way, `-o /dev/null`, which a rename made a
    regular file when run as root): the report goes into the FIFO, which stays a FIFO."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    # Open for reading first (non-blocking), so the scan's open for writing does not wait and the
    # test cannot hang whatever the code under test does.
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = run_cli("scan", str(img), "-d", "metadata", "--no-cache", "-f", "jsonl", "-q", "-o", str(fifo))
        assert r.returncode == 0, r.stderr
        assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a regular file"
        try:
            got = os.read(rfd, 1 << 16).decode()
        except BlockingIOError:
            got = ""
    finally:
        os.close(rfd)
    assert [rec["file"] for rec in jsonl(got)] == [str(img)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.fifo"], "temporary file left behind"


def test_output_through_a_link_replaces_the_file_and_keeps_link_and_mode(img, tmp_path):
    real = tmp_path / "reports" / "run.json"
    real.parent.mkdir()
    real.write_text("[]\n")
    real.chmod(0o600)  # a private report stays private when it is written again
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    r = run_cli("scan", str(img), "-d", "metadata", "--no-cache", "-f", "json", "-q", "-o", str(link))
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert [rec["file"] for rec in json.loads(real.read_text())] == [str(img)]
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sorted(p.name for p in real.parent.iterdir()) == ["run.json"], "temporary file left behind"
