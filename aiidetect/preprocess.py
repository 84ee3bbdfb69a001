"""Preprocessing is part of a head: a head trained with center-crop-without-resize
must be served that way, because resizing destroys the high-frequency traces
that many detectors rely on. A spec is a small dict stored in the manifest.

Works on numpy so it can run in decode workers, away from the model thread.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from .backbone import CLIP_MEAN, CLIP_STD

MODES = ("center-crop", "resize-center-crop", "resize")


def make_spec(mode: str = "resize-center-crop", size: int = 224, mean=CLIP_MEAN, std=CLIP_STD,
              interpolation: str = "bicubic") -> dict[str, Any]:
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; one of {MODES}")
    return {"mode": mode, "size": int(size), "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "interpolation": interpolation}


def spec_key(spec: Mapping[str, Any]) -> str:
    return json.dumps({k: spec[k] for k in sorted(spec)}, sort_keys=True)


def draft_size(spec: Mapping[str, Any]) -> int | None:
    """Smallest side the decoder may shrink a JPEG to (Pillow draft mode) without
    changing what this preprocessing produces much; None = full resolution needed."""
    return None if spec["mode"] == "center-crop" else int(spec["size"])


def _resample(name: str):
    from PIL import Image

    return {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
            "nearest": Image.NEAREST}.get(name, Image.BICUBIC)


def to_uint8(img, spec: Mapping[str, Any]) -> np.ndarray:
    """PIL RGB image -> HxWx3 uint8 array at the model's input size."""
    size = int(spec["size"])
    mode = spec["mode"]
    if mode == "resize":
        img = img.resize((size, size), _resample(spec.get("interpolation", "bicubic")))
        return np.asarray(img, dtype=np.uint8)
    if mode == "resize-center-crop":
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), _resample(spec.get("interpolation", "bicubic")))
    arr = np.asarray(img, dtype=np.uint8)
    return center_crop(arr, size)


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Crop the center; images smaller than `size` are zero-padded around (what
    torchvision's CenterCrop does, and so what UnivFD's authors evaluated with)."""
    h, w = arr.shape[:2]
    if h < size or w < size:
        out = np.zeros((max(h, size), max(w, size), 3), dtype=arr.dtype)
        top, left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
        out[top:top + h, left:left + w] = arr
        arr, h, w = out, out.shape[0], out.shape[1]
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return np.ascontiguousarray(arr[top:top + size, left:left + size])


def normalize(u8: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32, (x/255 - mean)/std."""
    x = u8.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(spec["mean"], dtype=np.float32)
    x /= np.asarray(spec["std"], dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def apply(img, spec: Mapping[str, Any]) -> np.ndarray:
    return normalize(to_uint8(img, spec), spec)
