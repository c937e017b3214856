"""Relax a batch of Pt(111) slabs with TorchSim's batched FIRE and a TDN model.

Usage: python examples/torchsim_relax_slabs.py [MODEL]   (needs: pip install "tdn-calc[torchsim]")

MODEL is a checkpoint path or registered name. Without one (no trained Pt model ships yet) a
*randomly initialised* TDN model is used (energy scale 5 eV): the numbers only show that
the interface works, not Pt chemistry. TorchSim 0.3 has one ``pbc`` flag per state, so the
slabs are made periodic in z too, with 20 Å of vacuum (wider than the cutoff), which gives the
same energies and forces as ``pbc=[True, True, False]``. TorchSim 0.3 has no constraints:
every atom relaxes. The result is checked against tdn_calc's own batched FIRE (same
algorithm, ASE flavour).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
import torch_sim as ts
from ase.build import fcc111

from tdn_calc.relax import batch_relax
from tdn_calc.torchsim import TDNTorchSimModel

FMAX = 0.01  # eV/Å


def make_model(spec: str | None) -> torch.nn.Module:
    if spec:
        from tdn_calc.checkpoint import load_model

        return load_model(spec, device="cpu", dtype="float64")
    from tdn_calc.nn.config import TDNConfig
    from tdn_calc.nn.model import TDNModel

    torch.manual_seed(0)
    config = TDNConfig(elements=[1, 8, 78], lmax=1, channels=16, num_layers=2, cutoff=5.0,
                       energy_scale=5.0)  # fmt: skip
    return TDNModel(config).double().eval()


def slabs(n: int = 4) -> list:
    out = []
    for k in range(n):
        slab = fcc111("Pt", size=(2, 2, 3), vacuum=10.0, a=3.92)
        slab.pbc = True
        slab.rattle(0.3, seed=k)
        out.append(slab)
    return out


def main() -> None:
    torch.set_num_threads(1)
    model = make_model(sys.argv[1] if len(sys.argv) > 1 else None)
    ts_model = TDNTorchSimModel(model, dtype=torch.float64, compute_stress=False)
    structures = slabs()
    start_out = ts_model(ts.io.atoms_to_state(structures, torch.device("cpu"), torch.float64))
    start = time.perf_counter()
    final = ts.optimize(
        system=structures,
        model=ts_model,
        optimizer=ts.optimizers.fire,
        convergence_fn=ts.runners.generate_force_convergence_fn(FMAX, include_cell_forces=False),
        max_steps=500,
        steps_between_swaps=1,
    )
    elapsed = time.perf_counter() - start
    out = ts_model(final)
    forces = out["forces"].numpy()
    sys_idx = final.system_idx.numpy()
    ours = batch_relax(structures, model, fmax=FMAX, steps=500, optimizer="FIRE", warn=False)
    print(f"TorchSim FIRE: {len(structures)} slabs in {elapsed:.1f} s")
    print("slab  fmax0/eV/Å  E0/eV  | TorchSim: E/eV  fmax/eV/Å | tdn batch_relax: E/eV  steps")
    f0 = start_out["forces"].numpy()
    for s, res in enumerate(ours):
        sel = sys_idx == s
        fmax0 = float(np.linalg.norm(f0[sel], axis=1).max())
        fmax = float(np.linalg.norm(forces[sel], axis=1).max())
        e0, e = float(start_out["energy"][s]), float(out["energy"][s])
        print(f"{s:4d}  {fmax0:10.3f}  {e0:8.4f} | {e:14.5f}  {fmax:9.4f} | "
              f"{res.energy:20.5f}  {res.n_steps:5d}")  # fmt: skip


if __name__ == "__main__":
    main()
