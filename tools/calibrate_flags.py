"""Choose a model's uncertainty thresholds on validation relaxations and record them.

Reads ``benchmarks/adsorption_quality.py`` reports of **validation** systems (several are
pooled: e.g. the coverage2 and the first-set validation splits), takes the relaxations that
are bad or landed (:mod:`tdn_calc.evaluation.flagging`), and prints the threshold of the
chemistry-novelty score alone and, when the reports carry a committee partner's force
disagreement (``committee_force_max``), the pair of thresholds of the rule "novelty or
disagreement above its threshold" (:func:`~tdn_calc.evaluation.flagging.calibrate_pair`):
the highest recall of bad relaxations with at most 15 % of landed ones flagged.
``--write MODEL`` records them in the manifest (``tools/make_uncertainty_sidecar.py
--threshold-only``), the partner named by ``--committee``.

    python tools/calibrate_flags.py benchmarks/results/adsorption_quality_X-val.json \\
        benchmarks/results/adsorption_quality_X-oldval.json --committee tdn-catalysis-20261206-3 \\
        --write tdn-catalysis
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def pooled_rows(paths: list[str]) -> list[dict[str, Any]]:
    """Rows of the reports with a novelty score that are bad or landed."""
    rows = []
    for path in paths:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        rows += [r for r in report["rows"] if r.get("status") == "evaluated"
                 and "uncertainty_max" in r and (r["bad"] or r.get("landed"))]
    return rows


def calibrate_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Thresholds and rates on ``rows``: ``novelty`` alone, and ``pair`` (novelty, committee
    eV/Å) when every row has ``committee_force_max``."""
    from tdn_calc.evaluation.flagging import (
        auroc,
        calibrate,
        calibrate_pair,
        rates,
        rates_pair,
    )

    bad = np.array([bool(r["bad"]) for r in rows])
    novelty = np.array([r["uncertainty_max"] for r in rows])
    t = calibrate(novelty, bad)
    out: dict[str, Any] = {"n_bad": int(bad.sum()), "n_landed": int((~bad).sum()),
                           "novelty": {"threshold": t, "auroc": auroc(novelty, bad),
                                       **rates(novelty, bad, t)}}
    if rows and all(r.get("committee_force_max") is not None for r in rows):
        gap = np.array([r["committee_force_max"] for r in rows])
        pair = calibrate_pair(novelty, gap, bad)
        out["pair"] = {"thresholds": list(pair), "auroc_committee": auroc(gap, bad),
                       **rates_pair(novelty, gap, bad, pair)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="adsorption_quality JSONs of validation systems")
    p.add_argument("--committee", default=None,
                   help="the partner the reports were run with (recorded with --write)")
    p.add_argument("--write", default=None, metavar="MODEL",
                   help="record the chosen thresholds in MODEL's manifest entry")
    args = p.parse_args(argv)
    partners = {(json.loads(Path(r).read_text(encoding="utf-8")).get("committee") or {})
                .get("model") for r in args.reports}
    if args.committee and partners != {args.committee}:
        p.error(f"the reports were run with committee partner(s) {sorted(map(str, partners))}, "
                f"not {args.committee!r}")
    result = calibrate_rows(pooled_rows(args.reports))
    print(json.dumps(result, indent=1))
    if args.write:
        spec = importlib.util.spec_from_file_location(
            "make_uncertainty_sidecar", ROOT / "tools" / "make_uncertainty_sidecar.py")
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        if args.committee:
            if "pair" not in result:
                p.error("--committee needs reports with the partner's committee_force_max")
            novelty, force = result["pair"]["thresholds"]
            return tool.set_threshold(args.write, round(novelty, 4), args.committee,
                                      round(force, 4))
        # the novelty threshold alone: a partner recorded before would no longer match it
        return tool.set_threshold(args.write, round(result["novelty"]["threshold"], 4), "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
