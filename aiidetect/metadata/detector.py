"""The `metadata` detector: provenance evidence, no model weights.

p_ai = sigmoid(sum of evidence log-likelihood ratios, decisive items counted as
fusion counts them: fusion.decisive_llr), with a neutral prior (0 nats); None
when no item carries an opinion. score is that LLR.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..detectors.base import Detector, RunContext
from ..probability import sigmoid_float
from ..records import METADATA_TIMEOUT, DetectorResult

FAMILY = "metadata"


class MetadataDetector(Detector):
    family = FAMILY
    needs_pixels = False
    per_file = True
    reads_bytes = True

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(FAMILY)
        self.options = dict(options or {})
        # The watermark check reads the full-resolution pixels: the scan hands it the decoded image.
        self.reads_image = self.options.get("watermark", "auto") != "never"

    def predict(self, samples: Sequence[Any], features: Sequence[dict[str, Any]] = ()) -> list[DetectorResult]:
        return [self.predict_one(s) for s in samples]

    def predict_one(self, sample) -> DetectorResult:
        data = getattr(sample, "data", None)
        if not data:
            return DetectorResult.unavailable("file bytes not available to the metadata detector")
        rec = getattr(sample, "record", None)
        try:
            rep = provenance(data, getattr(sample, "path", ""), self.options, image=getattr(sample, "image", None),
                             info=getattr(sample, "info", None) or {}, layout=getattr(sample, "layout", None),
                             refused=rec.error.code if rec is not None and rec.error is not None else None)
        except Exception as exc:  # noqa: BLE001 - analyze already catches; belt and braces for one file
            return DetectorResult.failed(f"metadata: {type(exc).__name__}: {exc}")
        res = result_from_evidence(rep.evidence, extra={"facts": rep.facts} if rep.facts else {},
                                   errors=rep.errors)
        # Two things make the result depend on when it was computed, not on the bytes alone. The C2PA reader
        # judges a signing certificate's validity against the clock of the scan: a manifest "valid" today may
        # have an expired certificate at the next scan, whose fresh result says so and weighs its capture claim
        # a quarter as much. And the per-file time budget, spent on a loaded machine, skips the parsers after
        # it (a signed manifest, generator parameters): served from the cache, that one slow scan's result
        # stood at every later one.
        res.cacheable = "c2pa" not in rep.facts and not any(e.id == METADATA_TIMEOUT for e in rep.evidence)
        return res

    def warm_up(self) -> None:
        from ..provenance import warm_up

        warm_up(c2pa=bool(self.options.get("c2pa", True)))

    def shown_options(self) -> dict[str, Any]:
        """The options as a summary, a cache key and a --db run name them: a trust list by its identity (sha256,
        anchors), not its certificates."""
        trust = self.options.get("c2pa_trust")
        if not isinstance(trust, dict):
            return dict(self.options)
        return {**self.options, "c2pa_trust": {k: v for k, v in trust.items() if k != "pem"}}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "options": self.shown_options()}

    def cache_identity(self) -> dict[str, Any]:
        # The parsers' versions matter as much as ours: a newer exifread or c2pa may read more. The versions this
        # process runs, not those installed since underneath a long-lived host (extras.loaded_version). Pillow's,
        # pillow-heif's and numpy's are the result cache's (decoder_versions, read once with the modules loaded):
        # read here before the first decode had imported them, they were the installed metadata's, and then the
        # modules' in a host's next scan, another key and --db run wherever the two differ (Pillow-SIMD names no
        # "pillow" distribution; a --user install over the system's).
        from ..extras import DECODERS, METADATA_PARSERS, decoder_versions, running_versions

        decoders = decoder_versions()
        libs = {**running_versions(METADATA_PARSERS), **{d: decoders[d] for d in DECODERS}}
        # The trust list decides whether a signer is vouched for, so a verdict: its identity is in the options.
        return {"family": self.family, "options": self.shown_options(), "libs": libs}

    def parsers(self) -> tuple[str, ...]:
        """The parsers (extras.METADATA_PARSERS) whose versions can change this detector's results here: c2pa-python
        only when the C2PA manifest is read (the c2pa option)."""
        from ..extras import METADATA_PARSERS

        return tuple(p for p in METADATA_PARSERS if p != "c2pa-python" or self.options.get("c2pa", True))


def provenance(data: bytes, path: str, options: dict[str, Any], image=None, info: dict | None = None,
               refused: str | None = None, layout=None):
    """provenance.analyze under the rule `scan` and `meta` share: pixels the decoder refused (`refused`, its
    error code: over --max-pixels, truncated, corrupt) are not decoded a second time for the watermark check.
    Such a file has no watermark evidence, which keeps its verdict on what was read (docs/schema.md)."""
    from ..provenance import analyze

    skip = refused is not None and options.get("watermark", "auto") != "never"
    rep = analyze(data, path, image=image, info=info or {},
                  options={**options, "watermark": "never"} if skip else options, layout=layout)
    if skip:
        rep.facts["watermark"] = {"checked": False, "reason": f"the pixels could not be decoded ({refused})"}
    return rep


def file_provenance(data: bytes, path: str, options: dict[str, Any], limits=None):
    """`aiidetect meta`'s report of one file's bytes: when the watermark check would read the pixels, they
    are decoded as `scan` decodes them (the same checks, --max-pixels), and a refusal is `provenance`'s
    `refused`, so `meta` finds no watermark where `scan` would say `error`. Other files decode nothing."""
    from ..decode import DecodeFailure, decode_bytes, open_image, sniff_format
    from ..provenance import watermark_reads_pixels
    from ..structures import heif_layout_read

    image = info = refused = size = layout = None
    mode = options.get("watermark", "auto")
    if mode != "never":  # --watermark never reads no pixels: no header to open for it
        if sniff_format(data) in ("HEIF", "AVIF"):   # its item tables read once, for the header and the decode
            layout = heif_layout_read(data)
        try:
            with open_image(data, layout=layout) as im:   # the header's size: what the check decides on
                size = im.size
            # A closed image may still hold the bytes it was opened from (a TIFF's copy without its oversize
            # tags, tiffguard.without_oversize): not while the metadata is read.
            del im
        except Exception:  # noqa: BLE001 - a header Pillow cannot open: the check reads no pixels either
            pass
    if size and watermark_reads_pixels(mode, *size):
        try:
            image, info = decode_bytes(data, limits, layout=layout)
        except DecodeFailure as exc:
            refused = exc.code
    return provenance(data, path, options, image=image, info=info, refused=refused, layout=layout)


def result_from_evidence(evidence, extra: dict | None = None, errors: list[str] | None = None) -> DetectorResult:
    from ..fusion import decisive_llr

    opinions = [e for e in evidence if e.llr != 0.0]
    # Decisive items by fusion's rule (unsigned claims count as the strongest, not their sum), so that `meta`
    # and the detectors table do not read 0.999955 beside a fused 0.9975 for metadata-only evidence.
    llr = sum(e.llr for e in opinions if not e.decisive) + decisive_llr(e for e in opinions if e.decisive)
    p = None if not opinions else sigmoid_float(llr)
    ex = dict(extra or {})
    if errors:
        ex["errors"] = list(errors[:20])
    return DetectorResult(status="ok", p_ai=p, score=llr if opinions else None, score_kind="llr",
                          reason=None if opinions else "no provenance evidence with an opinion",
                          evidence=list(evidence), extra=ex)


def create(ctx: RunContext) -> list[Detector]:
    opts = ctx.options or {}
    trust = {"c2pa_trust": opts["c2pa_trust"]} if opts.get("c2pa_trust") else {}
    return [MetadataDetector({"watermark": opts.get("watermark", "auto"), "c2pa": opts.get("c2pa", True), **trust})]
