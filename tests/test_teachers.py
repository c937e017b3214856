"""The teacher registry (tdn_calc.teachers) and ``tdn teachers list``."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from click.testing import CliRunner

from tdn_calc import teachers
from tdn_calc.errors import InputError
from tdn_calc.teachers import (
    KNOWN_TEACHERS,
    canonical_teacher_name,
    get_teacher,
    list_teachers,
    missing_elements,
    teacher_reference_method,
    teacher_spec,
    teacher_table,
    with_teacher_kwargs,
)

_EXTRAS = {"sevenn-0": "sevennet", "7net-mf-0": "sevennet", "chgnet": "chgnet",
           "gfn2-xtb": "xtb", "gpaw-pbe": "gpaw"}


def test_names_and_aliases_resolve_to_one_teacher():
    assert len(set(map(str.lower, KNOWN_TEACHERS))) == len(KNOWN_TEACHERS)
    for spec in list_teachers():
        for alias in (spec.name, *spec.aliases):
            assert teacher_spec(alias.upper()) is spec
            assert canonical_teacher_name(f" {alias} ") == spec.name
    assert canonical_teacher_name("SevenNet-0") == canonical_teacher_name("7net-0") == "sevenn-0"
    assert teacher_spec("xtb").extra == "xtb" and teacher_spec("gpaw").name == "gpaw-pbe"
    assert {"sevenn-0", "7net-l3i5", "chgnet", "gfn2-xtb", "gpaw-pbe", "emt"} <= {
        s.name for s in list_teachers()}


def test_unknown_teacher_lists_the_known_names():
    with pytest.raises(InputError, match="unknown teacher 'nonsense'") as err:
        get_teacher("nonsense")
    for name in ("sevenn-0", "chgnet", "gfn2-xtb", "gpaw-pbe", "emt", "package.module:factory"):
        assert name in str(err.value)


def test_json_kwargs_in_the_name_are_canonical():
    assert (canonical_teacher_name('7net-mf-0{"modal": "R2SCAN"}')
            == canonical_teacher_name(' 7NET-MF-0 { "modal":"R2SCAN" }')
            == '7net-mf-0{"modal": "R2SCAN"}')
    with pytest.raises(InputError, match="not JSON"):
        canonical_teacher_name("emt{oops")
    with pytest.raises(InputError, match="JSON object"):
        teachers.parse_teacher_kwargs("[1, 2]")


@pytest.fixture
def nothing_installed(monkeypatch):
    """find_spec says the teacher packages are absent (whatever is installed)."""
    real = importlib.util.find_spec
    absent = {"sevenn", "chgnet", "tblite", "gpaw"}

    def fake(name, *args, **kwargs):
        return None if name.partition(".")[0] in absent else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


@pytest.mark.parametrize("name", sorted(_EXTRAS))
def test_missing_package_names_the_extra(nothing_installed, name):
    spec = teacher_spec(name)
    assert not spec.installed
    with pytest.raises(InputError, match=rf'pip install "tdn-calc\[{_EXTRAS[name]}\]"'):
        get_teacher(name)
    row = next(r for r in teacher_table() if r["name"] == spec.name)
    assert row["installed"] is False and _EXTRAS[name] in row["missing"]


def test_gpaw_error_says_how_to_build_it(nothing_installed):
    with pytest.raises(InputError, match="libxc-dev") as err:
        get_teacher("gpaw")
    assert "CC=g++ pip install gpaw gpaw-data" in str(err.value)


def test_missing_weights_are_not_downloaded(monkeypatch, tmp_path):
    monkeypatch.setattr(teachers, "_package_dir", lambda name: tmp_path)
    monkeypatch.setattr(teachers, "_WEIGHT_CACHES",
                        {"sevenn": ("pretrained_potentials", tmp_path / "cache")})
    monkeypatch.setattr(teachers, "_has_module", lambda name: True)
    assert not teacher_spec("7net-l3i5").installed
    with pytest.raises(InputError, match=r"not on disk.*does not download"):
        get_teacher("7net-l3i5")


def test_import_path_teacher_with_kwargs_and_device():
    assert isinstance(get_teacher("ase.calculators.emt:EMT"), EMT)
    lj = get_teacher('helpers:lj_teacher{"sigma": 2.0}', device="cuda:1", epsilon=0.1)
    assert (lj.parameters.sigma, lj.parameters.epsilon, lj.device) == (2.0, 0.1, "cuda:1")
    assert canonical_teacher_name("helpers:lj_teacher") == "helpers:lj_teacher"
    assert "not DFT" in teacher_reference_method("helpers:lj_teacher")
    with pytest.raises(InputError, match="cannot import"):
        get_teacher("no_such_module_xyz:Calc")
    with pytest.raises(InputError, match="not an ASE calculator"):
        get_teacher("collections:OrderedDict")
    with pytest.raises(InputError, match="rejected its arguments"):
        get_teacher("helpers:lj_teacher", bogus=1)


def test_emt_teacher_computes_cu():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = get_teacher("emt")
    reference = bulk("Cu", "fcc", a=3.6, cubic=True)
    reference.calc = EMT()
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy())
    assert np.isfinite(atoms.get_stress()).all()


def test_reference_methods_keep_their_wording():
    method = teacher_reference_method("7net-0")
    assert method.startswith("SevenNet-0 (sevenn ") and method.endswith(
        "), PBE-level universal potential — distilled data, not DFT")
    assert "not DFT" in teacher_reference_method("emt")
    assert teacher_reference_method("gpaw").startswith("PBE DFT (GPAW ")


def test_element_coverage():
    assert missing_elements("sevenn-0", ["Pt", "O", "Po", "Rn"]) == ["Po", "Rn"]
    assert missing_elements("emt", ["Cu", "Fe", "O"]) == ["Fe"]
    assert missing_elements("gpaw-pbe", ["Fe"]) == []  # coverage unknown


def test_cli_teachers_list():
    from tdn_calc.cli.main import main

    result = CliRunner().invoke(main, ["teachers", "list"])
    assert result.exit_code == 0, result.output
    assert "sevenn-0" in result.output and "installed" in result.output
    assert "gpaw-pbe" in result.output and "package.module:factory" in result.output
    result = CliRunner().invoke(main, ["teachers", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    emt = next(r for r in rows if r["name"] == "emt")
    assert emt["installed"] is True and emt["extra"] is None
    assert {r["name"] for r in rows} == {s.name for s in list_teachers()}


class _FakeGPAW(EMT):
    """Stands in for gpaw.GPAW: EMT energies, remembers its arguments."""

    made: ClassVar[list[dict]] = []

    def __init__(self, **kwargs):
        super().__init__()
        _FakeGPAW.made.append(kwargs)


@pytest.fixture
def fake_gpaw(monkeypatch):
    module = types.ModuleType("gpaw")
    module.__spec__ = importlib.machinery.ModuleSpec("gpaw", None)
    module.GPAW = _FakeGPAW
    module.PW = lambda ecut: ("pw", ecut)
    monkeypatch.setitem(sys.modules, "gpaw", module)
    _FakeGPAW.made.clear()
    return _FakeGPAW.made


def test_gpaw_teacher_defaults(fake_gpaw):
    atoms = bulk("Ni", "fcc", a=3.52) * (2, 1, 1)
    atoms.set_initial_magnetic_moments([0.0, 0.0])  # ase's bulk() would start them at 0.6
    atoms.calc = get_teacher("gpaw")
    energy = atoms.get_potential_energy()
    assert np.isfinite(energy) and atoms.get_stress().shape == (6,)
    (made,) = fake_gpaw
    assert made["mode"] == ("pw", 500.0) and made["xc"] == "PBE"
    assert made["kpts"] == {"density": 3.5, "gamma": True} and made["txt"] is None
    atoms.rattle(0.01, seed=1)
    atoms.get_forces()
    assert len(fake_gpaw) == 1  # positions only: the GPAW object is reused
    spun = atoms.calc.with_spin(atoms)
    assert spun.get_initial_magnetic_moments().tolist() == [1.0, 1.0]
    assert made["mixer"]["method"] == "difference"  # spin-polarised: the gentle mixer
    cu = atoms.calc.with_spin(bulk("Cu"))
    assert not cu.get_initial_magnetic_moments().any()
    own = bulk("Ni", "fcc", a=3.52)  # moments given by the user are kept
    assert atoms.calc.with_spin(own).get_initial_magnetic_moments().tolist() == [0.6]
    get_teacher('gpaw{"cutoff": 400, "kpts": [2, 2, 2]}').get_potential_energy(bulk("Cu"))
    assert fake_gpaw[-1]["mode"] == ("pw", 400) and fake_gpaw[-1]["kpts"] == [2, 2, 2]
    assert "mixer" not in fake_gpaw[-1]  # Cu: not spin-polarised, GPAW's own mixer
    with pytest.raises(InputError, match="vacuum"):
        get_teacher("gpaw").get_potential_energy(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))


def test_sevennet_0_single_point():
    pytest.importorskip("sevenn")
    if not teacher_spec("sevenn-0").installed:
        pytest.skip(teacher_spec("sevenn-0").missing)
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = get_teacher("7net-0")
    assert -5.0 < atoms.get_potential_energy() < -3.0  # ~ -4.1 eV/atom
    assert np.abs(atoms.get_forces()).max() < 1e-3


def test_gfn2_xtb_single_point():
    pytest.importorskip("tblite")
    atoms = molecule("H2O")
    atoms.calc = get_teacher("gfn2-xtb")
    assert atoms.get_potential_energy() == pytest.approx(-137.97, abs=0.1)  # eV, tblite docs
    assert atoms.get_forces().shape == (3, 3)


def test_chgnet_single_point():
    pytest.importorskip("chgnet")
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = get_teacher("chgnet")
    assert -5.0 < atoms.get_potential_energy() < -3.0  # -4.08 eV
    assert np.abs(atoms.get_forces()).max() < 1e-3


def test_teacher_kwargs_option_joins_the_name(tmp_path):
    from tdn_calc.cli.main import main

    assert with_teacher_kwargs("emt", None) == "emt"
    assert (with_teacher_kwargs('7net-mf-0{"modal": "PBE"}', '{"modal": "R2SCAN", "a": 1}')
            == '7net-mf-0{"a": 1, "modal": "R2SCAN"}')
    result = CliRunner().invoke(main, ["data", "build", "catalysis", "--out", str(tmp_path),
                                       "--teacher", "emt", "--teacher-kwargs", "{oops"])
    assert result.exit_code == 1 and "not JSON" in result.output


@pytest.mark.slow
def test_gpaw_pbe_forces_match_energy_and_finish_lands_on_the_pbe_bond():
    """Real PBE (GPAW) on H2 in a box: force = -dE/dx by central differences, and a
    tdn-organic relaxation finished by GPAW ends at PBE's bond length (0.75 Å)."""
    pytest.importorskip("gpaw")
    from tdn_calc import TDNCalculator, relax

    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.80]])
    h2.center(vacuum=3.0)
    teacher = with_teacher_kwargs("gpaw-pbe", {"cutoff": 300})
    calc = get_teacher(teacher)

    def energy(bond: float) -> float:
        work = h2.copy()
        work.positions[1, 2] = work.positions[0, 2] + bond
        work.calc = calc
        return work.get_potential_energy()

    work = h2.copy()
    work.calc = calc
    force = work.get_forces()[1, 2]  # on the upper atom, along the bond
    h = 0.01
    assert force == pytest.approx(-(energy(0.80 + h) - energy(0.80 - h)) / (2 * h), abs=0.02)
    assert force < -0.5  # stretched: pulled back
    result = relax(h2, TDNCalculator("tdn-organic", device="cpu"), fmax=0.02, finish=teacher,
                   finish_when="always", warn=False)
    assert result.engine == "student+teacher" and result.converged
    assert result.atoms.get_distance(0, 1) == pytest.approx(0.75, abs=0.01)
