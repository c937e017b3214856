"""Equivariant graph attention with path-weight-shared tensor products (TDN / Equiformer)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import TDNConfig
from .layers import DegreeLinear, GatedLinear, SmoothLeakyReLU
from .radial import RadialWeights
from .tensor_product import make_tensor_product

_LOGIT_BOUND = 20.0  # attention logits are soft-clamped to (-20, 20) so exp() cannot overflow


@dataclass(frozen=True)
class EdgeGeometry:
    """Per-edge quantities shared by all layers.

    Attributes:
        centre: ``[E]`` receiving atom ``i``.
        neighbour: ``[E]`` sending atom ``j``.
        distance: ``[E]`` ``|r_ij|``, Å.
        sh: ``[E, d]`` component-normalised spherical harmonics of ``r_ij / |r_ij|``.
        envelope: ``[E]`` smooth cutoff ``u(|r_ij|)`` in ``[0, 1]``.
    """

    centre: torch.Tensor
    neighbour: torch.Tensor
    distance: torch.Tensor
    sh: torch.Tensor
    envelope: torch.Tensor


class GraphAttention(nn.Module):
    """Multi-head attention over neighbours: ``x [N, d, C] -> [N, d, C]``.

    message ``m_ij = TP(W_s x_j + W_d x_i, Y_ij, w1(r))``; logits from the scalars of
    ``m_ij``; value ``v_ij = TP(gate(W_v m_ij), Y_ij, w2(r))``; output
    ``sum_j alpha_ij v_ij``. The attention weights are a softmax with a sink and
    weighted by the envelope, ``alpha_ij = u_ij e^{a_ij} / (1 + sum_k u_ik e^{a_ik})``, so a
    neighbour entering the cutoff changes nothing discontinuously and an atom without
    neighbours gets a zero update.
    """

    def __init__(self, config: TDNConfig) -> None:
        super().__init__()
        lmax, c, heads = config.lmax, config.channels, config.num_heads
        self.channels, self.heads = c, heads
        self.lin_neighbour = DegreeLinear(lmax, c, c)
        self.lin_centre = DegreeLinear(lmax, c, c, bias=False)
        self.radial = RadialWeights(
            config.cutoff, config.num_radial, config.radial_hidden, 2 * c, config.envelope_exponent
        )
        rank = config.resolved_cp_rank
        self.tp_message = make_tensor_product(config.tp_backend, lmax, c, rank)
        self.tp_value = make_tensor_product(config.tp_backend, lmax, c, rank)
        self.alpha_lin = nn.Linear(c, c)
        self.alpha_act = SmoothLeakyReLU(0.2)
        self.alpha_dot = nn.Parameter(torch.randn(heads, c // heads) / math.sqrt(c // heads))
        self.value = GatedLinear(lmax, c, c)
        self.proj = DegreeLinear(lmax, c, c)

    def forward(self, x: torch.Tensor, edges: EdgeGeometry) -> torch.Tensor:
        i, j = edges.centre, edges.neighbour
        n_edges, d = i.shape[0], x.shape[1]
        w_message, w_value = self.radial(edges.distance, edges.envelope).chunk(2, dim=-1)
        message = self.lin_neighbour(x)[j] + self.lin_centre(x)[i]
        message = self.tp_message(message, edges.sh, w_message)

        logits = self.alpha_act(self.alpha_lin(message[:, 0, :]))
        head_dim = self.channels // self.heads
        logits = (logits.view(n_edges, self.heads, head_dim) * self.alpha_dot).sum(-1)  # [E, H]
        logits = _LOGIT_BOUND * torch.tanh(logits / _LOGIT_BOUND)
        weights = edges.envelope.unsqueeze(-1) * torch.exp(logits)
        denominator = torch.ones(x.shape[0], self.heads, dtype=x.dtype, device=x.device)
        denominator = denominator.index_add(0, i, weights)
        alpha = weights / denominator[i]  # [E, H]

        value = self.tp_value(self.value(message), edges.sh, w_value)
        value = value.view(n_edges, d, self.heads, head_dim) * alpha.view(n_edges, 1, self.heads, 1)
        out = torch.zeros_like(x).index_add(0, i, value.view(n_edges, d, self.channels))
        return self.proj(out)
