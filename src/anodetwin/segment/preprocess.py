"""Preprocessing of tomograms before segmentation: denoising and grey-value normalisation
(the alignment of a series on the copper foil is :mod:`anodetwin.segment.alignment`).

* :func:`denoise`: 3x3x3 median (``"median"``) or non-local means (``"nlmeans"``,
  scikit-image, noise level from :func:`noise_sigma`);
* :func:`normalise`: robust linear stretch of the 0.5-99.5 percentiles to [0, 1]
  (``"stretch"``) or histogram equalisation (``"equalise"``; the spelling ``"equalize"``
  is accepted too), as the reference did before segmenting.

Scans larger than memory: :class:`NormalisedVolume` is ``normalise(denoise(volume))`` of a
volume on disk, read box by box. The global statistics come from passes over blocks
(the stretch's percentiles exact order statistics, :mod:`anodetwin.io.blockstats`; the
equalisation's histogram summed over blocks on the same bins), so every box holds the same
float32 values as the whole volume normalised in memory; the denoising of a box reads the
filter's halo around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError

__all__ = ["DENOISERS", "NORMALISATIONS", "EQUALISE_BINS", "STRETCH_PERCENTILES", "denoise",
           "noise_sigma", "normalise", "stretch", "equalise_map", "block_denoiser",
           "PreprocessedVolume", "check_grey_values",
           "value_extent_of"]

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
    return _mad_sigma((v - ndimage.uniform_filter(v, 3)).ravel())


def _mad_sigma(d: np.ndarray) -> float:
    """White-noise sigma from residuals from the 3x3x3 mean (variance 26/27 sigma^2): their
    MAD, scaled."""
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
    method = _check_normalisation(method)
    v = np.asarray(volume, np.float32)
    if method == "stretch":
        lo, hi = np.percentile(v, STRETCH_PERCENTILES)
        return stretch(v, lo, hi)
    from skimage.exposure import equalize_hist

    return equalize_hist(v, nbins=EQUALISE_BINS).astype(np.float32)


#: Percentiles the stretch maps to 0 and 1.
STRETCH_PERCENTILES = (0.5, 99.5)
#: Histogram bins of the equalisation.
EQUALISE_BINS = 4096


def _check_normalisation(method: str) -> str:
    """``"stretch"`` or ``"equalise"`` (``"equalize"`` accepted); raise for anything else."""
    if method in ("equalise", "equalize"):
        return "equalise"
    if method == "stretch":
        return method
    raise ParameterError(f"unknown normalisation '{method}'",
                         f"use one of {', '.join(NORMALISATIONS)}")


def stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Grey values with ``lo`` and ``hi`` mapped linearly to 0 and 1, clipped.

    Parameters
    ----------
    values : numpy.ndarray of float32
        Grey values (any shape).
    lo, hi : numpy.float64
        The grey values mapped to 0 and 1 (the 0.5 and 99.5 percentiles of the volume, as
        ``numpy.percentile`` returns them: the arithmetic is then float64).

    Returns
    -------
    numpy.ndarray of float32
        The stretched values, shape of ``values``.
    """
    return np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)


def equalise_map(values: np.ndarray, centres: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Histogram equalisation of grey values from the volume's histogram, as
    :func:`skimage.exposure.equalize_hist` maps them.

    Parameters
    ----------
    values : numpy.ndarray of float32
        Grey values (any shape).
    centres, cdf : numpy.ndarray of float32, shape (EQUALISE_BINS,)
        Bin centres and cumulative distribution of the volume's histogram.

    Returns
    -------
    numpy.ndarray of float32
        Equalised values in [0, 1], shape of ``values``.
    """
    return np.interp(values.ravel(), centres, cdf).reshape(values.shape).astype(np.float32)


def block_denoiser(volume: Any, method: str | None, blocks: Any = None, workers: int = 1
                   ) -> tuple[Callable[[np.ndarray], np.ndarray] | None, int]:
    """The denoising of :func:`denoise` as a function of one box, and the halo (voxels)
    a box must be read with for it to be exact on the box.

    Parameters
    ----------
    volume : array, Volume or LazyVolume
        The tomogram (z, y, x).
    method : {None, "median", "nlmeans"}
        The denoising (None: none).
    blocks : BlockGrid, optional
        Blocks over which the noise level of ``"nlmeans"`` is taken (default one block).
    workers : int
        Threads of that pass.

    Returns
    -------
    denoiser : callable or None
        ``denoiser(float32 values) -> float32 values``.
    halo : int
        Voxels the denoiser reaches (median 1, non-local means 4).

    Raises
    ------
    ParameterError
        For an unknown method.

    Notes
    -----
    The noise level of ``"nlmeans"`` is :func:`noise_sigma` on the sampling lattice of
    :func:`anodetwin.segment._blockpass.lattice_step` (every voxel of a volume of up to
    2 M voxels, so it is the in-memory level there).
    """
    if not method:
        return None, 0
    if method == "median":
        return (lambda v: denoise(v, "median")), 1
    if method != "nlmeans":
        denoise(np.zeros((1, 1, 1), np.float32), method)  # raises: unknown method
    from anodetwin.io.blocks import BlockGrid, read_region
    from anodetwin.segment._blockpass import gather, lattice_box, lattice_step

    grid = blocks if blocks is not None else BlockGrid(volume.shape)
    shape = tuple(int(n) for n in volume.shape)
    step = lattice_step(shape)

    def residual(b: Any) -> np.ndarray:
        wide = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1))
                     for s, n in zip(b.core, shape, strict=True))
        v = np.asarray(read_region(volume, wide), np.float32)
        d = (v - ndimage.uniform_filter(v, 3))[tuple(slice(c.start - w.start, c.stop - w.start)
                                                     for c, w in zip(b.core, wide, strict=True))]
        return d[lattice_box(b.core, step)].ravel()

    noise = _mad_sigma(np.concatenate(gather(grid, residual, workers)))
    return (lambda v: denoise(v, "nlmeans", noise)), 4


#: Working memory per voxel of a block of the statistics passes (raw values, float32
#: copy, denoised values, float64 bin keys, selection mask; bytes).
STATS_BYTES_PER_VOXEL = 40


class PreprocessedVolume:
    """``normalise(denoise(volume))`` of a volume larger than memory, box by box.

    The statistics of the normalisation (the stretch's 0.5 and 99.5 percentiles, exact
    order statistics; the equalisation's minimum, maximum and 4096-bin histogram) are
    taken over the denoised grey values of all blocks when the view is made; :meth:`region`
    then reads a box with the denoiser's halo, denoises and maps it. Every box holds the
    values of :func:`normalise` of :func:`denoise` of the whole volume, bit for bit (without
    a normalisation: the denoised values; with neither: the grey values as float32). The
    volume is checked first (:func:`check_grey_values`).

    Parameters
    ----------
    volume : numpy.ndarray, Volume, LazyVolume or a view with ``region``
        The tomogram (z, y, x).
    denoise : {None, "median", "nlmeans"}
        Denoising (:func:`denoise`).
    normalise : {None, "stretch", "equalise"}
        The normalisation after it (:func:`normalise`).
    block_shape : int or 3 int, optional
        Blocks of the statistics passes; default: sized for ``memory_limit``, or one block
        without a limit.
    memory_limit : str or int, optional
        Memory ceiling of those passes (e.g. ``"4GB"``).
    workers : int
        Blocks processed at once (threads).
    name : str
        How error messages name the volume.

    Attributes
    ----------
    shape : tuple of int
        (z, y, x) shape, as the volume's.
    dtype : numpy.dtype
        float32.
    voxel_size_um, origin
        The volume's geometry (None where it records none).
    stats : dict
        ``lo``/``hi`` (stretch) or ``min``/``max`` (equalise), grey levels of the denoised
        volume; empty without a normalisation.

    Raises
    ------
    NonFiniteError
        If the volume holds NaN or inf (counted over all blocks).
    ParameterError
        For an empty or constant volume, or an unknown method.
    """

    def __init__(self, volume: Any, denoise: str | None = None, normalise: str | None = None,
                 *, block_shape: Any = None, memory_limit: Any = None, workers: int = 1,
                 name: str = "volume"):
        from anodetwin.io.blocks import BlockGrid, block_shape_for
        from anodetwin.segment._blockpass import GreySource

        self.method = _check_normalisation(normalise) if normalise else None
        self.source = volume
        self.shape = tuple(int(n) for n in volume.shape)
        self.dtype = np.dtype(np.float32)
        self.voxel_size_um = getattr(volume, "voxel_size_um", None)
        self.origin = getattr(volume, "origin", None)
        if block_shape is None and memory_limit is not None:
            block_shape = block_shape_for(self.shape, STATS_BYTES_PER_VOXEL, 4, memory_limit,
                                          workers)
        grid = BlockGrid(self.shape, block_shape)
        check_grey_values(volume, grid, workers, name)
        denoiser, halo = block_denoiser(volume, denoise, grid, workers)
        self._grey = GreySource(volume, 0.0, denoiser, halo)
        self.stats: dict = {}
        if self.method is None:
            return
        extent = value_extent_of(self._grey, grid, workers)
        if self.method == "stretch":
            self._stretch_stats(grid, extent, workers)
        else:
            self._equalise_stats(grid, extent, workers)

    def _stretch_stats(self, grid: Any, extent: tuple, workers: int) -> None:
        from anodetwin.io.blockstats import exact_percentiles

        lo, hi = exact_percentiles(lambda b: self._grey.smoothed(b.core), grid,
                                   STRETCH_PERCENTILES, workers, extent=extent)
        self._lo, self._hi = lo, hi
        self.stats = {"lo": float(lo), "hi": float(hi)}

    def _equalise_stats(self, grid: Any, extent: tuple, workers: int) -> None:
        from anodetwin.io.blocks import run_blocks

        _, vmin, vmax = extent
        rng = (vmin, vmax)  # float32 scalars: numpy bins as for the whole volume
        hist = np.zeros(EQUALISE_BINS, np.int64)
        for _, h in run_blocks(lambda b: np.histogram(self._grey.smoothed(b.core).ravel(),
                                                      EQUALISE_BINS, range=rng)[0],
                               grid, workers):
            hist += h
        edges = np.histogram_bin_edges(np.asarray(rng, np.float32), EQUALISE_BINS, range=rng)
        self._centres = (edges[:-1] + edges[1:]) / 2.0
        cdf = hist.cumsum()
        self._cdf = (cdf / float(cdf[-1])).astype(np.float32)
        self.stats = {"min": float(vmin), "max": float(vmax)}

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The normalisation of denoised float32 grey values (any shape) -> float32."""
        if self.method == "stretch":
            return stretch(values, self._lo, self._hi)
        if self.method == "equalise":
            return equalise_map(values, self._centres, self._cdf)
        return values

    def region(self, zs: slice, ys: slice, xs: slice) -> np.ndarray:
        """Normalised grey values of a box (explicit bounds), float32 (dz, dy, dx)."""
        return self.apply(self._grey.smoothed((zs, ys, xs)))


def value_extent_of(grey: Any, grid: Any, workers: int = 1) -> tuple:
    """Count, minimum and maximum (float32) of the denoised grey values of a
    :class:`~anodetwin.segment._blockpass.GreySource` over the blocks of ``grid``."""
    from anodetwin.io.blockstats import value_extent

    return value_extent(lambda b: grey.smoothed(b.core), grid, workers)


def check_grey_values(volume: Any, grid: Any, workers: int = 1, name: str = "volume") -> None:
    """Check block by block that a volume is segmentable, as
    :func:`anodetwin.segment.phases.check_volume` does in memory.

    Parameters
    ----------
    volume : numpy.ndarray, LazyVolume or a view with ``region``
        The grey values (z, y, x).
    grid : BlockGrid
        The blocks read (their cores).
    workers : int
        Blocks read at once (threads).
    name : str
        How error messages name the volume.

    Raises
    ------
    NonFiniteError
        If it holds NaN or inf (counted over all blocks).
    ParameterError
        If it is empty or constant.
    """
    from anodetwin.io.blocks import read_region, run_blocks
    from anodetwin.io.volume import nonfinite_error

    if 0 in tuple(volume.shape):
        raise ParameterError(f"{name} is empty", "give a volume with voxels")

    def one(b: Any) -> tuple:
        raw = read_region(volume, b.core)
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            return int(np.isnan(raw).sum()), int(np.isinf(raw).sum()), None, None
        return 0, 0, raw.min(), raw.max()

    res = [r for _, r in run_blocks(one, grid, workers)]
    nan, inf = sum(r[0] for r in res), sum(r[1] for r in res)
    if nan or inf:
        raise nonfinite_error(name, nan, inf)
    lo, hi = min(r[2] for r in res), max(r[3] for r in res)
    if not hi > lo:
        raise ParameterError(f"{name} is constant (value {float(lo):g}); nothing to segment",
                             "check the file: a reconstruction has contrast")
