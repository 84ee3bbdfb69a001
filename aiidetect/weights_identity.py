"""A backbone checkpoint is known by its tensors, not by the bytes of one file.

The same CLIP weights reach users as OpenAI's TorchScript archive, as
open_clip's ``open_clip_model.safetensors`` from the Hugging Face hub cache, or
as a converted state dict. Heads must accept all of them, and must refuse a
checkpoint where one tensor differs. So ``weights_id`` hashes, in sorted name
order, each tensor's name, dtype, shape and raw bytes:

    tensors-sha256:<hex>

Entries open_clip itself drops when loading (the archive's
``input_resolution``, ``context_length``, ``vocab_size``), the text tower's
causal ``attn_mask`` (computed from the context length; a TorchScript archive
stores it, a state dict does not) and a ``module.`` prefix left by
DataParallel are not part of the identity.

Hashing a 900 MB checkpoint takes seconds, so results are remembered in
``$AIIDETECT_CACHE/weights_ids.sqlite`` by (path, size, mtime, inode, ctime).

Legacy identities: heads written before this scheme (the shipped UnivFD head)
record ``sha256:<hex>``, the SHA-256 of the checkpoint *file*. ``legacy_accepts``
honours them by hashing the file the run loaded (once, cached) and remembers
which tensor identity that file had, so the same tensors in another format are
accepted afterwards on this machine (see docs/weights.md).
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterator

PREFIX = "tensors-sha256:"
LEGACY_PREFIX = "sha256:"
# open_clip.load_state_dict pops these from OpenAI archives: metadata, not weights.
_DROP = ("input_resolution", "context_length", "vocab_size")
_DB_NAME = "weights_ids.sqlite"


class WeightsFormatError(ValueError):
    """The file is not a checkpoint aiidetect can read."""


def cache_path() -> Path | None:
    """None when there is no user cache folder (userdirs): identities are then computed every time."""
    from .userdirs import cache_base

    base = cache_base()
    return base / _DB_NAME if base else None


# --------------------------------------------------------------------------
# Reading tensors from the three formats
# --------------------------------------------------------------------------
def detect_format(path: Path) -> str:
    """safetensors, torch or torchscript; the first read of every loader here, so it is the one that
    refuses what is not a regular file (OSError): the backbone build and iter_tensors reach it without
    the identity cache's check, and a FIFO waits for a writer in open()."""
    from .hashing import open_regular

    with open_regular(path) as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile as exc:
            raise WeightsFormatError(f"{path}: damaged zip archive ({exc})") from exc
        # TorchScript archives hold their code; torch.save pickles do not.
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":  # legacy (non-zip) torch pickle
        return "torch"
    raise WeightsFormatError(f"{path}: not a safetensors, torch or TorchScript checkpoint")


def _canonical_name(name: str) -> str | None:
    if name.startswith("module."):
        name = name[len("module."):]
    if name in _DROP or name == "attn_mask" or name.endswith(".attn_mask"):
        return None
    return name


def _unwrap(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                return inner
        return obj
    raise WeightsFormatError(f"checkpoint holds a {type(obj).__name__}, not a state dict")


def iter_tensors(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(name, torch.Tensor) in sorted canonical-name order; one tensor in memory at a time
    for safetensors, the mmapped state dict for torch files."""
    import torch

    path = Path(path)
    fmt = detect_format(path)
    if fmt == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                names = {}
                for k in f.keys():
                    c = _canonical_name(k)
                    if c is not None:
                        names[c] = k
                for c in sorted(names):
                    yield c, f.get_tensor(names[c])
        except WeightsFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - a hostile header must be a refusal, not a crash
            raise WeightsFormatError(f"{path}: unreadable safetensors ({exc})") from exc
        return
    try:
        if fmt == "torchscript":
            sd = read_torchscript_tensors(path)
        else:
            # weights_only: a checkpoint from elsewhere must not run code when read.
            sd = _unwrap(torch.load(str(path), map_location="cpu", weights_only=True, mmap=fmt == "torch"
                                    and zipfile.is_zipfile(path)))
    except WeightsFormatError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise WeightsFormatError(f"{path}: unreadable {fmt} checkpoint ({type(exc).__name__}: {exc})") from exc
    items = {}
    for k, v in sd.items():
        c = _canonical_name(str(k))
        if c is not None and isinstance(v, torch.Tensor):
            items[c] = v
    for c in sorted(items):
        yield c, items[c]


# TorchScript archives (OpenAI's CLIP files) are read without torch.jit.load: loading one runs the
# TorchScript it holds (a class's __setstate__), and TorchScript can write files
# (torch.from_file(shared=True)): a .pt from a shared drive wrote where its author chose on
# `weights inspect`, `doctor` or a scan. Their data.pkl is a plain pickle of module objects whose
# tensors live in data/<key>; an unpickler that builds only those reads the same tensors.
_TS_STORAGES = {"FloatStorage": "float32", "HalfStorage": "float16", "DoubleStorage": "float64",
                "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}


_TS_IDENTITY = {"build_intlist": lambda v: v, "build_tensorlist": lambda v: v, "build_doublelist": lambda v: v,
                "build_boollist": lambda v: v, "restore_type_tag": lambda v, _t: v}


class _ScriptObject:
    """A TorchScript module or object: only its attributes, none of its code."""

    kind = "object"
    state: Any = None

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD
        self.state = state


# What a user can do with an archive the reader refuses: the same weights as safetensors, from the hub or
# converted once where running the archive's code is acceptable (the conversion keeps the weights identity).
TS_REFUSED_HINT = (
    "Use the weights as safetensors instead: `aiidetect weights fetch MODEL/TAG --hub` (the hub's copy), or, "
    "on a machine where running this archive's code is acceptable, convert it once: python -c \"import sys, "
    "torch, safetensors.torch as st; st.save_file({k: v.detach().clone().contiguous() for k, v in "
    "torch.jit.load(sys.argv[1], map_location='cpu').state_dict().items()}, sys.argv[2])\" IN.pt OUT.safetensors")


def read_torchscript_tensors(path: str | Path) -> dict[str, Any]:
    """{name: tensor} of a TorchScript archive's parameters and buffers, as ``state_dict()`` of
    ``torch.jit.load`` gives them, without running anything the archive holds. A refusal says what
    to use instead."""
    try:
        return _read_torchscript(Path(path))
    except WeightsFormatError as exc:
        raise WeightsFormatError(f"{exc}. {TS_REFUSED_HINT}") from exc.__cause__


def _read_torchscript(path: Path) -> dict[str, Any]:
    import collections
    import pickle

    import torch

    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if len(names) != len(set(names)):
            # two entries of one name: zipfile reads the last, torch's reader (miniz) need not; the archive
            # could hold other weights for aiidetect than for torch and other tools
            twice = sorted({n for n in names if names.count(n) > 1})[:3]
            raise WeightsFormatError(f"{path}: the archive holds more than one entry named {', '.join(twice)}")
        pkls = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise WeightsFormatError(f"{path}: a TorchScript archive needs one data.pkl, found {len(pkls)}")
        prefix = pkls[0][:-len("data.pkl")]
        # torch writes data.pkl and the tensor data stored (only code/ is deflated): a compressed entry could
        # inflate to any size as it is read (a zip bomb), a stored one holds no more than the archive's bytes
        if z.getinfo(pkls[0]).compress_type != zipfile.ZIP_STORED:
            raise WeightsFormatError(f"{path}: {pkls[0]} is compressed, which torch never writes")
        order = prefix + "byteorder"
        if order in names and z.read(order).strip() not in (b"", b"little"):
            raise WeightsFormatError(f"{path}: big-endian TorchScript archive")
        storages: dict[str, Any] = {}
        classes: dict[str, type] = {}

        def storage(key: str, dtype: Any) -> Any:
            if key not in storages:
                try:
                    info = z.getinfo(f"{prefix}data/{key}")
                except KeyError:
                    raise WeightsFormatError(f"{path}: tensor data {key!r} missing from the archive") from None
                if info.compress_type != zipfile.ZIP_STORED:
                    raise WeightsFormatError(f"{path}: tensor data {key!r} is compressed, which torch never writes")
                data = bytearray(z.read(info))
                if len(data) % dtype.itemsize:
                    raise WeightsFormatError(f"{path}: tensor data {key!r} is not whole {dtype} elements")
                storages[key] = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            flat = storages[key]
            if flat.dtype != dtype:
                raise WeightsFormatError(f"{path}: tensor data {key!r} read as two dtypes")
            return flat

        def rebuild(flat: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> Any:
            # as_strided refuses a view reaching past the storage (a hostile size or stride); a view of more
            # elements than its storage (stride 0) is one no checkpoint holds, and would make hashing it
            # copy terabytes from a few bytes of data
            view = flat.as_strided(tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset))
            if view.numel() > flat.numel():
                raise WeightsFormatError(f"{path}: a tensor of {view.numel()} elements over {flat.numel()} "
                                         "stored ones (an expanded view), which torch never saves")
            return view

        # pickle's C unpickler cannot restrict BUILD; the Python one can (data.pkl is small: the tensors'
        # bytes are in data/)
        class Unpickler(pickle._Unpickler):  # noqa: SLF001
            dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

            def load_build(self) -> None:
                # BUILD calls the object's __setstate__. Only the archive's modules have their state set:
                # a tensor's (Tensor.__setstate__) runs set_(), which grows an empty storage to whatever
                # size a 600-byte data.pkl names
                if not isinstance(self.stack[-2], _ScriptObject):
                    raise WeightsFormatError(f"{path}: data.pkl sets the state of a "
                                             f"{type(self.stack[-2]).__name__}, not of a module")
                super().load_build()

            dispatch[pickle.BUILD[0]] = load_build

            def find_class(self, module: str, name: str) -> Any:
                if module == "__torch__" or module.startswith("__torch__."):
                    # a class, as pickle's NEWOBJ wants; never the archive's own
                    return classes.setdefault(f"{module}.{name}",
                                              type("ScriptObject", (_ScriptObject,), {"kind": f"{module}.{name}"}))
                if module == "torch._utils" and name == "_rebuild_tensor_v2":
                    return rebuild
                if module == "torch" and name in _TS_STORAGES:
                    return getattr(torch, _TS_STORAGES[name])
                if module == "collections" and name == "OrderedDict":
                    return collections.OrderedDict
                if module == "torch.jit._pickle" and name in _TS_IDENTITY:
                    # how older archives tag typed lists and containers: the value, unchanged
                    return _TS_IDENTITY[name]
                raise WeightsFormatError(f"{path}: the archive's data.pkl names {module}.{name}, "
                                         "which a checkpoint's tensors never need")

            def persistent_load(self, pid: Any) -> Any:
                if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                        or not isinstance(pid[1], torch.dtype) or not isinstance(pid[2], str)):
                    raise WeightsFormatError(f"{path}: unknown persistent id in data.pkl")
                return storage(pid[2], pid[1])

        try:
            with z.open(pkls[0]) as f:
                root = Unpickler(f).load()
        except WeightsFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - a hostile pickle must be a refusal
            raise WeightsFormatError(f"{path}: unreadable TorchScript data.pkl ({type(exc).__name__}: {exc})") \
                from exc
        if not isinstance(root, _ScriptObject):
            raise WeightsFormatError(f"{path}: the archive holds no TorchScript module")
        classes_in: dict[str, dict[str, tuple[bool, frozenset[str]]]] = {}  # code file -> its classes
        code_read = 0

        def members(kind: str) -> tuple[bool, frozenset[str]]:
            """(is a module, its parameters and buffers) as the archive's code declares them: data.pkl
            holds every attribute, and jit's state_dict has only these."""
            nonlocal code_read
            module, _, name = kind.rpartition(".")
            file = f"{prefix}code/{module.replace('.', '/')}.py"  # where torch's importer looks
            if file not in classes_in:
                try:
                    info = z.getinfo(file)
                except KeyError:
                    raise WeightsFormatError(f"{path}: the definition of {kind} ({file}) is missing") from None
                with z.open(info) as f:  # torch deflates code/: read no more than the cap inflates to
                    text = f.read(_TS_CODE_CAP - code_read + 1)
                code_read += len(text)
                if code_read > _TS_CODE_CAP:
                    raise WeightsFormatError(f"{path}: its code/ holds more than {_TS_CODE_CAP >> 20} MB")
                try:
                    classes_in[file] = _ts_classes(text.decode("utf-8", "replace"))
                except WeightsFormatError as exc:
                    raise WeightsFormatError(f"{path}: {file}: {exc}") from exc
            got = classes_in[file].get(name)
            if got is None:
                raise WeightsFormatError(f"{path}: {file} does not define {name}, which data.pkl names")
            return got

        out: dict[str, Any] = {}
        seen: set[int] = set()
        todo: list[tuple[_ScriptObject, str]] = [(root, "")]
        while todo:  # a loop, not recursion: modules nested a million deep are a refusal, not a RecursionError
            obj, prefix_ = todo.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            is_module, declared = members(obj.kind)
            if not is_module:  # a TorchScript class's object: state_dict does not look inside
                if obj is root:
                    raise WeightsFormatError(f"{path}: the archive holds no TorchScript module")
                continue
            if not isinstance(obj.state, dict):
                # a class with its own __setstate__: what it builds is known only by running it
                raise WeightsFormatError(f"{path}: {obj.kind} is restored by its own code, which is not run")
            for k, v in obj.state.items():
                if isinstance(v, torch.Tensor):
                    if str(k) in declared:  # not a plain tensor attribute
                        out[prefix_ + str(k)] = v
                elif isinstance(v, _ScriptObject):
                    todo.append((v, f"{prefix_}{k}."))
    return out


# the code/ read to learn which attributes are parameters and buffers (OpenAI's ViT-L-14 holds about 1 MB)
_TS_CODE_CAP = 64 << 20
_TS_CLASS = re.compile(r"class (\w+)(?:\((\w*)\))?:")
_TS_MEMBERS = re.compile(r"\s+__(?:parameters|buffers)__ = (\[.*\])\s*")


def _ts_classes(code: str) -> dict[str, tuple[bool, frozenset[str]]]:
    """{class: (is a module, its parameters and buffers)} of one file of a TorchScript archive's code/,
    read from the ``__parameters__ = [...]`` and ``__buffers__ = [...]`` lines torch writes in each class
    (which jit's importer reads too), never run."""
    import ast

    out: dict[str, tuple[bool, frozenset[str]]] = {}
    current: str | None = None
    names: set[str] = set()
    indent = None  # of the class body's statements: a line in a method's body is not a declaration
    for line in code.splitlines():
        head = _TS_CLASS.fullmatch(line)
        if head or (line[:1] and not line[:1].isspace()):
            current = None
        if head:
            current, names, indent = head.group(1), set(), None
            out[current] = (head.group(2) == "Module", frozenset())
            continue
        if current and indent is None and line.strip():
            indent = len(line) - len(line.lstrip())
        listed = _TS_MEMBERS.fullmatch(line) if current and len(line) - len(line.lstrip()) == indent else None
        if listed:
            try:
                names.update(str(n) for n in ast.literal_eval(listed.group(1)))
            except (ValueError, SyntaxError, TypeError) as exc:
                raise WeightsFormatError(f"cannot read the declaration {line.strip()[:200]!r}") from exc
            out[current] = (out[current][0], frozenset(names))
    return out


def read_image_tower(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image tower's tensors (``visual.`` prefix removed) as open_clip's
    ``load_checkpoint`` would see them, reading as little as the format allows.

    safetensors and zip torch files are memory-mapped (``safe_open``;
    ``torch.load(mmap=True, weights_only=True)``), so the text tower's bytes are
    never read; the mapping is private (copy-on-write): nothing written to a
    tensor reaches the file. Legacy pickles and TorchScript archives are read
    whole. Unwrapping follows open_clip (``state_dict`` key, ``module.`` prefix
    judged by the first key) so that a file loads to the same tensors either way.
    Returns (tensors, {"format", "mmap"}).
    """
    import torch

    path = Path(path)
    fmt = detect_format(path)
    out: dict[str, Any] = {}
    if fmt == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:  # validates the header against the file
                keys = list(f.keys())
                # open_clip drops 7 characters from every key when the first starts with "module"
                cut = 7 if keys and keys[0].startswith("module") else 0
                wanted = {k: k[cut:][len("visual."):] for k in keys if k[cut:].startswith("visual.")}
                mapped = _map_safetensors(path, wanted)
                if mapped is None:  # an unaligned tensor: safetensors' own (copying) read
                    mapped = {name: f.get_tensor(k) for k, name in wanted.items()}
                    return mapped, {"format": fmt, "mmap": False}
        except WeightsFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - a hostile header must be a refusal, not a crash
            raise WeightsFormatError(f"{path}: unreadable safetensors ({exc})") from exc
        return mapped, {"format": fmt, "mmap": True}
    if fmt == "torchscript":
        return ({k[len("visual."):]: v for k, v in iter_tensors(path) if k.startswith("visual.")},
                {"format": fmt, "mmap": False})
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001
        raise WeightsFormatError(f"{path}: unreadable {fmt} checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsFormatError(f"{path}: holds no state dict")
    cut = 7 if str(next(iter(obj))).startswith("module") else 0
    for k, v in obj.items():
        name = str(k)[cut:]
        if name.startswith("visual.") and isinstance(v, torch.Tensor):
            out[name[len("visual."):]] = v
    return out, {"format": fmt, "mmap": mmap}


_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _map_safetensors(path: Path, wanted: dict[str, str]) -> dict[str, Any] | None:
    """Tensors of a safetensors file (already validated by ``safe_open``) as views of
    one private memory map of the file: no bytes are read until a tensor is used,
    and the rest of the file (the text tower) never is. None when a tensor's offset
    is not a multiple of its element size (torch cannot view it in place)."""
    import torch

    size = path.stat().st_size
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    flat = torch.empty(0, dtype=torch.uint8).set_(storage)
    out: dict[str, Any] = {}
    for key, name in wanted.items():
        meta = header[key]
        dt = getattr(torch, _ST_DTYPES.get(meta["dtype"], ""), None)
        if dt is None:
            return None
        begin, end = (8 + n + int(o) for o in meta["data_offsets"])
        shape = [int(d) for d in meta["shape"]]
        item = torch.empty(0, dtype=dt).element_size()
        count = 1
        for d in shape:
            count *= d
        if begin % item or end - begin != count * item or end > size:
            return None
        out[name] = flat[begin:end].view(dt).reshape(shape)
    return out


def _tensor_bytes(t) -> bytes:
    import torch

    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _architecture(shapes: dict[str, tuple[int, ...]]) -> str:
    """What the tensors say about the image tower, for humans and `doctor`."""
    conv = shapes.get("visual.conv1.weight")
    pos = shapes.get("visual.positional_embedding")
    if conv and pos and len(conv) == 4:
        width, patch = conv[0], conv[2]
        grid = int(round((pos[0] - 1) ** 0.5))
        layers = len({k.split(".")[3] for k in shapes if k.startswith("visual.transformer.resblocks.")})
        proj = shapes.get("visual.proj")
        embed = proj[1] if proj and len(proj) == 2 else width
        return f"CLIP ViT (image {grid * patch}, patch {patch}, width {width}, layers {layers}, embed {embed})"
    if any(k.startswith("visual.trunk.") for k in shapes):
        return "CLIP with a timm image tower"
    if any(k.startswith("visual.") for k in shapes):
        return "CLIP (unrecognised image tower)"
    return "unknown (no CLIP image tower)"


def compute(path: str | Path) -> dict[str, Any]:
    """Hash the tensors of a checkpoint: {weights_id, architecture, tensors, bytes, format}."""
    path = Path(path)
    fmt = detect_format(path)
    h = hashlib.sha256()
    n = 0
    total = 0
    shapes: dict[str, tuple[int, ...]] = {}
    for name, t in iter_tensors(path):
        dtype = str(t.dtype).replace("torch.", "")
        shape = tuple(int(s) for s in t.shape)
        header = json.dumps([name, dtype, list(shape)], separators=(",", ":")).encode()
        try:
            data = _tensor_bytes(t)
        except Exception as exc:  # noqa: BLE001 - quantized/sparse/meta tensors: refuse, don't crash
            raise WeightsFormatError(f"{path}: tensor {name} ({dtype}) has no plain bytes ({exc})") from exc
        # Length-prefixed fields: no two different tensor lists hash the same byte stream.
        h.update(struct.pack("<Q", len(header)) + header + struct.pack("<Q", len(data)))
        h.update(data)
        n += 1
        total += len(data)
        shapes[name] = shape
    if n == 0:
        raise WeightsFormatError(f"{path}: no tensors")
    return {"weights_id": PREFIX + h.hexdigest(), "architecture": _architecture(shapes), "tensors": n,
            "bytes": total, "format": fmt}


# --------------------------------------------------------------------------
# Cache: (path, size, mtime, ctime, inode) -> identity; tensor id <-> legacy file id
# --------------------------------------------------------------------------
def _db() -> sqlite3.Connection | None:
    p = cache_path()
    if p is None:
        return None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(p), timeout=30)
        # file_ids, not the earlier ids table: that one was keyed by path, size and mtime only (below).
        db.execute("CREATE TABLE IF NOT EXISTS file_ids (path TEXT, size INTEGER, mtime_ns INTEGER, "
                   "ctime_ns INTEGER, ino INTEGER, kind TEXT, value TEXT, "
                   "PRIMARY KEY (path, size, mtime_ns, ctime_ns, ino, kind))")
        db.execute("CREATE TABLE IF NOT EXISTS aliases (tensor_id TEXT, legacy_id TEXT, "
                   "PRIMARY KEY (tensor_id, legacy_id))")
        return db
    except (sqlite3.Error, OSError):
        # No cache means recomputing, never a failure: a cache folder that is a file or read-only made
        # every checkpoint "unreadable" and the heads on it unavailable.
        return None


def _cached(path: Path, kind: str, fn) -> Any:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        # A FIFO blocked the open forever waiting for a writer (a device could be endless).
        raise WeightsFormatError(f"{path}: not a regular file")
    # st_ctime and the inode too: a checkpoint rewritten in place (or replaced by another of the same size)
    # with its mtime put back kept the old identity, and results and features cached under the old
    # weights' fingerprint were served for the new ones. Every write changes st_ctime; no utime sets it.
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, kind)
    db = _db()
    if db is None:
        return fn(path)
    try:
        try:
            row = db.execute("SELECT value FROM file_ids WHERE path=? AND size=? AND mtime_ns=? AND ctime_ns=? "
                             "AND ino=? AND kind=?", key).fetchone()
            if row:
                return json.loads(row[0])
        except (sqlite3.Error, ValueError):
            pass
        value = fn(path)
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO file_ids VALUES (?,?,?,?,?,?,?)", (*key, json.dumps(value)))
        except sqlite3.Error:
            pass
        return value
    finally:
        db.close()  # on a hit too, and when fn raises (an unreadable checkpoint)


def inspect(path: str | Path) -> dict[str, Any]:
    """compute(), remembered by (path, size, mtime, ctime, inode)."""
    return _cached(Path(path), "tensors", compute)


def weights_id(path: str | Path) -> str:
    return inspect(path)["weights_id"]


def file_sha256(path: str | Path) -> str:
    from .hashing import sha256_file

    return _cached(Path(path), "file-sha256", sha256_file)


def remember_alias(tensor_id: str, legacy_id: str) -> None:
    db = _db()
    if db is None:
        return
    try:
        with db:
            db.execute("INSERT OR IGNORE INTO aliases VALUES (?,?)", (tensor_id, legacy_id))
    except sqlite3.Error:
        pass
    db.close()


def known_aliases(tensor_id: str) -> list[str]:
    db = _db()
    if db is None:
        return []
    try:
        return [r[0] for r in db.execute("SELECT legacy_id FROM aliases WHERE tensor_id=?", (tensor_id,))]
    except sqlite3.Error:
        return []
    finally:
        db.close()


# --------------------------------------------------------------------------
# Heads written with a file-hash identity
# --------------------------------------------------------------------------
# fingerprint -> (model config, weights file, tensor id) of every backbone built in this process.
_BUILT: dict[str, tuple[dict[str, Any], str | None, str]] = {}


def register_built(fingerprint: str, model_cfg: dict[str, Any], weights_path: str | None, tensor_id: str) -> None:
    _BUILT[fingerprint] = (model_cfg, weights_path, tensor_id)


def legacy_accepts(head_backbone: dict[str, Any], fingerprint: str) -> bool:
    """Does a head whose manifest records a legacy file-hash identity match the
    backbone built with `fingerprint`? True when the weights file the run loaded
    has that SHA-256, or when a file with that SHA-256 was seen earlier on this
    machine holding the same tensors."""
    from .clip_env import fingerprint as make_fingerprint

    want = head_backbone.get("fingerprint")
    legacy = str(head_backbone.get("weights_id") or "")
    if not want or not legacy.startswith(LEGACY_PREFIX) or fingerprint not in _BUILT:
        return False
    cfg, wpath, tid = _BUILT[fingerprint]
    if head_backbone.get("tensor_weights_id") == tid and make_fingerprint(cfg, legacy) == want:
        return True  # the head also records the tensor identity of its file
    if make_fingerprint(cfg, legacy) != want:
        return False  # another architecture: no file hash can make it match
    if legacy in known_aliases(tid):
        return True
    if wpath and Path(wpath).is_file() and LEGACY_PREFIX + file_sha256(wpath) == legacy:
        remember_alias(tid, legacy)
        return True
    return False
