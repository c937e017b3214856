"""End to end at tiny scale: build a molecule set with GFN2-xTB, `tdn train`, `tdn eval`,
then load the trained model with TDNCalculator; plus config validation errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from tdn_calc.cli.main import main

from tdn_calc.errors import ConfigError
from tdn_calc.train.config import config_from_dict, load_config
from tdn_calc.train.metrics_log import read_metrics

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_small" / "config.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _build_molecules(out: Path, smiles: list[str]) -> None:
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    out.parent.mkdir(parents=True, exist_ok=True)
    smi = out.parent / "tiny.smi"
    smi.write_text("\n".join(smiles) + "\n")
    result = CliRunner().invoke(main, [
        "data", "build", "molecules", "--out", str(out), "--n-molecules", str(len(smiles)),
        "--smiles-file", str(smi), "--subsample", "10", "--rattles-per-sigma", "1",
        "--bad-start-steps", "0", "--no-progress"])
    assert result.exit_code == 0, result.output


def _example_config(tmp_path: Path, **training) -> Path:
    """The example config shrunk to a tiny model and a few steps."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"].update(batch_size=4, val_max_frames=None, split_fractions=[0.34, 0.33, 0.33])
    raw["model"].update(lmax=1, channels=8, num_layers=1, num_heads=2, cutoff=4.0)
    raw["training"].update(epochs=1, warmup_steps=2, log_every_steps=2, num_threads=1,
                           **training)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_build_train_eval_load(tmp_path):
    from ase.build import molecule

    from tdn_calc.calculator import TDNCalculator

    _build_molecules(tmp_path / "data" / "molecules", ["CO", "CCO", "C=O"])  # all H, C, O
    config = _example_config(tmp_path, max_steps=6)
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(config)])
    assert result.exit_code == 0, result.output
    assert "training finished at step 6" in result.output
    run = tmp_path / "runs" / "small"
    model_path = run / "best.safetensors"
    assert model_path.exists() and (run / "metrics.csv").exists()
    # training again into the same directory without --resume is refused
    again = runner.invoke(main, ["train", str(config)])
    assert again.exit_code == 1 and "--resume" in again.output

    out_json = tmp_path / "eval.json"
    result = runner.invoke(main, ["eval", str(model_path), str(tmp_path / "data" / "molecules"),
                                  "--split", "test", "--json", str(out_json), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out_json.read_text())
    assert metrics == json.loads(result.output)
    assert metrics["n_frames"] > 0 and metrics["n_structures"] == 1
    assert metrics["split_file"] == str(run / "split.json")
    assert metrics["reference_method"] == metrics["model_reference_method"]
    for key in ("energy_mae_meV_atom", "forces_mae_meV_A", "forces_rmse_meV_A"):
        assert np.isfinite(metrics[key]) and metrics[key] > 0
    assert set(metrics["forces_mae_meV_A_per_element"]) <= {"H", "C", "O"}
    kinds = runner.invoke(main, ["eval", str(model_path), str(tmp_path / "data" / "molecules"),
                                 "--split", "test", "--by-kind", "--device", "cpu"])
    by_kind = json.loads(kinds.output)["by_frame_kind"]
    assert "relax" in by_kind and sum(m["n_frames"] for m in by_kind.values()) == metrics[
        "n_frames"]
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["forces_mae_meV_A"] == pytest.approx(metrics["forces_mae_meV_A"], rel=1e-4)

    atoms = molecule("CH3OH")
    atoms.calc = TDNCalculator(str(model_path), device="cpu")
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_forces().shape == (6, 3)
    assert atoms.calc.model.card["trained_on"]["reference_method"].startswith("GFN2")

    # --resume of a finished run does nothing more and says so
    result = runner.invoke(main, ["train", str(config), "--resume"])
    assert result.exit_code == 0 and "finished at step 6" in result.output


def test_eval_split_needs_a_split_file(tmp_path):
    from test_train_utils import write_emt_dataset

    from tdn_calc.checkpoint import save_model
    from tdn_calc.nn.config import TDNConfig
    from tdn_calc.nn.model import TDNModel

    data = write_emt_dataset(tmp_path / "data", n_frames=1)
    model = TDNModel(TDNConfig(elements=[1, 6, 7, 8, 29], lmax=1, channels=8, num_layers=1,
                               num_heads=2))
    path = save_model(model, tmp_path / "m.safetensors")
    result = CliRunner().invoke(main, ["eval", str(path), str(data), "--split", "test"])
    assert result.exit_code == 1 and "--split-file" in result.output
    result = CliRunner().invoke(main, ["eval", str(path), str(data), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_frames"] == 8


def test_example_config_is_valid():
    run = load_config(EXAMPLE)
    assert run.train.data_path == str((EXAMPLE.parent / "data" / "molecules").resolve())
    assert run.model["elements"] == "auto" and run.train.max_force == 50.0


@pytest.mark.parametrize(("patch", "message"), [
    ({"training": {"lr": -1}}, "training.lr must be > 0"),
    ({"training": {"learning_rate": 1}}, "unknown keys ['learning_rate'] in section 'training'"),
    ({"data": {"split_fractions": [0.5, 0.6, 0.1]}}, "split_fractions"),
    ({"model": {"elements": ["H", "Xx"]}}, "'Xx' is not an element"),
    ({"model": {"lmax": 9}}, "lmax must be in 0..6"),
    ({"model": {"width": 3}}, "unknown model keys ['width']"),
    ({"training": {"energy_scale": "median"}}, "energy_scale must be one of"),
    ({"optimizer": {}}, "unknown top-level config keys ['optimizer']"),
])
def test_config_errors_name_the_bad_value(patch, message):
    raw = {"output_dir": "out", "data": {"path": "data"}, "model": {"elements": ["H"]},
           "training": {}}
    for section, values in patch.items():
        raw.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError, match=None) as info:
        config_from_dict(raw)
    assert message in str(info.value)


def test_config_needs_data_and_output(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path"):
        config_from_dict({"output_dir": "x"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)



@pytest.mark.slow
@pytest.mark.timeout(1800)  # builders with 2 worker processes, then training
def test_example_walkthrough_at_full_size(tmp_path):
    """examples/train_small/README.md as written: 20 molecules, a short training, eval."""
    from ase.build import molecule

    from tdn_calc.calculator import TDNCalculator

    pytest.importorskip("tblite")
    runner = CliRunner()
    work = tmp_path / "train_small"
    shutil.copytree(EXAMPLE.parent, work, ignore=shutil.ignore_patterns("runs", "data"))
    result = runner.invoke(main, ["data", "build", "molecules", "--out",
                                  str(work / "data" / "molecules"), "--n-molecules", "20",
                                  "--workers", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["train", str(work / "config.yaml"), "--max-time", "240"])
    assert result.exit_code == 0, result.output
    run = work / "runs" / "small"
    rows = [r for r in read_metrics(run / "metrics.csv") if r["kind"] == "train"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    if "finished" not in result.output:  # stopped by --max-time: resume briefly
        result = runner.invoke(main, ["train", str(work / "config.yaml"), "--resume",
                                      "--max-time", "30"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["eval", str(run / "best.safetensors"),
                                  str(work / "data" / "molecules"), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_structures"] >= 1
    atoms = molecule("CH3CH2OH")
    atoms.calc = TDNCalculator(str(run / "best.safetensors"), device="cpu")
    assert np.isfinite(atoms.get_potential_energy())
