"""Benchmark protocol metrics: what the GenImage and UniversalFakeDetect papers report.

Both papers score each test subset (one generator's folder) on that subset's own
real and fake images, then average over subsets:

- GenImage (Zhu et al. 2023): per subset, accuracy over the subset's ``val/nature``
  and ``val/ai`` images together; the table's "Avg" is the unweighted mean.
- UniversalFakeDetect (Ojha et al. 2023): per subset, accuracy over the subset's
  ``0_real`` and ``1_fake`` images together and average precision over the same
  images; the diffusion subsets are scored against the LAION reals (guided:
  ImageNet reals), see train.data.protocol_pairs; "mAP"/"Avg acc" are unweighted means.

A fake is called fake when p_ai >= threshold (the papers: 0.5 on the classifier's
sigmoid; here the head's shipped threshold, 0.5 unless the head ships another).
This is not the per-generator table of `aiidetect eval`, whose "acc" is the
detection rate on a generator's AI images with all reals pooled.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from . import metrics as M

PROTOCOLS = ("genimage", "ufd")


def subset_metrics(y, p, subsets, pairs: Mapping[str, str | None], threshold: float = 0.5,
                   protocol: str = "genimage") -> dict[str, Any]:
    """y (0 real / 1 ai), p (P(AI)), subsets (a fake's subset, a real's pool)
    -> {"subsets": {name: {...}}, "mean_acc", ["mean_ap"], "threshold"}.

    Items with p = NaN (no opinion) are left out and counted per subset."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    sub = np.asarray(subsets, dtype=object)
    have = ~np.isnan(p)
    rows: dict[str, Any] = {}
    for s, pool in sorted(pairs.items()):
        fake = (y == 1) & (sub == s)
        real = (y == 0) & (sub == pool) if pool is not None else np.zeros_like(fake)
        both = (fake | real)
        m = both & have
        yy, pp = y[m], p[m]
        pred = pp >= threshold
        row: dict[str, Any] = {"reals": pool, "n_real": int((m & real).sum()), "n_ai": int((m & fake).sum()),
                               "n_no_opinion": int((both & ~have).sum())}
        row["acc"] = float(np.mean(pred == (yy == 1))) if yy.size else None
        row["acc_real"] = float(np.mean(~pred[yy == 0])) if (yy == 0).any() else None
        row["acc_ai"] = float(np.mean(pred[yy == 1])) if (yy == 1).any() else None
        if protocol == "ufd":
            row["ap"] = M.average_precision(yy, pp)
        if pool is None or row["n_real"] == 0:
            row["note"] = "no real images paired with this subset: accuracy is over its fakes only"
        rows[s] = row
    out: dict[str, Any] = {"protocol": protocol, "threshold": float(threshold), "subsets": rows}
    accs = [r["acc"] for r in rows.values() if r["acc"] is not None]
    out["mean_acc"] = float(np.mean(accs)) if accs else None
    if protocol == "ufd":
        aps = [r["ap"] for r in rows.values() if r.get("ap") is not None]
        out["mean_ap"] = float(np.mean(aps)) if aps else None
    return M.clean(out)


def protocol_block(scored: Sequence[Any], columns: Mapping[str, Any], detectors: Sequence[Any], protocol: str,
                   pairs: Mapping[str, str | None]) -> dict[str, Any]:
    """Protocol metrics of every detector and the fused p_ai for one condition.
    columns: condition_metrics' per-item columns (scored items only, same order)."""
    from .core import FUSED, detector_threshold

    ok = [s for s in scored if not s.error]
    subsets = np.array([getattr(s, "subset", "") or (s.generator if s.label == 1 else "") for s in ok], dtype=object)
    out: dict[str, Any] = {"protocol": protocol, "pairs": dict(pairs), "detectors": {}}
    for det in detectors:
        res = [s.results.get(det.name) for s in ok]
        out["detectors"][det.name] = subset_metrics(columns["y"], columns["p"][det.name], subsets, pairs,
                                                    detector_threshold(det, res), protocol)
    out["detectors"][FUSED] = subset_metrics(columns["y"], columns["p"][FUSED], subsets, pairs, 0.5, protocol)
    return out


def protocol_rows(block: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a subset x detector table, last row the mean, in percent."""
    ufd = block["protocol"] == "ufd"
    dets = list(block["detectors"])
    header = ["subset", "reals"] + [f"{d} {k}" for d in dets for k in (("acc", "AP") if ufd else ("acc",))]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    rows = []
    for s, pool in block["pairs"].items():
        r = [s, "-" if pool is None else (pool or "(unassigned)")]
        for d in dets:
            row = block["detectors"][d]["subsets"].get(s, {})
            r.append(pct(row.get("acc")))
            if ufd:
                r.append(pct(row.get("ap")))
        rows.append(r)
    mean = ["mean", ""]
    for d in dets:
        mean.append(pct(block["detectors"][d].get("mean_acc")))
        if ufd:
            mean.append(pct(block["detectors"][d].get("mean_ap")))
    rows.append(mean)
    return header, rows
