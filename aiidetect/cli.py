"""The Typer app: thin. Each command lives in aiidetect/commands/<name>.py and
calls the library; nothing heavy is imported before a command runs."""
from __future__ import annotations

import importlib

import typer

from . import __version__
from .commands import COMMAND_MODULES
from .commands.completion import shell_checked
from .commands.errors import pipe_safe_group
from .commands.helptext import reflowing

app = typer.Typer(
    name="aiidetect",
    help="Tell whether images were made by a generative model: CLIP-based detectors (MPFT, CLIP-Flow, linear "
         "probes) plus provenance evidence (EXIF, XMP, generator chunks, C2PA, watermarks), fused into one "
         "calibrated verdict.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    # help prose wraps at the terminal's width, not the source's; another shell is a usage error, not exit 1
    cls=reflowing(shell_checked(pipe_safe_group())),
    # Subcommands inherit this through click's context, so `-h` works everywhere.
    context_settings={"help_option_names": ["-h", "--help"]},
)
train_app = typer.Typer(help="Train detector heads.", no_args_is_help=True)
weights_app = typer.Typer(help="Fetch, identify, carry, list and verify weights.", no_args_is_help=True)
export_app = typer.Typer(help="Export backbones and heads (ONNX).", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(weights_app, name="weights")
cache_app = typer.Typer(help="Inspect or clear the scan-result and feature caches.", no_args_is_help=True)
app.add_typer(export_app, name="export")
app.add_typer(cache_app, name="cache")

APPS = {"root": app, "train": train_app, "weights": weights_app, "export": export_app, "cache": cache_app}


def _version(value: bool):
    if value:
        typer.echo(f"aiidetect {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          debug: bool = typer.Option(False, "--debug", help="On a fatal error, print the traceback too "
                                                             "(example: aiidetect --debug scan photos/).")):
    from .commands import errors

    errors.DEBUG = debug or errors.DEBUG


for _name in COMMAND_MODULES:
    importlib.import_module(_name if "." in _name else f"aiidetect.commands.{_name}").register(APPS)


def main() -> None:
    # Typer/click usage errors exit 2 already; every other escape becomes one line and exit 2
    # (exit 1 is reserved for --fail-on findings).
    from .commands.errors import run_guarded

    run_guarded(app)


if __name__ == "__main__":  # pragma: no cover
    main()
