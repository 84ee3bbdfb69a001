"""Frozen backbone features, batched, with an on-disk cache.

Training a linear probe or a flow, calibrating, and evaluating all re-read the
same features: the cache (SQLite, keyed by file content hash, backbone
fingerprint and dtype, preprocessing, output name and the decoders' versions) means the
backbone runs once per image and decoder.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .preprocess import normalize, spec_key, to_uint8


def default_cache_path() -> Path | None:
    """None when there is no user cache folder (userdirs): the cache is then off."""
    from .userdirs import cache_base

    base = cache_base()
    return base / "features.sqlite" if base else None


_DIGEST = 16


def decoders_tag() -> str:
    """The versions of the decoders (extras.decoder_versions: Pillow, pillow-heif, numpy, their codecs) in a row's
    key. Another Pillow can give other pixels for the same bytes; keyed without them, `train linear` and `train
    flow` after an upgrade fitted on features (and near-duplicate hashes) of pixels the installed Pillow no longer gives, and a head could
    not be trained again from its images with the versions installed."""
    from .extras import decoder_versions

    blob = json.dumps(decoder_versions(), sort_keys=True)
    return "decoders:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def _seal(key: tuple[str, str, str, str], vec: bytes) -> bytes:
    """A digest over a row's key and bytes in front of its bytes: a flipped or truncated vector, or one
    copied under another file's key, fails `_unseal` and is recomputed; it never reaches a fit."""
    h = hashlib.blake2b(digest_size=_DIGEST)
    for part in key:
        h.update(part.encode() + b"\0")
    h.update(vec)
    return h.digest() + vec


def _unseal(key: tuple[str, str, str, str], dim: Any, blob: Any) -> np.ndarray | None:
    if not isinstance(blob, bytes) or not isinstance(dim, int) or len(blob) != _DIGEST + 4 * dim:
        return None
    vec = blob[_DIGEST:]
    if _seal(key, vec) != blob:
        return None
    return np.frombuffer(vec, dtype=np.float32).copy()


class FeatureCache:
    """content-hash x encoder x preprocessing x output -> float32 vector.

    A damaged, full, locked or read-only cache costs time (features recomputed, or not saved), never a
    training run: every problem is a miss, and the first one is kept in `error` for the caller to say.
    Every row is stored under the decoders' versions too (decoders_tag): rows of other versions are misses."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_cache_path()
        self.decoders = decoders_tag()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.error: str | None = None
        if self.path is None:
            from .userdirs import CACHES_OFF

            self.error = CACHES_OFF
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS features (sha TEXT, encoder TEXT, prep TEXT, output TEXT, "
                             "dim INTEGER, vec BLOB, PRIMARY KEY (sha, encoder, prep, output))")
            # decode.phash_bytes of the file (under its kind), beside its features: a training run whose
            # features are all cached would otherwise decode every image again for its hash alone
            # (measured: 0.25 s -> 9 s over the 429 dev images).
            self._db.execute("CREATE TABLE IF NOT EXISTS phashes (sha TEXT, kind TEXT, value BLOB, "
                             "PRIMARY KEY (sha, kind))")
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            self._note(exc)
            if self._db is not None:
                self._db.close()
            self._db = None

    def _note(self, exc: Exception | str) -> None:
        self.error = self.error or (exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}")

    def get(self, sha: str, encoder: str, prep: str, outputs: Sequence[str]) -> dict[str, np.ndarray] | None:
        if self._db is None:
            return None
        encoder = f"{encoder}@{self.decoders}"
        try:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT output, dim, vec FROM features WHERE sha=? AND encoder=? AND prep=? AND output IN "
                    f"({','.join('?' * len(outputs))})", (sha, encoder, prep, *outputs)).fetchall()
        except sqlite3.Error as exc:
            self._note(exc)
            return None
        if len(rows) != len(outputs):
            return None
        out = {o: _unseal((sha, encoder, prep, o), dim, v) for o, dim, v in rows}
        if any(v is None for v in out.values()):
            # A row of the earlier layout (no digest) is a plain miss; any other failure is said.
            if any(not (isinstance(v, bytes) and isinstance(d, int) and len(v) == 4 * d) for _, d, v in rows):
                self._note(f"a {self.path.name} row for {sha[:12]} fails its checksum; recomputed")
            return None
        return out

    def put(self, sha: str, encoder: str, prep: str, feats: Mapping[str, np.ndarray]) -> None:
        if self._db is None:
            return
        encoder = f"{encoder}@{self.decoders}"
        rows = []
        for o, v in feats.items():
            vec = np.ascontiguousarray(v, dtype=np.float32).tobytes()
            rows.append((sha, encoder, prep, o, len(vec) // 4, _seal((sha, encoder, prep, o), vec)))
        self._write("INSERT OR REPLACE INTO features VALUES (?,?,?,?,?,?)", rows)

    def get_phash(self, sha: str, kind: str) -> tuple[bool, int | None]:
        """(found, the hash: None for an image without one). A row failing its seal is not found."""
        if self._db is None:
            return False, None
        kind = f"{kind}@{self.decoders}"   # the hash's decode is Pillow's too
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM phashes WHERE sha=? AND kind=?", (sha, kind)).fetchone()
        except sqlite3.Error as exc:
            self._note(exc)
            return False, None
        blob = row[0] if row else None
        if not isinstance(blob, bytes) or len(blob) not in (_DIGEST, _DIGEST + 8):
            return False, None
        if _seal((sha, kind, "", "phash"), blob[_DIGEST:]) != blob:
            self._note(f"a {self.path.name} perceptual hash for {sha[:12]} fails its checksum; recomputed")
            return False, None
        return True, (int.from_bytes(blob[_DIGEST:], "big") if len(blob) > _DIGEST else None)

    def put_phashes(self, kind: str, rows: Iterable[tuple[str, int | None]]) -> None:
        if self._db is None:
            return
        kind = f"{kind}@{self.decoders}"
        sealed = []
        for sha, h in rows:
            value = b"" if h is None else int(h).to_bytes(8, "big")
            sealed.append((sha, kind, _seal((sha, kind, "", "phash"), value)))
        self._write("INSERT OR REPLACE INTO phashes VALUES (?,?,?)", sealed)

    def _write(self, sql: str, rows: list) -> None:
        try:
            with self._lock:
                try:
                    self._db.executemany(sql, rows)
                    self._db.commit()
                except sqlite3.Error:
                    self._db.rollback()
                    raise
        except sqlite3.Error as exc:  # a full disk or a locked cache: not saved, what was computed is still used
            self._note(exc)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def encoder_key(backbone) -> str:
    """The cache's encoder key: the backbone and the dtype it ran in. Keyed by the fingerprint alone,
    `train linear --dtype float32` fitted on features a bfloat16 run had cached (its head differed from
    an uncached float32 run's). float32 rows keep the bare fingerprint they were always stored under."""
    dtype = str(getattr(backbone, "dtype", "float32"))
    return backbone.fingerprint if dtype == "float32" else f"{backbone.fingerprint}|{dtype}"


def output_names(layers: Sequence[int], n_blocks: int) -> list[str]:
    return ["embed"] + [f"cls_{i % n_blocks}" for i in layers]


def encode_batch(backbone, batch: np.ndarray, layers: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """(B,3,S,S) float32 normalised pixels -> {output: (B, D) float32}."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(batch).to(backbone.device)
        x = x.to(getattr(torch, backbone.dtype))
        out = backbone.encode(x, layers=layers)
    return {k: v.float().cpu().numpy() for k, v in out.items() if k == "embed" or k.startswith("cls_")}


def encode_images(backbone, images: Iterable[Any], spec: Mapping[str, Any], layers: Sequence[int] = (),
                  batch_size: int = 16) -> dict[str, np.ndarray]:
    """PIL images (or HxWx3 uint8 arrays already at model size) -> stacked features.
    Used for images that exist only in memory (CLIP-Flow proxies, perturbations)."""
    chunks: dict[str, list[np.ndarray]] = {}
    buf: list[np.ndarray] = []

    def flush():
        if buf:
            for k, v in encode_batch(backbone, np.stack(buf), layers).items():
                chunks.setdefault(k, []).append(v)
            buf.clear()

    for im in images:
        u8 = im if isinstance(im, np.ndarray) else to_uint8(im, spec)
        buf.append(normalize(u8, spec))
        if len(buf) >= batch_size:
            flush()
    flush()
    return {k: np.concatenate(v) for k, v in chunks.items()}


def extract_features(backbone, paths: Sequence[str], spec: Mapping[str, Any], layers: Sequence[int] = (),
                     batch_size: int = 16, workers: int = 2, cache: FeatureCache | None = None,
                     transform: Callable[[Any], Any] | None = None, transform_key: str = "",
                     progress: Callable[[int], None] | None = None,
                     digests: dict[str, str] | None = None, phashes: dict[str, int | None] | None = None
                     ) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Features for files. Returns ({output: (N_ok, D)}, failures[(path, reason)]);
    rows follow `paths` order minus the failures. `transform` (PIL -> PIL) is
    applied after decoding (a perturbation or re-encoding); give it a
    transform_key so cached rows of different transforms never mix. `digests`, when given, gets
    {path: SHA-256 of the bytes its row came from} (a head's training record, without reading
    every file again). `phashes`, when given, gets {path: decode.phash_bytes of its bytes} (the
    record's near-duplicate half), kept in the cache beside the features: an image whose features are
    cached is decoded again only when its hash is not."""
    from .decode import DecodeFailure, Sample, phash_bytes
    from .perceptual import KIND
    from .pixels import PixelReader, failure, ordered

    names = output_names(layers, backbone.layers)
    prep = spec_key(spec) + (f"|{transform_key}" if transform_key else "")
    enc = encoder_key(backbone)

    # No draft: feature values must not depend on which JPEGs happened to be cached. The hash has its own
    # decode (decode.phash_decoded), before `transform` (a perturbation) acts.
    reader = PixelReader([spec], keep_bytes=False, phash=phashes is not None,
                         transform=(lambda img, s: transform(img)) if transform is not None else None)
    known: set[str] = set()  # contents whose hash came from the cache

    def hash_only(s: Sample) -> Sample:
        # Features cached, hash not: the hash's own small decode alone, under the reader's budget.
        with reader.budget.hold() as admit:
            try:
                s.phash = phash_bytes(s.data or b"", reader.limits, admit)
            except DecodeFailure:
                s.phash = None
        return s

    def load(p: str, index: int) -> Sample:
        s = reader.read(p, index)
        if s.ok and cache is not None:
            s.cached = cache.get(s.record.sha256, enc, prep, names)
            if s.cached is not None:
                if phashes is not None:
                    found, s.phash = cache.get_phash(s.record.sha256, KIND)
                    if not found:
                        hash_only(s)
                    else:
                        known.add(s.record.sha256)
                s.data = None
                return s
        return reader.decode(s)

    results: dict[str, dict[str, np.ndarray]] = {}
    failures: list[tuple[str, str]] = []
    pending: list[tuple[str, str, np.ndarray]] = []

    new_hashes: list[tuple[str, int | None]] = []

    def run_pending():
        if new_hashes and cache is not None:
            cache.put_phashes(KIND, new_hashes)
        new_hashes.clear()
        if not pending:
            return
        out = encode_batch(backbone, np.stack([x for _, _, x in pending]), layers)
        for j, (p, sha, _) in enumerate(pending):
            row = {k: out[k][j] for k in names}
            results[p] = row
            if cache is not None:
                cache.put(sha, enc, prep, row)
        pending.clear()

    key = spec_key(spec)
    for n, s in enumerate(ordered(load, paths, workers, ahead=max(batch_size, 4 * max(1, workers))), 1):
        if s.ok and digests is not None:
            digests[s.path] = s.record.sha256
        if s.ok and phashes is not None:
            phashes[s.path] = s.phash
            if s.record.sha256 not in known:
                new_hashes.append((s.record.sha256, s.phash))
        if not s.ok:
            failures.append((s.path, failure(s)))
        elif s.cached is not None:
            results[s.path] = s.cached
            if len(new_hashes) >= batch_size:
                run_pending()
        else:
            pending.append((s.path, s.record.sha256, s.pixels.pop(key)))
            if len(pending) >= batch_size:
                run_pending()
        if progress:
            progress(n)
    run_pending()
    ok = [p for p in paths if p in results]
    if not ok:
        return {k: np.zeros((0, 0), np.float32) for k in names}, failures
    return {k: np.stack([results[p][k] for p in ok]) for k in names}, failures
