"""The command-line contract, command by command, through real subprocesses (docs/cli.md,
docs/schema.md "Exit codes"): the exit code each case documents, and with a format for
machines, stdout that parses whole (a JSON document saying what failed, or nothing at all
with the error on stderr): never a note, a progress line or half a document on stdout. The trainer rows
and calibrate's head notes run the same command line in this process (`_in_process`): a subprocess spent
most of their time importing torch."""
from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from PIL import Image, PngImagePlugin

from conftest import REPO, run_cli


@pytest.fixture(scope="module")
def work(tmp_path_factory, dev_dir):
    d = tmp_path_factory.mktemp("contract")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, Seed: 42")
    for label, src in (("real", dev_dir / "real" / "ml72"), ("ai/sd", dev_dir / "ai" / "ml72")):
        (d / "data" / label).mkdir(parents=True)
        for p in sorted(src.glob("*.jpg"))[:5]:  # calibrate needs 5 of each class
            shutil.copy(p, d / "data" / label / p.name)
    files = d / "files"
    files.mkdir()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(files / "gen.png", pnginfo=info)
    Image.new("RGB", (64, 48), (200, 10, 30)).save(files / "plain.jpg", quality=90)
    (files / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (d / "small" / "real").mkdir(parents=True)
    (d / "small" / "ai" / "sd").mkdir(parents=True)
    shutil.copy(files / "plain.jpg", d / "small" / "real" / "0.jpg")
    shutil.copy(files / "gen.png", d / "small" / "ai" / "sd" / "0.png")
    shutil.copytree(REPO / "weights" / "univfd", d / "heads" / "univfd")
    shutil.copytree(d / "heads", d / "damaged-heads")
    (d / "damaged-heads" / "broken").mkdir()
    (d / "damaged-heads" / "broken" / "manifest.json").write_text('{"name": "x", "detector": "li')
    (d / "damaged.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x07" * 2000)
    (d / "damaged-cache").mkdir()
    (d / "damaged-cache" / "results.sqlite").write_bytes(b"SQLite format 3\x00garbage")
    # degenerate training sets: one picture under every label, and pictures of one pixel. Each file carries
    # its own text chunk: the pixels are one picture, the files are not copies of one file (which the
    # loader refuses with two labels before any feature is extracted, drop_copies).
    for name, sizes in (("same", [(64, 64, (90, 90, 90))] * 12),
                        ("tiny", [(1, 1, (20 * k, 200 - 10 * k, 7 * k)) for k in range(12)])):
        (d / name).mkdir()
        rows = ["file,label,generator"]
        for k, (w, h, colour) in enumerate(sizes):
            own = PngImagePlugin.PngInfo()
            own.add_text("n", str(k))
            Image.new("RGB", (w, h), colour).save(d / name / f"{k}.png", pnginfo=own)
            rows.append(f"{k}.png,{'real' if k % 2 else 'ai'},{'' if k % 2 else 'sd'}")
        (d / name / "labels.csv").write_text("\n".join(rows) + "\n")
    (d / "one-class.csv").write_text("file,label\n" + "".join(f"data/real/{p.name},real\n"
                                                              for p in sorted((d / "data" / "real").iterdir())))
    # the real photos at 256 pixels (above tiny-vit's 224): train flow makes its proxies of these in a
    # fraction of the time the 3,000-pixel originals take
    (d / "small-real").mkdir()
    for p in sorted((d / "data" / "real").iterdir()):
        with Image.open(p) as im:
            im.convert("RGB").resize((256, 256)).save(d / "small-real" / f"{p.stem}.png")
    r = run_cli("scan", str(files), "-d", "metadata", "--db", str(d / "store.sqlite"), "-f", "jsonl", "-q",
                "--no-cache")
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def _parses(kind: str, out: str) -> None:
    if kind == "json":
        json.loads(out)
    elif kind == "jsonl":
        assert out.strip(), "no rows"
        for line in out.splitlines():
            json.loads(line)
    elif kind == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows and len({len(r) for r in rows}) == 1, rows
    elif kind == "empty":
        assert out == "", out[-2000:]


def _in_process(line: str, **fmt):
    """`line` run by the CLI in this process (typer's CliRunner), with what `run_cli` gives: for the
    trainers, whose subprocess spent seconds importing torch before the check a case is about. The exit
    code, stdout and stderr are what a user's shell gets; the process boundary is checked by the rows
    that still run as subprocesses."""
    import subprocess
    import sys
    import warnings

    from typer.testing import CliRunner

    from aiidetect.cli import app
    from aiidetect.commands.errors import quiet_library_warnings

    def shown(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    t = fmt["t"]
    with warnings.catch_warnings():
        # pytest records warnings; a user's stderr shows them (a -q run must not print one), filtered as
        # Python and aiidetect.cli.main filter them
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        quiet_library_warnings()
        warnings.showwarning = shown
        r = CliRunner().invoke(app, [a.format(**fmt) for a in line.split()],
                               env={"AIIDETECT_WEIGHTS": str(t), "AIIDETECT_CACHE": str(t / "cache")})
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(line, r.exit_code, r.stdout, r.stderr)


def _check(r, rc: int, stdout: str) -> None:
    assert r.returncode == rc, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    _parses(stdout, r.stdout)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    if rc == 2 and stdout == "empty":
        assert "error" in r.stderr.lower(), r.stderr[-2000:]


def test_eval_format_json_is_metrics_json(work, tmp_path):
    """eval printed rich tables only: a script had to ask for --out-dir and read metrics.json back.
    -f json prints that document on stdout, the same one the folder gets; tables are not printed."""
    r = run_cli("eval", str(work / "data"), "-d", "metadata", "-f", "json", "--no-plots", "-o", str(tmp_path / "e"))
    _check(r, 0, "json")
    doc = json.loads(r.stdout)
    assert doc == json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert doc["run"]["n_real"] == 5 and doc["conditions"][0]["fused"]
    r = run_cli("eval", str(work / "data"), "-d", "nosuch", "-f", "json")
    _check(r, 2, "empty")


def test_calibrate_format_json_is_the_fitted_model(work, tmp_path):
    """calibrate printed its fit as prose: -f json prints the fitted model (what its manifest holds)."""
    out = tmp_path / "fusion"
    r = run_cli("calibrate", str(work / "data"), "-d", "metadata", "-f", "json", "-q", "-o", str(out))
    _check(r, 0, "json")
    doc = json.loads(r.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    assert doc["path"] == str(out) and doc["threshold"] == manifest["threshold"]
    assert doc["params"] == manifest["params"] and doc["metrics"] == manifest["metrics"]
    # too few images to fit: nothing on stdout, the reason on stderr
    r = run_cli("calibrate", str(work / "small"), "-d", "metadata", "-f", "json", "-o", str(tmp_path / "x"))
    _check(r, 2, "empty")
    assert "at least 5 real" in r.stderr and not (tmp_path / "x").exists()



def test_calibrate_says_which_heads_it_passed_over_as_eval_does(work, tmp_path):
    """eval and scan print a note for a head folder they pass over (here a manifest cut short); calibrate
    said nothing, so a fusion model was fitted without the head and nobody was told why."""
    cal = _in_process("calibrate {w}/data -d metadata,linear --backbone-config tiny-vit --weights-dir "
                      "{w}/damaged-heads -f json -o {t}/f", w=work, t=tmp_path)
    _check(cal, 0, "json")
    # eval's words (commands.common.print_detector_setup)
    assert f"note: {work / 'damaged-heads' / 'broken'} is not a usable head, so it does not run: " in cal.stderr
    assert "  linear:univfd: unavailable: head 'univfd' was trained on backbone" in cal.stderr, cal.stderr


def test_export_onnx_format(work, tmp_path):
    """export onnx printed JSON and nothing else, without -f: -f json keeps that (the default, as
    scripts read it), -f table is for people; the notes stay on stderr either way."""
    r = run_cli("export", "onnx", "--backbone-config", "tiny-vit", "-o", str(tmp_path / "e"), "-f", "table",
                env={"AIIDETECT_WEIGHTS": str(work / "heads")})
    _check(r, 0, "any")
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'e'} (fp32, opset 18) for backbone tiny-vit"), r.stdout
    assert any(x.startswith("  skipped linear:univfd: trained on another backbone") for x in lines), r.stdout
    assert "note:" not in r.stdout and "no trained head matches" in r.stderr


# (command line, exit code, what stdout must be[, environment]). {w}: the module's work folder, {t}: this
# test's tmp_path. "empty": nothing on stdout, the error on stderr; json/jsonl/csv: stdout parses whole.
CASES = [
    # scan: 0 done, 1 --fail-on matched, 2 usage or fatal
    ("scan {w}/files/plain.jpg -d metadata -f json -q --no-cache", 0, "json"),
    ("scan {w}/files -d metadata -f json --no-cache --fail-on error", 1, "json"),   # broken.jpg: an error record
    ("scan {w}/files -d metadata -f csv --no-cache", 0, "csv"),
    ("scan {w}/missing.jpg -d metadata -f json", 2, "empty"),
    ("scan {w}/files -d metadata -f json --fail-on sometimes", 2, "empty"),
    # meta: 1 is decisive AI evidence; a file that cannot be read is a record, not a fatal error
    ("meta {w}/files/plain.jpg -f json", 0, "json"),
    ("meta {w}/files/broken.jpg -f jsonl", 0, "jsonl"),
    ("meta {w}/files/gen.png -f json", 1, "json"),
    ("meta {w}/missing.png -f json", 2, "empty"),
    ("meta {w}/files -f json --watermark sometimes", 2, "empty"),
    # eval / calibrate
    ("eval {w}/data -d metadata -f json -q", 0, "json"),
    ("eval {w}/missing.csv -d metadata -f json", 2, "empty"),
    ("calibrate {w}/data -d metadata --method bogus -f json", 2, "empty"),
    # results: --fail-on-any is export's findings
    ("results summary --db {w}/store.sqlite -f json", 0, "json"),
    ("results summary --db {w}/store.sqlite -f csv", 0, "csv"),
    ("results export --db {w}/store.sqlite -f json --fail-on-any", 1, "json"),
    ("results export --db {w}/store.sqlite -f json --verdict nonsense", 2, "empty"),
    ("results export --db {w}/store.sqlite -f json --run nosuchrun", 2, "empty"),
    ("results failed --db {w}/store.sqlite -f jsonl", 0, "jsonl"),
    ("results summary --db {w}/missing.sqlite -f json", 2, "empty"),
    ("results export --db {w}/damaged.sqlite -f json", 2, "empty"),
    ("results merge --db {t}/merged.sqlite {w}/store.sqlite -f json", 0, "json"),
    ("results merge --db {t}/merged.sqlite {w}/missing.sqlite -f json", 2, "empty"),
    # check: damage is the store refused (exit 2, stdout empty), as every results command refuses it
    ("results check --db {w}/store.sqlite -f json", 0, "json"),
    ("results check --db {w}/store.sqlite -f csv", 0, "csv"),
    ("results check --db {w}/damaged.sqlite -f json", 2, "empty"),
    # weights: verify's and inspect's documents say what failed (exit 2 all the same)
    ("weights list --weights-dir {w}/heads -f json", 0, "json"),
    ("weights verify --weights-dir {w}/heads -f json", 0, "json"),
    ("weights verify --weights-dir {w}/damaged-heads -f json", 2, "json"),
    ("weights inspect {w}/files/plain.jpg -f json", 2, "json"),
    ("weights fetch ViT-B-16/openai --dry-run -f json --cache-dir {t}/clip", 0, "json"),
    ("weights fetch ViT-B-16/openai --sha256 zz --dry-run -f json", 2, "empty"),
    ("weights pack {t}/b.tar --no-backbones --weights-dir {w}/heads -f json", 0, "json"),
    ("weights pack {t}/b.tar --head nosuch --weights-dir {w}/heads -f json", 2, "empty"),
    ("weights install {w}/missing.tar -f json --heads-dir {t}/h --cache-dir {t}/c", 2, "empty"),
    # cache, optimize, bench, train, report, proxies: usage and fatal errors leave stdout empty
    ("doctor --backbone-config tiny-vit -f json", 1, "json"),   # its documented "no": no head for it
    ("cache info -f json", 0, "json"),
    # a damaged result cache: said on stderr (scan) or in the document (cache info), never a failure
    ("cache info -f json", 0, "json", {"AIIDETECT_CACHE": "{w}/damaged-cache"}),
    ("scan {w}/files/plain.jpg -d metadata -f json", 0, "json", {"AIIDETECT_CACHE": "{w}/damaged-cache"}),
    ("cache clear nonsense", 2, "empty"),
    ("optimize -f json", 2, "empty"),                          # no --images
    ("optimize --show -f json --backbone-config tiny-vit", 2, "empty"),
    ("bench {w}/missing -f json", 2, "empty"),
    ("train linear {w}/missing.csv --backbone-config tiny-vit -f json", 2, "empty"),
    ("report {w}/missing.jsonl -o {t}/r.html", 2, "empty"),
    ("proxies {w}/missing.jpg -o {t}/p", 2, "empty"),
    ("export onnx --variant bogus -o {t}/e -f json", 2, "empty"),
    # bad flags: click's usage error, exit 2, nothing on stdout
    ("meta {w}/files -f xml", 2, "empty"),
    ("results summary --db {w}/store.sqlite -f yaml", 2, "empty"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] + (" (env)" if len(c) > 3 else "") for c in CASES])
def test_exit_code_and_stdout(work, tmp_path, case):
    line, rc, stdout, env = (*case, {})[:4]
    args = [a.format(w=work, t=tmp_path) for a in line.split()]
    env = {"AIIDETECT_WEIGHTS": str(work / "no-heads"), **{k: v.format(w=work) for k, v in env.items()}}
    _check(run_cli(*args, env=env), rc, stdout)


_TINY = "--backbone-config tiny-vit -o {t}/head -f json"
# Trainers on data a head cannot be learnt from: (command line, what the one error line must say). Each
# wrote a head that scored every file alike (0.5, or p_ai 1.0 for its own real training images), or ended
# in a line from deep inside (sklearn's "Input contains NaN.", "empty range for randrange()").
TRAIN_REFUSALS = [
    (f"train linear {{w}}/same/labels.csv --no-cache {_TINY}", "give (almost) the same features"),
    # one class: said before the backbone reads every image (it was said after)
    (f"train linear {{w}}/one-class.csv --no-cache {_TINY}", "needs both real and AI images; the data has 5 real"),
    (f"train mpft {{w}}/one-class.csv --steps 1 {_TINY}", "MPFT needs both real and AI images; the data has 5 real"),
    ("calibrate {w}/one-class.csv -d metadata -o {t}/head -f json", "at least 5 real and 5 AI images in the data"),
    (f"train linear {{w}}/tiny/labels.csv --no-cache {_TINY}", "give (almost) the same features"),
    (f"train flow --real {{w}}/same/labels.csv --no-cache --steps 5 --batch-size 4 {_TINY}",
     "give (almost) the same features"),
    (f"train mpft {{w}}/same/labels.csv --steps 1 --batch-size 4 {_TINY}", "give (almost) the same features"),
    (f"train mpft {{w}}/tiny/labels.csv --steps 1 --batch-size 4 {_TINY}", "give (almost) the same features"),
    (f"train flow --real {{w}}/small-real --no-cache --steps 10 --batch-size 4 --lr 1e4 --blocks 1 --hidden 8 "
     f"--proxies-per-image 1 {_TINY}", "training diverged"),
    (f"train mpft {{w}}/data --steps 4 --batch-size 4 --lr 1e8 --lr-head 1e8 {_TINY}", "training diverged"),
]


# -q on commands that had none ("No such option: -q", exit 2, for a script passing it everywhere): each
# runs, and says nothing on stderr but a warning (train flow: the head may not do what was asked).
QUIET = [
    (f"train linear {{w}}/data --no-cache {_TINY} -q", "json"),
    (f"train flow --real {{w}}/small-real --no-cache --steps 2 --batch-size 2 --blocks 1 --hidden 8 "
     f"--proxies-per-image 1 {_TINY} -q", "json"),
    (f"train mpft {{w}}/data --steps 1 --batch-size 4 {_TINY} -q", "json"),
    ("explain-mask {w}/files/plain.jpg -o {t}/mask.png -q", "any"),
    ("weights pack {t}/b.tar --no-backbones --weights-dir {w}/heads -f json -q", "json"),
    ("cache clear all -q", "empty"),
    ("results parquet --db {w}/store.sqlite -o {t}/r.parquet -q", "empty"),
    ("results summary --db {w}/store.sqlite -f json -q", "json"),
    ("results export --db {w}/store.sqlite -f json -q", "json"),
    ("results failed --db {w}/store.sqlite -f json -q", "json"),
    ("results merge --db {t}/m.sqlite {w}/store.sqlite -f json -q", "json"),
    ("results check --db {w}/store.sqlite -f json -q", "json"),
    ("meta {w}/files/plain.jpg -f json -q", "json"),
    ("doctor -f json --backbone-config tiny-vit -q", "json", 1),   # no CLIP detector can run: its documented 1
    ("cache info -f json -q", "json"),
    ("weights list --weights-dir {w}/damaged-heads -f json -q", "json"),   # silences "skipped ... damaged head"
    ("weights verify --weights-dir {w}/heads -f json -q", "json"),
    ("weights inspect {w}/heads/univfd/head.safetensors -f json -q", "json"),
]


@pytest.mark.parametrize("case", QUIET, ids=[c[0] for c in QUIET])
def test_quiet_leaves_stderr_empty(work, tmp_path, case):
    line, stdout, code = (*case, 0)[:3]
    if line.startswith("train "):  # seconds of importing torch in a subprocess before the run
        r = _in_process(line, w=work, t=tmp_path)
    else:
        r = run_cli(*[a.format(w=work, t=tmp_path) for a in line.split()],
                    env={"AIIDETECT_WEIGHTS": str(tmp_path), "AIIDETECT_CACHE": str(tmp_path / "cache")})
    _check(r, code, stdout)
    assert all(x.startswith("warning: ") for x in r.stderr.splitlines()), r.stderr[-2000:]


def test_weights_install_quiet(work, tmp_path):
    r = run_cli("weights", "pack", str(tmp_path / "b.tar"), "--no-backbones", "--weights-dir", str(work / "heads"))
    assert r.returncode == 0, r.stderr
    r = run_cli("weights", "install", str(tmp_path / "b.tar"), "--heads-dir", str(tmp_path / "h"), "--cache-dir",
                str(tmp_path / "c"), "-f", "json", "-q")
    _check(r, 0, "json")
    assert r.stderr == "" and json.loads(r.stdout)["installed"], (r.stdout, r.stderr)


# Numbers no run can use: usage errors now. A size of 0 was read as "not given" (--size 0 trained at the
# backbone's size, without a word); a patch size of 0 or less ended in "ZeroDivisionError" or a torch
# kernel error; a negative learning rate or loss weight trained the adapter to make the loss worse and
# wrote the head with exit 0.
BAD_NUMBERS = ["train linear {w}/data --size 0 --backbone-config tiny-vit -o {t}/h -f json",
               "train flow --real {w}/data/real --size 0 --backbone-config tiny-vit -o {t}/h -f json",
               "explain-mask {w}/files/plain.jpg -o {t}/m.png --patch-size 0",
               "explain-mask {w}/files/plain.jpg -o {t}/m.png --patch-size -16",
               "train mpft {w}/data --lr -1 --steps 1 --backbone-config tiny-vit -o {t}/h -f json",
               "train mpft {w}/data --attr-weight -5 --steps 1 --backbone-config tiny-vit -o {t}/h -f json",
               "train mpft {w}/data --eval-every 0 --steps 1 --backbone-config tiny-vit -o {t}/h -f json"]


@pytest.mark.parametrize("line", BAD_NUMBERS)
def test_numbers_no_run_can_use_are_usage_errors(work, tmp_path, line):
    r = run_cli(*[a.format(w=work, t=tmp_path) for a in line.split()], env={"AIIDETECT_WEIGHTS": str(tmp_path)})
    _check(r, 2, "empty")
    assert "Invalid value for '--" in r.stderr and not (tmp_path / "h").exists(), r.stderr[-2000:]


@pytest.mark.parametrize("case", TRAIN_REFUSALS, ids=[c[0] for c in TRAIN_REFUSALS])
def test_trainer_refuses_data_it_cannot_learn_from(work, tmp_path, case):
    line, says = case
    r = _in_process(line, w=work, t=tmp_path)
    _check(r, 2, "empty")
    assert says in r.stderr and not (tmp_path / "head").exists(), r.stderr[-2000:]


def test_optimize_rows_for_scripts_hold_numbers(capsys, monkeypatch):
    """optimize's jsonl and csv rows were the table's cells: "0.40%" for a share and "" for a value
    not measured, so a script had to strip a percent sign and tell "" from 0. They hold the
    numbers now (null / an empty cell when not measured); the table still shows percentages."""
    from aiidetect.commands.optimize import _print

    decision = {"status": "verified", "files": 250, "chosen": {"runtime": "onnx", "dtype": "int8"},
                "candidates": [{"candidate": "torch-float32", "runtime": "torch", "dtype": "float32",
                                "status": "reference", "model_seconds": 2.0, "speedup": 1.0},
                               {"candidate": "onnx-int8", "runtime": "onnx", "dtype": "int8", "status": "verified",
                                "worst_changed_share": 0.004, "max_abs_dp": 0.03, "model_seconds": 1.0,
                                "speedup": 2.0, "scan_speedup": 1.6, "agreement": {"fused": {"files": 250}}}]}
    _print(decision, "jsonl")
    ref, fast = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert ref["verdicts_changed"] is None and ref["reason"] is None and ref["model_seconds"] == 2.0
    assert fast["verdicts_changed"] == 0.004 and fast["max_abs_dp"] == 0.03 and fast["files"] == 250
    _print(decision, "csv")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["verdicts_changed"] == "" and float(rows[1]["verdicts_changed"]) == 0.004
    monkeypatch.setenv("COLUMNS", "200")  # the cells unwrapped
    _print(decision, "table")
    out = capsys.readouterr().out
    assert "0.40%" in out and "None" not in out
