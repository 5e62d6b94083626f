"""HDF5 reader (:class:`Hdf5Source`): plain, chunked, virtual (VDS) and externally linked
datasets; used by :mod:`anodetwin.io.formats`.

Every source file of a virtual dataset and every external link target is checked to be
there, and chunks never written are refused (HDF5 would return the fill value). Axis names
(dimension labels, an ``axes`` attribute, NeXus ``@axes``) are followed when they are a
permutation of z, y, x; singleton leading axes are dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import (
    CorruptFileError,
    DatasetNotFoundError,
    MissingDataError,
)
from anodetwin.io._axes import AxisMap, axis_map, axis_names
from anodetwin.io._calibration import Fields, from_meta, text
from anodetwin.io._source import VolumeSource, log, pick_dataset, short


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
        if isinstance(lnk, h5py.SoftLink) and f.get(name) is None:
            broken.append(f"/{name} -> {lnk.path} (no such object)")
        if not isinstance(lnk, h5py.ExternalLink):
            return
        if _h5_find(master, lnk.filename, "HDF5_EXT_PREFIX") is None:
            broken.append(f"/{name} -> {lnk.filename}")
        elif (obj := f.get(name)) is None:
            broken.append(f"/{name} -> {lnk.filename}:{lnk.path} (no such object)")
        elif isinstance(obj, h5py.Dataset):
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
                return f"the file '{path}', which cannot be opened ({short(exc)})"
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


def _check_allocated(ds: Any, name: str, axis0: str = "z") -> None:
    """Raise :class:`MissingDataError` if parts of ``ds`` were never written (chunks not
    allocated, e.g. after an interrupted export): HDF5 would return the fill value there.
    ``axis0`` names the first stored axis in the message."""
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
        f"{axis0} {k * ds.chunks[0]}:{min(ds.shape[0], (k + 1) * ds.chunks[0])})",
        "the file is incomplete (interrupted write?); write it again")


class _Neighbours(Fields):
    """The NeXus-style fields beside a dataset: small numeric datasets of its group such as
    ``x_pixel_size`` or ``voxel_size``, each with its own ``units`` attribute."""

    def __init__(self, ds: Any):
        super().__init__({})
        self.group = ds.parent

    def keys(self) -> list[str]:
        return list(self.group.keys())

    def get(self, key: str) -> tuple[Any, Any] | None:
        import h5py

        obj = self.group.get(key)
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "iufSO" and obj.size <= 16:
            return obj[()], obj.attrs.get("units", obj.attrs.get("unit"))
        return None


def _h5_axis_names(ds: Any) -> tuple[list[str] | None, str]:
    """Axis names of ``ds`` and where they come from: HDF5 dimension labels, else its
    ``axes`` attribute, else the NeXus ``@axes`` of its NXdata group (if ``ds`` is the
    group's ``@signal``)."""
    try:
        labels = [str(d.label) for d in ds.dims]
    except (RuntimeError, ValueError, TypeError):
        labels = []
    if any(labels):
        return axis_names(labels, ds.ndim), "HDF5 dimension labels"
    attrs = _h5_attrs(ds)
    if "axes" in attrs:
        return axis_names(attrs["axes"], ds.ndim), "'axes' attribute"
    group = _h5_attrs(ds.parent)
    if "axes" in group and text(group.get("signal")) == ds.name.rpartition("/")[2]:
        return axis_names(group["axes"], ds.ndim), "NeXus @axes"
    return None, ""


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
            raise CorruptFileError(f"'{path}' is not a readable HDF5 file ({short(exc)})",
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
            self._open_axes(obj)
            self._check(voxel_size)
            _check_virtual(obj, path, self.name)
            first_is_z = self._axes is None or self._axes.take[0] == 0
            _check_allocated(obj, self.name, "z" if first_is_z else "stored axis 0")
        except BaseException:
            self.close()
            raise

    def _open_axes(self, ds: Any) -> None:
        """Shape, dtype, axis order and calibration of dataset ``ds``."""
        names, where = _h5_axis_names(ds)
        self._axes: AxisMap | None = axis_map(ds.shape, names, self.name, where)
        self.shape = self._axes.shape if self._axes else tuple(ds.shape)  # type: ignore
        self.dtype = np.dtype(ds.dtype).newbyteorder("=")
        order = self._axes if self._axes is not None and not self._axes.identity else None
        self._set_calibration(from_meta(_h5_attrs(ds), _Neighbours(ds), order))
        if self._axes is not None and self._axes.note:
            self.attrs["axes_note"] = self._axes.note

    def _pick(self, path: Path) -> str:
        found, broken = _h5_datasets(self._f, path)
        if broken and not any(len(s) == 3 for _, s in found):
            raise MissingDataError(f"HDF5 file '{path}' holds no 3D dataset; its link(s) "
                                   f"{', '.join(broken[:4])} point to missing data",
                                   "copy the linked files next to it or fix the links")
        if broken:
            log.warning("%s: link(s) to missing data: %s", path, ", ".join(broken))
        return pick_dataset(found, path, "HDF5 file")

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        amap = self._axes
        sel = amap.selection(z, y, x) if amap is not None else (z, y, x)
        in_order = amap is None or amap.kept == [0, 1, 2]  # at most singleton axes dropped
        if in_order and out is not None and out.flags.c_contiguous and \
                out.dtype in (self._ds.dtype, self.dtype):
            self._ds.read_direct(out, source_sel=sel)  # HDF5 converts the byte order
            return out
        block = self._ds[sel]
        return block if amap is None else amap.to_zyx(block)

    def close(self) -> None:
        f = getattr(self, "_f", None)
        if f is not None:
            f.close()
            self._f = None


