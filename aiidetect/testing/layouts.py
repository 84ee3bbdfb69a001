"""Miniature copies of the benchmark folder layouts, made of small synthetic images.

Fakes carry a faint period-2 checkerboard and reals do not, so a detector
trained on one miniature has something to learn; the point of these sets is
the folder structure, not the task."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64


def _img(path: Path, seed: int, fake: bool) -> None:
    rng = np.random.default_rng(seed)
    base = rng.normal(128, 30, (SIZE // 8, SIZE // 8, 3))
    x = np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 3, (SIZE, SIZE, 3))
    if fake:
        i, j = np.indices((SIZE, SIZE))
        x += np.where((i + j) % 2 == 0, 6.0, -6.0)[..., None]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(path)


def fill(folder: Path, n: int, fake: bool, seed: int) -> list[Path]:
    out = []
    for k in range(n):
        p = folder / f"{'f' if fake else 'r'}{k:02d}.png"
        _img(p, seed * 1000 + k, fake)
        out.append(p)
    return out


def fill_pair(folder: Path, n: int, seed: int, real: str = "0_real", fake: str = "1_fake") -> None:
    """folder/<real> and folder/<fake>, n images each."""
    fill(folder / real, n, False, seed)
    fill(folder / fake, n, True, seed)


# GenImage as released: <generator>/<subset>/{train,val}/{ai,nature}
GENIMAGE = {"stable_diffusion_v_1_4": "imagenet_ai_0419_sdv4", "ADM": "imagenet_ai_0508_adm"}


def genimage_nested(root: Path, n: int = 3) -> Path:
    s = 0
    for gen, sub in GENIMAGE.items():
        for split in ("train", "val"):
            s += 1
            fill_pair(root / gen / sub / split, n, s, "nature", "ai")
    return root


def genimage_flat(root: Path, n: int = 3) -> Path:
    s = 100
    for gen in GENIMAGE:
        for split in ("train", "val"):
            s += 1
            fill_pair(root / gen / split, n, s, "nature", "ai")
    return root


CLASSES = ("airplane", "cat")


def ufd_train(root: Path, n: int = 3) -> Path:
    """CNNSpot/UFD training set as downloaded: train/<lsun class>/{0_real,1_fake}, all ProGAN."""
    s = 200
    for c in CLASSES:
        s += 1
        fill_pair(root / "train" / c, n, s)
    return root / "train"


def cnnspot_test(root: Path, n: int = 3) -> Path:
    """CNNSpot test set: <generator>/[<class>/]{0_real,1_fake}."""
    s = 300
    for c in CLASSES:
        s += 1
        fill_pair(root / "progan" / c, n, s)
    s += 1
    fill_pair(root / "biggan", n, s)
    return root


def ufd_diffusion(root: Path, n: int = 3) -> Path:
    """UFD diffusion test set: fakes per subset, reals in laion/ and imagenet/ beside them."""
    s = 400
    fill(root / "laion" / "0_real", n, False, s + 1)
    fill(root / "imagenet" / "0_real", n, False, s + 2)
    for k, sub in enumerate(("guided", "ldm_200", "glide_100_10", "dalle")):
        fill(root / sub / "1_fake", n, True, s + 10 + k)
    return root


def digests_of(paths) -> list[str]:
    """SHA-256 of each readable file, as the trainers record them (train_record): what a test expects a
    head's training record to hold (one that cannot be read was not trained on either)."""
    from ..hashing import sha256_file
    from ..limits import DEFAULT_MAX_BYTES

    out = []
    for p in paths:
        try:
            out.append(sha256_file(p, DEFAULT_MAX_BYTES))
        except OSError:
            continue
    return out
