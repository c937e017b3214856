"""Equivariant building blocks on features of shape ``[n, (L+1)^2, C]``."""

from __future__ import annotations

import math

import torch
from torch import nn

from .irreps import degree_of_component, num_components


def _scalar_row(lmax: int, trailing: int) -> torch.Tensor:
    """``[d, 1, ...]`` (``trailing`` singleton axes): 1 for the scalar component, else 0."""
    row = torch.zeros((num_components(lmax),) + (1,) * trailing)
    row[0] = 1.0
    return row


class DegreeLinear(nn.Module):
    """Channel mixing with one weight matrix per degree: ``[n, d, C_in] -> [n, d, C_out]``.

    Equivariant because it never mixes components; the bias acts on scalars (l = 0) only.
    All degrees go through one batched product over the components (``weight`` gathered per
    component): one operation forward and one backward, whatever ``lmax``, where slicing per
    degree and concatenating took several times longer on small inputs.
    """

    def __init__(self, lmax: int, c_in: int, c_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(lmax + 1, c_in, c_out) / math.sqrt(c_in))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.register_buffer("degree", degree_of_component(lmax), persistent=False)
        self.register_buffer("scalar_row", _scalar_row(lmax, 2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight[self.degree]  # [d, C_in, C_out]
        xt = x.transpose(0, 1)  # [d, n, C_in]
        if self.bias is None:
            return torch.bmm(xt, weight).transpose(0, 1)
        return torch.baddbmm(self.scalar_row * self.bias, xt, weight).transpose(0, 1)


class DegreeLayerNorm(nn.Module):
    """Per-degree layer norm (Equiformer's "V2"): ``[n, d, C] -> [n, d, C]``.

    Scalars are centred over channels; each degree is divided by its root-mean-square
    over components and channels, then scaled by a learned per-degree, per-channel gain.
    All degrees at once: the per-degree sums of squares are one product with a constant
    ``[d, d]`` same-degree indicator.
    """

    def __init__(self, lmax: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        degree = degree_of_component(lmax)
        same = (degree[:, None] == degree[None, :]).to(torch.get_default_dtype())
        # 0/1 and integers: exact in any dtype, so a float64 model normalises to float64
        self.register_buffer("same_degree", same, persistent=False)  # [d, d]
        self.register_buffer("count", same.sum(0) * channels, persistent=False)  # [d]
        self.register_buffer("degree", degree, persistent=False)
        self.register_buffer("scalar_row", _scalar_row(lmax, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x[:, :1, :].mean(dim=2, keepdim=True) * self.scalar_row
        mean_square = (centred.pow(2).sum(dim=2) @ self.same_degree) / self.count  # [n, d]
        scale = mean_square.add(self.eps).rsqrt().unsqueeze(-1)  # [n, d, 1]
        return centred * scale * self.gain[self.degree] + self.scalar_row * self.bias


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
