"""AdsorbML-style quality of a screening campaign against its teacher, and its cost.

For every (surface, adsorbate) pair of a small campaign spec
(``benchmarks/specs/screening_quality.yaml``: CO, O, H, OH on Pt(111), Cu(100), Ni(111),
7-8 placements each) three campaigns run (:func:`tdn_calc.campaigns.run_campaign`, in this
process), the same except for who relaxes:

- ``student``: the TDN model alone (``teacher.policy: none``);
- ``finish``: the TDN model, then the teacher finishes the placements the model flags
  (``teacher.policy: finish``, ``finish_when: uncertain``) and every clean slab and gas;
- ``teacher``: the teacher as the campaign's model: the reference, the teacher's lowest
  minimum over the same placements.

Same optimizer, fmax and step budget; lattice constants from the teacher (the spec's
``lattice_constant: teacher``), so the three use the same cells, and the same placements:
the same sites, random points and rotations (seeded), each campaign placing them on its own
relaxed clean slab.

**Success** of a pair (AdsorbML, Lan et al. 2023): the teacher's adsorption energy at the
campaign's chosen minimum (its lowest valid ``e_ads``) is within 0.1 eV of the teacher's
lowest valid adsorption energy, or below it. The teacher's energy at the chosen structure is
a teacher single point for the ``student`` campaign (as AdsorbML's DFT single points at the
ML minima), and for ``finish`` the teacher's own final energy where it finished that
structure, else a single point. All teacher adsorption energies use the ``teacher``
campaign's clean slabs and gases. The judging single points are not counted as campaign
cost; ``teacher_calls`` are the calls of the ``finish`` teacher (placements and references)
and of the teacher as the model (the lattice-constant fits, alike in all runs, are not
counted). Anomalies are AdsorbML's (:mod:`tdn_calc.evaluation.anomalies`).

The ``student`` campaign's wall time in this process is compared with a Dask
``LocalCluster`` of 1 and 2 workers (one thread each, cluster start apart; ``--no-dask`` or
no ``distributed``: skipped). Each timing includes loading the student model once per
process (here, or in each worker); the teacher of the lattice fits is loaded before any
timing. Writes ``benchmarks/results/screening_quality.json``; render its table into
docs/campaigns.md with ``make docs``.

    OMP_NUM_THREADS=1 nice python benchmarks/screening_quality.py
    OMP_NUM_THREADS=1 nice python benchmarks/screening_quality.py --teacher emt \\
        --spec my_pair.yaml --placements 2 --no-dask --out /tmp/sq.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import cpu_model, git_commit, write_json

from tdn_calc.campaigns import parse_spec, run_campaign, summarize
from tdn_calc.campaigns.engine import calculator
from tdn_calc.campaigns.executors import DaskExecutor
from tdn_calc.campaigns.placements import adsorbate_atoms, placement_key
from tdn_calc.campaigns.spec import read_spec_file
from tdn_calc.campaigns.store import connect
from tdn_calc.errors import InputError
from tdn_calc.evaluation.anomalies import ANOMALIES
from tdn_calc.evaluation.references import adsorption_energy, reference_terms
from tdn_calc.relax.teacher import TeacherStage

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = Path(__file__).parent / "specs" / "screening_quality.yaml"
DEFAULT_OUT = Path(__file__).parent / "results" / "screening_quality.json"
MODES = ("student", "finish", "teacher")
SUCCESS_EV = 0.1  # eV: AdsorbML's margin above the reference's lowest adsorption energy
DASK_WORKERS = (1, 2)


def mode_specs(data: dict[str, Any], model: str, teacher: str, placements: int | None,
               base_dir: str) -> dict[str, Any]:  # fmt: skip
    """The three campaign specs (``{mode: CampaignSpec}``) of the spec mapping ``data``
    with ``model`` as the student and ``teacher`` (``placements``: that many random
    placements per pair instead of the spec's ``placement`` section)."""
    data = dict(data)
    if placements is not None:
        data["placement"] = {**data.get("placement", {}), "sites": False, "random": placements}
    out = {}
    for mode in MODES:
        policy = {"name": teacher, "policy": "none"}
        if mode == "finish":
            policy = {"name": teacher, "policy": "finish", "finish_when": "uncertain"}
        named = {"model": teacher if mode == "teacher" else model, "teacher": policy}
        out[mode] = parse_spec({**data, **named, "name": f"{data.get('name', 'sq')}-{mode}"},
                               base_dir=base_dir)  # fmt: skip
    return out


def timed_run(spec: Any, db: Path, executor: Any = None) -> dict[str, Any]:
    """Run ``spec`` into the database ``db`` (emptied first: every row computed now): wall
    and process CPU time (s) and the rows written (placements and references)."""
    wall, cpu = time.perf_counter(), time.process_time()
    stats = run_campaign(spec, db, executor=executor, progress=False, force=True)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "rows": stats.written}  # fmt: skip


def success(judged: float | None, reference: float | None) -> bool | None:
    """AdsorbML's test: ``judged`` (the teacher's E_ads at the campaign's minimum, eV) is at
    most :data:`SUCCESS_EV` above ``reference`` (the teacher's lowest, eV); None when the
    reference has no valid minimum; False when the campaign has none."""
    if reference is None:
        return None
    return judged is not None and judged <= reference + SUCCESS_EV


def _calls(rows: list[Any], key: str) -> int:
    return int(sum(int(r.get(key) or 0) for r in rows))


def teacher_calls(db: Any, mode: str) -> dict[str, int]:
    """Teacher calls of a campaign database: the finish teacher's (``finish``) or the
    teacher's as the model (``teacher``), on placements and on references."""
    key = "student_calls" if mode == "teacher" else "teacher_calls"
    placements = _calls(list(db.select(kind="placement")), key)
    references = _calls([*db.select(kind="slab"), *db.select(kind="gas")], key)
    return {"placements": placements, "references": references,
            "total": placements + references}  # fmt: skip


class Judge:
    """The teacher's adsorption energies (eV) at chosen structures, with the teacher
    campaign's references (``reference_db``), single points from ``stage`` (a
    :class:`~tdn_calc.relax.teacher.TeacherStage`; counted in ``single_points``)."""

    def __init__(self, spec: Any, reference_db: Any, stage: Any, teacher: str) -> None:
        self.stage, self.teacher, self.single_points = stage, teacher, 0
        self.slabs = {r.surface: float(r.energy) for r in reference_db.select(kind="slab")}
        self.gases = {r.gas: float(r.energy) for r in reference_db.select(kind="gas")}
        self.terms = {a.name: reference_terms(adsorbate_atoms(spec, a), spec.scheme)
                      for a in spec.adsorbates}  # fmt: skip

    def __call__(self, row: Any) -> tuple[float, str]:
        """``(teacher E_ads, how)`` at a placement row's structure: the row's own teacher
        energy where the teacher finished it, else a single point."""
        if row.get("energy_source") == "teacher":
            energy, how = float(row.energy), "teacher finish"
        else:
            energy, _ = self.stage.single_point(self.teacher, row.toatoms())
            self.single_points += 1
            how = "teacher single point"
        e_ads = adsorption_energy(energy, self.slabs[row.surface], self.gases,
                                  self.terms[row.adsorbate])  # fmt: skip
        return float(e_ads), how


def pair_results(dbs: dict[str, Any], judge: Callable[[Any], tuple[float, str]]
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """One record per (surface, adsorbate): for each mode the campaign's summary
    (:func:`tdn_calc.campaigns.summarize`: placements, valid, lowest ``e_ads``, its site
    and energy source, anomaly counts), its teacher calls on placements, the teacher's
    E_ads at its chosen minimum (``student``/``finish``) and ``success``."""
    by_mode = {m: {(s.surface, s.adsorbate): s for s in summarize(db)} for m, db in dbs.items()}
    out = []
    for pair, ref in by_mode["teacher"].items():
        reference = ref.e_ads if math.isfinite(ref.e_ads) else None
        record: dict[str, Any] = {"surface": pair[0], "adsorbate": pair[1],
                                  "teacher_lowest_e_ads": reference}  # fmt: skip
        for mode, summaries in by_mode.items():
            s = summaries[pair]
            part = {k: v for k, v in asdict(s).items() if k not in ("surface", "adsorbate")}
            part = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in part.items()}  # fmt: skip
            rows = list(dbs[mode].select(kind="placement", surface=pair[0], adsorbate=pair[1]))
            part["teacher_calls"] = _calls(rows, "student_calls" if mode == "teacher"
                                           else "teacher_calls")  # fmt: skip
            part["finished"] = sum(1 for r in rows if r.get("relaxed_by") == "student+teacher")
            if mode != "teacher":
                judged, how = None, None
                if s.placement != "-":
                    best = dbs[mode].get(key=placement_key(*pair, s.placement))
                    judged, how = judge(best)
                part.update(teacher_e_ads=judged, judged_by=how,
                            error_eV=None if judged is None or reference is None
                            else judged - reference,
                            success=success(judged, reference))  # fmt: skip
            record[mode] = part
        out.append(record)
    return out


def overall(pairs: list[dict[str, Any]], calls: dict[str, dict[str, int]]
            ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per mode over all pairs: the success rate (pairs whose reference has a valid
    minimum), the anomaly and unconverged counts, placements, valid ones and teacher
    calls (placements, references, total)."""
    out = {}
    for mode in MODES:
        parts = [p[mode] for p in pairs]
        judged = [p[mode]["success"] for p in pairs
                  if mode != "teacher" and p[mode]["success"] is not None]  # fmt: skip
        out[mode] = {
            "pairs": len(parts), "placements": sum(p["placements"] for p in parts),
            "valid": sum(p["valid"] for p in parts),
            "anomalies": {a: sum(p[a] for p in parts) for a in ANOMALIES},
            "unconverged": sum(p["unconverged"] for p in parts),
            "finished": sum(p["finished"] for p in parts),
            "teacher_calls": calls[mode],
        }  # fmt: skip
        if mode != "teacher":
            out[mode].update(
                judged_pairs=len(judged),
                successes=sum(judged),
                success_rate=sum(judged) / len(judged) if judged else None,
            )
    return out


def dask_timings(spec: Any, workdir: Path, reference: Any) -> dict[str, Any]:
    """Wall time of the ``student`` campaign on a ``LocalCluster`` of 1 and 2 workers (one
    thread each; cluster start apart) and the largest |ΔE_ads| of its pairs' lowest valid
    minima against the in-process run (``reference``: its database)."""
    here = {(s.surface, s.adsorbate): s.e_ads for s in summarize(reference)}
    out: dict[str, Any] = {}
    for n in DASK_WORKERS:
        start = time.perf_counter()
        try:
            executor = DaskExecutor(workers=n)
        except InputError as exc:  # no distributed: the dask extra is missing
            return {"skipped": str(exc)}
        started = time.perf_counter() - start
        try:
            run = timed_run(spec, workdir / f"student-dask{n}.db", executor)
        finally:
            executor.close()
        there = {(s.surface, s.adsorbate): s.e_ads
                 for s in summarize(connect(workdir / f"student-dask{n}.db"))}  # fmt: skip
        diffs = [abs(there[k] - v) for k, v in here.items() if math.isfinite(v)]
        out[f"workers_{n}"] = {"cluster_start_s": started, "wall_s": run["wall_s"],
                               "max_abs_delta_e_ads_eV": max(diffs, default=None)}  # fmt: skip
        print(f"dask {n} worker(s): {run['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return out


def run(spec_path: Path, model: str, teacher: str, placements: int | None, dask: bool,
        workdir: Path) -> dict[str, Any]:  # fmt: skip
    """The whole benchmark in ``workdir`` (the campaign databases); returns the report."""
    specs = mode_specs(read_spec_file(spec_path, "benchmark spec"), model, teacher, placements,
                       str(spec_path.parent))  # fmt: skip
    calculator(teacher, specs["student"].device)  # loaded once for every run's lattice fit
    runs, dbs = {}, {}
    for mode in MODES:
        runs[mode] = timed_run(specs[mode], workdir / f"{mode}.db")
        dbs[mode] = connect(workdir / f"{mode}.db")
        runs[mode]["placements"] = dbs[mode].count(kind="placement")
        print(f"{mode}: {runs[mode]['rows']} rows, {runs[mode]['wall_s']:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip
    judge = Judge(specs["teacher"], dbs["teacher"], TeacherStage(verify=teacher), teacher)
    pairs = pair_results(dbs, judge)
    calls = {mode: teacher_calls(db, mode) for mode, db in dbs.items()}
    student = specs["student"]
    timing: dict[str, Any] = {"in_process_s": runs["student"]["wall_s"]}
    timing["dask"] = (dask_timings(student, workdir, dbs["student"]) if dask
                      else {"skipped": "--no-dask"})  # fmt: skip
    return {
        "benchmark": "screening_quality",
        "commit": git_commit(str(ROOT)),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "platform": platform.platform(),
        "model": model, "teacher": teacher,
        "spec": _relative(spec_path), "spec_hashes": {m: s.hash() for m, s in specs.items()},
        "surfaces": [s.label for s in student.surfaces],
        "adsorbates": [a.name for a in student.adsorbates],
        "placement": {"sites": student.sites, "random": student.random, "seed": student.seed},
        "relax": {"fmax": student.fmax, "steps": student.steps,
                  "optimizer": student.optimizer, "batch_size": student.batch_size},
        "scheme": student.scheme, "finish_when": specs["finish"].finish_when,
        "success_margin_eV": SUCCESS_EV,
        "placements": {m: runs[m]["placements"] for m in MODES},
        "runs": runs,
        "judge_single_points": judge.single_points,
        "overall": overall(pairs, calls),
        "pairs": pairs,
        "student_wall_time": timing,
    }  # fmt: skip


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="sevenn-0", help="teacher (tdn teachers list)")
    parser.add_argument("--model", default="tdn-catalysis", help="the student: a TDN model")
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="campaign spec (YAML)")
    parser.add_argument("--placements", type=int, default=None,
                        help="N random placements per pair instead of the spec's placement "
                             "section (no site placements)")  # fmt: skip
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask timings")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the campaign databases here (default: a temporary folder)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.placements is not None and args.placements < 1:
        parser.error("--placements must be at least 1")

    with tempfile.TemporaryDirectory(prefix="screening-quality-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(args.spec, args.model, args.teacher, args.placements, not args.no_dask,
                     workdir)  # fmt: skip
    write_json(args.out, report)
    print(json.dumps(report["overall"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
