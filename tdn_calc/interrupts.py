"""SIGTERM treated like Ctrl-C in long jobs, including when the interrupt is swallowed.

A signal handler's exception surfaces wherever the interpreter happens to be; raised inside a
``__del__`` or a weakref callback (garbage collection) it is only reported as "Exception
ignored" and the job runs on. The handler therefore also records the request, and the jobs'
loops call :func:`raise_if_interrupted` between items.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_pending = False


def _raise_interrupt(signum, frame):
    global _pending
    _pending = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt when SIGTERM arrived (within :func:`sigterm_as_interrupt`) and
    its exception was swallowed before it could stop the job."""
    if _pending:
        raise KeyboardInterrupt


def _quiet_swallowed_interrupt(previous):
    def hook(unraisable) -> None:
        if not (_pending and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            previous(unraisable)  # anything else is reported as usual
    return hook


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, as Ctrl-C does.

    Batch schedulers and ``kill`` stop jobs with SIGTERM; the long commands then save their
    progress and stop their worker pools instead of dying with work half-sent.
    """
    global _pending
    _pending = False
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave the handler alone
        previous = None
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_swallowed_interrupt(previous_hook)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook
        _pending = False


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM are only recorded; when it ends, the previous
    handlers are restored and each recorded signal is delivered to them (Ctrl-C or
    :func:`sigterm_as_interrupt` then raise KeyboardInterrupt there).

    For writes that must land together: a builder's trajectory frames and its metadata line,
    which an interrupt between the two would leave as frames that no record describes.
    Outside the main thread (where handlers cannot be set) the block runs unprotected.
    """
    received: list[int] = []

    def record(signum, frame) -> None:
        received.append(signum)

    try:
        previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(received):  # each signal once, in arrival order
            signal.raise_signal(s)
