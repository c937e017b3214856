"""Measure training throughput (frames/s) of a few model sizes on a frame file.

Usage: python throughput.py DATA [--threads 1 2] [--steps 40] [--batch-size 8] [--models ...]

Each measurement runs the real training loop (collate with neighbour lists, forward with
forces, force-loss backward, AdamW, EMA) for ``--steps`` steps after 5 warm-up steps and
reports frames per second of the timed steps (wall clock), and frames per CPU second of
this process: on a machine shared with other jobs, the latter with one thread is close to
what an idle core would give.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

SIZES = {
    "lmax1-C64-L2": {"lmax": 1, "channels": 64, "num_layers": 2},
    "lmax2-C64-L2": {"lmax": 2, "channels": 64, "num_layers": 2},
    "lmax2-C64-L3": {"lmax": 2, "channels": 64, "num_layers": 3},
}


def measure(data: str, model: dict, threads: int, steps: int, batch_size: int) -> dict:
    from tdn_calc.train.config import config_from_dict
    from tdn_calc.train.trainer import Trainer

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        raw = {"output_dir": out, "data": {"path": data, "batch_size": batch_size,
                                           "split_fractions": [1.0, 0.0, 0.0]},
               "model": {**model, "num_heads": 4, "cutoff": 5.0},
               "training": {"max_steps": 10**6, "log_every_steps": 10**6, "test_at_end": False,
                            "stats_max_frames": 200, "num_threads": threads}}
        trainer = Trainer(config_from_dict(raw))
        trainer.run(stop_at_step=5)  # warm-up
        trainer = Trainer(config_from_dict(raw), resume=True)
        t, cpu = time.perf_counter(), time.process_time()
        trainer.run(stop_at_step=5 + steps)
        seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
        n_params = sum(p.numel() for p in trainer.model.parameters())
    return {"frames_per_s": steps * batch_size / seconds,
            "frames_per_cpu_s": steps * batch_size / cpu_seconds, "threads": threads,
            "n_params": n_params, "seconds": seconds, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    from tdn_calc.data.dataset import H5Dataset

    ds = H5Dataset(args.data)
    print(f"# {len(ds)} frames, {ds.n_atoms.mean():.1f} atoms/frame, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    for name in args.models:
        model = SIZES[name]
        for threads in args.threads:
            result = measure(args.data, model, threads, args.steps, args.batch_size)
            print(json.dumps({"model": name, **result}), flush=True)


if __name__ == "__main__":
    main()
