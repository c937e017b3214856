"""Chemistry-novelty scores (tdn_calc.uncertainty): invariance, monotone growth away from the
training data, JSON round trip, the manifest's sidecar with its sha256 check, and the
calculator's ``results["uncertainty"]``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111

from tdn_calc.calculator import TDNCalculator
from tdn_calc.checkpoint import save_model
from tdn_calc.errors import CheckpointError
from tdn_calc.fileio import sha256_file
from tdn_calc.graph import atoms_to_graph
from tdn_calc.registry import uncertainty_sidecar
from tdn_calc.uncertainty import (
    METHOD,
    ChemistryNovelty,
    fit_histograms,
    for_model,
    graph_histogram,
    neighbour_histogram,
    thin,
)

ELEMENTS = (1, 8, 29)
CUTOFF = 4.0


def cu_bulk(seed: int, a: float = 3.6) -> Atoms:
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=seed)
    return atoms


def slab_oh() -> Atoms:
    slab = fcc111("Cu", size=(2, 2, 3), a=3.6, vacuum=6.0)
    add_adsorbate(slab, Atoms("OH", positions=[(0, 0, 0), (0, 0, 0.97)]), 1.9, "fcc")
    slab.rattle(0.02, seed=3)
    return slab


def histograms_of(structures: list[Atoms]) -> dict[int, np.ndarray]:
    """Training histograms of ``structures`` by element (through the graph path)."""
    parts: dict[int, list[np.ndarray]] = {}
    for atoms in structures:
        graph = atoms_to_graph([atoms], CUTOFF, dtype=torch.float64, device="cpu")
        hist = graph_histogram(graph, ELEMENTS, CUTOFF)
        for z in np.unique(atoms.numbers):
            parts.setdefault(int(z), []).append(hist[atoms.numbers == z])
    return {z: np.concatenate(p) for z, p in parts.items()}


@pytest.fixture(scope="module")
def summary() -> ChemistryNovelty:
    train = [cu_bulk(s) for s in range(4)] + [slab_oh()]
    return fit_histograms(histograms_of(train), ELEMENTS, CUTOFF, bank_size=500, n_frames=5)


def test_histogram_counts_neighbours_by_element():
    # a dimer at half the cutoff: w = (1 - 1/4)^2 in the other atom's element column
    h = neighbour_histogram(np.array([1, 8]), np.array([0, 1]), np.array([1, 0]),
                            np.array([2.0, 2.0]), ELEMENTS, 4.0)
    assert h.shape == (2, 3)
    np.testing.assert_allclose(h, [[0, 0.5625, 0], [0.5625, 0, 0]])


def test_score_shape_invariance_and_permutation(summary):
    atoms = slab_oh()
    scores = summary.score_atoms(atoms)
    assert scores.shape == (len(atoms),) and np.isfinite(scores).all()
    moved = atoms.copy()
    moved.rotate(37, (1, 2, 3), rotate_cell=True)
    moved.translate((0.3, -1.2, 2.0))
    np.testing.assert_allclose(summary.score_atoms(moved), scores, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(atoms))
    np.testing.assert_allclose(summary.score_atoms(atoms[perm]), scores[perm], atol=1e-6)


def test_score_grows_away_from_training(summary):
    """Cu bulk compressed ever more: its atoms' histograms move away from the training
    ones, and the score grows monotonically (from below 1 in the trained lattice)."""
    scores = [summary.score_atoms(cu_bulk(9, a)).max() for a in (3.6, 3.5, 3.4, 3.3, 3.2)]
    assert scores[0] < 1.0 < scores[-1]
    assert np.all(np.diff(scores) > 0)


def test_unknown_element_scores_inf(summary):
    h = np.zeros((1, len(ELEMENTS)))
    assert summary.score(h, np.array([6]))[0] == np.inf


def test_thin_keeps_every_row_within_radius():
    bank = np.random.default_rng(1).normal(size=(300, 4))
    kept = thin(bank, 0.8)
    assert len(kept) < len(bank)
    d = np.linalg.norm(bank[:, None] - kept[None], axis=2).min(axis=1)
    assert d.max() <= 0.8


def test_round_trip(summary, tmp_path):
    back = ChemistryNovelty.from_json(summary.to_json())
    assert back.elements == summary.elements and back.scales == summary.scales
    for z, bank in summary.banks.items():
        np.testing.assert_array_equal(back.banks[z], bank)
    summary.save(tmp_path / "s.json")
    atoms = slab_oh()
    np.testing.assert_array_equal(ChemistryNovelty.load(tmp_path / "s.json").score_atoms(atoms),
                                  summary.score_atoms(atoms))
    with pytest.raises(Exception, match="format"):
        ChemistryNovelty.from_dict({"format": "other"})


@pytest.fixture
def registered(tmp_path, monkeypatch, tiny_model, summary):
    """A manifest with model "tiny" (H O Cu) and its uncertainty sidecar."""
    model = save_model(tiny_model(elements=ELEMENTS), tmp_path / "tiny.safetensors")
    summary.save(tmp_path / "tiny-uncertainty.json")
    entry = {"file": model.name, "sha256": sha256_file(model), "elements": ["H", "O", "Cu"],
             "uncertainty": {"method": METHOD, "threshold": 1.3, "file": "tiny-uncertainty.json",
                             "sha256": sha256_file(tmp_path / "tiny-uncertainty.json")}}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format_version": 1, "models": {"tiny": entry}}))
    monkeypatch.setenv("TDN_MANIFEST", str(manifest))
    return tmp_path


def test_sidecar_is_sha_checked(registered):
    path, record = uncertainty_sidecar("tiny")
    assert path.name == "tiny-uncertainty.json" and record["threshold"] == 1.3
    summary, threshold = for_model("tiny")
    assert threshold == 1.3 and summary.elements == ELEMENTS
    assert for_model("not-a-model") is None
    assert for_model(registered / "manifest.json") is None  # a file of no registered model
    with open(path, "a") as fh:
        fh.write(" ")
    with pytest.raises(CheckpointError, match="sha256"):
        uncertainty_sidecar("tiny")
    path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        uncertainty_sidecar("tiny")


def test_calculator_reports_uncertainty(registered, summary):
    atoms = slab_oh()
    atoms.calc = TDNCalculator("tiny", device="cpu", dtype="float64")
    atoms.get_potential_energy()
    scores = atoms.calc.results["uncertainty"]
    assert atoms.calc.uncertainty_threshold == 1.3
    np.testing.assert_allclose(scores, summary.score_atoms(atoms), atol=1e-5)
    np.testing.assert_array_equal(atoms.calc.results["uncertain"], scores > 1.3)
    off = TDNCalculator("tiny", device="cpu", uncertainty=False)
    atoms.calc = off
    atoms.get_potential_energy()
    assert "uncertainty" not in off.results and "uncertain" not in off.results
    by_path = TDNCalculator(str(registered / "tiny.safetensors"), device="cpu")
    assert by_path.uncertainty_threshold == 1.3 and by_path.novelty is not None
    explicit = TDNCalculator(str(registered / "tiny.safetensors"), device="cpu",
                             uncertainty=registered / "tiny-uncertainty.json")
    atoms.calc = explicit
    atoms.get_potential_energy()
    assert explicit.uncertainty_threshold == 1.0
    np.testing.assert_allclose(explicit.results["uncertainty"], scores, atol=1e-5)


def test_every_path_finds_the_same_summary(registered, summary, monkeypatch):
    """A calculator built from a loaded model object, one built from the name, and the
    relaxation job (which scores its frames itself, here for a model with no Mahalanobis
    summary in its card) flag the same atoms; an explicit threshold wins."""
    from ase.io import read, write
    from tdn_calc.cli.relax import main

    from tdn_calc.checkpoint import load_model

    atoms = slab_oh()
    flags = {}
    for key, calc in (("name", TDNCalculator("tiny", device="cpu")),
                      ("object", TDNCalculator(load_model("tiny", device="cpu")))):
        atoms.calc = calc
        atoms.get_potential_energy()
        assert calc.uncertainty_threshold == 1.3 and calc.novelty is not None
        flags[key] = calc.results["uncertain"]
    np.testing.assert_array_equal(flags["name"], flags["object"])
    assert TDNCalculator("tiny", device="cpu", uncertainty_threshold=0.1).uncertainty_threshold \
        == 0.1
    monkeypatch.chdir(registered)
    write("start.extxyz", atoms)
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["start.extxyz", "-m", "tiny", "--steps", "0",
                                       "--device", "cpu"])  # fmt: skip
    assert result.exit_code in (0, 3), result.output
    frame = read("start_relaxed.extxyz")
    np.testing.assert_allclose(frame.arrays["uncertainty"], summary.score_atoms(frame),
                               atol=1e-5)  # fmt: skip
    expected = summary.score_atoms(frame) > 1.3
    assert frame.info["extrapolating_atoms"] == int(expected.sum())
    assert bool(frame.info["uncertain"]) is bool(expected.any())


def test_shipped_catalysis_sidecar_loads():
    found = for_model("tdn-catalysis")
    assert found is not None
    summary, threshold = found
    assert threshold > 0
    assert set(summary.banks) == {1, 6, 7, 8, 27, 28, 29, 44, 45, 46, 47, 77, 78, 79}
