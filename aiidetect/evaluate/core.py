"""Scored items -> the metrics blocks of one evaluation condition."""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from ..fusion import RECORD_DIGITS, FusionOutcome, fuse, normalize_model, shown_p
from ..probability import is_finite_number
from ..report.safe import display_path, path_bytes_b64
from . import metrics as M
from .runner import Scored

FUSED = "fused"
MAX_LISTED = 1000  # unreadable files named per condition in metrics.json (all are counted)


def detector_threshold(det, results=()) -> float:
    """The shipped threshold on a detector's p_ai: its head's value when the
    detector or its results expose one (extra["threshold"]), else 0.5."""
    t = getattr(det, "threshold", None)
    if t is None:
        t = next((r.extra.get("threshold") for r in results
                  if r is not None and r.status == "ok" and r.extra.get("threshold") is not None), None)
    if t is None:
        try:
            t = det.describe().get("threshold")
        except Exception:  # noqa: BLE001
            t = None
    if isinstance(t, Mapping):
        t = t.get("p_ai", t.get("value"))
    try:
        t = float(t)
    except (TypeError, ValueError):
        return 0.5
    return t if 0.0 < t < 1.0 else 0.5


def attach_fusion(scored: Sequence[Scored], model: Mapping[str, Any] | None) -> list[FusionOutcome | None]:
    """Fused outcome per item (None for decode failures)."""
    return [None if s.error else fuse(s.results, model) for s in scored]


def _shown(p: float, band) -> str:
    v = shown_p(float(p), band)
    # shown_p keeps p itself where no 6-digit value stays on every side (thresholds closer than 1e-6)
    return f"{v:.{RECORD_DIGITS}f}" if v == round(v, RECORD_DIGITS) else repr(v)


def _attribution(r) -> str | None:
    """A detector's generator guess, if it gives one (extra["attribution"]:
    a label string, {"label"/"generator": ...}, or a ranked list of those)."""
    if r is not None and r.status == "ok" and isinstance(r.extra.get("generator"), Mapping):
        g = r.extra["generator"].get("label")  # open-set answer (may be "unknown-generator")
        if isinstance(g, str):
            return g
    a = r.extra.get("attribution") if r is not None and r.status == "ok" else None
    if isinstance(a, (list, tuple)) and a:  # ranked [{"label", "p"}, ...] (attribution heads): take the top one
        a = a[0]
    if isinstance(a, str):
        return a
    if isinstance(a, Mapping):
        for k in ("label", "generator", "top"):
            if isinstance(a.get(k), str):
                return a[k]
    return None


def _block(y: np.ndarray, p: np.ndarray, gens: np.ndarray, threshold: float, n_total: int,
           data_gens: Sequence[str] = (), data_real: bool = False) -> dict[str, Any]:
    """data_gens / data_real: the AI generators and whether real images are in the data, opinion or not. A
    generator the row's detector gave no opinion on is listed with n 0 and no numbers: it vanished from the
    table, and with it (for `fused`) its verdict counts (108 stylegan2 images, all `uncertain` under
    -d metadata, were in no row)."""
    b: dict[str, Any] = {"coverage": float(y.size / n_total) if n_total else 0.0}
    b["overall"] = M.binary_metrics(y, p, threshold) if y.size else None
    per: dict[str, Any] = {}
    real = y == 0
    none = {"n": 0, "acc": None, "mean_p": None}
    if real.any():
        per["real"] = {"n": int(real.sum()), "acc": float(np.mean(p[real] < threshold)),
                       "mean_p": float(p[real].mean())}
    elif data_real:
        per["real"] = dict(none)
    for g in sorted(set(gens[y == 1].tolist()) | set(data_gens)):
        m = (gens == g) & (y == 1)
        if not m.any():
            per[g] = {**none, "ap": None, "auc": None, "auc_ci95": None}
            continue
        sub = real | m
        auc = M.roc_auc(y[sub], p[sub])
        per[g] = {"n": int(m.sum()), "acc": float(np.mean(p[m] >= threshold)), "mean_p": float(p[m].mean()),
                  "ap": M.average_precision(y[sub], p[sub]), "auc": auc,
                  "auc_ci95": M.auc_interval(auc, int(m.sum()), int(real.sum()))}
    b["per_generator"] = per
    return b


def condition_metrics(scored: Sequence[Scored], detectors: Sequence[Any], model: Mapping[str, Any] | None,
                      name: str = "raw", left_out: Mapping[str, np.ndarray] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (metrics block, raw per-item columns for plots and scores.csv).
    left_out: {detector name or FUSED: boolean mask over `scored`} of the items left out of that
    one's metrics (a head's own training images, evaluate.overlap); counted as "train_left_out",
    and a NaN score in the columns, as for no opinion (and an empty verdict, for FUSED)."""
    fused = attach_fusion(scored, model)
    ok = [i for i, s in enumerate(scored) if not s.error]
    n = len(ok)
    left_out = left_out or {}

    def out_of(key: str) -> np.ndarray | None:
        m = left_out.get(key)
        return None if m is None else np.asarray(m, dtype=bool)[ok]
    y_all = np.array([scored[i].label for i in ok], dtype=np.int64)
    g_all = np.array([scored[i].generator for i in ok], dtype=object)
    data_gens, data_real = set(g_all[y_all == 1].tolist()), bool((y_all == 0).any())
    block: dict[str, Any] = {"condition": name, "n_items": len(scored), "n_scored": n,
                             "n_decode_errors": len(scored) - n,
                             "decode_errors": Counter(s.error.split(":")[0] for s in scored if s.error),
                             # by name too: a count alone leaves the user to rerun scan to find them
                             "unreadable": [{"file": display_path(s.path), "file_bytes": path_bytes_b64(s.path),
                                             "error": s.error} for s in scored if s.error][:MAX_LISTED],
                             "detectors": {}, "attribution": {}}
    columns: dict[str, Any] = {"y": y_all, "generator": g_all, "path": [scored[i].path for i in ok], "p": {}}
    for det in detectors:
        res = [scored[i].results.get(det.name) for i in ok]
        status = Counter(r.status if r is not None else "missing" for r in res)
        # A NaN p_ai fails every ">= threshold" and so counted as a correct
        # call on every real photo; a detector's non-finite answer is no answer.
        said = [r is not None and r.status == "ok" and r.p_ai is not None for r in res]
        have = np.array([h and is_finite_number(r.p_ai) for r, h in zip(res, said)], dtype=bool)
        n_non_finite = int(sum(said) - have.sum())  # before the training images are taken out of `have`
        lo = out_of(det.name)
        n_left = int(lo.sum()) if lo is not None else 0
        if lo is not None:
            have &= ~lo
        p = np.array([r.p_ai if h else np.nan for r, h in zip(res, have)], dtype=np.float64)
        thr = detector_threshold(det, res)
        b = _block(y_all[have], p[have], g_all[have], thr, n - n_left, data_gens, data_real)
        if lo is not None:
            b["train_left_out"] = n_left
        b["status"] = dict(status)
        reasons = Counter(r.reason for r in res if r is not None and r.status != "ok" and r.reason)
        if reasons:
            b["not_ok_reasons"] = dict(reasons.most_common(3))
        b["no_opinion"] = int(sum(1 for r in res if r is not None and r.status == "ok" and r.p_ai is None))
        b["non_finite"] = n_non_finite
        block["detectors"][det.name] = b
        columns["p"][det.name] = p
        att = [(_attribution(r), g) for k, (r, g) in enumerate(zip(res, g_all)) if lo is None or not lo[k]]
        att = [(a, g) for a, g in att if a is not None]
        if att:
            block["attribution"][det.name] = M.confusion_matrix([g for _, g in att], [a for a, _ in att])
    fp = np.array([fused[i].p_ai if fused[i].p_ai is not None else np.nan for i in ok], dtype=np.float64)
    verdicts = np.array([fused[i].verdict for i in ok], dtype=object)
    lo = out_of(FUSED)
    kept = ~lo if lo is not None else np.ones(n, dtype=bool)
    fp[~kept] = np.nan
    have = ~np.isnan(fp)
    b = _block(y_all[have], fp[have], g_all[have], 0.5, int(kept.sum()), data_gens, data_real)
    if lo is not None:
        b["train_left_out"] = int(lo.sum())
    vt: dict[str, dict[str, int]] = {}
    for cls, lab in (("real", 0), ("ai", 1)):
        c = Counter(verdicts[(y_all == lab) & kept].tolist())
        vt[cls] = {v: int(c.get(v, 0)) for v in ("ai-generated", "uncertain", "likely-real")}
    b["verdicts"] = vt
    b["uncertain_share"] = float(np.mean(verdicts[kept] == "uncertain")) if kept.any() else None
    nr, na = int(((y_all == 0) & kept).sum()), int(((y_all == 1) & kept).sum())
    b["real_called_ai"] = vt["real"]["ai-generated"] / nr if nr else None
    b["ai_called_real"] = vt["ai"]["likely-real"] / na if na else None
    b["ai_detected"] = vt["ai"]["ai-generated"] / na if na else None
    b["real_confirmed"] = vt["real"]["likely-real"] / nr if nr else None
    # 0% of 3 real photos is not 0%: the counts and the 95% upper bound go with the two error rates.
    b["real_called_ai_count"], b["ai_called_real_count"] = [vt["real"]["ai-generated"], nr], [vt["ai"]["likely-real"], na]
    b["real_called_ai_upper_95"] = M.rate_upper_bound(vt["real"]["ai-generated"], nr)
    b["ai_called_real_upper_95"] = M.rate_upper_bound(vt["ai"]["likely-real"], na)
    # A rate over no image of a class must say why: none in the data, all left out as training images, or all
    # unreadable are three different things to an auditor, and the totals above are not per class.
    b["unscored_by_class"] = {cls: {"train_left_out": int(((y_all == lab) & ~kept).sum()),
                                    "unreadable": sum(1 for s in scored if s.error and s.label == lab)}
                              for cls, lab in (("real", 0), ("ai", 1))}
    for g, row in b["per_generator"].items():
        m = ((g_all == g) if g != "real" else (y_all == 0)) & kept
        c = Counter(verdicts[m].tolist())
        row["verdicts"] = {v: int(c.get(v, 0)) for v in ("ai-generated", "uncertain", "likely-real")}
    m = normalize_model(model)
    from ..fusion import DEFAULT_AI_THRESHOLD, DEFAULT_REAL_THRESHOLD

    b["band"] = {"ai": float(m.get("ai_threshold") or DEFAULT_AI_THRESHOLD),
                 "real": float(m["real_threshold"]) if m.get("real_threshold") is not None else DEFAULT_REAL_THRESHOLD,
                 "model": m.get("name") or ("fitted" if m.get("detectors") else "rules (no fusion model)"),
                 # Files a detector with a say did not answer are judged without the model's bias, on a wider band
                 # (fusion.fuse): the verdict counts include them, and the line naming "the" band did not say so.
                 "set_aside": int(sum(1 for k, i in enumerate(ok) if kept[k] and fused[i].aside))}
    block["fused"] = b
    columns["p"][FUSED] = fp
    # scores.csv's fused p_ai as a scan record writes it: on the verdict's side of the band that judged the file.
    # Rounded to nearest, a fused 0.8999996 read 0.900000 beside "uncertain" under a 0.9 band (scan: 0.899999).
    columns["p_text"] = {FUSED: ["" if np.isnan(fp[k]) else _shown(fp[k], fused[i].band) for k, i in enumerate(ok)]}
    # (a verdict beside an empty fused score would count the item in any tally of scores.csv)
    columns["verdict"] = np.where(kept, verdicts, "")
    return M.clean(block), columns
