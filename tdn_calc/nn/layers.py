"""Equivariant building blocks on features of shape ``[n, (L+1)^2, C]``."""

from __future__ import annotations

import math

import torch
from torch import nn

from .irreps import degree_slices


class DegreeLinear(nn.Module):
    """Channel mixing with one weight matrix per degree: ``[n, d, C_in] -> [n, d, C_out]``.

    Equivariant because it never mixes components; the bias acts on scalars (l = 0) only.
    """

    def __init__(self, lmax: int, c_in: int, c_out: int, bias: bool = True) -> None:
        super().__init__()
        self.slices = degree_slices(lmax)
        self.weight = nn.Parameter(torch.randn(lmax + 1, c_in, c_out) / math.sqrt(c_in))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[:, s, :] @ self.weight[l] for l, s in enumerate(self.slices)]
        if self.bias is not None:
            parts[0] = parts[0] + self.bias
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class DegreeLayerNorm(nn.Module):
    """Per-degree layer norm (Equiformer's "V2"): ``[n, d, C] -> [n, d, C]``.

    Scalars are centred over channels; each degree is divided by its root-mean-square
    over components and channels, then scaled by a learned per-degree, per-channel gain.
    """

    def __init__(self, lmax: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.slices = degree_slices(lmax)
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for l, s in enumerate(self.slices):
            field = x[:, s, :]
            if l == 0:
                field = field - field.mean(dim=2, keepdim=True)
            rms = field.pow(2).mean(dim=(1, 2), keepdim=True).add(self.eps).rsqrt()
            field = field * rms * self.gain[l]
            if l == 0:
                field = field + self.bias
            parts.append(field)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class Gate(nn.Module):
    """Gate nonlinearity: ``SiLU`` on scalars, ``sigmoid(gate)`` times each higher degree.

    ``forward(x [n, d, C], gates [n, C]) -> [n, d, C]``.
    """

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        scalars = nn.functional.silu(x[:, :1, :])
        if x.shape[1] == 1:
            return scalars
        return torch.cat([scalars, x[:, 1:, :] * torch.sigmoid(gates).unsqueeze(1)], dim=1)


class GatedLinear(nn.Module):
    """``DegreeLinear`` followed by a :class:`Gate` whose gates are linear in the input scalars."""

    def __init__(self, lmax: int, c_in: int, c_out: int) -> None:
        super().__init__()
        self.linear = DegreeLinear(lmax, c_in, c_out)
        self.gates = nn.Linear(c_in, c_out) if lmax > 0 else None
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        gates = self.gates(x[:, 0, :]) if self.gates is not None else h[:, 0, :]
        return self.gate(h, gates)


class FeedForward(nn.Module):
    """Equivariant feed-forward: gated expansion to ``mult * C`` channels, then back to ``C``."""

    def __init__(self, lmax: int, channels: int, multiplier: int) -> None:
        super().__init__()
        self.up = GatedLinear(lmax, channels, multiplier * channels)
        self.down = DegreeLinear(lmax, multiplier * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(x))


class SmoothLeakyReLU(nn.Module):
    """``((1+a)/2) x + ((1-a)/2) x (2 sigmoid(x) - 1)``: a smooth leaky ReLU."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.alpha = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1 + self.alpha) * x + 0.5 * (1 - self.alpha) * x * (2 * torch.sigmoid(x) - 1)
