"""The machinery of benchmarks/model_speed.py: round-robin timing, power-law fits, the report
and the docs update (no peers, no models: fake contenders with known costs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from _common import Contender, cu_bulk, fit_exponent, run_round_robin
from _speed_report import BEGIN, END, markdown_report, plot_scaling, update_docs
from peers.timing import calculator_call_ms


def test_fit_exponent_recovers_a_power_law():
    atoms = {f"s{n}": n for n in (32, 108, 256, 864, 2048)}
    ms = {s: 0.5 * n**1.3 for s, n in atoms.items()}
    fit = fit_exponent(atoms, ms, min_atoms=100)
    assert fit["exponent"] == pytest.approx(1.3)
    assert fit["prefactor_ms"] == pytest.approx(0.5)


def test_round_robin_interleaves_every_pair_and_respects_supported_systems():
    calls = []

    def timer(name):
        def time_ms(system):
            calls.append((name, system))
            return 2.0 if name == "a" else 6.0, 1.0

        return time_ms

    contenders = [
        Contender("a", "x", 1, "", timer("a")),
        Contender("b", "x", 1, "", timer("b"), systems={"s2"}),
    ]
    out = run_round_robin(contenders, ["s1", "s2"], repeats=4, warmup=1, log=io.StringIO())
    # 3 pairs: one warm-up each, then 4 rounds of all three
    assert len(calls) == 3 + 12
    rounds = [set(calls[3 + 3 * r : 6 + 3 * r]) for r in range(4)]
    assert all(r == {("a", "s1"), ("a", "s2"), ("b", "s2")} for r in rounds)
    assert out["median_ms"] == {"a": {"s1": 2.0, "s2": 2.0}, "b": {"s2": 6.0}}
    assert out["median_cpu_ms"]["b"] == {"s2": 1.0}
    assert len(out["times_ms"]["a"]["s1"]) == 4


def test_calculator_timing_changes_positions_so_results_are_recomputed():
    from ase.calculators.emt import EMT

    atoms = cu_bulk(2)
    calc = EMT()
    before = atoms.positions.copy()
    wall, cpu = calculator_call_ms(calc, [atoms], np.random.default_rng(0))
    assert wall > 0 and cpu >= 0
    assert not np.allclose(atoms.positions, before)
    assert calc.results["forces"].shape == (32, 3)


def fake_results():
    systems = {"molecule (20 atoms)": 20, "Pt(111)+CO slab (38)": 38}
    tdn = {s: 10.0 for s in systems}
    med = {
        "TDN default exact": tdn,
        "MACE default-size": {s: 40.0 for s in systems},
        "SevenNet-0": {s: 15.0 for s in systems},
    }
    atoms = {"Cu 32": 32, "Cu 108": 108, "Cu 256": 256}
    scaling_ms = {
        "TDN default exact": {s: 0.1 * n for s, n in atoms.items()},
        "MACE default-size": {s: 0.4 * n for s, n in atoms.items()},
    }
    fits = {n: fit_exponent(atoms, v) for n, v in scaling_ms.items()}
    return {
        "environment": {
            "commit": "abc",
            "cpu": "cpu",
            "threads": 1,
            "tdn_env": {"torch": "2"},
            "peer_env": {"mace-torch": "0"},
        },
        "command": "python benchmarks/model_speed.py",
        "repeats": 5,
        "wall_s": 60.0,
        "systems": {s: {"atoms": n, "edges": 3 * n} for s, n in systems.items()},
        "contenders": [{"name": n, "group": "g", "params": 1000, "detail": "d"} for n in med],
        "shipped_models": [],
        "table": {"median_ms": med, "median_cpu_ms": med, "load_average": [(1, 1, 1)] * 2},
        "scaling": {
            "repeats": 3,
            "atoms": atoms,
            "median_ms": scaling_ms,
            "median_cpu_ms": scaling_ms,
            "fits": fits,
            "fits_cpu": fits,
        },
    }


def test_report_states_each_target_with_its_ratio():
    report = markdown_report(fake_results(), Path("img/x.png"))
    assert report.startswith(BEGIN) and report.endswith(END)
    assert "| TDN default exact ≥ 3× faster than MACE default-size" in report
    assert "molecule 4.00× (4.00×)" in report and "| met; met |" in report
    assert "Pt(111)+CO slab 1.50× (1.50×) | missed; missed |" in report  # 2x target vs SevenNet-0
    assert "k = 1.00 (1.00) | met; met |" in report  # linear scaling
    assert "| local exponent 108 → 256, wall clock | 1.00 | 1.00 |" in report
    assert "![time per call against atoms, log-log](img/x.png)" in report


def test_update_docs_keeps_other_sections(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Tensor products\n\ntp text\n\n## Model speed\n\nintro\n")
    update_docs(doc, f"{BEGIN}\nfirst\n{END}")
    text = doc.read_text()
    assert "tp text" in text and "intro" in text and "first" in text
    update_docs(doc, f"{BEGIN}\nsecond\n{END}")
    text = doc.read_text()
    assert "first" not in text and "second" in text and "tp text" in text
    assert text.count(BEGIN) == 1
    new = tmp_path / "new.md"
    update_docs(new, f"{BEGIN}\nx\n{END}")
    assert "## Model speed" in new.read_text()


def test_scaling_plot_is_a_png(tmp_path):
    path = tmp_path / "scaling.png"
    plot_scaling(fake_results()["scaling"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
