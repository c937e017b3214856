"""``tdn data``: build, import and inspect HDF5 training data sets."""

from __future__ import annotations

import json
import logging
import os

import click

from tdn_calc.errors import TDNError


@click.group()
def data() -> None:
    """Build, import and inspect HDF5 training data sets."""


@data.group()
def build() -> None:
    """Generate labelled data with a reference method."""


@build.command("molecules")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output directory of part-NNNNN.h5 shards (resumed when it exists).")
@click.option("--n-molecules", default=5000, show_default=True, type=click.IntRange(1),
              help="Target number of molecules in the directory, counting earlier runs.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1))
@click.option("--max-heavy", default=15, show_default=True, type=click.IntRange(1),
              help="Largest number of heavy atoms.")
@click.option("--subsample", default=5, show_default=True, type=click.IntRange(1),
              help="Keep every K-th relaxation step (plus the first and the last).")
@click.option("--rattles-per-sigma", default=2, show_default=True, type=click.IntRange(0))
@click.option("--bad-start-steps", default=40, show_default=True, type=click.IntRange(0))
@click.option("--shard-size", default=250, show_default=True, type=click.IntRange(1),
              help="Molecules per shard file.")
@click.option("--sources", default="nci,freesolv,solubility", show_default=True,
              help="Comma-separated built-in sources: nci, freesolv, solubility, "
              "chembl_samples, chembl_drugs.")
@click.option("--smiles-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use the SMILES (first column) of this file instead of --sources.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def build_molecules_cmd(out, n_molecules, seed, workers, max_heavy, subsample,
                        rattles_per_sigma, bad_start_steps, shard_size, sources, smiles_file,
                        no_progress) -> None:
    """GFN2-xTB (tblite) relaxation trajectories, rattled and strained frames of small
    organic molecules."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from tdn_calc.data.build import build_molecules
    from tdn_calc.data.builder import BuildSettings

    smiles = None
    if smiles_file is not None:
        with open(smiles_file) as fh:
            smiles = [line.split()[0] for line in fh if line.strip()]
    settings = BuildSettings(subsample=subsample, rattles_per_sigma=rattles_per_sigma,
                             bad_start_steps=bad_start_steps)
    try:
        summary = build_molecules(
            out, n_molecules=n_molecules, seed=seed, workers=workers, max_heavy=max_heavy,
            settings=settings, shard_size=shard_size,
            sources=tuple(s.strip() for s in sources.split(",") if s.strip()),
            smiles=smiles, progress=not no_progress,
        )
    except (TDNError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
