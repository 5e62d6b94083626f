"""Constrained smoothing of the phase interfaces of a voxel mesh.

Voxel meshes have staircase interfaces. Taubin smoothing (a shrink step ``lambda`` and an
inflate step ``mu`` per pass, so shapes do not shrink) moves only the **interface nodes** of
the node lattice (nodes whose eight surrounding voxels are not all of one phase), each
towards the mean of its interface neighbours among the six lattice neighbours. Three
constraints keep every hexahedron valid and the domain unchanged:

* every displacement component is clipped to ``max_move`` (default a quarter voxel);
* nodes on a face of the box move only within that face (edges and corners stay put);
* after smoothing, the Jacobian determinant of the trilinear map is evaluated at the eight
  corners of every cell; the nodes of any cell whose smallest corner determinant falls below
  ``min_jacobian`` times the voxel volume go back to the lattice, until none is left.

Displacements are returned on the (nz + 1, ny + 1, nx + 1) node lattice in voxels,
components (z, y, x); :func:`anodetwin.mesh.voxel.hex_mesh` adds them to the node
coordinates. Phase volumes change by the smoothing (report them against the voxel counts).
"""

from __future__ import annotations

import numpy as np

from anodetwin.errors import ParameterError

__all__ = ["interface_nodes", "smooth_interfaces", "corner_jacobians"]


def interface_nodes(phases: np.ndarray) -> np.ndarray:
    """Lattice nodes whose surrounding voxels differ in phase.

    Parameters
    ----------
    phases : numpy.ndarray of int, shape (nz, ny, nx)
        Phase codes.

    Returns
    -------
    numpy.ndarray of bool, shape (nz + 1, ny + 1, nx + 1)
        True at the corners shared by voxels of more than one phase (edge voxels repeat
        across the box faces).
    """
    p = np.pad(phases, 1, mode="edge")
    nz, ny, nx = phases.shape
    first = p[0: nz + 1, 0: ny + 1, 0: nx + 1]
    out = np.zeros(first.shape, bool)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                out |= p[a: a + nz + 1, b: b + ny + 1, c: c + nx + 1] != first
    return out


def corner_jacobians(d: np.ndarray) -> np.ndarray:
    """Smallest corner Jacobian determinant of every cell of a displaced voxel lattice.

    Parameters
    ----------
    d : numpy.ndarray, shape (nz + 1, ny + 1, nx + 1, 3)
        Node displacements (voxels, components z y x).

    Returns
    -------
    numpy.ndarray of float32, shape (nz, ny, nx)
        The smallest of the eight corner determinants of each cell, in voxel units (1 for an
        undeformed voxel, <= 0 for an inverted corner).
    """
    nz, ny, nx = (s - 1 for s in d.shape[:3])
    grid = np.stack(np.meshgrid(np.arange(nz + 1), np.arange(ny + 1), np.arange(nx + 1),
                                indexing="ij"), axis=-1).astype(np.float32)
    P = grid + d

    def c(a: int, b: int, e: int) -> np.ndarray:
        return P[a: a + nz, b: b + ny, e: e + nx]

    out = np.full((nz, ny, nx), np.inf, np.float32)
    for a in (0, 1):
        for b in (0, 1):
            for e in (0, 1):
                ez = c(1, b, e) - c(0, b, e)
                ey = c(a, 1, e) - c(a, 0, e)
                ex = c(a, b, 1) - c(a, b, 0)
                det = np.einsum("...i,...i->...", ez, np.cross(ey, ex))
                out = np.minimum(out, det)
    return out


def _neighbour_mean(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ``x`` over the 6 lattice neighbours weighted by ``w`` (0/1), and the count."""
    s = np.zeros_like(x)
    n = np.zeros(w.shape, np.float32)
    for ax in range(3):
        for sh in (1, -1):
            xs = np.roll(x, sh, axis=ax)
            ws = np.roll(w, sh, axis=ax)
            # no wrap-around: the rolled-in plane has no neighbour
            idx = [slice(None)] * 3
            idx[ax] = 0 if sh == 1 else -1
            ws = ws.copy()
            ws[tuple(idx)] = 0
            s += xs * ws[..., None]
            n += ws
    return s, n


def smooth_interfaces(phases: np.ndarray, iterations: int = 10, lam: float = 0.5,
                      mu: float = -0.53, max_move: float = 0.25,
                      min_jacobian: float = 0.1) -> tuple[np.ndarray, dict]:
    """Constrained Taubin smoothing of the interfaces (module notes).

    Parameters
    ----------
    phases : numpy.ndarray of int, shape (nz, ny, nx)
        Phase codes; only nodes on interfaces move.
    iterations : int
        Taubin passes (a shrinking ``lam`` step and an inflating ``mu`` step each).
    lam, mu : float
        Taubin factors.
    max_move : float
        Largest move of a node per component (voxels, at most 0.5).
    min_jacobian : float
        Cells whose corner Jacobian falls below this (voxel units) have their nodes reset.

    Returns
    -------
    displacement : numpy.ndarray of float32, shape (nz + 1, ny + 1, nx + 1, 3)
        Node displacements (voxels, z y x); zero on the box faces' normal components.
    info : dict
        ``moved_nodes``, ``max_move``, ``reset_nodes``, ``min_jacobian`` (relative to an
        undeformed voxel).

    Raises
    ------
    ParameterError
        For negative iterations or ``max_move`` outside (0, 0.5].
    """
    if iterations < 0 or not 0 < max_move <= 0.5:
        raise ParameterError(f"smoothing iterations {iterations} / max move {max_move}",
                             "give iterations >= 0 and 0 < max move <= 0.5 voxel")
    ph = np.asarray(phases)
    free = interface_nodes(ph)
    shape = free.shape
    d = np.zeros(shape + (3,), np.float32)
    if iterations == 0 or not free.any():
        return d, {"moved_nodes": 0, "max_move": 0.0, "reset_nodes": 0,
                   "min_jacobian": float(corner_jacobians(d).min())}
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape],
                                indexing="ij"), axis=-1)
    fixed = np.zeros(shape + (3,), bool)  # components pinned by the box faces
    for ax in range(3):
        idx = [slice(None)] * 3
        for end in (0, shape[ax] - 1):
            idx[ax] = end
            fixed[tuple(idx) + (ax,)] = True
    w = free.astype(np.float32)
    for _ in range(int(iterations)):
        for f in (lam, mu):
            x = grid + d
            s, n = _neighbour_mean(x, w)
            lap = np.where(n[..., None] > 0, s / np.maximum(n, 1)[..., None] - x, 0)
            d = d + f * lap * w[..., None]
            np.clip(d, -max_move, max_move, out=d)
            d[fixed] = 0.0
    reset = 0
    while True:
        jac = corner_jacobians(d)
        bad = jac < min_jacobian
        if not bad.any():
            break
        nodes = np.zeros(shape, bool)
        for a in (0, 1):
            for b in (0, 1):
                for c in (0, 1):
                    nodes[a: a + bad.shape[0], b: b + bad.shape[1], c: c + bad.shape[2]] |= bad
        reset += int((nodes & np.any(d != 0, axis=-1)).sum())
        d[nodes] = 0.0
    moved = np.any(d != 0, axis=-1)
    return d, {"moved_nodes": int(moved.sum()), "max_move": float(np.abs(d).max()),
               "reset_nodes": reset, "min_jacobian": float(jac.min())}
