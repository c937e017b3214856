"""How well does an uncertainty flag separate bad relaxations from good ones?

The trust issue's definitions, shared by ``benchmarks/uncertainty_study.py`` and
``benchmarks/adsorption_quality.py``: a relaxed structure is **bad** when the teacher's largest
force on a free atom at the model's minimum exceeds :data:`BAD_FMAX` (eV/Å) or the teacher's
energy there lies more than :data:`BAD_DE` (eV) above the teacher's own minimum; it is
**good** when it lands in the teacher's minimum. Targets: at least :data:`MIN_RECALL` of bad
structures flagged, at most :data:`MAX_FALSE_FLAG` of good ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BAD_FMAX = 0.5  # eV/Å, teacher fmax at the model's minimum
BAD_DE = 0.2  # eV, teacher energy at the model's minimum above the teacher's own minimum
MIN_RECALL = 0.90  # target: at least this fraction of bad structures flagged
MAX_FALSE_FLAG = 0.15  # target: at most this fraction of good structures flagged


#: the per-relaxation score each signal records in a ``benchmarks/adsorption_quality.py``
#: row, and its sign: a relaxation is suspect when sign x score is above the threshold
ROW_SCORES = {"novelty": ("uncertainty_max", 1.0), "committee": ("committee_force_max", 1.0),
              "curvature": ("adsorbate_curvature", -1.0)}


def flag_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report rows that count for the flag's rates: evaluated, with a novelty score, and
    bad or landed."""
    return [r for r in rows if r.get("status") == "evaluated"
            and "uncertainty_max" in r and (r["bad"] or r.get("landed"))]


def row_scores(rows: Sequence[dict[str, Any]], signals: Sequence[str] = tuple(ROW_SCORES)
               ) -> list[np.ndarray]:
    """``[n]`` per signal of ``signals`` (keys of :data:`ROW_SCORES`): sign x the rows'
    recorded score (the curvature negated: softer is more suspect), NaN where a row has
    none (NaN never flags)."""
    out = []
    for signal in signals:
        key, sign = ROW_SCORES[signal]
        out.append(sign * np.array([np.nan if r.get(key) is None else r[key] for r in rows],
                                   float))
    return out


def is_bad(teacher_fmax_at_min: float, teacher_de: float) -> bool:
    """The issue's bad relaxation: teacher fmax (eV/Å) at the model's minimum above
    :data:`BAD_FMAX`, or ``teacher_de`` (eV, teacher energy at the model's minimum minus the
    teacher's own minimum) above :data:`BAD_DE`."""
    return bool(teacher_fmax_at_min > BAD_FMAX or teacher_de > BAD_DE)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a positive outscores a negative (ties count half); None when a class
    is empty."""
    s, y = np.asarray(scores, float), np.asarray(positive, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return None
    # Mann-Whitney from average ranks, O(n log n) (atom-level sets have 1e5 scores; the
    # pairwise table would not fit in memory); a NaN score wins no pair, as a comparison would
    finite = ~np.isnan(s)
    s, y = s[finite], y[finite]
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, ties averaged
    k = int(y.sum())
    return float((ranks[y].sum() - k * (k + 1) / 2) / (n_pos * n_neg))


def calibrate(scores: np.ndarray, bad: np.ndarray, max_false_flag: float = MAX_FALSE_FLAG
              ) -> float:
    """Threshold with the highest recall of ``bad`` structures among those that flag at most
    ``max_false_flag`` of the good ones (``scores`` ``[n]``, flagged when above); cuts lie
    midway between neighbouring scores and just outside both ends; the highest of equal
    recalls wins."""
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    cuts = _cuts(scores)
    ok = [c for c in cuts if (scores[~bad] > c).mean() <= max_false_flag] if (~bad).any() \
        else list(cuts)
    recall = [(scores[bad] > c).mean() if bad.any() else 0.0 for c in ok]
    return float(ok[np.flatnonzero(np.isclose(recall, max(recall)))[-1]])


def _cuts(scores: np.ndarray) -> np.ndarray:
    """Thresholds midway between neighbouring distinct ``scores`` and just outside both ends."""
    s = np.unique(scores)
    return np.r_[s[0] - 1e-9, (s[:-1] + s[1:]) / 2, s[-1] + 1e-9]


def calibrate_rule(scores: Sequence[np.ndarray], bad: np.ndarray,
                   max_false_flag: float = MAX_FALSE_FLAG) -> tuple[float, ...]:
    """One threshold per score for the rule "flagged when any score is above its threshold"
    (e.g. the chemistry-novelty score, the committee force disagreement and the negated
    adsorbate curvature, ``[n]`` each; NaN never flags): the thresholds with the highest
    recall of ``bad`` structures among those that flag at most ``max_false_flag`` of the
    good ones; of equal recalls, the fewest good ones flagged, then the highest thresholds
    (the first score's first). Exhaustive over the cuts of every score (:func:`_cuts`) that
    alone flag few enough good ones (the others can never be part of a feasible rule); the
    top cut of a score (above all its values) means it flags nothing."""
    scores = [np.asarray(x, float) for x in scores]
    bad = np.asarray(bad, bool)
    cuts = [_cuts(x[np.isfinite(x)]) if np.isfinite(x).any() else np.array([np.inf])
            for x in scores]
    if (~bad).any():  # a cut that alone flags too many good ones is never feasible: pruned
        with np.errstate(invalid="ignore"):
            cuts = [c[(x[~bad][None, :] > c[:, None]).mean(-1) <= max_false_flag + 1e-12]
                    for x, c in zip(scores, cuts, strict=True)]
    with np.errstate(invalid="ignore"):
        above_last = scores[-1][None, :] > cuts[-1][:, None]  # [n_cuts_last, n]
        above = [x[None, :] > c[:, None] for x, c in zip(scores[:-1], cuts[:-1], strict=True)]
    best_key, best = None, None
    for combo in itertools.product(*(range(len(c)) for c in cuts[:-1])):
        flagged = above_last.copy()
        for d, i in enumerate(combo):  # one line of the grid at a time: memory n_cuts x n
            flagged |= above[d][i][None, :]
        ff = flagged[:, ~bad].mean(-1) if (~bad).any() else np.zeros(len(flagged))
        recall = flagged[:, bad].mean(-1) if bad.any() else np.zeros(len(flagged))
        ok = np.flatnonzero(ff <= max_false_flag + 1e-12)
        if not len(ok):
            continue
        j = ok[np.lexsort((cuts[-1][ok], -ff[ok], recall[ok]))[-1]]
        key = (recall[j], -ff[j], *(cuts[d][i] for d, i in enumerate(combo)), cuts[-1][j])
        if best_key is None or key > best_key:
            best_key = key
            best = tuple(float(c) for c in key[2:])
    if best is None:  # nothing flags few enough: flag nothing
        return tuple(float(c[-1]) for c in cuts)
    return best


def rates_rule(scores: Sequence[np.ndarray], bad: np.ndarray,
               thresholds: Sequence[float]) -> dict[str, Any]:
    """:func:`rates` of the rule "any score above its threshold" (NaN never flags)."""
    with np.errstate(invalid="ignore"):
        flagged = np.logical_or.reduce([np.asarray(x, float) > t
                                        for x, t in zip(scores, thresholds, strict=True)])
    return rates(flagged.astype(float), bad, 0.5)


def rates(scores: np.ndarray, bad: np.ndarray, threshold: float) -> dict[str, Any]:
    """Counts and flag rates at ``threshold``: ``recall_bad`` (bad flagged) and
    ``false_flag_good`` (good flagged); None for an empty class."""
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    flagged = scores > threshold
    return {"n_bad": int(bad.sum()), "n_good": int((~bad).sum()),
            "recall_bad": float(flagged[bad].mean()) if bad.any() else None,
            "false_flag_good": float(flagged[~bad].mean()) if (~bad).any() else None}


def targets_met(rate: dict[str, Any]) -> bool:
    """Both targets at once (a missing class counts as missed)."""
    return (rate["recall_bad"] is not None and rate["false_flag_good"] is not None
            and rate["recall_bad"] >= MIN_RECALL and rate["false_flag_good"] <= MAX_FALSE_FLAG)


def cross_validated_rates(scores: Sequence[np.ndarray], bad: np.ndarray, groups: Sequence[str],
                          max_false_flag: float, folds: int = 5, seeds: int = 20
                          ) -> dict[str, float | None]:
    """Out-of-sample ``recall_bad`` and ``false_flag_good`` of :func:`calibrate_rule` at
    ``max_false_flag``: thresholds chosen on all groups but one fold and applied to that
    fold (:func:`grouped_cv_rates`). In-sample rates are optimistic, the more so the more
    thresholds are chosen; these are not, for one rule fixed in advance (the best of many
    rules scored on the same folds is optimistic again, see :func:`select_rule`)."""
    scores = [np.asarray(x, float) for x in scores]
    bad = np.asarray(bad, bool)

    def flag_held(train: np.ndarray, held: np.ndarray) -> np.ndarray:
        cuts = calibrate_rule([x[train] for x in scores], bad[train], max_false_flag)
        with np.errstate(invalid="ignore"):
            return np.logical_or.reduce([x[held] > c for x, c in
                                         zip(scores, cuts, strict=True)])

    return grouped_cv_rates(flag_held, bad, groups, folds, seeds)


def grouped_cv_rates(flag_held: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     bad: np.ndarray, groups: Sequence[str], folds: int = 5, seeds: int = 20
                     ) -> dict[str, float | None]:
    """Out-of-sample ``recall_bad`` and ``false_flag_good`` of a flag fitted on all groups
    but one fold and applied to that fold: ``flag_held(train, held)`` (boolean ``[n]``
    masks) returns the flags of the ``held`` rows, fitted on the ``train`` rows only;
    ``groups`` holds one label per row (e.g. the system, so replicas of a system never sit
    on both sides); averaged over ``seeds`` random fold assignments (``None`` for a class
    with no rows)."""
    bad, groups = np.asarray(bad, bool), np.asarray(groups)
    names = np.unique(groups)
    recall, false_flag = [], []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(names))
        fold_of = dict(zip(names[order], np.arange(len(names)) % folds, strict=True))
        fold = np.array([fold_of[g] for g in groups])
        flagged = np.zeros(len(bad), dtype=bool)
        for k in range(folds):
            flagged[fold == k] = flag_held(fold != k, fold == k)
        recall.append(flagged[bad].mean() if bad.any() else np.nan)
        false_flag.append(flagged[~bad].mean() if (~bad).any() else np.nan)
    return {"recall_bad": float(np.mean(recall)) if bad.any() else None,
            "false_flag_good": float(np.mean(false_flag)) if (~bad).any() else None}


def closest_to_targets(table: Sequence[dict[str, Any]], min_recall: float = MIN_RECALL,
                       max_false_flag: float = MAX_FALSE_FLAG) -> dict[str, Any]:
    """The candidate of ``table`` (dicts with ``recall_bad``, ``false_flag_good``,
    ``signals``, ``cap``) whose larger shortfall from the two targets is smallest: recall
    below ``min_recall`` and false flags above ``max_false_flag`` count alike, in rate points.
    Among those meeting both (no shortfall), or equally short, the highest recall, then the
    fewest false flags, the fewest signals, the higher cap. A rule that stays within the
    false-flag cap by flagging few bad rows is not preferred to one that misses both targets
    by less."""
    def key(t: dict[str, Any]) -> tuple:
        short = max(min_recall - t["recall_bad"], t["false_flag_good"] - max_false_flag, 0.0)
        return (round(short, 9), -round(t["recall_bad"], 9), round(t["false_flag_good"], 9),
                len(t["signals"]), -t["cap"])

    return min(table, key=key)


def select_rule(scores: dict[str, np.ndarray], bad: np.ndarray, groups: Sequence[str],
                first: str, caps: Sequence[float] = tuple(np.arange(15, 4, -1) / 100),
                target: float = MAX_FALSE_FLAG, min_recall: float = MIN_RECALL
                ) -> dict[str, Any]:
    """Which signals, at which in-sample cap, by grouped cross-validation: every subset of
    ``scores`` (named ``[n]`` arrays, flagged when above) that contains ``first``, every cap
    of ``caps``; the one closest to both targets out of sample (:func:`closest_to_targets`:
    ``min_recall`` of bad rows flagged, at most ``target`` of good ones). Its
    cross-validated rates are those of the best of many candidates scored on the same folds,
    so still somewhat optimistic. Needs both bad and good rows. Returns ``signals``,
    ``cap``, ``thresholds`` (calibrated on all rows at ``cap``, by signal), ``cv`` (its
    out-of-sample rates) and ``in_sample`` rates, and ``table`` (every candidate)."""
    bad = np.asarray(bad, bool)
    if bad.all() or not bad.any():
        raise ValueError("select_rule needs both bad and good rows")
    others = [k for k in scores if k != first]
    table = []
    for n in range(len(others) + 1):
        for extra in itertools.combinations(others, n):
            names = [first, *extra]
            for cap in caps:
                cv = cross_validated_rates([scores[k] for k in names], bad, groups, cap)
                table.append({"signals": names, "cap": float(cap), **cv})
    best = closest_to_targets(table, min_recall, target)
    chosen = [scores[k] for k in best["signals"]]
    cuts = calibrate_rule(chosen, bad, best["cap"])
    return {"signals": best["signals"], "cap": best["cap"],
            "thresholds": dict(zip(best["signals"], cuts, strict=True)),
            "cv": {"recall_bad": best["recall_bad"],
                   "false_flag_good": best["false_flag_good"]},
            "in_sample": rates_rule(chosen, bad, cuts), "table": table}
