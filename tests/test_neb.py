"""`tdn neb` and run_neb with EMT: H hop fcc -> hcp on Pt(111)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import read, write
from click.testing import CliRunner
from relax_testing import one_thread  # noqa: F401
from tdn_calc.cli.main import main

from tdn_calc.errors import InputError
from tdn_calc.neb import run_neb


def endpoint(site: str):
    slab = fcc111("Pt", size=(2, 2, 2), vacuum=6.0, a=3.92)
    slab.pbc = (True, True, False)
    add_adsorbate(slab, "H", 1.0, site)
    slab.info.pop("adsorbate_info", None)
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 2]))
    return slab


def test_cli_h_hop_climbing_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write("ini.extxyz", endpoint("fcc"))
    write("fin.extxyz", endpoint("hcp"))
    before = (tmp_path / "ini.extxyz").read_bytes()
    args = ["neb", "ini.extxyz", "fin.extxyz", "-n", "5", "--climb", "-m", "emt",
            "--fmax", "0.03", "-o", "path.extxyz"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ini.extxyz").read_bytes() == before
    frames = read(tmp_path / "path.extxyz", index=":")
    assert len(frames) == 5
    doc = json.loads((tmp_path / "path.json").read_text())
    png = (tmp_path / "path.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    energies = np.array(doc["energies_eV"])
    np.testing.assert_allclose(energies, [f.get_potential_energy() for f in frames], atol=1e-9)
    assert doc["converged"] and doc["climb"]
    assert 0.0 < doc["barrier_eV"] < 0.5  # EMT's H hop on Pt(111) is nearly flat (~0.01 eV)
    assert abs(doc["reaction_energy_eV"]) < 0.01  # fcc and hcp are almost degenerate in EMT
    top = doc["highest_image"]
    assert 0 < top < 4 and doc["barrier_eV"] == pytest.approx(energies[top] - energies[0])
    # smooth: rises to the single maximum, then falls
    assert (np.diff(energies[: top + 1]) > -1e-4).all() and (np.diff(energies[top:]) < 1e-4).all()
    # the climbing image sits at the saddle: its true force along the path is ~0, while the
    # images beside it are pushed downhill along the path
    tangent = frames[top + 1].positions - frames[top - 1].positions
    tangent /= np.linalg.norm(tangent)
    along = [float((f.get_forces() * tangent).sum()) for f in frames]
    assert abs(along[top]) < 0.03
    assert along[top - 1] < -1e-3 and along[top + 1] > 1e-3
    assert "barrier" in result.output and "climbing" in result.output


def test_run_neb_linear_vs_idpp_and_errors():
    ini, fin = endpoint("fcc"), endpoint("hcp")
    res = run_neb(ini, fin, EMT, n_images=3, fmax=0.05, steps=200)
    assert len(res.images) == 3 and res.barrier > 0 and res.distances[-1] > 1.0
    with pytest.raises(InputError, match="same atoms"):
        run_neb(ini, fin[:-1], EMT)
    with pytest.raises(InputError, match="at least 3"):
        run_neb(ini, fin, EMT, n_images=2)
