"""Compiled kernels of the particle instances (:mod:`anodetwin.segment.particles`).

* :func:`squared_edt`: exact squared Euclidean distance to the nearest background voxel,
  separable (Felzenszwalb and Huttenlocher 2012, *Theory of Computing* 8, 415), with a
  per-axis spacing; on a box cut from a larger volume a voxel's value is certainly exact
  when it is not larger than the distance to the box's sides inside the volume
  (:func:`exact_region`).
* :func:`ascend`: each mask voxel follows the steepest ascent (largest rise per unit length)
  of the distance map over its 26 neighbours to a voxel with no higher neighbour (a
  **terminal**); a basin is named by its terminal's flat index in the whole volume, so
  basins do not depend on how the volume is cut (:func:`basin_table`). On a block's box a
  path stops where the box no longer knows its next step (near a side inside the volume);
  that **pending** voxel is handed to the block that owns it (:func:`ascend_from`), so a
  halo need not hold the longest ascent.
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

__all__ = ["squared_edt", "exact_region", "offset_lengths", "ascend", "ascend_from",
           "basin_table", "basin_edges", "merge_basins"]

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
    n = max(nz, ny, nx)
    f, out = np.empty(n), np.empty(n)
    v, z = np.empty(n, np.int64), np.empty(n + 1)
    buf = np.empty((n, _TILE))
    _first_pass(mask, spacing[0], d)
    for i in range(nz):  # along y
        for k0 in range(0, nx, _TILE):
            w = min(_TILE, nx - k0)
            for j in range(ny):
                for c in range(w):
                    buf[j, c] = d[i, j, k0 + c]
            _lines(buf, ny, w, spacing[1], f, out, v, z)
            for j in range(ny):
                for c in range(w):
                    d[i, j, k0 + c] = buf[j, c]
    for i in range(nz):  # along x
        for j in range(ny):
            for k in range(nx):
                f[k] = d[i, j, k]
            _line(f[:nx], spacing[2], out[:nx], v, z)
            for k in range(nx):
                d[i, j, k] = out[k]
    return d


_TILE = 16


@njit(cache=True, nogil=True)
def _first_pass(mask: np.ndarray, s: float, d: np.ndarray) -> None:
    """Squared distance along z (spacing ``s``) to the nearest False voxel of the column
    (inf where the column has none): one scan each way, row by row."""
    nz, ny, nx = mask.shape
    last = np.empty((ny, nx))
    last[:] = -np.inf
    for i in range(nz):  # distance to the nearest False at or below
        for j in range(ny):
            for k in range(nx):
                if not mask[i, j, k]:
                    last[j, k] = i
                d[i, j, k] = i - last[j, k]
    last[:] = np.inf
    for i in range(nz - 1, -1, -1):  # and at or above
        for j in range(ny):
            for k in range(nx):
                if not mask[i, j, k]:
                    last[j, k] = i
                g = min(d[i, j, k], last[j, k] - i) * s
                d[i, j, k] = g * g

@njit(cache=True, nogil=True)
def _lines(buf: np.ndarray, n: int, w: int, s: float, f: np.ndarray, out: np.ndarray,
           v: np.ndarray, z: np.ndarray) -> None:
    """The envelope of each of the first ``w`` columns (length ``n``) of ``buf``, in place."""
    for c in range(w):
        for i in range(n):
            f[i] = buf[i, c]
        _line(f[:n], s, out[:n], v, z)
        for i in range(n):
            buf[i, c] = out[i]


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
def _safe(exact: np.ndarray, a: int, b: int, c: int, lo_in: np.ndarray,
          hi_in: np.ndarray) -> bool:
    """A voxel's distance and its 26 neighbours' are exact, and it is not on a box side
    that lies inside the volume (its neighbours beyond would be unknown)."""
    n = exact.shape
    p = (a, b, c)
    for ax in range(3):
        if (lo_in[ax] and p[ax] == 0) or (hi_in[ax] and p[ax] == n[ax] - 1):
            return False
    for i in range(max(a - 1, 0), min(a + 2, n[0])):
        for j in range(max(b - 1, 0), min(b + 2, n[1])):
            for k in range(max(c - 1, 0), min(c + 2, n[2])):
                if not exact[i, j, k]:
                    return False
    return True


@njit(cache=True, nogil=True)
def _climb(u: int, dist: np.ndarray, exact: np.ndarray, lo_in: np.ndarray,
           hi_in: np.ndarray, origin: np.ndarray, length: np.ndarray, basin: np.ndarray,
           stack: np.ndarray, pend: np.ndarray, n_pend: int) -> tuple:
    """Follow the ascent from box flat index ``u`` until a voxel whose basin is known, a
    terminal, or a voxel that is not safe (:func:`_safe`: recorded in ``pend``, which then
    names the basin); every voxel of the path gets that basin. Returns the work arrays
    (grown if needed) and the number of pending voxels."""
    nz, ny, nx = dist.shape
    top = 0
    while True:
        a, r = divmod(u, ny * nx)
        b, c = divmod(r, nx)
        if basin[a, b, c] != -2:
            res = basin[a, b, c]
            break
        if top == stack.size:
            stack = _grow(stack, 2 * top)
        stack[top] = u
        top += 1
        if not _safe(exact, a, b, c, lo_in, hi_in):
            res = u
            if n_pend == pend.size:
                pend = _grow(pend, 2 * n_pend)
            pend[n_pend] = u
            n_pend += 1
            break
        w = _step(dist, a, b, c, length, origin[0] + a + origin[1] + b + origin[2] + c)
        if w < 0:
            res = u
            break
        u = w
    for t in range(top):
        a, r = divmod(stack[t], ny * nx)
        b, c = divmod(r, nx)
        basin[a, b, c] = res
    return stack, pend, n_pend


@njit(cache=True, nogil=True)
def ascend(dist: np.ndarray, exact: np.ndarray, lo_in: np.ndarray, hi_in: np.ndarray,
           lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, length: np.ndarray,
           basin: np.ndarray) -> tuple:
    """Basin of every mask voxel of the sub-box ``lo:hi`` of a box.

    A path is followed while its voxels are safe (:func:`_safe`); one that reaches a voxel
    that is not (near a side of the box that lies inside the volume) stops there, and that
    **pending** voxel names the basin until the block that owns it resolves it
    (:func:`ascend_from`). The paths, terminals and pending voxels do not depend on the
    box beyond its safe voxels, so every cut of the volume gives the same basins.

    Parameters
    ----------
    dist : float32 array (box)
        Distance map (0 outside the mask).
    exact : bool array (box)
        Voxels whose distance is that of the whole volume (:func:`exact_region`).
    lo_in, hi_in : bool (3,)
        Which box sides lie inside the volume.
    lo, hi : int64 (3,)
        Sub-box whose voxels are resolved (box coordinates).
    origin : int64 (3,)
        The box's first voxel in the volume (ties are split by whole-volume parity).
    length : float (27,)
        Length of each neighbour offset (:func:`offset_lengths`).
    basin : int32 or int64 array (box), filled with -2
        Written: the box flat index of each resolved voxel's terminal or pending voxel; -1
        outside the mask, -2 not reached (int32 holds the flat index of any box below
        2**31 voxels).

    Returns
    -------
    ok : bool
        False when a mask voxel of the sub-box is not safe itself: the box needs a wider
        halo for exact distances there.
    pending : int64 (P,)
        Box flat indices of the pending voxels, each once.
    """
    nz, ny, nx = dist.shape
    stack = np.empty(1024, np.int64)
    pend = np.empty(64, np.int64)
    n_pend = 0
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            for k in range(lo[2], hi[2]):
                if dist[i, j, k] > 0 and not _safe(exact, i, j, k, lo_in, hi_in):
                    return False, pend[:0]
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            for k in range(lo[2], hi[2]):
                if basin[i, j, k] != -2:
                    continue
                if dist[i, j, k] <= 0:
                    basin[i, j, k] = -1
                    continue
                stack, pend, n_pend = _climb((i * ny + j) * nx + k, dist, exact, lo_in,
                                             hi_in, origin, length, basin, stack, pend,
                                             n_pend)
    return True, pend[:n_pend]


@njit(cache=True, nogil=True)
def ascend_from(seeds: np.ndarray, dist: np.ndarray, exact: np.ndarray, lo_in: np.ndarray,
                hi_in: np.ndarray, origin: np.ndarray, length: np.ndarray,
                basin: np.ndarray) -> tuple:
    """Basins of the mask voxels ``seeds`` (box flat indices) of a box, as :func:`ascend`.

    Returns
    -------
    ok : bool
        False when a seed is not safe itself (the box needs a wider halo).
    result : int64 (S,)
        Box flat index of each seed's terminal or pending voxel.
    pending : int64 (P,)
        Box flat indices of the pending voxels, each once.
    """
    nz, ny, nx = dist.shape
    stack = np.empty(1024, np.int64)
    pend = np.empty(64, np.int64)
    n_pend = 0
    result = np.empty(seeds.size, np.int64)
    for s in range(seeds.size):
        a, r = divmod(seeds[s], ny * nx)
        b, c = divmod(r, nx)
        if not _safe(exact, a, b, c, lo_in, hi_in):
            return False, result[:0], pend[:0]
    for s in range(seeds.size):
        stack, pend, n_pend = _climb(seeds[s], dist, exact, lo_in, hi_in, origin, length,
                                     basin, stack, pend, n_pend)
        a, r = divmod(seeds[s], ny * nx)
        b, c = divmod(r, nx)
        result[s] = basin[a, b, c]
    return True, result, pend[:n_pend]


@njit(cache=True, nogil=True)
def basin_table(basin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple:
    """The basins of the sub-box ``lo:hi``: their terminals (box flat index) in order of
    first appearance, voxel counts, first voxel (box flat index) and each voxel's index in
    that list (-1 outside the mask), shape of the sub-box."""
    nz, ny, nx = basin.shape
    slot = np.full(nz * ny * nx, -1, np.int32)
    local = np.full((hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]), -1, np.int32)
    terms = np.empty(64, np.int64)
    first = np.empty(64, np.int64)
    counts = np.empty(64, np.int64)
    n = 0
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            for k in range(lo[2], hi[2]):
                t = basin[i, j, k]
                if t < 0:
                    continue
                s = slot[t]
                if s < 0:
                    if n == terms.size:
                        terms, first, counts = (_grow(terms, 2 * n), _grow(first, 2 * n),
                                                _grow(counts, 2 * n))
                    s = slot[t] = n
                    terms[n], first[n], counts[n] = t, (i * ny + j) * nx + k, 0
                    n += 1
                counts[s] += 1
                local[i - lo[0], j - lo[1], k - lo[2]] = s
    return terms[:n], counts[:n], first[:n], local


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
