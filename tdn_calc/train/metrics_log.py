"""The metrics CSV of a training run: one row per log interval (``kind=train``) and per
validation (``kind=val``)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from ..fileio import atomic_write

COLUMNS = ("kind", "step", "epoch", "time_s", "lr", "loss", "loss_energy", "loss_forces",
           "loss_stress", "grad_norm", "frames_per_s", "val_loss", "val_energy_mae_meV_atom",
           "val_energy_rmse_meV_atom", "val_forces_mae_meV_A", "val_forces_rmse_meV_A")


class MetricsCSV:
    """Append rows to ``path`` (created with a header); unknown keys are an error."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop rows past ``step`` (left by a run that died after its last checkpoint)."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
        with atomic_write(self.path, "w") as fh:
            writer = csv.DictWriter(fh, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})


def read_metrics(path: str | os.PathLike) -> list[dict[str, str]]:
    """All rows of a metrics CSV as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
