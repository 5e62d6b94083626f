"""Particle instances from a Si mask and the particle table.

Touching particles are split by a watershed of the negative Euclidean distance transform
(computed with the per-axis voxel size, so a sphere in physical space that is an ellipsoid
in voxels keeps one maximum) with markers at its h-maxima (plateaus standing ``h`` voxels of
the finest axis above their surroundings, so noise on the distance map does not
over-split); fragments below a minimum volume are removed and ids renumbered 1..n in raster
order of their first voxel.

Particle table (:data:`PARTICLE_TABLE`; lengths in um, volumes in um3, positions (z, y, x)
of the volume's grid scaled by the per-axis voxel size (z, y, x), the first voxel centre
at 0): ``id``, ``centroid_{z,y,x}_um``, ``volume_um3``,
``equivalent_diameter_um`` (sphere of equal volume), ``bbox_{z0,y0,x0,z1,y1,x1}`` (voxels,
end exclusive), ``surface_um2`` (marching-cubes area), ``sphericity``
(pi^(1/3) (6 V)^(2/3) / A; 1 for a sphere, lower for irregular or voxel-stepped shapes),
``touching`` (number of other particles sharing a face) and ``distance_to_collector_um``
(centroid height above the collector interface).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.io import normalise_voxel_size, require_3d
from anodetwin.io.blocks import Block, BlockGrid, read_region, run_blocks, write_region
from anodetwin.segment._blockpass import gather
from anodetwin.segment._watershed import (
    ascend,
    basin_edges,
    basin_table,
    exact_region,
    merge_basins,
    offset_lengths,
    squared_edt,
)

__all__ = ["PARTICLE_TABLE", "label_particles", "particle_table", "touching_pairs",
           "squared_edt"]

PARTICLE_TABLE = np.dtype([
    ("id", "i4"), ("centroid_z_um", "f8"), ("centroid_y_um", "f8"), ("centroid_x_um", "f8"),
    ("volume_um3", "f8"), ("equivalent_diameter_um", "f8"),
    ("bbox_z0", "i4"), ("bbox_y0", "i4"), ("bbox_x0", "i4"),
    ("bbox_z1", "i4"), ("bbox_y1", "i4"), ("bbox_x1", "i4"),
    ("surface_um2", "f8"), ("sphericity", "f8"), ("touching", "i4"),
    ("distance_to_collector_um", "f8")])


def _triple(voxel_size_um: float | tuple) -> np.ndarray:
    """Voxel size as a (3,) float array (z, y, x) in um; one value is isotropic."""
    return np.asarray(normalise_voxel_size(voxel_size_um, "voxel size"), float)


def label_particles(mask: Any, h: float = 1.0, min_voxels: int = 27,
                    voxel_size_um: float | tuple = 1.0, *, block_shape: Any = None,
                    memory_limit: Any = None, workers: int = 1, out: Any = None,
                    particle_code: int | None = None) -> Any:
    """Instance labels (int32, 0 = none) of a binary particle mask.

    Parameters
    ----------
    mask : array of bool, or a dataset / LazyVolume of it
        Particle phase (e.g. non-lithiated Si), (z, y, x).
    h : float
        h-maxima height of the distance map, in edges of the finest voxel axis: larger
        merges more.
    min_voxels : int
        Objects smaller than this (voxels) are removed.
    voxel_size_um : float or (z, y, x) floats
        Voxel size (um; one value: isotropic). The distance map is Euclidean in physical
        space (per-axis sampling), expressed in edges of the finest axis.
    block_shape : int or 3 int, optional
        Process the mask in blocks of this core size (:mod:`anodetwin.io.blocks`); the
        labels are the same for any block size. Default: one block, or blocks sized for
        ``memory_limit``.
    memory_limit : str or int, optional
        Memory ceiling (e.g. ``"4GB"``) from which the block size is derived.
    workers : int
        Blocks processed at once (threads).
    out : array-like, optional
        Where to write the labels (an int32 array or an HDF5/Zarr dataset of the mask's
        shape), block by block; default a new array.
    particle_code : int, optional
        ``mask`` holds phase codes: the particles are the voxels of this code.

    Returns
    -------
    numpy.ndarray of int32 or ``out``
        Particle ids 1..n in raster order of their first voxel (0 = none).

    Raises
    ------
    DimensionError
        If the mask is not 3-D.
    ParameterError
        If ``h`` is not positive.
    """
    from anodetwin.io.blocks import block_shape_for

    m = mask if not isinstance(mask, np.ndarray) or particle_code is not None else \
        np.asarray(mask, bool)
    require_3d(m.shape, "particle mask")
    if h <= 0:
        raise ParameterError(f"h-maxima height {h} is not positive", "give h > 0 (voxels)")
    vs = _triple(voxel_size_um)
    spacing = vs / vs.min()
    if block_shape is None and memory_limit is not None:
        block_shape = block_shape_for(m.shape, BYTES_PER_VOXEL, HALO, memory_limit, workers,
                                      max_side=MAX_SIDE)
    grid = BlockGrid(m.shape, block_shape, HALO)
    cache: dict = {} if len(grid) == 1 else None  # one block: the second pass reuses it
    read = lambda box: _mask(read_region(m, box), particle_code)  # noqa: E731
    parts = gather(grid, lambda b: _block_graph(read, m.shape, b, spacing, cache), workers)
    lut, ids = _labels_lut(parts, h, min_voxels)
    out = np.zeros(m.shape, np.int32) if out is None else out

    def write(b: Block) -> None:
        terms, local = (cache.pop(b.index) if cache else
                        _core_basins(read, m.shape, b, spacing)[0:5:4])
        per = np.append(lut[np.searchsorted(ids, terms)], 0).astype(np.int32)
        write_region(out, b.core, per[local])  # local -1 (no particle) takes the 0

    for _ in run_blocks(write, grid, workers):
        pass
    return out


#: Halo (voxels) a block is first read with; widened where a distance or an ascent needs
#: more (particles larger than about the halo).
HALO = 16
#: Working memory of the instance passes per voxel of a block with its halo (bytes).
BYTES_PER_VOXEL = 64
#: Largest block core side (voxels) of the instance passes: beyond it the halo's share
#: (doubled to 32 voxels where particles are large) falls little, and the memory held keeps
#: growing.
MAX_SIDE = 128
#: Largest block side of the particle table's reductions (no halo: small blocks cost
#: nothing more).
TABLE_MAX_SIDE = 128
#: Working memory of the particle table per voxel of a block (bytes).
TABLE_BYTES_PER_VOXEL = 48


def _mask(values: np.ndarray, code: int | None) -> np.ndarray:
    return np.ascontiguousarray(values == code if code is not None else values, dtype=bool)


#: Halo that the last block needed (blocks start from it: a new block rarely needs more).
_halo_hint = [HALO]


def _block_basins(read: Any, shape: tuple, b: Block, spacing: np.ndarray) -> tuple:
    """Basins (box flat index of the terminal, -1 outside the mask) of a block's core
    widened by one voxel, with the distance map, the core's box slices and the box; the
    halo is doubled until every distance and ascent that the core needs is exact."""
    halo = _halo_hint[0]
    while True:
        outer = tuple(slice(max(0, c.start - halo), min(n, c.stop + halo))
                      for c, n in zip(b.core, shape, strict=True))
        lo_in = np.array([o.start > 0 for o in outer])
        hi_in = np.array([o.stop < n for o, n in zip(outer, shape, strict=True)])
        dist, exact = _distances(read(outer), spacing, lo_in, hi_in)
        inner = tuple(slice(c.start - o.start, c.stop - o.start)
                      for c, o in zip(b.core, outer, strict=True))
        lo = np.array([max(0, s.start - 1) for s in inner])
        hi = np.array([min(n, s.stop + 1) for s, n in zip(inner, dist.shape, strict=True)])
        basin = np.full(dist.shape, -2, np.int32 if dist.size < 2**31 else np.int64)
        ok = ascend(dist, exact, lo_in, hi_in, lo, hi, np.array([o.start for o in outer]),
                    offset_lengths(spacing), basin)
        del exact
        if ok or not (lo_in.any() or hi_in.any()):
            _halo_hint[0] = max(_halo_hint[0], halo)
            return basin, dist, inner, outer
        del basin, dist  # before the wider box is made
        halo *= 2


def _distances(mb: np.ndarray, spacing: np.ndarray, lo_in: np.ndarray, hi_in: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Distance map (float32) of a box of the mask and the voxels where it is exact
    (:func:`exact_region`); the float64 squared distances live only here, and their square
    root is taken in place (peak: 14 bytes per box voxel, not 22)."""
    d2 = squared_edt(mb, spacing)
    exact = exact_region(d2, lo_in, hi_in, spacing)
    np.sqrt(d2, out=d2)
    return d2.astype(np.float32), exact


def _global(flat: np.ndarray, outer: tuple, shape: tuple) -> np.ndarray:
    """Whole-volume flat indices of box flat indices."""
    n = [o.stop - o.start for o in outer]
    z, r = np.divmod(flat, n[1] * n[2])
    y, x = np.divmod(r, n[2])
    return ((z + outer[0].start) * shape[1] + y + outer[1].start) * shape[2] \
        + x + outer[2].start


def _core_basins(read: Any, shape: tuple, b: Block, spacing: np.ndarray) -> tuple:
    """Basins of a block's core: terminals (whole-volume flat index), voxel counts, first
    voxels (whole-volume flat index), peaks, each core voxel's index into them, and the
    basin map, distances, core slices and box of :func:`_block_basins`."""
    basin, dist, inner, outer = _block_basins(read, shape, b, spacing)
    lo, hi = np.array([s.start for s in inner]), np.array([s.stop for s in inner])
    terms, counts, first, local = basin_table(basin, lo, hi)
    peak = dist.ravel()[terms]
    return (_global(terms, outer, shape), counts, _global(first, outer, shape), peak, local,
            basin, dist, lo, hi, outer)


def _block_graph(read: Any, shape: tuple, b: Block, spacing: np.ndarray,
                 cache: dict | None) -> tuple:
    """Basins of a block's core (ids, voxel counts, first voxel, peak distance) and the
    highest saddle to each adjacent basin (edges owned by the core)."""
    ids, counts, first, peak, local, basin, dist, lo, hi, outer = _core_basins(
        read, shape, b, spacing)
    if cache is not None:
        cache[b.index] = (ids, local)
    ea, eb, s = basin_edges(basin, dist, lo, hi)
    ea, eb = _global(ea, outer, shape), _global(eb, outer, shape)
    swap = ea > eb
    ea, eb = np.where(swap, eb, ea), np.where(swap, ea, eb)
    return (ids, counts, first, peak) + _max_saddles(ea, eb, s)


def _max_saddles(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> tuple:
    """The highest saddle of each (a, b) pair."""
    if a.size == 0:
        return a, b, s
    order = np.lexsort((-s, b, a))
    a, b, s = a[order], b[order], s[order]
    first = np.ones(a.size, bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], s[first]


def _labels_lut(parts: list, h: float, min_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """Label of every basin (lookup table over the sorted basin ids) after merging by
    dynamics, removing regions under ``min_voxels`` and numbering 1..n by first voxel."""
    ids_all = np.concatenate([p[0] for p in parts])
    ids, inv = np.unique(ids_all, return_inverse=True)
    counts = np.zeros(ids.size, np.int64)
    np.add.at(counts, inv, np.concatenate([p[1] for p in parts]))
    first = np.full(ids.size, np.iinfo(np.int64).max)
    np.minimum.at(first, inv, np.concatenate([p[2] for p in parts]))
    peak = np.zeros(ids.size, np.float32)
    peak[inv] = np.concatenate([p[3] for p in parts])
    a, b, s = _max_saddles(*(np.concatenate([p[k] for p in parts]) for k in (4, 5, 6)))
    a, b = np.searchsorted(ids, a), np.searchsorted(ids, b)
    order = np.lexsort((b, a, -s))
    region = merge_basins(peak, a[order], b[order], s[order], float(h))
    r_count = np.zeros(ids.size, np.int64)
    np.add.at(r_count, region, counts)
    r_first = np.full(ids.size, np.iinfo(np.int64).max)
    np.minimum.at(r_first, region, first)
    roots = np.flatnonzero((region == np.arange(ids.size))
                           & (r_count >= max(1, int(min_voxels))))
    label = np.zeros(ids.size, np.int32)
    label[roots[np.argsort(r_first[roots], kind="stable")]] = np.arange(
        1, roots.size + 1, dtype=np.int32)
    return label[region], ids


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs of different particle ids that share a voxel face (6-connectivity).

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (nz, ny, nx)
        Particle ids (0 = none).

    Returns
    -------
    numpy.ndarray, shape (K, 2)
        Each touching pair once, smaller id first, rows in ascending order; the dtype of
        ``labels``.
    """
    lab = np.asarray(labels)
    return _contacts(lab, lab.shape)


def _surface(sub: np.ndarray, vs: np.ndarray) -> float:
    """Marching-cubes area (um2) of a mask with (z, y, x) voxel size ``vs`` (um)."""
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(sub.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, 0.5, spacing=tuple(float(v) for v in vs))
    return float(mesh_surface_area(verts, faces))


def particle_table(labels: Any, voxel_size_um: float | tuple = 1.0,
                   collector_z: float | np.ndarray | None = None, *,
                   block_shape: Any = None, memory_limit: Any = None,
                   workers: int = 1) -> np.ndarray:
    """Table of the particles of an instance volume (:data:`PARTICLE_TABLE`).

    Counts, coordinate sums, bounding boxes and contacts are reduced block by block in
    integers, so the table is the same for any block size; each particle's surface is
    meshed on its own bounding box.

    Parameters
    ----------
    labels : array of int, or a dataset / LazyVolume of it
        Particle ids (0 = none), (z, y, x).
    voxel_size_um : float or (z, y, x) floats
        Voxel size (um; one value: isotropic). Centroids, volumes, surfaces and heights
        use the size of each axis.
    collector_z : float or (y, x) array, optional
        Collector interface (voxels along z); per column it is taken under each centroid.
    block_shape : int or 3 int, optional
        Read the labels in blocks of this size (default: whole, or blocks sized for
        ``memory_limit``).
    memory_limit : str or int, optional
        Memory ceiling (e.g. ``"4GB"``) from which the block size is derived.
    workers : int
        Blocks processed at once (threads).

    Returns
    -------
    numpy.ndarray
        One row per particle (:data:`PARTICLE_TABLE`), in id order.
    """
    from anodetwin.io.blocks import block_shape_for

    vs = _triple(voxel_size_um)
    if block_shape is None and memory_limit is not None:
        block_shape = block_shape_for(labels.shape, TABLE_BYTES_PER_VOXEL, 1, memory_limit,
                                      workers, max_side=TABLE_MAX_SIDE)
    grid = BlockGrid(labels.shape, block_shape, 0)
    totals = _StatTotals()  # summed as blocks finish: memory for one table, not one a block
    for _, part in run_blocks(lambda b: _block_stats(labels, b), grid, workers):
        totals.add(part)
    stats = totals.result()
    counts, sums, lo, hi, pairs = stats
    idx = np.flatnonzero(counts)
    idx = idx[idx > 0]
    t = np.zeros(idx.size, PARTICLE_TABLE)
    if not idx.size:
        return t
    com = sums[:, idx].T / counts[idx, None]
    touch = np.bincount(pairs.ravel(), minlength=counts.size)[idx]
    t["id"] = idx
    t["centroid_z_um"], t["centroid_y_um"], t["centroid_x_um"] = (com * vs).T
    t["volume_um3"] = counts[idx] * float(np.prod(vs))
    t["equivalent_diameter_um"] = (6 * t["volume_um3"] / np.pi) ** (1 / 3)
    t["touching"] = touch
    for k, ax in enumerate("zyx"):
        t[f"bbox_{ax}0"], t[f"bbox_{ax}1"] = lo[k, idx], hi[k, idx]
    for row, i in enumerate(idx):
        box = tuple(slice(int(lo[k, i]), int(hi[k, i])) for k in range(3))
        area = _surface(np.asarray(read_region(labels, box)) == i, vs)
        t["surface_um2"][row] = area
        t["sphericity"][row] = np.pi ** (1 / 3) * (6 * t["volume_um3"][row]) ** (2 / 3) / area
    t["distance_to_collector_um"] = (com[:, 0] - _collector_under(collector_z, com)) * vs[0]
    return t


def _collector_under(collector_z: float | np.ndarray | None, com: np.ndarray) -> np.ndarray:
    """Collector interface (voxels) under each centroid (z, y, x voxels)."""
    if collector_z is None:
        return np.full(len(com), -0.5)
    cz = np.asarray(collector_z, float)
    if cz.ndim == 0:
        return np.full(len(com), float(cz))
    yy = np.clip(np.rint(com[:, 1]).astype(int), 0, cz.shape[0] - 1)
    xx = np.clip(np.rint(com[:, 2]).astype(int), 0, cz.shape[1] - 1)
    return cz[yy, xx]


def _block_stats(labels: Any, b: Block) -> tuple:
    """Voxel counts, coordinate sums (3, n), bounding boxes (3, n) and face contacts of the
    labels of a block's core (contacts with the next voxel along each axis included)."""
    shape = labels.shape
    box = tuple(slice(c.start, min(n, c.stop + 1)) for c, n in zip(b.core, shape, strict=True))
    lab = np.asarray(read_region(labels, box))
    core = lab[tuple(slice(0, c.stop - c.start) for c in b.core)]
    n = int(core.max()) + 1 if core.size else 1
    flat = core.ravel()
    counts = np.bincount(flat, minlength=n)
    sums = np.zeros((3, n))
    lo, hi = np.full((3, n), np.iinfo(np.int64).max), np.full((3, n), -1)
    for ax in range(3):
        pos = np.arange(b.core[ax].start, b.core[ax].stop)
        per = [pos if a == ax else np.ones(1, int) for a in range(3)]
        coord = np.broadcast_to(per[0][:, None, None] * per[1][None, :, None]
                                * per[2][None, None, :], core.shape)
        sums[ax] = np.bincount(flat, weights=coord.ravel(), minlength=n)
    for i, sl in enumerate(ndimage.find_objects(core)):
        if sl is not None:
            lo[:, i + 1] = [s.start + c.start for s, c in zip(sl, b.core, strict=True)]
            hi[:, i + 1] = [s.stop + c.start for s, c in zip(sl, b.core, strict=True)]
    return counts, sums, lo, hi, _contacts(lab, core.shape)


def _contacts(lab: np.ndarray, core_shape: tuple) -> np.ndarray:
    """Pairs of different non-zero ids sharing a face, with the first voxel in the core."""
    pairs = []
    for ax in range(3):
        m = min(core_shape[ax], lab.shape[ax] - 1)
        a = tuple(slice(0, m) if k == ax else slice(0, core_shape[k]) for k in range(3))
        b = tuple(slice(1, m + 1) if k == ax else slice(0, core_shape[k]) for k in range(3))
        x, y = lab[a].ravel(), lab[b].ravel()
        sel = (x > 0) & (y > 0) & (x != y)
        pairs.append(np.sort(np.stack([x[sel], y[sel]], axis=1), axis=1))
    p = np.concatenate(pairs)
    return np.unique(p, axis=0) if len(p) else p.reshape(0, 2)


class _StatTotals:
    """Block statistics of :func:`_block_stats` summed over blocks as they finish (integer
    counts and coordinate sums: exact in any order)."""

    def __init__(self):
        self.counts, self.sums = np.zeros(0, np.int64), np.zeros((3, 0))
        self.lo = np.zeros((3, 0), np.int64)
        self.hi = np.zeros((3, 0), np.int64)
        self.pairs: list = []

    def _grow(self, n: int) -> None:
        m = n - self.counts.size
        if m > 0:
            self.counts = np.pad(self.counts, (0, m))
            self.sums = np.pad(self.sums, ((0, 0), (0, m)))
            self.lo = np.pad(self.lo, ((0, 0), (0, m)), constant_values=np.iinfo(np.int64).max)
            self.hi = np.pad(self.hi, ((0, 0), (0, m)), constant_values=-1)

    def add(self, part: tuple) -> None:
        c, s, a, b, pairs = part
        self._grow(c.size)
        n = c.size
        self.counts[:n] += c
        self.sums[:, :n] += s
        self.lo[:, :n] = np.minimum(self.lo[:, :n], a)
        self.hi[:, :n] = np.maximum(self.hi[:, :n], b)
        self.pairs.append(pairs)

    def result(self) -> tuple:
        pairs = np.concatenate(self.pairs).astype(np.int64) if self.pairs else \
            np.zeros((0, 2), np.int64)
        return (self.counts, self.sums, self.lo, self.hi,
                np.unique(pairs, axis=0) if len(pairs) else pairs)
