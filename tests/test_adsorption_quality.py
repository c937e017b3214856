"""benchmarks/adsorption_quality.py: its summaries, the data builder's starts read by the
library's site classifier, and the whole evaluation on a tiny EMT-built data set (EMT as both
"model" and teacher, so the teacher's own minimum must be found again). The classifier and
the reference schemes themselves are tested in tests/test_evaluation.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adsorption_quality import (
    Evaluator,
    adsorbate_systems,
    default_out,
    main,
    markdown,
    reference_label,
    relax_ends,
    summarize,
    trained_systems,
)
from ase.calculators.emt import EMT

from tdn_calc.data.split import make_split
from tdn_calc.datagen.catalysis.systems import (
    CatalysisConfig,
    SystemSpec,
    adsorbate_template,
    build_slab,
)
from tdn_calc.errors import InputError
from tdn_calc.evaluation import canonical_site, classify_site, reference_terms


@pytest.mark.parametrize("site", ["top", "bridge", "fcc", "hcp"])
@pytest.mark.parametrize("ads", ["H", "O", "CO", "OH", "CH3", "H2O"])
def test_data_builder_starts_sit_on_their_labelled_site(site, ads):
    """The builder puts the binding atom last-but-adsorbate; its (jittered) start is on its
    labelled site, so the anchor index and the classifier agree with the builder."""
    spec = SystemSpec(f"Pt111/{ads}/{site}/r3", "slab", "Pt", ads, site, replica=3)
    atoms = build_slab(spec, 3.97, CatalysisConfig())
    anchor = len(atoms) - len(adsorbate_template(ads))
    assert classify_site(atoms, anchor, atoms.numbers == 78)[0] == canonical_site(site)


def test_summary():
    row = dict(
        d_teacher=0.01,
        d_model=0.1,
        tdn_converged=True,
        teacher_converged=True,
        tdn_relax_s=2.0,
        teacher_sp_s=0.5,
        start_site="fcc",
        teacher_site="fcc",
    )
    rows = [{**row, "label": f"s{k}", "tdn_site": "fcc", "same_site": True} for k in range(9)]
    rows.append({**row, "label": "moved", "tdn_site": "hcp", "same_site": False})
    rows.append({"label": "broken", "error": "InputError: x"})
    summary = summarize(rows, 12)
    assert summary["n_evaluated"] == 10 and summary["n_failed"] == 1
    assert summary["site_fraction_same"] == pytest.approx(0.9) and summary["target_site_met"]
    assert summary["target_ads_met"] and summary["site_mismatches"][0]["label"] == "moved"
    assert summary["site_fraction_same_or_teacher_lower"] == pytest.approx(0.9)
    lower = summarize([*rows[:9], {**rows[9], "d_teacher": -0.3}], 10)
    assert lower["site_fraction_same"] == pytest.approx(0.9)  # the strict figure is unchanged
    assert lower["site_fraction_same_or_teacher_lower"] == 1.0
    assert "-0.300 eV" in markdown(lower)
    assert not summarize(rows[-1:], 1)["target_ads_met"]
    assert summary["by_system_novelty"]["unseen"]["n"] == 0  # rows without the flag
    for k, r in enumerate(rows[:10]):
        r["system_in_training"] = k < 4
    rows[5]["d_teacher"] = 0.5
    novelty = summarize(rows, 12)["by_system_novelty"]
    assert (novelty["seen"]["n"], novelty["unseen"]["n"]) == (4, 6)
    assert novelty["seen"]["site_fraction_same"] == 1.0
    assert novelty["unseen"]["site_fraction_same"] == pytest.approx(5 / 6)
    assert novelty["unseen"]["d_teacher"]["max_abs"] == pytest.approx(0.5)
    assert "unseen in training" in markdown(summarize(rows, 12))


def test_trained_systems_strip_replica_tags(tmp_path):
    make_split(["Pt111/O/fcc/r0", "Pt111/O/fcc/r1", "Pt111/CO/top/r0"], (1.0, 0.0, 0.0)).save(
        tmp_path / "s.json"
    )
    assert trained_systems(str(tmp_path / "s.json")) == {"Pt111/O/fcc", "Pt111/CO/top"}
    assert trained_systems(None) is None


def test_default_out_and_reference_label():
    assert default_out("runs/tdn-catalysis/best.safetensors").name == (
        "adsorption_quality_tdn-catalysis-best.json"
    )
    assert default_out("/tmp/x.safetensors").name == "adsorption_quality_tmp-x.json"
    assert default_out("tdn-catalysis").name == "adsorption_quality_tdn-catalysis.json"
    meta = {
        "Pt111/clean/r0": {"label": "Pt111/clean/r0", "converged": True, "final_energy": -1},
        "Pt111/clean/r1": {"label": "Pt111/clean/r1", "converged": True, "final_energy": -2},
        "Pt111/clean/r2": {"label": "Pt111/clean/r2", "converged": False, "final_energy": -9},
    }
    assert reference_label(meta, "Pt111/clean/") == "Pt111/clean/r1"
    with pytest.raises(InputError, match="Cu111"):
        reference_label(meta, "Cu111/clean/")


TINY = dict(
    metals=("Pt",),
    adsorbates=("O", "CO"),
    sites=("fcc", "top"),
    gas_molecules=("O2", "CO"),
    bulk_strains=(0.0,),
    replicas=1,
    slab_size=(2, 2, 3),
    fixed_layers=1,
    bulk_repeat=1,
    max_steps=150,
    n_rattle=1,
)


@pytest.fixture(scope="module")
def emt_data(tmp_path_factory) -> Path:
    from tdn_calc.datagen.catalysis.build import build_catalysis

    out = tmp_path_factory.mktemp("cat")
    summary = build_catalysis(out, teacher="emt", config=CatalysisConfig(**TINY), progress=False)
    assert not summary.failures
    return out


def test_emt_relaxing_its_own_data_finds_the_teachers_minima(emt_data):
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.datagen.catalysis.build import read_metadata

    ds, meta = H5Dataset(emt_data), read_metadata(emt_data)
    labels, used = adsorbate_systems(ds, meta, "all", None, {})
    assert used is None and labels == sorted(
        f"Pt111/{a}/{s}/r0" for a in ("O", "CO") for s in ("fcc", "top")
    )
    first, last = relax_ends(ds, labels[0])
    assert first < last and ds.frame_kind[last + 1] == 1  # the rattled copy follows
    assert ds.energy[last] == pytest.approx(meta[labels[0]]["final_energy"])
    ev = Evaluator(ds, meta, EMT(), EMT(), {"fmax": 0.05, "steps": 150, "optimizer": "BFGS"})
    for label in labels:
        row = ev.system(label)
        assert row["teacher_converged"] and row["tdn_converged"]
        assert abs(row["d_teacher"]) < 1e-3 and abs(row["d_model"]) < 1e-3
        assert row["same_site"] and row["same_minimum"] and row["anchor_lateral_shift"] < 1e-2
        assert row["start_site"] in ("ontop", "fcc") and row["tdn_site"] == row["start_site"]
        assert row["teacher_fmax_at_tdn_min"] < 0.05
        assert row["references"]["slab"] == "Pt111/clean/r0"
        expected = reference_terms(adsorbate_template(row["adsorbate"]))
        assert row["references"]["terms"] == expected
        assert row["references"]["scheme"] == "molecules-O2-N2"
        e_gas = sum(c * ev.references[f"gas/{g}/"].teacher_energy for g, c in expected.items())
        e_slab = ev.references["Pt111/clean/"].teacher_energy
        assert row["e_ads_teacher"] == pytest.approx(row["teacher_energy"] - e_slab - e_gas)
    assert len(ev.references) == 3  # clean slab, O2, CO: each relaxed once
    assert abs(ev.teacher_check(labels[0])["diff"]) < 1e-4  # float32 storage of ~-10 eV


def test_main_writes_a_report(emt_data, tmp_path, tiny_model):
    import torch

    from tdn_calc.checkpoint import save_model

    torch.set_num_threads(1)
    ckpt = save_model(
        tiny_model(elements=(6, 8, 78), dtype=torch.float32), tmp_path / "tiny.safetensors"
    )
    out = tmp_path / "aq.json"
    rc = main(
        [
            "--model",
            str(ckpt),
            "--data",
            str(emt_data),
            "--split",
            "all",
            "--steps",
            "2",
            "--max-systems",
            "2",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    met = report["summary"]["target_ads_met"] and report["summary"]["target_site_met"]
    assert rc == (0 if met else 1)
    assert report["teacher"] == "emt" and report["settings"]["optimizer"] == "BFGS"
    assert abs(report["teacher_check"]["diff"]) < 1e-4
    assert [r["label"] for r in report["rows"]] == ["Pt111/CO/fcc/r0", "Pt111/CO/top/r0"]
    assert all("error" not in r and r["tdn_n_steps"] <= 2 for r in report["rows"])
    assert report["summary"]["n_evaluated"] == 2 and report["summary"]["d_teacher"]["n"] == 2
