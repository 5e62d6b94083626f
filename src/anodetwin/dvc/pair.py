"""Pair correlation: global registration, pyramid of local DVC levels, bad-node repair,
strain, and the result file.

Node flags (``flag``): 0 measured (converged, coherent), 1 repaired (replaced by the
inverse-distance mean of its valid neighbours among the 26 around it), 2 excluded (NaN:
window outside the volume or mask, no texture, or no valid neighbours to repair from).
A node is bad when spam's return status is not 2 (converged), or its normalised residual
(mean squared grey residual / window variance; ~0 matched, ~2 unrelated) is above
``max_residual``, or its displacement departs from the median of its valid neighbours by
more than ``coherence`` voxels.

Result file (HDF5, ``anodetwin-dvc-pair`` v1; positions and displacements in voxels of REF,
z, y, x)::

    /                  attrs: format, format_version, voxel_size_um, params (JSON),
                       global_phi (4x4), global_centre, provenance (JSON)
    /nodes             (N, 3) node positions
    /grid_shape        (3,) nodes along z, y, x (N = product)
    /displacement      (N, 3) after repair (NaN where excluded)
    /displacement_raw  (N, 3) as measured
    /Phi               (N, 4, 4) measured mappings
    /status, /error, /iterations, /delta_phi_norm   (N,) spam's per-node results
    /residual          (N,) normalised residual (see above)
    /flag              (N,) 0 measured, 1 repaired, 2 excluded
    /cells/centres     (gz-1, gy-1, gx-1, 3) cell centres
    /strain/<name>     on cells: volumetric (J-1), ezz, eyy, exx, eyz, exz, exy, deviatoric,
                       principal (.., 3), hencky (.., 6: zz yy xx yz xz xy),
                       hencky_volumetric (log J), green_lagrange (.., 6)
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.dvc.correlate import (
    DVCParams,
    as_worker_volume,
    check_params,
    correlate_nodes,
    initial_phi_field,
    interpolate_displacement,
    node_grid,
    quiet_spam,
)
from anodetwin.dvc.strain import CellStrain, cell_mean, cell_strain
from anodetwin.errors import NumericalError, ParameterError
from anodetwin.io import atomic_path, require_same_shape
from anodetwin.log import get_logger

__all__ = ["PairResult", "correlate_pair", "repair_nodes", "write_pair", "write_pair_vtk",
           "read_pair", "FLAG"]

log = get_logger("dvc")
FLAG = {"measured": 0, "repaired": 1, "excluded": 2}
FORMAT = "anodetwin-dvc-pair"


@dataclass
class PairResult:
    """Result of :func:`correlate_pair` (see the module notes for the fields)."""

    nodes: np.ndarray
    grid_shape: tuple[int, int, int]
    displacement: np.ndarray
    displacement_raw: np.ndarray
    Phi: np.ndarray
    status: np.ndarray
    error: np.ndarray
    iterations: np.ndarray
    delta_phi_norm: np.ndarray
    residual: np.ndarray
    flag: np.ndarray
    strain: CellStrain
    params: dict
    global_phi: np.ndarray
    global_centre: np.ndarray
    voxel_size_um: np.ndarray | None = None

    @property
    def node_spacing(self) -> tuple:
        return tuple(self.params["levels"][-1]["node_spacing"])


def _neighbour_offsets() -> np.ndarray:
    o = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    return o[np.any(o != 0, axis=1)]


def _affine_centre(neigh: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Value at the centre of a least-squares affine fit ``u(o) = a + G o`` to the valid
    neighbours (``neigh``: (..., 26, 3), NaN where invalid; ``offs``: (26, 3) grid offsets);
    NaN where the valid neighbours do not determine the fit."""
    valid = np.isfinite(neigh).all(axis=-1).astype(float)
    A = np.concatenate([np.ones((len(offs), 1)), offs], axis=1)
    normal = np.einsum("...j,jk,jl->...kl", valid, A, A)
    rhs = np.einsum("...j,jk,...jc->...kc", valid, A,
                    np.where(valid[..., None] > 0, neigh, 0.0))
    ok = np.linalg.eigvalsh(normal)[..., 0] > 0.5  # neighbours span all three axes
    out = np.full(neigh.shape[:-2] + (3,), np.nan)
    out[ok] = np.linalg.solve(normal[ok], rhs[ok])[:, 0, :]
    return out


def repair_nodes(displacement: np.ndarray, grid_shape: tuple[int, int, int],
                 bad: np.ndarray, excluded: np.ndarray, coherence: float | None = 1.0,
                 min_neighbours: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Flag incoherent nodes and repair bad ones from their neighbours.

    Parameters
    ----------
    displacement : numpy.ndarray
        (N, 3) nodal displacements (voxels) on a regular grid of ``grid_shape``.
    bad : numpy.ndarray of bool
        Nodes already known bad (not converged, error too high): to repair.
    excluded : numpy.ndarray of bool
        Nodes that carry no measurement (outside, masked, no texture): never repaired.
    coherence : float or None
        A measured node whose displacement differs by more than this (voxels) both from
        the median of its valid neighbours and from an affine fit to them is bad too (the
        fit keeps nodes at the edge of a steep but smooth field, e.g. where a swelling
        electrode ends; the median keeps those next to an outlier).
    min_neighbours : int
        Valid neighbours (of 26) needed to repair a node.

    Returns
    -------
    displacement : numpy.ndarray
        Repaired copy (NaN where not repairable or excluded).
    flag : numpy.ndarray of uint8
        0 measured, 1 repaired, 2 excluded.
    """
    gz, gy, gx = grid_shape
    u = displacement.reshape(gz, gy, gx, 3).astype(np.float64)
    ok = (~bad & ~excluded & np.isfinite(displacement).all(axis=1)).reshape(gz, gy, gx)
    offs = _neighbour_offsets()

    def neighbours(valid: np.ndarray) -> np.ndarray:  # (gz, gy, gx, 26, 3), NaN if invalid
        pad = np.pad(np.where(valid[..., None], u, np.nan), ((1, 1), (1, 1), (1, 1), (0, 0)),
                     constant_values=np.nan)
        return np.stack([pad[1 + a: 1 + a + gz, 1 + b: 1 + b + gy, 1 + c: 1 + c + gx]
                         for a, b, c in offs], axis=-2)

    neigh = neighbours(ok)
    if coherence is not None:
        with warnings.catch_warnings():  # all-NaN neighbourhoods give NaN, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(neigh, axis=-2)
        dev = np.linalg.norm(u - med, axis=-1)
        fit = np.linalg.norm(u - _affine_centre(neigh, offs), axis=-1)
        dev = np.where(np.isfinite(fit), np.minimum(dev, fit), dev)
        incoherent = ok & np.isfinite(dev) & (dev > coherence)
        ok &= ~incoherent
        neigh = neighbours(ok)
    w = 1.0 / np.linalg.norm(offs, axis=1)
    valid = np.isfinite(neigh).all(axis=-1)
    count = valid.sum(axis=-1)
    num = np.nansum(np.where(valid[..., None], neigh * w[:, None], 0.0), axis=-2)
    den = (valid * w).sum(axis=-1)
    excl = excluded.reshape(gz, gy, gx)
    to_fix = ~ok & ~excl
    fixable = to_fix & (count >= min_neighbours)
    out = np.where(ok[..., None], u, np.nan)
    out[fixable] = num[fixable] / den[fixable][:, None]
    flag = np.full((gz, gy, gx), FLAG["excluded"], np.uint8)
    flag[ok] = FLAG["measured"]
    flag[fixable] = FLAG["repaired"]
    return out.reshape(-1, 3), flag.reshape(-1)


def _global_registration(ref: Any, deformed: Any, shape: tuple, max_voxels: int = 96**3
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Affine registration of the whole volumes (binned to at most ``max_voxels``)."""
    import spam.DIC

    from anodetwin.io import bin_volume, open_volume

    b = max(1, int(np.ceil((np.prod(shape) / max_voxels) ** (1 / 3))))

    def load(v: Any) -> np.ndarray:
        if isinstance(v, (str, os.PathLike)):
            with open_volume(v) as src:
                return src.read(binning=b, progress=False).data.astype(np.float32)
        arr = np.asarray(getattr(v, "data", v))
        return bin_volume(arr, b).astype(np.float32) if b > 1 else arr.astype(np.float32)

    im1, im2 = load(ref), load(deformed)
    with quiet_spam():
        bin_start = 2 if min(im1.shape) >= 32 else 1
        r = spam.DIC.registerMultiscale(im1, im2, bin_start, margin=2, maxIterations=50,
                                        deltaPhiMin=1e-4, verbose=False)
    phi = np.array(r["Phi"], dtype=np.float64)
    if r.get("returnStatus", 2) < 0 or not np.isfinite(phi).all():
        return np.eye(4), (np.array(shape) - 1) / 2.0
    phi[:3, 3] *= b
    centre = (np.array(im1.shape) - 1) / 2.0 * b + (b - 1) / 2.0
    return phi, centre


def correlate_pair(ref: Any, deformed: Any, node_spacing=35, hws=None, pyramid=None,
                   mask: Any = None, processes: int = 1, scheduler: str | None = None,
                   global_registration: bool = True, margin: int = 3,
                   search_range=0,
                   coherence: float | None = 1.0, max_residual: float | None = 1.0,
                   initial: tuple | None = None, progress: bool = True) -> PairResult:
    """Measure the displacement and strain fields between two volumes.

    Parameters
    ----------
    ref, deformed : numpy.ndarray, Volume or path
        Reference and deformed volumes (same shape).
    node_spacing : int or 3 int
        Final node spacing (voxels).
    hws : int or 3 int, optional
        Final half-window size (default: the node spacing, i.e. 50% window overlap).
    pyramid : sequence of int, optional
        Node spacings of coarser levels run first (e.g. ``(100, 70)``); each level's
        half-window equals its spacing and its field initialises the next.
    mask : labels, optional
        Non-zero where material is; windows mostly outside it are excluded.
    processes, scheduler : see :func:`correlate_nodes`.
    global_registration : bool
        Start from an affine registration of the whole volumes.
    margin : int
        Search margin (voxels) of every window.
    search_range : int or 3 int
        Integer pixel search of +- this many voxels (z, y, x) (around the initial guess) before the
        first level's registration; for displacements beyond the margin.
    coherence : float or None
        Neighbour-coherence threshold (voxels) for bad-node detection.
    max_residual : float or None
        Normalised residual above which a node is bad (1.0: worse than half-correlated).
    initial : (nodes, grid_shape, displacement), optional
        A displacement field (e.g. composed increments) to start from, interpolated at the
        nodes; replaces the global registration and the pyramid.
    """
    r = as_worker_volume(ref, "reference volume")
    d = as_worker_volume(deformed, "deformed volume")
    require_same_shape(r.shape, d.shape, "reference volume", "deformed volume")
    shape = tuple(r.shape)
    ns = node_spacing
    final = check_params(DVCParams(node_spacing=ns, hws=hws if hws is not None else ns,
                                   margin=margin), shape)
    levels = [check_params(DVCParams(node_spacing=s, hws=s, margin=margin), shape)
              for s in (pyramid or ()) if int(s) > max(final.node_spacing)] + [final]
    if np.any(np.asarray(search_range) > 0):
        levels[0] = check_params(DVCParams(**{**levels[0].to_dict(),
                                              "search_range": search_range}), shape)
    if mask is not None:
        m = as_worker_volume(mask)
        require_same_shape(m.shape, shape, "mask", "reference volume")
        if m.array is not None and not np.any(m.array):
            raise ParameterError("the mask holds no material (all zero)",
                                 "give labels with non-zero material or no mask")
    prev = None
    if initial is not None:
        levels, prev = [final], tuple(initial)
    if global_registration and initial is None:
        gphi, gcentre = _global_registration(ref, deformed, shape)
        log.info("global registration: translation %s voxels", np.round(gphi[:3, 3], 3))
    else:
        gphi, gcentre = np.eye(4), (np.array(shape) - 1) / 2.0
    for lv in levels:
        nodes, gshape = node_grid(shape, lv.node_spacing)
        phi0 = initial_phi_field(nodes, gphi, gcentre)
        if prev is not None:
            phi0[:, :3, 3] = interpolate_displacement(*prev, nodes)
            phi0[:, :3, :3] = np.eye(3)
        res = correlate_nodes(ref, deformed, nodes, lv, phi0, mask=mask, processes=processes,
                              scheduler=scheduler, progress=progress)
        u = res["Phi"][:, :3, 3].copy()
        excluded = (res["status"] <= -5) | ~np.isfinite(u).all(axis=1)
        bad = (res["status"] != 2) & ~excluded
        if max_residual is not None:
            bad |= res["residual"] > max_residual
        u_fixed, flag = repair_nodes(u, gshape, bad, excluded, coherence)
        log.info("level spacing %s: %d nodes, %d measured, %d repaired, %d excluded",
                 lv.node_spacing, len(nodes), (flag == 0).sum(), (flag == 1).sum(),
                 (flag == 2).sum())
        prev = (nodes, gshape, u_fixed)
    if np.all(flag == FLAG["excluded"]):
        raise NumericalError("no node could be measured (all windows excluded)",
                             "check the mask, the region of interest and the window size")
    strain = cell_strain(u_fixed.reshape(*gshape, 3), lv.node_spacing)
    params = {"levels": [lvl.to_dict() for lvl in levels], "coherence": coherence,
              "max_residual": max_residual, "global_registration": global_registration,
              "processes": processes, "scheduler": scheduler}
    return PairResult(nodes, gshape, u_fixed, u, res["Phi"], res["status"], res["error"],
                      res["iterations"], res["delta_phi_norm"], res["residual"], flag, strain,
                      params, gphi,
                      np.asarray(gcentre, float))


def write_pair(path: str | os.PathLike, result: PairResult, voxel_size_um: Any = None,
               provenance: dict | None = None) -> Path:
    """Write a :class:`PairResult` to HDF5 atomically (layout in the module notes)."""
    import h5py

    from anodetwin.io import make_provenance

    prov = provenance or make_provenance("dvc", [], result.params)
    if voxel_size_um is None:
        voxel_size_um = result.voxel_size_um
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = 1
        if voxel_size_um is not None:
            f.attrs["voxel_size_um"] = np.broadcast_to(np.asarray(voxel_size_um, float), (3,))
        f.attrs["params"] = json.dumps(result.params, default=str)
        f.attrs["global_phi"] = result.global_phi
        f.attrs["global_centre"] = result.global_centre
        f.attrs["provenance"] = json.dumps(prov, default=str)
        for name in ("nodes", "displacement", "displacement_raw", "Phi", "status", "error",
                     "iterations", "delta_phi_norm", "residual", "flag"):
            f.create_dataset(name, data=getattr(result, name))
        f.create_dataset("grid_shape", data=np.array(result.grid_shape))
        f.create_dataset("cells/centres",
                         data=cell_mean(np.reshape(result.nodes, (*result.grid_shape, 3))))
        s = result.strain
        f.create_dataset("strain/volumetric", data=s.volumetric)
        for k, v in s.small.items():
            f.create_dataset(f"strain/{k}", data=v)
        f.create_dataset("strain/deviatoric", data=s.deviatoric)
        f.create_dataset("strain/principal", data=s.principal)
        f.create_dataset("strain/hencky", data=s.hencky)
        f.create_dataset("strain/hencky_volumetric", data=s.hencky_volumetric)
        f.create_dataset("strain/green_lagrange", data=s.green_lagrange)
        f.create_dataset("strain/F", data=s.F)
    return Path(path)


def read_pair(path: str | os.PathLike) -> PairResult:
    """Read a result written by :func:`write_pair` (strain recomputed from the displacement
    with the same operator)."""
    import h5py

    from anodetwin.errors import CorruptFileError, InputNotFoundError

    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(p, "DVC result",
                                 "give a file written by 'anodetwin dvc' or 'dvc-series'")
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise CorruptFileError(f"'{p}' is not an anodetwin DVC result",
                                       "give a file written by 'anodetwin dvc' or 'dvc-series'")
            d = {k: f[k][...] for k in ("nodes", "displacement", "displacement_raw", "Phi",
                                        "status", "error", "iterations", "delta_phi_norm",
                                        "residual", "flag")}
            gshape = tuple(int(v) for v in f["grid_shape"][...])
            params = json.loads(f.attrs["params"])
            vs = f.attrs.get("voxel_size_um")
            gphi, gcentre = f.attrs["global_phi"], f.attrs["global_centre"]
    except OSError as exc:
        raise CorruptFileError(f"'{p}' is not an anodetwin DVC result ({exc})",
                               "give a file written by 'anodetwin dvc' or 'dvc-series'"
                               ) from None
    spacing = params["levels"][-1]["node_spacing"]
    strain = cell_strain(d["displacement"].reshape(*gshape, 3), spacing)
    return PairResult(grid_shape=gshape, strain=strain, params=params, global_phi=gphi,
                      global_centre=gcentre, voxel_size_um=vs, **d)


def write_pair_vtk(path: str | os.PathLike, result: PairResult,
                   voxel_size_um: Any = None) -> Path:
    """Write the node grid as VTK ImageData (``.vti``) for ParaView, atomically.

    Points are the nodes (x, y, z in um when ``voxel_size_um`` is given, else voxels) with
    point data ``displacement`` (u_x, u_y, u_z, same unit), ``flag`` and ``residual``; cells
    carry every strain measure (``volumetric``, ``ezz`` ..., ``deviatoric``, ``hencky_*``).
    """
    import pyvista as pv

    vs = np.broadcast_to(np.asarray(1.0 if voxel_size_um is None else voxel_size_um,
                                    float), (3,))
    gz, gy, gx = result.grid_shape
    g = np.asarray(result.nodes).reshape(gz, gy, gx, 3)
    step = [(g[1, 0, 0, 0] - g[0, 0, 0, 0]) if gz > 1 else 1.0,
            (g[0, 1, 0, 1] - g[0, 0, 0, 1]) if gy > 1 else 1.0,
            (g[0, 0, 1, 2] - g[0, 0, 0, 2]) if gx > 1 else 1.0]
    img = pv.ImageData(dimensions=(gx, gy, gz),
                       spacing=(step[2] * vs[2], step[1] * vs[1], step[0] * vs[0]),
                       origin=(g[0, 0, 0, 2] * vs[2], g[0, 0, 0, 1] * vs[1],
                               g[0, 0, 0, 0] * vs[0]))

    def pts(a: np.ndarray) -> np.ndarray:  # (gz, gy, gx, ...) -> VTK order, x fastest
        return np.asarray(a).reshape(gz, gy, gx, -1).reshape(gz * gy * gx, -1).squeeze()

    u = np.asarray(result.displacement).reshape(gz, gy, gx, 3)[..., ::-1] * vs[::-1]
    img.point_data["displacement"] = pts(u)
    img.point_data["flag"] = pts(result.flag)
    img.point_data["residual"] = pts(result.residual)
    st = result.strain
    cells = {"volumetric": st.volumetric, "deviatoric": st.deviatoric, **st.small,
             "hencky_volumetric": st.hencky_volumetric}
    for i, c in enumerate(("zz", "yy", "xx", "yz", "xz", "xy")):
        cells[f"hencky_{c}"] = st.hencky[..., i]
        cells[f"green_lagrange_{c}"] = st.green_lagrange[..., i]
    for name, a in cells.items():
        img.cell_data[name] = np.asarray(a).reshape(-1)
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.unlink()
        img.save(str(tmp.with_suffix(".vti")))
        tmp.with_suffix(".vti").rename(tmp)
    return p
