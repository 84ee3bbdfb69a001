"""Compare our EXIF readings with metadata-extractor's expected output
(/work/shared/data/dev/peer-metadata/<file>.txt). Shared by the test and the
doc command: python -m aiidetect.testing.provenance_peer"""
from __future__ import annotations

import os
import re
from pathlib import Path

DEV = (Path(__file__).resolve().parents[3] / "shared" / "data" / "dev").resolve()
if not DEV.is_dir():
    DEV = Path(os.environ.get("AIIDETECT_DEV_DATA", "/work/shared/data/dev"))
PEER = DEV / "peer-metadata"
LINE = re.compile(r"^\[(?P<dir>[^\]]+?) - 0x(?P<tag>[0-9a-fA-F]+)\] (?P<name>[^=]+?) = (?P<value>.*)$")

# field -> list of (directory, tag) in priority order
PEER_TAGS = {
    "make": [("Exif IFD0", "010f")],
    "model": [("Exif IFD0", "0110")],
    "capture_time": [("Exif SubIFD", "9003"), ("Exif IFD0", "0132")],
    "exposure_time": [("Exif SubIFD", "829a")],
    "f_number": [("Exif SubIFD", "829d")],
    "iso": [("Exif SubIFD", "8827")],
    "focal_length": [("Exif SubIFD", "920a")],
    "lens": [("Exif SubIFD", "a434")],
}
FIELDS = tuple(PEER_TAGS)


def peer_files() -> list[tuple[Path, Path]]:
    out = []
    for txt in sorted(PEER.rglob("*.txt")):
        img = DEV / txt.relative_to(PEER).with_suffix("")
        if img.exists():
            out.append((img, txt))
    return out


def parse_peer(txt: Path) -> dict[str, str]:
    found: dict[tuple[str, str], str] = {}
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        m = LINE.match(line.strip())
        if m:
            found.setdefault((m["dir"], m["tag"].lower()[-4:]), m["value"].strip())
    out = {}
    for f, keys in PEER_TAGS.items():
        for k in keys:
            if k in found:
                out[f] = found[k]
                break
    return out


def _peer_number(f: str, v: str) -> float | None:
    v = v.replace("sec", "").replace("mm", "").replace("f/", "").strip()
    try:
        if "/" in v:
            a, b = v.split("/", 1)
            return float(a) / float(b)
        return float(v)
    except ValueError:
        return None


def compare(ours: dict, peer: dict) -> list[tuple[str, object, str]]:
    """-> [(field, our value, peer value)] for each disagreement."""
    bad = []
    for f in FIELDS:
        p = peer.get(f)
        o = ours.get(f)
        if p is None and o in (None, ""):
            continue
        if p is None or o in (None, ""):
            bad.append((f, o, p))
            continue
        if f in ("make", "model", "lens", "capture_time"):
            if str(o).strip() != p.strip():
                bad.append((f, o, p))
        elif f == "iso":
            try:
                if int(o) != int(p.split()[0]):
                    bad.append((f, o, p))
            except ValueError:
                bad.append((f, o, p))
        else:
            pn = _peer_number(f, p)
            # metadata-extractor prints 1 decimal (f-number, focal length) or a rounded fraction (exposure).
            tol = max(0.051, 0.05 * abs(pn)) if f != "exposure_time" else max(0.0051, 0.06 * abs(pn or 0))
            if pn is None or abs(float(o) - pn) > tol:
                bad.append((f, o, p))
    return bad


def our_fields(img: Path) -> dict:
    from aiidetect.provenance import analyze

    rep = analyze(img.read_bytes(), str(img), options={"watermark": "never", "c2pa": False})
    e = rep.facts.get("exif") or {}
    return {f: e.get(f) for f in FIELDS}


if __name__ == "__main__":  # pragma: no cover - the doc table comes from here
    n = 0
    for img, txt in peer_files():
        n += 1
        for f, o, p in compare(our_fields(img), parse_peer(txt)):
            print(f"{img.relative_to(DEV)}\t{f}\tours={o!r}\tpeer={p!r}")
    print(f"{n} files compared")
