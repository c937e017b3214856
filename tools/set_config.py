"""Maintainers' tool: a copy of a checkpoint with inference-only config fields changed.

    python tools/set_config.py models/tdn-catalysis-20261206.safetensors OUT.safetensors \
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
    save_model(model, args.out, {**card, "config_changes": log})
    print(f"{args.out}: {changes} (weights of {args.checkpoint})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
