"""Particle tracking across the steps of a series.

Each particle of step k is carried to step k+1 by a displacement prior and linked to the
particle of step k+1 its carried voxels overlap most (at least ``min_overlap`` of them);
a particle that overlaps nothing is linked to the nearest carried centroid within
``max_distance_um`` (a physical distance: each axis scaled by its voxel size), otherwise
its track ends. Lithiation shrinks the visible core, so a
core at k+1 lies inside the carried particle of k: overlap tolerates the loss of contrast.
Several particles of k may link to one of k+1 (cores merging in the image: their tracks
share it from then on) and a core that splits links to its largest piece.

Priors (z, y, x voxels): ``None`` (no motion), ``"thickness"`` (the electrode swells
uniformly along z from the collector: z' = z_c' + (z - z_c) T' / T, from the interfaces
of each step) or a callable ``prior(k, points) -> displacement`` giving the motion of
points of step k to step k+1 (e.g. from the DVC increments, :func:`dvc_prior`).

Tracks start at step 0 (or where a particle first appears unlinked) and hold per step the
particle id, its centroid (um: voxel position times the (z, y, x) voxel size), its visible
(non-lithiated) volume (um3: voxels times the product of the three sizes) and the centroid
displacement from the start of the track.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import normalise_voxel_size

__all__ = ["TRACK_TABLE", "Tracks", "link_steps", "track_particles", "dvc_prior",
           "thickness_prior"]

TRACK_TABLE = np.dtype([("track", "i4"), ("step", "i4"), ("particle", "i4"),
                        ("centroid_z_um", "f8"), ("centroid_y_um", "f8"),
                        ("centroid_x_um", "f8"), ("volume_um3", "f8"),
                        ("displacement_z_um", "f8"), ("displacement_y_um", "f8"),
                        ("displacement_x_um", "f8"), ("overlap", "f8")])


@dataclass(frozen=True)
class Tracks:
    """Particle tracks of a series (:func:`track_particles`): a table and the links.

    Attributes
    ----------
    table : numpy.ndarray of TRACK_TABLE
        One row per track and step (:data:`TRACK_TABLE`; lengths in um), ordered by track
        and step.
    links : list of (n, 3) numpy.ndarray
        Links of each step transition: ``links[k]`` holds id at k, id at k+1 and the
        overlap fraction.
    """

    table: np.ndarray
    links: list[np.ndarray]

    def track(self, t: int) -> np.ndarray:
        """Rows of one track.

        Parameters
        ----------
        t : int
            Track number.

        Returns
        -------
        numpy.ndarray
            Its rows of :attr:`table`, in step order.
        """
        return self.table[self.table["track"] == t]

    @property
    def n_tracks(self) -> int:
        """Number of distinct tracks."""
        return int(len(np.unique(self.table["track"])))


def thickness_prior(collector_z: Sequence[float], separator_z: Sequence[float]
                    ) -> Callable[[int, np.ndarray], np.ndarray]:
    """Tracking prior of uniform through-thickness swelling between steps.

    Parameters
    ----------
    collector_z, separator_z : sequence of float
        Mean collector and separator interface of each step (voxels along z).

    Returns
    -------
    callable
        ``prior(k, points) -> displacement``: (n, 3) points (z, y, x; voxels) of step k to
        their (n, 3) displacement (voxels) to step k + 1, along z only.
    """
    zc, zs = np.asarray(collector_z, float), np.asarray(separator_z, float)

    def prior(k: int, pts: np.ndarray) -> np.ndarray:
        scale = (zs[k + 1] - zc[k + 1]) / (zs[k] - zc[k])
        out = np.zeros_like(pts, dtype=float)
        out[:, 0] = zc[k + 1] + (pts[:, 0] - zc[k]) * scale - pts[:, 0]
        return out

    return prior


def dvc_prior(increments: Sequence[Any]) -> Callable[[int, np.ndarray], np.ndarray]:
    """Tracking prior from DVC increments T(k) -> T(k+1), interpolated at the points of step k.

    Parameters
    ----------
    increments : sequence of PairResult or path
        One increment per step transition (results of ``anodetwin dvc-series``).

    Returns
    -------
    callable
        ``prior(k, points) -> displacement``: (n, 3) points (z, y, x; voxels) of step k to
        their (n, 3) displacement (voxels).

    Raises
    ------
    InputNotFoundError, CorruptFileError
        For an increment file that cannot be read.
    """
    from anodetwin.dvc.correlate import interpolate_displacement
    from anodetwin.dvc.pair import PairResult, read_pair

    incs = [p if isinstance(p, PairResult) else read_pair(p) for p in increments]

    def prior(k: int, pts: np.ndarray) -> np.ndarray:
        inc = incs[k]
        origin = np.asarray(inc.params.get("roi_origin", (0, 0, 0)), float)
        return interpolate_displacement(inc.nodes, inc.grid_shape, inc.displacement,
                                        pts - origin)

    return prior


def _voxels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (N, 3) and ids of all particle voxels, sorted by id."""
    idx = np.flatnonzero(labels.ravel())
    ids = labels.ravel()[idx]
    order = np.argsort(ids, kind="stable")
    return np.stack(np.unravel_index(idx[order], labels.shape), axis=1), ids[order]


def link_steps(a: np.ndarray, b: np.ndarray, shift: Callable[[np.ndarray], np.ndarray]
               | None = None, min_overlap: float = 0.1, max_distance: float = 10.0,
               subsample: int = 1, spacing: float | tuple = 1.0) -> np.ndarray:
    """Links (id_a, id_b, overlap fraction) from particles of ``a`` to those of ``b``.

    Parameters
    ----------
    a, b : numpy.ndarray
        Instance labels of two consecutive steps (same grid).
    shift : callable, optional
        ``shift(points) -> displacement`` (voxels) carrying points of ``a`` to ``b``.
    min_overlap : float
        Fraction of a particle's carried voxels that must fall in one particle of ``b``.
    max_distance : float
        Gate of the nearest-centroid fallback, in the unit of ``spacing`` (voxels by
        default).
    subsample : int
        Use every n-th voxel of each particle (speed on large volumes).
    spacing : float or (z, y, x) floats
        Length of a voxel step along each axis for the fallback distance (e.g. the voxel
        size in um, then ``max_distance`` is in um).

    Returns
    -------
    numpy.ndarray
        (n, 3) float rows: id in ``a``, id in ``b``, overlap fraction (0: fallback).
    """
    if a.shape != b.shape:
        raise ShapeMismatchError(f"steps of shapes {a.shape} and {b.shape}",
                                 "give label volumes of one grid (align the series first)")
    pts, ids = _voxels(a)
    if subsample > 1:
        pts, ids = pts[::subsample], ids[::subsample]
    if not len(ids):
        return np.zeros((0, 3))
    sp = np.asarray(normalise_voxel_size(spacing, "spacing"), float)
    uniq, start, count = np.unique(ids, return_index=True, return_counts=True)
    cent = np.array([pts[s: s + c].mean(axis=0) for s, c in zip(start, count, strict=True)])
    d_cent = shift(cent) if shift is not None else np.zeros_like(cent)
    # carry every voxel by the prior at its own position
    moved = pts.astype(float)
    if shift is not None:
        moved += shift(moved)
    q = np.rint(moved).astype(int)
    inside = np.all((q >= 0) & (q < np.array(b.shape)), axis=1)
    hit = np.zeros(len(q), b.dtype)
    hit[inside] = b[q[inside, 0], q[inside, 1], q[inside, 2]]
    out = []
    ids_b = np.unique(b[b > 0])
    cb = np.array(ndimage.center_of_mass(np.ones(b.shape, np.float32), b, ids_b)) \
        if len(ids_b) else np.zeros((0, 3))
    for i, (pid, s, c) in enumerate(zip(uniq, start, count, strict=True)):
        h = hit[s: s + c]
        h = h[h > 0]
        if h.size:
            vals, n = np.unique(h, return_counts=True)
            j = int(np.argmax(n))
            if n[j] / c >= min_overlap:
                out.append((pid, vals[j], n[j] / c))
                continue
        if len(cb):
            d = np.linalg.norm((cb - (cent[i] + d_cent[i])) * sp, axis=1)
            j = int(np.argmin(d))
            if d[j] <= max_distance:
                out.append((pid, ids_b[j], 0.0))
    return np.array(out, float).reshape(-1, 3)


def track_particles(labels: Sequence[Any], voxel_size_um: float | tuple = 1.0,
                    prior: Callable[[int, np.ndarray], np.ndarray] | None = None,
                    min_overlap: float = 0.1, max_distance_um: float = 2.0,
                    subsample: int = 1) -> Tracks:
    """Track the particles of a series of instance volumes (module notes).

    Parameters
    ----------
    labels : sequence of arrays or paths
        Instance labels of T0, T1, ... on one grid (paths: ``file.h5:/particles``).
    voxel_size_um : float or (z, y, x) floats
        Voxel size (um; one value: isotropic).
    prior : callable, optional
        ``prior(k, points) -> displacement`` (voxels) from step k to k+1.
    min_overlap, max_distance_um, subsample : see :func:`link_steps` (the gate in um).

    Returns
    -------
    Tracks
        Rows of :data:`TRACK_TABLE` and the links per transition.
    """
    from anodetwin.io import read_volume

    vols = [read_volume(v).data if isinstance(v, (str, os.PathLike)) else np.asarray(v)
            for v in labels]
    if len(vols) < 2:
        raise ParameterError(f"tracking needs at least 2 steps, got {len(vols)}",
                             "give the labels of T0 T1 [...]")
    vs = np.asarray(normalise_voxel_size(voxel_size_um, "voxel size"), float)
    links = []
    for k in range(len(vols) - 1):
        sh = (lambda pts, k=k: prior(k, pts)) if prior is not None else None
        links.append(link_steps(vols[k], vols[k + 1], sh, min_overlap, max_distance_um,
                                subsample, spacing=vs))
    stats = []
    for v in vols:
        ids = np.unique(v[v > 0])
        com = np.array(ndimage.center_of_mass(np.ones(v.shape, np.float32), v, ids)) \
            if len(ids) else np.zeros((0, 3))
        cnt = np.bincount(v.ravel())[ids] if len(ids) else np.zeros(0)
        cell = float(np.prod(vs))
        stats.append({int(i): (com[n] * vs, cnt[n] * cell) for n, i in enumerate(ids)})
    rows = []
    started: dict[int, list[int]] = {}  # particle id at the current step -> its tracks
    n_tracks = 0
    for k in range(len(vols)):
        current: dict[int, list[int]] = {}
        overlap: dict[int, float] = {}
        if k > 0:  # every track continues into the particle its particle links to
            for a, b, ov in links[k - 1].tolist():
                a, b = int(a), int(b)
                if a in started:
                    current.setdefault(b, []).extend(started[a])
                    overlap[b] = max(overlap.get(b, 0.0), ov)
        for pid in sorted(stats[k]):
            if pid not in current:
                current[pid] = [n_tracks]
                n_tracks += 1
                overlap[pid] = np.nan
        for pid, tracks in current.items():
            c, vol = stats[k][pid]
            for t in tracks:
                rows.append((t, k, pid, *c, vol, 0.0, 0.0, 0.0, overlap.get(pid, np.nan)))
        started = current
    table = np.array(rows, TRACK_TABLE)
    table.sort(order=["track", "step"])
    for t in np.unique(table["track"]):
        sel = np.flatnonzero(table["track"] == t)
        first = table[sel[0]]
        for ax in "zyx":
            table[f"displacement_{ax}_um"][sel] = (table[f"centroid_{ax}_um"][sel]
                                                   - first[f"centroid_{ax}_um"])
    return Tracks(table, links)
