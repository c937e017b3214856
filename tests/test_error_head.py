"""benchmarks/error_head.py: the logistic error head and its comparison with the rule."""

from __future__ import annotations

import numpy as np
from error_head import FEATURES, compare, fit_head, head_flags


def test_fit_head_recovers_a_logistic_relation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, len(FEATURES)))
    true = np.array([2.0, -1.0, 0.0, 0.5])
    bad = rng.random(4000) < 1 / (1 + np.exp(-(0.3 + x @ true)))
    predict = fit_head(x, bad, l2=0.0)
    w = np.array(list(predict.coefficients.values()))
    # standardised inputs of unit spread: the coefficients are the true ones
    assert np.allclose(w, [0.3, *true], atol=0.15)
    p = predict(x)
    assert ((p > 0) & (p < 1)).all() and np.corrcoef(p, bad)[0, 1] > 0.5


def test_head_threshold_keeps_the_cap_in_sample():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, len(FEATURES)))
    bad = rng.random(300) < 0.4
    for cap in (0.1, 0.2):
        predict, threshold = head_flags(x, bad, cap)
        assert (predict(x)[~bad] > threshold).mean() <= cap + 1e-12


def _rows(n: int, rng: np.random.Generator) -> list[dict]:
    """Relaxations whose badness only the step count tells (novelty and partner are noise),
    four replicas per system."""
    rows = []
    for k in range(n):
        bad = bool(rng.random() < 0.5)
        steps = int(rng.integers(150, 400) if bad else rng.integers(10, 200))
        rows.append({"label": f"Pt111/X{k // 4}/top/r{k % 4}", "bad": bad, "landed": not bad,
                     "uncertainty_max": float(rng.random()),
                     "committee_force_max": float(rng.random() + 0.01),
                     "tdn_n_steps": steps, "tdn_converged": True})
    return rows


def test_the_head_uses_what_the_rule_cannot():
    rng = np.random.default_rng(2)
    result = compare(_rows(240, rng), {"check": _rows(80, rng), "test": _rows(80, rng)},
                     caps=(0.15,))
    (row,) = result["caps"]
    # the rule sees only novelty and partner (noise here); the head learns the steps
    assert row["head_cv"]["recall_bad"] > row["rule_cv"]["recall_bad"] + 0.3
    assert row["head_test"]["recall_bad"] > 0.6 and row["head_test"]["false_flag_good"] < 0.3
    assert row["head_coefficients"]["log_steps"] > 0
