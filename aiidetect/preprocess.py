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


INTERPOLATIONS = ("bicubic", "bilinear", "lanczos", "nearest")
# The largest crop a head may ask for: far above any CLIP input (224-448), far below what a batch of
# such crops would need in memory (2048 x 2048 x 3 float32 is 50 MB an image).
MAX_SIZE = 2048


def make_spec(mode: str = "resize-center-crop", size: int = 224, mean=CLIP_MEAN, std=CLIP_STD,
              interpolation: str = "bicubic") -> dict[str, Any]:
    return check_spec({"mode": mode, "size": size, "mean": mean, "std": std, "interpolation": interpolation})


def check_spec(spec: Any) -> dict[str, Any]:
    """A preprocessing block (from a head's manifest or an ONNX sidecar) checked and normalised, or
    ValueError naming the field. Every key is checked where it is written rather than where it is
    used: a bad size or an unknown mode made every file of a scan fail as if it were the file's fault
    (too-large, internal-error), and a one-number mean or an unknown interpolation was used quietly."""
    import math
    from numbers import Integral, Real  # numpy's numbers too: a backbone's mean may be float32

    if not isinstance(spec, Mapping):
        raise ValueError(f"preprocessing is {type(spec).__name__}, not a table")
    out = dict(spec)
    if "mode" in spec and spec["mode"] not in MODES:
        raise ValueError(f"unknown preprocessing mode {spec['mode']!r}; one of {MODES}")
    if "size" in spec:
        size = spec["size"]
        if isinstance(size, Real) and not isinstance(size, Integral) and float(size).is_integer():
            size = int(size)
        if isinstance(size, bool) or not isinstance(size, Integral) or not 1 <= size <= MAX_SIZE:
            raise ValueError(f"preprocessing size must be a whole number of pixels from 1 to {MAX_SIZE}, "
                             f"not {size!r}")
        out["size"] = int(size)
    for key in ("mean", "std"):
        if key not in spec:
            continue
        v = spec[key]
        try:  # a list from JSON, or a backbone's tuple or array
            vals = None if isinstance(v, (str, bytes, Mapping)) else list(v)
        except TypeError:
            vals = None
        ok = (vals is not None and len(vals) == 3
              and all(isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) for x in vals))
        if not ok or (key == "std" and any(x <= 0 for x in vals)):
            raise ValueError(f"preprocessing {key} must be 3 finite numbers{' above 0' if key == 'std' else ''} "
                             f"(one per RGB channel), not {v!r}")
        out[key] = [float(x) for x in vals]
    if "interpolation" in spec and spec["interpolation"] not in INTERPOLATIONS:
        raise ValueError(f"unknown preprocessing interpolation {spec['interpolation']!r}; one of {INTERPOLATIONS}")
    return out


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


# Pillow's filter radius in source pixels at scale 1 (its bicubic, bilinear, lanczos, nearest).
_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0, "lanczos": 3.0, "nearest": 0.5}
# A resized image of more pixels than this is not made whole: only its crop window is
# computed (_resize_window). A 341-byte 1x65535 PNG would otherwise become a 224 x 14.7
# million-pixel image (Pillow holds 4 bytes a pixel: 59 GB) to keep its middle 224x224.
# 16 M pixels (64 MB) is an aspect ratio of 1:334 at 224: every photo, panorama and banner
# stays on the whole-image path, which is what the reference preprocessing computes.
WINDOW_PIXELS = 16_000_000


def to_uint8(img, spec: Mapping[str, Any]) -> np.ndarray:
    """PIL RGB image -> HxWx3 uint8 array at the model's input size."""
    size = int(spec["size"])
    mode = spec["mode"]
    interpolation = spec.get("interpolation", "bicubic")
    if mode == "resize":
        img = img.resize((size, size), _resample(interpolation))
        return np.asarray(img, dtype=np.uint8)
    if mode == "resize-center-crop":
        w, h = img.size
        nw, nh = _resized(w, h, size)
        if nw * nh > WINDOW_PIXELS:
            return _resize_window(img, nw, nh, size, interpolation)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), _resample(interpolation))
        return center_crop(np.asarray(img, dtype=np.uint8), size)
    return center_crop(img, size)


def view_region(w: int, h: int, spec: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """The part of a w x h image (as decoded: EXIF orientation applied) that to_uint8 makes the model's
    size x size view, as (x0, y0, x1, y1) in the image's pixels: view pixel (u, v) covers the image from
    x0 + u * (x1 - x0) / size on. It reaches past the image (x0 < 0) where center-crop pads a small one.
    For explanations drawn on the view, so what they point at can be found on the picture people see."""
    size = int(spec["size"])
    mode = spec["mode"]
    if mode == "resize":
        return 0.0, 0.0, float(w), float(h)
    if mode == "resize-center-crop":
        nw, nh = _resized(w, h, size)
        top, left = _crop_corner(nh, nw, size)
        return left * w / nw, top * h / nh, (left + size) * w / nw, (top + size) * h / nh
    top, left = _crop_corner(h, w, size)
    return float(left), float(top), float(left + size), float(top + size)


def _resized(w: int, h: int, size: int) -> tuple[int, int]:
    """resize-center-crop's resized size: the short side made `size`."""
    scale = size / min(w, h)
    return max(size, round(w * scale)), max(size, round(h * scale))


def _crop_corner(h: int, w: int, size: int) -> tuple[int, int]:
    """(top, left) of center_crop's size x size window in an h x w image's coordinates (negative where the
    zero padding around a smaller image begins): one formula for the crop and for view_region."""
    pad_h, pad_w = max(h, size), max(w, size)
    return (int(round((pad_h - size) / 2.0)) - (pad_h - h) // 2,
            int(round((pad_w - size) / 2.0)) - (pad_w - w) // 2)


def _resize_window(img, nw: int, nh: int, size: int, interpolation: str) -> np.ndarray:
    """center_crop(img.resize((nw, nh)), size) without the whole resized image,
    from the source rows and columns the window needs: Pillow's separable
    filter run on a crop that holds the window's support, a pass along rows and
    then one along columns, each with a box placing the window where it lies in
    the full output. Not bit-identical to the whole-image resize: Pillow takes
    box corners in single precision and may run the column pass first, so
    pixels can differ by a few levels (tested: within 2 of rows-then-columns;
    nearest may pick the neighbouring source pixel). Used only for needle
    shapes (WINDOW_PIXELS), where the reference would need gigabytes."""
    w, h = img.size
    top, left = _crop_corner(nh, nw, size)
    x0, x1 = left * w / nw, (left + size) * w / nw          # the window in source coordinates
    y0, y1 = top * h / nh, (top + size) * h / nh
    support = _SUPPORT.get(interpolation, 2.0)
    mx = support * max(1.0, w / nw) + 2
    my = support * max(1.0, h / nh) + 2
    c0, c1 = max(0, int(x0 - mx)), min(w, int(x1 + mx) + 1)
    r0, r1 = max(0, int(y0 - my)), min(h, int(y1 + my) + 1)
    part = img.crop((c0, r0, c1, r1))
    resample = _resample(interpolation)
    # Rows: only a horizontal pass (the height and the box's rows are the crop's).
    part = part.resize((size, r1 - r0), resample, box=(x0 - c0, 0, x1 - c0, r1 - r0))
    # Columns: only a vertical pass.
    part = part.resize((size, size), resample, box=(0, y0 - r0, size, y1 - r0))
    return np.asarray(part, dtype=np.uint8)


def center_crop(arr, size: int) -> np.ndarray:
    """Crop the center; images smaller than `size` are zero-padded around (what
    torchvision's CenterCrop does, and so what UnivFD's authors evaluated with).
    `arr`: HxWx3 uint8 array or PIL image. Only the window is copied (and, from
    a PIL image, converted): padding a 1 x 100-million-pixel image first would
    take 67 GB."""
    is_array = isinstance(arr, np.ndarray)
    h, w = arr.shape[:2] if is_array else arr.size[::-1]
    # The window's top-left corner in the image's coordinates: the padded frame centres the image.
    top, left = _crop_corner(h, w, size)
    r0, r1, k0, k1 = max(0, top), min(h, top + size), max(0, left), min(w, left + size)
    sub = arr[r0:r1, k0:k1] if is_array else np.asarray(arr.crop((k0, r0, k1, r1)), dtype=np.uint8)
    if sub.shape[:2] == (size, size):
        return np.ascontiguousarray(sub)
    out = np.zeros((size, size) + sub.shape[2:], dtype=sub.dtype)
    out[r0 - top:r1 - top, k0 - left:k1 - left] = sub
    return out


def normalize(u8: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32, (x/255 - mean)/std."""
    x = u8.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(spec["mean"], dtype=np.float32)
    x /= np.asarray(spec["std"], dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def apply(img, spec: Mapping[str, Any]) -> np.ndarray:
    return normalize(to_uint8(img, spec), spec)
