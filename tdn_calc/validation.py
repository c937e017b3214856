"""Checks on a structure before it reaches a model.

Each check raises an :class:`~tdn_calc.errors.InputError` (or its subclass
:class:`~tdn_calc.errors.UnsupportedElementError`) whose message names the offending atom,
element or lattice vector and says what is allowed. Shared by the ASE calculator and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase.data import chemical_symbols

from .cell import AXES, check_cell, normalize_pbc
from .errors import InputError, UnsupportedElementError

#: Default smallest allowed interatomic distance, Å.
DEFAULT_MIN_DISTANCE = 0.3
_MIN_SEARCH_CUTOFF = 2.0  # Å, smallest cutoff used for the min-distance neighbour search


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def check_not_empty(numbers: np.ndarray) -> None:
    """Raise if the structure has no atoms."""
    if len(numbers) == 0:
        raise InputError("the structure has no atoms; give at least one atom")


def check_elements(numbers: np.ndarray, supported: Iterable[int]) -> None:
    """Raise :class:`UnsupportedElementError` naming the first atom whose element is not
    in ``supported`` (atomic numbers)."""
    supported_set = {int(z) for z in supported}
    numbers = np.asarray(numbers)
    bad = np.flatnonzero(~np.isin(numbers, np.fromiter(supported_set, dtype=np.int64)))
    if bad.size:
        k = bad[0]
        z = int(numbers[k])
        others = sorted({_symbol(int(numbers[m])) for m in bad})
        allowed = " ".join(_symbol(s) for s in sorted(supported_set))
        raise UnsupportedElementError(
            f"element {_symbol(z)} (atom {k}) is not supported by this model "
            f"(unsupported in this structure: {', '.join(others)}; supported: {allowed})"
        )


def check_finite_positions(positions: np.ndarray, numbers: np.ndarray | None = None) -> None:
    """Raise naming the first atom with a NaN or infinite coordinate (positions ``[n, 3]``, Å)."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise InputError(f"positions must have shape [n_atoms, 3], got {list(pos.shape)}")
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        k = int(bad[0])
        label = f"atom {k}" + (f" ({_symbol(int(numbers[k]))})" if numbers is not None else "")
        raise InputError(
            f"{label} has a non-finite position {pos[k].tolist()}; "
            f"{bad.size} atom(s) have NaN/inf coordinates"
        )


def check_min_distance(
    positions: np.ndarray,
    cell: np.ndarray | None,
    pbc: np.ndarray,
    numbers: np.ndarray,
    min_distance: float = DEFAULT_MIN_DISTANCE,
) -> None:
    """Raise naming the closest pair of atoms if any two (periodic images included) are
    closer than ``min_distance`` Å. ``min_distance <= 0`` disables the check."""
    if min_distance <= 0 or len(numbers) == 0:
        return
    pbc = normalize_pbc(pbc)
    check_cell(cell, pbc)
    check_lattice_lengths(cell, pbc, min_distance)
    from .graph import neighbor_list_with_distances  # imports torch: only when needed

    # a cutoff below ~2 Å makes vesin's cell list very fine and slow: search wider, filter
    i, j, _, d = neighbor_list_with_distances(
        positions, cell, pbc, max(min_distance, _MIN_SEARCH_CUTOFF)
    )
    check_pair_distances(i, j, d, numbers, min_distance)


def check_lattice_lengths(cell: np.ndarray | None, pbc: np.ndarray, min_distance: float) -> None:
    """Raise if a periodic lattice vector is shorter than ``min_distance`` Å (every atom would
    be that close to its own image); run before any neighbour list, which would list millions
    of images."""
    for axis in np.flatnonzero(pbc):
        length = float(np.linalg.norm(np.asarray(cell, dtype=np.float64)[axis]))
        if length < min_distance:
            raise InputError(
                f"lattice vector {AXES[axis]} is {length:.3g} Å long, so every atom is that "
                f"close to its own periodic image (minimum distance {min_distance} Å); "
                "check the cell (units?) or set pbc False along it"
            )


def check_pair_distances(
    i: np.ndarray, j: np.ndarray, d: np.ndarray, numbers: np.ndarray, min_distance: float
) -> None:
    """Raise naming the closest pair if any neighbour-list distance ``d`` (edges ``i -> j``,
    a list complete up to at least ``min_distance`` Å) is below ``min_distance`` Å."""
    if min_distance <= 0 or not d.size or d.min() >= min_distance:
        return
    k = int(np.argmin(d))
    a, b = int(i[k]), int(j[k])
    what = "a periodic image of itself" if a == b else f"atom {b} ({_symbol(int(numbers[b]))})"
    raise InputError(
        f"atom {a} ({_symbol(int(numbers[a]))}) is {d[k]:.3f} Å from {what}, closer than "
        f"the minimum distance {min_distance} Å; fix the structure or lower min_distance"
    )


def validate_structure(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray | None,
    pbc: bool | Iterable[bool],
    *,
    supported_elements: Iterable[int] | None = None,
    min_distance: float = DEFAULT_MIN_DISTANCE,
) -> None:
    """Run every check: not empty, supported elements, finite positions, valid cell for the
    periodic directions, and no two atoms closer than ``min_distance`` Å."""
    numbers = np.asarray(numbers)
    pbc = normalize_pbc(pbc)
    check_not_empty(numbers)
    if supported_elements is not None:
        check_elements(numbers, supported_elements)
    check_finite_positions(positions, numbers)
    check_cell(cell, pbc)
    check_min_distance(positions, cell, pbc, numbers, min_distance)
