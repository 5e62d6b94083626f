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
  field: ``Tn(x) = T0(X)`` with ``x = X + u(X)`` (:mod:`anodetwin.kinematics`); then
  rendered (see :mod:`render`).

Truth stored per step: displacement u (z, y, x components, um) and strain at every voxel of
the reference grid (small strain ``sym(grad u)`` components and volumetric ``det(I + grad
u) - 1``, gradients by central differences: the one strain operator,
:func:`anodetwin.strain.strain_fields`), theta and non-lithiated core volume per particle,
mean electrode thickness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anodetwin.errors import ParameterError
from anodetwin.phantom.config import LITHIATION_MODES, PhantomConfig
from anodetwin.phantom.microstructure import Microstructure, normalised_distance

__all__ = ["StepTruth", "particle_modes", "lithiation_scores", "particle_theta",
           "lithiated_mask", "swelling_displacement"]


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
    """Lithiation mode of every particle, drawn with the configured probabilities.

    Parameters
    ----------
    cfg : PhantomConfig
        Configuration (``series.modes``: weight per mode name).
    n : int
        Number of particles.
    rng : numpy.random.Generator
        Random source.

    Returns
    -------
    numpy.ndarray
        (n,) uint8 index into :data:`LITHIATION_MODES`.
    """
    names = list(LITHIATION_MODES)
    p = np.array([float(cfg.series.modes.get(m, 0.0)) for m in names])
    return rng.choice(len(names), size=n, p=p / p.sum()).astype(np.uint8)


def lithiation_scores(ms: Microstructure, modes: np.ndarray, cfg: PhantomConfig,
                      rng: np.random.Generator) -> np.ndarray:
    """Order in which the voxels of every particle lithiate.

    Parameters
    ----------
    ms : Microstructure
        Reference microstructure (particle labels, shapes, table).
    modes : numpy.ndarray
        (particles,) mode index per table row (:func:`particle_modes`).
    cfg : PhantomConfig
        Configuration (``series.defect_bands`` for the network mode).
    rng : numpy.random.Generator
        Random source (defect band orientations and offsets).

    Returns
    -------
    numpy.ndarray
        (z, y, x) float32 rank (0..1) of each voxel inside its particle: voxels with rank
        >= 1 - theta_p are lithiated at Li content theta_p; NaN outside particles.
    """
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
    """Li content per particle whose volume-weighted mean is ``theta_mean``.

    Parameters
    ----------
    ms : Microstructure
        Reference microstructure (particle table, layers).
    cfg : PhantomConfig
        Configuration (``series.reaction_profile``, ``series.penetration_depth_um``).
    theta_mean : float
        Mean Li content (0..1) of the electrode's Si.

    Returns
    -------
    numpy.ndarray
        (particles,) Li content (0..1) in table order; a particle that would exceed 1 is
        capped and passes the excess on.

    Raises
    ------
    ParameterError
        When ``theta_mean`` is outside [0, 1].
    """
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
    """Lithiated voxels for per-particle Li contents.

    Parameters
    ----------
    ms : Microstructure
        Reference microstructure (particle labels and table).
    score : numpy.ndarray
        (z, y, x) ranks from :func:`lithiation_scores`.
    theta : numpy.ndarray
        (particles,) Li content per table row.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool, on the reference grid.
    """
    n = int(ms.particles.max()) + 1
    th = np.zeros(n, np.float32)
    th[ms.table["id"]] = theta
    per_voxel = th[ms.particles]
    with np.errstate(invalid="ignore"):
        return (ms.particles > 0) & (score >= 1.0 - per_voxel) & (per_voxel > 0)


def swelling_displacement(ms: Microstructure, lith: np.ndarray, cfg: PhantomConfig
                          ) -> np.ndarray:
    """Axial displacement profile of the swelling electrode.

    Parameters
    ----------
    ms : Microstructure
        Reference microstructure (voxel size, layers).
    lith : numpy.ndarray
        (z, y, x) lithiated voxels.
    cfg : PhantomConfig
        Configuration (``series.beta``: swelling strain per lithiated fraction,
        ``series.pore_absorption``).

    Returns
    -------
    numpy.ndarray
        (z,) u_z(Z) in um, one value per plane of the reference grid.
    """
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
