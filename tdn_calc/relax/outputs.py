"""What a relaxation job writes and reads back: one output plan per file, the relaxed frames
with their bookkeeping in ``info``, resume from an earlier output, the plot and the JSON
report."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase import Atoms

from ..errors import InputError
from ..fileio import atomic_write
from ..structure_io import (
    INDEX_KEY,
    SOURCE_KEY,
    StructureRecord,
    check_output,
    default_output,
    read_existing,
    write_structures,
)
from .result import RelaxResult

if TYPE_CHECKING:
    from .settings import RelaxSettings


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
            "committee_force_max": _float(info.get("committee_force_max")),
            "adsorbate_curvature": _float(info.get("adsorbate_curvature")),
            "uncertain": _bool(info.get("uncertain")),
            "uncertain_signals": [s for s in str(info.get("uncertain_signals") or "").split(",")
                                  if s],
            "engine": info.get("engine", "student"),
            "student_steps": int(info.get("student_steps", info.get("n_steps", -1))),
            "teacher_steps": int(info.get("teacher_steps", 0)),
            "teacher_calls": int(info.get("teacher_calls", 0)),
            "teacher_time": _float(info.get("teacher_time")),
            "teacher_energy": _float(info.get("teacher_energy")),
            "teacher_fmax": _float(info.get("teacher_fmax")),
            "verified": _bool(info.get("verified")),
        }


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def _bool(x: Any) -> bool | None:
    return None if x is None else bool(x)


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
    if result.student_steps is not None:  # a teacher took part
        atoms.info.update(engine=result.engine, student_steps=int(result.student_steps),
                          teacher_steps=int(result.teacher_steps),
                          teacher_calls=int(result.teacher_calls),
                          teacher_time=round(float(result.teacher_time), 3))  # fmt: skip
    for key in ("teacher_energy", "teacher_fmax", "verified", "uncertain"):
        value = getattr(result, key)
        if value is not None:
            atoms.info[key] = value
    return atoms


def trajectory_path(base: str, record: StructureRecord, several: bool) -> str:
    """``base`` for a single structure, else ``<stem>_<label><suffix>`` per structure."""
    if not several:
        return base
    path = Path(base)
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", record.label).strip("_")
    return str(path.with_name(f"{path.stem}_{label}{path.suffix}"))


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
    from ..plotting import plot_relaxations

    histories = [(o.record.label, o.result.energies, o.result.fmaxs)
                 for o in outcomes if o.result is not None]  # fmt: skip
    plot_relaxations(histories, path, settings.fmax,
                     polish_fmax=settings.polish_fmax if settings.polish else None)  # fmt: skip
    return len(histories)


def versions() -> dict[str, str]:
    import ase
    import numpy
    import torch

    from .. import __version__

    return {
        "tdn_calc": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ase": ase.__version__,
        "numpy": numpy.__version__,
    }


def counts(rows: Sequence[dict[str, Any]], total: int) -> dict[str, int]:
    """Totals of the report rows (``total``: structures in the inputs): finished, converged,
    resumed, flagged by the extrapolation scores (``extrapolating``, ``uncertain``), checked
    by a teacher (``verified``, ``not_verified``) and relaxed by one (``teacher_finished``,
    ``teacher_only``)."""
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
        "uncertain": sum(r.get("uncertain") is True for r in rows),
        "verified": sum(r.get("verified") is True for r in rows),
        "not_verified": sum(r.get("verified") is False for r in rows),
        "teacher_finished": sum(r.get("engine") == "student+teacher" for r in rows),
        "teacher_only": sum(r.get("engine") == "teacher" for r in rows),
    }


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write the report atomically: JSON, or for a ``.csv`` path one row per structure
    (``report["structures"]``)."""
    if Path(path).suffix.lower() == ".csv":
        import csv

        rows = report.get("structures", [])
        with atomic_write(path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["structure"])
            writer.writeheader()
            writer.writerows(rows)
        return
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
