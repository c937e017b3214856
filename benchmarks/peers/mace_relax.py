"""Relax structures with a trained MACE model and ASE's FIRE, as ``tdn-relax`` relaxes them.

Executed with the peers' Python (``benchmarks/.venv-peers``), not the project's::

    python benchmarks/peers/mace_relax.py MODEL START.extxyz OUT.extxyz REPORT.json \
        [--fmax 0.05] [--steps 500]

One thread, float32, CPU. ASE's ``FIRE`` with its defaults is the optimizer ``tdn-relax``
runs by default (it reproduces ASE FIRE step for step), with the same ``fmax`` (eV/Å) and
step limit, so the two models are judged after the same procedure. ``OUT`` keeps the input
order with ``info["converged"]`` and ``info["n_steps"]``; ``REPORT`` has one row per
structure (``index``, ``energy`` eV, ``fmax`` eV/Å, ``time`` s) and ``timings_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("start")
    ap.add_argument("out")
    ap.add_argument("report")
    ap.add_argument("--fmax", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=500)
    args = ap.parse_args()

    import numpy as np
    import torch
    from ase.io import read, write
    from ase.optimize import FIRE
    from mace.calculators import MACECalculator

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    calc = MACECalculator(model_paths=args.model, device="cpu", default_dtype="float32")
    load_s = time.perf_counter() - t0
    structures, rows = read(args.start, index=":"), []
    t_relax = time.perf_counter()
    for k, atoms in enumerate(structures):
        atoms.calc = calc
        t1 = time.perf_counter()
        opt = FIRE(atoms, logfile=None)
        converged = bool(opt.run(fmax=args.fmax, steps=args.steps))
        fmax = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
        rows.append({"index": k, "energy": float(atoms.get_potential_energy()), "fmax": fmax,
                     "steps": int(opt.nsteps), "converged": converged,
                     "time": time.perf_counter() - t1})
        atoms.info.update(converged=converged, n_steps=int(opt.nsteps), tdn_index=k)
        atoms.calc = None
    report = {"model": {"path": os.path.abspath(args.model), "kind": "MACE"},
              "structures": rows,
              "timings_s": {"load": load_s, "relax": time.perf_counter() - t_relax}}
    tmp = f"{args.out}.tmp{os.getpid()}"
    write(tmp, structures, format="extxyz")
    os.replace(tmp, args.out)
    tmp = f"{args.report}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=1)
    os.replace(tmp, args.report)


if __name__ == "__main__":
    main()
