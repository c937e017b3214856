"""Deterministic, resumable batching of the training frames, sharded by rank.

The order of epoch ``e`` is a permutation seeded by ``(seed, e)``, so it can be rebuilt from
the epoch number alone: a resumed run skips the batches it already did and sees exactly the
data a run without interruption would have seen. Like ``DistributedSampler``, the permutation
is padded (by repeating its start) to a multiple of the world size and rank ``r`` takes every
``world``-th frame from position ``r``, so every rank does the same number of steps.
"""

from __future__ import annotations

import math

import numpy as np


def epoch_batches(train_indices: np.ndarray, epoch: int, seed: int, batch_size: int,
                  rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Frame indices of each batch of ``epoch`` for ``rank`` (the last batch may be smaller)."""
    idx = np.asarray(train_indices, dtype=np.int64)
    order = idx[np.random.default_rng([int(seed), int(epoch)]).permutation(idx.size)]
    per_rank = math.ceil(idx.size / world_size)
    order = np.resize(order, per_rank * world_size)  # pads by repeating the start
    mine = order[rank::world_size]
    return [mine[i:i + batch_size].tolist() for i in range(0, mine.size, batch_size)]


def batches_per_epoch(n_frames: int, batch_size: int, world_size: int = 1) -> int:
    """Optimiser steps per epoch for ``n_frames`` training frames."""
    return math.ceil(math.ceil(n_frames / world_size) / batch_size)
