"""In situ tomogram series T0..Tn with exact ground truth.

Per step n with cell state of charge SoC_n:

* **Li inventory.** The mean Li content of the Si (theta, 1 = Li15Si4) is
  ``SoC_n * si_utilisation`` (cathode-limited cell). It is shared among the particles by the
  reaction profile: uniform, or ``exp(-(z_top - z_p) / penetration_depth)`` (concentrated at
  the separator side), capped at theta = 1 per particle with the excess passed on.
* **Lithiation mode** per particle (fixed at T0, drawn with ``series.modes``): *core-shell*,
  the outer shell of the body (largest normalised distance) is lithiated; *network*, the
  voxels nearest to ``defect_bands`` random planes through the particle are. In both, exactly
  the fraction theta_p of the particle's voxels is lithiated (rank-based), and the lithiated
  set only grows with theta.
* **Deformation** (reference frame, um): lithiated Si (theta = 1) swells by ``beta`` in
  volume; a fraction ``pore_absorption`` of that swelling fills pores, the rest goes to the
  thickness (laterally constrained electrode, collector bonded, separator side free under
  the stack pressure): stretch ``lambda(Z) = 1 + (1 - pore_absorption) * beta * f(Z)`` with
  f the lithiated voxel fraction of plane Z (Gaussian-smoothed over 1 um), and
  ``u_z(Z) = integral of (lambda - 1)`` from the collector. Or a displacement field read
  from ``series.displacement_file``.
* **Rendering.** Tn labels are the T0 labels (with lithiated Si as phase 3) warped by the
  field: ``Tn(x) = T0(X)`` with ``x = X + u(X)``; then rendered (see :mod:`render`).

Truth stored per step: displacement u (z, y, x components, um) and strain at every voxel of
the reference grid (small strain ``sym(grad u)`` components and volumetric ``det(I + grad
u) - 1``, gradients by central differences, :func:`strain_fields`), theta and non-lithiated
core volume per particle, mean electrode thickness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.phantom.config import LITHIATION_MODES, PhantomConfig
from anodetwin.phantom.microstructure import Microstructure, normalised_distance

__all__ = ["StepTruth", "particle_modes", "lithiation_scores", "particle_theta",
           "lithiated_mask", "swelling_displacement", "strain_fields", "warp_labels",
           "inverse_map_1d", "inverse_coordinates", "sample_nearest"]


@dataclass
class StepTruth:
    """Ground truth of one step."""

    step: int
    soc: float
    theta_mean: float
    theta: np.ndarray  # per particle, table order
    core_volume_um3: np.ndarray
    displacement: np.ndarray  # (3, z, y, x) float32, um
    phases: np.ndarray
    particles: np.ndarray
    thickness_um: float
    lithiated: np.ndarray  # bool, reference grid


def particle_modes(cfg: PhantomConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Lithiation mode index per particle (into :data:`LITHIATION_MODES`)."""
    names = list(LITHIATION_MODES)
    p = np.array([float(cfg.series.modes.get(m, 0.0)) for m in names])
    return rng.choice(len(names), size=n, p=p / p.sum()).astype(np.uint8)


def lithiation_scores(ms: Microstructure, modes: np.ndarray, cfg: PhantomConfig,
                      rng: np.random.Generator) -> np.ndarray:
    """Per-voxel rank (0..1) inside its particle; voxels with rank >= 1 - theta_p are
    lithiated at Li content theta_p. Non-particle voxels get NaN."""
    v = ms.voxel_size_um
    lab = ms.particles
    score = np.full(lab.shape, np.nan, np.float32)
    objs = ndimage.find_objects(lab)
    ids = ms.table["id"]
    for k, pid in enumerate(ids):
        sl = objs[pid - 1]
        if sl is None:
            continue
        inside = lab[sl] == pid
        pts = np.stack(np.meshgrid(*(np.arange(s.start, s.stop) * v + v / 2 for s in sl),
                                   indexing="ij"), axis=-1)[inside]
        prm = ms.shape_params[int(pid)]
        if LITHIATION_MODES[modes[k]] == "core-shell":
            s = normalised_distance(prm, pts)
        else:
            normals = rng.normal(size=(cfg.series.defect_bands, 3))
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)
            offs = rng.uniform(-0.5, 0.5, cfg.series.defect_bands) * float(prm["axes"].min())
            dist = np.abs((pts - prm["centre"]) @ normals.T - offs).min(axis=1)
            s = -dist
        # rank within the particle, ties broken by index: exact fractions
        order = np.argsort(s, kind="stable")
        rank = np.empty(len(s), np.float32)
        rank[order] = (np.arange(len(s), dtype=np.float32) + 0.5) / len(s)
        sub = score[sl]
        sub[inside] = rank
    return score


def particle_theta(ms: Microstructure, cfg: PhantomConfig, theta_mean: float) -> np.ndarray:
    """Li content per particle (table order) whose volume-weighted mean is ``theta_mean``."""
    t = ms.table
    vol = t["volume_um3"]
    if cfg.series.reaction_profile == "uniform":
        w = np.ones(len(t))
    else:
        top = ms.layers.anode[1] * ms.voxel_size_um
        w = np.exp(-(top - t["centroid_z_um"]) / cfg.series.penetration_depth_um)
    if theta_mean > 1 + 1e-12 or theta_mean < 0:
        raise ParameterError(f"mean Li content {theta_mean} is outside [0, 1]",
                             "lower the state of charge or the Si utilisation")
    theta = np.zeros(len(t))
    free = np.ones(len(t), bool)
    left = theta_mean * vol.sum()
    for _ in range(len(t) + 1):  # water filling: cap at 1, pass the excess on
        if left <= 1e-12 or not free.any():
            break
        add = left * w * free / (w * free * vol).sum()
        theta = theta + add
        over = theta > 1
        left = ((theta[over] - 1) * vol[over]).sum()
        theta[over] = 1.0
        free &= ~over
    return theta


def lithiated_mask(ms: Microstructure, score: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Lithiated voxels (reference frame) for per-particle Li contents ``theta``."""
    n = int(ms.particles.max()) + 1
    th = np.zeros(n, np.float32)
    th[ms.table["id"]] = theta
    per_voxel = th[ms.particles]
    with np.errstate(invalid="ignore"):
        return (ms.particles > 0) & (score >= 1.0 - per_voxel) & (per_voxel > 0)


def swelling_displacement(ms: Microstructure, lith: np.ndarray, cfg: PhantomConfig
                          ) -> np.ndarray:
    """Axial displacement profile u_z(Z) in um (one value per plane of the reference grid)."""
    v = ms.voxel_size_um
    s = cfg.series
    f = lith.mean(axis=(1, 2)).astype(np.float64)
    f = ndimage.gaussian_filter1d(f, 1.0 / v, mode="constant")
    a0, a1 = ms.layers.anode
    f[:a0] = 0.0  # copper does not swell
    strain = (1.0 - s.pore_absorption) * s.beta * f
    # displacement of plane k = strain integrated over the planes below its centre
    uz = (np.cumsum(strain) - 0.5 * strain) * v
    return uz


def strain_fields(displacement: np.ndarray, voxel_size_um: float) -> dict[str, np.ndarray]:
    """Strain of a displacement field on the voxel grid.

    Parameters
    ----------
    displacement : numpy.ndarray
        (3, z, y, x) components (u_z, u_y, u_x) in um on voxel centres.
    voxel_size_um : float

    Returns
    -------
    dict
        ``volumetric`` = det(I + grad u) - 1, and the small-strain components ``ezz``,
        ``eyy``, ``exx``, ``eyz``, ``exz``, ``exy`` (float32), from central differences
        (one-sided at the faces, :func:`numpy.gradient`).
    """
    g = [[np.gradient(displacement[i], voxel_size_um, axis=j).astype(np.float32, copy=False)
          for j in range(3)] for i in range(3)]
    # det(I + g) - 1 expanded, so that no 3x3 field is copied
    a, b, c = g[0][0] + 1, g[0][1], g[0][2]
    d, e, f = g[1][0], g[1][1] + 1, g[1][2]
    gg, hh, ii = g[2][0], g[2][1], g[2][2] + 1
    det = a * (e * ii - f * hh) - b * (d * ii - f * gg) + c * (d * hh - e * gg)
    return {"volumetric": det - 1.0, "ezz": g[0][0], "eyy": g[1][1], "exx": g[2][2],
            "eyz": 0.5 * (g[1][2] + g[2][1]), "exz": 0.5 * (g[0][2] + g[2][0]),
            "exy": 0.5 * (g[0][1] + g[1][0])}


def inverse_map_1d(uz_voxels: np.ndarray) -> np.ndarray:
    """Reference plane coordinate X(z) of every deformed plane z for z = Z + u(Z)
    (monotone, voxel units); beyond the grid the last displacement continues."""
    n = len(uz_voxels)
    Z = np.arange(n, dtype=np.float64)
    z_def = Z + uz_voxels
    if np.any(np.diff(z_def) <= 0):
        raise ParameterError("the axial displacement folds the grid (d u_z / dz <= -1)",
                             "use a smaller compression")
    zq = np.arange(n, dtype=np.float64)
    X = np.interp(zq, z_def, Z)
    below = zq < z_def[0]
    X[below] = zq[below] - uz_voxels[0]
    above = zq > z_def[-1]
    X[above] = zq[above] - uz_voxels[-1]
    return X


def inverse_coordinates(displacement: np.ndarray, voxel_size_um: float,
                        axial_profile: np.ndarray | None = None, tol: float = 1e-4,
                        max_iterations: int = 20) -> np.ndarray:
    """Reference coordinates X (voxels) of every deformed voxel x, solving x = X + u(X).

    With ``axial_profile`` (u_z per plane, um) the inverse is exact: a (z,) array of plane
    coordinates. Otherwise a (3, z, y, x) array from Newton iterations
    ``X <- X - (I + grad u(X))^-1 (X + u(X) - x)`` with trilinear interpolation of u and its
    gradient, until the residual is below ``tol`` voxels (converges for strains beyond 100%,
    where a fixed-point iteration would not).
    """
    if axial_profile is not None:
        return inverse_map_1d(axial_profile / voxel_size_um)
    shape = displacement.shape[1:]
    x = np.indices(shape, dtype=np.float64).reshape(3, -1)
    u = displacement.astype(np.float64) / voxel_size_um
    grad = [[np.gradient(u[i], axis=j) for j in range(3)] for i in range(3)]
    X = x.copy()
    for _ in range(max_iterations):
        r = X + np.stack([ndimage.map_coordinates(u[c], X, order=1, mode="nearest")
                          for c in range(3)]) - x
        if np.abs(r).max() < tol:
            break
        J = [[ndimage.map_coordinates(grad[i][j], X, order=1, mode="nearest") + (i == j)
              for j in range(3)] for i in range(3)]
        # 3x3 inverse by cofactors, all points at once
        c00 = J[1][1] * J[2][2] - J[1][2] * J[2][1]
        c01 = J[1][2] * J[2][0] - J[1][0] * J[2][2]
        c02 = J[1][0] * J[2][1] - J[1][1] * J[2][0]
        det = J[0][0] * c00 + J[0][1] * c01 + J[0][2] * c02
        inv = [[c00, J[0][2] * J[2][1] - J[0][1] * J[2][2], J[0][1] * J[1][2] - J[0][2] * J[1][1]],
               [c01, J[0][0] * J[2][2] - J[0][2] * J[2][0], J[0][2] * J[1][0] - J[0][0] * J[1][2]],
               [c02, J[0][1] * J[2][0] - J[0][0] * J[2][1], J[0][0] * J[1][1] - J[0][1] * J[1][0]]]
        for i in range(3):
            X[i] -= (inv[i][0] * r[0] + inv[i][1] * r[1] + inv[i][2] * r[2]) / det
    return X.reshape((3,) + shape)


def sample_nearest(labels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``labels`` at reference coordinates from :func:`inverse_coordinates` (nearest voxel,
    clipped to the grid)."""
    if coords.ndim == 1:
        idx = np.clip(np.rint(coords), 0, labels.shape[0] - 1).astype(np.intp)
        return labels[idx]
    return ndimage.map_coordinates(labels, coords, order=0, mode="nearest")


def warp_labels(labels: np.ndarray, displacement: np.ndarray, voxel_size_um: float,
                axial_profile: np.ndarray | None = None) -> np.ndarray:
    """Deformed labels ``L(x) = L0(X)`` with ``x = X + u(X)`` (nearest-neighbour sampling)."""
    return sample_nearest(labels, inverse_coordinates(displacement, voxel_size_um,
                                                      axial_profile))
