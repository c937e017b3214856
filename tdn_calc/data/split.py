"""Seeded train/validation/test splits by trajectory, saved as JSON beside the data.

Frames of one trajectory (one molecule, one slab+adsorbate system) always land in the same
split, so no structure is seen in training and tested on. The JSON stores trajectory
*identifiers*, which survive re-sharding; trajectories added to the data after the split was
made belong to no split until a new split is made.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write

SPLIT_NAMES = ("train", "val", "test")
GROUPINGS = ("trajectory", "system")
_REPLICA_TAG = re.compile(r"/r\d+(:[A-Za-z_]+)?$")


def system_of(identifier: str) -> str:
    """The system a trajectory belongs to: its identifier without the trailing replica tag
    and variant (``"Pt111/CO/fcc/r3"`` and ``"Pt111/CO/fcc/r3:displaced"`` ->
    ``"Pt111/CO/fcc"``); identifiers without a replica tag are their own."""
    return _REPLICA_TAG.sub("", identifier)


@dataclass(frozen=True)
class Split:
    """Identifiers of the trajectories in each split."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    fractions: tuple[float, float, float]
    grouping: str = "trajectory"
    train_only: str | None = None

    def indices(self, dataset) -> dict[str, np.ndarray]:
        """Frame indices of ``dataset`` (an :class:`H5Dataset`) per split name."""
        return {name: dataset.frames_of(getattr(self, name)) for name in SPLIT_NAMES}

    def save(self, path: str | os.PathLike) -> None:
        data = {"format": "tdn-calc-split", "seed": self.seed, "fractions": list(self.fractions),
                "grouping": self.grouping, "train_only": self.train_only,
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


def make_split(identifiers, fractions=(0.8, 0.1, 0.1), seed: int = 42, *,
               grouping: str = "trajectory", train_only: str | None = None) -> Split:
    """Shuffle the unique ``identifiers`` (sorted first, so input order does not matter) with
    ``seed`` and cut them by ``fractions`` (train, val, test; non-negative, summing to 1).

    ``grouping="system"`` keeps every replica of a system (identifiers differing only in their
    ``/rN`` tag) in one part, so no test system was seen in training from another start.
    Identifiers matching the regular expression ``train_only`` (e.g. the clean slabs and gas
    molecules that adsorption energies are referenced to) all go to training and are not
    counted in the fractions. ``identifiers`` may also be an :class:`H5Dataset`.
    """
    fr = tuple(float(x) for x in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"fractions must be 3 non-negative numbers summing to 1; got {fractions}")
    if grouping not in GROUPINGS:
        raise InputError(f"grouping must be one of {GROUPINGS}; got {grouping!r}")
    idents = sorted(set(getattr(identifiers, "identifiers", identifiers)))
    if not idents:
        raise InputError("cannot split an empty set of trajectories")
    try:
        pinned_re = re.compile(train_only) if train_only else None
    except re.error as exc:
        raise InputError(f"train_only is not a valid regular expression: {exc}") from exc
    pinned = [i for i in idents if pinned_re is not None and pinned_re.search(i)]
    pinned_set = set(pinned)
    key = system_of if grouping == "system" else (lambda ident: ident)
    groups: dict[str, list[str]] = {}
    for ident in idents:
        if ident not in pinned_set:
            groups.setdefault(key(ident), []).append(ident)
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    n_train = round(fr[0] * len(names))
    n_val = min(round(fr[1] * len(names)), len(names) - n_train)
    shuffled = [names[i] for i in order]

    def members(part: list[str]) -> tuple[str, ...]:
        return tuple(ident for name in part for ident in groups[name])

    return Split(
        train=members(shuffled[:n_train]) + tuple(pinned),
        val=members(shuffled[n_train:n_train + n_val]),
        test=members(shuffled[n_train + n_val:]),
        seed=int(seed),
        fractions=fr,  # type: ignore[arg-type]
        grouping=grouping,
        train_only=train_only,
    )


def extend_split(split: Split, identifiers) -> Split:
    """``split`` with the trajectories of ``identifiers`` it does not know yet cut by its own
    fractions and seed and appended to each part; the known ones keep their split.

    For data sets that grew after a model was trained: a model fine-tuned on the extended
    split has never trained on a validation or test trajectory. With ``grouping="system"`` a
    new replica of a known system joins that system's part. ``identifiers`` may also be an
    :class:`H5Dataset`.
    """
    known = set(split.train) | set(split.val) | set(split.test)
    new = [i for i in sorted(set(getattr(identifiers, "identifiers", identifiers)))
           if i not in known]
    if not new:
        return split
    parts = {name: list(getattr(split, name)) for name in SPLIT_NAMES}
    fresh = new
    if split.grouping == "system":  # a new replica of a known system joins that system's part
        part_of = {system_of(i): name for name in SPLIT_NAMES for i in getattr(split, name)}
        fresh = [i for i in new if system_of(i) not in part_of]
        for ident in new:
            if system_of(ident) in part_of:
                parts[part_of[system_of(ident)]].append(ident)
    if fresh:
        added = make_split(fresh, split.fractions, split.seed, grouping=split.grouping,
                           train_only=split.train_only)
        for name in SPLIT_NAMES:
            parts[name].extend(getattr(added, name))
    return replace(split, **{name: tuple(parts[name]) for name in SPLIT_NAMES})


def unseen_split(splits: Sequence[Split], identifiers) -> Split:
    """A validation split of the trajectories of ``identifiers`` whose *system* (replicas
    grouped, :func:`system_of`) is in no part of any of ``splits``: systems built after the
    models of those splits were trained, unseen by all of them, for choosing among the models
    (or their flags) on chemistry none was fitted or checked on. Identifiers matching any
    split's ``train_only`` pattern (clean slabs, gas molecules: references, not systems) are
    left out; the result keeps the first split's train list, its seed and pattern, grouping
    ``"system"``, fractions ``(0, 1, 0)`` and no test part: a split to evaluate on, not to
    train with. Raises :class:`InputError` when no split is given or no system is unseen."""
    if not splits:
        raise InputError("an unseen-systems split needs at least one split to compare with")
    known = {system_of(i) for split in splits for name in SPLIT_NAMES
             for i in getattr(split, name)}
    patterns = [re.compile(s.train_only) for s in splits if s.train_only]
    new = tuple(i for i in sorted(set(getattr(identifiers, "identifiers", identifiers)))
                if system_of(i) not in known and not any(p.search(i) for p in patterns))
    if not new:
        raise InputError("every system of the data is in one of the given splits: none unseen")
    return replace(splits[0], val=new, test=(), fractions=(0.0, 1.0, 0.0), grouping="system")


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
    grouping = data.get("grouping", "trajectory")
    return Split(**parts, seed=int(data["seed"]), fractions=tuple(data["fractions"]),
                 grouping="system" if grouping == "system" else "trajectory",
                 train_only=data.get("train_only"))


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
