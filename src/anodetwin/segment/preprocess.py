"""Preprocessing of tomograms before segmentation: denoising and grey-value normalisation
(the alignment of a series on the copper foil is :mod:`anodetwin.segment.alignment`).

* :func:`denoise`: 3x3x3 median (``"median"``) or non-local means (``"nlmeans"``,
  scikit-image, noise level from :func:`noise_sigma`);
* :func:`normalise`: robust linear stretch of the 0.5-99.5 percentiles to [0, 1]
  (``"stretch"``) or histogram equalisation (``"equalise"``; the spelling ``"equalize"``
  is accepted too), as the reference did before segmenting.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError

__all__ = ["DENOISERS", "NORMALISATIONS", "denoise", "noise_sigma", "normalise"]

DENOISERS = ("median", "nlmeans")
#: Grey-value normalisations of :func:`normalise` (``"equalize"`` is accepted for
#: ``"equalise"``).
NORMALISATIONS = ("stretch", "equalise")


def denoise(volume: np.ndarray, method: str = "median",
            noise: float | None = None) -> np.ndarray:
    """Denoised copy of a volume.

    Parameters
    ----------
    volume : numpy.ndarray, shape (nz, ny, nx)
        Grey values.
    method : str
        ``"median"`` (3x3x3 median) or ``"nlmeans"`` (non-local means with the noise level of
        :func:`noise_sigma`); see :data:`DENOISERS`.
    noise : float, optional
        Noise standard deviation for ``"nlmeans"`` (grey levels); default
        :func:`noise_sigma` of ``volume``.

    Returns
    -------
    numpy.ndarray of float32, shape (nz, ny, nx)
        The denoised grey values.

    Raises
    ------
    ParameterError
        For an unknown method.
    """
    v = np.asarray(volume, np.float32)
    if method == "median":
        return ndimage.median_filter(v, size=3)
    if method == "nlmeans":
        from skimage.restoration import denoise_nl_means

        sigma = noise_sigma(v) if noise is None else float(noise)
        return denoise_nl_means(v, h=0.8 * sigma, sigma=sigma, patch_size=3,
                                patch_distance=3, fast_mode=True).astype(np.float32)
    raise ParameterError(f"unknown denoising method '{method}'",
                         f"use one of {', '.join(DENOISERS)}")


def noise_sigma(volume: np.ndarray) -> float:
    """Robust noise standard deviation of white noise on a piecewise smooth volume.

    The MAD of the residual from the 3x3x3 mean, whose variance is 26/27 sigma^2.

    Parameters
    ----------
    volume : numpy.ndarray, shape (nz, ny, nx)
        Grey values.

    Returns
    -------
    float
        Noise standard deviation (grey levels).
    """
    v = np.asarray(volume, np.float32)
    d = (v - ndimage.uniform_filter(v, 3)).ravel()
    mad = np.median(np.abs(d - np.median(d)))
    return float(1.4826 * mad / np.sqrt(26.0 / 27.0))


def normalise(volume: np.ndarray, method: str = "stretch") -> np.ndarray:
    """Grey values mapped to [0, 1], as before segmenting in the reference workflow.

    Parameters
    ----------
    volume : numpy.ndarray, shape (nz, ny, nx)
        Grey values of any range and dtype.
    method : {"stretch", "equalise"}
        ``"stretch"``: the 0.5 and 99.5 percentiles mapped linearly to 0 and 1, clipped;
        ``"equalise"`` (or ``"equalize"``): histogram equalisation (4096 bins).

    Returns
    -------
    numpy.ndarray of float32, shape (nz, ny, nx)
        Normalised grey values in [0, 1].

    Raises
    ------
    ParameterError
        If ``method`` is none of :data:`NORMALISATIONS`.
    """
    v = np.asarray(volume, np.float32)
    if method == "stretch":
        lo, hi = np.percentile(v, (0.5, 99.5))
        return np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)
    if method in ("equalise", "equalize"):
        from skimage.exposure import equalize_hist

        return equalize_hist(v, nbins=4096).astype(np.float32)
    raise ParameterError(f"unknown normalisation '{method}'",
                         f"use one of {', '.join(NORMALISATIONS)}")
