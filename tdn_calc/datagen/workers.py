"""Worker-process setup shared by the data builders' pools."""

from __future__ import annotations

import signal


def worker_signals() -> None:
    """Leave interruption to the parent: a pool worker ignores SIGINT and dies on SIGTERM.

    On Ctrl-C or SIGTERM the parent saves what is finished and terminates the pool (SIGTERM).
    A forked worker would otherwise inherit the parent's SIGTERM handler and stop with a
    KeyboardInterrupt traceback, or outlive the parent and fail on a broken pipe.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
