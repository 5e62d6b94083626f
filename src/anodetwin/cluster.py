"""Dask clusters for independent jobs (DVC node batches, design-study cases).

One place that turns a user's ``--scheduler`` into a connected :class:`dask.distributed.Client`:
``None`` or ``"local"`` starts a :class:`~dask.distributed.LocalCluster` of single-threaded
worker processes on this machine; anything else is the address of a running scheduler
(``tcp://host:8786``, or a dask-jobqueue cluster's ``scheduler_address``). An address that is
malformed or cannot be reached is a :class:`~anodetwin.errors.ParameterError` naming it, not a
traceback.

:func:`map_per_worker` runs jobs that are themselves parallel (a scan segmented block by
block on threads) one per worker at a time, each told its worker's thread count, so that a
worker's memory holds one job whatever the number of jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from anodetwin.errors import ParameterError

__all__ = ["dask_client", "map_per_worker", "CONNECT_TIMEOUT_S"]

#: Seconds to wait for a remote scheduler before giving up.
CONNECT_TIMEOUT_S = 20


def dask_client(scheduler: str | None, workers: int = 1, memory_limit: Any = "auto",
                option: str = "--scheduler") -> tuple[Any, Any]:
    """A connected Dask client and the local cluster it owns (None for a remote scheduler).

    Parameters
    ----------
    scheduler : str or None
        ``None`` or ``"local"``: a local cluster; else a scheduler address.
    workers : int
        Worker processes of a local cluster (one thread each).
    memory_limit : str, int or float
        Memory limit per local worker (Dask's ``memory_limit``; 0 = none).
    option : str
        How messages name the setting (``--scheduler``, ``[resources] scheduler``).

    Returns
    -------
    (distributed.Client, distributed.LocalCluster or None)
        Close the client, then the cluster, when done.

    Raises
    ------
    ParameterError
        If the address is malformed or no scheduler answers there within
        :data:`CONNECT_TIMEOUT_S`.
    """
    from dask.distributed import Client, LocalCluster

    if not scheduler or scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=1,
                               processes=True, dashboard_address=None,
                               memory_limit=memory_limit)
        return Client(cluster), cluster
    try:
        _reachable(scheduler)  # before a Client exists: a failed one complains at exit
        return Client(scheduler, timeout=CONNECT_TIMEOUT_S), None
    except (OSError, ValueError, TypeError) as exc:  # bad address, refused, timed out
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ParameterError(
            f"{option} '{scheduler}': no Dask scheduler could be reached there ({reason})",
            "give the address of a running scheduler, e.g. tcp://host:8786, or 'local' for "
            "a cluster on this machine") from None


def map_per_worker(client: Any, fn: Callable[..., Any], jobs: Sequence[tuple],
                   name: str = "job") -> Iterator[tuple[int, Any]]:
    """Run ``fn(*job, threads)`` for every job, one job per Dask worker at a time.

    Parameters
    ----------
    client : distributed.Client
        A connected client (:func:`dask_client`); waits up to :data:`CONNECT_TIMEOUT_S` for
        a first worker (a dask-jobqueue cluster starts them as its jobs start).
    fn : callable
        A module-level function (it is pickled by reference); its last argument is the
        number of threads of the worker that runs it.
    jobs : sequence of tuple
        The arguments of each call (picklable: paths, settings; not open files).
    name : str
        Task names (``name-<index>``) as the dashboard shows them.

    Yields
    ------
    (int, object)
        A job's index and its result, in completion order.

    Raises
    ------
    Exception
        The first failed job's own exception (the remaining ones are cancelled).
    """
    from dask.distributed import wait

    client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    threads = client.nthreads()
    idle, pending, todo = list(threads), {}, list(enumerate(jobs))[::-1]
    try:
        while todo or pending:
            while todo and idle:
                k, args = todo.pop()
                w = idle.pop()
                f = client.submit(fn, *args, threads.get(w, 1), key=f"{name}-{k}",
                                  workers=[w], allow_other_workers=True, pure=False)
                pending[f] = (k, w)
            if not idle and not pending:  # every worker left: wait for a new one
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
                threads = client.nthreads()
                idle = list(threads)
                continue
            done, _ = wait(list(pending), return_when="FIRST_COMPLETED")
            for f in done:
                k, w = pending.pop(f)
                if w in client.nthreads():
                    idle.append(w)
                yield k, f.result()
    finally:
        client.cancel(list(pending))


def _reachable(address: str) -> None:
    """Open (and close) a TCP connection to a ``tcp://`` (or scheme-less) scheduler address;
    raises ValueError for a malformed address, OSError when nobody answers."""
    import socket

    from distributed.comm import get_address_host_port, parse_address

    scheme, _ = parse_address(address)
    if scheme != "tcp":
        return
    host, port = get_address_host_port(address)
    socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
