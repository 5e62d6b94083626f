"""Particle instances from a Si mask and the particle table.

Touching particles are split by a watershed of the negative Euclidean distance transform
(computed with the per-axis voxel size, so a sphere in physical space that is an ellipsoid
in voxels keeps one maximum) with markers at its h-maxima (plateaus standing ``h`` voxels of
the finest axis above their surroundings, so noise on the distance map does not
over-split); fragments below a minimum volume are removed and ids renumbered 1..n in raster
order of their first voxel.

Particle table (:data:`PARTICLE_TABLE`; lengths in um, volumes in um3, positions (z, y, x)
of the volume's grid scaled by the per-axis voxel size (z, y, x), the first voxel centre
at 0): ``id``, ``centroid_{z,y,x}_um``, ``volume_um3``,
``equivalent_diameter_um`` (sphere of equal volume), ``bbox_{z0,y0,x0,z1,y1,x1}`` (voxels,
end exclusive), ``surface_um2`` (marching-cubes area), ``sphericity``
(pi^(1/3) (6 V)^(2/3) / A; 1 for a sphere, lower for irregular or voxel-stepped shapes),
``touching`` (number of other particles sharing a face) and ``distance_to_collector_um``
(centroid height above the collector interface).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.io import normalise_voxel_size, require_3d

__all__ = ["PARTICLE_TABLE", "label_particles", "particle_table", "touching_pairs"]

PARTICLE_TABLE = np.dtype([
    ("id", "i4"), ("centroid_z_um", "f8"), ("centroid_y_um", "f8"), ("centroid_x_um", "f8"),
    ("volume_um3", "f8"), ("equivalent_diameter_um", "f8"),
    ("bbox_z0", "i4"), ("bbox_y0", "i4"), ("bbox_x0", "i4"),
    ("bbox_z1", "i4"), ("bbox_y1", "i4"), ("bbox_x1", "i4"),
    ("surface_um2", "f8"), ("sphericity", "f8"), ("touching", "i4"),
    ("distance_to_collector_um", "f8")])


def _triple(voxel_size_um: float | tuple) -> np.ndarray:
    """Voxel size as a (3,) float array (z, y, x) in um; one value is isotropic."""
    return np.asarray(normalise_voxel_size(voxel_size_um, "voxel size"), float)


def label_particles(mask: np.ndarray, h: float = 1.0, min_voxels: int = 27,
                    voxel_size_um: float | tuple = 1.0) -> np.ndarray:
    """Instance labels (int32, 0 = none) of a binary particle mask.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        Particle phase (e.g. non-lithiated Si), (z, y, x).
    h : float
        h-maxima height of the distance map, in edges of the finest voxel axis: larger
        merges more.
    min_voxels : int
        Objects smaller than this (voxels) are removed.
    voxel_size_um : float or (z, y, x) floats
        Voxel size (um; one value: isotropic). The distance map is Euclidean in physical
        space (per-axis sampling), expressed in edges of the finest axis.

    Returns
    -------
    numpy.ndarray of int32
        Particle ids 1..n (0 = none), shape of ``mask``.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    m = np.asarray(mask, bool)
    require_3d(m.shape, "particle mask")
    if h <= 0:
        raise ParameterError(f"h-maxima height {h} is not positive", "give h > 0 (voxels)")
    if not m.any():
        return np.zeros(m.shape, np.int32)
    vs = _triple(voxel_size_um)
    dist = ndimage.distance_transform_edt(m, sampling=vs / vs.min()).astype(np.float32)
    peaks = h_maxima(dist, h)
    markers, _ = ndimage.label(peaks, structure=np.ones((3, 3, 3)))
    lab = watershed(-dist, markers, mask=m).astype(np.int32)
    # pieces of the mask without a marker (thin objects) keep their own connected label
    rest, n_rest = ndimage.label(m & (lab == 0))
    if n_rest:
        lab[rest > 0] = rest[rest > 0] + lab.max()
    counts = np.bincount(lab.ravel())
    keep = counts >= max(1, int(min_voxels))
    keep[0] = False
    lab[~keep[lab]] = 0
    # renumber 1..n in raster order of the first voxel
    flat = lab.ravel()
    ids, first = np.unique(flat, return_index=True)
    order = ids[ids > 0][np.argsort(first[ids > 0])]
    lut = np.zeros(int(lab.max()) + 1, np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[lab]


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs of different particle ids that share a voxel face (6-connectivity).

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (nz, ny, nx)
        Particle ids (0 = none).

    Returns
    -------
    numpy.ndarray, shape (K, 2)
        Each touching pair once, smaller id first, rows in ascending order; the dtype of
        ``labels``.
    """
    pairs = []
    for ax in range(3):
        a = np.moveaxis(labels, ax, 0)
        x, y = a[1:].ravel(), a[:-1].ravel()
        sel = (x > 0) & (y > 0) & (x != y)
        pairs.append(np.sort(np.stack([x[sel], y[sel]], axis=1), axis=1))
    p = np.concatenate(pairs) if pairs else np.zeros((0, 2), int)
    return np.unique(p, axis=0) if len(p) else p.reshape(0, 2)


def _surface(sub: np.ndarray, vs: np.ndarray) -> float:
    """Marching-cubes area (um2) of a mask with (z, y, x) voxel size ``vs`` (um)."""
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(sub.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, 0.5, spacing=tuple(float(v) for v in vs))
    return float(mesh_surface_area(verts, faces))


def particle_table(labels: np.ndarray, voxel_size_um: float | tuple = 1.0,
                   collector_z: float | np.ndarray | None = None) -> np.ndarray:
    """Table of the particles of an instance volume (:data:`PARTICLE_TABLE`).

    Parameters
    ----------
    labels : numpy.ndarray
        Particle ids (0 = none), (z, y, x).
    voxel_size_um : float or (z, y, x) floats
        Voxel size (um; one value: isotropic). Centroids, volumes, surfaces and heights
        use the size of each axis.
    collector_z : float or (y, x) array, optional
        Collector interface (voxels along z); per column it is taken under each centroid.

    Returns
    -------
    numpy.ndarray
        One row per particle (:data:`PARTICLE_TABLE`), in id order.
    """
    lab = np.asarray(labels)
    vs = _triple(voxel_size_um)
    objs = ndimage.find_objects(lab)
    ids = [i + 1 for i, o in enumerate(objs) if o is not None]
    t = np.zeros(len(ids), PARTICLE_TABLE)
    if not ids:
        return t
    idx = np.array(ids)
    com = np.array(ndimage.center_of_mass(np.ones(lab.shape, np.float32), lab, idx))
    counts = np.bincount(lab.ravel())[idx]
    pairs = touching_pairs(lab)
    touch = np.bincount(pairs.ravel(), minlength=int(lab.max()) + 1)[idx]
    t["id"] = idx
    t["centroid_z_um"], t["centroid_y_um"], t["centroid_x_um"] = (com * vs).T
    t["volume_um3"] = counts * float(np.prod(vs))
    t["equivalent_diameter_um"] = (6 * t["volume_um3"] / np.pi) ** (1 / 3)
    t["touching"] = touch
    for row, i in enumerate(ids):
        sl = objs[i - 1]
        for k, ax in enumerate("zyx"):
            t[f"bbox_{ax}0"][row] = sl[k].start
            t[f"bbox_{ax}1"][row] = sl[k].stop
        area = _surface(lab[sl] == i, vs)
        t["surface_um2"][row] = area
        t["sphericity"][row] = np.pi ** (1 / 3) * (6 * t["volume_um3"][row]) ** (2 / 3) / area
    if collector_z is None:
        base = np.full(len(ids), -0.5)
    else:
        cz = np.asarray(collector_z, float)
        if cz.ndim == 0:
            base = np.full(len(ids), float(cz))
        else:
            yy = np.clip(np.rint(com[:, 1]).astype(int), 0, cz.shape[0] - 1)
            xx = np.clip(np.rint(com[:, 2]).astype(int), 0, cz.shape[1] - 1)
            base = cz[yy, xx]
    t["distance_to_collector_um"] = (com[:, 0] - base) * vs[0]
    return t
