"""Scan results kept across runs (SQLite), keyed by file content and detector identity.

An auditor re-running a sweep of a large folder (after an interruption, or
because new files arrived) should pay only for files the tool has not seen:
a file whose bytes hash to a known SHA-256 gets its detector results back
without decoding or running a model. Fusion is not cached; it is cheap and
reads the fusion head of the current run.

A cached row is only ever reused by a detector with the same *identity*: its
family and name, the checksum of its head manifest (which lists the SHA-256
of every weight file and the calibration), the backbone fingerprint, device,
dtype and runtime, the decode settings of the run, a hash of the aiidetect
source itself, so results of an older build are never served as if this
build had computed them, and the versions of the libraries that turn the
file's bytes into the pixels every model sees (DECODERS). Results with status "error" or
"unavailable" are never stored, nor one its detector marks not `cacheable` (a
C2PA signature judged against the date of the scan: its certificate may have
expired by the next one; a metadata result whose wall-clock budget ran out).
Such a file is still served the results of its other detectors (the models'):
only the per-file detectors without a row run again, on the bytes read for the
hash, decoded as for a fresh scan but given to no model (`get`'s `rerun`).
Every row carries a checksum over its key and content; a row that fails it (a
flipped byte on disk) is a miss, recomputed.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any, Collection, Mapping

from .extras import decoder_versions  # the libraries between a file's bytes and a model's pixels (extras.py)
from .records import DetectorResult, Evidence

FILE_FIELDS = ("format", "width", "height", "image_info")
_source_hash: str | None = None


def default_path() -> Path | None:
    from .feature_cache import default_cache_path

    p = default_cache_path()
    return p.with_name("results.sqlite") if p else None


def source_hash() -> str:
    """SHA-256 over aiidetect's own Python files: a changed build never reuses
    the results of another."""
    global _source_hash
    if _source_hash is None:
        root = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
        _source_hash = h.hexdigest()
    return _source_hash


def build_identity() -> dict[str, Any]:
    """What a cached row was computed by besides its detector: this aiidetect source and its decoders."""
    return {"source": source_hash(), "decoders": decoder_versions()}


def identity_key(identity: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    blob = json.dumps({"detector": identity, "run": context, "build": build_identity()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def result_to_json(r: DetectorResult) -> str:
    """Strict JSON (raises TypeError/ValueError for anything that would not round-trip)."""
    d = {"status": r.status, "p_ai": r.p_ai, "score": r.score, "score_kind": r.score_kind, "reason": r.reason,
         "evidence": [asdict(e) for e in r.evidence], "extra": r.extra}
    return json.dumps(d, allow_nan=False)


def result_from_json(s: str) -> DetectorResult:
    d = json.loads(s)
    return DetectorResult(status=d["status"], p_ai=d["p_ai"], score=d["score"], score_kind=d["score_kind"],
                          reason=d["reason"], evidence=[Evidence(**e) for e in d["evidence"]], extra=d["extra"])


def facts_key(sha: str) -> str:
    """The decode facts' key: the file and this build (its source and decoders). Keyed by the file alone, a
    cache shared by two installed versions served one version's facts (format, size, image info) beside the
    other's detector results, and the record differed from a fresh scan's."""
    build = hashlib.sha256(json.dumps(build_identity(), sort_keys=True).encode()).hexdigest()
    return f"{sha}@{build[:16]}"


class CacheIntegrityError(ValueError):
    """A row's checksum does not match its content: the lookup is a miss."""


def _seal(sha: str, ident: str, text: str) -> str:
    """Prefix a row with a checksum over its key and content: a flipped byte in the
    database, or a row copied under another file's key, fails `_unseal` and is
    recomputed instead of served (a served p_ai must be one this build computed)."""
    h = hashlib.sha256(f"{sha}\0{ident}\0{text}".encode()).hexdigest()[:32]
    return f"{h}:{text}"


def _unseal(sha: str, ident: str, stored: str) -> str:
    h, sep, text = stored.partition(":")
    if not sep or _seal(sha, ident, text) != stored:
        raise CacheIntegrityError(f"results.sqlite row for {sha[:12]} fails its checksum; recomputed")
    return text


def close_when_gone(owner: object, db: sqlite3.Connection) -> weakref.finalize:
    """Close `db` when `owner` goes (ResultCache, store.ResultsStore), but not at the interpreter's exit: a
    finalizer runs there before the scans still referenced (a script's loop left by Ctrl-C or `break`) are
    closed, and their store sessions then found the connection closed: the records handed out lost, the
    session left `running`."""
    closer = weakref.finalize(owner, db.close)
    closer.atexit = False
    return closer


class ResultCache:
    """sha256 x detector identity -> DetectorResult; sha256 x build -> decode facts."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        if self.path is None:
            from .userdirs import CACHES_OFF

            raise OSError(CACHES_OFF)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        # Closed when this object goes, not when the cyclic collector meets the connection (its statement cache
        # is a cycle): a service that built a Scanner per request and never closed it held a file descriptor
        # per request until a full collection, which a large heap makes rare, and SQLite holds the descriptor of
        # a connection closed while another to the same file is open until that one closes too.
        self._closer = close_when_gone(self, self._db)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS files (sha TEXT PRIMARY KEY, info TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (sha TEXT, ident TEXT, result TEXT, "
                         "PRIMARY KEY (sha, ident))")
        self._db.commit()

    def get(self, sha: str, idents: Mapping[str, str], rerun: Collection[str] = ()
            ) -> tuple[dict[str, Any], dict[str, DetectorResult]] | None:
        """(decode facts, {detector name: result}) when every identity has a row, else None. A detector named
        in `rerun` (one the scan can run again from the file's bytes alone: metadata) may lack its row: the
        hit then holds the others' results and the scan runs it again. Its result is never stored when it
        depends on when it was computed (a C2PA signature judged against the clock of the scan), and a
        signed file missed the cache whole: every model ran again at every scan. A hit serves at least one
        result; with rows for none but `rerun` detectors it is a miss."""
        keys, fk = list(idents.values()), facts_key(sha)
        with self._lock:
            info = self._db.execute("SELECT info FROM files WHERE sha=?", (fk,)).fetchone()
            if info is None:
                return None
            rows = dict(self._db.execute(
                f"SELECT ident, result FROM results WHERE sha=? AND ident IN ({','.join('?' * len(keys))})",
                (sha, *keys)).fetchall()) if keys else {}
        if any(k not in rows for name, k in idents.items() if name not in rerun):
            return None
        if keys and not rows:
            return None
        # Raises CacheIntegrityError (a miss, reported once by the pipeline) on a damaged row.
        info_text = _unseal(fk, "files", info[0])
        texts = {name: _unseal(sha, k, rows[k]) for name, k in idents.items() if k in rows}
        try:
            return json.loads(info_text), {name: result_from_json(t) for name, t in texts.items()}
        except (ValueError, KeyError, TypeError):
            return None  # a row from an incompatible layout: recompute

    def put_many(self, entries: list[tuple[str, Mapping[str, Any], Mapping[str, tuple[str, DetectorResult]]]]) -> int:
        """Store (sha, decode facts, {name: (identity, result)}) entries in one
        transaction; only results with status "ok" that serialise exactly are
        kept. Returns how many results were stored."""
        files, rows = [], []
        for sha, info, results in entries:
            fk = facts_key(sha)
            files.append((fk, _seal(fk, "files", json.dumps(dict(info), default=str))))
            for ident, r in results.values():
                if r.status != "ok" or not r.cacheable:
                    continue
                try:
                    rows.append((sha, ident, _seal(sha, ident, result_to_json(r))))
                except (TypeError, ValueError):
                    continue  # not JSON-exact (e.g. a NaN): recompute next time rather than store an approximation
        if not files:
            return 0
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?,?)", files)
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?)", rows)
            self._db.commit()
        return len(rows)

    def stats(self) -> dict[str, int]:
        with self._lock:
            files = self._db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            results = self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return {"files": int(files), "results": int(results)}

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM results")
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._closer()
