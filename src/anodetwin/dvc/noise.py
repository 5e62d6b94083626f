"""Noise floor of a tomography set-up from a double scan.

Two scans of an unchanged sample (the reference experiment's T8/T9 pair: no electrochemistry
between them) differ only by noise and small drifts. Their difference gives

* the per-scan noise standard deviation, ``std(B - A) / sqrt(2)`` (independent, equal noise);
* the mean grey-level drift between the scans, ``mean(B - A)``;
* the residual threshold: the ``percentile`` of ``|G_sigma * (B - A)|``, i.e. of the
  difference blurred with a Gaussian of ``sigma`` voxels and taken in absolute value,
  exactly the processing the reference applied to DVC residual maps. Residual values below
  it are noise (the reference used 5000 grey levels in 16-bit, sigma = 2 voxels). It is
  taken on the interior, 4 sigma away from the faces, where the blur is not biased by the
  reflective boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.io.agree import require_same_grid
from anodetwin.io.volume import require_3d, require_finite, require_same_shape

#: Gaussian blur (voxels) of the difference before the threshold, as the reference did.
REFERENCE_SIGMA = 2.0
#: Percentile (0-100) of the blurred absolute difference taken as the residual threshold.
REFERENCE_PERCENTILE = 99.0

__all__ = ["NoiseFloor", "noise_floor", "scan_difference", "REFERENCE_SIGMA",
           "REFERENCE_PERCENTILE"]


def scan_difference(scan_a: np.ndarray, scan_b: np.ndarray) -> np.ndarray:
    """Voxel-wise difference of two scans.

    Parameters
    ----------
    scan_a, scan_b : numpy.ndarray
        The two scans (z, y, x), same shape (grey levels).

    Returns
    -------
    numpy.ndarray
        ``scan_b - scan_a`` in float32 (float64 if either input is float64).

    Raises
    ------
    ShapeMismatchError
        When a scan is not 3D or the shapes differ.
    """
    require_3d(scan_a.shape, "first scan")
    require_3d(scan_b.shape, "second scan")
    require_same_shape(scan_a.shape, scan_b.shape, "first scan", "second scan")
    dt = np.result_type(np.float32, scan_a.dtype, scan_b.dtype)
    dt = np.float64 if dt == np.float64 else np.float32
    return np.subtract(scan_b, scan_a, dtype=dt)


@dataclass(frozen=True)
class NoiseFloor:
    """Noise statistics of a double scan (grey levels of the input volumes).

    Attributes
    ----------
    noise_std : float
        Per-scan noise standard deviation, ``std(B - A) / sqrt(2)``.
    drift : float
        Mean of ``B - A`` (global grey-level drift between the scans).
    residual_threshold : float
        ``percentile`` of ``|G_sigma * (B - A)|``: residual values below it are noise.
    sigma : float
        Gaussian blur (voxels) used for the threshold (default: the reference's).
    percentile : float
        Percentile (0-100) used for the threshold (default: the reference's).
    n_voxels : int
        Number of voxels compared (0: not said).
    """

    noise_std: float
    drift: float
    residual_threshold: float
    sigma: float = REFERENCE_SIGMA
    percentile: float = REFERENCE_PERCENTILE
    n_voxels: int = 0

    def to_dict(self) -> dict:
        """The statistics as a dict.

        Returns
        -------
        dict
            The six fields by name (grey levels, voxels, percent, count).
        """
        return asdict(self)


def noise_floor(scan_a: Any, scan_b: Any, sigma: float = REFERENCE_SIGMA,
                percentile: float = REFERENCE_PERCENTILE,
                voxel_size_um: Any = None, names: Sequence[str] | None = None) -> NoiseFloor:
    """Noise floor from two scans of an unchanged sample.

    Parameters
    ----------
    scan_a, scan_b : numpy.ndarray or Volume
        The two scans (z, y, x), already aligned: same shape and, for volumes that carry
        them, same voxel size and origin (:func:`anodetwin.io.agree.require_same_grid`).
    sigma : float
        Standard deviation (voxels) of the Gaussian applied to the difference before the
        residual threshold is taken (reference: 2 voxels).
    percentile : float
        Percentile (0-100) of the blurred absolute difference taken as residual threshold.
    voxel_size_um : float or 3 float, optional
        Explicit voxel size (um) of both scans: a difference of their own voxel sizes or
        origins is then logged, not refused.
    names : (str, str), optional
        How messages name the scans (default "first scan", "second scan").

    Returns
    -------
    NoiseFloor
        Noise std, drift, residual threshold (grey levels) and the settings used.

    Raises
    ------
    ParameterError
        A negative sigma or a percentile outside (0, 100].
    GridMismatchError, ShapeMismatchError
        Scans on different grids.
    NonFiniteError
        A scan with NaN or inf.
    """
    name_a, name_b = names or ("first scan", "second scan")
    require_same_grid(scan_a, scan_b, name_a, name_b, voxel_size=voxel_size_um)
    scan_a = np.asarray(getattr(scan_a, "data", scan_a))
    scan_b = np.asarray(getattr(scan_b, "data", scan_b))
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ParameterError(f"sigma {sigma} is not a non-negative number of voxels",
                             "give sigma >= 0, e.g. 2")
    if not (0 < percentile <= 100):
        raise ParameterError(f"percentile {percentile} is outside (0, 100]",
                             "give a percentile such as 99")
    for arr, name in ((scan_a, "first scan"), (scan_b, "second scan")):
        require_finite(arr, name)
    diff = scan_difference(scan_a, scan_b)
    std = float(diff.std(dtype=np.float64) / np.sqrt(2.0))
    drift = float(diff.mean(dtype=np.float64))
    blurred = ndimage.gaussian_filter(diff, sigma, truncate=4.0) if sigma > 0 else diff
    # the kernel folds back at the faces (reflective boundary), which inflates the blurred
    # noise there: take the threshold on the interior where the volume allows it
    m = int(np.ceil(4.0 * sigma))
    if m and min(blurred.shape) > 4 * m:
        blurred = blurred[m:-m, m:-m, m:-m]
    thr = float(np.percentile(np.abs(blurred), percentile))
    return NoiseFloor(std, drift, thr, float(sigma), float(percentile), int(diff.size))
