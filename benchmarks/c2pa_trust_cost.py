"""What a C2PA trust list (`--c2pa-trust`) adds to each manifest read.

Why: with a list, every manifest read hands c2pa-rs the anchors' PEM text (provenance/c2pa.py, _offline_context),
which it parses again per read; docs/provenance.md ("A trust list") quotes the cost for a list the size of the
C2PA conformance one. A capture JPEG is signed here under a CA made on the spot; the list is that CA and
`--anchors` - 1 other CAs made alike (or the PEM files given with --trust, plus that CA), so the read ends
`Trusted`. Median milliseconds of provenance.c2pa.read_c2pa without and with the list, as JSON.

    python benchmarks/c2pa_trust_cost.py --anchors 145 --rounds 30
    python benchmarks/c2pa_trust_cost.py --trust c2pa-trust-anchors.pem   # a real list
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchors", type=int, default=145, help="anchors in the made-up list (the signer's CA among them)")
    ap.add_argument("--trust", action="append", default=[], help="PEM files of a real list, instead of made-up CAs")
    ap.add_argument("--rounds", type=int, default=30)
    a = ap.parse_args()

    from PIL import Image

    from aiidetect.provenance.c2pa import read_c2pa
    from aiidetect.provenance.trust import load_trust_list
    from aiidetect.testing.c2pa_signing import make_signer_and_ca, sign

    signer, ca = make_signer_and_ca()
    data = sign(signer, Image.new("RGB", (64, 64), (120, 90, 60)), "JPEG", "digitalCapture", thumbnail=False)
    with tempfile.TemporaryDirectory() as d:
        files = [Path(d) / "signer-ca.pem"]
        files[0].write_bytes(ca)
        if a.trust:
            files += [Path(p) for p in a.trust]
        else:
            others = Path(d) / "others.pem"
            others.write_bytes(b"".join(make_signer_and_ca(ca_name=f"benchmark CA {i}")[1]
                                        for i in range(max(a.anchors - 1, 0))))
            files.append(others)
        trust = load_trust_list(files).option()

    def median_ms(opt) -> tuple[float, str]:
        times, state = [], ""
        for _ in range(a.rounds):
            t = time.perf_counter()
            state = read_c2pa(data, "JPEG", trust=opt).state
            times.append((time.perf_counter() - t) * 1000)
        return round(statistics.median(times), 2), state

    read_c2pa(data, "JPEG")  # the library's first read loads more than any later one
    plain, plain_state = median_ms(None)
    listed, listed_state = median_ms(trust)
    print(json.dumps({"anchors": trust["anchors"], "rounds": a.rounds, "ms_without_list": plain,
                      "ms_with_list": listed, "ms_added": round(listed - plain, 2),
                      "state_without": plain_state, "state_with": listed_state}, indent=1))


if __name__ == "__main__":
    main()
