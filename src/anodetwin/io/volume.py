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
    "normalize_roi",
    "normalize_binning",
    "normalize_voxel_size",
    "bin_volume",
    "grey_value_stats",
    "binned_geometry",
    "require_3d",
    "require_finite",
    "require_same_shape",
    "SLAB_BYTES",
]

#: Target size (bytes of source data) of one slab read or written at a time.
SLAB_BYTES = 32 * 1024**2

ROI = tuple[slice, slice, slice]
Triple = tuple[float, float, float]


def normalize_voxel_size(voxel_size: Any, name: str = "voxel size") -> Triple | None:
    """Voxel size as a (z, y, x) tuple of positive finite floats in um, or None.

    Parameters
    ----------
    voxel_size : float, sequence of 3 floats or None
        Isotropic size or per-axis (z, y, x) sizes, in micrometres.
    name : str
        Name of the input, used in error messages.
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
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def normalize_binning(binning: Any) -> tuple[int, int, int]:
    """Binning factors as a (z, y, x) tuple of positive integers."""
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


def normalize_roi(roi: Any, shape: Sequence[int]) -> ROI:
    """Turn an ROI (None, text, or 3 slices/pairs) into 3 slices with explicit bounds.

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

    Parameters
    ----------
    data : numpy.ndarray
        3D array (z, y, x).
    binning : int or sequence of 3 int
        Bin size per axis.
    """
    b = normalize_binning(binning)
    if b == (1, 1, 1):
        return data
    n = tuple(s // f for s, f in zip(data.shape, b, strict=True))
    if min(n) < 1:
        raise ParameterError(f"binning {b} is larger than the array of shape {data.shape}",
                             "use a smaller binning")
    v = data[: n[0] * b[0], : n[1] * b[1], : n[2] * b[2]]
    v = v.reshape(n[0], b[0], n[1], b[1], n[2], b[2])
    s = v.sum(axis=(1, 3, 5), dtype=np.float64)
    s /= b[0] * b[1] * b[2]
    if data.dtype == np.bool_:
        return s >= 0.5
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return np.clip(np.rint(s), info.min, info.max).astype(data.dtype)
    return s.astype(data.dtype)


def require_3d(shape: Sequence[int], name: str) -> None:
    """Raise :class:`DimensionError` unless ``shape`` is that of a 3D volume."""
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
    """Raise :class:`NonFiniteError` if a float array holds NaN or inf."""
    if not np.issubdtype(data.dtype, np.floating):
        return
    if np.isfinite(data).all():
        return
    nan = int(np.isnan(data).sum())
    inf = int(np.isinf(data).sum())
    raise NonFiniteError(
        f"{name} contains {nan} NaN and {inf} inf voxel(s)",
        "replace them (e.g. numpy.nan_to_num) or mask them before this step "
        "(convert keeps them with --allow-nonfinite)")


def require_same_shape(a: Sequence[int], b: Sequence[int], name_a: str, name_b: str) -> None:
    """Raise :class:`ShapeMismatchError` unless shapes ``a`` and ``b`` are equal."""
    if tuple(a) != tuple(b):
        raise ShapeMismatchError(
            f"{name_a} has shape {tuple(a)} but {name_b} has shape {tuple(b)}",
            "crop or bin both to the same grid (e.g. --roi / --bin) before comparing them")


@runtime_checkable
class VolumeLike(Protocol):
    """Anything writable as a volume: in memory (:class:`Volume`) or lazy (:class:`LazyVolume`)."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: Triple | None
    origin: Triple
    attrs: dict

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]: ...


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
    voxel_size : tuple of 3 float or None
        Voxel size (z, y, x) in micrometres; None if unknown.
    origin : tuple of 3 float
        Position of the centre of voxel (0, 0, 0) in micrometres.
    attrs : dict
        Metadata read with the volume (e.g. ``"provenance"`` of the file it came from).
    """

    data: np.ndarray
    voxel_size: Triple | None = None
    origin: Triple = (0.0, 0.0, 0.0)
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        require_3d(self.data.shape, "volume")
        self.voxel_size = normalize_voxel_size(self.voxel_size)
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
        if self.voxel_size is None:
            return None
        return tuple(n * v for n, v in zip(self.shape, self.voxel_size, strict=True))  # type: ignore[return-value]

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]:
        """Yield consecutive z-slabs of the data."""
        slab_bytes = slab_bytes or SLAB_BYTES  # read at call time
        plane = self.data[0].nbytes if self.shape[0] else 1
        n = _slab_len(plane, slab_bytes)
        for z in range(0, self.shape[0], n):
            yield self.data[z : z + n]

    def crop_bin(self, roi: Any = None, binning: Any = 1) -> Volume:
        """Return the ROI (voxels) of this volume, mean-binned, with updated geometry."""
        r = normalize_roi(roi, self.shape)
        b = normalize_binning(binning)
        _, eff, vs, origin = binned_geometry(r, b, self.voxel_size, self.origin)
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
    voxel_size : float or 3 float, optional
        Voxel size in um.
    origin : 3 float
        Centre of the first voxel in um.
    """

    def __init__(self, shape: Sequence[int], dtype: Any,
                 make_slab: Callable[[int, int], np.ndarray], voxel_size: Any = None,
                 origin: Triple = (0.0, 0.0, 0.0), attrs: dict | None = None):
        require_3d(tuple(shape), "slab volume")
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._make = make_slab
        self.voxel_size = normalize_voxel_size(voxel_size)
        self.origin = tuple(float(o) for o in origin)
        self.attrs = dict(attrs or {})

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]:
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
        self.shape, self.roi, self.voxel_size, self.origin = binned_geometry(
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
        """Yield consecutive binned z-slabs, each read from disk only when requested."""
        _, yr, xr = self.roi
        for zs, _ in self._slabs(slab_bytes):
            yield bin_volume(self._read_block(zs, yr, xr), self.binning)

    def read(self) -> Volume:
        """Load the view into memory as a :class:`Volume`."""
        out = np.empty(self.shape, dtype=self.dtype)
        _, yr, xr = self.roi
        for zs, zo in self._slabs():
            if self.binning == (1, 1, 1):
                self._read_block(zs, yr, xr, out=out[zo])  # straight into the result
            else:
                out[zo] = bin_volume(self._read_block(zs, yr, xr), self.binning)
        return Volume(out, self.voxel_size, self.origin, dict(self.attrs))


def grey_value_stats(vol: VolumeLike) -> dict[str, Any]:
    """Grey-value statistics of a volume, computed slab by slab (bounded memory).

    Parameters
    ----------
    vol : Volume or LazyVolume
        The volume; a lazy one is read twice (range, then histogram).

    Returns
    -------
    dict
        ``voxels``, ``nonfinite`` (NaN/inf count), ``min``, ``max``, ``mean``, ``std`` and the
        percentiles ``p1``, ``p50``, ``p99`` (upper edges of a 4096-bin histogram between
        min and max, so within (max - min) / 4096 of the exact value).
    """

    lo, hi, n, s, s2, nonfinite = np.inf, -np.inf, 0, 0.0, 0.0, 0
    for block in vol.blocks():
        b = block
        if np.issubdtype(b.dtype, np.floating):
            fin = np.isfinite(b)
            nonfinite += int(b.size - fin.sum())
            b = b[fin]
        if b.size:
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
            n += b.size
            s += float(b.sum(dtype=np.float64))
            s2 += float(np.square(b, dtype=np.float64).sum())
    if n == 0:
        return {"voxels": 0, "nonfinite": nonfinite}
    mean = s / n
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 4097)
    hist = np.zeros(4096, dtype=np.int64)
    for block in vol.blocks():
        b = block[np.isfinite(block)] if np.issubdtype(block.dtype, np.floating) else block
        hist += np.histogram(b, bins=edges)[0]
    cdf = np.cumsum(hist) / n
    pct = {f"p{q}": float(edges[min(4096, int(np.searchsorted(cdf, q / 100.0)) + 1)])
           for q in (1, 50, 99)}
    return {"voxels": int(n), "nonfinite": nonfinite, "min": lo, "max": hi, "mean": mean,
            "std": float(np.sqrt(max(0.0, s2 / n - mean * mean))), **pct}
