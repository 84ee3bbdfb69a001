"""The error boundary of the command line.

Exit codes are a contract with scripts (docs/schema.md): 0 done, 1 a --fail-on
(or meta's decisive-evidence) finding and nothing else, 2 usage or fatal error.
Any exception that escapes a command becomes one line on stderr,
`aiidetect: error: ...`, and exit 2; `--debug` (or AIIDETECT_DEBUG=1) adds the
traceback. Pillow and exifread warnings about corrupt files are silenced: every
problem with a file is already in its record, and hostile files can emit them
by the hundred thousand.
"""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import signal
import sys
import warnings

DEBUG = os.environ.get("AIIDETECT_DEBUG", "") not in ("", "0")
EXIT_ERROR = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: `timeout`, a batch scheduler, `kill` or a closed terminal
    stopping the run. A KeyboardInterrupt, so every command cleans up exactly as
    for Ctrl-C (stdout closed as a document that parses, `-o` left as it was, the
    results store session marked interrupted); only the exit code (128 + the
    signal's number, as a shell reports a signal) and the message differ."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        return f"aiidetect: terminated ({signal.Signals(self.signum).name})"


_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into Terminated in the main thread. Left alone when
    they are ignored already (`nohup`) or this is not the main thread. A second
    signal of either ends the process at once, as the default would."""

    def handler(signum, frame):
        for sig in _STOP_SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, signal.SIG_DFL)
        raise Terminated(signum)

    for sig in _STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, handler)


def interrupted(exc: KeyboardInterrupt) -> None:
    """Say once on stderr why the run stopped, and exit with its code (130 for Ctrl-C)."""
    code = exc.code if isinstance(exc, Terminated) else 130
    with contextlib.suppress(Exception):
        sys.stderr.write((exc.message if isinstance(exc, Terminated) else "aiidetect: interrupted") + "\n")
    abandon_stuck_reads(code)
    sys.exit(code)


def abandon_stuck_reads(code: int) -> None:
    """The stop is done (the document on stdout finished, a results store session closed) but a decode thread
    (a scan's, a training's, an evaluation's) is still in a read that did not return within the stop's grace
    (crashguard.STOP_GRACE): a decoder stuck on a crafted file, a share that does not answer. The interpreter's
    exit would wait for that thread for ever (a scan left running 12 minutes after SIGTERM): name the file and
    end the process without it."""
    if "aiidetect.crashguard" not in sys.modules:
        return  # nothing was read: nothing can be stuck
    from .. import crashguard

    # The scan gave its decode threads this grace already when it gave up on one (pixels.OrderedChunks); a
    # stop met elsewhere gives them the same here.
    stuck = crashguard.reads_in_flight(wait=0 if crashguard.abandoned else crashguard.STOP_GRACE)
    if not stuck:
        return
    with contextlib.suppress(Exception):
        sys.stdout.flush()  # the records and the document's end, written by the stop, reach the reader
    with contextlib.suppress(Exception):
        more = f" (and {len(stuck) - 1} other file(s))" if len(stuck) > 1 else ""
        sys.stderr.write(f"aiidetect: reading {crashguard.shown_path(stuck[0])}{more} had not returned "
                         f"{crashguard.STOP_GRACE:g} s after "
                         "the stop (a decoder stuck on it or a filesystem that does not answer): the process ends "
                         "without it. Leave it out of the next run: move it out of the folder (train, eval, calibrate) "
                         "or use scan --exclude; with --db the next scan reads it alone\n")
        sys.stderr.flush()
    os._exit(code)


def quiet_library_warnings() -> None:
    warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
    warnings.filterwarnings("ignore", category=UserWarning, message=r"(?i).*(exif|tiff|corrupt|truncated).*")
    for name in ("PIL", "exifread"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def one_line(exc: BaseException) -> str:
    from ..report.safe import printable

    text = str(exc).strip().replace("\r", " ").replace("\n", " ")
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or text}: {exc.filename}"
    # It goes to a terminal and often quotes a file name: no control character gets through.
    return printable(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:2000]


def missing_extra(exc: BaseException) -> str | None:
    """The line naming the extra to install when `exc` comes from one missing, else None: the boundary's, and
    bench's, which catches every failure itself."""
    from ..extras import MissingExtra, for_missing_module

    if isinstance(exc, MissingExtra):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError):
        return for_missing_module(exc)
    return None


def reader_left(code: int = 0) -> None:
    """stdout's reader went away (`aiidetect ... | head`): not an error, and nothing left to say.
    stdout is pointed at /dev/null so the interpreter's final flush cannot fail again, and the
    exit code is the command's own (0, or 1 for findings already seen): never click's 1 for EPIPE,
    which the exit-code contract keeps for findings."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(code)


@contextlib.contextmanager
def reader_may_leave(code: int):
    """Around a command's printing once its exit code is known: if the reader leaves
    (`| head`), exit with that code all the same."""
    try:
        yield
    except BrokenPipeError:
        reader_left(code)


def _rich_broken_pipe_raises() -> None:
    """rich's Console answers a broken pipe with SystemExit(1), which would read as "findings";
    its docs invite changing that. Here it raises BrokenPipeError like any other write, so the
    command (or the root group) decides the code."""
    from rich.console import Console

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(32, "the reader of stdout left")

    Console.on_broken_pipe = on_broken_pipe


def pipe_safe_group():
    """The root command's class: a BrokenPipeError from any command ends the run with exit 0
    (click itself would exit 1)."""
    from typer.core import TyperGroup

    class PipeSafeGroup(TyperGroup):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _help_for_no_command_on_stderr(self)

        def make_context(self, info_name, args, *rest, **kwargs):
            global DASHED_PATHS
            DASHED_PATHS = dashed_paths(args)
            # The root's eager options print while its arguments are parsed, before invoke: click met
            # `aiidetect --version | grep -q 0.1` (the reader gone before the line) with its exit 1.
            _rich_broken_pipe_raises()
            args = [info_name, args, *rest]
            try:
                return super().make_context(*args, **kwargs)
            except BrokenPipeError:
                reader_left(0)

        def invoke(self, ctx):
            from typer.core import _click

            _rich_broken_pipe_raises()
            try:
                return super().invoke(ctx)
            except BrokenPipeError:
                reader_left(0)
            except _click.exceptions.UsageError as exc:
                if not DASHED_PATHS or isinstance(exc, _click.exceptions.NoArgsIsHelpError):
                    raise
                raise _click.exceptions.UsageError(exc.format_message() + dash_hint(exc.ctx), exc.ctx) from exc
            except KeyboardInterrupt as exc:
                # Typer would turn it into exit 130 without a word: say why, once, on stderr.
                interrupted(exc)

    return PipeSafeGroup


# The arguments of this run that start with '-' and name a file or folder here (dashed_paths).
DASHED_PATHS: list = []


def dashed_paths(args) -> list:
    """The arguments before `--` that start with '-' and name something in the file system: click reads them
    as options (`scan -dash.png` is `-d ash.png`, which left no path: "Missing argument"; `scan -x.jpg` was "No
    such option: -x"), and the usage error never said why."""
    out = []
    for a in args or ():
        if a == "--":
            break
        if isinstance(a, str) and a.startswith("-") and a != "-":
            with contextlib.suppress(OSError, ValueError):
                if os.path.lexists(a):
                    out.append(a)
    return out


def dash_hint(ctx=None) -> str:
    """What a usage or fatal error adds when a dashed_paths argument may be its cause; '' when none. `ctx`: the
    command's click context, else the current one (its command path is the example's)."""
    if not DASHED_PATHS:
        return ""
    from typer.core import _click

    from ..report.safe import printable

    ctx = ctx or _click.globals.get_current_context(silent=True)
    cmd = ctx.command_path if ctx is not None else "aiidetect COMMAND"
    name = printable(DASHED_PATHS[0])
    return (f" ({name} is a file here, but a name that starts with '-' is read as options: put paths after `--` "
            f"(`{cmd} [OPTIONS] -- {name}`) or write ./{name})")


def _help_for_no_command_on_stderr(group) -> None:
    """`aiidetect results` (no subcommand) is a usage error, exit 2: its help now goes to stderr, as
    every usage error's message does. Typer's help printer wrote it on stdout, so `aiidetect $CMD -f
    json | jq` with $CMD empty handed the help page to the JSON reader."""
    import typer  # its echo: `import click` would load a second click beside the one typer carries

    def parse_args(ctx, args, _own=group.parse_args, _group=group):
        if not args and _group.no_args_is_help and not ctx.resilient_parsing:
            with contextlib.redirect_stdout(sys.stderr):  # typer's help printer writes to sys.stdout
                text = ctx.get_help()
            if text:
                typer.echo(text, err=True)
            ctx.exit(EXIT_ERROR)
        return _own(ctx, args)

    group.parse_args = parse_args
    for sub in getattr(group, "commands", {}).values():
        if hasattr(sub, "commands"):
            _help_for_no_command_on_stderr(sub)


class StdoutClosed(OSError):
    """A report written to a stdout the process started without: the user's doing, not a bug, so the
    boundary says it as a usage error (`error: ...`), without the "shows the traceback" hint."""


class _ClosedStdout(io.TextIOBase):
    """sys.stdout when the process started with it closed: a report printed there fails with
    one clear line (exit 2) instead of an AttributeError on None, or vanishing into /dev/null."""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        raise StdoutClosed(errno.EBADF, "stdout is closed; give -o FILE or leave stdout open")

    def isatty(self) -> bool:
        return False


def hold_standard_fds() -> None:
    """A closed stdin, stdout or stderr (`2>&-` in a cron line) is pointed at /dev/null. Otherwise the
    next file opened takes its number, and whatever a library writes to fd 2 (torch's C++ warnings
    go straight to it) would land in that file: the report being written, say."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    if sys.stderr is None:
        # Python starts with sys.stderr None when fd 2 is closed; every `sys.stderr.write` of the error
        # boundary then raised AttributeError, and the process exited 1, the code kept for findings
        # (`scan ... > out.json 2>&-` on a full disk, `aiidetect --version >&- 2>&-`). fd 2 is /dev/null
        # now: what is said there is lost, as the user asked, and the exit code stays the command's.
        with contextlib.suppress(OSError, ValueError):
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                          errors="backslashreplace", line_buffering=True)


def utf8_output() -> None:
    """What goes to a file or a pipe is UTF-8, whatever the locale: JSON, JSONL, CSV and the HTML page
    are UTF-8 by definition, and in a latin-1 or cp1252 locale (or PYTHONIOENCODING=ascii) the
    first file name outside it ended the whole scan with UnicodeEncodeError. A terminal keeps its
    own encoding; there, and on stderr, what it cannot show is written as backslash escapes."""
    for stream, utf8 in ((sys.stdout, True), (sys.stderr, False)):
        if not isinstance(stream, io.TextIOWrapper):
            continue
        with contextlib.suppress(Exception):
            if utf8 and not stream.isatty():
                stream.reconfigure(encoding="utf-8", errors="backslashreplace")
            else:
                stream.reconfigure(errors="backslashreplace")


class StderrBestEffort:
    """sys.stderr for the whole run (run_guarded): a write to it that fails is dropped, fd 2 pointed at
    /dev/null, and the run goes on. stderr holds the logs, never the findings: its reader gone
    (`2> >(grep -m1 ...)`, a logger that died) raised BrokenPipeError, which the boundary took for stdout's
    reader leaving, so `scan --fail-on ai` exited 0 whatever it found and `eval -f json` printed nothing,
    exit 0; a full disk under `2> log` made a finished run exit 2. The exit code stays the command's."""

    def __init__(self, stream):
        self._stream = stream
        self._buffer = None

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def _gone(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._stream.fileno() != 2:
                # A host running the CLI in its process with a stderr of its own (a test runner's capture): the
                # process's fd 2 is not that stream, and not this run's to silence.
                return
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)

    def _try(self, call, *args):
        try:
            return call(*args)
        except OSError:
            self._gone()
            # What the stream still buffers now drains into /dev/null, so later writes do not fail on it.
            with contextlib.suppress(OSError, ValueError):
                self._stream.flush()
            return None

    def write(self, s):
        done = self._try(self._stream.write, s)
        return len(s) if done is None else done

    def writelines(self, lines) -> None:
        self._try(self._stream.writelines, list(lines))

    def flush(self) -> None:
        self._try(self._stream.flush)

    @property
    def buffer(self):
        raw = self._stream.buffer
        if self._buffer is None or self._buffer._stream is not raw:
            self._buffer = StderrBestEffort(raw)
        return self._buffer


def drop_unusable_widths() -> None:
    """COLUMNS=0 (set where no terminal answers: some CI runners, containers, editors' shells) made rich lay
    every console out for zero columns, which prints nothing: the table, `doctor`'s report, the summary,
    every error line and usage message vanished, exit 0 or 2 without a word. TERMINAL_WIDTH=0 did the same
    to typer's usage errors, and TERMINAL_WIDTH=abc ended every usage error in a ValueError. A width that is
    not a positive number is no width: dropped before typer reads it, as if unset. One past MAX_COLUMNS is that
    many: rich and typer read these variables themselves, and pad help and usage panels out to them."""
    from ..report.safe import columns_setting

    for name in ("COLUMNS", "LINES", "TERMINAL_WIDTH"):
        if name not in os.environ:
            continue
        width = columns_setting(os.environ[name])
        if width is None:
            del os.environ[name]
        elif str(width) != os.environ[name]:
            os.environ[name] = str(width)


def run_guarded(app) -> None:
    """Run the Typer app in standalone mode and turn escapes into exit 2."""
    drop_unusable_widths()
    hold_standard_fds()
    utf8_output()
    quiet_library_warnings()
    stop_on_signals()
    from ..report.output import StdoutWrites

    stdout, stderr = sys.stdout, sys.stderr
    guarded = sys.stdout = StdoutWrites(stdout)
    logs = sys.stderr = StderrBestEffort(stderr)
    try:
        _run_guarded(app)
    finally:
        # Put back for a caller in this process; not from under a stream set over it since (--engine ray's,
        # which keeps Ray's messages at exit off stdout).
        if sys.stdout is guarded:
            sys.stdout = stdout
        if sys.stderr is logs:
            sys.stderr = stderr


def _run_guarded(app) -> None:
    try:
        try:
            app()
        except SystemExit as done:
            # What is still buffered is written here, inside the guard: the interpreter's own last flush
            # meets a full disk with "Exception ignored ... OSError" and exit 120.
            try:
                sys.stdout.flush()
            except OSError:
                # A command that failed has said why in its one line (`scan --db ... > FILE` on a full disk:
                # where its records are); stdout failing again on the way out is not a second error.
                if done.code != EXIT_ERROR:
                    raise
            raise
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        interrupted(exc)
    except BrokenPipeError:
        # The reader of stdout left (`| head`): nothing more to say, nothing to report.
        try:
            sys.stderr.close()
        finally:
            os._exit(0)
    except StdoutClosed as exc:
        sys.stderr.write(f"error: {exc.strerror}\n")
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - this is the boundary
        from ..report.output import OutputWriteFailed
        from ..userdirs import NoUserFolder

        if isinstance(exc, OutputWriteFailed) and not DEBUG:
            # A full disk under the report: the user's to fix, in one line that names the place.
            from ..report.safe import printable

            sys.stderr.write(f"error: {printable(str(exc.strerror))}\n")
            sys.exit(EXIT_ERROR)
        if isinstance(exc, NoUserFolder) and not DEBUG:
            # No home folder in a container: a setup matter whose message names the variable to set.
            sys.stderr.write(f"error: {exc}\n")
            sys.exit(EXIT_ERROR)
        remedy = missing_extra(exc)
        if remedy is not None and not DEBUG:
            # The light install lacks torch & co.: say which extra to install, not what broke; a usage
            # matter, so the `error:` line of every other one (docs/install.md quotes it).
            sys.stderr.write(f"error: {remedy}\n")
            sys.exit(EXIT_ERROR)
        if DEBUG:
            import traceback

            traceback.print_exc()
        try:
            hint = "" if DEBUG else " (aiidetect --debug ... shows the traceback)"
            sys.stderr.write(f"aiidetect: error: {one_line(exc)}{hint}\n")
        except Exception:  # noqa: BLE001
            pass
        sys.exit(EXIT_ERROR)
