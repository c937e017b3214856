"""Benchmark of the tensor-product backends against e3nn (issue 3, "Benchmark").

Times ``forward(x [E, d, C], y [E, d], w [E, C]) -> [E, d, C]`` of the ``e3nn``, ``exact``
and ``cp`` backends (rank 7 L^2, both contraction orders), forward alone (no autograd
graph) and forward + backward with respect to ``x`` and ``w`` (``--grad-y``: also ``y``,
as for forces; modules in eval mode), for L = 1..6 and C = 64, 128. Prints markdown
tables: milliseconds per call (median over interleaved repeats after one warm-up),
speed-up over e3nn, achieved GFLOP/s and its fraction of this CPU's float32 matmul rate
measured in the same blocks, then the CP fit error and the equivariance error per
(L, rank).

Both wall-clock and process CPU time are recorded. On a shared machine the wall clock
includes time the process spent waiting for a core; the CPU time (one thread) does not,
so CPU-time ratios are the reproducible ones. GFLOP/s and % of peak use CPU time for the
backend and for the matmul alike.

Usage: ``python benchmarks/tensor_product.py [--quick] [--edges 20000] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import e3nn
import torch
from e3nn import o3

from tdn_calc.nn import tensor_product
from tdn_calc.nn.cp_fit import CPFactors, fit_cg_cp
from tdn_calc.nn.irreps import num_components
from tdn_calc.nn.tensor_product import (
    CPTensorProduct,
    SharedPathTensorProduct,
    make_tensor_product,
)

try:  # numpy's BLAS (used by the ALS fit) ignores torch.set_num_threads
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None

BACKENDS = ("e3nn", "exact", "cp-matrix", "cp-factor")
PASSES = ("fwd", "fwd+bwd")
MEASURED_FILES = ("tdn_calc/nn", "benchmarks/tensor_product.py")  # dirty => "+ uncommitted"
MEMORY_CAP = 2**25  # elements of one [E, d, C] tensor (128 MiB in float32)


def cp_rank(lmax: int) -> int:
    """The paper's quadratic rank ``7 L^2``."""
    return 7 * lmax**2


def _random_factors(lmax: int, rank: int) -> CPFactors:
    gen = torch.Generator().manual_seed(lmax)
    a, b, c = (
        torch.randn(num_components(lmax), rank, generator=gen).double().numpy() for _ in "abc"
    )
    return CPFactors(a, b, c, float("nan"))


def build(backend: str, lmax: int, channels: int, fitted: bool = True) -> SharedPathTensorProduct:
    """A float32 tensor product of ``backend`` (``cp-matrix``/``cp-factor`` pick the order)
    in eval mode, as in inference with forces (in train mode ``exact`` and ``cp`` use plain
    autograd operations, which suit the double backward of a force loss).

    With ``fitted=False`` a CP product gets random factors of the right shape instead of the
    ALS fit (tens of seconds at L >= 5): same arithmetic, same time, wrong numbers.
    """
    if backend.startswith("cp-"):
        rank, order = cp_rank(lmax), backend[3:]
        if fitted:
            return CPTensorProduct(lmax, channels, rank, order=order).float().eval()
        with mock.patch.object(tensor_product, "fit_cg_cp", lambda lm, r: _random_factors(lm, r)):
            return CPTensorProduct(lmax, channels, rank, order=order).float().eval()
    return make_tensor_product(backend, lmax, channels).float().eval()


def flops(tp: SharedPathTensorProduct, backend: str, which: str, grad_y: bool = False) -> int:
    """Floating-point operations per edge of one call (``which`` in :data:`PASSES`).

    The backward (w.r.t. ``x`` and ``w``) of ``exact`` and ``cp-matrix`` is one product
    ``M g`` plus element-wise terms; ``cp-factor`` runs its two factor products backwards;
    e3nn computes each path twice more (for ``x`` and for the weights). ``grad_y`` adds the
    gradient w.r.t. ``y``: ``grad_M = (x w) g^T`` and the transposed build of ``M``
    (exact, cp-matrix), a reduction over channels (cp-factor), one more pass (e3nn).
    """
    forward = tp.flops_per_edge()
    if which == "fwd":
        return forward
    d, c = tp.dim, tp.channels
    r = getattr(tp, "rank", 0)
    if backend in ("exact", "cp-matrix"):
        build_m = 2 * d**3 if backend == "exact" else 2 * r * d * d + 2 * d * r
        extra = 2 * d * d * c + d * c + build_m if grad_y else 0
        return forward + 2 * d * d * c + 3 * d * c + extra
    if backend == "cp-factor":
        extra = 2 * r * c + 2 * d * r if grad_y else 0
        return forward + 4 * d * r * c + r * c + 3 * d * c + extra
    return (4 if grad_y else 3) * forward


def edges_for(lmax: int, channels: int, requested: int, budget_gflop: float) -> int:
    """Edges for one (L, C): ``requested`` unless one e3nn forward+backward would exceed
    ``budget_gflop`` or one ``[E, d, C]`` tensor would exceed :data:`MEMORY_CAP` elements."""
    e3nn_flops = 3 * build("e3nn", lmax, channels).flops_per_edge()
    d = num_components(lmax)
    n = min(requested, int(budget_gflop * 1e9 / e3nn_flops), MEMORY_CAP // (d * channels))
    step = 1000 if n >= 2000 else 100
    return max(step, n // step * step)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def make_calls(tp, lmax: int, channels: int, edges: int, seed: int, grad_y: bool = False):
    """The forward-only and forward+backward closures on fixed random inputs."""
    gen = torch.Generator().manual_seed(seed)
    d = num_components(lmax)
    x = torch.randn(edges, d, channels, generator=gen)
    vectors = torch.randn(edges, 3, generator=gen)
    y = o3.spherical_harmonics(list(range(lmax + 1)), vectors, True, "component")
    w = torch.randn(edges, channels, generator=gen)
    g = torch.randn(edges, d, channels, generator=gen)
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    yg = y.clone().requires_grad_(grad_y)
    wrt = (xg, yg, wg) if grad_y else (xg, wg)

    def forward() -> None:
        with torch.no_grad():
            tp(x, y, w)

    def forward_backward() -> None:
        torch.autograd.grad(tp(xg, yg, wg), wrt, g)

    return {"fwd": forward, "fwd+bwd": forward_backward}


def measure_block(lmax, channels, edges, repeats, backends, gemm_n, fitted, grad_y):
    """Interleaved timings of every (backend, pass) and of an sgemm for one (L, C).

    Returns ``{(backend, pass): (wall_ms, cpu_ms)}`` medians, the sgemm GFLOP/s (CPU time),
    the 1-minute load average at the end of the block and the modules.
    """
    tps = {name: build(name, lmax, channels, fitted) for name in backends}
    calls = {
        (name, which): fn
        for name, tp in tps.items()
        for which, fn in make_calls(tp, lmax, channels, edges, lmax, grad_y).items()
    }
    a, b = torch.randn(gemm_n, gemm_n), torch.randn(gemm_n, gemm_n)
    calls[("sgemm", "")] = lambda: a @ b
    for fn in calls.values():  # warm-up
        fn()
    keys = list(calls)
    samples = {key: [] for key in keys}
    for rep in range(repeats):
        shift = rep % len(keys)
        for key in keys[shift:] + keys[:shift]:  # rotate the order so no backend is always first
            samples[key].append(timed(calls[key]))
    med = {
        key: tuple(1e3 * statistics.median(s[i] for s in vals) for i in (0, 1))
        for key, vals in samples.items()
    }
    gemm_cpu_s = med.pop(("sgemm", ""))[1] / 1e3
    return med, 2 * gemm_n**3 / gemm_cpu_s / 1e9, os.getloadavg()[0], tps


def equivariance_error(tp: SharedPathTensorProduct, lmax: int, seed: int = 0) -> float:
    """Relative error ``|D TP(x, Y(r)) - TP(D x, Y(R r))| / |D TP(x, Y(r))|`` in float64 for a
    random improper rotation ``R`` (O(3)) and its Wigner matrix ``D``."""
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    x = torch.randn(64, num_components(lmax), 8, generator=gen, dtype=dt)
    vectors = torch.randn(64, 3, generator=gen, dtype=dt)
    w = torch.randn(64, 8, generator=gen, dtype=dt)
    angles = torch.rand(3, generator=gen, dtype=dt)
    rot = -o3.angles_to_matrix(
        2 * torch.pi * angles[0], torch.acos(1 - 2 * angles[1]), 2 * torch.pi * angles[2]
    )
    irreps = o3.Irreps.spherical_harmonics(lmax)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dt)  # e3nn builds D in the default dtype
    try:
        d_matrix = irreps.D_from_matrix(rot)
    finally:
        torch.set_default_dtype(old)
    y = o3.spherical_harmonics(irreps, vectors, True, "component")
    y_rot = o3.spherical_harmonics(irreps, vectors @ rot.T, True, "component")
    tp = tp.double()
    rotated_out = torch.einsum("kl,nlc->nkc", d_matrix, tp(x, y, w))
    out_of_rotated = tp(torch.einsum("kl,nlc->nkc", d_matrix, x), y_rot, w)
    return float((rotated_out - out_of_rotated).norm() / rotated_out.norm())


def environment(threads: int) -> list[str]:
    """Lines describing the machine, software and commit measured."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *MEASURED_FILES],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        commit += " (+ uncommitted changes)" if dirty else ""
    except OSError:
        commit = "unknown"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return [
        f"- commit: {commit}",
        f"- CPU: {cpu}, {os.cpu_count()} logical CPUs; torch threads: {threads}",
        f"- torch {torch.__version__}, e3nn {e3nn.__version__}",
        f"- load average now (1/5/15 min): {load}",
        f"- THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '(unset)')}",
    ]


def speed_tables(results, backends, grad_y: bool) -> list[str]:
    """Detailed markdown table and a fwd+bwd speed-up summary."""
    lines = [
        "| L | C | edges | pass | backend | ms (wall) | ms (CPU) | × e3nn (wall) | × e3nn (CPU) "
        "| GFLOP/s | % of sgemm | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (lmax, channels), block in results.items():
        med, peak, load, tps, edges = block
        for which in PASSES:
            base = med.get(("e3nn", which))
            for name in backends:
                wall, cpu = med[(name, which)]
                gflops = flops(tps[name], name, which, grad_y) * edges / (cpu / 1e3) / 1e9
                ratio_w = f"{base[0] / wall:.1f}" if base else "-"
                ratio_c = f"{base[1] / cpu:.1f}" if base else "-"
                lines.append(
                    f"| {lmax} | {channels} | {edges} | {which} | {name} | {wall:.1f} | {cpu:.1f}"
                    f" | {ratio_w} | {ratio_c} | {gflops:.1f} | {100 * gflops / peak:.0f}%"
                    f" | {load:.1f} |"
                )
    lines += ["", "Forward+backward speed-up over e3nn (CPU time; wall clock in brackets):", ""]
    others = [b for b in backends if b != "e3nn"]
    lines.append("| L | C | edges | " + " | ".join(others) + " | cp auto order | sgemm GFLOP/s |")
    lines.append("|---" * (len(others) + 5) + "|")
    for (lmax, channels), (med, peak, _, tps, edges) in results.items():
        base = med.get(("e3nn", "fwd+bwd"))
        cells = []
        for name in others:
            wall, cpu = med[(name, "fwd+bwd")]
            cells.append(f"{base[1] / cpu:.1f}× ({base[0] / wall:.1f}×)" if base else "-")
        cp = next((tp for tp in tps.values() if isinstance(tp, CPTensorProduct)), None)
        auto = "-"
        if cp is not None:  # the order CPTensorProduct(order="auto") would pick
            auto = "matrix" if cp._flops("matrix") <= cp._flops("factor") else "factor"
        lines.append(
            f"| {lmax} | {channels} | {edges} | " + " | ".join(cells) + f" | {auto} | {peak:.0f} |"
        )
    return lines


def accuracy_table(lmaxes) -> list[str]:
    """CP fit error, fit time and equivariance errors (float64) per (L, rank)."""
    lines = [
        "| L | d | rank | CP fit rel. error | fit time (s, CPU) | cp equivariance error "
        "| exact equivariance error |",
        "|---|---|---|---|---|---|---|",
    ]
    for lmax in lmaxes:
        start = time.process_time()
        fit_cg_cp(lmax, cp_rank(lmax))  # the cached fit the model uses
        fit_time = time.process_time() - start
        cp = CPTensorProduct(lmax, 8, cp_rank(lmax))
        exact = make_tensor_product("exact", lmax, 8)
        lines.append(
            f"| {lmax} | {num_components(lmax)} | {cp.rank} | {cp.fit_error:.1e} | {fit_time:.1f} "
            f"| {equivariance_error(cp, lmax):.1e} | {equivariance_error(exact, lmax):.1e} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=20000, help="edges per call (upper bound)")
    parser.add_argument("--lmax", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--budget-gflop",
        type=float,
        default=3.0,
        help="fewer edges where one e3nn forward+backward would exceed this many GFLOP",
    )
    parser.add_argument("--gemm-n", type=int, default=1024, help="size of the reference sgemm")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--fit-lmax",
        type=int,
        default=4,
        help="fit CP factors (4 ALS restarts, as the model does) only up to this L; above it "
        "the accuracy table skips the L and the timings use random factors (default 4: the "
        "fits take ~45 s at L=5 and ~110 s at L=6 of CPU time)",
    )
    parser.add_argument(
        "--grad-y", action="store_true", help="backward also w.r.t. y (as for forces)"
    )
    parser.add_argument("--skip-timing", action="store_true", help="only the accuracy table")
    parser.add_argument(
        "--quick", action="store_true", help="L = 1..3, C = 64, 4000 edges, 3 repeats"
    )
    args = parser.parse_args()
    if args.quick:  # new defaults; options given explicitly still win
        parser.set_defaults(lmax=[1, 2, 3], channels=[64], edges=4000, repeats=3)
        args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if threadpool_limits is not None:
        threadpool_limits(args.threads)
    start = time.perf_counter()
    env = environment(args.threads)
    print("\n".join(env), flush=True)

    print("\nCP fit (rank 7 L^2) and equivariance errors (float64, random O(3) element):\n")
    accuracy = accuracy_table([lmax for lmax in args.lmax if lmax <= args.fit_lmax])
    if args.skip_timing:
        return

    results = {}
    for lmax in args.lmax:
        for channels in args.channels:
            edges = edges_for(lmax, channels, args.edges, args.budget_gflop)
            fitted = lmax <= args.fit_lmax
            med, peak, load, tps = measure_block(
                lmax, channels, edges, args.repeats, args.backends, args.gemm_n, fitted, args.grad_y
            )
            results[(lmax, channels)] = (med, peak, load, tps, edges)
            print(f"done L={lmax} C={channels} edges={edges} load={load:.1f}", flush=True)

    print("\n" + "\n".join(env))
    print("\n" + "\n".join(accuracy))
    wrt = "x, y and w" if args.grad_y else "x and w"
    print(f"\nfwd+bwd: backward w.r.t. {wrt}; GFLOP/s and % of sgemm from CPU time.")
    print("\n" + "\n".join(speed_tables(results, args.backends, args.grad_y)))
    unfitted = [lmax for lmax in args.lmax if lmax > args.fit_lmax]
    if unfitted and any(b.startswith("cp") for b in args.backends):
        print(f"\ncp timings at L = {unfitted} use random factors of the same shape (--fit-lmax).")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nload average at end: {load}; total {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
