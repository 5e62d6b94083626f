"""Kinematics on voxel grids shared by the phantom and the DVC stage: inverse mappings
(deformed -> reference positions) and warping. The strain of a dense displacement field
(:func:`strain_fields`) and :func:`voxel_size_triple` are those of the one strain operator,
:mod:`anodetwin.strain`, re-exported here.

Convention: a displacement field u (3, z, y, x) lives on the reference grid; the material at
reference position X is at x = X + u(X) in the deformed state; a deformed volume is
``D(x) = R(X(x))``.

Gradients use the voxel size per axis (z, y, x) in um, so anisotropic voxels give the right
strain; tensor components are named by axis letters (``eyz``: z with y, entry (0, 1);
``exz``: (0, 2); ``exy``: y with x, (1, 2)), as in :mod:`anodetwin.strain`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.log import get_logger
from anodetwin.strain import strain_fields, voxel_size_triple

log = get_logger("kinematics")

__all__ = ["strain_fields", "inverse_map_1d", "inverse_coordinates", "sample_nearest",
           "sample_linear", "warp_labels", "voxel_size_triple"]


def inverse_map_1d(uz_voxels: np.ndarray) -> np.ndarray:
    """Reference plane coordinate of every deformed plane of an axial displacement.

    Parameters
    ----------
    uz_voxels : numpy.ndarray
        (z,) displacement u(Z) of every reference plane Z (voxels).

    Returns
    -------
    numpy.ndarray
        (z,) reference coordinate X(z) (voxels) of every deformed plane z, solving
        z = X + u(X) (linear interpolation); beyond the grid the last displacement
        continues.

    Raises
    ------
    ParameterError
        When the displacement folds the grid (z + u(z) not increasing).
    """
    n = len(uz_voxels)
    Z = np.arange(n, dtype=np.float64)
    z_def = Z + uz_voxels
    if np.any(np.diff(z_def) <= 0):
        raise ParameterError("the axial displacement folds the grid (d u_z / dz <= -1)",
                             "use a smaller compression")
    zq = np.arange(n, dtype=np.float64)
    X = np.interp(zq, z_def, Z)
    below = zq < z_def[0]
    X[below] = zq[below] - uz_voxels[0]
    above = zq > z_def[-1]
    X[above] = zq[above] - uz_voxels[-1]
    return X


def inverse_coordinates(displacement: np.ndarray, voxel_size_um,
                        axial_profile: np.ndarray | None = None, tol: float = 1e-4,
                        max_iterations: int = 20, *, origin: Any = (0, 0, 0),
                        region: Any = None, unconverged: list | None = None) -> np.ndarray:
    """Reference coordinates X (voxels) of every deformed voxel x, solving x = X + u(X).

    ``displacement`` is converted to voxels per axis (component i over
    ``voxel_size_um[i]``), so the iteration runs in voxel index coordinates, where
    ``grad u`` is the index-space Jacobian: Newton iterations
    ``X <- X - t (I + grad u(X))^-1 (X + u(X) - x)`` with trilinear interpolation of u and
    its gradient, on the voxels not yet converged only (they converge for strains beyond
    100%, where a fixed-point iteration would not). The step length t is halved where the
    full step does not reduce the residual (the full step left the basin and diverged where
    the gradient of u changes within a voxel). Voxels inside the grid still unconverged are
    logged (outside it u is extended by its values on the faces).

    Parameters
    ----------
    displacement : numpy.ndarray or None
        (3, z, y, x) displacement (u_z, u_y, u_x) in um on the reference grid (unused with
        ``axial_profile``).
    voxel_size_um : float or 3 floats
        Voxel size (um), one value or per axis (z, y, x).
    axial_profile : numpy.ndarray, optional
        (z,) u_z per reference plane (um) of a purely axial field: the inverse is then
        exact (:func:`inverse_map_1d`).
    tol : float
        Residual (voxels) below which the iteration stops.
    max_iterations : int
        Newton iterations at most.
    origin : 3 int
        Index in the whole volume of ``displacement[:, 0, 0, 0]`` (a box cut from a larger
        field, block-wise processing). Coordinates are solved in the whole volume's voxel
        indices, so a box gives bit for bit the whole field's values where its iterates stay
        inside the box.
    region : tuple of 3 slice, optional
        The voxels of the box to solve for (box coordinates); default all.
    unconverged : list, optional
        Receives the number of voxels inside the box left unconverged, instead of a
        logged warning.

    Returns
    -------
    numpy.ndarray
        (z,) plane coordinates with ``axial_profile``, else (3, z, y, x) reference
        coordinates (voxels, of the whole volume) of the region.

    Raises
    ------
    ParameterError
        A voxel size that is not positive, or an axial profile that folds the grid.
    """
    vs = voxel_size_triple(voxel_size_um)
    if axial_profile is not None:
        return inverse_map_1d(axial_profile / vs[0])
    box = displacement.shape[1:]
    region = region or tuple(slice(0, n) for n in box)
    shape = tuple(s.stop - s.start for s in region)
    o = np.asarray(origin, np.float64)[:, None]
    x = np.stack(np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float64) + c
                               for s, c in zip(region, o[:, 0], strict=True)],
                             indexing="ij")).reshape(3, -1)
    u = displacement.astype(np.float64) / vs[:, None, None, None]
    grad = [[np.gradient(u[i], axis=j) for j in range(3)] for i in range(3)]
    X = x.copy()
    lo, hi = o, o + np.array(box, float)[:, None] - 1.0
    active = np.arange(x.shape[1])
    r = _residual(u, X, x, o)
    for _ in range(max_iterations):
        done = np.abs(r).max(axis=0) < tol
        active, r = active[~done], r[:, ~done]
        if active.size == 0:
            break
        Xa, xa = X[:, active], x[:, active]
        step = _solve_jacobian(grad, Xa - o, r)
        norm = np.abs(r).max(axis=0)
        # backtracking: halve the step where it does not reduce the residual (a full
        # Newton step can leave the basin where the gradient of u changes within a voxel)
        t = np.ones(active.size)
        for _ in range(6):
            Xn = Xa - t * step
            rn = _residual(u, Xn, xa, o)
            worse = np.abs(rn).max(axis=0) >= norm
            if not worse.any():
                break
            t[worse] *= 0.5
        X[:, active], r = Xn, rn
    # unconverged outside the grid: material that came from outside it
    inside = np.all((X[:, active] > lo) & (X[:, active] < hi), axis=0)
    if unconverged is not None:
        unconverged.append(int(inside.sum()))
    elif inside.any():
        log.warning("inverse map: %d of %d voxels not converged to %g voxel",
                    int(inside.sum()), x.shape[1], tol)
    return X.reshape((3,) + shape)


def _residual(u: np.ndarray, X: np.ndarray, x: np.ndarray, o: np.ndarray) -> np.ndarray:
    """``X + u(X) - x`` (voxels) at the points ``X`` (3, n), u trilinear on a box whose
    first voxel is ``o`` (3, 1): ``X - o`` is exact, so the weights are the whole field's."""
    return X + np.stack([ndimage.map_coordinates(u[c], X - o, order=1, mode="nearest")
                         for c in range(3)]) - x


def _solve_jacobian(grad: list, X: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``(I + grad u(X))^-1 r`` at every point (3x3 inverse by cofactors)."""
    J = [[ndimage.map_coordinates(grad[i][j], X, order=1, mode="nearest") + (i == j)
          for j in range(3)] for i in range(3)]
    c00 = J[1][1] * J[2][2] - J[1][2] * J[2][1]
    c01 = J[1][2] * J[2][0] - J[1][0] * J[2][2]
    c02 = J[1][0] * J[2][1] - J[1][1] * J[2][0]
    det = J[0][0] * c00 + J[0][1] * c01 + J[0][2] * c02
    inv = [[c00, J[0][2] * J[2][1] - J[0][1] * J[2][2], J[0][1] * J[1][2] - J[0][2] * J[1][1]],
           [c01, J[0][0] * J[2][2] - J[0][2] * J[2][0], J[0][2] * J[1][0] - J[0][0] * J[1][2]],
           [c02, J[0][1] * J[2][0] - J[0][0] * J[2][1], J[0][0] * J[1][1] - J[0][1] * J[1][0]]]
    return np.stack([(inv[i][0] * r[0] + inv[i][1] * r[1] + inv[i][2] * r[2]) / det
                     for i in range(3)])


def sample_nearest(labels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Labels at reference coordinates (nearest voxel, clipped to the grid).

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) labels on the reference grid.
    coords : numpy.ndarray
        From :func:`inverse_coordinates`: (z,) plane coordinates or (3, z, y, x)
        coordinates (voxels).

    Returns
    -------
    numpy.ndarray
        (z, y, x) labels of the deformed grid, dtype of ``labels``.
    """
    if coords.ndim == 1:
        idx = np.clip(np.rint(coords), 0, labels.shape[0] - 1).astype(np.intp)
        return labels[idx]
    return ndimage.map_coordinates(labels, coords, order=0, mode="nearest")


def warp_labels(labels: np.ndarray, displacement: np.ndarray, voxel_size_um,
                axial_profile: np.ndarray | None = None) -> np.ndarray:
    """Deformed labels ``L(x) = L0(X)`` with ``x = X + u(X)`` (nearest-neighbour sampling).

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) reference labels L0.
    displacement, voxel_size_um, axial_profile
        As :func:`inverse_coordinates` (um).

    Returns
    -------
    numpy.ndarray
        (z, y, x) deformed labels.
    """
    return sample_nearest(labels, inverse_coordinates(displacement, voxel_size_um,
                                                      axial_profile))


def sample_linear(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Grey values at reference coordinates (trilinear, edge values outside).

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) reference volume.
    coords : numpy.ndarray
        Where to sample (voxels), as :func:`inverse_coordinates` returns them.

    Returns
    -------
    numpy.ndarray
        (z, y, x) float32 deformed volume.
    """
    v = np.asarray(volume, dtype=np.float32)
    if coords.ndim == 1:
        z = np.clip(coords, 0, v.shape[0] - 1)
        z0 = np.floor(z).astype(np.intp)
        z1 = np.minimum(z0 + 1, v.shape[0] - 1)
        w = (z - z0).astype(np.float32)[:, None, None]
        return (1 - w) * v[z0] + w * v[z1]
    return ndimage.map_coordinates(v, coords, order=1, mode="nearest")
