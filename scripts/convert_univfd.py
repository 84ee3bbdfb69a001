#!/usr/bin/env python3
"""Regenerate weights/univfd/ from the published UniversalFakeDetect head.

    python scripts/convert_univfd.py [--src /work/shared/weights/univfd/fc_weights.pth] [--out weights/univfd]

The LICENSE beside fc_weights.pth is copied into the head folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiidetect.linear.univfd import convert_univfd  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "weights" / "univfd" / "fc_weights.pth"))
    ap.add_argument("--license", default=None, help="licence file (default: LICENSE beside --src)")
    ap.add_argument("--out", default=str(ROOT / "weights" / "univfd"))
    a = ap.parse_args(argv)
    out = convert_univfd(a.src, a.out, a.license)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
