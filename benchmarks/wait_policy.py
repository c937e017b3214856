"""OpenMP wait policy on a busy machine: ``tdn-relax`` with idle OpenMP threads spinning
(``OMP_WAIT_POLICY=ACTIVE``, what torch does unless told otherwise) against sleeping
(``PASSIVE``, the default ``import tdn_calc`` sets), side by side in one run.

The load is ``--busy`` processes spinning in pure Python, as a data builder, a DFT code or
another relaxation would keep the cores busy in a real workflow. Each setting relaxes the
example aspirin with the default model, alternating ACTIVE / PASSIVE ``--repeats`` times;
the time is the relaxation's own (the ``time/s`` column of tdn-relax), so start-up costs
are left out. Usage::

    python benchmarks/wait_policy.py [--busy 2] [--repeats 3] [--threads 2]

Writes ``benchmarks/results/wait_policy.json`` and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_model, git_commit, load_average

ROOT = Path(__file__).resolve().parents[1]
STRUCTURE = ROOT / "examples" / "molecules" / "aspirin.xyz"


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def relax_seconds(policy: str, threads: int, workdir: Path) -> float:
    """Wall seconds of one ``tdn-relax`` relaxation of the example (its own timing)."""
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(threads)}
    report = workdir / f"report-{policy}.json"
    cmd = [sys.executable, "-m", "tdn_calc.cli.relax", str(STRUCTURE), "-q",
           "-o", str(workdir / f"out-{policy}.extxyz"), "--report", str(report)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    data = json.loads(report.read_text())
    return float(data["structures"][0]["time"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", type=int, default=2, help="spinning background processes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the relaxation (OMP_NUM_THREADS)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "wait_policy.json"))
    args = p.parse_args(argv)

    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for proc in spinners:
        proc.start()
    times: dict[str, list[float]] = {"ACTIVE": [], "PASSIVE": []}
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for policy in times:
                    times[policy].append(relax_seconds(policy, args.threads, Path(tmp)))
                    print(f"{policy}: {times[policy][-1]:.2f} s", flush=True)
    finally:
        stop.set()
        for proc in spinners:
            proc.join(timeout=5)
    median = {k: statistics.median(v) for k, v in times.items()}
    report = {"benchmark": "wait_policy", "structure": STRUCTURE.name, "busy": args.busy,
              "threads": args.threads, "cpu": cpu_model(), "cpus": os.cpu_count(),
              "load_average": load_average(), "commit": git_commit(str(ROOT)),
              "seconds": times, "median_s": median,
              "ratio_active_over_passive": median["ACTIVE"] / median["PASSIVE"],
              "wall_s": time.perf_counter() - t0}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"median relaxation: ACTIVE {median['ACTIVE']:.2f} s, PASSIVE {median['PASSIVE']:.2f} s"
          f" -> {report['ratio_active_over_passive']:.1f}x; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
