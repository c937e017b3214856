"""What does `tdn distill` buy on chemistry the shipped model never saw, and at what cost?

Runs ``tdn distill`` (:func:`tdn_calc.distill.run_distill`) on a spec outside tdn-catalysis'
coverage (``benchmarks/specs/distill_quality.yaml``: NH2, NNH and CHO on Pt(100) and the
stepped Cu(211); the shipped model knows (111) facets with H C N O OH CO CH3 H2O), then
judges on the spec's held-out (surface, adsorbate) pairs, which the loop never explores or
trains on, the distilled model and the shipped model it started from (``init_from``):

- the loop's own agreement (:func:`tdn_calc.distill.label.agreement`): each model relaxes
  every held-out placement (the campaign's ``relax`` settings) and the teacher's single point
  at its minimum gives |E_model - E_teacher| (eV) and the teacher's fmax there (eV/Å);
  medians, and the fraction of placements within the spec's ``agreement`` target;
- landing: the fraction of placements whose model minimum is the teacher's own minimum from
  the same start (:func:`tdn_calc.evaluation.landing`: same site of the anchor atom,
  adsorbate bonds kept, teacher energies within 50 meV); ``at_or_below`` also counts a
  minimum the teacher puts lower (AdsorbML's success test);
- errors at the teacher's minima: |E_model - E_teacher| (eV) and the force MAE over the free
  atoms (eV/Å).

A model lacking an element of a placement refuses it; a refused placement counts as not
agreeing (infinite errors: medians over them are reported as ``null`` when infinite).

Cost: the teacher calls and CPU hours of the loop, from its ``state.json`` (the benchmark's
own teacher calls, for the reference relaxations and the judging single points, are
reported apart). Speed: CPU time per energy+forces call of the distilled model, the shipped
model and the teacher on one held-out structure (a teacher minimum; one thread; turns of
5 calls on moving positions, interleaved, median of the calls after the first of a turn).

The distillation runs in ``--run-dir`` (default ``runs/distill_quality/<teacher>``,
git-ignored) and is resumable: a re-run continues the loop where it stopped (a finished one
is not repeated), and the teacher's reference relaxations of the held-out placements are
kept in ``<run-dir>/benchmark/teacher_minima.json``. Writes
``benchmarks/results/distill_quality.json``, rendered into docs/campaigns.md by
``make docs``.

    OMP_NUM_THREADS=1 nice python benchmarks/distill_quality.py    # SevenNet-0, ~20-35 CPU-min
    OMP_NUM_THREADS=1 nice python benchmarks/distill_quality.py --teacher emt \\
        --spec SPEC.yaml --run-dir /tmp/dq --out /tmp/dq.json               # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = Path(__file__).parent / "specs" / "distill_quality.yaml"
DEFAULT_OUT = Path(__file__).parent / "results" / "distill_quality.json"
CACHE_FORMAT = "distill-quality-teacher-minima-1"


@dataclass
class Reference:
    """The teacher's own relaxation of a held-out placement: ``atoms`` (its minimum, with the
    teacher's energy and raw forces attached), ``energy`` eV, ``converged``, ``steps`` and
    ``calls`` (teacher energy+force calls it took) and ``cpu_seconds`` (its CPU time)."""

    atoms: Atoms
    energy: float
    converged: bool
    steps: int
    calls: int
    cpu_seconds: float = 0.0


def default_run_dir(teacher: str) -> Path:
    """``runs/distill_quality/<teacher>`` (a folder per teacher: a run dir is tied to one)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in teacher)
    return ROOT / "runs" / "distill_quality" / safe


def with_forces(atoms: Atoms, energy: float, forces: np.ndarray) -> Atoms:
    """A copy of ``atoms`` carrying ``energy`` (eV) and raw ``forces`` (eV/Å)."""
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=float(energy), forces=np.asarray(forces))
    return out


def teacher_minima(
    spec: Any, placements: Sequence[Any], cache: Path, say: Callable[[str], None]
) -> dict[str, Reference]:
    """The teacher's relaxation of every placement (the campaign's ``fmax``, ``steps`` and
    optimizer), by key; read from and written to ``cache`` after each one."""
    from tdn_calc.distill.label import teacher_calculator
    from tdn_calc.fileio import atomic_write
    from tdn_calc.relax.single import relax

    stored: dict[str, Any] = {}
    if cache.exists():
        data = json.loads(cache.read_text())
        if data.get("format") == CACHE_FORMAT and data.get("spec_hash") == spec.hash():
            stored = data["minima"]
    calc = teacher_calculator(spec)
    c = spec.campaign
    out: dict[str, Reference] = {}
    for p in placements:
        if p.key not in stored:
            t0 = time.process_time()
            res = relax(
                p.atoms, calc, fmax=c.fmax, steps=c.steps, optimizer=c.optimizer, warn=False
            )
            forces = res.atoms.get_forces(apply_constraint=False)
            stored[p.key] = {
                "positions": res.atoms.positions.tolist(),
                "energy": float(res.energy),
                "forces": forces.tolist(),
                "converged": bool(res.converged),
                "steps": int(res.n_steps),
                "calls": len(res.energies),
                "cpu_seconds": time.process_time() - t0,
            }
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(cache, "w") as fh:
                json.dump(
                    {
                        "format": CACHE_FORMAT,
                        "spec_hash": spec.hash(),
                        "teacher": spec.teacher,
                        "minima": stored,
                    },
                    fh,
                )
            say(
                f"teacher minimum of {p.key}: {res.n_steps} steps, "
                f"{time.process_time() - t0:.0f} CPU s"
            )
        s = stored[p.key]
        atoms = p.atoms.copy()
        atoms.positions = np.asarray(s["positions"])
        out[p.key] = Reference(
            with_forces(atoms, s["energy"], s["forces"]),
            s["energy"],
            s["converged"],
            s["steps"],
            s["calls"],
            s.get("cpu_seconds", 0.0),
        )
    return out


def model_elements(model: str) -> set[int]:
    """The atomic numbers a TDN model (registered name or checkpoint) knows."""
    from tdn_calc.checkpoint_format import read_metadata
    from tdn_calc.registry import model_path

    config, _ = read_metadata(model_path(model))
    return set(config.elements)


def free_mask(atoms: Atoms) -> np.ndarray:
    """True for the atoms no constraint holds."""
    fixed = np.zeros(len(atoms), dtype=bool)
    for c in atoms.constraints:
        fixed[c.get_indices()] = True
    return ~fixed


def evaluate(
    spec: Any,
    model: str,
    placements: Sequence[Any],
    refs: dict[str, Reference],
    namers: dict[str, Callable[[Atoms], str]],
) -> list[dict[str, Any]]:
    """One row per placement for ``model``: its relaxation judged by the teacher (the loop's
    check), landing in the teacher's minimum, and its errors at the teacher's minimum."""
    from tdn_calc.campaigns.engine import Engine, calculator, relax_items
    from tdn_calc.distill.label import check_minima
    from tdn_calc.evaluation import bond_changes, bonds, landing

    c = spec.campaign
    known = model_elements(model)
    covered = [p for p in placements if set(p.atoms.numbers.tolist()) <= known]
    checked = {}
    if covered:
        engine = Engine(model, c.device, c.dtype, c.fmax, c.steps, c.optimizer, c.batch_size)
        relaxed = relax_items(engine, [(p.key, p.atoms) for p in covered])
        checked = {x.key: (r, x) for r, x in zip(relaxed, check_minima(spec, relaxed), strict=True)}
    calc = calculator(model, c.device, c.dtype) if covered else None
    rows = []
    for p in placements:
        row: dict[str, Any] = {
            "key": p.key,
            "surface": p.surface,
            "adsorbate": p.adsorbate,
            "start_site": p.start_site,
            "refused": p.key not in checked,
        }
        if row["refused"]:
            row.update(agrees=False, same_minimum=False, at_or_below=False)
            rows.append(row)
            continue
        relaxed, check = checked[p.key]
        ref = refs[p.key]
        name = namers[p.surface]
        ads = slice(p.n_slab, None)
        kept = (
            bond_changes(
                bonds(check.student.numbers[ads], check.student.positions[ads]),
                bonds(ref.atoms.numbers[ads], ref.atoms.positions[ads]),
            )
            == 0
        )
        verdict = landing(
            check.teacher.get_potential_energy(),
            ref.energy,
            name(check.student),
            name(ref.atoms),
            kept,
        )
        probe = ref.atoms.copy()
        probe.calc = calc
        energy = float(probe.get_potential_energy())
        free = free_mask(probe)
        df = (
            probe.get_forces(apply_constraint=False) - ref.atoms.get_forces(apply_constraint=False)
        )[free]
        row.update(
            converged=relaxed.converged,
            steps=relaxed.steps,
            abs_de_eV=check.abs_de,
            teacher_fmax_eV_A=check.teacher_fmax,
            agrees=bool(
                check.abs_de <= spec.agreement.energy and check.teacher_fmax <= spec.agreement.fmax
            ),
            final_site=name(check.student),
            teacher_site=name(ref.atoms),
            bonds_kept=kept,
            delta_vs_teacher_min_eV=verdict.delta,
            same_minimum=verdict.same_minimum,
            at_or_below=verdict.at_or_below,
            abs_de_at_teacher_min_eV=abs(energy - ref.energy),
            force_mae_at_teacher_min_eV_A=float(np.abs(df).mean()),
            force_max_at_teacher_min_eV_A=float(np.linalg.norm(df, axis=1).max()),
        )
        rows.append(row)
    return rows


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summarize(rows: Sequence[dict[str, Any]], energy: float, fmax: float) -> dict[str, Any]:
    """The held-out summary of one model's rows (refused rows: infinite errors). The
    ``agreement`` part has the fields of the loop's own check and its ``met`` (both medians
    within ``energy`` eV and ``fmax`` eV/Å)."""

    def values(key: str) -> np.ndarray:
        return np.array([math.inf if r["refused"] else r[key] for r in rows])

    de, fm = values("abs_de_eV"), values("teacher_fmax_eV_A")
    at_de, at_f = values("abs_de_at_teacher_min_eV"), values("force_mae_at_teacher_min_eV_A")
    agreement = {
        "n": len(rows),
        "median_abs_de_eV": _finite(np.median(de)),
        "max_abs_de_eV": _finite(de.max()),
        "median_teacher_fmax_eV_A": _finite(np.median(fm)),
        "max_teacher_fmax_eV_A": _finite(fm.max()),
    }
    agreement["met"] = bool(np.median(de) <= energy and np.median(fm) <= fmax)
    return {
        "n": len(rows),
        "refused": sum(r["refused"] for r in rows),
        "converged": sum(bool(r.get("converged")) for r in rows),
        "agreement": agreement,
        "within_target": float(np.mean([r["agrees"] for r in rows])),
        "landed": float(np.mean([r["same_minimum"] for r in rows])),
        "at_or_below": float(np.mean([r["at_or_below"] for r in rows])),
        "median_abs_de_at_teacher_min_eV": _finite(np.median(at_de)),
        "median_force_mae_at_teacher_min_eV_A": _finite(np.median(at_f)),
    }


def speed(
    models: dict[str, Any], atoms: Atoms, repeats: int, sequence: int, seed: int = 0
) -> dict[str, Any]:
    """Wall and CPU ms per energy+forces call of each calculator of ``models`` (name ->
    calculator) on ``atoms``, interleaved turns of ``sequence`` calls (``_common``)."""
    from _common import Contender, run_round_robin
    from peers.timing import calculator_call_ms

    rng = np.random.default_rng(seed)
    system = atoms.get_chemical_formula()
    contenders = []
    for name, calc in models.items():
        probe = atoms.copy()
        contenders.append(
            Contender(name, "", 0, "", lambda _s, c=calc, a=probe: calculator_call_ms(c, [a], rng))
        )
    timed = run_round_robin(contenders, [system], repeats, warmup=1, seed=seed, sequence=sequence)
    out = {
        "structure": system,
        "n_atoms": len(atoms),
        "repeats": repeats,
        "sequence": sequence,
        "median_ms": {n: v[system] for n, v in timed["median_ms"].items()},
        "median_cpu_ms": {n: v[system] for n, v in timed["median_cpu_ms"].items()},
        "median_cold_cpu_ms": {
            n: v.get(system) for n, v in timed.get("median_cold_cpu_ms", {}).items()
        },
        "load_average": timed["load_average"],
    }
    return out


def loop_cost(state: Any) -> dict[str, Any]:
    """What the distillation cost, from its state."""
    return {
        "rounds": len(state.history),
        "frames": state.frames,
        "teacher_calls": state.teacher_calls,
        "cpu_seconds": state.cpu_seconds,
        "cpu_hours": state.cpu_seconds / 3600,
        "stop_reason": state.stop_reason,
        "history": state.history,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--teacher", default=None, help="default: the spec's teacher")
    parser.add_argument(
        "--shipped", default=None, help="the baseline model (default: the spec's distill.init_from)"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="the distillation's folder (default runs/distill_quality/TEACHER)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=5, help="speed: turns per model")
    parser.add_argument("--sequence", type=int, default=5, help="speed: calls per turn")
    args = parser.parse_args(argv)

    import torch

    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.campaigns.engine import calculator
    from tdn_calc.campaigns.placements import distinct_sites, site_namer
    from tdn_calc.distill import load_distill_spec, run_distill
    from tdn_calc.distill.label import clean_slabs, split_placements
    from tdn_calc.distill.spec import SCRATCH
    from tdn_calc.registry import model_path

    torch.set_num_threads(1)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    spec = load_distill_spec(args.spec, teacher=args.teacher)
    shipped = args.shipped or spec.init_from
    if shipped == SCRATCH:
        parser.error("the spec starts from scratch: name the baseline model with --shipped")
    run_dir = args.run_dir or default_run_dir(spec.teacher)
    say(f"distilling {spec.name} from {spec.teacher} in {run_dir}")
    state = run_distill(spec, run_dir, say=say)
    if state.stage != "done":
        say("the distillation stopped before its end; run the same command again to resume")
        return 3
    distilled = Path(state.model)
    if not distilled.is_absolute():
        distilled = run_dir / distilled

    t0 = time.process_time()
    slabs = clean_slabs(spec)
    split = split_placements(spec, slabs)
    namers = {label: site_namer(slab, distinct_sites(slab)) for label, slab in slabs.items()}
    say(
        f"{len(split.holdout)} held-out placements: "
        f"{sorted({(p.surface, p.adsorbate) for p in split.holdout})}"
    )
    refs = teacher_minima(spec, split.holdout, run_dir / "benchmark" / "teacher_minima.json", say)
    models = {"distilled": str(distilled), "shipped": shipped}
    rows = {
        name: evaluate(spec, model, split.holdout, refs, namers) for name, model in models.items()
    }
    summary = {
        name: summarize(r, spec.agreement.energy, spec.agreement.fmax) for name, r in rows.items()
    }
    for name in models:
        say(f"{name}: {json.dumps(summary[name])}")

    # speed on the largest held-out structure, at the teacher's minimum
    largest = max(split.holdout, key=lambda p: (len(p.atoms), p.key))
    atoms = refs[largest.key].atoms.copy()
    atoms.calc = None
    sidecar = run_dir / "models" / f"{spec.name}-uncertainty.json"
    timed = {
        "distilled": TDNCalculator(
            str(distilled),
            device="cpu",
            dtype=spec.campaign.dtype,
            uncertainty=sidecar if sidecar.exists() else False,
        )
    }
    if set(atoms.numbers.tolist()) <= model_elements(shipped):
        timed["shipped"] = TDNCalculator(shipped, device="cpu", dtype=spec.campaign.dtype)
    timed["teacher"] = calculator(spec.teacher, "cpu")
    speeds = speed(timed, atoms, args.repeats, args.sequence)
    cpu = speeds["median_cpu_ms"]
    speeds["teacher_over_distilled_cpu"] = cpu["teacher"] / cpu["distilled"]
    say(f"speed, CPU ms per call: {json.dumps(cpu)}")

    from _common import cpu_model, git_commit, write_json

    from tdn_calc.fileio import sha256_file

    bench_calls = (
        sum(r.calls for r in refs.values())
        + sum(not r["refused"] for part in rows.values() for r in part)
        + 1
        + args.repeats * args.sequence
    )
    spec_rel = args.spec.resolve()
    report = {
        "git_commit": git_commit(str(ROOT)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "spec": {
            "file": str(spec_rel.relative_to(ROOT) if spec_rel.is_relative_to(ROOT) else spec_rel),
            "name": spec.campaign.name,
            "hash": spec.hash(),
            "surfaces": [s.label for s in spec.campaign.surfaces],
            "adsorbates": [a.name for a in spec.campaign.adsorbates],
            "distill": {k: v for k, v in spec.to_dict().items() if k != "campaign"},
        },
        "teacher": spec.teacher,
        "models": {
            "distilled": {"name": spec.name, "sha256": sha256_file(distilled)},
            "shipped": {"name": shipped, "sha256": sha256_file(model_path(shipped))},
        },
        "holdout": {
            "placements": len(split.holdout),
            "training_placements": len(split.train),
            "pairs": sorted(
                f"{a}@{s}" for s, a in {(p.surface, p.adsorbate) for p in split.holdout}
            ),
            "teacher_converged": sum(r.converged for r in refs.values()),
            "teacher_median_steps": float(np.median([r.steps for r in refs.values()])),
        },
        "cost": loop_cost(state),
        "summary": summary,
        "speed": speeds,
        # the measurement after the distillation: reference relaxations (all, also those
        # read back from the run dir), judging single points and the timed calls
        "benchmark": {
            "teacher_calls": bench_calls,
            "reference_teacher_calls": sum(r.calls for r in refs.values()),
            "reference_cpu_seconds": sum(r.cpu_seconds for r in refs.values()),
            "cpu_seconds_this_run": time.process_time() - t0,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report, indent=1)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
