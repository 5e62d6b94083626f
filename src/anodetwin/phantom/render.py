"""Tomogram rendering of phase labels, mimicking phase-contrast holo-nano-tomography.

Model, in order:

1. grey value per phase (crystalline Si clearly brighter than CBD + electrolyte; lithiated
   LixSi close to CBD + E; copper bright);
2. phase-contrast edge fringes: ``I = mu - fringe * s**2 * LoG_s(mu)`` with s = one voxel
   (dark/bright bands on both sides of every interface);
3. blur to the effective resolution: a Gaussian with FWHM ``resolution_fwhm_um``;
4. copper artefacts (the scattering of the dense foil), both decaying away from the foil
   with ``cu_streak_decay_um``: extra blur (three times the resolution width at the foil)
   and in-plane streaks of amplitude ``cu_streak_amplitude``;
5. Gaussian noise of standard deviation ``(grey_si - grey_cbd) / snr``, independent per scan;
6. rounding to 16-bit.

Steps 1-4 are deterministic (the clean image); only step 5 differs between two scans of one
state, so a double scan differs by pure noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anodetwin.kinematics import sample_linear
from anodetwin.phantom.config import Render
from anodetwin.phases import PHASE_CODES, PHASE_NAMES

__all__ = ["grey_lut", "clean_image", "add_noise", "noise_sigma", "FWHM_TO_SIGMA"]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def grey_lut(r: Render) -> np.ndarray:
    """Grey value of each phase code, the look-up table of the clean image.

    Parameters
    ----------
    r : Render
        Rendering parameters (``grey_<phase name>``).

    Returns
    -------
    numpy.ndarray of float32, shape (6,)
        Grey level of phase codes 0..5 (:data:`anodetwin.phases.PHASE_CODES`).
    """
    return np.array([getattr(r, f"grey_{PHASE_NAMES[code]}") for code in PHASE_CODES],
                    np.float32)


def noise_sigma(r: Render) -> float:
    """Noise standard deviation for the configured signal-to-noise ratio.

    Parameters
    ----------
    r : Render
        Rendering parameters (Si and CBD grey levels, ``snr``).

    Returns
    -------
    float
        ``|grey_si - grey_cbd| / snr`` (grey levels).
    """
    return abs(r.grey_si - r.grey_cbd) / r.snr


def _streaks(shape: tuple[int, int], seed: int) -> np.ndarray:
    """In-plane streak pattern in [-1, 1]: a few long sinusoidal bands, random directions."""
    rng = np.random.default_rng([seed, 7])
    y, x = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    out = np.zeros(shape, np.float32)
    for _ in range(4):
        ang = rng.uniform(0, np.pi)
        k = 2 * np.pi / rng.uniform(4, 16)
        out += np.cos(k * (np.cos(ang) * y + np.sin(ang) * x) + rng.uniform(0, 2 * np.pi))
    return out / 4


def clean_image(phases: np.ndarray, r: Render, voxel_size_um: float, cu_top: int,
                seed: int, coords: np.ndarray | None = None) -> np.ndarray:
    """Deterministic part of a tomogram (float32 grey values) for phase labels.

    Parameters
    ----------
    phases : numpy.ndarray of uint8
        Phase codes (z, y, x).
    r : Render
        Rendering parameters.
    voxel_size_um : float
        Voxel size (um), which scales the resolution and streak decay.
    cu_top : int
        First voxel above the copper foil (z index).
    seed : int
        Seed of the (fixed) streak pattern.
    coords : numpy.ndarray, optional
        Reference coordinates of every deformed voxel (from
        :func:`anodetwin.kinematics.inverse_coordinates`): the sharp grey map of ``phases``
        (reference grid) is warped by trilinear interpolation, so that interfaces move by
        the exact sub-voxel displacement (partial-volume edges), before the fringes, the
        blur and the streaks of the deformed frame are applied.

    Returns
    -------
    numpy.ndarray of float32, shape (nz, ny, nx)
        Grey values before noise and rounding.
    """
    mu = grey_lut(r)[phases]
    if coords is not None:
        mu = sample_linear(mu, coords)
    if r.fringe > 0:
        mu -= np.float32(r.fringe) * ndimage.gaussian_laplace(mu, 1.0)
    sigma = r.resolution_fwhm_um * FWHM_TO_SIGMA / voxel_size_um
    img = ndimage.gaussian_filter(mu, sigma) if sigma > 0.05 else mu
    if cu_top > 0:
        z = np.arange(phases.shape[0], dtype=np.float32)
        decay = np.exp(-np.maximum(z - cu_top, 0) * voxel_size_um / r.cu_streak_decay_um)
        decay[:cu_top] = 1.0
        near = int(min(phases.shape[0], cu_top + np.ceil(5 * r.cu_streak_decay_um
                                                          / voxel_size_um)))
        if sigma > 0.05 and near > 0:  # blur degraded near the foil
            extra = ndimage.gaussian_filter(img[: near + int(6 * sigma) + 1], 3 * sigma)[:near]
            w = decay[:near, None, None]
            img[:near] = w * extra + (1 - w) * img[:near]
        if r.cu_streak_amplitude > 0:
            img += (np.float32(r.cu_streak_amplitude) * decay[:, None, None]
                    * _streaks(phases.shape[1:], seed)[None])
    return img


def add_noise(clean: np.ndarray, r: Render, rng: np.random.Generator) -> np.ndarray:
    """A 16-bit scan of a clean image: Gaussian noise added, rounded and clipped.

    Parameters
    ----------
    clean : numpy.ndarray of float32, shape (nz, ny, nx)
        Clean image (:func:`clean_image`).
    r : Render
        Rendering parameters (the noise level, :func:`noise_sigma`).
    rng : numpy.random.Generator
        Source of the noise (one draw per scan).

    Returns
    -------
    numpy.ndarray of uint16, shape (nz, ny, nx)
        Grey values in [0, 65535].
    """
    noisy = clean + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(noise_sigma(r))
    return np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)
