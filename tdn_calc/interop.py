"""pymatgen interoperability: ``Structure``/``Molecule`` <-> ``ase.Atoms``.

One line gives the energy of a pymatgen object::

    energy = TDNCalculator("model-name").get_potential_energy(to_atoms(structure))

or everything at once with :func:`predict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from .errors import InputError

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator
    from pymatgen.core import IStructure, Molecule, Structure


def to_atoms(obj: Structure | IStructure | Molecule | Atoms) -> Atoms:
    """A new ``ase.Atoms`` from a pymatgen ``Structure`` (periodic along its lattice's
    ``pbc``) or ``Molecule`` (no cell, not periodic); an ``Atoms`` is copied."""
    if isinstance(obj, Atoms):
        return obj.copy()
    from pymatgen.core import IMolecule, IStructure

    if isinstance(obj, IStructure):
        if not obj.is_ordered:
            raise InputError(
                "the Structure is disordered (partial occupancies); order it first, e.g. "
                "with pymatgen's OrderDisorderedStructureTransformation"
            )
        return Atoms(
            numbers=[site.specie.Z for site in obj],
            positions=obj.cart_coords,
            cell=obj.lattice.matrix,
            pbc=obj.lattice.pbc,
        )
    if isinstance(obj, IMolecule):
        return Atoms(numbers=[site.specie.Z for site in obj], positions=obj.cart_coords)
    raise InputError(
        f"cannot convert {type(obj).__name__}; give a pymatgen Structure or Molecule, or ase.Atoms"
    )


def to_pymatgen(atoms: Atoms) -> Structure | Molecule:
    """A pymatgen ``Structure`` when ``atoms`` is periodic in any direction (keeping ``pbc``),
    else a ``Molecule``."""
    from pymatgen.core import Lattice, Molecule, Structure

    if atoms.pbc.any():
        if abs(atoms.cell.volume) < 1e-9:
            raise InputError(
                f"pymatgen needs a cell with non-zero volume, got {atoms.cell.tolist()} Å; "
                "give the non-periodic directions a lattice vector (e.g. atoms.center(vacuum=...))"
            )
        lattice = Lattice(atoms.cell.array, pbc=tuple(bool(p) for p in atoms.pbc))
        return Structure(
            lattice, atoms.numbers.tolist(), atoms.positions, coords_are_cartesian=True
        )
    return Molecule(atoms.numbers.tolist(), atoms.positions)


def predict(obj: Structure | Molecule | Atoms, calc: Calculator) -> dict[str, Any]:
    """Energy (eV), forces ``[n_atoms, 3]`` (eV/Å) and, for 3D-periodic cells, Voigt stress
    (eV/Å^3) of a pymatgen object or ``Atoms`` with ``calc`` (e.g. a TDNCalculator)."""
    atoms = to_atoms(obj)
    atoms.calc = calc
    out: dict[str, Any] = {
        "energy": float(atoms.get_potential_energy()),
        "forces": np.asarray(atoms.get_forces()),
    }
    if atoms.pbc.all():
        out["stress"] = np.asarray(atoms.get_stress())
    return out
