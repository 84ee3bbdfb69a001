"""Training CLIP-Flow heads: real features + proxy features -> flow -> calibration -> head.

The objective (per-dimension NLL u(x) = -log p(x) / D, in nats):

    L = w_real  * mean_i u(r_i)
      + w_proxy * mean_i max(0, m - (u(p_i) - u(r_i)))

where r_i is a (noised) real training feature and p_i a proxy made *from the
same photo* r_i. Why this form:
- the proxy term pushes every proxy at least m nats/dim above its own source
  photo. Pairing with the source means the flow can only satisfy it by
  reacting to the spectral modification, not to what the photo shows;
- it is a hinge: "lower the likelihood of proxies" without a bound has no
  minimum (a density can send any region to -inf); once a proxy is m nats/dim
  below its source it stops pulling, so the flow stays a usable density;
- the real term (on by default, w_real = 1) is plain maximum likelihood on
  real photos: it keeps the flow a density model of real photos, so that the
  NLL of an image from a generator no proxy imitates is still judged against
  "what real photos look like", not only against the proxies. w_real = 0
  gives the proxy-only variant (the issue's "optionally raise real").
- defaults m = 0.5 nats/dim, w_proxy = 1, Gaussian input noise 0.2 (in
  standardised units), the *same* noise vector added to a photo and to its
  proxy: it puts a floor under the variance the flow can give any direction
  (with fewer photos than feature dimensions, maximum likelihood otherwise
  collapses onto the training photos and held-out real NLLs explode), while
  the proxy-minus-photo difference the hinge looks at is left intact.

Score: total NLL in nats, standardised with the mean/std of held-out real
photos (z); p_ai = sigmoid(slope * (z - z_t)) where z_t is the (1 - FPR)
quantile of held-out real z (so p_ai > 0.5 on at most FPR of real photos) and
the slope is a 1-D logistic fit of held-out reals vs held-out proxies.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..proxies import DEFAULT_KINDS, apply_proxy, parse_kinds

PROXY_CACHE_VERSION = "clipflow-proxy-v1"
ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class FitConfig:
    steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    real_weight: float = 1.0
    proxy_weight: float = 1.0
    margin: float = 0.5          # nats per dimension
    noise: float = 0.2           # std of Gaussian input noise, standardised units (shared by a photo and its proxy)
    grad_clip: float = 5.0
    seed: int = 0
    paired: bool = True          # False: each proxy is compared with the batch's reals, not its own source photo


def fit_flow(model, real, proxy=None, proxy_src=None, cfg: FitConfig | None = None,
             progress: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Train `model` (a FeatureFlow) in place. real: (N, D); proxy: (M, D) with
    proxy_src[j] = index into real of proxy j's source photo. Returns the loss
    curve (one value per step). Standardisation and ActNorm are initialised
    from `real` here."""
    import torch

    cfg = cfg or FitConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    real = torch.as_tensor(real, dtype=torch.float32)
    model.set_standardisation(real)
    model.init_actnorm(real[torch.randperm(len(real), generator=g)[:512]])
    use_proxy = proxy is not None and len(proxy) > 0 and cfg.proxy_weight > 0
    if use_proxy:
        proxy = torch.as_tensor(proxy, dtype=torch.float32)
        src = torch.as_tensor(np.asarray(proxy_src), dtype=torch.long)
        # proxies by source photo, so a batch of reals can pick one proxy of each
        by_src: list[list[int]] = [[] for _ in range(len(real))]
        for j, s in enumerate(src.tolist()):
            by_src[s].append(j)
        has_proxy = torch.tensor([i for i, lst in enumerate(by_src) if lst], dtype=torch.long)
        counts = torch.tensor([len(lst) for lst in by_src], dtype=torch.long)
        offsets = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), counts[:-1]]), 0)
        flat = torch.tensor([j for lst in by_src for j in lst], dtype=torch.long)
    d = real.shape[1]
    std = model.feat_std.clone()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.steps))
    losses: list[float] = []
    # small flows are dominated by per-op overhead: extra threads only add contention
    threads = torch.get_num_threads()
    if d * cfg.batch <= 256 * 128:
        torch.set_num_threads(1)
    model.train()
    try:
        for step in range(cfg.steps):
            pool = has_proxy if use_proxy else torch.arange(len(real))
            idx = pool[torch.randint(len(pool), (min(cfg.batch, len(pool)),), generator=g)]
            x = real[idx]
            if use_proxy:
                if cfg.paired:
                    pick = flat[offsets[idx] + (torch.rand(len(idx), generator=g) * counts[idx]).long()]
                else:
                    pick = torch.randint(len(proxy), (len(idx),), generator=g)
                x = torch.cat([x, proxy[pick]])
            # paired: the same noise vector for a photo and its proxy: it blurs *which photo* this is
            # (against memorising the training set) but leaves the proxy-minus-photo difference intact
            eps = torch.randn(len(idx), d, generator=g)
            if use_proxy:
                eps = torch.cat([eps, eps if cfg.paired else torch.randn(len(idx), d, generator=g)])
            x = x + cfg.noise * std * eps
            u = -model(x) / d  # one pass for reals and their proxies
            u_real = u[: len(idx)]
            loss = cfg.real_weight * u_real.mean()
            if use_proxy:
                u_proxy = u[len(idx):]
                ref = u_real if cfg.paired else u_real.mean()
                loss = loss + cfg.proxy_weight * torch.relu(cfg.margin - (u_proxy - ref)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress:
                progress(step + 1, cfg.steps, losses[-1])
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return losses


def nll_numpy(model, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(-model(torch.as_tensor(x[i:i + batch], dtype=torch.float32)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# --------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------
def calibrate(nll_real: np.ndarray, nll_proxy: np.ndarray | None, fpr: float = 0.01,
              default_slope: float = 2.0) -> dict[str, Any]:
    """Standardise on held-out reals; threshold at their (1 - fpr) quantile.
    Returns the manifest's calibration block: a Platt map on the standardised
    NLL z (read by probability.Calibrator) with nll_mean/nll_std beside it."""
    nll_real = np.asarray(nll_real, dtype=np.float64)
    mu = float(nll_real.mean())
    sd = float(nll_real.std(ddof=1)) if len(nll_real) > 1 else 1.0
    sd = sd if sd > 1e-9 else 1.0
    z_real = (nll_real - mu) / sd
    # "higher": the threshold is an observed value, so at most fpr of these reals lie strictly above it
    t = float(np.quantile(z_real, 1.0 - fpr, method="higher"))
    slope = default_slope
    n_proxy = 0
    note = "no held-out proxies: slope not fitted, default used"
    if nll_proxy is not None and len(nll_proxy) > 1:
        z_proxy = (np.asarray(nll_proxy, dtype=np.float64) - mu) / sd
        n_proxy = len(z_proxy)
        slope, note = _logistic_slope(z_real, z_proxy, default_slope)
    # Platt on z centred at the threshold (p_ai = 0.5 exactly there); slope and
    # threshold_z stay under their old names for readers of earlier releases.
    out = {"method": "platt", "a": float(slope), "b": 0.0, "x0": t, "fit": "fpr-quantile+logistic-slope",
           "fpr": float(fpr), "nll_mean": mu, "nll_std": sd,
           "threshold_z": t, "slope": float(slope), "n_real": int(len(nll_real)), "n_proxy": n_proxy,
           "achieved_fpr": float((z_real > t).mean())}
    if note:
        out["slope_note"] = note
    return out


class MeaninglessHead(ValueError):
    """The trained flow does not separate held-out proxies from held-out reals
    the right way round: a head built from it would mislead."""


def _logistic_slope(z_real: np.ndarray, z_proxy: np.ndarray, default: float) -> tuple[float, str | None]:
    """-> (slope of P(AI) in z, None) or (slope, why it is not a fitted value).
    A non-positive fitted slope (proxies *more* likely than reals) raises
    MeaninglessHead: clamping it would hide that the head points the wrong way."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([z_real, z_proxy])[:, None]
    y = np.concatenate([np.zeros(len(z_real)), np.ones(len(z_proxy))])
    if not np.isfinite(x).all():
        return default, "non-finite held-out NLL: slope not fitted, default used"
    try:
        a = float(LogisticRegression(C=1.0, class_weight="balanced").fit(x, y).coef_[0, 0])
    except ValueError as exc:  # e.g. a single class after filtering
        return default, f"slope fit failed ({exc}): default used"
    if a <= 0:
        raise MeaninglessHead(
            f"held-out proxies are scored as likely as or more likely than held-out real photos (logistic slope "
            f"{a:.3g} <= 0): the head would call the proxies real. Train longer (--steps), use more photos, or "
            f"choose proxy kinds this backbone can see (--proxy-kinds); see docs/detectors/clip-flow.md")
    if a < 0.25 or a > 20.0:
        return float(min(max(a, 0.25), 20.0)), f"fitted slope {a:.3g} clipped to [0.25, 20]"
    return a, None


def _mean(x: np.ndarray, d: int) -> float | None:
    """Mean NLL per dimension; None (not NaN: manifests are JSON) when empty."""
    return float(x.mean() / d) if len(x) else None


def auroc(neg: np.ndarray, pos: np.ndarray) -> float | None:
    if len(neg) == 0 or len(pos) == 0:
        return None
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([np.zeros(len(neg)), np.ones(len(pos))])
    return float(roc_auc_score(y, np.concatenate([neg, pos])))


# --------------------------------------------------------------------------
# Features of reals and proxies
# --------------------------------------------------------------------------
def feature_vector(feats: dict[str, np.ndarray], outputs: Sequence[str]) -> np.ndarray:
    """Concatenate encoder outputs in the head's order: (N, D) or (D,)."""
    return np.concatenate([np.asarray(feats[o], dtype=np.float32) for o in outputs], axis=-1)


def proxy_transform_key(kinds: Sequence[str], seed: int, copy: int) -> str:
    return f"{PROXY_CACHE_VERSION}|{','.join(kinds)}|seed={seed}|copy={copy}"


def make_proxy_pixels(u8: np.ndarray, kinds: Sequence[str], seed: int, copy: int) -> tuple[np.ndarray, dict]:
    """Proxy `copy` of a model-size uint8 image. The randomness is keyed by the
    pixels themselves, so a proxy is a pure function of (photo, seed, copy):
    that is what makes proxy features cacheable across runs."""
    key = int.from_bytes(hashlib.sha256(u8.tobytes()).digest()[:8], "little")
    rng = np.random.default_rng([int(seed), key, int(copy)])
    kind = kinds[int(rng.integers(len(kinds)))]
    return apply_proxy(u8, kind, rng)


def proxy_features(backbone, paths: Sequence[str], spec, layers: Sequence[int], kinds: Sequence[str],
                   per_image: int, seed: int, cache=None, progress: Callable[[int], None] | None = None
                   ) -> tuple[dict[str, np.ndarray], np.ndarray, list[str], list[tuple[str, str]]]:
    """Features of `per_image` proxies of each photo. Returns (features,
    source index per row into `paths`, kind per row, failures)."""
    from ..decode import Sample
    from ..feature_cache import encode_images, encoder_key, output_names
    from ..pixels import PixelReader, failure, ordered
    from ..preprocess import spec_key, to_uint8

    names = output_names(layers, backbone.layers)
    enc = encoder_key(backbone)
    rows: list[dict[str, np.ndarray]] = []
    src: list[int] = []
    kinds_out: list[str] = []
    failures: list[tuple[str, str]] = []
    preps = [spec_key(spec) + "|" + proxy_transform_key(kinds, seed, j) for j in range(per_image)]
    reader = PixelReader(keep_image=True, keep_bytes=False)

    def load(p: str, index: int) -> Sample:
        # Read, hash and look up in the decode workers; decode only when a proxy is missing.
        s = reader.read(p, index)
        if s.ok and cache is not None:
            hits = [cache.get(s.record.sha256, enc, pr, names + ["_kind"]) for pr in preps]
            if all(h is not None for h in hits):
                s.cached, s.data = {"rows": hits}, None
                return s
        return reader.decode(s)

    for i, s in enumerate(ordered(load, paths)):
        try:
            if not s.ok:
                failures.append((s.path, failure(s)))
                continue
            hits = s.cached["rows"] if s.cached is not None else None
            if hits is None:
                u8 = to_uint8(s.image, spec)
                s.image = None
                made = [make_proxy_pixels(u8, kinds, seed, j) for j in range(per_image)]
                out = encode_images(backbone, [m[0] for m in made], spec, layers)
                hits = []
                for j, pr in enumerate(preps):
                    row = {k: out[k][j] for k in names}
                    # the kind rides along in the cache as a one-element vector (index into kinds)
                    row["_kind"] = np.array([list(kinds).index(made[j][1]["kind"])], np.float32)
                    if cache is not None:
                        cache.put(s.record.sha256, enc, pr, row)
                    hits.append(row)
            for h in hits:
                rows.append(h)
                src.append(i)
                kinds_out.append(kinds[int(h["_kind"][0])])
        except Exception as exc:  # noqa: BLE001 - one photo's proxies failing must not end training
            failures.append((s.path, f"{type(exc).__name__}: {exc}"))
        finally:
            if progress:
                progress(i + 1)
    feats = {k: np.stack([r[k] for r in rows]) if rows else np.zeros((0, 0), np.float32) for k in names}
    return feats, np.asarray(src, dtype=np.int64), kinds_out, failures


# --------------------------------------------------------------------------
# The whole recipe
# --------------------------------------------------------------------------
@dataclass
class TrainFlowConfig:
    kinds: Sequence[str] = DEFAULT_KINDS
    layers: Sequence[int] = ()
    proxies_per_image: int = 4
    val_fraction: float = 0.2
    fpr: float = 0.01
    max_images: int | None = None
    seed: int = 0
    preprocess: dict[str, Any] | None = None   # default: center-crop (no resize) at the backbone's size
    blocks: int = 6
    hidden: int = 256
    linear: str = "lu"
    fit: FitConfig = field(default_factory=FitConfig)


def load_sources(sources: Sequence[str], plain_label: int = 0, follow_links: bool = False, link_stats=None,
                 check_copies: bool = True):
    """Items from every source. A CSV manifest or a labelled layout (real/ + ai/,
    GenImage, UniversalFakeDetect) is read as such; any other folder counts as
    all-`plain_label` (a photo archive for --real, a generator's output for --ai).
    Links inside a folder: train.data's rule (counted in `link_stats` when not followed).
    One image twice (from two sources, through a link, or copied) is refused or left out as by
    load_items, across all the sources: loaded one source at a time, flow trained and calibrated on
    doubled images in silence (`check_copies=False`: the caller checks them, with more)."""
    from ..train.data import Item, LeftOut, detect_layout, drop_copies, images_in, load_items

    stats = link_stats if link_stats is not None else LeftOut()
    items = []
    for s in sources:
        p = Path(s)
        try:
            detect_layout(p, follow_links=follow_links)
        except ValueError:
            if not p.is_dir():
                raise
            items += [Item(str(f), plain_label, "unknown-ai" if plain_label else "real")
                      for f in images_in(p, follow_links, stats)]
            continue
        items += load_items([p], follow_links=follow_links, link_stats=stats, check_copies=False)
    return drop_copies(items, stats) if check_copies else items


@dataclass
class FlowData:
    """What `aiidetect train flow` trains and validates on, read before any model is built."""

    reals: list                  # the real photos to train and calibrate on (after --max-images)
    n_ai_rows_ignored: int       # AI-labelled rows of the --real sources
    real_links: Any              # LeftOut of the --real sources
    ai_items: list = field(default_factory=list)  # AI images for the validation report only
    ai_links: Any = None


def load_flow_data(real_sources: Sequence[str], ai_sources: Sequence[str] = (), max_images: int | None = None,
                   seed: int = 0, follow_links: bool = False) -> FlowData:
    """Read and check every data source: ValueError naming the problem (an unreadable manifest, an image
    given twice, fewer than 4 real photos). train flow calls this before it builds the backbone, as the
    other trainers do, so a wrong source costs no model load. One image given both as a real photo
    (--real) and as an AI image (--ai), the same file or a copy, is refused as in evaluation: its
    class is unknown, and the validation report compared held-out reals with some of themselves.
    The same manifest may be both (its real rows train, its AI rows validate). One image twice with
    one label is used once (train.data.drop_copies across both, each file hashed once; counted in the
    side's LeftOut)."""
    from ..train.data import LeftOut, drop_copies

    links = LeftOut()
    items = load_sources(real_sources, 0, follow_links, links, check_copies=False)
    reals = [i for i in items if i.label == 0]
    ignored = [i for i in items if i.label != 0]
    _enough_reals(reals)  # before the --ai sources are read
    ai_items, ai_links = [], None
    if ai_sources:
        ai_links = LeftOut()
        ai_items = [i for i in load_sources(ai_sources, 1, follow_links, ai_links, check_copies=False)
                    if i.label == 1]
    real_paths, ai_paths = {i.path for i in reals}, {i.path for i in ai_items}
    # a manifest given as both: its AI rows, ignored on the --real side, are the --ai side's own rows
    ignored_elsewhere = [i for i in ignored if i.path not in ai_paths]
    # the images used first, so a copy kept is one trained or validated on, not an ignored AI row
    copies = LeftOut()
    kept = {id(i) for i in drop_copies(reals + ai_items + ignored_elsewhere, copies)}
    for pair in copies.copies:
        if pair[0] in real_paths:
            links.copies.append(pair)
        elif pair[0] in ai_paths:
            ai_links.copies.append(pair)
    reals = [i for i in reals if id(i) in kept]
    ai_items = [i for i in ai_items if id(i) in kept]
    _enough_reals(reals, " once each")
    return FlowData(select_reals(reals, max_images, seed), len(ignored), links, ai_items, ai_links)


def _enough_reals(reals, how: str = "") -> None:
    if len(reals) < 4:
        raise ValueError(f"need at least 4 real photos, found {len(reals)}{how}")


def select_reals(items, max_images: int | None, seed: int):
    """Only real-labelled items are used (AI rows of a manifest are dropped)."""
    reals = sorted((i for i in items if i.label == 0), key=lambda i: i.path)
    if max_images and len(reals) > max_images:
        rng = random.Random(seed)
        reals = sorted(rng.sample(reals, max_images), key=lambda i: i.path)
    return reals


def split_reals(paths: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    paths = list(paths)
    rng = random.Random(seed)
    rng.shuffle(paths)
    n_val = max(2, int(round(len(paths) * val_fraction)))
    if len(paths) - n_val < 2:
        raise ValueError(f"need at least 4 readable real photos to train and calibrate, got {len(paths)}")
    return sorted(paths[n_val:]), sorted(paths[:n_val])


def train_flow_head(backbone, real_sources: Sequence[str], out_dir: str | Path, name: str,
                    cfg: TrainFlowConfig, ai_sources: Sequence[str] = (), cache=None, follow_links: bool = False,
                    progress: ProgressFn | None = None, log: Callable[[str], None] | None = None,
                    data: FlowData | None = None) -> dict[str, Any]:
    """Everything `aiidetect train flow` does. Returns the manifest written. `data` is what
    load_flow_data read from these sources, when the caller checked them already."""
    import torch

    from ..feature_cache import extract_features, output_names
    from ..preprocess import make_spec
    from ..train.checks import check_features
    from ..train.data import summarize
    from ..heads import backbone_manifest, save_head
    from .model import FeatureFlow, FlowConfig

    say = log or (lambda s: None)
    kinds = parse_kinds(list(cfg.kinds))
    spec = cfg.preprocess or make_spec("center-crop", backbone.image_size)
    layers = sorted({int(i) % backbone.layers for i in cfg.layers})
    outputs = output_names(layers, backbone.layers)

    if data is None:
        data = load_flow_data(real_sources, ai_sources, cfg.max_images, cfg.seed, follow_links)
    if data.real_links.note():
        say(f"--real: {data.real_links.note()}")
    reals = data.reals
    n_ai_dropped = data.n_ai_rows_ignored
    if n_ai_dropped:
        say(f"ignoring {n_ai_dropped} AI-labelled rows of the training sources: CLIP-Flow trains on real photos only")

    def stage(label: str, total: int):
        return (lambda n: progress(label, n, total)) if progress else None

    paths = [i.path for i in reals]
    real_digests: dict[str, str] = {}  # the training record (train_record), from this one read
    real_phashes: dict[str, int | None] = {}
    feats, failures = extract_features(backbone, paths, spec, layers, cache=cache,
                                       progress=stage("real features", len(paths)), digests=real_digests,
                                       phashes=real_phashes)
    bad = {p for p, _ in failures}
    for p, why in failures:
        say(f"skipped {p}: {why}")
    ok = [p for p in paths if p not in bad]
    row_of = {p: k for k, p in enumerate(ok)}
    x_all = feature_vector(feats, outputs) if ok else np.zeros((0, 0), np.float32)
    tr_paths, va_paths = split_reals(ok, cfg.val_fraction, cfg.seed)
    check_features(x_all, ok, "real photos")

    pf, psrc, pkinds, pfail = proxy_features(backbone, ok, spec, layers, kinds, cfg.proxies_per_image, cfg.seed,
                                             cache=cache, progress=stage("proxy features", len(ok)))
    for p, why in pfail:
        say(f"no proxies for {p}: {why}")
    xp_all = feature_vector(pf, outputs)
    src_paths = [ok[s] for s in psrc]

    warnings: list[str] = []
    if cfg.fit.proxy_weight > 0 and len(psrc) == 0:
        warnings.append("no proxy could be made from any training photo: the flow is fitted by maximum likelihood "
                        "on real photos alone (no proxy hinge), and its slope is not fitted")
    tr_idx = {p: k for k, p in enumerate(tr_paths)}
    x_tr = x_all[[row_of[p] for p in tr_paths]]
    x_va = x_all[[row_of[p] for p in va_paths]]
    ptr = [j for j, p in enumerate(src_paths) if p in tr_idx]
    pva = [j for j, p in enumerate(src_paths) if p not in tr_idx]
    xp_tr, src_tr = xp_all[ptr], np.array([tr_idx[src_paths[j]] for j in ptr], dtype=np.int64)
    xp_va = xp_all[pva]

    torch.manual_seed(cfg.seed)
    fcfg = FlowConfig(dim=int(x_tr.shape[1]), blocks=cfg.blocks, hidden=cfg.hidden, linear=cfg.linear, seed=cfg.seed)
    model = FeatureFlow(fcfg)
    fit_progress = (lambda n, total, loss: progress("fit flow", n, total)) if progress else None
    losses = fit_flow(model, x_tr, xp_tr, src_tr, cfg.fit, progress=fit_progress)

    nll_tr, nll_va = nll_numpy(model, x_tr), nll_numpy(model, x_va)
    nll_ptr, nll_pva = nll_numpy(model, xp_tr), nll_numpy(model, xp_va)
    if not (np.isfinite(losses).all() and np.isfinite(nll_tr).all() and np.isfinite(nll_va).all()):
        # (it ended in sklearn's "Input contains NaN." from the metrics below)
        raise ValueError("training diverged: the flow gives non-finite likelihoods; lower --lr or use fewer --blocks")
    cal = calibrate(nll_va, nll_pva, cfg.fpr)
    if cal.get("slope_note"):
        warnings.append(f"calibration: {cal['slope_note']}")
    z = lambda v: (v - cal["nll_mean"]) / cal["nll_std"]  # noqa: E731
    d = x_tr.shape[1]
    metrics: dict[str, Any] = {
        "nll_per_dim": {"real_train": _mean(nll_tr, d), "real_val": _mean(nll_va, d),
                        "proxy_train": _mean(nll_ptr, d), "proxy_val": _mean(nll_pva, d)},
        "auroc_real_vs_proxy_train": auroc(nll_tr, nll_ptr),
        "auroc_real_vs_proxy_val": auroc(nll_va, nll_pva),
        "proxy_val_flagged_at_threshold": float((z(nll_pva) > cal["threshold_z"]).mean()) if len(nll_pva) else None,
        "per_kind_auroc_val": {},
        "final_loss": losses[-1] if losses else None,
    }
    kinds_va = [pkinds[j] for j in pva]
    for k in kinds:
        sel = np.array([kk == k for kk in kinds_va], dtype=bool)
        if sel.any():
            metrics["per_kind_auroc_val"][k] = auroc(nll_va, nll_pva[sel])
    ai_summary = None
    if ai_sources:
        ai_items = data.ai_items
        if data.ai_links.note():
            say(f"--ai: {data.ai_links.note()}")
        af, afail = extract_features(backbone, [i.path for i in ai_items], spec, layers, cache=cache,
                                     progress=stage("AI validation features", len(ai_items)))
        for p, why in afail:
            say(f"skipped {p}: {why}")
        unread = {p for p, _ in afail}
        if len(af["embed"]):
            nll_ai = nll_numpy(model, feature_vector(af, outputs))
            metrics["ai_validation"] = {
                "n": int(len(nll_ai)), "auroc_real_val_vs_ai": auroc(nll_va, nll_ai),
                "ai_flagged_at_threshold": float((z(nll_ai) > cal["threshold_z"]).mean()),
                "note": "AI images are used for this report only, never for training or calibration"}
        else:
            # Asked for and silently missing: the manifest said "n": 8 for eight files none of which decoded.
            warnings.append(f"--ai: no AI image to validate on ({len(ai_items)} AI-labelled, {len(unread)} of them "
                            f"unreadable): no AI validation report")
        ai_summary = {**summarize([i for i in ai_items if i.path not in unread]), "n_failed": len(unread)}

    manifest = {
        "name": name,
        "detector": "flow",
        "version": "1",
        "backbone": backbone_manifest(backbone),
        "preprocessing": spec,
        "labels": ["real", "ai"],
        "params": {
            "flow": fcfg.to_dict(),
            "features": {"outputs": outputs, "layers": layers},
            "fit": asdict(cfg.fit),
            "proxies": {"kinds": kinds, "per_image": cfg.proxies_per_image, "seed": cfg.seed,
                        "stage": "model input (after the preprocessing geometry)", "cache_key": PROXY_CACHE_VERSION},
            "objective": ("w_real*mean u(real) + w_proxy*mean relu(margin - (u(proxy) - u(its source real))), "
                          if cfg.fit.paired else
                          "w_real*mean u(real) + w_proxy*mean relu(margin - (u(proxy) - mean u(batch reals))), ")
                         + "u = NLL/D nats; see docs/detectors/clip-flow.md",
        },
        "score": {"kind": "flow-nll-z", "meaning": "(NLL - mean NLL of held-out reals) / their std; higher = less "
                                                   "like the real photos the flow was trained on"},
        "calibration": cal,
        "threshold": {"z": cal["threshold_z"], "nll": cal["nll_mean"] + cal["threshold_z"] * cal["nll_std"],
                      "fpr_target": cfg.fpr},
        "metrics": metrics,
        "warnings": warnings,
        "data": {"real": {"n_train": len(tr_paths), "n_val": len(va_paths), "n_failed": len(failures),
                          "n_ai_rows_ignored": n_ai_dropped, "sources": [str(s) for s in real_sources]},
                 "proxies": {"n_train": len(ptr), "n_val": len(pva)},
                 **({"ai_validation": ai_summary} if ai_summary else {})},
        "source": "aiidetect train flow",
        "license": "same as the training photos' licenses (the head is derived from their features)",
    }
    # Every real photo: the flow is fitted on the train part, and its threshold set on the held-out part's
    # likelihoods so that the target share of them is flagged, so eval on either measures nothing.
    # The --ai images only fed the validation report.
    from ..train_record import record

    manifest["training_images"], keys_file = record(
        real_digests.values(), "real photos the flow was fitted on and its threshold calibrated on",
        phashes=real_phashes.values())
    tensors = {f"flow.{k}": v for k, v in model.state_dict().items()}
    save_head(out_dir, tensors, manifest, extra_files=keys_file)
    if cache is not None and getattr(cache, "error", None):  # as train_linear says it
        say(f"note: feature cache problem (features recomputed or not saved): {cache.error}")
    return manifest
