"""Run a campaign: relax the clean slabs and gas references once, enumerate the placements
on the relaxed slabs, relax them in batches, classify each minimum and write one database
row per structure. Energies in eV.

With ``teacher.policy: finish`` the teacher continues the student's minima that
``teacher.finish_when`` picks (placements) and every clean slab and gas reference (their
teacher energies enter every teacher adsorption energy); a finished placement's ``e_ads`` is
the teacher's (``energy_source: teacher``), the others keep the student's.

Re-running the same spec on the same database skips every row already written (resume after
a kill); ``force`` recomputes everything; a database of another spec is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
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
from .spec import CampaignSpec, SpecError

GAS_BOX = 15.0  # Å, cell of a gas-phase molecule (not periodic)


@dataclass
class RunStats:
    """What a run did: rows ``written`` now and ``skipped`` (already in the database), and
    the ``teacher_calls`` (verify/finish teacher) spent on the rows written now."""

    written: int = 0
    skipped: int = 0
    teacher_calls: int = 0


def engine_of(spec: CampaignSpec) -> Engine:
    """The :class:`Engine` of ``spec`` (``verify`` or ``finish`` set by
    ``teacher.policy``)."""
    return Engine(
        spec.model,
        spec.device,
        spec.dtype,
        spec.fmax,
        spec.steps,
        spec.optimizer,
        spec.batch_size,
        spec.teacher if spec.policy == "verify" else None,
        spec.teacher if spec.policy == "finish" else None,
        spec.finish_when,
    )


def relaxation_pairs(result: Relaxed) -> dict[str, Any]:
    """The key-value pairs every row takes from its relaxation: who relaxed it and with
    how many steps and teacher calls, the student's and the teacher's energies (eV) and
    scores (None values are not written)."""
    return {
        "converged": result.converged,
        "steps": result.steps,
        "relaxed_by": result.relaxed_by,
        "energy_source": result.energy_source,
        "student_energy": result.student_energy,
        "student_steps": result.student_steps,
        "student_converged": result.student_converged,
        "student_calls": result.student_calls,
        "teacher_steps": result.teacher_steps,
        "teacher_calls": result.teacher_calls,
        "teacher_energy": result.teacher_energy,
        "teacher_fmax": result.teacher_fmax,
        "verified": result.verified,
        "extrapolation_max": result.extrapolation_max,
        "uncertain": result.uncertain,
    }


def check_teacher_elements(spec: CampaignSpec) -> None:
    """Refuse, before anything is relaxed, a verify/finish teacher that does not cover every
    element of the spec's slabs, adsorbates and gas references (:class:`SpecError`)."""
    from ..teachers import missing_elements

    if spec.teacher is None or spec.policy == "none":
        return
    symbols = set().union(*(s.elements for s in spec.surfaces))
    for ads in spec.adsorbates:
        symbols.update(adsorbate_atoms(spec, ads).get_chemical_symbols())
    for gas in gas_names(spec):
        symbols.update(gas_molecule(gas).get_chemical_symbols())
    missing = missing_elements(spec.teacher, symbols)
    if missing:
        raise SpecError(
            f"teacher.name: {spec.teacher!r} does not cover {', '.join(missing)}, needed by "
            f"teacher.policy {spec.policy}"
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
    check_teacher_elements(spec)
    engine = engine_of(spec)
    common = {
        "engine": spec.engine,
        "spec_hash": spec_hash,
        "teacher": spec.teacher if spec.policy != "none" else None,
    }
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
        ref_engine = replace(engine, finish_when="always")  # finish: every reference
        for results in executor.run(ref_engine, _batches(todo, spec.batch_size)):
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
                    db, r.atoms, kind=kind, key=r.key, **relaxation_pairs(r), **extra, **common
                )
                stats.written += 1
                stats.teacher_calls += r.teacher_calls
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
            stats.teacher_calls += r.teacher_calls
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
    """The student's energies (eV) of the relaxed clean slabs ``{surface: E}`` and gases
    ``{gas: E}``, the reference ``terms`` of each adsorbate, and the teacher's energies
    (``teacher_*``: verify single points, or the finished references)."""

    slabs: dict[str, float]
    gases: dict[str, float]
    terms: dict[str, dict[str, float]]
    teacher_slabs: dict[str, float]
    teacher_gases: dict[str, float]


def _references(spec: CampaignSpec, done: dict[str, Any]) -> References:
    from ..evaluation.references import reference_terms

    def table(prefix: str, key: str) -> dict[str, float]:
        # rows written before student and teacher energies were told apart: the row's energy
        values = {
            k.split("|", 1)[1]: row.get(key, row.energy if key == "student_energy" else None)
            for k, row in done.items()
            if k.startswith(prefix)
        }
        return {name: float(v) for name, v in values.items() if v is not None}

    terms = {
        a.name: reference_terms(adsorbate_atoms(spec, a), spec.scheme) for a in spec.adsorbates
    }
    return References(
        table("slab|", "student_energy"),
        table("gas|", "student_energy"),
        terms,
        table("slab|", "teacher_energy"),
        table("gas|", "teacher_energy"),
    )


def classify(
    placement: Placement, result: Relaxed, namer: Callable[[Atoms], str], refs: References
) -> dict[str, Any]:
    """The key-value pairs of a placement's row: final site, anomalies (of the final
    structure), adsorption energies (eV): ``student_e_ads`` from the student's energies,
    ``teacher_e_ads`` from the teacher's (verify or finish), and ``e_ads`` from the
    ``energy_source``'s; the relaxation's own pairs (:func:`relaxation_pairs`)."""
    from ..evaluation.anomalies import anomalies
    from ..evaluation.references import adsorption_energy

    found = anomalies(placement.atoms, result.atoms, placement.adsorbate_indices)
    terms = refs.terms[placement.adsorbate]
    student = result.energy if result.student_energy is None else result.student_energy
    student_e_ads = adsorption_energy(student, refs.slabs[placement.surface], refs.gases, terms)
    teacher_e_ads = None
    if result.teacher_energy is not None and placement.surface in refs.teacher_slabs:
        teacher_e_ads = adsorption_energy(
            result.teacher_energy, refs.teacher_slabs[placement.surface], refs.teacher_gases, terms
        )
    e_ads = teacher_e_ads if result.energy_source == "teacher" else student_e_ads
    if e_ads is None:
        raise ValueError(
            f"{result.key}: finished by the teacher, but the teacher energies "
            f"of the clean slab {placement.surface} are missing"
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
        "student_e_ads": float(student_e_ads),
        "teacher_e_ads": teacher_e_ads,
        **relaxation_pairs(result),
    }
