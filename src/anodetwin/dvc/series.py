"""DVC of a tomogram series: incremental fields T(k) -> T(k+1) and cumulative fields
T0 -> Tk, as in the reference.

Each increment is a pair correlation (:func:`anodetwin.dvc.correlate_pair`) on a regular
node grid of its own reference T(k), started from the previous increment's field. The
cumulative mapping of a T0 node X is the composition of the increments applied at the
positions already reached: ``x_0 = X``, ``x_k = x_{k-1} + u_{k-1,k}(x_{k-1})`` with each
increment interpolated (trilinearly) at the deformed positions, so ``u_0k(X) = x_k - X``.
Sub-voxel interpolation bias of each increment (~0.01-0.03 voxel with trilinear
registration) adds up along the chain; with ``refine=True`` (default) the composed field is
only the starting point of a direct T0 -> Tk correlation, which removes that drift while
keeping the robustness of small increments (``refine=False`` keeps the pure composition,
as in the reference). Nodes the direct correlation cannot measure (at large strain the
windows change too much from T0) but the increments carried keep the composed value
(counted in the result's ``composed_nodes``). Strain T0 -> Tk is computed from the
cumulative field on the T0 grid with the same Q8 operator as a pair, from displacements in
um over node spacings in um per axis (``voxel_size_um``; anisotropic voxels allowed). A node
excluded in any increment it passes through is excluded from then on (NaN), never
extrapolated.

Output folder layout::

    OUT/increment_<k>_<k+1>.h5   one pair result per increment (layout: anodetwin.dvc.pair)
    OUT/cumulative_0_<k>.h5      T0 -> Tk on the T0 grid (same layout; status/error/Phi of
                                 the first increment are not meaningful there and are
                                 replaced by the cumulative flag)
    OUT/series.json              inputs, parameters, per-step node counts and mean strains
    OUT/regions.h5, regions.csv  strain statistics of the cumulative fields over the
                                 electrode halves, 40 um cubes and particle VOIs (layout:
                                 anodetwin.dvc.regions)
    OUT/quicklook/T0_T<k>.png    mid-slices of J-1 and e_zz, histograms of the halves
    OUT/quicklook/series.png     mean strain of the electrode halves per step
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.dvc.correlate import interpolate_displacement, node_grid
from anodetwin.dvc.pair import FLAG, PairResult, correlate_pair, write_pair
from anodetwin.dvc.quicklook import pair_quicklook, series_quicklook
from anodetwin.dvc.regions import region_layout, region_statistics, write_regions
from anodetwin.dvc.strain import cell_strain
from anodetwin.errors import ParameterError
from anodetwin.io import atomic_write_json, make_provenance
from anodetwin.io.agree import Grid, input_name, require_same_grid, require_series_grid
from anodetwin.log import get_logger

__all__ = ["compose_increments", "correlate_series", "check_series_inputs"]

log = get_logger("dvc")


def compose_increments(nodes: np.ndarray, increments: list[PairResult]) -> list[np.ndarray]:
    """Cumulative displacements of ``nodes`` (T0 positions, voxels) through a list of
    increments; returns one (N, 3) array per step (NaN once a node is lost)."""
    x = np.asarray(nodes, float).copy()
    lost = np.zeros(len(x), bool)
    out = []
    for inc in increments:
        u = interpolate_displacement(inc.nodes, inc.grid_shape, inc.displacement, x)
        # a position whose surrounding increment nodes are all excluded is lost
        g = np.asarray(inc.nodes).reshape(*inc.grid_shape, 3)
        lo, hi = g[0, 0, 0], g[-1, -1, -1]
        step = (hi - lo) / np.maximum(np.array(inc.grid_shape) - 1, 1)
        idx = np.clip(np.rint((x - lo) / np.where(step > 0, step, 1)), 0,
                      np.array(inc.grid_shape) - 1).astype(int)
        flag = np.asarray(inc.flag).reshape(inc.grid_shape)
        lost |= flag[idx[:, 0], idx[:, 1], idx[:, 2]] == FLAG["excluded"]
        lost |= ~np.isfinite(u).all(axis=1)
        x = x + np.nan_to_num(u)
        cum = x - nodes
        cum[lost] = np.nan
        out.append(cum)
    return out


def check_series_inputs(volumes: list[Any], regions: dict | None = None,
                        voxel_size_um: Any = None, node_spacing: Any = None) -> Grid:
    """Check before any work that the volumes of a series, and the phases and particle
    labels of ``regions``, lie on one grid (voxel size, shape, origin:
    :func:`anodetwin.io.agree.require_series_grid`); an explicit ``voxel_size_um`` accepts
    differences of the files' voxel sizes and origins (logged). With ``node_spacing``, the
    regions (``regions``: keyword arguments of
    :func:`anodetwin.dvc.regions.region_statistics`) are laid out on the node grid the
    series will have (:func:`anodetwin.dvc.regions.region_layout`: interfaces that leave an
    electrode region without cells, cubes or VOIs below a cell are refused). Returns the
    common grid."""
    names = [input_name(f"T{k}", v) for k, v in enumerate(volumes)]
    grid = require_series_grid(volumes, names, voxel_size=voxel_size_um)
    regions = dict(regions or {})
    for key in ("phases", "particles"):
        if regions.get(key) is not None:
            require_same_grid(volumes[0], regions[key], names[0],
                              input_name(key, regions[key]), voxel_size=voxel_size_um)
    if node_spacing is not None and grid.shape is not None:
        nodes, gshape = node_grid(grid.shape, node_spacing)
        if grid.voxel_size is None:
            regions.update(cube_um=None, voi_um=None)
        region_layout(nodes, gshape, node_spacing, grid.voxel_size, **regions)
    return grid


def correlate_series(volumes: list[Any], out_dir: str | os.PathLike, voxel_size_um: Any = None,
                     inputs: list | None = None, refine: bool = True,
                     regions: dict | None = None, quicklook: bool = True,
                     **pair_kw: Any) -> dict:
    """Correlate a series of volumes and write increments and cumulative fields.

    Parameters
    ----------
    volumes : list of arrays, Volumes or paths
        T0, T1, ..., Tn (same shape).
    out_dir : path-like
        Output folder (created).
    voxel_size_um : float or 3 floats, optional
        Voxel size (z, y, x) of the volumes: the strain's length unit per axis, stored with
        the results; default: the volumes' own (Volume objects or files), else isotropic.
        The volumes (and ``regions``' phases and particles) must agree in voxel size, shape
        and origin (:func:`check_series_inputs`, before any work); given explicitly, it
        states the grid of all of them and their files' differences are only logged.
    inputs : list, optional
        Provenance input records.
    refine : bool
        Refine each cumulative field by a direct T0 -> Tk correlation started from the
        composed increments (see the module notes).
    regions : dict, optional
        Keyword arguments of :func:`anodetwin.dvc.regions.region_statistics` (``phases``,
        ``particles``, ``interfaces``, ``cube_um``, ``voi_um``); the statistics are always
        computed (halves of the node grid without phases or interfaces).
    quicklook : bool
        Write the quick-look PNGs.
    **pair_kw
        Passed to :func:`correlate_pair` (node_spacing, hws, pyramid, search_range, mask,
        processes, scheduler, ...).

    Returns
    -------
    dict
        The summary also written to ``series.json``.
    """
    if len(volumes) < 2:
        raise ParameterError(f"a series needs at least 2 volumes, got {len(volumes)}",
                             "give T0 T1 [T2 ...]")
    given = voxel_size_um  # explicit: states the grid of every input (mismatches logged)
    voxel_size_um = check_series_inputs(volumes, regions, given,
                                        pair_kw.get("node_spacing", 35)).voxel_size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    increments: list[PairResult] = []
    summary: dict = {"steps": [], "parameters": {k: v for k, v in pair_kw.items()
                                                 if k != "mask"}}
    for k in range(len(volumes) - 1):
        log.info("increment T%d -> T%d", k, k + 1)
        inc = correlate_pair(volumes[k], volumes[k + 1], voxel_size_um=voxel_size_um, **pair_kw)
        if voxel_size_um is None:  # from the volumes (Volume objects or files), if they say
            voxel_size_um = inc.voxel_size_um
        prov = make_provenance("dvc-series", inputs or [], {"increment": [k, k + 1],
                                                            **inc.params})
        write_pair(out / f"increment_{k}_{k + 1}.h5", inc, voxel_size_um, prov)
        increments.append(inc)
    first = increments[0]
    cumulative = compose_increments(first.nodes, increments)
    results: list[PairResult] = []
    for k, u in enumerate(cumulative, start=1):
        # the composed increments' flags: measured unless repaired in the first increment
        flag = np.where(np.isfinite(u).all(axis=1), FLAG["measured"], FLAG["excluded"])
        flag = np.where((flag == FLAG["measured"]) & (first.flag == FLAG["repaired"]),
                        FLAG["repaired"], flag).astype(np.uint8)
        if refine:
            kw = {key: v for key, v in pair_kw.items()
                  if key not in ("pyramid", "search_range", "global_registration")}
            res = correlate_pair(volumes[0], volumes[k],
                                 initial=(first.nodes, first.grid_shape, u),
                                 voxel_size_um=voxel_size_um, **kw)
            # where the direct T0 -> Tk correlation fails (large strain changes the windows
            # too much) but the increments carried the node, keep the composed increments
            back = (res.flag != FLAG["measured"]) & (flag != FLAG["excluded"])
            if back.any():
                v = res.displacement.copy()
                v[back] = u[back]
                res = replace(res, displacement=v,
                              flag=np.where(back, flag, res.flag).astype(np.uint8),
                              strain=cell_strain(v.reshape(*first.grid_shape, 3),
                                                 first.node_spacing, voxel_size_um))
            res.params["cumulative"] = [0, k]
            res.params["refined"] = True
            res.params["composed_nodes"] = int(back.sum())
            u = res.displacement
        else:
            strain = cell_strain(u.reshape(*first.grid_shape, 3), first.node_spacing,
                                 voxel_size_um)
            res = replace(first, displacement=u, displacement_raw=u, flag=flag, strain=strain,
                          params={**first.params, "cumulative": [0, k], "refined": False})
        strain = res.strain
        res.voxel_size_um = voxel_size_um
        results.append(res)
        prov = make_provenance("dvc-series", inputs or [], res.params)
        write_pair(out / f"cumulative_0_{k}.h5", res, voxel_size_um, prov)
        vol = strain.volumetric
        summary["steps"].append({
            "step": k, "nodes": int(len(u)), "valid_nodes": int(np.isfinite(u).all(axis=1).sum()),
            "mean_volumetric_strain": float(np.nanmean(vol)) if np.isfinite(vol).any() else None,
            "mean_ezz": float(np.nanmean(strain.small["ezz"]))
            if np.isfinite(vol).any() else None})
    rkw = dict(regions or {})
    if voxel_size_um is None:
        rkw.update(cube_um=None, voi_um=None)
    rs = region_statistics(results, voxel_size_um=given, **rkw)
    write_regions(out / "regions.h5", rs,
                  make_provenance("dvc-series", inputs or [], rs.params))
    if quicklook:
        (out / "quicklook").mkdir(exist_ok=True)
        for s, res in enumerate(results):
            pair_quicklook(out / "quicklook" / f"T0_T{s + 1}.png", res, rs, s,
                           title=f"cumulative field T0 -> T{s + 1}")
        series_quicklook(out / "quicklook" / "series.png", rs)
    for st in summary["steps"]:
        st["mean_volumetric_strain_halves"] = {
            h: (v if np.isfinite(v := rs.value(st["step"], h)) else None)
            for h in ("collector_half", "separator_half")}
    summary["interfaces_voxels"] = list(rs.interfaces)
    summary["provenance"] = make_provenance("dvc-series", inputs or [], summary["parameters"])
    atomic_write_json(out / "series.json", summary)
    return summary
