"""Uncertainty study: which per-atom score catches new chemistry (issue: silently wrong
numbers on new adsorbates, facets, thick slabs and strained cells).

1. **Starts** (:func:`study_starts`, deterministic): in-domain (111) 3x3x4 slabs of the six
   trained metals with trained adsorbates (H C N O OH CO CH3 H2O); out-of-domain: new
   adsorbates of trained elements on trained metals (111), trained adsorbates on (100),
   (110), (211), six-layer (111) slabs, and (111) slabs strained laterally by 4-6 %.
2. **Labels** (:func:`label_start`, cached per start in ``results/uncertainty_cache/``):
   relax with tdn-catalysis (BFGS, fmax 0.03 eV/Å), then SevenNet-0 at the TDN minimum
   (energy, forces) and, when its fmax there is at most 0.5 eV/Å, a SevenNet-0 BFGS
   relaxation continued from the TDN minimum (fmax 0.03, <= 150 steps). A structure is
   *bad* when the teacher fmax (free atoms) at the TDN minimum exceeds 0.5 eV/Å or the
   teacher energy there lies more than 0.2 eV above the teacher's nearby minimum (the
   relaxation is skipped for those already bad by force); an atom is bad when
   ``|F_tdn - F_teacher| > 0.5`` eV/Å.
3. **Scores** (:func:`score_candidates`): every candidate on the TDN minima; per structure the
   maximum over atoms. Thresholds are chosen on the even-numbered starts (the highest score
   of the good structures' 85th percentile... see :func:`calibrate`) and reported on both
   halves.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/uncertainty_study.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from tdn_calc.datagen.catalysis.adsorbates import place_adsorbate
from tdn_calc.datagen.catalysis.surfaces import build_surface
from tdn_calc.fileio import atomic_write

HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "uncertainty_cache"
OUT = HERE / "results" / "uncertainty_study.json"
LATTICE = {"Ag": 4.16608, "Au": 4.17110, "Cu": 3.61181, "Ni": 3.50424, "Pd": 3.95399,
           "Pt": 3.97769}  # SevenNet-0's own fcc lattice constants, Å (data set's table)
TRAINED_ADS = ("H", "C", "N", "O", "OH", "CO", "CH3", "H2O")
BAD_FMAX = 0.5  # eV/Å, teacher fmax at the TDN minimum
BAD_DE = 0.2  # eV, teacher energy at the TDN minimum above the teacher's nearby minimum
ATOM_CUT = 0.5  # eV/Å, |F_tdn - F_teacher| of a bad atom
FMAX = 0.03
TEACHER_STEPS = 150


# ---------------------------------------------------------------- starts
def slab_start(metal: str, facet: str, ads: str | None, site: str | None, *, layers: int = 4,
               strain: float = 0.0, seed: int = 0) -> Atoms:
    """A 3x3 (2x3 for (110)) slab of ``layers`` layers, bottom two fixed, lattice scaled by
    ``1 + strain`` in-plane only, ``ads`` placed on ``site`` with a 0.15 Å lateral jitter."""
    rng = np.random.default_rng(seed)
    size = (2, 3, layers) if facet == "110" else (3, 3, layers)
    surf = build_surface(metal, facet, size, (LATTICE[metal],), fixed_layers=2)
    atoms = surf.atoms
    if strain:
        cell = atoms.cell.array.copy()
        cell[:2] *= 1 + strain
        atoms.set_cell(cell, scale_atoms=False)
        atoms.positions[:, :2] *= 1 + strain
    n_metal = len(atoms)
    if ads is not None:
        xy = surf.sites[site] * (1 + strain) + rng.normal(0.0, 0.15, 2)
        place_adsorbate(atoms, n_metal, ads, xy, rng)
    atoms.set_constraint(FixAtoms(mask=np.r_[surf.layer >= layers - 2,
                                             np.zeros(len(atoms) - n_metal, bool)]))
    return atoms


def study_starts() -> list[dict[str, Any]]:
    """``[{"label", "group", "atoms"}]``: 20 in-domain, 10 new-adsorbate, 8 facet, 4 six-layer
    and 4 strained starts (fixed seeds)."""
    metals = ("Pt", "Pd", "Ni", "Cu", "Ag", "Au")
    sites = ("top", "bridge", "fcc", "hcp")
    out = []
    rng = np.random.default_rng(2026)
    for k in range(20):
        metal, ads, site = metals[k % 6], TRAINED_ADS[k % 8], sites[int(rng.integers(4))]
        out.append(("in_domain", f"{metal}111/{ads}/{site}/s{k}", (metal, "111", ads, site), {}))
    new = [("Pt", "COOH", "top"), ("Cu", "NNH", "top"), ("Ni", "CH2", "bridge"),
           ("Pt", "NH2", "bridge"), ("Cu", "HCOO", "top"), ("Pd", "CHO", "bridge"),
           ("Au", "NH3", "top"), ("Pt", "OOH", "top"), ("Ni", "CH3O", "fcc"), ("Pd", "NO", "fcc")]
    out += [("new_adsorbate", f"{m}111/{a}/{s}", (m, "111", a, s), {}) for m, a, s in new]
    facets = [("Pt", "100", "CO", "top"), ("Cu", "100", "O", "hollow"),
              ("Ni", "110", "H", "shortbridge"), ("Pd", "110", "OH", "shortbridge"),
              ("Au", "211", "CO", "step_top"), ("Pt", "211", "H", "step_bridge"),
              ("Ag", "100", "N", "hollow"), ("Ni", "211", "CH3", "terrace_hollow")]
    out += [("facet", f"{m}{f}/{a}/{s}", (m, f, a, s), {}) for m, f, a, s in facets]
    thick = [("Pt", "CO", "top"), ("Cu", "H", "fcc"), ("Ni", "O", "hcp"), ("Au", None, None)]
    out += [("six_layer", f"{m}111x6/{a}/{s}", (m, "111", a, s), {"layers": 6})
            for m, a, s in thick]
    strained = [("Pt", "CO", "top", 0.05), ("Cu", "O", "fcc", -0.04), ("Pd", "H", "fcc", 0.06),
                ("Ag", "OH", "top", -0.05)]
    out += [("strained", f"{m}111{e:+.0%}/{a}/{s}", (m, "111", a, s), {"strain": e})
            for m, a, s, e in strained]
    starts = []
    for seed, (group, label, args, kw) in enumerate(out):
        starts.append({"label": label, "group": group,
                       "atoms": slab_start(*args, seed=seed, **kw)})
    return starts


# ---------------------------------------------------------------- labels
def _free(atoms: Atoms) -> np.ndarray:
    fixed = np.zeros(len(atoms), bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed[c.index] = True
    return ~fixed


def cache_path(label: str) -> Path:
    return CACHE / (label.replace("/", "_").replace("%", "pc").replace("+", "p") + ".json")


def label_start(start: dict[str, Any], calc, teacher) -> dict[str, Any]:
    """Relax ``start`` with ``calc`` (TDN), judge with ``teacher``; the cached row (JSON)."""
    from tdn_calc.relax import relax

    path = cache_path(start["label"])
    if path.exists():
        return json.loads(path.read_text())
    atoms = start["atoms"]
    free = _free(atoms)
    t0 = time.perf_counter()
    try:
        res = relax(atoms, calc, fmax=FMAX, steps=300, optimizer="BFGS", warn=False)
    except Exception as exc:  # noqa: BLE001 - a failed relaxation is a row, not a crash
        row = {"label": start["label"], "group": start["group"], "error": repr(exc)}
        path.write_text(json.dumps(row))
        return row
    tdn_s = time.perf_counter() - t0
    minimum = res.atoms.copy()
    minimum.set_constraint(atoms.constraints)
    f_tdn = res.atoms.get_forces(apply_constraint=False)
    minimum.calc = teacher
    e_t = float(minimum.get_potential_energy())
    f_t = minimum.get_forces(apply_constraint=False)
    fmax_t = float(np.linalg.norm(f_t[free], axis=1).max())
    e_tmin, t_steps, t_conv = None, 0, None
    if fmax_t <= BAD_FMAX:
        tres = relax(minimum, teacher, fmax=FMAX, steps=TEACHER_STEPS, optimizer="BFGS",
                     warn=False, guard=None)
        e_tmin, t_steps, t_conv = tres.energy, tres.n_steps, tres.converged
    de = None if e_tmin is None else e_t - e_tmin
    bad = fmax_t > BAD_FMAX or (de is not None and de > BAD_DE)
    row = {
        "label": start["label"], "group": start["group"], "n_atoms": len(atoms),
        "numbers": atoms.numbers.tolist(), "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(), "free": free.tolist(),
        "positions": minimum.positions.tolist(),
        "tdn_converged": res.converged, "tdn_steps": res.n_steps, "tdn_energy": res.energy,
        "tdn_s": tdn_s, "forces_tdn": f_tdn.tolist(), "forces_teacher": f_t.tolist(),
        "teacher_energy_at_tdn_min": e_t, "teacher_fmax_at_tdn_min": fmax_t,
        "teacher_min_energy": e_tmin, "teacher_steps": t_steps, "teacher_converged": t_conv,
        "de_above_teacher_min": de, "bad": bool(bad),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def label_all(starts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cached rows of every start (computes the missing ones)."""
    if all(cache_path(s["label"]).exists() for s in starts):
        return [json.loads(cache_path(s["label"]).read_text()) for s in starts]
    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.teachers import get_teacher

    calc = TDNCalculator("tdn-catalysis", device="cpu")
    teacher = get_teacher("sevenn-0")
    rows = []
    for s in starts:
        t0 = time.perf_counter()
        row = label_start(s, calc, teacher)
        print(f"{s['label']:28s} bad={row.get('bad')} fmax_t={row.get('teacher_fmax_at_tdn_min')}"
              f" dE={row.get('de_above_teacher_min')} {time.perf_counter() - t0:.1f}s",
              flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels-only", action="store_true", help="only build the cached labels")
    args = p.parse_args(argv)
    rows = label_all(study_starts())
    if args.labels_only:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
