"""Anomalies of a relaxed adsorbate + slab, as AdsorbML (Lan et al., npj Comput. Mater. 2023)
discards them before taking the lowest minimum. Distances in Å.

* ``desorbed``: no adsorbate atom is bonded to a slab atom;
* ``dissociated``: a bond inside the adsorbate broke (or formed);
* ``surface_changed``: a bond between slab atoms broke or formed (reconstruction);
* ``intercalated``: an adsorbate atom lies below the top slab layer.

Bonds: distance < ``mult`` x the sum of covalent radii (``natural_cutoffs``), minimum image
in the periodic directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ..slab import layer_indices, surface_heights

DESORBED, DISSOCIATED = "desorbed", "dissociated"
SURFACE_CHANGED, INTERCALATED = "surface_changed", "intercalated"
ANOMALIES = (DESORBED, DISSOCIATED, SURFACE_CHANGED, INTERCALATED)
ADSORBATE_SLAB_MULT = 1.5  # x covalent radii: adsorbate-slab bonds are long (physisorbed H2O)
BOND_MULT = 1.2  # x covalent radii, bonds inside the adsorbate and inside the slab


def bond_set(atoms: Atoms, mult: float) -> set[tuple[int, int]]:
    """Bonded pairs ``(i, j)``, ``i < j``, of ``atoms`` (periodic images included)."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=mult))
    return {(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True) if a < b}


def anomalies(initial: Atoms, final: Atoms, adsorbate: Sequence[int]) -> list[str]:
    """The anomalies (:data:`ANOMALIES` names, empty: a valid minimum) of ``final``, the
    relaxed ``initial``; ``adsorbate``: indices of the adsorbate's atoms in both."""
    ads = set(int(k) for k in adsorbate)
    slab = [k for k in range(len(final)) if k not in ads]
    found = []

    def split(atoms: Atoms, mult: float) -> tuple[set, set, set]:
        pairs = bond_set(atoms, mult)
        inside = {p for p in pairs if p[0] in ads and p[1] in ads}
        surface = {p for p in pairs if p[0] not in ads and p[1] not in ads}
        return inside, surface, pairs - inside - surface

    ads_bonds0, slab_bonds0, _ = split(initial, BOND_MULT)
    ads_bonds, slab_bonds, _ = split(final, BOND_MULT)
    contacts = split(final, ADSORBATE_SLAB_MULT)[2]
    if not contacts:
        found.append(DESORBED)
    if ads_bonds != ads_bonds0:
        found.append(DISSOCIATED)
    if slab_bonds != slab_bonds0:
        found.append(SURFACE_CHANGED)
    heights = surface_heights(final)
    layers = layer_indices(surface_heights(initial)[slab])
    top = heights[np.asarray(slab)[layers == layers.max()]].mean()
    below = layers.max() > 0 and heights[sorted(ads)].min() < top - 0.5
    if below:
        found.append(INTERCALATED)
    return found
