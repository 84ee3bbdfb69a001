"""Head artifacts: a folder holding ``head.safetensors`` and ``manifest.json``.

A head never contains a copy of the backbone, only what was trained on top of
it (a linear layer, LoRA deltas, a flow). The manifest is the contract:

    name, detector (family), version, created, backbone {model, pretrained,
    fingerprint, weights_id, config}, preprocessing {mode, size, mean, std,
    interpolation}, labels, params (hyper-parameters needed to rebuild the
    modules), calibration, threshold, metrics, data (training-set summary),
    source, license, files {filename: sha256}
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .hashing import sha256_file

MANIFEST = "manifest.json"
TENSORS = "head.safetensors"
HEAD_FORMAT_VERSION = 1
# A manifest is numbers and provenance (the largest, an isotonic calibration,
# holds one knot per distinct calibration score): far below this. Every scan
# reads the fusion model's, so a multi-gigabyte one must not be parsed.
MAX_MANIFEST_BYTES = 64 << 20
REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


class HeadError(RuntimeError):
    pass


class HeadMismatch(HeadError):
    """A head was asked to run on a backbone it was not trained with."""


def user_weights_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aiidetect" / "weights"


def weights_dirs(explicit: Iterable[str | Path] | None = None) -> list[Path]:
    """Where heads are looked for, in order. Explicit dirs replace the defaults."""
    explicit = [Path(p) for p in (explicit or []) if str(p)]
    if explicit:
        return explicit
    dirs: list[Path] = []
    env = os.environ.get("AIIDETECT_WEIGHTS")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    else:
        dirs.append(user_weights_dir())
    return dirs + shipped_weights_dirs()


def shipped_weights_dirs() -> list[Path]:
    """Heads that ship with aiidetect (the UnivFD probe): the checkout's weights/
    for editable installs, or the copy a wheel installs under
    <prefix>/share/aiidetect/weights (pyproject data-files)."""
    out: list[Path] = []
    for d in (REPO_WEIGHTS, Path(sys.prefix) / "share" / "aiidetect" / "weights"):
        if d.is_dir() and all(d.resolve() != o.resolve() for o in out):
            out.append(d)
    return out


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def plain_name(name: str) -> str:
    """A head name becomes a folder under the weights dir and part of a detector
    name (linear:<name>): letters, digits, . _ + -, no path separators, no '..'."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"head name {name!r} is not a plain name: use letters, digits, '.', '_', '+', '-' "
                         "(no '/' or '..'; at most 128 characters); --out picks another folder")
    return name


def default_output_dir(name: str, explicit: Iterable[str | Path] | None = None) -> Path:
    """Where a trainer writes a new head when the user gives no --out."""
    plain_name(name)
    explicit = [Path(p) for p in (explicit or []) if str(p)]
    if explicit:
        return explicit[0] / name
    env = os.environ.get("AIIDETECT_WEIGHTS")
    base = Path(env.split(os.pathsep)[0]) if env else user_weights_dir()
    return base / name


@dataclass
class Head:
    path: Path
    manifest: dict[str, Any]
    tensors: dict[str, Any] = field(default_factory=dict)  # name -> torch.Tensor

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def detector(self) -> str:
        return self.manifest["detector"]

    @property
    def backbone_fingerprint(self) -> str:
        return self.manifest.get("backbone", {}).get("fingerprint", "")

    def check_backbone(self, fingerprint: str, description: str = "") -> None:
        want = self.backbone_fingerprint
        if want and want != fingerprint:
            from .weights_identity import legacy_accepts

            if legacy_accepts(self.manifest.get("backbone") or {}, fingerprint):
                return
            b = self.manifest.get("backbone", {})
            trained = b.get("name") or f"{b.get('model')}/{b.get('pretrained')}"
            raise HeadMismatch(
                f"head {self.name!r} was trained on backbone {trained} (fingerprint {want}); "
                f"this run uses {description or 'another backbone'} (fingerprint {fingerprint}). "
                f"Select the matching backbone (--backbone/--pretrained or --backbone-config/--backbone-weights).")


def save_head(out_dir: str | Path, tensors: Mapping[str, Any], manifest: Mapping[str, Any],
              extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write tensors + manifest atomically enough: tensors first, manifest last,
    so a folder with a manifest is always complete."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)).detach().cpu().contiguous()
            for k, v in tensors.items()}
    save_file(flat, str(out / TENSORS))
    files = {TENSORS: sha256_file(out / TENSORS)}
    for fname, blob in (extra_files or {}).items():
        (out / fname).write_bytes(blob)
        files[fname] = sha256_file(out / fname)
    m = dict(manifest)
    for key in ("name", "detector"):
        if key not in m:
            raise HeadError(f"manifest needs {key!r}")
    m.setdefault("format_version", HEAD_FORMAT_VERSION)
    m.setdefault("version", "1")
    m.setdefault("created", _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    m["files"] = {**m.get("files", {}), **files}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(m, indent=2, sort_keys=False) + "\n")
    tmp.replace(out / MANIFEST)
    return out


def read_manifest(head_dir: str | Path) -> dict[str, Any]:
    from .report.safe import loads_foreign

    p = Path(head_dir) / MANIFEST
    try:
        size = p.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise HeadError(f"cannot read {p}: {size} bytes, more than a manifest's {MAX_MANIFEST_BYTES}")
        m = loads_foreign(p.read_text())
    except (OSError, ValueError) as exc:
        raise HeadError(f"cannot read {p}: {exc}") from exc
    # Every reader indexes these without checking (a manifest of `5`, a dict as the name or a list
    # as the files crashed scan, list and verify alike): a malformed one is a damaged head.
    if not isinstance(m, dict):
        raise HeadError(f"{p} is not a JSON object")
    for key in ("name", "detector"):
        if key not in m:
            raise HeadError(f"{p} has no {key!r}")
        if not isinstance(m[key], str) or not m[key]:
            # (a list as the name crashed find_heads' name set with "unhashable type")
            raise HeadError(f"{p}: {key!r} must be a string, not empty, not {type(m[key]).__name__}")
    files = m.get("files")
    if files is not None and not (isinstance(files, dict)
                                  and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
        raise HeadError(f"{p}: 'files' is not a table of file names and SHA-256 digests")
    if not isinstance(m.get("backbone", {}), dict):
        raise HeadError(f"{p}: 'backbone' is not an object")
    return m


def load_head(head_dir: str | Path, verify: bool = True) -> Head:
    from safetensors.torch import load_file

    d = Path(head_dir)
    m = read_manifest(d)
    if verify:
        bad = verify_files(d, m)
        if bad:
            raise HeadError(f"head {d} failed its checksum: {'; '.join(bad)}")
    tensors = load_file(str(d / TENSORS)) if (d / TENSORS).is_file() else {}
    return Head(path=d, manifest=m, tensors=tensors)


def verify_files(head_dir: Path, manifest: Mapping[str, Any]) -> list[str]:
    problems = []
    for fname, digest in (manifest.get("files") or {}).items():
        p = head_dir / fname
        if not p.is_file():
            problems.append(f"{fname} missing")
        elif sha256_file(p) != digest:
            problems.append(f"{fname} checksum differs from manifest")
    return problems


def unreadable_heads(dirs: Iterable[Path]) -> list[tuple[Path, str]]:
    """Head folders whose manifest cannot be read: (folder, why). find_heads skips them, so
    `weights verify` and `weights list` name them instead of passing over a damaged head."""
    bad = []
    for base in dirs:
        if not base.is_dir():
            continue
        for sub in sorted(p for p in base.iterdir() if (p / MANIFEST).is_file()):
            try:
                read_manifest(sub)
            except HeadError as exc:
                bad.append((sub, str(exc)))
    return bad


def find_heads(dirs: Iterable[Path], detector: str | None = None,
               unreadable: list[tuple[Path, str]] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every head folder (a folder with manifest.json) one level below each dir.
    Earlier dirs win on a name clash, like PATH. Folders whose manifest cannot
    be read are left out; pass a list as `unreadable` to get them, with why."""
    seen: set[str] = set()
    found = []
    for base in dirs:
        if not base.is_dir():
            continue
        for sub in sorted(p for p in base.iterdir() if (p / MANIFEST).is_file()):
            try:
                m = read_manifest(sub)
            except HeadError as exc:
                if unreadable is not None:
                    unreadable.append((sub, str(exc)))
                continue
            if detector and m.get("detector") != detector:
                continue
            if m["name"] in seen:
                continue
            seen.add(m["name"])
            found.append((sub, m))
    return found


def backbone_manifest(backbone) -> dict[str, Any]:
    """The backbone block every trainer writes into its head's manifest."""
    s = backbone.spec
    return {"name": s.describe(), "model": s.model, "pretrained": s.pretrained,
            "fingerprint": backbone.fingerprint, "weights_id": backbone.weights_id,
            "config": {k: backbone.model_cfg.get(k) for k in ("embed_dim", "vision_cfg", "quick_gelu")}}
