"""`tdn models summarize` and benchmarks/extrapolation_validation.py on a tiny model and a
tiny EMT-labelled data set (Cu bulk + water trajectories, with a split file): the summary
lands in a new checkpoint, the benchmark flags the out-of-domain sets far more than the test
split, refuses a foreign metal, and its statistics helpers are right."""

from __future__ import annotations

import json
from pathlib import Path

import extrapolation_validation as ev
import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, fcc111, molecule
from click.testing import CliRunner
from relax_testing import one_thread  # noqa: F401
from test_extrapolation import _labelled, cu_bulk, water

from tdn_calc.checkpoint import load_model, save_model
from tdn_calc.data.shards import ShardedWriter
from tdn_calc.data.split import Split
from tdn_calc.extrapolation import from_card

TRAIN = ("cu0", "cu1", "cu2", "h2o0", "h2o1", "h2o2")
TEST = ("cu3", "h2o3", "h2o4")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Paths of a tiny untrained float64 model (``model``), its EMT data set (``data``,
    8 frames per trajectory) and a split file (``split``)."""
    from tdn_calc.nn.config import TDNConfig
    from tdn_calc.nn.model import TDNModel

    root = tmp_path_factory.mktemp("extrap_validation")
    with ShardedWriter(root / "data", {"reference_method": "EMT (ASE)", "source": "test"}) as w:
        for t, ident in enumerate(TRAIN + TEST):
            build = cu_bulk if ident.startswith("cu") else water
            w.append_trajectory(ident, [_labelled(build(100 * t + k)) for k in range(8)])
    Split(train=TRAIN, val=(), test=TEST, seed=0, fractions=(0.7, 0.0, 0.3)).save(
        root / "split.json")
    torch.manual_seed(0)
    config = TDNConfig(elements=[1, 8, 29], lmax=1, channels=8, num_layers=1, num_heads=2,
                       cutoff=4.0, num_radial=4, radial_hidden=8, avg_num_neighbors=8.0)
    save_model(TDNModel(config).double(), root / "model.safetensors", card={"name": "tiny"})
    return {"model": root / "model.safetensors", "data": root / "data",
            "split": root / "split.json", "root": root}


@pytest.fixture(scope="module")
def summarized(setup) -> Path:
    """The model with the summary of the training split, written by `tdn models summarize`."""
    from tdn_calc.cli.main import main as tdn

    out = setup["root"] / "summarized.safetensors"
    args = ["models", "summarize", str(setup["model"]), str(setup["data"]), "-o", str(out),
            "--split-file", str(setup["split"])]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(tdn, args, catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "summarised 48 train frames" in result.output and "sha256" in result.output
    return out


def test_summarize_writes_a_new_checkpoint(setup, summarized):
    from tdn_calc.cli.main import main as tdn

    before = setup["model"].read_bytes()
    card = load_model(summarized, device="cpu").card
    dist = from_card(card)
    assert card["name"] == "tiny" and dist.n_frames == 48  # 6 training trajectories x 8
    assert dist.elements[29].n_atoms == 3 * 8 * 4 and dist.elements[8].n_atoms == 3 * 8
    assert from_card(load_model(setup["model"], device="cpu").card) is None
    runner = CliRunner()
    again = runner.invoke(tdn, ["models", "summarize", str(setup["model"]), str(setup["data"]),
                                "-o", str(summarized), "--split-file", str(setup["split"])])
    assert again.exit_code != 0 and "exists; pass --force" in again.output
    same = runner.invoke(tdn, ["models", "summarize", str(setup["model"]), str(setup["data"]),
                               "-o", str(setup["model"]), "--force", "--split", "all"])
    assert same.exit_code != 0 and "input checkpoint" in same.output
    assert setup["model"].read_bytes() == before


def test_benchmark_flags_out_of_domain_sets(setup, summarized, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["--model", str(summarized), "--data", str(setup["data"]), "--split-file",
            str(setup["split"]), "--n-test", "12", "--n-ood", "3", "--dtype", "float64",
            "-o", str(out)]
    assert ev.main(args) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "test split" in printed and "Spearman" in printed
    sets = report["sets"]
    test = sets["test split"]
    assert test["n_scored"] == 12 and test["frac_atoms_flagged"] <= 0.05
    assert test["force_error_mean_meV_A"] > 0  # stored EMT labels vs an untrained model
    for name in ("compressed x0.75", "rattled 0.3 A"):
        assert sets[name]["n_scored"] == 3 and sets[name]["n_reference_failed"] == 0
        assert sets[name]["frac_atoms_flagged"] >= 0.5 > test["frac_atoms_flagged"]
    assert sets["compressed x0.75"]["frac_structures_flagged"] == 1.0
    # the bases are one Cu bulk and two water molecules: only the water pair is a contact
    assert sets["contact 1.2 A"]["n_scored"] in (1, 2, 3)
    assert sets["benzene on slab"]["n_structures"] == 0  # no slabs, no carbon
    metal = report["next_to_foreign_metal"]
    assert metal["applicable"] and metal["n_refused"] == metal["n_structures"] == 1
    assert "Pt" in metal["errors"][0] and "UnsupportedElementError" in metal["errors"][0]
    assert report["split_file"] == str(setup["split"]) and report["summary"]["n_frames"] == 48
    pooled = report["pooled"]
    assert pooled["n_scored"] >= 12 + 3 * 3 and -1.0 <= pooled["spearman_atoms"] <= 1.0
    # distorted atoms are both flagged and badly predicted by this untrained model
    assert pooled["force_error_flagged_meV_A"] > pooled["force_error_unflagged_meV_A"]


def test_benchmark_needs_a_summary(setup, tmp_path, capsys):
    args = ["--model", str(setup["model"]), "--data", str(setup["data"]), "--split-file",
            str(setup["split"]), "--no-reference", "-o", str(tmp_path / "r.json")]
    assert ev.main(args) == 2
    assert "tdn models summarize" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_spearman_and_ranks():
    from tdn_calc.evaluation.metrics import ranks, spearman

    assert spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    np.testing.assert_allclose(ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))
    assert np.isnan(ev.spearman(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, np.inf])))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 40).astype(float), rng.normal(size=40)
    assert ev.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_out_of_domain_builders():
    rng = np.random.default_rng(0)
    a, b = molecule("CH3OH"), molecule("C6H6")
    pair = ev.in_contact(a, b, 1.2, rng)
    d = np.linalg.norm(pair.positions[: len(a), None] - pair.positions[None, len(a):], axis=-1)
    assert len(pair) == len(a) + len(b) and d.min() == pytest.approx(1.2, abs=1e-6)
    small = ev.compressed(a, 0.75)
    np.testing.assert_allclose(small.get_all_distances(), 0.75 * a.get_all_distances())
    bulk = cu_bulk(0)
    np.testing.assert_allclose(ev.compressed(bulk, 0.85).cell.volume, 0.85**3 * bulk.cell.volume)
    assert ev.in_contact(bulk, a, 1.2, rng) is None
    stripped = ev.stripped_hydrogens(b, rng)
    assert (stripped.numbers == 1).sum() == 6 - 2 and (stripped.numbers == 6).sum() == 6
    assert ev.stripped_hydrogens(molecule("CO"), rng) is None
    odd = ev.stripped_hydrogens(molecule("CH3OH"), rng, closed_shell=False)
    assert (odd.numbers == 1).sum() == 4 - 2
    assert ev.stripped_hydrogens(molecule("OH"), rng) is None
    assert (ev.stripped_hydrogens(molecule("OH"), rng, closed_shell=False).numbers == 1).sum() == 0
    slab = fcc111("Cu", size=(3, 3, 3), vacuum=6.0)
    add_adsorbate(slab, molecule("H2O"), 2.0, "ontop")
    covered = ev.benzene_on_slab(slab, {1, 6, 8, 29})
    top = slab.positions[slab.numbers == 29, 2].max()
    assert len(covered) == 27 + 12 and (covered.numbers == 8).sum() == 0
    np.testing.assert_allclose(covered.positions[covered.numbers == 6, 2], top + 2.1, atol=1e-6)
    assert ev.benzene_on_slab(slab, {1, 8, 29}) is None and ev.benzene_on_slab(bulk, {1, 6}) is None
    near = ev.next_to_metal(a, {1, 6, 8})
    assert near.get_chemical_symbols()[-1] == "Cu"
    assert ev.next_to_metal(a, {1, 6, 8, 29, 78, 26, 79}) is None
