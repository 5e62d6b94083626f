"""One tomogram to labels: preprocessing, phases, particles, interfaces, resolution, and the
labels file.

Labels file (HDF5, ``anodetwin-labels`` v1; same grid and voxel size as the input; every
volume dataset carries ``element_size_um`` so ``labels.h5:/phases`` opens as a volume)::

    /phases                   uint8 (z, y, x) phase codes (anodetwin.phases)
    /particles                int32 (z, y, x) particle ids (0 = none)
    /particle_table           one row per particle (anodetwin.segment.particles.PARTICLE_TABLE)
    /interfaces/collector_z   (y, x) collector interface per column (voxels, between slices)
    /interfaces/separator_z   (y, x) separator interface per column (NaN: undefined)
    attrs: format, format_version, voxel_size_um (z, y, x), method ("threshold" or
           "classifier"), collector_face, thresholds (JSON), resolution_fwhm_um (NaN if not
           estimated), alignment_shift_voxels (z, y, x), params (JSON), provenance (JSON)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import CorruptFileError, InputNotFoundError
from anodetwin.log import get_logger
from anodetwin.phases import PHASE

__all__ = ["Segmentation", "segment_volume", "segment_to_file", "write_labels",
           "read_labels", "open_labels", "interfaces_from_phases", "RESOLUTION_BOX"]

log = get_logger("segment")
FORMAT = "anodetwin-labels"


@dataclass
class Segmentation:
    """Phases, particles and their geometry for one tomogram (see the module notes).

    Attributes
    ----------
    phases : numpy.ndarray of uint8, shape (nz, ny, nx)
        Phase code of every voxel (:data:`anodetwin.phases.PHASE`).
    particles : numpy.ndarray of int32, shape (nz, ny, nx)
        Si particle ids (0 = none).
    table : numpy.ndarray
        One row per particle (:data:`anodetwin.segment.particles.PARTICLE_TABLE`).
    collector_z, separator_z : numpy.ndarray of float, shape (ny, nx)
        Collector and separator interface of each column (voxels along z, between slices;
        separator NaN where undefined).
    voxel_size_um : tuple of float
        (z, y, x) voxel size (um).
    method : str
        ``"threshold"`` or ``"classifier"``.
    collector_face : str or None
        ``"low"`` or ``"high"`` z face holding the foil, None without one.
    thresholds : dict
        Grey thresholds of the threshold route (empty for a classifier).
    resolution_fwhm_um : float
        Edge resolution (FWHM, um) at the Si surfaces; NaN if not estimated.
    alignment_shift : tuple of float
        (z, y, x) shift (voxels) that aligned the tomogram on its reference.
    params : dict
        Parameters of the run.
    origin_um : tuple of float or None
        Centre of the first voxel (z, y, x; um); None if not recorded.
    """

    phases: np.ndarray
    particles: np.ndarray
    table: np.ndarray
    collector_z: np.ndarray
    separator_z: np.ndarray
    voxel_size_um: tuple
    method: str = "threshold"
    collector_face: str | None = None
    thresholds: dict = field(default_factory=dict)
    resolution_fwhm_um: float = float("nan")
    alignment_shift: tuple = (0.0, 0.0, 0.0)
    params: dict = field(default_factory=dict)
    origin_um: tuple | None = None  # first voxel centre (z, y, x); None: not recorded


def interfaces_from_phases(phases: Any, window: int | tuple, *, slab: int | None = None,
                           memory_limit: Any = None) -> tuple[str | None, np.ndarray, np.ndarray]:
    """Collector face and interfaces per column from phase codes.

    The collector interface is the top of the copper (last copper voxel + 0.5 from the low
    face), the separator interface the Si envelope over a lateral window
    (:func:`anodetwin.segment.phases.electrode_surface`). A NumPy array is read whole; a
    file's dataset (or any array given ``slab`` or ``memory_limit``) is read ``slab``
    slices at a time, reducing each slab to per-column maps (ny, nx), with the same result.

    Parameters
    ----------
    phases : numpy.ndarray or array-like of uint8, shape (nz, ny, nx)
        Phase codes (an array, an HDF5/Zarr dataset).
    window : int or (int, int)
        Lateral window of the envelope (voxels; one count or (y, x) counts).
    slab : int, optional
        Slices read at a time; default: as many as fit a quarter of ``memory_limit``.
    memory_limit : str or int, optional
        Memory ceiling of the slab route (default ``"4GB"`` there).

    Returns
    -------
    face : str or None
        ``"low"`` or ``"high"`` face of the foil, None without one.
    collector_z, separator_z : numpy.ndarray of float, shape (ny, nx)
        Interfaces (voxels along z); without a foil the collector is the low face (-0.5).
    """
    from anodetwin.segment.phases import electrode_surface

    if isinstance(phases, np.ndarray) and slab is None and memory_limit is None:
        cu = phases == PHASE["copper"]
        nz = phases.shape[0]
        frac = cu.mean(axis=(1, 2))
        face = "low" if frac[0] > 0.5 else ("high" if frac[-1] > 0.5 else None)
        if face == "low":
            col = np.where(cu.any(axis=0), nz - 1 - np.argmax(cu[::-1], axis=0) + 0.5, -0.5)
        elif face == "high":
            col = np.where(cu.any(axis=0), np.argmax(cu, axis=0) - 0.5, nz - 0.5)
        else:
            col = np.full(phases.shape[1:], -0.5)
        sep = electrode_surface(phases == PHASE["si"], window, face or "low")
        return face, np.asarray(col, float), sep
    return _interfaces_by_slabs(phases, window, _slab_for(phases.shape, slab, memory_limit))


def _slab_for(shape: tuple, slab: int | None, memory_limit: Any) -> int:
    """Slices per slab: ``slab``, or those that fit a quarter of the memory limit (phase
    codes and two masks, about 4 bytes per voxel)."""
    from anodetwin.io.blocks import DEFAULT_MEMORY_LIMIT, parse_memory

    if slab is not None:
        return max(1, int(slab))
    plane = 4 * int(shape[1]) * int(shape[2])
    return max(1, parse_memory(memory_limit or DEFAULT_MEMORY_LIMIT) // 4 // plane)


def _interfaces_by_slabs(phases: Any, window: int | tuple, slab: int
                         ) -> tuple[str | None, np.ndarray, np.ndarray]:
    """:func:`interfaces_from_phases` reading ``slab`` slices at a time.

    The foil's face from the copper share of the end slices; per column the highest (low
    face) or lowest (high face) copper slice, reduced over slabs; the separator: the
    envelope of each slab's Si shifted by the slab's first slice, reduced by the largest
    (low face) or smallest value (the lateral maximum filter commutes with the maximum over
    slabs, and a window without Si in a slab is NaN there).
    """
    from anodetwin.io.blocks import read_region
    from anodetwin.segment._blockpass import column_extreme
    from anodetwin.segment.phases import electrode_surface

    nz, ny, nx = (int(n) for n in phases.shape)
    first, last = (read_region(phases, (slice(z, z + 1), slice(0, ny), slice(0, nx)))
                   == PHASE["copper"] for z in (0, nz - 1))
    face = "low" if first.mean() > 0.5 else ("high" if last.mean() > 0.5 else None)
    low = face != "high"
    none = np.iinfo(np.int64).max
    cu_ext = np.full((ny, nx), -1 if low else none, np.int64)
    sep = np.full((ny, nx), np.nan)
    for z0 in range(0, nz, slab):
        ph = np.asarray(read_region(phases, (slice(z0, min(nz, z0 + slab)), slice(0, ny),
                                             slice(0, nx))))
        if face is not None:
            e = column_extreme(ph == PHASE["copper"], z0, face)
            cu_ext = np.maximum(cu_ext, e) if low else np.minimum(cu_ext, e)
        s = electrode_surface(ph == PHASE["si"], window, face or "low") + z0
        sep = np.fmax(sep, s) if low else np.fmin(sep, s)
    if face == "low":
        col = np.where(cu_ext >= 0, cu_ext + 0.5, -0.5)
    elif face == "high":
        col = np.where(cu_ext < nz, cu_ext - 0.5, nz - 0.5)
    else:
        col = np.full((ny, nx), -0.5)
    return face, np.asarray(col, float), sep


def _resolution(data: np.ndarray, si: np.ndarray, vs: tuple) -> float:
    """Edge resolution FWHM (um) at the Si surfaces, NaN (logged) when it cannot be
    estimated; ``vs`` is the (z, y, x) voxel size (um)."""
    from anodetwin.errors import AnodetwinError
    from anodetwin.segment.resolution import edge_resolution

    try:
        return edge_resolution(data, si, vs).fwhm_um
    except AnodetwinError as exc:  # too little surface: keep the rest of the result
        log.warning("no resolution estimate: %s", exc)
        return float("nan")


def segment_volume(volume: Any, model: Any = None, voxel_size_um: float | tuple | None = None,
                   denoise: str | None = None, normalise: str | None = None,
                   align_to: Any = None, h: float = 1.0, min_particle_voxels: int = 27,
                   surface_window_um: float = 10.0, resolution: bool = True,
                   progress: bool = True) -> Segmentation:
    """Segment one tomogram: phases (threshold default or a trained classifier), particle
    instances, interfaces, particle table and the edge resolution.

    Parameters
    ----------
    volume : array, Volume or path
        The tomogram.
    model : PixelClassifier or path, optional
        A classifier from ``anodetwin segment-train``; default: unsupervised thresholds.
    voxel_size_um : float or 3 float, optional
        (z, y, x) voxel size in um (one value: isotropic); every physical quantity and the
        labels file use the size of each axis. Default: the volume's (else 1). Given
        explicitly, it is also taken for ``align_to``: a difference of the two volumes' own
        voxel sizes or origins is then logged, not refused (else they must agree in voxel
        size, shape and origin).
    denoise, normalise : str, optional
        Preprocessing (:mod:`anodetwin.segment.preprocess`).
    align_to : array, Volume or path, optional
        Reference step (e.g. T0): the volume is first moved onto it by the translation of
        the copper foil.
    h, min_particle_voxels : float, int
        Watershed h-maxima height (edges of the finest voxel axis) and smallest particle
        kept (voxels).
    surface_window_um : float
        Lateral window of the electrode-top envelope.
    resolution : bool
        Estimate the edge resolution (FWHM) at the Si surfaces.
    progress : bool
        Show the classifier's progress bar.

    Returns
    -------
    Segmentation
        Phases, particles and their table, interfaces, resolution and the parameters.

    Raises
    ------
    InputNotFoundError, CorruptFileError
        For a volume, reference or model file that cannot be read.
    GridMismatchError
        If ``align_to`` lies on another grid (without an explicit ``voxel_size_um``).
    ParameterError
        For a constant volume, an unknown preprocessing or no copper foil to align on.
    """
    from anodetwin.segment.particles import label_particles, particle_table
    from anodetwin.segment.preprocess import denoise as denoise_volume
    from anodetwin.segment.preprocess import normalise as normalise_volume

    data, vs, origin, shift, notes = _prepared_input(volume, voxel_size_um, align_to)
    if denoise:
        data = denoise_volume(data, denoise)
    if normalise:
        data = normalise_volume(data, normalise)
    params = {"denoise": denoise, "normalise": normalise, "h": h,
              "min_particle_voxels": min_particle_voxels,
              "surface_window_um": surface_window_um,
              **({"input_notes": notes} if notes else {})}
    phases, face, col, sep, thresholds, method = _phases_and_interfaces(
        data, model, vs, surface_window_um, params, progress)
    particles = label_particles(phases == PHASE["si"], h=h, min_voxels=min_particle_voxels,
                                voxel_size_um=vs)
    table = particle_table(particles, vs, col)
    fwhm = _resolution(data, phases == PHASE["si"], vs) if resolution else float("nan")
    return Segmentation(phases, particles, table, col, sep, vs, method, face,
                        thresholds, fwhm, tuple(float(x) for x in shift), params,
                        tuple(float(o) for o in origin))


def _prepared_input(volume: Any, voxel_size_um: float | tuple | None, align_to: Any
                    ) -> tuple[np.ndarray, tuple, tuple, np.ndarray]:
    """The checked grey values, the (z, y, x) voxel size (um), the origin (um) and the shift
    (voxels) that moved them onto ``align_to`` (zeros without a reference); see
    :func:`segment_volume`."""
    from anodetwin.io import Volume, normalise_voxel_size, read_volume
    from anodetwin.io.agree import input_name, require_same_grid
    from anodetwin.segment.alignment import align, collector_shift
    from anodetwin.segment.phases import check_volume

    given = normalise_voxel_size(voxel_size_um, "voxel size")
    vol = (read_volume(volume, voxel_size=given) if isinstance(volume, (str, os.PathLike))
           else volume)
    if not isinstance(vol, Volume):
        vol = Volume(np.asarray(vol))
    vs = normalise_voxel_size(given or vol.voxel_size_um or 1.0, "voxel size")  # (z, y, x)
    data = check_volume(vol.data, input_name("volume", volume))
    shift = np.zeros(3)
    origin = vol.origin
    if align_to is not None:
        ref = (read_volume(align_to, voxel_size=given)
               if isinstance(align_to, (str, os.PathLike)) else align_to)
        require_same_grid(vol, ref, input_name("volume", volume),
                          input_name("--align-to reference", align_to), voxel_size=given)
        origin = getattr(ref, "origin", None) or origin  # the aligned data lies on ref's grid
        ref = np.asarray(getattr(ref, "data", ref))
        shift = collector_shift(ref, data, name=input_name("--align-to reference", align_to))
        log.info("shift on the copper foil: %s voxels", np.round(shift, 2))
        data = align(data, shift)
    return data, vs, origin, shift, input_notes(vol.attrs)


def input_notes(attrs: Any) -> dict:
    """The notes of :data:`anodetwin.io.formats.SOURCE_NOTES` among a volume's attributes
    (the labels made from it keep them)."""
    from anodetwin.io.formats import SOURCE_NOTES

    return {k: str(attrs[k]) for k in SOURCE_NOTES if (attrs or {}).get(k)}


def _phases_and_interfaces(data: np.ndarray, model: Any, vs: tuple, surface_window_um: float,
                           params: dict, progress: bool) -> tuple:
    """Phase codes, collector face, collector and separator interfaces (voxels), thresholds
    and method name, by thresholds (``model`` None) or by a classifier; the parameters of
    the route are added to ``params``."""
    from anodetwin.segment.phases import lateral_window, segment_phases

    if model is None:
        ps = segment_phases(data, voxel_size_um=vs, surface_window_um=surface_window_um)
        params["phases"] = ps.params
        return (ps.phases, ps.collector_face, ps.collector_z, ps.separator_z, ps.thresholds,
                "threshold")
    from anodetwin.segment.classifier import PixelClassifier, load_classifier

    clf = model if isinstance(model, PixelClassifier) else load_classifier(model)
    phases = clf.predict(data, progress=progress)
    face, col, sep = interfaces_from_phases(phases, lateral_window(surface_window_um, vs))
    params["model"] = clf.params
    return phases, face, col, sep, {}, "classifier"

def write_labels(path: str | os.PathLike, seg: Segmentation, provenance: dict | None = None,
                 tiff: bool = False) -> list[Path]:
    """Write a labels file (module notes) atomically, optionally with TIFF copies.

    Parameters
    ----------
    path : path
        The labels file (HDF5).
    seg : Segmentation
        What to write.
    provenance : dict, optional
        Provenance record (default: one made for ``segment`` with the run's parameters).
    tiff : bool
        Also write ``<stem>_phases.tif`` and ``<stem>_particles.tif`` beside it.

    Returns
    -------
    list of pathlib.Path
        The files written, the labels file first.
    """
    import h5py

    from anodetwin.io import Volume, atomic_path, make_provenance, write_volume

    p = Path(path)
    prov = provenance or make_provenance("segment", [], seg.params)
    with atomic_path(p) as tmp, h5py.File(tmp, "w") as f:
        for name, data in (("phases", seg.phases), ("particles", seg.particles)):
            _volume_dataset(f, name, seg, data=data)
        _write_header(f, seg, prov)
    out = [p]
    if tiff:
        for name, data in (("phases", seg.phases), ("particles", seg.particles)):
            q = p.with_name(f"{p.stem}_{name}.tif")
            write_volume(q, Volume(data, seg.voxel_size_um))
            out.append(q)
    return out


def _volume_dataset(f: Any, name: str, seg: Segmentation, data: Any = None,
                    shape: tuple | None = None, dtype: Any = None) -> Any:
    """A chunked, compressed volume dataset of the labels file with its geometry."""
    shape = data.shape if data is not None else shape
    chunks = tuple(min(64, n) for n in shape)
    d = f.create_dataset(name, shape=shape, dtype=dtype, data=data, chunks=chunks,
                         compression="lzf")
    d.attrs["element_size_um"] = np.asarray(seg.voxel_size_um, float)
    if seg.origin_um is not None:
        d.attrs["origin_um"] = np.asarray(seg.origin_um, float)
    return d


def _write_header(f: Any, seg: Segmentation, provenance: dict) -> None:
    """Attributes, particle table and interfaces of a labels file (module notes)."""
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = 1
    f.attrs["voxel_size_um"] = np.asarray(seg.voxel_size_um, float)
    f.attrs["method"] = seg.method
    f.attrs["collector_face"] = seg.collector_face or ""
    f.attrs["thresholds"] = json.dumps(seg.thresholds)
    f.attrs["resolution_fwhm_um"] = seg.resolution_fwhm_um
    f.attrs["alignment_shift_voxels"] = np.asarray(seg.alignment_shift, float)
    f.attrs["params"] = json.dumps(seg.params, default=str)
    f.attrs["provenance"] = json.dumps(provenance, default=str)
    for key, note in seg.params.get("input_notes", {}).items():
        f.attrs[key] = note  # e.g. chunks of the tomogram read as the fill value
    f.create_dataset("particle_table", data=seg.table)
    f.create_dataset("interfaces/collector_z", data=seg.collector_z)
    f.create_dataset("interfaces/separator_z", data=seg.separator_z)


#: Largest side (voxels) of the central box on which the block-wise route estimates the
#: edge resolution.
RESOLUTION_BOX = 192
#: Working memory of the resolution estimate per voxel of its box (bytes; measured 36 with
#: a median denoising).
RESOLUTION_BYTES_PER_VOXEL = 48


def segment_to_file(volume: Any, out: str | os.PathLike, *, model: Any = None,
                    voxel_size_um: float | tuple | None = None, denoise: str | None = None,
                    normalise: str | None = None, align_to: Any = None, h: float = 1.0,
                    min_particle_voxels: int = 27, surface_window_um: float = 10.0,
                    resolution: bool = True, memory_limit: Any = "4GB", workers: int = 1,
                    provenance: dict | None = None, progress: bool = True) -> Segmentation:
    """Segment a tomogram on disk block by block into a labels file, in bounded memory.

    The same phases, particles, table and interfaces as :func:`segment_volume`, read from
    the volume file and written into the labels file (atomically) block by block; peak
    memory follows ``memory_limit``, not the volume's size. The threshold route runs the
    block-wise passes of :func:`anodetwin.segment.phases.segment_phases`; a classifier
    classifies 3-D blocks read with its filters' halo (:meth:`PixelClassifier.predict`)
    and the interfaces are read from the phases slab by slab
    (:func:`interfaces_from_phases`); particles come from the block-wise
    :func:`anodetwin.segment.particles.label_particles`. A normalisation takes its
    statistics in passes over the blocks first
    (:class:`anodetwin.segment.preprocess.PreprocessedVolume`). The edge resolution is
    estimated on the central box of at most :data:`RESOLUTION_BOX` voxels per side (less
    where ``memory_limit`` is below 48 bytes per voxel of that box).

    Parameters
    ----------
    volume : path or LazyVolume
        The tomogram (any format :func:`anodetwin.io.open_volume` reads, or a view of one).
    out : path
        The labels file (HDF5, module notes).
    model : PixelClassifier or path, optional
        A classifier from ``anodetwin segment-train``; default: unsupervised thresholds.
    voxel_size_um, denoise, normalise, h, min_particle_voxels, surface_window_um, resolution
        As :func:`segment_volume`.
    align_to : path or LazyVolume, optional
        Reference step (e.g. T0): the volume is first moved onto it by the translation of
        the copper foil (:func:`anodetwin.segment.alignment.collector_shift`, read a few
        planes at a time; the move is applied block by block).
    memory_limit : str or int
        Memory ceiling of the image passes (e.g. ``"4GB"``).
    workers : int
        Blocks processed at once (threads).
    provenance : dict, optional
        Provenance record of the labels file.
    progress : bool
        Show the classifier's progress bar (when logging is configured).

    Returns
    -------
    Segmentation
        Table, interfaces and parameters; ``phases`` and ``particles`` are None (they are
        in the file).

    Raises
    ------
    InputNotFoundError, CorruptFileError
        For a volume, reference or model file that cannot be read.
    NonFiniteError, ParameterError
        For a volume with NaN or inf, an empty or constant one, an unknown preprocessing,
        a memory limit too small for a block, or no copper foil to align on.
    """
    import h5py

    from anodetwin.io import atomic_path, make_provenance, normalise_voxel_size
    from anodetwin.io.agree import input_name
    from anodetwin.segment.particles import label_particles, particle_table

    with _lazy(volume, voxel_size_um) as lazy, _lazy(align_to, voxel_size_um) as ref:
        notes = input_notes(getattr(lazy, "attrs", None))
        lazy, shift = _aligned(lazy, ref, volume, align_to, voxel_size_um, memory_limit,
                               workers)
        vs = normalise_voxel_size(lazy.voxel_size_um or 1.0, "voxel size")
        params = {"denoise": denoise, "normalise": normalise, "h": h,
                  "min_particle_voxels": min_particle_voxels,
                  "surface_window_um": surface_window_um, "memory_limit": str(memory_limit),
                  **({"input_notes": notes} if notes else {})}
        seg = Segmentation(None, None, None, None, None, vs, origin_um=tuple(lazy.origin),
                           params=params, alignment_shift=tuple(float(x) for x in shift))
        grey, den = _block_grey(lazy, model, denoise, normalise, input_name("volume", volume),
                                memory_limit, workers)
        with atomic_path(Path(out)) as tmp, h5py.File(tmp, "w") as f:
            ph = _volume_dataset(f, "phases", seg, shape=lazy.shape, dtype=np.uint8)
            lab = _volume_dataset(f, "particles", seg, shape=lazy.shape, dtype=np.int32)
            _block_phases(seg, grey, model, den, ph, input_name("volume", volume),
                          memory_limit, workers, progress)
            label_particles(ph, h=h, min_voxels=min_particle_voxels, voxel_size_um=vs,
                            particle_code=PHASE["si"], memory_limit=memory_limit,
                            workers=workers, out=lab)
            seg.table = particle_table(lab, vs, seg.collector_z, workers=workers,
                                       memory_limit=memory_limit)
            if resolution:
                seg.resolution_fwhm_um = _central_resolution(grey, ph, vs, den, memory_limit)
            _write_header(f, seg, provenance or make_provenance("segment", [], params))
    seg.phases = seg.particles = None
    return seg


def _block_grey(lazy: Any, model: Any, denoise: str | None, normalise: str | None,
                name: str, memory_limit: Any, workers: int) -> tuple[Any, str | None]:
    """The grey values the block route segments and the denoising still to apply to them:
    the volume itself and ``denoise`` for the threshold route without a normalisation
    (its passes denoise each block), else a view that denoises and normalises every box
    (:class:`~anodetwin.segment.preprocess.PreprocessedVolume`) and None."""
    from anodetwin.segment.preprocess import PreprocessedVolume

    if model is None and not normalise:
        return lazy, denoise
    return PreprocessedVolume(lazy, denoise, normalise, memory_limit=memory_limit,
                              workers=workers, name=name), None


def _block_phases(seg: Segmentation, grey: Any, model: Any, denoise: str | None, out: Any,
                  name: str, memory_limit: Any, workers: int, progress: bool) -> None:
    """Phase codes written into ``out`` block by block (thresholds, or the classifier
    ``model``); the interfaces, face, thresholds, method and the route's parameters are
    set on ``seg``."""
    from anodetwin.segment.phases import lateral_window, segment_phases

    vs, window_um = seg.voxel_size_um, seg.params["surface_window_um"]
    if model is None:
        ps = segment_phases(grey, voxel_size_um=vs, denoise=denoise, name=name,
                            surface_window_um=window_um, memory_limit=memory_limit,
                            workers=workers, out=out)
        seg.params["phases"] = ps.params
        seg.collector_z, seg.separator_z = ps.collector_z, ps.separator_z
        seg.collector_face, seg.thresholds = ps.collector_face, ps.thresholds
        return
    from anodetwin.segment.classifier import PixelClassifier, load_classifier

    clf = model if isinstance(model, PixelClassifier) else load_classifier(model)
    clf.predict(grey, progress=progress, out=out, memory_limit=memory_limit, workers=workers)
    seg.collector_face, seg.collector_z, seg.separator_z = interfaces_from_phases(
        out, lateral_window(window_um, vs), memory_limit=memory_limit)
    seg.params["model"] = clf.params
    seg.method, seg.thresholds = "classifier", {}


@contextmanager
def _lazy(volume: Any, voxel_size_um: Any) -> Iterator[Any]:
    """A lazy view of a path (opened for the context), or the view given (None: None)."""
    from anodetwin.io import open_volume

    if volume is None or hasattr(volume, "region"):
        yield volume
        return
    with open_volume(volume, voxel_size=voxel_size_um) as src:
        yield src.lazy(progress=False)


def _aligned(lazy: Any, ref: Any, name: Any, ref_name: Any, voxel_size_um: Any,
             memory_limit: Any, workers: int) -> tuple[Any, np.ndarray]:
    """The volume moved onto ``ref`` by the foil's translation (checked to share its grid),
    and the shift; unchanged without a reference."""
    from anodetwin.io.agree import input_name, require_same_grid
    from anodetwin.io.blocks import block_shape_for
    from anodetwin.segment.alignment import ShiftedVolume, collector_shift
    from anodetwin.segment.phases import BYTES_PER_VOXEL

    if ref is None:
        return lazy, np.zeros(3)
    require_same_grid(lazy, ref, input_name("volume", name),
                      input_name("--align-to reference", ref_name), voxel_size=voxel_size_um)
    bs = block_shape_for(ref.shape, BYTES_PER_VOXEL, 4, memory_limit, workers)
    shift = collector_shift(ref, lazy, block_shape=bs, workers=workers,
                            name=input_name("--align-to reference", ref_name))
    log.info("shift on the copper foil: %s voxels", np.round(shift, 2))
    return ShiftedVolume(lazy, shift, ref.voxel_size_um, ref.origin), shift


def _central_resolution(grey: Any, phases: Any, vs: tuple, denoise: str | None,
                        memory_limit: Any) -> float:
    """Edge resolution on the central box of the volume (:data:`RESOLUTION_BOX`, smaller
    where ``memory_limit`` asks: at :data:`RESOLUTION_BYTES_PER_VOXEL`), on the grey values
    the segmentation saw (``denoise``: the denoising still to apply to them, on the box
    alone)."""
    from anodetwin.io.blocks import parse_memory
    from anodetwin.segment.preprocess import denoise as denoise_volume

    side = min(RESOLUTION_BOX, int(np.cbrt(parse_memory(memory_limit)
                                           / RESOLUTION_BYTES_PER_VOXEL)))
    box = tuple(slice(max(0, (n - side) // 2), max(0, (n - side) // 2) + min(n, side))
                for n in grey.shape)
    data = np.asarray(grey.region(*box), np.float32)
    if denoise:
        data = denoise_volume(data, denoise)
    return _resolution(data, np.asarray(phases[box]) == PHASE["si"], vs)


def _stored_origin(attrs: Any) -> tuple | None:
    """The origin (um, z y x) stored with a labels volume, None if not recorded."""
    o = attrs.get("origin_um")
    return None if o is None else tuple(float(x) for x in np.asarray(o).reshape(3))


def read_labels(path: str | os.PathLike) -> Segmentation:
    """Read a labels file written by :func:`write_labels` (volumes read whole; see
    :func:`open_labels` for scans larger than memory).

    Parameters
    ----------
    path : path
        The labels file.

    Returns
    -------
    Segmentation
        ``phases`` (uint8) and ``particles`` (int32) as arrays of shape (nz, ny, nx).

    Raises
    ------
    InputNotFoundError
        If the file does not exist.
    CorruptFileError
        If it is not an anodetwin labels file.
    """
    with open_labels(path) as seg:
        try:
            return replace(seg, phases=seg.phases[...], particles=seg.particles[...])
        except OSError as exc:
            raise _not_labels(Path(path), exc) from None


@contextmanager
def open_labels(path: str | os.PathLike) -> Iterator[Segmentation]:
    """Open a labels file written by :func:`write_labels` without reading its volumes.

    The header, particle table and interfaces are read; ``phases`` and ``particles`` are
    the file's HDF5 datasets (uint8 and int32, shape (nz, ny, nx)), read box by box by
    the block-wise stages (:func:`anodetwin.io.blocks.read_region`). They can be read only
    inside the ``with`` block (the file is closed on leaving it).

    Parameters
    ----------
    path : path
        The labels file.

    Yields
    ------
    Segmentation
        With ``phases`` and ``particles`` as open ``h5py.Dataset`` objects.

    Raises
    ------
    InputNotFoundError
        If the file does not exist.
    CorruptFileError
        If it is not an anodetwin labels file.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(p, "labels file", "give a file written by 'anodetwin segment'")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise _not_labels(p, exc) from None
    with f:
        try:
            seg = _labels_header(f, p)
        except (OSError, KeyError) as exc:
            raise _not_labels(p, exc) from None
        yield seg


def _not_labels(p: Path, exc: Exception) -> CorruptFileError:
    return CorruptFileError(f"'{p}' is not an anodetwin labels file ({exc})",
                            "give a file written by 'anodetwin segment'")


def _labels_header(f: Any, p: Path) -> Segmentation:
    """A :class:`Segmentation` of an open labels file, its volumes left as datasets."""
    if f.attrs.get("format") != FORMAT:
        raise CorruptFileError(f"'{p}' is not an anodetwin labels file",
                               "give a file written by 'anodetwin segment'")
    a = f.attrs
    return Segmentation(
        f["phases"], f["particles"], f["particle_table"][...],
        f["interfaces/collector_z"][...], f["interfaces/separator_z"][...],
        tuple(float(x) for x in a["voxel_size_um"]), str(a["method"]),
        str(a["collector_face"]) or None, json.loads(a["thresholds"]),
        float(a["resolution_fwhm_um"]),
        tuple(float(x) for x in a["alignment_shift_voxels"]), json.loads(a["params"]),
        _stored_origin(f["phases"].attrs))
