"""Render evaluation results: rich tables, metrics.json, summary.md, plots, scores.csv."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..report.output import cannot_make_under

# "n": the real / AI images every number of the row is over (the detector's opinions), beside `cover`, a share
# that hid whether an AUC of 100 rested on 40 real photos or on 3.
COLUMNS = (("coverage", "cover"), ("n", "n real/AI"), ("acc_real", "acc real"), ("acc_ai", "acc AI"), ("acc_mean", "acc mean"),
           ("best_acc_mean", "best acc"), ("ap", "AP"), ("auc", "AUC"), ("tpr_at_fpr_1", "TPR@1%"),
           ("tpr_at_fpr_5", "TPR@5%"), ("ece", "ECE"), ("uncertain_share", "uncertain"))


TABLE_NOTE = ("Percentages except ECE. Accuracy at the shipped threshold (p_ai >= 0.5 unless the head ships another; "
              "for `fused` a forced call at 0.5, not the verdict: `uncertain` and the band's error rates say what the "
              "verdicts did); `best acc` uses the best threshold on this very data (optimistic reference only). "
              "`cover` = share of images the detector gave an opinion on; metrics are over those (`n real/AI`).")


def _f(x, pct: bool = False) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{100 * x:.1f}" if pct else f"{x:.3f}"
    return str(x)


def _auc(auc, ci) -> str:
    """"AUC 100.0" on 3 real and 3 AI images is [50, 100]: the interval goes with the number. Its limits are
    rounded outward: to nearest, 99.57-99.63 around an AUC of 99.6 read "99.6 (100-100)"."""
    if auc is None or not ci:
        return _f(auc, True)
    # (1e-9: 100 * 0.29 is 28.999999999999996, not a limit below 29)
    return f"{_f(auc, True)} ({math.floor(100 * ci[0] + 1e-9)}-{math.ceil(100 * ci[1] - 1e-9)})"


def _set_aside(f: Mapping[str, Any]) -> str:
    n = (f.get("band") or {}).get("set_aside")
    return (f"; {n} file(s) judged without the model's bias, on a band no narrower than the rules' (a detector with "
            f"a say gave them no answer)" if n else "")


def _rate(f: Mapping[str, Any], key: str) -> str:
    """'0.0% (0 of 3; 95% upper bound 63.2%)': an error rate with what it rests on."""
    if f.get(key) is None:
        # "no images of that class" only when the data held none: when all of them were left out as training
        # images or could not be read, the auditor must not be told the data lacks them (nor, for a class the
        # data lacks, that training images emptied it).
        why = (f.get("unscored_by_class") or {}).get("real" if key.startswith("real_") else "ai") or {}
        parts = [f"{why['train_left_out']} left out as training images" if why.get("train_left_out") else "",
                 f"{why['unreadable']} unreadable" if why.get("unreadable") else ""]
        return f"- (none scored: {', '.join(p for p in parts if p)})" if any(parts) else "- (no images of that class)"
    k, n = f.get(f"{key}_count") or (None, None)
    up = f.get(f"{key}_upper_95")
    return f"{_f(f[key], True)}%" + (f" ({k} of {n}; 95% upper bound {_f(up, True)}%)" if n else "")


def _row(name: str, b: Mapping[str, Any]) -> list[str]:
    o = b.get("overall") or {}
    vals = []
    for key, _ in COLUMNS:
        if key == "n":
            vals.append(f"{o.get('n_real', 0)}/{o.get('n_ai', 0)}")
            continue
        v = b.get(key) if key in ("coverage", "uncertain_share") else o.get(key)
        vals.append(_auc(v, o.get("auc_ci95")) if key == "auc" else _f(v, pct=key not in ("ece",)))
    return [name] + vals


def summary_rows(cond: Mapping[str, Any]) -> list[list[str]]:
    rows = [_row(name, b) for name, b in cond["detectors"].items()]
    rows.append(_row("fused", cond["fused"]))
    return rows


def per_generator_rows(cond: Mapping[str, Any], name: str) -> list[list[str]]:
    b = cond["fused"] if name == "fused" else cond["detectors"][name]
    rows = []
    for g, r in b.get("per_generator", {}).items():
        v = r.get("verdicts") or {}
        rows.append([g, str(r["n"]), _f(r.get("acc"), True), _f(r.get("ap"), True), _auc(r.get("auc"), r.get("auc_ci95")),
                     _f(r.get("mean_p")), "/".join(str(v.get(k, "")) for k in ("ai-generated", "uncertain", "likely-real")) if v else "-"])
    return rows


GEN_HEADER = ["generator", "n", "acc", "AP vs real", "AUC vs real", "mean p_ai", "verdicts ai/unc/real"]


def _cells(row, shown=None) -> list:
    """Generator names and labels come from the user's data (folder names, CSV
    columns): rich Text, never markup ("[/x]" in a folder name must not crash eval). `shown`: the console's
    report.safe.printable_for (a non-UTF-8 terminal escapes before the layout)."""
    from rich.text import Text

    from ..report.safe import printable

    return [Text((shown or printable)(str(c))) for c in row]


def print_tables(result: Mapping[str, Any], console) -> None:
    from rich.table import Table

    from ..report.safe import printable_for

    printable = printable_for(console.encoding)
    for cond in result["conditions"]:
        t = Table(title=f"{cond['condition']}: {cond['n_scored']} images scored"
                        f"{', ' + str(cond['n_decode_errors']) + ' unreadable' if cond['n_decode_errors'] else ''}"
                        f" (percent; ECE in [0,1])")
        t.add_column("detector")
        for _, head in COLUMNS:
            t.add_column(head, justify="right")
        for r in summary_rows(cond):
            t.add_row(*_cells(r, printable))
        console.print(t)
        if cond is result["conditions"][0]:
            # The console had no word that `best acc` was chosen on the data it is reported on.
            console.print(f"  {TABLE_NOTE}", highlight=False, markup=False)
        f = cond["fused"]
        console.print(f"  fused band: ai >= {f['band']['ai']:.3f}, real <= {f['band']['real']:.3f} "
                      f"({f['band']['model']}{_set_aside(f)}); real photos called ai-generated: "
                      f"{_rate(f, 'real_called_ai')}, AI images called likely-real: {_rate(f, 'ai_called_real')}",
                      highlight=False, markup=False)
        bad = cond.get("unreadable") or []
        for u in bad[:3]:
            console.print(f"  unreadable: {printable(u['file'])} ({printable(u['error'])})", style="yellow",
                          highlight=False, markup=False)
        if cond["n_decode_errors"] > 3:
            console.print(f"  ... and {cond['n_decode_errors'] - 3} more unreadable (--out-dir: metrics.json names "
                          f"{len(bad)} of them)", style="yellow", highlight=False, markup=False)
        for name, b in cond["detectors"].items():
            if not (b.get("status") or {}).get("ok") and b.get("not_ok_reasons"):
                console.print(f"  {name}: {next(iter(b['not_ok_reasons']))}", style="yellow", highlight=False,
                              markup=False)
    for cond in result["conditions"]:
        if cond.get("protocol"):
            from .protocol import protocol_rows

            header, rows = protocol_rows(cond["protocol"])
            t = Table(title=f"{cond['protocol']['protocol']} protocol, {cond['condition']}: per-subset accuracy over "
                            f"the subset's own reals and fakes (percent), mean over subsets")
            for h in header:
                t.add_column(h, justify="left" if h in ("subset", "reals") else "right")
            for r in rows:
                t.add_row(*_cells(r, printable))
            console.print(t)
    raw = result["conditions"][0]
    names = [n for n, b in raw["detectors"].items() if b.get("overall")] + ["fused"]
    for name in names:
        rows = per_generator_rows(raw, name)
        if not rows:
            continue
        t = Table(title=f"per generator, {name} ({raw['condition']})")
        for h in GEN_HEADER:
            t.add_column(h, justify="left" if h == "generator" else "right")
        for r in rows:
            t.add_row(*_cells(r, printable))
        console.print(t)
    for det, cm in raw.get("attribution", {}).items():
        t = Table(title=f"attribution confusion, {det} (rows true, columns predicted)")
        t.add_column("true")
        for l in cm["labels"]:
            t.add_column(_cells([l], printable)[0], justify="right")
        for l, row in zip(cm["labels"], cm["matrix"]):
            t.add_row(*_cells([l, *map(str, row)], printable))
        console.print(t)


def _md_cell(c: str) -> str:
    """A generator name is a folder name or a CSV cell: a '|' or a newline in
    it would split the row into other columns or end the table."""
    from ..report.safe import printable

    return printable(str(c)).replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _overlap(meta: Mapping[str, Any]) -> str | None:
    from .overlap import overlap_line

    return overlap_line(meta.get("train_overlap") or {})


def _near(meta: Mapping[str, Any]) -> str | None:
    from .overlap import near_line

    return near_line(meta.get("train_overlap") or {})


def summary_markdown(result: Mapping[str, Any]) -> str:
    meta = result["run"]
    out = [f"# aiidetect evaluation", "",
           f"- command: `{meta.get('command', '')}`",
           f"- data: {', '.join(meta.get('data', []))} ({meta.get('n_items')} labelled images: "
           f"{meta.get('n_real')} real, {meta.get('n_ai')} AI)",
           f"- detectors: {', '.join(meta.get('detectors', []))}",
           f"- fusion: {meta.get('fusion')}",
           f"- aiidetect {meta.get('version')}, {meta.get('created')}",
           *([f"- {line}"] if (line := _overlap(meta)) else []),
           *([f"- {line}"] if (line := _near(meta)) else []), "",
           TABLE_NOTE, ""]
    for cond in result["conditions"]:
        out += [f"## {cond['condition']}", "",
                _md_table(["detector"] + [h for _, h in COLUMNS], summary_rows(cond)), ""]
        f = cond["fused"]
        out += [f"Fused band ai >= {f['band']['ai']:.3f}, real <= {f['band']['real']:.3f} ({f['band']['model']}"
                f"{_set_aside(f)}): "
                f"real photos called ai-generated {_rate(f, 'real_called_ai')}, AI images called "
                f"likely-real {_rate(f, 'ai_called_real')}, uncertain {_f(f.get('uncertain_share'), True)}%.", ""]
        if cond.get("protocol"):
            from .protocol import protocol_rows

            header, rows = protocol_rows(cond["protocol"])
            out += [f"### {cond['protocol']['protocol']} protocol ({cond['condition']})", "",
                    "Per subset: accuracy over the subset's own reals and fakes"
                    + (" and AP over the same images" if cond["protocol"]["protocol"] == "ufd" else "")
                    + "; last row: unweighted mean over subsets. See docs/evaluation.md.", "",
                    _md_table(header, rows), ""]
    raw = result["conditions"][0]
    for name in [n for n, b in raw["detectors"].items() if b.get("overall")] + ["fused"]:
        rows = per_generator_rows(raw, name)
        if rows:
            out += [f"### Per generator: {name} ({raw['condition']})", "", _md_table(GEN_HEADER, rows), ""]
    for det, cm in raw.get("attribution", {}).items():
        out += [f"### Attribution confusion: {det}", "",
                _md_table(["true \\ predicted"] + cm["labels"], [[l] + list(map(str, r)) for l, r in zip(cm["labels"], cm["matrix"])]), ""]
    if result.get("plots"):
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in result["plots"]] + [""]
    return "\n".join(out)


def write_scores(path: Path, columns_by_cond: Mapping[str, Mapping[str, Any]]) -> None:
    from ..report.output import atomic_output
    from ..report.safe import CsvRows, path_bytes_b64

    with atomic_output(path) as f:
        w = None
        for cond, cols in columns_by_cond.items():
            names = list(cols["p"])
            if w is None:
                w = CsvRows(f)
                # file_bytes last (the other columns keep their places): a name that is not UTF-8 shows as
                # U+FFFD in `file`, which names no file; its exact bytes (base64) let a script find it.
                w.writerow(["condition", "file", "label", "generator"] + [f"p_{n}" for n in names]
                           + ["verdict", "file_bytes"])
            text = cols.get("p_text") or {}   # the fused p_ai, written as a scan record writes it
            for i, p in enumerate(cols["path"]):
                w.writerow([cond, p, int(cols["y"][i]), cols["generator"][i]]
                           + [text[n][i] if n in text else "" if np.isnan(cols["p"][n][i]) else f"{cols['p'][n][i]:.6f}"
                              for n in names]
                           + [cols["verdict"][i], path_bytes_b64(p) or ""])


def plots(out: Path, columns_by_cond: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """ROC per detector, reliability diagram and score histograms for each
    clean condition (raw, and normalized when asked). Agg backend: no display."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from . import metrics as M

    made = []
    for cond, cols in columns_by_cond.items():
        if not (cond == "raw" or cond.startswith("normalized")):
            continue  # perturbed conditions: numbers in the tables, no plots
        tag = cond.replace(":", "-").replace("/", "-")
        y, ps = cols["y"], cols["p"]
        usable = {n: p for n, p in ps.items() if (~np.isnan(p)).sum() > 0}
        fig, ax = plt.subplots(figsize=(5, 5))
        for n, p in usable.items():
            m = ~np.isnan(p)
            if len(set(y[m].tolist())) < 2:
                continue
            fpr, tpr, _ = M.roc_curve(y[m], p[m])
            auc = M.roc_auc(y[m], p[m])
            ax.plot(fpr, tpr, label=f"{n} (AUC {auc:.3f}, n={m.sum()})", lw=2 if n == "fused" else 1)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate (real called AI)", ylabel="true positive rate", title=f"ROC, {cond}")
        _legend(ax, "lower right")
        made.append(_save(fig, out / f"roc_{tag}.png"))
        fig, ax = plt.subplots(figsize=(5, 5))
        for n, p in usable.items():
            m = ~np.isnan(p)
            bins = M.reliability_bins(y[m], p[m], 10)
            if bins:
                ax.plot([b["mean_p"] for b in bins], [b["frac_ai"] for b in bins], "o-", ms=3,
                        label=f"{n} (ECE {M.ece(y[m], p[m]):.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="predicted P(AI)", ylabel="observed share of AI images", title=f"Reliability, {cond}",
               xlim=(0, 1), ylim=(0, 1))
        _legend(ax, "upper left")
        made.append(_save(fig, out / f"reliability_{tag}.png"))
        k = max(1, len(usable))
        fig, axes = plt.subplots(k, 1, figsize=(6, 2.2 * k), squeeze=False)
        for ax, (n, p) in zip(axes[:, 0], usable.items()):
            m = ~np.isnan(p)
            edges = np.linspace(0, 1, 41)
            ax.hist(p[m & (y == 0)], bins=edges, alpha=0.6, label="real")
            ax.hist(p[m & (y == 1)], bins=edges, alpha=0.6, label="AI")
            ax.set_title(f"{n}: P(AI) by class, {cond}", fontsize=9)
            _legend(ax, "upper center")
        fig.tight_layout()
        made.append(_save(fig, out / f"hist_{tag}.png"))
    return made


def _legend(ax, loc: str) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc=loc)
    else:
        ax.text(0.5, 0.5, "no detector gave an opinion", ha="center", va="center", transform=ax.transAxes)


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    from ..report.output import atomic_output

    try:
        with atomic_output(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return str(path)


def check_out_dir(out: str | os.PathLike, data: Sequence[str | os.PathLike] = ()) -> None:
    """ValueError when `--out-dir` cannot take the outputs: said before the detectors score every
    image (a file there ended an evaluation of hours with FileExistsError, after its tables). Inside
    a DATA folder the plots would become labelled images of the next run (data/real/out/roc_raw.png
    is a real photo to `eval data`)."""
    real = Path(os.path.realpath(out))
    for d in data:
        if os.path.isdir(d):
            root = os.path.realpath(d)
            if str(real) == root or str(real).startswith(root.rstrip(os.sep) + os.sep):
                raise ValueError(f"--out-dir {out} lies inside the data folder {d}: its plots would be read as "
                                 "images of the data next time; write the outputs elsewhere")
    if real.exists() and not real.is_dir():
        raise ValueError(f"--out-dir {out} is a file; give a folder (new or existing)")
    if (why := cannot_make_under(real)) is not None:
        raise ValueError(f"--out-dir {out} {why}")


def write_outputs(out: Path, result: dict[str, Any], columns_by_cond: Mapping[str, Mapping[str, Any]],
                  make_plots: bool = True) -> list[str]:
    """Every file is written beside its name and renamed onto it when complete (report.output), so a
    run that fails part way (a full disk, Ctrl-C) leaves the previous run's file, not half of one."""
    from ..report.output import atomic_output

    out.mkdir(parents=True, exist_ok=True)
    files = []
    if make_plots:
        result["plots"] = [Path(p).name for p in plots(out, columns_by_cond)]
        files += result["plots"]
    from ..report.safe import clean_str, dumps

    # Generator names and paths come from folder names, which need not be
    # UTF-8: strict JSON and a writable summary, never a lone surrogate
    # (summary.md died on one with UnicodeEncodeError, after the tables).
    with atomic_output(out / "metrics.json") as f:
        f.write(dumps(result, indent=2) + "\n")
    with atomic_output(out / "summary.md") as f:
        f.write(clean_str(summary_markdown(result)))
    write_scores(out / "scores.csv", columns_by_cond)
    write_near(out / "near-duplicates.csv", result.get("near_duplicates") or [])
    return ["metrics.json", "summary.md", "scores.csv", "near-duplicates.csv"] + files


def write_near(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Evaluation images that are near-duplicates of a head's training images (evaluate.overlap), one
    row per (file, head): written even when empty, so a script reading it knows the check ran."""
    from ..report.output import atomic_output
    from ..report.safe import CsvRows

    with atomic_output(path) as f:
        w = CsvRows(f)
        w.writerow(["file", "head", "distance"])
        for r in rows:
            w.writerow([r["file"], r["head"], r["distance"]])
