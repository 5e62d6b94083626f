"""Kinematics on voxel grids shared by the phantom and the DVC stage: strain of a dense
displacement field, inverse mappings (deformed -> reference positions) and warping.

Convention: a displacement field u (3, z, y, x) lives on the reference grid; the material at
reference position X is at x = X + u(X) in the deformed state; a deformed volume is
``D(x) = R(X(x))``.

Gradients use the voxel size per axis (z, y, x) in um, so anisotropic voxels give the right
strain; tensor components are named by axis letters (``eyz``: z with y, entry (0, 1);
``exz``: (0, 2); ``exy``: y with x, (1, 2)), as in :mod:`anodetwin.dvc.strain`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError

__all__ = ["strain_fields", "inverse_map_1d", "inverse_coordinates", "sample_nearest",
           "sample_linear", "warp_labels", "voxel_size_triple"]


def voxel_size_triple(voxel_size_um) -> np.ndarray:
    """A voxel size, one float or a (z, y, x) triple (None: 1), as a (3,) float array.

    Raises
    ------
    ParameterError
        When a size is not positive and finite.
    """
    v = np.broadcast_to(np.asarray(1.0 if voxel_size_um is None else voxel_size_um,
                                   dtype=np.float64), (3,)).copy()
    if not (np.isfinite(v).all() and np.all(v > 0)):
        raise ParameterError(f"voxel size {voxel_size_um} is not positive",
                             "give a voxel size > 0 um (one value or z, y, x)")
    return v


def strain_fields(displacement: np.ndarray, voxel_size_um) -> dict[str, np.ndarray]:
    """Strain of a displacement field on the voxel grid.

    Parameters
    ----------
    displacement : numpy.ndarray
        (3, z, y, x) components (u_z, u_y, u_x) in um on voxel centres.
    voxel_size_um : float or 3 floats
        Voxel size (um), one value or per axis (z, y, x): the gradient along axis j divides
        by ``voxel_size_um[j]``.

    Returns
    -------
    dict
        ``volumetric`` = det(I + grad u) - 1, and the small-strain components ``ezz``,
        ``eyy``, ``exx``, ``eyz``, ``exz``, ``exy`` (float32), from central differences
        (one-sided at the faces, :func:`numpy.gradient`). Components are named by axis
        letters: ``eyz`` = (du_z/dy + du_y/dz)/2 (entry (0, 1)), ``exz`` = (du_z/dx +
        du_x/dz)/2 (entry (0, 2)), ``exy`` = (du_y/dx + du_x/dy)/2 (entry (1, 2)).
    """
    vs = voxel_size_triple(voxel_size_um)
    g = [[np.gradient(displacement[i], vs[j], axis=j).astype(np.float32, copy=False)
          for j in range(3)] for i in range(3)]
    # det(I + g) - 1 expanded, so that no 3x3 field is copied
    a, b, c = g[0][0] + 1, g[0][1], g[0][2]
    d, e, f = g[1][0], g[1][1] + 1, g[1][2]
    gg, hh, ii = g[2][0], g[2][1], g[2][2] + 1
    det = a * (e * ii - f * hh) - b * (d * ii - f * gg) + c * (d * hh - e * gg)
    return {"volumetric": det - 1.0, "ezz": g[0][0], "eyy": g[1][1], "exx": g[2][2],
            "eyz": 0.5 * (g[0][1] + g[1][0]), "exz": 0.5 * (g[0][2] + g[2][0]),
            "exy": 0.5 * (g[1][2] + g[2][1])}


def inverse_map_1d(uz_voxels: np.ndarray) -> np.ndarray:
    """Reference plane coordinate X(z) of every deformed plane z for z = Z + u(Z)
    (monotone, voxel units); beyond the grid the last displacement continues."""
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
                        max_iterations: int = 20) -> np.ndarray:
    """Reference coordinates X (voxels) of every deformed voxel x, solving x = X + u(X).

    ``displacement`` (3, z, y, x; um) is converted to voxels per axis (component i over
    ``voxel_size_um[i]``; one value or a (z, y, x) triple), so the iteration runs in voxel
    index coordinates, where ``grad u`` is the index-space Jacobian. With
    ``axial_profile`` (u_z per plane, um) the inverse is exact: a (z,) array of plane
    coordinates. Otherwise a (3, z, y, x) array from Newton iterations
    ``X <- X - (I + grad u(X))^-1 (X + u(X) - x)`` with trilinear interpolation of u and its
    gradient, until the residual is below ``tol`` voxels (converges for strains beyond 100%,
    where a fixed-point iteration would not).
    """
    vs = voxel_size_triple(voxel_size_um)
    if axial_profile is not None:
        return inverse_map_1d(axial_profile / vs[0])
    shape = displacement.shape[1:]
    x = np.indices(shape, dtype=np.float64).reshape(3, -1)
    u = displacement.astype(np.float64) / vs[:, None, None, None]
    grad = [[np.gradient(u[i], axis=j) for j in range(3)] for i in range(3)]
    X = x.copy()
    for _ in range(max_iterations):
        r = X + np.stack([ndimage.map_coordinates(u[c], X, order=1, mode="nearest")
                          for c in range(3)]) - x
        if np.abs(r).max() < tol:
            break
        J = [[ndimage.map_coordinates(grad[i][j], X, order=1, mode="nearest") + (i == j)
              for j in range(3)] for i in range(3)]
        # 3x3 inverse by cofactors, all points at once
        c00 = J[1][1] * J[2][2] - J[1][2] * J[2][1]
        c01 = J[1][2] * J[2][0] - J[1][0] * J[2][2]
        c02 = J[1][0] * J[2][1] - J[1][1] * J[2][0]
        det = J[0][0] * c00 + J[0][1] * c01 + J[0][2] * c02
        inv = [[c00, J[0][2] * J[2][1] - J[0][1] * J[2][2], J[0][1] * J[1][2] - J[0][2] * J[1][1]],
               [c01, J[0][0] * J[2][2] - J[0][2] * J[2][0], J[0][2] * J[1][0] - J[0][0] * J[1][2]],
               [c02, J[0][1] * J[2][0] - J[0][0] * J[2][1], J[0][0] * J[1][1] - J[0][1] * J[1][0]]]
        for i in range(3):
            X[i] -= (inv[i][0] * r[0] + inv[i][1] * r[1] + inv[i][2] * r[2]) / det
    return X.reshape((3,) + shape)


def sample_nearest(labels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``labels`` at reference coordinates from :func:`inverse_coordinates` (nearest voxel,
    clipped to the grid)."""
    if coords.ndim == 1:
        idx = np.clip(np.rint(coords), 0, labels.shape[0] - 1).astype(np.intp)
        return labels[idx]
    return ndimage.map_coordinates(labels, coords, order=0, mode="nearest")


def warp_labels(labels: np.ndarray, displacement: np.ndarray, voxel_size_um,
                axial_profile: np.ndarray | None = None) -> np.ndarray:
    """Deformed labels ``L(x) = L0(X)`` with ``x = X + u(X)`` (nearest-neighbour sampling)."""
    return sample_nearest(labels, inverse_coordinates(displacement, voxel_size_um,
                                                      axial_profile))


def sample_linear(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``volume`` at reference coordinates (trilinear, edge values outside), float32."""
    v = np.asarray(volume, dtype=np.float32)
    if coords.ndim == 1:
        z = np.clip(coords, 0, v.shape[0] - 1)
        z0 = np.floor(z).astype(np.intp)
        z1 = np.minimum(z0 + 1, v.shape[0] - 1)
        w = (z - z0).astype(np.float32)[:, None, None]
        return (1 - w) * v[z0] + w * v[z1]
    return ndimage.map_coordinates(v, coords, order=1, mode="nearest")
