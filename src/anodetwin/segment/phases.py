"""Unsupervised phase segmentation of an electrode tomogram.

Phase contrast separates crystalline Si, the copper foil and the rest (carbon-binder domain,
electrolyte and lithiated Si look alike), so the default segmentation writes the codes of
:mod:`anodetwin.phases` that the contrast supports: 4 copper, 2 non-lithiated Si, 1 the
merged "CBD+E" (pores, binder, electrolyte, LixSi), 5 the separator layer.

Method:

1. optional denoising (:func:`anodetwin.segment.preprocess.denoise`) and a light Gaussian
   smoothing (``sigma`` voxels) of the grey values;
2. three-class multi-Otsu thresholds of the smoothed histogram (sub-sampled): the upper one
   finds a **dense layer** at one z face (more than 80% of the face slice above it); the
   foil is then cut at the half level between its grey value and the electrode's next to it,
   the bright voxels connected to the layer are copper, filled per (y, x) column down to
   the face, and the foil surface is located per column to a fraction of a voxel where the
   (laterally smoothed) profile crosses that half level;
3. Si: the midpoint between the histogram peaks of the matrix and of Si (peaks either side
   of the Otsu threshold; class means would be dragged by pores and partial volumes), then
   refined locally (:func:`_local_midpoint`): every voxel is compared with the midpoint of
   the local Si and local background levels, so an edge sits at half height next to pores,
   binder or a lithiated shell alike; cleaned by an opening (radius 1) and removal of objects
   below ``min_si_voxels``;
4. the electrode top (separator interface) per column: the highest Si voxel of the column,
   taken over a lateral window of ``surface_window_um`` (the envelope of the particles;
   converted to voxels with the y and x voxel sizes separately), plus half a voxel;
   everything beyond it is the separator layer (5).

Interfaces are z positions between slices (voxels), per (y, x) column: the collector
interface is the top of the foil (``z_last_cu + 0.5``), the separator interface the
envelope of the electrode top. Without a foil the collector side is the volume face and the
interface maps are NaN where undefined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.io import normalise_voxel_size, require_3d, require_finite
from anodetwin.phases import PHASE
from anodetwin.segment.preprocess import denoise as denoise_volume

__all__ = ["PhaseSegmentation", "segment_phases", "thresholds", "electrode_surface",
           "lateral_window"]


@dataclass
class PhaseSegmentation:
    """Result of :func:`segment_phases`.

    Attributes
    ----------
    phases : numpy.ndarray of uint8
        Phase codes (z, y, x).
    thresholds : dict
        Grey thresholds used (``si``, ``cu`` when a foil exists), in input grey levels.
    collector_face : str or None
        ``"low"`` (z = 0) or ``"high"`` face holding the copper foil, None without foil.
    collector_z : numpy.ndarray
        (y, x) z of the collector interface (voxels); the face (-0.5) without foil.
    separator_z : numpy.ndarray
        (y, x) z of the separator interface (voxels), the electrode's top envelope.
    """

    phases: np.ndarray
    thresholds: dict
    collector_face: str | None
    collector_z: np.ndarray
    separator_z: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def si(self) -> np.ndarray:
        """Mask of the non-lithiated Si voxels, shape (nz, ny, nx)."""
        return self.phases == PHASE["si"]


def check_volume(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    """The grey values of a volume, checked to be segmentable.

    Parameters
    ----------
    volume : array_like or Volume
        Grey values (z, y, x); a :class:`anodetwin.io.Volume` gives its ``data``.
    name : str
        Name of the volume in error messages.

    Returns
    -------
    numpy.ndarray, shape (nz, ny, nx)
        The grey values (not copied when already an array).

    Raises
    ------
    DimensionError
        If the volume is not 3D.
    NonFiniteError
        If it holds NaN or infinite values.
    ParameterError
        If it is empty or constant.
    """
    v = np.asarray(getattr(volume, "data", volume))
    require_3d(v.shape, name)
    require_finite(v, name)
    if v.size == 0:
        raise ParameterError(f"{name} is empty", "give a volume with voxels")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        raise ParameterError(f"{name} is constant (value {lo:g}); nothing to segment",
                             "check the file: a reconstruction has contrast")
    return v


def _sample(v: np.ndarray, n: int = 2_000_000, seed: int = 0) -> np.ndarray:
    flat = v.reshape(-1)
    if flat.size <= n:
        return flat
    return flat[np.random.default_rng(seed).integers(0, flat.size, n)]


def thresholds(smoothed: np.ndarray) -> tuple[float, float]:
    """Two multi-Otsu thresholds (three classes) of a sub-sample of the grey values.

    Parameters
    ----------
    smoothed : numpy.ndarray
        Smoothed grey values (z, y, x).

    Returns
    -------
    tuple of float
        The lower and the upper threshold (grey levels).
    """
    from skimage.filters import threshold_multiotsu

    t = threshold_multiotsu(_sample(smoothed).astype(np.float64), classes=3)
    return float(t[0]), float(t[1])


def find_foil(smoothed: np.ndarray, t_cu: float) -> tuple[str | None, np.ndarray]:
    """Face holding a dense layer (the copper foil) and the copper mask.

    The mask is the voxels above the half level between foil and electrode connected to the
    layer, filled per column down to the face.

    Parameters
    ----------
    smoothed : numpy.ndarray, shape (nz, ny, nx)
        Smoothed grey values.
    t_cu : float
        Grey threshold above which a voxel may be copper (the upper multi-Otsu threshold).

    Returns
    -------
    face : str or None
        ``"low"`` (z = 0) or ``"high"`` face of the foil, None without a foil.
    cu : numpy.ndarray of bool, shape (nz, ny, nx)
        Copper mask (all False without a foil).
    t_edge : float or None
        The half level (grey) between foil and electrode, None without a foil.
    """
    frac = (smoothed > t_cu).mean(axis=(1, 2))
    nz = len(frac)
    for face in ("low", "high"):
        order = np.arange(nz) if face == "low" else np.arange(nz)[::-1]
        if frac[order[0]] < 0.8:
            continue
        run = int(np.argmax(frac[order] < 0.5)) if (frac[order] < 0.5).any() else nz
        layer = order[:run]
        beyond = order[run + 2: run + 8]
        level_cu = float(np.median(smoothed[layer]))
        level_e = float(np.median(smoothed[beyond])) if beyond.size else t_cu
        t_edge = 0.5 * (level_cu + level_e)
        lab, _ = ndimage.label(smoothed > t_edge)
        ids = np.unique(lab[layer])
        cu = np.isin(lab, ids[ids > 0])
        if face == "low":
            cu = np.flip(np.maximum.accumulate(np.flip(cu, 0), axis=0), 0)
        else:
            cu = np.maximum.accumulate(cu, axis=0)
        return face, cu, t_edge
    return None, np.zeros(smoothed.shape, bool), None


def _collector_z(smoothed: np.ndarray, cu: np.ndarray, face: str | None,
                 t_edge: float | None) -> np.ndarray:
    """Sub-voxel z of the foil surface per column: where the laterally smoothed profile
    crosses the half level between its last copper voxel and the next one."""
    nz = cu.shape[0]
    if face is None:
        return np.full(cu.shape[1:], -0.5)
    p = ndimage.gaussian_filter(smoothed, (0, 2, 2))
    has = cu.any(axis=0)
    if face == "low":
        k = np.where(has, nz - 1 - np.argmax(cu[::-1], axis=0), 0)
        k1 = np.minimum(k + 1, nz - 1)
        step = 1.0
    else:
        k = np.where(has, np.argmax(cu, axis=0), nz - 1)
        k1 = np.maximum(k - 1, 0)
        step = -1.0
    a = np.take_along_axis(p, k[None], 0)[0]
    b = np.take_along_axis(p, k1[None], 0)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((a - t_edge) / (a - b), 0, 1)
    frac = np.where(np.isfinite(frac), frac, 0.5)
    z = k + step * frac
    return np.where(has, z, -0.5 if face == "low" else nz - 0.5)


def _modes_midpoint(x: np.ndarray) -> tuple[float, float, float]:
    """Histogram peaks below and above the Otsu threshold and their midpoint."""
    from skimage.filters import threshold_otsu

    t = float(threshold_otsu(x))
    h, e = np.histogram(x, bins=512)
    h = ndimage.gaussian_filter1d(h.astype(float), 3)
    c = 0.5 * (e[1:] + e[:-1])
    lo = float(c[c <= t][np.argmax(h[c <= t])])
    hi = float(c[c > t][np.argmax(h[c > t])])
    return lo, hi, 0.5 * (lo + hi)


def _local_midpoint(s: np.ndarray, fg_mask: np.ndarray, valid: np.ndarray, lo: float,
                    hi: float, sigma: float, iterations: int) -> np.ndarray:
    """Refine a threshold mask: each voxel is compared with the midpoint of the local mean
    of the foreground and of the background around it (Gaussian windows of ``sigma``), so
    an edge sits at half height whatever the neighbouring phase is."""
    m = fg_mask & valid
    vm = valid.astype(np.float32)
    w_all = ndimage.gaussian_filter(vm, sigma, truncate=3.0)  # foreground + background
    s_all = ndimage.gaussian_filter(s * vm, sigma, truncate=3.0)
    for _ in range(iterations):
        fgm = m.astype(np.float32)
        wf = ndimage.gaussian_filter(fgm, sigma, truncate=3.0)
        sf = ndimage.gaussian_filter(s * fgm, sigma, truncate=3.0)
        wb, sb = w_all - wf, s_all - sf
        fg = np.where(wf > 1e-3, sf / np.maximum(wf, 1e-6), hi)
        bg = np.where(wb > 1e-3, sb / np.maximum(wb, 1e-6), lo)
        m = (s > 0.5 * (fg + bg)) & valid
    return m


def lateral_window(window_um: float, voxel_size_um: float | tuple) -> tuple[int, int]:
    """A lateral window (um) as (y, x) voxel counts, each axis with its own voxel size.

    Parameters
    ----------
    window_um : float
        Window width (um).
    voxel_size_um : float or (z, y, x) floats
        Voxel size (um; one value: isotropic).

    Returns
    -------
    tuple of int
        (ny, nx) window in voxels, at least 1 each.
    """
    _, vy, vx = normalise_voxel_size(voxel_size_um, "voxel size")
    return (max(1, int(round(window_um / vy))), max(1, int(round(window_um / vx))))


def electrode_surface(si: np.ndarray, window: int | tuple, face: str = "low") -> np.ndarray:
    """Separator-side interface z per column: the Si envelope.

    The highest Si voxel within a lateral window (see :func:`lateral_window`), plus half a
    voxel; for a foil on the high face, the lowest one minus half a voxel.

    Parameters
    ----------
    si : numpy.ndarray of bool, shape (nz, ny, nx)
        Si mask.
    window : int or (int, int)
        Lateral window in voxels, one count or (y, x) counts.
    face : {"low", "high"}
        Face of the collector.

    Returns
    -------
    numpy.ndarray of float, shape (ny, nx)
        Interface z (voxels, between slices); NaN where no Si is near.
    """
    window = tuple(max(1, int(w)) for w in np.broadcast_to(np.asarray(window), (2,)))
    nz = si.shape[0]
    any_si = si.any(axis=0)
    if face == "low":
        top = np.where(any_si, nz - 1 - np.argmax(si[::-1], axis=0), -1).astype(float)
        env = ndimage.maximum_filter(top, size=window, mode="nearest")
        return np.where(env >= 0, env + 0.5, np.nan)
    bottom = np.where(any_si, np.argmax(si, axis=0), nz).astype(float)
    env = ndimage.minimum_filter(bottom, size=window, mode="nearest")
    return np.where(env < nz, env - 0.5, np.nan)


def segment_phases(volume: np.ndarray, sigma: float = 0.7, denoise: str | None = None,
                   min_si_voxels: int = 8, surface_window_um: float = 10.0,
                   voxel_size_um: float | tuple | None = None, local_sigma: float = 2.0,
                   iterations: int = 3, separator: bool = True) -> PhaseSegmentation:
    """Segment a tomogram into the phases phase contrast supports (module notes).

    Parameters
    ----------
    volume : numpy.ndarray or Volume
        Grey values (z, y, x).
    sigma : float
        Gaussian smoothing before thresholding (voxels; 0: none).
    denoise : {None, "median", "nlmeans"}
        Optional denoising first.
    min_si_voxels : int
        Si objects smaller than this (voxels) are noise and become CBD+E.
    surface_window_um : float
        Lateral window of the electrode-top envelope (um); about two particle diameters.
    voxel_size_um : float or (z, y, x) floats, optional
        Voxel size (um; one value: isotropic); default: the volume's, else 1 (the window is
        then in voxels). The window is converted per lateral axis (y, x).
    local_sigma, iterations : float, int
        Window (voxels) and passes of the local half-height refinement of the Si edges.
    separator : bool
        Label the layer beyond the electrode top as separator (5).

    Returns
    -------
    PhaseSegmentation
        Phase codes (z, y, x), thresholds, collector face and interfaces (voxels).

    Raises
    ------
    DimensionError, NonFiniteError, ParameterError
        For a volume that is not 3D, not finite, empty or constant (:func:`check_volume`),
        or an unknown denoising method.
    """
    from skimage.morphology import ball, opening, remove_small_objects


    vs = normalise_voxel_size(voxel_size_um, "voxel size")
    if vs is None:
        vs = normalise_voxel_size(getattr(volume, "voxel_size_um", None) or 1.0, "voxel size")
    v = check_volume(volume).astype(np.float32)
    if denoise:
        v = denoise_volume(v, denoise)
    s = ndimage.gaussian_filter(v, sigma) if sigma > 0 else v
    t1, t2 = thresholds(s)
    face, cu, t_edge = find_foil(s, t2)
    th: dict = {}
    valid = ~cu
    if face is not None:
        th["cu"] = t_edge
        valid &= s <= t2  # foil-bright voxels are never Si
    lo, hi, t_si = _modes_midpoint(_sample(s[valid]).astype(np.float64))
    th.update(si=t_si, si_level=hi, matrix_level=lo)
    si = _local_midpoint(s, s > t_si, valid, lo, hi, local_sigma, iterations)
    si = opening(si, ball(1))
    si = remove_small_objects(si, max_size=max(0, int(min_si_voxels) - 1))
    nz = v.shape[0]
    phases = np.full(v.shape, PHASE["cbd"], np.uint8)
    phases[si] = PHASE["si"]
    phases[cu] = PHASE["copper"]
    col = _collector_z(s, cu, face, t_edge)
    window = lateral_window(surface_window_um, vs)
    sep = electrode_surface(si, window, face or "low")
    if separator:
        z = np.arange(nz, dtype=float)[:, None, None]
        beyond = (z > sep[None]) if face != "high" else (z < sep[None])
        beyond &= np.isfinite(sep)[None] & (phases != PHASE["copper"])
        phases[beyond] = PHASE["separator"]
    params = {"sigma": sigma, "denoise": denoise, "min_si_voxels": min_si_voxels,
              "surface_window_um": surface_window_um, "voxel_size_um": list(vs),
              "local_sigma": local_sigma, "iterations": iterations, "separator": separator,
              "multiotsu": [t1, t2]}
    return PhaseSegmentation(phases, th, face, np.asarray(col, float), sep, params)
