"""The adsorbate library of the coverage recipes: 25 intermediates of H/C/N/O chemistry,
each with its binding atom, a start geometry, a family and its gas-phase spin.

A template has its binding (anchor) atom at index 0 at the origin and the rest above it
(+z), so that placed on a surface the anchor is the atom nearest the metal. CH4 only
physisorbs: its anchor is the H pointing down. HCOO binds through both O (bidentate): the
anchor is one O, the other lies at the same height 2.2 Å away, so it bridges two metal
atoms. Geometries are rough (bonds within ~0.05 Å of typical values); the teacher relaxes
them. Placement on a slab (:func:`place_adsorbate`) puts the anchor ``bond`` Å from its
nearest metal atom over a given in-plane point, whatever the facet. Lengths in Å.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import get_distances

from ...errors import InputError


@dataclass(frozen=True)
class Adsorbate:
    """``positions`` relative to the anchor (index 0); ``bond`` the start anchor–metal
    distance; ``spin`` the unpaired electrons of the gas-phase species; ``max_tilt`` the
    largest random tilt (degrees) that keeps the anchor lowest."""

    name: str
    symbols: str
    positions: tuple[tuple[float, float, float], ...]
    bond: float
    family: str
    spin: int
    max_tilt: float = 10.0

    @property
    def binding_element(self) -> str:
        return self.template().get_chemical_symbols()[0]

    def template(self) -> Atoms:
        return Atoms(self.symbols, positions=np.array(self.positions, dtype=float))


def _ring(n: int, r: float, z: float, phase: float = 0.0) -> list[tuple[float, float, float]]:
    """``n`` points on a horizontal circle of radius ``r`` at height ``z``."""
    return [(r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n),
             z) for k in range(n)]


_O = (0.0, 0.0, 0.0)
_LIBRARY = (
    Adsorbate("H", "H", (_O,), 1.75, "H", 1),
    Adsorbate("O", "O", (_O,), 2.00, "O", 2),
    Adsorbate("OH", "OH", (_O, (0, 0, 0.97)), 2.05, "O", 1),
    Adsorbate("H2O", "OH2", (_O, (0.48, 0.76, 0.20), (0.48, -0.76, 0.20)), 2.30, "O", 0),
    Adsorbate("OOH", "OOH", (_O, (0.70, 0, 1.27), (1.60, 0, 1.55)), 2.05, "O", 1),
    Adsorbate("O2", "OO", (_O, (0.64, 0, 1.11)), 2.05, "O", 2),
    Adsorbate("C", "C", (_O,), 1.90, "C", 2),
    Adsorbate("CH", "CH", (_O, (0, 0, 1.10)), 1.90, "C", 1),
    Adsorbate("CH2", "CH2", (_O, (0.90, 0, 0.62), (-0.90, 0, 0.62)), 1.95, "C", 2),
    Adsorbate("CH3", "CH3", (_O, *_ring(3, 1.03, 0.36)), 2.10, "C", 1),
    Adsorbate("CH4", "HCH3", (_O, (0, 0, 1.09), *_ring(3, 1.03, 1.45)), 2.60, "C", 0),
    Adsorbate("CO", "CO", (_O, (0, 0, 1.15)), 1.90, "CO", 0),
    Adsorbate("CHO", "COH", (_O, (1.00, 0, 0.72), (-0.90, 0, 0.62)), 1.95, "CO", 1),
    Adsorbate("COH", "COH", (_O, (0, 0, 1.33), (0.90, 0, 1.70)), 1.90, "CO", 1),
    Adsorbate("COOH", "COOH", (_O, (1.05, 0, 0.65), (-1.10, 0, 0.75), (-1.10, 0, 1.72)),
              2.00, "CO2", 1),
    Adsorbate("HCOO", "OCOH", (_O, (1.10, 0, 0.75), (2.20, 0, 0), (1.10, 0, 1.85)),
              2.10, "CO2", 1, max_tilt=0.0),
    Adsorbate("CO2", "COO", (_O, (1.07, 0, 0.55), (-1.07, 0, 0.55)), 2.20, "CO2", 0),
    Adsorbate("CH3O", "OCH3", (_O, (0, 0, 1.42), *_ring(3, 1.03, 1.78)), 2.05, "CO2", 1),
    Adsorbate("N", "N", (_O,), 1.95, "N", 3),
    Adsorbate("NH", "NH", (_O, (0, 0, 1.03)), 1.95, "N", 2),
    Adsorbate("NH2", "NH2", (_O, (0.82, 0, 0.60), (-0.82, 0, 0.60)), 2.00, "N", 1),
    Adsorbate("NH3", "NH3", (_O, *_ring(3, 0.94, 0.38)), 2.15, "N", 0),
    Adsorbate("NO", "NO", (_O, (0, 0, 1.17)), 1.90, "NO", 1),
    Adsorbate("N2", "NN", (_O, (0, 0, 1.12)), 2.00, "NO", 0),
    Adsorbate("NNH", "NNH", (_O, (0, 0, 1.22), (0.95, 0, 1.60)), 1.95, "NO", 1),
)
ADSORBATES = {a.name: a for a in _LIBRARY}
ADSORBATE_NAMES = tuple(ADSORBATES)
FAMILIES = tuple(dict.fromkeys(a.family for a in _LIBRARY))  # H O C CO CO2 N NO
# closed- and open-shell gas-phase references: H2 plus every molecular adsorbate
GAS_SPECIES = ("H2", *(a.name for a in _LIBRARY if len(a.symbols) > 1))
_H2 = Adsorbate("H2", "HH", (_O, (0, 0, 0.74)), 0.0, "H", 0)


def get_adsorbate(name: str) -> Adsorbate:
    if name == "H2":
        return _H2
    try:
        return ADSORBATES[name]
    except KeyError:
        raise InputError(f"unknown adsorbate {name!r}; known: {', '.join(ADSORBATES)}") from None


def oriented(name: str, rng: np.random.Generator, max_tilt: float | None = None) -> Atoms:
    """The template of ``name`` turned by a random angle about z and tilted by at most
    ``max_tilt`` degrees (the adsorbate's own limit when None); anchor stays at the origin."""
    ads = get_adsorbate(name)
    atoms = ads.template()
    if len(atoms) > 1:
        tilt = ads.max_tilt if max_tilt is None else min(max_tilt, ads.max_tilt)
        phi = rng.uniform(0.0, 2 * math.pi)
        if tilt > 0:
            atoms.rotate(rng.uniform(0.0, tilt), (math.cos(phi), math.sin(phi), 0.0),
                         center=(0, 0, 0))
        atoms.rotate(rng.uniform(0.0, 360.0), "z", center=(0, 0, 0))
    return atoms


def anchor_height(xy: np.ndarray, metal: Atoms, bond: float) -> float:
    """Lowest z of a point over ``xy`` that is at least ``bond`` from every metal atom
    (in-plane periodic images included)."""
    flat = metal.positions.copy()
    flat[:, 2] = 0.0
    _, lateral = get_distances([[xy[0], xy[1], 0.0]], flat, cell=metal.cell, pbc=[1, 1, 0])
    lateral = lateral[0]
    near = lateral < bond
    z_top = metal.positions[:, 2].max()
    if not near.any():  # a wide hollow: sit a little above the highest atom around
        return float(z_top + 0.5)
    return float(np.max(metal.positions[near, 2] + np.sqrt(bond**2 - lateral[near] ** 2)))


def place_adsorbate(slab: Atoms, n_metal: int, name: str, xy: np.ndarray,
                    rng: np.random.Generator, *, min_other: float = 1.4,
                    max_tilt: float | None = None) -> Atoms:
    """Append adsorbate ``name`` to ``slab`` with its anchor over ``xy``, ``bond`` Å from
    the nearest of the first ``n_metal`` atoms; lifted until no other adsorbate atom is
    closer than ``min_other`` Å to a metal atom. Returns the placed adsorbate."""
    return place_template(slab, n_metal, oriented(name, rng, max_tilt), xy,
                          get_adsorbate(name).bond, min_other=min_other)


def place_template(slab: Atoms, n_metal: int, ads: Atoms, xy: np.ndarray, bond: float, *,
                   min_other: float = 1.4) -> Atoms:
    """Append the oriented template ``ads`` (anchor at index 0, at the origin) to ``slab``
    (in place) with its anchor over the in-plane point ``xy`` (Å), ``bond`` Å from the
    nearest of the first ``n_metal`` atoms, lifted in 0.1 Å steps until no other atom of
    ``ads`` is closer than ``min_other`` Å to a metal atom. Returns the placed copy; any
    molecule can be placed this way, library adsorbate or not."""
    ads = ads.copy()
    metal = slab[:n_metal]
    z = anchor_height(np.asarray(xy, dtype=float), metal, bond)
    ads.translate([xy[0], xy[1], z])
    for _ in range(40):
        if len(ads) == 1:
            break
        _, d = get_distances(ads.positions[1:], metal.positions, cell=slab.cell,
                             pbc=[1, 1, 0])
        if d.min() >= min_other:
            break
        ads.translate([0.0, 0.0, 0.1])
    slab.extend(ads)
    return ads


def min_metal_distance(atoms: Atoms, n_metal: int) -> np.ndarray:
    """``[n_atoms - n_metal]``: each non-metal atom's distance to its nearest metal atom."""
    _, d = get_distances(atoms.positions[n_metal:], atoms.positions[:n_metal],
                         cell=atoms.cell, pbc=[1, 1, 0])
    return d.min(axis=1)
