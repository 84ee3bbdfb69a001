"""The library API: scan images from Python, without the command line.

    from aiidetect import Scanner, ScanOptions
    with Scanner(ScanOptions(detectors=["metadata"])) as scanner:
        for record in scanner.scan(["photos/"]):
            print(record.file, record.verdict, record.p_ai)

Run assembly (the run context, the detectors, the fusion model, the result
cache, the results store session and the engine) lives here once; `aiidetect
scan`, `eval` and `calibrate` call it. The library raises exceptions
(`UsageError` for bad options or paths, `ScanError` for a run that cannot
start) and never prints to stdout or ends the process; notes meant for a
person (a head that is unavailable, a cache that cannot open) go to the
``on_note`` callback, by default the ``aiidetect`` logger. Importing this
module does not import torch: detectors import it when they are built.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from .choices import choices
from .crashguard import FILE_TIMEOUT
from .limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

log = logging.getLogger("aiidetect")


class ScanError(Exception):
    """A run that cannot start or go on (a broken head folder, an unreachable cluster, a store that
    cannot open). The command line turns it into one line on stderr and exit 2."""


class UsageError(ScanError, ValueError):
    """Bad options or arguments: nothing was scanned."""


class ReadsStuckError(ScanError):
    """Reads a local scan gave up past `file_timeout` are still running in this process, more than it may hold
    (crashguard.GIVEN_UP_MAX): raised before a scan reads anything, or while iterating, after the records of its
    files. Nothing a new request can fix: the process serves scans with a `file_timeout` again once they return,
    or a new process does. `count`: such reads still running in the process; `files`: the ones this scan gave up
    (empty for a scan refused at its start). The message names only this scan's files: in a service, the other
    reads are other callers' uploads (crashguard.reads_given_up() lists them all, for the operator)."""

    def __init__(self, message: str, count: int = 0, files: Sequence[str] = ()):
        super().__init__(message)
        self.count, self.files = count, list(files)


# Fixed choices, shared with the command line (commands/common.py shows them as --option values).
Runtime = choices("Runtime", "auto", "torch", "onnx",
                  doc="auto: the runtime `aiidetect optimize` verified for this CPU, backbone, heads and detector "
                      "set, else torch.")
Device = choices("Device", "auto", "cpu", "cuda")
Dtype = choices("Dtype", "auto", "float32", "bfloat16", "float16",
                doc="Inference dtypes; auto picks bfloat16 on CPUs that multiply it natively (docs/performance.md).")
TrainDtype = choices("TrainDtype", "float32", "bfloat16", "float16")
Watermark = choices("Watermark", "auto", "always", "never")
Engine = choices("Engine", "local", "ray")


def _choice(value: Any, enum: type[Enum], option: str) -> str:
    """An enum member or its plain string -> the plain string; anything else is a UsageError."""
    raw = value.value if isinstance(value, Enum) else value
    allowed = [m.value for m in enum]
    if raw not in allowed:
        raise UsageError(f"{option} takes {', '.join(allowed[:-1])} or {allowed[-1]}; got {raw!r}")
    return raw


def _path_list(paths: Any, what: str = "paths") -> list[str]:
    """A path or a list of paths -> a list of str. One str, bytes or os.PathLike is one path (a folder
    name taken as a list would be scanned letter by letter); bytes (os.listdir(b".") names a file whose
    name is not UTF-8) become str as os.fsdecode makes them; anything else is a UsageError."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    elif callable(getattr(paths, "read", None)):
        # An open file iterates as its lines: the error named "bytes b'...'", the file's first line.
        raise UsageError(f"{what}: a path or a list of paths, not an open file ({type(paths).__name__}); the "
                         f"library reads files by path (a stream listing paths goes in stdin=)")
    try:
        items = list(paths)
    except TypeError:
        raise UsageError(f"{what}: a path or a list of paths, got {type(paths).__name__}") from None
    bad = [p for p in items if not isinstance(p, (str, bytes, os.PathLike))]
    if bad:
        raise UsageError(f"{what}: paths are str, bytes or os.PathLike, got {type(bad[0]).__name__} {bad[0]!r}")
    return [os.fsdecode(p) for p in items]


def _check_stdin(stdin) -> None:
    if stdin is not None and not callable(getattr(stdin, "read", None)):
        # A str here was an AttributeError from inside discovery; the list of paths is a stream's text.
        raise UsageError(f"stdin takes a text stream listing paths (an open file, io.StringIO), not "
                         f"{type(stdin).__name__}; give paths themselves in paths")


def _walk(paths: Any, stdin, **walk):
    """paths ("-": a list of more on stdin) -> (args, candidates walked lazily, DiscoverySummary); UsageError."""
    from .discover import DiscoveryError, iter_discover

    args = _path_list(paths)
    if "-" in args:  # "-" reads a list of paths, one a line, from stdin
        args = [a for a in args if a != "-"]
        stdin = stdin if stdin is not None else sys.stdin
    _check_stdin(stdin)
    try:
        # Walked lazily: a sweep of millions of files never holds the list.
        cands, summary = iter_discover(args, stdin=stdin, **walk)
    except DiscoveryError as exc:
        raise UsageError(str(exc)) from None
    return args, cands, summary


class _Listed:
    """candidates() for a list on stdin: its candidates, and whether the list's next name would wait on its writer
    (`waiting`, for the pipeline to write the records so far). It goes with these candidates: taken from the
    Scanner's last candidates(), a folder's records(c) asked for after a list left open cut every chunk to one file."""

    def __init__(self, cands: Iterator, waiting):
        self._cands, self.waiting = cands, waiting

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._cands)

    def close(self) -> None:
        self._cands.close()


def _guarded(cands, output, args: list[str], **check):
    """The output guard: UsageError now for an input named; OutputError while iterating for a file
    reached on the way (named on stdin, through a link)."""
    if output is None:
        return cands
    # A bytes name was a TypeError from deep inside the guard, an int another.
    output = _path_list([output], "output")[0]
    from .report.output import OutputError, check_output, guard_candidates

    try:
        check_output(output, args, **check)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    return guard_candidates(cands, output)


def split_list(values: Optional[Iterable[str]]) -> list[str]:
    """["a,b", "c"] -> ["a", "b", "c"]: repeatable options that also take comma-separated lists."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in str(v).split(",") if x.strip()]
    return out


@dataclass
class ScanOptions:
    """Everything a scan depends on; the defaults are `aiidetect scan`'s.

    detectors: families to run (names from ``aiidetect.detectors.selectable_families()``); None or empty: the
    registry's defaults.
    backbone, pretrained, backbone_config, backbone_weights, backbone_seed: the
    CLIP backbone (as the --backbone... options), or a ready ``backbone_spec``.
    fusion: None or "auto" (the fusion model in the weights folders, if any),
    "none" (the default rules) or a fusion model folder.
    shard: "I/N" scans only that share of the paths; db: a SQLite results store
    (resumes unchanged files); engine "ray" with an optional address runs on Ray.
    """

    detectors: Optional[Sequence[str]] = None
    backbone: Optional[str] = None
    pretrained: Optional[str] = None
    backbone_config: Optional[str] = None
    backbone_weights: Optional[str] = None
    backbone_seed: int = 0
    backbone_spec: Any = None
    device: str = "auto"
    dtype: str = "auto"
    weights_dirs: Sequence[os.PathLike | str] = ()
    runtime: str = "auto"
    onnx_dir: Optional[os.PathLike | str] = None
    fusion: Optional[os.PathLike | str] = None
    batch_size: int = 16
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    cache: bool = True
    watermark: str = "auto"
    # C2PA trust list: PEM files of trust anchors (the C2PA conformance list, a newsroom's own CA), read as one
    # list; a signer that chains to one of them is "Trusted" and its manifest signed evidence. None: the files
    # of $AIIDETECT_C2PA_TRUST, if set; () : none. A file that is not PEM certificates is a UsageError.
    c2pa_trust: Optional[Sequence[os.PathLike | str] | os.PathLike | str] = None
    recursive: bool = True
    follow_links: bool = False  # links out of the scanned folders (docs/schema.md, "Discovery")
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    shard: Optional[str] = None
    engine: str = "local"
    address: Optional[str] = None
    db: Optional[os.PathLike | str] = None
    quiet: bool = False  # engine ray: Ray's own log lines and progress on stderr are errors only
    # Seconds per file before a read that never ends is stopped (docs/scale.md, "A file that hangs"); 0: never.
    # None: the engine's own default. A Ray task is cancelled after FILE_TIMEOUT per file; a local scan is
    # not limited unless asked. Locally the read past it is abandoned and the file gets a `timeout` record (with
    # db a strike: read again alone by the next scan of the store, set aside at a second):
    # the process is the caller's (a service, a notebook), so it is never ended for a file unless the caller
    # says so with end_process_on_timeout (the command line's way: exit 2, or SIGKILL from a watchdog process
    # when a decoder froze the interpreter).
    file_timeout: Optional[float] = None
    end_process_on_timeout: bool = False
    extra: dict = field(default_factory=dict)  # detector options passed through to RunContext.options

    def validate(self) -> "ScanOptions":
        """Check every option; raise UsageError with the reason. Returns self, with the
        fixed choices as plain strings (enum members are accepted)."""
        from .detectors import DEFAULT_DETECTORS, list_families, selectable_families

        try:
            self.detectors = split_list(self.detectors) or list(DEFAULT_DETECTORS)
        except TypeError:
            raise UsageError(f"detectors: a list of names or a comma-separated str, got {self.detectors!r}") from None
        # One folder or glob given as a str is one, not a list of its letters ("*" matched every file).
        self.weights_dirs = _path_list(self.weights_dirs or (), "weights_dirs")
        self.include = _path_list(self.include or (), "include")
        self.exclude = _path_list(self.exclude or (), "exclude")
        known = selectable_families()
        unknown = [f for f in self.detectors if f not in known]
        if unknown:
            hint = "; onnx is a runtime: --runtime onnx --onnx DIR" if "onnx" in unknown else ""
            raise UsageError(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(known)}{hint}")
        self.runtime = _choice(self.runtime, Runtime, "--runtime")
        self.device = _choice(self.device, Device, "--device")
        self.dtype = _choice(self.dtype, Dtype, "--dtype")
        self.watermark = _choice(self.watermark, Watermark, "--watermark")
        trust_option(self.c2pa_trust)
        self.engine = _choice(self.engine, Engine, "--engine")
        if self.runtime == "onnx":
            if self.onnx_dir is None:
                raise UsageError("--runtime onnx needs --onnx DIR (made by `aiidetect export onnx`)")
            if "onnx" not in list_families():
                raise UsageError("the ONNX runtime is not available in this build")
        if self.address and self.engine != "ray":
            raise UsageError("--address goes with --engine ray")
        # Checked here, by name: a wrong type failed deep inside as a TypeError, or (a str for a bool) silently
        # meant True.
        for name in ("db", "onnx_dir", "fusion"):
            if isinstance(getattr(self, name), bytes):  # a path as os.listdir(b".") gives it, as in paths
                setattr(self, name, os.fsdecode(getattr(self, name)))
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (str, os.PathLike)):
                raise UsageError(f"{name} takes a path (str, bytes or os.PathLike) or None; got {getattr(self, name)!r}")
        for name in ("cache", "recursive", "follow_links", "quiet", "end_process_on_timeout"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} takes True or False; got {getattr(self, name)!r}")
        if not isinstance(self.extra, dict):
            raise UsageError(f"extra takes a dict of detector options; got {self.extra!r}")
        if isinstance(self.backbone_seed, bool) or not isinstance(self.backbone_seed, int):
            raise UsageError(f"--backbone-seed takes a whole number; got {self.backbone_seed!r}")
        for name in ("batch_size", "workers", "max_pixels", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name.replace('_', '-')} takes a whole number >= 1; got {value!r}")
        if self.file_timeout is not None and (
                isinstance(self.file_timeout, bool) or not isinstance(self.file_timeout, (int, float))
                or not math.isfinite(self.file_timeout) or self.file_timeout < 0):
            raise UsageError(f"--file-timeout takes a number of seconds >= 0 (0: none); got {self.file_timeout!r}")
        from .shard import parse_shard

        if self.shard is not None and not isinstance(self.shard, str):
            raise UsageError(f"--shard takes I/N as a str (e.g. '2/3'); got {self.shard!r}")
        try:
            parse_shard(self.shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return self

    def spec(self):
        """The BackboneSpec these options name; UsageError for a bad combination."""
        if self.backbone_spec is not None:
            return self.backbone_spec
        from .backbone import BackboneSpec, BackboneUnavailable

        try:
            return BackboneSpec.from_options(model=self.backbone, pretrained=self.pretrained,
                                             config=self.backbone_config, weights=self.backbone_weights,
                                             seed=self.backbone_seed)
        except BackboneUnavailable as exc:
            raise UsageError(str(exc)) from None

    def limits(self):
        from .decode import DecodeLimits

        return DecodeLimits(max_pixels=self.max_pixels, max_bytes=self.max_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def use_all_cores() -> None:
    """Respect OMP_NUM_THREADS when set; otherwise let the model use every core."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    if sys.modules.get("torch") is None:
        # Importing torch costs seconds; a scan whose CLIP detectors turn out unavailable
        # never needs it. create_backbone applies the setting when it imports torch.
        from . import backbone

        backbone.TORCH_THREADS = max(1, os.cpu_count() or 1)
        return
    try:
        import torch

        torch.set_num_threads(max(1, os.cpu_count() or 1))
    except ImportError:
        pass


# torch's thread count is one setting for the process: Scanners with a CLIP detector hold every core
# (use_all_cores) while open, and the last one closed puts back the count found before the first; left
# raised, a service that had set its own count (several worker processes on one machine) ran
# oversubscribed from its first scan on.
_cores_lock = threading.Lock()
_cores_holders = 0
_cores_before: Optional[int] = None


def _hold_cores() -> None:
    global _cores_holders, _cores_before
    from . import backbone

    with _cores_lock:
        if _cores_holders == 0:
            _cores_before = None
            if sys.modules.get("torch") is not None:  # imported already (None: known to be missing)
                import torch

                _cores_before = torch.get_num_threads()
            backbone.TORCH_THREADS_FOUND = None
        _cores_holders += 1
        use_all_cores()


def _release_cores() -> None:
    global _cores_holders
    from . import backbone

    with _cores_lock:
        _cores_holders -= 1
        if _cores_holders:
            return
        # torch imported by the backbone after the hold: the count it had before create_backbone set ours
        before = _cores_before or backbone.TORCH_THREADS_FOUND
        backbone.TORCH_THREADS = backbone.TORCH_THREADS_FOUND = None
        if before and sys.modules.get("torch") is not None:
            import torch

            if torch.get_num_threads() == max(1, os.cpu_count() or 1):  # not changed by the caller meanwhile
                torch.set_num_threads(before)


def trust_option(c2pa_trust) -> dict | None:
    """The metadata detector's `c2pa_trust` option (provenance.trust.TrustList.option) for ScanOptions.c2pa_trust,
    or a TrustList loaded already; None without a trust list. UsageError for a file that cannot be one."""
    from .provenance.trust import TrustList

    tl = c2pa_trust if isinstance(c2pa_trust, TrustList) else load_c2pa_trust(c2pa_trust)
    return None if tl is None else tl.option()


def _trust(c2pa_trust) -> dict:
    opt = trust_option(c2pa_trust)
    return {} if opt is None else {"c2pa_trust": opt}


def run_context(options: ScanOptions, families: Sequence[str] | None = None):
    """(families to create, RunContext) for these options, checked on a copy (UsageError): with the
    ONNX runtime the pixel families are served by the one `onnx` detector over an exported folder."""
    from .detectors import RunContext
    from .heads import weights_dirs

    options = replace(options).validate()
    fams = list(families if families is not None else options.detectors)
    ctx = RunContext(backbone_spec=options.spec(), device=options.device, dtype=options.dtype,
                     weights_dirs=weights_dirs(list(options.weights_dirs or [])),
                     runtime=options.runtime, onnx_dir=Path(options.onnx_dir) if options.onnx_dir else None,
                     options={"watermark": options.watermark, **_trust(options.c2pa_trust), **options.extra})
    if options.runtime == "auto":
        from .optimize import choose

        ctx.runtime = "torch"
        # None unless `aiidetect optimize` stored a decision for exactly this setup (docs/performance.md).
        ctx.fast_path = choose(ctx, fams, options.fusion)
        if ctx.fast_path is not None and ctx.fast_path.use:
            ctx.runtime, ctx.onnx_dir = "onnx", ctx.fast_path.onnx_dir
    if ctx.runtime == "onnx":
        pixel = [f for f in fams if f != "metadata"]
        ctx.options["onnx_families"] = pixel
        fams = [f for f in fams if f == "metadata"] + (["onnx"] if pixel else [])
    return fams, ctx


def build_detectors(options: ScanOptions, families: Sequence[str] | None = None):
    """(detectors, RunContext): the detectors a scan with these options runs. A family that cannot
    run here is an `unavailable` detector; a head folder that cannot be read is a ScanError, a bad
    option a UsageError (the options are checked on a copy, as a Scanner does)."""
    fams, ctx = run_context(options, families)
    dets = _create(fams, ctx)
    fell = _fast_path_fallback(options, families, dets, ctx)
    return (fell[2], fell[1]) if fell else (dets, ctx)


def _fast_path_fallback(options: ScanOptions, families, dets, ctx):
    """(families, RunContext, detectors) on torch when the fast path `aiidetect optimize` verified was taken
    (--runtime auto) and ONNX Runtime could not serve one of its heads, else None. Its checksums pass, yet
    this onnxruntime may not load it, or session creation may run out of memory: the user never asked for
    ONNX, so the heads must not become unavailable (their evidence lost) where torch still gives it.
    On a fallback `dets` is emptied first."""
    fast = ctx.fast_path
    if fast is None or not fast.use:
        return None
    # The heads the decision compared (a head missing from the export, or for another backbone, is unavailable
    # on both runtimes and was never among them); "onnx" itself when the whole family could not be prepared.
    chosen = (fast.decision.get("chosen") or {}).get("candidate")
    cands = fast.decision.get("candidates")
    rows = [r for r in cands if isinstance(r, dict) and r.get("candidate") == chosen] if isinstance(cands, list) else []
    agree = rows[0].get("agreement") if rows else None
    heads = agree.get("heads") if isinstance(agree, dict) else None
    verified = set(heads if isinstance(heads, dict) else ()) | {"onnx"}
    lost = [info for d in dets if (info := d.describe()).get("status") == "unavailable" and info.get("name") in verified]
    if not lost:
        return None
    # Let the ONNX sessions go before torch builds its backbone: the caller's list (Scanner._detectors) is
    # the only other hold on them, and a session out of memory is one reason to be here.
    dets.clear()
    fams, torch_ctx = run_context(replace(options, runtime="torch"), families)
    why = f"{lost[0].get('name')}: {str(lost[0].get('reason')).strip()}"
    torch_ctx.fast_path = replace(fast, use=False, runtime="torch", dtype="auto", onnx_dir=None, line=(
        f"runtime: torch (the fast path verified by `aiidetect optimize` could not be served: {why}; "
        "if it persists, run `aiidetect optimize` again)"))
    return fams, torch_ctx, _create(fams, torch_ctx)


def _create(families, ctx) -> list:
    from .detectors import create_detectors

    try:
        return create_detectors(families, ctx)
    except Exception as exc:  # noqa: BLE001 - a broken head folder is a fatal, explained error
        raise ScanError(f"cannot prepare detectors: {type(exc).__name__}: {exc}") from exc


def resolve_fusion(fusion: Optional[os.PathLike | str], weights_dirs: Sequence = ()) -> tuple[Any, str]:
    """fusion PATH | "none" | None/"auto" -> (fusion model or None, description).
    "auto" takes the first fusion model in the weights folders; a PATH that is not a
    fusion model is a UsageError."""
    from .fusion import check_model, load_fusion_model
    from .heads import HeadError, read_manifest
    from .heads import weights_dirs as _dirs

    if fusion is not None and not isinstance(fusion, (str, os.PathLike)):
        raise UsageError(f"fusion takes a folder, 'none', 'auto' or None; got {fusion!r}")
    weights_dirs = _path_list(weights_dirs or (), "weights_dirs")
    if fusion in (None, "", "auto"):
        unused: list[str] = []
        try:
            m = load_fusion_model(_dirs(list(weights_dirs)), notes=unused)
        except ValueError as exc:
            raise UsageError(f"{exc}; fix or remove it, or pass --fusion none") from None
        also = f"; {'; '.join(unused)}" if unused else ""
        return (m, f"fusion model {m['name']} ({m['path']}){also}") if m else (None, "rules only (no fusion model found)")
    if fusion == "none":
        return None, "rules only (--fusion none)"
    try:
        m = read_manifest(fusion)
    except HeadError as exc:
        raise UsageError(str(exc)) from None
    if m.get("detector") != "fusion":
        raise UsageError(f"{fusion} is a {m.get('detector')!r} head, not a fusion model")
    try:
        check_model(m)
    except ValueError as exc:
        raise UsageError(f"fusion model {fusion}: {exc}") from None
    return {**m, "path": str(fusion)}, f"fusion model {m['name']} ({fusion})"


def load_labelled(data: Sequence[str], split: str = "val", limit: Optional[int] = None, seed: int = 0,
                  follow_links: bool = False, link_stats=None):
    """Labelled data (the layouts `aiidetect eval` reads) -> items; UsageError with the reason.
    Links inside the data folders: train.data.load_items (`link_stats` counts those not followed)."""
    from .train.data import few_shot, load_items

    data = _path_list(data, "data")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        # few_shot slices with it: -1 kept all but one image of each class, without a word.
        raise UsageError(f"limit takes a whole number >= 1 (images per class) or None; got {limit!r}")
    for d in data:
        if not Path(d).exists():
            raise UsageError(f"{d}: no such file or folder")
    try:
        items = load_items(list(data), split=split, follow_links=follow_links, link_stats=link_stats)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if limit:
        items = few_shot(items, limit, seed=seed, by="label")
    return items


class Scanner:
    """Scans files with one set of options; `scan()` may be called more than once, one call at a time.

    The options are checked at once (UsageError); the detectors, the fusion model and the
    result cache are assembled on first use (the backbone when a detector first needs it),
    so bad paths are reported before any model is built.

    Attributes: ``options`` (validated), ``detectors``, ``fusion`` (the fusion model or
    None), ``fusion_info``, ``context`` (the RunContext), ``pipeline`` (of the last
    scan), ``stats`` (counts and timing of the last scan), ``discovery`` (the last
    scan's DiscoverySummary: skipped, excluded, duplicates, outside_links), ``cache_error``.
    """

    # Set by the command line only, whose process is the scan's: `quiet` with engine ray may then read fd 2 through
    # a filter while the model runs (engines/ray.py, _without_pool_notice). A library host's stderr is never swapped.
    _owns_stderr = False

    def __init__(self, options: ScanOptions | None = None, *, on_note: Callable[[str], None] | None = None,
                 cache: Any = None, **kw):
        if isinstance(cache, bool):
            # Scanner(detectors=[...], cache=False) means ScanOptions' cache option; taken as the cache
            # object, a bool failed every lookup (cache_error) and nothing was cached.
            if options is not None:
                raise TypeError("cache=True/False is a ScanOptions field: set it in the ScanOptions you pass")
            kw["cache"], cache = cache, None
        if options is None:
            options = ScanOptions(**kw)
        elif kw:
            raise TypeError("pass either a ScanOptions or keyword options, not both")
        elif not isinstance(options, ScanOptions):
            # A dict of options is the likely slip: say so, not "replace() should be called on dataclass instances".
            raise TypeError(f"Scanner takes a ScanOptions or keyword options (Scanner(**d) for a dict), "
                            f"not {type(options).__name__}")
        self.options = replace(options).validate()  # the caller's object stays as given
        self._note = on_note or log.warning
        self._cache = cache
        self._own_cache = False
        self._reopen_cache = False
        self._assembled = False
        self._live: weakref.WeakSet = weakref.WeakSet()  # scans not yet finished, closed by close()
        # Two threads' first scans built the detectors (a backbone each) and opened the cache twice.
        self._assembly = threading.RLock()
        # close() from another thread cannot close a scan that thread is running (a generator runs in one
        # thread at a time): it raises the epoch, the scan stops before its next record, and the last
        # scan to end closes what close() could not.
        self._lock = threading.Lock()
        self._epoch = 0
        self._running = 0
        self._close_pending = False
        self._cores_held = False  # this Scanner counts among those holding every core (_hold_cores)
        self._store = None  # the results store (--db), opened by candidates() before any model is built
        # `pipeline` and `discovery` (and so `stats`) are of the last scan the calling thread started or iterated
        # (_adopt), else of the last any thread started: several threads scanning with one Scanner each read their
        # own (one attribute for all, a service's callers read each other's counts, most often those of a scan
        # still running: files 0).
        self._mine = threading.local()
        self._pipeline = self._discovery = None
        self.families, self.context = self._choose_runtime(self.options)

    @property
    def pipeline(self):
        """The Pipeline of the last scan this thread started or iterated, else of the last scan started."""
        mine = getattr(self._mine, "pipeline", None)
        return mine if mine is not None else self._pipeline

    @pipeline.setter
    def pipeline(self, pipe) -> None:
        self._mine.pipeline = self._pipeline = pipe

    @property
    def discovery(self):
        """The DiscoverySummary of the last scan this thread started or iterated, else of the last started."""
        mine = getattr(self._mine, "discovery", None)
        return mine if mine is not None else self._discovery

    @discovery.setter
    def discovery(self, summary) -> None:
        self._mine.discovery = self._discovery = summary

    # ------------------------------------------------------------ assembly
    def _choose_runtime(self, options: ScanOptions):
        """(families, RunContext). The place that decides how the pixel families run: torch, an
        exported ONNX folder with --runtime onnx, or with --runtime auto the fast path `aiidetect
        optimize` verified for this CPU, backbone and heads (``context.fast_path`` says which and why)."""
        return run_context(options)

    def _assemble(self) -> None:
        with self._assembly:
            held = self._cores_held
            try:
                self._assemble_once()
            except BaseException:
                # Nothing runs on a Scanner whose detectors or fusion model failed to load (a UsageError a
                # caller reports and moves on from, seldom closing it): every core stayed held for good.
                if self._cores_held and not held:
                    self._cores_held = False
                    _release_cores()
                raise

    def _assemble_once(self) -> None:
        if self._assembled:
            return
        self._hold()
        self._detectors = _create(self.families, self.context)
        if (fell := _fast_path_fallback(self.options, None, self._detectors, self.context)) is not None:
            self.families, self.context, self._detectors = fell
        for note in self.context.notes:
            self._note(note)
        self._note_slow_int8()
        self._fusion = self._load_fusion()
        from .fusion import fusion_identity, unmodelled_note, without_retrained

        self._fusion, note = without_retrained(self._fusion, self._detectors)
        if note is not None:
            self._note(note)
        if (note := unmodelled_note(self._fusion, self._detectors)) is not None:
            self._note(note)

        self._fusion_info = fusion_identity(self._fusion)
        if self._cache is None and self.options.cache:
            self._open_cache()
        self._assembled = True

    def _hold(self) -> None:
        if not self._cores_held and any(f != "metadata" for f in self.families):
            self._cores_held = True
            _hold_cores()

    def _note_slow_int8(self) -> None:
        """An 8-bit int8 graph on an x86 CPU without VNNI runs on ONNX Runtime's exact, slower kernels
        (aiidetect.cpuinfo): correct, but the user should know the 7-bit export is the fast one here."""
        graphs = set()
        for d in self._detectors:
            int8 = getattr(d, "int8", None) or {}
            if int8.get("exact_kernels") and int8.get("weight_bits") == 8:
                graphs.add(str(d.request.encoder_key).removeprefix("onnx:"))
        for g in sorted(graphs):
            self._note(f"{g} has 8-bit int8 weights: this CPU has no VNNI, so ONNX Runtime runs it on its exact "
                       "but slower kernels; `aiidetect export onnx --variant int8` here (7-bit weights, "
                       "--int8-weights auto) runs fast and exact")

    @property
    def detectors(self) -> list:
        """The detectors of this run (an unavailable family is a detector whose describe() says why)."""
        self._assemble()
        return self._detectors

    @property
    def fusion(self):
        """The fusion model (a manifest dict) or None for the default rules."""
        self._assemble()
        return self._fusion

    @property
    def fusion_info(self) -> dict:
        self._assemble()
        return self._fusion_info

    def _load_fusion(self):
        if self.options.fusion in (None, "", "auto"):
            from .fusion import load_fusion_model

            unused: list[str] = []
            try:
                return load_fusion_model(self.context.weights_dirs, notes=unused)
            except Exception as exc:  # noqa: BLE001 - a damaged fusion model falls back to the rules, said aloud
                self._note(f"fusion model not loaded ({exc}); using the default rules")
                return None
            finally:
                for line in unused:
                    self._note(line)
        return resolve_fusion(self.options.fusion, self.options.weights_dirs)[0]

    def _open_cache(self) -> None:
        from .result_cache import ResultCache

        try:
            self._cache, self._own_cache = ResultCache(), True
        except Exception as exc:  # noqa: BLE001 - no cache means slower re-runs, never a failed scan
            import sqlite3

            from .userdirs import cache_base

            # A damaged file (cut short, overwritten) stays damaged: every later scan ran without the cache,
            # each saying only that. The command that ends it is named (a read-only or full folder is not
            # mended by it, nor a lock: those are OperationalErrors).
            fix = ("; `aiidetect cache clear results` starts it afresh"
                   if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError) else "")
            self._note(str(exc) if cache_base() is None
                       else f"result cache unavailable ({exc}); scanning without it{fix}")

    def new_pipeline(self):
        from .pipeline import Pipeline

        o = self.options
        dets = self.detectors
        with self._assembly:
            self._hold()  # again after close()
            if self._reopen_cache:
                self._reopen_cache = False
                self._open_cache()
        return Pipeline(dets, self.fusion, batch_size=o.batch_size, workers=o.workers,
                        limits=o.limits(), cache=self._cache)

    # ---------------------------------------------------------------- scan
    def candidates(self, paths: str | os.PathLike | Iterable[str | os.PathLike], *, stdin=None, output=None):
        """Discovery for `scan`: files and folders -> candidates (lazy), after the
        output-path guard and the shard filter. UsageError for a missing path or an
        output that would overwrite or be read as an input."""
        from .shard import in_shard, parse_shard

        o = self.options
        args, cands, self.discovery = _walk(paths, stdin, recursive=o.recursive, include=o.include or (),
                                            exclude=o.exclude or (), follow_links=o.follow_links)
        if o.db is not None:
            from .report.output import same_file

            for a in args:
                if not os.path.isdir(a) and same_file(a, o.db):
                    # SQLite would take an empty file for an empty database and write into it.
                    raise UsageError(f"--db {o.db} is one of the files being scanned; give the store another name")
        cands = _guarded(cands, output, args, excluded=lambda p: not _wanted(p, o.include or (), o.exclude or ()),
                         store=o.db)
        self._preflight()
        cands = in_shard(cands, parse_shard(o.shard))
        waiting = getattr(self.discovery, "waiting", None)
        return cands if waiting is None else _Listed(cands, waiting)

    def _preflight(self) -> None:
        """Open the results store and reach the Ray cluster now, before any model is built: a read-only
        or foreign store, or a cluster address nothing answers on, must cost the user seconds, not the
        minutes a backbone takes to load (ScanError)."""
        o = self.options
        if o.db is not None and self._store is None:
            import sqlite3

            from .store import ResultsStore, StoreError

            try:
                self._store = ResultsStore(o.db, on_note=self._note)
            except (StoreError, OSError, sqlite3.Error) as exc:
                raise ScanError(f"cannot open the results store {o.db}: {exc}") from None
        if o.engine == "ray":
            from .engines import ray as ray_engine

            try:
                if o.db is not None:
                    # Every file may be resumed from the store: Ray is started or joined only when a file
                    # has to be sent (engines/ray.py); an address nothing answers on still fails here.
                    ray_engine.preflight(o.address)
                else:
                    ray_engine.connect(o.address, quiet=o.quiet)
            except ray_engine.RayUnavailable as exc:
                raise ScanError(str(exc)) from None

    def scan(self, paths: str | os.PathLike | Iterable[str | os.PathLike], *, stdin=None, output=None,
             argv: Sequence[str] | None = None) -> Iterator[Any]:
        """Records for `paths` (files and folders; `stdin`: a text stream listing more paths),
        in order. Checks and connects before returning (UsageError, ScanError); the records are
        computed as the iterator is consumed. `output`: a report path the scan must never read.
        With `db`, every record is also written to the results store; a scan stopped early is
        recorded as interrupted."""
        return self.records(self.candidates(paths, stdin=stdin, output=output), argv=argv)

    def records(self, candidates: Iterable, *, argv: Sequence[str] | None = None) -> Iterator[Any]:
        """Records for candidates from `candidates()` (the second half of `scan`)."""
        # Counted in before anything is set up: a close() from another thread meanwhile stops this scan before
        # its first record and leaves the store and the cache to it (counted in after, the scan started on the
        # store and cache that close() had just closed, and ran to the end).
        with self._lock:
            self._running += 1
            epoch = self._epoch
        session = None
        release = None
        try:
            release = self._reserve_reads()
            pipe = self.pipeline = self.new_pipeline()
            session = self._open_store(pipe, argv) if self.options.db else None
            if session is not None:
                pipe.prior = session.prior
                session.reads_timed = bool(self._file_timeout())
                # The Ray engine hands files to worker processes elsewhere: it reads no file through the guard,
                # but asks it which files are set aside, and gives it the files whose worker died.
                pipe.guard = session.guard_reads()
                if session.crashed:
                    then = ("each is read alone this time, and not again if this run ends there too"
                            if pipe.guard is not None and self.options.engine != "ray" else
                            "each is read in a Ray worker process this time, whose death costs the file its record "
                            "(`crashed`), not the scan" if pipe.guard is not None else
                            "read as any other by this run (the store's folder takes no new file)")
                    self._note(f"an earlier run of {self.options.db} ended while reading {len(session.crashed)} "
                               f"file(s) (a crash, the out-of-memory killer, kill -9, a read past --file-timeout or still "
                               f"stuck when the run was stopped): "
                               f"{then}: {', '.join(session.crashed[:5])}"
                               + (" ..." if len(session.crashed) > 5 else ""))
            records = self._engine(pipe, candidates)
        except BaseException:
            # The session started is closed whatever ends it here (an on_note that raises, Ctrl-C, a
            # cluster refusing): not left `running` with its slot file; a store that cannot be written
            # then must not hide why.
            if session is not None:
                from .store import StoreError

                with contextlib.suppress(StoreError):
                    session.close("interrupted")
            if release is not None:
                release()
            self._count_out()
            raise
        out = self._finished(records, session, pipe, epoch, self.discovery, release)
        # Step into the generator's try block now: a scan dropped or closed before its first record
        # must still close its store session (a generator never started skips its finally).
        next(out)
        self._live.add(out)
        return out

    def _adopt(self, pipe, discovery) -> None:
        """The scan the calling thread iterates is its last scan (`stats`, `discovery`), whichever thread started
        it: a service that starts a scan in a request's thread and iterates it in an executor's (a streaming
        response) read, there, the stats of the executor thread's earlier scan, not those of the one it had
        just consumed."""
        self._mine.pipeline, self._mine.discovery = pipe, discovery

    def _reserve_reads(self) -> Callable[[], None] | None:
        """ReadsStuckError before any file is read when a local scan that gives reads up (file_timeout, the process
        kept) finds more than crashguard.GIVEN_UP_MAX reads given up still running in this process, whichever scan
        gave them up, counted with the scans started since that still run (crashguard.reserve_reads: checked and
        reserved at once, so that concurrent requests cannot all pass): each new hang would leave one more thread
        (and what it read) behind. A service scanning one upload per call otherwise kept a thread for every hostile
        upload. Returns what to call when the scan ends (None: nothing reserved)."""
        o = self.options
        if o.engine != "local" or not o.file_timeout or o.end_process_on_timeout:
            return None
        from .crashguard import ReadsStuck, reserve_reads

        try:
            return reserve_reads()
        except ReadsStuck as exc:
            raise _stuck(exc) from None

    def _file_timeout(self) -> float | None:
        """Each file's read deadline in seconds (None or 0: none): the option, or the Ray engine's default."""
        o = self.options
        return FILE_TIMEOUT if o.file_timeout is None and o.engine == "ray" else o.file_timeout

    def _engine(self, pipe, cands):
        if self.options.engine == "ray":
            from .engines import ray as ray_engine

            try:
                records = ray_engine.run(pipe, cands, self.families, self.context, address=self.options.address,
                                         quiet=self.options.quiet, file_timeout=self._file_timeout(),
                                         own_stderr=self._owns_stderr, note=self._note)
            except ray_engine.RayUnavailable as exc:
                raise ScanError(str(exc)) from None
            return _scan_errors(records, (ray_engine.RayJobFailed, ray_engine.RayUnavailable))
        if self.options.file_timeout:
            from .crashguard import AbandoningDeadline, ReadDeadline, ReadsStuck

            # Ending the process (and the watchdog that kills it) only when the caller asked: a library's host
            # (a service with other requests in flight) is that process. Without it a GIL-frozen decoder is
            # waited for; every other stuck read is given up past the deadline.
            pipe.deadline = (ReadDeadline if self.options.end_process_on_timeout
                             else AbandoningDeadline)(self.options.file_timeout)
            return _scan_errors(_watched(pipe.run(cands, waiting=getattr(cands, "waiting", None)), pipe.deadline),
                                (ReadsStuck,))
        return pipe.run(cands, waiting=getattr(cands, "waiting", None))

    def _open_store(self, pipe, argv):
        import sqlite3

        from .store import StoreError, open_session

        o = self.options
        try:
            if self._store is None:  # records() called with candidates of another Scanner
                self._preflight()
            return open_session(self._store, pipe, {"detectors": self.families, "batch_size": pipe.batch_size},
                                shard=o.shard, engine=o.engine, argv=list(argv) if argv is not None else sys.argv[1:])
        except (StoreError, OSError, sqlite3.Error) as exc:
            raise ScanError(f"cannot open the results store {o.db}: {exc}") from None

    def _finished(self, records, session, pipe, epoch, discovery, release=None):
        try:
            yield from self._stored(records, session, pipe, epoch, discovery)
        except Exception as exc:
            from .crashguard import SlotsUnwritable
            from .store import StoreError

            if isinstance(exc, SlotsUnwritable) and session is not None:
                raise ScanError(str(session.cannot_write(str(exc)))) from exc
            if isinstance(exc, StoreError):
                # A store that cannot be written (a full disk) stops the run: the ScanError a caller catches
                # for a run that cannot go on, not a type of the store module.
                raise ScanError(str(exc)) from exc
            raise
        finally:
            if release is not None:
                release()  # its reservation against reads given up (crashguard.reserve_reads)
            # Whatever ended the scan (the last rows not stored too): counted out, or close() waited for ever.
            self._count_out()

    def _count_out(self) -> None:
        """A scan ended (or failed to start): the last to end after a close() from another thread closes
        what that close() left to it."""
        with self._lock:
            self._running -= 1
            last = self._close_pending and self._running == 0
            if last:
                self._close_pending = False
        if last:
            self._release()

    def _stored(self, records, session, pipe, epoch, discovery):
        done = stopped = False
        try:
            yield None  # primed by records()
            for rec in records:
                if self._epoch != epoch:  # close() was called while this scan ran in another thread
                    stopped = True
                    break
                self._adopt(pipe, discovery)
                yield rec
                if session is not None:
                    # After the caller handled it: a record the report never got is not stored as done.
                    session.add(rec)
            done = not stopped
            if done:
                self._adopt(pipe, discovery)  # a scan of no file, iterated in a thread that did not start it
        finally:
            try:
                if not done and hasattr(records, "close"):
                    # Joins the decode threads now, not when the generator is collected, and before the session
                    # closes: a read still in progress then is one the stop abandoned (crashguard.STOP_GRACE),
                    # whose slot the session leaves for the next one to strike; a read the join saw end is not.
                    records.close()
            finally:
                self._close_session(session, pipe, done)

    def _close_session(self, session, pipe, done: bool) -> None:
        pipe.final_stats = pipe.stats.as_dict()  # the scan's time, not the time until `stats` is read
        if session is not None:
            if done:
                session.close("complete")  # the last rows not stored is a failed scan (StoreError)
            else:
                from .store import StoreError

                # Stopped early: keep what was finished, say so in the sessions table; a store that
                # cannot be written then (a full disk) must not hide why the scan stopped.
                with contextlib.suppress(StoreError):
                    session.close("interrupted")

    # -------------------------------------------------------------- results
    @property
    def stats(self) -> dict[str, Any]:
        """Counts and timing of the last scan (files, verdicts, errors, seconds, cache hits...)."""
        pipe = self.pipeline
        if pipe is None:
            return {}
        return pipe.final_stats or pipe.stats.as_dict()

    @property
    def cache_error(self) -> Optional[str]:
        return self.pipeline.cache_error if self.pipeline is not None else None

    def close(self) -> None:
        """Stop the scans still being iterated (their decode threads end, a results store session is
        recorded as interrupted), then close the result cache this Scanner opened (a cache passed in
        stays open). Safe to call more than once, and from another thread: a scan running there stops
        before its next record and closes the store and the cache when it ends. A decode thread still in a
        read crashguard.STOP_GRACE seconds after the stop (a read that never returns) is abandoned, not
        waited for: Python cannot stop it (docs/api.md)."""
        with self._lock:
            self._epoch += 1
        for it in list(self._live):
            try:
                it.close()
            except ValueError as exc:
                if "already executing" not in str(exc):
                    raise
                # running now in another thread: it stops before its next record (the epoch)
        self._release()

    def _release(self) -> None:
        """Let the cores go and close the store and the cache, unless a scan is running (in another thread):
        they are in use there, and that scan does this when it ends (_count_out)."""
        with self._lock:
            if self._running:
                self._close_pending = True
                return
        # Again under the lock a starting scan takes to hold the cores and reopen the cache: one started since
        # the check above either waits for this release and opens its own, or is counted in here and closes
        # them itself (checked once, the release went on under it: its store closed mid-scan).
        with self._assembly:
            with self._lock:
                if self._running:
                    self._close_pending = True
                    return
                self._close_pending = False
            self._release_now()

    def _release_now(self) -> None:
        if self._cores_held:
            self._cores_held = False
            _release_cores()
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._own_cache:
            self._cache.close()
            # A scan after close() opens it again; a cache the caller passed in is theirs to close.
            self._cache, self._own_cache, self._reopen_cache = None, False, True

    def __enter__(self) -> "Scanner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stuck(exc) -> ReadsStuckError:
    """The library's ReadsStuckError for crashguard's ReadsStuck, with its count and this scan's files: raised
    both when a scan is refused at its start and when one stops while iterating."""
    return ReadsStuckError(str(exc), exc.count, exc.files)


def _scan_errors(records, fatal):
    """`records`, with an engine's fatal error (a failing cluster) raised as the ScanError it is: one
    explained line and exit 2, not an unexpected exception."""
    from .crashguard import ReadsStuck

    try:
        yield from records
    except ReadsStuck as exc:
        raise _stuck(exc) from None
    except fatal as exc:
        raise ScanError(str(exc)) from None
    finally:
        records.close()


def _wanted(path: str, include, exclude) -> bool:
    """Would a folder scan read this path? (A report named .jsonl inside the folder is never read.)"""
    from .discover import IMAGE_EXTS, _wanted as wanted

    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTS and wanted(str(path), include, exclude)


def _watched(records: Iterator[Any], deadline) -> Iterator[Any]:
    """`records`, the read deadline's watcher stopped when they end, finished or closed early."""
    try:
        yield from records
    finally:
        deadline.close()


def scan(paths: str | os.PathLike | Iterable[str | os.PathLike], **options) -> Iterator[Any]:
    """One-call form: ``for rec in aiidetect.api.scan(["photos/"], detectors=["metadata"]): ...``.
    Closes the result cache when the records are exhausted or the iterator is dropped."""
    scanner = Scanner(ScanOptions(**options))
    try:
        records = scanner.scan(paths)
    except BaseException:
        scanner.close()
        raise

    def _gen():
        with scanner:
            yield None  # primed below: a generator dropped before it started would skip the with block
            yield from records

    out = _gen()
    next(out)
    return out


# ----------------------------------------------------------------- heads
def head_rows(dirs: Sequence[os.PathLike | str]) -> list[dict]:
    """`aiidetect weights list`: one row per head found in these folders (name, detector, version,
    backbone, fingerprint, labels, source, license, path, origin). `origin`: `shipped` for a head that is one
    aiidetect ships (its files match the pinned ones, wherever it sits), `refused` for any other head in a
    shipped heads' folder (scans do not run it), `user` for the rest. `source` is what the manifest claims."""
    from .heads import find_heads, in_shipped_folder, shipped_match, verify_files

    rows = []
    for path, m in find_heads([Path(d) for d in _path_list(dirs, "dirs")]):
        # shipped_match reads the manifest only (a scan checks the tensors as it reads them): a copy with the
        # shipped manifest over other tensors was listed as shipped
        shipped = shipped_match(path, m) and not verify_files(path, m)
        origin = "shipped" if shipped else "refused" if in_shipped_folder(path) else "user"
        b = m.get("backbone") if isinstance(m.get("backbone"), dict) else {}
        src, lic = m.get("source"), m.get("license")
        rows.append({"name": m["name"], "detector": m["detector"], "version": m.get("version"),
                     "backbone": b.get("name") or f"{b.get('model')}/{b.get('pretrained')}",
                     "fingerprint": b.get("fingerprint"), "labels": m.get("labels"),
                     "source": (src or {}).get("repository") if isinstance(src, dict) else src,
                     "license": (lic or {}).get("spdx") if isinstance(lic, dict) else lic,
                     "path": str(path), "origin": origin})
    return rows


def verify_heads(dirs: Sequence[os.PathLike | str], backbone_spec=None,
                 on_note: Callable[[str], None] | None = None,
                 passed_over: list[str] | None = None) -> list[tuple[str, str, list[str]]]:
    """`aiidetect weights verify`: (name, path, problems) per head: its files against the manifest's
    checksums and, with a backbone spec, its fingerprint against that backbone and its detector built
    on it as a scan builds it; a head folder whose
    manifest cannot be read is one too (its folder name, the reason). A backbone that
    cannot be built is a note (`on_note`), and the files are still checked. `passed_over`, a list, gets what
    was not checked and why (a weights folder that is itself a head folder, a head hidden by another of
    its name): `verify --weights-dir HEAD` checked nothing and said nothing."""
    from .detectors.heads import unavailable_reason
    from .fusion import FUSION_DETECTOR
    from .head_checks import load_problem
    from .heads import Head, HeadMismatch, find_heads, pin_problem, verify_files

    dirs = _path_list(dirs, "dirs")
    bb = None
    if backbone_spec is not None:
        from .backbone import BackboneUnavailable, create_backbone

        try:
            bb = create_backbone(backbone_spec)
        except BackboneUnavailable as exc:
            (on_note or log.warning)(str(exc))
    out = []
    broken: list[tuple[Path, str]] = []
    notes: list[str] = []
    for path, m in find_heads([Path(d) for d in dirs], unreadable=broken, notes=notes):
        problems = verify_files(path, m)
        # (a planted head consistent with itself passes its own checksums: the pin is what refuses it)
        if (pinned := pin_problem(path, m)) is not None:
            problems.insert(0, pinned)
        # A head holding NaN passed here and was then unavailable in every scan.
        why = None if problems else load_problem(path, m)
        if why:
            problems.append(why)
        # A fusion model reads detectors' answers, not a backbone's features: it names none, and failed here.
        if bb is not None and m.get("detector") != FUSION_DETECTOR:
            try:
                Head(path, m).check_backbone(bb.fingerprint, bb.spec.describe())
            except HeadMismatch as exc:
                problems.append(str(exc))
            else:
                if not problems:
                    # the family's own detector, built as a scan builds it (manifest and tensors agree)
                    why = unavailable_reason(path, m, bb)
                    if why:
                        problems.append(why)
        out.append((m["name"], str(path), problems))
    # A head whose manifest is damaged is not "nothing to check": it is a failed head.
    out += [(path.name, str(path), [why]) for path, why in broken]
    if passed_over is not None:  # (the damaged ones are failed heads above, not notes)
        passed_over += [n for n in notes if not any(n.startswith(f"{p} is not a usable head") for p, _ in broken)]
    return out


# ------------------------------------------------------------------ meta
def iter_meta_candidates(paths: Sequence[str | os.PathLike], *, recursive: bool = True, output=None,
                         stdin=None, follow_links: bool = False) -> Iterator:
    """`aiidetect meta`'s discovery, lazily: the same as scan's (one candidate per file, broken links
    and special files included as error candidates; "-" reads a list of paths from stdin), walked as
    it is consumed. UsageError here for a missing path or an output that lies among the inputs;
    report.output.OutputError while iterating when a file reached on the way is the output."""
    args, cands, _ = _walk(paths, stdin, recursive=recursive, follow_links=follow_links)
    return _guarded(cands, output, args)


def meta_candidates(paths: Sequence[str | os.PathLike], *, recursive: bool = True, output=None, stdin=None,
                    follow_links: bool = False) -> list:
    """`iter_meta_candidates`, listed up front. UsageError for a missing path or an output that is
    one of the inputs."""
    from .report.output import OutputError

    try:
        return list(iter_meta_candidates(paths, recursive=recursive, output=output, stdin=stdin,
                                         follow_links=follow_links))
    except OutputError as exc:
        raise UsageError(str(exc)) from None


def load_c2pa_trust(c2pa_trust=None):
    """The provenance.trust.TrustList of these files (None: $AIIDETECT_C2PA_TRUST's), or None without one;
    UsageError for a file that cannot be one. Loaded once, it serves many meta_report calls."""
    from .provenance.trust import TrustListError, resolve

    try:
        return resolve(c2pa_trust)
    except TrustListError as exc:
        raise UsageError(str(exc)) from None
    except TypeError:
        raise UsageError(f"c2pa_trust takes a path, a list of paths or None; got {c2pa_trust!r}") from None


def meta_report(path: str, watermark: str = "auto", error: tuple[str, str] | None = None,
                ident: tuple[int, int] | None = None, max_pixels: int | None = None,
                max_bytes: int | None = None, c2pa_trust=None) -> dict:
    """The provenance report of one file (no model, no torch): EXIF, XMP, generator parameters,
    C2PA, the watermark, structural hints, what they weigh (p_ai, llr). A file that cannot be
    read is a report with an error, never an exception. `ident`: the (st_dev, st_ino) discovery
    saw at `path` (a Candidate's); another file found there is not read. `max_pixels`: scan's
    --max-pixels; pixels it would refuse get no watermark check, as in scan (metadata.detector.provenance).
    `max_bytes`: scan's --max-bytes; a larger file is not read (error `too-large`), as in scan.
    `c2pa_trust`: as ScanOptions.c2pa_trust, or a provenance.trust.TrustList loaded once for many files."""
    from .decode import DecodeFailure, DecodeLimits, identify, read_bytes
    from .metadata.detector import file_provenance, result_from_evidence
    from .report.safe import display_path, path_bytes_b64

    watermark = _choice(watermark, Watermark, "--watermark")
    trust = _trust(c2pa_trust)
    path = _path_list([path], "path")[0]  # a path that is not one was a TypeError from inside display_path
    head = {"file": display_path(path), "file_bytes": path_bytes_b64(path)}
    # A report with an error has every key too (empty): `jq '.evidence[]'` or `r["facts"]` must not
    # break on the one file that could not be read.
    empty = {**head, "format": None, "width": None, "height": None, "evidence": [], "facts": {}, "errors": [],
             "p_ai": None, "llr": None, "fused_p_ai": None}
    if error is not None:
        return {**empty, "error": {"code": error[0], "message": error[1]}}
    limits = DecodeLimits(**{k: v for k, v in (("max_pixels", max_pixels), ("max_bytes", max_bytes)) if v is not None})
    try:
        data = read_bytes(path, limits, expect=ident)
        identify(data)
    except DecodeFailure as exc:
        return {**empty, "error": {"code": exc.code, "message": exc.message}}
    rep = file_provenance(data, path, {"watermark": watermark, **trust}, limits)
    res = result_from_evidence(rep.evidence)
    d = {**head, **{k: v for k, v in rep.to_dict().items() if k != "file"}}
    d["p_ai"] = None if res.p_ai is None else round(res.p_ai, 6)
    d["llr"] = None if res.score is None else round(res.score, 4)
    d["fused_p_ai"] = metadata_fused_p(res)
    d["error"] = None
    return d


def metadata_fused_p(res) -> float | None:
    """The P(AI) `scan -d metadata` records for this metadata result without a fusion model: fusion's own
    rules (3's floor, 4's cap at 2 nats on soft evidence), by fuse itself. The detector's p_ai sums soft
    evidence uncapped: a claim of 6 nats beside 3 of soft evidence read 9 nats in `meta`, 8 in `scan`."""
    from .fusion import fuse, shown_p

    out = fuse({"metadata": res})
    return shown_p(out.p_ai, out.band)


def meta_reports(paths: Sequence[str | os.PathLike], watermark: str = "auto", recursive: bool = True,
                 max_pixels: int | None = None, max_bytes: int | None = None, c2pa_trust=None) -> list[dict]:
    """`aiidetect meta` as a function: discovery, then the provenance report of each file."""
    from .provenance.trust import TrustList

    trust = c2pa_trust if isinstance(c2pa_trust, TrustList) else load_c2pa_trust(c2pa_trust)
    return [meta_report(c.path, watermark, c.error, c.ident, max_pixels, max_bytes, c2pa_trust=trust or ())
            for c in meta_candidates(paths, recursive=recursive)]


__all__ = ["ScanOptions", "Scanner", "ScanError", "UsageError", "ReadsStuckError", "Runtime", "Device", "Dtype",
           "TrainDtype", "Watermark", "Engine", "build_detectors", "resolve_fusion", "load_labelled", "run_context", "scan",
           "load_c2pa_trust",
           "split_list", "use_all_cores", "head_rows", "verify_heads", "meta_candidates", "iter_meta_candidates",
           "meta_report", "meta_reports"]
