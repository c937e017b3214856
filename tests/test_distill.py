"""`tdn distill` (tdn_calc.distill): spec errors, a 2-round loop with the EMT teacher on tiny
Cu/Pt(111) cells and a tiny TDN, resume after a finished run and after a kill mid-loop.

No assertion depends on the tiny model's relaxations converging: the student relaxes a few
steps and whatever it ends at is checked by the teacher."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tdn_calc.campaigns.spec import SpecError
from tdn_calc.distill import DistillState, parse_distill_spec, run_distill
from tdn_calc.distill import loop as distill_loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_MODEL = {"lmax": 1, "channels": 8, "num_layers": 1, "num_heads": 2, "cutoff": 4.0,
              "num_radial": 4, "radial_hidden": 8}
SPEC: dict[str, Any] = {
    "name": "cupt",
    "surfaces": [{"element": "Cu", "facet": "111", "size": "2x2", "layers": 2,
                  "fixed_layers": 1, "lattice_constant": 3.6},
                 {"element": "Pt", "facet": "111", "size": "2x2", "layers": 2,
                  "fixed_layers": 1, "lattice_constant": 3.92}],
    "adsorbates": ["H", "O"],
    "placement": {"sites": True, "random": 0, "seed": 0},
    "relax": {"fmax": 0.05, "steps": 4, "batch_size": 8},
    "distill": {
        "init_from": "scratch", "model": TINY_MODEL,
        "seed": {"placements": 3, "rattle": 1, "strain": 1, "steps": 15},
        "loop": {"rounds": 2, "frames_per_round": 3, "teacher_calls": 10_000,
                 "train_steps": 6},
        "train": {"batch_size": 4, "lr": 0.005},
        "holdout": 0.25,
        # unreachable: the loop must run every round
        "agreement": {"energy": 1e-9, "fmax": 1e-9},
    },
}


def spec_dict(**distill: Any) -> dict[str, Any]:
    out = copy.deepcopy(SPEC)
    out["distill"].update(distill)
    return out




@pytest.mark.timeout(30)
@pytest.mark.parametrize(("change", "message"), [
    ({"distill": {"loop": {"rounds": 0}}}, "distill.loop.rounds"),
    ({"distill": {"holdout": 1.0}}, "distill.holdout"),
    ({"distill": {"holdout": 0.2, "bogus": 1}}, "distill.bogus"),
    ({"distill": {"init_from": "no-such-model"}}, "distill.init_from"),
    ({"distill": {"init_from": "tdn-catalysis", "model": {"channels": 8}}}, "distill.model"),
    ({"distill": {"model": {"nonsense": 1}}}, "distill.model.nonsense"),
    ({"distill": {"train": {"lr": -1}}}, "distill.train"),
    ({"distill": {"train": {"max_steps": 5}}}, "distill.train"),
    ({"distill": {"agreement": {"energy": 0}}}, "distill.agreement.energy"),
    ({"distill": {"seed": {"rattle": -1}}}, "distill.seed.rattle"),
    ({"adsorbates": ["H"], "surfaces": SPEC["surfaces"][:1]}, "needs at least two"),
])
def test_spec_errors_name_the_key(change, message):
    data = {k: v for k, v in SPEC.items() if k != "distill"}
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        parse_distill_spec({**data, **change}, teacher="emt")


@pytest.mark.timeout(30)
def test_spec_needs_a_teacher_and_hash_follows_settings():
    with pytest.raises(SpecError, match="teacher"):
        parse_distill_spec(spec_dict())
    with pytest.raises(SpecError, match="teacher"):
        parse_distill_spec(spec_dict(), teacher="no-such-teacher")
    spec = parse_distill_spec(spec_dict(), teacher="emt")
    assert spec.teacher == "emt" and spec.name == "cupt-distilled"
    assert spec.loop.rounds == 2 and spec.model == TINY_MODEL
    same = parse_distill_spec({**spec_dict(), "teacher": "emt"})
    assert same.hash() == spec.hash()
    assert parse_distill_spec(spec_dict(holdout=0.5), teacher="emt").hash() != spec.hash()


def _counting_trainer(monkeypatch) -> list[int]:
    """Count the trainer runs (each ``Trainer(...)`` made by the loop)."""
    from tdn_calc.train import trainer as trainer_module

    calls: list[int] = []
    original = trainer_module.Trainer.run

    def run(self, *args, **kwargs):
        calls.append(self.step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "run", run)
    return calls


@pytest.mark.timeout(60)
def test_two_rounds_register_and_rerun_resumes(tmp_path, monkeypatch):
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.registry import model_entry, model_path

    spec = parse_distill_spec(spec_dict(), teacher="emt")
    out = tmp_path / "out"
    trained = _counting_trainer(monkeypatch)
    state = run_distill(spec, out)
    assert state.stage == "done" and state.stop_reason == "rounds" and len(trained) == 2
    saved = DistillState.load(out / "state.json")
    assert [r["round"] for r in saved.history] == [0, 1]
    seed, explore = saved.history
    # data grows: seed frames, then the picked student minima of round 1
    assert seed["frames_added"] > 0 and 0 < explore["frames_added"] <= 3
    assert saved.frames == seed["frames_added"] + explore["frames_added"]
    assert len(H5Dataset(out / "data")) == saved.frames
    for rec in saved.history:
        agreement = rec["agreement"]
        assert agreement["n"] == 4 and agreement["met"] is False  # one held-out pair x 4 sites
        assert agreement["median_abs_de_eV"] >= 0 and agreement["max_teacher_fmax_eV_A"] >= 0
        assert (out / rec["model"]).is_file()
    assert saved.teacher_calls == seed["teacher_calls"] + explore["teacher_calls"]
    # round 1 fine-tuned the round-0 model
    cfg = (out / "rounds" / "r001" / "train.yaml").read_text()
    assert "r000/train/final.safetensors" in cfg

    # the result is a registered model of the user's manifest, with its card
    manifest = out / "manifest.json"
    entry = model_entry("cupt-distilled", manifest)
    assert entry["distill"]["teacher"] == "emt"
    assert entry["distill"]["spec_hash"] == spec.hash()
    assert "EMT" in entry["reference_method"]
    assert entry["metrics"]["holdout_agreement"] == saved.history[-1]["agreement"]
    path = model_path("cupt-distilled", manifest)
    card = json.loads((out / "model_card.json").read_text())
    assert card["distill"]["frames"] == saved.frames and len(card["distill"]["history"]) == 2

    from ase.build import add_adsorbate, fcc111

    from tdn_calc import TDNCalculator

    slab = fcc111("Cu", (2, 2, 2), a=3.6, vacuum=6.0)
    add_adsorbate(slab, "O", 1.5, "fcc")
    monkeypatch.setenv("TDN_MANIFEST", str(manifest))
    calc = TDNCalculator("cupt-distilled", device="cpu")
    slab.calc = calc
    slab.get_potential_energy()
    assert calc.results["uncertainty"].shape == (len(slab),)
    assert path.is_file()

    # a re-run of a finished loop labels and trains nothing
    again = run_distill(spec, out)
    assert again.teacher_calls == saved.teacher_calls and len(trained) == 2

    # a raised budget (one more round) continues the same run: one more round, re-registered
    loop = {**SPEC["distill"]["loop"], "rounds": 3}
    more = parse_distill_spec(spec_dict(loop=loop), teacher="emt")
    assert more.hash() == spec.hash()  # budgets are not part of what a round does
    longer = run_distill(more, out)
    assert longer.stage == "done" and longer.stop_reason == "rounds" and len(trained) == 3
    assert [r["round"] for r in longer.history] == [0, 1, 2]
    assert longer.teacher_calls > saved.teacher_calls
    card = json.loads((out / "model_card.json").read_text())
    assert len(card["distill"]["history"]) == 3
    assert run_distill(more, out).teacher_calls == longer.teacher_calls  # done again


@pytest.mark.timeout(60)
def test_kill_mid_loop_resumes_without_relabelling(tmp_path, monkeypatch):
    spec = parse_distill_spec(spec_dict(), teacher="emt")
    out = tmp_path / "out"
    original = distill_loop._agree
    calls = {"n": 0}

    def dies_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # killed in round 1's check, after its labels and training
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(distill_loop, "_agree", dies_once)
    with pytest.raises(KeyboardInterrupt):
        run_distill(spec, out)
    killed = DistillState.load(out / "state.json")
    assert (killed.round, killed.stage) == (1, "agree")
    trained = _counting_trainer(monkeypatch)
    state = run_distill(spec, out)
    assert state.stage == "done" and trained == []  # both rounds' training was finished
    assert state.frames == killed.frames
    assert [r["frames_added"] for r in state.history] == \
        [r["frames_added"] for r in killed.history]
    # only the held-out check of round 1 ran again
    assert state.teacher_calls == killed.teacher_calls + 4


@pytest.mark.timeout(30)
def test_an_element_the_student_cannot_know_is_refused_before_any_teacher_call(tmp_path):
    from tdn_calc.distill.label import check_elements, clean_slabs, split_placements

    data = spec_dict()
    data["surfaces"] = data["surfaces"][:1]  # Cu(111): H held out, O trained on
    with pytest.raises(SpecError, match="would meet H in held-out placements"):
        run_distill(parse_distill_spec(data, teacher="emt"), tmp_path / "out")
    assert not (tmp_path / "out" / "data").exists()  # nothing labelled
    data["distill"]["init_from"] = "tdn-catalysis"  # knows H: the same split is fine
    del data["distill"]["model"]
    spec = parse_distill_spec(data, teacher="emt")
    slabs = clean_slabs(spec)
    check_elements(spec, slabs, split_placements(spec, slabs))


@pytest.mark.timeout(30)
def test_cli_reports_spec_errors(tmp_path):
    import yaml
    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict(holdout=2)))
    result = CliRunner().invoke(main, ["distill", str(path), "--teacher", "emt"])
    assert result.exit_code == 1 and "distill.holdout" in result.output
    result = CliRunner().invoke(main, ["distill", str(path)])
    assert result.exit_code == 1 and "teacher" in result.output
