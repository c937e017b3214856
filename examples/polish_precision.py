"""float32 alone vs float32 + float64 polish, on a realistic-size random TDN model.

Usage: python examples/polish_precision.py [ENERGY_SCALE=200] [TARGET_FMAX=0.001]

TDNConfig defaults (lmax 2, 64 channels, 3 layers), randomly initialised with an energy scale
chosen so that a 0.1 Å rattle gives forces of 1-2 eV/Å. Relaxes a Pt(111) slab and a Cu cell
with ASE's FIRE to TARGET_FMAX in float32 alone, and to 0.05 eV/Å in float32 followed by a
float64 polish to TARGET_FMAX; prints one JSON line per structure (see docs/advanced.md).
"""

from __future__ import annotations

import copy
import json
import sys
import time
import warnings

import numpy as np
import torch
from ase.build import bulk, fcc111

from tdn_calc.calculator import TDNCalculator
from tdn_calc.nn.config import TDNConfig
from tdn_calc.nn.model import TDNModel
from tdn_calc.relax import relax


def structures():
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=8.0)
    slab.rattle(0.1, seed=1)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.1, seed=2)
    return [slab, cu]


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 200.0
    target = float(sys.argv[2]) if len(sys.argv) > 2 else 0.001
    torch.manual_seed(0)
    model = TDNModel(TDNConfig(elements=[1, 6, 7, 8, 29, 78], energy_scale=scale)).eval()
    for atoms in structures():
        c32 = TDNCalculator(copy.deepcopy(model), dtype="float32")
        c64 = TDNCalculator(copy.deepcopy(model), dtype="float64")
        start = time.perf_counter()
        f32 = relax(atoms, c32, fmax=target, steps=3000, warn=False)
        t32 = time.perf_counter() - start
        end = f32.atoms.copy()
        noise = float(np.abs(c32.get_forces(end) - c64.get_forces(end)).max())
        start = time.perf_counter()
        pol = relax(atoms, TDNCalculator(copy.deepcopy(model), dtype="float32"), fmax=0.05,
                    steps=3000, polish=True, polish_fmax=target, warn=False)  # fmt: skip
        row = {
            "structure": atoms.get_chemical_formula(),
            "fmax_start": float(np.linalg.norm(c64.get_forces(atoms), axis=1).max()),
            "target": target,
            "float32": {"converged": f32.converged, "steps": f32.n_steps,
                        "min_fmax": min(f32.fmaxs), "time_s": round(t32, 1)},
            "float32_force_noise": noise,
            "polish": {"converged": pol.converged, "steps": pol.n_steps, "fmax": pol.fmax,
                       "time_s": round(time.perf_counter() - start, 1)},
        }  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
