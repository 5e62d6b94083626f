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
from anodetwin.segment._watershed import (
    ascend,
    ascend_from,
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
        If ``h`` is not positive, or ``out`` is not signed integers of at least 32 bits
        of the mask's shape; with ``memory_limit``, if a particle is so thick that its
        exact distances need a box :data:`BOX_SLACK` times beyond the limit's budget.
    """
    from anodetwin.io.blocks import block_shape_for

    m = mask if not isinstance(mask, np.ndarray) or particle_code is not None else \
        np.asarray(mask, bool)
    require_3d(m.shape, "particle mask")
    if not np.isfinite(h) or h <= 0:
        raise ParameterError(f"h-maxima height {h} is not a positive number",
                             "give h > 0 (voxels)")
    vs = _triple(voxel_size_um)
    spacing = vs / vs.min()
    if block_shape is None and memory_limit is not None:
        block_shape = block_shape_for(m.shape, BYTES_PER_VOXEL, HALO, memory_limit, workers,
                                      max_side=MAX_SIDE)
    grid = BlockGrid(m.shape, block_shape, HALO)
    read = lambda box: _mask(read_region(m, box), particle_code)  # noqa: E731
    out = np.zeros(m.shape, np.int32) if out is None else _checked_out(out, m.shape)
    bp = _BasinPass(read, m.shape, spacing, out)
    if memory_limit is not None:
        bp.limit = (memory_limit, workers)
    parts = {b.index: r for b, r in run_blocks(bp.graph, grid, workers)}
    chains = _resolve_pending(bp, grid, np.concatenate([p[7] for p in parts.values()]),
                              workers)
    lut, ids = _labels_lut(list(parts.values()), h, min_voxels, chains)

    def write(b: Block) -> None:  # the core's basin indices, written by the first pass
        local = np.asarray(read_region(out, b.core))
        terms = _through(parts[b.index][0], chains)[0]
        per = np.append(lut[np.searchsorted(ids, terms)], 0).astype(np.int32)
        write_region(out, b.core, per[local])  # local -1 (no particle) takes the 0

    for _ in run_blocks(write, grid, workers):
        pass
    return out


def _checked_out(out: Any, shape: tuple) -> Any:
    """``out`` if it can take the labels: the mask's shape and signed integers of at least
    32 bits (the first pass keeps basin indices there, -1 outside the mask)."""
    dt = np.dtype(out.dtype)
    if tuple(out.shape) != tuple(shape) or dt.kind != "i" or dt.itemsize < 4:
        raise ParameterError(f"labels output of shape {tuple(out.shape)} and dtype {dt} does "
                             f"not fit a particle mask of shape {tuple(shape)}",
                             "give an int32 array or dataset of the mask's shape")
    return out


#: Halo (voxels) a block is first read with; widened only where a core voxel's distance
#: needs more (particles larger than about the halo). Ascents that leave it are handed on
#: to the next block (pending voxels), so it does not grow with their length.
HALO = 16
#: Working memory of the instance passes per voxel of a block with its halo (bytes).
BYTES_PER_VOXEL = 64
#: A block's box may grow to this many times the memory limit's budget (measured peak:
#: about 14 of the budgeted 64 bytes per voxel) before the mask is refused.
BOX_SLACK = 4
#: Largest block core side (voxels) of the instance passes: beyond it the halo's share
#: (32 voxels where particles are large) falls little, and the memory held keeps growing.
MAX_SIDE = 128
#: Largest block side of the particle table's reductions (no halo: small blocks cost
#: nothing more).
TABLE_MAX_SIDE = 128
#: Working memory of the particle table per voxel of a block (bytes).
TABLE_BYTES_PER_VOXEL = 48


def _mask(values: np.ndarray, code: int | None) -> np.ndarray:
    return np.ascontiguousarray(values == code if code is not None else values, dtype=bool)


class _BasinPass:
    """Basins of the blocks of a mask: each block is read with a halo of :data:`HALO`
    voxels, widened only where a core voxel's distance is not exact in it (particles wider
    than about the halo); the halo a block took is kept, so the block resolves the pending
    voxels of its core in the same box. Each core's basin indices are written into ``out``
    (int32, -1 outside the mask) until their labels are known."""

    def __init__(self, read: Any, shape: tuple, spacing: np.ndarray, out: Any):
        self.read, self.shape, self.spacing, self.out = read, shape, spacing, out
        self.length = offset_lengths(spacing)
        self.halos: dict = {}
        self.limit: tuple | None = None  # (memory limit, workers) the boxes must fit

    def _check_box(self, b: Block, halo: int) -> None:
        """Refuse a box far beyond the memory limit (:data:`BOX_SLACK` times the blocks'
        budget): a particle about as wide as the blocks allow."""
        if self.limit is None:
            return
        from anodetwin.io.blocks import box_budget

        limit, workers = self.limit
        budget = box_budget(limit, BYTES_PER_VOXEL, workers)
        box = np.prod([min(n, c.stop + halo) - max(0, c.start - halo)
                       for c, n in zip(b.core, self.shape, strict=True)], dtype=float)
        if box > BOX_SLACK * budget:
            raise ParameterError(
                f"the particle mask has voxels more than {halo - 3} voxels inside a "
                f"particle: their exact distances need boxes of {box:.3g} voxels, beyond "
                f"memory limit "
                f"{limit} on {workers} worker{'s' if workers > 1 else ''}",
                "check the particle phase (a mask with almost no background has no "
                "particles to split), or raise the memory limit")

    def box(self, b: Block, halo: int) -> tuple:
        """Box of block ``b`` with ``halo``: box slices, distances, exactness, box sides
        inside the volume, the core in box coordinates."""
        outer = tuple(slice(max(0, c.start - halo), min(n, c.stop + halo))
                      for c, n in zip(b.core, self.shape, strict=True))
        lo_in = np.array([o.start > 0 for o in outer])
        hi_in = np.array([o.stop < n for o, n in zip(outer, self.shape, strict=True)])
        dist, exact = _distances(self.read(outer), self.spacing, lo_in, hi_in)
        inner = tuple(slice(c.start - o.start, c.stop - o.start)
                      for c, o in zip(b.core, outer, strict=True))
        return outer, dist, exact, lo_in, hi_in, inner

    def basins(self, b: Block) -> tuple:
        """Basin map (box flat index of the terminal or pending voxel; -1 outside the
        mask) of the core widened by one voxel, distances, the core's bounds (lo, hi) in
        the box, box slices and the pending voxels (whole-volume flat index)."""
        halo = self.halos.get(b.index, HALO)
        while True:
            outer, dist, exact, lo_in, hi_in, inner = self.box(b, halo)
            lo = np.array([max(0, s.start - 1) for s in inner])
            hi = np.array([min(n, s.stop + 1) for s, n in zip(inner, dist.shape, strict=True)])
            basin = np.full(dist.shape, -2, np.int32 if dist.size < 2**31 else np.int64)
            ok, pend = ascend(dist, exact, lo_in, hi_in, lo, hi,
                              np.array([o.start for o in outer]), self.length, basin)
            del exact
            if ok or not (lo_in.any() or hi_in.any()):
                self.halos[b.index] = halo
                lo, hi = np.array([s.start for s in inner]), np.array([s.stop for s in inner])
                return basin, dist, lo, hi, outer, _global(pend, outer, self.shape)
            halo = _wider_halo(halo, dist, lo, hi)
            del basin, dist  # before the wider box is made
            self._check_box(b, halo)

    def graph(self, b: Block) -> tuple:
        """Basins of a block's core: ids (whole-volume flat index of the terminal or pending
        voxel), voxel counts, first voxels (whole-volume flat index), peaks (distance at
        the id; meaningless for a pending id), the highest saddle to each adjacent basin
        (edges owned by the core) and the pending voxels. The core's indices into the ids
        go into ``out``."""
        basin, dist, lo, hi, outer, pend = self.basins(b)
        terms, counts, first, local = basin_table(basin, lo, hi)
        write_region(self.out, b.core, local)
        del local
        ea, eb, s = basin_edges(basin, dist, lo, hi)
        ea, eb = _global(ea, outer, self.shape), _global(eb, outer, self.shape)
        return ((_global(terms, outer, self.shape), counts, _global(first, outer, self.shape),
                 dist.ravel()[terms]) + _max_saddles(*_ordered(ea, eb), s) + (pend,))

    def climb(self, b: Block, seeds: np.ndarray) -> tuple:
        """Where the ascents from ``seeds`` (whole-volume flat indices in the core of
        ``b``) lead in the box of ``b``: the terminal or the next pending voxel
        (whole-volume flat index), whether it is pending, and the distance there."""
        halo = self.halos.get(b.index, HALO)
        local = tuple(np.unravel_index(seeds, self.shape))
        while True:
            outer, dist, exact, lo_in, hi_in, _ = self.box(b, halo)
            flat = np.ravel_multi_index(tuple(p - o.start for p, o in zip(
                local, outer, strict=True)), dist.shape)
            basin = np.full(dist.shape, -2, np.int32 if dist.size < 2**31 else np.int64)
            ok, res, pend = ascend_from(flat, dist, exact, lo_in, hi_in,
                                        np.array([o.start for o in outer]), self.length,
                                        basin)
            if ok or not (lo_in.any() or hi_in.any()):
                return (_global(res, outer, self.shape), np.isin(res, pend),
                        dist.ravel()[res])
            halo = 2 * halo  # not met: the block's own pass took the halo its core needs
            del basin, dist, exact


def _wider_halo(halo: int, dist: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> int:
    """A halo in which the distance of every voxel of the sub-box ``lo:hi`` grown by one
    is exact: the box's distance is an upper bound of the true one (the box sees fewer
    background voxels), and a voxel's distance is exact when the box's sides lie further
    away (:func:`~anodetwin.segment._watershed.exact_region`; spacing in edges of the
    finest axis, so a voxel is at least 1 long). Doubled where the box holds no
    background."""
    box = tuple(slice(max(0, a - 1), b + 1) for a, b in zip(lo, hi, strict=True))
    deepest = float(dist[box].max())
    if not np.isfinite(deepest):
        return 2 * halo
    return max(halo + 1, int(np.ceil(deepest)) + 3)


def _ordered(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pair (a, b) with the smaller first."""
    return np.minimum(a, b), np.maximum(a, b)


def _resolve_pending(bp: _BasinPass, grid: BlockGrid, pending: np.ndarray, workers: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Terminal of every pending voxel: the block that owns each one follows its ascent
    on, to a terminal or to a further pending voxel, until none is left.

    Returns the pending voxels (sorted, whole-volume flat index), their terminals and the
    distance at each terminal."""
    src, dst, is_pend, peak = [], [], [], []
    known = np.zeros(0, np.int64)
    todo = np.unique(pending)
    while todo.size:
        known = np.union1d(known, todo)
        coords = np.unravel_index(todo, grid.shape)
        owner = np.ravel_multi_index(tuple(c // s for c, s in zip(
            coords, grid.block_shape, strict=True)), grid.grid)
        blocks = [grid.block(tuple(int(i) for i in np.unravel_index(k, grid.grid)))
                  for k in np.unique(owner)]
        seeds = {b.index: todo[owner == np.ravel_multi_index(b.index, grid.grid)]
                 for b in blocks}
        nxt = []
        for b, (d, p, pk) in run_blocks(lambda b: bp.climb(b, seeds[b.index]), blocks,
                                        workers):
            src.append(seeds[b.index])
            dst.append(d)
            is_pend.append(p)
            peak.append(pk)
            nxt.append(d[p])
        todo = np.setdiff1d(np.concatenate(nxt), known) if nxt else todo[:0]
    return _follow(*(np.concatenate(x) if x else np.zeros(0) for x in
                     (src, dst, is_pend, peak)))


def _follow(src: np.ndarray, dst: np.ndarray, is_pend: np.ndarray, peak: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chains of pending voxels followed to their terminals (``src`` -> ``dst``, where
    ``dst`` may itself be pending)."""
    order = np.argsort(src, kind="stable")
    src, dst = src[order].astype(np.int64), dst[order].astype(np.int64)
    is_pend, peak = is_pend[order].astype(bool), peak[order].astype(np.float32)
    while is_pend.any():
        k = np.searchsorted(src, dst[is_pend])
        sel = np.flatnonzero(is_pend)
        dst[sel], peak[sel], is_pend[sel] = dst[k], peak[k], is_pend[k]
    return src, dst, peak


def _through(ids: np.ndarray, chains: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids with pending voxels replaced by their terminals, which were pending, and the
    distance at the terminal of those that were (``chains``: :func:`_resolve_pending`)."""
    src, dst, peak = chains
    if not src.size:
        return ids, np.zeros(ids.shape, bool), np.zeros(ids.shape, np.float32)
    k = np.minimum(np.searchsorted(src, ids), src.size - 1)
    hit = src[k] == ids
    return np.where(hit, dst[k], ids), hit, peak[k]


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


def _max_saddles(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> tuple:
    """The highest saddle of each (a, b) pair."""
    if a.size == 0:
        return a, b, s
    order = np.lexsort((-s, b, a))
    a, b, s = a[order], b[order], s[order]
    first = np.ones(a.size, bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], s[first]


def _labels_lut(parts: list, h: float, min_voxels: int, chains: tuple
                ) -> tuple[np.ndarray, np.ndarray]:
    """Label of every basin (lookup table over the sorted basin ids) after merging by
    dynamics, removing regions under ``min_voxels`` and numbering 1..n by first voxel;
    pending ids are first replaced by their terminals (``chains``)."""
    ids_all, was, chain_peak = _through(np.concatenate([p[0] for p in parts]), chains)
    ids, inv = np.unique(ids_all, return_inverse=True)
    counts = np.zeros(ids.size, np.int64)
    np.add.at(counts, inv, np.concatenate([p[1] for p in parts]))
    first = np.full(ids.size, np.iinfo(np.int64).max)
    np.minimum.at(first, inv, np.concatenate([p[2] for p in parts]))
    peak = np.zeros(ids.size, np.float32)
    peak[inv] = np.where(was, chain_peak, np.concatenate([p[3] for p in parts]))
    a, b = (_through(np.concatenate([p[k] for p in parts]), chains)[0] for k in (4, 5))
    s = np.concatenate([p[6] for p in parts])
    keep = a != b
    a, b, s = _max_saddles(*_ordered(a[keep], b[keep]), s[keep])
    a, b = np.searchsorted(ids, a), np.searchsorted(ids, b)
    order = np.lexsort((b, a, -s))
    region = merge_basins(peak, a[order], b[order], s[order], float(h))
    return _numbered(region, counts, first, min_voxels), ids


def _numbered(region: np.ndarray, counts: np.ndarray, first: np.ndarray, min_voxels: int
              ) -> np.ndarray:
    """Label of every basin: regions under ``min_voxels`` removed (0), the others numbered
    1..n in order of their first voxel."""
    n = region.size
    r_count = np.zeros(n, np.int64)
    np.add.at(r_count, region, counts)
    r_first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(r_first, region, first)
    roots = np.flatnonzero((region == np.arange(n)) & (r_count >= max(1, int(min_voxels))))
    label = np.zeros(n, np.int32)
    label[roots[np.argsort(r_first[roots], kind="stable")]] = np.arange(
        1, roots.size + 1, dtype=np.int32)
    return label[region]


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
