"""Image perturbations for robustness sweeps and the format-bias control.

A spec is ``kind:v1,v2`` (one condition per value) or a chain ``kind:v+kind:v``
(one condition). Kinds:

- ``jpeg:Q``    re-encode as JPEG at quality Q (4:2:0, like most platforms)
- ``webp:Q``    re-encode as WebP at quality Q
- ``resize:F``  rescale by factor F (bicubic; 0.5 halves each side)
- ``blur:S``    Gaussian blur, sigma S pixels
- ``crop:F``    keep the central F of each side (F <= 1), or a central FxF-pixel square (F > 1)
- ``noise:S``   additive Gaussian noise, sigma S on the 0-255 scale (seeded per image)

Every condition is applied to the decoded image before any preprocessing,
identically to real and AI images. The bytes a metadata detector sees are
the perturbed image re-encoded without metadata (what a re-shared copy looks
like): JPEG/WebP when the chain ends with that encoder, PNG otherwise.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

KINDS = ("jpeg", "webp", "resize", "blur", "crop", "noise")


@dataclass(frozen=True)
class Step:
    kind: str
    value: float

    @property
    def name(self) -> str:
        v = self.value
        return f"{self.kind}{int(v) if float(v).is_integer() else v}"


@dataclass(frozen=True)
class Perturbation:
    steps: tuple[Step, ...]

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.steps)

    def __call__(self, img, seed_key: str = ""):
        """PIL RGB -> (PIL RGB, encoded bytes, format name)."""
        data, fmt = None, None
        for st in self.steps:
            img, data, fmt = _apply(st, img, seed_key)
        if data is None:
            data, fmt = _encode(img, "PNG"), "PNG"
        return img, data, fmt


def _encode(img, fmt: str, quality: int | None = None) -> bytes:
    buf = io.BytesIO()
    kw = {} if quality is None else {"quality": int(quality)}
    if fmt == "JPEG":
        kw["subsampling"] = "4:2:0"
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _apply(st: Step, img, seed_key: str):
    from PIL import Image, ImageFilter

    k, v = st.kind, st.value
    if k in ("jpeg", "webp"):
        fmt = "JPEG" if k == "jpeg" else "WEBP"
        data = _encode(img, fmt, int(v))
        out = Image.open(io.BytesIO(data))
        out.load()
        return out.convert("RGB"), data, fmt
    if k == "resize":
        w, h = img.size
        return img.resize((max(1, round(w * v)), max(1, round(h * v))), Image.BICUBIC), None, None
    if k == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=float(v))), None, None
    if k == "crop":
        w, h = img.size
        cw, ch = (round(w * v), round(h * v)) if v <= 1 else (min(w, int(v)), min(h, int(v)))
        cw, ch = max(1, cw), max(1, ch)
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch)), None, None
    if k == "noise":
        seed = int.from_bytes(hashlib.sha256(seed_key.encode()).digest()[:8], "little")
        a = np.asarray(img, dtype=np.float32)
        a = a + np.random.default_rng(seed).normal(0.0, float(v), a.shape)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB"), None, None
    raise ValueError(f"unknown perturbation {k!r}")


def _check(kind: str, v: float, spec: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation {kind!r} in {spec!r}; kinds: {', '.join(KINDS)}")
    ok = {"jpeg": 1 <= v <= 100, "webp": 1 <= v <= 100, "resize": 0 < v <= 8, "blur": 0 <= v <= 50,
          "crop": v > 0, "noise": 0 <= v <= 255}[kind]
    if not ok:
        raise ValueError(f"value {v:g} out of range for {kind} in {spec!r}")


def parse(spec: str) -> list[Perturbation]:
    """'jpeg:95,75' -> [jpeg95, jpeg75]; 'resize:0.5+jpeg:75' -> [resize0.5+jpeg75]."""
    spec = spec.strip()
    parts = spec.split("+")
    if len(parts) > 1:
        steps = []
        for part in parts:
            kind, _, val = part.strip().partition(":")
            if "," in val or not val:
                raise ValueError(f"a chained perturbation takes one value per step: {spec!r}")
            steps.append(Step(kind.strip().lower(), float(val)))
            _check(steps[-1].kind, steps[-1].value, spec)
        return [Perturbation(tuple(steps))]
    kind, _, vals = spec.partition(":")
    kind = kind.strip().lower()
    if not vals:
        raise ValueError(f"perturbation {spec!r} needs values, e.g. jpeg:95,75")
    out = []
    for tok in vals.split(","):
        if not tok.strip():
            continue
        try:
            v = float(tok)
        except ValueError as exc:
            raise ValueError(f"not a number: {tok!r} in {spec!r}") from exc
        _check(kind, v, spec)
        out.append(Perturbation((Step(kind, v),)))
    return out


def parse_all(specs) -> list[Perturbation]:
    out: list[Perturbation] = []
    for s in specs or []:
        for tok in s.split() if " " in s.strip() else [s]:
            out += parse(tok)
    return out


Transform = Callable[..., tuple]
