"""Building an encoder from a checkpoint: the image tower is built on the meta device and
given the checkpoint's tensors (no random init, no text tower), memory-mapped where the
format allows, and gives exactly what the full build-then-load path gives."""
from __future__ import annotations

import hashlib
import json
import sys

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A tiny CLIP (shipped tiny-vit config, seed 0) saved the ways checkpoints come."""
    from safetensors.torch import save_file

    from aiidetect.testing.checkpoints import save_safetensors, save_torchscript, tiny_clip

    d = tmp_path_factory.mktemp("ckpts")
    model, sd = tiny_clip()
    torch.save(sd, d / "open_clip_pytorch_model.bin")
    torch.save(sd, d / "legacy.pt", _use_new_zipfile_serialization=False)
    save_safetensors(sd, d / "open_clip_model.safetensors")
    save_file({k: v.half().contiguous() for k, v in sd.items()}, str(d / "half.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 1}, d / "wrapped.pt")
    save_torchscript(model, d / "archive.pt")
    # one image-tower tensor missing: open_clip's strict=False load keeps its random init there
    save_file({k: v.contiguous() for k, v in sd.items() if k != "visual.ln_post.bias"}, str(d / "partial.safetensors"))
    return d


def _build(path, monkeypatch, mode: str = ""):
    from aiidetect.backbone import BackboneSpec, create_backbone

    monkeypatch.setenv("AIIDETECT_BACKBONE_LOAD", mode)
    return create_backbone(BackboneSpec.from_options(config="tiny-vit", weights=str(path)))


def _embed(bb, layers=(1,)):
    x = torch.Generator().manual_seed(1)
    px = torch.randn(2, 3, 224, 224, generator=x)
    with torch.inference_mode():
        out = bb.encode(px, layers=layers)
    return {k: v.clone() for k, v in out.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("name,mmap", [("open_clip_pytorch_model.bin", True), ("open_clip_model.safetensors", True),
                                       ("half.safetensors", True), ("wrapped.pt", True), ("legacy.pt", False),
                                       ("archive.pt", False)])
def test_meta_build_equals_full_build(ckpts, monkeypatch, tmp_path, name, mmap):
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    full = _build(ckpts / name, monkeypatch, "full")
    fast = _build(ckpts / name, monkeypatch)
    assert full.info["load"]["path"] == "full-build"
    assert fast.info["load"]["path"] == "meta-assign", fast.info
    assert fast.info["load"]["mmap"] is mmap
    assert fast.fingerprint == full.fingerprint and fast.weights_id == full.weights_id
    a, b = full.visual.state_dict(), fast.visual.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert not any(p.requires_grad for p in fast.visual.parameters())
    ea, eb = _embed(full), _embed(fast)
    assert ea.keys() == eb.keys()
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k  # bit for bit, not approximately


def test_identity_is_the_same_in_every_format(ckpts, monkeypatch, tmp_path):
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    fps = {_build(ckpts / n, monkeypatch).fingerprint
           for n in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors", "wrapped.pt", "archive.pt")}
    assert len(fps) == 1


def test_a_checkpoint_missing_an_image_tensor_takes_the_full_path(ckpts, monkeypatch, tmp_path):
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    fast = _build(ckpts / "partial.safetensors", monkeypatch)
    full = _build(ckpts / "partial.safetensors", monkeypatch, "full")
    assert fast.info["load"]["path"] == "full-build" and "missing" in fast.info["load"]["fallback"]
    assert torch.equal(fast.visual.ln_post.bias, full.visual.ln_post.bias)  # same seeded random init


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("name", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_weights_are_memory_mapped_and_the_file_is_never_written(ckpts, monkeypatch, tmp_path, name):
    import shutil

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / name
    shutil.copy(ckpts / name, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    bb = _build(path, monkeypatch)
    maps = open("/proc/self/maps").read()
    assert str(path) in maps  # the parameters are views of a mapping of the file, not copies
    conv = bb.visual.conv1.weight
    assert torch.equal(conv, conv)  # pages are read on use
    with torch.no_grad():
        conv.add_(1.0)  # private (copy-on-write) mapping: must not reach the file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_text_tower_is_not_built(ckpts, monkeypatch, tmp_path):
    import open_clip.model as ocm

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    built = []
    real = ocm._build_text_tower
    monkeypatch.setattr(ocm, "_build_text_tower", lambda *a, **k: built.append(1) or real(*a, **k))
    _build(ckpts / "open_clip_model.safetensors", monkeypatch)
    assert built == []
    _build(ckpts / "open_clip_model.safetensors", monkeypatch, "full")
    assert built == [1]


def test_random_init_is_unchanged(monkeypatch):
    """Random-init backbones (no weights) still come from the full seeded build: the same
    tensors as open_clip's CLIP(...) after torch.manual_seed(seed)."""
    from aiidetect.backbone import BackboneSpec, create_backbone, resolve_config_path
    from open_clip.model import CLIP

    monkeypatch.delenv("AIIDETECT_BACKBONE_LOAD", raising=False)
    bb = create_backbone(BackboneSpec.from_options(config="tiny-vit", seed=3))
    assert bb.info["load"]["path"] == "random-init"
    torch.manual_seed(3)
    ref = CLIP(**json.loads(resolve_config_path("tiny-vit").read_text())).visual.state_dict()
    got = bb.visual.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
