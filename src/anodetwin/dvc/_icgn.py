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
def _cell(shape, z, y, x, border):
    """Lower corner of the interpolation cell of (z, y, x) in an array of ``shape`` whose
    interpolator needs ``border`` voxels on either side (trilinear 0, cubic 1); ok False
    outside."""
    nz, ny, nx = shape
    ok = (z >= border and y >= border and x >= border and z <= nz - 1.0 - border
          and y <= ny - 1.0 - border and x <= nx - 1.0 - border)
    if not ok:
        return False, 0, 0, 0
    return (True, min(int(z), nz - 2 - border), min(int(y), ny - 2 - border),
            min(int(x), nx - 2 - border))


@nb.njit(cache=True, inline="always")
def _trilinear(im, z, y, x):
    ok, z0, y0, x0 = _cell(im.shape, z, y, x, 0)
    if not ok:
        return np.nan
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
    ok, z0, y0, x0 = _cell(coef.shape, z, y, x, 1)
    if not ok:
        return np.nan
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


@nb.njit(cache=True)
def _moments(grad, off, f0, with_h):
    """Full 12 x 12 Gauss-Newton matrix ``sum SD SD^T`` (if ``with_h``) and the sums
    ``sum SD f0`` and ``sum SD`` (12), the steepest-descent images built on the fly
    (never stored)."""
    H = np.zeros((12, 12))
    cf = np.zeros(12)
    c1 = np.zeros(12)
    sd = np.empty(12)
    for i in range(grad.shape[0]):
        for r in range(3):
            for k in range(3):
                sd[3 * r + k] = grad[i, r] * off[i, k]
            sd[9 + r] = grad[i, r]
        for p in range(12):
            cf[p] += sd[p] * f0[i]
            c1[p] += sd[p]
        if with_h:
            for p in range(12):
                for q in range(p, 12):
                    H[p, q] += sd[p] * sd[q]
    for p in range(12):
        for q in range(p):
            H[p, q] = H[q, p]
    return H, cf, c1


@nb.njit(cache=True)
def _sums(coef, order, phi, c, off, grad, f0, sdg):
    """One pass over the window at ``phi``: the deformed values g are interpolated and
    summed as ``sum g``, ``sum g^2``, ``sum f0 g`` (returned) and ``sum SD g`` (into
    ``sdg``); ok is False when a position lies outside ``coef``."""
    tz, ty, tx = c[0] + phi[0, 3], c[1] + phi[1, 3], c[2] + phi[2, 3]
    f00, f01, f02 = phi[0, 0], phi[0, 1], phi[0, 2]
    f10, f11, f12 = phi[1, 0], phi[1, 1], phi[1, 2]
    f20, f21, f22 = phi[2, 0], phi[2, 1], phi[2, 2]
    sg = sgg = sfg = 0.0
    sdg[:] = 0.0
    for i in range(off.shape[0]):
        a, b, d = off[i, 0], off[i, 1], off[i, 2]
        pz = tz + f00 * a + f01 * b + f02 * d
        py = ty + f10 * a + f11 * b + f12 * d
        px = tx + f20 * a + f21 * b + f22 * d
        v = _trilinear(coef, pz, py, px) if order == 1 else _cubic(coef, pz, py, px)
        if not np.isfinite(v):
            return False, 0.0, 0.0, 0.0
        sg += v
        sgg += v * v
        sfg += f0[i] * v
        for r in range(3):
            t = grad[i, r] * v
            sdg[3 * r] += t * a
            sdg[3 * r + 1] += t * b
            sdg[3 * r + 2] += t * d
            sdg[9 + r] += t
    return True, sg, sgg, sfg


@nb.njit(cache=True)
def _criterion(criterion, m, fm, sff, sg, sgg, sfg, sdg, cf, c1):
    """Gradient ``b = sum SD r`` (12), ``sum r^2`` and the ZNCC from the sums of a pass:
    ZNSSD ``r = f0 - s (g - mean g)``, ``s = |f0| / |g - mean g|``; SSD ``r = f - g``."""
    gm = sg / m
    sgt = max(sgg - m * gm * gm, 0.0)  # sum (g - mean g)^2
    zncc = sfg / np.sqrt(sff * sgt) if sff > 0 and sgt > 0 else 0.0
    if criterion == ZNSSD:
        s = np.sqrt(sff / sgt) if sgt > 0 else 0.0
        b = cf - s * (sdg - gm * c1)
        ss = sff - 2.0 * s * sfg + s * s * sgt
    else:
        b = cf + fm * c1 - sdg
        ss = sff + m * fm * fm - 2.0 * (sfg + fm * sg) + sgg
    return b, max(ss, 0.0), zncc


@nb.njit(cache=True)
def _increment(Hinv, b, params):
    """Parameter increment dp (12, zeros where not solved for) and its norm (as spam's
    ``deltaPhiNorm``: F - I and t unscaled)."""
    npar = len(params)
    dp = np.zeros(12)
    for p in range(npar):
        v = 0.0
        for q in range(npar):
            v -= Hinv[p, q] * b[params[q]]
        dp[params[p]] = v
    return dp, np.sqrt((dp * dp).sum())


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
def _inverse(H, params):
    """Inverse of the Gauss-Newton matrix of the solved parameters; ok False if singular."""
    npar = len(params)
    Hs = np.empty((npar, npar))
    for p in range(npar):
        for q in range(npar):
            Hs[p, q] = H[params[p], params[q]]
    ev = np.linalg.eigvalsh(Hs)
    ok = ev[0] > 1e-10 * ev[-1]
    return (np.linalg.inv(Hs) if ok else Hs), ok


@nb.njit(cache=True)
def _coarse(f, grad, off):
    """The voxels at even offsets (one in 8): the set the first iterations of a large
    window run on."""
    keep = np.flatnonzero((off[:, 0] % 2 == 0) & (off[:, 1] % 2 == 0) & (off[:, 2] % 2 == 0))
    return f[keep], grad[keep], off[keep]


@nb.njit(cache=True)
def _iterate(coef, order, criterion, c, off, grad, f, Hinv, params, phi, tol, max_it):
    """Gauss-Newton iterations on one voxel set from ``phi`` until the increment norm is
    below ``tol``; returns (phi, status, iterations, norm, sum r^2, ZNCC)."""
    m = len(f)
    fm = f.mean()
    f0 = f - fm
    sff = (f0 ** 2).sum()
    _, cf, c1 = _moments(grad, off, f0, False)
    sdg = np.empty(12)
    status, it, norm, ss, zncc = ITERATION_LIMIT, 0, np.inf, np.inf, np.nan
    while it < max_it:
        inside, sg, sgg, sfg = _sums(coef, order, phi, c, off, grad, f0, sdg)
        if not inside:
            return phi, DIVERGED, it, norm, ss, zncc
        # the statistics of the last pass stand for the final Phi: the last increment
        # moved it by less than tol
        b, ss, zncc = _criterion(criterion, m, fm, sff, sg, sgg, sfg, sdg, cf, c1)
        dp, norm = _increment(Hinv, b, params)
        phi = _compose(phi, dp)
        it += 1
        det = np.linalg.det(phi[:3, :3])
        if not (0.2 < det < 3.0):
            return phi, VOLUME_CHANGE, it, norm, ss, zncc
        if norm < tol:
            return phi, CONVERGED, it, norm, ss, zncc
    return phi, status, it, norm, ss, zncc


#: Windows with at least this many used voxels (hws >= 12) first iterate (up to a quarter
#: of the iterations) on one voxel in 8 and take
#: their Gauss-Newton matrix from those, scaled, for up to 3 iterations on every voxel; a
#: window not converged by then gets its exact matrix. The fixed point is the full
#: window's either way: the last iterations sum over every voxel.
COARSE_FROM = 15000


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
    sff = ((f - f.mean()) ** 2).sum()
    if sff <= 0.0 or _inner_std(f, off, h) < min_std:
        return NO_TEXTURE, 0
    phi, it, exact = phi0.copy(), 0, m < COARSE_FROM
    if not exact:  # a large window: start on one voxel in 8
        fc, gc, oc = _coarse(f, grad, off)
        H, _, _ = _moments(gc, oc, fc - fc.mean(), True)
        Hinv, ok = _inverse(H, params)
        if not ok:
            return SINGULAR, 0
        p1, s1, it, _, _, _ = _iterate(coef, order, criterion, c, oc, gc, fc, Hinv, params,
                                       phi, 10 * delta_min, max(max_it // 4, 1))
        if s1 == CONVERGED:  # else the full window starts again from phi0
            phi = p1
        Hinv *= len(fc) / m  # the coarse matrix stands for the full one...
        phi, status, it2, norm, ss, zncc = _iterate(coef, order, criterion, c, off, grad, f,
                                                    Hinv, params, phi, delta_min, 3)
        it += it2
        exact = status == ITERATION_LIMIT and it < max_it  # ...unless it converges slowly
    if exact:
        H, _, _ = _moments(grad, off, f - f.mean(), True)
        Hinv, ok = _inverse(H, params)
        if not ok:
            return SINGULAR, 0
        phi, status, it2, norm, ss, zncc = _iterate(coef, order, criterion, c, off, grad, f,
                                                    Hinv, params, phi, delta_min,
                                                    max(max_it - it, 1))
        it += it2
    out_phi[:, :] = phi
    if status >= ITERATION_LIMIT:
        _statistics(ss, zncc, m, sff, Hinv, params, out_f)
    out_f[1] = norm
    return status, it


@nb.njit(cache=True)
def _inner_std(f, off, h):
    """Grey-value std of the window inside its 1-voxel margin (as spam's texture test): a
    window whose texture lies only in its outer layer has none."""
    s = s2 = 0.0
    n = 0
    for i in range(len(f)):
        if abs(off[i, 0]) < h[0] and abs(off[i, 1]) < h[1] and abs(off[i, 2]) < h[2]:
            s += f[i]
            s2 += f[i] * f[i]
            n += 1
    if n < 2:
        return 0.0
    return np.sqrt(max(s2 / n - (s / n) ** 2, 0.0))


@nb.njit(cache=True)
def _statistics(ss, zncc, m, sff, Hinv, params, out_f):
    """Error, normalised residual, ZNCC and the displacement std (sigma^2 H^-1) of a
    registered window into ``out_f``."""
    npar = len(params)
    sigma2 = ss / max(m - npar, 1)
    out_f[0] = ss / m
    out_f[2] = ss / sff
    out_f[3] = zncc
    for k in range(3):
        for p in range(npar):
            if params[p] == 9 + k:
                out_f[4 + k] = np.sqrt(sigma2 * Hinv[p, p])


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
        convergence threshold (norm of the increment of F - I and t, as spam), minimum
        grey-value std, minimum coverage (of the window's voxels used), slack (voxels:
        reference voxels that ``phi0`` maps closer than this to the region's faces are
        left out).

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
