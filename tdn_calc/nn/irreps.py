"""Bookkeeping for irreps features of shape ``[..., (L+1)^2, C]``.

Component ``k`` of the second axis belongs to degree ``l`` with ``l^2 <= k < (l+1)^2``;
inside a degree the order is e3nn's (``m = -l..l`` in e3nn's real basis). Degree ``l``
carries parity ``(-1)^l`` (the parity of spherical harmonics), so a product
``l1 x l2 -> l3`` is allowed when ``|l1 - l2| <= l3 <= l1 + l2`` and ``l1 + l2 + l3`` is
even. Keeping only those paths makes the model O(3)-equivariant: mirror images get the
same energy.
"""

from __future__ import annotations

import torch


def num_components(lmax: int) -> int:
    """``d = (L+1)^2``, the number of components of degrees ``0..L``."""
    return (lmax + 1) ** 2


def degree_slices(lmax: int) -> list[slice]:
    """Slices of the component axis, one per degree ``0..L``."""
    return [slice(l * l, (l + 1) * (l + 1)) for l in range(lmax + 1)]


def degree_of_component(lmax: int) -> torch.Tensor:
    """``[d]`` int64: the degree of each component."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])


def allowed_paths(lmax: int) -> list[tuple[int, int, int]]:
    """All parity-respecting paths ``(l1, l2, l3)`` with every degree ``<= lmax``."""
    return [
        (l1, l2, l3)
        for l1 in range(lmax + 1)
        for l2 in range(lmax + 1)
        for l3 in range(abs(l1 - l2), min(lmax, l1 + l2) + 1)
        if (l1 + l2 + l3) % 2 == 0
    ]


def irreps_string(lmax: int, channels: int = 1) -> str:
    """The e3nn irreps of a feature, e.g. ``"64x0e+64x1o+64x2e"``."""
    return "+".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))


def to_e3nn_layout(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """``[n, d, C]`` (component-major) -> ``[n, C*d]`` in e3nn's channel-major layout."""
    n, _, c = x.shape
    parts = [
        x[:, s, :].transpose(1, 2).reshape(n, c * (s.stop - s.start)) for s in degree_slices(lmax)
    ]
    return torch.cat(parts, dim=1)


def from_e3nn_layout(x: torch.Tensor, lmax: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`to_e3nn_layout`: ``[n, C*d]`` -> ``[n, d, C]``."""
    n = x.shape[0]
    parts, offset = [], 0
    for l in range(lmax + 1):
        width = channels * (2 * l + 1)
        parts.append(x[:, offset : offset + width].reshape(n, channels, 2 * l + 1).transpose(1, 2))
        offset += width
    return torch.cat(parts, dim=1)
