"""Mutation fuzzing of the decode workers' whole job on real files.

Takes files from a folder (the dev set), mutates their bytes (byte and bit
flips, truncation, repeated or deleted runs, splices of two files, 0x00/0xFF
runs, 16/32-bit numbers written over length-like fields), and runs each result
through what a scan's decode worker does with it: read and hash, decode, the
model's preprocessing, the metadata detector with its watermark check. Every
case must give a record whose JSON parses strictly, without an exception
escaping, without an `internal-error` record or an "internal (STAGE)" metadata
error (a parser's exception, caught), within --slow seconds. Failing and slow cases are kept under --out
with the file they came from, for a regression test.

    python scripts/mutation_fuzz.py /work/shared/data/dev --seconds 600 --seed 1 --out /tmp/fuzz
    python scripts/mutation_fuzz.py DIR --preprocess center-crop --seconds 60

Prints one JSON summary line (cases, crashes, slow, peak RSS) on stdout; exit
status 1 when a case crashed or was slow. The needle-shaped image bug (a GIF
mutated to 10x54026 took 2.7 s and 2.6 GB, docs/performance.md) was found
this way: 168,000 cases, two processes, 12 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
import traceback
import warnings
from pathlib import Path

SKIP_SUFFIXES = (".csv", ".txt", ".md", ".json")


def mutate(b: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    b = bytearray(b)
    if len(b) < 2:
        return bytes(b) + bytes([rng.randrange(256)])
    k = rng.randrange(8)
    if k == 0:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif k == 1:
        b = b[:rng.randrange(1, len(b))]
    elif k == 2:
        i = rng.randrange(len(b))
        b[i:i] = b[i:min(len(b), i + rng.randint(1, 4096))] * rng.randint(1, 8)
    elif k == 3:
        other = rng.choice(pool)
        b = b[:rng.randrange(len(b))] + other[rng.randrange(max(1, len(other))):][:rng.randint(1, 65536)]
    elif k == 4:
        i = rng.randrange(len(b))
        b[i:i + rng.randint(1, 64)] = bytes([rng.choice([0, 255])]) * rng.randint(1, 64)
    elif k == 5:
        i = rng.randrange(max(1, len(b) - 4))
        v = rng.choice([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)])
        b[i:i + 4] = v.to_bytes(4, rng.choice(["big", "little"]))
    elif k == 6:
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 512)]
    else:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("fuzz-out"))
    ap.add_argument("--slow", type=float, default=2.0, help="seconds after which a case counts as slow")
    ap.add_argument("--preprocess", default="resize-center-crop", choices=("resize-center-crop", "center-crop"))
    a = ap.parse_args(argv)

    from aiidetect.discover import Candidate
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.pipeline import Pipeline, Plan
    from aiidetect.preprocess import draft_size, make_spec
    from aiidetect.report.safe import dumps, strict_loads

    warnings.simplefilter("ignore")   # Pillow warns about every corrupt EXIF block
    files = sorted(str(p) for p in Path(a.folder).rglob("*")
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in SKIP_SUFFIXES)
    if not files:
        ap.error(f"no files under {a.folder}")
    rng = random.Random(a.seed)
    pool = [Path(f).read_bytes() for f in files]
    dets = [MetadataDetector({"watermark": "auto", "c2pa": True})]
    spec = make_spec(a.preprocess, 224)
    plan = Plan.build(dets)
    # A CLIP head's spec, decoded through the JPEG draft path: scans decode full size now, but report thumbnails
    # and eval's perceptual hash still shrink JPEGs there, so the fuzzing keeps that path covered.
    plan.specs, plan.draft = [spec], draft_size(spec)
    pipe = Pipeline(dets, plan=plan)
    a.out.mkdir(parents=True, exist_ok=True)
    case = a.out / f"case-{a.seed}"
    found: dict[str, list] = {"crashes": [], "slow": []}
    n, end = 0, time.monotonic() + a.seconds
    while time.monotonic() < end:
        i = rng.randrange(len(files))
        data = pool[i]
        for _ in range(rng.randint(1, 3)):
            data = mutate(data, rng, pool)
        suffix = Path(files[i]).suffix
        path = case.with_suffix(suffix)
        path.write_bytes(data)
        t = time.perf_counter()
        kind = None
        try:
            s = pipe.decode_many([Candidate(str(path), explicit=True)], [n])[0]
            rec = strict_loads(dumps(s.record.to_dict()))
            # A parser's exception is caught and costs its stage's evidence: a bug all the same.
            meta = (rec.get("detectors") or {}).get("metadata") or {}
            bugs = [e for e in meta.get("errors") or [] if e.startswith("internal")]
            if bugs or (rec.get("error") or {}).get("code") == "internal-error":
                kind, why = "crashes", str(bugs or rec["error"])[:800]
        except Exception:  # noqa: BLE001 - the point is to find them
            kind, why = "crashes", traceback.format_exc()[-800:]
        dt = time.perf_counter() - t
        if kind is None and dt > a.slow:
            kind, why = "slow", f"{dt:.2f} s"
        if kind:
            kept = a.out / f"{kind}-{a.seed}-{n}{suffix}"
            kept.write_bytes(data)
            found[kind].append({"case": str(kept), "from": files[i], "why": why})
            print(f"{kind}: {kept} (from {files[i]}): {why}", file=sys.stderr, flush=True)
        n += 1
    for p in a.out.glob(f"case-{a.seed}.*"):
        p.unlink()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"seed": a.seed, "cases": n, "crashes": len(found["crashes"]), "slow": len(found["slow"]),
                      "peak_rss_mb": rss_mb, "found": found["crashes"] + found["slow"]}))
    return 1 if found["crashes"] or found["slow"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
