"""``tdn data build catalysis``: teacher-relaxed fcc(111) slabs, bulk cells and gas molecules."""

from __future__ import annotations

import json
import logging

import click
from tdn_calc.cli._run import exit_interrupted
from tdn_calc.cli.teachers import teacher_options

from tdn_calc.errors import TDNError
from tdn_calc.interrupts import sigterm_as_interrupt
from tdn_calc.teachers import with_teacher_kwargs


def _names(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _slab_size(value: str) -> tuple[int, int, int]:
    """``"3x3x6"`` -> ``(3, 3, 6)``; anything else is a usage error."""
    parts = value.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise click.BadParameter(f"expected AxBxLAYERS such as 3x3x4, got {value!r}",
                                 param_hint="--slab-size")
    return int(parts[0]), int(parts[1]), int(parts[2])


@click.command("catalysis")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory of part-NNNNN.h5 shards (resumed when it exists).")
@teacher_options()
@click.option("--device", default="cpu", show_default=True, help="Device of the teacher.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="torch threads per worker.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--replicas", default=7, show_default=True, type=click.IntRange(1),
              help="Differently perturbed copies of each system (7 gives 1,659 in all).")
@click.option("--metals", default="Pt,Pd,Ni,Cu,Ag,Au", show_default=True)
@click.option("--adsorbates", default="H,O,N,C,OH,CO,CH3,H2O", show_default=True)
@click.option("--sites", default="top,bridge,fcc,hcp", show_default=True)
@click.option("--gas", default="H2,O2,N2,CO,H2O,CH4,NH3,OH,CH3", show_default=True,
              help="Gas-phase molecules (ASE g2 names); empty for none.")
@click.option("--optimizer", default="BFGS", show_default=True,
              type=click.Choice(["BFGS", "FIRE", "LBFGS"]))
@click.option("--fmax", default=0.05, show_default=True, type=click.FloatRange(min=1e-4),
              help="Force threshold, eV/Å.")
@click.option("--max-steps", default=200, show_default=True, type=click.IntRange(0))
@click.option("--subsample", default=1, show_default=True, type=click.IntRange(1),
              help="Keep every K-th relaxation frame (plus the first and the last).")
@click.option("--n-rattle", default=3, show_default=True, type=click.IntRange(0),
              help="Rattled copies of each relaxed structure (σ 0.05–0.15 Å).")
@click.option("--slab-size", default="3x3x4", show_default=True, metavar="AxBxLAYERS",
              help="Surface repeats and number of layers of the (111) slabs; another size than "
                   "3x3x4 is labelled Pt111-AxBxL/..., a system of its own.")
@click.option("--limit", default=None, type=click.IntRange(1),
              help="Only the first N systems (replica 0 comes first).")
@click.option("--shard-size", default=250, show_default=True, type=click.IntRange(1))
@click.option("--recipe", default="fcc111", show_default=True,
              type=click.Choice(["fcc111", "coverage2", "quarter"]),
              help="fcc111: the first recipe (options above). coverage2: 10 metals, 5 facets, "
                   "alloys, strained slabs, 25 adsorbates, co-adsorption, bulk, gas, in an "
                   "interleaved order. quarter: p(2x2) cells (a quarter monolayer) of the "
                   "close-packed facets and (100), clean and with each adsorbate. Both have "
                   "their own defaults (3 rounds, --max-steps 60, all metals/adsorbates/gas), "
                   "of which --replicas, --metals, --adsorbates, --gas, --max-steps, --fmax, "
                   "--n-rattle, --optimizer, --subsample and --seed may be overridden.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def catalysis(ctx, out, teacher, teacher_kwargs, device, workers, threads, seed, replicas, metals,
              adsorbates, sites, gas, optimizer, fmax, max_steps, subsample, n_rattle, slab_size,
              limit, shard_size, recipe, no_progress) -> None:
    """Relax slabs (with adsorbates), strained bulk cells and gas molecules with a teacher
    potential; write trajectory and rattled frames (distilled data, not DFT)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from tdn_calc.datagen.catalysis.build import build_catalysis
    from tdn_calc.datagen.catalysis.systems import CatalysisConfig

    try:
        teacher = with_teacher_kwargs(teacher, teacher_kwargs)
        size = _slab_size(slab_size)
        given = {k: v for k, v in ctx.params.items()
                 if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
        config = _coverage_config(given) if recipe != "fcc111" else CatalysisConfig(
            metals=_names(metals), adsorbates=_names(adsorbates), sites=_names(sites),
            gas_molecules=_names(gas), replicas=replicas, seed=seed, optimizer=optimizer,
            fmax=fmax, max_steps=max_steps, subsample=subsample, n_rattle=n_rattle,
            slab_size=size,
            slab_tag="" if size == CatalysisConfig.slab_size else f"-{slab_size.lower()}",
        )
        with sigterm_as_interrupt():
            summary = build_catalysis(out, teacher=teacher, config=config, workers=workers,
                                      device=device, threads=threads, limit=limit,
                                      shard_size=shard_size, progress=not no_progress)
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary.format())
    click.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
    if summary.interrupted:
        exit_interrupted(f"{summary.written} trajectories written to {out}; the same command "
                         "resumes")


def _coverage_config(given: dict):
    """CoverageConfig from the explicitly given options; the others keep its defaults."""
    from tdn_calc.datagen.catalysis.coverage import CoverageConfig

    lists = {"metals": "metals", "adsorbates": "adsorbates", "gas": "gas_molecules"}
    plain = ("replicas", "seed", "optimizer", "fmax", "max_steps", "subsample", "n_rattle")
    unused = sorted(set(given) & {"sites", "slab_size"})
    if unused:
        raise click.UsageError(f"--recipe {given['recipe']} takes no {', '.join(unused)}")
    return CoverageConfig(recipe=given["recipe"],
                          **{f: _names(given[k]) for k, f in lists.items() if k in given},
                          **{k: given[k] for k in plain if k in given})


@click.command("displaced")
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@teacher_options(help_text="The teacher that labelled DATA (its frames must share one "
                           "reference).")
@click.option("--device", default="cpu", show_default=True, help="Device of the teacher.")
@click.option("--per-trajectory", default=2, show_default=True, type=click.IntRange(1),
              help="Displaced frames per source trajectory.")
@click.option("--height", nargs=2, type=float, default=None, metavar="MIN MAX",
              help="Range of the vertical shift, Å (negative: towards the slab) "
                   "[default: -0.6 0.8].")
@click.option("--variant", default=None, metavar="NAME",
              help="Name of a further pass over the same sources (lower-case letters, '_'): "
                   "stored as <label>:displaced_NAME.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--limit", default=None, type=click.IntRange(1),
              help="Only the first N source trajectories of the seeded order.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def displaced(data, teacher, teacher_kwargs, device, per_trajectory, height, variant, seed, limit,
              no_progress) -> None:
    """Add teacher-labelled frames of relaxed adsorbates moved over their slab (other sites,
    heights, tilts) to the catalysis data set DATA, as <label>:displaced trajectories
    (<label>:displaced_NAME with --variant NAME)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from tdn_calc.datagen.catalysis.displaced import DisplaceSettings, build_displaced

    try:
        teacher = with_teacher_kwargs(teacher, teacher_kwargs)
        with sigterm_as_interrupt():
            settings = DisplaceSettings(per_trajectory=per_trajectory,
                                        **({"height": tuple(height)} if height else {}))
            summary = build_displaced(data, teacher=teacher, device=device, seed=seed,
                                      limit=limit, variant=variant, settings=settings,
                                      progress=not no_progress)
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
    if summary.interrupted:
        exit_interrupted(f"{summary.written} trajectories added to {data}; the same command "
                         "resumes")
