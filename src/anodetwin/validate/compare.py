"""Simulation and DVC on one grid: frames, steps, and the simulated displacement sampled at
the DVC nodes with the DVC's own strain operator.

Frames. DVC nodes are in voxels of the reference tomogram (z, y, x); their position in um is
``origin + node * voxel + offset`` (``[frame]`` settings; the voxel size from the files when
they carry it). The simulation writes its displacement on a regular node grid
(``run/dvc/<T>.h5``, :mod:`anodetwin.simulate.run`) with its own voxel and origin (in the
file's parameters). Two voxel sizes that differ with no size given are an error: there is no
transform to bring them together.

Like with like. The simulated displacement (um) is interpolated trilinearly from its grid to
the DVC node positions and averaged over each node's correlation window (the DVC measures
the mean motion of a window, ``[nodes] window_average``, on by default), and the strain of
both fields computed by :func:`anodetwin.strain.cell_strain` from the displacement in um
over the DVC's node spacing in um per axis (voxels times the voxel size along that axis) —
exactly the operator that turned the measured displacement into strain. DVC nodes flagged
excluded (NaN) are out; repaired nodes are out too unless ``[nodes] repaired = "include"``;
so are nodes whose window the scan's faces cut (:attr:`PairResult.window_share` below 1: the
DVC fitted an off-centre part of the window, which the centred window average does not
describe); a cell counts when its eight nodes are valid in both fields and its centre lies
inside the electrode.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anodetwin.dvc.pair import FLAG, PairResult, read_pair
from anodetwin.errors import InputError, InputNotFoundError, ParameterError
from anodetwin.strain import (CellStrain, cell_mean, cell_strain, node_spacing_um,
                              voxel_size_triple)
from anodetwin.validate.config import ValidateConfig

__all__ = ["StepPair", "SimulationRun", "load_simulation", "dvc_steps", "pair_steps",
           "sample_grid_displacement", "window_average", "rigid_fit", "register_on_collector"]


@dataclass
class SimulationRun:
    """What validation reads of a simulation folder.

    Attributes
    ----------
    path : Path
        The folder.
    run : dict
        Its run.json.
    summary : list of dict
        The rows of its summary.csv.
    outputs : dict of str to float
        Output name (``T<k>``) -> its time (s).
    electrode_z_um : tuple of 2 float
        Bottom and top of the electrode (z, um, reference configuration).
    """

    path: Path
    run: dict
    summary: list[dict]
    outputs: dict
    electrode_z_um: tuple


@dataclass
class StepPair:
    """One DVC step and its simulated counterpart on the DVC grid.

    Attributes
    ----------
    step, output, time_s
        DVC step k (T0 -> Tk), the simulation output name and its time (s).
    nodes_um : (N, 3) ndarray
        DVC node positions in the simulation frame (z, y, x, um).
    grid_shape : tuple of 3 int
        The node grid (gz, gy, gx), N = gz * gy * gx.
    u_dvc_um, u_sim_um : (N, 3) ndarray
        Displacements (z, y, x, um); NaN where a node is not used.
    strain_dvc, strain_sim : CellStrain
        Strain on the (gz - 1, gy - 1, gx - 1) DVC cells by the same operator.
    cells_um : (gz - 1, gy - 1, gx - 1, 3) ndarray
        Cell centres (z, y, x, um).
    valid : (gz - 1, gy - 1, gx - 1) bool ndarray
        Both fields defined and the cell inside the electrode.
    electrode_z_um : tuple of 2 float
        Bottom and top of the electrode (z, um).
    dvc_voxel_um : tuple of 3 float
        Voxel size (z, y, x, um) of the DVC reference tomogram.
    registration : dict or None
        The collector's rigid motion removed (:func:`register_on_collector`), or None.
    """

    step: int
    output: str
    time_s: float
    nodes_um: np.ndarray
    grid_shape: tuple
    u_dvc_um: np.ndarray
    u_sim_um: np.ndarray
    strain_dvc: CellStrain
    strain_sim: CellStrain
    cells_um: np.ndarray
    valid: np.ndarray
    electrode_z_um: tuple
    dvc_voxel_um: tuple
    registration: dict | None = None


def rigid_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rigid motion ``y ~ R x + t`` of two point sets (Kabsch).

    Parameters
    ----------
    x, y : (N, 3) ndarray
        Corresponding points (same length unit), N >= 3 not all on a line.

    Returns
    -------
    R : (3, 3) ndarray
        Rotation (det +1).
    t : (3,) ndarray
        Translation, in the unit of the points.
    """
    cx, cy = x.mean(axis=0), y.mean(axis=0)
    U, _, Vt = np.linalg.svd((x - cx).T @ (y - cy))
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    return R, cy - R @ cx


def register_on_collector(nodes_um: np.ndarray, u_um: np.ndarray, use: np.ndarray,
                          z_bottom_um: float, where: str) -> tuple[np.ndarray, dict]:
    """Remove the rigid motion of the current collector from a DVC displacement: the rigid
    fit of the measured nodes below the electrode (``z < z_bottom_um``), applied inverted
    to every deformed node position.

    Parameters
    ----------
    nodes_um : (N, 3) ndarray
        Node positions (z, y, x, um).
    u_um : (N, 3) ndarray
        Their measured displacement (z, y, x, um; NaN where not measured).
    use : (N,) bool ndarray
        Nodes that may enter the fit.
    z_bottom_um : float
        Bottom of the electrode (um): the collector lies below.
    where : str
        What is registered, for the error message.

    Returns
    -------
    fixed : (N, 3) ndarray
        The displacement without the rigid motion (um).
    transform : dict
        ``translation_um`` (z, y, x), ``rotation_deg`` and ``rotation_axis_zyx``,
        ``collector_nodes`` (count) and ``collector_rms_um`` (RMS residual of those nodes).

    Raises
    ------
    InputError
        Fewer than 3 usable collector nodes, or all on a line.
    """
    from scipy.spatial.transform import Rotation

    sel = use & (nodes_um[:, 0] < z_bottom_um) & np.isfinite(u_um).all(axis=1)
    pts = nodes_um[sel]
    if sel.sum() < 3 or np.linalg.matrix_rank(pts - pts.mean(axis=0)) < 2:  # not collinear
        raise InputError(f"{where}: {int(sel.sum())} measured DVC nodes lie in the collector "
                         f"(z < {z_bottom_um:.3g} um), too few to register on",
                         "correlate a volume that includes the current collector, or set "
                         "[frame] register = \"none\"")
    R, t = rigid_fit(pts, pts + u_um[sel])
    fixed = (nodes_um + u_um - t) @ R - nodes_um  # R^T (y - t) - x, row-wise
    rv = Rotation.from_matrix(R).as_rotvec()
    ang = float(np.linalg.norm(rv))
    res = float(np.sqrt(np.mean(np.sum(fixed[sel] ** 2, axis=1))))
    return fixed, {"translation_um": t.tolist(), "rotation_deg": float(np.degrees(ang)),
                   "rotation_axis_zyx": (rv / ang).tolist() if ang > 0 else [0.0, 0.0, 0.0],
                   "collector_nodes": int(sel.sum()), "collector_rms_um": res}


def load_simulation(sim_dir: str | os.PathLike) -> SimulationRun:
    """Read run.json and summary.csv of an ``anodetwin simulate`` folder.

    Parameters
    ----------
    sim_dir : path-like
        The folder (``--out`` of ``anodetwin simulate``).

    Returns
    -------
    SimulationRun
        The run record, summary rows, outputs and their times, the electrode's extent.

    Raises
    ------
    InputNotFoundError
        The folder has no run.json.
    InputError
        The run does not record the electrode's extent.
    """
    from anodetwin.simulate.run import read_summary

    p = Path(sim_dir)
    if not (p / "run.json").is_file():
        raise InputNotFoundError(p / "run.json", "simulation run",
                                 "give the --out folder of 'anodetwin simulate'")
    run = json.loads((p / "run.json").read_text())
    rows = read_summary(p / "summary.csv")
    outputs = {r["output"]: float(r["time_s"]) for r in rows if r["output"]}
    ez = run.get("electrode_z_um")
    if ez is None:
        raise InputError(f"simulation '{p}' does not record the electrode's extent",
                         "re-run it with this version, or give [regions] electrode_z_um")
    return SimulationRun(p, run, rows, outputs, tuple(float(v) for v in ez))


def dvc_steps(dvc_dir: str | os.PathLike) -> dict[int, Path]:
    """The cumulative DVC fields of a ``dvc-series`` folder.

    Parameters
    ----------
    dvc_dir : path-like
        The folder: ``cumulative_0_<k>.h5`` (or pair files named ``T0_T<k>.h5``).

    Returns
    -------
    dict of int to Path
        DVC step k -> its file, in step order.

    Raises
    ------
    InputNotFoundError
        The folder does not exist.
    InputError
        It holds no such file.
    """
    p = Path(dvc_dir)
    if not p.is_dir():
        raise InputNotFoundError(p, "DVC series folder",
                                 "give the --out folder of 'anodetwin dvc-series'")
    out = {}
    for f in p.iterdir():
        m = re.fullmatch(r"(?:cumulative_0_|T0_T)(\d+)\.h5", f.name)
        if m:
            out[int(m.group(1))] = f
    if not out:
        raise InputError(f"'{p}' holds no cumulative DVC fields (cumulative_0_<k>.h5)",
                         "give the --out folder of 'anodetwin dvc-series'")
    return dict(sorted(out.items()))


def _grid_axes(nodes: np.ndarray, gshape: tuple) -> list[np.ndarray]:
    g = nodes.reshape(*gshape, 3)
    return [g[:, 0, 0, 0], g[0, :, 0, 1], g[0, 0, :, 2]]


def sample_grid_displacement(sim: PairResult, points_um: np.ndarray,
                             clip: bool = False) -> np.ndarray:
    """Trilinear interpolation of a simulated grid displacement at points.

    Parameters
    ----------
    sim : PairResult
        The simulated displacement on its node grid (voxels; voxel size and
        ``params["origin_um"]`` give um).
    points_um : (M, 3) ndarray
        Points (z, y, x, um) in the simulation frame.
    clip : bool
        Outside the grid take the value at the nearest point of the grid's box (a constant
        extension) instead of NaN.

    Returns
    -------
    (M, 3) ndarray
        Displacement (z, y, x, um).
    """
    from scipy.interpolate import RegularGridInterpolator

    vs = voxel_size_triple(sim.voxel_size_um)
    origin = np.asarray(sim.params.get("origin_um", [0, 0, 0]), float)
    axes = [origin[i] + a * vs[i]
            for i, a in enumerate(_grid_axes(sim.nodes, sim.grid_shape))]
    u = sim.displacement.reshape(*sim.grid_shape, 3) * vs
    f = RegularGridInterpolator(axes, u, bounds_error=False, fill_value=np.nan)
    if clip:
        lo = np.array([a[0] for a in axes])
        hi = np.array([a[-1] for a in axes])
        points_um = np.clip(points_um, lo, hi)
    return f(points_um)


def window_average(sim: PairResult, points_um: np.ndarray, half_um: np.ndarray,
                   samples: int = 5) -> np.ndarray:
    """Mean simulated displacement over a DVC window around each point: what a correlation
    window sees of the field (beyond the simulated grid the field is extended as constant,
    as the rendered tomograms are).

    Parameters
    ----------
    sim : PairResult
        The simulated displacement on its node grid.
    points_um : (M, 3) ndarray
        Window centres (z, y, x, um).
    half_um : (3,) ndarray
        Half-widths of the window box (z, y, x, um).
    samples : int
        Sample points per axis (``samples**3`` per window).

    Returns
    -------
    (M, 3) ndarray
        Mean displacement (z, y, x, um).
    """
    offs = np.stack(np.meshgrid(*[np.linspace(-h, h, samples) for h in half_um],
                                indexing="ij"), axis=-1).reshape(-1, 3)
    out = np.zeros((len(points_um), 3))
    for o in offs:
        out += sample_grid_displacement(sim, points_um + o, clip=True)
    return out / len(offs)


def _fmt_um(v: np.ndarray) -> str:
    return f"{v[0]:g}" if np.allclose(v, v[0]) else "(" + ", ".join(f"{a:g}" for a in v) + ")"


def _dvc_voxel(dvc: PairResult, simp: PairResult, cfg: ValidateConfig, path: Path
               ) -> np.ndarray:
    """Voxel size (z, y, x, um) of a DVC result: the settings' or the file's, checked
    against each other and, when no frame is stated, against the simulation grid's."""
    vs_file = None if dvc.voxel_size_um is None else voxel_size_triple(dvc.voxel_size_um)
    vs = voxel_size_triple(cfg.dvc_voxel_size_um) if cfg.dvc_voxel_size_um else vs_file
    if vs is None:
        raise ParameterError(f"DVC result '{path}' has no voxel size",
                             "give [frame] dvc_voxel_size_um in the settings")
    if cfg.dvc_voxel_size_um and vs_file is not None and \
            not np.allclose(vs_file, vs, rtol=1e-9, atol=0):
        raise ParameterError(f"DVC voxel {_fmt_um(vs_file)} um in '{path}' differs from the "
                             f"settings' {_fmt_um(vs)} um", "give one voxel size")
    vs_sim = None if simp.voxel_size_um is None else voxel_size_triple(simp.voxel_size_um)
    stated = bool(cfg.raw.get("frame")) or bool(cfg.dvc_voxel_size_um)
    if not stated and vs_sim is not None and not np.allclose(vs_sim, vs, rtol=1e-6, atol=0):
        raise ParameterError(f"DVC voxel {_fmt_um(vs)} um in '{path}' differs from the "
                             f"simulation grid's {_fmt_um(vs_sim)} um and no transform is "
                             "given", "state the DVC frame in [frame] of the settings "
                             "(dvc_voxel_size_um, dvc_origin_um)")
    return vs


def pair_steps(sim: SimulationRun, dvc_dir: str | os.PathLike,
               cfg: ValidateConfig) -> list[StepPair]:
    """Every DVC step with its simulated counterpart on the DVC grid (module notes).

    Parameters
    ----------
    sim : SimulationRun
        The simulation (:func:`load_simulation`).
    dvc_dir : path-like
        The DVC series folder (:func:`dvc_steps`).
    cfg : ValidateConfig
        Frame, step map, node and region settings.

    Returns
    -------
    list of StepPair
        One per DVC step, in step order.

    Raises
    ------
    InputError
        Steps without a simulation output, no overlap in time or space, a collector too
        small to register on.
    InputNotFoundError
        A simulated displacement file is missing.
    ParameterError
        Voxel sizes that disagree (module notes).
    """
    steps = dvc_steps(dvc_dir)
    mapping = {k: cfg.steps.get(k, f"T{k}") for k in steps}
    missing = [f"{k} -> {name}" for k, name in mapping.items() if name not in sim.outputs]
    if len(missing) == len(mapping):
        raise InputError(f"the DVC steps {sorted(mapping)} and the simulation's outputs "
                         f"{sorted(sim.outputs)} have no scan in common (no overlap in time)",
                         "simulate the DVC's scans, or map them in [steps] of the settings")
    if missing:
        raise InputError(f"DVC steps without a simulation output: {', '.join(missing)} "
                         f"(the simulation has {sorted(sim.outputs)})",
                         "map the steps in [steps] of the settings or simulate those scans")
    ez = tuple(cfg.electrode_z_um or sim.electrode_z_um)
    return [_pair_step(k, path, mapping[k], sim, cfg, ez) for k, path in steps.items()]


def _pair_step(k: int, path: Path, name: str, sim: SimulationRun, cfg: ValidateConfig,
               ez: tuple) -> StepPair:
    """DVC step ``k`` (file ``path``) and the simulation output ``name`` on the DVC grid,
    cells inside the electrode ``ez`` (z bottom, top, um) (module notes)."""
    dvc = read_pair(path)
    simf = sim.path / "dvc" / f"{name}.h5"
    if not simf.is_file():
        raise InputNotFoundError(simf, f"simulated displacement of {name}",
                                 "simulate with [output] dvc_node_spacing_um > 0")
    simp = read_pair(simf)
    vs = _dvc_voxel(dvc, simp, cfg, path)  # (z, y, x) um
    spacing_um = node_spacing_um(dvc.node_spacing, vs)
    nodes_um = np.asarray(cfg.dvc_origin_um) + dvc.nodes * vs + np.asarray(cfg.offset_um)
    u_dvc = dvc.displacement * vs
    use = np.isfinite(u_dvc).all(axis=1) & (dvc.window_share >= 1.0)  # whole windows
    if cfg.repaired == "exclude":
        use &= dvc.flag != FLAG["repaired"]
    registration = None
    if cfg.register == "collector":
        u_dvc, registration = register_on_collector(
            nodes_um, u_dvc, use & (dvc.flag == FLAG["measured"]), ez[0], f"DVC step {k}")
    inside = np.isfinite(sample_grid_displacement(simp, nodes_um)).all(axis=1)
    hws = np.asarray(dvc.params["levels"][-1].get("hws", [0, 0, 0]), float)
    u_sim = window_average(simp, nodes_um, hws * vs) if cfg.window_average and \
        hws.any() else sample_grid_displacement(simp, nodes_um)
    if not inside.any():
        raise InputError(f"the DVC nodes of step {k} and the simulated grid of {name} do "
                         "not overlap in space",
                         "check [frame] dvc_origin_um / offset_um and the voxel sizes")
    use &= inside
    u_dvc = np.where(use[:, None], u_dvc, np.nan)
    u_sim = np.where(use[:, None], u_sim, np.nan)
    g = dvc.grid_shape
    s_dvc = cell_strain(u_dvc.reshape(*g, 3), spacing_um)  # um over um, per axis
    s_sim = cell_strain(u_sim.reshape(*g, 3), spacing_um)
    cells = cell_mean(nodes_um.reshape(*g, 3))
    valid = np.isfinite(s_dvc.volumetric) & np.isfinite(s_sim.volumetric) & \
        (cells[..., 0] >= ez[0]) & (cells[..., 0] <= ez[1])
    return StepPair(k, name, sim.outputs[name], nodes_um, g, u_dvc, u_sim, s_dvc, s_sim,
                    cells, valid, ez, tuple(map(float, vs)), registration)
