"""Spatial resolution from edge profiles across particle interfaces.

As the reference did (FWHM of the derivative of edge profiles): grey profiles are sampled
(cubic spline) along the normal of many particle surfaces (normal = grey gradient of the
lightly smoothed volume at surface voxels of the mask, where the gradient is strong),
each normalised between its two plateaus, aligned at its half-height crossing and averaged
into one edge spread function (ESF). The ESF is fitted by a blurred step
``a + b (1 + erf((t - t0) / (sigma sqrt 2))) / 2``: the line spread function (its
derivative) is a Gaussian of FWHM 2 sqrt(2 ln 2) sigma, reported in um.

Anisotropic voxels: the normal is the grey gradient in physical space (each axis divided
by its voxel size) and the profile runs along it in um, so every edge is measured in the
same physical length whatever its orientation; profile lengths and steps are given in
edges of the finest voxel axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anodetwin.errors import NumericalError, ParameterError, ShapeMismatchError
from anodetwin.io import normalise_voxel_size

__all__ = ["EdgeResolution", "edge_resolution"]

_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class EdgeResolution:
    """Result of :func:`edge_resolution`.

    Attributes
    ----------
    fwhm_um : float
        Full width at half maximum of the edge spread (um).
    fwhm_voxels : float
        The same in edges of the finest voxel axis.
    profiles : int
        Number of edge profiles averaged.
    t : numpy.ndarray, shape (n,)
        Positions along the surface normal (edges of the finest voxel axis).
    esf : numpy.ndarray, shape (n,)
        Mean edge spread function at ``t`` (normalised grey values, 0 to 1).
    """

    fwhm_um: float
    fwhm_voxels: float
    profiles: int
    t: np.ndarray
    esf: np.ndarray


def _surface_normals(v: np.ndarray, m: np.ndarray, vs: np.ndarray, half_length: float,
                     n_profiles: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Surface voxels of ``m`` away from the border, at the strongest half of the grey
    gradient, and their unit normals in physical space.

    Returns
    -------
    pts : numpy.ndarray
        (n, 3) voxel positions (z, y, x), float.
    normal : numpy.ndarray
        (n, 3) unit normals in um space (gradient divided by the (z, y, x) voxel size).
    """
    surface = m & ~ndimage.binary_erosion(m)
    # keep surface voxels away from the volume border (the profile's reach along each axis)
    L = [int(np.ceil(half_length * (vs.min() / v) - 1e-9)) + 2 for v in vs]
    inner = np.zeros_like(surface)
    inner[L[0]:-L[0], L[1]:-L[1], L[2]:-L[2]] = True
    pts = np.argwhere(surface & inner)
    if len(pts) < 50:
        raise ParameterError(f"only {len(pts)} surface voxels inside the volume",
                             "give a larger volume or a mask with more particle surface")
    s = ndimage.gaussian_filter(v, 1.0)
    g = np.stack([ndimage.sobel(s, axis=a) for a in range(3)])
    gp = g[:, pts[:, 0], pts[:, 1], pts[:, 2]].T / vs  # physical gradient (per um)
    mag = np.linalg.norm(gp, axis=1)
    strong = mag >= np.median(mag)
    pts, gp, mag = pts[strong], gp[strong], mag[strong]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pts), size=min(n_profiles, len(pts)), replace=False)
    return pts[pick].astype(float), gp[pick] / mag[pick, None]


def edge_resolution(volume: np.ndarray, mask: np.ndarray,
                    voxel_size_um: float | tuple = 1.0, n_profiles: int = 3000,
                    half_length: float = 6.0, step: float = 0.25,
                    seed: int = 0) -> EdgeResolution:
    """Resolution (FWHM of the line spread function) at the surfaces of ``mask``.

    Parameters
    ----------
    volume : numpy.ndarray
        Grey values (z, y, x).
    mask : numpy.ndarray of bool
        Segmented objects (e.g. Si particles) whose surfaces are the edges.
    voxel_size_um : float or (z, y, x) floats
        Voxel size (um; one value: isotropic).
    n_profiles : int
        Surface points sampled (the strongest-gradient half of the surface).
    half_length, step : float
        Profile extent either side of the surface and sampling step (edges of the finest
        voxel axis).
    seed : int
        Seed of the choice of surface points.

    Returns
    -------
    EdgeResolution

    Raises
    ------
    ShapeMismatchError
        If ``volume`` and ``mask`` differ in shape.
    ParameterError
        With fewer than 50 surface voxels inside the volume.
    NumericalError
        With too few clean profiles or a failed fit of the edge spread function.
    """
    v = np.asarray(volume, np.float32)
    m = np.asarray(mask, bool)
    if v.shape != m.shape:
        raise ShapeMismatchError(f"volume {v.shape} and mask {m.shape} differ",
                                 "give the mask segmented from this volume")
    vs = np.asarray(normalise_voxel_size(voxel_size_um, "voxel size"), float)
    h = float(vs.min())  # profile unit (um): the finest voxel edge
    pts, normal = _surface_normals(v, m, vs, half_length, n_profiles, seed)
    t = np.arange(-half_length, half_length + step / 2, step)
    coords = pts[:, None, :] + t[None, :, None] * (normal * (h / vs))[:, None, :]
    prof = ndimage.map_coordinates(v, coords.reshape(-1, 3).T, order=3, mode="nearest")
    prof = prof.reshape(len(pts), len(t))
    k = max(2, int(1.0 / step))
    lo, hi = prof[:, :k].mean(axis=1), prof[:, -k:].mean(axis=1)
    ok = hi - lo > 0.25 * np.median(hi - lo)
    norm = (prof[ok] - lo[ok, None]) / (hi - lo)[ok, None]
    # align each profile at its half-height crossing nearest the centre
    shifts = []
    for p in norm:
        above = p >= 0.5
        cross = np.flatnonzero(~above[:-1] & above[1:])
        if cross.size == 0:
            shifts.append(np.nan)
            continue
        i = cross[np.argmin(np.abs(t[cross]))]
        shifts.append(t[i] + (0.5 - p[i]) / (p[i + 1] - p[i]) * step)
    shifts = np.asarray(shifts)
    good = np.isfinite(shifts) & (np.abs(shifts) < half_length / 2)
    if good.sum() < 20:
        raise NumericalError("too few clean edge profiles to estimate the resolution",
                             "check the segmentation mask and the contrast")
    tt = np.arange(-half_length / 2, half_length / 2 + step / 2, step)
    esf = np.mean([np.interp(tt + sh, t, p) for p, sh in zip(norm[good], shifts[good],
                                                             strict=True)], axis=0)
    fwhm = _FWHM * _erf_edge_sigma(tt, esf)
    return EdgeResolution(float(fwhm * h), float(fwhm), int(good.sum()), tt, esf)


def _erf_edge_sigma(t: np.ndarray, esf: np.ndarray) -> float:
    """Standard deviation (unit of ``t``) of the Gaussian whose integral (an error-function
    step) fits the edge spread function ``esf`` sampled at ``t``."""
    from scipy.optimize import curve_fit
    from scipy.special import erf

    def model(x, a, b, x0, sigma):
        return a + b * 0.5 * (1 + erf((x - x0) / (sigma * np.sqrt(2))))

    try:
        (_, _, _, sigma), _ = curve_fit(model, t, esf, p0=(0.0, 1.0, 0.0, 1.0), maxfev=5000)
    except RuntimeError as exc:
        raise NumericalError(f"edge-profile fit failed ({exc})",
                             "check the segmentation mask and the contrast") from None
    return abs(float(sigma))
