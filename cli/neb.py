"""``tdn neb``: minimum-energy path between two structures (nudged elastic band).

Writes the path (extxyz), ``<stem>.json`` (barrier, reaction energy, image energies, model)
and ``<stem>.png`` (energy profile). Exit status: 0 converged, 3 not converged, 1 error,
2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from tdn_calc.cli._run import run_command


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("initial", type=click.Path(exists=True, dir_okay=False))
@click.argument("final", type=click.Path(exists=True, dir_okay=False))
@click.option("-n", "--images", "n_images", type=click.IntRange(min=3), default=7,
              show_default=True, help="Images in the band, end points included.")
@click.option("--climb", is_flag=True, help="Climbing image NEB (saddle point).")
@click.option("-m", "--model", default="auto", show_default=True,
              help="Checkpoint path, registered model name, 'auto', or 'emt' (ASE's EMT).")
@click.option("-d", "--device", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--fmax", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="NEB force threshold, eV/Å.")
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--optimizer", type=click.Choice(["FIRE", "BFGS"], case_sensitive=False),
              default="FIRE", show_default=True)
@click.option("--no-relax-endpoints", is_flag=True, help="Use the end points as given.")
@click.option("--fix-bottom-layers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fix the N lowest atomic layers in every image (slabs).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="neb_path.extxyz",
              show_default=True, help="Path file; the .json and .png share its stem.")
def neb(initial, final, n_images, climb, model, device, dtype, fmax, steps, optimizer,
        no_relax_endpoints, fix_bottom_layers, output) -> None:  # fmt: skip
    """Nudged elastic band from INITIAL to FINAL (same atoms, same order; IDPP interpolation)."""
    run_command(_run, initial, final, n_images, climb, model, device, dtype, fmax, steps,
                    optimizer, not no_relax_endpoints, fix_bottom_layers, output)  # fmt: skip


def _run(initial_path, final_path, n_images, climb, model_spec, device, dtype, fmax, steps,
         optimizer, relax_endpoints, fix_layers, output) -> int:  # fmt: skip
    from tdn_calc.fileio import atomic_write
    from tdn_calc.neb import calculator_factory, plot_profile, run_neb
    from tdn_calc.slab import fix_bottom_layers
    from tdn_calc.structure_io import check_output_path, read_structures, write_structures

    inputs = [initial_path, final_path]
    out = Path(output)
    for path in (out, out.with_suffix(".json"), out.with_suffix(".png")):
        check_output_path(str(path), inputs, "-o/--output")
    initial, final = (read_structures([p])[-1].atoms for p in inputs)
    if fix_layers:
        fix_bottom_layers(initial, fix_layers)
    factory, model_info = calculator_factory(model_spec, [initial, final], device, dtype)
    result = run_neb(initial, final, factory, n_images=n_images, climb=climb, fmax=fmax,
                     steps=steps, optimizer=optimizer,
                     relax_endpoints=relax_endpoints)  # fmt: skip
    write_structures(out, result.images, "extxyz")
    doc = {"initial": initial_path, "final": final_path, "model": model_info,
           "fmax": fmax, "optimizer": optimizer, **result.to_dict()}  # fmt: skip
    with atomic_write(out.with_suffix(".json"), "w") as handle:
        json.dump(doc, handle, indent=2, default=float)
        handle.write("\n")
    plot_profile(result, out.with_suffix(".png"))
    rel = result.energies - result.energies[0]
    click.echo("image  path/Å  E-E0/eV")
    for k, (x, e) in enumerate(zip(result.distances, rel, strict=True)):
        mark = ""
        if k == result.highest_image:
            mark = "  <- highest" + (" (climbing)" if climb else "")
        click.echo(f"{k:5d}  {x:6.3f}  {e:8.4f}{mark}")
    click.echo(
        f"barrier {result.barrier:.4f} eV (reverse {result.reverse_barrier:.4f} eV), reaction "
        f"energy {result.reaction_energy:.4f} eV; "
        f"{'converged' if result.converged else 'NOT converged'}"
        f" in {result.n_steps} steps (fmax {result.fmax:.4f} eV/Å); model {model_info['name']}; "
        f"-> {out}, {out.with_suffix('.json')}, {out.with_suffix('.png')}"
    )
    if not result.converged:
        click.echo(f"warning: band not converged: fmax {result.fmax:.4f} eV/Å > {fmax}", err=True)
    return 0 if result.converged else 3
