"""The student's Hessian seeds a finishing teacher's BFGS (tdn_calc.relax.hessian).

On quadratic potentials the finite-difference Hessian is exact and a BFGS seeded with it
takes the exact Newton step: properties of the numerics, not of any trained model."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms, FixBondLength
from ase.optimize import BFGS

from tdn_calc.relax.hessian import DIAGONAL_GUESS, seed_hessian, student_hessian
from tdn_calc.relax.single import finish_with_teacher, relax
from tdn_calc.relax.teacher import TeacherStage


class Quadratic(Calculator):
    """E = 1/2 (x - x0)^T K (x - x0) over all coordinates (eV, Å); K symmetric PD."""

    implemented_properties = ("energy", "forces")

    def __init__(self, x0: np.ndarray, stiffness: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.x0, self.k = np.asarray(x0, float).ravel(), np.asarray(stiffness, float)
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        d = self.atoms.positions.ravel() - self.x0
        self.results = {"energy": 0.5 * d @ self.k @ d,
                        "forces": -(self.k @ d).reshape(-1, 3)}


def _problem(n: int = 4, seed: int = 0, offset: float = 0.1):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3 * n, 3 * n))
    stiffness = a @ a.T / (3 * n) + 2.0 * np.eye(3 * n)  # PD, eigenvalues above 2 eV/Å²
    x0 = rng.normal(scale=1.5, size=(n, 3))
    atoms = Atoms(f"Cu{n}", positions=x0 + rng.normal(scale=offset, size=(n, 3)))
    return atoms, x0, stiffness


def test_finite_differences_recover_a_quadratic_hessian_and_keep_fixed_atoms_diagonal():
    atoms, x0, stiffness = _problem()
    hessian = student_hessian(atoms, Quadratic(x0, stiffness))
    assert hessian == pytest.approx(stiffness, abs=1e-6)
    atoms.set_constraint(FixAtoms(indices=[1]))
    hessian = student_hessian(atoms, Quadratic(x0, stiffness))
    free = [0, 1, 2, 6, 7, 8, 9, 10, 11]
    assert hessian[np.ix_(free, free)] == pytest.approx(stiffness[np.ix_(free, free)], abs=1e-6)
    assert hessian[3:6, 3:6] == pytest.approx(DIAGONAL_GUESS * np.eye(3))
    assert not hessian[3:6, free].any()


def test_hessian_is_symmetric_and_positive_definite_on_a_real_surface():
    """EMT Cu(111) with an O atom on a top site (a saddle of the O position in-plane): the
    seed is symmetric with every eigenvalue at least the floor."""
    from ase.build import add_adsorbate, fcc111

    slab = fcc111("Cu", size=(2, 2, 2), vacuum=6.0)
    add_adsorbate(slab, "O", 1.8, "ontop")
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 2]))
    hessian = student_hessian(slab, EMT(), min_curvature=0.5)
    assert hessian == pytest.approx(hessian.T)
    assert np.linalg.eigvalsh(hessian).min() >= 0.5 - 1e-9


def test_other_constraints_and_large_systems_give_no_seed(monkeypatch):
    atoms, x0, stiffness = _problem()
    calc = Quadratic(x0, stiffness)
    atoms.set_constraint(FixBondLength(0, 1))
    assert student_hessian(atoms, calc) is None
    atoms.set_constraint()
    import sys

    module = sys.modules[student_hessian.__module__]  # tdn_calc.relax names the function too
    monkeypatch.setattr(module, "MAX_FREE_ATOMS", 3)
    assert student_hessian(atoms, calc) is None and calc.calls == 0  # 4 free atoms
    atoms.set_constraint(FixAtoms(indices=[0]))
    assert student_hessian(atoms, calc) is not None


def test_a_seeded_bfgs_takes_the_newton_step():
    atoms, x0, stiffness = _problem(offset=0.03)  # within BFGS's 0.2 Å step cap
    atoms.calc = Quadratic(x0, stiffness)
    opt = BFGS(atoms, logfile=None)
    assert seed_hessian(opt, stiffness)
    opt.run(fmax=1e-6, steps=5)
    assert opt.nsteps == 1 and atoms.positions == pytest.approx(x0, abs=1e-8)
    assert not seed_hessian(BFGS(atoms, logfile=None), np.eye(3))  # wrong size: untouched


def test_finish_starts_from_the_students_hessian(monkeypatch):
    """Student and teacher share the curvature but not the minimum (0.05 Å apart): seeded
    with the student's Hessian, the teacher reaches its own minimum in one step; with
    BFGS's diagonal guess it needs several."""
    atoms, x0, stiffness = _problem(seed=1)
    student = Quadratic(x0 + 0.05, stiffness)
    teacher = Quadratic(x0, stiffness)
    first = relax(atoms, student, fmax=1e-4, steps=200, optimizer="BFGS", warn=False)
    monkeypatch.setattr("tdn_calc.teachers.get_teacher", lambda name, device="cpu": teacher)
    stage = TeacherStage(finish="emt", finish_when="always")  # "emt" stands for the toy
    seeded = finish_with_teacher(first, stage, None, 1e-4, optimizer="BFGS", student=student)
    plain = finish_with_teacher(first, stage, None, 1e-4, optimizer="BFGS")
    assert seeded.converged and plain.converged
    assert seeded.teacher_steps == 1 and plain.teacher_steps > 3
    assert seeded.atoms.positions == pytest.approx(x0, abs=1e-6)
