"""Provenance evidence: what a file says about where it came from.

``analyze(data, path)`` reads EXIF, XMP, IPTC IIM, generator text chunks, C2PA manifests,
the Stable Diffusion invisible watermark and weak structural hints, and turns
each finding into an Evidence item whose strength is a log-likelihood ratio in
nats (docs/provenance.md lists every id, its strength and how to fool it).
Nothing here raises for a bad file: parser failures become `errors` and a
neutral ``metadata.malformed`` item.
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..records import Evidence
from . import containers, exif, generators, iptc, makernote, sourcetypes as dst, structural, watermark, xmp
from .recordtext import clip_fields, quote

__all__ = ["analyze", "ProvenanceReport", "STRENGTH"]

# Log-likelihood ratios (nats). Decisive items are the ones a real photo
# essentially never carries by accident; camera metadata is capped well below
# them because copying EXIF onto an AI image is one exiftool command.
STRENGTH = {
    "generator.parameters": 6.0,
    "c2pa.ai-generated": 7.0, "c2pa.ai-generated.invalid": 3.0,
    "c2pa.ai-composite": 3.0, "c2pa.ai-composite.invalid": 1.5,
    "c2pa.ai-ingredient": 2.0,
    # algorithmicMedia: made by an algorithm WITHOUT a trained model (IPTC's definition), so no declaration
    # of generative AI; still no camera capture, so a soft hint away from "real photo", as in XMP (2.0).
    "c2pa.algorithmic": 2.0, "c2pa.algorithmic.invalid": 1.0,
    "c2pa.generator-tool": 3.0, "c2pa.generator-tool.invalid": 1.5,
    # An INVALID capture manifest (failures listed: hash mismatch, bad signature) weighs nothing toward
    # real: a manifest copied from a photo into a generated image is exactly how one looks. One that
    # lists no validation at all, or only credential/time problems (an expired certificate on an intact
    # manifest), is an unverified claim (0.5, a little under XMP's unsigned 0.7).
    "c2pa.capture": 2.0, "c2pa.capture.unverified": 0.5,
    "xmp.ai-source-type": 4.0, "xmp.ai-composite": 2.5, "xmp.algorithmic": 2.0, "xmp.capture-source-type": 0.7,
    # Terms that say neither "captured" nor "generated" (humanEdits, digitalArt, screenCapture, ...) and
    # terms not in the vocabulary: named in the record, weighed nothing (sourcetypes.py).
    "xmp.source-type": 0.0, "c2pa.source-type": 0.0,
    "xmp.generator-tool": 3.0,
    # An AI tool named only in the edit history of a file another program made: a partial AI edit, weighed as
    # the XMP composite declaration (xmp.ai-composite) is.
    "xmp.generator-tool.history": 2.5,
    "exif.software-generator": 3.0,
    # PNG's own `Software` keyword: the same field, the same weight.
    "png.software-generator": 3.0,
    # The IIM field for what EXIF Software says (Photoshop writes one value into both): the same weight.
    "iptc.program-generator": 3.0,
    # makernote: a note that is plausibly the Make's own (makernote.py), not any bytes in the field.
    "exif.camera.make-model": 0.7, "exif.camera.exposure": 1.2, "exif.camera.makernote": 1.6,
    "exif.gps": 0.2,
    # Absence of camera metadata says nothing of how the image was made: every messenger, web upload and
    # screenshot strips it, so a real photo's shared copy lacks it as surely as a generator's file. Named in
    # the record, weighed nothing (it was 0.1 toward AI, on every stripped copy of a photo).
    "metadata.no-camera": 0.0,
    "watermark.match": 5.0,
    "structure.generator-size": 0.4, "structure.latent-size": 0.15,
    # libjpeg's own tables mean software wrote the file (a messenger, a web upload, an editor's export, some
    # phones), which a photo's copy is as often as a generator's: named, weighed nothing (it was 0.1 toward AI).
    "structure.jpeg-standard-tables": 0.0, "structure.jpeg-custom-tables": 0.2,
}

# Word-bounded where a name hides inside ordinary words: "dall e" is in "Randall Editor". Google's
# Imagen only with its maker: "imagen" is Spanish for "image" ("Editor de imagen 2.0", a version too).
# Names that are also other products' names only in the form the generator writes them, since a camera's or
# an app's Software, CreatorTool or OriginatingProgram carries its own name and build: "Firefly" is Hawkeye's
# action cameras, FLIR's machine-vision cameras and a line of ARM boards, so Adobe's only with its maker or its
# model ("Adobe Firefly", "Adobe_Firefly", "Firefly Image 3"); "Gemini" is a Trust camera ("Gemini11", in the dev
# set), Xiaomi's Mi 5 (build "gemini-user 8.0.0 ..."), a photo-library app, so Google's only with its maker or as
# its image model ("Gemini 2.5 Flash Image"); "Flux" is apps and plug-ins, so Black Forest Labs' only as its
# model is written ("FLUX.1 [dev]", "flux1-dev", "flux2_dev", "FLUX 1.1 [pro]", "FLUX.2"), as its own API names its
# endpoints ("flux-pro-1.1", "flux-kontext-max", "flux-2-pro", "flux-dev"; a bare "Flux Pro" or "Flux Dev" may be an
# app's) or with its maker; OpenAI, Ideogram and diffusers only as whole words ("Openaire" is no OpenAI).
AI_TOOL = re.compile(
    r"stable[ -]?diffusion|midjourney|\bdall[-·\u00b7 ]?e\b|adobe[ _-]?firefly|\bfirefly[ _-]image(?![a-z])|novelai|comfyui|"
    r"invokeai|automatic1111|\bfooocus\b|draw things|google imagen|\bimagefx\b|google[ _-]?gemini|"
    r"\bgemini[ -][\d.]+(?:[ -](?:flash|pro|exp|preview))+[ -]image\b|\bnano[ -]banana\b|chatgpt|\bopenai\b|leonardo\.ai|"
    r"\bideogram\b|\bflux(?:\.[12](?:\.\d)?|[12](?:\.1)?|[ -]1\.1)(?![^\W_])|\bflux(?:\.?[12](?:\.\d)?)? ?\[(?:dev|schnell|pro)\]|"
    r"\bflux[-_/ ](?:pro[-_/])?(?:kontext|schnell|krea)(?![a-z])|"
    r"\bflux[-_/](?:dev|pro[-_/]v?1\.\d|2[-_/](?:pro|flex|max|dev|klein))(?![a-z])|"
    r"black[ _-]?forest[ _-]?labs|bing image creator|microsoft designer|dreamstudio|nightcafe|craiyon|\bsdxl\b|"
    r"\bdiffusers\b", re.I)
# A program names itself in its first words; EXIF Software, a PNG Software chunk and IIM OriginatingProgram reach the
# rule uncapped (megabytes each, each scanned whole: four 2 MiB PNG Software chunks ran the metadata stage out of
# time), so it reads as much of a value as an XMP value keeps (xmp.MAX_VALUE_CHARS).
MAX_TOOL_NAME_CHARS = xmp.MAX_VALUE_CHARS


def names_ai_tool(text: str) -> bool:
    """Whether a program-name field (Software, CreatorTool, a claim generator) names an AI image tool."""
    return AI_TOOL.search(text, 0, MAX_TOOL_NAME_CHARS) is not None

_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
# ComfyUI's WebP and JPEG savers write its graphs into EXIF text tags, "prompt:{...}" in Model and
# "workflow:{...}" in Make (further keys in ImageDescription): generator text, not a camera.
_COMFY_EXIF = re.compile(r"(prompt|workflow):(?=\s*\{)")
# Problems listed per file: a file of a million broken text chunks made a record of a million lines.
MAX_ERRORS = 100
# EXIF blocks and XMP packets parsed per file (a file has one of each; each parse is capped): the walk copies no more.
MAX_BLOCKS = containers.MAX_BLOCKS

# Which evidence each kind of IPTC Digital Source Type term gives (sourcetypes.TERMS says which kind each is).
_DST_AI = dst.of_kind(dst.AI)
_DST_AI_PART = dst.of_kind(dst.AI_PART)
_DST_COMPOSITE = _DST_AI_PART | dst.of_kind(dst.SYNTHETIC_PART)
_DST_ALGO = dst.of_kind(dst.ALGORITHMIC)
_DST_CAPTURE = dst.of_kind(dst.CAPTURE)
XMP_SOURCE_TYPE_ITEM = {dst.AI: "xmp.ai-source-type", dst.AI_PART: "xmp.ai-composite",
                        dst.SYNTHETIC_PART: "xmp.ai-composite", dst.ALGORITHMIC: "xmp.algorithmic",
                        dst.CAPTURE: "xmp.capture-source-type", dst.EDITED: "xmp.source-type",
                        dst.OTHER: "xmp.source-type", dst.UNKNOWN: "xmp.source-type"}
# In a C2PA manifest, by what c2pa.created declares (an AI term on an edit action is a partial AI edit).
C2PA_SOURCE_TYPE_ITEM = {dst.AI: "c2pa.ai-generated", dst.AI_PART: "c2pa.ai-composite",
                         dst.SYNTHETIC_PART: "c2pa.ai-composite", dst.ALGORITHMIC: "c2pa.algorithmic",
                         dst.CAPTURE: "c2pa.capture", dst.EDITED: "c2pa.source-type",
                         dst.OTHER: "c2pa.source-type", dst.UNKNOWN: "c2pa.source-type"}

CAMERA_FORMATS = {"JPEG", "HEIF", "AVIF", "TIFF", "WEBP"}

# What a decisive item rests on (its data["basis"]; fusion names it in the verdict's reason): "claim" is
# text the file carries about itself, which nothing verifies and any tool can write into any image;
# "signed" is a C2PA manifest whose signature and content hash check out and whose signer a trust list vouches
# for (only with the user's trust list, --c2pa-trust: without one, a manifest signed with a self-made certificate
# is "claim" too, whatever its signature says); "pixels" is a pattern measured in the image itself.
BASIS_CLAIM, BASIS_SIGNED, BASIS_PIXELS = "claim", "signed", "pixels"


@dataclass
class ProvenanceReport:
    path: str
    format: str | None = None
    width: int | None = None
    height: int | None = None
    evidence: list[Evidence] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..records import evidence_to_dict

        return {"file": self.path, "format": self.format, "width": self.width, "height": self.height,
                "evidence": [evidence_to_dict(e) for e in self.evidence], "facts": self.facts,
                "errors": list(self.errors)}


def _ev(eid: str, direction: str, detail: str, source: str, key: str | None = None, decisive: bool = False,
        data: dict | None = None, **more) -> Evidence:
    d = {**(data or {}), **more}
    return Evidence(id=eid, direction=direction, strength=STRENGTH[key or eid], detail=detail, source=source,
                    decisive=decisive, data=clip_fields({k: v for k, v in d.items() if v not in (None, "", [], {})}))


class _Budget:
    """Per-file wall-clock budget for the metadata stage, checked before each
    parser (each parser is itself linear and capped, so no single step runs
    long). Once spent, the remaining parsers are skipped; evidence from what was
    already parsed is still reported."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.t0 = time.perf_counter()
        self.stage: str | None = None   # the first stage skipped

    def left(self, stage: str) -> bool:
        if self.stage is None and time.perf_counter() - self.t0 > self.seconds:
            self.stage = stage
        return self.stage is None


@contextmanager
def _stage(rep: ProvenanceReport, name: str):
    """Each stage reads attacker-controlled bytes. A bug one of them raises is
    recorded and costs that stage only: with one guard around them all, a file
    built to trip the EXIF reader would also have hidden its C2PA manifest,
    its generator parameters and the watermark check."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - see above
        rep.errors.append(f"internal ({name}): {type(exc).__name__}: {exc}")


def warm_up(c2pa: bool = True) -> None:
    """The parsers `analyze` imports at the first file that needs them, imported now (MetadataDetector.warm_up):
    exifread (at a first HEIC, 0.6 s on a loaded machine), defusedxml and the C2PA reader (0.2 s) ran on
    that file's clock, and a short file_timeout gave a legitimate file up. Missing or broken optional ones
    are left for that file's record to report."""
    import importlib

    for name in ("exifread", "defusedxml.ElementTree", "aiidetect.quiet") + (("c2pa",) if c2pa else ()):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - c2pa-python is an optional extra, with a native library
            pass


def analyze(data: bytes, path: str = "", image=None, info=None, options: dict | None = None,
            layout=None) -> ProvenanceReport:
    """options: watermark = "auto" (SD-plausible sizes only) | "always" | "never"; c2pa = True/False;
    c2pa_trust = a trust list (trust.TrustList.option) whose anchors make a C2PA signer "Trusted";
    budget_s = per-file time budget (default aiidetect.limits.METADATA_BUDGET_S). `layout`: a HEIF/AVIF's
    structures.heif_layout_read(data), where the caller has read it (the scan's decode): used only if it is
    a read of these very bytes (structures.heif_read_of)."""
    from ..limits import METADATA_BUDGET_S
    from ..records import METADATA_TIMEOUT

    opts = options or {}
    rep = ProvenanceReport(path=path)
    budget = _Budget(opts.get("budget_s", METADATA_BUDGET_S))
    with _stage(rep, "provenance"):   # _analyze guards each stage; this keeps the file if the glue fails
        _analyze(data, rep, image, info or {}, opts, budget, layout)
    # Same bytes, same record: drop object addresses ("<_io.BytesIO object at 0x7f...>") from messages.
    rep.errors = [_ADDR.sub("", e) for e in rep.errors[:MAX_ERRORS]] + (
        [f"... and {len(rep.errors) - MAX_ERRORS} more problems of the same file"] if len(rep.errors) > MAX_ERRORS
        else [])
    if budget.stage is not None:
        rep.evidence.append(Evidence(
            METADATA_TIMEOUT, "neutral", 0.0,
            f"metadata reading stopped before the {budget.stage} stage: the {budget.seconds:g} s per-file budget "
            "was spent; evidence read before that is kept", source="parsers",
            data={"stage": budget.stage, "budget_s": budget.seconds}))
    if rep.facts.get("conflicts"):
        c = rep.facts["conflicts"]
        rep.evidence.append(Evidence(
            "metadata.conflict", "neutral", 0.0,
            f"metadata blocks in this file disagree ({len(c)}): {'; '.join(c[:3])}"
            + ("; the first EXIF block is the one used here (other readers may show another)"
               if rep.facts.get("exif_other_blocks")
               else ""), source="parsers",
            data={"conflicts": c[:20]}))
    if rep.errors:
        rep.evidence.append(Evidence("metadata.malformed", "neutral", 0.0,
                                     f"metadata could not be fully read: {'; '.join(rep.errors[:3])}",
                                     source="parsers", data={"errors": rep.errors[:20]}))
    return rep


def _analyze(data: bytes, rep: ProvenanceReport, image, info: dict, opts: dict, budget: _Budget,
             layout=None) -> None:
    blobs = containers.walk(data, lambda: budget.left("rest of the container walk"), layout=layout)
    rep.errors.extend(blobs.errors)
    rep.format = blobs.format or info.get("format")
    rep.width = blobs.width or info.get("width")
    rep.height = blobs.height or info.get("height")
    ev = rep.evidence

    # --- EXIF
    facts, graphs = [], []
    for kind, found in (("EXIF blocks", blobs.exif), ("XMP packets", blobs.xmp)):
        if len(found) > MAX_BLOCKS:
            rep.errors.append(f"{len(found)} {kind}; only the first {MAX_BLOCKS} read")
    for blob, where in blobs.exif[:MAX_BLOCKS]:
        if not budget.left("EXIF"):
            break
        with _stage(rep, "EXIF"):
            f = exif.read_exif(blob, where, data)
            rep.errors.extend(f"EXIF ({where}): {e}" for e in f.errors)
            for attr, tag in (("make", "Make"), ("model", "Model"), ("description", "ImageDescription")):
                m = _COMFY_EXIF.match(getattr(f, attr) or "")
                if m:
                    graphs.append((m.group(1), getattr(f, attr)[m.end():], f"EXIF {tag} ({where})"))
                    setattr(f, attr, None)
            facts.append(f)
    ef, conflicts = exif.merge(facts)
    # Whether every EXIF block the file holds was read: else "no camera metadata" would be untrue (a camera's
    # EXIF in the fifth of 17 blocks was claimed absent beside "only the first 4 read").
    exif_all_read = not (blobs.cut or blobs.exif_refused or len(blobs.exif) > MAX_BLOCKS or budget.stage is not None
                         or any(f.refused for f in facts))
    if len([f for f in facts if f.reader]) > 1:
        rep.facts["exif_other_blocks"] = [f.to_dict() for f in facts[1:] if f.reader and f is not ef]
    texts = list(blobs.texts) + graphs
    if ef:
        rep.facts["exif"] = ef.to_dict()
    # Generator text is looked for wherever the file holds text, every EXIF block included (as in
    # every PNG chunk): the first-block rule above is about which camera the file names.
    for f in (f for f in facts if f.reader):
        if f.user_comment:
            texts.append(("UserComment", f.user_comment, f"EXIF UserComment ({f.where})"))
        if f.description and len(f.description) > 20:
            texts.append(("ImageDescription", f.description, f"EXIF ImageDescription ({f.where})"))

    # --- XMP
    xf_all = []
    for blob, where in blobs.xmp[:MAX_BLOCKS]:
        if not budget.left("XMP"):
            break
        with _stage(rep, "XMP"):
            try:
                xf_all.append(xmp.parse_xmp(blob, where))
            except (ValueError, RecursionError) as exc:
                rep.errors.append(f"XMP ({where}): {exc}")
    if xf_all:
        rep.facts["xmp"] = [x.to_dict() for x in xf_all]

    # --- IPTC IIM
    iptc_all = []
    if blobs.iptc and budget.left("IPTC"):
        with _stage(rep, "IPTC"):
            iptc_all = _read_iptc(blobs.iptc, rep)
    if iptc_all:
        rep.facts["iptc"] = [f.to_dict() for f in iptc_all]

    # --- generator parameters
    xmp_comments = [(c, x.where) for x in xf_all for c in x.user_comments]
    creator_tools = [c for x in xf_all for c in x.creator_tools]
    gens, gerr = [], []
    if budget.left("generator parameters"):
        with _stage(rep, "generator parameters"):
            gens, gerr = generators.find_generators(texts, xmp_comments, creator_tools)
    rep.errors.extend(gerr)
    if gens:
        rep.facts["generators"] = [g.to_dict() for g in gens]
    for g in gens:
        conflicts += g.extra.get("conflicts", [])[:generators.MAX_CONFLICTS]
        ev.append(_ev("generator.parameters", "ai", g.summary(), g.where, decisive=True, data=g.to_dict(),
                      basis=BASIS_CLAIM))

    # --- C2PA
    c2pa_facts = None
    if blobs.jumbf and opts.get("c2pa", True) and budget.left("C2PA"):
        with _stage(rep, "C2PA"):
            c2pa_facts = _c2pa(data, blobs, rep, conflicts, opts.get("c2pa_trust"))

    # --- XMP declarations
    history_item = None   # an AI tool named only in an edit history (a partial AI edit)
    with _stage(rep, "XMP declarations"):
        # A statement repeated is one observation, not several: the same packet four times, or one
        # value under 50 spellings of its URI, made 200 `digitalCapture` items (140 nats toward real;
        # fusion's whole soft cap from one unsigned claim). The first of each kind is weighed; every
        # value stays listed in facts.xmp.
        said: set[str] = set()
        unweighed: dict[str, str] = {}
        for x in xf_all:
            for value in x.digital_source_types:
                _xmp_source_type(dst.short_source_type(value), x.where, ev, said, unweighed)
            made = [t for t in x.creator_tools if names_ai_tool(t)]
            tools = made + [t for t in x.software_agents if names_ai_tool(t)]
            if tools and not gens and "xmp.generator-tool" not in said:
                said.add("xmp.generator-tool")
                if made or not x.creator_tools:
                    ev.append(_ev("xmp.generator-tool", "ai", f"XMP names an AI image tool: {quote(tools[0])}",
                                  x.where, tools=tools[:5]))
                    if not made:   # an edit step's agent, not the program that wrote the file
                        history_item = ev[-1]
                else:
                    # The file was made in another program (CreatorTool) and one step of its edit history ran an
                    # AI tool (a photo with a generative-fill edit): partially AI-edited, as a composite is.
                    ev.append(_ev("xmp.generator-tool", "ai", f"XMP edit history names an AI image tool at one step "
                                  f"({quote(tools[0])}) of a file made with {quote(x.creator_tools[0])}: partially "
                                  "AI-edited at least, not necessarily generated whole", x.where,
                                  key="xmp.generator-tool.history", tools=tools[:5]))
                    history_item = ev[-1]
        if unweighed:
            terms = list(unweighed)
            ev.append(_ev("xmp.source-type", "neutral", "IPTC DigitalSourceType " + "; ".join(
                _unweighed_words(t) for t in terms[:5]), unweighed[terms[0]], source_types=terms[:10]))

    with _stage(rep, "XMP declarations"):
        conflicts += _source_type_conflicts(xf_all, c2pa_facts)

    # --- EXIF-based evidence
    camera_clash = False   # whether camera EXIF beside a decisive AI claim got its note (one note per camera)
    with _stage(rep, "EXIF evidence"):
        if ef:
            if ef.software and names_ai_tool(ef.software) and not gens:
                ev.append(_ev("exif.software-generator", "ai",
                              f"EXIF Software names an AI image tool: {quote(ef.software)}",
                              ef.where, software=ef.software))
            cam = ef.camera_fields
            exposure = [k for k in ("exposure_time", "f_number", "iso", "focal_length") if k in cam]
            desc = ", ".join(quote(v) for v in (ef.make, ef.model, ef.lens) if v)
            note = ef.makernote
            # Only a note that is plausibly the named maker's own earns the maker-note weight: any bytes
            # can be pasted into MakerNote (makernote.py). One that is not is named in the item's detail.
            unproven = (f"; its maker note is not counted ({note.format}: {note.reason})"
                        if note is not None and not note.counts else "")
            if note is not None and note.status == makernote.OTHER_MAKER and ef.make:
                # A Make the OEM table does not list may be a rebadge of the note's maker: said first.
                rebadge = (f"a camera built by {note.maker} and sold under this name, " if
                           makernote.maker_of(ef.make) is None else "")
                conflicts.append(f"EXIF Make {quote(ef.make)} ({ef.where}) but its maker note is in "
                                 f"{note.maker}'s format ({note.format}): {rebadge}a note copied from another "
                                 "maker's photo, or a Make edited afterwards; the maker note counts nothing toward "
                                 "real")
            if note is not None and note.counts and ef.make:
                ev.append(_ev("exif.camera", "real", f"camera EXIF with maker note ({desc}); metadata can be copied, "
                              "so this lowers but never rules out AI", ef.where, key="exif.camera.makernote",
                              fields=cam))
            elif len(exposure) >= 2 and (ef.make or ef.model):
                ev.append(_ev("exif.camera", "real", f"camera EXIF with exposure settings ({desc}); metadata can be "
                              f"copied{unproven}", ef.where, key="exif.camera.exposure", fields=cam))
            elif ef.make and ef.model:
                ev.append(_ev("exif.camera", "real", f"camera make/model in EXIF ({desc}), no exposure settings; "
                              f"metadata can be copied{unproven}",
                              ef.where, key="exif.camera.make-model", fields=cam))
            if ef.has_gps:
                ev.append(_ev("exif.gps", "real", "GPS position in EXIF", ef.where))
        has_camera = any(e.id == "exif.camera" for e in ev)
        claims = [e for e in ev if e.decisive and e.direction == "ai" and e.data.get("basis") == BASIS_CLAIM]
        if has_camera and claims:
            # The forger's two moves meet here: camera EXIF pasted into a generator's file, or generator
            # text pasted into a photo. Each item is weighed as it is; the reader is told they clash.
            camera_clash = True
            conflicts.append(f"camera EXIF ({desc}; {ef.where}) beside a declaration of AI generation "
                             f"({claims[0].id}; {claims[0].source}): generators do not write camera EXIF, so one "
                             "of the two was most likely added or copied (or an AI edit kept the camera's EXIF)")
        # A camera named in another EXIF block than the one used is camera metadata the file carries (and a
        # metadata.conflict says so): "no camera metadata" beside it was untrue.
        named_elsewhere = any(f.reader and f is not ef and (f.make or f.model) for f in facts)
        # A declaration of capture (IPTC digitalCapture, signed in a manifest or unsigned in XMP) beside a
        # generator's settings: the two cannot both be true, and the record said nothing of it. XMP's and
        # C2PA's AI source types against a capture are _source_type_conflicts' already.
        capture = next((e for e in ev if e.id in ("c2pa.capture", "xmp.capture-source-type") and e.strength), None)
        settings = next((e for e in claims if e.id == "generator.parameters"), None)
        if capture is not None and settings is not None:
            vouch = ("; the valid signature covers the file's bytes, the settings block included: whoever signed "
                     "shipped both" if capture.id.startswith("c2pa.") and capture.data.get("valid") else "")
            conflicts.append(f"a declaration of camera capture ({capture.id}; {capture.source}) beside generator "
                             f"settings ({settings.source}): one of the two is untrue{vouch}")
        if not has_camera and rep.format in CAMERA_FORMATS and not gens and exif_all_read and not named_elsewhere:
            ev.append(_ev("metadata.no-camera", "neutral", "no camera metadata (make, model, exposure); not counted "
                          "toward AI: any re-save, messenger or screenshot strips it from a real photo too", "EXIF"))

    # --- PNG text evidence
    with _stage(rep, "PNG text evidence"):
        # The PNG keyword for what EXIF Software says: a generator's saver (or an app after it) names
        # itself there. NovelAI's is read as generator parameters above, and then no tool-name item is made.
        soft = next(((v, w) for k, v, w in blobs.texts
                     if k == "Software" and w.startswith("PNG ") and names_ai_tool(v)), None)
        if soft and not gens:
            ev.append(_ev("png.software-generator", "ai", f"PNG Software text names an AI image tool: {quote(soft[0])}",
                          soft[1], software=soft[0]))

    # --- IPTC IIM evidence
    with _stage(rep, "IPTC evidence"):
        progs = [p for f in iptc_all for p in f.programs if names_ai_tool(p)]
        if progs and not gens:
            where = next(f.where for f in iptc_all if progs[0] in f.programs)
            ev.append(_ev("iptc.program-generator", "ai", f"IPTC OriginatingProgram names an AI image tool: "
                          f"{quote(progs[0])}", where, programs=progs[:5]))

    with _stage(rep, "claims counted once"):
        _count_claims_once(ev)

    with _stage(rep, "EXIF evidence"):
        # Camera EXIF beside an AI tool named as the program that wrote the file (EXIF Software, XMP CreatorTool,
        # PNG Software, IIM, a manifest's claim generator) is the same clash as beside generator settings: a camera
        # does not write "Midjourney" as its software. Only where no decisive declaration clashed already (one note
        # per camera), and not for a tool named only in an edit history (a photo with one AI edit step is no
        # contradiction, as a capture manifest with a generative-fill action is none).
        # The history item may be the one counted and a writer's name (EXIF Software "Midjourney") its folded copy:
        # the writer's name still clashes with the camera.
        named_tools = [e for e in ev if e.id in TOOL_NAME_CLAIMS and e is not history_item
                       and (e.direction == "ai" or e.data.get("corroborates"))]
        tool = next((e for e in named_tools if e.direction == "ai"), None) or next(iter(named_tools), None)
        # Whether that note was written, not whether a decisive claim is left now: an XMP declaration counted in a
        # trusted manifest's is no longer decisive, and the camera got a second note.
        if ef and tool is not None and not camera_clash and any(e.id == "exif.camera" for e in ev):
            named = (tool.data.get("software") or tool.data.get("claim_generator")
                     or (tool.data.get("tools") or tool.data.get("programs") or [""])[0])
            # EXIF Software is read from the block the camera is read from (the first)
            same = " in the same EXIF block" if tool.id == "exif.software-generator" else ""
            conflicts.append(f"camera EXIF ({desc}; {ef.where}) beside an AI image tool named as the program that "
                             f"wrote the file{same} ({quote(named)}; {tool.id}; {tool.source}): a camera does not "
                             "name an AI tool, so either the camera's photo was saved by that tool (an AI edit, "
                             "which keeps the camera's EXIF) or one of the two was added or copied")

    if conflicts:
        rep.facts["conflicts"] = conflicts

    # --- invisible watermark
    if budget.left("watermark"):
        with _stage(rep, "watermark"):
            _watermark(data, rep, image, info, opts)

    # --- structural hints
    with _stage(rep, "structural hints"):
        jq = structural.jpeg_quality(blobs.dqt) if blobs.dqt else {}
        if blobs.dqt:
            rep.facts["jpeg"] = jq
        hint = structural.size_hint(rep.width, rep.height)
        # A software re-encode's size is as often its resizer's as the generator's: messengers and web tools
        # scale the long side to 1024, 1280 or 1600, which at 4:3 or 16:9 is a multiple of 64 on both sides
        # (1280x960) or a generator's own size (1024x576). Read there, a photo's shared copy got up to 0.4 nats
        # toward AI that its original did not.
        if hint and jq.get("standard"):
            hint_said = (f"; its size, {rep.width}x{rep.height}, is not read as a generator's (a resize on the way "
                         "picks such sizes)")
            hint = None
        else:
            hint_said = ""
        if hint == "exact":
            ev.append(_ev("structure.generator-size", "ai", f"{rep.width}x{rep.height} is a typical generator output "
                          "size (weak)", "dimensions"))
        elif hint:
            ev.append(_ev("structure.generator-size", "ai", f"{rep.width}x{rep.height}: both sides multiples of 64, "
                          "as latent-diffusion outputs are (weak)", "dimensions", key="structure.latent-size"))
        if jq.get("standard"):
            # Shown among a verdict's reasons (fusion): the editor learns the pixels judged may be a copy's.
            ev.append(_ev("structure.jpeg-tables", "neutral", f"standard libjpeg quantization tables at quality "
                          f"{jq['quality']}: saved by software (a messenger, a web upload, an editor's export; some "
                          "phone cameras use them too), not counted toward AI or real; where this is a re-encoded "
                          f"copy, a pixel detector judges the copy, not the original{hint_said}", "JPEG DQT",
                          key="structure.jpeg-standard-tables", quality=jq["quality"]))
        elif jq:
            ev.append(_ev("structure.jpeg-tables", "real", f"non-standard quantization tables (camera firmware or "
                          f"editor), ~quality {jq['estimated_quality']} (weak)", "JPEG DQT",
                          key="structure.jpeg-custom-tables", estimated_quality=jq["estimated_quality"]))


# Unverified statements of which program made the file. One export step writes the same name into
# every block it fills (Photoshop: EXIF Software, XMP CreatorTool and IIM OriginatingProgram from one
# value; exiftool's MWG tags; a generator's saver, which in a PNG is a `Software` text chunk), and a
# stripper that keeps one block keeps the others, so a second copy is no second observation: summed,
# EXIF + XMP were 6 nats for one claim. A valid signed C2PA claim generator is in the family too, as a
# signed source type is in its own (below): the unsigned copies beside it say nothing the signature does
# not vouch for, so the signed one keeps the weight and is never the one folded. Generator parameters,
# source types and the watermark are other observations and are not in this family.
TOOL_NAME_CLAIMS = ("c2pa.generator-tool", "xmp.generator-tool", "exif.software-generator", "png.software-generator",
                    "iptc.program-generator")

# Declarations of how the image was made (IPTC DigitalSourceType), one family per direction. An
# exporter that declares "made by a model" writes its one declaration into the XMP packet and into the
# C2PA manifest it makes, so a manifest not valid (or not verified) beside the XMP packet is the same
# unverified statement twice: XMP trainedAlgorithmicMedia 4.0 + an invalid manifest's 3.0 summed
# 7.0, the weight of a valid signature. The directions stay apart: "captured" beside "generated" is a
# contradiction (a metadata.conflict note), not one claim.
SOURCE_TYPE_CLAIMS = {
    "ai": ("c2pa.ai-generated", "c2pa.ai-composite", "c2pa.algorithmic", "xmp.ai-source-type", "xmp.ai-composite",
           "xmp.algorithmic"),
    "real": ("c2pa.capture", "xmp.capture-source-type"),
}


_ONE_DECLARATION = "an exporter writes its one source-type declaration into each block it fills"
# (ids, direction, why a second copy is no second observation): each family is folded on its own.
CLAIM_FAMILIES = (
    (TOOL_NAME_CLAIMS, "ai", "one export step writes the name into every block it fills"),
    # Settings blocks of two generators (ComfyUI's savers write A1111's `parameters` beside their graph;
    # a forger pastes both as easily as one) say one thing, "made by a generator": summed they were
    # 12 nats, and the verdict's line quoted one block's detail with both weights.
    (("generator.parameters",), "ai", "a second settings block says what the first does (made by a generator) "
     "and is as easily written"),
    *((ids, direction, _ONE_DECLARATION) for direction, ids in SOURCE_TYPE_CLAIMS.items()),
)


def _signed(e: Evidence) -> bool:
    """A C2PA item whose signer a trust list vouches for. A valid signature alone (every one without --c2pa-trust) is
    not: a self-made certificate signs as validly, so such a manifest is one more copy of the exporter's claim."""
    return e.id.startswith("c2pa.") and bool(e.data.get("trusted"))


def _count_claims_once(ev: list[Evidence]) -> None:
    """The strongest claim of a family keeps its weight (a signed one on a tie, else the first);
    every other place it was found stays in the record as a neutral, zero-weight item (what notes
    are) that says which item it corroborates, so the reader still sees each block that makes the claim.

    A valid signed declaration (source type or claim generator) is in its family (the unsigned XMP
    beside it says nothing the signature does not already vouch for) but is never the one folded:
    when an unsigned claim says more than the signed one (XMP trainedAlgorithmicMedia beside a
    signed composite), both keep their weight, as before."""
    for ids, direction, why in CLAIM_FAMILIES:
        _fold([e for e in ev if e.id in ids and e.direction == direction and e.strength > 0], why)


def _fold(claims: list[Evidence], why: str) -> None:
    if len(claims) < 2:
        return
    # The strongest, a signed one on a tie (it is never folded), else the first of equals.
    kept = max(claims, key=lambda e: (e.strength, _signed(e)))
    for e in claims:
        if e is kept or _signed(e):
            continue
        e.direction, e.strength, e.decisive = "neutral", 0.0, False
        e.detail += (f"; the same claim as {kept.id} ({kept.source}"
                     + (", signed" if _signed(kept) else "") + f"): {why}, so it is counted once, there")
        e.data["corroborates"] = kept.id


def _read_iptc(found: list[tuple[bytes, str]], rep: ProvenanceReport) -> list:
    """The IIM blocks of the file, each once: Photoshop writes the same IIM into TIFF tag 33723 and
    the image resources of tag 34377 (the first padded with zeros to whole LONGs)."""
    blocks: list[tuple[bytes, str]] = []
    for blob, where in found:
        got, errs = iptc.iim_blocks(blob, where)
        rep.errors.extend(errs)
        blocks += got
    seen: set[bytes] = set()
    out = []
    for data, where in blocks:
        key = data.rstrip(b"\x00")
        if key in seen:
            continue
        seen.add(key)
        if len(out) == MAX_BLOCKS:
            rep.errors.append(f"{len(blocks)} IPTC IIM blocks; only the first {MAX_BLOCKS} different ones read")
            break
        f = iptc.parse_iim(data, where)
        rep.errors.extend(f.errors)
        out.append(f)
    return out


def _source_type_conflicts(xf_all, c2pa_facts) -> list[str]:
    """Declarations of where the image came from that cannot both be true (captured by a camera
    and generated), across XMP packets and the C2PA manifest. Each is still weighed as what it is
    (a decisive AI declaration still decides); the record says they disagree."""
    declared = [(dst.short_source_type(d), x.where) for x in xf_all for d in x.digital_source_types]
    if c2pa_facts:   # the whole list: the record keeps only the first ones
        label = {"valid": "valid", "unverified": "signer not verified"}.get(c2pa_facts.status, "INVALID")
        # What the manifest declares the image came from, as _c2pa weighs it: an AI term on an edit
        # (generative fill on a captured photo) is a change made to the capture, not a second account of it.
        declared += [(t, f"C2PA ({label})") for t in _c2pa_origin(c2pa_facts)]
    # A composite (generative fill on a captured photo) is compatible with a capture declaration: a
    # phone's edited picture declares both. Only "made by a model" contradicts "captured".
    ai = [(t, w) for t, w in declared if t in _DST_AI | _DST_ALGO]
    cap = [(t, w) for t, w in declared if t in _DST_CAPTURE]
    if not (ai and cap):
        return []
    return [f"DigitalSourceType: {cap[0][0]} ({cap[0][1]}) vs {ai[0][0]} ({ai[0][1]})"]


def _c2pa_origin(f, weighed: bool = True) -> set[str]:
    """The terms a manifest declares the image itself came from: its c2pa.created action's; where it has
    none, a capture declared on another action (c2pa.opened); where neither, the c2pa.created of the image
    it was opened from (its parentOf ingredient's manifest: an editor that opens a generated image writes
    c2pa.opened, and read as an edit alone the image was "neither ... nor wholly generated"). The weighing
    and the conflict check read this one set (weighed), so that a declaration weighed is also the one
    compared with the other blocks'. A parent's capture is said in the words (weighed=False) but weighs
    nothing toward real, as before: only the parent's "generated" is weighed."""
    created = set(f.created_source_types)
    if created:
        return created
    parent = set(f.parent_source_types)
    return set(f.edit_source_types) & _DST_CAPTURE or (parent & _DST_AI if weighed else parent)


def _unweighed_words(term: str) -> str:
    k = dst.kind(term)
    why = ("not guessed, not weighed" if k == dst.UNKNOWN else
           "says nothing of whether what was edited was captured or generated, not weighed" if k == dst.EDITED else
           "neither a camera capture nor generative AI, not weighed")
    return f"= {quote(term)}: {dst.meaning(term)}; {why}"


def _xmp_source_type(short: str, where: str, ev: list[Evidence], said: set[str], unweighed: dict[str, str]) -> None:
    k = dst.kind(short)
    item = XMP_SOURCE_TYPE_ITEM[k]
    if item == "xmp.source-type":
        unweighed.setdefault(short, where)
        return
    if item in said:
        return
    said.add(item)
    words = dst.meaning(short)
    # Each id written out (not `item`) so that a grep for an id finds where it is emitted.
    if k == dst.AI:
        ev.append(_ev("xmp.ai-source-type", "ai", f"IPTC DigitalSourceType = {short}: {words}; declared, unsigned",
                      where, decisive=True, source_type=short, basis=BASIS_CLAIM))
    elif k == dst.CAPTURE:
        ev.append(_ev("xmp.capture-source-type", "real", f"IPTC DigitalSourceType = {short}: {words}; declared, "
                      "unsigned", where, source_type=short))
    elif k == dst.ALGORITHMIC:
        ev.append(_ev("xmp.algorithmic", "ai", f"IPTC DigitalSourceType = {short}: {words}; unsigned", where,
                      source_type=short))
    else:
        ev.append(_ev("xmp.ai-composite", "ai", f"IPTC DigitalSourceType = {short}: {words}; unsigned", where,
                      source_type=short))


def _c2pa(data: bytes, blobs, rep: ProvenanceReport, conflicts: list[str], trust: dict | None = None):
    """Adds the manifest's evidence, and to `conflicts` what it contradicts (metadata.conflict);
    -> the C2paFacts read, or None. trust: the c2pa_trust option (trust.TrustList.option)."""
    from . import c2pa as c2

    where = ", ".join(blobs.jumbf)
    try:
        c2.check_store(blobs.jumbf_bytes, blobs.format, blobs.cut)
        # Without a list, the call it always was: stand-ins for the reader (tests of statuses c2pa-rs cannot be
        # made to report offline) take that signature.
        f = c2.read_c2pa(data, blobs.format, where, chunks=blobs.chunks, **({"trust": trust} if trust else {}))
    except c2.C2paUnavailable as exc:
        rep.evidence.append(Evidence("c2pa.unreadable", "neutral", 0.0, f"C2PA data present but {exc}", where))
        return None
    except ValueError as exc:
        rep.errors.append(str(exc))
        rep.evidence.append(Evidence("c2pa.unreadable", "neutral", 0.0, f"C2PA data present but unreadable: {exc}",
                                     where))
        return None
    f.stores = max(1, blobs.c2pa_stores)
    if blobs.format == "TIFF":
        f.store_read = "the last page's"
    rep.facts["c2pa"] = f.to_dict()
    if f.stores > 1:
        # The reader names one store; what the others declare is unknown, so the record says they are there
        # rather than let the first one stand as the file's whole account.
        conflicts.append(f"{f.stores} C2PA manifest stores ({where}) where a file carries one (at least one was "
                         f"added after signing): only {f.store_read} was read, declaring "
                         f"{', '.join(sorted(set(f.source_types))[:3]) or 'no source type'}, which is therefore not "
                         f"established for this image; what the other "
                         f"{'store declares' if f.stores == 2 else f'{f.stores - 1} declare'} is not known")
    ok = f.valid
    suffix = "" if ok else ".invalid"
    validity = f.validity_text()
    base = dict(claim_generator=f.claim_generator, signer=f.signer, valid=ok, status=f.status,
                failures=f.failures[:10], actions=f.actions[:10], **({"trusted": True} if f.trusted else {}))
    ev = rep.evidence
    ev.append(Evidence("c2pa.manifest", "neutral", 0.0,
                       f"C2PA manifest by {quote(f.claim_generator) or 'unknown tool'}: {validity}", where,
                       data={k: v for k, v in base.items() if v not in (None, [], "")}))
    # What the asset is, by c2pa.created; what was done to it, by the other actions. A generative-fill edit
    # (trainedAlgorithmicMedia on c2pa.edited or c2pa.placed) of a captured photo is a partial AI edit:
    # read as the whole asset's source, a signed phone photo was "ai-generated", decisively.
    created, edits = set(f.created_source_types), set(f.edit_source_types)
    types = created | edits
    origin, declared = _c2pa_origin(f), _c2pa_origin(f, weighed=False)
    parent = "" if created or edits & _DST_CAPTURE or not declared else (
        "opened from an image whose own manifest's c2pa.created declares " + ", ".join(sorted(declared)[:3]))
    said = "; ".join([f"c2pa.created {t} ({dst.meaning(t)})" for t in sorted(created)][:3]
                     + ([parent] if parent else []) + [f"then {e}" for e in f.edits[:3]])
    partial = edits & _DST_AI or types & _DST_AI_PART
    captured = origin & _DST_CAPTURE
    if origin & _DST_AI:
        term = sorted(origin & _DST_AI)[0]
        how = f"c2pa.created: {term}" if created else quote(said, 600)
        ev.append(_ev("c2pa.ai-generated", "ai", f"C2PA declares the image generated by a trained model ({how}); "
                      f"{validity}", where, key="c2pa.ai-generated" + suffix, decisive=ok,
                      basis=BASIS_SIGNED if f.trusted else BASIS_CLAIM, source_type=term, **base))
    elif partial or types & _DST_COMPOSITE:
        # "Neither ... nor wholly generated" is what a capture declared beside the edit, or the composite term
        # itself, says; an AI edit of an image the manifest says nothing about is partial at least.
        what = ("partially synthetic (a computer-made element in it, generative AI or not)" if not partial else
                "partially AI-edited (an AI-generated element in it), neither a plain camera photo nor wholly "
                "generated" if declared & _DST_CAPTURE or types & _DST_AI_PART else
                "partially AI-edited at least (an AI-generated element in it; the manifest does not say where the "
                "rest came from)")
        ev.append(_ev("c2pa.ai-composite", "ai", f"C2PA declares the image {what}: {quote(said, 600)}; {validity}",
                      where, key="c2pa.ai-composite" + suffix, **base))
    elif types & _DST_ALGO:
        # On an edit the term is of the element the edit added: "not a camera capture" said of the image
        # contradicted the capture its own c2pa.created declared.
        what = (f"algorithmicMedia: {dst.meaning('algorithmicMedia')}" if created & _DST_ALGO else
                "an element made by an algorithm without a trained model (algorithmicMedia on an edit; not "
                f"generative AI) in the image: {quote(said, 600)}")
        ev.append(_ev("c2pa.algorithmic", "ai", f"C2PA declares {what}; {validity}", where,
                      key="c2pa.algorithmic" + suffix, **base))
    elif captured and f.status in ("valid", "unverified"):
        # Unverified: no validation reported, or only the signer's credential or the time in doubt (an
        # expired certificate on an older genuine photo) with nothing saying the bytes changed.
        # Valid but vouched for by no trust list (every signer without --c2pa-trust) is unverified too: a launderer
        # signs a generated image as digitalCapture with a certificate made for the purpose as easily as a camera signs
        # its photo, and counted as signed that was the 2 nats soft evidence may move toward real, all of it.
        cap = sorted(captured)[0]
        claim = ("" if not ok or f.trusted else "; counted as a claim: the trust list given does not vouch for the "
                 "signer" if f.trust_list else "; counted as a claim: no trust list vouches for the signer")
        ev.append(_ev("c2pa.capture", "real", f"C2PA declares {cap}: {dst.meaning(cap)}; "
                      f"{validity}{claim}", where, key="c2pa.capture" + ("" if f.trusted else ".unverified"),
                      source_type=cap, **base))
    elif captured:
        # No evidence toward real (STRENGTH above), but not silence either: the reader is told the file
        # carries a capture manifest that this image does not match, as any other self-contradiction.
        # The failures listed say which: an altered assertion (assertion.hashedURI.mismatch) leaves both
        # the image hash and the signature over the claim intact.
        what = ("a capture manifest beside another manifest store" if f.stores > 1
                else "a capture manifest that does not match this image (changed after signing, or the manifest was "
                "copied from another file)" if not f.content_matches
                else "a capture manifest whose signature does not verify" if not f.signature_valid
                else "a capture manifest that fails validation")
        conflicts.append(f"C2PA declares {sorted(captured)[0]} ({where}) but the manifest is INVALID "
                         f"({', '.join(f.failures[:4])}): {what}; it counts nothing toward real")
    elif f.claim_generator and names_ai_tool(f.claim_generator):
        ev.append(_ev("c2pa.generator-tool", "ai", f"C2PA claim generator is an AI image tool "
                      f"({quote(f.claim_generator)}); {validity}", where, key="c2pa.generator-tool" + suffix, **base))
    if set(f.ingredient_source_types) & (_DST_AI | _DST_COMPOSITE) and not (types | origin) & _DST_AI:
        ev.append(_ev("c2pa.ai-ingredient", "ai", "an ingredient of this C2PA manifest is declared AI-generated",
                      where, **base))
    # Terms weighed nothing (an edit without generative AI, digital art, a screenshot, an unknown term): said,
    # so that the reader sees what the manifest declares and that it was not guessed at.
    unweighed = [t for t in dict.fromkeys(f.source_types) if C2PA_SOURCE_TYPE_ITEM[dst.kind(t)] == "c2pa.source-type"
                 or (t in _DST_CAPTURE and t not in captured)]
    if unweighed:
        ev.append(_ev("c2pa.source-type", "neutral", "C2PA DigitalSourceType " + "; ".join(
            _unweighed_words(t) if t not in _DST_CAPTURE else f"= {t}: {dst.meaning(t)}, on an edit action: an "
            "element placed in, not how this image was made; not weighed" for t in unweighed[:5]), where,
            source_types=unweighed[:10]))
    return f


WATERMARK_MAX_PIXELS = 40_000_000


def watermark_reads_pixels(mode: str, w: int, h: int) -> bool:
    """Whether the watermark check decodes a w x h image's pixels (`meta` decodes them only then)."""
    # Under watermark.MIN_PIXELS the decoder measures nothing: `always` recorded such an image as checked.
    return (mode != "never" and watermark.MIN_PIXELS <= w * h <= WATERMARK_MAX_PIXELS and w > 0 and h > 0
            and (mode != "auto" or watermark.plausible_size(w, h)))


def _watermark(data: bytes, rep: ProvenanceReport, image, info: dict, opts: dict) -> None:
    mode = opts.get("watermark", "auto")
    w, h = rep.width or 0, rep.height or 0
    if mode == "never" or not w or not h:
        return
    if not watermark_reads_pixels(mode, w, h):
        rep.facts["watermark"] = {"checked": False, "reason": f"{w}x{h} is not a Stable Diffusion output size"
                                  if mode == "auto" and not watermark.plausible_size(w, h) else
                                  f"{w}x{h} is too small to carry the watermark: under {watermark.MIN_PIXELS:,} pixels"
                                  if w * h < watermark.MIN_PIXELS else "over 40 MP"}
        return
    try:
        rgb = _pixels(data, image, info, w, h)
    except Exception as exc:  # noqa: BLE001 - pixels are the decoder's business; note and move on
        rep.facts["watermark"] = {"checked": False, "reason": f"cannot decode pixels: {type(exc).__name__}"}
        return
    results = watermark.detect(rgb)
    rep.facts["watermark"] = {"checked": True, "results": [
        {"pattern": r.pattern, "agreement": round(r.agreement, 4), "threshold": r.threshold, "order": r.order}
        for r in results]}
    for r in results:
        if r.matched:
            rep.evidence.append(_ev(
                "watermark.match", "ai", f"Stable Diffusion invisible watermark '{r.pattern}' found "
                f"({r.agreement:.0%} of bits agree; threshold {r.threshold:.0%})", "pixels (DWT-DCT)",
                decisive=True, pattern=r.pattern, agreement=round(r.agreement, 4), channel_order=r.order,
                basis=BASIS_PIXELS))


# Source modes whose decoded image (decode._to_rgb) is Pillow's plain convert("RGB"),
# i.e. the very pixels the decode below would give; 16-bit and palette images are scaled
# or composited differently there, so they are decoded again.
_PLAIN_RGB_MODES = frozenset({"RGB", "RGBA", "L", "LA", "1", "CMYK", "YCbCr"})


def reusable_image(image, info: dict, w: int, h: int) -> bool:
    """Whether the scan's decoded image is the stored pixel grid the watermark
    check reads: full size (no JPEG draft), not rotated, same conversion, and
    decoded from the file as it is (not after the metadata-stripping retry). A PNG or WebP decoded without
    its metadata chunks over 8 MiB (info["metadata_withheld"]) is reused: text, EXIF, XMP, ICC and private
    chunks change none of Pillow's pixels (an EXIF orientation only rotates them, and rotated is not reused),
    and decoding the file again copied the chunk or failed on it (a 512x512 PNG with a 100 MB iTXt chunk:
    `cannot decode pixels: ValueError`, no watermark check, 667 MB for `scan -d metadata`)."""
    return (image is not None and getattr(image, "size", None) == (w, h) and not info.get("draft")
            and int(info.get("orientation", 1) or 1) == 1 and info.get("mode") in _PLAIN_RGB_MODES
            and "metadata_skipped_for_pixels" not in info)


def _pixels(data: bytes, image, info: dict, w: int, h: int):
    """Original-resolution RGB without EXIF rotation: the watermark lives in the stored pixel grid."""
    from ..decode import loadable, open_image, rgb_array

    if reusable_image(image, info, w, h):
        return rgb_array(image.convert("RGB") if image.mode != "RGB" else image)
    from ..quiet import quiet_warnings

    with quiet_warnings():
        with open_image(data) as im:
            if im.size[0] * im.size[1] > WATERMARK_MAX_PIXELS:
                raise ValueError("too large")
            loadable(im)
            if im.mode == "RGB":  # same pixels as convert("RGB"), one full-size copy fewer
                im.load()
                return rgb_array(im)
            return rgb_array(im.convert("RGB"))
