"""Campaign results for people, read back from the database: the lowest valid adsorption
energy (eV) per (surface, adsorbate) with its site and the anomaly counts, as a text table,
CSV files and a heat map (PNG, needs matplotlib: the ``plot`` extra).

A minimum is valid when it converged and shows none of AdsorbML's anomalies (desorbed,
dissociated, surface changed, intercalated; :mod:`tdn_calc.evaluation.anomalies`).
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..evaluation.anomalies import ANOMALIES
from . import store


@dataclass
class PairSummary:
    """One (surface, adsorbate): placements relaxed, valid ones, the lowest valid
    ``e_ads`` (eV, NaN when none is valid) with its ``site``, ``placement`` and
    ``extrapolation`` (max score of that structure; NaN without one), the largest score
    over all its placements, the count of each anomaly and of unconverged runs, whose
    energy the lowest ``e_ads`` is (``energy_source``: ``student``, or ``teacher`` where
    ``policy: finish`` finished it; ``-`` when none is valid) and the verify/finish
    ``teacher_calls`` spent on the pair's placements."""

    surface: str
    adsorbate: str
    placements: int
    valid: int
    e_ads: float
    site: str
    placement: str
    extrapolation: float
    extrapolation_max: float
    desorbed: int
    dissociated: int
    surface_changed: int
    intercalated: int
    unconverged: int
    energy_source: str = "-"
    teacher_calls: int = 0


def summarize(db: Any) -> list[PairSummary]:
    """One :class:`PairSummary` per (surface, adsorbate) in the database, in row order."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in store.rows(db, "placement"):
        groups.setdefault((row.surface, row.adsorbate), []).append(row)
    out = []
    for (surface, adsorbate), rows in groups.items():
        counts: Counter = Counter()
        for r in rows:
            counts.update(a for a in r.anomaly.split(",") if a in ANOMALIES)
        valid = [r for r in rows if r.get("valid")]
        best = min(valid, key=lambda r: r.e_ads) if valid else None
        scores = [r.get("extrapolation_max") for r in rows]
        scores = [s for s in scores if s is not None]
        out.append(
            PairSummary(
                surface,
                adsorbate,
                len(rows),
                len(valid),
                best.e_ads if best else math.nan,
                best.final_site if best else "-",
                best.placement if best else "-",
                float(best.get("extrapolation_max", math.nan)) if best else math.nan,
                max(scores) if scores else math.nan,
                *(counts[a] for a in ANOMALIES),
                sum(1 for r in rows if not r.get("converged")),
                best.get("energy_source", "student") if best else "-",
                sum(int(r.get("teacher_calls", 0)) for r in rows),
            )
        )
    return out


def table(summaries: list[PairSummary]) -> str:
    """Plain-text table of ``summaries`` (E_ads in eV; extrap.: score of the best structure,
    > 1 means the model extrapolates there). Where a teacher took part, two more columns:
    ``E from`` (``student`` or ``teacher``, whose energy E_ads is) and ``teacher calls``."""
    head = (
        "surface",
        "adsorbate",
        "E_ads/eV",
        "site",
        "valid",
        "desorb",
        "dissoc",
        "surf",
        "interc",
        "unconv",
        "extrap.",
    )
    taught = any(s.teacher_calls for s in summaries)
    head += ("E from", "teacher calls") if taught else ()
    lines = [head]
    for s in summaries:
        line = (
            s.surface,
            s.adsorbate,
            _num(s.e_ads, "{:+.3f}"),
            s.site,
            f"{s.valid}/{s.placements}",
            str(s.desorbed),
            str(s.dissociated),
            str(s.surface_changed),
            str(s.intercalated),
            str(s.unconverged),
            _num(s.extrapolation, "{:.2f}"),
        )
        lines.append(line + ((s.energy_source, str(s.teacher_calls)) if taught else ()))
    widths = [max(len(line[k]) for line in lines) for k in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _num(x: float, fmt: str) -> str:
    return "-" if x is None or not math.isfinite(x) else fmt.format(x)


def write_summary_csv(summaries: list[PairSummary], path: str | os.PathLike) -> None:
    """``summaries`` as CSV, one line per (surface, adsorbate), columns as
    :class:`PairSummary`'s fields."""
    from ..fileio import atomic_write

    with atomic_write(path, "w") as fh:
        writer = csv.DictWriter(fh, [f.name for f in fields(PairSummary)])
        writer.writeheader()
        writer.writerows(asdict(s) for s in summaries)


PLACEMENT_COLUMNS = (
    "surface",
    "adsorbate",
    "placement",
    "start_site",
    "final_site",
    "anomaly",
    "valid",
    "converged",
    "steps",
    "energy",
    "e_ads",
    "energy_source",
    "student_e_ads",
    "teacher_e_ads",
    "extrapolation_max",
    "uncertain",
    "engine",
    "relaxed_by",
    "student_steps",
    "teacher_steps",
    "teacher_calls",
)


def write_placements_csv(db: Any, path: str | os.PathLike) -> None:
    """Every placement row as CSV (:data:`PLACEMENT_COLUMNS`; energies eV)."""
    from ..fileio import atomic_write

    with atomic_write(path, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(PLACEMENT_COLUMNS)
        for row in store.rows(db, "placement"):
            writer.writerow([row.get(c, "") for c in PLACEMENT_COLUMNS])


def heatmap(summaries: list[PairSummary], path: str | os.PathLike) -> None:
    """Heat map of the lowest valid E_ads (eV) over surfaces x adsorbates, annotated; pairs
    without a valid minimum blank, ``*`` marks extrapolation (score > 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..fileio import atomic_write

    surfaces = list(dict.fromkeys(s.surface for s in summaries))
    adsorbates = list(dict.fromkeys(s.adsorbate for s in summaries))
    grid = np.full((len(surfaces), len(adsorbates)), np.nan)
    for s in summaries:
        grid[surfaces.index(s.surface), adsorbates.index(s.adsorbate)] = s.e_ads
    fig, ax = plt.subplots(figsize=(1.0 * len(adsorbates) + 3, 0.6 * len(surfaces) + 2))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", aspect="auto")
    for s in summaries:
        if math.isfinite(s.e_ads):
            mark = "*" if s.extrapolation > 1 else ""
            ax.text(
                adsorbates.index(s.adsorbate),
                surfaces.index(s.surface),
                f"{s.e_ads:.2f}{mark}\n{s.site}",
                ha="center",
                va="center",
                fontsize=8,
            )
    ax.set_xticks(range(len(adsorbates)), adsorbates)
    ax.set_yticks(range(len(surfaces)), surfaces)
    fig.colorbar(image, ax=ax, label="lowest E_ads / eV")
    ax.set_title("adsorption energies (* extrapolating)")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
