"""anodetwin's own local DVC engine: inverse-compositional Gauss-Newton on many windows at
once, in compiled code.

For every node, the window of half-size ``hws`` around it in the reference volume is
registered onto the deformed volume with the 12-parameter affine shape function (as spam),
by inverse-compositional Gauss-Newton (IC-GN; Baker & Matthews 2004, Int. J. Comput. Vis.
56:221; Pan, Li & Tong 2013, Exp. Mech. 53:1277): the reference window's gradients and
Gauss-Newton matrix are computed once, and each iteration only interpolates the deformed
volume (trilinear, or cubic B-spline on prefiltered coefficients) and solves a 12 x 12
system. The criterion is ZNSSD by default (zero-mean normalised sum of squared differences:
invariant to an affine change of grey values between the windows, e.g. a contrast change
between scans) or SSD. Options: a robust re-weighting of each window's voxels by their
residual (``robust``: voxels whose grey value changed between the scans, e.g. lithiated Si,
stop pulling the match) and second-order shape functions (``quadratic``, or
``quadratic-z`` through the thickness only: no bias where the strain changes within a
window). All windows of a batch run in one compiled kernel
(:func:`anodetwin.dvc._icgn.icgn_batch`, numba, parallel over the windows): no Python per
node or per iteration.

An optional integer-shift search (``search_range``) finds the start of each window by the
maximum of the zero-normalised cross-correlation over +- the range, computed by FFT for a
chunk of windows at a time.

Per node the engine returns Phi, a :class:`~anodetwin.dvc.correlate.ReturnStatus`, the
iterations, the ZNCC of the matched windows and a displacement uncertainty: the standard
deviation of the translation from the Gauss-Newton covariance ``sigma^2 H^-1``, sigma^2 the
residual variance (voxels; it leaves out interpolation bias, which for trilinear
interpolation is up to ~0.01-0.03 voxel).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from anodetwin.dvc._icgn import CONVERGED, DIVERGED, TUKEY, icgn_batch

__all__ = ["register_windows", "integer_search", "CRITERIA", "ROBUST", "SHAPE_PARAMETERS"]

#: Criteria of the native engine by name (kernel codes).
CRITERIA = {"znssd": 0, "ssd": 1}
#: Tukey constant of the robust criterion (in robust standard deviations of the residual
#: averaged over 3 x 3 x 3 voxels).
ROBUST = TUKEY
#: Parameters solved per shape function: 0..8 F - I row by row, 9..11 t, 12 + 6 r + j the
#: second derivatives of displacement component r (j: zz, yy, xx, zy, zx, yx);
#: "quadratic-z" keeps the zz ones: curvature through the thickness only.
SHAPE_PARAMETERS = {"affine": np.arange(12), "quadratic": np.arange(30),
                    "quadratic-z": np.r_[np.arange(12), 12, 18, 24]}
#: Statuses the kernel returns besides these (as ReturnStatus values).
OUTSIDE = -5

#: Windows searched together by :func:`integer_search` (FFT memory ~ 7 x chunk x size^3).
SEARCH_CHUNK = 8


def _window_starts(centres: np.ndarray, start: np.ndarray, hws: np.ndarray, sr: np.ndarray,
                   shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Corner of each search region (centre + start - hws - sr) and whether it fits."""
    lo = centres + start - hws - sr
    hi = centres + start + hws + sr + 1
    ok = np.all(lo >= 0, axis=1) & np.all(hi <= np.asarray(shape), axis=1)
    return lo, ok


def _ncc_maps(ref: np.ndarray, dfm: np.ndarray, mask: np.ndarray | None, centres: np.ndarray,
              lo: np.ndarray, hws: np.ndarray, sr: np.ndarray) -> np.ndarray:
    """ZNCC over every integer shift in [-sr, sr] (K, 2sr+1...) for K windows."""
    w = 2 * hws + 1
    s = w + 2 * sr
    f = np.stack([ref[c[0] - hws[0]: c[0] + hws[0] + 1, c[1] - hws[1]: c[1] + hws[1] + 1,
                      c[2] - hws[2]: c[2] + hws[2] + 1] for c in centres]).astype(np.float64)
    m = (np.ones_like(f) if mask is None else np.stack(
        [mask[c[0] - hws[0]: c[0] + hws[0] + 1, c[1] - hws[1]: c[1] + hws[1] + 1,
              c[2] - hws[2]: c[2] + hws[2] + 1] for c in centres]).astype(np.float64))
    g = np.stack([dfm[a: a + s[0], b: b + s[1], d: d + s[2]] for a, b, d in lo])
    g = g.astype(np.float64)
    n = m.sum(axis=(1, 2, 3))
    fm = (f * m).sum(axis=(1, 2, 3)) / np.maximum(n, 1)
    f0 = (f - fm[:, None, None, None]) * m
    axes, shp = (1, 2, 3), tuple(int(v) for v in s)

    def corr(a: np.ndarray, b_hat: np.ndarray) -> np.ndarray:  # sum_x a(x) g(x + d)
        out = sfft.irfftn(np.conj(sfft.rfftn(a, shp, axes=axes)) * b_hat, shp, axes=axes)
        return out[:, : 2 * sr[0] + 1, : 2 * sr[1] + 1, : 2 * sr[2] + 1]

    g_hat, g2_hat = sfft.rfftn(g, axes=axes), sfft.rfftn(g * g, axes=axes)
    num = corr(f0, g_hat)
    sg = corr(m, g_hat)
    sg2 = corr(m, g2_hat)
    n4 = n[:, None, None, None]
    var_g = np.maximum(sg2 - sg * sg / np.maximum(n4, 1), 0.0)
    norm_f = np.sqrt((f0 * f0).sum(axis=(1, 2, 3)))[:, None, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var_g > 0, num / (norm_f * np.sqrt(var_g)), -np.inf)


def integer_search(ref: np.ndarray, dfm: np.ndarray, mask: np.ndarray | None,
                   centres: np.ndarray, phi0: np.ndarray, hws: Any, search_range: Any
                   ) -> np.ndarray:
    """Integer translation of each window that maximises the ZNCC, around a start.

    Parameters
    ----------
    ref, dfm : numpy.ndarray
        (Z, Y, X) reference and deformed regions on one box.
    mask : numpy.ndarray of bool or None
        (Z, Y, X) reference voxels used (None: all).
    centres : numpy.ndarray
        (K, 3) int node positions in the box.
    phi0 : numpy.ndarray
        (K, 4, 4) starts; their translation is rounded to the voxel.
    hws, search_range : 3 int
        Half-window size and search range (voxels, z, y, x).

    Returns
    -------
    numpy.ndarray
        (K, 4, 4): ``phi0`` with the translation of the best integer shift (unchanged where
        the search region leaves the box or no shift correlates).
    """
    hws, sr = np.asarray(hws, int), np.asarray(search_range, int)
    out = np.array(phi0, dtype=np.float64, copy=True)
    start = np.round(np.nan_to_num(out[:, :3, 3])).astype(int)
    lo, ok = _window_starts(centres, start, hws, sr, ref.shape)
    todo = np.flatnonzero(ok)
    for i in range(0, len(todo), SEARCH_CHUNK):
        k = todo[i: i + SEARCH_CHUNK]
        ncc = _ncc_maps(ref, dfm, mask, centres[k], lo[k], hws, sr)
        flat = ncc.reshape(len(k), -1)
        best = np.argmax(flat, axis=1)
        found = np.isfinite(flat[np.arange(len(k)), best])
        shift = np.stack(np.unravel_index(best, ncc.shape[1:]), axis=1) - sr
        out[k[found], :3, 3] = start[k[found]] + shift[found]
    return out


def _outside_volume(phi: np.ndarray, nodes: np.ndarray, hws: np.ndarray,
                    shape: tuple, border: int) -> np.ndarray:
    """Whether the warped corners of each window come closer than ``border`` voxels to the
    volume's faces (or leave it)."""
    corners = np.array(np.meshgrid(*[[-h, h] for h in hws], indexing="ij")).reshape(3, -1)
    pos = (nodes[:, :, None] + phi[:, :3, 3][:, :, None]
           + np.einsum("kij,jc->kic", phi[:, :3, :3], corners))
    return np.any((pos < border) | (pos > np.asarray(shape)[None, :, None] - 1 - border),
                  axis=(1, 2))


def _channels(basis: np.ndarray | None) -> np.ndarray:
    """The kernel's model channels: float32 (K, Z, Y, X), (0, 1, 1, 1) for none."""
    if basis is None:
        return np.zeros((0, 1, 1, 1), np.float32)
    return np.ascontiguousarray(basis, np.float32)


def register_windows(ref: np.ndarray, dfm: np.ndarray, mask: np.ndarray | None,
                     centres: np.ndarray, phi0: np.ndarray, hws: Any, *,
                     order: int = 1, criterion: str = "znssd", max_iterations: int = 50,
                     delta_min: float = 1e-3, min_std: float = 0.0,
                     mask_coverage: float = 0.5, translation_only: bool = False,
                     slack: int = 3, robust: float = 0.0, shape_function: str = "affine",
                     origin: Any = (0, 0, 0), volume_shape: tuple | None = None,
                     basis: np.ndarray | None = None) -> dict:
    """Register the windows around ``centres`` of ``ref`` onto ``dfm`` (IC-GN).

    Parameters
    ----------
    ref, dfm : numpy.ndarray
        (Z, Y, X) reference and deformed regions on one box (every window inside it).
    mask : numpy.ndarray of bool or None
        (Z, Y, X) reference voxels used in the sums (None: all).
    centres : numpy.ndarray
        (K, 3) int node positions in the box.
    phi0 : numpy.ndarray
        (K, 4, 4) initial mappings (finite).
    hws : 3 int
        Half-window size (voxels).
    order : {1, 3}
        Interpolation of ``dfm``: trilinear or cubic B-spline.
    criterion : {"znssd", "ssd"}
    max_iterations, delta_min
        Iterations at most; convergence when the norm of the increment of (F - I, t) is
        below ``delta_min`` (spam's ``deltaPhiMin``).
    min_std, mask_coverage
        Windows with a grey-value std below ``min_std`` have no texture (-6); windows with
        less than ``mask_coverage`` of their voxels in ``mask`` are left out (-5).
    translation_only : bool
        Solve for the translation only (F stays as in ``phi0``).
    robust : float
        Tukey constant (:data:`ROBUST`) of the re-weighting after the plain match
        (:func:`anodetwin.dvc._icgn.icgn_batch`); 0: every voxel weighs 1.
    shape_function : {"affine", "quadratic", "quadratic-z"}
        The window's map (:data:`SHAPE_PARAMETERS`): affine, or second order (from the
        affine match; all 18 second derivatives, or the 3 through the thickness, d2u/dz2);
        Phi is the map's value and gradient at the node.
    slack : int
        Reference voxels that ``phi0`` maps closer than this (+1 for ``order`` 3) to the
        box's faces are left out: a window at the faces matches on what stays inside.
    origin, volume_shape
        The box's corner in the volume and the volume's shape: a window whose registration
        walked off the box is outside (-5) when it left the volume, else diverged (-1).
    basis : numpy.ndarray, optional
        (K, Z, Y, X) reference-model channels on the box (:mod:`anodetwin.dvc.model`),
        fitted to each deformed window every round and matched by SSD from ``phi0``
        (``criterion`` unused).

    Returns
    -------
    dict
        ``Phi`` (K, 4, 4), ``status`` (K,) ReturnStatus codes, ``iterations``, ``error``
        (mean squared residual, grey levels^2), ``delta_phi_norm``, ``residual``
        (sum r^2 / sum (f - mean f)^2: ~0 matched, ~2 unrelated), ``zncc`` and
        ``uncertainty`` (K, 3: displacement std z, y, x in voxels).
    """
    hws = np.asarray(hws, np.int64)
    dfm = np.ascontiguousarray(dfm, np.float32)
    coef = dfm if order == 1 else ndimage.spline_filter(dfm, 3, mode="mirror",
                                                         output=np.float32)
    use_mask = mask is not None
    m = (np.ascontiguousarray(mask, np.uint8) if use_mask else np.zeros((1, 1, 1), np.uint8))
    params = np.arange(9, 12) if translation_only else SHAPE_PARAMETERS[shape_function]
    cfg = np.array([order, CRITERIA[criterion], max_iterations, delta_min, min_std,
                    mask_coverage, slack + order // 2, robust], dtype=np.float64)
    phi, status, iters, fl = icgn_batch(np.ascontiguousarray(ref, np.float32), coef, m,
                                        use_mask, np.asarray(centres, np.int64),
                                        np.ascontiguousarray(phi0, np.float64), hws,
                                        params.astype(np.int64), cfg, _channels(basis))
    if volume_shape is not None:  # (a window cut by the faces from the start: diverged)
        pos = np.asarray(centres) + np.asarray(origin)
        whole = np.all((pos - hws >= 0) & (pos + hws <= np.asarray(volume_shape) - 1), axis=1)
        left = (status == DIVERGED) & whole & _outside_volume(
            phi, pos, hws, volume_shape, order // 2 + 1)
        status = np.where(left, OUTSIDE, status)
    good = status >= CONVERGED - 1
    return {"Phi": phi, "status": status, "iterations": iters,
            "error": np.where(good, fl[:, 0], np.inf), "delta_phi_norm": fl[:, 1],
            "residual": np.where(good, fl[:, 2], np.inf), "zncc": fl[:, 3],
            "uncertainty": fl[:, 4:7], "converged": status == CONVERGED}
