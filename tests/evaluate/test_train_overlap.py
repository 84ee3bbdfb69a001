"""`eval` and `calibrate` on images a head was trained on: its record (train_record) is matched by
content, the images are counted on stderr and in the JSON, and left out of that head's (and the fused
verdict's) metrics unless --allow-train-overlap. A fake pixel head stands in for a trained one."""
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiidetect.detectors import register
from aiidetect.detectors.base import Detector
from aiidetect.heads import Head
from aiidetect.records import DetectorResult
from aiidetect.testing.layouts import digests_of
from aiidetect.train_record import KEYS_FILE, load_keys, member_mask, record

from conftest import run_cli_in_process
from fake_detectors import Brightness

HEAD: dict = {}  # the fake head's folder, set by the fixture


class FakeHead(Brightness):
    """Brightness served as a trained head (`.head`, as every torch head detector has)."""

    family = "fakehead"

    def __init__(self, head_dir: Path):
        super().__init__()
        self.head = Head(head_dir, json.loads((head_dir / "manifest.json").read_text()))


register("fakehead", lambda ctx: [FakeHead(HEAD["dir"])])


def _head(folder: Path, trained_on=None) -> Path:
    """A head folder whose record lists `trained_on` (None: a head from before records)."""
    folder.mkdir(parents=True, exist_ok=True)
    m = {"name": "fakehead", "detector": "fakehead", "files": {}}
    if trained_on is not None:
        m["training_images"], blobs = record(digests_of(trained_on), "test")
        (folder / KEYS_FILE).write_bytes(blobs[KEYS_FILE])
        m["files"][KEYS_FILE] = "not checked here"
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder


@pytest.fixture
def data(tmp_path):
    """train/ (what the head was trained on) and eval/: 10 real and 10 AI images, 4 + 4 of them
    byte-identical copies of training images under other names."""
    rng = np.random.default_rng(1)
    train, ev = tmp_path / "train", tmp_path / "eval"
    trained = []
    for lab, base in (("real", 40), ("ai/gen", 190)):
        (train / lab).mkdir(parents=True)
        (ev / lab).mkdir(parents=True)
        for i in range(10):
            a = rng.normal(base + 4 * i, 15, (16, 16, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(a).save(ev / lab / f"e{i}.png")
            if i < 4:
                shutil.copy(ev / lab / f"e{i}.png", train / lab / f"t{i}.png")
                trained.append(str(train / lab / f"t{i}.png"))
    HEAD["dir"] = _head(tmp_path / "weights" / "fakehead", trained)
    return ev


def _eval(*args):
    r = run_cli_in_process("eval", *args, "-d", "fakehead", "--fusion", "none", "-f", "json", "-q")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    for rep in m["run"]["train_overlap"].values():
        # the near-duplicate half (16x16 images have no perceptual hash): tests/evaluate/test_near_duplicates.py
        rep.pop("near", None)
    return m, r.stderr


def test_record_is_sorted_8_byte_prefixes_matched_by_content(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(bytes([i]) * 10)
    (tmp_path / "copy.bin").write_bytes(bytes([1]) * 10)
    block, blobs = record(digests_of(map(str, files + [files[0]])), "x")
    assert block["count"] == 3 and len(blobs[KEYS_FILE]) == 24
    head = tmp_path / "h"
    head.mkdir()
    (head / KEYS_FILE).write_bytes(blobs[KEYS_FILE])
    keys = load_keys(head, {"training_images": block, "files": {KEYS_FILE: "x"}})
    assert list(keys) == sorted(keys)
    probe = digests_of([str(tmp_path / "copy.bin"), str(files[2])]) + [None, "zz"]
    assert member_mask(keys, probe).tolist() == [True, True, False, False]


def test_the_record_names_the_decoders_the_images_were_decoded_by(tmp_path, monkeypatch):
    """The features a head is fitted on are the installed Pillow's (the feature cache is keyed by it), and
    another Pillow can give other pixels: the manifest recorded nothing of it, so a head could not be
    trained again from what it records."""
    import PIL

    from aiidetect import extras
    from aiidetect.extras import installed_version

    others = {d: installed_version(d) for d in ("pillow-heif", "numpy")}
    monkeypatch.setattr(PIL, "__version__", "12.9.9")
    monkeypatch.setattr(extras, "_decoder_versions", None)  # a new process, another Pillow
    block, _ = record(["ab" * 32], "x")
    assert block["decoders"] == {"pillow": "12.9.9", **others, **extras.codec_versions()}


def test_eval_leaves_out_and_counts_the_images_a_head_was_trained_on(data):
    m, err = _eval(str(data), "--perturb", "jpeg:75")
    want = {"status": "checked", "n": 8, "of": 20, "excluded": True}
    assert m["run"]["train_overlap"]["fakehead"] == want
    assert m["run"]["train_overlap"]["fused"] == want
    assert "fakehead 8 of 20 (left out of its metrics)" in err  # said under -q: it changes the numbers
    for cond in m["conditions"]:  # the perturbed condition too, though its bytes differ from the files'
        b = cond["detectors"]["fakehead"]
        assert b["train_left_out"] == 8 and b["overall"]["n"] == 12 and b["coverage"] == 1.0, cond["condition"]
        assert b["non_finite"] == 0  # left out is not a NaN score
        f = cond["fused"]
        assert f["train_left_out"] == 8 and sum(f["verdicts"]["real"].values()) == 6


def test_allow_train_overlap_keeps_them_and_says_so(data, tmp_path):
    m, err = _eval(str(data), "--allow-train-overlap", "--out-dir", str(tmp_path / "o"), "--no-plots")
    assert m["run"]["train_overlap"]["fakehead"] == {"status": "checked", "n": 8, "of": 20, "excluded": False}
    assert m["conditions"][0]["detectors"]["fakehead"]["overall"]["n"] == 20
    assert "KEPT" in err and "not held-out performance" in err
    assert "fakehead 8 of 20 (KEPT: metrics include them)" in (tmp_path / "o" / "summary.md").read_text()


def test_a_head_without_a_record_runs_and_its_overlap_is_unknown(data):
    _head(HEAD["dir"])  # as trained before heads recorded their images
    m, err = _eval(str(data))
    o = m["run"]["train_overlap"]
    assert o["fakehead"]["status"] == "unknown" and o["fakehead"]["n"] is None
    assert "records no training images" in o["fakehead"]["why"] and o["fused"]["status"] == "unknown"
    assert m["conditions"][0]["detectors"]["fakehead"]["overall"]["n"] == 20


def test_calibrate_fits_without_the_heads_training_images(data, tmp_path):
    out = tmp_path / "fusion"
    r = run_cli_in_process("calibrate", str(data), "-d", "fakehead", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert "fakehead 8 of 20 (left out of the fit)" in r.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["data"]["train_overlap"]["fakehead"]["n"] == 8
    assert man["params"]["detectors"]["fakehead"]["n"] == 12


def test_calibrate_on_the_training_images_alone_is_refused(data):
    _head(HEAD["dir"], sorted(map(str, data.rglob("*.png"))))  # a head trained on every one of them
    r = run_cli_in_process("calibrate", str(data), "-d", "fakehead", "-o", str(data.parent / "f"), "-q")
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert "once the heads' training images are left out (--allow-train-overlap keeps them)" in r.stderr
    assert "(got 0 real, 0 AI)" in r.stderr and not (data.parent / "f").exists()


def test_detectors_without_a_record_say_why():
    """A head served from an ONNX export has no record (unknown, not 'no overlap'); rules have no
    training set; an unavailable detector did not run."""
    from aiidetect.detectors.base import UnavailableDetector
    from aiidetect.evaluate.overlap import train_overlap

    class Onnx(Detector):
        family = "linear"

        def __init__(self):
            super().__init__("linear:x")
            self.meta = {"head": "x", "family": "linear"}

    class Rules(Detector):
        family = "rules"

    report, masks = train_overlap([Onnx(), Rules("rules"), UnavailableDetector("mpft", "no head")], ["ab" * 32])
    assert report["linear:x"]["status"] == "unknown" and "ONNX export" in report["linear:x"]["why"]
    assert report["rules"] == {"status": "not-trained", "n": 0, "of": 1}
    assert report["mpft"]["status"] == "not-run" and report["fused"]["status"] == "unknown"
    assert not masks["fused"].any()


def test_the_fused_verdict_is_not_measured_on_the_fusion_models_calibration_images(data, tmp_path):
    """A fusion model records the images it was fitted on, as a head its training images: eval of the
    fused verdict on them is told and leaves them out; a model without the record is 'unknown'."""
    out = tmp_path / "fusion"
    r = run_cli_in_process("calibrate", str(data), "-d", "fakehead", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["training_images"]["count"] == 12 and KEYS_FILE in man["files"]  # the 8 trained on left out
    assert man["training_images"]["decoders"]["pillow"] == metadata.version("pillow")
    r = run_cli_in_process("eval", str(data), "-d", "fakehead", "--fusion", str(out), "-f", "json", "-q")
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)["run"]["train_overlap"]
    name = f"fusion:{man['name']}"
    # the fusion model records its images' perceptual hashes too (these 16x16 ones have none)
    assert o[name].pop("near") == {"status": "checked", "n": 0, "threshold": 6, "without_hash": 20}
    assert man["training_images"]["perceptual"]["without_hash"] == 12
    assert o[name] == {"status": "checked", "n": 12, "of": 20, "excluded": True}
    assert o["fused"] == {"status": "checked", "n": 20, "of": 20, "excluded": True}  # the head's 8 and these 12
    assert f"{name} 12 of 20 (left out of the fused verdict's metrics)" in r.stderr
    (out / KEYS_FILE).write_bytes((out / KEYS_FILE).read_bytes()[:-8] + b"\0" * 8)  # not what was fitted on
    r = run_cli_in_process("eval", str(data), "-d", "fakehead", "--fusion", str(out), "-f", "json", "-q")
    o = json.loads(r.stdout)["run"]["train_overlap"]
    assert o[name]["status"] == "unknown" and "checksum differs" in o[name]["why"], o
    assert o["fused"]["status"] == "unknown" and name in o["fused"]["why"]
    man.pop("training_images")  # a model fitted by an older version
    (out / "manifest.json").write_text(json.dumps(man))
    r = run_cli_in_process("eval", str(data), "-d", "fakehead", "--fusion", str(out), "-f", "json", "-q")
    o = json.loads(r.stdout)["run"]["train_overlap"]
    assert o[name]["status"] == "unknown" and "older version" in o[name]["why"]


@pytest.mark.parametrize("block, why", [
    ({"file": []}, "not one this version reads"),  # TypeError: unhashable type: 'list'
    ({"file": {"a": 1}}, "not one this version reads"),
    ({"file": "other.train-keys.bin"}, "not listed"),  # a file the sidecar gives no checksum
    ({"file": "h.train-keys.bin", "count": 1}, "checksum differs"),
])
def test_an_onnx_heads_record_is_read_only_as_its_sidecar_checksums_it(tmp_path, block, why):
    """The ONNX export's sidecar names the record and its checksum; a record named otherwise (edited
    sidecar, another file) is unknown, never a crash of eval and never read unchecked."""
    from aiidetect.evaluate.overlap import train_overlap
    from aiidetect.train_record import KEY_KIND

    (tmp_path / "h.train-keys.bin").write_bytes(b"\x01" * 8)
    (tmp_path / "other.train-keys.bin").write_bytes(b"\x01" * 8)

    class Onnx(Detector):
        family = "linear"

        def __init__(self):
            super().__init__("linear:h")
            self.meta = {"head": "h", "training_images": {"key": KEY_KIND, "count": 1, **block}}
            self.onnx_dir = tmp_path
            self.onnx_files = {"h.train-keys.bin": "0" * 64}

    report, masks = train_overlap([Onnx()], ["01" * 32])
    assert report["linear:h"]["status"] == "unknown" and why in report["linear:h"]["why"], report
    assert not masks["fused"].any()


@pytest.mark.parametrize("blob, count, why", [
    (b"\x02" * 8 + b"\x01" * 8, 2, "not sorted"),
    (b"\x01" * 8 + b"\x01" * 8, 2, "not sorted"),  # a repeat
    (b"\x01" * 12, 1, "holds more than 8 bytes"),  # not a multiple of 8, longer than its count
    (b"\x01" * 4, 1, "holds 4 bytes"),
    (b"", 1 << 40, "not a number of images"),  # a count no head has: never an allocation of it
])
def test_a_damaged_record_is_unknown_never_a_crash(tmp_path, blob, count, why):
    from aiidetect.train_record import KEY_KIND, NoRecord

    (tmp_path / KEYS_FILE).write_bytes(blob)
    with pytest.raises(NoRecord, match=why):
        load_keys(tmp_path, {"training_images": {"file": KEYS_FILE, "key": KEY_KIND, "count": count},
                             "files": {KEYS_FILE: "x"}})


def test_heads_with_different_records_each_lose_their_own_and_the_fused_verdict_both(tmp_path):
    """Head a trained on items 0-1, head b on 1-3: a's metrics leave out 2 items, b's 3, and the fused
    verdict (resting on both) the 4 either was trained on."""
    from aiidetect.evaluate.core import condition_metrics
    from aiidetect.evaluate.overlap import FUSED, train_overlap
    from aiidetect.evaluate.runner import Scored

    digests = [f"{k:02x}" * 32 for k in range(10)]

    class Trained(Detector):
        family = "fakehead"

        def __init__(self, name, trained_on):
            super().__init__(name)
            (tmp_path / name).mkdir()
            block, blobs = record([digests[k] for k in trained_on], "test")
            (tmp_path / name / KEYS_FILE).write_bytes(blobs[KEYS_FILE])
            self.head = Head(tmp_path / name, {"training_images": block, "files": {KEYS_FILE: "x"}})

    dets = [Trained("a", [0, 1]), Trained("b", [1, 2, 3])]
    report, masks = train_overlap(dets, digests)
    assert (report["a"]["n"], report["b"]["n"], report[FUSED]["n"]) == (2, 3, 4)
    scored = [Scored(f"{k}.png", k % 2, "gen" if k % 2 else "real", sha256=digests[k],
                     results={d.name: DetectorResult("ok", p_ai=0.9 if k % 2 else 0.1) for d in dets})
              for k in range(10)]
    block, cols = condition_metrics(scored, dets, None, left_out=masks)
    a, b, f = block["detectors"]["a"], block["detectors"]["b"], block["fused"]
    assert (a["train_left_out"], a["overall"]["n"]) == (2, 8) and (b["train_left_out"], b["overall"]["n"]) == (3, 7)
    assert f["train_left_out"] == 4 and sum(sum(v.values()) for v in f["verdicts"].values()) == 6
    assert np.isnan(cols["p"]["a"][:2]).all() and not np.isnan(cols["p"]["a"][2:]).any()
    assert np.isnan(cols["p"][FUSED][:4]).all() and not np.isnan(cols["p"][FUSED][4:]).any()


def test_scores_csv_gives_no_verdict_where_the_fused_score_was_left_out(data, tmp_path):
    import csv

    _eval(str(data), "--out-dir", str(tmp_path / "o"), "--no-plots")
    rows = list(csv.DictReader((tmp_path / "o" / "scores.csv").open()))
    left = [r for r in rows if r["p_fused"] == ""]
    assert len(left) == 8 and all(r["verdict"] == "" for r in left)
    assert all(r["verdict"] for r in rows if r["p_fused"] != "")
