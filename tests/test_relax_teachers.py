"""Trust: uncertainty flags, ``tdn-relax --verify/--finish`` and ``relax(..., finish=...)``
with EMT as the teacher on tiny Cu/Pt/Al cells. Every assertion rests on properties the
teacher decides (its own fmax, exit codes from its single points) or on labels, never on a
random model's relaxation converging."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import fcc111
from ase.calculators.emt import EMT
from ase.io import read, write
from ase.optimize import BFGS
from click.testing import CliRunner
from helpers import catalysis_manifest
from relax_testing import one_thread  # noqa: F401
from tdn_calc.cli.relax import main

from tdn_calc.checkpoint import save_model
from tdn_calc.errors import InputError
from tdn_calc.relax.job import EXIT_NOT_VERIFIED, EXIT_OK
from tdn_calc.relax.teacher import TeacherStage, default_verify_fmax

FMAX = 0.05


def slab(metal: str, seed: int, rattle: float = 0.08):
    """A 2x2x2 (111) slab, bottom layer fixed, rattled (``info`` cleared for extxyz)."""
    from ase.constraints import FixAtoms

    atoms = fcc111(metal, size=(2, 2, 2), vacuum=5.0)
    atoms.info.clear()
    atoms.set_constraint(FixAtoms(indices=[a.index for a in atoms if a.tag == 2]))
    atoms.rattle(rattle, seed=seed)
    return atoms


def in_domain_slab(metal: str):
    """A 3x3x4 (111) slab, bottom two layers fixed, slightly rattled: what tdn-catalysis
    was trained on."""
    from ase.constraints import FixAtoms

    atoms = fcc111(metal, size=(3, 3, 4), vacuum=8.0)
    atoms.info.clear()
    atoms.set_constraint(FixAtoms(indices=[a.index for a in atoms if a.tag >= 3]))
    atoms.rattle(0.02, seed=0)
    return atoms


def emt_fmax(atoms) -> float:
    """EMT's own max force on ``atoms`` (fixed atoms excluded), eV/Å."""
    probe = atoms.copy()
    probe.calc = EMT()
    return float(np.linalg.norm(probe.get_forces(), axis=1).max())


@pytest.fixture
def workdir(tmp_path, tiny_model, monkeypatch):
    """tmp_path as cwd, an empty registry and ``tiny.safetensors`` (a random Cu/Pt model)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "models": {}}')
    monkeypatch.setenv("TDN_MANIFEST", str(tmp_path / "manifest.json"))
    save_model(tiny_model(elements=(29, 78), dtype=torch.float32), tmp_path / "tiny.safetensors")
    return tmp_path


def tdn_relax(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def rows(path: str = "r.json") -> list[dict]:
    with open(path) as handle:
        return json.load(handle)["structures"]


def test_verify_passes_on_the_teachers_own_minimum_and_fails_on_a_distorted_one(workdir):
    """--steps 0 with a loose --fmax: the student leaves both structures as they are, so the
    exit status is the teacher's verdict alone."""
    good = slab("Cu", 1)
    good.calc = EMT()
    BFGS(good, logfile=None).run(fmax=0.005)
    write("good.xyz", good, format="extxyz")
    write("bad.xyz", slab("Cu", 2, rattle=0.2), format="extxyz")
    common = ["-m", "tiny.safetensors", "--steps", "0", "--fmax", "100", "--verify", "emt",
              "--verify-fmax", "0.05"]  # fmt: skip
    ok = tdn_relax("good.xyz", *common, "--report", "r.json")
    assert ok.exit_code == EXIT_OK, ok.output
    (row,) = rows()
    assert row["verified"] is True and row["teacher_fmax"] <= 0.005 + 1e-9
    assert row["teacher_energy"] == pytest.approx(good.get_potential_energy(), abs=1e-6)
    assert row["teacher_calls"] == 1 and row["engine"] == "student"
    bad = tdn_relax("bad.xyz", *common, "--report", "r.json")
    assert bad.exit_code == EXIT_NOT_VERIFIED == 3, bad.output
    (row,) = rows()
    assert row["converged"] and row["verified"] is False and row["teacher_fmax"] > 0.05
    assert "bad not verified" in bad.output
    frame = read("bad_relaxed.extxyz")
    assert frame.info["verified"] is False or frame.info["verified"] == np.False_
    assert frame.info["teacher_fmax"] == pytest.approx(emt_fmax(frame), rel=1e-6)


def test_finish_always_ends_at_the_teachers_fmax_and_resume_keeps_the_labels(workdir):
    write("two.xyz", [slab("Cu", 3), slab("Pt", 4)], format="extxyz")
    args = ["two.xyz", "-m", "tiny.safetensors", "--steps", "200", "--finish", "emt",
            "--finish-when", "always", "--verify", "emt", "--report", "r.json"]  # fmt: skip
    result = tdn_relax(*args)
    assert result.exit_code == EXIT_OK, result.output
    frames = read("two_relaxed.extxyz", index=":")
    for row, frame in zip(rows(), frames, strict=True):
        assert row["engine"] == "student+teacher" and frame.info["engine"] == "student+teacher"
        assert (
            row["teacher_steps"] >= 0
            and row["student_steps"] + row["teacher_steps"] == row["steps"]
        )
        assert row["teacher_calls"] >= row["teacher_steps"] and row["teacher_time"] >= 0
        assert emt_fmax(frame) <= FMAX  # the teacher's own check
        assert row["verified"] is True and row["teacher_fmax"] == pytest.approx(emt_fmax(frame))
        assert row["teacher_calls"] == row["teacher_steps"] + 1  # verify reused the finish
    again = tdn_relax(*args, "--resume")
    assert again.exit_code == EXIT_OK, again.output
    assert [(r["status"], r["engine"], r["verified"]) for r in rows()] == [
        ("resumed", "student+teacher", True)
    ] * 2


@pytest.mark.parametrize("threshold, flagged", [(1e-6, True), (1e6, False)])
def test_finish_when_uncertain_follows_the_models_threshold(
    workdir, monkeypatch, threshold, flagged
):
    """The registry entry's uncertainty threshold decides the flag, and the flag alone
    decides the finish (tdn-catalysis, which has both summaries, on a 3x3x4 Cu(111) slab
    inside its training domain: the Mahalanobis score, cut at 1, stays below 0.2)."""
    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(workdir, threshold))
    write("cu.xyz", in_domain_slab("Cu"), format="extxyz")
    result = tdn_relax("cu.xyz", "-m", "tdn-catalysis", "--steps", "100", "--finish", "emt",
                       "--report", "r.json")  # fmt: skip
    (row,) = rows()
    assert row["uncertain"] is flagged and (row["extrapolating_atoms"] > 0) is flagged
    assert row["engine"] == ("student+teacher" if flagged else "student")
    frame = read("cu_relaxed.extxyz")
    assert bool(frame.info["uncertain"]) is flagged
    assert frame.arrays["extrapolation"].shape == (len(frame),)
    if flagged:
        assert emt_fmax(frame) <= FMAX and result.exit_code == EXIT_OK
        assert "cu uncertain" in result.output and "uncertain structure(s): cu" in result.output
    else:
        assert row["teacher_calls"] == 0 and row["teacher_steps"] == 0


def test_finish_when_uncertain_also_finishes_a_student_that_did_not_converge(workdir, monkeypatch):
    """No atom flagged (threshold 1e6), but --steps 0 leaves the student short of --fmax: its
    end is no minimum, so the teacher takes over (with the same budget of 0 steps)."""
    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(workdir, 1e6))
    write("cu.xyz", slab("Cu", 5), format="extxyz")
    tdn_relax("cu.xyz", "-m", "tdn-catalysis", "--steps", "0", "--fmax", "1e-4", "--finish",
              "emt", "--report", "r.json")  # fmt: skip
    (row,) = rows()
    assert row["uncertain"] is False and row["converged"] is False
    assert row["engine"] == "student+teacher" and row["teacher_steps"] == 0


def test_finish_when_unverified_finishes_only_what_the_teacher_rejects(workdir):
    """--steps 0: neither engine moves an atom, so the choice rests on the teacher's single
    point alone (the teacher relaxation gets the same budget of 0 steps)."""
    good = slab("Pt", 6)
    good.calc = EMT()
    BFGS(good, logfile=None).run(fmax=0.005)
    write("both.xyz", [good, slab("Pt", 7, rattle=0.2)], format="extxyz")
    result = tdn_relax("both.xyz", "-m", "tiny.safetensors", "--steps", "0", "--fmax", "100",
                       "--verify-fmax", "0.1", "--finish", "emt", "--finish-when", "unverified",
                       "--report", "r.json")  # fmt: skip
    first, second = rows()
    assert first["engine"] == "student" and first["verified"] is True
    assert first["teacher_calls"] == 1  # the single point that decided
    assert second["engine"] == "student+teacher" and second["teacher_steps"] == 0
    assert second["verified"] is False and result.exit_code == EXIT_NOT_VERIFIED


def test_uncovered_elements_are_relaxed_by_the_teacher_alone(workdir):
    write("al.xyz", slab("Al", 8), format="extxyz")
    refused = CliRunner().invoke(main, ["al.xyz"])  # no registered model covers Al
    assert refused.exit_code == 1 and "Al" in refused.output and "Traceback" not in refused.output
    for model in ("auto", "tiny.safetensors"):
        result = tdn_relax("al.xyz", "-m", model, "--finish", "emt", "--report", "r.json")
        assert result.exit_code == EXIT_OK, result.output
        (row,) = rows()
        assert row["engine"] == "teacher" and row["student_steps"] == 0
        assert row["teacher_steps"] == row["steps"] and row["verified"] is True
        assert emt_fmax(read("al_relaxed.extxyz")) <= FMAX
        assert "the teacher relaxes them alone" in result.output


def test_python_api_finish_and_teacher_alone(tiny_model):
    from helpers import lj_teacher

    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.relax import relax

    student = lj_teacher(sigma=2.3, epsilon=0.4)  # any ASE calculator can be the student
    res = relax(slab("Cu", 9), student, finish="emt", finish_when="always", warn=False)
    assert res.engine == "student+teacher"
    assert res.student_steps + res.teacher_steps == res.n_steps
    assert res.converged and emt_fmax(res.atoms) <= FMAX and res.verified is True
    kept = relax(slab("Cu", 9), EMT(), finish="emt", finish_when="unverified", warn=False)
    assert kept.engine == "student" and kept.verified is True  # EMT's minimum passes EMT
    unsure = relax(slab("Cu", 9), student, finish="emt", warn=False)
    assert unsure.engine == "student" and unsure.uncertain is None  # no scores: no finish
    calc = TDNCalculator(tiny_model(elements=(29, 78)), device="cpu")
    alone = relax(slab("Al", 10), calc, finish="emt", warn=False)
    assert alone.engine == "teacher" and alone.student_steps == 0 and alone.converged
    loose = relax(slab("Pt", 11), calc, steps=0, fmax=100, verify="emt", warn=False)
    assert loose.engine == "student" and loose.teacher_calls == 1
    assert loose.verified is True and 0.3 < loose.teacher_fmax <= 300  # default: 3 x fmax
    tight = relax(slab("Pt", 11), calc, steps=0, fmax=100, verify="emt", verify_fmax=0.3,
                  warn=False)  # fmt: skip
    assert tight.verified is False and tight.teacher_fmax == pytest.approx(loose.teacher_fmax)
    assert default_verify_fmax(0.05) == pytest.approx(0.15)


def test_uncertain_or_unverified_finishes_flags_and_checks_the_rest():
    from tdn_calc.relax.teacher import TeacherStage

    stage = TeacherStage(finish="emt", finish_when="uncertain-or-unverified", verify_fmax=0.5)
    # flagged or not converged: finished with no single point first
    for uncertain, converged in ((True, True), (False, False), (None, False)):
        assert not stage.needs_single_point(uncertain, converged)
        assert stage.wants_finish(uncertain, None, converged)
    # not flagged (or no scores): the single point decides, above verify_fmax only
    for uncertain in (False, None):
        assert stage.needs_single_point(uncertain, True)
        assert stage.wants_finish(uncertain, 0.51, True)
        assert not stage.wants_finish(uncertain, 0.49, True)
    # the other modes keep their rules
    assert TeacherStage(finish="emt", finish_when="unverified").needs_single_point(True)
    assert not TeacherStage(finish="emt", finish_when="uncertain").needs_single_point(False)
    assert not TeacherStage(finish="emt", finish_when="always").needs_single_point(False)
    assert not TeacherStage(verify="emt", finish_when="unverified").needs_single_point(False)


def test_uncertain_or_unverified_in_a_relaxation():
    from helpers import lj_teacher

    from tdn_calc.relax import relax

    kept = relax(slab("Cu", 9), EMT(), finish="emt", finish_when="uncertain-or-unverified",
                 warn=False)  # fmt: skip
    assert kept.engine == "student" and kept.teacher_calls == 1 and kept.verified is True
    student = lj_teacher(sigma=2.3, epsilon=0.4)  # no scores: the single point decides
    first = relax(slab("Cu", 9), student, warn=False)
    check = emt_fmax(first.atoms)  # EMT's max force at the student's minimum
    for verify_fmax, finished in ((0.5 * check, True), (2 * check, False)):
        res = relax(slab("Cu", 9), student, finish="emt", verify_fmax=verify_fmax,
                    finish_when="uncertain-or-unverified", warn=False)  # fmt: skip
        assert (res.engine == "student+teacher") is finished
        assert (res.teacher_calls >= 2) is finished and res.teacher_calls >= 1
        assert res.verified is True or (finished and res.teacher_fmax > verify_fmax)


def test_teacher_errors_are_clean(workdir, tiny_model):
    from ase.build import bulk

    write("cu.xyz", slab("Cu", 12), format="extxyz")
    for option, teacher, words in (("--verify", "nosuch", "unknown teacher 'nosuch'"),
                                   ("--finish", "nosuch.module:calc", "cannot import teacher"),
                                   ("--verify", "gpaw-pbe", "gpaw")):  # fmt: skip
        if teacher == "gpaw-pbe" and _installed("gpaw-pbe"):
            continue
        result = CliRunner().invoke(main, ["cu.xyz", "-m", "tiny.safetensors", option, teacher])
        assert result.exit_code == 1, result.output
        assert words in result.output and "Traceback" not in result.output
    save_model(tiny_model(elements=(26,), dtype=torch.float32), workdir / "fe.safetensors")
    fe = bulk("Fe", cubic=True)
    write("fe.xyz", fe, format="extxyz")
    result = CliRunner().invoke(main, ["fe.xyz", "-m", "fe.safetensors", "--verify", "emt"])
    assert result.exit_code == 1 and "does not cover Fe" in result.output
    assert not (workdir / "fe_relaxed.extxyz").exists()  # refused before relaxing
    with pytest.raises(InputError, match="finish_when"):
        TeacherStage(finish="emt", finish_when="sometimes")


def _installed(name: str) -> bool:
    from tdn_calc.teachers import teacher_spec

    return teacher_spec(name).installed


@pytest.mark.slow
def test_sevenn_verify_and_finish_co_on_pt111(tmp_path, monkeypatch):
    """SevenNet-0, the teacher of tdn-catalysis, verifies and finishes CO on Pt(111)."""
    from pathlib import Path

    pytest.importorskip("sevenn")
    monkeypatch.chdir(tmp_path)
    slab = Path(__file__).parents[1] / "examples" / "slabs" / "pt111_co.xyz"
    result = tdn_relax(str(slab), "-o", "out.extxyz", "--fix-bottom-layers", "2",
                       "--finish", "sevenn-0", "--finish-when", "always", "--verify", "sevenn-0",
                       "--report", "r.json")  # fmt: skip
    (row,) = rows()
    assert row["engine"] == "student+teacher" and row["teacher_calls"] >= 1
    assert row["teacher_fmax"] <= FMAX and row["verified"] is True and result.exit_code == 0
    assert row["extrapolation_max"] is not None and row["uncertain"] is not None


@pytest.mark.slow
def test_gfn2_xtb_finishes_a_molecule(tmp_path):
    """GFN2-xTB, the teacher of tdn-organic, finishes and verifies ethanol."""
    from ase.build import molecule

    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.relax import relax

    pytest.importorskip("tblite")
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    res = relax(atoms, TDNCalculator("tdn-organic", device="cpu"), finish="gfn2-xtb",
                finish_when="always", verify="gfn2-xtb", warn=False)  # fmt: skip
    assert res.engine == "student+teacher" and res.converged
    assert res.verified is True and res.teacher_fmax <= FMAX
    assert res.teacher_calls == res.teacher_steps + 1  # the finish's own last point is reused


@pytest.mark.parametrize("committee_threshold, flagged", [(1e-4, True), (1e6, False)])
def test_committee_partner_flags_at_the_minimum_by_its_own_threshold(
    workdir, monkeypatch, committee_threshold, flagged
):
    """The card's committee partner (the previous tdn-catalysis) recomputes the forces at the
    minimum: with the novelty score never flagging (threshold 1e6), the partner's threshold
    alone decides ``uncertain``; the recorded disagreement is the two models' force
    difference there, and the flagged atoms are those above the threshold."""
    from tdn_calc.calculator import TDNCalculator

    partner = "tdn-catalysis-20261206-2"
    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(workdir, 1e6,
                                                          (partner, committee_threshold)))
    write("cu.xyz", in_domain_slab("Cu"), format="extxyz")
    tdn_relax("cu.xyz", "-m", "tdn-catalysis", "--steps", "30", "--report", "r.json")
    (row,) = rows()
    frame = read("cu_relaxed.extxyz")
    gap = frame.arrays["committee_force"]
    assert frame.info["committee_force_max"] == pytest.approx(gap.max())
    assert row["uncertain"] is flagged and bool(frame.info["uncertain"]) is flagged
    assert frame.info["extrapolating_atoms"] == int((gap > committee_threshold).sum())
    probe = frame.copy()
    fixed = probe.constraints[0].get_indices()
    forces = {}
    for name in ("tdn-catalysis", partner):
        probe.calc = TDNCalculator(name, device="cpu")
        forces[name] = probe.get_forces(apply_constraint=False)
    expected = np.linalg.norm(forces["tdn-catalysis"] - forces[partner], axis=1)
    expected[fixed] = 0.0
    assert gap == pytest.approx(expected, abs=2e-4)
    assert gap.max() > 1e-4  # two different models disagree somewhere


def test_committee_partner_that_is_the_model_itself_never_disagrees(workdir, monkeypatch):
    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(workdir, 1e6,
                                                          ("tdn-catalysis", 1e-3)))
    write("cu.xyz", in_domain_slab("Cu"), format="extxyz")
    tdn_relax("cu.xyz", "-m", "tdn-catalysis", "--steps", "5", "--report", "r.json")
    (row,) = rows()
    frame = read("cu_relaxed.extxyz")
    assert frame.info["committee_force_max"] < 1e-3 and row["uncertain"] is False


@pytest.mark.parametrize("committee_threshold, flagged", [(1e-4, True), (1e6, False)])
def test_python_api_finish_asks_the_committee_partner_too(workdir, monkeypatch,
                                                          committee_threshold, flagged):
    """``relax(..., finish=...)`` decides "uncertain" by the same rule as tdn-relax: the
    novelty score (never flagging here) or the card's committee partner at the minimum."""
    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.relax.single import student_uncertain

    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(
        workdir, 1e6, ("tdn-catalysis-20261206-2", committee_threshold)))
    atoms = in_domain_slab("Cu")
    calc = TDNCalculator("tdn-catalysis", device="cpu")
    assert student_uncertain(calc, atoms) is flagged
    assert not np.any(calc.results["uncertain"])  # per call: the novelty score alone


@pytest.mark.parametrize("committee, message", [
    (("no-such-model", 0.1), "committee partner 'no-such-model' named in the model card"),
    (("tdn-catalysis-20261206-2", -1.0), "positive 'force_threshold'"),
])
def test_a_bad_committee_record_fails_before_relaxing(workdir, monkeypatch, committee, message):
    monkeypatch.setenv("TDN_MANIFEST", catalysis_manifest(workdir, 1e6, committee))
    write("cu.xyz", in_domain_slab("Cu"), format="extxyz")
    result = CliRunner().invoke(main, ["cu.xyz", "-m", "tdn-catalysis", "--report", "r.json"])
    assert result.exit_code not in (0, 2) and message in result.output
    assert "Traceback" not in result.output and not (workdir / "cu_relaxed.extxyz").exists()
