"""Benchmark structures, machine facts and the round-robin timer shared by the benchmarks.

Structures (all Å; molecules get a 30 Å box with ``pbc=False`` so that calculators that
always need a cell, such as CHGNet's, accept them; the box changes nothing for the others):

* ``molecule``: methyl pentanoate C6H12O2, 20 atoms (RDKit ETKDG conformer);
* ``slab``: Pt(111) 3x3x4 with CO on top, 38 atoms, ``pbc=(T, T, F)``;
* ``bulk``: fcc Cu cubic supercells (4 n^3 atoms), rattled by 0.02 Å;
* ``batch``: 32 different small organic molecules (H C N O, 6-24 atoms, 498 in all).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from calculator_overhead import molecule_20, pt_co_slab

BOX_A = 30.0  # Å, box around molecules (pbc stays False)
CU_A = 3.61  # Å, fcc Cu lattice constant

BATCH_SMILES = (
    "CCCCC(=O)OC", "CC(=O)Nc1ccc(O)cc1", "OC(=O)c1ccccc1O", "CCOC(=O)C", "CC(C)CO",
    "c1ccncc1", "NCC(=O)O", "CC(=O)OC1=CC=CC=C1C(=O)O", "CCN(CC)CC", "OCC(O)CO",
    "CC(C)(C)O", "C1CCOC1", "COc1ccccc1", "CC(N)C(=O)O", "O=C1CCCCC1", "CC#N", "CCCCCCO",
    "c1ccc2ccccc2c1", "CC(=O)C(C)C", "NC(=O)N", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "OCCN",
    "CCOCC", "C=CC(=O)OC", "CC1=CC=CC=C1", "CCCC(=O)N", "OC1CCCCC1", "N#CC1=CC=CC=C1",
    "CC(C)NC(C)C", "O=CC1=CC=CO1", "CCCCCC", "COC(=O)C(C)=C",
)  # fmt: skip

ELEMENTS = (1, 6, 7, 8, 29, 78)  # H C N O Cu Pt: every element of every benchmark structure


def boxed(atoms: Atoms) -> Atoms:
    """A copy of a molecule centred in a ``BOX_A`` cube, still non-periodic."""
    atoms = atoms.copy()
    atoms.cell = np.eye(3) * BOX_A
    atoms.center()
    atoms.pbc = False
    return atoms


def smiles_molecule(smiles: str, seed: int = 7) -> Atoms:
    """One RDKit ETKDG conformer (with hydrogens) of ``smiles``."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles!r}")
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    return Atoms(numbers=numbers, positions=mol.GetConformer().GetPositions())


def cu_bulk(n: int, rattle: float = 0.02, seed: int = 0) -> Atoms:
    """fcc Cu, ``n x n x n`` cubic cells (``4 n^3`` atoms), rattled by ``rattle`` Å."""
    atoms = bulk("Cu", "fcc", a=CU_A, cubic=True).repeat((n, n, n))
    atoms.positions += np.random.default_rng(seed).normal(scale=rattle, size=(len(atoms), 3))
    return atoms


def benchmark_systems(bulk_n: int = 5) -> dict[str, list[Atoms]]:
    """The four timed cases, each a list of structures evaluated per "call".

    ``bulk_n``: the Cu cell is ``bulk_n^3`` cubic cells (5: 500 atoms).
    """
    return {
        "molecule (20 atoms)": [boxed(molecule_20())],
        "Pt(111)+CO slab (38)": [pt_co_slab()],
        f"Cu bulk ({4 * bulk_n**3})": [cu_bulk(bulk_n)],
        "32 molecules (498)": [boxed(smiles_molecule(s)) for s in BATCH_SMILES],
    }


def cpu_model() -> str:
    """The CPU's model name from ``lscpu`` (or ``platform.processor()``)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@contextlib.contextmanager
def docs_lock():
    """Hold an exclusive lock while a benchmark rewrites its part of ``docs/benchmarks.md``:
    ``make bench`` runs two benchmarks side by side, and read-modify-write must not interleave."""
    import fcntl
    import tempfile

    with open(os.path.join(tempfile.gettempdir(), "tdn-calc-benchmark-docs.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_json(path: Path, data: object, indent: int = 2, default: Callable = str) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a killed run leaves the old file);
    ``default`` converts what JSON does not know (NumPy scalars, paths)."""
    import json

    from tdn_calc.fileio import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(data, indent=indent, default=default) + "\n")


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages."""
    return os.getloadavg()


def _git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False
    ).stdout.rstrip("\n")


def dirty_paths(repo: str) -> list[str]:
    """Tracked files under ``benchmarks/`` or ``tdn_calc/`` that differ from ``HEAD``."""
    out = _git(
        repo, "status", "--porcelain", "--untracked-files=no", "--", "benchmarks", "tdn_calc"
    )
    return [line[3:] for line in out.splitlines() if line.strip()]


def git_commit(repo: str) -> str:
    """``HEAD``'s hash, with ``+dirty`` when :func:`dirty_paths` finds changed files."""
    commit = _git(repo, "rev-parse", "HEAD").strip() or "unknown"
    return commit + ("+dirty" if dirty_paths(repo) else "")


@dataclass
class Contender:
    """Something to time: ``time_ms(system_name)`` runs one call and returns its wall and
    CPU time, ms.

    ``systems``: the systems it can run (``None``: all of them).
    """

    name: str
    group: str
    params: int
    detail: str
    time_ms: Callable[[str], tuple[float, float]]
    systems: set[str] | None = None

    def runs(self, system: str) -> bool:
        return self.systems is None or system in self.systems

    def describe(self) -> dict:
        return {
            "name": self.name,
            "group": self.group,
            "params": self.params,
            "detail": self.detail,
        }


def run_round_robin(
    contenders: Sequence[Contender],
    systems: Sequence[str],
    repeats: int,
    *,
    warmup: int = 1,
    seed: int = 0,
    sequence: int = 1,
    log=sys.stderr,
) -> dict:
    """Time every (contender, system) pair ``repeats`` times after ``warmup`` calls.

    Each round runs every pair once, in a new random order, so slow drifts of the machine's
    load hit all contenders alike. With ``sequence > 1`` each turn of a pair is that many
    consecutive calls (new positions each, as the steps of a relaxation): the first call
    of a turn follows another contender's work and runs with cold caches, so it is kept
    apart (``cold_*``) and ``times_ms`` holds the calls after it.

    Returns ``{"times_ms": {contender: {system: [wall ms, ...]}}, "median_ms": {contender:
    {system: wall ms}}, "cpu_times_ms", "median_cpu_ms" (the same for process CPU time),
    "load_average": [before, after]}``, and with ``sequence > 1`` also "cold_times_ms",
    "median_cold_ms", "cold_cpu_times_ms", "median_cold_cpu_ms" and "sequence".
    """
    pairs = [(c, s) for c in contenders for s in systems if c.runs(s)]
    times: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
    cpu: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
    cold_times: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
    cold_cpu: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
    load_before = load_average()
    for c, s in pairs:
        for _ in range(warmup):
            c.time_ms(s)
    rng = np.random.default_rng(seed)
    for r in range(repeats):
        t0 = time.perf_counter()
        for k in rng.permutation(len(pairs)):
            c, s = pairs[k]
            for call in range(sequence):
                wall_ms, cpu_ms = c.time_ms(s)
                cold = sequence > 1 and call == 0
                (cold_times if cold else times)[c.name].setdefault(s, []).append(wall_ms)
                (cold_cpu if cold else cpu)[c.name].setdefault(s, []).append(cpu_ms)
        print(f"round {r + 1}/{repeats}: {time.perf_counter() - t0:.0f} s", file=log, flush=True)

    def medians(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
        return {n: {s: float(np.median(v)) for s, v in per.items()} for n, per in samples.items()}

    out = {
        "times_ms": times,
        "median_ms": medians(times),
        "cpu_times_ms": cpu,
        "median_cpu_ms": medians(cpu),
        "load_average": [load_before, load_average()],
    }
    if sequence > 1:
        out.update(
            sequence=sequence,
            cold_times_ms=cold_times,
            median_cold_ms=medians(cold_times),
            cold_cpu_times_ms=cold_cpu,
            median_cold_cpu_ms=medians(cold_cpu),
        )
    return out


def fit_exponent(atoms: dict[str, int], median_ms: dict[str, float], min_atoms: int = 100) -> dict:
    """Least-squares fit ``t = a N^k`` in log-log over the sizes with ``N >= min_atoms``.

    Returns ``{"exponent": k, "prefactor_ms": a, "min_atoms": min_atoms}``.
    """
    names = [s for s in median_ms if atoms[s] >= min_atoms]
    n = np.log([atoms[s] for s in names])
    t = np.log([median_ms[s] for s in names])
    k, log_a = np.polyfit(n, t, 1)
    return {"exponent": float(k), "prefactor_ms": float(np.exp(log_a)), "min_atoms": min_atoms}
