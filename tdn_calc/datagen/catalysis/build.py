"""Teacher relaxation of catalysis systems and the resumable, multiprocess build.

Output directory layout:

- ``part-NNNNN.h5``: frames in the tdn-calc HDF5 format (:class:`ShardedWriter`), one
  trajectory per system, identifier = the system label;
- ``trajectories.jsonl``: one JSON line per written trajectory (label, kind, metal,
  adsorbate, site, strain, replica, converged, n_steps, n_frames, fixed atom indices, ...),
  since the HDF5 format stores only identifiers per trajectory;
- ``lattice_constants.json``: teacher-relaxed fcc lattice constants (Å), per teacher;
- ``build_config.json``: teacher and settings of the first run; a later run into the same
  directory must use the same ones (only the scope — replicas, metals, adsorbates, sites,
  gas molecules, strains, strained slabs — may change), so frames never mix two recipes;
- ``summary.json``: the last run's counts, failures and timings.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.optimize import BFGS, FIRE, LBFGS

from ...data.frames import Frame, FrameKind
from ...data.shards import ShardedWriter
from ...errors import InputError
from ...fileio import atomic_write
from ...interrupts import interrupts_deferred, raise_if_interrupted
from ...slab import fixed_mask
from ...teachers import canonical_teacher_name, get_teacher, teacher_reference_method
from ..workers import worker_signals
from .coverage import CoverageConfig
from .systems import CatalysisConfig, SystemSpec, system_rng

_OPTIMIZERS = {"BFGS": BFGS, "FIRE": FIRE, "LBFGS": LBFGS}
# which systems are built, not how (each label fixes its system): may change between runs;
# the coverage recipe's slab_strains and strained_adsorbates came later, so a
# build_config.json written before them has neither and still matches
_SCOPE_FIELDS = ("replicas", "metals", "adsorbates", "sites", "gas_molecules", "bulk_strains",
                 "slab_strains", "strained_adsorbates")


@dataclass
class TrajectoryResult:
    """A relaxed and labelled system: ``frames`` (relaxation steps, then rattled copies)."""

    spec: SystemSpec
    frames: list[Frame]
    fixed: np.ndarray  # [n_atoms] bool
    converged: bool
    n_steps: int
    n_calls: int  # teacher evaluations
    seconds: float
    spin: int = 0
    cpu_seconds: float = 0.0  # this process's CPU time (wall `seconds` grows with contention)

    def metadata(self) -> dict:
        """The ``trajectories.jsonl`` record of this trajectory."""
        kinds = Counter(int(fr.kind) for fr in self.frames)
        return {**asdict(self.spec), "converged": self.converged, "n_steps": self.n_steps,
                "n_frames": len(self.frames), "n_relax_frames": kinds[FrameKind.RELAX],
                "n_rattled_frames": kinds[FrameKind.RATTLED], "n_calls": self.n_calls,
                "n_atoms": self.frames[0].n_atoms, "spin": self.spin,
                "fixed_atoms": np.flatnonzero(self.fixed).tolist(),
                "final_energy": self.frames[self._last_relax()].energy,
                "seconds": round(self.seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3)}

    def _last_relax(self) -> int:
        return max(i for i, fr in enumerate(self.frames) if fr.kind == FrameKind.RELAX)


def label_frame(atoms: Atoms, kind: int, step: int, with_stress: bool = False) -> Frame:
    """Teacher labels of ``atoms`` as a Frame; forces are the raw ones (fixed atoms too)."""
    return Frame(
        atomic_numbers=atoms.numbers, positions=atoms.positions.copy(),
        energy=atoms.get_potential_energy(), forces=atoms.get_forces(apply_constraint=False),
        cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy(),
        stress=atoms.get_stress(voigt=False) if with_stress else None, kind=kind, step=step,
    )


def relax_and_label(spec: SystemSpec, atoms: Atoms, calc, config: CatalysisConfig
                    ) -> TrajectoryResult:
    """Relax ``atoms`` with ``calc`` (positions only; fixed atoms stay), keep every
    ``config.subsample``-th frame plus the first and last, then add ``config.n_rattle``
    rattled copies of the final structure (fixed atoms not moved). Stress only for bulk.
    ``config`` is a CatalysisConfig or a coverage.CoverageConfig (any recipe)."""
    start, cpu = time.perf_counter(), time.process_time()
    with_stress = spec.kind == "bulk"
    fixed = fixed_mask(atoms)
    atoms.calc = calc
    relax: list[Frame] = []
    opt = _OPTIMIZERS[config.optimizer](atoms, logfile=None)
    opt.attach(lambda: relax.append(label_frame(atoms, FrameKind.RELAX, len(relax), with_stress)))
    converged = bool(opt.run(fmax=config.fmax, steps=config.max_steps))
    keep = sorted({*range(0, len(relax), config.subsample), len(relax) - 1})
    frames = [relax[i] for i in keep]

    rng = system_rng(config.seed + 1, spec.label)  # independent of the start perturbation
    final = atoms.copy()
    final.calc = calc
    lo, hi = config.rattle_sigma
    for k in range(config.n_rattle):
        sigma = rng.uniform(lo, hi)
        noise = rng.normal(0.0, sigma, final.positions.shape)
        noise[fixed] = 0.0
        final.positions = atoms.positions + noise
        frames.append(label_frame(final, FrameKind.RATTLED, k, with_stress))
    return TrajectoryResult(spec, frames, fixed, converged, opt.nsteps,
                            len(relax) + config.n_rattle, time.perf_counter() - start,
                            spin=config.spin(spec), cpu_seconds=time.process_time() - cpu)


# ---------------------------------------------------------------- worker processes
_STATE: dict = {}


def _init_worker(teacher: str, device: str, threads: int, lattice: dict[str, float],
                 config: CatalysisConfig) -> None:
    """Pool initializer: one teacher per process, ``threads`` torch threads."""
    worker_signals()
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # a torch-free teacher such as EMT
        pass
    _STATE.update(lattice=lattice, config=config, calc=None, error=None)
    try:
        _STATE["calc"] = get_teacher(teacher, device)
    except Exception as exc:  # reported per system, not a respawn loop
        _STATE["error"] = f"teacher {teacher!r} failed to load: {type(exc).__name__}: {exc}"


def _run_one(spec: SystemSpec) -> TrajectoryResult | tuple[str, str]:
    """Build and relax one system in a worker; a failure returns ``(label, message)``."""
    if _STATE["error"]:
        return spec.label, _STATE["error"]
    try:
        atoms = _STATE["config"].build(spec, _STATE["lattice"])
        return relax_and_label(spec, atoms, _STATE["calc"], _STATE["config"])
    except Exception as exc:
        last = traceback.format_exc(limit=-1).strip().splitlines()[-1]
        return spec.label, f"{type(exc).__name__}: {exc} ({last})"


@dataclass
class BuildSummary:
    """What one call of :func:`build_catalysis` did."""

    planned: int = 0
    already_done: int = 0
    written: int = 0
    not_converged: int = 0
    frames: int = 0
    teacher_calls: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def trajectories_per_hour(self) -> float:
        return 3600.0 * self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "trajectories_per_hour": round(self.trajectories_per_hour, 1)}

    def format(self) -> str:
        per = self.frames / self.written if self.written else 0.0
        ms = 1000 * self.seconds / self.teacher_calls if self.teacher_calls else 0.0
        return (
            f"planned {self.planned}, already done {self.already_done}, written {self.written} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.by_kind.items())) or 'none'}), "
            f"failed {len(self.failures)}, not converged {self.not_converged}; "
            f"{self.frames} frames ({per:.1f}/trajectory), {self.teacher_calls} teacher calls; "
            f"{self.seconds:.0f} s, {self.trajectories_per_hour:.0f} trajectories/hour, "
            f"{ms:.0f} ms per call (wall)" + (" [interrupted]" if self.interrupted else "")
        )


def build_catalysis(
    out: str | os.PathLike,
    *,
    teacher: str = "sevenn-0",
    config: CatalysisConfig | CoverageConfig | None = None,
    workers: int = 1,
    device: str = "cpu",
    threads: int = 1,
    limit: int | None = None,
    shard_size: int = 250,
    progress: bool = True,
) -> BuildSummary:
    """Relax every system of ``config`` with ``teacher`` and append the frames to ``out``.

    Resumable: systems whose label is already in ``out`` are skipped. Deterministic: a
    system's frames depend only on ``config`` (seed included) and the teacher, not on
    ``workers`` or on the order of completion. ``limit`` caps the number of systems taken
    from the start of the enumeration (replica 0 first; the coverage recipe's order is
    interleaved over metals, facets and adsorbate families). ``config`` is any recipe: a
    CatalysisConfig or a :class:`~tdn_calc.datagen.catalysis.coverage.CoverageConfig`.
    """
    from tqdm import tqdm

    config = config or CatalysisConfig()
    if workers < 1:
        raise InputError(f"workers must be >= 1; got {workers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = canonical_teacher_name(teacher)
    t0 = time.perf_counter()
    _check_recipe(out / "build_config.json", key, config)
    _set_threads(1)  # lattice fits are tiny; and a forked pool must not inherit threads
    lattice = config.lattice_constants(out / "lattice_constants.json", key,
                                       lambda: get_teacher(teacher, device))
    specs = config.enumerate()[:limit]
    attrs = {"reference_method": teacher_reference_method(teacher), "source": config.source,
             "teacher": key, "seed": config.seed,
             "config": json.dumps(asdict(config), sort_keys=True)}
    summary = BuildSummary(planned=len(specs))
    by_kind: Counter = Counter()
    with ShardedWriter(out, attrs, shard_size=shard_size) as writer:
        done = writer.done
        todo = [s for s in specs if s.label not in done]
        summary.already_done = len(specs) - len(todo)
        init = (teacher, device, threads, lattice, config)
        bar = tqdm(total=len(todo), desc="catalysis", unit="traj", disable=not progress)
        try:
            for result in _results(todo, workers, init):
                raise_if_interrupted()
                if isinstance(result, tuple):
                    summary.failures[result[0]] = result[1]
                else:
                    with interrupts_deferred():  # frames and their record, both or neither
                        writer.append_trajectory(result.spec.label, result.frames,
                                                 spin=result.spin)
                        _append_line(out / "trajectories.jsonl", result.metadata())
                    summary.written += 1
                    summary.frames += len(result.frames)
                    summary.teacher_calls += result.n_calls
                    summary.not_converged += not result.converged
                    by_kind[result.spec.kind] += 1
                bar.update(1)
                bar.set_postfix(failed=len(summary.failures))
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bar.close()
            summary.by_kind = dict(by_kind)
            summary.seconds = time.perf_counter() - t0
            with atomic_write(out / "summary.json", "w") as fh:
                fh.write(json.dumps(summary.to_dict(), indent=1) + "\n")
    return summary


def _results(todo: list[SystemSpec], workers: int, init: tuple):
    """Yield the result of each system, in this process or from a spawn pool."""
    if workers == 1 or len(todo) <= 1:
        _init_worker(*init)
        for spec in todo:
            yield _run_one(spec)
        return
    # fork is safe here: the parent ran torch on one thread only (no OpenMP pool to inherit)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=init) as pool:
        yield from pool.imap_unordered(_run_one, todo, chunksize=1)


def _check_recipe(path: Path, teacher: str, config: CatalysisConfig) -> None:
    """Record the recipe on the first run; refuse a later run with a different one."""
    recipe = {k: v for k, v in asdict(config).items() if k not in _SCOPE_FIELDS}
    if not recipe.get("slab_tag"):  # added later: sets built before it recorded none
        recipe.pop("slab_tag", None)
    recipe = json.loads(json.dumps({"teacher": teacher, **recipe}))  # tuples -> lists
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(recipe) if old.get(k) != recipe.get(k))
        if diff:
            raise InputError(
                f"{path.parent} was built with other settings ({', '.join(diff)}: "
                f"{[old.get(k) for k in diff]} there, {[recipe.get(k) for k in diff]} now); "
                "use a new --out directory or the same settings"
            )
        return
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(recipe, indent=1, sort_keys=True) + "\n")


def _set_threads(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _append_line(path: Path, record: dict) -> None:
    """Append one JSON line and fsync (a crash leaves at most a partial last line)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_metadata(out: str | os.PathLike) -> dict[str, dict]:
    """label → metadata record from ``out/trajectories.jsonl`` (later lines win)."""
    path = Path(out) / "trajectories.jsonl"
    records: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a partial last line after a crash
                continue
            records[rec["label"]] = rec
    return records
