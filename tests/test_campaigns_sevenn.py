"""Slow suite: ``tdn screen`` and ``tdn distill`` with SevenNet-0, the teacher of the shipped
tdn-catalysis, for real (skipped without sevenn). As small as they go: H (and O) on a
2x2x3 / 2x2x2 Pt(111) slab, one or two placements, fmax 0.1 eV/Å, few steps.

As in tests/test_campaign_finish.py every assertion rests on what the teacher decides (its
own energies and max forces, recomputed here), on the recorded labels and counts, never on
how close the student comes to the teacher (only on its H minima not being SevenNet-0's at
0.1 eV/Å)."""

from __future__ import annotations

import json

import ase.db
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TEACHER = "sevenn-0"
FMAX = 0.1  # eV/Å
SLAB = {"element": "Pt", "facet": "111", "size": "2x2", "layers": 3, "fixed_layers": 1,
        "lattice_constant": 3.97}  # SevenNet-0 (PBE) Pt: 3.97 Å


@pytest.fixture(scope="module")
def sevenn():
    """SevenNet-0's ASE calculator (the campaigns' own, cached per process)."""
    pytest.importorskip("sevenn")
    from tdn_calc.campaigns.engine import calculator

    return calculator(TEACHER, "cpu")


def teacher_labels(row, calc) -> tuple[float, float]:
    """SevenNet-0's energy (eV) and max force (eV/Å, fixed atoms excluded) at a row's
    structure."""
    atoms = row.toatoms()
    atoms.calc = calc
    forces = atoms.get_forces(apply_constraint=True)
    return float(atoms.get_potential_energy()), float(np.linalg.norm(forces, axis=1).max())


def screen(tmp_path, name: str, **teacher) -> dict[str, object]:
    """``tdn screen`` of H on the slab (two random placements), tdn-catalysis as the
    student, SevenNet-0 with ``teacher`` keys; ``{key: row}``. The teacher calls it reports
    are those of the rows."""
    from tdn_calc.cli.main import main

    data = {"name": name, "model": "tdn-catalysis", "surfaces": [SLAB], "adsorbates": ["H"],
            "placement": {"sites": False, "random": 2, "seed": 0},
            "relax": {"fmax": FMAX, "steps": 100, "batch_size": 4},
            "teacher": {"name": TEACHER, **teacher}}  # fmt: skip
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(data))
    db = tmp_path / f"{name}.db"
    result = CliRunner().invoke(main, ["screen", str(spec), "--db", str(db), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "4 rows written" in result.output  # slab, H2, two placements
    rows = {r.key: r for r in ase.db.connect(str(db)).select()}
    assert f"{sum(r.teacher_calls for r in rows.values())} teacher calls" in result.output
    return rows


@pytest.mark.timeout(900)
def test_screen_finish_always_ends_at_sevenn_minima(tmp_path, sevenn):
    rows = screen(tmp_path, "finish", policy="finish", finish_when="always")
    for r in rows.values():  # references too: the teacher's E_ads needs its own references
        energy, fmax = teacher_labels(r, sevenn)
        assert r.relaxed_by == "student+teacher" and r.energy_source == "teacher", r.key
        assert r.teacher == TEACHER and r.engine == "tdn-catalysis" and r.converged, r.key
        assert fmax <= FMAX and r.teacher_fmax == pytest.approx(fmax, abs=1e-4), r.key
        assert r.energy == pytest.approx(energy, abs=1e-4), r.key  # SevenNet-0's energy
        assert r.energy == pytest.approx(r.teacher_energy, abs=1e-9), r.key
        # one call per teacher step and the start (0 steps where the student's minimum
        # already is one of the teacher's, as H2's can be at this fmax)
        assert r.teacher_calls == r.teacher_steps + 1, r.key
        assert r.student_steps + r.teacher_steps == r.steps, r.key
    slab, h2 = rows["slab|Pt(111)"], rows["gas|H2"]
    placements = [r for r in rows.values() if r.kind == "placement"]
    assert len(placements) == 2
    # SevenNet-0 moved H on from the student's minima (its fmax there: ~0.6 and ~2 eV/Å)
    assert all(r.teacher_steps > 0 for r in placements)
    for r in placements:  # E_ads is the teacher's, from the teacher's references
        assert r.e_ads == pytest.approx(r.teacher_e_ads, abs=1e-9)
        assert r.e_ads == pytest.approx(r.energy - slab.energy - 0.5 * h2.energy, abs=1e-6)
        assert r.student_e_ads == pytest.approx(
            r.student_energy - slab.student_energy - 0.5 * h2.student_energy, abs=1e-6)


@pytest.mark.timeout(900)
def test_screen_verify_gives_sevenn_energies(tmp_path, sevenn):
    from tdn_calc.relax.teacher import default_verify_fmax

    rows = screen(tmp_path, "verify", policy="verify")
    for r in rows.values():  # one single point at the student's minimum, nothing moved
        energy, fmax = teacher_labels(r, sevenn)
        assert r.relaxed_by == "student" and r.energy_source == "student", r.key
        assert r.teacher == TEACHER and r.teacher_calls == 1 and r.teacher_steps == 0, r.key
        assert r.teacher_energy == pytest.approx(energy, abs=1e-4), r.key
        assert r.teacher_fmax == pytest.approx(fmax, abs=1e-4), r.key
        assert r.energy == pytest.approx(r.student_energy, abs=1e-6), r.key
        assert r.verified is (r.teacher_fmax <= default_verify_fmax(FMAX)), r.key
    slab, h2 = rows["slab|Pt(111)"], rows["gas|H2"]
    for r in (v for v in rows.values() if v.kind == "placement"):
        assert r.teacher_e_ads == pytest.approx(
            r.teacher_energy - slab.teacher_energy - 0.5 * h2.teacher_energy, abs=1e-6)
        assert r.e_ads == pytest.approx(r.student_e_ads, abs=1e-9)


@pytest.mark.timeout(900)
def test_distill_from_sevenn_registers_a_loadable_model(tmp_path, monkeypatch, sevenn):
    """Two rounds (seed, then one exploration) fine-tuning tdn-catalysis a few steps on H
    and O on a 2x2x2 Pt(111) slab, one placement each: one pair trained on, the other held
    out (tdn-catalysis knows its element)."""
    from tdn_calc.cli.main import main

    from tdn_calc import TDNCalculator
    from tdn_calc.distill import DistillState, load_distill_spec
    from tdn_calc.distill.label import clean_slabs, split_placements
    from tdn_calc.registry import model_entry

    data = {"name": "pt-h-o", "surfaces": [{**SLAB, "layers": 2}], "adsorbates": ["H", "O"],
            "placement": {"sites": False, "random": 1, "seed": 0},
            "relax": {"fmax": FMAX, "steps": 4, "batch_size": 4},
            "distill": {"init_from": "tdn-catalysis",
                        "seed": {"placements": 1, "rattle": 1, "strain": 1, "fmax": FMAX,
                                 "steps": 10},
                        "loop": {"rounds": 2, "frames_per_round": 1, "train_steps": 4},
                        "train": {"batch_size": 4, "lr": 0.005}, "holdout": 0.5,
                        "agreement": {"energy": 1e-9, "fmax": 1e-9}}}  # fmt: skip
    spec_file = tmp_path / "d.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["distill", str(spec_file), "--teacher", TEACHER,
                                       "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "pt-h-o-distilled" and summary["stop_reason"] == "rounds"
    state = DistillState.load(out / "state.json")
    assert state.stage == "done" and state.teacher == TEACHER
    assert [r["round"] for r in state.history] == [0, 1]
    assert all(r["frames_added"] > 0 and r["teacher_calls"] > 0 for r in state.history)
    assert summary["teacher_calls"] == state.teacher_calls
    assert state.history[-1]["agreement"]["n"] == 1  # the held-out pair's one placement

    manifest = out / "manifest.json"
    entry = model_entry("pt-h-o-distilled", manifest)
    assert entry["distill"]["teacher"] == TEACHER and "SevenNet-0" in entry["reference_method"]
    spec = load_distill_spec(spec_file, teacher=TEACHER)
    (held,) = split_placements(spec, clean_slabs(spec)).holdout
    monkeypatch.setenv("TDN_MANIFEST", str(manifest))  # the user's registry, alone
    calc = TDNCalculator("pt-h-o-distilled", device="cpu")
    atoms = held.atoms.copy()
    atoms.rattle(0.05, seed=1)  # a structure the loop never saw
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    assert np.isfinite(atoms.get_forces()).all()
    assert calc.results["uncertainty"].shape == (len(atoms),)
