"""Versions of anodetwin and its numerical stack, MPI and thread settings (``anodetwin info``)."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from typing import Any

from anodetwin._version import __version__

__all__ = ["environment_info"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS", "PETSC_OPTIONS")


def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # report, never fail: info is a diagnostic
        return f"unavailable ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"


def _dolfinx() -> dict[str, Any]:
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    import dolfinx
    from petsc4py import PETSc

    major, minor, sub = PETSc.Sys.getVersion()
    return {"dolfinx": dolfinx.__version__, "petsc": f"{major}.{minor}.{sub}",
            "petsc_scalar": str(PETSc.ScalarType.__name__ if hasattr(PETSc.ScalarType, "__name__")
                                else PETSc.ScalarType)}


def _mpi() -> dict[str, Any]:
    from mpi4py import MPI

    lib = MPI.Get_library_version().strip().splitlines()[0]
    comm = MPI.COMM_WORLD
    return {"library": " ".join(lib.split()), "standard": "%d.%d" % MPI.Get_version(),
            "mpi4py": _dist_version("mpi4py"), "size": comm.size, "rank": comm.rank}


def _gmsh() -> str:
    import gmsh

    return gmsh.__version__


def _blas() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    return [{"api": i.get("user_api"), "library": i.get("internal_api"),
             "threads": i.get("num_threads")} for i in threadpool_info()]


def environment_info() -> dict[str, Any]:
    """Collect versions and settings as a JSON-serialisable dict.

    Returns
    -------
    dict
        ``anodetwin``, ``python``, ``platform``, ``packages`` (numpy, scipy, spam, gmsh,
        h5py, tifffile, zarr, scikit-image, pyvista, dask, ...: version or "not
        installed"), ``fem`` (dolfinx, petsc), ``mpi`` (library, standard, size, rank),
        ``threads`` (cpu counts, thread environment variables, BLAS thread pools). A part
        that cannot be read holds a string ``"unavailable (...)"`` instead: this never
        raises.
    """
    import numpy

    pkgs = {"numpy": numpy.__version__}
    for name in ("scipy", "spam", "h5py", "tifffile", "zarr", "scikit-image", "meshio",
                 "pyvista", "matplotlib", "dask", "distributed", "rich"):
        pkgs[name] = _dist_version(name) or "not installed"
    pkgs["gmsh"] = _try(_gmsh)
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    threads = {"cpu_count": os.cpu_count(), "cpus_usable": affinity,
               "env": {k: os.environ.get(k) for k in _THREAD_VARS if os.environ.get(k)},
               "blas": _try(_blas)}
    return {
        "anodetwin": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "packages": pkgs,
        "fem": _try(_dolfinx),
        "mpi": _try(_mpi),
        "threads": threads,
    }

