"""``teacher.policy: finish`` in screening campaigns: the shipped tdn-catalysis model is the
student, EMT the teacher, H on a 2x2x3 Pt(111) slab at the four distinct sites. Every
assertion rests on what the teacher decides (its own max force), on the recorded labels and
counts, or on the rule of ``finish_when`` (the student's flags), never on how close the
student comes to EMT."""

from __future__ import annotations

import ase.db
import numpy as np
import pytest
from ase.calculators.emt import EMT
from campaign_helpers import tiny_spec
from helpers import catalysis_manifest

from tdn_calc.campaigns import SpecError, parse_spec, run_campaign, summarize, table

FMAX = 0.05  # eV/Å
STEPS = 100


def spec_data(**teacher) -> dict:
    """H on the tiny Pt(111) slab, distinct sites only, tdn-catalysis, EMT with ``teacher``
    keys (policy, finish_when)."""
    return tiny_spec(
        model="tdn-catalysis",
        adsorbates=["H"],
        placement={"random": 0},
        relax={"fmax": FMAX, "steps": STEPS, "batch_size": 8},
        teacher={"name": "emt", **teacher},
    )


def emt_fmax(row) -> float:
    """EMT's max force on a row's structure, fixed atoms excluded, eV/Å."""
    atoms = row.toatoms()
    atoms.calc = EMT()
    return float(np.linalg.norm(atoms.get_forces(apply_constraint=True), axis=1).max())


def rows(path) -> dict[str, object]:
    return {r.key: r for r in ase.db.connect(str(path)).select()}


def test_spec_finish_when():
    spec = parse_spec(spec_data(policy="finish"))
    assert spec.policy == "finish" and spec.finish_when == "uncertain"
    always = parse_spec(spec_data(policy="finish", finish_when="always"))
    assert always.hash() != spec.hash()
    assert parse_spec(spec_data(policy="verify")).finish_when == "uncertain"
    for bad in ({"policy": "verify", "finish_when": "always"},
                {"policy": "finish", "finish_when": "sometimes"}):  # fmt: skip
        with pytest.raises(SpecError, match=r"teacher\.finish_when"):
            parse_spec(spec_data(**bad))


def test_finish_always_ends_at_the_teachers_fmax_and_records_who_did_what(tmp_path):
    run_campaign(parse_spec(spec_data(policy="verify")), tmp_path / "v.db", progress=False)
    placements = [r for r in rows(tmp_path / "v.db").values() if r.kind == "placement"]
    assert len(placements) == 4
    for r in placements:  # the student's minima are no minima of the teacher
        assert r.relaxed_by == "student" and r.teacher_calls == 1
        assert r.teacher_fmax == pytest.approx(emt_fmax(r), rel=1e-6) and r.teacher_fmax > FMAX

    spec = parse_spec(spec_data(policy="finish", finish_when="always"))
    db = tmp_path / "finish.db"
    stats = run_campaign(spec, db, progress=False)
    done = rows(db)
    assert stats.written == len(done) == 6  # slab, H2, four placements
    assert stats.teacher_calls == sum(r.teacher_calls for r in done.values())
    for r in done.values():  # references too: the teacher's adsorption energies need them
        assert r.relaxed_by == "student+teacher" and r.energy_source == "teacher"
        assert r.teacher == "emt" and r.engine == "tdn-catalysis"
        assert emt_fmax(r) <= FMAX and r.teacher_fmax == pytest.approx(emt_fmax(r), rel=1e-6)
        assert r.student_steps + r.teacher_steps == r.steps and r.teacher_steps > 0
        assert r.teacher_calls == r.teacher_steps + 1  # one call per step and the start
        assert r.energy == pytest.approx(r.teacher_energy, abs=1e-9) and r.converged
        assert r.student_energy != pytest.approx(r.energy, abs=1e-3)
    slab, h2 = done["slab|Pt(111)"], done["gas|H2"]
    for r in (v for v in done.values() if v.kind == "placement"):
        assert r.e_ads == pytest.approx(r.teacher_e_ads, abs=1e-9)
        assert r.e_ads == pytest.approx(r.energy - slab.energy - 0.5 * h2.energy, abs=1e-6)
        assert r.student_e_ads == pytest.approx(
            r.student_energy - slab.student_energy - 0.5 * h2.student_energy, abs=1e-6
        )
    (summary,) = summarize(ase.db.connect(str(db)))
    assert summary.energy_source == "teacher"
    assert summary.teacher_calls == sum(r.teacher_calls for r in done.values()
                                        if r.kind == "placement")  # fmt: skip
    assert "teacher calls" in table([summary])

    again = run_campaign(spec, db, progress=False)  # resume: nothing left
    assert (again.written, again.skipped, again.teacher_calls) == (0, 6, 0)
    gone = ["Pt(111)|H|site-fcc", "Pt(111)|H|site-ontop"]
    ase.db.connect(str(db)).delete([done[k].id for k in gone])
    resumed = run_campaign(spec, db, progress=False)
    assert (resumed.written, resumed.skipped) == (2, 4)
    for key in gone:
        new = rows(db)[key]
        assert new.relaxed_by == "student+teacher" and emt_fmax(new) <= FMAX
        assert new.e_ads == pytest.approx(done[key].e_ads, abs=1e-3)


@pytest.mark.parametrize(("threshold", "flagged"), [(1e-6, True), (1e6, False)])
def test_finish_when_uncertain_follows_the_students_flags(tmp_path, monkeypatch, threshold,
                                                          flagged):  # fmt: skip
    """The registry's uncertainty threshold of tdn-catalysis decides its flags; a flagged
    (or unconverged) placement is finished, the others keep the student's energies. Clean
    slab and gas references are always finished."""
    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(tmp_path, threshold))
    spec = parse_spec(spec_data(policy="finish"))
    db = tmp_path / "c.db"
    stats = run_campaign(spec, db, progress=False)
    done = rows(db)
    assert all(done[k].relaxed_by == "student+teacher" for k in ("slab|Pt(111)", "gas|H2"))
    placements = [r for r in done.values() if r.kind == "placement"]
    assert len(placements) == 4 and all(r.uncertain is flagged for r in placements)
    for r in placements:
        finished = r.uncertain or not r.student_converged
        assert r.relaxed_by == ("student+teacher" if finished else "student")
        if finished:
            assert r.energy_source == "teacher" and emt_fmax(r) <= FMAX
            assert r.e_ads == pytest.approx(r.teacher_e_ads, abs=1e-9)
        else:
            assert r.energy_source == "student" and r.teacher_calls == 0
            assert r.teacher_steps == 0 and r.get("teacher_e_ads") is None
            assert r.e_ads == pytest.approx(r.student_e_ads, abs=1e-9)
            assert r.energy == pytest.approx(r.student_energy, abs=1e-6)
    assert stats.teacher_calls == sum(r.teacher_calls for r in done.values())


def test_a_teacher_missing_an_element_is_refused_before_any_relaxation(tmp_path):
    data = {**spec_data(policy="finish"), "adsorbates": ["H"]}
    data["surfaces"] = [{**data["surfaces"][0], "element": "Ir", "lattice_constant": 3.84}]
    with pytest.raises(SpecError, match="'emt' does not cover Ir"):
        run_campaign(parse_spec(data), tmp_path / "c.db", progress=False)
    assert ase.db.connect(str(tmp_path / "c.db")).count() == 0
