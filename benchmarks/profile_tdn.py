"""Where a TDN energy+forces call spends its time: torch.profiler, ops split by level.

Every aten op is classified by the leading dimension of its inputs: ``E`` (edges) -> edge
level, ``N`` (atoms) -> node level, else "other" (radial MLP weights, scalars, ...). Self
CPU time is summed per class and per op, forward and backward (autograd) together. Usage::

    python benchmarks/profile_tdn.py [--system bulk|molecule|slab] [--size default|fast]
        [--backend exact|cp|e3nn] [--calls 5] [--threads 1]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch
from _common import ELEMENTS, benchmark_systems
from torch.profiler import ProfilerActivity, profile

from tdn_calc.graph import atoms_to_graph
from tdn_calc.nn.config import TDNConfig
from tdn_calc.nn.model import TDNModel

SIZES = {"default": {}, "fast": {"lmax": 1, "num_layers": 2}}


def level(shapes: list, n_atoms: int, n_edges: int) -> str:
    leading = {s[0] for s in shapes if isinstance(s, list | tuple) and len(s) > 0}
    if n_edges in leading:
        return "edge"
    if n_atoms in leading:
        return "node"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=("bulk", "molecule", "slab"), default="bulk")
    parser.add_argument("--size", choices=tuple(SIZES), default="default")
    parser.add_argument("--backend", choices=("exact", "cp", "e3nn"), default="exact")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pick = {"molecule": 0, "slab": 1, "bulk": 2}[args.system]
    atoms = list(benchmark_systems().values())[pick][0]
    config = TDNConfig(elements=list(ELEMENTS), tp_backend=args.backend, **SIZES[args.size])
    model = TDNModel(config).float().eval()
    graph = atoms_to_graph(atoms, config.cutoff, dtype=torch.float32)
    n_atoms, n_edges = graph.n_atoms, graph.n_edges
    periodic = bool(np.all(atoms.pbc))
    model(graph, compute_forces=True, compute_stress=periodic)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.calls):
            model(graph, compute_forces=True, compute_stress=periodic)
    by_level: dict[str, float] = defaultdict(float)
    by_op: dict[tuple[str, str], float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        lvl = level(event.input_shapes, n_atoms, n_edges)
        by_level[lvl] += event.self_cpu_time_total
        by_op[(event.key, lvl)] += event.self_cpu_time_total
    total = sum(by_level.values())
    print(
        f"{args.system}: {n_atoms} atoms, {n_edges} edges; TDN {args.size} {args.backend} "
        f"(L={config.lmax}, {config.channels} ch, {config.num_layers} layers); "
        f"{1e-3 * total / args.calls:.0f} ms self CPU per call, {args.threads} thread(s)"
    )
    for lvl, t in sorted(by_level.items(), key=lambda kv: -kv[1]):
        print(f"  {lvl:<6} {100 * t / total:5.1f}%")
    print(f"top {args.top} ops by self CPU time (forward + backward):")
    for (name, lvl), t in sorted(by_op.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {100 * t / total:5.1f}%  {lvl:<6} {name}")


if __name__ == "__main__":
    main()
