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
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from anodetwin.errors import AnodetwinError, NumericalError
from anodetwin.log import get_logger

__all__ = ["CaseResult", "execute_case", "prepare_case", "write_phantom_labels",
           "mesh_and_simulate", "mpiexec"]

log = get_logger("study")


@dataclass(frozen=True)
class CaseResult:
    """What one case of a study came to: its ``result.json``, written last and atomically
    (a case with a result is finished; a failed one runs again only when asked to).

    Attributes
    ----------
    key : str
        The case's key (its folder's name).
    status : str
        ``"done"`` or ``"failed"``.
    metrics : dict or None
        :func:`~anodetwin.study.metrics.case_metrics` of a finished case.
    stage, reason : str
        Where a failed case stopped (``"phantom"``, ``"mesh and simulation"``,
        ``"metrics"``; ``"scheduler"`` for a lost task) and why, in one line.
    labels : dict or None
        What the phantom's labels reached (:func:`write_phantom_labels`).
    seconds : float or None
        Wall time of the attempt (s).
    finished : str
        When it ended (ISO 8601, local time).
    """

    key: str
    status: str
    metrics: dict | None = None
    stage: str = ""
    reason: str = ""
    labels: dict | None = None
    seconds: float | None = None
    finished: str = ""

    def to_json(self) -> dict:
        """The content of ``result.json``: the fields that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}

    @classmethod
    def from_json(cls, d: dict) -> CaseResult:
        """A result read back from ``result.json``.

        Parameters
        ----------
        d : dict
            The parsed file; keys that are no field of :class:`CaseResult` are ignored.

        Returns
        -------
        CaseResult
            The result, with defaults for the fields ``d`` lacks.
        """
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def mpiexec() -> str:
    """The ``mpiexec`` beside this Python (the MPI of the installed wheels), else on PATH.

    Returns
    -------
    str
        Its path.

    Raises
    ------
    NumericalError
        There is none.
    """
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file():
        return str(here)
    found = shutil.which("mpiexec")
    if not found:
        raise NumericalError("no mpiexec beside the Python or on PATH",
                             "install the package with 'make venv' (mpiexec lands in .venv)")
    return found


def write_phantom_labels(path: Path, phantom: dict) -> dict:
    """Generate the pristine microstructure of a phantom and write its electrode (the anode
    layer: no copper, no separator) as the HDF5 datasets ``/phases`` and ``/particles``.

    Parameters
    ----------
    path : Path
        The HDF5 file (written atomically); each dataset, shape (z, y, x), carries
        ``voxel_size_um`` (z, y, x) in um, the file the phantom configuration.
    phantom : dict
        A phantom configuration (:func:`anodetwin.phantom.config_from_dict`).

    Returns
    -------
    dict
        What the microstructure reached: ``phase_fractions``, ``particles`` (count),
        ``shape`` (z, y, x) and ``composition``.

    Raises
    ------
    ParameterError
        The configuration does not validate.
    """
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
    """Write the case's input files (module notes); the labels only when missing.

    Parameters
    ----------
    folder : Path
        The case folder (created).
    case : dict
        The case's inputs (:meth:`anodetwin.study.CaseSpec.inputs`).

    Returns
    -------
    dict
        What the phantom's labels reached (:func:`write_phantom_labels`).

    Raises
    ------
    ParameterError
        The phantom configuration does not validate.
    """
    from anodetwin.io import atomic_write_json, atomic_write_text
    from anodetwin.io.tomlfile import toml_text

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "inputs.json", case)
    atomic_write_text(folder / "cell.toml", toml_text(case["cell"]))
    if case["matrix"] is not None:
        atomic_write_text(folder / "matrix.toml", toml_text(case["matrix"]))
    atomic_write_text(folder / "case.toml", "# written by anodetwin study\n"
                      + toml_text(_case_dict(case, case["matrix"] is not None)))
    info = folder / "labels.json"
    if not (folder / "labels.h5").is_file() or not info.is_file():
        atomic_write_json(info, write_phantom_labels(folder / "labels.h5", case["phantom"]))
    return json.loads(info.read_text())


def mesh_and_simulate(folder: str | os.PathLike, coarsen: int, comm=None) -> list:
    """The MPI part of a prepared case (``anodetwin study-case``): the labels meshed with
    voxel hexahedra (skipped when ``mesh/`` is complete), then the simulation, resumed from
    its checkpoint when a previous attempt was killed.

    Parameters
    ----------
    folder : str or os.PathLike
        The prepared case folder (:func:`prepare_case`).
    coarsen : int
        Mesh coarsening of the labels (voxels per hexahedron edge).
    comm : mpi4py.MPI.Comm, optional
        The communicator (default: ``COMM_WORLD``).

    Returns
    -------
    list
        The simulation's summary rows (:func:`anodetwin.simulate.run_case`).
    """
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
                 ) -> CaseResult:
    """Run one case into ``folder`` and write its ``result.json`` (module notes).

    Parameters
    ----------
    folder : str
        The case folder (``OUT/cases/<key>``).
    case : dict
        The case's inputs, its ``values`` and ``label``.
    ranks : int
        MPI ranks of the mesh and simulation job.
    timeout_s : float, optional
        Time limit of that job (s); None: none.

    Returns
    -------
    CaseResult
        What was written to ``result.json``. A failing case never raises: the failure is
        the result (status, stage, reason).
    """
    from anodetwin.io import atomic_write_json
    from anodetwin.study.metrics import case_metrics

    d = Path(folder)
    t0 = time.perf_counter()
    stage, status, reason = "phantom", "failed", ""
    labels = metrics = None
    try:
        labels = prepare_case(d, case)
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
        metrics = case_metrics(d / "run")
        stage, status = "", "done"
    except AnodetwinError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001  (a failed case never stops the study)
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    result = CaseResult(d.name, status, metrics, stage, reason, labels,
                        time.perf_counter() - t0, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write_json(d / "result.json", result.to_json())
    return result
