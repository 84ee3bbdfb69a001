"""What an ONNX export and its runtime share: the sidecar file that describes
the graph, and the exporter's view of one trained head.

Both ``onnx_export`` (writes) and ``detectors.onnx`` (reads and runs) use these;
keeping them here lets the runtime load an export without importing the
exporter, and lets the exporter reuse the runtime's result builder without an
import circle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIDECAR = "aiidetect-onnx.json"
SIDECAR_VERSION = 1
MAX_SIDECAR_BYTES = 64 << 20  # a sidecar of many heads is kilobytes; this only bounds a damaged one


class ExportError(RuntimeError):
    pass


@dataclass
class HeadExport:
    """One trained head as the exporter sees it.

    module(x) returns one tensor per role (a tensor for one role, a tuple for
    several), where x is the encoder output named by `input` ("embed",
    "pooled", "cls_<i>") or the normalised pixels ("pixels", for heads with
    their own encoder pass). `meta` is copied into the sidecar and handed back
    to the runtime detector: manifest, labels, calibration, threshold.
    """

    name: str
    family: str
    module: Any
    roles: tuple[str, ...] = ("logit",)
    input: str | tuple[str, ...] = "embed"  # a tuple: those outputs concatenated (CLIP-Flow's multi-layer vector)
    preprocessing: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # int8: False keeps this head's own MatMuls in float (a density model such
    # as CLIP-Flow turns small weight errors into large log-likelihood errors)
    quantize: bool = True
    # Files the export writes beside the graph and checksums with it: the head's training record
    # (train_record), so eval on the export can tell its training images as on the head.
    extra_files: dict[str, bytes] = field(default_factory=dict)

    def output_names(self) -> list[str]:
        return [f"{self.name}/{r}" for r in self.roles]


def read_sidecar(onnx_dir: str | Path) -> dict[str, Any]:
    from .hashing import read_regular
    from .report.safe import loads_foreign

    p = Path(onnx_dir) / SIDECAR
    try:
        s = loads_foreign(read_regular(p, MAX_SIDECAR_BYTES).decode("utf-8"))  # nested past the parser: not JSON
    except (OSError, ValueError) as exc:
        raise ExportError(f"no ONNX export in {onnx_dir} ({p}: {exc}); run `aiidetect export onnx -o {onnx_dir}`") \
            from exc
    if not isinstance(s, dict) or s.get("format") != "aiidetect-onnx":
        raise ExportError(f"{p} is not an aiidetect ONNX sidecar")
    return s


def graph_problems(onnx_dir: str | Path, graph: dict[str, Any]) -> list[str]:
    """What is wrong with one graph's files against the checksums its sidecar entry recorded at export,
    or []: like a head's files, a graph changed since (replaced, truncated, a flipped bit) must not run,
    since ONNX Runtime loads altered weights without complaint and scores with them."""
    from .heads import in_folder

    d = Path(onnx_dir)
    files = graph.get("files")
    if not isinstance(files, dict) or graph.get("file") not in files:
        return [f"its sidecar gives {graph.get('file')!r} no checksum"]
    problems = []
    for fname, digest in files.items():
        if not in_folder(fname):
            problems.append(f"{fname!r} is outside the export's folder")
        elif not (d / fname).is_file():
            problems.append(f"{fname} is missing")
        else:
            try:
                same = _digest(d / fname) == digest
            except OSError as exc:  # unreadable (permissions, an I/O error): a problem, not the caller's crash
                problems.append(f"{fname} cannot be read ({exc.strerror or exc})")
                continue
            if not same:
                problems.append(f"{fname} differs from its checksum in the sidecar (changed since the export)")
    return problems


_digests: dict[tuple, str] = {}


def _digest(p: Path) -> str:
    """SHA-256 of a graph file, computed once per process for one state of the file: scan checks the
    optimized export before it chooses it and the ONNX detector checks it again when it loads it (a ViT-L
    int8 graph is 300 MB). The state includes st_ctime, which every write changes and no utime can put back."""
    from .hashing import sha256_file

    st = p.stat()
    key = (str(p.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(p)
    return _digests[key]
