"""Where is the catalysis teacher (SevenNet-0) wrong? Adsorption energies against real PBE.

For each (metal, adsorbate, site) pair: a 2x2x3 slab of the metal's close-packed facet (fcc
(111), hcp (0001)) at the teacher's own lattice constants (the coverage2 data set's table),
bottom layer fixed, 6 Å of vacuum on each side; the adsorbate placed on the site and the
slab+adsorbate, the clean slab and the gas molecules (H2, H2O, NH3, CH4) relaxed by the
teacher (BFGS, fmax 0.05 eV/Å). At those **same geometries** both methods give single points:
the teacher, and GPAW PBE (plane waves, ``--cutoff`` eV, k-point density ``--kpt-density``
per Å⁻¹, Fermi–Dirac 0.1 eV extrapolated to zero width, spin-polarised on Ni and Co, where
the self-consistency stops at :data:`SPIN_CONVERGENCE`: O on Ni(111) sat at a density change
of 3.5e-3 for 30 iterations and its eigenstates converged slower still, with the energy
settled to 15 meV). The
adsorption energy is referenced to H2, H2O, NH3 and CH4 (``H2-H2O-NH3-CH4``:
``E_ads = E(slab+ads) - E(slab) - sum_g c_g E(g)``), so both methods see the same formula;
``error = E_ads(teacher) - E_ads(PBE)``. A pair is **wrong** when ``|error| > 0.3`` eV, or
when the teacher's relaxation pushes the adsorbate's anchor atom more than 2.5 Å above the top
layer (``teacher_desorbs``: the teacher does not bind it at all; single points at that
geometry then compare an unbound adsorbate). ``anchor_height`` (Å) is recorded per pair.
Also reported: PBE's largest force on a free atom at the teacher's geometry (how far the
teacher's geometry is from PBE's).

A pair whose calculation fails is recorded with ``failed`` (the error) and the run goes on.
Every calculation is cached in ``results/teacher_vs_pbe_cache/`` (a killed run resumes where
it stopped); the JSON is rewritten after each pair. One core, about 2-6 min per GPAW call.

    OMP_NUM_THREADS=1 nice python benchmarks/teacher_vs_pbe.py
    OMP_NUM_THREADS=1 nice python benchmarks/teacher_vs_pbe.py --pairs Ni-O-fcc Pt-O-fcc
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import git_commit, write_json
from ase import Atoms
from ase.build import molecule
from ase.optimize import BFGS

from tdn_calc.datagen.catalysis.adsorbates import place_adsorbate
from tdn_calc.datagen.catalysis.surfaces import STRUCTURE, Surface, build_surface
from tdn_calc.evaluation.references import adsorption_energy, get_scheme, reference_terms
from tdn_calc.slab import fixed_mask
from tdn_calc.teachers import get_teacher, teacher_reference_method
from tdn_calc.teachers._gpaw import SPIN_START

HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "teacher_vs_pbe_cache"
OUT = HERE / "results" / "teacher_vs_pbe.json"
LOGS = Path(tempfile.gettempdir()) / "teacher_vs_pbe_logs"  # GPAW's own logs, not kept
#: self-consistency of spin-polarised cells (GPAW's units: density change and eigenstate
#: residual per electron); GPAW's defaults (1e-4, 4e-8) were out of reach for O on Ni(111)
SPIN_CONVERGENCE = {"density": 5e-3, "eigenstates": 1e-4}
LATTICES = HERE.parent / "datasets" / "catalysis2-sevennet0" / "lattice_constants.json"
SCHEME = "H2-H2O-NH3-CH4"
GASES = ("H2", "H2O", "NH3", "CH4")
WRONG_EV = 0.3  # eV: |E_ads(teacher) - E_ads(PBE)| above this is listed as wrong
DESORBED_HEIGHT = 2.5  # Å: an anchor atom this far above the top layer has left the surface
RELAX_FMAX = 0.05  # eV/Å, the teacher's relaxations of the geometries
VACUUM = 6.0  # Å on each side of slabs and molecules
#: in order of priority: the issue's suspects (O-containing on Ni/Co, N on Au/Ag), with
#: controls the teacher is believed to get right (O and CO on Pt)
PAIRS = ("Ni-O-fcc", "Pt-O-fcc", "Pt-CO-top", "Co-O-fcc", "Au-N-fcc", "Ag-N-fcc",
         "Ni-OH-fcc", "Co-OH-fcc", "Ru-O-hcp", "Ru-N-hcp", "Cu-O-fcc", "Rh-O-fcc",
         "Pd-H-fcc", "Ir-O-fcc", "Co-CO-top", "Pt-N-fcc", "Cu-OH-fcc", "Ni-CO-fcc")


def facet(metal: str) -> str:
    return "0001" if STRUCTURE[metal] == "hcp" else "111"


def surface(metal: str, lattices: dict[str, list[float]]) -> Surface:
    """2x2x3 close-packed slab, bottom layer fixed, pbc [T, T, F], with its named sites."""
    return build_surface(metal, facet(metal), (2, 2, 3), lattices[metal], fixed_layers=1,
                         vacuum=VACUUM)


def slab_with_adsorbate(metal: str, ads: str, site: str,
                        lattices: dict[str, list[float]]) -> Atoms:
    surf = surface(metal, lattices)
    atoms = surf.atoms
    n_metal = len(atoms)
    place_adsorbate(atoms, n_metal, ads, surf.sites[site], np.random.default_rng(0),
                    max_tilt=0.0)
    atoms.center(vacuum=VACUUM, axis=2)
    return atoms


def gas(name: str) -> Atoms:
    atoms = molecule(name)
    atoms.center(vacuum=VACUUM)
    atoms.pbc = False
    return atoms


def single_point(atoms: Atoms, calc) -> dict[str, Any]:
    """``{"energy" (eV), "fmax" (eV/Å, largest force on a free atom)}`` of ``calc`` at a copy
    of ``atoms``."""
    work = atoms.copy()
    work.calc = calc
    forces, free = work.get_forces(), ~fixed_mask(work)
    return {"energy": float(work.get_potential_energy()),
            "fmax": float(np.linalg.norm(forces[free], axis=1).max()) if free.any() else 0.0}


def _cached(key: str, compute) -> dict[str, Any]:
    from tdn_calc.fileio import atomic_write

    path = CACHE / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    record = compute()
    record["seconds"] = round(time.perf_counter() - t0, 1)
    CACHE.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(record) + "\n")
    return record


class Labeller:
    """Teacher relaxations and single points of both methods, cached by name."""

    def __init__(self, teacher: str, cutoff: float, kpt_density: float) -> None:
        self.teacher_name = teacher
        self.teacher = get_teacher(teacher)
        self.cutoff, self.kpt_density = cutoff, kpt_density
        self.tag = f"pw{cutoff:g}-k{kpt_density:g}"

    def relaxed(self, name: str, atoms: Atoms) -> Atoms:
        def compute() -> dict[str, Any]:
            work = atoms.copy()
            work.calc = self.teacher
            opt = BFGS(work, logfile=None)
            converged = bool(opt.run(fmax=RELAX_FMAX, steps=300))
            return {"positions": work.positions.tolist(), "converged": converged,
                    "steps": opt.nsteps}

        record = _cached(f"{name}-{self.teacher_name}-relaxed", compute)
        out = atoms.copy()
        out.positions = np.array(record["positions"])
        out.info["relax_converged"] = record["converged"]
        return out

    def single_points(self, name: str, atoms: Atoms) -> dict[str, Any]:
        def pbe_point() -> dict[str, Any]:
            LOGS.mkdir(parents=True, exist_ok=True)
            spin = {"convergence": SPIN_CONVERGENCE} if any(
                s in SPIN_START for s in atoms.get_chemical_symbols()) else {}
            return single_point(atoms, get_teacher("gpaw-pbe", cutoff=self.cutoff,
                                                   kpt_density=self.kpt_density,
                                                   txt=str(LOGS / f"{name}-{self.tag}.txt"),
                                                   **spin))

        return {"teacher": _cached(f"{name}-{self.teacher_name}-sp",
                                   lambda: single_point(atoms, self.teacher)),
                "pbe": _cached(f"{name}-gpaw-{self.tag}-sp", pbe_point)}


def run(pairs: list[str], teacher: str, cutoff: float, kpt_density: float) -> dict[str, Any]:
    lattices = json.loads(LATTICES.read_text())["sevenn-0"]
    lab = Labeller(teacher, cutoff, kpt_density)
    gases = {g: lab.single_points(g, lab.relaxed(g, gas(g))) for g in GASES}
    scheme = get_scheme(SCHEME)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "benchmark": "teacher_vs_pbe", "teacher": teacher,
        "teacher_method": teacher_reference_method(teacher),
        "pbe": {"code": "GPAW", "version": _gpaw_version(), "cutoff_eV": cutoff,
                "kpt_density_per_inv_A": kpt_density, "smearing_eV": 0.1,
                "spin": "polarised on Ni, Co (mixer MixerDif(0.02, 5, 100), convergence "
                        f"{SPIN_CONVERGENCE})"},
        "geometry": f"2x2x3 slab, bottom layer fixed, {VACUUM} Å vacuum each side, "
                    f"relaxed by the teacher to fmax {RELAX_FMAX} eV/Å",
        "scheme": scheme.name, "scheme_description": scheme.description,
        "wrong_eV": WRONG_EV, "commit": git_commit(str(HERE.parent)),
        "machine": platform.processor() or platform.machine(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "gases": gases, "pairs": rows,
    }
    for pair in pairs:
        try:
            rows.append(measure_pair(pair, lab, lattices, gases))
        except Exception as exc:  # recorded; the other pairs go on
            rows.append({"pair": pair, "failed": f"{type(exc).__name__}: {exc}"})
            print(f"{pair:12s} failed: {rows[-1]['failed']}", flush=True)
            write_json(OUT, result)
            continue
        result["wrong"] = [r["pair"] for r in rows if r.get("wrong")]
        write_json(OUT, result)
        r = rows[-1]
        print(f"{pair:12s} teacher {r['e_ads_teacher']:+.2f}  PBE {r['e_ads_pbe']:+.2f}  "
              f"error {r['error']:+.2f} eV{'  WRONG' if r['wrong'] else ''}", flush=True)
    return result


def measure_pair(pair: str, lab: Labeller, lattices: dict[str, list[float]],
                 gases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One row: both methods' adsorption energies of ``pair`` (METAL-ADSORBATE-SITE)."""
    metal, ads, site = pair.split("-")
    slab = lab.single_points(f"{metal}-slab", lab.relaxed(f"{metal}-slab",
                                                          surface(metal, lattices).atoms))
    start = slab_with_adsorbate(metal, ads, site, lattices)
    relaxed = lab.relaxed(pair, start)
    n_metal = len(surface(metal, lattices).atoms)
    height = float(relaxed.positions[n_metal, 2] - relaxed.positions[:n_metal, 2].max())
    points = lab.single_points(pair, relaxed)
    terms = reference_terms(Atoms(ads), SCHEME)
    e_ads = {m: adsorption_energy(points[m]["energy"], slab[m]["energy"],
                                  {g: gases[g][m]["energy"] for g in GASES}, terms)
             for m in ("teacher", "pbe")}
    error = e_ads["teacher"] - e_ads["pbe"]
    return {"pair": pair, "metal": metal, "facet": facet(metal), "adsorbate": ads,
            "site": site, "terms": terms,
            "e_ads_teacher": e_ads["teacher"], "e_ads_pbe": e_ads["pbe"],
            "error": error, "wrong": abs(error) > WRONG_EV or height > DESORBED_HEIGHT,
            "anchor_height": height,
            # the teacher's relaxation pushed the adsorbate off the surface: the teacher does
            # not bind it there, whatever the single points at that geometry say
            "teacher_desorbs": height > DESORBED_HEIGHT,
            "pbe_fmax_at_teacher_geometry": points["pbe"]["fmax"],
            "teacher_relax_converged": bool(relaxed.info["relax_converged"]),
            "pbe_seconds": points["pbe"]["seconds"] + slab["pbe"]["seconds"]}


def _gpaw_version() -> str:
    from importlib.metadata import version

    return version("gpaw")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS),
                        help="METAL-ADSORBATE-SITE, e.g. Ni-O-fcc (default: all, in order)")
    parser.add_argument("--teacher", default="sevenn-0")
    parser.add_argument("--cutoff", type=float, default=400.0, help="plane waves, eV")
    parser.add_argument("--kpt-density", type=float, default=3.0, help="points per Å⁻¹")
    args = parser.parse_args()
    run(args.pairs, args.teacher, args.cutoff, args.kpt_density)


if __name__ == "__main__":
    main()
