"""Passes over the blocks of a tomogram for the image stages (:mod:`anodetwin.io.blocks`).

* :class:`GreySource`: the smoothed grey values of any box, exact on every voxel of it
  (the box is read with the smoothing's halo);
* the **sampling lattice** (:func:`lattice_step`, :func:`lattice_box`): every ``step``-th
  voxel along each axis from the volume's first voxel, so a sample does not depend on how
  the volume is cut (all voxels while the volume has at most :data:`LATTICE_SAMPLES`);
* :func:`components_touching`: the connected components of a mask (6-connectivity) that
  meet given slices, labelled block by block and merged over the block faces with a
  union-find, as dask-image merges labels; :func:`column_extreme`: per (y, x) column the
  highest (or lowest) z of a mask, reduced over blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.io.blocks import Block, BlockGrid, read_region, run_blocks

__all__ = ["GreySource", "LATTICE_SAMPLES", "gaussian_radius", "lattice_step", "lattice_box",
           "gather", "components_touching", "column_extreme"]

#: Voxels sampled at most for the global histograms (thresholds, levels).
LATTICE_SAMPLES = 2_000_000


def gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
    """Half-width (voxels) of SciPy's Gaussian kernel of ``sigma`` truncated at ``truncate``
    standard deviations."""
    return int(truncate * float(sigma) + 0.5) if sigma > 0 else 0


class GreySource:
    """Grey values of a tomogram as float32, denoised and smoothed, box by box.

    Parameters
    ----------
    volume : array, Volume or LazyVolume
        The tomogram (z, y, x).
    sigma : float
        Gaussian smoothing (voxels; 0: none).
    denoise : callable, optional
        ``denoise(values) -> values`` applied first (e.g. a 3x3x3 median).
    denoise_halo : int
        Halo the denoising needs (voxels).
    cache : bool
        Keep the last smoothed box (when the whole volume is one block, every pass reuses
        it).
    """

    def __init__(self, volume: Any, sigma: float = 0.0,
                 denoise: Callable[[np.ndarray], np.ndarray] | None = None,
                 denoise_halo: int = 0, cache: bool = False):
        self.volume = volume
        self.shape = tuple(int(n) for n in volume.shape)
        self.sigma = float(sigma)
        self.denoise = denoise
        self.halo = gaussian_radius(sigma) + (int(denoise_halo) if denoise else 0)
        self._cache: tuple | None = None if not cache else (None, None)

    def raw(self, box: tuple) -> np.ndarray:
        """The stored values of ``box`` (a view or a copy)."""
        return read_region(self.volume, box)

    def wide(self, box: tuple) -> tuple:
        """The box grown by the smoothing's halo (clipped to the volume)."""
        return tuple(slice(max(0, s.start - self.halo), min(n, s.stop + self.halo))
                     for s, n in zip(box, self.shape, strict=True))

    def lattice(self, box: tuple, step: int, axes: tuple = (0, 1, 2),
                raw: np.ndarray | None = None) -> np.ndarray:
        """Smoothed values at the lattice points of ``box`` (:func:`lattice_box`).

        They equal ``smoothed(box)[lattice_box(box, step, axes)]`` up to float32 rounding
        (with ``step`` 1, a denoiser or no smoothing: exactly), but only the lattice's
        lines are filtered: one pass of the box instead of three. The same points of the
        volume give the same values whatever box they are computed in.

        Parameters
        ----------
        box : tuple of slice
            The box (explicit bounds).
        step : int
            Lattice stride (:func:`lattice_step`).
        axes : tuple of int
            Strided axes (the others are taken whole).
        raw : numpy.ndarray, optional
            The stored values of ``wide(box)`` when the caller read them already.

        Returns
        -------
        numpy.ndarray
            float32 values, the lattice's shape.
        """
        lb = lattice_box(box, step, axes)
        if step == 1 or self.denoise is not None or self.sigma <= 0:
            return self.smoothed(box)[lb]
        wide = self.wide(box)
        v = self.raw(wide) if raw is None else raw
        r = self.halo
        x = np.arange(-r, r + 1, dtype=np.float64)
        w = np.exp(-0.5 * x * x / self.sigma ** 2)
        w = (w / w.sum()).astype(np.float32)
        for axis in (2, 1, 0):  # a fixed order: the same arithmetic in every box
            n = v.shape[axis]
            want = box[axis].start - wide[axis].start + np.arange(
                box[axis].stop - box[axis].start)[lb[axis]]
            idx = np.mod(want[:, None] + np.arange(-r, r + 1), 2 * n)
            idx = np.where(idx < n, idx, 2 * n - 1 - idx)  # scipy's "reflect"
            acc = np.take(v, idx[:, 0], axis=axis).astype(np.float32) * w[0]
            for k in range(1, 2 * r + 1):
                acc += np.take(v, idx[:, k], axis=axis).astype(np.float32) * w[k]
            v = acc
        return v

    def smoothed(self, box: tuple) -> np.ndarray:
        """Denoised and smoothed float32 values of ``box``, as on the whole volume."""
        if self._cache is not None and self._cache[0] == _key(box):
            return self._cache[1]
        wide = self.wide(box)
        v = np.asarray(self.raw(wide), np.float32)
        if self.denoise is not None:
            v = self.denoise(v)
        if self.sigma > 0:
            v = ndimage.gaussian_filter(v, self.sigma)
        crop = tuple(slice(s.start - w.start, s.stop - w.start)
                     for s, w in zip(box, wide, strict=True))
        out = v[crop]
        if self._cache is not None:
            self._cache = (_key(box), out)
        return out


def _key(box: tuple) -> tuple:
    return tuple((s.start, s.stop) for s in box)


def lattice_step(shape: Any, n: int = LATTICE_SAMPLES) -> int:
    """Stride of the sampling lattice: 1 up to ``n`` voxels, else about ``n`` points."""
    size = int(np.prod(shape))
    return 1 if size <= n else int(np.ceil((size / n) ** (1 / 3)))


def lattice_box(box: tuple, step: int, axes: tuple = (0, 1, 2)) -> tuple:
    """Slices of the lattice points inside ``box``, relative to the box; ``axes`` are
    strided, the others taken whole."""
    return tuple(slice((-s.start) % step, s.stop - s.start, step) if a in axes
                 else slice(0, s.stop - s.start) for a, s in enumerate(box))


def gather(grid: Any, fn: Callable[[Block], Any], workers: int) -> list:
    """``fn`` of every block, in grid order."""
    out = {b.index: r for b, r in run_blocks(fn, grid, workers)}
    return [out[k] for k in sorted(out)]


def column_extreme(mask: np.ndarray, z0: int, face: str) -> np.ndarray:
    """Per (y, x) column, the highest z (``face="low"``; -1 where none) or the lowest z
    (``"high"``; a large value where none) of a mask block starting at slice ``z0``."""
    nz = mask.shape[0]
    has = mask.any(axis=0)
    if face == "low":
        return np.where(has, z0 + nz - 1 - np.argmax(mask[::-1], axis=0), -1)
    return np.where(has, z0 + np.argmax(mask, axis=0), np.iinfo(np.int64).max)


def _faces(lab: np.ndarray) -> list:
    """Low and high face of a label block per axis (None where empty)."""
    out = []
    for ax in range(3):
        lo, hi = np.take(lab, 0, axis=ax), np.take(lab, -1, axis=ax)
        out.append((lo if lo.any() else None, hi if hi.any() else None))
    return out


def components_touching(grid: BlockGrid, mask_of: Callable[[Block], np.ndarray],
                        zs: slice, workers: int = 1) -> dict:
    """Connected components (6-connectivity) of a mask that have a voxel in slices ``zs``.

    Parameters
    ----------
    grid : BlockGrid
        The blocks.
    mask_of : callable
        ``mask_of(block)`` returns the mask on the block's core (deterministic: it is
        called again by the caller to apply the result).
    zs : slice
        Slices (z range) whose components are wanted.
    workers : int
        Threads.

    Returns
    -------
    dict
        Block index -> boolean lookup table over that block's local labels
        (``ndimage.label`` of ``mask_of(block)``; entry 0 False): True for the labels of
        the wanted components.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    def local(b: Block) -> tuple:
        lab, n = ndimage.label(mask_of(b))
        z0 = b.core[0].start
        sel = lab[max(0, zs.start - z0):max(0, zs.stop - z0)]
        return n, _faces(lab), np.unique(sel[sel > 0])

    res = {b.index: r for b, r in run_blocks(local, grid, workers)}
    keys = sorted(res)
    off = dict(zip(keys, np.cumsum([0] + [res[k][0] for k in keys])[:-1], strict=True))
    total = int(sum(res[k][0] for k in keys)) + 1
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for k in keys:
        for ax in range(3):
            nb = tuple(i + (a == ax) for a, i in enumerate(k))
            hi, lo = res[k][1][ax][1], res.get(nb, (0, [(None, None)] * 3))[1][ax][0]
            if hi is None or lo is None:
                continue
            both = (hi > 0) & (lo > 0)
            rows.append(off[k] + hi[both].astype(np.int64))
            cols.append(off[nb] + lo[both].astype(np.int64))
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    wanted = np.zeros(comp.max() + 1, bool)
    for k in keys:
        wanted[comp[off[k] + res[k][2]]] = True
    return {k: np.concatenate([[False], wanted[comp[off[k] + 1: off[k] + 1 + res[k][0]]]])
            for k in keys}
