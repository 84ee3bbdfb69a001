"""The CLI as scripts use it: subprocess, JSON parsing, exit codes."""
import hashlib
import json
from pathlib import Path

import pytest

from conftest import jsonl, run_cli, run_cli_in_process
from aiidetect.testing.images import make_zoo
from aiidetect.records import SCHEMA_VERSION

SCHEMA_KEYS = {"schema", "file", "sha256", "size_bytes", "format", "width", "height", "verdict", "p_ai",
               "detectors", "reasons", "image", "error", "file_bytes", "fusion", "band"}


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    make_zoo(d)
    return d


def _hashes(d: Path):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_jsonl_one_record_per_file_and_inputs_untouched(zoo_dir):
    before = _hashes(zoo_dir)
    r = run_cli("scan", str(zoo_dir), "--format", "jsonl", "-d", "metadata")
    assert r.returncode == 0, r.stderr
    recs = jsonl(r.stdout)
    images = [p for p in before if p.suffix.lower() != ".txt"]
    assert len(recs) == len(images)
    assert [x["file"] for x in recs] == sorted(x["file"] for x in recs)
    for x in recs:
        assert set(x) == SCHEMA_KEYS
        assert x["schema"] == SCHEMA_VERSION
        assert x["verdict"] in ("ai-generated", "likely-real", "uncertain", "error")
        assert (x["error"] is None) == (x["verdict"] != "error")
    by = {Path(x["file"]).name: x for x in recs}
    assert by["truncated.jpg"]["error"]["code"] == "decode-error"
    assert by["empty.jpg"]["error"]["code"] == "empty-file"
    assert by["random.png"]["error"]["code"] == "unsupported-format"
    assert by["bomb.png"]["error"]["code"] == "too-large"
    assert by["ok.heic"]["format"] == "HEIF" and by["ok.heic"]["width"] == 64
    assert "skipped 1 non-image file" in r.stderr
    assert _hashes(zoo_dir) == before


def test_json_is_one_array_and_csv_has_rows(zoo_dir):
    r = run_cli("scan", str(zoo_dir / "ok.jpg"), str(zoo_dir / "cmyk.jpg"), "--format", "json", "-d", "metadata")
    arr = json.loads(r.stdout)
    assert isinstance(arr, list) and len(arr) == 2
    r = run_cli("scan", str(zoo_dir / "ok.jpg"), "--format", "csv", "-d", "metadata")
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("file,verdict,p_ai") and len(lines) == 2


def test_empty_json_array(tmp_path):
    r = run_cli("scan", str(tmp_path), "--format", "json", "-d", "metadata")
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_exit_codes(zoo_dir, tmp_path):
    r = run_cli("scan", str(tmp_path / "missing"), "--format", "jsonl")
    assert r.returncode == 2 and r.stdout == "" and "no such file" in r.stderr
    r = run_cli("scan", str(zoo_dir), "--format", "jsonl", "--bogus-flag")
    assert r.returncode == 2
    r = run_cli("scan", str(zoo_dir), "-d", "nosuch")
    assert r.returncode == 2
    r = run_cli("scan", str(zoo_dir / "truncated.jpg"), "--format", "jsonl", "-d", "metadata", "--fail-on", "error")
    assert r.returncode == 1
    r = run_cli("scan", str(zoo_dir / "ok.jpg"), "--format", "jsonl", "-d", "metadata", "--fail-on", "error")
    assert r.returncode == 0


def test_stdin_list_and_output_file(zoo_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    lst = f"{zoo_dir / 'ok.jpg'}\n{zoo_dir / 'gone.jpg'}\n"
    r = run_cli("scan", "-", "--format", "jsonl", "-d", "metadata", "-o", str(out), input=lst)
    assert r.returncode == 0 and r.stdout == ""
    recs = jsonl(out.read_text())
    assert [Path(x["file"]).name for x in recs] == ["ok.jpg", "gone.jpg"]
    assert recs[1]["error"]["code"] == "unreadable"


def test_logs_never_on_stdout_for_machine_formats(zoo_dir):
    r = run_cli("scan", str(zoo_dir), "--format", "jsonl")  # default detectors: some unavailable -> notes
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        json.loads(line)
    assert "scanned" in r.stderr


def test_unavailable_backbone_reported_with_remedy(zoo_dir, tmp_path):
    r = run_cli("scan", str(zoo_dir / "ok.jpg"), "--format", "jsonl", "-d", "metadata,linear",
                env={"AIIDETECT_CLIP_CACHE": str(tmp_path), "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    rec = jsonl(r.stdout)[0]
    lin = [v for k, v in rec["detectors"].items() if k.startswith("linear")]
    assert lin and all(v["status"] == "unavailable" for v in lin)


def test_table_default(zoo_dir):
    r = run_cli("scan", str(zoo_dir / "ok.jpg"), "-d", "metadata")
    assert r.returncode == 0 and "ok.jpg" in r.stdout and "verdict" in r.stdout


def test_links_out_of_the_folder_are_named_in_the_summary_and_followed_on_request(tmp_path):
    from aiidetect.testing.images import noise_rgb, save

    arch, outside = tmp_path / "arch", tmp_path / "outside"
    arch.mkdir()
    outside.mkdir()
    save(noise_rgb(32, 24, 1), arch / "own.jpg")
    save(noise_rgb(32, 24, 2), outside / "private.jpg")
    (arch / "evil.jpg").symlink_to(outside / "private.jpg")
    r = run_cli("scan", str(arch), "-d", "metadata", "-f", "jsonl", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert [Path(x["file"]).name for x in jsonl(r.stdout)] == ["own.jpg"]
    assert "1 symbolic link out of the scanned folders not followed (--follow-links)" in r.stderr
    for cmd in (("scan", "-d", "metadata", "--no-cache", "-q"), ("meta",)):
        r = run_cli(*cmd, str(arch), "-f", "jsonl", "--follow-links")
        assert [Path(x["file"]).name for x in jsonl(r.stdout)] == ["evil.jpg", "own.jpg"], cmd
    r = run_cli("meta", str(arch), "-f", "jsonl")
    assert [Path(x["file"]).name for x in jsonl(r.stdout)] == ["own.jpg"]


def test_the_summary_says_when_no_pixel_detector_ran(tmp_path):
    """The HTML page says "No pixel detector ran" in a box at its top; the table and stderr summary of the
    same run (`-d metadata`, or every model missing) said nothing, leaving a reader to infer it from a
    column of "uncertain"."""
    import io
    from types import SimpleNamespace

    from PIL import Image
    from rich.console import Console

    from aiidetect.commands.scan import _print_summary

    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "a.png")
    r = run_cli_in_process("scan", str(tmp_path), "-d", "metadata", "--no-cache")
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stderr.split())
    assert "no pixel detector ran: every verdict rests on what the files' metadata says" in said, r.stderr

    def summary(*dets):
        buf = io.StringIO()
        stats = {"verdicts": {"uncertain": 1}, "errors": {}, "files": 1, "seconds": 0.1, "images_per_s": 10.0}
        summ = SimpleNamespace(skipped=0, excluded=0, duplicates=0, outside_links=0)
        _print_summary(Console(file=buf, width=400), stats, summ, dets)
        return buf.getvalue()

    def det(name, status=None):
        return SimpleNamespace(name=name, describe=lambda: {"status": status} if status else {})

    assert "no pixel detector ran" in summary(det("metadata"), det("linear:univfd", "unavailable"))
    assert "no pixel detector ran" not in summary(det("metadata"), det("linear:univfd"))
