"""Residual maps: where the grey values changed beyond what the measured motion explains.

Following the reference: the reference volume is deformed with the measured displacement
field (interpolated to every voxel, inverted by Newton iterations), subtracted from the
deformed volume, blurred with a Gaussian (sigma = 2 voxels), taken in absolute value, and
values below a noise floor are removed. The noise floor comes from a double scan
(:func:`anodetwin.dvc.noise_floor`, its ``residual_threshold``) or defaults to
:data:`DEFAULT_FLOOR` (the reference's 5000 grey levels of 16-bit data).

Per particle (labels of the reference volume, carried to the deformed state by the same
field) the module reports the fraction of the particle above the floor, split into a
surface **shell** (voxels within ``shell_voxels`` of the particle's boundary, contacts
included) and the **interior**. Lithiation that advances as a front from the surface
(core-shell) leaves residuals in the shell; lithiation along defect bands through the
particle (network) reaches the interior: a particle is classed core-shell-like when its
interior fraction above the floor is below ``ratio`` times its shell fraction.

:func:`write_residual_map` writes a map and its particle table to HDF5 (layout in its
docstring, ``format = "anodetwin-dvc-residual"``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from anodetwin.dvc.correlate import filled_grid, grid_index
from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io.agree import require_same_grid
from anodetwin.io.blocks import gaussian_crop
from anodetwin.kinematics import CHAIN, inverse_box, sample_nearest, warp_box
from anodetwin.log import get_logger
from anodetwin.segment.particles import squared_edt

log = get_logger("dvc")

__all__ = ["DEFAULT_FLOOR", "ResidualMap", "NodeField", "dense_displacement", "residual_map",
           "particle_residuals", "RESIDUAL_TABLE", "RESIDUAL_FORMAT", "write_residual_map",
           "residual_to_file"]

#: ``format`` attribute of a residual-map HDF5 file (:func:`write_residual_map`).
RESIDUAL_FORMAT = "anodetwin-dvc-residual"

#: Default noise floor (grey levels): the reference's double-scan level for 16-bit scans.
DEFAULT_FLOOR = 5000.0

RESIDUAL_TABLE = np.dtype([("id", "i4"), ("voxels", "i8"), ("fraction_above", "f8"),
                           ("shell_fraction_above", "f8"), ("interior_fraction_above", "f8"),
                           ("shell_share", "f8"), ("core_shell_like", "?")])


@dataclass
class ResidualMap:
    """Residual of a pair in the deformed state.

    Attributes
    ----------
    residual : numpy.ndarray or dataset
        |G_sigma * (DEF - REF deformed)| (float32), zero below the floor; the ``out``
        dataset when written block by block.
    floor : float
        Noise floor applied (grey levels).
    sigma : float
        Gaussian blur of the difference (voxels).
    coords : numpy.ndarray or None
        (3, z, y, x) reference position of every deformed voxel (voxels); None when the map
        was made block by block.
    particles : numpy.ndarray or None
        Per-particle table (:data:`RESIDUAL_TABLE`) when reference labels were given.
    unconverged : int
        Voxels inside the volume whose inverse map did not converge.
    """

    residual: Any
    floor: float
    sigma: float
    coords: np.ndarray | None
    particles: np.ndarray | None = None
    unconverged: int = 0


class NodeField:
    """The displacement of a regular node grid, interpolated (trilinear) to any box of
    voxels.

    NaN nodes take their nearest valid neighbour first; beyond the outer nodes the field
    is extended with its edge values.

    Parameters
    ----------
    nodes : ndarray, shape (N, 3)
        Node positions (z, y, x), voxels, in grid order.
    grid_shape : tuple of 3 int
        Nodes per axis (z, y, x); their product is N.
    displacement : ndarray, shape (N, 3)
        Nodal displacement (z, y, x components), voxels; NaN at non-converged nodes.

    Raises
    ------
    ParameterError
        No node has a finite displacement.
    """

    def __init__(self, nodes: np.ndarray, grid_shape: Any, displacement: np.ndarray):
        if not np.isfinite(displacement).all(axis=1).any():
            raise ParameterError("the displacement field has no valid node",
                                 "correlate again with a mask or a larger window")
        self.nodes = np.asarray(nodes, float)
        self.grid_shape = tuple(int(n) for n in grid_shape)
        self.u = filled_grid(self.grid_shape, displacement)
        self.reach = int(np.ceil(np.abs(self.u).max()))

    def box(self, box: tuple) -> np.ndarray:
        """(3, z, y, x) float32 displacement (voxels) of the voxels of ``box``: trilinear
        interpolation as three 1-D linear passes, one per axis (the weights of a voxel
        depend only on its own coordinates, so any box gives the whole field's values)."""
        idx = []
        for axis, s in enumerate(box):
            pts = np.zeros((s.stop - s.start, 3))
            pts[:, axis] = np.arange(s.start, s.stop)
            p = grid_index(self.nodes, self.grid_shape, pts)[axis]
            i0 = np.floor(p).astype(np.int64)
            idx += [i0, np.minimum(i0 + 1, self.grid_shape[axis] - 1), p - i0]
        return _tensor_trilinear(np.ascontiguousarray(np.moveaxis(self.u, -1, 0)), *idx)


@njit(cache=True, nogil=True)
def _tensor_trilinear(u: np.ndarray, z0: np.ndarray, z1: np.ndarray, wz: np.ndarray,
                      y0: np.ndarray, y1: np.ndarray, wy: np.ndarray, x0: np.ndarray,
                      x1: np.ndarray, wx: np.ndarray) -> np.ndarray:  # pragma: no cover
    """(3, nz, ny, nx) float32 trilinear interpolation of a (3, gz, gy, gx) node grid at the
    voxels whose per-axis lower/upper nodes and weights are given: per voxel row, the node
    row blended in z and y once, then linear along x."""
    out = np.empty((3, z0.size, y0.size, x0.size), np.float32)
    g0 = x0.min() if x0.size else 0
    row = np.empty((x1.max() + 1 - g0) if x1.size else 0)
    for c in range(3):
        for i in range(z0.size):
            for j in range(y0.size):
                for g in range(row.size):
                    n = g0 + g
                    a = u[c, z0[i], y0[j], n] * (1 - wy[j]) + u[c, z0[i], y1[j], n] * wy[j]
                    b = u[c, z1[i], y0[j], n] * (1 - wy[j]) + u[c, z1[i], y1[j], n] * wy[j]
                    row[g] = a * (1 - wz[i]) + b * wz[i]
                for k in range(x0.size):
                    out[c, i, j, k] = row[x0[k] - g0] * (1 - wx[k]) + row[x1[k] - g0] * wx[k]
    return out


class _DenseField:
    """A (3, z, y, x) displacement array (voxels) seen as a field of boxes."""

    def __init__(self, u: np.ndarray):
        self.u = u
        self.reach = int(np.ceil(np.nanmax(np.abs(u)))) if u.size else 0

    def box(self, box: tuple) -> np.ndarray:
        return self.u[(slice(None),) + tuple(box)]


def dense_displacement(nodes: np.ndarray, grid_shape, displacement: np.ndarray,
                       shape: tuple[int, int, int]) -> np.ndarray:
    """Nodal displacements of a regular grid interpolated (trilinear) to every voxel
    (:class:`NodeField` on the whole volume).

    Parameters
    ----------
    nodes : ndarray, shape (N, 3)
        Node positions (z, y, x), voxels, in grid order.
    grid_shape : tuple of 3 int
        Nodes per axis (z, y, x); their product is N.
    displacement : ndarray, shape (N, 3)
        Nodal displacement (z, y, x components), voxels; NaN at non-converged nodes.
    shape : tuple of 3 int
        Shape (z, y, x) of the volume to fill, voxels.

    Returns
    -------
    ndarray of float32, shape (3, z, y, x)
        Displacement at every voxel, voxels.

    Raises
    ------
    ParameterError
        No node has a finite displacement.
    """
    return NodeField(nodes, grid_shape, displacement).box(tuple(slice(0, n) for n in shape))


#: Working memory of the residual pass per voxel of a block with its halo (bytes).
BYTES_PER_VOXEL = 200
#: Largest block core side (voxels): larger blocks are no faster (the halo is thin).
MAX_SIDE = 128


def residual_map(ref: Any, deformed: Any, displacement: Any,
                 sigma: float = 2.0, floor: float | None = None,
                 voxel_size_um: Any = None, *, labels_ref: Any = None,
                 shell_voxels: float = 3.0, ratio: float = 0.7, block_shape: Any = None,
                 memory_limit: Any = None, workers: int = 1, out: Any = None,
                 names: Any = None) -> ResidualMap:
    """Residual map of a pair given its displacement field, block by block.

    Each block deforms the reference with the field inverted by Newton iterations
    (:func:`anodetwin.kinematics.warp_box`, in the whole volume's coordinates),
    subtracts it from the deformed volume, blurs, takes the absolute value and removes
    values below the floor; the result is the same for any block size.

    Parameters
    ----------
    ref, deformed : numpy.ndarray, Volume or LazyVolume
        Reference and deformed volumes (z, y, x): same shape and, for volumes that carry
        them, same voxel size and origin (:func:`anodetwin.io.agree.require_same_grid`).
    displacement : numpy.ndarray or NodeField
        (3, z, y, x) displacement in voxels on the reference grid (e.g. from
        :func:`dense_displacement`), or the node field it is interpolated from.
    sigma : float
        Gaussian blur of the difference (voxels).
    floor : float, optional
        Noise floor (grey levels); :data:`DEFAULT_FLOOR` if omitted.
    voxel_size_um : float or 3 float, optional
        Explicit voxel size (um) of both volumes: a difference of their own voxel sizes or
        origins is then logged, not refused.
    labels_ref : array or dataset, optional
        Particle ids of the reference volume: the map then carries the per-particle table
        (:func:`particle_residuals`, ``shell_voxels`` and ``ratio`` as there).
    block_shape : int or 3 int, optional
        Blocks of this core size (:mod:`anodetwin.io.blocks`); default one block, or blocks
        sized for ``memory_limit``.
    memory_limit : str or int, optional
        Memory ceiling (e.g. ``"4GB"``).
    workers : int
        Blocks processed at once (threads).
    out : array-like, optional
        float32 array or HDF5/Zarr dataset of the volume's shape receiving the map.
    names : (str, str), optional
        How messages name the two volumes (default "reference volume", "deformed volume"),
        e.g. with their files.

    Raises
    ------
    ShapeMismatchError, GridMismatchError
        Volumes or field on different grids.
    ParameterError
        A shell thickness or ratio that is not a positive finite number.
    """
    from anodetwin.io.blocks import BlockGrid, block_shape_for, run_blocks, write_region

    field = _checked_field(ref, deformed, displacement, voxel_size_um, names)
    shape = tuple(ref.shape)
    _check_shell(shell_voxels, ratio)
    floor = DEFAULT_FLOOR if floor is None else float(floor)
    halo = _halo(sigma, shell_voxels if labels_ref is not None else None) + field.reach + 3
    if block_shape is None and memory_limit is not None:
        try:
            block_shape = block_shape_for(shape, BYTES_PER_VOXEL, halo, memory_limit, workers,
                                          max_side=MAX_SIDE)
        except ParameterError as exc:  # say where the halo comes from
            raise ParameterError(f"{exc.problem} (of which {field.reach} voxels are the "
                                 "largest measured displacement)", exc.fix) from None
    grid = BlockGrid(shape, block_shape)
    out = np.empty(shape, np.float32) if out is None else out
    sums, bad = np.zeros((4, 1)), [0]  # summed as blocks finish: memory for one table
    kw = dict(sigma=sigma, floor=floor, labels=labels_ref, shell=shell_voxels)
    for b, (res, s, n) in run_blocks(
            lambda b: _residual_block(b, ref, deformed, field, **kw), grid, workers):
        write_region(out, b.core, res)
        if s is not None:
            sums = _add_sums(sums, s)
        bad[0] += n
    coords = None
    if len(grid) == 1:  # in memory: keep the map's reference coordinates
        whole = np.array(shape)
        coords, _ = inverse_box(field.box(tuple(slice(0, n) for n in shape)), np.zeros(3),
                                np.zeros(3, np.int64), whole, 1e-4, 20)
    if bad[0]:
        log.warning("inverse map: %d voxels not converged", bad[0])
    table = None if labels_ref is None else _residual_table(sums, ratio)
    return ResidualMap(out, floor, float(sigma), coords, table, bad[0])


def _checked_field(ref: Any, deformed: Any, displacement: Any, voxel_size_um: Any,
                   names: Any) -> Any:
    """The displacement as a field read box by box, after checking that the volumes (named
    by ``names``) and a dense field share one grid."""
    name_ref, name_def = names or ("reference volume", "deformed volume")
    require_same_grid(ref, deformed, name_ref, name_def, voxel_size=voxel_size_um)
    field = displacement if isinstance(displacement, NodeField) else \
        _DenseField(np.asarray(displacement))
    shape = tuple(ref.shape)
    if tuple(deformed.shape) != shape or (isinstance(field, _DenseField)
                                          and field.u.shape[1:] != shape):
        raise ShapeMismatchError(
            f"{name_ref} {shape}, {name_def} {tuple(deformed.shape)} and displacement "
            f"{getattr(field, 'u', np.zeros((3,) + shape)).shape[1:]} grids differ",
            "give volumes and field on one grid")
    return field


def _halo(sigma: float, shell: float | None) -> int:
    """Voxels around a block whose deformed values its core needs: the blur's kernel and,
    with particles, the shell depth plus the label boundary."""
    h = int(4.0 * float(sigma) + 0.5) if sigma > 0 else 0
    return max(h, int(np.ceil(shell)) + 2) if shell is not None else h


def _widen(box: tuple, h: int, shape: tuple) -> tuple:
    return tuple(slice(max(0, s.start - h), min(n, s.stop + h))
                 for s, n in zip(box, shape, strict=True))


def _within(inner: tuple, outer: tuple) -> tuple:
    return tuple(slice(i.start - o.start, i.stop - o.start)
                 for i, o in zip(inner, outer, strict=True))


def _residual_block(b: Any, ref: Any, deformed: Any, field: Any, sigma: float,
                    floor: float, labels: Any, shell: float) -> tuple:
    """Residual of a block's core, its particle sums (None without labels) and the count of
    unconverged voxels."""
    from anodetwin.io.blocks import read_region

    shape = tuple(ref.shape)
    bx = _widen(b.core, _halo(sigma, shell if labels is not None else None), shape)
    ub = _widen(bx, field.reach + 3, shape)  # + the chains of the inverse map along x
    ub = ub[:2] + (slice(max(0, ub[2].start - CHAIN), ub[2].stop),)
    o = np.array([s.start for s in ub], np.float64)
    rel = _within(bx, ub)
    lab = (np.ascontiguousarray(read_region(labels, ub), np.int32) if labels is not None
           else np.zeros((0, 0, 0), np.int32))
    warped, lab, n = warp_box(field.box(ub), o, np.array([s.start for s in rel]),
                              np.array([s.stop for s in rel]),
                              np.ascontiguousarray(read_region(ref, ub), np.float32), lab,
                              1e-4, 20)
    diff = np.asarray(read_region(deformed, bx), np.float32) - warped
    core = _within(b.core, bx)
    res = np.abs(gaussian_crop(diff, sigma, core, truncate=4.0) if sigma > 0 else diff[core])
    res = res.astype(np.float32)
    res[res < floor] = 0.0
    sums = None if labels is None else _label_sums(lab, core, res > 0, shell)
    return res, sums, n


def _check_shell(shell_voxels: float, ratio: float) -> None:
    if not (np.isfinite(shell_voxels) and shell_voxels > 0):
        raise ParameterError(f"shell thickness {shell_voxels!r} voxels is not positive",
                             "give --shell > 0 (voxels), e.g. 3")
    if not (np.isfinite(ratio) and ratio > 0):
        raise ParameterError(f"core-shell ratio {ratio!r} is not positive",
                             "give a ratio > 0, e.g. 0.7")


def _label_sums(lab: np.ndarray, core: tuple, above: np.ndarray,
                shell_voxels: float) -> np.ndarray:
    """(4, n) per-label voxels, shell voxels, voxels above the floor and shell voxels above
    it, over the ``core`` of a box of deformed labels (``above`` on the core)."""
    m = int(np.ceil(shell_voxels)) + 2  # the shell of a core voxel lies within this
    box = tuple(slice(max(0, c.start - m), min(n, c.stop + m))
                for c, n in zip(core, lab.shape, strict=True))
    lab = np.ascontiguousarray(lab[box], np.int32)
    core = _within(core, box)
    shell = squared_edt(~_label_boundary(lab), np.ones(3)) <= shell_voxels ** 2
    lo = np.array([c.start for c in core])
    hi = np.array([c.stop for c in core])
    n = int(lab[core].max()) + 1 if lab[core].size else 1
    return _sums(lab, shell, np.ascontiguousarray(above), lo, hi, n)


@njit(cache=True, nogil=True)
def _label_boundary(lab: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of another label (either side of every change)."""
    nz, ny, nx = lab.shape
    b = np.zeros(lab.shape, np.bool_)
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                v = lab[i, j, k]
                if i + 1 < nz and lab[i + 1, j, k] != v:
                    b[i, j, k] = b[i + 1, j, k] = True
                if j + 1 < ny and lab[i, j + 1, k] != v:
                    b[i, j, k] = b[i, j + 1, k] = True
                if k + 1 < nx and lab[i, j, k + 1] != v:
                    b[i, j, k] = b[i, j, k + 1] = True
    return b


@njit(cache=True, nogil=True)
def _sums(lab: np.ndarray, shell: np.ndarray, above: np.ndarray, lo: np.ndarray,
          hi: np.ndarray, n: int) -> np.ndarray:
    """The four per-label counts of :func:`_label_sums` over the sub-box ``lo:hi``
    (``above`` given on the sub-box)."""
    out = np.zeros((4, n))
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            for k in range(lo[2], hi[2]):
                v = lab[i, j, k]
                sh = shell[i, j, k]
                ab = above[i - lo[0], j - lo[1], k - lo[2]]
                out[0, v] += 1.0
                if sh:
                    out[1, v] += 1.0
                if ab:
                    out[2, v] += 1.0
                    if sh:
                        out[3, v] += 1.0
    return out


def _add_sums(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``total`` (4, n) plus a block's sums (4, m), grown to the larger of n and m (counts
    of voxels: exact in float64 in any order)."""
    if part.shape[1] > total.shape[1]:
        total = np.pad(total, ((0, 0), (0, part.shape[1] - total.shape[1])))
    total[:, :part.shape[1]] += part
    return total


def _residual_table(sums: np.ndarray, ratio: float) -> np.ndarray:
    """:data:`RESIDUAL_TABLE` from the per-label sums of :func:`_label_sums`."""
    tot, sh, ab, ab_sh = sums
    ids = np.flatnonzero(tot)
    ids = ids[ids > 0]
    t = np.zeros(len(ids), RESIDUAL_TABLE)
    t["id"] = ids
    t["voxels"] = tot[ids]
    with np.errstate(invalid="ignore", divide="ignore"):
        t["fraction_above"] = ab[ids] / tot[ids]
        t["shell_fraction_above"] = ab_sh[ids] / sh[ids]
        t["interior_fraction_above"] = (ab[ids] - ab_sh[ids]) / (tot[ids] - sh[ids])
        t["shell_share"] = ab_sh[ids] / ab[ids]
    t["core_shell_like"] = t["interior_fraction_above"] < ratio * t["shell_fraction_above"]
    return t


def particle_residuals(rmap: ResidualMap, labels_ref: np.ndarray, shell_voxels: float = 3.0,
                       ratio: float = 0.7) -> np.ndarray:
    """Per-particle residual statistics (table :data:`RESIDUAL_TABLE`) of a map made on the
    whole volume (for maps made block by block, give ``labels_ref`` to
    :func:`residual_map`).

    Parameters
    ----------
    rmap : ResidualMap
        A map with its ``coords``.
    labels_ref : numpy.ndarray
        Particle ids of the reference volume (0 = none).
    shell_voxels : float
        Thickness of the surface shell (voxels from the particle boundary).
    ratio : float
        Core-shell-like when interior fraction above floor < ratio * shell fraction.

    Raises
    ------
    ParameterError
        A shell thickness or ratio that is not a positive finite number, or a map without
        coordinates.
    """
    _check_shell(shell_voxels, ratio)
    if rmap.coords is None:
        raise ParameterError("the residual map was made block by block and has no "
                             "coordinates", "give labels_ref to residual_map instead")
    lab = sample_nearest(labels_ref, rmap.coords)
    whole = tuple(slice(0, n) for n in lab.shape)
    return _residual_table(_label_sums(lab, whole, np.asarray(rmap.residual) > 0,
                                       shell_voxels), ratio)


def write_residual_map(path: str | os.PathLike, rmap: ResidualMap, voxel_size_um: Any = None,
                       provenance: dict | None = None,
                       particles: np.ndarray | None = None) -> Path:
    """Write a residual map (and its particle table) to HDF5 atomically.

    Layout of the file:

    ============================  ===========================================================
    ``/`` attribute ``format``    ``"anodetwin-dvc-residual"`` (:data:`RESIDUAL_FORMAT`)
    ``/`` ``format_version``      1
    ``/`` ``floor``               noise floor applied (grey levels)
    ``/`` ``sigma_voxels``        Gaussian blur of the difference (voxels)
    ``/`` ``provenance``          provenance record (JSON text)
    ``/residual``                 (z, y, x) float32 residual in grey levels, 0 below the
                                  floor, on the deformed volume's grid (chunked)
    ``/residual`` attribute       ``element_size_um``: (z, y, x) voxel size in um, where known
    ``/particles``                per-particle table :data:`RESIDUAL_TABLE`, where given
    ============================  ===========================================================

    Parameters
    ----------
    path : str or path-like
        Output HDF5 file (replaced atomically: nothing is left by a failed write).
    rmap : ResidualMap
        The map (:func:`residual_map`).
    voxel_size_um : float or 3 floats, optional
        Voxel size (z, y, x) in um, written as ``element_size_um``; omitted if None.
    provenance : dict, optional
        Provenance record (:func:`anodetwin.io.make_provenance`); a minimal one if omitted.
    particles : numpy.ndarray, optional
        (n,) structured array of dtype :data:`RESIDUAL_TABLE`
        (:func:`particle_residuals`).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        The file cannot be written.
    """
    import h5py

    from anodetwin.io import atomic_path, make_provenance

    prov = provenance if provenance is not None else make_provenance(
        "dvc-residual", [], {"sigma": rmap.sigma, "floor": rmap.floor})
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("residual", data=rmap.residual, chunks=True)
        _write_header(f, d, rmap.floor, rmap.sigma, voxel_size_um, prov, particles)
    return Path(path)


def _write_header(f: Any, d: Any, floor: float, sigma: float, voxel_size_um: Any,
                  provenance: dict, particles: np.ndarray | None) -> None:
    """Attributes and particle table of a residual-map file (:func:`write_residual_map`)."""
    f.attrs["format"] = RESIDUAL_FORMAT
    f.attrs["format_version"] = 1
    f.attrs["floor"] = floor
    f.attrs["sigma_voxels"] = sigma
    f.attrs["provenance"] = json.dumps(provenance, default=str)
    if voxel_size_um is not None:
        d.attrs["element_size_um"] = np.broadcast_to(np.asarray(voxel_size_um, float), (3,))
    if particles is not None:
        f.create_dataset("particles", data=particles)


def residual_to_file(path: str | os.PathLike, ref: Any, deformed: Any, displacement: Any,
                     provenance: dict, *, voxel_size_um: Any = None,
                     **kwargs: Any) -> ResidualMap:
    """A residual map computed block by block straight into its HDF5 file (layout of
    :func:`write_residual_map`; written atomically), in bounded memory.

    Parameters
    ----------
    path : path
        The residual-map file.
    ref, deformed, displacement
        As :func:`residual_map` (volumes may be :class:`~anodetwin.io.LazyVolume` views).
    provenance : dict
        Provenance record of the file.
    voxel_size_um : float or 3 float, optional
        Explicit voxel size (um) of both volumes, as :func:`residual_map` takes it (a
        difference of their own voxel sizes or origins is then logged, not refused), and
        written with the map; default: the volumes' own.
    **kwargs
        ``sigma``, ``floor``, ``labels_ref``, ``shell_voxels``, ``ratio``,
        ``block_shape``, ``memory_limit``, ``workers``, ``names``: as
        :func:`residual_map`.

    Returns
    -------
    ResidualMap
        Floor, blur, particle table; ``residual`` is None (it is in the file).
    """
    import h5py

    from anodetwin.io import atomic_path
    from anodetwin.io.agree import grid_of

    vs = voxel_size_um if voxel_size_um is not None else grid_of(ref).voxel_size_um
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("residual", shape=tuple(ref.shape), dtype=np.float32,
                             chunks=tuple(min(64, n) for n in ref.shape))
        rmap = residual_map(ref, deformed, displacement, voxel_size_um=voxel_size_um, out=d,
                            **kwargs)
        _write_header(f, d, rmap.floor, rmap.sigma, vs, provenance, rmap.particles)
    rmap.residual = None
    return rmap
