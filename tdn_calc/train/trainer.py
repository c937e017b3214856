"""`Trainer`: fit a TDN model to an HDF5 data set (single process or DDP under torchrun).

Outputs in ``output_dir``: ``checkpoint.pt`` (training state, see :mod:`.state`),
``best.safetensors`` (EMA weights with the best validation metric, with a model card),
``final.safetensors`` (EMA weights at the end), ``metrics.csv``, ``train.log``,
``run_config.json``, ``test_metrics.json`` and ``split.json`` (unless ``split_file`` is set).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.dataset import Collater, H5Dataset
from ..device import resolve_device
from ..errors import ConfigError
from ..fileio import atomic_write
from ..nn.config import TDNConfig
from ..nn.model import TDNModel
from .batches import batches_per_epoch, epoch_batches
from .card import dataset_fingerprint
from .config import RunConfig, TrainConfig
from .distributed import DistInfo, all_reduce_sum, any_rank, barrier, cleanup, init_distributed
from .evaluate import evaluate, reference_energies
from .extend import extended_for
from .loss import LossWeights, loss_terms, total_loss
from .metrics_log import MetricsCSV
from .optim import EMA, WarmupCosine, make_optimizer
from .setup import fitted_model_config, oversampled, select_frames
from .state import load_state, rng_state, save_state, set_rng_state

log = logging.getLogger("tdn_calc.train")

# settings that change the optimisation path: a resumed run warns when they differ
_PATH_SETTINGS = ("seed", "batch_size", "epochs", "max_steps", "lr", "min_lr_ratio",
                  "warmup_steps", "weight_decay", "ema_decay", "grad_clip", "energy_weight",
                  "forces_weight", "stress_weight", "data_path")


class Trainer:
    """Set up data, model and optimiser from ``run`` (fresh, or from ``checkpoint.pt`` in the
    output directory when ``resume``); then :meth:`run` trains.

    The wall-clock budget (``max_time``) counts from ``started_at`` (a ``time.monotonic()``
    value, e.g. taken when the command started) or else from the creation of the trainer.
    """

    def __init__(self, run: RunConfig, *, resume: bool = False,
                 started_at: float | None = None) -> None:
        self.t_start = time.monotonic() if started_at is None else started_at
        self.cfg: TrainConfig = run.train
        cfg = self.cfg
        self.out = Path(cfg.output_dir)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._add_file_log()
        barrier(self.dist)
        self.checkpoint_path = self.out / "checkpoint.pt"
        if not resume and self.checkpoint_path.exists():
            raise ConfigError(f"{self.checkpoint_path} exists: pass --resume to continue that "
                              "run, or choose another output_dir")
        state = load_state(self.checkpoint_path) if resume else None

        self.dataset = H5Dataset(cfg.data_path)
        saved_config = TDNConfig.from_json(state["model_config"]) if state else None
        frames = select_frames(self.dataset, cfg, self.dist, saved_config.elements
                               if saved_config else run.model["elements"])
        self.split = frames.split
        self.train_idx, self.val_idx, self.test_idx = frames.train, frames.val, frames.test
        initial = None  # the model fine-tuning starts from (a resumed run has its own state)
        if saved_config is None and cfg.init_from:
            from ..checkpoint import load_checkpoint_file

            initial = load_checkpoint_file(cfg.init_from, device="cpu")
            if set(frames.elements) - set(initial.config.elements):
                initial = extended_for(initial, self.dataset, self.train_idx, frames.elements)
        if saved_config is not None:
            model_config = saved_config
        elif initial is not None:
            model_config = initial.config
        else:
            model_config = fitted_model_config(
                {**run.model, "elements": frames.elements}, self.dataset, self.train_idx, cfg)
        # oversampling after the statistics: reference energies stay a fit to the real data
        self.train_idx = oversampled(self.dataset, self.train_idx, cfg.oversample,
                                     cfg.oversample_kinds)
        torch.manual_seed(cfg.seed)
        self.model = TDNModel(model_config).to(self.device)
        if initial is not None:
            self.model.load_state_dict(initial.state_dict())
            log.info("initialised from %s", cfg.init_from)
        self.model.train()
        self.eval_model = copy.deepcopy(self.model).eval()
        self.ddp = self._wrap(self.model)
        self.weights = LossWeights(cfg.energy_weight, cfg.forces_weight, cfg.stress_weight)
        self.steps_per_epoch = batches_per_epoch(self.train_idx.size, cfg.batch_size,
                                                 self.dist.world_size)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio))
        self.ema = EMA(self.model, cfg.ema_decay)
        self.collate = Collater(cutoff=model_config.cutoff, dtype=torch.float32,
                                max_neighbors=model_config.max_neighbors)
        self.metrics = MetricsCSV(self.out / "metrics.csv")
        self.step = self.epoch = self.batch_in_epoch = 0
        self.last_val_step = -1
        self.best: float = math.inf
        self.best_metrics: dict[str, Any] = {}
        self.elapsed_before = 0.0  # training seconds of earlier sessions
        self.fingerprint = dataset_fingerprint(self.dataset) if self.dist.is_main else {}
        if state is not None:
            self._restore(state)
        elif self.dist.is_main:
            with atomic_write(self.out / "run_config.json", "w") as fh:
                json.dump({"train": cfg.to_dict(), "model": model_config.to_dict()}, fh,
                          indent=1)
        self._stop_signal: int | None = None
        if state is None:
            self._window = self._new_window()
        self._save_seconds = 2.0
        self._step_seconds = 0.0
        self._val_seconds = 0.0

    # --- set-up ------------------------------------------------------------------------------
    def _add_file_log(self) -> None:
        handler = logging.FileHandler(self.out / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.set_name("tdn-train-file")
        root = logging.getLogger("tdn_calc")
        if not any(h.get_name() == "tdn-train-file" for h in root.handlers):
            root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)

    def _wrap(self, model: TDNModel) -> torch.nn.Module:
        if not self.dist.enabled:
            return model
        # Forces come from autograd.grad(create_graph=True) inside forward; that pass does
        # not touch parameter .grad, so DDP's reducer hooks fire only in loss.backward(),
        # once per parameter with its full (energy + force) gradient. Every parameter reaches
        # the energy except the optional direct-force head.
        return torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=model.config.direct_forces, broadcast_buffers=False)

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model_config": self.model.config.to_json(),
            "train_config": json.dumps(self.cfg.to_dict()),
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "last_val_step": self.last_val_step, "best": self.best,
            "best_metrics": json.dumps(self.best_metrics),
            "elapsed": self.elapsed(),
            "log_window": json.dumps({k: v for k, v in self._window.items() if k != "t"}),
            "n_train_frames": int(self.train_idx.size), "world_size": self.dist.world_size,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        old = json.loads(state["train_config"])
        changed = [k for k in _PATH_SETTINGS if old.get(k) != self.cfg.to_dict().get(k)]
        if changed:
            log.warning("resuming with changed settings %s: the run will not match an "
                        "uninterrupted one", changed)
        if int(state["n_train_frames"]) != self.train_idx.size:
            log.warning("the training split has %d frames, the checkpoint had %d",
                        self.train_idx.size, state["n_train_frames"])
        if int(state["world_size"]) != self.dist.world_size:
            log.warning("world size changed from %d to %d: data order and steps per epoch "
                        "differ from the original run", state["world_size"],
                        self.dist.world_size)
        self.model.load_state_dict(state["model"], strict=True)
        self.ema.load_state_dict(state["ema"])
        decay = [g["weight_decay"] for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the schedule follows the current config (identical values when it is unchanged)
        self.scheduler.lr_lambdas[0] = WarmupCosine(self.cfg.warmup_steps, self.total_steps,
                                                    self.cfg.min_lr_ratio)
        self.scheduler.base_lrs = [self.cfg.lr] * len(self.optimizer.param_groups)
        lr = self.cfg.lr * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, wd in zip(self.optimizer.param_groups, decay, strict=True):
            group["lr"], group["weight_decay"], group["initial_lr"] = lr, wd, self.cfg.lr
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        set_rng_state(state["rng"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.last_val_step, self.best = int(state["last_val_step"]), float(state["best"])
        self.best_metrics = json.loads(state["best_metrics"])
        self.elapsed_before = float(state["elapsed"])
        self._window = {**json.loads(state["log_window"]), "t": time.monotonic()}
        if self.dist.is_main:
            self.metrics.truncate_after(self.step)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", self.checkpoint_path,
                 self.step, self.epoch, self.batch_in_epoch)

    def save_checkpoint(self) -> None:
        """Write the training state (rank 0 only); times itself for the max_time margin."""
        if not self.dist.is_main:
            return
        t = time.monotonic()
        save_state(self.checkpoint_path, self.state_dict())
        self._save_seconds = max(self._save_seconds, time.monotonic() - t)
        log.info("saved training state at step %d to %s", self.step, self.checkpoint_path)

    def elapsed(self) -> float:
        """Training seconds over all sessions."""
        return self.elapsed_before + time.monotonic() - self.t_start

    # --- model export ---------------------------------------------------------------------------
    def ema_model(self) -> TDNModel:
        """The evaluation copy of the model holding the EMA weights."""
        self.ema.copy_to(self.eval_model)
        return self.eval_model

    def card(self, metrics: dict[str, Any]) -> dict[str, Any]:
        fp = self.fingerprint
        return {
            "name": self.out.name,
            "description": f"TDN model trained with `tdn train` on {fp.get('dataset')} "
                           f"({fp.get('reference_method')} labels); EMA weights",
            "trained_on": {**{k: fp.get(k) for k in ("reference_method", "dataset",
                                                      "dataset_sha256", "n_frames",
                                                      "n_trajs", "files")},
                           "split_file": str(self.cfg.split_path),
                           "split_seed": self.split.seed,
                           "n_train_frames": int(self.train_idx.size)},
            "metrics": metrics,
            "training": {"step": self.step, "epoch": self.epoch,
                         "hours": round(self.elapsed() / 3600, 4),
                         "world_size": self.dist.world_size, "config": self.cfg.to_dict()},
        }

    def export(self, name: str, metrics: dict[str, Any]) -> Path | None:
        """Save the EMA weights as ``output_dir/<name>.safetensors`` (rank 0)."""
        if not self.dist.is_main:
            return None
        from ..checkpoint import save_model

        return save_model(self.ema_model(), self.out / f"{name}.safetensors", self.card(metrics))

    # --- training ---------------------------------------------------------------------------------
    def _batch_target_energy(self, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.as_tensor(self.dataset.energy[targets["index"].numpy()],
                               dtype=torch.float64, device=self.device)

    def train_step(self, graph, targets) -> dict[str, float]:
        """One optimiser step on a collated batch; returns the loss terms (floats)."""
        target_energy = self._batch_target_energy(targets)
        graph = graph.to(self.device)
        targets = {k: v.to(self.device) for k, v in targets.items()}
        want_stress = self.weights.stress > 0 and bool(targets["stress_mask"].any())
        out = self.ddp(graph, compute_forces=True, compute_stress=want_stress, training=True)
        species = self.model.species_index(graph.atomic_numbers)
        terms = loss_terms(out, graph, targets, target_energy,
                           reference_energies(self.model, species))
        loss = total_loss(terms, self.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)
        self.step += 1
        return {"loss": loss.detach().item(),
                **{f"loss_{k}": v.detach().item() for k, v in terms.items()},
                "grad_norm": float(grad_norm)}

    def validate(self) -> dict[str, Any]:
        """Metrics of the EMA model on the validation frames (sharded over ranks)."""
        t = time.monotonic()
        shard = self.val_idx[self.dist.rank::self.dist.world_size]
        metrics = evaluate(self.ema_model(), self.dataset, shard,
                           batch_size=self.cfg.batch_size, weights=self.weights,
                           reduce=lambda v: all_reduce_sum(v, self.dist))
        metrics["n_structures"] = int(np.unique(self.dataset.traj[self.val_idx]).size)
        metrics["n_atoms"] = int(self.dataset.n_atoms[self.val_idx].sum())
        self.last_val_step = self.step
        self._val_seconds = time.monotonic() - t
        key = {"loss": "loss", "energy_mae": "energy_mae_meV_atom",
               "forces_mae": "forces_mae_meV_A"}[self.cfg.best_metric]
        value = metrics[key]
        improved = math.isfinite(value) and value < self.best
        log.info("validation step %d: E MAE %.3f meV/atom, F MAE %.2f RMSE %.2f meV/Å, loss "
                 "%.4g%s (%.1f s)", self.step, metrics["energy_mae_meV_atom"],
                 metrics["forces_mae_meV_A"], metrics["forces_rmse_meV_A"], metrics["loss"],
                 " (best)" if improved else "", self._val_seconds)
        if self.dist.is_main:
            self.metrics.write({"kind": "val", "step": self.step, "epoch": self.epoch,
                                "time_s": self.elapsed(), "val_loss": metrics["loss"],
                                **{f"val_{k}": metrics[k] for k in
                                   ("energy_mae_meV_atom", "energy_rmse_meV_atom",
                                    "forces_mae_meV_A", "forces_rmse_meV_A")}})
        if improved:
            self.best, self.best_metrics = value, metrics
            self.export("best", {"val": metrics, "val_step": self.step})
        return metrics

    def _val_due(self) -> bool:
        if self.val_idx.size == 0 or self.step == self.last_val_step or self.step == 0:
            return False
        every = self.cfg.val_every_steps
        return (self.step >= self.total_steps or self.batch_in_epoch >= self.steps_per_epoch
                or bool(every and self.step % every == 0))

    def _out_of_time(self, need: float) -> bool:
        if self.cfg.max_time is None:
            return False
        return time.monotonic() - self.t_start + need + self._save_seconds + 1.0 \
            > self.cfg.max_time

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self._stop_signal = signum
        log.warning("received signal %d: stopping after this step and saving", signum)

    def run(self, stop_at_step: int | None = None) -> str:
        """Train until the last step, a signal, ``max_time`` or ``stop_at_step``.

        Returns ``"finished"``, ``"signal"``, ``"time_limit"`` or ``"stopped"``; the
        training state is saved in every case.
        """
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            status = self._loop(stop_at_step)
            if status == "finished":
                self._finish()
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            cleanup(self.dist)
        return status

    def _loop(self, stop_at_step: int | None) -> str:
        cfg = self.cfg
        log.info("training %d steps (%d per epoch, %d train / %d val frames, batch %d x %d "
                 "ranks) from step %d", self.total_steps, self.steps_per_epoch,
                 self.train_idx.size, self.val_idx.size, cfg.batch_size,
                 self.dist.world_size, self.step)
        last_save = time.monotonic()
        window = self._window
        window["t"] = time.monotonic()
        loader = None
        while True:
            if self._val_due():
                if any_rank(self._out_of_time(self._val_seconds + self._step_seconds),
                            self.dist):
                    return self._stop("time_limit")
                self.validate()
            if self.step >= self.total_steps:
                return "finished"
            stop = self._stop_signal is not None or self._out_of_time(2 * self._step_seconds)
            if any_rank(stop, self.dist) or (stop_at_step is not None
                                             and self.step >= stop_at_step):
                return self._stop("signal" if self._stop_signal is not None else
                                  "stopped" if stop_at_step is not None
                                  and self.step >= stop_at_step else "time_limit")
            if self.batch_in_epoch >= self.steps_per_epoch:
                self.epoch, self.batch_in_epoch, loader = self.epoch + 1, 0, None
            if loader is None:
                batches = epoch_batches(self.train_idx, self.epoch, cfg.seed, cfg.batch_size,
                                        self.dist.rank, self.dist.world_size)
                loader = iter(torch.utils.data.DataLoader(
                    self.dataset, batch_sampler=batches[self.batch_in_epoch:],
                    collate_fn=self.collate, num_workers=cfg.num_workers))
            t = time.monotonic()
            try:
                graph, targets = next(loader)
            except Exception:  # Ctrl-C also reaches DataLoader workers, which then exit
                if self._stop_signal is not None:
                    return self._stop("signal")
                raise
            terms = self.train_step(graph, targets)
            self.batch_in_epoch += 1
            if self.batch_in_epoch >= self.steps_per_epoch:
                loader = None
            self._step_seconds = max(0.9 * self._step_seconds, time.monotonic() - t)
            window["frames"] += graph.n_systems * self.dist.world_size
            window["n"] += 1
            for k, v in terms.items():
                window["sums"][k] = window["sums"].get(k, 0.0) + v
            if self.step % cfg.log_every_steps == 0 or self.step == self.total_steps:
                self._log_window(window)
                window = self._window = self._new_window()
            if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes:
                self.save_checkpoint()
                last_save = time.monotonic()

    @staticmethod
    def _new_window() -> dict[str, Any]:
        """Sums of the loss terms since the last log line (kept in the training state)."""
        return {"t": time.monotonic(), "frames": 0, "n": 0, "sums": {}}

    def _log_window(self, window: dict[str, Any]) -> None:
        seconds = max(time.monotonic() - window["t"], 1e-9)
        means = {k: v / window["n"] for k, v in window["sums"].items()}
        fps = window["frames"] / seconds
        lr = self.scheduler.get_last_lr()[0]
        left = (self.total_steps - self.step) * seconds / window["n"]
        log.info("step %d/%d epoch %d loss %.4g (E %.3g F %.3g S %.3g) |g| %.3g lr %.3g "
                 "%.1f frames/s, %.0f s left", self.step, self.total_steps, self.epoch,
                 means["loss"], means["loss_energy"], means["loss_forces"],
                 means["loss_stress"], means["grad_norm"], lr, fps, left)
        if self.dist.is_main:
            self.metrics.write({"kind": "train", "step": self.step, "epoch": self.epoch,
                                "time_s": self.elapsed(), "lr": lr, "frames_per_s": fps,
                                **means})

    def _stop(self, status: str) -> str:
        self.save_checkpoint()
        barrier(self.dist)
        log.warning("stopped (%s) at step %d; continue with --resume", status, self.step)
        return status

    def _finish(self) -> None:
        """Save the final state, export the final EMA model and test the best one."""
        self.save_checkpoint()
        metrics: dict[str, Any] = {"val": self.best_metrics} if self.best_metrics else {}
        self.export("final", metrics)
        if not self.best_metrics:  # no validation split: the final model is the best
            self.export("best", metrics)
        if self.cfg.test_at_end and self.test_idx.size:
            self._test_best(metrics)
        barrier(self.dist)
        log.info("finished after %d steps (%.2f h)", self.step, self.elapsed() / 3600)

    def _test_best(self, metrics: dict[str, Any]) -> None:
        """Evaluate ``best.safetensors`` on the test split; record it in its card."""
        from ..checkpoint import load_checkpoint_file, save_model

        barrier(self.dist)
        model = self.eval_model
        card: dict[str, Any] = {}
        if self.dist.is_main:
            best = load_checkpoint_file(self.out / "best.safetensors", device="cpu")
            card = best.card
            model.load_state_dict(best.state_dict())
        if self.dist.enabled:  # every rank evaluates the best weights of rank 0
            for v in model.state_dict().values():
                torch.distributed.broadcast(v, src=0)
        shard = self.test_idx[self.dist.rank::self.dist.world_size]
        test = evaluate(model, self.dataset, shard, batch_size=self.cfg.batch_size,
                        weights=self.weights, reduce=lambda v: all_reduce_sum(v, self.dist))
        test["n_structures"] = int(np.unique(self.dataset.traj[self.test_idx]).size)
        test["n_atoms"] = int(self.dataset.n_atoms[self.test_idx].sum())
        log.info("test (best model): E MAE %.3f meV/atom, F MAE %.2f RMSE %.2f meV/Å on %d "
                 "frames", test["energy_mae_meV_atom"], test["forces_mae_meV_A"],
                 test["forces_rmse_meV_A"], test["n_frames"])
        if self.dist.is_main:
            with atomic_write(self.out / "test_metrics.json", "w") as fh:
                json.dump(test, fh, indent=1)
            card = {k: v for k, v in card.items() if k != "created"}
            card["metrics"] = {**card.get("metrics", metrics), "test": test}
            save_model(model, self.out / "best.safetensors", card)
