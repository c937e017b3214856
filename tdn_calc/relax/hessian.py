"""The student's Hessian as the teacher's starting Hessian: a cheap head start for a finish.

A teacher that finishes a student relaxation (``finish=...``) starts at the student's
minimum, where the two potential-energy surfaces are close. ASE's BFGS starts from a
diagonal guess (70 eV/Å² on every coordinate) and spends its first teacher steps learning
curvature the student already knows. Here the student's Hessian at its minimum (central
finite differences of its forces, ``6 * n_free`` student calls) seeds the teacher's BFGS
instead, so the teacher takes Newton steps from its first call. Measured on the starts of
``benchmarks/finish_quality.py`` (tdn-catalysis finishing with SevenNet-0): the teacher's
BFGS steps fall several-fold for the same minima (docs/benchmarks.md).

The Hessian is symmetrised and its eigenvalues are raised to at least ``min_curvature``
(eV/Å²), so it is positive definite even where the student's minimum is a saddle or flat
(a soft adsorbate rotation); atoms held by ``FixAtoms`` keep the diagonal guess (their
forces are zero, so they never move).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..errors import InputError
from ..soft_modes import force_constants
from .state import fixed_mask

#: ASE BFGS's own diagonal guess, eV/Å²
DIAGONAL_GUESS = 70.0
#: finite-difference displacement, Å
DELTA = 0.01
#: smallest curvature kept, eV/Å²
MIN_CURVATURE = 1.0
#: most free atoms a Hessian is computed for (6 student calls each); above it, no seed
MAX_FREE_ATOMS = 200


def student_hessian(atoms: Atoms, calculator: Calculator, delta: float = DELTA,
                    min_curvature: float = MIN_CURVATURE) -> np.ndarray | None:
    """``[3 n_atoms, 3 n_atoms]`` Hessian (eV/Å²) of ``calculator`` at ``atoms`` by central
    differences of its forces over the free atoms' coordinates (``delta`` Å), symmetrised,
    eigenvalues raised to ``min_curvature``; fixed atoms keep :data:`DIAGONAL_GUESS`.
    ``None`` (no seed) when ``atoms`` has constraints other than ``FixAtoms`` or more than
    :data:`MAX_FREE_ATOMS` free atoms."""
    try:
        free = np.flatnonzero(~fixed_mask(atoms))
    except InputError:
        return None
    if len(free) > MAX_FREE_ATOMS:
        return None
    hessian = np.eye(3 * len(atoms)) * DIAGONAL_GUESS
    if not len(free):
        return hessian
    block = force_constants(atoms, calculator, free, delta)
    coords = (3 * free[:, None] + np.arange(3)).ravel()
    values, vectors = np.linalg.eigh(block)
    hessian[np.ix_(coords, coords)] = (vectors * np.maximum(values, min_curvature)) @ vectors.T
    return hessian


def seed_hessian(optimizer, hessian: np.ndarray) -> bool:
    """Make ``hessian`` the starting Hessian of an ASE BFGS ``optimizer`` (its ``H0``) when
    the sizes match; False (nothing done) for other optimizers."""
    current = getattr(optimizer, "H0", None)
    if current is None or np.shape(current) != np.shape(hessian):
        return False
    optimizer.H0 = np.array(hessian, dtype=float)
    return True
