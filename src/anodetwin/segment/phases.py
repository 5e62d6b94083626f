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

import functools

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.io import normalise_voxel_size, require_3d, require_finite
from anodetwin.io.blocks import (
    Block,
    BlockGrid,
    gaussian_crop,
    read_region,
    run_blocks,
    write_region,
)
from anodetwin.phases import PHASE
from anodetwin.segment._blockpass import (
    GreySource,
    column_extreme,
    components_touching,
    gather,
    gaussian_radius,
    lattice_box,
    lattice_step,
)
from anodetwin.segment.preprocess import block_denoiser

__all__ = ["PhaseSegmentation", "segment_phases", "thresholds", "electrode_surface",
           "lateral_window", "foil_extent"]


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


#: Fewest voxels along any axis of a volume segmented in 3-D (:func:`check_volume`): the
#: 3-D filters, the particle surfaces and the interfaces need a voxel on either side.
MIN_SIDE = 3


def check_volume(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    """The grey values of a volume, checked to be segmentable.

    Parameters
    ----------
    volume : array_like, Volume or LazyVolume
        Grey values (z, y, x); a :class:`anodetwin.io.Volume` gives its ``data``; of a
        volume read lazily (``region``) only the shape is checked here (its values are
        checked as its blocks are read).
    name : str
        Name of the volume in error messages.

    Returns
    -------
    numpy.ndarray, shape (nz, ny, nx)
        The grey values (not copied when already an array); a lazy volume as given.

    Raises
    ------
    DimensionError
        If the volume is not 3D.
    NonFiniteError
        If it holds NaN or infinite values.
    ParameterError
        If it is empty, has fewer than :data:`MIN_SIDE` voxels along an axis, or is
        constant.
    """
    lazy = hasattr(volume, "region")  # its values are checked as its blocks are read
    v = volume if lazy else np.asarray(getattr(volume, "data", volume))
    require_3d(v.shape, name)
    if 0 in v.shape:
        raise ParameterError(f"{name} is empty", "give a volume with voxels")
    if min(v.shape) < MIN_SIDE:
        n, axis = min(v.shape), "zyx"[int(np.argmin(v.shape))]
        raise ParameterError(
            f"{name} has {n} voxel{'s' if n > 1 else ''} along {axis} (shape "
            f"{tuple(v.shape)}, z y x): not a tomogram to segment in 3-D",
            f"give a volume of at least {MIN_SIDE} voxels along every axis")
    if lazy:
        return v
    require_finite(v, name)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        raise ParameterError(f"{name} is constant (value {lo:g}); nothing to segment",
                             "check the file: a reconstruction has contrast")
    return v


def thresholds(smoothed: np.ndarray) -> tuple[float, float]:
    """Two multi-Otsu thresholds (three classes) of the grey values on the sampling lattice
    (:func:`anodetwin.segment._blockpass.lattice_step`: all voxels up to 2 M).

    Parameters
    ----------
    smoothed : numpy.ndarray
        Smoothed grey values (z, y, x).

    Returns
    -------
    tuple of float
        The lower and the upper threshold (grey levels).
    """
    v = np.asarray(smoothed)
    step = lattice_step(v.shape)
    return _otsu3(v[::step, ::step, ::step].ravel())


def _otsu3(values: np.ndarray) -> tuple[float, float]:
    from skimage.filters import threshold_multiotsu

    t = threshold_multiotsu(np.asarray(values, np.float64), classes=3)
    return float(t[0]), float(t[1])


def find_foil(smoothed: np.ndarray, t_cu: float) -> tuple[str | None, np.ndarray,
                                                           float | None]:
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
    src = GreySource(np.asarray(smoothed), cache=True)
    grid = BlockGrid(src.shape)
    face, kcu, t_edge = _foil(src, grid, t_cu, lattice_step(src.shape), 1)
    full = tuple(slice(0, n) for n in src.shape)
    return face, _copper_box(kcu, face, full), t_edge


def foil_extent(volume: Any, sigma: float = 1.0, block_shape: Any = None,
                workers: int = 1, name: str = "volume"
                ) -> tuple[str | None, np.ndarray | None]:
    """Face of the copper foil and, per (y, x) column, its last (low face) or first (high
    face) copper slice, block by block (as :func:`find_foil` on the volume smoothed by
    ``sigma`` with its upper multi-Otsu threshold).

    Parameters
    ----------
    volume : array, Volume or LazyVolume
        Grey values (z, y, x).
    sigma : float
        Gaussian smoothing (voxels).
    block_shape : int or 3 int, optional
        Blocks (default: one).
    workers : int
        Threads.
    name : str
        How error messages name the volume (NaN, inf, empty or constant).

    Returns
    -------
    face : str or None
        ``"low"``, ``"high"`` or None without a foil.
    extreme : numpy.ndarray of int64, shape (ny, nx), or None
        Copper extreme per column (-1 / a value >= nz where the column has none).
    """
    grid = BlockGrid(volume.shape, block_shape, 0)
    src = GreySource(volume, sigma, cache=len(grid) == 1)
    step = lattice_step(volume.shape)
    _, t2 = _otsu3(_checked_sample(src, grid, step, workers, name))
    face, kcu, _ = _foil(src, grid, t2, step, workers)
    return face, kcu


def _foil_layers(frac: np.ndarray) -> tuple[str, slice, slice] | None:
    """Face of a dense layer (first slice > 80% bright), the layer's slices (bright share
    >= 0.5) and the electrode slices 2..7 beyond it; None without such a layer."""
    nz = len(frac)
    for face in ("low", "high"):
        order = np.arange(nz) if face == "low" else np.arange(nz)[::-1]
        if frac[order[0]] < 0.8:
            continue
        run = int(np.argmax(frac[order] < 0.5)) if (frac[order] < 0.5).any() else nz
        layer, beyond = order[:run], order[run + 2: run + 8]
        return face, _zrange(layer), _zrange(beyond)
    return None


def _zrange(z: np.ndarray) -> slice:
    return slice(int(z.min()), int(z.max()) + 1) if z.size else slice(0, 0)


def _foil(src: GreySource, grid: BlockGrid, t_cu: float, step: int, workers: int
          ) -> tuple[str | None, np.ndarray | None, float | None]:
    """Face, last (low face) or first (high face) copper slice per column (-1 / a large
    value where none) and the foil's half level; (None, None, None) without a foil."""
    nz, ny, nx = src.shape
    counts = np.zeros(nz)
    for b, c in run_blocks(lambda b: (src.lattice(b.core, step, (1, 2)) > t_cu).sum(
            axis=(1, 2)), grid, workers):
        counts[b.core[0]] += c
    found = _foil_layers(counts / (len(range(0, ny, step)) * len(range(0, nx, step))))
    if found is None:
        return None, None, None
    face, layer, beyond = found
    level_cu = _median_slices(src, grid, layer, step, workers)
    level_e = (_median_slices(src, grid, beyond, step, workers)
               if beyond.stop > beyond.start else t_cu)
    t_edge = 0.5 * (level_cu + level_e)
    bright = lambda b: src.smoothed(b.core) > t_edge  # noqa: E731
    luts = components_touching(grid, bright, layer, workers)

    def extreme(b: Block) -> np.ndarray:
        lab, _ = ndimage.label(bright(b))
        return column_extreme(luts[b.index][lab], b.core[0].start, face)

    kcu = np.full((ny, nx), -1 if face == "low" else _NONE, np.int64)
    holding = [b for b in grid if luts[b.index].any()]  # the blocks with copper
    for b, e in run_blocks(extreme, holding, workers):
        yx = b.core[1:]
        kcu[yx] = np.maximum(kcu[yx], e) if face == "low" else np.minimum(kcu[yx], e)
    return face, kcu, t_edge


_NONE = np.iinfo(np.int64).max  # "no copper in this column" for a foil on the high face


def _median_slices(src: GreySource, grid: BlockGrid, zs: slice, step: int,
                   workers: int) -> float:
    """Median of the smoothed grey values of slices ``zs`` on the (y, x) lattice."""
    def values(b: Block) -> np.ndarray:
        z0 = b.core[0].start
        sub = slice(max(zs.start, z0) - z0, min(zs.stop, b.core[0].stop) - z0)
        box = (slice(sub.start + z0, sub.stop + z0),) + b.core[1:]
        return src.lattice(box, step, (1, 2)).ravel()

    return float(np.median(np.concatenate(gather(grid.touching(zs), values, workers))))


def _copper_box(kcu: np.ndarray | None, face: str | None, box: tuple) -> np.ndarray:
    """Copper mask of a box from the per-column copper extreme (:func:`_foil`)."""
    shape = tuple(s.stop - s.start for s in box)
    if face is None:
        return np.zeros(shape, bool)
    z = np.arange(box[0].start, box[0].stop)[:, None, None]
    k = kcu[box[1], box[2]][None]
    return z <= k if face == "low" else z >= k


def _collector_z(a: np.ndarray, b: np.ndarray, kcu: np.ndarray | None, face: str | None,
                 t_edge: float | None, nz: int) -> np.ndarray:
    """Sub-voxel z of the foil surface per column: where the laterally smoothed profile
    crosses the half level between its last copper voxel (value ``a``) and the next one
    (``b``)."""
    if face is None:
        return np.full(a.shape, -0.5)
    has = (kcu >= 0) if face == "low" else (kcu < nz)
    k = np.where(has, kcu, 0 if face == "low" else nz - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((a - t_edge) / (a - b), 0, 1)
    frac = np.where(np.isfinite(frac), frac, 0.5)
    z = k + (1.0 if face == "low" else -1.0) * frac
    return np.where(has, z, -0.5 if face == "low" else nz - 0.5)


def _profile_columns(s: np.ndarray, b: Block, kcu: np.ndarray, face: str, nz: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Laterally smoothed grey value (Gaussian, 2 voxels) at each core column's last copper
    slice and the next one, NaN where that slice is not in the block's core."""
    k = kcu[b.core[1], b.core[2]]
    has = (k >= 0) if face == "low" else (k < nz)
    k = np.where(has, k, 0 if face == "low" else nz - 1)
    k1 = np.clip(k + (1 if face == "low" else -1), 0, nz - 1)
    z0, z1 = b.core[0].start, b.core[0].stop
    need = np.unique(np.concatenate([k.ravel(), k1.ravel()]))
    need = need[(need >= z0) & (need < z1)]
    if need.size == 0:
        return np.full(k.shape, np.nan), np.full(k.shape, np.nan)
    p = ndimage.gaussian_filter(s[need - b.outer[0].start], (0, 2, 2))
    p = p[(slice(None),) + b.inner[1:]]

    def at(kk: np.ndarray) -> np.ndarray:
        j = np.clip(np.searchsorted(need, kk), 0, need.size - 1)
        v = np.take_along_axis(p, j[None], 0)[0]
        return np.where((kk >= z0) & (kk < z1), v, np.nan)

    return at(k), at(k1)


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
                    hi: float, sigma: float, iterations: int,
                    interior: tuple = ((False, False),) * 3) -> tuple[np.ndarray, tuple]:
    """Refine a threshold mask: each voxel is compared with the midpoint of the local mean
    of the foreground and of the background around it (Gaussian windows of ``sigma``), so
    an edge sits at half height whatever the neighbouring phase is.

    On a block whose (low, high) sides per axis marked in ``interior`` lie inside the
    volume, each pass works only where the previous one is still exact (the window's
    radius less on those sides). Returns the mask and the box (slices of the inputs) it
    covers."""
    r = gaussian_radius(sigma, 3.0)
    cur = tuple(slice(0, n) for n in s.shape)

    def shrink(box: tuple) -> tuple:
        return tuple(slice(c.start + r * a, c.stop - r * b)
                     for c, (a, b) in zip(box, interior, strict=True))

    first = shrink(cur)  # the largest box any pass needs the sums on
    m = fg_mask & valid
    if valid.all():  # the sums of all voxels: one constant, and the grey values themselves
        w_all = np.broadcast_to(_unit_gaussian(sigma), tuple(c.stop - c.start for c in first))
        s_all = gaussian_crop(s, sigma, first)
    else:
        vm = valid.astype(np.float32)
        w_all = gaussian_crop(vm, sigma, first)
        vm *= s  # in place: s * valid
        s_all = gaussian_crop(vm, sigma, first)
        del vm
    for _ in range(iterations):
        nxt = shrink(cur)
        rel = tuple(slice(n.start - c.start, n.stop - c.start)
                    for n, c in zip(nxt, cur, strict=True))
        in_first = tuple(slice(n.start - f.start, n.stop - f.start)
                         for n, f in zip(nxt, first, strict=True))
        fgm = m.astype(np.float32)
        wf = gaussian_crop(fgm, sigma, rel)
        fgm *= s[cur]  # in place: the foreground's grey values
        sf = gaussian_crop(fgm, sigma, rel)
        del fgm
        m = np.empty(wf.shape, bool)
        _midpoint_mask(s[nxt], wf, sf, w_all[in_first], s_all[in_first], valid[nxt],
                       np.float32(lo), np.float32(hi), m)
        cur = nxt
    return m, cur


@njit(cache=True, nogil=True)
def _midpoint_mask(s, wf, sf, w_all, s_all, valid, lo, hi, out):  # pragma: no cover - compiled
    """``out = valid & (s > (fg + bg) / 2)``, fg and bg the local means ``sf / wf`` and
    ``(s_all - sf) / (w_all - wf)`` (``hi`` / ``lo`` where a window holds almost none of
    them), in float32 as NumPy would compute them, in one pass over the voxels."""
    tiny, eps, half = np.float32(1e-3), np.float32(1e-6), np.float32(0.5)
    nz, ny, nx = s.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                a, b = wf[z, y, x], sf[z, y, x]
                wb, sb = w_all[z, y, x] - a, s_all[z, y, x] - b
                fg = b / max(a, eps) if a > tiny else hi
                bg = sb / max(wb, eps) if wb > tiny else lo
                out[z, y, x] = valid[z, y, x] and s[z, y, x] > half * (fg + bg)


@functools.cache
def _unit_gaussian(sigma: float) -> np.float32:
    """The 3-D Gaussian (truncated at 3 sigma) of a volume of ones: the same float32 value
    in every voxel, whatever the volume's shape (every line is filtered alike)."""
    r = gaussian_radius(sigma, 3.0)
    return ndimage.gaussian_filter(np.ones((2 * r + 1,) * 3, np.float32), sigma,
                                   truncate=3.0)[r, r, r]


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
    return _envelope(column_extreme(np.asarray(si, bool), 0, face), window, face,
                     si.shape[0])


def _envelope(extreme: np.ndarray, window: int | tuple, face: str, nz: int) -> np.ndarray:
    """Separator interface from each column's highest (low face; -1: none) or lowest (high
    face; >= nz: none) Si slice, enveloped over the lateral ``window``."""
    window = tuple(max(1, int(w)) for w in np.broadcast_to(np.asarray(window), (2,)))
    if face == "low":
        env = ndimage.maximum_filter(extreme.astype(float), size=window, mode="nearest")
        return np.where(env >= 0, env + 0.5, np.nan)
    bottom = np.minimum(extreme, nz).astype(float)
    env = ndimage.minimum_filter(bottom, size=window, mode="nearest")
    return np.where(env < nz, env - 0.5, np.nan)


#: Working memory of the Si pass per voxel of a block with its halo (bytes).
BYTES_PER_VOXEL = 64
#: Largest block core side (voxels): beyond it the 28-voxel halo's share falls little (the
#: block reads 2.29x its core at 176^3, 2.04x at 208^3) while the memory held keeps growing.
MAX_SIDE = 176


def segment_phases(volume: np.ndarray, sigma: float = 0.7, denoise: str | None = None,
                   min_si_voxels: int = 8, surface_window_um: float = 10.0,
                   voxel_size_um: float | tuple | None = None, local_sigma: float = 2.0,
                   iterations: int = 3, separator: bool = True, *,
                   block_shape: Any = None, memory_limit: Any = None, workers: int = 1,
                   out: Any = None, name: str = "volume") -> PhaseSegmentation:
    """Segment a tomogram into the phases phase contrast supports (module notes).

    Parameters
    ----------
    volume : numpy.ndarray, Volume or LazyVolume
        Grey values (z, y, x); a :class:`~anodetwin.io.LazyVolume` is read block by block.
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
    block_shape : int or 3 int, optional
        Process the volume in blocks of this core size (:mod:`anodetwin.io.blocks`); the
        result is the same for any block size. Default: one block, or blocks sized for
        ``memory_limit``.
    memory_limit : str or int, optional
        Memory ceiling (e.g. ``"4GB"``) from which the block size is derived.
    workers : int
        Blocks processed at once (threads).
    out : array-like, optional
        Where to write the phase codes (a uint8 array or an HDF5/Zarr dataset of the
        volume's shape), block by block; default a new array.
    name : str
        How error messages name the volume (e.g. ``"volume 'T0.h5:/data'"``).

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
    from anodetwin.io.blocks import block_shape_for

    vs = normalise_voxel_size(voxel_size_um, "voxel size")
    if vs is None:
        vs = normalise_voxel_size(getattr(volume, "voxel_size_um", None) or 1.0, "voxel size")
    vol = check_volume(volume, name)  # a lazy volume: its shape (values block by block)
    require_3d(vol.shape, name)
    halo = _si_halo(local_sigma, iterations, min_si_voxels)
    if block_shape is None and memory_limit is not None:
        block_shape = block_shape_for(vol.shape, BYTES_PER_VOXEL, halo, memory_limit, workers,
                                      max_side=MAX_SIDE)
    grid = BlockGrid(vol.shape, block_shape, halo)
    src = _grey_source(vol, sigma, denoise, grid, workers)
    step = lattice_step(vol.shape)
    t1, t2 = _otsu3(_checked_sample(src, grid, step, workers, name))
    face, kcu, t_edge = _foil(src, grid, t2, step, workers)
    th: dict = {} if face is None else {"cu": t_edge}
    lo, hi, t_si = _modes_midpoint(_valid_sample(src, grid, kcu, face, t2, step, workers))
    th.update(si=t_si, si_level=hi, matrix_level=lo)
    out = np.empty(vol.shape, np.uint8) if out is None else out
    si_kw = dict(t2=t2, lo=lo, hi=hi, t_si=t_si, local_sigma=local_sigma,
                 iterations=iterations, min_si_voxels=min_si_voxels)
    extreme, a, b = _si_pass(src, grid, out, kcu, face, si_kw, workers)
    nz = vol.shape[0]
    col = _collector_z(a, b, kcu, face, t_edge, nz)
    sep = _envelope(extreme, lateral_window(surface_window_um, vs), face or "low", nz)
    if separator:
        for _ in run_blocks(lambda blk: _mark_separator(out, blk, sep, face), grid, workers):
            pass
    params = {"sigma": sigma, "denoise": denoise, "min_si_voxels": min_si_voxels,
              "surface_window_um": surface_window_um, "voxel_size_um": list(vs),
              "local_sigma": local_sigma, "iterations": iterations, "separator": separator,
              "multiotsu": [t1, t2]}
    return PhaseSegmentation(out, th, face, np.asarray(col, float), sep, params)


def _si_halo(local_sigma: float, iterations: int, min_si_voxels: int) -> int:
    """Halo (voxels) that makes the Si mask exact on a block's core: each refinement pass
    widens the dependence by the local window, the opening by 2, the removal of small
    objects by their size; at least the collector profile's lateral Gaussian."""
    return max(gaussian_radius(2.0), int(iterations) * gaussian_radius(local_sigma, 3.0)
               + 2 + max(0, int(min_si_voxels) - 1) + 1)


def _grey_source(vol: Any, sigma: float, denoise: str | None, grid: BlockGrid,
                 workers: int) -> GreySource:
    """The denoised (:func:`anodetwin.segment.preprocess.block_denoiser`: nlmeans takes its
    noise level from the sampling lattice) and smoothed grey values."""
    fn, halo = block_denoiser(vol, denoise, grid, workers)
    return GreySource(vol, sigma, fn, halo, cache=len(grid) == 1)


def _checked_sample(src: GreySource, grid: BlockGrid, step: int, workers: int,
                    name: str = "volume") -> np.ndarray:
    """Smoothed grey values on the sampling lattice, after checking that the volume is
    finite, not empty and not constant (as :func:`check_volume`)."""
    from anodetwin.io.volume import nonfinite_error

    if 0 in src.shape:
        raise ParameterError(f"{name} is empty", "give a volume with voxels")

    def one(b: Block) -> tuple:
        wide = src.wide(b.core)
        v = src.raw(wide)
        raw = v[tuple(slice(c.start - w.start, c.stop - w.start)
                      for c, w in zip(b.core, wide, strict=True))]
        bad = ((int(np.isnan(raw).sum()), int(np.isinf(raw).sum()))
               if raw.dtype.kind == "f" else (0, 0))
        if sum(bad):
            return bad, np.nan, np.nan, np.zeros(0, np.float32)
        s = src.lattice(b.core, step, raw=v)
        return bad, float(raw.min()), float(raw.max()), s.ravel()

    res = gather(grid, one, workers)
    nan, inf = (sum(r[0][i] for r in res) for i in range(2))
    if nan or inf:
        raise nonfinite_error(name, nan, inf)
    lo, hi = min(r[1] for r in res), max(r[2] for r in res)
    if hi <= lo:
        raise ParameterError(f"{name} is constant (value {lo:g}); nothing to segment",
                             "check the file: a reconstruction has contrast")
    return np.concatenate([r[3] for r in res])


def _valid_sample(src: GreySource, grid: BlockGrid, kcu: np.ndarray | None,
                  face: str | None, t2: float, step: int, workers: int) -> np.ndarray:
    """Smoothed grey values of the lattice voxels that may be Si (not copper, not as bright
    as the foil)."""
    def one(b: Block) -> np.ndarray:
        s = src.lattice(b.core, step)
        cu = _copper_box(kcu, face, b.core)[lattice_box(b.core, step)]
        return s[~cu & (s <= t2)] if face is not None else s.ravel()

    return np.concatenate(gather(grid, one, workers)).astype(np.float64)


def _si_block(s: np.ndarray, cu: np.ndarray, face: str | None, kw: dict,
              interior: tuple = ((False, False),) * 3) -> tuple[np.ndarray, tuple]:
    """Si mask of a block with its halo and the box (slices of ``s``) it covers, exact on
    the block's core (``interior``: the sides inside the volume, see
    :func:`_local_midpoint`)."""
    from skimage.morphology import ball, opening, remove_small_objects

    valid = ~cu
    if face is not None:
        valid &= s <= kw["t2"]
    si, box = _local_midpoint(s, s > kw["t_si"], valid, kw["lo"], kw["hi"],
                              kw["local_sigma"], kw["iterations"], interior)
    si = opening(si, ball(1))
    return remove_small_objects(si, max_size=max(0, int(kw["min_si_voxels"]) - 1)), box


def _si_pass(src: GreySource, grid: BlockGrid, out: Any, kcu: np.ndarray | None,
             face: str | None, kw: dict, workers: int) -> tuple:
    """Write copper, Si and CBD+E codes block by block; return each column's Si extreme
    (:func:`_envelope`) and the foil profile values of :func:`_collector_z`."""
    nz, ny, nx = src.shape
    low = face != "high"
    extreme = np.full((ny, nx), -1 if low else _NONE, np.int64)
    a, b_ = np.full((ny, nx), np.nan), np.full((ny, nx), np.nan)

    def one(blk: Block) -> tuple:
        s = src.smoothed(blk.outer)
        cu = _copper_box(kcu, face, blk.outer)
        interior = tuple((o.start > 0, o.stop < n)
                         for o, n in zip(blk.outer, src.shape, strict=True))
        si, box = _si_block(s, cu, face, kw, interior)
        si = si[tuple(slice(i.start - b.start, i.stop - b.start)
                      for i, b in zip(blk.inner, box, strict=True))]
        ph = np.full(blk.core_shape, PHASE["cbd"], np.uint8)
        ph[si] = PHASE["si"]
        ph[cu[blk.inner]] = PHASE["copper"]
        write_region(out, blk.core, ph)
        prof = _profile_columns(s, blk, kcu, face, nz) if face is not None else None
        return column_extreme(si, blk.core[0].start, "low" if low else "high"), prof

    for blk, (e, prof) in run_blocks(one, grid, workers):
        yx = blk.core[1:]
        extreme[yx] = np.maximum(extreme[yx], e) if low else np.minimum(extreme[yx], e)
        if prof is not None:
            a[yx] = np.where(np.isfinite(prof[0]), prof[0], a[yx])
            b_[yx] = np.where(np.isfinite(prof[1]), prof[1], b_[yx])
    return extreme, a, b_


def _mark_separator(out: Any, blk: Block, sep: np.ndarray, face: str | None) -> None:
    """Set the voxels of a block beyond the separator interface (not copper) to separator."""
    ph = np.array(read_region(out, blk.core))
    z = np.arange(blk.core[0].start, blk.core[0].stop, dtype=float)[:, None, None]
    s = sep[blk.core[1], blk.core[2]][None]
    with np.errstate(invalid="ignore"):
        beyond = (z > s) if face != "high" else (z < s)
    beyond &= np.isfinite(s) & (ph != PHASE["copper"])
    if beyond.any():
        ph[beyond] = PHASE["separator"]
        write_region(out, blk.core, ph)
