"""One labelled structure (a *frame*) as plain numpy arrays, the unit the HDF5 writer stores.

Units: positions Å, energy eV, forces eV/Å, stress eV/Å^3 (ASE sign convention,
``stress = (1/V) dE/dstrain``, full ``[3, 3]`` tensor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..errors import InputError


class FrameKind(IntEnum):
    """What produced a frame; stored per frame as ``frame_kind`` (int8)."""

    RELAX = 0  # a step of a geometry optimisation (the first is the start, the last the minimum)
    RATTLED = 1  # the minimum plus Gaussian noise on the positions
    STRAINED = 2  # the minimum uniformly scaled about its centroid (or a strained cell)
    BAD_START = 3  # a step of a relaxation started from a strongly perturbed geometry
    MD = 4  # a molecular-dynamics snapshot
    IMPORTED = 5  # imported from a file that does not say how it was made
    DISPLACED = 6  # a relaxed adsorbate moved rigidly over its slab (site/height/tilt)
    # PubChemQCR optimisation stages
    PM3 = 10
    HF = 11
    DFT_1ST = 12
    DFT_2ND = 13


def kind_name(kind: int) -> str:
    """Lower-case name of a stored ``frame_kind`` (``"relax"``, ...); unknown codes as digits."""
    try:
        return FrameKind(int(kind)).name.lower()
    except ValueError:
        return str(int(kind))


@dataclass
class Frame:
    """A labelled structure.

    Attributes:
        atomic_numbers: ``[n_atoms]`` int.
        positions: ``[n_atoms, 3]`` Å.
        energy: total energy, eV.
        forces: ``[n_atoms, 3]`` eV/Å.
        cell: ``[3, 3]`` lattice vectors as rows, Å (zeros when non-periodic).
        pbc: ``[3]`` bool.
        stress: ``[3, 3]`` eV/Å^3 or None when not labelled.
        kind: a :class:`FrameKind`.
        step: position of the frame within how it was generated (optimiser step, sample number).
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    energy: float
    forces: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    stress: np.ndarray | None = None
    kind: int = FrameKind.RELAX
    step: int = 0

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        n = self.atomic_numbers.shape[0]
        if n == 0:
            raise InputError("a frame needs at least one atom; got 0")
        self.positions = _shaped(self.positions, (n, 3), "positions")
        self.forces = _shaped(self.forces, (n, 3), "forces")
        self.cell = _shaped(self.cell, (3, 3), "cell")
        self.pbc = np.asarray(self.pbc, dtype=bool).reshape(3)
        self.energy = float(self.energy)
        if self.stress is not None:
            s = np.asarray(self.stress, dtype=np.float64)
            if s.shape == (6,):  # Voigt xx yy zz yz xz xy (ASE order)
                xx, yy, zz, yz, xz, xy = s
                s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
            self.stress = _shaped(s, (3, 3), "stress")
        if np.any(self.atomic_numbers < 1) or np.any(self.atomic_numbers > 118):
            raise InputError(
                f"atomic numbers must be in 1..118; got {sorted(set(self.atomic_numbers))}"
            )
        values = [self.positions, self.forces, np.array([self.energy])]
        if self.stress is not None:
            values.append(self.stress)
        if not all(np.isfinite(v).all() for v in values):
            raise InputError("a frame has non-finite positions, energy, forces or stress")

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @classmethod
    def from_atoms(cls, atoms, *, kind: int = FrameKind.IMPORTED, step: int = 0) -> Frame:
        """Build a frame from ASE ``Atoms`` whose calculator holds energy and forces.

        Stress is taken when the calculator has it and the cell is 3D-periodic. Forces are
        the raw ones (``apply_constraint=False``): atoms held by ``FixAtoms`` keep theirs.
        Raises :class:`InputError` when energy or forces are missing.
        """
        calc = atoms.calc
        if calc is None:
            raise InputError("Atoms has no calculator/results: energy and forces are required")
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces(apply_constraint=False)  # raw: fixed atoms keep theirs
        except Exception as exc:  # PropertyNotImplementedError, missing results, ...
            raise InputError(f"Atoms lacks energy or forces: {exc}") from exc
        stress = None
        if atoms.pbc.all() and "stress" in getattr(calc, "results", {}):
            stress = atoms.get_stress(voigt=False)
        return cls(
            atomic_numbers=atoms.numbers,
            positions=atoms.positions,
            energy=energy,
            forces=forces,
            cell=atoms.cell.array,
            pbc=atoms.pbc,
            stress=stress,
            kind=kind,
            step=step,
        )

    def to_atoms(self):
        """ASE ``Atoms`` with a SinglePointCalculator holding the labels."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(numbers=self.atomic_numbers, positions=self.positions, cell=self.cell,
                      pbc=self.pbc)
        results = {"energy": self.energy, "forces": self.forces.copy()}
        if self.stress is not None:
            results["stress"] = self.stress.copy()
        atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms


def _shaped(value, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise InputError(f"{name} must have shape {list(shape)}; got {list(arr.shape)}")
    return arr
