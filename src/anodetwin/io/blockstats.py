"""Exact order statistics (percentiles) of values spread over the blocks of a volume.

A percentile of a volume larger than memory cannot be taken with :func:`numpy.percentile`
on the whole array. It is found exactly, in bounded memory, in three passes over the blocks
(:mod:`anodetwin.io.blocks`):

1. the count, minimum and maximum of the values (:func:`value_extent`);
2. a histogram of :data:`BINS` equal bins over [minimum, maximum]: the cumulative counts
   say which bin holds each wanted order statistic (the k-th smallest value);
3. the values that fall in those bins, gathered as distinct values with their counts, from
   which each order statistic is read off exactly.

The binning is monotone in the value, so the values of a bin are exactly the order
statistics whose ranks the cumulative counts assign to it, whatever the blocks; only the
values of a few bins are held at once (as distinct values with counts, so a bin holding
millions of copies of one grey level costs one entry). :func:`exact_percentiles` then
interpolates between neighbouring order statistics with NumPy's own arithmetic (method
``"linear"``), so the result is bit for bit ``numpy.percentile`` of the whole array.

Quick use::

    grid = BlockGrid(vol.shape, 64)
    values = lambda b: read_region(vol, b.core).ravel()
    lo, hi = exact_percentiles(values, grid, (0.5, 99.5), workers=2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from anodetwin.errors import ParameterError
from anodetwin.io.blocks import Block, run_blocks

__all__ = ["BINS", "value_extent", "order_statistics", "exact_percentiles",
           "numpy_linear_percentiles", "percentile_ranks"]

#: Bins of the histogram that locates the order statistics.
BINS = 65536

ValuesOf = Callable[[Block], np.ndarray]


def value_extent(values_of: ValuesOf, blocks: Iterable[Block], workers: int = 1
                 ) -> tuple[int, Any, Any]:
    """Count, minimum and maximum of the values of every block.

    Parameters
    ----------
    values_of : callable
        ``values_of(block)`` returns the block's values (any shape; the same values every
        time it is called for a block). Must be finite.
    blocks : iterable of Block
        The blocks (a :class:`~anodetwin.io.blocks.BlockGrid` or some of its blocks).
    workers : int
        Blocks processed at once (threads).

    Returns
    -------
    n : int
        Number of values.
    vmin, vmax : numpy scalar or None
        Smallest and largest value (in the values' dtype); None when there are none.
    """
    def one(blk: Block) -> tuple:
        v = np.asarray(values_of(blk))
        return (v.size, v.min(), v.max()) if v.size else (0, None, None)

    parts = [r for _, r in run_blocks(one, blocks, workers) if r[0]]
    if not parts:
        return 0, None, None
    return (int(sum(p[0] for p in parts)), min(p[1] for p in parts),
            max(p[2] for p in parts))


def _binner(vmin: Any, vmax: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Bin index (int64, 0..BINS-1) of values in [vmin, vmax]: monotone non-decreasing in
    the value (float64 arithmetic, rounding is monotone)."""
    lo = float(vmin)
    scale = BINS / (float(vmax) - lo)
    return lambda v: np.minimum(((np.asarray(v, np.float64).ravel() - lo) * scale)
                                .astype(np.int64), BINS - 1)


def order_statistics(values_of: ValuesOf, blocks: Sequence[Block], ranks: Sequence[int],
                     extent: tuple[int, Any, Any], workers: int = 1) -> np.ndarray:
    """The k-th smallest values (0-based ranks ``k``) of the values of all blocks.

    Parameters
    ----------
    values_of : callable
        ``values_of(block)`` -> the block's values (see :func:`value_extent`).
    blocks : sequence of Block
        The blocks (iterated twice: the histogram pass and the selection pass).
    ranks : sequence of int
        Wanted ranks, each in ``[0, n)``.
    extent : (int, scalar, scalar)
        ``(n, vmin, vmax)`` of the values, from :func:`value_extent`.
    workers : int
        Blocks processed at once (threads).

    Returns
    -------
    numpy.ndarray
        The order statistics, one per rank, in the values' dtype.

    Raises
    ------
    ParameterError
        For a rank outside ``[0, n)``.
    """
    n, vmin, vmax = extent
    ranks = [int(k) for k in ranks]
    if any(not 0 <= k < n for k in ranks):
        raise ParameterError(f"ranks {ranks} are outside the {n} values",
                             f"give ranks between 0 and {n - 1}")
    dtype = np.asarray(vmin).dtype
    if not vmax > vmin:  # one value repeated n times
        return np.full(len(ranks), vmin, dtype)
    binned = _binner(vmin, vmax)
    parts = [h for _, h in run_blocks(lambda b: np.bincount(binned(values_of(b)),
                                                            minlength=BINS),
                                      blocks, workers)]
    cum = np.cumsum(np.sum(parts, axis=0))
    del parts
    bins = np.searchsorted(cum, ranks, side="right")  # the bin holding each rank
    wanted = np.unique(bins)

    def select(b: Block) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(values_of(b)).ravel()
        return np.unique(v[np.isin(binned(v), wanted)], return_counts=True)

    got = [r for _, r in run_blocks(select, blocks, workers)]
    values, inverse = np.unique(np.concatenate([g[0] for g in got]), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate([g[1] for g in got]),
                         minlength=values.size).astype(np.int64)  # exact below 2**53
    where = binned(values)  # bins of the distinct values, ascending
    out = np.empty(len(ranks), dtype)
    for i, (k, j) in enumerate(zip(ranks, bins, strict=True)):
        in_bin = where == j
        below = int(cum[j - 1]) if j else 0
        pos = np.searchsorted(np.cumsum(counts[in_bin]), k - below, side="right")
        out[i] = values[in_bin][pos]
    return out


def numpy_linear_percentiles(lower: np.ndarray, upper: np.ndarray, n: int,
                             percentiles: Sequence[float]) -> np.ndarray:
    """``numpy.percentile(a, percentiles)`` (method ``"linear"``) of an array ``a`` of ``n``
    values from its order statistics, with NumPy's arithmetic.

    Parameters
    ----------
    lower, upper : numpy.ndarray
        For each percentile the order statistics of rank ``floor(v)`` and ``floor(v) + 1``
        (clipped to ``n - 1``), ``v = (n - 1) * q / 100`` (:func:`percentile_ranks`), in
        the dtype of ``a``.
    n : int
        Number of values.
    percentiles : sequence of float
        Percentiles (0-100).

    Returns
    -------
    numpy.ndarray
        The percentiles, in the dtype NumPy returns for ``a`` (float64 for float32 and
        integer values).
    """
    v = _virtual_indexes(n, percentiles)
    prev = np.floor(v).astype(np.intp)
    prev = np.where(v >= n - 1, -1, prev)  # numpy takes the last value there
    gamma = np.asanyarray(v - prev, dtype=v.dtype)
    a, b = np.asarray(lower), np.asarray(upper)
    diff = b - a
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5, casting="unsafe",
                dtype=type(out.dtype))
    return out


def _virtual_indexes(n: int, percentiles: Sequence[float]) -> np.ndarray:
    """NumPy's virtual index ``(n - 1) * q / 100`` of each percentile (method linear)."""
    q = np.true_divide(np.asarray(percentiles, np.float64), 100)
    return (n - 1) * q


def percentile_ranks(n: int, percentiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the two order statistics each percentile interpolates between."""
    v = _virtual_indexes(n, percentiles)
    lo = np.clip(np.floor(v), 0, n - 1).astype(np.int64)
    return lo, np.minimum(lo + 1, n - 1)


def exact_percentiles(values_of: ValuesOf, blocks: Sequence[Block],
                      percentiles: Sequence[float], workers: int = 1,
                      extent: tuple[int, Any, Any] | None = None,
                      dtype: Any = None) -> np.ndarray:
    """``numpy.percentile`` of the values of all blocks, bit for bit, in bounded memory.

    Parameters
    ----------
    values_of : callable
        ``values_of(block)`` -> the block's values (finite; the same every call).
    blocks : sequence of Block
        The blocks.
    percentiles : sequence of float
        Percentiles (0-100).
    workers : int
        Blocks processed at once (threads).
    extent : (int, scalar, scalar), optional
        ``(n, vmin, vmax)`` when known (:func:`value_extent`); saves a pass.
    dtype : numpy dtype, optional
        The dtype of the array NumPy would be given (default: the values' own). Values in
        float32 compared with ``numpy.percentile`` of their float64 copy: ``float64``.

    Returns
    -------
    numpy.ndarray
        One value per percentile (float64 for float32, float64 and integer values).

    Raises
    ------
    ParameterError
        For percentiles outside [0, 100] or no values at all.
    """
    q = np.asarray(percentiles, np.float64)
    if q.size == 0 or not ((q >= 0) & (q <= 100)).all():
        raise ParameterError(f"percentiles {list(q)} are not in [0, 100]",
                             "give percentiles between 0 and 100")
    n, vmin, vmax = extent if extent is not None else value_extent(values_of, blocks,
                                                                   workers)
    if not n:
        raise ParameterError("no values to take percentiles of", "give a non-empty volume")
    lo, hi = percentile_ranks(n, q)
    stats = order_statistics(values_of, blocks, np.concatenate([lo, hi]),
                             (n, vmin, vmax), workers)
    if dtype is not None:
        stats = stats.astype(dtype)
    return numpy_linear_percentiles(stats[:len(q)], stats[len(q):], n, q)
