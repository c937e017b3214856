"""Adsorption quality of a TDN catalysis model judged by its teacher (issues 6 and 8).

For every slab+adsorbate trajectory of a split (default: test) of a catalysis data set built
by :mod:`tdn_calc.datagen.catalysis.build`:

1. the start is the trajectory's first relaxation frame, the teacher's own minimum its last
   relaxation frame (energy stored in the data);
2. the start is relaxed with the TDN model (:func:`tdn_calc.relax.relax`, same fixed atoms,
   default optimizer the one the data builder used), then the teacher (SevenNet-0) computes a
   single point on the TDN minimum;
3. adsorption energies follow :mod:`tdn_calc.evaluation.references`' scheme
   ``molecules-O2-N2`` (``tdn adsorb``'s),
   ``E_ads = E(slab+ads) - E(clean slab) - sum_g c_g E(g)`` with gas references from
   :func:`tdn_calc.evaluation.reference_terms` (CO, H2O as themselves; H = 1/2 H2,
   O = 1/2 O2, N = 1/2 N2, C = CH4 - 2 H2, so OH = 1/2 O2 + 1/2 H2, CH3 = CH4 - 1/2 H2).
   The clean slab and gas energies are the teacher's minima of the data set's own clean-slab
   and gas trajectories (lowest converged replica); for the model's own figure they are
   relaxed with TDN from the same starts.

Two errors per system: ``d_teacher`` = teacher E_ads at the TDN minimum - teacher's own E_ads
(the acceptance figure: target median |d| <= 0.05 eV; the references cancel, so this is the
teacher energy difference of the two minima) and ``d_model`` = TDN's own E_ads - teacher's own.
The site (ontop/bridge/fcc/hcp, :func:`tdn_calc.evaluation.classify_site`) of the anchor
atom is classified for both minima (target:
identical in >= 90 %). A second, looser site figure also counts a different site that the
teacher itself puts at least 0.05 eV *lower* than its own minimum (``d_teacher <= -0.05``):
there the teacher's relaxation stopped on a higher stationary point (e.g. an atom held on a
top site by symmetry) and the model went on to a better one. Both are also reported for the
systems with no replica (another seeded start of the same adsorbate, site and metal) in the
training part ("unseen") and the others ("seen"): only the first are new to the model. Exit
status 0 when both targets are met, 1 otherwise.

    nice -n 19 python benchmarks/adsorption_quality.py \
        --model runs/tdn-catalysis/best.safetensors --max-systems 3 --out /tmp/aq.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.data import atomic_numbers

from tdn_calc.data.split import load_split, system_of
from tdn_calc.datagen.catalysis.systems import adsorbate_template
from tdn_calc.errors import InputError
from tdn_calc.evaluation import (
    MOLECULES_O2_N2,
    adsorption_energy,
    canonical_site,
    classify_site,
    error_stats,
    landing,
    lateral_distances,
    metal_layers,
    reference_terms,
)

TARGET_ADS_EV = 0.05  # eV, median |d_teacher| target and the per-system tolerance counted
TARGET_SITE_FRACTION = 0.90
SCHEME = MOLECULES_O2_N2


# ---------------------------------------------------------------- summaries
def novelty_subsets(done: list[dict[str, Any]]) -> dict[str, Any]:
    """``d_teacher`` statistics and same-site fraction of the systems never seen in training
    (``unseen``: no replica of the system in the split's training part) and of the others
    (``seen``: another start of the same system was trained on), when rows say which."""
    out: dict[str, Any] = {}
    for name, seen in (("unseen", False), ("seen", True)):
        part = [r for r in done if r.get("system_in_training") is seen]
        out[name] = {
            "n": len(part),
            "d_teacher": error_stats([r["d_teacher"] for r in part], TARGET_ADS_EV),
            "site_fraction_same": (
                float(np.mean([r["same_site"] for r in part])) if part else math.nan
            ),
        }
    return out


def same_or_lower_site(row: dict[str, Any]) -> bool:
    """The TDN minimum is on the teacher's site, or the teacher itself rates it at least the
    tolerance lower than its own minimum (whose relaxation then stopped too early)."""
    return landing(
        row["d_teacher"],
        0.0,
        str(row["tdn_site"]),
        str(row["teacher_site"]),
        tolerance=TARGET_ADS_EV,
    ).same_site_or_lower


def summarize(rows: list[dict[str, Any]], total: int) -> dict[str, Any]:
    """Summary of evaluated ``rows`` (of ``total`` systems planned): errors, sites, timings."""
    done = [r for r in rows if "error" not in r]
    teacher = error_stats([r["d_teacher"] for r in done], TARGET_ADS_EV)
    same = [r["same_site"] for r in done]
    site_fraction = float(np.mean(same)) if same else math.nan
    same_or_lower = [same_or_lower_site(r) for r in done]
    relax_s = [r["tdn_relax_s"] for r in done]
    sp_s = [r["teacher_sp_s"] for r in done]
    return {
        "n_planned": total,
        "n_evaluated": len(done),
        "n_failed": len(rows) - len(done),
        "n_tdn_converged": sum(r["tdn_converged"] for r in done),
        "n_teacher_converged": sum(r["teacher_converged"] for r in done),
        "d_teacher": teacher,
        "d_model": error_stats([r["d_model"] for r in done], TARGET_ADS_EV),
        "site_fraction_same": site_fraction,
        "by_system_novelty": novelty_subsets(done),
        "site_fraction_same_or_teacher_lower": (
            float(np.mean(same_or_lower)) if done else math.nan
        ),
        "site_mismatches": [
            {k: r[k] for k in ("label", "start_site", "teacher_site", "tdn_site", "d_teacher")}
            for r in done
            if not r["same_site"]
        ],
        "target_ads_met": bool(done) and teacher["median_abs"] <= TARGET_ADS_EV,
        "target_site_met": bool(done) and site_fraction >= TARGET_SITE_FRACTION,
        "seconds_tdn_relax_mean": float(np.mean(relax_s)) if relax_s else math.nan,
        "seconds_teacher_sp_mean": float(np.mean(sp_s)) if sp_s else math.nan,
    }


def _stats_row(what: str, s: dict[str, Any]) -> str:
    """One markdown table row of :func:`error_stats` output."""
    return (
        f"| {what} | {s['median_abs']:.3f} | {s['mean_abs']:.3f} | {s['max_abs']:.3f} | "
        f"{100 * s['fraction_within']:.0f} % | {s['n']} |"
    )


def markdown(summary: dict[str, Any]) -> str:
    """A markdown table of :func:`summarize`'s output."""
    lines = ["| figure | median | mean | max | within 0.05 eV | n |", "|---|---|---|---|---|---|"]
    for key, what in (
        ("d_teacher", "teacher E_ads at TDN min - teacher's own (eV)"),
        ("d_model", "TDN's own E_ads - teacher's own (eV)"),
    ):
        s = summary[key]
        if s.get("n"):
            lines.append(_stats_row(what, s))
    for name, part in summary.get("by_system_novelty", {}).items():
        if part["d_teacher"].get("n"):
            lines.append(
                _stats_row(
                    f"systems {name} in training (other replicas): teacher E_ads at TDN min - own "
                    f"(eV), same site {100 * part['site_fraction_same']:.0f} %",
                    part["d_teacher"],
                )
            )
    lines.append(
        f"\nsame final site: {100 * summary['site_fraction_same']:.0f} % of "
        f"{summary['n_evaluated']} (target >= {100 * TARGET_SITE_FRACTION:.0f} %); "
        f"same site or one the teacher puts >= {TARGET_ADS_EV} eV lower than its own "
        f"minimum: {100 * summary['site_fraction_same_or_teacher_lower']:.0f} %; "
        f"TDN relaxations converged {summary['n_tdn_converged']}/"
        f"{summary['n_evaluated']}; failed {summary['n_failed']}"
    )
    for m in summary["site_mismatches"]:
        lines.append(
            f"- {m['label']}: started {m['start_site']}, teacher {m['teacher_site']}, "
            f"TDN {m['tdn_site']} (d_teacher {m['d_teacher']:+.3f} eV)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- data
def frame_atoms(dataset, index: int, fixed: list[int]) -> Atoms:
    """Frame ``index`` of an :class:`~tdn_calc.data.dataset.H5Dataset` as Atoms, with
    ``FixAtoms`` on the ``fixed`` indices."""
    from tdn_calc.data.dataset import sample_atoms

    atoms = sample_atoms(dataset[index])
    if fixed:
        atoms.set_constraint(FixAtoms(indices=fixed))
    return atoms


def relax_ends(dataset, label: str) -> tuple[int, int]:
    """Frame indices of the first (start) and last (teacher minimum) relaxation frames of
    trajectory ``label``."""
    from tdn_calc.data.frames import FrameKind

    idx = dataset.frames_of([label])
    relax = idx[dataset.frame_kind[idx] == FrameKind.RELAX]
    if relax.size == 0:
        raise InputError(f"trajectory {label!r} has no relaxation frames in {dataset.path}")
    return int(relax[0]), int(relax[-1])


def reference_label(meta: dict[str, dict], prefix: str) -> str:
    """The converged trajectory whose label starts with ``prefix`` (``"Pt111/clean/"``,
    ``"gas/CO/"``) with the lowest teacher energy (all converged replicas are the same
    system)."""
    found = [r for lab, r in meta.items() if lab.startswith(prefix) and r.get("converged")]
    if not found:
        raise InputError(f"no converged {prefix}* trajectory in the data set")
    return min(found, key=lambda r: r["final_energy"])["label"]


@dataclass
class Reference:
    """A clean slab or gas molecule: teacher and TDN minimum energies (eV)."""

    label: str
    teacher_energy: float
    tdn_energy: float
    tdn_converged: bool
    tdn_relax_s: float


# ---------------------------------------------------------------- evaluation
class Evaluator:
    """Relaxes with the TDN calculator, evaluates with the teacher, caches references."""

    def __init__(self, dataset, meta: dict[str, dict], calc, teacher, relax_kwargs: dict):
        self.dataset, self.meta, self.calc, self.teacher = dataset, meta, calc, teacher
        self.relax_kwargs = relax_kwargs
        self.references: dict[str, Reference] = {}

    def _relax(self, label: str) -> tuple[Any, Atoms, int]:
        """TDN relaxation of ``label``'s start: ``(RelaxResult, start, teacher-minimum frame)``."""
        from tdn_calc.relax import relax

        first, last = relax_ends(self.dataset, label)
        start = frame_atoms(self.dataset, first, self.meta[label]["fixed_atoms"])
        result = relax(start, self.calc, warn=False, **self.relax_kwargs)
        return result, start, last

    def reference(self, prefix: str) -> Reference:
        if prefix not in self.references:
            label = reference_label(self.meta, prefix)
            result, _, last = self._relax(label)
            self.references[prefix] = Reference(
                label,
                float(self.dataset.energy[last]),
                result.energy,
                result.converged,
                result.wall_time,
            )
        return self.references[prefix]

    def teacher_check(self, label: str) -> dict[str, Any]:
        """The teacher's energy of the stored teacher minimum of ``label`` against the stored
        one (eV): a different teacher version or precision shows up here."""
        last = relax_ends(self.dataset, label)[1]
        atoms = frame_atoms(self.dataset, last, self.meta[label]["fixed_atoms"])
        atoms.calc = self.teacher
        stored = float(self.dataset.energy[last])
        energy = float(atoms.get_potential_energy())
        return {"label": label, "stored": stored, "recomputed": energy, "diff": energy - stored}

    def system(self, label: str) -> dict[str, Any]:
        """One row: energies (eV), adsorption energies and errors, sites, timings."""
        rec = self.meta[label]
        metal, ads = rec["metal"], rec["adsorbate"]
        terms = reference_terms(adsorbate_template(ads), SCHEME)
        slab = self.reference(f"{label.split('/')[0]}/clean/")  # the same slab size
        gases = {g: self.reference(f"gas/{g}/") for g in terms}
        result, start, last = self._relax(label)
        t0 = time.perf_counter()
        at_tdn = result.atoms.copy()
        at_tdn.calc = self.teacher
        e_teacher_at_tdn = float(at_tdn.get_potential_energy())
        teacher_fmax = float(np.linalg.norm(at_tdn.get_forces(), axis=1).max())
        sp_s = time.perf_counter() - t0
        teacher_min = frame_atoms(self.dataset, last, rec["fixed_atoms"])
        e_teacher = float(self.dataset.energy[last])
        mask = teacher_min.numbers == atomic_numbers[metal]
        anchor = len(teacher_min) - len(adsorbate_template(ads))  # binding atom first
        layers = metal_layers(start, mask)  # layer membership as built, kept for both minima
        teacher_site, teacher_h = classify_site(teacher_min, anchor, mask, layers)
        tdn_site, tdn_h = classify_site(result.atoms, anchor, mask, layers)
        t_gas = {g: r.teacher_energy for g, r in gases.items()}
        m_gas = {g: r.tdn_energy for g, r in gases.items()}
        ads_teacher = adsorption_energy(e_teacher, slab.teacher_energy, t_gas, terms)
        ads_at_tdn = adsorption_energy(e_teacher_at_tdn, slab.teacher_energy, t_gas, terms)
        ads_model = adsorption_energy(result.energy, slab.tdn_energy, m_gas, terms)
        shift = lateral_distances(
            teacher_min.positions[anchor, :2],
            result.atoms.positions[anchor : anchor + 1, :2],
            teacher_min.cell.array,
        )[0]
        return {
            "label": label,
            "metal": metal,
            "adsorbate": ads,
            "start_site": canonical_site(rec["site"]),
            "teacher_converged": bool(rec["converged"]),
            "teacher_n_steps": rec["n_steps"],
            "tdn_converged": result.converged,
            "tdn_n_steps": result.n_steps,
            "tdn_fmax": result.fmax,
            "tdn_reason": result.reason,
            "teacher_energy": e_teacher,
            "teacher_energy_at_tdn_min": e_teacher_at_tdn,
            "teacher_fmax_at_tdn_min": teacher_fmax,
            "tdn_energy": result.energy,
            "e_ads_teacher": ads_teacher,
            "e_ads_teacher_at_tdn_min": ads_at_tdn,
            "e_ads_tdn": ads_model,
            "d_teacher": ads_at_tdn - ads_teacher,
            "d_model": ads_model - ads_teacher,
            "teacher_site": teacher_site,
            "tdn_site": tdn_site,
            "same_site": teacher_site == tdn_site,
            "same_minimum": landing(
                e_teacher_at_tdn, e_teacher, tdn_site, teacher_site, tolerance=TARGET_ADS_EV
            ).same_minimum,
            "teacher_height": teacher_h,
            "tdn_height": tdn_h,
            "anchor_lateral_shift": float(shift),
            "references": {
                "slab": slab.label,
                "gas": {g: r.label for g, r in gases.items()},
                "terms": terms,
                "scheme": SCHEME.name,
            },
            "tdn_relax_s": result.wall_time,
            "teacher_sp_s": sp_s,
        }


def adsorbate_systems(
    dataset, meta: dict[str, dict], split: str, split_file: str | None, card: dict
) -> tuple[list[str], str | None]:
    """Sorted labels of the slab+adsorbate trajectories of ``split`` and the split file used
    (found as :func:`tdn_calc.train.evaluate.select_frames` finds it)."""
    from tdn_calc.train.evaluate import select_frames

    indices, used = select_frames(dataset, split, split_file, card)
    keep = [
        lab
        for lab in dataset.identifiers_of(indices)
        if meta.get(lab, {}).get("kind") == "slab" and meta[lab].get("adsorbate")
    ]
    return sorted(keep), used


def trained_systems(split_file: str | None) -> set[str] | None:
    """Systems (identifiers without their replica tag) with a trajectory in the training part
    of ``split_file``; None without a split file."""
    if not split_file:
        return None
    return {system_of(i) for i in load_split(split_file).train}


def default_out(model: str) -> Path:
    """``benchmarks/results/adsorption_quality_<tag>.json`` (tag: registry name, or
    ``<dir>-<stem>`` of a checkpoint path, as for the organic relaxation benchmark)."""
    from relax_quality_organic import model_tag

    results = Path(__file__).resolve().parent / "results"
    return results / f"adsorption_quality_{model_tag(model)}.json"


def write_json(path: Path, report: dict[str, Any]) -> None:
    from tdn_calc.fileio import atomic_write

    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(report, indent=1, default=float) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tdn-catalysis", help="registry name or .safetensors")
    p.add_argument("--data", default="datasets/catalysis-sevennet0")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument(
        "--split-file",
        default=None,
        help="default: the model card's, else split-seed42.json beside the data",
    )
    p.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--optimizer", default=None, help="default: the data builder's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-systems", type=int, default=None)
    p.add_argument("--systems", default=None, help="comma-separated labels (default: all)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import torch

    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.datagen.catalysis.build import read_metadata
    from tdn_calc.relax.inputs import load_job_model
    from tdn_calc.relax.outputs import versions
    from tdn_calc.teachers import get_teacher

    torch.set_num_threads(args.threads)
    recipe_path = Path(args.data) / "build_config.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.exists() else {}
    model, info = load_job_model(args.model, [], args.device, args.dtype)
    dataset = H5Dataset(args.data)
    present = set(dataset.identifiers)  # a shard still being written is not readable yet
    meta = {label: m for label, m in read_metadata(args.data).items() if label in present}
    labels, used_split = adsorbate_systems(
        dataset, meta, args.split, args.split_file, getattr(model, "card", {}) or {}
    )
    if args.systems:
        wanted = args.systems.split(",")
        unknown = sorted(set(wanted) - set(labels))
        if unknown:
            raise InputError(f"{unknown} are not slab+adsorbate systems of the {args.split} split")
        labels = wanted
    labels = labels[: args.max_systems]
    trained = trained_systems(used_split)
    teacher_name = recipe.get("teacher", "sevenn-0")
    relax_kwargs = {
        "fmax": args.fmax,
        "steps": args.steps,
        "optimizer": args.optimizer or recipe.get("optimizer", "FIRE"),
    }
    ev = Evaluator(
        dataset, meta, TDNCalculator(model), get_teacher(teacher_name, "cpu"), relax_kwargs
    )
    out = Path(args.out) if args.out else default_out(args.model)
    report: dict[str, Any] = {
        "benchmark": "adsorption_quality",
        "model": info,
        "data": str(args.data),
        "reference_method": dataset.reference_method,
        "teacher": teacher_name,
        "split": args.split,
        "split_file": used_split,
        "settings": relax_kwargs,
        "versions": versions(),
        "scheme": "E_ads = E(slab+ads) - E(clean slab) - "
        "sum_g c_g E(g), tdn_calc.evaluation.reference_terms",
        "reference_scheme": SCHEME.name,
        "rows": [],
    }
    if labels:
        report["teacher_check"] = check = ev.teacher_check(labels[0])
        print(
            f"teacher check on {check['label']}: recomputed - stored = "
            f"{1000 * check['diff']:+.2f} meV",
            flush=True,
        )
    t_start = time.perf_counter()
    for k, label in enumerate(labels):
        try:
            row = ev.system(label)
        except Exception as exc:  # recorded, the run goes on
            row = {"label": label, "error": f"{type(exc).__name__}: {exc}"}
        if trained is not None:
            row["system_in_training"] = system_of(label) in trained
        report["rows"].append(row)
        report["references"] = {p: vars(r) for p, r in ev.references.items()}
        report["summary"] = summarize(report["rows"], len(labels))
        report["seconds"] = time.perf_counter() - t_start
        write_json(out, report)  # after each system: a long run keeps what it did
        msg = row.get("error") or (
            f"d_teacher {row['d_teacher']:+.3f} eV, d_model "
            f"{row['d_model']:+.3f} eV, site {row['teacher_site']}/"
            f"{row['tdn_site']}, TDN {row['tdn_relax_s']:.1f} s "
            f"({row['tdn_n_steps']} steps), teacher "
            f"{row['teacher_sp_s']:.1f} s"
        )
        print(f"[{k + 1}/{len(labels)}] {label}: {msg}", flush=True)
    if not labels:
        print("no slab+adsorbate systems in this split", file=sys.stderr)
        return 1
    print(markdown(report["summary"]))
    print(f"wrote {out}")
    summary = report["summary"]
    return 0 if summary["target_ads_met"] and summary["target_site_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
