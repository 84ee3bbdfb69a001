"""Carry weights to an air-gapped machine: `aiidetect weights pack OUT.tar` and
`aiidetect weights install OUT.tar`.

A bundle is a plain tar holding ``aiidetect-bundle.json`` first, then
``backbones/<file>`` and ``heads/<name>/<file>``. The manifest lists every
member with its size and SHA-256. Install reads the manifest, refuses any
member that is not a regular file at a listed path, verifies every byte
against the manifest (and each head against its own manifest) in a staging
folder, and only then moves the files into place. The bundle's own SHA-256,
printed by pack, is what to compare out of band (a manifest cannot vouch for
itself): ``install --sha256 HEX``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .hashing import sha256_file
from .report.safe import loads_foreign

MANIFEST_NAME = "aiidetect-bundle.json"
BUNDLE_FORMAT = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_MAX_MANIFEST = 8 << 20
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
STAGING_PREFIX = ".aiidetect-install-"  # the hidden folder an install verifies a bundle in, beside the heads folder


class BundleError(RuntimeError):
    """A bundle that cannot be written or is refused; nothing was installed."""


def cached_backbones(dirs: Iterable[Path]) -> list[Path]:
    """Checkpoint files in the CLIP cache folders (partial downloads left out)."""
    out: list[Path] = []
    for d in dirs:
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    return out


def pack(out: str | Path, heads: Iterable[tuple[Path, dict[str, Any]]], backbones: Iterable[Path]) -> dict[str, Any]:
    """Write the bundle; returns {path, sha256, bytes, files: [...]}."""
    from .head_checks import load_problem
    from .heads import verify_files

    out = Path(out)
    entries: list[dict[str, Any]] = []
    sources: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for bb in backbones:
        bb = Path(bb)
        if not bb.is_file():
            raise BundleError(f"backbone file {bb} does not exist")
        arc = f"backbones/{bb.name}"
        if arc in seen:
            raise BundleError(f"two backbone files are named {bb.name}")
        seen.add(arc)
        sources.append((arc, bb))
        entries.append({"path": arc, "kind": "backbone", "bytes": bb.stat().st_size, "sha256": sha256_file(bb)})
    packed: dict[str, tuple[Path, str]] = {}
    for head_dir, manifest in heads:
        bad = verify_files(head_dir, manifest)
        if bad:
            raise BundleError(f"head {head_dir} fails its own checksums ({'; '.join(bad)}); not packing it")
        why = load_problem(head_dir, manifest)
        if why:
            # (a head of NaN weights was carried to the other machine, to be unavailable in every scan there)
            raise BundleError(f"{why}; not packing it")
        name = manifest["name"]
        if name in packed and packed[name][0] != Path(head_dir):
            # A bundle keeps a head in the folder of its name (install relies on it): a second head of
            # that name (another family: linear:x beside flow:x) was left out, or its files mixed in.
            other_dir, other_family = packed[name]
            raise BundleError(f"two heads are named {name!r} ({other_family} in {other_dir}, "
                              f"{manifest.get('detector')} in {head_dir}) and would share heads/{name}/ in the "
                              "bundle; pack them into two bundles, or retrain one under another --name")
        packed[name] = (Path(head_dir), str(manifest.get("detector")))
        # verify_files (above) refused names outside the folder and checked every listed digest
        digests = manifest.get("files") or {}
        for fname in ["manifest.json", *sorted(digests)]:
            p = head_dir / fname
            arc = f"heads/{name}/{fname}"
            if arc in seen or not p.is_file():
                continue
            seen.add(arc)
            sources.append((arc, p))
            entries.append({"path": arc, "kind": "head", "head": name, "bytes": p.stat().st_size,
                            "sha256": digests.get(fname) or sha256_file(p)})
    if not entries:
        raise BundleError("nothing to pack: no backbone files and no heads")
    if out.exists():
        for _, p in sources:
            if os.path.samefile(out, p):
                # The rename at the end replaced that checkpoint or head file with the bundle.
                raise BundleError(f"{out} is one of the files to pack; write the bundle elsewhere")
    manifest_blob = json.dumps({"format": BUNDLE_FORMAT, "created": _dt.datetime.now(_dt.timezone.utc)
                                .replace(microsecond=0).isoformat(), "files": entries}, indent=2).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    import io

    from .report.output import atomic_output

    try:
        # Half a bundle (a full disk, Ctrl-C) is no bundle: atomic_output removes it, and the previous file stays.
        with atomic_output(out, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size = len(manifest_blob)
            info.mtime = int(_dt.datetime.now().timestamp())
            tar.addfile(info, io.BytesIO(manifest_blob))
            for arc, p in sources:
                ti = tarfile.TarInfo(arc)
                ti.size = p.stat().st_size
                ti.mtime = int(p.stat().st_mtime)
                ti.mode = 0o644
                with open(p, "rb") as f:
                    tar.addfile(ti, f)
    except OSError as exc:
        raise BundleError(f"cannot write {out}: {exc.strerror or exc}; nothing was written") from exc
    return {"path": str(out), "sha256": sha256_file(out), "bytes": out.stat().st_size, "files": entries}


def _safe_member_path(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or "\\" in name:
        raise BundleError(f"bundle member {name!r} has an unsafe path")
    if p.parts[0] == "backbones" and len(p.parts) == 2:
        return p
    if p.parts[0] == "heads" and len(p.parts) == 3:
        return p
    raise BundleError(f"bundle member {name!r} is not under backbones/ or heads/<name>/")


def install(bundle: str | Path, backbone_dir: Path, heads_dir: Path, expect_sha256: str | None = None,
            force: bool = False) -> dict[str, Any]:
    """Verify the whole bundle, then place backbones in backbone_dir and heads in
    heads_dir/<name>. Raises BundleError (nothing installed) on any problem."""
    from .head_checks import load_problem
    from .heads import lock_folder, read_manifest, remove_stale_folders, verify_files

    bundle = Path(bundle)
    if not bundle.is_file():  # a FIFO would block the open forever
        raise BundleError(f"{bundle}: not a file" if bundle.exists() else f"{bundle}: no such file")
    if expect_sha256 and sha256_file(bundle) != expect_sha256.strip().lower():
        raise BundleError(f"{bundle}: SHA-256 differs from the expected {expect_sha256}")
    with open(bundle, "rb") as f:
        magic = f.read(6)
    for sig, tool in _COMPRESSED:
        if magic.startswith(sig):
            # A compressed member can expand without bound (and pack never compresses): a plain
            # tar holds every byte it installs, so install never writes more than the bundle's size.
            raise BundleError(f"{bundle}: a {tool}-compressed tar; decompress it first ({tool} -dc {bundle.name} "
                              "> bundle.tar), then install the plain tar")
    try:
        tar = tarfile.open(bundle, "r:")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{bundle}: not a readable tar ({exc})") from exc
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=_existing_parent(heads_dir)))
    # Locked while this install lives; the staging folders of killed installs (kill -9 cannot clean up:
    # each left up to a whole bundle hidden beside the heads folder, or in the home folder) are removed.
    lock = lock_folder(staging)
    remove_stale_folders(staging.parent, (STAGING_PREFIX,), staging)
    try:
        with tar, _damaged_tar(bundle):
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME or not first.isfile() or first.size > _MAX_MANIFEST:
                raise BundleError(f"{bundle}: does not start with {MANIFEST_NAME}; not an aiidetect bundle")
            try:
                manifest = loads_foreign(tar.extractfile(first).read())
                listed = {e["path"]: e for e in manifest["files"]}
            except (ValueError, KeyError, TypeError) as exc:
                raise BundleError(f"{bundle}: damaged manifest ({exc})") from exc
            if manifest.get("format") != BUNDLE_FORMAT:
                raise BundleError(f"{bundle}: bundle format {manifest.get('format')!r} is not {BUNDLE_FORMAT}")
            got: set[str] = set()
            for m in tar:
                if m.offset == first.offset:
                    continue  # iteration restarts at the manifest read above
                rel = _safe_member_path(m.name)
                if m.issparse():
                    # Its holes read as zeros that the tar does not hold: a few bytes of bundle
                    # could declare (and fill the disk with) any size.
                    raise BundleError(f"bundle member {m.name!r} is a sparse file")
                if not m.isfile():
                    raise BundleError(f"bundle member {m.name!r} is not a regular file")
                e = listed.get(m.name)
                if e is None:
                    raise BundleError(f"bundle member {m.name!r} is not in the manifest")
                if m.name in got:
                    raise BundleError(f"bundle member {m.name!r} appears twice")
                if m.size != e.get("bytes"):
                    raise BundleError(f"{m.name}: {m.size} bytes, the manifest says {e.get('bytes')}")
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                src = tar.extractfile(m)
                with open(dest, "wb") as f:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        f.write(chunk)
                if h.hexdigest() != e.get("sha256"):
                    raise BundleError(f"{m.name}: SHA-256 differs from the bundle manifest (tampered or damaged)")
                got.add(m.name)
            missing = sorted(set(listed) - got)
            if missing:
                raise BundleError(f"{bundle}: missing {', '.join(missing)}")
        heads = sorted({PurePosixPath(p).parts[1] for p in got if p.startswith("heads/")})
        for name in heads:
            d = staging / "heads" / name
            try:
                hm = read_manifest(d)
            except Exception as exc:  # noqa: BLE001
                raise BundleError(f"head {name}: {exc}") from exc
            if hm["name"] != name:
                # Heads are found by the name inside: heads/aaa/ holding "univfd" would sort first
                # and silently take the place of the installed univfd, with no conflict to see.
                raise BundleError(f"bundle folder heads/{name}/ holds the head {hm['name']!r}; pack puts every "
                                  "head in the folder of its name")
            bad = verify_files(d, hm)  # a file listed outside the folder included, as pack refuses it
            if bad:
                raise BundleError(f"head {name} fails its own checksums: {'; '.join(bad)}")
            why = load_problem(d, hm)
            if why:
                raise BundleError(f"the bundle's {why.replace(str(d), name)}")
        placed: list[str] = []
        conflicts = []
        for name in heads:
            target = heads_dir / name
            if target.exists() and not force and _tree_digest(target) != _tree_digest(staging / "heads" / name):
                conflicts.append(str(target))
        for p in sorted(got):
            if p.startswith("backbones/"):
                target = backbone_dir / PurePosixPath(p).name
                if target.exists() and not force and sha256_file(target) != listed[p]["sha256"]:
                    conflicts.append(str(target))
        if conflicts:
            raise BundleError("these already exist with other content (use --force to replace): "
                              + ", ".join(conflicts))
        backbone_dir.mkdir(parents=True, exist_ok=True)
        heads_dir.mkdir(parents=True, exist_ok=True)
        for p in sorted(got):
            if p.startswith("backbones/"):
                target = backbone_dir / PurePosixPath(p).name
                _move(staging / p, target)
                placed.append(str(target))
        for name in heads:
            target = heads_dir / name
            if target.exists() and _tree_digest(target) == _tree_digest(staging / "heads" / name):
                placed.append(str(target))  # already there (perhaps through a link the user keeps)
                continue
            # What --force replaces may be a link, a file or a folder (rmtree refused the first two
            # after the backbones were in place, leaving half an install): the link itself goes,
            # never what it points to.
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
            _move(staging / "heads" / name, target)
            placed.append(str(target))
        return {"bundle": str(bundle), "installed": placed, "files": len(got)}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            os.close(lock)


@contextlib.contextmanager
def _damaged_tar(bundle: Path):
    try:
        yield
    except tarfile.TarError as exc:  # a copy cut short (a full USB stick, a dropped transfer)
        raise BundleError(f"{bundle}: truncated or damaged tar ({exc})") from exc


def _existing_parent(p: Path) -> Path:
    p = p.resolve()
    while not p.exists():
        p = p.parent
    return p


def _tree_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(x for x in d.rglob("*") if x.is_file()):
        h.update(str(p.relative_to(d)).encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def _move(src: Path, dst: Path) -> None:
    """Rename when on one file system (atomic), else copy to a temp name beside dst and rename."""
    try:
        os.replace(src, dst)
    except OSError:
        tmp = dst.with_name(dst.name + ".installing")
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
