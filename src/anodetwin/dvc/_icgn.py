"""Compiled kernels of the native DVC engine: inverse-compositional Gauss-Newton (IC-GN)
registration of many windows at once, and the integer-shift ZNCC search by FFT.

The shape function is the 12-parameter affine map of spam: a voxel at offset x (z, y, x;
voxels) from the node in the reference is found at ``node + F x + t`` in the deformed
volume, Phi = [[F, t], [0, 1]]. The parameter vector is p = (F - I row by row, t).

IC-GN (Baker & Matthews 2004; Pan, Li & Tong 2013, Exp. Mech. 53:1277, for DIC with the
ZNSSD criterion): the steepest-descent images ``SD_i = grad f(x_i) . dW/dp`` and the
Gauss-Newton matrix ``H = sum SD_i SD_i^T`` are computed once per window from the
*reference*; each iteration interpolates the deformed volume at the warped positions,
solves ``H dp = -sum SD_i r_i`` and composes ``Phi <- Phi inv(W(dp))``.

ZNSSD residual: ``r_i = (f_i - mean f) - (|f~| / |g~|) (g_i - mean g)``: invariant to an
affine change of grey values between the windows. SSD residual: ``r_i = f_i - g_i``.

Interpolation of the deformed volume: trilinear (order 1) or cubic B-spline (order 3) on
coefficients prefiltered by :func:`scipy.ndimage.spline_filter`. Reference gradients are
central differences (one-sided on the faces of the loaded region).
"""

from __future__ import annotations

import numba as nb
import numpy as np

# status codes, as anodetwin.dvc.correlate.ReturnStatus
CONVERGED, ITERATION_LIMIT, DIVERGED, SINGULAR = 2, 1, -1, -2
VOLUME_CHANGE, OUTSIDE, NO_TEXTURE = -3, -5, -6

ZNSSD, SSD = 0, 1


@nb.njit(cache=True, inline="always")
def _trilinear(im, z, y, x):
    nz, ny, nx = im.shape
    if not (z >= 0.0 and y >= 0.0 and x >= 0.0
            and z <= nz - 1.0 and y <= ny - 1.0 and x <= nx - 1.0):
        return np.nan
    z0 = min(int(z), nz - 2)
    y0 = min(int(y), ny - 2)
    x0 = min(int(x), nx - 2)
    fz, fy, fx = z - z0, y - y0, x - x0
    c00 = im[z0, y0, x0] * (1 - fx) + im[z0, y0, x0 + 1] * fx
    c01 = im[z0, y0 + 1, x0] * (1 - fx) + im[z0, y0 + 1, x0 + 1] * fx
    c10 = im[z0 + 1, y0, x0] * (1 - fx) + im[z0 + 1, y0, x0 + 1] * fx
    c11 = im[z0 + 1, y0 + 1, x0] * (1 - fx) + im[z0 + 1, y0 + 1, x0 + 1] * fx
    c0 = c00 * (1 - fy) + c01 * fy
    c1 = c10 * (1 - fy) + c11 * fy
    return c0 * (1 - fz) + c1 * fz


@nb.njit(cache=True, inline="always")
def _bspline_weights(t):
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    return (s * s * s / 6.0, (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
            (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t3 / 6.0)


@nb.njit(cache=True, inline="always")
def _row(coef, z, y, x0, w0, w1, w2, w3):
    return (coef[z, y, x0 - 1] * w0 + coef[z, y, x0] * w1 + coef[z, y, x0 + 1] * w2
            + coef[z, y, x0 + 2] * w3)


@nb.njit(cache=True)
def _cubic(coef, z, y, x):
    nz, ny, nx = coef.shape
    if not (z >= 1.0 and y >= 1.0 and x >= 1.0
            and z <= nz - 2.0 and y <= ny - 2.0 and x <= nx - 2.0):
        return np.nan
    z0 = min(int(z), nz - 3)
    y0 = min(int(y), ny - 3)
    x0 = min(int(x), nx - 3)
    wz = _bspline_weights(z - z0)
    wy = _bspline_weights(y - y0)
    a0, a1, a2, a3 = _bspline_weights(x - x0)
    v = 0.0
    for i in range(4):
        zi = z0 - 1 + i
        vy = (_row(coef, zi, y0 - 1, x0, a0, a1, a2, a3) * wy[0]
              + _row(coef, zi, y0, x0, a0, a1, a2, a3) * wy[1]
              + _row(coef, zi, y0 + 1, x0, a0, a1, a2, a3) * wy[2]
              + _row(coef, zi, y0 + 2, x0, a0, a1, a2, a3) * wy[3])
        v += vy * wz[i]
    return v


@nb.njit(cache=True, inline="always")
def _gradient(im, z, y, x, axis):
    n = im.shape[axis]
    idx = (z, y, x)[axis]
    lo = max(idx - 1, 0)
    hi = min(idx + 1, n - 1)
    if axis == 0:
        a, b = im[hi, y, x], im[lo, y, x]
    elif axis == 1:
        a, b = im[z, hi, x], im[z, lo, x]
    else:
        a, b = im[z, y, hi], im[z, y, lo]
    return (a - b) / max(hi - lo, 1)


@nb.njit(cache=True)
def _reference(ref, mask, use_mask, c, h, phi0, slack):
    """Values, gradients and offsets of the window's used voxels: in the mask, and mapped
    by ``phi0`` at least ``slack`` voxels inside the loaded region (a window at the
    volume's faces loses the voxels that move out of it)."""
    nz, ny, nx = ref.shape
    n = (2 * h[0] + 1) * (2 * h[1] + 1) * (2 * h[2] + 1)
    f = np.empty(n)
    grad = np.empty((n, 3))
    off = np.empty((n, 3))
    m = 0
    for a in range(-h[0], h[0] + 1):
        for b in range(-h[1], h[1] + 1):
            for d in range(-h[2], h[2] + 1):
                z, y, x = c[0] + a, c[1] + b, c[2] + d
                if use_mask and mask[z, y, x] == 0:
                    continue
                pz = c[0] + phi0[0, 3] + phi0[0, 0] * a + phi0[0, 1] * b + phi0[0, 2] * d
                py = c[1] + phi0[1, 3] + phi0[1, 0] * a + phi0[1, 1] * b + phi0[1, 2] * d
                px = c[2] + phi0[2, 3] + phi0[2, 0] * a + phi0[2, 1] * b + phi0[2, 2] * d
                if not (slack <= pz <= nz - 1 - slack and slack <= py <= ny - 1 - slack
                        and slack <= px <= nx - 1 - slack):
                    continue
                f[m] = ref[z, y, x]
                if 0 < z < nz - 1 and 0 < y < ny - 1 and 0 < x < nx - 1:
                    grad[m, 0] = 0.5 * (ref[z + 1, y, x] - ref[z - 1, y, x])
                    grad[m, 1] = 0.5 * (ref[z, y + 1, x] - ref[z, y - 1, x])
                    grad[m, 2] = 0.5 * (ref[z, y, x + 1] - ref[z, y, x - 1])
                else:
                    grad[m, 0] = _gradient(ref, z, y, x, 0)
                    grad[m, 1] = _gradient(ref, z, y, x, 1)
                    grad[m, 2] = _gradient(ref, z, y, x, 2)
                off[m, 0], off[m, 1], off[m, 2] = a, b, d
                m += 1
    return f[:m], grad[:m], off[:m], n


@nb.njit(cache=True, inline="always")
def _sd(grad, off, i, k):
    """Steepest-descent image k (of 12) at voxel i."""
    if k >= 9:
        return grad[i, k - 9]
    return grad[i, k // 3] * off[i, k % 3]


@nb.njit(cache=True)
def _steepest_descent(grad, off, params):
    """(m, len(params)) steepest-descent images of the used voxels."""
    sd = np.empty((grad.shape[0], len(params)))
    if len(params) == 12:  # all of them, in order
        for i in range(grad.shape[0]):
            for r in range(3):
                for k in range(3):
                    sd[i, 3 * r + k] = grad[i, r] * off[i, k]
                sd[i, 9 + r] = grad[i, r]
        return sd
    for i in range(grad.shape[0]):
        for a in range(len(params)):
            sd[i, a] = _sd(grad, off, i, params[a])
    return sd


@nb.njit(cache=True)
def _sample(coef, order, phi, c, off, g):
    """Deformed values at the warped offsets; False when one lies outside ``coef``."""
    tz, ty, tx = c[0] + phi[0, 3], c[1] + phi[1, 3], c[2] + phi[2, 3]
    f00, f01, f02 = phi[0, 0], phi[0, 1], phi[0, 2]
    f10, f11, f12 = phi[1, 0], phi[1, 1], phi[1, 2]
    f20, f21, f22 = phi[2, 0], phi[2, 1], phi[2, 2]
    for i in range(off.shape[0]):
        a, b, d = off[i, 0], off[i, 1], off[i, 2]
        pz = tz + f00 * a + f01 * b + f02 * d
        py = ty + f10 * a + f11 * b + f12 * d
        px = tx + f20 * a + f21 * b + f22 * d
        if order == 1:
            v = _trilinear(coef, pz, py, px)
        else:
            v = _cubic(coef, pz, py, px)
        if not np.isfinite(v):
            return False
        g[i] = v
    return True


@nb.njit(cache=True)
def _residual(f0, fm, g, criterion, r):
    """Residuals (``f0`` = f - ``fm``, zero-mean); returns sum r^2 and the ZNCC."""
    n = len(g)
    gm = 0.0
    for i in range(n):
        gm += g[i]
    gm /= n
    sg = 0.0
    sf = 0.0
    sfg = 0.0
    for i in range(n):
        sg += (g[i] - gm) ** 2
        sf += f0[i] ** 2
        sfg += f0[i] * (g[i] - gm)
    zncc = sfg / np.sqrt(sf * sg) if sf > 0 and sg > 0 else 0.0
    scale = np.sqrt(sf / sg) if sg > 0 else 0.0
    ss = 0.0
    for i in range(n):
        if criterion == ZNSSD:
            r[i] = f0[i] - scale * (g[i] - gm)
        else:
            r[i] = f0[i] + fm - g[i]
        ss += r[i] ** 2
    return ss, zncc


@nb.njit(cache=True)
def _step(Hinv, sd, r, params, h):
    """Parameter increment dp (12, zeros where not solved for) and its norm (as spam's
    ``deltaPhiNorm``: F - I and t unscaled)."""
    b = sd.T @ r
    dp_s = -(Hinv @ b)
    dp = np.zeros(12)
    for a in range(len(params)):
        dp[params[a]] = dp_s[a]
    norm = 0.0
    for k in range(12):
        norm += dp[k] ** 2
    return dp, np.sqrt(norm)


@nb.njit(cache=True)
def _compose(phi, dp):
    """Phi inv(W(dp))."""
    w = np.eye(4)
    for r in range(3):
        for k in range(3):
            w[r, k] += dp[3 * r + k]
        w[r, 3] = dp[9 + r]
    return phi @ np.linalg.inv(w)


@nb.njit(cache=True)
def _solve_node(ref, coef, mask, use_mask, c, phi0, h, params, cfg, out_phi, out_f):
    """IC-GN of one window; returns (status, iterations). ``cfg`` = (order, criterion,
    max_iterations, delta_min, min_std, coverage, slack); ``out_f`` = (error, delta, residual,
    zncc, sigma_z, sigma_y, sigma_x)."""
    order, criterion, max_it = int(cfg[0]), int(cfg[1]), int(cfg[2])
    delta_min, min_std, coverage, slack = cfg[3], cfg[4], cfg[5], cfg[6]
    f, grad, off, n_all = _reference(ref, mask, use_mask, c, h, phi0, slack)
    m = len(f)
    if m < max(13, coverage * n_all):
        return OUTSIDE, 0
    fm = f.mean()
    f0 = f - fm
    std = np.sqrt((f0 ** 2).mean())
    if std <= 0.0 or std < min_std:
        return NO_TEXTURE, 0
    sd = _steepest_descent(grad, off, params)
    H = sd.T @ sd
    ev = np.linalg.eigvalsh(H)
    if not ev[0] > 1e-10 * ev[-1]:
        return SINGULAR, 0
    Hinv = np.linalg.inv(H)
    phi = phi0.copy()
    g = np.empty(m)
    r = np.empty(m)
    status, it, norm, ss, zncc = ITERATION_LIMIT, 0, np.inf, np.inf, np.nan
    while it < max_it:
        if not _sample(coef, order, phi, c, off, g):
            status = DIVERGED
            break
        # the statistics of the last sample stand for the final Phi: the last increment
        # moved the window by less than delta_min
        ss, zncc = _residual(f0, fm, g, criterion, r)
        dp, norm = _step(Hinv, sd, r, params, h)
        phi = _compose(phi, dp)
        it += 1
        det = np.linalg.det(phi[:3, :3])
        if not (0.2 < det < 3.0):
            status = VOLUME_CHANGE
            break
        if norm < delta_min:
            status = CONVERGED
            break
    out_phi[:, :] = phi
    if status >= ITERATION_LIMIT:
        npar = len(params)
        sigma2 = ss / max(m - npar, 1)
        out_f[0] = ss / m
        out_f[2] = ss / (f0 ** 2).sum()
        out_f[3] = zncc
        for k in range(3):
            idx = -1
            for a in range(npar):
                if params[a] == 9 + k:
                    idx = a
            out_f[4 + k] = np.sqrt(sigma2 * Hinv[idx, idx])
    out_f[1] = norm
    return status, it


@nb.njit(cache=True, parallel=True)
def icgn_batch(ref, coef, mask, use_mask, centres, phi0, h, params, cfg):
    """IC-GN registration of every window of a batch (parallel over the windows).

    Parameters
    ----------
    ref : numpy.ndarray
        (Z, Y, X) float32 reference region.
    coef : numpy.ndarray
        (Z, Y, X) float32 deformed region on the same box (trilinear) or its cubic
        B-spline coefficients (``cfg[0] == 3``).
    mask : numpy.ndarray
        (Z, Y, X) uint8: voxels of the reference used (non-zero), read if ``use_mask``.
    use_mask : bool
    centres : numpy.ndarray
        (B, 3) int64 node positions in the region (windows fully inside it).
    phi0 : numpy.ndarray
        (B, 4, 4) initial mappings (translation relative to the node).
    h : numpy.ndarray
        (3,) int64 half-window sizes.
    params : numpy.ndarray
        int64 indices of the parameters solved for (0..8: F - I row by row, 9..11: t).
    cfg : numpy.ndarray
        (7,) float: interpolation order, criterion (0 ZNSSD, 1 SSD), max iterations,
        convergence threshold (norm of the increment of F - I and t, as spam), minimum grey-value std, minimum coverage (of the
        window's voxels used), slack (voxels: reference voxels that ``phi0`` maps closer
        than this to the region's faces are left out).

    Returns
    -------
    phi : (B, 4, 4) mappings; status : (B,) int64; iterations : (B,) int64;
    floats : (B, 7) error (mean squared residual), last increment norm,
    normalised residual (sum r^2 / sum (f - mean f)^2), ZNCC, displacement std z, y, x
    (voxels; NaN where not converged).
    """
    nb_ = centres.shape[0]
    phi = np.empty((nb_, 4, 4))
    status = np.zeros(nb_, np.int64)
    iters = np.zeros(nb_, np.int64)
    floats = np.full((nb_, 7), np.nan)
    for k in nb.prange(nb_):
        phi[k] = phi0[k]
        s, it = _solve_node(ref, coef, mask, use_mask, centres[k], phi0[k], h, params, cfg,
                            phi[k], floats[k])
        status[k] = s
        iters[k] = it
    return phi, status, iters, floats
