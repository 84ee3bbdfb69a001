"""The record: one object per scanned file, and the pieces it is made of.

Scripts depend on these field names; bump SCHEMA_VERSION on any breaking change
and document it in docs/schema.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# 1.1: file_bytes, fusion; 1.2: a verdict beside an error; 1.3: band (docs/schema.md "Changes")
SCHEMA_VERSION = "1.3"

Verdict = Literal["ai-generated", "likely-real", "uncertain", "error"]
Direction = Literal["ai", "real", "neutral"]
Status = Literal["ok", "unavailable", "error"]

VERDICTS: tuple[str, ...] = ("ai-generated", "likely-real", "uncertain", "error")

# Error codes a record can carry. Keep this list in docs/schema.md.
ERROR_CODES = (
    "unreadable",          # OS error opening/reading (permissions, vanished, device file)
    "changed-while-read",  # written to while being read: the bytes were not one version of the file
    "not-a-file",          # directory, socket, device, fifo given where a file was expected
    "symlink-loop",
    "empty-file",
    "too-large",           # over the byte or pixel limit (decompression bomb guard)
    "unsupported-format",  # bytes are not an image format we decode
    "decode-error",        # recognised format, but corrupt, truncated, or in a layout Pillow does not decode
    "internal-error",      # a bug: reported, never hidden
    "bad-stored-record",   # `results export`: a results-store row whose record cannot be read
    "crashed",             # it ended the process reading it (crashguard; a Ray worker each try); not read again
    "timeout",             # its Ray task ran past --file-timeout with no other file in it, or its local read
                           # through the library was given up past file_timeout; not read again (--db), but for
                           # a library read given up once: read again alone by a resume with a deadline (crashguard)
)

# Errors that leave the file's bytes read but its pixels unread: a record with one of these still gets the
# verdict its metadata decides on its own (fusion.without_pixels), and keeps the error beside it. Every other
# error (nothing read, a crash, a timeout, a bug) is verdict "error".
PIXEL_FAILURES = frozenset({"decode-error", "too-large"})
# How the first reason of such a verdict begins.
PIXELS_UNREAD = "the pixels could not be read"


def verdict_matches(verdict: str | None, failed: bool, wanted) -> bool:
    """Whether a record is one of `wanted` verdicts (`--fail-on`, `--verdict`): "error" matches every record
    with an error, so a file whose pixels failed and whose metadata called it ai-generated is both "ai" and
    "error" there; the other verdicts match the verdict only."""
    return verdict in wanted or (failed and "error" in wanted)


# Notes (neutral evidence ids) that say the metadata reading was cut short; not errors: the record
# still has its pixels' verdict and whatever evidence was read before the cut.
METADATA_TIMEOUT = "metadata-timeout"


@dataclass
class ErrorInfo:
    code: str
    message: str


@dataclass
class Evidence:
    """One piece of provenance evidence.

    strength is the magnitude of a natural-log likelihood ratio in nats: how much
    more likely this observation is under the hypothesis named by `direction`
    than under the other one. decisive marks evidence that should dominate the
    fusion (signed AI declaration, generator parameters, watermark match).
    """

    id: str
    direction: Direction
    strength: float
    detail: str
    source: str = ""
    decisive: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def llr(self) -> float:
        """Signed log-likelihood ratio log p(obs|AI)/p(obs|real)."""
        if self.direction == "ai":
            return float(self.strength)
        if self.direction == "real":
            return -float(self.strength)
        return 0.0


@dataclass
class DetectorResult:
    """What one detector says about one file.

    p_ai is None when the detector has no opinion (unavailable, error, or a
    metadata detector that found nothing). score is the detector's raw number
    (a logit, a standardised NLL, ...); its meaning is in `score_kind`.
    """

    status: Status
    p_ai: float | None = None
    score: float | None = None
    score_kind: str | None = None
    reason: str | None = None
    evidence: list[Evidence] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # False for a result that would differ if computed later from the same bytes (a C2PA signature judged
    # against today's date, parsers skipped once a loaded machine spent the wall-clock budget): the result
    # cache must not serve it at a later scan. Not part of the record.
    cacheable: bool = field(default=True, compare=False, repr=False)

    @classmethod
    def unavailable(cls, reason: str) -> "DetectorResult":
        return cls(status="unavailable", reason=reason)

    @classmethod
    def failed(cls, reason: str) -> "DetectorResult":
        return cls(status="error", reason=reason)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "status": self.status,
            "p_ai": _num(self.p_ai),
            "score": _num(self.score),
            "score_kind": self.score_kind,
            "reason": self.reason,
        }
        if self.evidence:
            d["evidence"] = [evidence_to_dict(e) for e in self.evidence]
        d.update(self.extra)
        return d


def evidence_to_dict(e: Evidence) -> dict[str, Any]:
    d = asdict(e)
    d["strength"] = round(float(e.strength), 4)
    return d


@dataclass
class Record:
    file: str
    sha256: str | None = None
    size_bytes: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    verdict: str = "error"
    p_ai: float | None = None
    detectors: dict[str, DetectorResult] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    error: ErrorInfo | None = None
    image_info: dict[str, Any] = field(default_factory=dict)
    # Which fusion produced the verdict: {"kind": "rules"} or {"kind": "model", "name", "path", "sha256"}.
    fusion: dict[str, Any] | None = None
    # (ai, real): the thresholds this file's verdict was judged on (fusion.FusionOutcome.band); None where no
    # fusion judged it. A file fused without a fitted model's bias and band has another band than the run's, which
    # a script could only read from a reason line's words.
    band: tuple[float, float] | None = None
    # The schema the record was written under: a store's record of an earlier version exported today lacks what
    # was added since (a 1.2 record has no band), and said "1.3" beside a null band on a verdict.
    schema: str = SCHEMA_VERSION

    def set_error(self, code: str, message: str) -> "Record":
        self.error = ErrorInfo(code, message)
        self.verdict = "error"
        self.p_ai = None
        return self

    def to_dict(self) -> dict[str, Any]:
        from .report.safe import display_path, path_bytes_b64

        return {
            "schema": self.schema,
            "file": display_path(self.file),
            "file_bytes": path_bytes_b64(self.file),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "verdict": self.verdict,
            "p_ai": _num(self.p_ai),
            "detectors": {k: v.to_dict() for k, v in self.detectors.items()},
            "reasons": list(self.reasons),
            "image": dict(self.image_info),
            "error": None if self.error is None else {"code": self.error.code, "message": self.error.message},
            "fusion": self.fusion,
            # Unrounded: p_ai is written on the side of these exact thresholds (fusion.shown_p), and a fitted one
            # rounded to 6 digits could put p_ai on the other side of the number a script compares it with.
            "band": None if self.band is None else {"ai": float(self.band[0]), "real": float(self.band[1])},
        }


SCHEMA_KINDS = ("record", "meta")


def json_schema(kind: str = "record") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of this version's scan record ("record": `scan -f json|jsonl`, `results
    export`, Record.to_dict()) or of a `meta` report ("meta"), shipped in the package as
    aiidetect/schemas/KIND-SCHEMA_VERSION.schema.json (docs/schema.md, "Validating records")."""
    import json
    from importlib.resources import files

    if kind not in SCHEMA_KINDS:
        raise ValueError(f"no schema of kind {kind!r}; one of {', '.join(SCHEMA_KINDS)}")
    return json.loads(files(__package__).joinpath("schemas", f"{kind}-{SCHEMA_VERSION}.schema.json")
                      .read_text(encoding="utf-8"))


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):  # strict JSON has neither
        return None
    return round(x, 6)
