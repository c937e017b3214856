"""Seeded train/validation/test splits by trajectory, saved as JSON beside the data.

Frames of one trajectory (one molecule, one slab+adsorbate system) always land in the same
split, so no structure is seen in training and tested on. The JSON stores trajectory
*identifiers*, which survive re-sharding; trajectories added to the data after the split was
made belong to no split until a new split is made.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Identifiers of the trajectories in each split."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    fractions: tuple[float, float, float]

    def indices(self, dataset) -> dict[str, np.ndarray]:
        """Frame indices of ``dataset`` (an :class:`H5Dataset`) per split name."""
        return {name: dataset.frames_of(getattr(self, name)) for name in SPLIT_NAMES}

    def save(self, path: str | os.PathLike) -> None:
        data = {"format": "tdn-calc-split", "seed": self.seed, "fractions": list(self.fractions),
                "grouping": "trajectory identifier",
                **{name: list(getattr(self, name)) for name in SPLIT_NAMES}}
        with atomic_write(path, "w") as fh:
            json.dump(data, fh, indent=1)


def split_path(data_path: str | os.PathLike, seed: int) -> Path:
    """Where the split of ``data_path`` is kept: ``<dir>/split-seed<seed>.json`` for a shard
    directory, ``<file stem>.split-seed<seed>.json`` next to a single file."""
    p = Path(data_path)
    if p.is_dir():
        return p / f"split-seed{seed}.json"
    return p.with_name(f"{p.stem}.split-seed{seed}.json")


def make_split(identifiers, fractions=(0.8, 0.1, 0.1), seed: int = 42) -> Split:
    """Shuffle the unique ``identifiers`` (sorted first, so input order does not matter) with
    ``seed`` and cut them by ``fractions`` (train, val, test; non-negative, summing to 1).

    ``identifiers`` may also be an :class:`H5Dataset` (its trajectory identifiers are used).
    """
    fr = tuple(float(x) for x in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"fractions must be 3 non-negative numbers summing to 1; got {fractions}")
    idents = sorted(set(getattr(identifiers, "identifiers", identifiers)))
    if not idents:
        raise InputError("cannot split an empty set of trajectories")
    order = np.random.default_rng(seed).permutation(len(idents))
    n_train = round(fr[0] * len(idents))
    n_val = min(round(fr[1] * len(idents)), len(idents) - n_train)
    shuffled = [idents[i] for i in order]
    return Split(
        train=tuple(shuffled[:n_train]),
        val=tuple(shuffled[n_train:n_train + n_val]),
        test=tuple(shuffled[n_train + n_val:]),
        seed=int(seed),
        fractions=fr,  # type: ignore[arg-type]
    )


def extend_split(split: Split, identifiers) -> Split:
    """``split`` with the trajectories of ``identifiers`` it does not know yet cut by its own
    fractions and seed and appended to each part; the known ones keep their split.

    For data sets that grew after a model was trained: a model fine-tuned on the extended
    split has never trained on a validation or test trajectory. ``identifiers`` may also be
    an :class:`H5Dataset`.
    """
    known = set(split.train) | set(split.val) | set(split.test)
    new = [i for i in sorted(set(getattr(identifiers, "identifiers", identifiers)))
           if i not in known]
    if not new:
        return split
    added = make_split(new, split.fractions, split.seed)
    return Split(train=split.train + added.train, val=split.val + added.val,
                 test=split.test + added.test, seed=split.seed, fractions=split.fractions)


def load_split(path: str | os.PathLike) -> Split:
    """Read a split written by :meth:`Split.save`."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read split file {path}: {exc}") from exc
    if data.get("format") != "tdn-calc-split":
        raise InputError(f"{path} is not a tdn-calc split file")
    parts = {name: tuple(data[name]) for name in SPLIT_NAMES}
    seen: set[str] = set()
    for name in SPLIT_NAMES:
        overlap = seen & set(parts[name])
        if overlap:
            raise InputError(f"{path}: {len(overlap)} trajectories are in more than one split")
        seen |= set(parts[name])
    return Split(**parts, seed=int(data["seed"]), fractions=tuple(data["fractions"]))


def load_or_make_split(dataset, data_path: str | os.PathLike, fractions=(0.8, 0.1, 0.1),
                       seed: int = 42) -> Split:
    """Load ``split_path(data_path, seed)`` when it exists (checking its fractions), else make
    the split from ``dataset`` and save it there."""
    path = split_path(data_path, seed)
    if path.exists():
        split = load_split(path)
        if not np.allclose(split.fractions, fractions):
            raise InputError(
                f"{path} was made with fractions {split.fractions}, not {tuple(fractions)}; "
                "delete it or pass the same fractions"
            )
        return split
    split = make_split(dataset, fractions, seed)
    split.save(path)
    return split
