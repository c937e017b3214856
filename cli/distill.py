"""``tdn distill SPEC.yaml --teacher NAME``: distil a fast TDN for the spec's chemical
space by active learning against a teacher (docs/campaigns.md, "tdn distill").

Writes everything to ``--out`` (default ``<spec stem>_distill``): the state file, the HDF5
data, one training run per round and the result in ``<out>/manifest.json``. Re-running the
same command resumes where it stopped. Exit status: 0 done, 1 error, 2 usage, 3 stopped early
(re-run to resume).
"""

from __future__ import annotations

from pathlib import Path

import click
from tdn_calc.cli._run import run_command


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--teacher", help="Teacher name (tdn teachers list) [default: the spec's "
              "teacher.name].")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False),
              help="Output folder [default: <spec stem>_distill next to the spec].")
def distill(spec_file, teacher, outdir) -> None:
    """Distil a TDN model for SPEC_FILE (YAML campaign spec with a distill: section)."""
    run_command(_run, spec_file, teacher, outdir)


def _run(spec_file, teacher, outdir) -> int:
    import json

    from tdn_calc.distill import load_distill_spec, run_distill

    spec = load_distill_spec(spec_file, teacher=teacher)
    path = Path(spec_file)
    out = Path(outdir or path.with_name(f"{path.stem}_distill"))
    state = run_distill(spec, out, say=lambda m: click.echo(m, err=True))
    if state.stage != "done":
        return 3
    last = state.history[-1]["agreement"]
    click.echo(json.dumps({"model": spec.name, "manifest": str(out / "manifest.json"),
                           "stop_reason": state.stop_reason, "rounds": len(state.history),
                           "frames": state.frames, "teacher_calls": state.teacher_calls,
                           "holdout_agreement": last}, indent=1))
    return 0
