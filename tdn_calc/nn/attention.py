"""Equivariant graph attention with a path-weight-shared tensor product (TDN).

Designed so that every per-edge operation is cheap: channel mixing (the expensive
``C x C`` matrix products) happens on atoms, and each edge only sees one gather, one
tensor product, and one scatter of ``[E, d, C]`` tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import TDNConfig
from .layers import DegreeLinear
from .tensor_product import make_tensor_product

_LOGIT_BOUND = 20.0  # attention logits are soft-clamped to (-20, 20) so exp() cannot overflow


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` along the first axis as ``index_select``, whose backward is one
    ``index_add`` (advanced indexing's backward, an accumulating ``index_put``, is several
    times slower on a CPU)."""
    return torch.index_select(values, 0, index)


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

    * logits ``a_ij^h = sum_{c in h} q_ic k_jc rho_c(r_ij) / sqrt(C/H)`` from the scalars of
      centre and neighbour and a radial filter ``rho``;
    * weights ``alpha_ij^h = u_ij e^{a_ij^h} / (1 + sum_k u_ik e^{a_ik^h})``: a softmax with a
      sink, weighted by the cutoff envelope ``u`` so that a neighbour crossing the cutoff
      changes nothing discontinuously and an isolated atom gets a zero update;
    * values ``v_ij = TP(W_v x_j, Y_ij, w(r_ij) * alpha_ij)``, the tensor product of the
      neighbour's features with the edge's spherical harmonics; the attention weight is
      folded into the per-channel path weight, so it costs nothing extra per component;
    * output ``W_o sum_j v_ij``.
    """

    def __init__(self, config: TDNConfig) -> None:
        super().__init__()
        lmax, c, heads = config.lmax, config.channels, config.num_heads
        self.channels, self.heads, self.head_dim = c, heads, c // heads
        self.query = nn.Linear(c, c, bias=False)
        self.key = nn.Linear(c, c, bias=False)
        self.value = DegreeLinear(lmax, c, c)
        self.tp = make_tensor_product(config.tp_backend, lmax, c, config.resolved_cp_rank)
        self.proj = DegreeLinear(lmax, c, c)

    def forward(self, x: torch.Tensor, edges: EdgeGeometry, radial: torch.Tensor) -> torch.Tensor:
        """``radial``: ``[E, 2C]`` envelope-weighted radial features (key filter, TP weights)."""
        i, j = edges.centre, edges.neighbour
        n_edges = i.shape[0]
        key_filter, tp_weights = radial.chunk(2, dim=-1)
        scalars = x[:, 0, :]
        logits = gather(self.query(scalars), i) * gather(self.key(scalars), j) * key_filter
        logits = logits.view(n_edges, self.heads, self.head_dim).sum(-1) / math.sqrt(self.head_dim)
        logits = _LOGIT_BOUND * torch.tanh(logits / _LOGIT_BOUND)
        weights = edges.envelope.unsqueeze(-1) * torch.exp(logits)  # [E, H]
        denominator = torch.ones(x.shape[0], self.heads, dtype=x.dtype, device=x.device)
        alpha = weights / gather(denominator.index_add(0, i, weights), i)
        tp_weights = tp_weights * alpha.repeat_interleave(self.head_dim, dim=1)
        values = self.tp(gather(self.value(x), j), edges.sh, tp_weights)  # [E, d, C]
        return self.proj(torch.zeros_like(x).index_add(0, i, values))
