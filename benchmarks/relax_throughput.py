"""Throughput of batched relaxation against ASE's FIRE one structure at a time.

Relaxes N small molecules (ASE's g2 set, elements H C N O F S Cl, rattled by 0.1 Å with fixed
seeds) with the same model and fmax: (a) one by one with ``ase.optimize.FIRE`` and
``TDNCalculator``, (b) all together with :func:`tdn_calc.relax.batch_relax`. Prints
and writes (``--out``) wall times, their ratio and the largest final-energy difference over
molecules that converged both ways.

Without ``--model`` a randomly initialised TDN model is used (default size: TDNConfig's
defaults, lmax 2, 64 channels, 3 layers, 5 Å cutoff; ``--lmax/--channels/--layers`` change
it), with its energy scale raised to 5 eV so that the rattled molecules start with forces of
~0.1-0.2 eV/Å (a random model at scale 1 is already "converged"); the report says so. A random
model has no short-range repulsion, so a few molecules collapse and are stopped by the
divergence guard, identically in both modes.

    python benchmarks/relax_throughput.py --n 64 --threads 1 --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import torch
from ase.build import molecule
from ase.collections import g2

from tdn_calc.calculator import TDNCalculator
from tdn_calc.relax import ConvergenceWarning, batch_relax, relax

ELEMENTS = ("H", "C", "N", "O", "F", "S", "Cl")


def molecules(n: int, rattle: float = 0.1) -> list:
    """The first ``n`` g2 molecules (by name) with 3+ atoms made of ``ELEMENTS``, rattled."""
    names = sorted(
        name
        for name in g2.names
        if len(molecule(name)) >= 3 and set(molecule(name).get_chemical_symbols()) <= set(ELEMENTS)
    )
    if len(names) < n:
        raise SystemExit(f"only {len(names)} suitable g2 molecules, asked for {n}")
    out = []
    for k, name in enumerate(names[:n]):
        atoms = molecule(name)
        atoms.rattle(rattle, seed=k)
        out.append(atoms)
    return out


def make_model(
    path: str | None,
    dtype: torch.dtype,
    device: str,
    energy_scale: float = 5.0,
    size: dict | None = None,
):
    if path:
        from tdn_calc.checkpoint import load_model

        return load_model(path, device=device, dtype=dtype), f"checkpoint {path}"
    from ase.data import atomic_numbers

    from tdn_calc.nn.config import TDNConfig
    from tdn_calc.nn.model import TDNModel

    torch.manual_seed(0)
    # at the default scale (1 eV) a random model's forces on these molecules are ~0.03 eV/Å,
    # already below fmax; scale 5 gives ~0.15 eV/Å (median)
    config = TDNConfig(
        elements=[atomic_numbers[s] for s in ELEMENTS], energy_scale=energy_scale, **(size or {})
    )
    model = TDNModel(config).to(device=device, dtype=dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    return model, (
        f"random-init TDNModel (no trained model yet): lmax {config.lmax}, "
        f"{config.channels} channels, {config.num_layers} layers, cutoff {config.cutoff} Å, "
        f"{n_params} parameters, energy_scale {energy_scale} eV"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="number of molecules")
    parser.add_argument("--model", help="checkpoint (default: random-init realistic model)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--energy-scale", type=float, default=5.0, help="random model only")
    parser.add_argument("--lmax", type=int, help="random model only (default: TDNConfig's)")
    parser.add_argument("--channels", type=int, help="random model only")
    parser.add_argument("--layers", type=int, help="random model only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="FIRE", choices=["FIRE", "BFGS"],
                        help="of both the one-by-one ASE and the batched relaxations")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    size = {"lmax": args.lmax, "channels": args.channels, "num_layers": args.layers}
    size = {k: v for k, v in size.items() if v is not None}
    model, description = make_model(args.model, dtype, args.device, args.energy_scale, size)
    structures = molecules(args.n)
    warnings.simplefilter("ignore", ConvergenceWarning)
    calc = TDNCalculator(model, device=args.device, dtype=dtype)
    opt = args.optimizer
    relax(structures[0], calc, steps=2, optimizer=opt)  # warm-up (lazy initialisation, caches)
    batch_relax(structures[:2], model, steps=2, optimizer=opt)

    start = time.perf_counter()
    sequential = [relax(a, calc, fmax=args.fmax, steps=args.steps, optimizer=opt)
                  for a in structures]
    t_seq = time.perf_counter() - start
    start = time.perf_counter()
    batched = batch_relax(structures, model, fmax=args.fmax, steps=args.steps,
                          batch_size=args.batch_size, optimizer=opt)
    t_bat = time.perf_counter() - start

    both = [(s, b) for s, b in zip(sequential, batched, strict=True) if s.converged and b.converged]
    diffs = np.array([abs(s.energy - b.energy) for s, b in both])
    result = {
        "model": description,
        "device": args.device,
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "n_molecules": len(structures),
        "n_atoms_total": int(sum(len(a) for a in structures)),
        "fmax": args.fmax,
        "optimizer": opt,
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        f"sequential_ase_{opt.lower()}_s": round(t_seq, 2),
        f"batched_{opt.lower()}_s": round(t_bat, 2),
        "speedup": round(t_seq / t_bat, 2),
        "converged_sequential": sum(r.converged for r in sequential),
        "converged_batched": sum(r.converged for r in batched),
        "diverged_sequential": sum(r.diverged for r in sequential),
        "diverged_batched": sum(r.diverged for r in batched),
        "steps_sequential": int(sum(r.n_steps for r in sequential)),
        "steps_batched": int(sum(r.n_steps for r in batched)),
        "max_final_energy_diff_eV": float(diffs.max()) if diffs.size else None,
        "median_final_energy_diff_eV": float(np.median(diffs)) if diffs.size else None,
        "n_compared": len(both),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
