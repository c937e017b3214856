"""Distributed data-parallel training with 2 CPU processes (gloo): parameters stay identical
on every rank and the loss goes down."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_utils import write_emt_dataset

from tdn_calc.train.metrics_log import read_metrics

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(data: Path, out: Path, steps: int) -> dict:
    return {"output_dir": str(out), "seed": 0,
            "data": {"path": str(data), "batch_size": 2, "split_fractions": [0.75, 0.25, 0.0]},
            "model": {"lmax": 1, "channels": 16, "num_layers": 1, "num_heads": 2, "cutoff": 4.0,
                      "num_radial": 6, "radial_hidden": 16},
            "training": {"max_steps": steps, "lr": 0.01, "warmup_steps": 2, "ema_decay": 0.0,
                         "forces_weight": 100.0, "log_every_steps": 1, "test_at_end": False,
                         "num_threads": 1}}


_WORKER = """
import sys, json, torch
from pathlib import Path
from tdn_calc.train.config import config_from_dict
from tdn_calc.train.evaluate import evaluate
from tdn_calc.train.trainer import Trainer

raw, rank, result_dir = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
trainer = Trainer(config_from_dict(raw))
before = evaluate(trainer.model, trainer.dataset, trainer.train_idx)
status = trainer.run()
after = evaluate(trainer.model, trainer.dataset, trainer.train_idx)
torch.save({"status": status, "step": trainer.step,
            "before": before["forces_mae_meV_A"], "after": after["forces_mae_meV_A"],
            "params": {k: v.clone() for k, v in trainer.model.state_dict().items()}},
           Path(result_dir) / f"rank{rank}.pt")
"""


def _run_ranks(raw: dict, result_dir: Path, timeout: float = 240.0) -> None:
    """Start WORLD fresh interpreters as ranks of one gloo group on the loopback interface.

    Plain subprocesses (not ``mp.spawn``) with a hard timeout: a rendezvous that hangs fails
    the test with the ranks' output instead of stalling the suite (it did under xdist).
    """
    import json

    rendezvous = result_dir / "rendezvous"  # a file of this test's own: no port to share
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                   TDN_DIST_INIT_METHOD=rendezvous.as_uri(), TDN_DIST_TIMEOUT_S="120",
                   GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(raw), str(rank), str(result_dir)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"DDP ranks did not finish within {timeout} s: "
                    + " | ".join(p.communicate()[0][-2000:] for p in procs))
    finally:  # never leave a rank behind (a failed assertion, Ctrl-C, pytest-timeout)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]


# Once an intermittent hang (both ranks connected, then idle until the timeout): rank 0 wrote
# the split file and waited in a barrier that rank 1 skipped when it found the file already
# there (tdn_calc/train/setup.py). The ranks now also meet in a file of this test's own (no
# port to share), every collective times out after 120 s, and the ranks are always reaped.
@pytest.mark.timeout(400)
def test_two_cpu_processes_train_one_model(tmp_path):
    data = write_emt_dataset(tmp_path / "data", n_frames=2)
    raw = _config(data, tmp_path / "run", steps=12)
    _run_ranks(raw, tmp_path)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert all(r["status"] == "finished" and r["step"] == 12 for r in results)
    for key, value in results[0]["params"].items():
        assert torch.equal(value, results[1]["params"][key]), key
    # force MAE over the whole training set (the per-step loss on 2 + 2 structures is noisy)
    assert results[0]["after"] < 0.8 * results[0]["before"]
    # only rank 0 writes files; its metrics log holds every step once
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["kind"] == "train"]
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert (tmp_path / "run" / "best.safetensors").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_cli(tmp_path):
    """``torchrun --nproc_per_node 2 tdn train`` end to end (a few seconds per process)."""
    import yaml

    data = write_emt_dataset(tmp_path / "data", n_frames=2)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(data, tmp_path / "run", steps=6)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
           "--master_port", str(_free_port()), "-m", "tdn_calc.cli.main", "train", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "training finished at step 6" in proc.stdout
    assert (tmp_path / "run" / "best.safetensors").exists()


def test_every_rank_meets_in_the_split_barrier(tmp_path, monkeypatch):
    """The cause of the old hang, without processes: a rank meets the others in the barrier
    after the split is made whether or not the file is already there when it looks."""
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.train import setup
    from tdn_calc.train.config import config_from_dict
    from tdn_calc.train.distributed import DistInfo

    met = []
    monkeypatch.setattr(setup, "barrier", lambda info: met.append(info.rank))
    data = write_emt_dataset(tmp_path / "data", n_frames=2)
    cfg = config_from_dict(_config(data, tmp_path / "run", steps=1)).train
    cfg.split_path.parent.mkdir(parents=True, exist_ok=True)
    dataset = H5Dataset(cfg.data_path)
    for rank in (0, 1, 0):  # rank 0 writes the file; rank 1 (and rank 0 again) find it
        setup.load_or_make_split(dataset, cfg, DistInfo(rank=rank, world_size=WORLD))
    assert met == [0, 1, 0]
