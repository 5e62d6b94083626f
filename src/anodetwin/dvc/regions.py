"""Region statistics of measured strain fields, as the reference analysed them.

Regions are sets of cells of the DVC node grid, chosen in the reference configuration
(the grid of T0 for cumulative fields):

* ``electrode``: cells between the collector interface and the separator interface;
* ``collector_half`` / ``separator_half``: the electrode split at its mid-plane;
* ``cube_z<i>_y<j>_x<k>``: sub-volumes of a given edge (reference: 40 um) tiling the
  electrode, centred in y and x (one cube spans an axis shorter than the edge);
* ``particle_<id>``: a particle-centred volume of interest (reference: 15 um cube) around
  the particle's centre of mass, **re-centred at every step**: the centre of mass moves
  with the measured displacement interpolated there, and the VOI takes the cells whose
  deformed centres (cell centre + mean corner displacement) lie in the cube around it.

Interfaces come from a phase volume (codes of :mod:`anodetwin.phases`: the top of the
copper foil, the bottom of the separator, each the plane where more than half of a z-slice
changes; without copper or separator, the first/last slice that is more than half
electrode) or are given as z positions (voxels); without either, the extent of the node
grid is the electrode. The electrode and each half must hold cells of the grid (interfaces
outside the grid, or closer than a cell, are refused, naming the grid's z range in voxels
and um); cubes and VOIs must be at least one cell of the grid along every axis, and at most
:data:`MAX_CUBES` cubes are made; step labels must differ
(:func:`region_layout` checks a grid before any correlation). Phases and particle labels
are on the grid of the correlated
reference volume (the ``roi_origin`` of a cropped correlation is taken into account) and
are read slab by slab (arrays, paths, lazy views or h5py datasets), so they may be larger
than memory; the statistics do not depend on how they are given.

For each step, region and measure (``volumetric`` = J-1, ``ezz``, ``eyy``, ``exx``,
``deviatoric``, ``hencky_volumetric`` = log J) the statistics over the valid cells are
``n, mean, std, min, p5, p25, p50, p75, p95, max`` and a histogram (values beyond the bin
range counted in the end bins); ``volumetric_of_mean_F`` is det(mean F) - 1, the
volumetric strain of the region as a whole. Every measure is recomputed from the nodal
displacement in um over the node spacing in um per axis (the voxel size given, else the
results'), so anisotropic voxels give the right strain.

Result file (HDF5, ``anodetwin-dvc-regions`` v1)::

    /                      attrs: format, format_version, voxel_size_um, interfaces_voxels
                           (z_collector, z_separator), params (JSON), provenance (JSON),
                           stat_columns (JSON)
    /steps                 (S,) step of each field (k of T0 -> Tk)
    /regions/name, /regions/kind      (R,) strings
    /regions/bounds_voxels (R, 2, 3) low/high corner (z, y, x) in the reference configuration
                           (particle VOIs: their T0 box)
    /stats/<measure>       (S, R, 10) columns ``stat_columns``
    /hist/<measure>        (S, R, B) counts; /hist/edges (B + 1,)
    /volumetric_of_mean_F  (S, R)
    /particles/id          (P,) particles with a VOI
    /particles/com_ref     (P, 3) centre of mass in REF (voxels)
    /particles/com         (S, P, 3) centre of mass at each step (voxels)
    /particles/voi_bounds  (S, P, 2, 3) VOI box at each step (deformed configuration)

``regions.csv`` beside it holds the statistics as one row per step, region and measure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.dvc.correlate import interpolate_displacement
from anodetwin.dvc.pair import PairResult, pair_strain, read_pair
from anodetwin.dvc.volumes import as_worker_volume
from anodetwin.strain import cell_mean, node_spacing_um, volumetric_strain, voxel_size_triple
from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io.agree import input_name, require_same_grid, require_series_grid
from anodetwin.io.table import csv_text
from anodetwin.log import get_logger
from anodetwin.phases import ELECTRODE_PHASES, PHASE

log = get_logger("dvc")

__all__ = ["MEASURES", "STAT_COLUMNS", "CSV_COLUMNS", "CSV_DIGITS", "DEFAULT_BINS",
           "MAX_CUBES", "DEFAULT_CUBE_UM", "DEFAULT_VOI_UM", "RegionStats", "RegionLayout",
           "cell_mean", "electrode_interfaces", "particle_centres", "region_layout",
           "region_statistics", "write_regions", "check_region_inputs"]

MEASURES = ("volumetric", "ezz", "eyy", "exx", "deviatoric", "hencky_volumetric")
STAT_COLUMNS = ("n", "mean", "std", "min", "p5", "p25", "p50", "p75", "p95", "max")
#: Default histogram bins: strain -1 .. +2 in steps of 0.025.
DEFAULT_BINS = np.linspace(-1.0, 2.0, 121)
FORMAT = "anodetwin-dvc-regions"


@dataclass
class RegionStats:
    """Statistics of a set of strain fields (one per step) over regions (module notes)."""

    steps: list[int]
    names: list[str]
    kinds: list[str]
    bounds: np.ndarray
    stats: dict[str, np.ndarray]
    hist: dict[str, np.ndarray]
    edges: np.ndarray
    volumetric_of_mean_F: np.ndarray
    particle_ids: np.ndarray
    com_ref: np.ndarray
    com: np.ndarray
    voi_bounds: np.ndarray
    interfaces: tuple[float, float]
    voxel_size_um: np.ndarray
    params: dict = field(default_factory=dict)

    def value(self, step: int, region: str, measure: str = "volumetric",
              stat: str = "mean") -> float:
        """One statistic, e.g. ``value(6, "separator_half", "volumetric", "mean")``.

        Parameters
        ----------
        step : int
            Step label (k of T0 -> Tk).
        region : str
            Region name (``electrode``, ``collector_half``, ``cube_z0_y0_x0``, ...).
        measure : str
            One of :data:`MEASURES`.
        stat : str
            One of :data:`STAT_COLUMNS`.

        Returns
        -------
        float
            The statistic (strain, dimensionless; ``n``: a count).

        Raises
        ------
        ValueError
            An unknown step, region or statistic (KeyError: an unknown measure).
        """
        s, r = self.steps.index(step), self.names.index(region)
        return float(self.stats[measure][s, r, STAT_COLUMNS.index(stat)])

    def rows(self) -> Iterator[dict]:
        """The rows of ``regions.csv``.

        Yields
        ------
        dict
            One per step, region and measure: :data:`CSV_COLUMNS`.
        """
        for s, step in enumerate(self.steps):
            for r, (name, kind) in enumerate(zip(self.names, self.kinds, strict=True)):
                for m, a in self.stats.items():
                    yield {"step": step, "region": name, "kind": kind, "measure": m,
                           **{c: float(v) for c, v in zip(STAT_COLUMNS, a[s, r], strict=True)},
                           "volumetric_of_mean_F": float(self.volumetric_of_mean_F[s, r])}


def _slabs(labels: Any) -> Iterator[tuple[int, np.ndarray]]:
    """(z0, slab) of a label volume (array, Volume, path, LazyVolume or h5py dataset), read
    :data:`~anodetwin.dvc.volumes.SLAB_VOXELS` voxels at a time."""
    v = as_worker_volume(labels)
    if len(v.shape) != 3:
        raise ShapeMismatchError(f"label volume has {len(v.shape)} dimensions",
                                 "give a 3D (z, y, x) label volume")
    yield from v.slabs()


def electrode_interfaces(phases: Any) -> tuple[float, float]:
    """z positions (voxels, between slices) of the collector and separator interfaces.

    Parameters
    ----------
    phases : array, Volume, path, LazyVolume or h5py.Dataset
        Phase codes (:mod:`anodetwin.phases`) on the grid of the reference volume.

    Returns
    -------
    (float, float)
        Collector-side and separator-side interface planes, e.g. 9.5 when slice 9 is the
        last copper slice.
    """
    cu, sep, el = [], [], []
    for _, s in _slabs(phases):
        n = s.shape[1] * s.shape[2]
        cu += list((s == PHASE["copper"]).sum(axis=(1, 2)) / n)
        sep += list((s == PHASE["separator"]).sum(axis=(1, 2)) / n)
        el += list(np.isin(s, ELECTRODE_PHASES).sum(axis=(1, 2)) / n)
    cu, sep, el = np.array(cu), np.array(sep), np.array(el)
    z_el = np.flatnonzero(el > 0.5)
    z_cu = np.flatnonzero(cu > 0.5)
    if z_el.size == 0:
        raise ParameterError(f"{input_name('the phase volume', phases)} has no slice that is "
                             f"mostly electrode (codes {ELECTRODE_PHASES})",
                             "give phases with the anodetwin codes or the interfaces as z")
    zc = z_cu.max() + 0.5 if z_cu.size else z_el.min() - 0.5
    z_sep = np.flatnonzero((sep > 0.5) & (np.arange(len(sep)) > zc))
    zs = z_sep.min() - 0.5 if z_sep.size else z_el.max() + 0.5
    return float(zc), float(zs)


def particle_centres(particles: Any, min_voxels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Ids and centres of mass of labelled particles, read slab by slab.

    Parameters
    ----------
    particles : array, Volume, path, LazyVolume or h5py.Dataset
        (z, y, x) particle ids (0 = none).
    min_voxels : int
        Particles with fewer voxels are left out.

    Returns
    -------
    ids : numpy.ndarray
        (P,) particle ids.
    centres : numpy.ndarray
        (P, 3) centres of mass (voxels, z, y, x).

    Raises
    ------
    ParameterError
        Negative labels.
    """
    n = s = None
    for z0, block in _slabs(particles):
        lab = np.asarray(block).astype(np.int64, copy=False)
        if lab.size and lab.min() < 0:
            raise ParameterError("particle labels are negative", "give ids >= 0 (0 = none)")
        m = int(lab.max()) + 1 if lab.size else 1
        zz, yy, xx = np.indices(lab.shape, dtype=np.float64)
        flat = lab.ravel()
        cnt = np.bincount(flat, minlength=m).astype(float)
        sums = np.stack([np.bincount(flat, weights=(c + off).ravel(), minlength=m)
                         for c, off in ((zz, z0), (yy, 0), (xx, 0))], axis=1)
        if n is None:
            n, s = cnt, sums
        else:
            k = max(len(n), m)
            n = np.pad(n, (0, k - len(n)))
            s = np.pad(s, ((0, k - len(s)), (0, 0)))
            n[:m] += cnt
            s[:m] += sums
    ids = np.flatnonzero(n >= max(1, min_voxels))
    ids = ids[ids > 0]
    return ids, s[ids] / n[ids, None]


def _tiles(lo: float, hi: float, size: float) -> list[tuple[float, float]]:
    extent = hi - lo
    if extent <= size:
        return [(lo, hi)]
    k = int(extent // size)
    start = lo + (extent - k * size) / 2
    return [(start + i * size, start + (i + 1) * size) for i in range(k)]


def _as_pair(p: Any) -> PairResult:
    return p if isinstance(p, PairResult) else read_pair(p)


def _stats(v: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.r_[0, np.full(len(STAT_COLUMNS) - 1, np.nan)], np.zeros(len(edges) - 1)
    q = np.percentile(v, [5, 25, 50, 75, 95])
    h = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)[0]
    return np.r_[v.size, v.mean(), v.std(), v.min(), q, v.max()], h


def check_region_inputs(results: Sequence[PairResult], names: Sequence[str], phases: Any = None,
                        particles: Any = None, voxel_size_um: Any = None) -> None:
    """Check that the inputs of a region analysis lie on one grid.

    Parameters
    ----------
    results : sequence of PairResult
        The fields.
    names : sequence of str
        How messages name them.
    phases, particles : array, Volume, path, LazyVolume or h5py.Dataset, optional
        Labels on the reference grid.
    voxel_size_um : float or 3 floats, optional
        Explicit voxel size: differences of the inputs' own are then only logged.

    Raises
    ------
    GridMismatchError
        Unless the results' reference volumes agree with each other, and the phases and
        particle labels with them, in voxel size, shape and origin
        (:func:`anodetwin.io.agree.require_same_grid`; a result written before the
        reference grid was recorded is checked for its voxel size only).
    """
    require_series_grid(results, names, voxel_size=voxel_size_um)
    for what, labels in (("phases", phases), ("particles", particles)):
        if labels is not None:
            require_same_grid(results[0], labels, f"the reference volume of {names[0]}",
                              input_name(what, labels), voxel_size=voxel_size_um)


#: Edges (um) of the reference's sub-volume cubes and particle-centred VOIs: what ``"auto"``
#: gives when they are at least one cell of the grid.
DEFAULT_CUBE_UM, DEFAULT_VOI_UM = 40.0, 15.0
#: Most sub-volume cubes of one analysis: their statistics and histograms take
#: steps x cubes x 6 measures x 130 numbers.
MAX_CUBES = 10_000


@dataclass
class RegionLayout:
    """Where the regions of a node grid lie, in the reference configuration.

    Attributes
    ----------
    names, kinds : list of str
        One per region (electrode, halves, cubes, then particle VOIs).
    bounds : list of numpy.ndarray
        (2, 3) low and high corner (z, y, x voxels) of each region.
    masks : list of numpy.ndarray
        Cells of each region (boolean over the grid's cells, z slowest); a particle VOI's
        mask is its T0 box, re-centred per step by :func:`region_statistics`.
    centres : numpy.ndarray
        (cells, 3) cell centres (voxels of the reference volume).
    interfaces : (float, float)
        Collector and separator interface z (voxels).
    particle_ids, com_ref : numpy.ndarray
        Particles with a VOI and their centres of mass (voxels).
    half_voi : numpy.ndarray
        Half edge of the VOIs per axis (voxels).
    cube_um, voi_um : float or None
        The edges used (um; None: none).
    """

    names: list
    kinds: list
    bounds: list
    masks: list
    centres: np.ndarray
    interfaces: tuple
    particle_ids: np.ndarray
    com_ref: np.ndarray
    half_voi: np.ndarray
    cube_um: float | None = None
    voi_um: float | None = None

    def add(self, name: str, kind: str, lo: np.ndarray, hi: np.ndarray) -> None:
        """Append a box region: the cells whose centres lie in [lo, hi).

        Parameters
        ----------
        name, kind : str
            Region name and kind (``electrode``, ``half``, ``cube``, ``particle``).
        lo, hi : numpy.ndarray
            (3,) low and high corner (z, y, x; voxels).
        """
        self.names.append(name)
        self.kinds.append(kind)
        self.masks.append(np.all((self.centres >= lo) & (self.centres < hi), axis=1))
        self.bounds.append(np.stack([lo, hi]))


def _check_sizes(cube_um: float | None, voi_um: float | None, spacing: np.ndarray,
                 vs: np.ndarray) -> None:
    """Cubes and VOIs at least one DVC cell along every axis."""
    cell = node_spacing_um(spacing, vs)
    for option, size in (("--cube-um (cube_um)", cube_um), ("--voi-um (voi_um)", voi_um)):
        if size is None:
            continue
        if not (np.isfinite(size) and size >= 0):
            raise ParameterError(f"{option} = {size}", "give an edge >= 0 um (0: none)")
        small = [a for a in range(3) if size and size < cell[a] * (1 - 1e-9)]
        if small:
            a = small[0]
            raise ParameterError(
                f"{option} = {size:g} um is smaller than one cell of the DVC grid "
                f"({cell[a]:g} um = {spacing[a]:g} voxels along {'zyx'[a]})",
                f"give an edge >= {cell.max():g} um, or 0 for none")


def _auto(size: Any, default: float, what: str, spacing: np.ndarray, vs: np.ndarray,
          known: bool) -> float | None:
    """``"auto"``: ``default`` um when the voxel size is known and it is at least one cell of
    the grid, else none (logged); any other value as given."""
    if not (isinstance(size, str) and size == "auto"):
        return size
    cell = float(node_spacing_um(spacing, vs).max())
    if known and default >= cell * (1 - 1e-9):
        return default
    log.info("no %s: %s", what, f"the default {default:g} um is smaller than one DVC cell "
             f"({cell:g} um)" if known else "the voxel size is unknown")
    return None


def _grid_extent(lo: float, hi: float, vs: float, known: bool) -> str:
    """``z lo..hi voxels (a..b um)`` for messages."""
    um = f" ({lo * vs:g}..{hi * vs:g} um)" if known else ""
    return f"z {lo:g}..{hi:g} voxels{um}"


def _electrode(layout: RegionLayout, lo_all: np.ndarray, hi_all: np.ndarray, vs: np.ndarray,
               known: bool, source: str) -> None:
    """The electrode and its halves; each must hold cells of the grid."""
    zc, zs = layout.interfaces
    mid = (zc + zs) / 2
    layout.add("electrode", "electrode", np.r_[zc, lo_all[1:]], np.r_[zs, hi_all[1:]])
    layout.add("collector_half", "half", np.r_[zc, lo_all[1:]], np.r_[mid, hi_all[1:]])
    layout.add("separator_half", "half", np.r_[mid, lo_all[1:]], np.r_[zs, hi_all[1:]])
    for name, mask, (a, b) in zip(layout.names, layout.masks,
                                  ((zc, zs), (zc, mid), (mid, zs)), strict=True):
        if not mask.any():
            raise ParameterError(
                f"the {name.replace('_', ' ')} between z {a:g} and {b:g} voxels ({source}) "
                f"holds no cell of the DVC grid, whose cells span "
                f"{_grid_extent(lo_all[0], hi_all[0], vs[0], known)}",
                "give collector and separator interfaces inside that range, at least two "
                "cells apart (--interfaces ZC,ZS in voxels)")


def _cubes(layout: RegionLayout, size: np.ndarray, lo_e: np.ndarray, hi_e: np.ndarray,
           cube_um: float) -> None:
    """Cubes of ``size`` voxels tiling the electrode box (at most :data:`MAX_CUBES`)."""
    tiles = [_tiles(lo_e[a], hi_e[a], size[a]) for a in range(3)]
    count = int(np.prod([len(t) for t in tiles]))
    if count > MAX_CUBES:
        raise ParameterError(f"--cube-um (cube_um) = {cube_um:g} um gives {count} cubes",
                             f"give a larger edge (at most {MAX_CUBES} cubes), or 0 for none")
    for i, tz in enumerate(tiles[0]):
        for j, ty in enumerate(tiles[1]):
            for k, tx in enumerate(tiles[2]):
                layout.add(f"cube_z{i}_y{j}_x{k}", "cube", np.array([tz[0], ty[0], tx[0]]),
                           np.array([tz[1], ty[1], tx[1]]))


def region_layout(nodes: np.ndarray, grid_shape: Sequence[int], node_spacing: Any,
                  voxel_size_um: Any = None, origin: Any = (0, 0, 0), phases: Any = None,
                  particles: Any = None, interfaces: tuple[float, float] | None = None,
                  cube_um: float | str | None = "auto", voi_um: float | str | None = "auto",
                  min_particle_voxels: int = 1) -> RegionLayout:
    """The regions of a node grid (module notes), checked: every electrode region holds
    cells, cubes and VOIs are at least one cell (and at most :data:`MAX_CUBES` cubes).

    Parameters
    ----------
    nodes : numpy.ndarray
        (N, 3) node positions (voxels of the correlated volume, z slowest).
    grid_shape : 3 int
        Nodes per axis.
    node_spacing : int or 3 int
        Node spacing (voxels).
    voxel_size_um : float or 3 float, optional
        Voxel size (z, y, x); needed for ``cube_um`` and ``voi_um``.
    origin : 3 float
        Offset of the nodes in the reference volume (a cropped correlation's
        ``roi_origin``).
    phases, particles, interfaces, cube_um, voi_um, min_particle_voxels
        As :func:`region_statistics`.

    Returns
    -------
    RegionLayout
        Names, kinds, bounds and cell masks of the regions.

    Raises
    ------
    ParameterError
        Interfaces in the wrong order or leaving an electrode region without cells (the
        message names the grid's z range in voxels and um), cubes or VOIs smaller than a
        cell, too many cubes, an unknown voxel size with cubes or VOIs.
    """
    known = voxel_size_um is not None
    vs = voxel_size_triple(voxel_size_um)
    spacing = np.broadcast_to(np.asarray(node_spacing, float), (3,))
    cube_um = _auto(cube_um, DEFAULT_CUBE_UM, "sub-volume cubes", spacing, vs, known)
    voi_um = _auto(voi_um, DEFAULT_VOI_UM, "particle VOIs", spacing, vs, known) \
        if particles is not None else None
    if not known and (cube_um or voi_um):
        raise ParameterError("the voxel size is unknown, needed for the cube/VOI sizes in um",
                             "give the voxel size (--voxel-size)")
    _check_sizes(cube_um, voi_um, spacing, vs)
    gshape = tuple(int(n) for n in grid_shape)
    grid = np.asarray(nodes, float).reshape(*gshape, 3) + np.asarray(origin, float)
    centres = cell_mean(grid).reshape(-1, 3)
    half_cell = (grid[-1, -1, -1] - grid[0, 0, 0]) / np.maximum(np.array(gshape) - 1, 1) / 2
    lo_all, hi_all = centres.min(axis=0) - half_cell, centres.max(axis=0) + half_cell
    if interfaces is not None:
        zc, zs = (float(v) for v in interfaces)
        if not zs > zc:
            raise ParameterError(f"interfaces {tuple(interfaces)}: separator z is not above "
                                 "the collector z", "give z_collector < z_separator (voxels)")
        source = "given"
    elif phases is not None:
        (zc, zs), source = electrode_interfaces(phases), "from the phases"
    else:
        (zc, zs), source = (float(lo_all[0]), float(hi_all[0])), "the grid"
    layout = RegionLayout([], [], [], [], centres, (zc, zs), np.zeros(0, int), np.zeros((0, 3)),
                          (voi_um or 0) / vs / 2, cube_um or None, voi_um or None)
    _electrode(layout, lo_all, hi_all, vs, known, source)
    if cube_um:
        _cubes(layout, cube_um / vs, np.r_[zc, lo_all[1:]], np.r_[zs, hi_all[1:]], cube_um)
    if particles is not None and voi_um:
        layout.particle_ids, layout.com_ref = particle_centres(particles, min_particle_voxels)
    for p, c in zip(layout.particle_ids, layout.com_ref, strict=True):
        layout.add(f"particle_{p}", "particle", c - layout.half_voi, c + layout.half_voi)
    return layout


def _check_steps(steps: Sequence[int] | None, n: int) -> list[int]:
    """One distinct step label per field (default 1..n)."""
    steps = list(steps) if steps is not None else list(range(1, n + 1))
    if len(steps) != n:
        raise ParameterError(f"{len(steps)} step labels for {n} fields",
                             "give one step label per field")
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        raise ParameterError(f"step labels {steps} repeat {repeated}",
                             "give every field its own step label (e.g. --steps 1,2,3)")
    return steps


def _step_statistics(res: PairResult, layout: RegionLayout, first: PairResult, vs: np.ndarray,
                     origin: np.ndarray, bins: np.ndarray) -> tuple:
    """Statistics of one field over the layout's regions, the particles re-centred:
    (stats per measure (R, 10), histograms (R, B), det(mean F) - 1 (R,), com (P, 3),
    voi bounds (P, 2, 3))."""
    gshape = tuple(first.grid_shape)
    st = pair_strain(res, vs)  # um displacements over um node spacings, per axis
    fields = {"volumetric": st.volumetric, "deviatoric": st.deviatoric,
              "hencky_volumetric": st.hencky_volumetric, **st.small}
    F = np.asarray(st.F).reshape(-1, 3, 3)
    u = np.asarray(res.displacement, float)
    masks = list(layout.masks)
    n_fixed = len(masks) - len(layout.particle_ids)
    com = layout.com_ref.copy()
    voi = np.zeros((len(com), 2, 3))
    if len(com):
        com = com + interpolate_displacement(first.nodes, gshape, u, layout.com_ref - origin)
        voi = np.stack([com - layout.half_voi, com + layout.half_voi], axis=1)
        x_cells = layout.centres + cell_mean(u.reshape(*gshape, 3)).reshape(-1, 3)
        for i in range(len(com)):
            masks[n_fixed + i] = np.all((x_cells >= voi[i, 0]) & (x_cells < voi[i, 1]), axis=1)
    R = len(masks)
    stats = {m: np.zeros((R, len(STAT_COLUMNS))) for m in MEASURES}
    hist = {m: np.zeros((R, len(bins) - 1), np.int64) for m in MEASURES}
    vol_mean_F = np.full(R, np.nan)
    for r, m in enumerate(masks):
        for name in MEASURES:
            stats[name][r], hist[name][r] = _stats(np.asarray(fields[name]).reshape(-1)[m], bins)
        Fm = F[m]
        Fm = Fm[np.isfinite(Fm).all(axis=(1, 2))]
        if len(Fm):
            vol_mean_F[r] = volumetric_strain(Fm.mean(axis=0) - np.eye(3))
    return stats, hist, vol_mean_F, com, voi


def _one_grid(pairs: Sequence[Any], names: Sequence[str] | None, phases: Any, particles: Any,
              voxel_size_um: Any) -> list[PairResult]:
    """The results (read where given as paths), checked to lie on one grid and one node
    grid with the phases and particles."""
    results = [_as_pair(p) for p in pairs]
    if not results:
        raise ParameterError("no DVC result given", "give at least one pair result")
    if names is None:
        names = [input_name("DVC result", p) if isinstance(p, (str, os.PathLike))
                 else f"DVC result {i + 1}" for i, p in enumerate(pairs)]
    check_region_inputs(results, names, phases, particles, voxel_size_um)
    first = results[0]
    for r in results[1:]:
        if tuple(r.grid_shape) != tuple(first.grid_shape) or \
                not np.allclose(r.nodes, first.nodes):
            raise ShapeMismatchError("the DVC results are on different node grids",
                                     "give fields on one grid (e.g. cumulative T0 -> Tk)")
    return results


def region_statistics(pairs: Sequence[Any], phases: Any = None, particles: Any = None,
                      interfaces: tuple[float, float] | None = None,
                      voxel_size_um: Any = None, cube_um: float | str | None = "auto",
                      voi_um: float | str | None = "auto", steps: Sequence[int] | None = None,
                      bins: np.ndarray = DEFAULT_BINS, min_particle_voxels: int = 1,
                      names: Sequence[str] | None = None) -> RegionStats:
    """Strain statistics over electrode halves, sub-volume cubes and particle VOIs.

    Parameters
    ----------
    pairs : sequence of PairResult or paths
        Fields on one node grid, e.g. the cumulative T0 -> Tk results of a series.
    phases : array, Volume, path, LazyVolume or h5py.Dataset, optional
        Phase codes on the reference grid, for the interfaces.
    particles : array, Volume, path, LazyVolume or h5py.Dataset, optional
        Particle ids on the reference grid (0 = none), for the particle VOIs.
    interfaces : (float, float), optional
        Collector and separator interface z (voxels); overrides ``phases``. Each of the
        electrode and its halves must hold cells of the grid.
    voxel_size_um : float or 3 float, optional
        Voxel size (z, y, x) for the cube/VOI sizes and the strain; default: from the
        result files. The results, phases and particles must agree in voxel size, shape
        and origin with the results' reference volume (:func:`check_region_inputs`); given
        explicitly, it states the grid of all of them (their differences are only logged).
    cube_um, voi_um : float, "auto" or None
        Edge of the sub-volume cubes and of the particle VOIs (um; at least one cell of the
        grid); None (or 0) skips them; ``"auto"``: the reference's 40 and 15 um where they
        are at least one cell and the voxel size is known, else none (logged).
    steps : sequence of int, optional
        Step label of each field, all different (default 1, 2, ...).
    bins : numpy.ndarray
        Histogram bin edges (strain).
    min_particle_voxels : int
        Smaller particles get no VOI.
    names : sequence of str, optional
        How messages name the results (default: their paths, else their positions).

    Returns
    -------
    RegionStats
        Statistics, histograms, det(mean F) - 1 per step and region, and the particle
        centres and VOIs per step (module notes).

    Raises
    ------
    ParameterError
        No result, repeated step labels, regions that do not fit the grid.
    ShapeMismatchError
        Results on different node grids.
    GridMismatchError
        Results, phases or particles on different grids.
    """
    results = _one_grid(pairs, names, phases, particles, voxel_size_um)
    first = results[0]
    steps = _check_steps(steps, len(results))
    vs = voxel_size_um if voxel_size_um is not None else first.voxel_size_um
    origin = np.asarray(first.params.get("roi_origin", (0, 0, 0)), float)
    layout = region_layout(first.nodes, first.grid_shape, first.node_spacing, vs, origin,
                           phases, particles, interfaces, cube_um, voi_um, min_particle_voxels)
    vs = voxel_size_triple(vs)
    per_step = [_step_statistics(res, layout, first, vs, origin, bins) for res in results]
    stats = {m: np.stack([p[0][m] for p in per_step]) for m in MEASURES}
    hist = {m: np.stack([p[1][m] for p in per_step]) for m in MEASURES}
    params = {"cube_um": layout.cube_um, "voi_um": layout.voi_um, "roi_origin": origin.tolist(),
              "interfaces_from": "given" if interfaces is not None else
              ("phases" if phases is not None else "grid"),
              "min_particle_voxels": min_particle_voxels}
    return RegionStats(steps, layout.names, layout.kinds,
                       np.array(layout.bounds).reshape(-1, 2, 3), stats, hist,
                       np.asarray(bins, float), np.stack([p[2] for p in per_step]),
                       layout.particle_ids, layout.com_ref,
                       np.stack([p[3] for p in per_step]), np.stack([p[4] for p in per_step]),
                       layout.interfaces, vs, params)


def write_regions(path: str | os.PathLike, rs: RegionStats,
                  provenance: dict | None = None) -> tuple[Path, Path]:
    """Write ``regions.h5`` and the CSV table beside it, atomically.

    Parameters
    ----------
    path : path-like
        The HDF5 file (layout in the module notes); the table gets the same name with
        ``.csv`` (columns :data:`CSV_COLUMNS`, floats to :data:`CSV_DIGITS` digits).
    rs : RegionStats
        The statistics.
    provenance : dict, optional
        Provenance record (default: one made for this call).

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The HDF5 file and the CSV table.
    """
    import h5py

    from anodetwin.io import atomic_path, atomic_write_text, make_provenance

    prov = provenance or make_provenance("dvc-regions", [], rs.params)
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = 1
        f.attrs["voxel_size_um"] = rs.voxel_size_um
        f.attrs["interfaces_voxels"] = np.array(rs.interfaces)
        f.attrs["params"] = json.dumps(rs.params)
        f.attrs["stat_columns"] = json.dumps(STAT_COLUMNS)
        f.attrs["provenance"] = json.dumps(prov, default=str)
        for name, data in _datasets(rs).items():
            f.create_dataset(name, data=data)
    table = path.with_suffix(".csv")
    atomic_write_text(table, csv_text(list(rs.rows()), columns=CSV_COLUMNS,
                                      digits=CSV_DIGITS))
    return path, table


#: Columns of ``regions.csv``: one row per step, region and measure.
CSV_COLUMNS = ("step", "region", "kind", "measure", *STAT_COLUMNS, "volumetric_of_mean_F")
#: Digits of the floats in ``regions.csv``: None, the shortest text that reads back exactly.
CSV_DIGITS = None


def _datasets(rs: RegionStats) -> dict[str, np.ndarray]:
    """The datasets of ``regions.h5`` by path (module notes)."""
    out = {"steps": np.array(rs.steps), "regions/name": np.array(rs.names, dtype="S"),
           "regions/kind": np.array(rs.kinds, dtype="S"), "regions/bounds_voxels": rs.bounds}
    for m in rs.stats:
        out[f"stats/{m}"] = rs.stats[m]
        out[f"hist/{m}"] = rs.hist[m]
    out.update({"hist/edges": rs.edges, "volumetric_of_mean_F": rs.volumetric_of_mean_F,
                "particles/id": rs.particle_ids, "particles/com_ref": rs.com_ref,
                "particles/com": rs.com, "particles/voi_bounds": rs.voi_bounds})
    return out
