"""Shared entry wrapper of the model-running commands (tdn-relax, tdn adsorb, tdn neb)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from tdn_calc.errors import ModelNotFoundError, TDNError


def run_command(job: Callable[..., int], *args) -> None:
    """Run ``job(*args)`` and exit with the code it returns.

    Idle OpenMP threads are told to sleep instead of spin (spinning made torch 15-30x
    slower on a shared machine; set before torch is imported; an explicit
    ``OMP_WAIT_POLICY`` wins). An unknown model is a usage error (exit 2) on ``--model``;
    any other :class:`TDNError` is a clean message with exit 1, never a traceback.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        code = job(*args)
    except ModelNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="'-m' / '--model'") from exc
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)
