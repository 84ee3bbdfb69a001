"""Trainable deltas on top of a frozen open_clip ViT, without copying it.

open_clip's ResidualAttentionBlock is ``x + ls_1(attn(ln_1(x)))`` then
``x + ls_2(mlp(ln_2(x)))`` where ``attn`` is an ``nn.MultiheadAttention``
(fused ``in_proj_weight`` (3W, W) for q/k/v, and ``out_proj``), and ``mlp`` is
``c_fc`` (Linear W->M), an activation, ``c_proj`` (Linear M->W).
``nn.MultiheadAttention`` reads ``in_proj_weight`` directly, so LoRA cannot be
slipped in by wrapping a Linear. Instead :func:`block_forward` re-implements
that block with plain functional ops, reading every weight from the frozen
block unless the adapter overrides it. It runs through ``vit_forward``'s
``block_fn`` hook, so the shared backbone is never mutated (other detectors
read it in the same pass) and the whole thing traces to ONNX.

Modes:
- ``lora`` (default): W' = W + (alpha/r) B A on the chosen projections
  (``attn_in`` = fused q/k/v, ``attn_out``, ``mlp_fc``, ``mlp_proj``); A random,
  B zero, so training starts exactly at the backbone;
- ``last_n``: trainable copies of every parameter of the last N blocks;
- ``full``: trainable copies of every block parameter (patch embedding,
  positional embedding, ln_pre/ln_post and the projection stay frozen).
``train_norms`` adds trainable copies of the ln_1/ln_2 LayerNorms of all
blocks (LN-tuning), usable with any mode.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ADAPTER_MODES = ("lora", "last_n", "full")
LORA_TARGETS = {
    "attn_in": "attn.in_proj_weight",
    "attn_out": "attn.out_proj.weight",
    "mlp_fc": "mlp.c_fc.weight",
    "mlp_proj": "mlp.c_proj.weight",
}
NORM_PARAMS = ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias")


def _key(i: int, name: str) -> str:
    return f"b{i}__{name.replace('.', '__')}"


def check_block(blk) -> None:
    ok = (isinstance(getattr(blk, "attn", None), nn.MultiheadAttention)
          and getattr(blk.attn, "in_proj_weight", None) is not None
          and hasattr(getattr(blk, "mlp", None), "c_fc") and hasattr(blk.mlp, "c_proj"))
    if not ok:
        raise ValueError(f"MPFT supports open_clip ResidualAttentionBlock ViTs; got {type(blk).__name__}")


def _param(blk, name: str) -> torch.Tensor | None:
    obj = blk
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def block_forward(blk, x: torch.Tensor, ov: Mapping[str, torch.Tensor], batch_first: bool = True) -> torch.Tensor:
    """One ResidualAttentionBlock with parameter overrides ``ov`` (full values,
    keyed by the block's parameter names). Matches ``blk(x)`` when ov is empty."""
    def p(name):
        return ov[name] if name in ov else _param(blk, name)

    if not batch_first:
        x = x.transpose(0, 1)
    bsz, seq, width = x.shape
    heads = blk.attn.num_heads
    y = F.layer_norm(x, (width,), p("ln_1.weight"), p("ln_1.bias"), blk.ln_1.eps)
    qkv = F.linear(y, p("attn.in_proj_weight"), p("attn.in_proj_bias"))
    q, k, v = qkv.chunk(3, dim=-1)

    def split(t):
        return t.reshape(bsz, seq, heads, width // heads).transpose(1, 2)

    o = F.scaled_dot_product_attention(split(q), split(k), split(v))
    o = o.transpose(1, 2).reshape(bsz, seq, width)
    o = F.linear(o, p("attn.out_proj.weight"), p("attn.out_proj.bias"))
    x = x + (o * p("ls_1.gamma") if "ls_1.gamma" in ov or hasattr(blk.ls_1, "gamma") else o)
    y = F.layer_norm(x, (width,), p("ln_2.weight"), p("ln_2.bias"), blk.ln_2.eps)
    y = F.linear(y, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))
    y = blk.mlp.gelu(y)
    y = F.linear(y, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
    x = x + (y * p("ls_2.gamma") if "ls_2.gamma" in ov or hasattr(blk.ls_2, "gamma") else y)
    if not batch_first:
        x = x.transpose(0, 1)
    return x


class EncoderAdapter(nn.Module):
    """The trained part of the encoder. Built from a frozen open_clip visual
    and a small config dict (stored in the head manifest as ``params.adapter``)."""

    def __init__(self, visual, mode: str = "lora", rank: int = 8, alpha: float = 16.0,
                 targets: Sequence[str] = ("attn_in", "attn_out", "mlp_fc", "mlp_proj"),
                 blocks: Sequence[int] | None = None, last_n: int = 2, train_norms: bool = False):
        super().__init__()
        if mode not in ADAPTER_MODES:
            raise ValueError(f"unknown adapter mode {mode!r}; one of {ADAPTER_MODES}")
        bad = [t for t in targets if t not in LORA_TARGETS]
        if bad:
            raise ValueError(f"unknown LoRA targets {bad}; choose from {list(LORA_TARGETS)}")
        resblocks = visual.transformer.resblocks
        for blk in resblocks:
            check_block(blk)
        n = len(resblocks)
        self.mode = mode
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.targets = tuple(targets)
        self.last_n = int(last_n)
        self.train_norms = bool(train_norms)
        self.n_blocks = n
        self.batch_first = bool(getattr(visual.transformer, "batch_first", True))
        if mode == "lora":
            self.blocks = sorted({b % n for b in blocks}) if blocks is not None else list(range(n))
        elif mode == "last_n":
            self.blocks = list(range(max(0, n - self.last_n), n))
        else:
            self.blocks = list(range(n))
        self.scale = self.alpha / max(1, self.rank)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.copies = nn.ParameterDict()
        for i, blk in enumerate(resblocks):
            if mode == "lora" and i in self.blocks:
                for t in self.targets:
                    w = _param(blk, LORA_TARGETS[t])
                    out_f, in_f = w.shape
                    a = torch.empty(self.rank, in_f)
                    nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # what peft / the LoRA paper use
                    self.lora_A[_key(i, t)] = nn.Parameter(a)
                    self.lora_B[_key(i, t)] = nn.Parameter(torch.zeros(out_f, self.rank))
            if mode != "lora" and i in self.blocks:
                for name, prm in blk.named_parameters():
                    self.copies[_key(i, name)] = nn.Parameter(prm.detach().float().clone())
            elif self.train_norms:
                for name in NORM_PARAMS:
                    self.copies[_key(i, name)] = nn.Parameter(_param(blk, name).detach().float().clone())
        self._names = {i: [name for name, _ in blk.named_parameters()] for i, blk in enumerate(resblocks)}

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "rank": self.rank, "alpha": self.alpha, "targets": list(self.targets),
                "blocks": list(self.blocks) if self.mode == "lora" else None, "last_n": self.last_n,
                "train_norms": self.train_norms}

    @classmethod
    def from_config(cls, visual, cfg: Mapping[str, Any]) -> "EncoderAdapter":
        return cls(visual, mode=cfg.get("mode", "lora"), rank=cfg.get("rank", 8), alpha=cfg.get("alpha", 16.0),
                   targets=cfg.get("targets", list(LORA_TARGETS)), blocks=cfg.get("blocks"),
                   last_n=cfg.get("last_n", 2), train_norms=cfg.get("train_norms", False))

    def overrides(self, i: int, blk) -> dict[str, torch.Tensor]:
        """Full replacement values for block i's parameters (empty: frozen block)."""
        ov: dict[str, torch.Tensor] = {}
        for name in self._names[i]:
            k = _key(i, name)
            if k in self.copies:
                ov[name] = self.copies[k]
        if self.mode == "lora":
            for t in self.targets:
                k = _key(i, t)
                if k in self.lora_A:
                    base = _param(blk, LORA_TARGETS[t])
                    delta = (self.lora_B[k] @ self.lora_A[k]) * self.scale
                    ov[LORA_TARGETS[t]] = base + delta.to(base.dtype)
        dt = _param(blk, "ln_1.weight").dtype
        return {k: v.to(dt) for k, v in ov.items()}

    def block_fn(self, i: int, blk, h: torch.Tensor) -> torch.Tensor:
        ov = self.overrides(i, blk)
        if not ov:
            return blk(h)
        return block_forward(blk, h, ov, self.batch_first)
