"""A model of the reference scan from its phases, for scans whose grey values change.

When a phase changes its grey value between the scans (silicon lithiating to the binder's
grey value, in part of a particle or all of it), the reference window's grey values are
the wrong template: ZNSSD absorbs one affine grey-value map per window, robust re-weighting
drops the voxels that changed, but the blurred and fringed edges of the changed phase stay
where the reference had them, and their minimum lies up to a voxel away from the true
match. The reference *model* replaces the reference's grey values by what a scanner makes
of its phases:

    f(x) = sum_p a_p (G_s * 1_p)(x) + b_p (G_s' * Laplacian 1_p)(x) + c0,

``1_p`` the indicator of phase p, ``G_s`` a Gaussian of the point-spread function's sigma
``s`` and the Laplacian-of-Gaussian term (``s' = sqrt(s^2 + 1)``) the edge fringes of
propagation-based phase contrast (Paganin et al. 2002, J. Microsc. 206:33; a fringe is the
Laplacian of the projected phase). The native engine (:mod:`anodetwin.dvc.native`) fits
(a, b, c0) to each deformed window at its current match, with Tukey re-weighting, so each
phase takes its grey value in the *deformed* scan, and matches the model by SSD.

:func:`phase_channels` builds the channels of a labelled region; :func:`fit_psf`
estimates the point-spread sigma from the reference scan and its phases (least squares of
the scan on the channels, over a range of sigmas).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.log import get_logger

__all__ = ["phase_channels", "fit_psf", "PSFFit", "PSF_SIGMAS", "MIN_R2"]

log = get_logger("dvc")

#: Sigmas (voxels) over which :func:`fit_psf` searches the point-spread function.
PSF_SIGMAS = np.round(np.arange(0.3, 3.01, 0.1), 2)
#: Voxels per axis of the central box :func:`fit_psf` fits on at most.
FIT_BOX = 64
#: Share of the scan's grey-value variance the phases must explain (R^2 of the fit):
#: below it the phases do not describe the scan (another sample, region or frame).
MIN_R2 = 0.5


@dataclass(frozen=True)
class PSFFit:
    """The point-spread function fitted by :func:`fit_psf`.

    Attributes
    ----------
    sigma : float
        Gaussian sigma of the point-spread function (voxels).
    r2 : float
        Share of the scan's grey-value variance the phase model explains at ``sigma``.
    residual_std : float
        Standard deviation of the fit's residual (grey levels; noise plus what the model
        misses).
    """

    sigma: float
    r2: float
    residual_std: float

    def to_dict(self) -> dict:
        """The fit as a dict of floats (for a result file's parameters)."""
        return {"psf_sigma": self.sigma, "r2": self.r2, "residual_std": self.residual_std}


def phase_channels(phases: np.ndarray, sigma: float) -> np.ndarray:
    """Channels of the reference model of a labelled region.

    Parameters
    ----------
    phases : numpy.ndarray
        (Z, Y, X) integer phase codes (any codes; those present make the channels).
    sigma : float
        Point-spread sigma (voxels, >= 0).

    Returns
    -------
    numpy.ndarray
        (K, Z, Y, X) float32, K = 2 (P - 1) for P phases present: per phase but the first,
        its blurred indicator ``G_s * 1_p`` and blurred Laplacian ``G_s' * Laplacian 1_p``
        (``s' = sqrt(s^2 + 1)``); the first phase is the constant's (the indicators sum to
        1 and their Laplacians to 0). Borders are extended (nearest).
    """
    lab = np.asarray(phases)
    codes = np.unique(lab)[1:]
    out = np.empty((2 * len(codes), *lab.shape), np.float32)
    s_log = float(np.hypot(sigma, 1.0))
    for i, code in enumerate(codes):
        ind = (lab == code).astype(np.float32)
        ndimage.gaussian_filter(ind, sigma, output=out[2 * i], mode="nearest")
        ndimage.gaussian_laplace(ind, s_log, output=out[2 * i + 1], mode="nearest")
    return out


def _central_box(shape: tuple, edge: int, pad: int) -> tuple[tuple[slice, ...], tuple]:
    """A central box of at most ``edge`` voxels per axis with ``pad`` around it (clipped),
    and the box's slices inside the padded one."""
    outer, inner = [], []
    for n in shape:
        e = min(edge, n)
        a = (n - e) // 2
        lo, hi = max(a - pad, 0), min(a + e + pad, n)
        outer.append(slice(lo, hi))
        inner.append(slice(a - lo, a - lo + e))
    return tuple(outer), tuple(inner)


def _fit(image: np.ndarray, channels: np.ndarray, inner: tuple) -> tuple[float, float]:
    """R^2 and residual std of the least-squares fit of ``image`` on the channels and a
    constant, over the ``inner`` voxels."""
    y = image[inner].ravel().astype(np.float64)
    A = np.column_stack([c[inner].ravel() for c in channels] + [np.ones(y.size)])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    r = y - A @ coef
    var = float(y.var())
    return (1.0 - float(r.var()) / var if var > 0 else 0.0), float(r.std())


def fit_psf(reference: Any, phases: Any, sigmas: Any = PSF_SIGMAS,
            box: int = FIT_BOX, name: str = "the phases") -> PSFFit:
    """Point-spread sigma of a scan from its phases.

    The scan's central box (at most ``box`` voxels per axis) is fitted by least squares
    on :func:`phase_channels` of its phases for every sigma of ``sigmas``; the sigma of
    the smallest residual, refined by a parabola through it and its neighbours, is the
    point-spread function's.

    Parameters
    ----------
    reference : array, Volume, path, LazyVolume or h5py.Dataset
        (Z, Y, X) scan (only the box is read).
    phases : array, Volume, path, LazyVolume or h5py.Dataset
        (Z, Y, X) its phase codes, on its grid.
    sigmas : sequence of float
        Candidate sigmas (voxels, increasing, evenly spaced).
    box : int
        Edge of the fitted box (voxels).
    name : str
        The phases as the messages name them (e.g. ``"phases 'T0_phases.tif'"``).

    Returns
    -------
    PSFFit
        Sigma (voxels), R^2 and residual std of the fit at it.

    Raises
    ------
    ParameterError
        The box holds a single phase or non-finite codes, or the phases explain less than
        :data:`MIN_R2` of the scan's grey-value variance (they do not belong to this scan).

    Notes
    -----
    A sigma at either end of ``sigmas`` is logged as a warning: the scan's may lie
    beyond; give it explicitly then.
    """
    from anodetwin.dvc.volumes import as_worker_volume

    ref, lab = as_worker_volume(reference), as_worker_volume(phases)
    sig = np.asarray(sigmas, float)
    outer, inner = _central_box(tuple(ref.shape), box, int(np.ceil(4 * np.hypot(sig[-1], 1))))
    image, labels = ref.read(outer).astype(np.float32), lab.read(outer)
    if not np.isfinite(labels).all():
        raise ParameterError(f"{name} hold NaN or infinite codes",
                             "give integer phase codes (anodetwin.phases)")
    if len(np.unique(labels[inner])) < 2:
        raise ParameterError(f"{name} hold a single phase in the scan's central box",
                             "give the segmented phases of the reference scan")
    fits = np.array([_fit(image, phase_channels(labels, s), inner) for s in sig])
    best = int(np.argmin(fits[:, 1]))
    sigma = float(sig[best])
    if 0 < best < len(sig) - 1:  # parabola through the best and its neighbours
        a, b, c = fits[best - 1: best + 2, 1]
        den = a - 2 * b + c
        if den > 0:
            sigma += 0.5 * (a - c) / den * float(sig[1] - sig[0])
    r2, std = _fit(image, phase_channels(labels, sigma), inner)
    if r2 < MIN_R2:
        raise ParameterError(f"{name} explain {100 * r2:.0f}% of the reference scan's "
                             "grey values (the model needs 50%)",
                             "give the phases segmented from this reference scan, on its grid")
    if best in (0, len(sig) - 1):
        log.warning("point-spread sigma of %s at the end of the range searched (%.2f "
                    "voxels): the scan's may lie beyond; give it (psf_sigma, --psf-sigma)",
                    name, sig[best])
    return PSFFit(float(sigma), float(r2), float(std))
