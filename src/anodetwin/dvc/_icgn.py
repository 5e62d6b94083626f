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

Second-order shape function (optional): the map adds ``1/2 x^T H_r x`` to component r,
H_r the displacement's second derivatives (18 more parameters; Lu & Cary 2000, Exp. Mech.
40:393, for 2D DIC); solved from the affine match; the inverse composition is exact for the
affine part and to first order in the increment for the curvature (the fixed point is
unchanged).

Robust re-weighting (optional): after the plain match, iteratively re-weighted least
squares with Tukey's biweight (Holland & Welsch 1977) of the residual averaged over
3 x 3 x 3 voxels: a grey-value change between the scans is spatially coherent (lithiated
Si), noise is not, so the changed voxels lose their weight and the rest keep theirs.

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
    return _lerp(im, z0, y0, x0, z - z0, y - y0, x - x0)


@nb.njit(cache=True, inline="always")
def _lerp(im, z0, y0, x0, fz, fy, fx):
    """Trilinear interpolation in the cell with lower corner (z0, y0, x0) at fractions
    (fz, fy, fx) (no bounds check)."""
    p, q = im[z0, y0], im[z0, y0 + 1]
    r, s = im[z0 + 1, y0], im[z0 + 1, y0 + 1]
    p0, q0, r0, s0 = float(p[x0]), float(q[x0]), float(r[x0]), float(s[x0])
    c00 = p0 + (p[x0 + 1] - p0) * fx
    c01 = q0 + (q[x0 + 1] - q0) * fx
    c10 = r0 + (r[x0 + 1] - r0) * fx
    c11 = s0 + (s[x0 + 1] - s0) * fx
    c0 = c00 + (c01 - c00) * fy
    c1 = c10 + (c11 - c10) * fy
    return c0 + (c1 - c0) * fz


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
    volume's faces loses the voxels that move out of it). Stored as float32, which holds
    them exactly (float32 values, half their float32 differences, integer offsets): half
    the memory traffic of the passes over the window."""
    nz, ny, nx = ref.shape
    n = (2 * h[0] + 1) * (2 * h[1] + 1) * (2 * h[2] + 1)
    f = np.empty(n, np.float32)
    grad = np.empty((n, 3), np.float32)
    off = np.empty((n, 3), np.float32)
    m = 0
    ez, ey, ex = phi0[0, 2], phi0[1, 2], phi0[2, 2]
    for a in range(-h[0], h[0] + 1):
        z = c[0] + a
        if not 0 <= z < nz:  # a window at the volume's faces: the voxels inside it
            continue
        for b in range(-h[1], h[1] + 1):  # a row: its positions advance by phi0's column x
            y = c[1] + b
            if not 0 <= y < ny:
                continue
            bz = c[0] + phi0[0, 3] + phi0[0, 0] * a + phi0[0, 1] * b
            by = c[1] + phi0[1, 3] + phi0[1, 0] * a + phi0[1, 1] * b
            bx = c[2] + phi0[2, 3] + phi0[2, 0] * a + phi0[2, 1] * b
            inner = 0 < z < nz - 1 and 0 < y < ny - 1
            for d in range(-h[2], h[2] + 1):
                x = c[2] + d
                if not 0 <= x < nx or (use_mask and mask[z, y, x] == 0):
                    continue
                pz, py, px = bz + ez * d, by + ey * d, bx + ex * d
                if not (slack <= pz <= nz - 1 - slack and slack <= py <= ny - 1 - slack
                        and slack <= px <= nx - 1 - slack):
                    continue
                f[m] = ref[z, y, x]
                if inner and 0 < x < nx - 1:
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


#: Index of the product g_r g_s (r <= s) among (00, 01, 02, 11, 12, 22).
_GG = np.array([[0, 1, 2], [1, 3, 4], [2, 4, 5]], np.int64)


@nb.njit(cache=True)
def _moments(grad, off, f0, w, npa, with_h):
    """Full ``npa`` x ``npa`` Gauss-Newton matrix ``sum w SD SD^T`` (if ``with_h``) and the
    sums ``sum w SD f0`` and ``sum w SD`` (``npa``: 12 affine, row by row in
    :func:`_affine_moments`, 30 quadratic); ``w`` the voxels' weights (ones, or the robust
    weights).

    The steepest-descent image of parameter (r, k) is ``g_r o_k``, o = (a, b, d, 1) of the
    offset (and the six quadratic monomials), so ``H[(r, k), (s, l)] = sum w g_r g_s
    o_k o_l``: six gradient products times the distinct products of o are summed, never
    the SD images themselves."""
    if npa == 12:
        return _affine_moments(grad, off, f0, w, with_h)
    no = 10
    A = np.zeros((no * (no + 1) // 2, 6))
    B = np.zeros((3, no))
    C = np.zeros((3, no))
    o = np.empty(no)
    gg = np.empty(6)
    for i in range(grad.shape[0]):
        wi = w[i]
        if wi == 0.0:
            continue
        o[0], o[1], o[2], o[3] = off[i, 0], off[i, 1], off[i, 2], 1.0
        _monomials(off[i, 0], off[i, 1], off[i, 2], o[4:])
        g0, g1, g2, fi = grad[i, 0], grad[i, 1], grad[i, 2], f0[i]
        for k in range(no):
            t = wi * o[k]
            C[0, k] += t * g0
            C[1, k] += t * g1
            C[2, k] += t * g2
            B[0, k] += t * g0 * fi
            B[1, k] += t * g1 * fi
            B[2, k] += t * g2 * fi
        if with_h:
            gg[0], gg[1], gg[2] = wi * g0 * g0, wi * g0 * g1, wi * g0 * g2
            gg[3], gg[4], gg[5] = wi * g1 * g1, wi * g1 * g2, wi * g2 * g2
            j = 0
            for k in range(no):
                for m in range(k, no):
                    okm = o[k] * o[m]
                    for q in range(6):
                        A[j, q] += gg[q] * okm
                    j += 1
    return _assemble(A, B, C, npa, no, with_h)


@nb.njit(cache=True)
def _affine_moments(grad, off, f0, w, with_h):
    """:func:`_moments` of the affine shape function, row by row (offsets in raster
    order, d running): per row the sums of the six gradient products ``w g_r g_s`` times
    (1, d, d^2) and of ``w g_r`` and ``w g_r f0`` times (1, d), spread over the products
    of o = (a, b, d, 1) when the row ends (:func:`_affine_row`)."""
    A, B, C = np.zeros((10, 6)), np.zeros((3, 4)), np.zeros((3, 4))
    R, P = np.zeros((6, 3)), np.zeros((3, 4))
    ra, rb = np.nan, np.nan
    for i in range(grad.shape[0]):
        a, b, d = off[i, 0], off[i, 1], off[i, 2]
        if a != ra or b != rb:  # a new row
            if ra == ra:
                _affine_row(A, B, C, R, P, ra, rb)
            ra, rb = a, b
        wi = w[i]
        if wi == 0.0:
            continue
        fi = f0[i]
        w0, w1, w2 = wi * grad[i, 0], wi * grad[i, 1], wi * grad[i, 2]
        for r, x in enumerate((w0, w1, w2)):
            P[r, 0] += x
            P[r, 1] += x * d
            P[r, 2] += x * fi
            P[r, 3] += x * fi * d
        if with_h:
            for q, x in enumerate((w0 * grad[i, 0], w0 * grad[i, 1], w0 * grad[i, 2],
                                   w1 * grad[i, 1], w1 * grad[i, 2], w2 * grad[i, 2])):
                R[q, 0] += x
                R[q, 1] += x * d
                R[q, 2] += x * d * d
    if ra == ra:
        _affine_row(A, B, C, R, P, ra, rb)
    return _assemble(A, B, C, 12, 4, with_h)


@nb.njit(cache=True, inline="always")
def _affine_row(A, B, C, R, P, a, b):
    """Add the row sums of :func:`_affine_moments` (R: ``x (1, d, d^2)`` of the six
    gradient products; P: ``w g_r (1, d)`` and ``w g_r f0 (1, d)``) of the row at (a, b)
    to its sums over the products of o = (a, b, d, 1) (A: (aa, ab, ad, a, bb, bd, b, dd,
    d, 1), the order of :func:`_assemble`; B, C: (a, b, d, 1)), and clear them."""
    for q in range(6):
        s, sd, sdd = R[q, 0], R[q, 1], R[q, 2]
        A[0, q] += a * a * s
        A[1, q] += a * b * s
        A[2, q] += a * sd
        A[3, q] += a * s
        A[4, q] += b * b * s
        A[5, q] += b * sd
        A[6, q] += b * s
        A[7, q] += sdd
        A[8, q] += sd
        A[9, q] += s
    for r in range(3):
        for X, k in ((C, 0), (B, 2)):
            X[r, 0] += a * P[r, k]
            X[r, 1] += b * P[r, k]
            X[r, 2] += P[r, k + 1]
            X[r, 3] += P[r, k]
    R[:] = 0.0
    P[:] = 0.0


@nb.njit(cache=True)
def _assemble(A, B, C, npa, no, with_h):
    """H, sum w SD f0, sum w SD of :func:`_moments` from its sums over the offsets'
    products: parameter (r, k) is 3 r + k (k < 3, F), 9 + r (k = 3, t) or 12 + 6 r + k - 4
    (the curvatures)."""
    pidx = np.empty((3, no), np.int64)
    for r in range(3):
        for k in range(no):
            pidx[r, k] = 3 * r + k if k < 3 else (9 + r if k == 3 else 8 + 6 * r + k)
    H = np.zeros((npa, npa))
    cf = np.zeros(npa)
    c1 = np.zeros(npa)
    for r in range(3):
        for k in range(no):
            cf[pidx[r, k]] = B[r, k]
            c1[pidx[r, k]] = C[r, k]
    if with_h:
        j = 0
        for k in range(no):
            for m in range(k, no):
                for r in range(3):
                    for q in range(3):
                        H[pidx[r, k], pidx[q, m]] = H[pidx[q, m], pidx[r, k]] = A[j, _GG[r, q]]
                j += 1
    return H, cf, c1


@nb.njit(cache=True, inline="always")
def _monomials(a, b, d, out):
    """The quadratic shape function's monomials of an offset: a^2/2, b^2/2, d^2/2, ab, ad,
    bd (parameters 12 + 6 r + j: the Hessian entries (00, 11, 22, 01, 02, 12) of
    component r of the displacement)."""
    out[0], out[1], out[2] = 0.5 * a * a, 0.5 * b * b, 0.5 * d * d
    out[3], out[4], out[5] = a * b, a * d, b * d


@nb.njit(cache=True, inline="always")
def _curvature(hq, a, b, d, r):
    """Quadratic part 1/2 x^T hq[r] x of displacement component r at offset (a, b, d)."""
    h = hq[r]
    return (0.5 * (h[0, 0] * a * a + h[1, 1] * b * b + h[2, 2] * d * d)
            + h[0, 1] * a * b + h[0, 2] * a * d + h[1, 2] * b * d)


@nb.njit(cache=True, inline="always")
def _position(c, phi, hq, quad, a, b, d):
    """Position in the deformed volume of the reference voxel at offset (a, b, d) from the
    node ``c``: ``c + t + F x`` (+ the curvatures ``hq`` if ``quad``)."""
    pz = c[0] + phi[0, 3] + phi[0, 0] * a + phi[0, 1] * b + phi[0, 2] * d
    py = c[1] + phi[1, 3] + phi[1, 0] * a + phi[1, 1] * b + phi[1, 2] * d
    px = c[2] + phi[2, 3] + phi[2, 0] * a + phi[2, 1] * b + phi[2, 2] * d
    if quad:
        pz += _curvature(hq, a, b, d, 0)
        py += _curvature(hq, a, b, d, 1)
        px += _curvature(hq, a, b, d, 2)
    return pz, py, px


@nb.njit(cache=True)
def _box_inside(shape, phi, c, ext):
    """Whether the affine map sends the whole box of offsets ``[-ext, ext]`` strictly
    inside the cells of a trilinear interpolant of ``shape`` (its 8 corners suffice: the
    image of a box is the convex hull of the corners' images)."""
    hq = np.zeros((3, 3, 3))
    for corner in range(8):
        a = ext[0] if corner & 1 else -ext[0]
        b = ext[1] if corner & 2 else -ext[1]
        d = ext[2] if corner & 4 else -ext[2]
        p = _position(c, phi, hq, False, a, b, d)
        for r in range(3):
            if not (0.0 <= p[r] < shape[r] - 1.0):
                return False
    return True


@nb.njit(cache=True)
def _sums(coef, order, phi, hq, c, off, ext, grad, f0, w, sdg):
    """One pass over the window at ``phi``: the deformed values g are interpolated and
    summed with the weights ``w`` as ``sum w g``, ``sum w g^2``, ``sum w f0 g`` (returned)
    and ``sum w SD g`` (into ``sdg``, 12 or 30 with the quadratic terms ``hq``); ok is
    False when a position lies outside ``coef``. ``ext``: the offsets' extent; an affine
    trilinear pass whose box maps inside ``coef`` runs without per-voxel bounds checks
    (:func:`_sums_inside`)."""
    quad = len(sdg) > 12
    if order == 1 and not quad and _box_inside(coef.shape, phi, c, ext):
        return _sums_inside(coef, phi, c, off, grad, f0, w, sdg)
    mono = np.empty(6)
    sg = sgg = sfg = 0.0
    sdg[:] = 0.0
    for i in range(off.shape[0]):
        if w[i] == 0.0:
            continue
        a, b, d = off[i, 0], off[i, 1], off[i, 2]
        z, y, x = _position(c, phi, hq, quad, a, b, d)
        v = _trilinear(coef, z, y, x) if order == 1 else _cubic(coef, z, y, x)
        if v != v:
            return False, 0.0, 0.0, 0.0
        wv = w[i] * v
        sg += wv
        sgg += wv * v
        sfg += f0[i] * wv
        for r in range(3):
            t = grad[i, r] * wv
            sdg[3 * r] += t * a
            sdg[3 * r + 1] += t * b
            sdg[3 * r + 2] += t * d
            sdg[9 + r] += t
        if quad:
            _monomials(a, b, d, mono)
            for r in range(3):
                t = grad[i, r] * wv
                for j in range(6):
                    sdg[12 + 6 * r + j] += t * mono[j]
    return True, sg, sgg, sfg


@nb.njit(cache=True, inline="always")
def _row_flush(s, a, b, u0, u1, u2, v0, v1, v2):
    """Add a row's sums (offsets (a, b, d), d running) of ``x_r`` (``u_r``) and ``x_r d``
    (``v_r``) to the 12 affine sums ``s[(r, k)] = sum x_r o_k``, o = (a, b, d, 1):
    parameter 3 r + k (k < 3) or 9 + r (k = 3)."""
    s[0] += a * u0
    s[1] += b * u0
    s[2] += v0
    s[9] += u0
    s[3] += a * u1
    s[4] += b * u1
    s[5] += v1
    s[10] += u1
    s[6] += a * u2
    s[7] += b * u2
    s[8] += v2
    s[11] += u2


@nb.njit(cache=True)
def _sums_inside(coef, phi, c, off, grad, f0, w, sdg):
    """:func:`_sums` of an affine trilinear pass known to stay inside ``coef``: the hot
    loop of the engine, without bounds checks, row by row (offsets in raster order, d
    running): the positions advance by the map's third column along a row and the SD
    sums are gathered per row (:func:`_row_flush`)."""
    sg = sgg = sfg = 0.0
    sdg[:] = 0.0
    u0 = u1 = u2 = v0 = v1 = v2 = 0.0
    ra, rb = np.nan, np.nan
    bz = by = bx = 0.0
    ez, ey, ex = phi[0, 2], phi[1, 2], phi[2, 2]
    for i in range(off.shape[0]):
        a, b, d = off[i, 0], off[i, 1], off[i, 2]
        if a != ra or b != rb:  # a new row
            if ra == ra:
                _row_flush(sdg, ra, rb, u0, u1, u2, v0, v1, v2)
            u0 = u1 = u2 = v0 = v1 = v2 = 0.0
            ra, rb = a, b
            bz = c[0] + phi[0, 3] + phi[0, 0] * a + phi[0, 1] * b
            by = c[1] + phi[1, 3] + phi[1, 0] * a + phi[1, 1] * b
            bx = c[2] + phi[2, 3] + phi[2, 0] * a + phi[2, 1] * b
        wi = w[i]
        if wi == 0.0:
            continue
        z, y, x = bz + ez * d, by + ey * d, bx + ex * d
        z0, y0, x0 = int(z), int(y), int(x)
        v = _lerp(coef, z0, y0, x0, z - z0, y - y0, x - x0)
        wv = wi * v
        sg += wv
        sgg += wv * v
        sfg += f0[i] * wv
        t0, t1, t2 = grad[i, 0] * wv, grad[i, 1] * wv, grad[i, 2] * wv
        u0, u1, u2 = u0 + t0, u1 + t1, u2 + t2
        v0, v1, v2 = v0 + t0 * d, v1 + t1 * d, v2 + t2 * d
    if ra == ra:
        _row_flush(sdg, ra, rb, u0, u1, u2, v0, v1, v2)
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
    """Parameter increment dp (``len(b)``, zeros where not solved for) and its norm (as
    spam's ``deltaPhiNorm``: F - I, t and the curvatures unscaled)."""
    npar = len(params)
    dp = np.zeros(len(b))
    for p in range(npar):
        v = 0.0
        for q in range(npar):
            v -= Hinv[p, q] * b[params[q]]
        dp[params[p]] = v
    return dp, np.sqrt((dp * dp).sum())


@nb.njit(cache=True)
def _compose(phi, hq, dp):
    """The warp composed with the inverse increment, ``W(x) <- W(W_dp^-1(x))``: exact for
    the affine part (Phi inv(W(dp))); with quadratic terms (``len(dp) == 30``) to first
    order in the increment's curvature, cubic terms dropped (they vanish with the
    increment, so the fixed point is the exact one). Returns (phi, hq)."""
    w = np.eye(4)
    for r in range(3):
        for k in range(3):
            w[r, k] += dp[3 * r + k]
        w[r, 3] = dp[9 + r]
    winv = np.linalg.inv(w)
    new = phi @ winv
    if len(dp) == 12:
        return new, hq
    # W(x) = F x + t + q(x), W_dp^-1(x) ~ y - dq(y), y = P x + s: W(W_dp^-1(x)) =
    # F y + t + (q - F dq)(y) + O(dp^2, cubic)
    P, s = np.ascontiguousarray(winv[:3, :3]), winv[:3, 3].copy()
    dh = np.zeros((3, 3, 3))
    for r in range(3):
        for j, (u, v) in enumerate(((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))):
            dh[r, u, v] = dh[r, v, u] = dp[12 + 6 * r + j]
    out = np.empty((3, 3, 3))
    Pt = np.ascontiguousarray(P.T)
    for r in range(3):
        g = hq[r].copy()
        for k in range(3):
            g -= phi[r, k] * dh[k]
        out[r] = Pt @ g @ P
        new[r, :3] += s @ g @ P
        new[r, 3] += 0.5 * (s @ g @ s)
    return new, out


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
    keep = np.empty(len(f), np.int64)
    n = 0
    for i in range(len(f)):
        if (int(off[i, 0]) | int(off[i, 1]) | int(off[i, 2])) & 1 == 0:
            keep[n] = i
            n += 1
    fc, gc, oc = np.empty(n, f.dtype), np.empty((n, 3), f.dtype), np.empty((n, 3), f.dtype)
    for j in range(n):
        fc[j] = f[keep[j]]
        for k in range(3):
            gc[j, k] = grad[keep[j], k]
            oc[j, k] = off[keep[j], k]
    return fc, gc, oc


@nb.njit(cache=True)
def _centred(f, w):
    """Weighted sum of the weights, mean, centred values and sum of squares of ``f``."""
    m = s = 0.0
    for i in range(len(f)):
        m += w[i]
        s += w[i] * f[i]
    fm = s / m
    f0 = np.empty(len(f))
    ss = 0.0
    for i in range(len(f)):
        f0[i] = f[i] - fm
        ss += w[i] * f0[i] * f0[i]
    return m, fm, f0, ss


@nb.njit(cache=True)
def _prepare(f, grad, off, w, npa, with_h):
    """A voxel set's fixed terms for :func:`_iterate` with the weights ``w``: (the
    sum of w, weighted mean, sum w f0^2, centred values f0, the offsets' extent, sum w SD f0,
    sum w SD), and the Gauss-Newton matrix if ``with_h`` (else zeros)."""
    m, fm, f0, sff = _centred(f, w)
    H, cf, c1 = _moments(grad, off, f0, w, npa, with_h)
    ext = np.zeros(3)
    for i in range(off.shape[0]):
        for k in range(3):
            ext[k] = max(ext[k], abs(off[i, k]))
    return (m, fm, sff, f0, ext, cf, c1), H


@nb.njit(cache=True)
def _iterate(coef, order, criterion, c, off, grad, w, vset, Hinv, params, phi, hq, tol,
             max_it):
    """Gauss-Newton iterations on one voxel set (weights ``w``, fixed terms ``vset`` of
    :func:`_prepare`) from the warp (``phi``, ``hq``) until the increment norm is below
    ``tol``; returns (phi, hq, status, iterations, norm, sum w r^2, ZNCC)."""
    m, fm, sff, f0, ext, cf, c1 = vset
    sdg = np.empty(len(cf))
    status, it, norm, ss, zncc = ITERATION_LIMIT, 0, np.inf, np.inf, np.nan
    while it < max_it:
        inside, sg, sgg, sfg = _sums(coef, order, phi, hq, c, off, ext, grad, f0, w, sdg)
        if not inside:
            return phi, hq, DIVERGED, it, norm, ss, zncc
        # the statistics of the last pass stand for the final Phi: the last increment
        # moved it by less than tol
        b, ss, zncc = _criterion(criterion, m, fm, sff, sg, sgg, sfg, sdg, cf, c1)
        dp, norm = _increment(Hinv, b, params)
        phi, hq = _compose(phi, hq, dp)
        it += 1
        det = np.linalg.det(phi[:3, :3])
        if not (0.2 < det < 3.0):
            return phi, hq, VOLUME_CHANGE, it, norm, ss, zncc
        if norm < tol:
            return phi, hq, CONVERGED, it, norm, ss, zncc
    return phi, hq, status, it, norm, ss, zncc


#: Windows with at least this many used voxels (hws >= 12) first iterate (up to a quarter
#: of the iterations) on one voxel in 8 and take
#: their Gauss-Newton matrix from those, scaled, for up to 3 iterations on every voxel; a
#: window not converged by then gets its exact matrix. The fixed point is the full
#: window's either way: the last iterations sum over every voxel.
COARSE_FROM = 15000


@nb.njit(cache=True)
def _gauss_newton(coef, order, criterion, c, off, grad, f, params, phi, delta_min, max_it):
    """Affine IC-GN of one window's voxels from ``phi`` (every voxel weighing 1); returns
    (phi, status, iterations, norm, sum r^2, ZNCC, H^-1)."""
    m = len(f)
    ones = np.ones(m)
    hq = np.zeros((3, 3, 3))
    it, exact = 0, m < COARSE_FROM
    status, norm, ss, zncc = SINGULAR, np.inf, np.inf, np.nan
    Hinv = np.zeros((len(params), len(params)))
    if not exact:  # a large window: start on one voxel in 8
        fc, gc, oc = _coarse(f, grad, off)
        w8 = np.ones(len(fc))
        cset, H = _prepare(fc, gc, oc, w8, 12, True)
        Hinv, ok = _inverse(H, params)
        if not ok:
            return phi, SINGULAR, 0, norm, ss, zncc, Hinv
        p1, _, s1, it, _, _, _ = _iterate(coef, order, criterion, c, oc, gc, w8, cset, Hinv,
                                          params, phi, hq, 10 * delta_min, max(max_it // 4, 1))
        if s1 == CONVERGED:  # else the full window starts again from phi0
            phi = p1
        Hinv *= len(fc) / m  # the coarse matrix stands for the full one...
        vset, _ = _prepare(f, grad, off, ones, 12, False)
        phi, _, status, it2, norm, ss, zncc = _iterate(
            coef, order, criterion, c, off, grad, ones, vset, Hinv, params, phi, hq, delta_min, 3)
        it += it2
        exact = status == ITERATION_LIMIT and it < max_it  # ...unless it converges slowly
    if exact:
        vset, H = _prepare(f, grad, off, ones, 12, True)
        Hinv, ok = _inverse(H, params)
        if not ok:
            return phi, SINGULAR, it, norm, ss, zncc, Hinv
        phi, _, status, it2, norm, ss, zncc = _iterate(
            coef, order, criterion, c, off, grad, ones, vset, Hinv, params, phi, hq, delta_min,
            max(max_it - it, 1))
        it += it2
    return phi, status, it, norm, ss, zncc, Hinv


#: Re-weighting rounds of the robust criterion at most.
ROBUST_ROUNDS = 5
#: Tukey constant of the robust criterion, in robust standard deviations of the residual
#: averaged over 3 x 3 x 3 voxels.
TUKEY = 3.0


@nb.njit(cache=True)
def _values(coef, order, phi, hq, c, off):
    """Deformed values at the window's warped positions (NaN outside ``coef``)."""
    g = np.empty(off.shape[0])
    quad = np.any(hq != 0.0)
    for i in range(off.shape[0]):
        z, y, x = _position(c, phi, hq, quad, off[i, 0], off[i, 1], off[i, 2])
        g[i] = _trilinear(coef, z, y, x) if order == 1 else _cubic(coef, z, y, x)
    return g


@nb.njit(cache=True)
def _tukey(f, g, w, off, criterion, k):
    """Tukey biweights of the window's residuals ``r`` at the current match: ZNSSD
    ``r = f0 - s g0`` with the means and ``s = |f0| / |g0|`` weighted by ``w`` (the last
    weights), SSD ``r = f - g``; ``w' = (1 - (r / (k sigma))^2)^2`` where ``|r| < k
    sigma``, else 0, sigma = 1.4826 median |r| (Holland & Welsch 1977, Commun. Stat.
    A6:813)."""
    m, fm, f0, sff = _centred(f, w)
    g0 = g - (w * g).sum() / m
    if criterion == ZNSSD:
        sgt = (w * g0 * g0).sum()
        r = f0 - (np.sqrt(sff / sgt) if sgt > 0 else 0.0) * g0
    else:
        r = f - g
    r = _box_mean(r, off, 1)
    lim = k * 1.4826 * np.median(np.abs(r))
    out = np.ones(len(f))
    if lim <= 0.0:
        return out
    for i in range(len(f)):
        u = r[i] / lim
        out[i] = (1.0 - u * u) ** 2 if abs(u) < 1.0 else 0.0
    return out


@nb.njit(cache=True)
def _box_mean(r, off, rad):
    """Mean of ``r`` over each voxel's 3 x 3 x 3 neighbours in the window (those used)."""
    lo = np.empty(3, np.int64)
    n = np.empty(3, np.int64)
    for k in range(3):
        lo[k] = int(off[:, k].min())
        n[k] = int(off[:, k].max()) - lo[k] + 1
    grid = np.full((n[0] + 2 * rad, n[1] + 2 * rad, n[2] + 2 * rad), np.nan)
    idx = np.empty((len(r), 3), np.int64)
    for i in range(len(r)):
        for k in range(3):
            idx[i, k] = int(off[i, k]) - lo[k] + rad
        grid[idx[i, 0], idx[i, 1], idx[i, 2]] = r[i]
    out = np.empty(len(r))
    for i in range(len(r)):
        s = 0.0
        c = 0
        for a in range(-rad, rad + 1):
            for b in range(-rad, rad + 1):
                for d in range(-rad, rad + 1):
                    v = grid[idx[i, 0] + a, idx[i, 1] + b, idx[i, 2] + d]
                    if v == v:
                        s += v
                        c += 1
        out[i] = s / c
    return out


#: Tukey constant of the reference model's grey-value fit (the usual 95%-efficiency one,
#: on the raw residual) and its re-weighting passes: a phase whose grey value changed in
#: part of the window (lithiated and remnant Si) takes the majority's.
MODEL_TUKEY, MODEL_PASSES = 4.685, 3


@nb.njit(cache=True)
def _model_at(basis, c, off):
    """The reference model's channels (m, K) and their gradients (m, K, 3; central
    differences) at the window's voxels."""
    nch, m = basis.shape[0], off.shape[0]
    B = np.empty((m, nch), np.float32)
    dB = np.empty((m, nch, 3), np.float32)
    for i in range(m):
        z, y, x = c[0] + int(off[i, 0]), c[1] + int(off[i, 1]), c[2] + int(off[i, 2])
        for q in range(nch):
            B[i, q] = basis[q, z, y, x]
            for a in range(3):
                dB[i, q, a] = _gradient(basis[q], z, y, x, a)
    return B, dB


@nb.njit(cache=True)
def _model_coefficients(B, g, w):
    """Grey values of the model's channels: ``g ~ B c + c0`` by weighted least squares
    (weights ``w``), re-weighted :data:`MODEL_PASSES` times by Tukey's biweight of the
    residual; a channel absent from the window (or a multiple of the others) gets ~0 by a
    ridge of 1e-6 of the largest diagonal term. Returns c (K + 1, c0 last)."""
    m, nch = B.shape
    u = w.copy()
    coef = np.zeros(nch + 1)
    row = np.empty(nch + 1)
    r = np.empty(m)
    for it in range(MODEL_PASSES + 1):
        A = np.zeros((nch + 1, nch + 1))
        rhs = np.zeros(nch + 1)
        for i in range(m):
            if u[i] <= 0.0:
                continue
            row[:nch] = B[i]
            row[nch] = 1.0
            for p in range(nch + 1):
                rhs[p] += u[i] * row[p] * g[i]
                for q in range(p, nch + 1):
                    A[p, q] += u[i] * row[p] * row[q]
        top = 0.0
        for p in range(nch + 1):
            top = max(top, A[p, p])
            for q in range(p):
                A[p, q] = A[q, p]
        for p in range(nch + 1):
            A[p, p] += 1e-6 * top + 1e-30
        coef = np.linalg.solve(A, rhs)
        if it == MODEL_PASSES:
            break
        for i in range(m):
            r[i] = g[i] - coef[nch] - (B[i] * coef[:nch]).sum()
        lim = MODEL_TUKEY * 1.4826 * np.median(np.abs(r))
        if lim <= 0.0:
            break
        for i in range(m):
            v = r[i] / lim
            u[i] = w[i] * (1.0 - v * v) ** 2 if abs(v) < 1.0 else 0.0
    return coef


@nb.njit(cache=True)
def _model(B, dB, g, w, f, grad):
    """The window's model grey values and gradients (as ``f``, ``grad``) fitted to the
    deformed values ``g`` at the current match (:func:`_model_coefficients`)."""
    nch = B.shape[1]
    coef = _model_coefficients(B, g, w)
    fr = np.empty_like(f)
    gr = np.empty_like(grad)
    for i in range(len(f)):
        v = coef[nch]
        d0 = d1 = d2 = 0.0
        for q in range(nch):
            v += coef[q] * B[i, q]
            d0 += coef[q] * dB[i, q, 0]
            d1 += coef[q] * dB[i, q, 1]
            d2 += coef[q] * dB[i, q, 2]
        fr[i] = v
        gr[i, 0], gr[i, 1], gr[i, 2] = d0, d1, d2
    return fr, gr


@nb.njit(cache=True)
def _refine(coef, order, criterion, c, off, grad, f, params, phi, delta_min, max_it, k,
            B, dB):
    """IC-GN with every parameter of ``params`` (the quadratic terms too) from ``phi``,
    and, if ``k`` > 0, iteratively re-weighted: Tukey weights of the residuals at the
    current match (averaged over 3 x 3 x 3 voxels: a grey-value change is spatially
    coherent, noise is not), a weighted Gauss-Newton matrix and IC-GN with it, until the
    match moves by less than ``delta_min``; voxels whose grey value changed between the
    scans (e.g. lithiated Si) stop pulling the match. With a reference model (channels
    ``B``, gradients ``dB``; K > 0) the reference values and gradients of every round are
    the model's, fitted to the deformed values at the current match, and the criterion is
    SSD. Returns (phi, status, iterations, norm, sum w r^2, ZNCC, H^-1, w)."""
    w = np.ones(len(f))
    hq = np.zeros((3, 3, 3))
    npa = 30 if params[-1] >= 12 else 12
    model = B.shape[1] > 0
    status, it, norm, ss, zncc = DIVERGED, 0, np.inf, np.inf, np.nan
    Hinv = np.zeros((len(params), len(params)))
    for _ in range(ROBUST_ROUNDS if k > 0.0 or model else 1):
        if k > 0.0 or model:
            g = _values(coef, order, phi, hq, c, off)
            if not np.isfinite(g).all():
                return phi, DIVERGED, it, norm, ss, zncc, Hinv, w
            if model:
                f, grad = _model(B, dB, g, w, f, grad)
                criterion = SSD
        if k > 0.0:
            w = _tukey(f, g, w, off, criterion, k)
            if w.sum() < max(13.0, 0.25 * len(f)):
                return phi, NO_TEXTURE, it, norm, ss, zncc, Hinv, w
        vset, H = _prepare(f, grad, off, w, npa, True)
        Hinv, ok = _inverse(H, params)
        if not ok:
            return phi, SINGULAR, it, norm, ss, zncc, Hinv, w
        new, hq, status, it2, norm, ss, zncc = _iterate(
            coef, order, criterion, c, off, grad, w, vset, Hinv, params, phi, hq, delta_min,
            max_it)  # each round a full solve (from the last round's match)
        it += it2
        move = np.abs(new[:3, :] - phi[:3, :]).max()
        phi = new
        if status != CONVERGED or move < delta_min:
            break
    return phi, status, it, norm, ss, zncc, Hinv, w


@nb.njit(cache=True)
def _solve_node(ref, coef, mask, use_mask, c, phi0, h, params, cfg, basis, out_phi, out_f):
    """IC-GN of one window; returns (status, iterations). ``basis``: the reference model's
    channels (K, Z, Y, X; K = 0: none, the reference's grey values). ``cfg`` = (order, criterion,
    max_iterations, delta_min, min_std, coverage, slack, robust: Tukey constant, 0 none);
    ``params`` up to 11 the affine shape function, up to 29 the quadratic one (solved from
    the affine match); ``out_f`` = (error, delta, residual, zncc, sigma_z, sigma_y,
    sigma_x, weight: share of the window's voxels counted)."""
    order, criterion, max_it = int(cfg[0]), int(cfg[1]), int(cfg[2])
    delta_min, min_std, coverage, slack, k = cfg[3], cfg[4], cfg[5], cfg[6], cfg[7]
    f, grad, off, n_all = _reference(ref, mask, use_mask, c, h, phi0, slack)
    m = len(f)
    if m < max(13, coverage * n_all):
        return OUTSIDE, 0
    if np.all(f == f[0]) or (min_std > 0.0 and _inner_std(f, off, h) < min_std):
        return NO_TEXTURE, 0
    affine = params[params < 12]
    hinv = np.zeros((len(params), len(params)))
    phi, status, it, norm, ss, zncc, Hinv = phi0.copy(), ITERATION_LIMIT, 0, np.inf, np.inf, \
        np.nan, hinv
    if basis.shape[0] > 0:  # the reference model's windows: fitted from the start, SSD
        B, dB = _model_at(basis, c, off)
        criterion = SSD
    else:
        B, dB = np.zeros((m, 0), np.float32), np.zeros((m, 0, 3), np.float32)
        phi, status, it, norm, ss, zncc, Hinv = _gauss_newton(
            coef, order, criterion, c, off, grad, f, affine, phi, delta_min, max_it)
    w = np.ones(m)
    if (k > 0.0 or len(affine) < len(params) or B.shape[1] > 0) and status != SINGULAR:
        # from the affine match, else from the start
        phi, status, it2, norm, ss, zncc, Hinv, w = _refine(
            coef, order, criterion, c, off, grad, f, params,
            phi if status >= ITERATION_LIMIT else phi0.copy(), delta_min, max_it, k, B, dB)
        it += it2
    out_phi[:, :] = phi
    if status >= ITERATION_LIMIT:
        mw, _, _, sffw = _centred(f, w)
        _statistics(ss, zncc, mw, sffw, Hinv, params, out_f)
        out_f[7] = mw / m
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
def icgn_batch(ref, coef, mask, use_mask, centres, phi0, h, params, cfg, basis):
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
        (8,) float: interpolation order, criterion (0 ZNSSD, 1 SSD), max iterations,
        convergence threshold (norm of the increment of F - I and t, as spam), minimum
        grey-value std, minimum coverage (of the window's voxels used), slack (voxels:
        reference voxels that ``phi0`` maps closer than this to the region's faces are
        left out), robust criterion's Tukey constant (0: every voxel weighs 1).
    basis : numpy.ndarray
        (K, Z, Y, X) float32 channels of a reference model on the region (e.g. the
        reference's phases blurred by the scanner's point-spread function): each window's
        reference values and gradients are then ``sum c_k B_k + c0``, the c fitted to the
        deformed values at every re-weighting round, and the criterion is SSD; K = 0 (shape
        (0, 1, 1, 1)): the reference's own grey values.

    Returns
    -------
    phi : (B, 4, 4) mappings; status : (B,) int64; iterations : (B,) int64;
    floats : (B, 8) error (mean squared residual), last increment norm,
    normalised residual (sum r^2 / sum (f - mean f)^2), ZNCC, displacement std z, y, x
    (all weighted by the robust weights), share of the window's voxels counted (sum of
    the weights / voxels)
    (voxels; NaN where not converged).
    """
    nb_ = centres.shape[0]
    phi = np.empty((nb_, 4, 4))
    status = np.zeros(nb_, np.int64)
    iters = np.zeros(nb_, np.int64)
    floats = np.full((nb_, 8), np.nan)
    for k in nb.prange(nb_):
        phi[k] = phi0[k]
        s, it = _solve_node(ref, coef, mask, use_mask, centres[k], phi0[k], h, params, cfg,
                            basis, phi[k], floats[k])
        status[k] = s
        iters[k] = it
    return phi, status, iters, floats
