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
from scipy import ndimage

from anodetwin.dvc.correlate import filled_grid, grid_index
from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io.agree import require_same_grid
from anodetwin.kinematics import inverse_coordinates, sample_linear, sample_nearest

__all__ = ["DEFAULT_FLOOR", "ResidualMap", "dense_displacement", "residual_map",
           "particle_residuals", "RESIDUAL_TABLE", "RESIDUAL_FORMAT", "write_residual_map"]

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
    residual : numpy.ndarray
        |G_sigma * (DEF - REF deformed)| (float32), zero below the floor.
    floor : float
        Noise floor applied (grey levels).
    coords : numpy.ndarray
        (3, z, y, x) reference position of every deformed voxel (voxels).
    """

    residual: np.ndarray
    floor: float
    sigma: float
    coords: np.ndarray


def dense_displacement(nodes: np.ndarray, grid_shape, displacement: np.ndarray,
                       shape: tuple[int, int, int]) -> np.ndarray:
    """Nodal displacements of a regular grid interpolated (trilinear) to every voxel.

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
    if not np.isfinite(displacement).all(axis=1).any():
        raise ParameterError("the displacement field has no valid node",
                             "correlate again with a mask or a larger window")
    u = filled_grid(grid_shape, displacement)
    axes = [grid_index(nodes, grid_shape, np.stack([np.arange(n)] * 3, axis=-1))[i]
            for i, n in enumerate(shape)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    return np.stack([ndimage.map_coordinates(u[..., c], coords, order=1)
                     for c in range(3)]).astype(np.float32)


def residual_map(ref: Any, deformed: Any, displacement: np.ndarray,
                 sigma: float = 2.0, floor: float | None = None,
                 voxel_size_um: Any = None) -> ResidualMap:
    """Residual map of a pair given a dense displacement field.

    Parameters
    ----------
    ref, deformed : numpy.ndarray or Volume
        Reference and deformed volumes (z, y, x): same shape and, for volumes that carry
        them, same voxel size and origin (:func:`anodetwin.io.agree.require_same_grid`).
    displacement : numpy.ndarray
        (3, z, y, x) displacement in voxels on the reference grid (e.g. from
        :func:`dense_displacement`).
    sigma : float
        Gaussian blur of the difference (voxels).
    floor : float, optional
        Noise floor (grey levels); :data:`DEFAULT_FLOOR` if omitted.
    voxel_size_um : float or 3 float, optional
        Explicit voxel size (um) of both volumes: a difference of their own voxel sizes or
        origins is then logged, not refused.
    """
    require_same_grid(ref, deformed, "reference volume", "deformed volume",
                      voxel_size=voxel_size_um)
    ref = np.asarray(getattr(ref, "data", ref))
    deformed = np.asarray(getattr(deformed, "data", deformed))
    if ref.shape != deformed.shape or displacement.shape[1:] != ref.shape:
        raise ShapeMismatchError(
            f"reference {ref.shape}, deformed {deformed.shape} and displacement "
            f"{displacement.shape[1:]} grids differ", "give volumes and field on one grid")
    floor = DEFAULT_FLOOR if floor is None else float(floor)
    X = inverse_coordinates(displacement, 1.0)
    diff = np.asarray(deformed, np.float32) - sample_linear(ref, X)
    res = np.abs(ndimage.gaussian_filter(diff, sigma)) if sigma > 0 else np.abs(diff)
    res[res < floor] = 0.0
    return ResidualMap(res.astype(np.float32), floor, float(sigma), X)


def particle_residuals(rmap: ResidualMap, labels_ref: np.ndarray, shell_voxels: float = 3.0,
                       ratio: float = 0.7) -> np.ndarray:
    """Per-particle residual statistics (table :data:`RESIDUAL_TABLE`).

    Parameters
    ----------
    rmap : ResidualMap
    labels_ref : numpy.ndarray
        Particle ids of the reference volume (0 = none).
    shell_voxels : float
        Thickness of the surface shell (voxels from the particle boundary).
    ratio : float
        Core-shell-like when interior fraction above floor < ratio * shell fraction.

    Raises
    ------
    ParameterError
        A shell thickness or ratio that is not a positive finite number.
    """
    if not (np.isfinite(shell_voxels) and shell_voxels > 0):
        raise ParameterError(f"shell thickness {shell_voxels!r} voxels is not positive",
                             "give --shell > 0 (voxels), e.g. 3")
    if not (np.isfinite(ratio) and ratio > 0):
        raise ParameterError(f"core-shell ratio {ratio!r} is not positive",
                             "give a ratio > 0, e.g. 0.7")
    lab = sample_nearest(labels_ref, rmap.coords)
    boundary = np.zeros(lab.shape, bool)
    for ax in range(3):
        a = np.moveaxis(lab, ax, 0)
        b = np.moveaxis(boundary, ax, 0)
        diff = a[1:] != a[:-1]
        b[1:] |= diff
        b[:-1] |= diff
    depth = ndimage.distance_transform_edt(~boundary)
    shell = depth <= shell_voxels
    above = rmap.residual > 0
    n = int(lab.max()) + 1
    flat = lab.ravel()
    tot = np.bincount(flat, minlength=n)
    sh = np.bincount(flat, weights=shell.ravel(), minlength=n)
    ab = np.bincount(flat, weights=above.ravel(), minlength=n)
    ab_sh = np.bincount(flat, weights=(above & shell).ravel(), minlength=n)
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
        f.attrs["format"] = RESIDUAL_FORMAT
        f.attrs["format_version"] = 1
        f.attrs["floor"] = rmap.floor
        f.attrs["sigma_voxels"] = rmap.sigma
        f.attrs["provenance"] = json.dumps(prov, default=str)
        d = f.create_dataset("residual", data=rmap.residual, chunks=True)
        if voxel_size_um is not None:
            d.attrs["element_size_um"] = np.broadcast_to(np.asarray(voxel_size_um, float), (3,))
        if particles is not None:
            f.create_dataset("particles", data=particles)
    return Path(path)
