"""Real open_clip checkpoints of a small CLIP built in code (random init, fixed
seed), written the ways checkpoints come: a plain state dict, safetensors, a
TorchScript archive. Used wherever weights loading and identity are tested."""
from __future__ import annotations

import json
import warnings
from pathlib import Path


def tiny_clip(config: str = "tiny-vit", seed: int = 0):
    """(model, state_dict) of the shipped `config`, seeded."""
    import torch

    from ..backbone import import_open_clip, resolve_config_path

    import_open_clip()
    from open_clip.model import CLIP

    cfg = json.loads(resolve_config_path(config).read_text())
    torch.manual_seed(seed)
    model = CLIP(**cfg).eval()
    return model, model.state_dict()


def save_safetensors(sd, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


def save_torchscript(model, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.randn(1, 3, 224, 224), torch.zeros(1, 16, dtype=torch.long)),
                                 check_trace=False)
    traced.save(str(path))
