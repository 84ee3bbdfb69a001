"""The parsed facts that people read (`meta`'s table, the report's cards) in words.

`facts.c2pa.valid` is False both for a manifest whose image was changed after signing and for an intact
one whose certificate has expired, and c2pa-rs's own `state` says "Invalid" for both; `status` (valid,
unverified, invalid) is what the evidence is weighed by, so it is what these words say. Light: no
c2pa, no Pillow. The report words a saved run's facts too, which are whatever the record holds: every
field is read for the shape a scan writes and otherwise taken as absent, never trusted to be a list."""
from __future__ import annotations

from typing import Any, Mapping


def c2pa_status(c: Mapping[str, Any]) -> str:
    """The manifest's validation as the evidence weighs it, with the failure codes."""
    status = c.get("status")
    if not isinstance(status, str):
        status = "valid" if c.get("valid") is True else "invalid" if c.get("valid") is False else None
    failures = [str(f) for f in _list(c.get("failures"))]
    words = {"valid": ("signature and content hash valid, signer vouched for by a trust list" if c.get("trusted")
                       else "signature and content hash valid (signer not vouched for by the trust list given: "
                            "counted as a claim)" if isinstance(c.get("trust_list"), Mapping)
                       else "signature and content hash valid (signer not checked against a trust list: counted "
                            "as a claim)"),
             "unverified": ("signature and content hash check out, but signer NOT verified"
                            if c.get("signature_valid") and c.get("content_matches") else "signature NOT verified"),
             "invalid": "manifest INVALID"}.get(status or "", f"status {status or 'not given'}")
    stores = c.get("stores")
    # The reader reads one of several stores (a JPEG's first, a TIFF's last page's): said here too, or the line
    # read as the file's whole account.
    extra = (f"; {stores} manifest stores in the file, only one read" if isinstance(stores, int)
             and not isinstance(stores, bool) and stores > 1 else "")
    return words + (f" ({', '.join(failures)})" if failures else "") + extra


def c2pa_line(c: Mapping[str, Any]) -> str:
    # A manifest need not name its generator or signer (a hand-made one names neither): "not named", not "None".
    parts = [f"claim generator {_named(c.get('claim_generator'))}", f"signer {_named(c.get('signer'))}",
             c2pa_status(c)]
    if _list(c.get("actions")):
        parts.append("actions " + ", ".join(map(str, _list(c["actions"]))))
    types = [str(t) for t in _list(c.get("source_types"))]
    if types and "created_source_types" not in c:
        # A record written before the actions were told apart: plain terms.
        parts.append("source types " + ", ".join(types))
    elif types:
        # What c2pa.created declares is the image's source; a term on another action (a generative-fill
        # edit's trainedAlgorithmicMedia) describes a change to it: "source types digitalCapture,
        # trainedAlgorithmicMedia" read as two accounts of one image.
        left, words = [str(t) for t in _list(c["created_source_types"])], []
        for t in types:
            if t in left:
                left.remove(t)
                words.append(f"{t} (created)")
            else:
                words.append(f"{t} (on an edit)")
        parts.append("source types " + ", ".join(words))
    if _list(c.get("parent_source_types")):
        parts.append("opened from an image whose c2pa.created declares "
                     + ", ".join(map(str, _list(c["parent_source_types"]))))
    return "C2PA: " + "; ".join(parts)


def watermark_words(w: Mapping[str, Any]) -> str:
    """The watermark check: not run (why), or each pattern's bit agreement against its threshold."""
    if not w.get("checked"):
        return f"not checked ({w.get('reason') or 'no reason given'})"
    res = [r for r in _list(w.get("results")) if isinstance(r, Mapping)]
    found = [r for r in res if _num(r.get("agreement")) >= _num(r.get("threshold"), 2.0)]
    # One decimal: 115 of 136 bits (84.6%) printed as "85% of bits agree (a match needs 85%)" beside "none found".
    bits = "; ".join(f"'{r.get('pattern')}' {_num(r.get('agreement')):.1%} of bits agree "
                     f"(a match needs {_num(r.get('threshold')):.0%})" for r in res)
    return f"checked, {'FOUND' if found else 'none found (absence proves nothing)'}" + (f": {bits}" if bits else "")


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _named(v: Any) -> str:
    return "not named" if v is None or v == "" else str(v)


def _num(v: Any, default: float = 0.0) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
