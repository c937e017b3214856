"""Timing one energy+forces evaluation of an ASE calculator (shared by both environments).

Only ASE and NumPy are imported here, so the same code times TDN in the project's
environment and the peers (MACE, SevenNet, CHGNet) inside ``benchmarks/.venv-peers``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

RATTLE_A = 1e-4  # Å; every timed call sees new positions, so no calculator can reuse a result


def rattle(atoms_list: Sequence[Atoms], rng: np.random.Generator) -> None:
    """Move every atom by ``N(0, RATTLE_A)`` Å in place (defeats result caching)."""
    for atoms in atoms_list:
        atoms.positions += rng.normal(scale=RATTLE_A, size=atoms.positions.shape)


def calculator_call_ms(
    calc: Calculator, atoms_list: Sequence[Atoms], rng: np.random.Generator
) -> tuple[float, float]:
    """Wall and process CPU time in ms of ``calc.calculate(atoms, ["energy", "forces"])``
    over ``atoms_list``.

    The structures are evaluated one after the other (a "batch" through an ASE calculator
    is a loop); the returned time is the total for all of them. The forces are read back as
    a NumPy array so lazily evaluated results are included.
    """
    rattle(atoms_list, rng)

    def call() -> None:
        for atoms in atoms_list:
            calc.calculate(atoms, ["energy", "forces"], all_changes)
            forces = np.asarray(calc.results["forces"])
            if forces.shape != (len(atoms), 3):
                name = type(calc).__name__
                raise RuntimeError(f"{name} returned forces of shape {forces.shape}")

    return timed_ms(call)


def timed_ms(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall time and process CPU time of ``fn()``, ms.

    With one compute thread the CPU time leaves out the time the process waited for a
    core, so it is the steadier number on a shared machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return 1e3 * (time.perf_counter() - wall), 1e3 * (time.process_time() - cpu)
