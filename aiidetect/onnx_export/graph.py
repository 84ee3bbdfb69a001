"""The exported graph: encoder + heads as one nn.Module, and torch.onnx.export
of it with a dynamic batch axis."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..onnx_sidecar import ExportError, HeadExport

DEFAULT_OPSET = 18
# Above this many parameter bytes the weights go to an external data file
# (protobuf's hard limit is 2 GiB; ViT-L-14 alone is 1.2 GB in fp32).
EXTERNAL_DATA_BYTES = 256 * 1024 * 1024


def _layers_needed(heads: Sequence[HeadExport], n_blocks: int) -> tuple[int, ...]:
    out = set()
    for h in heads:
        for name in _inputs(h.input):
            if name.startswith("cls_"):
                out.add(int(name[4:]) % n_blocks)
    return tuple(sorted(out))


def _inputs(inp: str | Sequence[str]) -> tuple[str, ...]:
    return (inp,) if isinstance(inp, str) else tuple(inp)


def build_graph_module(visual, heads: Sequence[HeadExport]):
    """The nn.Module that is exported: pixels -> (embed, head outputs...)."""
    import torch

    from ..backbone import vit_forward

    layers = _layers_needed(heads, len(visual.transformer.resblocks))

    class ExportGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual
            self.heads = torch.nn.ModuleList([h.module for h in heads])
            self.plan = [(_inputs(h.input), len(h.roles)) for h in heads]
            self.output_names = ["embed"] + [n for h in heads for n in h.output_names()]

        def forward(self, pixels):
            feats = vit_forward(self.visual, pixels, layers=layers)
            outs = [feats["embed"].float()]
            for (inp, n_roles), mod in zip(self.plan, self.heads):
                if inp == ("pixels",):
                    x = pixels
                elif len(inp) == 1:
                    x = feats[inp[0]].to(pixels.dtype)
                else:
                    x = torch.cat([feats[k].float() for k in inp], dim=1)
                y = mod(x)
                ys = (y,) if n_roles == 1 and not isinstance(y, (tuple, list)) else tuple(y)
                if len(ys) != n_roles:
                    raise ExportError(f"head returned {len(ys)} outputs, expected {n_roles}")
                outs.extend(t.float() for t in ys)
            return tuple(outs)

    return ExportGraph().eval()



def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + \
        sum(b.numel() * b.element_size() for b in module.buffers())


def export_graph(graph, path: Path, image_size: int, opset: int = DEFAULT_OPSET,
                 external_data: bool | None = None) -> dict[str, Any]:
    """torch.onnx.export (the dynamo exporter; needs onnxscript) with a dynamic
    batch axis. Returns the exporter facts for the sidecar."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = _param_bytes(graph) > EXTERNAL_DATA_BYTES if external_data is None else external_data
    # batch 2 for tracing: with 1, the exporter may specialise the batch dimension.
    x = torch.zeros(2, 3, image_size, image_size, dtype=torch.float32)
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError("torch.onnx.export's default (dynamo) exporter needs onnxscript: "
                          "pip install onnxscript") from exc
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(graph, (x,), input_names=["pixels"], output_names=graph.output_names,
                                 dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}},
                                 opset_version=opset, dynamo=True, verbose=False)
        prog.save(str(path), external_data=big)
    return {"exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__,
            "onnxscript": _version("onnxscript"), "opset": opset, "external_data": bool(big)}


def _version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001
        return None


def share_like_graph(onnx_path: Path) -> None:
    """Give the external data files next to `onnx_path` its permission bits. onnx's writer (fp16) and ONNX
    Runtime's quantizer (int8) create the `.data` file as a private temporary one (0600), while the graph file
    follows the umask: in an export folder shared between users the others could open the graph, not its
    weights. The graph's mode is the umask's answer, read without os.umask (process-wide: a threaded host
    may be creating files meanwhile)."""
    import os
    import stat

    onnx_path = Path(onnx_path)
    mode = stat.S_IMODE(onnx_path.stat().st_mode)
    for name in _data_files(onnx_path)[1:]:
        p = onnx_path.parent / name
        # Only a file the writer put in the folder: never through a link, never outside it.
        if p.parent == onnx_path.parent and not p.is_symlink() and p.is_file() \
                and stat.S_IMODE(p.stat().st_mode) != mode:
            os.chmod(p, mode)


def _data_files(onnx_path: Path) -> list[str]:
    """The model file plus the external data files it references."""
    import onnx

    files = [onnx_path.name]
    m = onnx.load(str(onnx_path), load_external_data=False)
    for t in m.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location" and kv.value not in files:
                files.append(kv.value)
    return files

