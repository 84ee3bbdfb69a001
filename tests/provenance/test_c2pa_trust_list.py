"""A newsroom's own C2PA trust list (`--c2pa-trust`, docs/provenance.md "A trust list"): without one no signer
was ever "Trusted", so a capture signed by the newsroom's own cameras weighed what a self-signed one does and an
AI declaration signed by a vouched-for tool stayed the file's own claim. The CA is made here, the manifest signed
with its leaf; another CA made alike must not vouch for it."""
from __future__ import annotations

import pytest
from PIL import Image

from aiidetect.testing import c2pa_signing
from conftest import run_cli_in_process

pytest.importorskip("c2pa")


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """(folder, capture JPEG, AI JPEG, the signer's CA PEM, another CA's PEM)."""
    d = tmp_path_factory.mktemp("trust")
    signer, ca = c2pa_signing.make_signer_and_ca()
    _, other = c2pa_signing.make_signer_and_ca(ca_name="another CA")
    img = Image.new("RGB", (16, 16), (120, 90, 60))
    capture = d / "capture.jpg"
    capture.write_bytes(c2pa_signing.sign(signer, img, "JPEG", "digitalCapture", thumbnail=False))
    ai = d / "ai.jpg"
    ai.write_bytes(c2pa_signing.sign(signer, img, "JPEG", "trainedAlgorithmicMedia", thumbnail=False))
    (d / "ca.pem").write_bytes(b"# our cameras' CA\r\n" + ca)
    (d / "other.pem").write_bytes(other)
    return d, capture, ai, ca, other


def _report(path, trust):
    from aiidetect.api import meta_report

    r = meta_report(str(path), watermark="never", c2pa_trust=trust)
    return r["facts"]["c2pa"], {e["id"]: e for e in r["evidence"]}


def test_a_capture_counts_as_signed_only_for_a_signer_the_trust_list_vouches_for(signed):
    d, capture, _, _, _ = signed
    facts, ev = _report(capture, ())   # today's behaviour: no list, a valid signature is a claim
    assert facts["state"] == "Valid" and "trusted" not in facts and "trust_list" not in facts
    assert ev["c2pa.capture"]["strength"] == 0.5
    facts, ev = _report(capture, [d / "ca.pem"])
    assert facts["state"] == "Trusted" and facts["trusted"] is True, facts
    assert facts["trust_list"]["anchors"] == 1 and len(facts["trust_list"]["sha256"]) == 64
    assert ev["c2pa.capture"]["strength"] == 2.0 and "vouched for by a trust list" in ev["c2pa.capture"]["detail"]
    facts, ev = _report(capture, [d / "other.pem"])
    assert facts["state"] == "Valid" and "trusted" not in facts and facts["trust_list"]["anchors"] == 1
    assert ev["c2pa.capture"]["strength"] == 0.5
    assert "NOT vouched for by the trust list given (1 anchor, sha256" in ev["c2pa.manifest"]["detail"]
    from aiidetect.provenance.factwords import c2pa_status   # meta's C2PA line, the report's card

    assert "signer not vouched for by the trust list given: counted as a claim" in c2pa_status(facts)


def test_an_ai_declaration_from_a_vouched_for_signer_rests_on_a_signature(signed):
    from aiidetect.fusion import fuse
    from aiidetect.provenance import analyze
    from aiidetect.provenance.trust import load_trust_list
    from aiidetect.metadata.detector import result_from_evidence

    d, _, ai, _, _ = signed
    data = ai.read_bytes()
    for files, basis in (((), "claim"), ([d / "other.pem"], "claim"), ([d / "ca.pem"], "signed")):
        tl = load_trust_list(files)
        rep = analyze(data, "ai.jpg", options={"watermark": "never", **({"c2pa_trust": tl.option()} if tl else {})})
        ev = next(e for e in rep.evidence if e.id == "c2pa.ai-generated")
        assert ev.data["basis"] == basis, (files, ev.data)
        reason = fuse({"metadata": result_from_evidence(rep.evidence)}).reasons[0]
        assert ("so it counts as the file's own claim" in reason) == (basis == "claim"), reason


def test_the_trust_list_is_in_the_cache_key_the_db_run_and_the_record(signed, tmp_path, monkeypatch):
    from aiidetect.api import ScanOptions, Scanner

    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AIIDETECT_C2PA_TRUST", raising=False)
    d, capture, _, _, _ = signed
    db = tmp_path / "runs.sqlite"

    def scan(trust):
        with Scanner(ScanOptions(detectors=["metadata"], watermark="never", db=db, c2pa_trust=trust)) as s:
            (rec,) = list(s.scan([str(capture)]))
        return rec.to_dict()["detectors"]["metadata"]

    trusted = scan([d / "ca.pem"])
    assert trusted["facts"]["c2pa"]["state"] == "Trusted"
    # The same store without the list: another run, read again (a resume would have served "Trusted").
    plain = scan(())
    assert plain["facts"]["c2pa"]["state"] == "Valid" and "trust_list" not in plain["facts"]["c2pa"]
    assert plain["identity"] != trusted["identity"]
    other = scan([d / "other.pem"])
    assert len({plain["identity"], trusted["identity"], other["identity"]}) == 3
    assert other["facts"]["c2pa"]["state"] == "Valid"


def test_the_detector_names_the_list_by_its_identity_not_its_certificates(signed):
    from aiidetect.api import ScanOptions, build_detectors

    d = signed[0]
    (det,), _ = build_detectors(ScanOptions(detectors=["metadata"], c2pa_trust=[d / "ca.pem"]))
    ident = det.cache_identity()["options"]["c2pa_trust"]
    assert set(ident) == {"sha256", "anchors"}, ident
    assert "BEGIN CERTIFICATE" not in repr(det.describe())
    (plain,), _ = build_detectors(ScanOptions(detectors=["metadata"], c2pa_trust=()))
    assert "c2pa_trust" not in plain.cache_identity()["options"]


def test_the_identity_is_the_anchors_not_the_file_s_text(signed, tmp_path):
    from aiidetect.provenance.trust import load_trust_list

    d, _, _, ca, other = signed
    (tmp_path / "both.pem").write_bytes(b"other first\n" + other.replace(b"\n", b"\r\n") + b"\n" + ca + ca)
    one = load_trust_list([d / "ca.pem", d / "other.pem"])
    same = load_trust_list([tmp_path / "both.pem"])
    assert (one.sha256, one.anchors) == (same.sha256, same.anchors) == (one.sha256, 2)
    assert load_trust_list([d / "ca.pem"]).sha256 != one.sha256


def _key_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _leaf_pem() -> bytes:
    """A signer's own certificate (basicConstraints cA false), self-issued: what a user might list for one camera."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key, now = ec.generate_private_key(ec.SECP256R1()), datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "one camera")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(pem: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("kind, said", [
    ("missing", "cannot be read"), ("folder", "a folder"), ("empty", "empty"), ("text", "no PEM certificate"),
    ("der", "a DER certificate?"), ("key", "is a PRIVATE KEY, not a certificate"),
    ("broken", "certificate 2 cannot be parsed"), ("huge", "too big for a trust list"),
    ("device", "not a regular file"), ("leaf", "certificate 2 is a signer's own certificate, not a CA"),
    ("cut", "PEM block 2 (CERTIFICATE) has no END line"),
])
def test_a_file_that_is_not_a_trust_list_is_a_usage_error(signed, tmp_path, kind, said):
    from aiidetect.provenance import trust

    d, capture, _, ca, _ = signed
    f = tmp_path / "trust.pem"
    if kind == "folder":
        f.mkdir()
    elif kind == "device":
        f = "/dev/zero"
    elif kind != "missing":
        f.write_bytes({"empty": b"\n \n", "text": b"hello, not a certificate\n", "der": _der(ca),
                       "key": ca + _key_pem(), "leaf": ca + _leaf_pem(),
                       "broken": ca + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                       "huge": ca + b"#" * trust.MAX_TRUST_BYTES,
                       # A bundle cut short (an anchor fewer, in silence), its BEGIN lines many: each was searched
                       # to the end of the file for its END, quadratic (hours for 4 MiB of them).
                       "cut": ca + b"-----BEGIN CERTIFICATE-----\nMIIB\n" * 2000}[kind])
    for cmd in (["meta", str(capture)], ["scan", "-d", "metadata", "--no-cache", str(capture)]):
        r = run_cli_in_process(*cmd, "--c2pa-trust", str(f))
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert said in r.stderr and str(f) in r.stderr, r.stderr
        assert "PRIVATE KEY-----" not in r.stderr and not r.stdout.strip()


def test_the_environment_names_the_default_list(signed):
    import json

    d, capture, _, _, _ = signed
    r = run_cli_in_process("meta", str(capture), "-f", "json", "--watermark", "never",
                           env={"AIIDETECT_C2PA_TRUST": f"{d / 'other.pem'}:{d / 'ca.pem'}"})
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)[0]["facts"]["c2pa"]
    assert facts["state"] == "Trusted" and facts["trust_list"]["anchors"] == 2
    r = run_cli_in_process("meta", str(capture), env={"AIIDETECT_C2PA_TRUST": str(d / "nothing.pem")})
    assert r.returncode == 2 and "$AIIDETECT_C2PA_TRUST" in r.stderr, r.stderr


def test_every_command_that_reads_manifests_takes_the_list():
    from aiidetect.cli import app
    import typer.main

    cli = typer.main.get_command(app)
    for name in ("scan", "meta", "eval", "calibrate"):
        opts = {o for p in cli.commands[name].params for o in getattr(p, "opts", ())}
        assert "--c2pa-trust" in opts, name


def test_the_scan_summary_names_the_list_that_judged(signed, tmp_path):
    from aiidetect.provenance.trust import load_trust_list

    d, capture, _, _, _ = signed
    r = run_cli_in_process("scan", "-d", "metadata", "--no-cache", "-f", "jsonl", str(capture),
                           "--c2pa-trust", str(d / "ca.pem"))
    assert r.returncode == 0, r.stderr
    assert f"C2PA trust list: 1 anchor, sha256 {load_trust_list([d / 'ca.pem']).sha256}" in r.stderr, r.stderr
    assert '"state": "Trusted"' in r.stdout


def test_a_fifo_named_as_the_trust_list_is_refused_without_waiting_for_a_writer(tmp_path):
    import os
    import threading

    from aiidetect.provenance.trust import TrustListError, load_trust_list

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "anchors.pem"
    os.mkfifo(fifo)
    said = []

    def load():
        try:
            load_trust_list([fifo])
        except TrustListError as exc:
            said.append(str(exc))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():   # let the blocked open go, so the test process is not left with it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("the trust list's open waited for a writer on a FIFO")
    assert said and "not a regular file" in said[0], said


def test_the_files_of_one_list_are_bounded_in_all(signed, tmp_path):
    from aiidetect.provenance import trust

    d, _, _, ca, _ = signed
    half = ca + b"#" * (trust.MAX_TRUST_BYTES // 2)   # each under the bound, the two together over it
    (tmp_path / "a.pem").write_bytes(half)
    (tmp_path / "b.pem").write_bytes(half)
    assert trust.load_trust_list([tmp_path / "a.pem"]).anchors == 1
    with pytest.raises(trust.TrustListError, match="in all"):
        trust.load_trust_list([tmp_path / "a.pem", tmp_path / "b.pem"])


def test_a_trust_list_sends_nothing_to_the_ocsp_responder_the_signer_names(tmp_path):
    """With a trust list c2pa-rs checks a vouched-for signer's revocation online when its OCSP fetch is on (a
    connection to the responder the certificate names, seen with strace): reading a file must never call out."""
    import select
    import socket

    from aiidetect.api import meta_report

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/ocsp"
        signer, ca = c2pa_signing.make_signer_and_ca(ocsp_url=url)
        img = tmp_path / "signed.jpg"
        img.write_bytes(c2pa_signing.sign(signer, Image.new("RGB", (16, 16)), "JPEG", "digitalCapture",
                                          thumbnail=False))
        (tmp_path / "ca.pem").write_bytes(ca)
        facts = meta_report(str(img), watermark="never", c2pa_trust=[tmp_path / "ca.pem"])["facts"]["c2pa"]
        assert facts["state"] == "Trusted", facts
        called, _, _ = select.select([server], [], [], 0.2)   # a connection made during the read waits here
        assert not called, "reading the file connected to the OCSP responder its signer's certificate names"
    finally:
        server.close()


def test_only_the_anchor_s_signature_on_the_chain_makes_a_signer_trusted(tmp_path):
    """What docs/provenance.md says "Trusted" does not establish, held against c2pa-rs upgrades: a sender's chain
    that carries the newsroom's anchor certificate (it is public) after its own CA is not vouched for, nor is a
    signer under an anchor that has expired."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from aiidetect.api import meta_report

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(cn, key, issuer=None, issuer_key=None, ca=True, hours=(-1, 24)):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(subject)
             .issuer_name(subject if issuer is None else issuer.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now + datetime.timedelta(hours=hours[0]))
             .not_valid_after(now + datetime.timedelta(hours=hours[1]))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(True, False, False, False, False, ca, ca, False, False), critical=True))
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        if issuer is not None:   # c2pa-python signs with no leaf that lacks it
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                critical=False)
        return b.sign(issuer_key or key, hashes.SHA256())

    def pem(*certs):
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def state(anchor, leaf_key, chain):
        import c2pa

        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", pem(*chain), leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), None))
        img, ca_file = tmp_path / "signed.jpg", tmp_path / "anchor.pem"
        img.write_bytes(c2pa_signing.sign((c2pa, signer), Image.new("RGB", (16, 16)), "JPEG", "digitalCapture",
                                          thumbnail=False))
        ca_file.write_bytes(pem(anchor))
        return meta_report(str(img), watermark="never", c2pa_trust=[ca_file])["facts"]["c2pa"]["state"]

    key = ec.generate_private_key
    anchor_key, own_key, leaf_key = key(ec.SECP256R1()), key(ec.SECP256R1()), key(ec.SECP256R1())
    anchor = cert("newsroom CA", anchor_key)
    assert state(anchor, leaf_key, [cert("staff", leaf_key, anchor, anchor_key, ca=False), anchor]) == "Trusted"
    own = cert("sender's CA", own_key)
    assert state(anchor, leaf_key, [cert("sender", leaf_key, own, own_key, ca=False), own, anchor]) == "Valid"
    expired = cert("expired CA", anchor_key, hours=(-48, -24))
    assert state(expired, leaf_key, [cert("staff", leaf_key, expired, anchor_key, ca=False), expired]) == "Valid"


def test_doctor_shows_the_list_in_effect_in_both_formats(signed, tmp_path):
    """doctor said nothing of the trust list: a newsroom checking its set-up could not see which list a scan
    here would judge signers by, or that it had none (no signer ever Trusted), or that its list was broken."""
    import json

    from aiidetect.provenance.trust import load_trust_list

    d = signed[0]
    env = {"AIIDETECT_CLIP_CACHE": str(tmp_path / "clip"), "HOME": str(tmp_path), "AIIDETECT_CACHE": str(tmp_path),
           "AIIDETECT_C2PA_TRUST": ""}
    sha = load_trust_list([d / "ca.pem", d / "other.pem"]).sha256

    def doctor(*args, table=True, **more):
        j = run_cli_in_process("doctor", "-f", "json", *args, env={**env, **more})
        if not table:
            return j.returncode, json.loads(j.stdout)["c2pa_trust_list"], None, None
        t = run_cli_in_process("doctor", *args, env={**env, **more})
        line = next(x for x in t.stdout.splitlines() if x.startswith("C2PA trust list"))
        return j.returncode, json.loads(j.stdout)["c2pa_trust_list"], t.returncode, line

    _, got, _, line = doctor()
    assert (got["source"], got["anchors"], got["sha256"], got["error"]) == (None, 0, None, None)
    assert line.startswith("C2PA trust list  none: signers are never Trusted")
    _, got, _, line = doctor(AIIDETECT_C2PA_TRUST=f"{d / 'ca.pem'}:{d / 'other.pem'}")
    assert (got["source"], got["anchors"], got["sha256"]) == ("$AIIDETECT_C2PA_TRUST", 2, sha)
    assert f"2 anchors, sha256 {sha} ($AIIDETECT_C2PA_TRUST: {d / 'ca.pem'}" in line
    _, got, _, _ = doctor("--c2pa-trust", str(d / "ca.pem"), table=False, AIIDETECT_C2PA_TRUST=str(d / "other.pem"))
    assert (got["source"], got["files"], got["anchors"]) == ("--c2pa-trust", [str(d / "ca.pem")], 1)
    code, got, tcode, line = doctor("--c2pa-trust", str(d / "capture.jpg"))  # broken: reported, not a crash
    assert code == tcode == 1 and "no PEM certificate" in got["error"] and got["sha256"] is None
    assert "unusable (--c2pa-trust)" in line and "no PEM certificate" in line
