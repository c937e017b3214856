"""Set-up steps of a fresh training run: the frames of each split and the model config
fitted to the training split."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.dataset import H5Dataset
from ..data.split import Split, load_split, make_split
from ..errors import ConfigError, InputError
from ..nn.config import TDNConfig
from .config import TrainConfig
from .distributed import DistInfo, barrier
from .stats import composition_of, compute_stats, dataset_elements, frame_max_force

log = logging.getLogger("tdn_calc.train")


@dataclass(frozen=True)
class Frames:
    """Frame indices ``[k]`` int64 of each split (``val`` possibly a seeded subset) and the
    model's elements (atomic numbers)."""

    split: Split
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    elements: list[int]


def load_or_make_split(dataset: H5Dataset, cfg: TrainConfig, dist: DistInfo) -> Split:
    """``cfg.split_path`` (made by rank 0 when absent), checked against the fractions and,
    when ``cfg`` sets them, the grouping and train-only pattern."""
    path = cfg.split_path
    if dist.is_main and not path.exists():
        split = make_split(dataset, cfg.split_fractions, cfg.split_seed,
                           grouping=cfg.split_grouping, train_only=cfg.split_train_only)
        split.save(path)
        log.info("made a new split %s (train/val/test trajectories %d/%d/%d)", path,
                 len(split.train), len(split.val), len(split.test))
    # every rank, unconditionally: a rank that looked for the file after rank 0 had written
    # it once skipped this barrier while rank 0 waited in it (the 2-rank DDP test's hang)
    barrier(dist)
    split = load_split(path)
    if not np.allclose(split.fractions, cfg.split_fractions):
        raise ConfigError(f"{path} was made with fractions {split.fractions}, not "
                          f"{tuple(cfg.split_fractions)}; delete it or use those")
    wanted = (cfg.split_grouping, cfg.split_train_only)
    if wanted != ("trajectory", None) and (split.grouping, split.train_only) != wanted:
        raise ConfigError(f"{path} was made with split_grouping={split.grouping!r}, "
                          f"split_train_only={split.train_only!r}, not {cfg.split_grouping!r}, "
                          f"{cfg.split_train_only!r}; delete it or use those")
    return split


def select_frames(dataset: H5Dataset, cfg: TrainConfig, dist: DistInfo,
                  elements: list[int] | str) -> Frames:
    """Frames of the split used for training, validation and the final test.

    Leaves out frames above ``cfg.max_force`` and frames with elements outside the model's
    ``elements`` (``"auto"``: the elements of the training frames, so validation and test
    never score an element the model has not seen), then cuts the validation set to
    ``cfg.val_max_frames`` (a subset seeded by ``cfg.seed``). Counts are logged.
    """
    split = load_or_make_split(dataset, cfg, dist)
    parts = split.indices(dataset)
    if cfg.max_force is not None:
        keep = frame_max_force(dataset) <= cfg.max_force
        dropped = {k: int((~keep[v]).sum()) for k, v in parts.items()}
        parts = {k: v[keep[v]] for k, v in parts.items()}
        log.info("max_force %.3g eV/Å leaves out frames: %s", cfg.max_force, dropped)
    present = dataset_elements(dataset)
    composition = dataset.composition(present)  # [n_frames, len(present)]
    if elements == "auto":
        in_train = composition[parts["train"]].sum(axis=0) > 0
        elements = [z for z, used in zip(present, in_train, strict=True) if used]
    elements = sorted(int(z) for z in elements)
    outside = [k for k, z in enumerate(present) if z not in set(elements)]
    masks = {k: composition[v][:, outside].sum(axis=1) == 0 for k, v in parts.items()}
    dropped = {k: int((~m).sum()) for k, m in masks.items()}
    if any(dropped.values()):
        log.warning("frames with elements outside the model's %s are left out: %s",
                    elements, dropped)
    parts = {k: v[masks[k]] for k, v in parts.items()}
    if parts["train"].size == 0:
        raise InputError(f"the training split of {cfg.data_path} has no frames")
    val = parts["val"]
    if cfg.val_max_frames and val.size > cfg.val_max_frames:
        rng = np.random.default_rng(cfg.seed)
        val = np.sort(rng.choice(val, cfg.val_max_frames, replace=False))
    return Frames(split=split, train=parts["train"], val=val, test=parts["test"],
                  elements=elements)


def oversampled(dataset: H5Dataset, train: np.ndarray, patterns: dict[str, int],
                kinds: dict[str, int] | None = None) -> np.ndarray:
    """``train`` frame indices with those of trajectories whose identifier matches a regex of
    ``patterns``, and those of a frame kind named in ``kinds``, repeated ``k`` times (the
    largest ``k`` that applies to the frame)."""
    from ..data.frames import FrameKind

    if not patterns and not kinds:
        return train
    factor = np.ones(len(dataset.identifiers), dtype=np.int64)
    for pattern, k in patterns.items():
        rx = re.compile(pattern)
        hits = np.array([bool(rx.search(name)) for name in dataset.identifiers], dtype=bool)
        factor[hits] = np.maximum(factor[hits], int(k))
        log.info("oversample %r x%d: %d trajectories", pattern, k, int(hits.sum()))
    per_frame = factor[dataset.traj[train]]
    for name, k in (kinds or {}).items():
        hits = dataset.frame_kind[train] == FrameKind[name.upper()]
        per_frame[hits] = np.maximum(per_frame[hits], int(k))
        log.info("oversample %s frames x%d: %d training frames", name, k, int(hits.sum()))
    return np.repeat(train, per_frame)


def dataset_elements_of(dataset: H5Dataset, indices: np.ndarray, elements) -> list[int]:
    """The atomic numbers among ``elements`` that occur in the frames ``indices``."""
    counts = composition_of(dataset, elements)[indices].sum(axis=0)
    return [int(z) for z, n in zip(elements, counts, strict=True) if n]


def fitted_model_config(model: dict[str, Any], dataset: H5Dataset, train: np.ndarray,
                        cfg: TrainConfig) -> TDNConfig:
    """The model config (``model["elements"]`` resolved to atomic numbers) with reference
    energies, energy scale and ``avg_num_neighbors`` measured on the training frames
    ``train``. Fields the config file sets explicitly are kept."""
    params = dict(model)
    trained = set(dataset_elements_of(dataset, train, params["elements"]))
    untrained = sorted(set(params["elements"]) - trained)
    if untrained:
        log.warning("model.elements %s are not in any training frame: their reference "
                    "energies are 0 and their predictions untrained", untrained)
    stats = compute_stats(dataset, train, params["elements"],
                          params.get("cutoff", TDNConfig.cutoff),
                          max_frames=cfg.stats_max_frames, seed=cfg.seed,
                          max_neighbors=params.get("max_neighbors"))
    params.setdefault("atomic_energies", stats.atomic_energies)
    params.setdefault("avg_num_neighbors", stats.avg_num_neighbors)
    params.setdefault("energy_scale", stats.energy_scale(cfg.energy_scale))
    params.setdefault("energy_shift", 0.0)
    params["extra"] = {**params.get("extra", {}), "training_stats": {
        "forces_rms_eV_A": stats.forces_rms,
        "energy_residual_std_eV_atom": stats.energy_residual_std,
        "energy_scale_mode": cfg.energy_scale, "n_train_frames": stats.n_frames,
        "n_stats_frames": stats.n_sampled}}
    return TDNConfig(**params)
