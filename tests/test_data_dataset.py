"""Lazy H5Dataset, the collate function and trajectory splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list
from test_data_h5format import ATTRS, random_frames

from tdn_calc.data.dataset import Collater, H5Dataset
from tdn_calc.data.shards import ShardedWriter
from tdn_calc.data.split import (
    extend_split,
    load_or_make_split,
    load_split,
    make_split,
    split_path,
    system_of,
)
from tdn_calc.errors import InputError


@pytest.fixture
def dataset_dir(tmp_path, rng):
    out = tmp_path / "set"
    with ShardedWriter(out, ATTRS, shard_size=4) as w:
        for t in range(10):
            w.append_trajectory(f"mol{t}", random_frames(rng, 2 + t % 3, 3 + t % 4,
                                                         periodic=t % 2 == 1))
    return out


def test_collate_shapes_and_edges(dataset_dir):
    ds = H5Dataset(dataset_dir)
    samples = [ds[i] for i in (0, 5, 11)]
    graph, targets = Collater(cutoff=3.0, dtype=torch.float64)(samples)
    n = sum(len(s["atomic_numbers"]) for s in samples)
    assert graph.n_atoms == n and graph.n_systems == 3
    assert targets["energy"].shape == (3,) and targets["forces"].shape == (n, 3)
    assert targets["stress"].shape == (3, 3, 3) and targets["stress_mask"].dtype == torch.bool
    assert targets["stress_mask"].tolist() == [s["has_stress"] for s in samples]
    torch.testing.assert_close(targets["n_atoms"], graph.atoms_per_system())
    # edges of each structure agree with ASE's neighbour list
    n_edges = 0
    for s in samples:
        from ase import Atoms

        atoms = Atoms(numbers=s["atomic_numbers"], positions=s["positions"], cell=s["cell"],
                      pbc=s["pbc"])
        n_edges += len(neighbor_list("i", atoms, 3.0))
    assert graph.n_edges == n_edges


def test_dataloader_with_workers_reads_lazily(dataset_dir):
    ds = H5Dataset(dataset_dir)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1,
                                         collate_fn=Collater(cutoff=3.0))
    seen = 0
    for graph, targets in loader:
        seen += graph.n_systems
        assert torch.isfinite(targets["forces"]).all()
    assert seen == len(ds)


def test_split_never_shares_a_trajectory_and_is_reproducible(dataset_dir):
    ds = H5Dataset(dataset_dir)
    split = make_split(ds, (0.6, 0.2, 0.2), seed=42)
    assert sorted(split.train + split.val + split.test) == sorted(ds.identifiers)
    assert (len(split.train), len(split.val), len(split.test)) == (6, 2, 2)
    idx = split.indices(ds)
    trajs = {name: set(ds.traj[i].tolist()) for name, i in idx.items()}
    assert not (trajs["train"] & trajs["val"]) and not (trajs["train"] & trajs["test"])
    assert not (trajs["val"] & trajs["test"])
    assert sum(len(i) for i in idx.values()) == len(ds)
    assert make_split(list(reversed(ds.identifiers)), (0.6, 0.2, 0.2), seed=42) == split
    assert make_split(ds, (0.6, 0.2, 0.2), seed=1) != split

    made = load_or_make_split(ds, dataset_dir, (0.6, 0.2, 0.2), seed=42)
    path = split_path(dataset_dir, 42)
    assert path.exists() and load_split(path) == made == split
    with pytest.raises(InputError, match="fractions"):
        load_or_make_split(ds, dataset_dir, (0.8, 0.1, 0.1), seed=42)
    with pytest.raises(InputError, match="summing to 1"):
        make_split(ds, (0.5, 0.1, 0.1))


def test_extend_split_keeps_old_assignment_and_cuts_new_trajectories(tmp_path, rng):
    old = make_split([f"mol{i}" for i in range(20)], (0.6, 0.2, 0.2), seed=7)
    grown = [f"mol{i}" for i in range(50)]
    ext = extend_split(old, grown)
    for name in ("train", "val", "test"):
        assert getattr(ext, name)[:len(getattr(old, name))] == getattr(old, name)
    assert sorted(ext.train + ext.val + ext.test) == sorted(grown)
    assert (ext.seed, ext.fractions) == (old.seed, old.fractions)
    # the 30 new trajectories are cut by the old fractions and seed
    assert (len(ext.train), len(ext.val), len(ext.test)) == (12 + 18, 4 + 6, 4 + 6)
    assert extend_split(ext, grown) == ext  # nothing new: unchanged
    assert extend_split(old, grown[:20]) == old


def _catalysis_labels(n_systems: int, replicas: int) -> list[str]:
    systems = [f"Pt111/CO/site{i}" for i in range(n_systems)] + ["Pt111/clean", "gas/CO"]
    return [f"{s}/r{r}" for s in systems for r in range(replicas)]


def test_system_split_keeps_replicas_together_and_pins_references_to_train():
    labels = _catalysis_labels(20, 3)
    split = make_split(labels, (0.6, 0.2, 0.2), seed=5, grouping="system",
                       train_only="/clean/|^gas/")
    assert sorted(split.train + split.val + split.test) == sorted(labels)
    part_of = {}
    for name in ("train", "val", "test"):
        for ident in getattr(split, name):
            assert part_of.setdefault(system_of(ident), name) == name  # replicas together
    assert {part_of["Pt111/clean"], part_of["gas/CO"]} == {"train"}
    # the fractions cut the 20 free systems, not the trajectories or the pinned ones
    assert [len(getattr(split, n)) for n in ("train", "val", "test")] == [12 * 3 + 6, 4 * 3, 4 * 3]
    assert system_of("bulk/Cu/strain+2%/r10") == "bulk/Cu/strain+2%"
    assert system_of("mol17") == "mol17"
    # trajectory grouping (the default) would separate replicas of some system
    by_traj = make_split(labels, (0.6, 0.2, 0.2), seed=5)
    parts = {}
    for name in ("train", "val", "test"):
        for ident in getattr(by_traj, name):
            parts.setdefault(system_of(ident), set()).add(name)
    assert any(len(p) > 1 for p in parts.values())
    with pytest.raises(InputError, match="grouping"):
        make_split(labels, grouping="molecule")
    with pytest.raises(InputError, match="regular expression"):
        make_split(labels, train_only="(")


def test_extend_system_split_sends_new_replicas_to_their_systems_part(tmp_path):
    old = make_split(_catalysis_labels(20, 2), (0.6, 0.2, 0.2), seed=5, grouping="system",
                     train_only="/clean/|^gas/")
    grown = _catalysis_labels(30, 4)
    ext = extend_split(old, grown)
    assert sorted(ext.train + ext.val + ext.test) == sorted(grown)
    part_of = {}
    for name in ("train", "val", "test"):
        assert getattr(ext, name)[:len(getattr(old, name))] == getattr(old, name)
        for ident in getattr(ext, name):
            assert part_of.setdefault(system_of(ident), name) == name
    assert part_of["gas/CO"] == "train" and (ext.grouping, ext.train_only) == (
        "system", "/clean/|^gas/")
    old.save(tmp_path / "s.json")
    assert load_split(tmp_path / "s.json") == old


def test_unseen_split_holds_the_systems_no_given_split_knows(tmp_path):
    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    from tdn_calc.data.split import unseen_split

    first = make_split(_catalysis_labels(12, 2), (0.6, 0.2, 0.2), seed=5, grouping="system",
                       train_only="/clean/|^gas/")
    second = make_split([f"Pt111/CO/site{i}/r0" for i in range(12, 20)], seed=1)
    grown = [*_catalysis_labels(30, 4), "Pt100/clean/r0", "gas/NO/r0"]
    unseen = unseen_split([first, second], grown)
    assert sorted(unseen.val) == sorted(f"Pt111/CO/site{i}/r{r}" for i in range(20, 30)
                                         for r in range(4))  # new replicas of known: out
    assert unseen.train == first.train and unseen.test == () and unseen.grouping == "system"
    with pytest.raises(InputError, match="none unseen"):
        unseen_split([first, second], _catalysis_labels(20, 1))
    with pytest.raises(InputError, match="at least one split"):
        unseen_split([], grown)
    first.save(tmp_path / "first.json")
    res = CliRunner().invoke(main, ["data", "split", str(tmp_path), "--unseen-by",
                                    str(tmp_path / "first.json")])
    assert res.exit_code == 2 and "--unseen-by needs --out" in res.output


def test_cli_split_extend_writes_a_new_file(dataset_dir, tmp_path):
    import json

    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    ds = H5Dataset(dataset_dir)
    old = make_split(ds.identifiers[:6], (0.5, 0.5, 0.0), seed=3)
    old_file = tmp_path / "old.json"
    old.save(old_file)
    runner = CliRunner()
    res = runner.invoke(main, ["data", "split", str(dataset_dir), "--extend", str(old_file)])
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(main, ["data", "split", str(dataset_dir), "--extend", str(old_file),
                               "--out", str(old_file)])
    assert res.exit_code == 2 and "differ" in res.output
    new_file = tmp_path / "new.json"
    res = runner.invoke(main, ["data", "split", str(dataset_dir), "--extend", str(old_file),
                               "--out", str(new_file)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["trajectories"] == {"train": 5, "val": 5, "test": 0}
    assert load_split(new_file) == extend_split(old, ds)
    assert load_split(old_file) == old
    res = runner.invoke(main, ["data", "split", str(dataset_dir), "--group-by", "system"])
    assert res.exit_code == 2 and "--out" in res.output
    for option in (["--group-by", "system"], ["--train-only", "^gas/"]):
        res = runner.invoke(main, ["data", "split", str(dataset_dir), "--extend", str(old_file),
                                   "--out", str(tmp_path / "other.json"), *option])
        assert res.exit_code == 2 and "contradicts the --extend file" in res.output, option
    res = runner.invoke(main, ["data", "split", str(dataset_dir), "--extend", str(old_file),
                               "--out", str(tmp_path / "same.json"), "--group-by", "trajectory"])
    assert res.exit_code == 0 and load_split(tmp_path / "same.json") == extend_split(old, ds)
    sys_file = tmp_path / "system.json"
    res = runner.invoke(main, ["data", "split", str(dataset_dir), "--group-by", "system",
                               "--train-only", "^nothing", "--out", str(sys_file)])
    assert res.exit_code == 0, res.output
    assert load_split(sys_file) == make_split(ds, grouping="system", train_only="^nothing")


def test_identifiers_of_inverts_frames_of(dataset_dir):
    ds = H5Dataset(dataset_dir)
    wanted = ["mol2", "mol5", "mol9"]
    frames = ds.frames_of(wanted)
    assert ds.identifiers_of(frames) == wanted
    assert ds.identifiers_of(frames[::2]) == wanted  # any frame of a trajectory names it
    assert ds.identifiers_of(np.arange(len(ds))) == ds.identifiers


def test_sample_atoms_round_trips_a_frame(dataset_dir):
    from tdn_calc.data.dataset import sample_atoms

    ds = H5Dataset(dataset_dir)
    for i in range(len(ds)):
        s = ds[i]
        atoms = sample_atoms(s)
        np.testing.assert_array_equal(atoms.numbers, s["atomic_numbers"])
        np.testing.assert_array_equal(atoms.positions, s["positions"])
        np.testing.assert_array_equal(atoms.cell.array, s["cell"])
        np.testing.assert_array_equal(atoms.pbc, s["pbc"])
        assert atoms.calc is None


def test_composition(dataset_dir):
    ds = H5Dataset(dataset_dir)
    comp = ds.composition([1, 6, 8])
    assert comp.shape == (len(ds), 3)
    np.testing.assert_array_equal(comp.sum(axis=1), ds.n_atoms)
    for i in (0, 7, len(ds) - 1):
        z = ds[i]["atomic_numbers"]
        assert comp[i].tolist() == [int((z == 1).sum()), int((z == 6).sum()), int((z == 8).sum())]
    with pytest.raises(InputError, match="not in"):
        ds.composition([1, 6])


def test_in_memory_reads_the_same_frames(dataset_dir):
    lazy, mem = H5Dataset(dataset_dir), H5Dataset(dataset_dir, in_memory=True)
    for i in range(len(lazy)):
        a, b = lazy[i], mem[i]
        for key in ("atomic_numbers", "positions", "forces"):
            np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(lazy.composition([1, 6, 8]), mem.composition([1, 6, 8]))


def test_unseen_split_leaves_out_references_of_every_split_and_guards_its_inputs(
        dataset_dir, tmp_path):
    import json

    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    from tdn_calc.data.split import unseen_split

    plain = make_split([f"Pt111/CO/site{i}/r0" for i in range(4)], seed=1)
    pinned = make_split(_catalysis_labels(2, 1), seed=2, grouping="system",
                        train_only="/clean/|^gas/")
    grown = [*_catalysis_labels(6, 1), "Pt100/clean/r0", "gas/NO/r0"]  # new references
    for order in ([plain, pinned], [pinned, plain]):  # the references stay out either way
        assert sorted(unseen_split(order, grown).val) == [f"Pt111/CO/site{i}/r0"
                                                          for i in (4, 5)]
    ds = H5Dataset(dataset_dir)
    old = make_split(ds.identifiers[:2], (1.0, 0.0, 0.0), seed=3)
    old_file, new_file = tmp_path / "old.json", tmp_path / "new.json"
    old.save(old_file)
    runner = CliRunner()
    res = runner.invoke(main, ["data", "split", str(dataset_dir), "--unseen-by", str(old_file),
                               "--out", str(new_file)])
    assert res.exit_code == 0, res.output
    assert load_split(new_file) == unseen_split([old], ds)
    assert json.loads(res.output)["trajectories"]["val"] == len(unseen_split([old], ds).val) > 0
    for extra, words in ((["--out", str(old_file)], "--out must differ"),
                         (["--out", str(new_file), "--train-only", "^gas/"], "--train-only")):
        res = runner.invoke(main, ["data", "split", str(dataset_dir), "--unseen-by",
                                   str(old_file), *extra])
        assert res.exit_code == 2 and words in res.output, res.output
    assert load_split(old_file) == old
