"""MPI: the venv's MPICH runs ``mpiexec -n 2``; each rank reads its own slab lazily."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from anodetwin.io import Volume, write_volume

pytestmark = pytest.mark.mpi
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def _mpiexec(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = str(MPIEXEC) if MPIEXEC.exists() else shutil.which("mpiexec")
    assert exe, "mpiexec not found next to the interpreter (the mpich wheel provides it)"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([exe, "-n", "2", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_info_reports_two_ranks():
    proc = _mpiexec(str(Path(sys.executable).parent / "anodetwin"), "info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)  # rank 0 prints, rank 1 stays silent
    assert info["mpi"]["size"] == 2


SLABS = textwrap.dedent("""
    import dolfinx_solver  # noqa: F401  (before mpi4py/petsc4py users)
    import json, sys
    import numpy as np
    from mpi4py import MPI
    from anodetwin.io import open_volume
    comm = MPI.COMM_WORLD
    with open_volume(sys.argv[1]) as src:
        nz = src.shape[0]
        z0, z1 = comm.rank * nz // comm.size, (comm.rank + 1) * nz // comm.size
        part = src.read(f"{z0}:{z1},:,:").data
    parts = comm.gather(part, root=0)
    if comm.rank == 0:
        full = np.concatenate(parts)
        print(json.dumps({"shape": full.shape, "sum": int(full.sum(dtype=np.int64)),
                          "sizes": [p.shape[0] for p in parts]}))
""")


def test_each_rank_reads_its_own_slab(tmp_path):
    data = np.random.default_rng(3).integers(0, 65535, (21, 10, 12), dtype=np.uint16)
    write_volume(tmp_path / "v.h5", Volume(data, 0.05))
    script = tmp_path / "slabs.py"
    script.write_text(SLABS)
    proc = _mpiexec(sys.executable, str(script), str(tmp_path / "v.h5"))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["shape"] == [21, 10, 12] and res["sizes"] == [10, 11]
    assert res["sum"] == int(data.sum(dtype=np.int64))
