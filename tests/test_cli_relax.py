"""tdn-relax through click's runner (and once as a subprocess): formats, outputs, exit codes,
resume, interruption, report, slabs, batched vs one-by-one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase.build import fcc111
from ase.io import read, write
from click.testing import CliRunner
from relax_testing import (  # noqa: F401
    morse_checkpoints,
    one_thread,
    periodic_cho,
    rattled_molecules,
)
from tdn_calc.cli.relax import main

from tdn_calc.checkpoint import save_model
from tdn_calc.fileio import sha256_file
from tdn_calc.relax import job as relax_job


@pytest.fixture
def workdir(tmp_path, tiny_model, monkeypatch, request):
    """tmp_path as cwd with ``tiny.safetensors`` (H, C, O) and ``mols.xyz`` (3 molecules,
    the first with charge/spin in info); an empty model registry. In-process runs load the
    checkpoints for real but relax with the smooth ``MorsePairs`` toy (relax_testing): a
    random TDN model's relaxation is chaotic, and these tests are about the CLI."""
    request.getfixturevalue("morse_checkpoints")
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"format_version": 1, "models": {}}')
    monkeypatch.setenv("TDN_MANIFEST", str(manifest))
    save_model(tiny_model(dtype=torch.float32), tmp_path / "tiny.safetensors")
    mols = rattled_molecules(("CH3CH2OH", "H2O", "CH4"))
    mols[0].info.update(charge=1, spin=2)
    write(tmp_path / "mols.xyz", mols, format="extxyz")
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [*args, "-m", "tiny.safetensors"], catch_exceptions=False)


def test_defaults_write_extxyz_beside_input(workdir):
    before = (workdir / "mols.xyz").read_bytes()
    result = run("mols.xyz")
    assert result.exit_code == 0, result.output
    frames = read(workdir / "mols_relaxed.extxyz", index=":")
    assert len(frames) == 3
    for f in frames:
        assert f.info["converged"] is True
        assert f.info["fmax"] < 0.05 and f.info["n_steps"] >= 0
        assert f.get_forces().shape == (len(f), 3)
        assert np.isfinite(f.get_potential_energy())
    assert frames[0].info["charge"] == 1 and frames[0].info["spin"] == 2
    assert (workdir / "mols.xyz").read_bytes() == before
    assert "mols[2]" in result.stdout and "energy/eV" in result.stdout
    assert "3/3 structures: 3 converged, 0 not converged" in result.stdout


@pytest.mark.parametrize(
    ("name", "fmt", "periodic"),
    [
        ("in.xyz", "xyz", False),
        ("in.extxyz", "extxyz", True),
        ("in.cif", "cif", True),
        ("POSCAR", "vasp", True),
        ("in.traj", "traj", True),
        ("in.pdb", "proteindatabank", True),
    ],
)
def test_input_formats(workdir, name, fmt, periodic):
    atoms = periodic_cho(3) if periodic else rattled_molecules(("CH3OH",))[0]
    write(workdir / name, atoms, format=fmt)
    result = run(name, "--fmax", "0.1")
    assert result.exit_code == 0, result.output
    stem = name.rsplit(".", 1)[0]
    stem = stem.lower() if stem == "POSCAR" else stem  # ASE takes *POSCAR* names for VASP
    (out,) = read(workdir / f"{stem}_relaxed.extxyz", index=":")
    assert out.get_chemical_formula() == atoms.get_chemical_formula()
    assert out.pbc.tolist() == atoms.pbc.tolist()
    if periodic:
        assert out.get_stress().shape == (6,)


@pytest.mark.parametrize("output", ["out.traj", "out.cif", "CONTCAR", "sub/out.xyz"])
def test_output_formats(workdir, output):
    write(workdir / "bulk.extxyz", periodic_cho(4))
    result = run("bulk.extxyz", "-o", output, "--fmax", "0.1")
    assert result.exit_code == 0, result.output
    (out,) = read(workdir / output, index=":", format="vasp" if output == "CONTCAR" else None)
    assert len(out) == 8
    assert not (workdir / "bulk_relaxed.extxyz").exists()


def test_refuses_to_overwrite_an_input(workdir):
    before = (workdir / "mols.xyz").read_bytes()
    result = run("mols.xyz", "-o", "mols.xyz")
    assert result.exit_code == 1
    assert "also an input" in result.output
    for option in ("--report", "--trajectory"):
        result = run("mols.xyz", option, "./mols.xyz")
        assert result.exit_code == 1 and option in result.output
    assert (workdir / "mols.xyz").read_bytes() == before


def test_single_structure_format_for_many_is_refused(workdir):
    result = run("mols.xyz", "-o", "out.vasp")
    assert result.exit_code == 1
    assert "holds one structure" in result.output


def test_unconverged_exit_code_3_and_report(workdir):
    result = run("mols.xyz", "--steps", "2", "--fmax", "0.001", "--report", "r.json")
    assert result.exit_code == 3
    assert "not converged" in result.output and "target 0.001" in result.output
    report = json.loads((workdir / "r.json").read_text())
    assert report["counts"]["not_converged"] >= 2
    assert report["model"]["sha256"] == sha256_file(workdir / "tiny.safetensors")
    assert report["settings"]["steps"] == 2
    assert report["inputs"] == ["mols.xyz"]
    assert report["outputs"] == ["mols_relaxed.extxyz"]
    assert {"torch", "ase", "tdn_calc", "python"} <= set(report["versions"])
    assert {"load", "relax", "total"} <= set(report["timings_s"])
    assert report["interrupted"] is False
    rows = report["structures"]
    assert [r["structure"] for r in rows] == ["mols[0]", "mols[1]", "mols[2]"]
    for row in rows:
        assert row["steps"] <= 2 and row["atoms"] > 0
        assert row["optimizer"] == "BFGS"  # auto, small molecules
        if not row["converged"]:
            assert row["reason"] == "max steps (2) reached" and row["fmax"] > 0.001


def test_resume_skips_structures_in_the_output(workdir):
    assert run("mols.xyz").exit_code == 0
    out = workdir / "mols_relaxed.extxyz"
    frames = read(out, index=":")
    write(out, [frames[0], frames[2]])  # pretend structure 1 was not finished
    result = run("mols.xyz", "--resume", "--report", "r.json")
    assert result.exit_code == 0, result.output
    assert "2 structure(s) already in the output, 1 to relax" in result.output
    again = read(out, index=":")
    assert [f.info["tdn_index"] for f in again] == [0, 1, 2]
    np.testing.assert_array_equal(again[0].positions, frames[0].positions)
    report = json.loads((workdir / "r.json").read_text())
    assert [r["status"] for r in report["structures"]] == ["resumed", "relaxed", "resumed"]
    assert report["counts"]["resumed"] == 2


def test_ctrl_c_writes_finished_structures_and_partial_report(workdir, monkeypatch):
    real_run = relax_job.run

    def interrupted(records, *args, **kwargs):
        real_run(records[:1], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(relax_job, "run", interrupted)
    result = run("mols.xyz", "--report", "r.json")
    assert result.exit_code == 130
    assert "--resume" in result.output
    assert len(read(workdir / "mols_relaxed.extxyz", index=":")) == 1
    report = json.loads((workdir / "r.json").read_text())
    assert report["interrupted"] is True
    assert report["counts"]["finished"] == 1 and report["counts"]["unfinished"] == 2


def test_model_auto_without_registered_models_fails_clearly(workdir):
    result = CliRunner().invoke(main, ["mols.xyz"])
    assert result.exit_code == 1
    assert "no pretrained models are registered" in result.output
    assert "Traceback" not in result.output


def test_model_auto_picks_each_structures_own_model(workdir, tiny_model):
    """A molecule and a Pt slab given together: the molecule gets the default molecule model
    (not the one that happens to cover both), the slab the metal model."""
    models = {}
    for name, elements, default in (("metal", (1, 6, 8, 78), False),
                                    ("organic", (1, 6, 8), True)):
        path = save_model(tiny_model(elements=elements, dtype=torch.float32),
                          workdir / f"{name}.safetensors")
        models[name] = {"file": path.name, "sha256": sha256_file(path),
                        "elements": [{1: "H", 6: "C", 8: "O", 78: "Pt"}[z] for z in elements],
                        "default": default}
    (workdir / "manifest.json").write_text(json.dumps({"format_version": 1, "models": models}))
    slab = fcc111("Pt", size=(2, 2, 2), vacuum=6.0)
    slab.rattle(0.02, seed=1)
    slab.info.clear()  # fcc111's adsorbate_info does not fit extxyz
    write(workdir / "slab.xyz", slab, format="extxyz")
    result = CliRunner().invoke(main, ["mols.xyz", "slab.xyz", "--report", "r.json",
                                       "--steps", "3"], catch_exceptions=False)
    assert result.exit_code in (0, 3), result.output
    used = {m["name"]: m["structures"] for m in json.loads(
        (workdir / "r.json").read_text())["model"]["models"]}
    assert used == {"organic (auto)": ["mols[0]", "mols[1]", "mols[2]"],
                    "metal (auto)": ["slab"]}
    assert "--model auto: metal for 1 structure(s)" in result.output
    one = CliRunner().invoke(main, ["mols.xyz", "--report", "one.json", "--steps", "3"],
                             catch_exceptions=False)
    assert one.exit_code in (0, 3), one.output
    assert json.loads((workdir / "one.json").read_text())["model"]["name"] == "organic (auto)"


def test_unknown_model_name_is_a_usage_error(workdir):
    result = CliRunner().invoke(main, ["mols.xyz", "-m", "tdn-nonexistent"])
    assert result.exit_code == 2
    assert "unknown model 'tdn-nonexistent'" in result.output


def test_bad_inputs_are_clean_errors(workdir):
    (workdir / "broken.xyz").write_text("3\n\nC 0 0\n")
    for args in (["missing.xyz"], ["broken.xyz"]):
        result = run(*args)
        assert result.exit_code in (1, 2)
        assert "Traceback" not in result.output
    result = run("mols.xyz", "--fix-bottom-layers", "1", "--fix-below", "2.0")
    assert result.exit_code == 2 and "not both" in result.output


def _carbon_slab(pbc_z: bool):
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=7.0)
    slab.numbers[:] = 6
    slab.pbc = [True, True, pbc_z]
    slab.rattle(0.05, seed=0)
    return slab


def test_slab_fix_bottom_layers_and_vacuum_warning(workdir):
    slab = _carbon_slab(pbc_z=True)
    write(workdir / "slab.extxyz", slab)
    result = run("slab.extxyz", "--fix-bottom-layers", "2", "--fmax", "0.005")
    assert result.exit_code == 0, result.output
    assert "vacuum gap" in result.output and "[True, True, False]" in result.output
    (out,) = read(workdir / "slab_relaxed.extxyz", index=":")
    bottom = np.argsort(slab.positions[:, 2])[:8]
    np.testing.assert_allclose(out.positions[bottom], slab.positions[bottom], atol=1e-6)
    top = np.argsort(slab.positions[:, 2])[8:]
    assert np.abs(out.positions[top] - slab.positions[top]).max() > 1e-3


def test_fix_below(workdir):
    slab = _carbon_slab(pbc_z=False)
    write(workdir / "slab.extxyz", slab)
    z = np.sort(slab.positions[:, 2])[4] - 0.3  # below the second layer
    result = run("slab.extxyz", "--fix-below", str(z), "--fmax", "0.1", "--batch-size", "1")
    assert result.exit_code == 0, result.output
    (out,) = read(workdir / "slab_relaxed.extxyz", index=":")
    low = slab.positions[:, 2] < z
    assert low.sum() == 4
    np.testing.assert_allclose(out.positions[low], slab.positions[low], atol=1e-6)


def test_pbc_without_cell_is_an_error(workdir):
    atoms = rattled_molecules(("H2O",))[0]
    atoms.pbc = True
    write(workdir / "nocell.extxyz", atoms)
    result = run("nocell.extxyz")
    assert result.exit_code == 1 and "no lattice vector" in result.output


def test_cell_relaxation_and_trajectory(workdir):
    write(workdir / "bulk.extxyz", periodic_cho(5))
    result = run(
        "bulk.extxyz", "--cell-filter", "frechet", "--optimizer", "bfgs", "--fmax", "0.001",
        "--trajectory", "path.traj", "--steps", "30",
    )  # fmt: skip
    assert result.exit_code in (0, 3), result.output
    (out,) = read(workdir / "bulk_relaxed.extxyz", index=":")
    assert not np.allclose(out.cell.array, periodic_cho(5).cell.array)
    assert len(read(workdir / "path.traj", index=":")) >= 2


def test_batched_and_one_by_one_agree(workdir):
    assert run("mols.xyz", "--dtype", "float64", "-o", "a.extxyz").exit_code == 0
    single = run("mols.xyz", "--dtype", "float64", "-o", "b.extxyz", "--batch-size", "1")
    assert single.exit_code == 0
    for a, b in zip(read("a.extxyz", index=":"), read("b.extxyz", index=":"), strict=True):
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-3


@pytest.mark.timeout(300)
def test_subprocess_console_script(workdir):
    """The real random TDN model (a subprocess): whatever its numerics, -q prints nothing and
    every structure is written."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tdn_calc.cli.relax", "mols.xyz", "-m", "tiny.safetensors",
           "--steps", "1", "--fmax", "0.0001", "-q"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode in (0, 3), proc.stderr
    assert proc.stdout == ""
    assert len(read(workdir / "mols_relaxed.extxyz", index=":")) == 3
    light = subprocess.run(
        [sys.executable, "-c", "import sys, tdn_calc.cli.relax; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert light.stdout.strip() == "False"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_two_ranks_write_one_merged_output(workdir):
    import shutil

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    import socket

    with socket.socket() as sock:  # a free port: no clash with another run's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(port), "-m",
           "tdn_calc.cli.relax", "mols.xyz", "-m", "tiny.safetensors", "--report", "r.json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode in (0, 3), proc.stderr  # the random model's numerics decide
    frames = read(workdir / "mols_relaxed.extxyz", index=":")
    assert [f.info["tdn_index"] for f in frames] == [0, 1, 2]
    report = json.loads((workdir / "r.json").read_text())
    assert report["world_size"] == 2 and report["counts"]["finished"] == 3
    assert proc.stdout.count("3/3 structures") == 1  # only rank 0 prints


def test_bad_structure_and_unsupported_element_are_named(workdir):
    mols = rattled_molecules(("H2O", "NH3"))
    write(workdir / "bad.xyz", mols)
    result = run("bad.xyz")
    assert result.exit_code == 1
    assert "bad[1]" in result.output and "element N" in result.output
    close = rattled_molecules(("H2O",))[0]
    close.positions[1] = close.positions[0] + [0.1, 0, 0]
    write(workdir / "close.xyz", close)
    result = run("close.xyz")
    assert result.exit_code == 1 and "close" in result.output and "0.100 Å" in result.output


def test_sigterm_is_handled_like_ctrl_c(workdir, monkeypatch):
    import signal

    real_run = relax_job.run

    def terminated(records, *args, **kwargs):
        real_run(records[:2], *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(relax_job, "run", terminated)
    before = signal.getsignal(signal.SIGTERM)
    result = run("mols.xyz")
    assert result.exit_code == 130
    assert len(read(workdir / "mols_relaxed.extxyz", index=":")) == 2
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_finished_structures_are_saved_during_the_run(workdir, monkeypatch):
    saves = []
    real_write = relax_job.write_outputs
    monkeypatch.setattr(relax_job, "SAVE_EVERY_S", -1.0)

    def write_outputs(plans, outcomes):
        saves.append(len(outcomes))
        real_write(plans, outcomes)

    monkeypatch.setattr(relax_job, "write_outputs", write_outputs)
    assert run("mols.xyz").exit_code == 0
    assert saves == [1, 2, 3, 3]  # after each structure, then the final write


def test_limit_messages_name_slabs_thicker_than_a_model_knows():
    from ase.build import add_adsorbate, molecule

    from tdn_calc.relax.inputs import limit_messages
    from tdn_calc.structure_io import StructureRecord

    def record(layers):
        slab = fcc111("Pt", (2, 2, layers), vacuum=8.0)
        add_adsorbate(slab, molecule("CO")[::-1], 1.9, "ontop")  # C, O: no metal layers
        return StructureRecord(atoms=slab, source="s.xyz", index=layers, label=f"L{layers}")

    limits = {"max_slab_layers": 5, "note": "trained on 4-layer slabs"}
    messages = limit_messages([record(4), record(5), record(6)], limits)
    assert messages == ["L6: 6 metal layers, more than this model's 5 (trained on 4-layer slabs)"]
    assert limit_messages([record(6)], {}) == []
    from ase.build import bulk

    bulk_cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 8)  # periodic in 3D: not a slab
    assert limit_messages([StructureRecord(atoms=bulk_cu, source="b", index=0, label="b")],
                          limits) == []


def test_tdn_relax_warns_about_a_thick_slab_for_tdn_catalysis(tmp_path, monkeypatch):
    """The registered tdn-catalysis states max_slab_layers in the manifest; one layer more
    is warned about."""
    from tdn_calc.registry import list_models

    entry = {m["name"]: m for m in list_models()}.get("tdn-catalysis")
    if not entry or not entry.get("limits"):
        pytest.skip("tdn-catalysis with limits is not registered")
    monkeypatch.chdir(tmp_path)
    most = entry["limits"]["max_slab_layers"]
    write(tmp_path / "pt.xyz", fcc111("Pt", (2, 2, most + 1), a=3.98, vacuum=8.0))
    result = CliRunner().invoke(main, ["pt.xyz", "-m", "tdn-catalysis", "--steps", "0",
                                       "--device", "cpu"])  # fmt: skip
    assert f"{most + 1} metal layers, more than this model's {most}" in result.output


def test_limit_messages_name_elements_the_teacher_is_measured_wrong_for(tmp_path):
    """A measured teacher error (O on Ni) warns for O bound to Ni, not for O far from Ni
    or O on Pt; tools/record_teacher_errors.py writes the records from the benchmark."""
    import importlib.util
    import json
    from pathlib import Path

    from ase.build import add_adsorbate

    from tdn_calc.relax.inputs import limit_messages
    from tdn_calc.structure_io import StructureRecord

    tool = Path(__file__).parents[1] / "tools" / "record_teacher_errors.py"
    spec = importlib.util.spec_from_file_location("record_teacher_errors", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    record_errors = module.main
    result = {"teacher": "sevenn-0", "teacher_method": "SevenNet-0 (test)", "commit": "abc1234",
              "pairs": [{"metal": "Ni", "adsorbate": "OH", "facet": "111", "site": "fcc",
                         "e_ads_teacher": 6.0, "e_ads_pbe": 0.4, "error": 5.6, "wrong": True},
                        {"metal": "Pt", "adsorbate": "O", "facet": "111", "site": "fcc",
                         "e_ads_teacher": 1.0, "e_ads_pbe": 1.1, "error": -0.1,
                         "wrong": False}]}  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps(result))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format_version": 1, "models": {
        "a": {"name": "a", "reference_method": "SevenNet-0 (test)"},
        "b": {"name": "b", "reference_method": "GFN2-xTB"}}}))  # fmt: skip
    assert record_errors([str(tmp_path / "r.json"), "--manifest", str(manifest)]) == 0
    models = json.loads(manifest.read_text())["models"]
    assert "limits" not in models["b"]
    errors = models["a"]["limits"]["teacher_errors"]
    assert [(e["metal"], e["element"], e["error_eV"]) for e in errors] == [("Ni", "O", 5.6)]

    def record(metal, height):
        slab = fcc111(metal, (2, 2, 3), vacuum=8.0)
        add_adsorbate(slab, "O", height, "fcc")
        return StructureRecord(atoms=slab, source="s.xyz", index=0, label=f"{metal}-{height}")

    limits = models["a"]["limits"]
    bound, far, other = record("Ni", 1.2), record("Ni", 4.0), record("Pt", 1.2)
    messages = limit_messages([bound, far, other], limits)
    assert len(messages) == 1 and messages[0].startswith("Ni-1.2: O bound to Ni")
    assert "binds OH on Ni 5.60 eV too weakly against PBE" in messages[0]
    assert "sevenn-0" in messages[0]


def test_a_teacher_that_desorbs_the_adsorbate_is_named_as_not_binding_it(tmp_path):
    """A pair whose teacher relaxation left the surface (``teacher_desorbs``) warns that the
    teacher does not bind it, not a signed binding error measured at an unbound geometry."""
    import importlib.util
    import json
    from pathlib import Path

    from ase.build import add_adsorbate

    from tdn_calc.relax.inputs import limit_messages
    from tdn_calc.structure_io import StructureRecord

    tool = Path(__file__).parents[1] / "tools" / "record_teacher_errors.py"
    spec = importlib.util.spec_from_file_location("record_teacher_errors", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = {"teacher": "sevenn-0", "teacher_method": "SevenNet-0 (test)", "commit": "abc1234",
              "pairs": [{"metal": "Ni", "adsorbate": "O", "facet": "111", "site": "fcc",
                         "e_ads_teacher": 5.4, "e_ads_pbe": 6.0, "error": -0.6, "wrong": True,
                         "teacher_desorbs": True}]}  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps(result))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format_version": 1, "models": {
        "a": {"name": "a", "reference_method": "SevenNet-0 (test)"}}}))  # fmt: skip
    assert module.main([str(tmp_path / "r.json"), "--manifest", str(manifest)]) == 0
    limits = json.loads(manifest.read_text())["models"]["a"]["limits"]
    assert limits["teacher_errors"][0]["desorbs"] is True
    slab = fcc111("Ni", (2, 2, 3), vacuum=8.0)
    add_adsorbate(slab, "O", 1.2, "fcc")
    (message,) = limit_messages([StructureRecord(atoms=slab, source="s.xyz", index=0,
                                                 label="ni")], limits)  # fmt: skip
    assert "does not bind O on Ni at all" in message and "too strongly" not in message


def test_empty_string_info_does_not_swallow_the_energy_in_extxyz(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    from tdn_calc.structure_io import write_structures

    atoms = fcc111("Pt", (2, 2, 2), vacuum=5.0)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5, forces=np.zeros((len(atoms), 3)))
    atoms.info.update(note="kept", uncertain_signals="", blank="\t")  # last, as relax writes
    write_structures(tmp_path / "out.extxyz", [atoms])
    back = read(tmp_path / "out.extxyz")
    assert back.get_potential_energy() == pytest.approx(-1.5)
    assert back.info["note"] == "kept" and "uncertain_signals" not in back.info
    assert "blank" not in back.info
    assert atoms.info["uncertain_signals"] == ""  # the caller's structure is untouched
