"""benchmarks/finish_quality.py: its starts, the judge and the summary (pure parts), and one
start end to end with EMT as teacher and a tiny random student (labels and costs only)."""

from __future__ import annotations

import pytest
from finish_quality import (
    MODES,
    build_start,
    judge,
    run_start,
    starts,
    summarize,
    summarize_flag,
)


def test_starts_cover_known_and_new_chemistry():
    full = starts()
    assert {s.chemistry for s in full} == {"known", "new"}
    assert {(s.metal, s.facet) for s in full if s.chemistry == "known"} == {("Pt", "111"),
                                                                            ("Cu", "111")}
    assert {s.adsorbate for s in full} >= {"CO", "O", "H", "COOH", "NNH"}
    assert len(starts(quick=True)) == 2 and len(starts(seeds=2)) == 2 * len(full)
    assert len({s.label for s in starts(seeds=2)}) == 2 * len(full)


def test_build_start_places_the_adsorbate_on_its_site():
    from finish_quality import describe

    for start in starts():
        atoms, n_metal = build_start(start)
        assert len(atoms) > n_metal and atoms.constraints
        site, _ = describe(atoms, n_metal)
        assert site != "desorbed", start.label


def test_judge_same_minimum_and_a_different_one():
    start = starts(quick=True)[0]  # CO on top of Pt(111)
    ref, n_metal = build_start(start)
    assert judge(-1.00, ref, -1.02, ref, n_metal).same_minimum
    assert not judge(-0.90, ref, -1.02, ref, n_metal).same_minimum  # 120 meV higher
    moved = ref.copy()
    moved.positions[n_metal:] += moved.cell[0] / 4 + moved.cell[1] / 4  # off the top site
    verdict = judge(-1.02, moved, -1.02, ref, n_metal)
    assert not verdict.same_site and not verdict.same_minimum
    broken = ref.copy()
    broken.positions[n_metal + 1, 2] += 1.5  # C-O bond broken
    assert not judge(-1.02, broken, -1.02, ref, n_metal).bonds_kept


def test_summarize_fractions_and_relative_calls():
    cases = (("known", "teacher", True, 100), ("new", "teacher", True, 100),
             ("known", "uncertain", True, 0), ("new", "uncertain", False, 30),
             ("known", "always", True, 20), ("new", "always", True, 40))
    rows = [{"chemistry": c, "mode": m, "same_minimum": ok, "teacher_calls": calls,
             "reference_calls": 100, "time": 1.0} for c, m, ok, calls in cases]
    summary = summarize(rows)
    assert set(summary) == set(MODES)
    assert summary["teacher"]["all"] == pytest.approx(
        {"starts": 2, "landed": 1.0, "at_or_below": 1.0, "teacher_calls": 200,
         "calls_vs_teacher_only": 1.0, "median_time_s": 1.0})
    assert summary["uncertain"]["known"]["calls_vs_teacher_only"] == 0.0
    assert summary["uncertain"]["all"]["landed"] == 0.5
    assert summary["always"]["all"]["calls_vs_teacher_only"] == pytest.approx(0.3)
    for row, (bad, flagged) in zip(rows[2:4], ((True, False), (True, True)), strict=True):
        row.update(student_bad=bad, uncertain=flagged)  # the two "uncertain" rows
    assert summarize_flag(rows) == {"known": {"starts": 1, "student_bad": 1,
                                              "bad_unflagged": 1},
                                    "new": {"starts": 1, "student_bad": 1, "bad_unflagged": 0},
                                    "all": {"starts": 2, "student_bad": 2, "bad_unflagged": 1}}


def test_one_start_end_to_end_with_emt(tiny_model):
    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.relax.teacher import TeacherStage

    student = TDNCalculator(tiny_model(elements=(1, 6, 8, 78)), device="cpu")
    stage = TeacherStage(finish="emt", verify_fmax=0.15)
    rows = run_start(starts(quick=True)[0], student, stage, fmax=0.05, steps=3,
                     loose_verify_fmax=0.5)
    assert [r["mode"] for r in rows] == list(MODES)
    teacher, unsure, unverified, always, loose, either = rows
    assert stage.verify_fmax == 0.15  # the loose mode's threshold does not leak out
    assert teacher["engine"] == "teacher" and teacher["same_minimum"]  # its own reference
    assert unsure["engine"] == "student" and unsure["teacher_calls"] == 0  # no scores
    # the teacher's verdict on the student's minimum, the same in every row of the start
    assert len({(r["student_teacher_fmax"], r["student_bad"]) for r in rows}) == 1
    assert unsure["student_bad"] == (unsure["student_teacher_fmax"] > 0.5
                                     or unsure["student_teacher_de"] > 0.2)
    flag = summarize_flag(rows)["all"]
    assert flag["starts"] == 1 and flag["bad_unflagged"] == flag["student_bad"]  # no scores
    assert always["engine"] == "student+teacher" and always["teacher_calls"] >= 1
    # counted as a fresh teacher would count it: no mode reuses another's cached results
    from tdn_calc.relax.single import finish_with_teacher, relax

    first = relax(build_start(starts(quick=True)[0])[0], student, 0.05, steps=3, warn=False)
    alone = finish_with_teacher(first, TeacherStage(finish="emt", finish_when="always"), None,
                                0.05, steps=3, student=student)
    assert always["teacher_calls"] == alone.teacher_calls
    # one teacher single point at the student's minimum, then a finish only above 0.15 eV/Å
    assert unverified["teacher_calls"] >= 1
    assert (unverified["engine"] == "student+teacher") == (
        unverified["student_teacher_fmax"] > 0.15)
    # the loose mode: the same single point, a finish only above 0.5 eV/Å
    assert loose["teacher_calls"] >= 1
    assert (loose["engine"] == "student+teacher") == (loose["student_teacher_fmax"] > 0.5)
    # no scores (tiny model): the combined mode is the loose single-point test
    assert (either["engine"], either["teacher_calls"]) == (loose["engine"], loose["teacher_calls"])
