"""Digest of every image's pixels as the installed Pillow decodes them, to compare two Pillow versions.

Why: the result cache, the feature cache and a `--db` run are keyed by the decoder versions
(docs/schema.md "Re-scans"), because another Pillow can give a model other pixels for the same bytes.

    python benchmarks/decoder_pixels.py ../shared/data/dev --resize 224 > new.json
    pip install --target /tmp/pillow12 'pillow<13'
    PYTHONPATH=/tmp/pillow12 python benchmarks/decoder_pixels.py ../shared/data/dev --resize 224 > old.json
    python benchmarks/decoder_pixels.py --compare old.json new.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".bmp"}


def digests(root: Path, resize: int | None) -> dict:
    import numpy as np
    import PIL
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None   # trusted local data; the digest must cover every file
    out = {"pillow": PIL.__version__, "resize": resize, "files": {}}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in SUFFIXES:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im = Image.open(p).convert("RGB")
                if resize:
                    im = im.resize((resize, resize), Image.BICUBIC)   # as the model's preprocessing resizes
            out["files"][str(p.relative_to(root))] = hashlib.sha256(np.asarray(im).tobytes()).hexdigest()[:16]
        except Exception as e:  # noqa: BLE001 - a file either version refuses is a difference too
            out["files"][str(p.relative_to(root))] = f"error {type(e).__name__}"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="a folder to digest, or with --compare two digest files")
    ap.add_argument("--resize", type=int, default=None, help="bicubic resize to N×N before the digest")
    ap.add_argument("--compare", action="store_true", help="compare two digest files")
    a = ap.parse_args(argv)
    if a.compare:
        old, new = (json.loads(Path(p).read_text()) for p in a.paths[:2])
        differ = sorted(f for f in old["files"] if old["files"][f] != new["files"].get(f))
        print(f"Pillow {old['pillow']} vs {new['pillow']} (resize {old['resize']}): {len(differ)} of "
              f"{len(old['files'])} images give other pixels")
        for f in differ:
            print("  " + f)
        return 0
    json.dump(digests(Path(a.paths[0]), a.resize), sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
