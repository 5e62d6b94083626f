"""TIFF readers: multi-page files (:class:`TiffSource`) and folders of 2D slices
(:class:`TiffDirSource`); used by :mod:`anodetwin.io.formats`.

Uncompressed contiguous series are read with plain file reads (the fast path); any other
layout (compressed, tiled, volumetric tiles, pages scattered through the file) through
tifffile's Zarr view of the series (``TiffFile.aszarr``), which decodes only the tiles or
strips of the requested region.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import (
    AmbiguousInputError,
    AnodetwinError,
    CorruptFileError,
    DatasetNotFoundError,
    DimensionError,
    MissingDataError,
    UnknownFormatError,
)
from anodetwin.io._calibration import (
    from_meta,
    imagej_calibration,
    ome_tiff_calibration,
    resolution_calibration,
)
from anodetwin.io._source import (
    ContiguousSource,
    VolumeSource,
    codec_error,
    is_codec_error,
    log,
    require_codecs,
    short,
)
from anodetwin.io.volume import require_3d

#: Private TIFF tag holding anodetwin's JSON metadata (voxel size, origin, provenance).
TIFF_METADATA_TAG = 65421


class TiffLogErrors(logging.Handler):
    """Collect the errors tifffile logs (it logs, rather than raises, on broken page chains
    and truncated data) and keep them from the user's console."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message of a record tifffile logged.

        Parameters
        ----------
        record : logging.LogRecord
            An ERROR (or worse) record of the ``tifffile`` logger.
        """
        self.messages.append(record.getMessage())

    def __enter__(self) -> TiffLogErrors:
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
        """Refuse the file if tifffile logged an error while it was opened.

        Parameters
        ----------
        path : Path
            The TIFF file, named in the error.

        Raises
        ------
        CorruptFileError
            At least one error was collected; the message quotes the first.
        """
        if self.messages:
            raise CorruptFileError(f"'{path}' is a damaged TIFF "
                                   f"({short(Exception(self.messages[0]))})",
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
    log.info("%s holds %d series (%s); reading series %d, the largest 3D one (choose with "
             "%s:series=N)", path, len(series), _series_listing(tif), best, path)
    return best, series[best]


_NOT_Z = {"T": "time frames", "C": "channels"}


def _refuse_frames(series: Any, path: Path) -> None:
    """Refuse a 3D series whose first axis is not depth: e.g. an ImageJ stack saved as time
    frames (axes ``TYX``, a common Fiji slip) is not a z stack until the user says so."""
    axes = str(getattr(series, "axes", "") or "")
    if len(series.shape) == 3 and axes[:1] in _NOT_Z:
        n = int(series.shape[0])
        raise DimensionError(
            f"TIFF '{path}' is a stack of {n} {_NOT_Z[axes[0]]} (axes {axes}), not of z slices",
            f"if they are z slices, make them so (Fiji: Image > Properties, Slices = {n}, "
            "Frames = 1, Channels = 1; tifffile: imwrite(..., imagej=True, "
            "metadata={'axes': 'ZYX'})) and save again")


class TiffSource(ContiguousSource):
    """A multi-page TIFF (or ImageJ hyperstack); ``dataset`` ``"series=N"`` picks a series.

    Uncompressed contiguous series are read with plain file reads in the file's byte order;
    others (compressed, tiled, volumetric tiles) through tifffile's Zarr view of the series.
    """

    format = "tiff"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path, dataset)
        try:
            with TiffLogErrors() as errors:
                self._open_tiff(path, dataset)
            errors.raise_if_any(path)
            self._check(voxel_size)
            if self._contiguous:
                self._open_check_size()
            else:
                require_codecs(self._tif.series[self._series].keyframe, self.name)
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
            _refuse_frames(series, path)
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            meta = tiff_meta(self._tif, series.keyframe, shape[0] if len(shape) == 3 else 1,
                             index)
            offset = series.dataoffset
            stored = meta.get("shape")
            if (isinstance(stored, list) and len(stored) == 3
                    and int(np.prod(stored)) == int(np.prod(shape))):
                shape = tuple(int(n) for n in stored)  # keeps z = 1 volumes 3D
        except AnodetwinError:
            raise
        except Exception as exc:  # tifffile raises many types on damaged files
            if is_codec_error(exc):
                raise codec_error(str(path), exc) from exc
            raise CorruptFileError(f"'{path}' is not a readable TIFF ({short(exc)})",
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
        self._set_calibration(from_meta(meta))
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

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        if self._contiguous:
            return super()._read_block(z, y, x, out)
        with TiffLogErrors() as errors:
            block = self._zarr_view()[self._zarr_selection(z, y, x)]
        errors.raise_if_any(self.path)
        return np.asarray(block).reshape(z.stop - z.start, y.stop - y.start, x.stop - x.start)

    def _zarr_view(self) -> Any:
        """The Zarr array over the series (opened on first use); it decodes only the tiles
        or strips a read touches."""
        if getattr(self, "_zarr", None) is None:
            import zarr

            self._zstore = self._tif.aszarr(series=self._series, level=0)
            self._zarr = zarr.open_array(self._zstore, mode="r")
        return self._zarr

    def _zarr_selection(self, z: slice, y: slice, x: slice) -> tuple:
        """Index of the series' array (whose shape may lack the z = 1 axis) for a block."""
        ndim = len(self._zarr_view().shape)
        if ndim == 3:
            return (z, y, x)
        if ndim == 2:  # a single page: z is 0:1
            return (y, x)
        raise DimensionError(f"'{self.name}' has a series of shape {self._zarr.shape}",
                             "save the volume as one (z, y, x) multi-page series")

    def close(self) -> None:
        super().close()
        store = getattr(self, "_zstore", None)
        if store is not None:
            store.close()
            self._zstore = self._zarr = None
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
            self._tif = None


def _json_tag(page: Any) -> dict | None:
    """anodetwin's JSON metadata from TIFF tag :data:`TIFF_METADATA_TAG`, or None."""
    tag = page.tags.get(TIFF_METADATA_TAG)
    if tag is None:
        return None
    try:
        meta = json.loads(tag.value)
    except (TypeError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def tiff_meta(tif: Any, page: Any, nz: int = 1, series: int = 0) -> dict:
    """Metadata of TIFF series ``series`` (``nz`` pages, first page ``page``).

    In order of precedence: anodetwin's JSON tag; OME-XML ``PhysicalSizeX/Y/Z``; ImageJ's
    description; the resolution tags. Voxel size and origin are returned as ``voxel_size_um``
    / ``origin_um`` with a ``voxel_size_note`` saying what was assumed or ignored.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file.
    page : tifffile.TiffPage
        First page of the series.
    nz : int, optional
        Number of z slices (pages) of the series.
    series : int, optional
        Index of the series (selects the OME ``Image``).

    Returns
    -------
    dict
        anodetwin's own metadata as stored, or ``voxel_size_um`` and ``origin_um`` (lists
        (z, y, x), um) and ``voxel_size_note`` where found; empty if nothing was found.
    """
    meta = _json_tag(page)
    if meta is not None:
        return meta
    origin = (0.0, 0.0, 0.0)
    vs, notes = None, []
    if tif.is_ome and tif.ome_metadata:
        vs, notes = ome_tiff_calibration(tif.ome_metadata, series)
    ij = tif.imagej_metadata
    if vs is None and ij:
        vs, origin, more = imagej_calibration(ij, page, nz)
        notes += more
    if vs is None and not ij:
        vs, more = resolution_calibration(page)
        notes += more
    out: dict[str, Any] = {}
    if vs is not None:
        out = {"voxel_size_um": list(vs), "origin_um": list(origin)}
    if notes:
        out["voxel_size_note"] = "; ".join(notes)
    return out


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


def slice_files(folder: Path) -> tuple[list[Path], int]:
    """The slices of a TIFF slice folder in z order, checked to be one gap-free series, and
    the step of their numbering (1 if unnumbered).

    Slices are grouped by name pattern (the text around the last number in the name, e.g.
    ``recon_####.tif``). A folder mixing patterns, two slices with one number, or a gap in
    the numbering (beyond a constant step) is refused: missing slices are never zeros.
    Folders of unnumbered slices are taken in natural sort order.

    Parameters
    ----------
    folder : Path
        Folder of 2D ``.tif``/``.tiff`` slices (hidden files are ignored).

    Returns
    -------
    tuple of (list of Path, int)
        The slice files, z = 0 first, and the numbering step.

    Raises
    ------
    UnknownFormatError
        The folder holds no TIFF slices.
    AmbiguousInputError
        It mixes name patterns or holds two slices with one number.
    MissingDataError
        The numbering has a gap; the message names the first missing file.
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
        return sorted(files, key=_natural_key), 1
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
    return [p for _, p in items], step


class TiffDirSource(VolumeSource):
    """A folder of 2D TIFF slices, one per z, numbered without gaps (see :func:`slice_files`).

    The geometry and dtype come from the first slice; every slice read is checked to have
    its shape and dtype (never cast). A numbering step above 1 is accepted but noted.
    """

    format = "tiff-dir"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path)
        import tifffile

        self._files, step = slice_files(path)
        try:
            with tifffile.TiffFile(self._files[0]) as tif:
                s = tif.series[0]
                plane, dtype = tuple(s.shape), np.dtype(s.dtype)
                meta = tiff_meta(tif, s.keyframe, 1)
                require_codecs(s.keyframe, str(self._files[0]))
        except AnodetwinError:
            raise
        except Exception as exc:
            if is_codec_error(exc):
                raise codec_error(str(self._files[0]), exc) from exc
            raise CorruptFileError(f"slice '{self._files[0]}' is not a readable TIFF "
                                   f"({short(exc)})", "re-export the slice") from exc
        if len(plane) != 2:
            require_3d((len(self._files),) + plane, f"folder '{path}'")
        self.shape = (len(self._files),) + plane  # type: ignore[assignment]
        self.dtype = dtype.newbyteorder("=")
        self._set_calibration(from_meta(meta))
        if step > 1:
            note = (f"slices numbered with a step of {step} ('{self._files[0].name}', "
                    f"'{self._files[1].name}', ...): if slices were left out, the z spacing "
                    f"is {step} slice spacings")
            if voxel_size is not None:  # else logged with the note by _check
                log.warning("%s: %s", path, note)
            self._add_note(note)
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
                if is_codec_error(exc):
                    raise codec_error(str(f), exc) from exc
                raise CorruptFileError(f"slice '{f}' is not a readable TIFF ({short(exc)})",
                                       "re-export the slice") from exc
            if img.shape != self.shape[1:]:
                raise CorruptFileError(f"slice '{f}' has shape {img.shape}, the first slice "
                                       f"{self.shape[1:]}", "all slices must have one shape")
            if img.dtype.newbyteorder("=") != self.dtype:
                raise CorruptFileError(
                    f"slice '{f}' (z {z.start + i}) holds {img.dtype.newbyteorder('=')}, the "
                    f"first slice '{self._files[0].name}' {self.dtype}",
                    "all slices must have one dtype; convert the odd slices (values are "
                    "never cast, which would wrap or truncate them)")
            out[i] = img[y, x]
        return out


