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
grid is the electrode. Phases and particle labels are on the grid of the correlated
reference volume (the ``roi_origin`` of a cropped correlation is taken into account) and
are read slab by slab, so they may be larger than memory.

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

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.dvc.correlate import interpolate_displacement
from anodetwin.dvc.pair import PairResult, pair_strain, read_pair
from anodetwin.dvc.strain import cell_mean
from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io.agree import input_name, require_same_grid, require_series_grid
from anodetwin.phases import ELECTRODE_PHASES, PHASE

__all__ = ["MEASURES", "STAT_COLUMNS", "DEFAULT_BINS", "RegionStats", "cell_mean",
           "electrode_interfaces", "particle_centres", "region_statistics", "write_regions",
           "check_region_inputs"]

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
        """One statistic, e.g. ``value(6, "separator_half", "volumetric", "mean")``."""
        s, r = self.steps.index(step), self.names.index(region)
        return float(self.stats[measure][s, r, STAT_COLUMNS.index(stat)])

    def rows(self) -> Iterator[dict]:
        """One dict per step, region and measure (the CSV rows)."""
        for s, step in enumerate(self.steps):
            for r, (name, kind) in enumerate(zip(self.names, self.kinds, strict=True)):
                for m, a in self.stats.items():
                    yield {"step": step, "region": name, "kind": kind, "measure": m,
                           **{c: float(v) for c, v in zip(STAT_COLUMNS, a[s, r], strict=True)},
                           "volumetric_of_mean_F": float(self.volumetric_of_mean_F[s, r])}


def _slabs(labels: Any) -> Iterator[tuple[int, np.ndarray]]:
    """(z0, slab) of a label volume given as array, Volume or path, read lazily."""
    from anodetwin.io import open_volume

    if isinstance(labels, (str, os.PathLike)):
        with open_volume(labels) as src:
            z = 0
            for block in src.lazy(progress=False).blocks():
                yield z, block
                z += len(block)
        return
    a = np.asarray(getattr(labels, "data", labels))
    if a.ndim != 3:
        raise ShapeMismatchError(f"label volume has {a.ndim} dimensions",
                                 "give a 3D (z, y, x) label volume")
    step = max(1, (64 << 20) // max(1, a[0].nbytes))
    for z in range(0, len(a), step):
        yield z, a[z: z + step]


def electrode_interfaces(phases: Any) -> tuple[float, float]:
    """z positions (voxels, between slices) of the collector and separator interfaces.

    Parameters
    ----------
    phases : array, Volume or path
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
        raise ParameterError("the phase volume has no slice that is mostly electrode "
                             f"(codes {ELECTRODE_PHASES})",
                             "give phases with the anodetwin codes or the interfaces as z")
    zc = z_cu.max() + 0.5 if z_cu.size else z_el.min() - 0.5
    z_sep = np.flatnonzero((sep > 0.5) & (np.arange(len(sep)) > zc))
    zs = z_sep.min() - 0.5 if z_sep.size else z_el.max() + 0.5
    return float(zc), float(zs)


def particle_centres(particles: Any, min_voxels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Ids and centres of mass (voxels, z, y, x) of labelled particles, slab by slab.

    Particles with fewer than ``min_voxels`` voxels are left out.
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
    """Raise :class:`~anodetwin.errors.GridMismatchError` unless the results' reference
    volumes agree with each other, and the phases and particle labels with them, in voxel
    size, shape and origin (:func:`anodetwin.io.agree.require_same_grid`; a result written
    before the reference grid was recorded is checked for its voxel size only)."""
    require_series_grid(results, names, voxel_size=voxel_size_um)
    for what, labels in (("phases", phases), ("particles", particles)):
        if labels is not None:
            require_same_grid(results[0], labels, f"the reference volume of {names[0]}",
                              input_name(what, labels), voxel_size=voxel_size_um)


def region_statistics(pairs: Sequence[Any], phases: Any = None, particles: Any = None,
                      interfaces: tuple[float, float] | None = None,
                      voxel_size_um: Any = None, cube_um: float | None = 40.0,
                      voi_um: float | None = 15.0, steps: Sequence[int] | None = None,
                      bins: np.ndarray = DEFAULT_BINS, min_particle_voxels: int = 1,
                      names: Sequence[str] | None = None) -> RegionStats:
    """Strain statistics over electrode halves, sub-volume cubes and particle VOIs.

    Parameters
    ----------
    pairs : sequence of PairResult or paths
        Fields on one node grid, e.g. the cumulative T0 -> Tk results of a series.
    phases : array, Volume or path, optional
        Phase codes on the reference grid, for the interfaces.
    particles : array, Volume or path, optional
        Particle ids on the reference grid (0 = none), for the particle VOIs.
    interfaces : (float, float), optional
        Collector and separator interface z (voxels); overrides ``phases``.
    voxel_size_um : float or 3 float, optional
        Voxel size (z, y, x) for the cube/VOI sizes and the strain; default: from the
        result files. The results, phases and particles must agree in voxel size, shape
        and origin with the results' reference volume (:func:`check_region_inputs`); given
        explicitly, it states the grid of all of them (their differences are only logged).
    cube_um, voi_um : float or None
        Edge of the sub-volume cubes and of the particle VOIs (um); None skips them.
    steps : sequence of int, optional
        Step label of each field (default 1, 2, ...).
    bins : numpy.ndarray
        Histogram bin edges (strain).
    min_particle_voxels : int
        Smaller particles get no VOI.
    names : sequence of str, optional
        How messages name the results (default: their paths, else their positions).
    """
    results = [_as_pair(p) for p in pairs]
    if not results:
        raise ParameterError("no DVC result given", "give at least one pair result")
    if names is None:
        names = [input_name("DVC result", p) if isinstance(p, (str, os.PathLike))
                 else f"DVC result {i + 1}" for i, p in enumerate(pairs)]
    check_region_inputs(results, names, phases, particles, voxel_size_um)
    first = results[0]
    gshape = tuple(first.grid_shape)
    for r in results[1:]:
        if tuple(r.grid_shape) != gshape or not np.allclose(r.nodes, first.nodes):
            raise ShapeMismatchError("the DVC results are on different node grids",
                                     "give fields on one grid (e.g. cumulative T0 -> Tk)")
    vs = voxel_size_um if voxel_size_um is not None else first.voxel_size_um
    if vs is None and (cube_um or voi_um):
        raise ParameterError("the voxel size is unknown, needed for the cube/VOI sizes in um",
                             "give the voxel size (--voxel-size)")
    vs = np.broadcast_to(np.asarray(1.0 if vs is None else vs, float), (3,))
    origin = np.asarray(first.params.get("roi_origin", (0, 0, 0)), float)
    nodes = np.asarray(first.nodes, float).reshape(*gshape, 3) + origin
    centres = cell_mean(nodes).reshape(-1, 3)
    half_cell = (nodes[-1, -1, -1] - nodes[0, 0, 0]) / np.maximum(np.array(gshape) - 1, 1) / 2
    lo_all, hi_all = centres.min(axis=0) - half_cell, centres.max(axis=0) + half_cell
    if interfaces is not None:
        zc, zs = (float(v) for v in interfaces)
        if not zs > zc:
            raise ParameterError(f"interfaces {interfaces}: separator z is not above the "
                                 "collector z", "give z_collector < z_separator (voxels)")
    elif phases is not None:
        zc, zs = electrode_interfaces(phases)
    else:
        zc, zs = float(lo_all[0]), float(hi_all[0])
    names, kinds, masks, bounds = [], [], [], []

    def add(name: str, kind: str, lo: np.ndarray, hi: np.ndarray) -> None:
        names.append(name)
        kinds.append(kind)
        masks.append(np.all((centres >= lo) & (centres < hi), axis=1))
        bounds.append(np.stack([lo, hi]))

    mid = (zc + zs) / 2
    add("electrode", "electrode", np.r_[zc, lo_all[1:]], np.r_[zs, hi_all[1:]])
    add("collector_half", "half", np.r_[zc, lo_all[1:]], np.r_[mid, hi_all[1:]])
    add("separator_half", "half", np.r_[mid, lo_all[1:]], np.r_[zs, hi_all[1:]])
    if cube_um:
        size = cube_um / vs
        lo_e, hi_e = np.r_[zc, lo_all[1:]], np.r_[zs, hi_all[1:]]
        tiles = [_tiles(lo_e[a], hi_e[a], size[a]) for a in range(3)]
        for i, tz in enumerate(tiles[0]):
            for j, ty in enumerate(tiles[1]):
                for k, tx in enumerate(tiles[2]):
                    add(f"cube_z{i}_y{j}_x{k}", "cube", np.array([tz[0], ty[0], tx[0]]),
                        np.array([tz[1], ty[1], tx[1]]))
    pid = np.zeros(0, int)
    com_ref = np.zeros((0, 3))
    if particles is not None and voi_um:
        pid, com_ref = particle_centres(particles, min_particle_voxels)
    n_fixed = len(names)
    half_voi = (voi_um or 0) / vs / 2
    for p, c in zip(pid, com_ref, strict=True):
        add(f"particle_{p}", "particle", c - half_voi, c + half_voi)
    steps = list(steps) if steps is not None else list(range(1, len(results) + 1))
    if len(steps) != len(results):
        raise ParameterError(f"{len(steps)} step labels for {len(results)} fields",
                             "give one step label per field")
    S, R, B = len(results), len(names), len(bins) - 1
    stats = {m: np.zeros((S, R, len(STAT_COLUMNS))) for m in MEASURES}
    hist = {m: np.zeros((S, R, B), np.int64) for m in MEASURES}
    vol_mean_F = np.full((S, R), np.nan)
    com = np.zeros((S, len(pid), 3))
    voi_bounds = np.zeros((S, len(pid), 2, 3))
    for s, res in enumerate(results):
        st = pair_strain(res, vs)  # um displacements over um node spacings, per axis
        fields = {"volumetric": st.volumetric, "deviatoric": st.deviatoric,
                  "hencky_volumetric": st.hencky_volumetric, **st.small}
        F = np.asarray(st.F).reshape(-1, 3, 3)
        u = np.asarray(res.displacement, float)
        region_masks = list(masks)
        if len(pid):
            u_com = interpolate_displacement(first.nodes, gshape, u, com_ref - origin)
            com[s] = com_ref + u_com
            voi_bounds[s] = np.stack([com[s] - half_voi, com[s] + half_voi], axis=1)
            x_cells = centres + cell_mean(u.reshape(*gshape, 3)).reshape(-1, 3)
            for i in range(len(pid)):
                region_masks[n_fixed + i] = np.all((x_cells >= voi_bounds[s, i, 0])
                                                   & (x_cells < voi_bounds[s, i, 1]), axis=1)
        for r, m in enumerate(region_masks):
            for name in MEASURES:
                stats[name][s, r], hist[name][s, r] = _stats(
                    np.asarray(fields[name]).reshape(-1)[m], bins)
            Fm = F[m]
            Fm = Fm[np.isfinite(Fm).all(axis=(1, 2))]
            if len(Fm):
                vol_mean_F[s, r] = np.linalg.det(Fm.mean(axis=0)) - 1
    params = {"cube_um": cube_um, "voi_um": voi_um, "roi_origin": origin.tolist(),
              "interfaces_from": "given" if interfaces is not None else
              ("phases" if phases is not None else "grid"),
              "min_particle_voxels": min_particle_voxels}
    return RegionStats(steps, names, kinds, np.array(bounds).reshape(-1, 2, 3), stats, hist,
                       np.asarray(bins, float), vol_mean_F, pid, com_ref, com, voi_bounds,
                       (zc, zs), vs, params)


def write_regions(path: str | os.PathLike, rs: RegionStats,
                  provenance: dict | None = None) -> tuple[Path, Path]:
    """Write ``regions.h5`` (layout in the module notes) and the CSV table beside it
    (same name, ``.csv``), atomically. Returns both paths."""
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
        f.create_dataset("steps", data=np.array(rs.steps))
        f.create_dataset("regions/name", data=np.array(rs.names, dtype="S"))
        f.create_dataset("regions/kind", data=np.array(rs.kinds, dtype="S"))
        f.create_dataset("regions/bounds_voxels", data=rs.bounds)
        for m in rs.stats:
            f.create_dataset(f"stats/{m}", data=rs.stats[m])
            f.create_dataset(f"hist/{m}", data=rs.hist[m])
        f.create_dataset("hist/edges", data=rs.edges)
        f.create_dataset("volumetric_of_mean_F", data=rs.volumetric_of_mean_F)
        f.create_dataset("particles/id", data=rs.particle_ids)
        f.create_dataset("particles/com_ref", data=rs.com_ref)
        f.create_dataset("particles/com", data=rs.com)
        f.create_dataset("particles/voi_bounds", data=rs.voi_bounds)
    buf = io.StringIO()
    rows = list(rs.rows())
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["step"])
    w.writeheader()
    w.writerows(rows)
    table = path.with_suffix(".csv")
    atomic_write_text(table, buf.getvalue())
    return path, table
