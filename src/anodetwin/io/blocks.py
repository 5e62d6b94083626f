"""Block-wise processing of volumes larger than memory.

A volume is cut into a regular grid of **blocks** (3-D boxes, ``block_shape`` voxels); each
block is read with a **halo** (extra voxels on every side, clipped at the volume's faces)
wide enough for the filters run on it, and only its **core** is kept. Functions whose value
at a voxel depends only on voxels within the halo then give, on every core voxel, exactly
what they give on the whole volume: the block-wise result equals the in-memory one.

:func:`run_blocks` runs one function per block on a pool of threads, a few blocks in
flight at a time, so the memory in use is about ``workers`` extended blocks whatever the
volume's size; :func:`block_shape_for` derives the block size from a memory ceiling
(``--memory-limit``, parsed by :func:`parse_memory`). Reads from one file are serialised
(file handles are not thread-safe); the computing runs in parallel (NumPy, SciPy and
scikit-image kernels release the GIL).

Quick use::

    grid = BlockGrid(vol.shape, block_shape_for(vol.shape, 40, halo=8,
                                                memory_limit="4GB", workers=2), halo=8)
    for block, result in run_blocks(lambda b: kernel(read_region(vol, b.outer)), grid, 2):
        ...
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from anodetwin.errors import ParameterError

__all__ = ["Block", "BlockGrid", "block_shape_for", "gaussian_crop", "parse_memory",
           "read_region", "write_region", "run_blocks", "DEFAULT_MEMORY_LIMIT", "box_budget"]

Box = tuple[slice, slice, slice]

#: Memory ceiling of the image stages on a workstation (``--memory-limit``).
DEFAULT_MEMORY_LIMIT = "4GB"

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(value: str | float | int) -> int:
    """A memory size in bytes from ``4GB``, ``512 MiB``, ``2e9`` or a number of bytes.

    Parameters
    ----------
    value : str, int or float
        The size; decimal (kB, MB, GB, TB) and binary (KiB, MiB, GiB, TiB) units.

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    ParameterError
        For text that is not a size or a size under 64 MB.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*",
                     str(value).lower())
    if m is None or m.group(2) not in _UNITS:
        raise ParameterError(f"memory limit '{value}' is not a size",
                             "give e.g. 4GB, 512MiB or a number of bytes")
    size = float(m.group(1)) * _UNITS[m.group(2)]
    if not 64e6 <= size <= 2**60:
        raise ParameterError(f"memory limit '{value}' is "
                             + ("under 64 MB" if size < 64e6 else "beyond any machine"),
                             "give at least 64MB (a workstation: 4GB)")
    n = int(size)
    return n


@dataclass(frozen=True)
class Block:
    """One block of a :class:`BlockGrid`.

    Attributes
    ----------
    index : tuple of int
        (iz, iy, ix) position in the grid.
    core : tuple of 3 slice
        The voxels this block owns, in volume coordinates.
    outer : tuple of 3 slice
        The core widened by the halo and clipped to the volume, in volume coordinates.
    """

    index: tuple[int, int, int]
    core: Box
    outer: Box

    @property
    def inner(self) -> Box:
        """The core in coordinates of the outer box (to crop a result computed on it)."""
        return tuple(slice(c.start - o.start, c.stop - o.start)  # type: ignore[return-value]
                     for c, o in zip(self.core, self.outer, strict=True))

    @property
    def core_shape(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.core)  # type: ignore[return-value]


class BlockGrid:
    """A volume's shape cut into blocks with a halo.

    Parameters
    ----------
    shape : 3 int
        (z, y, x) shape of the volume.
    block_shape : 3 int or int, optional
        Core size of a block (the last block of an axis may be smaller); default: the whole
        volume in one block.
    halo : int or 3 int
        Voxels added on each side (per axis) to read a block.
    """

    def __init__(self, shape: Any, block_shape: Any = None, halo: Any = 0):
        self.shape = tuple(int(n) for n in shape)
        bs = self.shape if block_shape is None else np.broadcast_to(block_shape, (3,))
        self.block_shape = tuple(max(1, min(int(b), n)) for b, n in zip(bs, self.shape,
                                                                          strict=True))
        self.halo = tuple(int(h) for h in np.broadcast_to(halo, (3,)))
        self.grid = tuple(-(-n // b) for n, b in zip(self.shape, self.block_shape,
                                                     strict=True))

    def __len__(self) -> int:
        return int(np.prod(self.grid))

    def block(self, index: tuple[int, int, int]) -> Block:
        """The block at grid position ``index``."""
        core, outer = [], []
        for i, b, n, h in zip(index, self.block_shape, self.shape, self.halo, strict=True):
            lo, hi = i * b, min((i + 1) * b, n)
            core.append(slice(lo, hi))
            outer.append(slice(max(0, lo - h), min(n, hi + h)))
        return Block(tuple(int(i) for i in index), tuple(core), tuple(outer))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Block]:
        for index in np.ndindex(*self.grid):
            yield self.block(index)

    def with_halo(self, halo: Any) -> BlockGrid:
        """The same blocks read with another halo."""
        return BlockGrid(self.shape, self.block_shape, halo)

    def touching(self, zs: slice) -> Iterator[Block]:
        """The blocks whose core meets the z range ``zs``."""
        for b in self:
            if b.core[0].start < zs.stop and zs.start < b.core[0].stop:
                yield b


def box_budget(memory_limit: str | float | int, bytes_per_voxel: float, workers: int = 1,
               reserve: float = 0.35) -> float:
    """Voxels of one worker's extended box under a memory ceiling: the ceiling less the
    ``reserve`` share, split over ``workers``, over ``bytes_per_voxel``."""
    return parse_memory(memory_limit) * (1 - reserve) / max(1, int(workers)) / bytes_per_voxel


def block_shape_for(shape: Any, bytes_per_voxel: float, halo: int,
                    memory_limit: str | float | int = DEFAULT_MEMORY_LIMIT,
                    workers: int = 1, reserve: float = 0.35,
                    max_side: int | None = None) -> tuple[int, int, int]:
    """The largest cubic block whose extended boxes, one per worker, fit a memory ceiling;
    a volume that fits one such box whole is cut into one slab per worker instead (along
    its longest axis), so that every worker has work and no halo is read twice in vain.

    Parameters
    ----------
    shape : 3 int
        Volume shape (z, y, x).
    bytes_per_voxel : float
        Working memory of the kernel per voxel of its extended box (inputs, intermediates,
        outputs).
    halo : int
        Halo of the kernel (voxels per side).
    memory_limit : str or number
        Ceiling (see :func:`parse_memory`).
    workers : int
        Blocks processed at once.
    reserve : float
        Share of the ceiling kept for the process, the reader and per-column maps.
    max_side : int, optional
        Largest core side: the kernel is no faster on larger blocks (they only hold more
        memory).

    Returns
    -------
    tuple of int
        Block core shape (z, y, x); a multiple of 16 voxels where the volume is larger.

    Raises
    ------
    ParameterError
        When not even a 16-voxel core fits (and the volume does not fit whole).
    """
    workers = max(1, int(workers))
    budget = box_budget(memory_limit, bytes_per_voxel, workers, reserve)
    side = int(budget ** (1 / 3)) - 2 * int(halo)
    side = side // 16 * 16
    if max_side:
        side = min(side, int(max_side))
    shape = tuple(int(n) for n in shape)
    fits = np.prod(shape, dtype=float) <= budget  # the whole volume: no halo to read
    if side < 16 and not fits:
        raise ParameterError(
            f"memory limit {memory_limit} leaves no room for a block with a {halo}-voxel "
            f"halo on {workers} worker{'s' if workers > 1 else ''}",
            "raise --memory-limit" + (" or lower --workers" if workers > 1 else ""))
    if not fits and ((side + 2 * halo) / side) ** 3 > 4:
        from anodetwin.log import get_logger

        get_logger("blocks").warning(
            "memory limit %s: blocks of %d^3 voxels read a %d-voxel halo, %.0fx their own "
            "voxels; a higher limit (or fewer workers) is much faster", memory_limit, side,
            halo, ((side + 2 * halo) / side) ** 3)
    if fits:
        ax = int(np.argmax(shape))
        slab = min(shape[ax], -(-shape[ax] // (16 * workers)) * 16)
        return tuple(slab if a == ax else n for a, n in enumerate(shape))  # type: ignore
    return tuple(min(side, n) for n in shape)  # type: ignore[return-value]


_READ_LOCK = threading.RLock()


def read_region(volume: Any, box: Box) -> np.ndarray:
    """Voxels of a box of a volume in memory or on disk.

    Parameters
    ----------
    volume : numpy.ndarray, Volume, LazyVolume, h5py or zarr dataset
        The volume (z, y, x).
    box : tuple of 3 slice
        The box (explicit bounds, step 1).

    Returns
    -------
    numpy.ndarray
        The voxels (a view for arrays in memory).
    """
    from anodetwin.io.volume import LazyVolume

    if isinstance(volume, LazyVolume):  # one reader of a file at a time
        with _READ_LOCK:
            return volume.region(*box)
    if hasattr(volume, "region"):  # views computed from volumes (they lock their reads)
        return volume.region(*box)
    data = volume if isinstance(volume, np.ndarray) else getattr(volume, "data", volume)
    if isinstance(data, np.ndarray):
        return data[box]
    with _READ_LOCK:
        return np.asarray(data[box])


def write_region(out: Any, box: Box, values: np.ndarray) -> None:
    """Write ``values`` into ``box`` of an array in memory or an HDF5/Zarr dataset (one
    writer at a time for files)."""
    if isinstance(out, np.ndarray):
        out[box] = values
        return
    with _READ_LOCK:
        out[box] = values


def run_blocks(fn: Callable[[Block], Any], blocks: Any, workers: int = 1,
               progress: Callable[[float], None] | None = None
               ) -> Iterator[tuple[Block, Any]]:
    """Run ``fn`` on every block, ``workers`` at a time, and yield results as they come.

    At most ``workers + 1`` blocks are in flight, so the memory held is bounded by the
    block size whatever the number of blocks.

    Parameters
    ----------
    fn : callable
        ``fn(block) -> result``.
    blocks : iterable of Block
        The blocks (a :class:`BlockGrid` or a selection of its blocks).
    workers : int
        Threads (1: in the calling thread, in grid order).
    progress : callable, optional
        Called with the number of core voxels of each finished block.

    Yields
    ------
    (Block, result)
        In completion order (grid order with one worker).
    """
    it = iter(blocks)
    if int(workers) <= 1:
        for b in it:
            r = fn(b)
            if progress:
                progress(float(np.prod(b.core_shape)))
            yield b, r
        return
    with ThreadPoolExecutor(max_workers=int(workers)) as pool:
        pending: dict = {}
        for b in it:
            pending[pool.submit(fn, b)] = b
            if len(pending) > workers:
                yield from _finished(pending, progress)
        while pending:
            yield from _finished(pending, progress)


def _finished(pending: dict, progress: Callable[[float], None] | None
              ) -> Iterator[tuple[Block, Any]]:
    """Wait for at least one of the ``pending`` futures; yield and forget the done ones."""
    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    for f in done:
        b = pending.pop(f)
        if progress:
            progress(float(np.prod(b.core_shape)))
        yield b, f.result()


def gaussian_crop(a: np.ndarray, sigma: float, box: tuple, truncate: float = 3.0
                  ) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(a, sigma, truncate=truncate)[box]``, value for value,
    with each axis's pass kept to what the next passes need.

    Parameters
    ----------
    a : numpy.ndarray
        Values (float32 stays float32).
    sigma, truncate : float
        The Gaussian (voxels) and its radius in sigmas.
    box : tuple of slice
        The output box (explicit bounds).

    Returns
    -------
    numpy.ndarray
        The filtered values of ``box``.
    """
    from scipy import ndimage

    out = a
    for axis, b in enumerate(box):
        out = ndimage.gaussian_filter1d(out, sigma, axis=axis, truncate=truncate)
        out = out[(slice(None),) * axis + (b,)]
    return out
