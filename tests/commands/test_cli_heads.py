"""End to end as a user: train a head with a small random-init CLIP backbone,
then scan with it; the shipped UnivFD head must explain why it cannot run."""
import json
import shutil

import pytest

from conftest import REPO, jsonl, run_cli, run_cli_in_process

# `weights list` and `verify` run in-process where the test is about what they find (each new interpreter
# paid ~1-2 s); the narrow-terminal verify, the backbone checks and the scans keep their own process.


def test_scan_uses_trained_head(trained, dev_dir, tmp_path):
    # a folder of five photos and a file: two batches of 4, without decoding all of ml72's full-size photos
    for src in sorted((dev_dir / "real/ml72").iterdir())[:5]:
        shutil.copy(src, tmp_path)
    files = [str(dev_dir / "ai/sd14/000002025_0.png"), str(tmp_path)]
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
    r = run_cli_in_process("weights", "list", "--format", "json", env={"AIIDETECT_WEIGHTS": str(trained)})
    heads = {h["name"]: h for h in json.loads(r.stdout)["heads"]}
    assert "cli-probe" in heads and "univfd" in heads
    assert heads["univfd"]["license"] and heads["univfd"]["source"]
    r = run_cli_in_process("weights", "verify", env={"AIIDETECT_WEIGHTS": str(trained)})
    assert r.returncode == 0, r.stdout
    # a tampered head fails verification
    t = trained / "cli-probe" / "head.safetensors"
    blob = bytearray(t.read_bytes()); blob[-1] ^= 0xFF; t.write_bytes(bytes(blob))
    r = run_cli_in_process("weights", "verify", env={"AIIDETECT_WEIGHTS": str(trained)})
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
    r = run_cli_in_process("weights", "list", "--weights-dir", str(tmp_path), "--format", "json")
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
    assert run_cli_in_process("weights", "verify", "--weights-dir", str(REPO / "weights")).returncode == 0


def test_dev_set_one_record_per_file(dev_dir, dev_metadata_run):
    """The acceptance scan: every image file under dev/ gets exactly one valid record."""
    from aiidetect.discover import IMAGE_EXTS

    expected = sorted(str(p) for p in dev_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    recs = jsonl(dev_metadata_run.read_text(encoding="utf-8"))
    assert sorted(x["file"] for x in recs) == expected
    assert all(x["verdict"] != "error" or x["error"]["code"] for x in recs)


def test_verify_format_json_says_what_failed(tmp_path):
    """verify printed only ok/FAIL lines, so a fleet check had to parse text: --format json is one
    document in every case, failures included (exit 2 all the same)."""
    shutil.copytree(REPO / "weights" / "univfd", tmp_path / "univfd")
    r = run_cli_in_process("weights", "verify", "--weights-dir", str(tmp_path), "-f", "json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] is True and doc["errors"] == [] and doc["backbone_checked"] is False
    assert [(h["name"], h["ok"], h["problems"]) for h in doc["heads"]] == [("univfd", True, [])]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text('{"name": "x", "detector": "li')
    r = run_cli_in_process("weights", "verify", "--weights-dir", str(tmp_path), "-f", "json")
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


# The tests below copy the session's probe itself: this module's `trained` copy is tampered with by
# test_weights_list_and_verify, so what they read would depend on the order the tests run in.
def test_a_head_whose_manifest_skips_the_checksum_is_not_run(_tiny_probe, dev_dir, tmp_path):
    """The tensors are loaded whenever they sit in the folder, so a manifest that lists no checksum for
    them (files removed or emptied) or lists a file outside the folder makes the head unavailable, with
    the reason: damaged tensors behind such a manifest used to be scored."""
    import shutil

    w = tmp_path / "weights"
    shutil.copy(_tiny_probe / "cli-probe" / "head.safetensors", tmp_path / "good.safetensors")
    for case in ("no-files", "empty-files", "outside"):
        shutil.copytree(_tiny_probe / "cli-probe", w / case)
        t = w / case / "head.safetensors"
        blob = bytearray(t.read_bytes()); blob[-1] ^= 0xFF; t.write_bytes(bytes(blob))
        m = json.loads((w / case / "manifest.json").read_text())
        digest = m.pop("files")["head.safetensors"]
        if case == "empty-files":
            m["files"] = {}
        elif case == "outside":
            m["files"] = {"../../good.safetensors": digest}
        (w / case / "manifest.json").write_text(json.dumps({**m, "name": case}))
    r = run_cli_in_process("scan", str(dev_dir / "ai/sd14/000002025_0.png"), "--backbone-config", "tiny-vit",
                           "-d", "linear", "--format", "jsonl", "--no-cache", env={"AIIDETECT_WEIGHTS": str(w)})
    assert r.returncode == 0, r.stderr
    rows = jsonl(r.stdout)[0]["detectors"]
    for case in ("no-files", "empty-files", "outside"):
        row = rows[f"linear:{case}"]
        assert row["status"] == "unavailable" and row["p_ai"] is None, (case, row)
        assert "head.safetensors is not listed in the manifest's files" in row["reason"], (case, row)
    assert "'../../good.safetensors' is outside its folder" in rows["linear:outside"]["reason"]
    r = run_cli_in_process("weights", "verify", env={"AIIDETECT_WEIGHTS": str(w)})
    assert r.returncode == 2 and r.stdout.count("not listed in the manifest's files") == 3, r.stdout


def test_a_head_with_a_bad_preprocessing_block_is_unavailable_not_the_files_fault(_tiny_probe, dev_dir, tmp_path):
    """A manifest's preprocessing is checked when the head is loaded. A huge or negative size used to fail
    every file of the scan as if the file were at fault (error 'too-large', 'internal-error'), and a
    one-number mean or an unknown interpolation was used quietly and scored."""
    import shutil

    w = tmp_path / "weights"
    bad = {"huge": {"size": 100000}, "negative": {"size": -5}, "one-mean": {"mean": [1]},
           "interp": {"interpolation": "bogus"}, "zero-std": {"std": [0, 0, 0]}}
    for name, change in bad.items():
        shutil.copytree(_tiny_probe / "cli-probe", w / name)
        m = json.loads((w / name / "manifest.json").read_text())
        m["preprocessing"].update(change)
        (w / name / "manifest.json").write_text(json.dumps({**m, "name": name}))
    shutil.copytree(_tiny_probe / "cli-probe", w / "cli-probe")
    r = run_cli_in_process("scan", str(dev_dir / "ai/sd14/000002025_0.png"), "--backbone-config", "tiny-vit",
                           "-d", "linear", "--format", "jsonl", "--no-cache", env={"AIIDETECT_WEIGHTS": str(w)})
    assert r.returncode == 0, r.stderr
    rec = jsonl(r.stdout)[0]
    assert rec["verdict"] != "error" and rec.get("error") is None, rec.get("error")
    assert rec["detectors"]["linear:cli-probe"]["status"] == "ok"
    for name in bad:
        row = rec["detectors"][f"linear:{name}"]
        assert row["status"] == "unavailable" and "preprocessing" in row["reason"], (name, row)
    assert "from 1 to 2048, not 100000" in rec["detectors"]["linear:huge"]["reason"]
    assert "mean must be 3 finite numbers" in rec["detectors"]["linear:one-mean"]["reason"]


def test_a_head_that_cannot_be_read_or_is_hidden_by_another_is_said(_tiny_probe, dev_dir, tmp_path):
    """Both used to be passed over without a word: a head whose manifest.json is damaged simply did not
    run (and `weights verify` said every head was fine), and a second head of the same name in a later
    weights folder was never used. A manifest nested too deep to parse failed the whole scan."""
    import os
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(_tiny_probe / "cli-probe", a / "cli-probe")
    shutil.copytree(_tiny_probe / "cli-probe", b / "dup")
    shutil.copytree(_tiny_probe / "cli-probe", b / "broken")
    m = (b / "broken" / "manifest.json").read_bytes()
    (b / "broken" / "manifest.json").write_bytes(m[: len(m) // 2])
    (b / "nested").mkdir()  # JSON nested deeper than Python's recursion limit failed the whole scan
    (b / "nested" / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    env = {"AIIDETECT_WEIGHTS": f"{a}{os.pathsep}{b}"}
    r = run_cli_in_process("scan", str(dev_dir / "ai/sd14/000002025_0.png"), "--backbone-config", "tiny-vit",
                           "-d", "linear", "--format", "jsonl", "--no-cache", env=env)
    assert r.returncode == 0, r.stderr
    assert jsonl(r.stdout)[0]["detectors"]["linear:cli-probe"]["status"] == "ok"
    err = " ".join(r.stderr.split())
    assert f"note: head linear:cli-probe in {b / 'dup'} is not used: {a / 'cli-probe'} has the same name" in err
    assert f"note: {b / 'broken'} is not a usable head, so it does not run: cannot read" in err
    assert f"note: {b / 'nested'} is not a usable head, so it does not run: cannot read" in err
    r = run_cli_in_process("weights", "verify", env=env)
    out = " ".join(r.stdout.split())
    assert r.returncode == 2 and f"FAIL broken ({b / 'broken'}): cannot read" in out, r.stdout


def test_a_head_that_names_no_backbone_or_has_odd_values_is_unavailable_and_the_scan_goes_on(_tiny_probe, dev_dir,
                                                                                              tmp_path):
    """A manifest without a backbone fingerprint used to run on whatever backbone the scan had (here a
    tiny-vit of another seed, which this probe was not trained on) and score; `backbone: null`, a `params`
    that is not an object or a name that is not a string failed the whole scan (exit 2, no records)."""
    import shutil

    w = tmp_path / "weights"
    edits = {"no-fingerprint": lambda m: m["backbone"].pop("fingerprint"),
             "no-backbone": lambda m: m.pop("backbone"),
             "null-backbone": lambda m: m.update(backbone=None),
             "str-params": lambda m: m.update(params="x")}
    for name, edit in edits.items():
        shutil.copytree(_tiny_probe / "cli-probe", w / name)
        m = {**json.loads((w / name / "manifest.json").read_text()), "name": name}
        edit(m)
        (w / name / "manifest.json").write_text(json.dumps(m))
    shutil.copytree(_tiny_probe / "cli-probe", w / "list-name")
    m = json.loads((w / "list-name" / "manifest.json").read_text())
    (w / "list-name" / "manifest.json").write_text(json.dumps({**m, "name": ["x"]}))
    r = run_cli_in_process("scan", str(dev_dir / "ai/sd14/000002025_0.png"), "--backbone-config", "tiny-vit",
                           "--backbone-seed", "7", "-d", "metadata,linear", "--format", "jsonl", "--no-cache",
                           env={"AIIDETECT_WEIGHTS": str(w)})
    assert r.returncode == 0, r.stderr
    rows = jsonl(r.stdout)[0]["detectors"]
    for name in edits:
        assert rows[f"linear:{name}"]["status"] == "unavailable" and rows[f"linear:{name}"]["p_ai"] is None, name
    for name in ("no-fingerprint", "no-backbone", "null-backbone"):
        assert "does not say which backbone it was trained on" in rows[f"linear:{name}"]["reason"]
    assert rows["metadata"]["status"] == "ok"
    assert "list-name is not a usable head" in " ".join(r.stderr.split())


def test_weights_verify_and_list_see_every_family_of_a_shared_name(_tiny_probe, tmp_path):
    """Heads were told apart by name alone outside a scan: `weights verify` passed over a damaged flow:x
    beside a linear:x (exit 0, 'ok') though a scan loads both; a manifest with `backbone: null` made
    `weights list` fail with AttributeError."""
    import shutil

    w = tmp_path / "weights"
    shutil.copytree(_tiny_probe / "cli-probe", w / "a")
    shutil.copytree(_tiny_probe / "cli-probe", w / "b")
    m = json.loads((w / "b" / "manifest.json").read_text())
    (w / "b" / "manifest.json").write_text(json.dumps({**m, "detector": "flow", "backbone": None}))
    t = w / "b" / "head.safetensors"
    blob = bytearray(t.read_bytes()); blob[-1] ^= 0xFF; t.write_bytes(bytes(blob))
    env = {"AIIDETECT_WEIGHTS": str(w)}
    r = run_cli_in_process("weights", "verify", env=env)
    out = " ".join(r.stdout.split())
    assert r.returncode == 2 and f"FAIL cli-probe ({w / 'b'}): head.safetensors checksum differs" in out, r.stdout
    assert f"ok cli-probe ({w / 'a'})" in out
    r = run_cli_in_process("weights", "list", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    rows = {(h["detector"], h["path"]) for h in json.loads(r.stdout)["heads"]}
    assert {("linear", str(w / "a")), ("flow", str(w / "b"))} <= rows


def test_a_weights_dir_that_is_a_head_folder_is_said(_tiny_probe, dev_dir):
    """`--weights-dir` pointed at a head folder itself found no head, and the scan only said to train one."""
    r = run_cli("scan", str(dev_dir / "ai/sd14/000002025_0.png"), "--backbone-config", "tiny-vit", "-d", "linear",
                "--weights-dir", str(_tiny_probe / "cli-probe"), "--format", "jsonl", "--no-cache")
    assert r.returncode == 0, r.stderr
    err = " ".join(r.stderr.split())
    assert f"note: {_tiny_probe / 'cli-probe'} is a head folder" in err and f"give its parent ({_tiny_probe})" in err


def test_weights_commands_refuse_a_weights_dir_that_is_not_a_folder(tmp_path):
    """`weights verify --weights-dir /typo -f json` printed "ok": true and exited 0, having checked
    nothing: a fleet check read a mistyped path as a verified machine. list and pack likewise."""
    (tmp_path / "file").write_text("not a folder")
    for d, why in ((tmp_path / "typo", "does not exist"), (tmp_path / "file", "is not a folder")):
        for args in (("verify", "-f", "json"), ("list", "-f", "json"), ("pack", str(tmp_path / "b.tar"))):
            r = run_cli_in_process("weights", *args, "--weights-dir", str(d))
            assert r.returncode == 2 and not r.stdout, (args, r.stdout)
            assert f"--weights-dir {d} {why}" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "b.tar").exists()


def test_an_in_process_cli_run_leaves_the_test_process_as_it_found_it(dev_dir):
    """run_cli_in_process shares the test process: a scan's raised Pillow limit stayed for the session."""
    from PIL import Image

    pixels = Image.MAX_IMAGE_PIXELS
    r = run_cli_in_process("scan", str(dev_dir / "ai/sd14/000002025_0.png"), "-d", "metadata", "--format", "jsonl",
                           "--no-cache", "--max-pixels", str(4 * (pixels or 10 ** 8)))
    assert r.returncode == 0, r.stderr
    assert Image.MAX_IMAGE_PIXELS == pixels


def test_verify_of_a_head_folder_says_it_verified_nothing_and_where_heads_are(tmp_path):
    """`weights verify --weights-dir HEAD` (the head folder, not its parent) printed nothing and exited 0:
    no head was checked, and nothing said so. It now names the folder to give, and that nothing was verified."""
    import numpy as np

    from aiidetect.heads import save_head

    head = save_head(tmp_path / "w" / "h", {"weight": np.ones((1, 4), np.float32)}, {"name": "h", "detector": "linear"})
    r = run_cli_in_process("weights", "verify", "--weights-dir", str(head))
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and r.stdout == "", r.stdout  # nothing verified is not a pass
    assert f"{head} is a head folder" in said and f"give its parent ({tmp_path / 'w'})" in said, said
    assert "no heads found, nothing verified" in said, said
    r = run_cli_in_process("weights", "verify", "--weights-dir", str(tmp_path / "w"))
    assert r.returncode == 0 and r.stdout.startswith("ok   h") and "note" not in r.stderr, (r.stdout, r.stderr)


def test_verify_with_no_heads_is_not_a_pass(tmp_path):
    """An empty (or unmounted) weights folder exited 0 with "ok": true and "heads": [], so
    `weights verify -f json | jq -e .ok` vouched for heads it never looked at."""
    empty = tmp_path / "mnt"
    empty.mkdir()
    r = run_cli_in_process("weights", "verify", "--weights-dir", str(empty), "-f", "json")
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["ok"] is False and doc["heads"] == [], r.stdout
    assert len(doc["errors"]) == 1 and "nothing verified" in doc["errors"][0] and str(empty) in doc["errors"][0]
    r = run_cli_in_process("weights", "verify", "--weights-dir", str(empty), "--quiet")
    assert r.returncode == 2 and r.stdout == "" and "nothing verified" in r.stderr, (r.stdout, r.stderr)


def test_verify_help_names_every_exit_2():
    """`weights verify --help` listed a failed head and an unbuildable backbone as exit 2, not finding no
    head at all, which a script author reads there before wiring `verify || alert`."""
    r = run_cli_in_process("weights", "verify", "--help", env={"COLUMNS": "200"})
    said = " ".join(r.stdout.split())
    assert r.returncode == 0 and "cannot build the backbone" in said and "no head" in said, said


def test_verify_json_with_no_heads_checked_no_backbone(tmp_path, monkeypatch):
    """`verify --check-backbone -f json` on a folder without heads said "backbone_checked": true beside
    "no heads found": no fingerprint was compared, so nothing was checked against the backbone."""
    import aiidetect.backbone

    # a backbone that builds (building tiny-vit takes seconds; no head asks anything of it here)
    monkeypatch.setattr(aiidetect.backbone, "create_backbone", lambda spec: object())
    r = run_cli_in_process("weights", "verify", "--check-backbone", "--backbone-config", "tiny-vit",
                           "--weights-dir", str(tmp_path), "-f", "json")
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["ok"] is False and doc["heads"] == []
    assert "no heads found" in doc["errors"][0]
    assert doc["backbone_checked"] is False
