"""Building blocks of training (reference-energy fit, schedule, EMA, batching, state files)
and the tiny EMT data set the other training tests use (``from test_train_utils import ...``).
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tdn_calc.errors import CheckpointError
from tdn_calc.train.batches import batches_per_epoch, epoch_batches
from tdn_calc.train.optim import EMA, WarmupCosine
from tdn_calc.train.state import load_state, rng_state, save_state, set_rng_state
from tdn_calc.train.stats import fit_atomic_energies

EMT_ATTRS = {"reference_method": "EMT (ASE)", "source": "tdn-calc tests"}


def emt_structures(rng: np.random.Generator, n_frames: int = 3):
    """``{identifier: [Atoms with EMT results]}``: rattled H/C/N/O molecules, Cu clusters and
    one periodic Cu cell (with stress)."""
    from ase import Atoms
    from ase.build import bulk, molecule
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    bases = {name: molecule(name) for name in ("CH4", "H2O", "NH3", "CO2", "C2H4")}
    bases["Cu4"] = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [1.25, 2.2, 0],
                                           [1.25, 0.7, 2.0]])
    bases["Cu3O"] = Atoms("Cu3O", positions=[[0, 0, 0], [2.5, 0, 0], [1.25, 2.2, 0],
                                             [1.25, 0.8, 1.6]])
    bases["Cu-fcc"] = bulk("Cu", "fcc", a=3.6, cubic=True)
    out = {}
    for name, base in bases.items():
        frames = []
        for _ in range(n_frames):
            atoms = base.copy()
            atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
            atoms.calc = EMT()
            results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
            if atoms.pbc.all():
                results["stress"] = atoms.get_stress()
            atoms.calc = SinglePointCalculator(atoms, **results)
            frames.append(atoms)
        out[name] = frames
    return out


def write_emt_dataset(path: Path, seed: int = 0, n_frames: int = 3) -> Path:
    """Write :func:`emt_structures` as a shard directory at ``path``; returns ``path``."""
    from tdn_calc.data.shards import ShardedWriter

    with ShardedWriter(path, EMT_ATTRS, shard_size=4) as writer:
        for name, frames in emt_structures(np.random.default_rng(seed), n_frames).items():
            writer.append_trajectory(name, frames)
    return path


# ------------------------------------------------------------------------------------------


def test_fit_atomic_energies_recovers_exact_references(rng):
    e0 = np.array([-13.6, -1030.0, -2040.5])
    comp = rng.integers(0, 6, size=(40, 3))
    comp[:, 1] += 1
    energy = comp @ e0 + rng.normal(0, 1e-3, 40)
    np.testing.assert_allclose(fit_atomic_energies(comp, energy), e0, atol=1e-3)
    # an element absent from every frame gets exactly 0
    comp[:, 2] = 0
    fitted = fit_atomic_energies(comp, comp @ e0)
    assert fitted[2] == 0.0
    np.testing.assert_allclose(fitted[:2], e0[:2], rtol=1e-9)


def test_warmup_cosine_shape():
    f = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))


def test_ema_tracks_average_and_round_trips():
    model = torch.nn.Linear(3, 2)
    w_init = model.weight.detach().clone()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first update: d = min(0.5, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.shadow["weight"], d * w_init + (1 - d))
    ema.update(model)  # second: d = min(0.5, 3/12)
    torch.testing.assert_close(ema.shadow["weight"], 0.25 * (d * w_init + (1 - d)) + 0.75)
    other = EMA(torch.nn.Linear(3, 2), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 2 and other.decay == 0.5
    torch.testing.assert_close(other.shadow["weight"], ema.shadow["weight"])
    target = torch.nn.Linear(3, 2)
    ema.copy_to(target)
    torch.testing.assert_close(target.weight, ema.shadow["weight"])
    with pytest.raises(CheckpointError):
        EMA(torch.nn.Linear(3, 3, bias=False), 0.9).load_state_dict(ema.state_dict())


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_batches_cover_the_data_and_are_reproducible(world):
    idx = np.arange(100, 123)
    per_rank = [epoch_batches(idx, 4, seed=7, batch_size=5, rank=r, world_size=world)
                for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
    assert len(per_rank[0]) == batches_per_epoch(idx.size, 5, world)
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert set(seen) == set(idx.tolist()) and len(seen) == math.ceil(23 / world) * world
    assert per_rank == [epoch_batches(idx, 4, 7, 5, r, world) for r in range(world)]
    assert per_rank[0] != epoch_batches(idx, 5, 7, 5, 0, world)  # a new order each epoch


def test_training_state_round_trip_is_safe(tmp_path):
    random.seed(3)
    np.random.seed(3)  # noqa: NPY002 (the legacy global state is what is saved)
    torch.manual_seed(3)
    state = {"rng": rng_state(), "step": 5, "nested": {"t": torch.arange(4)}}
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    path = save_state(tmp_path / "state.pt", state)
    loaded = load_state(path)
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # noqa: NPY002
    assert loaded["step"] == 5
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_state(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_state(tmp_path / "missing.pt")
