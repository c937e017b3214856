"""Pure parts of benchmarks/accuracy.py: H5 -> extxyz export, budget bookkeeping, metrics,
the MACE argument mapping and the report table."""

from __future__ import annotations

import ast

import numpy as np
import pytest
from accuracy import (
    fit_cost,
    frames_for_budget,
    frames_to_atoms,
    mace_train_args,
    markdown_table,
    parse_time_output,
    reference_arrays,
    relax_table,
    replace_doc_section,
    seeded_subset,
    write_extxyz,
)
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from tdn_calc.evaluation.metrics import prediction_metrics


@pytest.fixture
def h5_dataset(tmp_path):
    """Three labelled molecules (random energies / forces) imported as a tdn data set."""
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.data.importers import import_ase

    rng = np.random.default_rng(3)
    frames = []
    for n in (3, 5, 4):
        atoms = Atoms(numbers=rng.choice([1, 6, 8], n), positions=rng.normal(size=(n, 3)) * 2)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal() * 10),
                                           forces=rng.normal(size=(n, 3)))
        frames.append(atoms)
    src = tmp_path / "mols.extxyz"
    write(src, frames, format="extxyz")
    import_ase([src], tmp_path / "h5", reference_method="test", group="frame")
    return H5Dataset(tmp_path / "h5"), frames


def test_export_round_trip_keeps_energies_forces_in_mace_keys(h5_dataset, tmp_path):
    dataset, frames = h5_dataset
    atoms_list = frames_to_atoms(dataset, [2, 0])
    path = tmp_path / "out" / "test.xyz"
    write_extxyz(path, atoms_list)
    back = read(path, index=":")
    assert [len(a) for a in back] == [len(dataset[2]["atomic_numbers"]), len(frames[0])]
    for atoms, i in zip(back, [2, 0], strict=True):
        ref = dataset[i]
        assert atoms.info["REF_energy"] == pytest.approx(ref["energy"], abs=1e-5)
        np.testing.assert_allclose(atoms.arrays["REF_forces"], ref["forces"], atol=1e-5)
        np.testing.assert_allclose(atoms.positions, ref["positions"], atol=1e-6)
        np.testing.assert_array_equal(atoms.numbers, ref["atomic_numbers"])
        assert not atoms.pbc.any() and atoms.info["frame_index"] == i
    energy, forces, n_atoms = reference_arrays(back)
    assert energy.shape == (2,) and n_atoms.tolist() == [len(a) for a in back]
    assert [f.shape for f in forces] == [(len(a), 3) for a in back]
    assert not list(path.parent.glob(".*tmp"))  # atomic write left no temporary file


def test_seeded_subset_is_sorted_reproducible_and_capped():
    idx = np.arange(100, 200)
    a, b = seeded_subset(idx, 10, 0), seeded_subset(idx, 10, 0)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a) > 0) and set(a) <= set(idx)
    assert not np.array_equal(a, seeded_subset(idx, 10, 1))
    np.testing.assert_array_equal(seeded_subset(idx[::-1], 500, 0), idx)


def test_time_output():
    out = parse_time_output("log...\ncpu_user=1.0 cpu_sys=0.0 wall=9\ncpu_user=10.5 "
                            "cpu_sys=1.5 wall=30.25\n")
    assert out == {"cpu_user_s": 10.5, "cpu_sys_s": 1.5, "cpu_s": 12.0, "wall_s": 30.25}
    with pytest.raises(RuntimeError, match="no /usr/bin/time"):
        parse_time_output("Killed")


def test_budget_from_calibration_line():
    a, b = fit_cost([150, 450], [40.0 + 0.1 * 150, 40.0 + 0.1 * 450])
    assert a == pytest.approx(40.0) and b == pytest.approx(0.1)
    assert frames_for_budget(260.0, a, b, available=10_000) == 2200
    assert frames_for_budget(260.0, a, b, available=1000) == 1000
    assert frames_for_budget(10.0, a, b, available=1000) == 1
    with pytest.raises(ValueError, match="two different"):
        fit_cost([100, 100], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        frames_for_budget(100.0, 1.0, 0.0, 10)


def test_prediction_metrics_per_atom_energy_and_force_components():
    ref_f = [np.zeros((2, 3)), np.zeros((4, 3))]
    pred_f = [np.full((2, 3), 0.1), np.full((4, 3), -0.1)]
    m = prediction_metrics([1.0, -2.0], pred_f, [0.0, 0.0], ref_f, [2, 4])
    assert m["n_frames"] == 2
    assert m["energy_mae_meV_atom"] == pytest.approx(500.0)  # |1/2|, |-2/4| eV/atom
    assert m["forces_mae_meV_A"] == pytest.approx(100.0)
    assert m["forces_rmse_meV_A"] == pytest.approx(100.0)


def test_mace_arguments_mirror_the_tdn_config(tmp_path):
    cfg = {"batch_size": 8, "lr": 2e-3, "ema_decay": 0.99, "grad_clip": 10.0,
           "energy_weight": 100.0, "forces_weight": 10.0}
    args = mace_train_args(tmp_path / "run", tmp_path / "tr.xyz", tmp_path / "va.xyz",
                           {1: -13.9, 6: -58.1}, cfg, seed=0)
    opts = dict(zip(args[::2], args[1::2], strict=False))
    flat = " ".join(args)
    assert "--loss weighted --energy_weight 100.0 --forces_weight 10.0" in flat
    assert "--batch_size 8" in flat and "--lr 0.002" in flat
    assert "--energy_key REF_energy --forces_key REF_forces" in flat
    assert opts["--train_file"] == str(tmp_path / "tr.xyz")
    i = args.index("--E0s")
    assert ast.literal_eval(args[i + 1]) == {1: -13.9, 6: -58.1}  # as MACE parses it
    assert args[args.index("--atomic_numbers") + 1] == "[1, 6]"
    assert args[args.index("--max_num_epochs") + 1] == "1"


def test_markdown_table_marks_best_and_missing_speed():
    rows = [
        {"model": "TDN a", "params": 1000, "train_cpu_s": 260.4, "frames_seen": 14400,
         "energy_mae_meV_atom": 17.0, "forces_mae_meV_A": 160.0, "forces_rmse_meV_A": 420.0,
         "infer_ms": 12.3},
        {"model": "MACE", "params": 2000, "train_cpu_s": 255.0, "frames_seen": 5000,
         "energy_mae_meV_atom": 20.0, "forces_mae_meV_A": 150.0, "forces_rmse_meV_A": 430.0,
         "infer_ms": None},
    ]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[2].count("|")
    assert "**17.0**" in lines[2] and "**420.0**" in lines[2] and "| 12.3 |" in lines[2]
    assert "**150.0**" in lines[3] and lines[3].endswith("| - |") and "5,000" in lines[3]


def test_relax_table_lists_each_model():
    summary = {"n_judged": 50, "n_success": 9, "success_rate": 0.18,
               "delta_e_meV_atom_median": 3.214, "delta_e_meV_atom_p95": 20.0,
               "n_bonds_changed_tdn": 1, "n_tdn_converged": 50, "tdn_steps_median": 71.0}
    doc = {"summary": summary, "timings_s": {"tdn_relax_wall": 12.3}}
    lines = relax_table({"TDN l1c64": doc, "MACE": doc}).splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert lines[2].startswith("| TDN l1c64 | 50 | 9 (18%) | 3.21 | 20.0 | 1 | 50 | 71 | 12 |")


def test_doc_section_replaced_in_place_or_appended():
    text = "# T\n\n## A\n\nold a\n\n## B\n\nb\n"
    new = replace_doc_section(text, "A", "new a")
    assert new == "# T\n\n## A\n\nnew a\n\n## B\n\nb\n"
    assert replace_doc_section(new, "A", "new a") == new
    added = replace_doc_section(text, "C", "c")
    assert added.endswith("## B\n\nb\n\n## C\n\nc\n")
