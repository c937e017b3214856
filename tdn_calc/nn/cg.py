"""The dense Clebsch-Gordan tensor of a path-weight-shared tensor product."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from e3nn import o3

from .irreps import allowed_paths, degree_slices, num_components


def path_weight(l3: int, n_paths_into_l3: int) -> float:
    """Normalisation of one path so that unit-variance inputs give unit-variance outputs.

    e3nn's "component" irrep normalisation (``sqrt(2 l3 + 1)``) times a ``1/sqrt(n)``
    over the ``n`` paths that end in degree ``l3``.
    """
    return math.sqrt(2 * l3 + 1) / math.sqrt(n_paths_into_l3)


@lru_cache(maxsize=16)
def _cg_tensor_float64(lmax: int) -> torch.Tensor:
    paths = allowed_paths(lmax)
    fan_in = {l3: sum(1 for p in paths if p[2] == l3) for l3 in range(lmax + 1)}
    d = num_components(lmax)
    sl = degree_slices(lmax)
    tensor = torch.zeros(d, d, d, dtype=torch.float64)
    for l1, l2, l3 in paths:
        w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        tensor[sl[l1], sl[l2], sl[l3]] += path_weight(l3, fan_in[l3]) * w3j
    return tensor


def cg_tensor(lmax: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``T`` of shape ``[d, d, d]``, ``d = (L+1)^2``.

    ``out[k] = sum_ij T[i, j, k] x[i] y[j]`` is the sum over all parity-respecting
    paths ``(l1, l2 -> l3)`` of the normalised Wigner-3j products. Equivariance:
    ``T(D x, D y) = D T(x, y)`` for the block-diagonal Wigner matrix ``D`` of degrees
    ``0..L``.
    """
    return _cg_tensor_float64(lmax).to(dtype).clone()
