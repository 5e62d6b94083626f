"""Volumes as the DVC reads them: in memory, or on disk and read one region at a time.

:func:`as_worker_volume` turns what a caller gives (an array or
:class:`~anodetwin.io.Volume`, a path, a :class:`~anodetwin.io.LazyVolume` with its region
of interest and binning, or an ``h5py`` dataset) into a :class:`WorkerVolume`: a small,
picklable description that the correlation workers (threads, processes or Dask workers)
read box by box. A volume on disk is never read whole: each worker opens the file itself
and reads only the box its batch of nodes touches, and the whole-volume passes (the noise
level, the binned copy of the global registration, the finite and empty-mask checks, the
label statistics of :mod:`anodetwin.dvc.regions`) go slab by slab.

A lazy view is reopened by its name (``file.h5:/dataset``, ``scan.tif``, ...) with the same
region and binning, so a box read in a worker holds the same voxels as
``lazy.region(...)``; a view that cannot be reopened that way (a source opened with a
forced format, a view of something else) is read through the view itself, in this process
only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from anodetwin.errors import AnodetwinError, ParameterError

__all__ = ["WorkerVolume", "as_worker_volume", "SLAB_VOXELS"]

#: Voxels read at a time by the slab-wise passes over a whole volume (8 Mi voxels).
SLAB_VOXELS = 8 * 2**20

Box = tuple[slice, slice, slice]


def _explicit(box: Any, shape: tuple) -> Box:
    """``box`` with explicit, clipped starts and stops (no step)."""
    out = []
    for s, n in zip(box, shape, strict=True):
        start, stop, _ = s.indices(int(n))
        out.append(slice(start, max(start, stop)))
    return (out[0], out[1], out[2])


@dataclass
class WorkerVolume:
    """A volume the DVC workers read box by box (module notes).

    Exactly one source is set: ``array`` (in memory), ``path`` with ``dataset`` (an HDF5
    dataset read with h5py), ``path`` alone (a volume path as
    :func:`anodetwin.io.open_volume` takes it, viewed through ``roi`` and ``binning``), or
    ``lazy`` (a view read in this process only).

    Attributes
    ----------
    shape : tuple of 3 int
        Shape (z, y, x) of the volume as correlated (after region and binning).
    dtype : numpy.dtype
        Its voxel type.
    array : numpy.ndarray, optional
        The voxels, in memory.
    path : str, optional
        A volume path, or the HDF5 file of ``dataset``.
    dataset : str, optional
        Name of an h5py dataset in the file ``path``.
    roi : tuple of 3 slice, optional
        Region (z, y, x) of the file's voxels that the volume views (None: all).
    binning : tuple of 3 int
        Mean-binning factors (z, y, x) of that view.
    voxel_size_um : tuple of 3 float, optional
        The file's voxel size, given when it is reopened (so that what the file lacks is
        not logged again at every read).
    lazy : object, optional
        A view with ``region(zs, ys, xs)`` that cannot be reopened by a path.
    """

    shape: tuple
    dtype: Any
    array: np.ndarray | None = None
    path: str | None = None
    dataset: str | None = None
    roi: tuple | None = None
    binning: tuple = (1, 1, 1)
    voxel_size_um: tuple | None = None
    lazy: Any = None

    def __getstate__(self) -> dict:
        if self.lazy is not None:
            raise ParameterError(
                "a lazily opened volume that cannot be reopened by its path cannot be sent "
                "to worker processes", "give its path, or correlate in this process "
                "(processes=1 or the native engine)")
        return dict(self.__dict__)

    def region(self, box: Any) -> np.ndarray:
        """The voxels of one box, in the volume's own type.

        Parameters
        ----------
        box : tuple of 3 slice
            Box (z, y, x) in voxels of the volume (open or negative bounds as in numpy).

        Returns
        -------
        numpy.ndarray
            The box's voxels (a view for an in-memory volume).
        """
        box = _explicit(box, self.shape)
        if self.array is not None:
            return np.asarray(self.array[box])
        if self.lazy is not None:
            return np.asarray(self.lazy.region(*box))
        if self.dataset is not None:
            import h5py

            with h5py.File(self.path, "r") as f:
                return f[self.dataset][box]
        from anodetwin.io import open_volume

        with open_volume(self.path, voxel_size=self.voxel_size_um) as src:
            return src.lazy(self.roi, self.binning, progress=False).region(*box)

    def read(self, box: Any) -> np.ndarray:
        """The voxels of one box as float32 (what the correlation works on).

        Parameters
        ----------
        box : tuple of 3 slice
            Box (z, y, x) in voxels of the volume.

        Returns
        -------
        numpy.ndarray of float32
        """
        return np.asarray(self.region(box), dtype=np.float32)

    def slabs(self, max_voxels: int | None = None, multiple: int = 1
              ) -> Iterator[tuple[int, np.ndarray]]:
        """The volume in consecutive z-slabs, read one at a time.

        Parameters
        ----------
        max_voxels : int, optional
            Voxels per slab at most (default :data:`SLAB_VOXELS`; at least ``multiple``
            planes).
        multiple : int
            Planes per slab are a multiple of this.

        Yields
        ------
        (int, numpy.ndarray)
            First z of the slab and its voxels (volume type).
        """
        nz, ny, nx = (int(n) for n in self.shape)
        cap = SLAB_VOXELS if max_voxels is None else int(max_voxels)
        k = max(1, cap // max(1, ny * nx * multiple)) * multiple
        for z in range(0, nz, k):
            yield z, self.region((slice(z, min(nz, z + k)), slice(0, ny), slice(0, nx)))

    def binned(self, factor: int) -> np.ndarray:
        """The whole volume mean-binned by ``factor`` (:func:`anodetwin.io.bin_volume`),
        as float32, read slab by slab: equal to binning the whole array at once.

        Parameters
        ----------
        factor : int
            Binning factor along every axis.

        Returns
        -------
        numpy.ndarray of float32
            Shape ``shape // factor``.
        """
        from anodetwin.io import bin_volume

        b = int(factor)
        if self.array is not None:
            arr = self.array
            return (bin_volume(arr, b) if b > 1 else arr).astype(np.float32)
        nz, ny, nx = (int(n) // b for n in self.shape)
        out = np.empty((nz, ny, nx), dtype=np.float32)
        whole = WorkerVolume(**{**self.__dict__, "shape": (nz * b, ny * b, nx * b)})
        for z, block in whole.slabs(multiple=b):
            out[z // b: (z + len(block)) // b] = bin_volume(block, b) if b > 1 else block
        return out

    def any_nonzero(self) -> bool:
        """Whether some voxel is non-zero (read slab by slab, stopping at the first).

        Returns
        -------
        bool
        """
        return any(bool(np.any(block)) for _, block in self.slabs())

    def require_finite(self, name: str) -> None:
        """Raise unless every voxel of a floating-point volume is finite (read slab by
        slab; integer volumes always pass).

        Parameters
        ----------
        name : str
            How the message names the volume.

        Raises
        ------
        NonFiniteError
            NaN or inf voxels, counted over the whole volume.
        """
        from anodetwin.io.volume import nonfinite_error

        if not np.issubdtype(np.dtype(self.dtype), np.floating):
            return
        nan = inf = 0
        for _, block in self.slabs():
            nan += int(np.isnan(block).sum())
            inf += int(np.isinf(block).sum())
        if nan or inf:
            raise nonfinite_error(name, nan, inf)


def _source_voxel_size(lazy: Any) -> tuple | None:
    """Voxel size (z, y, x) of the file under a binned view (None: unknown)."""
    vs = getattr(lazy, "voxel_size_um", None)
    if vs is None:
        return None
    return tuple(float(v) / int(b) for v, b in zip(vs, lazy.binning, strict=True))


def _reopened(lazy: Any) -> WorkerVolume:
    """A :class:`~anodetwin.io.LazyVolume` as a worker volume: reopened by its name with
    its region and binning when that gives the same view, else read through itself."""
    from anodetwin.io import open_volume

    spec = WorkerVolume(tuple(lazy.shape), np.dtype(lazy.dtype), path=str(lazy.name),
                        roi=tuple(lazy.roi), binning=tuple(lazy.binning),
                        voxel_size_um=_source_voxel_size(lazy))
    try:
        with open_volume(spec.path, voxel_size=spec.voxel_size_um) as src:
            view = src.lazy(spec.roi, spec.binning, progress=False)
            same = tuple(view.shape) == spec.shape and np.dtype(view.dtype) == spec.dtype \
                and tuple(view.roi) == spec.roi
    except (AnodetwinError, OSError):
        same = False
    if same:
        return spec
    return WorkerVolume(spec.shape, spec.dtype, lazy=lazy)


def as_worker_volume(vol: Any, name: str | None = None) -> WorkerVolume:
    """Wrap a volume for the correlation workers (module notes).

    Parameters
    ----------
    vol : numpy.ndarray, Volume, path, LazyVolume, h5py.Dataset or WorkerVolume
        The volume (z, y, x). Paths, lazy views and datasets are never read whole: the
        workers read the boxes they need.
    name : str, optional
        How messages name it; given, a floating-point volume is checked to be finite first
        (slab by slab).

    Returns
    -------
    WorkerVolume
        ``vol`` itself if it is one already.

    Raises
    ------
    NonFiniteError
        A named floating-point volume with NaN or inf.
    """
    from anodetwin.io import LazyVolume, open_volume

    if isinstance(vol, WorkerVolume):
        out = vol
    elif isinstance(vol, (str, os.PathLike)):
        with open_volume(vol) as src:
            out = WorkerVolume(tuple(src.shape), np.dtype(src.dtype), path=os.fspath(vol),
                               voxel_size_um=src.voxel_size_um)
    elif isinstance(vol, LazyVolume):
        out = _reopened(vol)
    elif _is_h5_dataset(vol):
        out = WorkerVolume(tuple(vol.shape), np.dtype(vol.dtype), path=vol.file.filename,
                           dataset=vol.name)
    elif hasattr(vol, "region") and hasattr(vol, "shape") and not isinstance(vol, np.ndarray):
        out = WorkerVolume(tuple(vol.shape), np.dtype(vol.dtype), lazy=vol)
    else:
        arr = np.asarray(getattr(vol, "data", vol))
        out = WorkerVolume(arr.shape, arr.dtype, array=arr)
    if name:
        what = f"{name} '{vol}'" if isinstance(vol, (str, os.PathLike)) else name
        out.require_finite(what)
    return out


def _is_h5_dataset(obj: Any) -> bool:
    """Whether ``obj`` is an ``h5py.Dataset`` (without importing h5py for other inputs)."""
    if type(obj).__module__.split(".")[0] != "h5py":
        return False
    import h5py

    return isinstance(obj, h5py.Dataset)
