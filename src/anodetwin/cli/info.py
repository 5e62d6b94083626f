"""``anodetwin info``: versions of the toolkit and its engines, MPI and thread settings."""

from __future__ import annotations

import argparse
from typing import Any

from anodetwin.cli.options import add_command, flag, print_json

__all__ = ["add_parsers", "cmd_info"]


def add_parsers(sub: Any) -> None:
    """Register ``info`` on the subparsers ``sub``."""
    p = add_command(sub, "info", "versions of anodetwin, DOLFINx, PETSc, spam, gmsh, numpy; MPI "
                                 "and threads", cmd_info)
    flag(p, "--json", "print JSON instead of a table")


def _table(info: dict) -> Any:
    """The rich table of :func:`anodetwin.info.environment_info`."""
    from rich.table import Table

    t = Table(title=f"anodetwin {info['anodetwin']}", show_header=False)
    t.add_column("item", style="bold")
    t.add_column("value")
    t.add_row("python", info["python"])
    t.add_row("platform", info["platform"])
    fem = info["fem"]
    if isinstance(fem, dict):
        t.add_row("dolfinx", fem["dolfinx"])
        t.add_row("petsc", f"{fem['petsc']} ({fem['petsc_scalar']})")
    else:
        t.add_row("dolfinx / petsc", str(fem))
    for k, v in info["packages"].items():
        t.add_row(k, str(v))
    mpi = info["mpi"]
    if isinstance(mpi, dict):
        t.add_row("MPI library", mpi["library"])
        t.add_row("MPI standard / mpi4py", f"{mpi['standard']} / {mpi['mpi4py']}")
        t.add_row("MPI communicator size", str(mpi["size"]))
    else:
        t.add_row("MPI", str(mpi))
    th = info["threads"]
    t.add_row("CPUs (usable / total)", f"{th['cpus_usable']} / {th['cpu_count']}")
    t.add_row("thread variables", ", ".join(f"{k}={v}" for k, v in th["env"].items()) or "none set")
    blas = th["blas"]
    if isinstance(blas, list):
        t.add_row("thread pools", "; ".join(f"{b['library']} ({b['api']}): {b['threads']} threads"
                                            for b in blas) or "none loaded")
    return t


def cmd_info(args: argparse.Namespace) -> int:
    """Print the environment (rank 0 only under MPI), as a table or ``--json``."""
    from anodetwin.info import environment_info

    info = environment_info()
    mpi = info["mpi"]
    if isinstance(mpi, dict) and mpi.get("rank", 0) != 0:
        return 0
    if args.json:
        print_json(info)
        return 0
    from rich.console import Console

    Console().print(_table(info))
    return 0
