"""relax(): optimizers, cell filters, constraints, symmetry, trajectory, divergence guard.
Real potential-energy surfaces come from ASE's EMT; TDN runs use a tiny random model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import read
from relax_testing import MorsePairs, one_thread  # noqa: F401  (autouse fixture)

from tdn_calc.calculator import TDNCalculator
from tdn_calc.errors import InputError
from tdn_calc.relax import ConvergenceWarning, DivergenceGuard, RelaxResult, relax
from tdn_calc.slab import fix_below, fix_bottom_layers, pbc_messages


def _rattled_cu() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.mark.parametrize("optimizer", ["FIRE", "BFGS", "LBFGS", "BFGSLineSearch", "fire", "auto"])
def test_optimizers_converge_and_lower_the_energy(optimizer):
    atoms = _rattled_cu()
    start = atoms.copy()
    start.calc = EMT()
    e_start = start.get_potential_energy()
    result = relax(atoms, EMT(), fmax=0.02, steps=300, optimizer=optimizer)
    assert isinstance(result, RelaxResult)
    assert result.converged and result.reason is None
    assert result.fmax < 0.02
    assert np.abs(result.atoms.get_forces()).max() < 0.02
    assert result.energy < e_start
    assert result.energies[0] == pytest.approx(e_start)
    assert result.energies[-1] == pytest.approx(result.energy)
    assert len(result.energies) == len(result.fmaxs) >= result.n_steps
    assert result.wall_time > 0
    assert result.optimizer.lower() == ("bfgs" if optimizer == "auto" else optimizer.lower())
    np.testing.assert_array_equal(atoms.positions, start.positions)  # input untouched
    assert atoms.calc is None


def test_unknown_optimizer_and_filter_are_rejected():
    with pytest.raises(InputError, match="FIRE"):
        relax(_rattled_cu(), EMT(), optimizer="SD")
    with pytest.raises(InputError, match="frechet"):
        relax(_rattled_cu(), EMT(), cell_filter="box")
    with pytest.raises(InputError, match="named optimizer"):
        relax(_rattled_cu(), EMT(), optimizer_kwargs={"maxstep": 0.1})  # default: auto
    with pytest.raises(InputError, match="pbc"):
        relax(molecule("CO"), EMT(), cell_filter="frechet")


@pytest.mark.parametrize("cell_filter", ["frechet", "exp"])
def test_cell_relaxation_of_strained_bulk_drops_the_pressure(cell_filter):
    atoms = bulk("Cu", "fcc", a=3.6 * 1.04, cubic=True)
    atoms.calc = EMT()
    p_start = -np.trace(atoms.get_stress(voigt=False)) / 3
    result = relax(atoms, EMT(), fmax=0.005, steps=200, cell_filter=cell_filter)
    final = result.atoms
    p_end = -np.trace(final.get_stress(voigt=False)) / 3
    assert result.converged
    assert abs(p_end) < 0.02 * abs(p_start)
    assert final.get_volume() < atoms.get_volume()  # the stretched cell shrinks
    assert "stress" in final.calc.results


def test_fix_symmetry_keeps_the_space_group():
    from ase.spacegroup.symmetrize import check_symmetry

    atoms = bulk("Cu", "fcc", a=3.7) * (2, 2, 2)
    result = relax(atoms, EMT(), fmax=0.01, cell_filter="frechet", fix_symmetry=True)
    assert result.converged
    assert check_symmetry(result.atoms, 1e-3).number == 225


def test_constraints_are_respected_and_kept():
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=6.0)
    slab.pbc = [True, True, False]
    n_fixed = fix_bottom_layers(slab, 2)
    assert n_fixed == 8
    slab.positions[-1, 2] += 0.3  # push a top atom out
    result = relax(slab, EMT(), fmax=0.02)
    fixed = slab.constraints[0].get_indices()
    np.testing.assert_allclose(result.atoms.positions[fixed], slab.positions[fixed], atol=0)
    assert not np.allclose(result.atoms.positions[-1], slab.positions[-1])
    assert isinstance(result.atoms.constraints[0], FixAtoms)


def test_fix_below_and_layer_errors():
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=6.0)
    z_mid = np.sort(np.unique(slab.positions[:, 2].round(3)))[1]
    assert fix_below(slab, z_mid - 0.1) == 4
    with pytest.raises(InputError, match="layers"):
        fix_bottom_layers(fcc111("Pt", size=(2, 2, 3), vacuum=6.0), 3)


def test_pbc_messages_flag_vacuum_and_missing_cell():
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=8.0)
    slab.pbc = True
    (message,) = pbc_messages(slab)
    assert "c (" in message and "[True, True, False]" in message
    slab.pbc = [True, True, False]
    assert pbc_messages(slab) == []
    assert pbc_messages(bulk("Cu")) == []
    with pytest.raises(InputError, match="no lattice vector"):
        pbc_messages(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], pbc=True))


def test_not_converged_warns_with_fmax_and_target():
    with pytest.warns(ConvergenceWarning, match=r"fmax .* target 0\.001"):
        result = relax(_rattled_cu(), EMT(), fmax=0.001, steps=2)
    assert not result.converged
    assert result.n_steps == 2
    assert result.reason == "max steps (2) reached"
    assert result.fmax > 0.001


def test_trajectory_any_format(tmp_path):
    path = tmp_path / "path.extxyz"
    result = relax(_rattled_cu(), EMT(), fmax=0.02, trajectory=path, loginterval=2)
    frames = read(path, index=":")
    assert 2 <= len(frames) <= result.n_steps // 2 + 2
    assert frames[-1].get_potential_energy() == pytest.approx(result.energy)
    np.testing.assert_allclose(frames[-1].positions, result.atoms.positions, atol=1e-6)


class _Collapse(Calculator):
    """A toy PES that pulls every atom towards atom 0 without limit: E = -k sum |r_i - r_0|^-1
    (diverges, atoms overlap)."""

    implemented_properties = ("energy", "forces")

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions - self.atoms.positions[0]
        r = np.linalg.norm(d[1:], axis=1)
        forces = np.zeros_like(d)
        forces[1:] = -5.0 * d[1:] / r[:, None] ** 3
        forces[0] = -forces[1:].sum(0)
        self.results = {"energy": float(-5.0 * (1 / r).sum()), "forces": forces}


class _Runaway(Calculator):
    """E = -|x|^2 per atom: atoms fly away and the energy falls without bound."""

    implemented_properties = ("energy", "forces")

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = self.atoms.positions
        self.results = {"energy": float(-(x**2).sum()), "forces": 2 * x}


def test_divergence_guard_stops_collapsing_atoms():
    atoms = Atoms("H3", positions=[[0, 0, 0], [1.5, 0, 0], [0, 1.6, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = relax(atoms, _Collapse(), steps=500)
    assert not result.converged
    assert result.diverged
    assert result.n_steps < 500
    assert "apart" in result.reason or "eV/atom" in result.reason


def test_divergence_guard_stops_runaway_and_can_be_disabled():
    atoms = Atoms("H2", positions=[[1.0, 0, 0], [0, 1.0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = relax(atoms, _Runaway(), steps=300)
        assert result.diverged and result.n_steps < 300
        unguarded = relax(atoms, _Runaway(), steps=30, guard=None)
    assert unguarded.reason == "max steps (30) reached"
    guard = DivergenceGuard(max_energy_drop=np.inf, max_displacement=2.0)
    assert "moved" in guard.check(0.0, 0.0, 2, np.zeros((2, 3)), np.array([0.1, 2.5]), None)
    assert "non-finite" in guard.check(np.nan, 0.0, 2, np.zeros((2, 3)), np.zeros(2), None)


def test_tdn_calculator_relax_keeps_info(tiny_model):
    """info survives a TDNCalculator relaxation: converged with the smooth toy, and with a
    random TDN model (whose relaxation may or may not converge) whatever the outcome."""
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=2)
    atoms.info.update(charge=-1, spin=1)
    result = relax(atoms, TDNCalculator(MorsePairs(), device="cpu"), fmax=0.05, steps=200)
    assert result.converged
    assert result.atoms.info["charge"] == -1 and result.atoms.info["spin"] == 1
    result = relax(atoms, TDNCalculator(tiny_model(), device="cpu"), fmax=0.05, steps=20,
                   warn=False)  # fmt: skip
    assert np.isfinite(result.energy) and result.n_steps <= 20
    assert result.atoms.info["charge"] == -1 and result.atoms.info["spin"] == 1
    assert result.atoms.calc.results["forces"].shape == (6, 3)
