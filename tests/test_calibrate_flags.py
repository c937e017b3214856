"""tools/calibrate_flags.py and the committee record of tools/make_uncertainty_sidecar.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import catalysis_manifest

from tdn_calc.evaluation.flagging import calibrate_rule, rates_rule

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(path: Path, rng, n: int, with_committee: bool, with_curvature: bool = False
            ) -> None:
    rows = []
    for i in range(n):
        bad = bool(i % 3 == 0)
        row = {"status": "evaluated", "bad": bad, "landed": not bad and i % 3 == 1,
               "uncertainty_max": float(rng.normal(1.0 if bad else 0.0, 1.0))}
        if with_committee:
            row["committee_force_max"] = float(abs(rng.normal(0.8 if bad else 0.1, 0.3)))
        if with_curvature:  # half the bad ones sit on a saddle of the model
            row["adsorbate_curvature"] = float(rng.normal(-0.2, 0.05) if bad and i % 2
                                               else rng.normal(1.0, 0.3))
        rows.append(row)
    rows.append({"status": "failed"})
    path.write_text(json.dumps({"rows": rows}))


def test_pooled_reports_give_the_rule_calibrate_rule_gives(tmp_path):
    tool = _tool("calibrate_flags")
    rng = np.random.default_rng(3)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _report(a, rng, 60, True)
    _report(b, rng, 45, True)
    rows = tool.pooled_rows([str(a), str(b)])
    assert len(rows) == 20 + 20 + 15 + 15  # bad or landed only, failed rows left out
    result = tool.calibrate_rows(rows, committee=True)
    bad = np.array([r["bad"] for r in rows])
    novelty = np.array([r["uncertainty_max"] for r in rows])
    gap = np.array([r["committee_force_max"] for r in rows])
    pair = calibrate_rule([novelty, gap], bad)
    assert list(result["rule"]["thresholds"].values()) == list(pair)
    assert result["rule"]["recall_bad"] == rates_rule([novelty, gap], bad, pair)["recall_bad"]
    assert result["rule"]["recall_bad"] >= result["novelty"]["recall_bad"]
    _report(a, rng, 30, False)
    assert "rule" not in tool.calibrate_rows(tool.pooled_rows([str(a)]))


def _curvature_rows(tmp_path, seed: int):
    """The calibrate_flags tool and 90 pooled rows with all three scores."""
    tool = _tool("calibrate_flags")
    a = tmp_path / "a.json"
    _report(a, np.random.default_rng(seed), 90, True, with_curvature=True)
    return tool, tool.pooled_rows([str(a)])


def test_curvature_joins_the_rule_flagged_below_its_threshold(tmp_path):
    tool, rows = _curvature_rows(tmp_path, 4)
    pair = tool.calibrate_rows(rows, committee=True)
    three = tool.calibrate_rows(rows, committee=True, curvature=True)
    t = three["rule"]["thresholds"]
    assert set(t) == {"novelty", "committee", "curvature"}
    assert -0.2 < t["curvature"] < 1.0  # between the saddles and the true minima
    assert three["rule"]["recall_bad"] > pair["rule"]["recall_bad"]
    assert three["rule"]["false_flag_good"] <= 0.15
    assert three["curvature_auroc"] > 0.5


def test_committee_is_recorded_under_its_own_name_and_removed(tmp_path, monkeypatch):
    from tdn_calc.errors import ModelNotFoundError

    tool = _tool("make_uncertainty_sidecar")
    manifest = Path(catalysis_manifest(tmp_path, 0.5))
    monkeypatch.setattr(tool, "MANIFEST", manifest)
    tool.set_threshold("tdn-catalysis", 0.3, "tdn-catalysis-20261206-2", 0.6)
    record = json.loads(manifest.read_text())["models"]["tdn-catalysis"]["uncertainty"]
    assert record["threshold"] == 0.3
    assert record["committee"] == {"model": "tdn-catalysis-20261206-2", "force_threshold": 0.6}
    with pytest.raises(ModelNotFoundError):
        tool.set_threshold("tdn-catalysis", 0.3, "no-such-model", 0.6)
    tool.set_threshold("tdn-catalysis", 0.4, "none")
    record = json.loads(manifest.read_text())["models"]["tdn-catalysis"]["uncertainty"]
    assert "committee" not in record and record["threshold"] == 0.4
    tool.set_threshold("tdn-catalysis", 0.4, "none", curvature_threshold=0.05)
    record = json.loads(manifest.read_text())["models"]["tdn-catalysis"]["uncertainty"]
    assert record["curvature_threshold"] == 0.05
    tool.set_threshold("tdn-catalysis", 0.4)  # kept when not named
    record = json.loads(manifest.read_text())["models"]["tdn-catalysis"]["uncertainty"]
    assert record["curvature_threshold"] == 0.05
    tool.set_threshold("tdn-catalysis", 0.4, curvature_threshold="none")
    record = json.loads(manifest.read_text())["models"]["tdn-catalysis"]["uncertainty"]
    assert "curvature_threshold" not in record


def test_cross_validated_choice_keeps_novelty_and_reports_out_of_sample_rates(tmp_path):
    tool, rows = _curvature_rows(tmp_path, 5)
    for k, row in enumerate(rows):
        row["label"] = f"Pt111/X{k // 2}/top/r{k % 2}"  # two replicas per system
    result = tool.calibrate_rows(rows, committee=True, curvature=True, cv=True)
    rule = result["rule"]
    assert "novelty" in rule["thresholds"] and 0.05 <= rule["cap"] <= 0.15
    assert set(rule["cv"]) == {"recall_bad", "false_flag_good"}
    assert len(rule["table"]) == 4 * 11  # signal subsets with novelty x caps


def test_max_cap_widens_the_caps_cross_validation_tries(tmp_path, capsys):
    tool, rows = _curvature_rows(tmp_path, 6)
    for k, row in enumerate(rows):
        row["label"] = f"Pt111/X{k // 2}/top/r{k % 2}"
    rule = tool.calibrate_rows(rows, committee=False, cv=True, max_cap=0.30)["rule"]
    caps = sorted({t["cap"] for t in rule["table"]})
    assert caps[0] == 0.05 and caps[-1] == 0.30 and len(caps) == 26
    assert 0.05 <= rule["cap"] <= 0.30 and len(rule["table"]) == 26  # novelty alone x caps
    with pytest.raises(ValueError, match="max_cap"):
        tool.calibrate_rows(rows, cv=True, max_cap=0.03)
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "a.json"), "--cv", "--max-cap", "2"])
    assert "--max-cap must lie between 0.05 and 1" in capsys.readouterr().err
