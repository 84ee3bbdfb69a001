"""`aiidetect eval` and `aiidetect calibrate` end to end, with fake detectors
(so the test needs no trained head), plus the perturbation runner."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from aiidetect.detectors import register
from aiidetect.detectors.base import Detector
from aiidetect.records import DetectorResult, Evidence

from fake_detectors import Brightness


class Exif(Detector):
    """A metadata detector: EXIF present -> soft evidence for a camera."""

    family = "fakeexif"
    needs_pixels = False

    def __init__(self):
        super().__init__("fakeexif")

    def predict(self, samples, features):
        return [DetectorResult("ok", evidence=[Evidence("exif", "real", 1.0, "EXIF block")])
                if s.data and b"Exif" in s.data[:4096] else DetectorResult("ok") for s in samples]


class Size(Detector):
    family = "fakesize"
    needs_pixels = False

    def __init__(self):
        super().__init__("fakesize")

    def predict(self, samples, features):
        return [DetectorResult("ok", extra={"size": [s.record.width, s.record.height], "fmt": s.record.format})
                for s in samples]


class NanBright(Brightness):
    """Brightness with a numerical failure on every file whose name has a 2 in it."""

    family = "fakenan"

    def predict(self, samples, features):
        out = super().predict(samples, features)
        for s, r in zip(samples, out):
            if "2" in s.record.file.rsplit("/", 1)[-1]:
                r.score, r.p_ai = float("nan"), float("nan")
        return out


class EdgeBright(Brightness):
    """p_ai a hair inside the rules' band on each side: 0.8999996 for AI images, 0.1000004 for real ones."""

    family = "fakeedge"

    def predict(self, samples, features):
        return [DetectorResult("ok", p_ai=0.8999996 if "/ai/" in s.record.file else 0.1000004) for s in samples]


register("fakebright", lambda ctx: [Brightness()])
register("fakeedge", lambda ctx: [EdgeBright()])
register("fakenan", lambda ctx: [NanBright()])
register("fakeexif", lambda ctx: [Exif()])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    rng = np.random.default_rng(0)
    (root / "real").mkdir()
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    for i in range(8):
        a = rng.normal(50 + 6 * i, 20, (40, 48, 3)).clip(0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / "real" / f"r{i}.jpg", quality=92, exif=exif)
    for gen, base in (("genA", 200), ("genB", 120)):
        (root / "ai" / gen).mkdir(parents=True)
        for i in range(5):
            a = rng.normal(base + 6 * i, 20, (40, 48, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / "ai" / gen / f"{gen}{i}.png")
    (root / "real" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def cli(*args):
    from aiidetect.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_eval_end_to_end_with_sweeps_and_normalization(dataset, tmp_path, weights_dir):
    out = tmp_path / "out"
    r = cli("eval", str(dataset), "-d", "fakebright,fakeexif", "--perturb", "jpeg:75", "--perturb", "resize:0.5",
            "--normalize", "jpeg:96", "--out", str(out), "--fusion", "none", "-q")
    assert r.exit_code == 0, r.output
    assert "fakebright" in r.output and "per generator" in r.output
    m = json.loads((out / "metrics.json").read_text())
    conds = [c["condition"] for c in m["conditions"]]
    assert conds == ["raw", "normalized:jpeg96", "jpeg75", "resize0.5"]
    raw = m["conditions"][0]
    assert raw["n_items"] == 19 and raw["n_decode_errors"] == 1
    b = raw["detectors"]["fakebright"]
    assert b["coverage"] == 1.0 and b["overall"]["auc"] == 1.0
    assert set(b["per_generator"]) == {"real", "genA", "genB"}
    assert raw["attribution"]["fakebright"]["labels"]
    f = raw["fused"]
    assert sum(f["verdicts"]["real"].values()) == 8 and 0 <= f["uncertain_share"] <= 1
    # the format-bias control strips EXIF from every image alike: the soft evidence disappears
    norm = m["conditions"][1]
    assert raw["fused"]["overall"]["auc"] == 1.0 and norm["detectors"]["fakeexif"]["no_opinion"] == 18
    for name in ("summary.md", "scores.csv", "roc_raw.png", "reliability_raw.png", "hist_raw.png",
                 "roc_normalized-jpeg96.png"):
        assert (out / name).stat().st_size > 0, name
    assert "## normalized:jpeg96" in (out / "summary.md").read_text()


def test_calibrate_then_eval_uses_the_fusion_model(dataset, tmp_path, weights_dir):
    r = cli("calibrate", str(dataset), "-d", "fakebright,fakeexif", "--method", "platt", "-q")
    assert r.exit_code == 0, r.output
    head = weights_dir / "fusion"
    man = json.loads((head / "manifest.json").read_text())
    assert man["detector"] == "fusion" and man["data"]["n"] == 19
    assert "fakebright" in man["params"]["detectors"] and 0.5 <= man["threshold"]["ai"] <= 1
    # 8 real photos cannot show a 1% false-positive rate: the band keeps the rules' 0.9 and both outputs say so
    assert man["threshold"]["ai"] >= 0.9 and "8 real images cannot show a 1% false-positive rate" in r.output
    assert man["threshold"]["notes"][0].startswith("8 real images") and man["threshold"]["fpr_upper_95"] > 0.3
    out = tmp_path / "o2"
    r = cli("eval", str(dataset), "-d", "fakebright", "--out", str(out), "--no-plots", "-q")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["run"]["fusion"].startswith("fusion model fusion")
    assert m["conditions"][0]["fused"]["band"]["ai"] == pytest.approx(man["threshold"]["ai"])


def test_calibrate_estimates_the_band_on_images_its_fit_did_not_see(dataset, tmp_path):
    """The band's error rates were measured only on the images that chose it (at the target by
    construction): nothing estimated what it keeps on other images."""
    r = cli("calibrate", str(dataset), "-d", "fakebright", "-o", str(tmp_path / "fz"))
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "fz" / "manifest.json").read_text())
    cv = man["metrics"]["cross_validated"]
    # every readable image judged once
    assert cv["folds"] == 5 and cv["real_called_ai_count"][1] + cv["ai_called_real_count"][1] == \
        man["data"]["n"] - man["data"]["decode_errors"] == 18
    k, n = cv["real_called_ai_count"]
    assert (f"cross-validated (5 folds, each judged by a fit without it): real called AI {100 * k / n:.1f}% "
            f"({k} of {n}; 95% upper bound") in " ".join(r.stdout.split())


def test_an_out_dir_that_cannot_take_the_outputs_is_said_first_and_a_failed_write_keeps_the_last(
        dataset, tmp_path, monkeypatch):
    """`-o` naming a file: the detectors scored every image and the tables were printed, then
    "FileExistsError: File exists", exit 2. A write that failed part way (a full disk) left half a
    metrics.json or summary.md over the previous run's, and the tables on stdout."""
    calls = []
    monkeypatch.setattr(Brightness, "predict", lambda self, s, f: calls.append(1) or [])
    (tmp_path / "afile").write_text("keep me")
    for out in ("afile", "afile/sub"):
        r = cli("eval", str(dataset), "-d", "fakebright", "-o", str(tmp_path / out), "--fusion", "none", "-q")
        assert r.exit_code == 2 and r.stdout == "" and not calls, r.output
        assert "--out-dir" in r.stderr and "is a file" in r.stderr and "Traceback" not in r.stderr
    # inside the data: the plots became real photos of the next run
    r = cli("eval", str(dataset), "-d", "fakebright", "-o", str(dataset / "real" / "out"), "--fusion", "none", "-q")
    assert r.exit_code == 2 and not calls and "lies inside the data folder" in r.stderr
    assert not (dataset / "real" / "out").exists()
    assert (tmp_path / "afile").read_text() == "keep me"
    monkeypatch.undo()
    out = tmp_path / "o"
    out.mkdir()
    (out / "scores.csv").write_text("the last run's scores")

    def full(self, row):
        raise OSError(28, "No space left on device")

    from aiidetect.report.safe import CsvRows

    monkeypatch.setattr(CsvRows, "writerow", full)
    r = cli("eval", str(dataset), "-d", "fakebright", "-o", str(out), "--fusion", "none", "--no-plots", "-q")
    assert r.exit_code == 2 and r.stdout == "", r.output
    assert f"cannot write the outputs to {out}: No space left on device" in r.stderr
    assert (out / "scores.csv").read_text() == "the last run's scores"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_calibrate_says_when_scans_will_not_use_the_model_it_wrote(dataset, tmp_path, weights_dir):
    """scan and eval take the first fusion model in the weights folders: one written with -o elsewhere,
    or under a --name that sorts after another, was not used, and calibrate said nothing of it."""
    r = cli("calibrate", str(dataset), "-d", "fakebright", "--name", "fusion-b")
    assert r.exit_code == 0 and "not this model" not in r.stderr, r.output
    r = cli("calibrate", str(dataset), "-d", "fakebright", "-o", str(tmp_path / "elsewhere"))
    assert r.exit_code == 0, r.output
    assert (f"note: scan and eval use {weights_dir / 'fusion-b'}, found first in the weights folders, not this "
            f"model; pass --fusion {tmp_path / 'elsewhere'} to use it") in " ".join(r.stderr.split())


def test_a_detector_the_fusion_model_does_not_know_is_named_for_the_run(dataset, tmp_path, weights_dir):
    """A head added or renamed after calibrating: every record said "not in the fusion model, ignored"
    and the run said nothing, with every verdict resting on the others (here: on none, all uncertain)."""
    r = cli("calibrate", str(dataset), "-d", "fakebright", "-o", str(tmp_path / "fz"), "-q")
    assert r.exit_code == 0, r.output
    r = cli("eval", str(dataset), "-d", "fakebright,fakenan", "--fusion", str(tmp_path / "fz"), "-f", "json")
    said = " ".join(r.stderr.split())
    assert r.exit_code == 0 and "note: the fusion model fusion calibrates fakebright, not fakenan: its answers " \
                                "have no say in the verdicts" in said, said
    r = cli("eval", str(dataset), "-d", "fakebright", "--fusion", str(tmp_path / "fz"), "-f", "json")
    assert r.exit_code == 0 and "no say" not in r.stderr
    from aiidetect.api import ScanOptions, Scanner

    notes = []
    sc = Scanner(ScanOptions(detectors=["fakenan"], fusion=str(tmp_path / "fz"), cache=False), on_note=notes.append)
    assert sc.fusion is not None and any("calibrates fakebright, not fakenan" in n for n in notes), notes


def test_usage_errors_exit_2(dataset):
    assert cli("eval", str(dataset), "--perturb", "jpeg:500").exit_code == 2
    assert cli("eval", "/nonexistent/data").exit_code == 2
    assert cli("eval", str(dataset), "-d", "nosuchdetector").exit_code == 2


def test_an_evaluation_of_nothing_is_an_error_not_empty_metrics(tmp_path):
    """Every listed file unreadable: eval said "0 images scored" in its table and exited 0, so a
    CI job or a script went on with metrics of nothing. It is exit 2, naming the first file."""
    for name in ("a.jpg", "b.png"):
        (tmp_path / name).write_bytes(b"not an image: " + name.encode())  # not one file under two labels
    (tmp_path / "m.csv").write_text("file,label\na.jpg,real\nb.png,ai\n")
    for fmt in ("json", "table"):
        r = cli("eval", str(tmp_path / "m.csv"), "-d", "metadata", "-f", fmt, "-q", "--out-dir", str(tmp_path / "o"))
        assert r.exit_code == 2, r.output
        assert "none of the 2 labelled images could be scored" in r.stderr and "a.jpg: unsupported-format" in r.stderr
        assert r.stdout == "" and not (tmp_path / "o").exists()


def test_perturbations_hit_both_classes_identically(dataset):
    from aiidetect.evaluate import parse, run
    from aiidetect.train.data import load_items

    items = [i for i in load_items([dataset]) if "broken" not in i.path]
    raw = run(items, [Size()])
    half = run(items, [Size()], transform=parse("resize:0.5")[0])
    jp = run(items, [Size()], transform=parse("crop:0.5+jpeg:50")[0])
    for a, b, c in zip(raw, half, jp):
        w, h = a.results["fakesize"].extra["size"]
        assert b.results["fakesize"].extra["size"] == [w // 2, h // 2]
        assert c.results["fakesize"].extra == {"size": [round(w / 2), round(h / 2)], "fmt": "JPEG"}
    assert {s.label for s in half} == {0, 1}


def test_dev_manifest_end_to_end(dev_manifest, tmp_path, weights_dir):
    """The real dev set through whatever detectors exist (metadata may be
    unavailable here; the run must still finish and write everything)."""
    out = tmp_path / "dev"
    r = cli("eval", str(dev_manifest), "-d", "metadata", "--limit", "6", "--out", str(out), "-q")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["run"]["n_items"] == 12 and (out / "summary.md").is_file()


def test_attribution_formats():
    from aiidetect.evaluate.core import _attribution

    ok = lambda a: DetectorResult("ok", p_ai=0.9, extra={"attribution": a})  # noqa: E731
    assert _attribution(ok("sd14")) == "sd14"
    assert _attribution(ok({"label": "mj"})) == "mj"
    assert _attribution(ok([{"label": "glide", "p": 0.7}, {"label": "adm", "p": 0.2}])) == "glide"
    assert _attribution(DetectorResult.unavailable("x")) is None


def test_eval_reads_a_spreadsheet_manifest_and_refuses_bad_rows(dataset, tmp_path):
    """Through the installed command: a BOM + CRLF manifest is read (it died
    with KeyError: 'file', exit 2); a label it cannot read is exit 2 naming
    the line, not a row dropped in silence."""
    from conftest import run_cli

    rows = [(dataset / "real" / "r0.jpg", "Real"), (dataset / "ai" / "genA" / "genA0.png", "AI")]
    man = tmp_path / "m.csv"
    man.write_bytes(("file,label\r\n" + "".join(f"{p},{l}\r\n" for p, l in rows)).encode("utf-8-sig"))
    out = tmp_path / "out"
    r = run_cli("eval", str(man), "-d", "metadata", "-q", "--fusion", "none", "--no-plots", "-o", str(out))
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert (m["run"]["n_real"], m["run"]["n_ai"]) == (1, 1)
    man.write_text(f"file,label\n{rows[0][0]},real\n{rows[1][0]},synthetic\n")
    r = run_cli("eval", str(man), "-d", "metadata", "-q", "--fusion", "none")
    assert r.returncode == 2 and r.stdout == ""
    assert "line 3: label 'synthetic'" in r.stderr and "Traceback" not in r.stderr


def test_eval_outputs_parse_with_names_that_are_not_utf8(dataset, dev_dir, tmp_path):
    """A generator folder and a broken file whose names are not UTF-8: eval
    wrote lone surrogates into metrics.json, then died writing summary.md
    (UnicodeEncodeError, exit 2). The unreadable file is named, not only counted."""
    import base64
    import os
    import shutil

    from conftest import run_cli
    from aiidetect.report.safe import strict_loads

    root = tmp_path / "d"
    (root / "real").mkdir(parents=True)
    # a camera photo: the metadata detector has an opinion on it (a stripped copy's missing EXIF weighs nothing),
    # so the real images get their row too
    shutil.copy(dev_dir / "real" / "camera" / "Canon_EOS_7D.jpg", root / "real" / "r0.jpg")
    gen = os.path.join(os.fsencode(root / "ai"), b"g\xff")
    os.makedirs(gen)
    # a file the metadata detector has an opinion on, so the generator gets a table row
    sd = sorted((dev_dir / "ai" / "sd14").iterdir())[0]
    shutil.copy(sd, os.fsdecode(os.path.join(gen, b"a" + os.fsencode(sd.suffix))))
    bad = os.path.join(os.fsencode(root / "real"), b"bad\xfe.jpg")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    out = tmp_path / "out"
    r = run_cli("eval", str(root), "-d", "metadata", "-q", "--fusion", "none", "--no-plots", "-o", str(out))
    assert r.returncode == 0, r.stderr
    raw = (out / "metrics.json").read_bytes()
    assert b"\\ud" not in raw
    cond = strict_loads(raw.decode("utf-8"))["conditions"][0]
    assert set(cond["detectors"]["metadata"]["per_generator"]) == {"real", "g\ufffd"}, cond["detectors"]
    assert cond["n_decode_errors"] == 1 and cond["decode_errors"] == {"unsupported-format": 1}
    (u,) = cond["unreadable"]
    assert u["file"].endswith("bad\ufffd.jpg") and base64.b64decode(u["file_bytes"]) == bad
    assert u["error"].startswith("unsupported-format")
    assert "g\ufffd" in (out / "summary.md").read_text(encoding="utf-8")
    assert "unreadable: " in r.stdout and "bad\ufffd.jpg (unsupported-format" in r.stdout


def test_scores_csv_writes_the_fused_p_ai_on_its_verdicts_side_as_scan_does(dataset, tmp_path):
    """A fused 0.8999996 under the rules' 0.9 band is uncertain; scan's record says 0.899999, and eval's
    scores.csv said 0.900000 (rounded to nearest) beside "uncertain": a script reading p >= 0.9 disagreed."""
    import csv

    out = tmp_path / "o"
    r = cli("eval", str(dataset), "-d", "fakeedge", "--fusion", "none", "--out", str(out), "--no-plots", "-q")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "scores.csv", encoding="utf-8", newline="")))
    assert len(rows) == 18 and {r["verdict"] for r in rows} == {"uncertain"}
    assert {r["p_fused"] for r in rows if r["label"] == "1"} == {"0.899999"}
    assert {r["p_fused"] for r in rows if r["label"] == "0"} == {"0.100001"}
    s = cli("scan", str(dataset / "ai" / "genA" / "genA0.png"), "-d", "fakeedge", "--fusion", "none", "-f", "json",
            "-q", "--no-cache")
    assert json.loads(s.stdout)[0]["p_ai"] == 0.899999


def test_nan_scores_are_left_out_and_counted_by_calibrate_and_eval(dataset, tmp_path, weights_dir):
    r = cli("calibrate", str(dataset), "-d", "fakenan", "-q")
    assert r.exit_code == 0, r.output
    assert "fakenan: temperature" in r.output and "3 NaN or infinite scores left out" in r.output
    man = json.loads((weights_dir / "fusion" / "manifest.json").read_text())
    assert man["params"]["detectors"]["fakenan"]["non_finite"] == 3
    out = tmp_path / "o"
    r = cli("eval", str(dataset), "-d", "fakenan", "--out", str(out), "--no-plots", "-q")
    assert r.exit_code == 0, r.output
    raw = json.loads((out / "metrics.json").read_text())["conditions"][0]
    assert raw["detectors"]["fakenan"]["non_finite"] == 3 and raw["detectors"]["fakenan"]["overall"]["n"] == 15


def test_the_table_says_how_many_images_each_rows_numbers_rest_on(dataset):
    """`cover` is a share: an AUC over fakenan's 15 opinions read like one over the 18 images scored, with no
    word of the classes behind it, and nothing on the console said `best acc` was chosen on this data."""
    r = cli("eval", str(dataset), "-d", "fakebright,fakenan", "--fusion", "none", "-q")
    assert r.exit_code == 0, r.output
    rows = {line.split("\u2502")[1].strip(): [c.strip() for c in line.split("\u2502")[2:]]
            for line in r.stdout.splitlines() if line.startswith("\u2502")}
    assert rows["fakebright"][1] == "8/10" and rows["fakenan"][1] == "7/8" and rows["fused"][1] == "8/10"
    assert "best threshold on this very data (optimistic" in r.stdout


def test_calibrate_fits_the_bias_and_band_on_the_files_every_detector_answered(dataset, tmp_path):
    """fakenan gives NaN on 3 files: a scan fuses them without the model's bias and band, so they are
    left out of that fit (they were fitted with fakenan's logit as 0), and the output counts them."""
    out = tmp_path / "fusion"
    r = cli("calibrate", str(dataset), "-d", "fakebright,fakenan", "-q", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert ("weights, bias and band fitted on the 15 images every detector with a say (a weight above 0) answered; "
            "3 left out (fakenan 3 without an answer): scans judge such files without the bias and band") in r.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["params"]["fit_rows"] == {"n": 15, "no_answer": 3, "no_answer_by_detector": {"fakenan": 3}}
    assert man["threshold"]["n_real"] + man["threshold"]["n_ai"] == 15


def test_eval_counts_the_files_judged_without_the_models_band(dataset, tmp_path):
    """The verdict counts of files a detector with a say did not answer are made on a wider band, without
    the bias (fusion.fuse); eval's line named the model's band alone beside them."""
    model = tmp_path / "fusion"
    assert cli("calibrate", str(dataset), "-d", "fakebright,fakenan", "-q", "-o", str(model)).exit_code == 0
    out = tmp_path / "o"
    # (the images it was calibrated on: kept, or the fused metrics would leave every one out)
    r = cli("eval", str(dataset), "-d", "fakebright,fakenan", "--fusion", str(model), "-q", "--out", str(out),
            "--no-plots", "--allow-train-overlap")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "metrics.json").read_text())["conditions"][0]["fused"]["band"]["set_aside"] == 3
    assert "(fusion; 3 file(s) judged without the model's bias, on a band no narrower than the rules'" in r.stdout


def test_eval_and_calibrate_count_the_links_out_of_the_data_they_did_not_follow(dataset, tmp_path, weights_dir):
    """A link `evil -> /` in the data folder: calibrate took every image layout it found under /.
    Now the data is what lies inside the folder, and the summary says how many links were left."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data, symlinks=True)
    (data / "real" / "broken.jpg").unlink()
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dataset / "ai", elsewhere / "ai" / "genC" / "x")
    for f in (elsewhere / "ai" / "genC" / "x").rglob("*.png"):  # images of their own, not copies left out
        own = PngImagePlugin.PngInfo()
        own.add_text("elsewhere", f.name)
        Image.open(f).save(f, pnginfo=own)
    (data / "ai" / "evil").symlink_to(elsewhere)
    r = cli("calibrate", str(data), "-d", "fakebright", "-o", str(tmp_path / "fz"))
    assert r.exit_code == 0, r.output
    assert "18 labelled images" in r.stderr
    assert "1 symbolic link(s) leading out of the data folders not followed (--follow-links)" in r.stderr
    r = cli("eval", str(data), "-d", "fakebright", "--fusion", "none", "--follow-links", "-f", "json", "-q",
            "--no-plots")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["conditions"][0]["n_items"] == 28


class HeadedBright(Brightness):
    """Brightness with a head folder's manifest, whose tensors' digest the test changes ("retrains")."""

    family = "fakeheaded"
    digest = ["a" * 64]

    def __init__(self):
        super().__init__()
        self.name = "fakeheaded"
        from types import SimpleNamespace

        self.head = SimpleNamespace(path=Path("no-such-head"),
                                    manifest={"files": {"head.safetensors": HeadedBright.digest[0]}})


register("fakeheaded", lambda ctx: [HeadedBright()])


def test_a_head_retrained_after_calibrating_has_no_say_through_the_old_calibration(dataset, tmp_path, weights_dir):
    """A head retrained under the same name kept the fusion model's calibration, weight and band fitted on
    the old head's scores: a random-init probe's Platt slope of 44 applied to a trained probe's logits
    called 9 of 60 real camera photos ai-generated at P(AI) 1.0. calibrate records each head's tensors;
    scan and eval leave out a head whose tensors changed, said once for the run (here: no detector left,
    so the default rules)."""
    HeadedBright.digest[0] = "a" * 64
    r = cli("calibrate", str(dataset), "-d", "fakeheaded", "-o", str(tmp_path / "fz"), "-q")
    assert r.exit_code == 0, r.output
    fitted = json.loads((tmp_path / "fz" / "manifest.json").read_text())["params"]["detectors"]["fakeheaded"]
    assert fitted["head_sha256"] == "a" * 64 and fitted["weight"] > 0
    from aiidetect.api import ScanOptions, Scanner

    notes = []
    sc = Scanner(ScanOptions(detectors=["fakeheaded"], fusion=str(tmp_path / "fz"), cache=False), on_note=notes.append)
    assert sc.fusion is not None and not any("changed since" in n for n in notes), notes  # the same head: used
    HeadedBright.digest[0] = "b" * 64  # retrained
    try:
        r = cli("eval", str(dataset), "-d", "fakeheaded", "--fusion", str(tmp_path / "fz"), "-f", "json")
        said = " ".join(r.stderr.split())
        assert r.exit_code == 0 and "the head fakeheaded changed since the fusion model fusion was fitted" in said, said
        assert "default rules decide" in said and "run `aiidetect calibrate` again" in said
        assert "fusion: rules (the fusion model's heads changed)" in said
        notes = []
        sc = Scanner(ScanOptions(detectors=["fakeheaded"], fusion=str(tmp_path / "fz"), cache=False),
                     on_note=notes.append)
        assert sc.fusion is None and any("fakeheaded changed since" in n for n in notes), notes
    finally:
        HeadedBright.digest[0] = "a" * 64


class HeadedDim(HeadedBright):
    """A second headed detector (brightness of the upper half), whose head stays as calibrated."""

    family = "fakeheadeddim"

    def __init__(self):
        super().__init__()
        self.name = "fakeheadeddim"
        from types import SimpleNamespace

        self.head = SimpleNamespace(path=Path("no-such-head"), manifest={"files": {"head.safetensors": "d" * 64}})


register("fakeheadeddim", lambda ctx: [HeadedDim()])


def test_one_head_retrained_of_two_is_named_once_and_in_every_record(dataset, tmp_path, weights_dir):
    """One of two calibrated heads retrained: the run said so, then said again that the model "calibrates
    fakeheadeddim, not fakeheaded: run calibrate with it" (it had been calibrated with it); each record's
    reason read "not in the fusion model", and its fusion identity named the whole model, whose manifest
    holds the left-out head's calibration."""
    HeadedBright.digest[0] = "a" * 64
    r = cli("calibrate", str(dataset), "-d", "fakeheaded,fakeheadeddim", "-o", str(tmp_path / "fz"), "-q")
    assert r.exit_code == 0, r.output
    from aiidetect.api import ScanOptions, Scanner

    HeadedBright.digest[0] = "b" * 64  # retrained
    try:
        notes = []
        sc = Scanner(ScanOptions(detectors=["fakeheaded", "fakeheadeddim"], fusion=str(tmp_path / "fz"), cache=False),
                     on_note=notes.append)
        (rec,) = list(sc.scan([dataset / "real" / "r0.jpg"]))
        assert [n for n in notes if "fakeheaded," in n or "fakeheaded " in n or "fakeheaded:" in n] == [
            n for n in notes if "fakeheaded changed since" in n] and len(notes) == 1, notes
        assert rec.fusion["kind"] == "model" and rec.fusion["left_out"] == ["fakeheaded"], rec.fusion
        from aiidetect.report.writers import fusion_label  # scan's summary line

        assert fusion_label(rec.fusion).endswith(" without fakeheaded (head changed since it was fitted)")
        assert "fakeheaded: its head changed since the fusion model was fitted, ignored" in rec.reasons, rec.reasons
        assert not any("not in the fusion model" in x for x in rec.reasons), rec.reasons
        r = cli("eval", str(dataset), "-d", "fakeheaded,fakeheadeddim", "--fusion", str(tmp_path / "fz"), "-f", "json")
        said = " ".join(r.stderr.split())
        assert r.exit_code == 0 and said.count("fakeheaded changed since") == 1, said
        assert "not fakeheaded" not in said and "without fakeheaded (head changed since it was fitted)" in said, said
    finally:
        HeadedBright.digest[0] = "a" * 64


def test_calibrate_says_which_detectors_every_fitted_file_was_answered_by(dataset, tmp_path, monkeypatch):
    """A detector weighed 0 is not waited for: the files only it missed are fitted on (fit_rows.n). The line
    said they were "the images every calibrated detector answered", of which `probe` gave 56 no answer."""
    from aiidetect import calibration

    rng = np.random.default_rng(11)

    class S:
        def __init__(self, label, results):
            self.label, self.results, self.error = label, results, None

    items = [S(i % 2, {"probe": DetectorResult.failed("crashed") if i < 60 else
                       DetectorResult("ok", p_ai=float(0.5 + 0.01 * rng.normal())),
                       "good": DetectorResult.failed("crashed") if 150 <= i < 160 else
                       DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-rng.normal(1.0 if i % 2 else -1.0)))))})
             for i in range(200)]
    fit = calibration.fit_fusion
    monkeypatch.setattr(calibration, "fit_fusion", lambda scored, **kw: fit(items, **kw))
    r = cli("calibrate", str(dataset), "-d", "fakebright", "-q", "-o", str(tmp_path / "fusion"))
    assert r.exit_code == 0, r.output
    assert "probe: temperature" in r.output and "weight +0.000" in r.output
    assert ("weights, bias and band fitted on the 190 images every detector with a say (a weight above 0) "
            "answered; 10 left out (good 10 without an answer)") in r.output


def test_eval_says_how_many_manifest_rows_it_left_out(dataset, tmp_path):
    """A six-row manifest evaluated as "2 labelled images" with no word of the two rows labelled unknown
    and the two given twice: stderr said nothing of the first, metrics.json of either."""
    from conftest import run_cli_in_process

    r0, a0 = dataset / "real" / "r0.jpg", dataset / "ai" / "genA" / "genA0.png"
    man = tmp_path / "m.csv"
    man.write_text(f"file,label\n{r0},real\n{a0},ai\n{r0},real\n{a0},ai\n{r0}x,unknown\nq.png,Unknown\n")
    r = run_cli_in_process("eval", str(man), "-d", "metadata", "--fusion", "none", "-f", "json", "--no-plots")
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)["run"]
    assert run["n_items"] == 2
    assert run["left_out"] == {"unknown_label_rows": 2, "copies": 2, "links_outside": 0, "link_loops": 0}
    assert "2 manifest row(s) labelled unknown left out" in r.stderr


def test_calibrate_records_the_manifest_rows_it_left_out(dataset, tmp_path):
    """The fusion model's manifest said n 18 for a ';'-separated manifest of 20 rows, two of them labelled
    unknown, and nothing of those two. (The module's data and fake detector: the dev set and the metadata
    detector cost seconds of imports this test does not need.)"""
    rows = [(p, "real") for p in sorted((dataset / "real").glob("r*.jpg"))]
    rows += [(p, "ai") for p in sorted((dataset / "ai").glob("*/*.png"))]
    man = tmp_path / "m.csv"
    man.write_text("file;label\n" + "".join(f"{p};{lab}\n" for p, lab in rows) + "x.png;unknown\ny.png;unknown\n")
    r = cli("calibrate", str(man), "-d", "fakebright", "-q", "-f", "json", "-o", str(tmp_path / "f"))
    assert r.exit_code == 0, r.output
    left_out = {"unknown_label_rows": 2, "copies": 0, "links_outside": 0, "link_loops": 0}
    assert json.loads(r.stdout)["data"]["left_out"] == left_out and json.loads(r.stdout)["data"]["n"] == 18
    assert json.loads((tmp_path / "f" / "manifest.json").read_text())["data"]["left_out"] == left_out
