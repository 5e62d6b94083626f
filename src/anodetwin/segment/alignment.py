"""Alignment of a tomogram series on the rigid copper current collector.

* :func:`collector_slab`: the z slices holding the copper foil (found as the phase
  segmentation finds it);
* :func:`collector_shift`: translation (z, y, x, voxels, sub-voxel) of a step relative to
  the reference, measured by phase correlation of the slab holding the foil (which does not
  deform), and :func:`align` to apply it (linear interpolation, edge values).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import require_3d
from anodetwin.segment.phases import find_foil, thresholds

__all__ = ["collector_slab", "collector_shift", "align"]


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
    s = ndimage.gaussian_filter(np.asarray(volume, np.float32), 1.0)
    _, t_cu = thresholds(s)
    face, cu, _ = find_foil(s, t_cu)
    if face is None:
        raise ParameterError("no copper foil (dense layer at a z face) found to align on",
                             "align on another feature or skip the alignment")
    rows = np.flatnonzero(cu.any(axis=(1, 2)))
    z0 = max(0, int(rows.min()) - margin)
    z1 = min(s.shape[0], int(rows.max()) + 1 + margin)
    return slice(z0, z1)


def collector_shift(ref: np.ndarray, moving: np.ndarray, margin: int = 4,
                    upsample: int = 20) -> np.ndarray:
    """Translation that maps ``ref``'s copper foil onto ``moving``'s.

    ``moving`` shifted by minus this (:func:`align`) lies on ``ref``'s grid. The shift is the
    phase cross-correlation of the foil slab of ``ref`` with a wider band of ``moving``.

    Parameters
    ----------
    ref, moving : numpy.ndarray, shape (nz, ny, nx)
        Reference and moving grey volumes of one scan geometry.
    margin : int
        Slices around the foil taken into the correlation.
    upsample : int
        Sub-voxel precision of the correlation (1 / upsample voxels).

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
        If ``ref`` has no copper foil.
    """
    from skimage.registration import phase_cross_correlation

    a, b = np.asarray(ref), np.asarray(moving)
    require_3d(a.shape, "reference volume")
    if a.shape != b.shape:
        raise ShapeMismatchError(f"reference {a.shape} and moving {b.shape} volumes differ",
                                 "give steps of one scan geometry")
    zs = collector_slab(a, margin)
    # the slab in the moving volume may have moved: take a wider band around it
    pad = max(margin, 8)
    wide = slice(max(0, zs.start - pad), min(a.shape[0], zs.stop + pad))
    fa = np.zeros(b[wide].shape, np.float32)
    fa[zs.start - wide.start: zs.stop - wide.start] = a[zs]
    shift, _, _ = phase_cross_correlation(b[wide].astype(np.float32), fa,
                                          upsample_factor=upsample)
    return np.asarray(shift, float)


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
    if np.allclose(s, np.round(s)):
        out = ndimage.shift(v, -np.round(s), order=0, mode="nearest")
    else:
        out = ndimage.shift(v.astype(np.float32), -s, order=order, mode="nearest")
    return out.astype(v.dtype) if np.issubdtype(v.dtype, np.integer) and order == 0 else out
