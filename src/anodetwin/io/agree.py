"""Inputs that meet must agree: voxel size, shape and origin (the frame).

Wherever two inputs meet (the scans of a series, a DVC result and its volumes, labels and
their tomogram, a mask and its volume), :func:`require_same_grid` checks that they lie on
one grid, and :func:`require_series_grid` does so for a whole series against its first
member. They accept paths (only the metadata is read), :class:`~anodetwin.io.Volume` and lazy
volumes, DVC results (the grid of their reference volume), labels (a segmentation) and plain
arrays (shape only: an array carries no voxel size or origin).

* **shape**: equal, axis by axis;
* **voxel size**: equal per axis (z, y, x) within a relative ``tolerance`` (1e-6). A volume
  whose voxel size is unknown (not in the file) next to one whose size is known is refused:
  the two may differ by any factor;
* **origin** (position of the first voxel centre): equal within ``tolerance`` of a voxel.

An explicit voxel size (``voxel_size``; ``--voxel-size`` on the command line) states the
grid of all inputs: differences in the files' voxel sizes and origins are then accepted and
logged as warnings (the shapes must still agree), and the result carries that voxel size.
A failed check raises :class:`~anodetwin.errors.GridMismatchError` with one line naming both
inputs and their values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anodetwin.errors import GridMismatchError
from anodetwin.io.volume import normalise_voxel_size
from anodetwin.log import get_logger

__all__ = ["Grid", "grid_of", "require_same_grid", "require_series_grid", "format_voxel_size",
           "format_number",
           "input_name", "DEFAULT_TOLERANCE"]

log = get_logger("io")

#: Relative tolerance of voxel sizes (per axis) and of origins (in voxels).
DEFAULT_TOLERANCE = 1e-6

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class Grid:
    """The grid of an input.

    Attributes
    ----------
    shape : tuple of 3 int or None
        Voxels along z, y, x (None: not known, e.g. a DVC result of an older version).
    voxel_size_um : tuple of 3 float or None
        Voxel size (z, y, x) in um; None: unknown.
    origin : tuple of 3 float or None
        Position of the first voxel centre (um; voxels when the voxel size is unknown);
        None: not carried (the origin is then not compared).
    metadata : bool
        False for a plain array: it carries neither voxel size nor origin, so only its
        shape is compared.
    """

    shape: tuple | None
    voxel_size_um: Triple | None = None
    origin: Triple | None = None
    metadata: bool = True


def format_number(x: float) -> str:
    """A number for messages (``:g``), negative zero written as 0.

    Parameters
    ----------
    x : float
        The number.

    Returns
    -------
    str
        Its ``:g`` text.
    """
    return f"{float(x) + 0.0:g}"  # -0.0 + 0.0 == +0.0


def format_voxel_size(vs: Any) -> str:
    """A voxel size for messages.

    Parameters
    ----------
    vs : float, sequence of 3 float or None
        Voxel size, um (one value or z, y, x).

    Returns
    -------
    str
        ``0.2 um`` when isotropic, ``0.2 x 0.1 x 0.1 um (z, y, x)`` otherwise, or
        ``unknown`` for None.
    """
    if vs is None:
        return "unknown"
    v = [float(x) for x in np.broadcast_to(np.asarray(vs, float), (3,))]
    if max(v) - min(v) <= 1e-12 * max(v):
        return f"{format_number(v[0])} um"
    return " x ".join(format_number(x) for x in v) + " um (z, y, x)"


def input_name(what: str, value: Any) -> str:
    """How messages name an input.

    Parameters
    ----------
    what : str
        Role of the input, e.g. ``"reference"``.
    value : object
        The input as given (a path, volume or array).

    Returns
    -------
    str
        ``what 'path'`` for a path, else ``what``.
    """
    return f"{what} '{value}'" if isinstance(value, (str, os.PathLike)) else what


def _triple(v: Any) -> Triple | None:
    if v is None:
        return None
    a = np.broadcast_to(np.asarray(v, float).reshape(-1), (3,))
    return (float(a[0]), float(a[1]), float(a[2]))


def _pair_grid(obj: Any) -> Grid:
    """The reference-volume grid recorded in a DVC result (``params["reference_grid"]``)."""
    ref = (getattr(obj, "params", None) or {}).get("reference_grid") or {}
    shape = ref.get("shape")
    vs = getattr(obj, "voxel_size_um", None)
    vs = vs if vs is not None else ref.get("voxel_size_um")
    return Grid(tuple(int(n) for n in shape) if shape is not None else None,
                normalise_voxel_size(vs, "voxel size of the DVC result")
                if vs is not None else None, _triple(ref.get("origin_um")))


def grid_of(obj: Any) -> Grid:
    """The :class:`Grid` of a path (metadata only), volume, DVC result, segmentation or
    array.

    Parameters
    ----------
    obj : path, Grid, Volume, LazyVolume, VolumeSource, DVC result, Segmentation or array
        The input; a path is opened for its metadata only, a DVC result gives the grid of
        its reference volume, a plain array only its shape.

    Returns
    -------
    Grid
        Shape (z, y, x) in voxels, voxel size and origin in um (None where not carried).

    Raises
    ------
    InputError
        A path cannot be opened as a volume (see :func:`anodetwin.io.open_volume`).
    """
    if isinstance(obj, Grid):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        from anodetwin.io.formats import open_volume

        with open_volume(obj) as src:
            return Grid(tuple(src.shape), src.voxel_size_um, _triple(src.origin))
    if hasattr(obj, "grid_shape") and hasattr(obj, "params"):
        return _pair_grid(obj)
    if hasattr(obj, "phases") and hasattr(obj, "voxel_size_um"):
        vs = obj.voxel_size_um
        return Grid(tuple(obj.phases.shape),
                    normalise_voxel_size(vs) if vs is not None else None,
                    _triple(getattr(obj, "origin_um", None)))
    if hasattr(obj, "voxel_size_um") and hasattr(obj, "origin") and hasattr(obj, "shape"):
        return Grid(tuple(obj.shape), normalise_voxel_size(obj.voxel_size_um),
                    _triple(obj.origin))
    return Grid(tuple(np.shape(getattr(obj, "data", obj))), None, None, metadata=False)


def _same(a: Triple, b: Triple, tolerance: float, scale: Any = None) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    atol = tolerance * (np.asarray(scale, float) if scale is not None else 0.0)
    return bool(np.all(np.abs(a - b) <= atol + tolerance * np.maximum(np.abs(a), np.abs(b))))


def _check_voxel_size(ga: Grid, gb: Grid, name_a: str, name_b: str, tolerance: float,
                      override: Triple | None) -> None:
    va, vb = ga.voxel_size_um, gb.voxel_size_um
    if va is None and vb is None:
        return
    if va is not None and vb is not None and _same(va, vb, tolerance):
        return
    what = (f"{name_a} has voxel size {format_voxel_size(va)} but {name_b} has "
            f"{format_voxel_size(vb)}")
    if override is not None:
        log.warning("%s; using --voxel-size %s for both, as given", what,
                    format_voxel_size(override))
        return
    if va is None or vb is None:
        raise GridMismatchError(what, "give --voxel-size (library: voxel_size_um=) to state the "
                                      "voxel size of all inputs, or write it into the file")
    raise GridMismatchError(what, "bin or resample one onto the other's grid, or give "
                                  "--voxel-size (library: voxel_size_um=) if a file's metadata "
                                  "is wrong")


def _check_origin(ga: Grid, gb: Grid, name_a: str, name_b: str, tolerance: float,
                  override: Triple | None) -> None:
    if ga.origin is None or gb.origin is None or not (ga.metadata and gb.metadata):
        return
    scale = override or ga.voxel_size_um or gb.voxel_size_um or (1.0, 1.0, 1.0)
    if _same(ga.origin, gb.origin, tolerance, scale):
        return
    known = (ga.voxel_size_um is not None) + (gb.voxel_size_um is not None)
    unit = {2: "um", 0: "voxels"}.get(known, "(um or voxels)")
    what = (f"{name_a} has origin ({', '.join(map(format_number, ga.origin))}) but {name_b} "
            f"has ({', '.join(map(format_number, gb.origin))}) {unit}")
    if override is not None:
        log.warning("%s; --voxel-size is given: treating them as one grid", what)
        return
    raise GridMismatchError(what, "crop both to the same region of the sample (same --roi), "
                                  "or give --voxel-size (library: voxel_size_um=) to treat them "
                                  "as one grid")


def require_same_grid(a: Any, b: Any, name_a: str, name_b: str,
                      tolerance: float = DEFAULT_TOLERANCE, voxel_size: Any = None,
                      shape: bool = True, origin: bool = True) -> Grid:
    """Raise :class:`GridMismatchError` unless ``a`` and ``b`` lie on one grid.

    Parameters
    ----------
    a, b : path, Volume, LazyVolume, VolumeSource, DVC result, Segmentation, array or Grid
        The two inputs (paths are opened for their metadata only).
    name_a, name_b : str
        How messages name them, e.g. ``"reference 't0.tif'"``.
    tolerance : float
        Relative tolerance of the voxel sizes (per axis) and of the origins (in voxels).
    voxel_size : float or 3 float, optional
        Explicit voxel size (um) of both: differences of the files' voxel sizes and origins
        are then logged, not refused.
    shape, origin : bool
        Compare the shapes / the origins (e.g. ``shape=False`` for a double scan of another
        region, whose noise only has to come from the same voxel size).

    Returns
    -------
    Grid
        The common grid: ``a``'s shape and origin, and the explicit voxel size if given,
        else the inputs' (None when both are unknown).
    """
    override = normalise_voxel_size(voxel_size, "--voxel-size")
    ga, gb = grid_of(a), grid_of(b)
    if shape and ga.shape is not None and gb.shape is not None \
            and tuple(ga.shape) != tuple(gb.shape):
        raise GridMismatchError(f"the shapes differ: {name_a} has shape {tuple(ga.shape)} "
                                f"but {name_b} has shape {tuple(gb.shape)}",
                                "crop or bin both to the same grid (e.g. --roi / --bin)")
    if ga.metadata and gb.metadata:
        _check_voxel_size(ga, gb, name_a, name_b, tolerance, override)
        if origin:
            _check_origin(ga, gb, name_a, name_b, tolerance, override)
    vs = override or ga.voxel_size_um or gb.voxel_size_um
    return Grid(ga.shape if ga.shape is not None else gb.shape, vs,
                ga.origin if ga.origin is not None else gb.origin, ga.metadata or gb.metadata)


def require_series_grid(items: Sequence[Any], names: Sequence[str] | None = None,
                        tolerance: float = DEFAULT_TOLERANCE, voxel_size: Any = None,
                        shape: bool = True, origin: bool = True) -> Grid:
    """:func:`require_same_grid` of every member of a series against the first one.

    Parameters
    ----------
    items : sequence
        Members of the series (any input :func:`grid_of` accepts), T0 first.
    names : sequence of str, optional
        How messages name them; default ``T0``, ``T1``, ... (with the path for paths).
    tolerance, voxel_size, shape, origin
        As for :func:`require_same_grid`.

    Returns
    -------
    Grid
        The common grid (see :func:`require_same_grid`); for an empty series, no shape and
        the explicit voxel size.

    Raises
    ------
    GridMismatchError
        A member's shape, voxel size or origin differs from T0's.
    """
    items = list(items)
    if names is None:
        names = [f"T{k} '{v}'" if isinstance(v, (str, os.PathLike)) else f"T{k}"
                 for k, v in enumerate(items)]
    if not items:
        return Grid(None, normalise_voxel_size(voxel_size, "--voxel-size"))
    first = grid_of(items[0])
    for item, name in zip(items[1:], names[1:], strict=True):
        require_same_grid(first, item, names[0], name, tolerance, voxel_size, shape, origin)
    return require_same_grid(first, first, names[0], names[0], tolerance, voxel_size)
