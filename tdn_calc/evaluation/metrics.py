"""Error statistics shared by the benchmarks: energies in eV (meV in the output names),
forces in eV/Å."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def error_stats(errors: Sequence[float], tolerance: float) -> dict[str, Any]:
    """Median, mean and max of ``|errors|``, signed mean and the fraction within
    ``tolerance`` (same unit as the errors); non-finite errors are left out (``n`` counts
    the others); ``{"n": 0}`` when none is left."""
    signed = np.asarray([x for x in errors if np.isfinite(x)], dtype=float)
    if signed.size == 0:
        return {"n": 0}
    e = np.abs(signed)
    return {"n": int(e.size), "median_abs": float(np.median(e)), "mean_abs": float(e.mean()),
            "max_abs": float(e.max()), "mean_signed": float(signed.mean()),
            "fraction_within": float((e <= tolerance).mean()), "tolerance": tolerance}


def prediction_metrics(pred_energy: Sequence[float], pred_forces: Sequence[np.ndarray],
                       ref_energy: Sequence[float], ref_forces: Sequence[np.ndarray],
                       n_atoms: Sequence[int]) -> dict[str, float | int]:
    """Energy MAE / RMSE (meV/atom) and force MAE / RMSE (meV/Å, per component) of ``S``
    frames: energies ``(S,)`` eV, forces a list of ``(n_s, 3)`` eV/Å, ``n_atoms`` ``(S,)``."""
    de = (np.asarray(pred_energy, float) - np.asarray(ref_energy, float)) / np.asarray(n_atoms)
    df = np.concatenate([np.asarray(p, float) - np.asarray(r, float)
                         for p, r in zip(pred_forces, ref_forces, strict=True)]).ravel()
    return {"n_frames": int(de.size), "energy_mae_meV_atom": 1000 * float(np.abs(de).mean()),
            "energy_rmse_meV_atom": 1000 * float(np.sqrt((de**2).mean())),
            "forces_mae_meV_A": 1000 * float(np.abs(df).mean()),
            "forces_rmse_meV_A": 1000 * float(np.sqrt((df**2).mean()))}


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` ``(n,)``, ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=r)
    return sums[inverse] / counts[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of the finite pairs of ``x`` and ``y`` ``(n,)`` (NaN with
    fewer than 3 pairs or a constant input)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    rx, ry = ranks(x[keep]), ranks(y[keep])
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])
