"""Training-time image augmentations for MPFT, on PIL images, driven by an
explicit random.Random so a run is reproducible from its seed.

Order: crop -> down-resize -> blur -> JPEG -> format-bias guard. The guard
re-encodes *every* training image, real and AI alike, as a JPEG of a random
high quality, so "was this file a PNG / had it never been JPEG-compressed"
stops being a shortcut: most public real photos are JPEGs and most generator
outputs are PNGs, and a detector happily learns that instead of the image.
"""
from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class AugmentConfig:
    p_crop: float = 0.5            # random crop keeping this share of the area ...
    crop_min_area: float = 0.5     # ... between crop_min_area and 1
    p_resize: float = 0.3          # downscale by a factor in [resize_min, 1]
    resize_min: float = 0.5
    p_blur: float = 0.1            # Gaussian blur, sigma in [blur_min, blur_max]: ours is milder than Wang et
    blur_min: float = 0.1          # al. 2020's U(0, 3) (CNNSpot; recipe "paper" uses theirs: paper())
    blur_max: float = 2.0
    p_jpeg: float = 0.1            # JPEG at quality in [jpeg_min, 100] (Wang et al. 2020: 30..100)
    jpeg_min: int = 30
    guard: bool = True             # format-bias guard: re-encode every image, both classes
    guard_q_min: int = 90
    guard_q_max: int = 100

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(p_crop=0, p_resize=0, p_blur=0, p_jpeg=0, guard=False)

    @classmethod
    def paper(cls) -> "AugmentConfig":
        """Recipe "paper": the blur/JPEG augmentation of Wang et al. 2020 (CNNSpot), at its 0.1
        probability, and nothing else: sigma ~ U(0, 3), quality ~ U{30..100}, no crop or downscale,
        no format guard. The blur range was our milder [0.1, 2] while the recipe claimed CNNSpot's."""
        return cls(p_crop=0.0, p_resize=0.0, p_blur=0.1, blur_min=0.0, blur_max=3.0, p_jpeg=0.1, jpeg_min=30,
                   guard=False)


def jpeg(img, quality: int):
    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def augment(img, cfg: AugmentConfig, rng: random.Random):
    from PIL import Image, ImageFilter

    w, h = img.size
    if cfg.p_crop > 0 and rng.random() < cfg.p_crop:
        a = rng.uniform(cfg.crop_min_area, 1.0) ** 0.5
        # (at least 8 pixels, never more than the image: one under 8 ended the run in randrange)
        cw, ch = min(w, max(8, int(w * a))), min(h, max(8, int(h * a)))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if cfg.p_resize > 0 and rng.random() < cfg.p_resize:
        s = rng.uniform(cfg.resize_min, 1.0)
        w, h = img.size
        img = img.resize((max(8, int(w * s)), max(8, int(h * s))), Image.BICUBIC)
    if cfg.p_blur > 0 and rng.random() < cfg.p_blur:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(cfg.blur_min, cfg.blur_max)))
    if cfg.p_jpeg > 0 and rng.random() < cfg.p_jpeg:
        img = jpeg(img, rng.randint(cfg.jpeg_min, 100))
    if cfg.guard:
        img = jpeg(img, rng.randint(cfg.guard_q_min, cfg.guard_q_max))
    return img


def shrink_for_cache(img, spec) -> Any:
    """Keep training images small in memory without changing what the model
    sees much: center-crop heads keep native pixels (a central window with
    room for crops), resizing heads are pre-reduced to 2x the input size."""
    size = int(spec["size"])
    w, h = img.size
    if spec["mode"] == "center-crop":
        side = 2 * size
        if w > side or h > side:
            cw, ch = min(w, side), min(h, side)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
            img = img.crop((x0, y0, x0 + cw, y0 + ch))
        return img
    from PIL import Image

    s = (2 * size) / min(w, h)
    if s < 1:
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    return img
