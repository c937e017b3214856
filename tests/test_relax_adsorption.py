"""Adsorption workflow: references, adsorbate orientation, sites, energies (EMT), tdn adsorb."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from ase.build import fcc111
from ase.calculators.emt import EMT
from ase.io import read, write
from click.testing import CliRunner
from relax_testing import one_thread  # noqa: F401
from tdn_calc.cli.main import main

from tdn_calc import adsorption
from tdn_calc.checkpoint import save_model
from tdn_calc.errors import InputError
from tdn_calc.relax import ConvergenceWarning, relax
from tdn_calc.slab import fix_bottom_layers


def test_reference_terms():
    ref = adsorption.reference_terms
    assert ref(adsorption.build_adsorbate("CO")) == {"CO": 1.0}
    assert ref(adsorption.build_adsorbate("O")) == {"O2": 0.5}
    assert ref(adsorption.build_adsorbate("H")) == {"H2": 0.5}
    assert ref(adsorption.build_adsorbate("OH")) == {"O2": 0.5, "H2": 0.5}
    assert ref(adsorption.build_adsorbate("CH3")) == {"CH4": 1.0, "H2": -0.5}
    with pytest.raises(InputError, match="Pt"):
        ref(adsorption.build_adsorbate("Pt"))


def test_adsorbate_binding_atom_first_and_pointing_up():
    co = adsorption.build_adsorbate("CO")
    assert co.get_chemical_symbols() == ["C", "O"]
    np.testing.assert_allclose(co.positions[0], 0.0, atol=1e-12)
    assert co.positions[1, 2] == pytest.approx(co.get_distance(0, 1))
    oh = adsorption.build_adsorbate("OH")
    assert oh.get_chemical_symbols() == ["O", "H"] and oh.positions[1, 2] > 0.9
    with pytest.raises(InputError, match="unknown adsorbate"):
        adsorption.build_adsorbate("XYZ123")


def test_slab_spec():
    slab = adsorption.build_slab("fcc111:Pt:2x2x3", vacuum=6)
    assert len(slab) == 12 and slab.pbc.tolist() == [True, True, False]
    for bad in ("fcc112:Pt:2x2x3", "fcc111:Pt:2x2", "fcc111:Pt:axbx3", "fcc111:Xx:2x2x3"):
        with pytest.raises(InputError):
            adsorption.build_slab(bad)


def test_sites_from_ase_and_from_pymatgen(tmp_path):
    slab = adsorption.build_slab("fcc111:Pt:2x2x3", vacuum=6)
    names = [s.name for s in adsorption.find_sites(slab)]
    assert names == ["ontop", "bridge", "fcc", "hcp"]
    top = slab.positions[slab.positions[:, 2] > slab.positions[:, 2].max() - 0.1]
    ontop = adsorption.find_sites(slab)[0]
    assert np.min(np.linalg.norm(top[:, :2] - ontop.xy, axis=1)) < 1e-6  # above a top atom
    write(tmp_path / "slab.extxyz", fcc111("Pt", size=(2, 2, 3), vacuum=6.0))
    from_file = adsorption.load_slab(tmp_path / "slab.extxyz")
    kinds = {s.name.split("_")[0] for s in adsorption.find_sites(from_file)}
    assert kinds == {"ontop", "bridge", "hollow"}


def _emt_relax_many(atoms_list):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return [relax(a, EMT(), fmax=0.05, steps=200) for a in atoms_list]


def test_o_on_pt111_with_emt():
    slab = adsorption.build_slab("fcc111:Pt:2x2x3", vacuum=6)
    fix_bottom_layers(slab, 1)
    o = adsorption.build_adsorbate("O")
    result = adsorption.adsorption_energies(slab, o, _emt_relax_many, sites=["ontop", "fcc"])
    assert result.converged
    by_site = {s.site: s for s in result.sites}
    assert set(by_site) == {"ontop", "fcc"}
    assert by_site["fcc"].adsorption_energy < by_site["ontop"].adsorption_energy < 0
    assert result.most_stable.site == "fcc"
    assert by_site["ontop"].final_site == "ontop"
    expected = by_site["fcc"].energy - result.slab_energy - 0.5 * result.references["O2"]
    assert by_site["fcc"].adsorption_energy == pytest.approx(expected)
    fixed = slab.constraints[0].get_indices()
    np.testing.assert_allclose(by_site["fcc"].atoms.positions[fixed], slab.positions[fixed])
    doc = result.to_dict()
    assert doc["most_stable"] == "fcc" and "atoms" not in doc["sites"][0]
    json.dumps(doc)
    with pytest.raises(InputError, match="unknown sites"):
        adsorption.adsorption_energies(slab, o, _emt_relax_many, sites=["hollow"])


def test_tdn_adsorb_cli_with_emt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["adsorb", "fcc111:Pt:2x2x3", "H", "-m", "emt", "--sites", "ontop,fcc", "-o", "out",
            "--vacuum", "6"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "most stable site" in result.output
    doc = json.loads((tmp_path / "out" / "adsorption.json").read_text())
    assert doc["reference_terms"] == {"H2": 0.5}
    assert [s["site"] for s in doc["sites"]] == ["ontop", "fcc"]
    assert (tmp_path / "out" / "adsorption.png").read_bytes()[:4] == b"\x89PNG"
    frames = read(tmp_path / "out" / "structures.extxyz", index=":")
    assert [f.info["role"] for f in frames] == ["slab", "H2", "site ontop", "site fcc"]


def test_tdn_adsorb_cli_with_a_tdn_model(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    save_model(tiny_model(elements=(1, 6, 8, 78), dtype=torch.float32), tmp_path / "m.safetensors")
    args = ["adsorb", "fcc111:Pt:2x2x2", "CO", "-m", "m.safetensors", "--steps", "3",
            "--fix-bottom-layers", "1", "--sites", "ontop"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code in (0, 3), result.output
    doc = json.loads((tmp_path / "adsorb_CO_fcc111_Pt_2x2x2" / "adsorption.json").read_text())
    assert doc["model"]["path"] == "m.safetensors" and len(doc["model"]["sha256"]) == 64
    assert np.isfinite(doc["sites"][0]["adsorption_energy"])
    bad = CliRunner().invoke(main, ["adsorb", "fcc111:Pt:2x2x3", "CO", "-m", "nope"])
    assert bad.exit_code == 2
