"""Deterministic CP (canonical polyadic) fit of the CG tensor by alternating least squares.

``T[i, j, k] ~= sum_r A[i, r] B[j, r] C[k, r]``. Each ALS sweep solves three linear
least-squares problems exactly, so a few thousand sweeps on a ``d^3`` tensor take well
under a second; several seeded restarts guard against swamps. The result depends only
on ``(lmax, rank)`` and the fixed seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .cg import cg_tensor


@dataclass(frozen=True)
class CPFactors:
    """Factors ``A, B, C`` of shape ``[d, rank]`` and the fit's relative Frobenius error."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    relative_error: float


def _khatri_rao(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Column-wise Kronecker product: ``[m, r] x [n, r] -> [m*n, r]``."""
    return (u[:, None, :] * v[None, :, :]).reshape(-1, u.shape[1])


def _reconstruct(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.einsum("ir,jr,kr->ijk", a, b, c)


def als_fit(
    tensor: np.ndarray, rank: int, *, sweeps: int = 3000, seed: int = 0, tol: float = 1e-13
) -> CPFactors:
    """Fit a rank-``rank`` CP decomposition of a 3-way ``tensor`` by ALS.

    Args:
        tensor: ``[d1, d2, d3]`` float64 array.
        rank: number of rank-one terms.
        sweeps: maximum number of ALS sweeps.
        seed: seed of the random initial factors.
        tol: stop when the relative error improves by less than this between checks.
    """
    rng = np.random.default_rng(seed)
    d1, d2, d3 = tensor.shape
    a, b, c = (rng.standard_normal((n, rank)) for n in (d1, d2, d3))
    unfold = [
        tensor.reshape(d1, d2 * d3),  # T_(1)[i, (j,k)]
        tensor.transpose(1, 0, 2).reshape(d2, d1 * d3),  # T_(2)[j, (i,k)]
        tensor.transpose(2, 0, 1).reshape(d3, d1 * d2),  # T_(3)[k, (i,j)]
    ]
    norm = np.linalg.norm(tensor)
    ridge = 1e-12 * np.eye(rank)
    prev = np.inf
    for sweep in range(sweeps):
        a = np.linalg.solve((b.T @ b) * (c.T @ c) + ridge, (unfold[0] @ _khatri_rao(b, c)).T).T
        b = np.linalg.solve((a.T @ a) * (c.T @ c) + ridge, (unfold[1] @ _khatri_rao(a, c)).T).T
        c = np.linalg.solve((a.T @ a) * (b.T @ b) + ridge, (unfold[2] @ _khatri_rao(a, b)).T).T
        if sweep % 50 == 49:
            err = np.linalg.norm(_reconstruct(a, b, c) - tensor) / norm
            if err < 1e-14 or prev - err < tol * max(err, 1e-30):
                break
            prev = err
    # balance the column norms of the three factors
    norms = [np.maximum(np.linalg.norm(f, axis=0), 1e-300) for f in (a, b, c)]
    scale = np.cbrt(norms[0] * norms[1] * norms[2])
    a, b, c = (f / n * scale for f, n in zip((a, b, c), norms, strict=True))
    err = float(np.linalg.norm(_reconstruct(a, b, c) - tensor) / norm)
    return CPFactors(a, b, c, err)


@lru_cache(maxsize=32)
def fit_cg_cp(lmax: int, rank: int, restarts: int = 4) -> CPFactors:
    """Best of ``restarts`` seeded ALS fits of the CG tensor of degree ``lmax``."""
    tensor = cg_tensor(lmax).numpy()
    best = None
    for seed in range(restarts):
        fit = als_fit(tensor, rank, seed=seed)
        if best is None or fit.relative_error < best.relative_error:
            best = fit
        if best.relative_error < 1e-10:
            break
    return best
