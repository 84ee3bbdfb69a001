"""Linear probes on frozen backbone features: fitting (probe), the stored head
and how it is applied (head), the published UnivFD head (univfd) and the
end-to-end trainer behind ``aiidetect train linear`` (train); the detector
(``detector``), its ONNX mapping and results (``onnx``) and its command
(``cli``) load on use."""
from .head import FAMILY, LinearHead, probe_tensors, save_probe, to_linear
from .probe import LinearProbe, fit_probe

__all__ = ["FAMILY", "LinearHead", "LinearProbe", "fit_probe", "probe_tensors", "save_probe", "to_linear"]
