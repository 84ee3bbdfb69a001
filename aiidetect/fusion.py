"""Detector outputs + provenance evidence -> one P(AI), a verdict and reasons.

Contract used by the pipeline (keep the signature): ``fuse(results, model=None)``
returns a FusionOutcome. `results` maps detector name -> DetectorResult.
The rules (docs/fusion.md), which hold with or without a fitted model:

1. Detectors that are unavailable, failed, or have no opinion drop out.
2. Decisive provenance evidence (signed C2PA AI declaration, generator
   parameters, a watermark match) dominates: the verdict follows it whatever
   the pixel detectors say; decisive evidence pointing both ways -> uncertain.
3. Soft evidence (camera EXIF, editing software, ...) only shifts the odds: its
   summed log-likelihood ratio is capped, and soft evidence alone (no pixel
   detector, nothing decisive) never gives a firm verdict.
4. No information -> p_ai None and verdict "uncertain", never "likely-real".

Without a model, pixel detectors (whose p_ai is calibrated by their heads)
are averaged in logit space -- they look at the same pixels, so their errors
are correlated and summing would double count. A fitted model (``aiidetect
calibrate``) replaces the average by logistic-regression weights over each
detector's recalibrated logit and the soft-evidence sum, and carries the
uncertain band chosen on calibration data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .probability import is_finite_number as _is_finite, logit_float as _logit, sigmoid_float as _sigmoid
from .records import PIXELS_UNREAD, DetectorResult

# Default uncertain band on p_ai; calibrated values come from the fusion model.
DEFAULT_AI_THRESHOLD = 0.9
DEFAULT_REAL_THRESHOLD = 0.1
# Soft evidence may move the log-odds by at most this many nats (e^2 ~ 7.4x).
SOFT_EVIDENCE_CAP = 2.0
# Decisive evidence counts at least this much (p ~ 0.9999), and the rest may
# move the log-odds by at most half of it, so it cannot flip the verdict. Not for
# a decision that rests only on the file's own claims (BASIS_CLAIM: its unsigned metadata, or a C2PA
# manifest no trust list vouches for):
# those count the strongest one's stated strength (never their sum, never more than this).
DECISIVE_FLOOR = 9.2
# The least P(AI) of a file decisive evidence calls ai-generated (the floor, the rest clipped to half of it
# against it; claims alone stop at the band's edge or the floor), and 1 minus it the most of one it calls
# likely-real: past either, a band's edge no longer says where every verdict begins (the legends say so).
DECISIVE_P_LEAST = 1.0 / (1.0 + math.exp(-DECISIVE_FLOOR / 2))
BASIS_CLAIM = "claim"   # provenance.BASIS_CLAIM; fusion does not import the readers
FUSION_DETECTOR = "fusion"
# The model's key for the detectors without_retrained took out of it (their heads changed since it was fitted).
LEFT_OUT = "left_out"
# Why a file is uncertain, as the first reason says it (the table's reason, CSV, --explain, the page's rows),
# read by people who do not know the detectors: each says, in the words of the report's overview, that
# aiidetect does not decide, and what would settle it.
# "no detector had an opinion" and "only soft metadata evidence: it shifts the odds but cannot decide alone"
# left an editor to guess whether the file was checked at all, and what to do about it.
NO_OPINION = ("aiidetect does not decide: no pixel detector judged the image and its metadata holds nothing "
              "that counts; to settle it, scan it with a pixel detector or check it with other sources")
# The same lead for a file whose metadata was not read either (`-d linear` with its weights missing, the metadata
# detector failing): NO_OPINION's "its metadata holds nothing" told the editor it had been checked.
NO_READING = ("aiidetect does not decide: no detector could judge this file; to settle it, scan it with a pixel "
              "detector or check it with other sources")
SOFT_ONLY = ("aiidetect does not decide: only the file's metadata was weighed, and none of it decides on its own "
             "(metadata is easily stripped or forged); to settle it, scan it with a pixel detector or check it "
             "with other sources")
# The same two leads as aiidetect wrote them before (a saved run rendered by `aiidetect report`).
NO_OPINION_WAS = "no detector had an opinion"
SOFT_ONLY_WAS = "only soft metadata evidence: it shifts the odds but cannot decide alone"
# After the detectors' names, in the reasons of a file fused without the model's bias and band (the report
# draws that file's gauge with the band it was judged on).
ASIDE_FOR_FILE = "no answer for this file, so the fusion model's bias and band"


@dataclass
class FusionOutcome:
    p_ai: float | None
    verdict: str
    reasons: list[str] = field(default_factory=list)
    contributions: dict[str, float] = field(default_factory=dict)  # source -> signed log-odds moved (nats)
    # The (ai, real) thresholds the verdict was judged on: the model's, or the rules' where it was set aside.
    band: tuple[float, float] | None = field(default=None, compare=False)
    # The model's detectors with a say that gave this file no answer, so its bias and band were set aside. Counted
    # from here, not from the reasons: an evidence line quotes the file's own metadata, which can hold the note's words.
    aside: tuple[str, ...] = field(default=(), compare=False)


RECORD_DIGITS = 6   # records.Record writes p_ai to this many digits


def shown_p(p: float | None, band: tuple[float, float] | None, digits: int = RECORD_DIGITS) -> float | None:
    """`p` to `digits` decimals on the same side of each threshold of `band` (and of 0.5) as `p` itself.

    Rounded to nearest, a fused 0.8999996 read 0.9 in JSON beside "uncertain" under a 0.9 band (and a
    fitted 0.93456789 threshold with p 0.9345682 read 0.934568 beside "ai-generated" after rounding down
    would not): a script comparing p_ai with the threshold disagreed with the verdict. The nearest value
    that keeps every side is taken; `p` itself where none does (thresholds closer than 10^-digits)."""
    if p is None or not _is_finite(p):
        return p
    r = round(p, digits)
    if band is None:
        return r
    hi, lo = band

    def sides(x: float) -> tuple[bool, bool, bool, bool]:
        return x >= hi, x <= lo, x > 0.5, x < 0.5

    want = sides(p)
    q = 10 ** digits
    # k / 10**digits is the double nearest that decimal, the value round() gives: written again, it stays.
    for c in (r, math.floor(p * q) / q, math.ceil(p * q) / q):
        if sides(c) == want:
            return c
    return p


def shown_p_text(p: float, band: tuple[float, float] | None, digits: int = 3) -> str:
    """`p` as a table or a card prints it: `digits` decimals on the verdict's side of `band` (ai, real) and of
    0.5, as shown_p keeps a record's 6. p_ai 0.899999 under a 0.9 band is uncertain, and rounded to nearest it
    read 0.900 beside the verdict; it reads 0.899. The nearest value where that keeps every side."""
    return f"{shown_p(p, band, digits):.{digits}f}"


def decisive_llr(items: Iterable[Any]) -> float:
    """The signed nats decisive evidence items count for together, before rule 3's floor: their sum, except
    that items resting only on the file's own claims (all of them `basis` "claim", one direction)
    count as the strongest of them, never above DECISIVE_FLOOR. One hand writes them all, so a second claim
    costs a forger nothing more than the first. Fusion and the metadata detector's own P(AI) both count by it:
    `meta` showed 0.999955 (parameters 6.0 + XMP 4.0 summed) beside a fused 0.9975 for the same file."""
    items = list(items)
    if items and all((e.data or {}).get("basis") == BASIS_CLAIM for e in items) \
            and len({e.direction for e in items}) == 1:
        sign = 1.0 if items[0].direction == "ai" else -1.0
        return sign * min(max(abs(e.llr) for e in items), DECISIVE_FLOOR)
    return float(sum(e.llr for e in items))


def _exact_logit(p: float) -> float:
    """log(p / (1 - p)) for 0 < p < 1, unclipped: a band's edge, not a detector's answer."""
    return math.log(p / (1.0 - p))


def _edge_logit(p: float) -> float:
    """A band edge's logit: +inf at 1 and -inf at 0, edges never reached."""
    return math.inf if p >= 1 else -math.inf if p <= 0 else _exact_logit(p)


def _exact_sigmoid(z: float) -> float:
    """1 / (1 + e^-z) without sigmoid_float's clip at +-50 nats: under the clip, logits of -69 and -98 (a
    hand-edited bias of +100 moving a band's edge) both read 1.9e-22, and p equal to the edge was judged on it."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _family(name: str) -> str:
    return name.split(":")[0]


def detector_input(r: DetectorResult) -> float | None:
    """The raw number a fitted calibrator reads: the detector's score when it
    is logit-like, else logit(p_ai)."""
    if r.status != "ok":
        return None
    if r.score is not None and (r.score_kind or "").lower() in ("logit", "log-odds", "logodds"):
        # A NaN or infinite logit is a numerical failure, not certainty: its
        # p_ai was computed from it, so neither is read.
        return float(r.score) if _is_finite(r.score) else None
    if _is_finite(r.p_ai):
        return _logit(r.p_ai)
    return None


def _answered(r: DetectorResult | None) -> bool:
    """A pixel detector's "ok" with a number (finite or not)."""
    return r is not None and r.status == "ok" and not r.evidence and r.p_ai is not None


def _usable(r: DetectorResult) -> bool:
    return _is_finite(r.p_ai) and detector_input(r) is not None


def split_results(results: Mapping[str, DetectorResult]):
    """-> (pixel {name: result}, soft [(name, Evidence)], decisive [(name, Evidence)]).
    A result carrying evidence is an evidence source: its own p_ai summarises
    that evidence and is not counted a second time."""
    pixel, soft, decisive = {}, [], []
    for name, r in results.items():
        if r is None or r.status != "ok":
            continue
        if r.evidence:
            for e in r.evidence:
                if e.direction == "neutral" or not e.strength:
                    continue
                (decisive if e.decisive else soft).append((name, e))
        elif _usable(r):
            pixel[name] = r
    return pixel, soft, decisive


def _broken(results: Mapping[str, DetectorResult]) -> list[str]:
    """Pixel detectors that answered "ok" with a NaN or infinite number: rule 1
    drops them (one NaN made the whole p_ai NaN; an infinite logit in a fitted
    model called the file ai-generated at p 1.0 whatever the others said)."""
    return [f"{name}: non-finite output (p_ai={r.p_ai!r}, score={r.score!r}), ignored"
            for name, r in results.items() if _answered(r) and not _usable(r)]


def normalize_model(model: Mapping[str, Any] | None) -> dict[str, Any]:
    """Accept a fusion head manifest, its ``params`` block, or a plain band
    dict ({"ai_threshold": .., "real_threshold": ..})."""
    if not model:
        return {}
    m = dict(model)
    if m.get("detector") == FUSION_DETECTOR and isinstance(m.get("params"), Mapping):
        params = dict(m["params"])
        thr = m.get("threshold") or {}
        if isinstance(thr, Mapping):
            params.setdefault("ai_threshold", thr.get("ai"))
            params.setdefault("real_threshold", thr.get("real"))
        params.setdefault("name", m.get("name"))
        m = params
    return m


def _number(m: Mapping[str, Any], key: str, lo: float | None = None, hi: float | None = None,
            null_ok: bool = False) -> float | None:
    """The number under `key`, checked; None when absent. fuse reads the band
    as "null = default" but the rest as float(m.get(key, default)), which
    raises on an explicit null."""
    if key not in m or (null_ok and m[key] is None):
        return None
    v = m[key]
    if not _is_finite(v):
        raise ValueError(f"{key} must be a finite number, not {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{key} must lie in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}], not {v!r}")
    return float(v)


def _platt_slope(block: Any) -> float | None:
    from .probability import Calibrator

    try:
        cal = Calibrator.from_dict(block)
    except ValueError:
        return None  # unreadable: fuse drops it per file, with a note
    return float(cal.params["a"]) if cal.method == "platt" else None


def check_model(model: Mapping[str, Any] | None) -> None:
    """Raise ValueError naming the first number `fuse` reads from this model
    that would make nonsense of a verdict. A manifest is a file anyone can
    edit, and fuse reads it per file without checks: an infinite bias calls
    every photo ai-generated, a negative weight turns a detector upside down,
    NaN or an inverted band silently makes a side unreachable. The bounds are
    the ones ``aiidetect calibrate`` fits within (docs/fusion.md), so every
    model it writes passes; of a detector's calibration block only a negative
    slope is refused here: fuse drops a detector whose block it cannot read,
    and says so per file."""
    if not model:
        return
    if not isinstance(model, Mapping):
        raise ValueError(f"a fusion model is a JSON object, not {type(model).__name__}")
    if model.get("detector") == FUSION_DETECTOR:
        from .heads import HEAD_FORMAT_VERSION

        fv = model.get("format_version", HEAD_FORMAT_VERSION)
        if isinstance(fv, bool) or not isinstance(fv, int) or not 1 <= fv <= HEAD_FORMAT_VERSION:
            # A later format may give the same keys another meaning: read as this one, its numbers
            # would decide verdicts they were never fitted for.
            raise ValueError(f"its format_version {fv!r} is not one this aiidetect reads "
                             f"(1 to {HEAD_FORMAT_VERSION}); written by a newer version, or edited")
        if not isinstance(model.get("params"), Mapping):
            raise ValueError("its 'params' must be a JSON object")
        if model.get("threshold") is not None and not isinstance(model["threshold"], Mapping):
            raise ValueError("its 'threshold' must be a JSON object")
    m = normalize_model(model)
    # A missing side takes its default in fuse. A side that crosses 0.5 would
    # call a file the less likely class (and is how an inverted band shows).
    ai = _number(m, "ai_threshold", 0.5, 1.0, null_ok=True)
    real = _number(m, "real_threshold", 0.0, 0.5, null_ok=True)
    if model.get("detector") == FUSION_DETECTOR and not m.get("detectors") and (
            (ai is not None and ai < DEFAULT_AI_THRESHOLD) or (real is not None and real > DEFAULT_REAL_THRESHOLD)):
        # No detector calibrated, so fuse averages the pixel detectors by the rules and this band judges that
        # average; calibrate used to write one fitted on soft evidence alone (ai >= 0.5000001).
        raise ValueError(f"it calibrates no pixel detector, yet its band ({ai} / {real}) is narrower than the "
                         f"default rules' {DEFAULT_AI_THRESHOLD:g} / {DEFAULT_REAL_THRESHOLD:g}: a band fitted "
                         f"without a pixel detector cannot judge their average; recalibrate with one")
    dets = m.get("detectors")
    if dets is not None:
        if not isinstance(dets, Mapping):
            raise ValueError(f"'detectors' must map detector names to their entries, not {type(dets).__name__}")
        for name, d in dets.items():
            if not isinstance(d, Mapping):
                raise ValueError(f"detector {name!r}: its entry must be a JSON object, not {type(d).__name__}")
            try:
                _number(d, "weight", 0.0)
            except ValueError as exc:
                raise ValueError(f"detector {name!r}: {exc}") from None
            a = _platt_slope(d.get("calibration"))
            if a is not None and a < 0:
                raise ValueError(f"detector {name!r}: its calibration has a negative slope, which turns the detector "
                                 f"upside down (calibrate drops a detector that looks inverted)")
            if a == 0 and d.get("weight", 1.0) != 0:
                # Every answer maps to the same logit: a constant that counted as the detector's opinion, so
                # soft evidence beside it gave firm verdicts (calibrate drops a detector of slope 0).
                raise ValueError(f"detector {name!r}: its calibration has slope 0, so its answer would not matter "
                                 f"while it still counted as an opinion")
        if dets and all(d.get("weight", 1.0) == 0 for d in dets.values()):
            # What calibrate wrote when every detector came out inverted or uninformative (it now refuses):
            # no detector has a say, so every file that decisive evidence does not decide is uncertain.
            raise ValueError(f"every detector in it has weight 0 ({', '.join(map(str, dets))}), so no verdict "
                             "could ever be firm; recalibrate")
    _number(m, "evidence_weight", 0.0, 1.0)
    _number(m, "bias")
    # Rule 4 holds with a model: soft evidence moves the odds by at most SOFT_EVIDENCE_CAP, which is
    # what calibrate writes; a larger cap let metadata outweigh the pixel detectors.
    _number(m, "soft_evidence_cap", 0.0, SOFT_EVIDENCE_CAP)


def unmodelled_note(model: Mapping[str, Any] | None, detectors: Iterable[Any]) -> str | None:
    """One line for the run, when pixel detectors that will run are unknown to a fitted model: each
    record said "not in the fusion model, ignored", and a scan whose heads were all renamed or added
    after calibrating gave every file "uncertain" without a word on the run."""
    m = normalize_model(model)
    if not m.get("detectors"):
        return None
    gone = set(left_out(m))  # without_retrained's note already names them, and why
    missing = [d.name for d in detectors if d.name not in gone
               and getattr(d, "needs_pixels", True) and _detector_params(m, d.name) is None]
    if not missing:
        return None
    known = ", ".join(map(str, m["detectors"]))
    return (f"the fusion model {m.get('name') or ''} calibrates {known}, not {', '.join(missing)}: "
            f"{'their answers have' if len(missing) > 1 else 'its answers have'} no say in the verdicts; "
            f"run `aiidetect calibrate` with {'them' if len(missing) > 1 else 'it'} (or --fusion none for the rules)")


def head_digest(detector: Any) -> str | None:
    """The SHA-256 of a detector's head tensors, as its manifest lists them (or, for the ONNX runtime's,
    as its export recorded them); None for a detector without a head (metadata) or an export made
    before exports recorded it."""
    m = getattr(getattr(detector, "head", None), "manifest", None)
    files = m.get("files") if isinstance(m, Mapping) else None
    digest = files.get("head.safetensors") if isinstance(files, Mapping) else None
    if digest is None:
        meta = getattr(detector, "meta", None)
        digest = meta.get("head_sha256") if isinstance(meta, Mapping) else None
    return digest if isinstance(digest, str) else None


def without_retrained(model: Mapping[str, Any] | None, detectors: Iterable[Any]
                      ) -> tuple[Mapping[str, Any] | None, str | None]:
    """(the model to fuse with, a note for the run) when heads were retrained after the model was fitted.

    A model's calibration, weight and band were fitted on each head's scores; a head retrained under
    the same name scores on another scale, and its answers went through the old calibration without a
    word (a random-init probe's T of 1000 applied to a trained probe's logits). A head whose tensors
    differ from those the model recorded (`head_sha256`, written by `calibrate`) is left out of the
    model, as a head unknown to it is; when none of its detectors with a say (weight > 0) is left, the default rules decide
    (the model's band was chosen for detectors no longer there). Models without the record are used
    as they are."""
    m = normalize_model(model)
    dets = m.get("detectors")
    if not isinstance(dets, Mapping) or not dets:
        return model, None
    changed = []
    for d in detectors:
        entry = dets.get(getattr(d, "name", None))
        rec = entry.get("head_sha256") if isinstance(entry, Mapping) else None
        cur = head_digest(d)
        if isinstance(rec, str) and cur is not None and rec != cur:
            changed.append(d.name)
    if not changed:
        return model, None
    kept = {k: v for k, v in dets.items() if k not in changed}
    them = "they were" if len(changed) > 1 else "it was"
    model_name = f"the fusion model {m['name']}" if m.get("name") else "the fusion model"
    what = (f"the head{'s' if len(changed) > 1 else ''} {', '.join(changed)} changed since {model_name} was fitted "
            f"(other tensors than {them} calibrated on)")
    redo = "run `aiidetect calibrate` again"
    # Those left with weight 0 have no say in it: every file was "uncertain", from a model check_model refuses.
    if not any(isinstance(v, Mapping) and _is_finite(w := v.get("weight", 1.0)) and w > 0 for v in kept.values()):
        return None, f"{what}: the default rules decide, not that model; {redo}"
    raw = dict(model or {})
    lost, aside = set_aside(m, changed)
    # `left_out` beside the detectors: fuse's per-file reason and the records' fusion identity say why they had
    # no say (as "not in the fusion model" they read as heads added since, and the identity as the whole model)
    if raw.get("detector") == FUSION_DETECTOR and isinstance(raw.get("params"), Mapping):
        raw["params"] = {**raw["params"], "detectors": kept, LEFT_OUT: changed, **aside}
    else:
        raw.update(detectors=kept, **{LEFT_OUT: changed}, **aside)
    aside_note = (f"; the model's bias and band, fitted with {'them' if len(lost) > 1 else 'it'}, are set aside "
                  f"(bias 0, band {aside['real_threshold']:g} / {aside['ai_threshold']:g}, no narrower than the "
                  f"rules')" if lost else "")
    return raw, (f"{what}: {'their answers have' if len(changed) > 1 else 'its answers have'} no say in the "
                 f"verdicts{aside_note}; {redo}")


def set_aside(model: Mapping[str, Any] | None, gone: Iterable[str]) -> tuple[list[str], dict[str, float]]:
    """(the detectors of `gone` that had a say in the model, the bias and band it is used with without them).

    The bias and the band were fitted on the sum with the left-out detectors' terms in it: a bias that
    offset a head's usual negative logits (+2 against its -2) pushed every file toward AI once that head
    was gone, and the band chosen for 1% of real photos over the whole sum promised nothing for the rest.
    With a detector that had a say left out, the bias is 0 and the band no narrower than the rules'. The
    report of a saved run redraws that band from the records' `left_out`."""
    m = normalize_model(model)
    dets = m.get("detectors") if isinstance(m.get("detectors"), Mapping) else {}
    lost = [n for n in gone if isinstance(d := dets.get(n), Mapping) and _is_finite(w := d.get("weight", 1.0))
            and w > 0]
    if not lost:
        return [], {}
    hi = m.get("ai_threshold")
    lo = m.get("real_threshold")
    return lost, {"bias": 0.0,
                  "ai_threshold": max(float(hi) if _is_finite(hi) else DEFAULT_AI_THRESHOLD, DEFAULT_AI_THRESHOLD),
                  "real_threshold": min(float(lo) if _is_finite(lo) else DEFAULT_REAL_THRESHOLD,
                                        DEFAULT_REAL_THRESHOLD)}


def left_out(model: Mapping[str, Any] | None) -> list[str]:
    """The detectors without_retrained took out of this model (their heads changed since it was fitted)."""
    names = normalize_model(model).get(LEFT_OUT)
    return [str(n) for n in names] if isinstance(names, list) else []


def _detector_params(model: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    dets = model.get("detectors") or {}
    return dets.get(name) or dets.get(_family(name))


def _fmt(x: float) -> str:
    s = f"{x:+.2f}"
    # A sign on nothing reads as a direction: "-0.00 nats" for a detector at 0.4999 or a rest clipped to a sliver.
    return "0.00" if s in ("+0.00", "-0.00") else s


def fuse(results: Mapping[str, DetectorResult], model: Mapping[str, Any] | None = None) -> FusionOutcome:
    m = normalize_model(model)
    hi = float(m.get("ai_threshold") or DEFAULT_AI_THRESHOLD)
    lo = float(m.get("real_threshold") if m.get("real_threshold") is not None else DEFAULT_REAL_THRESHOLD)
    cap = float(m.get("soft_evidence_cap", SOFT_EVIDENCE_CAP))
    pixel, soft, decisive = split_results(results)
    contrib: dict[str, float] = {}
    notes: list[str] = _broken(results)

    # Pixel detectors.
    fitted = bool(m.get("detectors"))
    z_pix = 0.0
    # Pixel detectors with a say: a fitted weight of 0 is the model's word that the detector carried no
    # information on its calibration data; counting it as an opinion let soft evidence alone decide.
    said: set[str] = set()
    # (its own logit or strength, why it moved less, what a later line scaled alike says)
    averaged: dict[str, tuple[float, str, str]] = {}
    if pixel:
        if fitted:
            from .probability import Calibrator

            for name, r in pixel.items():
                dp = _detector_params(m, name)
                if dp is None:
                    notes.append(f"{name}: its head changed since the fusion model was fitted, ignored"
                                 if name in left_out(m) else f"{name}: not in the fusion model, ignored")
                    continue
                try:
                    cal = Calibrator.from_dict(dp.get("calibration"))
                except (ValueError, KeyError, TypeError) as exc:  # a hand-edited model must not stop the scan
                    notes.append(f"{name}: calibration in the fusion model unreadable ({exc}), ignored")
                    continue
                w = float(dp.get("weight", 1.0))
                c = w * float(cal.logit(detector_input(r)))
                if not math.isfinite(c):
                    # Finite but huge numbers in a hand-edited model (T = 1e-320, weight 1e308) overflow:
                    # +inf and -inf gave p_ai NaN, written as null with "uncertain", like no opinion at all.
                    notes.append(f"{name}: its weighted logit in the fusion model is not finite ({c!r}), ignored")
                    continue
                contrib[name] = c
                z_pix += c
                if w > 0:
                    said.add(name)
        else:
            zs = {name: _logit(r.p_ai) for name, r in pixel.items()}
            for name, z in zs.items():
                contrib[name] = z / len(zs)
                if len(zs) > 1:  # "p_ai=0.01 (-2.30 nats)" read as a miscalculation of logit(0.01) = -4.60
                    averaged[name] = (z, f"the {len(zs)} pixel detectors' logits are averaged, not summed",
                                      "averaged as above")
            z_pix = sum(contrib.values())
            said = set(zs)
    n_pixel = len(said)
    aside_note, lost = "", []
    if fitted and n_pixel:
        # The bias and band were fitted on the sum with every detector's term in it: a file one of them did not
        # answer (unavailable, an error, a non-finite output, not run) is judged without them, as a head left out
        # for the whole run is (set_aside). A bias of +2 that offset a head's usual -2 called a file the other
        # head put at 0.6 ai-generated at 0.917 under a 0.8 band when the first one errored.
        have = {k for n in said for k in (n, _family(n))}
        lost, aside = set_aside(m, [k for k in (m.get("detectors") or {}) if k not in have])
        if lost:
            model_band, model_bias = (hi, lo), float(m.get("bias", 0.0))
            hi, lo = aside["ai_threshold"], aside["real_threshold"]
            aside_what = f"{', '.join(lost)}: {ASIDE_FOR_FILE}, fitted with {'them' if len(lost) > 1 else 'it'}, are set aside"
            aside_note = f"{aside_what} (bias 0, band {lo:g} / {hi:g}, no narrower than the rules')"

    # Soft evidence: capped sum, optionally re-weighted by the model.
    soft_raw = sum(e.llr for _, e in soft)
    soft_total = max(-cap, min(cap, soft_raw))
    w_soft = float(m.get("evidence_weight", 1.0)) if fitted else 1.0
    # Items that cancel exactly (sum 0) are under the cap: each moves its own strength, not 0.
    soft_scale = (soft_total / soft_raw if soft_raw else 1.0) * w_soft
    # An item's own strength (what `meta`, the report's evidence list and the JSON say) is not what it moved
    # when the cap or a fitted evidence weight scaled it: "+1.88 nats" beside "strength 3.00" needs its why.
    scaled: dict[str, tuple[float, str, str]] = dict(averaged)
    if soft and abs(soft_scale - 1.0) > 1e-9:
        why = []
        if abs(soft_raw) > cap:
            why.append(f"soft evidence counts at most {cap:g} nats in all, and it summed {_fmt(soft_raw)}")
        if w_soft != 1.0:
            why.append(f"the fusion model weighs soft evidence {w_soft:.2f}")
        for name, e in soft:
            key = f"{name}:{e.id}"
            scaled[key] = (scaled.get(key, (0.0,))[0] + e.llr, "; ".join(why), "scaled as above")
    for name, e in soft:
        key = f"{name}:{e.id}"
        contrib[key] = contrib.get(key, 0.0) + e.llr * soft_scale
    # The bias was fitted beside the pixel detectors' terms (a temperature keeps a head's offset, and the bias
    # absorbs it): without one of them answering (`-d metadata` under a fitted model, or heads unavailable) it
    # offsets nothing, and a bias of +2 showed a file with only camera EXIF at P(AI) 0.69.
    bias = float(m.get("bias", 0.0)) if fitted and n_pixel and not lost else 0.0
    if bias:
        contrib["bias"] = bias
    z = z_pix + soft_total * w_soft + bias

    if decisive:
        z_dec = sum(e.llr for _, e in decisive)
        dirs = {e.direction for _, e in decisive}
        for name, e in decisive:
            key = f"{name}:{e.id}"
            contrib[key] = contrib.get(key, 0.0) + e.llr
        if len(dirs) > 1:
            p = _sigmoid(z + z_dec)
            verdict = "uncertain"
            notes.append("decisive evidence points both ways")
        else:
            # (what each line moved is scaled below, so that the lines add up to the logit of p_ai)
            sign = 1.0 if "ai" in dirs else -1.0
            # The floor stands for what a signature or the pixels establish. A decision resting only on the
            # file's own unsigned word (parameters 6.0, XMP trainedAlgorithmicMedia 4.0) counts what its item
            # says it weighs: raised to 9.2 it showed P(AI) 1.000 beside the metadata detector's 0.931 for the
            # same evidence. The rest then stops where p would leave the verdict's side of the band.
            claims_only = all((e.data or {}).get("basis") == BASIS_CLAIM for _, e in decisive)
            mag = max(abs(z_dec), DECISIVE_FLOOR)
            against = mag / 2
            if mag > abs(z_dec):
                why_dec = f"decisive evidence counts at least {DECISIVE_FLOOR:g} nats"
            if claims_only:
                # Claims the file makes about itself are written by one hand: a second one costs a forger no more
                # than the first, so together they count as the strongest of them, never their sum (parameters
                # 6.0 + XMP 4.0 read 10 nats, above a valid signature's 9.2), and never above the signed floor.
                # At least the band's edge (a fitted ai threshold of 0.99 is above a 4-nat claim's 0.982), so p
                # is never on the other side of the band from the verdict it decides.
                strongest = abs(decisive_llr(e for _, e in decisive))   # never above the floor
                edge = min(_logit(hi) if sign > 0 else -_logit(lo), DECISIVE_FLOOR)
                mag = min(max(strongest, edge), DECISIVE_FLOOR)
                against = min(mag / 2, max(0.0, mag - edge))
                whys = []
                if mag < abs(z_dec) and len(decisive) > 1:
                    whys.append(f"the file's own claims count as the strongest of them, not their sum "
                                f"({_fmt(z_dec)}): one hand writes them all")
                if mag < max(abs(e.llr) for _, e in decisive):
                    whys.append(f"unsigned claims count at most the {DECISIVE_FLOOR:g} nats of signed evidence")
                if mag > strongest:
                    whys.append(f"a claim counts at least the log-odds of the band's {'ai' if sign > 0 else 'real'} "
                                f"threshold ({hi if sign > 0 else lo:g})")
                why_dec = "; ".join(whys)
            rest = max(-against, min(mag / 2, z)) if sign > 0 else max(-mag / 2, min(against, z))
            if claims_only and len(decisive) > 1:
                # The strongest claim moves what the claims count for; the others are counted in it, and say so.
                # Shared out in proportion, "+3.60 of its +6.00" read as if the parameters had been discounted.
                top_name, top = max(decisive, key=lambda ne: abs(ne[1].llr))
                top_key = f"{top_name}:{top.id}"
                for name, e in decisive:
                    key = f"{name}:{e.id}"
                    if key == top_key:
                        continue
                    contrib[key] = 0.0
                    scaled[key] = (e.llr, f"counted in {top_key}: the file's own claims count as the "
                                          f"strongest of them, not their sum (one hand writes them all)",
                                   "counted in it as above")
                contrib[top_key] = sign * mag
                why_top = "; ".join(w for w in whys if not w.startswith("the file's own claims count as"))
                if abs(mag - abs(top.llr)) > 1e-12:
                    scaled[top_key] = (top.llr, why_top, "scaled as above")
            elif abs(mag - abs(z_dec)) > 1e-12:
                for name, e in decisive:
                    key = f"{name}:{e.id}"
                    own = scaled.get(key, (0.0,))[0] + e.llr
                    contrib[key] = own * mag / abs(z_dec)
                    scaled[key] = (own, why_dec, "scaled as above")
            if rest != z:
                bound = against if (z < 0) == (sign > 0) else mag / 2
                why_rest = (f"beside decisive evidence the rest counts at most {bound:.2f} nats "
                            f"{'against' if (z < 0) == (sign > 0) else 'toward'} its side, and it summed {_fmt(z)}")
                dec_keys = {f"{n}:{e.id}" for n, e in decisive}
                for key in [k for k in contrib if k not in dec_keys]:
                    own = scaled[key][0] if key in scaled else contrib[key]
                    prior = scaled[key][1] if key in scaled else ""
                    contrib[key] = contrib[key] * rest / z
                    scaled[key] = (own, f"{prior}; {why_rest}" if prior else why_rest, "clipped as above")
            p = _sigmoid(sign * mag + rest)
            if claims_only and edge < DECISIVE_FLOOR:
                # sigmoid(logit(hi)) comes back one float under hi for about one fitted threshold in six: a
                # script reading p_ai >= ai_threshold saw an ai-generated verdict below its band. (A band
                # beyond the floor, 1.0 where real photos reached it, is not met: a claim is not raised to 1.)
                p = max(p, hi) if sign > 0 else min(p, lo)
            verdict = "ai-generated" if sign > 0 else "likely-real"
            notes.append("decisive provenance evidence decides the verdict" + _basis(decisive))
        # After what decided: the one-line views lead with the first note, and "b: no answer for this file"
        # there hid "resting on the file's own unsigned metadata (not verified ...)" on every row of a run
        # with one of the model's heads not run.
        notes += [aside_note] if aside_note else []
        return FusionOutcome(p, verdict, _reasons(contrib, results, decisive, notes, scaled), contrib, (hi, lo),
                             tuple(lost))

    z_band = None
    if aside_note and n_pixel:
        # Missing evidence must not make the tool more certain than it would have been with the model: a = 0.05 with
        # b failed read likely-real under the rules' 0.1, where the model with its +2 bias put the same answers at
        # 0.28, uncertain under its 0.2. The band is widened to where the model, bias and all, would decide too, so
        # the verdict is firm only where both agree and p_ai (without the bias) stays on the side its band shows.
        # The edges are compared in logit space: a hand-edited bias of +100 put the real edge at -98.6 nats and a
        # at 1e-6 (weight 5) at -69, and both saturated to the same float, so the file read likely-real while the
        # note said the model reads it ai-generated. calibrate fits the bias unpenalised, so no bound on it is
        # one calibrate keeps; the comparison is made where nothing saturates instead.
        (m_hi, m_lo), z_m = model_band, z + model_bias
        zm_hi, zm_lo = _edge_logit(m_hi), _edge_logit(m_lo)
        z_rules = (_edge_logit(hi), _edge_logit(lo))
        z_hi = max(z_rules[0], zm_hi - model_bias)
        z_lo = min(z_rules[1], zm_lo - model_bias)
        # An edge the model did not move stays the rules' own float: sigmoid(logit(0.9)) is 0.8999999999999999.
        w_lo = lo if z_lo == z_rules[1] else _exact_sigmoid(z_lo)
        w_hi = hi if z_hi == z_rules[0] else _exact_sigmoid(z_hi)
        if (z_hi, z_lo) != z_rules:
            pm = _sigmoid(z_m)
            m_verdict = "ai-generated" if z_m >= zm_hi and z_m > 0 else "likely-real" if z_m <= zm_lo and z_m < 0 \
                else "uncertain"
            hi, lo = w_hi, w_lo
            z_band = (z_hi, z_lo)
            aside_note = (f"{aside_what} (bias 0, band {lo:g} / {hi:g}: no narrower than the rules', nor than the "
                          f"model's own band with its bias would be on this file's answers, P(AI) {pm:.3f}, "
                          f"{m_verdict} under {m_lo:g} / {m_hi:g}: a missing answer never makes a verdict firmer)")
    notes += [aside_note] if aside_note else []
    mute = [k for k in contrib if k in pixel and k not in said]
    if mute:
        notes.append(f"{', '.join(mute)}: weight 0 in the fusion model (no information on its calibration data), "
                     "no say in the verdict")
    if n_pixel == 0 and not soft:
        # An evidence source that answered: "ok" without a pixel detector's number (the metadata detector, with
        # or without items).
        why = NO_OPINION if any(r is not None and r.status == "ok" and not _answered(r)
                                for r in results.values()) else NO_READING
        gone = [f"{n} ({r.status}: {r.reason})" for n, r in results.items() if r is not None and r.status != "ok"]
        if gone:
            # In the page's words ("1 detector could not run"): "unavailable: linear (unavailable: ...)" said it twice.
            why += "; could not run: " + ", ".join(gone)
        # A file that contradicts itself says so here too: with nothing weighed (a stripped JPEG's no-camera
        # and standard-table notes weigh 0), a tampered capture manifest's conflict note was left out.
        shown = _evidence_lines(results, _SHOWN_NEUTRAL)
        return FusionOutcome(None, "uncertain", _with_unread_c2pa([why] + shown + notes, results), {}, (hi, lo))

    p = _exact_sigmoid(z)
    if n_pixel == 0:
        verdict = "uncertain"
        notes.append(SOFT_ONLY)
    elif z_band is not None:
        # Judged on the logits (see above): past ~37 nats every p and edge read 1.0 in a double.
        verdict = "ai-generated" if z >= z_band[0] and z > 0 else "likely-real" if z <= z_band[1] and z < 0 \
            else "uncertain"
        # A logit exactly on an edge the model left alone (a at 0.9 under the rules' 0.9) comes back through the
        # sigmoid one float inside the band: 0.8999999999999999 beside ai-generated, written 0.899999.
        p = max(p, hi) if verdict == "ai-generated" else min(p, lo) if verdict == "likely-real" else p
    else:
        # A coin flip is never a firm verdict, whatever band a hand-edited model sets (0.5 passes its check,
        # and p_ai 0.5 was called ai-generated): calibrate keeps both sides strictly off 0.5 for this. An edge
        # at 1 or 0 is never reached: only a logit past ~37 nats saturates p to it, and a set-aside model of
        # ai threshold 1 that never calls a file ai-generated called one at a +70-nat logit.
        verdict = "ai-generated" if p >= hi and p > 0.5 and hi < 1 else \
            "likely-real" if p <= lo and p < 0.5 and lo > 0 else "uncertain"
    if verdict == "uncertain" and n_pixel:
        # Where p and an edge saturate to one double (1.0), p_ai is kept a float inside the band that
        # judged it, as a record's digits are (shown_p): 1 - 1e-16 for a logit under an edge at 60 nats.
        # (Only there: p 0.5 under a band of 0.5 is uncertain as a coin flip, and stays 0.5.)
        if p >= hi and (hi >= 1 or z_band is not None):
            p = math.nextafter(hi, 0.0)
        elif p <= lo and (lo <= 0 or z_band is not None):
            p = math.nextafter(lo, 1.0)
    return FusionOutcome(p, verdict, _reasons(contrib, results, decisive, notes, scaled), contrib, (hi, lo),
                         tuple(lost))


def without_pixels(results: Mapping[str, DetectorResult], model: Mapping[str, Any] | None = None,
                   why: str = "") -> FusionOutcome | None:
    """The verdict of a file whose pixels could not be read (records.PIXEL_FAILURES), or None: it stays an
    error. Only the evidence that was read has a say (the metadata: no pixel detector ran, so which ones
    were asked for changes nothing), fused by rule 2 as on any file, and only when it decides for AI: a
    decisive item toward real (or items both ways) leaves the file an error, since soft evidence and a
    claim of capture must not call a broken file likely-real. The decisive items are the ones `split_results`
    counts for every verdict, those that make `aiidetect meta` exit 1."""
    read = {n: r for n, r in results.items() if r is not None and r.status == "ok" and r.evidence}
    _, _, decisive = split_results(read)
    if not decisive or any(e.direction != "ai" for _, e in decisive):
        return None
    out = fuse(read, model)
    if out.verdict != "ai-generated":
        return None
    note = PIXELS_UNREAD + (f" ({why})" if why else "") + "; the metadata alone decides"
    return FusionOutcome(out.p_ai, out.verdict, [note] + out.reasons, out.contributions, out.band)


# How each kind of decisive evidence was established (Evidence.data["basis"], set by the provenance
# readers). A forged declaration in a real photo decides the verdict as a genuine one would (rule 3),
# so the reason must say when nothing but the file's own word stands behind it.
_BASIS_WORDS = {
    "claim": "the file's own unsigned metadata (not verified: any tool can write it into any image)",
    "signed": "a C2PA manifest with a valid signature and content hash, from a signer a trust list vouches for",
    "pixels": "a pattern measured in the pixels (its public encoder can put it into any image)",
}


# A C2PA manifest intact since signing, by a signer nothing vouches for: every signer, unless the user gave a trust
# list (--c2pa-trust) whose anchors the signer's certificate chains to. A self-made certificate signs as validly, so
# it counts as a claim (basis "claim"), and the reason says why a signature counts no more than that. It read "resting
# on ... a valid signature" at the signed floor, P(AI) 0.99 against a pixel detector sure the photo was real, where a
# pasted XMP declaration stops at 0.90.
_UNTRUSTED_SIGNATURE_WORDS = ("a C2PA manifest whose signature and content hash check out, but whose signer no trust "
                              "list vouches for (anyone can sign with a self-made certificate), so it counts as the "
                              "file's own claim")


def _basis(decisive) -> str:
    def words(e, b):
        d = e.data or {}
        return _UNTRUSTED_SIGNATURE_WORDS if b == BASIS_CLAIM and d.get("status") == "valid" else _BASIS_WORDS[b]

    parts = list(dict.fromkeys(f"{e.id}, {words(e, b)}" for _, e in decisive
                               if (b := (e.data or {}).get("basis")) in _BASIS_WORDS))
    return ", resting on " + "; ".join(parts) if parts else ""


_SHOWN_NEUTRAL = {"metadata.conflict"}
# Neutral notes on what the judged pixels are, listed after the lines that moved the verdict: a JPEG saved by
# software (libjpeg's standard tables, a messenger's or a web tool's copy) is judged as that copy, which an
# editor weighing a pixel detector's number must know; it does not lead a one-line view as a conflict does.
_SHOWN_AFTER = {"structure.jpeg-tables"}
# A manifest store refused (over the size cap, a walk that stopped) or unreadable may hold a valid AI declaration:
# shown in the evidence and errors only, a newsroom reader of the verdict never learnt it was there. It weighs
# nothing (what it says is unknown), but its line follows the reason the verdict leads with.
C2PA_UNREAD_ID = "c2pa.unreadable"
C2PA_UNREAD = "this file carries Content Credentials (a C2PA manifest) that could not be read"
C2PA_UNREAD_MAY = "they may declare how it was made; the verdict does not weigh them"


def c2pa_unread_why(detail: str) -> str:
    """Why the store was not read, from its evidence item's detail, without the item's own lead-in."""
    for lead in ("C2PA data present but unreadable: ", "C2PA data present but "):
        if detail.startswith(lead):
            return detail[len(lead):]
    return detail


def _evidence_lines(results: Mapping[str, DetectorResult], ids: set[str], neutral_only: bool = False) -> list[str]:
    """A reason line ("metadata:ID: detail") for each evidence item of a detector that ran whose id is in `ids`.
    neutral_only: not the weighed item of the same id (structure.jpeg-tables toward real, custom tables)."""
    return [f"{name}:{e.id}: {e.detail}" for name, r in results.items() if r is not None and r.status == "ok"
            for e in r.evidence if e.id in ids and (not neutral_only or e.direction == "neutral")]


def _unread_c2pa_lines(results: Mapping[str, DetectorResult]) -> list[str]:
    return list(dict.fromkeys(f"{name}:{e.id}: {C2PA_UNREAD} ({c2pa_unread_why(e.detail)}); {C2PA_UNREAD_MAY}"
                              for name, r in results.items() if r is not None and r.status == "ok"
                              for e in r.evidence if e.id == C2PA_UNREAD_ID))


def _with_unread_c2pa(reasons: list[str], results: Mapping[str, DetectorResult]) -> list[str]:
    """`reasons` with a line for each manifest store that could not be read, after the one they lead with."""
    extra = _unread_c2pa_lines(results)
    return reasons[:1] + extra + reasons[1:] if extra else reasons


def _reasons(contrib: Mapping[str, float], results: Mapping[str, DetectorResult], decisive, notes,
             scaled: Mapping[str, tuple[float, str, str]] | None = None) -> list[str]:
    """One line per source, strongest first: what it said and how far it moved
    the log-odds (nats; + towards AI)."""
    details: dict[str, str] = {}
    for name, r in results.items():
        if r is None or r.status != "ok":
            continue
        for e in r.evidence:
            # A copy counted once (neutral, same id) must not put its words on the weighed item's line.
            if e.llr or f"{name}:{e.id}" not in details:
                details[f"{name}:{e.id}"] = e.detail
        if r.p_ai is not None and not r.evidence:
            details[name] = f"p_ai={r.p_ai:.2f}"
            if r.score is not None and r.score_kind:
                details[name] += f", {r.score_kind}={r.score:.2f}"  # what a fitted calibration reads
    # Neutral, so it moves nothing; but a verdict read without it hides that the file contradicts itself.
    lines = _evidence_lines(results, _SHOWN_NEUTRAL)
    said_why: set[str] = set()
    for key, c in sorted(contrib.items(), key=lambda kv: -abs(kv[1])):
        if key == "bias":
            # Without its line the others did not add up to p_ai under a fitted model.
            own = (scaled or {}).get(key)
            lines.append(f"bias: the fusion model's fitted offset ({_fmt(c)} nats"
                         + (f" of its {_fmt(own[0])}, {own[2]}" if own and own[1] in said_why else
                            f" of its {_fmt(own[0])}: {own[1]}" if own and own[1] else "") + ")")
            if own and own[1]:
                said_why.add(own[1])
            continue
        d = details.get(key, "")
        mark = " [decisive]" if any(f"{n}:{e.id}" == key for n, e in decisive) else ""
        own = (scaled or {}).get(key)
        moved = f"{_fmt(c)} nats"
        if own and own[1]:
            # "as above" names its kind: under the cap's line, a bare "scaled as above" read as the cap's doing.
            # "0.00 nats of its 0.00" for a detector at 0.4999 said nothing the first number did not
            moved += (f" of its {_fmt(own[0])}" if _fmt(own[0]) != _fmt(c) else "") + (
                f", {own[2]}" if own[1] in said_why else f": {own[1]}")
            said_why.add(own[1])
        lines.append(f"{key}: {d} ({moved}){mark}".replace(":  (", ": ("))
    lines += _evidence_lines(results, _SHOWN_AFTER, neutral_only=True)
    return _with_unread_c2pa(notes + lines, results)


def load_fusion_model(dirs: Iterable[str | Path] | None = None, name: str | None = None,
                      notes: list[str] | None = None) -> dict[str, Any] | None:
    """The first fusion artifact (a head folder whose manifest says detector
    "fusion") in the weights search path, as its manifest; None if there is none.
    ValueError when that manifest fails :func:`check_model`, or when none is
    readable but a manifest that cannot be parsed says it is one: the caller
    decides whether to stop or fall back to the rules, never this function
    by skipping to another model or to none. Pass a list as `notes` to get a
    line for each other fusion model found and not used."""
    import re

    from .heads import MANIFEST, find_heads, pin_problem, weights_dirs

    broken: list[tuple[Path, str]] = []
    found = [(path, manifest) for path, manifest in
             find_heads(weights_dirs(list(dirs or [])), detector=FUSION_DETECTOR, unreadable=broken)
             if name is None or manifest.get("name") == name]
    if found:
        path, manifest = found[0]
        if notes is not None:
            # Calibrating under a second --name (docs/evaluation.md does, per benchmark) left every scan on
            # whichever folder sorts first, the new model unused, and only the summary line naming it.
            notes.extend(f"fusion model {other} is not used: {path} is found first (one fusion model decides "
                         f"the verdicts; --fusion PATH chooses another)" for other, _ in found[1:])
        if (pinned := pin_problem(path, manifest)) is not None:  # aiidetect ships no fusion model
            raise ValueError(f"fusion model {pinned}")
        try:
            check_model(manifest)
        except ValueError as exc:
            raise ValueError(f"fusion model {path}: {exc}") from None
        return {**manifest, "path": str(path)}
    # A fusion model with a typo in its JSON was skipped like any unreadable
    # head, and scans went on under the rules without a word. Its text still
    # says what it is.
    for path, why in broken:
        try:
            with open(path / MANIFEST, "rb") as f:
                head = f.read(1 << 20)
        except OSError:
            continue
        if re.search(rb'"detector"\s*:\s*"fusion"', head):
            raise ValueError(why)
    return None


def fusion_identity(model: Mapping[str, Any] | None) -> dict[str, Any]:
    """What produced a verdict, for every record and the summary line: the default
    rules, or a fitted model named by path and the SHA-256 of its manifest (the
    manifest holds the fitted parameters, so the hash pins them)."""
    if not model:
        return {"kind": "rules"}
    path = model.get("path")
    digest = None
    if path:
        from .hashing import sha256_file
        from .heads import MANIFEST

        try:
            # The shared helper: read_bytes() waited forever on a FIFO put there and read a huge file whole.
            digest = sha256_file(Path(path) / MANIFEST)
        except OSError:
            digest = None
    gone = left_out(model)  # the manifest's sha256 pins the model whole: say what of it had no say
    return {"kind": "model", "name": model.get("name"), "path": path, "sha256": digest,
            **({LEFT_OUT: gone} if gone else {})}
