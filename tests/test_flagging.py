"""Flag-quality figures of the trust issue (tdn_calc.evaluation.flagging)."""

from __future__ import annotations

import numpy as np
import pytest

from tdn_calc.evaluation.flagging import (
    auroc,
    calibrate,
    calibrate_rule,
    is_bad,
    rates,
    rates_rule,
    targets_met,
)


def test_bad_is_the_issue_definition():
    assert not is_bad(0.5, 0.2)  # on the lines: not bad
    assert is_bad(0.51, 0.0) and is_bad(0.0, 0.21)


def test_auroc_orders_and_ties():
    assert auroc([3, 4], [True, True]) is None
    assert auroc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auroc([1, 2, 3, 4], [True, True, False, False]) == 0.0
    assert auroc([1, 1], [True, False]) == 0.5


def test_calibrate_keeps_false_flags_under_the_cap_and_maximises_recall():
    rng = np.random.default_rng(0)
    good, bad = rng.normal(0, 1, 200), rng.normal(2, 1, 100)
    scores = np.r_[good, bad]
    is_bad_ = np.r_[np.zeros(200, bool), np.ones(100, bool)]
    t = calibrate(scores, is_bad_, max_false_flag=0.15)
    r = rates(scores, is_bad_, t)
    assert r["false_flag_good"] <= 0.15 and r["n_bad"] == 100 and r["n_good"] == 200
    for cut in np.linspace(-3, 5, 400):  # no threshold within the cap recalls more
        other = rates(scores, is_bad_, cut)
        assert other["false_flag_good"] > 0.15 or other["recall_bad"] <= r["recall_bad"]
    # separable classes: everything bad flagged, nothing good
    t = calibrate(np.r_[good - 10, bad + 10], is_bad_)
    assert rates(np.r_[good - 10, bad + 10], is_bad_, t) == {
        "n_bad": 100, "n_good": 200, "recall_bad": 1.0, "false_flag_good": 0.0}


def test_calibrate_without_good_structures_flags_all_bad():
    assert rates([2.0, 3.0], [True, True], calibrate([2.0, 3.0], [True, True]))[
        "recall_bad"] == 1.0


def test_targets_met_needs_both_classes():
    assert targets_met({"recall_bad": 0.9, "false_flag_good": 0.15})
    assert not targets_met({"recall_bad": 0.89, "false_flag_good": 0.0})
    assert not targets_met({"recall_bad": 1.0, "false_flag_good": None})
    with pytest.raises(KeyError):
        targets_met({})


def test_calibrate_rule_never_recalls_less_than_either_score_alone():
    """The "either score above its threshold" rule contains each single-score rule (the
    other threshold above all its scores), so its calibrated recall is at least theirs, with
    false flags under the cap; a bad class that only the second score separates is found."""
    rng = np.random.default_rng(1)
    n_good, n_bad = 120, 60
    is_bad_ = np.r_[np.zeros(n_good, bool), np.ones(n_bad, bool)]
    first = np.r_[rng.normal(0, 1, n_good), rng.normal(1.5, 1, n_bad)]
    second = np.r_[rng.normal(0, 1, n_good), rng.normal(0, 1, n_bad // 2),
                   rng.normal(4, 0.5, n_bad // 2)]
    pair = calibrate_rule([first, second], is_bad_)
    both = rates_rule([first, second], is_bad_, pair)
    assert both["false_flag_good"] <= 0.15
    for alone in (first, second):
        r = rates(alone, is_bad_, calibrate(alone, is_bad_))
        assert both["recall_bad"] >= r["recall_bad"]
    assert both["recall_bad"] > rates(first, is_bad_, calibrate(first, is_bad_))["recall_bad"]
    # exhaustive check of the optimum on a coarse grid
    for c1 in np.linspace(-3, 6, 40):
        for c2 in np.linspace(-3, 6, 40):
            other = rates_rule([first, second], is_bad_, (c1, c2))
            assert other["false_flag_good"] > 0.15 or other["recall_bad"] <= both["recall_bad"]


def test_calibrate_rule_three_scores_finds_a_class_only_the_third_separates():
    """A third score that alone separates a third of the bad structures (and is NaN, never
    flagging, on a quarter of all rows) raises the calibrated recall over the best pair."""
    rng = np.random.default_rng(2)
    n_good, n_bad = 90, 45
    is_bad_ = np.r_[np.zeros(n_good, bool), np.ones(n_bad, bool)]
    first = np.r_[rng.normal(0, 1, n_good), rng.normal(2, 1, n_bad // 3),
                  rng.normal(0, 1, 2 * n_bad // 3)]
    second = np.r_[rng.normal(0, 1, n_good), rng.normal(0, 1, n_bad // 3),
                   rng.normal(3, 0.5, n_bad // 3), rng.normal(0, 1, n_bad // 3)]
    third = np.r_[rng.normal(0, 1, n_good), rng.normal(0, 1, 2 * n_bad // 3),
                  rng.normal(3, 0.5, n_bad // 3)]
    third[rng.permutation(len(third))[: len(third) // 4]] = np.nan
    cuts = calibrate_rule([first, second, third], is_bad_)
    three = rates_rule([first, second, third], is_bad_, cuts)
    two = rates_rule([first, second], is_bad_, calibrate_rule([first, second], is_bad_))
    assert three["false_flag_good"] <= 0.15 and len(cuts) == 3
    assert three["recall_bad"] > two["recall_bad"]
    # NaN never flags: at thresholds below every finite score, the NaN rows stay unflagged
    flags = rates_rule([third], np.isnan(third), (-1e9,))
    assert flags["recall_bad"] == 0.0 and flags["false_flag_good"] == 1.0


def test_calibrate_rule_is_the_exhaustive_optimum_over_every_cut():
    """The pruned search finds the best feasible recall of the brute-force search over all
    cut combinations (three scores, few rows)."""
    import itertools

    rng = np.random.default_rng(5)
    n_good, n_bad = 14, 10
    is_bad_ = np.r_[np.zeros(n_good, bool), np.ones(n_bad, bool)]
    scores = [np.r_[rng.normal(0, 1, n_good), rng.normal(m, 1, n_bad)] for m in (1, 0.5, 0)]
    best = max(
        (r["recall_bad"], -r["false_flag_good"])
        for cuts in itertools.product(*(np.unique(np.r_[x, x.max() + 1]) - 1e-9 for x in scores))
        if (r := rates_rule(scores, is_bad_, cuts))["false_flag_good"] <= 0.15
    )
    got = rates_rule(scores, is_bad_, calibrate_rule(scores, is_bad_))
    assert (got["recall_bad"], -got["false_flag_good"]) == best


def test_select_rule_by_cross_validation_leaves_out_a_noise_score():
    """A score that separates a class of bad rows joins the rule; one of pure noise, which
    in-sample calibration would still use to pick off a few bad rows, does not: out of
    sample it only adds false flags. Groups (systems with replicas) never straddle folds."""
    from tdn_calc.evaluation.flagging import cross_validated_rates, select_rule

    rng = np.random.default_rng(7)
    n_good, n_bad = 80, 60
    is_bad_ = np.r_[np.zeros(n_good, bool), np.ones(n_bad, bool)]
    scores = {
        "novelty": np.r_[rng.normal(0, 1, n_good), rng.normal(2.5, 1, n_bad // 2),
                         rng.normal(0, 1, n_bad // 2)],
        "soft": np.r_[rng.normal(0, 1, n_good), rng.normal(0, 1, n_bad // 2),
                      rng.normal(3, 0.5, n_bad // 2)],
        "noise": rng.normal(0, 1, n_good + n_bad),
    }
    groups = [f"s{k // 2}" for k in range(n_good + n_bad)]  # two replicas per system
    chosen = select_rule(scores, is_bad_, groups, "novelty")
    assert chosen["signals"] == ["novelty", "soft"]
    assert chosen["cv"]["false_flag_good"] <= 0.15
    assert set(chosen["thresholds"]) == {"novelty", "soft"}
    cv = cross_validated_rates([scores["novelty"], scores["soft"]], is_bad_, groups,
                               chosen["cap"])
    assert cv == pytest.approx(chosen["cv"])  # seeded: the same folds every time
    assert chosen["cv"]["recall_bad"] <= chosen["in_sample"]["recall_bad"] + 1e-9


def test_cross_validation_never_splits_a_group():
    """A score that memorises each group (the same value for its replicas, bad groups above
    good ones only by their own label) calibrates perfectly in sample; held-out groups are
    new, so cross-validation cannot use it: its out-of-sample recall falls to what the
    held-out groups' values allow. And a class with no rows gives None, not a rate."""
    from tdn_calc.evaluation.flagging import cross_validated_rates

    rng = np.random.default_rng(3)
    n_groups = 40
    group_bad = rng.random(n_groups) < 0.5
    group_value = rng.normal(0, 1, n_groups)  # unrelated to badness
    groups = [f"g{g}" for g in range(n_groups) for _ in range(3)]
    bad = np.repeat(group_bad, 3)
    score = np.repeat(group_value, 3)
    in_sample = rates_rule([score], bad, calibrate_rule([score], bad))
    cv = cross_validated_rates([score], bad, groups, 0.15, seeds=5)
    assert cv["recall_bad"] < in_sample["recall_bad"] + 1e-9
    assert cv["recall_bad"] < 0.5  # no better than the score's chance level out of sample
    none_bad = cross_validated_rates([score], np.zeros_like(bad), groups, 0.15, seeds=1)
    assert none_bad["recall_bad"] is None and none_bad["false_flag_good"] is not None


def test_closest_to_targets_prefers_the_rule_nearest_both_targets():
    """When no rule meets both targets out of sample, the one short of them by the least
    wins (87 % / 17 % beats 79 % / 15 %: 3 points short against 11); among rules meeting
    both, the highest recall, then fewer false flags, fewer signals."""
    from tdn_calc.evaluation.flagging import closest_to_targets

    cautious = {"signals": ["novelty"], "cap": 0.12, "recall_bad": 0.79, "false_flag_good": 0.15}
    balanced = {"signals": ["novelty", "committee"], "cap": 0.12, "recall_bad": 0.87,
                "false_flag_good": 0.17}
    loud = {"signals": ["novelty", "committee"], "cap": 0.15, "recall_bad": 0.95,
            "false_flag_good": 0.30}
    assert closest_to_targets([cautious, balanced, loud]) is balanced
    good = {"signals": ["novelty", "committee"], "cap": 0.1, "recall_bad": 0.92,
            "false_flag_good": 0.14}
    simpler = {"signals": ["novelty"], "cap": 0.1, "recall_bad": 0.92, "false_flag_good": 0.14}
    better = {"signals": ["novelty", "committee"], "cap": 0.1, "recall_bad": 0.95,
              "false_flag_good": 0.15}
    assert closest_to_targets([cautious, balanced, good, simpler, better]) is better
    assert closest_to_targets([good, simpler]) is simpler
