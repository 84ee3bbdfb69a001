"""Exit codes are a contract (docs/schema.md): 0 done, 1 findings (`--fail-on`, or
meta's decisive AI evidence) and nothing else, 2 usage or fatal error with one
line on stderr. Every command and every code it gives go through real subprocesses; the further
fatal classes of a command run in-process (`run_cli_in_process`), where the exit code and stderr
are the command's own decision and an exception that escapes it fails the test rather than being
made exit 2 by the process's guard: each new interpreter paid ~0.7 s of CPU, ~1.6 s with torch."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import pytest
import typer
from PIL import Image, PngImagePlugin

from conftest import run_cli, run_cli_in_process


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("exit")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, Seed: 42")
    Image.new("RGB", (64, 64), (10, 200, 30)).save(d / "gen.png", pnginfo=info)
    Image.new("RGB", (64, 48), (200, 10, 30)).save(d / "plain.jpg", quality=90)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return d


def _one_line_error(r):
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines and "error" in lines[-1].lower(), r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]


def _usage_error(r, option):
    """A value outside an option's choices: click's usage message naming the option, nothing on stdout.
    Apart from `_one_line_error`, so that a fatal error turned into a usage box is still caught."""
    assert r.stdout == "" and r.stderr.startswith("Usage:"), r.stderr[-2000:]
    assert f"Invalid value for '{option}'" in " ".join(r.stderr.split()), r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.slow  # a dozen CLI subprocesses: ~15 s on 2 loaded cores
def test_scan_0_1_2(files, tmp_path):
    r = run_cli("scan", str(files / "plain.jpg"), "-d", "metadata", "-f", "jsonl", "-q")
    assert r.returncode == 0
    r = run_cli("scan", str(files), "-d", "metadata", "-f", "jsonl", "-q", "--fail-on", "error")
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 3
    r = run_cli("scan", str(files / "gen.png"), "-d", "metadata", "-f", "jsonl", "-q", "--fail-on", "ai")
    assert r.returncode == 1
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files.iterdir()}
    fatal = [
        ("scan", str(tmp_path / "missing.jpg")),                                       # nonexistent argument
        ("scan", str(files), "--format", "xml"),                                      # bad flag value
        ("scan", str(files), "-d", "nosuch"),                                          # unknown detector
        ("scan", str(files), "-f", "json", "-o", str(tmp_path / "no" / "dir" / "x.json")),  # missing output folder
        ("scan", str(files), "-f", "jsonl", "-o", str(files / "plain.jpg")),           # output is an input
        ("scan", str(files), "-f", "jsonl", "-o", str(files / "new.png")),             # output would be scanned
        ("scan", str(files / "gen.png"), "-f", "jsonl", "-o", str(files / "gen.png")),  # the one input
        ("scan", str(files), "--fusion", str(tmp_path / "no-such-fusion")),            # unreadable fusion model
        ("scan", str(files), "-o", str(tmp_path)),                                     # output is a folder
    ]
    for i, args in enumerate(fatal):
        args = (*args, "-q") if args[-1] != "xml" else args
        r = (run_cli if i == 0 else run_cli_in_process)(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr[-1000:])
        _usage_error(r, "--format") if "xml" in args else _one_line_error(r)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files.iterdir()}
    assert after == before, "a refused --output touched the inputs"


def test_scan_report_written_atomically(files, tmp_path):
    out = tmp_path / "report.json"
    out.write_text("[]\n")
    r = run_cli("scan", str(files), "-d", "metadata", "-f", "json", "-o", str(out), "-q")
    assert r.returncode == 0 and len(json.loads(out.read_text())) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"], "temporary file left behind"
    # a fatal error before the end leaves the previous report as it was (the command's decision: in-process)
    r = run_cli_in_process("scan", str(files), "-d", "nosuch", "-f", "json", "-o", str(out), "-q")
    assert r.returncode == 2 and len(json.loads(out.read_text())) == 3


def test_atomic_output_keeps_old_file_on_crash(tmp_path):
    from aiidetect.report.output import atomic_output

    p = tmp_path / "r.json"
    p.write_text("good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(p) as fh:
            fh.write("half")
            raise KeyboardInterrupt
    assert p.read_text() == "good" and sorted(os.listdir(tmp_path)) == ["r.json"]


def test_meta_0_1_2(files, tmp_path):
    assert run_cli("meta", str(files / "plain.jpg"), "-f", "json").returncode == 0
    # a record, not a fatal error
    assert run_cli_in_process("meta", str(files / "broken.jpg"), "-f", "json").returncode == 0
    assert run_cli("meta", str(files), "-f", "jsonl").returncode == 1
    for i, args in enumerate((("meta", str(tmp_path / "missing.png")),
                              ("meta", str(files), "-f", "json", "-o", str(tmp_path / "no" / "dir" / "x.json")),
                              ("meta", str(files), "-f", "json", "-o", str(files / "plain.jpg")),
                              ("meta", str(files), "--watermark", "sometimes"))):
        r = (run_cli if i == 0 else run_cli_in_process)(*args)
        assert r.returncode == 2, (args, r.stderr[-1000:])
        _usage_error(r, "--watermark") if "--watermark" in args else _one_line_error(r)


def test_eval_0_and_2(files, tmp_path):
    man = tmp_path / "m.csv"
    # a generator name with rich markup in it (names come from folders and CSV columns)
    man.write_text(f"file,label,generator\n{files / 'gen.png'},ai,[/x]gen[bold]\n{files / 'plain.jpg'},real,\n")
    r = run_cli("eval", str(man), "-d", "metadata", "-q", "--no-plots", "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[/x]gen[bold]" in r.stdout
    for i, args in enumerate((("eval", str(tmp_path / "missing.csv"), "-d", "metadata"),
                              ("eval", str(man), "-d", "metadata", "--fusion", str(tmp_path / "nofusion")),
                              ("eval", str(man), "-d", "metadata", "--perturb", "nonsense:1"))):
        r = (run_cli if i == 0 else run_cli_in_process)(*args)
        assert r.returncode == 2, (args, r.stderr[-1000:])
        _one_line_error(r)


@pytest.mark.slow  # shares the session's tiny probe; each refused run still imports torch
def test_train_0_and_2(trained, tmp_path, dev_manifest):
    # 0: the session's tiny probe was trained through this same CLI (conftest asserts returncode 0)
    assert any((trained / "cli-probe").iterdir())
    outside = tmp_path / "x"
    for i, args in enumerate((("train", "linear", str(dev_manifest), "--backbone-config", "tiny-vit", "--shots", "2",
                               "--name", f"../../../../../..{outside}"),
                              ("train", "linear", str(tmp_path / "missing.csv"), "--backbone-config", "tiny-vit"),
                              ("train", "mpft", str(dev_manifest), "--backbone-config", "tiny-vit", "--name", "a/b"),
                              ("train", "flow", "--real", str(dev_manifest), "--backbone-config", "tiny-vit",
                               "--name", ".."))):
        r = (run_cli if i == 0 else run_cli_in_process)(*args, env={"AIIDETECT_WEIGHTS": str(tmp_path / "w")})
        assert r.returncode == 2, (args, r.stderr[-1000:])
        _one_line_error(r)
    assert not outside.exists() and not (tmp_path / "w").exists()


def test_export_2(tmp_path):
    for i, args in enumerate((("export", "onnx", "--backbone-config", "no-such-config", "-o", str(tmp_path / "e")),
                              ("export", "onnx", "--backbone-config", "tiny-vit", "--variant", "bogus", "-o",
                               str(tmp_path / "e")))):
        r = (run_cli if i == 0 else run_cli_in_process)(*args)
        assert r.returncode == 2, (args, r.stderr[-1000:])
        _usage_error(r, "--variant") if "--variant" in args else _one_line_error(r)


@pytest.mark.slow
def test_export_0_and_fatal_write_is_2(tmp_path):
    r = run_cli("export", "onnx", "--backbone-config", "tiny-vit", "-o", str(tmp_path / "e"),
                env={"AIIDETECT_WEIGHTS": str(tmp_path / "none")})
    assert r.returncode == 0, r.stderr[-2000:]


def test_uncaught_exception_is_one_line_and_exit_2(capsys, monkeypatch):
    from aiidetect.commands import errors

    app = typer.Typer()

    @app.command()
    def boom():
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr("sys.argv", ["aiidetect"])
    monkeypatch.setattr(errors, "DEBUG", False)
    with pytest.raises(SystemExit) as e:
        errors.run_guarded(app)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aiidetect: error: RuntimeError: disk on fire second line")
    monkeypatch.setattr(errors, "DEBUG", True)
    with pytest.raises(SystemExit):
        errors.run_guarded(app)
    assert "Traceback" in capsys.readouterr().err


def test_debug_flag_is_global():
    r = run_cli("--debug", "scan", "/nonexistent/path")
    assert r.returncode == 2


def test_output_met_during_the_walk_is_refused(files, tmp_path):
    """Discovery is lazy, so an input that is the output can only be recognised as the
    walk reaches it (a path on stdin, a link from a scanned folder): exit 2, the file
    untouched, no temporary report left behind."""
    target = tmp_path / "out" / "victim.png"
    target.parent.mkdir()
    target.write_bytes((files / "gen.png").read_bytes())
    before = target.read_bytes()
    r = run_cli("scan", "-", "-d", "metadata", "-f", "jsonl", "-q", "-o", str(target),
                input=f"{files / 'plain.jpg'}\n{target}\n")
    assert r.returncode == 2 and "being scanned" in r.stderr, r.stderr[-1000:]
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "a.png").symlink_to(target)
    # (the link leads out of the scanned folder: only with --follow-links is the output among the inputs)
    r = run_cli("scan", str(linked), "-d", "metadata", "-f", "jsonl", "-q", "-o", str(target), "--follow-links")
    assert r.returncode == 2, r.stderr[-1000:]
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["victim.png"]


def test_no_command_writes_over_its_own_input(files, tmp_path):
    """`report run.jsonl -o run.jsonl` replaced the saved run with a report of nothing, and
    `explain-mask a.jpg -o a.jpg` the photo with its map: each is refused (exit 2) before anything
    is written, also through a link, and no temporary file is left behind."""
    d = tmp_path / "work"
    d.mkdir()
    photo = d / "plain.jpg"
    photo.write_bytes((files / "plain.jpg").read_bytes())
    run = d / "run.jsonl"
    # The first refusal runs as a user runs it; the rest, and the set-up scan, are what each command
    # decides, in-process: 7 new interpreters (3 paying a torch import) were ~8 s on an idle 2-core machine.
    assert run_cli_in_process("scan", str(photo), "-d", "metadata", "-f", "jsonl", "-q", "--no-cache",
                              "-o", str(run)).returncode == 0
    (d / "run-link.jsonl").symlink_to(run)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    for args in (("report", str(run), "-o", str(run)), ("report", str(run), "-o", str(d / "run-link.jsonl")),
                 ("explain-mask", str(photo), "-o", str(photo)),
                 ("explain-mpft", str(photo), "-o", str(photo), "--backbone-config", "tiny-vit")):
        r = (run_cli if args[0] == "report" and args[-1] == str(run) else run_cli_in_process)(*args)
        assert r.returncode == 2 and "refusing to overwrite" in r.stderr, (args, r.stderr[-1000:])
        assert {p.name: p.read_bytes() for p in d.iterdir()} == before, args
    # and where they may write, the result is whole: the report of the run, the map as a PNG
    r = run_cli_in_process("report", str(run), "-o", str(d / "report.html"), "-q")
    assert r.returncode == 0 and (d / "report.html").read_text().rstrip().endswith("</html>")
    r = run_cli_in_process("explain-mask", str(photo), "-o", str(d / "mask.png"))
    assert r.returncode == 0 and (d / "mask.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in d.iterdir()) == ["mask.png", "plain.jpg", "report.html", "run-link.jsonl",
                                                   "run.jsonl"]


def _reader_gone(*args):
    """Run the CLI with stdout's reader already gone (`aiidetect ... | head -c 0`): every write
    meets EPIPE. The read end is closed before the child writes anything, so no timing is involved."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "aiidetect", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    return p.wait(timeout=300), err


@pytest.mark.parametrize("args, code", [
    (("scan", "-d", "metadata", "-f", "jsonl", "-q", "--no-cache"), 0),
    (("scan", "-d", "metadata", "-f", "table", "-q", "--no-cache"), 0),
    (("scan", "-d", "metadata", "-f", "jsonl", "-q", "--no-cache", "--fail-on", "error"), 1),
    (("meta", "-f", "jsonl", "gen.png"), 1),   # decisive evidence, read before the write that failed
    (("meta", "-f", "jsonl"), 0),              # the folder streams: broken.jpg first, and the reader left there
    (("meta",), 1),                            # the table reads every file first; rich alone would exit 1 anyway
    (("meta", "-f", "csv", "plain.jpg"), 0),
])
def test_a_reader_that_leaves_changes_no_exit_code(files, args, code):
    args = tuple(str(files / a) if a.endswith((".jpg", ".png")) else a for a in args)
    if not any(a.endswith((".jpg", ".png")) for a in args):
        args += (str(files),)
    rc, err = _reader_gone(*args)
    assert rc == code, (args, err[-2000:])
    assert "Traceback" not in err and "Exception ignored" not in err and "error" not in err.lower(), err[-2000:]


def test_a_reader_that_leaves_results_and_doctor(files, tmp_path):
    db = tmp_path / "s.sqlite"
    # the store to read, written in-process: this test is about its readers
    assert run_cli_in_process("scan", str(files), "-d", "metadata", "--db", str(db), "-f", "jsonl", "-q"
                              ).returncode == 0
    for args in (("results", "summary", "--db", str(db)), ("results", "export", "--db", str(db), "-f", "csv"),
                 ("results", "failed", "--db", str(db), "-f", "jsonl")):
        assert _reader_gone(*args) == (0, ""), args
    assert _reader_gone("results", "export", "--db", str(db), "--fail-on-any")[0] == 1
    # doctor's 1 means "no CLIP detector can run here": the same answer with or without a reader
    assert _reader_gone("doctor", "-f", "json")[0] == run_cli("doctor", "-f", "json").returncode


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("--show-completion", "bash")])
def test_a_reader_that_leaves_the_root_options_changes_no_exit_code(args):
    """`aiidetect --version | grep -q 0.1` under `set -o pipefail`: the root's eager options print while
    the arguments are parsed, outside the commands' guard, and click met the broken pipe with exit 1."""
    assert _reader_gone(*args) == (0, "")


def test_a_reader_of_stderr_that_leaves_changes_no_exit_code_and_no_finding(files):
    """`scan ... --fail-on ai 2> >(grep -m1 ...)`: the logs' reader gone, the summary's write on stderr raised
    BrokenPipeError, which the boundary took for stdout's reader leaving: exit 0 with the AI file found.
    The logs are dropped; the findings and the exit code stay."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "aiidetect", "scan", str(files / "gen.png"), "-d", "metadata",
                          "--no-cache", "-f", "jsonl", "--fail-on", "ai"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stderr.close()
    out = p.stdout.read()
    assert p.wait(timeout=300) == 1
    assert [json.loads(x)["verdict"] for x in out.splitlines()] == ["ai-generated"]


@pytest.mark.parametrize("fmt,extra", [(f, []) for f in ("json", "jsonl", "csv", "table", "html")]
                         + [("json", ["-o", "-"]), ("html", ["-o", "-"])])
def test_ctrl_c_leaves_stdout_parseable_and_exits_130(files, monkeypatch, fmt, extra):
    """Interrupted after two records: a script reading stdout still gets a document that parses
    (the JSON array closed), a person the table of those two, or the report page of those two,
    saying at the top that it is partial; the exit code says the run did not finish, stderr says why.
    `-o -` is stdout too (it printed no page and left the JSON array open)."""
    import csv
    import io

    from typer.testing import CliRunner

    from aiidetect import api
    from aiidetect.cli import app

    real = api.Scanner.records

    def records(self, cands, **kw):
        recs = real(self, cands, **kw)   # called now, as the scan does: it builds the pipeline

        def two_then_ctrl_c():
            for i, rec in enumerate(recs):
                if i == 2:
                    raise KeyboardInterrupt
                yield rec
        return two_then_ctrl_c()

    monkeypatch.setattr(api.Scanner, "records", records)
    # the table is wide enough that no file name is folded, however long the temporary folder's name is
    r = CliRunner().invoke(app, ["scan", str(files), "-d", "metadata", "-f", fmt, "--no-cache", "-q", *extra],
                           env={"COLUMNS": "1000"})
    assert r.exit_code == 130, r.output
    out = r.stdout
    n = {"json": lambda: len(json.loads(out)), "jsonl": lambda: len([json.loads(x) for x in out.splitlines()]),
         "csv": lambda: len(list(csv.reader(io.StringIO(out)))) - 1,
         "table": lambda: sum(name in out for name in ("broken.jpg", "gen.png", "plain.jpg")),
         "html": lambda: len(re.findall(r'<article class="[^"]*" id="f\d+"', out))}[fmt]()
    assert n == 2
    if fmt == "html":
        assert out.rstrip().endswith("</html>") and "<b>Interrupted.</b>" in out and "(interrupted)</title>" in out
    assert "interrupted" in r.stderr


_TERM_AFTER_TWO = """
import os, signal, sys, time
from aiidetect import api
real = api.Scanner.records
def records(self, cands, **kw):
    recs = real(self, cands, **kw)
    def gen():
        for i, rec in enumerate(recs):
            if i == 2:
                os.kill(os.getpid(), signal.SIG{sig})
                time.sleep(5)          # the handler runs first: this is never finished
            yield rec
    return gen()
api.Scanner.records = records
sys.argv = ["aiidetect", *sys.argv[1:]]
from aiidetect.cli import main
main()
"""


@pytest.mark.parametrize("sig,code", [("TERM", 143), ("HUP", 129)])
def test_sigterm_stops_like_ctrl_c_with_the_signals_exit_code(files, tmp_path, sig, code):
    """`timeout`, a batch scheduler or `kill` send SIGTERM: the run used to die mid-write, its JSON
    array unclosed, its store session left 'running'. Now it stops as for Ctrl-C: stdout parses and
    holds the records so far, `-o` is left as it was, the store session says interrupted."""
    import sqlite3
    import subprocess
    import sys

    import signal

    db, out = tmp_path / "s.sqlite", tmp_path / "keep.json"
    out.write_text("[]")
    for extra in ([], ["-o", str(out)], ["-o", "-"]):
        # A suite started under `nohup` passes SIGHUP on ignored, and the scan rightly leaves it so.
        r = subprocess.run([sys.executable, "-c", _TERM_AFTER_TWO.format(sig=sig), "scan", str(files),
                            "-d", "metadata", "-f", "json", "--no-cache", "-q", "--db", str(db), *extra],
                           capture_output=True, text=True, timeout=60,
                           preexec_fn=lambda: signal.signal(getattr(signal, f"SIG{sig}"), signal.SIG_DFL))
        assert r.returncode == code, r.stderr[-2000:]
        assert r.stderr.strip().splitlines()[-1] == f"aiidetect: terminated (SIG{sig})"
        assert "Traceback" not in r.stderr
        if extra and extra[1] != "-":
            assert out.read_text() == "[]" and not list(tmp_path.glob(".keep.json*"))
        else:  # `-o -` is stdout: it parses too (it was left an open array)
            assert len(json.loads(r.stdout)) == 2
    with sqlite3.connect(db) as con:
        assert {s for (s,) in con.execute("select status from sessions")} == {"interrupted"}


_C_LIBRARY_PRINTS = """
import os, sys
from aiidetect import api
real = api.Scanner.records
def records(self, cands, **kw):
    recs = real(self, cands, **kw)
    def gen():
        for rec in recs:
            for fd in (1, 2):   # what a C library prints goes straight to fd 1 or 2 (torch's warnings: 2)
                try:
                    os.write(fd, b"a C library's line\\n")
                except OSError:
                    pass        # a C library ignores EBADF too
            yield rec
    return gen()
api.Scanner.records = records
sys.argv = ["aiidetect", *sys.argv[1:]]
from aiidetect.cli import main
main()
"""


def test_closed_stdout_and_stderr_never_lend_their_numbers_to_the_report(files, tmp_path):
    """`aiidetect scan ... -o r.jsonl >&- 2>&-` in a cron line: the report's temporary file was opened
    as fd 1, and what a C library printed went into the report. A report asked for on a closed
    stdout was an AttributeError; now it says stdout is closed (exit 2)."""
    import shlex
    import subprocess
    import sys

    out = tmp_path / "r.jsonl"
    py = [sys.executable, "-c", _C_LIBRARY_PRINTS, "scan", str(files), "-d", "metadata", "--no-cache", "-q"]
    r = subprocess.run(["sh", "-c", shlex.join([*py, "-f", "jsonl", "-o", str(out)]) + " >&- 2>&-"], timeout=60)
    assert r.returncode == 0
    assert len([json.loads(x) for x in out.read_text().splitlines()]) == 3
    r = subprocess.run(["sh", "-c", shlex.join([*py, "-f", "json"]) + " >&-"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "stdout is closed" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [["meta", "-f", "json"], ["scan", "-d", "metadata", "--no-cache", "-q"]])
def test_closed_stdout_is_said_as_the_docs_quote_it(files, args):
    """docs/schema.md quotes `stdout is closed; give -o FILE or leave stdout open`, a usage error; it came
    out as an unexpected one: `aiidetect: error: OSError: [Errno 9] ... (aiidetect --debug ... shows the
    traceback)`, which reads as a bug to report."""
    import shlex
    import subprocess
    import sys

    cmd = shlex.join([sys.executable, "-m", "aiidetect", args[0], str(files), *args[1:]]) + " >&-"
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (2, "error: stdout is closed; give -o FILE or leave stdout open\n")


@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_a_closed_stderr_leaves_the_exit_code_alone(redirect):
    """`aiidetect scan ... > out.json 2>&-` in a cron line, on a full disk: Python starts with sys.stderr
    None when fd 2 is closed, the boundary's `sys.stderr.write` of the error line raised AttributeError,
    and the process exited 1, the code kept for findings, so the job read "AI found" for "nothing was
    written". Every command's output meets the same boundary; `--version` is the cheapest to start."""
    import shlex
    import subprocess
    import sys

    if redirect == ">/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    cmd = shlex.join([sys.executable, "-m", "aiidetect", "--version"]) + f" {redirect} 2>&-"
    assert subprocess.run(["sh", "-c", cmd], timeout=60).returncode == 2


@pytest.mark.parametrize("env, args, said", [
    ({"COLUMNS": "0"}, ["scan", "--bogus"], "No such option"),
    ({"TERMINAL_WIDTH": "abc"}, ["scan", "--bogus"], "No such option"),
])
def test_a_width_of_zero_or_nonsense_hides_nothing(env, args, said):
    """COLUMNS=0, where no terminal answers (CI runners, containers): rich laid every console out for zero
    columns and printed nothing, so a failed run exited 2 without a word and `doctor` printed no report;
    TERMINAL_WIDTH=abc turned every usage error into a ValueError."""
    r = run_cli(*args, env=env)
    assert r.returncode == 2 and said in r.stderr and "ValueError" not in r.stderr, r.stderr


def test_a_failed_write_to_another_stderr_leaves_fd_2_alone():
    """A host running the CLI in its process, its sys.stderr a stream of its own that failed: the process's fd 2,
    which that stream is not, was pointed at /dev/null, silencing the host's real stderr for good."""
    from aiidetect.commands.errors import StderrBestEffort

    class Gone(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "the reader left")

    before, saved = os.fstat(2), os.dup(2)
    try:
        assert StderrBestEffort(Gone()).write("lost\n") == 5
        after = os.fstat(2)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_only_positive_widths_are_kept(monkeypatch):
    from aiidetect.commands.errors import drop_unusable_widths

    for name, value in (("COLUMNS", "0"), ("LINES", "-1"), ("TERMINAL_WIDTH", "wide")):
        monkeypatch.setenv(name, value)
    drop_unusable_widths()
    assert not {"COLUMNS", "LINES", "TERMINAL_WIDTH"} & set(os.environ)
    # Digits to str.isdigit() that int() refuses (or reads in another script): the check itself raised
    # ValueError, before the boundary, and every command ended in a traceback with exit 1, the findings code.
    for name, value in (("COLUMNS", "\u00b2"), ("LINES", "\u0663"), ("TERMINAL_WIDTH", "\u2460")):
        monkeypatch.setenv(name, value)
    drop_unusable_widths()
    assert not {"COLUMNS", "LINES", "TERMINAL_WIDTH"} & set(os.environ)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("TERMINAL_WIDTH", "90")
    drop_unusable_widths()
    assert (os.environ["COLUMNS"], os.environ["TERMINAL_WIDTH"]) == ("100", "90")
    from aiidetect.report.safe import table_width

    monkeypatch.setenv("COLUMNS", "\u00b2")  # a library caller's table, without the start-up's check
    assert table_width(io.StringIO()) == 160


def test_a_huge_width_is_capped(monkeypatch):
    """COLUMNS=100000000: rich pads help panels and usage errors out to it, and `scan -h | less` wrote 7 GB
    (9 GB peak) for ten minutes. Capped at MAX_COLUMNS, in the environment rich and typer read too."""
    from aiidetect.commands.errors import drop_unusable_widths
    from aiidetect.report.safe import MAX_COLUMNS, table_width

    monkeypatch.setenv("COLUMNS", "100000000")
    monkeypatch.setenv("TERMINAL_WIDTH", "99999999999999999999")
    assert table_width(io.StringIO()) == MAX_COLUMNS  # a library caller, without the start-up's check
    drop_unusable_widths()
    assert (os.environ["COLUMNS"], os.environ["TERMINAL_WIDTH"]) == (str(MAX_COLUMNS), str(MAX_COLUMNS))


def test_ctrl_c_leaves_results_json_parseable(files, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aiidetect import store
    from aiidetect.cli import app

    db = tmp_path / "s.sqlite"
    # the store to read, written in-process: this test is about its readers
    assert run_cli_in_process("scan", str(files), "-d", "metadata", "--db", str(db), "-f", "jsonl", "-q"
                              ).returncode == 0
    real = store.ResultsStore.iter_rows
    stop = {}

    def iter_rows(self, *a, **k):
        for i, row in enumerate(real(self, *a, **k)):
            if i == stop["at"]:
                raise KeyboardInterrupt
            yield row

    monkeypatch.setattr(store.ResultsStore, "iter_rows", iter_rows)
    for args, at in ((("export",), 2), (("failed",), 0)):   # 3 files, one of them failed
        stop["at"] = at
        r = CliRunner().invoke(app, ["results", *args, "--db", str(db), "-f", "json"])
        assert r.exit_code == 130, (args, r.output)
        assert len(json.loads(r.stdout)) == at, args
    stop["at"] = 2   # the page too: the rows so far, marked interrupted (it printed nothing)
    r = CliRunner().invoke(app, ["results", "export", "--db", str(db), "-f", "html"])
    assert r.exit_code == 130 and r.stdout.rstrip().endswith("</html>") and "<b>Interrupted.</b>" in r.stdout


def test_every_commands_documents_are_utf8_in_a_pipe_whatever_the_locale(tmp_path):
    """In a latin-1 or cp1252 locale (a Windows console redirected to a file), or with
    PYTHONIOENCODING=ascii, the first file name outside that charset ended the command with
    UnicodeEncodeError, exit 2. `scan` and `report` choose per format
    (tests/report/test_report_saved_runs.py); every command's stdout in a pipe is UTF-8."""
    import subprocess
    import sys

    (tmp_path / "日本 café.png").write_bytes(_png())
    for enc, fmt in (("latin-1", "json"), ("ascii", "csv")):
        r = subprocess.run([sys.executable, "-m", "aiidetect", "meta", str(tmp_path), "-f", fmt],
                           capture_output=True, timeout=60, env={**os.environ, "PYTHONIOENCODING": enc})
        assert r.returncode == 0, (enc, fmt, r.stderr[-500:])
        out = r.stdout.decode("utf-8")
        assert "日本 café.png" in (out if fmt != "json" else json.loads(out)[0]["file"]), (enc, fmt)
    r = subprocess.run([sys.executable, "-m", "aiidetect", "scan", str(tmp_path / "missing日本.png")],
                       capture_output=True, timeout=60, env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert r.returncode == 2 and b"Traceback" not in r.stderr and b"UnicodeEncodeError" not in r.stderr


def _png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_fail_on_help_names_every_verdict_it_takes():
    """`--fail-on real` works (exit 1 on a likely-real file) but the help and docs/schema.md listed only
    ai, uncertain, error: a script author reading them could not know it."""
    from conftest import cli_command

    from aiidetect.commands.scan import FAIL_ON

    help_text = next(p.help for p in cli_command("scan").params if "--fail-on" in getattr(p, "opts", ()))
    assert all(k in help_text for k in FAIL_ON)
    schema = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text(encoding="utf-8")
    assert f"`--fail-on {'|'.join(FAIL_ON)}`" in schema


def test_fail_on_takes_the_full_verdict_names_like_verdict_does(files):
    """`scan --fail-on ai-generated` was refused (exit 2) while `report --verdict ai-generated` was
    taken: one parser (commands.common.verdict_list) for both."""
    r = run_cli("scan", str(files / "gen.png"), "-d", "metadata", "-f", "jsonl", "-q", "--no-cache",
                "--fail-on", "ai-generated")
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["verdict"] == "ai-generated"
    r = run_cli("scan", str(files / "gen.png"), "-d", "metadata", "-f", "jsonl", "-q", "--fail-on", "nonsense")
    assert r.returncode == 2 and r.stdout == ""
    assert "--fail-on takes ai, uncertain, error, real (or ai-generated, likely-real); got 'nonsense'" in r.stderr


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_a_verdict_option_naming_no_verdict_is_a_usage_error(files, tmp_path, value):
    """`scan --fail-on "$FAIL_ON"` with the variable unset: the CI gate was off without a word (exit 0
    whatever was found), and `results export --verdict ""` exported every record."""
    gen = str(files / "gen.png")
    r = run_cli_in_process("scan", gen, "-d", "metadata", "-f", "jsonl", "-q", "--no-cache", "--fail-on", value)
    assert (r.returncode, r.stdout) == (2, ""), r.stdout
    said = " ".join(r.stderr.split())  # folded to the console's width
    assert said == ("error: --fail-on names no verdict; give one or more of ai, uncertain, error, real "
                    "(or ai-generated, likely-real), comma-separated")
    assert f"`{said}`" in (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    db = tmp_path / "s.sqlite"
    assert run_cli_in_process("scan", gen, "-d", "metadata", "--db", str(db), "-f", "jsonl", "-q").returncode == 0
    r = run_cli_in_process("results", "export", "--db", str(db), "--verdict", value, "-f", "jsonl")
    assert (r.returncode, r.stdout) == (2, "") and "--verdict names no verdict" in r.stderr
    # `--heatmaps "$MAPS"` empty: the report came without a map, exit 0, not a word said
    r = run_cli_in_process("scan", gen, "-d", "metadata", "-f", "html", "-q", "--no-cache", "--heatmaps", value)
    assert (r.returncode, r.stdout) == (2, ""), r.stdout
    assert " ".join(r.stderr.split()) == ("error: --heatmaps names no verdict; give one or more of ai, uncertain, "
                                          "real, all, comma-separated")


def test_onnx_is_a_runtime_not_a_detector_value():
    """`-d bogus` listed `onnx` among the known detectors; `-d onnx` ran nothing under --runtime onnx
    and, with --onnx DIR under --runtime torch, the export's heads marked as torch's choice."""
    from aiidetect.api import ScanOptions, UsageError

    with pytest.raises(UsageError) as e:
        ScanOptions(detectors=["bogus"]).validate()
    # Other tests of this process may have registered families of their own after these four.
    known = str(e.value).split("known: ", 1)[1].split(", ")
    assert known[:4] == ["metadata", "linear", "mpft", "flow"] and "onnx" not in known, known
    with pytest.raises(UsageError, match="unknown detector.*onnx is a runtime: --runtime onnx --onnx DIR"):
        ScanOptions(detectors=["onnx"], runtime="onnx", onnx_dir="x").validate()


def test_completion_under_a_shell_it_has_no_script_for_is_a_usage_error(monkeypatch, tmp_path):
    """`aiidetect --show-completion` under `sh` printed "Shell sh not supported." and exited 1, the code kept
    for findings: now a usage error (exit 2) naming the shells completion is for. Under one of them it
    still prints the script. The shell is what typer finds above the process, set here."""
    import typer.completion

    from conftest import run_cli_in_process

    monkeypatch.setenv("HOME", str(tmp_path))  # --install-completion must write nothing anywhere
    for shell in ("sh", None):
        monkeypatch.setattr(typer.completion, "_get_shell_name", lambda shell=shell: shell)
        for option in ("--show-completion", "--install-completion"):
            r = run_cli_in_process(option)
            said = " ".join(line.strip("│ ") for line in r.stderr.splitlines())
            assert r.returncode == 2 and r.stdout == "", (shell, option, r.returncode, r.stderr)
            assert "completion is for bash, zsh, fish or PowerShell" in said, said
            assert (f"this shell is {shell}" if shell else "no shell was found") in said, said
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    r = run_cli_in_process("--show-completion")
    assert r.returncode == 0 and "complete -o default -F" in r.stdout, r.stderr


def test_completion_for_a_shell_named_on_the_command_line_is_not_refused(monkeypatch, tmp_path):
    """Where typer takes the shell as the option's value (no shell detection: its test switch here, a typer
    without shellingham), `--show-completion bash` names the shell itself: it was refused for the shell
    found above the process."""
    import typer.completion

    from conftest import run_cli_in_process

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "sh")
    r = run_cli_in_process("--show-completion", "bash")
    assert r.returncode == 0 and "complete -o default -F" in r.stdout, r.stderr


@pytest.mark.parametrize("args", [[], ["results"], ["weights"], ["cache"], ["export"], ["train"]])
def test_a_missing_command_is_a_usage_error_with_its_help_on_stderr(args):
    # typer's help printer wrote it on stdout: `aiidetect $CMD -f json | jq` with $CMD empty fed it to jq
    r = run_cli_in_process(*args)
    assert (r.returncode, r.stdout) == (2, ""), (r.returncode, r.stdout[:300])
    assert "Usage:" in r.stderr and "Commands" in r.stderr, r.stderr[:300]
    asked = run_cli_in_process(*args, "--help")  # asked for, help is the command's output
    assert asked.returncode == 0 and "Usage:" in asked.stdout and asked.stderr == "", asked.stderr[:300]
