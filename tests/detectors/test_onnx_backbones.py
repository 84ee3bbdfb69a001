"""`scan --runtime onnx` with installed heads of another backbone than the export's: the reason must
say which backbone each is for and how to run it. It said "trained on another backbone (fingerprint …)",
naming neither backbone, or, for a head installed after the export, "re-export it", which with the same
backbone leaves that head out again. Such heads are `unavailable` entries and the scan exits 0, as on torch."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPORT_BB = {"name": "tiny-vit (random init, seed 0)", "model": "tiny-vit", "fingerprint": "a" * 24,
             "weights_id": "random-init:seed=0:x"}


def _head(weights: Path, name: str, backbone: dict) -> None:
    shutil.copytree(ROOT / "weights" / "univfd", weights / name)
    m = json.loads((weights / name / "manifest.json").read_text())
    (weights / name / "manifest.json").write_text(json.dumps({**m, "name": name, "backbone": backbone}))


def test_heads_of_another_backbone_say_which_and_what_to_do(tmp_path):
    from aiidetect.detectors import RunContext
    from aiidetect.detectors.onnx import create

    w = tmp_path / "w"
    w.mkdir()
    seed1 = {"name": "tiny-vit (random init, seed 1)", "model": "tiny-vit", "fingerprint": "b" * 24,
             "weights_id": "random-init:seed=1:y"}
    _head(w, "skipped", seed1)   # in the weights folders when the export was made: the exporter left it out
    _head(w, "later", seed1)     # installed after the export
    _head(w, "retrained", EXPORT_BB)  # left out then, retrained on the export's backbone since
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    skipped = [{"name": f"linear:{n}", "reason": f"trained on another backbone (fingerprint {'b' * 24})"}
               for n in ("skipped", "retrained", "removed")]
    (onnx / "aiidetect-onnx.json").write_text(json.dumps(
        {"format": "aiidetect-onnx", "backbone": EXPORT_BB, "graphs": [], "skipped_heads": skipped}))
    ctx = RunContext(weights_dirs=[w], runtime="onnx", onnx_dir=onnx, options={"onnx_families": ["linear"]})
    rows = {d.name: d.describe() for d in create(ctx)}
    assert sorted(rows) == ["linear:later", "linear:removed", "linear:retrained", "linear:skipped"]
    assert {r["status"] for r in rows.values()} == {"unavailable"}
    for name in ("linear:skipped", "linear:later"):
        why = rows[name]["reason"]
        assert why.startswith(f"trained on backbone tiny-vit (random init, seed 1) (fingerprint {'b' * 24}), but the "
                              f"ONNX export {onnx} is for backbone tiny-vit (random init, seed 0)"), why
        assert "aiidetect export onnx -o NEW_DIR" in why and "--runtime torch" in why and "re-export it" not in why
    assert rows["linear:retrained"]["reason"].startswith(f"not in the ONNX export {onnx} (trained on another "
                                                         "backbone when it was made); re-export it")
    assert rows["linear:removed"]["reason"].endswith(f"the ONNX export {onnx} is for backbone "
                                                     f"tiny-vit (random init, seed 0) (fingerprint {'a' * 24})")

    # the scan: records with those entries, the reasons on stderr, exit 0 (docs/schema.md "Exit codes")
    from PIL import Image

    from conftest import jsonl, run_cli_in_process

    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "a.png")
    r = run_cli_in_process("scan", str(tmp_path / "a.png"), "-d", "linear", "--runtime", "onnx", "--onnx", str(onnx),
                           "-f", "jsonl", "--no-cache", env={"AIIDETECT_WEIGHTS": str(w)})
    assert r.returncode == 0, r.stderr
    got = jsonl(r.stdout)[0]["detectors"]
    assert got["linear:later"]["status"] == "unavailable" and got["linear:later"]["reason"] == rows["linear:later"]["reason"]
    assert "linear:skipped unavailable: trained on backbone tiny-vit (random init, seed 1)" in r.stderr


def test_the_exporter_names_both_backbones_of_a_head_it_leaves_out():
    """The sidecar's reason is what scans of an older aiidetect show, and what `export onnx` prints."""
    from types import SimpleNamespace

    from aiidetect.onnx_export import collect_heads

    bb = SimpleNamespace(fingerprint="a" * 24, spec=SimpleNamespace(describe=lambda: "tiny-vit (random init, seed 0)"))
    _, skipped = collect_heads(bb, [ROOT / "weights"], ["linear"])
    assert skipped == [("linear:univfd", "trained on another backbone, ViT-L-14/openai (fingerprint b775e1b067ad1ab5b9e4143b), "
                                         f"not tiny-vit (random init, seed 0) (fingerprint {'a' * 24})")]
