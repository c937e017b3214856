"""``tdn-relax``: relax structures with a TDN model (see docs/cli.md).

Exit status: 0 every structure converged; 3 some did not converge (or diverged); 1 an error
(bad input file, model, ...); 2 a usage error (bad option, unknown model name); 130 Ctrl-C
(finished structures and a partial report are written first).
"""

from __future__ import annotations

import sys
import time

import click
from tdn_calc.cli._run import run_command

from tdn_calc.interrupts import raise_if_interrupted, sigterm_as_interrupt

_OPTIMIZERS = ["auto", "FIRE", "BFGS", "LBFGS", "BFGSLineSearch"]
_MAX_TABLE_ROWS = 100
_SAVE_EVERY_S = 300.0  # finished structures are written at least this often


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[dict]) -> str:
    from tdn_calc.cli.models import _table as table

    shown = rows if len(rows) <= _MAX_TABLE_ROWS else [r for r in rows if not r["converged"]]
    body = [
        [
            r["structure"],
            str(r["atoms"]),
            str(r["steps"]),
            _fmt(r["energy"], ".4f"),
            _fmt(r["fmax"], ".4f"),
            ("yes" if r["converged"] else "NO")
            + (" (resumed)" if r["status"] == "resumed" else ""),
            _fmt(r["time"], ".2f"),
        ]
        for r in shown
    ]
    headers = ["structure", "atoms", "steps", "energy/eV", "fmax/eV/Å", "converged", "time/s"]
    if any(r.get("extrapolation_max") is not None for r in rows):  # the model has a summary
        headers.append("extrap. max (atoms > 1)")
        for line, r in zip(body, shown, strict=True):
            n = r.get("extrapolating_atoms")
            line.append("-" if n is None else f"{r['extrapolation_max']:.2f} ({n})")
    text = table(headers, body)
    if len(shown) < len(rows):
        text += f"\n({len(rows) - len(shown)} converged structures not listed; see the report)"
    return text


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="One output file for all structures, any format ASE writes. "
                   "[default: <stem>_relaxed.extxyz beside each input]")
@click.option("-m", "--model", default="auto", show_default=True,
              help="Checkpoint path, registered model name, or 'auto' (a registered model "
                   "covering all elements).")
@click.option("-d", "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--fmax", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="Force convergence threshold, eV/Å.")
@click.option("--steps", type=click.IntRange(min=0), default=500, show_default=True,
              help="Maximum optimizer steps per structure.")
@click.option("--optimizer", type=click.Choice(_OPTIMIZERS, case_sensitive=False), default="auto",
              show_default=True,
              help="auto: BFGS for structures of up to 300 atoms (ends nearest the minimum at a "
                   "given --fmax), FIRE for larger ones. auto, FIRE and BFGS run batched.")
@click.option("--cell-filter", type=click.Choice(["none", "frechet", "exp"]), default="none",
              show_default=True, help="Relax the cell too (3D-periodic structures).")
@click.option("--fix-symmetry", is_flag=True, help="Keep the space group (spglib).")
@click.option("--fix-bottom-layers", type=click.IntRange(min=1), metavar="N",
              help="Fix the N lowest atomic layers (slabs).")
@click.option("--fix-below", type=float, metavar="Z", help="Fix atoms with z < Z Å.")
@click.option("--trajectory", type=click.Path(dir_okay=False),
              help="Write the optimization path (one file per structure when several).")
@click.option("--loginterval", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trajectory/log interval, steps.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a JSON report here.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Structures relaxed together by the batched optimizer; 1 = ASE one by one.")
@click.option("--resume", is_flag=True, help="Skip structures already in the output.")
@click.option("--polish", is_flag=True,
              help="After converging, continue in float64 to --polish-fmax.")
@click.option("--polish-fmax", type=click.FloatRange(min=0, min_open=True), default=0.001,
              show_default=True, help="Force threshold of the float64 polish, eV/Å.")
@click.option("--plot", is_flag=False, flag_value="", default=None, metavar="[PNG]",
              help="Write energy and fmax vs step of every structure to PNG "
                   "[default name: <first output stem>.png].")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option("-v", "--verbose", is_flag=True, help="Print optimizer steps.")
def main(inputs, output, model, device, dtype, fmax, steps, optimizer, cell_filter, fix_symmetry,
         fix_bottom_layers, fix_below, trajectory, loginterval, report, batch_size, resume, polish,
         polish_fmax, plot, quiet, verbose) -> None:  # fmt: skip
    """Relax the structures in INPUT files (any format ASE reads, one or many per file).

    Exit status: 0 all converged, 3 some not converged, 1 error, 2 usage error, 130 Ctrl-C.
    """
    if fix_bottom_layers is not None and fix_below is not None:
        raise click.UsageError("give --fix-bottom-layers or --fix-below, not both")
    if polish and polish_fmax > fmax:
        raise click.UsageError(f"--polish-fmax ({polish_fmax}) must not exceed --fmax ({fmax})")
    from tdn_calc.relax_job import RelaxSettings

    settings = RelaxSettings(fmax=fmax, steps=steps, optimizer=optimizer, cell_filter=cell_filter,
                             fix_symmetry=fix_symmetry, fix_bottom_layers=fix_bottom_layers,
                             fix_below=fix_below, trajectory=trajectory, loginterval=loginterval,
                             batch_size=batch_size, polish=polish,
                             polish_fmax=polish_fmax)  # fmt: skip
    run_command(_run, list(inputs), output, model, device, dtype, settings, report, resume,
                    quiet, verbose, plot)  # fmt: skip


def _run(inputs, output, model_spec, device, dtype, settings, report, resume, quiet, verbose,
         plot=None):  # fmt: skip
    from tdn_calc import distributed, relax_job
    from tdn_calc.device import resolve_device
    from tdn_calc.structure_io import check_output_path, read_structures

    start = time.perf_counter()
    rank, size = distributed.world()
    say = (lambda msg: click.echo(msg, err=True)) if not quiet and rank == 0 else (lambda m: None)
    inputs = list(dict.fromkeys(inputs))  # a file given twice is relaxed once
    for path, what in ((report, "--report"), (settings.trajectory, "--trajectory")):
        if path:
            check_output_path(path, inputs, what)
    records = read_structures(inputs)
    plans = relax_job.plan_outputs(records, inputs, output)
    if plot is not None:
        plot = plot or str(plans[0].path.with_suffix(".png"))
        check_output_path(plot, inputs, "--plot")
    for message in relax_job.prepare(records, settings):
        say(f"warning: {message}")
    done: dict = {}
    todo = records
    if resume:
        for plan in plans:
            found = relax_job.find_resumed(plan)
            for r in plan.records:
                if r.key in found:
                    done[r.key] = relax_job.Outcome(r, found[r.key], "resumed")
        todo = [r for r in records if r.key not in done]
        say(f"resume: {len(done)} structure(s) already in the output, {len(todo)} to relax")
    dev = resolve_device(device)
    if size > 1 and dev.type == "cuda" and dev.index is None:
        dev = resolve_device(f"cuda:{distributed.local_rank()}")
    jobs = []  # (model, its info, the structures it relaxes)
    for spec, group in relax_job.model_groups(model_spec, todo or records):
        model, info = relax_job.load_job_model(spec, [r.atoms for r in group], str(dev), dtype)
        pending = [r for r in group if r.key not in done]
        relax_job.check_structures(pending, model.elements)
        for message in relax_job.limit_messages(pending, relax_job.model_limits(info)):
            say(f"warning: {message}")
        if model_spec.lower() == "auto":
            info["name"] = f"{spec} (auto)"
            info["structures"] = [r.label for r in group]
        jobs.append((model, info, pending))
    model_info = jobs[0][1] if len(jobs) == 1 else {
        "name": "auto, per structure", "models": [info for _, info, _ in jobs]}
    if len(jobs) > 1:
        for _, info, group in jobs:
            say(f"--model auto: {info['name'].removesuffix(' (auto)')} for {len(group)} "
                "structure(s)")
    loaded = time.perf_counter()
    n_mine = sum(len(group[rank::size]) for _, _, group in jobs)

    from tqdm import tqdm

    from tdn_calc.calculator import TDNCalculator

    bar = tqdm(total=n_mine, unit="structure", file=sys.stderr,
               disable=quiet or verbose or n_mine < 2 or rank != 0)  # fmt: skip
    finished: dict = {}

    last_save = [time.perf_counter()]

    def on_done(outcome):
        finished[outcome.record.key] = outcome
        bar.update(1)
        if size == 1 and time.perf_counter() - last_save[0] > _SAVE_EVERY_S:
            relax_job.write_outputs(plans, {**done, **finished})  # survive a crash/kill
            last_save[0] = time.perf_counter()
        raise_if_interrupted()  # a SIGTERM whose exception was swallowed

    interrupted = False
    try:
        with sigterm_as_interrupt():
            for model, _, group in jobs:
                relax_job.run(group[rank::size], settings, model,
                              lambda model=model: TDNCalculator(model), on_done,
                              log=(lambda m: click.echo(m, err=True)) if verbose else None)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    relaxed = time.perf_counter()
    for part in distributed.all_gather(finished):
        done.update(part)
    rows = [done[r.key].row() for r in records if r.key in done]
    if rank == 0:
        relax_job.write_outputs(plans, done)
        if report:
            relax_job.write_report(report, relax_job.build_report(
                inputs=inputs, plans=plans, model_info=model_info, settings=settings, rows=rows,
                total=len(records), interrupted=interrupted,
                timings={"load": loaded - start, "relax": relaxed - loaded,
                         "total": time.perf_counter() - start},
                extra={"world_size": size, "batched": settings.batched(todo)},
            ))  # fmt: skip
        if plot:
            shown = relax_job.write_plot(plot, [done[r.key] for r in records if r.key in done],
                                         settings)  # fmt: skip
            say(f"plot of {shown} relaxation(s) -> {plot}")
    distributed.shutdown()
    c = relax_job.counts(rows, len(records))
    if not quiet and rank == 0:
        if rows:
            click.echo(_table(rows))
        for r in rows:
            if not r["converged"]:
                polished = str(r["reason"]).startswith("polish")
                target = settings.polish_fmax if polished else settings.fmax
                say(f"warning: {r['structure']} not converged: fmax {_fmt(r['fmax'], '.4f')} "
                    f"eV/Å, target {target} eV/Å ({r['reason']})")  # fmt: skip
        for r in rows:
            if r.get("extrapolating_atoms"):
                say(f"warning: {r['structure']}: {r['extrapolating_atoms']} atom(s) outside the "
                    f"model's training data (max extrapolation score "
                    f"{r['extrapolation_max']:.2f} > 1, or closer than any training pair); "
                    "treat its results with caution")  # fmt: skip
        where = ", ".join(str(p.path) for p in plans)
        click.echo(
            f"{c['finished']}/{c['total']} structures: {c['converged']} converged, "
            f"{c['not_converged']} not converged"
            + (f", {c['resumed']} resumed" if c["resumed"] else "")
            + (f", {c['extrapolating']} extrapolating" if c["extrapolating"] else "")
            + f" -> {where} ({time.perf_counter() - start:.1f} s)"
        )
        if interrupted:
            say("interrupted: finished structures were written; rerun with --resume to continue")
    if interrupted:
        return relax_job.EXIT_INTERRUPTED
    return relax_job.EXIT_OK if c["not_converged"] == 0 else relax_job.EXIT_NOT_CONVERGED


if __name__ == "__main__":
    main()
