"""Radial basis with a smooth cutoff envelope, and the MLP that turns it into TP weights."""

from __future__ import annotations

import math

import torch
from torch import nn


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """Smooth cutoff ``u(r)`` (DimeNet's polynomial envelope), shape of ``r``.

    ``u(0) = 1``; ``u`` and its first ``p - 1`` derivatives vanish at ``r = cutoff``, and
    ``u = 0`` beyond, so energies and forces are continuous when a neighbour crosses
    the cutoff.
    """
    x = (r / cutoff).clamp(max=1.0)
    # 1 - a x^p + b x^(p+1) - c x^(p+2) in Horner form (fewer operations on small inputs)
    a, b, c = (p + 1) * (p + 2) / 2, p * (p + 2), p * (p + 1) / 2
    u = 1.0 + x.pow(p) * (x * (b - c * x) - a)
    return torch.where(r < cutoff, u, torch.zeros_like(u))


class BesselBasis(nn.Module):
    """``sqrt(2/rc) sin(n pi r / rc) / r`` for ``n = 1..num_basis``: ``[E] -> [E, num_basis]``."""

    def __init__(self, cutoff: float, num_basis: int) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("freqs", torch.arange(1, num_basis + 1) * math.pi / cutoff)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freqs * r) / r


class RadialWeights(nn.Module):
    """Per-edge tensor-product weights from the distance: ``r [E] -> [E, n_out]``.

    ``W_out (u(r) * MLP(bessel(r)))``: the last layer has no bias, so the envelope ``u``
    multiplies every output weight (and with it every message), which go smoothly to zero
    at the cutoff. Applying ``u`` to the narrower hidden layer is cheaper.
    """

    def __init__(self, cutoff: float, num_basis: int, hidden: int, n_out: int, p: int) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.p = p
        self.basis = BesselBasis(cutoff, num_basis)
        self.mlp = nn.Sequential(
            nn.Linear(num_basis, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
        )
        self.out = nn.Linear(hidden, n_out, bias=False)

    def forward(self, r: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(self.basis(r)) * envelope.unsqueeze(-1))
