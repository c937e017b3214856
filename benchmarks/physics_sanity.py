"""Long physics checks of the shipped models (issue 9), written to
``benchmarks/results/physics_sanity.json``:

* NVE: aspirin with tdn-organic in float64 (and, for comparison, float32), relaxed to
  0.01 eV/Å, Maxwell-Boltzmann velocities at 300 K (seed 0, zero total momentum), velocity
  Verlet 0.5 fs for 4000 steps (2 ps): drift and fluctuations of the total energy;
* smoothness (float64, 0.005 Å grid): one methyl C-H of ethanol stretched from 0.8 Å until the
  H is 5.6 Å from every atom (tdn-organic), and CO lifted off the Pt(111) top site from a C-Pt
  distance of 1.6 Å to 5.9 Å (tdn-catalysis);
* O(3) equivariance (float64, 16 random transformations, half with a reflection).

    OMP_NUM_THREADS=1 python benchmarks/physics_sanity.py [--quick] [--catalysis PATH]

``--quick`` runs 200 MD steps and 0.02 Å grids (seconds) and writes
``physics_sanity-quick.json`` instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import cpu_model, git_commit
from ase import Atoms
from ase.build import molecule
from ase.io import read

from tdn_calc.calculator import TDNCalculator
from tdn_calc.checkpoint import load_model
from tdn_calc.fileio import atomic_write, sha256_file
from tdn_calc.model_checks import (
    bond_path,
    energy_drift,
    equivariance_error,
    nve_trajectory,
    path_scan,
    smoothness_metrics,
)
from tdn_calc.registry import model_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ASPIRIN = ROOT / "examples" / "molecules" / "aspirin.xyz"
PT_CO = ROOT / "examples" / "slabs" / "pt111_co.xyz"


def bond_scan_setup(case: str, h: float) -> tuple[Atoms, list[int], np.ndarray, np.ndarray]:
    """``(start, moving, direction, shifts)`` of a :func:`path_scan` with grid step ``h`` Å.

    ``"ethanol C-H"``: the methyl H anti to the C-C bond pulled along its C-H bond, C-H from
    0.8 to 5.6 Å (the H then is > 5 Å from every atom). ``"Pt(111)+CO"``: CO (C down, 1.9 Å
    above the top-site Pt) lifted rigidly along the surface normal, C-Pt from 1.6 to 5.9 Å.
    """
    if case == "ethanol C-H":
        start, direction = bond_path(molecule("CH3CH2OH"), [6], anchor=0)
        return start, [6], direction, np.arange(0.8, 5.6 + h / 2, h)
    slab = read(PT_CO)
    co = [k for k, z in enumerate(slab.numbers) if z in (6, 8)]  # C first
    start, direction = bond_path(slab, co)
    return start, co, direction, np.arange(1.6, 5.9 + h / 2, h)


def nve(model: str, dtype: str, n_steps: int) -> dict:
    """NVE run of aspirin with ``model`` in ``dtype``: drift metrics, wall time and the total
    energy every 40 steps (meV/atom relative to the start)."""
    calc = TDNCalculator(model, device="cpu", dtype=dtype, extrapolation=False)
    start = time.perf_counter()
    trace = nve_trajectory(read(ASPIRIN), calc, timestep_fs=0.5, n_steps=n_steps,
                           temperature_K=300.0, seed=0, relax_fmax=0.01)  # fmt: skip
    total = (trace.potential + trace.kinetic) / trace.n_atoms * 1000.0
    every = max(n_steps // 100, 1)
    return {
        "system": "aspirin C9H8O4 (21 atoms)",
        "model": model,
        "dtype": dtype,
        "timestep_fs": 0.5,
        "n_steps": n_steps,
        "temperature_K": 300.0,
        "seed": 0,
        **energy_drift(trace),
        "wall_s": time.perf_counter() - start,
        "trace": {
            "times_ps": trace.times_ps[::every].round(4).tolist(),
            "total_minus_start_meV_atom": (total - total[0])[::every].round(5).tolist(),
        },
    }


def smoothness(model: str, case: str, h: float) -> dict:
    """Smoothness metrics of ``case`` (``"ethanol C-H"`` or ``"Pt(111)+CO"``) in float64."""
    calc = TDNCalculator(model, device="cpu", dtype="float64", extrapolation=False)
    atoms, moving, direction, shifts = bond_scan_setup(case, h)
    start = time.perf_counter()
    scan = path_scan(calc, atoms, moving, direction, shifts)
    return {
        "model": model,
        "separation_range_A": [float(scan.separations.min()), float(scan.separations.max())],
        **smoothness_metrics(scan, calc.model.cutoff),
        "wall_s": time.perf_counter() - start,
    }


def model_sha256(name: str) -> str:
    """sha256 of the checkpoint file of ``name`` (a registered name or a path)."""
    return sha256_file(model_path(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 MD steps, 0.02 Å grids")
    parser.add_argument("--organic", default="tdn-organic", help="model name or checkpoint")
    parser.add_argument("--catalysis", default="tdn-catalysis", help="model name or checkpoint")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_steps, h, n_rot = (200, 0.02, 4) if args.quick else (4000, 0.005, 16)
    results: dict = {
        "environment": {
            "commit": git_commit(str(ROOT)),
            "cpu": cpu_model(),
            "torch_threads": 1,
            "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        "command": "python benchmarks/physics_sanity.py " + " ".join(sys.argv[1:]),
        "models": {name: model_sha256(name) for name in (args.organic, args.catalysis)},
        "nve": [nve(args.organic, dtype, n_steps) for dtype in ("float64", "float32")],
        "smoothness": {
            "ethanol C-H": smoothness(args.organic, "ethanol C-H", h),
            "Pt(111)+CO": smoothness(args.catalysis, "Pt(111)+CO", h),
        },
        "equivariance": {},
    }
    molecule_only = {"aspirin": read(ASPIRIN)}
    with_slab = {**molecule_only, "Pt(111)+CO": read(PT_CO)}
    for name, structures in ((args.organic, molecule_only), (args.catalysis, with_slab)):
        model = load_model(name, device="cpu", dtype="float64")
        results["equivariance"][name] = {
            label: equivariance_error(model, atoms, n_rotations=n_rot, seed=0)
            for label, atoms in structures.items()
        }
    out = RESULTS / ("physics_sanity-quick.json" if args.quick else "physics_sanity.json")
    with atomic_write(out, "w") as handle:
        json.dump(results, handle, indent=1)
        handle.write("\n")
    summary = {k: v for k, v in results.items() if k != "nve"}
    summary["nve"] = [{k: v for k, v in run.items() if k != "trace"} for run in results["nve"]]
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
