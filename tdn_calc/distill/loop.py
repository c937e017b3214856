"""The active-learning loop of ``tdn distill`` (:func:`run_distill`).

Round 0 labels seed data with the teacher; every later round lets the student relax the
training placements and the teacher label the picked minima (:mod:`.label`). Every round
then fine-tunes the previous round's model (round 0: ``distill.init_from``) on all data with
the trainer (a generated ``rounds/rNNN/train.yaml``), and checks the held-out agreement. The
loop stops at the agreement target or a budget, and registers the last model
(:mod:`.register`). Output folder::

    state.json         the loop's state (:mod:`.state`), written after every stage
    spec.json          the validated spec
    data/              HDF5 shards of every labelled frame (part-00000.h5, ...)
    rounds/r000/       train.yaml, train/ (the trainer's output_dir), ...
    models/, manifest.json   the registered result (TDN_MANIFEST=<out>/manifest.json)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from .label import (
    Split,
    agreement,
    check_elements,
    check_minima,
    clean_slabs,
    label_seed,
    pick,
    split_placements,
    write_round,
)
from .spec import BUDGET_KEYS, SCRATCH, DistillSpec
from .state import DistillState, open_state

log = logging.getLogger("tdn_calc.distill")
_DATA_KEYS = ("batch_size", "max_force", "oversample", "oversample_kinds")


def run_distill(spec: DistillSpec, out: str | Path,
                say: Callable[[str], None] | None = None) -> DistillState:
    """Run (or resume) the distillation of ``spec`` into the folder ``out``; returns the
    final state (``stage == "done"``), or the state where a signal stopped the trainer."""
    say = say or log.info
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "state.json"
    state = open_state(path, spec.hash(), spec.teacher)
    if not (out / "spec.json").exists():
        with atomic_write(out / "spec.json", "w") as fh:
            json.dump({"hash": spec.hash(), **spec.to_dict()}, fh, indent=1, default=list)
    if state.stage == "done" and not _budget_raised(spec, state):
        say(f"already done ({state.stop_reason}); model {state.model}")
        return state
    if state.stage == "done":
        say(f"the budget was raised: continuing after round {state.round} "
            f"(stopped on {state.stop_reason})")  # fmt: skip
        state.round, state.stage, state.stop_reason = _resume_round(state), "label", None
    slabs = clean_slabs(spec)
    split = split_placements(spec, slabs)
    check_elements(spec, slabs, split)
    say(f"{len(split.train)} training and {len(split.holdout)} held-out placements")
    while state.stage != "register":
        t0 = time.process_time()
        stage = state.stage
        if stage == "label" and state.round > 0 and (spent := _spent_budget(spec, state)):
            state.stop_reason, state.stage = spent, "register"
        elif stage == "label":
            _label(spec, state, out, slabs, split, say)
            state.stage = "train"
        elif stage == "train":
            if not _train(spec, state, out, say):
                state.cpu_seconds += time.process_time() - t0
                state.save(path)
                say("training stopped early; run the same command again to resume")
                return state
            state.stage = "agree"
        elif stage == "agree":
            _agree(spec, state, split, out, say)
            _next(spec, state)
        state.cpu_seconds += time.process_time() - t0
        state.save(path)
    from .register import register_result

    state.model = str(register_result(spec, state, out))
    state.stage = "done"
    state.save(path)
    say(f"registered {spec.name} in {out / 'manifest.json'} ({state.stop_reason})")
    return state


def _spent_budget(spec: DistillSpec, state: DistillState) -> str | None:
    """The budget ``state`` has spent under ``spec`` (``teacher_calls``, ``cpu_hours``), or
    None."""
    if state.teacher_calls >= spec.loop.teacher_calls:
        return "teacher_calls"
    if state.cpu_seconds >= 3600 * spec.loop.cpu_hours:
        return "cpu_hours"
    return None


def _budget_raised(spec: DistillSpec, state: DistillState) -> bool:
    """Whether a run that stopped on a budget (rounds, teacher calls, CPU hours) may go on
    under ``spec``'s budgets (a run that met its target stays done)."""
    if state.stop_reason not in BUDGET_KEYS:
        return False
    return _resume_round(state) < spec.loop.rounds and _spent_budget(spec, state) is None


def _resume_round(state: DistillState) -> int:
    """The round a budget-stopped run goes on with: the next one after the last round
    (``rounds``), the one whose labelling the spent budget stopped (the others)."""
    return state.round + 1 if state.stop_reason == "rounds" else state.round


def _next(spec: DistillSpec, state: DistillState) -> None:
    """After a round's check: stop at the target or the last round, else the next round."""
    if state.record(state.round)["agreement"]["met"]:
        state.stop_reason, state.stage = "target", "register"
    elif state.round + 1 >= spec.loop.rounds:
        state.stop_reason, state.stage = "rounds", "register"
    else:
        state.round, state.stage = state.round + 1, "label"


def _label(spec: DistillSpec, state: DistillState, out: Path, slabs: dict[str, Any],
           split: Split, say: Callable[[str], None]) -> None:
    """The label stage of ``state.round`` (seed data in round 0)."""
    from ..data.shards import ShardedWriter
    from ..teachers import teacher_reference_method

    rec = state.record(state.round)
    attrs = {"reference_method": teacher_reference_method(spec.teacher),
             "source": f"tdn distill {spec.name} ({spec.hash()})"}
    with ShardedWriter(out / "data", attrs) as writer:
        if state.round == 0:
            frames, calls = label_seed(spec, slabs, split, writer)
        else:
            frames, calls = _explore(spec, state, out, split, writer)
    rec["frames_added"] += frames
    rec["teacher_calls"] += calls
    state.frames += frames
    state.teacher_calls += calls
    say(f"round {state.round}: {frames} frames labelled with {calls} teacher calls "
        f"({state.frames} in all)")


def _explore(spec: DistillSpec, state: DistillState, out: Path, split: Split,
             writer: Any) -> tuple[int, int]:
    """The student (last round's model) relaxes the training placements (as many as the
    teacher budget allows single points for); the teacher checks every minimum; the picked
    ones are written. Returns ``(frames, teacher calls)``."""
    from ..campaigns.engine import relax_items

    model = out / state.record(state.round - 1)["model"]
    left = max(spec.loop.teacher_calls - state.teacher_calls, 0)
    todo = [(p.key, p.atoms) for p in split.train
            if f"r{state.round:03d}/explore/{p.key}" not in writer.done][:left]
    if not todo:
        return 0, 0
    relaxed = relax_items(_engine(spec, model), todo)
    checked = check_minima(spec, relaxed, _novelty(out, model))
    picked = pick(checked, spec, spec.loop.frames_per_round)
    frames, extra = write_round(state.round, picked, spec, writer, out / "rounds")
    return frames, len(checked) + extra


def _engine(spec: DistillSpec, model: Path) -> Any:
    """The campaign engine that relaxes with the student ``model``."""
    from ..campaigns.engine import Engine

    c = spec.campaign
    return Engine(str(model), c.device, c.dtype, c.fmax, c.steps, c.optimizer, c.batch_size)


def _novelty(out: Path, model: Path) -> Any:
    """The chemistry-novelty summary of the data set so far, at ``model``'s cutoff."""
    from ..checkpoint_format import read_metadata
    from ..data.dataset import H5Dataset
    from ..uncertainty import fit_chemistry_novelty

    config, _ = read_metadata(model)
    data = H5Dataset(out / "data")
    return fit_chemistry_novelty(data, range(len(data)), config.elements, config.cutoff)


def train_config(spec: DistillSpec, state: DistillState, out: Path) -> dict[str, Any]:
    """The ``tdn train`` config of ``state.round``: all data, no validation split,
    ``loop.train_steps`` steps from the previous round's model (round 0: ``init_from``)."""
    from ..registry import model_path

    here = out / "rounds" / f"r{state.round:03d}"
    if state.round > 0:
        init = str(out / state.record(state.round - 1)["model"])
    else:
        init = None if spec.init_from == SCRATCH else str(model_path(spec.init_from))
    steps = spec.loop.train_steps
    extra = {k: v for k, v in spec.train.items() if k not in _DATA_KEYS}
    return {
        "output_dir": str(here / "train"), "seed": spec.campaign.seed,
        "data": {"path": str(out / "data"), "split_fractions": [1.0, 0.0, 0.0],
                 "split_grouping": "trajectory",
                 **{k: v for k, v in spec.train.items() if k in _DATA_KEYS}},
        "model": dict(spec.model) if init is None else {},
        "training": {"max_steps": steps, "warmup_steps": min(100, steps // 10),
                     "test_at_end": False, "log_every_steps": max(1, min(50, steps)),
                     **extra, **({"init_from": init} if init else {})},
    }


def _train(spec: DistillSpec, state: DistillState, out: Path,
           say: Callable[[str], None]) -> bool:
    """Fine-tune for ``state.round`` (resuming the trainer's checkpoint); False when the
    trainer stopped before the end (signal, time limit)."""
    import yaml

    from ..train.config import load_config
    from ..train.trainer import Trainer

    here = out / "rounds" / f"r{state.round:03d}"
    rec = state.record(state.round)
    final = here / "train" / "final.safetensors"
    if not final.exists():
        here.mkdir(parents=True, exist_ok=True)
        if not (here / "train.yaml").exists():
            with atomic_write(here / "train.yaml", "w") as fh:
                yaml.safe_dump(train_config(spec, state, out), fh, sort_keys=False)
        resume = (here / "train" / "checkpoint.pt").exists()
        say(f"round {state.round}: {'resuming' if resume else 'starting'} training "
            f"({spec.loop.train_steps} steps on {state.frames} frames)")
        status = Trainer(load_config(here / "train.yaml"), resume=resume).run()
        if status != "finished":
            return False
    rec["model"] = str(final.relative_to(out))
    return True


def _agree(spec: DistillSpec, state: DistillState, split: Split, out: Path,
           say: Callable[[str], None]) -> None:
    """The student relaxes the held-out placements; the teacher's single point at each
    minimum gives the agreement (these calls count towards the budget)."""
    from ..campaigns.engine import relax_items

    rec = state.record(state.round)
    model = out / rec["model"]
    relaxed = relax_items(_engine(spec, model), [(p.key, p.atoms) for p in split.holdout])
    result = agreement(check_minima(spec, relaxed), spec)
    rec["agreement"] = result
    rec["teacher_calls"] += result["n"]
    state.teacher_calls += result["n"]
    say(f"round {state.round}: held-out median |dE| {result['median_abs_de_eV']:.4f} eV, "
        f"median teacher fmax {result['median_teacher_fmax_eV_A']:.3f} eV/Å"
        f"{' (target met)' if result['met'] else ''}")
