"""Which evaluation images each head was trained on (train_record): metrics of a head on its own
training images are inflated, and nothing in the numbers says so."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

FUSED = "fused"


def _read(folder, manifest, verify: bool = False, said: str = "", load=None):
    """(sorted keys, None), or (None, why they cannot be used) for train_record's NoRecord. `load`:
    train_record.load_keys (the default) or load_phashes, the record's perceptual half."""
    from ..train_record import NoRecord, load_keys

    try:
        return (load or load_keys)(folder, manifest, verify=verify), None
    except NoRecord as exc:
        return None, f"{said}{exc}"


def _phashes_of(det, model=None):
    """The training images' perceptual hashes of a head (or, with `model`, of a fusion model's
    calibration images), read from where its keys are: (hashes, None) or (None, why none)."""
    from ..train_record import load_phashes

    if model is not None:
        return _read(model["path"], model, verify=True, load=load_phashes)
    return _keys_of(det, load=load_phashes)


def _keys_of(det, load=None):
    """(sorted keys, None) or (None, why there are none); (None, None) for a detector that is not a
    trained head (rules, metadata: no training set to overlap with). `load` as _read's."""
    head = getattr(det, "head", None)
    if head is None or not hasattr(head, "manifest"):
        meta = getattr(det, "meta", None)
        if not (isinstance(meta, dict) and meta.get("head")):
            return None, None
        # A head served from an ONNX export: the export carries the record beside the graph, among the
        # graph's files and their checksums; the record is read against that list, so a sidecar naming
        # a file outside it (or no file name at all) is a record this version cannot use, not a crash.
        block = meta.get("training_images")
        onnx_dir = getattr(det, "onnx_dir", None)
        if not isinstance(block, dict) or onnx_dir is None:
            return None, ("its ONNX export carries no training record (the head has none, or the export was "
                          "made by an older version)")
        files = getattr(det, "onnx_files", None) or {}
        return _read(onnx_dir, {"training_images": block, "files": files}, verify=True, said="ONNX export: ",
                     load=load)
    return _read(head.path, head.manifest, load=load)


def _fusion_keys(model):
    """(sorted keys, None) or (None, why there are none) for a fitted fusion model: it records the
    images it was calibrated on as a head records its training images (calibration.save_fusion)."""
    if not model.get("path"):
        return None, "the fusion model was given without its folder (no record of its calibration images)"
    if model.get("training_images") is None:
        return None, "the fusion model records no calibration images (fitted by an older version)"
    return _read(model["path"], model, verify=True)


def train_overlap(detectors: Sequence[Any], digests: Sequence[str | None], exclude: bool = True,
                  model: Any = None, phashes: Sequence[int | None] | None = None,
                  near_out: list | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """-> ({detector or "fused": report}, {detector or "fused": mask of the items left out}).

    A report: {"status": "checked", "n", "of", "excluded"} for a head that records its training images
    (n of the `of` evaluation items were among them), {"status": "unknown", "n": None, "why"} for one that
    does not, {"status": "not-trained"} for a detector with no training set, {"status": "not-run"} for one
    unavailable in this run. "fused" counts the items any
    checked head was trained on: the fused verdict rests on those heads. A fitted fusion `model` (a
    manifest with its "path") has its own entry, "fusion:<name>", for the images it was calibrated
    on, which "fused" counts too. With exclude=False the masks are empty and each report says the
    items were kept.

    With `phashes` (decode.phash_bytes of each item's bytes, None for one without), each checked
    report gets "near": {"status": "checked", "n", "threshold"}: items within perceptual.THRESHOLD bits
    of a training image's hash that are not exact matches (re-encoded or resized copies), or {"status":
    "unknown", "why"} for a head that records no hashes. They are reported, not left out: at the scale
    of real training sets unrelated images fall within the threshold too (docs/evaluation.md).
    `near_out` gets (item index, report name, distance) for each."""
    n = len(digests)
    report: dict[str, dict[str, Any]] = {}
    masks: dict[str, np.ndarray] = {}
    union = np.zeros(n, dtype=bool)
    from ..detectors.base import UnavailableDetector
    from ..train_record import member_mask

    sources = [(det.name, None) if isinstance(det, UnavailableDetector) else (det.name, _keys_of(det))
               for det in detectors]
    if model:
        sources.append((f"fusion:{model.get('name')}", _fusion_keys(model)))
    models = {f"fusion:{model.get('name')}": model} if model else {}
    dets = {det.name: det for det in detectors}
    for name, got in sources:
        if got is None:
            report[name] = {"status": "not-run", "n": None, "of": n}
            continue
        keys, why = got
        if keys is None:
            report[name] = ({"status": "unknown", "n": None, "of": n, "why": why} if why
                            else {"status": "not-trained", "n": 0, "of": n})
            continue
        m = member_mask(keys, digests)
        union |= m
        report[name] = {"status": "checked", "n": int(m.sum()), "of": n, "excluded": bool(exclude and m.any())}
        if phashes is not None:
            report[name]["near"] = _near(name, dets.get(name), models.get(name), phashes, m, near_out)
        if exclude:
            masks[name] = m
    unknown = [k for k, r in report.items() if r["status"] == "unknown"]
    report[FUSED] = {"status": "unknown" if unknown else "checked", "n": int(union.sum()), "of": n,
                     "excluded": bool(exclude and union.any())}
    if unknown:
        report[FUSED]["why"] = f"it rests on what records no training images: {', '.join(unknown)}"
    if exclude:
        masks[FUSED] = union
    return report, masks


def _near(name, det, model, phashes, exact: np.ndarray, near_out: list | None) -> dict[str, Any]:
    from ..perceptual import THRESHOLD, BandIndex

    hashes, why = _phashes_of(det, model)
    if hashes is None:
        return {"status": "unknown", "n": None, "why": why}
    dist, _ = BandIndex(hashes, THRESHOLD).nearest(list(phashes))
    near = (dist >= 0) & ~exact
    if near_out is not None:
        near_out.extend((int(i), name, int(dist[i])) for i in np.flatnonzero(near))
    return {"status": "checked", "n": int(near.sum()), "threshold": THRESHOLD,
            "without_hash": int(sum(h is None for h in phashes))}


def near_line(report: dict[str, dict[str, Any]], fit: bool = False) -> str | None:
    """One stderr line: evaluation images that are re-encoded or resized copies of a head's training
    images (perceptual hash within the threshold, bytes differ), per head; kept in the metrics."""
    parts = []
    for name, r in report.items():
        near = r.get("near")
        if not near:
            continue
        parts.append(f"{name} unknown ({near['why']})" if near["status"] == "unknown" else f"{name} {near['n']}")
    if not parts:
        return None
    any_near = any((r.get("near") or {}).get("n") for r in report.values())
    from ..perceptual import THRESHOLD

    return (f"near-duplicates of training images (perceptual hash within {THRESHOLD} bits, other bytes): "
            + ", ".join(parts)
            + (("; KEPT in the fit: check them (data.near_duplicates in the model's manifest)" if fit else
                "; KEPT in the metrics: check them (near-duplicates.csv with --out-dir)") if any_near else ""))


def without_training_images(scored: Sequence[Any], detectors: Sequence[Any], allow: bool = False,
                            near_out: list | None = None) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Scored items for one fit over every detector (calibrate): those any head was trained on left out
    (its scores there are the head's overconfident ones, which calibration would learn to trust), unless
    `allow`. -> (the items kept, train_overlap's report). `near_out` gets {"file", "head", "distance"}
    for each near-duplicate of a head's training image (kept in the fit, as eval keeps them)."""
    near: list = []
    report, masks = train_overlap(detectors, [s.sha256 for s in scored], exclude=not allow,
                                  phashes=[s.phash for s in scored], near_out=near)
    if near_out is not None:
        near_out.extend({"file": scored[i].path, "head": h, "distance": d} for i, h, d in near)
    out = masks.get(FUSED)
    if out is None or not out.any():
        return list(scored), report
    return [s for s, drop in zip(scored, out) if not drop], report


def overlap_line(report: dict[str, dict[str, Any]], fit: bool = False) -> str | None:
    """One stderr line: how many evaluation images each head was trained on, and what was done
    (fit: calibrate's wording, whose one fit over every detector leaves out all of them)."""
    parts = []
    for name, r in report.items():
        if name == FUSED or r["status"] in ("not-trained", "not-run"):
            continue
        if r["status"] == "unknown":
            parts.append(f"{name} unknown ({r['why']})")
        else:
            if not r["n"]:
                how = ""
            elif not r["excluded"]:
                how = " (KEPT: " + ("the fit includes them)" if fit else "metrics include them)")
            elif fit:
                how = " (left out of the fit)"
            else:  # a fusion model's calibration images: its metrics are the fused verdict's
                how = " (left out of the fused verdict's metrics)" if name.startswith("fusion:") else \
                      " (left out of its metrics)"
            parts.append(f"{name} {r['n']} of {r['of']}{how}")
    if not parts:
        return None
    f = report.get(FUSED) or {}
    tail = ""
    if f.get("n") and not fit:
        tail = ("; the fused verdict's metrics leave out those " if f["excluded"] else
                "; the fused verdict's metrics include those ") + f"{f['n']} image(s)"
    if any(r.get("n") and not r.get("excluded") for k, r in report.items() if k != FUSED):
        tail += (": calibrated on training images, the fit trusts those heads too much" if fit else
                 ": measured on training images, these numbers are not held-out performance")
    return (f"{'calibration' if fit else 'evaluation'} images the heads were trained on: "
            + ", ".join(parts) + tail)


def say_overlap(console, report: dict[str, dict[str, Any]], quiet: bool, fit: bool = False) -> None:
    """overlap_line as a note on `console` (stderr); under -q too when any image was one a head or the
    fusion model was trained on ("fused" counts them all): it changes what the numbers mean."""
    line = overlap_line(report, fit=fit)
    if line and (not quiet or (report.get(FUSED) or {}).get("n")):
        console.print(f"note: {line}", highlight=False, markup=False)
    near = near_line(report, fit=fit)
    if near and (not quiet or any((r.get("near") or {}).get("n") for r in report.values())):
        console.print(f"note: {near}", highlight=False, markup=False)
