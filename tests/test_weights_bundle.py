"""`aiidetect weights pack` / `install`: carry weights to an air-gapped machine, verified."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import REPO, run_cli, run_cli_in_process


def _source_machine(tmp_path: Path) -> dict:
    src_clip = tmp_path / "src-clip"
    src_clip.mkdir()
    (src_clip / "tiny.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 40)
    (src_clip / "ViT-L-14.pt.partial").write_bytes(b"half a download")  # never packed
    return {"src_clip": src_clip, "dst_clip": tmp_path / "dst-clip", "dst_heads": tmp_path / "dst-heads",
            "bundle": tmp_path / "bundle.tar", "tmp": tmp_path}


@pytest.fixture
def machine(tmp_path):
    """A source machine with one backbone file and the shipped head, and an empty target."""
    return _source_machine(tmp_path)


# pack and install run in-process where a test is about what they decide (refusals, conflicts): a
# new interpreter for each cost ~1-2 s on 2 loaded cores. test_round_trip runs both as a user does,
# and the tests of a hang, a file size limit or a kill keep their own process.
def _pack(m, *extra, run=run_cli_in_process):
    return run("weights", "pack", str(m["bundle"]), "--weights-dir", str(REPO / "weights"), "--format", "json",
                   *extra, env={"AIIDETECT_CLIP_CACHE": str(m["src_clip"])})


@pytest.fixture(scope="module")
def _bundle(tmp_path_factory) -> bytes:
    """The default bundle of a source machine, packed once per module: most tests here only install
    or damage it, and each `weights pack` subprocess cost ~2 s on 2 loaded cores (test_round_trip and
    the tests of pack itself still pack their own)."""
    m = _source_machine(tmp_path_factory.mktemp("packed"))
    r = _pack(m)
    assert r.returncode == 0, r.stderr
    return m["bundle"].read_bytes()


@pytest.fixture
def packed(machine, _bundle):
    """`machine` with its default bundle already packed at machine["bundle"]."""
    machine["bundle"].write_bytes(_bundle)
    return machine


def _install(m, bundle=None, *extra, run=run_cli_in_process):
    return run("weights", "install", str(bundle or m["bundle"]), "--cache-dir", str(m["dst_clip"]),
                   "--heads-dir", str(m["dst_heads"]), "--format", "json", *extra)


def test_round_trip(machine):
    r = _pack(machine, run=run_cli)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["backbones"] == ["backbones/tiny.safetensors"] and s["heads"] == ["univfd"]
    assert s["sha256"] == hashlib.sha256(machine["bundle"].read_bytes()).hexdigest()
    r = _install(machine, None, "--sha256", s["sha256"], run=run_cli)
    assert r.returncode == 0, r.stderr
    assert (machine["dst_clip"] / "tiny.safetensors").read_bytes() == (machine["src_clip"] / "tiny.safetensors").read_bytes()
    for f in ("manifest.json", "head.safetensors", "LICENSE"):
        assert (machine["dst_heads"] / "univfd" / f).read_bytes() == (REPO / "weights" / "univfd" / f).read_bytes()
    v = run_cli("weights", "verify", "--weights-dir", str(machine["dst_heads"]))
    assert v.returncode == 0 and "ok" in v.stdout
    again = _install(machine, run=run_cli)  # same content already there: fine
    assert again.returncode == 0, again.stderr
    leftovers = [p for p in machine["dst_heads"].parent.iterdir() if p.name.startswith(".aiidetect-install")]
    assert leftovers == []


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy a tar member by member, letting `change(name, data)` return new bytes (or None to drop)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin:
            data = tin.extractfile(m).read()
            new = change(m.name, data)
            if new is None:
                continue
            ti = tarfile.TarInfo(m.name)
            ti.size = len(new)
            tout.addfile(ti, io.BytesIO(new))


def _refused(machine, bundle, *extra, run=run_cli_in_process):
    r = _install(machine, bundle, *extra, run=run)
    assert r.returncode == 2, r.stdout
    assert "refused" in r.stderr and "Traceback" not in r.stderr
    assert not machine["dst_clip"].exists() and not machine["dst_heads"].exists()  # nothing installed
    return r


def test_tampered_bundles_are_refused(packed):
    machine = packed
    t = machine["tmp"]

    def flip(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name.endswith("head.safetensors") else data

    _rewrite(machine["bundle"], t / "flipped.tar", flip)
    assert "SHA-256" in _refused(machine, t / "flipped.tar").stderr

    def forge(name, data):  # a consistent forged manifest still fails the head's own checksums
        if name == "aiidetect-bundle.json":
            man = json.loads(data)
            for e in man["files"]:
                if e["path"].endswith("head.safetensors"):
                    e["sha256"] = hashlib.sha256(flip(e["path"], (REPO / "weights/univfd/head.safetensors")
                                                      .read_bytes())).hexdigest()
            return json.dumps(man).encode()
        return flip(name, data)

    _rewrite(machine["bundle"], t / "forged.tar", forge)
    assert "own checksums" in _refused(machine, t / "forged.tar").stderr

    _rewrite(machine["bundle"], t / "dropped.tar", lambda n, d: None if n.endswith("LICENSE") else d)
    assert "missing" in _refused(machine, t / "dropped.tar").stderr

    _rewrite(machine["bundle"], t / "extra.tar", lambda n, d: d)
    with tarfile.open(t / "extra.tar", "a") as tar:
        ti = tarfile.TarInfo("heads/univfd/../../../evil.sh")
        ti.size = 3
        tar.addfile(ti, io.BytesIO(b"boo"))
    assert "unsafe" in _refused(machine, t / "extra.tar").stderr
    assert not (t / "evil.sh").exists()

    _rewrite(machine["bundle"], t / "deep.tar", lambda n, d: b"[" * 200_000 if n == "aiidetect-bundle.json" else d)
    assert "damaged manifest (JSON nested too deeply)" in _refused(machine, t / "deep.tar").stderr

    _refused(machine, machine["bundle"], "--sha256", "0" * 64)
    (t / "junk.tar").write_bytes(b"not a tar at all")
    _refused(machine, t / "junk.tar")


def test_conflicting_files_need_force(packed):
    machine = packed
    machine["dst_clip"].mkdir()
    (machine["dst_clip"] / "tiny.safetensors").write_bytes(b"other weights")
    r = _install(machine)
    assert r.returncode == 2 and "--force" in r.stderr
    assert (machine["dst_clip"] / "tiny.safetensors").read_bytes() == b"other weights"
    assert _install(machine, None, "--force").returncode == 0
    assert (machine["dst_clip"] / "tiny.safetensors").read_bytes() != b"other weights"


def test_force_replaces_a_head_that_is_a_link_or_a_file(packed):
    """rmtree refused a head folder that is a link (or a file) after the backbones were placed: exit 2
    'refused', yet half installed. The link itself is replaced, never what it points to."""
    machine = packed
    elsewhere = machine["tmp"] / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("someone else's")
    machine["dst_heads"].mkdir()
    (machine["dst_heads"] / "univfd").symlink_to(elsewhere)
    assert "--force" in _refused_keeping(machine).stderr
    r = _install(machine, None, "--force")
    assert r.returncode == 0, r.stderr
    head = machine["dst_heads"] / "univfd"
    assert not head.is_symlink() and (head / "head.safetensors").read_bytes() == \
        (REPO / "weights/univfd/head.safetensors").read_bytes()
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]

    shutil.rmtree(head)
    head.write_text("not a folder")
    shutil.rmtree(machine["dst_clip"])
    assert _install(machine, None, "--force").returncode == 0
    assert head.is_dir() and (machine["dst_clip"] / "tiny.safetensors").is_file()


def _refused_keeping(machine):
    """Refused without --force: exit 2 and no backbone placed."""
    r = _install(machine)
    assert r.returncode == 2 and "refused" in r.stderr, r.stdout
    assert not machine["dst_clip"].exists()
    return r


def test_pack_on_a_full_disk_leaves_nothing(machine):
    """Out of space (a file size limit here): the message names the bundle and no half bundle
    (<out>.tmp) stays behind holding the space; it said only '[Errno 27] File too large'."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "aiidetect", "weights", "pack", str(machine["bundle"]), "--weights-dir",
           str(REPO / "weights")]
    r = subprocess.run(["bash", "-c", 'ulimit -f 16 && exec "$@"', "bash", *cmd], capture_output=True, text=True,
                       env=dict(os.environ, AIIDETECT_CLIP_CACHE=str(machine["src_clip"])), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot write {machine['bundle']}" in r.stderr and "File too large" in r.stderr, r.stderr
    assert not [p for p in machine["tmp"].iterdir() if p.name.startswith("bundle.tar")]


def test_a_head_under_another_folder_name_is_refused(packed):
    """heads/aaa/ holding a head named univfd: installed beside the real univfd, it sorted first and
    silently became the univfd every scan used, with no conflict for --force to guard."""
    machine = packed
    assert _install(machine).returncode == 0
    shadow = machine["tmp"] / "shadow.tar"

    def rename(name, data):
        if name == "aiidetect-bundle.json":
            return data.replace(b"heads/univfd/", b"heads/aaa/")
        return data

    with tarfile.open(machine["bundle"]) as tin, tarfile.open(shadow, "w") as tout:
        for m in tin:
            data = rename(m.name, tin.extractfile(m).read())
            ti = tarfile.TarInfo(m.name.replace("heads/univfd/", "heads/aaa/"))
            ti.size = len(data)
            tout.addfile(ti, io.BytesIO(data))
    r = _install(machine, shadow, "--force")
    assert r.returncode == 2 and "holds the head 'univfd'" in r.stderr, r.stdout
    assert sorted(p.name for p in machine["dst_heads"].iterdir()) == ["univfd"]


def test_a_head_listing_files_outside_its_folder_is_not_installed(machine):
    """pack refuses such a head; install checked only that the files hash right, from wherever."""
    outside = machine["tmp"] / "outside.txt"
    outside.write_text("a file of this machine")
    assert _pack(machine, "--no-backbones").returncode == 0
    staging_depth = "../" * 3  # <heads parent>/.aiidetect-install-*/heads/univfd/
    fname = staging_depth + "outside.txt"

    def add_file(name, data):
        if name == "heads/univfd/manifest.json":
            m = json.loads(data)
            m["files"][fname] = hashlib.sha256(outside.read_bytes()).hexdigest()
            return json.dumps(m).encode()
        if name == "aiidetect-bundle.json":
            man = json.loads(data)
            new_head = add_file("heads/univfd/manifest.json",
                                (REPO / "weights/univfd/manifest.json").read_bytes())
            for e in man["files"]:
                if e["path"] == "heads/univfd/manifest.json":
                    e["bytes"], e["sha256"] = len(new_head), hashlib.sha256(new_head).hexdigest()
            return json.dumps(man).encode()
        return data

    _rewrite(machine["bundle"], machine["tmp"] / "outside.tar", add_file)
    assert "outside its folder" in _refused(machine, machine["tmp"] / "outside.tar").stderr


def test_pack_never_writes_over_what_it_packs(machine):
    """`weights pack ~/.cache/clip/tiny.safetensors` (OUT mistyped as a checkpoint) replaced the
    user's backbone with the bundle, silently, exit 0."""
    bb = machine["src_clip"] / "tiny.safetensors"
    before = bb.read_bytes()
    for extra in ((), ("--backbone", str(bb))):
        r = run_cli_in_process("weights", "pack", str(bb), "--weights-dir", str(REPO / "weights"), *extra,
                    env={"AIIDETECT_CLIP_CACHE": str(machine["src_clip"])})
        assert r.returncode == 2 and "is one of the files to pack" in r.stderr, r.stdout
    assert bb.read_bytes() == before
    assert sorted(p.name for p in machine["src_clip"].iterdir()) == ["ViT-L-14.pt.partial", "tiny.safetensors"]
    head = machine["tmp"] / "heads"
    shutil.copytree(REPO / "weights" / "univfd", head / "univfd")
    licence = (head / "univfd" / "LICENSE").read_bytes()
    r = run_cli_in_process("weights", "pack", str(head / "univfd" / "LICENSE"), "--weights-dir", str(head), "--no-backbones")
    assert r.returncode == 2 and (head / "univfd" / "LICENSE").read_bytes() == licence


def test_a_bundle_that_is_a_fifo_or_a_folder_is_refused(machine):
    """Opening a FIFO blocks until something writes to it: install hung forever."""
    import os

    os.mkfifo(machine["tmp"] / "pipe.tar")
    r = _refused(machine, machine["tmp"] / "pipe.tar", run=run_cli)  # a hang times out in its own process
    assert "not a file" in r.stderr
    assert "not a file" in _refused(machine, machine["tmp"]).stderr
    assert "no such file" in _refused(machine, machine["tmp"] / "nope.tar").stderr


def test_heads_only_bundle(machine):
    r = _pack(machine, "--no-backbones", "--head", "univfd")
    assert r.returncode == 0 and json.loads(r.stdout)["backbones"] == []
    assert _pack(machine, "--head", "nope").returncode == 2


def test_a_head_listing_files_outside_its_folder_is_not_packed(machine):
    heads = machine["tmp"] / "heads"
    (heads / "evil").mkdir(parents=True)
    secret = heads / "secret.txt"
    secret.write_text("not a weight")
    (heads / "evil" / "manifest.json").write_text(json.dumps(
        {"name": "evil", "detector": "linear", "files": {"../secret.txt": hashlib.sha256(b"not a weight").hexdigest()}}))
    r = run_cli_in_process("weights", "pack", str(machine["bundle"]), "--weights-dir", str(heads), "--no-backbones")
    assert r.returncode == 2 and "outside its folder" in r.stderr
    assert not machine["bundle"].exists()


def test_two_heads_of_one_name_are_not_packed_into_one_folder(machine):
    """linear:x and flow:x both went to heads/x/ in the bundle: the second was left out without a word
    (or its other files were mixed into the first's folder). Refused, naming both."""
    heads = machine["tmp"] / "heads"
    shutil.copytree(REPO / "weights" / "univfd", heads / "univfd")
    shutil.copytree(REPO / "weights" / "univfd", heads / "univfd-as-flow")
    m = json.loads((heads / "univfd-as-flow" / "manifest.json").read_text())
    (heads / "univfd-as-flow" / "manifest.json").write_text(json.dumps({**m, "detector": "flow"}))
    r = run_cli_in_process("weights", "pack", str(machine["bundle"]), "--weights-dir", str(heads), "--no-backbones")
    assert r.returncode == 2 and "two heads are named 'univfd'" in r.stderr, r.stderr
    assert not machine["bundle"].exists()


def _sparse_member(name: str, realsize: int) -> bytes:
    """An old-GNU sparse member: realsize bytes, all zeros but the last (0x01), stored as one byte."""
    def num(n, width):
        return b"%0*o\0" % (width - 1, n)

    ti = tarfile.TarInfo(name)
    ti.type = tarfile.GNUTYPE_SPARSE
    buf = bytearray(ti.tobuf(tarfile.GNU_FORMAT)[:512])
    buf[124:136] = num(1, 12)                                     # bytes stored in the tar
    buf[386:398], buf[398:410] = num(realsize - 1, 12), num(1, 12)  # the one data run
    buf[483:495] = num(realsize, 12)                              # the size it declares
    buf[148:156] = b" " * 8
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf) + b"\x01" + bytes(511)


def test_bundles_that_would_write_more_than_they_hold_are_refused(machine):
    """A sparse member, or a compressed bundle, expands to any size its (unauthenticated) manifest
    declares: a 3 KB bundle installed an 8 MB backbone (or filled the disk). A plain tar holds every
    byte it installs, so install never writes more than the bundle's size."""
    import gzip

    t = machine["tmp"]
    realsize = 8 << 20
    blob = bytes(realsize - 1) + b"\x01"
    man = json.dumps({"format": 1, "files": [{"path": "backbones/big.safetensors", "kind": "backbone",
                                              "bytes": realsize, "sha256": hashlib.sha256(blob).hexdigest()}]})
    with tarfile.open(t / "sparse.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        ti = tarfile.TarInfo("aiidetect-bundle.json")
        ti.size = len(man)
        tar.addfile(ti, io.BytesIO(man.encode()))
        tar.fileobj.write(_sparse_member("backbones/big.safetensors", realsize))
        tar.offset += 1024
    assert (t / "sparse.tar").stat().st_size < 20_000
    with tarfile.open(t / "sparse.tar") as tar:  # a tar that tarfile reads, as it would install it
        assert [m.size for m in tar] == [len(man), realsize]
    assert "sparse file" in _refused(machine, t / "sparse.tar").stderr

    assert _pack(machine).returncode == 0
    (t / "bundle.tar.gz").write_bytes(gzip.compress(machine["bundle"].read_bytes()))
    assert "decompress it first (gzip -dc bundle.tar.gz > bundle.tar)" in _refused(machine, t / "bundle.tar.gz").stderr
    assert [p.name for p in t.iterdir() if p.name.startswith(".aiidetect-install")] == []


def test_a_truncated_bundle_is_refused_with_its_reason(packed):
    """A copy cut short (a full stick, a dropped transfer) reached the crash handler ('ReadError:
    unexpected end of data ... --debug shows the traceback')."""
    machine = packed
    data = machine["bundle"].read_bytes()
    cut = machine["tmp"] / "cut.tar"
    cut.write_bytes(data[: 1536 + 5000])  # inside the backbone's bytes
    r = _refused(machine, cut)
    assert "truncated or damaged tar" in r.stderr and "--debug" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert [p.name for p in machine["tmp"].iterdir() if p.name.startswith(".aiidetect-install")] == []


def _nan_head(tmp: Path) -> Path:
    """A weights folder holding a copy of univfd whose tensors hold a NaN, its checksum updated (a head
    trained elsewhere that diverged, or written by a tool that does not check)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    from aiidetect.hashing import sha256_file

    d = tmp / "nan-weights" / "univfd"
    shutil.copytree(REPO / "weights" / "univfd", d)
    t = load_file(str(d / "head.safetensors"))
    k = sorted(t)[0]
    t[k] = t[k].clone()
    t[k].view(-1)[0] = float("nan")
    assert t[k].is_floating_point() and not bool(torch.isfinite(t[k]).all())
    save_file(t, str(d / "head.safetensors"))
    m = json.loads((d / "manifest.json").read_text())
    m["files"]["head.safetensors"] = sha256_file(d / "head.safetensors")
    (d / "manifest.json").write_text(json.dumps(m))
    return d.parent


def test_a_head_of_nan_weights_is_not_packed(machine):
    """`weights verify` fails such a head; pack carried it to the other machine, exit 0."""
    nan = _nan_head(machine["tmp"])
    r = run_cli_in_process("weights", "pack", str(machine["bundle"]), "--weights-dir", str(nan), "--no-backbones",
                env={"AIIDETECT_WEIGHTS": str(nan)})
    assert r.returncode == 2 and "NaN or infinite" in r.stderr and "not packing it" in r.stderr, r.stderr
    assert not machine["bundle"].exists()


def test_a_head_of_nan_weights_is_not_installed(machine, monkeypatch):
    """A bundle holding such a head (packed before pack checked, or by hand) installed it, exit 0."""
    from aiidetect import bundle, head_checks, heads

    nan = _nan_head(machine["tmp"])
    monkeypatch.setattr(head_checks, "load_problem", lambda *a, **k: None)  # the bundle as an unchecking pack wrote it
    bundle.pack(machine["bundle"], heads.find_heads([nan]), [])
    monkeypatch.undo()
    r = _install(machine)
    assert r.returncode == 2 and "the bundle's head univfd holds NaN or infinite numbers" in r.stderr, r.stderr
    assert not machine["dst_heads"].exists() or not any(machine["dst_heads"].iterdir())


def test_an_install_killed_midway_leaves_nothing_behind_the_next(machine):
    """kill -9 cannot be cleaned up after: each killed install left its staging folder (up to the whole
    bundle, backbones included) hidden beside the heads folder for good. The next install removes those
    of dead installs, and keeps the one a live install holds."""
    import fcntl
    import os
    import time

    from aiidetect import bundle, heads

    bundle.pack(machine["bundle"], heads.find_heads([REPO / "weights"]), [machine["src_clip"] / "tiny.safetensors"])
    parent = machine["dst_heads"].parent
    dead, live = parent / ".aiidetect-install-dead0001", parent / ".aiidetect-install-live0001"
    for d in (dead, live):
        (d / "backbones").mkdir(parents=True)
        (d / "backbones" / "tiny.safetensors").write_bytes(b"half a copy")
        old = time.time() - 3600
        os.utime(d, (old, old))
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # an install still running
    try:
        bundle.install(machine["bundle"], machine["dst_clip"], machine["dst_heads"])
        assert not dead.exists() and live.exists()
    finally:
        os.close(fd)
    assert sorted(p.name for p in parent.iterdir() if p.name.startswith(".aiidetect-install")) == [live.name]


def test_a_fusion_model_scan_would_leave_out_fails_verify_and_is_not_packed_or_installed(machine, monkeypatch):
    """An infinite bias in a fusion model's manifest: scan leaves it out (the rules decide, with a note),
    yet `weights verify` said ok, and pack and install carried it."""
    from aiidetect import bundle, head_checks, heads

    w = machine["tmp"] / "fusion-weights"
    (w / "fz").mkdir(parents=True)
    # Python's json writes Infinity, and reads it back, like a hand edit would leave it
    (w / "fz" / "manifest.json").write_text(json.dumps({"name": "fz", "detector": "fusion", "params": {
        "detectors": {"metadata": {"weight": 1.0}}, "bias": float("inf"), "ai_threshold": 0.9, "real_threshold": 0.1}}))
    v = run_cli_in_process("weights", "verify", "--weights-dir", str(w))
    assert v.returncode == 2 and "FAIL fz" in v.stdout and "bias must be a finite number" in v.stdout, v.stdout
    with pytest.raises(bundle.BundleError, match="bias must be a finite number.*not packing it"):
        bundle.pack(machine["bundle"], heads.find_heads([w]), [])
    monkeypatch.setattr(head_checks, "load_problem", lambda *a, **k: None)  # a bundle an unchecking pack wrote
    bundle.pack(machine["bundle"], heads.find_heads([w]), [])
    monkeypatch.undo()
    with pytest.raises(bundle.BundleError, match="the bundle's fusion model fz: bias must be a finite number"):
        bundle.install(machine["bundle"], machine["dst_clip"], machine["dst_heads"])
    assert not machine["dst_heads"].exists() or not any(machine["dst_heads"].iterdir())


def test_a_heads_training_record_is_packed_installed_and_verified(tmp_path):
    """train-keys.bin (train_record) travels with its head like the tensors: packed, installed beside
    them, and a changed record fails `weights verify` (the eval overlap check trusts it by its checksum)."""
    import numpy as np

    from aiidetect.heads import save_head
    from aiidetect.train_record import KEYS_FILE, record

    block, blobs = record(["ab" * 32, "01" * 32], "test")
    save_head(tmp_path / "src" / "p1", {"w": np.zeros(2, np.float32)},
              {"name": "p1", "detector": "linear", "training_images": block}, extra_files=blobs)
    bundle, dst = tmp_path / "b.tar", tmp_path / "dst"
    r = run_cli_in_process("weights", "pack", str(bundle), "--no-backbones", "--weights-dir", str(tmp_path / "src"))
    assert r.returncode == 0, r.stderr
    r = run_cli_in_process("weights", "install", str(bundle), "--heads-dir", str(dst), "--cache-dir", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert (dst / "p1" / KEYS_FILE).read_bytes() == blobs[KEYS_FILE]
    v = run_cli_in_process("weights", "verify", "--weights-dir", str(dst), "-f", "json")
    assert v.returncode == 0 and json.loads(v.stdout)["ok"], v.stdout + v.stderr
    (dst / "p1" / KEYS_FILE).write_bytes(blobs[KEYS_FILE][:8])  # one training image dropped from the record
    v = run_cli_in_process("weights", "verify", "--weights-dir", str(dst), "-f", "json")
    assert v.returncode == 2, v.stdout + v.stderr
    assert f"{KEYS_FILE} checksum differs" in " ".join(json.loads(v.stdout)["heads"][0]["problems"])
