"""The soft-mode check at a relaxed minimum (tdn_calc.soft_modes).

On a corrugated toy surface the curvatures are known in closed form: the check finds the
saddle on the top site (negative curvature) and the true minimum in the hollow, and only the
adsorbate's free atoms are displaced. With a registered model whose card names a curvature
threshold, tdn-relax records the curvature and flags by it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc111, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixAtoms
from ase.io import read, write
from click.testing import CliRunner
from helpers import catalysis_manifest

from tdn_calc.soft_modes import (
    MAX_ADSORBATE_ATOMS,
    adsorbate_indices,
    force_constants,
    softest_curvature,
)
from tdn_calc.uncertainty import uncertain_atoms

A, PERIOD, KZ, KY = 0.2, 2.8, 5.0, 3.0  # eV, Å, eV/Å², eV/Å²


class Corrugated(Calculator):
    """Every non-metal atom: E = A cos(2π x / PERIOD) + KY/2 y² + KZ/2 (z - z0)²; metal
    atoms feel nothing. Curvature along x: -A (2π/PERIOD)² at x = 0 (a saddle, the "top
    site"), +A (2π/PERIOD)² at x = PERIOD/2 (the "hollow")."""

    implemented_properties = ("energy", "forces")

    def __init__(self, z0: float, **kwargs):
        super().__init__(**kwargs)
        self.z0, self.calls = z0, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        pos = self.atoms.positions
        ads = np.isin(self.atoms.numbers, (1, 6, 7, 8))
        q = 2 * np.pi / PERIOD
        x, y, z = pos[:, 0], pos[:, 1], pos[:, 2] - self.z0
        energy = (A * np.cos(q * x) + KY / 2 * y**2 + KZ / 2 * z**2) * ads
        forces = np.stack([A * q * np.sin(q * x), -KY * y, -KZ * z], axis=1) * ads[:, None]
        self.results = {"energy": float(energy.sum()), "forces": forces}


def _slab_with_h(x: float) -> Atoms:
    slab = fcc111("Pt", size=(2, 2, 2), vacuum=6.0)
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 2]))
    z0 = slab.positions[:, 2].max() + 1.5
    slab += Atoms("H", positions=[[x, 0.0, z0]])
    slab.info["z0"] = z0
    return slab


@pytest.mark.parametrize("x, expected", [(0.0, -A * (2 * np.pi / PERIOD) ** 2),
                                         (PERIOD / 2, min(A * (2 * np.pi / PERIOD) ** 2, KY))])
def test_softest_curvature_finds_the_saddle_and_the_minimum(x, expected):
    atoms = _slab_with_h(x)
    calc = Corrugated(atoms.info["z0"])
    assert softest_curvature(atoms, calc) == pytest.approx(expected, rel=1e-3)
    assert calc.calls == 6  # one free adsorbate atom, central differences


def test_force_constants_are_the_analytic_block_and_leave_atoms_untouched():
    atoms = _slab_with_h(PERIOD / 2)
    before = atoms.positions.copy()
    block = force_constants(atoms, Corrugated(atoms.info["z0"]), np.array([len(atoms) - 1]))
    assert block == pytest.approx(np.diag([A * (2 * np.pi / PERIOD) ** 2, KY, KZ]), abs=1e-3)
    assert np.array_equal(atoms.positions, before) and atoms.constraints


def test_adsorbate_is_the_free_non_metal_atoms_of_a_structure_with_metal():
    atoms = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(atoms, molecule("CO"), 1.8, "ontop")
    n = len(atoms)
    assert list(adsorbate_indices(atoms)) == [n - 2, n - 1]
    atoms.set_constraint(FixAtoms(indices=[n - 1]))
    assert list(adsorbate_indices(atoms)) == [n - 2]  # a fixed atom is not displaced
    assert adsorbate_indices(molecule("CH3CH2OH")) is None  # no metal: nothing to check
    assert adsorbate_indices(fcc111("Cu", size=(2, 2, 3), vacuum=6.0)) is None  # clean slab
    big = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    big += Atoms("H" * (MAX_ADSORBATE_ATOMS + 1),
                 positions=np.c_[np.arange(MAX_ADSORBATE_ATOMS + 1), np.zeros((13, 1)) + 1,
                                 np.full((13, 1), 12.0)])
    assert adsorbate_indices(big) is None  # too many for the check


def test_curvature_flags_below_its_threshold_and_nan_never():
    scores = {"adsorbate_curvature": np.array([np.nan, np.nan, -0.3, -0.3])}
    assert uncertain_atoms(scores, None, None, 0.0).tolist() == [False, False, True, True]
    assert not uncertain_atoms(scores, None, None, -1.0).any()
    assert uncertain_atoms(scores, None) is None  # no threshold: the array alone never flags


@pytest.mark.parametrize("curvature, flagged", [(1e6, True), (-1e6, False)])
def test_tdn_relax_records_the_curvature_and_flags_by_the_cards_threshold(
    tmp_path, monkeypatch, curvature, flagged
):
    """tdn-catalysis on H over Cu(111): the relaxed frame and report carry the adsorbate's
    softest curvature, computed as softest_curvature computes it by the model itself; the
    card's threshold alone decides ``uncertain`` (the novelty score never flags here)."""
    from tdn_calc.cli.relax import main

    from tdn_calc.calculator import TDNCalculator

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(tmp_path, 1e6, curvature=curvature))
    atoms = fcc111("Cu", size=(3, 3, 4), vacuum=8.0)
    add_adsorbate(atoms, "H", 1.0, "fcc")
    atoms.info.clear()
    atoms.set_constraint(FixAtoms(indices=[a.index for a in atoms if a.tag >= 3]))
    write("cu_h.xyz", atoms, format="extxyz")
    result = CliRunner().invoke(main, ["cu_h.xyz", "-m", "tdn-catalysis", "--steps", "40",
                                       "--report", "r.json"], catch_exceptions=False)
    assert result.exit_code in (0, 3), result.output
    frame = read("cu_h_relaxed.extxyz")
    (row,) = json.load(open("r.json"))["structures"]
    expected = softest_curvature(frame, TDNCalculator("tdn-catalysis", device="cpu",
                                                      extrapolation=False, uncertainty=False))
    assert frame.info["adsorbate_curvature"] == pytest.approx(expected, abs=1e-3)
    assert row["adsorbate_curvature"] == pytest.approx(expected, abs=1e-3)
    per_atom = frame.arrays["adsorbate_curvature"]
    assert np.isnan(per_atom[:-1]).all() and per_atom[-1] == pytest.approx(expected, abs=1e-3)
    assert row["uncertain"] is flagged and bool(frame.info["uncertain"]) is flagged
    assert ("soft_mode" in row["uncertain_signals"]) is flagged
    assert ("resting on a saddle or flat spot" in result.output) is flagged  # the warning says why


@pytest.mark.parametrize("converged, curvature, flagged", [
    (True, 1e6, True), (True, -1e6, False), (False, 1e6, False)])
def test_python_api_finish_decides_by_the_curvature_at_a_minimum(tmp_path, monkeypatch,
                                                                 converged, curvature, flagged):
    """``relax(..., finish=...)`` asks the same soft-mode check as tdn-relax, and only at a
    minimum the student reached (an unconverged student is finished anyway)."""
    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.relax.single import student_uncertain

    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(tmp_path, 1e6, curvature=curvature))
    atoms = fcc111("Cu", size=(3, 3, 4), vacuum=8.0)
    add_adsorbate(atoms, "H", 1.0, "fcc")
    atoms.set_constraint(FixAtoms(indices=[a.index for a in atoms if a.tag >= 3]))
    calc = TDNCalculator("tdn-catalysis", device="cpu")
    assert student_uncertain(calc, atoms, converged) is flagged

