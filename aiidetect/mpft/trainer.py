"""MPFT training loop: few-shot selection, validation split, TAM-masked
fine-tuning of adapter + mask token + two heads, checkpoints and resume,
temperature calibration on the validation split, and the head artifact.

Progress goes to stderr (rich); nothing here prints to stdout.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluate.metrics import logit_metrics
from ..preprocess import apply as preprocess_apply, make_spec
from ..probability import fit_temperature
from ..train.data import Item, few_shot, require_both_classes, split_train_val, summarize
from ..heads import backbone_manifest, save_head
from .augment import AugmentConfig, augment, shrink_for_cache
from .model import MASK_MODES, MPFTModel
from .tam import texture_scores, select_mask

CHECKPOINT = "checkpoint.pt"
# Options that change no draw and no number: a resumed run may differ in them without a word.
_NO_EFFECT = frozenset({"workers"})
# What a checkpoint of an earlier release, written before the option existed, trained with.
_BEFORE_THE_OPTION = {"augment.blur_min": 0.1}
# Learning rates and weight decay live in the optimiser's state: a resumed run keeps the checkpoint's.
_IN_THE_OPTIMISER = ("lr", "lr_head", "weight_decay")


@dataclass
class TrainConfig:
    # data
    shots: int | None = None            # per class (or per generator, see shots_by); None = all
    shots_by: str = "label"
    val_fraction: float = 0.2
    seed: int = 0
    preprocess_mode: str = "center-crop"     # no resize: keeps pixel-level traces
    # schedule
    epochs: int = 5
    steps: int | None = None            # overrides epochs when set
    batch_size: int = 16
    lr: float = 5e-4                    # adapter + mask token
    lr_head: float = 1e-3               # norm + heads
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    eval_every: int | None = None       # steps; default once per epoch
    checkpoint_every: int | None = None  # steps; default = eval_every
    # masking (TAM)
    mask_ratio: float = 0.3
    mask_mode: str = "drop"             # drop tokens | replace with learned token
    mask_select: str = "sample"         # topk | sample (texture-proportional)
    mask_power: float = 1.0
    texture_measure: str = "median-residual"  # tam.MEASURES; "laplacian" = the former measure
    # model
    adapter_mode: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("attn_in", "attn_out", "mlp_fc", "mlp_proj")
    last_n: int = 2
    train_norms: bool = False
    feature: str = "embed"
    attr_weight: float = 0.5            # loss = BCE(binary) + attr_weight * CE(attribution)
    accept_known: float = 0.95          # open-set attribution: share of known-generator images kept
    recipe: str = "project"             # recorded in the manifest: project | paper | clip-finetune
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 2                    # threads for decode / augmentation

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


_PLAIN = (str, int, float, bool, type(None), list, tuple)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options as "augment.blur_min": value; only plain values (a checkpoint may hold tensors
    anywhere, and `tensor != x` has no truth value)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, _PLAIN):
            out[f"{prefix}{k}"] = v
    return out


def changed_options(was: Any, now: dict[str, Any]) -> dict[str, Any]:
    """{option: its value then} for each training option a checkpoint's config (``was``) gives another
    value than ``now``. Options the checkpoint does not name are not compared, except those whose
    earlier fixed value is known (a checkpoint written before `blur_min` drew its blur from 0.1)."""
    if not isinstance(was, dict):
        return {}
    then, now = _flat(was), _flat(now)
    groups = {k.rsplit(".", 1)[0] for k in then if "." in k}
    then = {**{k: v for k, v in _BEFORE_THE_OPTION.items() if k.rsplit(".", 1)[0] in groups}, **then}
    return {k: v for k, v in then.items() if k in now and k not in _NO_EFFECT and v != now[k]}


@dataclass
class TrainResult:
    head_dir: Path
    manifest: dict[str, Any]
    model: MPFTModel
    history: list[dict[str, Any]]


class _NullProgress:
    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def log(self, *a, **k):
        pass


def _progress(show: bool):
    if not show:
        return _NullProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


def load_images(items: Sequence[Item], spec, workers: int = 2, log: Callable[[str], None] | None = None,
                digests: dict[str, str] | None = None, phashes: dict[str, int | None] | None = None):
    """Decode and shrink every item once; unreadable files are reported and skipped. `digests`, when
    given, gets {path: SHA-256 of the bytes decoded} (train_record), and `phashes` {path: perceptual
    hash of those bytes}."""
    from ..pixels import failure, iter_pixels

    # The shrink runs in the decode workers: a full-size image is never held for long. The hash is of the
    # bytes (decode.phash_decoded), as eval hashes them. Closed as a stop leaves the loop: held by this
    # frame, which the stop's traceback keeps, its queued decodes went on during the stop's wait for the
    # reads in flight.
    samples = iter_pixels([it.path for it in items], workers=workers, keep_image=True,
                          transform=lambda img, s: shrink_for_cache(img, spec), phash=phashes is not None)
    kept_items, imgs, skipped = [], [], []
    with contextlib.closing(samples):
        for it, s in zip(items, samples):
            if not s.ok:
                skipped.append(f"{it.path}: {failure(s)}")
            else:
                kept_items.append(it)
                imgs.append(s.image)
                if digests is not None:
                    digests[it.path] = s.record.sha256
                if phashes is not None:
                    phashes[it.path] = s.phash
    if skipped and log:
        log(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}")
    return kept_items, imgs, skipped


# MPFT fits T on its small selection split: a narrower range than the fusion
# model's keeps separable tiny splits from making the head near-certain.
TEMPERATURE_BOUNDS = (0.02, 50.0)


UNKNOWN_GENERATOR = "unknown-generator"


def generator_probs(attr_logits: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """(N, K) attribution logits over ["real", gen...] -> (N, K-1) softmax over the generators only:
    which generator, given that the image is AI."""
    a = np.asarray(attr_logits, dtype=np.float64)[:, 1:]
    a = a - a.max(axis=1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=1, keepdims=True)


def fit_rejection(attr_logits: np.ndarray, labels: Sequence[str], accept: float = 0.95) -> float:
    """Open-set threshold on the top generator probability: the (1 - accept)
    quantile over AI images of known generators, so about `accept` of them keep
    their label and anything less certain is called UNKNOWN_GENERATOR."""
    top = generator_probs(attr_logits, labels).max(axis=1)
    return float(np.quantile(top, 1.0 - accept, method="lower"))


def open_set_label(attr_logits: np.ndarray, labels: Sequence[str], reject_below: float | None) -> tuple[str, float]:
    """One image's (generator label or UNKNOWN_GENERATOR, top generator probability)."""
    p = generator_probs(np.asarray(attr_logits, dtype=np.float64).reshape(1, -1), labels)[0]
    k = int(np.argmax(p))
    if reject_below is not None and p[k] < reject_below:
        return UNKNOWN_GENERATOR, float(p[k])
    return labels[1 + k], float(p[k])


class MPFTTrainer:
    def __init__(self, backbone, items: Sequence[Item], cfg: TrainConfig, out_dir: str | Path, name: str,
                 sources: Sequence[str] = (), show_progress: bool = True,
                 log: Callable[[str], None] | None = None):
        if cfg.mask_mode not in MASK_MODES:
            raise ValueError(f"mask mode must be one of {MASK_MODES}")
        self.bb = backbone
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.name = name
        self.sources = [str(s) for s in sources]
        self.show = show_progress
        self._log = log or (lambda msg: None)
        self.spec = make_spec(cfg.preprocess_mode, backbone.image_size, backbone.mean, backbone.std)
        chosen = few_shot(items, cfg.shots, seed=cfg.seed, by=cfg.shots_by)
        require_both_classes(chosen, "MPFT")
        tr, held = split_train_val(chosen, cfg.val_fraction, seed=cfg.seed)
        # Held-out images are split again: the "selection" part picks the best
        # state and fits the temperature; the "report" part is scored once at
        # the end, so the manifest's validation numbers are not chosen on the
        # very images they are measured on.
        sel, rep = split_train_val(held, 0.5, seed=cfg.seed + 1)
        self._digests: dict[str, str] = {}  # train and selection splits: the training record
        self._phashes: dict[str, int | None] = {}
        self.train_items, self.train_imgs, sk1 = load_images(tr, self.spec, cfg.workers, self._log, self._digests,
                                                             self._phashes)
        self.val_items, self.val_imgs, sk2 = load_images(sel, self.spec, cfg.workers, self._log, self._digests,
                                                         self._phashes)
        self.report_items, self.report_imgs, sk3 = load_images(rep, self.spec, cfg.workers, self._log)
        self.skipped = sk1 + sk2 + sk3
        if not self.train_items:
            raise ValueError("no readable training images")
        if len({i.label for i in self.train_items}) < 2:
            # (the loader checked both classes were listed: here the other class's images were unreadable)
            lost = (f"; {len(sk1)} could not be decoded, e.g. {sk1[0]}: replace or remove the unreadable images"
                    if sk1 else "")
            raise ValueError(f"training needs both real and AI images; the readable training images are all "
                             f"{'AI' if self.train_items[0].label else 'real'}{lost}")
        self._check_features()
        gens = sorted({i.generator for i in self.train_items + self.val_items + self.report_items if i.label == 1})
        self.labels = ["real"] + gens
        self.label_index = {g: k for k, g in enumerate(self.labels)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = MPFTModel(backbone.visual, self.labels, feature=cfg.feature, adapter={
                "mode": cfg.adapter_mode, "rank": cfg.rank, "alpha": cfg.alpha, "targets": list(cfg.targets),
                "last_n": cfg.last_n, "train_norms": cfg.train_norms})
        self.device = next(backbone.visual.parameters()).device
        self.model.to(self.device)
        n = len(self.train_items)
        self.steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
        self.total_steps = int(cfg.steps) if cfg.steps else cfg.epochs * self.steps_per_epoch
        self.eval_every = cfg.eval_every or self.steps_per_epoch
        self.ckpt_every = cfg.checkpoint_every or self.eval_every
        head_params = [p for k, p in self.model.named_parameters()
                       if k.startswith(("norm.", "binary.", "attribution."))]
        enc_params = [p for k, p in self.model.named_parameters()
                      if k.startswith(("adapter.", "mask_token"))]
        self.opt = torch.optim.AdamW([{"params": enc_params, "lr": cfg.lr},
                                      {"params": head_params, "lr": cfg.lr_head}], weight_decay=cfg.weight_decay)
        warm = max(1, int(cfg.warmup_frac * self.total_steps))

        def sched(step):
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(1, self.total_steps - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, sched)
        n_ai = sum(i.label for i in self.train_items)
        self.pos_weight = torch.tensor((n - n_ai) / max(1, n_ai), device=self.device)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.resumed: list[dict[str, Any]] = []
        self._pool = ThreadPoolExecutor(max(1, cfg.workers))

    # ------------------------------------------------------------ data
    def _check_features(self, sample: int = 64) -> None:
        """The rule `train linear` and `train flow` apply (train.checks), on the frozen backbone's
        features of a sample of the training images: identical or blank images, or images far
        smaller than the input, trained and wrote a head that scores every file alike."""
        from ..feature_cache import encode_images
        from ..train.checks import check_features

        n = len(self.train_imgs)
        pick = sorted(random.Random(f"{self.cfg.seed}:check").sample(range(n), min(n, sample)))
        X = encode_images(self.bb, [self.train_imgs[k] for k in pick], self.spec)["embed"]
        check_features(X, [self.train_items[k].path for k in pick],
                       "training images" if len(pick) == n else f"training images sampled from {n}")

    def _order(self, epoch: int) -> list[int]:
        idx = list(range(len(self.train_items)))
        random.Random(f"{self.cfg.seed}:order:{epoch}").shuffle(idx)
        return idx

    def _batch_indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        bs = self.cfg.batch_size
        sel = order[k * bs:(k + 1) * bs]
        if len(sel) < min(bs, len(order)):  # last short batch: top up from the start of the epoch
            sel += order[: min(bs, len(order)) - len(sel)]
        return sel

    def _pixels(self, imgs, rngs) -> torch.Tensor:
        def one(a):
            img, rng = a
            if rng is not None:
                img = augment(img, self.cfg.augment, rng)
            return preprocess_apply(img, self.spec)

        arr = list(self._pool.map(one, zip(imgs, rngs)))
        return torch.from_numpy(np.stack(arr)).to(self.device).to(getattr(torch, self.bb.dtype))

    # ------------------------------------------------------------ steps
    def _train_step(self) -> dict[str, float]:
        cfg = self.cfg
        sel = self._batch_indices(self.step)
        rngs = [random.Random(f"{cfg.seed}:aug:{self.step}:{j}") for j in range(len(sel))]
        x = self._pixels([self.train_imgs[i] for i in sel], rngs)
        y = torch.tensor([float(self.train_items[i].label) for i in sel], device=self.device)
        ya = torch.tensor([self.label_index[self.train_items[i].generator] for i in sel], device=self.device)
        mask = None
        if cfg.mask_ratio > 0:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
            scores = texture_scores(x, self.bb.patch_size, self.bb.mean, self.bb.std, cfg.texture_measure)
            mask = select_mask(scores, cfg.mask_ratio, cfg.mask_select, generator=g, power=cfg.mask_power)
        self.model.train()
        logit, attr = self.model.forward_masked(x, mask, cfg.mask_mode)
        l_bin = F.binary_cross_entropy_with_logits(logit, y, pos_weight=self.pos_weight)
        l_attr = F.cross_entropy(attr, ya)
        loss = l_bin + cfg.attr_weight * l_attr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {"loss": float(loss.detach()), "bce": float(l_bin.detach()), "ce": float(l_attr.detach())}

    @torch.no_grad()
    def predict_images(self, imgs) -> tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        zs, ats = [], []
        bs = max(1, self.cfg.batch_size)
        for k in range(0, len(imgs), bs):
            x = self._pixels(imgs[k:k + bs], [None] * len(imgs[k:k + bs]))
            z, a = self.model(x)
            zs.append(z.float().cpu().numpy())
            ats.append(a.float().cpu().numpy())
        if not zs:
            return np.zeros(0), np.zeros((0, len(self.labels)))
        return np.concatenate(zs), np.concatenate(ats)

    def evaluate(self) -> dict[str, Any]:
        if not self.val_items:
            return {}
        z, a = self.predict_images(self.val_imgs)
        y = np.array([i.label for i in self.val_items])
        m = logit_metrics(y, z)
        ya = np.array([self.label_index[i.generator] for i in self.val_items])
        m["attribution_accuracy"] = float(np.mean(a.argmax(1) == ya)) if len(ya) else None
        return m

    # ------------------------------------------------------------ checkpoints
    def _ckpt_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def save_checkpoint(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {"step": self.step, "model": {k: v.cpu() for k, v in self.model.trainable_state().items()},
                 "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "labels": self.labels,
                 "config": self.cfg.to_dict(), "history": self.history,
                 "best": self.best, "backbone_fingerprint": self.bb.fingerprint, "resumed": self.resumed}
        tmp = self._ckpt_path().with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self._ckpt_path())

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        p = Path(path) if path else self._ckpt_path()
        if p.is_dir():
            p = p / CHECKPOINT
        if not p.is_file():
            return False
        fresh = f"delete {p} to start afresh, or run without --resume"
        try:
            # weights_only: a checkpoint is data, never code (a pickled checkpoint can run anything on load).
            state = torch.load(p, map_location=self.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch's own error advised loading it with weights_only=False
            raise ValueError(f"checkpoint {p} cannot be read (cut short, damaged or not an MPFT checkpoint: "
                             f"{type(exc).__name__}); {fresh}") from None
        if not isinstance(state, dict) or not all(k in state for k in ("step", "model", "opt", "sched", "labels")):
            raise ValueError(f"checkpoint {p} is not an MPFT training checkpoint; {fresh}")
        # Adapter and heads trained on one backbone's features mean nothing on another's: a checkpoint
        # of tiny-vit seed 0 resumed on seed 1 (same shapes) went on without a word, and the head
        # written at the end named the second backbone alone. (Checkpoints of earlier releases lack it.)
        fp = state.get("backbone_fingerprint")
        if fp is not None and fp != self.bb.fingerprint:
            raise ValueError(f"checkpoint {p} was trained on another backbone (fingerprint {fp}, this run's is "
                             f"{self.bb.fingerprint}); resume with the backbone options it was started with, or {fresh}")
        if state["labels"] != self.labels:
            raise ValueError(f"checkpoint {p} was trained with labels {state['labels']}, this data gives {self.labels}")
        was = state.get("config") if isinstance(state.get("config"), dict) else {}
        try:
            self.model.load_trainable_state(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            # (another --rank, --adapter or --targets: torch's "size mismatch for adapter.lora_A...")
            now = self.cfg.to_dict()
            diff = [f"--{k.replace('_', '-')} {was[k]} then, {now[k]} now" for k in sorted(now)
                    if k in was and was[k] != now[k] and not isinstance(now[k], dict)]
            raise ValueError(f"checkpoint {p} does not fit this run's model"
                             + (f" ({'; '.join(diff[:4])})" if diff else f" ({str(exc).splitlines()[0][:200]})")
                             + f"; resume with the options it was started with, or {fresh}") from None
        self.step = int(state["step"])
        self.history = list(state.get("history") or [])
        self.best = state.get("best")
        # The optimiser's state holds these, so the checkpoint's stay whatever this run asked: the
        # manifest gave the new --lr of a run that never used it.
        kept = {k: was[k] for k in _IN_THE_OPTIMISER
                if isinstance(was.get(k), (int, float)) and was[k] != getattr(self.cfg, k)}
        if kept:
            self._log("note: resuming keeps the checkpoint's " + "; ".join(
                f"{k} {v} (this run asked {getattr(self.cfg, k)})" for k, v in kept.items()) + ": its optimiser state")
            self.cfg = dataclasses.replace(self.cfg, **kept)
        then = changed_options(was, self.cfg.to_dict())
        # Steps before the checkpoint drew from its options: the manifest says so, not only this run's
        # (every resume, carried through later checkpoints).
        earlier = state.get("resumed")
        self.resumed = [*(earlier if isinstance(earlier, list) else []), {"at_step": self.step, "options_then": then}]
        if then:
            now = _flat(self.cfg.to_dict())
            self._log(f"note: checkpoint {p} was started with other training options ("
                      + "; ".join(f"{k} {v} then, {now[k]} now" for k, v in then.items())
                      + f"); the steps from {self.step} on use this run's (the head records both: params.resumed)")
        return True

    # ------------------------------------------------------------ driver
    def _score(self, m: dict[str, Any]) -> tuple:
        # pick the checkpoint by validation AUC, then accuracy, then lower NLL
        return (m.get("auc") or 0.0, m.get("accuracy") or 0.0, -(m.get("nll") or 0.0))

    def _open_set_report(self, a: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        t = self.attribution.get("reject_below")
        ai = np.flatnonzero(y == 1)
        if t is None or not len(ai):
            return {}
        got = [open_set_label(a[k], self.labels, t)[0] for k in ai]
        truth = [self.report_items[k].generator for k in ai]
        return {"open_set": {"n_ai": len(ai), "known_rejected": float(np.mean([g == UNKNOWN_GENERATOR for g in got])),
                             "accuracy_of_accepted": (float(np.mean([g == tr for g, tr in zip(got, truth)
                                                                     if g != UNKNOWN_GENERATOR]))
                                                      if any(g != UNKNOWN_GENERATOR for g in got) else None)}}

    def fit(self) -> None:
        t0 = time.time()
        with _progress(self.show) as prog:
            task = prog.add_task("mpft", total=self.total_steps, completed=self.step, info="")
            run_loss = None
            while self.step < self.total_steps:
                s = self._train_step()
                if not math.isfinite(s["loss"]):
                    # Every later step and the best-state pick would run on NaN weights, and the head
                    # written at the end scored nothing (every file an error) while the run said "wrote".
                    raise ValueError(f"training diverged: the loss is {s['loss']} at step {self.step}; "
                                     f"lower --lr / --lr-head, or use --dtype float32")
                run_loss = s["loss"] if run_loss is None else 0.9 * run_loss + 0.1 * s["loss"]
                info = f"loss {run_loss:.3f}"
                if self.step % self.eval_every == 0 or self.step == self.total_steps:
                    m = self.evaluate()
                    rec = {"step": self.step, "loss": run_loss, "seconds": round(time.time() - t0, 1), **m}
                    self.history.append(rec)
                    if m and (self.best is None or self._score(m) > self._score(self.best["metrics"])):
                        self.best = {"step": self.step, "metrics": m,
                                     "state": {k: v.detach().cpu().clone()
                                               for k, v in self.model.trainable_state().items()}}
                    if m:
                        info += (f" | val acc {m['accuracy']:.3f}" + (f" auc {m['auc']:.3f}" if "auc" in m else "")
                                 + f" attr {m['attribution_accuracy']:.3f}")
                    prog.log(f"step {self.step}: {info}") if self.show else None
                if self.step % self.ckpt_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
                prog.update(task, completed=self.step, info=info)

    def finish(self) -> TrainResult:
        """Restore the best validation state, calibrate, write the head."""
        if self.best is not None:
            self.model.load_trainable_state({k: v.to(self.device) for k, v in self.best["state"].items()})
        cal: dict[str, Any] = {"method": "temperature", "T": 1.0, "temperature": 1.0, "fitted_on": None}
        metrics: dict[str, Any] = {}
        t = 1.0
        if self.val_items:
            z, _ = self.predict_images(self.val_imgs)
            y = np.array([i.label for i in self.val_items])
            classes = sorted({int(v) for v in y})
            if len(classes) == 2:
                t = fit_temperature(z, y, TEMPERATURE_BOUNDS).params["T"]
                # "temperature": the key readers of earlier releases look for.
                cal = {"method": "temperature", "T": t, "temperature": t, "fitted_on": "selection split",
                       "n": int(len(y))}
            else:
                cal["not_fitted"] = (f"the selection split has only {'AI' if classes == [1] else 'real'} images "
                                     f"({len(y)}); temperature left at 1.0")
            metrics["selection"] = {**logit_metrics(y, z), "used_for": "best-state choice and temperature",
                                    "best_step": self.best["step"] if self.best else self.step}
        else:
            cal["not_fitted"] = "no held-out images (--val-fraction 0 or too little data); temperature left at 1.0"
        attribution: dict[str, Any] = {"unknown_label": UNKNOWN_GENERATOR, "reject_below": None,
                                       "accept_known": self.cfg.accept_known}
        sel_ai = [k for k, i in enumerate(self.val_items) if i.label == 1]
        if len(self.labels) > 2 and sel_ai:
            _, a_sel = self.predict_images([self.val_imgs[k] for k in sel_ai])
            attribution.update(reject_below=fit_rejection(a_sel, self.labels, self.cfg.accept_known),
                               fitted_on="selection split", n=len(sel_ai))
        else:
            attribution["not_fitted"] = ("one generator only: attribution has nothing to choose between"
                                         if len(self.labels) <= 2 else "no AI images in the selection split")
        self.attribution = attribution
        if self.report_items:
            z, a = self.predict_images(self.report_imgs)
            y = np.array([i.label for i in self.report_items])
            ya = np.array([self.label_index[i.generator] for i in self.report_items])
            v = {**logit_metrics(y, z, t), "attribution_accuracy": float(np.mean(a.argmax(1) == ya)),
                 **self._open_set_report(a, y),
                 "split": "report (never used for selection or calibration)"}
            if len(set(y.tolist())) < 2:
                v["note"] = f"the report split has one class only ({len(y)} images): no AUC"
            metrics["validation"] = v
            metrics["validation_uncalibrated"] = logit_metrics(y, z)
        else:
            metrics["validation"] = {"n": 0, "note": "no report split: too few held-out images "
                                                     "(each generator needs 2+ held-out images)"}
        tensors = {k: v.detach().float().cpu() for k, v in self.model.trainable_state().items()}
        cfg = self.cfg.to_dict()
        manifest = {
            "name": self.name, "detector": "mpft", "version": "1",
            "backbone": backbone_manifest(self.bb),
            "preprocessing": self.spec,
            "labels": self.labels,
            "params": {**self.model.params(), "training": cfg,
                       "trainable_parameters": int(sum(v.numel() for v in tensors.values())),
                       **({"resumed": self.resumed} if self.resumed else {})},
            "calibration": cal,
            "attribution": self.attribution,
            "threshold": 0.5,
            "metrics": {**metrics, "history": self.history},
            "data": {"sources": self.sources, "train": summarize(self.train_items),
                     "selection": summarize(self.val_items) if self.val_items else {"n": 0},
                     "validation": summarize(self.report_items) if self.report_items else {"n": 0},
                     "skipped_unreadable": len(self.skipped)},
            "source": "aiidetect train mpft",
            "license": "trained weights inherit the terms of the training data and backbone",
        }
        # The train split, and the selection split: it took no gradient step, but it chose the state
        # kept, the temperature and the open-set cut-off, so numbers on it flatter the head too. The
        # report split alone is held out (train_record). Digests of the bytes decoded, not read again.
        from ..train_record import record

        manifest["training_images"], keys_file = record(
            self._digests.values(),
            "the train split and the selection split (which chose the state kept, the temperature and the "
            "open-set cut-off); the report split is held out", phashes=self._phashes.values())
        head_dir = save_head(self.out_dir, tensors, manifest, extra_files=keys_file)
        ck = self._ckpt_path()
        if ck.exists():
            ck.unlink()
        self._pool.shutdown(wait=False)
        return TrainResult(head_dir=head_dir, manifest=manifest, model=self.model, history=self.history)


def train_mpft(backbone, items: Sequence[Item], cfg: TrainConfig, out_dir: str | Path, name: str,
               sources: Sequence[str] = (), resume: bool | str | Path = False, show_progress: bool = True,
               log: Callable[[str], None] | None = None) -> TrainResult:
    tr = MPFTTrainer(backbone, items, cfg, out_dir, name, sources, show_progress, log)
    if resume:
        ok = tr.load_checkpoint(None if resume is True else resume)
        if log:
            log(f"resumed from step {tr.step}" if ok else "no checkpoint to resume from; starting fresh")
    tr.fit()
    return tr.finish()
