"""The loop a user would otherwise run: UniversalFakeDetect's validate.py, reduced
to what costs time.

What it does per file, as the reference code does it: PIL decode and convert to
RGB, 224 center crop without resizing, ToTensor + Normalize (CLIP mean/std),
batches from a torch DataLoader with worker processes, the CLIP image encoder
in float32, a linear head on the embedding, sigmoid. No metadata, no cache, no
fusion, no records. It is the speed baseline of benchmarks/peer_compare.py and
deliberately knows nothing of aiidetect except the import shim that makes the
CUDA-linked torchvision wheel importable beside a CPU torch (docs/install.md).

    python benchmarks/peer_reference.py --backbone ViT-B-16 FILE_OR_FOLDER... [--json out.json]

Weights are random (open_clip, no pretrained tag): speed does not depend on
their values, and no checkpoint can be downloaded on an offline machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def list_files(args: list[str]) -> list[str]:
    out: list[str] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTS)
        elif p.is_file():
            out.append(str(p))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--backbone", default="ViT-B-16", help="open_clip model name (random init)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--json", help="write per-file probabilities and timings here")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from aiidetect.backbone import import_open_clip  # only for the torchvision import shim

    open_clip = import_open_clip()
    from torchvision import transforms

    t_import = time.perf_counter() - t0
    files = list_files(a.paths)
    tf = transforms.Compose([transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD)])

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                return tf(im.convert("RGB")), i

    torch.manual_seed(0)
    t1 = time.perf_counter()
    model = open_clip.create_model(a.backbone, pretrained=None).visual.eval()
    head = torch.nn.Linear(model.output_dim, 1)
    t_build = time.perf_counter() - t1
    loader = torch.utils.data.DataLoader(Files(), batch_size=a.batch_size, shuffle=False, num_workers=a.workers)
    probs: dict[str, float] = {}
    t2 = time.perf_counter()
    with torch.no_grad():
        for x, idx in loader:
            p = torch.sigmoid(head(model(x))).flatten()
            for i, v in zip(idx.tolist(), p.tolist()):
                probs[files[i]] = v
    t_loop = time.perf_counter() - t2
    res = {"files": len(files), "backbone": a.backbone, "batch_size": a.batch_size, "workers": a.workers,
           "threads": torch.get_num_threads(), "import_s": round(t_import, 3), "build_s": round(t_build, 3),
           "loop_s": round(t_loop, 3), "images_per_s_loop": round(len(files) / t_loop, 3) if t_loop else None}
    if a.json:
        Path(a.json).write_text(json.dumps({**res, "p": probs}, indent=1))
    print(json.dumps(res), file=sys.stderr)
    return 0 if len(probs) == len(files) else 2


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
