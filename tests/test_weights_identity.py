"""Backbones are known by their tensors: one weights_id for the same tensors in every format,
another after one tensor changes; heads with a legacy file-hash identity still match."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli, run_cli_in_process

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CLIP (shipped tiny-vit config, random init) saved three ways, plus one changed tensor."""
    from aiidetect.testing.checkpoints import save_safetensors, save_torchscript, tiny_clip

    d = tmp_path_factory.mktemp("tiny-clip")
    model, sd = tiny_clip()
    torch.save(sd, d / "state_dict.pt")
    save_safetensors(sd, d / "model.safetensors")
    save_torchscript(model, d / "archive.pt")
    changed = {k: v.clone() for k, v in sd.items()}
    changed["visual.ln_post.bias"][0] += 1e-3
    save_safetensors(changed, d / "changed.safetensors")
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}
    torch.save(wrapped, d / "wrapped.pt")
    return d


def test_same_tensors_same_id_in_every_format(tiny):
    from aiidetect.weights_identity import compute

    infos = {n: compute(tiny / n) for n in ("state_dict.pt", "model.safetensors", "archive.pt", "wrapped.pt")}
    assert {i["format"] for i in infos.values()} == {"torch", "safetensors", "torchscript"}
    ids = {i["weights_id"] for i in infos.values()}
    assert len(ids) == 1 and next(iter(ids)).startswith("tensors-sha256:")
    assert {(i["tensors"], i["bytes"]) for i in infos.values()} == {(infos["model.safetensors"]["tensors"],
                                                                     infos["model.safetensors"]["bytes"])}
    assert "width 64, layers 2" in infos["archive.pt"]["architecture"]
    assert compute(tiny / "changed.safetensors")["weights_id"] not in ids


def test_dtype_is_part_of_the_identity(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    from aiidetect.weights_identity import compute

    sd = load_file(str(tiny / "model.safetensors"))
    save_file({k: v.half() for k, v in sd.items()}, str(tmp_path / "half.safetensors"))
    assert compute(tmp_path / "half.safetensors")["weights_id"] != compute(tiny / "model.safetensors")["weights_id"]


def test_inspect_cli_json_and_cache(tiny, tmp_path):
    r = run_cli("weights", "inspect", str(tiny / "archive.pt"), str(tiny / "model.safetensors"),
                str(tiny / "changed.safetensors"), "--format", "json", env={"AIIDETECT_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert all(set(x) >= {"weights_id", "architecture", "tensors", "bytes"} for x in rows)
    assert rows[0]["weights_id"] == rows[1]["weights_id"] != rows[2]["weights_id"]
    assert (tmp_path / "weights_ids.sqlite").is_file()
    # one path: an array too (it was an object, so a script had to test which of the two it got); in-process,
    # the subprocess run above is the user's
    one = run_cli_in_process("weights", "inspect", str(tiny / "model.safetensors"), "--format", "json")
    assert [x["weights_id"] for x in json.loads(one.stdout)] == [rows[1]["weights_id"]]


def test_identity_remembered_by_path_size_mtime(tiny, tmp_path, monkeypatch):
    import shutil

    from aiidetect import weights_identity as wi

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "m.safetensors"
    shutil.copy(tiny / "model.safetensors", p)
    calls = []
    real = wi.compute
    monkeypatch.setattr(wi, "compute", lambda path: calls.append(path) or real(path))
    first = wi.inspect(p)
    assert wi.inspect(p) == first and len(calls) == 1
    shutil.copy(tiny / "changed.safetensors", p)  # new size/mtime: recomputed
    assert wi.inspect(p)["weights_id"] != first["weights_id"] and len(calls) == 2


def test_unreadable_files_are_refusals(tmp_path):
    from aiidetect.weights_identity import WeightsFormatError, compute

    bad = {"empty.pt": b"", "text.pt": b"hello", "zip.pt": b"PK\x03\x04broken",
           "st.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}      ", "pickle.pt": b"\x80\x04junk"}
    for name, blob in bad.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(WeightsFormatError):
            compute(tmp_path / name)
    r = run_cli("weights", "inspect", str(tmp_path / "text.pt"), "--format", "json")
    assert r.returncode == 2 and json.loads(r.stdout)[0]["error"] and "Traceback" not in r.stderr


def test_csv_keeps_the_reason_of_a_refused_file_named_after_a_good_one(tmp_path):
    """`weights inspect good.pt bad.pt -f csv` took its columns from the first row, which had no `error`:
    the bad file's row said nothing about why."""
    import csv
    import io

    import torch
    from typer.testing import CliRunner

    from aiidetect.cli import app

    torch.save({"visual.proj": torch.zeros(2, 2)}, tmp_path / "good.pt")
    (tmp_path / "bad.pt").write_bytes(b"hello")
    r = CliRunner().invoke(app, ["weights", "inspect", str(tmp_path / "good.pt"), str(tmp_path / "bad.pt"), "-f", "csv"])
    assert r.exit_code == 2
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert rows[0]["error"] == "" and "not a safetensors, torch or TorchScript checkpoint" in rows[1]["error"]


def test_a_fifo_or_a_folder_is_refused_not_waited_on(tmp_path):
    """Opening a FIFO blocks until something writes to it: inspect hung forever."""
    import os

    os.mkfifo(tmp_path / "pipe.pt")
    (tmp_path / "dir.pt").mkdir()
    r = run_cli("weights", "inspect", str(tmp_path / "pipe.pt"), str(tmp_path / "dir.pt"), "--format", "json",
                timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    rows = json.loads(r.stdout)
    assert [row["error"] for row in rows] == [f"{tmp_path / n}: not a regular file" for n in ("pipe.pt", "dir.pt")]


def test_legacy_file_hash_heads_still_match_and_learn_the_tensor_id(tiny, tmp_path, monkeypatch):
    """A head recorded with the file-SHA-256 identity (like the shipped UnivFD head) matches
    the backbone loaded from that very file, and afterwards the same tensors in another format;
    a changed tensor stays refused."""
    from aiidetect.backbone import BackboneSpec, create_backbone, fingerprint
    from aiidetect.heads import Head, HeadMismatch
    from aiidetect.weights_identity import file_sha256

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    cfg_path = "tiny-vit"
    archive = tiny / "archive.pt"
    bb = create_backbone(BackboneSpec.from_options(config=cfg_path, weights=str(archive)))
    legacy = "sha256:" + file_sha256(archive)
    head = Head(tmp_path, {"name": "old", "detector": "linear",
                           "backbone": {"name": "tiny", "weights_id": legacy,
                                        "fingerprint": fingerprint(bb.model_cfg, legacy)}})
    assert bb.weights_id.startswith("tensors-sha256:") and bb.fingerprint != head.backbone_fingerprint
    head.check_backbone(bb.fingerprint)  # the file the head names: accepted

    st = create_backbone(BackboneSpec.from_options(config=cfg_path, weights=str(tiny / "model.safetensors")))
    assert st.fingerprint == bb.fingerprint  # same tensors, same identity
    head.check_backbone(st.fingerprint)
    ch = create_backbone(BackboneSpec.from_options(config=cfg_path, weights=str(tiny / "changed.safetensors")))
    with pytest.raises(HeadMismatch):
        head.check_backbone(ch.fingerprint)


def test_legacy_head_refused_without_having_seen_its_file(tiny, tmp_path, monkeypatch):
    from aiidetect.backbone import BackboneSpec, create_backbone, fingerprint
    from aiidetect.heads import Head, HeadMismatch

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "fresh-cache"))
    st = create_backbone(BackboneSpec.from_options(config="tiny-vit", weights=str(tiny / "model.safetensors")))
    legacy = "sha256:" + "ab" * 32
    head = Head(tmp_path, {"name": "old", "detector": "linear",
                           "backbone": {"weights_id": legacy, "fingerprint": fingerprint(st.model_cfg, legacy)}})
    with pytest.raises(HeadMismatch):
        head.check_backbone(st.fingerprint)


def test_a_checkpoint_rewritten_in_place_with_its_mtime_put_back_is_identified_anew(tiny, tmp_path, monkeypatch):
    """The identity cache was keyed by (path, size, mtime): other weights of the same size written over a
    checkpoint, its mtime put back (`cp -p`, `rsync -a`, a restore), kept the old weights_id, and every
    result and feature cached under the old weights' fingerprint was served for the new ones."""
    import os
    import shutil
    import time

    from aiidetect.weights_identity import compute, weights_id

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "model.safetensors"
    shutil.copyfile(tiny / "model.safetensors", p)
    old = weights_id(p)
    assert (tiny / "changed.safetensors").stat().st_size == p.stat().st_size
    st = p.stat()
    time.sleep(0.05)  # past the file system's timestamp tick, as any later write is
    p.write_bytes((tiny / "changed.safetensors").read_bytes())
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights_id(p) == compute(p)["weights_id"] != old


def test_an_unusable_identity_cache_costs_time_not_the_backbone(tiny, tmp_path, monkeypatch):
    """AIIDETECT_CACHE naming a file (or a folder that cannot be written): the identity cache could not be
    created, and the checkpoint was reported unreadable, its heads unavailable in every scan."""
    from aiidetect.weights_identity import compute, weights_id

    (tmp_path / "cache").write_text("a file")
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    assert weights_id(tiny / "model.safetensors") == compute(tiny / "model.safetensors")["weights_id"]


def test_the_loaders_refuse_a_fifo_themselves(tmp_path):
    """detect_format is the first read of iter_tensors and of the backbone build, which reach a checkpoint
    without the identity cache's regular-file check: a FIFO there waited in open() for a writer."""
    import os

    from aiidetect.weights_identity import detect_format

    os.mkfifo(tmp_path / "ViT-L-14.pt")
    with pytest.raises(OSError, match="not a regular file"):
        detect_format(tmp_path / "ViT-L-14.pt")
