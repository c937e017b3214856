"""tdn-relax --plot: one PNG per run with energy and fmax against step per structure."""

from __future__ import annotations

import pytest
import torch
from ase.io import write
from click.testing import CliRunner
from relax_testing import one_thread, rattled_molecules  # noqa: F401
from tdn_calc.cli.relax import main

from tdn_calc.checkpoint import save_model
from tdn_calc.plotting import plot_relaxations


@pytest.fixture
def workdir(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "models": {}}')
    monkeypatch.setenv("TDN_MANIFEST", str(tmp_path / "manifest.json"))
    save_model(tiny_model(dtype=torch.float32, energy_scale=5.0), tmp_path / "tiny.safetensors")
    write(tmp_path / "mols.xyz", rattled_molecules(("CH3CH2OH", "H2O", "CH4")), format="extxyz")
    return tmp_path


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_default_name(workdir):
    result = CliRunner().invoke(main, ["mols.xyz", "-m", "tiny.safetensors", "--plot"],
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    png = workdir / "mols_relaxed.png"
    assert png.exists() and png.stat().st_size > 10_000
    width, height = _png_size(png)
    assert width > 500 and height > 500
    assert "plot of 3 relaxation(s)" in result.output


def test_plot_explicit_name_with_polish(workdir):
    args = ["mols.xyz", "-m", "tiny.safetensors", "--plot", "run.png", "--polish",
            "--batch-size", "1", "--steps", "2000"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (workdir / "run.png").exists() and not (workdir / "mols_relaxed.png").exists()
    bad = CliRunner().invoke(main, ["mols.xyz", "-m", "tiny.safetensors", "--plot", "mols.xyz"])
    assert bad.exit_code == 1 and "--plot" in bad.output


def test_plot_relaxations_library(tmp_path):
    histories = [("a", [0.0, -0.1, -0.15], [1.0, 0.1, 0.01]), ("empty", [], [])]
    out = plot_relaxations(histories, tmp_path / "p.png", 0.05, polish_fmax=0.001)
    assert out.exists() and _png_size(out)[0] > 0
