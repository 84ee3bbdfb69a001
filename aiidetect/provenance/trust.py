"""A C2PA trust list given by the user (`--c2pa-trust FILE`, $AIIDETECT_C2PA_TRUST): PEM certificates of the
trust anchors (the C2PA conformance trust list, a newsroom's own CA) whose signers count as vouched for.

Read and checked once, before any file is scanned: a file that is not what it should be (not PEM, no
certificate in it, a private key, a folder, too big, unreadable) is a usage error, never "no trust list",
which would judge every manifest a mere claim while the user believes their anchors are applied. The
certificates are handed to the C2PA reader re-encoded from what `cryptography` parsed, so text between the
PEM blocks (the comments of a downloaded bundle) reaches no native parser.

The list's identity is the SHA-256 of its anchors (each certificate's DER bytes, sorted, duplicates dropped):
the same anchors in another order, with other comments or line endings, or split over other files, are the
same list; one anchor more or less is another. It goes into the result-cache key and the --db run identity
(the metadata detector's cache_identity), and into each record that read a manifest (facts.c2pa.trust_list).
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

ENV = "AIIDETECT_C2PA_TRUST"
# The C2PA conformance trust list is tens of kilobytes, a system's whole CA bundle a few hundred: past this the
# file is not a trust list (and would be held, parsed and handed to the reader for every manifest).
MAX_TRUST_BYTES = 4 * 1024 * 1024
MAX_ANCHORS = 5000

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}


def anchors_text(n) -> str:
    """"1 anchor", "145 anchors": a record's reason and the scan's summary line name a list by its count. "1 anchors"
    read as a slip; a count given by a hand-edited record is shown as it is."""
    return f"{n} anchor" if n == 1 else f"{n} anchors"


class TrustListError(ValueError):
    """A trust file that cannot be used; its message names the file and says why."""


@dataclass(frozen=True)
class TrustList:
    pem: str          # the anchors as the C2PA reader gets them
    sha256: str       # identity: see the module's docstring
    anchors: int

    def identity(self) -> dict[str, Any]:
        """What a cache key, a --db run and a record say of this list (not the certificates themselves)."""
        return {"sha256": self.sha256, "anchors": self.anchors}

    def option(self) -> dict[str, Any]:
        """The metadata detector's `c2pa_trust` option: the identity, and the PEM the reader needs (a Ray worker
        builds its detector from the options, and may not see the user's file)."""
        return {**self.identity(), "pem": self.pem}


def _read(path: str, label: str = "--c2pa-trust") -> bytes:
    shown = os.fsdecode(path)
    try:
        # Non-blocking open: a FIFO named here would otherwise wait for a writer forever, before any check.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise TrustListError(f"{label} {shown}: a folder, not a PEM file of trust anchors")
            if not stat.S_ISREG(st.st_mode):
                raise TrustListError(f"{label} {shown}: not a regular file (a PEM file of trust anchors)")
            data = fh.read(MAX_TRUST_BYTES + 1)
    except IsADirectoryError:
        raise TrustListError(f"{label} {shown}: a folder, not a PEM file of trust anchors") from None
    except OSError as exc:
        raise TrustListError(f"{label} {shown}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_TRUST_BYTES:
        raise TrustListError(f"{label} {shown}: over {MAX_TRUST_BYTES // (1024 * 1024)} MiB, too big for a "
                             "trust list (the C2PA one is tens of kilobytes)")
    return data


def _certificates(path: str, data: bytes, label: str = "--c2pa-trust") -> list[tuple[bytes, bytes]]:
    """(DER, PEM) of each certificate in the PEM `data`; TrustListError for anything else."""
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    shown = os.fsdecode(path)
    if not data.strip():
        raise TrustListError(f"{label} {shown}: empty (it must hold PEM certificates of trust anchors)")
    blocks = _blocks(path, data, label)
    if not blocks:
        hint = (" (a DER certificate? convert it: openssl x509 -inform der -in FILE -out FILE.pem)"
                if data[:1] == b"\x30" else "")
        raise TrustListError(f"{label} {shown}: no PEM certificate in it{hint}")
    out = []
    for n, (kind, block) in enumerate(blocks, 1):
        if kind not in _CERT_LABELS:
            # A private key given by mistake is named, never echoed.
            raise TrustListError(f"{label} {shown}: PEM block {n} is a {kind.decode('ascii', 'replace')}, "
                                 "not a certificate (a trust list holds only the anchors' certificates)")
        try:
            with warnings.catch_warnings():
                # Old root certificates in real bundles (a negative serial number) draw a deprecation warning per
                # certificate on stderr: noise for the user, whose list c2pa-rs judges.
                warnings.simplefilter("ignore")
                cert = x509.load_pem_x509_certificate(block.replace(b"X509 CERTIFICATE", b"CERTIFICATE"))
                leaf = _end_entity(cert)   # the warning comes at the first read of the extensions
        except Exception as exc:  # noqa: BLE001 - ValueError and the backend's own errors alike
            raise TrustListError(f"{label} {shown}: certificate {n} cannot be parsed "
                                 f"({str(exc)[:120]})") from None
        if leaf:
            # c2pa-rs vouches for a signer whose chain ends at an anchor; a signer's own certificate given as an
            # anchor (or in trust.allowed_list) made it "Trusted" in no test with c2pa-python 0.38.1: the user
            # who lists their camera's certificate would get claims, in silence.
            raise TrustListError(f"{label} {shown}: certificate {n} is a signer's own certificate, not a CA "
                                 "(a signer counts when its chain ends at an anchor: give the CA that issued it)")
        out.append((cert.public_bytes(serialization.Encoding.DER), cert.public_bytes(serialization.Encoding.PEM)))
        if len(out) > MAX_ANCHORS:
            raise TrustListError(f"{label} {shown}: over {MAX_ANCHORS} certificates, more than a trust list")
    return out


def _blocks(path: str, data: bytes, label: str) -> list[tuple[bytes, bytes]]:
    """(label, the whole block) of each PEM block in `data`, in one pass. A BEGIN line without its END line (a
    bundle cut short by its download) is a TrustListError: skipped, it was an anchor fewer, in silence. A regex
    matching BEGIN...END lazily searched to the end of the data from every BEGIN line: a 4 MiB file of them took
    hours."""
    out, at = [], 0
    while (m := _BEGIN.search(data, at)) is not None:
        end_line = b"-----END " + m.group(1) + b"-----"
        end = data.find(end_line, m.end())
        if end < 0:
            raise TrustListError(f"{label} {os.fsdecode(path)}: PEM block {len(out) + 1} "
                                 f"({m.group(1).decode('ascii', 'replace')}) has no END line: the file is cut short")
        at = end + len(end_line)
        out.append((m.group(1), data[m.start():at]))
    return out


def _end_entity(cert) -> bool:
    """Whether `cert` says it is no CA (basicConstraints cA false); one that says nothing (a v1 root) passes."""
    from cryptography import x509

    try:
        return not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    except Exception:  # noqa: BLE001 - an extension that does not parse: c2pa-rs judges it
        return False


def load_trust_list(paths: Iterable[str | os.PathLike | bytes], label: str = "--c2pa-trust") -> TrustList | None:
    """The anchors of every file in `paths` as one list; None when `paths` is empty. TrustListError for a file
    that is not a PEM file of certificates (its message starts with `label`, where the path was given)."""
    ders: dict[bytes, bytes] = {}
    total = 0
    for p in paths:
        p = os.fspath(p)
        data = _read(p, label)
        total += len(data)
        if total > MAX_TRUST_BYTES:
            # Per file alone, a thousand files of 4 MiB were 4 GB to hold and parse.
            raise TrustListError(f"{label}: the files given are over {MAX_TRUST_BYTES // (1024 * 1024)} MiB in "
                                 f"all (at {os.fsdecode(p)}), too big for a trust list")
        for der, pem in _certificates(p, data, label):
            ders.setdefault(der, pem)
    if not ders:
        return None
    if len(ders) > MAX_ANCHORS:
        raise TrustListError(f"{label}: over {MAX_ANCHORS} certificates in all, more than a trust list")
    ordered = sorted(ders)
    digest = hashlib.sha256()
    for der in ordered:
        digest.update(len(der).to_bytes(4, "big") + der)
    pem = b"".join(ders[d] for d in ordered)
    return TrustList(pem=pem.decode("ascii"), sha256=digest.hexdigest(), anchors=len(ordered))


def paths_from_env(environ=None) -> list[str]:
    """The files of $AIIDETECT_C2PA_TRUST (os.pathsep-separated, empty entries skipped)."""
    value = (os.environ if environ is None else environ).get(ENV, "")
    return [p for p in value.split(os.pathsep) if p]


def resolve(paths: Sequence[str | os.PathLike | bytes] | str | os.PathLike | None) -> TrustList | None:
    """The trust list of `paths` (one path or several); None: $AIIDETECT_C2PA_TRUST's, if set."""
    if paths is None:
        return load_trust_list(paths_from_env(), f"${ENV}:")
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    return load_trust_list(paths)
