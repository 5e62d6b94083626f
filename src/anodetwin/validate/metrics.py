"""Simulated versus measured heterogeneity, per step and region, and the pass/fail table.

Regions (cells of the DVC grid inside the electrode, reference configuration): the whole
electrode and its collector-side and separator-side halves (split at the mid-plane).
Per region and measure (``volumetric`` = J - 1, ``ezz``): for the simulation and the DVC the
mean, std and 5/50/95th percentiles; the difference of the means; the 1-Wasserstein distance
and the two-sample Kolmogorov-Smirnov statistic of their distributions; Pearson and
Spearman correlation of the cell values (:class:`RegionStatistics`). Per step
(:class:`StepMetrics`): the displacement RMSE (um) over the used nodes, the
separator/collector asymmetry (ratio of the halves' mean J - 1, and their difference:
``half_difference``), the axial share (mean e_zz / mean J - 1) and the thickness change
(mean e_zz x electrode thickness), each for both (:class:`DerivedMetrics`).

Particle-centred VOIs (with ``[microstructure]`` labels holding particle ids): the DVC
cells within ``voi_scale`` equivalent-sphere radii of each particle's centroid (reference
configuration, :func:`particle_spheres`); per VOI the mean J - 1 of the simulation and the
DVC (:class:`ParticleVoi`), and per step their Pearson correlation over the VOIs, mean
absolute difference and RMSE (:class:`ParticleMetrics`: the particle-scale heterogeneity,
which particles swell more).

Checks (``[tolerances]``), on every step (:class:`Check`): Pearson of J - 1 on the electrode
>= min; |mean difference| of J - 1 and e_zz on the electrode and both halves <= max;
Wasserstein of J - 1 on the electrode <= max; |half_difference sim - DVC| <= max (a
difference of mean strains: well conditioned where the ratio is not, e.g. a collector half
that barely swells).

The results are frozen dataclasses that also read as mappings (``m["regions"]``,
``dict(check)``), field by field in the order of the files they are written to;
``as_dict()`` gives the plain, JSON-ready form (``metrics.json``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from anodetwin.validate.compare import StepPair
from anodetwin.validate.config import Tolerances

__all__ = ["REGIONS", "MEASURES", "SIDES", "FieldMapping", "RegionStatistics",
           "DerivedMetrics", "ParticleSphere", "ParticleVoi", "ParticleMetrics", "StepMetrics",
           "Check", "region_masks", "particle_spheres", "particle_metrics", "step_metrics",
           "checks"]

REGIONS = ("electrode", "collector_half", "separator_half")
MEASURES = ("volumetric", "ezz")
SIDES = ("sim", "dvc")


def _plain(value: Any) -> Any:
    """``value`` with mappings as dicts and tuples as lists, recursively (JSON-ready)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class FieldMapping(Mapping):
    """Read-only mapping view of a dataclass: ``r["name"]`` is ``r.name``; a field that is
    None is absent (an optional part not computed)."""

    __slots__ = ()

    def _names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: str) -> Any:
        if key in self._names():
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def as_dict(self) -> dict:
        """The fields as a plain dict (nested results as dicts, sequences as lists).

        Returns
        -------
        dict
            JSON-ready: what ``metrics.json`` holds for this result.
        """
        return _plain(self)


@dataclass(frozen=True, eq=False)
class RegionStatistics(FieldMapping):
    """One measure on the valid cells of one region, simulated (``sim_``) and measured
    (``dvc_``); strains are dimensionless (NaN where the region holds no cell).

    Attributes
    ----------
    sim_mean, sim_std, sim_p5, sim_p50, sim_p95 : float
        Mean, standard deviation and 5th/50th/95th percentiles of the simulated cells.
    dvc_mean, dvc_std, dvc_p5, dvc_p50, dvc_p95 : float
        The same of the measured cells.
    cells : int
        Number of cells compared.
    mean_difference : float
        ``sim_mean - dvc_mean``.
    wasserstein, ks : float
        1-Wasserstein distance and two-sample Kolmogorov-Smirnov statistic of the two
        distributions.
    pearson, spearman : float
        Correlation of the cell values (NaN with fewer than 3 cells or a constant field).
    """

    sim_mean: float
    sim_std: float
    sim_p5: float
    sim_p50: float
    sim_p95: float
    dvc_mean: float
    dvc_std: float
    dvc_p5: float
    dvc_p50: float
    dvc_p95: float
    cells: int
    mean_difference: float
    wasserstein: float
    ks: float
    pearson: float
    spearman: float


@dataclass(frozen=True, eq=False)
class DerivedMetrics(FieldMapping):
    """Through-thickness measures of one field (simulated or measured) of one step, from
    the means of its regions (:class:`RegionStatistics`).

    Attributes
    ----------
    asymmetry : float
        Mean J - 1 of the separator half over that of the collector half (NaN when the
        latter is 0).
    half_difference : float
        Mean J - 1 of the separator half minus that of the collector half.
    axial_share : float
        Mean e_zz over mean J - 1 of the electrode (NaN when the latter is 0).
    thickness_change_um : float
        Mean e_zz times the electrode's thickness (um).
    """

    asymmetry: float
    half_difference: float
    axial_share: float
    thickness_change_um: float


@dataclass(frozen=True)
class ParticleSphere:
    """A particle of a labels volume as its equivalent sphere.

    The centroid is the mean of the particle's voxel centres; the sphere has the particle's
    volume. Particle-centred VOIs are balls around the centroid with radii in units of
    that sphere's radius.

    Attributes
    ----------
    particle : int
        Particle id in the labels.
    centre_um : tuple of 3 float
        Centroid (z, y, x, um) in the labels' frame.
    volume_um3 : float
        Volume (um^3): voxel count times the voxel volume.
    radius_um : float
        Radius of the sphere of that volume (um).
    """

    particle: int
    centre_um: tuple
    volume_um3: float
    radius_um: float


@dataclass(frozen=True, eq=False)
class ParticleVoi(FieldMapping):
    """The DVC cells around one particle (module notes): the valid cells whose centre lies
    within ``voi_scale`` equivalent-sphere radii of its centroid; a row of
    ``particles.csv``.

    Attributes
    ----------
    particle : int
        Particle id.
    cells : int
        Valid cells in the VOI.
    radius_um : float
        The particle's equivalent-sphere radius (um).
    centre_um : tuple of 3 float
        Its centroid (z, y, x, um).
    sim_mean, dvc_mean : float
        Mean J - 1 of the VOI's cells, simulated and measured.
    """

    particle: int
    cells: int
    radius_um: float
    centre_um: tuple
    sim_mean: float
    dvc_mean: float


@dataclass(frozen=True, eq=False)
class ParticleMetrics(FieldMapping):
    """Simulated against measured mean J - 1 over the particle-centred VOIs of one step.

    Attributes
    ----------
    count : int
        Number of VOIs holding at least one valid cell.
    voi_scale : float
        VOI radius over the particle's equivalent-sphere radius.
    pearson : float
        Correlation of the VOI means (NaN with fewer than 3 VOIs or constant means).
    mean_abs_difference, rmse : float
        Mean absolute and root-mean-square difference of the VOI means (NaN without VOIs).
    vois : tuple of ParticleVoi
        The VOIs, in particle order.
    """

    count: int
    voi_scale: float
    pearson: float
    mean_abs_difference: float
    rmse: float
    vois: tuple


@dataclass(frozen=True, eq=False)
class StepMetrics(FieldMapping):
    """The metrics of one DVC step against its simulated counterpart.

    Reads as a mapping too (``m["regions"]["electrode"]["volumetric"]["pearson"]``);
    :meth:`~FieldMapping.as_dict` gives its entry of ``metrics.json``.

    Attributes
    ----------
    step : int
        DVC step k (T0 -> Tk).
    output : str
        The simulation output compared.
    time_s : float
        Its time (s).
    nodes_used : int
        DVC nodes where both displacements are defined.
    displacement_rmse_um : float
        RMS of the displacement difference over those nodes (um; NaN without nodes).
    regions : dict of str to dict of str to RegionStatistics
        Per region (:data:`REGIONS`) and measure (:data:`MEASURES`).
    derived : dict of str to DerivedMetrics
        Per side (:data:`SIDES`: ``"sim"``, ``"dvc"``).
    particles : ParticleMetrics or None
        The particle-centred VOIs (None, and absent from the mapping, without labels).
    """

    step: int
    output: str
    time_s: float
    nodes_used: int
    displacement_rmse_um: float
    regions: dict
    derived: dict
    particles: ParticleMetrics | None = None


@dataclass(frozen=True, eq=False)
class Check(FieldMapping):
    """One row of the pass/fail table (``checks.csv``: its columns are the fields, in
    order).

    Attributes
    ----------
    step : int
        DVC step.
    output : str
        Simulation output.
    check : str
        What is checked, e.g. ``"pearson_volumetric >= min"``.
    region : str
        Region (or ``"halves"``).
    value, limit : float
        The checked value and its tolerance.
    passed : bool
        The comparison holds and the value is finite.
    """

    step: int
    output: str
    check: str
    region: str
    value: float
    limit: float
    passed: bool


def region_masks(p: StepPair) -> dict[str, np.ndarray]:
    """Cell masks of the regions (module notes).

    Parameters
    ----------
    p : StepPair
        One step on the DVC grid.

    Returns
    -------
    dict of str to ndarray of bool, shape of the cell grid (nz, ny, nx)
        ``electrode`` (the valid cells) and its ``collector_half`` and ``separator_half``
        (cell centre below / at or above the electrode's mid-plane).
    """
    z = p.cells_um[..., 0]
    mid = 0.5 * (p.electrode_z_um[0] + p.electrode_z_um[1])
    return {"electrode": p.valid, "collector_half": p.valid & (z < mid),
            "separator_half": p.valid & (z >= mid)}


def _values(strain, measure: str) -> np.ndarray:
    return strain.volumetric if measure == "volumetric" else strain.small[measure]


def _summary(v: np.ndarray) -> tuple[float, ...]:
    """Mean, std and 5/50/95th percentiles of ``v`` (NaN when empty)."""
    if not v.size:
        return (float("nan"),) * 5
    p5, p50, p95 = np.percentile(v, (5, 50, 95))
    return float(v.mean()), float(v.std()), float(p5), float(p50), float(p95)


def _compare(a: np.ndarray, b: np.ndarray) -> RegionStatistics:
    """Statistics of sim ``a`` and DVC ``b`` (1D, same cells)."""
    from scipy import stats

    sim, dvc = _summary(a), _summary(b)
    n = a.size
    nan = float("nan")
    varied = n > 2 and np.ptp(a) > 0 and np.ptp(b) > 0
    return RegionStatistics(
        *sim, *dvc, cells=int(n), mean_difference=sim[0] - dvc[0],
        wasserstein=float(stats.wasserstein_distance(a, b)) if n else nan,
        ks=float(stats.ks_2samp(a, b).statistic) if n else nan,
        pearson=float(stats.pearsonr(a, b)[0]) if varied else nan,
        spearman=float(stats.spearmanr(a, b)[0]) if varied else nan)


def particle_spheres(labels) -> list[ParticleSphere]:
    """The particles of a labels volume as equivalent spheres.

    Parameters
    ----------
    labels : anodetwin.mesh.voxel.Labels
        Labels with particle ids (``particles``: int array (z, y, x), 0 = none), their
        ``voxel_size_um`` (z, y, x, um) and ``origin_um`` (centre of voxel 0, um).

    Returns
    -------
    list of ParticleSphere
        One per particle id present, in id order: centroid (z, y, x, um), volume (um^3)
        and equivalent-sphere radius (um).
    """
    from scipy import ndimage

    pa = np.asarray(labels.particles)
    counts = np.bincount(pa.ravel())
    ids = np.flatnonzero(counts)
    ids = ids[ids > 0]
    if not ids.size:
        return []
    vs = np.asarray(labels.voxel_size_um, float)
    origin = np.asarray(labels.origin_um, float)
    centres = np.asarray(ndimage.center_of_mass(pa > 0, pa, ids), float)
    vol = counts[ids] * float(np.prod(vs))
    return [ParticleSphere(int(i), tuple((origin + c * vs).tolist()), float(v),
                           float((3 * v / (4 * np.pi)) ** (1 / 3)))
            for i, c, v in zip(ids, centres, vol)]


def particle_metrics(p: StepPair, particles: Sequence[ParticleSphere],
                     scale: float = 1.5) -> ParticleMetrics:
    """Per particle-centred VOI the mean J - 1, simulated and measured, and their agreement
    over the VOIs (module notes).

    Parameters
    ----------
    p : StepPair
        One step on the DVC grid.
    particles : sequence of ParticleSphere
        The particles (:func:`particle_spheres`), in the simulation frame (um).
    scale : float
        VOI radius over the particle's equivalent-sphere radius.

    Returns
    -------
    ParticleMetrics
        The VOIs holding valid cells and the agreement of their means.
    """
    cells = p.cells_um[p.valid]
    sim = p.strain_sim.volumetric[p.valid]
    dvc = p.strain_dvc.volumetric[p.valid]
    vois = []
    for q in particles:
        sel = np.linalg.norm(cells - np.asarray(q.centre_um), axis=1) <= scale * q.radius_um
        if sel.any():
            vois.append(ParticleVoi(q.particle, int(sel.sum()), q.radius_um, q.centre_um,
                                    float(sim[sel].mean()), float(dvc[sel].mean())))
    a = np.array([v.sim_mean for v in vois])
    b = np.array([v.dvc_mean for v in vois])
    varied = a.size > 2 and np.ptp(a) > 0 and np.ptp(b) > 0
    nan = float("nan")
    return ParticleMetrics(
        len(vois), scale, float(np.corrcoef(a, b)[0, 1]) if varied else nan,
        float(np.abs(a - b).mean()) if a.size else nan,
        float(np.sqrt(np.mean((a - b) ** 2))) if a.size else nan, tuple(vois))


def _derived(regions: dict, who: str, thickness_um: float) -> DerivedMetrics:
    """Asymmetry, half difference, axial share and thickness change of side ``who``."""
    vol = {r: getattr(regions[r]["volumetric"], f"{who}_mean") for r in REGIONS}
    ezz = getattr(regions["electrode"]["ezz"], f"{who}_mean")
    nan = float("nan")
    return DerivedMetrics(
        vol["separator_half"] / vol["collector_half"] if vol["collector_half"] else nan,
        vol["separator_half"] - vol["collector_half"],
        ezz / vol["electrode"] if vol["electrode"] else nan, ezz * thickness_um)


def step_metrics(p: StepPair, particles: Sequence[ParticleSphere] | None = None,
                 voi_scale: float = 1.5) -> StepMetrics:
    """Metrics of one step (module notes).

    Parameters
    ----------
    p : StepPair
        One step on the DVC grid.
    particles : sequence of ParticleSphere, optional
        The particles (:func:`particle_spheres`): adds the particle-centred VOIs.
    voi_scale : float
        VOI radius over the particle's equivalent-sphere radius.

    Returns
    -------
    StepMetrics
        Region statistics, displacement RMSE (um), derived measures and VOIs.
    """
    masks = region_masks(p)
    regions = {name: {meas: _compare(_values(p.strain_sim, meas)[m],
                                     _values(p.strain_dvc, meas)[m]) for meas in MEASURES}
               for name, m in masks.items()}
    nodes = np.isfinite(p.u_dvc_um).all(axis=1) & np.isfinite(p.u_sim_um).all(axis=1)
    rmse = float(np.sqrt(np.mean(np.sum((p.u_sim_um[nodes] - p.u_dvc_um[nodes]) ** 2,
                                        axis=1)))) if nodes.any() else float("nan")
    thickness = p.electrode_z_um[1] - p.electrode_z_um[0]
    derived = {who: _derived(regions, who, thickness) for who in SIDES}
    return StepMetrics(p.step, p.output, p.time_s, int(nodes.sum()), rmse, regions, derived,
                       particle_metrics(p, particles, voi_scale) if particles else None)


def checks(metrics: Sequence[StepMetrics], tol: Tolerances) -> list[Check]:
    """The pass/fail table: one row per step and check (module notes).

    Parameters
    ----------
    metrics : sequence of StepMetrics
        Per step (:func:`step_metrics`).
    tol : Tolerances
        The limits (``[tolerances]``).

    Returns
    -------
    list of Check
        Per step, in this order: Pearson of J - 1 (electrode); |mean difference| per
        region and measure; Wasserstein of J - 1 (electrode); the halves' asymmetry.
    """
    rows = []

    def add(m, name, region, value, limit, ok):
        rows.append(Check(m.step, m.output, name, region, value, limit,
                          bool(ok) and bool(np.isfinite(value))))

    for m in metrics:
        e = m.regions["electrode"]["volumetric"]
        add(m, "pearson_volumetric >= min", "electrode", e.pearson,
            tol.min_pearson_volumetric, e.pearson >= tol.min_pearson_volumetric)
        for region in REGIONS:
            for meas in MEASURES:
                d = m.regions[region][meas].mean_difference
                add(m, f"|mean difference {meas}| <= max", region, d, tol.max_mean_difference,
                    abs(d) <= tol.max_mean_difference)
        add(m, "wasserstein_volumetric <= max", "electrode", e.wasserstein,
            tol.max_wasserstein_volumetric, e.wasserstein <= tol.max_wasserstein_volumetric)
        da = m.derived["sim"].half_difference - m.derived["dvc"].half_difference
        add(m, "|asymmetry sim - dvc| <= max", "halves", da, tol.max_asymmetry_difference,
            abs(da) <= tol.max_asymmetry_difference)
    return rows
