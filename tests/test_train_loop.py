"""The training loop: overfitting through the force loss, exact resume, clean stops on a
deadline or a signal, model export with its card."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_utils import EMT_ATTRS, emt_structures, write_emt_dataset

from tdn_calc.checkpoint import load_model
from tdn_calc.data.split import load_split
from tdn_calc.errors import ConfigError
from tdn_calc.train.config import config_from_dict
from tdn_calc.train.evaluate import evaluate
from tdn_calc.train.metrics_log import read_metrics
from tdn_calc.train.state import load_state
from tdn_calc.train.trainer import Trainer

TINY_MODEL = {"lmax": 1, "channels": 16, "num_layers": 1, "num_heads": 2, "cutoff": 4.0,
              "num_radial": 6, "radial_hidden": 16}


@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    return write_emt_dataset(tmp_path_factory.mktemp("emt") / "data", n_frames=2)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_run(data, out, *, data_opts=None, **training):
    raw = {"output_dir": str(out), "seed": 0,
           "data": {"path": data if isinstance(data, list) else str(data), "batch_size": 3,
                    "split_fractions": [0.75, 0.25, 0.0],
                    **(data_opts or {})},
           "model": dict(TINY_MODEL),
           "training": {"warmup_steps": 3, "log_every_steps": 2, "test_at_end": False,
                        **training}}
    return config_from_dict(raw)


def test_small_model_overfits_tiny_data_through_forces(emt_data, tmp_path):
    run = make_run(emt_data, tmp_path / "run", data_opts={"batch_size": 4,
                   "split_fractions": [1.0, 0.0, 0.0]},
                   max_steps=160, lr=0.01, warmup_steps=10, ema_decay=0.0,
                   forces_weight=100.0, log_every_steps=50)
    trainer = Trainer(run)
    before = evaluate(trainer.ema_model(), trainer.dataset, trainer.train_idx)
    assert trainer.run() == "finished"
    after = evaluate(trainer.ema_model(), trainer.dataset, trainer.train_idx)
    assert after["n_frames"] == before["n_frames"] == 16
    assert after["forces_mae_meV_A"] * 10 <= before["forces_mae_meV_A"], (before, after)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["kind"] == "train"]
    assert float(rows[-1]["loss_forces"]) < 0.05 * float(rows[0]["loss_forces"])
    # no validation split: the final EMA model is exported as best, with its card
    model = load_model(tmp_path / "run" / "best.safetensors", device="cpu")
    assert model.card["trained_on"]["reference_method"] == "EMT (ASE)"
    assert len(model.card["trained_on"]["dataset_sha256"]) == 64
    assert model.card["elements"] == ["H", "C", "N", "O", "Cu"]
    trained = trainer.ema_model().state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, trained[k].to(v.dtype))


def test_reference_energies_and_stats_are_fitted(emt_data, tmp_path):
    trainer = Trainer(make_run(emt_data, tmp_path / "run", max_steps=1))
    config = trainer.model.config
    assert config.elements == [1, 6, 7, 8, 29]
    ds, idx = trainer.dataset, trainer.train_idx
    comp = ds.composition(config.elements)[idx]
    residual = ds.energy[idx] - comp @ np.array(config.atomic_energies)
    baseline = ds.energy[idx] - ds.energy[idx].mean()
    assert np.sqrt(np.mean(residual**2)) < np.sqrt(np.mean(baseline**2))
    forces = np.concatenate([ds[int(i)]["forces"] for i in idx])
    assert config.energy_scale == pytest.approx(np.sqrt(np.mean(forces**2)), rel=1e-4)
    assert config.energy_shift == 0.0
    assert 1.0 < config.avg_num_neighbors < 20
    # a second fresh run into the same directory is refused
    with pytest.raises(ConfigError, match="--resume"):
        trainer.save_checkpoint()
        Trainer(make_run(emt_data, tmp_path / "run", max_steps=1))


def _snapshot(trainer):
    return ({k: v.clone() for k, v in trainer.model.state_dict().items()},
            {k: v.clone() for k, v in trainer.ema.shadow.items()},
            trainer.optimizer.state_dict(), trainer.scheduler.state_dict())


@pytest.mark.parametrize("stop_at", [5, 8])
def test_resume_continues_exactly(emt_data, tmp_path, stop_at):
    # 12 train frames, batch 3 -> 4 steps per epoch; 10 steps cross two epoch ends
    settings = {"max_steps": 10, "lr": 5e-3, "ema_decay": 0.9, "val_every_steps": 3}
    straight = Trainer(make_run(emt_data, tmp_path / "a", **settings))
    assert straight.run() == "finished"
    first = Trainer(make_run(emt_data, tmp_path / "b", **settings))
    assert first.run(stop_at_step=stop_at) == "stopped"
    assert first.step == stop_at and load_state(tmp_path / "b" / "checkpoint.pt")["step"] == stop_at
    resumed = Trainer(make_run(emt_data, tmp_path / "b", **settings), resume=True)
    assert resumed.step == stop_at
    assert resumed.run() == "finished"
    a, b = _snapshot(straight), _snapshot(resumed)
    for x, y in zip(a[0].values(), b[0].values(), strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a[1].values(), b[1].values(), strict=True):
        assert torch.equal(x, y)
    for sa, sb in zip(a[2]["state"].values(), b[2]["state"].values(), strict=True):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key]))
    assert a[3] == b[3]
    rows_a = read_metrics(tmp_path / "a" / "metrics.csv")
    rows_b = read_metrics(tmp_path / "b" / "metrics.csv")
    key = ("kind", "step", "epoch", "loss", "val_forces_mae_meV_A")
    assert [tuple(r[k] for k in key) for r in rows_a] == [tuple(r[k] for k in key) for r in rows_b]


def test_max_time_stops_cleanly_before_the_deadline(emt_data, tmp_path, monkeypatch):
    """The trainer's clock is a fake one that advances 0.05 s per reading: the stop-before-
    the-deadline margin (step, validation and save times) is tested, not the machine's load."""
    from types import SimpleNamespace

    from tdn_calc.train import trainer as trainer_module

    clock = {"now": 1000.0}

    def monotonic():
        clock["now"] += 0.05
        return clock["now"]

    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(monotonic=monotonic))
    run = make_run(emt_data, tmp_path / "run", max_steps=100000, max_time=6.0)
    start = clock["now"]
    trainer = Trainer(run)
    assert trainer.run() == "time_limit"
    assert clock["now"] - start < 6.0
    state = load_state(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == trainer.step > 0


def test_sigterm_saves_and_stops(emt_data, tmp_path):
    """SIGTERM arrives after the second step (not after a wall-clock delay, which a loaded
    machine may spend before the first step)."""
    trainer = Trainer(make_run(emt_data, tmp_path / "run", max_steps=100000))
    real_step = trainer.train_step

    def step_then_sigterm(*args, **kwargs):
        out = real_step(*args, **kwargs)
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer.train_step = step_then_sigterm
    status = trainer.run()
    assert status == "signal"
    assert load_state(tmp_path / "run" / "checkpoint.pt")["step"] == trainer.step >= 2
    assert signal.getsignal(signal.SIGTERM) is not trainer._on_signal  # handler restored


def test_validation_exports_best_model_with_metrics(emt_data, tmp_path):
    run = make_run(emt_data, tmp_path / "run", max_steps=7, val_every_steps=2,
                   data_opts={"split_fractions": [0.5, 0.25, 0.25]}, test_at_end=True)
    trainer = Trainer(run)
    assert trainer.run() == "finished"
    out = tmp_path / "run"
    card = load_model(out / "best.safetensors", device="cpu").card
    assert card["metrics"]["val"]["n_frames"] == trainer.val_idx.size > 0
    assert card["metrics"]["test"]["n_frames"] == trainer.test_idx.size > 0
    test = json.loads((out / "test_metrics.json").read_text())
    assert test["forces_mae_meV_A"] == card["metrics"]["test"]["forces_mae_meV_A"]
    assert set(test["forces_mae_meV_A_per_element"]) <= {"H", "C", "N", "O", "Cu"}
    assert (out / "final.safetensors").exists() and (out / "split.json").exists()
    vals = [r for r in read_metrics(out / "metrics.csv") if r["kind"] == "val"]
    # 8 train frames in batches of 3: epochs end at steps 3 and 6; plus every 2 steps and
    # the last step
    assert [int(r["step"]) for r in vals] == [2, 3, 4, 6, 7]


def test_exported_model_loads_whatever_its_header_length(tiny_model, tmp_path):
    """A safetensors header length whose low byte is 0x80 (a pickle's first byte) must not
    make an exported model unloadable."""
    import struct

    from tdn_calc.checkpoint import save_model

    model = tiny_model(dtype=torch.float32)
    for pad in range(256):
        path = save_model(model, tmp_path / "m.safetensors", {"description": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:  # pragma: no cover - 256 consecutive lengths always hit 0x80
        pytest.fail("could not produce a header length ending in 0x80")
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    loaded = load_model(path, device="cpu")
    assert loaded.card["description"] == "x" * pad


def test_resume_with_more_steps_follows_the_new_schedule(emt_data, tmp_path):
    first = Trainer(make_run(emt_data, tmp_path / "run", max_steps=4, lr=1e-3, min_lr_ratio=0.1))
    assert first.run() == "finished"
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    longer = make_run(emt_data, tmp_path / "run", max_steps=8, lr=1e-3, min_lr_ratio=0.1)
    resumed = Trainer(longer, resume=True)
    # step 4 of 8 (3 warm-up steps): halfway down the cosine, not at its end
    expected = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 1 / 5)))
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert resumed.run() == "finished" and resumed.step == 8
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_evaluate_matches_frame_by_frame_errors(emt_data, tiny_model):
    """Batched metrics equal errors computed one frame at a time with the ASE calculator."""
    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.data.frames import Frame

    model = tiny_model(elements=(1, 6, 7, 8, 29), dtype=torch.float64, seed=3)
    dataset = H5Dataset(emt_data)
    indices = np.arange(len(dataset))
    metrics = evaluate(model, dataset, indices, batch_size=5)
    calc = TDNCalculator(model, device="cpu", min_distance=0.0)
    de, df, per_element = [], [], {}
    for i in indices:
        s = dataset[int(i)]
        atoms = Frame(atomic_numbers=s["atomic_numbers"], positions=s["positions"],
                      energy=s["energy"], forces=s["forces"], cell=s["cell"],
                      pbc=s["pbc"]).to_atoms()
        atoms.calc = calc
        de.append((atoms.get_potential_energy() - s["energy"]) / len(atoms))
        err = np.abs(atoms.get_forces() - s["forces"])
        df.append(err)
        for z, row in zip(s["atomic_numbers"], err, strict=True):
            per_element.setdefault(int(z), []).append(row)
    df = np.concatenate(df)
    assert metrics["n_frames"] == len(dataset) and metrics["n_structures"] == 8
    assert metrics["energy_mae_meV_atom"] == pytest.approx(1000 * np.mean(np.abs(de)), rel=1e-6)
    assert metrics["forces_mae_meV_A"] == pytest.approx(1000 * df.mean(), rel=1e-6)
    assert metrics["forces_rmse_meV_A"] == pytest.approx(1000 * np.sqrt((df**2).mean()),
                                                         rel=1e-6)
    assert metrics["forces_mae_meV_A_per_element"]["Cu"] == pytest.approx(
        1000 * np.mean(per_element[29]), rel=1e-6)
    assert metrics["n_atoms"] == df.shape[0]


def test_evaluate_by_kind_splits_the_same_errors_by_frame_kind(emt_data, tiny_model):
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.data.frames import kind_name
    from tdn_calc.train.evaluate import evaluate_by_kind


    model = tiny_model(elements=(1, 6, 7, 8, 29), dtype=torch.float64, seed=3)
    dataset = H5Dataset(emt_data)
    indices = np.arange(len(dataset))
    dataset.frame_kind = np.arange(len(dataset)) % 3 * 3  # relax, bad_start, displaced
    kinds = np.unique(dataset.frame_kind)
    whole = evaluate(model, dataset, indices, batch_size=5)
    split = evaluate_by_kind(model, dataset, indices, batch_size=3)
    for key in ("n_frames", "n_atoms", "energy_mae_meV_atom", "forces_mae_meV_A"):
        assert split[key] == pytest.approx(whole[key], rel=1e-9)
    assert set(split["by_frame_kind"]) == {"relax", "bad_start", "displaced"}
    for k in kinds:
        own = evaluate(model, dataset, indices[dataset.frame_kind == k], batch_size=4)
        part = split["by_frame_kind"][kind_name(k)]
        assert part["n_frames"] == own["n_frames"]
        assert part["forces_mae_meV_A"] == pytest.approx(own["forces_mae_meV_A"], rel=1e-9)


def test_stress_enters_the_loss_where_labelled(emt_data, tmp_path):
    run = make_run(emt_data, tmp_path / "run", max_steps=2, stress_weight=1.0,
                   data_opts={"batch_size": 16, "split_fractions": [1.0, 0.0, 0.0]},
                   log_every_steps=1)
    trainer = Trainer(run)
    assert trainer.run() == "finished"
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert all(float(r["loss_stress"]) > 0 for r in rows if r["kind"] == "train")
    metrics = evaluate(trainer.ema_model(), trainer.dataset, trainer.train_idx)
    assert metrics["stress_mae_meV_A3"] > 0  # only the periodic Cu cell has stress labels


def test_elements_unseen_in_training_are_not_scored(emt_data, tmp_path):
    """With elements: auto, the model knows the training split's elements; validation frames
    with others are left out, and `tdn eval` skips and counts them."""
    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    from tdn_calc.data.split import Split

    names = ["CH4", "H2O", "C2H4", "Cu4", "Cu3O", "Cu-fcc"]
    split = Split(train=tuple(names), val=("NH3", "CO2"), test=(), seed=0,
                  fractions=(0.75, 0.25, 0.0))
    split.save(tmp_path / "split.json")
    run = make_run(emt_data, tmp_path / "run", max_steps=2,
                   data_opts={"split_file": str(tmp_path / "split.json")})
    trainer = Trainer(run)
    assert trainer.model.config.elements == [1, 6, 8, 29]  # no N in training
    co2 = trainer.dataset.frames_of(["CO2"])
    np.testing.assert_array_equal(trainer.val_idx, co2)
    assert trainer.run() == "finished"
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "run" / "best.safetensors"),
                                       str(emt_data), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["n_frames_skipped"] == 2 and metrics["skipped_elements"] == ["N"]
    assert metrics["n_frames"] == 14


def test_oversample_repeats_matching_trajectories(emt_data, tmp_path):
    """``data.oversample`` repeats the training frames of matching trajectories k times."""
    plain = Trainer(make_run(emt_data, tmp_path / "a", max_steps=1))
    run = make_run(emt_data, tmp_path / "b", data_opts={"oversample": {"^Cu": 3}}, max_steps=1)
    trainer = Trainer(run)
    ids = trainer.dataset.identifiers
    is_cu = np.array([ids[t].startswith("Cu") for t in trainer.dataset.traj], dtype=bool)
    base = plain.train_idx
    assert is_cu[base].any() and (~is_cu[base]).any()
    expected = np.sort(np.concatenate([base[~is_cu[base]], np.repeat(base[is_cu[base]], 3)]))
    np.testing.assert_array_equal(np.sort(trainer.train_idx), expected)
    with pytest.raises(ConfigError, match="oversample"):
        make_run(emt_data, tmp_path / "c", data_opts={"oversample": {"^Cu": 0}})


def test_oversample_kinds_repeats_frames_of_a_kind(emt_data, tmp_path):
    """``data.oversample_kinds`` repeats training frames by kind; with a trajectory pattern
    too, a frame takes the larger factor."""
    from types import SimpleNamespace

    from tdn_calc.data.frames import FrameKind
    from tdn_calc.train.setup import oversampled

    ds = SimpleNamespace(identifiers=["Cu/a", "H2O/b"], traj=np.array([0, 0, 0, 1, 1, 1]),
                         frame_kind=np.array([0, 0, 1, 0, 1, 3]))
    train = np.arange(6)
    got = oversampled(ds, train, {}, {"relax": 2})
    np.testing.assert_array_equal(np.sort(got), [0, 0, 1, 1, 2, 3, 3, 4, 5])
    both = oversampled(ds, train, {"^Cu": 3}, {"relax": 2, "bad_start": 4})
    np.testing.assert_array_equal(np.bincount(both, minlength=6), [3, 3, 3, 2, 1, 4])
    assert FrameKind.BAD_START == 3
    run = make_run(emt_data, tmp_path / "a", max_steps=1,
                   data_opts={"oversample_kinds": {"relax": 2}})
    assert run.train.oversample_kinds == {"relax": 2}
    from tdn_calc.train.config import _SECTIONS

    assert "oversample_kinds" in _SECTIONS["data"]
    assert "oversample_kinds" not in _SECTIONS["training"]
    for bad, match in [({"relaxed": 2}, "unknown frame kind"), ({"relax": 0}, ">= 1")]:
        with pytest.raises(ConfigError, match=match):
            make_run(emt_data, tmp_path / "b", data_opts={"oversample_kinds": bad})


def test_split_grouping_and_train_only_from_the_config(emt_data, tmp_path):
    """``data.split_grouping`` / ``split_train_only`` shape a new split; an existing split
    file made otherwise is refused when the config asks for something else."""
    opts = {"split_grouping": "system", "split_train_only": "^Cu",
            "split_fractions": [0.5, 0.25, 0.25]}
    trainer = Trainer(make_run(emt_data, tmp_path / "a", data_opts=opts, max_steps=1))
    split = load_split(tmp_path / "a" / "split.json")
    assert (split.grouping, split.train_only) == ("system", "^Cu")
    assert all(not i.startswith("Cu") for i in split.val + split.test)
    assert any(i.startswith("Cu") for i in split.train)
    assert trainer.train_idx.size > 0
    with pytest.raises(ConfigError, match="split_grouping"):
        Trainer(make_run(emt_data, tmp_path / "a", max_steps=1,
                         data_opts={**opts, "split_train_only": "^H"}))
    with pytest.raises(ConfigError, match="split_grouping"):
        make_run(emt_data, tmp_path / "b", data_opts={"split_grouping": "molecule"})


def test_init_from_starts_from_a_trained_model(emt_data, tmp_path):
    """``training.init_from`` copies weights and model config; a fresh schedule follows."""
    first = Trainer(make_run(emt_data, tmp_path / "a", max_steps=6, ema_decay=0.0))
    first.run()
    source = tmp_path / "a" / "best.safetensors"
    tuned = Trainer(make_run(emt_data, tmp_path / "b", max_steps=2, init_from=str(source)))
    reference = load_model(source, device="cpu")
    assert tuned.model.config.to_dict() == reference.config.to_dict()
    for k, v in reference.state_dict().items():
        mine = tuned.model.state_dict()[k]
        torch.testing.assert_close(mine, v.to(mine.dtype))
    assert tuned.run() == "finished" and tuned.step == 2


def test_init_from_a_model_without_an_element_of_the_data_extends_it(emt_data, tmp_path):
    """Fine-tuning on data with an element the model lacks (N) adds it, starting from its
    nearest known element, and keeps the other weights."""
    run = make_run(emt_data, tmp_path / "a2", max_steps=2, ema_decay=0.0)
    run.model["elements"] = [1, 6, 8, 29]  # no N: the NH3 frames are left out
    assert Trainer(run).run() == "finished"
    source = tmp_path / "a2" / "best.safetensors"
    tuned = Trainer(make_run(emt_data, tmp_path / "b", max_steps=2, init_from=str(source)))
    reference = load_model(source, device="cpu")
    assert tuned.model.elements == [1, 6, 7, 8, 29]
    assert tuned.model.config.extra["extended_from"]["donors"] == {"N": "C"}
    mine = tuned.model.state_dict()
    for k, v in reference.state_dict().items():
        if k not in ("embedding.weight", "atomic_energies"):
            torch.testing.assert_close(mine[k], v.to(mine[k].dtype))
    embedding = mine["embedding.weight"]
    torch.testing.assert_close(embedding[2], embedding[1])  # N's row is C's
    assert tuned.run() == "finished"


def test_data_path_lists_several_data_sets(emt_data, tmp_path):
    """``data.path`` as a list trains on the union; shared identifiers are refused."""
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.data.shards import ShardedWriter
    from tdn_calc.errors import InputError

    other = tmp_path / "other"
    with ShardedWriter(other, EMT_ATTRS, shard_size=4) as writer:
        for name, frames in emt_structures(np.random.default_rng(5), 2).items():
            writer.append_trajectory(f"second/{name}", frames)
    both = H5Dataset([emt_data, other])
    assert len(both) == len(H5Dataset(emt_data)) + len(H5Dataset(other))
    assert H5Dataset([emt_data]).path == emt_data  # a list of one is that data set
    run = make_run([str(emt_data), str(other)], tmp_path / "run", max_steps=2)
    assert run.train.data_path == [str(Path(emt_data).resolve()), str(other.resolve())]
    trainer = Trainer(run)
    assert len(trainer.dataset) == len(both)
    assert trainer.run() == "finished"
    card = load_model(tmp_path / "run" / "best.safetensors", device="cpu").card
    assert card["trained_on"]["dataset"] == f"{Path(emt_data).name} + other"
    with pytest.raises(InputError, match="share trajectory identifiers"):
        H5Dataset([emt_data, emt_data])
