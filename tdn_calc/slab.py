"""Slab helpers: fixing bottom layers and sanity checks of periodicity against vacuum."""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from .errors import InputError

#: A vacuum gap (Å) above this along a periodic direction triggers a warning.
VACUUM_WARNING = 6.0
_AXES = "abc"


def surface_heights(atoms: Atoms) -> np.ndarray:
    """``[n_atoms]`` heights (Å) along the surface normal: the direction of the only
    non-periodic lattice vector, else the normal of the ``a x b`` plane (for fully periodic
    slabs), else Cartesian z."""
    cell = atoms.cell.array
    non_periodic = np.flatnonzero(~atoms.pbc)
    normal = np.array([0.0, 0.0, 1.0])
    if len(non_periodic) == 1:
        a, b = (cell[k] for k in range(3) if k != non_periodic[0])
        normal = np.cross(a, b)
    elif atoms.pbc.all():
        normal = np.cross(cell[0], cell[1])
    norm = np.linalg.norm(normal)
    normal = normal / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])
    if np.dot(normal, [0, 0, 1]) < 0:
        normal = -normal
    return atoms.positions @ normal


def layer_indices(heights: np.ndarray, tolerance: float = 0.5) -> np.ndarray:
    """``[n_atoms]`` layer number of each atom (0 = lowest); atoms within ``tolerance`` Å of
    the previous one in height share a layer."""
    order = np.argsort(heights)
    layers = np.zeros(len(heights), dtype=int)
    current = 0
    for prev, k in itertools.pairwise(order):
        if heights[k] - heights[prev] > tolerance:
            current += 1
        layers[k] = current
    return layers


def fixed_mask(atoms: Atoms) -> np.ndarray:
    """``[n_atoms]`` bool: atoms held by a ``FixAtoms`` constraint (other constraints are
    ignored)."""
    mask = np.zeros(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            mask[c.get_indices()] = True
    return mask


def _add_fixed(atoms: Atoms, mask: np.ndarray) -> int:
    """Add ``FixAtoms`` for ``mask`` (kept with the existing constraints); returns how many."""
    if mask.any():
        atoms.set_constraint([*atoms.constraints, FixAtoms(mask=mask)])
    return int(mask.sum())


def fix_bottom_layers(atoms: Atoms, n_layers: int, tolerance: float = 0.5) -> int:
    """Fix (``FixAtoms``) the ``n_layers`` lowest layers, in place; returns the number of
    fixed atoms. Layers are found along the surface normal (:func:`surface_heights`)."""
    if n_layers < 0:
        raise InputError(f"the number of layers to fix must be >= 0, got {n_layers}")
    if n_layers == 0:
        return 0
    layers = layer_indices(surface_heights(atoms), tolerance)
    if n_layers > layers.max():
        raise InputError(
            f"cannot fix {n_layers} bottom layers: the structure has {layers.max() + 1} "
            f"layers (within {tolerance} Å); fixing all would leave nothing to relax"
        )
    return _add_fixed(atoms, layers < n_layers)


def fix_below(atoms: Atoms, z: float) -> int:
    """Fix every atom with Cartesian z below ``z`` Å, in place; returns how many."""
    return _add_fixed(atoms, atoms.positions[:, 2] < z)


def vacuum_gaps(atoms: Atoms) -> dict[int, float]:
    """For each periodic direction, the widest empty gap (Å) between atomic planes
    perpendicular to it (measured along the plane normal, across the periodic boundary)."""
    cell = atoms.cell.array
    volume = abs(np.linalg.det(cell))
    if volume < 1e-9 or len(atoms) == 0:
        return {}
    frac = atoms.get_scaled_positions(wrap=True)
    gaps = {}
    for k in np.flatnonzero(atoms.pbc):
        a, b = (cell[m] for m in range(3) if m != k)
        height = volume / np.linalg.norm(np.cross(a, b))
        s = np.sort(frac[:, k])
        spacing = np.diff(np.concatenate([s, [s[0] + 1.0]]))
        gaps[int(k)] = float(spacing.max() * height)
    return gaps


def pbc_messages(atoms: Atoms, cell_relax: bool = False) -> list[str]:
    """Warnings about periodicity that is probably wrong (empty list when all looks fine).

    Raises:
        InputError: pbc is True along a direction without a lattice vector.
    """
    cell = atoms.cell.array
    for k in np.flatnonzero(atoms.pbc):
        if np.linalg.norm(cell[k]) < 1e-9:
            raise InputError(
                f"pbc is True along {_AXES[k]} but there is no lattice vector {_AXES[k]} "
                f"(cell {cell.tolist()}); give a cell or set pbc False along {_AXES[k]}"
            )
    messages = []
    gaps = {k: g for k, g in vacuum_gaps(atoms).items() if g > VACUUM_WARNING}
    if gaps:
        where = ", ".join(f"{_AXES[k]} ({g:.1f} Å)" for k, g in gaps.items())
        suggestion = [k not in gaps and bool(p) for k, p in enumerate(atoms.pbc)]
        messages.append(
            f"pbc is True along {where} with a vacuum gap wider than {VACUUM_WARNING} Å; "
            f"if this is a slab or molecule, set pbc={suggestion} (e.g. in the extxyz "
            "header) so that the vacuum is not treated as periodic"
            + ("; a cell relaxation would also shrink the vacuum" if cell_relax else "")
        )
    return messages
