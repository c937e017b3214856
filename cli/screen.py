"""``tdn screen SPEC.yaml``: an adsorption screening campaign (docs/campaigns.md).

Relaxes every adsorbate of the spec on every surface (distinct sites plus random
placements) into an ASE database, then prints the lowest valid adsorption energy (eV) per
(surface, adsorbate) and writes ``<out>/summary.csv``, ``<out>/placements.csv`` and, with
matplotlib, ``<out>/heatmap.png``. Re-running skips the rows already in the database.
Exit status: 0 done, 1 error, 2 usage.
"""

from __future__ import annotations

from pathlib import Path

import click
from tdn_calc.cli._run import run_command


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--db",
    "db_path",
    help="ASE database: a file (SQLite) or a postgresql:// URL "
    "[default: <spec stem>.db next to the spec].",
)
@click.option(
    "-o",
    "--outdir",
    type=click.Path(file_okay=False),
    help="Folder of the CSV files and heat map [default: <spec stem>_results].",
)
@click.option("--force", is_flag=True, help="Recompute every row (also of another spec).")
@click.option(
    "--dask-workers",
    type=click.IntRange(min=1),
    help="Run the tasks on a local Dask cluster of N worker processes.",
)
@click.option("--scheduler", help="Run the tasks on the Dask scheduler at this address.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def screen(spec_file, db_path, outdir, force, dask_workers, scheduler, no_progress) -> None:
    """Run the screening campaign SPEC_FILE (YAML) and summarise it."""
    run_command(_run, spec_file, db_path, outdir, force, dask_workers, scheduler, not no_progress)


def _run(spec_file, db_path, outdir, force, dask_workers, scheduler, progress) -> int:
    from tdn_calc import campaigns
    from tdn_calc.campaigns import store
    from tdn_calc.campaigns.executors import make_executor

    if dask_workers and scheduler:
        raise click.UsageError("give --dask-workers or --scheduler, not both")
    spec = campaigns.load_spec(spec_file)
    path = Path(spec_file)
    db_path = db_path or str(path.with_suffix(".db"))
    out = Path(outdir or path.with_name(f"{path.stem}_results"))
    executor = make_executor(dask_workers, scheduler)
    try:
        stats = campaigns.run_campaign(
            spec,
            db_path,
            force=force,
            executor=executor,
            progress=progress,
            log=lambda m: click.echo(m, err=True),
        )
    finally:
        executor.close()
    calls = f", {stats.teacher_calls} teacher calls" if stats.teacher_calls else ""
    click.echo(
        f"{stats.written} rows written, {stats.skipped} already done ({db_path}, "
        f"spec hash {spec.hash()}, engine {spec.engine}{calls})"
    )
    db = store.connect(db_path)
    summaries = campaigns.summarize(db)
    click.echo(campaigns.table(summaries))
    out.mkdir(parents=True, exist_ok=True)
    campaigns.write_summary_csv(summaries, out / "summary.csv")
    campaigns.write_placements_csv(db, out / "placements.csv")
    written = ["summary.csv", "placements.csv"]
    try:
        campaigns.heatmap(summaries, out / "heatmap.png")
        written.append("heatmap.png")
    except ImportError:
        click.echo("no heat map: matplotlib missing (pip install 'tdn-calc[plot]')", err=True)
    click.echo(f"wrote {', '.join(written)} in {out}")
    return 0
