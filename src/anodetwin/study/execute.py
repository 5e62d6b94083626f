"""One case of a study: phantom -> labels -> (MPI job: mesh -> simulation) -> metrics.

A case folder (``OUT/cases/<key>/``)::

    inputs.json      everything the case computes from (its key is their content hash)
    labels.h5        pristine electrode labels of the phantom (/phases, /particles;
                     readable by ``anodetwin mesh labels.h5:/phases --particles
                     labels.h5:/particles``)
    case.toml        the simulation case (``anodetwin simulate case.toml`` reruns it)
    cell.toml        the cell and its protocol (CC charge to the study's state of charge)
    matrix.toml      the carbon-binder matrix model (only when its modulus is a lever)
    mesh/            voxel hexahedra (anodetwin mesh layout)
    run/             the simulation (anodetwin simulate layout: summary.csv,
                     heterogeneity.json, fields/ for ParaView, checkpoint/)
    log.txt          output of the MPI job
    result.json      status ("done" | "failed"), metrics or the failure's reason and stage,
                     timings; written last and atomically: a case with a result is finished

A case killed half-way keeps its labels, mesh and the simulation's checkpoint; running it
again resumes the simulation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from anodetwin.errors import AnodetwinError, NumericalError
from anodetwin.log import get_logger

__all__ = ["execute_case", "prepare_case", "write_labels", "mesh_and_simulate", "mpiexec"]

log = get_logger("study")


def mpiexec() -> str:
    """The ``mpiexec`` beside this Python (the MPI of the installed wheels), else on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file():
        return str(here)
    found = shutil.which("mpiexec")
    if not found:
        raise NumericalError("no mpiexec beside the Python or on PATH",
                             "install the package with 'make venv' (mpiexec lands in .venv)")
    return found


def write_labels(path: Path, phantom: dict) -> dict:
    """Generate the pristine microstructure of a phantom config dict and write its electrode
    (the anode layer: no copper, no separator) as ``/phases`` and ``/particles``. Returns
    the composition it reached."""
    import h5py

    from anodetwin.io import atomic_path
    from anodetwin.phantom.config import config_from_dict
    from anodetwin.phantom.microstructure import make_microstructure
    from anodetwin.phantom.report import phase_fractions

    cfg = config_from_dict(phantom)
    ms = make_microstructure(cfg)
    a0, a1 = ms.layers.anode
    v = ms.voxel_size_um
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, data in (("phases", ms.phases[a0:a1]), ("particles", ms.particles[a0:a1])):
            d = f.create_dataset(name, data=data, compression="lzf", shuffle=True)
            d.attrs["voxel_size_um"] = np.array([v, v, v])
        f.attrs["config"] = json.dumps(cfg.to_dict(), default=str)
    return {"phase_fractions": phase_fractions(ms.phases, a0, a1),
            "particles": int(len(ms.table)), "shape": list(ms.phases[a0:a1].shape),
            "composition": ms.composition.to_dict()}


def _case_dict(case: dict, matrix: bool) -> dict:
    sim = json.loads(json.dumps(case["simulation"]))
    d = {"mesh": {"path": "mesh"}, "cell": {"model": "cell.toml"}, **sim}
    if matrix:
        d.setdefault("materials", {})["cbd"] = "matrix.toml"
    return d


def prepare_case(folder: Path, case: dict) -> dict:
    """The case's input files (module notes); the labels only when missing."""
    from anodetwin.io import atomic_write_json, atomic_write_text
    from anodetwin.study.spec import to_toml

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "inputs.json", case)
    atomic_write_text(folder / "cell.toml", to_toml(case["cell"]))
    if case["matrix"] is not None:
        atomic_write_text(folder / "matrix.toml", to_toml(case["matrix"]))
    atomic_write_text(folder / "case.toml", "# written by anodetwin study\n"
                      + to_toml(_case_dict(case, case["matrix"] is not None)))
    info = folder / "labels.json"
    if not (folder / "labels.h5").is_file() or not info.is_file():
        atomic_write_json(info, write_labels(folder / "labels.h5", case["phantom"]))
    return json.loads(info.read_text())


def mesh_and_simulate(folder: str | os.PathLike, coarsen: int, comm=None) -> list[dict]:
    """The MPI part of a prepared case (``anodetwin study-case``): the labels meshed with
    voxel hexahedra (skipped when ``mesh/`` is complete), then the simulation, resumed from
    its checkpoint when a previous attempt was killed. Returns the summary rows."""
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.mesh.io import read_labels_volume, write_mesh
    from anodetwin.mesh.voxel import voxel_mesh
    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import run_case

    comm = comm or MPI.COMM_WORLD
    d = Path(folder)
    if not (d / "mesh" / "summary.json").is_file():  # write_mesh is atomic
        lab = read_labels_volume(f"{d / 'labels.h5'}:/phases",
                                 particles=f"{d / 'labels.h5'}:/particles")
        write_mesh(d / "mesh", voxel_mesh(comm, lab, coarsen_by=coarsen))
    case = load_case(d / "case.toml")
    run = d / "run"
    resume = (run / "checkpoint" / "state.json").is_file()
    if not resume and comm.rank == 0 and run.exists():  # started, no finished step
        shutil.rmtree(run)
    comm.barrier()
    return run_case(case, run, resume=resume, comm=comm, progress=False)


def _last_error(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
    for line in reversed(lines):
        if "error: " in line and line.startswith("anodetwin"):
            return line.split("error: ", 1)[1].strip()
    tail = [x for x in lines if x.strip()][-3:]
    return " | ".join(x.strip() for x in tail) or "the MPI job failed without output"


def execute_case(folder: str, case: dict, ranks: int = 1, timeout_s: float | None = None
                 ) -> dict:
    """Run one case into ``folder`` and write its ``result.json`` (module notes). Never
    raises for a failing case: the failure is the result (status, stage, reason)."""
    from anodetwin.io import atomic_write_json
    from anodetwin.study.metrics import case_metrics

    d = Path(folder)
    t0 = time.perf_counter()
    stage = "phantom"
    result: dict = {"key": d.name}
    try:
        result["labels"] = prepare_case(d, case)
        stage = "mesh and simulation"
        cmd = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "anodetwin.cli",
               "study-case", str(d), "--coarsen", str(case["coarsen"])]
        with open(d / "log.txt", "a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            try:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=timeout_s or None).returncode
            except subprocess.TimeoutExpired:
                raise NumericalError(f"the case ran past its time limit of {timeout_s:g} s",
                                     "raise [study] timeout_minutes; rerunning the study "
                                     "resumes it from its checkpoint") from None
        if rc != 0:
            fail = d / "run" / "failure.json"
            reason = json.loads(fail.read_text())["message"] if fail.is_file() \
                else _last_error(d / "log.txt")
            raise NumericalError(reason, None)
        stage = "metrics"
        result["metrics"] = case_metrics(d / "run")
        result["status"] = "done"
    except AnodetwinError as exc:
        result.update(status="failed", stage=stage, reason=str(exc))
    except Exception as exc:  # noqa: BLE001  (a failed case never stops the study)
        result.update(status="failed", stage=stage,
                      reason=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    result["seconds"] = time.perf_counter() - t0
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(d / "result.json", result)
    return result
