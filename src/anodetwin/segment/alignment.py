"""Alignment of a tomogram series on the rigid copper current collector.

* :func:`collector_slab`: the z slices holding the copper foil (found as the phase
  segmentation finds it);
* :func:`collector_shift`: translation (z, y, x, voxels, sub-voxel) of a step relative to
  the reference, measured on the foil only (which does not deform): z from the foil's faces
  in the plane-averaged grey profile, y and x from the foil's in-plane texture where it has
  one (zero where it has none); :func:`align` applies it (linear interpolation, edge values).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import require_3d
from anodetwin.log import get_logger
from anodetwin.io.blocks import read_region
from anodetwin.segment.phases import foil_extent

__all__ = ["collector_slab", "collector_shift", "align", "shifted_region", "ShiftedVolume"]

log = get_logger("segment")

#: Each face of the foil is read where the slope of the plane-mean grey profile is at least
#: this fraction of its steepest value (the face's blurred edge, both flanks).
EDGE_LEVEL = 0.25
#: A face is a slope of at least this fraction of the copper-electrode contrast per voxel.
FACE_SLOPE = 0.05
#: In-plane texture is read on foil slices within this fraction of the copper-electrode
#: contrast from the copper level (deep enough that the electrode's blur does not reach them).
INNER_LEVEL = 0.02
#: At most this many of those slices (evenly spread) are correlated.
MAX_ROWS = 16
#: A y or x shift is reported only if the correlation peak beats every other candidate along
#: that axis by this many standard deviations of the correlation noise.
SIGNIFICANCE = 5.0


def collector_slab(volume: np.ndarray, margin: int = 4) -> slice:
    """z slices holding the copper foil (the dense layer at one face) plus a margin.

    Parameters
    ----------
    volume : numpy.ndarray, shape (nz, ny, nx)
        Grey values (copper brightest).
    margin : int
        Slices added on either side of the foil (clipped to the volume).

    Returns
    -------
    slice
        The z range of the foil and its margin.

    Raises
    ------
    ParameterError
        If no copper foil is found at a z face.
    """
    z0, z1 = _foil_rows(volume)
    return slice(max(0, z0 - margin), min(volume.shape[0], z1 + margin))


def _foil_rows(volume: Any, block_shape: Any = None, workers: int = 1,
               name: str = "reference volume") -> tuple[int, int]:
    """First and one-past-last z slice holding copper (see :func:`collector_slab`)."""
    face, extreme = foil_extent(volume, 1.0, block_shape, workers, name)
    nz = volume.shape[0]
    if face is None or not ((extreme >= 0) & (extreme < nz)).any():
        raise ParameterError("no copper foil (dense layer at a z face) found to align on",
                             "align on another feature or skip the alignment")
    if face == "low":  # copper fills each column from the face up to its extreme
        return 0, int(extreme.max()) + 1
    return int(extreme.min()), nz


def _planes(volume: Any, z: Any) -> np.ndarray:
    """Whole planes ``z`` (a slice or indices) of a volume in memory or on disk, float64."""
    full = (slice(0, volume.shape[1]), slice(0, volume.shape[2]))
    if isinstance(z, slice):
        return np.asarray(read_region(volume, (z,) + full), np.float64)
    return np.stack([np.asarray(read_region(volume, (slice(k, k + 1),) + full)[0], np.float64)
                     for k in np.asarray(z, int)]) if len(z) else np.zeros((0,) + volume.shape[1:])


def _plane_means(volume: Any, slab: int = 32) -> np.ndarray:
    """Mean grey value of every z plane, read a slab of planes at a time."""
    nz, ny, nx = volume.shape
    out = np.empty(nz)
    for z in range(0, nz, slab):
        v = read_region(volume, (slice(z, min(nz, z + slab)), slice(0, ny), slice(0, nx)))
        out[z:z + slab] = np.asarray(v).mean(axis=(1, 2), dtype=np.float64)
    return out


def collector_shift(ref: Any, moving: Any, margin: int = 4, upsample: int = 20, *,
                    block_shape: Any = None, workers: int = 1,
                    name: str = "reference volume") -> np.ndarray:
    """Translation that maps ``ref``'s copper foil onto ``moving``'s.

    ``moving`` shifted by minus this (:func:`align`) lies on ``ref``'s grid: a feature at
    ``p`` in ``ref`` is at ``p + shift`` in ``moving``. Only the foil and its faces are used,
    not the electrode beyond them (which swells and changes grey value between scans):

    * z: sub-voxel 1-D normalised cross-correlation of the slopes (z derivatives) of the
      plane-averaged grey profiles over the foil's faces (sharp edges across the whole
      plane). The slope of a blurred face peaks at the face whatever the grey levels on
      either side, so the estimate is blind to a change of grey scale and to a change of the
      electrode's mean grey value next to the foil;
    * y, x: normalised cross-correlation of the in-plane grey pattern of the foil's inner
      slices (those the electrode's blur does not reach), ``moving`` sampled at the z found.
      An axis is reported only if the correlation peak beats every other candidate along it
      by :data:`SIGNIFICANCE` standard deviations of the correlation noise (a peak at the
      edge of the search does not); a uniform foil (or one whose pattern is periodic or
      constant along that axis) cannot tell an in-plane shift, and that axis is returned as
      exactly 0 (logged at debug level). A whole-voxel search finds the peak, sub-voxel
      refinement fits it.

    On phantoms whose collector stays still while the electrode swells and its Si darkens,
    the shift is within 0.05 voxel of zero; a textured foil moved by a known sub-voxel
    translation is recovered to a few hundredths of a voxel per axis.

    Parameters
    ----------
    ref, moving : numpy.ndarray or LazyVolume, shape (nz, ny, nx)
        Reference and moving grey volumes of one scan geometry; volumes on disk are read a
        few planes at a time (plane means, the foil's planes) and the foil is found block
        by block.
    margin : int
        Slices beyond the foil (as the segmentation finds it) searched for its faces and the
        largest z shift sought, at least 8 (>= 0); the in-plane search reaches a quarter of
        the plane either way.
    upsample : int
        Sub-voxel precision: the shift is given in steps of 1 / ``upsample`` voxels (>= 1).
    block_shape, workers
        Blocks and threads of the search for the foil
        (:func:`anodetwin.segment.phases.foil_extent`).
    name : str
        How error messages name ``ref`` (e.g. ``"--align-to reference 'T0.h5'"``).

    Returns
    -------
    numpy.ndarray, shape (3,)
        Shift (z, y, x) in voxels.

    Raises
    ------
    DimensionError
        If ``ref`` is not 3D.
    ShapeMismatchError
        If the volumes differ in shape.
    ParameterError
        If ``ref`` has no copper foil, is constant, or ``margin`` or ``upsample`` is out of
        range.
    """
    a, b = (v if hasattr(v, "region") else np.asarray(v) for v in (ref, moving))
    require_3d(a.shape, "reference volume")
    if a.shape != b.shape:
        raise ShapeMismatchError(f"reference {a.shape} and moving {b.shape} volumes differ",
                                 "give steps of one scan geometry")
    if int(margin) != margin or margin < 0 or int(upsample) != upsample or upsample < 1:
        raise ParameterError(f"alignment margin {margin} / upsample {upsample} out of range",
                             "give a margin >= 0 and an upsample >= 1 (integers)")
    pa, pb = _plane_means(a), _plane_means(b)
    search = max(int(margin), 8)
    z0, z1 = _foil_rows(a, block_shape, workers, name)
    foil, band = slice(z0, z1), slice(max(0, z0 - search), min(a.shape[0], z1 + search))
    dz = _profile_shift(np.gradient(pa), np.gradient(pb), _face_window(pa, foil, band), search,
                        0.1 / upsample)
    c_level, e_level = float(pa[foil].max()), float(pa[band].min())
    rows = np.arange(foil.start, foil.stop)
    inner = rows[pa[rows] >= c_level - INNER_LEVEL * (c_level - e_level)]
    inner = inner[np.unique(np.linspace(0, len(inner) - 1, min(len(inner), MAX_ROWS)).round()
                            .astype(int))]
    dyx = _inplane_shift(_planes(a, inner), _slices_at(b, inner + dz), 0.1 / upsample)
    return np.round(np.array([dz, *dyx]) * upsample) / upsample + 0.0  # no -0.0


def align(volume: np.ndarray, shift: np.ndarray, order: int = 1) -> np.ndarray:
    """A volume moved by ``-shift`` onto the reference grid (edge values fill the border).

    Parameters
    ----------
    volume : numpy.ndarray, shape (nz, ny, nx)
        The moving volume (grey values or labels).
    shift : array_like, shape (3,)
        Shift (z, y, x) in voxels from :func:`collector_shift`.
    order : int
        Spline order of the interpolation for a fractional shift (0 keeps label values); a
        whole-voxel shift is always a plain move.

    Returns
    -------
    numpy.ndarray, shape (nz, ny, nx)
        The aligned volume: the input dtype for a whole-voxel shift or an integer volume with
        ``order`` 0, float32 otherwise.
    """
    s = np.asarray(shift, float)
    v = np.asarray(volume)
    if order == 1:
        return shifted_region(v, s, tuple(slice(0, n) for n in v.shape))
    if np.allclose(s, np.round(s)):
        out = ndimage.shift(v, -np.round(s), order=0, mode="nearest")
    else:
        out = ndimage.shift(v.astype(np.float32), -s, order=order, mode="nearest")
    return out.astype(v.dtype) if np.issubdtype(v.dtype, np.integer) and order == 0 else out


def shifted_region(volume: Any, shift: Any, box: tuple) -> np.ndarray:
    """A box of a volume moved by ``-shift`` (linear interpolation, one axis after the
    other, edge values beyond the faces): ``out[i] = volume(i + shift)``. Each voxel is
    computed from its own neighbours with the same weights whatever the box, so boxes give
    the whole volume's values.

    Parameters
    ----------
    volume : array, Volume or LazyVolume
        The moving volume (z, y, x).
    shift : array_like, shape (3,)
        Shift (z, y, x) in voxels (:func:`collector_shift`).
    box : tuple of 3 slice
        The box of the aligned volume.

    Returns
    -------
    numpy.ndarray
        The box: the input dtype for a whole-voxel shift, float32 otherwise.
    """
    s = np.asarray(shift, float)
    f = np.floor(s).astype(int)
    w = s - f
    n = volume.shape
    src = tuple(slice(min(max(0, b.start + k), m - 1), min(m, max(b.stop + k + 1, 1)))
                for b, k, m in zip(box, f, n, strict=True))
    d = np.asarray(read_region(volume, src))
    if not w.any():
        d = d.copy()
    else:
        d = d.astype(np.float32)
    for a in range(3):
        i = np.arange(box[a].start, box[a].stop) + f[a]
        i0 = np.clip(i, 0, n[a] - 1) - src[a].start
        if w[a] == 0:
            d = np.take(d, i0, axis=a)
            continue
        i1 = np.clip(i + 1, 0, n[a] - 1) - src[a].start
        d = np.take(d, i0, axis=a) * np.float32(1 - w[a]) + np.take(d, i1, axis=a) \
            * np.float32(w[a])
    return d


class ShiftedVolume:
    """A volume on disk seen moved by ``-shift`` (:func:`shifted_region`), box by box.

    Parameters
    ----------
    volume : LazyVolume or array
        The moving volume.
    shift : array_like, shape (3,)
        Shift (z, y, x) in voxels.
    voxel_size_um, origin : tuple, optional
        Geometry of the aligned volume (the reference's).
    """

    def __init__(self, volume: Any, shift: Any, voxel_size_um: Any = None,
                 origin: Any = None):
        self.source = volume
        self.shift = np.asarray(shift, float)
        self.shape = tuple(volume.shape)
        self.dtype = (np.dtype(volume.dtype) if np.allclose(self.shift, np.round(self.shift))
                      else np.dtype(np.float32))
        self.voxel_size_um = voxel_size_um or getattr(volume, "voxel_size_um", None)
        self.origin = origin if origin is not None else getattr(volume, "origin", None)

    def region(self, zs: slice, ys: slice, xs: slice) -> np.ndarray:
        """The aligned voxels of a box."""
        return shifted_region(self.source, self.shift, (zs, ys, xs))


def _face_window(profile: np.ndarray, foil: slice, band: slice) -> np.ndarray:
    """z indices of the foil's faces in its plane-mean grey profile (z): on either side of the
    foil's brightest slice within ``band``, the run around the steepest slope where the slope
    is at least :data:`EDGE_LEVEL` of it (and at least the 5 slices around it); a side whose
    steepest slope is below :data:`FACE_SLOPE` of the copper-electrode contrast per voxel (the
    volume's end) has no face.

    Raises
    ------
    ParameterError
        If neither side shows a face.
    """
    slope = np.abs(np.gradient(profile))
    top = foil.start + int(np.argmax(profile[foil]))
    contrast = float(profile[foil].max() - profile[band].min())
    faces = []
    for lo, hi in ((band.start, top), (top + 1, band.stop)):
        if hi - lo < 3 or slope[lo:hi].max() < FACE_SLOPE * contrast:
            continue
        k = int(np.argmax(slope[lo:hi]))
        lab, _ = ndimage.label(slope[lo:hi] >= EDGE_LEVEL * slope[lo + k])
        run = np.union1d(np.flatnonzero(lab == lab[k]),
                         np.arange(max(0, k - 2), min(hi - lo, k + 3)))
        faces.append(lo + run)
    if not faces:
        raise ParameterError("the copper foil shows no sharp face in z to align on",
                             "check that the reference volume holds the foil's surface")
    return np.concatenate(faces)


def _ncc(u: np.ndarray, v: np.ndarray) -> float:
    """Normalised cross-correlation (Pearson coefficient) of two equal-shape arrays; -1 where
    either is constant."""
    u, v = u - u.mean(), v - v.mean()
    den = np.sqrt(np.sum(u * u) * np.sum(v * v))
    return float(np.sum(u * v) / den) if den > 0 else -1.0


def _profile_shift(pa: np.ndarray, pb: np.ndarray, window: np.ndarray, search: int,
                   tol: float) -> float:
    """Sub-voxel shift d (voxels) that best matches the profile ``pa`` on ``window`` to
    ``pb`` at ``window + d``: whole-voxel search over +-``search`` by plain cross-correlation
    (which, unlike the normalised one, a few noisy values far from the faces cannot win),
    then a bounded maximisation (to ``tol`` voxels) of the normalised cross-correlation with
    ``pb`` interpolated by cubic splines (edge values beyond the ends)."""
    from scipy.optimize import minimize_scalar

    z = window.astype(np.float64)
    ref = pa[window]

    def cost(d: float) -> float:
        return -_ncc(ref, ndimage.map_coordinates(pb, [z + d], order=3, mode="nearest"))

    steps = np.arange(-search, search + 1)
    ends = np.clip(window[None, :] + steps[:, None], 0, len(pb) - 1)
    d0 = float(steps[int(np.argmax(pb[ends] @ ref))])
    res = minimize_scalar(cost, bounds=(d0 - 1.0, d0 + 1.0), method="bounded",
                          options={"xatol": tol})
    return float(res.x)


def _slices_at(volume: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Slices of ``volume`` at fractional z: cubic (4-point Lagrange) interpolation between
    the slices around each, edge slices beyond the ends; float64, shape (len(z), ny, nx)."""
    n = volume.shape[0]
    out = np.empty((len(z), *volume.shape[1:]))
    for i, zi in enumerate(np.clip(np.asarray(z, np.float64), 0, n - 1)):
        k = int(np.floor(zi))
        f = zi - k
        w = (-f * (f - 1) * (f - 2) / 6, (f + 1) * (f - 1) * (f - 2) / 2,
             -(f + 1) * f * (f - 2) / 2, (f + 1) * f * (f - 1) / 6)
        rows = [min(max(k + j, 0), n - 1) for j in (-1, 0, 1, 2)]
        out[i] = sum(wj * p for wj, p in zip(w, _planes(volume, rows), strict=True))
    return out


def _inplane_shift(ref: np.ndarray, moving: np.ndarray, tol: float) -> np.ndarray:
    """In-plane shift (y, x, voxels) of the grey pattern of the slices ``ref`` in ``moving``
    (both shape (n, ny, nx), slice k of one facing slice k of the other), 0 along an axis
    where the correlation peak is not significant.

    Whole-voxel normalised cross-correlation of the central half of ``ref`` in y and x
    against ``moving`` (search over a quarter of the plane either way); significance per axis by
    :func:`_axis_contrast` against the correlation noise (:func:`_correlation_noise`);
    sub-voxel refinement of the significant axes by :func:`_refine_inplane`.
    """
    ny, nx = ref.shape[1:]
    ly, lx = ny // 4, nx // 4
    if min(ny - 2 * ly, nx - 2 * lx) < 3:
        log.debug("copper foil plane %s too small to read an in-plane shift: y, x set to 0",
                  ref.shape[1:])
        return np.zeros(2)
    template = ref[:, ly:ny - ly, lx:nx - lx]
    surface = _ncc_surface(moving, template)
    peak = np.unravel_index(int(np.argmax(surface)), surface.shape)
    s = np.array([peak[0] - ly, peak[1] - lx], np.float64)
    window = moving[:, peak[0]:peak[0] + template.shape[1], peak[1]:peak[1] + template.shape[2]]
    sigma = _correlation_noise(window - template)
    axes = []
    for axis, name in enumerate("yx"):
        contrast = _axis_contrast(surface, peak, axis) / sigma
        if contrast >= SIGNIFICANCE:
            axes.append(axis)
        else:
            s[axis] = 0.0
            log.debug("copper foil shows no in-plane texture along %s (correlation peak %.1f "
                      "sigma above its rivals, < %.1f): %s shift set to 0", name, contrast,
                      SIGNIFICANCE, name)
    return _refine_inplane(ref, moving, s, axes, tol) if axes else s


def _ncc_surface(moving: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``template`` (n, ty, tx) with every in-plane window of
    ``moving`` (n, ny, nx), slice k against slice k (no z offset): shape
    (ny - ty + 1, nx - tx + 1), entry (i, j) for the window starting at (i, j); 0 where the
    window is constant."""
    from scipy.signal import fftconvolve

    t = template - template.mean()
    mv = moving - moving.mean()
    num = sum(fftconvolve(m, tk[::-1, ::-1], mode="valid") for m, tk in zip(mv, t))
    s1 = _box_sum(mv.sum(axis=0), t.shape[1:])
    s2 = _box_sum((mv * mv).sum(axis=0), t.shape[1:])
    den = np.sqrt(np.maximum(s2 - s1 * s1 / t.size, 0.0) * np.sum(t * t))
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _box_sum(image: np.ndarray, shape: tuple) -> np.ndarray:
    """Sums of ``image`` (2-D) over every window of ``shape`` (ty, tx), by an integral image:
    shape (ny - ty + 1, nx - tx + 1)."""
    c = np.pad(image.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = shape
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def _correlation_noise(diff: np.ndarray, reach: int = 3) -> float:
    """Standard deviation of a normalised cross-correlation value due to noise: Bartlett's
    sqrt(sum rho^2 / N) with rho the normalised autocorrelation of the noise (estimated from
    the difference of the matched images) over lags up to ``reach`` voxels."""
    d = diff - diff.mean()
    size, axes = [2 * n for n in d.shape], list(range(d.ndim))
    ac = np.fft.irfftn(np.abs(np.fft.rfftn(d, size, axes)) ** 2, size, axes)
    zero = ac[(0,) * d.ndim]
    if zero <= 0:  # identical images: no noise
        return 1e-12
    lags = [np.r_[0:min(reach, n - 1) + 1, -min(reach, n - 1):0] for n in d.shape]
    rho = ac[np.ix_(*lags)] / zero
    return float(np.sqrt(np.sum(rho ** 2) / d.size))


def _axis_contrast(surface: np.ndarray, peak: tuple, axis: int) -> float:
    """How far the correlation peak stands above its best rival along ``axis``: the peak
    value minus the largest value outside the peak's lobe (the run of monotone descent from
    the peak along ``axis``) at any offset along the other axis, or minus the lobe's rims."""
    line = np.take(surface, peak[1 - axis], axis=1 - axis)
    lo = hi = peak[axis]
    while lo > 0 and line[lo - 1] < line[lo]:
        lo -= 1
    while hi < len(line) - 1 and line[hi + 1] < line[hi]:
        hi += 1
    rival = max(line[lo], line[hi])
    others = np.delete(surface, np.arange(lo, hi + 1), axis=axis)
    if others.size:
        rival = max(rival, float(others.max()))
    return float(surface[peak]) - rival


def _refine_inplane(ref: np.ndarray, moving: np.ndarray, s: np.ndarray, axes: list,
                    tol: float, iterations: int = 10) -> np.ndarray:
    """Sub-voxel refinement of the in-plane shift ``s`` along ``axes`` (0 = y, 1 = x): shift
    ``moving`` back by ``s`` (cubic splines), correlate it with ``ref`` over their overlap at
    the 3 x 3 whole-voxel offsets around 0 and move ``s`` to the vertex of the quadratic fitted
    to them (a parabola along the one axis when only one is refined), until the step is below
    ``tol`` voxels."""
    s = s.astype(np.float64).copy()
    ny, nx = ref.shape[1:]
    for _ in range(iterations):
        m = int(np.ceil(np.abs(s).max())) + 2
        if min(ny, nx) - 2 * m < 3:
            break
        back = ndimage.shift(moving, (0.0, -s[0], -s[1]), order=3, mode="nearest")
        t = ref[:, m:ny - m, m:nx - m]
        c = np.array([[_ncc(t, back[:, m + i:ny - m + i, m + j:nx - m + j])
                       for j in (-1, 0, 1)] for i in (-1, 0, 1)])
        step = np.clip(_quadratic_vertex(c, axes), -1.0, 1.0)
        s += step
        if np.abs(step).max() < tol:
            break
    return s


def _quadratic_vertex(c: np.ndarray, axes: list) -> np.ndarray:
    """Vertex (y, x offsets, voxels) of a quadratic fitted to 3 x 3 correlation values at
    offsets -1, 0, 1; only the ``axes`` listed move (a parabola through the centre line when
    one); zeros where the fit has no maximum."""
    out = np.zeros(2)
    if len(axes) == 1:
        a = axes[0]
        m, z, p = (c[:, 1] if a == 0 else c[1, :])
        den = m - 2 * z + p
        out[a] = 0.5 * (m - p) / den if den < 0 else 0.0
        return out
    y, x = np.mgrid[-1:2, -1:2].reshape(2, -1).astype(np.float64)
    design = np.stack([np.ones(9), y, x, y * y, y * x, x * x], axis=1)
    k = np.linalg.lstsq(design, c.ravel(), rcond=None)[0]
    hess = np.array([[2 * k[3], k[4]], [k[4], 2 * k[5]]])
    if np.all(np.linalg.eigvalsh(hess) < 0):
        out[:] = -np.linalg.solve(hess, k[1:3])
    return out
