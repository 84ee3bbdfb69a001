"""Images as data URIs, for self-contained HTML (reports, explanation overlays).

Its own module because both the report and the explainers embed images, and
the report also calls the explainers.
"""
from __future__ import annotations

import base64
import io


def data_uri_jpeg(arr, quality: int = 85) -> str:
    """RGB uint8 array -> JPEG data URI (a photo overlay is ~10x smaller than as PNG)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
