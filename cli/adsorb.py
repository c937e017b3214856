"""``tdn adsorb``: adsorption energies of an adsorbate on every site of a slab.

Writes ``<outdir>/adsorption.json`` (energies, reference scheme, model), ``adsorption.png``
(bar chart) and ``structures.extxyz`` (relaxed slab, slab+adsorbate per site, gas
references). Exit status: 0 all relaxations converged, 3 some did not, 1 error, 2 usage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from tdn_calc.cli._run import run_command

from tdn_calc.relax.options import DEFAULT_BATCH_SIZE


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("slab")
@click.argument("adsorbate")
@click.option("-m", "--model", default="auto", show_default=True,
              help="Checkpoint path, registered model name, 'auto', or 'emt' (ASE's EMT, for "
                   "demonstrations: Al Cu Ag Au Ni Pd Pt with H C N O).")
@click.option("-d", "--device", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--fmax", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="eV/Å.")
@click.option("--steps", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--fix-bottom-layers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Fixed bottom layers of the slab.")
@click.option("--sites", help="Comma-separated site names to compute (default: all).")
@click.option("--vacuum", type=float, default=10.0, show_default=True,
              help="Vacuum (Å) on each side of a slab built from a spec.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False),
              help="Output folder [default: adsorb_<adsorbate>_<slab>].")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE,
              show_default=True)
def adsorb(slab, adsorbate, model, device, dtype, fmax, steps, fix_bottom_layers, sites, vacuum,
           outdir, batch_size) -> None:  # fmt: skip
    """Adsorb ADSORBATE (element, molecule name like CO/OH, or file) on every site of SLAB
    (a file, or a spec like fcc111:Pt:3x3x4) and report adsorption energies.

    E_ads = E(slab+ads) - E(slab) - sum of gas references (CO vs CO(g), O vs 1/2 O2(g),
    H vs 1/2 H2(g), OH vs 1/2 O2 + 1/2 H2, ...), all relaxed with the same model.
    """
    run_command(_run, slab, adsorbate, model, device, dtype, fmax, steps, fix_bottom_layers,
                    sites, vacuum, outdir, batch_size)  # fmt: skip


def _run(slab_spec, ads_spec, model_spec, device, dtype, fmax, steps, fix_layers, sites, vacuum,
         outdir, batch_size) -> int:  # fmt: skip
    from ase.build import molecule
    from tdn_calc.cli.models import _table

    from tdn_calc import adsorption
    from tdn_calc.slab import fix_bottom_layers
    from tdn_calc.structure_io import write_structures

    start = time.perf_counter()
    slab = adsorption.load_slab(slab_spec, vacuum)
    ads = adsorption.build_adsorbate(ads_spec)
    if fix_layers:
        fix_bottom_layers(slab, fix_layers)
    slab_name = Path(slab_spec).stem if Path(slab_spec).is_file() else slab_spec
    gases = [molecule(g) for g in adsorption.reference_terms(ads)]
    relax_many, model_info = adsorption.make_relaxer(
        model_spec, [slab, ads, *gases], device=device, dtype=dtype, fmax=fmax, steps=steps,
        batch_size=batch_size,
    )  # fmt: skip
    wanted = [s.strip() for s in sites.split(",")] if sites else None
    result = adsorption.adsorption_energies(slab, ads, relax_many, sites=wanted,
                                            slab_label=slab_name)  # fmt: skip
    safe = "".join(c if c.isalnum() else "_" for c in f"{result.adsorbate}_{slab_name}")
    out = Path(outdir or f"adsorb_{safe}")
    doc = {
        **result.to_dict(),
        "model": model_info,
        "fmax": fmax,
        "steps": steps,
        "fixed_bottom_layers": fix_layers,
        "time_s": round(time.perf_counter() - start, 2),
    }
    from tdn_calc.fileio import atomic_write

    with atomic_write(out / "adsorption.json", "w") as handle:
        json.dump(doc, handle, indent=2, default=float)
    adsorption.plot(result, out / "adsorption.png")
    frames = list(result.others)
    for f in [*frames, *(s.atoms for s in result.sites)]:
        f.info.pop("adsorbate_info", None)  # a dict: extxyz cannot store it
    for s in result.sites:
        s.atoms.info.update(role=f"site {s.site}", adsorption_energy=s.adsorption_energy)
        frames.append(s.atoms)
    write_structures(out / "structures.extxyz", frames)
    rows = [[s.site, s.final_site, f"{s.adsorption_energy:.3f}", f"{s.energy:.3f}",
             str(s.n_steps), "yes" if s.converged else "NO"] for s in result.sites]  # fmt: skip
    click.echo(_table(["site", "final site", "E_ads/eV", "E/eV", "steps", "converged"], rows))
    refs = " + ".join(f"{c:g} {g}" for g, c in result.reference_terms.items())
    best = result.most_stable
    click.echo(
        f"{result.adsorbate} on {slab_name}: most stable site {best.site} "
        f"(E_ads = {best.adsorption_energy:.3f} eV vs {refs}); model {model_info['name']}; "
        f"results in {out}/"
    )
    if not result.converged:
        click.echo("warning: some relaxations did not converge (see adsorption.json)", err=True)
    return 0 if result.converged else 3
