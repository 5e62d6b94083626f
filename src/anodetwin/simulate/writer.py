"""The files of a run folder (layout: :mod:`anodetwin.simulate.run`), apart from the stepping.

* :class:`RunWriter`: ``run.json``, ``cell.csv``, ``summary.csv``, the fields and DVC-grid
  files of each output, ``heterogeneity.json``, ``failure.json``; rank 0 writes the shared
  files, every rank takes part in the collective ones (XDMF, DVC sampling, checkpoint);
* :class:`Checkpoint`: the state after the last finished step (per-rank arrays, rank-0 JSON);
* :class:`DvcGrid` and :func:`write_dvc_grid`: the displacement sampled on a regular voxel
  grid, written in the DVC pair layout (:mod:`anodetwin.dvc.pair`);
* :func:`read_summary`: the rows of a ``summary.csv``.

Every file is written atomically (:mod:`anodetwin.io.atomic`).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from anodetwin.simulate.steps import SUMMARY_COLUMNS, StepRecord

__all__ = ["RunWriter", "Checkpoint", "DvcGrid", "write_dvc_grid", "read_summary", "clear_run",
           "RUN_FILES", "SUMMARY_DIGITS"]

#: What a run writes into its folder (removed when a run with no finished step restarts).
RUN_FILES = ("run.json", "cell.csv", "summary.csv", "heterogeneity.json", "failure.json",
             "fields", "dvc", "checkpoint")
#: Significant digits of the floats of ``summary.csv``.
SUMMARY_DIGITS = 10


def read_summary(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``summary.csv``.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    list of dict
        One dict per row, the file's columns as keys: numbers as float, ``output`` as str.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (v if k == "output" else float(v)) for k, v in r.items()} for r in rows]


def clear_run(out: Path) -> None:
    """Remove what a run wrote into ``out`` (:data:`RUN_FILES`), nothing else.

    Parameters
    ----------
    out : Path
        The run folder.
    """
    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


class DvcGrid(NamedTuple):
    """The regular grid on which a run samples its displacement for the DVC comparison.

    Attributes
    ----------
    nodes : ndarray of int, shape (N, 3)
        Node positions in voxels of the grid (z, y, x; spam's makeGrid convention).
    grid_shape : tuple of int
        Nodes per axis (z, y, x); ``N = prod(grid_shape)``.
    spacing : int
        Node spacing, voxels.
    voxel_size_um : float or sequence of float
        Voxel size of the grid, um (one value, or z, y, x).
    origin_um : ndarray, shape (3,)
        Position (z, y, x, um) of voxel 0 in the mesh's coordinates.
    """

    nodes: np.ndarray
    grid_shape: tuple
    spacing: int
    voxel_size_um: float
    origin_um: np.ndarray


def write_dvc_grid(path: Path, grid: DvcGrid | tuple, u, params: dict) -> None:
    """Sample ``u`` at the grid's nodes and write it as a DVC pair result (rank 0).

    The FE displacement comes in mesh order (u_x, u_y, u_z, um) and is stored in DVC order
    (z, y, x) in voxels; its strain is taken in um over um node spacings per axis, with the
    components named as everywhere (``eyz``: z with y, ``exz``, ``exy``: y with x). Nodes
    outside the mesh get NaN, status -5 and flag 2.

    Parameters
    ----------
    path : Path
        The ``.h5`` file.
    grid : DvcGrid or tuple
        The grid (its fields in order).
    u : dolfinx.fem.Function
        The displacement (um), a vector P1 field.
    params : dict
        Extra entries of the file's parameters (case, output, time).
    """
    from anodetwin.dvc.correlate import ReturnStatus
    from anodetwin.dvc.pair import PairResult, write_pair
    from anodetwin.strain import cell_strain
    from anodetwin.simulate.fields import sample_displacement

    nodes, gshape, spacing, vs, origin = grid
    xyz = (origin + nodes * vs)[:, ::-1]
    disp = sample_displacement(u, xyz)
    if disp is None:
        return
    d = disp[:, ::-1] / vs  # um (x y z) -> voxels (z y x)
    N = len(nodes)
    phi = np.tile(np.eye(4), (N, 1, 1))
    phi[:, :3, 3] = d
    ok = np.isfinite(d).all(axis=1)
    status = np.where(ok, int(ReturnStatus.CONVERGED), int(ReturnStatus.OUTSIDE))
    res = PairResult(
        nodes=nodes, grid_shape=gshape, displacement=d, displacement_raw=d, Phi=phi,
        status=status, error=np.zeros(N), iterations=np.zeros(N, int),
        delta_phi_norm=np.zeros(N), residual=np.zeros(N), flag=np.where(ok, 0, 2),
        strain=cell_strain(d.reshape(*gshape, 3), spacing, voxel_size_um=vs),  # um / um
        params={**params, "levels": [{"node_spacing": [spacing] * 3, "hws": [0, 0, 0]}],
                "source": "simulation", "origin_um": list(map(float, origin))},
        global_phi=np.eye(4), global_centre=np.zeros(3), voxel_size_um=np.full(3, vs))
    write_pair(path, res, voxel_size_um=vs)


class Checkpoint:
    """The state after a finished step: per-rank arrays plus the rank-0 state (JSON).

    Parameters
    ----------
    out : Path
        The run folder (the checkpoint is ``out/checkpoint``).
    comm : mpi4py.MPI.Comm
        The run's communicator.
    """

    def __init__(self, out: Path, comm):
        self.dir, self.comm = Path(out) / "checkpoint", comm

    def save(self, arrays: dict, state: dict) -> None:
        """Write this rank's arrays and the rank-0 state (collective).

        Parameters
        ----------
        arrays : dict
            Name -> ndarray of this rank (``rank<r>.npz``).
        state : dict
            JSON-able state of the run (rank 0's is written, with the number of ranks, to
            ``state.json``).
        """
        from anodetwin.io import atomic_path, atomic_write_json

        if self.comm.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.comm.barrier()
        with atomic_path(self.dir / f"rank{self.comm.rank}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        self.comm.barrier()
        if self.comm.rank == 0:
            atomic_write_json(self.dir / "state.json", {**state, "ranks": self.comm.size})
        self.comm.barrier()

    def state(self) -> dict | None:
        """The rank-0 state (``state.json``); None without a checkpoint.

        Raises
        ------
        CorruptFileError
            ``state.json`` exists but cannot be read.
        """
        from anodetwin.errors import CorruptFileError

        sp = self.dir / "state.json"
        if not sp.is_file():
            return None
        try:
            return json.loads(sp.read_text())
        except (OSError, ValueError) as exc:
            raise CorruptFileError(f"checkpoint '{sp}' is unreadable ({exc})",
                                   "continue in a new --out") from None

    def arrays(self) -> dict:
        """This rank's arrays (name -> ndarray)."""
        with np.load(self.dir / f"rank{self.comm.rank}.npz") as z:
            return {k: z[k] for k in z.files}


class RunWriter:
    """The files of a run folder; rank 0 writes the shared ones (module notes).

    Parameters
    ----------
    out : Path
        The run folder.
    comm : mpi4py.MPI.Comm
        The run's communicator.
    """

    def __init__(self, out: Path, comm):
        self.out, self.comm = Path(out), comm
        self.checkpoint = Checkpoint(self.out, comm)

    @property
    def root(self) -> bool:
        """Whether this rank writes the shared files."""
        return self.comm.rank == 0

    def prepare(self, restart: bool) -> None:
        """Create the output folders (collective).

        Parameters
        ----------
        restart : bool
            First clear the folder's run (:func:`clear_run`): it finished no step.
        """
        if self.root:
            if restart:
                clear_run(self.out)
            for sub in ("fields", "dvc"):
                (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.comm.barrier()

    def write_json(self, name: str, obj: dict) -> None:
        """Write a JSON file of the folder (rank 0).

        Parameters
        ----------
        name : str
            File name in the folder (``run.json``, ``failure.json``, ...).
        obj : dict
            JSON-able content.
        """
        from anodetwin.io import atomic_write_json

        if self.root:
            atomic_write_json(self.out / name, obj)

    def write_cell(self, history) -> None:
        """Write ``cell.csv`` (rank 0).

        Parameters
        ----------
        history : CellHistory
            The protocol's run (:meth:`~anodetwin.simulate.protocol.CellHistory.to_csv`).
        """
        if self.root:
            history.to_csv(self.out / "cell.csv")

    def write_summary(self, records: Sequence[StepRecord]) -> None:
        """Write ``summary.csv`` (rank 0).

        Parameters
        ----------
        records : sequence of StepRecord
            One row each, columns :data:`SUMMARY_COLUMNS`; floats with
            :data:`SUMMARY_DIGITS` significant digits, integers and strings as they are.
        """
        from anodetwin.io import atomic_write_text
        from anodetwin.io.table import csv_text

        if self.root:
            text = csv_text([r.as_dict() for r in records], SUMMARY_COLUMNS,
                            digits=SUMMARY_DIGITS)
            atomic_write_text(self.out / "summary.csv", text)

    def write_output(self, name: str, probe, f, t: float, grid: DvcGrid | None, u,
                     params: dict) -> None:
        """Write the fields and the DVC-grid displacement of an output (collective).

        Parameters
        ----------
        name : str
            The output's name: ``fields/<name>.xdmf`` and ``dvc/<name>.h5``.
        probe : CellFields
            Writes the fields (:class:`anodetwin.simulate.fields.CellFields`).
        f : mapping
            The fields of ``probe.compute()``.
        t : float
            Time, s.
        grid : DvcGrid or None
            The DVC sampling grid (None: no ``dvc`` file).
        u : dolfinx.fem.Function
            The displacement, um.
        params : dict
            Extra parameters of the DVC file.
        """
        probe.write_xdmf(self.out / "fields" / f"{name}.xdmf", f, t)
        if grid is not None:
            write_dvc_grid(self.out / "dvc" / f"{name}.h5", grid, u, params)

    def write_heterogeneity(self, dists: dict, outputs: Sequence[str]) -> None:
        """Write ``heterogeneity.json`` and ``fields/fields.xdmf`` after an output (rank 0).

        Parameters
        ----------
        dists : dict
            Output name -> its distributions (time, SoC, percentiles).
        outputs : sequence of str
            The outputs so far, in time: their fields files are merged in this order.
        """
        from anodetwin.simulate.fields import merge_xdmf

        if self.root:
            self.write_json("heterogeneity.json", dists)
            merge_xdmf([self.out / "fields" / f"{n}.xdmf" for n in outputs],
                       self.out / "fields" / "fields.xdmf")
