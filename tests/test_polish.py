"""Float64 polish: relax(..., polish=True) and tdn-relax --polish continue a converged
float32 relaxation in float64 down to polish_fmax."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.io import read, write
from click.testing import CliRunner
from relax_testing import morse_checkpoints, one_thread, rattled_molecules  # noqa: F401
from tdn_calc.cli.relax import main

from tdn_calc.calculator import TDNCalculator
from tdn_calc.checkpoint import save_model
from tdn_calc.errors import InputError
from tdn_calc.relax import relax


def test_polish_reaches_tight_fmax_in_float64(tiny_model):
    model = tiny_model((1, 6, 8, 29), dtype=torch.float32, energy_scale=50.0)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=0)
    calc = TDNCalculator(model)
    plain = relax(cu, calc, fmax=0.05)
    res = relax(cu, calc, fmax=0.05, polish=True, polish_fmax=0.001)
    assert plain.converged and plain.fmax > 0.001  # the float32 stage alone stops at 0.05
    assert res.converged and res.fmax < 0.001
    assert res.n_steps > plain.n_steps and len(res.fmaxs) == len(plain.fmaxs) + (
        res.n_steps - plain.n_steps + 1
    )
    assert res.fmaxs[: len(plain.fmaxs)] == plain.fmaxs
    assert next(calc.model.parameters()).dtype == torch.float32  # the caller's model untouched
    # the final forces come from float64: recomputing them in float64 agrees to round-off
    check = TDNCalculator(tiny_model((1, 6, 8, 29), dtype=torch.float64, energy_scale=50.0))
    np.testing.assert_allclose(check.get_forces(res.atoms), res.atoms.get_forces(), atol=1e-10)


def test_polish_with_emt_and_errors():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)
    slab.rattle(0.05, seed=1)
    res = relax(slab, EMT(), fmax=0.05, polish=True, polish_fmax=0.001)
    assert res.converged and res.fmax < 0.001
    with pytest.raises(InputError, match="polish_fmax"):
        relax(slab, EMT(), fmax=0.05, polish=True, polish_fmax=0.1)


def test_polish_not_run_when_first_stage_fails():
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    slab.rattle(0.2, seed=2)
    with pytest.warns(UserWarning, match="not converged"):
        res = relax(slab, EMT(), fmax=0.05, steps=2, polish=True)
    assert not res.converged and res.n_steps == 2 and "max steps" in res.reason


@pytest.mark.parametrize("batch_size", ["32", "1"])
@pytest.mark.usefixtures("morse_checkpoints")  # converging to 0.001 is the toy's job
def test_cli_polish(tmp_path, tiny_model, monkeypatch, batch_size):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TDN_MANIFEST", str(tmp_path / "manifest.json"))
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "models": {}}')
    save_model(tiny_model(dtype=torch.float32, energy_scale=5.0), tmp_path / "tiny.safetensors")
    write(tmp_path / "mols.xyz", rattled_molecules(("H2O", "CH4")), format="extxyz")
    args = ["mols.xyz", "-m", "tiny.safetensors", "--polish", "--polish-fmax", "0.001",
            "--batch-size", batch_size, "--report", "r.json", "--steps", "2000"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for frame in read(tmp_path / "mols_relaxed.extxyz", index=":"):
        assert frame.info["converged"] and frame.info["fmax"] < 0.001
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["polish"] is True and report["settings"]["polish_fmax"] == 0.001
    bad = CliRunner().invoke(main, ["mols.xyz", "-m", "tiny.safetensors", "--polish",
                                    "--polish-fmax", "0.1"])  # fmt: skip
    assert bad.exit_code == 2 and "--polish-fmax" in bad.output


@pytest.mark.slow
def test_float32_stalls_where_float64_polish_converges():
    """Realistic-size random model (lmax 2, 64 channels, 3 layers, forces ~1 eV/Å at 0.1 Å
    rattle): float32 FIRE cannot reach 1e-6 eV/Å in 3000 steps (its force noise is ~3e-6
    eV/Å), the float64 polish gets there in ~150 steps."""
    from tdn_calc.nn.config import TDNConfig
    from tdn_calc.nn.model import TDNModel

    torch.manual_seed(0)
    model = TDNModel(TDNConfig(elements=[1, 6, 7, 8, 29, 78], energy_scale=200.0)).eval()
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.1, seed=2)
    f32 = relax(cu, TDNCalculator(model, dtype="float32"), fmax=1e-6, steps=3000, warn=False)
    pol = relax(cu, TDNCalculator(model, dtype="float32"), fmax=0.05, steps=3000, polish=True,
                polish_fmax=1e-6)  # fmt: skip
    assert not f32.converged and min(f32.fmaxs) > 1e-6
    assert pol.converged and pol.fmax < 1e-6
