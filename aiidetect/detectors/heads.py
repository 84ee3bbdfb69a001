"""The one head builder every head family's ``create`` calls: find its heads
in the weights folders, build the run's backbone, load each head, check the
backbone fingerprint, and make the family's detector (timm's
build_model_with_cfg, for trained heads).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from .base import Detector, DetectorUnavailable, RunContext, UnavailableDetector


class HeadsUnavailable(DetectorUnavailable):
    """No head of a family could be made. The message joins every head's
    reason; ``rows`` holds one UnavailableDetector per head, which
    create_detectors reports in place of a single family row."""

    def __init__(self, message: str, rows: list[Detector]):
        super().__init__(message)
        self.rows = rows


def build_heads(ctx: RunContext, family: str, make: Callable[[Any, Any], Detector], none_found: str
                ) -> list[Detector]:
    """One detector per ``family`` head, made by ``make(head, backbone)``.

    Failure policy, the same for every family:

    - no head of the family in ``ctx.weights_dirs`` (after the optional name
      filter ``ctx.options["<family>_heads"]``): DetectorUnavailable with
      ``none_found`` (``{where}`` becomes the folders searched), reported as one
      row named after the family;
    - the run's backbone cannot be built: DetectorUnavailable with the
      backbone's remedy and the names of the heads not run, again one row, so
      the user is told once rather than once per head;
    - a head that cannot be loaded, was trained on another backbone (or names
      none), or that ``make`` rejects (any exception) becomes an UnavailableDetector named
      ``<family>:<head>`` with the reason, in the order the heads were found;
      the other heads run;
    - when no head could be made at all, HeadsUnavailable (a
      DetectorUnavailable whose message joins the reasons) carries those
      per-head rows.
    """
    from ..heads import HeadError, HeadMismatch, find_heads, load_head

    dirs = list(ctx.weights_dirs)
    notes: list[str] = []
    found = find_heads(dirs, family, notes=notes)
    ctx.notes.extend(n for n in notes if n not in ctx.notes)
    wanted = (ctx.options or {}).get(f"{family}_heads")
    if wanted:
        found = [(p, m) for p, m in found if m.get("name") in set(wanted)]
    if not found:
        where = ", ".join(str(d) for d in dirs) or "no weights folder"
        raise DetectorUnavailable(none_found.format(where=where))
    try:
        backbone = ctx.backbone()
    except DetectorUnavailable as exc:
        names = ", ".join(_name(p, m) for p, m in found)
        raise DetectorUnavailable(f"{exc} ({family} heads not run: {names})") from exc

    out: list[Detector] = []
    made = 0
    for path, manifest in found:
        name = f"{family}:{_name(path, manifest)}"
        try:
            head = load_head(path, manifest=manifest)
            head.check_backbone(backbone.fingerprint, backbone.spec.describe())
            out.append(make(head, backbone))
            made += 1
        except HeadMismatch as exc:
            out.append(UnavailableDetector(name, str(exc)))
        # Whatever one head's files make go wrong (a manifest value of the wrong type raised AttributeError or
        # TypeError, and the whole scan failed), that head is unavailable and the others run.
        except Exception as exc:  # noqa: BLE001
            # Our own errors are written for users; anything else also names its type ('KeyError: ...').
            why = str(exc) if isinstance(exc, (HeadError, DetectorUnavailable)) else f"{type(exc).__name__}: {exc}"
            out.append(UnavailableDetector(name, f"cannot load head {path}: {why}"))
    if not made:
        raise HeadsUnavailable("; ".join(d.reason for d in out if isinstance(d, UnavailableDetector)), out)
    return out


def _name(path: Path, manifest: dict[str, Any]) -> str:
    return str(manifest.get("name") or Path(path).name)


def head_meta(head) -> dict[str, Any]:
    """The fields of a head that its family's ``results`` function reads. The
    ONNX exporter stores them in the sidecar (with the graph's output names
    added); a torch detector builds the same dict from its loaded head."""
    m = head.manifest
    sha = (m.get("files") or {}).get("head.safetensors")
    return {"manifest": exported_manifest(m), "labels": m.get("labels"),
            "calibration": m.get("calibration"), "threshold": m.get("threshold"),
            "head": head.name, "backbone_fingerprint": head.backbone_fingerprint,
            # which tensors an exported head holds: a fusion model fitted on other ones leaves it out on ONNX
            # as on torch (fusion.without_retrained)
            **({"head_sha256": sha} if isinstance(sha, str) else {})}


def exported_manifest(m: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a head's manifest an ONNX export carries in its sidecar (what its results read)."""
    keep = ("labels", "calibration", "threshold", "params", "version", "source", "license", "metrics", "attribution")
    return {k: m[k] for k in keep if k in m}


def not_shipped_export(meta: Mapping[str, Any], onnx_dir) -> str | None:
    """A note for a head of an ONNX export that has the name of a head aiidetect ships and is not known to be
    it, or None. The export is the user's folder, as their own heads are: not refused, but its results read as
    the shipped head's (an export made from a univfd planted before the pin, or from a user's head of that
    name, which the torch runtime runs with this same note). Compared: the tensors' digest with the pin, and
    the verdict-deciding manifest with that of the pinned shipped head installed here. The graph's own weights
    are only checked against the export's sidecar, which its maker wrote."""
    from ..heads import SHIPPED_HEADS, TENSORS, HeadError, read_manifest, shipped_match, shipped_weights_dirs

    family, name = meta.get("family"), meta.get("head")
    pin = SHIPPED_HEADS.get((family, name))  # type: ignore[arg-type]
    if pin is None:
        return None
    same = meta.get("head_sha256") == pin[TENSORS]
    if same:
        for d in shipped_weights_dirs():
            try:
                m = read_manifest(d / str(name))
            except HeadError:
                continue
            if shipped_match(d / str(name), m):
                same = exported_manifest(m) == meta.get("manifest")
                break
    if same:
        return None
    return (f"head {family}:{name} in the ONNX export {onnx_dir} is not the {family}:{name} head aiidetect ships, "
            "though it has its name: its results are its own; export the shipped head again, or give yours "
            "another name (docs/heads.md)")


def unavailable_reason(path: Path, manifest: dict[str, Any], backbone) -> str | None:
    """What a scan on `backbone` would say of the head at `path`: the reason build_heads gives when
    it makes that head unavailable, or None when its family makes the detector. The family's own
    ``create`` runs, on this head alone, so `weights verify --check-backbone` refuses what a scan
    refuses: an MPFT head whose manifest names another LoRA rank than its tensors hold passed verify
    ("ok") and was unavailable in every scan."""
    from . import family_hook

    family, name = manifest.get("detector"), manifest.get("name")
    try:
        create = family_hook(str(family), "create")
    except KeyError:  # a family this install does not know: find_heads says so already
        return None
    from ..heads import find_heads

    # The family's create finds the head again, in its folder's parent: only when that finds this very
    # head (a weights folder that is itself a head may sit beside another head of the same name).
    same = [p for p, m in find_heads([Path(path).parent], str(family)) if m.get("name") == name]
    if len(same) != 1 or Path(same[0]).resolve() != Path(path).resolve():
        return None
    ctx = RunContext(weights_dirs=[Path(path).parent], options={f"{family}_heads": [name]})
    ctx._backbone = backbone
    try:
        rows = create(ctx)
    except HeadsUnavailable as exc:
        rows = exc.rows
    except DetectorUnavailable as exc:
        return str(exc)
    bad = [d.reason for d in rows if isinstance(d, UnavailableDetector)]
    return bad[0] if bad else None
