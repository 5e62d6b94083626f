"""Volumes with their voxel size, regions of interest, binning and validation.

A :class:`Volume` is a 3D array indexed (z, y, x) together with its voxel size (um) and the
position of its first voxel centre (``origin``, um), the pair ParaView calls spacing and
origin. Lazy sources (:mod:`anodetwin.io.formats`) hand out :class:`LazyVolume` views that
are read slab by slab, so a volume larger than memory can be cropped, binned or converted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from anodetwin.errors import (
    DimensionError,
    NonFiniteError,
    ParameterError,
    ShapeMismatchError,
)

__all__ = [
    "Volume",
    "LazyVolume",
    "SlabVolume",
    "VolumeLike",
    "ROI",
    "parse_roi",
    "normalise_roi",
    "normalise_binning",
    "normalise_voxel_size",
    "bin_volume",
    "grey_value_stats",
    "binned_geometry",
    "require_3d",
    "require_finite",
    "nonfinite_error",
    "require_same_shape",
    "SLAB_BYTES",
]

#: Target size (bytes of source data) of one slab read or written at a time.
SLAB_BYTES = 32 * 1024**2

ROI = tuple[slice, slice, slice]
Triple = tuple[float, float, float]

#: Voxel sizes accepted, in um (0.1 nm to 10 cm): outside, the value was surely typed in
#: another unit (1e-9 for 1 nm in metres).
VOXEL_SIZE_RANGE_UM = (1e-4, 1e5)


def normalise_voxel_size(voxel_size: Any, name: str = "voxel size") -> Triple | None:
    """Voxel size as a (z, y, x) tuple of positive finite floats in um, or None.

    Parameters
    ----------
    voxel_size : float, sequence of 3 floats or None
        Isotropic size or per-axis (z, y, x) sizes, in micrometres.
    name : str
        Name of the input, used in error messages.

    Raises
    ------
    ParameterError
        If a value is not a positive number, or lies outside :data:`VOXEL_SIZE_RANGE_UM`
        (a value in metres or nanometres typed as micrometres).
    """
    if voxel_size is None:
        return None
    try:
        arr = np.asarray(voxel_size, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} {voxel_size!r} is not a number",
                             "give the voxel size in micrometres, e.g. 0.05") from None
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ParameterError(f"{name} {voxel_size!r} is not a positive size",
                             "give one positive value or three (z, y, x) values in micrometres")
    lo, hi = VOXEL_SIZE_RANGE_UM
    if np.any(arr < lo) or np.any(arr > hi):
        raise ParameterError(
            f"{name} {voxel_size!r} um is outside {lo:g}-{hi:g} um",
            "the unit is micrometres (1 nm = 0.001, 1 mm = 1000): give the size in um")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def normalise_binning(binning: Any) -> tuple[int, int, int]:
    """Binning factors as a (z, y, x) tuple of positive integers.

    Parameters
    ----------
    binning : int, sequence of 3 int or None
        One factor for all axes, or one per axis (z, y, x); None means no binning.

    Returns
    -------
    tuple of 3 int
        Factors (z, y, x), each >= 1.

    Raises
    ------
    ParameterError
        A factor is not a positive integer, or there are neither 1 nor 3 of them.
    """
    if binning is None:
        return (1, 1, 1)
    try:
        arr = np.asarray(binning).reshape(-1)
        vals = [int(v) for v in arr]
        ok = all(float(v) == float(w) for v, w in zip(vals, arr, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok or len(vals) not in (1, 3) or min(vals) < 1:
        raise ParameterError(f"binning {binning!r} is not a positive integer",
                             "give an integer >= 1 or three (z, y, x) integers")
    if len(vals) == 1:
        vals = vals * 3
    return (vals[0], vals[1], vals[2])


_ROI_PART = re.compile(r"^\s*(-?\d+)?\s*(?::\s*(-?\d+)?\s*)?$")


def parse_roi(text: str | None) -> ROI | None:
    """Parse a region of interest ``"z0:z1,y0:y1,x0:x1"`` (voxels, end exclusive).

    Empty bounds mean the start/end of the axis (``":,100:200,"``); negative bounds count
    from the end, as in Python slicing.

    Parameters
    ----------
    text : str or None
        The ROI text; None or blank means the whole volume.

    Returns
    -------
    tuple of 3 slice or None
        Slices (z, y, x) with the bounds as written (None where empty); None for no ROI.

    Raises
    ------
    ParameterError
        The text does not have three ``start:stop`` parts of integers.
    """
    if text is None or str(text).strip() == "":
        return None
    parts = str(text).split(",")
    if len(parts) != 3:
        raise ParameterError(f"ROI '{text}' does not have three parts",
                             "write it as z0:z1,y0:y1,x0:x1 (voxels, end exclusive)")
    out = []
    for p in parts:
        m = _ROI_PART.match(p)
        if not m or (":" not in p and p.strip()):
            raise ParameterError(f"ROI part '{p}' of '{text}' is not start:stop",
                                 "write it as z0:z1,y0:y1,x0:x1 with integers, e.g. 0:100,:,50:")
        a = int(m.group(1)) if m.group(1) is not None else None
        b = int(m.group(2)) if m.group(2) is not None else None
        out.append(slice(a, b))
    return (out[0], out[1], out[2])


def normalise_roi(roi: Any, shape: Sequence[int]) -> ROI:
    """Turn an ROI (None, text, or 3 slices/pairs) into 3 slices with explicit bounds.

    Parameters
    ----------
    roi : str, sequence of 3 slices or (start, stop) pairs, or None
        Region in voxels (text as for :func:`parse_roi`); None is the whole volume.
    shape : sequence of 3 int
        Shape (z, y, x) of the volume, voxels.

    Returns
    -------
    tuple of 3 slice
        Non-negative start and stop per axis (z, y, x), step None.

    Raises
    ------
    ParameterError
        If the ROI has a step, is empty or lies outside the volume.
    """
    if isinstance(roi, str) or roi is None:
        roi = parse_roi(roi) if isinstance(roi, str) else None
    if roi is None:
        roi = (slice(None),) * 3
    roi = tuple(roi)
    if len(roi) != 3:
        raise ParameterError(f"ROI {roi!r} does not have three (z, y, x) parts",
                             "give three slices or pairs (start, stop)")
    out = []
    for axis, (r, n) in enumerate(zip(roi, shape, strict=True)):
        if not isinstance(r, slice):
            r = slice(*r)
        if r.step not in (None, 1):
            raise ParameterError(f"ROI axis {'zyx'[axis]} has a step {r.step}",
                                 "use binning instead of a slice step")
        outside = [b for b in (r.start, r.stop) if b is not None and not -n <= b <= n]
        if outside:  # never clipped silently
            raise ParameterError(
                f"ROI axis {'zyx'[axis]} {'' if r.start is None else r.start}:"
                f"{'' if r.stop is None else r.stop} reaches outside the volume of size {n}",
                f"choose bounds within 0:{n} (negative ones count from the end)")
        start, stop, _ = r.indices(n)
        if stop <= start:
            raise ParameterError(
                f"ROI axis {'zyx'[axis]} {r.start}:{r.stop} is empty for a volume of size {n}",
                f"choose bounds within 0:{n}")
        out.append(slice(start, stop))
    return (out[0], out[1], out[2])


def binned_geometry(
    roi: ROI, binning: tuple[int, int, int], voxel_size: Triple | None, origin: Triple
) -> tuple[tuple[int, int, int], ROI, Triple | None, Triple]:
    """Shape, effective ROI (cropped to whole bins), voxel size and origin after ROI + binning.

    The origin is the position (um) of the first voxel centre; a bin's centre is the mean of
    the centres it covers.

    Parameters
    ----------
    roi : tuple of 3 slice
        Region (z, y, x) with explicit bounds, voxels (from :func:`normalise_roi`).
    binning : tuple of 3 int
        Binning factors (z, y, x).
    voxel_size : tuple of 3 float or None
        Voxel size (z, y, x) of the source, um; None if unknown.
    origin : tuple of 3 float
        Centre of the source's first voxel, um (voxels when ``voxel_size`` is None).

    Returns
    -------
    shape : tuple of 3 int
        Binned shape (z, y, x), voxels.
    roi : tuple of 3 slice
        Source region actually covered by whole bins.
    voxel_size : tuple of 3 float or None
        Binned voxel size, um.
    origin : tuple of 3 float
        Centre of the first bin, in the unit of ``origin``.

    Raises
    ------
    ParameterError
        A binning factor exceeds the ROI's size on its axis.
    """
    shape = tuple((r.stop - r.start) // b for r, b in zip(roi, binning, strict=True))
    if min(shape) < 1:
        raise ParameterError(
            f"binning {binning} is larger than the ROI of size "
            f"{tuple(r.stop - r.start for r in roi)}", "use a smaller binning or a larger ROI")
    eff = tuple(slice(r.start, r.start + n * b) for r, n, b in zip(roi, shape, binning, strict=True))
    vs = voxel_size or (1.0, 1.0, 1.0)
    new_origin = tuple(o + (r.start + (b - 1) / 2.0) * v
                       for o, r, b, v in zip(origin, roi, binning, vs, strict=True))
    new_vs = (tuple(v * b for v, b in zip(voxel_size, binning, strict=True))
              if voxel_size is not None else None)
    return shape, eff, new_vs, new_origin  # type: ignore[return-value]


def bin_volume(data: np.ndarray, binning: Any) -> np.ndarray:
    """Mean-bin a 3D array by integer factors, keeping its dtype.

    Trailing voxels that do not fill a whole bin are dropped. Integer results are rounded to
    the nearest integer (ties to even); boolean volumes take the majority (ties -> True).
    64-bit integers are binned in integer arithmetic, exact over their whole range.

    Parameters
    ----------
    data : numpy.ndarray
        3D array (z, y, x).
    binning : int or sequence of 3 int
        Bin size per axis.
    """
    b = normalise_binning(binning)
    if b == (1, 1, 1):
        return data
    n = tuple(s // f for s, f in zip(data.shape, b, strict=True))
    if min(n) < 1:
        raise ParameterError(f"binning {b} is larger than the array of shape {data.shape}",
                             "use a smaller binning")
    v = data[: n[0] * b[0], : n[1] * b[1], : n[2] * b[2]]
    v = v.reshape(n[0], b[0], n[1], b[1], n[2], b[2])
    count = b[0] * b[1] * b[2]
    if data.dtype.kind in "iu" and (data.dtype.itemsize > 4 or count >= 2**21):
        return _int_bin_mean(v, count)  # a float64 sum would round (or overflow) these
    s = v.sum(axis=(1, 3, 5), dtype=np.float64)
    s /= b[0] * b[1] * b[2]
    if data.dtype == np.bool_:
        return s >= 0.5
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return np.clip(np.rint(s), info.min, info.max).astype(data.dtype)
    return s.astype(data.dtype)


def _int_bin_mean(v: np.ndarray, count: int) -> np.ndarray:
    """Mean over axes 1, 3, 5 of integer array ``v`` (``count`` values each), rounded half
    to even, in integer arithmetic. Types of <= 32 bits are summed in int64; 64-bit signed
    values are shifted to uint64 (order and parity kept), where sum(v // count) cannot
    overflow."""
    if v.dtype.itemsize < 8:
        whole, frac = np.divmod(v.sum(axis=(1, 3, 5), dtype=np.int64), count)
        up = (2 * frac > count) | ((2 * frac == count) & (whole % 2 == 1))
        return (whole + up).astype(v.dtype)
    if v.dtype.kind == "i":
        udt = np.dtype(f"u{v.dtype.itemsize}")
        flip = udt.type(1 << (8 * v.dtype.itemsize - 1))
        return (_uint_bin_mean(v.view(udt) ^ flip, count) ^ flip).view(v.dtype)
    return _uint_bin_mean(v, count)


def _uint_bin_mean(v: np.ndarray, count: int) -> np.ndarray:
    """:func:`_int_bin_mean` of unsigned ``v``: sum(v // count) + round(sum(v % count) /
    count), each quotient <= max / count so that their sum fits the type."""
    axes = (1, 3, 5)
    quot = (v // count).sum(axis=axes, dtype=v.dtype)
    rem = (v % count).astype(np.int64).sum(axis=axes)  # each < count: < count**2 in all
    whole, frac = np.divmod(rem, count)
    base = quot + whole.astype(v.dtype)
    up = (2 * frac > count) | ((2 * frac == count) & (base % 2 == 1))
    return base + up.astype(v.dtype)


def require_3d(shape: Sequence[int], name: str) -> None:
    """Raise :class:`DimensionError` unless ``shape`` is that of a 3D volume.

    Parameters
    ----------
    shape : sequence of int
        Shape to check; must be (z, y, x) with at least one voxel per axis.
    name : str
        The input, named in the error.

    Raises
    ------
    DimensionError
        Fewer or more than 3 axes, or an empty axis; the fix depends on which.
    """
    nd = len(shape)
    if nd == 3 and min(shape) >= 1:
        return
    if nd < 3:
        fix = ("a 3D volume (z, y, x) is needed: give a multi-page TIFF, a folder of slices "
               "or a 3D dataset")
    elif nd > 3:
        fix = ("a 3D volume (z, y, x) is needed: select one 3D volume (e.g. one time step or "
               "channel) and save it on its own")
    else:
        fix = "the volume is empty; give a volume with at least one voxel per axis"
    raise DimensionError(f"{name} has {nd} dimension(s), shape {tuple(shape)}", fix)


def require_finite(data: np.ndarray, name: str) -> None:
    """Raise :class:`NonFiniteError` if a float array holds NaN or inf.

    Parameters
    ----------
    data : ndarray
        Voxel values, any shape; integer and boolean arrays always pass.
    name : str
        The input, named in the error.

    Raises
    ------
    NonFiniteError
        Some values are NaN or infinite; the message counts each.
    """
    if not np.issubdtype(data.dtype, np.floating):
        return
    if np.isfinite(data).all():
        return
    raise nonfinite_error(name, int(np.isnan(data).sum()), int(np.isinf(data).sum()))


def nonfinite_error(name: str, nan: int, inf: int) -> NonFiniteError:
    """The error for ``nan`` NaN and ``inf`` infinite voxels in the input ``name`` (counted
    over a whole volume, e.g. block by block)."""
    return NonFiniteError(
        f"{name} contains {nan} NaN and {inf} inf voxel(s)",
        "replace them (e.g. numpy.nan_to_num) or mask them before this step "
        "(convert keeps them with --allow-nonfinite)")


def require_same_shape(a: Sequence[int], b: Sequence[int], name_a: str, name_b: str) -> None:
    """Raise :class:`ShapeMismatchError` unless shapes ``a`` and ``b`` are equal.

    Parameters
    ----------
    a, b : sequence of int
        The two shapes, (z, y, x) voxels.
    name_a, name_b : str
        The inputs they belong to, named in the error.

    Raises
    ------
    ShapeMismatchError
        The shapes differ.
    """
    if tuple(a) != tuple(b):
        raise ShapeMismatchError(
            f"{name_a} has shape {tuple(a)} but {name_b} has shape {tuple(b)}",
            "crop or bin both to the same grid (e.g. --roi / --bin) before comparing them")


@runtime_checkable
class VolumeLike(Protocol):
    """Anything writable as a volume: in memory (:class:`Volume`) or lazy (:class:`LazyVolume`)."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size_um: Triple | None
    origin: Triple
    attrs: dict

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]:
        """Consecutive z-slabs of the voxels, so that writers need not hold the whole
        volume.

        Parameters
        ----------
        slab_bytes : int, optional
            Target size of a slab in bytes (at least one plane); default ``SLAB_BYTES``,
            read at call time.

        Yields
        ------
        ndarray, shape (dz, y, x)
            The slabs in z order, together covering the whole volume.
        """
        ...


def _slab_len(plane_bytes: int, slab_bytes: int, multiple: int = 1) -> int:
    n = max(1, slab_bytes // max(1, plane_bytes))
    return max(multiple, n // multiple * multiple)


@dataclass
class Volume:
    """A 3D array (z, y, x) with its geometry.

    Attributes
    ----------
    data : numpy.ndarray
        Voxel values, indexed (z, y, x).
    voxel_size_um : tuple of 3 float or None
        Voxel size (z, y, x) in micrometres; None if unknown.
    origin : tuple of 3 float
        Position of the centre of voxel (0, 0, 0) in micrometres.
    attrs : dict
        Metadata read with the volume (e.g. ``"provenance"`` of the file it came from).
    """

    data: np.ndarray
    voxel_size_um: Triple | None = None
    origin: Triple = (0.0, 0.0, 0.0)
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        require_3d(self.data.shape, "volume")
        self.voxel_size_um = normalise_voxel_size(self.voxel_size_um)
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.data.shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def extent_um(self) -> Triple | None:
        """Physical size (z, y, x) in um, or None without voxel size."""
        if self.voxel_size_um is None:
            return None
        return tuple(n * v for n, v in zip(self.shape, self.voxel_size_um, strict=True))  # type: ignore[return-value]

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]:
        """Yield consecutive z-slabs of the data (views, no copies).

        Parameters
        ----------
        slab_bytes : int, optional
            Approximate bytes per slab (at least one plane); default ``SLAB_BYTES``.

        Yields
        ------
        ndarray, shape (dz, y, x)
            Views of ``data``.
        """
        slab_bytes = slab_bytes or SLAB_BYTES  # read at call time
        plane = self.data[0].nbytes if self.shape[0] else 1
        n = _slab_len(plane, slab_bytes)
        for z in range(0, self.shape[0], n):
            yield self.data[z : z + n]

    def crop_bin(self, roi: Any = None, binning: Any = 1) -> Volume:
        """Return the ROI (voxels) of this volume, mean-binned, with updated geometry.

        Parameters
        ----------
        roi : str, tuple of 3 slices or None, optional
            Region in voxels (see :func:`normalise_roi`); None keeps the whole volume.
        binning : int or tuple of 3 int, optional
            Mean-binning factors (z, y, x); see :func:`bin_volume`.

        Returns
        -------
        Volume
            New volume with the binned voxel size and the origin of its first bin (um).

        Raises
        ------
        ParameterError
            Invalid ROI or binning, or a binning larger than the ROI.
        """
        r = normalise_roi(roi, self.shape)
        b = normalise_binning(binning)
        _, eff, vs, origin = binned_geometry(r, b, self.voxel_size_um, self.origin)
        return Volume(bin_volume(self.data[eff], b), vs, origin, dict(self.attrs))


class SlabVolume:
    """A volume produced slab by slab by a function, never whole in memory.

    Lets :func:`anodetwin.io.write_volume` write volumes larger than memory (synthetic
    tomograms, rendered phantoms, benchmarks).

    Parameters
    ----------
    shape : 3 int
        (z, y, x) shape.
    dtype : numpy dtype
        Voxel type.
    make_slab : callable
        ``make_slab(z0, z1)`` returns the voxels of planes z0 <= z < z1 as an array of shape
        ``(z1 - z0, ny, nx)``.
    voxel_size_um : float or 3 float, optional
        Voxel size in um.
    origin : 3 float
        Centre of the first voxel in um.
    """

    def __init__(self, shape: Sequence[int], dtype: Any,
                 make_slab: Callable[[int, int], np.ndarray], voxel_size_um: Any = None,
                 origin: Triple = (0.0, 0.0, 0.0), attrs: dict | None = None):
        require_3d(tuple(shape), "slab volume")
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._make = make_slab
        self.voxel_size_um = normalise_voxel_size(voxel_size_um)
        self.origin = tuple(float(o) for o in origin)
        self.attrs = dict(attrs or {})

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]:
        """Make and yield consecutive z-slabs with ``make_slab``.

        Parameters
        ----------
        slab_bytes : int, optional
            Approximate size of a slab, bytes; default ``SLAB_BYTES``.

        Yields
        ------
        ndarray, shape (dz, y, x)
            Each slab, converted to :attr:`dtype`.

        Raises
        ------
        ValueError
            ``make_slab`` returned an array of the wrong shape.
        """
        slab_bytes = slab_bytes or SLAB_BYTES  # read at call time
        n = _slab_len(self.shape[1] * self.shape[2] * self.dtype.itemsize, slab_bytes)
        for z in range(0, self.shape[0], n):
            block = np.asarray(self._make(z, min(z + n, self.shape[0])), dtype=self.dtype)
            if block.shape != (min(z + n, self.shape[0]) - z,) + self.shape[1:]:
                raise ValueError(f"make_slab({z}, ...) returned shape {block.shape}")
            yield block


ReadBlock = Callable[..., np.ndarray]  # (z, y, x, out=None) -> array


class LazyVolume:
    """A cropped and binned view of a volume on disk, read slab by slab on demand.

    Produced by :meth:`anodetwin.io.formats.VolumeSource.lazy`. Use :meth:`read` to load it,
    or pass it to :func:`anodetwin.io.write_volume` to convert it with bounded memory.
    """

    def __init__(self, read_block: ReadBlock, roi: ROI, binning: tuple[int, int, int],
                 dtype: np.dtype, voxel_size: Triple | None, origin: Triple, attrs: dict,
                 name: str = "volume", progress: bool = True):
        self._read_block = read_block
        self.binning = binning
        self.shape, self.roi, self.voxel_size_um, self.origin = binned_geometry(
            roi, binning, voxel_size, origin)
        self.dtype = np.dtype(dtype)
        self.attrs = attrs
        self.name = name
        self.progress = progress

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def source_nbytes(self) -> int:
        return int(np.prod([r.stop - r.start for r in self.roi])) * self.dtype.itemsize

    def _slabs(self, slab_bytes: int | None = None) -> Iterator[tuple[slice, slice]]:
        """(source z-range, output z-range) of each slab, with a progress bar."""
        from anodetwin.log import progress_bar

        zr, yr, xr = self.roi
        bz = self.binning[0]
        plane = (yr.stop - yr.start) * (xr.stop - xr.start) * self.dtype.itemsize
        n = _slab_len(plane, slab_bytes or SLAB_BYTES, bz)
        with progress_bar(f"reading {self.name}", total=self.source_nbytes,
                          enabled=self.progress) as advance:
            for z in range(zr.start, zr.stop, n):
                stop = min(z + n, zr.stop)
                yield slice(z, stop), slice((z - zr.start) // bz, (stop - zr.start) // bz)
                advance((stop - z) * plane)

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]:
        """Yield consecutive binned z-slabs, each read from disk only when requested.

        Parameters
        ----------
        slab_bytes : int, optional
            Source bytes read per slab (a multiple of the z binning in planes); default
            ``SLAB_BYTES``.

        Yields
        ------
        ndarray, shape (dz, y, x)
            Binned slabs of the view.
        """
        _, yr, xr = self.roi
        for zs, _ in self._slabs(slab_bytes):
            yield bin_volume(self._read_block(zs, yr, xr), self.binning)

    def region(self, zs: slice, ys: slice, xs: slice) -> np.ndarray:
        """Read one box of the view (block-wise processing).

        Parameters
        ----------
        zs, ys, xs : slice
            Box in the view's (binned) voxels, with explicit ``start`` and ``stop`` and no
            step.

        Returns
        -------
        numpy.ndarray, shape (dz, dy, dx)
            The binned voxels of the box.
        """
        src = [slice(r.start + s.start * b, r.start + s.stop * b)
               for r, s, b in zip(self.roi, (zs, ys, xs), self.binning, strict=True)]
        return bin_volume(self._read_block(*src), self.binning)

    def read(self) -> Volume:
        """Load the view into memory as a :class:`Volume`."""
        out = np.empty(self.shape, dtype=self.dtype)
        _, yr, xr = self.roi
        for zs, zo in self._slabs():
            if self.binning == (1, 1, 1):
                self._read_block(zs, yr, xr, out=out[zo])  # straight into the result
            else:
                out[zo] = bin_volume(self._read_block(zs, yr, xr), self.binning)
        return Volume(out, self.voxel_size_um, self.origin, dict(self.attrs))


#: Percentiles reported by :func:`grey_value_stats`.
PERCENTILES = (1, 50, 99)
_HIST_BINS = 4096
_COLLECT = 1 << 21  # values of one percentile's bin gathered for an exact selection
_MAX_PASSES = 8  # 64-bit keys, 12 bits per pass: 6 histograms, then one value per bin


def grey_value_stats(vol: VolumeLike) -> dict[str, Any]:
    """Grey-value statistics of a volume, computed slab by slab (bounded memory).

    Parameters
    ----------
    vol : Volume or LazyVolume
        The volume; a lazy one is read once for integer types of at most 16 bits (and bool),
        else once for the moments and usually twice more for the percentiles.

    Returns
    -------
    dict
        ``voxels`` (finite), ``nonfinite`` (NaN/inf count), ``min``, ``max``, ``mean``,
        ``std`` (population) and the percentiles ``p1``, ``p50``, ``p99``.

    Notes
    -----
    Percentiles are exact, with the definition of ``numpy.percentile(...,
    method="inverted_cdf")``: the smallest value v with at least ``ceil(n q / 100)`` values
    <= v. Integers of <= 16 bits are counted per value (one pass). Other types are mapped to
    order-preserving 64-bit integer keys (a float's bit pattern, so one outlier does not
    squash the rest into one bin) and radix-selected: each pass histograms the key interval
    holding the percentile into 4096 bins and keeps the bin holding it, until the bin holds
    one distinct value or at most 2**21 values, which are then selected from exactly. That
    takes at most 7 passes, usually 1-2. The mean and std merge per-slab means and sums of
    squared deviations (Chan et al.), so a large offset does not cancel the spread.
    """
    dt = np.dtype(vol.dtype)
    if dt.kind == "b" or (dt.kind in "iu" and dt.itemsize <= 2):
        return _small_int_stats(vol, dt)
    moments = _moments(vol)
    lo, hi = moments.pop("_lo", None), moments.pop("_hi", None)
    if moments["voxels"] == 0:
        return moments
    ranks = {q: _rank(moments["voxels"], q) for q in PERCENTILES}
    pct = _select_ranks(vol, ranks, moments["voxels"], lo, hi)
    return {**moments, **{f"p{q}": pct[q] for q in PERCENTILES}}


def _rank(n: int, q: int) -> int:
    """1-based rank of percentile ``q`` (inverted CDF) among ``n`` values."""
    return max(1, -(-n * q // 100))


def _codes(block: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Values of a <= 16-bit integer (or bool) block as order-preserving unsigned codes."""
    b = np.asarray(block)
    if not b.dtype.isnative:
        b = b.astype(b.dtype.newbyteorder("="))
    if dt.kind == "b":
        return b.view(np.uint8)
    if dt.kind == "u":
        return b
    u = b.view(np.uint8 if dt.itemsize == 1 else np.uint16)
    return u ^ np.asarray(1 << (8 * dt.itemsize - 1), dtype=u.dtype)  # flip the sign bit


def _small_int_stats(vol: VolumeLike, dt: np.dtype) -> dict[str, Any]:
    """Exact statistics of a bool or <= 16-bit integer volume from one counting pass."""
    size = 1 << (8 * dt.itemsize if dt.kind != "b" else 8)
    counts = np.zeros(size, dtype=np.int64)
    for block in vol.blocks():
        flat = _codes(block, dt).reshape(-1)
        for i in range(0, flat.size, 1 << 22):  # bounds bincount's int64 copy
            counts += np.bincount(flat[i : i + (1 << 22)], minlength=size)
    n = int(counts.sum())
    if n == 0:
        return {"voxels": 0, "nonfinite": 0}
    values = np.arange(size, dtype=np.int64)
    if dt.kind == "i":
        values -= size // 2
    used = np.flatnonzero(counts)
    mean = int((counts[used] * values[used]).sum()) / n
    m2 = float((counts[used] * np.square(values[used] - mean)).sum())
    cum = np.cumsum(counts)
    pct = {f"p{q}": float(values[int(np.searchsorted(cum, _rank(n, q)))]) for q in PERCENTILES}
    return {"voxels": n, "nonfinite": 0, "min": float(values[used[0]]),
            "max": float(values[used[-1]]), "mean": mean, "std": float(np.sqrt(m2 / n)), **pct}


def _finite(block: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite values of a block (flat) and how many were not finite."""
    flat = np.asarray(block).reshape(-1)
    if flat.dtype.kind != "f":
        return flat, 0
    fin = np.isfinite(flat)
    bad = flat.size - int(np.count_nonzero(fin))
    return (flat[fin] if bad else flat), bad


def _moments(vol: VolumeLike) -> dict[str, Any]:
    """Count, non-finite count, min, max, mean and std in one pass; per-slab means and sums
    of squared deviations merged with Chan et al.'s parallel formula. ``_lo``/``_hi`` are
    the extremes in the volume's own type (exact for 64-bit integers)."""
    lo = hi = None
    n, mean, m2, nonfinite = 0, 0.0, 0.0, 0
    for block in vol.blocks():
        b, bad = _finite(block)
        nonfinite += bad
        if not b.size:
            continue
        bl, bh = b.min(), b.max()
        lo = bl if lo is None or bl < lo else lo
        hi = bh if hi is None or bh > hi else hi
        f = b.astype(np.float64, copy=False)
        nb, mb = b.size, float(f.mean())
        m2b = float(np.square(f - mb).sum())
        delta, tot = mb - mean, n + b.size
        mean += delta * nb / tot
        m2 += m2b + delta * delta * n * nb / tot
        n = tot
    if n == 0:
        return {"voxels": 0, "nonfinite": nonfinite}
    return {"voxels": n, "nonfinite": nonfinite, "min": float(lo), "max": float(hi),
            "mean": mean, "std": float(np.sqrt(max(0.0, m2 / n))), "_lo": lo, "_hi": hi}


_SIGN = np.uint64(1 << 63)
_MAGNITUDE = np.int64((1 << 63) - 1)


def _keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving int64 keys of finite values (ints as they are, uint64 with the top
    bit flipped, floats from their float64 bit pattern); :func:`_unkey` inverts them."""
    v = np.asarray(values)
    if v.dtype.kind == "f":
        bits = v.astype(np.float64).view(np.int64)
        return bits ^ ((bits >> 63) & _MAGNITUDE)
    if v.dtype == np.uint64:
        return (v ^ _SIGN).view(np.int64)
    return v.astype(np.int64)


def _unkey(key: int, dt: np.dtype) -> float:
    """The value (as float) whose key is ``key``."""
    k = np.asarray([key], dtype=np.int64)
    if dt.kind == "f":
        return float((k ^ ((k >> 63) & _MAGNITUDE)).view(np.float64)[0])
    if dt == np.uint64:
        return float((k.view(np.uint64) ^ _SIGN)[0])
    return float(k[0])


class _Search:
    """Radix selection of the rank-``k`` key in the key interval [a, b) (Python ints),
    with ``below`` keys under it; one pass either histograms the interval into
    :data:`_HIST_BINS` equal integer bins or gathers its keys for an exact selection."""

    def __init__(self, k: int, a: int, b: int, n: int):
        self.k, self.a, self.b = k, a, b
        self.collect = n <= _COLLECT
        self.key: int | None = None

    def start_pass(self) -> None:
        self.width = -(-(self.b - self.a) // _HIST_BINS)  # >= 1
        self.below, self.hist = 0, np.zeros(_HIST_BINS, np.int64)
        self.lo: int | None = None
        self.hi: int | None = None
        self.found: list[np.ndarray] = []

    def add(self, keys: np.ndarray) -> None:
        a = np.int64(self.a)
        self.below += int(np.count_nonzero(keys < a))
        inside = keys[(keys >= a) & (keys <= np.int64(self.b - 1))]
        if not inside.size:
            return
        lo, hi = int(inside.min()), int(inside.max())
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        if self.collect:
            self.found.append(inside)
        else:  # offsets from a, as uint64 (wrap-free: 0 <= offset < 2**64)
            off = inside.view(np.uint64) - np.asarray(self.a, np.int64).view(np.uint64)
            self.hist += np.bincount((off // np.uint64(self.width)).astype(np.intp),
                                     minlength=_HIST_BINS)

    def end_pass(self) -> None:
        if self.lo == self.hi:  # one distinct value in the interval
            self.key = self.lo
        elif self.collect:
            keys = np.concatenate(self.found)
            self.key = int(np.partition(keys, self.k - self.below - 1)[self.k - self.below - 1])
        else:
            i = int(np.searchsorted(self.below + np.cumsum(self.hist), self.k))
            self.a, self.b = self.a + i * self.width, min(self.b, self.a + (i + 1) * self.width)
            self.collect = int(self.hist[i]) <= _COLLECT


def _select_ranks(vol: VolumeLike, ranks: dict[int, int], n: int, lo: Any,
                  hi: Any) -> dict[int, float]:
    """Value of each rank (1-based, among the ``n`` finite values, from ``lo`` to ``hi``);
    see :func:`grey_value_stats`."""
    dt = np.dtype(vol.dtype)
    a, b = int(_keys(np.asarray([lo]))[0]), int(_keys(np.asarray([hi]))[0]) + 1
    searches = {q: _Search(k, a, b, n) for q, k in ranks.items()}
    for _ in range(_MAX_PASSES):
        todo = [s for s in searches.values() if s.key is None]
        if not todo:
            break
        for s in todo:
            s.start_pass()
        for block in vol.blocks():
            keys = _keys(_finite(block)[0])
            for s in todo:
                s.add(keys)
        for s in todo:
            s.end_pass()
    return {q: _unkey(s.key if s.key is not None else s.a, dt) for q, s in searches.items()}
