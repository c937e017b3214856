"""Shared entry wrapper of the model-running commands (tdn-relax, tdn adsorb, tdn neb)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from tdn_calc.errors import ModelNotFoundError, TDNError


def run_command(job: Callable[..., int], *args) -> None:
    """Run ``job(*args)`` and exit with the code it returns.

    An unknown model is a usage error (exit 2) on ``--model``; any other
    :class:`TDNError` is a clean message with exit 1, never a traceback. (Idle OpenMP threads
    sleep instead of spinning: ``import tdn_calc`` sets ``OMP_WAIT_POLICY=PASSIVE``.)
    """
    try:
        code = job(*args)
    except ModelNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="'-m' / '--model'") from exc
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def exit_interrupted(what: str) -> None:
    """Say that ``what`` stopped early with its progress kept, and exit 130 (as after Ctrl-C)."""
    click.echo(f"interrupted: {what}", err=True)
    sys.exit(130)
