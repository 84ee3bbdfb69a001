"""Options shared by several commands, and the error/exit-code plumbing."""
from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional

import typer

from ..api import DEFAULT_MAX_BYTES
from ..choices import choices
from ..detectors import DEFAULT_DETECTORS
from ..limits import DEFAULT_MAX_PIXELS

# The fixed choices live in the library; commands annotate their options with them.
from ..api import Device, Dtype, Engine, Runtime, TrainDtype, Watermark, split_list  # noqa: F401

# Exit codes: the scripting contract (docs/schema.md).
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

BackboneOpt = typer.Option(None, "--backbone", help="open_clip model name (default ViT-L-14).", rich_help_panel="Backbone")
PretrainedOpt = typer.Option(None, "--pretrained", help="open_clip pretrained tag (default openai); 'none' for random init.",
                             rich_help_panel="Backbone")
BackboneConfigOpt = typer.Option(None, "--backbone-config",
                                 help="open_clip model-config JSON, or a shipped config name (tiny-vit, small-vit); random init unless --backbone-weights.",
                                 rich_help_panel="Backbone")
BackboneWeightsOpt = typer.Option(None, "--backbone-weights", help="Local open_clip checkpoint file.", rich_help_panel="Backbone")
BackboneSeedOpt = typer.Option(0, "--backbone-seed", help="Seed for random-init backbones.", rich_help_panel="Backbone")
DeviceOpt = typer.Option("auto", "--device", help="Where the model runs.", rich_help_panel="Backbone")
DtypeOpt = typer.Option("float32", "--dtype", help="Training dtype.", rich_help_panel="Backbone")
# Inference (scan, eval, calibrate): auto = bfloat16 on CPUs that multiply bf16 natively (AVX512-BF16 or AMX),
# measured 2x faster with no fused verdict changed on the dev set (docs/performance.md); float32 elsewhere.
InferDtypeOpt = typer.Option("auto", "--dtype", help="auto: bfloat16 on CPUs with native bf16 matmul, else float32.",
                             rich_help_panel="Backbone")
WeightsDirOpt = typer.Option(None, "--weights-dir", help="Folder of trained heads (repeatable; given, only these are searched). Default: the "
                                                         "folders in $AIIDETECT_WEIGHTS (':'-separated), otherwise "
                                                         "$XDG_DATA_HOME/aiidetect/weights, else "
                                                         "~/.local/share/aiidetect/weights; then the shipped heads "
                                                         "(the checkout's weights/ or <prefix>/share/aiidetect/weights).",
                             rich_help_panel="Backbone")


JsonFormat = choices("JsonFormat", "table", "json",
                     doc="--format of commands that print one summary: a table for people, JSON for scripts.")
RecordFormat = choices("RecordFormat", "table", "json", "jsonl", "csv",
                       doc="--format of commands that print one row per file.")
ReportFormat = choices("ReportFormat", "table", "json", "jsonl", "csv", "html",
                       doc="--format of commands that write a scan report (html: the self-contained page).")
# The library's own tuples (preprocess.MODES, train.data.GENIMAGE_SPLITS) import numpy, which `aiidetect
# --help` does not load: the values are repeated here and kept in step by a test.
Preprocess = choices("Preprocess", "center-crop", "resize-center-crop", "resize",
                     doc="--preprocess: how an image becomes the model's input (docs/detectors/*.md).")
GenImageSplit = choices("GenImageSplit", "train", "val", doc="--split: the GenImage split to read.")


# The output, cache and decode-limit groups: the same names, defaults and help wherever they appear.
OutputOpt = typer.Option(None, "--output", "-o", help="Write the report to this file instead of stdout "
                                                     "(written whole, then renamed into place).")
FollowLinksOpt = typer.Option(False, "--follow-links",
                              help="Also follow symbolic links inside the folders that lead out of them (by default "
                                   "they are counted, not followed: a link in a received archive may point anywhere "
                                   "on this machine).")
# Every command that reads C2PA manifests (scan, meta, eval, calibrate); docs/provenance.md, "A trust list".
C2paTrustOpt = typer.Option(None, "--c2pa-trust", metavar="PEMFILE", show_default=False,
                            help="C2PA trust anchors (PEM certificates: the C2PA trust list, your own CA); "
                                 "repeatable, read as one list. A signer that chains to one of them counts as "
                                 "signed evidence, any other as the file's own claim. Default: the files of "
                                 "$AIIDETECT_C2PA_TRUST (':'-separated), else none. Never fetched.")
CacheOpt = typer.Option(True, "--cache/--no-cache",
                        help="Reuse results of files already scanned with the same detectors "
                             "($AIIDETECT_CACHE/results.sqlite, keyed by content hash).")
MaxPixelsOpt = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, rich_help_panel="Decode limits",
                            help="Refuse images with more pixels (decompression bombs); also Pillow's limit.")
MaxBytesOpt = typer.Option(DEFAULT_MAX_BYTES, "--max-bytes", min=1, rich_help_panel="Decode limits",
                           help="Refuse files larger than this.")
# A training command prints one summary: --format json for scripts (--json, its older spelling, still works).
SummaryFormatOpt = typer.Option(JsonFormat.table, "--format", "-f", help="table (for people) | json (for scripts).")
# For the commands that printed their summary as JSON before they had --format (export onnx, explain-mpft):
# scripts read it, so json stays their default.
JsonFirstFormatOpt = typer.Option(JsonFormat.json, "--format", "-f",
                                  help="json (for scripts; the default) | table (for people).")
# Commands that print rows (one per file, head, candidate...), and those that also write the HTML report.
RecordFormatOpt = typer.Option(RecordFormat.table, "--format", "-f",
                               help="table (for people) | json, jsonl or csv (for scripts).")
ReportFormatOpt = typer.Option(ReportFormat.table, "--format", "-f",
                               help="table (for people) | json, jsonl or csv (for scripts) | html (the report page "
                                    "for people, docs/report.md).")
JsonAliasOpt = typer.Option(False, "--json", hidden=True, help="Same as --format json.")
WorkersOpt = typer.Option(2, "--workers", min=1, help="Decode threads running beside the model.")
# The families come from the registry, so a new family appears here without editing any command.
DetectorsOpt = typer.Option(None, "--detectors", "-d",
                            help=f"Comma-separated detector families: {', '.join(DEFAULT_DETECTORS)}. Default: all.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr.")
# The trainers' head folder: -o like every other --out-dir.
HeadOutDirOpt = typer.Option(None, "--out-dir", "-o", help="Output head folder. Default: <first weights dir>/<name>.")


def renamed_options(**old: str) -> Callable:
    """Keep old option spellings working, hidden from --help, after a rename::

        @renamed_options(out_dir="--out")
        def cmd(out_dir: Optional[Path] = typer.Option(None, "--out-dir", "-o")): ...

    `--out X` then reaches the command as ``out_dir=X``; giving both spellings is a usage error.
    The new option's default must be None (a required option is checked here, once both are read)."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()]
        required = {}
        for name, spelling in old.items():
            info = sig.parameters[name].default
            required[name] = info.default is ... if isinstance(info, typer.models.OptionInfo) else False
            if required[name]:
                # typer would demand the new spelling before the old one could be read
                params[[p.name for p in params].index(name)] = sig.parameters[name].replace(
                    default=_optional_copy(info), annotation=Optional[hints.get(name)])
            params.append(inspect.Parameter(f"{name}__old", inspect.Parameter.KEYWORD_ONLY, default=typer.Option(
                None, spelling, hidden=True), annotation=Optional[hints.get(name)]))

        @functools.wraps(fn)
        def command(*args, **kwargs):
            for name, spelling in old.items():
                was = kwargs.pop(f"{name}__old", None)
                new_spelling = sig.parameters[name].default.param_decls[0]
                if was is not None:
                    if kwargs.get(name) is not None:
                        fail(f"{spelling} is the old name of {new_spelling}: give one of them")
                    kwargs[name] = was
                if required[name] and kwargs.get(name) is None:
                    fail(f"missing option {new_spelling}")
            return fn(*args, **kwargs)

        return _with_params(command, params, sig)

    return wrap


def _with_params(command: Callable, params: list, sig: inspect.Signature) -> Callable:
    """typer reads the signature and the resolved annotations: give it both."""
    command.__signature__ = inspect.Signature(params, return_annotation=sig.return_annotation)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def _optional_copy(info):
    import copy

    out = copy.copy(info)
    out.default = None
    return out


@dataclass(frozen=True)
class BackboneOptions:
    """The backbone option group as one value: what ``@backbone_options`` hands
    to a command as its ``backbone_opts`` parameter."""

    backbone: Optional[str] = None
    pretrained: Optional[str] = None
    backbone_config: Optional[str] = None
    backbone_weights: Optional[str] = None
    backbone_seed: int = 0
    device: str = "auto"
    dtype: Optional[str] = None
    weights_dir: Optional[List[Path]] = None

    def spec(self):
        """The BackboneSpec; a bad combination ends the run with exit 2."""
        return backbone_spec(self.backbone, self.pretrained, self.backbone_config, self.backbone_weights,
                             self.backbone_seed)

    def weights_dirs(self):
        return weights_dirs(self.weights_dir)

    def scan_options(self) -> dict:
        """These options as ScanOptions keywords (aiidetect.api)."""
        out = {"backbone": self.backbone, "pretrained": self.pretrained, "backbone_config": self.backbone_config,
               "backbone_weights": self.backbone_weights, "backbone_seed": self.backbone_seed,
               "device": self.device, "weights_dirs": list(self.weights_dir or [])}
        if self.dtype is not None:
            out["dtype"] = self.dtype
        return out


# (parameter name, annotation, typer option) in the order commands show them.
_BACKBONE_CORE = (("backbone", Optional[str], BackboneOpt), ("pretrained", Optional[str], PretrainedOpt),
                  ("backbone_config", Optional[str], BackboneConfigOpt),
                  ("backbone_weights", Optional[str], BackboneWeightsOpt), ("backbone_seed", int, BackboneSeedOpt))
_DTYPES = {"infer": (Dtype, InferDtypeOpt), "train": (TrainDtype, DtypeOpt)}


def backbone_options(*, device: bool = False, dtype: Optional[str] = None, weights_dir: bool = False) -> Callable:
    """Give a command the backbone option group, declared once here.

    The command takes one parameter ``backbone_opts: BackboneOptions``; on the command
    line it becomes ``--backbone --pretrained --backbone-config
    --backbone-weights --backbone-seed``, then ``--device`` (device=True),
    ``--dtype`` (dtype="infer" for scan/eval/calibrate, "train" for training)
    and ``--weights-dir`` (weights_dir=True), at the place ``backbone_opts`` stands::

        @backbone_options(device=True, dtype="infer", weights_dir=True)
        def scan(paths: List[str] = typer.Argument(...), backbone_opts: BackboneOptions = None): ...
    """
    group = list(_BACKBONE_CORE)
    if device:
        group.append(("device", Device, DeviceOpt))
    if dtype is not None:
        group.append(("dtype", *_DTYPES[dtype]))
    if weights_dir:
        group.append(("weights_dir", Optional[List[Path]], WeightsDirOpt))
    names = [n for n, _, _ in group]

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        # typer reads the signature and the resolved annotations; give it both
        # with the group spliced in where ``backbone_opts`` stood.
        hints = typing.get_type_hints(fn)
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            if p.name == "backbone_opts":
                params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann)
                           for n, ann, opt in group]
            else:
                params.append(p.replace(annotation=hints.get(p.name, p.annotation)))
        if len(params) == len(sig.parameters):
            raise TypeError(f"{fn.__name__} has no 'backbone_opts' parameter for the backbone options")

        @functools.wraps(fn)
        def command(*args, **kwargs):
            bound = inspect.Signature(params).bind(*args, **kwargs)
            values = dict(bound.arguments)
            # Enum choices reach the library as their plain strings.
            opts = BackboneOptions(**{n: _plain(values.pop(n)) for n in names if n in values})
            return fn(**values, backbone_opts=opts)

        return _with_params(command, params, sig)

    return wrap


def _plain(value):
    return value.value if isinstance(value, Enum) else value


def backbone_spec(backbone: Optional[str], pretrained: Optional[str], config: Optional[str],
                  weights: Optional[str], seed: int = 0):
    from ..api import ScanOptions, UsageError

    try:
        return ScanOptions(backbone=backbone, pretrained=pretrained, backbone_config=config,
                           backbone_weights=weights, backbone_seed=seed).spec()
    except UsageError as exc:
        fail(str(exc))


def stderr_console(quiet: bool = False):
    from rich.console import Console
    from rich.errors import MarkupError

    from ..report.safe import printable

    class _LogConsole(Console):
        """Log lines often quote paths and values from files; those are escaped where
        they are built, and a line whose markup still does not parse is printed as
        plain text rather than ending the run. Control characters in them (a file named
        with ESC sequences retitles or repaints the terminal) are shown as \\uXXXX, never
        sent: markup has none, and rich adds its own colour codes after this."""

        def print(self, *objects, **kw):
            objects = tuple(printable(o, keep="\n\t") if isinstance(o, str) else o for o in objects)
            try:
                super().print(*objects, **kw)
            except MarkupError:
                kw["markup"] = False
                super().print(*objects, **kw)

    # quiet: no progress or summary; errors still reach stderr (fail() has its own console).
    return _LogConsole(stderr=True, soft_wrap=True, quiet=quiet)  # log lines stay whole for grep


def print_detector_setup(err, ctx, detectors, headline: str) -> None:
    """What a command that scores labelled data (eval, calibrate) says before it starts: the notes from
    preparing the detectors (a head folder passed over, a later head of the same name: what scan says
    through its on_note), the headline, then each detector that cannot run and why."""
    for note in ctx.notes:
        err.print(f"note: {note}", style="yellow", highlight=False, markup=False)
    err.print(headline, highlight=False, markup=False)
    for d in detectors:
        st = d.describe()
        if st.get("status") == "unavailable":
            err.print(f"  {d.name}: unavailable: {st.get('reason')}", style="yellow", highlight=False, markup=False)


def fail(message: str, code: int = EXIT_ERROR) -> "typer.Exit":
    """Usage or fatal error: one line on stderr, exit 2."""
    from rich.markup import escape

    from ..report.safe import clean_str
    from .errors import dash_hint

    # The message often quotes a path or a value from a file: never markup. `scan a.jpg -dash.png` (-d ash.png)
    # said "unknown detector(s) ash.png" and no more: the hint says why.
    stderr_console().print(f"[bold red]error:[/] {escape(clean_str(str(message) + dash_hint()))}", highlight=False)
    raise typer.Exit(code)


# The short verdict names `--verdict`, `--fail-on` and `--heatmaps` take (the first two the verdicts' own too).
VERDICT_ALIASES = {"ai": "ai-generated", "uncertain": "uncertain", "error": "error", "real": "likely-real"}


def verdict_list(values: Optional[List[str]], option: str = "--verdict") -> list[str]:
    """`--verdict ai,uncertain` (or repeated, or the full names) -> the verdicts; anything else exits 2.
    One parser for every command that filters by verdict: `report --verdict ai` was refused while
    `results export --verdict ai` worked."""
    taken = f"{', '.join(VERDICT_ALIASES)} (or ai-generated, likely-real)"
    out = []
    for x in named_list(values, option, "verdict", taken):
        if x not in VERDICT_ALIASES and x not in VERDICT_ALIASES.values():
            fail(f"{option} takes {taken}; got {x!r}")
        out.append(VERDICT_ALIASES.get(x, x))
    return out


def named_list(values: Optional[List[str]], option: str, what: str, taken: str) -> list[str]:
    """split_list for an option that, given, must name something: `--fail-on "$FAIL_ON"` with the variable unset
    or empty was a gate silently off (exit 0 whatever was found), `--verdict ""` selected every record, and
    `--heatmaps ""` made no map without a word. Given and empty (or `,`), it exits 2 naming the option."""
    out = split_list(values)
    if values and not out:
        fail(f"{option} names no {what}; give one or more of {taken}, comma-separated")
    return out


@contextlib.contextmanager
def library_errors():
    """The library's UsageError/ScanError (aiidetect.api) -> one line on stderr, exit 2."""
    from ..api import ScanError

    try:
        yield
    except ScanError as exc:
        fail(str(exc))


def quiet_torch_threads() -> None:
    """Respect OMP_NUM_THREADS when set; otherwise use every core for the model."""
    from ..api import use_all_cores

    use_all_cores()


def weights_dirs(dirs: Optional[list[Path]]):
    from ..heads import weights_dirs as _wd

    return _wd(dirs or [])


def checked_weights_dirs(dirs: Optional[list[Path]]):
    """weights_dirs for the commands that report on the folders themselves (`weights list/verify/pack`): a
    --weights-dir that is not a folder is a usage error. `weights verify --weights-dir /typo` said "ok": true,
    exit 0, having checked nothing, and a fleet check read that as a verified machine."""
    for d in dirs or []:
        if not Path(d).is_dir():
            fail(f"--weights-dir {d} {'is not a folder' if Path(d).exists() else 'does not exist'}")
    return weights_dirs(dirs)
