"""TDN behind TorchSim's ModelInterface: TorchSim's own conformance check, agreement with
the ASE calculator, and a batched TorchSim FIRE relaxation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torch_sim")

import torch_sim as ts
from ase.build import bulk, fcc111
from relax_testing import MorsePairs, one_thread  # noqa: F401
from torch_sim.models.interface import validate_model_outputs

from tdn_calc.calculator import TDNCalculator
from tdn_calc.torchsim import TDNTorchSimModel

ELEMENTS = (1, 8, 14, 26, 78)  # validate_model_outputs uses Si and Fe


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torchsim_validation_helper_passes(tiny_model, dtype):
    model = TDNTorchSimModel(tiny_model(ELEMENTS), dtype=dtype)
    assert model.dtype == dtype and model.device == torch.device("cpu")
    validate_model_outputs(model, torch.device("cpu"), dtype)


def test_matches_ase_calculator(tiny_model):
    model = tiny_model(ELEMENTS, energy_scale=3.0)
    structures = [bulk("Pt", "fcc", a=3.9, cubic=True), bulk("Si", "diamond", a=5.43)]
    for k, a in enumerate(structures):
        a.rattle(0.05, seed=k)
    state = ts.io.atoms_to_state(structures, torch.device("cpu"), torch.float64)
    before = state.positions.clone()
    out = TDNTorchSimModel(model)(state)
    assert torch.equal(state.positions, before)
    assert out["energy"].shape == (2,) and out["forces"].shape == (6, 3)
    assert out["stress"].shape == (2, 3, 3)
    start = 0
    for s, atoms in enumerate(structures):
        atoms.calc = TDNCalculator(model)
        n = len(atoms)
        assert float(out["energy"][s]) == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(out["forces"][start:start + n].numpy(), atoms.get_forces(),
                                   atol=1e-8)  # fmt: skip
        np.testing.assert_allclose(out["stress"][s].numpy(), atoms.get_stress(voigt=False),
                                   atol=1e-8)  # fmt: skip
        start += n


def test_torchsim_fire_relaxes_a_batch_of_slabs():
    """Through the same wrapper, TorchSim's FIRE converges a batch; the smooth toy stands in
    for the model (a random TDN model's relaxation may not converge)."""
    model = MorsePairs((1, 8, 78), cutoff=4.0).double()
    slabs = []
    for k in range(2):
        slab = fcc111("Pt", size=(2, 2, 2), vacuum=6.0, a=3.92)
        slab.pbc = True  # TorchSim 0.3: one pbc flag; 12 Å vacuum > cutoff
        slab.rattle(0.15, seed=k)
        slabs.append(slab)
    ts_model = TDNTorchSimModel(model, compute_stress=False)
    start = ts_model(ts.io.atoms_to_state(slabs, torch.device("cpu"), torch.float64))
    final = ts.optimize(
        system=slabs, model=ts_model, optimizer=ts.optimizers.fire,
        convergence_fn=ts.runners.generate_force_convergence_fn(0.02, include_cell_forces=False),
        max_steps=300, steps_between_swaps=1,
    )  # fmt: skip
    out = ts_model(final)
    assert final.n_systems == 2
    assert bool((out["energy"] < start["energy"]).all())
    fmax = torch.zeros(2, dtype=torch.float64).scatter_reduce(
        0, final.system_idx, out["forces"].norm(dim=1), "amax"
    )
    assert bool((fmax < 0.02).all()), fmax


def test_torchsim_nve_conserves_energy(tiny_model):
    """TorchSim's velocity-Verlet NVE with TDN forces (exact gradients) conserves energy."""
    model = tiny_model((1, 8, 29), energy_scale=50.0)
    cells = [bulk("Cu", "fcc", a=3.6, cubic=True) for _ in range(2)]
    for k, cell in enumerate(cells):
        cell.rattle(0.05, seed=k)
    ts_model = TDNTorchSimModel(model, compute_stress=False)
    state = ts.io.atoms_to_state(cells, torch.device("cpu"), torch.float64)
    dt = torch.tensor(0.001 * ts.units.MetalUnits.time, dtype=torch.float64)  # 1 fs (time: ps)
    kT = torch.tensor(300 * ts.units.MetalUnits.temperature, dtype=torch.float64)
    init, step = ts.integrators.nve(ts_model, dt=dt, kT=kT, seed=0)
    md = init(state)

    def kinetic(s):
        return ts.quantities.calc_kinetic_energy(momenta=s.momenta, masses=s.masses,
                                                 system_idx=s.system_idx)  # fmt: skip

    e0 = md.energy + kinetic(md)
    kinetics = []
    for _ in range(30):
        md = step(md, dt=dt)
        kinetics.append(kinetic(md))
    swing = torch.stack(kinetics).amax(0) - torch.stack(kinetics).amin(0)
    drift = (md.energy + kinetic(md) - e0).abs()
    assert bool((swing > 0.01).all())  # kinetic and potential energy really exchange (eV)
    assert bool((drift < 0.01 * swing).all()), (drift, swing)
