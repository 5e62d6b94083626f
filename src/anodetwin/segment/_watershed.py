"""Compiled kernels of the particle instances (:mod:`anodetwin.segment.particles`).

* :func:`squared_edt`: exact squared Euclidean distance to the nearest background voxel,
  separable (Felzenszwalb and Huttenlocher 2012, *Theory of Computing* 8, 415), with a
  per-axis spacing; on a box cut from a larger volume a voxel's value is certainly exact
  when it is not larger than the distance to the box's sides inside the volume
  (:func:`exact_region`).
* :func:`ascend`: each mask voxel follows the steepest ascent (largest rise per unit length)
  of the distance map over its 26 neighbours to a voxel with no higher neighbour (a
  **terminal**); the voxel's basin is
  the flat index of that terminal in the whole volume, so basins do not depend on how the
  volume is cut.
* :func:`basin_edges`: the highest saddle (the larger of the two lower distances of
  26-adjacent voxels) between every two adjacent basins.
* :func:`merge_basins`: the h-maxima watershed on the basin graph. Maxima whose dynamic
  (height above the highest saddle towards a higher maximum, the elder rule) reaches ``h``
  are markers; basins are then joined along decreasing saddles unless both sides already
  hold a marker, which is how flooding from markers assigns them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["squared_edt", "exact_region", "offset_lengths", "ascend", "basin_edges",
           "merge_basins"]

_INF = np.inf


@njit(cache=True, nogil=True)
def _line(f: np.ndarray, s: float, out: np.ndarray, v: np.ndarray, z: np.ndarray) -> None:
    """Lower envelope of the parabolas (s (q - p))^2 + f[p] of one line into ``out``."""
    n = f.size
    k = -1
    for q in range(n):
        if f[q] == _INF:
            continue
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -_INF
            z[1] = _INF
            continue
        while True:
            p = v[k]
            x = ((f[q] + (s * q) ** 2) - (f[p] + (s * p) ** 2)) / (2.0 * s * s * (q - p))
            if x <= z[k]:
                k -= 1
            else:
                break
        k += 1
        v[k] = q
        z[k] = x
        z[k + 1] = _INF
    if k < 0:
        for q in range(n):
            out[q] = _INF
        return
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        d = s * (q - v[k])
        out[q] = d * d + f[v[k]]


@njit(cache=True, nogil=True)
def squared_edt(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Squared distance (in the units of ``spacing``) of every voxel of a 3-D boolean
    ``mask`` to the nearest False voxel; 0 on False voxels, inf where the box has none."""
    nz, ny, nx = mask.shape
    d = np.empty((nz, ny, nx))
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                d[i, j, k] = _INF if mask[i, j, k] else 0.0
    n = max(nz, ny, nx)
    f = np.empty(n)
    out = np.empty(n)
    v = np.empty(n, np.int64)
    z = np.empty(n + 1)
    for j in range(ny):  # along z
        for k in range(nx):
            for i in range(nz):
                f[i] = d[i, j, k]
            _line(f[:nz], spacing[0], out[:nz], v, z)
            for i in range(nz):
                d[i, j, k] = out[i]
    for i in range(nz):  # along y
        for k in range(nx):
            for j in range(ny):
                f[j] = d[i, j, k]
            _line(f[:ny], spacing[1], out[:ny], v, z)
            for j in range(ny):
                d[i, j, k] = out[j]
    for i in range(nz):  # along x
        for j in range(ny):
            _line(d[i, j].copy(), spacing[2], out[:nx], v, z)
            for k in range(nx):
                d[i, j, k] = out[k]
    return d


@njit(cache=True, nogil=True)
def exact_region(d2: np.ndarray, inner_lo: np.ndarray, inner_hi: np.ndarray,
                 spacing: np.ndarray) -> np.ndarray:
    """Voxels whose squared distance ``d2`` is certainly that of the whole volume: not
    larger than the squared distance to the first voxel beyond each box side that lies
    inside the volume (``inner_lo``/``inner_hi`` per axis: that side is inside)."""
    nz, ny, nx = d2.shape
    ok = np.empty(d2.shape, np.bool_)
    shape = (nz, ny, nx)
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                idx = (i, j, k)
                m = _INF
                for a in range(3):
                    if inner_lo[a]:
                        m = min(m, (idx[a] + 1) * spacing[a])
                    if inner_hi[a]:
                        m = min(m, (shape[a] - idx[a]) * spacing[a])
                ok[i, j, k] = d2[i, j, k] <= m * m
    return ok


@njit(cache=True, nogil=True)
def _step(dist: np.ndarray, i: int, j: int, k: int, length: np.ndarray, parity: int) -> int:
    """Flat box index of the neighbour of voxel (i, j, k) of steepest ascent: the largest
    rise per unit length (``length`` of each of the 27 offsets); -1 when no neighbour is
    higher. Exact ties (a voxel midway between two equal maxima) are split by the voxel's
    coordinate parity, so a tied plane goes half to each side."""
    nz, ny, nx = dist.shape
    here = dist[i, j, k]
    best = 0.0
    n_best = 0
    for o in range(27):
        a, b, c = i + o // 9 - 1, j + (o // 3) % 3 - 1, k + o % 3 - 1
        if o == 13 or a < 0 or b < 0 or c < 0 or a >= nz or b >= ny or c >= nx:
            continue
        rise = (dist[a, b, c] - here) / length[o]
        if rise > best:
            best, n_best = rise, 1
        elif rise == best and n_best > 0:
            n_best += 1
    if n_best == 0:
        return -1
    pick = parity % n_best
    for o in range(27):
        a, b, c = i + o // 9 - 1, j + (o // 3) % 3 - 1, k + o % 3 - 1
        if o == 13 or a < 0 or b < 0 or c < 0 or a >= nz or b >= ny or c >= nx:
            continue
        if (dist[a, b, c] - here) / length[o] == best:
            if pick == 0:
                return (a * ny + b) * nx + c
            pick -= 1
    return -1


def offset_lengths(spacing: np.ndarray) -> np.ndarray:
    """Length of each of the 27 offsets (z, y, x in -1..1, raster order) with ``spacing``."""
    o = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(27, 3)
    return np.sqrt(((o * np.asarray(spacing, float)) ** 2).sum(1))


@njit(cache=True, nogil=True)
def ascend(dist: np.ndarray, safe: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           origin: np.ndarray, shape: np.ndarray, length: np.ndarray) -> tuple:
    """Basin of every mask voxel of the sub-box ``lo:hi`` of a box.

    Parameters
    ----------
    dist : float32 array (box)
        Distance map (0 outside the mask).
    safe : bool array (box)
        Voxels whose distance and neighbours' distances are exact.
    lo, hi : int64 (3,)
        Sub-box whose voxels are resolved (box coordinates).
    origin, shape : int64 (3,)
        The box's first voxel in the volume and the volume's shape.
    length : float (27,)
        Length of each neighbour offset (:func:`offset_lengths`).

    Returns
    -------
    basin : int64 array (box)
        Volume flat index of each resolved voxel's terminal; -1 outside the mask, -2 not
        resolved.
    ok : bool
        False when a path left the safe voxels (the box needs a wider halo).
    """
    nz, ny, nx = dist.shape
    basin = np.full(dist.shape, -2, np.int64)
    stack = np.empty(nz * ny * nx, np.int64)
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            for k in range(lo[2], hi[2]):
                if basin[i, j, k] != -2:
                    continue
                if dist[i, j, k] <= 0:
                    basin[i, j, k] = -1
                    continue
                top = 0
                u = (i * ny + j) * nx + k
                while True:
                    a, r = divmod(u, ny * nx)
                    b, c = divmod(r, nx)
                    if basin[a, b, c] != -2:
                        res = basin[a, b, c]
                        break
                    if not safe[a, b, c]:
                        return basin, False
                    stack[top] = u
                    top += 1
                    w = _step(dist, a, b, c, length, origin[0] + a + origin[1] + b
                              + origin[2] + c)
                    if w < 0:
                        res = ((origin[0] + a) * shape[1] + origin[1] + b) * shape[2] \
                            + origin[2] + c
                        break
                    u = w
                for t in range(top):
                    a, r = divmod(stack[t], ny * nx)
                    b, c = divmod(r, nx)
                    basin[a, b, c] = res
    return basin, True


@njit(cache=True, nogil=True)
def basin_edges(basin: np.ndarray, dist: np.ndarray, lo: np.ndarray, hi: np.ndarray
                ) -> tuple:
    """Saddles between basins: for every voxel u of the sub-box ``lo:hi`` and each of its
    13 forward 26-neighbours w in another basin, (basin u, basin w, min(dist u, dist w)).
    ``basin`` must be resolved on the sub-box and one voxel beyond its high sides."""
    nz, ny, nx = dist.shape
    cap = 1024
    a_out = np.empty(cap, np.int64)
    b_out = np.empty(cap, np.int64)
    s_out = np.empty(cap, np.float32)
    n = 0
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            for k in range(lo[2], hi[2]):
                bu = basin[i, j, k]
                if bu < 0:
                    continue
                for o in range(14, 27):  # the 13 forward offsets of the 26 neighbours
                    di, dj, dk = o // 9 - 1, (o // 3) % 3 - 1, o % 3 - 1
                    a, b, c = i + di, j + dj, k + dk
                    if a >= nz or b < 0 or b >= ny or c < 0 or c >= nx:
                        continue
                    bw = basin[a, b, c]
                    if bw < 0 or bw == bu:
                        continue
                    if n == cap:
                        cap *= 2
                        a_out = _grow(a_out, cap)
                        b_out = _grow(b_out, cap)
                        s2 = np.empty(cap, np.float32)
                        s2[:n] = s_out[:n]
                        s_out = s2
                    a_out[n] = min(bu, bw)
                    b_out[n] = max(bu, bw)
                    s_out[n] = min(dist[i, j, k], dist[a, b, c])
                    n += 1
    return a_out[:n], b_out[:n], s_out[:n]


@njit(cache=True, nogil=True)
def _grow(x: np.ndarray, cap: int) -> np.ndarray:
    y = np.empty(cap, x.dtype)
    y[:x.size] = x
    return y


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def merge_basins(peak: np.ndarray, ea: np.ndarray, eb: np.ndarray, saddle: np.ndarray,
                 h: float) -> np.ndarray:
    """Region of every basin after the h-maxima watershed on the basin graph.

    Parameters
    ----------
    peak : float32 (B,)
        Distance at each basin's terminal; basins are indexed in the order of their
        terminals' flat indices (ties between equal peaks go to the lower index).
    ea, eb, saddle : (E,)
        Basin indices and saddle of each edge, sorted by decreasing saddle (ties by
        ``ea``, then ``eb``).
    h : float
        Smallest dynamic of a marker.

    Returns
    -------
    int64 (B,)
        A representative basin of the region of each basin.
    """
    nb = peak.size
    parent = np.arange(nb)
    top = np.arange(nb)
    marker = np.ones(nb, np.bool_)
    for e in range(ea.size):  # elder rule: the lower maximum dies at the saddle
        ra, rb = _find(parent, ea[e]), _find(parent, eb[e])
        if ra == rb:
            continue
        ta, tb = top[ra], top[rb]
        if peak[ta] > peak[tb] or (peak[ta] == peak[tb] and ta < tb):
            win, lose = ra, rb
        else:
            win, lose = rb, ra
        marker[top[lose]] = peak[top[lose]] - saddle[e] >= h
        parent[lose] = win
    region = np.arange(nb)
    has = marker.copy()
    for e in range(ea.size):  # flooding from the markers, highest saddles first
        ra, rb = _find(region, ea[e]), _find(region, eb[e])
        if ra == rb or (has[ra] and has[rb]):
            continue
        region[rb] = ra
        has[ra] = has[ra] or has[rb]
    for i in range(nb):
        region[i] = _find(region, i)
    return region
