"""docs/campaigns.md "With quacc (and jobflow/atomate2)": every code block of the section
is run here (the definitions are examples/quacc/screen_flow.py verbatim; the run blocks are
executed as written, in a fresh interpreter each, on CO on a 2x2x3 Pt(111) slab with
tdn-catalysis): quacc's default engine, its Dask engine on an in-process cluster, jobflow."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "quacc"
SECTION = "## With quacc (and jobflow/atomate2)"


def _blocks() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "campaigns.md").read_text("utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```(\w*)\n(.*?)```", text[start:end], re.S)


# appended to a run block: the checks need `results` and `spec` in plain JSON
_REPORT = """
import json as _json
from ase import Atoms as _Atoms
from ase.io.jsonio import decode as _decode
_out = {}
for _key, _r in results.items():
    _a = _r["atoms"] if isinstance(_r["atoms"], _Atoms) else _decode(_r["atoms"])
    _out[_key] = {k: _r[k] for k in ("energy", "fmax", "steps", "anchor_metal_distance")}
    _out[_key]["n_atoms"] = len(_a)
    _out[_key]["symbols"] = _a.get_chemical_formula()
print("RESULTS" + _json.dumps({"fmax": spec.fmax, "steps": spec.steps, "rows": _out}))
"""


def _run(code: str, tmp_path: Path, env_extra: dict[str, str] | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUACC_")}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLE), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code + _REPORT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS"))
    return json.loads(line[len("RESULTS"):])


def _check(report: dict) -> None:
    rows = report["rows"]
    # Pt(111) distinct sites: ontop, bridge, fcc, hcp
    assert {k.split("|")[-1] for k in rows} == {"site-ontop", "site-bridge", "site-fcc",
                                                "site-hcp"}
    for key, row in rows.items():
        assert row["n_atoms"] == 14 and row["symbols"] == "COPt12", key
        assert math.isfinite(row["energy"]), key
        assert row["fmax"] < report["fmax"] or row["steps"] >= report["steps"], (key, row)
        assert row["anchor_metal_distance"] < 2.5, (key, row)  # CO still bound (C-Pt)


def test_definitions_block_is_the_example_module():
    blocks = _blocks()
    assert [lang for lang, _ in blocks] == ["python", "python", "python", "bash", "python",
                                            "python"]
    source = (EXAMPLE / "screen_flow.py").read_text("utf-8")
    assert blocks[0][1] in source


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("engine", ["default", "dask", "jobflow"])
def test_docs_quacc_blocks_run(engine, tmp_path):
    pytest.importorskip("quacc")
    _, spec_block, default_block, export_block, dask_block, jobflow_block = (
        code for _, code in _blocks())
    if engine == "default":
        report = _run(spec_block + default_block, tmp_path)
        assert list(tmp_path.glob("quacc-*/opt.traj*")), "quacc wrote no job folders"
    elif engine == "dask":
        pytest.importorskip("distributed")
        env = dict(re.findall(r"^export (\w+)=(\S+)$", export_block, re.M))
        assert env == {"QUACC_WORKFLOW_ENGINE": "dask"}
        report = _run(spec_block + dask_block, tmp_path, env)
    else:
        pytest.importorskip("jobflow")
        report = _run(spec_block + jobflow_block, tmp_path)
    _check(report)
