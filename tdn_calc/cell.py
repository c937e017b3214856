"""Checks on the periodicity and lattice vectors of a structure.

The lowest layer of the input checks: the neighbour list (:mod:`tdn_calc.graph`) and the
structure checks (:mod:`tdn_calc.validation`) both use them. Errors are
:class:`~tdn_calc.errors.InputError` naming the lattice vector and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import InputError

#: Names of the lattice vectors (rows of the cell), in order.
AXES = "abc"
# A periodic lattice vector shorter than this (Å), or periodic vectors spanning less than
# this fraction of the volume (area) of orthogonal vectors of the same lengths, make the
# cell degenerate.
_MIN_LENGTH = 1e-6
_MIN_RELATIVE_MEASURE = 1e-6


def normalize_pbc(pbc: bool | Iterable[bool] | np.ndarray) -> np.ndarray:
    """``pbc`` as a ``[3]`` bool array (a single bool applies to all three directions)."""
    arr = np.asarray(pbc, dtype=bool).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise InputError(f"pbc must be a bool or three bools, got {pbc!r}")
    return arr


def check_cell(cell: np.ndarray | None, pbc: np.ndarray) -> None:
    """Raise if a periodic direction has no valid lattice vector.

    ``cell``: ``[3, 3]`` rows are lattice vectors, Å. For every periodic direction the lattice
    vector must be finite and non-zero, and the periodic vectors must span a non-degenerate
    volume (3D), area (2D) or length (1D).
    """
    pbc = normalize_pbc(pbc)
    if not pbc.any():
        return
    if cell is None:
        raise InputError(f"pbc={pbc.tolist()} but no cell was given; set a cell or pbc=False")
    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise InputError(f"cell must have shape [3, 3], got {list(cell.shape)}")
    if not np.isfinite(cell).all():
        raise InputError(f"cell has non-finite entries: {cell.tolist()}")
    vectors = cell[pbc]
    for axis in np.flatnonzero(pbc):
        if np.linalg.norm(cell[axis]) < _MIN_LENGTH:
            raise InputError(
                f"pbc is True along {AXES[axis]} but lattice vector {AXES[axis]} is zero "
                f"({cell[axis].tolist()} Å); give a cell or set pbc False along {AXES[axis]}"
            )
    # volume (3D), area (2D) or length (1D) relative to that of orthogonal vectors
    measure = float(np.sqrt(abs(np.linalg.det(vectors @ vectors.T))))
    if measure < _MIN_RELATIVE_MEASURE * float(np.prod(np.linalg.norm(vectors, axis=1))):
        names = ", ".join(AXES[a] for a in np.flatnonzero(pbc))
        raise InputError(
            f"the periodic lattice vectors ({names}) are linearly dependent (degenerate cell "
            f"{cell.tolist()} Å); give a cell with non-zero volume in the periodic directions"
        )
