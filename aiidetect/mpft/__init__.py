"""MPFT: fine-tuning a CLIP ViT with Texture-Aware Masking, with a binary
real-vs-AI head and a generator-attribution head (docs/detectors/mpft.md).

Submodules import torch; this package file does not, so importing
``aiidetect.mpft.tam`` from a command stays cheap until a function runs.
"""
