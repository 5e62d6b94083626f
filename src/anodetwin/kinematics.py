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

from numba import njit

from anodetwin.errors import ParameterError
from anodetwin.log import get_logger
from anodetwin.strain import strain_fields, voxel_size_triple

log = get_logger("kinematics")

__all__ = ["strain_fields", "inverse_map_1d", "inverse_coordinates", "inverse_box", "warp_box",
           "sample_nearest", "sample_linear", "warp_labels", "voxel_size_triple", "CHAIN"]


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
    ``X <- X - t (I + grad u)^-1 (X + u(X) - x)`` from ``X = x - u(x)``, compiled, voxel by
    voxel, with trilinear interpolation of u; the Jacobian (central differences of the
    interpolated field) is renewed at the current point wherever the misfit falls by less
    than half, so the iteration converges for strains beyond 100%, where a fixed-point
    iteration would not. The step length t is halved where the full step does not reduce
    the misfit (the full step leaves the basin where the gradient of u changes within a
    voxel). Voxels inside the grid still unconverged are logged (outside it u is extended
    by its values on the faces).

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
    u = np.ascontiguousarray(displacement / vs[:, None, None, None])  # voxels
    o = np.asarray(origin, np.float64)
    lo = np.array([s.start for s in region], np.int64)
    hi = np.array([s.stop for s in region], np.int64)
    X, bad = inverse_box(u, o, lo, hi, float(tol), int(max_iterations))
    if unconverged is not None:
        unconverged.append(int(bad))
    elif bad:
        log.warning("inverse map: %d of %d voxels not converged to %g voxel",
                    int(bad), int(np.prod(hi - lo)), tol)
    return X


_INLINE = dict(cache=True, nogil=True, inline="always")


@njit(**_INLINE)
def _corner(p: float, n: int) -> tuple:
    """Lower index, upper index and weight of position ``p`` clamped to ``0..n-1``."""
    p = min(max(p, 0.0), n - 1.0)
    i0 = int(np.floor(p))
    return i0, min(i0 + 1, n - 1), p - i0


@njit(**_INLINE)
def _lerp8(u: np.ndarray, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int, fz: float,
           fy: float, fx: float) -> float:
    """Trilinear interpolation of a 3-D array between its 8 grid neighbours."""
    a = u[z0, y0, x0] * (1 - fx) + u[z0, y0, x1] * fx
    b = u[z0, y1, x0] * (1 - fx) + u[z0, y1, x1] * fx
    c = u[z1, y0, x0] * (1 - fx) + u[z1, y0, x1] * fx
    d = u[z1, y1, x0] * (1 - fx) + u[z1, y1, x1] * fx
    return (a * (1 - fy) + b * fy) * (1 - fz) + (c * (1 - fy) + d * fy) * fz


@njit(**_INLINE)
def _tri1(g: np.ndarray, b0: float, b1: float, b2: float) -> float:
    """``g`` (z, y, x) interpolated (trilinear) at box position (b0, b1, b2), clamped."""
    z0, z1, fz = _corner(b0, g.shape[0])
    y0, y1, fy = _corner(b1, g.shape[1])
    x0, x1, fx = _corner(b2, g.shape[2])
    return _lerp8(g, z0, z1, y0, y1, x0, x1, fz, fy, fx)


@njit(**_INLINE)
def _tri3(u: np.ndarray, b0: float, b1: float, b2: float) -> tuple:
    """The 3 components of ``u`` (3, z, y, x) interpolated at (b0, b1, b2), clamped."""
    z0, z1, fz = _corner(b0, u.shape[1])
    y0, y1, fy = _corner(b1, u.shape[2])
    x0, x1, fx = _corner(b2, u.shape[3])
    return (_lerp8(u[0], z0, z1, y0, y1, x0, x1, fz, fy, fx),
            _lerp8(u[1], z0, z1, y0, y1, x0, x1, fz, fy, fx),
            _lerp8(u[2], z0, z1, y0, y1, x0, x1, fz, fy, fx))


@njit(**_INLINE)
def _invert3(J: np.ndarray, out: np.ndarray) -> None:
    """Inverse of a 3x3 matrix by cofactors into ``out``."""
    c00 = J[1, 1] * J[2, 2] - J[1, 2] * J[2, 1]
    c01 = J[1, 2] * J[2, 0] - J[1, 0] * J[2, 2]
    c02 = J[1, 0] * J[2, 1] - J[1, 1] * J[2, 0]
    det = J[0, 0] * c00 + J[0, 1] * c01 + J[0, 2] * c02
    out[0, 0], out[1, 0], out[2, 0] = c00 / det, c01 / det, c02 / det
    out[0, 1] = (J[0, 2] * J[2, 1] - J[0, 1] * J[2, 2]) / det
    out[0, 2] = (J[0, 1] * J[1, 2] - J[0, 2] * J[1, 1]) / det
    out[1, 1] = (J[0, 0] * J[2, 2] - J[0, 2] * J[2, 0]) / det
    out[1, 2] = (J[0, 2] * J[1, 0] - J[0, 0] * J[1, 2]) / det
    out[2, 1] = (J[0, 1] * J[2, 0] - J[0, 0] * J[2, 1]) / det
    out[2, 2] = (J[0, 0] * J[1, 1] - J[0, 1] * J[1, 0]) / det


@njit(**_INLINE)
def _point_jacobian_inverse(u: np.ndarray, b0: float, b1: float, b2: float, out: np.ndarray,
                            J: np.ndarray) -> None:
    """Inverse of I + grad u at box position (b0, b1, b2) (central differences of the
    trilinear field, which equal the interpolated central differences of the grid)."""
    for j in range(3):
        dz, dy, dx = (1.0 if j == 0 else 0.0), (1.0 if j == 1 else 0.0), (1.0 if j == 2 else 0.0)
        p = _tri3(u, b0 + dz, b1 + dy, b2 + dx)
        m = _tri3(u, b0 - dz, b1 - dy, b2 - dx)
        for i in range(3):
            J[i, j] = (1.0 if i == j else 0.0) + 0.5 * (p[i] - m[i])
    _invert3(J, out)


@njit(**_INLINE)
def _grid_jacobian_inverse(u: np.ndarray, i: int, j: int, k: int, out: np.ndarray,
                           J: np.ndarray) -> None:
    """Inverse of I + grad u at grid point (i, j, k) of the box (central differences,
    one-sided at the box's faces, as numpy.gradient) into ``out``."""
    idx = (i, j, k)
    for a in range(3):
        lo, hi = max(idx[a] - 1, 0), min(idx[a] + 1, u.shape[a + 1] - 1)
        for c in range(3):
            if hi == lo:
                g = 0.0
            elif a == 0:
                g = (u[c, hi, j, k] - u[c, lo, j, k]) / (hi - lo)
            elif a == 1:
                g = (u[c, i, hi, k] - u[c, i, lo, k]) / (hi - lo)
            else:
                g = (u[c, i, j, hi] - u[c, i, j, lo]) / (hi - lo)
            J[c, a] = (1.0 if c == a else 0.0) + g
    _invert3(J, out)


@njit(**_INLINE)
def _misfit(u: np.ndarray, o: np.ndarray, X0: float, X1: float, X2: float, x0: float,
            x1: float, x2: float) -> tuple:
    """r = X + u(X) - x (voxels, whole-volume coordinates; ``o`` the box origin) and
    max |r|."""
    v = _tri3(u, X0 - o[0], X1 - o[1], X2 - o[2])
    r0, r1, r2 = X0 + v[0] - x0, X1 + v[1] - x1, X2 + v[2] - x2
    return r0, r1, r2, max(abs(r0), abs(r1), abs(r2))


@njit(**_INLINE)
def _solve(u: np.ndarray, o: np.ndarray, x0: float, x1: float, x2: float, X: np.ndarray,
           Ji: np.ndarray, J: np.ndarray, tol: float, max_iterations: int) -> float:
    """Newton iterations on X + u(X) = x from the guess ``X`` (3,) with the Jacobian
    inverse ``Ji`` (renewed in place at the current point where the misfit falls by less
    than half; the step halved up to 6 times where it does not reduce the misfit; ``J`` a
    work array). Returns the final misfit (voxels)."""
    r0, r1, r2, nr = _misfit(u, o, X[0], X[1], X[2], x0, x1, x2)
    for _ in range(max_iterations):
        if nr < tol:
            break
        s0 = Ji[0, 0] * r0 + Ji[0, 1] * r1 + Ji[0, 2] * r2
        s1 = Ji[1, 0] * r0 + Ji[1, 1] * r1 + Ji[1, 2] * r2
        s2 = Ji[2, 0] * r0 + Ji[2, 1] * r1 + Ji[2, 2] * r2
        t = 1.0
        for _b in range(7):
            n0, n1, n2 = X[0] - t * s0, X[1] - t * s1, X[2] - t * s2
            q0, q1, q2, nq = _misfit(u, o, n0, n1, n2, x0, x1, x2)
            if nq < nr:
                break
            t *= 0.5
        if nq > 0.5 * nr:
            _point_jacobian_inverse(u, n0 - o[0], n1 - o[1], n2 - o[2], Ji, J)
        X[0], X[1], X[2] = n0, n1, n2
        r0, r1, r2, nr = q0, q1, q2, nq
    return nr


#: Voxels along x solved as one chain (each guess from the previous voxel's solution); the
#: chains start at multiples of this in the whole volume, so a box solves its voxels
#: exactly as the whole volume does.
CHAIN = 16


@njit(**_INLINE)
def _chain_start(o: np.ndarray, lo: np.ndarray) -> int:
    """Box x index where the chain holding region column ``lo[2]`` starts (not before the
    box)."""
    return max(0, lo[2] - int(o[2] + lo[2]) % CHAIN)


@njit(**_INLINE)
def _row(u: np.ndarray, o: np.ndarray, i: int, j: int, k0: int, k1: int, tol: float,
         max_iterations: int, Xrow: np.ndarray, X: np.ndarray, Ji: np.ndarray,
         J: np.ndarray) -> int:
    """Solve box row (i, j) for x indices k0..k1-1 into ``Xrow`` (3, k1 - k0), chains
    restarting at whole-volume multiples of :data:`CHAIN`; returns the unconverged voxels
    inside the box."""
    nbox = u.shape[1:]
    bad = 0
    x0, x1 = o[0] + i, o[1] + j
    for k in range(k0, k1):
        x2 = o[2] + k
        if k == k0 or int(x2) % CHAIN == 0:
            X[0], X[1], X[2] = x0 - u[0, i, j, k], x1 - u[1, i, j, k], x2 - u[2, i, j, k]
            _grid_jacobian_inverse(u, i, j, k, Ji, J)
        elif k - k0 >= 2 and int(x2) % CHAIN != 1:
            X[0] = 2 * X[0] - Xrow[0, k - k0 - 2]
            X[1] = 2 * X[1] - Xrow[1, k - k0 - 2]
            X[2] = 2 * X[2] - Xrow[2, k - k0 - 2]
        else:
            X[0], X[1], X[2] = X[0] + Ji[0, 2], X[1] + Ji[1, 2], X[2] + Ji[2, 2]
        nr = _solve(u, o, x0, x1, x2, X, Ji, J, tol, max_iterations)
        Xrow[0, k - k0], Xrow[1, k - k0], Xrow[2, k - k0] = X[0], X[1], X[2]
        if nr >= tol and (o[0] < X[0] < o[0] + nbox[0] - 1) and \
                (o[1] < X[1] < o[1] + nbox[1] - 1) and (o[2] < X[2] < o[2] + nbox[2] - 1):
            bad += 1
    return bad


@njit(cache=True, nogil=True)
def inverse_box(u: np.ndarray, o: np.ndarray, lo: np.ndarray, hi: np.ndarray, tol: float,
                 max_iterations: int) -> tuple:
    """Reference coordinates (3, region) of the region ``lo:hi`` of a box of displacement
    ``u`` (voxels; box origin ``o`` in the whole volume) and the number of voxels inside
    the box left unconverged (:func:`_solve` along the chains of :func:`_row`)."""
    out = np.empty((3, hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]))
    k0 = _chain_start(o, lo)
    Xrow = np.empty((3, hi[2] - k0))
    X, Ji, J = np.empty(3), np.empty((3, 3)), np.empty((3, 3))
    bad = 0
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            bad += _row(u, o, i, j, k0, hi[2], tol, max_iterations, Xrow, X, Ji, J)
            out[:, i - lo[0], j - lo[1], :] = Xrow[:, lo[2] - k0:]
    return out, bad


@njit(cache=True, nogil=True)
def warp_box(u: np.ndarray, o: np.ndarray, lo: np.ndarray, hi: np.ndarray, ref: np.ndarray,
             labels: np.ndarray, tol: float, max_iterations: int) -> tuple:
    """Deformed grey values and labels of the region ``lo:hi`` of a box: the reference
    ``ref`` (trilinear) and ``labels`` (nearest; an empty array: none) of the same box,
    sampled at the inverse map of the displacement ``u`` (voxels, (3, box); box origin ``o``
    in the whole volume; positions clamped to the box).

    Returns
    -------
    grey : float32 (region)
    labels : int32 (region), or (0, 0, 0) without labels
    unconverged : int
        Voxels inside the box whose inverse map did not converge.
    """
    shape = (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])
    grey = np.empty(shape, np.float32)
    with_labels = labels.size > 0
    lab = np.zeros(shape if with_labels else (0, 0, 0), np.int32)
    k0 = _chain_start(o, lo)
    Xrow = np.empty((3, hi[2] - k0))
    X, Ji, J = np.empty(3), np.empty((3, 3)), np.empty((3, 3))
    bad = 0
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            bad += _row(u, o, i, j, k0, hi[2], tol, max_iterations, Xrow, X, Ji, J)
            for k in range(lo[2], hi[2]):
                b0, b1, b2 = (Xrow[0, k - k0] - o[0], Xrow[1, k - k0] - o[1],
                              Xrow[2, k - k0] - o[2])
                grey[i - lo[0], j - lo[1], k - lo[2]] = _tri1(ref, b0, b1, b2)
                if with_labels:
                    lab[i - lo[0], j - lo[1], k - lo[2]] = labels[
                        _nearest(b0, ref.shape[0]), _nearest(b1, ref.shape[1]),
                        _nearest(b2, ref.shape[2])]
    return grey, lab, bad


@njit(**_INLINE)
def _nearest(p: float, n: int) -> int:
    return min(max(int(np.floor(p + 0.5)), 0), n - 1)


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
