"""Shared pieces of the relaxation tests (import the fixtures into a test module to use them)."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.build import molecule


@pytest.fixture(autouse=True)
def one_thread():
    """One torch and BLAS thread: on a busy shared machine threads spin and runs crawl."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only limits BLAS threads
        threadpool_limits = contextlib.nullcontext
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)


def rattled_molecules(names=("CH3CH2OH", "H2O", "CH4", "CH3OH", "HCOOH"), amount=0.1):
    """ASE g2 molecules (H, C, O only), each rattled with its own seed."""
    out = []
    for k, name in enumerate(names):
        atoms = molecule(name)
        atoms.rattle(amount, seed=k)
        out.append(atoms)
    return out


def periodic_cho(seed: int = 0) -> Atoms:
    """8 C/H/O atoms on a rattled grid in a 5 Å triclinic cell."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cell = np.array([[5.2, 0.0, 0.0], [0.6, 5.0, 0.0], [0.3, -0.4, 5.4]])
    grid = np.array([[a, b, c] for a in (0, 0.5) for b in (0, 0.5) for c in (0, 0.5)])
    frac = grid + rng.normal(scale=0.03, size=grid.shape)
    return Atoms("C2O2H4", scaled_positions=frac, cell=cell, pbc=True)
