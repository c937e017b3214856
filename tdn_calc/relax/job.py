"""A relaxation job, the work behind ``tdn-relax``: read the inputs, plan the outputs,
resume, load each structure's model, relax (batched or one by one, with the polish), save as
it goes, and write the outputs, the JSON report and the plot. The CLI (``cli/relax.py``) only
parses options, builds a :class:`RelaxJob` and prints its :class:`JobResult`."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ..calculator import calculator_on_model_device
from ..committee import ARRAY_KEY as COMMITTEE_ARRAY
from ..committee import INFO_KEY as COMMITTEE_INFO
from ..committee import annotate_committee, partner_for_loaded_model
from ..errors import InputError
from ..soft_modes import ARRAY_KEY as CURVATURE_KEY
from ..soft_modes import annotate_curvature, threshold_for_loaded_model
from ..structure_io import StructureRecord
from ..uncertainty import for_loaded_model, signal_flags
from .inputs import (
    check_structures,
    limit_messages,
    load_job_model,
    model_groups,
    model_limits,
    uncovered_records,
)
from .inputs import prepare as prepare_records
from .outputs import (
    Outcome,
    OutputPlan,
    build_report,
    counts,
    find_resumed,
    output_frame,
    plan_outputs,
    trajectory_path,
    write_outputs,
    write_plot,
    write_report,
)
from .precision import float64_calculator
from .queue import batch_relax
from .result import ConvergenceWarning, RelaxResult
from .settings import RelaxSettings
from .single import finish_with_teacher, polish_relaxation, relax, teacher_relax
from .teacher import TeacherStage

#: Exit status when every structure converged / some did not / Ctrl-C.
EXIT_OK, EXIT_NOT_CONVERGED, EXIT_INTERRUPTED = 0, 3, 130
#: Exit status when a teacher's single point fails ``verify_fmax`` (``--verify``): as when
#: not converged, the result needs a look.
EXIT_NOT_VERIFIED = EXIT_NOT_CONVERGED
#: ``info`` and ``arrays`` keys of the student's extrapolation scores at its minimum, kept on
#: the output frame when a teacher finishes the structure.
_SCORE_INFO = ("extrapolation_max", "extrapolating_atoms", "uncertain", "uncertain_signals",
               COMMITTEE_INFO, CURVATURE_KEY)
_SCORE_ARRAYS = ("extrapolation", "extrapolation_too_close", "uncertainty", COMMITTEE_ARRAY,
                 CURVATURE_KEY)
#: Finished structures are written at least this often during a run, s.
SAVE_EVERY_S = 300.0


def run(
    records: Sequence[StructureRecord],
    settings: RelaxSettings,
    model: torch.nn.Module | None,
    calculator_factory: Callable[[], Any],
    on_done: Callable[[Outcome], None],
    log: Callable[[str], None] | None = None,
    teachers: TeacherStage | None = None,
) -> None:
    """Relax ``records``, calling ``on_done`` for each as it finishes. Uses the batched
    relaxation (:func:`~tdn_calc.relax.queue.batch_relax`) when :meth:`RelaxSettings.batched`
    allows it, else :func:`~tdn_calc.relax.single.relax` one by one. When the model card
    holds a training-set summary, each relaxed frame gets extrapolation scores
    (:func:`annotate_extrapolation`). With ``settings.verify``/``settings.finish`` the
    teachers (``teachers``, else built from ``settings``) verify and finish each structure
    (:func:`~tdn_calc.relax.single.finish_with_teacher`); ``model`` ``None``: the finish
    teacher relaxes them alone (:func:`~tdn_calc.relax.single.teacher_relax`)."""
    from ..extrapolation import from_card

    if teachers is None and (settings.verify or settings.finish):
        teachers = settings.teacher_stage()
    if model is None:
        if teachers is None or not teachers.finish:
            raise InputError("no model: only a finish teacher can relax these structures")
        _run_teacher_only(records, settings, teachers, on_done, log)
        return
    dist = from_card(getattr(model, "card", None))
    novelty = for_loaded_model(model)  # resolved (and its sidecar checked) before relaxing
    partner = partner_for_loaded_model(model)  # so is the committee partner (loaded once)
    curvature = threshold_for_loaded_model(model)  # and the soft-mode threshold (checked now)
    scored = any(x is not None for x in (dist, novelty, partner, curvature))
    if scored or teachers is not None:
        report = on_done
        student: list[Any] = []  # the student's calculator for a finish, built once

        def on_done(outcome: Outcome) -> None:
            if scored:
                annotate_extrapolation(outcome.frame, model, dist,
                                       bool(outcome.frame.info.get("converged", True)))
            if teachers is not None:
                if teachers.finish and not student:  # plain forces for the Hessian seed
                    student.append(calculator_on_model_device(model, extrapolation=False,
                                                              uncertainty=False))
                outcome = _with_teachers(outcome, settings, teachers, log,
                                         student[0] if student else None)
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


def annotate_extrapolation(frame: Atoms, model: torch.nn.Module, dist: Any,
                           converged: bool = True) -> None:
    """Score the atoms of ``frame`` as the calculator does: per-atom
    ``arrays["extrapolation"]`` and ``arrays["extrapolation_too_close"]`` against the
    training-set summary ``dist`` (when not ``None``), ``arrays["uncertainty"]`` (chemistry
    novelty, when the registered model has a summary), ``arrays["committee_force"]`` (the
    force disagreement of the card's committee partner, :mod:`tdn_calc.committee`),
    ``arrays["adsorbate_curvature"]`` (the adsorbate's softest mode, eV/Å², when the card has
    a curvature threshold and the relaxation ``converged``: a minimum's check,
    :mod:`tdn_calc.soft_modes`), and in ``info``
    ``extrapolation_max``, ``committee_force_max``, ``adsorbate_curvature``,
    ``uncertain_signals`` (the signals raised, comma-separated keys of
    :data:`~tdn_calc.uncertainty.SIGNAL_WORDS`; absent when none), ``extrapolating_atoms`` (atoms to
    distrust, :func:`~tdn_calc.uncertainty.uncertain_atoms`) and ``uncertain`` (any such
    atom)."""
    from ..extrapolation import score_atoms

    for key in _SCORE_ARRAYS:  # scores an input frame carried from an earlier run
        frame.arrays.pop(key, None)
    for key in _SCORE_INFO:
        frame.info.pop(key, None)
    if dist is not None:
        scores = score_atoms(model, dist, frame)
        frame.arrays["extrapolation"] = scores.scores
        frame.arrays["extrapolation_too_close"] = scores.too_close
        frame.info["extrapolation_max"] = scores.max_score
    threshold = committee_threshold = None
    novelty = for_loaded_model(model)
    if novelty is not None:
        summary, threshold = novelty
        frame.arrays["uncertainty"] = summary.score_atoms(frame)
    partner = partner_for_loaded_model(model)
    if partner is not None:
        committee_threshold = annotate_committee(frame, _model_forces(frame, model), partner)
    curvature_threshold = threshold_for_loaded_model(model)
    if curvature_threshold is not None and converged:
        curvature_threshold = annotate_curvature(
            frame, calculator_on_model_device(model, extrapolation=False, uncertainty=False),
            curvature_threshold)
    signals = signal_flags(frame.arrays, threshold, committee_threshold, curvature_threshold)
    if signals:
        flags = np.logical_or.reduce(list(signals.values()))
        frame.info["extrapolating_atoms"] = int(flags.sum())
        frame.info["uncertain"] = bool(flags.any())
        raised = ",".join(k for k, v in signals.items() if v.any())
        if raised:  # absent when none (popped above): ASE's extxyz mangles "" on reading
            frame.info["uncertain_signals"] = raised


def _model_forces(frame: Atoms, model: torch.nn.Module) -> Any:
    """``[n_atoms, 3]`` raw forces (eV/Å) of ``model`` at ``frame``: the ones the relaxation
    stored on it, else computed."""
    stored = getattr(frame.calc, "results", {}).get("forces")
    if stored is not None:
        return stored
    probe = frame.copy()
    probe.calc = calculator_on_model_device(model, extrapolation=False, uncertainty=False)
    return probe.get_forces(apply_constraint=False)


def _with_teachers(outcome: Outcome, settings: RelaxSettings, teachers: TeacherStage,
                   log: Callable[[str], None] | None, student: Any = None) -> Outcome:
    """``outcome`` after the teacher stage (finish when wanted, verify; a finishing BFGS
    starts from the ``student`` calculator's Hessian); the student's extrapolation scores at
    its minimum stay on the output frame."""
    student_frame = outcome.frame
    result = finish_with_teacher(outcome.result, teachers, student_frame.info.get("uncertain"),
                                 settings.fmax, steps=settings.steps,
                                 optimizer=settings.optimizer, cell_filter=settings.cell_filter,
                                 logfile="-" if log else None, student=student)  # fmt: skip
    frame = output_frame(outcome.record, result)
    if frame is not student_frame:
        frame.info.update({k: student_frame.info[k] for k in _SCORE_INFO
                           if k in student_frame.info})
        frame.arrays.update({k: student_frame.arrays[k] for k in _SCORE_ARRAYS
                             if k in student_frame.arrays})
    return Outcome(outcome.record, frame, outcome.status, result)


def _run_teacher_only(records: Sequence[StructureRecord], settings: RelaxSettings,
                      teachers: TeacherStage, on_done: Callable[[Outcome], None],
                      log: Callable[[str], None] | None) -> None:  # fmt: skip
    """Relax ``records`` (no TDN model covers them) with the finish teacher alone."""
    for r in records:
        traj = settings.trajectory
        result = teacher_relax(
            r.atoms, teachers, settings.fmax, steps=settings.steps, optimizer=settings.optimizer,
            cell_filter=settings.cell_filter, fix_symmetry=settings.fix_symmetry,
            trajectory=trajectory_path(traj, r, len(records) > 1) if traj else None,
            logfile="-" if log else None, loginterval=settings.loginterval,
        )
        on_done(Outcome(r, output_frame(r, result), "relaxed", result))


def _run_batched(records: Sequence[StructureRecord], settings: RelaxSettings,
                 model: torch.nn.Module, on_done: Callable[[Outcome], None],
                 log: Callable[[str], None] | None) -> None:  # fmt: skip
    """Batched relaxation; with ``settings.polish`` the converged structures continue one by
    one with the float64 polish (:func:`~tdn_calc.relax.single.polish_relaxation`) down to
    ``settings.polish_fmax``, as ``relax(..., polish=True)`` polishes."""
    from ..calculator import TDNCalculator

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
    device = next(model.parameters()).device
    calc64 = float64_calculator(TDNCalculator(model, device=device))  # one twin for all
    for k in sorted(first):
        done(k, polish_relaxation(first[k], calc64, settings.polish_fmax, steps=settings.steps,
                                  logfile="-" if log else None))  # fmt: skip


def _quiet(message: str) -> None:
    """Discard ``message`` (the default ``say`` of a :class:`RelaxJob`)."""


@dataclass
class JobResult:
    """What a finished (or interrupted) :class:`RelaxJob` reports.

    Attributes:
        rows: one :meth:`Outcome.row` per finished structure, in input order.
        counts: totals (:func:`~tdn_calc.relax.outputs.counts`).
        outputs: the output files.
        interrupted: Ctrl-C or SIGTERM stopped the run.
        rank: this process's rank (only rank 0 writes and prints).
        start: ``time.perf_counter()`` when the job started, s.
    """

    rows: list[dict[str, Any]]
    counts: dict[str, int]
    outputs: list[str]
    interrupted: bool
    rank: int = 0
    start: float = 0.0

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_INTERRUPTED`, :data:`EXIT_NOT_CONVERGED`, :data:`EXIT_NOT_VERIFIED`
        (a teacher's single point above ``verify_fmax``) or :data:`EXIT_OK`."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.counts["not_converged"]:
            return EXIT_NOT_CONVERGED
        return EXIT_NOT_VERIFIED if self.counts.get("not_verified") else EXIT_OK


@dataclass
class RelaxJob:
    """A ``tdn-relax`` run over the files ``inputs``.

    Attributes:
        inputs: structure files (any format ASE reads; a file given twice is relaxed once).
        settings: the relaxation options.
        output: one output file for everything (``None``: ``<stem>_relaxed.extxyz`` beside
            each input).
        model: checkpoint path, registered name or ``"auto"`` (each structure's own model).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: ``"float32"`` or ``"float64"``.
        report: JSON report path, or ``None``.
        resume: skip structures already in the output.
        plot: PNG of the histories (``""``: ``<first output stem>.png``; ``None``: none).
        say: called with notes and warnings (rank 0 only).
        log: called with optimizer progress lines (``None``: none).
        progress: show a progress bar on stderr (rank 0, two structures or more).
    """

    inputs: Sequence[str]
    settings: RelaxSettings = field(default_factory=RelaxSettings)
    output: str | None = None
    model: str = "auto"
    device: str = "auto"
    dtype: str = "float32"
    report: str | None = None
    resume: bool = False
    plot: str | None = None
    say: Callable[[str], None] = _quiet
    log: Callable[[str], None] | None = None
    progress: bool = True

    def run(self) -> JobResult:
        """Relax, write the outputs (and report, plot) and return the summary; a Ctrl-C or
        SIGTERM ends the relaxation early, with the finished structures written.

        Raises:
            TDNError: bad inputs, outputs or model (before anything is relaxed).
        """
        from .. import distributed
        from ..structure_io import check_output_path, read_structures

        start = time.perf_counter()
        rank, size = distributed.world()
        say = self.say if rank == 0 else _quiet
        inputs = list(dict.fromkeys(self.inputs))
        for path, what in ((self.report, "--report"), (self.settings.trajectory, "--trajectory")):
            if path:
                check_output_path(path, inputs, what)
        records = read_structures(inputs)
        plans = plan_outputs(records, inputs, self.output)
        plot = self.plot
        if plot is not None:
            plot = plot or str(plans[0].path.with_suffix(".png"))
            check_output_path(plot, inputs, "--plot")
        for message in prepare_records(records, self.settings):
            say(f"warning: {message}")
        done = self._resumed(plans, say) if self.resume else {}
        todo = [r for r in records if r.key not in done]
        teachers = self._teachers(todo)
        jobs, model_info = self._load_models(todo or records, done, size, say)
        loaded = time.perf_counter()
        finished, interrupted = self._relax(jobs, plans, done, rank, size, teachers)
        relaxed = time.perf_counter()
        for part in distributed.all_gather(finished):
            done.update(part)
        rows = [done[r.key].row() for r in records if r.key in done]
        if rank == 0:
            write_outputs(plans, done)
            if self.report:
                write_report(self.report, build_report(
                    inputs=inputs, plans=plans, model_info=model_info, settings=self.settings,
                    rows=rows, total=len(records), interrupted=interrupted,
                    timings={"load": loaded - start, "relax": relaxed - loaded,
                             "total": time.perf_counter() - start},
                    extra={"world_size": size, "batched": self.settings.batched(todo)},
                ))  # fmt: skip
            if plot:
                shown = write_plot(plot, [done[r.key] for r in records if r.key in done],
                                   self.settings)  # fmt: skip
                say(f"plot of {shown} relaxation(s) -> {plot}")
        distributed.shutdown()
        return JobResult(rows=rows, counts=counts(rows, len(records)),
                         outputs=[str(p.path) for p in plans], interrupted=interrupted,
                         rank=rank, start=start)  # fmt: skip

    def _resumed(self, plans: Sequence[OutputPlan],
                 say: Callable[[str], None]) -> dict[tuple[str, int], Outcome]:  # fmt: skip
        """Outcomes of the structures already in the outputs (``--resume``)."""
        done: dict[tuple[str, int], Outcome] = {}
        for plan in plans:
            found = find_resumed(plan)
            for r in plan.records:
                if r.key in found:
                    done[r.key] = Outcome(r, found[r.key], "resumed")
        n_todo = sum(len(p.records) for p in plans) - len(done)
        say(f"resume: {len(done)} structure(s) already in the output, {n_todo} to relax")
        return done

    def _teachers(self, todo: Sequence[StructureRecord]) -> TeacherStage | None:
        """The teachers of ``--verify``/``--finish``, built and checked against the elements
        of the structures to relax before anything runs (``None``: no teacher).

        Raises:
            InputError: an unknown teacher, a missing package, elements it does not cover.
        """
        from ..device import resolve_device

        teachers = self.settings.teacher_stage(str(resolve_device(self.device)))
        if teachers is not None:
            teachers.check_elements((f"{r.label} ({r.source})", r.atoms) for r in todo)
        return teachers

    def _load_models(self, records: Sequence[StructureRecord], done: dict, size: int,
                     say: Callable[[str], None]) -> tuple[list, dict[str, Any]]:  # fmt: skip
        """``[(model, info, records to relax)]`` per model and the report's model entry.
        With ``finish``, the structures no TDN model covers form a last group with model
        ``None`` (the teacher relaxes them alone)."""
        from .. import distributed
        from ..device import resolve_device

        dev = resolve_device(self.device)
        if size > 1 and dev.type == "cuda" and dev.index is None:
            dev = resolve_device(f"cuda:{distributed.local_rank()}")
        jobs = []
        alone = uncovered_records(self.model, records) if self.settings.finish else []
        covered = [r for r in records if r.key not in {a.key for a in alone}]
        for spec, group in model_groups(self.model, covered):
            model, info = load_job_model(spec, [r.atoms for r in group], str(dev), self.dtype)
            if self.settings.finish:
                alone += uncovered_records(self.model, group, model.elements)
                group = [r for r in group if r.key not in {a.key for a in alone}]
            pending = [r for r in group if r.key not in done]
            check_structures(pending, model.elements)
            for message in limit_messages(pending, model_limits(info)):
                say(f"warning: {message}")
            if self.model.lower() == "auto":
                info["name"] = f"{spec} (auto)"
                info["structures"] = [r.label for r in group]
            jobs.append((model, info, pending))
        if alone:
            pending = [r for r in alone if r.key not in done]
            check_structures(pending, None)
            jobs.append((None, {"name": f"teacher {self.settings.finish} alone (no TDN model "
                                        "covers these elements)",
                                "structures": [r.label for r in alone]}, pending))  # fmt: skip
            say(f"--finish {self.settings.finish}: no TDN model covers {len(alone)} "
                f"structure(s) ({', '.join(r.label for r in alone[:5])}"
                f"{', ...' if len(alone) > 5 else ''}); the teacher relaxes them alone")
        if len(jobs) == 1:
            return jobs, jobs[0][1]
        for model, info, group in jobs:
            if model is not None:
                say(f"--model auto: {info['name'].removesuffix(' (auto)')} for {len(group)} "
                    "structure(s)")  # fmt: skip
        return jobs, {"name": "auto, per structure", "models": [info for _, info, _ in jobs]}

    def _relax(self, jobs: list, plans: Sequence[OutputPlan], done: dict, rank: int,
               size: int, teachers: TeacherStage | None = None,
               ) -> tuple[dict[tuple[str, int], Outcome], bool]:  # fmt: skip
        """Relax this rank's share of every group (with ``teachers``: verified and finished,
        :func:`run`); the outcomes and whether interrupted. Finished structures are written
        every :data:`SAVE_EVERY_S` (single process)."""
        from tqdm import tqdm

        from ..interrupts import raise_if_interrupted, sigterm_as_interrupt

        n_mine = sum(len(group[rank::size]) for _, _, group in jobs)
        bar = tqdm(total=n_mine, unit="structure", file=sys.stderr,
                   disable=not self.progress or n_mine < 2 or rank != 0)  # fmt: skip
        finished: dict[tuple[str, int], Outcome] = {}
        last_save = [time.perf_counter()]

        def on_done(outcome: Outcome) -> None:
            finished[outcome.record.key] = outcome
            bar.update(1)
            if size == 1 and time.perf_counter() - last_save[0] > SAVE_EVERY_S:
                write_outputs(plans, {**done, **finished})  # survive a crash/kill
                last_save[0] = time.perf_counter()
            raise_if_interrupted()  # a SIGTERM whose exception was swallowed

        interrupted = False
        try:
            with sigterm_as_interrupt():
                for model, _, group in jobs:
                    run(group[rank::size], self.settings, model,
                        lambda model=model: calculator_on_model_device(model), on_done,
                        log=self.log,
                        teachers=teachers)  # fmt: skip
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        return finished, interrupted
