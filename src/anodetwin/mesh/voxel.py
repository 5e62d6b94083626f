"""Voxel route: labels to a hexahedral DOLFINx mesh, built in memory on every MPI rank.

Each voxel (or block of ``k^3`` voxels after majority coarsening) is one hexahedron. Each
MPI rank owns a z-major share of the kept voxels (a slab) and ghosts the other ranks' cells
across its faces (shared-facet ghosts, so interfaces across process boundaries are found);
the DOLFINx topology and geometry are assembled directly from the lattice, without the dual
graph, reordering and redistribution of :func:`dolfinx.mesh.create_mesh`. Slabs thinner
than ``MIN_SLAB_LAYERS`` voxel layers would be poor partitions for the solver: then
``create_mesh`` distributes the cells with a graph partitioner instead.

Coordinates are (x, y, z) in um: voxel (iz, iy, ix) spans ``origin + (i - 1/2) *
voxel_size`` to ``origin + (i + 1/2) * voxel_size`` (the origin is the centre of voxel 0, as
everywhere in anodetwin), so the mesh and the DVC grid share one frame.

Tags (the same for every route):

* cell tags ``phases``: phase codes of :mod:`anodetwin.phases`;
* cell tags ``particles``: particle id (0 = none) when particle labels are given;
* facet tags ``facets`` (:data:`FACET`): every boundary facet exactly once - ``collector``
  (z min), ``separator`` (z max), ``x_min``, ``x_max``, ``y_min``, ``y_max``, and
  ``pore_surface`` for the walls of left-out phases - plus the interior interfaces
  ``si_interface`` (Si or LixSi against CBD, electrolyte or pore: where Li enters the
  particles), ``cu_interface`` (copper against the electrode, the collector when the foil is
  meshed) and ``separator_interface`` (separator against binder or Si; the separator's own
  pores are electrolyte continuous with the electrode's, not a wall).

Coarsening by ``k``: the volume is cut to whole blocks (the remainder planes are dropped and
reported), each block takes its most frequent phase, ties going to the solid phase (order
:data:`SOLID_PRIORITY`), and the most frequent particle id among its voxels of that phase.
Specks (connected pieces of a phase smaller than ``min_speck_voxels``) take the most frequent
phase around them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.phases import ELECTRODE_PHASES, MATRIX_PHASES, PARTICLE_PHASES, PHASE

__all__ = ["FACET", "SOLID_PRIORITY", "Labels", "coarsen", "coarse_blocks", "coarsen_slabs",
           "remove_specks", "HexMesh",
           "hex_mesh", "voxel_mesh"]

FACET = {"collector": 1, "separator": 2, "x_min": 3, "x_max": 4, "y_min": 5, "y_max": 6,
         "si_interface": 7, "cu_interface": 8, "separator_interface": 9, "pore_surface": 10}

#: Tie-break order of the majority vote (first wins): solids before the matrix.
SOLID_PRIORITY = (PHASE["si"], PHASE["lithiated"], PHASE["copper"], PHASE["separator"],
                  PHASE["cbd"], PHASE["pore"])
SOLIDS = (PHASE["si"], PHASE["lithiated"], PHASE["copper"])
#: Electrode material the separator touches (its own pores are electrolyte, not a wall).
ELECTRODE_SOLIDS = (PHASE["cbd"], PHASE["si"], PHASE["lithiated"])


@dataclass
class Labels:
    """Phase codes and optional particle ids on a voxel grid, checked for meshing.

    Attributes
    ----------
    phases : numpy.ndarray of uint8, shape (nz, ny, nx)
        Phase codes (:data:`anodetwin.phases.PHASE`).
    particles : numpy.ndarray of int32, shape (nz, ny, nx), or None
        Particle ids (0 = none).
    voxel_size_um : tuple of float
        (z, y, x) voxel size (um); one value is broadcast.
    origin_um : tuple of float
        Centre of the first voxel (z, y, x; um).
    source : str
        Where the labels came from (for the summary).

    Raises
    ------
    ShapeMismatchError
        For phases that are not 3D, or particles on another shape.
    ParameterError
        For non-integer or unknown phase codes, labels without a solid, negative particle
        ids or a voxel size that is not positive.
    """

    phases: np.ndarray
    particles: np.ndarray | None = None
    voxel_size_um: tuple = (1.0, 1.0, 1.0)
    origin_um: tuple = (0.0, 0.0, 0.0)
    source: str = ""

    def __post_init__(self) -> None:
        ph = np.asarray(self.phases)
        if ph.ndim != 3:
            raise ShapeMismatchError(f"phase labels have shape {ph.shape}",
                                     "give a 3D (z, y, x) label volume")
        if not np.issubdtype(ph.dtype, np.integer):
            raise ParameterError(f"phase labels have dtype {ph.dtype}, not integer codes",
                                 "give phase codes 0-5 (anodetwin.phases), e.g. from "
                                 "'anodetwin segment'")
        bad = np.setdiff1d(np.unique(ph), list(PHASE.values()))
        if bad.size:
            raise ParameterError(f"phase labels hold unknown codes {bad.tolist()[:8]}",
                                 "give phase codes 0-5 (anodetwin.phases)")
        if not np.isin(ph, SOLIDS).any():
            raise ParameterError("the labels hold no solid (no Si, LixSi or copper voxel)",
                                 "check the labels: a mesh needs solid phases")
        self.phases = ph.astype(np.uint8, copy=False)
        if self.particles is not None:
            pa = np.asarray(self.particles)
            if pa.shape != ph.shape:
                raise ShapeMismatchError(f"particle labels {pa.shape} and phases {ph.shape} "
                                         "differ", "give both on one grid")
            if not np.issubdtype(pa.dtype, np.integer) or (pa.size and pa.min() < 0):
                raise ParameterError("particle labels are not non-negative integers",
                                     "give particle ids >= 0 (0 = none)")
            self.particles = pa.astype(np.int32, copy=False)
        vs = np.broadcast_to(np.asarray(self.voxel_size_um, float), (3,))
        if not np.all(np.isfinite(vs) & (vs > 0)):
            raise ParameterError(f"voxel size {tuple(vs)} um is not positive",
                                 "give a voxel size > 0 (--voxel-size)")
        self.voxel_size_um = tuple(float(v) for v in vs)
        self.origin_um = tuple(float(v) for v in np.broadcast_to(self.origin_um, (3,)))


def coarsen(labels: Labels, k: int) -> tuple[Labels, tuple[int, int, int]]:
    """Majority coarsening by blocks of ``k^3`` voxels (module notes).

    Parameters
    ----------
    labels : Labels
        The labels.
    k : int
        Block edge (voxels); 1 returns ``labels`` unchanged.

    Returns
    -------
    labels : Labels
        One voxel per block, voxel size ``k`` times larger, origin at the first block's
        centre.
    cut : tuple of int
        Planes dropped at the high end of each axis (z, y, x) to make whole blocks.

    Raises
    ------
    ParameterError
        For ``k`` below 1 or larger than the smallest dimension.
    """
    k = int(k)
    if k < 1:
        raise ParameterError(f"coarsening factor {k} is below 1", "give --coarsen 1, 2, ...")
    shape = labels.phases.shape
    if any(n < k for n in shape):
        raise ParameterError(f"coarsening factor {k} is larger than the volume {shape}",
                             "give a factor no larger than the smallest dimension")
    if k == 1:
        return labels, (0, 0, 0)
    cut = tuple(s % k for s in shape)
    sl = tuple(slice(0, s - c) for s, c in zip(shape, cut, strict=True))
    win, parts = coarse_blocks(labels.phases[sl], None if labels.particles is None
                               else labels.particles[sl], k)
    return _coarse_labels(win, parts, k, labels.voxel_size_um, labels.origin_um,
                          labels.source), cut


def _coarse_labels(phases: np.ndarray, particles: np.ndarray | None, k: int,
                   voxel_size_um: Any, origin_um: Any, source: str = "") -> Labels:
    """Coarse phases and ids with the fine voxel size times ``k`` and the origin moved to
    the first block's centre."""
    fine = np.broadcast_to(np.asarray(voxel_size_um, float), (3,))
    origin = np.broadcast_to(np.asarray(origin_um, float), (3,)) + (k - 1) / 2 * fine
    return Labels(phases, particles, tuple(fine * k), tuple(origin), source)


def coarse_blocks(phases: np.ndarray, particles: np.ndarray | None, k: int
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Majority phase and particle id of each ``k^3`` block (the kernel of :func:`coarsen`).

    Parameters
    ----------
    phases : numpy.ndarray of uint8, shape (nz, ny, nx)
        Phase codes; every dimension a multiple of ``k``.
    particles : numpy.ndarray of int, shape (nz, ny, nx), optional
        Particle ids (0 = none).
    k : int
        Block edge (voxels).

    Returns
    -------
    phases : numpy.ndarray of uint8, shape (nz/k, ny/k, nx/k)
        Each block's most frequent phase, ties to the first of :data:`SOLID_PRIORITY`.
    particles : numpy.ndarray of int32, same shape, or None
        The most frequent non-zero id among the block's voxels of its phase (ties to the
        smallest id), 0 where there is none.
    """
    n = tuple(s // k for s in phases.shape)

    def blocks(a: np.ndarray) -> np.ndarray:
        a = a.reshape(n[0], k, n[1], k, n[2], k)
        return a.transpose(0, 2, 4, 1, 3, 5).reshape(*n, k**3)

    ph = blocks(phases)
    counts = np.stack([(ph == c).sum(axis=-1) for c in SOLID_PRIORITY], axis=-1)
    win = np.asarray(SOLID_PRIORITY, np.uint8)[np.argmax(counts, axis=-1)]  # first max wins
    if particles is None:
        return win, None
    pa = np.where(ph == win[..., None], blocks(particles), 0).reshape(-1, k**3)
    parts = np.zeros(n, np.int32)
    rows = np.flatnonzero(pa.max(axis=-1) > 0)
    parts.flat[rows] = _row_modes(pa[rows])
    return win, parts


def _row_modes(rows: np.ndarray) -> np.ndarray:
    """The most frequent non-zero value of each row (ties to the smallest; every row holds
    one), from the runs of the sorted rows."""
    s = np.sort(rows, axis=1)
    start = np.ones(s.shape, bool)
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    first = np.flatnonzero(start.ravel())  # runs never cross rows: each row starts one
    length = np.diff(np.append(first, s.size))
    value = s.ravel()[first]
    length[value == 0] = 0
    row = first // s.shape[1]
    order = np.lexsort((value, -length, row))
    top = np.ones(order.size, bool)
    top[1:] = row[order[1:]] != row[order[:-1]]
    return value[order[top]]


def coarsen_slabs(phases: Any, particles: Any, k: int, voxel_size_um: tuple,
                  origin_um: tuple, stop: int | None = None, replace: dict | None = None,
                  slab_bytes: int = 1 << 30) -> tuple[Labels, tuple[int, int, int]]:
    """:func:`coarsen` of stored labels read a slab of whole blocks at a time: the same
    result, in the memory of one slab (a 2048^2 electrode is never held at full
    resolution).

    Parameters
    ----------
    phases, particles : array-like, shape (nz, ny, nx)
        Phase codes and particle ids (HDF5 datasets, arrays; ``particles`` may be None).
    k : int
        Block edge (voxels).
    voxel_size_um, origin_um : 3 floats
        The labels' voxel size and origin (um, z y x).
    stop : int, optional
        Only the slices ``0:stop`` are taken (default all).
    replace : dict, optional
        Phase codes replaced before coarsening (e.g. separator -> pore).
    slab_bytes : int
        Memory for one slab (about 40 bytes per voxel; at least one layer of blocks).

    Returns
    -------
    labels : Labels
        As :func:`coarsen`.
    cut : tuple of int
        Planes dropped at the high end of each axis.

    Raises
    ------
    ParameterError
        As :func:`coarsen`, and for labels without a solid.
    """
    nz = int(phases.shape[0]) if stop is None else int(stop)
    shape = (nz,) + tuple(int(s) for s in phases.shape[1:])
    if k < 1 or any(s < k for s in shape):
        raise ParameterError(f"coarsening factor {k} does not fit the volume {shape}",
                             "give a factor from 1 to the smallest dimension")
    cut = tuple(s % k for s in shape)
    ny, nx = shape[1] - cut[1], shape[2] - cut[2]
    step = k * max(1, int(slab_bytes) // (40 * ny * nx * k))
    out_ph, out_pa = [], []
    for z0 in range(0, nz - cut[0], step):
        z1 = min(nz - cut[0], z0 + step)
        ph = np.asarray(phases[z0:z1, :ny, :nx])
        for a, b in (replace or {}).items():
            ph[ph == a] = b
        pa = None if particles is None else np.asarray(particles[z0:z1, :ny, :nx])
        w, p = coarse_blocks(ph, pa, k)
        out_ph.append(w)
        out_pa.append(p)
    parts = None if particles is None else np.concatenate(out_pa)
    return _coarse_labels(np.concatenate(out_ph), parts, k, voxel_size_um, origin_um), cut


def remove_specks(labels: Labels, min_voxels: int) -> tuple[Labels, int]:
    """Reassign small connected pieces of a phase to the most frequent phase around them.

    Parameters
    ----------
    labels : Labels
        The labels.
    min_voxels : int
        Pieces (face-connected) smaller than this change phase; 1 or less: none.

    Returns
    -------
    labels : Labels
        The cleaned labels; particle ids kept only on Si and LixSi voxels.
    changed : int
        Voxels that changed phase.
    """
    if min_voxels <= 1:
        return labels, 0
    ph = labels.phases.copy()
    changed = 0
    for code in np.unique(ph):
        lab, n = ndimage.label(ph == code)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        small = np.flatnonzero(sizes < min_voxels)
        small = small[small > 0]
        for s in small:
            m = lab == s
            ring = ndimage.binary_dilation(m) & ~m
            vals = ph[ring]
            vals = vals[vals != code]
            if vals.size:
                ph[m] = np.bincount(vals).argmax()
                changed += int(m.sum())
    parts = labels.particles
    if parts is not None:
        parts = np.where(np.isin(ph, PARTICLE_PHASES), parts, 0).astype(np.int32)
    return Labels(ph, parts, labels.voxel_size_um, labels.origin_um, labels.source), changed


@dataclass
class HexMesh:
    """A DOLFINx mesh built by one of the routes, with its tags and summary numbers.

    Attributes
    ----------
    mesh : dolfinx.mesh.Mesh
        Hexahedra (voxel route) or tetrahedra (conforming and gmsh routes), x y z in um.
    phases : dolfinx.mesh.MeshTags
        Cell tags: phase codes.
    particles : dolfinx.mesh.MeshTags or None
        Cell tags: particle ids (0 = none), None without particle labels.
    facets : dolfinx.mesh.MeshTags
        Facet tags (:data:`FACET`).
    summary : dict
        Cells, vertices, volumes per phase (um3), facets and areas (um2) per tag, Jacobian
        range, route parameters and time (``summary.json``).
    """

    mesh: object
    phases: object
    particles: object | None
    facets: object
    summary: dict = field(default_factory=dict)


def _hex_cells(flat: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Node indices (DOLFINx hexahedron order: x fastest, then y, then z) of voxels with
    flat (z, y, x) indices ``flat``; nodes are numbered z-major on the (n+1)^3 lattice."""
    nz, ny, nx = shape
    iz, iy, ix = np.unravel_index(flat, shape)
    sy, sz = nx + 1, (nx + 1) * (ny + 1)
    base = iz * sz + iy * sy + ix
    off = np.array([0, 1, sy, sy + 1, sz, sz + 1, sz + sy, sz + sy + 1], np.int64)
    return base[:, None].astype(np.int64) + off[None, :]


def _node_coords(g: np.ndarray, shape: tuple[int, int, int], vs: np.ndarray,
                 origin: np.ndarray, displacement: np.ndarray | None = None) -> np.ndarray:
    """(x, y, z) in um of lattice nodes ``g`` (z-major numbering on the (n+1)^3 lattice),
    moved by a lattice ``displacement`` (voxels, components z y x) when given."""
    nz, ny, nx = shape
    iz, rem = np.divmod(np.asarray(g, np.int64), (ny + 1) * (nx + 1))
    iy, ix = np.divmod(rem, nx + 1)
    fz, fy, fx = iz - 0.5, iy - 0.5, ix - 0.5
    if displacement is not None:
        dd = displacement[iz, iy, ix]
        fz, fy, fx = fz + dd[:, 0], fy + dd[:, 1], fx + dd[:, 2]
    return np.stack([origin[2] + fx * vs[2], origin[1] + fy * vs[1],
                     origin[0] + fz * vs[0]], axis=1)


#: Thinnest slab (voxel layers per rank) for which the slab partition is used; thinner
#: slabs would make poor partitions for the solver, so a graph partitioner takes over.
MIN_SLAB_LAYERS = 16

_FACE_STEPS = ((2, -1), (2, 1), (1, -1), (1, 1), (0, -1), (0, 1))  # (axis, step)


def _slab_ghosts(kept: np.ndarray, shape: tuple[int, int, int], starts: np.ndarray,
                 rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells (positions in ``kept``) of other ranks that share a face with this rank's
    share ``starts[rank]:starts[rank + 1]`` of the kept voxels, and their owners."""
    pos = np.full(int(np.prod(shape)), -1, np.int64)
    pos[kept] = np.arange(kept.size)
    v = kept[starts[rank]:starts[rank + 1]]
    idx = np.unravel_index(v, shape)
    strides = (shape[1] * shape[2], shape[2], 1)
    found = []
    for axis, step in _FACE_STEPS:
        inside = idx[axis] > 0 if step < 0 else idx[axis] < shape[axis] - 1
        p = pos[v[inside] + step * strides[axis]]
        found.append(p[(p >= 0) & ((p < starts[rank]) | (p >= starts[rank + 1]))])
    ghosts = np.unique(np.concatenate(found))
    return ghosts, (np.searchsorted(starts, ghosts, side="right") - 1).astype(np.int32)


def _boundary_nodes(own: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Lattice nodes on the boundary of the union of the voxels ``own`` (flat indices, z
    sorted): nodes of those voxels whose eight surrounding voxels are not all in the set."""
    nz, ny, nx = shape
    z0, z1 = own[0] // (ny * nx), own[-1] // (ny * nx) + 1
    mask = np.zeros((z1 - z0 + 2, ny + 2, nx + 2), bool)  # padded by one voxel
    iz, iy, ix = np.unravel_index(own - z0 * ny * nx, (z1 - z0, ny, nx))
    mask[iz + 1, iy + 1, ix + 1] = True
    count = np.zeros((z1 - z0 + 1, ny + 1, nx + 1), np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                count += mask[a:a + z1 - z0 + 1, b:b + ny + 1, c:c + nx + 1]
    local = np.flatnonzero((count > 0) & (count < 8))
    return local + z0 * (ny + 1) * (nx + 1)


def _slab_mesh(comm, kept: np.ndarray, shape: tuple[int, int, int], vs: np.ndarray,
               origin: np.ndarray, displacement: np.ndarray | None, element):
    """Hexahedral mesh of the voxels ``kept`` in which each rank owns its z-major share (a
    slab) and ghosts the other ranks' cells across its faces (shared-facet ghosts).

    The topology and geometry are assembled directly from the lattice: every rank knows
    its cells, ghosts, process-boundary vertices and node coordinates, so the dual graph,
    cell reordering and redistribution of :func:`dolfinx.mesh.create_mesh` (over two
    thirds of its time for voxel meshes) are not needed. Cells keep the lattice order.
    """
    import dolfinx.cpp as _cpp
    import dolfinx.fem as fem
    import dolfinx.mesh as dmesh
    import ufl

    r, size = comm.rank, comm.size
    starts = np.array([kept.size * k // size for k in range(size + 1)])
    own = np.arange(starts[r], starts[r + 1], dtype=np.int64)
    ghosts, owners = _slab_ghosts(kept, shape, starts, r)
    index = np.concatenate([own, ghosts])
    cells = _hex_cells(kept[index], shape).ravel()
    boundary = _boundary_nodes(kept[own], shape)
    lo = int(cells.min())
    used = np.zeros(int(cells.max()) - lo + 1, bool)
    used[cells - lo] = True
    nodes = np.flatnonzero(used) + lo  # sorted unique lattice nodes of the local cells
    x = _node_coords(nodes, shape, vs, origin, displacement)
    # the bindings take Python sequences (lists convert fastest)
    top = _cpp.mesh.create_topology(comm, [dmesh.CellType.hexahedron], [cells.tolist()],
                                    [index.tolist()], [owners.tolist()], boundary.tolist(), 0)
    cmap = fem.coordinate_element(element.basix_element)
    geo = _cpp.mesh.create_geometry(top, [cmap._cpp_object], nodes, cells, x.ravel(), 3)
    return dmesh.Mesh(_cpp.mesh.Mesh_float64(comm, top, geo), ufl.Mesh(element))


def hex_mesh(comm, labels: Labels, drop_phases: tuple = (),
             displacement: np.ndarray | None = None, partition: str = "slab") -> HexMesh:
    """Hexahedral mesh of the voxels of ``labels`` not in ``drop_phases``, with tags.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Communicator of the mesh.
    labels : Labels
        The (possibly coarsened) labels; every rank holds them.
    drop_phases : tuple of int
        Phase codes left out of the mesh (e.g. pores); their walls get ``pore_surface``.
    displacement : numpy.ndarray, optional
        Node-lattice displacement (voxels, z y x) from
        :func:`anodetwin.mesh.smooth.smooth_interfaces`.
    partition : {"slab", "graph"}
        ``slab``: each rank owns a z slab, assembled from the lattice (module notes; a graph
        partitioner takes over for slabs thinner than ``MIN_SLAB_LAYERS``); ``graph``:
        :func:`dolfinx.mesh.create_mesh` with DOLFINx's graph partitioner in any case.

    Returns
    -------
    HexMesh
        Mesh (um), cell tags, facet tags and the route-independent summary.

    Raises
    ------
    ParameterError
        When every voxel is dropped, or for an unknown partition.
    """
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    import basix.ufl
    import dolfinx.mesh as dmesh

    shape = labels.phases.shape
    keep = ~np.isin(labels.phases, drop_phases)
    kept = np.flatnonzero(keep.ravel())
    if kept.size == 0:
        raise ParameterError("every voxel is in a dropped phase", "drop fewer phases")
    vs, origin = np.asarray(labels.voxel_size_um), np.asarray(labels.origin_um)
    element = basix.ufl.element("Lagrange", "hexahedron", 1, shape=(3,))
    size = comm.size
    if partition not in ("slab", "graph"):
        raise ParameterError(f"partition {partition!r} is unknown", "use 'slab' or 'graph'")
    if partition == "slab" and (size == 1 or shape[0] >= MIN_SLAB_LAYERS * size):
        mesh = _slab_mesh(comm, kept, shape, vs, origin, displacement, element)
    else:  # thin slabs: distribute the cells with the graph partitioner
        r = comm.rank
        cells = _hex_cells(kept[kept.size * r // size:kept.size * (r + 1) // size], shape)
        n_nodes = (shape[0] + 1) * (shape[1] + 1) * (shape[2] + 1)
        x = _node_coords(np.arange(n_nodes * r // size, n_nodes * (r + 1) // size), shape,
                         vs, origin, displacement)
        mesh = dmesh.create_mesh(comm, cells, element, x, dmesh.create_cell_partitioner(
            dmesh.GhostMode.shared_facet, 2))
    top = mesh.topology
    tdim = 3
    n_owned = top.index_map(tdim).size_local
    n_local = n_owned + top.index_map(tdim).num_ghosts
    voxel_of = kept[np.asarray(top.original_cell_index[:n_local], np.int64)]
    ph_cell = labels.phases.ravel()[voxel_of]
    pa_owned = None if labels.particles is None else labels.particles.ravel()[voxel_of[:n_owned]]
    phases, particles = cell_tags(mesh, ph_cell[:n_owned], pa_owned)
    facets, areas = facet_tags(mesh, ph_cell, shape, vs, origin)
    summary = summarise_mesh(comm, mesh, ph_cell[:n_owned], pa_owned, vs, areas, labels)
    summary["volume_um3"] = phase_volumes(mesh, phases)
    return HexMesh(mesh, phases, particles, facets, summary)


def cell_tags(mesh, phase_of_cell: np.ndarray, particle_of_cell: np.ndarray | None
              ) -> tuple:
    """Cell tags ``phases`` and ``particles`` of the owned cells of a mesh.

    Parameters
    ----------
    mesh : dolfinx.mesh.Mesh
        The mesh.
    phase_of_cell : numpy.ndarray of int, shape (n_owned,)
        Phase code of each owned cell, in local cell order.
    particle_of_cell : numpy.ndarray of int, shape (n_owned,), optional
        Particle id (0 = none) of each owned cell.

    Returns
    -------
    phases : dolfinx.mesh.MeshTags
        Cell tags named ``phases``.
    particles : dolfinx.mesh.MeshTags or None
        Cell tags named ``particles``; None without particle ids.
    """
    import dolfinx.mesh as dmesh

    owned = np.arange(len(phase_of_cell), dtype=np.int32)
    phases = dmesh.meshtags(mesh, 3, owned, np.asarray(phase_of_cell).astype(np.int32))
    phases.name = "phases"
    particles = None
    if particle_of_cell is not None:
        particles = dmesh.meshtags(mesh, 3, owned,
                                   np.asarray(particle_of_cell).astype(np.int32))
        particles.name = "particles"
    return phases, particles


def phase_volumes(mesh, phases) -> dict:
    """Volume of each phase integrated over the mesh cells (exact for moved nodes).

    One assembly of the cell volumes, summed per phase code over the owned cells and over
    the ranks.

    Parameters
    ----------
    mesh : dolfinx.mesh.Mesh
        The mesh (um).
    phases : dolfinx.mesh.MeshTags
        Cell tags with phase codes.

    Returns
    -------
    dict
        Phase name to volume (um3), for the phases present.
    """
    import dolfinx.fem as fem
    import ufl
    from mpi4py import MPI

    n = mesh.topology.index_map(mesh.topology.dim).size_local
    V0 = fem.functionspace(mesh, ("DG", 0))
    cell_volume = fem.assemble_vector(fem.form(ufl.TestFunction(V0) * ufl.dx)).array
    owned = phases.indices < n
    cells = phases.indices[owned]
    sums = np.bincount(phases.values[owned], minlength=max(PHASE.values()) + 1,
                       weights=cell_volume[V0.dofmap.list[cells, 0]])
    have = np.bincount(phases.values[owned], minlength=max(PHASE.values()) + 1) > 0
    sums = mesh.comm.allreduce(sums, op=MPI.SUM)
    have = mesh.comm.allreduce(have.astype(np.int64), op=MPI.SUM) > 0
    return {name: float(sums[code]) for name, code in PHASE.items() if have[code]}


def facet_areas(mesh, facets: np.ndarray) -> np.ndarray:
    """Area of triangle or quadrilateral facets from their vertex coordinates.

    Quadrilaterals (DOLFINx vertex order) take half the cross product of the diagonals.

    Parameters
    ----------
    mesh : dolfinx.mesh.Mesh
        The mesh (um).
    facets : numpy.ndarray of int, shape (n,)
        Local facet indices.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Areas (um2).
    """
    import dolfinx.mesh as dmesh

    if facets.size == 0:
        return np.zeros(0)
    geo = dmesh.entities_to_geometry(mesh, 2, facets.astype(np.int32))
    p = mesh.geometry.x[geo]
    if p.shape[1] == 3:
        cr = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    else:
        cr = np.cross(p[:, 3] - p[:, 0], p[:, 2] - p[:, 1])
    return 0.5 * np.linalg.norm(cr, axis=1)


def facet_tags(mesh, ph_cell: np.ndarray, shape, vs, origin):
    """Facet tags (module notes) of the owned facets and the tagged area per tag.

    Parameters
    ----------
    mesh : dolfinx.mesh.Mesh
        The mesh (um).
    ph_cell : numpy.ndarray of int, shape (n_local,)
        Phase code of every local cell, owned and ghost.
    shape : (int, int, int)
        Shape (z, y, x) of the labels the mesh covers.
    vs, origin : numpy.ndarray, shape (3,)
        Voxel size and first voxel centre (z, y, x; um), which place the box faces.

    Returns
    -------
    facets : dolfinx.mesh.MeshTags
        Facet tags named ``facets`` (:data:`FACET`).
    stats : (numpy.ndarray, numpy.ndarray)
        Per tag value on this rank: the facet count and the area (um2).
    """
    import dolfinx.mesh as dmesh

    top = mesh.topology
    top.create_connectivity(2, 3)
    f2c = top.connectivity(2, 3)
    n_f = top.index_map(2).size_local  # owned facets only: each tagged once over ranks
    off = f2c.offsets
    ncell = np.diff(off)[:n_f]
    first = f2c.array[off[:n_f]]
    second = np.where(ncell == 2, f2c.array[np.minimum(off[:n_f] + 1, len(f2c.array) - 1)],
                      -1)
    values = np.zeros(n_f, np.int32)
    # exterior facets: on a face of the box, or walls of left-out phases
    ext = np.flatnonzero(ncell == 1)
    if ext.size:
        mid = dmesh.compute_midpoints(mesh, 2, ext.astype(np.int32))
        lo = origin[::-1] - 0.5 * vs[::-1]  # (x, y, z) of the box corners
        hi = lo + np.array(shape[::-1]) * vs[::-1]
        tol = 1e-6 * vs.min()
        v = np.full(ext.size, FACET["pore_surface"], np.int32)
        for axis, (nlo, nhi) in enumerate((("x_min", "x_max"), ("y_min", "y_max"),
                                           ("collector", "separator"))):
            v[np.abs(mid[:, axis] - lo[axis]) < tol] = FACET[nlo]
            v[np.abs(mid[:, axis] - hi[axis]) < tol] = FACET[nhi]
        values[ext] = v
    both = np.flatnonzero(ncell == 2)
    a, b = ph_cell[first[both]], ph_cell[second[both]]

    def pair(set1, set2) -> np.ndarray:
        return (np.isin(a, set1) & np.isin(b, set2)) | (np.isin(b, set1) & np.isin(a, set2))

    values[both[pair(PARTICLE_PHASES, MATRIX_PHASES)]] = FACET["si_interface"]
    values[both[pair((PHASE["copper"],), ELECTRODE_PHASES)]] = FACET["cu_interface"]
    values[both[pair((PHASE["separator"],), ELECTRODE_SOLIDS)]] = FACET["separator_interface"]
    tagged = np.flatnonzero(values).astype(np.int32)
    facets = dmesh.meshtags(mesh, 2, tagged, values[tagged])
    facets.name = "facets"
    area = facet_areas(mesh, tagged)
    areas = np.bincount(values[tagged], weights=area,
                        minlength=max(FACET.values()) + 1)
    counts = np.bincount(values[tagged], minlength=max(FACET.values()) + 1)
    return facets, (counts, areas)


def _allsum(comm, a: np.ndarray) -> np.ndarray:
    """Sum of per-rank 1D arrays of different lengths (zero-padded)."""
    parts = comm.allgather(np.asarray(a))
    n = max(len(p) for p in parts)
    return sum(np.pad(p, (0, n - len(p))) for p in parts)


def summarise_mesh(comm, mesh, ph: np.ndarray, pa: np.ndarray | None, vs: np.ndarray,
             facet_stats: tuple, labels: Labels) -> dict:
    """Summary numbers of a mesh shared by the routes (``summary.json``).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Communicator of the mesh.
    mesh : dolfinx.mesh.Mesh
        The mesh.
    ph, pa : numpy.ndarray of int, shape (n_owned,)
        Phase code and particle id (or None) of the owned cells.
    vs : numpy.ndarray, shape (3,)
        Voxel size (z, y, x; um) of one cell of the voxel route.
    facet_stats : (numpy.ndarray, numpy.ndarray)
        Per-rank facet count and area (um2) per tag (:func:`facet_tags`).
    labels : Labels
        The labels meshed (their voxel volumes and particle count are recorded).

    Returns
    -------
    dict
        ``cells``, ``vertices``, ``cell_volume_um3``, ``volume_um3`` and ``voxel_volume_um3``
        per phase, ``facets`` and ``area_um2`` per tag, ``jacobian`` range (um3) and, with
        particles, their count and volumes.
    """
    cell_volume = float(np.prod(vs))
    counts = _allsum(comm, np.bincount(ph, minlength=len(PHASE)))
    fc = _allsum(comm, facet_stats[0])
    fa = _allsum(comm, facet_stats[1])
    voxel_counts = np.bincount(labels.phases.ravel(), minlength=len(PHASE))
    out = {
        "cells": int(mesh.topology.index_map(3).size_global),
        "vertices": int(mesh.geometry.index_map().size_global),
        "cell_volume_um3": cell_volume,
        "volume_um3": {name: float(counts[c]) * cell_volume for name, c in PHASE.items()
                       if counts[c]},
        "voxel_volume_um3": {name: float(voxel_counts[c]) * cell_volume
                             for name, c in PHASE.items() if voxel_counts[c]},
        "facets": {name: int(fc[v]) for name, v in FACET.items() if fc[v]},
        "area_um2": {name: float(fa[v]) for name, v in FACET.items()
                     if fc[v] and name != "pore_surface"},
        "jacobian": {"min": cell_volume, "max": cell_volume},  # um3, reference cell [0, 1]^3
    }
    if pa is not None:
        ids = _allsum(comm, np.bincount(pa))
        vox = np.bincount(labels.particles.ravel())
        out["particles"] = int((ids[1:] > 0).sum())
        out["particle_volume_um3"] = {str(i): float(ids[i]) * cell_volume
                                      for i in np.flatnonzero(ids) if i > 0}
        out["particles_in_labels"] = int((vox[1:] > 0).sum())
    return out


def voxel_mesh(comm, labels: Labels, coarsen_by: int = 1, drop_phases: tuple = (),
               min_speck_voxels: int = 0, smooth: int = 0, partition: str = "slab") -> HexMesh:
    """The voxel route: coarsen, clean, optionally smooth and mesh labels as hexahedra.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Communicator of the mesh.
    labels : Labels
        Phases and optional particle ids; every rank holds them.
    coarsen_by : int
        Majority coarsening factor (:func:`coarsen`).
    drop_phases : tuple of int
        Phase codes left out of the mesh (their walls get ``pore_surface``).
    min_speck_voxels : int
        Pieces of a phase smaller than this take the phase around them (:func:`remove_specks`).
    smooth : int
        Taubin passes of the interfaces (:mod:`anodetwin.mesh.smooth`); 0: none.
    partition : {"slab", "graph"}
        Cell distribution (:func:`hex_mesh`).

    Returns
    -------
    HexMesh
        The summary records the parameters, the planes cut by coarsening, the specks changed
        and the time.

    Raises
    ------
    ParameterError
        For unknown drop phases, a bad coarsening factor, partition or smoothing parameters,
        or when every voxel is dropped.
    """
    import time

    from anodetwin.mesh.smooth import corner_jacobians, smooth_interfaces

    unknown = sorted(set(int(c) for c in drop_phases) - set(PHASE.values()))
    if unknown:
        raise ParameterError(f"drop phase(s) {unknown} are not phase codes",
                             "use codes of " + ", ".join(f"{v} {k}" for k, v in PHASE.items()))
    t0 = time.perf_counter()
    lab, cut = coarsen(labels, coarsen_by)
    lab, changed = remove_specks(lab, min_speck_voxels)
    disp, info = (smooth_interfaces(lab.phases, smooth) if smooth else (None, {}))
    hm = hex_mesh(comm, lab, tuple(drop_phases), disp, partition)
    cell = float(np.prod(lab.voxel_size_um))
    if disp is not None:
        jac = corner_jacobians(disp)
        hm.summary["jacobian"] = {"min": float(jac.min()) * cell, "max": float(jac.max()) * cell}
    hm.summary.update({"smoothing": {"iterations": int(smooth), **info}} if smooth else {})
    hm.summary.update({
        "route": "voxel", "ranks": comm.size, "partition": partition,
        "coarsen": int(coarsen_by),
        "planes_cut": list(cut), "speck_voxels_changed": changed,
        "drop_phases": list(drop_phases), "voxel_size_um": list(labels.voxel_size_um),
        "origin_um": list(labels.origin_um), "source": labels.source,
        "seconds": time.perf_counter() - t0})
    return hm
