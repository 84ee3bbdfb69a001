"""Shared fixtures. Every test run writes heads and caches into temp dirs,
never into the repo's weights/ or the user's ~/.cache."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="aiidetect-tests-"))
os.environ["AIIDETECT_WEIGHTS"] = str(_TMP / "weights")
os.environ["AIIDETECT_CACHE"] = str(_TMP / "cache")
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parent.parent


def load_script(relpath: str):
    """A benchmark or script of this checkout (not a package module) loaded by path, for tests of its helpers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(relpath).stem, REPO / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
DEV = (REPO.parent / "shared" / "data" / "dev").resolve()
if not DEV.is_dir():  # CI clones main with shared/ beside it
    DEV = Path(os.environ.get("AIIDETECT_DEV_DATA", "/work/shared/data/dev"))


@pytest.fixture(scope="session")
def dev_dir() -> Path:
    if not DEV.is_dir():
        pytest.skip("dev data set not present")
    return DEV


@pytest.fixture(scope="session")
def dev_manifest(dev_dir) -> Path:
    return dev_dir / "manifest.csv"


@pytest.fixture(scope="session")
def _tiny_probe(tmp_path_factory, dev_manifest) -> Path:
    wd = tmp_path_factory.mktemp("tiny-probe")
    r = run_cli("train", "linear", str(dev_manifest), "--backbone-config", "tiny-vit", "--shots", "5",
                "--name", "cli-probe", "--out", str(wd / "cli-probe"), env={"AIIDETECT_WEIGHTS": str(wd)})
    assert r.returncode == 0, r.stderr
    return wd


@pytest.fixture(scope="session")
def dev_metadata_run(dev_dir, tmp_path_factory) -> Path:
    """The whole dev set scanned once with the metadata detector, as a user runs it (subprocess,
    records written with -o); the tests that read a full dev-set run share it rather than each
    paying for its own (~10 s on 2 loaded cores)."""
    out = tmp_path_factory.mktemp("dev-run") / "dev.jsonl"
    r = run_cli("scan", str(dev_dir), "-d", "metadata", "--format", "jsonl", "-o", str(out), "-q", "--no-cache",
                timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def trained(_tiny_probe, tmp_path_factory) -> Path:
    """A weights folder holding `cli-probe`, a linear probe on tiny-vit trained once per
    session through the CLI; each module gets its own copy to read or damage."""
    import shutil

    wd = tmp_path_factory.mktemp("heads")
    shutil.copytree(_tiny_probe, wd, dirs_exist_ok=True)
    return wd


@pytest.fixture
def weights_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv("AIIDETECT_WEIGHTS", str(d))
    return d


def run_cli(*args: str, input: str | None = None, env: dict | None = None, cwd=None, timeout: int = 300):
    """Run the CLI as a user would: a subprocess, stdout and stderr captured apart."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "aiidetect", *args], capture_output=True, text=True, input=input,
                          env=e, cwd=cwd, timeout=timeout)


def run_cli_in_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`run_cli` without the new interpreter, for tests of what a command decides rather than of
    the process around it: a subprocess pays a torch import each time (seconds on 2 loaded cores).
    Each command keeps its own true subprocess tests elsewhere."""
    from typer.testing import CliRunner

    from aiidetect.cli import app

    with _process_state_kept():
        r = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)


@contextlib.contextmanager
def _process_state_kept():
    """Put back what a command sets for its whole process, which a subprocess takes with it and an
    in-process run leaves to every later test: Pillow's pixel limit (a scan only ever raises it, so a
    later test of the decompression-bomb limit passed or failed by test order), torch's thread count,
    the cwd. CliRunner puts back os.environ and the standard streams; it calls the app, not
    `run_guarded`, so the signal handlers and silenced loggers that sets up never happen here."""
    cwd = os.getcwd()
    pil = sys.modules.get("PIL.Image")
    pixels = pil.MAX_IMAGE_PIXELS if pil else None
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    try:
        yield
    finally:
        os.chdir(cwd)
        if pil is not None:
            pil.MAX_IMAGE_PIXELS = pixels
        if torch is not None:
            torch.set_num_threads(threads)


def count_decodes(monkeypatch) -> list:
    """The sizes of every image decode.decode_bytes makes from now on (a decode counter)."""
    import aiidetect.decode as decode

    sizes, real = [], decode._decode_bytes

    def counted(*a, **k):
        img, info = real(*a, **k)
        sizes.append(img.size)
        return img, info
    monkeypatch.setattr(decode, "_decode_bytes", counted)
    return sizes


def jsonl(stdout: str) -> list[dict]:
    # split at "\n" only: a record may hold U+2028 or \x1c raw inside a string (str.splitlines cuts there)
    return [json.loads(line) for line in stdout.split("\n") if line.strip()]

# CI must be reproducible: fuzz tests explore the same inputs on every CI run
# (local runs keep exploring new ones, which is how bugs get found).
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _pillow_pixel_limit():
    """Decoding sets Pillow's process-wide pixel limit from the run's --max-pixels; a test that
    decodes under a small limit must not leave it for the tests after it."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = before


@pytest.fixture(autouse=True)
def _no_read_given_up_still_running():
    """Reads a library scan gave up past file_timeout are counted per process (crashguard.reads_given_up): a test
    that released its hanging reads in its `finally` may leave their threads finishing while the next test
    starts, whose scans would then count them as stuck (a refused scan, a `timeout` under load). Wait for them,
    bounded: a test that leaves one running for good is that test's bug, seen in its own assertions."""
    from aiidetect import crashguard

    deadline = time.monotonic() + 10
    while crashguard.reads_given_up() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield


def cli_command(*path: str):
    """The click command behind `aiidetect <path...>`, to read its options."""
    import typer

    from aiidetect.cli import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd
