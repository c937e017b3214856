"""Small utilities shared by tests (import as ``from helpers import ...``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from e3nn import o3


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily change torch's default dtype (e3nn builds its buffers in it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def random_o3(seed: int, improper: bool = False) -> torch.Tensor:
    """A seeded random ``[3, 3]`` float64 rotation, times -1 when ``improper``."""
    angles = torch.rand(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    alpha, beta, gamma = (
        2 * torch.pi * angles[0],
        torch.acos(1 - 2 * angles[1]),
        2 * torch.pi * angles[2],
    )
    rotation = o3.angles_to_matrix(alpha, beta, gamma)
    return -rotation if improper else rotation
