"""The GPAW PBE teacher: plane-wave DFT set up for each structure it is given.

GPAW itself is imported only when a calculation runs, so this module loads without it.
"""

from __future__ import annotations

from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ..errors import InputError

#: Initial magnetic moments (μB) that make GPAW spin-polarise cells with these elements;
#: near the PBE moments of the bcc/hcp/fcc metals (2.2, 1.6, 0.6 μB), from above.
SPIN_START = {"Fe": 3.0, "Co": 2.0, "Ni": 1.0}
#: density mixing of spin-polarised cells: what ``gpaw.mixer.MixerDif(0.02, 5, 100)`` returns
#: (Pulay, density and magnetisation mixed apart, a gentle step, a long-wavelength metric)
SPIN_MIXER = {"method": "difference", "backend": "pulay", "beta": 0.02, "nmaxold": 5,
              "weight": 100.0}


class GPAWPBE(Calculator):
    """PBE DFT with GPAW in plane-wave mode, with defaults chosen per structure.

    - ``cutoff`` eV plane waves (500: converged to ~1 meV/atom for 3d metals and O/C/H);
    - Monkhorst–Pack k-points with ``kpt_density`` points per Å⁻¹ along periodic axes
      (1 along the others), Γ-centred;
    - Fermi–Dirac smearing of ``smearing`` eV; energies are extrapolated to zero width;
    - spin-polarised from :data:`SPIN_START` when Fe, Co or Ni are present and the
      structure carries no initial magnetic moments of its own; a spin-polarised cell mixes
      density and magnetisation apart with a gentle step (``MixerDif(0.02, 5, 100)``): with
      GPAW's default mixer O on a 2x2x3 Ni(111) slab was still swinging by 0.2 eV after 30
      iterations.

    Extra keyword arguments go to ``gpaw.GPAW`` and override these (``txt`` is None, so
    GPAW writes no log, unless given). Molecules need a cell with vacuum around them.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(self, cutoff: float = 500.0, kpt_density: float = 3.5,
                 smearing: float = 0.1, **gpaw_kwargs: Any) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.kpt_density = kpt_density
        self.smearing = smearing
        self.gpaw_kwargs = gpaw_kwargs
        self._gpaw: Calculator | None = None
        self._key: tuple | None = None

    def gpaw_parameters(self, atoms: Atoms) -> dict[str, Any]:
        """The keyword arguments of ``gpaw.GPAW`` for ``atoms`` (without the PW mode)."""
        parameters: dict[str, Any] = {
            "xc": "PBE",
            "kpts": {"density": self.kpt_density, "gamma": True},
            "occupations": {"name": "fermi-dirac", "width": self.smearing},
            "txt": None,
        }
        parameters.update(self.gpaw_kwargs)
        return parameters

    @staticmethod
    def with_spin(atoms: Atoms) -> Atoms:
        """A copy of ``atoms`` with starting moments on Fe/Co/Ni unless it has its own."""
        work = atoms.copy()
        if not work.get_initial_magnetic_moments().any():
            moments = [SPIN_START.get(s, 0.0) for s in work.get_chemical_symbols()]
            if any(moments):
                work.set_initial_magnetic_moments(moments)
        return work

    def _build(self, atoms: Atoms) -> Calculator:
        try:
            from gpaw import GPAW, PW
        except ImportError as err:
            raise InputError(
                f"teacher 'gpaw-pbe' cannot import gpaw ({err}): pip install "
                '"tdn-calc[gpaw]" (GPAW builds from source: apt-get install g++ libxc-dev '
                "libopenblas-dev, then CC=g++ pip install gpaw gpaw-data)"
            ) from err
        parameters = self.gpaw_parameters(atoms)
        if atoms.get_initial_magnetic_moments().any() and "mixer" not in self.gpaw_kwargs:
            parameters["mixer"] = SPIN_MIXER
        return GPAW(mode=PW(self.cutoff), **parameters)

    def calculate(self, atoms: Atoms | None = None, properties: Any = ("energy",),
                  system_changes: Any = all_changes) -> None:
        """Run GPAW on ``atoms``; the GPAW object is reused while only positions change."""
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        if self.atoms.cell.rank < 3:
            raise InputError("the GPAW teacher needs a 3D cell: put a molecule in a box "
                             "with vacuum (atoms.center(vacuum=6.0))")
        work = self.with_spin(self.atoms)
        key = (tuple(work.numbers), tuple(work.pbc), tuple(work.cell.array.ravel()),
               tuple(work.get_initial_magnetic_moments()))
        if self._gpaw is None or key != self._key:
            self._gpaw, self._key = self._build(work), key
        try:
            self.results = self._run(work)
        except Exception as err:
            if type(err).__name__ != "SymmetryBrokenError":
                raise
            # the first structure's point group no longer holds (a relaxation step broke
            # it): rebuild without point-group symmetry, as GPAW advises for relaxations
            self.gpaw_kwargs.setdefault("symmetry", {"point_group": False})
            self._gpaw = self._build(work)
            self.results = self._run(work)

    def _run(self, work: Atoms) -> dict[str, Any]:
        work.calc = self._gpaw
        results = {
            "energy": work.get_potential_energy(),
            "free_energy": work.get_potential_energy(force_consistent=True),
            "forces": work.get_forces(),
        }
        if work.pbc.all():
            results["stress"] = work.get_stress()
        return results
