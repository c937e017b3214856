"""Extrapolation scores: a training-set summary fitted on a tiny synthetic data set scores
in-distribution atoms low and compressed / foreign-bonded structures high; it round-trips
through JSON and the model card, reaches the calculator and tdn-relax."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from click.testing import CliRunner
from relax_testing import one_thread  # noqa: F401

from tdn_calc.calculator import TDNCalculator
from tdn_calc.checkpoint import load_model, save_model
from tdn_calc.data.dataset import Collater, H5Dataset
from tdn_calc.data.shards import ShardedWriter
from tdn_calc.errors import InputError
from tdn_calc.extrapolation import (
    CARD_KEY,
    TrainingDistribution,
    attach_to_checkpoint,
    fit_training_distribution,
    from_card,
    score_atoms,
    score_graph,
)

ELEMENTS = (1, 8, 29)


def _labelled(atoms):
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def cu_bulk(seed, a=3.6):
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def water(seed):
    atoms = molecule("H2O")
    atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """``(model, distribution, data path)``: a tiny float64 model and the summary of 30 Cu
    bulk + 30 water frames (EMT labels)."""
    from tdn_calc.nn.config import TDNConfig
    from tdn_calc.nn.model import TDNModel

    path = tmp_path_factory.mktemp("extrap") / "data"
    with ShardedWriter(path, {"reference_method": "EMT (ASE)", "source": "test"}) as writer:
        writer.append_trajectory("cu", [_labelled(cu_bulk(k)) for k in range(30)])
        writer.append_trajectory("h2o", [_labelled(water(k)) for k in range(30)])
    torch.manual_seed(0)
    config = TDNConfig(elements=list(ELEMENTS), lmax=1, channels=8, num_layers=1,
                       num_heads=2, cutoff=4.0, num_radial=4, radial_hidden=8,
                       avg_num_neighbors=8.0)  # fmt: skip
    model = TDNModel(config).double().eval()
    dataset = H5Dataset(path)
    return model, fit_training_distribution(model, dataset, np.arange(len(dataset))), path


def test_training_atoms_are_calibrated(fitted):
    model, dist, path = fitted
    assert set(dist.elements) == set(ELEMENTS)
    assert dist.elements[29].n_atoms == 120 and dist.elements[1].n_atoms == 60
    assert (29, 29) in dist.min_distances and (1, 8) in dist.min_distances
    assert (8, 29) not in dist.min_distances  # no Cu-O contact in the training data
    dataset = H5Dataset(path)
    collate = Collater(cutoff=model.cutoff, dtype=torch.float64)
    graph, _ = collate([dataset[k] for k in range(len(dataset))])
    scores = score_graph(model, dist, graph)
    # the 99.9% quantile of 30-120 atoms per element: at most the top atom of each is above 1
    assert (scores.scores > 1.0 + 1e-9).sum() <= len(ELEMENTS)
    assert np.median(scores.scores) < 0.5 and not scores.too_close.any()


def test_in_distribution_low_out_of_domain_high(fitted):
    model, dist, _ = fitted
    for atoms in (cu_bulk(100), cu_bulk(101), water(100), water(101)):
        s = score_atoms(model, dist, atoms)
        assert s.max_score < 1.0 and not s.flagged
    compressed = score_atoms(model, dist, cu_bulk(102, a=3.2))  # 11% compressed
    assert compressed.scores.min() > 5.0 and compressed.too_close.all() and compressed.flagged
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=6.0, a=3.6)
    add_adsorbate(slab, molecule("H2O"), 2.0, "ontop")  # Cu-O: bonding never seen
    foreign = score_atoms(model, dist, slab)
    oxygen = slab.numbers == 8
    assert foreign.scores[oxygen].min() > 1.0 and foreign.too_close[oxygen].all()
    assert foreign.n_extrapolating >= 3


def test_distance_check_has_a_small_tolerance(fitted):
    """A pair 0.01 Å shorter than the shortest seen in training is not flagged; 0.1 Å is;
    an element pair never seen within the cutoff always is."""
    from tdn_calc.extrapolation import DISTANCE_TOLERANCE

    _, dist, _ = fitted
    shortest = dist.min_distances[(1, 8)]
    numbers = np.array([8, 1])
    i, j = np.array([0]), np.array([1])
    near = dist.distance_violations(numbers, i, j, np.array([shortest - 0.01]))
    far = dist.distance_violations(numbers, i, j, np.array([shortest - DISTANCE_TOLERANCE - 0.07]))
    assert not near.any() and far.all()
    unseen = dist.distance_violations(np.array([8, 29]), i, j, np.array([3.0]))
    assert unseen.all()


def test_json_and_card_round_trip(fitted, tmp_path):
    model, dist, _ = fitted
    again = TrainingDistribution.from_json(dist.to_json())
    atoms = cu_bulk(7, a=3.4)
    np.testing.assert_allclose(score_atoms(model, again, atoms).scores,
                               score_atoms(model, dist, atoms).scores, rtol=1e-10)  # fmt: skip
    assert again.min_distances == dist.min_distances
    with pytest.raises(InputError, match="format"):
        TrainingDistribution.from_dict({"format": "something else"})
    save_model(model, tmp_path / "m.safetensors", card={CARD_KEY: dist.to_dict()})
    loaded = load_model(tmp_path / "m.safetensors", device="cpu", dtype="float64")
    assert from_card(loaded.card).to_dict() == dist.to_dict()
    assert from_card({}) is None


def test_attach_to_checkpoint(fitted, tmp_path):
    model, dist, path = fitted
    save_model(model, tmp_path / "in.safetensors", card={"name": "tiny"})
    before = (tmp_path / "in.safetensors").read_bytes()
    attached = attach_to_checkpoint(str(tmp_path / "in.safetensors"), str(path),
                                    str(tmp_path / "out.safetensors"), split="all")  # fmt: skip
    assert (tmp_path / "in.safetensors").read_bytes() == before
    card = load_model(tmp_path / "out.safetensors", device="cpu").card
    assert card["name"] == "tiny" and from_card(card).to_dict() == attached.to_dict()
    assert attached.elements[29].n_atoms == dist.elements[29].n_atoms
    with pytest.raises(InputError, match="input checkpoint"):
        attach_to_checkpoint(str(tmp_path / "in.safetensors"), str(path),
                             str(tmp_path / "in.safetensors"), split="all")  # fmt: skip


def test_calculator_results(fitted, tmp_path):
    model, dist, _ = fitted
    save_model(model, tmp_path / "m.safetensors", card={CARD_KEY: dist.to_dict()})
    save_model(model, tmp_path / "plain.safetensors")
    calc = TDNCalculator(str(tmp_path / "m.safetensors"), device="cpu", dtype="float64")
    atoms = cu_bulk(3, a=3.2)
    atoms.calc = calc
    atoms.get_potential_energy()
    assert calc.results["extrapolation"].shape == (4,)
    assert (calc.results["extrapolation"] > 1).all()
    assert calc.results["extrapolation_too_close"].all()
    plain = TDNCalculator(str(tmp_path / "plain.safetensors"), device="cpu", dtype="float64")
    plain.get_potential_energy(cu_bulk(3))
    assert "extrapolation" not in plain.results
    off = TDNCalculator(str(tmp_path / "m.safetensors"), device="cpu", extrapolation=False)
    off.get_potential_energy(cu_bulk(3))
    assert "extrapolation" not in off.results


def test_tdn_relax_flags_extrapolating_structures(fitted, tmp_path, monkeypatch):
    from tdn_calc.cli.relax import main

    model, dist, _ = fitted
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "models": {}}')
    monkeypatch.setenv("TDN_MANIFEST", str(tmp_path / "manifest.json"))
    save_model(model, tmp_path / "m.safetensors", card={CARD_KEY: dist.to_dict()})
    good, bad = cu_bulk(50), cu_bulk(51, a=3.1)
    good.info["name"], bad.info["name"] = "good", "squeezed"
    write("in.extxyz", [good, bad])
    args = ["in.extxyz", "-m", "m.safetensors", "--dtype", "float64", "--steps", "3",
            "--report", "r.json"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    frames = read("in_relaxed.extxyz", index=":")
    assert frames[0].info["extrapolating_atoms"] == 0
    assert frames[1].info["extrapolating_atoms"] == 4 and frames[1].info["extrapolation_max"] > 1
    assert frames[1].arrays["extrapolation"].shape == (4,)
    report = json.loads((tmp_path / "r.json").read_text())
    rows = report["structures"]
    assert rows[0]["extrapolating_atoms"] == 0 and rows[1]["extrapolating_atoms"] == 4
    assert report["counts"]["extrapolating"] == 1
    assert "extrap." in result.output
    assert "squeezed" in result.output and "extrapolation score above 1" in result.output
