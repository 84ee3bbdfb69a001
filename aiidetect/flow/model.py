"""An exact-likelihood normalizing flow on a feature vector (RealNVP/Glow style).

    log p(x) = log N(z; 0, I) + log|det dz/dx|,   z = f(x)

f = input standardisation (fixed, from the real training features), then
`blocks` x [ActNorm -> invertible linear (LU-parameterised, Glow) or fixed
permutation -> affine coupling]. Every piece has a closed-form log-determinant.

Export contract (ONNX, another module): `FeatureFlow.forward(x)` maps a
(B, D) float32 batch of raw features to (B,) log-densities with no
data-dependent Python control flow; `flow_from_head(head)` rebuilds the module
from a saved head. ActNorm's data-dependent initialisation is an explicit
method the trainer calls once, never part of forward.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


@dataclass
class FlowConfig:
    dim: int
    blocks: int = 6
    hidden: int = 256
    linear: str = "lu"          # lu (learned invertible linear) | perm (fixed permutation)
    scale_clamp: float = 2.0    # |log-scale| of a coupling is at most this (tanh-bounded): keeps training stable
    seed: int = 0               # permutations and LU initialisation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FlowConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class ActNorm(nn.Module):
    """y = (x - loc) * exp(log_scale); initialise with `init_from` so that the
    first batch comes out zero-mean unit-variance (Glow)."""

    def __init__(self, dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> torch.Tensor:
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(-torch.log(x.std(0) + 1e-6))
        return self(x)[0]

    def forward(self, x):
        y = (x - self.loc) * torch.exp(self.log_scale)
        return y, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y):
        return y * torch.exp(-self.log_scale) + self.loc


class InvertibleLinear(nn.Module):
    """W = P L (U + diag(sign * exp(log_s))): log|det W| = sum(log_s)."""

    def __init__(self, dim: int, generator: torch.Generator):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("mask_l", torch.tril(torch.ones(dim, dim), -1))
        self.register_buffer("eye", torch.eye(dim))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.mask_l + self.eye
        # eye * v rather than torch.diag(v): the same matrix, and every ONNX exporter knows it
        upper = self.upper * self.mask_l.T + self.eye * (self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def forward(self, x):
        return x @ self.weight().T, self.log_s.sum().expand(x.shape[0])

    def inverse(self, y):
        return torch.linalg.solve(self.weight(), y.T).T


class Permutation(nn.Module):
    def __init__(self, dim: int, generator: torch.Generator):
        super().__init__()
        perm = torch.randperm(dim, generator=generator)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y):
        return y[:, self.inv_perm]


class AffineCoupling(nn.Module):
    """x = [a, b]; (s, t) = net(a); y = [a, b * exp(s) + t], s bounded by
    clamp * tanh(.). The last layer starts at zero so each block starts as
    the identity."""

    def __init__(self, dim: int, hidden: int, clamp: float):
        super().__init__()
        self.d_a = dim // 2
        self.d_b = dim - self.d_a
        self.clamp = float(clamp)
        self.net = nn.Sequential(nn.Linear(self.d_a, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, 2 * self.d_b))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _st(self, a):
        h = self.net(a)
        s = self.clamp * torch.tanh(h[:, : self.d_b] / self.clamp)
        return s, h[:, self.d_b:]

    def forward(self, x):
        a, b = x[:, : self.d_a], x[:, self.d_a:]
        s, t = self._st(a)
        return torch.cat([a, b * torch.exp(s) + t], dim=1), s.sum(1)

    def inverse(self, y):
        a, yb = y[:, : self.d_a], y[:, self.d_a:]
        s, t = self._st(a)
        return torch.cat([a, (yb - t) * torch.exp(-s)], dim=1)


class FeatureFlow(nn.Module):
    """Raw (B, D) features -> (B,) log-density under the flow."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        g = torch.Generator().manual_seed(cfg.seed)
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("feat_std", torch.ones(d))
        layers: list[nn.Module] = []
        for _ in range(cfg.blocks):
            layers.append(ActNorm(d))
            layers.append(InvertibleLinear(d, g) if cfg.linear == "lu" else Permutation(d, g))
            layers.append(AffineCoupling(d, cfg.hidden, cfg.scale_clamp))
        self.layers = nn.ModuleList(layers)

    @torch.no_grad()
    def set_standardisation(self, x: torch.Tensor) -> None:
        self.feat_mean.copy_(x.mean(0))
        self.feat_std.copy_(x.std(0).clamp_min(1e-6))

    @torch.no_grad()
    def init_actnorm(self, x: torch.Tensor) -> None:
        """Data-dependent ActNorm init on a batch of raw features."""
        h = (x - self.feat_mean) / self.feat_std
        for layer in self.layers:
            h = layer.init_from(h) if isinstance(layer, ActNorm) else layer(h)[0]

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (z, log|det dz/dx|)."""
        h = (x - self.feat_mean) / self.feat_std
        logdet = (-torch.log(self.feat_std).sum()).expand(x.shape[0])
        for layer in self.layers:
            h, ld = layer(h)
            logdet = logdet + ld
        return h, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in reversed(self.layers):
            h = layer.inverse(h)
        return h * self.feat_std + self.feat_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, logdet = self.transform(x)
        base = -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * LOG_2PI
        return base + logdet

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        return -self.forward(x)


def build_flow(params: Mapping[str, Any]) -> FeatureFlow:
    return FeatureFlow(FlowConfig.from_dict(params))


def flow_from_head(head) -> FeatureFlow:
    """Rebuild the flow saved by aiidetect.flow.train (manifest params.flow +
    tensors with prefix ``flow.``), in eval mode."""
    params = (head.manifest.get("params") or {}).get("flow")
    if not params:
        raise ValueError(f"head {head.name!r} has no params.flow in its manifest")
    model = build_flow(params)
    state = {k[len("flow."):]: v for k, v in head.tensors.items() if k.startswith("flow.")}
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
