"""TDNCalculator: ASE contract, finite-difference checks, ASE workflows, caching, input
validation and pymatgen interop. Uses a tiny random float64 model (elements H, C, O)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from ase.mep import NEB
from ase.optimize import BFGS, FIRE, LBFGS

from tdn_calc.calculator import TDNCalculator
from tdn_calc.checkpoint import save_model
from tdn_calc.errors import InputError, UnsupportedElementError
from tdn_calc.fileio import sha256_file
from tdn_calc.interop import predict, to_atoms, to_pymatgen


@pytest.fixture
def calc(tiny_model):
    return TDNCalculator(tiny_model(), device="cpu")


def _periodic(seed=0) -> Atoms:
    """8 C/H/O atoms on a rattled grid in a small triclinic cell (smaller than the cutoff)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.2, 0.0, 0.0], [0.6, 4.0, 0.0], [0.3, -0.4, 4.4]])
    grid = np.array([[a, b, c] for a in (0, 0.5) for b in (0, 0.5) for c in (0, 0.5)])
    frac = grid + rng.normal(scale=0.03, size=grid.shape)
    return Atoms("C2O2H4", scaled_positions=frac, cell=cell, pbc=True)


def _slab() -> Atoms:
    atoms = _periodic(1)
    atoms.cell[2] = [0.0, 0.0, 12.0]  # vacuum along c
    atoms.pbc = [True, True, False]
    return atoms


def _ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.mark.parametrize("make", [_ethanol, _periodic, _slab])
def test_forces_match_finite_differences(calc, make):
    atoms = make()
    atoms.calc = calc
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    assert np.abs(forces).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(forces, numerical, atol=1e-7, rtol=1e-6)


def test_stress_matches_finite_differences(calc):
    atoms = _periodic()
    atoms.calc = calc
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert stress.shape == (6,) and np.abs(stress).max() > 1e-5
    np.testing.assert_allclose(stress, numerical, atol=1e-8, rtol=1e-6)
    full = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(full, full.T, atol=1e-12)


def test_results_types_shapes_and_per_atom_energies(calc):
    atoms = _periodic()
    atoms.calc = calc
    energies = atoms.get_potential_energies()
    assert isinstance(atoms.get_potential_energy(), float)
    assert atoms.get_potential_energy() == atoms.get_potential_energy(force_consistent=True)
    assert energies.dtype == np.float64 and energies.shape == (len(atoms),)
    assert np.isclose(energies.sum(), atoms.get_potential_energy(), atol=1e-10)
    assert atoms.get_forces().dtype == np.float64 and atoms.get_forces().shape == (8, 3)
    assert atoms.get_stress().dtype == np.float64
    assert calc.device == torch.device("cpu") and calc.dtype == torch.float64


def test_stress_needs_a_3d_cell(calc):
    for atoms in (_slab(), _ethanol()):
        atoms.calc = calc
        atoms.get_forces()
        with pytest.raises(PropertyNotImplementedError, match="periodic in all three"):
            atoms.get_stress()


def test_no_recomputation_when_nothing_changed(calc, monkeypatch):
    calls = []
    forward = calc.model.forward
    monkeypatch.setattr(calc.model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    atoms = _periodic()
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_stress()
    atoms.get_potential_energies()
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert len(calls) == 2
    atoms.cell[0, 0] += 0.01
    atoms.get_stress()
    atoms.get_potential_energy()
    assert len(calls) == 3


@pytest.mark.parametrize("optimizer", [FIRE, BFGS, LBFGS])
def test_optimizers_run_and_descend(calc, optimizer):
    atoms = _ethanol()
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    opt = optimizer(atoms, logfile=None, maxstep=0.05)  # a random PES: keep steps small
    opt.run(fmax=1e-3, steps=1)
    assert atoms.get_potential_energy() < e0  # the first step follows the forces downhill
    opt.run(fmax=1e-3, steps=9)  # the random PES is not convex: only check the run is sane
    assert opt.nsteps == 10
    assert np.isfinite(atoms.get_forces()).all()


def test_cell_relaxation_with_frechet_filter(calc):
    atoms = _periodic()
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    cell0 = atoms.cell.array.copy()
    opt = FIRE(FrechetCellFilter(atoms), logfile=None, maxstep=0.05)
    opt.run(fmax=1e-3, steps=20)
    assert atoms.get_potential_energy() < e0
    assert not np.allclose(atoms.cell.array, cell0)


def test_fixed_atoms_do_not_move(calc):
    atoms = _slab()
    atoms.set_constraint(FixAtoms(indices=[0, 1, 2]))
    atoms.calc = calc
    before = atoms.positions.copy()
    BFGS(atoms, logfile=None, maxstep=0.05).run(fmax=1e-3, steps=10)
    np.testing.assert_array_equal(atoms.positions[:3], before[:3])
    assert not np.allclose(atoms.positions[3:], before[3:])
    assert np.abs(atoms.get_forces()[:3]).max() == 0.0


def test_velocity_verlet_conserves_energy_and_langevin_runs(calc):
    atoms = _ethanol()
    atoms.calc = calc
    masses = atoms.get_masses()[:, None]
    kt = 300 * units.kB
    atoms.set_momenta(np.random.default_rng(0).normal(size=(len(atoms), 3)) * np.sqrt(masses * kt))
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.1 * units.fs, logfile=None).run(20)
    assert abs(atoms.get_total_energy() - e0) < 1e-4
    Langevin(
        atoms,
        0.5 * units.fs,
        temperature_K=300,
        friction=0.01,
        fixcm=False,
        rng=np.random.default_rng(1),
    ).run(5)
    assert np.isfinite(atoms.positions).all()


def test_neb_with_three_images(tiny_model):
    model = tiny_model()
    initial = _ethanol()
    final = initial.copy()
    final.positions[8] += [0.4, 0.3, 0.0]  # move the hydroxyl H
    images = [initial] + [initial.copy() for _ in range(1)] + [final]
    neb = NEB(images, method="improvedtangent")
    neb.interpolate()
    for image in images:
        image.calc = TDNCalculator(model, device="cpu")
    forces = neb.get_forces()
    assert forces.shape == (len(initial), 3) and np.isfinite(forces).all()
    FIRE(neb, logfile=None, maxstep=0.05).run(fmax=1e-2, steps=5)
    assert np.isfinite(images[1].get_potential_energy())


def test_clear_errors_name_the_atom(calc):
    pt = _ethanol()
    pt.numbers[4] = 78
    with pytest.raises(UnsupportedElementError, match=r"Pt \(atom 4\).*supported: H C O"):
        calc.get_potential_energy(pt)
    bad = _ethanol()
    bad.positions[2, 1] = np.nan
    with pytest.raises(InputError, match=r"atom 2 \(O\) has a non-finite position"):
        calc.get_potential_energy(bad)
    with pytest.raises(InputError, match="no atoms"):
        calc.get_potential_energy(Atoms())
    close = _ethanol()
    close.positions[5] = close.positions[1] + [0.1, 0.0, 0.0]
    with pytest.raises(InputError, match=r"atom 1 \(C\) is 0.100 Å from atom 5"):
        calc.get_potential_energy(close)
    # the threshold is configurable
    lenient = TDNCalculator(calc.model, device="cpu", min_distance=0.05)
    assert np.isfinite(lenient.get_potential_energy(close))
    nocell = _ethanol()
    nocell.pbc = [True, True, False]
    with pytest.raises(InputError, match="lattice vector a is zero"):
        calc.get_potential_energy(nocell)
    flat = _periodic()
    flat.cell[2] = flat.cell[0] + flat.cell[1]
    with pytest.raises(InputError, match="linearly dependent"):
        calc.get_potential_energy(flat)


def test_model_from_path_and_dtype(tmp_path, tiny_model):
    model = tiny_model()
    path = save_model(model, tmp_path / "m.safetensors")
    atoms = _ethanol()
    ref = TDNCalculator(model, device="cpu").get_potential_energy(atoms)
    calc64 = TDNCalculator(str(path), device="cpu", dtype="float64")
    assert calc64.get_potential_energy(atoms) == pytest.approx(ref, abs=1e-10)
    calc32 = TDNCalculator(path, device="cpu")
    assert calc32.dtype == torch.float32
    assert calc32.get_potential_energy(atoms) == pytest.approx(ref, abs=1e-4)
    assert calc32.get_forces(atoms).dtype == np.float64
    with pytest.raises(InputError, match="float32"):
        TDNCalculator(path, device="cpu", dtype="float16")


def test_auto_model_selection(tmp_path, monkeypatch, tiny_model):
    empty = tmp_path / "empty.json"
    empty.write_text('{"format_version": 1, "models": {}}')
    monkeypatch.setenv("TDN_MANIFEST", str(empty))
    with pytest.raises(UnsupportedElementError, match="no pretrained models are registered"):
        TDNCalculator(device="cpu").get_potential_energy(_ethanol())
    path = save_model(tiny_model(elements=(1, 6, 8, 78)), tmp_path / "hcopt.safetensors")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "format_version": 1,
                "models": {
                    "hcopt": {
                        "file": path.name,
                        "sha256": sha256_file(path),
                        "elements": ["H", "C", "O", "Pt"],
                    }
                },
            }
        )
    )
    monkeypatch.setenv("TDN_MANIFEST", str(manifest))
    calc = TDNCalculator(None, device="cpu", dtype="float64")
    assert np.isfinite(calc.get_potential_energy(_ethanol()))
    assert calc.model_name == "hcopt"
    with pytest.raises(UnsupportedElementError, match="hcopt: H C O Pt"):
        calc.get_potential_energy(Atoms("Cu", positions=[[0, 0, 0]]))
    by_name = TDNCalculator("HCOPT", device="cpu", dtype="float64")
    assert by_name.get_potential_energy(_ethanol()) == pytest.approx(
        calc.get_potential_energy(_ethanol())
    )


def test_pymatgen_round_trip_and_one_liner(calc):
    for atoms in (_periodic(), _slab(), _ethanol()):
        obj = to_pymatgen(atoms)
        back = to_atoms(obj)
        np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-12)
        np.testing.assert_array_equal(back.numbers, atoms.numbers)
        np.testing.assert_array_equal(back.pbc, atoms.pbc)
        if atoms.pbc.any():
            np.testing.assert_allclose(back.cell.array, atoms.cell.array, atol=1e-12)
    structure = to_pymatgen(_periodic())
    energy = calc.get_potential_energy(to_atoms(structure))
    result = predict(structure, calc)
    assert result["energy"] == pytest.approx(energy)
    assert result["forces"].shape == (8, 3) and result["stress"].shape == (6,)
    assert "stress" not in predict(to_pymatgen(_ethanol()), calc)


def test_cuda_matches_cpu(tiny_model, cuda):
    atoms = _periodic()
    cpu = TDNCalculator(tiny_model(), device="cpu")
    gpu = TDNCalculator(tiny_model(), device="cuda")
    assert gpu.device.type == "cuda"
    assert gpu.get_potential_energy(atoms) == pytest.approx(cpu.get_potential_energy(atoms))
    np.testing.assert_allclose(gpu.get_forces(atoms), cpu.get_forces(atoms), atol=1e-8)
    np.testing.assert_allclose(gpu.get_stress(atoms), cpu.get_stress(atoms), atol=1e-8)
