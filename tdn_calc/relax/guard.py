"""Divergence guard shared by :func:`tdn_calc.relax.relax` and the batched relaxation.

A relaxation is stopped, and reported as not converged with a ``reason``, as soon as one of
these holds (all documented in ``docs/cli.md``):

* the energy, a force or a position is NaN or infinite;
* the energy fell more than ``max_energy_drop`` eV *per atom* below the starting energy
  (no physical relaxation gains 5 eV/atom; a model extrapolating into a hole does);
* an atom moved more than ``max_displacement`` Å from its starting position (atoms flying
  apart or falling through a slab);
* two atoms (periodic images included) are closer than ``min_distance`` Å.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import DEFAULT_MIN_DISTANCE


@dataclass(frozen=True)
class DivergenceGuard:
    """Thresholds of the divergence guard (set a threshold to ``inf``/0 to disable it).

    Attributes:
        max_energy_drop: largest allowed ``(E_start - E) / n_atoms``, eV/atom.
        max_displacement: largest allowed displacement of one atom from its start, Å.
        min_distance: smallest allowed interatomic distance, Å.
    """

    max_energy_drop: float = 5.0
    max_displacement: float = 10.0
    min_distance: float = DEFAULT_MIN_DISTANCE

    def check(
        self,
        energy: float,
        start_energy: float,
        n_atoms: int,
        forces: np.ndarray,
        displacement: np.ndarray,
        min_pair_distance: float | None,
    ) -> str | None:
        """The reason to stop, or ``None``.

        Args:
            energy: current energy, eV.
            start_energy: energy at step 0, eV.
            n_atoms: number of atoms.
            forces: ``[n_atoms, 3]`` eV/Å.
            displacement: ``[n_atoms]`` distance of each atom from its start, Å.
            min_pair_distance: shortest interatomic distance, Å (``None``: not known/no pair).
        """
        if not np.isfinite(energy) or not np.isfinite(forces).all():
            return "diverged: non-finite energy or forces"
        if not np.isfinite(displacement).all():
            return "diverged: non-finite positions"
        drop = (start_energy - energy) / max(n_atoms, 1)
        if drop > self.max_energy_drop:
            return (
                f"diverged: energy fell {drop:.2f} eV/atom below its start "
                f"(limit {self.max_energy_drop} eV/atom)"
            )
        if displacement.size and float(displacement.max()) > self.max_displacement:
            k = int(np.argmax(displacement))
            return (
                f"diverged: atom {k} moved {float(displacement[k]):.1f} Å from its start "
                f"(limit {self.max_displacement} Å)"
            )
        if min_pair_distance is not None and min_pair_distance < self.min_distance:
            return (
                f"diverged: two atoms are {min_pair_distance:.3f} Å apart "
                f"(limit {self.min_distance} Å)"
            )
        return None


#: The guard used by default.
DEFAULT_GUARD = DivergenceGuard()


def min_pair_distance(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> float | None:
    """Shortest distance (Å) between two atoms closer than ``cutoff`` (Å), or ``None``
    (``positions``: ``[n_atoms, 3]`` Å; ``cell``: ``[3, 3]`` Å, rows are lattice vectors;
    ``pbc``: ``[3]`` bool)."""
    from ..graph import neighbor_list_with_distances

    if cutoff <= 0:
        return None
    _, _, _, d = neighbor_list_with_distances(positions, cell, pbc, cutoff)
    return float(d.min()) if d.size else None
