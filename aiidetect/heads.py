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
import hashlib
import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from .hashing import sha256_file
from .report.output import STALE_SECONDS, cannot_make_under
from .userdirs import NO_HOME, NoUserFolder

MANIFEST = "manifest.json"
TENSORS = "head.safetensors"
HEAD_FORMAT_VERSION = 1
# A manifest is numbers and provenance (the largest, an isotonic calibration,
# holds one knot per distinct calibration score): far below this. Every scan
# reads the fusion model's, so a multi-gigabyte one must not be parsed.
MAX_MANIFEST_BYTES = 64 << 20
# The heads aiidetect ships, pinned: (family, name) -> the SHA-256 of their manifest.json (every byte that decides
# a verdict: labels, threshold, calibration, and the digests of the other files) and of their tensors. A folder's
# own digests only show it is consistent with itself: a head planted in a shipped folder under the shipped
# name (or in a folder searched before the real one) ran as the shipped head. tests/linear pins these to the files
# in weights/univfd, so a change to the shipped head changes them in the same commit.
SHIPPED_HEADS: dict[tuple[str, str], dict[str, str]] = {
    ("linear", "univfd"): {
        MANIFEST: "a7bed50f6769102dcc6308e7c1dfae325ef230fb40d373d2d04587d2a702bf0a",
        TENSORS: "fe5576d788cda37c0c0ede381414d2a105d7f4a296c962c5ffafe0c6a0eb754c",
    },
}


def _checkout_weights() -> Path | None:
    """The weights/ folder of the source checkout this package runs from (an editable install, PYTHONPATH), or
    None. For an installed package the folder above it is site-packages, and its weights/ is whatever another
    package put there: aiidetect ran the heads in it. A checkout is the folder whose pyproject.toml names
    aiidetect."""
    import tomllib

    from .hashing import read_regular

    root = Path(__file__).resolve().parent.parent
    if _package_folder(root):
        # A pyproject.toml naming aiidetect is one file anyone who can write beside the packages may put there
        # (an installed package's own files sit in that folder too): it turned site-packages/weights back on.
        return None
    try:
        project = tomllib.loads(read_regular(root / "pyproject.toml", 1 << 20).decode("utf-8")).get("project")
    except (OSError, ValueError):  # none (an install), or not a pyproject of ours
        return None
    return root / "weights" if isinstance(project, dict) and project.get("name") == "aiidetect" else None


def _package_folder(root: Path) -> bool:
    """Whether `root` is a folder Python installs packages into (site-packages, dist-packages, a scheme's purelib
    or platlib, a --target folder holding pip's record of an aiidetect), not a source checkout."""
    import site
    import sysconfig

    if root.name in ("site-packages", "dist-packages") or any(root.glob("aiidetect-*.dist-info")):
        return True
    dirs = [sysconfig.get_paths(scheme).get(k) for scheme in sysconfig.get_scheme_names()
            for k in ("purelib", "platlib")]
    try:
        dirs += [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # a virtualenv's old site.py has neither
        pass
    here = os.path.normcase(str(root))
    return any(d and os.path.normcase(os.path.realpath(d)) == here for d in dirs)


REPO_WEIGHTS: Path | None = _checkout_weights()


class HeadError(RuntimeError):
    pass


class NoHeadsFolder(HeadError, NoUserFolder):
    """No folder for a new head: no home folder, no $AIIDETECT_WEIGHTS or $XDG_DATA_HOME, no output given."""


class HeadMismatch(HeadError):
    """A head was asked to run on a backbone it was not trained with."""


def user_weights_dir() -> Path | None:
    """None without a home folder or $XDG_DATA_HOME (userdirs): then only $AIIDETECT_WEIGHTS and the
    shipped heads are searched."""
    from .userdirs import data_base

    base = data_base()
    return base / "aiidetect" / "weights" if base else None


def weights_dirs(explicit: Iterable[str | Path] | None = None) -> list[Path]:
    """Where heads are looked for, in order. Explicit dirs replace the defaults."""
    explicit = [Path(p) for p in (explicit or []) if str(p)]
    if explicit:
        return explicit
    return _user_dirs() + shipped_weights_dirs()


def _user_dirs() -> list[Path]:
    """The folders of $AIIDETECT_WEIGHTS (empty entries skipped), else the user's weights folder."""
    env = [Path(p) for p in os.environ.get("AIIDETECT_WEIGHTS", "").split(os.pathsep) if p]
    if env:
        return env
    user = user_weights_dir()
    return [user] if user else []


def new_heads_dir() -> Path:
    """Where a new head goes by default: the first folder searched. `AIIDETECT_WEIGHTS=:/x` (an empty first
    entry) wrote heads into the current folder, which no scan searches."""
    dirs = _user_dirs()
    if not dirs:
        raise NoHeadsFolder(f"no folder for new heads: {NO_HOME}; pass an output folder, or set AIIDETECT_WEIGHTS "
                            "or XDG_DATA_HOME to a folder of yours")
    return dirs[0]


def shipped_weights_dirs() -> list[Path]:
    """Heads that ship with aiidetect (the UnivFD probe): the checkout's weights/
    when it runs from a source checkout, or the copy a wheel installs under
    <prefix>/share/aiidetect/weights (pyproject data-files). Only the heads of
    SHIPPED_HEADS, matching their pins, load from these (pin_problem)."""
    out: list[Path] = []
    for d in (REPO_WEIGHTS, _installed_weights_dir(), Path(sys.prefix) / "share" / "aiidetect" / "weights"):
        if d is not None and d.is_dir() and all(d.resolve() != o.resolve() for o in out):
            out.append(d)
    return out


def in_shipped_folder(head_dir: str | Path) -> bool:
    """Whether a head folder sits in one of the shipped heads' folders (its own link, if any, not followed:
    the folder it is found in is what counts)."""
    parent = Path(os.path.abspath(head_dir)).parent.resolve()
    return any(parent == d.resolve() for d in shipped_weights_dirs())


def shipped_match(head_dir: str | Path, manifest: Mapping[str, Any]) -> bool | None:
    """None when no shipped head has this head's family and name; else whether it is that head: its
    manifest.json and its manifest's tensors digest those pinned (the tensors themselves are checked against
    that digest when they are read, load_head). `manifest` must be what those pinned bytes hold: the dict a
    caller read earlier was used, and only the file read again was hashed, so a manifest swapped in between
    ran under the pin of another."""
    pin = SHIPPED_HEADS.get((manifest.get("detector"), manifest.get("name")))  # type: ignore[arg-type]
    if pin is None:
        return None
    files = manifest.get("files")
    if not isinstance(files, Mapping) or files.get(TENSORS) != pin[TENSORS]:
        return False
    blob = _manifest_bytes(Path(head_dir))
    if blob is None or hashlib.sha256(blob).hexdigest() != pin[MANIFEST]:
        return False
    from .report.safe import loads_foreign

    return loads_foreign(blob.decode("utf-8")) == manifest


def _manifest_bytes(head_dir: Path) -> bytes | None:
    from .hashing import read_regular

    try:
        return read_regular(head_dir / MANIFEST, MAX_MANIFEST_BYTES)
    except OSError:
        return None


def pin_problem(head_dir: str | Path, manifest: Mapping[str, Any]) -> str | None:
    """Why a head found in a shipped folder may not run, or None: it is not a head aiidetect ships, or it takes
    a shipped head's name and is not that head. Heads elsewhere (the user's) are not pinned."""
    d = Path(head_dir)
    if not in_shipped_folder(d):
        return None
    key = f"{manifest.get('detector')}:{manifest.get('name')}"
    match = shipped_match(d, manifest)
    if match is None:
        return (f"{d} is in the folder of the heads aiidetect ships ({d.parent}), and {key} is not one of them; "
                "put heads of your own in your weights folder or $AIIDETECT_WEIGHTS (docs/heads.md)")
    if match:
        return None
    pin = SHIPPED_HEADS[(manifest["detector"], manifest["name"])]
    files = manifest.get("files") if isinstance(manifest.get("files"), Mapping) else {}
    blob = _manifest_bytes(d)
    got = "unreadable" if blob is None else hashlib.sha256(blob).hexdigest()
    why = (f"its {MANIFEST} has SHA-256 {got}, the shipped one {pin[MANIFEST]}" if got != pin[MANIFEST]
           else f"its {TENSORS} digest is {files.get(TENSORS)}, the shipped one {pin[TENSORS]}"
           if files.get(TENSORS) != pin[TENSORS] else f"its {MANIFEST} changed while it was read")
    return (f"{d} is not the {key} head aiidetect ships ({why}): it was changed or replaced after install; "
            "reinstall aiidetect, and give a head of your own another name in your weights folder")


_installed: list[Path | None] = []
# pip's RECORD for aiidetect is a few hundred lines; one far larger is not pip's.
_MAX_RECORD_BYTES = 4 << 20


def _installed_weights_dir() -> Path | None:
    """Where pip put this installation's shipped heads, as its RECORD names them. That is <prefix>/share only
    when the install scheme's data folder is sys.prefix: Debian's and Ubuntu's system Python install to
    /usr/local while sys.prefix is /usr, and `pip install --prefix` elsewhere, so the UnivFD head was never
    found there (or another installation's was). Read once a process."""
    if not _installed:
        _installed.append(_record_weights_dir())
    return _installed[0]


def _record_weights_dir() -> Path | None:
    """The share/aiidetect/weights folder the RECORD beside this package names, or None. Only the dist-info
    pip wrote in this package's own folder counts, read directly: importlib.metadata searched every sys.path
    entry for an aiidetect, and named the files of one inside a zip with paths pathlib cannot take (every
    scan crashed there)."""
    import csv

    from .hashing import read_regular

    here = Path(__file__).resolve().parent
    site = here.parent
    if not site.is_dir():  # a zip: heads inside it could not be loaded anyway
        return None
    try:
        for info in sorted(site.glob("aiidetect-*.dist-info")):
            text = read_regular(info / "RECORD", _MAX_RECORD_BYTES).decode("utf-8")
            rows = [PurePosixPath(r[0]) for r in csv.reader(text.splitlines()) if r and r[0]]
            if not any((site.joinpath(*r.parts)).resolve() == here / "__init__.py" for r in rows):
                continue  # another installation's record (a stale one, say)
            for r in rows:
                if r.parts[-5:-2] == ("share", "aiidetect", "weights"):
                    # The folder RECORD names, resolved from there up: resolving the file's own path followed a
                    # linked head folder (univfd -> /opt/heads/univfd) and named the link target's parent.
                    # The prefix is read from RECORD's path too: a linked weights folder leads anywhere.
                    weights = site.joinpath(*r.parts[:-2]).resolve()
                    return weights if _scheme_pairs(site, site.joinpath(*r.parts[:-5]).resolve()) else None
    except (OSError, ValueError, csv.Error):  # unreadable or damaged: the other places are still searched
        return None
    return None


def _scheme_pairs(site: Path, data: Path) -> bool:
    """Whether an install scheme of this Python puts packages in `site` and data files in `data`. RECORD's
    paths are relative to the folder pip installed into, and `pip install --target DIR` installs into a
    temporary folder and moves what it wrote into DIR: its RECORD names the shipped heads two levels above
    DIR (/tmp/share for --target /tmp/x/deps, a folder anyone can write), and every scan ran the heads and
    fusion model found there."""
    import sysconfig

    def same(a: str | Path, b: Path) -> bool:
        return os.path.normcase(Path(a).resolve()) == os.path.normcase(b)

    site = site.resolve()
    for scheme in sysconfig.get_scheme_names():
        for base in (data, data.parent):  # Debian's posix_local scheme installs data under {base}/local
            v = {k: str(base) for k in ("base", "platbase", "userbase", "installed_base", "installed_platbase")}
            try:
                paths = sysconfig.get_paths(scheme, vars=v)
            except (KeyError, ValueError):
                continue
            if same(paths["data"], data) and any(same(paths[k], site) for k in ("purelib", "platlib")):
                return True
    return False


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def plain_name(name: str) -> str:
    """A head name becomes a folder under the weights dir and part of a detector
    name (linear:<name>): letters, digits, . _ + -, no path separators, no '..'."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"head name {name!r} is not a plain name: use letters, digits, '.', '_', '+', '-' "
                         "(no '/' or '..'; at most 128 characters); --out-dir picks another folder")
    return name


def default_output_dir(name: str, explicit: Iterable[str | Path] | None = None) -> Path:
    """Where a trainer writes a new head when the user gives no --out."""
    plain_name(name)
    explicit = [Path(p) for p in (explicit or []) if str(p)]
    if explicit:
        return explicit[0] / name
    return new_heads_dir() / name


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
        b = self.manifest.get("backbone")
        return str(b.get("fingerprint") or "") if isinstance(b, dict) else ""

    def check_backbone(self, fingerprint: str, description: str = "") -> None:
        want = self.backbone_fingerprint
        if not want:
            # Nothing to compare with: such a head ran on whatever backbone the scan used, and scored.
            raise HeadMismatch(
                f"head {self.name!r} does not say which backbone it was trained on (its manifest has no "
                f"backbone fingerprint), so it cannot be checked against the backbone this run uses "
                f"({description or fingerprint}); retrain it, or restore its manifest")
        if want != fingerprint:
            from .weights_identity import legacy_accepts

            b = self.manifest["backbone"]
            if legacy_accepts(b, fingerprint):
                return
            trained = b.get("name") or f"{b.get('model')}/{b.get('pretrained')}"
            raise HeadMismatch(
                f"head {self.name!r} was trained on backbone {trained} (fingerprint {want}); "
                f"this run uses {description or 'another backbone'} (fingerprint {fingerprint}). "
                f"Select the matching backbone (--backbone/--pretrained or --backbone-config/--backbone-weights).")


class HeadOutputError(HeadError, ValueError):
    """The folder a trainer was told to write its head to cannot take it (the trainers' commands report
    ValueErrors as one-line usage errors)."""


# What a head folder holds besides the files its manifest lists: the manifest itself, the MPFT trainer's
# checkpoint (--resume) and the temporary names these are written under.
_HEAD_OWN = frozenset({MANIFEST, MANIFEST + ".tmp", TENSORS, "checkpoint.pt", "checkpoint.tmp"})


def check_output_dir(out_dir: str | Path, name: str, family: str) -> Path:
    """Where a head ``family:name`` may be written: a new or empty folder, or the folder of a head of
    the same name and family (retraining replaces it). Anything else is refused before training, since
    writing would replace what is there: a file, a folder of other files (the training images, a weights
    folder), another head. Returns the folder with links resolved."""
    out = Path(out_dir)
    real = Path(os.path.realpath(out))
    if real.name.startswith("."):
        raise HeadOutputError(f"the head folder {out} is hidden (its name starts with '.'): scans never look in "
                              "hidden folders for heads; give --out-dir a name without the leading '.'")
    if real.exists() and not real.is_dir():
        raise HeadOutputError(f"the head folder {out} is a file; give --out-dir a new or empty folder")
    # The head is written beside its folder, then renamed: the nearest folder that exists must take it.
    if (why := cannot_make_under(real.parent)) is not None:
        raise HeadOutputError(f"the head folder {out} {why}")
    try:
        entries = sorted(os.listdir(real)) if real.is_dir() else []
    except OSError as exc:
        raise HeadOutputError(f"cannot read the head folder {out}: {exc.strerror or exc}") from exc
    listed: set[str] = set()
    if MANIFEST in entries:
        try:
            m = read_manifest(real)
        except HeadError:
            raise HeadOutputError(f"the head folder {out} holds a {MANIFEST} that is not a head's; "
                                  "give --out-dir a new or empty folder") from None
        if m.get("detector") != family or m.get("name") != name:
            raise HeadOutputError(
                f"the head folder {out} holds another head ({m.get('detector')}:{m.get('name')}), which this "
                f"{family}:{name} would replace; give --out-dir another folder, or remove that head first")
        files = m.get("files")
        listed = {str(f) for f in files} if isinstance(files, Mapping) else set()
    other = [e for e in entries if e not in _HEAD_OWN | listed]
    if other:
        shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        raise HeadOutputError(f"the head folder {out} holds files that are not a head's ({shown}); a head is "
                              "written into a folder of its own: give --out-dir a new or empty folder")
    return real


def save_head(out_dir: str | Path, tensors: Mapping[str, Any], manifest: Mapping[str, Any],
              extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write a head folder whole, then rename it into place. An interrupted save (Ctrl-C, kill -9, a
    full disk) leaves the head that was there before, complete, or no head: never the new tensors
    beside the old manifest (the old head then failed its checksum) or a folder half written. The
    unfinished folder is a hidden sibling (``.<name>.partial-*``), which find_heads skips."""
    import secrets
    import shutil

    import torch
    from safetensors.torch import save as serialize

    m = dict(manifest)
    for key in ("name", "detector"):
        if key not in m:
            raise HeadError(f"manifest needs {key!r}")
    real = check_output_dir(out_dir, m["name"], m["detector"])
    flat = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)).detach().cpu().contiguous()
            for k, v in tensors.items()}
    bad = non_finite(flat)
    if bad:
        raise HeadError(f"head {m['name']} not written: its tensors hold NaN or infinite numbers ({', '.join(bad[:3])})"
                        f"; training diverged or its features were non-finite")
    real.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = real.parent / f".{real.name}.partial-{tag}"
    tmp.mkdir()
    lock = lock_folder(tmp)
    try:
        _remove_stale_saves(real, tmp)
        # Serialized here, written by Python: safetensors' own save_file raises its SafetensorError on a full
        # disk, which no OSError handler (below, the boundary's) recognises. A head is megabytes at most.
        (tmp / TENSORS).write_bytes(serialize(flat))
        files = {TENSORS: sha256_file(tmp / TENSORS)}
        for fname, blob in (extra_files or {}).items():
            (tmp / fname).write_bytes(blob)
            files[fname] = sha256_file(tmp / fname)
        m.setdefault("format_version", HEAD_FORMAT_VERSION)
        m.setdefault("version", "1")
        m.setdefault("created", _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
        m["files"] = {**m.get("files", {}), **files}
        (tmp / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=False) + "\n")
        # The manifest's mode is what a plain open() gives (the umask read without os.umask, which sets it for
        # the whole process: a host's thread creating a file in that instant got mode bits it did not ask for).
        plain = stat.S_IMODE(os.stat(tmp / MANIFEST).st_mode)
        for fname in os.listdir(tmp):
            # safetensors writes its file 0600: in a shared weights folder nobody else could load the head
            # whose manifest they can read. Every file gets what a plain open() gives, as the manifest does.
            os.chmod(tmp / fname, plain)
            _fsync(tmp / fname)
        _fsync(tmp)
        try:
            os.rename(tmp, real)  # a new folder, or over an empty one
        except OSError:
            if not real.is_dir():
                raise
            # A head being retrained: the old folder steps aside, the new one takes its place.
            old = real.parent / f".{real.name}.old-{tag}"
            os.rename(real, old)
            try:
                os.rename(tmp, real)
            except BaseException:
                os.rename(old, real)
                raise
            shutil.rmtree(old, ignore_errors=True)
        _fsync(real.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        from .report.output import write_failure

        if write_failure(exc, str(out_dir)) is not None:
            # A full disk after minutes of training: one line naming the folder (the trainers' commands
            # say a ValueError so), not the bug-worded OSError with no path.
            raise HeadOutputError(f"head {m['name']} not written to {out_dir}: {exc.strerror}; the folder is as "
                                  "it was before") from exc
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return Path(out_dir)


# A hidden save folder older than STALE_SECONDS and not locked was left by a killed save (the age covers the
# instant between mkdir and flock of a save starting now): the rule atomic_output's temporary reports follow.


def lock_folder(folder: Path) -> int | None:
    """Hold a lock on a save folder while it is written ("in use"), or None where there are no locks."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_stale_saves(real: Path, mine: Path) -> None:
    """Remove what killed saves of this head left beside it (kill -9 cannot be cleaned up after: each left
    a hidden copy of the head); a live save holds its lock and is kept."""
    remove_stale_folders(real.parent, (f".{real.name}.partial-", f".{real.name}.old-"), mine)


def remove_stale_folders(parent: Path, prefixes: Sequence[str], mine: Path | None = None) -> None:
    """Remove the folders in `parent` named with one of `prefixes` that killed runs left: older than
    STALE_SECONDS and not locked (a live one holds its lock, taken with `lock_folder`, and is kept)."""
    import shutil
    import time

    try:
        import fcntl
    except ImportError:
        return
    now = time.time()
    for prefix in prefixes:
        for p in parent.glob(glob_escape(prefix) + "*"):
            if p == mine or p.is_symlink() or not p.is_dir():
                continue
            try:
                if now - p.stat().st_mtime < STALE_SECONDS:
                    continue
                fd = os.open(p, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused while its run lives
                    shutil.rmtree(p, ignore_errors=True)
                finally:
                    os.close(fd)
            except OSError:
                continue


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # a file system without fsync on folders: the renames are still atomic
    finally:
        os.close(fd)


def read_manifest(head_dir: str | Path) -> dict[str, Any]:
    from .hashing import read_regular
    from .report.safe import loads_foreign

    p = Path(head_dir) / MANIFEST
    try:
        # read_regular: a FIFO as manifest.json (`--fusion DIR`) waited for a writer for ever, and one
        # linked to /dev/zero (size 0) was read until memory ran out.
        size = p.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise HeadError(f"cannot read {p}: {size} bytes, more than a manifest's {MAX_MANIFEST_BYTES}")
        m = loads_foreign(read_regular(p, MAX_MANIFEST_BYTES).decode("utf-8"))
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
    # (null is a head that names no backbone: found, and unavailable with that reason when loaded)
    if m.get("backbone") is not None and not isinstance(m["backbone"], dict):
        raise HeadError(f"{p}: 'backbone' is not an object")
    return m


def load_head(head_dir: str | Path, verify: bool = True, manifest: dict[str, Any] | None = None) -> Head:
    """The head in `head_dir`; `manifest`: its manifest as find_heads read it (not read again)."""
    d = Path(head_dir)
    m = read_manifest(d) if manifest is None else manifest
    if (pinned := pin_problem(d, m)) is not None:
        raise HeadError(pinned)
    from safetensors.torch import load  # (a refused head costs no torch import)

    if verify:
        bad = verify_files(d, m)
        if bad:
            raise HeadError(f"head {d} failed its checksum: {'; '.join(bad)}")
    if "preprocessing" in m:
        from .preprocess import check_spec

        try:
            check_spec(m["preprocessing"])
        except ValueError as exc:
            raise HeadError(f"head {d}: {exc}") from exc
    try:
        # The bytes parsed are the bytes checked: verify_files read the file once, and safetensors read it
        # again, so tensors replaced in between (the shipped head's digest pinned, not its bytes) ran.
        blob = _tensor_bytes(d) if (d / TENSORS).is_file() else None
        if verify and blob is not None and hashlib.sha256(blob).hexdigest() != (m.get("files") or {}).get(TENSORS):
            raise HeadError(f"head {d} failed its checksum: {TENSORS} checksum differs from manifest")
        tensors = {} if blob is None else load(blob)
    except HeadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file made elsewhere, its checksum right: safetensors' own error
        # (`weights verify` ended on it, "error: SafetensorError: ...", naming no head and checking no other)
        raise HeadError(f"head {d}: {TENSORS} cannot be read: {type(exc).__name__}: {exc}") from exc
    bad = non_finite(tensors)
    if bad:
        # Run, it made every file's result an error blamed on "the features", and verify said ok.
        raise HeadError(f"head {d} holds NaN or infinite numbers in {', '.join(bad[:3])}: it cannot score; retrain it")
    return Head(path=d, manifest=m, tensors=tensors)


# Far above any head's tensors (a linear probe is kilobytes, LoRA deltas megabytes): they are read into memory
# whole, so that the bytes hashed are the bytes parsed.
MAX_TENSORS_BYTES = 4 << 30


def _tensor_bytes(d: Path) -> bytes:
    # In chunks, not read_regular's one read: that asks for the whole bound at once, gigabytes for a head of
    # kilobytes, which a machine that does not overcommit memory refuses.
    from .hashing import CHUNK, open_regular

    chunks: list[bytes] = []
    n = 0
    try:
        with open_regular(d / TENSORS) as f:
            while chunk := f.read(CHUNK):
                n += len(chunk)
                if n > MAX_TENSORS_BYTES:
                    raise OSError(f"more than {MAX_TENSORS_BYTES} bytes")
                chunks.append(chunk)
    except OSError as exc:
        raise HeadError(f"head {d}: {TENSORS} cannot be read ({exc.strerror or exc})") from exc
    return b"".join(chunks)


def non_finite(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    import torch

    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def in_folder(fname: Any) -> bool:
    """A name the manifest lists must be a file directly in the head folder."""
    return (isinstance(fname, str) and fname not in ("", ".", "..") and not fname.startswith(".")
            and not any(c in fname for c in "/\\\0"))


def verify_files(head_dir: Path, manifest: Mapping[str, Any]) -> list[str]:
    """What is wrong with a head's files against its manifest's checksums, or []."""
    head_dir = Path(head_dir)
    files = manifest.get("files")
    if files is None:
        files = {}
    if not isinstance(files, Mapping):
        return [f"the manifest's files is {type(files).__name__}, not a table of file names and sha256"]
    problems = []
    # The tensors are loaded whenever they are there, so they must have a checksum to be verified against:
    # a manifest without one would run any bytes put in their place.
    if TENSORS not in files and (head_dir / TENSORS).exists():
        problems.append(f"{TENSORS} is not listed in the manifest's files (no checksum to verify it against)")
    for fname, digest in files.items():
        p = head_dir / str(fname)
        if not in_folder(fname):
            problems.append(f"{fname!r} is outside its folder (a head's files sit directly in it)")
        elif not isinstance(digest, str):
            problems.append(f"{fname} has no sha256 in the manifest")
        elif not p.is_file():
            problems.append(f"{fname} missing")
        else:
            try:
                same = sha256_file(p) == digest
            except OSError as exc:  # unreadable (permissions, an I/O error): this head's problem, not a crash
                problems.append(f"{fname} cannot be read ({exc.strerror or exc})")
                continue
            if not same:
                problems.append(f"{fname} checksum differs from manifest")
    return problems


def _walk(dirs: Iterable[Path]):
    """(folder, manifest or None, why not) for every folder with a manifest.json one level below each dir."""
    for base in dirs:
        base = Path(base)
        if not base.is_dir():
            continue
        # A hidden folder is a save in progress, or one a kill left behind (save_head), never a head.
        for sub in sorted(p for p in base.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()):
            try:
                yield sub, read_manifest(sub), ""
            except HeadError as exc:
                yield sub, None, str(exc)


def find_heads(dirs: Iterable[Path], detector: str | None = None,
               unreadable: list[tuple[Path, str]] | None = None,
               notes: list[str] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every head folder (a folder with manifest.json) one level below each dir.
    Earlier dirs win on a clash of family and name, like PATH; heads of two families may share a
    name, as a scan runs both (linear:x, flow:x). Folders whose manifest cannot be read are left
    out; pass a list as `unreadable` to get them, with why. Pass a list as `notes` to get, for the
    user, what is passed over without a word: such a folder (its family is unknown, so it is named
    for every ``detector`` asked about: callers drop repeated notes), a head hidden by an earlier
    one of ``detector``'s family and the same name, and a weights folder that is itself a head
    folder (its head is not found: heads sit one level below)."""
    dirs = [Path(d) for d in dirs]
    if notes is not None:
        notes.extend(f"{d} is a head folder, and heads are looked for in the folders below a weights "
                     f"folder: give its parent ({d.parent}) as the weights folder"
                     for d in dirs if (d / MANIFEST).is_file())
    seen: dict[tuple[str, str], Path] = {}
    found = []
    for sub, m, why in _walk(dirs):
        if m is None:
            if unreadable is not None:
                unreadable.append((sub, why))
            if notes is not None:
                notes.append(f"{sub} is not a usable head, so it does not run: {why}")
            continue
        if detector and m.get("detector") != detector:
            continue
        key = (m["detector"], m["name"])
        if key in seen:
            if notes is not None:
                notes.append(f"head {key[0]}:{key[1]} in {sub} is not used: {seen[key]} has the same name and is "
                             "found first (the first weights folder wins); rename one or remove it")
            continue
        seen[key] = sub
        found.append((sub, m))
        if notes is not None and shipped_match(sub, m) is False and not in_shipped_folder(sub):
            # A user's head is not pinned and runs, but under the shipped head's name (in front of it, from a
            # user folder) its answers read as the shipped head's: said, as a hidden head is.
            notes.append(f"head {key[0]}:{key[1]} in {sub} is not the {key[0]}:{key[1]} head aiidetect ships, "
                         "though it has its name: its results are its own; give it another name (docs/heads.md)")
    return found


def unreadable_heads(dirs: Iterable[Path]) -> list[tuple[Path, str]]:
    """(folder, why) for each folder find_heads passes over because its manifest.json cannot be read."""
    bad: list[tuple[Path, str]] = []
    find_heads(dirs, unreadable=bad)
    return bad


def backbone_manifest(backbone) -> dict[str, Any]:
    """The backbone block every trainer writes into its head's manifest."""
    s = backbone.spec
    return {"name": s.describe(), "model": s.model, "pretrained": s.pretrained,
            "fingerprint": backbone.fingerprint, "weights_id": backbone.weights_id,
            "config": {k: backbone.model_cfg.get(k) for k in ("embed_dim", "vision_cfg", "quick_gelu")}}
