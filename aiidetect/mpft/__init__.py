"""MPFT: fine-tuning a CLIP ViT with Texture-Aware Masking, with a binary
real-vs-AI head and a generator-attribution head (docs/detectors/mpft.md).
The family's package: model and training here, the detector (``detector``),
its ONNX mapping and results (``onnx``), its commands (``cli``: train mpft;
``explain_cli``: explain-mask, explain-mpft).

Submodules import torch; this package file does not, so importing
``aiidetect.mpft.tam`` from a command stays cheap until a function runs.
"""
