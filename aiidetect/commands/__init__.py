"""CLI commands, one module each. Every module exposes ``register(apps)`` where
``apps`` is a dict of Typer apps: "root", "train", "weights", "export", "cache".
Modules must not import torch at import time (``aiidetect --help`` stays fast).
"""
COMMAND_MODULES = (
    "scan", "meta", "weights", "train_linear", "train_mpft", "train_flow", "explain",
    "proxies", "evaluate", "calibrate", "export", "bench", "cache", "report", "results",
    "weights_tools", "doctor", "optimize",
)
