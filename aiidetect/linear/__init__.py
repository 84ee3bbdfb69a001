"""Linear probes on frozen backbone features: fitting (probe), the stored head
and how it is applied (head), the published UnivFD head (univfd) and the
end-to-end trainer behind ``aiidetect train linear`` (train); the detector
(``detector``), its ONNX mapping and results (``onnx``) and its command
(``cli``) load on use. So does everything below: the command line imports
``aiidetect.linear.cli`` for `--help`, which must not pull in numpy."""
_WHERE = {"FAMILY": "head", "LinearHead": "head", "probe_tensors": "head", "save_probe": "head", "to_linear": "head",
          "LinearProbe": "probe", "fit_probe": "probe"}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
