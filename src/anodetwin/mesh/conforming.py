"""Conforming route: labels to a tetrahedral mesh whose phase and particle interfaces are
shared by the neighbouring cells (SurfaceNets + TetGen).

1. every voxel gets a region number, one per (phase, particle id) pair;
2. SurfaceNets (VTK, through :meth:`pyvista.ImageData.contour_labels`) extracts the
   boundaries between all regions and the outside as one triangulated, non-manifold surface
   (unsmoothed: the interfaces are the voxel faces, so every volume equals its voxel count;
   with ``smoothing`` VTK's constrained smoothing rounds them);
3. TetGen meshes that piecewise-linear complex with one seed point per region (a voxel
   centre of the region) and region attributes, so every tetrahedron knows its region;
4. the tetrahedra go to DOLFINx from rank 0 and are partitioned over the ranks; cell and
   facet tags follow the voxel route's conventions (:data:`anodetwin.mesh.voxel.FACET`).
"""

from __future__ import annotations

import time

import numpy as np

from anodetwin.errors import NumericalError
from anodetwin.mesh.voxel import (HexMesh, Labels, cell_tags, coarsen, facet_tags, phase_volumes,
                                  summarise_mesh)

__all__ = ["region_labels", "surface_mesh", "conforming_mesh"]


def region_labels(labels: Labels) -> tuple[np.ndarray, np.ndarray]:
    """Regions of equal (phase, particle id) and their table.

    Parameters
    ----------
    labels : Labels
        Phases and optional particle ids.

    Returns
    -------
    regions : numpy.ndarray of int32, shape (nz, ny, nx)
        Region number (1..R) of each voxel.
    table : numpy.ndarray, shape (R, 2)
        Phase code and particle id (0 = none) of each region.
    """
    pa = labels.particles if labels.particles is not None else np.zeros_like(
        labels.phases, np.int32)
    key = labels.phases.astype(np.int64) * (int(pa.max()) + 1) + pa
    uniq, inv = np.unique(key.ravel(), return_inverse=True)
    table = np.stack([uniq // (int(pa.max()) + 1), uniq % (int(pa.max()) + 1)], axis=1)
    return (inv + 1).reshape(labels.phases.shape).astype(np.int32), table


def surface_mesh(regions: np.ndarray, voxel_size_um, origin_um, smoothing: bool = False):
    """Triangulated boundaries of all regions and of the box.

    Parameters
    ----------
    regions : numpy.ndarray of int, shape (nz, ny, nx)
        Region numbers (:func:`region_labels`).
    voxel_size_um : (z, y, x) floats
        Voxel size (um).
    origin_um : (z, y, x) floats
        Centre of the first voxel (um).
    smoothing : bool
        Smooth the surfaces (VTK's label-contour smoothing).

    Returns
    -------
    pyvista.PolyData
        Triangles, points in (x, y, z) um.
    """
    import pyvista as pv

    nz, ny, nx = regions.shape
    vs = np.asarray(voxel_size_um, float)
    img = pv.ImageData(dimensions=(nx, ny, nz), spacing=tuple(vs[::-1]),
                       origin=tuple(np.asarray(origin_um, float)[::-1]))
    img.point_data["region"] = regions.ravel()  # x fastest, as VTK wants
    return img.contour_labels(boundary_style="all", background_value=0, pad_background=True,
                              output_mesh_type="triangles", smoothing=smoothing,
                              scalars="region").clean()


def _seeds(regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seed voxels (z, y, x) and their region numbers: one per face-connected component of
    every region (a region may be in pieces), the voxel farthest from the piece's boundary."""
    from scipy import ndimage

    seeds, ids = [], []
    for r, sl in enumerate(ndimage.find_objects(regions), start=1):
        if sl is None:
            continue
        pieces, n = ndimage.label(regions[sl] == r)
        d = ndimage.distance_transform_edt(np.pad(pieces > 0, 1))[1:-1, 1:-1, 1:-1]
        best = ndimage.maximum_position(d, pieces, np.arange(1, n + 1))
        for pos in best:
            seeds.append([s.start + k for s, k in zip(sl, pos, strict=True)])
            ids.append(r)
    return np.array(seeds, int).reshape(-1, 3), np.array(ids, int)


def conforming_mesh(comm, labels: Labels, coarsen_by: int = 1, smoothing: bool = False,
                    quality: bool = False) -> HexMesh:
    """Tetrahedral mesh whose cells conform to the phase and particle interfaces.

    Same tags and summary as :func:`anodetwin.mesh.voxel.voxel_mesh` (``route:
    conforming``; module notes); TetGen runs on rank 0, DOLFINx distributes the cells.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator the cells are distributed on.
    labels : Labels
        The labels to mesh (held on every rank), particle ids optional.
    coarsen_by : int
        Blocks of ``coarsen_by^3`` voxels vote first (:func:`anodetwin.mesh.voxel.coarsen`).
    smoothing : bool
        Smooth the label surfaces before meshing.
    quality : bool
        Let TetGen refine for tetrahedron quality.

    Returns
    -------
    HexMesh
        Mesh (um), cell tags ``phases``/``particles``, facet tags and summary.

    Raises
    ------
    ParameterError
        For a coarsening factor below 1 or above the volume.
    NumericalError
        If TetGen fails or leaves tetrahedra outside every region.
    """
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    import basix.ufl
    import dolfinx.mesh as dmesh

    t0 = time.perf_counter()
    lab, cut = coarsen(labels, coarsen_by)
    vs, origin = np.asarray(lab.voxel_size_um), np.asarray(lab.origin_um)
    regions, table = region_labels(lab)
    cells, x, region_of = _tetrahedralise(comm, regions, vs, origin, smoothing, quality)
    element = basix.ufl.element("Lagrange", "tetrahedron", 1, shape=(3,))
    partitioner = dmesh.create_cell_partitioner(dmesh.GhostMode.shared_facet, 2)
    mesh = dmesh.create_mesh(comm, cells, element, x, partitioner)
    top = mesh.topology
    n_owned = top.index_map(3).size_local
    n_local = n_owned + top.index_map(3).num_ghosts
    reg = region_of[np.asarray(top.original_cell_index[:n_local], np.int64)]
    ph_cell = table[reg - 1, 0].astype(np.int32)
    pa_owned = None if lab.particles is None else table[reg[:n_owned] - 1, 1].astype(np.int32)
    phases, particles = cell_tags(mesh, ph_cell[:n_owned], pa_owned)
    facets, areas = facet_tags(mesh, ph_cell, lab.phases.shape, vs, origin)
    summary = summarise_mesh(comm, mesh, ph_cell[:n_owned], pa_owned, vs, areas, lab)
    summary["volume_um3"] = phase_volumes(mesh, phases)
    summary.pop("cell_volume_um3", None)
    summary["jacobian"] = tet_quality(mesh)
    summary.update({"route": "conforming", "ranks": comm.size, "coarsen": int(coarsen_by),
                    "planes_cut": list(cut), "smoothing": bool(smoothing),
                    "voxel_size_um": list(labels.voxel_size_um),
                    "origin_um": list(labels.origin_um), "source": labels.source,
                    "seconds": time.perf_counter() - t0})
    return HexMesh(mesh, phases, particles, facets, summary)


def _tetrahedralise(comm, regions: np.ndarray, vs: np.ndarray, origin: np.ndarray,
                    smoothing: bool, quality: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TetGen on rank 0 of the region surfaces: its cells (n, 4) and nodes (m, 3; x y z um),
    empty on the other ranks, and the region number (1..R) of every input cell on all
    ranks."""
    import tetgen

    if comm.rank == 0:
        surf = surface_mesh(regions, vs, origin, smoothing)
        tg = tetgen.TetGen(surf)
        seeds, ids = _seeds(regions)
        for rid, (z, y, x) in zip(ids, seeds, strict=True):
            tg.add_region(int(rid), (origin[2] + x * vs[2], origin[1] + y * vs[1],
                                     origin[0] + z * vs[0]))
        try:
            nodes, elem, attrib, _ = tg.tetrahedralize(plc=True, regionattrib=True,
                                                       quality=quality, nobisect=True,
                                                       quiet=True)
        except RuntimeError as exc:
            raise NumericalError(f"TetGen failed on the label surfaces ({exc})",
                                 "use the voxel route or coarsen the labels") from None
        region_of = np.rint(np.asarray(attrib).reshape(len(elem), -1)[:, 0]).astype(int)
        cells = np.asarray(elem, np.int64)
        x = np.asarray(nodes, float)
    else:
        region_of = None
        cells = np.zeros((0, 4), np.int64)
        x = np.zeros((0, 3))
    region_of = comm.bcast(region_of, root=0)
    if np.any(region_of < 1):
        raise NumericalError("TetGen left tetrahedra without a region",
                             "use the voxel route for these labels")
    return cells, x, region_of


def tet_quality(mesh) -> dict:
    """Quality of a tetrahedral mesh over all ranks.

    Parameters
    ----------
    mesh : dolfinx.mesh.Mesh
        A linear tetrahedral mesh (um).

    Returns
    -------
    dict
        ``min`` and ``max`` Jacobian determinant (6 x tetrahedron volume, um3) and
        ``min_dihedral_deg``, the smallest dihedral angle (degrees).
    """
    from mpi4py import MPI

    n = mesh.topology.index_map(3).size_local
    p = mesh.geometry.x[mesh.geometry.dofmaps[0][:n]]
    e1, e2, e3 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
    det = np.abs(np.einsum("ij,ij->i", e1, np.cross(e2, e3)))
    comm = mesh.comm
    return {"min": comm.allreduce(float(det.min()) if n else np.inf, op=MPI.MIN),
            "max": comm.allreduce(float(det.max()) if n else 0.0, op=MPI.MAX),
            "min_dihedral_deg": comm.allreduce(_min_dihedral(p) if n else 180.0, op=MPI.MIN)}


def _min_dihedral(p: np.ndarray) -> float:
    """Smallest interior dihedral angle (degrees) of tetrahedra with vertices p (n, 4, 3)."""
    best = 180.0
    for a, b in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)):
        c, d = [k for k in range(4) if k not in (a, b)]
        e = p[:, b] - p[:, a]
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        u = p[:, c] - p[:, a]
        v = p[:, d] - p[:, a]
        u -= np.einsum("ij,ij->i", u, e)[:, None] * e
        v -= np.einsum("ij,ij->i", v, e)[:, None] * e
        cos = np.einsum("ij,ij->i", u, v) / (np.linalg.norm(u, axis=1)
                                             * np.linalg.norm(v, axis=1))
        best = min(best, float(np.degrees(np.arccos(np.clip(cos, -1, 1))).min()))
    return best
