"""Does a relaxation land in the reference's minimum? Energies in eV, distances in Å.

A relaxed structure (by a model) is judged against the reference method's own minimum from
the same start: the reference's energy at the model's minimum minus its energy at its own
minimum (per atom for molecules, :func:`delta_e_mev`), the same bonding
(:func:`bonds`, :func:`bond_changes`) and, on a slab, the same site. A minimum *lower* than
the reference's is no failure: the comparison is signed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

BOND_MULT = 1.2  # x covalent radii (ase.neighborlist.natural_cutoffs)
ENERGY_TOLERANCE = 0.05  # eV, same minimum on a slab (adsorption energies)
THRESHOLD_MEV = 1.0  # meV/atom, same minimum of a molecule


def bonds(numbers: np.ndarray, positions: np.ndarray,
          mult: float = BOND_MULT) -> frozenset[tuple[int, int]]:
    """Bonded pairs ``(i, j)``, ``i < j``, of a non-periodic structure (``numbers`` ``(n,)``,
    ``positions`` ``(n, 3)`` Å): distance < ``mult`` x (r_cov(i) + r_cov(j))."""
    from ase.neighborlist import natural_cutoffs

    radii = np.asarray(natural_cutoffs(Atoms(numbers=numbers), mult=mult))
    d = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    i, j = np.nonzero(np.triu(d < radii[:, None] + radii[None, :], k=1))
    return frozenset(zip(i.tolist(), j.tolist(), strict=True))


def bond_changes(a: frozenset, b: frozenset) -> int:
    """Number of bonds present in exactly one of ``a`` and ``b``."""
    return len(a ^ b)


def delta_e_mev(energy: float, reference: float, n_atoms: int) -> float:
    """``(energy - reference) / n_atoms`` in meV/atom (energies in eV)."""
    return 1000.0 * (energy - reference) / n_atoms


def passes(delta_mev: float | None, bonds_kept: bool, threshold: float = THRESHOLD_MEV) -> bool:
    """A molecule's relaxation lands: ``delta_mev <= threshold`` (signed, meV/atom) and the
    bonding is unchanged."""
    return (delta_mev is not None and bool(np.isfinite(delta_mev))
            and delta_mev <= threshold and bonds_kept)


@dataclass(frozen=True)
class Landing:
    """A relaxation on a slab judged against the reference's minimum.

    ``delta``: reference energy at the model's minimum - at its own (eV, signed);
    ``same_site`` / ``bonds_kept``: site (:mod:`tdn_calc.evaluation.sites` names) and
    bonding kept; ``tolerance`` eV.
    """

    delta: float
    same_site: bool
    bonds_kept: bool
    tolerance: float = ENERGY_TOLERANCE

    @property
    def same_minimum(self) -> bool:
        """Same state (bonds) and site, energy within ``tolerance`` of the reference's."""
        return self.same_site and self.bonds_kept and abs(self.delta) <= self.tolerance

    @property
    def at_or_below(self) -> bool:
        """AdsorbML's success: bonds kept and ``delta <= tolerance`` (a lower minimum counts)."""
        return self.bonds_kept and self.delta <= self.tolerance

    @property
    def same_site_or_lower(self) -> bool:
        """Same site, or one the reference itself puts at least ``tolerance`` lower than its
        own minimum (whose relaxation then stopped on a higher stationary point)."""
        return self.same_site or self.delta <= -self.tolerance


def landing(energy_at_model_min: float, reference_min_energy: float, model_site: str,
            reference_site: str, bonds_kept: bool = True,
            tolerance: float = ENERGY_TOLERANCE) -> Landing:
    """:class:`Landing` from the reference's energies (eV) at both minima and both sites."""
    return Landing(energy_at_model_min - reference_min_energy, model_site == reference_site,
                   bonds_kept, tolerance)
