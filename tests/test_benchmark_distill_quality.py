"""benchmarks/distill_quality.py: the held-out summary (refused placements count as not
agreeing), the committed spec (outside tdn-catalysis' coverage), and one tiny run end to end
with the EMT teacher (a 2-round distillation of a tiny scratch model, judged against
tdn-organic, which refuses every placement), resumed without relabelling, and its
docs block."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from distill_quality import DEFAULT_SPEC, main, summarize

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_MODEL = {
    "lmax": 1,
    "channels": 8,
    "num_layers": 1,
    "num_heads": 2,
    "cutoff": 4.0,
    "num_radial": 4,
    "radial_hidden": 8,
}
SPEC = {
    "name": "dq",
    "teacher": "emt",
    "surfaces": [
        {
            "element": "Cu",
            "facet": "100",
            "size": "2x2",
            "layers": 2,
            "fixed_layers": 1,
            "lattice_constant": 3.6,
        }
    ],
    "adsorbates": ["NH2", "H"],
    "placement": {"sites": True, "random": 0, "seed": 0},
    "relax": {"fmax": 0.05, "steps": 4, "batch_size": 8},
    "distill": {
        "init_from": "scratch",
        "model": TINY_MODEL,
        "seed": {"placements": 2, "rattle": 1, "strain": 1, "steps": 10},
        "loop": {"rounds": 2, "frames_per_round": 2, "train_steps": 4, "teacher_steps": 1},
        "train": {"batch_size": 4, "lr": 0.005},
        "holdout": 0.5,
        "agreement": {"energy": 1e-9, "fmax": 1e-9},
    },
}


def _row(
    refused: bool = False,
    de: float = 0.01,
    fmax: float = 0.05,
    agrees: bool = True,
    landed: bool = True,
) -> dict:
    if refused:
        return {"refused": True, "agrees": False, "same_minimum": False, "at_or_below": False}
    return {
        "refused": False,
        "converged": True,
        "abs_de_eV": de,
        "teacher_fmax_eV_A": fmax,
        "agrees": agrees,
        "same_minimum": landed,
        "at_or_below": landed,
        "abs_de_at_teacher_min_eV": de,
        "force_mae_at_teacher_min_eV_A": 0.01,
    }


def test_summary_counts_refused_placements_as_disagreeing():
    good = summarize([_row(), _row(de=0.03)], energy=0.05, fmax=0.1)
    assert good["agreement"]["met"] and good["within_target"] == 1.0 and good["refused"] == 0
    assert good["agreement"]["median_abs_de_eV"] == pytest.approx(0.02)
    mixed = summarize([_row(), _row(refused=True), _row(refused=True)], energy=0.05, fmax=0.1)
    assert mixed["refused"] == 2 and not mixed["agreement"]["met"]
    assert mixed["agreement"]["median_abs_de_eV"] is None  # infinite: most were refused
    assert mixed["agreement"]["max_teacher_fmax_eV_A"] is None
    assert mixed["within_target"] == pytest.approx(1 / 3)
    assert mixed["landed"] == pytest.approx(1 / 3)


def test_summary_agreement_is_the_loops_own():
    from types import SimpleNamespace

    from tdn_calc.distill.label import agreement

    rows = [_row(de=d, fmax=f) for d, f in ((0.01, 0.2), (0.2, 0.05), (0.03, 0.04))]
    checked = [
        SimpleNamespace(abs_de=r["abs_de_eV"], teacher_fmax=r["teacher_fmax_eV_A"]) for r in rows
    ]
    target = SimpleNamespace(agreement=SimpleNamespace(energy=0.05, fmax=0.1))
    assert summarize(rows, 0.05, 0.1)["agreement"] == agreement(checked, target)


def test_committed_spec_is_outside_the_shipped_models_coverage():
    from tdn_calc.distill import load_distill_spec

    spec = load_distill_spec(DEFAULT_SPEC, teacher="emt")  # emt: no SevenNet-0 needed here
    assert load_distill_spec(DEFAULT_SPEC).teacher == "sevenn-0"
    assert spec.init_from == "tdn-catalysis"
    assert all(s.facet != "111" for s in spec.campaign.surfaces)
    seen = {"H", "O", "C", "N", "OH", "CO", "CH3", "H2O"}
    assert not {a.name for a in spec.campaign.adsorbates} & seen


@pytest.mark.timeout(60)
def test_tiny_run_end_to_end_resumes_and_renders(tmp_path, capsys):
    import render_docs

    from tdn_calc.distill import DistillState

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    run, out = tmp_path / "run", tmp_path / "out.json"
    args = [
        "--spec",
        str(spec),
        "--run-dir",
        str(run),
        "--out",
        str(out),
        "--shipped",
        "tdn-organic",
        "--repeats",
        "1",
        "--sequence",
        "2",
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    state = DistillState.load(run / "state.json")
    assert report["cost"]["teacher_calls"] == state.teacher_calls > 0
    assert report["cost"]["rounds"] == 2 and report["cost"]["stop_reason"] == "rounds"
    assert report["holdout"]["placements"] == 3  # one of two pairs x 3 sites of Cu(100)
    distilled, shipped = report["summary"]["distilled"], report["summary"]["shipped"]
    assert distilled["refused"] == 0 and distilled["agreement"]["n"] == 3
    # the loop's own check of its last model, repeated by the benchmark
    assert distilled["agreement"]["median_abs_de_eV"] == pytest.approx(
        state.history[-1]["agreement"]["median_abs_de_eV"], rel=1e-4
    )
    assert shipped["refused"] == 3 and shipped["within_target"] == 0.0  # no Cu in tdn-organic
    row = report["rows"]["distilled"][0]
    assert math.isfinite(row["force_mae_at_teacher_min_eV_A"]) and row["final_site"]
    assert set(report["speed"]["median_cpu_ms"]) == {"distilled", "teacher"}
    assert (run / "benchmark" / "teacher_minima.json").is_file()

    capsys.readouterr()
    assert main(args) == 0  # resumed: nothing distilled or relaxed by the teacher again
    err = capsys.readouterr().err
    assert "already done" in err and "teacher minimum of" not in err
    again = json.loads(out.read_text())
    assert again["cost"] == report["cost"] and again["summary"] == report["summary"]

    lines = "\n".join(render_docs.distill_quality_lines(again))
    assert "| distilled `dq-distilled`" in lines and "3 (3 refused)" in lines


def test_docs_block_waits_for_the_json(monkeypatch):
    import render_docs

    monkeypatch.setattr(
        render_docs, "DISTILL_QUALITY", render_docs.RESULTS / "no_such_distill_quality.json"
    )
    block = render_docs.render_block("distill-quality")
    assert "Not measured yet" in block and "Generated by" not in block
