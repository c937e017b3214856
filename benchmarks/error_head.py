"""A learned error head against the card's threshold rule (issue 20): from what ``tdn-relax``
knows at a relaxed minimum, which relaxations of tdn-catalysis are bad?

The card's flag is a rule of thresholds: "novelty score or committee disagreement above its
threshold" (``tools/calibrate_flags.py``). The head is a logistic regression on the
relaxation's own figures, all known without the teacher: :data:`FEATURES` (the largest
chemistry-novelty score, the log of the partner's largest force disagreement, the log of the
optimizer steps taken, and whether the relaxation stopped unconverged), standardised, with
a small L2 penalty (:func:`fit_head`); it flags a relaxation when its probability of being
bad is above a threshold set, like the rule's, at a cap of landed relaxations flagged.

Both are compared on the same validation pool (the card's five sets) by the same grouped
cross-validation (:func:`tdn_calc.evaluation.flagging.grouped_cv_rates`: 5 folds by system,
20 seeds; threshold and head fitted on the other folds), at several caps; then each is
fitted on the whole pool and applied once to the check and test relaxations (the rows
``held out``). Bad and landed as in :mod:`tdn_calc.evaluation.flagging`.

    OMP_NUM_THREADS=1 python benchmarks/error_head.py          # seconds
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json

from tdn_calc.data.split import system_of
from tdn_calc.evaluation.flagging import (
    calibrate_rule,
    cross_validated_rates,
    flag_rows,
    grouped_cv_rates,
    rates_rule,
    row_scores,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
POOL = "adsorption_quality_c2_v6-{}{}.json"  # set name, suffix (e.g. "-sib3": another partner)
VALIDATION = ("val", "oldval", "newval", "laterval", "later2val")
HELD_OUT = {"check": ("later34val", "later5val"), "test": ("test", "oldtest", "newtest")}
CAPS = (0.10, 0.15, 0.20, 0.24, 0.30)
L2 = 1e-2  # penalty on the standardised coefficients (the intercept is free)

#: the head's inputs: what tdn-relax has at the minimum of every relaxation
FEATURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "novelty": lambda r: r["uncertainty_max"],
    "log_committee": lambda r: math.log(max(r["committee_force_max"], 1e-6)),  # ln(eV/Å)
    "log_steps": lambda r: math.log1p(r["tdn_n_steps"]),
    "not_converged": lambda r: float(not r["tdn_converged"]),
}


def features(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """``[n, len(FEATURES)]``."""
    return np.array([[f(r) for f in FEATURES.values()] for r in rows], float)


def fit_head(x: np.ndarray, bad: np.ndarray, l2: float = L2, iterations: int = 50
             ) -> Callable[[np.ndarray], np.ndarray]:
    """Logistic regression of ``bad`` on ``x`` ([n, k]; standardised on these rows) by
    Newton's method with an L2 penalty ``l2`` on the coefficients; returns ``x -> p(bad)``."""
    mean, std = x.mean(0), x.std(0) + 1e-12
    z = np.c_[np.ones(len(x)), (x - mean) / std]
    y = np.asarray(bad, float)
    w = np.zeros(z.shape[1])
    penalty = np.diag(np.r_[0.0, np.full(z.shape[1] - 1, l2 * len(x))])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-z @ w))
        step = np.linalg.solve(z.T @ (z * (p * (1 - p))[:, None]) + penalty,
                               z.T @ (y - p) - penalty @ w)
        w += step
        if np.abs(step).max() < 1e-10:
            break

    def predict(xn: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-np.c_[np.ones(len(xn)), (xn - mean) / std] @ w))

    predict.coefficients = dict(zip(["intercept", *FEATURES], w.tolist(), strict=True))
    return predict


def head_flags(x: np.ndarray, bad: np.ndarray, cap: float
               ) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """The head fitted on ``x``/``bad`` and its probability threshold: the highest recall of
    bad rows with at most ``cap`` of the good ones flagged (:func:`calibrate_rule` on the
    head's one score)."""
    predict = fit_head(x, bad)
    (threshold,) = calibrate_rule([predict(x)], bad, cap)
    return predict, threshold


def load(names: Sequence[str], suffix: str = "") -> list[dict[str, Any]]:
    """The flag rows (:func:`~tdn_calc.evaluation.flagging.flag_rows`) of the reports."""
    rows = []
    for name in names:
        path = RESULTS / POOL.format(name, suffix)
        rows += flag_rows(json.loads(path.read_text())["rows"])
    return rows


def compare(pool: list[dict[str, Any]], held_out: dict[str, list[dict[str, Any]]],
            caps: Sequence[float] = CAPS) -> dict[str, Any]:
    """Cross-validated and held-out rates of the rule and the head at each cap."""
    bad = np.array([r["bad"] for r in pool], bool)
    groups = [system_of(r["label"]) for r in pool]
    x = features(pool)
    scores = row_scores(pool, ("novelty", "committee"))
    held = {part: (np.array([r["bad"] for r in rows], bool),
                   row_scores(rows, ("novelty", "committee")), features(rows))
            for part, rows in held_out.items()}
    out = []
    for cap in caps:
        def flag_held(train: np.ndarray, held: np.ndarray, cap: float = cap) -> np.ndarray:
            predict, threshold = head_flags(x[train], bad[train], cap)
            return predict(x[held]) > threshold

        row: dict[str, Any] = {
            "cap": cap,
            "rule_cv": cross_validated_rates(scores, bad, groups, cap),
            "head_cv": grouped_cv_rates(flag_held, bad, groups),
        }
        cuts = calibrate_rule(scores, bad, cap)
        predict, threshold = head_flags(x, bad, cap)
        row["rule_thresholds"] = dict(zip(("novelty", "committee"), cuts, strict=True))
        row["head_threshold"] = threshold
        row["head_coefficients"] = predict.coefficients
        for part, (hb, hscores, hx) in held.items():
            row[f"rule_{part}"] = rates_rule(hscores, hb, cuts)
            row[f"head_{part}"] = rates_rule([predict(hx)], hb, [threshold])
        out.append(row)
    return {"n_bad": int(bad.sum()), "n_landed": int((~bad).sum()), "caps": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suffix", default="",
                   help="of the report names, e.g. -sib3 for reports rescored with another "
                   "partner (adsorption_quality.py --rescore)")
    p.add_argument("--out", type=Path, default=RESULTS / "error_head.json")
    args = p.parse_args(argv)
    pool = load(VALIDATION, args.suffix)
    held = {part: load(names, args.suffix) for part, names in HELD_OUT.items()}
    result = {"benchmark": "error_head",
              "pool": [POOL.format(n, args.suffix) for n in VALIDATION],
              "held_out": {part: [POOL.format(n, args.suffix) for n in names]
                           for part, names in HELD_OUT.items()},
              "features": list(FEATURES), "l2": L2, **compare(pool, held)}
    write_json(args.out, result)
    for c in result["caps"]:
        print(f"cap {c['cap']:.2f}: rule cv {c['rule_cv']['recall_bad']:.3f}/"
              f"{c['rule_cv']['false_flag_good']:.3f}  head cv {c['head_cv']['recall_bad']:.3f}/"
              f"{c['head_cv']['false_flag_good']:.3f}  test rule "
              f"{c['rule_test']['recall_bad']:.3f}/{c['rule_test']['false_flag_good']:.3f} head "
              f"{c['head_test']['recall_bad']:.3f}/{c['head_test']['false_flag_good']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
