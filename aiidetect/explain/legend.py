"""A colour bar and a legend under a heat-map PNG, so a map forwarded on its own
still says what its colours mean. The image itself stays pixel-identical at
the top; the strip is appended below it."""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np


def view_note(region, w: int, h: int, spec) -> str:
    """What part of a w x h picture a map drawn on the model's view shows (region: preprocess.view_region):
    a centre crop drops edges, a plain resize stretches; a reader comparing the map with the picture must know."""
    x0, y0, x1, y1 = region
    whole = x0 <= 0 and y0 <= 0 and x1 >= w and y1 >= h
    what = (f"it covers all of the {w}x{h} image" if whole else
            f"it covers x {max(0, x0):.0f}-{min(w, x1):.0f}, y {max(0, y0):.0f}-{min(h, y1):.0f} of the {w}x{h} "
            "image; the rest was not seen")
    stretched = ", stretched to a square" if spec["mode"] == "resize" and w != h else ""
    return f"Drawn on the model's input, {spec['mode']} to {spec['size']}x{spec['size']}{stretched}: {what}."


def with_legend(img: np.ndarray, lines: Sequence[str], scale: float | None = None, unit: str = "") -> np.ndarray:
    """img (HxWx3 uint8) -> the same image with, below it, a blue-white-red bar from
    -scale to +scale (when scale is given) and the legend lines, wrapped."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = img.shape[:2]
    width = max(w, 320)
    font = ImageFont.load_default()
    chars = max(20, (width - 8) // 6)
    wrapped = [x for line in lines for x in (textwrap.wrap(line, chars) or [""])]
    bar_h = 34 if scale is not None else 0
    strip_h = 6 + bar_h + 13 * len(wrapped) + 6
    out = Image.new("RGB", (width, h + strip_h), (255, 255, 255))
    out.paste(Image.fromarray(img), (0, 0))
    d = ImageDraw.Draw(out)
    y = h + 6
    if scale is not None:
        x0, x1 = 4, width - 4
        for x in range(x0, x1):
            t = 2 * (x - x0) / max(1, x1 - x0 - 1) - 1  # -1 .. 1
            c = (255, int(255 * (1 - t)), int(255 * (1 - t))) if t >= 0 else (int(255 * (1 + t)), int(255 * (1 + t)), 255)
            d.line([(x, y), (x, y + 12)], fill=c)
        d.rectangle([x0, y, x1 - 1, y + 12], outline=(110, 110, 110))
        d.text((x0, y + 15), f"-{scale:.3g}{unit}", fill=(0, 0, 0), font=font)
        d.text(((x0 + x1) // 2 - 3, y + 15), "0", fill=(0, 0, 0), font=font)
        label = f"+{scale:.3g}{unit}"
        d.text((x1 - 6 * len(label), y + 15), label, fill=(0, 0, 0), font=font)
        y += bar_h
    for line in wrapped:
        d.text((4, y), line, fill=(0, 0, 0), font=font)
        y += 13
    return np.asarray(out)
