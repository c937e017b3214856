"""Cost of the batched optimizers side by side: FIRE vs BFGS (``tdn-relax --optimizer``).

Relaxes the same structures with :func:`tdn_calc.relax.batch_relax` and a trained
model, FIRE and BFGS alternating ``--repeats`` times (this machine is noisy, so the ratio of
the medians is the figure), and reports wall seconds, total optimizer steps and seconds per
step of each. Structures: ``--n`` g2 molecules rattled by 0.1 Å (as
``benchmarks/relax_throughput.py``), or with ``--slab`` that many Pt(111)+CO slabs (3x3x4,
two bottom layers fixed, CO rattled), for tdn-catalysis.

    python benchmarks/relax_throughput.py ...          # batched vs one by one
    python benchmarks/optimizer_cost.py --model tdn-organic --n 64 --threads 1
    python benchmarks/optimizer_cost.py --model tdn-catalysis --slab --n 8 --threads 1

How near each optimizer ends to the minimum at the same fmax is measured by the reference
method in ``benchmarks/relax_quality_organic.py`` (its oracle rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from relax_throughput import molecules

from tdn_calc.checkpoint import load_model
from tdn_calc.relax import ConvergenceWarning, batch_relax

OPTIMIZERS = ("FIRE", "BFGS")


def slabs(n: int, size: tuple[int, int, int] = (3, 3, 4)) -> list:
    """``n`` Pt(111) slabs of ``size`` with CO on top, two bottom layers fixed, CO rattled."""
    from ase.build import add_adsorbate, fcc111, molecule
    from ase.constraints import FixAtoms

    out = []
    for k in range(n):
        slab = fcc111("Pt", size=size, vacuum=8.0)
        add_adsorbate(slab, molecule("CO")[::-1], 1.9, "ontop")
        slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag >= size[2] - 1]))
        rng = np.random.default_rng(k)
        slab.positions[-2:] += rng.normal(0.0, 0.15, (2, 3))
        out.append(slab)
    return out


def run_once(structures, model, optimizer: str, fmax: float, batch_size: int) -> dict:
    """One batched relaxation of all ``structures``: wall seconds, steps, convergence."""
    start = time.perf_counter()
    results = batch_relax(structures, model, fmax=fmax, batch_size=batch_size,
                          optimizer=optimizer, warn=False)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "steps": sum(r.n_steps for r in results),
            "converged": sum(r.converged for r in results),
            "energy_sum": float(sum(r.energy for r in results))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tdn-organic")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--slab", action="store_true", help="Pt(111)+CO slabs instead of molecules")
    p.add_argument("--slab-size", default="3x3x4", help="slab repeats AxBxLAYERS")
    p.add_argument("--fmax", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    model = load_model(args.model, device="cpu")
    size = tuple(int(x) for x in args.slab_size.split("x"))
    structures = slabs(args.n, size) if args.slab else molecules(args.n)
    for name in OPTIMIZERS:  # warm-up (lazy initialisation, caches)
        run_once(structures[:2], model, name, args.fmax, args.batch_size)
    runs: dict[str, list[dict]] = {name: [] for name in OPTIMIZERS}
    for _ in range(args.repeats):
        for name in OPTIMIZERS:
            runs[name].append(run_once(structures, model, name, args.fmax, args.batch_size))
    summary = {}
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        summary[name] = {"median_wall_s": wall, "steps": rs[0]["steps"],
                         "converged": rs[0]["converged"],
                         "ms_per_structure_step": 1000 * wall / max(rs[0]["steps"], 1)}
    summary["bfgs_over_fire_wall"] = summary["BFGS"]["median_wall_s"] / summary["FIRE"][
        "median_wall_s"]
    kind = f"Pt(111) {args.slab_size} + CO slabs" if args.slab else "g2 molecules"
    doc = {"model": args.model, "structures": kind,
           "n": len(structures), "n_atoms_total": int(sum(len(a) for a in structures)),
           "fmax": args.fmax, "batch_size": args.batch_size, "threads": args.threads,
           "repeats": args.repeats, "summary": summary, "runs": runs}
    text = json.dumps(doc, indent=1)
    print(json.dumps(summary, indent=1))
    if args.out:
        from tdn_calc.fileio import atomic_write

        with atomic_write(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
