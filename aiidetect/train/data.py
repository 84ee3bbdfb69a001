"""Labelled datasets in the layouts the field uses, read into one list of items.

Supported (auto-detected per argument):
- folder with ``real/`` and ``ai/<generator>/`` (``ai/`` files directly inside get generator "unknown-ai");
- GenImage: ``<generator>/{train,val}/{ai,nature}/`` (pick the split with ``split=``);
- UniversalFakeDetect / CNNSpot: ``<generator>/[<class>/]{0_real,1_fake}/``;
- a CSV manifest with columns ``file,label[,generator]`` (paths relative to the CSV),
  like ../shared/data/dev/manifest.csv. Rows whose label is not real/ai are skipped.
"""
from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif",
              ".jfif", ".jpe"}


@dataclass(frozen=True)
class Item:
    path: str
    label: int          # 0 real, 1 ai
    generator: str      # "real" for real images

    @property
    def label_name(self) -> str:
        return "ai" if self.label else "real"


def _images_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def detect_layout(src: Path) -> str:
    if src.is_file() and src.suffix.lower() == ".csv":
        return "manifest"
    if not src.is_dir():
        raise ValueError(f"{src}: not a CSV manifest or a folder")
    if (src / "real").is_dir() and (src / "ai").is_dir():
        return "folder"
    subs = [p for p in src.iterdir() if p.is_dir()]
    if any((s / "train").is_dir() or (s / "val").is_dir() for s in subs) and \
            any(q.name in ("ai", "nature") for s in subs for sp in ("train", "val") if (s / sp).is_dir()
                for q in (s / sp).iterdir()):
        return "genimage"
    if any(p.name in ("0_real", "1_fake") for p in src.rglob("*") if p.is_dir()):
        return "cnnspot"
    raise ValueError(f"{src}: unknown layout; expected real/+ai/<gen>/, GenImage, UniversalFakeDetect "
                     f"(0_real/1_fake) or a CSV manifest")


def load_items(sources: Iterable[str | Path], split: str = "train") -> list[Item]:
    items: list[Item] = []
    for s in sources:
        src = Path(s)
        layout = detect_layout(src)
        if layout == "manifest":
            items += _from_manifest(src)
        elif layout == "folder":
            items += [Item(str(p), 0, "real") for p in _images_under(src / "real")]
            ai = src / "ai"
            for p in _images_under(ai):
                rel = p.relative_to(ai).parts
                items.append(Item(str(p), 1, rel[0] if len(rel) > 1 else "unknown-ai"))
        elif layout == "genimage":
            for gen in sorted(p for p in src.iterdir() if p.is_dir()):
                d = gen / split
                if not d.is_dir():
                    continue
                items += [Item(str(p), 0, "real") for p in _images_under(d / "nature")] if (d / "nature").is_dir() else []
                items += [Item(str(p), 1, gen.name) for p in _images_under(d / "ai")] if (d / "ai").is_dir() else []
        else:  # cnnspot
            for d in sorted(p for p in src.rglob("*") if p.is_dir() and p.name in ("0_real", "1_fake")):
                rel = d.relative_to(src).parts
                gen = rel[0] if len(rel) > 1 else src.name
                lab = 1 if d.name == "1_fake" else 0
                items += [Item(str(p), lab, gen if lab else "real") for p in sorted(d.iterdir())
                          if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    if not items:
        raise ValueError("no labelled images found in " + ", ".join(map(str, sources)))
    return items


def _from_manifest(csv_path: Path) -> list[Item]:
    base = csv_path.parent
    out = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            lab = (row.get("label") or "").strip().lower()
            if lab not in ("real", "ai", "fake", "0", "1"):
                continue
            y = 1 if lab in ("ai", "fake", "1") else 0
            gen = (row.get("generator") or "").strip() or ("unknown-ai" if y else "real")
            p = Path(row["file"])
            out.append(Item(str(p if p.is_absolute() else base / p), y, "real" if y == 0 else gen))
    return out


def summarize(items: Sequence[Item]) -> dict:
    """Training-set summary for a head's manifest."""
    gens = Counter(i.generator for i in items)
    return {"n": len(items), "n_real": sum(1 for i in items if i.label == 0),
            "n_ai": sum(1 for i in items if i.label == 1), "generators": dict(sorted(gens.items()))}


def few_shot(items: Sequence[Item], shots: int | None, seed: int = 0, by: str = "label") -> list[Item]:
    """Keep at most `shots` items per class (by="label") or per generator (by="generator")."""
    if not shots:
        return list(items)
    rng = random.Random(seed)
    groups: dict = {}
    for it in items:
        groups.setdefault(it.label if by == "label" else it.generator, []).append(it)
    out = []
    for k in sorted(groups, key=str):
        g = list(groups[k])
        rng.shuffle(g)
        out += g[:shots]
    return sorted(out, key=lambda i: i.path)


def split_train_val(items: Sequence[Item], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Stratified by generator so every generator is seen in both parts when it can be."""
    rng = random.Random(seed)
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.generator, []).append(it)
    tr, va = [], []
    for k in sorted(groups):
        g = sorted(groups[k], key=lambda i: i.path)
        rng.shuffle(g)
        n_val = int(round(len(g) * val_fraction)) if len(g) > 1 else 0
        va += g[:n_val]
        tr += g[n_val:]
    return tr, va
