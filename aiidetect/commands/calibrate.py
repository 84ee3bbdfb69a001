"""`aiidetect calibrate DATA...`: fit per-detector calibration, the fusion model
and the uncertain band on labelled data, and save them as a fusion head."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..choices import choices
from .common import (BackboneOptions, C2paTrustOpt, DetectorsOpt, FollowLinksOpt, GenImageSplit, JsonFormat, QuietOpt, SummaryFormatOpt,
                     backbone_options, fail, library_errors, print_detector_setup, renamed_options, split_list,
                     stderr_console)

# probability.METHODS, which imports numpy: kept in step by a test.
Method = choices("Method", "temperature", "platt", "isotonic")


@renamed_options(out="--out")
@backbone_options(device=True, dtype="infer", weights_dir=True)
def calibrate_cmd(
    data: List[str] = typer.Argument(..., help="Labelled calibration data (same layouts as `aiidetect eval`). "
                                               "Use data the heads were NOT trained on."),
    detectors: Optional[List[str]] = DetectorsOpt,
    method: Method = typer.Option("temperature", "--method", help="Per-detector calibration."),
    target_fpr: float = typer.Option(0.01, "--target-fpr", min=0.0, max=0.5,
                                     help="Most real photos the verdict may call ai-generated (share)."),
    target_fnr: float = typer.Option(0.05, "--target-fnr", min=0.0, max=0.5,
                                     help="Most AI images the verdict may call likely-real (share)."),
    name: str = typer.Option("fusion", "--name", help="Name of the fusion model."),
    out: Optional[Path] = typer.Option(None, "--out-dir", "-o",
                                       help="Folder to write the fusion head to (default: <weights dir>/<name>)."),
    split: GenImageSplit = typer.Option("val", "--split", help="GenImage split to read."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N images per class (seeded sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --limit sample and of the cross-validation folds."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    allow_train_overlap: bool = typer.Option(False, "--allow-train-overlap",
                                             help="Fit on images a head was trained on too (default: left out, "
                                                  "and counted: a head is overconfident on its training images)."),
    follow_links: bool = FollowLinksOpt,
    c2pa_trust: Optional[List[Path]] = C2paTrustOpt,
    quiet: bool = QuietOpt,
    fmt: JsonFormat = SummaryFormatOpt,
    backbone_opts: BackboneOptions = None,
):
    """Fit calibration + fusion + the uncertain band; `scan` and `eval` then use it automatically.

    --format json prints the fitted model (name, path, params, threshold, in-sample metrics, data);
    on an error nothing reaches stdout (the reason is on stderr, exit 2).

    Images a head was trained on (its record of their content keys) are left out of the fit, and
    counted on stderr and in data.train_overlap.

    Examples:
      aiidetect calibrate /data/calib --target-fpr 0.01 --target-fnr 0.05
      aiidetect calibrate calib.csv --method platt -o weights/fusion -f json | jq .threshold
    """
    from ..calibration import check_enough, cross_validate, fit_fusion, save_fusion
    from ..evaluate import run
    from ..train.data import LeftOut, summarize
    from ..fusion import FUSION_DETECTOR
    from ..heads import check_output_dir, default_output_dir, plain_name
    from ..api import ScanOptions, build_detectors, load_labelled

    method, split = method.value, split.value  # the library takes strings
    err = stderr_console()
    try:  # before the detectors score the data, not after
        plain_name(name)
        dest = out or default_output_dir(name, backbone_opts.weights_dir)
        check_output_dir(dest, name, FUSION_DETECTOR)
    except ValueError as exc:
        fail(str(exc))
    with library_errors():
        links = LeftOut()
        items = load_labelled(data, split, limit, seed, follow_links=follow_links, link_stats=links)
    try:  # before the detectors are built and score every image, not after
        check_enough(sum(i.label == 0 for i in items), sum(i.label == 1 for i in items), what="in the data")
    except ValueError as exc:
        fail(f"cannot calibrate: {exc}")
    with library_errors():
        dets, ctx = build_detectors(ScanOptions(detectors=split_list(detectors), **backbone_opts.scan_options(),
                                                c2pa_trust=c2pa_trust or None))
    if not quiet:
        print_detector_setup(err, ctx, dets, f"{len(items)} labelled images, {len(dets)} detector(s)"
                             + (f"; {note}" if (note := links.note()) else ""))
    scored = run(items, dets, batch_size=batch_size)
    from ..evaluate.overlap import say_overlap, without_training_images

    n_scored = len(scored)
    near_dups: list = []
    scored, overlap = without_training_images(scored, dets, allow=allow_train_overlap, near_out=near_dups)
    say_overlap(err, overlap, quiet, fit=True)
    if len(scored) < n_scored:
        try:
            check_enough(sum(s.label == 0 for s in scored), sum(s.label == 1 for s in scored),
                         what="once the heads' training images are left out (--allow-train-overlap keeps them)")
        except ValueError as exc:
            fail(f"cannot calibrate: {exc}")
    try:
        fitted = fit_fusion(scored, method=method, max_fpr=target_fpr, max_fnr=target_fnr)
    except ValueError as exc:
        fail(f"cannot calibrate: {exc}")
    # The rates above are measured on the images that chose the band: what it keeps on others is estimated apart.
    fitted["metrics"]["cross_validated"] = cross_validate(scored, method=method, max_fpr=target_fpr,
                                                          max_fnr=target_fnr, seed=seed)
    from ..fusion import head_digest

    # which tensors each calibration was fitted on: scans leave out a head retrained since (without_retrained)
    digests = {d.name: head_digest(d) for d in dets}
    for n, entry in fitted["params"]["detectors"].items():
        if digests.get(n):
            entry["head_sha256"] = digests[n]
    summary = summarize(items)
    summary["sources"] = [str(d) for d in data]
    summary["decode_errors"] = sum(1 for s in scored if s.error)
    summary["left_out"] = links.counts()
    summary["train_overlap"] = overlap
    summary["near_duplicates"] = near_dups  # re-encoded copies of training images, kept in the fit: to act on
    cmd = "aiidetect " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    path = save_fusion(dest, fitted, summary, name=name, source=cmd,
                       fitted_on=[s.sha256 for s in scored if not s.error and s.sha256],
                       fitted_on_phashes=[s.phash for s in scored if not s.error and s.sha256])
    if not quiet:
        _say_which_model_scans_use(err, path, backbone_opts.weights_dir)
    p, t, m = fitted["params"], fitted["threshold"], fitted["metrics"]
    if fmt == JsonFormat.json:
        from ..report.safe import dumps

        typer.echo(dumps({"name": name, "path": str(path), "params": p, "threshold": t, "metrics": m, "data": summary},
                         indent=2))
        return
    lines = [f"fusion model {name} -> {path}",
             f"band: ai-generated when P(AI) >= {t['ai']:.4f}, likely-real when <= {t['real']:.4f} "
             f"(on P(AI) over the calibration data: real above it {100 * (t['fpr_at_band'] or 0):.1f}% of {t['n_real']}, "
             f"95% bound {_pct(t.get('fpr_upper_95'))}; AI below it {100 * (t['fnr_at_band'] or 0):.1f}% of {t['n_ai']}, "
             f"95% bound {_pct(t.get('fnr_upper_95'))})"]
    lines += [f"  note: {n}" for n in t.get("notes") or []]
    for n, d in p["detectors"].items():
        lines.append(f"  {n}: {d['calibration']['method']} {json.dumps({k: v for k, v in d['calibration'].items() if k not in ('method', 'x', 'p')})}"
                     f" weight {d['weight']:+.3f}, log loss {d['nll_before']:.3f} -> {d['nll_after']:.3f} (n={d['n']})"
                     + (f"; {d['non_finite']} NaN or infinite scores left out" if d.get("non_finite") else "")
                     + (f"; {d['note']}" if d.get("note") else ""))
    lines.append(f"  soft evidence weight {p['evidence_weight']:+.3f}, bias {p['bias']:+.3f}")
    if (rows := p.get("fit_rows") or {}).get("no_answer"):
        by = ", ".join(f"{n} {k}" for n, k in rows["no_answer_by_detector"].items())
        # (a detector weighed 0 is not waited for: files only it missed are among the n)
        lines.append(f"  weights, bias and band fitted on the {rows['n']} images every detector with a say (a weight "
                     f"above 0) answered; {rows['no_answer']} left out ({by} without an answer): scans judge such "
                     f"files without the bias and band")
    for n, why in (p.get("skipped_detectors") or {}).items():
        lines.append(f"  {n}: skipped: {why}")
    auc = f"{m['auc']:.3f}" if m.get("auc") is not None else "-"
    lines.append(f"in-sample: AUC {auc}, uncertain {100 * m['uncertain_share']:.1f}%, real called AI "
                 f"{100 * m['real_called_ai']:.1f}%, AI called real {100 * m['ai_called_real']:.1f}%; "
                 f"measure held-out data with `aiidetect eval`")
    cv = m.get("cross_validated") or {}
    if cv.get("skipped"):
        lines.append(f"cross-validated: none ({cv['skipped']}): nothing estimates the band's error rates on "
                     f"other images; measure held-out data with `aiidetect eval`")
    elif cv:
        lines.append(f"cross-validated ({cv['folds']} folds, each judged by a fit without it): real called AI "
                     f"{_cv_rate(cv, 'real_called_ai')}, AI called real {_cv_rate(cv, 'ai_called_real')}, "
                     f"uncertain {100 * cv['uncertain_share']:.1f}%")
    typer.echo("\n".join(lines))


def _say_which_model_scans_use(err, path: Path, weights_dir) -> None:
    """`scan` and `eval` take the first fusion model in the weights folders: a model written under a
    new --name, or outside them with -o, is not the one they use, and nothing said so."""
    import os

    from ..fusion import load_fusion_model
    from ..heads import weights_dirs

    try:
        used = load_fusion_model(weights_dirs(list(weights_dir or [])))
    except ValueError as exc:
        err.print(f"note: scans will not load a fusion model by themselves: {exc}", highlight=False, markup=False)
        return
    if used is None or os.path.realpath(used["path"]) != os.path.realpath(path):
        which = f"{used['path']}, found first in the weights folders" if used else "no fusion model (the default rules)"
        err.print(f"note: scan and eval use {which}, not this model; pass --fusion {path} to use it",
                  highlight=False, markup=False)


def _cv_rate(cv, key: str) -> str:
    k, n = cv[f"{key}_count"]
    return f"{100 * cv[key]:.1f}% ({k} of {n}; 95% upper bound {_pct(cv[f'{key}_upper_95'])})"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def register(apps) -> None:
    apps["root"].command("calibrate")(calibrate_cmd)
