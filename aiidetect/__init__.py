"""aiidetect: does this image come from a generative model?

Data flows discover -> decode -> detectors -> fusion -> report; the modules
are named after those stages. The library API (docs/api.md)::

    from aiidetect import Scanner, ScanOptions
    with Scanner(ScanOptions(detectors=["metadata"])) as scanner:
        records = list(scanner.scan(["photos/"]))
"""
__version__ = "0.1.0"

# Resolved on first use (PEP 562): `import aiidetect` and `aiidetect --help` stay light, and
# torch is imported only when a detector that needs it is built.
_API = ("Scanner", "ScanOptions", "ScanError", "UsageError", "ReadsStuckError")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'aiidetect' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
