"""``tdn-relax``: relax structures with a TDN model (see docs/cli.md).

Exit status: 0 every structure converged (and, with ``--verify``, was verified); 3 some did
not converge (or diverged) or failed the teacher's ``--verify-fmax``; 1 an error (bad input
file, model, teacher, ...); 2 a usage error (bad option, unknown model name); 130 Ctrl-C
(finished structures and a partial report are written first).
"""

from __future__ import annotations

import time

import click
from tdn_calc.cli._run import run_command

from tdn_calc.relax.options import ASE_OPTIMIZERS, BFGS_MAX_ATOMS, DEFAULT_BATCH_SIZE
from tdn_calc.relax.teacher import FINISH_WHEN, VERIFY_FMAX_FACTOR, default_verify_fmax

_OPTIMIZERS = ["auto", *ASE_OPTIMIZERS]
_MAX_TABLE_ROWS = 100


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[dict]) -> str:
    from tdn_calc.cli.models import _table as table

    shown = rows if len(rows) <= _MAX_TABLE_ROWS else [
        r for r in rows if not r["converged"] or r.get("verified") is False]
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
        headers.append("extrap. max (uncertain atoms)")
        for line, r in zip(body, shown, strict=True):
            n = r.get("extrapolating_atoms")
            line.append("-" if n is None else f"{r['extrapolation_max']:.2f} ({n})")
    if any(r.get("engine", "student") != "student" for r in rows):
        headers.append("engine (teacher steps)")
        for line, r in zip(body, shown, strict=True):
            line.append(f"{r['engine']} ({r['teacher_steps']})")
    if any(r.get("verified") is not None for r in rows):
        headers.append("teacher fmax/eV/Å")
        for line, r in zip(body, shown, strict=True):
            line.append(_fmt(r["teacher_fmax"], ".4f")
                        + ("" if r["verified"] is None else " ok" if r["verified"] else " NO"))
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
              help=f"auto: BFGS for structures of up to {BFGS_MAX_ATOMS} atoms (ends nearest the "
                   "minimum at a given --fmax), FIRE for larger ones. auto, FIRE and BFGS run "
                   "batched.")
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
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE,
              show_default=True,
              help="Structures relaxed together by the batched optimizer; 1 = ASE one by one.")
@click.option("--resume", is_flag=True, help="Skip structures already in the output.")
@click.option("--polish", is_flag=True,
              help="After converging, continue in float64 to --polish-fmax.")
@click.option("--polish-fmax", type=click.FloatRange(min=0, min_open=True), default=0.001,
              show_default=True, help="Force threshold of the float64 polish, eV/Å.")
@click.option("--plot", is_flag=False, flag_value="", default=None, metavar="[PNG]",
              help="Write energy and fmax vs step of every structure to PNG "
                   "[default name: <first output stem>.png].")
@click.option("--verify", metavar="TEACHER",
              help="One teacher single point at every final structure (sevenn-0, gfn2-xtb, "
                   "emt, ... `tdn teachers list`): teacher_energy, teacher_fmax, verified.")
@click.option("--verify-fmax", type=click.FloatRange(min=0, min_open=True), metavar="F",
              help=f"verified = teacher fmax <= F eV/Å (fixed atoms excluded). "
                   f"[default: {VERIFY_FMAX_FACTOR:g} x --fmax]")
@click.option("--finish", metavar="TEACHER",
              help="Continue from the model's minimum with this teacher (same --fmax, --steps, "
                   "constraints, cell filter), so the final geometry is the teacher's; "
                   "structures no TDN model covers are relaxed by the teacher alone.")
@click.option("--finish-when", type=click.Choice(FINISH_WHEN), default="uncertain",
              show_default=True,
              help="Which structures --finish continues: uncertain (atoms the model does not "
                   "know, or not converged), unverified (teacher fmax > --verify-fmax), "
                   "uncertain-or-unverified (uncertain; the others get the teacher single "
                   "point and are finished above --verify-fmax), always.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option("-v", "--verbose", is_flag=True, help="Print optimizer steps.")
def main(inputs, output, model, device, dtype, fmax, steps, optimizer, cell_filter, fix_symmetry,
         fix_bottom_layers, fix_below, trajectory, loginterval, report, batch_size, resume, polish,
         polish_fmax, plot, verify, verify_fmax, finish, finish_when, quiet,
         verbose) -> None:  # fmt: skip
    """Relax the structures in INPUT files (any format ASE reads, one or many per file).

    Exit status: 0 all converged (and verified), 3 some not converged or not verified,
    1 error, 2 usage error, 130 Ctrl-C.
    """
    if fix_bottom_layers is not None and fix_below is not None:
        raise click.UsageError("give --fix-bottom-layers or --fix-below, not both")
    if polish and polish_fmax > fmax:
        raise click.UsageError(f"--polish-fmax ({polish_fmax}) must not exceed --fmax ({fmax})")
    from tdn_calc.relax.job import RelaxJob, RelaxSettings

    settings = RelaxSettings(fmax=fmax, steps=steps, optimizer=optimizer, cell_filter=cell_filter,
                             fix_symmetry=fix_symmetry, fix_bottom_layers=fix_bottom_layers,
                             fix_below=fix_below, trajectory=trajectory, loginterval=loginterval,
                             batch_size=batch_size, polish=polish, polish_fmax=polish_fmax,
                             verify=verify, verify_fmax=verify_fmax, finish=finish,
                             finish_when=finish_when)  # fmt: skip
    job = RelaxJob(list(inputs), settings, output=output, model=model, device=device, dtype=dtype,
                   report=report, resume=resume, plot=plot, say=_silent if quiet else _echo,
                   log=_echo if verbose else None, progress=not (quiet or verbose))  # fmt: skip
    run_command(_run, job, quiet)


def _echo(message: str) -> None:
    """Print ``message`` on stderr."""
    click.echo(message, err=True)


def _silent(message: str) -> None:
    """Print nothing (``--quiet``)."""


def _run(job, quiet: bool) -> int:
    """Run ``job``, print its table, warnings and summary; return the exit status."""
    from tdn_calc.uncertainty import SIGNAL_WORDS  # torch is loaded by the job by now
    result = job.run()
    if quiet or result.rank != 0:
        return result.exit_code
    rows, c, settings = result.rows, result.counts, job.settings
    say = job.say
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
            finished = " (finished by the teacher)" if r["engine"] == "student+teacher" else (
                "" if settings.finish else "; treat its results with caution or verify/finish "
                "it with a teacher (--verify/--finish)")
            why = "; ".join(SIGNAL_WORDS.get(s, s) for s in r.get("uncertain_signals") or [])
            say(f"warning: {r['structure']} uncertain: {r['extrapolating_atoms']} atom(s) "
                f"flagged ({why or 'see the report'}){finished}")
    limit = default_verify_fmax(settings.fmax, settings.verify_fmax)
    for r in rows:
        if r.get("verified") is False:
            say(f"warning: {r['structure']} not verified: teacher fmax "
                f"{_fmt(r['teacher_fmax'], '.4f')} eV/Å > {limit:g} eV/Å")
    uncertain = [r["structure"] for r in rows if r.get("uncertain")]
    if uncertain:
        say(f"uncertain structure(s): {', '.join(uncertain[:20])}"
            + (f" and {len(uncertain) - 20} more" if len(uncertain) > 20 else ""))
    click.echo(
        f"{c['finished']}/{c['total']} structures: {c['converged']} converged, "
        f"{c['not_converged']} not converged"
        + (f", {c['resumed']} resumed" if c["resumed"] else "")
        + (f", {c['uncertain']} uncertain" if c["uncertain"] else "")
        + (f", {c['verified']} verified, {c['not_verified']} not verified"
           if c["verified"] or c["not_verified"] else "")
        + (f", {c['teacher_finished']} finished by the teacher" if c["teacher_finished"] else "")
        + (f", {c['teacher_only']} by the teacher alone" if c["teacher_only"] else "")
        + f" -> {', '.join(result.outputs)} ({time.perf_counter() - result.start:.1f} s)"
    )
    if result.interrupted:
        say("interrupted: finished structures were written; rerun with --resume to continue")
    return result.exit_code


if __name__ == "__main__":
    main()
