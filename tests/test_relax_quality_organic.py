"""benchmarks/relax_quality_organic.py: the judging helpers on hand-made structures, the
GFN2 reference and its cache on water, and (slow) a one-molecule end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import relax_quality_organic as rq
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

ROOT = Path(__file__).resolve().parent.parent

WATER_Z = np.array([8, 1, 1])
WATER_R = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])  # Å


def test_bonds_of_water_and_a_broken_bond():
    assert rq.bonds(WATER_Z, WATER_R) == {(0, 1), (0, 2)}  # H...H 1.52 Å is no bond
    stretched = WATER_R.copy()
    stretched[1, 0] = 1.3  # O-H beyond 1.2 x (0.66 + 0.31) = 1.16 Å
    broken = rq.bonds(WATER_Z, stretched)
    assert broken == {(0, 2)}
    assert rq.bond_changes(rq.bonds(WATER_Z, WATER_R), broken) == 1
    h2_on_o = WATER_R.copy()
    h2_on_o[2] = [0.96, 0.7, 0.0]  # the two H 0.7 Å apart: an H-H bond appears
    assert (1, 2) in rq.bonds(WATER_Z, h2_on_o)


def test_bonds_of_an_etkdg_conformer_match_the_rdkit_graph():
    from rdkit import Chem

    start = rq.make_start("CC(=O)Nc1ccc(O)cc1", seed=0, perturb=0.1)
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1"))
    graph = {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in mol.GetBonds()}
    assert rq.bonds(start.numbers, start.conformer) == graph


def test_make_start_is_seeded_and_noise_has_the_asked_sigma():
    a = rq.make_start("CCCCCCCCO", seed=3, perturb=0.1)
    b = rq.make_start("CCCCCCCCO", seed=3, perturb=0.1)
    c = rq.make_start("CCCCCCCCO", seed=4, perturb=0.1)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)
    assert np.std(a.positions - a.conformer) == pytest.approx(0.1, rel=0.25)
    assert rq.make_start("not a smiles", seed=0, perturb=0.1) is None


def test_delta_e_and_the_signed_success_criterion():
    assert rq.delta_e_mev(-10.0, -10.003, 3) == pytest.approx(1.0)
    assert rq.passes(0.5, True)
    assert rq.passes(1.0, True)  # the threshold itself passes
    assert rq.passes(-7.0, True)  # a lower minimum than GFN2's own is no failure
    assert not rq.passes(1.01, True)
    assert not rq.passes(0.1, False)  # bonding changed
    assert not rq.passes(None, True)  # GFN2 failed at the TDN minimum
    assert not rq.passes(math.nan, True)


def _row(de, kept=True, status="judged", **kw):
    row = {"status": status, "delta_e_meV_atom": de, "bonds_kept_tdn": kept,
           "bonds_kept_gfn2": True, "start_bonds_perturbed": 0, "gfn2_fmax_at_tdn_min": 0.1,
           "tdn_converged": True, "ref_converged": True, "tdn_steps": 50}
    row.update(kw)
    row["success"] = rq.passes(de, kept)
    return row


def test_summarize_counts_and_rate():
    rows = [_row(0.2), _row(-3.0), _row(0.9, kept=False), _row(5.0), _row(None),
            {"status": "embed_failed", "smiles": "x"}]
    s = rq.summarize(rows)
    assert s["n_judged"] == 5
    assert s["n_success"] == 2 and s["success_rate"] == pytest.approx(0.4)
    assert not s["meets_target"]
    assert s["n_within_threshold"] == 3
    assert s["n_lower_than_reference"] == 1 and s["n_lower_by_more_than_threshold"] == 1
    assert s["n_bonds_changed_tdn"] == 1 and s["n_gfn2_failed_at_tdn_min"] == 1
    assert s["delta_e_meV_atom_max"] == pytest.approx(5.0)
    assert s["skipped"] == {"embed_failed": 1}
    assert rq.summarize([_row(0.0)] * 19 + [_row(2.0)])["meets_target"]  # exactly 95 %
    assert "| n_success | 2 |" in rq.markdown(s, {"total": 1.0})


def test_pick_cache_key_and_model_tag():
    ids = ["C", "CC", "CCC", "CCCC", "CC"]
    assert rq.pick(ids, 0) == rq.pick(list(reversed(ids)), 0)
    assert sorted(rq.pick(ids, 0)) == ["C", "CC", "CCC", "CCCC"]
    keys = {rq.cache_key("CCO", 0, 0.1), rq.cache_key("CCO", 1, 0.1),
            rq.cache_key("CCO", 0, 0.2), rq.cache_key("CCN", 0, 0.1)}
    assert len(keys) == 4 and rq.cache_key("CCO", 0, 0.1) in keys
    assert rq.model_tag("tdn-organic") == "tdn-organic"
    assert rq.model_tag("runs/tdn-catalysis/best.safetensors") == "tdn-catalysis-best"


def test_mace_relaxer_needs_a_split_file_and_names_its_output(capsys):
    with pytest.raises(SystemExit):
        rq.parse_args(["--relaxer", "mace", "--model", "m.model"])
    assert "--split-file" in capsys.readouterr().err
    args = rq.parse_args(["--relaxer", "mace", "--model", "x/mace.model", "--split-file", "s"])
    assert args.out.endswith("relax_quality_organic_mace-mace.json")
    assert args.optimizer == "fire"  # the MACE relaxer runs ASE's FIRE
    val = rq.parse_args(["--model", "runs/x/best.safetensors", "--split", "val"])
    assert val.out.endswith("relax_quality_organic_x-best-val.json")
    assert set(rq.RELAXERS) == {"tdn", "mace"}
    with pytest.raises(SystemExit):
        rq.parse_args(["--relaxer", "mace", "--model", "m", "--split-file", "s",
                       "--optimizer", "bfgs"])


class _Harmonic(Calculator):
    """E = 0.5 k |x - x0|^2 eV (x in Å): a toy 'reference method' with its minimum at x0."""

    implemented_properties = ("energy", "forces")

    def __init__(self, x0: np.ndarray, k: float = 1.0):
        super().__init__()
        self.x0, self.k = x0, k

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = atoms.positions - self.x0
        self.results = {"energy": 0.5 * self.k * float((d**2).sum()), "forces": -self.k * d}


def test_judge_passes_the_minimum_and_fails_a_broken_bond():
    ref = {"smiles": "O", "numbers": WATER_Z.tolist(), "conformer": WATER_R.tolist(),
           "start": WATER_R.tolist(), "minimum": WATER_R.tolist(), "energy": 0.0, "fmax": 0.0,
           "steps": 0, "converged": True, "seconds": 0.0}
    calc = _Harmonic(WATER_R)
    frame = Atoms(numbers=WATER_Z, positions=WATER_R + 0.01, info={"converged": True})
    row = rq.judge(ref, frame, {"fmax": 0.04, "time": 0.1, "energy": 0.0}, calc)
    # 0.5 * 9 * 1e-4 eV / 3 atoms = 0.15 meV/atom
    assert row["delta_e_meV_atom"] == pytest.approx(0.15)
    assert row["success"] and row["bonds_kept_tdn"]
    assert row["gfn2_fmax_at_tdn_min"] == pytest.approx(0.01 * math.sqrt(3))
    broken = WATER_R.copy()
    broken[1, 0] = 1.3
    bad = rq.judge(ref, Atoms(numbers=WATER_Z, positions=broken), None, calc)
    assert not bad["bonds_kept_tdn"] and not bad["success"]
    missing = rq.judge(ref, None, None, calc)
    assert missing["delta_e_meV_atom"] is None and not missing["success"]


def test_oracle_relaxes_the_start_with_the_reference_and_is_cached(tmp_path):
    """The oracle is the reference method run with the model's optimizer and fmax: on a soft
    surface (k = 0.2 eV/Å^2) FIRE stops at fmax 0.05 above the minimum."""
    start = WATER_R + np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.2, 0.0]])
    ref = {"smiles": "O", "numbers": WATER_Z.tolist(), "conformer": WATER_R.tolist(),
           "start": start.tolist(), "minimum": WATER_R.tolist(), "energy": 0.0, "fmax": 0.0,
           "steps": 0, "converged": True, "seconds": 0.0}
    soft = _Harmonic(WATER_R, k=0.2)
    oracle = rq.cached_oracle(ref, "k", tmp_path, soft, "fire", 0.05)
    assert oracle["converged"] and oracle["steps"] > 0
    assert 1e-6 < oracle["energy"] < 0.5 * 0.2 * (1.0 + 1.44)  # downhill, not at the minimum
    assert (tmp_path / "k-oracle-fire-0.05.json").is_file()
    assert rq.cached_oracle(ref, "k", tmp_path, None, "fire", 0.05) == oracle  # cached
    tight = rq.cached_oracle(ref, "k", tmp_path, soft, "bfgs", 0.001)
    assert tight["energy"] < oracle["energy"]
    frame = Atoms(numbers=WATER_Z, positions=np.array(oracle["minimum"]))
    row = rq.judge(ref, frame, None, soft, oracle)
    assert row["oracle_delta_e_meV_atom"] == pytest.approx(row["delta_e_meV_atom"])
    assert row["oracle_success"] == row["success"]
    summary = rq.summarize([row])
    assert summary["oracle_n_judged"] == 1
    assert summary["oracle_n_success"] == int(row["oracle_success"])


def test_gfn2_reference_of_water_and_its_cache(tmp_path):
    pytest.importorskip("tblite")
    start = rq.Start("O", WATER_Z, WATER_R, WATER_R + np.array([[0, 0, 0], [0.1, 0, 0],
                                                                [0, 0, 0]]))
    calc = rq.gfn2_calculator()
    with rq.single_thread():
        rec, cached = rq.cached_reference(start, "k", tmp_path, calc)
        e_start, _ = rq.gfn2_point(calc, start.numbers, start.positions)
        again, cached_again = rq.cached_reference(start, "k", tmp_path, calc)
    assert not cached and cached_again and again == rec
    assert rec["converged"] and rec["fmax"] <= rq.REF_FMAX
    assert rec["energy"] < e_start
    assert json.loads((tmp_path / "k.json").read_text())["start"] == start.positions.tolist()


@pytest.mark.slow
def test_end_to_end_one_molecule(tmp_path, monkeypatch):
    """The real run on one test molecule with the registered model (needs the data set)."""
    data = ROOT / "datasets" / "organic-gfn2"
    if not data.is_dir():
        pytest.skip("datasets/organic-gfn2 is not here")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out.json"
    argv = ["--n", "1", "--data", str(data), "--cache", str(tmp_path / "cache"),
            "--out", str(out)]
    rq.main(argv)
    doc = json.loads(out.read_text())
    (row,) = [r for r in doc["rows"] if r["status"] == "judged"]
    assert math.isfinite(row["delta_e_meV_atom"]) and row["ref_converged"]
    assert row["success"] == rq.passes(row["delta_e_meV_atom"], row["bonds_kept_tdn"])
    assert doc["timings_s"]["n_reference_computed"] == 1
    assert row["oracle_delta_e_meV_atom"] is not None and doc["settings"]["optimizer"] == "auto"
    rq.main(argv)  # the second run reuses the cached GFN2 minimum
    assert json.loads(out.read_text())["timings_s"]["n_reference_computed"] == 0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a subprocess in the peers' environment
def test_mace_relaxer_end_to_end(tmp_path):
    """``--relaxer mace`` relaxes in the peers' environment and is judged like TDN (a tiny
    random MACE: only the plumbing is under test; needs the data set and the peers' venv)."""
    import subprocess

    from peers.env import DEFAULT_VENV, venv_python

    data = ROOT / "datasets" / "organic-gfn2"
    split = ROOT / "runs" / "organic-candidates" / "split.json"
    python = venv_python(DEFAULT_VENV)
    if not (data.is_dir() and split.is_file() and python.exists()):
        pytest.skip("needs datasets/organic-gfn2, the candidates' split and benchmarks/.venv-peers")
    model = tmp_path / "tiny.model"
    code = ("import sys, torch; "
            "torch.serialization.add_safe_globals([slice]); from peer_server import "
            "build_mace; _, m, _ = build_mace({'elements': [1, 6, 7, 8, 9, 15, 16, 17, 35], "
            "'num_interactions': 1, 'hidden_irreps': '8x0e', 'max_ell': 1, 'correlation': 1, "
            "'r_max': 5.0}); torch.save(m, sys.argv[1])")
    subprocess.run([str(python), "-c", code, str(model)], cwd=ROOT / "benchmarks" / "peers",
                   check=True, capture_output=True)  # python -c imports from its cwd
    out = tmp_path / "out.json"
    rq.main(["--relaxer", "mace", "--model", str(model), "--split-file", str(split), "--n", "1",
             "--data", str(data), "--cache", str(tmp_path / "cache"), "--out", str(out)])
    doc = json.loads(out.read_text())
    assert doc["settings"]["relaxer"] == "mace" and doc["model"]["kind"] == "MACE"
    (row,) = [r for r in doc["rows"] if r["status"] == "judged"]
    assert row["tdn_steps"] >= 0 and row["tdn_seconds"] is not None
    assert row["tdn_converged"] == (row["tdn_fmax"] < 0.05)  # ASE FIRE's own criterion
    assert row["success"] == rq.passes(row["delta_e_meV_atom"], row["bonds_kept_tdn"])
