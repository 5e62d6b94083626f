"""Base classes of the volume readers; used by :mod:`anodetwin.io.formats` and the reader
modules of this package (``_tiff``, ``_hdf5``, ``_zarr``).

:class:`VolumeSource` holds what every reader knows after opening a file (shape, dtype,
voxel size and origin in um, attrs) and turns block reads into lazy, cropped and binned
views; :class:`ContiguousSource` reads C-ordered voxels at a byte offset with plain file reads
(the fast path of raw, npy and uncompressed TIFF files).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import (
    AnodetwinError,
    CorruptFileError,
    DatasetNotFoundError,
    MissingCodecError,
)
from anodetwin.io._calibration import Calibration, Triple
from anodetwin.io.volume import (
    LazyVolume,
    Volume,
    normalise_binning,
    normalise_roi,
    normalise_voxel_size,
    require_3d,
)
from anodetwin.log import get_logger

log = get_logger("io")


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
        self._origin_voxels = False
        self.origin: Triple = (0.0, 0.0, 0.0)  # um; voxels while voxel_size is None
        self.voxel_size_um: Triple | None = None
        self.attrs: dict = {}

    @property
    def voxel_size_um(self) -> Triple | None:
        """Voxel size (z, y, x) in um, or None if unknown (then :attr:`origin` is in voxels).
        Setting it while the origin is in voxels converts the origin to um."""
        return self._voxel_size_um

    @voxel_size_um.setter
    def voxel_size_um(self, value: Triple | None) -> None:
        """Set the voxel size; an origin still in voxels is converted to um.

        Parameters
        ----------
        value : tuple of 3 float or None
            Voxel size (z, y, x), um; None leaves it unknown.
        """
        self._voxel_size_um = value
        if value is not None and self._origin_voxels:
            self.origin = tuple(o * v for o, v in zip(self.origin, value,
                                                      strict=True))  # type: ignore[assignment]
            self._origin_voxels = False

    @property
    def name(self) -> str:
        return f"{self.path}:{self.dataset}" if self.dataset else str(self.path)

    @property
    def voxel_size_note(self) -> str | None:
        """What was assumed to get :attr:`voxel_size` (e.g. "z taken equal to x"), or what
        calibration metadata was found but ignored (then :attr:`voxel_size` may be None);
        None if every axis and unit was read from the file (or given by the caller)."""
        return self.attrs.get("voxel_size_note")

    def _set_calibration(self, cal: Calibration) -> None:
        """Take voxel size, origin and attrs from what the file says."""
        self.origin, self._origin_voxels = cal.origin, cal.origin_voxels
        self.voxel_size_um = cal.voxel_size_um  # converts an origin in voxels
        self.attrs = dict(cal.attrs)

    def _add_note(self, note: str | None) -> None:
        """Append ``note`` to :attr:`voxel_size_note`."""
        if note:
            old = self.attrs.get("voxel_size_note")
            self.attrs["voxel_size_note"] = f"{old}; {note}" if old else note

    def _check(self, voxel_size: Any) -> None:
        """Check the shape, apply a given voxel size, put the origin in um if the voxel size
        is known, and log what was assumed or ignored."""
        require_3d(self.shape, f"'{self.name}'")
        if voxel_size is not None:
            self.voxel_size_um = normalise_voxel_size(voxel_size, "voxel size")
            self.attrs.pop("voxel_size_note", None)
        if not self._origin_voxels and self.voxel_size_um is None and any(self.origin):
            log.warning("%s: origin %s um cannot be placed on the voxel grid without a voxel "
                        "size; voxel (0, 0, 0) is used (give the voxel size)", self.name,
                        self.origin)
            self.origin, self._origin_voxels = (0.0, 0.0, 0.0), True
        elif self.voxel_size_um is None:
            self._origin_voxels = True  # the origin is in voxels until a voxel size is set
        note = self.voxel_size_note
        if note and self.voxel_size_um is not None:
            log.warning("%s: voxel size (z, y, x) %s um was partly assumed: %s; give the "
                        "voxel size explicitly if this is wrong", self.name,
                        "x".join(f"{v:g}" for v in self.voxel_size_um), note)
        elif note:
            log.warning("%s: voxel size unknown: %s; give the voxel size explicitly",
                        self.name, note)
        if self.attrs.get("axes_note"):
            log.warning("%s: %s", self.name, self.attrs["axes_note"])

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:  # pragma: no cover
        """Voxels [z, y, x]; may fill and return ``out`` or return a new array."""
        raise NotImplementedError

    def read_block(self, z: slice, y: slice, x: slice,
                   out: np.ndarray | None = None) -> np.ndarray:
        """Read voxels [z, y, x] (contiguous slices) as a native-byte-order array.

        Parameters
        ----------
        z, y, x : slice
            Contiguous voxel ranges (explicit start and stop, step 1) along each axis.
        out : ndarray, optional
            Array of the block's shape and native dtype that receives the voxels.

        Returns
        -------
        ndarray, shape (z, y, x)
            ``out`` if given, else a new array of the file's type in native byte order.

        Raises
        ------
        MissingCodecError
            The file's compression needs a decoder that is not installed.
        CorruptFileError
            The file could not be read (truncated or damaged).
        """
        try:
            res = self._read_block(z, y, x, out)
        except AnodetwinError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if is_codec_error(exc):
                raise codec_error(self.name, exc) from exc
            raise CorruptFileError(f"'{self.name}' could not be read ({short(exc)})",
                                   "the file is truncated or damaged; re-export it") from exc
        if out is not None:
            if res is not out:
                out[...] = res  # converts the byte order too
            return out
        if not res.dtype.isnative:
            res = res.astype(res.dtype.newbyteorder("="))
        return res

    def lazy(self, roi: Any = None, binning: Any = 1, progress: bool = True) -> LazyVolume:
        """A view of a region, binned, read slab by slab when used.

        Parameters
        ----------
        roi : str, tuple of 3 slices or None, optional
            Region in voxels, ``"z0:z1,y0:y1,x0:x1"`` (end exclusive) or 3 slices/pairs;
            None is the whole volume.
        binning : int or tuple of 3 int, optional
            Mean-binning factor, one or per axis (z, y, x).
        progress : bool, optional
            Show a progress bar for large reads.

        Returns
        -------
        LazyVolume
            The view, with voxel size and origin (um) of the binned grid.

        Raises
        ------
        ParameterError
            The ROI or the binning is invalid (see :func:`anodetwin.io.volume.normalise_roi`).
        """
        r = normalise_roi(roi, self.shape)
        b = normalise_binning(binning)
        attrs = {**self.attrs, **self._region_notes(r)}
        return LazyVolume(self.read_block, r, b, self.dtype, self.voxel_size_um, self.origin,
                          attrs, name=self.name, progress=progress)

    def _region_notes(self, roi: tuple[slice, slice, slice]) -> dict:
        """Notes on region ``roi`` (e.g. Zarr chunks read as the fill value) for the attrs
        of a view; none by default."""
        return {}

    def read(self, roi: Any = None, binning: Any = 1, progress: bool = True) -> Volume:
        """Read region ``roi`` binned by ``binning`` into memory.

        Parameters
        ----------
        roi, binning, progress
            As for :meth:`lazy`.

        Returns
        -------
        Volume
            Voxels (z, y, x) with voxel size and origin in um.
        """
        return self.lazy(roi, binning, progress).read()

    def close(self) -> None:
        pass

    def __enter__(self) -> VolumeSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} shape={self.shape} dtype={self.dtype} "
                f"voxel_size_um={self.voxel_size_um}>")


def short(exc: BaseException) -> str:
    """One line (at most 160 characters) saying what ``exc`` is about, for a message.

    Parameters
    ----------
    exc : BaseException
        The exception to summarise (from a reader library, the file system or a
        decoder).

    Returns
    -------
    str
        Its message with whitespace (newlines too) collapsed to single spaces, or its type
        name when the message is empty.
    """
    return " ".join(str(exc).split())[:160] or type(exc).__name__


_CODEC = re.compile(r"<(COMPRESSION|PREDICTOR)\.(\w+)")


def is_codec_error(exc: BaseException) -> bool:
    """True if ``exc`` is tifffile saying that a codec is missing (not that data is bad).

    Parameters
    ----------
    exc : BaseException
        Exception raised while decoding.

    Returns
    -------
    bool
        Whether its message names ``imagecodecs`` or an unsupported compression/predictor.
    """
    msg = str(exc)
    return "imagecodecs" in msg or bool(
        _CODEC.search(msg) and re.search(r"requires|not supported|not implemented", msg))


def codec_error(name: str, exc: BaseException) -> MissingCodecError:
    """A :class:`MissingCodecError` naming the codec tifffile could not find.

    Parameters
    ----------
    name : str
        The file (or file:dataset) being read.
    exc : BaseException
        tifffile's exception (see :func:`is_codec_error`).

    Returns
    -------
    MissingCodecError
        The error to raise, with the fix (install imagecodecs or save uncompressed).
    """
    m = _CODEC.search(str(exc))
    codec = (f"the {m.group(2)} predictor" if m.group(1) == "PREDICTOR" else m.group(2)) \
        if m else "a codec"
    return MissingCodecError(
        f"'{name}' is compressed with {codec}, whose decoder is not installed "
        f"({short(RuntimeError(*exc.args[:1]) if isinstance(exc, KeyError) else exc)})",
        "install it (pip install imagecodecs) or save the file uncompressed")


def require_codecs(page: Any, name: str) -> None:
    """Check, before any data is read, that tifffile can decode a TIFF page.

    Parameters
    ----------
    page : tifffile.TiffPage
        Page whose compression and predictor are checked.
    name : str
        The file, named in the error.

    Raises
    ------
    MissingCodecError
        The decoder of the page's compression or predictor is not installed.
    """
    from tifffile import TIFF

    for value, table in ((page.compression, TIFF.DECOMPRESSORS),
                         (getattr(page, "predictor", 1), TIFF.UNPREDICTORS)):
        if int(value) == 1:
            continue
        try:
            table[int(value)]
        except KeyError as exc:
            raise codec_error(name, exc) from None


def read_contiguous(fh: Any, offset: int, dtype: np.dtype, shape: tuple[int, int, int],
                     z: slice, y: slice, x: slice, out: np.ndarray | None = None) -> np.ndarray:
    """Read [z, y, x] of a C-ordered array stored at ``offset`` with plain file reads.

    Whole planes go straight into the result in one read (then byte-swapped in place if the
    file's byte order, given by ``dtype``, is not the native one); otherwise only the rows
    y.start:y.stop of each plane are read, into one reused band buffer. No memory map, so the
    resident memory stays at the size of the result.

    Parameters
    ----------
    fh : file object
        Open binary file (seekable, with ``readinto``).
    offset : int
        Byte offset of voxel (0, 0, 0).
    dtype : numpy.dtype
        Voxel type with the file's byte order.
    shape : tuple of 3 int
        Stored shape (z, y, x), voxels.
    z, y, x : slice
        Block to read, explicit start and stop.
    out : ndarray, optional
        Native-order array of the block's shape to fill.

    Returns
    -------
    ndarray, shape (z, y, x)
        The block in native byte order (``out`` when given).

    Raises
    ------
    ValueError
        The file ends before the block (see :func:`read_into`).
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
        read_into(fh, out, f"planes {z.start}:{z.stop}")
        if out.dtype != dtype:  # same type, other byte order: swap the bytes in place
            out.byteswap(inplace=True)
        return out
    buf = np.empty((nrow, nx), dtype=dtype)
    for i in range(nz):
        fh.seek(offset + (z.start + i) * plane + y.start * row)
        read_into(fh, buf, f"plane {z.start + i}")
        out[i] = buf[:, x]
    return out


def read_into(fh: Any, buf: np.ndarray, what: str) -> None:
    """Fill ``buf`` from the current position of ``fh``.

    Parameters
    ----------
    fh : file object
        Open binary file.
    buf : ndarray
        C-contiguous array to fill, all its bytes.
    what : str
        What is read (e.g. ``"plane 3"``), named in the error.

    Raises
    ------
    ValueError
        The file ended before ``buf`` was full.
    """
    n = fh.readinto(memoryview(buf).cast("B"))
    if n != buf.nbytes:
        raise ValueError(f"file ends after {n} of {buf.nbytes} bytes of {what}")


class ContiguousSource(VolumeSource):
    """Base of sources whose voxels are one C-ordered block at a byte offset."""

    _offset = 0
    _file_dtype = np.dtype("uint8")

    def _open_check_size(self) -> None:
        need = self._offset + int(np.prod(self.shape)) * self._file_dtype.itemsize
        have = self.path.stat().st_size
        if have < need:
            raise CorruptFileError(
                f"'{self.path}' is truncated: {have} bytes, but shape {self.shape} of "
                f"{self._file_dtype} needs {need}",
                "the file is incomplete; copy or export it again")
        self._fh = open(self.path, "rb")
        self._note_holes(need)

    def _note_holes(self, need: int) -> None:
        """Warn about (and note) holes of a sparse file within the voxel data."""
        holes = file_holes(self._fh.fileno(), self._offset, need)
        if holes:
            plane = int(np.prod(self.shape[1:])) * self._file_dtype.itemsize
            zs = sorted({(a - self._offset) // plane for a, _ in holes}
                        | {(b - 1 - self._offset) // plane for _, b in holes})
            note = (f"{sum(b - a for a, b in holes)} bytes of the voxel data (planes "
                    f"{zs[0]}..{zs[-1]}) are holes of a sparse file, never written: read as "
                    "zeros (a sparse copy of real zeros looks the same; check the export)")
            log.warning("%s: %s", self.name, note)
            self.attrs["missing_data_note"] = note

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        return read_contiguous(self._fh, self._offset, self._file_dtype, self.shape, z, y, x,
                               out)

    def close(self) -> None:
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()
            self._fh = None


def file_holes(fd: int, start: int, stop: int) -> list[tuple[int, int]]:
    """Holes of a sparse file (never written, read back as zeros) within a byte range.

    Found with ``SEEK_HOLE``/``SEEK_DATA``; the file position is reset to 0 afterwards.

    Parameters
    ----------
    fd : int
        Descriptor of the open file.
    start, stop : int
        Byte range [start, stop) to search.

    Returns
    -------
    list of tuple of (int, int)
        Byte ranges [a, b) that are holes; empty where the file system or platform cannot
        tell (and at once when every block is allocated).
    """
    import os

    st = os.fstat(fd)
    if not hasattr(os, "SEEK_HOLE") or getattr(st, "st_blocks", None) is None \
            or st.st_blocks * 512 >= st.st_size:
        return []
    holes, pos = [], start
    try:
        while pos < stop:
            a = os.lseek(fd, pos, os.SEEK_HOLE)
            if a >= stop:
                break
            try:
                b = os.lseek(fd, a, os.SEEK_DATA)
            except OSError:  # a hole up to the end of the file
                b = st.st_size
            holes.append((a, min(b, stop)))
            pos = b
    except OSError:
        return []
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    return holes


def pick_dataset(names: list[tuple[str, tuple]], container: Path, kind: str) -> str:
    """The one 3D dataset of a container (also with singleton leading axes, ``(1, z, y, x)``).

    Parameters
    ----------
    names : list of tuple of (str, tuple)
        (dataset path, shape) of every dataset in the container.
    container : Path
        The HDF5 file or Zarr store, named in the error.
    kind : str
        Kind of container (e.g. ``"HDF5 file"``), named in the error.

    Returns
    -------
    str
        Path of the dataset.

    Raises
    ------
    DatasetNotFoundError
        None or several datasets are 3D; the message lists some and says how to name one.
    """
    three = [n for n, s in names if len(s) >= 3 and all(k == 1 for k in s[:-3])]
    if len(three) == 1:
        return three[0]
    listing = ", ".join(n for n, _ in names[:8]) or "none"
    raise DatasetNotFoundError(
        f"{kind} '{container}' holds {len(three)} 3D datasets (found: {listing})",
        f"name one as {container}:/path/to/dataset")

