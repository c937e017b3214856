"""Maintainers' tool: a copy of a checkpoint with inference-only config fields changed.

    python tools/set_config.py runs/tdn-catalysis-v3/shipped.safetensors OUT.safetensors \
        --set norm_eps=0.01 --reason "..."

Only fields that do not change the parameters' shapes may be set (``norm_eps``); the weights
are copied bit for bit, the model card gains a ``config_changes`` entry (field, old and new
value, reason, date), and the input is never touched. Measure the copy again (``tdn eval``,
the relaxation and adsorption benchmarks) and ship it with ``tools/register_model.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path

from tdn_calc.checkpoint import load_checkpoint_file, read_metadata, save_model
from tdn_calc.nn.model import TDNModel

#: Config fields that change the function but not the parameters.
SETTABLE = {"norm_eps": float}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--set", action="append", required=True, metavar="FIELD=VALUE")
    p.add_argument("--reason", required=True)
    p.add_argument("--test-metrics", metavar="JSON",
                   help="`tdn eval --split test --json` of the changed model: replaces the card's "
                        "test metrics (the old ones stay as test_before_config_change)")
    args = p.parse_args(argv)
    if Path(args.out).resolve() == Path(args.checkpoint).resolve() or Path(args.out).exists():
        p.error(f"{args.out} exists or is the input; choose a new file")
    config, card = read_metadata(args.checkpoint)
    changes = {}
    for item in args.set:
        field, _, value = item.partition("=")
        if field not in SETTABLE:
            p.error(f"--set {field}: only {sorted(SETTABLE)} can be set")
        changes[field] = SETTABLE[field](value)
    source = load_checkpoint_file(args.checkpoint, device="cpu", dtype="float32")
    new_config = dataclasses.replace(config, **changes)
    model = TDNModel(new_config)
    model.load_state_dict(source.state_dict())
    today = datetime.date.today().isoformat()
    log = list(card.get("config_changes", []))
    log += [{"field": k, "old": getattr(config, k), "new": v, "reason": args.reason,
             "date": today} for k, v in changes.items()]
    new_card = {**card, "config_changes": log}
    if args.test_metrics:
        import json

        measured = json.loads(Path(args.test_metrics).read_text())
        keep = {k: v for k, v in measured.items() if k.endswith(("_meV_atom", "_meV_A", "_meV_A3"))
                or k in ("n_frames", "n_atoms", "n_structures", "forces_mae_meV_A_per_element")}
        metrics = dict(card.get("metrics", {}))
        if "test" in metrics:
            metrics["test_before_config_change"] = metrics["test"]
        metrics["test"] = {**keep, "split_file": measured.get("split_file"),
                           "measured": f"tdn eval after the config change ({today})"}
        new_card["metrics"] = metrics
    save_model(model, args.out, new_card)
    print(f"{args.out}: {changes} (weights of {args.checkpoint})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
