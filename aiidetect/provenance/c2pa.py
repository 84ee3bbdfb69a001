"""C2PA / Content Credentials, read with the official c2pa-python library.

Without the user's trust list (--c2pa-trust, provenance/trust.py) "signing certificate untrusted" is
expected and is reported as "signer not checked against a trust list", never as a
failure; with one, a signer that chains to none of its anchors reads so too ("not vouched for by the trust
list given"), and one that does reads "Trusted" (signed evidence). The other validation failures fall in
two kinds (`status`):

- "unverified": only the signing credential or the time is in doubt (an expired
  or revoked certificate, a signing time outside its validity, a time stamp
  that does not verify) while nothing says the bytes differ from the signed ones.
  An older genuine photo signed with a once-valid certificate looks like this.
  What the manifest declares is a claim: a capture weighs what an unverified one
  does, and the reason is named.
- "invalid": any other failure (a content hash or hashed-URI mismatch, a bad
  claim signature, a missing or malformed part, a code not known here). A capture
  it declares counts nothing toward real: a photo's manifest pasted into a
  generated image looks exactly like that.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from .recordtext import MAX_DETAIL_CHARS, quote
from .sourcetypes import short_source_type
from .trust import anchors_text

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "HEIF": "image/heif", "AVIF": "image/avif",
        "TIFF": "image/tiff", "GIF": "image/gif"}
# Expected offline: no network for OCSP / timestamps, and no trust list unless the user gives one (a signer
# none of its anchors vouches for is then untrusted as before).
_BENIGN_FAILURES = {"signingCredential.untrusted", "signingCredential.ocsp.skipped", "timeStamp.untrusted"}
# Failures about who signed and when, not about the bytes (C2PA 2.x validation codes): the manifest is
# intact as far as these say, but its signer's credential is not established. Every other failure code,
# including any this list does not know, makes the manifest invalid.
_CREDENTIAL_PREFIXES = ("signingCredential.", "timeStamp.")
_CREDENTIAL_CODES = {"claimSignature.outsideValidity"}
# Credential codes that are not a mere lapse: a revoked certificate means its key must not be believed
# (whoever holds it can sign a capture claim for any image), and a time stamp that does not match the
# signature it vouches for means the signature block was altered. These make the manifest invalid.
_CREDENTIAL_BREACHES = {"signingCredential.revoked", "signingCredential.ocsp.revoked", "timeStamp.mismatch"}
# The credential problems in words, for the record's reader.
_CREDENTIAL_WORDS = {
    "signingCredential.expired": "the signing certificate has expired",
    "signingCredential.revoked": "the signing certificate was revoked",
    "signingCredential.ocsp.revoked": "the signing certificate was revoked",
    "signingCredential.invalid": "the signing certificate is not one a C2PA signer may use",
    "claimSignature.outsideValidity": "it was signed outside the certificate's validity period",
}

# The codes that say the image's bytes are not the ones the manifest hashed. Other mismatches
# (claimSignature.mismatch, assertion.hashedURI.mismatch) are about the manifest itself: a bad
# signature was reported as "the image is not the one that was signed".
_CONTENT_HASH_MISMATCH = {"assertion.dataHash.mismatch", "assertion.bmffHash.mismatch",
                          "assertion.boxesHash.mismatch", "assertion.collectionHash.mismatch"}


def is_credential_problem(code: str) -> bool:
    """A failure about who signed and when, not about the bytes (a breach excepted)."""
    if code in _CREDENTIAL_BREACHES:
        return False
    return code.startswith(_CREDENTIAL_PREFIXES) or code in _CREDENTIAL_CODES


MAX_LIST_ITEMS = 50   # of each list a record keeps (actions, source types, failures)
_NOT_RECORDED = ("edit_source_types", "edits", "store_read")


class C2paUnavailable(RuntimeError):
    pass


@dataclass
class C2paFacts:
    where: str = ""
    state: str = ""                       # Valid / Invalid / Trusted (c2pa's own word)
    signature_valid: bool = False
    content_matches: bool = True
    failures: list[str] = field(default_factory=list)
    claim_generator: str | None = None
    signer: str | None = None
    signed_at: str | None = None
    title: str | None = None
    actions: list[str] = field(default_factory=list)
    source_types: list[str] = field(default_factory=list)             # of the active manifest's actions
    created_source_types: list[str] = field(default_factory=list)     # of its c2pa.created actions
    edit_source_types: list[str] = field(default_factory=list)        # of its other actions (edits, placed)
    edits: list[str] = field(default_factory=list)                    # "term (action)" of the latter, in words
    ingredient_source_types: list[str] = field(default_factory=list)  # of ingredients' manifests
    parent_source_types: list[str] = field(default_factory=list)      # of c2pa.created of the image it was opened from
    manifests: int = 0
    # Manifest stores in the file (containers.Blobs.c2pa_stores). The C2PA specification allows one; the reader
    # reads the first of a JPEG's or WebP's and reports nothing of the others. More than one means a store was
    # added after signing (a camera's pasted in front of a generator's, or the reverse), so the one read is not
    # the file's account of itself: the manifest is invalid, whatever its own signature says.
    stores: int = 1
    # The trust list the signer was checked against (trust.TrustList.identity: sha256, anchors); None: none given.
    trust_list: dict | None = None
    # Which of several stores the reader read, in words: a JPEG's or WebP's first, a TIFF's last page's (c2pa-rs
    # 0.91.3 keeps the C2PA tag of the last page that has one). Not recorded: the format says it.
    store_read: str = "the first"

    @property
    def valid(self) -> bool:
        return self.signature_valid and self.content_matches and not self.failures and self.stores <= 1

    @property
    def trusted(self) -> bool:
        """Valid, and its signer vouched for by a trust list (c2pa's own state "Trusted"). Only with the user's trust
        list (--c2pa-trust): without one a certificate anyone made for themselves signs as validly as a camera
        maker's, so a valid signature alone establishes only that the manifest is intact, not who made it."""
        return self.valid and self.state.lower() == "trusted"

    @property
    def credential_problems(self) -> list[str]:
        return [c for c in self.failures if is_credential_problem(c)]

    @property
    def status(self) -> str:
        """valid | unverified (no validation reported, or only the credential or time in doubt) | invalid."""
        if self.valid:
            return "valid"
        if self.stores > 1:
            return "invalid"
        return "invalid" if any(not is_credential_problem(c) for c in self.failures) else "unverified"

    def stores_text(self) -> str:
        """What the other manifest stores mean, in words; "" for a file with one."""
        if self.stores <= 1:
            return ""
        return (f"the file holds {self.stores} C2PA manifest stores where a file carries one (at least one was "
                f"added after signing): only {self.store_read} was read")

    def validity_text(self) -> str:
        if self.trusted:
            # Said apart: "signer not checked against a trust list" beside the signed weight contradicted it.
            return (f"signed by {quote(self.signer) or 'unknown signer'}; signature valid; signer vouched for by a "
                    "trust list")
        if self.valid and self.trust_list:
            return (f"signed by {quote(self.signer) or 'unknown signer'}; signature valid; signer NOT vouched for by "
                    f"the trust list given ({anchors_text(self.trust_list.get('anchors'))}, sha256 "
                    f"{str(self.trust_list.get('sha256'))[:12]}...), so the manifest is only a claim")
        if self.valid:
            # "valid" only says the manifest is intact since signing, not who signed: offline, a
            # certificate anyone made for themselves signs just as validly as a camera maker's.
            return (f"signed by {quote(self.signer) or 'unknown signer'}; signature valid; "
                    "signer not checked against a trust list (a self-made certificate signs as validly)")
        if self.stores > 1:
            codes = f" ({', '.join(self.failures[:4])})" if self.failures else ""
            return f"signed by {quote(self.signer) or 'unknown signer'}; manifest INVALID{codes}: {self.stores_text()}"
        if not self.failures:
            return (f"signed by {quote(self.signer) or 'unknown signer'}; signature NOT verified (the C2PA reader "
                    "reported no validation), so the manifest is only a claim")
        if self.status == "unverified":
            codes = self.credential_problems
            why = "; ".join(dict.fromkeys(_CREDENTIAL_WORDS.get(c, f"the signing credential or time stamp "
                                                                      f"could not be verified ({c})") for c in codes[:4]))
            intact = ("signature and content hash check out, but " if self.signature_valid and self.content_matches
                      else "")
            return (f"signed by {quote(self.signer) or 'unknown signer'}; {intact}signer NOT verified: {why} "
                    f"({', '.join(codes[:4])}), so the manifest is only a claim")
        why = ", ".join(self.failures[:4])
        text = f"signed by {quote(self.signer) or 'unknown signer'}; manifest INVALID ({why})"
        if not self.content_matches:
            # The codes are jargon; what they mean for the claim is not.
            text += ("; the image is not the one that was signed (changed after signing, or the manifest was "
                     "copied from another file), so what it declares is not established for this image")
        return text

    def to_dict(self) -> dict[str, Any]:
        from .recordtext import clip_fields

        # The edits' terms are in source_types already (and each action in actions): a second and third
        # copy of a hand-made manifest's 2,000 edits would grow the record past its bound.
        d = {k: v for k, v in self.__dict__.items() if v not in (None, "", []) and k not in _NOT_RECORDED
             and (k != "stores" or v > 1)}
        if self.source_types:
            # Kept when empty too: every source type then came from an edit, which the words say.
            d["created_source_types"] = self.created_source_types
        d["valid"] = self.valid
        d["status"] = self.status
        if self.trusted:   # only then: a valid signature alone is the file's own claim (docs/provenance.md)
            d["trusted"] = True
        # The manifest's lists are whatever the sender wrote: 2,001 actions in a 200 KB file made an
        # 88 KB record, and nothing bounds a hand-made manifest. The record keeps the first
        # MAX_LIST_ITEMS of each (each clipped) and says in `truncated` how many there were.
        cut = {k: len(v) for k, v in d.items() if isinstance(v, list) and len(v) > MAX_LIST_ITEMS}
        out = clip_fields({k: v[:MAX_LIST_ITEMS] if isinstance(v, list) else v for k, v in d.items()})
        if cut:
            out["truncated"] = {**out.get("truncated", {}), **cut}
        return out


def _not_read(problem: str) -> ValueError:
    return ValueError(f"C2PA manifest store not read: {problem} (past what a real file holds; the C2PA reader's "
                      "time or memory grows with it and cannot be stopped)")


def check_store(store_bytes: int, fmt: str | None = None, cut: bool = False) -> None:
    """Raises ValueError when a manifest store of `store_bytes` (containers.Blobs.jumbf_bytes, the bytes of its
    segments, chunks, boxes or tags as the walk saw them) is too big to hand to the reader, or the walk of a `fmt`
    file stopped (`cut`) where more of it may follow."""
    from .containers import c2pa_store_problem

    problem = c2pa_store_problem(store_bytes, fmt, cut)
    if problem:
        raise _not_read(problem)


def read_c2pa(data: bytes, fmt: str | None, where: str = "", chunks: int = 0,
              trust: dict | None = None) -> C2paFacts:
    """Raises C2paUnavailable (library missing) or ValueError (store unreadable, or a container too
    big to hand to the reader). chunks: PNG/WebP chunks the container walker saw. The store's size is
    check_store's (its caller's, which has the walk's count). trust: a trust list's option
    (trust.TrustList.option: its PEM anchors and identity), whose anchors make a signer "Trusted"."""
    try:
        import c2pa as lib
    except ImportError as exc:  # optional extra: pip install 'aiidetect[provenance]'
        raise C2paUnavailable("c2pa-python not installed (pip install 'aiidetect[provenance]')") from exc
    from .containers import c2pa_structure_problem

    problem = c2pa_structure_problem(data, fmt, chunks)
    if problem:
        raise _not_read(problem)
    mime = MIME.get(fmt or "", "image/jpeg")
    try:
        ctx = _offline_context(lib, (trust or {}).get("pem"))
        with (lib.Reader(mime, io.BytesIO(data), context=ctx) if ctx is not None
              else lib.Reader(mime, io.BytesIO(data))) as r:
            store = json.loads(r.json())
            state = r.get_validation_state() or ""
    except Exception as exc:  # noqa: BLE001 - C2paError subclasses, and anything the native side raises
        if "remote manifest" in str(exc):
            raise ValueError("C2PA manifest is stored remotely (XMP dcterms:provenance URL); not fetched: "
                             "reading a file never goes online") from exc
        raise ValueError(f"C2PA manifest store unreadable: {str(exc)[:200]}") from exc
    f = summarize(store, state, where)
    if trust:
        f.trust_list = {k: trust[k] for k in ("sha256", "anchors") if k in trust}
    return f


def _offline_context(lib, anchors: str | None = None):
    """c2pa-rs fetches a manifest from the URL a file's XMP names (dcterms:provenance) by default:
    any file scanned here would call a server of its sender's choosing (telling it when and from
    where it was read, or reaching into the local network). Offline reading only."""
    offline: dict = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if anchors:
        # trust.trust_anchors is the setting c2pa-rs reads the C2PA trust list from; a signer whose chain ends at
        # one of them reads "Trusted". verify.verify_trust stays on: turned off, c2pa-rs reports no untrusted
        # signer at all, and every self-made certificate would look vouched for.
        offline["trust"] = {"trust_anchors": anchors}
    if hasattr(lib, "Context"):
        return lib.Context(lib.Settings.from_dict(offline))
    lib.load_settings(json.dumps(offline))  # older c2pa-python: the thread-local settings its Reader reads
    return None


def _d(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list:
    return v if isinstance(v, list) else []


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


def _codes(statuses: Any) -> list[str]:
    return [str(s["code"]) for s in _l(statuses) if isinstance(s, dict) and s.get("code")]


def _actions(manifest: Any) -> list[dict]:
    """The action objects of a manifest's c2pa.actions* assertions. An assertion's
    data is whatever CBOR the file carried, so every level is type-checked."""
    return [act for a in _l(_d(manifest).get("assertions"))
            if isinstance(a, dict) and str(a.get("label", "")).startswith("c2pa.actions")
            for act in _l(_d(a.get("data")).get("actions")) if isinstance(act, dict)]


def _source_type(act: dict) -> str | None:
    """The term an action declares, on the action itself or in its parameters; None where it declares none."""
    value = act.get("digitalSourceType") or _d(act.get("parameters")).get("digitalSourceType")
    return short_source_type(str(value))[:MAX_DETAIL_CHARS] if value else None


def _created_terms(manifest: Any) -> list[str]:
    return [term for act in _actions(manifest)
            if act.get("action") == "c2pa.created" and (term := _source_type(act)) is not None]


def _parent_created(manifests: dict, manifest: dict) -> list[str]:
    """What c2pa.created declares in the manifest of the image `manifest`'s asset was opened from (its parentOf
    ingredient's), followed up the chain of parents while a parent was itself opened. An editor that opens a
    generated image and saves it writes c2pa.opened, not c2pa.created: the parent's declaration is then the
    only account of how the pixels came to be. Each manifest is visited once (a chain is what its sender wrote)."""
    seen: set[str] = set()
    while True:
        parent = next((i for i in _l(manifest.get("ingredients"))
                       if isinstance(i, dict) and i.get("relationship") == "parentOf"), {})
        label = parent.get("active_manifest") or parent.get("manifest")
        if not isinstance(label, str) or label in seen or not isinstance(manifests.get(label), dict):
            return []
        seen.add(label)
        manifest = manifests[label]
        terms = _created_terms(manifest)
        if terms:
            return terms[:MAX_LIST_ITEMS]


def summarize(store: dict[str, Any], state: str, where: str = "") -> C2paFacts:
    f = C2paFacts(where=where, state=state)
    manifests = _d(store.get("manifests"))
    f.manifests = len(manifests)
    active_label = store.get("active_manifest")
    active = _d(manifests.get(active_label)) if isinstance(active_label, str) else {}
    f.title = _s(active.get("title"))
    cg = _s(active.get("claim_generator"))
    if not cg and active.get("claim_generator_info"):
        infos = _l(active["claim_generator_info"])
        cg = ", ".join(f"{i.get('name', '?')} {i.get('version', '')}".strip() for i in infos if isinstance(i, dict))
    f.claim_generator = cg
    si = _d(active.get("signature_info"))
    f.signer = _s(si.get("common_name")) or _s(si.get("issuer"))
    if si.get("issuer") and si.get("common_name"):
        f.signer = f"{si['common_name']} ({si['issuer']})"
    f.signed_at = _s(si.get("time"))
    for act in _actions(active):
        name = str(act.get("action"))[:MAX_DETAIL_CHARS]
        f.actions.append(name)   # a label ("c2pa.created"), not a text
        term = _source_type(act)
        if term is not None:
            f.source_types.append(term)
            # What c2pa.created declares is how the asset itself came to be; on any other action
            # (c2pa.edited, c2pa.placed, ...) the term describes a change made to an existing asset: a
            # photo's generative-fill edit declares trainedAlgorithmicMedia there, and read as the whole
            # asset's source it made a signed camera capture "ai-generated".
            (f.created_source_types if name == "c2pa.created" else f.edit_source_types).append(term)
            if name != "c2pa.created":
                f.edits.append(f"{term} ({name})")
    if not f.created_source_types:
        f.parent_source_types = _parent_created(manifests, active)
    # Source types declared inside ingredient manifests (e.g. an AI layer composited in).
    for label, m in manifests.items():
        if label == active_label:
            continue
        f.ingredient_source_types += [term for act in _actions(m) if (term := _source_type(act)) is not None]
    results = _d(_d(store.get("validation_results")).get("activeManifest"))
    success = set(_codes(results.get("success")))
    failures = _codes(results.get("failure"))
    if not results:  # older layout: a flat validation_status list of problems
        failures = _codes(store.get("validation_status"))
        # No problem listed is not a checked signature (a reader that did not validate lists none):
        # only the reader's own verdict says the signature was checked.
        success = {"claimSignature.validated"} if not failures and str(state).lower() in ("valid", "trusted") \
            else set()
    f.failures = [c for c in failures if c not in _BENIGN_FAILURES]
    # An expired or untrusted credential is not a broken signature: the signature over the claim still
    # verifies (its own code says so), it is the signer that is not established (`status`).
    f.signature_valid = "claimSignature.validated" in success and not any(
        c.startswith("claimSignature") and not is_credential_problem(c) for c in f.failures)
    f.content_matches = not any(c in _CONTENT_HASH_MISMATCH for c in f.failures)
    return f
