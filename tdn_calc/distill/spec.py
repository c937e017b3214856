"""The distillation spec: a campaign spec (surfaces x adsorbates x placements,
:mod:`tdn_calc.campaigns.spec`) plus a ``distill:`` section (docs/campaigns.md)::

    distill:
      name: cu-pt-o-h           # the registered name of the result (default <name>-distilled)
      init_from: scratch        # a registered model, a .safetensors, or scratch
      model: {channels: 32}     # scratch only: TDNConfig fields of the new model
      seed: {placements: 8, rattle: 2, strain: 1, rattle_std: 0.05, strain_max: 0.02,
             fmax: 0.05, steps: 200}
      loop: {rounds: 5, frames_per_round: 32, teacher_calls: 2000, cpu_hours: 4.0,
             train_steps: 500, teacher_steps: 0}
      train: {lr: 0.001}        # extra trainer settings (training section of a tdn train config)
      holdout: 0.25             # fraction of (surface, adsorbate) pairs kept for the check
      agreement: {energy: 0.05, fmax: 0.10}

Energies in eV, forces in eV/Å, lengths in Å. Every error is a
:class:`~tdn_calc.campaigns.spec.SpecError` naming the key (``distill.loop.rounds``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..campaigns.spec import (
    CampaignSpec,
    SpecError,
    _float,
    _int,
    _mapping,
    _no_unknown,
    _text,
    model_reference,
    parse_spec,
    read_spec_file,
)

SCRATCH = "scratch"
_DISTILL_KEYS = {"name", "init_from", "model", "seed", "loop", "train", "holdout", "agreement"}
#: the least value of each integer setting of :class:`SeedSpec` and :class:`LoopSpec` (their
#: float settings must be positive)
_MINIMUM = {"placements": 1, "rattle": 0, "strain": 0, "steps": 0, "rounds": 1,
            "frames_per_round": 1, "teacher_calls": 1, "train_steps": 1, "teacher_steps": 0}


@dataclass(frozen=True)
class SeedSpec:
    """Seed data: the teacher relaxes ``placements`` training placements (``fmax`` eV/Å,
    at most ``steps``); each minimum adds ``rattle`` copies with Gaussian noise of
    ``rattle_std`` Å and ``strain`` copies with the cell scaled in-plane by up to
    ``strain_max`` (fraction)."""

    placements: int = 8
    rattle: int = 2
    strain: int = 1
    rattle_std: float = 0.05
    strain_max: float = 0.02
    fmax: float = 0.05
    steps: int = 200


@dataclass(frozen=True)
class LoopSpec:
    """The active-learning loop: at most ``rounds`` rounds (the seed round counts), at most
    ``frames_per_round`` frames added per round, budgets of ``teacher_calls`` (single
    points) and ``cpu_hours`` (this process's CPU time), ``train_steps`` optimiser steps per
    fine-tune, and ``teacher_steps`` teacher relaxation steps from each bad student minimum
    (0: single points only)."""

    rounds: int = 5
    frames_per_round: int = 32
    teacher_calls: int = 2000
    cpu_hours: float = 4.0
    train_steps: int = 500
    teacher_steps: int = 0


#: the loop's budgets: when it stops, not what a round does (left out of the spec's hash)
BUDGET_KEYS = ("rounds", "teacher_calls", "cpu_hours")


@dataclass(frozen=True)
class AgreementSpec:
    """The stopping target on the held-out placements: median |E_student - E_teacher| at
    the student's minima <= ``energy`` eV and median teacher fmax there <= ``fmax`` eV/Å."""

    energy: float = 0.05
    fmax: float = 0.10


@dataclass(frozen=True)
class DistillSpec:
    """A validated distillation spec: the ``campaign`` (placements, relaxation settings),
    the ``teacher`` name and the ``distill`` settings."""

    campaign: CampaignSpec
    teacher: str
    name: str
    init_from: str = SCRATCH
    model: dict[str, Any] = field(default_factory=dict)
    seed: SeedSpec = SeedSpec()
    loop: LoopSpec = LoopSpec()
    train: dict[str, Any] = field(default_factory=dict)
    holdout: float = 0.25
    agreement: AgreementSpec = AgreementSpec()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the campaign as its own dict)."""
        out = asdict(self)
        out["campaign"] = self.campaign.to_dict()
        return out

    def hash(self) -> str:
        """First 16 hex digits of the SHA-256 of everything that changes what a round does
        (the campaign's own hash stands for the campaign). The budgets (``loop.rounds``,
        ``loop.teacher_calls``, ``loop.cpu_hours``) only decide when the loop stops, so they
        are left out: raising one continues a finished run instead of starting over."""
        data = self.to_dict()
        data["campaign"] = self.campaign.hash()
        for key in BUDGET_KEYS:
            data["loop"].pop(key)
        text = json.dumps(data, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_distill_spec(path: str | os.PathLike, teacher: str | None = None) -> DistillSpec:
    """Read and validate the YAML spec ``path``; ``teacher`` (e.g. ``--teacher``) wins over
    the spec's ``teacher.name``."""
    path = Path(path)
    return parse_distill_spec(read_spec_file(path, "distillation spec"),
                              base_dir=str(path.parent), teacher=teacher)


def parse_distill_spec(data: Any, base_dir: str = ".", teacher: str | None = None
                       ) -> DistillSpec:
    """Validate a parsed spec mapping (campaign keys plus ``distill:``)."""
    from ..campaigns.engine import is_teacher

    data = dict(_mapping(data, "spec"))
    section = _mapping(data.pop("distill", None) or {}, "distill")
    _no_unknown(section, _DISTILL_KEYS, "distill.")
    given = data.get("teacher")
    teacher = teacher or (given if isinstance(given, str) else
                          (given or {}).get("name") if isinstance(given, dict) else None)
    if not teacher:
        raise SpecError("teacher: required (teacher.name in the spec or --teacher NAME)")
    if not is_teacher(teacher):
        raise SpecError(f"teacher: {teacher!r} is not a registered teacher or "
                        "package.module:factory (tdn teachers list)")
    data["teacher"] = {"name": teacher}
    data.setdefault("model", teacher)  # the campaign's model is not used by distillation
    campaign = parse_spec(data, base_dir=base_dir)
    init_from = _init_from(section.get("init_from", SCRATCH), base_dir)
    model = dict(_mapping(section.get("model") or {}, "distill.model"))
    if model and init_from != SCRATCH:
        raise SpecError("distill.model: only with init_from: scratch (a fine-tune keeps the "
                        "architecture of its start model)")
    _check_model(model)
    train = dict(_mapping(section.get("train") or {}, "distill.train"))
    _check_train(train)
    holdout = _float(section.get("holdout", 0.25), "distill.holdout")
    if not 0 < holdout < 1:
        raise SpecError(f"distill.holdout: must be in (0, 1), got {holdout}")
    pairs = len(campaign.surfaces) * len(campaign.adsorbates)
    if pairs < 2:
        raise SpecError("distill.holdout: the held-out check keeps whole (surface, adsorbate) "
                        "pairs apart and needs at least two; the spec has one (add a surface "
                        "or an adsorbate)")
    return DistillSpec(
        campaign=campaign, teacher=teacher,
        name=_text(section.get("name", f"{campaign.name}-distilled"), "distill.name"),
        init_from=init_from, model=model, train=train, holdout=holdout,
        seed=_settings(SeedSpec, section, "seed"), loop=_settings(LoopSpec, section, "loop"),
        agreement=_settings(AgreementSpec, section, "agreement"))


def _init_from(value: Any, base_dir: str) -> str:
    """``scratch``, a checkpoint file (relative to the spec's folder too) or a registered
    model name."""
    return model_reference(value, base_dir, "distill.init_from", lambda n: n == SCRATCH,
                           "'scratch'")


def _check_model(model: dict[str, Any]) -> None:
    from ..nn.config import TDNConfig

    known = {f.name for f in fields(TDNConfig)} - {"elements", "atomic_energies"}
    _no_unknown(model, known, "distill.model.")


def _check_train(train: dict[str, Any]) -> None:
    """The trainer's own validation of the extra settings (``distill.train``)."""
    from ..errors import ConfigError
    from ..train.config import config_from_dict

    data_keys = {"batch_size", "max_force", "oversample", "oversample_kinds"}
    raw = {"output_dir": ".", "data": {"path": ".", **{k: v for k, v in train.items()
                                                       if k in data_keys}},
           "training": {k: v for k, v in train.items() if k not in data_keys}}
    if "max_steps" in train or "init_from" in train:
        raise SpecError("distill.train: max_steps and init_from are set by the loop "
                        "(distill.loop.train_steps, distill.init_from)")
    try:
        config_from_dict(raw)
    except ConfigError as exc:
        raise SpecError(f"distill.train: {exc}") from exc


def _settings(cls: type, section: dict[str, Any], key: str) -> Any:
    """``cls`` (:class:`SeedSpec`, :class:`LoopSpec` or :class:`AgreementSpec`) from the
    mapping ``distill.<key>``: unknown keys refused, absent ones at the dataclass' defaults,
    integers at least :data:`_MINIMUM`, numbers positive."""
    where = f"distill.{key}"
    data = _mapping(section.get(key) or {}, where)
    _no_unknown(data, {f.name for f in fields(cls)}, f"{where}.")
    values = {}
    for f in fields(cls):
        value, name = data.get(f.name, f.default), f"{where}.{f.name}"
        values[f.name] = (_int(value, name, _MINIMUM[f.name]) if f.type == "int"
                          else _float(value, name, positive=True))  # fmt: skip
    return cls(**values)
