"""Render the figures of README.md and docs/*.md from the JSON files that wrote them.

Every table of measured figures in the docs sits between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->``; this script replaces the inside of each block with the table
that the renderer ``NAME`` builds from its JSON files (``benchmarks/results/*.json``, written
by the benchmark scripts, and ``models/manifest.json``, whose metrics
``tools/register_model.py`` and ``tdn eval`` write), followed by a line naming those files
with the commit and date they came from (a block whose benchmark has not been run yet,
distill-quality without its JSON, holds a note saying how to run it and no such line). The
model-speed section of docs/benchmarks.md keeps its own markers and is rendered by
``_speed_report.markdown_report``, and the accuracy section is the one
``benchmarks/accuracy.py`` writes (its ``doc_body``), both from their JSON.

    python benchmarks/render_docs.py            # rewrite the blocks (make docs)
    python benchmarks/render_docs.py --check    # exit 1 if any block is stale (tests do this)

The commit and date of a JSON are its own (``git_commit``/``commit``/``environment.commit``,
``created``/``date``) where it records them, else those of the last git commit that changed
the file: commit a re-measured JSON first, then run ``make docs`` and commit the docs.
No model is loaded or evaluated here.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks/results")
MANIFEST = Path("models/manifest.json")

BLOCK = re.compile(
    r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S
)

# Names of the model files that benchmark JSONs record only as paths and sha256; the figures
# are read from the JSONs, these are only the words a reader needs to tell the rows apart.
MODEL_LABELS = {
    "247457cf": "tdn-organic, second stage",
    "17ba9e10": "tdn-organic, third stage, layer-norm floor 1e-5",
    "4eff0dc6": "tdn-organic, third stage, floor 1e-3",
    "8000b108": "tdn-organic, fourth stage (experiment)",
    "1061881c": "tdn-catalysis 2026-11-25 (trajectory split; withdrawn)",
    "44f7f431": "tdn-catalysis v2 (experiment)",
    "60c41e3b": "tdn-catalysis v3, layer-norm floor 1e-5",
    "89e69647": "tdn-catalysis v3, floor 1e-2",
    "2a6e208e": "tdn-catalysis v4 (experiment)",
    "1230b8f4": "tdn-catalysis v5 (experiment)",
    "42e71643": "tdn-catalysis v6 (experiment)",
    "51878459": "tdn-catalysis 2 v6 (shipped as tdn-catalysis-20261207-3 with its training-set "
                "summary attached: same weights)",
    "adca724b": "tdn-catalysis 2 v7 (shipped as tdn-catalysis-20261207-4 with its training-set "
                "summary attached: same weights)",
    "ea09d642": "tdn-catalysis 2 v8 (candidate, not shipped)",
    "fbfdf61d": "tdn-catalysis 2 v5 (shipped as tdn-catalysis-20261207-2 with its training-set "
                "summary attached: same weights)",
}

# What the shipped models are for, in words (the figures come from the manifest and JSONs).
MODEL_SCOPE = {
    "tdn-organic": (
        "small neutral closed-shell organic molecules (≤ 16 heavy atoms)",
        "not for charged or open-shell species, metals or condensed phases",
    ),
    "tdn-catalysis": (
        "(111), (100), (110), (211) slabs of Pt Pd Ni Cu Ag Au Rh Ir and hcp(0001) of Ru Co, "
        "3–7 layers, A3B/AB and single-atom alloys, 25 C/H/N/O adsorbates and co-adsorbed "
        "pairs, bulk and strained bulk, gas molecules (2,497 of the coverage2 recipe's 3,612 "
        "trajectories), with the first set's (111) slabs of six fcc metals and eight adsorbates",
        "{note}",
    ),
}


# ---------------------------------------------------------------------------- provenance


def _load(rel: Path) -> dict:
    return json.loads((ROOT / rel).read_text(encoding="utf-8"))


def _git(rel: Path) -> tuple[str, str]:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h,%cs", "--", str(rel)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    commit, _, date = out.partition(",")
    return commit or "uncommitted", date or "date unknown"


def provenance(rel: Path) -> tuple[str, str]:
    """(short commit, YYYY-MM-DD) of a JSON file: its own record where it has one, else git's."""
    data = _load(rel)
    env = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    commit = env.get("commit") or data.get("git_commit") or data.get("commit")
    date = env.get("date") or data.get("created")
    git_commit, git_date = _git(rel) if not (commit and date) else ("", "")
    if commit:
        match = re.match(r"([0-9a-f]{7,40})(\+dirty)?$", str(commit))
        commit = match.group(1)[:7] + (match.group(2) or "") if match else str(commit)
    return commit or git_commit, str(date)[:10] if date else git_date


def footer(sources: list[Path]) -> str:
    parts = []
    for rel in sources:
        commit, date = provenance(rel)
        parts.append(f"{rel.as_posix()} (commit {commit}, {date})")
    return "Generated by `make docs` from " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------- formatting


def _n(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _pct(frac: float | None) -> str:
    return "–" if frac is None or frac != frac else f"{100 * frac:.0f} %"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _model_label(path: str, sha256: str) -> str:
    label = MODEL_LABELS.get(sha256[:8])
    return f"{label} (`{sha256[:8]}`)" if label else f"`{Path(path).name}` (`{sha256[:8]}`)"


def _systems(rows: list[dict]) -> int:
    return len({re.sub(r"/r\d+$", "", r["label"]) for r in rows})


def _results(pattern: str) -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / RESULTS).glob(pattern))


# ---------------------------------------------------------------------------- renderers


#: manifest metrics of relaxation tests judged by SevenNet-0: (key, what the systems are)
ADSORPTION_METRICS = (("adsorption", "test"), ("adsorption_val", "validation"),
                      ("adsorption_111", "first-set (111) test"),
                      ("adsorption_111_val", "first-set (111) validation"))


def render_models() -> tuple[list[str], list[Path]]:
    """README: what each shipped model covers, its test errors and relaxation quality."""
    manifest = _load(MANIFEST)["models"]
    sources = [MANIFEST]
    rows = []
    earlier = [(n, c["superseded_by"]) for n, c in manifest.items() if c.get("superseded_by")]
    partner_of = {((c.get("uncertainty") or {}).get("committee") or {}).get("model"): n
                  for n, c in manifest.items() if not c.get("superseded_by")}
    for name, card in manifest.items():
        if card.get("superseded_by"):
            continue  # an earlier version, loadable under its dated name (listed below)
        aliases = ", ".join(f"`{a}`" for a in card.get("aliases", []))
        role = f"committee partner of `{partner_of[name]}`" if name in partner_of else ""
        extra = ", ".join(x for x in (aliases, "default" if card.get("default") else "", role)
                          if x)
        title = f"`{name}`" + (f" ({extra})" if extra else "")
        method = card["reference_method"]
        if "SevenNet" in method:
            trained = "distilled from **SevenNet-0** (a PBE-level universal potential, not DFT)"
        else:
            trained = "**GFN2-xTB** labels (tblite)"
        n_frames = card["dataset"]["n_frames"]
        scope, limits = MODEL_SCOPE.get(name, ("", ""))
        limits = limits.format(**card.get("limits", {}))
        trained += f"; {n_frames:,} frames of {scope}" if scope else f"; {n_frames:,} frames"
        test = card["metrics"]["test"]
        errors = (
            f"E MAE {test['energy_mae_meV_atom']:.1f} meV/atom, F MAE "
            f"{test['forces_mae_meV_A']:.1f} meV/Å ({test['n_frames']:,} frames of "
            f"{test['n_structures']} trajectories never trained on)"
        )
        judged = []
        metrics = card["metrics"]
        if "relaxation" in metrics:
            rel = RESULTS / metrics["relaxation"]["file"]
            sources.append(rel)
            report = _load(rel)
            s, st = report["summary"], report["settings"]
            oracle = _pct(s["oracle_n_success"] / s["oracle_n_judged"])
            judged.append(
                f"{s['n_judged']} test molecules from perturbed starts, fmax {st['fmax']}, "
                f"optimizer {st['optimizer']}: median {s['delta_e_meV_atom_median']:.1f} "
                f"meV/atom above GFN2-xTB's own minimum, {_pct(s['success_rate'])} within "
                f"1 meV/atom (GFN2-xTB itself: {oracle}), "
                f"bonding changed in {s['n_bonds_changed_tdn']}"
            )
        for key, part in ADSORPTION_METRICS:
            if key not in metrics:
                continue
            rel = RESULTS / metrics[key]["file"]
            sources.append(rel)
            report = _load(rel)
            s = report["summary"]
            landed = (f"lands in SevenNet-0's minimum {_pct(s['landed_fraction'])} "
                      f"({s['n_refused']} of {s['n_planned']} refused), "
                      if "landed_fraction" in s else "")  # fmt: skip
            judged.append(
                f"{s['n_evaluated']} starts of {_systems(report['rows'])} unseen {part} systems: "
                f"{landed}adsorption energy at the TDN minimum "
                f"{s['d_teacher']['median_abs']:.3f} eV from SevenNet-0's own (median), same "
                f"site {_pct(s['site_fraction_same'])}"
            )
        rows.append([title, " ".join(card["elements"]), trained, errors, "; ".join(judged), limits])
    head = [
        "model",
        "elements",
        "trained on",
        "test errors",
        "relaxations judged by the reference",
        "known limits",
    ]
    lines = _table(head, rows)
    if earlier:
        lines += ["", "Earlier versions, still loadable by their dated names (never chosen by "
                  "`--model auto`): " + "; ".join(f"`{n}` (before `{new}`)" for n, new in earlier)
                  + "."]  # fmt: skip
    return lines, sources


README_SPEED_CONTENDERS = ("(shipped)", "GFN2-xTB", "MACE fast-size", "SevenNet-0", "CHGNet")


def render_speed() -> tuple[list[str], list[Path]]:
    """README: CPU time per call of the shipped models and of the peers a user would pick."""
    from _speed_report import _crossover_table, _main_table, _targets

    rel = RESULTS / "model_speed.json"
    results = _load(rel)
    keep = [
        c for c in results["contenders"] if any(k in c["name"] for k in README_SPEED_CONTENDERS)
    ]
    lines = _main_table(dict(results, contenders=keep), "median_cpu_ms")
    cpu = results["table"]["median_cpu_ms"]
    shipped = [c["name"] for c in keep if "(shipped)" in c["name"]]
    peers = [c["name"] for c in keep if "(shipped)" not in c["name"]]
    ratios = []
    for tdn in shipped:
        for peer in peers:
            if "GFN2" in peer and "organic" not in tdn:
                continue  # the teacher of tdn-organic only
            common = [s for s in results["systems"] if s in cpu[tdn] and s in cpu.get(peer, {})]
            if common:
                span = [cpu[peer][s] / cpu[tdn][s] for s in common]
                ratios.append(
                    f"{tdn.removeprefix('tdn ').removesuffix(' (shipped)')} vs "
                    f"{peer} {min(span):.1f}–{max(span):.1f}×"
                )
    sequence = results["table"].get("sequence", 1)
    how = (
        f"{results['repeats']} turns of {sequence} consecutive calls on moving positions, "
        "as in a relaxation, median of the calls after the first of each turn"
        if sequence > 1
        else f"median of {results['repeats']}"
    )
    lines = [
        f"Process CPU time, ms per energy+forces call ({how}; one thread, all contenders "
        "interleaved in one run):",
        "",
        *lines[: 2 + len(keep)],
        "",
        "MACE fast-size has random weights at the shipped TDN models' size (the cost does not "
        "depend on the weights); SevenNet-0 and CHGNet are their pretrained models; GFN2-xTB "
        "(tblite) is tdn-organic's teacher. Speed-up of the shipped models (peer ÷ TDN, over "
        "the structures both ran): " + "; ".join(ratios) + ".",
        "",
        "Targets (wall-clock ratios of the medians, CPU-time ratios in brackets"
        + (
            "; the last column: the first call of each turn, which runs right after another "
            "contender's work with cold caches"
            if sequence > 1
            else ""
        )
        + "):",
        "",
        *_targets(results)[:-2],
    ]
    if results.get("crossover"):
        lines += [
            "",
            "tdn-organic against its own teacher, by molecule size (ms per call):",
            "",
            *_crossover_table(results["crossover"]),
        ]
    return lines, [rel]


def render_relax_quality() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: every relax_quality_organic_*.json, one row each."""
    shipped = _load(MANIFEST)["models"]["tdn-organic"]["metrics"].get("relaxation", {})
    sources = _results("relax_quality_organic_*.json")
    rows = []
    for rel in sources:
        r = _load(rel)
        s, st = r["summary"], r["settings"]
        mark = " **(shipped)**" if rel.name == shipped.get("file") else ""
        oracle = (
            f"{s['oracle_n_success']} / {_n(s['oracle_delta_e_meV_atom_median'], 2)}"
            if s.get("oracle_n_judged")
            else "–"
        )
        rows.append(
            [
                f"`{rel.name}`",
                _model_label(r["model"]["path"], r["model"]["sha256"]) + mark,
                st.get("split", "test"),
                st.get("optimizer", "not recorded (FIRE then)"),
                str(s["n_judged"]),
                str(s["n_success"]),
                _n(s["delta_e_meV_atom_median"], 2),
                _n(s["delta_e_meV_atom_p95"]),
                _n(s["delta_e_meV_atom_max"]),
                str(s["n_bonds_changed_tdn"]),
                _n(s["gfn2_fmax_at_tdn_min_median"], 2),
                _n(s["tdn_steps_median"], 0),
                oracle,
            ]
        )
    head = [
        "JSON",
        "model",
        "split",
        "optimizer",
        "molecules",
        "within 1 meV/atom, bonds kept",
        "median ΔE meV/atom",
        "p95",
        "max",
        "bonds changed",
        "GFN2 fmax at TDN min (median) eV/Å",
        "median steps",
        "GFN2-xTB itself, same protocol: within 1 meV/atom / median ΔE",
    ]
    return _table(head, rows), sources


def render_adsorption_quality() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: every adsorption_quality_*.json, one row each."""
    metrics = _load(MANIFEST)["models"]["tdn-catalysis"]["metrics"]
    shipped = {metrics[k]["file"] for k, _ in ADSORPTION_METRICS if k in metrics}
    sources = _results("adsorption_quality_*.json")
    rows = []
    for rel in sources:
        r = _load(rel)
        s = r["summary"]
        seen = s.get("by_system_novelty", {}).get("seen", {}).get("n", 0)
        mark = " **(shipped)**" if rel.name in shipped else ""
        rows.append(
            [
                f"`{rel.name}`",
                _model_label(r["model"]["path"], r["model"]["sha256"]) + mark,
                r.get("split", "test"),
                str(s["n_evaluated"]),
                str(_systems(r["rows"])),
                str(seen),
                str(s["n_tdn_converged"]),
                _n(s["d_teacher"]["median_abs"], 3),
                _n(s["d_teacher"]["mean_abs"], 3),
                _pct(s["d_teacher"]["fraction_within"]),
                _pct(s["site_fraction_same"]),
                _pct(s.get("site_fraction_same_or_teacher_lower")),
                _n(s["d_model"].get("median_abs"), 3),  # none without gas references
            ]
        )
    head = [
        "JSON",
        "model",
        "split part",
        "starts",
        "systems",
        "starts of systems with another start trained on",
        "TDN converged",
        "median \\|d_teacher\\| eV",
        "mean",
        "within 0.05 eV",
        "same site",
        "same site or teacher lower",
        "median \\|d_model\\| eV",
    ]
    return _table(head, rows), sources


def render_optimizer_cost() -> tuple[list[str], list[Path]]:
    sources = _results("optimizer_cost_*.json")
    rows = []
    for rel in sources:
        r = _load(rel)
        f, b = r["summary"]["FIRE"], r["summary"]["BFGS"]
        rows.append(
            [
                f"{r['n']} {r['structures']} ({r['n_atoms_total']:,} atoms), {r['model']}",
                f"{_n(f['median_wall_s'], 2)} / {f['steps']:,} / {f['converged']}",
                f"{_n(b['median_wall_s'], 2)} / {b['steps']:,} / {b['converged']}",
                _n(r["summary"]["bfgs_over_fire_wall"], 2),
            ]
        )
    head = [
        "structures, model",
        "FIRE: wall s / steps / converged",
        "BFGS: wall s / steps / converged",
        "BFGS / FIRE wall",
    ]
    return _table(head, rows), sources


def render_wait_policy() -> tuple[list[str], list[Path]]:
    sources = _results("wait_policy*.json")
    rows = []
    for rel in sources:
        r = _load(rel)
        cells = [
            f"{_n(r['median_s'][p], 2)} s ({', '.join(_n(x, 2) for x in r['seconds'][p])})"
            for p in ("ACTIVE", "PASSIVE")
        ]
        busy = f"{r['busy']} busy processes" if r["busy"] else "none (idle machine)"
        rows.append([busy, str(r["threads"]), *cells, f"{r['ratio_active_over_passive']:.1f}×"])
    head = [
        "background",
        "torch threads",
        "ACTIVE (spin): median (runs)",
        "PASSIVE (sleep): median (runs)",
        "ACTIVE / PASSIVE",
    ]
    return _table(head, rows), sources


EXTRAPOLATION_FILES = ("extrapolation_tdn-organic-s3.json", "extrapolation_tdn-catalysis.json")


def render_extrapolation() -> tuple[list[str], list[Path]]:
    lines: list[str] = []
    sources = [RESULTS / f for f in EXTRAPOLATION_FILES]
    for rel in sources:
        r = _load(rel)
        name = r.get("model_name") or Path(r["model"]).stem
        rows = [
            [
                f"{name}: {set_name}",
                str(s["n_scored"]),
                _n(100 * s["frac_atoms_flagged"]),
                _n(100 * s["frac_structures_flagged"], 0),
                _n(s["force_error_median_meV_A"], 0),
                _n(s["spearman_atoms"], 2),
            ]
            for set_name, s in r["sets"].items()
            if "frac_atoms_flagged" in s
        ]
        if lines:
            lines.append("")
        lines += _table(
            [
                "set",
                "structures",
                "% atoms flagged",
                "% structures flagged",
                "median \\|ΔF\\| meV/Å",
                "Spearman(score, \\|ΔF\\|) per atom",
            ],
            rows,
        )
        p = r["pooled"]
        lines += [
            "",
            f"{name} (`{r['model']}`): pooled Spearman {p['spearman_atoms']:.2f} per "
            f"atom, {p['spearman_structures']:.2f} per structure; mean force error of "
            f"flagged atoms {p['force_error_flagged_meV_A']:,.0f} meV/Å vs "
            f"{p['force_error_unflagged_meV_A']:,.0f} unflagged.",
        ]
    return lines, sources


def render_finish_quality() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: benchmarks/finish_quality.py, one row per mode and chemistry."""
    rel = RESULTS / "finish_quality.json"
    r = _load(rel)
    modes = {
        "teacher": "teacher alone",
        "uncertain": "student + finish when uncertain",
        "unverified": "student + finish when unverified",
        "always": "student + finish always",
        "unverified-loose": "student + finish when unverified at {loose} eV/Å",
        "uncertain-or-unverified-loose": "student + finish when uncertain or unverified at "
                                         "{loose} eV/Å",
    }
    rows = [
        [
            modes.get(mode, mode).format(loose=r.get("loose_verify_fmax")),
            group,
            str(part["starts"]),
            _pct(part["landed"]),
            _pct(part["at_or_below"]),
            str(part["teacher_calls"]),
            _pct(part["calls_vs_teacher_only"]),
        ]
        for mode, groups in r["summary"].items()
        for group, part in groups.items()
    ]
    lines = [
        f"Student {r['model']}, teacher {r['teacher']}, fmax {r['fmax']} eV/Å, "
        f"{len(r['starts'])} starts (known chemistry: CO, O, H on Pt/Cu(111); new: COOH "
        "and NNH on Pt(111), CO on Pt(100), O on Cu(100)). Landed: same site, bonds kept "
        "and teacher energy within 50 meV of the teacher-alone minimum from the same start; "
        "at or below: bonds kept and no more than 50 meV above it (a lower minimum "
        "counts, as in AdsorbML's success test).",
        "",
    ]
    lines += _table(
        [
            "mode",
            "chemistry",
            "starts",
            "landed",
            "at or below",
            "teacher calls",
            "calls vs teacher alone",
        ],
        rows,
    )
    flag = (r.get("student_minima") or {}).get("all")
    if flag:
        lines += ["", f"The student's own minima: {flag['student_bad']} of {flag['starts']} "
                  "bad by the issue's definition (teacher fmax there above 0.5 eV/Å or "
                  "teacher energy 0.2 eV above the teacher-alone minimum), "
                  f"{flag['bad_unflagged']} of them not flagged uncertain."]
    return lines, [rel]


SCREENING_COMMAND = "OMP_NUM_THREADS=1 nice python benchmarks/screening_quality.py"


def render_screening_quality() -> tuple[list[str], list[Path]]:
    """docs/campaigns.md: benchmarks/screening_quality.py, one row per (surface, adsorbate),
    the totals per run and the student campaign's wall times; a note while not measured."""
    rel = RESULTS / "screening_quality.json"
    if not (ROOT / rel).is_file():
        return [f"Not measured yet: `{SCREENING_COMMAND}` writes {rel.as_posix()}; commit it, "
                "then `make docs`."], []  # fmt: skip
    r = _load(rel)

    def judged(part: dict) -> str:
        if part["teacher_e_ads"] is None:
            return "no valid minimum"
        delta = "" if part["error_eV"] is None else f" ({part['error_eV']:+.2f})"
        mark = {True: "✓", False: "✗", None: "–"}[part["success"]]
        return f"{part['e_ads']:+.2f} → {part['teacher_e_ads']:+.2f}{delta} {mark}"

    rows = []
    for p in r["pairs"]:
        ref, student, finish = p["teacher"], p["student"], p["finish"]
        rows.append([
            f"{p['adsorbate']} on {p['surface']}", str(ref["placements"]),
            "–" if p["teacher_lowest_e_ads"] is None
            else f"{p['teacher_lowest_e_ads']:+.2f} ({ref['site']})",
            judged(student), judged(finish),
            f"{finish['finished']}/{finish['placements']}",
            f"{finish['teacher_calls']} / {ref['teacher_calls']}",
        ])  # fmt: skip
    runs = {"student": f"{r['model']} alone", "finish": f"{r['model']} + finish when uncertain",
            "teacher": f"{r['teacher']} alone"}  # fmt: skip
    totals = []
    for mode, label in runs.items():
        o = r["overall"][mode]
        rate = "reference" if mode == "teacher" else (
            f"{_pct(o['success_rate'])} ({o['successes']}/{o['judged_pairs']})")  # fmt: skip
        calls = o["teacher_calls"]
        totals.append([
            label, rate, f"{o['valid']}/{o['placements']}",
            ", ".join(str(v) for v in o["anomalies"].values()), str(o["unconverged"]),
            f"{calls['total']} ({calls['placements']} + {calls['references']})",
        ])  # fmt: skip
    sites = "the distinct sites and " if r["placement"]["sites"] else ""
    lines = [
        f"Student {r['model']}, teacher {r['teacher']} ({r['spec']}: "
        f"{', '.join(r['adsorbates'])} on {', '.join(r['surfaces'])}; {sites}"
        f"{r['placement']['random']} random placements per pair; fmax {r['relax']['fmax']} "
        f"eV/Å, optimizer {r['relax']['optimizer']}, lattice constants from the teacher). "
        "Per pair: the teacher's lowest valid E_ads over its own relaxations of the "
        "placements (eV, site), and for each campaign its lowest valid E_ads → the teacher's "
        "E_ads at that structure (difference to the teacher's lowest); ✓: within "
        f"{r['success_margin_eV']} eV of it or below (AdsorbML). The teacher's E_ads at a "
        "student minimum is a single point (as AdsorbML's DFT single points); where the "
        "teacher finished it, its own final energy; teacher references from the teacher's "
        "run throughout.",
        "",
    ]
    lines += _table(["pair", "placements", "teacher lowest", "student alone",
                     "student + finish", "finished", "teacher calls: finish / teacher alone"],
                    rows)  # fmt: skip
    lines += ["", "Totals (anomalies: desorbed, dissociated, surface changed, intercalated; "
              "teacher calls on placements + clean slabs and gases, lattice fits not "
              "counted):", ""]  # fmt: skip
    lines += _table(["run", "success", "valid", "anomalies", "unconverged", "teacher calls"],
                    totals)  # fmt: skip
    timing = r["student_wall_time"]
    dask = timing["dask"]
    if "skipped" in dask:
        where = f"Dask not timed ({dask['skipped']})"
    else:
        where = "; ".join(
            f"Dask, {key.split('_')[1]} worker(s): {_n(d['wall_s'])} s (cluster start "
            f"{_n(d['cluster_start_s'])} s apart; lowest E_ads within "
            f"{_n(d['max_abs_delta_e_ads_eV'], 4)} eV of this process's)"
            for key, d in dask.items())  # fmt: skip
    lines += ["", f"Wall time of the student campaign ({r['placements']['student']} "
              f"placements, one thread per process, {r['cpu']}): in this process "
              f"{_n(timing['in_process_s'])} s; {where}. Each includes loading the model "
              "once per process."]  # fmt: skip
    return lines, [rel]


DISTILL_QUALITY = RESULTS / "distill_quality.json"
DISTILL_QUALITY_COMMAND = "OMP_NUM_THREADS=1 nice python benchmarks/distill_quality.py"


def distill_quality_lines(r: dict) -> list[str]:
    """The distill-quality block of one report of benchmarks/distill_quality.py."""
    spec, cost, speed = r["spec"], r["cost"], r["speed"]
    target = spec["distill"]["agreement"]
    lines = [
        f"Spec `{spec['file']}`: {', '.join(spec['adsorbates'])} on "
        f"{', '.join(spec['surfaces'])}, teacher {r['teacher']}, distilled from "
        f"{r['models']['shipped']['name']}. Judged on the held-out pairs "
        f"{', '.join(r['holdout']['pairs'])} ({r['holdout']['placements']} placements, "
        "never explored or trained on): each model relaxes every placement and the "
        "teacher's single point at its minimum gives |ΔE| and the teacher's fmax "
        f"there (the loop's check; target: medians ≤ {target['energy']:g} eV and "
        f"≤ {target['fmax']:g} eV/Å); landed: same site, bonds kept and within 50 meV "
        "of the teacher's own minimum from the same start; errors at the teacher's "
        "minima: |ΔE| and force MAE over the free atoms.",
        "",
    ]
    rows = []
    for key in ("shipped", "distilled"):
        s = r["summary"][key]
        a = s["agreement"]
        rows.append(
            [
                f"{key} `{r['models'][key]['name']}` (`{r['models'][key]['sha256'][:8]}`)",
                f"{s['n']} ({s['refused']} refused)",
                _n(a["median_abs_de_eV"], 3),
                _n(a["median_teacher_fmax_eV_A"], 3),
                _pct(s["within_target"]),
                _pct(s["landed"]),
                _pct(s["at_or_below"]),
                _n(s["median_abs_de_at_teacher_min_eV"], 3),
                _n(s["median_force_mae_at_teacher_min_eV_A"], 3),
            ]
        )
    lines += _table(
        [
            "model",
            "held-out placements",
            "median \\|ΔE\\| at its minima eV",
            "median teacher fmax there eV/Å",
            "within target",
            "landed",
            "at or below",
            "median \\|ΔE\\| at teacher minima eV",
            "median force MAE there eV/Å",
        ],
        rows,
    )
    cpu = speed["median_cpu_ms"]
    timed = ", ".join(f"{name} {_n(ms, 1)}" for name, ms in cpu.items())
    lines += [
        "",
        f"Cost of the distillation (its `state.json`): {cost['rounds']} rounds "
        f"(stopped by {cost['stop_reason']}), {cost['frames']:,} frames, "
        f"{cost['teacher_calls']:,} teacher calls, {cost['cpu_hours']:.2f} CPU hours "
        f"({cost['cpu_seconds'] / 60:.0f} CPU-minutes); "
        f"the benchmark's own reference relaxations and checks took another "
        f"{r['benchmark']['teacher_calls']:,} teacher calls. Speed on a held-out "
        f"{speed['structure']} ({speed['n_atoms']} atoms, the teacher's minimum), CPU ms "
        f"per energy+forces call on one thread: {timed} (teacher ÷ distilled: "
        f"{speed['teacher_over_distilled_cpu']:.1f}×).",
    ]
    return lines


def render_distill_quality() -> tuple[list[str], list[Path]]:
    """docs/campaigns.md: benchmarks/distill_quality.py (a note until it has been run)."""
    if not (ROOT / DISTILL_QUALITY).exists():
        return [
            f"Not measured yet: `{DISTILL_QUALITY_COMMAND}` writes "
            f"`{DISTILL_QUALITY.as_posix()}`; `make docs` renders it here."
        ], []
    return distill_quality_lines(_load(DISTILL_QUALITY)), [DISTILL_QUALITY]


def render_uncertainty() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: benchmarks/uncertainty_study.py's candidates, one row each."""
    rel = RESULTS / "uncertainty_study.json"
    r = _load(rel)
    counts = ", ".join(
        f"{g.replace('_', ' ')} {c['n']} ({c['bad']} bad)" for g, c in r["counts"].items()
    )
    cost = r["cost"]

    def rate(part: dict, key: str) -> str:
        return f"{_pct(part[key])} of {part['n_bad' if key == 'recall_bad' else 'n_good']}"

    rows = []
    for c in r["candidates"]:
        fixed = c.get("at_fixed_threshold")
        rows.append(
            [
                c["name"],
                _n(c["auroc"], 2),
                _n(c["auroc_atoms"], 2),
                _n(c["threshold_calibrated"], 2),
                f"{rate(c['held_out_half'], 'recall_bad')} / "
                f"{rate(c['held_out_half'], 'false_flag_good')}",
                f"{rate(c['all'], 'recall_bad')} / {rate(c['all'], 'false_flag_good')}",
                "–"
                if not fixed
                else f"{_n(c['threshold_fixed'], 2)}: {_pct(fixed['recall_bad'])}"
                f" / {_pct(fixed['false_flag_good'])}",
                _n(c["extra_ms_38_atoms"], 2),
            ]
        )
    lines = [
        f"Starts: {counts}; labels by {r['teacher']} (bad: teacher fmax at the TDN "
        f"minimum > {r['labels']['bad_fmax_eV_A']} eV/Å or > {r['labels']['bad_dE_eV']} eV "
        f"above the teacher's nearby minimum). Model {r['model']} "
        f"(`{r['model_sha256'][:8]}`).",
        "",
    ]
    lines += _table(
        [
            "score (max over atoms)",
            "AUROC",
            "AUROC per atom",
            "threshold (even starts)",
            "odd starts: bad flagged / good flagged",
            "all starts: bad / good flagged",
            "threshold 1 (99.9 % of training atoms below): bad / good",
            "ms per call (38 atoms)",
        ],
        rows,
    )
    shipped = r["shipped"]
    shipped_ms = next(c["extra_ms_38_atoms"] for c in r["candidates"] if "shipped" in c["name"])
    lines += [
        "",
        f"Shipped: `{shipped['method']}` (models/{shipped['file']}), threshold "
        f"{shipped['threshold']:g}: {rate(shipped['all'], 'recall_bad')} bad and "
        f"{rate(shipped['all'], 'false_flag_good')} good structures flagged. By set (bad "
        "flagged/bad, good flagged/good): "
        + "; ".join(
            f"{g.replace('_', ' ')} {c['bad_flagged']}/{c['bad']}, {c['good_flagged']}/{c['good']}"
            for g, c in shipped["by_group"].items()
        )
        + ".",
        "",
    ]
    split = shipped.get("test_split")
    if split:
        kinds = ", ".join(
            f"{k} {_pct(v['flagged'])} of {v['n']}" for k, v in split["by_kind"].items()
        )
        lines += [
            f"On {split['n_frames']} random test-split frames (systems held out of "
            "training, stored SevenNet-0 labels) it flags "
            f"{_pct(split['frames_flagged'])} of the frames ({kinds}) and "
            f"{_pct(split['atoms_flagged'])} of the atoms; {split['bad_frames']} frames "
            f"have an atom with \\|ΔF\\| > 0.5 eV/Å, {_pct(split['recall_bad'])} of "
            f"them flagged, {_pct(split['false_flag_good'])} of the others (AUROC "
            f"{_n(split['auroc'], 2)}).",
            "",
        ]
    lines += [
        "Cost on a 38-atom Pt(111)+CO slab (float32, one CPU thread): the "
        f"shipped score itself {shipped_ms:.2f} ms, "
        f"{100 * shipped_ms / cost['bare_ms']:.1f} % of the bare energy+forces call "
        f"({cost['bare_ms']:.1f} ms, median). Whole calls, calculators taking turns on a "
        "shared machine (noisy to ±10 %): "
        f"{cost['with_novelty_ms']:.1f} ms with the shipped score, "
        f"{cost['with_mahalanobis_ms']:.1f} ms with the Mahalanobis score, "
        f"{cost['with_both_ms']:.1f} ms with both."
    ]
    return lines, [rel]


def render_physics() -> tuple[list[str], list[Path]]:
    rel = RESULTS / "physics_sanity.json"
    r = _load(rel)
    shas = ", ".join(f"{k} `{v[:8]}`" for k, v in r["models"].items())
    lines = [f"Models (sha256): {shas}.", "", "**NVE**:", ""]
    lines += _table(
        [
            "system",
            "model, dtype",
            "steps × fs",
            "drift meV/atom/ps",
            "max \\|E_tot − E_tot(0)\\| meV/atom",
            "mean KE meV/atom (T)",
            "max dev / mean KE",
        ],
        [
            [
                n["system"],
                f"{n['model']}, {n['dtype']}",
                f"{n['n_steps']} × {n['timestep_fs']}",
                f"{n['drift_meV_atom_ps']:.4f}",
                f"{n['max_deviation_meV_atom']:.3f}",
                f"{n['kinetic_mean_meV_atom']:.1f} ({n['temperature_mean_K']:.0f} K)",
                f"{n['deviation_over_kinetic']:.4f}",
            ]
            for n in r["nve"]
        ],
    )
    lines += ["", "**Smoothness** (float64):", ""]
    lines += _table(
        [
            "path",
            "model",
            "grid Å",
            "points",
            "jump ratio",
            "work residual eV",
            "F vs −dE/dx eV/Å (rel.)",
            "kink ratio",
            "beyond cutoff: points, ptp E eV, max \\|F\\|",
        ],
        [
            [
                name,
                s["model"],
                f"{s['h_A']:.3f}",
                str(s["n_points"]),
                f"{s['jump_ratio']:.5f}",
                f"{s['work_residual_eV']:.1e}",
                f"{s['force_fd_error_eV_A']:.1e} ({s['force_fd_rel']:.1e})",
                f"{s['kink_ratio']:.1e}",
                f"{s['n_detached']}, {s['detached_energy_ptp_eV']:g}, "
                f"{s['detached_force_max_eV_A']:g}",
            ]
            for name, s in r["smoothness"].items()
        ],
    )
    lines += [
        "",
        "**Equivariance** (float64, random orthogonal maps with translations; maxima):",
        "",
    ]
    rows = []
    for model, structures in r["equivariance"].items():
        for name, e in structures.items():
            rows.append(
                [
                    model,
                    f"{name} ({e['formula']})",
                    f"{e['n_rotations']} ({e['n_improper']} improper)",
                    f"{e['energy_abs_max_eV']:.1e} ({e['energy_rel_max']:.1e})",
                    f"{e['energies_abs_max_eV']:.1e}",
                    f"{e['forces_abs_max_eV_A']:.1e} ({e['forces_rel_max']:.1e})",
                ]
            )
    lines += _table(
        [
            "model",
            "structure",
            "maps",
            "\\|ΔE\\| eV (rel.)",
            "max \\|ΔE_i\\| eV",
            "max \\|ΔF\\| eV/Å (rel.)",
        ],
        rows,
    )
    return lines, [rel]


def render_relax_throughput() -> tuple[list[str], list[Path]]:
    shipped = {m["file"] for m in _load(MANIFEST)["models"].values()}
    sources = _results("relax_throughput_*.json")
    rows = []
    for rel in sources:
        r = _load(rel)
        model = r["model"]
        files = re.findall(r"[\w.-]+\.safetensors", model)
        if files and not set(files) & shipped:
            model += " (no longer shipped)"
        rows.append(
            [
                model,
                str(r["torch_threads"]),
                f"{r['n_molecules']} ({r['n_atoms_total']} atoms)",
                _n(r["sequential_ase_fire_s"]),
                _n(r["batched_fire_s"]),
                f"{r['speedup']:.1f}×",
            ]
        )
    head = [
        "model",
        "torch threads",
        "molecules",
        "one by one (ASE FIRE) s",
        "batched FIRE s",
        "speed-up",
    ]
    return _table(head, rows), sources


#: relaxation tests of the shipped tdn-catalysis with uncertainty scores: (file, systems)
#: (the last word names the pool a file counts in: validation, check or test)
FLAGGING_FILES = (
    ("adsorption_quality_c2_v7-val.json", "coverage2 validation"),
    ("adsorption_quality_c2_v7-oldval.json", "first-set (111) validation"),
    ("adsorption_quality_c2_v7-newval.json",
     "coverage2, systems the partner's split added: validation"),
    ("adsorption_quality_c2_v7-laterval.json",
     "coverage2, built after the partner: validation"),
    ("adsorption_quality_c2_v7-later2val.json",
     "coverage2 trajectories 1,487-1,706 (after v5 and the partner): validation"),
    ("adsorption_quality_c2_v7-later34val.json",
     "coverage2 trajectories 1,707-2,042 in the model's validation part (not in the choice): "
     "check"),
    ("adsorption_quality_c2_v7-quarter.json",
     "p(2x2) cells of the quarter data, 60 systems (no model trained on them, not in the "
     "choice): check"),
    ("adsorption_quality_c2_v7-test.json", "coverage2 test"),
    ("adsorption_quality_c2_v7-oldtest.json", "first-set (111) test"),
    ("adsorption_quality_c2_v7-newtest.json",
     "coverage2, systems the partner's split added: test"),
)


#: other flag rules measured on the same relaxations, compared with the card's in docs:
#: (name, calibration file of ``tools/calibrate_flags.py``, "novelty" for the novelty score's
#: threshold alone or "rule" for the thresholds of the rule it chose)
FLAGGING_ALTERNATIVES = (
    ("novelty alone (no partner, no soft mode; its own 15 % in-sample threshold)",
     "flag_calibration_v7.json", "novelty"),
    ("the rule chosen with in-sample caps up to 15 % only",
     "flag_calibration_v7.json", "rule"),
)


def _alternative_cuts(name: str, which: str, partner: str | None
                      ) -> tuple[float, float, float]:
    """``(novelty, committee, -curvature)`` thresholds (inf: the signal is not used) of the
    calibration file ``name``: its novelty-alone threshold (``which`` "novelty") or its
    chosen rule's ("rule"), whose partner must be ``partner`` (the card's, the one the
    reports were run with)."""
    cal = _load(RESULTS / name)
    if which == "rule" and cal.get("committee") != partner:
        raise SystemExit(f"{name}: calibrated with partner {cal.get('committee')!r}, the "
                         f"reports were run with the card's {partner!r}")
    if which == "novelty":
        return cal["novelty"]["threshold"], math.inf, math.inf
    chosen = cal["rule"]["thresholds"]
    return (chosen["novelty"], chosen.get("committee", math.inf),
            -chosen.get("curvature", -math.inf))


def _flagging_sets() -> list[tuple[str, Any, np.ndarray, list[np.ndarray], Path]]:
    """``(what, report, bad [n], scores, path)`` per file of :data:`FLAGGING_FILES`: the
    bad-or-landed rows' novelty, committee disagreement and negated curvature (NaN where
    a row has none)."""
    from tdn_calc.evaluation.flagging import flag_rows, row_scores

    out = []
    for name, what in FLAGGING_FILES:
        rel = RESULTS / name
        report = _load(rel) if (ROOT / rel).exists() else {}
        done = flag_rows(report.get("rows", []))
        if done:
            out.append((what, report, np.array([bool(r["bad"]) for r in done]),
                        row_scores(done), rel))
    return out


def _score_aurocs(bad: np.ndarray, scores: list[np.ndarray]) -> list[str]:
    """AUROC (2 decimals) of each score for ``bad`` over the rows where it is finite."""
    from tdn_calc.evaluation.flagging import auroc

    return [_n(auroc(x[np.isfinite(x)], bad[np.isfinite(x)]), 2) for x in scores]


def _pooled_rates(sets: list, cuts: tuple[float, float, float]) -> dict[str, list[int]]:
    """``{"validation"|"test": [bad, bad flagged, landed, landed flagged]}`` at ``cuts``."""
    from tdn_calc.evaluation.flagging import rates_rule

    pooled: dict[str, list[int]] = {}
    for what, _, bad, scores, _ in sets:
        at = rates_rule(scores, bad, cuts)
        counts = pooled.setdefault(what.split()[-1], [0, 0, 0, 0])
        for k, (n, rate) in enumerate(((at["n_bad"], at["recall_bad"]),
                                       (at["n_good"], at["false_flag_good"]))):
            counts[2 * k] += n
            counts[2 * k + 1] += round(n * (rate or 0.0))
    return pooled


def render_flagging() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: how tdn-catalysis' uncertainty flag separates bad relaxations from
    landed ones on its validation and test systems, at the thresholds its card ships
    (models/manifest.json), recomputed from the scores each JSON recorded per relaxation:
    flagged when the novelty score or the committee disagreement is above its threshold or
    the adsorbate curvature below its own; then the pooled rates of the other rules of
    :data:`FLAGGING_ALTERNATIVES` on the same rows."""
    from tdn_calc.evaluation.flagging import rates_rule

    record = _load(MANIFEST)["models"]["tdn-catalysis"].get("uncertainty") or {}
    partner = record.get("committee") or {}
    cuts = (record.get("threshold", math.inf), partner.get("force_threshold", math.inf),
            -record.get("curvature_threshold", -math.inf))
    sets = _flagging_sets()
    rows = []
    for what, report, bad, scores, rel in sets:
        if partner and (report.get("committee") or {}).get("model") != partner.get("model"):
            raise SystemExit(f"{rel}: recorded with another committee partner than the card's")
        at = rates_rule(scores, bad, cuts)
        rows.append([what, str(at["n_bad"]), str(at["n_good"]), _pct(at["recall_bad"]),
                     _pct(at["false_flag_good"]), *_score_aurocs(bad, scores)])

    def pooled_row(label: str, counts: list[int], pad: int) -> list[str]:
        bad, bad_flagged, landed, landed_flagged = counts
        return [label, str(bad), str(landed), _pct(bad_flagged / bad if bad else None),
                _pct(landed_flagged / landed if landed else None), *[""] * pad]

    for part, counts in _pooled_rates(sets, cuts).items():
        rows.append(pooled_row(f"**all {part} sets pooled**", counts, 3))
    head = ["systems", "bad", "landed", "bad flagged", "landed flagged", "AUROC novelty",
            "AUROC committee", "AUROC curvature"]
    note = (f"Thresholds of the card: novelty {_n(record.get('threshold'), 4)}, committee "
            + (f"partner {partner['model']} at {_n(partner.get('force_threshold'), 4)} eV/Å"
               if partner else "partner none (its disagreement is shown, not used)")
            + (f", adsorbate curvature {_n(record['curvature_threshold'], 4)} eV/Å²."
               if "curvature_threshold" in record else ", no adsorbate-curvature check."))
    other = []
    for name, calibration, which in FLAGGING_ALTERNATIVES:
        cuts = _alternative_cuts(calibration, which, partner.get("model"))
        for part, counts in _pooled_rates(sets, cuts).items():
            other.append(pooled_row(f"{name}: {part}", counts, 0))
    return [note, "", *_table(head, rows), "", "Other rules on the same relaxations:", "",
            *_table(head[:5], other)], list(dict.fromkeys(
                [MANIFEST, *[rel for *_, rel in sets],
                 *(RESULTS / c for _, c, _ in FLAGGING_ALTERNATIVES)]))


#: calibrations of tdn-catalysis' flag with different committee partners on the same
#: validation relaxations (``tools/calibrate_flags.py --committee NAME --curvature --cv --out``):
#: (file, what the partner is)
PARTNER_CALIBRATIONS = (
    ("flag_calibration_tdn-catalysis.json", "parent (the model's own lineage)"),
    ("flag_calibration_sibling.json", "sibling (from scratch, another seed, 50,000 steps)"),
    ("flag_calibration_sibling-2.json", "the sibling trained on (30,000 more steps, more data)"),
    ("flag_calibration_v3-five-sets.json",
     "the sibling trained on; model v3, five validation sets"),
    ("flag_calibration_v5.json",
     "the sibling trained on; model v5, five validation sets, caps up to 15 %"),
    ("flag_calibration_v5-balanced.json",
     "the sibling trained on; model v5 (its card), five validation sets, caps up to 40 %"),
    ("flag_calibration_v6.json",
     "the sibling trained on; model v6, five validation sets, caps up to 15 %"),
    ("flag_calibration_v6-balanced.json",
     "the sibling trained on; model v6 (its card), five validation sets, caps up to 40 %"),
    ("flag_calibration_v6-sib3.json",
     "sibling-2 trained on v6's data and split (configs/tdn-catalysis2-sibling3.yaml, not "
     "shipped); model v6, five validation sets, caps up to 40 %"),
    ("flag_calibration_v7.json",
     "the sibling trained on; model v7, five validation sets, caps up to 15 %"),
    ("flag_calibration_v7-balanced.json",
     "the sibling trained on; model v7 (shipped card), five validation sets, caps up to 40 %"),
)


def render_partners() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: committee partners of tdn-catalysis compared on the same
    validation relaxations: each score's AUROC (recomputed from the reports the calibration
    read), the rule of all the calibration's signals at 15 % in sample and its
    cross-validated rates, and the rule cross-validation chose."""
    from tdn_calc.evaluation.flagging import flag_rows, row_scores

    rows, sources = [], []
    for name, what in PARTNER_CALIBRATIONS:
        rel = RESULTS / name
        if not (ROOT / rel).exists():
            continue
        cal = _load(rel)
        done = [r for path in cal["reports"] for r in flag_rows(_load(Path(path))["rows"])]
        bad = np.array([bool(r["bad"]) for r in done])
        aucs = _score_aurocs(bad, row_scores(done))
        every, rule = cal.get("all_signals_cross_validated") or {}, cal["rule"]
        chosen = ", ".join(f"{k} {_n(v, 4)}" for k, v in rule["thresholds"].items())
        rows.append([f"{cal['committee']}: {what}", f"{cal['n_bad']} / {cal['n_landed']}",
                     *aucs, f"{_pct(every.get('recall_bad'))} / "
                     f"{_pct(every.get('false_flag_good'))}"
                     + ("" if cal.get("curvature") else " (novelty and partner: no soft mode)"),
                     f"{chosen} (cap {_pct(rule.get('cap'))})",
                     f"{_pct(rule['cv']['recall_bad'])} / {_pct(rule['cv']['false_flag_good'])}"])
        sources += [rel, *(Path(path) for path in cal["reports"])]
    if not rows:
        return ["Not measured yet: run `tools/calibrate_flags.py ... --committee NAME --curvature "
                "--cv --out benchmarks/results/flag_calibration_<name>.json`."], []
    head = ["committee partner", "bad / landed", "AUROC novelty", "AUROC committee",
            "AUROC curvature", "all signals, cap 15 %, cross-validated: bad / landed flagged",
            "rule chosen by cross-validation", "its cross-validated rates"]
    return _table(head, rows), sources


def render_error_head() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: the learned error head of benchmarks/error_head.py against the
    card's threshold rule, cross-validated on the validation pool and fitted once on it for
    the check and test relaxations, cap by cap."""
    rel = RESULTS / "error_head.json"
    if not (ROOT / rel).exists():
        return ["Not measured yet: run `python benchmarks/error_head.py`."], []
    r = _load(rel)

    def pair(rate: dict) -> str:
        return f"{_pct(rate['recall_bad'])} / {_pct(rate['false_flag_good'])}"

    rows = [[_pct(c["cap"]), pair(c["rule_cv"]), pair(c["head_cv"]), pair(c["rule_check"]),
             pair(c["head_check"]), pair(c["rule_test"]), pair(c["head_test"])]
            for c in r["caps"]]
    head = ["cap of landed flagged (fit)", "rule, cross-validated", "head, cross-validated",
            "rule, check sets", "head, check sets", "rule, test sets", "head, test sets"]
    note = (f"Bad / landed flagged. Validation pool: {r['n_bad']} bad and {r['n_landed']} "
            f"landed relaxations ({', '.join(f'`{p}`' for p in r['pool'])}); head features: "
            f"{', '.join(r['features'])}.")
    return [note, "", *_table(head, rows)], [rel]


def render_error_head_atoms() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: the per-atom force-error heads of benchmarks/error_head_atoms.py
    against the committee partner, cross-validated AUROCs, one row per signal."""
    rel = RESULTS / "error_head_atoms.json"
    if not (ROOT / rel).exists():
        return ["Not measured yet: run `python benchmarks/error_head_atoms.py collect ...` and "
                "`fit`."], []  # fmt: skip
    r = _load(rel)

    def cells(rates: dict) -> list[str]:
        return [_n(rates[k], 2) for k in
                ("auroc_atoms", "auroc_frames", "auroc_last_frames", "spearman_atoms")]  # fmt: skip

    rows = [[f"partner ({r['partner']})", *cells(r["committee"])]]
    for name, h in r["heads"].items():
        rows.append([f"head: {name}", *cells(h["head"])])
        rows.append([f"head ({name}) + partner", *cells(h["head_and_committee"])])
    head = ["signal", "AUROC atoms", "AUROC frames", "AUROC teacher minima",
            "Spearman with the error (atoms)"]  # fmt: skip
    bad = r["bad_force"]
    note = (f"Model {r['model']}; {r['systems']} systems, {r['frames']:,} frames, "
            f"{r['atoms']:,} free atoms; bad = force error above {bad:g} eV/Å: "
            f"{r['bad_atoms']:,} atoms, {r['bad_frames']:,} frames, {r['bad_last_frames']} of "
            f"{r['last_frames']} teacher minima. Heads cross-validated by system "
            f"({r['folds']} folds); a frame's score is its largest atom's.")
    return [note, "", *_table(head, rows)], [rel]


def render_uncertainty_coverage2() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: the shipped flag of tdn-catalysis 2 on the coverage2 start set of
    benchmarks/uncertainty_study.py, one row per group."""
    sources = _results("uncertainty_study-*-coverage2.json")
    if not sources:
        return ["Not measured yet: run `python benchmarks/uncertainty_study.py --starts "
                "coverage2 --model tdn-catalysis`."], []
    rel = sources[-1]
    r = _load(rel)
    s = r["shipped"]
    rows = [[group, f"{g['bad_flagged']} of {g['bad']}", f"{g['good_flagged']} of {g['good']}"]
            for group, g in s["by_group"].items()]
    rows.append(["all", _pct(s["all"]["recall_bad"]), _pct(s["all"]["false_flag_good"])])
    note = (f"Model: {r['model']}, its novelty score alone at the threshold of that run "
            f"({s['threshold']:g}; the card's now differs, see the next section); starts "
            "relaxed by the model (BFGS, fmax 0.03 eV/Å), judged by SevenNet-0.")
    return [note, "", *_table(["group", "bad flagged", "good flagged"], rows)], [rel]


def render_teacher_vs_pbe() -> tuple[list[str], list[Path]]:
    """docs/benchmarks.md: benchmarks/teacher_vs_pbe.py, one row per measured pair."""
    rel = RESULTS / "teacher_vs_pbe.json"
    if not (ROOT / rel).exists():
        return ["Not measured yet: run `python benchmarks/teacher_vs_pbe.py`."], []
    r = _load(rel)
    rows = [
        [
            f"{p['adsorbate']} on {p['metal']}({p['facet']}) {p['site']}",
            f"{p['e_ads_teacher']:+.2f}",
            f"{p['e_ads_pbe']:+.2f}",
            "teacher desorbs it (anchor "
            f"{p['anchor_height']:.1f} Å up; {p['error']:+.2f} there) **wrong**"
            if p.get("teacher_desorbs") else
            f"{p['error']:+.2f}" + (" **wrong**" if p["wrong"] else ""),
            _n(p["pbe_fmax_at_teacher_geometry"], 2),
        ]
        for p in r["pairs"]
        if "failed" not in p
    ]
    failed = [p["pair"] for p in r["pairs"] if "failed" in p]
    head = ["adsorbate on surface, site", "E_ads teacher eV", "E_ads PBE eV",
            "teacher - PBE eV", "PBE fmax at teacher geometry eV/Å"]
    pbe = r["pbe"]
    wrong = [p for p in r["pairs"] if p.get("wrong")]  # a failed pair has no verdict
    names = ", ".join(f"{p['adsorbate']} on {p['metal']}" for p in wrong) or "none"
    note = (
        f"Teacher: {r['teacher_method']}. PBE: {pbe['code']} {pbe['version']}, plane waves "
        f"{pbe['cutoff_eV']:g} eV, k-point density {pbe['kpt_density_per_inv_A']:g} per Å⁻¹, "
        f"Fermi-Dirac {pbe['smearing_eV']:g} eV, spin {pbe['spin']}. Geometry: {r['geometry']}; "
        f"both methods at the same geometries. References: {r['scheme_description']}. "
        f"Wrong (|teacher - PBE| > {r['wrong_eV']:g} eV): {names} "
        f"({len(wrong)} of {len(rows)} pairs measured)."
        + (f" GPAW failed on {', '.join(failed)} (the JSON has the errors)." if failed else "")
    )
    return [*_table(head, rows), "", note], [rel]


RENDERERS: dict[str, Callable[[], tuple[list[str], list[Path]]]] = {
    "models": render_models,
    "speed": render_speed,
    "relax-quality": render_relax_quality,
    "adsorption-quality": render_adsorption_quality,
    "optimizer-cost": render_optimizer_cost,
    "wait-policy": render_wait_policy,
    "extrapolation": render_extrapolation,
    "uncertainty": render_uncertainty,
    "finish-quality": render_finish_quality,
    "distill-quality": render_distill_quality,
    "screening-quality": render_screening_quality,
    "physics": render_physics,
    "relax-throughput": render_relax_throughput,
    "teacher-vs-pbe": render_teacher_vs_pbe,
    "flagging": render_flagging,
    "partners": render_partners,
    "error-head": render_error_head,
    "error-head-atoms": render_error_head_atoms,
    "uncertainty-coverage2": render_uncertainty_coverage2,
}


# ---------------------------------------------------------------------------- documents


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render_block(name: str) -> str:
    if name not in RENDERERS:
        raise KeyError(f"no renderer for <!-- generated:{name} -->; known: {', '.join(RENDERERS)}")
    lines, sources = RENDERERS[name]()
    tail = footer(sources) + "\n\n" if sources else ""  # none: a note that nothing was measured
    return "\n" + "\n".join(lines) + "\n\n" + tail


def _model_speed(text: str) -> str:
    """The model-speed section of docs/benchmarks.md, between _speed_report's own markers."""
    from _speed_report import BEGIN, END, markdown_report

    if BEGIN not in text or END not in text:
        return text
    report = markdown_report(
        _load(RESULTS / "model_speed.json"), Path("img/model_speed_scaling.png")
    )
    head, rest = text.split(BEGIN, 1)
    return head + report + rest.split(END, 1)[1]


def _accuracy(text: str) -> str:
    """The accuracy section of docs/benchmarks.md, as benchmarks/accuracy.py writes it."""
    import accuracy

    if f"## {accuracy.DOC_TITLE}\n" not in text:
        return text
    results = _load(RESULTS / "accuracy_organic.json")
    table = accuracy.markdown_table(results["table"])
    relax = {
        t["model"]: m["relax"]
        for m, t in zip(results["models"].values(), results["table"], strict=True)
        if "relax" in m
    }
    if relax:
        table += "\n\nRelaxations judged by GFN2-xTB:\n\n" + accuracy.relax_table(relax)
    body = accuracy.doc_body(results, table)
    return accuracy.replace_doc_section(text, accuracy.DOC_TITLE, body)


def render_text(text: str, cache: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in cache:
            cache[name] = render_block(name)
        return match.group(1) + cache[name] + match.group(4)

    return _accuracy(_model_speed(BLOCK.sub(replace, text)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a generated block is stale"
    )
    args = parser.parse_args(argv)
    from tdn_calc.fileio import atomic_write

    cache: dict[str, str] = {}
    stale = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        new = render_text(text, cache)
        if new == text:
            continue
        stale.append(path.relative_to(ROOT).as_posix())
        if not args.check:
            with atomic_write(path, "w") as handle:
                handle.write(new)
    if args.check and stale:
        print(
            "stale generated blocks in " + ", ".join(stale) + ": run `make docs`", file=sys.stderr
        )
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not args.check else "docs up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
