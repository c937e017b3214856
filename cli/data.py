"""``tdn data``: build, import and inspect HDF5 training data sets."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click
from tdn_calc.cli._run import exit_interrupted

from tdn_calc.errors import TDNError
from tdn_calc.interrupts import sigterm_as_interrupt

from .data_catalysis import catalysis as _catalysis
from .data_catalysis import displaced as _displaced


@click.group()
def data() -> None:
    """Build, import and inspect HDF5 training data sets."""


@data.group()
def build() -> None:
    """Generate labelled data with a reference method."""


build.add_command(_catalysis)
build.add_command(_displaced)


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
    from tdn_calc.datagen.molecules.build import build_molecules
    from tdn_calc.datagen.molecules.label import BuildSettings

    smiles = None
    if smiles_file is not None:
        with open(smiles_file) as fh:
            smiles = [line.split()[0] for line in fh if line.strip()]
    settings = BuildSettings(subsample=subsample, rattles_per_sigma=rattles_per_sigma,
                             bad_start_steps=bad_start_steps)
    try:
        with sigterm_as_interrupt():
            summary = build_molecules(
                out, n_molecules=n_molecules, seed=seed, workers=workers, max_heavy=max_heavy,
                settings=settings, shard_size=shard_size,
                sources=tuple(s.strip() for s in sources.split(",") if s.strip()),
                smiles=smiles, progress=not no_progress,
            )
    except KeyboardInterrupt:
        exit_interrupted(f"the molecules finished so far are in {out}; the same command "
                         "resumes")
    except (TDNError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))


@data.command("import-ase")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output shard directory (extended when it exists).")
@click.option("--reference-method", required=True,
              help='The method that made the labels, e.g. "PBE (VASP)".')
@click.option("--group", default="file", show_default=True,
              help="Trajectory grouping: file, frame or info:<key>.")
@click.option("--shard-size", default=250, show_default=True, type=click.IntRange(1))
def import_ase_cmd(files, out, reference_method, group, shard_size) -> None:
    """Import ASE-readable FILES (extxyz, traj, db, ...) holding energies and forces."""
    from tdn_calc.data.importers import import_ase

    try:
        counts = import_ase(list(files), out, reference_method=reference_method, group=group,
                            shard_size=shard_size)
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(counts))


@data.command("import-pubchemqcr")
@click.argument("lmdb_path", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--stages", default="DFT_1st,DFT_2nd", show_default=True,
              help="Comma-separated stages: pm3, hf, DFT_1st, DFT_2nd.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many CIDs.")
@click.option("--shard-size", default=250, show_default=True, type=click.IntRange(1))
@click.option("--trusted", is_flag=True,
              help="Confirm the LMDB comes from a source you trust (its values are pickles, "
                   "which can run code when loaded).")
def import_pubchemqcr_cmd(lmdb_path, out, stages, limit, shard_size, trusted) -> None:
    """Import a PubChemQCR LMDB (gzip-compressed pickles; trusted sources only)."""
    if not trusted:
        raise click.UsageError("PubChemQCR values are pickles that can run code when loaded; "
                               "pass --trusted if this file comes from a source you trust")
    from tdn_calc.data.importers import import_pubchemqcr

    try:
        counts = import_pubchemqcr(lmdb_path, out, limit=limit, shard_size=shard_size,
                                   stages=tuple(s.strip() for s in stages.split(",")))
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(counts))


@data.command("info")
@click.argument("path", type=click.Path(exists=True))
def info_cmd(path) -> None:
    """Summarise a data set (an .h5 file or a shard directory)."""
    from tdn_calc.data.summary import summarize

    try:
        click.echo(json.dumps(summarize(path), indent=2))
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc


def _check_extend_options(old, grouping: str | None, train_only: str | None) -> None:
    """An extended split keeps the old file's grouping and pinned pattern; refuse others."""
    if grouping is not None and grouping != old.grouping:
        raise click.UsageError(f"--group-by {grouping} contradicts the --extend file, which is "
                               f"grouped by {old.grouping} (an extended split keeps its grouping)")
    if train_only is not None and train_only != old.train_only:
        raise click.UsageError(f"--train-only {train_only!r} contradicts the --extend file's "
                               f"pattern {old.train_only!r} (an extended split keeps it)")


@data.command("split")
@click.argument("path", type=click.Path(exists=True))
@click.option("--fractions", default="0.8,0.1,0.1", show_default=True,
              help="train,val,test fractions of the trajectories.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--extend", "extend_from", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Keep this split file's assignment and split only the "
              "trajectories it does not list (its own fractions and seed); needs --out.")
@click.option("--unseen-by", "unseen_by", type=click.Path(exists=True, dir_okay=False),
              multiple=True, help="Repeatable: write a validation split of the systems in "
              "none of these split files (built after their models were trained; replicas "
              "grouped, references matching their --train-only patterns left out; "
              "--fractions and --seed unused); needs --out.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the split (default: split-seed<seed>.json beside the data).")
@click.option("--group-by", "grouping", type=click.Choice(["trajectory", "system"]),
              default=None, help="'system' keeps all replicas of a system (identifiers "
              "differing only in their /rN tag) in one part.  [default: trajectory, or the "
              "--extend file's]")
@click.option("--train-only", default=None, metavar="REGEX",
              help="Trajectories whose identifier matches go to training, e.g. the references "
              "of adsorption energies: '/clean/|^gas/'.")
def split_cmd(path, fractions, seed, extend_from, unseen_by, out, grouping, train_only) -> None:
    """Split trajectories into train/val/test and save the split JSON beside the data.

    With --extend, a data set that grew after a model was trained gets a split in which
    every old trajectory keeps its part, so fine-tuning that model never sees a test molecule.
    With --unseen-by, the systems no model of the given splits saw become a validation set.
    """
    from tdn_calc.data import split as splits
    from tdn_calc.data.dataset import H5Dataset

    if extend_from is not None and out is None:
        raise click.UsageError("--extend needs --out (the old split file is never overwritten)")
    if unseen_by and (out is None or extend_from is not None):
        raise click.UsageError("--unseen-by needs --out and does not go with --extend")
    if unseen_by and (grouping is not None or train_only is not None):
        raise click.UsageError("--unseen-by groups by system and takes the references' "
                               "pattern from its split files: no --group-by / --train-only")
    read = [f for f in (extend_from, *unseen_by) if f is not None]  # split files read
    if out is not None and any(Path(out).resolve() == Path(f).resolve() for f in read):
        raise click.UsageError("--out must differ from the split files read (--extend, "
                               "--unseen-by): they are never overwritten")
    if (grouping == "system" or train_only is not None) and out is None:
        raise click.UsageError("--group-by system / --train-only need --out")
    try:
        ds = H5Dataset(path)
        fr = tuple(float(x) for x in fractions.split(","))
        if unseen_by:
            split = splits.unseen_split([splits.load_split(f) for f in unseen_by], ds)
        elif extend_from is not None:
            old = splits.load_split(extend_from)
            _check_extend_options(old, grouping, train_only)
            split = splits.extend_split(old, ds)
        elif out is None and grouping in (None, "trajectory") and train_only is None:
            split = splits.load_or_make_split(ds, path, fr, seed)
        else:
            split = splits.make_split(ds, fr, seed, grouping=grouping or "trajectory",
                                      train_only=train_only)
        if out is not None:
            split.save(out)
    except (TDNError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    counts = {name: len(idx) for name, idx in split.indices(ds).items()}
    click.echo(json.dumps({"file": str(out or splits.split_path(path, seed)),
                           "trajectories": {"train": len(split.train), "val": len(split.val),
                                            "test": len(split.test)},
                           "frames": counts}))
