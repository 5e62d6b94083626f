"""Simulated versus measured heterogeneity, per step and region, and the pass/fail table.

Regions (cells of the DVC grid inside the electrode, reference configuration): the whole
electrode and its collector-side and separator-side halves (split at the mid-plane).
Per region and measure (``volumetric`` = J - 1, ``ezz``): for the simulation and the DVC the
mean, std and 5/50/95th percentiles; the difference of the means; the 1-Wasserstein distance
and the two-sample Kolmogorov-Smirnov statistic of their distributions; Pearson and
Spearman correlation of the cell values. Per step: the displacement RMSE (um) over the used
nodes, the separator/collector asymmetry (ratio of the halves' mean J - 1, and their
difference: ``half_difference``), the axial share
(mean e_zz / mean J - 1) and the thickness change (mean e_zz x electrode thickness), each
for both.

Particle-centred VOIs (with ``[microstructure]`` labels holding particle ids): the DVC
cells within ``voi_scale`` equivalent-sphere radii of each particle's centroid (reference
configuration); per VOI the mean J - 1 of the simulation and the DVC, and per step their
Pearson correlation over the VOIs, mean absolute difference and RMSE (the particle-scale
heterogeneity: which particles swell more).

Checks (``[tolerances]``), on every step: Pearson of J - 1 on the electrode >= min;
|mean difference| of J - 1 and e_zz on the electrode and both halves <= max; Wasserstein of
J - 1 on the electrode <= max; |half_difference sim - DVC| <= max (a difference of mean
strains: well conditioned where the ratio is not, e.g. a collector half that barely swells).
"""

from __future__ import annotations

import numpy as np

from anodetwin.validate.compare import StepPair
from anodetwin.validate.config import Tolerances

__all__ = ["REGIONS", "MEASURES", "region_masks", "step_metrics", "checks", "particle_table",
           "particle_metrics"]

REGIONS = ("electrode", "collector_half", "separator_half")
MEASURES = ("volumetric", "ezz")


def region_masks(p: StepPair) -> dict[str, np.ndarray]:
    """Cell masks of the regions (module notes)."""
    z = p.cells_um[..., 0]
    mid = 0.5 * (p.electrode_z_um[0] + p.electrode_z_um[1])
    return {"electrode": p.valid, "collector_half": p.valid & (z < mid),
            "separator_half": p.valid & (z >= mid)}


def _values(strain, measure: str) -> np.ndarray:
    return strain.volumetric if measure == "volumetric" else strain.small[measure]


def _compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Statistics of sim ``a`` and DVC ``b`` (1D, same cells)."""
    from scipy import stats

    out = {}
    for who, v in (("sim", a), ("dvc", b)):
        if v.size:
            p5, p50, p95 = np.percentile(v, (5, 50, 95))
            out.update({f"{who}_mean": float(v.mean()), f"{who}_std": float(v.std()),
                        f"{who}_p5": float(p5), f"{who}_p50": float(p50),
                        f"{who}_p95": float(p95)})
        else:
            out.update({f"{who}_{k}": float("nan") for k in ("mean", "std", "p5", "p50",
                                                               "p95")})
    n = a.size
    out["cells"] = int(n)
    out["mean_difference"] = out["sim_mean"] - out["dvc_mean"]
    out["wasserstein"] = float(stats.wasserstein_distance(a, b)) if n else float("nan")
    out["ks"] = float(stats.ks_2samp(a, b).statistic) if n else float("nan")
    varied = n > 2 and np.ptp(a) > 0 and np.ptp(b) > 0
    out["pearson"] = float(stats.pearsonr(a, b)[0]) if varied else float("nan")
    out["spearman"] = float(stats.spearmanr(a, b)[0]) if varied else float("nan")
    return out


def particle_table(labels) -> list[dict]:
    """The particles of :class:`anodetwin.mesh.voxel.Labels` with particle ids: id,
    centroid (um, z y x), volume (um^3) and equivalent-sphere radius (um)."""
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
    return [{"particle": int(i), "centre_um": (origin + c * vs).tolist(),
             "volume_um3": float(v), "radius_um": float((3 * v / (4 * np.pi)) ** (1 / 3))}
            for i, c, v in zip(ids, centres, vol)]


def particle_metrics(p: StepPair, particles: list[dict], scale: float = 1.5) -> dict:
    """Per particle-centred VOI the mean J - 1, simulated and measured, and their agreement
    over the VOIs (module notes)."""
    cells = p.cells_um[p.valid]
    sim = p.strain_sim.volumetric[p.valid]
    dvc = p.strain_dvc.volumetric[p.valid]
    vois = []
    for q in particles:
        sel = np.linalg.norm(cells - np.asarray(q["centre_um"]), axis=1) \
            <= scale * q["radius_um"]
        if sel.any():
            vois.append({"particle": q["particle"], "cells": int(sel.sum()),
                         "radius_um": q["radius_um"], "centre_um": q["centre_um"],
                         "sim_mean": float(sim[sel].mean()),
                         "dvc_mean": float(dvc[sel].mean())})
    a = np.array([v["sim_mean"] for v in vois])
    b = np.array([v["dvc_mean"] for v in vois])
    varied = a.size > 2 and np.ptp(a) > 0 and np.ptp(b) > 0
    return {"count": len(vois), "voi_scale": scale,
            "pearson": float(np.corrcoef(a, b)[0, 1]) if varied else float("nan"),
            "mean_abs_difference": float(np.abs(a - b).mean()) if a.size else float("nan"),
            "rmse": float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan"),
            "vois": vois}


def step_metrics(p: StepPair, particles: list[dict] | None = None,
                 voi_scale: float = 1.5) -> dict:
    """Metrics of one step (module notes); particle VOIs when ``particles``
    (:func:`particle_table`) are given."""
    masks = region_masks(p)
    regions = {}
    for name, m in masks.items():
        regions[name] = {meas: _compare(_values(p.strain_sim, meas)[m],
                                        _values(p.strain_dvc, meas)[m]) for meas in MEASURES}
    nodes = np.isfinite(p.u_dvc_um).all(axis=1) & np.isfinite(p.u_sim_um).all(axis=1)
    rmse = float(np.sqrt(np.mean(np.sum((p.u_sim_um[nodes] - p.u_dvc_um[nodes]) ** 2,
                                        axis=1)))) if nodes.any() else float("nan")
    thickness = p.electrode_z_um[1] - p.electrode_z_um[0]
    derived = {}
    for who in ("sim", "dvc"):
        vol = {r: regions[r]["volumetric"][f"{who}_mean"] for r in REGIONS}
        ezz = regions["electrode"]["ezz"][f"{who}_mean"]
        derived[who] = {
            "asymmetry": vol["separator_half"] / vol["collector_half"]
            if vol["collector_half"] else float("nan"),
            "half_difference": vol["separator_half"] - vol["collector_half"],
            "axial_share": ezz / vol["electrode"] if vol["electrode"] else float("nan"),
            "thickness_change_um": ezz * thickness}
    out = {"step": p.step, "output": p.output, "time_s": p.time_s,
           "nodes_used": int(nodes.sum()), "displacement_rmse_um": rmse,
           "regions": regions, "derived": derived}
    if particles:
        out["particles"] = particle_metrics(p, particles, voi_scale)
    return out


def checks(metrics: list[dict], tol: Tolerances) -> list[dict]:
    """The pass/fail table: one row per step and check (module notes)."""
    rows = []

    def add(m, name, region, value, limit, ok):
        rows.append({"step": m["step"], "output": m["output"], "check": name,
                     "region": region, "value": value, "limit": limit,
                     "passed": bool(ok) and bool(np.isfinite(value))})

    for m in metrics:
        e = m["regions"]["electrode"]["volumetric"]
        add(m, "pearson_volumetric >= min", "electrode", e["pearson"],
            tol.min_pearson_volumetric, e["pearson"] >= tol.min_pearson_volumetric)
        for region in REGIONS:
            for meas in MEASURES:
                d = m["regions"][region][meas]["mean_difference"]
                add(m, f"|mean difference {meas}| <= max", region, d, tol.max_mean_difference,
                    abs(d) <= tol.max_mean_difference)
        add(m, "wasserstein_volumetric <= max", "electrode", e["wasserstein"],
            tol.max_wasserstein_volumetric, e["wasserstein"] <= tol.max_wasserstein_volumetric)
        da = m["derived"]["sim"]["half_difference"] - m["derived"]["dvc"]["half_difference"]
        add(m, "|asymmetry sim - dvc| <= max", "halves", da, tol.max_asymmetry_difference,
            abs(da) <= tol.max_asymmetry_difference)
    return rows
