"""The work behind ``tdn-relax``: plan outputs, resume, relax (batched or one by one), write
results and the JSON report. The CLI (``tdn_calc/cli/relax.py``) only parses options."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .errors import InputError, UnsupportedElementError
from .fileio import atomic_write
from .relaxation import (
    POLISH_OPTIMIZER,
    ConvergenceWarning,
    RelaxResult,
    float64_model,
    merge_results,
    relax,
    resolve_cell_filter,
    resolve_optimizer,
)
from .slab import fix_below, fix_bottom_layers, pbc_messages
from .structure_io import (
    INDEX_KEY,
    SOURCE_KEY,
    StructureRecord,
    check_output,
    default_output,
    read_existing,
    write_structures,
)

#: Exit status when every structure converged / some did not / Ctrl-C.
EXIT_OK, EXIT_NOT_CONVERGED, EXIT_INTERRUPTED = 0, 3, 130


@dataclass
class RelaxSettings:
    """Options of a relaxation job (units: eV/Å for ``fmax``, Å for ``fix_below``)."""

    fmax: float = 0.05
    steps: int = 500
    optimizer: str = "auto"
    cell_filter: str = "none"
    fix_symmetry: bool = False
    fix_bottom_layers: int | None = None
    fix_below: float | None = None
    trajectory: str | None = None
    loginterval: int = 1
    batch_size: int = 32
    polish: bool = False
    polish_fmax: float = 0.001

    def batched(self, records: Sequence[StructureRecord]) -> bool:
        """Whether the batched relaxation can do this job (else ASE, one by one). An explicit
        BFGS is batched only when no structure exceeds ``BFGS_MAX_ATOMS`` (every batched
        structure keeps a dense ``[3n, 3n]`` Hessian)."""
        from ase.constraints import FixAtoms

        from .batch_relax import BATCH_OPTIMIZERS
        from .relaxation import BFGS_MAX_ATOMS

        auto = isinstance(self.optimizer, str) and self.optimizer.lower() == "auto"
        name = "auto" if auto else resolve_optimizer(self.optimizer).__name__
        return (
            self.batch_size > 1
            and (auto or name in BATCH_OPTIMIZERS)
            and (name != "BFGS" or all(len(r.atoms) <= BFGS_MAX_ATOMS for r in records))
            and resolve_cell_filter(self.cell_filter) == "none"
            and not self.fix_symmetry
            and self.trajectory is None
            and all(isinstance(c, FixAtoms) for r in records for c in r.atoms.constraints)
        )


@dataclass
class Outcome:
    """The result of one input structure: relaxed now (``result`` set) or found in the output
    of an earlier run (``status == "resumed"``)."""

    record: StructureRecord
    frame: Atoms
    status: str
    result: RelaxResult | None = None

    def row(self) -> dict[str, Any]:
        info = self.frame.info
        return {
            "structure": self.record.label,
            "source": self.record.source,
            "index": self.record.index,
            "formula": self.frame.get_chemical_formula(),
            "atoms": len(self.frame),
            "steps": int(info.get("n_steps", -1)),
            "optimizer": info.get("optimizer"),
            "energy": _energy(self.frame),
            "fmax": _float(info.get("fmax")),
            "converged": bool(info.get("converged", False)),
            "reason": info.get("relax_reason") or None,
            "time": None if self.result is None else round(self.result.wall_time, 3),
            "status": self.status,
            "extrapolation_max": _float(info.get("extrapolation_max")),
            "extrapolating_atoms": _int(info.get("extrapolating_atoms")),
        }


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def _energy(atoms: Atoms) -> float | None:
    try:
        return float(atoms.get_potential_energy())
    except Exception:
        return None


@dataclass
class OutputPlan:
    """Which records go to which output file (``fmt`` is ASE's format name)."""

    path: Path
    fmt: str
    records: list[StructureRecord]
    existing: list[Atoms] = field(default_factory=list)


def plan_outputs(
    records: Sequence[StructureRecord], inputs: Sequence[str], output: str | None
) -> list[OutputPlan]:
    """One plan per output file: ``output`` for everything, or ``<stem>_relaxed.extxyz``
    beside each input. Refuses outputs that are inputs and single-structure formats that
    would need several structures."""
    if output is not None:
        fmt = check_output(output, inputs, len(records))
        return [OutputPlan(Path(output), fmt, list(records))]
    plans: dict[str, OutputPlan] = {}
    for r in records:
        if r.source not in plans:
            path = default_output(r.source)
            n = sum(1 for x in records if x.source == r.source)
            fmt = check_output(path, inputs, n, format="extxyz")  # "POSCAR_..." is not vasp
            plans[r.source] = OutputPlan(path, fmt, [])
        plans[r.source].records.append(r)
    return list(plans.values())


def prepare(records: Sequence[StructureRecord], settings: RelaxSettings) -> list[str]:
    """Apply ``fix_bottom_layers``/``fix_below`` in place and collect pbc/vacuum warnings.

    Raises:
        InputError: a broken cell (naming the structure).
    """
    messages = []
    cell_relax = resolve_cell_filter(settings.cell_filter) != "none"
    for r in records:
        try:
            if settings.fix_bottom_layers:
                fix_bottom_layers(r.atoms, settings.fix_bottom_layers)
            if settings.fix_below is not None:
                fix_below(r.atoms, settings.fix_below)
            messages += [f"{r.label}: {m}" for m in pbc_messages(r.atoms, cell_relax)]
        except InputError as exc:
            raise InputError(f"{r.label} ({r.source}): {exc}") from exc
    return messages


def check_structures(records: Sequence[StructureRecord], elements: Sequence[int]) -> None:
    """Validate every structure (finite positions, cell, no atoms closer than 0.3 Å,
    elements the model supports) before relaxing anything.

    Raises:
        InputError: naming the structure (label and file) and the problem.
    """
    from .validation import validate_structure

    for r in records:
        a = r.atoms
        try:
            validate_structure(a.numbers, a.positions, a.cell.array, a.pbc,
                               supported_elements=elements)  # fmt: skip
        except InputError as exc:
            raise type(exc)(f"{r.label} ({r.source}): {exc}") from exc


def model_limits(info: dict[str, Any]) -> dict[str, Any]:
    """The ``limits`` of the registered model whose file has ``info["sha256"]`` (``{}`` for
    unregistered checkpoints), e.g. ``{"max_slab_layers": 5, "note": ...}``."""
    from .registry import list_models

    for entry in list_models():
        if entry.get("sha256") == info.get("sha256"):
            return dict(entry.get("limits") or {})
    return {}


def limit_messages(records: Sequence[StructureRecord], limits: dict[str, Any]) -> list[str]:
    """Warnings for structures outside a model's stated ``limits``: slabs (exactly two
    periodic directions) with more metal layers than ``max_slab_layers`` (layers of the
    atoms that are not H, C, N or O, 0.5 Å apart along the surface normal)."""
    from .slab import layer_indices, surface_heights

    most = limits.get("max_slab_layers")
    if not most:
        return []
    messages = []
    for r in records:
        a = r.atoms
        metal = ~np.isin(a.numbers, [1, 6, 7, 8])
        if int(a.pbc.sum()) != 2 or not metal.any():
            continue
        n_layers = int(layer_indices(surface_heights(a)[metal]).max()) + 1
        if n_layers > most:
            messages.append(f"{r.label}: {n_layers} metal layers, more than this model's "
                            f"{most} ({limits.get('note', 'see its model card')})")
    return messages


def find_resumed(plan: OutputPlan) -> dict[tuple[str, int], Atoms]:
    """Frames of the existing output of ``plan`` keyed by ``(source, index)``.

    Raises:
        InputError: the output format does not keep ``atoms.info`` (needed to match frames).
    """
    frames = read_existing(plan.path, plan.fmt)
    plan.existing = frames
    if frames and plan.fmt not in ("extxyz", "traj"):
        raise InputError(
            f"--resume needs an .extxyz or .traj output to recognise finished structures; "
            f"{str(plan.path)!r} is {plan.fmt!r}"
        )
    return {(f.info.get(SOURCE_KEY), int(f.info.get(INDEX_KEY, -1))): f for f in frames}


def output_frame(record: StructureRecord, result: RelaxResult) -> Atoms:
    """The relaxed structure with results and bookkeeping in ``info`` (charge/spin kept)."""
    atoms = result.atoms
    atoms.info.update(
        {
            SOURCE_KEY: record.source,
            INDEX_KEY: record.index,
            "converged": bool(result.converged),
            "n_steps": int(result.n_steps),
            "fmax": float(result.fmax),
        }
    )
    if result.optimizer:
        atoms.info["optimizer"] = result.optimizer
    if result.reason:
        atoms.info["relax_reason"] = result.reason
    return atoms


def trajectory_path(base: str, record: StructureRecord, several: bool) -> str:
    """``base`` for a single structure, else ``<stem>_<label><suffix>`` per structure."""
    if not several:
        return base
    path = Path(base)
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", record.label).strip("_")
    return str(path.with_name(f"{path.stem}_{label}{path.suffix}"))


def run(
    records: Sequence[StructureRecord],
    settings: RelaxSettings,
    model,
    calculator_factory: Callable[[], Any],
    on_done: Callable[[Outcome], None],
    log: Callable[[str], None] | None = None,
) -> None:
    """Relax ``records``, calling ``on_done`` for each as it finishes. Uses the batched
    relaxation when :meth:`RelaxSettings.batched` allows it, else :func:`relax` one by one. When the
    model card holds a training-set summary, each relaxed frame gets extrapolation scores
    (:func:`annotate_extrapolation`)."""
    from .extrapolation import from_card

    dist = from_card(getattr(model, "card", None)) if model is not None else None
    if dist is not None:
        report = on_done

        def on_done(outcome: Outcome) -> None:
            annotate_extrapolation(outcome.frame, model, dist)
            report(outcome)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if settings.batched(records):
            _run_batched(records, settings, model, on_done, log)
            return
        calc = calculator_factory()
        for r in records:
            traj = settings.trajectory
            res = relax(
                r.atoms,
                calc,
                fmax=settings.fmax,
                steps=settings.steps,
                optimizer=settings.optimizer,
                cell_filter=settings.cell_filter,
                fix_symmetry=settings.fix_symmetry,
                trajectory=trajectory_path(traj, r, len(records) > 1) if traj else None,
                logfile="-" if log else None,
                loginterval=settings.loginterval,
                warn=False,
                polish=settings.polish,
                polish_fmax=settings.polish_fmax,
            )
            on_done(Outcome(r, output_frame(r, res), "relaxed", res))


def annotate_extrapolation(frame: Atoms, model, dist) -> None:
    """Score the atoms of ``frame`` against the training-set summary ``dist``: per-atom
    ``arrays["extrapolation"]`` and ``arrays["extrapolation_too_close"]``, and in ``info``
    ``extrapolation_max`` and ``extrapolating_atoms`` (score > 1 or too close)."""
    from .extrapolation import score_atoms

    scores = score_atoms(model, dist, frame)
    frame.arrays["extrapolation"] = scores.scores
    frame.arrays["extrapolation_too_close"] = scores.too_close
    frame.info["extrapolation_max"] = scores.max_score
    frame.info["extrapolating_atoms"] = scores.n_extrapolating


def _run_batched(records, settings: RelaxSettings, model, on_done, log) -> None:
    """Batched relaxation; with ``settings.polish`` the converged structures continue one by one
    with :data:`~tdn_calc.relaxation.POLISH_OPTIMIZER` on a float64 copy of ``model`` down to
    ``settings.polish_fmax``, as :func:`~tdn_calc.relaxation.relax` polishes."""

    from .batch_relax import batch_relax
    from .calculator import TDNCalculator

    def done(k: int, res: RelaxResult) -> None:
        on_done(Outcome(records[k], output_frame(records[k], res), "relaxed", res))

    first: dict[int, RelaxResult] = {}

    def stage_one(k: int, res: RelaxResult) -> None:
        if settings.polish and res.converged:
            first[k] = res  # polished below
        else:
            done(k, res)

    batch_relax([r.atoms for r in records], model, fmax=settings.fmax, on_result=stage_one,
                steps=settings.steps, batch_size=settings.batch_size, log=log,
                optimizer=settings.optimizer,
                loginterval=max(settings.loginterval, 10), warn=False)  # fmt: skip
    if not first:
        return
    model64 = float64_model(model)
    calc64 = TDNCalculator(model64, dtype="float64", device=next(model64.parameters()).device)
    for k in sorted(first):
        res = relax(first[k].atoms, calc64, fmax=settings.polish_fmax, steps=settings.steps,
                    optimizer=POLISH_OPTIMIZER, logfile="-" if log else None,
                    warn=False)  # fmt: skip
        done(k, merge_results(first[k], res))


def write_outputs(plans: Sequence[OutputPlan], outcomes: dict[tuple[str, int], Outcome]) -> None:
    """Write every plan's output atomically: earlier frames of other structures first, then
    this run's structures in input order (finished ones only)."""
    for plan in plans:
        keys = {r.key for r in plan.records}
        frames = [
            f
            for f in plan.existing
            if (f.info.get(SOURCE_KEY), int(f.info.get(INDEX_KEY, -1))) not in keys
        ]
        frames += [outcomes[r.key].frame for r in plan.records if r.key in outcomes]
        if frames:
            write_structures(plan.path, frames, plan.fmt)


def write_plot(path: str | Path, outcomes: Sequence[Outcome], settings: RelaxSettings) -> int:
    """PNG of energy and max force against step for every structure relaxed in this run
    (resumed ones have no history); returns how many structures it shows."""
    from .plotting import plot_relaxations

    histories = [(o.record.label, o.result.energies, o.result.fmaxs)
                 for o in outcomes if o.result is not None]  # fmt: skip
    plot_relaxations(histories, path, settings.fmax,
                     polish_fmax=settings.polish_fmax if settings.polish else None)  # fmt: skip
    return len(histories)


def versions() -> dict[str, str]:
    import ase
    import numpy
    import torch

    from . import __version__

    return {
        "tdn_calc": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ase": ase.__version__,
        "numpy": numpy.__version__,
    }


def counts(rows: Sequence[dict[str, Any]], total: int) -> dict[str, int]:
    converged = sum(r["converged"] for r in rows)
    flagged = sum(bool(r.get("extrapolating_atoms")) for r in rows)
    return {
        "total": total,
        "finished": len(rows),
        "converged": converged,
        "not_converged": len(rows) - converged,
        "resumed": sum(r["status"] == "resumed" for r in rows),
        "unfinished": total - len(rows),
        "extrapolating": flagged,
    }


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write the JSON report atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(report, handle, indent=2, default=str)
        handle.write("\n")


def build_report(
    *,
    inputs: Sequence[str],
    plans: Sequence[OutputPlan],
    model_info: dict[str, Any],
    settings: RelaxSettings,
    rows: list[dict[str, Any]],
    total: int,
    timings: dict[str, float],
    interrupted: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``--report`` JSON document."""
    return {
        "command": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": list(inputs),
        "outputs": [str(p.path) for p in plans],
        "model": model_info,
        "settings": settings.__dict__,
        "versions": versions(),
        "counts": counts(rows, total),
        "interrupted": interrupted,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "structures": rows,
        **(extra or {}),
    }


def model_groups(spec: str, records: Sequence[StructureRecord]
                 ) -> list[tuple[str, list[StructureRecord]]]:
    """``(model spec, records)`` pairs, in order of first appearance: ``spec`` for all of them,
    or with ``"auto"`` each structure's own registered model (the default one covering its
    elements), so a molecule and a metal slab given together each get the model made for them.

    Raises:
        UnsupportedElementError: with ``"auto"``, no registered model covers a structure
            (named in the message).
    """
    if spec.lower() != "auto":
        return [(spec, list(records))]
    groups: dict[str, list[StructureRecord]] = {}
    for record in records:
        groups.setdefault(auto_model_name([record.atoms], f"{record.label}: "), []).append(record)
    return list(groups.items())


def auto_model_name(structures: Sequence[Atoms], what: str = "") -> str:
    """``--model auto``: the registered model covering every element of ``structures``.

    Raises:
        UnsupportedElementError: none does; the message starts with ``what`` and says how to
            give a checkpoint instead.
    """
    from .registry import select_model_for

    try:
        return select_model_for(sorted({int(z) for a in structures for z in a.numbers}))
    except UnsupportedElementError as exc:
        raise UnsupportedElementError(
            f"--model auto: {what}{exc}. Give a checkpoint with -m path/to/model.safetensors "
            "(`tdn models list` shows the registered models)"
        ) from exc


def load_job_model(spec: str, structures: Sequence[Atoms], device: str, dtype: str):
    """Load the model named by ``spec`` (checkpoint path, registered name, or ``"auto"``: the
    first registered model covering every element of ``structures``).

    Returns:
        ``(model, info)`` with ``info = {"name", "path", "sha256", "device", "dtype"}``.
    """
    from .checkpoint import load_model
    from .fileio import sha256_file
    from .registry import resolve_model

    name = auto_model_name(structures) if spec.lower() == "auto" else spec
    path = Path(name) if Path(name).is_file() else resolve_model(name)
    model = load_model(path, device=device, dtype=dtype)
    param = next(model.parameters())
    info = {
        "name": name if spec.lower() != "auto" else f"{name} (auto)",
        "path": str(path),
        "sha256": sha256_file(path),
        "device": str(param.device),
        "dtype": str(param.dtype).removeprefix("torch."),
        "elements": list(model.elements),
    }
    return model, info
