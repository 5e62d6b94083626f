"""Noise floor of a tomography set-up from a double scan.

Two scans of an unchanged sample (the reference experiment's T8/T9 pair: no electrochemistry
between them) differ only by noise and small drifts. Their difference gives

* the per-scan noise standard deviation, ``std(B - A) / sqrt(2)`` (independent, equal noise);
* the mean grey-level drift between the scans, ``mean(B - A)``;
* the residual threshold: the ``percentile`` of ``|G_sigma * (B - A)|``, i.e. of the
  difference blurred with a Gaussian of ``sigma`` voxels and taken in absolute value,
  exactly the processing the reference applied to DVC residual maps. Residual values below
  it are noise (the reference used 5000 grey levels in 16-bit, sigma = 2 voxels). It is
  taken on the interior, 4 sigma away from the faces, where the blur is not biased by the
  reflective boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from anodetwin.errors import ParameterError
from anodetwin.io.agree import require_same_grid
from anodetwin.io.volume import require_3d, require_same_shape

#: Gaussian blur (voxels) of the difference before the threshold, as the reference did.
REFERENCE_SIGMA = 2.0
#: Percentile (0-100) of the blurred absolute difference taken as the residual threshold.
REFERENCE_PERCENTILE = 99.0

__all__ = ["NoiseFloor", "noise_floor", "scan_difference", "REFERENCE_SIGMA",
           "REFERENCE_PERCENTILE"]


def scan_difference(scan_a: np.ndarray, scan_b: np.ndarray) -> np.ndarray:
    """Voxel-wise difference of two scans.

    Parameters
    ----------
    scan_a, scan_b : numpy.ndarray
        The two scans (z, y, x), same shape (grey levels).

    Returns
    -------
    numpy.ndarray
        ``scan_b - scan_a`` in float32 (float64 if either input is float64).

    Raises
    ------
    ShapeMismatchError
        When a scan is not 3D or the shapes differ.
    """
    require_3d(scan_a.shape, "first scan")
    require_3d(scan_b.shape, "second scan")
    require_same_shape(scan_a.shape, scan_b.shape, "first scan", "second scan")
    dt = np.result_type(np.float32, scan_a.dtype, scan_b.dtype)
    dt = np.float64 if dt == np.float64 else np.float32
    return np.subtract(scan_b, scan_a, dtype=dt)


@dataclass(frozen=True)
class NoiseFloor:
    """Noise statistics of a double scan (grey levels of the input volumes).

    Attributes
    ----------
    noise_std : float
        Per-scan noise standard deviation, ``std(B - A) / sqrt(2)``.
    drift : float
        Mean of ``B - A`` (global grey-level drift between the scans).
    residual_threshold : float
        ``percentile`` of ``|G_sigma * (B - A)|``: residual values below it are noise.
    sigma : float
        Gaussian blur (voxels) used for the threshold (default: the reference's).
    percentile : float
        Percentile (0-100) used for the threshold (default: the reference's).
    n_voxels : int
        Number of voxels compared (0: not said).
    """

    noise_std: float
    drift: float
    residual_threshold: float
    sigma: float = REFERENCE_SIGMA
    percentile: float = REFERENCE_PERCENTILE
    n_voxels: int = 0

    def to_dict(self) -> dict:
        """The statistics as a dict.

        Returns
        -------
        dict
            The six fields by name (grey levels, voxels, percent, count).
        """
        return asdict(self)


def noise_floor(scan_a: Any, scan_b: Any, sigma: float = REFERENCE_SIGMA,
                percentile: float = REFERENCE_PERCENTILE,
                voxel_size_um: Any = None, names: Sequence[str] | None = None, *,
                block_shape: Any = None, memory_limit: Any = None,
                workers: int = 1) -> NoiseFloor:
    """Noise floor from two scans of an unchanged sample, block by block.

    The percentile is the exact order statistic of the blurred difference, found in three
    passes (range, a histogram of 65536 bins, the values of the bins that hold it;
    :mod:`anodetwin.io.blockstats`), so the threshold does not depend on the blocks and
    memory follows the block size. For integer scans (up to 32 bits) the difference is an
    integer: its sum and sum of squares are accumulated exactly and drift and noise std are
    computed once from the exact totals (correctly rounded), so all three numbers are
    identical bit for bit whatever the block size, worker count or route (in memory or
    from files). For floating-point scans the blocks' means and squared deviations are
    combined in grid order (Chan's pairwise formulas): drift and noise std may then differ
    in the last bits (a relative 1e-15) between block partitions, i.e. between worker
    counts or memory limits; the threshold does not.

    Parameters
    ----------
    scan_a, scan_b : numpy.ndarray, Volume or LazyVolume
        The two scans (z, y, x), already aligned: same shape and, for volumes that carry
        them, same voxel size and origin (:func:`anodetwin.io.agree.require_same_grid`).
    sigma : float
        Standard deviation (voxels) of the Gaussian applied to the difference before the
        residual threshold is taken (reference: 2 voxels).
    percentile : float
        Percentile (0-100) of the blurred absolute difference taken as residual threshold.
    voxel_size_um : float or 3 float, optional
        Explicit voxel size (um) of both scans: a difference of their own voxel sizes or
        origins is then logged, not refused.
    names : (str, str), optional
        How messages name the scans (default "first scan", "second scan").
    block_shape : int or 3 int, optional
        Block core size (:mod:`anodetwin.io.blocks`); default: one block for arrays in
        memory, blocks sized for ``memory_limit`` (default 4GB) for lazily read volumes.
    memory_limit : str or int, optional
        Memory ceiling from which the block size is derived.
    workers : int
        Blocks processed at once (threads).

    Returns
    -------
    NoiseFloor
        Noise std, drift, residual threshold (grey levels) and the settings used.

    Raises
    ------
    ParameterError
        A negative sigma or a percentile outside (0, 100].
    GridMismatchError, ShapeMismatchError
        Scans on different grids.
    NonFiniteError
        A scan with NaN or inf (counted over the whole scan).
    InputError
        Scans without noise between them: identical, or differing by one constant.
    """
    name_a, name_b = names or ("first scan", "second scan")
    require_same_grid(scan_a, scan_b, name_a, name_b, voxel_size=voxel_size_um)
    a, b = (v if hasattr(v, "region") else np.asarray(getattr(v, "data", v))
            for v in (scan_a, scan_b))
    require_3d(a.shape, name_a)
    require_same_shape(a.shape, b.shape, name_a, name_b)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ParameterError(f"sigma {sigma} is not a non-negative number of voxels",
                             "give sigma >= 0, e.g. 2")
    if not (0 < percentile <= 100):
        raise ParameterError(f"percentile {percentile} is outside (0, 100]",
                             "give a percentile such as 99")
    grid = _grid(a, b, sigma, block_shape, memory_limit, workers)
    passes = _Passes(a, b, sigma, grid, workers)
    n, drift, std = passes.statistics((name_a, name_b))
    thr = passes.order_statistic(percentile)
    return NoiseFloor(std, drift, thr, float(sigma), float(percentile), int(n))


def _exact_dtype(*dtypes: Any) -> bool:
    """Scans whose difference is an integer summed exactly (:func:`_integer_sums`):
    booleans and integers of up to 32 bits."""
    return all(np.dtype(d).kind in "biu" and np.dtype(d).itemsize <= 4 for d in dtypes)


#: Voxels summed at once in int64 by :func:`_integer_sums` (no partial sum can overflow).
_CHUNK = 1 << 22


def _integer_sums(va: np.ndarray, vb: np.ndarray) -> tuple[int, int, int]:
    """Count, sum and sum of squares of ``vb - va`` as exact Python integers (integer scans
    of up to 32 bits: ``|d| < 2**33``; the squares are summed as 16-bit halves of ``d``
    unless ``|d| < 2**17``, so that no int64 partial sum of :data:`_CHUNK` voxels
    overflows)."""
    a, b = np.ravel(va), np.ravel(vb)
    small = max(a.dtype.itemsize, b.dtype.itemsize) <= 2
    s1 = s2 = 0
    for i in range(0, a.size, _CHUNK):
        d = b[i:i + _CHUNK].astype(np.int64) - a[i:i + _CHUNK].astype(np.int64)
        s1 += int(d.sum())
        if small:
            s2 += int(np.dot(d, d))  # < 2**32 per voxel
        else:
            h, lo = d >> 16, d & 0xFFFF  # d = h * 2**16 + lo, 0 <= lo < 2**16
            s2 += ((int(np.dot(h, h)) << 32) + (int(np.dot(h, lo)) << 17)
                   + int(np.dot(lo, lo)))
    return int(a.size), s1, s2


def _require_noise(names: Sequence[str], constant: bool, zero: bool, value: Any) -> None:
    """Refuse a double scan without noise: identical scans, or a difference that is the
    same number everywhere (its floor would be 0 and every residual voxel above it)."""
    from anodetwin.errors import InputError

    if not constant:
        return
    a, b = names
    fix = ("give two scans of the same state taken one after the other: their difference "
           "is the noise")
    if zero:
        raise InputError(f"{a} and {b} are identical (B - A is 0 everywhere): no noise to "
                         "measure", fix)
    raise InputError(f"{a} and {b} differ by the same {float(value):g} grey levels at every "
                     "voxel (B - A is constant): no noise to measure", fix)


#: Working memory per voxel of a block with its halo (two scans, difference, blur; bytes).
BYTES_PER_VOXEL = 32


def _grid(a: Any, b: Any, sigma: float, block_shape: Any, memory_limit: Any,
          workers: int) -> Any:
    """Blocks with the blur's halo: one for arrays in memory unless told otherwise."""
    from anodetwin.io.blocks import DEFAULT_MEMORY_LIMIT, BlockGrid, block_shape_for

    halo = int(np.ceil(4.0 * sigma))
    lazy = hasattr(a, "region") or hasattr(b, "region")
    if block_shape is None and (memory_limit is not None or lazy):
        block_shape = block_shape_for(a.shape, BYTES_PER_VOXEL, halo,
                                      memory_limit or DEFAULT_MEMORY_LIMIT, workers)
    return BlockGrid(a.shape, block_shape, halo)


class _Passes:
    """The passes of :func:`noise_floor` over the blocks (the blurred difference of the one
    block of an array in memory is kept between passes)."""

    def __init__(self, a: Any, b: Any, sigma: float, grid: Any, workers: int):
        self.a, self.b, self.sigma, self.grid, self.workers = a, b, sigma, grid, workers
        m = int(np.ceil(4.0 * sigma))
        # the kernel folds back at the faces (reflective boundary), which inflates the
        # blurred noise there: the threshold is taken on the interior where it can be
        keep = m and min(a.shape) > 4 * m
        self.interior = tuple(slice(m if keep else 0, n - m if keep else n) for n in a.shape)
        self._kept: dict = {}

    def _read(self, box: tuple) -> tuple:
        from anodetwin.io.blocks import read_region

        return read_region(self.a, box), read_region(self.b, box)

    def statistics(self, names: tuple) -> tuple[int, float, float]:
        """Count, drift (mean of B - A) and per-scan noise std of the scans (NaN and inf
        counted first, then refused), the same whatever the blocks (module notes of
        :func:`noise_floor`)."""
        from anodetwin.io.blocks import run_blocks
        from anodetwin.io.volume import nonfinite_error

        exact = _exact_dtype(self.a.dtype, self.b.dtype)

        def one(blk: Any) -> tuple:
            va, vb = self._read(blk.core)
            if exact:
                return ((0, 0), (0, 0)), _integer_sums(va, vb)
            bad = [(int(np.isnan(v).sum()), int(np.isinf(v).sum())) if v.dtype.kind == "f"
                   else (0, 0) for v in (va, vb)]
            if any(sum(x) for x in bad):
                return bad, (0, 0.0, 0.0)
            d = scan_difference(va, vb).astype(np.float64).ravel()
            mu = float(d.mean()) if d.size else 0.0
            return bad, (d.size, mu, float(((d - mu) ** 2).sum()))

        parts = [r for _, r in sorted(run_blocks(one, self.grid, self.workers),
                                      key=lambda br: br[0].index)]
        for k, name in enumerate(names):
            nan, inf = (sum(p[0][k][i] for p in parts) for i in range(2))
            if nan or inf:
                raise nonfinite_error(name, nan, inf)
        if exact:  # exact integer totals: the same for any partition into blocks
            n, s1, s2 = (sum(p[1][i] for p in parts) for i in range(3))
            if not n:
                return 0, 0.0, 0.0
            m2n = n * s2 - s1 * s1  # n * (sum of squared deviations), exact
            _require_noise(names, m2n == 0, s1 == 0, Fraction(s1, n))
            return n, float(Fraction(s1, n)), math.sqrt(Fraction(m2n, 2 * n * n))
        n, mean, m2 = 0, 0.0, 0.0
        for _, (nb, mb, m2b) in parts:
            if nb:  # Chan et al.: pairwise combination of means and squared deviations
                delta, tot = mb - mean, n + nb
                mean, m2, n = mean + delta * nb / tot, m2 + m2b + delta ** 2 * n * nb / tot, tot
        if n:
            _require_noise(names, m2 == 0, m2 == 0 and mean == 0, mean)
        return n, float(mean), float(np.sqrt(m2 / n) / np.sqrt(2.0)) if n else 0.0

    def blurred(self, blk: Any) -> np.ndarray:
        """|G_sigma * (B - A)| on the part of a block's core inside the interior (flat)."""
        from anodetwin.io.blocks import gaussian_crop

        if blk.index in self._kept:
            return self._kept[blk.index]
        core = tuple(slice(max(c.start, i.start), min(c.stop, i.stop))
                     for c, i in zip(blk.core, self.interior, strict=True))
        if any(c.stop <= c.start for c in core):
            return np.zeros(0, np.float32)
        d = scan_difference(*self._read(blk.outer))
        rel = tuple(slice(c.start - o.start, c.stop - o.start)
                    for c, o in zip(core, blk.outer, strict=True))
        v = np.abs(gaussian_crop(d, self.sigma, rel, truncate=4.0) if self.sigma > 0
                   else d[rel]).ravel()
        if len(self.grid) == 1:
            self._kept[blk.index] = v
        return v

    def order_statistic(self, percentile: float) -> float:
        """The ``percentile`` of the blurred absolute difference over the interior, exactly
        ``numpy.percentile`` of its float64 copy
        (:func:`anodetwin.io.blockstats.exact_percentiles`)."""
        from anodetwin.io.blockstats import exact_percentiles, value_extent

        extent = value_extent(self.blurred, self.grid, self.workers)
        if extent[0] == 0 or extent[2] <= 0:  # no interior or no difference at all
            return 0.0
        return float(exact_percentiles(self.blurred, self.grid, [percentile], self.workers,
                                       extent=extent, dtype=np.float64)[0])
