"""Does student + teacher finish land in the teacher's own minimum, and at what teacher cost?

For slab+adsorbate starts built by :mod:`tdn_calc.datagen.catalysis` (``known`` chemistry:
Pt/Cu(111) with CO, O, H, which tdn-catalysis was trained on; ``new`` chemistry: COOH and NNH
on Pt(111), CO and O on Pt/Cu(100)), each start is relaxed four ways:

- ``teacher``: the teacher alone (the reference minimum and the reference cost);
- ``uncertain``: the TDN model, then ``finish=teacher, finish_when="uncertain"``;
- ``unverified``: the TDN model, a teacher single point at its minimum (counted), then the
  teacher finishes where its fmax there is above ``verify_fmax`` (3 x fmax);
- ``always``: the TDN model, then ``finish=teacher, finish_when="always"``;
- ``unverified-loose``: as ``unverified``, with ``verify_fmax`` at the issue's bad-force line
  (0.5 eV/Å, :data:`~tdn_calc.evaluation.flagging.BAD_FMAX`; ``--loose-verify-fmax``): a student
  minimum the teacher's single point passes there is kept, not finished to ``fmax``;
- ``uncertain-or-unverified-loose``: the TDN model; the flagged starts finished as under
  ``uncertain``, the others get the teacher's single point (counted) and are finished above
  the loose ``verify_fmax``.

A mode *lands* when its final structure is in the teacher-only minimum from the same start
(:func:`tdn_calc.evaluation.landing`: same site of the anchor atom, adsorbate bonds kept,
teacher energy within 50 meV of the teacher-only minimum); ``at_or_below`` also counts a
minimum the teacher itself puts lower, bonds kept (the teacher-only relaxation stopped higher,
e.g. CO held on a top site by symmetry). Its cost is the teacher calculations it spent
(single points and optimizer steps) divided by the teacher-only relaxation's. The judging
single point is not counted. Writes ``benchmarks/results/finish_quality.json``.

    OMP_NUM_THREADS=1 nice python benchmarks/finish_quality.py --quick
    OMP_NUM_THREADS=1 nice python benchmarks/finish_quality.py --teacher sevenn-0
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json
from ase import Atoms

from tdn_calc.evaluation import Landing, bond_changes, bonds, classify_site, landing
from tdn_calc.evaluation.flagging import BAD_FMAX, is_bad

MODES = ("teacher", "uncertain", "unverified", "always", "unverified-loose",
         "uncertain-or-unverified-loose")
DEFAULT_OUT = Path(__file__).parent / "results" / "finish_quality.json"


@dataclass(frozen=True)
class Start:
    """One slab+adsorbate start: ``facet`` of ``metal`` with ``adsorbate`` over ``site``;
    ``chemistry`` is ``"known"`` (in the model's training domain) or ``"new"``."""

    metal: str
    facet: str
    adsorbate: str
    site: str
    chemistry: str
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.adsorbate}@{self.metal}({self.facet})-{self.site}-{self.seed}"


def starts(quick: bool = False, seeds: int = 1) -> list[Start]:
    """The benchmark's starts (``quick``: one known and one new)."""
    known = [Start(m, "111", a, s, "known") for m in ("Pt", "Cu")
             for a, s in (("CO", "top"), ("O", "fcc"), ("H", "fcc"))]  # fmt: skip
    new = [Start("Pt", "111", "COOH", "top", "new"), Start("Pt", "111", "NNH", "top", "new"),
           Start("Pt", "100", "CO", "bridge", "new"), Start("Cu", "100", "O", "hollow", "new")]
    chosen = [known[0], new[0]] if quick else known + new
    return [Start(s.metal, s.facet, s.adsorbate, s.site, s.chemistry, k)
            for s in chosen for k in range(seeds)]  # fmt: skip


def build_start(start: Start, size: tuple[int, int, int] = (2, 2, 3)) -> tuple[Atoms, int]:
    """The slab (bottom layer fixed) with the adsorbate placed over its site, slightly
    rattled by ``start.seed``; returns ``(atoms, n_metal)`` (Å)."""
    from ase.data import atomic_numbers, reference_states

    from tdn_calc.datagen.catalysis.adsorbates import place_adsorbate
    from tdn_calc.datagen.catalysis.surfaces import build_surface

    a = reference_states[atomic_numbers[start.metal]]["a"]
    surface = build_surface(start.metal, start.facet, size, (a,), fixed_layers=1, vacuum=7.0)
    atoms = surface.atoms
    n_metal = len(atoms)
    rng = np.random.default_rng(start.seed)
    place_adsorbate(atoms, n_metal, start.adsorbate, surface.sites[start.site], rng)
    atoms.info.clear()
    atoms.rattle(0.03, seed=start.seed)
    return atoms, n_metal


def describe(atoms: Atoms, n_metal: int) -> tuple[str, frozenset]:
    """``(site of the anchor atom, adsorbate bonds)`` of a slab+adsorbate structure."""
    mask = np.arange(len(atoms)) < n_metal
    site, _ = classify_site(atoms, n_metal, mask)
    return site, bonds(atoms.numbers[n_metal:], atoms.positions[n_metal:])


def judge(energy: float, atoms: Atoms, reference_energy: float, reference: Atoms,
          n_metal: int) -> Landing:
    """Whether ``atoms`` (teacher energy ``energy``, eV) is the teacher-only minimum
    ``reference`` (``reference_energy``, eV) from the same start."""
    site, bonded = describe(atoms, n_metal)
    ref_site, ref_bonded = describe(reference, n_metal)
    return landing(energy, reference_energy, site, ref_site, bond_changes(bonded, ref_bonded) == 0)


def summarize_flag(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per chemistry (and ``all``), from the ``uncertain`` rows: ``starts``, ``student_bad``
    (student minima bad by the issue's definition, :func:`~tdn_calc.evaluation.flagging.
    is_bad`: teacher fmax there above 0.5 eV/Å or teacher energy 0.2 eV above the
    teacher-alone minimum) and ``bad_unflagged`` (of those, not flagged uncertain)."""
    out: dict[str, Any] = {}
    for chem in ("known", "new", "all"):
        sel = [r for r in rows if r["mode"] == "uncertain" and "student_bad" in r
               and chem in ("all", r["chemistry"])]
        if sel:
            out[chem] = {"starts": len(sel),
                         "student_bad": sum(bool(r["student_bad"]) for r in sel),
                         "bad_unflagged": sum(bool(r["student_bad"]) and not r["uncertain"]
                                              for r in sel)}
    return out


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per mode and chemistry (and ``all``): starts, fraction landing in the teacher's
    minimum (``landed``) or at or below it (``at_or_below``), teacher calls relative to
    teacher-only (sum over starts) and median wall time (s). Rows: ``{"chemistry", "mode",
    "same_minimum", "at_or_below", "teacher_calls", "reference_calls", "time"}``."""
    out: dict[str, Any] = {}
    for mode in MODES:
        out[mode] = {}
        for chem in ("known", "new", "all"):
            sel = [r for r in rows if r["mode"] == mode and chem in ("all", r["chemistry"])]
            if not sel:
                continue
            ref = sum(r["reference_calls"] for r in sel)
            calls = int(sum(r["teacher_calls"] for r in sel))
            out[mode][chem] = {
                "starts": len(sel),
                "landed": float(np.mean([r["same_minimum"] for r in sel])),
                "at_or_below": float(np.mean([r.get("at_or_below", r["same_minimum"])
                                              for r in sel])),
                "teacher_calls": calls,
                "calls_vs_teacher_only": calls / ref if ref else None,
                "median_time_s": float(np.median([r["time"] for r in sel])),
            }
    return out


def run_start(start: Start, student: Any, stage: Any, fmax: float, steps: int,
              loose_verify_fmax: float = BAD_FMAX) -> list[dict]:
    """The modes of MODES on one start (``stage``: a TeacherStage whose finish teacher is the
    teacher; ``loose_verify_fmax``: eV/Å, the ``verify_fmax`` of ``unverified-loose``); one
    row per mode."""
    from tdn_calc.relax.single import (
        finish_with_teacher,
        relax,
        student_uncertain,
        teacher_relax,
    )

    atoms, n_metal = build_start(start)
    t0 = time.perf_counter()
    ref = teacher_relax(atoms, stage, fmax, steps=steps)
    ref_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = relax(atoms, student, fmax, steps=steps, warn=False)
    uncertain = student_uncertain(student, first.atoms, first.converged)
    student_time = time.perf_counter() - t0
    # the flag's question at the student's minimum (not a cost: the judge's single point)
    student_energy, student_fmax = stage.single_point(stage.finish, first.atoms)
    student_de = student_energy - ref.teacher_energy  # eV above the teacher-alone minimum
    student_bad = is_bad(student_fmax, student_de)
    results = {"teacher": (ref, ref_time)}
    tight_verify_fmax = stage.verify_fmax
    for mode in MODES[1:]:
        stage.finish_when = mode.removesuffix("-loose")
        stage.verify_fmax = loose_verify_fmax if mode.endswith("-loose") else tight_verify_fmax
        stage.calculator(stage.finish).reset()  # no mode reuses another's teacher results
        t0 = time.perf_counter()
        res = finish_with_teacher(first, stage, uncertain, fmax, steps=steps, student=student)
        results[mode] = (res, student_time + time.perf_counter() - t0)
    stage.verify_fmax = tight_verify_fmax
    rows = []
    for mode, (res, seconds) in results.items():
        energy = res.teacher_energy
        if energy is None:  # not finished: the judging single point (not counted)
            energy, _ = stage.single_point(stage.finish, res.atoms)
        verdict = judge(energy, res.atoms, ref.teacher_energy, ref.atoms, n_metal)
        rows.append({"start": start.label, "chemistry": start.chemistry, "mode": mode,
                     "engine": res.engine, "uncertain": uncertain,
                     "student_teacher_fmax": round(student_fmax, 4),
                     "student_teacher_de": round(student_de, 4),
                     "student_bad": student_bad,
                     "student_steps": res.student_steps, "teacher_steps": res.teacher_steps,
                     "teacher_calls": res.teacher_calls, "reference_calls": ref.teacher_calls,
                     "converged": res.converged, "delta_eV": verdict.delta,
                     "same_site": verdict.same_site, "bonds_kept": verdict.bonds_kept,
                     "same_minimum": verdict.same_minimum, "at_or_below": verdict.at_or_below,
                     "time": round(seconds, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tdn-catalysis")
    parser.add_argument("--teacher", default="sevenn-0")
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=1, help="starts per system")
    parser.add_argument("--loose-verify-fmax", type=float, default=BAD_FMAX,
                        help="eV/Å, verify_fmax of the unverified-loose mode")
    parser.add_argument("--quick", action="store_true", help="two starts only")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.relax.teacher import TeacherStage

    student = TDNCalculator(args.model, device="cpu")
    stage = TeacherStage(finish=args.teacher, finish_when="uncertain", verify_fmax=3 * args.fmax)
    rows: list[dict] = []
    for start in starts(args.quick, args.seeds):
        rows += run_start(start, student, stage, args.fmax, args.steps, args.loose_verify_fmax)
        print(start.label, [(r["mode"], r["same_minimum"], r["teacher_calls"])
                            for r in rows[-len(MODES):]],
              file=sys.stderr, flush=True)
    from tdn_calc.registry import model_entry

    try:  # the flag's thresholds this run used (the card's), for the record
        uncertainty = {k: v for k, v in (model_entry(args.model).get("uncertainty") or {})
                       .items() if k not in ("file", "sha256")}
    except Exception:  # a model file, not a registered name
        uncertainty = None
    report = {"model": args.model, "uncertainty": uncertainty,
              "teacher": args.teacher, "fmax": args.fmax, "verify_fmax": stage.verify_fmax,
              "loose_verify_fmax": args.loose_verify_fmax,
              "steps": args.steps, "quick": args.quick, "platform": platform.platform(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "summary": summarize(rows),
              "student_minima": summarize_flag(rows),
              "rows": rows, "starts": [asdict(s) for s in starts(args.quick, args.seeds)]}
    write_json(args.out, report)
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
