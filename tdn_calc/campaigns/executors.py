"""Where the tasks of a campaign run. A task is one batch of ``(key, Atoms)`` relaxed by
:func:`~.engine.relax_items`; an executor yields each task's results as it finishes, to the
client, which alone writes the database.

* :class:`InProcess` (default): one task after the other in this process;
* :class:`DaskExecutor`: a Dask ``distributed`` cluster, either a ``LocalCluster`` of
  ``workers`` processes (one thread each) started here, or an existing scheduler at
  ``address``. Tasks are submitted with ``retries``; a task whose worker died is run again
  by the scheduler, and since only the client writes, nothing is written twice.
  Needs the ``dask`` extra (``pip install "tdn-calc[dask]"``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ase import Atoms

from ..errors import InputError
from .engine import Engine, Relaxed, relax_items

Batch = Sequence[tuple[str, Atoms]]


class InProcess:
    """Run each task here, in order."""

    def run(self, engine: Engine, batches: Sequence[Batch]) -> Iterator[list[Relaxed]]:
        for batch in batches:
            yield relax_items(engine, batch)

    def close(self) -> None:
        """Nothing to release."""


class DaskExecutor:
    """Tasks on a Dask cluster: a new ``LocalCluster`` of ``workers`` processes, or the
    scheduler at ``address`` (``tcp://host:8786``); ``retries`` per task."""

    def __init__(self, workers: int | None = None, address: str | None = None,
                 retries: int = 2) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise InputError('Dask executors need the dask extra: pip install '
                             '"tdn-calc[dask]"') from exc
        self.retries = retries
        self.cluster = None
        if address:
            self.client = Client(address)
        else:
            self.cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)

    def run(self, engine: Engine, batches: Sequence[Batch]) -> Iterator[list[Relaxed]]:
        from distributed import as_completed

        futures = [self.client.submit(relax_items, engine, list(batch), retries=self.retries,
                                      pure=False) for batch in batches]
        for future in as_completed(futures):
            yield future.result()
            future.release()

    def close(self) -> None:
        """Disconnect; stop the cluster this executor started."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(dask_workers: int | None = None, scheduler: str | None = None) -> Any:
    """:class:`DaskExecutor` with ``dask_workers`` or a ``scheduler`` address, else
    :class:`InProcess`."""
    if dask_workers or scheduler:
        return DaskExecutor(dask_workers, scheduler)
    return InProcess()
