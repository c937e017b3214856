"""The loop's state file ``<out>/state.json``, written atomically after every stage.

A round runs the stages ``label`` (round 0: teacher seed data; later rounds: the student
relaxes the training placements and the teacher labels the picked frames), ``train``
(fine-tune through the trainer, which resumes from its own ``checkpoint.pt``) and ``agree``
(held-out check); the run ends with ``register``. ``stage`` is the next stage to run, so a
run killed anywhere repeats at most the stage it was in: a repeated ``label`` stage skips
the trajectories already in the data set, a repeated ``train`` stage resumes the trainer.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fileio import atomic_write

STAGES = ("label", "train", "agree")
FORMAT = "tdn-distill-state-1"


@dataclass
class DistillState:
    """Where a distillation stands.

    Attributes:
        spec_hash: :meth:`~.spec.DistillSpec.hash` of the spec it runs.
        teacher: the teacher's name.
        round: the current round (0: the seed round).
        stage: the next stage of ``round`` (one of :data:`STAGES`), ``register`` or ``done``.
        frames: labelled frames in the data set.
        teacher_calls: teacher energy+force calls so far.
        cpu_seconds: CPU time of the finished stages, s.
        history: one record per round: ``round``, ``frames_added``, ``teacher_calls``,
            ``model`` (the round's fine-tuned file), ``agreement``.
        stop_reason: why the loop stopped (``target``, ``rounds``, ``teacher_calls``,
            ``cpu_hours``), else empty.
        model: the registered file, once registered.
    """

    spec_hash: str
    teacher: str
    round: int = 0
    stage: str = "label"
    frames: int = 0
    teacher_calls: int = 0
    cpu_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    model: str = ""

    def record(self, round_: int) -> dict[str, Any]:
        """The history record of ``round_`` (made when missing)."""
        for rec in self.history:
            if rec["round"] == round_:
                return rec
        rec = {"round": round_, "frames_added": 0, "teacher_calls": 0, "model": "",
               "agreement": None}
        self.history.append(rec)
        return rec

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (a temporary file renamed over ``path``)."""
        with atomic_write(path, "w") as fh:
            json.dump({"format": FORMAT, **asdict(self)}, fh, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DistillState:
        """Read a state file written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        if data.pop("format", None) != FORMAT:
            raise InputError(f"{path} is not a tdn distill state file ({FORMAT})")
        return cls(**data)


def open_state(path: Path, spec_hash: str, teacher: str) -> DistillState:
    """The state at ``path`` (a new one when absent); refuses another spec's or teacher's."""
    if not path.exists():
        return DistillState(spec_hash, teacher)
    state = DistillState.load(path)
    if state.spec_hash != spec_hash or state.teacher != teacher:
        raise InputError(
            f"{path} belongs to spec {state.spec_hash} with teacher {state.teacher!r}, not "
            f"{spec_hash} with {teacher!r}: use another output folder")
    return state
