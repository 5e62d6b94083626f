"""Readers and writers of 3D volumes.

Formats (chosen from the path; see :func:`detect_format`):

============== ============================== ================================================
format         path                           voxel size (um) is read from / written to
============== ============================== ================================================
``tiff``       ``vol.tif``, ``vol.tiff``      anodetwin tag 65421 (JSON); else ImageJ
               (multi-page, one page per z)   ``spacing``/``unit`` and X/YResolution tags
``tiff-dir``   a folder of 2D ``*.tif`` files  as ``tiff``, from the first slice
               (natural sort order = z)
``hdf5``       ``file.h5:/path/to/dataset``   dataset attributes ``voxel_size_um`` or
                                              ``element_size_um`` (Fiji/ilastik convention)
``zarr``       ``store.zarr`` or              array attributes ``voxel_size_um``
               ``store.zarr:/path/to/array``
``npy``        ``vol.npy``                    JSON sidecar ``vol.npy.json`` (optional)
``raw``        ``vol.raw`` / ``.bin`` / ``.dat``  JSON sidecar ``vol.raw.json`` or ``vol.json``
                                              (required: shape, dtype, byte order)
============== ============================== ================================================

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
    AnodetwinError,
    CorruptFileError,
    DatasetNotFoundError,
    InputNotFoundError,
    OutputError,
    ParameterError,
    SidecarError,
    UnknownFormatError,
)
from anodetwin.io.atomic import atomic_path, check_output_path
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
_FIX_FORMATS = ("use .tif/.tiff, a folder of .tif slices, .h5:/dataset, .zarr, .npy, or "
                ".raw with a JSON sidecar")


def detect_format(path: str | os.PathLike, for_writing: bool = False,
                  fmt: str | None = None) -> tuple[str, Path, str | None]:
    """Work out the format of ``path``.

    Parameters
    ----------
    path : str or path-like
        Volume path; containers take a dataset after a colon (``file.h5:/group/data``).
    for_writing : bool
        If True the path need not exist; a path ending in ``/`` is a TIFF slice folder.
    fmt : str, optional
        Force a format (one of :data:`FORMATS`).

    Returns
    -------
    (format, file path, dataset path or None)
    """
    text = os.fspath(path)
    m = _CONTAINER.match(text)
    ds = None
    if m:
        text, ds = m.group("file"), (m.group("ds") or None)
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
    if provenance is not None:
        meta["provenance"] = provenance
    return meta


def _from_meta(meta: dict[str, Any]) -> tuple[Triple | None, Triple, dict]:
    vs = meta.get("voxel_size_um", meta.get("element_size_um"))
    try:
        vs = normalize_voxel_size(vs, "stored voxel size")
    except ParameterError:
        vs = None
    origin = meta.get("origin_um", (0.0, 0.0, 0.0))
    try:
        origin = tuple(float(o) for o in np.asarray(origin, dtype=float).reshape(3))
    except (TypeError, ValueError):
        origin = (0.0, 0.0, 0.0)
    attrs = {}
    prov = meta.get("provenance")
    if isinstance(prov, (bytes, str)):
        try:
            prov = json.loads(prov)
        except ValueError:
            prov = None
    if isinstance(prov, dict):
        attrs["provenance"] = prov
    return vs, origin, attrs  # type: ignore[return-value]


_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0,
               "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3,
               "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6, "meter": 1e6}


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

    def _check(self, voxel_size: Any) -> None:
        require_3d(self.shape, f"'{self.name}'")
        if voxel_size is not None:
            self.voxel_size = normalize_voxel_size(voxel_size, "voxel size")

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


def _read_contiguous(fh: Any, offset: int, dtype: np.dtype, shape: tuple[int, int, int],
                     z: slice, y: slice, x: slice, out: np.ndarray | None = None) -> np.ndarray:
    """Read [z, y, x] of a C-ordered array stored at ``offset`` with plain file reads.

    Whole planes go straight into the result in one read; otherwise only the rows
    y.start:y.stop of each plane are read, into one reused band buffer. No memory map, so the
    resident memory stays at the size of the result.
    """
    _, ny, nx = shape
    row = nx * dtype.itemsize
    plane = ny * row
    nz, nrow = z.stop - z.start, y.stop - y.start
    if out is None:
        out = np.empty((nz, nrow, x.stop - x.start), dtype=dtype.newbyteorder("="))
    if nrow == ny and x.stop - x.start == nx and out.dtype == dtype \
            and out.flags.c_contiguous:
        fh.seek(offset + z.start * plane)
        _read_into(fh, out, f"planes {z.start}:{z.stop}")
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


class TiffSource(_ContiguousSource):
    format = "tiff"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path)
        try:
            with _TiffLogErrors() as errors:
                self._open_tiff(path)
            errors.raise_if_any(path)
        except BaseException:
            self.close()
            raise
        try:
            self._check(voxel_size)
            if self._contiguous:
                self._open_check_size()
            else:
                self._check_pages()
        except BaseException:
            self.close()
            raise

    def _open_tiff(self, path: Path) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            page = self._tif.pages.first
            meta = self._tiff_meta(self._tif, page)
            offset = series.dataoffset
            stored = meta.get("shape")
            if (isinstance(stored, list) and len(stored) == 3
                    and int(np.prod(stored)) == int(np.prod(shape))):
                shape = tuple(int(n) for n in stored)  # keeps z = 1 volumes 3D
            len(self._tif.pages)  # walks the whole page chain: broken links are logged
        except Exception as exc:  # tifffile raises many types on damaged files
            raise CorruptFileError(f"'{path}' is not a readable TIFF ({_short(exc)})",
                                   "the file is truncated or damaged; re-export it") from exc
        ij_images = (self._tif.imagej_metadata or {}).get("images")
        if isinstance(ij_images, int) and ij_images > int(np.prod(shape[:-2])):
            raise CorruptFileError(f"'{path}' holds {int(np.prod(shape[:-2]))} of the "
                                   f"{ij_images} images its header announces",
                                   "the file is truncated or damaged; re-export it")
        self.shape, self._file_dtype = shape, dtype  # type: ignore[assignment]
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
    def _tiff_meta(tif: Any, page: Any) -> dict:
        tag = page.tags.get(TIFF_METADATA_TAG)
        if tag is not None:
            try:
                meta = json.loads(tag.value)
                if isinstance(meta, dict):
                    return meta
            except ValueError:
                pass
        meta: dict[str, Any] = {}
        ij = tif.imagej_metadata or {}
        unit = str(ij.get("unit", "")).strip().lower()
        scale = _UNIT_TO_UM.get(unit)
        resunit = page.tags.get("ResolutionUnit")
        resunit = int(resunit.value) if resunit is not None else 1
        if scale is None and not ij:
            scale = {3: 1e4, 2: 25400.0}.get(resunit)  # centimetre, inch
        if scale is None:
            return meta
        try:
            xr, yr = page.tags["XResolution"].value, page.tags["YResolution"].value
            vx, vy = xr[1] / xr[0] * scale, yr[1] / yr[0] * scale
        except (KeyError, ZeroDivisionError, TypeError):
            return meta
        vz = float(ij["spacing"]) * scale if "spacing" in ij else vx
        meta["voxel_size_um"] = [vz, vy, vx]
        return meta

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        if self._contiguous:
            return super()._read_block(z, y, x, out)
        out = np.empty((z.stop - z.start, y.stop - y.start, x.stop - x.start), self._file_dtype)
        with _TiffLogErrors() as errors:
            for i, k in enumerate(range(z.start, z.stop)):
                out[i] = self._tif.asarray(key=k, series=0)[y, x]
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


class TiffDirSource(VolumeSource):
    format = "tiff-dir"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path)
        import tifffile

        self._files = sorted((p for p in path.iterdir()
                              if p.suffix.lower() in (".tif", ".tiff") and p.is_file()
                              and not p.name.startswith(".")), key=_natural_key)
        if not self._files:
            raise UnknownFormatError(f"folder '{path}' holds no .tif/.tiff slices",
                                     "point to a folder of 2D TIFF slices or to a volume file")
        try:
            with tifffile.TiffFile(self._files[0]) as tif:
                s = tif.series[0]
                plane, dtype = tuple(s.shape), np.dtype(s.dtype)
                meta = TiffSource._tiff_meta(tif, tif.pages.first)
        except Exception as exc:
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

        out = np.empty((z.stop - z.start, y.stop - y.start, x.stop - x.start), self.dtype)
        for i, f in enumerate(self._files[z]):
            try:
                img = tifffile.imread(f)
            except Exception as exc:
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


class Hdf5Source(VolumeSource):
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
                found: list[tuple[str, tuple]] = []
                self._f.visititems(lambda n, o: found.append(("/" + n, o.shape))
                                   if isinstance(o, h5py.Dataset) else None)
                dataset = _pick_dataset(found, path, "HDF5 file")
                self.dataset = dataset
            obj = self._f.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                found = []
                self._f.visititems(lambda n, o: found.append("/" + n)
                                   if isinstance(o, h5py.Dataset) else None)
                raise DatasetNotFoundError(
                    f"HDF5 file '{path}' has no dataset '{dataset}'",
                    f"use one of: {', '.join(found[:8]) or 'none (the file is empty)'}")
            self._ds = obj
            self.shape, self.dtype = tuple(obj.shape), np.dtype(obj.dtype).newbyteorder("=")
            self.voxel_size, self.origin, self.attrs = _from_meta(dict(obj.attrs))
            self._check(voxel_size)
        except BaseException:
            self.close()
            raise

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        if out is not None and out.flags.c_contiguous and out.dtype == self._ds.dtype:
            self._ds.read_direct(out, source_sel=np.s_[z, y, x])
            return out
        return self._ds[z, y, x]

    def close(self) -> None:
        f = getattr(self, "_f", None)
        if f is not None:
            f.close()
            self._f = None


class ZarrSource(VolumeSource):
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
        if isinstance(node, zarr.Group):
            if not dataset:
                found = [("/" + n, a.shape) for n, a in node.arrays()]
                dataset = _pick_dataset(found, path, "Zarr store")
                self.dataset = dataset
            try:
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

    def blocks(self, slab_bytes: int | None = None) -> Iterator[np.ndarray]:
        from anodetwin.log import progress_bar

        lazy = isinstance(self._vol, LazyVolume)
        total = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        with progress_bar(self._label, total=total, enabled=not lazy) as advance:
            for block in self._vol.blocks(slab_bytes):
                yield block
                advance(block.nbytes)
