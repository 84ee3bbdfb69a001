#!/usr/bin/env python
"""How far the trainers' collapsed-feature check (aiidetect/train/checks.py) sits from real data.

For the first N real and N AI images of a labelled manifest, and for N one-pixel images, prints the
features' largest per-dimension spread as a share of their size (train.checks.relative_spread), for
each backbone, feature output and preprocessing; the trainers refuse at MIN_RELATIVE_SPREAD or below.

    python benchmarks/feature_spread.py /work/shared/data/dev/manifest.csv --config tiny-vit
    python benchmarks/feature_spread.py /work/shared/data/dev/manifest.csv --model ViT-L-14

`--model` builds the architecture with random weights (`--pretrained none`) unless `--pretrained TAG`
names weights on this machine: the numbers say which.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("--config", help="a shipped model config (random init), e.g. tiny-vit")
    ap.add_argument("--model", help="an open_clip architecture, e.g. ViT-L-14")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("-n", type=int, default=5, help="images per class")
    args = ap.parse_args()

    import numpy as np
    from PIL import Image

    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.feature_cache import extract_features
    from aiidetect.preprocess import make_spec
    from aiidetect.train.checks import MIN_RELATIVE_SPREAD, relative_spread

    root = Path(args.manifest).parent
    with open(args.manifest, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    real = [str(root / r["file"]) for r in rows if r["label"] == "real"][:args.n]
    ai = [str(root / r["file"]) for r in rows if r["label"] == "ai"][:args.n]
    tiny = tempfile.mkdtemp(prefix="spread-")
    pixels = []
    for i in range(args.n):
        p = os.path.join(tiny, f"px{i}.png")
        Image.new("RGB", (1, 1), (40 * i, 90, 200 - 30 * i)).save(p)
        pixels.append(p)

    spec = (BackboneSpec.from_options(config=args.config) if args.config
            else BackboneSpec.from_options(model=args.model, pretrained=args.pretrained))
    bb = create_backbone(spec)
    print(f"backbone {spec.describe()}; refused at or below {MIN_RELATIVE_SPREAD:g}")
    print(f"{'preprocessing':20} {'output':8} {'real+ai':>8} {'real':>8} {'1x1 px':>8}")
    for mode in ("resize", "resize-center-crop", "center-crop"):
        pre = make_spec(mode, bb.image_size, bb.mean, bb.std)
        for layers, name in (((), "embed"), ((0,), "cls_0"), ((bb.layers - 1,), f"cls_{bb.layers - 1}")):
            cells = []
            for paths in (real + ai, real, pixels):
                got, fails = extract_features(bb, paths, pre, layers, cache=None)
                cells.append(f"{relative_spread(np.asarray(got[name]))[1]:8.4f}" if not fails else "  failed")
            print(f"{mode:20} {name:8} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
