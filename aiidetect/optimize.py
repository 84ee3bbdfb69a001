"""The verified fast path: `aiidetect optimize` measures, on images the user
gives, which runtime is fastest for this CPU, backbone and heads among those
whose verdicts stay within tolerance of torch float32, and stores the decision
(or the refusal with its reason) in the cache. `aiidetect scan` then uses it
without being asked, and says so.

Candidates, each compared with torch float32 run through the same pipeline on
the same files:

- torch bfloat16, only on CPUs that multiply bf16 in hardware (emulated bf16 is
  slower than float32);
- ONNX Runtime int8 (dynamic quantization of the encoder's MatMuls), with
  CLIP-Flow's own layers kept in float (``HeadExport.quantize=False``): a
  density model amplifies quantization error. On x86 CPUs without VNNI the
  weights get 7 bits, which ONNX Runtime's fast kernels there cannot overflow
  (aiidetect.cpuinfo).

A candidate is verified when, for every head and for the fused verdict, at most
``tolerance`` of the files change verdict (and, if asked, no p_ai moves more than
``max_delta_p``). The fastest verified candidate that beats float32 on model
time wins; otherwise the decision says why torch float32 stays. The fused
verdict is also fused again for every detector set `scan -d` can ask for (each
subset of the families with heads, with and without metadata), and scan serves
the chosen candidate only to the sets that stay within tolerance. The sets with
metadata are fused once more without the watermark match, as `scan --watermark
never` fuses them; `--watermark always` only adds decisive evidence, which gives
a file one verdict on every runtime, so its verdicts agree at least as well as
under the default check (its p_ai shifts are not bounded by --max-delta-p). A
set with metadata but without the C2PA check (the library's extra={"c2pa":
False}) runs torch: its fused verdicts cannot be rebuilt from the records.

The decision is keyed by everything that could make it wrong elsewhere: the
CPU (model, flags, cores), the backbone (spec, config and weights files), the
checksums of every trained pixel head and fusion model in the weights folders, and the versions
of aiidetect, torch and onnxruntime. A key that does not match is never used.
The fusion the fused verdict was verified under is recorded too: a scan with
another --fusion stays on torch and is not said verified (a torch bfloat16
decision included).
Reading the decision imports neither torch nor onnxruntime, and without one
nothing about a scan changes.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping, Sequence

from .detectors import onnx_families
from .userdirs import NO_HOME, NoUserFolder

DECISION = "decision.json"
FORMAT = "aiidetect-optimize"
FORMAT_VERSION = 1
DEFAULT_TOLERANCE = 0.005
MIN_IMAGES = 20
# The families whose heads run on the backbone and can be served from an ONNX graph (the registry says which).
PIXEL_FAMILIES = tuple(onnx_families())
ONNX_SUBDIR = "onnx-int8"
MAX_DECISION_BYTES = 64 << 20  # a decision is kilobytes; this only bounds a damaged one


class OptimizeError(RuntimeError):
    """optimize cannot measure anything (no images, no head): a usage problem."""


class NoOptimizeFolder(OptimizeError, NoUserFolder):
    """No folder for decisions (no home, no $AIIDETECT_CACHE): a usage error naming the variable to set,
    also where a caller (`optimize --show`) does not catch OptimizeError itself."""


# --------------------------------------------------------------------------
# Identity: what the decision is valid for
# --------------------------------------------------------------------------
def cache_root() -> Path | None:
    """None when there is no user cache folder (userdirs): nothing is optimized or read back."""
    from .userdirs import cache_base

    base = cache_base()
    return base / "optimize" if base else None


def _writable_root() -> Path:
    root = cache_root()
    if root is None:
        raise NoOptimizeFolder(f"no folder to store the optimize decision in: {NO_HOME}; set AIIDETECT_CACHE to a "
                               "folder of yours")
    return root


def cpu_identity() -> dict[str, Any]:
    """Model name and every flag: int8 and bf16 speed depend on them, and so do
    int8 numerics (without VNNI: 7-bit weights, other kernels)."""
    from . import cpuinfo

    return {"machine": platform.machine(), "model": cpuinfo.model(), "cores": os.cpu_count(),
            "flags_sha256": hashlib.sha256(" ".join(sorted(cpuinfo.flags())).encode()).hexdigest()[:16]}


def _file_stat(path: str | Path | None) -> dict[str, Any] | None:
    if not path:
        return None
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p), "missing": True}
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _weights_file(path: str | Path | None) -> dict[str, Any] | None:
    """The backbone checkpoint by path and content. Its SHA-256, not its mtime: a checkpoint rewritten in
    place with its mtime put back kept the decision whose int8 graph holds the old weights, while keying by
    inode and ctime instead lost the decision at every `cp -p`, restore from backup or chmod, and on every
    machine holding its own copy. The digest is remembered in weights_ids.sqlite (weights_identity), so
    only a new or rewritten file is read again."""
    if not path:
        return None
    from .weights_identity import WeightsFormatError, file_sha256

    p = Path(path)
    try:
        return {"path": str(p.resolve()), "size": p.stat().st_size, "sha256": file_sha256(p)}
    except FileNotFoundError:
        return {"path": str(p), "missing": True}
    except (OSError, WeightsFormatError):
        return {"path": str(p), "unreadable": True}


def backbone_identity(spec) -> dict[str, Any]:
    """The spec plus the files behind it, without building the model (that needs
    torch; a scan that takes the ONNX path never builds it)."""
    from .hashing import sha256_file

    cfg = None
    if spec.config_path:
        try:
            cfg = sha256_file(Path(spec.config_path))
        except OSError:
            cfg = "unreadable"
    return {"model": spec.model, "pretrained": spec.pretrained, "seed": spec.seed, "cache_dir": spec.cache_dir,
            "config_sha256": cfg, "weights": _weights_file(spec.weights_path)}


# Below this a file is hashed faster than its row in weights_ids.sqlite is looked up (manifests, licences).
HEAD_DIGEST_CACHE_MIN = 1 << 20


def _head_file_sha256(f: Path) -> str:
    """SHA-256 of one file of a head. Every scan with an optimize cache re-hashed every head and fusion
    file: 200 MB heads cost a fifth of a second each before the first verdict. Large files go through the
    backbone's digest cache (weights_identity.file_sha256, keyed by path, size, mtime, inode and ctime),
    so only a new or rewritten file is read again, one rewritten in place with its mtime put back too."""
    from .hashing import sha256_file
    from .weights_identity import WeightsFormatError, file_sha256

    try:
        if f.stat().st_size < HEAD_DIGEST_CACHE_MIN:
            return sha256_file(f)
        return file_sha256(f)
    except WeightsFormatError as exc:  # not a regular file: the OSError callers already turn into "no decision"
        raise OSError(str(exc)) from exc


def heads_identity(weights_dirs: Sequence[Path], families: Sequence[str] = PIXEL_FAMILIES) -> list[dict[str, Any]]:
    """Every trained pixel head a scan could load, by the checksum of its files:
    adding, removing or retraining one makes the decision stale. A head the shipped heads' pin refuses
    (heads.pin_problem) says so: a decision stored with a head planted in a shipped folder (before the pin,
    its files unchanged since) kept serving an export of it under --runtime auto, which torch refuses."""
    from .heads import find_heads, pin_problem

    out = []
    for fam in families:
        for path, manifest in find_heads(list(weights_dirs), detector=fam):
            files = {}
            for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
                files[str(f.relative_to(path))] = _head_file_sha256(f)
            refused = pin_problem(path, manifest)
            out.append({"family": fam, "name": manifest.get("name"), "files": files,
                        **({"refused": True} if refused is not None else {})})
    return out


# The runtimes a decision was measured with, by distribution, and the module each is imported as.
RUNTIMES = {"torch": "torch", "onnxruntime": "onnxruntime", "onnxruntime-gpu": "onnxruntime"}


def versions() -> dict[str, str | None]:
    """aiidetect's version and each of RUNTIMES' as this process runs it (extras.loaded_version): an
    `optimize` has torch and onnxruntime imported, and the installed metadata alone named a package upgraded
    under a long-lived host that still measured with the old one, whose decision a fresh scan of the new one
    then took for its own. A module not imported yet counts as its metadata (what the import would load), as
    before: for an ordinary install both say the same, so decisions stored by earlier versions keep their key.
    None: not installed. Both onnxruntime distributions installed at once share one module, which neither
    can be told to be: each keeps its metadata then."""
    from . import __version__
    from .extras import installed_versions, loaded_version

    installed = installed_versions(tuple(RUNTIMES))
    out: dict[str, str | None] = {"aiidetect": __version__}
    for dist, module in RUNTIMES.items():
        shared = any(m == module and d != dist and installed[d] is not None for d, m in RUNTIMES.items())
        v = installed[dist] if installed[dist] is None or shared else loaded_version(dist, module)
        out[dist] = None if v is None else str(v)  # str: torch's TorchVersion is a subclass
    return out


def identity(spec, weights_dirs: Sequence[Path]) -> dict[str, Any]:
    # The fusion models too: the decision verified the fused verdict under the one the weights folders held
    # then, and a fusion model added or refitted since weighs the heads' int8 differences anew.
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "cpu": cpu_identity(),
            "backbone": backbone_identity(spec), "heads": heads_identity(weights_dirs),
            "fusion": heads_identity(weights_dirs, ("fusion",)), "versions": versions()}


def key(ident: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


def decision_dir(ident: Mapping[str, Any]) -> Path:
    return _writable_root() / key(ident)


def read_decision(path: Path) -> str:
    """decision.json's text; OSError when it is not a regular file (a FIFO there hung every scan) or is
    too large to be one, ValueError when it is not UTF-8."""
    from .hashing import read_regular

    return read_regular(path, MAX_DECISION_BYTES).decode("utf-8")


# --------------------------------------------------------------------------
# Scan side: read the decision
# --------------------------------------------------------------------------
@dataclass
class FastPath:
    """What scan does with a stored decision: `use` True -> ONNX at `onnx_dir`;
    False -> stay on torch, `line` says why."""

    use: bool
    runtime: str
    dtype: str
    line: str
    onnx_dir: Path | None = None
    decision: dict[str, Any] = field(default_factory=dict)


def choose(ctx, families: Sequence[str], fusion: Any = None) -> FastPath | None:
    """The stored decision for this run, or None (then the scan is exactly what
    it was without `aiidetect optimize`). Only a default-precision CPU run of
    pixel detectors can take it: an explicit --dtype or --device cuda is the
    user's choice. `fusion` is the scan's --fusion (None/"auto", "none" or a
    folder): the fused verdict was verified under one fusion only."""
    if not any(f in PIXEL_FAMILIES for f in families):
        return None
    if ctx.dtype != "auto" or ctx.device == "cuda":
        return None
    from .report.safe import loads_foreign

    root = cache_root()
    if root is None or not root.is_dir():  # the usual case: nothing was ever optimized, no head is hashed
        return None
    spec = ctx.backbone_spec
    if spec is None:
        from .backbone import BackboneSpec

        spec = BackboneSpec()
    try:
        ident = identity(spec, ctx.weights_dirs)
        folder = root / key(ident)
        # loads_foreign: a decision nested past the parser is "not JSON" too, not a RecursionError
        decision = loads_foreign(read_decision(folder / DECISION))
    except (OSError, ValueError):  # an unreadable head or decision: scan as if nothing was optimized
        return None
    if not isinstance(decision, dict) or decision.get("identity") != json.loads(json.dumps(ident, default=str)):
        return None
    try:
        fast = _fast_path(decision, folder)
        torch_chosen = decision.get("status") == "verified" and (decision.get("chosen") or {}).get("runtime") == "torch"
        if fast.use or torch_chosen:
            # A verified torch candidate's line claims agreement too: for the set, the fusion and the
            # watermark check of this scan, or it says what was not verified.
            return _unverified_fusion(fast, decision.get("fusion"), fusion) \
                or _for_detector_set(fast, decision, families, ctx.options or {})
        return fast
    except (TypeError, ValueError, AttributeError, KeyError):
        # Fields of the wrong type (a damaged or hand-made file): raised out of here, they ended every scan.
        return FastPath(False, "torch", "auto", f"runtime: torch (the stored decision {folder / DECISION} is "
                        "damaged; run `aiidetect optimize` again)", decision=dict(decision))


def _fast_path(decision: Mapping[str, Any], folder: Path) -> FastPath:
    n = decision.get("files")
    chosen = decision.get("chosen") or {}
    if decision.get("status") != "verified" or not chosen:
        why = decision.get("reason") or "no reason recorded"
        return FastPath(False, "torch", "auto", f"runtime: torch (the fast path was refused by `aiidetect optimize` "
                        f"on {n} images: {why})", decision=dict(decision))
    if chosen.get("runtime") == "torch":
        return FastPath(False, "torch", chosen.get("dtype", "auto"), _verified_line(chosen, n), decision=dict(decision))
    onnx_dir = folder / ONNX_SUBDIR
    files = decision.get("onnx_files") if isinstance(decision.get("onnx_files"), dict) else {}
    for name, st in files.items():
        got = _file_stat(onnx_dir / name) or {}
        if not isinstance(st, dict) or got.get("size") != st.get("size") or got.get("mtime_ns") != st.get("mtime_ns"):
            return FastPath(False, "torch", "auto", f"runtime: torch (the optimized model {onnx_dir / name} changed "
                            "after `aiidetect optimize`; run it again)", decision=dict(decision))
    problem = _export_problem(onnx_dir, files)
    if problem:
        return FastPath(False, "torch", "auto", f"runtime: torch (the optimized model in {onnx_dir} fails its checks: "
                        f"{problem}; run `aiidetect optimize` again)", decision=dict(decision))
    return FastPath(True, "onnx", chosen.get("dtype", "int8"), _verified_line(chosen, n), onnx_dir, dict(decision))


def _for_detector_set(fast: FastPath, decision: Mapping[str, Any], families: Sequence[str],
                      options: Mapping[str, Any] | None = None) -> FastPath | None:
    """`fast` when the decision verified the fused verdicts of the detector set this scan runs, else a
    torch FastPath saying why; None when the scan selects no family the setup has heads of (its fused
    verdict is the metadata detector's, the same on every runtime). Per-head agreement does not carry
    over to a subset: fused alone, one head decides, and `-d flow` put CLIP-Flow's int8 shifts against
    the fused thresholds with nothing to dilute them. `options` are the run's detector options, whose
    `<family>_heads` narrows a family to the heads named (the library's ScanOptions.extra)."""
    options = options or {}
    chosen = decision.get("chosen") or {}
    heads = (decision.get("identity") or {}).get("heads") or []
    names: dict[str, set] = {}
    for h in heads:
        if isinstance(h, dict):
            names.setdefault(h.get("family"), set()).add(h.get("name"))
    present = set(names)
    # Sets are verified with every head of their families: a family narrowed to some of its heads fuses
    # fewer (one alone decides), a family narrowed to none of them is unavailable on either runtime.
    part = []
    for fam, got in names.items():
        wanted = options.get(f"{fam}_heads")
        if wanted and fam in families:
            kept = got & {str(w) for w in wanted}
            if not kept:
                present.discard(fam)
            elif kept != got:
                part.append(f"{fam} ({', '.join(sorted(map(str, kept)))} of {len(got)} heads)")
    # A selected pixel family without a head is an unavailable entry on either runtime: fusion drops it.
    want = [f for f in dict.fromkeys(families) if f not in PIXEL_FAMILIES or f in present]
    if not any(f in present for f in want):
        return None
    key, full, n = set_key(want), set_key(["metadata", *names]), decision.get("files")
    if part:
        return FastPath(False, "torch", "auto", f"runtime: torch (`aiidetect optimize` verified the fast path with "
                        f"every head of a family; this scan runs {'; '.join(part)})", decision=fast.decision)
    sets, label = chosen.get("detector_sets"), ""
    watermark = options.get("watermark", "auto")
    if "metadata" in want and not options.get("c2pa", True):
        # Like a watermark match, a signed AI declaration decides a file on every runtime; without the C2PA
        # check the heads decide it. No stored record re-fuses into that (the XMP claims counted once with
        # the manifest's would weigh again), so optimize cannot verify it.
        return FastPath(False, "torch", "auto", "runtime: torch (`aiidetect optimize` verified the fast path's "
                        "fused verdicts with the metadata detector's C2PA check, and this scan runs without the "
                        "C2PA check)", decision=fast.decision)
    if "metadata" in want and watermark == "never":
        # A watermark match is decisive: with the check, an SD-size file's verdict is the same on every
        # runtime; without it the heads decide that file, and their int8 shifts with them.
        sets, label = chosen.get("detector_sets_watermark_never"), " with --watermark never"
        if not isinstance(sets, dict):
            return FastPath(False, "torch", "auto", "runtime: torch (`aiidetect optimize` verified the fast path's "
                            "fused verdicts with the default watermark check, not --watermark never, which leaves "
                            "the watermark evidence out; run `aiidetect optimize` again to verify both)",
                            decision=fast.decision)
    elif "metadata" in want and watermark != "auto" and decision.get("max_delta_p") is not None:
        # --watermark always (the check reads any value but auto and never so, and ScanOptions.extra passes
        # one unchecked). Verdicts agree at least as well as under the default check (a match only adds
        # decisive evidence, and a file with decisive evidence has one verdict on every runtime), p_ai not:
        # beside decisive evidence toward real, a match leaves p_ai to the heads again.
        return FastPath(False, "torch", "auto", "runtime: torch (`aiidetect optimize` bounded p_ai shifts "
                        "(--max-delta-p) with the default watermark check only, not --watermark always)",
                        decision=fast.decision)
    if sets is None:
        # An older `aiidetect optimize` compared the fused verdict over everything it ran and nothing else:
        # that set is still served, any other waits for a new run.
        if key == full:
            return fast
        return FastPath(False, "torch", "auto", f"runtime: torch (an older `aiidetect optimize` verified the fast "
                        f"path's fused verdicts for the detectors {full} only, not {key}; run `aiidetect optimize` "
                        "again to verify every detector set)", decision=fast.decision)
    entry = sets.get(key) if isinstance(sets, dict) else None
    if isinstance(entry, dict) and entry.get("status") == "verified":
        return replace(fast, line=_verified_line({**chosen, "worst_changed_share": entry.get("worst_changed_share")},
                                                 n, None if key == full else key, label))
    if isinstance(entry, dict):
        why = f"refused by `aiidetect optimize` on {n} images: {entry.get('reason')}"
    else:  # a family optimize never ran (one registered since, a plugin): its fused verdicts were never compared
        why = "not verified by `aiidetect optimize`"
    return FastPath(False, "torch", "auto", f"runtime: torch (the fast path for the detectors {key}{label} was {why})",
                    decision=fast.decision)


def verified_fusion(model: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fusion a decision verified the fused verdict under: the default rules, or a model pinned by
    the SHA-256 of its manifest (which holds the fitted parameters); its path is left out, as the key
    already covers the weights folders and a copy elsewhere is the same model."""
    from .fusion import fusion_identity

    ident = fusion_identity(model)
    return {"kind": "rules"} if ident["kind"] == "rules" else {"kind": "model", "name": ident.get("name"),
                                                                "sha256": ident.get("sha256")}


def _unverified_fusion(fast: FastPath, verified: Any, fusion: Any) -> FastPath | None:
    """A torch FastPath when the scan's --fusion is not the fusion the decision verified, else None.
    Per-head agreement holds under any fusion, but the fused verdict weighs the heads' int8 differences
    by the fusion's parameters: under other ones its agreement was never measured. None/"auto" is the
    fusion model of the weights folders, which the decision's key already pins."""
    if fusion is None or (isinstance(fusion, str) and fusion in ("", "auto")):
        return None
    if isinstance(fusion, str) and fusion == "none":
        want, what = {"kind": "rules"}, "the default rules (--fusion none)"
    else:
        # Pinned as optimize pinned it; a manifest that cannot be read has no digest, so it is never the verified
        # one (resolve_fusion reports what is wrong with it).
        want, what = verified_fusion({"path": fusion}), f"the fusion model {fusion} (--fusion)"
    if isinstance(verified, dict) and verified.get("kind") == want["kind"] and (
            want["kind"] == "rules" or (want["sha256"] and verified.get("sha256") == want["sha256"])):
        return None
    if not isinstance(verified, dict):
        under = "an unrecorded fusion (an older `aiidetect optimize`)"
    elif verified.get("kind") == "rules":
        under = "the default rules"
    else:
        under = f"the fusion model {verified.get('name')}"
    todo = "to verify that one, run `aiidetect optimize` with the weights folders holding just it"
    if not fast.use:  # a verified torch candidate (bfloat16): this scan's fused verdicts are not verified either
        return FastPath(False, "torch", "auto", f"runtime: torch (not verified for this scan: `aiidetect optimize` "
                        f"verified the torch {fast.dtype} fused verdicts under {under}, not {what}; {todo})",
                        decision=fast.decision)
    return FastPath(False, "torch", "auto", f"runtime: torch (the fast path's fused verdicts were verified under "
                    f"{under}, not {what}; {todo})", decision=fast.decision)


def _export_problem(onnx_dir: Path, files: Mapping[str, Any]) -> str | None:
    """What makes the verified export unfit to serve, or None. Size and mtime alone let a file rewritten in
    place (a flipped bit, an edited calibration in the sidecar, the mtime put back) through: the sidecar is
    pinned by the SHA-256 recorded at optimize and pins every graph file in turn, so what runs is what was
    verified. Checked here rather than left to the ONNX detector, which would make the heads unavailable
    (their evidence lost) where torch can still give it."""
    from .hashing import sha256_file
    from .onnx_sidecar import SIDECAR, ExportError, graph_problems, read_sidecar

    want = (files.get(SIDECAR) or {}).get("sha256")
    if not want:
        return f"the decision records no checksum of {SIDECAR} (an older `aiidetect optimize`)"
    try:
        if sha256_file(onnx_dir / SIDECAR) != want:
            return f"{SIDECAR} differs from its checksum in {DECISION}"
        side = read_sidecar(onnx_dir)
    except (OSError, ExportError) as exc:
        return str(exc)
    graphs = side.get("graphs")
    if not isinstance(graphs, list) or not graphs:
        return f"{SIDECAR} lists no graph"
    for g in graphs:
        bad = graph_problems(onnx_dir, g) if isinstance(g, dict) else ["a graph entry is not an object"]
        if bad:
            return "; ".join(bad)
    return None


def _verified_line(c: Mapping[str, Any], n, detectors: str | None = None, label: str = "") -> str:
    """`detectors`: the set, when it is not the whole setup; `label`: how it was fused, when not as the
    default scan fuses it (" with --watermark never")."""
    bits = (c.get("int8") or {}).get("weight_bits")
    how = f" ({bits}-bit weights)" if bits == 7 else ""
    which = (f" for the detectors {detectors}" if detectors else "") + label
    return (f"runtime: {c.get('runtime')} {c.get('dtype')}{how}, verified by `aiidetect optimize` on {n} "
            f"images{which}: "
            f"{100 * (c.get('worst_changed_share') or 0.0):.1f}% verdicts changed, "
            f"{c.get('scan_speedup', 0.0):.1f}× torch float32 (model time {c.get('speedup', 0.0):.1f}×)")


# --------------------------------------------------------------------------
# optimize side: measure and decide
# --------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    runtime: str
    dtype: str
    records: list
    seconds: float
    model_seconds: float


def _run(name: str, runtime: str, dtype: str, dets, fusion_model, paths: Sequence[str], batch_size: int,
         workers: int) -> Run:
    from .discover import Candidate
    from .pipeline import Pipeline

    warm = list(paths[:batch_size])
    # One untimed batch first: oneDNN and ORT build their kernels on the first call.
    list(Pipeline(dets, fusion_model, batch_size=batch_size, workers=workers).run(
        [Candidate(p, explicit=True) for p in warm]))
    pipe = Pipeline(dets, fusion_model, batch_size=batch_size, workers=workers)
    t = time.perf_counter()
    recs = list(pipe.run([Candidate(p, explicit=True) for p in paths]))
    secs = time.perf_counter() - t
    return Run(name, runtime, dtype, recs, secs, float(pipe.stats.model_seconds))


def _threshold(res) -> float:
    t = (res.extra or {}).get("threshold")
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.5


def set_key(families: Sequence[str]) -> str:
    """A detector set as the decision names it: its families in registry order, comma-separated
    (`-d flow,linear` and `-d linear,flow` are one set)."""
    order = ["metadata", *PIXEL_FAMILIES]
    fams = set(families)
    return ",".join([f for f in order if f in fams] + sorted(fams - set(order)))


def detector_sets(families: Sequence[str]) -> list[tuple[str, ...]]:
    """Every detector set a scan can ask for with these pixel families (those the setup has heads of):
    each non-empty subset of them, with and without the metadata detector. Fusion over a subset can be
    more fragile than over all (one head alone decides), so each is verified on its own."""
    from itertools import combinations

    pix = [f for f in PIXEL_FAMILIES if f in set(families)]
    subsets = [c for n in range(1, len(pix) + 1) for c in combinations(pix, n)]
    return [(*m, *c) for m in ((), ("metadata",)) for c in subsets]


# The one piece of evidence the watermark check adds (provenance._watermark): decisive, toward AI.
WATERMARK_EVIDENCE = "watermark.match"


def _without_watermark(results: Mapping[str, Any]) -> dict[str, Any]:
    """The results as `scan --watermark never` gives them: the metadata detector's without the watermark
    match, the only thing the check adds to them (p_ai summarised again from the evidence left)."""
    from .metadata.detector import result_from_evidence

    out = dict(results)
    for n, r in results.items():
        if n.split(":")[0] == "metadata" and r is not None and r.status == "ok" \
                and any(e.id == WATERMARK_EVIDENCE for e in r.evidence or ()):
            out[n] = result_from_evidence([e for e in r.evidence if e.id != WATERMARK_EVIDENCE], extra=r.extra)
    return out


def _set_verdict(rec, fams: set[str], fusion_model, watermark: str = "auto") -> tuple[str | None, float | None]:
    """(verdict, p_ai) of a record had the scan run only the detectors of `fams`: the pipeline's own
    fusion over those results (each head's result does not depend on which others ran); with
    `watermark` "never", as `scan --watermark never` fuses them."""
    if rec.error is not None:
        return rec.verdict, rec.p_ai
    from .fusion import fuse, shown_p

    results = _without_watermark(rec.detectors) if watermark == "never" else rec.detectors
    out = fuse({n: r for n, r in results.items() if n.split(":")[0] in fams}, fusion_model)
    return out.verdict, shown_p(out.p_ai, out.band)   # as the pipeline writes a record's p_ai


def compare(ref: Run, cand: Run, fusion_model: Mapping[str, Any] | None = None,
            sets: Sequence[Sequence[str]] = ()) -> dict[str, Any]:
    """Per head, for the fused verdict and for the fused verdict of each detector set in `sets`
    (fused again from the same per-head results, under `fusion_model`): files compared, verdicts
    changed, max |Δp_ai|. A file that has a result on one side only counts as changed. The sets with
    the metadata detector are also fused as `scan --watermark never` fuses them (`sets_watermark_never`):
    a watermark match is decisive, so under the default check an SD-size file's verdict is the same on
    every runtime, and without it the heads decide, int8 shifts and all."""
    heads: dict[str, dict[str, Any]] = {}
    fused = {"files": 0, "verdict_changed": 0, "max_abs_dp": 0.0}
    by_set = {set_key(s): (set(s), {"files": 0, "verdict_changed": 0, "max_abs_dp": 0.0}) for s in sets}
    by_set_never = {set_key(s): (set(s), {"files": 0, "verdict_changed": 0, "max_abs_dp": 0.0})
                    for s in sets if "metadata" in s}
    for a, b in zip(ref.records, cand.records):
        if a.error is not None and b.error is not None:
            continue
        fused["files"] += 1
        if a.verdict != b.verdict:
            fused["verdict_changed"] += 1
        if a.p_ai is not None and b.p_ai is not None:
            fused["max_abs_dp"] = max(fused["max_abs_dp"], abs(a.p_ai - b.p_ai))
        for wm, group in (("auto", by_set), ("never", by_set_never)):
            for fams, d in group.values():
                (va, pa), (vb, pb) = _set_verdict(a, fams, fusion_model, wm), _set_verdict(b, fams, fusion_model, wm)
                d["files"] += 1
                d["verdict_changed"] += int(va != vb)
                if pa is not None and pb is not None:
                    d["max_abs_dp"] = max(d["max_abs_dp"], abs(pa - pb))
        for name, ra in a.detectors.items():
            if ra.status == "unavailable" or name.startswith("metadata"):
                continue
            rb = b.detectors.get(name)
            h = heads.setdefault(name, {"files": 0, "verdict_changed": 0, "max_abs_dp": 0.0})
            a_ok = ra.status == "ok" and ra.p_ai is not None
            b_ok = rb is not None and rb.status == "ok" and rb.p_ai is not None
            if not a_ok and not b_ok:
                continue
            h["files"] += 1
            if a_ok != b_ok:
                h["verdict_changed"] += 1
                continue
            thr = _threshold(ra)
            h["verdict_changed"] += int((ra.p_ai >= thr) != (rb.p_ai >= thr))
            h["max_abs_dp"] = max(h["max_abs_dp"], abs(ra.p_ai - rb.p_ai))
    out_sets = {k: d for k, (_, d) in by_set.items()}
    out_never = {k: d for k, (_, d) in by_set_never.items()}
    for d in (*heads.values(), fused, *out_sets.values(), *out_never.values()):
        d["verdict_changed_share"] = d["verdict_changed"] / d["files"] if d["files"] else 0.0
        d["max_abs_dp"] = round(d["max_abs_dp"], 6)
    return {"heads": heads, "fused": fused, **({"sets": out_sets} if sets else {}),
            **({"sets_watermark_never": out_never} if out_never else {})}


def _too_slow(min_speedup: float) -> str:
    return "not faster than torch float32" if min_speedup == 1.0 else f"not over {min_speedup:g}x torch float32"


def judge(agree: Mapping[str, Any], tolerance: float, max_delta_p: float | None) -> str | None:
    """None when within tolerance, else the reason (the worst offender)."""
    return _judged([*sorted(agree["heads"].items()), ("fused verdict", agree["fused"])], tolerance, max_delta_p)


def judge_sets(agree: MutableMapping[str, Any], tolerance: float, max_delta_p: float | None) -> None:
    """Mark each detector set of `agree` verified or refused, as `judge` does the whole candidate: the
    heads of its families and its own fused verdict, each within tolerance. `worst_changed_share` is
    the worst of those, the figure scan's summary line gives for that set. The same for the sets as
    `scan --watermark never` fuses them."""
    heads = agree.get("heads") or {}
    for key, d in [*(agree.get("sets") or {}).items(), *(agree.get("sets_watermark_never") or {}).items()]:
        fams = set(key.split(","))
        mine = sorted((n, h) for n, h in heads.items() if n.split(":")[0] in fams)
        why = _judged([*mine, ("fused verdict", d)], tolerance, max_delta_p)
        d["worst_changed_share"] = max([h["verdict_changed_share"] for _, h in mine] + [d["verdict_changed_share"]])
        d["status"], d["reason"] = ("verified", None) if why is None else ("refused", why)


def _judged(items, tolerance: float, max_delta_p: float | None) -> str | None:
    for name, d in items:
        if d["verdict_changed_share"] > tolerance:
            return (f"{name} changed {d['verdict_changed']}/{d['files']} verdicts "
                    f"({100 * d['verdict_changed_share']:.3g}% > {100 * tolerance:.3g}%)")  # 0.503% > 0.5%, not 0.5% > 0.5%
        if max_delta_p is not None and d["max_abs_dp"] > max_delta_p:
            return f"{name} moved p_ai by up to {d['max_abs_dp']:.4f} (> --max-delta-p {max_delta_p:g})"
    return None


def optimize(spec, weights_dirs: Sequence[Path], paths: Sequence[str], tolerance: float = DEFAULT_TOLERANCE,
             max_delta_p: float | None = None, batch_size: int = 16, workers: int = 2,
             candidates: Sequence[str] | None = None, min_speedup: float = 1.0,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure the candidates on `paths`, store the decision, return it. A
    verified candidate is chosen only when its model time beats torch float32
    by more than `min_speedup` times (1.0: faster at all).
    Raises OptimizeError when nothing can be measured."""
    if not 0.0 <= tolerance < 1.0:
        raise OptimizeError("--tolerance is a share of files, between 0 and 1 (0.005 = 0.5%)")
    if len(paths) < MIN_IMAGES:
        raise OptimizeError(f"{len(paths)} images given; at least {MIN_IMAGES} are needed to verify agreement "
                            "(a few hundred like those you scan are better: with 0.5% tolerance, 200 images "
                            "allow one changed verdict)")
    weights_dirs = list(weights_dirs)
    ident = identity(spec, weights_dirs)
    if not ident["heads"]:
        raise OptimizeError(f"no trained {', '.join(PIXEL_FAMILIES)} head in the weights folders: nothing to optimize")
    folder = _writable_root() / key(ident)
    with _only_run(folder):
        try:
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        except OSError as exc:
            raise OptimizeError(f"cannot write the optimize cache {folder} ({exc}); set AIIDETECT_CACHE to a "
                                "writable folder") from exc
        try:
            return _measure(spec, weights_dirs, paths, ident, folder, tolerance, max_delta_p, batch_size, workers,
                            candidates, log, min_speedup)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no half-written decision, no orphaned graph
            raise


@contextlib.contextmanager
def _only_run(folder: Path):
    """Hold an exclusive lock on this setup's decision for the whole measurement. Two `optimize` runs of
    one setup shared its folder: the second deleted the first's graph under it (which then failed, and
    its cleanup deleted the second's), and a decision could record a graph that another run exported.
    The lock is the kernel's (flock): a run killed with -9 leaves no stale lock behind."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not kept apart
        yield
        return
    lock = folder.with_name(folder.name + ".lock")
    for _ in range(8):
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OptimizeError(f"cannot write the optimize cache {lock.parent} ({exc}); set AIIDETECT_CACHE to "
                                "a writable folder") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise OptimizeError(f"another `aiidetect optimize` for this CPU, backbone and head set is running "
                                f"(it holds {lock}); wait for it to finish") from exc
        # `cache clear optimize` removes the lock file while holding it: taken after that, the lock was on a
        # file no other run or clear can see any more, and the next clear removed this run's folder under it
        if _same_file(fd, lock):
            break
        os.close(fd)
    else:
        raise OptimizeError(f"cannot hold the lock {lock}: it keeps being removed; is a `cache clear` looping?")
    try:
        yield
    finally:
        os.close(fd)  # releases the lock; the empty file stays (removing it would race a run taking it)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# --------------------------------------------------------------------------
# The decisions as a cache (`aiidetect cache info|clear`)
# --------------------------------------------------------------------------
def _is_key(name: str) -> bool:
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name)


def decision_folders() -> list[Path]:
    """Every decision folder under cache_root(): those named by a key, nothing else found there."""
    root = cache_root()
    if root is None or root.is_symlink() or not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _is_key(p.name))


def stale_reason(folder: Path) -> str | None:
    """Why no scan of this installation can ever use the decision in `folder`, or None. Only what this
    installation alone decides: a decision of another format or made under other versions of aiidetect,
    torch or onnxruntime (their versions are in the key), or one without a readable decision.json. Another
    CPU, backbone, head set or fusion model is not enough: the cache may be shared by machines, and a scan
    with other weights folders or --backbone-weights may still reach it."""
    from .report.safe import loads_foreign

    if folder.is_symlink() or (folder / DECISION).is_symlink():
        # optimize writes neither; `cache info` reads nothing out of the cache folder through one
        return "a link, not followed"
    try:
        decision = loads_foreign(read_decision(folder / DECISION))
    except (OSError, ValueError):
        return "no readable decision.json"
    ident = decision.get("identity") if isinstance(decision, dict) else None
    if not isinstance(ident, dict):
        return "no readable decision.json"
    if (ident.get("format"), ident.get("format_version")) != (FORMAT, FORMAT_VERSION):
        return "another decision format"
    if ident.get("versions") != versions():
        return "made under other versions of aiidetect, torch or onnxruntime"
    return None


def _tree_bytes(p: Path) -> tuple[int, int]:
    """(files, bytes) under `p`, links counted as links (never followed). Walked with a list, not
    os.walk: a tree nested a thousand folders deep ended `cache info` in a RecursionError."""
    if p.is_symlink() or not p.is_dir():
        return (1, p.lstat().st_size) if os.path.lexists(p) else (0, 0)
    n = size = 0
    todo = [str(p)]
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                entries = list(it)
        except OSError:  # unreadable or gone: what it holds is not counted, as os.walk did
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    todo.append(e.path)
                    continue
                n, size = n + 1, size + e.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return n, size


def _remove_tree(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except RecursionError:
        raise OSError(f"{folder} is nested too deep to remove here; remove it by hand") from None


def decisions_info() -> dict[str, Any]:
    """{decisions, stale, bytes} of the decisions folder (bytes: every file in it)."""
    root = cache_root()
    folders = decision_folders()
    return {"decisions": len(folders), "stale": sum(1 for f in folders if stale_reason(f)),
            "bytes": _tree_bytes(root)[1] if root is not None else 0}


def clear_decisions(stale_only: bool = False) -> dict[str, Any]:
    """Remove the decision folders (with `stale_only`, those stale_reason names) and their lock files,
    and the lock files left by a run that failed; {files, bytes, decisions, in_use}. A decision an
    `optimize` is measuring right now (it holds the lock) is left, counted in `in_use`. Nothing else in
    the folder is touched, and a link is removed as a link: it is the user's cache, not their files."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): as _only_run, runs are not kept apart
        fcntl = None
    out = {"files": 0, "bytes": 0, "decisions": 0, "in_use": 0}
    root = cache_root()
    if root is None or root.is_symlink() or not root.is_dir():
        return out
    keys = sorted({k for k in (p.name.removesuffix(".lock") for p in root.iterdir()) if _is_key(k)})
    for k in keys:
        folder, lock = root / k, root / (k + ".lock")
        there = os.path.lexists(folder)
        if there and stale_only and not stale_reason(folder):
            continue
        fd, had_lock = None, os.path.lexists(lock)
        # only a lock file optimize could hold: a folder or FIFO by that name (no run can take it) failed
        # the open and ended the whole clear half done; a link is not followed
        if fcntl is not None and (not had_lock or stat.S_ISREG(lock.lstat().st_mode)):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    out["in_use"] += 1
                    continue
            n, size = _tree_bytes(folder)
            if folder.is_symlink() or (there and not folder.is_dir()):
                folder.unlink()
            elif there:
                _remove_tree(folder)
            # the lock last, still held: a run starting now makes a new one and finds the folder gone
            if lock.is_dir() and not lock.is_symlink():
                _remove_tree(lock)
                n += 1
            elif os.path.lexists(lock):
                lock.unlink()
                n += int(had_lock)  # not the one opened here to take the lock
            out["files"] += n
            out["bytes"] += size
            out["decisions"] += int(there)
        finally:
            if fd is not None:
                os.close(fd)
    return out


def _measure(spec, weights_dirs, paths, ident, folder: Path, tolerance, max_delta_p, batch_size, workers,
             candidates, log, min_speedup: float = 1.0) -> dict[str, Any]:
    from .backbone import native_bf16_cpu
    from .detectors import RunContext, create_detectors

    fusion_model = _fusion(weights_dirs)
    fams = ["metadata", *PIXEL_FAMILIES]

    ctx = RunContext(backbone_spec=spec, device="cpu", dtype="float32", weights_dirs=weights_dirs,
                     options={"watermark": "auto"})
    dets = create_detectors(fams, ctx)
    pixel = [d for d in dets if d.family in PIXEL_FAMILIES and d.describe().get("status") != "unavailable"]
    if not pixel:
        reasons = "; ".join(f"{d.name}: {d.describe().get('reason')}" for d in dets if d.family != "metadata")
        raise OptimizeError(f"no pixel detector can run on this backbone ({reasons})")
    log(f"torch float32 (reference) on {len(paths)} images")
    ref = _run("torch-float32", "torch", "float32", dets, fusion_model, paths, batch_size, workers)
    n_ok = sum(1 for r in ref.records if r.error is None)
    if n_ok < MIN_IMAGES:
        raise OptimizeError(f"only {n_ok} of {len(paths)} images decoded; at least {MIN_IMAGES} are needed")
    rows: list[dict[str, Any]] = [_row(ref, ref, None, "reference")]
    want = set(candidates or ("bfloat16", "int8"))
    # `scan -d linear` fuses the linear heads alone: its fused verdicts are compared too, for every set
    # of the families this setup has heads of (scan serves the fast path to the verified sets only).
    sets = detector_sets(sorted({h["family"] for h in ident["heads"]}))
    onnx_files: dict[str, Any] = {}

    if "bfloat16" in want:
        if native_bf16_cpu():
            ctx_bf = RunContext(backbone_spec=spec, device="cpu", dtype="bfloat16", weights_dirs=weights_dirs,
                                options={"watermark": "auto"})
            log("torch bfloat16")
            run = _run("torch-bfloat16", "torch", "bfloat16", create_detectors(fams, ctx_bf), fusion_model, paths,
                       batch_size, workers)
            rows.append(_row(ref, run, compare(ref, run, fusion_model, sets), None))
            del ctx_bf
        else:
            rows.append({"candidate": "torch-bfloat16", "runtime": "torch", "dtype": "bfloat16",
                         "status": "skipped", "reason": "this CPU has no native bf16 (emulated bf16 is slower)"})
    if "int8" in want:
        row, onnx_files = _int8(ctx, ref, fams, fusion_model, paths, batch_size, workers, folder, log, sets)
        rows.append(row)

    for r in rows[1:]:
        if r.get("status") == "measured":
            why = judge(r["agreement"], tolerance, max_delta_p)
            r["status"], r["reason"] = ("verified", None) if why is None else ("refused", why)
            judge_sets(r["agreement"], tolerance, max_delta_p)
    verified = [r for r in rows[1:] if r.get("status") == "verified" and r["speedup"] > min_speedup]
    decision: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "identity": json.loads(json.dumps(ident, default=str)), "files": n_ok, "tolerance": tolerance,
        "max_delta_p": max_delta_p, "candidates": rows,
        # scan under another --fusion must not take a fast path whose fused verdicts were verified under this one
        "fusion": verified_fusion(fusion_model)}
    if verified:
        best = max(verified, key=lambda r: r["speedup"])
        chosen = {k: best[k] for k in ("candidate", "runtime", "dtype", "speedup", "scan_speedup",
                                       "worst_changed_share", "int8") if k in best}
        # What scan reads to serve a detector set: verified or refused (with the reason), and its worst share.
        chosen["detector_sets"] = {k: {f: d[f] for f in ("status", "reason", "files", "worst_changed_share")}
                                   for k, d in best["agreement"]["sets"].items()}
        # ... and under `scan --watermark never`, which fuses SD-size files without their watermark match
        chosen["detector_sets_watermark_never"] = {
            k: {f: d[f] for f in ("status", "reason", "files", "worst_changed_share")}
            for k, d in (best["agreement"].get("sets_watermark_never") or {}).items()}
        decision.update(status="verified", chosen=chosen, reason=None)
    else:
        measured = [r for r in rows[1:] if r.get("status") in ("verified", "refused")]
        reason = "; ".join(f"{r['candidate']}: {r['reason'] or _too_slow(min_speedup)}" for r in measured) \
            or "; ".join(f"{r['candidate']}: {r['reason']}" for r in rows[1:]) or "no candidate"
        decision.update(status="refused", chosen=None, reason=reason)
    if decision.get("chosen", {}) and decision["chosen"]["runtime"] == "onnx":
        decision["onnx_files"] = onnx_files
    elif (folder / ONNX_SUBDIR).exists():
        shutil.rmtree(folder / ONNX_SUBDIR)  # a refused or slower graph is not kept (ViT-L-14: 300 MB)
    tmp = folder / (DECISION + ".tmp")
    tmp.write_text(json.dumps(decision, indent=1) + "\n")
    tmp.replace(folder / DECISION)
    decision["path"] = str(folder / DECISION)
    return decision


def _fusion(weights_dirs):
    from . import fusion

    try:
        return fusion.load_fusion_model(weights_dirs)
    except Exception:  # noqa: BLE001 - scan falls back to the default rules the same way
        return None


def _int8(ctx, ref: Run, fams, fusion_model, paths, batch_size, workers, folder: Path, log, sets=()):
    from .detectors import RunContext, create_detectors

    base = {"candidate": "onnx-int8", "runtime": "onnx", "dtype": "int8"}
    try:
        from .onnx_export import ExportError, collect_heads, export_onnx
        from .onnx_runtime import import_ort

        import_ort()
    except ImportError as exc:
        return {**base, "status": "skipped", "reason": f"not installed: {exc}"}, {}
    except Exception as exc:  # noqa: BLE001 - RuntimeUnavailable: onnxruntime missing
        return {**base, "status": "skipped", "reason": str(exc)}, {}
    bb = ctx.backbone()
    heads, skipped = collect_heads(bb, ctx.weights_dirs, list(PIXEL_FAMILIES))
    out = folder / ONNX_SUBDIR
    log(f"exporting {len(heads)} head(s) + encoder to ONNX int8 (CLIP-Flow layers kept in float)")
    try:
        # Weight bits for this CPU: 7 on x86 without VNNI, where 8-bit weights would overflow the fast kernels.
        side = export_onnx(bb, out, heads, variant="int8", skipped=skipped, log=log)
    except (ExportError, ImportError) as exc:
        return {**base, "status": "skipped", "reason": f"export failed: {exc}"}, {}
    bits = sorted({(g.get("conversion") or {}).get("weight_bits") for g in side.get("graphs", [])} - {None})
    if os.environ.get("AIIDETECT_OPTIMIZE_TEST_NOISE"):
        _perturb(out, float(os.environ["AIIDETECT_OPTIMIZE_TEST_NOISE"]))
    ctx_o = RunContext(backbone_spec=ctx.backbone_spec, device="cpu", dtype="float32", weights_dirs=ctx.weights_dirs,
                       runtime="onnx", onnx_dir=out, options={"watermark": "auto",
                                                              "onnx_families": list(PIXEL_FAMILIES)})
    dets = create_detectors([f for f in fams if f == "metadata"] + ["onnx"], ctx_o)
    log("onnx int8")
    run = _run("onnx-int8", "onnx", "int8", dets, fusion_model, paths, batch_size, workers)
    from .hashing import sha256_file

    # The checksums let scan tell the verified export from one changed since at the same size and mtime.
    files = {f.name: {**(_file_stat(f) or {}), "sha256": sha256_file(f)} for f in sorted(out.iterdir()) if f.is_file()}
    from . import cpuinfo

    row = _row(ref, run, compare(ref, run, fusion_model, sets), None)
    row["int8"] = {"weight_bits": bits[0] if len(bits) == 1 else bits, "vnni": cpuinfo.int8_vnni(),
                   "exact_kernels_forced": cpuinfo.int8_pairs_saturate()}
    return row, files


def _perturb(onnx_dir: Path, scale: float) -> None:
    """Test hook (AIIDETECT_OPTIMIZE_TEST_NOISE): add noise to the int8 graph's
    float weights, to prove that a graph outside tolerance is refused."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from .onnx_sidecar import SIDECAR

    side = json.loads((onnx_dir / SIDECAR).read_text())
    rng = np.random.default_rng(0)
    for g in side["graphs"]:
        p = onnx_dir / g["file"]
        m = onnx.load(str(p))
        for t in m.graph.initializer:
            a = numpy_helper.to_array(t)
            if a.dtype == np.float32 and a.size > 16:
                t.CopyFrom(numpy_helper.from_array((a + rng.normal(0, scale, a.shape)).astype(np.float32), t.name))
        onnx.save_model(m, str(p))


def _row(ref: Run, run: Run, agree: Mapping[str, Any] | None, status: str | None) -> dict[str, Any]:
    n = len(run.records)
    row: dict[str, Any] = {
        "candidate": run.name, "runtime": run.runtime, "dtype": run.dtype, "status": status or "measured",
        "reason": None, "seconds": round(run.seconds, 3), "model_seconds": round(run.model_seconds, 3),
        "files_per_s": round(n / run.seconds, 3) if run.seconds > 0 else None,
        # Ranked on model time: decode and metadata are the same work on every candidate.
        "speedup": round(ref.model_seconds / run.model_seconds, 3) if run.model_seconds > 0 else 0.0,
        "scan_speedup": round(ref.seconds / run.seconds, 3) if run.seconds > 0 else 0.0,
    }
    if agree is not None:
        row["agreement"] = agree
        shares = [d["verdict_changed_share"] for d in (*agree["heads"].values(), agree["fused"])]
        row["worst_changed_share"] = max(shares) if shares else 0.0
        row["max_abs_dp"] = max([d["max_abs_dp"] for d in (*agree["heads"].values(), agree["fused"])] or [0.0])
    return row
