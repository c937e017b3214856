"""``tdn teachers``: the reference calculators (teachers) tdn-calc knows; which are installed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from tdn_calc.cli.models import _table

TEACHER_HELP = ("A teacher of `tdn teachers list` (name or alias), or an ASE calculator as "
                "package.module:factory; JSON keyword arguments may follow the name.")


def teacher_options(default: str = "sevenn-0", help_text: str = TEACHER_HELP
                    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--teacher`` and ``--teacher-kwargs`` options; join them with
    :func:`tdn_calc.teachers.with_teacher_kwargs`."""
    teacher = click.option("--teacher", default=default, show_default=True, help=help_text)
    kwargs = click.option("--teacher-kwargs", default=None, metavar="JSON",
                          help='Keyword arguments of the teacher, e.g. \'{"modal": "R2SCAN"}\'.')
    return lambda command: teacher(kwargs(command))


@click.group()
def teachers() -> None:
    """List the teachers: reference calculators that label data and check models."""


@teachers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """Table of the teachers: name, aliases, method, elements, extra, installed."""
    from tdn_calc.teachers import teacher_table

    rows = teacher_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ("name", "aliases", "method", "elements", "extra", "installed")
    click.echo(_table(headers, [
        (r["name"], ", ".join(r["aliases"]) or "-", r["method"], r["elements"],
         r["extra"] or "(built in)", "yes" if r["installed"] else "no")
        for r in rows
    ]))
    missing = [r for r in rows if not r["installed"]]
    if missing:
        click.echo("\nnot installed:")
        for r in missing:
            click.echo(f"  {r['name']}: {r['missing']}")
    click.echo("\nAny ASE calculator also works as 'package.module:factory', with keyword "
               "arguments as JSON after it: 'ase.calculators.lj:LennardJones{\"sigma\": 2.3}'.")
