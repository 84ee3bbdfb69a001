"""``aiidetect train linear``: labelled images -> frozen features (cached) ->
cross-validated logistic probe -> head folder. Seconds for a few dozen images
on a CPU with a small backbone; the backbone forward pass dominates."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .head import save_probe
from .probe import LinearProbe, fit_probe


@dataclass
class TrainResult:
    out_dir: Path
    probe: LinearProbe
    n_train: int
    n_val: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def default_name(sources: Sequence[str | Path], generators: Sequence[str] | None) -> str:
    if generators:
        base = "-".join(sorted(generators))
    else:
        p = Path(sources[0])
        base = p.parent.name if p.stem in ("manifest", "labels", "index") else p.stem
    return "probe-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-") or "data")


def select_items(sources, shots: int | None = None, generators: Sequence[str] | None = None, seed: int = 0,
                 follow_links: bool = False, link_stats=None):
    from ..train.data import few_shot, load_items, require_both_classes

    items = load_items(sources, follow_links=follow_links, link_stats=link_stats)
    if generators:
        keep = set(generators)
        known = sorted({i.generator for i in items if i.label == 1})
        missing = keep - set(known)
        if missing:
            raise ValueError(f"no AI images of generator(s) {', '.join(sorted(missing))}; "
                             f"the data has: {', '.join(known) or 'none'}")
        items = [i for i in items if i.label == 0 or i.generator in keep]
    require_both_classes(items)
    return few_shot(items, shots, seed=seed, by="label")


def train_linear(sources: Sequence[str | Path], backbone_spec, *, name: str | None = None,
                 out: str | Path | None = None, shots: int | None = None,
                 generators: Sequence[str] | None = None, preprocess: str = "center-crop",
                 size: int | None = None, feature: str = "embed", val_fraction: float = 0.0, seed: int = 0,
                 device: str = "cpu", dtype: str = "float32", cache=None, weights_dirs=None,
                 backbone=None, progress: Callable[[str], None] | None = None,
                 follow_links: bool = False) -> TrainResult:
    """Train and save one probe. `cache`: a features.FeatureCache, or None for
    the default on-disk cache, or False for no cache."""
    from ..backbone import create_backbone
    from ..evaluate.metrics import logit_metrics
    from ..feature_cache import FeatureCache, extract_features
    from ..preprocess import make_spec
    from ..train.checks import check_features
    from ..train.data import LeftOut, split_train_val, summarize
    from ..heads import backbone_manifest, check_output_dir, default_output_dir, plain_name

    t0 = time.perf_counter()
    say = progress or (lambda s: None)
    name = plain_name(name or default_name(sources, generators))
    out_dir = Path(out) if out else default_output_dir(name, weights_dirs)
    check_output_dir(out_dir, name, "linear")  # before the features are extracted, not after
    links = LeftOut()
    items = select_items(sources, shots, generators, seed, follow_links, links)
    if links.note():
        say(links.note())
    if val_fraction > 0:
        train_items, val_items = split_train_val(items, val_fraction, seed)
    else:
        train_items, val_items = list(items), []
    say(f"{len(train_items)} training images ({sum(i.label for i in train_items)} ai), {len(val_items)} held out")

    bb = backbone or create_backbone(backbone_spec, device=device, dtype=dtype)
    spec = make_spec(preprocess, int(size or bb.image_size), bb.mean, bb.std)
    layers: tuple[int, ...] = ()
    out_name = feature
    if feature.startswith("cls_"):
        layers = (int(feature[4:]) % bb.layers,)
        out_name = f"cls_{layers[0]}"
    elif feature != "embed":
        raise ValueError(f"unknown feature {feature!r}: use embed or cls_<block>")
    if cache is None:
        cache = FeatureCache()
    elif cache is False:
        cache = None

    def feats(group, digests=None, phashes=None):
        paths = [i.path for i in group]
        got, fails = extract_features(bb, paths, spec, layers, cache=cache, digests=digests, phashes=phashes)
        bad = {p for p, _ in fails}
        y = np.array([i.label for i in group if i.path not in bad], dtype=np.int64)
        X = got[out_name] if len(y) else np.zeros((0, 0), np.float32)
        return X, y, fails

    say(f"extracting features with {bb.spec.describe()} ({spec['mode']} {spec['size']})")
    trained_digests: dict[str, str] = {}
    trained_phashes: dict[str, int | None] = {}
    X, y, failures = feats(train_items, trained_digests, trained_phashes)
    if len(y) == 0:
        raise ValueError("no training image could be decoded")
    bad = {p for p, _ in failures}
    if failures and len(set(y.tolist())) < 2:
        # fit_probe's "a probe needs both classes; got 2 real and 0 ai" said nothing of the images lost
        kept = "real" if y[0] == 0 else "AI"
        raise ValueError(f"only {kept} training images could be decoded ({len(y)}); {len(failures)} could not, "
                         f"e.g. {failures[0][0]}: {failures[0][1]}. A probe needs both classes: replace or "
                         "remove the unreadable images")
    check_features(X, [i.path for i in train_items if i.path not in bad])
    probe = fit_probe(X, y, seed=seed)
    say(f"fitted: C={probe.info.get('C')}, cross-validation folds {probe.info.get('cv_folds')}")

    metrics: dict[str, Any] = {}
    if "cv_metrics" in probe.info:
        metrics["cross_validated"] = {**probe.info["cv_metrics"],
                                      "note": "out-of-fold on the training images at the chosen C"}
    n_val = 0
    if val_items:
        Xv, yv, fv = feats(val_items)
        failures += fv
        n_val = len(yv)
        if n_val:
            metrics["held_out"] = {**logit_metrics(yv, probe.logits(Xv), ndigits=4),
                                   "note": f"stratified hold-out of {val_fraction:.0%} of the selected images"}
    if cache is not None and getattr(cache, "error", None):
        say(f"note: feature cache problem (features recomputed or not saved): {cache.error}")
    data = {**summarize(train_items), "sources": [str(s) for s in sources], "shots_per_class": shots,
            "generators_filter": list(generators) if generators else None, "seed": seed,
            "undecodable": len(failures), "held_out": n_val}
    # The images the probe was fitted on (the held-out ones were not), so eval and calibrate can
    # tell when they are shown them again.
    # (digests of the bytes the features came from: no second read of every image)
    from ..train_record import record

    trained_on, keys_file = record(trained_digests.values(),
                                   "images the probe was fitted on (the held-out split excluded)",
                                   phashes=trained_phashes.values())
    save_probe(out_dir, probe, name=name, backbone_block=backbone_manifest(bb), preprocessing=spec,
               feature=out_name, data=data, metrics=metrics,
               source="trained locally with `aiidetect train linear`", license="user data; check the images' terms",
               extra={"training_images": trained_on}, extra_files=keys_file)
    return TrainResult(out_dir=out_dir, probe=probe, n_train=len(y), n_val=n_val, failures=failures,
                       metrics=metrics, seconds=time.perf_counter() - t0)
