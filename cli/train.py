"""``tdn train`` and ``tdn eval``: train a TDN model from a YAML config; evaluate a model on
an HDF5 data set."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from tdn_calc.errors import TDNError


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--resume", is_flag=True,
              help="Continue the run in output_dir from its checkpoint.pt exactly.")
@click.option("--max-time", type=click.FloatRange(min=1), default=None,
              help="Stop cleanly (saving the state) before this many seconds from the start "
                   "of the command.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Override output_dir of the config.")
@click.option("--data", "data_path", type=click.Path(exists=True), default=None,
              help="Override data.path of the config.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (overrides config).")
@click.option("--num-threads", type=click.IntRange(1), default=None,
              help="torch CPU threads per process.")
def train(config, resume, max_time, output_dir, data_path, device, num_threads) -> None:
    """Train a TDN model from the YAML CONFIG (see docs/training.md).

    Under ``torchrun --nproc_per_node N tdn train CONFIG`` the processes train one model
    with DistributedDataParallel (gloo on CPU, NCCL on GPU); rank 0 writes all files.
    SIGTERM/SIGINT stop after the current step with the state saved.
    """
    import time

    started_at = time.monotonic()
    # (idle OpenMP threads sleep instead of spinning: import tdn_calc sets OMP_WAIT_POLICY)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stdout)
    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger().setLevel(logging.WARNING)
    from tdn_calc.train.config import load_config
    from tdn_calc.train.trainer import Trainer

    overrides = {"max_time": max_time, "output_dir": output_dir, "device": device,
                 "num_threads": num_threads,
                 "data_path": os.path.abspath(data_path) if data_path else None}
    if output_dir:
        overrides["output_dir"] = os.path.abspath(output_dir)
    try:
        run = load_config(config, overrides=overrides)
        trainer = Trainer(run, resume=resume, started_at=started_at)
        status = trainer.run()
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"training {status} at step {trainer.step}; outputs in {trainer.out}")
    if status == "signal":
        sys.exit(128 + int(trainer._stop_signal or 15))


@click.command()
@click.argument("model")
@click.argument("data", type=click.Path(exists=True))
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all",
              show_default=True, help="Frames to evaluate.")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Split JSON (default: the one named in the model card, if it exists).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the metrics to this JSON file.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--max-frames", type=click.IntRange(1), default=None,
              help="Evaluate a seeded random subset of at most this many frames.")
@click.option("--by-kind", is_flag=True,
              help="Also the errors per frame kind (relax, rattled, displaced, ...).")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
def evaluate(model, data, split, split_file, json_path, batch_size, max_frames, by_kind,
             device, dtype) -> None:
    """Errors of MODEL (a .safetensors file or a registered name) on the frames in DATA:
    energy MAE (meV/atom), force MAE and RMSE (meV/Å), force MAE per element; with
    --by-kind, the same per frame kind."""
    from tdn_calc.train.evaluate import run_evaluation

    try:
        metrics = run_evaluation(model, data, split=split, split_file=split_file,
                                 batch_size=batch_size, max_frames=max_frames, device=device,
                                 dtype=dtype, by_kind=by_kind)
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    text = json.dumps(metrics, indent=2, sort_keys=True)
    click.echo(text)
    if json_path:
        from tdn_calc.fileio import atomic_write

        with atomic_write(json_path, "w") as fh:
            fh.write(text + "\n")
