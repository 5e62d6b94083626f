"""Readers and writers of 3D volumes.

Formats (chosen from the path; see :func:`detect_format`):

============== ============================== ================================================
format         path                           voxel size (um) is read from / written to
============== ============================== ================================================
``tiff``       ``vol.tif``, ``vol.tiff``      anodetwin tag 65421 (JSON); else ImageJ
               (multi-page, one page per z;   ``unit`` (x) / ``yunit`` / ``zunit``, X/YResolution
               ``vol.tif:series=N`` picks a   and ``spacing`` (z; absent = ImageJ's 1 zunit,
               series, default the largest    noted); else ResolutionUnit (inch, cm, mm, um)
               3D one)                        + X/YResolution, z taken = x (noted)
``tiff-dir``   a folder of 2D ``*.tif`` files  as ``tiff``, from the first slice; z taken = x
               numbered without gaps (one     (noted) unless the anodetwin tag gives it
               name pattern; order = number)
``hdf5``       ``file.h5:/path/to/dataset``   dataset attributes ``voxel_size_um`` /
               (also virtual datasets and     ``element_size_um`` (Fiji/ilastik) /
               external links: every source   ``voxel_size`` with a ``units`` attribute; else
               file must exist)               NeXus fields beside it (``x_pixel_size``,
                                              ``y_pixel_size``, ``z_pixel_size``,
                                              ``voxel_size``, each with ``units``)
``zarr``       ``store.zarr`` or              array attributes as HDF5; else OME-Zarr
               ``store.zarr:/path/to/array``  ``multiscales`` (``axes`` units, ``scale`` and
               (OME-Zarr: full resolution)    ``translation`` -> origin) of the parent group
``npy``        ``vol.npy``                    JSON sidecar ``vol.npy.json`` (optional)
``raw``        ``vol.raw`` / ``.bin`` / ``.dat``  JSON sidecar ``vol.raw.json`` or ``vol.json``
                                              (required: shape, dtype, byte order)
============== ============================== ================================================

Voxel sizes are per axis (z, y, x) in um. Units are converted from any length unit in the
spellings ImageJ, NeXus, OME-Zarr and TIFF use (``nm``, ``µm``, ImageJ's escaped
``\\u00B5m``, ``micron``, ``micrometer``, ``mm``, ``inch``, ...). Sidecars and attributes
take ``voxel_size_um``, or ``voxel_size`` plus ``unit``/``units``. A value that had to be
assumed (z equal to x, um for a missing unit) is recorded in ``attrs["voxel_size_note"]``
(:attr:`VolumeSource.voxel_size_note`), logged as a warning, shown by ``anodetwin inspect``
and written with the volume; giving the voxel size explicitly clears it.

Data are returned in native byte order whatever the file stores. Missing data (a missing
virtual-dataset source or external-link target, a gap in a slice numbering, HDF5 chunks never
written) raises :class:`~anodetwin.errors.MissingDataError`; it is never read as zeros.

Every writer stores the same metadata: ``voxel_size_um`` (z, y, x), ``origin_um`` (z, y, x;
centre of the first voxel), ``axes = "zyx"`` and a ``provenance`` record
(:mod:`anodetwin.io.provenance`). All reads are lazy: only the slabs of the requested region
are read, so a 16 GiB tomogram can be cropped or binned with a few hundred MiB of memory.

Raw sidecar layout (JSON)::

    {"shape": [nz, ny, nx], "dtype": "uint16", "byte_order": "little",
     "header_bytes": 0, "voxel_size_um": [0.05, 0.05, 0.05], "origin_um": [0, 0, 0]}
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import (
    AmbiguousInputError,
    AnodetwinError,
    CorruptFileError,
    DatasetNotFoundError,
    DimensionError,
    InputNotFoundError,
    MissingCodecError,
    MissingDataError,
    OutputError,
    SidecarError,
    UnknownFormatError,
)
from anodetwin.io.atomic import atomic_path, check_output_path
from anodetwin.log import get_logger
from anodetwin.io.provenance import make_provenance, provenance_json
from anodetwin.io.volume import (
    LazyVolume,
    Triple,
    Volume,
    VolumeLike,
    normalize_binning,
    normalize_roi,
    normalize_voxel_size,
    require_3d,
    require_finite,
)

__all__ = [
    "FORMATS",
    "VolumeSource",
    "detect_format",
    "open_volume",
    "read_volume",
    "write_volume",
    "TIFF_METADATA_TAG",
]

#: Private TIFF tag holding anodetwin's JSON metadata (voxel size, origin, provenance).
TIFF_METADATA_TAG = 65421

_log = get_logger("io")

FORMATS = ("tiff", "tiff-dir", "hdf5", "zarr", "npy", "raw")
_EXT = {
    ".tif": "tiff", ".tiff": "tiff",
    ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".he5": "hdf5", ".nxs": "hdf5",
    ".zarr": "zarr",
    ".npy": "npy",
    ".raw": "raw", ".bin": "raw", ".dat": "raw",
}
_CONTAINER = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5|nxs|zarr))(?::(?P<ds>.*))?$",
                        re.IGNORECASE)
_TIFF_SERIES = re.compile(r"^(?P<file>.*?\.tiff?):(?P<ds>series\s*=.*)$", re.IGNORECASE)
_FIX_FORMATS = ("use .tif/.tiff, a folder of .tif slices, .h5:/dataset, .zarr, .npy, or "
                ".raw with a JSON sidecar")


def detect_format(path: str | os.PathLike, for_writing: bool = False,
                  fmt: str | None = None) -> tuple[str, Path, str | None]:
    """Work out the format of ``path``.

    Parameters
    ----------
    path : str or path-like
        Volume path; containers take a dataset after a colon (``file.h5:/group/data``),
        a TIFF with several series takes ``:series=N`` (``file.tif:series=1``).
    for_writing : bool
        If True the path need not exist; a path ending in ``/`` is a TIFF slice folder.
    fmt : str, optional
        Force a format (one of :data:`FORMATS`).

    Returns
    -------
    (format, file path, dataset path or None)
    """
    text = os.fspath(path)
    m = _CONTAINER.match(text) or _TIFF_SERIES.match(text)
    ds = None
    if m:
        text, ds = m.group("file"), (m.group("ds") or None)
        if for_writing and ds and _TIFF_SERIES.match(os.fspath(path)):
            raise UnknownFormatError(f"'{path}': a TIFF series can only be chosen for reading",
                                     f"write to '{text}'")
    p = Path(text)
    if fmt is not None:
        if fmt not in FORMATS:
            raise UnknownFormatError(f"format '{fmt}' is unknown", f"choose one of {', '.join(FORMATS)}")
        return fmt, p, ds
    ext = p.suffix.lower()
    if ext in _EXT:
        return _EXT[ext], p, ds
    if (for_writing and (text.endswith("/") or (p.is_dir()))) or (not for_writing and p.is_dir()):
        return "tiff-dir", p, None
    if not for_writing and not p.exists():
        raise InputNotFoundError(p, "volume")
    raise UnknownFormatError(f"'{path}' has an unknown volume format (extension '{ext or 'none'}')",
                             _FIX_FORMATS)


# --------------------------------------------------------------------------------------------
# metadata helpers

def _meta_dict(vol: VolumeLike, provenance: dict | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"axes": "zyx", "origin_um": list(vol.origin)}
    if vol.voxel_size is not None:
        meta["voxel_size_um"] = list(vol.voxel_size)
        note = (vol.attrs or {}).get("voxel_size_note")
        if note:  # an assumed voxel size stays marked as assumed in the output
            meta["voxel_size_note"] = str(note)
    if provenance is not None:
        meta["provenance"] = provenance
    return meta


def _from_meta(meta: Any, extra: Any = None) -> tuple[Triple | None, Triple, dict]:
    """Voxel size (um), origin (um) and attrs (provenance, ``voxel_size_note``) from a
    metadata mapping (anodetwin metadata, JSON sidecar, HDF5/Zarr attributes).

    ``extra`` is a getter (see :func:`_calibration`) tried when ``meta`` holds no voxel size
    (e.g. NeXus fields beside an HDF5 dataset)."""
    meta = dict(meta)
    vs, notes = _calibration(_dict_getter(meta))
    if vs is None and extra is not None:
        vs, notes = _calibration(extra)
    origin = _origin(meta)
    attrs: dict[str, Any] = {}
    prov = meta.get("provenance")
    if isinstance(prov, (bytes, str)):
        try:
            prov = json.loads(prov)
        except ValueError:
            prov = None
    if isinstance(prov, dict):
        attrs["provenance"] = prov
    stored = _text(meta.get("voxel_size_note"))
    if vs is not None and (notes or stored):
        attrs["voxel_size_note"] = "; ".join(dict.fromkeys(([stored] if stored else []) + notes))
    return vs, origin, attrs


# Micrometres per length unit, in the spellings of ImageJ, NeXus, OME-Zarr (UDUNITS) and
# TIFF; micro signs (U+00B5, U+03BC, ImageJ's escaped '\u00B5') are folded to 'u' first.
_UNIT_TO_UM = {
    **dict.fromkeys(("um", "micron", "microns", "micrometer", "micrometers", "micrometre",
                     "micrometres"), 1.0),
    **dict.fromkeys(("nm", "nanometer", "nanometers", "nanometre", "nanometres"), 1e-3),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), 1e3),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), 1e4),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1e6),
    **dict.fromkeys(("angstrom", "angstroms", "\u00e5", "\u212b", "\u00e5ngstr\u00f6m"), 1e-4),
    **dict.fromkeys(("pm", "picometer", "picometre"), 1e-6),
    **dict.fromkeys(("inch", "inches", "in"), 25400.0),
}


def _text(value: Any) -> str | None:
    """A str from an attribute value (str, bytes, 0-d or 1-element array), else None."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", "replace")
    return str(value) if isinstance(value, (str, np.str_)) else None


def _unit_scale(unit: Any) -> float | None:
    """Micrometres per ``unit`` (a length unit name), or None if it is not one."""
    text = _text(unit)
    if text is None:
        return None
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text.strip())
    text = text.replace("\u00b5", "u").replace("\u03bc", "u").lower()
    return _UNIT_TO_UM.get(text)


Getter = Any  # callable: key -> (value, unit or None) or None


def _dict_getter(meta: dict) -> Getter:
    """Getter over a mapping: the unit of ``key`` is ``key_units``/``key_unit``, else the
    mapping's ``units``/``unit`` entry (only if that is a length unit)."""

    def get(key: str) -> tuple[Any, Any] | None:
        if key not in meta:
            return None
        for k in (f"{key}_units", f"{key}_unit", "units", "unit"):
            if k in meta and _unit_scale(meta[k]) is not None:
                return meta[key], meta[k]
        return meta[key], None

    return get


_VS_KEYS = ("voxel_size_um", "element_size_um", "voxel_size", "element_size", "pixel_size")


def _scaled(key: str, value: Any, unit: Any) -> tuple[np.ndarray | None, list[str]]:
    """Value(s) of ``key`` in um (1 or 3 positive numbers), with the notes on assumptions."""
    scale = _unit_scale(unit) if unit is not None else None
    notes = []
    if scale is None:
        scale = 1.0
        if not key.endswith("_um"):
            notes.append(f"'{key}' has no length unit, um assumed")
    elif key.endswith("_um") and scale != 1.0:  # name and unit disagree: the unit wins
        notes.append(f"'{key}' taken in {_text(unit)} as its unit attribute says, not in um")
    try:
        arr = np.asarray(value, dtype=float).reshape(-1) * scale
    except (TypeError, ValueError):
        return None, []
    if arr.size not in (1, 3) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        return None, []
    return arr, notes


def _calibration(get: Getter) -> tuple[Triple | None, list[str]]:
    """Voxel size (z, y, x) in um from a getter, and notes on what was assumed.

    Looks for one of :data:`_VS_KEYS` (1 or 3 values), then for NeXus-style per-axis
    ``x_pixel_size``/``y_pixel_size``/``z_pixel_size``; a missing y or z is taken equal to x
    and a missing unit is taken as um, each recorded in the notes.
    """
    for key in _VS_KEYS:
        item = get(key)
        if item is not None:
            arr, notes = _scaled(key, *item)
            if arr is not None:
                arr = np.repeat(arr, 3) if arr.size == 1 else arr
                return (float(arr[0]), float(arr[1]), float(arr[2])), notes
    per: dict[str, float] = {}
    notes = []
    for ax in "xyz":
        item = get(f"{ax}_pixel_size")
        arr, n = _scaled(f"{ax}_pixel_size", *item) if item is not None else (None, [])
        if arr is not None and arr.size == 1:
            per[ax] = float(arr[0])
            notes += n
    if "x" not in per:
        return None, []
    for ax in "yz":
        if ax not in per:
            per[ax] = per["x"]
            notes.append(f"{ax} voxel size taken equal to x (no {ax}_pixel_size)")
    return (per["z"], per["y"], per["x"]), list(dict.fromkeys(notes))


def _origin(meta: dict) -> Triple:
    """Origin (um) from ``origin_um``, or ``origin`` in the mapping's length unit; else 0."""
    key = "origin_um" if "origin_um" in meta else "origin"
    unit = next((meta[k] for k in (f"{key}_units", "units", "unit") if k in meta
                 and _unit_scale(meta[k]) is not None), None)
    scale = 1.0 if key == "origin_um" or unit is None else _unit_scale(unit)
    try:
        arr = np.asarray(meta.get(key, (0.0, 0.0, 0.0)), dtype=float).reshape(3) * scale
    except (TypeError, ValueError):
        return (0.0, 0.0, 0.0)
    if not np.all(np.isfinite(arr)):
        return (0.0, 0.0, 0.0)
    return (float(arr[0]), float(arr[1]), float(arr[2]))


# --------------------------------------------------------------------------------------------
# sources

class VolumeSource:
    """An opened volume on disk: shape, dtype and geometry known, voxels read on demand.

    Use as a context manager, or call :meth:`close`. :meth:`lazy` gives a cropped/binned
    :class:`~anodetwin.io.volume.LazyVolume`; :meth:`read` loads it.
    """

    format = "?"

    def __init__(self, path: Path, dataset: str | None = None):
        self.path = Path(path)
        self.dataset = dataset
        self.shape: tuple[int, int, int] = (0, 0, 0)
        self.dtype = np.dtype("uint8")
        self.voxel_size: Triple | None = None
        self.origin: Triple = (0.0, 0.0, 0.0)
        self.attrs: dict = {}

    @property
    def name(self) -> str:
        return f"{self.path}:{self.dataset}" if self.dataset else str(self.path)

    @property
    def voxel_size_note(self) -> str | None:
        """What was assumed to get :attr:`voxel_size` (e.g. "z taken equal to x"), or None
        if every axis and unit was read from the file (or given by the caller)."""
        return self.attrs.get("voxel_size_note")

    def _check(self, voxel_size: Any) -> None:
        require_3d(self.shape, f"'{self.name}'")
        if voxel_size is not None:
            self.voxel_size = normalize_voxel_size(voxel_size, "voxel size")
            self.attrs.pop("voxel_size_note", None)
        elif self.voxel_size is None:
            self.attrs.pop("voxel_size_note", None)
        if self.voxel_size_note:
            _log.warning("%s: voxel size (z, y, x) %s um was partly assumed: %s; give the "
                         "voxel size explicitly if this is wrong", self.name,
                         "x".join(f"{v:g}" for v in self.voxel_size or ()), self.voxel_size_note)

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:  # pragma: no cover
        """Voxels [z, y, x]; may fill and return ``out`` or return a new array."""
        raise NotImplementedError

    def read_block(self, z: slice, y: slice, x: slice,
                   out: np.ndarray | None = None) -> np.ndarray:
        """Read voxels [z, y, x] (contiguous slices) as a native-byte-order array.

        If ``out`` (native dtype, shape of the block) is given the voxels land there.
        """
        try:
            res = self._read_block(z, y, x, out)
        except AnodetwinError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if _is_codec_error(exc):
                raise _codec_error(self.name, exc) from exc
            raise CorruptFileError(f"'{self.name}' could not be read ({_short(exc)})",
                                   "the file is truncated or damaged; re-export it") from exc
        if out is not None:
            if res is not out:
                out[...] = res  # converts the byte order too
            return out
        if not res.dtype.isnative:
            res = res.astype(res.dtype.newbyteorder("="))
        return res

    def lazy(self, roi: Any = None, binning: Any = 1, progress: bool = True) -> LazyVolume:
        """A view of region ``roi`` (voxels, ``"z0:z1,y0:y1,x0:x1"`` or 3 slices) binned by
        ``binning`` (int or 3 ints), read slab by slab when used."""
        r = normalize_roi(roi, self.shape)
        b = normalize_binning(binning)
        return LazyVolume(self.read_block, r, b, self.dtype, self.voxel_size, self.origin,
                          dict(self.attrs), name=self.name, progress=progress)

    def read(self, roi: Any = None, binning: Any = 1, progress: bool = True) -> Volume:
        """Read region ``roi`` binned by ``binning`` into memory."""
        return self.lazy(roi, binning, progress).read()

    def close(self) -> None:
        pass

    def __enter__(self) -> VolumeSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} shape={self.shape} dtype={self.dtype} "
                f"voxel_size_um={self.voxel_size}>")


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


_CODEC = re.compile(r"<(COMPRESSION|PREDICTOR)\.(\w+)")


def _is_codec_error(exc: BaseException) -> bool:
    """True if ``exc`` is tifffile saying that a codec is missing (not that data is bad)."""
    msg = str(exc)
    return "imagecodecs" in msg or bool(
        _CODEC.search(msg) and re.search(r"requires|not supported|not implemented", msg))


def _codec_error(name: str, exc: BaseException) -> MissingCodecError:
    """A :class:`MissingCodecError` naming the codec tifffile could not find."""
    m = _CODEC.search(str(exc))
    codec = (f"the {m.group(2)} predictor" if m.group(1) == "PREDICTOR" else m.group(2)) \
        if m else "a codec"
    return MissingCodecError(
        f"'{name}' is compressed with {codec}, whose decoder is not installed "
        f"({_short(RuntimeError(*exc.args[:1]) if isinstance(exc, KeyError) else exc)})",
        "install it (pip install imagecodecs) or save the file uncompressed")


def _require_codecs(page: Any, name: str) -> None:
    """Raise :class:`MissingCodecError` if tifffile cannot decode ``page``'s compression or
    predictor, before any data is read."""
    from tifffile import TIFF

    for value, table in ((page.compression, TIFF.DECOMPRESSORS),
                         (getattr(page, "predictor", 1), TIFF.UNPREDICTORS)):
        if int(value) == 1:
            continue
        try:
            table[int(value)]
        except KeyError as exc:
            raise _codec_error(name, exc) from None


def _read_contiguous(fh: Any, offset: int, dtype: np.dtype, shape: tuple[int, int, int],
                     z: slice, y: slice, x: slice, out: np.ndarray | None = None) -> np.ndarray:
    """Read [z, y, x] of a C-ordered array stored at ``offset`` with plain file reads.

    Whole planes go straight into the result in one read (then byte-swapped in place if the
    file's byte order, given by ``dtype``, is not the native one); otherwise only the rows
    y.start:y.stop of each plane are read, into one reused band buffer. No memory map, so the
    resident memory stays at the size of the result.
    """
    _, ny, nx = shape
    row = nx * dtype.itemsize
    plane = ny * row
    nz, nrow = z.stop - z.start, y.stop - y.start
    native = dtype.newbyteorder("=")
    if out is None:
        out = np.empty((nz, nrow, x.stop - x.start), dtype=native)
    if nrow == ny and x.stop - x.start == nx and out.dtype in (dtype, native) \
            and out.flags.c_contiguous:
        fh.seek(offset + z.start * plane)
        _read_into(fh, out, f"planes {z.start}:{z.stop}")
        if out.dtype != dtype:  # same type, other byte order: swap the bytes in place
            out.byteswap(inplace=True)
        return out
    buf = np.empty((nrow, nx), dtype=dtype)
    for i in range(nz):
        fh.seek(offset + (z.start + i) * plane + y.start * row)
        _read_into(fh, buf, f"plane {z.start + i}")
        out[i] = buf[:, x]
    return out


def _read_into(fh: Any, buf: np.ndarray, what: str) -> None:
    n = fh.readinto(memoryview(buf).cast("B"))
    if n != buf.nbytes:
        raise ValueError(f"file ends after {n} of {buf.nbytes} bytes of {what}")


class _ContiguousSource(VolumeSource):
    """Base of sources whose voxels are one C-ordered block at a byte offset."""

    _offset = 0
    _file_dtype = np.dtype("uint8")

    def _open_check_size(self) -> None:
        need = self._offset + int(np.prod(self.shape)) * self._file_dtype.itemsize
        have = self.path.stat().st_size
        if have < need:
            raise CorruptFileError(
                f"'{self.path}' is truncated: {have} bytes, but shape {self.shape} of "
                f"{self._file_dtype} needs {need}", "the file is incomplete; copy or export it again")
        self._fh = open(self.path, "rb")

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        return _read_contiguous(self._fh, self._offset, self._file_dtype, self.shape, z, y, x,
                                out)

    def close(self) -> None:
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()
            self._fh = None


def _read_sidecar(path: Path, required: bool) -> tuple[dict, Path | None]:
    for cand in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if cand.is_file():
            try:
                meta = json.loads(cand.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise SidecarError(f"sidecar '{cand}' is not valid JSON ({_short(exc)})",
                                   "fix the JSON or delete the sidecar") from exc
            if not isinstance(meta, dict):
                raise SidecarError(f"sidecar '{cand}' is not a JSON object",
                                   'write {"shape": [nz, ny, nx], "dtype": "uint16", ...}')
            return meta, cand
    if required:
        raise SidecarError(
            f"raw volume '{path}' has no JSON sidecar ('{path.name}.json')",
            'write one with {"shape": [nz, ny, nx], "dtype": "uint16", "byte_order": "little", '
            '"voxel_size_um": 0.05}')
    return {}, None


class NpySource(_ContiguousSource):
    format = "npy"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path)
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
                self._offset = fh.tell()
        except (ValueError, OSError, SyntaxError) as exc:
            raise CorruptFileError(f"'{path}' is not a valid .npy file ({_short(exc)})",
                                   "save it again with numpy.save") from exc
        self.shape, self._file_dtype = tuple(shape), np.dtype(dtype)
        self.dtype = self._file_dtype.newbyteorder("=")
        self._fortran = bool(fortran)
        meta, _ = _read_sidecar(path, required=False)
        self.voxel_size, self.origin, self.attrs = _from_meta(meta)
        self._check(voxel_size)
        self._open_check_size()

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        if self._fortran:
            mm = np.load(self.path, mmap_mode="r")
            return np.array(mm[z, y, x])
        return super()._read_block(z, y, x, out)


class RawSource(_ContiguousSource):
    format = "raw"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path)
        meta, side = _read_sidecar(path, required=True)
        try:
            shape = tuple(int(s) for s in meta["shape"])
            dtype = np.dtype(meta["dtype"])
            order = str(meta.get("byte_order", "little")).lower()
            self._offset = int(meta.get("header_bytes", 0))
        except KeyError as exc:
            raise SidecarError(f"sidecar '{side}' lacks the key {exc}",
                               'add "shape" ([nz, ny, nx]) and "dtype" (e.g. "uint16")') from None
        except (TypeError, ValueError) as exc:
            raise SidecarError(f"sidecar '{side}' has an invalid entry ({_short(exc)})",
                               'shape is [nz, ny, nx] integers, dtype a numpy name like "uint16"'
                               ) from None
        if order not in ("little", "big", "native"):
            raise SidecarError(f"sidecar '{side}' has byte_order '{order}'",
                               'use "little" or "big"')
        self._file_dtype = dtype.newbyteorder({"little": "<", "big": ">", "native": "="}[order])
        self.shape = shape  # type: ignore[assignment]
        self.dtype = dtype.newbyteorder("=")
        self.voxel_size, self.origin, self.attrs = _from_meta(meta)
        self._check(voxel_size)
        need = self._offset + int(np.prod(shape)) * dtype.itemsize
        have = path.stat().st_size
        if have != need:
            raise SidecarError(
                f"raw volume '{path}' has {have} bytes but its sidecar says shape {shape} of "
                f"{dtype} + {self._offset} header bytes = {need}",
                "correct shape, dtype or header_bytes in the sidecar")
        self._fh = open(path, "rb")


class _TiffLogErrors(logging.Handler):
    """Collect the errors tifffile logs (it logs, rather than raises, on broken page chains
    and truncated data) and keep them from the user's console."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _TiffLogErrors:
        lg = logging.getLogger("tifffile")
        self._propagate = lg.propagate
        lg.addHandler(self)
        lg.propagate = False
        return self

    def __exit__(self, *exc: Any) -> None:
        lg = logging.getLogger("tifffile")
        lg.removeHandler(self)
        lg.propagate = self._propagate

    def raise_if_any(self, path: Path) -> None:
        if self.messages:
            raise CorruptFileError(f"'{path}' is a damaged TIFF ({_short(Exception(self.messages[0]))})",
                                   "the file is truncated or damaged; re-export it")


def _series_listing(tif: Any) -> str:
    return ", ".join(f"{i}: {tuple(s.shape)} {np.dtype(s.dtype)}"
                     for i, s in enumerate(tif.series))


def _select_series(tif: Any, path: Path, selector: str | None) -> tuple[int, Any]:
    """Index and series of the TIFF volume: series N of ``selector`` ``"series=N"``, else
    the only series, else the largest 3D one (the others are often previews/thumbnails)."""
    series = tif.series
    if selector is not None:
        m = re.fullmatch(r"\s*series\s*=\s*(\d+)\s*", selector)
        if not m or int(m.group(1)) >= len(series):
            raise DatasetNotFoundError(
                f"TIFF '{path}' has no series '{selector}' (series found: "
                f"{_series_listing(tif)})", f"choose one as {path}:series=N")
        return int(m.group(1)), series[int(m.group(1))]
    if len(series) == 1:
        return 0, series[0]
    three = [i for i, s in enumerate(series) if len(s.shape) == 3]
    if not three:
        raise DimensionError(f"TIFF '{path}' holds no 3D series (series found: "
                             f"{_series_listing(tif)})",
                             "a 3D volume (z, y, x) is needed: save it as one multi-page series")
    best = max(three, key=lambda i: (int(np.prod(series[i].shape)), -i))
    _log.info("%s holds %d series (%s); reading series %d, the largest 3D one (choose with "
              "%s:series=N)", path, len(series), _series_listing(tif), best, path)
    return best, series[best]


def _imagej_calibration(ij: dict, page: Any, nz: int) -> tuple[Triple | None, Triple,
                                                                    list[str]]:
    """Voxel size and origin (um) from ImageJ's description, with notes on assumptions.

    x is in ``unit`` (or ``xunit``), y in ``yunit``, z in ``zunit`` (each defaulting to
    ``unit``); X/YResolution are pixels per unit, ``spacing`` the z step (ImageJ leaves it
    out when it is 1), ``xorigin``/``yorigin``/``zorigin`` the origin in pixels.
    """
    xunit = ij.get("xunit", ij.get("unit"))
    ux = _unit_scale(xunit)
    if ux is None or 282 not in page.tags:  # "pixel" or no unit: not calibrated
        return None, (0.0, 0.0, 0.0), []
    notes, scale = [], {"x": ux}
    for ax in "yz":
        s = _unit_scale(ij[f"{ax}unit"]) if f"{ax}unit" in ij else ux
        if s is None:
            notes.append(f"ImageJ {ax}unit '{ij[f'{ax}unit']}' is no length unit, "
                         f"'{xunit}' assumed")
        scale[ax] = s or ux
    xres, yres = page.get_resolution()
    if not (xres > 0 and yres > 0):
        return None, (0.0, 0.0, 0.0), []
    vx, vy = ux / xres, scale["y"] / yres
    try:
        vz = float(ij["spacing"]) * scale["z"]
    except (KeyError, TypeError, ValueError):
        if nz > 1:
            vz = scale["z"]
            notes.append(f"no 'spacing' in the ImageJ header, ImageJ's default of 1 "
                         f"{ij.get('zunit', xunit)} per slice assumed for z")
        else:
            vz = vx
            notes.append("z taken equal to x (a 2D image has no z spacing)")
    try:
        origin = tuple(-float(ij.get(f"{ax}origin", 0.0)) * v
                       for ax, v in zip("zyx", (vz, vy, vx), strict=True))
    except (TypeError, ValueError):
        origin = (0.0, 0.0, 0.0)
    return (vz, vy, vx), origin, notes  # type: ignore[return-value]


def _resolution_calibration(page: Any) -> tuple[Triple | None, list[str]]:
    """Voxel size (um) from the TIFF ResolutionUnit (inch, cm; mm, um as tifffile writes
    them) and X/YResolution tags; z, which TIFF does not store, is taken equal to x."""
    from tifffile import RESUNIT

    unit = page.tags.valueof(296)
    if unit is None or int(unit) not in (2, 3, 4, 5) or 282 not in page.tags:
        return None, []
    xr, yr = page.get_resolution(RESUNIT.MICROMETER)  # pixels per um
    if 283 not in page.tags:
        yr = xr
    if not (xr > 0 and yr > 0):
        return None, []
    return (1.0 / xr, 1.0 / yr, 1.0 / xr), ["z taken equal to x (TIFF resolution tags give "
                                             "x and y only)"]


class TiffSource(_ContiguousSource):
    """A multi-page TIFF (or ImageJ hyperstack); ``dataset`` ``"series=N"`` picks a series.

    Uncompressed contiguous series are read with plain file reads in the file's byte order;
    others (compressed, tiled) page by page through tifffile.
    """

    format = "tiff"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path, dataset)
        try:
            with _TiffLogErrors() as errors:
                self._open_tiff(path, dataset)
            errors.raise_if_any(path)
            self._check(voxel_size)
            if self._contiguous:
                self._open_check_size()
            else:
                _require_codecs(self._tif.series[self._series].keyframe, self.name)
                self._check_pages()
        except BaseException:
            self.close()
            raise

    def _open_tiff(self, path: Path, selector: str | None) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
            len(self._tif.pages)  # walks the whole page chain: broken links are logged
            index, series = _select_series(self._tif, path, selector)
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            meta = self._tiff_meta(self._tif, series.keyframe, shape[0] if len(shape) == 3 else 1)
            offset = series.dataoffset
            stored = meta.get("shape")
            if (isinstance(stored, list) and len(stored) == 3
                    and int(np.prod(stored)) == int(np.prod(shape))):
                shape = tuple(int(n) for n in stored)  # keeps z = 1 volumes 3D
        except AnodetwinError:
            raise
        except Exception as exc:  # tifffile raises many types on damaged files
            if _is_codec_error(exc):
                raise _codec_error(str(path), exc) from exc
            raise CorruptFileError(f"'{path}' is not a readable TIFF ({_short(exc)})",
                                   "the file is truncated or damaged; re-export it") from exc
        ij_images = (self._tif.imagej_metadata or {}).get("images")
        if isinstance(ij_images, int) and ij_images > int(np.prod(shape[:-2])):
            raise CorruptFileError(f"'{path}' holds {int(np.prod(shape[:-2]))} of the "
                                   f"{ij_images} images its header announces",
                                   "the file is truncated or damaged; re-export it")
        self._series = index
        if len(self._tif.series) > 1:
            self.dataset = f"series={index}"
        self.series_found = [(i, tuple(s.shape), str(np.dtype(s.dtype)))
                             for i, s in enumerate(self._tif.series)]
        self.shape = shape  # type: ignore[assignment]
        self._file_dtype = dtype.newbyteorder(self._tif.byteorder)  # series.dtype is native
        self.dtype = dtype.newbyteorder("=")
        self.voxel_size, self.origin, self.attrs = _from_meta(meta)
        self._contiguous = offset is not None
        if self._contiguous:
            self._offset = int(offset)

    def _check_pages(self) -> None:
        size = self.path.stat().st_size
        for i, page in enumerate(self._tif.pages):
            offs = getattr(page, "dataoffsets", ()) or ()
            counts = getattr(page, "databytecounts", ()) or ()
            end = max((o + c for o, c in zip(offs, counts, strict=False)), default=0)
            if end > size:
                self.close()
                raise CorruptFileError(
                    f"'{self.path}' is truncated: page {i} ends at byte {end} of {size}",
                    "the file is incomplete; copy or export it again")

    @staticmethod
    def _tiff_meta(tif: Any, page: Any, nz: int = 1) -> dict:
        """Metadata of a TIFF volume of ``nz`` pages: anodetwin's JSON tag, else voxel size
        and origin (um) from ImageJ's description or the resolution tags, with a
        ``voxel_size_note`` saying what was assumed."""
        tag = page.tags.get(TIFF_METADATA_TAG)
        if tag is not None:
            try:
                meta = json.loads(tag.value)
                if isinstance(meta, dict):
                    return meta
            except ValueError:
                pass
        ij = tif.imagej_metadata
        if ij:
            vs, origin, notes = _imagej_calibration(ij, page, nz)
        else:
            (vs, notes), origin = _resolution_calibration(page), (0.0, 0.0, 0.0)
        if vs is None:
            return {}
        meta: dict[str, Any] = {"voxel_size_um": list(vs), "origin_um": list(origin)}
        if notes:
            meta["voxel_size_note"] = "; ".join(notes)
        return meta

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        if self._contiguous:
            return super()._read_block(z, y, x, out)
        if out is None:
            out = np.empty((z.stop - z.start, y.stop - y.start, x.stop - x.start), self.dtype)
        with _TiffLogErrors() as errors:
            for i, k in enumerate(range(z.start, z.stop)):
                out[i] = self._tif.asarray(key=k, series=self._series)[y, x]
        errors.raise_if_any(self.path)
        return out

    def close(self) -> None:
        super().close()
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
            self._tif = None


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


_NUMBERED = re.compile(r"^(?P<pre>.*?)(?P<num>\d+)(?P<post>\D*)$")


def _ranges(nums: list[int], first: int, step: int, limit: int = 6) -> str:
    """``117 (z 17), 120-122 (z 20-22)`` for missing slice numbers (z from ``first``)."""
    runs: list[list[int]] = []
    for n in nums:
        if runs and n == runs[-1][1] + step:
            runs[-1][1] = n
        else:
            runs.append([n, n])

    def one(a: int, b: int) -> str:
        za, zb = (a - first) // step, (b - first) // step
        return f"{a} (z {za})" if a == b else f"{a}-{b} (z {za}-{zb})"

    text = ", ".join(one(a, b) for a, b in runs[:limit])
    return text + (f" and {len(runs) - limit} more runs" if len(runs) > limit else "")


def _slice_files(folder: Path) -> list[Path]:
    """The slices of a TIFF slice folder in z order, checked to be one gap-free series.

    Slices are grouped by name pattern (the text around the last number in the name, e.g.
    ``recon_####.tif``). A folder mixing patterns, two slices with one number, or a gap in
    the numbering (beyond a constant step) is refused: missing slices are never zeros.
    Folders of unnumbered slices are taken in natural sort order.
    """
    files = [p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff")
             and p.is_file() and not p.name.startswith(".")]
    if not files:
        raise UnknownFormatError(f"folder '{folder}' holds no .tif/.tiff slices",
                                 "point to a folder of 2D TIFF slices or to a volume file")
    groups: dict[Any, list[tuple[int, Path]]] = {}
    for p in files:
        m = _NUMBERED.match(p.name)
        key = (m["pre"].lower(), m["post"].lower().replace(".tiff", ".tif")) if m else None
        groups.setdefault(key, []).append((int(m["num"]) if m else 0, p))
    for items in groups.values():
        items.sort(key=lambda t: (t[0], _natural_key(t[1])))
    if len(groups) > 1:
        desc = "; ".join(
            (f"'{k[0]}#{k[1]}' ({len(v)} files, {v[0][0]}-{v[-1][0]})" if k else
             f"{len(v)} unnumbered files") for k, v in groups.items())
        raise AmbiguousInputError(f"folder '{folder}' mixes {len(groups)} kinds of slice "
                                  f"names: {desc}", "keep one numbered series per folder")
    ((key, items),) = groups.items()
    if key is None:
        return sorted(files, key=_natural_key)
    nums = [n for n, _ in items]
    for (a, pa), (b, pb) in zip(items, items[1:]):
        if a == b:
            raise AmbiguousInputError(f"folder '{folder}' holds two slices numbered {a}: "
                                      f"'{pa.name}' and '{pb.name}'", "remove one of them")
    step = int(np.gcd.reduce(np.subtract(nums[1:], nums[0]))) if len(nums) > 1 else 1
    missing = sorted(set(range(nums[0], nums[-1] + 1, step)) - set(nums))
    if missing:
        m = _NUMBERED.match(items[0][1].name)
        width = len(m["num"]) if len({len(_NUMBERED.match(p.name)["num"]) for _, p in items}) == 1 \
            else 0
        name = f"{m['pre']}{missing[0]:0{width}d}{m['post']}"
        raise MissingDataError(
            f"folder '{folder}' lacks {len(missing)} slice(s) of the series "
            f"{items[0][1].name} ... {items[-1][1].name}: number {_ranges(missing, nums[0], step)}"
            f" (first missing file: '{name}')",
            "restore the missing slices (missing data is never read as zeros)")
    return [p for _, p in items]


class TiffDirSource(VolumeSource):
    """A folder of 2D TIFF slices, one per z, numbered without gaps (see :func:`_slice_files`)."""

    format = "tiff-dir"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path)
        import tifffile

        self._files = _slice_files(path)
        try:
            with tifffile.TiffFile(self._files[0]) as tif:
                s = tif.series[0]
                plane, dtype = tuple(s.shape), np.dtype(s.dtype)
                meta = TiffSource._tiff_meta(tif, s.keyframe, 1)
                _require_codecs(s.keyframe, str(self._files[0]))
        except AnodetwinError:
            raise
        except Exception as exc:
            if _is_codec_error(exc):
                raise _codec_error(str(self._files[0]), exc) from exc
            raise CorruptFileError(f"slice '{self._files[0]}' is not a readable TIFF "
                                   f"({_short(exc)})", "re-export the slice") from exc
        if len(plane) != 2:
            require_3d((len(self._files),) + plane, f"folder '{path}'")
        self.shape = (len(self._files),) + plane  # type: ignore[assignment]
        self.dtype = dtype.newbyteorder("=")
        self.voxel_size, self.origin, self.attrs = _from_meta(meta)
        self._check(voxel_size)

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        import tifffile

        if out is None:
            out = np.empty((z.stop - z.start, y.stop - y.start, x.stop - x.start), self.dtype)
        for i, f in enumerate(self._files[z]):
            try:
                img = tifffile.imread(f)
            except Exception as exc:
                if not f.exists():
                    raise MissingDataError(f"slice '{f}' (z {z.start + i}) has disappeared",
                                           "restore it and run again") from exc
                if _is_codec_error(exc):
                    raise _codec_error(str(f), exc) from exc
                raise CorruptFileError(f"slice '{f}' is not a readable TIFF ({_short(exc)})",
                                       "re-export the slice") from exc
            if img.shape != self.shape[1:]:
                raise CorruptFileError(f"slice '{f}' has shape {img.shape}, the first slice "
                                       f"{self.shape[1:]}", "all slices must have one shape")
            out[i] = img[y, x]
        return out


def _pick_dataset(names: list[tuple[str, tuple]], container: Path, kind: str) -> str:
    three = [n for n, s in names if len(s) == 3]
    if len(three) == 1:
        return three[0]
    listing = ", ".join(n for n, _ in names[:8]) or "none"
    raise DatasetNotFoundError(
        f"{kind} '{container}' holds {len(three)} 3D datasets (found: {listing})",
        f"name one as {container}:/path/to/dataset")


def _h5_find(master: Path, name: str, env: str) -> Path | None:
    """The file ``name`` of an external link or a virtual-dataset source, found where HDF5
    looks: as given if absolute; else in the folders of environment variable ``env``
    (``HDF5_EXT_PREFIX``/``HDF5_VDS_PREFIX``), then the master file's folder, then the
    current folder. None if it is nowhere."""
    p = Path(name)
    cands = [p] if p.is_absolute() else []
    rel = Path(p.name) if p.is_absolute() else p
    for prefix in filter(None, os.environ.get(env, "").split(os.pathsep)):
        cands.append(Path(prefix.replace("${ORIGIN}", str(master.parent))) / rel)
    cands += [master.parent / rel, Path.cwd() / rel]
    return next((c for c in cands if c.is_file()), None)


def _h5_attrs(obj: Any) -> dict:
    """The attributes of an HDF5 object that can be read (others are skipped)."""
    out = {}
    for k in obj.attrs:
        try:
            out[k] = obj.attrs[k]
        except (OSError, TypeError, ValueError):
            continue
    return out


def _h5_datasets(f: Any, master: Path) -> tuple[list[tuple[str, tuple]], list[str]]:
    """(path, shape) of the datasets in ``f`` (also those behind external links), and the
    external links whose file is missing (``"/path -> file"``)."""
    import h5py

    found: list[tuple[str, tuple]] = []
    broken: list[str] = []
    f.visititems(lambda n, o: found.append(("/" + n, o.shape))
                 if isinstance(o, h5py.Dataset) else None)

    def link(name: str, lnk: Any) -> None:
        if not isinstance(lnk, h5py.ExternalLink):
            return
        if _h5_find(master, lnk.filename, "HDF5_EXT_PREFIX") is None:
            broken.append(f"/{name} -> {lnk.filename}")
        elif isinstance(obj := f.get(name), h5py.Dataset):
            found.append(("/" + name, obj.shape))

    f.visititems_links(link)
    return found, broken


def _check_links(f: Any, dataset: str, master: Path) -> None:
    """Raise :class:`MissingDataError` if ``dataset`` or a group above it is an external
    link to a missing file or object, or a dangling soft link."""
    import h5py

    cur = ""
    for part in dataset.strip("/").split("/"):
        cur = f"{cur}/{part}"
        lnk = f.get(cur, getlink=True)
        if lnk is None:
            return
        if isinstance(lnk, h5py.ExternalLink):
            target = _h5_find(master, lnk.filename, "HDF5_EXT_PREFIX")
            if target is None:
                raise MissingDataError(
                    f"'{master}:{cur}' is an external link to '{lnk.path}' in the file "
                    f"'{lnk.filename}', which does not exist (looked in '{master.parent}')",
                    "copy that file next to the master file, or fix the link")
            if f.get(cur) is None:
                raise MissingDataError(f"'{master}:{cur}' is an external link to "
                                       f"'{target}:{lnk.path}', which does not exist",
                                       "fix the link or the linked file")
        elif isinstance(lnk, h5py.SoftLink) and f.get(cur) is None:
            raise MissingDataError(f"'{master}:{cur}' is a soft link to '{lnk.path}', which "
                                   "does not exist", "fix the link")


def _vds_source_problem(ds: Any, dcpl: Any, master: Path, i: int,
                        opened: dict) -> str | None:
    """What is missing of source ``i`` of virtual dataset ``ds`` (creation property list
    ``dcpl``): its file, its dataset or the region it maps; None if it is there."""
    import h5py

    fname, dname = dcpl.get_virtual_filename(i), dcpl.get_virtual_dsetname(i)
    if "%" in fname.replace("%%", "").replace("%b", ""):
        return None  # printf-style source names (unlimited VDS): not checked
    fname = fname.replace("%b", master.stem).replace("%%", "%")
    if fname == ".":
        src = ds.file
    else:
        path = _h5_find(master, fname, "HDF5_VDS_PREFIX")
        if path is None:
            return f"the file '{master.parent / fname}', which does not exist"
        if str(path) not in opened:
            try:
                opened[str(path)] = h5py.File(path, "r")
            except OSError as exc:
                return f"the file '{path}', which cannot be opened ({_short(exc)})"
        src = opened[str(path)]
    obj = src.get(dname)
    if not isinstance(obj, h5py.Dataset):
        return f"'{src.filename}:{dname}', which does not exist"
    small = f"'{src.filename}:{dname}' of shape {obj.shape}, too small for the region it maps"
    try:
        sspace = dcpl.get_virtual_srcspace(i)
        if sspace.get_select_type() == h5py.h5s.SEL_ALL:  # the whole source: count voxels
            return small if obj.size < dcpl.get_virtual_vspace(i).get_select_npoints() else None
        _, hi = sspace.get_select_bounds()
    except (ValueError, RuntimeError):
        return None
    if len(hi) != len(obj.shape) or any(h >= n for h, n in zip(hi, obj.shape, strict=True)):
        return small
    return None


def _check_virtual(ds: Any, master: Path, name: str) -> None:
    """Raise :class:`MissingDataError` if a source of virtual dataset ``ds`` is missing or
    some z range maps to no source: HDF5 would silently return the fill value there."""
    if not ds.is_virtual:
        return
    dcpl = ds.id.get_create_plist()
    covered = np.zeros(ds.shape[0], dtype=bool)
    opened: dict[str, Any] = {}
    fix = "restore it (missing data is never read as the fill value)"
    try:
        for i in range(dcpl.get_virtual_count()):
            try:
                lo, hi = dcpl.get_virtual_vspace(i).get_select_bounds()
            except (ValueError, RuntimeError):
                lo, hi = (0,), (ds.shape[0] - 1,)
            problem = _vds_source_problem(ds, dcpl, master, i, opened)
            if problem:
                raise MissingDataError(f"virtual dataset '{name}' reads z {lo[0]}:{hi[0] + 1} "
                                       f"from {problem}", fix)
            covered[lo[0]: hi[0] + 1] = True
    finally:
        for f in opened.values():
            f.close()
    if not covered.all():
        z0 = int(np.argmin(covered))
        z1 = z0 + (int(np.argmax(covered[z0:])) if covered[z0:].any() else covered.size - z0)
        raise MissingDataError(f"virtual dataset '{name}' maps no source to z {z0}:{z1}",
                               "add the missing source files to the virtual layout")


def _check_allocated(ds: Any, name: str) -> None:
    """Raise :class:`MissingDataError` if parts of ``ds`` were never written (chunks not
    allocated, e.g. after an interrupted export): HDF5 would return the fill value there."""
    import h5py

    if ds.is_virtual or ds.size == 0:
        return
    dcpl = ds.id.get_create_plist()
    if dcpl.get_external_count() > 0:
        return
    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS and ds.id.get_storage_size() == 0:
        raise MissingDataError(f"'{name}' was never written (no data stored, only its shape)",
                               "write the dataset again")
    if layout != h5py.h5d.CHUNKED:
        return
    grid = [-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True)]
    total, have = int(np.prod(grid)), ds.id.get_num_chunks()
    if have >= total:
        return
    rows = np.zeros(grid[0], dtype=np.int64)  # chunks written per z row of chunks

    def count(info: Any) -> None:
        rows[info.chunk_offset[0] // ds.chunks[0]] += 1

    try:
        ds.id.chunk_iter(count)
    except AttributeError:  # HDF5 < 1.12.3
        for i in range(have):
            count(ds.id.get_chunk_info(i))
    k = int(np.argmax(rows < total // grid[0]))
    raise MissingDataError(
        f"'{name}' has {total - have} of {total} chunks that were never written (the first in "
        f"z {k * ds.chunks[0]}:{min(ds.shape[0], (k + 1) * ds.chunks[0])})",
        "the file is incomplete (interrupted write?); write it again")


def _h5_neighbours(ds: Any) -> Getter:
    """Getter over the NeXus-style fields beside ``ds``: numeric datasets of its group such
    as ``x_pixel_size`` or ``voxel_size``, each with its own ``units`` attribute."""
    import h5py

    grp = ds.parent

    def get(key: str) -> tuple[Any, Any] | None:
        obj = grp.get(key)
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "iuf" and obj.size in (1, 3):
            return obj[()], obj.attrs.get("units", obj.attrs.get("unit"))
        return None

    return get


class Hdf5Source(VolumeSource):
    """A 3D dataset of an HDF5 file, also virtual (VDS) or behind external links; every
    source file is checked to be there."""

    format = "hdf5"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path, dataset)
        import h5py

        try:
            self._f = h5py.File(path, "r")
        except OSError as exc:
            raise CorruptFileError(f"'{path}' is not a readable HDF5 file ({_short(exc)})",
                                   "the file is truncated or damaged; write it again") from exc
        try:
            if not dataset:
                dataset = self.dataset = self._pick(path)
            _check_links(self._f, dataset, path)
            obj = self._f.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                found, broken = _h5_datasets(self._f, path)
                names = ", ".join(n for n, _ in found[:8]) or (
                    "none" if broken else "none (the file is empty)")
                raise DatasetNotFoundError(f"HDF5 file '{path}' has no dataset '{dataset}'",
                                           f"use one of: {names}")
            self._ds = obj
            self.shape, self.dtype = tuple(obj.shape), np.dtype(obj.dtype).newbyteorder("=")
            self.voxel_size, self.origin, self.attrs = _from_meta(_h5_attrs(obj),
                                                                  _h5_neighbours(obj))
            self._check(voxel_size)
            _check_virtual(obj, path, self.name)
            _check_allocated(obj, self.name)
        except BaseException:
            self.close()
            raise

    def _pick(self, path: Path) -> str:
        found, broken = _h5_datasets(self._f, path)
        if broken and not any(len(s) == 3 for _, s in found):
            raise MissingDataError(f"HDF5 file '{path}' holds no 3D dataset; its external "
                                   f"link(s) {', '.join(broken[:4])} point to missing files",
                                   "copy the linked files next to it")
        if broken:
            _log.warning("%s: external link(s) to missing files: %s", path, ", ".join(broken))
        return _pick_dataset(found, path, "HDF5 file")

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        if out is not None and out.flags.c_contiguous and out.dtype in (self._ds.dtype,
                                                                        self.dtype):
            self._ds.read_direct(out, source_sel=np.s_[z, y, x])  # HDF5 converts byte order
            return out
        return self._ds[z, y, x]

    def close(self) -> None:
        f = getattr(self, "_f", None)
        if f is not None:
            f.close()
            self._f = None


def _multiscales(attrs: dict) -> list:
    """The OME-Zarr ``multiscales`` list of a group's attributes (v0.4, or v0.5 under
    ``"ome"``), or []."""
    ome = attrs.get("ome")
    ms = attrs.get("multiscales", ome.get("multiscales") if isinstance(ome, dict) else None)
    return [m for m in ms if isinstance(m, dict)] if isinstance(ms, list) else []


def _ome_default(attrs: dict) -> str | None:
    """Path of the full-resolution array of the first OME-Zarr multiscale image, or None."""
    for ms in _multiscales(attrs):
        datasets = ms.get("datasets") or []
        if datasets and isinstance(datasets[0], dict) and "path" in datasets[0]:
            return "/" + str(datasets[0]["path"]).strip("/")
    return None


def _ome_calibration(attrs: dict, name: str, ndim: int) -> tuple[Triple | None, Triple,
                                                                     list[str]]:
    """Voxel size and origin (um) of array ``name`` of an OME-Zarr multiscale image.

    The dataset's ``scale``/``translation`` transformations are applied, then the
    multiscale's; lengths are in the ``unit`` of each of the last three ``axes`` (an axis
    without unit is taken in um, noted; an axis whose unit is not a length gives no size).
    """
    for ms in _multiscales(attrs):
        entry = next((d for d in ms.get("datasets") or [] if isinstance(d, dict)
                      and str(d.get("path", "")).strip("/") == name), None)
        if entry is None:
            continue
        scale, trans = np.ones(ndim), np.zeros(ndim)
        try:
            for tf in [*(entry.get("coordinateTransformations") or []),
                       *(ms.get("coordinateTransformations") or [])]:
                if tf.get("type") == "scale":
                    s = np.asarray(tf["scale"], dtype=float).reshape(ndim)
                    scale, trans = scale * s, trans * s
                elif tf.get("type") == "translation":
                    trans = trans + np.asarray(tf["translation"], dtype=float).reshape(ndim)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None, (0.0, 0.0, 0.0), []
        axes = list(ms.get("axes") or [])[-3:]
        units, notes = [], []
        for ax in axes + [{}] * (3 - len(axes)):
            unit = ax.get("unit") if isinstance(ax, dict) else None
            if unit is None:
                label = ax.get("name", "?") if isinstance(ax, dict) else ax
                notes.append(f"OME-Zarr axis '{label}' has no unit, um assumed")
            units.append(1.0 if unit is None else _unit_scale(unit))
        if None in units or ndim < 3:
            return None, (0.0, 0.0, 0.0), []
        vs, origin = scale[-3:] * units, trans[-3:] * units
        if not (np.all(np.isfinite(vs)) and np.all(vs > 0) and np.all(np.isfinite(origin))):
            return None, (0.0, 0.0, 0.0), []
        return tuple(map(float, vs)), tuple(map(float, origin)), notes  # type: ignore[return-value]
    return None, (0.0, 0.0, 0.0), []


class ZarrSource(VolumeSource):
    """An array of a Zarr store; in an OME-Zarr image the full-resolution one by default,
    with the voxel size and origin of its multiscale metadata."""

    format = "zarr"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path, dataset)
        import zarr

        if not path.exists():
            raise InputNotFoundError(path, "Zarr store")
        try:
            node = zarr.open(store=str(path), mode="r")
        except Exception as exc:
            raise CorruptFileError(f"'{path}' is not a readable Zarr store ({_short(exc)})",
                                   "write it again") from exc
        group_attrs: dict = {}
        if isinstance(node, zarr.Group):
            if not dataset:
                found = [("/" + n, a.shape) for n, a in node.arrays()]
                dataset = _ome_default(dict(node.attrs)) or _pick_dataset(found, path,
                                                                            "Zarr store")
                self.dataset = dataset
            parent = dataset.strip("/").rpartition("/")[0]
            try:
                group_attrs = dict((node[parent] if parent else node).attrs)
                node = node[dataset.strip("/")]
            except KeyError:
                names = ", ".join("/" + n for n, _ in node.arrays()) or "none"
                raise DatasetNotFoundError(f"Zarr store '{path}' has no array '{dataset}'",
                                           f"use one of: {names}") from None
            if isinstance(node, zarr.Group):
                raise DatasetNotFoundError(f"'{path}:{dataset}' is a group, not an array",
                                           "name an array inside it")
        elif dataset and dataset.strip("/"):
            raise DatasetNotFoundError(f"Zarr store '{path}' is a single array, it has no "
                                       f"'{dataset}'", f"use '{path}' alone")
        self._arr = node
        self.shape, self.dtype = tuple(node.shape), np.dtype(node.dtype).newbyteorder("=")
        self.voxel_size, self.origin, self.attrs = _from_meta(dict(node.attrs))
        if self.voxel_size is None and group_attrs:
            vs, origin, notes = _ome_calibration(group_attrs, dataset.strip("/").rpartition(
                "/")[2], len(self.shape))
            if vs is not None:
                self.voxel_size, self.origin = vs, origin
                if notes:
                    self.attrs["voxel_size_note"] = "; ".join(notes)
        self._check(voxel_size)

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self._arr[z, y, x])


_SOURCES: dict[str, type[VolumeSource]] = {
    "tiff": TiffSource, "tiff-dir": TiffDirSource, "hdf5": Hdf5Source, "zarr": ZarrSource,
    "npy": NpySource, "raw": RawSource,
}


def open_volume(path: str | os.PathLike, voxel_size: Any = None,
                fmt: str | None = None) -> VolumeSource:
    """Open a volume lazily.

    Parameters
    ----------
    path : str or path-like
        Volume path (see the module table); HDF5/Zarr datasets as ``file.h5:/path``.
    voxel_size : float or 3 floats, optional
        Voxel size in um, overriding what the file says.
    fmt : str, optional
        Force a format instead of guessing it from the path.

    Returns
    -------
    VolumeSource
        Open source; close it (or use ``with``) when done.

    Raises
    ------
    InputNotFoundError, UnknownFormatError, CorruptFileError, DatasetNotFoundError,
    SidecarError, DimensionError
    """
    kind, file, ds = detect_format(path, fmt=fmt)
    if not file.exists():
        raise InputNotFoundError(file, "volume")
    if kind in ("tiff", "npy", "raw", "hdf5") and file.is_dir():
        raise UnknownFormatError(f"'{file}' is a folder, not a {kind} file", _FIX_FORMATS)
    return _SOURCES[kind](file, ds, voxel_size=voxel_size)


def read_volume(path: str | os.PathLike, roi: Any = None, binning: Any = 1,
                voxel_size: Any = None, fmt: str | None = None, finite: bool = False,
                progress: bool = True) -> Volume:
    """Read a 3D volume (or a region of it, binned) into memory.

    Parameters
    ----------
    path : str or path-like
        Volume path; see :func:`open_volume`.
    roi : str or 3 slices, optional
        Region ``"z0:z1,y0:y1,x0:x1"`` in voxels of the stored volume (end exclusive).
    binning : int or 3 int
        Mean-binning factor applied after cropping; the dtype is kept.
    voxel_size : float or 3 floats, optional
        Voxel size in um overriding the file's.
    fmt : str, optional
        Force a format.
    finite : bool
        Raise :class:`~anodetwin.errors.NonFiniteError` if a float volume holds NaN/inf.

    Returns
    -------
    Volume
        Data with voxel size and origin (um) of the region read.
    """
    with open_volume(path, voxel_size=voxel_size, fmt=fmt) as src:
        vol = src.read(roi, binning, progress=progress)
    if finite:
        require_finite(vol.data, f"volume '{path}'")
    return vol


# --------------------------------------------------------------------------------------------
# writers

def _pages(vol: VolumeLike, check: Any) -> Iterator[np.ndarray]:
    for block in vol.blocks():
        check(block)
        yield from block


def _write_tiff_file(tmp: Path, vol: VolumeLike, meta: dict, check: Any) -> None:
    import tifffile

    dtype = np.dtype(vol.dtype)
    nbytes = int(np.prod(vol.shape)) * dtype.itemsize
    imagej = dtype in (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32")) \
        and nbytes < 2**32 - 2**25
    kw: dict[str, Any] = {"photometric": "minisblack"}
    vs = vol.voxel_size
    if imagej:
        kw["imagej"] = True
        kw["metadata"] = {"axes": "ZYX", "unit": "um", **({"spacing": vs[0]} if vs else {})}
        if vs:
            kw["resolution"] = (1.0 / vs[2], 1.0 / vs[1])
    else:
        kw["bigtiff"] = nbytes >= 2**32 - 2**25
        kw["metadata"] = {"axes": "ZYX"}
        if vs:
            kw["resolution"] = (1e4 / vs[2], 1e4 / vs[1])
            kw["resolutionunit"] = "CENTIMETER"
    meta = {**meta, "shape": list(vol.shape)}
    tifffile.imwrite(tmp, _pages(vol, check), shape=vol.shape, dtype=dtype,
                     extratags=[(TIFF_METADATA_TAG, "s", 0, json.dumps(meta), True)], **kw)


def _write_tiff(path: Path, ds: str | None, vol: VolumeLike, meta: dict, check: Any,
                **_: Any) -> None:
    with atomic_path(path) as tmp:
        _write_tiff_file(tmp, vol, meta, check)


def _write_tiff_dir(path: Path, ds: str | None, vol: VolumeLike, meta: dict, check: Any,
                    **_: Any) -> None:
    import tifffile

    ndig = max(5, len(str(vol.shape[0] - 1)))
    vs = vol.voxel_size
    imagej = np.dtype(vol.dtype) in (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
    kw: dict[str, Any] = {"photometric": "minisblack"}
    if imagej:
        kw = {**kw, "imagej": True, "metadata": {"axes": "YX", "unit": "um",
                                            **({"spacing": vs[0]} if vs else {})}}
        if vs:
            kw["resolution"] = (1.0 / vs[2], 1.0 / vs[1])
    elif vs:
        kw = {**kw, "resolution": (1e4 / vs[2], 1e4 / vs[1]), "resolutionunit": "CENTIMETER"}
    tag = [(TIFF_METADATA_TAG, "s", 0, json.dumps(meta), True)]
    with atomic_path(path, directory=True) as tmp:
        for k, page in enumerate(_pages(vol, check)):
            tifffile.imwrite(tmp / f"slice_{k:0{ndig}d}.tif", page, extratags=tag, **kw)


def _chunks(shape: tuple[int, ...], itemsize: int, layer_bytes: int,
            yx: int) -> tuple[int, int, int]:
    """Chunk shape (cz, cy, cx): cy, cx <= ``yx``; cz <= 64 planes and a whole layer of
    chunks (cz full planes) within ``layer_bytes``, so that writing layer by layer touches
    every chunk once and buffers at most one layer."""
    plane = shape[1] * shape[2] * itemsize
    cz = int(max(1, min(64, shape[0], layer_bytes // max(1, plane))))
    return (cz, min(yx, shape[1]), min(yx, shape[2]))


def _layers(vol: VolumeLike, cz: int, check: Any) -> Iterator[tuple[int, np.ndarray]]:
    """Re-cut the volume's slabs into layers of exactly ``cz`` planes (the last may be
    thinner); yields (z0, layer)."""
    pending: list[np.ndarray] = []
    have, z0 = 0, 0
    for block in vol.blocks():
        check(block)
        pending.append(block)
        have += block.shape[0]
        while have >= cz:
            cat = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield z0, cat[:cz]
            z0 += cz
            rest = cat[cz:]
            pending, have = ([rest] if rest.shape[0] else []), rest.shape[0]
    if have:
        yield z0, np.concatenate(pending) if len(pending) > 1 else pending[0]


def _write_hdf5(path: Path, ds: str | None, vol: VolumeLike, meta: dict, check: Any,
                compression: str | None = None, **_: Any) -> None:
    import h5py

    ds = ds or "/volume"
    chunks = _chunks(vol.shape, np.dtype(vol.dtype).itemsize, 32 * 2**20, 256)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            d = f.create_dataset(ds, shape=vol.shape, dtype=vol.dtype, chunks=chunks,
                                 compression=compression)
            for z, layer in _layers(vol, chunks[0], check):
                d[z : z + layer.shape[0]] = layer
            for k, v in meta.items():
                d.attrs[k] = provenance_json(v) if k == "provenance" else v
            if "voxel_size_um" in meta:
                d.attrs["element_size_um"] = meta["voxel_size_um"]
            if "provenance" in meta:
                f.attrs["provenance"] = provenance_json(meta["provenance"])


def _write_zarr(path: Path, ds: str | None, vol: VolumeLike, meta: dict, check: Any,
                **_: Any) -> None:
    import zarr

    with atomic_path(path, directory=True) as tmp:
        chunks = _chunks(vol.shape, np.dtype(vol.dtype).itemsize, 256 * 2**20, 64)
        if ds and ds.strip("/"):
            root = zarr.open_group(store=str(tmp), mode="w")
            arr = root.create_array(ds.strip("/"), shape=vol.shape, dtype=vol.dtype,
                                    chunks=chunks)
        else:
            arr = zarr.create_array(store=str(tmp), shape=vol.shape, dtype=vol.dtype,
                                    chunks=chunks, overwrite=True)
        for z, layer in _layers(vol, chunks[0], check):
            arr[z : z + layer.shape[0]] = layer
        arr.attrs.update(json.loads(json.dumps(meta, default=str)))


def _write_npy(path: Path, ds: str | None, vol: VolumeLike, meta: dict, check: Any,
               **_: Any) -> None:
    dtype = np.dtype(vol.dtype)
    side = path.with_name(path.name + ".json")
    with atomic_path(path) as tmp, atomic_path(side) as tmps:
        with open(tmp, "wb") as fh:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                      "shape": tuple(vol.shape)}
            np.lib.format.write_array_header_1_0(fh, header)
            for block in vol.blocks():
                check(block)
                np.ascontiguousarray(block).tofile(fh)
        tmps.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")


def _write_raw(path: Path, ds: str | None, vol: VolumeLike, meta: dict, check: Any,
               **_: Any) -> None:
    dtype = np.dtype(vol.dtype)
    side = path.with_name(path.name + ".json")
    sidecar = {"shape": list(vol.shape), "dtype": dtype.name,
               "byte_order": "little" if (dtype.byteorder in "<=|" and np.little_endian)
               or dtype.byteorder == "<" else "big", "header_bytes": 0, **meta}
    with atomic_path(path) as tmp, atomic_path(side) as tmps:
        with open(tmp, "wb") as fh:
            for block in vol.blocks():
                check(block)
                np.ascontiguousarray(block).tofile(fh)
        tmps.write_text(json.dumps(sidecar, indent=2, default=str) + "\n", encoding="utf-8")


_WRITERS = {"tiff": _write_tiff, "tiff-dir": _write_tiff_dir, "hdf5": _write_hdf5,
            "zarr": _write_zarr, "npy": _write_npy, "raw": _write_raw}


def write_volume(path: str | os.PathLike, volume: VolumeLike | np.ndarray, *,
                 voxel_size: Any = None, origin: Any = None, provenance: dict | None = None,
                 fmt: str | None = None, finite: bool = False, overwrite: bool = True,
                 compression: str | None = None) -> Path:
    """Write a 3D volume atomically, with voxel size, origin and provenance.

    Parameters
    ----------
    path : str or path-like
        Output path; the format follows from it (see the module table). For HDF5/Zarr a
        dataset may follow a colon (default ``/volume`` for HDF5, the store root for Zarr).
        A path ending in ``/`` writes a folder of TIFF slices.
    volume : Volume, LazyVolume or numpy.ndarray
        What to write. A :class:`~anodetwin.io.volume.LazyVolume` is streamed slab by slab.
    voxel_size : float or 3 floats, optional
        Voxel size in um (overrides the volume's).
    origin : 3 floats, optional
        Centre of the first voxel in um (overrides the volume's).
    provenance : dict, optional
        Provenance record; a minimal one is made if omitted.
    fmt : str, optional
        Force a format.
    finite : bool
        Refuse NaN/inf in float data (checked slab by slab; nothing is written then).
    overwrite : bool
        Replace an existing output.
    compression : str, optional
        HDF5 compression filter (e.g. ``"gzip"``); other formats ignore it.

    Returns
    -------
    pathlib.Path
        The written file or folder.
    """
    kind, file, ds = detect_format(path, for_writing=True, fmt=fmt)
    check_output_path(file, overwrite=overwrite)
    if isinstance(volume, np.ndarray):
        volume = Volume(volume)
    volume = _Prepared(volume, voxel_size, origin, f"writing {file.name}")
    require_3d(volume.shape, "volume to write")
    name = f"volume '{volume.name}'" if volume.name else f"volume for '{path}'"

    def check(block: np.ndarray) -> None:
        if finite:
            require_finite(block, name)

    prov = provenance if provenance is not None else make_provenance("write_volume")
    meta = _meta_dict(volume, prov)
    try:
        _WRITERS[kind](file, ds, volume, meta, check, compression=compression)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"could not write '{path}' ({_short(exc)})",
                          "check free disk space and permissions") from exc
    return file


class _Prepared:
    """The volume to write, with its voxel size/origin possibly replaced, and a progress bar
    on large in-memory volumes (lazy ones show their own while they are read)."""

    def __init__(self, vol: VolumeLike, voxel_size: Any, origin: Any, label: str):
        self._vol = vol
        self._label = label
        self.shape, self.dtype, self.attrs = vol.shape, vol.dtype, vol.attrs
        self.name = getattr(vol, "name", None)
        self.voxel_size = normalize_voxel_size(voxel_size) if voxel_size is not None \
            else vol.voxel_size
        self.origin = tuple(float(o) for o in origin) if origin is not None else vol.origin
        if voxel_size is not None:  # given explicitly: nothing about it is assumed any more
            self.attrs = {k: v for k, v in (vol.attrs or {}).items() if k != "voxel_size_note"}

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]:
        from anodetwin.log import progress_bar

        lazy = isinstance(self._vol, LazyVolume)
        total = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        with progress_bar(self._label, total=total, enabled=not lazy) as advance:
            for block in self._vol.blocks(slab_bytes):
                yield block
                advance(block.nbytes)
