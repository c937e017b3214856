"""benchmarks/wait_policy.py end to end with the shipped model and one spinning process: both
policies relax the example with tdn-relax and the report holds their timings."""

from __future__ import annotations

import json

import pytest
from wait_policy import main


@pytest.mark.slow
def test_wait_policy_report(tmp_path):
    out = tmp_path / "wp.json"
    assert main(["--busy", "1", "--repeats", "1", "--threads", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["seconds"]) == {"ACTIVE", "PASSIVE"}
    assert all(len(v) == 1 and v[0] > 0 for v in report["seconds"].values())
    assert report["ratio_active_over_passive"] == pytest.approx(
        report["median_s"]["ACTIVE"] / report["median_s"]["PASSIVE"])
    assert report["busy"] == 1 and report["threads"] == 2
