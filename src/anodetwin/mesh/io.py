"""Labels in, meshes out: reading label volumes, writing and reading tagged meshes.

Output folder of :func:`write_mesh` (``anodetwin mesh LABELS --out DIR``), written on any
number of MPI ranks into a temporary folder renamed into place when complete::

    DIR/mesh.xdmf, DIR/mesh.h5   XDMF/HDF5: the mesh "mesh" (coordinates in um, x y z),
                                 cell tags "phases" and "particles" (if given), facet tags
                                 "facets" (values: anodetwin.mesh.voxel.FACET)
    DIR/summary.json             cells, vertices, volume per phase (mesh and voxels), facets
                                 and area per tag, particles, Jacobian range, time, ranks,
                                 parameters, provenance
    DIR/preview.png              with --preview: the mesh coloured by phase (pyvista)

:func:`read_mesh` reads it back on any number of ranks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from anodetwin.errors import CorruptFileError, InputNotFoundError
from anodetwin.mesh.voxel import HexMesh, Labels

__all__ = ["TaggedMesh", "read_labels_volume", "write_mesh", "read_mesh", "preview"]


class TaggedMesh(NamedTuple):
    """A mesh read back by :func:`read_mesh` with its tags.

    A named tuple, so ``mesh, phases, particles, facets = read_mesh(...)`` and indexing work
    as for a plain tuple.

    Attributes
    ----------
    mesh : dolfinx.mesh.Mesh
        The mesh (coordinates x, y, z in um).
    phases : dolfinx.mesh.MeshTags
        Cell tags: phase codes (:data:`anodetwin.phases.PHASE`).
    particles : dolfinx.mesh.MeshTags or None
        Cell tags: particle ids (0 = none); None when the mesh was written without them.
    facets : dolfinx.mesh.MeshTags
        Facet tags (:data:`anodetwin.mesh.voxel.FACET`).
    """

    mesh: Any
    phases: Any
    particles: Any
    facets: Any


def read_labels_volume(path: str | os.PathLike, particles: str | None = None,
                       voxel_size_um: Any = None) -> Labels:
    """Labels for meshing from a labels file or a phase-code volume.

    A labels file of ``anodetwin segment`` gives phases and particles; any readable
    phase-code volume (``series.h5:/steps/T0/phases``) may come with a particle volume,
    which must lie on the phases' grid (voxel size, shape, origin:
    :func:`anodetwin.io.agree.require_same_grid`).

    Parameters
    ----------
    path : path or str
        Labels file, or a volume (``file:/dataset`` for HDF5).
    particles : str, optional
        Particle-id volume (default: the labels file's, else none).
    voxel_size_um : float or (z, y, x) floats, optional
        Overrides the files' voxel size (um); their differences are then only logged.

    Returns
    -------
    Labels

    Raises
    ------
    InputNotFoundError
        If the file does not exist.
    CorruptFileError
        For an unreadable HDF5 file.
    GridMismatchError
        If phases and particles lie on different grids.
    ParameterError
        For labels that are not phase codes or hold no solid.
    """
    import h5py

    from anodetwin.io import normalise_voxel_size, read_volume
    from anodetwin.io.agree import require_same_grid

    p = str(path)
    file = Path(p.split(":/")[0]) if ":/" in p else Path(p)
    if not file.exists():
        raise InputNotFoundError(file, "labels", "give a labels file or a phase volume")
    is_labels = False
    if file.suffix in (".h5", ".hdf5") and ":/" not in p:
        try:
            with h5py.File(file, "r") as f:
                is_labels = f.attrs.get("format") == "anodetwin-labels"
        except OSError as exc:
            raise CorruptFileError(f"cannot read '{file}' ({exc})", "give an HDF5 file") \
                from None
    given = normalise_voxel_size(voxel_size_um, "--voxel-size")
    phases = f"{file}:/phases" if is_labels else p
    pa_path = particles or (f"{file}:/particles" if is_labels else None)
    if pa_path is not None:  # before reading any voxel
        require_same_grid(phases, pa_path, f"phases '{phases}'", f"particles '{pa_path}'",
                          voxel_size=given)
    ph = read_volume(phases, progress=False)
    pa = read_volume(pa_path, progress=False).data if pa_path is not None else None
    vs = given or ph.voxel_size_um
    return Labels(ph.data, pa, vs or (1.0, 1.0, 1.0), ph.origin, str(path))


def write_mesh(out_dir: str | os.PathLike, hm: HexMesh, extra: dict | None = None) -> Path:
    """Write mesh, tags and summary (module notes) collectively on the mesh's communicator.

    The folder appears only when complete (written as a temporary folder, then renamed).

    Parameters
    ----------
    out_dir : path
        The output folder (replaced if it exists).
    hm : HexMesh
        Mesh, tags and summary.
    extra : dict, optional
        More entries for ``summary.json`` (parameters, provenance).

    Returns
    -------
    pathlib.Path
        The folder.
    """
    from dolfinx.io import XDMFFile

    comm = hm.mesh.comm
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp-mesh")
    if comm.rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    comm.barrier()
    try:
        hm.mesh.topology.create_connectivity(2, 3)
        with XDMFFile(comm, str(tmp / "mesh.xdmf"), "w") as f:
            f.write_mesh(hm.mesh)
            f.write_meshtags(hm.phases, hm.mesh.geometry)
            if hm.particles is not None:
                f.write_meshtags(hm.particles, hm.mesh.geometry)
            f.write_meshtags(hm.facets, hm.mesh.geometry)
        if comm.rank == 0:
            summary = {**hm.summary, **(extra or {})}
            (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        comm.barrier()
    except BaseException:
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if comm.rank == 0:
        old = out.with_name(f".{out.name}.old-mesh")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    comm.barrier()
    return out


def read_mesh(path: str | os.PathLike, comm: Any = None) -> TaggedMesh:
    """Read a mesh folder written by :func:`write_mesh` on any number of ranks.

    Parameters
    ----------
    path : path
        The folder, or its ``mesh.xdmf``.
    comm : mpi4py.MPI.Comm, optional
        Communicator to distribute the mesh on (default: ``MPI.COMM_WORLD``).

    Returns
    -------
    TaggedMesh
        The mesh (um) with its cell tags ``phases`` and ``particles`` (None if absent) and
        facet tags ``facets``.

    Raises
    ------
    InputNotFoundError
        If there is no ``mesh.xdmf``.
    """
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from dolfinx.io import XDMFFile
    from mpi4py import MPI

    comm = comm or MPI.COMM_WORLD
    p = Path(path)
    if p.is_dir():
        p = p / "mesh.xdmf"
    if not p.is_file():
        raise InputNotFoundError(p, "mesh", "give the folder written by 'anodetwin mesh'")
    with XDMFFile(comm, str(p), "r") as f:
        mesh = f.read_mesh(name="mesh")
        mesh.topology.create_connectivity(2, 3)
        phases = f.read_meshtags(mesh, "phases")
        try:
            particles = f.read_meshtags(mesh, "particles")
        except RuntimeError:
            particles = None
        facets = f.read_meshtags(mesh, "facets")
    return TaggedMesh(mesh, phases, particles, facets)


def preview(path: str | os.PathLike, hm: HexMesh) -> None:
    """Render the mesh coloured by phase off-screen (pyvista) into a PNG.

    Rank 0 gathers the cells and writes the file; call it on every rank.

    Parameters
    ----------
    path : path
        The PNG file.
    hm : HexMesh
        The mesh and its phase tags.
    """
    import pyvista as pv
    from dolfinx.plot import vtk_mesh

    comm = hm.mesh.comm
    n = hm.mesh.topology.index_map(3).size_local
    cells, types, x = vtk_mesh(hm.mesh, 3, np.arange(n, dtype=np.int32))
    values = np.zeros(n, np.int32)
    values[hm.phases.indices] = hm.phases.values
    parts = comm.gather((cells, types, x, values), root=0)
    if comm.rank != 0:
        return
    grids = []
    for c, t, xx, v in parts:
        g = pv.UnstructuredGrid(c, t, xx)
        g.cell_data["phase"] = v
        grids.append(g)
    grid = grids[0].merge(grids[1:]) if len(grids) > 1 else grids[0]
    import vtk

    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)  # no X server: fine
    pl = pv.Plotter(off_screen=True, window_size=(900, 700))
    colours = ["#2b6cb0", "#ed8936", "#38a169", "#e53e3e", "#805ad5", "#a0aec0"]
    pl.add_mesh(grid.extract_surface(algorithm="dataset_surface"), scalars="phase",
                cmap=colours, clim=(-0.5, 5.5), n_colors=6, show_edges=False,
                scalar_bar_args={"title": "phase: 0 pore 1 CBD 2 Si 3 LixSi 4 Cu 5 separator",
                                 "n_labels": 6, "fmt": "%.0f"})
    pl.add_axes()
    pl.camera_position = "iso"
    from anodetwin.io import atomic_path

    with atomic_path(path) as tmp:
        pl.screenshot(str(tmp))
    pl.close()
