"""How far an exported variant is from the PyTorch fp32 graph: per output, the
embedding's cosine, and per head the share of verdicts that changed."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def torch_outputs(graph, pixels: np.ndarray, batch_size: int = 8) -> dict[str, np.ndarray]:
    import torch

    parts: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for i in range(0, len(pixels), batch_size):
            outs = graph(torch.from_numpy(np.ascontiguousarray(pixels[i:i + batch_size])))
            for name, t in zip(graph.output_names, outs):
                parts.setdefault(name, []).append(t.float().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def agreement(reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
              heads_meta: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Max abs difference per output, embedding cosine, and per head the share
    of files whose verdict (p_ai >= threshold, as the runtime detector computes
    it) differs between the two runs."""
    from ..detectors.onnx import head_results

    out: dict[str, Any] = {"files": int(len(next(iter(reference.values())))), "outputs": {}, "heads": {}}
    for k, ref in reference.items():
        if k not in got:
            continue
        d = np.abs(ref.astype(np.float64) - got[k].astype(np.float64))
        out["outputs"][k] = {"max_abs_diff": float(d.max()) if d.size else 0.0,
                             "mean_abs_diff": float(d.mean()) if d.size else 0.0}
    if "embed" in reference and "embed" in got:
        a, b = reference["embed"].astype(np.float64), got["embed"].astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        out["embed_cosine_min"] = float(cos.min()) if cos.size else 1.0
    for meta in heads_meta:
        r_ref = head_results(meta, reference)
        r_got = head_results(meta, got)
        changed = n = 0
        for x, y in zip(r_ref, r_got):
            if x.p_ai is None or y.p_ai is None:
                continue
            n += 1
            thr = _threshold(meta)
            changed += int((x.p_ai >= thr) != (y.p_ai >= thr))
        out["heads"][meta["name"]] = {"files": n, "verdict_changed": changed,
                                      "verdict_changed_share": (changed / n) if n else None}
    return out


def _threshold(meta: Mapping[str, Any]) -> float:
    """The head's decision threshold on p_ai: its manifest number, else 0.5
    (flow heads put their target-FPR threshold at p_ai = 0.5 by calibration)."""
    t = meta.get("threshold")
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.5

