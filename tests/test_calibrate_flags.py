"""tools/calibrate_flags.py and the committee record of tools/make_uncertainty_sidecar.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import catalysis_manifest

from tdn_calc.evaluation.flagging import calibrate_pair, rates_pair

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(path: Path, rng, n: int, with_committee: bool) -> None:
    rows = []
    for i in range(n):
        bad = bool(i % 3 == 0)
        row = {"status": "evaluated", "bad": bad, "landed": not bad and i % 3 == 1,
               "uncertainty_max": float(rng.normal(1.0 if bad else 0.0, 1.0))}
        if with_committee:
            row["committee_force_max"] = float(abs(rng.normal(0.8 if bad else 0.1, 0.3)))
        rows.append(row)
    rows.append({"status": "failed"})
    path.write_text(json.dumps({"rows": rows}))


def test_pooled_reports_give_the_pair_calibrate_pair_gives(tmp_path):
    tool = _tool("calibrate_flags")
    rng = np.random.default_rng(3)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _report(a, rng, 60, True)
    _report(b, rng, 45, True)
    rows = tool.pooled_rows([str(a), str(b)])
    assert len(rows) == 20 + 20 + 15 + 15  # bad or landed only, failed rows left out
    result = tool.calibrate_rows(rows)
    bad = np.array([r["bad"] for r in rows])
    novelty = np.array([r["uncertainty_max"] for r in rows])
    gap = np.array([r["committee_force_max"] for r in rows])
    pair = calibrate_pair(novelty, gap, bad)
    assert result["pair"]["thresholds"] == list(pair)
    assert result["pair"]["recall_bad"] == rates_pair(novelty, gap, bad, pair)["recall_bad"]
    assert result["pair"]["recall_bad"] >= result["novelty"]["recall_bad"]
    _report(a, rng, 30, False)
    assert "pair" not in tool.calibrate_rows(tool.pooled_rows([str(a)]))


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
