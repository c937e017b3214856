"""Run a campaign: relax the clean slabs and gas references once, enumerate the placements
on the relaxed slabs, relax them in batches, classify each minimum and write one database
row per structure. Energies in eV.

Re-running the same spec on the same database skips every row already written (resume after
a kill); ``force`` recomputes everything; a database of another spec is refused.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ase import Atoms

from . import store
from .engine import Engine, Relaxed, calculator, is_teacher
from .executors import InProcess
from .placements import (
    Placement,
    adsorbate_atoms,
    build_slab,
    distinct_sites,
    enumerate_placements,
    lattice_of,
    site_namer,
)
from .spec import CampaignSpec

GAS_BOX = 15.0  # Å, cell of a gas-phase molecule (not periodic)


@dataclass
class RunStats:
    """What a run did: rows ``written`` now and ``skipped`` (already in the database)."""

    written: int = 0
    skipped: int = 0


def engine_of(spec: CampaignSpec) -> Engine:
    """The :class:`Engine` of ``spec`` (``verify`` set by ``teacher.policy: verify``)."""
    return Engine(
        spec.model,
        spec.device,
        spec.dtype,
        spec.fmax,
        spec.steps,
        spec.optimizer,
        spec.batch_size,
        spec.teacher if spec.policy == "verify" else None,
    )


def gas_names(spec: CampaignSpec) -> list[str]:
    """The gas-phase references every adsorbate of ``spec`` needs (ASE g2 names)."""
    from ..evaluation.references import reference_terms

    names: dict[str, None] = {}
    for ads in spec.adsorbates:
        names.update(dict.fromkeys(reference_terms(adsorbate_atoms(spec, ads), spec.scheme)))
    return list(names)


def gas_molecule(name: str) -> Atoms:
    """``name`` (ASE g2) centred in a :data:`GAS_BOX` Å box, not periodic."""
    from ase.build import molecule

    atoms = molecule(name)
    atoms.set_cell([GAS_BOX] * 3)
    atoms.center()
    atoms.pbc = False
    return atoms


def _batches(items: list[tuple[str, Atoms]], size: int) -> list[list[tuple[str, Atoms]]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def run_campaign(
    spec: CampaignSpec,
    db_path: str | os.PathLike,
    *,
    force: bool = False,
    executor: Any = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunStats:
    """Run ``spec`` into the database ``db_path`` (see :mod:`.store`) with ``executor``
    (default :class:`~.executors.InProcess`); a tqdm bar with rate and ETA when
    ``progress``."""
    say = log or (lambda _msg: None)
    executor = executor or InProcess()
    db = store.connect(db_path)
    spec_hash = spec.hash()
    store.claim(db, spec_hash, spec.name, force)
    if spec.policy == "finish":
        warnings.warn("teacher.policy 'finish' is stored in the spec but not run yet", stacklevel=2)
    engine = engine_of(spec)
    common = {"engine": spec.engine, "spec_hash": spec_hash}
    done = store.done_rows(db)
    stats = RunStats(skipped=len(done))

    # 1. clean slabs and gas references, once each
    todo: list[tuple[str, Atoms]] = []
    lattices: dict[str, tuple[float, ...]] = {}
    for surface in spec.surfaces:
        key = f"slab|{surface.label}"
        if key not in done:
            lattices[key] = lattice_of(surface, lambda mode: _fit_calc(spec, mode))
            todo.append((key, build_slab(surface, lattices[key])))
    todo += [(f"gas|{g}", gas_molecule(g)) for g in gas_names(spec) if f"gas|{g}" not in done]
    if todo:
        say(f"relaxing {len(todo)} clean slabs and gas references")
        for results in executor.run(engine, _batches(todo, spec.batch_size)):
            for r in results:
                kind, name = r.key.split("|", 1)
                extra = (
                    {
                        "surface": name,
                        **dict(zip(("lattice_a", "lattice_c"), lattices[r.key], strict=False)),
                    }
                    if kind == "slab"
                    else {"gas": name}
                )
                store.write(
                    db,
                    r.atoms,
                    kind=kind,
                    key=r.key,
                    converged=r.converged,
                    steps=r.steps,
                    extrapolation_max=r.extrapolation_max,
                    teacher_energy=r.teacher_energy,
                    **extra,
                    **common,
                )
                stats.written += 1
        done = store.done_rows(db)

    # 2. placements on the relaxed slabs
    placements: dict[str, Placement] = {}
    namers: dict[str, Callable[[Atoms], str]] = {}
    for surface in spec.surfaces:
        slab = done[f"slab|{surface.label}"].toatoms()
        sites = distinct_sites(slab)
        found = enumerate_placements(spec, surface, slab, sites)
        namers[surface.label] = site_namer(slab, sites)
        placements.update((p.key, p) for p in found if p.key not in done)
    references = _references(spec, done)
    items = [(k, p.atoms) for k, p in placements.items()]
    bar = _bar(len(items), progress)
    for results in executor.run(engine, _batches(items, spec.batch_size)):
        for r in results:
            row = classify(placements[r.key], r, namers[placements[r.key].surface], references)
            store.write(db, r.atoms, kind="placement", key=r.key, **row, **common)
            stats.written += 1
        bar.update(len(results))
    bar.close()
    return stats


def _fit_calc(spec: CampaignSpec, mode: str) -> Any:
    """The calculator of the lattice-constant fit: the model's, or the teacher's."""
    name = spec.model if mode == "model" else str(spec.teacher)
    return calculator(name, spec.device, spec.dtype if not is_teacher(name) else "float32")


def _bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, disable=not enabled, unit="structure", desc="relaxing", dynamic_ncols=True
    )


@dataclass
class References:
    """Energies (eV) of the relaxed clean slabs ``{surface: E}`` and gases ``{gas: E}``
    (``teacher_*``: the verify teacher's single points, when run)."""

    slabs: dict[str, float]
    gases: dict[str, float]
    terms: dict[str, dict[str, float]]
    teacher_slabs: dict[str, float]
    teacher_gases: dict[str, float]


def _references(spec: CampaignSpec, done: dict[str, Any]) -> References:
    from ..evaluation.references import reference_terms

    def table(prefix: str, key: str) -> dict[str, float]:
        return {
            k.split("|", 1)[1]: float(row.get(key))
            for k, row in done.items()
            if k.startswith(prefix) and row.get(key) is not None
        }

    terms = {
        a.name: reference_terms(adsorbate_atoms(spec, a), spec.scheme) for a in spec.adsorbates
    }
    return References(
        table("slab|", "energy"),
        table("gas|", "energy"),
        terms,
        table("slab|", "teacher_energy"),
        table("gas|", "teacher_energy"),
    )


def classify(
    placement: Placement, result: Relaxed, namer: Callable[[Atoms], str], refs: References
) -> dict[str, Any]:
    """The key-value pairs of a placement's row: final site, anomalies, adsorption energy
    (eV) (and the teacher's, with verify), convergence, extrapolation."""
    from ..evaluation.anomalies import anomalies
    from ..evaluation.references import adsorption_energy

    found = anomalies(placement.atoms, result.atoms, placement.adsorbate_indices)
    terms = refs.terms[placement.adsorbate]
    e_ads = adsorption_energy(result.energy, refs.slabs[placement.surface], refs.gases, terms)
    teacher_e_ads = None
    if result.teacher_energy is not None and placement.surface in refs.teacher_slabs:
        teacher_e_ads = adsorption_energy(
            result.teacher_energy, refs.teacher_slabs[placement.surface], refs.teacher_gases, terms
        )
    return {
        "surface": placement.surface,
        "adsorbate": placement.adsorbate,
        "placement": placement.placement,
        "start_site": placement.start_site,
        "final_site": namer(result.atoms),
        "anomaly": ",".join(found) or "none",
        "valid": not found and result.converged,
        "e_ads": float(e_ads),
        "converged": result.converged,
        "steps": result.steps,
        "extrapolation_max": result.extrapolation_max,
        "teacher_energy": result.teacher_energy,
        "teacher_e_ads": teacher_e_ads,
    }
