"""Idealised route: particle packings given as spheres meshed with gmsh (OpenCASCADE).

For single particles, particle-centred volumes of interest and small packings (spheres from
a phantom's particle table, a labels file's table or a design-study generator): a box (the
electrode, or a VOI) and the spheres are fragmented with OCC booleans, so particle and
matrix volumes share their interfaces; the parts of spheres outside the box are cut away.
The model is meshed with tetrahedra of a given size (finer on the particles' surfaces) and
handed to DOLFINx by :func:`dolfinx.io.gmsh.model_to_mesh`; the tags follow the other
routes (:data:`anodetwin.mesh.voxel.FACET`; cell tags ``phases``: 2 Si, 1 matrix;
``particles``: the sphere's id). The model is also saved as ``model.geo_unrolled`` (open it
in the gmsh GUI); ``meshes/particle_voi.geo`` is an editable template of one particle in a
matrix cube.

Cost grows quickly with the number of overlapping spheres (the boolean fragments and the
tiny surfaces they leave): see :data:`PARTICLE_LIMIT`; use the voxel or conforming route for
whole electrodes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anodetwin.errors import NumericalError, ParameterError
from anodetwin.mesh.voxel import FACET, HexMesh, cell_tags
from anodetwin.phases import PHASE

__all__ = ["Spheres", "spheres_from_table", "read_particle_source", "packing_mesh",
           "PARTICLE_LIMIT"]

#: Spheres above which the route refuses to start: measured on 2 cores with the default sizes,
#: 19 overlapping phantom particles mesh in 11 s (112k cells) while 60 did not finish in
#: 9 minutes (the fragments of calendered overlaps produce tiny surfaces).
PARTICLE_LIMIT = 50
MATRIX_TAG = 1_000_000


@dataclass
class Spheres:
    """Particles as spheres in a box (um).

    Attributes
    ----------
    ids : numpy.ndarray of int, shape (N,)
        Particle ids (>= 1).
    centres : numpy.ndarray, shape (N, 3)
        Centres (z, y, x; um).
    radii : numpy.ndarray, shape (N,)
        Radii (um).
    box : numpy.ndarray, shape (2, 3)
        Low and high corner (z, y, x; um).

    Raises
    ------
    ParameterError
        For ids, centres and radii of different lengths, radii or box extent not positive,
        or ids below 1.
    """

    ids: np.ndarray
    centres: np.ndarray
    radii: np.ndarray
    box: np.ndarray

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, int)
        self.centres = np.asarray(self.centres, float).reshape(-1, 3)
        self.radii = np.asarray(self.radii, float)
        self.box = np.asarray(self.box, float).reshape(2, 3)
        if len(self.ids) != len(self.centres) or len(self.ids) != len(self.radii):
            raise ParameterError("sphere ids, centres and radii differ in length",
                                 "give one centre and one radius per id")
        if np.any(self.radii <= 0) or np.any(self.box[1] <= self.box[0]):
            raise ParameterError("sphere radii or box extent not positive",
                                 "give radii > 0 and a box with low < high corner")
        if np.any(self.ids <= 0):
            raise ParameterError("sphere ids must be positive", "number particles from 1")


def spheres_from_table(table: np.ndarray, box: np.ndarray, ids=None) -> Spheres:
    """Spheres of equal volume from a particle table, those that reach into a box.

    Parameters
    ----------
    table : numpy.ndarray
        Structured table with ``id``, ``centroid_{z,y,x}_um`` and ``equivalent_diameter_um``
        (phantom or segmentation).
    box : array_like, shape (2, 3)
        Low and high corner (z, y, x; um).
    ids : sequence of int, optional
        Keep only these particle ids.

    Returns
    -------
    Spheres
    """
    c = np.stack([table["centroid_z_um"], table["centroid_y_um"], table["centroid_x_um"]], 1)
    r = table["equivalent_diameter_um"] / 2
    box = np.asarray(box, float).reshape(2, 3)
    near = np.all((c + r[:, None] > box[0]) & (c - r[:, None] < box[1]), axis=1)
    if ids is not None:
        near &= np.isin(table["id"], ids)
    return Spheres(table["id"][near], c[near], r[near], box)


def read_particle_source(path: str | os.PathLike) -> tuple[np.ndarray, list | None]:
    """Particle table and a default box from a phantom series, a labels file or a CSV table.

    Parameters
    ----------
    path : path
        A phantom ``series.h5`` (box: the electrode layer over the whole lateral extent), a
        labels file (box: the whole volume) or a CSV table (no box).

    Returns
    -------
    table : numpy.ndarray
        Structured particle table (``id``, ``centroid_{z,y,x}_um``,
        ``equivalent_diameter_um``, ...).
    box : list or None
        ``[[z0, y0, x0], [z1, y1, x1]]`` in um, None for a CSV table.

    Raises
    ------
    InputNotFoundError
        If the file does not exist.
    CorruptFileError
        If it cannot be read or holds no particle table.
    """
    import json

    import h5py

    from anodetwin.errors import CorruptFileError, InputNotFoundError

    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(p, "particle source", "give a series.h5, labels.h5 or CSV")
    if p.suffix.lower() == ".csv":
        try:
            t = np.genfromtxt(p, delimiter=",", names=True)
            need = ("id", "centroid_z_um", "centroid_y_um", "centroid_x_um",
                    "equivalent_diameter_um")
            missing = [n for n in need if n not in (t.dtype.names or ())]
        except ValueError as exc:
            raise CorruptFileError(f"cannot read '{p}' ({exc})", "give a CSV table") from None
        if missing:
            raise CorruptFileError(f"'{p}' lacks the columns {missing}",
                                   "give id, centroid_z_um, centroid_y_um, centroid_x_um, "
                                   "equivalent_diameter_um")
        return np.atleast_1d(t), None
    try:
        with h5py.File(p, "r") as f:
            fmt = f.attrs.get("format", "")
            if "particles" in f and isinstance(f["particles"], h5py.Dataset) \
                    and "layers" in f.attrs:  # phantom series
                t = f["particles"][...]
                v = float(np.asarray(f.attrs["voxel_size_um"]).ravel()[0])
                lay = json.loads(f.attrs["layers"])
                shape = f["steps/T0/phases"].shape
                a0, a1 = lay["anode"]
                box = [[(a0 - 0.5) * v, -0.5 * v, -0.5 * v],
                       [(a1 - 0.5) * v, (shape[1] - 0.5) * v, (shape[2] - 0.5) * v]]
                return t, box
            if fmt == "anodetwin-labels":
                t = f["particle_table"][...]
                v = np.asarray(f.attrs["voxel_size_um"], float)
                shape = np.array(f["phases"].shape)
                return t, [list(-0.5 * v), list((shape - 0.5) * v)]
    except OSError as exc:
        raise CorruptFileError(f"cannot read '{p}' ({exc})", "give an HDF5 file") from None
    raise CorruptFileError(f"'{p}' holds no particle table",
                           "give a phantom series.h5, a labels file or a CSV table")


def _build_model(sph: Spheres, mesh_size: float, surface_size: float):
    import gmsh

    occ = gmsh.model.occ
    (z0, y0, x0), (z1, y1, x1) = sph.box
    box = occ.addBox(x0, y0, z0, x1 - x0, y1 - y0, z1 - z0)
    balls = [occ.addSphere(c[2], c[1], c[0], r) for c, r in zip(sph.centres, sph.radii,
                                                                 strict=True)]
    out, out_map = occ.fragment([(3, box)], [(3, b) for b in balls])
    occ.synchronize()
    # keep only what lies inside the box: the fragments of the box itself
    inside = {t for d, t in out_map[0] if d == 3}
    extra = [(d, t) for d, t in out if d == 3 and t not in inside]
    if extra:
        occ.remove(extra, recursive=True)
        occ.synchronize()
    # a fragment inside the box belongs to the sphere(s) whose map contains it
    owner = {}
    for k, b in enumerate(out_map[1:]):
        for d, t in b:
            if d == 3 and t in inside:
                owner.setdefault(t, int(sph.ids[k]))
    vols = sorted(inside)
    by_tag: dict[int, list[int]] = {}
    for v in vols:
        by_tag.setdefault(owner.get(v, MATRIX_TAG), []).append(v)
    for tag, vs in by_tag.items():
        gmsh.model.addPhysicalGroup(3, vs, tag)
    # facets: box faces by position, particle/matrix interfaces by adjacency
    eps = 1e-6 * float(np.max(sph.box[1] - sph.box[0]))
    faces = {}
    for name, axis, val in (("x_min", 0, x0), ("x_max", 0, x1), ("y_min", 1, y0),
                            ("y_max", 1, y1), ("collector", 2, z0), ("separator", 2, z1)):
        lo = [x0 - eps, y0 - eps, z0 - eps]
        hi = [x1 + eps, y1 + eps, z1 + eps]
        lo[axis], hi[axis] = val - eps, val + eps
        faces[name] = [t for _, t in gmsh.model.getEntitiesInBoundingBox(*lo, *hi, dim=2)]
    interface = []
    matrix = set(by_tag.get(MATRIX_TAG, []))
    for _, s in gmsh.model.getEntities(2):
        up, _ = gmsh.model.getAdjacencies(2, s)
        up = set(up)
        if len(up) == 2 and len(up & matrix) == 1:
            interface.append(s)
    for name, tags in faces.items():
        if tags:
            gmsh.model.addPhysicalGroup(2, tags, FACET[name])
    if interface:
        gmsh.model.addPhysicalGroup(2, interface, FACET["si_interface"])
    gmsh.option.setNumber("Mesh.CharacteristicLengthMax", mesh_size)
    # finer near the particle surfaces
    f = gmsh.model.mesh.field
    dist = f.add("Distance")
    f.setNumbers(dist, "SurfacesList", interface)
    thr = f.add("Threshold")
    f.setNumber(thr, "InField", dist)
    f.setNumber(thr, "SizeMin", surface_size)
    f.setNumber(thr, "SizeMax", mesh_size)
    f.setNumber(thr, "DistMin", 0.0)
    f.setNumber(thr, "DistMax", 4 * mesh_size)
    f.setAsBackgroundMesh(thr)
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
    gmsh.model.mesh.generate(3)


def packing_mesh(comm, spheres: Spheres, mesh_size: float | None = None,
                 surface_size: float | None = None, out_dir: str | os.PathLike | None = None
                 ) -> HexMesh:
    """Mesh a sphere packing in a box with gmsh (module notes); rank 0 builds the model.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Communicator of the mesh.
    spheres : Spheres
        The packing and its box.
    mesh_size, surface_size : float, optional
        Largest element size and the size at particle surfaces (um); defaults: a quarter of
        the median radius and half of that.
    out_dir : path, optional
        Also write ``model.geo_unrolled`` there (rank 0).

    Returns
    -------
    HexMesh
        Tetrahedral mesh (um) with cell tags ``phases`` (Si in the spheres, CBD around) and
        ``particles`` (sphere ids), facet tags and summary (``route: gmsh``).

    Raises
    ------
    ParameterError
        For more spheres than :data:`PARTICLE_LIMIT`.
    NumericalError
        If gmsh cannot mesh the packing.
    """
    if len(spheres.ids) > PARTICLE_LIMIT:
        raise ParameterError(f"{len(spheres.ids)} spheres exceed the gmsh route's limit of "
                             f"{PARTICLE_LIMIT}", "mesh a sub-volume or use the voxel route")
    rmed = float(np.median(spheres.radii)) if len(spheres.radii) else 1.0
    h = mesh_size or rmed / 4
    hs = surface_size or h / 2
    t0 = time.perf_counter()
    data = _gmsh_mesh(comm, spheres, h, hs, out_dir)
    mesh = data.mesh
    phases, particles, facets = _packing_tags(data)
    summary = _packing_summary(comm, mesh, phases, particles, facets, spheres)
    summary.update({"route": "gmsh", "ranks": comm.size, "spheres": len(spheres.ids),
                    "mesh_size_um": h, "surface_size_um": hs,
                    "box_um": spheres.box.tolist(), "seconds": time.perf_counter() - t0})
    return HexMesh(mesh, phases, particles, facets, summary)


def _gmsh_mesh(comm, spheres: Spheres, h: float, hs: float,
               out_dir: str | os.PathLike | None):
    """The gmsh model of the packing built on rank 0 (element sizes ``h`` and ``hs`` um),
    distributed as DOLFINx mesh data (mesh, cell tags, facet tags)."""
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    import gmsh
    from dolfinx.io.gmsh import model_to_mesh

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        if comm.rank == 0:
            try:
                gmsh.model.add("packing")
                _build_model(spheres, h, hs)
            except Exception as exc:  # gmsh raises plain Exceptions
                raise NumericalError(f"gmsh could not mesh the packing ({exc})",
                                     "use fewer particles or the voxel route") from None
            if out_dir is not None:
                gmsh.write(str(Path(out_dir) / "model.geo_unrolled"))
        return model_to_mesh(gmsh.model, comm, 0, gdim=3)
    finally:
        gmsh.finalize()


def _packing_tags(data) -> tuple:
    """Cell tags ``phases`` (Si in the spheres, CBD matrix), ``particles`` (sphere id, 0 in
    the matrix) and facet tags ``facets`` (:data:`FACET`) on the owned entities of gmsh
    mesh data."""
    import dolfinx.mesh as dmesh

    mesh = data.mesh
    ct = data.cell_tags
    n_owned = mesh.topology.index_map(3).size_local
    n_local = n_owned + mesh.topology.index_map(3).num_ghosts
    tag = np.full(n_local, MATRIX_TAG, np.int64)
    tag[ct.indices] = ct.values
    pa_cell = np.where(tag == MATRIX_TAG, 0, tag).astype(np.int32)
    ph_cell = np.where(pa_cell > 0, PHASE["si"], PHASE["cbd"]).astype(np.int32)
    phases, particles = cell_tags(mesh, ph_cell[:n_owned], pa_cell[:n_owned])
    ft = data.facet_tags
    keep = ft.indices < mesh.topology.index_map(2).size_local
    facets = dmesh.meshtags(mesh, 2, ft.indices[keep], ft.values[keep])
    facets.name = "facets"
    return phases, particles, facets


def _packing_summary(comm, mesh, phases, particles, facets, spheres: Spheres) -> dict:
    """Summary numbers of a packing mesh: the route-independent ones of
    :func:`anodetwin.mesh.voxel.summarise_mesh` without the voxel fields, the volume of
    each sphere and phase (um3) and the tetrahedron quality."""
    from mpi4py import MPI

    from anodetwin.mesh.conforming import tet_quality
    from anodetwin.mesh.voxel import Labels, facet_areas, phase_volumes, summarise_mesh

    counts = np.bincount(facets.values, minlength=max(FACET.values()) + 1)
    areas = np.bincount(facets.values, weights=facet_areas(mesh, facets.indices),
                        minlength=max(FACET.values()) + 1)
    # the summary's voxel fields do not apply: describe the spheres instead
    dummy = Labels(np.full((1, 1, 1), PHASE["si"], np.uint8), np.ones((1, 1, 1), np.int32))
    summary = summarise_mesh(comm, mesh, phases.values, particles.values, np.ones(3),
                             (counts, areas), dummy)
    for k in ("cell_volume_um3", "voxel_volume_um3", "particles_in_labels"):
        summary.pop(k, None)
    summary["particle_volume_um3"] = {
        str(int(i)): float(mesh.comm.allreduce(_tag_volume(mesh, particles, int(i)),
                                               op=MPI.SUM)) for i in spheres.ids}
    summary["volume_um3"] = phase_volumes(mesh, phases)
    summary["jacobian"] = tet_quality(mesh)
    return summary

def _tag_volume(mesh, tags, value: int) -> float:
    import dolfinx.fem as fem
    import ufl

    dx = ufl.Measure("dx", domain=mesh, subdomain_data=tags)
    return fem.assemble_scalar(fem.form(fem.Constant(mesh, 1.0) * dx(value)))
