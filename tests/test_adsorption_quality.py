"""benchmarks/adsorption_quality.py: its summaries, the stratified sample, the reference
matching on coverage2-like records, the generic site rule and bonding state on slabs built by
the coverage2 surface library, the data builder's starts read by the library's site
classifier, and the whole evaluation on a tiny EMT-built data set (EMT as both "model" and
teacher, so the teacher's own minimum must be found again). The classifier and the reference
schemes themselves are tested in tests/test_evaluation.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from adsorption_quality import (
    Evaluator,
    adsorbate_systems,
    clean_slab_label,
    contact_site,
    default_out,
    gas_label,
    main,
    markdown,
    relax_ends,
    same_place,
    state,
    stratified_sample,
    summarize,
    surface_translations,
    trained_systems,
)
from ase import Atoms
from ase.calculators.emt import EMT

from tdn_calc.data.split import make_split
from tdn_calc.datagen.catalysis.surfaces import build_surface
from tdn_calc.datagen.catalysis.systems import (
    CatalysisConfig,
    SystemSpec,
    adsorbate_template,
    build_slab,
)
from tdn_calc.evaluation import canonical_site, classify_site, metal_layers, reference_terms


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


def test_summary_per_facet_metal_family_with_refusals():
    base = dict(
        tdn_converged=True,
        teacher_converged=True,
        tdn_relax_s=1.0,
        teacher_sp_s=0.3,
        seconds=2.0,
        d_model=None,
        same_state=True,
        start_site="random",
        teacher_site="hollow",
        tdn_site="hollow",
        same_site=True,
        family="O",
    )
    rows = [
        {**base, "label": "Pt100/O/a", "metal": "Pt", "facet": "100", "d_teacher": 0.01,
         "landed": True},
        {**base, "label": "Pt211/O/b", "metal": "Pt", "facet": "211", "d_teacher": -0.2,
         "landed": False, "teacher_converged": False},
        {**base, "label": "Cu100/CO/c", "metal": "Cu", "facet": "100", "d_teacher": 0.3,
         "landed": False, "same_state": False, "same_site": False, "family": "CO"},
        {"label": "Ru0001/O/d", "metal": "Ru", "facet": "0001", "family": "O",
         "refused": True, "missing_elements": ["Ru"], "landed": False},
    ]  # fmt: skip
    s = summarize(rows, 4)
    assert (s["n_evaluated"], s["n_refused"], s["n_landed"]) == (3, 1, 1)
    assert s["landed_fraction"] == pytest.approx(1 / 4)
    assert s["landed_fraction_evaluated"] == pytest.approx(1 / 3)
    assert s["refused_by_metal"] == {"Ru": 1} and s["refused_elements"] == ["Ru"]
    assert s["by_metal"]["Ru"]["n_refused"] == 1 and s["by_metal"]["Ru"]["landed_fraction"] == 0
    assert s["by_facet"]["100"]["landed_fraction"] == 0.5
    assert s["by_facet"]["100"]["median_abs_d_teacher"] == pytest.approx(0.155)
    assert s["by_family"]["O"]["n"] == 3 and s["by_family"]["CO"]["same_state_fraction"] == 0
    assert s["by_teacher_convergence"]["unconverged"]["misses"] == ["Pt211/O/b"]
    assert [m["why"] for m in s["misses"]] == [["energy"], ["state", "site", "energy"]]
    assert s["d_model"] == {"n": 0} and s["n_without_references"] == 3
    text = markdown(s)
    assert "| 0001 | 1 | 0 % | – |" in text and "Pt211/O/b: started random" in text
    assert "(not converged)" in text and "refused 1 {'Ru': 1}" in text


def test_trained_systems_strip_replica_tags(tmp_path):
    make_split(["Pt111/O/fcc/r0", "Pt111/O/fcc/r1", "Pt111/CO/top/r0"], (1.0, 0.0, 0.0)).save(
        tmp_path / "s.json"
    )
    assert trained_systems(str(tmp_path / "s.json")) == {"Pt111/O/fcc", "Pt111/CO/top"}
    assert trained_systems(None) is None


def test_default_out():
    assert default_out("runs/tdn-catalysis/best.safetensors").name == (
        "adsorption_quality_tdn-catalysis-best.json"
    )
    assert default_out("/tmp/x.safetensors").name == "adsorption_quality_tmp-x.json"
    assert default_out("tdn-catalysis").name == "adsorption_quality_tdn-catalysis.json"


def _rec(label, kind="slab", energy=-1.0, converged=True, **fields):
    return {
        "label": label,
        "kind": kind,
        "final_energy": energy,
        "converged": converged,
        "adsorbate": "",
        **fields,
    }


def test_references_match_the_surface_and_the_gas():
    pt = dict(metal="Pt", facet="111", size=[3, 3, 4], alloy="", dopant="")
    meta = {r["label"]: r for r in (
        _rec("Pt111-3x3x4f2/clean/r0", energy=-2, fixed_layers=2, **pt),
        _rec("Pt111-3x3x4f2/clean/r1", energy=-3, fixed_layers=2, **pt),
        _rec("Pt111-3x3x4f2/clean/r2", energy=-9, fixed_layers=2, converged=False, **pt),
        _rec("Pt111-3x3x4f0/clean/r0", energy=-5, fixed_layers=0, **pt),
        _rec("Pt111-3x3x5f2/clean/r0", energy=-7, fixed_layers=2, **{**pt, "size": [3, 3, 5]}),
        _rec("Pt111-2x2x4f2-Ni25/clean/r0", energy=-8, fixed_layers=2,
             **{**pt, "size": [2, 2, 4], "alloy": "A3B", "dopant": "Ni"}),
        _rec("molecule/CO/r0", "gas", -14.0, adsorbate="CO"),
        _rec("molecule/CO/r1", "gas", -14.5, adsorbate="CO"),
        _rec("molecule/O2/r0", "gas", -20.0, converged=False, adsorbate="O2"),
        _rec("Pt111-3x3x4f2/CO/top/r0", energy=-30, adsorbate="CO", fixed_layers=2, **pt),
    )}  # fmt: skip
    ads = meta["Pt111-3x3x4f2/CO/top/r0"]
    assert clean_slab_label(meta, ads) == ("Pt111-3x3x4f2/clean/r1", True)
    assert clean_slab_label(meta, {**ads, "fixed_layers": 1}) == ("Pt111-3x3x4f0/clean/r0", False)
    alloy = {**ads, "size": [2, 2, 4], "alloy": "A3B", "dopant": "Ni"}
    assert clean_slab_label(meta, alloy) == ("Pt111-2x2x4f2-Ni25/clean/r0", True)
    assert clean_slab_label(meta, {**alloy, "dopant": "Cu"}) == (None, False)
    assert clean_slab_label(meta, {**ads, "facet": "100"}) == (None, False)
    assert gas_label(meta, "CO") == "molecule/CO/r1" and gas_label(meta, "O2") is None
    # a strained slab's reference is the clean slab at its strain, never the unstrained one
    # (lower in energy here), and an unstrained system never takes a strained clean slab
    strained = {**meta, **{r["label"]: r for r in (
        _rec("Pt111-3x3x4f2-s-1.5/clean/r0", energy=-1, fixed_layers=2, strain=-0.015, **pt),
        _rec("Pt111-3x3x4f2-s+2/clean/r0", energy=-99, fixed_layers=2, strain=0.02, **pt),
    )}}  # fmt: skip
    s_ads = {**ads, "label": "Pt111-3x3x4f2-s-1.5/CO/top/r0", "strain": -0.015}
    assert clean_slab_label(strained, s_ads) == ("Pt111-3x3x4f2-s-1.5/clean/r0", True)
    assert clean_slab_label(strained, {**s_ads, "strain": -0.03}) == (None, False)
    assert clean_slab_label(strained, ads) == ("Pt111-3x3x4f2/clean/r1", True)
    assert clean_slab_label(strained, {**ads, "strain": 0.0}) == ("Pt111-3x3x4f2/clean/r1", True)
    old = {
        "Pt111/clean/r0": _rec("Pt111/clean/r0", metal="Pt"),  # the first recipe's
        "gas/CO/r0": _rec("gas/CO/r0", "gas", adsorbate="CO"),
    }
    assert clean_slab_label(old, {"metal": "Pt", "adsorbate": "CO"})[0] == "Pt111/clean/r0"
    assert gas_label(old, "CO") == "gas/CO/r0"


def test_stratified_sample_is_balanced_and_seeded():
    meta = {}
    for facet in ("111", "100", "211"):
        for fam in ("H", "CO", "coads"):
            for metal in ("Pt", "Ru", "Cu", "Ni"):
                label = f"{metal}{facet}-3x3x4f2/{fam}/x/r0"
                meta[label] = {"label": label, "metal": metal, "facet": facet, "family": fam}
    labels = sorted(meta)
    assert stratified_sample(labels, meta, None) == labels
    assert stratified_sample(labels, meta, 99) == labels
    three = stratified_sample(labels, meta, 3, seed=0)
    assert len({meta[x]["facet"] for x in three}) == 3  # every facet, every family once
    assert len({meta[x]["family"] for x in three}) == 3
    nine = stratified_sample(labels, meta, 9, seed=0)
    assert len({(meta[x]["facet"], meta[x]["family"]) for x in nine}) == 9
    assert nine[:3] == three and stratified_sample(labels, meta, 9, seed=0) == nine
    assert len({meta[x]["metal"] for x in nine}) == 4
    assert {tuple(stratified_sample(labels, meta, 9, seed=s)) for s in range(5)} != {tuple(nine)}
    assert sorted(stratified_sample(labels, meta, 36, seed=1)) == labels


def _slab_with(facet, site_xy, size, lattice=(3.92,), metal="Pt", dopant=None):
    surf = build_surface(metal, facet, size, lattice, fixed_layers=1)
    slab = surf.atoms
    if dopant:
        symbols = slab.get_chemical_symbols()
        symbols[int(np.flatnonzero(surf.layer == 0)[0])] = dopant
        slab.set_chemical_symbols(symbols)
    top = slab.positions[:, 2].max()
    slab.extend(Atoms("H", positions=[[*site_xy, top + 1.0]]))
    return slab, surf


@pytest.mark.parametrize(("facet", "size", "n_translations"), [
    ("111", (3, 3, 4), 9), ("100", (3, 3, 4), 9), ("110", (2, 3, 4), 6), ("211", (3, 3, 4), 3)
])  # fmt: skip
def test_generic_site_rule(facet, size, n_translations):
    """Surface translations map equivalent sites onto each other; a different kind of site
    (fcc/hcp, bridge/top, step/terrace) is no match; a dopant breaks the equivalence."""
    ref, surf = _slab_with(facet, (0.0, 0.0), size)
    n = len(ref) - 1
    tr = surface_translations(ref, n)
    assert len(tr) == n_translations
    layers = metal_layers(ref, np.arange(len(ref)) < n)
    names = list(surf.sites)
    for a_name in names:
        a = _slab_with(facet, surf.sites[a_name], size)[0]
        for b_name in names:
            for shift in surf.top_xy[:3] - surf.top_xy[0]:
                b = _slab_with(facet, surf.sites[b_name] + shift + 0.1, size)[0]
                assert same_place(a, b, [n], n, layers, tr) == (a_name == b_name), (a_name, b_name)
    up = a.copy()
    up.positions[n, 2] += 5.0
    assert not same_place(a, up, [n], n, layers, tr)
    assert same_place(up, up, [n], n, layers, tr)
    if facet == "211":
        step = _slab_with(facet, surf.sites["step_bridge"], size)[0]
        assert contact_site(step, n, n, layers) == "2-fold[Pt0,Pt0]"
        assert contact_site(up, n, n, layers) == "desorbed"
    if facet == "111":  # one Ni in the top layer: only the identity maps the slab onto itself
        a = _slab_with(facet, surf.sites["fcc"], size, dopant="Ni")[0]
        assert len(surface_translations(a, n)) == 1
        far = _slab_with(
            facet, surf.sites["fcc"] + surf.top_xy[4] - surf.top_xy[0], size, dopant="Ni"
        )[0]
        assert not same_place(a, far, [n], n, layers, surface_translations(a, n))


def test_state_sees_desorption_and_dissociation():
    surf = build_surface("Pt", "111", (2, 2, 3), (3.92,), fixed_layers=1)
    n = len(surf.atoms)
    top = surf.atoms.positions[:, 2].max()
    on = surf.atoms.copy()
    on.extend(Atoms("CO", positions=[[0, 0, top + 1.85], [0, 0, top + 3.0]]))
    s0 = state(on, n, [[n, n + 1]])
    assert s0 == {"bound": [True], "bonds": [[n, n + 1]]}
    off = on.copy()
    off.positions[n:, 2] += 4.0
    assert state(off, n, [[n, n + 1]])["bound"] == [False]
    broken = on.copy()
    broken.positions[n + 1] = [1.4, 0.8, top + 1.2]
    assert state(broken, n, [[n, n + 1]])["bonds"] == []
    two = on.copy()
    two.extend(Atoms("H", positions=[[2.77, 1.6, top + 1.0]]))
    assert state(two, n, [[n, n + 1], [n + 2]])["bound"] == [True, True]


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
        assert row["landed"] and row["same_state"] and row["same_site_generic"]
        assert row["site_rule"] == "named" and row["facet"] == "111"
        assert row["teacher_anomalies"] == row["tdn_anomalies"]  # EMT stretches CO apart
        assert row["start_site"] in ("ontop", "fcc") and row["tdn_site"] == row["start_site"]
        assert row["teacher_fmax_at_tdn_min"] < 0.05
        assert row["references"]["slab"] == "Pt111/clean/r0"
        expected = reference_terms(adsorbate_template(row["adsorbate"]))
        assert row["references"]["terms"] == expected
        assert row["references"]["scheme"] == "molecules-O2-N2"
        e_gas = sum(c * ev.references[f"gas/{g}/r0"].teacher_energy for g, c in expected.items())
        e_slab = ev.references["Pt111/clean/r0"].teacher_energy
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
    # the stratified sample: one of each family (CO, O) of the four systems
    assert sorted(r["family"] for r in report["rows"]) == ["CO", "O"]
    assert all("error" not in r and r["tdn_n_steps"] <= 2 for r in report["rows"])
    assert report["summary"]["n_evaluated"] == 2 and report["summary"]["d_teacher"]["n"] == 2
    # the adsorbate's softest mode at the minimum is recorded, also without a threshold
    assert report["curvature_threshold"] is None
    assert all(math.isfinite(r["adsorbate_curvature"]) for r in report["rows"]
               if r["tdn_converged"])
    assert all("adsorbate_curvature" not in r for r in report["rows"] if not r["tdn_converged"])


def test_rescore_measures_a_new_partner_on_the_same_relaxations(emt_data, tmp_path,
                                                                 tiny_model, monkeypatch):
    import torch

    import tdn_calc.teachers
    from tdn_calc.checkpoint import save_model
    from tdn_calc.errors import InputError

    torch.set_num_threads(1)
    model, partner, other = (
        save_model(tiny_model(elements=(6, 8, 78), dtype=torch.float32, seed=seed),
                   tmp_path / f"{name}.safetensors")
        for seed, name in ((0, "model"), (1, "partner"), (2, "other")))
    first = tmp_path / "first.json"
    main(["--model", str(model), "--data", str(emt_data), "--split", "all", "--steps", "3",
          "--max-systems", "2", "--second-model", str(partner), "--out", str(first)])

    def no_teacher(*args, **kwargs):
        raise AssertionError("a rescore must not load the teacher")

    monkeypatch.setattr(tdn_calc.teachers, "get_teacher", no_teacher)
    same, again = tmp_path / "same.json", tmp_path / "again.json"
    for partner_file, out in ((partner, same), (other, again)):
        assert main(["--model", str(model), "--rescore", str(first), "--second-model",
                     str(partner_file), "--out", str(out)]) == 0
    old, same, new = (json.loads(f.read_text()) for f in (first, same, again))
    assert new["rescored_from"] == str(first) and new["committee"]["model"] == str(other)
    assert len(new["rows"]) == len(old["rows"]) == 2
    for before, repeated, after in zip(old["rows"], same["rows"], new["rows"], strict=True):
        # the same partner on the same relaxation: the recorded disagreement, measured again
        assert repeated["rescored"] and repeated["committee_force_max"] == pytest.approx(
            before["committee_force_max"], abs=1e-6)
        # another partner: another disagreement, its largest over the elements
        assert after["committee_force_max"] != pytest.approx(before["committee_force_max"])
        by_element = after["committee_force_max_by_element"]
        assert max(by_element.values()) == after["committee_force_max"]
        assert set(by_element) == {"Pt", *after["adsorbate"]}
        for key in ("d_teacher", "teacher_fmax_at_tdn_min", "landed", "interior_force_error_max"):
            assert after.get(key) == before.get(key)
    # without a partner, no disagreement of the earlier run survives
    main(["--model", str(model), "--rescore", str(first), "--out", str(again)])
    assert all("committee_force_max" not in r for r in json.loads(again.read_text())["rows"])
    # another model file, or a relaxation that does not end where the report says: refused
    with pytest.raises(InputError, match="another model file"):
        main(["--model", str(partner), "--rescore", str(first), "--out", str(again)])
    old["rows"][0]["tdn_energy"] += 0.1
    first.write_text(json.dumps(old))
    with pytest.raises(InputError, match=r"differs from the report's by 0\.1 eV"):
        main(["--model", str(model), "--rescore", str(first), "--out", str(again)])


def test_curvature_summary_ranks_softer_minima_as_more_suspect():
    from adsorption_quality import curvature_summary

    rows = [{"adsorbate_curvature": c, "curvature_calls": 6, "tdn_n_steps": 29}
            for c in (-0.3, -0.1, 0.5, 0.8, 1.2)] + [{}]
    bad = np.array([True, True, False, False, False, True])
    out = curvature_summary(rows, bad)["curvature"]
    assert out["auroc"] == 1.0 and out["n_without"] == 1
    assert out["extra_fraction"] == pytest.approx(0.2)  # 6 calls on top of 30
    assert -0.1 < out["threshold_this_set"] < 0.5  # flags the two saddles, not the minima
    assert out["at_threshold_this_set"]["recall_bad"] == 1.0
    assert curvature_summary([{}], np.array([True])) == {}


@pytest.fixture(scope="module")
def capped_emt_data(tmp_path_factory) -> Path:
    """The same tiny set with the teacher stopped after 3 steps: unconverged ends."""
    from tdn_calc.datagen.catalysis.build import build_catalysis

    out = tmp_path_factory.mktemp("capped")
    config = CatalysisConfig(**{**TINY, "max_steps": 3, "adsorbates": ("O",),
                                "sites": ("fcc",)})
    summary = build_catalysis(out, teacher="emt", config=config, progress=False)
    assert not summary.failures
    return out


def test_unconverged_teacher_ends_are_continued_to_a_minimum(capped_emt_data):
    """EMT judging EMT: against the stored 3-step end the student "misses" by going lower;
    once the teacher continues its own relaxation to fmax the student lands in it."""
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.datagen.catalysis.build import read_metadata

    ds, meta = H5Dataset(capped_emt_data), read_metadata(capped_emt_data)
    label = "Pt111/O/fcc/r0"
    assert not meta[label]["converged"]
    kwargs = {"fmax": 0.05, "steps": 150, "optimizer": "BFGS"}
    stored = Evaluator(ds, meta, EMT(), EMT(), kwargs, continue_teacher=False).system(label)
    assert stored["teacher_continued_steps"] == 0 and stored["d_teacher"] < -0.01
    ev = Evaluator(ds, meta, EMT(), EMT(), kwargs)
    row = ev.system(label)
    assert row["teacher_continued_steps"] > 0 and not row["teacher_converged"]  # the data's
    minimum = ev._continued[label].copy()
    minimum.calc = EMT()
    assert np.linalg.norm(minimum.get_forces(), axis=1).max() <= 0.05
    assert row["teacher_energy"] == pytest.approx(minimum.get_potential_energy(), abs=1e-6)
    assert abs(row["d_teacher"]) < 0.01 and row["landed"]


def test_checks_at_minimum_record_the_curvature_only_at_a_converged_minimum(emt_data, tiny_model):
    """Like tdn-relax: the adsorbate's softest curvature (by the model itself) is recorded at
    a converged TDN minimum, also without a threshold, and not at an unconverged end."""
    import torch
    from ase.build import add_adsorbate, fcc111

    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.datagen.catalysis.build import read_metadata
    from tdn_calc.soft_modes import softest_curvature

    torch.set_num_threads(1)
    model = tiny_model(elements=(8, 78), dtype=torch.float64)
    ev = Evaluator(H5Dataset(emt_data), read_metadata(emt_data), TDNCalculator(model),
                   EMT(), {"fmax": 0.05, "steps": 5, "optimizer": "BFGS"})
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.2, "fcc")
    zeros = np.zeros((len(slab), 3))
    found = ev.checks_at_minimum(slab, zeros, converged=True)
    expected = softest_curvature(slab, TDNCalculator(model, extrapolation=False,
                                                     uncertainty=False))
    assert found["adsorbate_curvature"] == pytest.approx(expected, abs=1e-6)
    assert found["curvature_calls"] == 6
    assert "adsorbate_curvature" not in ev.checks_at_minimum(slab, zeros, converged=False)
