"""Run MACE's own training script (``mace_run_train``) with process CPU-time marks.

Executed with the peers' Python (``benchmarks/.venv-peers``), not the project's::

    python benchmarks/peers/mace_train.py MARKS.json -- <mace_run_train arguments>

It runs ``mace.cli.run_train.main()`` unchanged in this process (one torch thread) and
writes ``MARKS.json`` with ``time.process_time()`` seconds (user + system CPU of this
process) at: ``train_start`` (data read, statistics done, the model built), the end of
each epoch (``epochs``, CPU-s of each ``train_one_epoch`` call, validation excluded) and
``train_end`` (``tools.train`` returned: the training loop with its validations), and
``end`` (model saved; the process exits right after).
"""

from __future__ import annotations

import json
import os
import sys
import time


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        raise SystemExit("usage: mace_train.py MARKS.json -- <mace_run_train arguments>")
    marks_path, mace_args = sys.argv[1], sys.argv[3:]
    import torch

    torch.set_num_threads(1)
    import mace.tools
    from mace.cli import run_train

    train_module = sys.modules["mace.tools.train"]
    marks: dict = {"epochs": []}
    one_epoch, train = train_module.train_one_epoch, mace.tools.train

    def timed_epoch(*args, **kwargs):
        t0 = time.process_time()
        out = one_epoch(*args, **kwargs)
        marks["epochs"].append(time.process_time() - t0)
        return out

    def timed_train(*args, **kwargs):
        marks["train_start"] = time.process_time()
        out = train(*args, **kwargs)
        marks["train_end"] = time.process_time()
        return out

    train_module.train_one_epoch = timed_epoch
    mace.tools.train = timed_train
    sys.argv = ["mace_run_train", *mace_args]
    run_train.main()
    marks["end"] = time.process_time()
    marks["torch_threads"] = torch.get_num_threads()
    _write_json(marks_path, marks)


if __name__ == "__main__":
    main()
