"""PNG plots (matplotlib, Agg backend): relaxation histories for ``tdn-relax --plot`` and the
atomic figure writer shared with :mod:`tdn_calc.neb`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .fileio import atomic_write


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG atomically; returns the path."""
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    return path


def plot_relaxations(
    histories: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    fmax: float,
    *,
    polish_fmax: float | None = None,
    max_legend: int = 12,
) -> Path:
    """Energy and max force against optimizer step, one line per structure.

    Args:
        histories: ``(label, energies [eV] per step, fmax [eV/Å] per step)`` per structure.
        path: PNG to write (atomically).
        fmax: convergence threshold drawn as a dashed line, eV/Å.
        polish_fmax: threshold of a float64 polish (dotted line), eV/Å, if any.
        max_legend: label at most this many structures in the legend.

    The energy panel shows ``E - E(step 0)`` (eV) so that structures of different size share
    one axis; the force panel is logarithmic.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_f) = plt.subplots(2, 1, figsize=(6.5, 6.0), sharex=True)
    for k, (label, energies, fmaxs) in enumerate(histories):
        if not energies:
            continue
        steps = range(len(energies))
        name = label if k < max_legend else None
        ax_e.plot(steps, [e - energies[0] for e in energies], lw=1.2, label=name)
        ax_f.semilogy(range(len(fmaxs)), fmaxs, lw=1.2)
    ax_f.axhline(fmax, color="k", ls="--", lw=1.0, label=f"fmax = {fmax:g} eV/Å")
    if polish_fmax is not None:
        ax_f.axhline(polish_fmax, color="k", ls=":", lw=1.0,
                     label=f"polish fmax = {polish_fmax:g} eV/Å (float64)")  # fmt: skip
    ax_e.set_ylabel("E - E(start) / eV")
    ax_f.set_ylabel("max force / eV/Å")
    ax_f.set_xlabel("optimizer step")
    if histories:
        ax_e.legend(fontsize=7, loc="upper right", ncol=2 if len(histories) > 6 else 1)
    ax_f.legend(fontsize=8, loc="upper right")
    n = len(histories)
    ax_e.set_title(f"relaxation of {n} structure{'s' if n != 1 else ''}")
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
