"""Fusion model files as `scan` and `eval` load them: a hand-edited or hostile
manifest is refused with a clear message (exit 2) or left out with a note,
never used for nonsense verdicts, never a traceback."""
from __future__ import annotations

import json
import time

from conftest import run_cli
from aiidetect.report.safe import strict_loads


def test_a_hostile_fusion_model_is_refused_or_ignored_aloud(tmp_path):
    """A hand-edited fusion model whose numbers would make nonsense verdicts
    (here an infinite bias: every file ai-generated at p_ai 1.0): named with
    --fusion PATH it stops the run (exit 2, the number named); found in the
    weights folders it is left out with a note and the default rules decide;
    eval refuses it."""
    from PIL import Image

    img = tmp_path / "a.jpg"
    Image.new("RGB", (64, 48), (9, 9, 9)).save(img)
    head = tmp_path / "weights" / "fz"
    head.mkdir(parents=True)
    # Python's json writes Infinity, and reads it back, like a hand edit would leave it
    (head / "manifest.json").write_text(json.dumps({"name": "fz", "detector": "fusion", "params": {
        "detectors": {"metadata": {"weight": 1.0}}, "bias": float("inf"), "ai_threshold": 0.9, "real_threshold": 0.1}}))
    env = {"AIIDETECT_WEIGHTS": str(tmp_path / "weights")}
    r = run_cli("scan", str(img), "-d", "metadata", "-f", "jsonl", "--no-cache", "--fusion", str(head), env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert f"fusion model {head}: bias must be a finite number, not inf" in r.stderr
    r = run_cli("scan", str(img), "-d", "metadata", "-f", "jsonl", "--no-cache", env=env)
    assert r.returncode == 0, r.stderr
    rec = strict_loads(r.stdout)
    assert rec["fusion"] == {"kind": "rules"} and rec["p_ai"] != 1.0
    assert "fusion model not loaded" in r.stderr and "bias must be a finite number" in r.stderr
    man = tmp_path / "m.csv"
    man.write_text(f"file,label\n{img},real\n")
    r = run_cli("eval", str(man), "-d", "metadata", "-q", env=env)
    assert r.returncode == 2 and "bias must be a finite number" in r.stderr and "--fusion none" in r.stderr


def test_a_fusion_manifest_nested_past_the_parser_or_huge_is_a_clear_error(tmp_path):
    head = tmp_path / "deep"
    head.mkdir()
    (head / "manifest.json").write_text('{"name": "d", "detector": "fusion", "params": '
                                        + "[" * 100_000 + "]" * 100_000 + "}")
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    r = run_cli("scan", str(img), "-d", "metadata", "--no-cache", "--fusion", str(head))
    assert r.returncode == 2 and "JSON nested too deeply" in r.stderr and "RecursionError" not in r.stderr
    # a multi-gigabyte manifest (sparse here) is refused by its size, not parsed on every scan
    with open(head / "manifest.json", "r+b") as f:
        f.truncate(3 << 30)
    t0 = time.monotonic()
    r = run_cli("scan", str(img), "-d", "metadata", "--no-cache", "--fusion", str(head))
    assert r.returncode == 2 and "more than a manifest's" in r.stderr and time.monotonic() - t0 < 10


def test_a_fusion_model_with_a_json_typo_is_not_skipped_in_silence(tmp_path):
    """A hand edit that leaves a trailing comma: the folder was skipped like
    any unreadable head and scans ran on the rules without a word."""
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    head = tmp_path / "weights" / "fusion"
    head.mkdir(parents=True)
    (head / "manifest.json").write_text('{"name": "fusion", "detector": "fusion", "params": {"bias": 0.1,}}')
    env = {"AIIDETECT_WEIGHTS": str(tmp_path / "weights")}
    r = run_cli("scan", str(img), "-d", "metadata", "-f", "jsonl", "--no-cache", env=env)
    assert r.returncode == 0 and strict_loads(r.stdout)["fusion"] == {"kind": "rules"}
    assert "fusion model not loaded (cannot read" in r.stderr and str(head) in r.stderr
    (head / "manifest.json").write_text('{"name": ["fusion"], "detector": "fusion", "params": {}}')
    r = run_cli("scan", str(img), "-d", "metadata", "-f", "jsonl", "--no-cache", env=env)
    assert r.returncode == 0 and "'name' must be a string" in r.stderr and "unhashable" not in r.stderr


def test_a_fusion_manifest_that_is_no_regular_file_is_refused_at_once(tmp_path):
    """`--fusion DIR` whose manifest.json is a FIFO waited for a writer for ever; one linked to
    /dev/zero reports size 0 and was read until memory ran out."""
    import os
    import subprocess

    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    fifo, zero = tmp_path / "fifo", tmp_path / "zero"
    fifo.mkdir()
    os.mkfifo(fifo / "manifest.json")
    zero.mkdir()
    (zero / "manifest.json").symlink_to("/dev/zero")
    for head in (fifo, zero):
        try:
            r = run_cli("scan", str(img), "-d", "metadata", "--no-cache", "--fusion", str(head), timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{head}: still reading after 30 s") from None
        assert r.returncode == 2 and r.stdout == ""
        assert f"cannot read {head / 'manifest.json'}" in r.stderr and "is not a regular file" in r.stderr


def test_a_second_fusion_model_is_named_as_unused_by_scan_eval_and_calibrate(tmp_path):
    """Calibrating under a second --name (docs/evaluation.md does, per benchmark) left scans on the
    folder that sorts first; the new model went unused and only the summary line named the other."""
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    w = tmp_path / "weights"
    for name in ("fusion-a", "fusion-b"):
        (w / name).mkdir(parents=True)
        (w / name / "manifest.json").write_text(json.dumps({"name": name, "detector": "fusion", "params": {}}))
    env = {"AIIDETECT_WEIGHTS": str(w)}
    r = run_cli("scan", str(img), "-d", "metadata", "-f", "jsonl", "--no-cache", env=env)
    assert r.returncode == 0 and strict_loads(r.stdout)["fusion"]["path"] == str(w / "fusion-a")
    assert f"note: fusion model {w / 'fusion-b'} is not used: {w / 'fusion-a'} is found first" in r.stderr
    from aiidetect.api import resolve_fusion

    assert f"fusion model {w / 'fusion-b'} is not used" in resolve_fusion(None, [w])[1]   # eval's run.fusion



def test_fusion_identity_of_a_manifest_that_is_a_fifo_is_no_digest_not_a_hang(tmp_path):
    """fusion_identity read the manifest with read_bytes(): a FIFO there (swapped in after the model was
    loaded) blocked every scan's setup waiting for a writer, and a huge file was read whole into memory."""
    import os
    import threading

    from aiidetect.fusion import fusion_identity

    os.mkfifo(tmp_path / "manifest.json")
    out = {}
    t = threading.Thread(target=lambda: out.update(fusion_identity({"path": str(tmp_path), "name": "fz"})),
                         daemon=True)
    t.start()
    t.join(2)
    if t.is_alive():  # unblock the reader so the test process can end
        fd = os.open(tmp_path / "manifest.json", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(2)
        raise AssertionError("fusion_identity waited on a FIFO")
    assert out == {"kind": "model", "name": "fz", "path": str(tmp_path), "sha256": None}


def test_fusion_identity_is_the_manifest_sha256(tmp_path):
    import hashlib

    from aiidetect.fusion import fusion_identity

    (tmp_path / "manifest.json").write_bytes(b'{"name": "fz"}')
    assert fusion_identity({"path": str(tmp_path), "name": "fz"})["sha256"] == hashlib.sha256(b'{"name": "fz"}').hexdigest()
