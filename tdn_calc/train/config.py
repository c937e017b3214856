"""Training configuration: a YAML file -> model settings + :class:`TrainConfig`.

File layout (every key except ``data.path`` and ``output_dir`` is optional)::

    output_dir: runs/small          # checkpoints, logs, metrics.csv, best.safetensors
    seed: 0
    data:
      path: data/molecules          # an .h5 file or a directory of shards
      split_fractions: [0.8, 0.1, 0.1]
      split_seed: 42
      split_file: null              # default: <output_dir>/split.json (made when absent)
      split_grouping: trajectory    # or "system": all replicas (/rN) of a system in one part
      split_train_only: null        # regex: matching trajectories always train (references)
      batch_size: 8                 # structures per step and per process
      num_workers: 0
      val_max_frames: null          # validate on a fixed random subset of this size
      max_force: null               # drop frames with a force norm above this (eV/Å)
    model:                          # TDNConfig fields; elements: "auto" or symbols/numbers
      elements: auto
      lmax: 1
      channels: 64
    training:
      epochs: 10                    # or max_steps (wins when both are given)
      ...                           # see TrainConfig for every setting and its default

Relative paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ase.data import atomic_numbers as _SYMBOL_TO_Z

from ..errors import ConfigError
from ..nn.config import TDNConfig

ENERGY_SCALE_MODES = ("forces_rms", "energy_std")
BEST_METRICS = ("loss", "energy_mae", "forces_mae")


@dataclass
class TrainConfig:
    """Everything but the model architecture.

    Attributes:
        data_path: frame file or shard directory, or a list of them trained on together
            (their trajectory identifiers must differ; a split then needs ``split_file``
            or is made in ``output_dir``).
        output_dir: where checkpoints, logs, metrics and exported models go.
        seed: seeds model initialisation and the data order.
        split_fractions: (train, val, test) fractions of trajectories.
        split_seed: seed of the split.
        split_file: JSON split to use (made there when absent; default
            ``<output_dir>/split.json``).
        split_grouping / split_train_only: how a new split is made
            (:func:`tdn_calc.data.split.make_split`); an existing one must match.
        batch_size: structures per optimiser step and per process.
        num_workers: DataLoader worker processes.
        val_max_frames: validate on a fixed seeded subset of at most this many frames.
        max_force: leave out frames with any force norm above this, eV/Å, from training,
            validation and the final test (``None``: keep all).
        epochs / max_steps: length of training; ``max_steps`` wins when set.
        lr: peak learning rate; warmup_steps of linear warm-up from 0, then cosine decay to
            ``lr * min_lr_ratio`` at the last step.
        weight_decay: AdamW decoupled weight decay (applied to weight matrices only).
        ema_decay: decay of the exponential moving average of the weights (0 disables).
        grad_clip: max gradient norm (``None``: no clipping).
        energy_weight / forces_weight / stress_weight: loss weights of MSE(energy per atom,
            eV/atom), MSE(force components, eV/Å) and MSE(stress, eV/Å^3, frames with stress).
        energy_scale: ``"forces_rms"`` (RMS force component of the training set),
            ``"energy_std"`` (std of the per-atom residual energy) or a number in eV.
        stats_max_frames: frames sampled for avg_num_neighbors and the force RMS.
        val_every_steps: validate every N steps as well as at the end of each epoch.
        log_every_steps: a log line and a metrics row every N steps.
        max_time: stop cleanly (saving a checkpoint) before this many seconds of run time.
        checkpoint_minutes: save the training state every N minutes (and at the end, on
            SIGTERM/SIGINT and before ``max_time``).
        best_metric: validation metric picking the exported model.
        test_at_end: evaluate the best model on the test split when training finishes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        num_threads: torch CPU threads (``None``: torch's default).
        oversample: ``{regex: k}``: training frames of trajectories whose identifier matches
            ``regex`` (``re.search``) are seen ``k`` times per epoch (k >= 1 integer), e.g.
            clean slabs and gas molecules, which pin the reference of adsorption energies.
        oversample_kinds: ``{frame kind: k}``: training frames of that kind (``relax``,
            ``rattled``, ``displaced``, ... as :class:`~tdn_calc.data.frames.FrameKind`) are
            seen ``k`` times per epoch; a frame matched by both takes the larger factor.
        init_from: start from the weights (and model config) of this ``.safetensors`` model
            instead of a fresh initialisation: fine-tuning with a new schedule.
    """

    data_path: str | list[str]
    output_dir: str
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 42
    split_file: str | None = None
    split_grouping: str = "trajectory"
    split_train_only: str | None = None
    batch_size: int = 8
    num_workers: int = 0
    val_max_frames: int | None = None
    max_force: float | None = None
    epochs: int = 10
    max_steps: int | None = None
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup_steps: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.99
    grad_clip: float | None = 10.0
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0
    energy_scale: str | float = "forces_rms"
    stats_max_frames: int = 1000
    val_every_steps: int | None = None
    log_every_steps: int = 20
    max_time: float | None = None
    checkpoint_minutes: float = 10.0
    best_metric: str = "loss"
    test_at_end: bool = True
    device: str = "auto"
    num_threads: int | None = None
    oversample: dict[str, int] = field(default_factory=dict)
    oversample_kinds: dict[str, int] = field(default_factory=dict)
    init_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        fr = tuple(float(x) for x in self.split_fractions)
        check(len(fr) == 3 and min(fr) >= 0 and abs(sum(fr) - 1) < 1e-6 and fr[0] > 0,
              f"data.split_fractions must be 3 non-negative numbers summing to 1 with a "
              f"non-zero train fraction, got {list(self.split_fractions)}")
        self.split_fractions = fr  # type: ignore[assignment]
        check(self.split_grouping in ("trajectory", "system"),
              f"data.split_grouping must be 'trajectory' or 'system', got {self.split_grouping!r}")
        check(self.batch_size >= 1, f"data.batch_size must be >= 1, got {self.batch_size}")
        check(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        check(self.val_max_frames is None or self.val_max_frames >= 1,
              f"data.val_max_frames must be >= 1 or null, got {self.val_max_frames}")
        check(self.max_force is None or self.max_force > 0,
              f"data.max_force must be > 0 eV/Å or null, got {self.max_force}")
        check(self.epochs >= 1, f"training.epochs must be >= 1, got {self.epochs}")
        check(self.max_steps is None or self.max_steps >= 1,
              f"training.max_steps must be >= 1 or null, got {self.max_steps}")
        check(math.isfinite(self.lr) and self.lr > 0, f"training.lr must be > 0, got {self.lr}")
        check(0 <= self.min_lr_ratio <= 1,
              f"training.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(self.warmup_steps >= 0,
              f"training.warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.weight_decay >= 0,
              f"training.weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.ema_decay < 1,
              f"training.ema_decay must be in [0, 1), got {self.ema_decay}")
        check(self.grad_clip is None or self.grad_clip > 0,
              f"training.grad_clip must be > 0 or null, got {self.grad_clip}")
        weights = (self.energy_weight, self.forces_weight, self.stress_weight)
        check(min(weights) >= 0 and max(weights) > 0,
              f"training loss weights must be >= 0 and not all zero, got energy_weight="
              f"{self.energy_weight}, forces_weight={self.forces_weight}, "
              f"stress_weight={self.stress_weight}")
        if isinstance(self.energy_scale, str):
            check(self.energy_scale in ENERGY_SCALE_MODES,
                  f"training.energy_scale must be one of {ENERGY_SCALE_MODES} or a number > 0, "
                  f"got {self.energy_scale!r}")
        else:
            self.energy_scale = float(self.energy_scale)
            check(self.energy_scale > 0,
                  f"training.energy_scale must be > 0 eV, got {self.energy_scale}")
        check(self.stats_max_frames >= 1,
              f"training.stats_max_frames must be >= 1, got {self.stats_max_frames}")
        check(self.val_every_steps is None or self.val_every_steps >= 1,
              f"training.val_every_steps must be >= 1 or null, got {self.val_every_steps}")
        check(self.log_every_steps >= 1,
              f"training.log_every_steps must be >= 1, got {self.log_every_steps}")
        check(self.max_time is None or self.max_time > 0,
              f"training.max_time must be > 0 seconds or null, got {self.max_time}")
        check(self.checkpoint_minutes > 0,
              f"training.checkpoint_minutes must be > 0, got {self.checkpoint_minutes}")
        check(self.best_metric in BEST_METRICS,
              f"training.best_metric must be one of {BEST_METRICS}, got {self.best_metric!r}")
        check(self.num_threads is None or self.num_threads >= 1,
              f"training.num_threads must be >= 1 or null, got {self.num_threads}")
        if not isinstance(self.oversample, dict):
            problems.append(f"data.oversample must map regex -> integer, got {self.oversample!r}")
        else:
            for pattern, k in self.oversample.items():
                try:
                    re.compile(pattern)
                except re.error as exc:
                    problems.append(f"data.oversample: {pattern!r} is not a regex ({exc})")
                check(isinstance(k, int) and k >= 1,
                      f"data.oversample[{pattern!r}] must be an integer >= 1, got {k!r}")
        problems += _oversample_kind_problems(self.oversample_kinds)
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    @property
    def split_path(self) -> Path:
        return Path(self.split_file) if self.split_file else Path(self.output_dir) / "split.json"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["split_fractions"] = list(self.split_fractions)
        return out


def _oversample_kind_problems(kinds: Any) -> list[str]:
    """What is wrong with ``data.oversample_kinds`` (empty when nothing)."""
    from ..data.frames import FrameKind

    if not isinstance(kinds, dict):
        return [f"data.oversample_kinds must map frame kind -> integer, got {kinds!r}"]
    names = [k.name.lower() for k in FrameKind]
    problems = [f"data.oversample_kinds: unknown frame kind {name!r} (one of {names})"
                for name in kinds if str(name).lower() not in names]
    problems += [f"data.oversample_kinds[{name!r}] must be an integer >= 1, got {k!r}"
                 for name, k in kinds.items() if not (isinstance(k, int) and k >= 1)]
    return problems


# YAML section -> TrainConfig fields it may hold (the model section is separate)
_SECTIONS = {
    "data": ("path", "split_fractions", "split_seed", "split_file", "split_grouping",
             "split_train_only", "batch_size", "num_workers", "val_max_frames", "max_force",
             "oversample", "oversample_kinds"),
    "training": tuple(f.name for f in fields(TrainConfig)
                      if f.name not in ("data_path", "output_dir", "seed", "split_fractions",
                                        "split_seed", "split_file", "split_grouping",
                                        "split_train_only", "batch_size",
                                        "num_workers", "val_max_frames", "max_force",
                                        "oversample", "oversample_kinds", "extra")),
}
_TOP_LEVEL = ("output_dir", "seed", "data", "model", "training")


@dataclass
class RunConfig:
    """A parsed config file: ``model`` (TDNConfig keyword arguments, ``elements`` possibly
    ``"auto"``) and ``train`` settings."""

    model: dict[str, Any]
    train: TrainConfig


def parse_elements(value: Any) -> list[int] | str:
    """``"auto"``, or a list of symbols / atomic numbers -> sorted atomic numbers."""
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        return "auto"
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"model.elements must be 'auto' or a list of symbols, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, int) and 1 <= item <= 118:
            out.append(item)
        elif isinstance(item, str) and item in _SYMBOL_TO_Z and _SYMBOL_TO_Z[item] > 0:
            out.append(_SYMBOL_TO_Z[item])
        else:
            raise ConfigError(f"model.elements: {item!r} is not an element symbol or atomic "
                              "number 1..118")
    return sorted(set(out))


def config_from_dict(raw: dict[str, Any], base_dir: str | os.PathLike = ".",
                     overrides: dict[str, Any] | None = None) -> RunConfig:
    """Validate a config mapping (the parsed YAML); relative paths are taken from ``base_dir``.

    ``overrides`` (``TrainConfig`` field -> value, e.g. from command-line options) win over
    the file.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a training config must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown top-level config keys {unknown}; allowed: {list(_TOP_LEVEL)}")
    kwargs: dict[str, Any] = {}
    for section, allowed in _SECTIONS.items():
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        bad = sorted(set(values) - set(allowed))
        if bad:
            raise ConfigError(f"unknown keys {bad} in section {section!r}; allowed: "
                              f"{sorted(allowed)}")
        for key, value in values.items():
            kwargs["data_path" if (section, key) == ("data", "path") else key] = value
    for key in ("output_dir", "seed"):
        if key in raw:
            kwargs[key] = raw[key]
    kwargs.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for required, where in (("data_path", "data.path"), ("output_dir", "output_dir")):
        if kwargs.get(required) in (None, ""):
            raise ConfigError(f"the config needs {where}")
    base = Path(base_dir)
    for key in ("data_path", "output_dir", "split_file", "init_from"):
        value = kwargs.get(key)
        if isinstance(value, (list, tuple)) and key == "data_path":  # several data sets
            if not value or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"data.path must be a path or a list of paths, got {value!r}")
            kwargs[key] = [str((base / Path(v).expanduser()).resolve()) for v in value]
        elif value:
            kwargs[key] = str((base / Path(value).expanduser()).resolve())
    try:
        train = TrainConfig(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid training config: {exc}") from exc
    model = dict(raw.get("model") or {})
    model["elements"] = parse_elements(model.get("elements", "auto"))
    known = {f.name for f in fields(TDNConfig)}
    bad = sorted(set(model) - known)
    if bad:
        raise ConfigError(f"unknown model keys {bad}; TDNConfig fields: {sorted(known)}")
    if model["elements"] != "auto":
        TDNConfig(**model)  # validate early, before any data is read
    return RunConfig(model=model, train=train)


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a YAML training config (see the module docstring)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(path)!r} is not valid YAML: {exc}") from exc
    return config_from_dict(raw or {}, base_dir=path.parent, overrides=overrides)
