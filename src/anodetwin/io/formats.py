"""Readers and writers of 3D volumes.

Formats (chosen from the path; see :func:`detect_format`):

============== ============================== ================================================
format         path                           voxel size (um) is read from / written to
============== ============================== ================================================
``tiff``       ``vol.tif``, ``vol.tiff``      anodetwin tag 65421 (JSON); else OME-XML
               (multi-page, one page per z;   ``PhysicalSizeX/Y/Z`` (+ ``...Unit``, default
               ``vol.tif:series=N`` picks a   um); else ImageJ ``unit`` (x) / ``yunit`` /
               series, default the largest    ``zunit``, X/YResolution and ``spacing`` (z;
               3D one; tiled, compressed and  absent = ImageJ's 1 zunit, noted); else
               volumetric-tiled files too)    ResolutionUnit (inch, cm, mm, um) +
                                              X/YResolution, z taken = x (noted; 1, 72 and
                                              96 dpi, writers' defaults, noted as assumed)
``tiff-dir``   a folder of 2D ``*.tif`` files  as ``tiff``, from the first slice; z taken = x
               numbered without gaps (one     (noted) unless the anodetwin tag gives it
               name pattern and dtype; order
               = number; a step > 1 is noted)
``hdf5``       ``file.h5:/path/to/dataset``   dataset attributes ``voxel_size_um`` /
               (also virtual datasets and     ``element_size_um`` (Fiji/ilastik) /
               external links: every source   ``voxel_size`` with ``units`` (one, or one per
               file must exist)               axis) / ``voxel_size_<unit>``; else NeXus
                                              fields beside it (``x_pixel_size``, ...,
                                              ``voxel_size``, each with ``units``)
``zarr``       ``store.zarr`` or              array attributes as HDF5; else OME-Zarr
               ``store.zarr:/path/to/array``  ``multiscales`` (``axes`` units, ``scale`` and
               (OME-Zarr: full resolution)    ``translation`` -> origin) of the parent group
``npy``        ``vol.npy``                    JSON sidecar ``vol.npy.json`` (optional)
``raw``        ``vol.raw`` / ``.bin`` / ``.dat``  JSON sidecar ``vol.raw.json`` or ``vol.json``
                                              (required: shape, dtype, byte order, which
                                              ``">u2"`` in the dtype also gives)
============== ============================== ================================================

Voxel sizes are per axis (z, y, x) in um. Units are converted from any length unit in the
spellings ImageJ, NeXus, OME and TIFF use (``nm``, ``µm``, ImageJ's escaped ``\\u00B5m``,
``micron``, ``micrometer``, ``mm``, ``inch``, ...). Sidecars and attributes take
``voxel_size_um``, ``voxel_size_<unit>`` (``voxel_size_nm``), or ``voxel_size`` plus
``unit``/``units``; values may be stored as text (``"[1.0, 0.5, 0.5]"``). A value that had to
be assumed (z equal to x, um for a missing unit), and metadata that was found but could not be
used (a negative ImageJ ``spacing``, an unknown unit, a zero, NaN or implausible size, two
values for three axes: ``"found ... but ignored: <why>"``), is recorded in
``attrs["voxel_size_note"]`` (:attr:`VolumeSource.voxel_size_note`, set even when the voxel
size stays unknown), logged as a warning, shown by ``anodetwin inspect`` and written with the
volume; giving the voxel size explicitly clears it. When only z is unusable, x and y are kept
and z is taken equal to x.

Axis names are followed when they are a permutation of z, y, x: Zarr v3 ``dimension_names``,
OME-Zarr ``axes``, xarray's ``_ARRAY_DIMENSIONS``, HDF5 dimension labels, an ``axes``
attribute or NeXus ``@axes``; blocks are read through the permutation and voxel sizes and
origins follow it. Size-1 axes named t/c (or unnamed leading ones, ``(1, z, y, x)``) are
dropped; other names leave the stored order (noted in ``attrs["axes_note"]``).

Data are returned in native byte order whatever the file stores. Missing data (a missing
virtual-dataset source or external-link target, a gap in a slice numbering, HDF5 chunks never
written, a chunk missing from a Zarr store anodetwin wrote) raises
:class:`~anodetwin.errors.MissingDataError`; it is never read as zeros. Zarr chunks missing
from stores written by other software (which leave out all-fill chunks) are counted per region
read, logged and noted (``attrs["missing_chunks_note"]``).

Every writer stores the same metadata: ``voxel_size_um`` (z, y, x) and ``origin_um`` (z, y,
x; centre of the first voxel) — or, without voxel size, ``origin_voxels`` —, ``axes = "zyx"``
and a ``provenance`` record (:mod:`anodetwin.io.provenance`); Zarr stores are written with
every chunk and ``all_chunks_written = true``. All reads are lazy: only the slabs of the
requested region are read, so a 16 GiB tomogram can be cropped or binned with a few hundred
MiB of memory.

Raw sidecar layout (JSON)::

    {"shape": [nz, ny, nx], "dtype": "uint16", "byte_order": "little",
     "header_bytes": 0, "voxel_size_um": [0.05, 0.05, 0.05], "origin_um": [0, 0, 0]}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import (
    CorruptFileError,
    InputNotFoundError,
    OutputError,
    SidecarError,
    UnknownFormatError,
)
from anodetwin.io._calibration import from_meta
from anodetwin.io._hdf5 import Hdf5Source
from anodetwin.io._source import ContiguousSource, VolumeSource, short
from anodetwin.io._tiff import TIFF_METADATA_TAG, TiffDirSource, TiffSource
from anodetwin.io._zarr import ALL_CHUNKS_WRITTEN, ZarrSource
from anodetwin.io.atomic import atomic_path, check_output_path, signals_deferred
from anodetwin.io.provenance import make_provenance, provenance_json
from anodetwin.io.volume import (
    LazyVolume,
    Volume,
    VolumeLike,
    normalise_voxel_size,
    require_3d,
    require_finite,
)

__all__ = [
    "volume_file",
    "input_files",
    "FORMATS",
    "HDF5_COMPRESSIONS",
    "VolumeSource",
    "detect_format",
    "open_volume",
    "read_volume",
    "write_volume",
    "TIFF_METADATA_TAG",
]

#: HDF5 compression filters a volume can be written with (built into every h5py).
HDF5_COMPRESSIONS = ("gzip", "lzf")
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
        if fmt not in _SOURCES and fmt not in _WRITERS:
            raise UnknownFormatError(f"format '{fmt}' is unknown",
                                     f"choose one of {', '.join(FORMATS)}")
        return _usable(fmt, path, for_writing), p, ds
    ext = p.suffix.lower()
    if ext in _EXT:
        return _usable(_EXT[ext], path, for_writing), p, ds
    if (for_writing and (text.endswith("/") or (p.is_dir()))) or (not for_writing and p.is_dir()):
        return "tiff-dir", p, None
    if not for_writing and not p.exists():
        raise InputNotFoundError(p, "volume")
    raise UnknownFormatError(f"'{path}' has an unknown volume format (extension '{ext or 'none'}')",
                             _FIX_FORMATS)


def _usable(kind: str, path: Any, for_writing: bool) -> str:
    """``kind`` if the registry can read it (or write it, ``for_writing``), else a typed
    error naming the formats that can."""
    known = _WRITERS if for_writing else _SOURCES
    if kind not in known:
        what = "written" if for_writing else "read"
        raise UnknownFormatError(f"'{path}': format '{kind}' cannot be {what}",
                                 f"use one of {', '.join(known)}")
    return kind


# --------------------------------------------------------------------------------------------
# metadata written with every volume


#: Notes of a volume's reader that what is made from it keeps (attributes of the same names):
#: an assumed voxel size, chunks or data read as the fill value.
SOURCE_NOTES = ("voxel_size_note", "missing_chunks_note", "missing_data_note")


def _meta_dict(vol: VolumeLike, provenance: dict | None) -> dict[str, Any]:
    """``axes``, ``voxel_size_um`` + ``origin_um`` (or, without voxel size, the origin in
    voxels as ``origin_voxels``), the notes (``voxel_size_note``, ``missing_chunks_note``,
    ``missing_data_note``) and the provenance."""
    meta: dict[str, Any] = {"axes": "zyx"}
    if vol.voxel_size_um is not None:
        meta["voxel_size_um"] = list(vol.voxel_size_um)
        meta["origin_um"] = list(vol.origin)
    else:  # the origin is in voxels then: never labelled um
        meta["origin_voxels"] = list(vol.origin)
    for key in SOURCE_NOTES:
        note = (vol.attrs or {}).get(key)
        if note:  # an assumed (or ignored) voxel size, fill-value chunks: marked in the output
            meta[key] = str(note)
    if provenance is not None:
        meta["provenance"] = provenance
    return meta


# --------------------------------------------------------------------------------------------
# npy and raw sources (TIFF, HDF5 and Zarr: modules _tiff, _hdf5, _zarr)


def _load_sidecar(cand: Path) -> dict:
    """The JSON object in sidecar ``cand``, else :class:`SidecarError`."""
    try:
        meta = json.loads(cand.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SidecarError(f"sidecar '{cand}' is not valid JSON ({short(exc)})",
                           "fix the JSON or delete the sidecar") from exc
    if not isinstance(meta, dict):
        raise SidecarError(f"sidecar '{cand}' is not a JSON object",
                           'write {"shape": [nz, ny, nx], "dtype": "uint16", ...}')
    return meta


def _read_sidecar(path: Path, required: bool) -> tuple[dict, Path | None]:
    """The JSON sidecar of ``path`` (``vol.raw.json`` or ``vol.json``) and its path.

    Raises
    ------
    SidecarError
        If it is required and missing, is not a JSON object, or both sidecars exist and
        say different things.
    """
    cands = [c for c in (path.with_name(path.name + ".json"), path.with_suffix(".json"))
             if c.is_file()]
    metas = [_load_sidecar(c) for c in cands]
    if len(metas) == 2 and metas[0] != metas[1]:
        raise SidecarError(f"'{path}' has two sidecars that disagree: '{cands[0]}' and "
                           f"'{cands[1]}'", "delete or fix one of them")
    if metas:
        return metas[0], cands[0]
    if required:
        raise SidecarError(
            f"raw volume '{path}' has no JSON sidecar ('{path.name}.json')",
            'write one with {"shape": [nz, ny, nx], "dtype": "uint16", "byte_order": "little", '
            '"voxel_size_um": 0.05}')
    return {}, None


class NpySource(ContiguousSource):
    """A ``.npy`` file (any byte order, C or Fortran order) with an optional JSON sidecar."""

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
            raise CorruptFileError(f"'{path}' is not a valid .npy file ({short(exc)})",
                                   "save it again with numpy.save") from exc
        self.shape, self._file_dtype = tuple(shape), np.dtype(dtype)
        self.dtype = self._file_dtype.newbyteorder("=")
        self._fortran = bool(fortran)
        meta, _ = _read_sidecar(path, required=False)
        self._set_calibration(from_meta(meta))
        self._check(voxel_size)
        self._open_check_size()

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        if self._fortran:
            mm = np.load(self.path, mmap_mode="r")
            return np.array(mm[z, y, x])
        return super()._read_block(z, y, x, out)


class RawSource(ContiguousSource):
    """A raw binary volume described by its JSON sidecar (shape, dtype, byte order)."""

    format = "raw"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path)
        meta, side = _read_sidecar(path, required=True)
        try:
            shape = tuple(int(s) for s in meta["shape"])
            dtype = np.dtype(meta["dtype"])
            self._offset = int(meta.get("header_bytes", 0))
        except KeyError as exc:
            raise SidecarError(f"sidecar '{side}' lacks the key {exc}",
                               'add "shape" ([nz, ny, nx]) and "dtype" (e.g. "uint16")') from None
        except (TypeError, ValueError) as exc:
            raise SidecarError(f"sidecar '{side}' has an invalid entry ({short(exc)})",
                               'shape is [nz, ny, nx] integers, dtype a numpy name like "uint16"'
                               ) from None
        order = _byte_order(meta, dtype, side)
        self._file_dtype = dtype.newbyteorder({"little": "<", "big": ">"}[order])
        self.shape = shape  # type: ignore[assignment]
        self.dtype = dtype.newbyteorder("=")
        self._set_calibration(from_meta(meta))
        self._check(voxel_size)
        need = self._offset + int(np.prod(shape)) * dtype.itemsize
        have = path.stat().st_size
        if have != need:
            raise SidecarError(
                f"raw volume '{path}' has {have} bytes but its sidecar says shape {shape} of "
                f"{dtype} + {self._offset} header bytes = {need}",
                "correct shape, dtype or header_bytes in the sidecar")
        self._fh = open(path, "rb")
        self._note_holes(need)


def _byte_order(meta: dict, dtype: np.dtype, side: Path | None) -> str:
    """``"little"`` or ``"big"``: the sidecar's ``byte_order``, or the order in its dtype
    string (``">u2"``), else little. Both given and different is a :class:`SidecarError`."""
    import sys

    native = {"native": sys.byteorder, "=": sys.byteorder}
    given = meta.get("byte_order")
    order = None
    if given is not None:
        order = native.get(str(given).lower(), str(given).lower())
        if order not in ("little", "big"):
            raise SidecarError(f"sidecar '{side}' has byte_order '{given}'",
                               'use "little" or "big"')
    mark = str(meta["dtype"]).strip()[:1]
    in_dtype = {"<": "little", ">": "big", "!": "big"}.get(mark, native.get(mark))
    if in_dtype and order and in_dtype != order and dtype.itemsize > 1:
        raise SidecarError(f"sidecar '{side}' has dtype '{meta['dtype']}' ({in_dtype}-endian) "
                           f"but byte_order '{given}'", "make them agree or drop one")
    return order or in_dtype or "little"


# --------------------------------------------------------------------------------------------
# opening and reading

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
    SidecarError, DimensionError, MissingDataError, MissingCodecError, ParameterError
    (a given voxel size outside 1e-4-1e5 um)
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
    binning : int, 3 int or None
        Mean-binning factor applied after cropping (None: 1); the dtype is kept.
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
    vs = vol.voxel_size_um
    if imagej:
        kw["imagej"] = True
        # no unit without a voxel size: Fiji would read the default resolution as 1 um
        kw["metadata"] = {"axes": "ZYX", **({"unit": "um", "spacing": vs[0]} if vs else {})}
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
    vs = vol.voxel_size_um
    imagej = np.dtype(vol.dtype) in (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
    kw: dict[str, Any] = {"photometric": "minisblack"}
    if imagej:
        kw = {**kw, "imagej": True, "metadata": {
            "axes": "YX", **({"unit": "um", "spacing": vs[0]} if vs else {})}}
        if vs:
            kw["resolution"] = (1.0 / vs[2], 1.0 / vs[1])
    elif vs:
        kw = {**kw, "resolution": (1e4 / vs[2], 1e4 / vs[1]), "resolutionunit": "CENTIMETER"}
    tag = [(TIFF_METADATA_TAG, "s", 0, json.dumps(meta), True)]
    with atomic_path(path, directory=True, kind="tiff-dir") as tmp:
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

    # zarr writes on its own I/O thread: a signal must not stop the main thread while that
    # thread still writes into the temporary folder (it would be re-created after removal)
    with atomic_path(path, directory=True, kind="zarr") as tmp:
        chunks = _chunks(vol.shape, np.dtype(vol.dtype).itemsize, 256 * 2**20, 64)
        every = {"write_empty_chunks": True}  # a missing chunk is then known to be lost
        with signals_deferred():
            if ds and ds.strip("/"):
                root = zarr.open_group(store=str(tmp), mode="w")
                arr = root.create_array(ds.strip("/"), shape=vol.shape, dtype=vol.dtype,
                                        chunks=chunks, config=every)
            else:
                arr = zarr.create_array(store=str(tmp), shape=vol.shape, dtype=vol.dtype,
                                        chunks=chunks, overwrite=True, config=every)
        for z, layer in _layers(vol, chunks[0], check):
            with signals_deferred():  # one layer at a time: reading stays interruptible
                arr[z : z + layer.shape[0]] = layer
        with signals_deferred():
            arr.attrs.update({**json.loads(json.dumps(meta, default=str)),
                              ALL_CHUNKS_WRITTEN: True})


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

#: Names of the volume formats, each read (:func:`open_volume`) and written
#: (:func:`write_volume`): the keys of the format registry.
FORMATS = tuple(_WRITERS)


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
        Replace an existing output: a file, or a folder of the same kind (a Zarr store;
        a folder holding only ``slice_<n>.tif`` files) or an empty one. A folder holding
        other files is refused, and so is an output that overlaps an input named in
        ``provenance``.
    compression : str, optional
        HDF5 compression filter (one of :data:`HDF5_COMPRESSIONS`, e.g. ``"gzip"``); other
        formats ignore it.

    Returns
    -------
    pathlib.Path
        The written file or folder.
    """
    kind, file, ds = detect_format(path, for_writing=True, fmt=fmt)
    given = [rec["path"] for rec in (provenance or {}).get("inputs", ())
             if isinstance(rec, dict) and rec.get("path")]
    check_output_path(file, overwrite=overwrite, inputs=given,
                      kind=kind if kind in ("zarr", "tiff-dir") else "file")
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
        raise OutputError(f"could not write '{path}' ({short(exc)})",
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
        self.voxel_size_um = normalise_voxel_size(voxel_size) if voxel_size is not None \
            else vol.voxel_size_um
        self.origin = tuple(float(o) for o in origin) if origin is not None else vol.origin
        if origin is None and vol.voxel_size_um is None and self.voxel_size_um is not None:
            # the volume's origin is in voxels: into um with the voxel size now given
            self.origin = tuple(o * v for o, v in zip(vol.origin, self.voxel_size_um,
                                                      strict=True))
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


def volume_file(path: str | os.PathLike) -> Path:
    """The file of a volume path: ``series.h5:/steps/T0/tomogram`` -> ``series.h5``.

    Parameters
    ----------
    path : str or path-like
        A volume path as the readers take it (HDF5/NeXus with ``:/dataset``).

    Returns
    -------
    Path
        The file on disk.
    """
    s = os.fspath(path)
    for ext in (".h5:", ".hdf5:", ".nxs:"):
        if ext in s:
            return Path(s[: s.index(ext) + len(ext) - 1])
    return Path(s)


def input_files(path: str | os.PathLike) -> list[Path]:
    """Every file or folder that reading the volume ``path`` reads: the file (or the folder
    of a Zarr store or of TIFF slices) itself, its JSON sidecar (npy, raw), and for an HDF5
    dataset the files of an external link to it or of its virtual dataset's sources (what
    an output must not replace, hold or lie in).

    Parameters
    ----------
    path : str or path-like
        A volume path as the readers take it (``file.h5:/dataset`` allowed).

    Returns
    -------
    list of Path
        The existing files and folders, resolved (missing or unreadable ones are left out).
    """
    s = os.fspath(path)
    m = _CONTAINER.match(s) or _TIFF_SERIES.match(s)
    f = Path(m.group("file")) if m else Path(s)
    out = [f]
    if f.suffix.lower() in (".raw", ".bin", ".dat", ".npy"):
        out += [Path(str(f) + ".json"), f.with_suffix(".json")]
    if f.suffix.lower() in (".h5", ".hdf5", ".hdf", ".he5", ".nxs") and m and m.group("ds"):
        out += _hdf5_sources(f, m.group("ds"))
    return [p.resolve() for p in out if p.exists()]


def _hdf5_sources(f: Path, key: str) -> list[Path]:
    """Files behind an HDF5 dataset: an external link's target, virtual dataset sources."""
    import h5py

    try:
        with h5py.File(f, "r") as h:
            link = h.get(key, getlink=True)
            files = [Path(link.filename)] if isinstance(link, h5py.ExternalLink) else []
            d = h.get(key)
            if isinstance(d, h5py.Dataset) and d.is_virtual:
                files += [Path(v.file_name) for v in d.virtual_sources() if v.file_name != "."]
    except (OSError, KeyError, ValueError):
        return []
    return [p if p.is_absolute() else f.parent / p for p in files]
