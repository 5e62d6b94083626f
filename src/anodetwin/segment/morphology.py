"""Electrode morphology per time step and over a series (the reference's Fig. 2 numbers).

Per step (:func:`step_morphology`): the thickness map per (y, x) column from the collector
interface to the separator interface and its mean +- std (um); the non-lithiated Si volume
(um3) and its fraction of the electrode (voxels between the interfaces); the rest of the
electrode (``non_si_fraction``: CBD, electrolyte, pores and lithiated Si, which phase
contrast merges); the particle count and size distribution (d10, d50, d90 of the
equivalent diameter); the edge resolution and the alignment shift of the labels file.
Over a series (:func:`series_morphology`): the relative non-lithiated (RNL) Si volume
``V_Si(Tk) / V_Si(T0)`` and the particle tracks (:mod:`anodetwin.segment.tracking`).

Output folder of :func:`write_morphology` (``anodetwin morphology``)::

    OUT/morphology.csv        one row per step (columns of STEP_COLUMNS)
    OUT/particles_T<k>.csv    particle table of each step
    OUT/tracks.csv            one row per track and step (TRACK_TABLE)
    OUT/thickness.h5          /T<k>/thickness_um (y, x) maps (NaN: undefined), attrs
                              voxel_size_um (z, y, x), provenance
    OUT/summary.json          per-step numbers, inputs, parameters, provenance
    OUT/thickness_rnl.png     thickness (mean +- std) and RNL per step
    OUT/psd.png               particle size distributions per step
    OUT/trajectories.png      axial displacement of tracked particles against their initial
                              height, and their visible core volume per step

The folder is written as a whole: into a temporary folder renamed into place, replacing an
earlier morphology folder (no file of an earlier run stays); an existing folder holding
other files (:data:`MORPHOLOGY_FILES`) is refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import ParameterError
from anodetwin.io import normalise_voxel_size
from anodetwin.io.agree import input_name, require_series_grid
from anodetwin.io.blocks import DEFAULT_MEMORY_LIMIT, parse_memory
from anodetwin.io.table import csv_text
from anodetwin.phases import PHASE
from anodetwin.segment.pipeline import Segmentation, open_labels

__all__ = ["STEP_COLUMNS", "step_morphology", "SeriesMorphology", "series_morphology",
           "write_morphology", "MORPHOLOGY_FILES"]

#: Names of the files an existing morphology folder may hold to be replaced by a new one:
#: the layout above, and the stage record ``anodetwin run`` keeps in its morphology folder.
MORPHOLOGY_FILES = re.compile(r"morphology\.csv|particles_T\d+\.csv|tracks\.csv|thickness\.h5"
                              r"|summary\.json|(?:thickness_rnl|psd|trajectories)\.png"
                              r"|stage\.json|\.key")

STEP_COLUMNS = ("step", "thickness_mean_um", "thickness_std_um", "si_volume_um3",
                "si_fraction", "non_si_fraction", "rnl", "particles", "d10_um", "d50_um",
                "d90_um", "resolution_fwhm_um", "shift_z_vox", "shift_y_vox", "shift_x_vox")


def step_morphology(seg: Segmentation, step: int = 0, *,
                    memory_limit: Any = DEFAULT_MEMORY_LIMIT) -> dict:
    """Morphology numbers of one segmented step (module notes); ``rnl`` is left NaN.

    Thickness uses the z voxel size (the thickness axis), volumes the product of the
    (z, y, x) sizes, particle sizes the table of ``seg`` (um). The phases are read a slab
    of z planes at a time (arrays or the datasets of :func:`open_labels`); nothing else
    reads the volumes.

    Parameters
    ----------
    seg : Segmentation
        The segmented step.
    step : int
        Step index written in the row.
    memory_limit : str or int
        Memory ceiling (e.g. ``"4GB"``) of the slabs read to count the Si voxels.

    Returns
    -------
    dict
        One row keyed by :data:`STEP_COLUMNS`: thickness mean and std (um; NaN without a
        defined column), Si volume (um3) and fractions of the electrode, particle count,
        d10/d50/d90 of the equivalent diameter (um), edge resolution FWHM (um) and the
        alignment shift (voxels, z y x).
    """
    vs = normalise_voxel_size(seg.voxel_size_um, "voxel size")
    th = (seg.separator_z - seg.collector_z) * vs[0]  # z: the thickness is along z
    if seg.collector_face == "high":
        th = -th
    th = np.where(np.isfinite(th) & (th > 0), th, np.nan)
    n_el = _electrode_voxels(seg.collector_z, seg.separator_z, seg.phases.shape[0])
    n_si = _count(seg.phases, PHASE["si"], _slab_planes(seg.phases.shape, memory_limit))
    d = seg.table["equivalent_diameter_um"]
    q = np.percentile(d, [10, 50, 90]) if len(d) else [np.nan] * 3
    si_fraction = n_si / n_el if n_el else np.nan
    return {"step": step,
            "thickness_mean_um": float(np.nanmean(th)) if np.isfinite(th).any() else np.nan,
            "thickness_std_um": float(np.nanstd(th)) if np.isfinite(th).any() else np.nan,
            "si_volume_um3": n_si * float(np.prod(seg.voxel_size_um)),  # per-axis voxel
            "si_fraction": si_fraction,
            "non_si_fraction": 1 - si_fraction, "rnl": np.nan, "particles": int(len(d)),
            "d10_um": float(q[0]), "d50_um": float(q[1]), "d90_um": float(q[2]),
            "resolution_fwhm_um": seg.resolution_fwhm_um,
            "shift_z_vox": seg.alignment_shift[0], "shift_y_vox": seg.alignment_shift[1],
            "shift_x_vox": seg.alignment_shift[2]}


def _electrode_voxels(collector_z: np.ndarray, separator_z: np.ndarray, nz: int) -> int:
    """Voxels (slices 0..nz-1) strictly between the two interfaces, column by column."""
    lo = np.minimum(collector_z, separator_z)
    hi = np.maximum(collector_z, separator_z)
    ok = np.isfinite(hi) & np.isfinite(lo)
    first = np.clip(np.floor(np.where(ok, lo, 0)) + 1, 0, nz)  # first slice z > lo
    last = np.clip(np.ceil(np.where(ok, hi, 0)) - 1, -1, nz - 1)  # last slice z < hi
    return int(np.where(ok, np.maximum(last - first + 1, 0), 0).sum())


def _slab_planes(shape: tuple, memory_limit: Any, most: int = 64) -> int:
    """z planes of a counting slab (uint8 codes and their mask) within a quarter of the
    memory limit."""
    plane = 2 * int(np.prod(shape[1:], dtype=np.int64))
    budget = parse_memory(memory_limit or DEFAULT_MEMORY_LIMIT) // 4
    return int(np.clip(budget // max(plane, 1), 1, most))


def _count(phases: Any, code: int, slab: int = 64) -> int:
    """Voxels of a phase code in a volume in memory or in a file, a slab at a time."""
    return int(sum(np.count_nonzero(np.asarray(phases[z:z + slab]) == code)
                   for z in range(0, phases.shape[0], slab)))


@dataclass
class SeriesMorphology:
    """Morphology of a series (:func:`series_morphology`).

    Attributes
    ----------
    steps : list of dict
        One row per step (keys :data:`STEP_COLUMNS`), ``rnl`` filled relative to T0.
    thickness_maps : list of numpy.ndarray, shape (ny, nx)
        Thickness per column (um; NaN: undefined) of each step.
    tables : list of numpy.ndarray
        Particle table of each step (:data:`anodetwin.segment.particles.PARTICLE_TABLE`).
    tracks : Tracks or None
        Particle tracks over the steps (:mod:`anodetwin.segment.tracking`), None for one step.
    voxel_size_um : tuple of float
        (z, y, x) voxel size of the series (um).
    """

    steps: list[dict]
    thickness_maps: list[np.ndarray]
    tables: list[np.ndarray]
    tracks: Any
    voxel_size_um: tuple


def series_morphology(labels: Sequence[Any], prior: str | Any = "thickness",
                      dvc_increments: Sequence[Any] | None = None,
                      voxel_size_um: Any = None, *,
                      memory_limit: Any = DEFAULT_MEMORY_LIMIT,
                      workers: int = 1) -> SeriesMorphology:
    """Morphology of every step, RNL relative to T0 and particle tracks.

    Labels files are opened lazily (:func:`anodetwin.segment.pipeline.open_labels`) and
    their volumes read block by block (Si counts by slabs, tracking and re-measured
    particle tables by blocks), so the memory follows ``memory_limit``, not the scans'
    size; the results equal those of the volumes in memory.

    Parameters
    ----------
    labels : sequence of Segmentation or labels-file paths
        T0, T1, ... on one grid (aligned): same voxel size, shape and origin
        (:func:`anodetwin.io.agree.require_series_grid`).
    prior : {"thickness", "none"} or callable
        Tracking prior when no DVC increments are given.
    dvc_increments : sequence of DVC results, optional
        Increments T(k) -> T(k+1) (files ``increment_<k>_<k+1>.h5`` of ``dvc-series``):
        the tracking prior.
    voxel_size_um : float or 3 float, optional
        Explicit voxel size (um) of every step: differences of the files' voxel sizes and
        origins are then logged, not refused.
    memory_limit : str or int
        Memory ceiling of the block-wise passes (e.g. ``"4GB"``; None: the default).
    workers : int
        Blocks processed at once (threads).

    Returns
    -------
    SeriesMorphology

    Raises
    ------
    ParameterError
        Without labels, or for an unknown tracking prior.
    GridMismatchError
        If the steps do not share one grid (:func:`anodetwin.io.agree.require_series_grid`).
    InputNotFoundError, CorruptFileError
        For a labels file that is missing or not a labels file.
    """
    memory_limit = memory_limit or DEFAULT_MEMORY_LIMIT
    with ExitStack() as stack:
        segs = [s if isinstance(s, Segmentation) else stack.enter_context(open_labels(s))
                for s in labels]
        if not segs:
            raise ParameterError("no labels given", "give the labels of T0 [T1 ...]")
        names = [input_name(f"labels of T{k}", v) for k, v in enumerate(labels)]
        grid = require_series_grid(segs, names, voxel_size=voxel_size_um)
        if voxel_size_um is not None:  # the tables then follow the given voxel size
            from anodetwin.segment.particles import particle_table

            segs = [s if np.allclose(s.voxel_size_um, grid.voxel_size_um) else
                    replace(s, voxel_size_um=grid.voxel_size_um,
                            table=particle_table(s.particles, grid.voxel_size_um,
                                                 s.collector_z, memory_limit=memory_limit,
                                                 workers=workers))
                    for s in segs]
        vs = tuple(float(v) for v in normalise_voxel_size(segs[0].voxel_size_um,
                                                          "voxel size"))
        rows = [step_morphology(s, k, memory_limit=memory_limit) for k, s in enumerate(segs)]
        v0 = rows[0]["si_volume_um3"]
        for r in rows:
            r["rnl"] = r["si_volume_um3"] / v0 if v0 > 0 else np.nan
        maps = [(s.separator_z - s.collector_z) * vs[0] for s in segs]  # z: thickness axis
        tracks = None
        if len(segs) > 1:
            from anodetwin.segment.tracking import track_particles

            tracks = track_particles([s.particles for s in segs], vs,
                                     _tracking_prior(segs, prior, dvc_increments),
                                     memory_limit=memory_limit, workers=workers)
        return SeriesMorphology(rows, maps, [s.table for s in segs], tracks, vs)


def _tracking_prior(segs: Sequence[Segmentation], prior: str | Any,
                    dvc_increments: Sequence[Any] | None) -> Any:
    """The tracking prior of :func:`series_morphology` (None: no motion)."""
    from anodetwin.segment.tracking import dvc_prior, thickness_prior

    if dvc_increments is not None:
        if len(dvc_increments) != len(segs) - 1:
            raise ParameterError(f"{len(dvc_increments)} DVC increments for "
                                 f"{len(segs)} steps", "give one increment per transition")
        return dvc_prior(dvc_increments)
    if callable(prior):
        return prior
    if prior == "thickness":
        return thickness_prior([float(np.nanmean(s.collector_z)) for s in segs],
                               [float(np.nanmean(s.separator_z)) for s in segs])
    if prior in (None, "none"):
        return None
    raise ParameterError(f"unknown tracking prior '{prior}'",
                         "use 'thickness', 'none' or give DVC increments")


#: Digits of floats in the CSV files: None, the shortest text that reads back exactly.
CSV_DIGITS = None


def _csv(rows: list[dict] | np.ndarray) -> str:
    """CSV text (:func:`anodetwin.io.table.csv_text`) of step rows or a structured table."""
    if isinstance(rows, np.ndarray):
        names = list(rows.dtype.names or [])
        return csv_text([dict(zip(names, r, strict=True)) for r in rows.tolist()], names,
                        digits=CSV_DIGITS)
    return csv_text(rows, None if rows else ["step"], digits=CSV_DIGITS)


def _plots(out: Path, m: SeriesMorphology) -> None:
    from anodetwin.plotting import pyplot, save_png

    plt = pyplot()
    steps = [r["step"] for r in m.steps]
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.errorbar(steps, [r["thickness_mean_um"] for r in m.steps],
                yerr=[r["thickness_std_um"] for r in m.steps], fmt="o-", capsize=3,
                label="thickness (mean +- std)")
    ax.set_xlabel("step")
    ax.set_ylabel("electrode thickness (um)")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["rnl"] for r in m.steps], "s--", color="C3", label="RNL")
    ax2.set_ylabel("relative non-lithiated Si volume", color="C3")
    ax.set_title("thickness and relative non-lithiated (RNL) volume")
    save_png(fig, out / "thickness_rnl.png")

    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    sizes = [t["equivalent_diameter_um"] for t in m.tables]
    top = max((float(s.max()) for s in sizes if len(s)), default=1.0)
    bins = np.linspace(0, top * 1.05, 30)
    for k, s in zip(steps, sizes, strict=True):
        ax.hist(s, bins=bins, histtype="step", label=f"T{k} ({len(s)} particles)")
    ax.set_xlabel("equivalent diameter (um)")
    ax.set_ylabel("particles")
    ax.legend(fontsize=8)
    ax.set_title("particle size distribution (visible Si)")
    save_png(fig, out / "psd.png")

    if m.tracks is not None:
        t = m.tracks.table
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        last = t["step"].max()
        for tr in np.unique(t["track"]):
            rows = t[t["track"] == tr]
            if rows["step"][0] != 0 or rows["step"][-1] != last:
                continue
            axes[0].plot(rows["centroid_z_um"][0], rows["displacement_z_um"][-1], "o",
                         color="C0", ms=3)
            axes[1].plot(rows["step"], rows["volume_um3"], "-", color="C0", alpha=0.3)
        axes[0].set_xlabel("initial centroid height z (um)")
        axes[0].set_ylabel(f"axial displacement at T{last} (um)")
        axes[0].set_title("tracked particles: axial displacement")
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("visible (non-lithiated) volume (um3)")
        axes[1].set_title("tracked particles: core volume")
        save_png(fig, out / "trajectories.png")


def write_morphology(out_dir: str | os.PathLike, m: SeriesMorphology,
                     provenance: dict | None = None, inputs: list | None = None) -> Path:
    """Write the output folder of a series' morphology (module notes).

    Parameters
    ----------
    out_dir : path
        The folder (its parents created if missing). Written whole into a temporary folder
        renamed into place: an earlier morphology folder there is replaced with all its
        files.
    m : SeriesMorphology
        The morphology to write.
    provenance : dict, optional
        Provenance record (default: one made for the ``morphology`` command with ``inputs``).
    inputs : list, optional
        Input records for the default provenance.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    OutputError
        ``out_dir`` is an existing file, a folder holding files other than
        :data:`MORPHOLOGY_FILES`, or holds an input named in the provenance (checked before
        anything is written).
    """
    import h5py

    from anodetwin.io import (atomic_path, atomic_write_json, atomic_write_text,
                              check_output_path, make_provenance)

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    prov = provenance or make_provenance("morphology", inputs or [], {})
    check_output_path(out, inputs=[r["path"] for r in prov.get("inputs", ())
                                   if isinstance(r, dict) and r.get("path")],
                      kind=MORPHOLOGY_FILES)
    with atomic_path(out, directory=True, kind=MORPHOLOGY_FILES) as tmp:
        atomic_write_text(tmp / "morphology.csv", _csv(m.steps))
        for r, t in zip(m.steps, m.tables, strict=True):
            atomic_write_text(tmp / f"particles_T{r['step']}.csv", _csv(t))
        if m.tracks is not None:
            atomic_write_text(tmp / "tracks.csv", _csv(m.tracks.table))
        with atomic_path(tmp / "thickness.h5") as th5, h5py.File(th5, "w") as f:
            f.attrs["voxel_size_um"] = np.asarray(m.voxel_size_um, float)
            f.attrs["provenance"] = json.dumps(prov, default=str)
            for r, th in zip(m.steps, m.thickness_maps, strict=True):
                f.create_dataset(f"T{r['step']}/thickness_um", data=th)
        summary = {"steps": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                              for k, v in r.items()} for r in m.steps],
                   "tracks": None if m.tracks is None else m.tracks.n_tracks,
                   "provenance": prov}
        atomic_write_json(tmp / "summary.json", summary)
        _plots(tmp, m)
    return out
