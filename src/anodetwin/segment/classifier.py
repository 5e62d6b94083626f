"""Ilastik-style pixel classification: multi-scale filter features and a random forest.

Method
------
Every voxel is described by a vector of filter responses computed at several Gaussian
scales ``sigma`` (in voxels, :data:`DEFAULT_SIGMAS` are Ilastik's default scales
0.7, 1.0, 1.6, 3.5 and 5.0). For each scale six features are computed from the grey values,
after an affine normalisation by the robust grey range of the volume (its 0.5 and 99.5
percentiles mapped to 0 and 1):

1. Gaussian smoothing (colour / intensity),
2. gradient magnitude of Gaussian (edge),
3. Laplacian of Gaussian (edge),
4.-6. the three eigenvalues of the Hessian of Gaussian, largest first (texture / shape:
   blobs, tubes and sheets),

plus the normalised raw intensity once, i.e. ``1 + 6 * len(sigmas)`` features (31 for the
default scales). All derivatives are Gaussian derivatives (convolution with the derivatives
of the sampled Gaussian, truncated at 4 sigma, reflecting borders), as in Ilastik/vigra.
The first and second derivatives share their separable 1D passes, which makes the features
about twice as cheap as calling :func:`scipy.ndimage.gaussian_filter`,
:func:`scipy.ndimage.gaussian_gradient_magnitude`, :func:`scipy.ndimage.gaussian_laplace`
and ``gaussian_filter(..., order=...)`` for each Hessian element one after the other; the
results agree with those functions to float32 rounding. (:func:`skimage.feature.hessian_matrix`
is not used: its Gaussian-derivative variant truncates its kernels at 8 to 100 sigma, and its
finite-difference variant reaches two slices beyond the Gaussian, so either would need a
wider halo.) The Hessian eigenvalues come from the closed-form solution for symmetric 3x3
matrices, in the order of :func:`skimage.feature.hessian_matrix_eigvals`.

A :class:`sklearn.ensemble.RandomForestClassifier` is trained on the feature vectors of a
few annotated slices (the reference experiment used 12 annotated slices per model) and then
labels every voxel of a volume with the phase codes of :data:`anodetwin.phases.PHASE`.

Why slabs with a halo
---------------------
A tomogram of 2048^3 voxels with 31 float32 features per voxel would need 1 TiB of memory.
Features are therefore computed for one slab of ``z`` slices at a time. Every filter reaches
at most ``ceil(4 * max(sigmas))`` slices (the kernel radius) along ``z``, so a slab is filtered
together with that many extra slices (the halo) on either side, or up to the volume's border,
where the volume's own border handling applies. The features of a slab are then bit for bit
those of the whole-volume computation, and predictions do not depend on the slab size.
Training computes features only for the slabs that contain annotated slices.

A slab is still a whole (y, x) plane per slice: at 2048^2 that is 0.5 GB of features per
slice. :meth:`PixelClassifier.predict` with ``memory_limit`` (or ``out`` / ``block_shape``)
therefore also works in 3-D blocks read with the same halo on every side
(:func:`box_features`), writing each block's phase codes into ``out`` (an HDF5 dataset), in
memory that follows the block size; the phase codes are the same, bit for bit.

Quick use::

    from anodetwin.segment.classifier import train_classifier, load_classifier

    clf = train_classifier(tomogram, truth, slices=range(5, 199, 17))   # 12 slices
    labels = clf.predict(other_tomogram)           # uint8 phase codes, slab by slab
    clf.save("si_model.joblib")
    clf = load_classifier("si_model.joblib")

Models are pickles (joblib): load only files from a trusted source.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from anodetwin.errors import (CorruptFileError, InputNotFoundError, ParameterError,
                              ShapeMismatchError)
from anodetwin.io import atomic_path, make_provenance, require_3d, require_finite
from anodetwin.log import get_logger, progress_bar
from anodetwin.phases import PHASE_CODES

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier

__all__ = [
    "UNLABELLED",
    "KNOWN_CLASSES",
    "DEFAULT_SIGMAS",
    "FORMAT",
    "PixelClassifier",
    "pixel_features",
    "box_features",
    "train_classifier",
    "load_classifier",
]

#: Annotation value meaning "not annotated".
UNLABELLED = 255
#: Phase codes a classifier may predict (:data:`anodetwin.phases.PHASE_CODES`).
KNOWN_CLASSES = PHASE_CODES
#: Gaussian scales of the features (voxels): Ilastik's default scales.
DEFAULT_SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0)
#: Value of the ``"format"`` key of a saved model.
FORMAT = "anodetwin-pixel-classifier"
FORMAT_VERSION = 1

#: Gaussian kernels are truncated at this many standard deviations.
_TRUNCATE = 4.0
#: Robust grey range: these percentiles of the volume are mapped to 0 and 1.
_PERCENTILES = (0.5, 99.5)
#: Percentiles are computed on a regular subsample of at most this many voxels.
_PERCENTILE_MAX_VOXELS = 1 << 24
#: Longest span of annotated slices (voxels along z) that training filters as one slab.
_TRAIN_SLAB = 64
#: Minimum number of training voxels in a leaf of the random forest.
_MIN_SAMPLES_LEAF = 2
#: Working memory of the block route per voxel of a block with its halo (bytes): grey
#: values and filter passes, plus this much per feature of the block's core.
BYTES_PER_VOXEL_BASE = 48
BYTES_PER_FEATURE = 4
#: Largest block core side (voxels) of the block route: the 20-voxel halo of the default
#: scales then adds 1.8x the core's voxels; larger blocks only hold more memory.
MAX_BLOCK_SIDE = 128
#: Voxels handed to the forest at a time (its per-tree work arrays are this many rows).
_PREDICT_ROWS = 1 << 16

_LOG = get_logger("segment")


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------

def _as_volume(volume: Any, name: str = "volume") -> Any:
    """Array-like volume (NumPy array, memory map, HDF5 dataset, or a lazily read view with
    ``region``, e.g. :class:`~anodetwin.io.LazyVolume`) checked to be 3D."""
    if not (hasattr(volume, "shape") and hasattr(volume, "dtype")
            and (hasattr(volume, "__getitem__") or hasattr(volume, "region"))):
        volume = np.asarray(getattr(volume, "data", volume))
    require_3d(tuple(volume.shape), name)
    return volume


def _read(volume: Any, box: tuple) -> np.ndarray:
    """The voxels of a box (explicit bounds) of an array-like or lazily read volume."""
    from anodetwin.io.blocks import read_region

    return np.asarray(read_region(volume, box))


def _plane(volume: Any, z: int) -> np.ndarray:
    """Slice ``z`` (y, x) of an array-like or lazily read volume."""
    _, ny, nx = (int(n) for n in volume.shape)
    return _read(volume, (slice(z, z + 1), slice(0, ny), slice(0, nx)))[0]


def _check_sigmas(sigmas: Iterable[float]) -> tuple[float, ...]:
    try:
        sig = tuple(float(s) for s in sigmas)
    except (TypeError, ValueError):
        raise ParameterError(f"sigmas {sigmas!r} are not numbers",
                             "give Gaussian scales in voxels, e.g. 0.7,1.0,1.6,3.5,5.0") from None
    if not sig or not all(math.isfinite(s) and s > 0 for s in sig):
        raise ParameterError(f"sigmas {list(sig)} must be a non-empty list of positive scales",
                             "give Gaussian scales in voxels, e.g. 0.7,1.0,1.6,3.5,5.0")
    return sig


def _halo(sigma: float) -> int:
    """Slices a Gaussian (derivative) filter of scale ``sigma`` reaches along z (voxels)."""
    return int(math.ceil(_TRUNCATE * sigma))


def _feature_names(sigmas: Sequence[float] = DEFAULT_SIGMAS) -> list[str]:
    """Names of the features of :func:`pixel_features`, in order."""
    names = ["intensity"]
    for s in _check_sigmas(sigmas):
        names += [f"{kind}_s{s:g}" for kind in
                  ("gaussian", "gradient_magnitude", "laplacian", "hessian_eig1", "hessian_eig2",
                   "hessian_eig3")]
    return names


def _robust_range(volume: Any) -> tuple[float, float]:
    """0.5 and 99.5 percentiles of ``volume`` (min/max if they coincide) on the lattice of
    every ``step``-th voxel (at most :data:`_PERCENTILE_MAX_VOXELS` voxels); raise if
    constant."""
    shape = tuple(volume.shape)
    n = math.prod(shape)
    step = max(1, math.ceil((n / _PERCENTILE_MAX_VOXELS) ** (1 / 3)))
    if isinstance(volume, np.ndarray):
        sample = volume[::step, ::step, ::step]
    else:  # one plane at a time: a lazily read volume is never read whole
        sample = np.stack([_plane(volume, z)[::step, ::step]
                           for z in range(0, shape[0], step)])
    require_finite(sample, "volume")
    lo, hi = (float(v) for v in np.percentile(sample, _PERCENTILES))
    if not hi > lo:  # more than 99 % of the voxels share one grey value
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        raise ParameterError(f"volume is constant (value {lo:g}); nothing to segment",
                             "give the tomogram itself, not a mask or an empty volume")
    return lo, hi


def _check_scale(scale: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ParameterError(f"scale {scale!r} is not a pair of grey values",
                             "give scale=(lo, hi) with lo < hi") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ParameterError(f"scale ({lo:g}, {hi:g}) is not a grey range with lo < hi",
                             "give scale=(lo, hi) with lo < hi, or leave it out")
    return lo, hi


def _check_z_range(z_range: Sequence[int] | None, nz: int) -> tuple[int, int]:
    if z_range is None:
        return 0, nz
    try:
        z0, z1 = (int(v) for v in z_range)
    except (TypeError, ValueError):
        raise ParameterError(f"z_range {z_range!r} is not a pair of slice indices",
                             f"give z_range=(z0, z1) with 0 <= z0 < z1 <= {nz}") from None
    if not 0 <= z0 < z1 <= nz:
        raise ParameterError(f"z_range ({z0}, {z1}) is outside the volume's {nz} slices",
                             f"give z_range=(z0, z1) with 0 <= z0 < z1 <= {nz}")
    return z0, z1


def _scale_features(data: np.ndarray, sigma: float, core: Any, out: np.ndarray) -> None:
    """Write the six features of scale ``sigma`` of ``data[core]`` to ``out`` (z, y, x, 6).

    ``core`` is a z index (an array of slices) or a tuple of z, y and x indices. The
    separable passes run along x, then y, then z, each result cropped to the core along
    its axis before the next pass (1-D filters of the lines that are kept, so the values
    do not change), which keeps memory at a few block-sized arrays.
    """
    cz, cy, cx = core if isinstance(core, tuple) else (core, slice(None), slice(None))

    def g1(a: np.ndarray, axis: int, order: int) -> np.ndarray:
        return ndi.gaussian_filter1d(a, sigma, axis=axis, order=order, output=np.float32,
                                     mode="reflect", truncate=_TRUNCATE)

    d: dict[tuple[int, int, int], np.ndarray] = {}  # (order z, order y, order x) -> core
    for ox in range(3):
        ax = g1(data, 2, ox)[:, :, cx]
        for oy in range(3 - ox):
            axy = g1(ax, 1, oy)[:, cy]
            for oz in range(3 - ox - oy):
                d[(oz, oy, ox)] = g1(axy, 0, oz)[cz]
            del axy
        del ax
    out[..., 0] = d[(0, 0, 0)]
    gz, gy, gx = d[(1, 0, 0)], d[(0, 1, 0)], d[(0, 0, 1)]
    out[..., 1] = np.sqrt(gz * gz + gy * gy + gx * gx)
    hzz, hyy, hxx = d[(2, 0, 0)], d[(0, 2, 0)], d[(0, 0, 2)]
    out[..., 2] = hzz + hyy + hxx
    hzy, hzx, hyx = d[(1, 1, 0)], d[(1, 0, 1)], d[(0, 1, 1)]
    _sym3_eigvals(hzz, hyy, hxx, hzy, hzx, hyx, out[..., 3:6])


def _sym3_eigvals(a00: np.ndarray, a11: np.ndarray, a22: np.ndarray, a01: np.ndarray,
                  a02: np.ndarray, a12: np.ndarray, out: np.ndarray) -> None:
    """Eigenvalues (largest first) of symmetric 3x3 matrices, written to ``out`` (..., 3).

    Closed form (trigonometric solution of the characteristic cubic), evaluated in float64
    one z slice at a time: an order of magnitude faster than :func:`numpy.linalg.eigvalsh`
    on a matrix stack and, being voxel-wise, independent of how a volume is split into slabs.
    """
    for k in range(a00.shape[0]):
        m00, m11, m22, m01, m02, m12 = (np.asarray(h[k], dtype=np.float64)
                                        for h in (a00, a11, a22, a01, a02, a12))
        q = (m00 + m11 + m22) / 3.0
        b00, b11, b22 = m00 - q, m11 - q, m22 - q
        off = m01 * m01 + m02 * m02 + m12 * m12
        p = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off) / 6.0)
        # det(A - q I) / (2 p^3), clipped against rounding
        det = (b00 * (b11 * b22 - m12 * m12) - m01 * (m01 * b22 - m12 * m02)
               + m02 * (m01 * m12 - b11 * m02))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(p > 0, det / (2.0 * p * p * p), 0.0)
        phi = np.arccos(np.clip(r, -1.0, 1.0)) / 3.0
        e1 = q + 2.0 * p * np.cos(phi)
        e3 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
        out[k, ..., 0] = e1
        out[k, ..., 1] = 3.0 * q - e1 - e3
        out[k, ..., 2] = e3


def pixel_features(volume: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                   z_range: Sequence[int] | None = None,
                   scale: Sequence[float] | None = None) -> np.ndarray:
    """Multi-scale filter features of the slices ``volume[z0:z1]``.

    Parameters
    ----------
    volume : array_like (z, y, x)
        Grey-value volume (any real dtype; NumPy array, memory map, HDF5 dataset or a
        lazily read volume).
    sigmas : sequence of float
        Gaussian scales (voxels).
    z_range : (int, int), optional
        Slices ``z0:z1`` whose features are wanted; default all. They are computed with a
        halo of ``ceil(4 * max(sigmas))`` slices on either side (clipped to the volume), so
        that they equal the rows of the whole-volume features exactly.
    scale : (float, float), optional
        Grey values ``(lo, hi)`` mapped to 0 and 1 before filtering. Default: the 0.5 and
        99.5 percentiles of ``volume``. Pass the same scale for every slab of a volume (a
        :class:`PixelClassifier` passes that of its training volume).

    Returns
    -------
    numpy.ndarray
        float32 array (z1 - z0, y, x, F) with ``F = 1 + 6 * len(sigmas)``: the normalised
        intensity, then for each sigma the Gaussian smoothing, gradient magnitude of
        Gaussian, Laplacian of Gaussian and the three Hessian-of-Gaussian eigenvalues
        (largest first). Derivatives are per voxel (per voxel squared for the Laplacian and
        Hessian) of the normalised intensity.

    Raises
    ------
    DimensionError
        If ``volume`` is not 3D.
    ParameterError
        If ``sigmas``, ``z_range`` or ``scale`` are invalid, or ``scale`` is left out and the
        volume is constant.
    NonFiniteError
        If the volume holds NaN or inf.

    Notes
    -----
    Memory: about ``16 * (z1 - z0 + 2 * halo) * y * x`` bytes of work arrays plus the
    result, ``4 * (z1 - z0) * y * x * F`` bytes.
    """
    volume = _as_volume(volume)
    sig = _check_sigmas(sigmas)
    z0, z1 = _check_z_range(z_range, int(volume.shape[0]))
    lo, hi = _robust_range(volume) if scale is None else _check_scale(scale)
    return _features(volume, sig, (lo, hi), np.arange(z0, z1))


def _features(volume: Any, sigmas: tuple[float, ...], scale: tuple[float, float],
              zs: np.ndarray) -> np.ndarray:
    """Features (len(zs), y, x, F) of the sorted slices ``zs``, filtered as one slab.

    The slab spans ``zs[0]:zs[-1] + 1`` plus the halo; only the slices in ``zs`` are kept,
    so training can take a few annotated slices out of a long slab.
    """
    nz = int(volume.shape[0])
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    halo = _halo(max(sigmas))
    h0, h1 = max(0, z0 - halo), min(nz, z1 + halo)
    raw = _read(volume, (slice(h0, h1), slice(0, int(volume.shape[1])),
                         slice(0, int(volume.shape[2]))))
    data = _scaled(raw, scale)
    del raw
    feats = np.empty((len(zs),) + data.shape[1:] + (1 + 6 * len(sigmas),), dtype=np.float32)
    feats[..., 0] = data[zs - h0]
    for i, s in enumerate(sigmas):
        # only the slices this scale's kernels reach: cheaper for the small scales
        a = max(h0, z0 - _halo(s))
        b = min(h1, z1 + _halo(s))
        _scale_features(data[a - h0:b - h0], s, zs - a, feats[..., 1 + 6 * i:7 + 6 * i])
    return feats


def _scaled(raw: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Grey values with ``scale`` = (lo, hi) mapped to 0 and 1 (float32); NaN and inf
    refused."""
    require_finite(raw, "volume")
    lo, hi = scale
    return (raw.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)


def box_features(raw: np.ndarray, inner: tuple, sigmas: Sequence[float],
                 scale: Sequence[float]) -> np.ndarray:
    """Features (:func:`pixel_features`) of the core of a box read with its halo.

    Parameters
    ----------
    raw : numpy.ndarray (z, y, x)
        Grey values of the box: a block's core grown by ``ceil(4 * max(sigmas))`` voxels on
        every side, clipped at the volume's faces (:attr:`anodetwin.io.blocks.Block.outer`).
    inner : tuple of 3 slice
        The core in coordinates of ``raw`` (:attr:`anodetwin.io.blocks.Block.inner`).
    sigmas : sequence of float
        Gaussian scales (voxels).
    scale : (float, float)
        Grey values mapped to 0 and 1 (a classifier's :attr:`PixelClassifier.scale`).

    Returns
    -------
    numpy.ndarray
        float32 (cz, cy, cx, 1 + 6 * len(sigmas)), the core's shape: on every core voxel
        the features of the whole volume, bit for bit. Where the halo is inside the volume
        the truncated kernels reach only the halo; where it is clipped at a face, the face
        of the box is the volume's and the reflection is the same.

    Raises
    ------
    NonFiniteError
        If the grey values hold NaN or inf.
    """
    sig = _check_sigmas(sigmas)
    data = _scaled(raw, _check_scale(scale))
    cshape = tuple(c.stop - c.start for c in inner)
    feats = np.empty(cshape + (1 + 6 * len(sig),), dtype=np.float32)
    feats[..., 0] = data[inner]
    for i, s in enumerate(sig):
        # only the voxels this scale's kernels reach: cheaper for the small scales
        h = _halo(s)
        sub = tuple(slice(max(0, c.start - h), min(n, c.stop + h))
                    for c, n in zip(inner, data.shape, strict=True))
        core = tuple(slice(c.start - b.start, c.stop - b.start)
                     for c, b in zip(inner, sub, strict=True))
        _scale_features(data[sub], s, core, feats[..., 1 + 6 * i:7 + 6 * i])
    return feats


# --------------------------------------------------------------------------------------------
# classifier
# --------------------------------------------------------------------------------------------

def _check_slab(slab: int) -> int:
    if isinstance(slab, bool) or not isinstance(slab, (int, np.integer)) or slab < 1:
        raise ParameterError(f"slab {slab!r} is not a positive number of slices",
                             "give slab >= 1 (e.g. 32; smaller needs less memory)")
    return int(slab)


@dataclass
class PixelClassifier:
    """A trained pixel classifier: filter scales, grey scaling and random forest.

    Attributes
    ----------
    classes : tuple of int
        Phase codes the forest predicts (:data:`anodetwin.phases.PHASE` values).
    sigmas : tuple of float
        Gaussian scales of the features (voxels).
    forest : sklearn.ensemble.RandomForestClassifier
        The trained forest.
    scale : (float, float)
        Grey range ``(lo, hi)`` of the training volume (0.5 and 99.5 percentiles), used to
        normalise every volume the model classifies, so the model suits tomograms with the
        grey calibration of the training volume.
    params : dict
        Training parameters and statistics (annotated slices, annotated and sampled voxels
        per class, forest settings, feature names).
    """

    classes: tuple[int, ...]
    sigmas: tuple[float, ...]
    forest: RandomForestClassifier
    scale: tuple[float, float]
    params: dict = field(default_factory=dict)

    @property
    def halo(self) -> int:
        """Slices filtered on either side of a slab (voxels)."""
        return _halo(max(self.sigmas))

    def _slab_features(self, volume: Any, z0: int, z1: int) -> np.ndarray:
        self._check_n_features()
        feats = pixel_features(volume, self.sigmas, (z0, z1), self.scale)
        return feats.reshape(-1, feats.shape[-1])

    def _forest_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities with the trees summed in one fixed order: threads would add
        them in completion order, and the rounding could flip a tie between two classes,
        so predictions are single-threaded and reproducible whatever ``n_jobs`` says."""
        n_jobs = self.forest.n_jobs
        self.forest.n_jobs = 1
        try:
            return self.forest.predict_proba(x)
        finally:
            self.forest.n_jobs = n_jobs

    def _run(self, volume: Any, slab: int, progress: bool, proba: bool) -> np.ndarray:
        volume = _as_volume(volume)
        slab = _check_slab(slab)
        nz, ny, nx = (int(n) for n in volume.shape)
        if proba:
            out = np.empty((nz, ny, nx, len(self.classes)), dtype=np.float32)
        else:
            out = np.empty((nz, ny, nx), dtype=np.uint8)
        bytes_per_slice = ny * nx * np.dtype(volume.dtype).itemsize
        with progress_bar("pixel classification", nz * bytes_per_slice, enabled=progress,
                          min_total=0) as advance:
            for z0 in range(0, nz, slab):
                z1 = min(nz, z0 + slab)
                x = self._slab_features(volume, z0, z1)
                p = self._forest_proba(x)
                if proba:
                    out[z0:z1] = p.reshape(z1 - z0, ny, nx, -1)
                else:
                    out[z0:z1] = self.forest.classes_.take(np.argmax(p, axis=1)).reshape(
                        z1 - z0, ny, nx)
                del x
                advance((z1 - z0) * bytes_per_slice)
        return out

    def predict(self, volume: Any, slab: int = 32, progress: bool = True, *,
                out: Any = None, block_shape: Any = None, memory_limit: Any = None,
                workers: int = 1) -> Any:
        """Label every voxel of ``volume`` with a phase code.

        Without ``out``, ``block_shape`` and ``memory_limit`` the volume is classified in
        z slabs of whole (y, x) planes; with any of them, in 3-D blocks, each read with a
        halo of :attr:`halo` voxels on every side (:func:`box_features`) and written into
        ``out`` block by block, so memory follows the block size, not the volume's. The
        phase codes are the same, bit for bit, on either route and for any slab or block
        size and number of workers: the features of a voxel are those of the whole volume
        and the forest classifies each voxel on its own.

        Parameters
        ----------
        volume : array_like (z, y, x)
            Grey-value volume of any real dtype, with the grey calibration of the training
            volume (NumPy array, memory map, HDF5 dataset, or a lazily read volume such as
            :class:`~anodetwin.io.LazyVolume`).
        slab : int
            Slices classified at a time on the slab route (voxels along z). The result does
            not depend on it; memory grows with ``(slab + 2 * halo) * y * x``.
        progress : bool
            Show a progress bar (when logging is configured).
        out : array-like, optional
            Where to write the phase codes (a uint8 array or an HDF5/Zarr dataset of the
            volume's shape), block by block; default a new array.
        block_shape : int or 3 int, optional
            Core size of the blocks; default: sized for ``memory_limit``.
        memory_limit : str or int, optional
            Memory ceiling of the block route (default ``"4GB"`` there).
        workers : int
            Blocks classified at once (threads) on the block route.

        Returns
        -------
        numpy.ndarray or array-like
            uint8 (z, y, x) phase codes, values from :attr:`classes` (``out`` when given).

        Raises
        ------
        DimensionError
            If ``volume`` is not 3D.
        NonFiniteError
            If the volume holds NaN or inf.
        ParameterError
            If ``memory_limit`` leaves no room for a block.
        """
        if out is None and block_shape is None and memory_limit is None:
            return self._run(volume, slab, progress, proba=False)
        return self._predict_blocks(volume, out, block_shape, memory_limit, workers, progress)

    def block_shape_for(self, shape: Any, memory_limit: Any = None, workers: int = 1
                        ) -> tuple[int, int, int]:
        """Core shape of the blocks of the block route for a volume of ``shape`` within
        ``memory_limit`` (default ``"4GB"``) on ``workers`` threads."""
        from anodetwin.io.blocks import DEFAULT_MEMORY_LIMIT, block_shape_for

        per_voxel = BYTES_PER_VOXEL_BASE + BYTES_PER_FEATURE * (1 + 6 * len(self.sigmas))
        return block_shape_for(shape, per_voxel, self.halo,
                               memory_limit or DEFAULT_MEMORY_LIMIT, workers,
                               max_side=MAX_BLOCK_SIDE)

    def _predict_blocks(self, volume: Any, out: Any, block_shape: Any, memory_limit: Any,
                        workers: int, progress: bool) -> Any:
        """The block route of :meth:`predict`."""
        from anodetwin.io.blocks import BlockGrid, read_region, run_blocks, write_region

        volume = _as_volume(volume)
        shape = tuple(int(n) for n in volume.shape)
        self._check_n_features()
        if block_shape is None:
            block_shape = self.block_shape_for(shape, memory_limit, workers)
        grid = BlockGrid(shape, block_shape, self.halo)
        out = np.empty(shape, np.uint8) if out is None else out

        def one(blk: Any) -> None:
            feats = box_features(read_region(volume, blk.outer), blk.inner, self.sigmas,
                                 self.scale)
            x = feats.reshape(-1, feats.shape[-1])
            labels = np.empty(len(x), np.uint8)
            for i in range(0, len(x), _PREDICT_ROWS):  # the forest's work arrays stay small
                p = self.forest.predict_proba(x[i:i + _PREDICT_ROWS])
                labels[i:i + _PREDICT_ROWS] = self.forest.classes_.take(np.argmax(p, axis=1))
            del feats, x
            write_region(out, blk.core, labels.reshape(blk.core_shape))

        n_jobs = self.forest.n_jobs
        self.forest.n_jobs = 1  # trees summed in one order (see _forest_proba)
        try:
            with progress_bar("pixel classification", float(np.prod(shape)),
                              enabled=progress, min_total=0) as advance:
                for _ in run_blocks(one, grid, workers, progress=advance):
                    pass
        finally:
            self.forest.n_jobs = n_jobs
        return out

    def _check_n_features(self) -> None:
        """Raise if the forest expects another number of features than the scales give."""
        n = 1 + 6 * len(self.sigmas)
        n_expected = getattr(self.forest, "n_features_in_", n)
        if n != n_expected:
            raise CorruptFileError(
                f"classifier has {len(self.sigmas)} scales ({n} features) but its "
                f"forest expects {n_expected} features", "retrain the model")

    def predict_proba(self, volume: Any, slab: int = 32) -> np.ndarray:
        """Class probabilities of every voxel of ``volume``.

        Parameters
        ----------
        volume : array_like (z, y, x)
            Grey-value volume (see :meth:`predict`).
        slab : int
            Slices classified at a time (voxels along z); does not change the result.

        Returns
        -------
        numpy.ndarray
            float32 (z, y, x, n_classes); the last axis follows :attr:`classes`.
        """
        return self._run(volume, slab, False, proba=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model atomically (joblib).

        The file holds a dict with ``format`` (:data:`FORMAT`), ``format_version``,
        ``classes``, ``sigmas``, ``scale``, ``params``, ``forest`` and ``provenance``.

        Parameters
        ----------
        path : path
            The model file (e.g. ``model.joblib``).

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        import joblib
        import sklearn

        path = Path(path)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "classes": [int(c) for c in self.classes],
            "sigmas": [float(s) for s in self.sigmas],
            "scale": [float(v) for v in self.scale],
            "params": self.params,
            "forest": self.forest,
            "sklearn_version": sklearn.__version__,
            "provenance": make_provenance("segment-train", [], self.params),
        }
        with atomic_path(path) as tmp:
            joblib.dump(payload, tmp, compress=3)
        return path


def load_classifier(path: str | os.PathLike) -> PixelClassifier:
    """Read a model written by :meth:`PixelClassifier.save`.

    Parameters
    ----------
    path : path-like
        The ``.joblib`` model file (a pickle: load only trusted files).

    Returns
    -------
    PixelClassifier

    Raises
    ------
    InputNotFoundError
        If ``path`` does not exist.
    CorruptFileError
        If ``path`` is not a readable anodetwin pixel classifier.
    """
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    path = Path(path)
    fix = "give a model written by PixelClassifier.save (segment-train)"
    if not path.exists():
        raise InputNotFoundError(path, "pixel classifier")
    try:
        payload = joblib.load(path)
    except Exception as exc:  # unpickling fails in many ways (EOF, zlib, pickle, ...)
        why = f"{type(exc).__name__}: {exc}"
        raise CorruptFileError(
            f"cannot read pixel classifier '{path}' ({why[:80]})", fix) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CorruptFileError(f"'{path}' is not an {FORMAT} file", fix)
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CorruptFileError(
            f"pixel classifier '{path}' has format version {version!r}, this version reads "
            f"up to {FORMAT_VERSION}", "update anodetwin or retrain the model")
    try:
        classes = tuple(int(c) for c in payload["classes"])
        sigmas = _check_sigmas(payload["sigmas"])
        scale = _check_scale(payload["scale"])
        forest = payload["forest"]
        params = dict(payload.get("params") or {})
    except (KeyError, TypeError, ValueError, ParameterError) as exc:
        raise CorruptFileError(f"pixel classifier '{path}' is incomplete ({exc})", fix) from exc
    if not isinstance(forest, RandomForestClassifier) or not hasattr(forest, "classes_"):
        raise CorruptFileError(f"pixel classifier '{path}' holds no trained random forest", fix)
    if tuple(int(c) for c in forest.classes_) != classes:
        raise CorruptFileError(
            f"pixel classifier '{path}' lists classes {list(classes)} but its forest predicts "
            f"{[int(c) for c in forest.classes_]}", fix)
    return PixelClassifier(classes=classes, sigmas=sigmas, forest=forest, scale=scale,
                           params=params)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

def _check_positive_int(value: Any, name: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name} {value!r} is not a positive integer", fix)
    return int(value)


def _check_slices(slices: Iterable[int], nz: int) -> list[int]:
    try:
        raw = list(slices)
    except TypeError:
        raise ParameterError(f"slices {slices!r} is not a list of slice indices",
                             f"give z indices between 0 and {nz - 1}") from None
    bad = [s for s in raw if isinstance(s, bool) or not isinstance(s, (int, np.integer))]
    if bad:
        raise ParameterError(f"slices contain non-integer values {bad[:10]}",
                             f"give z indices between 0 and {nz - 1}")
    out = sorted({int(s) for s in raw})
    if not out:
        raise ParameterError("slices is empty", f"give z indices between 0 and {nz - 1}")
    outside = [s for s in out if not 0 <= s < nz]
    if outside:
        raise ParameterError(
            f"slices {outside[:10]}{' ...' if len(outside) > 10 else ''} are outside the "
            f"volume's {nz} slices", f"give z indices between 0 and {nz - 1}")
    return out


def _format_values(values: Iterable[Any]) -> str:
    vals = sorted(values)
    shown = [int(v) if float(v).is_integer() else float(v) for v in vals[:10]]
    return str(shown)[:-1] + (", ...]" if len(vals) > 10 else "]")


def _scan_annotations(annotations: Any, zs: Iterable[int]) -> tuple[list[int], np.ndarray]:
    """Validate the annotation values of slices ``zs``; annotated slices and counts per class.

    Returns the slices holding annotated voxels and their voxel counts per class,
    an int64 array (n_slices, len(KNOWN_CLASSES)).
    """
    allowed = set(KNOWN_CLASSES) | {UNLABELLED}
    unknown: set = set()
    annotated: list[int] = []
    counts: list[np.ndarray] = []
    for z in zs:
        a = _plane(annotations, z)
        values = np.unique(a)
        extra = {v for v in values.tolist() if v not in allowed}
        if extra:
            unknown |= extra
            continue
        if unknown:
            continue
        c = np.bincount(a.astype(np.uint8, copy=False).ravel(),
                        minlength=256)[list(KNOWN_CLASSES)]
        if c.any():
            annotated.append(int(z))
            counts.append(c.astype(np.int64))
    if unknown:
        raise ParameterError(
            f"annotations contain unknown classes {_format_values(unknown)}",
            f"use phase codes {KNOWN_CLASSES[0]}-{KNOWN_CLASSES[-1]} and {UNLABELLED} for "
            "unlabelled")
    return annotated, (np.array(counts) if counts else np.zeros((0, len(KNOWN_CLASSES)),
                                                                  np.int64))


def _slab_groups(zs: Sequence[int], halo: int, max_len: int) -> list[list[int]]:
    """Group sorted slices into slabs: neighbours share a slab if that is cheaper than two halos."""
    groups: list[list[int]] = []
    for z in zs:
        if groups and z - groups[-1][-1] - 1 < 2 * halo and z - groups[-1][0] < max_len:
            groups[-1].append(z)
        else:
            groups.append([z])
    return groups


def _check_training_grid(volume: Any, annotations: Any) -> tuple[Any, Any]:
    """The training volume (3D array-like) and its annotations, checked to share a shape."""
    volume = _as_volume(volume)
    if not (hasattr(annotations, "shape")
            and (hasattr(annotations, "__getitem__") or hasattr(annotations, "region"))):
        annotations = np.asarray(getattr(annotations, "data", annotations))
    if tuple(annotations.shape) != tuple(volume.shape):
        raise ShapeMismatchError(
            f"annotations have shape {tuple(annotations.shape)} but the volume has shape "
            f"{tuple(volume.shape)}",
            "give annotations on the grid of the volume (a phase code per voxel, 255 where "
            "not annotated)")
    return volume, annotations


def _annotated_classes(annotations: Any, chosen: Iterable[int], where: str
                       ) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Annotated slices among ``chosen``, their voxel counts per class (n_slices,
    len(KNOWN_CLASSES)) and the totals per class; at least two classes must be annotated
    (``where`` names the annotations in the error)."""
    zs, counts = _scan_annotations(annotations, chosen)
    totals = counts.sum(axis=0) if len(zs) else np.zeros(len(KNOWN_CLASSES), np.int64)
    if totals.sum() == 0:
        raise ParameterError(f"{where} hold no annotated voxels",
                             "annotate voxels of at least two phases (255 means unlabelled)")
    present = [c for c, n in zip(KNOWN_CLASSES, totals, strict=True) if n > 0]
    if len(present) < 2:
        raise ParameterError(f"{where} hold only class {present[0]}",
                             "annotate voxels of at least two phases")
    return zs, counts, totals


def _draw_training_ranks(totals: np.ndarray, max_samples_per_class: int, seed: int
                         ) -> dict[int, np.ndarray]:
    """Training voxels of each annotated class as sorted ranks within the class (slices in
    z order, C order within a slice): all of them, or ``max_samples_per_class`` drawn with
    ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    ranks: dict[int, np.ndarray] = {}
    for k, c in enumerate(KNOWN_CLASSES):
        n = int(totals[k])
        if n == 0:
            continue
        if n <= max_samples_per_class:
            ranks[c] = np.arange(n, dtype=np.int64)
        else:
            ranks[c] = np.sort(rng.choice(n, size=max_samples_per_class, replace=False))
    return ranks


def _training_samples(volume: Any, annotations: Any, zs: list[int], counts: np.ndarray,
                      ranks: dict[int, np.ndarray], sig: tuple[float, ...],
                      scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors (n, F) and classes (n,) of the drawn training voxels, computing the
    features slab by slab around the annotated slices."""
    offsets = np.vstack([np.zeros(len(KNOWN_CLASSES), np.int64), np.cumsum(counts, axis=0)])
    halo = _halo(max(sig))
    row = {z: i for i, z in enumerate(zs)}
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for group in _slab_groups(zs, halo, _TRAIN_SLAB):
        feats = _features(volume, sig, scale, np.asarray(group))
        for i, z in enumerate(group):
            a = _plane(annotations, z).ravel()
            f = feats[i].reshape(-1, feats.shape[-1])
            for k, c in enumerate(KNOWN_CLASSES):
                if c not in ranks or counts[row[z], k] == 0:
                    continue
                off = offsets[row[z], k]
                r = ranks[c]
                sel = r[np.searchsorted(r, off):np.searchsorted(r, off + counts[row[z], k])]
                if sel.size:
                    pos = np.flatnonzero(a == c)[sel - off]
                    xs.append(f[pos])
                    ys.append(np.full(sel.size, c, dtype=np.uint8))
        del feats
    return np.concatenate(xs), np.concatenate(ys)


def _training_record(forest: RandomForestClassifier, max_samples_per_class: int, seed: int,
                     zs: list[int], totals: np.ndarray, ranks: dict[int, np.ndarray],
                     volume: Any, sig: tuple[float, ...]) -> dict:
    """The parameters and training data summary stored with a model (``params``)."""
    return {
        "n_estimators": forest.n_estimators,
        "min_samples_leaf": _MIN_SAMPLES_LEAF,
        "max_samples_per_class": max_samples_per_class,
        "seed": int(seed),
        "slices": [int(z) for z in zs],
        "annotated_voxels": {str(c): int(n) for c, n in zip(KNOWN_CLASSES, totals, strict=True)
                             if n > 0},
        "training_voxels": {str(c): int(len(r)) for c, r in ranks.items()},
        "volume_shape": [int(n) for n in volume.shape],
        "volume_dtype": str(np.dtype(volume.dtype)),
        "scale_percentiles": list(_PERCENTILES),
        "features": _feature_names(sig),
    }


def train_classifier(volume: Any, annotations: Any, slices: Sequence[int] | None = None,
                     sigmas: Sequence[float] = DEFAULT_SIGMAS, n_estimators: int = 100,
                     max_samples_per_class: int = 200_000, seed: int = 0,
                     n_jobs: int | None = 1) -> PixelClassifier:
    """Train a pixel classifier from annotated voxels.

    Parameters
    ----------
    volume : array_like (z, y, x)
        Grey-value training volume (NumPy array, memory map, HDF5 dataset or a lazily read
        volume such as :class:`~anodetwin.io.LazyVolume`: only the slabs around the
        annotated slices and a strided sample for the grey range are read).
    annotations : array_like (z, y, x)
        Same shape as ``volume``: phase codes (:data:`KNOWN_CLASSES`) for annotated voxels,
        :data:`UNLABELLED` (255) elsewhere (read one slice at a time).
    slices : sequence of int, optional
        z indices of the annotated slices. If given, only these slices of ``annotations``
        count (everything else is treated as unlabelled), so a fully labelled truth volume
        can be passed with e.g. 12 chosen slices. Default: every slice with annotations.
    sigmas : sequence of float
        Gaussian scales of the features (voxels).
    n_estimators : int
        Trees of the random forest.
    max_samples_per_class : int
        At most this many annotated voxels per class are used for training, drawn at random
        (``numpy.random.default_rng(seed)``).
    seed : int
        Seed of the voxel subsampling and of the forest.
    n_jobs : int or None
        Parallel jobs of the forest (training and prediction): N >= 1, -1 for all cores, or
        None (scikit-learn's default, 1); 0 and other negatives are refused.

    Returns
    -------
    PixelClassifier

    Raises
    ------
    DimensionError
        If ``volume`` is not 3D.
    ShapeMismatchError
        If ``annotations`` and ``volume`` differ in shape.
    ParameterError
        For unknown annotation values, fewer than two annotated classes, slices outside the
        volume, a constant volume or invalid parameters.

    Notes
    -----
    Features are computed only for slabs around the annotated slices (annotated slices less
    than two halos apart share a slab, up to 64 slices), and only the features of the
    annotated slices of a slab and then of the sampled voxels are kept, so memory stays at a
    few slab-sized work arrays plus ``4 * F`` bytes per sampled voxel.
    """
    from sklearn.ensemble import RandomForestClassifier

    volume, annotations = _check_training_grid(volume, annotations)
    sig = _check_sigmas(sigmas)
    n_estimators = _check_positive_int(n_estimators, "n_estimators", "give e.g. 100 trees")
    if n_jobs is not None and n_jobs != -1:
        n_jobs = _check_positive_int(n_jobs, "n_jobs (--jobs)",
                                     "give N >= 1 jobs, or -1 for all cores")
    max_samples_per_class = _check_positive_int(
        max_samples_per_class, "max_samples_per_class", "give e.g. 200000 voxels")
    nz = int(volume.shape[0])
    chosen = range(nz) if slices is None else _check_slices(slices, nz)
    where = "annotations" if slices is None else f"the {len(chosen)} given slices of annotations"
    zs, counts, totals = _annotated_classes(annotations, chosen, where)
    scale = _robust_range(volume)
    ranks = _draw_training_ranks(totals, max_samples_per_class, seed)
    x, y = _training_samples(volume, annotations, zs, counts, ranks, sig, scale)

    forest = RandomForestClassifier(n_estimators=n_estimators, min_samples_leaf=_MIN_SAMPLES_LEAF,
                                    random_state=seed, n_jobs=n_jobs)
    _LOG.debug("training random forest: %d voxels, %d features, classes %s",
               len(y), x.shape[1], sorted(ranks))
    forest.fit(x, y)

    params = _training_record(forest, max_samples_per_class, seed, zs, totals, ranks, volume,
                              sig)
    return PixelClassifier(classes=tuple(int(c) for c in forest.classes_), sigmas=sig,
                           forest=forest, scale=scale, params=params)
