"""End to end as a user: train a head with a small random-init CLIP backbone,
then scan with it; the shipped UnivFD head must explain why it cannot run."""
import json
import shutil

import pytest

from conftest import REPO, jsonl, run_cli


def test_scan_uses_trained_head(trained, dev_dir):
    files = [str(dev_dir / "ai/sd14/000002025_0.png"), str(dev_dir / "real/ml72")]
    r = run_cli("scan", *files, "--backbone-config", "tiny-vit", "-d", "metadata,linear", "--format", "jsonl",
                "--batch-size", "4", env={"AIIDETECT_WEIGHTS": str(trained)})
    assert r.returncode == 0, r.stderr
    recs = jsonl(r.stdout)
    assert len(recs) > 2
    for rec in recs:
        probe = rec["detectors"]["linear:cli-probe"]
        assert probe["status"] == "ok" and 0.0 <= probe["p_ai"] <= 1.0 and probe["score_kind"] == "logit"
        univ = rec["detectors"]["linear:univfd"]  # shipped head, other backbone
        assert univ["status"] == "unavailable" and "ViT-L-14" in univ["reason"]
        assert rec["verdict"] in ("ai-generated", "likely-real", "uncertain")


def test_same_bytes_same_answer(trained, dev_dir, tmp_path):
    src = dev_dir / "ai/sd14/000002025_0.png"
    (tmp_path / "a.png").write_bytes(src.read_bytes())
    (tmp_path / "b.png").write_bytes(src.read_bytes())
    r = run_cli("scan", str(tmp_path), "--backbone-config", "tiny-vit", "-d", "linear", "--format", "json",
                env={"AIIDETECT_WEIGHTS": str(trained)})
    a, b = json.loads(r.stdout)
    assert a["detectors"] == b["detectors"] and a["sha256"] == b["sha256"]


def test_weights_list_and_verify(trained):
    r = run_cli("weights", "list", "--format", "json", env={"AIIDETECT_WEIGHTS": str(trained)})
    heads = {h["name"]: h for h in json.loads(r.stdout)["heads"]}
    assert "cli-probe" in heads and "univfd" in heads
    assert heads["univfd"]["license"] and heads["univfd"]["source"]
    r = run_cli("weights", "verify", env={"AIIDETECT_WEIGHTS": str(trained)})
    assert r.returncode == 0, r.stdout
    # a tampered head fails verification
    t = trained / "cli-probe" / "head.safetensors"
    blob = bytearray(t.read_bytes()); blob[-1] ^= 0xFF; t.write_bytes(bytes(blob))
    r = run_cli("weights", "verify", env={"AIIDETECT_WEIGHTS": str(trained)})
    assert r.returncode == 2 and "checksum" in r.stdout


@pytest.mark.parametrize("manifest", ['{"name": "x", "detector": "li', "5", '{"name": {}, "detector": "linear"}',
                                      '{"name": "x", "detector": "linear", "files": [1]}',
                                      '{"name": "x", "detector": "linear", "backbone": "ViT-L-14"}'])
def test_a_head_with_a_damaged_manifest_fails_verify(tmp_path, manifest):
    """A truncated manifest made the head invisible: verify printed nothing and exited 0, list said
    'no heads found'. A manifest of the wrong shape crashed both (TypeError, AttributeError)."""
    shutil.copytree(REPO / "weights" / "univfd", tmp_path / "univfd")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text(manifest)
    r = run_cli("weights", "verify", "--weights-dir", str(tmp_path), env={"COLUMNS": "60"})
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stdout.splitlines()  # one line per head, however narrow the terminal
    assert len(lines) == 2 and lines[0] == f"ok   univfd ({tmp_path / 'univfd'})", r.stdout
    assert lines[1].startswith(f"FAIL broken ({tmp_path / 'broken'}): ") and "manifest.json" in lines[1]
    r = run_cli("weights", "list", "--weights-dir", str(tmp_path), "--format", "json")
    assert r.returncode == 0 and [h["name"] for h in json.loads(r.stdout)["heads"]] == ["univfd"]
    assert f"skipped {tmp_path / 'broken'}: damaged head" in r.stderr


def test_verify_check_backbone_with_a_damaged_backbone_fails(tmp_path):
    """A damaged checkpoint in the cache: --check-backbone printed 'backbone unavailable' on stdout,
    'ok' for every head, and exited 0, so a fleet check passed without checking a fingerprint."""
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "ViT-B-16.pt").write_bytes(b"not a checkpoint" * 100)
    r = run_cli("weights", "verify", "--check-backbone", "--backbone", "ViT-B-16", "--pretrained", "openai",
                "--weights-dir", str(REPO / "weights"), env={"AIIDETECT_CLIP_CACHE": str(clip), "COLUMNS": "60"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.splitlines() == [f"ok   univfd ({REPO / 'weights' / 'univfd'})"]  # its files are fine
    assert len(r.stderr.splitlines()) == 1 and "fingerprints not checked" in r.stderr
    assert "ViT-B-16.pt" in r.stderr and "unreadable" in r.stderr
    assert run_cli("weights", "verify", "--weights-dir", str(REPO / "weights")).returncode == 0


def test_dev_set_one_record_per_file(dev_dir):
    """The acceptance scan: every image file under dev/ gets exactly one valid record."""
    from aiidetect.discover import IMAGE_EXTS

    expected = sorted(str(p) for p in dev_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    r = run_cli("scan", str(dev_dir), "--format", "jsonl", "-d", "metadata", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = jsonl(r.stdout)
    assert sorted(x["file"] for x in recs) == expected
    assert all(x["verdict"] != "error" or x["error"]["code"] for x in recs)


def test_verify_format_json_says_what_failed(tmp_path):
    """verify printed only ok/FAIL lines, so a fleet check had to parse text: --format json is one
    document in every case, failures included (exit 2 all the same)."""
    shutil.copytree(REPO / "weights" / "univfd", tmp_path / "univfd")
    r = run_cli("weights", "verify", "--weights-dir", str(tmp_path), "-f", "json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] is True and doc["errors"] == [] and doc["backbone_checked"] is False
    assert [(h["name"], h["ok"], h["problems"]) for h in doc["heads"]] == [("univfd", True, [])]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text('{"name": "x", "detector": "li')
    r = run_cli("weights", "verify", "--weights-dir", str(tmp_path), "-f", "json")
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["ok"] is False
    broken = [h for h in doc["heads"] if not h["ok"]]
    assert [h["name"] for h in broken] == ["broken"] and "manifest.json" in broken[0]["problems"][0]
    # the backbone cannot be built: the heads' files were checked, the fingerprints were not
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "ViT-B-16.pt").write_bytes(b"not a checkpoint" * 100)
    r = run_cli("weights", "verify", "--check-backbone", "--backbone", "ViT-B-16", "--pretrained", "openai",
                "--weights-dir", str(REPO / "weights"), "-f", "json", env={"AIIDETECT_CLIP_CACHE": str(clip)})
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["ok"] is False and doc["backbone_checked"] is False
    assert len(doc["errors"]) == 1 and "ViT-B-16.pt" in doc["errors"][0] and "fingerprints not checked" in r.stderr
    assert [h["ok"] for h in doc["heads"]] == [True]
