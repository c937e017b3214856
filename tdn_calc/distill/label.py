"""The teacher's side of distillation: placements of the spec split into training and
held-out ones, seed data (teacher minima, rattled and strained copies), single points at
the student's minima, picking the frames to add, and writing them to the data set.
Energies in eV, forces in eV/Å, lengths in Å.

A trajectory's identifier names its round and placement (``r000/seed/Cu(111)|O|site-fcc``),
so a repeated stage skips what it already wrote and never relabels it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..campaigns.placements import Placement, build_slab, enumerate_placements, lattice_of, seed_for
from ..data.frames import Frame, FrameKind
from ..data.shards import ShardedWriter
from .spec import DistillSpec


@dataclass
class Split:
    """The spec's placements: ``train`` (explored by the loop) and ``holdout`` (only used
    for the agreement check), split by (surface, adsorbate) pair."""

    train: list[Placement]
    holdout: list[Placement]


def teacher_calculator(spec: DistillSpec) -> Any:
    """The teacher's ASE calculator (cached per process)."""
    from ..campaigns.engine import calculator

    return calculator(spec.teacher, spec.campaign.device)


def clean_slabs(spec: DistillSpec) -> dict[str, Atoms]:
    """Every surface's clean slab at its lattice constant (``model`` and ``teacher`` both
    fit with the teacher: there is no student yet), by label."""
    calc = teacher_calculator(spec)
    return {s.label: build_slab(s, lattice_of(s, lambda _mode: calc))
            for s in spec.campaign.surfaces}


def split_placements(spec: DistillSpec, slabs: dict[str, Atoms]) -> Split:
    """All placements of the spec on ``slabs``; ``ceil(holdout * pairs)`` random
    (surface, adsorbate) pairs (at least one, never all) are held out."""
    every: list[Placement] = []
    for surface in spec.campaign.surfaces:
        every += enumerate_placements(spec.campaign, surface, slabs[surface.label])
    pairs = sorted({(p.surface, p.adsorbate) for p in every})
    n_out = min(max(1, math.ceil(spec.holdout * len(pairs))), len(pairs) - 1)
    rng = seed_for(spec.campaign.seed, "holdout")
    held = {pairs[k] for k in rng.choice(len(pairs), n_out, replace=False)} if n_out else set()
    return Split([p for p in every if (p.surface, p.adsorbate) not in held],
                 [p for p in every if (p.surface, p.adsorbate) in held])


def frame_of(atoms: Atoms, kind: int, step: int = 0) -> Frame:
    """A data-set frame of ``atoms`` (its calculator holds the teacher's labels)."""
    return Frame.from_atoms(atoms, kind=kind, step=step)


def single_point(atoms: Atoms, calc: Any) -> Atoms:
    """A copy of ``atoms`` with the teacher's energy and raw forces (one call)."""
    from ..relax.single import snapshot

    probe = atoms.copy()
    return snapshot(probe, calc)


def free_fmax(atoms: Atoms) -> float:
    """Largest force norm on the free atoms (constraints applied), eV/Å."""
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


def perturbed(minimum: Atoms, spec: DistillSpec, name: str) -> list[tuple[Atoms, int]]:
    """``seed.rattle`` rattled and ``seed.strain`` in-plane strained copies of ``minimum``
    (free atoms moved only), seeded by ``name``; ``(atoms, FrameKind)`` pairs."""
    rng = seed_for(spec.campaign.seed, "perturb", name)
    out: list[tuple[Atoms, int]] = []
    fixed = np.zeros(len(minimum), dtype=bool)
    for c in minimum.constraints:
        fixed[c.get_indices()] = True
    for _ in range(spec.seed.rattle):
        atoms = minimum.copy()
        noise = rng.normal(0.0, spec.seed.rattle_std, atoms.positions.shape)
        atoms.positions += np.where(fixed[:, None], 0.0, noise)
        out.append((atoms, FrameKind.RATTLED))
    for _ in range(spec.seed.strain):
        atoms = minimum.copy()
        eps = rng.uniform(-spec.seed.strain_max, spec.seed.strain_max)
        cell = atoms.cell.array.copy()
        cell[:2] *= 1.0 + eps
        atoms.set_cell(cell, scale_atoms=True)
        out.append((atoms, FrameKind.STRAINED))
    return out


def seed_placements(spec: DistillSpec, split: Split) -> list[Placement]:
    """The ``seed.placements`` training placements the teacher relaxes in round 0 (a seeded
    choice)."""
    rng = seed_for(spec.campaign.seed, "seed-placements")
    n = min(spec.seed.placements, len(split.train))
    return [split.train[k] for k in sorted(rng.choice(len(split.train), n, replace=False))]


def check_elements(spec: DistillSpec, slabs: dict[str, Atoms], split: Split) -> None:
    """Refuse (:class:`~tdn_calc.campaigns.spec.SpecError`), before any teacher call, a loop
    whose student would meet an element it cannot know: every element of the training and
    held-out placements must be in the seed data (clean slabs and seed placements) or, with
    ``init_from`` a model, in that model. A model from scratch has the seed data's elements
    only, so a held-out pair's own element (or one only in unseeded training placements)
    would stop the loop after its first training."""
    from ase.data import chemical_symbols

    from ..campaigns.spec import SpecError
    from .spec import SCRATCH

    def numbers(structures: Sequence[Atoms]) -> set[int]:
        return {int(z) for atoms in structures for z in atoms.numbers}

    known = numbers(list(slabs.values()) + [p.atoms for p in seed_placements(spec, split)])
    start = "the seed data (clean slabs and seed placements)"
    if spec.init_from != SCRATCH:
        from ..checkpoint_format import read_metadata
        from ..registry import model_path

        known |= set(read_metadata(model_path(spec.init_from))[0].elements)
        start += f" and {spec.init_from}"
    for part, placements in (("held-out", split.holdout), ("training", split.train)):
        missing = sorted(numbers([p.atoms for p in placements]) - known)
        if missing:
            names = ", ".join(chemical_symbols[z] for z in missing)
            raise SpecError(
                f"distill: the student would meet {names} in {part} placements, which "
                f"{start} never hold; hold out other pairs (placement.seed, holdout), add "
                f"a training pair with {names}, raise distill.seed.placements, or start "
                f"from a model that covers {names} (distill.init_from)")


def label_seed(spec: DistillSpec, slabs: dict[str, Atoms], split: Split,
               writer: ShardedWriter) -> tuple[int, int]:
    """Round 0: the teacher relaxes every clean slab and ``seed.placements`` training
    placements (seeded choice); each relaxation's start and minimum plus their rattled and
    strained copies are written. Returns ``(frames added, teacher calls)``."""
    from ..relax.single import relax

    calc = teacher_calculator(spec)
    starts = [(f"slab|{label}", slab) for label, slab in slabs.items()]
    starts += [(p.key, p.atoms) for p in seed_placements(spec, split)]
    frames = calls = 0
    for key, start in starts:
        ident = f"r000/seed/{key}"
        if ident in writer.done:
            continue
        result = relax(start, calc, fmax=spec.seed.fmax, steps=spec.seed.steps, warn=False,
                       optimizer=spec.campaign.optimizer)
        calls += len(result.energies)
        out = [frame_of(single_point(start, calc), FrameKind.RELAX, 0),
               frame_of(result.atoms, FrameKind.RELAX, result.n_steps)]
        for atoms, kind in perturbed(result.atoms, spec, key):
            out.append(frame_of(single_point(atoms, calc), kind))
        calls += len(out) - 1
        writer.append_trajectory(ident, out)
        frames += len(out)
    return frames, calls


@dataclass
class Checked:
    """A student minimum with the teacher's single point: ``key``, ``student`` (the
    student's relaxed atoms, energy attached), ``teacher`` (same positions, teacher labels),
    ``abs_de`` eV, ``teacher_fmax`` eV/Å (free atoms), ``novelty`` (largest per-atom
    chemistry-novelty score, ``nan`` without a summary)."""

    key: str
    student: Atoms
    teacher: Atoms
    abs_de: float
    teacher_fmax: float
    novelty: float = float("nan")


def check_minima(spec: DistillSpec, relaxed: Sequence[Any], novelty: Any = None
                 ) -> list[Checked]:
    """Teacher single points at the student's minima (``Relaxed`` records of
    :func:`tdn_calc.campaigns.engine.relax_items`), scored by ``novelty`` (a
    :class:`~tdn_calc.uncertainty.ChemistryNovelty` or None). One teacher call each."""
    calc = teacher_calculator(spec)
    out = []
    for r in relaxed:
        taught = single_point(r.atoms, calc)
        score = float(np.max(novelty.score_atoms(r.atoms))) if novelty is not None else math.nan
        out.append(Checked(r.key, r.atoms, taught, abs(taught.get_potential_energy() - r.energy),
                           free_fmax(taught), score))
    return out


def pick(checked: Sequence[Checked], spec: DistillSpec, limit: int) -> list[Checked]:
    """The frames to add, at most ``limit``: every bad minimum first (teacher fmax above
    ``agreement.fmax`` or |dE| above ``agreement.energy``; worst first), then the most
    novel (uncertain: novelty above 1 first), then the largest |dE|."""
    target = spec.agreement

    def bad(c: Checked) -> bool:
        return c.teacher_fmax > target.fmax or c.abs_de > target.energy

    def novelty(c: Checked) -> float:
        return -math.inf if math.isnan(c.novelty) else c.novelty

    worst = sorted((c for c in checked if bad(c)), key=lambda c: -c.teacher_fmax)
    rest = sorted((c for c in checked if not bad(c)), key=lambda c: (-novelty(c), -c.abs_de))
    return (worst + rest)[:limit]


def teacher_steps(atoms: Atoms, spec: DistillSpec, path: Path) -> list[Atoms]:
    """A short teacher relaxation (``loop.teacher_steps`` steps) from ``atoms``: its
    labelled frames after the start (the start is labelled already)."""
    from ase.io import read

    from ..relax.single import relax

    relax(atoms, teacher_calculator(spec), fmax=spec.agreement.fmax / 2,
          steps=spec.loop.teacher_steps, trajectory=path, warn=False)
    frames = read(path, ":")
    path.unlink()
    return frames[1:]


def write_round(round_: int, picked: Sequence[Checked], spec: DistillSpec,
                writer: ShardedWriter, scratch: Path) -> tuple[int, int]:
    """Write the picked frames of ``round_`` (one trajectory per placement, plus the
    teacher's short relaxation from each bad one with ``loop.teacher_steps``). Returns
    ``(frames added, extra teacher calls)``."""
    frames = calls = 0
    for c in picked:
        ident = f"r{round_:03d}/explore/{c.key}"
        if ident in writer.done:
            continue
        out = [frame_of(c.teacher, FrameKind.RELAX, 0)]
        if spec.loop.teacher_steps and c.teacher_fmax > spec.agreement.fmax:
            extra = teacher_steps(c.student, spec, scratch / "teacher_steps.traj")
            out += [frame_of(a, FrameKind.RELAX, k + 1) for k, a in enumerate(extra)]
            calls += len(extra)
        writer.append_trajectory(ident, out)
        frames += len(out)
    return frames, calls


def agreement(checked: Sequence[Checked], spec: DistillSpec) -> dict[str, Any]:
    """The held-out agreement of the student's minima: medians and maxima of |dE| (eV)
    and of the teacher fmax (eV/Å), and ``met`` (both medians within the target)."""
    de = np.array([c.abs_de for c in checked])
    fm = np.array([c.teacher_fmax for c in checked])
    out = {"n": len(checked),
           "median_abs_de_eV": float(np.median(de)), "max_abs_de_eV": float(de.max()),
           "median_teacher_fmax_eV_A": float(np.median(fm)),
           "max_teacher_fmax_eV_A": float(fm.max())}
    out["met"] = bool(out["median_abs_de_eV"] <= spec.agreement.energy
                      and out["median_teacher_fmax_eV_A"] <= spec.agreement.fmax)
    return out
