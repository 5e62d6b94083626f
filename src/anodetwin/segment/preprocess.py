"""Preprocessing of tomograms before segmentation: denoising, grey-value normalisation and
alignment of a time series on the rigid copper current collector.

* :func:`denoise`: 3x3x3 median (``"median"``) or non-local means (``"nlmeans"``,
  scikit-image, noise level from :func:`noise_sigma`);
* :func:`normalise`: robust linear stretch of the 0.5-99.5 percentiles to [0, 1]
  (``"stretch"``) or histogram equalisation (``"equalize"``), as the reference did before
  segmenting;
* :func:`collector_shift`: translation (z, y, x, voxels, sub-voxel) of a step relative to
  the reference, measured by phase correlation of the slab holding the copper foil (which
  does not deform), and :func:`align` to apply it (linear interpolation, edge values).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import require_3d

__all__ = ["denoise", "noise_sigma", "normalise", "collector_slab", "collector_shift", "align"]

DENOISERS = ("median", "nlmeans")


def denoise(volume: np.ndarray, method: str = "median") -> np.ndarray:
    """Denoised copy (float32) of ``volume`` by ``"median"`` (3x3x3) or ``"nlmeans"``."""
    v = np.asarray(volume, np.float32)
    if method == "median":
        return ndimage.median_filter(v, size=3)
    if method == "nlmeans":
        from skimage.restoration import denoise_nl_means

        sigma = noise_sigma(v)
        return denoise_nl_means(v, h=0.8 * sigma, sigma=sigma, patch_size=3,
                                patch_distance=3, fast_mode=True).astype(np.float32)
    raise ParameterError(f"unknown denoising method '{method}'",
                         f"use one of {', '.join(DENOISERS)}")


def noise_sigma(volume: np.ndarray) -> float:
    """Robust noise standard deviation (grey levels) of white noise on a piecewise smooth
    volume: the MAD of the residual from the 3x3x3 mean, whose variance is 26/27 sigma^2."""
    v = np.asarray(volume, np.float32)
    d = (v - ndimage.uniform_filter(v, 3)).ravel()
    mad = np.median(np.abs(d - np.median(d)))
    return float(1.4826 * mad / np.sqrt(26.0 / 27.0))


def normalise(volume: np.ndarray, method: str = "stretch") -> np.ndarray:
    """Grey values mapped to [0, 1]: percentile ``"stretch"`` or histogram ``"equalize"``."""
    v = np.asarray(volume, np.float32)
    if method == "stretch":
        lo, hi = np.percentile(v, (0.5, 99.5))
        return np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)
    if method == "equalize":
        from skimage.exposure import equalize_hist

        return equalize_hist(v, nbins=4096).astype(np.float32)
    raise ParameterError(f"unknown normalisation '{method}'", "use 'stretch' or 'equalize'")


def collector_slab(volume: np.ndarray, margin: int = 4) -> slice:
    """z slices holding the copper foil (the dense layer at one face) plus ``margin``."""
    from anodetwin.segment.phases import _foil, thresholds

    s = ndimage.gaussian_filter(np.asarray(volume, np.float32), 1.0)
    _, t_cu = thresholds(s)
    face, cu, _ = _foil(s, t_cu)
    if face is None:
        raise ParameterError("no copper foil (dense layer at a z face) found to align on",
                             "align on another feature or skip the alignment")
    rows = np.flatnonzero(cu.any(axis=(1, 2)))
    z0 = max(0, int(rows.min()) - margin)
    z1 = min(s.shape[0], int(rows.max()) + 1 + margin)
    return slice(z0, z1)


def collector_shift(ref: np.ndarray, moving: np.ndarray, margin: int = 4,
                    upsample: int = 20) -> np.ndarray:
    """Translation (z, y, x; voxels) that maps ``ref``'s foil onto ``moving``'s.

    ``moving`` shifted by minus this (:func:`align`) lies on ``ref``'s grid.
    """
    from skimage.registration import phase_cross_correlation

    a, b = np.asarray(ref), np.asarray(moving)
    require_3d(a.shape, "reference volume")
    if a.shape != b.shape:
        raise ShapeMismatchError(f"reference {a.shape} and moving {b.shape} volumes differ",
                                 "give steps of one scan geometry")
    zs = collector_slab(a, margin)
    # the slab in the moving volume may have moved: take a wider band around it
    pad = max(margin, 8)
    wide = slice(max(0, zs.start - pad), min(a.shape[0], zs.stop + pad))
    fa = np.zeros(b[wide].shape, np.float32)
    fa[zs.start - wide.start: zs.stop - wide.start] = a[zs]
    shift, _, _ = phase_cross_correlation(b[wide].astype(np.float32), fa,
                                          upsample_factor=upsample)
    return np.asarray(shift, float)


def align(volume: np.ndarray, shift: np.ndarray, order: int = 1) -> np.ndarray:
    """``volume`` moved by ``-shift`` (voxels) onto the reference grid (edge values)."""
    s = np.asarray(shift, float)
    v = np.asarray(volume)
    if np.allclose(s, np.round(s)):
        out = ndimage.shift(v, -np.round(s), order=0, mode="nearest")
    else:
        out = ndimage.shift(v.astype(np.float32), -s, order=order, mode="nearest")
    return out.astype(v.dtype) if np.issubdtype(v.dtype, np.integer) and order == 0 else out
