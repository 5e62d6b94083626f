"""Dask clusters for independent jobs (DVC node batches, design-study cases).

One place that turns a user's ``--scheduler`` into a connected :class:`dask.distributed.Client`:
``None`` or ``"local"`` starts a :class:`~dask.distributed.LocalCluster` of single-threaded
worker processes on this machine; anything else is the address of a running scheduler
(``tcp://host:8786``, or a dask-jobqueue cluster's ``scheduler_address``). An address that is
malformed or cannot be reached is a :class:`~anodetwin.errors.ParameterError` naming it, not a
traceback.
"""

from __future__ import annotations

from typing import Any

from anodetwin.errors import ParameterError

__all__ = ["dask_client", "CONNECT_TIMEOUT_S"]

#: Seconds to wait for a remote scheduler before giving up.
CONNECT_TIMEOUT_S = 20


def dask_client(scheduler: str | None, workers: int = 1,
                memory_limit: Any = "auto") -> tuple[Any, Any]:
    """A connected Dask client and the local cluster it owns (None for a remote scheduler).

    Parameters
    ----------
    scheduler : str or None
        ``None`` or ``"local"``: a local cluster; else a scheduler address.
    workers : int
        Worker processes of a local cluster (one thread each).
    memory_limit : str, int or float
        Memory limit per local worker (Dask's ``memory_limit``; 0 = none).

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
            f"--scheduler '{scheduler}': no Dask scheduler could be reached there ({reason})",
            "give the address of a running scheduler, e.g. tcp://host:8786, or 'local' for "
            "a cluster on this machine") from None


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
