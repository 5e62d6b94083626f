"""Stored axes of an array onto (z, y, x); used by :mod:`anodetwin.io.formats`.

Arrays written by other software may name their axes (Zarr v3 ``dimension_names``, xarray's
``_ARRAY_DIMENSIONS``, OME-Zarr ``axes``, HDF5 dimension labels, NeXus ``@axes``) in another
order than (z, y, x), and may carry singleton leading axes (OME-Zarr ``tczyx`` with one time
point and one channel, HDF5 ``(1, z, y, x)``). An :class:`AxisMap` says which stored axis is
z, y and x and which size-1 axes are dropped; block reads go through it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anodetwin.errors import DimensionError

#: Axis names that may be dropped when their size is 1 (time points, channels).
SQUEEZABLE = frozenset({"t", "c", "time", "channel", "channels", "ch"})


@dataclass(frozen=True)
class AxisMap:
    """Which stored axis is z, y, x.

    Attributes
    ----------
    stored_shape : tuple of int
        Shape of the array as stored.
    take : tuple of (int or None)
        Per stored axis: the output axis (0 = z, 1 = y, 2 = x), or None for a dropped size-1
        axis (read at index 0).
    note : str or None
        What could not be understood about the axis names (the stored order was used).
    """

    stored_shape: tuple[int, ...]
    take: tuple[int | None, ...]
    note: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) shape."""
        out = [0, 0, 0]
        for n, t in zip(self.stored_shape, self.take, strict=True):
            if t is not None:
                out[t] = n
        return (out[0], out[1], out[2])

    @property
    def identity(self) -> bool:
        """True if the stored array is (z, y, x) as it is."""
        return self.take == (0, 1, 2)

    @property
    def kept(self) -> list[int]:
        """Output axis of each kept stored axis, in stored order."""
        return [t for t in self.take if t is not None]

    def stored_axes(self) -> list[int]:
        """Stored axis index of z, y and x."""
        return [self.take.index(j) for j in range(3)]

    def selection(self, z: slice, y: slice, x: slice) -> tuple:
        """Index of the stored array for the (z, y, x) block.

        Parameters
        ----------
        z, y, x : slice
            Block of the (z, y, x) view, voxels.

        Returns
        -------
        tuple
            One entry per stored axis: the slice of its output axis, or 0 for a dropped
            size-1 axis.
        """
        sl = (z, y, x)
        return tuple(0 if t is None else sl[t] for t in self.take)

    def to_zyx(self, block: np.ndarray) -> np.ndarray:
        """A block read with :meth:`selection`, as (z, y, x).

        Parameters
        ----------
        block : ndarray
            The block in the stored order of the kept axes (3 dimensions).

        Returns
        -------
        ndarray, shape (z, y, x)
            The block itself if already in order, else a transposed view.
        """
        kept = self.kept
        return block if kept == [0, 1, 2] else block.transpose(np.argsort(kept))

    def permute3(self, values: Sequence[float]) -> tuple[float, float, float]:
        """Three per-axis values in the stored order of the kept axes, as (z, y, x).

        Parameters
        ----------
        values : sequence of 3 float
            Per-axis values (e.g. voxel size, um) in stored order.

        Returns
        -------
        tuple of 3 float
            The values reordered to (z, y, x).
        """
        kept = self.kept
        out = [0.0, 0.0, 0.0]
        for v, t in zip(values, kept, strict=True):
            out[t] = float(v)
        return (out[0], out[1], out[2])


def axis_names(value: Any, ndim: int) -> list[str] | None:
    """Axis names from an attribute of a stored array.

    Parameters
    ----------
    value : object
        A list or array (of str or bytes, or OME axis dicts, whose ``type``
        ``time``/``channel`` marks t/c), or a string ``"zyx"``, ``"z,y,x"``, ``"z:y:x"``.
    ndim : int
        Number of axes of the array.

    Returns
    -------
    list of str or None
        ``ndim`` lower-case names, ``""`` for unnamed axes (None, ``""``, NeXus ``"."``);
        None if ``value`` holds no ``ndim`` names.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                 for v in value.reshape(-1).tolist()]
    if isinstance(value, str):
        parts = [p for p in re.split(r"[\s,:;]+", value.strip()) if p]
        value = list(parts[0]) if len(parts) == 1 and len(parts[0]) == ndim else parts
    if not isinstance(value, (list, tuple)) or len(value) != ndim:
        return None
    names = []
    for v in value:
        if isinstance(v, dict):
            kind = str(v.get("type", "")).lower()
            v = {"time": "t", "channel": "c"}.get(kind, v.get("name"))
        names.append("" if v in (None, ".") else str(v).strip().lower())
    return names


def _squeeze_error(name: str, shape: tuple, axis: int, label: str) -> DimensionError:
    what = f"axis '{label}'" if label else f"axis {axis}"
    return DimensionError(
        f"'{name}' holds {shape[axis]} volumes along {what} (shape {shape})",
        "a 3D volume (z, y, x) is needed: save one of them on its own (e.g. data[0] with "
        "h5py/zarr, or one time point/channel in the writing software) and read that")


def _unnamed(shape: tuple, name: str, note: str | None) -> AxisMap | None:
    """Map without names: the last three axes are (z, y, x); leading axes must be size 1."""
    ndim = len(shape)
    if ndim < 3:
        return None
    for k in range(ndim - 3):
        if shape[k] != 1:
            raise _squeeze_error(name, shape, k, "")
    return AxisMap(shape, (None,) * (ndim - 3) + (0, 1, 2), note)


def axis_map(shape: Sequence[int], names: list[str] | None, name: str,
             source: str = "axis names") -> AxisMap | None:
    """The :class:`AxisMap` of an array of ``shape`` whose axes are called ``names``.

    Names that are a permutation of z, y, x (plus size-1 axes named t/c, or unnamed) are
    followed; otherwise the stored order is used (noted if there were names) and unnamed
    leading size-1 axes are dropped. None if the array has fewer than 3 axes.

    Parameters
    ----------
    shape : sequence of int
        Stored shape.
    names : list of str or None
        Axis names from :func:`axis_names`; None when the file names none.
    name : str
        The dataset, named in errors and notes.
    source : str, optional
        Where the names came from (e.g. the attribute), for the note.

    Returns
    -------
    AxisMap or None
        The mapping of stored axes to (z, y, x); None for fewer than 3 axes.

    Raises
    ------
    DimensionError
        If an axis other than z, y, x has more than one element (several volumes).
    """
    shape = tuple(int(n) for n in shape)
    if names is None or not any(names):
        return _unnamed(shape, name, None)
    where = {n: k for k, n in enumerate(names) if n in ("z", "y", "x")}
    extra = [k for k, n in enumerate(names) if n not in ("z", "y", "x")]
    if len(where) == 3 and len(names) - len(extra) == 3 and \
            all(names[k] in SQUEEZABLE or names[k] == "" for k in extra):
        for k in extra:
            if shape[k] != 1:
                raise _squeeze_error(name, shape, k, names[k])
        take = tuple({"z": 0, "y": 1, "x": 2}.get(n) for n in names)
        return AxisMap(shape, take)
    note = (f"{source} {names} are not a permutation of z, y, x; the stored order is read "
            "as (z, y, x)")
    return _unnamed(shape, name, note)
