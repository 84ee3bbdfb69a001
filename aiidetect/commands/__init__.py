"""CLI commands. Every module exposes ``register(apps)`` where ``apps`` is a
dict of Typer apps: "root", "train", "weights", "export", "cache". Modules must
not import torch at import time (``aiidetect --help`` stays fast).

Names without a dot are modules of this package; each detector family's own
commands (train, explain) live in its package and come from the registry.
"""
from ..detectors import cli_modules

COMMAND_MODULES = (
    "scan", "meta", "weights", *cli_modules(),
    "proxies", "evaluate", "calibrate", "export", "bench", "cache", "report", "results",
    "weights_tools", "doctor", "optimize", "schema",
)
