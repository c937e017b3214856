"""Physics checks of a trained model: O(3) equivariance, smoothness of the energy along a path,
and energy conservation in NVE molecular dynamics.

Each check returns plain numbers (a dict of floats) so that the tests, the long measurements in
``benchmarks/physics_sanity.py`` and ``tools/register_model.py`` share one implementation.
Units: eV, Å, eV/Å, ps; per-atom quantities in meV/atom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.geometry import get_distances

from .errors import InputError
from .graph import atoms_to_graph
from .relax.precision import float64_model

# ----------------------------------------------------------------------------- equivariance


def random_o3(n: int, seed: int) -> np.ndarray:
    """``[n, 3, 3]`` seeded Haar-random orthogonal matrices; those at odd indices are
    improper (rotation times inversion, det = -1), the others proper rotations."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, 3))
    for k in range(n):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))  # Haar measure
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        out[k] = -q if k % 2 else q
    return out


def _evaluate(model: torch.nn.Module, atoms: Atoms, stress: bool) -> dict[str, np.ndarray]:
    """Energy ``[1]`` eV, per-atom energies ``[n]`` eV, forces ``[n, 3]`` eV/Å and (when
    ``stress``) stress ``[1, 3, 3]`` eV/Å^3 of a float64 model, as NumPy arrays."""
    device = next(model.parameters()).device
    graph = atoms_to_graph(
        atoms, model.cutoff, dtype=torch.float64, device=device,
        max_neighbors=model.config.max_neighbors,
    )  # fmt: skip
    out = model(graph, compute_forces=True, compute_stress=stress)
    keys = ("energy", "energies", "forces") + (("stress",) if stress else ())
    return {k: out[k].detach().cpu().numpy() for k in keys}


def equivariance_error(
    model: torch.nn.Module, atoms: Atoms, n_rotations: int = 8, seed: int = 0
) -> dict[str, float | int | str]:
    """Symmetry errors of ``model`` (run in float64) under random O(3) transformations.

    Each of ``n_rotations`` seeded random orthogonal matrices ``R`` (every second one with a
    reflection, see :func:`random_o3`) is applied to the positions and the cell, together with a
    random translation (σ = 2 Å). Compared with the untransformed structure: the energy and
    per-atom energies must be unchanged, forces ``[n, 3]`` must become ``F Rᵀ`` and, for cells
    periodic in 3D, the stress ``R σ Rᵀ``.

    Returns:
        ``formula``, ``n_atoms``, ``n_rotations``, ``n_improper``, ``energy_eV`` (reference),
        ``energy_abs_max_eV``, ``energy_rel_max`` (over ``|energy_eV|``),
        ``energies_abs_max_eV`` (per-atom energies), ``forces_abs_max_eV_A``,
        ``forces_rel_max`` (over the largest force component), ``forces_scale_eV_A`` and, for
        3D-periodic cells, ``stress_abs_max_eV_A3`` and ``stress_rel_max``. Maxima over the
        transformations.
    """
    if n_rotations < 1:
        raise InputError(f"n_rotations must be >= 1, got {n_rotations}")
    model = float64_model(model)
    stress = bool(atoms.pbc.all())
    ref = _evaluate(model, atoms, stress)
    shifts = np.random.default_rng(seed + 1).normal(scale=2.0, size=(n_rotations, 3))
    err: dict[str, float] = {"energy": 0.0, "energies": 0.0, "forces": 0.0, "stress": 0.0}
    for rot, shift in zip(random_o3(n_rotations, seed), shifts, strict=True):
        moved = atoms.copy()
        moved.calc = None
        moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        moved.positions = atoms.positions @ rot.T + shift
        out = _evaluate(model, moved, stress)
        expected = {"energy": ref["energy"], "energies": ref["energies"],
                    "forces": ref["forces"] @ rot.T}  # fmt: skip
        if stress:
            expected["stress"] = rot @ ref["stress"][0] @ rot.T
            out["stress"] = out["stress"][0]
        for key, value in expected.items():
            err[key] = max(err[key], float(np.abs(out[key] - value).max()))
    energy = float(ref["energy"][0])
    force_scale = float(np.abs(ref["forces"]).max())
    result: dict[str, float | int | str] = {
        "formula": atoms.get_chemical_formula(),
        "n_atoms": len(atoms),
        "n_rotations": n_rotations,
        "n_improper": n_rotations // 2,
        "energy_eV": energy,
        "energy_abs_max_eV": err["energy"],
        "energy_rel_max": err["energy"] / max(abs(energy), 1e-12),
        "energies_abs_max_eV": err["energies"],
        "forces_abs_max_eV_A": err["forces"],
        "forces_rel_max": err["forces"] / max(force_scale, 1e-12),
        "forces_scale_eV_A": force_scale,
    }
    if stress:
        result["stress_abs_max_eV_A3"] = err["stress"]
        result["stress_rel_max"] = err["stress"] / max(float(np.abs(ref["stress"]).max()), 1e-12)
    return result


def element_cluster(elements: Sequence[int], seed: int = 0) -> Atoms:
    """A small non-periodic test cluster of ``elements`` (atomic numbers): 8 atoms cycling
    through them on a rattled 2x2x2 grid with 2.2 Å spacing (asymmetric, so that symmetry
    errors are not hidden by a symmetric structure)."""
    if not elements:
        raise InputError("elements must name at least one atomic number")
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float)
    rattle = np.random.default_rng(seed).normal(scale=0.15, size=grid.shape)
    numbers = [elements[k % len(elements)] for k in range(len(grid))]
    return Atoms(numbers=numbers, positions=2.2 * grid + rattle)


def equivariance_summary(
    model: torch.nn.Module,
    candidates: Mapping[str, Atoms],
    n_rotations: int = 8,
    seed: int = 0,
) -> dict[str, dict[str, float | int | str]]:
    """:func:`equivariance_error` of ``model`` on each named candidate structure whose
    elements it supports, or, when none fits, on :func:`element_cluster` of its elements
    (named ``"cluster"``). Returns ``{name: errors}``."""
    supported = set(model.elements)
    fitting = {k: a for k, a in candidates.items() if set(a.numbers.tolist()) <= supported}
    if not fitting:
        fitting = {"cluster": element_cluster(sorted(supported), seed)}
    return {k: equivariance_error(model, a, n_rotations, seed) for k, a in fitting.items()}


# ----------------------------------------------------------------------------- smoothness


@dataclass(frozen=True)
class PathScan:
    """Energy along a rigid displacement of some atoms.

    Attributes (all ``[n_points]``):
        shifts: displacement of the moving atoms along the direction, Å (evenly spaced).
        energies: total energy, eV.
        forces: total force on the moving atoms projected on the direction, eV/Å
            (equal to ``-dE/dshift`` for a conservative model).
        separations: shortest distance between a moving and a fixed atom (periodic images
            included), Å.
    """

    shifts: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    separations: np.ndarray


def _split(atoms: Atoms, moving: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(moving, fixed)`` atom indices; ``moving`` must name some but not all atoms."""
    moving = [int(k) for k in moving]
    fixed = [k for k in range(len(atoms)) if k not in set(moving)]
    if not moving or not fixed or not set(moving) <= set(range(len(atoms))):
        raise InputError(
            f"moving must name some but not all of the {len(atoms)} atoms, got {moving}"
        )
    return moving, fixed


def bond_path(
    atoms: Atoms, moving: Sequence[int], anchor: int | None = None
) -> tuple[Atoms, np.ndarray]:
    """Set up a bond-breaking :func:`path_scan`: the ``moving`` atoms are pulled away from
    ``anchor`` (default: the fixed atom nearest to ``moving[0]``, periodic images included)
    along the anchor -> ``moving[0]`` bond.

    Returns a copy of ``atoms`` with the moving group shifted so that ``moving[0]`` sits on
    the anchor, and the unit bond direction ``[3]``: a shift ``s`` then puts ``moving[0]`` at
    distance ``s`` (Å) from the anchor.
    """
    moving, fixed = _split(atoms, moving)
    if anchor is not None and anchor not in fixed:
        raise InputError(f"anchor must be an atom index not in moving, got {anchor}")
    vectors, distances = get_distances(
        atoms.positions[moving[0]], atoms.positions[fixed], cell=atoms.cell, pbc=atoms.pbc
    )
    k = int(np.argmin(distances[0])) if anchor is None else fixed.index(anchor)
    bond = -vectors[0, k]  # anchor -> moving[0], minimum image
    start = atoms.copy()
    start.positions[moving] -= bond
    return start, bond / np.linalg.norm(bond)


def path_scan(
    calc: Calculator,
    atoms: Atoms,
    moving: Sequence[int],
    direction: Sequence[float],
    shifts: Sequence[float],
) -> PathScan:
    """Evaluate ``calc`` with the atoms ``moving`` displaced by ``s * direction`` (unit vector
    taken from ``direction``) for each ``s`` in ``shifts`` (Å); the input is not changed."""
    moving, fixed = _split(atoms, moving)
    unit = np.asarray(direction, dtype=float)
    norm = float(np.linalg.norm(unit))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError(f"direction must be a finite non-zero vector, got {list(direction)}")
    unit = unit / norm
    energies, forces, separations = [], [], []
    for s in shifts:
        work = atoms.copy()
        work.positions[moving] += s * unit
        work.calc = calc
        energies.append(work.get_potential_energy())
        forces.append(work.get_forces()[moving].sum(axis=0) @ unit)
        _, dist = get_distances(
            work.positions[moving], work.positions[fixed], cell=work.cell, pbc=work.pbc
        )
        separations.append(dist.min())
    return PathScan(np.asarray(shifts, dtype=float), np.array(energies), np.array(forces),
                    np.array(separations))  # fmt: skip


def smoothness_metrics(scan: PathScan, cutoff: float) -> dict[str, float | int]:
    """Jumps, kinks and force consistency along a :class:`PathScan` with step ``h``.

    Returns:
        ``h_A``, ``n_points``;
        ``jump_ratio``: max over neighbouring points of ``|ΔE| / (h max(|F_k|, |F_k+1|) + 1e-9
        eV)``; a smooth curve gives <= ~1 (mean value theorem), a jump of size J gives ~J/(hF);
        ``work_residual_eV``: max ``|ΔE + h (F_k + F_k+1) / 2|`` (energy change minus the
        work of the force, trapezoid rule; O(h^3));
        ``force_fd_error_eV_A`` and ``force_fd_rel``: max ``|F_k + (E_k+1 - E_k-1) / 2h|``,
        absolute and over ``max |F|``;
        ``curvature_max_eV_A2``: max ``|Δ²E| / h²``;
        ``force_step_max_eV_A``: max ``|ΔF|``;
        ``kink_ratio``: max ``|Δ²F|`` over max ``|ΔF|`` (~h max|F''| / max|F'| when smooth,
        so it halves with h; ~1 at a jump of the force larger than ``h max|dF/ds|``);
        ``force_max_eV_A``; and over the points whose separation exceeds ``cutoff``:
        ``n_detached``, ``detached_energy_ptp_eV`` (spread of the energy) and
        ``detached_force_max_eV_A``.
    """
    x, e, f = scan.shifts, scan.energies, scan.forces
    if len(x) < 3:
        raise InputError(f"a path scan needs at least 3 points, got {len(x)}")
    h = float(x[1] - x[0])
    if h <= 0 or not np.allclose(np.diff(x), h, rtol=1e-6, atol=1e-12):
        raise InputError("path scan shifts must be evenly spaced and increasing")
    de, df = np.diff(e), np.diff(f)
    local = h * np.maximum(np.abs(f[:-1]), np.abs(f[1:])) + 1e-9
    curvature = np.diff(e, 2) / h**2
    curvature_max = float(np.abs(curvature).max())
    fd_error = float(np.abs(f[1:-1] + (e[2:] - e[:-2]) / (2 * h)).max())
    force_max = float(np.abs(f).max())
    detached = scan.separations > cutoff
    out: dict[str, float | int] = {
        "h_A": h,
        "n_points": len(x),
        "jump_ratio": float((np.abs(de) / local).max()),
        "work_residual_eV": float(np.abs(de + h * (f[:-1] + f[1:]) / 2).max()),
        "force_fd_error_eV_A": fd_error,
        "force_fd_rel": fd_error / max(force_max, 1e-12),
        "curvature_max_eV_A2": curvature_max,
        "force_step_max_eV_A": float(np.abs(df).max()),
        "kink_ratio": float(np.abs(np.diff(df)).max() / max(np.abs(df).max(), 1e-12)),
        "force_max_eV_A": force_max,
        "n_detached": int(detached.sum()),
    }
    if detached.any():
        out["detached_energy_ptp_eV"] = float(np.ptp(e[detached]))
        out["detached_force_max_eV_A"] = float(np.abs(f[detached]).max())
    return out


# ----------------------------------------------------------------------------- NVE dynamics


@dataclass(frozen=True)
class NVETrace:
    """Energies along an NVE trajectory (all ``[n_samples]``): ``times_ps``, ``potential``
    and ``kinetic`` in eV; ``n_atoms``; ``relax_fmax``: max force of the start, eV/Å."""

    times_ps: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    n_atoms: int
    relax_fmax: float


def nve_trajectory(
    atoms: Atoms,
    calc: Calculator,
    *,
    timestep_fs: float = 0.5,
    n_steps: int = 4000,
    temperature_K: float = 300.0,
    seed: int = 0,
    relax_fmax: float | None = 0.01,
    interval: int = 1,
) -> NVETrace:
    """Velocity Verlet NVE run of a copy of ``atoms`` with ``calc``.

    The start is relaxed first (FIRE to ``relax_fmax`` eV/Å, at most 2000 steps; ``None``
    skips it), then given seeded Maxwell-Boltzmann velocities at ``temperature_K`` with the
    total momentum removed. Energies are recorded every ``interval`` steps (step 0 included).
    """
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from .relax.single import relax

    if n_steps < 1 or interval < 1 or timestep_fs <= 0:
        raise InputError(
            f"need n_steps >= 1, interval >= 1 and timestep_fs > 0; got {n_steps}, {interval}, "
            f"{timestep_fs}"
        )
    work = atoms.copy()
    if relax_fmax is not None:
        work = relax(work, calc, fmax=relax_fmax, steps=2000, optimizer="FIRE", warn=False).atoms
    work.calc = calc
    fmax = float(np.linalg.norm(work.get_forces(), axis=1).max())
    thermalize_momenta(work, temperature_K, rng=np.random.default_rng(seed))
    Stationary(work)
    samples: list[tuple[int, float, float]] = []
    dyn = VelocityVerlet(work, timestep=timestep_fs * units.fs, logfile=None)

    def record() -> None:
        samples.append((dyn.nsteps, work.get_potential_energy(), work.get_kinetic_energy()))

    dyn.attach(record, interval=interval)
    dyn.run(n_steps)
    steps, potential, kinetic = (np.array(v) for v in zip(*samples, strict=True))
    return NVETrace(steps * timestep_fs / 1000.0, potential, kinetic, len(work), fmax)


def energy_drift(trace: NVETrace) -> dict[str, float | int]:
    """Energy conservation of an :class:`NVETrace`.

    Returns (per atom, meV): ``drift_meV_atom_ps`` (slope of a linear fit of the total energy
    against time), ``max_deviation_meV_atom`` (max ``|E_tot - E_tot(0)|``), ``std_meV_atom``
    (of ``E_tot``), ``kinetic_mean_meV_atom``; ``temperature_mean_K`` (``2 KE / (3 N k_B)``);
    ``deviation_over_kinetic`` (max deviation over mean kinetic energy); ``std_ratio``
    (std of ``E_tot`` over std of ``E_pot``); ``duration_ps``; ``n_samples``; ``n_atoms``;
    ``start_fmax_eV_A``.
    """
    total = (trace.potential + trace.kinetic) / trace.n_atoms * 1000.0  # meV/atom
    slope = float(np.polyfit(trace.times_ps, total, 1)[0]) if len(total) > 1 else 0.0
    kinetic = float(trace.kinetic.mean() / trace.n_atoms * 1000.0)
    deviation = float(np.abs(total - total[0]).max())
    return {
        "drift_meV_atom_ps": slope,
        "max_deviation_meV_atom": deviation,
        "std_meV_atom": float(total.std()),
        "kinetic_mean_meV_atom": kinetic,
        "temperature_mean_K": float(2 * trace.kinetic.mean() / (3 * trace.n_atoms * units.kB)),
        "deviation_over_kinetic": deviation / max(kinetic, 1e-12),
        "std_ratio": float(total.std() / max(trace.potential.std() / trace.n_atoms * 1e3, 1e-12)),
        "duration_ps": float(trace.times_ps[-1] - trace.times_ps[0]),
        "n_samples": len(total),
        "n_atoms": trace.n_atoms,
        "start_fmax_eV_A": trace.relax_fmax,
    }
