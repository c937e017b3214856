"""Choose a model's uncertainty thresholds on validation relaxations and record them.

Reads ``benchmarks/adsorption_quality.py`` reports of **validation** systems (several are
pooled: e.g. the coverage2 and the first-set validation splits), takes the relaxations that
are bad or landed (:mod:`tdn_calc.evaluation.flagging`), and prints the threshold of the
chemistry-novelty score alone and, with ``--committee`` (reports that carry the partner's
force disagreement, ``committee_force_max``), the pair of thresholds of the rule "novelty or
disagreement above its threshold" (:func:`~tdn_calc.evaluation.flagging.calibrate_rule`):
the highest recall of bad relaxations with at most 15 % of landed ones flagged; with
``--curvature`` the adsorbate's softest curvature at the minimum (``adsorbate_curvature``,
:mod:`tdn_calc.soft_modes`, flagged below its threshold) joins the rule
(:func:`~tdn_calc.evaluation.flagging.calibrate_rule`, one threshold per score).
``--cv`` lets grouped cross-validation over the systems choose which of those signals join
the rule and at which in-sample cap of flagged landed relaxations
(:func:`~tdn_calc.evaluation.flagging.select_rule`): three thresholds chosen at exactly
15 % in-sample flag more out of sample, and a signal that only picks off a few validation
rows is left out. The caps tried run from 5 % to ``--max-cap`` (default 15 %, the
target); with a higher one the choice may flag more landed relaxations than the target
when that brings the rule closer to both targets (the larger of its two shortfalls
smaller). ``--write MODEL`` records them in the manifest
(``tools/make_uncertainty_sidecar.py --threshold-only``), the partner named by
``--committee`` when the rule keeps it.

    python tools/calibrate_flags.py benchmarks/results/adsorption_quality_X-val.json \\
        benchmarks/results/adsorption_quality_X-oldval.json --committee tdn-catalysis-20261206-3 \\
        --curvature --cv --write tdn-catalysis
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: the largest in-sample cap of flagged landed relaxations ``--cv`` tries by default
MAX_FALSE_FLAG_CAP = 0.15


def pooled_rows(paths: list[str]) -> list[dict[str, Any]]:
    """Rows of the reports with a novelty score that are bad or landed."""
    from tdn_calc.evaluation.flagging import flag_rows

    rows = []
    for path in paths:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        rows += flag_rows(report["rows"])
    return rows


def calibrate_rows(rows: list[dict[str, Any]], committee: bool = False,
                   curvature: bool = False, cv: bool = False,
                   max_cap: float = MAX_FALSE_FLAG_CAP) -> dict[str, Any]:
    """Thresholds and rates on ``rows``: ``novelty`` alone, and ``rule`` for the rule
    "novelty, or (``committee``) the partner's force disagreement, or (``curvature``) the
    negated adsorbate curvature above its threshold", with ``thresholds`` named
    ``novelty`` (score), ``committee`` (eV/Å) and ``curvature`` (eV/Å², flagged *below*).
    With ``cv``, grouped cross-validation over the systems chooses which of those signals
    join the rule and the in-sample cap of flagged landed ones, 5 % to ``max_cap`` (0.05 to
    1) in whole percents (:func:`~tdn_calc.evaluation.flagging.select_rule`): ``rule`` then
    holds its choice, its cross-validated rates (``cv``) and the candidates (``table``)."""
    from tdn_calc.data.split import system_of
    from tdn_calc.evaluation.flagging import (
        MAX_FALSE_FLAG,
        auroc,
        calibrate,
        calibrate_rule,
        cross_validated_rates,
        rates,
        rates_rule,
        row_scores,
        select_rule,
    )

    bad = np.array([bool(r["bad"]) for r in rows])
    novelty = np.array([r["uncertainty_max"] for r in rows])
    t = calibrate(novelty, bad)
    out: dict[str, Any] = {"n_bad": int(bad.sum()), "n_landed": int((~bad).sum()),
                           "novelty": {"threshold": t, "auroc": auroc(novelty, bad),
                                       **rates(novelty, bad, t)}}
    names = ["novelty", *(["committee"] if committee else []),
             *(["curvature"] if curvature else [])]
    scores = row_scores(rows, names)
    if curvature:
        softness = scores[-1]
        finite = np.isfinite(softness)
        out["curvature_auroc"] = auroc(softness[finite], bad[finite])
    if cv:
        groups = [system_of(r.get("label", str(k))) for k, r in enumerate(rows)]
        # the rule of all the signals, calibrated in sample at 15 %, out of sample
        out["all_signals_cross_validated"] = cross_validated_rates(scores, bad, groups,
                                                                   MAX_FALSE_FLAG)
        if not 0.05 <= max_cap <= 1:
            raise ValueError(f"max_cap must lie between 0.05 and 1, got {max_cap}")
        caps = np.arange(math.floor(max_cap * 100 + 1e-9), 4, -1) / 100  # whole percents
        chosen = select_rule(dict(zip(names, scores, strict=True)), bad, groups, "novelty",
                             caps=caps)
        thresholds = dict(chosen["thresholds"])
        if "curvature" in thresholds:
            thresholds["curvature"] = -thresholds["curvature"]
        out["rule"] = {"thresholds": thresholds, "cap": chosen["cap"], "cv": chosen["cv"],
                       **chosen["in_sample"], "table": chosen["table"]}
    elif len(scores) > 1:
        cuts = calibrate_rule(scores, bad)
        thresholds = dict(zip(names, cuts, strict=True))
        if curvature:
            thresholds["curvature"] = -thresholds["curvature"]
        out["rule"] = {"thresholds": thresholds, **rates_rule(scores, bad, cuts)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="adsorption_quality JSONs of validation systems")
    p.add_argument("--committee", default=None,
                   help="the partner the reports were run with: its disagreement joins the "
                   "rule (recorded with --write)")
    p.add_argument("--curvature", action="store_true",
                   help="the adsorbate's softest curvature joins the rule (recorded with "
                   "--write)")
    p.add_argument("--cv", action="store_true",
                   help="choose which of the signals join the rule, and the in-sample cap, "
                   "by cross-validation grouped by system (in-sample rates of several "
                   "thresholds are optimistic)")
    p.add_argument("--max-cap", type=float, default=MAX_FALSE_FLAG_CAP, metavar="FRACTION",
                   help="with --cv, the largest in-sample cap of flagged landed relaxations "
                   "to try (default %(default)s, the target; above it the choice may trade "
                   "false flags for recall when that brings it closer to both targets)")
    p.add_argument("--out", default=None, help="also write the result to this JSON file")
    p.add_argument("--write", default=None, metavar="MODEL",
                   help="record the chosen thresholds in MODEL's manifest entry")
    args = p.parse_args(argv)
    if not 0.05 <= args.max_cap <= 1:
        p.error(f"--max-cap must lie between 0.05 and 1, got {args.max_cap}")
    if args.max_cap != MAX_FALSE_FLAG_CAP and not args.cv:
        p.error("--max-cap needs --cv (it bounds the caps cross-validation tries)")
    reports = [json.loads(Path(r).read_text(encoding="utf-8")) for r in args.reports]
    partners = {(r.get("committee") or {}).get("model") for r in reports}
    if args.committee and partners != {args.committee}:
        p.error(f"the reports were run with committee partner(s) {sorted(map(str, partners))}, "
                f"not {args.committee!r}")
    rows = pooled_rows(args.reports)
    if args.committee and any(r.get("committee_force_max") is None for r in rows):
        p.error("--committee needs reports with the partner's committee_force_max in every row")
    if args.curvature and not any(r.get("adsorbate_curvature") is not None for r in rows):
        p.error("--curvature needs reports with adsorbate_curvature (adsorption_quality.py "
                "records it)")
    result = calibrate_rows(rows, bool(args.committee), args.curvature, args.cv, args.max_cap)
    print(json.dumps(result, indent=1))
    if args.out:
        from tdn_calc.fileio import atomic_write

        record = {"reports": args.reports, "committee": args.committee,
                  "curvature": args.curvature, "cv": args.cv,
                  **({"max_cap": args.max_cap} if args.cv else {}), **result}
        with atomic_write(Path(args.out), "w") as handle:
            handle.write(json.dumps(record, indent=1))
    if args.write:
        spec = importlib.util.spec_from_file_location(
            "make_uncertainty_sidecar", ROOT / "tools" / "make_uncertainty_sidecar.py")
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        chosen = result.get("rule", {}).get("thresholds") or {
            "novelty": result["novelty"]["threshold"]}
        curvatures = [r["adsorbate_curvature"] for r in rows
                      if r.get("adsorbate_curvature") is not None]
        if "curvature" in chosen and not any(c < chosen["curvature"] for c in curvatures):
            del chosen["curvature"]  # its cut flags nothing here: no threshold to record
        # rounded to 4 decimals towards flagging less; a partner or curvature recorded
        # before, not in this rule, is removed: the novelty threshold was chosen without it
        up, down = (lambda x: math.ceil(x * 1e4) / 1e4), (lambda x: math.floor(x * 1e4) / 1e4)
        partner = args.committee if "committee" in chosen else None
        return tool.set_threshold(
            args.write, up(chosen["novelty"]), partner or "none",
            None if "committee" not in chosen else up(chosen["committee"]),
            curvature_threshold="none" if "curvature" not in chosen
            else down(chosen["curvature"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
