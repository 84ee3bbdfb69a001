"""CLIP-Flow: a normalizing flow on frozen CLIP features, trained on real
photos and spectrally modified proxies of them (never on AI images).

The family's package: model, training, the detector (``detector``), its
ONNX mapping and results (``onnx``) and its command (``cli``). The model
classes import torch; they load on first use, so the command and detector
modules stay cheap to import (``aiidetect --help``).
"""
_MODEL = ("FeatureFlow", "FlowConfig", "build_flow", "flow_from_head")

__all__ = list(_MODEL)


def __getattr__(name):
    if name in _MODEL:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
