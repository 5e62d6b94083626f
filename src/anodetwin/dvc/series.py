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
(marked in the result's ``composed``, counted in ``composed_nodes``) and are flagged
repaired (1): the composed value repairs a failed measurement, as neighbours repair one in
a pair, and counts as no measurement of T0 -> Tk (validation and region shares take
measured nodes only). The composed value
is the weaker measurement where grey values change between scans: the increments' errors
at a material point are correlated from one increment to the next (the same texture is
matched each time; lag-1 correlation 0.3 on the lithiating phantom) and add up, and the
nodes left to them are those whose windows changed most (lithiating phantom, seed 11,
T0 -> T6, ``hws`` (6, 20, 20): composed nodes 0.8 voxel median error, directly
correlated ones 0.16).
Strain T0 -> Tk is computed from the cumulative field on the T0 grid with the same Q8
operator as a pair, from displacements in um over node spacings in um per axis
(``voxel_size_um``; anisotropic voxels allowed). A node excluded in any increment it
passes through is excluded from then on (NaN), never extrapolated.

Output folder layout::

    OUT/increment_<k>_<k+1>.h5   one pair result per increment (layout: anodetwin.dvc.pair)
    OUT/cumulative_0_<k>.h5      T0 -> Tk on the T0 grid (same layout; /composed marks the
                                 nodes that keep the composed increments: their
                                 status/error/Phi are not meaningful (the first
                                 increment's, or the failed direct match's), their ZNCC
                                 and uncertainty are NaN, /displacement_raw is the
                                 composed value; flagged repaired (1) with
                                 refine, measured (0) with refine=False unless its
                                 path met a repaired increment node)
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

from anodetwin.dvc.correlate import grid_step, interpolate_displacement, node_grid
from anodetwin.dvc.pair import FLAG, PairResult, correlate_pair, repair_nodes, write_pair
from anodetwin.dvc.quicklook import pair_quicklook, series_quicklook
from anodetwin.dvc.regions import region_layout, region_statistics, write_regions
from anodetwin.errors import NumericalError, ParameterError
from anodetwin.io import atomic_write_json, make_provenance
from anodetwin.io.agree import Grid, input_name, require_same_grid, require_series_grid
from anodetwin.log import get_logger
from anodetwin.strain import cell_strain

__all__ = ["compose_increments", "correlate_series", "check_series_inputs", "keep_coherent"]

log = get_logger("dvc")


def compose_increments(nodes: np.ndarray, increments: list[PairResult]
                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cumulative displacements of T0 nodes through a list of increments.

    Parameters
    ----------
    nodes : numpy.ndarray
        (N, 3) T0 positions (voxels).
    increments : list of PairResult
        T0 -> T1, T1 -> T2, ... each on the grid of its own reference.

    Returns
    -------
    displacements : list of numpy.ndarray
        One (N, 3) array (voxels) per step: ``x_k - X`` with ``x_k = x_{k-1} +
        u_{k-1,k}(x_{k-1})``; NaN once a node is lost (an excluded increment node nearest
        to it, or no finite increment).
    repaired : list of numpy.ndarray of bool
        One (N,) array per step: the node's path met a repaired increment node (the one
        nearest to it) at this step or before, so its value rests on a repair.
    """
    x = np.asarray(nodes, float).copy()
    lost = np.zeros(len(x), bool)
    rep = np.zeros(len(x), bool)
    out, reps = [], []
    for inc in increments:
        u = interpolate_displacement(inc.nodes, inc.grid_shape, inc.displacement, x)
        # a position whose surrounding increment nodes are all excluded is lost
        lo = np.asarray(inc.nodes, float).reshape(-1, 3)[0]
        step = grid_step(inc.nodes, inc.grid_shape)
        idx = np.clip(np.rint((x - lo) / np.where(step > 0, step, 1)), 0,
                      np.array(inc.grid_shape) - 1).astype(int)
        near = np.asarray(inc.flag).reshape(inc.grid_shape)[idx[:, 0], idx[:, 1], idx[:, 2]]
        lost |= near == FLAG["excluded"]
        lost |= ~np.isfinite(u).all(axis=1)
        rep = rep | (near == FLAG["repaired"])
        x = x + np.nan_to_num(u)
        cum = x - nodes
        cum[lost] = np.nan
        out.append(cum)
        reps.append(rep & ~lost)
    return out, reps


def check_series_inputs(volumes: list[Any], regions: dict | None = None,
                        voxel_size_um: Any = None, node_spacing: Any = None) -> Grid:
    """Check before any work that the inputs of a series fit together.

    Parameters
    ----------
    volumes : list of arrays, Volumes, paths or LazyVolumes
        T0, T1, ...: they, and the phases and particle labels of ``regions``, must lie on
        one grid (voxel size, shape, origin: :func:`anodetwin.io.agree.require_series_grid`).
    regions : dict, optional
        Keyword arguments of :func:`anodetwin.dvc.regions.region_statistics`.
    voxel_size_um : float or 3 floats, optional
        Explicit voxel size: differences of the files' voxel sizes and origins are then
        only logged.
    node_spacing : int or 3 int, optional
        Given, the regions are laid out on the node grid the series will have
        (:func:`anodetwin.dvc.regions.region_layout`: interfaces that leave an electrode
        region without cells, cubes or VOIs below a cell are refused).

    Returns
    -------
    anodetwin.io.agree.Grid
        The common grid.

    Raises
    ------
    GridMismatchError
        Inputs on different grids.
    ParameterError
        Regions that do not fit the node grid.
    """
    names = [input_name(f"T{k}", v) for k, v in enumerate(volumes)]
    grid = require_series_grid(volumes, names, voxel_size=voxel_size_um)
    regions = dict(regions or {})
    for key in ("phases", "particles"):
        if regions.get(key) is not None:
            require_same_grid(volumes[0], regions[key], names[0],
                              input_name(key, regions[key]), voxel_size=voxel_size_um)
    if node_spacing is not None and grid.shape is not None:
        nodes, gshape = node_grid(grid.shape, node_spacing)
        if grid.voxel_size_um is None:
            regions.update(cube_um=None, voi_um=None)
        region_layout(nodes, gshape, node_spacing, grid.voxel_size_um, **regions)
    return grid


def correlate_series(volumes: list[Any], out_dir: str | os.PathLike, voxel_size_um: Any = None,
                     inputs: list | None = None, refine: bool = True,
                     regions: dict | None = None, quicklook: bool = True,
                     reference_model: str = "grey", **pair_kw: Any) -> dict:
    """Correlate a series of volumes and write increments and cumulative fields.

    Parameters
    ----------
    volumes : list of arrays, Volumes, paths or LazyVolumes
        T0, T1, ..., Tn (same shape). Volumes on disk (paths; lazy views, e.g.
        ``open_volume(p).lazy(roi=..., binning=...)``) are never read whole
        (:func:`correlate_pair`); the results equal those of the same voxels in memory.
    out_dir : path-like
        Output folder (created with the first result: input refused by the first pair
        leaves no folder behind; a pair that fails later keeps the finished files).
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
        computed (halves of the node grid without phases or interfaces). Phases and
        particles: arrays, paths, lazy views or h5py datasets (read slab by slab).
    quicklook : bool
        Write the quick-look PNGs.
    reference_model : {"grey", "phases"}
        The direct T0 -> Tk correlations' reference: T0's grey values, or a model of T0
        from ``regions["phases"]`` (:mod:`anodetwin.dvc.model`), for lithiating Si.
    **pair_kw
        Passed to :func:`correlate_pair` (node_spacing, hws, pyramid, search_range, mask,
        processes, scheduler, ...).

    Returns
    -------
    dict
        The summary also written to ``series.json``.

    Raises
    ------
    ParameterError
        Fewer than 2 volumes, regions that do not fit the node grid, a phase model
        without phases of T0.
    GridMismatchError
        Volumes, phases or particles on different grids.
    """
    if len(volumes) < 2:
        raise ParameterError(f"a series needs at least 2 volumes, got {len(volumes)}",
                             "give T0 T1 [T2 ...]")
    given = voxel_size_um  # explicit: states the grid of every input (mismatches logged)
    voxel_size_um = check_series_inputs(volumes, regions, given,
                                        pair_kw.get("node_spacing", 35)).voxel_size_um
    out = Path(out_dir)
    direct_kw, model = _direct_kw(volumes[0], regions, reference_model, given, pair_kw,
                                  refine)
    increments, voxel_size_um = _increments(volumes, out, voxel_size_um, inputs, pair_kw)
    summary: dict = {"steps": [], "parameters": {k: v for k, v in pair_kw.items()
                                                 if k != "mask"}, "reference_model": model}
    results = _cumulatives(volumes, increments, out, refine, voxel_size_um, inputs, direct_kw)
    summary["steps"] = [_step_summary(k, res) for k, res in enumerate(results, start=1)]
    rkw = dict(regions or {})
    if voxel_size_um is None:
        rkw.update(cube_um=None, voi_um=None)
    rs = region_statistics(results, voxel_size_um=given, **rkw)
    write_regions(out / "regions.h5", rs,
                  make_provenance("dvc-series", inputs or [], rs.params))
    if quicklook:
        _quicklooks(out / "quicklook", results, rs)
    for st in summary["steps"]:
        st["mean_volumetric_strain_halves"] = {
            h: (v if np.isfinite(v := rs.value(st["step"], h)) else None)
            for h in ("collector_half", "separator_half")}
    summary["interfaces_voxels"] = list(rs.interfaces)
    summary["provenance"] = make_provenance("dvc-series", inputs or [], summary["parameters"])
    atomic_write_json(out / "series.json", summary)
    return summary


def _direct_kw(t0: Any, regions: dict | None, reference_model: str, voxel_size_um: Any,
               pair_kw: dict, refine: bool) -> tuple[dict, dict | None]:
    """The keywords of the direct T0 -> Tk correlations and the record of their reference
    model (None: T0's grey values); the point-spread sigma fitted once unless given
    (``pair_kw["psf_sigma"]``)."""
    if reference_model == "grey":
        return pair_kw, None
    phases = (regions or {}).get("phases")
    if reference_model != "phases" or phases is None or not refine:
        why = ("is unknown" if reference_model != "phases" else "without the phases of T0"
               if phases is None else "without the direct T0 -> Tk correlations (no refine)")
        raise ParameterError(f"reference model {reference_model!r} {why}",
                             "use 'grey', or 'phases' with the phases of T0 (--phases) and "
                             "the direct correlations (no --no-refine)")
    from anodetwin.dvc.model import fit_psf

    name = input_name("phases", phases)
    require_same_grid(t0, phases, input_name("T0", t0), name, voxel_size=voxel_size_um)
    given = pair_kw.get("psf_sigma")
    fit = fit_psf(t0, phases, name=name) if given is None else None
    if fit is not None:
        log.info("phase model of T0: point-spread sigma %.2f voxels, R^2 %.2f", fit.sigma,
                 fit.r2)
    record = fit.to_dict() if fit is not None else {"psf_sigma": float(given)}
    return ({**pair_kw, "reference_phases": phases, "psf_sigma": fit or given},
            {"name": "phases", **record, "fitted": fit is not None})


def _increments(volumes: list[Any], out: Path, voxel_size_um: Any, inputs: list | None,
                pair_kw: dict) -> tuple[list[PairResult], Any]:
    """Correlate and write every increment T(k) -> T(k+1); returns them and the voxel size
    (the given one, else the volumes' own if they carry it)."""
    increments: list[PairResult] = []
    for k in range(len(volumes) - 1):
        log.info("increment T%d -> T%d", k, k + 1)
        try:
            inc = correlate_pair(volumes[k], volumes[k + 1], voxel_size_um=voxel_size_um,
                                 **pair_kw)
        except NumericalError as exc:  # say which increment; the finished ones stay
            kept = f" (increments up to T{k} are written in '{out}')" if k else ""
            raise NumericalError(f"increment T{k} -> T{k + 1}: {exc.problem}{kept}",
                                 exc.fix) from None
        out.mkdir(parents=True, exist_ok=True)  # once there is a result: bad input leaves none
        if voxel_size_um is None:  # from the volumes (Volume objects or files), if they say
            voxel_size_um = inc.voxel_size_um
        prov = make_provenance("dvc-series", inputs or [], {"increment": [k, k + 1],
                                                            **inc.params})
        write_pair(out / f"increment_{k}_{k + 1}.h5", inc, voxel_size_um, prov)
        increments.append(inc)
    return increments, voxel_size_um


def _cumulatives(volumes: list[Any], increments: list[PairResult], out: Path, refine: bool,
                 voxel_size_um: Any, inputs: list | None, pair_kw: dict) -> list[PairResult]:
    """Compute and write every cumulative field T0 -> Tk (``cumulative_0_<k>.h5``)."""
    first = increments[0]
    results: list[PairResult] = []
    composed, repaired = compose_increments(first.nodes, increments)
    for k, (u, rep) in enumerate(zip(composed, repaired, strict=True), start=1):
        res = _cumulative(volumes, k, u, rep, first, refine, voxel_size_um, pair_kw)
        results.append(res)
        write_pair(out / f"cumulative_0_{k}.h5", res, voxel_size_um,
                   make_provenance("dvc-series", inputs or [], res.params))
    return results


def _cumulative(volumes: list[Any], k: int, u: np.ndarray, rep: np.ndarray,
                first: PairResult, refine: bool, voxel_size_um: Any,
                pair_kw: dict) -> PairResult:
    """The cumulative field T0 -> Tk from the composed increments ``u`` (N, 3; ``rep``:
    resting on a repaired increment node): refined by a direct correlation (``refine``) or
    as composed."""
    finite = np.isfinite(u).all(axis=1)
    flag = np.where(finite, np.where(rep, FLAG["repaired"], FLAG["measured"]),
                    FLAG["excluded"]).astype(np.uint8)
    if not refine:
        strain = cell_strain(u.reshape(*first.grid_shape, 3), first.node_spacing,
                             voxel_size_um)
        res = _as_composed(replace(first, displacement=u, flag=flag, strain=strain,
                                   params={**first.params, "cumulative": [0, k],
                                           "refined": False}), u, finite)
        res.voxel_size_um = voxel_size_um
        return res
    kw = {key: v for key, v in pair_kw.items()
          if key not in ("pyramid", "search_range", "global_registration")}
    try:
        res = correlate_pair(volumes[0], volumes[k], voxel_size_um=voxel_size_um,
                             initial=(first.nodes, first.grid_shape, u), **kw)
    except NumericalError as exc:  # no node at all: every node keeps its composed value
        log.warning("T0 -> T%d: the direct correlation measured no node (%s); the field "
                    "is the composed increments", k, exc.problem)
        return _cumulative(volumes, k, u, rep, first, False, voxel_size_um, pair_kw)
    # where the direct T0 -> Tk correlation fails (large strain changes the windows too
    # much) but the increments carried the node, keep the composed increments
    back = (res.flag != FLAG["measured"]) & (flag != FLAG["excluded"])
    res = replace(res, composed=back)
    if back.any():
        v = res.displacement.copy()
        v[back] = u[back]
        f = np.where(back, flag, res.flag).astype(np.uint8)
        v, f, kept = keep_coherent(v, f, back, first.grid_shape,
                                   pair_kw.get("coherence", 1.0))
        # a back-fill repairs a failed direct measurement (from the increments rather than
        # the neighbours): its value is kept, but it is not measured (flag 1)
        f = np.where(kept, FLAG["repaired"], f).astype(np.uint8)
        res = _as_composed(replace(res, displacement=v, flag=f,
                                   strain=cell_strain(v.reshape(*first.grid_shape, 3),
                                                      first.node_spacing, voxel_size_um)),
                           u, kept)
    res.params["cumulative"] = [0, k]
    res.params["refined"] = True
    res.params["composed_nodes"] = int(res.composed.sum())
    res.voxel_size_um = voxel_size_um
    return res


def _as_composed(res: PairResult, u: np.ndarray, composed: np.ndarray) -> PairResult:
    """Mark the ``composed`` nodes of a cumulative result: their raw displacement is the
    composed one, and no window was matched for it (ZNCC and uncertainty NaN)."""
    raw, zncc, unc = res.displacement_raw.copy(), res.zncc.copy(), res.uncertainty.copy()
    raw[composed] = u[composed]
    zncc[composed] = np.nan
    unc[composed] = np.nan
    return replace(res, displacement_raw=raw, zncc=zncc, uncertainty=unc, composed=composed,
                   params={**res.params, "composed_nodes": int(composed.sum())})


def keep_coherent(displacement: np.ndarray, flag: np.ndarray, composed: np.ndarray,
                  grid_shape: tuple, coherence: float | None) -> tuple:
    """Hold composed values to the rule of a pair's measured nodes: a composed node whose
    displacement departs from the field around it by more than ``coherence`` voxels
    (:func:`anodetwin.dvc.pair.repair_nodes`) is repaired from its neighbours instead.

    Parameters
    ----------
    displacement : numpy.ndarray
        (N, 3) cumulative displacements (voxels; NaN where excluded).
    flag : numpy.ndarray
        (N,) their flags (:data:`anodetwin.dvc.pair.FLAG`).
    composed : numpy.ndarray of bool
        (N,) nodes that hold the composed increments.
    grid_shape : tuple of 3 int
    coherence : float or None
        Threshold (voxels); None keeps every composed value.

    Returns
    -------
    displacement, flag, composed
        Copies, with the incoherent composed nodes repaired (flag 1, or 2 with no valid
        neighbours to repair from) and no longer composed.
    """
    if coherence is None:
        return displacement, flag, composed
    excluded = ~np.isfinite(displacement).all(axis=1)
    fixed, fl = repair_nodes(displacement, grid_shape, flag == FLAG["repaired"], excluded,
                             coherence)
    drop = composed & (flag == FLAG["measured"]) & (fl != FLAG["measured"])
    v = displacement.copy()
    v[drop] = fixed[drop]
    return v, np.where(drop, fl, flag).astype(np.uint8), composed & ~drop


def _step_summary(k: int, res: PairResult) -> dict:
    """The ``series.json`` entry of the cumulative field T0 -> Tk."""
    u, vol = res.displacement, res.strain.volumetric
    some = bool(np.isfinite(vol).any())
    return {"step": k, "nodes": int(len(u)),
            "valid_nodes": int(np.isfinite(u).all(axis=1).sum()),
            "mean_volumetric_strain": float(np.nanmean(vol)) if some else None,
            "mean_ezz": float(np.nanmean(res.strain.small["ezz"])) if some else None}


def _quicklooks(folder: Path, results: list[PairResult], rs: Any) -> None:
    """The quick-look PNGs of every cumulative field and of the series."""
    folder.mkdir(exist_ok=True)
    for s, res in enumerate(results):
        pair_quicklook(folder / f"T0_T{s + 1}.png", res, rs, s,
                       title=f"cumulative field T0 -> T{s + 1}")
    series_quicklook(folder / "series.png", rs)
