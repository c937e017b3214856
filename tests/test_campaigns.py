"""Screening campaigns (tdn_calc.campaigns, `tdn screen`) on EMT (and once the shipped
tdn-catalysis, on a Dask cluster of another process) and tiny Pt(111) slabs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.db
import pytest
import yaml
from campaign_helpers import tiny_spec
from click.testing import CliRunner

from tdn_calc.campaigns import (
    SpecError,
    parse_spec,
    run_campaign,
    summarize,
    table,
    write_placements_csv,
    write_summary_csv,
)
from tdn_calc.campaigns.placements import build_slab, distinct_sites, enumerate_placements

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> dict[str, dict]:
    """key -> (energy, key-value pairs less the spec-independent ones) of a database."""
    out = {}
    for row in ase.db.connect(str(path)).select():
        kv = dict(row.key_value_pairs)
        out[row.key] = {
            "energy": round(row.energy, 8),
            **{k: round(v, 8) if isinstance(v, float) else v for k, v in kv.items()},
        }
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"surfaces": [{"element": "Xx", "facet": "111"}]}, "surfaces[0].element"),
        ({"surfaces": [{"element": "Pt", "facet": "0001"}]}, "surfaces[0].facet"),
        ({"surfaces": [{"element": "Pt", "facet": 111, "size": "3by3"}]}, "surfaces[0].size"),
        (
            {"surfaces": [{"element": "Pt", "facet": 111, "layers": 3, "fixed_layers": 3}]},
            "surfaces[0].fixed_layers",
        ),
        (
            {"surfaces": [{"element": "Pt", "facet": 111, "lattice_constant": "guess"}]},
            "surfaces[0].lattice_constant",
        ),
        ({"surfaces": [{"element": "Pt", "facet": 111, "colour": 1}]}, "surfaces[0].colour"),
        ({"adsorbates": ["CO", "XYZ"]}, "adsorbates[1]"),
        ({"adsorbates": [{"name": "M", "file": "missing.xyz"}]}, "adsorbates[0].file"),
        ({"relax": {"fmax": -1}}, "relax.fmax"),
        ({"relax": {"optimizer": "SD"}}, "relax.optimizer"),
        ({"placement": {"random": "two"}}, "placement.random"),
        ({"references": {"scheme": "mine"}}, "references.scheme"),
        ({"teacher": {"policy": "verify"}}, "teacher.name"),
        ({"surfaces": []}, "surfaces: required"),
        ({"wrong": 1}, "wrong: unknown key"),
        ({"model": "no-such-model"}, "model: 'no-such-model'"),
    ],
)
def test_spec_errors_name_the_key(change, message):
    with pytest.raises(SpecError) as err:
        parse_spec(tiny_spec(**change))
    assert message in str(err.value)


def test_spec_defaults_and_hash():
    spec = parse_spec(tiny_spec())
    assert spec.surfaces[0].label == "Pt(111)" and spec.surfaces[0].size == (2, 2)
    assert spec.hash() == parse_spec(tiny_spec(name="other", device="cpu")).hash()
    assert spec.hash() != parse_spec(tiny_spec(model='emt{"asap_cutoff": true}')).hash()


def test_distinct_sites_and_placement_counts():
    spec = parse_spec(tiny_spec(placement={"random": 2}))
    slab = build_slab(spec.surfaces[0], (3.92,))
    assert sorted(s.name for s in distinct_sites(slab)) == ["bridge", "fcc", "hcp", "ontop"]
    placements = enumerate_placements(spec, spec.surfaces[0], slab)
    assert len(placements) == 2 * (4 + 2)
    assert {p.start_site for p in placements if p.placement.startswith("site-")} == {
        "ontop",
        "bridge",
        "fcc",
        "hcp",
    }
    again = enumerate_placements(spec, spec.surfaces[0], slab)  # seeded: same structures
    assert all(
        (a.atoms.positions == b.atoms.positions).all()
        for a, b in zip(placements, again, strict=True)
    )


def test_rows_resume_force_and_hash(tmp_path):
    spec = parse_spec(tiny_spec())
    db = tmp_path / "c.db"
    stats = run_campaign(spec, db, progress=False)
    rows = list(ase.db.connect(str(db)).select())
    kinds = [r.kind for r in rows]
    assert kinds.count("slab") == 1 and kinds.count("gas") == 2  # H2, O2
    assert kinds.count("placement") == 2 * 5 == stats.written - 3
    site = next(r for r in rows if r.key == "Pt(111)|H|site-fcc")
    assert site.start_site == "fcc" and site.final_site == "fcc" and site.anomaly == "none"
    assert site.engine == "emt" and site.spec_hash == spec.hash() and site.converged
    assert -1.0 < site.e_ads < 0.0 and site.steps > 0 and len(site.toatoms()) == 13
    assert site.relaxed_by == "student" and site.energy_source == "student"  # EMT, the model
    assert site.student_calls == site.steps + 1 and site.teacher_calls == 0  # calls counted
    assert site.e_ads == site.student_e_ads and "teacher" not in site
    assert run_campaign(spec, db, progress=False).written == 0  # resume: all skipped
    assert run_campaign(spec, db, force=True, progress=False).written == stats.written
    assert len(ase.db.connect(str(db))) == stats.written
    other = parse_spec(tiny_spec(relax={"fmax": 0.2, "steps": 60}))
    with pytest.raises(SpecError, match="another spec"):
        run_campaign(other, db, progress=False)
    run_campaign(other, db, force=True, progress=False)
    assert {r.spec_hash for r in ase.db.connect(str(db)).select()} == {other.hash()}


def test_summary_csv_and_heatmap(tmp_path):
    spec = parse_spec(tiny_spec(adsorbates=["H", "CO"]))
    db_path = tmp_path / "c.db"
    run_campaign(spec, db_path, progress=False)
    db = ase.db.connect(str(db_path))
    summaries = summarize(db)
    assert [(s.surface, s.adsorbate) for s in summaries] == [("Pt(111)", "H"), ("Pt(111)", "CO")]
    for s in summaries:
        assert s.placements == 5 and s.valid >= 1 and s.e_ads < 0
        rows = [r for r in db.select(kind="placement", adsorbate=s.adsorbate) if r.valid]
        assert s.e_ads == min(r.e_ads for r in rows)
    text = table(summaries)
    assert "E_ads/eV" in text and "Pt(111)" in text
    write_summary_csv(summaries, tmp_path / "s.csv")
    write_placements_csv(db, tmp_path / "p.csv")
    with open(tmp_path / "s.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    with open(tmp_path / "p.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 10


def test_cli_screen(tmp_path):
    from tdn_calc.cli.main import main

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(adsorbates=["H"])))
    runner = CliRunner()
    result = runner.invoke(main, ["screen", str(spec_file), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Pt(111)" in result.output and "7 rows written" in result.output
    out = tmp_path / "s_results"
    assert (out / "summary.csv").is_file() and (out / "placements.csv").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_spec(relax={"steps": -1})))
    result = runner.invoke(main, ["screen", str(bad)])
    assert result.exit_code == 1 and "relax.steps" in result.output


_KILLED_RUN = """
import sys, yaml
from tdn_calc.campaigns import parse_spec, run_campaign
run_campaign(parse_spec(yaml.safe_load(sys.argv[1])), sys.argv[2], progress=False)
"""


@pytest.mark.timeout(120)
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    data = tiny_spec(relax={"fmax": 0.1, "steps": 60, "batch_size": 1})
    spec = parse_spec(data)
    run_campaign(spec, tmp_path / "whole.db", progress=False)
    db = tmp_path / "killed.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, json.dumps(data), str(db)], env=env)
    placed = 0
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            placed = ase.db.connect(str(db)).count(kind="placement") if db.exists() else 0
        except Exception:  # the writer holds the lock
            placed = 0
        if placed >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"
    partial = len(_rows(db))
    assert 3 <= partial < 13
    stats = run_campaign(spec, db, progress=False)
    assert stats.skipped == partial and stats.written == 13 - partial
    assert _rows(db) == _rows(tmp_path / "whole.db")


@pytest.mark.timeout(120)
def test_dask_local_cluster_survives_a_dead_worker(tmp_path):
    pytest.importorskip("distributed")
    from campaign_helpers import marker_pid

    from tdn_calc.campaigns.executors import DaskExecutor

    marker = tmp_path / "killed"
    model = f'campaign_helpers:dying_emt{{"marker": "{marker}"}}'
    spec = parse_spec(tiny_spec(model=model))
    reference = parse_spec(tiny_spec(model=model))
    executor = DaskExecutor(workers=2, retries=1)
    try:
        stats = run_campaign(spec, tmp_path / "dask.db", executor=executor, progress=False)
    finally:
        executor.close()
    assert marker.exists() and marker_pid(marker) != os.getpid()  # a worker died
    assert stats.written == 13
    run_campaign(reference, tmp_path / "here.db", progress=False)  # marker there: plain EMT
    assert _rows(tmp_path / "dask.db") == _rows(tmp_path / "here.db")


_CLUSTER = """
import json, sys
from distributed import LocalCluster
cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                       scheduler_port=0, dashboard_address=None)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()  # until the test closes stdin
prefix = cluster.scheduler.task_prefixes.get("relax_items")
print(json.dumps(None if prefix is None else dict(prefix.state_counts)), flush=True)
cluster.close()
"""


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first line ``proc`` prints, within ``timeout`` s (empty when none)."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        return proc.stdout.readline().strip() if sel.select(timeout) else ""


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("one_torch_thread")
def test_screen_joins_a_dask_scheduler_of_another_process(tmp_path):
    """``tdn screen --scheduler ADDRESS`` with the shipped tdn-catalysis as the model, on a
    one-worker cluster that another process started: the rows equal an in-process run's."""
    pytest.importorskip("distributed")
    from tdn_calc.cli.main import main

    data = tiny_spec(model="tdn-catalysis", adsorbates=["H"], placement={"random": 0},
                     relax={"fmax": 0.1, "steps": 40, "batch_size": 2})  # fmt: skip
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CLUSTER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)  # fmt: skip
    try:
        address = _read_line(proc, 60)
        assert address.startswith("tcp://"), f"no scheduler address from the cluster: {address!r}"
        result = CliRunner().invoke(main, ["screen", str(spec_file), "--scheduler", address,
                                           "--db", str(tmp_path / "dask.db"), "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "6 rows written" in result.output  # slab, H2, four sites
    finally:
        proc.stdin.close()  # the cluster reports its tasks and closes itself...
        tasks = _read_line(proc, 30)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:  # ...and whatever is left of its group (scheduler, nanny, worker) is killed
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    # every batch ran on that cluster: the references (slab, H2), then four placements, two a batch
    assert json.loads(tasks or "null") is not None, "the cluster ran no relax_items task"
    assert json.loads(tasks)["memory"] == 3
    run_campaign(parse_spec(data), tmp_path / "here.db", progress=False)
    dask_rows, here = _rows(tmp_path / "dask.db"), _rows(tmp_path / "here.db")
    assert {r["engine"] for r in here.values()} == {"tdn-catalysis"} and len(here) == 6
    assert dask_rows == here


def test_verify_teacher_user_file_and_fitted_lattice(tmp_path):
    from ase.build import molecule
    from ase.io import write

    write(tmp_path / "co.xyz", molecule("CO"))
    surface = {**tiny_spec()["surfaces"][0], "lattice_constant": "model"}
    data = tiny_spec(
        surfaces=[surface],
        adsorbates=[{"name": "myCO", "file": "co.xyz"}],
        placement={"random": 0},
        teacher={"name": "emt", "policy": "verify"},
    )
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    from tdn_calc.campaigns import load_spec

    spec = load_spec(tmp_path / "s.yaml")
    assert spec.adsorbates[0].file == "co.xyz"
    run_campaign(spec, tmp_path / "c.db", progress=False)
    db = ase.db.connect(str(tmp_path / "c.db"))
    slab = next(db.select(kind="slab"))
    assert 3.9 < slab.lattice_a < 4.0 and slab.get("lattice_c") is None  # EMT Pt: 3.93 Å
    assert [r.gas for r in db.select(kind="gas")] == ["CO"]
    rows = list(db.select(kind="placement"))
    assert len(rows) == 4 and {r.adsorbate for r in rows} == {"myCO"}
    for r in rows:  # the teacher is the model: its single points repeat the energies
        assert r.teacher_energy == pytest.approx(r.energy, abs=1e-9)
        assert r.teacher_e_ads == pytest.approx(r.e_ads, abs=1e-9)
