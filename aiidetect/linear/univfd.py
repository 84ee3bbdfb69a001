"""The published UniversalFakeDetect head (Ojha et al., CVPR 2023) in aiidetect's
head format. ``convert_univfd`` regenerates ``weights/univfd/`` from the
authors' ``fc_weights.pth``; scripts/convert_univfd.py is the command line.

The backbone fingerprint is computed exactly as ``backbone.create_backbone``
computes it for the real checkpoint: open_clip's ``ViT-L-14`` model config with
``quick_gelu`` set (the openai pretrained config asks for it), and the weights
id ``sha256:<hex>`` that ``resolve_pretrained_file`` takes from the openai
download URL (that URL embeds the file's SHA-256).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..backbone import CLIP_MEAN, CLIP_STD

NAME = "univfd"
SOURCE_REPO = "WisconsinAIVision/UniversalFakeDetect"
SOURCE_COMMIT = "76a0e3e60a8a06458707a625d269ba815a2e5919"
SOURCE_FILE = "pretrained_weights/fc_weights.pth"
MODEL = "ViT-L-14"
PRETRAINED = "openai"
# The SHA-256 in open_clip's URL for ViT-L-14/openai (open_clip pretrained registry):
# https://openaipublic.azureedge.net/clip/models/<sha>/ViT-L-14.pt
OPENAI_VIT_L14_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
# weights_id (weights_identity.py) of those tensors: not computed yet, the build machine has no
# ViT-L-14 weights. None means "match through the file SHA-256 above".
TENSOR_WEIGHTS_ID: str | None = None

PAPER = ("Utkarsh Ojha, Yuheng Li, Yong Jae Lee. Towards Universal Fake Image Detectors that Generalize "
         "Across Generative Models. CVPR 2023. arXiv:2302.10174")

REPORTED_METRICS = {
    "ufd_protocol_mean_ap": {
        "value": 93.4, "unit": "AP (%)", "scope": "mean over the 19 generators of the UniversalFakeDetect test set",
        "where": "UFD protocol of Ojha et al., CVPR 2023 (arXiv:2302.10174); figure as listed in the project's "
                 "notes on the published weights (reported elsewhere, about 93.4)"},
    "genimage_mean_accuracy": {
        "value": 89, "unit": "accuracy (%), approximate", "scope": "GenImage average",
        "where": "third-party reproduction on GenImage (Zhu et al., NeurIPS 2023 benchmark), as listed in the "
                 "project's notes on the published weights"},
    "chameleon_accuracy": {
        "value": "57-63", "unit": "accuracy (%)", "scope": "Chameleon (recent, hard generators)",
        "where": "third-party evaluations on Chameleon (Yan et al., 2024, AIDE paper), as listed in the "
                 "project's notes on the published weights"},
    "note": "Reported by others, not measured by aiidetect (no ViT-L-14 weights or benchmark sets on this machine).",
}

KNOWN_WEAKNESSES = [
    "JPEG re-compression and resizing lower its accuracy strongly (it reads high-frequency traces "
    "through a 224 px center crop taken without resizing).",
    "Recent generators (e.g. those in Chameleon) are often missed: accuracy about 57-63%.",
    "Trained only on ProGAN fakes vs. LSUN reals (Wang et al. 2020): a distribution far from modern "
    "diffusion outputs and from phone photos.",
    "Sees only the central 224x224 pixels: large images are judged on a small crop; images smaller than "
    "224 px are zero-padded (as in the authors' evaluation).",
]


def openai_vit_l14_config() -> dict[str, Any]:
    """The model config create_backbone builds for ViT-L-14/openai."""
    from ..backbone import import_open_clip

    open_clip = import_open_clip()
    cfg = json.loads(json.dumps(open_clip.get_model_config(MODEL)))
    pcfg = open_clip.get_pretrained_cfg(MODEL, PRETRAINED) or {}
    if pcfg.get("quick_gelu"):
        cfg["quick_gelu"] = True
    url = pcfg.get("url") or ""
    if OPENAI_VIT_L14_SHA256 not in url:  # open_clip changed its registry: the fingerprint would be wrong
        raise RuntimeError(f"open_clip's URL for {MODEL}/{PRETRAINED} no longer carries the expected SHA-256: {url}")
    return cfg


def backbone_block() -> dict[str, Any]:
    from ..backbone import fingerprint

    cfg = openai_vit_l14_config()
    wid = f"sha256:{OPENAI_VIT_L14_SHA256}"
    return {"name": f"{MODEL}/{PRETRAINED}", "model": MODEL, "pretrained": PRETRAINED,
            "fingerprint": fingerprint(cfg, wid), "weights_id": wid,
            # The identity recorded before backbones were known by their tensors: the SHA-256 of
            # OpenAI's ViT-L-14.pt file. aiidetect accepts it for that file and learns its tensor
            # id on first use (weights_identity.legacy_accepts); tensor_weights_id can be filled
            # in from `aiidetect weights inspect ViT-L-14.pt` on a machine that has the file.
            "weights_id_kind": "file-sha256", "tensor_weights_id": TENSOR_WEIGHTS_ID,
            "config": {k: cfg.get(k) for k in ("embed_dim", "vision_cfg", "quick_gelu")}}


def manifest() -> dict[str, Any]:
    from ..preprocess import make_spec

    return {
        "name": NAME,
        "detector": "linear",
        "version": "1",
        "description": "UniversalFakeDetect linear probe on frozen CLIP ViT-L/14 image embeddings",
        "backbone": backbone_block(),
        # Authors' evaluation: CenterCrop(224) without resize, CLIP normalisation.
        "preprocessing": make_spec("center-crop", 224, CLIP_MEAN, CLIP_STD),
        "labels": ["real", "ai"],
        "params": {"feature": "embed", "dim": 768, "output": "logit",
                   "feature_note": "image encoder output after the projection, not normalised"},
        "calibration": {"method": "none", "note": "authors' sigmoid, uncalibrated on aiidetect data"},
        "threshold": 0.5,
        "metrics": REPORTED_METRICS,
        "data": {"train": "ProGAN real/fake set of Wang et al. 2020 (CNNDetection), 20 LSUN classes",
                 "labels": "0 real, 1 fake"},
        "source": f"https://github.com/{SOURCE_REPO} @ {SOURCE_COMMIT} ({SOURCE_FILE})",
        "provenance": {"repo": SOURCE_REPO, "commit": SOURCE_COMMIT, "file": SOURCE_FILE, "paper": PAPER,
                       "converted_by": "scripts/convert_univfd.py (aiidetect.linear.univfd.convert_univfd)"},
        "license": "MIT (Copyright (c) 2025 Wisconsin AI and Vision Lab); notice in LICENSE beside this file",
        "known_weaknesses": KNOWN_WEAKNESSES,
    }


def load_published(pth: str | Path) -> dict[str, Any]:
    """The authors' state dict {weight (1,768), bias (1,)}, loaded without pickle code execution."""
    import torch

    sd = torch.load(str(pth), map_location="cpu", weights_only=True)
    if "weight" not in sd or "bias" not in sd:
        raise ValueError(f"{pth}: expected a state dict with 'weight' and 'bias', got {sorted(sd)}")
    w, b = sd["weight"], sd["bias"]
    if tuple(w.shape) != (1, 768) or tuple(b.shape) != (1,):
        raise ValueError(f"{pth}: expected weight (1, 768) and bias (1,), got {tuple(w.shape)} and {tuple(b.shape)}")
    return {"weight": w.float().contiguous(), "bias": b.float().contiguous()}


def convert_univfd(pth: str | Path, out_dir: str | Path, license_file: str | Path | None = None) -> Path:
    """fc_weights.pth (+ its LICENSE) -> head folder with head.safetensors, manifest.json, LICENSE."""
    from ..heads import save_head

    pth = Path(pth)
    lic = Path(license_file) if license_file else pth.parent / "LICENSE"
    if not lic.is_file():
        raise FileNotFoundError(f"{lic}: the MIT licence notice must travel with the weights")
    tensors = load_published(pth)
    m = manifest()
    try:  # keep the first conversion's date so regenerating gives an identical folder
        from ..heads import read_manifest

        m["created"] = read_manifest(out_dir)["created"]
    except Exception:  # noqa: BLE001 - first conversion
        pass
    return save_head(out_dir, tensors, m, extra_files={"LICENSE": lic.read_bytes()})
