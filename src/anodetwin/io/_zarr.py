"""Zarr reader (:class:`ZarrSource`): v2, v3 and OME-Zarr arrays; used by
:mod:`anodetwin.io.formats`.

Zarr cannot tell a chunk that was lost from one left out because it was all fill value
(zarr 3 does not write such chunks by default). anodetwin's writer stores every chunk and
says so in the attribute :data:`ALL_CHUNKS_WRITTEN`; in such a store a missing chunk is a
:class:`~anodetwin.errors.MissingDataError`. In other stores the chunks missing in the
region read are counted, logged and noted (``missing_chunks_note``): they are read as the
fill value. With sharding, whole shards are counted (chunks missing inside a shard are not).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import (
    CorruptFileError,
    DatasetNotFoundError,
    InputNotFoundError,
    MissingDataError,
)
from anodetwin.io._axes import AxisMap, axis_map, axis_names
from anodetwin.io._calibration import Calibration, from_meta, multiscales, ome_calibration, \
    ome_entry
from anodetwin.io._source import VolumeSource, log, pick_dataset, short

#: Attribute that anodetwin's Zarr writer sets: every chunk was stored, fill-only ones too.
ALL_CHUNKS_WRITTEN = "all_chunks_written"


def ome_default(attrs: dict) -> str | None:
    """Path of the full-resolution array of the first OME-Zarr multiscale image.

    Parameters
    ----------
    attrs : dict
        Attributes of the store's root group (OME-Zarr 0.4 or 0.5 layout).

    Returns
    -------
    str or None
        ``"/<path>"`` of the first dataset of the first multiscale; None if there is none.
    """
    for ms in multiscales(attrs):
        datasets = ms.get("datasets") or []
        if datasets and isinstance(datasets[0], dict) and "path" in datasets[0]:
            return "/" + str(datasets[0]["path"]).strip("/")
    return None


def _open_node(path: Path, dataset: str | None) -> tuple[Any, str | None, dict]:
    """(array, its dataset path, attributes of its parent group) of a Zarr store."""
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:
        raise CorruptFileError(f"'{path}' is not a readable Zarr store ({short(exc)})",
                               "write it again") from exc
    if not isinstance(node, zarr.Group):
        if dataset and dataset.strip("/"):
            raise DatasetNotFoundError(f"Zarr store '{path}' is a single array, it has no "
                                       f"'{dataset}'", f"use '{path}' alone")
        return node, dataset, {}
    if not dataset:
        found = [("/" + n, a.shape) for n, a in node.arrays()]
        dataset = ome_default(dict(node.attrs)) or pick_dataset(found, path, "Zarr store")
    parent = dataset.strip("/").rpartition("/")[0]
    try:
        group_attrs = dict((node[parent] if parent else node).attrs)
        arr = node[dataset.strip("/")]
    except KeyError:
        names = ", ".join("/" + n for n, _ in node.arrays()) or "none"
        raise DatasetNotFoundError(f"Zarr store '{path}' has no array '{dataset}'",
                                   f"use one of: {names}") from None
    if isinstance(arr, zarr.Group):
        raise DatasetNotFoundError(f"'{path}:{dataset}' is a group, not an array",
                                   "name an array inside it")
    return arr, dataset, group_attrs


def _axis_names(arr: Any, ome: tuple[dict, dict] | None) -> tuple[list[str] | None, str]:
    """Axis names of a Zarr array and where they come from: v3 ``dimension_names``, the
    OME-Zarr multiscale's ``axes``, xarray's ``_ARRAY_DIMENSIONS``, an ``axes`` attribute."""
    names = getattr(arr.metadata, "dimension_names", None)
    if names and any(names):
        return axis_names(list(names), arr.ndim), "Zarr dimension_names"
    if ome is not None and ome[0].get("axes"):
        return axis_names(list(ome[0]["axes"]), arr.ndim), "OME-Zarr axes"
    attrs = dict(arr.attrs)
    if "_ARRAY_DIMENSIONS" in attrs:
        return axis_names(attrs["_ARRAY_DIMENSIONS"], arr.ndim), "_ARRAY_DIMENSIONS"
    if "axes" in attrs:
        return axis_names(attrs["axes"], arr.ndim), "'axes' attribute"
    return None, ""


def stored_chunks(arr: Any, base: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """Which chunks (shards, if sharded) of a Zarr array are stored on disk.

    Parameters
    ----------
    arr : zarr.Array
        The array, opened from a local store.
    base : Path
        Folder of the array in the store, under which its chunk files lie.

    Returns
    -------
    present : ndarray of bool
        One entry per chunk, shape of the chunk grid (stored axis order).
    chunks : tuple of int
        Chunk (or shard) shape, voxels, stored axis order.
    """
    chunks = tuple(getattr(arr, "shards", None) or arr.chunks)
    grid = tuple(-(-n // c) for n, c in zip(arr.shape, chunks, strict=True))
    files: set[str] = set()
    for root, _, names in os.walk(base):
        rel = os.path.relpath(root, base).replace(os.sep, "/")
        files.update(n if rel == "." else f"{rel}/{n}" for n in names)
    present = np.zeros(grid, dtype=bool)
    for idx in np.ndindex(*grid):
        present[idx] = arr.metadata.encode_chunk_key(idx) in files
    return present, chunks


class ZarrSource(VolumeSource):
    """An array of a Zarr store; in an OME-Zarr image the full-resolution one by default,
    with the voxel size and origin of its multiscale metadata. Axis names are followed when
    they are a permutation of z, y, x; singleton time/channel axes are dropped."""

    format = "zarr"

    def __init__(self, path: Path, dataset: str | None = None, voxel_size: Any = None):
        super().__init__(path, dataset)
        if not path.exists():
            raise InputNotFoundError(path, "Zarr store")
        arr, self.dataset, group_attrs = _open_node(path, dataset)
        name = (self.dataset or "").strip("/").rpartition("/")[2]
        ome = ome_entry(group_attrs, name) if group_attrs else None
        names, where = _axis_names(arr, ome)
        self._arr = arr
        self._axes: AxisMap | None = axis_map(arr.shape, names, self.name, where)
        self.shape = self._axes.shape if self._axes else tuple(arr.shape)  # type: ignore
        self.dtype = np.dtype(arr.dtype).newbyteorder("=")
        self._set_calibration(self._calibration(group_attrs, name))
        if self._axes is not None and self._axes.note:
            self.attrs["axes_note"] = self._axes.note
        self._check(voxel_size)
        self._present, self._chunk_shape = stored_chunks(arr, path / arr.path)
        if self._present.all():
            self._present = None
        elif arr.attrs.get(ALL_CHUNKS_WRITTEN):
            raise self._missing_error()

    def _calibration(self, group_attrs: dict, name: str) -> Calibration:
        """From the array's attributes, else from the OME-Zarr metadata of its group."""
        amap = self._axes
        cal = from_meta(dict(self._arr.attrs),
                        order=amap if amap is not None and not amap.identity else None)
        if cal.voxel_size_um is not None or not group_attrs or amap is None:
            return cal
        vs, origin, notes = ome_calibration(group_attrs, name, amap)
        old = cal.attrs.get("voxel_size_note")
        attrs = {k: v for k, v in cal.attrs.items() if k != "voxel_size_note"}
        note = "; ".join(([old] if old else []) + notes)
        if note:
            attrs["voxel_size_note"] = note
        if vs is None:
            return Calibration(None, cal.origin, cal.origin_voxels, attrs)
        return Calibration(vs, origin, False, attrs)

    def _z_range(self, index: int) -> tuple[int, int]:
        """z range of chunk row ``index`` along the stored axis that is z."""
        zk = self._axes.take.index(0) if self._axes is not None else 0
        cz = self._chunk_shape[zk]
        return index * cz, min(self.shape[0], (index + 1) * cz)

    def _missing_error(self) -> MissingDataError:
        """The error for a store written with every chunk that now lacks some."""
        assert self._present is not None
        missing = np.argwhere(~self._present)
        first = tuple(int(i) for i in missing[0])
        zk = self._axes.take.index(0) if self._axes is not None else 0
        z0, z1 = self._z_range(first[zk])
        key = self._arr.metadata.encode_chunk_key(first)
        return MissingDataError(
            f"'{self.name}' lacks {len(missing)} of {self._present.size} chunks although it "
            f"was written with every chunk (the first: '{key}', z {z0}:{z1})",
            "the store is incomplete (interrupted copy?); copy or write it again (missing data "
            "is never read as the fill value)")

    def _region_notes(self, roi: tuple[slice, slice, slice]) -> dict:
        """How many chunks of ``roi`` are not stored (read as the fill value), logged."""
        if self._present is None:
            return {}
        take = self._axes.take if self._axes is not None else (0, 1, 2)
        box = tuple(slice(roi[t].start // c, -(-roi[t].stop // c)) if t is not None
                    else slice(0, 1) for t, c in zip(take, self._chunk_shape, strict=True))
        gone = ~self._present[box]
        if not gone.any():
            return {}
        zk = take.index(0)
        rows = np.nonzero(gone.any(axis=tuple(k for k in range(gone.ndim) if k != zk)))[0]
        z0 = max(roi[0].start, self._z_range(int(rows[0]) + box[zk].start)[0])
        z1 = min(roi[0].stop, self._z_range(int(rows[-1]) + box[zk].start)[1])
        note = (f"{int(gone.sum())} of {gone.size} Zarr chunks of the region read (within "
                f"z {z0}:{z1}) are not stored and were read as the fill value "
                f"{self._arr.fill_value}: Zarr leaves out chunks that are all fill value, so "
                "they may be empty or lost")
        log.warning("%s: %s", self.name, note)
        return {"missing_chunks_note": note}

    def _read_block(self, z: slice, y: slice, x: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        if self._axes is None:
            return np.asarray(self._arr[z, y, x])
        return self._axes.to_zyx(np.asarray(self._arr[self._axes.selection(z, y, x)]))
