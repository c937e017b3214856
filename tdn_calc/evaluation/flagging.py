"""How well does an uncertainty flag separate bad relaxations from good ones?

The trust issue's definitions, shared by ``benchmarks/uncertainty_study.py`` and
``benchmarks/adsorption_quality.py``: a relaxed structure is **bad** when the teacher's largest
force on a free atom at the model's minimum exceeds :data:`BAD_FMAX` (eV/Å) or the teacher's
energy there lies more than :data:`BAD_DE` (eV) above the teacher's own minimum; it is
**good** when it lands in the teacher's minimum. Targets: at least :data:`MIN_RECALL` of bad
structures flagged, at most :data:`MAX_FALSE_FLAG` of good ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BAD_FMAX = 0.5  # eV/Å, teacher fmax at the model's minimum
BAD_DE = 0.2  # eV, teacher energy at the model's minimum above the teacher's own minimum
MIN_RECALL = 0.90  # target: at least this fraction of bad structures flagged
MAX_FALSE_FLAG = 0.15  # target: at most this fraction of good structures flagged


def is_bad(teacher_fmax_at_min: float, teacher_de: float) -> bool:
    """The issue's bad relaxation: teacher fmax (eV/Å) at the model's minimum above
    :data:`BAD_FMAX`, or ``teacher_de`` (eV, teacher energy at the model's minimum minus the
    teacher's own minimum) above :data:`BAD_DE`."""
    return bool(teacher_fmax_at_min > BAD_FMAX or teacher_de > BAD_DE)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a positive outscores a negative (ties count half); None when a class
    is empty."""
    s, y = np.asarray(scores, float), np.asarray(positive, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum())
                 / (len(pos) * len(neg)))


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


def calibrate_pair(first: np.ndarray, second: np.ndarray, bad: np.ndarray,
                   max_false_flag: float = MAX_FALSE_FLAG) -> tuple[float, float]:
    """Two thresholds for the rule "flagged when ``first`` or ``second`` is above its
    threshold" (e.g. the chemistry-novelty score and the committee force disagreement,
    ``[n]`` each): the pair with the highest recall of ``bad`` structures among those that
    flag at most ``max_false_flag`` of the good ones; of equal recalls, the fewest good ones
    flagged, then the highest thresholds."""
    first, second = np.asarray(first, float), np.asarray(second, float)
    bad = np.asarray(bad, bool)
    c1, c2 = _cuts(first), _cuts(second)
    above2 = second[None, :] > c2[:, None]  # [n_cuts2, n]
    ff = np.zeros((len(c1), len(c2)))
    recall = np.zeros((len(c1), len(c2)))
    for i, cut in enumerate(c1):  # one row of the grid at a time: memory n_cuts2 x n
        flagged = above2 | (first > cut)[None, :]
        if (~bad).any():
            ff[i] = flagged[:, ~bad].mean(-1)
        if bad.any():
            recall[i] = flagged[:, bad].mean(-1)
    key = np.where(ff <= max_false_flag + 1e-12, recall, -1.0)
    best = np.flatnonzero(np.isclose(key, key.max()))
    i, j = np.unravel_index(best, key.shape)
    k = np.lexsort((-c2[j], -c1[i], ff[i, j]))[0]  # fewest false flags, then highest cuts
    return float(c1[i[k]]), float(c2[j[k]])


def rates_pair(first: np.ndarray, second: np.ndarray, bad: np.ndarray,
               thresholds: tuple[float, float]) -> dict[str, Any]:
    """:func:`rates` of the rule "``first`` or ``second`` above its threshold"."""
    flagged = (np.asarray(first, float) > thresholds[0]) | (
        np.asarray(second, float) > thresholds[1])
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
