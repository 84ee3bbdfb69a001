"""Coverage-guided fuzzing of the metadata parsers and the decoder (atheris).

Where `scripts/mutation_fuzz.py` mutates whole files blindly, this runs
libFuzzer through atheris: it watches which lines of aiidetect's parsers each
input reaches and keeps the inputs that reach new ones, so it walks into
EXIF IFD chains, XMP trees, PNG/WebP/ISOBMFF boxes and generator text formats
that random byte flips rarely hit. Two targets:

  provenance  the bytes through every metadata parser exactly as the scan runs
              them (containers.walk, EXIF, XMP, generator parameters, C2PA,
              structural hints; the watermark check off: it reads pixels, the
              decode target covers those). analyze() turns a parser's exception
              into an "internal (STAGE): ..." error and loses that stage's
              evidence (a C2PA manifest, a generator's parameters) to it: here
              such an error is a finding, though a scan survives it.
  decode      the bytes through the safe decoder (limits, draft) and the
              model's preprocessing; DecodeFailure is the expected refusal.
  report      the bytes as a saved run (JSONL) someone hands over: the HTML
              report must render and stay self-contained (no remote load,
              no handler, no script but its own), and each line, read as a
              results-store row, must export through every record writer.

Both also require the result to serialise to strict JSON. libFuzzer's own
limits bound time (-timeout, seconds per input) and memory (-rss_limit_mb);
a crash, a timeout or an out-of-memory input is written to --out.

    # atheris is in the test extra: pip install -e ".[test]"
    python scripts/coverage_fuzz.py seeds SEEDS --from /work/shared/data/dev   # small seed files
    python scripts/coverage_fuzz.py provenance SEEDS --seconds 600 --out /tmp/cov
    python scripts/coverage_fuzz.py decode SEEDS --seconds 600 --out /tmp/cov
    python scripts/coverage_fuzz.py report SEEDS --seconds 600 --out /tmp/cov
    python scripts/coverage_fuzz.py provenance --replay /tmp/cov/crash-*   # rerun kept inputs

The corpus directory grows with the inputs libFuzzer keeps (work in a copy if
the seeds should stay as they are). Exit status: libFuzzer's (0 when nothing
was found).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

SKIP_SUFFIXES = (".csv", ".txt", ".md", ".json")
SEED_BYTES = 64 * 1024   # the metadata sits in the first bytes of nearly every dev file


def write_seeds(out: Path, source: Path | None) -> int:
    """Seed files: the hostile corpus the tests use, files with signed C2PA
    manifests, and the first SEED_BYTES of every file under `source` (small inputs
    keep libFuzzer fast; the parsers' structures are at the start)."""
    from aiidetect.testing.hostile import make_corpus

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        make_corpus(Path(tmp))
        for p in sorted(Path(tmp).rglob("*")):
            # Plain files only: the corpus also holds links, FIFOs and sparse giants for the scan's tests.
            if p.is_file() and not p.is_symlink() and p.stat().st_size <= 1 << 20:
                (out / f"hostile-{n:04d}{p.suffix}").write_bytes(p.read_bytes())
                n += 1
    n += _c2pa_seeds(out, n)
    n += _report_seeds(out, n)
    if source:
        for p in sorted(source.rglob("*")):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in SKIP_SUFFIXES:
                with open(p, "rb") as f:
                    (out / f"dev-{n:04d}{p.suffix.lower()}").write_bytes(f.read(SEED_BYTES))
                n += 1
    return n


def _c2pa_seeds(out: Path, n: int) -> int:
    """Small JPEG, PNG and WebP files with signed Content Credentials (AI, capture,
    none declared), so the C2PA stage has real manifests to mutate."""
    from PIL import Image

    from aiidetect.testing.c2pa_signing import make_signer, sign

    signer, img, k = make_signer(), Image.new("RGB", (32, 24), (100, 150, 200)), 0
    for fmt in ("JPEG", "PNG", "WEBP"):
        for source_type in ("trainedAlgorithmicMedia", "digitalCapture"):
            (out / f"c2pa-{n + k:04d}.{fmt.lower()}").write_bytes(sign(signer, img, fmt, source_type))
            k += 1
    return k


def _report_seeds(out: Path, n: int) -> int:
    """Saved runs: the report tests' hostile records, one per file, and all of them in one."""
    import json

    from aiidetect.testing.report_corpus import hostile_records

    recs = hostile_records()
    for k, r in enumerate(recs):
        (out / f"run-{n + k:04d}.jsonl").write_text(json.dumps(r) + "\n", encoding="utf-8")
    (out / f"run-{n + len(recs):04d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs),
                                                        encoding="utf-8")
    return len(recs) + 1


def provenance_target():
    from aiidetect import provenance
    from aiidetect.report.safe import dumps, strict_loads

    opts = {"watermark": "never", "c2pa": True, "budget_s": 60.0}

    def one(data: bytes) -> None:
        rep = provenance.analyze(data, "fuzz", options=opts)
        bugs = [e for e in rep.errors if e.startswith("internal")]
        if bugs:
            raise AssertionError(bugs)
        strict_loads(dumps(rep.to_dict()))
    return one


def decode_target():
    import numpy as np

    from aiidetect.decode import DecodeFailure, decode_bytes
    from aiidetect.preprocess import apply, make_spec

    specs = [make_spec("resize-center-crop", 224), make_spec("center-crop", 224)]

    def one(data: bytes) -> None:
        try:
            # Half the inputs take the JPEG draft path (report thumbnails and eval's perceptual hash use it).
            img, _info = decode_bytes(data, draft=224 if len(data) % 2 else None)
        except DecodeFailure:
            return
        for spec in specs:
            x = apply(img, spec)
            assert x.shape == (3, 224, 224) and np.isfinite(x).all(), x.shape
    return one


def report_target():
    import io

    from aiidetect.report import make_writer
    from aiidetect.report.html import NotASavedRun, render_saved_run
    from aiidetect.report.safe import strict_loads
    from aiidetect.store import stored_record
    from aiidetect.testing.htmlcheck import assert_self_contained

    def one(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        out = io.StringIO()
        try:
            render_saved_run(io.StringIO(text), out, source="fuzz", thumbnails=False)
            assert_self_contained(out.getvalue())
        except NotASavedRun:
            assert out.getvalue() == ""  # refused (exit 2 in the CLI) before a byte is written
        for line in text.splitlines()[:50]:
            rec = stored_record({"record": line, "file": "fuzz"})
            for fmt in ("jsonl", "csv", "table"):
                buf = io.StringIO()
                w = make_writer(fmt, buf, ["metadata"], explain=True)
                w.write(rec)
                w.close({})
                if fmt == "jsonl":
                    strict_loads(buf.getvalue())
    return one


TARGETS = {"provenance": provenance_target, "decode": decode_target, "report": report_target}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=[*TARGETS, "seeds"])
    ap.add_argument("corpus", nargs="?", type=Path)
    ap.add_argument("--from", dest="source", type=Path, help="seeds: folder of real files to cut seeds from")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path("fuzz-out"))
    ap.add_argument("--timeout", type=int, default=5, help="seconds one input may take")
    ap.add_argument("--rss-mb", type=int, default=2048)
    ap.add_argument("--max-len", type=int, default=1 << 20)
    ap.add_argument("--replay", nargs="+", type=Path, help="run these inputs once each and report")
    ap.add_argument("--instrument", default="aiidetect,exifread,PIL",
                    help="packages whose lines guide the fuzzer (comma-separated)")
    a = ap.parse_args(argv)

    if a.target == "seeds":
        if a.corpus is None:
            ap.error("seeds needs the folder to write")
        print(f"{write_seeds(a.corpus, a.source)} seed files in {a.corpus}")
        return 0
    warnings.simplefilter("ignore")   # Pillow warns about every corrupt EXIF block
    if a.replay:
        one = TARGETS[a.target]()
        bad = 0
        for p in a.replay:
            try:
                one(p.read_bytes())
                print(f"ok: {p}")
            except Exception as exc:  # noqa: BLE001 - reporting them is the point
                bad += 1
                print(f"FAILS: {p}: {type(exc).__name__}: {exc}")
        return 1 if bad else 0

    import atheris

    if a.corpus is None:
        ap.error("give the corpus folder (make one with: seeds DIR --from FOLDER)")
    with atheris.instrument_imports(include=a.instrument.split(",")):
        one = TARGETS[a.target]()
        # The parsers import lazily; import them now so they are instrumented too.
        import aiidetect.decode  # noqa: F401
        import aiidetect.preprocess  # noqa: F401
        import aiidetect.provenance.c2pa  # noqa: F401
        import aiidetect.provenance.containers  # noqa: F401
        import aiidetect.provenance.exif  # noqa: F401
        import aiidetect.provenance.generators  # noqa: F401
        import aiidetect.provenance.tiffguard  # noqa: F401
        import aiidetect.provenance.xmp  # noqa: F401
        import aiidetect.report.html  # noqa: F401
        import aiidetect.store  # noqa: F401
        # Pillow loads its format plugins, and exif.py exifread, on first use: load them here.
        if "PIL" in a.instrument.split(","):
            from PIL import Image
            Image.init()
        if "exifread" in a.instrument.split(","):
            import exifread  # noqa: F401
    a.out.mkdir(parents=True, exist_ok=True)
    lib_args = [sys.argv[0], str(a.corpus), f"-max_total_time={a.seconds}", f"-timeout={a.timeout}",
                f"-rss_limit_mb={a.rss_mb}", f"-max_len={a.max_len}", f"-artifact_prefix={a.out}{os.sep}",
                "-print_final_stats=1"]
    atheris.Setup(lib_args, one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
