"""Content Credentials signed here, for tests and fuzzing seeds: an ES256 CA
and end-entity certificate made on the spot (valid for a day), and images
signed with them through the official c2pa library (c2pa-python, in the
base install, brings cryptography).

`python -m aiidetect.testing.c2pa_signing expired OUT.jpg` writes a capture manifest
signed with a certificate that has since expired (the test file
tests/provenance/data/c2pa_expired_signer_capture.jpg was made so): the library
refuses to sign with a certificate outside its validity, so the certificate is
made to end a few seconds after signing, and the command waits for that."""
from __future__ import annotations

import datetime
import io
import json


def make_signer(valid_for: datetime.timedelta = datetime.timedelta(days=1)):
    """-> (the c2pa module, a Signer) whose end-entity certificate ends `valid_for` from now."""
    return make_signer_and_ca(valid_for)[0]


def make_signer_and_ca(valid_for: datetime.timedelta = datetime.timedelta(days=1), ca_name: str = "aiidetect test CA",
                       ocsp_url: str | None = None):
    """-> ((the c2pa module, a Signer), the CA's certificate as PEM): the CA is what a trust list names as an
    anchor (`--c2pa-trust`), so a test can vouch for the signer or not. ocsp_url: an OCSP responder the signer's
    certificate names (its Authority Information Access), which a reader that goes online would ask."""
    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aiidetect tests")])

    def ku(ca):
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    base = lambda subj, iss, pub, end=now + datetime.timedelta(days=1): (  # noqa: E731
        x509.CertificateBuilder().subject_name(subj).issuer_name(iss).public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(end))
    ca = (base(name(ca_name), name(ca_name), ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(ku(True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (base(name("aiidetect test signer"), ca.subject, key.public_key(), now + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(ku(False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if ocsp_url:
        leaf = leaf.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    leaf = leaf.sign(ca_key, hashes.SHA256())
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    pkey = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    return ((c2pa, c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, pkey, None))),
            ca.public_bytes(serialization.Encoding.PEM))


def sign(signer, img, fmt: str, source_type: str | None, thumbnail: bool = True, xmp: bytes | None = None,
         save: dict | None = None, edits: tuple[tuple[str, str], ...] = (), parent: bytes | None = None) -> bytes:
    """`img` (a PIL image) saved as `fmt` with a signed manifest whose c2pa.created
    action declares IPTC digital source type `source_type` (thumbnail=False: no
    thumbnail in the manifest, for a small file; xmp: an XMP packet saved with the
    image before signing, so the signature covers it, as an exporter writes both; save: more of Pillow's save
    options, such as a PNG's `pnginfo` text chunks, signed over likewise; edits: (action, source type) pairs
    declared after it, such as ("c2pa.edited", "trainedAlgorithmicMedia") for a generative-fill edit; parent: a
    signed JPEG this image was opened from, as an editor writes it: the first action is then c2pa.opened, on
    that parentOf ingredient, declaring `source_type` if given)."""
    c2pa, s = signer
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "HEIF": "image/heic",
            "AVIF": "image/avif", "TIFF": "image/tiff"}[fmt]
    action = {"action": "c2pa.created"} if parent is None else {"action": "c2pa.opened",
                                                                 "parameters": {"ingredientIds": ["parent"]}}
    if source_type:
        action["digitalSourceType"] = f"http://cv.iptc.org/newscodes/digitalsourcetype/{source_type}"
    actions = [action] + [{"action": a, "digitalSourceType": f"http://cv.iptc.org/newscodes/digitalsourcetype/{t}"}
                          for a, t in edits]
    manifest = {"claim_generator_info": [{"name": "aiidetect-tests", "version": "1.0"}], "title": "test",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}]}
    src, out = io.BytesIO(), io.BytesIO()
    img.save(src, fmt, **({"xmp": xmp} if xmp is not None else {}), **(save or {}))
    src.seek(0)
    ctx = None if thumbnail else c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))
    with (c2pa.Builder(manifest) if ctx is None else c2pa.Builder(manifest, context=ctx)) as b:
        if parent is not None:
            b.add_ingredient(json.dumps({"title": "parent.jpg", "relationship": "parentOf", "label": "parent"}),
                             "image/jpeg", io.BytesIO(parent))
        b.sign(s, mime, src, out)
    return out.getvalue()


def sign_expired(seconds: float = 2.0) -> bytes:
    """A small JPEG whose digitalCapture manifest was signed with a certificate that
    has expired since: every hash matches, only the credential's validity has ended
    (as on an older genuine photo). Takes `seconds` + 1 to make."""
    import time

    from PIL import Image

    signer = make_signer(datetime.timedelta(seconds=seconds))
    data = sign(signer, Image.new("RGB", (16, 16), (120, 90, 60)), "JPEG", "digitalCapture", thumbnail=False)
    time.sleep(seconds + 1)
    return data


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "expired":
        sys.exit("usage: python -m aiidetect.testing.c2pa_signing expired OUT.jpg")
    with open(sys.argv[2], "wb") as fh:
        fh.write(sign_expired())
