"""The shipped UnivFD head: equal to the published tensors, correct backbone
fingerprint, regenerable, and refused (with the reason) on other backbones."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from aiidetect.heads import REPO_WEIGHTS, find_heads, load_head

SHIPPED = REPO_WEIGHTS / "univfd"
PUBLISHED = Path(os.environ.get("AIIDETECT_SHARED_WEIGHTS", Path(__file__).resolve().parents[3] / "shared" / "weights")) \
    / "univfd" / "fc_weights.pth"
if not PUBLISHED.is_file():
    PUBLISHED = Path("/work/shared/weights/univfd/fc_weights.pth")


def published():
    if not PUBLISHED.is_file():
        pytest.skip("published UnivFD weights not present")
    return torch.load(str(PUBLISHED), map_location="cpu", weights_only=True)


def test_shipped_head_equals_published_tensors():
    head = load_head(SHIPPED)  # also verifies the manifest checksums
    ref = published()
    assert set(head.tensors) == {"weight", "bias"}
    for k in ("weight", "bias"):
        assert head.tensors[k].dtype == ref[k].dtype
        assert torch.equal(head.tensors[k], ref[k]), k


def test_shipped_manifest_facts():
    m = json.loads((SHIPPED / "manifest.json").read_text())
    assert m["detector"] == "linear" and m["name"] == "univfd"
    assert m["provenance"]["repo"] == "WisconsinAIVision/UniversalFakeDetect"
    assert m["provenance"]["commit"] == "76a0e3e60a8a06458707a625d269ba815a2e5919"
    assert m["license"].startswith("MIT") and "LICENSE" in m["files"]
    assert "Permission is hereby granted" in (SHIPPED / "LICENSE").read_text()
    assert m["backbone"]["model"] == "ViT-L-14" and m["backbone"]["pretrained"] == "openai"
    pp = m["preprocessing"]
    assert (pp["mode"], pp["size"]) == ("center-crop", 224)
    assert pp["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert pp["std"] == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert m["threshold"] == 0.5 and m["params"]["feature"] == "embed"
    assert m["known_weaknesses"] and m["metrics"]
    assert any(p.name == "univfd" for p, _ in find_heads([REPO_WEIGHTS], "linear"))


def test_fingerprint_is_what_create_backbone_computed_from_the_openai_file(tmp_path):
    """The shipped head records the pre-tensor identity: the SHA-256 of OpenAI's ViT-L-14.pt
    (the one in open_clip's URL) and the fingerprint of open_clip's ViT-L-14 config (+ quick_gelu
    from the openai pretrained config) with it. weights_identity.legacy_accepts matches it
    against the file a run loads (tests/test_weights_identity.py replays that with a tiny CLIP)."""
    from aiidetect.backbone import fingerprint, import_open_clip
    from aiidetect.fetch import plan_fetch

    oc = import_open_clip()
    cfg = json.loads(json.dumps(oc.get_model_config("ViT-L-14")))
    if (oc.get_pretrained_cfg("ViT-L-14", "openai") or {}).get("quick_gelu"):
        cfg["quick_gelu"] = True
    m = json.loads((SHIPPED / "manifest.json").read_text())
    plan = plan_fetch("ViT-L-14/openai", cache_dir=tmp_path)
    assert m["backbone"]["weights_id"] == f"sha256:{plan.sha256}"
    assert m["backbone"]["weights_id_kind"] == "file-sha256"
    assert m["backbone"]["fingerprint"] == fingerprint(cfg, m["backbone"]["weights_id"])


def test_conversion_regenerates_the_shipped_head(tmp_path):
    published()
    from aiidetect.linear.univfd import convert_univfd

    out = convert_univfd(PUBLISHED, tmp_path / "univfd")
    new, old = load_head(out), load_head(SHIPPED)
    for k in ("weight", "bias"):
        assert torch.equal(new.tensors[k], old.tensors[k])
    assert new.manifest["files"] == old.manifest["files"]  # byte-identical tensors and licence
    strip = lambda m: {k: v for k, v in m.items() if k not in ("created",)}  # noqa: E731
    assert strip(new.manifest) == strip(old.manifest)


def test_to_linear_matches_the_head_math():
    from aiidetect.linear import LinearHead, to_linear

    head = load_head(SHIPPED)
    lin = to_linear(head)
    assert isinstance(lin, torch.nn.Linear) and (lin.in_features, lin.out_features) == (768, 1)
    x = torch.randn(4, 768)
    want = LinearHead.from_head(head).logits(x.numpy())
    assert torch.allclose(lin(x)[:, 0].double(), torch.from_numpy(want), atol=1e-4)


def test_univfd_unavailable_on_another_backbone():
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors

    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), device="cpu",
                     weights_dirs=[REPO_WEIGHTS])
    dets = {d.name: d for d in create_detectors(["linear"], ctx)}
    d = dets["linear:univfd"]
    assert d.describe()["status"] == "unavailable"
    assert "ViT-L-14/openai" in d.reason and "--backbone" in d.reason
    (r,) = d.predict([object()], [{}])
    assert r.status == "unavailable" and r.p_ai is None


def test_missing_default_weights_give_the_remedy_once(tmp_path):
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors

    spec = BackboneSpec(cache_dir=str(tmp_path))  # ViT-L-14/openai, empty private cache
    ctx = RunContext(backbone_spec=spec, device="cpu", weights_dirs=[REPO_WEIGHTS])
    dets = create_detectors(["linear"], ctx)
    if any(d.name == "linear:univfd" and not hasattr(d, "reason") for d in dets):
        pytest.skip("ViT-L-14 weights are available on this machine")
    (d,) = dets
    assert d.name == "linear"
    assert "not on this machine" in d.reason and "Remedy" in d.reason and "ViT-L-14.pt" in d.reason
    assert "aiidetect weights fetch ViT-L-14/openai" in d.reason
    assert "univfd" in d.reason


def test_no_heads_is_one_clear_unavailable(tmp_path):
    from aiidetect.backbone import BackboneSpec
    from aiidetect.detectors import RunContext, create_detectors

    ctx = RunContext(backbone_spec=BackboneSpec.from_options(config="tiny-vit"), weights_dirs=[tmp_path])
    (d,) = create_detectors(["linear"], ctx)
    assert d.name == "linear" and "train linear" in d.reason


def test_shipped_heads_are_found_in_a_wheel_install(tmp_path, monkeypatch):
    """A non-editable install has no checkout: the wheel's data-files copy under
    <prefix>/share/aiidetect/weights must be found instead."""
    import shutil
    import sys

    import aiidetect.heads as w

    prefix = tmp_path / "prefix"
    shutil.copytree(SHIPPED, prefix / "share" / "aiidetect" / "weights" / "univfd")
    monkeypatch.setattr(w, "REPO_WEIGHTS", tmp_path / "no-checkout")
    monkeypatch.setattr(sys, "prefix", str(prefix))
    found = find_heads(w.weights_dirs(), "linear")
    assert [(p.parent, m["name"]) for p, m in found if m["name"] == "univfd"] == \
        [(prefix / "share" / "aiidetect" / "weights", "univfd")]
    assert load_head(found[0][0]).name == "univfd"  # checksums verified


def test_wheel_carries_the_shipped_heads(tmp_path):
    """Build the wheel from a copy of the sources and look inside."""
    import shutil
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    repo = SHIPPED.parent.parent
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(repo / f, src / f)
    shutil.copytree(repo / "aiidetect", src / "aiidetect", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "weights", src / "weights")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = (tmp_path / "dist").glob("aiidetect-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for f in ("manifest.json", "head.safetensors", "LICENSE"):
        assert any(n.endswith(f"data/share/aiidetect/weights/univfd/{f}") for n in names), names
    assert any(n.endswith("aiidetect/configs/tiny-vit.json") for n in names)
