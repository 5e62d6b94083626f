"""Particle tracking across the steps of a series.

Each particle of step k is carried to step k+1 by a displacement prior and linked to the
particle of step k+1 its carried voxels overlap most (at least ``min_overlap`` of them);
a particle that overlaps nothing is linked to the nearest carried centroid within
``max_distance_um`` (a physical distance: each axis scaled by its voxel size), otherwise
its track ends. Lithiation shrinks the visible core, so a
core at k+1 lies inside the carried particle of k: overlap tolerates the loss of contrast.
Several particles of k may link to one of k+1 (cores merging in the image: their tracks
share it from then on) and a core that splits links to its largest piece.

Priors (z, y, x voxels): ``None`` (no motion), ``"thickness"`` (the electrode swells
uniformly along z from the collector: z' = z_c' + (z - z_c) T' / T, from the interfaces
of each step) or a callable ``prior(k, points) -> displacement`` giving the motion of
points of step k to step k+1 (e.g. from the DVC increments, :func:`dvc_prior`).

Tracks start at step 0 (or where a particle first appears unlinked) and hold per step the
particle id, its centroid (um: voxel position times the (z, y, x) voxel size), its visible
(non-lithiated) volume (um3: voxels times the product of the three sizes) and the centroid
displacement from the start of the track.

Block by block (bounded memory): each step's labels are read in blocks (arrays in memory,
HDF5 datasets, lazy volumes or paths); a block's particle voxels are carried by the prior
and the next step is read only over the box they land in. The (id_k, id_k+1) overlap
counts, voxel counts and coordinate sums are integers added over the blocks, so links and
tracks are the same as on whole volumes for any block size and number of workers (the
prior must act on each point alone, as both priors here do). Memory: about
:data:`LINK_BYTES_PER_VOXEL` bytes per voxel of a block and worker, blocks sized from
``memory_limit``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import normalise_voxel_size
from anodetwin.io.blocks import (DEFAULT_MEMORY_LIMIT, Block, BlockGrid, block_shape_for,
                                 read_region, run_blocks)

__all__ = ["TRACK_TABLE", "Tracks", "LabelSums", "label_sums", "link_steps",
           "track_particles", "dvc_prior", "thickness_prior", "LINK_BYTES_PER_VOXEL",
           "LINK_MAX_SIDE"]

#: Working memory of a tracking pass per voxel of a block (labels, the particle voxels'
#: coordinates, carried positions and hits, the next step's box).
LINK_BYTES_PER_VOXEL = 200
#: Largest block side of a tracking pass (larger blocks are no faster).
LINK_MAX_SIDE = 128
#: The next step is read over boxes of at most this many block volumes.
LOOKUP_BOX_FACTOR = 2

TRACK_TABLE = np.dtype([("track", "i4"), ("step", "i4"), ("particle", "i4"),
                        ("centroid_z_um", "f8"), ("centroid_y_um", "f8"),
                        ("centroid_x_um", "f8"), ("volume_um3", "f8"),
                        ("displacement_z_um", "f8"), ("displacement_y_um", "f8"),
                        ("displacement_x_um", "f8"), ("overlap", "f8")])


@dataclass(frozen=True)
class Tracks:
    """Particle tracks of a series (:func:`track_particles`): a table and the links.

    Attributes
    ----------
    table : numpy.ndarray of TRACK_TABLE
        One row per track and step (:data:`TRACK_TABLE`; lengths in um), ordered by track
        and step.
    links : list of (n, 3) numpy.ndarray
        Links of each step transition: ``links[k]`` holds id at k, id at k+1 and the
        overlap fraction.
    """

    table: np.ndarray
    links: list[np.ndarray]

    def track(self, t: int) -> np.ndarray:
        """Rows of one track.

        Parameters
        ----------
        t : int
            Track number.

        Returns
        -------
        numpy.ndarray
            Its rows of :attr:`table`, in step order.
        """
        return self.table[self.table["track"] == t]

    @property
    def n_tracks(self) -> int:
        """Number of distinct tracks."""
        return int(len(np.unique(self.table["track"])))


def thickness_prior(collector_z: Sequence[float], separator_z: Sequence[float]
                    ) -> Callable[[int, np.ndarray], np.ndarray]:
    """Tracking prior of uniform through-thickness swelling between steps.

    Parameters
    ----------
    collector_z, separator_z : sequence of float
        Mean collector and separator interface of each step (voxels along z).

    Returns
    -------
    callable
        ``prior(k, points) -> displacement``: (n, 3) points (z, y, x; voxels) of step k to
        their (n, 3) displacement (voxels) to step k + 1, along z only.
    """
    zc, zs = np.asarray(collector_z, float), np.asarray(separator_z, float)

    def prior(k: int, pts: np.ndarray) -> np.ndarray:
        scale = (zs[k + 1] - zc[k + 1]) / (zs[k] - zc[k])
        out = np.zeros_like(pts, dtype=float)
        out[:, 0] = zc[k + 1] + (pts[:, 0] - zc[k]) * scale - pts[:, 0]
        return out

    return prior


def dvc_prior(increments: Sequence[Any]) -> Callable[[int, np.ndarray], np.ndarray]:
    """Tracking prior from DVC increments T(k) -> T(k+1), interpolated at the points of step k.

    Parameters
    ----------
    increments : sequence of PairResult or path
        One increment per step transition (results of ``anodetwin dvc-series``).

    Returns
    -------
    callable
        ``prior(k, points) -> displacement``: (n, 3) points (z, y, x; voxels) of step k to
        their (n, 3) displacement (voxels).

    Raises
    ------
    InputNotFoundError, CorruptFileError
        For an increment file that cannot be read.
    """
    from anodetwin.dvc.correlate import interpolate_displacement
    from anodetwin.dvc.pair import PairResult, read_pair

    incs = [p if isinstance(p, PairResult) else read_pair(p) for p in increments]

    def prior(k: int, pts: np.ndarray) -> np.ndarray:
        inc = incs[k]
        origin = np.asarray(inc.params.get("roi_origin", (0, 0, 0)), float)
        return interpolate_displacement(inc.nodes, inc.grid_shape, inc.displacement,
                                        pts - origin)

    return prior


class LabelSums(NamedTuple):
    """Integer sums of the particles of one instance volume (:func:`label_sums`).

    Attributes
    ----------
    ids : numpy.ndarray of int64, shape (n,)
        Particle ids present (ascending, no 0).
    counts : numpy.ndarray of int64, shape (n,)
        Voxels of each particle.
    sums : numpy.ndarray of int64, shape (n, 3)
        Sums of the (z, y, x) voxel indices of each particle's voxels.
    """

    ids: np.ndarray
    counts: np.ndarray
    sums: np.ndarray

    def centroids(self) -> np.ndarray:
        """(n, 3) centroids (z, y, x; voxels), as ``scipy.ndimage.center_of_mass`` gives
        them (integer sums divided by the counts)."""
        if not len(self.ids):
            return np.zeros((0, 3))
        return self.sums / self.counts[:, None]


def _empty_sums() -> LabelSums:
    return LabelSums(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64))


def _merge_sums(parts: Sequence[LabelSums]) -> LabelSums:
    """Per-block sums added up per particle id."""
    parts = [p for p in parts if len(p.ids)]
    if not parts:
        return _empty_sums()
    ids = np.concatenate([p.ids for p in parts])
    uniq, inv = np.unique(ids, return_inverse=True)
    counts = np.zeros(uniq.size, np.int64)
    sums = np.zeros((uniq.size, 3), np.int64)
    np.add.at(counts, inv, np.concatenate([p.counts for p in parts]))
    np.add.at(sums, inv, np.concatenate([p.sums for p in parts]))
    return LabelSums(uniq.astype(np.int64), counts, sums)


def _merge_pairs(parts: Sequence[tuple[np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Overlap counts of (id_a << 32 | id_b) keys added up over blocks (keys ascending)."""
    keys = np.concatenate([np.zeros(0, np.int64)] + [p[0] for p in parts])
    counts = np.concatenate([np.zeros(0, np.int64)] + [p[1] for p in parts])
    uniq, inv = np.unique(keys, return_inverse=True)
    total = np.zeros(uniq.size, np.int64)
    np.add.at(total, inv, counts)
    return uniq, total


def _lookup(b: Any, q: np.ndarray, cap: int) -> np.ndarray:
    """Values of volume ``b`` at the (n, 3) integer points ``q`` (all inside ``b``), read
    over their bounding box, halved along its longest side while it exceeds ``cap``
    voxels."""
    lo, hi = q.min(axis=0), q.max(axis=0) + 1
    if np.prod(hi - lo, dtype=float) <= cap or len(q) == 1:
        box = tuple(slice(int(s), int(e)) for s, e in zip(lo, hi, strict=True))
        sub = np.asarray(read_region(b, box))
        return sub[q[:, 0] - lo[0], q[:, 1] - lo[1], q[:, 2] - lo[2]]
    ax = int(np.argmax(hi - lo))  # bbox > cap >= 1: both halves hold points
    low = q[:, ax] < (lo[ax] + hi[ax]) // 2
    first, second = _lookup(b, q[low], cap), _lookup(b, q[~low], cap)
    out = np.empty(len(q), first.dtype)
    out[low], out[~low] = first, second
    return out


def _block_pass(a: Any, b: Any, shift: Callable[[np.ndarray], np.ndarray] | None,
                block: Block, cap: int) -> tuple[LabelSums, tuple[np.ndarray, np.ndarray]]:
    """Sums of the particles of ``a`` in a block's core and, with ``b``, the overlap counts
    of its voxels carried by ``shift`` onto ``b`` (keys ``id_a << 32 | id_b``)."""
    lab = np.asarray(read_region(a, block.core))
    flat = np.flatnonzero(lab)
    no_pairs = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not flat.size:
        return _empty_sums(), no_pairs
    ids = lab.ravel()[flat].astype(np.int64)
    if ids.min() < 0 or ids.max() >= 2**31:
        raise ParameterError(f"particle id {int(ids.min() if ids.min() < 0 else ids.max())}"
                             " in the labels is outside 1 .. 2**31 - 1",
                             "give instance labels with 0 = none and ids >= 1 (int32)")
    del lab
    pts = np.stack(np.unravel_index(flat, block.core_shape), axis=1)
    del flat
    pts += np.array([s.start for s in block.core])
    uniq, inv = _dense(ids)
    counts = np.bincount(inv, minlength=uniq.size)
    sums = np.stack([np.bincount(inv, weights=pts[:, ax], minlength=uniq.size)
                     for ax in range(3)], axis=1).astype(np.int64)  # exact: < 2**53
    stats = LabelSums(uniq, counts.astype(np.int64), sums)
    if b is None:
        return stats, no_pairs
    moved = pts.astype(float)  # every voxel carried by the prior at its own position
    del pts
    if shift is not None:
        moved += shift(moved)
    q = np.rint(moved).astype(np.int64)
    del moved
    inside = q[:, 0].view(np.uint64) < b.shape[0]  # negatives wrap to huge values
    for ax in (1, 2):
        inside &= q[:, ax].view(np.uint64) < b.shape[ax]
    hit = np.zeros(len(q), np.int64)
    if inside.any():
        hit[inside] = _lookup(b, q[inside], cap)
    sel = hit > 0
    return stats, _pair_counts(uniq, inv[sel], hit[sel])


def _dense(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(v, return_inverse=True)`` of non-negative integers, by counting when
    their range is not much wider than their number (no sort)."""
    if not v.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo, hi = int(v.min()), int(v.max())
    if hi - lo > 4 * v.size + 65536:
        uniq, inv = np.unique(v, return_inverse=True)
        return uniq.astype(np.int64), inv.ravel()
    present = np.bincount(v - lo, minlength=hi - lo + 1) > 0
    lut = np.cumsum(present) - 1
    return np.flatnonzero(present) + lo, lut[v - lo]


def _pair_counts(ids_a: np.ndarray, ia: np.ndarray, hits: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the (id_a, id_b) pairs of carried voxels (``ia``: index into ``ids_a``;
    ``hits``: ids of b), keyed ``id_a << 32 | id_b`` in ascending order."""
    ub, ib = _dense(hits)
    na, nb = ids_a.size, ub.size
    if na * nb <= 4 * ia.size + 65536:
        n = np.bincount(ia * nb + ib, minlength=na * nb)
        code = np.flatnonzero(n)
        return (ids_a[code // nb] << 32) | ub[code % nb], n[code].astype(np.int64)
    keys, n = np.unique((ids_a[ia] << 32) | ub[ib], return_counts=True)
    return keys, n.astype(np.int64)


def _block_grid(shape: tuple, block_shape: Any, memory_limit: Any, workers: int
                ) -> BlockGrid:
    """Blocks (no halo) of a tracking pass: given, or sized for the memory limit."""
    if block_shape is None:
        block_shape = block_shape_for(shape, LINK_BYTES_PER_VOXEL, 0,
                                      memory_limit or DEFAULT_MEMORY_LIMIT, workers,
                                      max_side=LINK_MAX_SIDE)
    return BlockGrid(shape, block_shape, 0)


def _scan(a: Any, b: Any, shift: Callable[[np.ndarray], np.ndarray] | None,
          grid: BlockGrid, workers: int) -> tuple[LabelSums, tuple[np.ndarray, np.ndarray]]:
    """One pass over the blocks of ``a``: its particle sums and (with ``b``) the overlap
    counts of its carried voxels on ``b``."""
    cap = LOOKUP_BOX_FACTOR * int(np.prod(grid.block_shape))
    sums, pairs = [], []
    for _, (s, p) in run_blocks(lambda blk: _block_pass(a, b, shift, blk, cap), grid,
                                workers):
        sums.append(s)
        pairs.append(p)
        if len(pairs) >= 256:  # keep the partial results small on huge grids
            sums, pairs = [_merge_sums(sums)], [_merge_pairs(pairs)]
    return _merge_sums(sums), _merge_pairs(pairs)


def label_sums(labels: Any, *, block_shape: Any = None,
               memory_limit: Any = DEFAULT_MEMORY_LIMIT, workers: int = 1) -> LabelSums:
    """Voxel counts and coordinate sums of every particle of an instance volume, block by
    block in integers (the same for any block size).

    Parameters
    ----------
    labels : array of int, or an HDF5 dataset / LazyVolume of it
        Particle ids (0 = none), (z, y, x).
    block_shape : int or 3 int, optional
        Blocks read at a time (default: sized for ``memory_limit``).
    memory_limit : str or int
        Memory ceiling (e.g. ``"4GB"``).
    workers : int
        Blocks processed at once (threads).

    Returns
    -------
    LabelSums
        Ids, counts and (z, y, x) index sums.

    Raises
    ------
    ParameterError
        For a negative id.
    """
    grid = _block_grid(tuple(labels.shape), block_shape, memory_limit, workers)
    return _scan(labels, None, None, grid, workers)[0]


def _choose_links(pairs: tuple[np.ndarray, np.ndarray], sa: LabelSums, sb: LabelSums,
                  shift: Callable[[np.ndarray], np.ndarray] | None, min_overlap: float,
                  max_distance: float, sp: np.ndarray) -> np.ndarray:
    """Links from the overlap counts: per particle of ``a`` the id of ``b`` its carried
    voxels hit most (the smallest id among equal counts) if at least ``min_overlap`` of
    them, else the nearest carried centroid within ``max_distance``."""
    if not len(sa.ids):
        return np.zeros((0, 3))
    cent = sa.centroids()
    d_cent = shift(cent) if shift is not None else np.zeros_like(cent)
    cb = sb.centroids()
    keys, n = pairs
    pa, pb = keys >> 32, keys & 0xFFFFFFFF
    order = np.lexsort((pb, -n, pa))  # per id_a: most hits first, then the smallest id_b
    pa, pb, n = pa[order], pb[order], n[order]
    first = np.flatnonzero(np.r_[True, pa[1:] != pa[:-1]]) if pa.size else pa
    best = {int(i): (int(j), int(c)) for i, j, c in zip(pa[first], pb[first], n[first],
                                                        strict=True)}
    out = []
    for i, (pid, c) in enumerate(zip(sa.ids.tolist(), sa.counts.tolist(), strict=True)):
        if pid in best and best[pid][1] / c >= min_overlap:
            out.append((pid, best[pid][0], best[pid][1] / c))
            continue
        if len(cb):
            d = np.linalg.norm((cb - (cent[i] + d_cent[i])) * sp, axis=1)
            j = int(np.argmin(d))
            if d[j] <= max_distance:
                out.append((pid, sb.ids[j], 0.0))
    return np.array(out, float).reshape(-1, 3)


def _voxels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (N, 3) and ids of all particle voxels, sorted by id."""
    idx = np.flatnonzero(labels.ravel())
    ids = labels.ravel()[idx]
    order = np.argsort(ids, kind="stable")
    return np.stack(np.unravel_index(idx[order], labels.shape), axis=1), ids[order]


def _link_subsampled(a: np.ndarray, b: np.ndarray, shift: Callable | None,
                     min_overlap: float, max_distance: float, subsample: int,
                     sp: np.ndarray) -> np.ndarray:
    """:func:`link_steps` with every ``subsample``-th voxel of the id-sorted voxel list
    (whole volumes in memory: that selection depends on the whole volume)."""
    pts, ids = _voxels(a)
    pts, ids = pts[::subsample], ids[::subsample]
    if not len(ids):
        return np.zeros((0, 3))
    uniq, start, count = np.unique(ids, return_index=True, return_counts=True)
    cent = np.array([pts[s: s + c].mean(axis=0) for s, c in zip(start, count, strict=True)])
    d_cent = shift(cent) if shift is not None else np.zeros_like(cent)
    moved = pts.astype(float)
    if shift is not None:
        moved += shift(moved)
    q = np.rint(moved).astype(int)
    inside = np.all((q >= 0) & (q < np.array(b.shape)), axis=1)
    hit = np.zeros(len(q), b.dtype)
    hit[inside] = b[q[inside, 0], q[inside, 1], q[inside, 2]]
    out = []
    ids_b = np.unique(b[b > 0])
    cb = np.array(ndimage.center_of_mass(np.ones(b.shape, np.float32), b, ids_b)) \
        if len(ids_b) else np.zeros((0, 3))
    for i, (pid, s, c) in enumerate(zip(uniq, start, count, strict=True)):
        h = hit[s: s + c]
        h = h[h > 0]
        if h.size:
            vals, n = np.unique(h, return_counts=True)
            j = int(np.argmax(n))
            if n[j] / c >= min_overlap:
                out.append((pid, vals[j], n[j] / c))
                continue
        if len(cb):
            d = np.linalg.norm((cb - (cent[i] + d_cent[i])) * sp, axis=1)
            j = int(np.argmin(d))
            if d[j] <= max_distance:
                out.append((pid, ids_b[j], 0.0))
    return np.array(out, float).reshape(-1, 3)


def _same_shape(a: Any, b: Any) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeMismatchError(f"steps of shapes {tuple(a.shape)} and {tuple(b.shape)}",
                                 "give label volumes of one grid (align the series first)")


def _whole(v: Any) -> np.ndarray:
    """A volume read whole (the subsampled route)."""
    return np.asarray(read_region(v, tuple(slice(0, n) for n in v.shape)))


def _series_links(vols: Sequence[Any], shifts: Sequence[Callable | None],
                  min_overlap: float, max_distance: float, subsample: int, sp: np.ndarray,
                  grid: BlockGrid, workers: int) -> tuple[list[np.ndarray], list[LabelSums]]:
    """Links of every transition and the particle sums of every step: one pass over the
    blocks of each step (the overlaps of step k on step k+1 taken in step k's pass)."""
    for a, b in zip(vols[:-1], vols[1:], strict=True):
        _same_shape(a, b)
    pairs, sums = [], []
    for k, a in enumerate(vols):
        b = vols[k + 1] if k + 1 < len(vols) and subsample <= 1 else None
        s, p = _scan(a, b, shifts[k] if b is not None else None, grid, workers)
        sums.append(s)
        pairs.append(p)
    links = []
    for k in range(len(vols) - 1):
        if subsample > 1:
            links.append(_link_subsampled(_whole(vols[k]), _whole(vols[k + 1]), shifts[k],
                                          min_overlap, max_distance, subsample, sp))
        else:
            links.append(_choose_links(pairs[k], sums[k], sums[k + 1], shifts[k],
                                       min_overlap, max_distance, sp))
    return links, sums


def link_steps(a: Any, b: Any, shift: Callable[[np.ndarray], np.ndarray] | None = None,
               min_overlap: float = 0.1, max_distance: float = 10.0, subsample: int = 1,
               spacing: float | tuple = 1.0, *, block_shape: Any = None,
               memory_limit: Any = DEFAULT_MEMORY_LIMIT, workers: int = 1) -> np.ndarray:
    """Links (id_a, id_b, overlap fraction) from particles of ``a`` to those of ``b``.

    ``a`` is read block by block; each block's particle voxels are carried by ``shift``
    and ``b`` is read only over the box they land in, so the memory is bounded by the
    block size; the (id_a, id_b) overlap counts and the particle sums are integers added
    over the blocks, so the links are the same for any block size and number of workers.

    Parameters
    ----------
    a, b : array of int, or HDF5 datasets / LazyVolumes of them
        Instance labels (0 = none) of two consecutive steps (same grid, (z, y, x)).
    shift : callable, optional
        ``shift(points) -> displacement`` (voxels) carrying (n, 3) points of ``a`` to ``b``;
        it must act on each point alone (blocks carry their own voxels).
    min_overlap : float
        Fraction of a particle's carried voxels that must fall in one particle of ``b``.
    max_distance : float
        Gate of the nearest-centroid fallback, in the unit of ``spacing`` (voxels by
        default).
    subsample : int
        Use every n-th voxel of the id-sorted voxel list (1: all). Above 1 both volumes
        are read whole (the selection depends on the whole volume).
    spacing : float or (z, y, x) floats
        Length of a voxel step along each axis for the fallback distance (e.g. the voxel
        size in um, then ``max_distance`` is in um).
    block_shape : int or 3 int, optional
        Blocks of ``a`` read at a time (default: sized for ``memory_limit``).
    memory_limit : str or int
        Memory ceiling (e.g. ``"4GB"``).
    workers : int
        Blocks processed at once (threads).

    Returns
    -------
    numpy.ndarray
        (n, 3) float rows: id in ``a``, id in ``b``, overlap fraction (0: fallback), in the
        order of the ids of ``a``.

    Raises
    ------
    ShapeMismatchError
        If the two volumes differ in shape.
    ParameterError
        For a negative particle id.
    """
    sp = np.asarray(normalise_voxel_size(spacing, "spacing"), float)
    grid = _block_grid(tuple(a.shape), block_shape, memory_limit, workers)
    return _series_links([a, b], [shift], min_overlap, max_distance, int(subsample), sp,
                         grid, workers)[0][0]


def _opened(v: Any, stack: ExitStack) -> Any:
    """A path opened lazily for the stack's lifetime; arrays, datasets and views as given."""
    if isinstance(v, (str, os.PathLike)):
        from anodetwin.io import open_volume

        return stack.enter_context(open_volume(v)).lazy(progress=False)
    return v if hasattr(v, "shape") else np.asarray(v)  # arrays, datasets, (lazy) volumes


def track_particles(labels: Sequence[Any], voxel_size_um: float | tuple = 1.0,
                    prior: Callable[[int, np.ndarray], np.ndarray] | None = None,
                    min_overlap: float = 0.1, max_distance_um: float = 2.0,
                    subsample: int = 1, *, memory_limit: Any = DEFAULT_MEMORY_LIMIT,
                    workers: int = 1, block_shape: Any = None) -> Tracks:
    """Track the particles of a series of instance volumes (module notes), block by block.

    Parameters
    ----------
    labels : sequence of arrays, HDF5 datasets, LazyVolumes or paths
        Instance labels of T0, T1, ... on one grid (paths: ``file.h5:/particles``, opened
        lazily).
    voxel_size_um : float or (z, y, x) floats
        Voxel size (um; one value: isotropic).
    prior : callable, optional
        ``prior(k, points) -> displacement`` (voxels) from step k to k+1, acting on each
        point alone.
    min_overlap, max_distance_um, subsample : see :func:`link_steps` (the gate in um).
    memory_limit : str or int
        Memory ceiling of a pass (e.g. ``"4GB"``); the block size follows from it.
    workers : int
        Blocks processed at once (threads).
    block_shape : int or 3 int, optional
        Explicit block size (overrides ``memory_limit``).

    Returns
    -------
    Tracks
        Rows of :data:`TRACK_TABLE` and the links per transition; the same for any block
        size and number of workers.

    Raises
    ------
    ParameterError
        With fewer than 2 steps, or for a negative particle id.
    ShapeMismatchError
        If two steps differ in shape.
    """
    with ExitStack() as stack:
        vols = [_opened(v, stack) for v in labels]
        if len(vols) < 2:
            raise ParameterError(f"tracking needs at least 2 steps, got {len(vols)}",
                                 "give the labels of T0 T1 [...]")
        vs = np.asarray(normalise_voxel_size(voxel_size_um, "voxel size"), float)
        shifts = [(lambda pts, k=k: prior(k, pts)) if prior is not None else None
                  for k in range(len(vols) - 1)]
        grid = _block_grid(tuple(vols[0].shape), block_shape, memory_limit, workers)
        links, sums = _series_links(vols, shifts, min_overlap, max_distance_um,
                                    int(subsample), vs, grid, workers)
    return Tracks(_track_table(links, sums, vs), links)


def _track_table(links: list[np.ndarray], sums: list[LabelSums], vs: np.ndarray
                 ) -> np.ndarray:
    """Rows of :data:`TRACK_TABLE` from the links and the particle sums of every step."""
    cell = float(np.prod(vs))
    stats = [{int(i): (com * vs, c * cell) for i, com, c in
              zip(s.ids, s.centroids(), s.counts, strict=True)} for s in sums]
    rows = []
    started: dict[int, list[int]] = {}  # particle id at the current step -> its tracks
    n_tracks = 0
    for k in range(len(sums)):
        current: dict[int, list[int]] = {}
        overlap: dict[int, float] = {}
        if k > 0:  # every track continues into the particle its particle links to
            for a, b, ov in links[k - 1].tolist():
                a, b = int(a), int(b)
                if a in started:
                    current.setdefault(b, []).extend(started[a])
                    overlap[b] = max(overlap.get(b, 0.0), ov)
        for pid in sorted(stats[k]):
            if pid not in current:
                current[pid] = [n_tracks]
                n_tracks += 1
                overlap[pid] = np.nan
        for pid, tracks in current.items():
            c, vol = stats[k][pid]
            for t in tracks:
                rows.append((t, k, pid, *c, vol, 0.0, 0.0, 0.0, overlap.get(pid, np.nan)))
        started = current
    table = np.array(rows, TRACK_TABLE)
    table.sort(order=["track", "step"])
    for t in np.unique(table["track"]):
        sel = np.flatnonzero(table["track"] == t)
        first = table[sel[0]]
        for ax in "zyx":
            table[f"displacement_{ax}_um"][sel] = (table[f"centroid_{ax}_um"][sel]
                                                   - first[f"centroid_{ax}_um"])
    return table
