"""Occlusion sensitivity through any pixel detector (linear/UnivFD probe, MPFT,
CLIP-Flow, ONNX): the same `predict` path a scan serves, so the map explains
the number in the report and not a stand-in model.

For each head's preprocessing, the image is brought to the model's input view
(resize and/or centre crop, exactly as scanned); a grid of squares is blurred
one at a time (blurring removes the fine texture most detectors read without
painting artificial edges, as a grey square would) and the batch goes through
the scan pipeline. delta = P(AI) of the whole view - P(AI) with the square
blurred: positive = the square pushed the detector towards AI.

Cost: grid**2 + 1 forward passes per file and head, hence opt-in per verdict.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DEFAULT_GRID = 8
# Below this the overlay would paint numerical noise in full colour; the colour
# bar shows the scale actually used.
MIN_SCALE = 0.05


def pixel_detectors(detectors: Sequence[Any]) -> list[Any]:
    from ..detectors.base import UnavailableDetector

    return [d for d in detectors if getattr(d, "needs_pixels", False) and not getattr(d, "per_file", False)
            and not isinstance(d, UnavailableDetector)]


def occlusion_maps(path: str, detectors: Sequence[Any], grid: int = DEFAULT_GRID, limits=None,
                   batch_size: int = 16, sha256: str | None = None) -> list[dict[str, Any]]:
    """One map per pixel detector that gave the unoccluded image a P(AI):
    {detector, base_p, grid, scale, deltas (grid x grid), image (JPEG data URI)},
    or {detector, error} when it could not be computed. `sha256`: the scanned
    file's, for a map beside its record (decode.read_recorded: a file replaced
    since is one error, not a map of another picture); None: the file as it is."""
    from PIL import Image, ImageFilter

    from ..decode import DecodeFailure, DecodeLimits, Sample, decode_bytes, load_rgb, read_recorded
    from ..discover import Candidate
    from ..pipeline import Pipeline
    from ..preprocess import normalize, spec_key, to_uint8
    from ..records import Record

    dets = pixel_detectors(detectors)
    if not dets:
        return []
    grid = max(2, int(grid))
    limits = limits or DecodeLimits()
    try:
        img = load_rgb(path, limits) if sha256 is None else decode_bytes(read_recorded(path, sha256, limits), limits)[0]
    except DecodeFailure as exc:
        return [{"detector": "", "error": exc.message}]
    probe = Pipeline(dets, None, batch_size=batch_size, workers=1)
    views: dict[str, np.ndarray] = {}
    blurred: dict[str, np.ndarray] = {}
    for spec in probe.specs:
        k = spec_key(spec)
        u8 = to_uint8(img, spec)
        views[k] = u8
        radius = max(2.0, u8.shape[0] / grid / 3)
        blurred[k] = np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(radius)))
    specs = {spec_key(s): s for s in probe.specs}

    def cell_box(k: str, cell: int) -> tuple[int, int, int, int]:
        h, w = views[k].shape[:2]
        r, c = divmod(cell, grid)
        return (r * h // grid, (r + 1) * h // grid, c * w // grid, (c + 1) * w // grid)

    def decoder(_path: str, index: int, _specs) -> Sample:
        # sha256 stays None so the pipeline does not treat the variants as one file.
        s = Sample(index=index, path=path, record=Record(file=path))
        for k, spec in specs.items():
            u8 = views[k]
            if index > 0:
                u8 = u8.copy()
                y0, y1, x0, x1 = cell_box(k, index - 1)
                u8[y0:y1, x0:x1] = blurred[k][y0:y1, x0:x1]
            s.pixels[k] = normalize(u8, spec)
        return s

    pipe = Pipeline(dets, None, batch_size=batch_size, workers=1, decoder=decoder)
    recs = list(pipe.run([Candidate(path, explicit=True) for _ in range(grid * grid + 1)]))
    out: list[dict[str, Any]] = []
    for d in dets:
        base = recs[0].detectors.get(d.name)
        if base is None or base.p_ai is None:
            why = base.reason if base is not None and base.reason else "no P(AI) for this file"
            out.append({"detector": d.name, "error": why})
            continue
        p = np.array([(r.detectors[d.name].p_ai if r.detectors.get(d.name) is not None
                       and r.detectors[d.name].p_ai is not None else np.nan) for r in recs[1:]], dtype=np.float64)
        delta = (float(base.p_ai) - p).reshape(grid, grid)
        delta = np.nan_to_num(delta, nan=0.0)
        k = spec_key(d.feature_requests()[0].preprocess) if d.feature_requests() else next(iter(views))
        scale = max(MIN_SCALE, float(np.abs(delta).max()))
        from ..datauri import data_uri_jpeg

        from ..explain.legend import view_note
        from ..preprocess import view_region

        out.append({"detector": d.name, "base_p": round(float(base.p_ai), 6), "grid": grid,
                    "view": view_note(view_region(*img.size, specs[k]), *img.size, specs[k]),
                    "scale": round(scale, 4), "deltas": np.round(delta, 5).tolist(),
                    "image": data_uri_jpeg(overlay(views[k], delta, scale))})
    return out


def overlay(u8: np.ndarray, delta: np.ndarray, scale: float, alpha: float = 0.6) -> np.ndarray:
    """Red where delta > 0 (the square pushed towards AI), blue where < 0; opacity
    grows with |delta| / scale, so a weak effect stays faint."""
    from PIL import Image

    h, w = u8.shape[:2]
    d = np.asarray(Image.fromarray((delta / scale).astype(np.float32), mode="F").resize((w, h), Image.NEAREST))
    d = np.clip(d, -1.0, 1.0)
    color = np.zeros((h, w, 3), dtype=np.float32)
    color[..., 0] = (d > 0) * 255
    color[..., 2] = (d < 0) * 255
    a = alpha * np.abs(d)[..., None]
    return np.clip((1 - a) * u8.astype(np.float32) + a * color, 0, 255).astype(np.uint8)
